//! Brokers in the metadata log: three `sluice` processes register with the active controller
//! and heartbeat; Metadata from any of them lists all three; a broker killed with `kill -9` is
//! fenced once its session times out and unfenced when it comes back; a broker stopped with
//! SIGTERM is fenced at once (controlled shutdown). The controller listener answers Kafka's
//! BrokerRegistration and BrokerHeartbeat after its preamble, and closes a connection that
//! sends anything else.

mod common;

use std::time::{Duration, Instant};

use common::{Broker, Raw};
use kafka_protocol::messages::{BrokerHeartbeatRequest, BrokerId, MetadataRequest};

const BROKER_ID_NOT_REGISTERED: i16 = 102;
const STALE_BROKER_EPOCH: i16 = 77;
/// Short sessions, so that a dead broker is fenced within the test's time.
const HEARTBEAT: &str = "broker.heartbeat.interval.ms=200";
const SESSION: &str = "broker.session.timeout.ms=2000";

fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<_> = (0..n).map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap()).collect();
    listeners.iter().map(|l| l.local_addr().unwrap().port()).collect()
}

fn quorum_of(ports: &[u16]) -> String {
    ports.iter().enumerate().map(|(i, p)| format!("{}@127.0.0.1:{p}", i + 1)).collect::<Vec<_>>().join(",")
}

/// The brokers a node's Metadata names, by node id, with their advertised addresses.
fn brokers(node: &Broker) -> Vec<(i32, String)> {
    let response = Raw::connect(node.addr()).send(&MetadataRequest::default().with_topics(Some(vec![])), 12);
    let mut brokers: Vec<(i32, String)> =
        response.brokers.iter().map(|b| (b.node_id.0, format!("{}:{}", b.host.as_str(), b.port))).collect();
    brokers.sort();
    brokers
}

fn start_cluster(ports: &[u16], settings: &[&[&str]]) -> Vec<Broker> {
    let quorum = quorum_of(ports);
    (1..=ports.len())
        .map(|id| {
            let mut args =
                vec!["--node-id".to_string(), id.to_string(), "--controller-quorum".to_string(), quorum.clone()];
            for setting in settings[id - 1] {
                args.extend(["--set".to_string(), setting.to_string()]);
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            Broker::start(1, &args)
        })
        .collect()
}

#[test]
fn every_node_lists_every_live_broker_and_a_dead_one_is_fenced_until_it_returns() {
    let _serial = common::serial();
    let ports = free_ports(3);
    let fast: &[&str] = &[HEARTBEAT, SESSION];
    let mut nodes = start_cluster(&ports, &[fast, fast, fast]);
    let everyone: Vec<(i32, String)> =
        nodes.iter().enumerate().map(|(i, n)| (i as i32 + 1, n.addr().to_string())).collect();
    for node in &nodes {
        common::wait_until(Duration::from_secs(30), "every node lists the three brokers", || brokers(node) == everyone);
    }

    nodes[2].kill9();
    let killed = Instant::now();
    let rest = everyone[..2].to_vec();
    for node in &nodes[..2] {
        common::wait_until(Duration::from_secs(20), "the killed broker is fenced", || brokers(node) == rest);
    }
    // Fenced by its session's end (2 s), not before.
    assert!(killed.elapsed() >= Duration::from_millis(1500), "fenced after {:?}", killed.elapsed());

    nodes[2].restart();
    for node in &nodes {
        common::wait_until(Duration::from_secs(20), "the restarted broker is back", || brokers(node) == everyone);
    }
}

#[test]
fn a_broker_stopped_with_sigterm_is_fenced_at_once() {
    let _serial = common::serial();
    let ports = free_ports(3);
    // Sessions far longer than the test: only the controlled shutdown can fence in time.
    let slow: &[&str] = &["broker.session.timeout.ms=120000"];
    let mut nodes = start_cluster(&ports, &[slow, slow, slow]);
    for node in &nodes {
        common::wait_until(Duration::from_secs(30), "every node lists the three brokers", || brokers(node).len() == 3);
    }
    nodes[1].terminate();
    let gone = |node: &Broker| brokers(node).iter().map(|(id, _)| *id).collect::<Vec<_>>() == [1, 3];
    common::wait_until(Duration::from_secs(10), "the stopped broker is fenced", || gone(&nodes[0]) && gone(&nodes[2]));
    assert!(nodes[1].stderr_text().contains("the controller fenced this broker for its shutdown"));
}

#[test]
fn the_controller_listener_answers_broker_calls_and_closes_on_anything_else() {
    let ports = free_ports(1);
    let mut node = Broker::start(1, &["--node-id", "1", "--controller-quorum", &quorum_of(&ports)]);
    let controller = format!("127.0.0.1:{}", ports[0]);
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
    assert!(node.is_running());
    common::wait_until(Duration::from_secs(10), "the reason is logged", || {
        node.stderr_text().contains("is not served on the controller listener")
    });
}
