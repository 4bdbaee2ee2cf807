//! A follower whose log ends below its leader's log start (DeleteRecords ran on the leader
//! while the follower was down): the leader answers its fetch OFFSET_OUT_OF_RANGE, and the
//! follower, as Kafka's, empties its log, starts it again at the leader's log start, catches
//! up from there and rejoins the ISR, its log then the leader's from the log start on.

mod common;

use std::time::Duration;

use common::cluster::{Cluster, FAST_SESSIONS};

const TOPIC: &str = "catchup";

/// The records of the partition's segment files on node `i`, as their bytes hold them.
fn records_on_disk(cluster: &Cluster, i: usize) -> Vec<(i64, Vec<u8>)> {
    let dir = cluster.node(i).data_dir().join(format!("{TOPIC}-0"));
    let mut logs: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    logs.sort();
    logs.iter().flat_map(|p| common::decode(&bytes::Bytes::from(std::fs::read(p).unwrap()))).collect()
}

/// Produces `value` with acks=all to node `leader`, retrying while it opens the partition.
fn produce(cluster: &Cluster, leader: usize, value: &str) {
    common::wait_until(Duration::from_secs(10), "the leader takes a write", || {
        cluster.connect(leader).produce(TOPIC, 0, common::batch(&[value.as_bytes()]), -1).0 == 0
    });
}

#[test]
fn a_follower_below_the_leaders_log_start_starts_its_log_there_and_rejoins_the_isr() {
    let _serial = common::serial();
    let mut cluster = Cluster::start(3, 1, &FAST_SESSIONS);
    cluster.wait_for_every_broker(Duration::from_secs(30));
    cluster.create_topic_everywhere(TOPIC, 1, 3, &[("segment.bytes", "1024")]);
    let mut leader = None;
    common::wait_until(Duration::from_secs(20), "every replica is in the ISR", || {
        let (id, isr) = cluster.leader_and_isr_seen_by(0, TOPIC, 0);
        leader = usize::try_from(id - 1).ok();
        isr == [1, 2, 3]
    });
    let leader = leader.expect("a leader");
    for i in 0..10 {
        produce(&cluster, leader, &format!("before-{i}"));
    }

    // A follower that is not the metadata leader goes down; once fenced, it leaves the ISR.
    let controller = cluster.quorum_leader(&[0, 1, 2], Duration::from_secs(10));
    let follower = (0..3).find(|&i| i != leader && i != controller).expect("a third node");
    cluster.node_mut(follower).kill9();
    let without: Vec<i32> = (1..=3).filter(|&id| id != follower as i32 + 1).collect();
    common::wait_until(Duration::from_secs(20), "the killed follower leaves the ISR", || {
        cluster.leader_and_isr_seen_by(leader, TOPIC, 0).1 == without
    });
    for i in 0..20 {
        produce(&cluster, leader, &format!("while-down-{i}"));
    }
    let mut admin = sluice::client::Client::connect(cluster.node(leader).addr()).unwrap();
    assert_eq!(admin.delete_records(TOPIC, 0, 25).unwrap(), 25);
    assert_eq!(admin.list_offset(TOPIC, 0, -2).unwrap(), 25);

    // Back, its log ends at 10, below the leader's start.
    cluster.node_mut(follower).restart();
    common::wait_until(Duration::from_secs(30), "the follower rejoins the ISR", || {
        cluster.leader_and_isr_seen_by(leader, TOPIC, 0).1 == [1, 2, 3]
    });
    produce(&cluster, leader, "after");
    let mut leader_records = Vec::new();
    common::wait_until(Duration::from_secs(10), "the follower has every record the leader has", || {
        leader_records = cluster.connect(leader).fetch_from(TOPIC, 0, 25);
        records_on_disk(&cluster, follower) == leader_records
    });
    assert_eq!(leader_records.first().map(|r| r.0), Some(25));
    assert_eq!(leader_records.last().map(|r| r.1.as_slice()), Some(&b"after"[..]));
    let start = std::fs::read_to_string(cluster.node(follower).data_dir().join(format!("{TOPIC}-0/log-start-offset")));
    assert_eq!(start.unwrap().trim(), "25");
    assert!(cluster.node(follower).stderr_text().contains("started it again there"));
}
