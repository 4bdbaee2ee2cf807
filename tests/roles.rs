//! KRaft's roles (`--role broker|controller|both`): three controller-only voters and a
//! broker-only node. Topics are created and used through the broker, which follows the metadata
//! log without a vote; the cluster keeps working when a controller is killed, and the quorum
//! keeps committing without the broker. Inconsistent roles are refused at start, and bad bytes
//! on an observer's connection close it.

mod common;

use std::process::Command;
use std::time::Duration;

use common::cluster::{Cluster, FAST_SESSIONS};

const BROKER: usize = 3;

/// The brokers in node `i`'s metadata log, with whether each is fenced.
fn brokers_in_log(cluster: &Cluster, i: usize) -> Vec<(i64, bool)> {
    let image = common::metadata_image(cluster.node(i).data_dir());
    let brokers = image["brokers"].as_object().cloned().unwrap_or_default();
    brokers.values().map(|b| (b["node_id"].as_i64().unwrap(), b["fenced"].as_bool().unwrap())).collect()
}

#[test]
fn three_controllers_and_a_broker_only_node() {
    let _one_at_a_time = common::serial();
    let mut cluster = Cluster::start_roles(3, 1, 1, &FAST_SESSIONS);
    cluster.create_topic(BROKER, "through-the-broker", 2, Duration::from_secs(30));
    assert_eq!(cluster.produce_via(BROKER, "through-the-broker", 1, common::batch(&[b"a", b"b"])), 0);
    let read = cluster.connect(BROKER).fetch_all("through-the-broker", 1);
    assert_eq!(read.iter().map(|(_, v)| v.as_slice()).collect::<Vec<_>>(), [b"a", b"b"]);
    // Only the broker is one: the controllers register nothing, hold nothing, serve no client.
    assert_eq!(cluster.brokers_seen_by(BROKER), [4]);
    for i in 0..3 {
        assert!(cluster.node(i).addr().is_empty(), "node {} has no client listener", i + 1);
        assert!(!cluster.node(i).data_dir().join("through-the-broker-0").exists());
        assert!(cluster.quorum_view(i).is_some(), "node {} is in the quorum", i + 1);
    }
    assert!(cluster.node(BROKER).data_dir().join("through-the-broker-0").exists());
    // A broker-only node runs no Raft node: it never votes, never leads.
    assert!(cluster.quorum_view(BROKER).is_none(), "{}", cluster.node(BROKER).stderr_text());
    // __consumer_offsets was placed on the first broker unfenced, since no voter is one.
    let offsets = common::metadata_image(cluster.node(0).data_dir())["topics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "__consumer_offsets")
        .cloned()
        .expect("__consumer_offsets exists");
    assert!(offsets["partitions"].as_array().unwrap().iter().all(|p| p["replicas"] == serde_json::json!([4])));

    // The active controller killed: the broker goes on, and changes through it commit again.
    let leader = cluster.quorum_leader(&[0, 1, 2], Duration::from_secs(10));
    cluster.node_mut(leader).kill9();
    cluster.create_topic(BROKER, "after-a-controller-died", 1, Duration::from_secs(30));
    common::wait_until(Duration::from_secs(10), "a produce to the new topic", || {
        cluster.produce_via(BROKER, "after-a-controller-died", 0, common::batch(&[b"c"])) == 0
    });

    // The broker killed: the two controllers left still commit (they fence it).
    cluster.node_mut(BROKER).kill9();
    let alive: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    common::wait_until(Duration::from_secs(20), "the surviving controllers fence the broker", || {
        alive.iter().all(|&i| brokers_in_log(&cluster, i) == [(4, true)])
    });
    // Restarted, it fetches the image again, is unfenced and serves what it holds.
    cluster.node_mut(BROKER).restart();
    let read = cluster.connect(BROKER).fetch_all("through-the-broker", 1);
    assert_eq!(read.len(), 2);
    assert!(cluster.quorum_view(BROKER).is_none());
}

#[test]
fn inconsistent_roles_are_refused_at_start() {
    let quorum = "1@127.0.0.1:1,2@127.0.0.1:2";
    let cases: [&[&str]; 4] = [
        // A controller must be a voter.
        &["--node-id", "3", "--controller-quorum", quorum, "--role", "controller"],
        // A broker-only node must not be one.
        &["--node-id", "1", "--controller-quorum", quorum, "--role", "broker"],
        // A broker-only node needs controllers to follow.
        &["--node-id", "1", "--role", "broker"],
        // A controller-only node has no client listener.
        &["--node-id", "1", "--controller-quorum", quorum, "--role", "controller", "--listen", "127.0.0.1:0"],
    ];
    for args in cases {
        let dir = tempfile::tempdir().unwrap();
        let output = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["serve", "--admin", "off", "--data-dir"])
            .arg(dir.path())
            .args(args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?} started");
        assert!(stderr.contains("process.roles"), "{args:?}: {stderr}");
    }
}

#[test]
fn bad_bytes_from_an_observer_close_that_connection_only() {
    use std::io::{Read, Write};
    // Two voters, the second never started: the first still answers observers.
    let mut cluster = Cluster::start_voters(2, 1, 1, &[]);
    let frames: [&[u8]; 3] = [
        // A length far above the limit: refused before anything is allocated.
        &[0x7f, 0xff, 0xff, 0xf0],
        // A negative length.
        &[0xff, 0xff, 0xff, 0xff],
        // A frame that is no observer request.
        &[0, 0, 0, 4, b'n', b'o', b'p', b'e'],
    ];
    for frame in frames {
        let mut stream = std::net::TcpStream::connect(cluster.controller_addr(0)).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        stream.write_all(b"SLMD").unwrap();
        stream.write_all(frame).unwrap();
        let mut byte = [0u8; 1];
        assert_eq!(stream.read(&mut byte).unwrap(), 0, "the node closes the connection");
    }
    assert!(cluster.node_mut(0).is_running());
    common::wait_until(Duration::from_secs(10), "the reasons are logged", || {
        cluster.node(0).stderr_text().contains("an undecodable observer message")
    });
}
