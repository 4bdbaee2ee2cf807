//! Compaction through the broker: `delete.retention.ms` keeps a deletion visible to consumers
//! for that long after compaction first kept it, then the next pass drops it without waiting
//! for another segment to close; a segment far larger than a batch is compacted with the
//! memory of a few batches, and its batches keep the producer's codec.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{Broker, Raw, craft_batch, wait_until};
use sluice::protocol::records::{decode_records, encode_batch};
use sluice::storage::codec::Codec;
use sluice::storage::records::write_record;

/// Every record of partition 0 as (offset, key, value).
fn records(raw: &mut Raw, topic: &str) -> Vec<(i64, String, Option<String>)> {
    let mut out = Vec::new();
    let mut offset = 0;
    loop {
        let (error, high_watermark, bytes) = raw.fetch(topic, 0, offset, 0);
        assert_eq!(error, 0);
        if offset >= high_watermark || bytes.is_empty() {
            return out;
        }
        let decoded = decode_records(bytes, offset).unwrap();
        offset = decoded.last().map_or(high_watermark, |r| r.offset + 1);
        let text = |b: Bytes| String::from_utf8(b.to_vec()).unwrap();
        out.extend(decoded.into_iter().map(|r| (r.offset, r.key.map(text).unwrap(), r.value.map(text))));
    }
}

#[test]
fn tombstones_stay_for_delete_retention_ms_then_go() {
    let broker = Broker::start(1, &[]);
    let mut raw = Raw::connect(broker.addr());
    let configs = [("cleanup.policy", "compact"), ("segment.bytes", "1024"), ("delete.retention.ms", "3000")];
    assert_eq!(raw.create_topic("table", 1, &configs), 0);
    let mut produce = |key: &str, value: Option<&str>| {
        let record = (Some(Bytes::from(key.to_string())), value.map(|v| Bytes::from(v.to_string())));
        assert_eq!(raw.produce("table", 0, encode_batch(&[record], 0), -1).0, 0);
    };
    produce("k", Some("old"));
    produce("k", Some("new"));
    produce("gone", Some("x"));
    produce("gone", None);
    // Enough distinct keys to close the first segment, which triggers a pass.
    for i in 0..40 {
        produce(&format!("filler-{i}"), Some("f"));
    }
    let tombstone = (3, "gone".to_string(), None);
    let mut seen = Vec::new();
    wait_until(Duration::from_secs(20), "superseded records to go", || {
        seen = records(&mut raw, "table");
        !seen.iter().any(|r| r.0 == 0)
    });
    assert!(seen.contains(&tombstone), "the deletion is still there for lagging consumers: {seen:?}");
    assert!(!seen.iter().any(|r| r.0 == 2), "{seen:?}");
    assert!(seen.contains(&(1, "k".to_string(), Some("new".to_string()))));
    wait_until(Duration::from_secs(20), "the tombstone to expire", || !records(&mut raw, "table").contains(&tombstone));
}

/// The broker's peak resident memory so far.
fn peak_rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).expect("VmHWM");
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

/// An lz4 batch of 1000 records of 1 KiB text-like values, keyed `key-<i % 50>`.
fn keyed_lz4_batch(seed: u32) -> Bytes {
    let mut state = seed;
    let mut payload = Vec::new();
    for i in 0..1000 {
        let value: Vec<u8> = (0..1024)
            .map(|_| {
                state = state.wrapping_mul(1_103_515_245).wrapping_add(12345);
                b"etaoinshrdlucmfw"[(state >> 28) as usize]
            })
            .collect();
        write_record(&mut payload, 0, i, Some(format!("key-{}", i % 50).as_bytes()), Some(&value), &[0]);
    }
    craft_batch(Codec::Lz4 as i16, 999, 1000, &Codec::Lz4.compress(&payload).unwrap())
}

#[test]
fn a_large_segment_is_compacted_in_bounded_memory_keeping_its_codec() {
    const SEGMENT_BYTES: u64 = 24 << 20;
    let broker = Broker::start(1, &[]);
    let mut raw = Raw::connect(broker.addr());
    let configs = [("cleanup.policy", "compact"), ("segment.bytes", "25165824")];
    assert_eq!(raw.create_topic("big", 1, &configs), 0);
    let mut produced = 0u64;
    let mut produce = |raw: &mut Raw, seed: u32| {
        let batch = keyed_lz4_batch(seed);
        produced += batch.len() as u64;
        assert_eq!(raw.produce("big", 0, batch, -1).0, 0);
        produced
    };
    for seed in 0..4 {
        produce(&mut raw, seed);
    }
    let before = peak_rss_bytes(broker.pid());
    // Fill the first segment, then close it with one more batch: that starts a pass.
    let mut seed = 4;
    while produce(&mut raw, seed) < SEGMENT_BYTES + (1 << 20) {
        seed += 1;
    }
    // Compacted once offset 0 (superseded by every later batch's key-0) is gone.
    wait_until(Duration::from_secs(60), "the first segment to be compacted", || {
        let (_, _, bytes) = raw.fetch("big", 0, 0, 0);
        decode_records(bytes, 0).unwrap().first().is_some_and(|r| r.offset > 0)
    });
    let growth = peak_rss_bytes(broker.pid()).saturating_sub(before);
    assert!(growth < 12 << 20, "compacting a {SEGMENT_BYTES}-byte segment grew the peak RSS by {growth} bytes");
    let (_, _, bytes) = raw.fetch("big", 0, 0, 0);
    let attributes = i16::from_be_bytes(bytes[21..23].try_into().unwrap());
    assert_eq!(attributes & 7, Codec::Lz4 as i16, "the compacted batch keeps lz4");
}
