//! Storage hot paths: validating a producer's batches (CRC-32C over every byte), appending
//! them to a log, reading them back, and finding an offset (the sparse index, then a short
//! scan of batch headers).

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sluice::protocol::records::encode_batch;
use sluice::storage::batch::validate_all;
use sluice::storage::index::{IndexFile, OffsetEntry};
use sluice::storage::{Log, LogConfig, TimestampType};

/// A ~1 MiB batch of 1 KiB records, as a throughput-minded producer sends.
fn big_batch() -> Bytes {
    let records: Vec<(Option<Bytes>, Option<Bytes>)> =
        (0..1000).map(|_| (None, Some(Bytes::from(vec![7u8; 1024])))).collect();
    encode_batch(&records, 0)
}

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 1 << 30,
        segment_ms: i64::MAX,
        index_interval_bytes: 4096,
        max_message_bytes: 2 << 20,
        timestamp_type: TimestampType::CreateTime,
        flush_messages: None,
        flush_ms: None,
        compact: false,
        delete: true,
        retention_ms: None,
        retention_bytes: None,
    }
}

fn storage(c: &mut Criterion) {
    let batch = big_batch();
    let mut group = c.benchmark_group("storage");
    group.throughput(Throughput::Bytes(batch.len() as u64));
    group.bench_function("validate 1 MiB batch", |b| b.iter(|| validate_all(&batch, usize::MAX).unwrap()));

    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), config(), false).unwrap();
    group.bench_function("append 1 MiB batch", |b| b.iter(|| log.append(batch.clone(), 0, 0).unwrap()));
    let end = log.log_end_offset();
    let mut offset = 0;
    group.bench_function("read 1 MiB", |b| {
        b.iter(|| {
            let bytes = log.read(offset, 1 << 20, i64::MAX).unwrap();
            offset = (offset + 1000) % end;
            bytes
        })
    });
    group.finish();
}

fn offset_lookup(c: &mut Criterion) {
    let mut group = c.benchmark_group("offset lookup");
    let dir = tempfile::tempdir().unwrap();
    let mut index = IndexFile::<OffsetEntry>::create(&dir.path().join("0.index")).unwrap();
    const ENTRIES: u32 = 100_000;
    for i in 0..ENTRIES {
        index.append(OffsetEntry { relative_offset: i * 16, position: i * 4096 });
    }
    let mut key = 0u32;
    group.bench_function("index floor, 100k entries", |b| {
        b.iter(|| {
            key = (key + 7919) % (ENTRIES * 16);
            index.floor(key).unwrap()
        })
    });

    // A 100 MB segment of 1 KiB batches (16 records each), indexed every 4 KiB.
    let batch = encode_batch(&(0..16).map(|_| (None, Some(Bytes::from(vec![1u8; 48])))).collect::<Vec<_>>(), 0);
    let mut log = Log::open(dir.path(), config(), false).unwrap();
    while log.log_end_offset() < 100_000 * 16 {
        log.append(batch.clone(), 0, 0).unwrap();
    }
    let end = log.log_end_offset();
    let mut offset = 0;
    group.bench_function("locate an offset in a 1.6M-record log", |b| {
        b.iter(|| {
            offset = (offset + 7919) % end;
            log.read_slice(offset, 1 << 20, i64::MAX).unwrap().unwrap()
        })
    });
    group.finish();
}

criterion_group!(benches, storage, offset_lookup);
criterion_main!(benches);
