//! Brokers in the metadata log: three `sluice` processes register with the active controller
//! and heartbeat; Metadata from any of them lists all three; a broker killed with `kill -9` is
//! fenced once its session times out and unfenced when it comes back; a broker stopped with
//! SIGTERM is fenced at once and let go once the others know (controlled shutdown). A topic's
//! partitions are spread over the brokers; each node serves only the partitions it leads (NOT_LEADER_OR_FOLLOWER elsewhere),
//! real clients find them through one broker's address, a group is coordinated by the leader
//! of its offsets partition, and a dead broker's partitions are leaderless until it returns
//! with their data. A replication factor above one is refused until followers replicate. The
//! controller listener answers Kafka's
//! BrokerRegistration and BrokerHeartbeat after its preamble, and closes a connection that
//! sends anything else.

mod common;

use std::time::{Duration, Instant};

use common::cluster::Cluster;
use common::{Broker, Raw};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    BrokerHeartbeatRequest, BrokerId, CreateTopicsRequest, FindCoordinatorRequest, MetadataRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;

const BROKER_ID_NOT_REGISTERED: i16 = 102;
const STALE_BROKER_EPOCH: i16 = 77;
const INVALID_REPLICATION_FACTOR: i16 = 38;
const NOT_LEADER_OR_FOLLOWER: i16 = 6;
const LEADER_NOT_AVAILABLE: i16 = 5;
/// Short sessions, so that a dead broker is fenced within the test's time.
const FAST_SESSIONS: [&str; 4] =
    ["--set", "broker.heartbeat.interval.ms=200", "--set", "broker.session.timeout.ms=2000"];

/// The brokers a node's Metadata names, by node id, with their advertised addresses.
fn brokers(node: &Broker) -> Vec<(i32, String)> {
    let response = Raw::connect(node.addr()).send(&MetadataRequest::default().with_topics(Some(vec![])), 12);
    let mut brokers: Vec<(i32, String)> =
        response.brokers.iter().map(|b| (b.node_id.0, format!("{}:{}", b.host.as_str(), b.port))).collect();
    brokers.sort();
    brokers
}

/// Every node's id and Kafka address.
fn everyone(cluster: &Cluster) -> Vec<(i32, String)> {
    (0..cluster.len()).map(|i| (i as i32 + 1, cluster.node(i).addr().to_string())).collect()
}

/// CreateTopics of one topic with `replication_factor`: its error code and message.
fn create(raw: &mut Raw, name: &str, partitions: i32, replication_factor: i16) -> (i16, String) {
    let topic = CreatableTopic::default()
        .with_name(TopicName(StrBytes::from_string(name.to_string())))
        .with_num_partitions(partitions)
        .with_replication_factor(replication_factor);
    let response = raw.send(&CreateTopicsRequest::default().with_topics(vec![topic]).with_timeout_ms(10_000), 7);
    let result = &response.topics[0];
    (result.error_code, result.error_message.as_ref().map(|m| m.to_string()).unwrap_or_default())
}

/// Each partition's replicas in a node's metadata log.
fn replicas(node: &Broker, topic: &str) -> Vec<Vec<i64>> {
    let image = common::metadata_image(node.data_dir());
    let topic = image["topics"].as_array().unwrap().iter().find(|t| t["name"] == topic).expect("the topic").clone();
    topic["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["replicas"].as_array().unwrap().iter().map(|r| r.as_i64().unwrap()).collect())
        .collect()
}

#[test]
fn every_node_lists_every_live_broker_and_a_dead_one_is_fenced_until_it_returns() {
    let _serial = common::serial();
    let mut cluster = Cluster::start(3, 1, &FAST_SESSIONS);
    let everyone = everyone(&cluster);
    for i in 0..3 {
        common::wait_until(Duration::from_secs(30), "every node lists the three brokers", || {
            brokers(cluster.node(i)) == everyone
        });
    }

    cluster.node_mut(2).kill9();
    let killed = Instant::now();
    let rest = everyone[..2].to_vec();
    for i in 0..2 {
        common::wait_until(Duration::from_secs(20), "the killed broker is fenced", || brokers(cluster.node(i)) == rest);
    }
    // Fenced by its session's end (2 s), not before.
    assert!(killed.elapsed() >= Duration::from_millis(1500), "fenced after {:?}", killed.elapsed());

    cluster.node_mut(2).restart();
    for i in 0..3 {
        common::wait_until(Duration::from_secs(20), "the restarted broker is back", || {
            brokers(cluster.node(i)) == everyone
        });
    }
}

#[test]
fn partitions_are_spread_over_the_brokers_and_more_replicas_than_brokers_are_refused() {
    let _serial = common::serial();
    let cluster = Cluster::start(3, 1, &[]);
    cluster.wait_for_every_broker(Duration::from_secs(30));
    let mut raw = cluster.connect(1);
    assert_eq!(create(&mut raw, "spread", 6, 1).0, 0);
    let placed = replicas(cluster.node(1), "spread");
    for broker in 1..=3 {
        assert_eq!(placed.iter().filter(|r| **r == [broker]).count(), 2, "{placed:?}");
    }
    // Through the log to every node.
    common::wait_until(Duration::from_secs(10), "every node has the placement", || {
        (0..3)
            .all(|i| cluster.topics(i).contains(&"spread".to_string()) && replicas(cluster.node(i), "spread") == placed)
    });

    // Two replicas each, on distinct brokers, the preferred leaders spread too.
    assert_eq!(create(&mut raw, "twice", 3, 2).0, 0);
    let placed = replicas(cluster.node(1), "twice");
    assert!(placed.iter().all(|r| r.len() == 2 && r[0] != r[1]), "{placed:?}");
    let mut leaders: Vec<i64> = placed.iter().map(|r| r[0]).collect();
    leaders.sort();
    assert_eq!(leaders, [1, 2, 3], "{placed:?}");
    let (error, message) = create(&mut raw, "too-many", 3, 4);
    assert_eq!(error, INVALID_REPLICATION_FACTOR);
    assert!(message.contains("only 3 broker(s) are registered"), "{message}");
    assert!(!cluster.topics(1).iter().any(|t| t == "too-many"));
}

#[test]
fn a_broker_stopped_with_sigterm_is_fenced_at_once() {
    let _serial = common::serial();
    // Sessions far longer than the test: only the controlled shutdown can fence in time.
    let mut cluster = Cluster::start(3, 1, &["--set", "broker.session.timeout.ms=120000"]);
    cluster.wait_for_every_broker(Duration::from_secs(30));
    cluster.node_mut(1).terminate();
    // It was let go once the others knew it fenced: they list it no more.
    let gone = |node: &Broker| brokers(node).iter().map(|(id, _)| *id).collect::<Vec<_>>() == [1, 3];
    assert!(gone(cluster.node(0)) && gone(cluster.node(2)));
    assert!(cluster.node(1).stderr_text().contains("controlled shutdown done"));
}

/// Without controlled shutdown, SIGTERM just stops the broker: it stays listed (unfenced) until
/// its session expires.
#[test]
fn a_broker_stopped_without_controlled_shutdown_stays_listed_until_its_session_expires() {
    let _serial = common::serial();
    let mut extra = vec!["--set", "controlled.shutdown.enable=false"];
    extra.extend(FAST_SESSIONS);
    let mut cluster = Cluster::start(3, 1, &extra);
    cluster.wait_for_every_broker(Duration::from_secs(30));
    let stopped_at = Instant::now();
    cluster.node_mut(1).terminate();
    let listed = |node: &Broker| brokers(node).iter().map(|(id, _)| *id).collect::<Vec<_>>();
    if stopped_at.elapsed() < Duration::from_secs(1) {
        // Well within its 2 s session: nothing has fenced it yet.
        assert_eq!(listed(cluster.node(0)), [1, 2, 3]);
    }
    assert!(!cluster.node(1).stderr_text().contains("controlled shutdown done"));
    common::wait_until(Duration::from_secs(10), "the stopped broker is fenced", || {
        listed(cluster.node(0)) == [1, 3] && listed(cluster.node(2)) == [1, 3]
    });
}

#[test]
fn the_controller_listener_answers_broker_calls_and_closes_on_anything_else() {
    let mut cluster = Cluster::start(1, 1, &[]);
    let controller = cluster.controller_addr(0).to_string();
    let heartbeat = |broker_id: i32| {
        BrokerHeartbeatRequest::default().with_broker_id(BrokerId(broker_id)).with_broker_epoch(1_000_000)
    };
    let mut raw = Raw::connect(&controller);
    raw.send_bytes(b"KAFK");
    assert_eq!(raw.send(&heartbeat(7), 0).error_code, BROKER_ID_NOT_REGISTERED);
    // This node registered itself, with another epoch.
    assert_eq!(raw.send(&heartbeat(1), 0).error_code, STALE_BROKER_EPOCH);

    // A Kafka request that is not a broker's call closes the connection.
    let mut raw = Raw::connect(&controller);
    raw.send_bytes(b"KAFK");
    raw.send_only(&MetadataRequest::default(), 12);
    assert!(raw.is_closed_by_broker());
    assert!(cluster.node_mut(0).is_running());
    common::wait_until(Duration::from_secs(10), "the reason is logged", || {
        cluster.node(0).stderr_text().contains("is not served on the controller listener")
    });
}

/// Each partition of `topic` in node's Metadata: (leader, error code), by partition.
fn leaders(node: &Broker, topic: &str) -> Vec<(i32, i16)> {
    let request = MetadataRequest::default()
        .with_topics(Some(vec![
            MetadataRequestTopic::default().with_name(Some(TopicName(StrBytes::from_string(topic.to_string())))),
        ]))
        .with_allow_auto_topic_creation(false);
    let response = Raw::connect(node.addr()).send(&request, 12);
    let mut partitions: Vec<(i32, i32, i16)> =
        response.topics[0].partitions.iter().map(|p| (p.partition_index, p.leader_id.0, p.error_code)).collect();
    partitions.sort();
    partitions.into_iter().map(|(_, leader, error)| (leader, error)).collect()
}

/// The node id FindCoordinator names for `group`, asked of `node`.
fn coordinator(node: &Broker, group: &str) -> i32 {
    let request = FindCoordinatorRequest::default().with_key(StrBytes::from_string(group.to_string()));
    let response = Raw::connect(node.addr()).send(&request, 3);
    assert_eq!(response.error_code, 0);
    response.node_id.0
}

#[test]
fn each_node_serves_what_it_leads_and_a_dead_leaders_partitions_come_back_with_it() {
    let _serial = common::serial();
    let mut cluster = Cluster::start(3, 1, &FAST_SESSIONS);
    cluster.wait_for_every_broker(Duration::from_secs(30));
    cluster.create_topic(0, "led", 6, Duration::from_secs(30));
    let mut placed = Vec::new();
    common::wait_until(Duration::from_secs(10), "every node names the same leaders", || {
        placed = leaders(cluster.node(0), "led");
        placed.len() == 6 && (1..3).all(|i| leaders(cluster.node(i), "led") == placed)
    });
    for broker in 1..=3 {
        assert_eq!(placed.iter().filter(|(leader, _)| *leader == broker).count(), 2, "{placed:?}");
    }

    // A produce to each partition's leader is taken; one sent to another node is refused.
    for (partition, (leader, _)) in placed.iter().enumerate() {
        let leader = *leader as usize - 1;
        let other = (leader + 1) % 3;
        let value = format!("p{partition}");
        let (error, _) =
            cluster.connect(other).produce("led", partition as i32, common::batch(&[value.as_bytes()]), -1);
        assert_eq!(error, NOT_LEADER_OR_FOLLOWER);
        assert_eq!(
            cluster.connect(leader).produce("led", partition as i32, common::batch(&[value.as_bytes()]), -1),
            (0, 0)
        );
        let (error, _, _) = cluster.connect(other).fetch("led", partition as i32, 0, 0);
        assert_eq!(error, NOT_LEADER_OR_FOLLOWER);
    }

    // kafka-python through one broker's address: it finds every partition's leader.
    let summary = common::driver(cluster.node(0), "kafka_python_tutorial", &[], Duration::from_secs(120));
    assert_eq!(summary["keys"], 10, "{summary}");

    // A group whose coordinator is another node than the one the client bootstraps from.
    let group = (0..).map(|i| format!("group-{i}")).find(|g| coordinator(cluster.node(0), g) != 1).unwrap();
    cluster.create_topic(0, "grouped", 1, Duration::from_secs(30));
    // Answered once node 1 has the topic; the others apply it moments later.
    common::wait_until(Duration::from_secs(10), "every node has the topic", || {
        (0..3).all(|i| leaders(cluster.node(i), "grouped").first().is_some_and(|(_, error)| *error == 0))
    });
    let grouped_leader = leaders(cluster.node(0), "grouped")[0].0 as usize - 1;
    for i in 0..10 {
        let value = format!("g{i}");
        assert_eq!(cluster.connect(grouped_leader).produce("grouped", 0, common::batch(&[value.as_bytes()]), -1).0, 0);
    }
    let args = ["commit", "--topic", "grouped", "--group", group.as_str(), "--upto", "10"];
    let summary = common::driver(cluster.node(0), "groups_kafka_python", &args, Duration::from_secs(120));
    assert_eq!(summary["committed"], 10, "{summary}");

    // kill -9 one node: once its session is over, its partitions have no leader; restarted,
    // it leads them again, with their data.
    cluster.node_mut(2).kill9();
    let orphaned: Vec<usize> = placed.iter().enumerate().filter(|(_, (l, _))| *l == 3).map(|(p, _)| p).collect();
    common::wait_until(Duration::from_secs(20), "the dead node's partitions have no leader", || {
        let now = leaders(cluster.node(0), "led");
        orphaned.iter().all(|&p| now[p] == (-1, LEADER_NOT_AVAILABLE))
    });
    assert!(placed.iter().enumerate().all(|(p, l)| orphaned.contains(&p) || leaders(cluster.node(1), "led")[p] == *l));
    cluster.node_mut(2).restart();
    common::wait_until(Duration::from_secs(20), "the restarted node leads its partitions again", || {
        leaders(cluster.node(0), "led") == placed
    });
    for &partition in &orphaned {
        let mut raw = cluster.connect(2);
        common::wait_until(Duration::from_secs(10), "the restarted node serves its partition", || {
            raw.fetch("led", partition as i32, 0, 0).0 == 0
        });
        let records = raw.fetch_all("led", partition as i32);
        assert_eq!(records[0], (0, format!("p{partition}").into_bytes()));
    }
}
