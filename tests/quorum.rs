//! A controller quorum of three `sluice` processes: a topic created through one node reaches
//! every node; after `kill -9` of the Raft leader, the others elect a new one and topics can be
//! created again within seconds; the killed node, restarted, catches up.

mod common;

use std::time::{Duration, Instant};

use common::{Broker, Raw};

const NOT_CONTROLLER: i16 = 41;
const REQUEST_TIMED_OUT: i16 = 7;

/// Ports for the controller listeners, picked free by the kernel (released just before the
/// brokers bind them).
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<_> = (0..n).map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap()).collect();
    listeners.iter().map(|l| l.local_addr().unwrap().port()).collect()
}

/// Creates `topic` through `broker`, retrying while the quorum has no leader; returns how
/// long it took.
fn create_within(broker: &Broker, topic: &str, deadline: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let error = Raw::connect(broker.addr()).create_topic(topic, 2, &[]);
        match error {
            0 => return start.elapsed(),
            NOT_CONTROLLER | REQUEST_TIMED_OUT if start.elapsed() < deadline => {
                std::thread::sleep(Duration::from_millis(50))
            }
            other => panic!("creating {topic}: error {other} after {:?}", start.elapsed()),
        }
    }
}

fn topics(broker: &Broker) -> Vec<String> {
    let image = common::metadata_image(broker.data_dir());
    image["topics"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap().to_string()).collect()
}

/// Whether the node's latest word on the quorum is that it leads it.
fn leads(broker: &Broker) -> bool {
    let stderr = broker.stderr_text();
    stderr.lines().filter(|l| l.contains("metadata quorum")).last().is_some_and(|l| l.contains("role=Leader"))
}

#[test]
fn the_quorum_survives_its_leader_and_the_leader_catches_up() {
    let ports = free_ports(3);
    let quorum =
        ports.iter().enumerate().map(|(i, p)| format!("{}@127.0.0.1:{p}", i + 1)).collect::<Vec<_>>().join(",");
    let mut nodes: Vec<Broker> =
        (1..=3).map(|id| Broker::start(1, &["--node-id", &id.to_string(), "--controller-quorum", &quorum])).collect();

    create_within(&nodes[0], "first", Duration::from_secs(30));
    for node in &nodes {
        common::wait_until(Duration::from_secs(10), "every node has the topic", || {
            topics(node).contains(&"first".to_string())
        });
    }
    // One cluster: the same id (drawn by its first leader) and __consumer_offsets everywhere.
    common::wait_until(Duration::from_secs(10), "every node has the cluster's id", || {
        let ids: Vec<_> = nodes.iter().map(|n| common::metadata_image(n.data_dir())["cluster_id"].clone()).collect();
        ids[0].as_str().is_some_and(|id| !id.is_empty()) && ids.iter().all(|id| *id == ids[0])
    });
    assert!(topics(&nodes[2]).contains(&"__consumer_offsets".to_string()));

    let mut leader = None;
    common::wait_until(Duration::from_secs(10), "a node says it leads", || {
        leader = nodes.iter().position(leads);
        leader.is_some()
    });
    let leader = leader.unwrap();
    nodes[leader].kill9();
    let survivor = &nodes[(leader + 1) % 3];
    let took = create_within(survivor, "second", Duration::from_secs(20));
    println!("a topic was created {took:?} after the leader's kill -9");

    nodes[leader].restart();
    common::wait_until(Duration::from_secs(20), "the restarted node catches up", || {
        let seen = topics(&nodes[leader]);
        seen.contains(&"first".to_string()) && seen.contains(&"second".to_string())
    });
    // And it serves what it learnt (once installed, just after it is in the log): a partition
    // of the topic created while it was down.
    let mut raw = Raw::connect(nodes[leader].addr());
    common::wait_until(Duration::from_secs(10), "the restarted node serves the new topic", || {
        raw.produce("second", 1, common::batch(&[b"x"]), -1).0 == 0
    });
}

#[test]
fn bad_bytes_on_the_controller_listener_close_that_connection_only() {
    use std::io::{Read, Write};
    let ports = free_ports(2);
    let quorum = format!("1@127.0.0.1:{},2@127.0.0.1:{}", ports[0], ports[1]);
    let mut node = Broker::start(1, &["--node-id", "1", "--controller-quorum", &quorum]);
    let frames: [&[u8]; 2] = [
        // A length far above the limit: refused before anything is allocated.
        &[0xff, 0xff, 0xff, 0xf0],
        // A frame whose body is no protobuf Message.
        &[0, 0, 0, 4, 0xff, 0xff, 0xff, 0xff],
    ];
    for frame in frames {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", ports[0])).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        stream.write_all(frame).unwrap();
        let mut byte = [0u8; 1];
        assert_eq!(stream.read(&mut byte).unwrap(), 0, "the node closes the connection");
    }
    assert!(node.is_running());
    common::wait_until(Duration::from_secs(10), "both reasons are logged", || {
        let stderr = node.stderr_text();
        stderr.contains("above the limit") && stderr.contains("undecodable")
    });
    // Still a node of its quorum: with the other voter missing, no change commits, but it answers.
    let error = Raw::connect(node.addr()).create_topic("t", 1, &[]);
    assert!([NOT_CONTROLLER, REQUEST_TIMED_OUT].contains(&error), "{error}");
}

#[test]
fn a_node_behind_the_leaders_snapshot_installs_it() {
    let ports = free_ports(3);
    let quorum =
        ports.iter().enumerate().map(|(i, p)| format!("{}@127.0.0.1:{p}", i + 1)).collect::<Vec<_>>().join(",");
    let snapshot_often = "metadata.log.max.record.bytes.between.snapshots=500";
    let mut nodes: Vec<Broker> = (1..=3)
        .map(|id| {
            Broker::start(1, &["--node-id", &id.to_string(), "--controller-quorum", &quorum, "--set", snapshot_often])
        })
        .collect();
    create_within(&nodes[0], "before", Duration::from_secs(30));
    common::wait_until(Duration::from_secs(10), "the third node has the topic", || {
        topics(&nodes[2]).contains(&"before".to_string())
    });
    nodes[2].kill9();
    // Enough changes that every other node snapshots and cuts its log past what node 3 has.
    let (a, b) = nodes.split_at(1);
    for i in 0..10 {
        let through = if i % 2 == 0 { &a[0] } else { &b[0] };
        create_within(through, &format!("while-down-{i}"), Duration::from_secs(30));
    }
    nodes[2].restart();
    common::wait_until(Duration::from_secs(20), "the restarted node has every topic", || {
        let seen = topics(&nodes[2]);
        seen.contains(&"before".to_string()) && seen.contains(&"while-down-9".to_string())
    });
    assert!(nodes[2].stderr_text().contains("installed a metadata snapshot from the leader"));
    let mut raw = Raw::connect(nodes[2].addr());
    common::wait_until(Duration::from_secs(10), "it serves a topic it learnt from the snapshot", || {
        raw.produce("while-down-0", 0, common::batch(&[b"x"]), -1).0 == 0
    });
}
