//! Replication between brokers: followers fetch from the leader, acks=all waits for the
//! in-sync replicas, consumers never read above the high watermark, `min.insync.replicas`
//! refuses acks=all when too few replicas are in sync, and leadership moves to a follower
//! that has everything acknowledged: under the Jepsen workload too, with the leader killed
//! once, and five times in a row (issue 11), after which every replica holds the same log.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::Raw;
use common::cluster::{Cluster, FAST_SESSIONS, REQUEST_TIMED_OUT};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{MetadataRequest, ProduceRequest, TopicName};
use kafka_protocol::protocol::StrBytes;

const NOT_LEADER_OR_FOLLOWER: i16 = 6;
const LEADER_NOT_AVAILABLE: i16 = 5;
const NOT_ENOUGH_REPLICAS: i16 = 19;
const TOPIC: &str = "replicated";

fn name(topic: &str) -> TopicName {
    TopicName(StrBytes::from_string(topic.to_string()))
}

/// Broker sessions far longer than a test: a broker stopped or paused stays unfenced, and so
/// in the ISR (fencing takes a broker out of every ISR).
const LONG_SESSIONS: [&str; 2] = ["--set", "broker.session.timeout.ms=120000"];

/// Three brokers on loopback with the `sessions` flags, each listing all three; `TOPIC`
/// created with one partition on all three, `min.insync.replicas=2`.
fn three_brokers_and_a_topic(sessions: &[&str]) -> Cluster {
    let cluster = Cluster::start(3, 1, sessions);
    cluster.wait_for_every_broker(Duration::from_secs(30));
    cluster.create_topic_everywhere(TOPIC, 1, 3, &[("min.insync.replicas", "2")]);
    // Nodes name the leader once they applied the topic, maybe before it opened the partition.
    common::wait_until(Duration::from_secs(10), "the leader has the partition open", || {
        cluster.connect(leader(&cluster, 0)).fetch(TOPIC, 0, 0, 0).0 == 0
    });
    cluster
}

/// The node (index) node `via` names as the partition's leader, once it names one.
fn leader(cluster: &Cluster, via: usize) -> usize {
    let mut leader = None;
    common::wait_until(Duration::from_secs(20), "a leader is named", || {
        let request = MetadataRequest::default()
            .with_topics(Some(vec![MetadataRequestTopic::default().with_name(Some(name(TOPIC)))]))
            .with_allow_auto_topic_creation(false);
        let response = cluster.connect(via).send(&request, 12);
        let id = response.topics[0].partitions.first().map_or(-1, |p| p.leader_id.0);
        leader = usize::try_from(id - 1).ok().filter(|&i| i < cluster.len());
        leader.is_some()
    });
    leader.expect("found")
}

/// Produce v9 of one batch with `acks` and a timeout: (error code, base offset).
fn produce(raw: &mut Raw, records: Bytes, acks: i16, timeout_ms: i32) -> (i16, i64) {
    let data = PartitionProduceData::default().with_index(0).with_records(Some(records));
    let topic = TopicProduceData::default().with_name(name(TOPIC)).with_partition_data(vec![data]);
    let request = ProduceRequest::default().with_acks(acks).with_timeout_ms(timeout_ms).with_topic_data(vec![topic]);
    let response = raw.send(&request, 9);
    let p = &response.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

/// Produces one batch with `acks` through whichever node leads now, retrying while leadership
/// moves (NOT_LEADER_OR_FOLLOWER, LEADER_NOT_AVAILABLE) up to a deadline: (error, offset).
fn produce_to_leader(cluster: &Cluster, among: &[usize], value: &[u8], acks: i16) -> (i16, i64) {
    let start = Instant::now();
    loop {
        let via = among[0];
        let leader = leader(cluster, via);
        let outcome = produce(&mut cluster.connect(leader), common::batch(&[value]), acks, 5_000);
        let moving = matches!(outcome.0, NOT_LEADER_OR_FOLLOWER | LEADER_NOT_AVAILABLE);
        if !moving || start.elapsed() > Duration::from_secs(20) {
            return outcome;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The first segment of `topic`-`partition` on node `i`, as its files hold it.
fn segment(cluster: &Cluster, i: usize, topic: &str, partition: i32) -> Vec<u8> {
    let path = cluster.node(i).data_dir().join(format!("{topic}-{partition}")).join("00000000000000000000.log");
    std::fs::read(&path).unwrap_or_default()
}

#[test]
fn acks_all_records_are_on_every_replica_and_a_killed_follower_catches_up() {
    let _serial = common::serial();
    let mut cluster = three_brokers_and_a_topic(&LONG_SESSIONS);
    let leader = leader(&cluster, 0);
    let mut raw = cluster.connect(leader);
    for i in 0..20 {
        let value = format!("v{i}");
        assert_eq!(produce(&mut raw, common::batch(&[value.as_bytes()]), -1, 10_000), (0, i));
    }
    // Acknowledged with acks=all: every in-sync replica has it already, byte for byte (offsets
    // and leader epochs as the leader stamped them).
    let written = segment(&cluster, leader, TOPIC, 0);
    assert!(!written.is_empty());
    for i in 0..3 {
        assert_eq!(segment(&cluster, i, TOPIC, 0), written, "node {} differs from the leader", i + 1);
    }

    // A follower killed stays in the ISR while it is not fenced: acks=all waits for it and
    // times out, as Kafka's DelayedProduce; acks=1 is answered once written.
    let follower = (leader + 1) % 3;
    cluster.node_mut(follower).kill9();
    let started = Instant::now();
    assert_eq!(produce(&mut raw, common::batch(&[b"late"]), -1, 1_000).0, REQUEST_TIMED_OUT);
    assert!(started.elapsed() >= Duration::from_millis(900), "answered after {:?}", started.elapsed());
    assert_eq!(produce(&mut raw, common::batch(&[b"one"]), 1, 10_000), (0, 21));
    // Consumers see nothing the killed follower lacks.
    let (error, high_watermark, _) = raw.fetch(TOPIC, 0, 20, 0);
    assert_eq!((error, high_watermark), (0, 20));

    // Restarted, it registers anew (and so leaves the ISR, as in KRaft), fetches what it
    // missed, and the high watermark moves past what it held back.
    cluster.node_mut(follower).restart();
    common::wait_until(Duration::from_secs(30), "the restarted follower caught up", || {
        segment(&cluster, follower, TOPIC, 0) == segment(&cluster, leader, TOPIC, 0)
    });
    common::wait_until(Duration::from_secs(10), "the high watermark reaches the log end", || {
        raw.fetch(TOPIC, 0, 0, 0).1 == 22
    });
    let values: Vec<Vec<u8>> = raw.fetch_all(TOPIC, 0).into_iter().map(|(_, v)| v).collect();
    assert_eq!(values.len(), 22);
    assert_eq!((values[20].as_slice(), values[21].as_slice()), (b"late".as_slice(), b"one".as_slice()));
}

#[test]
fn consumers_never_read_above_the_high_watermark() {
    let _serial = common::serial();
    let cluster = three_brokers_and_a_topic(&LONG_SESSIONS);
    let leader = leader(&cluster, 0);
    let mut raw = cluster.connect(leader);
    assert_eq!(produce(&mut raw, common::batch(&[b"first"]), -1, 10_000), (0, 0));

    // A follower that stops fetching holds the high watermark back.
    let follower = (leader + 2) % 3;
    cluster.node(follower).pause();
    assert_eq!(produce(&mut raw, common::batch(&[b"second"]), 1, 10_000), (0, 1));
    let (error, high_watermark, records) = raw.fetch(TOPIC, 0, 1, 0);
    assert_eq!((error, high_watermark, records.len()), (0, 1, 0), "nothing above the high watermark");
    assert_eq!(raw.fetch_all(TOPIC, 0).len(), 1);
    assert_eq!(list_latest(&mut raw), 1, "ListOffsets LATEST is the high watermark");

    cluster.node(follower).resume();
    // A consumer parked at the high watermark is woken once it moves.
    let (error, high_watermark, records) = raw.fetch(TOPIC, 0, 1, 10_000);
    assert_eq!((error, high_watermark), (0, 2));
    assert!(!records.is_empty());
    assert_eq!(list_latest(&mut raw), 2);
}

/// IncrementalAlterConfigs of the topic's `min.insync.replicas`: the error code.
fn set_min_insync_replicas(raw: &mut Raw, value: &str) -> i16 {
    use kafka_protocol::messages::IncrementalAlterConfigsRequest;
    use kafka_protocol::messages::incremental_alter_configs_request::{AlterConfigsResource, AlterableConfig};
    let config = AlterableConfig::default()
        .with_name(StrBytes::from_static_str("min.insync.replicas"))
        .with_config_operation(0)
        .with_value(Some(StrBytes::from_string(value.to_string())));
    let resource = AlterConfigsResource::default()
        .with_resource_type(2)
        .with_resource_name(StrBytes::from_static_str(TOPIC))
        .with_configs(vec![config]);
    let request = IncrementalAlterConfigsRequest::default().with_resources(vec![resource]);
    raw.send(&request, 1).responses[0].error_code
}

/// ListOffsets v4 LATEST of partition 0.
fn list_latest(raw: &mut Raw) -> i64 {
    use kafka_protocol::messages::ListOffsetsRequest;
    use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
    let partition = ListOffsetsPartition::default().with_partition_index(0).with_timestamp(-1);
    let topic = ListOffsetsTopic::default().with_name(name(TOPIC)).with_partitions(vec![partition]);
    let request =
        ListOffsetsRequest::default().with_replica_id(kafka_protocol::messages::BrokerId(-1)).with_topics(vec![topic]);
    let response = raw.send(&request, 4);
    let p = &response.topics[0].partitions[0];
    assert_eq!(p.error_code, 0);
    p.offset
}

#[test]
fn leadership_moves_to_a_follower_with_everything_acknowledged_and_too_small_an_isr_refuses_acks_all() {
    let _serial = common::serial();
    let mut cluster = three_brokers_and_a_topic(&FAST_SESSIONS);
    let first = leader(&cluster, 0);
    for i in 0..10 {
        let value = format!("a{i}");
        assert_eq!(produce_to_leader(&cluster, &[first], value.as_bytes(), -1), (0, i));
    }

    // The leader dies: fenced, it leaves the ISR, and a follower in it takes over with
    // everything acknowledged; two in sync still make up min.insync.replicas=2.
    cluster.node_mut(first).kill9();
    let rest: Vec<usize> = (0..3).filter(|&i| i != first).collect();
    let second = {
        let mut second = first;
        common::wait_until(Duration::from_secs(20), "another node leads", || {
            second = leader(&cluster, rest[0]);
            second != first
        });
        second
    };
    for i in 10..15 {
        let value = format!("b{i}");
        assert_eq!(produce_to_leader(&cluster, &rest, value.as_bytes(), -1), (0, i));
    }

    // Three replicas required, two in sync: acks=all is refused before anything is written;
    // acks=1 is still taken.
    assert_eq!(set_min_insync_replicas(&mut cluster.connect(second), "3"), 0);
    common::wait_until(Duration::from_secs(10), "acks=all is refused", || {
        produce_to_leader(&cluster, &rest, b"refused", -1).0 == NOT_ENOUGH_REPLICAS
    });
    assert_eq!(produce_to_leader(&cluster, &rest, b"c15", 1), (0, 15));
    // acks=1 was answered before the other in-sync replica had it: consumers see it once it has.
    common::wait_until(Duration::from_secs(10), "the high watermark covers it", || {
        cluster.connect(second).fetch(TOPIC, 0, 0, 0).1 == 16
    });

    let values: Vec<String> =
        cluster.connect(second).fetch_all(TOPIC, 0).into_iter().map(|(_, v)| String::from_utf8(v).unwrap()).collect();
    let expected: Vec<String> =
        (0..10).map(|i| format!("a{i}")).chain((10..15).map(|i| format!("b{i}"))).chain(["c15".into()]).collect();
    assert_eq!(values, expected, "nothing acknowledged was lost, nothing refused was written");
}

/// The Jepsen workload (an idempotent acks=all producer, consumers keeping every read) over
/// three partitions on all three brokers. The follower that an election would pick for one
/// leader's partition is paused (SIGSTOP) for a second, too short to be fenced, so that it
/// stays in the ISR while it falls behind; the leader is killed with SIGKILL meanwhile and the
/// follower resumed. The controller fences the leader and elects that follower: it has
/// everything acknowledged, since acks=all waited for it (the third replica, ahead of it, cuts
/// what it had beyond). The producer goes on through the new leaders; the killed broker
/// restarts as a follower. Nothing acknowledged is lost, duplicated or reordered.
#[test]
fn a_leader_killed_under_the_workload_loses_nothing_acknowledged() {
    let _serial = common::serial();
    let mut cluster = Cluster::start(3, 1, &FAST_SESSIONS);
    cluster.wait_for_every_broker(Duration::from_secs(30));
    cluster.create_topic_everywhere("jepsen", 3, 3, &[("min.insync.replicas", "2")]);
    let mut workload = common::jepsen::Workload::start(&cluster.bootstrap(), "jepsen");
    workload.produce("p", 500);
    common::wait_until(Duration::from_secs(60), "500 acknowledged", || workload.acked() >= 500);

    // A broker that leads a partition, not the active controller (whose loss would also hold
    // the fencing up for an election), and the replica an election would pick after it.
    let all = [0, 1, 2];
    let controller = cluster.quorum_leader(&all, Duration::from_secs(10));
    let killed = (controller + 1) % 3;
    let request = MetadataRequest::default()
        .with_topics(Some(vec![MetadataRequestTopic::default().with_name(Some(name("jepsen")))]))
        .with_allow_auto_topic_creation(false);
    let response = cluster.connect(controller).send(&request, 12);
    let led = response.topics[0].partitions.iter().find(|p| p.leader_id.0 == killed as i32 + 1).expect("it leads one");
    let next = led.replica_nodes.iter().map(|id| id.0).find(|&id| id != killed as i32 + 1).expect("three replicas");
    let lagging = usize::try_from(next - 1).unwrap();

    cluster.node(lagging).pause();
    // The fault's length, not a wait for anything: records keep coming meanwhile.
    std::thread::sleep(Duration::from_secs(1));
    cluster.node_mut(killed).kill9();
    cluster.node(lagging).resume();
    let rest: Vec<i32> = all.iter().filter(|&&i| i != killed).map(|&i| i as i32 + 1).collect();
    common::wait_until(Duration::from_secs(20), "the killed broker is fenced", || {
        cluster.brokers_seen_by(controller) == rest
    });
    let before = workload.acked();
    common::wait_until(Duration::from_secs(60), "500 more acknowledged through the new leaders", || {
        workload.acked() >= before + 500
    });
    cluster.node_mut(killed).restart();
    let restarted = workload.acked();
    common::wait_until(Duration::from_secs(60), "500 more once it is back", || workload.acked() >= restarted + 500);
    let acked = workload.acked();
    let check = workload
        .finish(|| (0..3).map(|i| format!("node {} stderr:\n{}", i + 1, cluster.node(i).stderr_text())).collect());
    common::jepsen::assert_clean(&check, acked);
    assert_eq!(check["acked"], check["produced"], "{check:#}");
}

/// Issue 11's kill -9 test: the Jepsen workload (an idempotent acks=all producer at a steady
/// rate, a consumer keeping every read) over three partitions, each on all three brokers,
/// `min.insync.replicas=2`. Five times in a row the current leader of partition 0 is killed
/// with SIGKILL; once the producer has had more acknowledged there through its new leader,
/// the killed broker restarts, and the next round waits until it is back in every ISR, so
/// that two replicas in sync hold every acknowledged record whichever one is killed next. The
/// killed broker may lead or follow the other partitions: it comes back to each in either role
/// (a broker killed having just been made leader, before its first append, keeps that epoch
/// at its log end: it must still catch up). Nothing acknowledged is lost, duplicated or
/// reordered, no offset ever returns two values, every value produced is acknowledged in the
/// end and none failed; and each partition's replicas end up with the same log, byte for byte
/// (a returning leader cut the tail it wrote and no one else had).
#[test]
fn the_leader_killed_five_times_in_a_row_loses_nothing_acknowledged() {
    let _serial = common::serial();
    let started = Instant::now();
    // The whole run's bound: a round takes a few seconds (the session timeout of
    // FAST_SESSIONS fences the killed leader, then a restart and a catch-up).
    let until = started + Duration::from_secs(120);
    let left = || until.saturating_duration_since(Instant::now());
    let mut cluster = Cluster::start(3, 1, &FAST_SESSIONS);
    cluster.wait_for_every_broker(left());
    cluster.create_topic_everywhere("killed", 3, 3, &[("min.insync.replicas", "2")]);
    let all_in_sync =
        |cluster: &Cluster, via: usize| (0..3).all(|p| cluster.leader_and_isr_seen_by(via, "killed", p).1 == [1, 2, 3]);
    let mut workload = common::jepsen::Workload::start(&cluster.bootstrap(), "killed");
    workload.produce("p", 500);
    common::wait_until(left(), "500 acknowledged", || workload.acked() >= 500);
    // A node alive now, asked for the partitions' state.
    let mut via = 0;
    let mut killed_leaders = Vec::new();
    for _ in 0..5 {
        let mut leader = -1;
        common::wait_until(left(), "a leader of partition 0, all three replicas in sync", || {
            leader = cluster.leader_and_isr_seen_by(via, "killed", 0).0;
            leader > 0 && all_in_sync(&cluster, via)
        });
        let killed = usize::try_from(leader - 1).expect("a node id");
        killed_leaders.push(leader);
        let before = workload.acked_on(0);
        cluster.node_mut(killed).kill9();
        workload.fault_now(0);
        via = (killed + 1) % 3;
        common::wait_until(left(), "another broker leads partition 0", || {
            ![-1, leader].contains(&cluster.leader_and_isr_seen_by(via, "killed", 0).0)
        });
        // The counts the producer reports lag its acknowledgements by up to 100 ms (about 17
        // values of partition 0 at 500 a second over three), and the dead leader acknowledges
        // nothing more: 100 more come through the new one.
        common::wait_until(left(), "100 more acknowledged on partition 0 through its new leader", || {
            workload.acked_on(0) >= before + 100
        });
        cluster.node_mut(killed).restart();
        common::wait_until(left(), "the restarted broker is back in every ISR", || all_in_sync(&cluster, via));
    }
    let last = workload.acked();
    common::wait_until(left(), "500 more acknowledged after the last round", || workload.acked() >= last + 500);
    let acked = workload.acked();
    let check = workload
        .finish(|| (0..3).map(|i| format!("node {} stderr:\n{}", i + 1, cluster.node(i).stderr_text())).collect());
    println!(
        "leaders killed: {killed_leaders:?}; seconds from each kill -9 to the first acknowledgement on partition 0 \
         of a value produced after it: {}; whole run {:?}",
        check["first_ack_after_fault_s"],
        started.elapsed()
    );
    common::jepsen::assert_clean(&check, acked);
    assert_eq!(check["acked"], check["produced"], "{check:#}");
    assert_eq!(check["failed_visible"], 0, "{check:#}");
    // Consumers read only the leader: a replica that kept a tail its leader never had (a
    // truncation skipped) shows only here, before it ever leads. The producer has stopped, so
    // the followers reach the leader's log end, byte for byte.
    common::wait_until(Duration::from_secs(30), "every replica holds the same log", || {
        (0..3).all(|partition| {
            let first = segment(&cluster, 0, "killed", partition);
            !first.is_empty() && (1..3).all(|i| segment(&cluster, i, "killed", partition) == first)
        })
    });
    let recoveries = check["first_ack_after_fault_s"].as_array().expect("one figure per kill");
    assert!(recoveries.len() == 5 && recoveries.iter().all(|s| s.is_f64()), "{check:#}");
}
