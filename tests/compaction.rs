//! Compaction through the broker: `delete.retention.ms` keeps a deletion visible to consumers
//! for that long after compaction first kept it, then the next pass drops it without waiting
//! for another segment to close.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Broker, Raw};
use sluice::protocol::records::{decode_records, encode_batch};

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

/// Polls `condition` every 50 ms until it holds; panics after `deadline`.
fn wait_for(deadline: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(start.elapsed() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
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
    wait_for(Duration::from_secs(20), "superseded records to go", || {
        seen = records(&mut raw, "table");
        !seen.iter().any(|r| r.0 == 0)
    });
    assert!(seen.contains(&tombstone), "the deletion is still there for lagging consumers: {seen:?}");
    assert!(!seen.iter().any(|r| r.0 == 2), "{seen:?}");
    assert!(seen.contains(&(1, "k".to_string(), Some("new".to_string()))));
    wait_for(Duration::from_secs(20), "the tombstone to expire", || !records(&mut raw, "table").contains(&tombstone));
}
