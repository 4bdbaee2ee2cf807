//! Storage hot paths: validating a producer's batches (CRC-32C over every byte, then the
//! records inside, decompressed for compressed batches), appending them to a log, reading them
//! back, and finding an offset (the sparse index, then a short scan of batch headers).

use bytes::{Bytes, BytesMut};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use kafka_protocol::records::{Compression, RecordBatchEncoder, RecordEncodeOptions};
use sluice::protocol::records::{encode_batch, plain_record};
use sluice::runtime::file::Driver;
use sluice::storage::batch::{Validation, validate_all};
use sluice::storage::index::{IndexFile, OffsetEntry};
use sluice::storage::{Log, LogConfig, TimestampType, Wait};

/// A ~1 MiB batch of 1 KiB records, as a throughput-minded producer sends.
fn big_batch() -> Bytes {
    let records: Vec<(Option<Bytes>, Option<Bytes>)> =
        (0..1000).map(|_| (None, Some(Bytes::from(vec![7u8; 1024])))).collect();
    encode_batch(&records, 0)
}

/// The same ~1 MiB of records as [`big_batch`] but with text-like values (about 3:1 under
/// gzip), compressed with `compression`.
fn compressed_batch(compression: Compression) -> Bytes {
    let mut state = 12345u32;
    let records: Vec<_> = (0..1000)
        .map(|i| {
            let value: Vec<u8> = (0..1024)
                .map(|_| {
                    state = state.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    b"etaoinshrdlucmfw"[(state >> 28) as usize]
                })
                .collect();
            plain_record(i, 0, None, Some(Bytes::from(value)))
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(&mut buf, &records, &RecordEncodeOptions { version: 2, compression }).unwrap();
    buf.freeze()
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
        write_caching: true,
        compact: false,
        delete_retention_ms: 86_400_000,
        delete: true,
        retention_ms: None,
        retention_bytes: None,
        validate_compressed_records: true,
        timestamp_before_max_ms: i64::MAX,
        timestamp_after_max_ms: i64::MAX,
    }
}

fn storage(c: &mut Criterion) {
    let batch = big_batch();
    let mut group = c.benchmark_group("storage");
    group.throughput(Throughput::Bytes(batch.len() as u64));
    let rules =
        Validation { max_batch_bytes: usize::MAX, compressed_records: true, keys_required: false, timestamps: None };
    group.bench_function("validate 1 MiB batch", |b| b.iter(|| validate_all(&batch, &rules).unwrap()));
    for (name, compression) in [
        ("gzip", Compression::Gzip),
        ("snappy", Compression::Snappy),
        ("lz4", Compression::Lz4),
        ("zstd", Compression::Zstd),
    ] {
        let compressed = compressed_batch(compression);
        // Throughput counts the uncompressed megabyte, as the producer sees it.
        group.bench_function(format!("validate 1 MiB {name} batch ({} bytes)", compressed.len()), |b| {
            b.iter(|| validate_all(&compressed, &rules).unwrap())
        });
    }

    // Appends are submitted to an io_uring, so they run on an executor of this thread.
    let driver = Driver::new();
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(&sluice::storage::fs::os(), dir.path(), config(), false).unwrap();
    group
        .bench_function("append 1 MiB batch", |b| b.iter(|| driver.block_on(log.append(batch.clone(), 0, 0)).unwrap()));
    let end = log.log_end_offset();
    let mut offset = 0;
    group.bench_function("read 1 MiB", |b| {
        b.iter(|| {
            let bytes = log.read(offset, 1 << 20, i64::MAX, Wait::Yes).unwrap();
            offset = (offset + 1000) % end;
            bytes
        })
    });
    group.finish();
}

fn offset_lookup(c: &mut Criterion) {
    let mut group = c.benchmark_group("offset lookup");
    let dir = tempfile::tempdir().unwrap();
    let mut index = IndexFile::<OffsetEntry>::create(&sluice::storage::fs::Os, &dir.path().join("0.index")).unwrap();
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
    let driver = Driver::new();
    let mut log = Log::open(&sluice::storage::fs::os(), dir.path(), config(), false).unwrap();
    driver.block_on(async {
        while log.log_end_offset() < 100_000 * 16 {
            log.append(batch.clone(), 0, 0).await.unwrap();
        }
    });
    let end = log.log_end_offset();
    let mut offset = 0;
    group.bench_function("locate an offset in a 1.6M-record log", |b| {
        b.iter(|| {
            offset = (offset + 7919) % end;
            log.read_slice(offset, 1 << 20, i64::MAX, Wait::Yes).unwrap().unwrap()
        })
    });
    group.finish();
}

criterion_group!(benches, storage, offset_lookup);
criterion_main!(benches);
