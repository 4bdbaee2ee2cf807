//! Real network partitions: every node in its own network namespace (`common::netns`), one
//! node's link cut and healed. A metadata leader cut off commits nothing while the majority
//! elects another, and converges once healed; a broker cut off from the active controller is
//! fenced, and unfenced once healed; a partition leader cut off under the Jepsen workload over
//! three replicas acknowledges nothing, the majority elects other leaders, and once healed
//! it cuts its unreplicated tail and the cluster converges, nothing acknowledged lost. Needs root and iproute2 (CI runs as root).

mod common;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::time::Duration;

use common::cluster::{Cluster, NOT_CONTROLLER, REQUEST_TIMED_OUT};
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
/// the cut broker once its session ends (heartbeats no longer arrive), and only it: the other
/// brokers move their heartbeats to the new controller in time, so the partitions of three
/// replicas that the cut broker led get leaders among them (were they fenced too, those
/// partitions would keep the cut broker as their last in-sync replica, and no leader).
/// Healed, it heartbeats again and every node lists it.
#[test]
fn a_broker_cut_off_from_the_controller_is_fenced_and_returns_once_healed() {
    let _one_at_a_time = common::serial();
    // Sessions shorter than a call to a silent controller may wait for its answer (3 s): only
    // brokers that give it up once they hear of the new controller stay alive on it.
    let sessions = ["--set", "broker.heartbeat.interval.ms=200", "--set", "broker.session.timeout.ms=1500"];
    let cluster = Cluster::start_in_namespaces(3, 1, &sessions);
    cluster.wait_for_every_broker(Duration::from_secs(30));
    cluster.create_topic_everywhere("replicated", 6, 3, &[]);
    let cut = cluster.quorum_leader(&[0, 1, 2], Duration::from_secs(10));
    let majority: Vec<usize> = (0..3).filter(|&i| i != cut).collect();
    let rest: Vec<i32> = majority.iter().map(|&i| i as i32 + 1).collect();
    let led_by_cut =
        cluster.partitions_seen_by(majority[0], "replicated").iter().filter(|p| p.leader == cut as i32 + 1).count();
    assert!(led_by_cut > 0, "the controller's broker leads partitions of \"replicated\"");
    cluster.network().cut(cut);
    for &i in &majority {
        common::wait_until(Duration::from_secs(20), "the cut broker is fenced", || cluster.brokers_seen_by(i) == rest);
        common::wait_until(Duration::from_secs(20), "every partition is led by the majority, in sync", || {
            cluster.partitions_seen_by(i, "replicated").iter().all(|p| rest.contains(&p.leader) && p.isr == rest)
        });
    }
    cluster.network().heal(cut);
    cluster.wait_for_every_broker(Duration::from_secs(20));
}

/// Issue 11: a real network partition under the Jepsen workload (clients in the test's
/// namespace) over three replicas (`min.insync.replicas=2`): a partition leader's link is cut.
/// (a) A client inside the isolated node's namespace sends it acks=all writes: it appends them
/// (its log end passes what the ISR has) but acknowledges none. (b) The majority fences it and
/// elects other leaders in newer epochs. (c) Healed, it cuts that tail (its epoch history is the
/// new leaders', whose new epochs start below the tail's end), every node reports the same
/// leaders and ISRs with it back in sync as a follower, none of its unacknowledged values is
/// ever read, and nothing acknowledged is lost.
#[test]
fn a_leader_cut_off_acknowledges_nothing_and_the_cluster_converges_once_healed() {
    let _one_at_a_time = common::serial();
    let cluster = Cluster::start_in_namespaces(3, 1, &jepsen::fast_failover());
    // The isolated leader's log end, per partition it led, after it took the writes.
    let tails = RefCell::new(BTreeMap::new());
    let (broken, moved) = jepsen::through_a_broker_fault(
        &cluster,
        3,
        &[("min.insync.replicas", "2")],
        |cluster, i| {
            let (request, led) = jepsen::writes_to_what_it_leads(cluster, i, "isolated");
            cluster.network().cut(i);
            let mut inside = cluster.connect(i);
            let response = inside.send(&request, 9);
            let errors: Vec<i16> = response.responses[0].partition_responses.iter().map(|p| p.error_code).collect();
            assert_eq!(errors.len(), led.len());
            assert!(errors.iter().all(|&e| e != 0), "the isolated leader acknowledged acks=all writes: {errors:?}");
            for p in &led {
                let (error, _, log_end_offset) =
                    inside.end_offset_for_epoch(jepsen::TOPIC, p.partition, p.leader_epoch);
                assert_eq!(error, 0);
                tails.borrow_mut().insert(p.partition, log_end_offset);
            }
        },
        |cluster, i, ()| cluster.network().heal(i),
    );
    for jepsen::Moved { after, .. } in &moved {
        let epochs = jepsen::leader_epochs(&cluster, broken, after.partition);
        let start = epochs.iter().find(|&&(epoch, _)| epoch == after.leader_epoch).map(|&(_, start)| start);
        let tail = tails.borrow()[&after.partition];
        assert!(
            start.is_some_and(|start| start < tail),
            "partition {}: the new epoch {} starts at {start:?}, not below the isolated leader's log end {tail}: {epochs:?}",
            after.partition,
            after.leader_epoch
        );
    }
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
