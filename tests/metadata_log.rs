//! The metadata log (a one-voter Raft group on shard 0): data dirs written before it are
//! migrated, and snapshots bound its size across many changes and restarts.

mod common;

use common::{Broker, Raw};

/// A `metadata.json` as Sluice wrote it before the metadata log (`serde_json::to_vec_pretty`
/// of the image): a topic on both shards with a config, a producer-id counter, and
/// `__consumer_offsets`.
const LEGACY_METADATA: &str = r#"{
  "cluster_id": "0f6a1d2c3b4e4f5a8b9c0d1e2f3a4b5c",
  "next_producer_id": 5000,
  "topics": [
    {
      "name": "__consumer_offsets",
      "topic_id": "5b1d9a3e-7c2f-4e8a-9d6b-1f2e3a4b5c6d",
      "partitions": [
        { "partition": 0, "shard": 0, "leader_epoch": 0 },
        { "partition": 1, "shard": 1, "leader_epoch": 0 }
      ],
      "configs": { "cleanup.policy": "compact", "segment.bytes": "104857600" }
    },
    {
      "name": "legacy",
      "topic_id": "9e8d7c6b-5a4f-4e3d-8c2b-1a0f9e8d7c6b",
      "partitions": [
        { "partition": 0, "shard": 1, "leader_epoch": 0 },
        { "partition": 1, "shard": 0, "leader_epoch": 0 }
      ],
      "configs": { "retention.ms": "86400000" }
    }
  ],
  "cluster_configs": {},
  "broker_configs": {}
}"#;

#[test]
fn a_data_dir_with_metadata_json_is_migrated_into_the_log() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("metadata.json"), LEGACY_METADATA).unwrap();
    let mut broker = Broker::start_in(dir.path(), 2, &[]);
    let image = common::metadata_image(dir.path());
    assert_eq!(image["cluster_id"], "0f6a1d2c3b4e4f5a8b9c0d1e2f3a4b5c");
    assert_eq!(image["next_producer_id"], 5000);
    let legacy = image["topics"].as_array().unwrap().iter().find(|t| t["name"] == "legacy").unwrap();
    assert_eq!(legacy["topic_id"], "9e8d7c6b-5a4f-4e3d-8c2b-1a0f9e8d7c6b");
    assert_eq!(legacy["partitions"][0]["shard"], 1, "{legacy}");
    assert_eq!(legacy["configs"]["retention.ms"], "86400000");
    // The old file is kept for an operator, under a name no start reads.
    assert!(!dir.path().join("metadata.json").exists());
    assert!(dir.path().join("metadata.json.migrated").exists());

    let mut raw = Raw::connect(broker.addr());
    for partition in 0..2 {
        assert_eq!(raw.produce("legacy", partition, common::batch(&[b"kept"]), -1).0, 0);
    }
    assert_eq!(raw.create_topic("after", 1, &[]), 0);
    broker.terminate();
    broker.restart();
    let image = common::metadata_image(dir.path());
    let names: Vec<&str> = image["topics"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["__consumer_offsets", "after", "legacy"]);
    let mut raw = Raw::connect(broker.addr());
    assert_eq!(raw.produce("after", 0, common::batch(&[b"x"]), -1).0, 0);
    assert_eq!(raw.produce("legacy", 1, common::batch(&[b"y"]), -1), (0, 1));
}

#[test]
fn snapshots_bound_the_log_and_restarts_read_them() {
    const TOPICS: usize = 60;
    let mut broker = Broker::start(1, &["--set", "metadata.log.max.record.bytes.between.snapshots=2000"]);
    let mut raw = Raw::connect(broker.addr());
    let log = broker.data_dir().join("__cluster_metadata").join("log");
    let mut largest = 0;
    for i in 0..TOPICS {
        assert_eq!(raw.create_topic(&format!("topic-{i}"), 1, &[]), 0);
        largest = largest.max(std::fs::metadata(&log).unwrap().len());
    }
    // Each creation takes two 4 KiB pages (the entry, then its commit): without snapshots the
    // log would hold them all, about 500 KB.
    assert!(largest < 120_000, "the log grew to {largest} bytes");
    let snapshot = std::fs::read(broker.data_dir().join("__cluster_metadata").join("snapshot")).unwrap();
    // One of the last topics is in it (a snapshot every few creations; where they fall
    // depends on every entry before, brokers' registrations included).
    let snapshot = String::from_utf8_lossy(&snapshot);
    assert!((TOPICS - 12..TOPICS).any(|i| snapshot.contains(&format!("\"topic-{i}\""))));

    broker.kill9();
    broker.restart();
    let image = common::metadata_image(broker.data_dir());
    assert_eq!(image["topics"].as_array().unwrap().len(), TOPICS + 1, "with __consumer_offsets");
    let mut raw = Raw::connect(broker.addr());
    assert_eq!(raw.create_topic("topic-0", 1, &[]), 36, "TOPIC_ALREADY_EXISTS");
    assert_eq!(raw.produce(&format!("topic-{}", TOPICS - 1), 0, common::batch(&[b"x"]), -1).0, 0);
}
