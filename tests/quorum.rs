//! A controller quorum of three `sluice` processes: a topic created through one node reaches
//! every node; after `kill -9` of the Raft leader, the others elect a new one and topics can be
//! created again within seconds; the killed node, restarted, catches up. A leader paused with
//! SIGSTOP steps down once resumed; a broker paused past its session is fenced until resumed.
//! (Network partitions: `network_partition.rs`.)

mod common;

use std::time::Duration;

use common::cluster::{Cluster, FAST_SESSIONS, NOT_CONTROLLER, REQUEST_TIMED_OUT};

#[test]
fn the_quorum_survives_its_leader_and_the_leader_catches_up() {
    let _one_at_a_time = common::serial();
    let mut cluster = Cluster::start(3, 1, &[]);
    cluster.create_topic_everywhere("first", 2, 1, &[]);
    // One cluster: the same id (drawn by its first leader) and __consumer_offsets everywhere.
    common::wait_until(Duration::from_secs(10), "every node has the cluster's id", || {
        let ids: Vec<_> =
            (0..3).map(|i| common::metadata_image(cluster.node(i).data_dir())["cluster_id"].clone()).collect();
        ids[0].as_str().is_some_and(|id| !id.is_empty()) && ids.iter().all(|id| *id == ids[0])
    });
    assert!(cluster.topics(2).contains(&"__consumer_offsets".to_string()));

    let leader = cluster.quorum_leader(&[0, 1, 2], Duration::from_secs(10));
    cluster.node_mut(leader).kill9();
    let took = cluster.create_topic((leader + 1) % 3, "second", 2, Duration::from_secs(20));
    println!("a topic was created {took:?} after the leader's kill -9");

    cluster.node_mut(leader).restart();
    cluster.wait_for_topic(leader, "first", Duration::from_secs(20));
    cluster.wait_for_topic(leader, "second", Duration::from_secs(20));
    // And it serves what it learnt (once installed, just after it is in the log): it names
    // the leader of a partition of the topic created while it was down, which takes a produce.
    common::wait_until(Duration::from_secs(10), "the restarted node knows the new topic's leader", || {
        cluster.produce_via(leader, "second", 1, common::batch(&[b"x"])) == 0
    });
}

#[test]
fn bad_bytes_on_the_controller_listener_close_that_connection_only() {
    use std::io::{Read, Write};
    // Two voters, the second never started.
    let mut cluster = Cluster::start_voters(2, 1, 1, &[]);
    let frames: [&[u8]; 2] = [
        // A length far above the limit: refused before anything is allocated.
        &[0xff, 0xff, 0xff, 0xf0],
        // A frame whose body is no protobuf Message.
        &[0, 0, 0, 4, 0xff, 0xff, 0xff, 0xff],
    ];
    for frame in frames {
        let mut stream = std::net::TcpStream::connect(cluster.controller_addr(0)).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        stream.write_all(frame).unwrap();
        let mut byte = [0u8; 1];
        assert_eq!(stream.read(&mut byte).unwrap(), 0, "the node closes the connection");
    }
    assert!(cluster.node_mut(0).is_running());
    common::wait_until(Duration::from_secs(10), "both reasons are logged", || {
        let stderr = cluster.node(0).stderr_text();
        stderr.contains("above the limit") && stderr.contains("undecodable")
    });
    // Still a node of its quorum: with the other voter missing, no change commits, but it answers.
    let error = cluster.connect(0).create_topic("t", 1, &[]);
    assert!([NOT_CONTROLLER, REQUEST_TIMED_OUT].contains(&error), "{error}");
}

#[test]
fn a_node_behind_the_leaders_snapshot_installs_it() {
    let _one_at_a_time = common::serial();
    let snapshot_often = "metadata.log.max.record.bytes.between.snapshots=500";
    let mut cluster = Cluster::start(3, 1, &["--set", snapshot_often]);
    cluster.create_topic(0, "before", 2, Duration::from_secs(30));
    cluster.wait_for_topic(2, "before", Duration::from_secs(10));
    cluster.node_mut(2).kill9();
    // Enough changes that every other node snapshots and cuts its log past what node 3 has.
    for i in 0..10 {
        cluster.create_topic(i % 2, &format!("while-down-{i}"), 2, Duration::from_secs(30));
    }
    cluster.node_mut(2).restart();
    cluster.wait_for_topic(2, "before", Duration::from_secs(20));
    cluster.wait_for_topic(2, "while-down-9", Duration::from_secs(20));
    // The snapshot's files are written before the install is logged.
    common::wait_until(Duration::from_secs(10), "the restarted node logs the snapshot's install", || {
        cluster.node(2).stderr_text().contains("installed a metadata snapshot from the leader")
    });
    common::wait_until(Duration::from_secs(10), "it knows the leader of a topic it learnt from the snapshot", || {
        cluster.produce_via(2, "while-down-0", 0, common::batch(&[b"x"])) == 0
    });
}

/// A metadata leader paused (SIGSTOP) past the election timeout, its sockets open: the others
/// elect a new leader and commit; resumed (SIGCONT), the old leader finds its term behind,
/// steps down and learns what was committed without it.
#[test]
fn a_paused_metadata_leader_steps_down_once_resumed() {
    let _one_at_a_time = common::serial();
    let cluster = Cluster::start(3, 1, &[]);
    cluster.create_topic(0, "before", 2, Duration::from_secs(30));
    let paused = cluster.quorum_leader(&[0, 1, 2], Duration::from_secs(10));
    let others: Vec<usize> = (0..3).filter(|&i| i != paused).collect();
    cluster.node(paused).pause();
    let leader = cluster.quorum_leader(&others, Duration::from_secs(15));
    let took = cluster.create_topic(others[0], "while-paused", 2, Duration::from_secs(20));
    println!("node {} leads while node {} is paused; a topic was created in {took:?}", leader + 1, paused + 1);

    cluster.node(paused).resume();
    let term = cluster.quorum_view(leader).expect("the leader said so").term;
    common::wait_until(Duration::from_secs(20), "the resumed node follows at the new term", || {
        cluster.quorum_view(paused).is_some_and(|view| view.role == "Follower" && view.term >= term)
    });
    cluster.wait_for_topic(paused, "while-paused", Duration::from_secs(20));
    assert_ne!(cluster.quorum_leader(&[0, 1, 2], Duration::from_secs(10)), paused);
}

/// A broker paused (SIGSTOP) past its session is fenced by the controller; resumed (SIGCONT),
/// it heartbeats again and is listed once more.
#[test]
fn a_broker_paused_past_its_session_is_fenced_until_resumed() {
    let _one_at_a_time = common::serial();
    let cluster = Cluster::start(3, 1, &FAST_SESSIONS);
    cluster.wait_for_every_broker(Duration::from_secs(30));
    let controller = cluster.quorum_leader(&[0, 1, 2], Duration::from_secs(10));
    let paused = (controller + 1) % 3;
    let others: Vec<usize> = (0..3).filter(|&i| i != paused).collect();
    let rest: Vec<i32> = others.iter().map(|&i| i as i32 + 1).collect();
    cluster.node(paused).pause();
    for &i in &others {
        common::wait_until(Duration::from_secs(20), "the paused broker is fenced", || {
            cluster.brokers_seen_by(i) == rest
        });
    }
    cluster.node(paused).resume();
    cluster.wait_for_every_broker(Duration::from_secs(20));
}
