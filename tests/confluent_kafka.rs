//! confluent-kafka (librdkafka): 100,000 records per codec (lz4, snappy, zstd) over six
//! partitions, all read back in order with contiguous offsets; admin create, list, delete;
//! offset validation with OffsetForLeaderEpoch (KIP-320).

mod common;

use std::time::Duration;

use common::{Broker, driver};

#[test]
fn compressed_streams_round_trip_and_admin_works() {
    let broker = Broker::start(2, &[]);
    let summary = driver(&broker, "confluent_codecs", &["--records", "100000"], Duration::from_secs(600));
    for codec in ["lz4", "snappy", "zstd"] {
        let per_partition = summary[codec].as_object().unwrap();
        assert_eq!(per_partition.len(), 6, "{summary}");
        let total: u64 = per_partition.values().map(|n| n.as_u64().unwrap()).sum();
        assert_eq!(total, 100_000, "{codec}: {summary}");
    }
}

/// KIP-320 in librdkafka: a position assigned with a leader epoch is validated with
/// OffsetForLeaderEpoch; within the epoch's part of the log it is kept, sought past its end the
/// consumer reports log truncation at the epoch's end (auto.offset.reset=error).
#[test]
fn positions_with_a_leader_epoch_are_validated() {
    let broker = Broker::start(2, &[]);
    let summary = driver(&broker, "offset_validation_confluent", &[], Duration::from_secs(120));
    assert_eq!(summary["validated_offsets"], serde_json::json!([5, 6, 7, 8, 9]), "{summary}");
    assert_eq!(summary["record_epochs"], serde_json::json!([0]), "{summary}");
    // Without OffsetForLeaderEpoch the fetch fails instead with OFFSET_OUT_OF_RANGE.
    let truncation = summary["truncation"].as_str().unwrap_or_default();
    assert!(truncation.contains("broker end offset is 10"), "{summary}");
}
