//! ISRs and leaders through the controller: AlterPartition (API 56) on the controller
//! listener, from a broker this test registers itself (node 7, heartbeating by hand), refused
//! when stale or invalid, and answered with the partition's state as the metadata log holds it;
//! ElectLeaders (API 43) and `sluice cluster elect-leaders` with Kafka's per-partition errors;
//! a follower lagging past `replica.lag.time.max.ms` leaves the ISR and rejoins it; a
//! preferred leader stopped and restarted gets its leadership back through Kafka's
//! `kafka-leader-election` tool (and `sluice cluster status` shows it), or by itself with
//! `auto.leader.rebalance.enable`.

mod common;

use std::time::Duration;

use common::Raw;
use common::cluster::Cluster;
use kafka_protocol::messages::alter_partition_request::{BrokerState, PartitionData, TopicData};
use kafka_protocol::messages::broker_registration_request::Listener;
use kafka_protocol::messages::create_topics_request::{CreatableReplicaAssignment, CreatableTopic};
use kafka_protocol::messages::{
    AlterPartitionRequest, AlterPartitionResponse, BrokerHeartbeatRequest, BrokerId, BrokerRegistrationRequest,
    CreateTopicsRequest, ElectLeadersRequest, MetadataRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;

const NOT_CONTROLLER: i16 = 41;
const INVALID_REQUEST: i16 = 42;
const FENCED_LEADER_EPOCH: i16 = 74;
const STALE_BROKER_EPOCH: i16 = 77;
const INVALID_UPDATE_VERSION: i16 = 95;
const UNKNOWN_TOPIC_ID: i16 = 100;
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const PREFERRED_LEADER_NOT_AVAILABLE: i16 = 80;
const ELIGIBLE_LEADERS_NOT_AVAILABLE: i16 = 83;
const ELECTION_NOT_NEEDED: i16 = 84;

/// A broker of this test's own, registered with a node's controller listener.
struct FakeBroker {
    raw: Raw,
    node_id: i32,
    epoch: i64,
}

impl FakeBroker {
    fn register(controller: &str, cluster_id: &str, node_id: i32) -> FakeBroker {
        let mut raw = Raw::connect(controller);
        raw.send_bytes(b"KAFK");
        let listener = Listener::default()
            .with_name(StrBytes::from_static_str("PLAINTEXT"))
            .with_host(StrBytes::from_static_str("127.0.0.1"))
            .with_port(1);
        let request = BrokerRegistrationRequest::default()
            .with_broker_id(BrokerId(node_id))
            .with_cluster_id(StrBytes::from_string(cluster_id.to_string()))
            .with_incarnation_id(uuid::Uuid::new_v4())
            .with_listeners(vec![listener]);
        let response = raw.send(&request, 0);
        assert_eq!(response.error_code, 0);
        let mut broker = FakeBroker { raw, node_id, epoch: response.broker_epoch };
        assert!(!broker.heartbeat(false), "unfenced by its first heartbeat");
        broker
    }

    /// Heartbeats, asking to be fenced or not; returns whether it is fenced.
    fn heartbeat(&mut self, want_fence: bool) -> bool {
        // It claims every metadata record (it hosts no partition): caught up, so unfenceable.
        let request = BrokerHeartbeatRequest::default()
            .with_broker_id(BrokerId(self.node_id))
            .with_broker_epoch(self.epoch)
            .with_current_metadata_offset(i64::MAX)
            .with_want_fence(want_fence);
        let response = self.raw.send(&request, 0);
        assert_eq!(response.error_code, 0);
        response.is_fenced
    }

    /// AlterPartition of one partition of `topic_id` at `version`: the answer.
    fn alter(&mut self, topic_id: uuid::Uuid, epochs: (i32, i32), isr: &[i32], version: i16) -> AlterPartitionResponse {
        let (leader_epoch, partition_epoch) = epochs;
        let mut partition = PartitionData::default()
            .with_partition_index(0)
            .with_leader_epoch(leader_epoch)
            .with_partition_epoch(partition_epoch);
        match version {
            2 => partition.new_isr = isr.iter().map(|&id| BrokerId(id)).collect(),
            _ => {
                partition.new_isr_with_epochs = isr
                    .iter()
                    .map(|&id| BrokerState::default().with_broker_id(BrokerId(id)).with_broker_epoch(-1))
                    .collect()
            }
        }
        let request = AlterPartitionRequest::default()
            .with_broker_id(BrokerId(self.node_id))
            .with_broker_epoch(self.epoch)
            .with_topics(vec![TopicData::default().with_topic_id(topic_id).with_partitions(vec![partition])]);
        self.raw.send(&request, version)
    }
}

/// The error of partition 0's answer, or its (leader, leader epoch, ISR, partition epoch).
fn outcome(response: &AlterPartitionResponse) -> Result<(i32, i32, Vec<i32>, i32), i16> {
    assert_eq!(response.error_code, 0);
    let p = &response.topics[0].partitions[0];
    match p.error_code {
        0 => Ok((p.leader_id.0, p.leader_epoch, p.isr.iter().map(|b| b.0).collect(), p.partition_epoch)),
        error => Err(error),
    }
}

/// Partition 0 of `topic` in a node's metadata log: (leader, leader epoch, ISR, partition epoch).
fn recorded(cluster: &Cluster, topic: &str) -> (i64, i64, Vec<i64>, i64) {
    let image = common::metadata_image(cluster.node(0).data_dir());
    let topic = image["topics"].as_array().unwrap().iter().find(|t| t["name"] == topic).unwrap().clone();
    let p = &topic["partitions"][0];
    let isr = p["isr"].as_array().unwrap().iter().map(|r| r.as_i64().unwrap()).collect();
    (p["leader"].as_i64().unwrap(), p["leader_epoch"].as_i64().unwrap(), isr, p["partition_epoch"].as_i64().unwrap())
}

/// A one-node cluster started with `flags`, a broker of the test's own (node 7) registered with
/// it, and `topic` whose one partition has its one replica on node 7; the topic's id.
fn cluster_with_a_fake_broker(flags: &[&str], topic: &'static str) -> (Cluster, FakeBroker, uuid::Uuid) {
    let cluster = Cluster::start(1, 1, flags);
    let metadata = cluster.connect(0).send(&MetadataRequest::default().with_topics(Some(vec![])), 12);
    let cluster_id = metadata.cluster_id.unwrap().to_string();
    let broker = FakeBroker::register(cluster.controller_addr(0), &cluster_id, 7);
    let topic = CreatableTopic::default()
        .with_name(TopicName(StrBytes::from_static_str(topic)))
        .with_num_partitions(-1)
        .with_replication_factor(-1)
        .with_assignments(vec![CreatableReplicaAssignment::default().with_broker_ids(vec![BrokerId(7)])]);
    let created = cluster.connect(0).send(&CreateTopicsRequest::default().with_topics(vec![topic]), 7);
    assert_eq!(created.topics[0].error_code, 0, "{:?}", created.topics[0].error_message);
    let topic_id = created.topics[0].topic_id;
    (cluster, broker, topic_id)
}

#[test]
fn alter_partition_is_answered_on_the_controller_listener_and_refused_when_stale() {
    let (cluster, mut broker, topic_id) = cluster_with_a_fake_broker(&[], "isr");

    // The ISR as it is: answered with the partition's state, at either version.
    for version in [2, 3] {
        assert_eq!(outcome(&broker.alter(topic_id, (0, 0), &[7], version)), Ok((7, 0, vec![7], 0)));
    }
    assert_eq!(outcome(&broker.alter(topic_id, (-1, 0), &[7], 3)), Err(FENCED_LEADER_EPOCH));
    assert_eq!(outcome(&broker.alter(topic_id, (1, 0), &[7], 3)), Err(NOT_CONTROLLER), "ahead of the controller");
    assert_eq!(outcome(&broker.alter(topic_id, (0, 0), &[7, 1], 3)), Err(INVALID_REQUEST), "1 holds no replica");
    assert_eq!(outcome(&broker.alter(topic_id, (0, 0), &[], 3)), Err(INVALID_REQUEST), "without its leader");
    assert_eq!(outcome(&broker.alter(uuid::Uuid::new_v4(), (0, 0), &[7], 3)), Err(UNKNOWN_TOPIC_ID));
    let stale = FakeBroker { epoch: broker.epoch - 1, ..broker };
    let mut broker = stale;
    assert_eq!(broker.alter(topic_id, (0, 0), &[7], 3).error_code, STALE_BROKER_EPOCH);
    broker.epoch += 1;

    // Fenced, the broker leads nothing and may not change the ISR; unfenced, it leads in a new
    // leader epoch, and the partition has changed twice.
    assert!(broker.heartbeat(true));
    assert_eq!(recorded(&cluster, "isr"), (-1, 1, vec![7], 1));
    assert_eq!(outcome(&broker.alter(topic_id, (1, 1), &[7], 3)), Err(INVALID_REQUEST), "no longer its leader");
    assert!(!broker.heartbeat(false));
    assert_eq!(recorded(&cluster, "isr"), (7, 2, vec![7], 2));
    assert_eq!(outcome(&broker.alter(topic_id, (2, 1), &[7], 3)), Err(INVALID_UPDATE_VERSION));
    assert_eq!(outcome(&broker.alter(topic_id, (2, 2), &[7], 3)), Ok((7, 2, vec![7], 2)));
}

/// A reassignment completes once its leader has added the new replica to the ISR: the test's
/// broker leads a partition moved to the real node 1, says through AlterPartition that node 1
/// caught up, and the controller then gives node 1 the partition alone, as its leader.
#[test]
fn a_reassignment_completes_when_its_new_replica_joins_the_isr() {
    use kafka_protocol::messages::AlterPartitionReassignmentsRequest;
    use kafka_protocol::messages::alter_partition_reassignments_request::{ReassignablePartition, ReassignableTopic};
    // The test's broker heartbeats only once: a session long enough for a slow machine.
    let (cluster, mut broker, topic_id) =
        cluster_with_a_fake_broker(&["--set", "broker.session.timeout.ms=60000"], "moving");

    let target = ReassignablePartition::default().with_partition_index(0).with_replicas(Some(vec![BrokerId(1)]));
    let moving = ReassignableTopic::default()
        .with_name(TopicName(StrBytes::from_static_str("moving")))
        .with_partitions(vec![target]);
    let request = AlterPartitionReassignmentsRequest::default().with_topics(vec![moving]);
    let response = cluster.connect(0).send(&request, 0);
    assert_eq!(response.responses[0].partitions[0].error_code, 0);
    // Started: one change (the replicas), the leader and ISR as they were.
    assert_eq!(recorded(&cluster, "moving"), (7, 0, vec![7], 1));
    common::wait_until(std::time::Duration::from_secs(10), "node 1 opens its new replica", || {
        cluster.node(0).data_dir().join("moving-0").exists()
    });

    // Node 1 caught up (says its leader): in the ISR, then the move completes on its own.
    assert_eq!(outcome(&broker.alter(topic_id, (0, 1), &[7, 1], 3)), Ok((7, 0, vec![7, 1], 2)));
    let replicas = || {
        let image = common::metadata_image(cluster.node(0).data_dir());
        let moved = image["topics"].as_array().unwrap().iter().find(|t| t["name"] == "moving").unwrap().clone();
        moved["partitions"][0]["replicas"].clone()
    };
    common::wait_until(std::time::Duration::from_secs(10), "the controller completes the move", || {
        replicas() == serde_json::json!([1])
    });
    assert_eq!(recorded(&cluster, "moving"), (1, 1, vec![1], 3), "node 1 leads, in a new leader epoch");
    assert_eq!(cluster.produce_via(0, "moving", 0, common::batch(&[b"x"])), 0, "node 1 leads it");
}

/// ElectLeaders of `election_type` for `partitions` of `isr` (all partitions: `None`): each
/// answered partition's (topic, partition, error code), and the request's own error code.
fn elect(cluster: &Cluster, election_type: i8, partitions: Option<&[i32]>) -> (i16, Vec<(String, i32, i16)>) {
    use kafka_protocol::messages::elect_leaders_request::TopicPartitions;
    let topics = partitions.map(|partitions| {
        vec![
            TopicPartitions::default()
                .with_topic(TopicName(StrBytes::from_static_str("isr")))
                .with_partitions(partitions.to_vec()),
        ]
    });
    let request = ElectLeadersRequest::default().with_election_type(election_type).with_topic_partitions(topics);
    let response = cluster.connect(0).send(&request, 2);
    let results = response
        .replica_election_results
        .iter()
        .flat_map(|t| t.partition_result.iter().map(|p| (t.topic.0.to_string(), p.partition_id, p.error_code)))
        .collect();
    (response.error_code, results)
}

#[test]
fn elect_leaders_answers_each_partition_with_kafkas_errors() {
    let (cluster, mut broker, _) = cluster_with_a_fake_broker(&[], "isr");
    let isr = |partition, error| ("isr".to_string(), partition, error);
    let (preferred, unclean) = (0, 1);

    // Led by its preferred replica: nothing to do, and unreported when every partition is asked.
    assert_eq!(
        elect(&cluster, preferred, Some(&[0, 1])),
        (0, vec![isr(0, ELECTION_NOT_NEEDED), isr(1, UNKNOWN_TOPIC_OR_PARTITION)])
    );
    assert_eq!(elect(&cluster, unclean, Some(&[0])), (0, vec![isr(0, ELECTION_NOT_NEEDED)]));
    let (error, every) = elect(&cluster, preferred, None);
    assert_eq!(error, 0);
    assert!(every.is_empty(), "{every:?}");
    assert_eq!(elect(&cluster, 2, Some(&[0])).0, INVALID_REQUEST, "no such election type");

    // Its one replica fenced: no election finds a leader.
    assert!(broker.heartbeat(true));
    assert_eq!(elect(&cluster, preferred, Some(&[0])), (0, vec![isr(0, PREFERRED_LEADER_NOT_AVAILABLE)]));
    assert_eq!(elect(&cluster, unclean, Some(&[0])), (0, vec![isr(0, ELIGIBLE_LEADERS_NOT_AVAILABLE)]));
    let (ok, out, _) = common::cli(
        &["cluster", "elect-leaders", "--bootstrap", cluster.node(0).addr(), "--topic", "isr", "--partition", "0"],
        "",
    );
    assert!(!ok && out.contains("isr-0\tPreferredLeaderNotAvailable"), "{out}");
    assert!(!broker.heartbeat(false));
    let (ok, out, _) =
        common::cli(&["cluster", "elect-leaders", "--bootstrap", cluster.node(0).addr(), "--type", "unclean"], "");
    assert!(ok && out.contains("No partition needed an election"), "{out}");
}

/// Three brokers whose sessions outlast the test (a paused broker stays unfenced, so only
/// its leader can take it out of the ISR) and a short `replica.lag.time.max.ms`; `topic`
/// created with one partition on all three.
fn three_brokers_lagging_fast(topic: &str) -> Cluster {
    let flags = ["--set", "broker.session.timeout.ms=120000", "--set", "replica.lag.time.max.ms=1500"];
    let cluster = Cluster::start(3, 1, &flags);
    cluster.wait_for_every_broker(Duration::from_secs(30));
    cluster.create_topic_everywhere(topic, 1, 3, &[]);
    cluster
}

#[test]
fn a_follower_lagging_past_the_limit_leaves_the_isr_and_rejoins_once_caught_up() {
    let _serial = common::serial();
    let cluster = three_brokers_lagging_fast("lagging");
    let (leader, isr) = cluster.leader_and_isr_seen_by(0, "lagging", 0);
    assert_eq!(isr, [1, 2, 3]);
    let leader = leader as usize - 1;
    let follower = (leader + 1) % 3;
    let acked = |acks| cluster.connect(leader).produce("lagging", 0, common::batch(&[b"v"]), acks).0;
    // The leader's shard opens the partition moments after its Metadata names it.
    common::wait_until(Duration::from_secs(10), "the leader takes a write", || acked(-1) == 0);

    // Paused past replica.lag.time.max.ms (its session goes on): its leader takes it out.
    cluster.node(follower).pause();
    let without: Vec<i32> = (1..=3).filter(|&id| id != follower as i32 + 1).collect();
    common::wait_until(Duration::from_secs(15), "the paused follower leaves the ISR", || {
        cluster.leader_and_isr_seen_by(leader, "lagging", 0).1 == without
    });
    // acks=all needs only the ISR in force: the two left.
    assert_eq!(acked(-1), 0);
    for _ in 0..5 {
        assert_eq!(acked(1), 0);
    }

    // Resumed, it catches up and its leader adds it back.
    cluster.node(follower).resume();
    common::wait_until(Duration::from_secs(20), "the follower rejoins the ISR", || {
        cluster.leader_and_isr_seen_by(leader, "lagging", 0).1 == [1, 2, 3]
    });
    assert_eq!(acked(-1), 0);
    assert_eq!(cluster.leader_and_isr_seen_by(leader, "lagging", 0).0, leader as i32 + 1, "the leader never changed");
}

/// The topic's partition 0 as node `via`'s Metadata names it: (leader, replicas in order).
fn leader_and_replicas(cluster: &Cluster, via: usize, topic: &str) -> (i32, Vec<i32>) {
    use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
    let wanted = MetadataRequestTopic::default().with_name(Some(TopicName(StrBytes::from_string(topic.into()))));
    let request = MetadataRequest::default().with_topics(Some(vec![wanted])).with_allow_auto_topic_creation(false);
    let response = cluster.connect(via).send(&request, 12);
    let p = &response.topics[0].partitions[0];
    (p.leader_id.0, p.replica_nodes.iter().map(|b| b.0).collect())
}

/// Three brokers (`flags` added) and `topic` with one partition on all three, whose preferred
/// leader is stopped (controlled shutdown), written to meanwhile, and restarted: returned once
/// it is back in the ISR, led by another node. Returns the cluster and the preferred leader's
/// node id.
fn preferred_leader_restarted(flags: &[&str], topic: &str) -> (Cluster, i32) {
    let mut cluster = Cluster::start(3, 1, flags);
    cluster.wait_for_every_broker(Duration::from_secs(30));
    cluster.create_topic_everywhere(topic, 1, 3, &[]);
    let (leader, replicas) = leader_and_replicas(&cluster, 0, topic);
    assert_eq!(leader, replicas[0], "a new partition is led by its preferred replica");
    let preferred = leader;
    let produce =
        |cluster: &Cluster, via: i32| cluster.connect(via as usize - 1).produce(topic, 0, common::batch(&[b"v"]), -1).0;
    common::wait_until(Duration::from_secs(10), "the leader takes a write", || produce(&cluster, preferred) == 0);

    cluster.node_mut(preferred as usize - 1).terminate();
    let other = (0..3).find(|&i| i != preferred as usize - 1).unwrap();
    let mut leader = preferred;
    common::wait_until(Duration::from_secs(10), "another replica leads", || {
        leader = leader_and_replicas(&cluster, other, topic).0;
        leader != preferred && leader > 0
    });
    common::wait_until(Duration::from_secs(10), "the new leader takes writes", || produce(&cluster, leader) == 0);
    cluster.node_mut(preferred as usize - 1).restart();
    common::wait_until(Duration::from_secs(20), "the restarted replica rejoins the ISR", || {
        cluster.leader_and_isr_seen_by(other, topic, 0).1 == [1, 2, 3]
    });
    (cluster, preferred)
}

#[test]
fn kafkas_leader_election_tool_brings_leadership_back_to_the_preferred_replica() {
    let _serial = common::serial();
    let (cluster, preferred) = preferred_leader_restarted(&["--set", "auto.leader.rebalance.enable=false"], "back");
    assert_ne!(leader_and_replicas(&cluster, 0, "back").0, preferred, "not moved back by itself");
    let mut command = common::java_command("org.apache.kafka.tools.LeaderElectionCommand");
    let bootstrap = cluster.bootstrap();
    command.args([
        "--bootstrap-server",
        bootstrap.as_str(),
        "--election-type",
        "preferred",
        "--topic",
        "back",
        "--partition",
        "0",
    ]);
    let (ok, out, err) = common::run_with_deadline(command, b"", Duration::from_secs(120));
    assert!(ok && out.contains("Successfully completed leader election (PREFERRED)"), "{out}\n{err}");
    common::wait_until(Duration::from_secs(10), "every node names the preferred leader", || {
        (0..3).all(|i| leader_and_replicas(&cluster, i, "back").0 == preferred)
    });
    let records = cluster.connect(preferred as usize - 1).fetch_all("back", 0);
    assert_eq!(records.len(), 2, "everything acknowledged, on the preferred leader again");

    // `sluice cluster status` shows the brokers and the partition as it is now.
    let node = cluster.node(0).addr();
    let (ok, out, err) = common::cli(&["cluster", "status", "--bootstrap", node, "--topic", "back"], "");
    assert!(ok, "{err}");
    assert_eq!(out.lines().filter(|l| l.starts_with("Broker: ")).count(), 3, "{out}");
    let (_, replicas) = leader_and_replicas(&cluster, 0, "back");
    let replicas = replicas.iter().map(|r| r.to_string()).collect::<Vec<_>>().join(",");
    let line = format!("back-0\tLeader: {preferred}\tReplicas: {replicas}\tIsr: ");
    assert!(out.lines().any(|l| l.starts_with(&line)), "{out}");
}

#[test]
fn the_controller_moves_leadership_back_to_preferred_replicas_by_itself() {
    let _serial = common::serial();
    // Any imbalance counts: the broker also leads its share of __consumer_offsets.
    let flags =
        ["--set", "leader.imbalance.check.interval.seconds=1", "--set", "leader.imbalance.per.broker.percentage=0"];
    let (cluster, preferred) = preferred_leader_restarted(&flags, "rebalanced");
    common::wait_until(Duration::from_secs(10), "the preferred replica leads again", || {
        leader_and_replicas(&cluster, 0, "rebalanced").0 == preferred
    });
}
