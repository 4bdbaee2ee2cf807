//! Real network partitions: every node in its own network namespace (`common::netns`), one
//! node's link cut and healed. A metadata leader cut off commits nothing while the majority
//! elects another, and converges once healed; a broker cut off from the active controller is
//! fenced, and unfenced once healed; the Jepsen workload over three brokers loses nothing
//! acknowledged while one of them is cut off and healed. Needs root and iproute2 (CI runs as root).

mod common;

use std::time::Duration;

use common::cluster::{Cluster, FAST_SESSIONS, NOT_CONTROLLER, REQUEST_TIMED_OUT};
use common::jepsen;

/// A real network partition: each node in its own network namespace, the metadata leader's
/// link cut. The majority elects a new leader and creates a topic; the isolated node commits
/// nothing; once the link is back, it converges on the majority's log.
#[test]
fn a_metadata_leader_cut_off_by_the_network_commits_nothing_and_converges_once_healed() {
    let _one_at_a_time = common::serial();
    let cluster = Cluster::start_in_namespaces(3, 1, &[]);
    cluster.create_topic_everywhere("before", 2, 1, &[]);
    let isolated = cluster.quorum_leader(&[0, 1, 2], Duration::from_secs(10));
    let majority: Vec<usize> = (0..3).filter(|&i| i != isolated).collect();
    cluster.network().cut(isolated);

    let leader = cluster.quorum_leader(&majority, Duration::from_secs(15));
    let took = cluster.create_topic(majority[0], "during", 2, Duration::from_secs(20));
    println!("node {} leads the majority; a topic was created {took:?} after the cut", leader + 1);

    let error = cluster.connect(isolated).create_topic("isolated", 1, &[]);
    assert!([NOT_CONTROLLER, REQUEST_TIMED_OUT].contains(&error), "the isolated node answered {error}");
    assert!(!cluster.topics(isolated).contains(&"during".to_string()));

    cluster.network().heal(isolated);
    cluster.wait_for_topic(isolated, "during", Duration::from_secs(20));
    let sorted_topics = |i| {
        let mut topics = cluster.topics(i);
        topics.sort();
        topics
    };
    common::wait_until(Duration::from_secs(20), "every node has the same topics", || {
        let topics: Vec<_> = (0..3).map(sorted_topics).collect();
        topics[0] == topics[1] && topics[1] == topics[2]
    });
    assert!(!sorted_topics(isolated).contains(&"isolated".to_string()), "a change the majority never saw committed");
    // And the healed node knows what it learnt: the leader it names takes a produce.
    common::wait_until(Duration::from_secs(10), "the healed node knows the new topic's leader", || {
        cluster.produce_via(isolated, "during", 1, common::batch(&[b"x"])) == 0
    });
}

/// The active controller's own link cut: the majority elects another controller, which fences
/// the cut broker once its session ends (heartbeats no longer arrive); healed, it heartbeats
/// again and every node lists it.
#[test]
fn a_broker_cut_off_from_the_controller_is_fenced_and_returns_once_healed() {
    let _one_at_a_time = common::serial();
    let cluster = Cluster::start_in_namespaces(3, 1, &FAST_SESSIONS);
    cluster.wait_for_every_broker(Duration::from_secs(30));
    let cut = cluster.quorum_leader(&[0, 1, 2], Duration::from_secs(10));
    let majority: Vec<usize> = (0..3).filter(|&i| i != cut).collect();
    let rest: Vec<i32> = majority.iter().map(|&i| i as i32 + 1).collect();
    cluster.network().cut(cut);
    for &i in &majority {
        common::wait_until(Duration::from_secs(20), "the cut broker is fenced", || cluster.brokers_seen_by(i) == rest);
    }
    cluster.network().heal(cut);
    cluster.wait_for_every_broker(Duration::from_secs(20));
}

/// The Jepsen workload (clients in the test's namespace) over three brokers while one of them
/// is cut off until fenced, then healed: nothing acknowledged is lost, duplicated or reordered.
#[test]
fn the_workload_loses_nothing_while_a_broker_is_cut_off_and_healed() {
    let _one_at_a_time = common::serial();
    let cluster = Cluster::start_in_namespaces(3, 1, &FAST_SESSIONS);
    jepsen::through_a_broker_fault(&cluster, |c, i| c.network().cut(i), |c, i| c.network().heal(i));
}

/// Tests run in parallel: networks made at once each get a subnet of their own, and are gone
/// once dropped.
#[test]
fn networks_made_at_once_get_subnets_of_their_own() {
    let networks: Vec<common::netns::Network> = std::thread::scope(|s| {
        let making: Vec<_> = (0..4).map(|_| s.spawn(|| common::netns::Network::new(1))).collect();
        making.into_iter().map(|made| made.join().unwrap()).collect()
    });
    let mut subnets: Vec<_> = networks.iter().map(|n| n.host_address()).collect();
    subnets.sort();
    subnets.dedup();
    assert_eq!(subnets.len(), 4, "{subnets:?}");
    let namespaces = || std::process::Command::new("ip").args(["netns", "list"]).output().unwrap().stdout;
    let ours = format!("sluice-{}", std::process::id());
    drop(networks);
    assert!(!String::from_utf8_lossy(&namespaces()).contains(&ours));
}
