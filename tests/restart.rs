//! Durability: a clean restart keeps topics and records; a `kill -9` in the middle of a stream
//! of acks=-1 produces to a topic that fsyncs before answering loses no acknowledged record,
//! leaves offsets contiguous and never serves a partial batch.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Broker, Raw, batch};

#[test]
fn clean_restart_keeps_topics_and_records() {
    let mut broker = Broker::start(2, &[]);
    let mut raw = Raw::connect(broker.addr());
    assert_eq!(raw.create_topic("kept", 3, &[("segment.bytes", "4096")]), 0);
    let mut expected = vec![Vec::new(); 3];
    for i in 0..300 {
        let partition = i % 3;
        let value = format!("record-{i}").into_bytes();
        let (error, base) = raw.produce("kept", partition as i32, batch(&[&value]), 1);
        assert_eq!(error, 0);
        assert_eq!(base, expected[partition].len() as i64);
        expected[partition].push((base, value));
    }
    drop(raw);
    broker.terminate();
    assert!(broker.data_dir().join(".clean-shutdown").exists());
    broker.restart();

    let mut raw = Raw::connect(broker.addr());
    for (partition, records) in expected.iter().enumerate() {
        assert_eq!(&raw.fetch_all("kept", partition as i32), records, "partition {partition}");
    }
    // Appends continue after the last offset, and the topic still exists with its partitions.
    assert_eq!(raw.produce("kept", 0, batch(&[b"after"]), 1), (0, 100));
    assert_eq!(raw.create_topic("kept", 3, &[]), 36, "TOPIC_ALREADY_EXISTS");
}

/// An acknowledged produce: its base offset and the values it carried.
type Acked = (i64, Vec<Vec<u8>>);

#[test]
fn kill_9_loses_no_acknowledged_record() {
    let mut broker = Broker::start(1, &[]);
    let mut raw = Raw::connect(broker.addr());
    assert_eq!(raw.create_topic("durable", 1, &[("flush.messages", "1"), ("segment.bytes", "65536")]), 0);
    drop(raw);

    let acked: Arc<Mutex<Vec<Acked>>> = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let producer = {
        let acked = acked.clone();
        let stop = stop.clone();
        let addr = broker.addr().to_string();
        std::thread::spawn(move || {
            let mut raw = Raw::connect(&addr);
            for i in 0.. {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let values: Vec<Vec<u8>> =
                    (0..1 + i % 7).map(|j| format!("batch-{i}-record-{j}").into_bytes()).collect();
                let refs: Vec<&[u8]> = values.iter().map(Vec::as_slice).collect();
                // The broker dies under us: whatever has no answer was never acknowledged.
                let answer = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    raw.produce("durable", 0, batch(&refs), -1)
                }));
                match answer {
                    Ok((0, base)) => acked.lock().unwrap().push((base, values)),
                    _ => return,
                }
            }
        })
    };

    let deadline = Instant::now() + Duration::from_secs(60);
    while acked.lock().unwrap().len() < 300 {
        assert!(Instant::now() < deadline, "producer made no progress");
        std::thread::sleep(Duration::from_millis(5));
    }
    broker.kill9();
    stop.store(true, Ordering::Relaxed);
    producer.join().unwrap();
    let acked = acked.lock().unwrap().clone();
    assert!(!broker.data_dir().join(".clean-shutdown").exists());

    broker.restart();
    let mut raw = Raw::connect(broker.addr());
    let records = raw.fetch_all("durable", 0);
    for (i, (offset, _)) in records.iter().enumerate() {
        assert_eq!(*offset, i as i64, "offsets must be contiguous from 0");
    }
    for (base, values) in &acked {
        for (j, value) in values.iter().enumerate() {
            let offset = *base as usize + j;
            assert!(offset < records.len(), "acknowledged offset {offset} lost ({} records survived)", records.len());
            assert_eq!(&records[offset].1, value, "offset {offset}");
        }
    }
    // The log takes appends again right after what survived.
    assert_eq!(raw.produce("durable", 0, batch(&[b"after"]), -1), (0, records.len() as i64));
}
