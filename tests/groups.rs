//! Consumer groups with real clients: rebalances as members come and crash (also during a
//! rebalance), broadcast and unicast, committed offsets across restarts and `kill -9`,
//! librdkafka's cooperative-sticky assignor and auto-commit, the group CLI, and bad group
//! requests.

mod common;

use std::time::{Duration, Instant};

use common::{Broker, Raw, batch, cli, driver};
use kafka_protocol::messages::offset_commit_request::{OffsetCommitRequestPartition, OffsetCommitRequestTopic};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

/// Short timeouts keep the tests quick; the protocol is the same.
const GROUP_SETTINGS: &[&str] =
    &["--set", "group.initial.rebalance.delay.ms=0", "--set", "group.min.session.timeout.ms=1000"];

fn string(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

// kafka-python 3.0.12 (the current release, used by every test here) can stall a consumer on
// its own side: the member completes JoinGroup and SyncGroup, then sends nothing more until its
// session expires, while poll() keeps returning empty. The cause is in its `join_group_async`
// (kafka/coordinator/base.py): when a poll's timeout expires while the join task is still in
// flight, the task is left running for the next poll to await, but the next poll only awaits
// it `while self.need_rejoin()`. A leader that rejoined because its metadata changed (it was
// assigned generation 1 before it had the topic's metadata) stops needing the rejoin as soon
// as it has computed the assignment (`_perform_assignment` updates the snapshot that
// `need_rejoin` compares), so the assignment the task receives is never applied and
// heartbeats stay disabled. Reproduced with the client's DEBUG log ("Received SyncGroup
// response", then no "Updated partition assignment"); CI met it in `broadcast` (the member
// expired 6 s after its group was stable). The driver counts a join in flight as needing the
// rejoin (`_await_join_in_flight`), and `commit` polls long enough to hold a whole join.
#[test]
fn members_joining_and_crashing_share_the_partitions() {
    let _one_at_a_time = common::serial();
    let broker = Broker::start(2, GROUP_SETTINGS);
    let summary = driver(&broker, "groups_kafka_python", &["rebalance"], Duration::from_secs(240));
    assert_eq!(summary["produced"], 900, "{summary}");
    // The crashed member's partitions moved within its session timeout (6 s) plus a margin.
    assert!(summary["moved_after_s"].as_f64().unwrap() < 16.0, "{summary}");
}

#[test]
fn groups_broadcast_and_members_unicast() {
    let _one_at_a_time = common::serial();
    let broker = Broker::start(2, GROUP_SETTINGS);
    let summary = driver(&broker, "groups_kafka_python", &["broadcast"], Duration::from_secs(120));
    assert_eq!(summary["group_shared"], 400);
    assert_eq!(summary["group_solo"], 400);
}

#[test]
fn committed_offsets_survive_restart_and_kill_9() {
    let _one_at_a_time = common::serial();
    let mut broker = Broker::start(2, GROUP_SETTINGS);
    let mut raw = Raw::connect(broker.addr());
    assert_eq!(raw.create_topic("resume", 1, &[]), 0);
    for i in 0..100 {
        assert_eq!(raw.produce("resume", 0, batch(&[format!("{i}").as_bytes()]), -1).0, 0);
    }
    drop(raw);
    let commit = |broker: &Broker, upto: &str| {
        driver(
            broker,
            "groups_kafka_python",
            &["commit", "--topic", "resume", "--group", "resumer", "--upto", upto],
            Duration::from_secs(120),
        )
    };
    let first = commit(&broker, "50");
    assert_eq!((first["first"].as_i64(), first["committed"].as_i64()), (Some(0), Some(50)));

    broker.terminate();
    broker.restart();
    let second = commit(&broker, "70");
    assert_eq!(second["first"], 50, "resumes right after the commit made before the restart");

    broker.kill9();
    broker.restart();
    let third = commit(&broker, "100");
    assert_eq!(third["first"], 70, "resumes right after the commit made before the crash");
}

#[test]
fn librdkafka_cooperative_sticky_and_auto_commit() {
    let _one_at_a_time = common::serial();
    let broker = Broker::start(2, GROUP_SETTINGS);
    let summary = driver(&broker, "groups_confluent", &[], Duration::from_secs(240));
    assert_eq!(summary["cooperative"]["records"], 2000, "{summary}");
    assert_eq!(summary["auto_commit"]["records"], 2000, "{summary}");
}

/// A member killed while the group rebalances is removed at its session timeout (6 s), so the
/// others' JoinGroup completes then, not at the rebalance timeout (300 s by librdkafka's
/// defaults); the driver gives up after 60 s.
#[test]
fn a_member_dead_during_a_rebalance_holds_it_only_for_its_session() {
    let _one_at_a_time = common::serial();
    let broker = Broker::start(2, GROUP_SETTINGS);
    let summary = driver(&broker, "groups_confluent", &["dead_member"], Duration::from_secs(120));
    let after = summary["dead_member"]["rebalanced_after_s"].as_f64().unwrap();
    assert!(after < 15.0, "{summary}");
}

#[test]
fn cli_shows_lag_and_resets_a_stopped_group() {
    let _one_at_a_time = common::serial();
    let broker = Broker::start(1, GROUP_SETTINGS);
    let bootstrap = broker.addr();
    let mut raw = Raw::connect(bootstrap);
    assert_eq!(raw.create_topic("lagging", 1, &[]), 0);
    for i in 0..100 {
        raw.produce("lagging", 0, batch(&[format!("{i}").as_bytes()]), -1);
    }
    driver(
        &broker,
        "groups_kafka_python",
        &["commit", "--topic", "lagging", "--group", "slow", "--upto", "40"],
        Duration::from_secs(120),
    );

    let (ok, out, err) = cli(&["group", "list", "--bootstrap", bootstrap], "");
    assert!(ok, "{err}");
    assert!(out.lines().any(|l| l == "slow\tEmpty"), "{out}");
    let row = |out: &str| -> Vec<String> {
        let line = out.lines().find(|l| l.starts_with("lagging\t0\t")).unwrap_or_else(|| panic!("no row:\n{out}"));
        line.split('\t').map(str::to_string).collect()
    };
    let (ok, out, err) = cli(&["group", "describe", "slow", "--bootstrap", bootstrap], "");
    assert!(ok, "{err}");
    assert!(out.contains("State: Empty"), "{out}");
    assert_eq!(row(&out)[2..5], ["40", "100", "60"], "current offset, log end, lag");

    for (flags, expected) in [
        (vec!["--to-earliest"], "0"),
        (vec!["--to-latest"], "100"),
        (vec!["--to-offset", "25"], "25"),
        (vec!["--to-datetime", "2000-01-01T00:00:00Z"], "0"),
    ] {
        let mut args = vec!["group", "reset-offsets", "slow", "--topic", "lagging", "--bootstrap", bootstrap];
        args.extend(flags.iter());
        let (ok, _, err) = cli(&args, "");
        assert!(ok, "{flags:?}: {err}");
        let (_, out, _) = cli(&["group", "describe", "slow", "--bootstrap", bootstrap], "");
        assert_eq!(row(&out)[2], expected, "{flags:?}");
    }

    // A group with an active member refuses resets.
    let mut member = Raw::connect(bootstrap);
    let (member_id, _) = join(&mut member, "busy");
    let (ok, _, err) =
        cli(&["group", "reset-offsets", "busy", "--topic", "lagging", "--to-earliest", "--bootstrap", bootstrap], "");
    assert!(!ok && err.contains("active members"), "{err}");
    let (ok, out, _) = cli(&["group", "describe", "busy", "--bootstrap", bootstrap], "");
    assert!(ok && out.contains("Members: 1") && out.contains(&member_id), "{out}");

    let (ok, _, err) = cli(&["group", "delete", "slow", "--bootstrap", bootstrap], "");
    assert!(ok, "{err}");
    let (_, out, _) = cli(&["group", "list", "--bootstrap", bootstrap], "");
    assert!(!out.contains("slow"), "{out}");
}

/// Consumer-protocol metadata subscribing to `topics` (version prefix, then the v0 body).
fn subscription(topics: &[&str]) -> bytes::Bytes {
    use bytes::BufMut;
    use kafka_protocol::protocol::Encodable;
    let mut buf = bytes::BytesMut::new();
    buf.put_i16(0);
    ConsumerProtocolSubscription::default()
        .with_topics(topics.iter().map(|t| string(t)).collect())
        .encode(&mut buf, 0)
        .unwrap();
    buf.freeze()
}

/// Joins `group` as a single raw member and syncs; returns (member id, generation).
fn join(raw: &mut Raw, group: &str) -> (String, i32) {
    let mut request = JoinGroupRequest::default()
        .with_group_id(GroupId(string(group)))
        .with_session_timeout_ms(30_000)
        .with_rebalance_timeout_ms(30_000)
        .with_protocol_type(string("consumer"))
        .with_protocols(vec![
            join_group_request::JoinGroupRequestProtocol::default()
                .with_name(string("range"))
                .with_metadata(subscription(&["t"])),
        ]);
    let first = raw.send(&request, 9);
    assert_eq!(first.error_code, 79, "MEMBER_ID_REQUIRED");
    request = request.with_member_id(first.member_id.clone());
    let joined = raw.send(&request, 9);
    assert_eq!(joined.error_code, 0);
    let sync = SyncGroupRequest::default()
        .with_group_id(GroupId(string(group)))
        .with_generation_id(joined.generation_id)
        .with_member_id(joined.member_id.clone());
    assert_eq!(raw.send(&sync, 5).error_code, 0);
    (joined.member_id.to_string(), joined.generation_id)
}

fn commit(
    raw: &mut Raw,
    group: &str,
    member: &str,
    generation: i32,
    topic: &str,
    partition: i32,
    metadata: &str,
) -> i16 {
    commit_at(raw, group, member, generation, topic, partition, metadata, 5)
}

#[allow(clippy::too_many_arguments)]
fn commit_at(
    raw: &mut Raw,
    group: &str,
    member: &str,
    generation: i32,
    topic: &str,
    partition: i32,
    metadata: &str,
    offset: i64,
) -> i16 {
    let request = OffsetCommitRequest::default()
        .with_group_id(GroupId(string(group)))
        .with_generation_id_or_member_epoch(generation)
        .with_member_id(string(member))
        .with_topics(vec![OffsetCommitRequestTopic::default().with_name(TopicName(string(topic))).with_partitions(
            vec![
            OffsetCommitRequestPartition::default()
                .with_partition_index(partition)
                .with_committed_offset(offset)
                .with_committed_metadata(Some(string(metadata))),
        ],
        )]);
    raw.send(&request, 8).topics[0].partitions[0].error_code
}

fn committed(raw: &mut Raw, group: &str, topic: &str) -> i64 {
    let request = OffsetFetchRequest::default().with_group_id(GroupId(string(group))).with_topics(Some(vec![
        OffsetFetchRequestTopic::default().with_name(TopicName(string(topic))).with_partition_indexes(vec![0]),
    ]));
    raw.send(&request, 7).topics[0].partitions[0].committed_offset
}

#[test]
fn bad_group_requests_get_error_codes() {
    let broker = Broker::start(2, GROUP_SETTINGS);
    let mut raw = Raw::connect(broker.addr());
    assert_eq!(raw.create_topic("t", 1, &[]), 0);
    let (member, generation) = join(&mut raw, "g");

    assert_eq!(commit(&mut raw, "g", &member, generation, "missing", 0, ""), 3, "UNKNOWN_TOPIC_OR_PARTITION");
    assert_eq!(commit(&mut raw, "g", &member, generation, "t", 9, ""), 3, "UNKNOWN_TOPIC_OR_PARTITION");
    assert_eq!(commit(&mut raw, "g", &member, generation + 1, "t", 0, ""), 22, "ILLEGAL_GENERATION");
    assert_eq!(commit(&mut raw, "g", "stranger", generation, "t", 0, ""), 25, "UNKNOWN_MEMBER_ID");
    assert_eq!(commit(&mut raw, "g", "", -1, "t", 0, ""), 25, "a group with members refuses commits from outside");
    assert_eq!(commit(&mut raw, "g", &member, generation, "t", 0, &"m".repeat(5000)), 12, "OFFSET_METADATA_TOO_LARGE");
    let heartbeat = |raw: &mut Raw, member: &str, generation: i32| {
        let request = HeartbeatRequest::default()
            .with_group_id(GroupId(string("g")))
            .with_generation_id(generation)
            .with_member_id(string(member));
        raw.send(&request, 4).error_code
    };
    assert_eq!(heartbeat(&mut raw, &member, generation - 1), 22);
    assert_eq!(heartbeat(&mut raw, "stranger", generation), 25);
    let empty = JoinGroupRequest::default().with_group_id(GroupId(string(""))).with_protocol_type(string("consumer"));
    assert_eq!(raw.send(&empty, 9).error_code, 24, "INVALID_GROUP_ID");

    // Nothing bad was committed; good commits work, in this group and in another one.
    assert_eq!(committed(&mut raw, "g", "t"), -1);
    assert_eq!(commit(&mut raw, "g", &member, generation, "t", 0, "ok"), 0);
    assert_eq!(committed(&mut raw, "g", "t"), 5);
    assert_eq!(commit(&mut raw, "other", "", -1, "t", 0, ""), 0);
    assert_eq!(committed(&mut raw, "other", "t"), 5);
    assert_eq!(heartbeat(&mut raw, &member, generation), 0);
}

#[test]
fn offsets_of_a_group_that_stays_empty_expire() {
    let mut settings = GROUP_SETTINGS.to_vec();
    settings.extend(["--set", "offsets.retention.minutes=0", "--set", "offsets.retention.check.interval.ms=100"]);
    let broker = Broker::start(1, &settings);
    let mut raw = Raw::connect(broker.addr());
    assert_eq!(raw.create_topic("t", 1, &[]), 0);
    assert_eq!(commit(&mut raw, "fleeting", "", -1, "t", 0, ""), 0);
    let deadline = Instant::now() + Duration::from_secs(20);
    while committed(&mut raw, "fleeting", "t") != -1 {
        assert!(Instant::now() < deadline, "offsets never expired");
        std::thread::sleep(Duration::from_millis(50));
    }
    // A group with a member keeps its offsets however old they are.
    let (member, generation) = join(&mut raw, "lasting");
    assert_eq!(commit(&mut raw, "lasting", &member, generation, "t", 0, ""), 0);
    let heartbeat = HeartbeatRequest::default()
        .with_group_id(GroupId(string("lasting")))
        .with_generation_id(generation)
        .with_member_id(string(&member));
    for _ in 0..5 {
        assert_eq!(raw.send(&heartbeat, 4).error_code, 0);
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(committed(&mut raw, "lasting", "t"), 5);
}

#[test]
fn the_offsets_topic_is_compacted() {
    let mut settings = GROUP_SETTINGS.to_vec();
    settings.extend(["--set", "offsets.topic.num.partitions=1", "--set", "offsets.topic.segment.bytes=2048"]);
    let mut broker = Broker::start(1, &settings);
    let mut raw = Raw::connect(broker.addr());
    assert_eq!(raw.create_topic("t", 2, &[]), 0);
    for i in 0..400 {
        for partition in 0..2 {
            assert_eq!(commit_at(&mut raw, "compacted", "", -1, "t", partition, "", i), 0);
        }
    }
    let offsets_dir = broker.data_dir().join("__consumer_offsets-0");
    let log_bytes = || -> u64 {
        std::fs::read_dir(&offsets_dir)
            .unwrap()
            .map(|e| e.unwrap())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
            .map(|e| e.metadata().unwrap().len())
            .sum()
    };
    // 800 commits of about 100 bytes each; compacted, only the open segment's worth remains.
    let deadline = Instant::now() + Duration::from_secs(20);
    while log_bytes() > 3 * 2048 {
        assert!(Instant::now() < deadline, "the offsets topic holds {} bytes", log_bytes());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(committed(&mut raw, "compacted", "t"), 399);
    drop(raw);
    broker.kill9();
    broker.restart();
    let mut raw = Raw::connect(broker.addr());
    assert_eq!(committed(&mut raw, "compacted", "t"), 399, "the compacted log still knows the latest commit");
}

#[test]
fn group_administration_requests() {
    let broker = Broker::start(2, GROUP_SETTINGS);
    let mut raw = Raw::connect(broker.addr());
    assert_eq!(raw.create_topic("t", 1, &[]), 0);

    // FindCoordinator names this broker, one key at a time and in batches.
    let single = raw.send(&FindCoordinatorRequest::default().with_key(string("g")), 3);
    assert_eq!((single.error_code, single.port), (0, broker.addr().rsplit(':').next().unwrap().parse().unwrap()));
    let batched = raw.send(&FindCoordinatorRequest::default().with_coordinator_keys(vec![string("g"), string("h")]), 4);
    assert!(batched.coordinators.iter().all(|c| c.error_code == 0 && c.node_id.0 == 0));
    let transactional = raw.send(&FindCoordinatorRequest::default().with_key(string("tx")).with_key_type(1), 3);
    assert_eq!(transactional.error_code, 15, "COORDINATOR_NOT_AVAILABLE until transactions exist");

    let (member, generation) = join(&mut raw, "active");
    assert_eq!(commit(&mut raw, "active", &member, generation, "t", 0, ""), 0);
    assert_eq!(commit(&mut raw, "idle", "", -1, "t", 0, ""), 0);

    let listed = raw.send(&ListGroupsRequest::default(), 4);
    let mut groups: Vec<(String, String)> =
        listed.groups.iter().map(|g| (g.group_id.0.to_string(), g.group_state.to_string())).collect();
    groups.sort();
    assert_eq!(groups, [("active".into(), "Stable".into()), ("idle".into(), "Empty".into())]);
    let stable_only = raw.send(&ListGroupsRequest::default().with_states_filter(vec![string("Stable")]), 4);
    assert_eq!(stable_only.groups.len(), 1);

    let described = raw.send(
        &DescribeGroupsRequest::default().with_groups(vec![
            GroupId(string("active")),
            GroupId(string("idle")),
            GroupId(string("nobody")),
        ]),
        5,
    );
    let states: Vec<&str> = described.groups.iter().map(|g| g.group_state.as_str()).collect();
    assert_eq!(states, ["Stable", "Empty", "Dead"]);
    assert_eq!(described.groups[0].members.len(), 1);
    assert_eq!(described.groups[0].members[0].member_id.as_str(), member);
    assert_eq!(described.groups[0].protocol_data.as_str(), "range");

    // An active group's offsets for a topic it subscribes to cannot be deleted; an idle one's can.
    let offset_delete = |raw: &mut Raw, group: &str| {
        use kafka_protocol::messages::offset_delete_request::{OffsetDeleteRequestPartition, OffsetDeleteRequestTopic};
        let request = OffsetDeleteRequest::default().with_group_id(GroupId(string(group))).with_topics(vec![
            OffsetDeleteRequestTopic::default()
                .with_name(TopicName(string("t")))
                .with_partitions(vec![OffsetDeleteRequestPartition::default().with_partition_index(0)]),
        ]);
        raw.send(&request, 0)
    };
    let subscribed = offset_delete(&mut raw, "active");
    assert_eq!(subscribed.topics[0].partitions[0].error_code, 86, "GROUP_SUBSCRIBED_TO_TOPIC");
    assert_eq!(committed(&mut raw, "active", "t"), 5);
    assert_eq!(commit(&mut raw, "spare", "", -1, "t", 0, ""), 0);
    let unsubscribed = offset_delete(&mut raw, "spare");
    assert_eq!((unsubscribed.error_code, unsubscribed.topics[0].partitions[0].error_code), (0, 0));
    assert_eq!(committed(&mut raw, "spare", "t"), -1);
    assert_eq!(offset_delete(&mut raw, "nobody").error_code, 69, "GROUP_ID_NOT_FOUND");

    let delete = |raw: &mut Raw, group: &str| {
        raw.send(&DeleteGroupsRequest::default().with_groups_names(vec![GroupId(string(group))]), 2).results[0]
            .error_code
    };
    assert_eq!(delete(&mut raw, "active"), 68, "NON_EMPTY_GROUP");
    assert_eq!(delete(&mut raw, "nobody"), 69, "GROUP_ID_NOT_FOUND");
    assert_eq!(delete(&mut raw, "idle"), 0);
    let described = raw.send(&DescribeGroupsRequest::default().with_groups(vec![GroupId(string("idle"))]), 5);
    assert_eq!(described.groups[0].group_state.as_str(), "Dead", "deleted");

    // The member leaves; the group is then empty and can be deleted.
    let leave = LeaveGroupRequest::default()
        .with_group_id(GroupId(string("active")))
        .with_members(vec![leave_group_request::MemberIdentity::default().with_member_id(string(&member))]);
    let left = raw.send(&leave, 5);
    assert_eq!((left.error_code, left.members[0].error_code), (0, 0));
    assert_eq!(delete(&mut raw, "active"), 0);
}
