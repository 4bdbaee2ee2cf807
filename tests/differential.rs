//! Differential tests against Apache Kafka: one single-node Apache Kafka 4.4 broker (KRaft,
//! combined mode, from the Maven jars on the Java driver's classpath, on loopback ports, data
//! in a temp dir) and one Sluice broker get the same table of edge cases as raw requests; the
//! error codes and visible results must be equal. A case that differs must be listed in
//! `KNOWN_DIFFERENCES` with its reason, mirrored in docs/COMPATIBILITY.md; a listed case that
//! no longer differs fails too, so that the list stays true. Sluice's own clients (`sluice
//! bench`, `produce`, `consume`) must work against the same Apache Kafka.

mod common;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use common::{Broker, Raw, batch, batch_at, cli, java_command, serial};
use kafka_protocol::ResponseError;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::delete_records_request::{DeleteRecordsPartition, DeleteRecordsTopic};
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::offset_commit_request::{OffsetCommitRequestPartition, OffsetCommitRequestTopic};
use kafka_protocol::messages::offset_for_leader_epoch_request::{OffsetForLeaderPartition, OffsetForLeaderTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    BrokerId, CreateTopicsRequest, DeleteRecordsRequest, DescribeConfigsRequest, FetchRequest, FindCoordinatorRequest,
    GroupId, HeartbeatRequest, JoinGroupRequest, ListOffsetsRequest, MetadataRequest, OffsetCommitRequest,
    OffsetForLeaderEpochRequest, ProduceRequest, SyncGroupRequest, TopicName,
    join_group_request::JoinGroupRequestProtocol,
};
use kafka_protocol::protocol::StrBytes;
use serde_json::{Value, json};

/// Cases where Sluice answers differently from Apache Kafka, each with its reason (also in
/// docs/COMPATIBILITY.md).
const KNOWN_DIFFERENCES: &[(&str, &str)] = &[(
    "produce_duplicated_partitions",
    "Kafka keeps one of the two batches and answers once; Sluice refuses the request (INVALID_REQUEST for each) \
     rather than drop data it acknowledged",
)];

fn string(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

fn topic(s: &str) -> TopicName {
    TopicName(string(s))
}

/// A single-node Apache Kafka broker in combined (broker + controller) KRaft mode.
struct ApacheKafka {
    child: Child,
    addr: String,
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl ApacheKafka {
    fn start() -> ApacheKafka {
        let dir = tempfile::tempdir().unwrap();
        let (port, controller) = (free_port(), free_port());
        let config = dir.path().join("server.properties");
        std::fs::write(
            &config,
            format!(
                "process.roles=broker,controller\n\
                 node.id=1\n\
                 controller.quorum.bootstrap.servers=127.0.0.1:{controller}\n\
                 listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}\n\
                 advertised.listeners=PLAINTEXT://127.0.0.1:{port}\n\
                 controller.listener.names=CONTROLLER\n\
                 inter.broker.listener.name=PLAINTEXT\n\
                 listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT\n\
                 log.dirs={}\n\
                 offsets.topic.replication.factor=1\n\
                 offsets.topic.num.partitions=4\n\
                 transaction.state.log.replication.factor=1\n\
                 transaction.state.log.min.isr=1\n\
                 share.coordinator.state.topic.replication.factor=1\n\
                 share.coordinator.state.topic.min.isr=1\n\
                 group.initial.rebalance.delay.ms=0\n",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        let mut format = java_command("kafka.tools.StorageTool");
        format.args(["format", "--standalone", "--cluster-id", "q1Sh-9_ISia_zwGINzRvyQ", "--config"]).arg(&config);
        let (ok, out, err) = common::run_with_deadline(format, b"", Duration::from_secs(120));
        assert!(ok, "formatting Kafka's storage failed\n{out}\n{err}");
        let log = dir.path().join("kafka.log");
        let mut command: Command = java_command("kafka.Kafka");
        command.arg(&config).stdin(Stdio::null()).stdout(std::fs::File::create(&log).unwrap()).stderr(Stdio::null());
        use std::os::unix::process::CommandExt;
        let child = command.process_group(0).spawn().expect("starting Apache Kafka");
        let kafka = ApacheKafka { child, addr: format!("127.0.0.1:{port}"), log, _dir: dir };
        kafka.wait_ready();
        kafka
    }

    /// Ready once it answers and its controller creates topics.
    fn wait_ready(&self) {
        let start = Instant::now();
        loop {
            assert!(
                start.elapsed() < Duration::from_secs(180),
                "Apache Kafka did not become ready:\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            if std::net::TcpStream::connect(&self.addr).is_ok() {
                let code = create(&mut Raw::connect(&self.addr), "ready-probe", 1, 1, &[]);
                if code == 0 || code == 36 {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for ApacheKafka {
    fn drop(&mut self) {
        let group = nix::unistd::Pid::from_raw(-(self.child.id() as i32));
        let _ = nix::sys::signal::kill(group, nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

/// CreateTopics v7 of one topic; returns its error code. A topic it creates is waited for until
/// every partition answers ListOffsets: Apache Kafka answers CreateTopics once its controller
/// has the topic, and its broker serves the partitions moments later.
fn create(raw: &mut Raw, name: &str, partitions: i32, replication: i16, configs: &[(&str, &str)]) -> i16 {
    let topic = CreatableTopic::default()
        .with_name(topic(name))
        .with_num_partitions(partitions)
        .with_replication_factor(replication)
        .with_configs(
            configs
                .iter()
                .map(|(k, v)| CreatableTopicConfig::default().with_name(string(k)).with_value(Some(string(v))))
                .collect(),
        );
    let request = CreateTopicsRequest::default().with_topics(vec![topic]).with_timeout_ms(10_000);
    let code = raw.send(&request, 7).topics[0].error_code;
    if code == 0 {
        let served = |raw: &mut Raw, partition: i32| {
            let request = ListOffsetsRequest::default().with_replica_id(BrokerId(-1)).with_topics(vec![
                ListOffsetsTopic::default().with_name(TopicName(string(name))).with_partitions(vec![
                    ListOffsetsPartition::default().with_partition_index(partition).with_timestamp(-1),
                ]),
            ]);
            raw.send(&request, 7).topics[0].partitions[0].error_code == 0
        };
        common::wait_until(Duration::from_secs(30), &format!("{name} is served"), || {
            (0..partitions).all(|p| served(raw, p))
        });
    }
    code
}

/// Metadata v12 for `names` without auto-creation: each topic's error code.
fn metadata_errors(raw: &mut Raw, names: &[&str]) -> Value {
    let request = MetadataRequest::default()
        .with_allow_auto_topic_creation(false)
        .with_topics(Some(names.iter().map(|n| MetadataRequestTopic::default().with_name(Some(topic(n)))).collect()));
    // Kafka answers topics in no particular order.
    let response = raw.send(&request, 12);
    let by_name: std::collections::BTreeMap<String, i16> = response
        .topics
        .iter()
        .map(|t| (t.name.as_ref().map(|n| n.0.to_string()).unwrap_or_default(), t.error_code))
        .collect();
    json!(by_name)
}

fn produce_code(raw: &mut Raw, name: &str, partition: i32, records: Bytes) -> i16 {
    raw.produce(name, partition, records, -1).0
}

fn metadata_unknown_and_illegal_names(raw: &mut Raw) -> Value {
    let long = "a".repeat(250);
    metadata_errors(raw, &["diff-absent", "bad/name", &long, ".."])
}

fn create_topics_illegal_names(raw: &mut Raw) -> Value {
    let long = "b".repeat(250);
    json!(["bad name!", long.as_str(), ".", "bad/name"].map(|n| create(raw, n, 1, 1, &[])))
}

fn create_topics_existing(raw: &mut Raw) -> Value {
    json!([create(raw, "diff-existing", 1, 1, &[]), create(raw, "diff-existing", 1, 1, &[])])
}

fn create_topics_bad_partitions_and_replication(raw: &mut Raw) -> Value {
    json!({
        "zero_partitions": create(raw, "diff-p0", 0, 1, &[]),
        "negative_partitions": create(raw, "diff-pneg", -5, 1, &[]),
        "replication_3": create(raw, "diff-r3", 1, 3, &[]),
        "replication_0": create(raw, "diff-r0", 1, 0, &[]),
    })
}

fn create_topics_bad_configs(raw: &mut Raw) -> Value {
    json!({
        "unknown": create(raw, "diff-c1", 1, 1, &[("no.such.config", "1")]),
        "not_a_number": create(raw, "diff-c2", 1, 1, &[("retention.ms", "abc")]),
        "bad_policy": create(raw, "diff-c3", 1, 1, &[("cleanup.policy", "bogus")]),
        "good": create(raw, "diff-c4", 1, 1, &[("retention.ms", "1000")]),
    })
}

fn produce_unknown_topic_and_partition(raw: &mut Raw) -> Value {
    assert_eq!(create(raw, "diff-produce", 2, 1, &[]), 0);
    json!({
        "unknown_topic": produce_code(raw, "diff-nope", 0, batch(&[b"x"])),
        "unknown_partition": produce_code(raw, "diff-produce", 9, batch(&[b"x"])),
        "negative_partition": produce_code(raw, "diff-produce", -1, batch(&[b"x"])),
    })
}

fn produce_duplicated_partitions(raw: &mut Raw) -> Value {
    assert_eq!(create(raw, "diff-dup", 1, 1, &[]), 0);
    let data = |_: ()| PartitionProduceData::default().with_index(0).with_records(Some(batch(&[b"x"])));
    let request = ProduceRequest::default().with_acks(-1).with_timeout_ms(10_000).with_topic_data(vec![
        TopicProduceData::default().with_name(topic("diff-dup")).with_partition_data(vec![data(()), data(())]),
    ]);
    let response = raw.send(&request, 9);
    let codes: Vec<Vec<i16>> =
        response.responses.iter().map(|t| t.partition_responses.iter().map(|p| p.error_code).collect()).collect();
    let (error, high_watermark, _) = raw.fetch("diff-dup", 0, 0, 0);
    json!({"codes": codes, "fetch_error": error, "high_watermark": high_watermark})
}

fn produce_corrupt_and_oversized_batches(raw: &mut Raw) -> Value {
    assert_eq!(create(raw, "diff-bad", 1, 1, &[("max.message.bytes", "1000")]), 0);
    let mut corrupt = BytesMut::from(&batch(&[b"some value"])[..]);
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0xff;
    let big = vec![b'x'; 3000];
    json!({
        "bad_crc": produce_code(raw, "diff-bad", 0, corrupt.freeze()),
        "too_large": produce_code(raw, "diff-bad", 0, batch(&[&big])),
        "fits": produce_code(raw, "diff-bad", 0, batch(&[b"small"])),
        "high_watermark": raw.fetch("diff-bad", 0, 0, 0).1,
    })
}

fn produce_keyless_to_compacted_topic(raw: &mut Raw) -> Value {
    assert_eq!(create(raw, "diff-compact", 1, 1, &[("cleanup.policy", "compact")]), 0);
    let keyed = sluice::protocol::records::encode_batch(
        &[(Some(Bytes::from_static(b"k")), Some(Bytes::from_static(b"v")))],
        now_ms(),
    );
    json!({
        "without_key": produce_code(raw, "diff-compact", 0, batch(&[b"v"])),
        "with_key": produce_code(raw, "diff-compact", 0, keyed),
    })
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

fn fetch_offsets_around_the_log(raw: &mut Raw) -> Value {
    assert_eq!(create(raw, "diff-fetch", 1, 1, &[]), 0);
    assert_eq!(produce_code(raw, "diff-fetch", 0, batch(&[b"a", b"b", b"c"])), 0);
    let mut result = serde_json::Map::new();
    for offset in [0i64, 2, 3, 4, 100, -1, -5] {
        let (error, high_watermark, records) = raw.fetch("diff-fetch", 0, offset, 0);
        let count = if records.is_empty() { 0 } else { common::decode(&records).len() };
        result.insert(offset.to_string(), json!([error, high_watermark, count]));
    }
    let (error, _, _) = raw.fetch("diff-fetch", 7, 0, 0);
    result.insert("unknown_partition".into(), json!(error));
    Value::Object(result)
}

fn list_offsets_by_timestamp(raw: &mut Raw) -> Value {
    assert_eq!(create(raw, "diff-times", 1, 1, &[]), 0);
    let t0 = now_ms() - 60_000;
    for (i, value) in [b"a", b"b", b"c"].iter().enumerate() {
        assert_eq!(produce_code(raw, "diff-times", 0, batch_at(&[*value], t0 + 10 * i as i64)), 0);
    }
    let mut result = serde_json::Map::new();
    for (name, timestamp) in [
        ("earliest", -2),
        ("latest", -1),
        ("max_timestamp", -3),
        ("before_all", t0 - 1),
        ("between", t0 + 5),
        ("exact", t0 + 20),
        ("after_all", t0 + 1000),
    ] {
        let request = ListOffsetsRequest::default().with_replica_id(BrokerId(-1)).with_topics(vec![
            ListOffsetsTopic::default().with_name(topic("diff-times")).with_partitions(vec![
                ListOffsetsPartition::default().with_partition_index(0).with_timestamp(timestamp),
            ]),
        ]);
        let p = raw.send(&request, 7).topics[0].partitions[0].clone();
        // Kafka answers -1 for the timestamp of the earliest/latest offsets.
        let relative = if p.timestamp >= t0 { p.timestamp - t0 } else { p.timestamp };
        result.insert(name.into(), json!([p.error_code, p.offset, relative]));
    }
    let request = ListOffsetsRequest::default().with_replica_id(BrokerId(-1)).with_topics(vec![
        ListOffsetsTopic::default()
            .with_name(topic("diff-times"))
            .with_partitions(vec![ListOffsetsPartition::default().with_partition_index(4).with_timestamp(-1)]),
    ]);
    result.insert("unknown_partition".into(), json!(raw.send(&request, 7).topics[0].partitions[0].error_code));
    Value::Object(result)
}

/// A request header (v1: key, version, correlation id, client id) and no body.
fn bare_header(api_key: i16, version: i16) -> Vec<u8> {
    let mut body = BytesMut::new();
    body.put_i16(api_key);
    body.put_i16(version);
    body.put_i32(7);
    body.put_i16(4);
    body.put_slice(b"diff");
    body.to_vec()
}

fn wrong_api_versions(raw: &mut Raw) -> Value {
    // ApiVersions at a version the broker does not know: answered at v0 with
    // UNSUPPORTED_VERSION (KIP-511), so that the client can retry at a version both know.
    // Versions from 3 on have a flexible header: an empty tagged-field section follows.
    let mut header = bare_header(18, 127);
    header.push(0);
    raw.send_frame(&header);
    let answer = raw.read_frame().expect("an ApiVersions answer");
    let api_versions_error = i16::from_be_bytes(answer[4..6].try_into().unwrap());
    let closes = |key: i16, version: i16| {
        let mut fresh = Raw::connect(&raw.stream.peer_addr().unwrap().to_string());
        fresh.send_frame(&bare_header(key, version));
        fresh.is_closed_by_broker()
    };
    json!({
        "api_versions_v127": api_versions_error,
        "metadata_v99_closes": closes(3, 99),
        "unknown_api_key_closes": closes(999, 0),
        "produce_v0_closes": closes(0, 0),
    })
}

fn join_request(group: &str, member: &str) -> JoinGroupRequest {
    JoinGroupRequest::default()
        .with_group_id(GroupId(string(group)))
        .with_member_id(string(member))
        .with_session_timeout_ms(30_000)
        .with_rebalance_timeout_ms(30_000)
        .with_protocol_type(string("consumer"))
        .with_protocols(vec![
            JoinGroupRequestProtocol::default().with_name(string("range")).with_metadata(subscription()),
        ])
}

/// A consumer protocol subscription (v0) to `diff-groups`, as a Java consumer sends it.
fn subscription() -> Bytes {
    let mut out = BytesMut::new();
    out.put_i16(0);
    out.put_i32(1);
    out.put_i16(11);
    out.put_slice(b"diff-groups");
    out.put_i32(-1);
    out.freeze()
}

fn heartbeat(raw: &mut Raw, group: &str, member: &str, generation: i32) -> i16 {
    let request = HeartbeatRequest::default()
        .with_group_id(GroupId(string(group)))
        .with_member_id(string(member))
        .with_generation_id(generation);
    raw.send(&request, 4).error_code
}

fn commit(raw: &mut Raw, group: &str, member: &str, generation: i32) -> i16 {
    let request = OffsetCommitRequest::default()
        .with_group_id(GroupId(string(group)))
        .with_member_id(string(member))
        .with_generation_id_or_member_epoch(generation)
        .with_topics(vec![OffsetCommitRequestTopic::default().with_name(topic("diff-groups")).with_partitions(vec![
            OffsetCommitRequestPartition::default().with_partition_index(0).with_committed_offset(1),
        ])]);
    raw.send(&request, 8).topics[0].partitions[0].error_code
}

fn group_generation_and_member_errors(raw: &mut Raw) -> Value {
    assert_eq!(create(raw, "diff-groups", 1, 1, &[]), 0);
    let group = "diff-group";
    // Kafka creates its offsets topic on the first FindCoordinator, and answers group requests
    // with NOT_COORDINATOR (16) or COORDINATOR_LOAD_IN_PROGRESS (14) until it has loaded it. A
    // heartbeat probes without creating the group.
    for key in [group, "diff-no-group"] {
        let start = Instant::now();
        loop {
            let request = FindCoordinatorRequest::default().with_key_type(0).with_coordinator_keys(vec![string(key)]);
            let found = raw.send(&request, 4).coordinators[0].error_code == 0;
            let waiting = [
                ResponseError::CoordinatorLoadInProgress,
                ResponseError::CoordinatorNotAvailable,
                ResponseError::NotCoordinator,
            ]
            .map(|e| e.code());
            if found && !waiting.contains(&heartbeat(raw, key, "probe", 1)) {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(60), "no coordinator for {key}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let unknown_member_join = raw.send(&join_request(group, "no-such-member"), 9).error_code;
    let heartbeat_unknown_group = heartbeat(raw, "diff-no-group", "x", 1);
    let first = raw.send(&join_request(group, ""), 9);
    let member = first.member_id.to_string();
    let joined = raw.send(&join_request(group, &member), 9);
    let sync = SyncGroupRequest::default()
        .with_group_id(GroupId(string(group)))
        .with_generation_id(joined.generation_id)
        .with_member_id(string(&member))
        .with_protocol_type(Some(string("consumer")))
        .with_protocol_name(Some(string("range")));
    let sync_error = raw.send(&sync, 5).error_code;
    let generation = joined.generation_id;
    json!({
        "join_unknown_member": unknown_member_join,
        "heartbeat_unknown_group": heartbeat_unknown_group,
        "join_without_member_id": [first.error_code, !member.is_empty()],
        "join_with_member_id": [joined.error_code, joined.generation_id, joined.leader == joined.member_id],
        "sync": sync_error,
        "heartbeat_ok": heartbeat(raw, group, &member, generation),
        "heartbeat_wrong_generation": heartbeat(raw, group, &member, generation + 5),
        "heartbeat_unknown_member": heartbeat(raw, group, "stranger", generation),
        "commit_ok": commit(raw, group, &member, generation),
        "commit_wrong_generation": commit(raw, group, &member, generation + 5),
        "commit_unknown_member": commit(raw, group, "stranger", generation),
        "commit_simple_to_active_group": commit(raw, group, "", -1),
    })
}

fn delete_records_and_describe_configs_errors(raw: &mut Raw) -> Value {
    assert_eq!(create(raw, "diff-delete", 1, 1, &[]), 0);
    assert_eq!(produce_code(raw, "diff-delete", 0, batch(&[b"a", b"b", b"c"])), 0);
    let delete = |raw: &mut Raw, partition: i32, offset: i64| {
        let request = DeleteRecordsRequest::default().with_timeout_ms(10_000).with_topics(vec![
            DeleteRecordsTopic::default().with_name(topic("diff-delete")).with_partitions(vec![
                DeleteRecordsPartition::default().with_partition_index(partition).with_offset(offset),
            ]),
        ]);
        let p = raw.send(&request, 2).topics[0].partitions[0].clone();
        json!([p.error_code, p.low_watermark])
    };
    let describe = |raw: &mut Raw, name: &str| {
        let request = DescribeConfigsRequest::default().with_resources(vec![
            DescribeConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(string(name))
                .with_configuration_keys(Some(vec![string("retention.ms")])),
        ]);
        let result = raw.send(&request, 4).results[0].clone();
        json!([
            result.error_code,
            result.configs.iter().map(|c| c.value.as_ref().map(|v| v.to_string())).collect::<Vec<_>>()
        ])
    };
    json!({
        "delete_beyond_high_watermark": delete(raw, 0, 100),
        "delete_to_1": delete(raw, 0, 1),
        "delete_to_high_watermark": delete(raw, 0, -1),
        "delete_unknown_partition": delete(raw, 3, 1),
        "describe_unknown_topic": describe(raw, "diff-nope"),
        "describe_topic": describe(raw, "diff-delete"),
    })
}

/// OffsetForLeaderEpoch at `version` for partition `partition` of `name`: [error, epoch, end offset].
fn end_offset_for_epoch(
    raw: &mut Raw,
    version: i16,
    name: &str,
    partition: i32,
    current_leader_epoch: i32,
    leader_epoch: i32,
) -> Value {
    // A consumer's replica id from v3 on; before, the field does not exist (its default).
    let replica_id = if version >= 3 { BrokerId(-1) } else { OffsetForLeaderEpochRequest::default().replica_id };
    let request = OffsetForLeaderEpochRequest::default().with_replica_id(replica_id).with_topics(vec![
        OffsetForLeaderTopic::default().with_topic(topic(name)).with_partitions(vec![
            OffsetForLeaderPartition::default()
                .with_partition(partition)
                .with_current_leader_epoch(current_leader_epoch)
                .with_leader_epoch(leader_epoch),
        ]),
    ]);
    let p = raw.send(&request, version).topics[0].partitions[0].clone();
    json!([p.error_code, p.leader_epoch, p.end_offset])
}

/// Fetch v12 of one partition from `offset` with the epochs given: [error, high watermark,
/// records, diverging epoch, diverging end offset].
fn fetch_with_epochs(
    raw: &mut Raw,
    name: &str,
    offset: i64,
    current_leader_epoch: i32,
    last_fetched_epoch: i32,
) -> Value {
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    let request = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(0)
        .with_min_bytes(0)
        .with_max_bytes(1 << 20)
        .with_session_epoch(-1)
        .with_topics(vec![FetchTopic::default().with_topic(topic(name)).with_partitions(vec![
            FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(offset)
                .with_partition_max_bytes(1 << 20)
                .with_current_leader_epoch(current_leader_epoch)
                .with_last_fetched_epoch(last_fetched_epoch),
        ])]);
    let p = raw.send(&request, 12).responses[0].partitions[0].clone();
    let records = p.records.map_or(0, |r| if r.is_empty() { 0 } else { common::decode(&r).len() });
    json!([p.error_code, p.high_watermark, records, p.diverging_epoch.epoch, p.diverging_epoch.end_offset])
}

/// ListOffsets v7 of partition 0 of `name`: [error, offset, leader epoch].
fn list_offset_with_epoch(raw: &mut Raw, name: &str, timestamp: i64, current_leader_epoch: i32) -> Value {
    let request = ListOffsetsRequest::default().with_replica_id(BrokerId(-1)).with_topics(vec![
        ListOffsetsTopic::default().with_name(topic(name)).with_partitions(vec![
            ListOffsetsPartition::default()
                .with_partition_index(0)
                .with_timestamp(timestamp)
                .with_current_leader_epoch(current_leader_epoch),
        ]),
    ]);
    let p = raw.send(&request, 7).topics[0].partitions[0].clone();
    json!([p.error_code, p.offset, p.leader_epoch])
}

/// OffsetForLeaderEpoch, and the leader-epoch checks of Fetch and ListOffsets, on a new topic
/// (leader epoch 0) before and after records arrive.
fn leader_epochs(raw: &mut Raw) -> Value {
    assert_eq!(create(raw, "diff-epochs", 1, 1, &[]), 0);
    let empty = json!({
        "epoch_0": end_offset_for_epoch(raw, 4, "diff-epochs", 0, -1, 0),
        "earliest": list_offset_with_epoch(raw, "diff-epochs", -2, -1),
        "latest": list_offset_with_epoch(raw, "diff-epochs", -1, -1),
    });
    assert_eq!(produce_code(raw, "diff-epochs", 0, batch(&[b"a", b"b", b"c"])), 0);
    let t = now_ms() - 1000;
    let mut result = serde_json::Map::new();
    result.insert("empty".into(), empty);
    for version in [2, 3, 4] {
        result.insert(format!("v{version}_epoch_0"), end_offset_for_epoch(raw, version, "diff-epochs", 0, -1, 0));
    }
    for (name, current, asked) in [
        ("epoch_1", -1, 1),
        ("epoch_undefined", -1, -1),
        ("current_0", 0, 0),
        ("current_newer", 1, 0),
        ("current_much_newer", 7, 3),
    ] {
        result.insert(name.into(), end_offset_for_epoch(raw, 4, "diff-epochs", 0, current, asked));
    }
    result.insert("unknown_partition".into(), end_offset_for_epoch(raw, 4, "diff-epochs", 3, -1, 0));
    result.insert("unknown_topic".into(), end_offset_for_epoch(raw, 4, "diff-no-epochs", 0, -1, 0));
    for (name, offset, current, last_fetched) in [
        ("fetch_current_0", 0, 0, -1),
        ("fetch_current_newer", 0, 2, -1),
        ("fetch_last_epoch_0_at_end", 3, 0, 0),
        ("fetch_last_epoch_0_mid", 1, 0, 0),
        ("fetch_last_epoch_0_beyond_end", 5, 0, 0),
        ("fetch_last_epoch_unknown", 1, 0, 4),
    ] {
        result.insert(name.into(), fetch_with_epochs(raw, "diff-epochs", offset, current, last_fetched));
    }
    for (name, timestamp, current) in [
        ("list_earliest", -2, -1),
        ("list_latest_current_0", -1, 0),
        ("list_latest_current_newer", -1, 5),
        ("list_max_timestamp", -3, -1),
        ("list_by_time", t, 0),
    ] {
        result.insert(name.into(), list_offset_with_epoch(raw, "diff-epochs", timestamp, current));
    }
    Value::Object(result)
}

type Case = (&'static str, fn(&mut Raw) -> Value);

const CASES: &[Case] = &[
    ("metadata_unknown_and_illegal_names", metadata_unknown_and_illegal_names),
    ("create_topics_illegal_names", create_topics_illegal_names),
    ("create_topics_existing", create_topics_existing),
    ("create_topics_bad_partitions_and_replication", create_topics_bad_partitions_and_replication),
    ("create_topics_bad_configs", create_topics_bad_configs),
    ("produce_unknown_topic_and_partition", produce_unknown_topic_and_partition),
    ("produce_duplicated_partitions", produce_duplicated_partitions),
    ("produce_corrupt_and_oversized_batches", produce_corrupt_and_oversized_batches),
    ("produce_keyless_to_compacted_topic", produce_keyless_to_compacted_topic),
    ("fetch_offsets_around_the_log", fetch_offsets_around_the_log),
    ("list_offsets_by_timestamp", list_offsets_by_timestamp),
    ("wrong_api_versions", wrong_api_versions),
    ("group_generation_and_member_errors", group_generation_and_member_errors),
    ("delete_records_and_describe_configs_errors", delete_records_and_describe_configs_errors),
    ("leader_epochs", leader_epochs),
];

#[test]
fn sluice_answers_edge_cases_as_apache_kafka_does() {
    let _serial = serial();
    let kafka = ApacheKafka::start();
    let sluice = Broker::start(2, &[]);
    let mut report = String::new();
    let mut unexpected = Vec::new();
    for (name, case) in CASES {
        let theirs = case(&mut Raw::connect(&kafka.addr));
        let ours = case(&mut Raw::connect(sluice.addr()));
        let known = KNOWN_DIFFERENCES.iter().find(|(case, _)| case == name);
        let line = match (theirs == ours, known) {
            (true, None) => format!("same       {name}: {ours}\n"),
            (true, Some(_)) => {
                unexpected.push(format!("{name} is listed as a difference but now matches: {ours}"));
                format!("NOW SAME   {name}: {ours}\n")
            }
            (false, Some((_, reason))) => {
                format!("known      {name}: kafka {theirs}\n           sluice {ours} ({reason})\n")
            }
            (false, None) => {
                unexpected.push(format!("{name}:\n  kafka  {theirs}\n  sluice {ours}"));
                format!("DIFFERENT  {name}: kafka {theirs}\n           sluice {ours}\n")
            }
        };
        report.push_str(&line);
    }
    println!("{report}");
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/COMPATIBILITY.md")).unwrap();
    for (name, _) in KNOWN_DIFFERENCES {
        assert!(doc.contains(&format!("`{name}`")), "docs/COMPATIBILITY.md does not list {name}");
    }
    assert!(unexpected.is_empty(), "{}\n\nfull table:\n{report}", unexpected.join("\n"));
}

/// `sluice bench`, `sluice produce` and `sluice consume` work against Apache Kafka too, which
/// names topics by id in Produce and Fetch (v13, KIP-516) where Sluice still serves names:
/// `scripts/perf --peer kafka` runs the bench against it.
#[test]
fn sluice_clients_work_against_apache_kafka() {
    let _serial = serial();
    let kafka = ApacheKafka::start();
    let run = |args: &[&str], stdin: &str| {
        let (ok, out, err) = cli(&[args, &["--bootstrap", &kafka.addr]].concat(), stdin);
        assert!(ok, "sluice {args:?} against Apache Kafka failed:\n{out}\n{err}");
        out
    };
    let bench = ["--topic", "bench", "--partitions", "2", "--records", "2000", "--record-size", "100"];
    let out = run(&[&["bench", "produce"][..], &bench].concat(), "");
    assert!(out.contains("2000"), "{out}");
    run(&[&["bench", "consume"][..], &bench].concat(), "");

    // The bench creates a topic and waits until Kafka serves it; one record, then two lines.
    run(&["bench", "produce", "--topic", "lines", "--partitions", "1", "--records", "1"], "");
    run(&["produce", "lines"], "one\ntwo\n");
    let out = run(&["consume", "lines", "--partition", "0", "--offset", "1", "--max-messages", "2"], "");
    assert_eq!(out.lines().collect::<Vec<_>>(), ["one", "two"], "{out}");
}
