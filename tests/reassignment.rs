//! Partition reassignment (AlterPartitionReassignments 45, ListPartitionReassignments 46) over a
//! cluster of three nodes: a move to a broker that cannot catch up (paused) starts (replicas the
//! union, listed as in progress), refusals carry Kafka's per-partition errors, and a
//! cancellation takes it back. `sluice cluster reassign` and
//! `sluice cluster reassignments` drive the same APIs. A fourth broker joins and a partition
//! with three replicas moves onto it, its leader leaving, under the Jepsen workload: nothing
//! acknowledged is lost, and the old leader's files are gone.

mod common;

use std::process::Command;
use std::time::Duration;

use common::cluster::{Cluster, FAST_SESSIONS};
use common::jepsen::{self, Workload};
use kafka_protocol::messages::alter_partition_reassignments_request::{ReassignablePartition, ReassignableTopic};
use kafka_protocol::messages::list_partition_reassignments_response::OngoingTopicReassignment;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, BrokerId, ListPartitionReassignmentsRequest, MetadataRequest,
};

const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const INVALID_REPLICA_ASSIGNMENT: i16 = 39;
const NO_REASSIGNMENT_IN_PROGRESS: i16 = 85;

/// The per-partition error codes of one AlterPartitionReassignments through node `via`.
fn alter(cluster: &Cluster, via: usize, targets: &[(&str, i32, Option<&[i32]>)]) -> Vec<i16> {
    let topics = targets
        .iter()
        .map(|(topic, partition, replicas)| {
            let replicas = replicas.map(|r| r.iter().map(|&id| BrokerId(id)).collect());
            let partition = ReassignablePartition::default().with_partition_index(*partition).with_replicas(replicas);
            ReassignableTopic::default().with_name(common::topic_name(topic)).with_partitions(vec![partition])
        })
        .collect();
    let request = AlterPartitionReassignmentsRequest::default().with_topics(topics);
    let response = cluster.connect(via).send(&request, 0);
    assert_eq!(response.error_code, 0);
    response.responses.iter().flat_map(|t| t.partitions.iter().map(|p| p.error_code)).collect()
}

fn list(cluster: &Cluster, via: usize) -> Vec<OngoingTopicReassignment> {
    cluster.connect(via).send(&ListPartitionReassignmentsRequest::default().with_topics(None), 0).topics
}

/// Sessions long enough that a paused broker stays registered and unfenced through a test.
const LONG_SESSIONS: [&str; 2] = ["--set", "broker.session.timeout.ms=60000"];

/// A node (index) that neither leads `topic`-0 nor the metadata quorum: pausing it stops
/// neither the partition nor the controller.
fn bystander(cluster: &Cluster, topic: &str) -> usize {
    let (leader, _, _) = described(cluster, 0, topic);
    let controller = cluster.quorum_leader(&[0, 1, 2], Duration::from_secs(10));
    (0..3).find(|&i| i as i32 + 1 != leader && i != controller).expect("three nodes")
}

/// (leader, replicas, ISR) of `topic`-0 as node `via`'s Metadata reports it.
fn described(cluster: &Cluster, via: usize, topic: &str) -> (i32, Vec<i32>, Vec<i32>) {
    let wanted = MetadataRequestTopic::default().with_name(Some(common::topic_name(topic)));
    let request = MetadataRequest::default().with_topics(Some(vec![wanted]));
    let response = cluster.connect(via).send(&request, 12);
    let p = &response.topics[0].partitions[0];
    let ids = |ids: &[BrokerId]| ids.iter().map(|id| id.0).collect::<Vec<_>>();
    (p.leader_id.0, ids(&p.replica_nodes), ids(&p.isr_nodes))
}

#[test]
fn a_move_starts_is_listed_and_a_cancel_takes_it_back() {
    let _one_at_a_time = common::serial();
    let cluster = Cluster::start(3, 1, &LONG_SESSIONS);
    cluster.create_topic(0, "moving", 1, Duration::from_secs(30));
    cluster.wait_for_every_broker(Duration::from_secs(10));
    let (leader, replicas, _) = described(&cluster, 0, "moving");
    assert_eq!(replicas, [leader]);
    // Once its leader has opened it (just after the topic is in the image).
    common::wait_until(Duration::from_secs(10), "a first produce", || {
        cluster.produce_via(0, "moving", 0, common::batch(&[b"before"])) == 0
    });
    // The newcomer is paused: it cannot catch up, so the move stays in progress.
    let paused = bystander(&cluster, "moving");
    let other = paused as i32 + 1;
    let alive: Vec<usize> = (0..3).filter(|&i| i != paused).collect();
    let (via, then) = (alive[0], alive[1]);
    cluster.node(paused).pause();

    // Kafka's refusals, each for its own partition.
    let refused = alter(
        &cluster,
        via,
        &[
            ("nope", 0, Some(&[other])),
            ("moving", 7, Some(&[other])),
            ("moving", 0, Some(&[])),
            ("moving", 0, Some(&[42])),
            ("moving", 0, None),
        ],
    );
    assert_eq!(
        refused,
        [
            UNKNOWN_TOPIC_OR_PARTITION,
            UNKNOWN_TOPIC_OR_PARTITION,
            INVALID_REPLICA_ASSIGNMENT,
            INVALID_REPLICA_ASSIGNMENT,
            NO_REASSIGNMENT_IN_PROGRESS
        ]
    );
    assert!(list(&cluster, via).is_empty());

    // The move begins: the union of replicas, the target's first, the leader unchanged; the
    // reassignment is listed on every node (at once by the node that took it, once they
    // applied it by the others).
    assert_eq!(alter(&cluster, via, &[("moving", 0, Some(&[other]))]), [0]);
    assert_eq!(described(&cluster, via, "moving"), (leader, vec![other, leader], vec![leader]));
    for via in [via, then] {
        common::wait_until(Duration::from_secs(10), "the move is listed", || !list(&cluster, via).is_empty());
        let ongoing = list(&cluster, via);
        assert_eq!(ongoing.len(), 1);
        let p = &ongoing[0].partitions[0];
        let ids = |ids: &[BrokerId]| ids.iter().map(|id| id.0).collect::<Vec<_>>();
        assert_eq!(
            (ongoing[0].name.0.as_str(), ids(&p.replicas), ids(&p.adding_replicas), ids(&p.removing_replicas)),
            ("moving", vec![other, leader], vec![other], vec![leader])
        );
    }
    // Its old leader still takes writes meanwhile.
    assert_eq!(cluster.produce_via(via, "moving", 0, common::batch(&[b"during"])), 0);

    // Cancelled: back to the old replica alone.
    assert_eq!(alter(&cluster, then, &[("moving", 0, None)]), [0]);
    assert!(list(&cluster, then).is_empty());
    assert_eq!(described(&cluster, then, "moving"), (leader, vec![leader], vec![leader]));
    cluster.node(paused).resume();
    let read = cluster.connect(leader as usize - 1).fetch_all("moving", 0);
    assert_eq!(read.iter().map(|(_, v)| v.as_slice()).collect::<Vec<_>>(), [b"before".as_slice(), b"during"]);
}

#[test]
fn the_cli_starts_lists_and_cancels_a_reassignment() {
    let _one_at_a_time = common::serial();
    let cluster = Cluster::start(3, 1, &LONG_SESSIONS);
    cluster.create_topic(0, "cli", 1, Duration::from_secs(30));
    cluster.wait_for_every_broker(Duration::from_secs(10));
    let (leader, _, _) = described(&cluster, 0, "cli");
    // The newcomer is paused, so that the move stays in progress.
    let paused = bystander(&cluster, "cli");
    let other = paused as i32 + 1;
    let via = (0..3).find(|&i| i != paused).unwrap();
    cluster.node(paused).pause();
    let sluice = |args: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["cluster"])
            .args(args)
            .args(["--bootstrap", cluster.node(via).addr()])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&output.stdout).to_string() + &String::from_utf8_lossy(&output.stderr);
        (output.status.success(), text)
    };
    let (ok, text) = sluice(&["reassign", "--topic", "cli", "--partition", "0", "--replicas", &other.to_string()]);
    assert!(ok, "{text}");
    let (ok, text) = sluice(&["reassignments"]);
    assert!(ok, "{text}");
    let expected = format!("cli\t0\tReplicas: {other},{leader}\tAdding: {other}\tRemoving: {leader}");
    assert!(text.contains(&expected), "{text}");
    // A refusal is the command's failure, with Kafka's error.
    let (ok, text) = sluice(&["reassign", "--topic", "cli", "--partition", "0", "--replicas", "9"]);
    assert!(!ok && text.contains("error code 39") && text.contains("no such broker"), "{text}");
    let (ok, text) = sluice(&["reassign", "--topic", "cli", "--partition", "0", "--cancel"]);
    assert!(ok, "{text}");
    let (ok, text) = sluice(&["reassignments"]);
    assert!(ok && text.contains("No reassignment in progress"), "{text}");
    cluster.node(paused).resume();
}

#[test]
fn a_partition_moves_onto_a_fourth_broker_under_load_and_loses_nothing() {
    let _one_at_a_time = common::serial();
    let mut cluster = Cluster::start(3, 1, &FAST_SESSIONS);
    cluster.wait_for_every_broker(Duration::from_secs(30));
    cluster.create_topic_everywhere("growing", 1, 3, &[]);
    let mut workload = Workload::start(&cluster.bootstrap(), "growing");
    workload.produce("p", 500);
    common::wait_until(Duration::from_secs(60), "1000 acknowledged", || workload.acked() >= 1000);

    // Broker 4 joins; the partition moves to it and the two replicas that do not lead.
    let joined = cluster.add_broker(&FAST_SESSIONS);
    common::wait_until(Duration::from_secs(20), "broker 4 is unfenced", || cluster.brokers_seen_by(0) == [1, 2, 3, 4]);
    let (leader, replicas, _) = described(&cluster, 0, "growing");
    let mut target = vec![4];
    target.extend(replicas.iter().filter(|&&r| r != leader));
    assert_eq!(alter(&cluster, 0, &[("growing", 0, Some(&target))]), [0]);
    common::wait_until(Duration::from_secs(60), "the move completes", || list(&cluster, 0).is_empty());
    // Once in sync, the new replica leads: it was the first of the target.
    assert_eq!(described(&cluster, 0, "growing").0, 4);
    let moved = workload.acked();
    common::wait_until(Duration::from_secs(60), "1000 more acknowledged after the move", || {
        workload.acked() >= moved + 1000
    });
    let old = cluster.node(leader as usize - 1).data_dir().join("growing-0");
    common::wait_until(Duration::from_secs(10), "the old leader's files are deleted", || !old.exists());
    assert!(cluster.node(joined).data_dir().join("growing-0").exists());

    let acked = workload.acked();
    let check = workload.finish(|| {
        (0..cluster.len()).map(|i| format!("node {} stderr:\n{}", i + 1, cluster.node(i).stderr_text())).collect()
    });
    jepsen::assert_clean(&check, acked);
    println!("moved under load: {check}");
}
