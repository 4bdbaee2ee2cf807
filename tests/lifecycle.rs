//! Log lifecycle and the admin APIs, driven by confluent-kafka's and kafka-python's admin
//! clients against the real binary: retention by time and size, DeleteRecords.

mod common;

use std::time::Duration;

use common::{Broker, Raw, driver};

const DEADLINE: Duration = Duration::from_secs(180);

/// A broker that applies retention every 100 ms.
fn broker() -> Broker {
    Broker::start(2, &["--set", "log.retention.check.interval.ms=100"])
}

#[test]
fn time_retention_deletes_old_segments_and_moves_the_log_start() {
    let broker = broker();
    let summary = driver(&broker, "admin_lifecycle", &["retention-time", "--topic", "by-time"], DEADLINE);
    assert!(summary["low"].as_i64().unwrap() >= 20, "{summary}");
    // Fetching below the start is refused with OFFSET_OUT_OF_RANGE (1).
    let (error, _, _) = Raw::connect(broker.addr()).fetch("by-time", 0, 0, 0);
    assert_eq!(error, 1);
}

#[test]
fn size_retention_keeps_a_partition_near_its_limit() {
    let broker = broker();
    let summary = driver(&broker, "admin_lifecycle", &["retention-size", "--topic", "by-size"], DEADLINE);
    let low = summary["low"].as_i64().unwrap();
    assert!(low > 0, "{summary}");
    // What remains is about retention.bytes (3000) plus the active segment, not all 200 records.
    let dir = broker.data_dir().join("by-size-0");
    let bytes: u64 = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
        .map(|e| e.metadata().unwrap().len())
        .sum();
    assert!(bytes < 3000 + 2 * 1000, "{bytes} bytes of segments left");
}

#[test]
fn delete_records_moves_the_start_across_a_restart() {
    let mut broker = Broker::start(2, &[]);
    driver(&broker, "admin_lifecycle", &["delete-records", "--topic", "trimmed"], DEADLINE);
    broker.terminate();
    broker.restart();
    let mut raw = Raw::connect(broker.addr());
    assert_eq!(raw.fetch("trimmed", 0, 29, 0).0, 1, "below the start after a restart");
    let (error, high_watermark, records) = raw.fetch("trimmed", 0, 30, 0);
    assert_eq!((error, high_watermark), (0, 50));
    assert!(common::decode(&records).iter().any(|(offset, _)| *offset == 30));
}
