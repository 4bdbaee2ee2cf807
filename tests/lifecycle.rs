//! Log lifecycle and the admin APIs, driven by confluent-kafka's and kafka-python's admin
//! clients against the real binary: retention by time and size, DeleteRecords,
//! CreatePartitions, DescribeConfigs, AlterConfigs and IncrementalAlterConfigs,
//! DescribeCluster, DescribeLogDirs and DescribeProducers.

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
    // The first pass may have run while the records still arrived: the next ones catch up.
    let dir = broker.data_dir().join("by-size-0");
    let segment_bytes = || -> u64 {
        std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
            .map(|e| e.metadata().unwrap().len())
            .sum()
    };
    common::wait_until(Duration::from_secs(10), "retention brings the partition near retention.bytes", || {
        segment_bytes() < 3000 + 2 * 1000
    });
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

#[test]
fn created_partitions_take_records_across_a_restart() {
    let mut broker = Broker::start(2, &[]);
    driver(&broker, "admin_lifecycle", &["create-partitions", "--topic", "grown"], DEADLINE);
    broker.terminate();
    broker.restart();
    driver(&broker, "admin_lifecycle", &["partitions-after-restart", "--topic", "grown"], DEADLINE);
    // Placed like the first partitions: spread over both shards.
    let image = common::metadata_image(broker.data_dir());
    let topic = image["topics"].as_array().unwrap().iter().find(|t| t["name"] == "grown").unwrap();
    let shards: std::collections::BTreeSet<u64> =
        topic["partitions"].as_array().unwrap().iter().map(|p| p["shard"].as_u64().unwrap()).collect();
    assert_eq!(shards.len(), 2, "{topic}");
}

#[test]
fn create_partitions_refuses_what_it_cannot_do() {
    use kafka_protocol::ResponseError;
    use kafka_protocol::messages::create_partitions_request::{CreatePartitionsAssignment, CreatePartitionsTopic};
    use kafka_protocol::messages::{BrokerId, CreatePartitionsRequest, TopicName};
    use kafka_protocol::protocol::StrBytes;

    let broker = Broker::start(1, &[]);
    let mut raw = Raw::connect(broker.addr());
    assert_eq!(raw.create_topic("t", 1, &[]), 0);
    let grow = |name: &str, count: i32, replicas: Option<Vec<i32>>| {
        CreatePartitionsTopic::default()
            .with_name(TopicName(StrBytes::from_string(name.to_string())))
            .with_count(count)
            .with_assignments(replicas.map(|r| {
                vec![CreatePartitionsAssignment::default().with_broker_ids(r.into_iter().map(BrokerId).collect())]
            }))
    };
    let request = CreatePartitionsRequest::default().with_timeout_ms(10_000).with_topics(vec![
        grow("t", 2, Some(vec![7])),
        grow("__consumer_offsets", 100, None),
        grow("missing", 2, None),
    ]);
    let codes: Vec<i16> = raw.send(&request, 3).results.iter().map(|r| r.error_code).collect();
    let expected = [
        ResponseError::InvalidReplicaAssignment,
        ResponseError::InvalidRequest,
        ResponseError::UnknownTopicOrPartition,
    ];
    assert_eq!(codes, expected.map(|e| e.code()));
    // The one broker (node 0) as the replica is fine.
    let request =
        CreatePartitionsRequest::default().with_timeout_ms(10_000).with_topics(vec![grow("t", 2, Some(vec![0]))]);
    assert_eq!(raw.send(&request, 3).results[0].error_code, 0);
    assert_eq!(raw.produce("t", 1, common::batch(&[b"new"]), -1).0, 0);
}

#[test]
fn configs_change_live_and_survive_a_restart() {
    let mut broker = broker();
    let summary = driver(&broker, "admin_lifecycle", &["configs", "--topic", "tuned"], DEADLINE);
    assert!(summary["low"].as_i64().unwrap() > 2, "{summary}");
    broker.terminate();
    broker.restart();
    driver(&broker, "admin_lifecycle", &["configs-after-restart", "--topic", "tuned"], DEADLINE);
}

#[test]
fn describe_apis_report_the_broker_its_sizes_and_producers() {
    let broker = Broker::start(2, &[]);
    let summary = driver(&broker, "admin_lifecycle", &["describe", "--topic", "seen"], DEADLINE);
    let image = common::metadata_image(broker.data_dir());
    assert_eq!(summary["cluster_id"], image["cluster_id"], "{summary}");
    // The size reported for each partition is the bytes of its segments on disk.
    let dir = &summary["log_dirs"][0]["log_dirs"][0];
    assert_eq!(dir["error_code"], 0, "{dir}");
    let topic = dir["topics"].as_array().unwrap().iter().find(|t| t["name"] == "seen").unwrap();
    let on_disk = |partition: i64| -> u64 {
        std::fs::read_dir(broker.data_dir().join(format!("seen-{partition}")))
            .unwrap()
            .map(|e| e.unwrap())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
            .map(|e| e.metadata().unwrap().len())
            .sum()
    };
    assert!(on_disk(0) > 0);
    for p in topic["partitions"].as_array().unwrap() {
        let partition = p["partition_index"].as_i64().unwrap();
        assert_eq!(p["partition_size"].as_u64().unwrap(), on_disk(partition), "{p}");
    }
    assert_eq!(topic["partitions"].as_array().unwrap().len(), 2);
}

#[test]
fn a_deleted_topic_created_again_at_once_starts_empty_and_its_old_files_go() {
    use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
    use kafka_protocol::messages::{DeleteTopicsRequest, TopicName};
    let broker = Broker::start(2, &[]);
    let mut raw = Raw::connect(broker.addr());
    assert_eq!(raw.create_topic("again", 2, &[]), 0);
    for partition in 0..2 {
        assert_eq!(raw.produce("again", partition, common::batch(&[b"old", b"records"]), 1).0, 0);
    }
    let name = TopicName(kafka_protocol::protocol::StrBytes::from_static_str("again"));
    let delete = DeleteTopicsRequest::default()
        .with_topics(vec![DeleteTopicState::default().with_name(Some(name))])
        .with_timeout_ms(10_000);
    assert_eq!(raw.send(&delete, 6).responses[0].error_code, 0);
    assert_eq!(raw.create_topic("again", 2, &[]), 0);
    for partition in 0..2 {
        assert_eq!(raw.fetch_all("again", partition), Vec::new(), "the new topic starts empty");
        assert_eq!(raw.produce("again", partition, common::batch(&[b"new"]), 1), (0, 0));
    }
    // The old partitions' directories were renamed at once and are removed in the background.
    common::wait_until(Duration::from_secs(10), "the old directories are removed", || {
        let names: Vec<String> = std::fs::read_dir(broker.data_dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.iter().all(|n| !n.ends_with("-delete")) && names.iter().filter(|n| n.starts_with("again-")).count() == 2
    });
}
