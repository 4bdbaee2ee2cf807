//! Kafka's Java client (kafka-clients, Kafka Streams 4.x) against the real broker, through the
//! driver in `tests/java` that `scripts/test` builds: the producer with acks 0/1/all,
//! idempotence and every codec; classic consumer groups with the range and cooperative-sticky
//! assignors and static membership, committing and resuming; the AdminClient calls; a Kafka
//! Streams word count with a state store that survives a broker restart; the consumer's
//! offset validation with OffsetForLeaderEpoch (KIP-320).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use common::{Broker, Raw, java_command, java_driver, serial};
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest};
use serde_json::{Value, json};

const DEADLINE: Duration = Duration::from_secs(300);

/// The first batch of a partition, raw: (attributes, producer id).
fn first_batch_header(raw: &mut Raw, topic: &str, partition: i32) -> (i16, i64) {
    let (error, _, bytes) = raw.fetch(topic, partition, 0, 0);
    assert_eq!(error, 0, "fetch {topic}-{partition}");
    assert!(bytes.len() > 61, "{topic}-{partition} holds no batch");
    let attributes = i16::from_be_bytes(bytes[21..23].try_into().unwrap());
    let producer_id = i64::from_be_bytes(bytes[43..51].try_into().unwrap());
    (attributes, producer_id)
}

#[test]
fn producer_acks_idempotence_and_every_codec() {
    let _serial = serial();
    let broker = Broker::start(2, &[]);
    let summary = java_driver(&broker, "producers", &["--records", "20000"], DEADLINE);
    let mut raw = Raw::connect(broker.addr());
    let cases = [
        ("acks-0", 0, false),
        ("acks-1", 0, false),
        ("acks-all", 0, true),
        ("codec-gzip", 1, true),
        ("codec-snappy", 2, true),
        ("codec-lz4", 3, true),
        ("codec-zstd", 4, true),
    ];
    for (topic, codec, idempotent) in cases {
        assert_eq!(summary[topic], json!({"read": 20000, "partitions_used": 3}), "{summary}");
        for partition in 0..3 {
            let (attributes, producer_id) = first_batch_header(&mut raw, topic, partition);
            assert_eq!(attributes & 0x7, codec, "{topic}-{partition} compression");
            // Idempotence is the default with acks=all; acks 0 and 1 turn it off.
            assert_eq!(producer_id >= 0, idempotent, "{topic}-{partition} producer id {producer_id}");
        }
    }
}

#[test]
fn consumer_groups_range_assignor_commit_and_resume() {
    let _serial = serial();
    let broker = Broker::start(2, &[]);
    let summary = java_driver(&broker, "groups", &["--assignor", "range"], DEADLINE);
    assert_eq!(summary["first"], json!([0, 1, 2]), "{summary}");
    assert_eq!(summary["second"], json!([3, 4, 5]), "{summary}");
    // The eager protocol takes every partition back before reassigning.
    assert_eq!(summary["revoked_from_first"], json!([0, 1, 2, 3, 4, 5]), "{summary}");
    assert_eq!(summary["resumed"], 600, "{summary}");
}

#[test]
fn consumer_groups_cooperative_sticky_commit_and_resume() {
    let _serial = serial();
    let broker = Broker::start(2, &[]);
    let summary = java_driver(&broker, "groups", &["--assignor", "cooperative-sticky"], DEADLINE);
    let first: Vec<i64> = serde_json::from_value(summary["first"].clone()).unwrap();
    let revoked: Vec<i64> = serde_json::from_value(summary["revoked_from_first"].clone()).unwrap();
    assert_eq!(first.len(), 3, "{summary}");
    // Only what moved to the second member was revoked, in the extra cooperative round.
    assert_eq!(revoked.len(), 3, "{summary}");
    assert!(revoked.iter().all(|p| !first.contains(p)), "{summary}");
    assert!(summary["generation"].as_i64().unwrap() >= 3, "two rebalance rounds: {summary}");
    assert_eq!(summary["resumed"], 600, "{summary}");
}

#[test]
fn static_member_rejoins_without_a_rebalance() {
    let _serial = serial();
    let broker = Broker::start(2, &[]);
    let summary = java_driver(&broker, "static-membership", &[], DEADLINE);
    assert_eq!(summary["generation_after"], summary["generation_before"], "{summary}");
    assert_eq!(summary["first_generation"], summary["generation_before"], "{summary}");
    assert_eq!(summary["same_partitions"], true, "{summary}");
}

/// The highest version of `key` the broker advertises, if any.
fn advertised(addr: &str, key: ApiKey) -> Option<i16> {
    let response = Raw::connect(addr).send(&ApiVersionsRequest::default(), 3);
    response.api_keys.iter().find(|k| k.api_key == key as i16).map(|k| k.max_version)
}

#[test]
fn admin_client_calls() {
    let _serial = serial();
    let broker = Broker::start(2, &[]);
    let summary = java_driver(&broker, "admin", &[], DEADLINE);
    let ok = |call: &str| -> &Value {
        let outcome = &summary[call];
        assert!(outcome.get("ok").is_some(), "{call}: {outcome}\n{summary}");
        &outcome["ok"]
    };
    // A call the broker does not advertise is refused by the client itself.
    let refused = |call: &str| {
        assert_eq!(summary[call]["error"], "UnsupportedVersionException", "{call}\n{summary}");
    };
    let serves = |key: ApiKey| advertised(broker.addr(), key).is_some();

    ok("create_topics");
    assert_eq!(summary["create_existing"]["error"], "TopicExistsException", "{summary}");
    assert!(ok("list_topics").as_array().unwrap().contains(&json!("admin-topic")), "{summary}");
    assert_eq!(ok("describe_topics"), &json!({"partitions": 2, "internal": false}));
    assert_eq!(ok("list_offsets_earliest"), 0);
    let latest = ok("list_offsets_latest").as_i64().unwrap();
    assert!(latest > 0, "{summary}");
    assert_eq!(ok("list_offsets_by_timestamp"), 0, "the first record at or after a time before all");
    let max_timestamp = ok("list_offsets_max_timestamp").as_i64().unwrap();
    assert!((0..latest).contains(&max_timestamp), "{summary}");
    assert_eq!(ok("list_offsets_earliest_local"), 0, "no tiered storage: the log start");
    // Tiered offsets (-5) need ListOffsets v9.
    if advertised(broker.addr(), ApiKey::ListOffsets).unwrap() >= 9 {
        assert_eq!(ok("list_offsets_latest_tiered"), -1, "no tiered storage");
    } else {
        refused("list_offsets_latest_tiered");
    }
    if serves(ApiKey::CreatePartitions) {
        assert_eq!(ok("create_partitions"), 3);
    } else {
        refused("create_partitions");
    }
    if serves(ApiKey::DescribeConfigs) {
        assert_eq!(ok("describe_configs"), "3600000");
    } else {
        refused("describe_configs");
    }
    if serves(ApiKey::IncrementalAlterConfigs) {
        assert_eq!(ok("incremental_alter_configs"), "7200000");
    } else {
        refused("incremental_alter_configs");
    }
    if serves(ApiKey::DeleteRecords) {
        assert_eq!(ok("delete_records"), 10);
    } else {
        refused("delete_records");
    }
    assert!(ok("list_groups").as_array().unwrap().contains(&json!("admin-group")), "{summary}");
    assert_eq!(ok("describe_groups"), &json!({"state": "Empty", "members": 0}));
    assert_eq!(ok("list_group_offsets"), 100, "committed the end of every partition");
    assert_eq!(ok("alter_group_offsets"), 20);
    assert_eq!(ok("delete_group_offsets"), false, "the offset is gone");
    assert_eq!(ok("delete_groups"), false, "the group is gone");
    assert_eq!(ok("describe_cluster"), 1);
    assert_eq!(ok("delete_topics"), false, "the topic is gone");
}

/// Runs the word count (`Driver wordcount`) for two rounds of input, restarting the broker on
/// its port between them while the application keeps running; returns the driver's summary.
fn word_count_across_restart(guarantee: &str) -> Value {
    let mut broker = Broker::start(2, &[]);
    let state_dir = tempfile::tempdir().unwrap();
    let mut command = java_command("sluice.Driver");
    command
        .args(["wordcount", "--bootstrap", broker.addr(), "--app-id", "wordcount", "--guarantee", guarantee])
        .args(["--lines", "400", "--rounds", "2", "--state-dir"])
        .arg(state_dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("starting java");
    let mut stdin = child.stdin.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let (lines_tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let errors = Arc::new(Mutex::new(String::new()));
    let log = errors.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let mut log = log.lock().unwrap();
            log.push_str(&line);
            log.push('\n');
        }
    });
    let expect_line = |child: &mut Child, broker: &Broker, want: &str| -> String {
        let line = lines.recv_timeout(DEADLINE).unwrap_or_default();
        if !line.starts_with(want) {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "word count: wanted {want:?}, got {line:?}; stderr:\n{}\nbroker stderr:\n{}",
                errors.lock().unwrap(),
                broker.stderr_text()
            );
        }
        line
    };
    expect_line(&mut child, &broker, "counted 1");
    broker.terminate();
    broker.restart();
    stdin.write_all(b"go\n").unwrap();
    expect_line(&mut child, &broker, "counted 2");
    let summary = expect_line(&mut child, &broker, "{");
    let status = child.wait().unwrap();
    assert!(status.success(), "word count failed; stderr:\n{}", errors.lock().unwrap());
    serde_json::from_str(&summary).unwrap_or_else(|e| panic!("{e}: {summary}"))
}

#[test]
fn streams_word_count_survives_a_broker_restart() {
    let _serial = serial();
    let summary = word_count_across_restart("at_least_once");
    // 400 lines per round, cycling over four sentences; counts only grow by the new round.
    assert_eq!(summary["round_1"]["the"], 300, "{summary}");
    assert_eq!(summary["round_1"]["fox"], 200, "{summary}");
    assert_eq!(summary["round_2"]["the"], 600, "{summary}");
    assert_eq!(summary["round_2"]["sleeps"], 200, "{summary}");
    let topics = summary["topics"].as_array().unwrap();
    for internal in ["wordcount-counts-changelog", "wordcount-counts-repartition"] {
        assert!(topics.contains(&json!(internal)), "{summary}");
    }
    assert_eq!(summary["state"], "RUNNING", "{summary}");
}

/// KIP-320: a position carrying a leader epoch is validated with OffsetForLeaderEpoch before
/// the consumer fetches from it. Within the epoch's part of the log it is kept; past where the
/// epoch ended (here the log end) the consumer detects log truncation and, with
/// auto.offset.reset=none, names the divergent offset and epoch. A broker that did not serve
/// OffsetForLeaderEpoch would have the consumer skip validation and fail on the fetch instead.
#[test]
fn consumer_validates_positions_with_offset_for_leader_epoch() {
    let _serial = serial();
    let broker = Broker::start(2, &[]);
    let summary = java_driver(&broker, "offset-validation", &[], DEADLINE);
    assert_eq!(summary["validated_offsets"], json!([5, 6, 7, 8, 9]), "{summary}");
    assert_eq!(summary["record_epochs"], json!([0]), "batches carry the leader epoch: {summary}");
    assert_eq!(summary["divergent"], json!([10, 0]), "{summary}");
}
