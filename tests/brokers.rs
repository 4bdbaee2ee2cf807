//! Brokers in the metadata log: three `sluice` processes register with the active controller
//! and heartbeat; Metadata from any of them lists all three; a broker killed with `kill -9` is
//! fenced once its session times out and unfenced when it comes back; a broker stopped with
//! SIGTERM is fenced at once (controlled shutdown). A topic's partitions are spread over the
//! brokers; a replication factor above one is refused until followers replicate. The
//! controller listener answers Kafka's
//! BrokerRegistration and BrokerHeartbeat after its preamble, and closes a connection that
//! sends anything else.

mod common;

use std::time::{Duration, Instant};

use common::cluster::Cluster;
use common::{Broker, Raw};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::{BrokerHeartbeatRequest, BrokerId, CreateTopicsRequest, MetadataRequest, TopicName};
use kafka_protocol::protocol::StrBytes;

const BROKER_ID_NOT_REGISTERED: i16 = 102;
const STALE_BROKER_EPOCH: i16 = 77;
const INVALID_REPLICATION_FACTOR: i16 = 38;
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
fn partitions_are_spread_over_the_brokers_and_more_replicas_than_one_are_refused() {
    let _serial = common::serial();
    let cluster = Cluster::start(3, 1, &[]);
    for i in 0..3 {
        common::wait_until(Duration::from_secs(30), "every node lists the three brokers", || {
            brokers(cluster.node(i)).len() == 3
        });
    }
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

    let (error, message) = create(&mut raw, "twice", 3, 2);
    assert_eq!(error, INVALID_REPLICATION_FACTOR);
    assert!(message.contains("replication between brokers is not there yet"), "{message}");
    let (error, message) = create(&mut raw, "too-many", 3, 4);
    assert_eq!(error, INVALID_REPLICATION_FACTOR);
    assert!(message.contains("only 3 broker(s) are registered"), "{message}");
    assert!(!cluster.topics(1).iter().any(|t| t == "twice" || t == "too-many"));
}

#[test]
fn a_broker_stopped_with_sigterm_is_fenced_at_once() {
    let _serial = common::serial();
    // Sessions far longer than the test: only the controlled shutdown can fence in time.
    let mut cluster = Cluster::start(3, 1, &["--set", "broker.session.timeout.ms=120000"]);
    for i in 0..3 {
        common::wait_until(Duration::from_secs(30), "every node lists the three brokers", || {
            brokers(cluster.node(i)).len() == 3
        });
    }
    cluster.node_mut(1).terminate();
    let gone = |node: &Broker| brokers(node).iter().map(|(id, _)| *id).collect::<Vec<_>>() == [1, 3];
    common::wait_until(Duration::from_secs(10), "the stopped broker is fenced", || {
        gone(cluster.node(0)) && gone(cluster.node(2))
    });
    assert!(cluster.node(1).stderr_text().contains("the controller fenced this broker for its shutdown"));
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
