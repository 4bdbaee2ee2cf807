//! Partition reassignment (AlterPartitionReassignments 45, ListPartitionReassignments 46) over a
//! cluster of three nodes: a move starts (replicas the union, the newcomer opened on its
//! broker, listed as in progress), refusals carry Kafka's per-partition errors, and a
//! cancellation takes it back, the newcomer's files deleted. `sluice cluster reassign` and
//! `sluice cluster reassignments` drive the same APIs.

mod common;

use std::process::Command;
use std::time::Duration;

use common::cluster::Cluster;
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
    let cluster = Cluster::start(3, 1, &[]);
    cluster.create_topic(0, "moving", 1, Duration::from_secs(30));
    common::wait_until(Duration::from_secs(10), "every broker registered", || cluster.brokers_seen_by(0).len() == 3);
    let (leader, replicas, _) = described(&cluster, 0, "moving");
    assert_eq!(replicas, [leader]);
    let other = (1..=3).find(|&id| id != leader).unwrap();
    let other_dir = cluster.node(other as usize - 1).data_dir().join("moving-0");
    assert_eq!(cluster.produce_via(0, "moving", 0, common::batch(&[b"before"])), 0);

    // Kafka's refusals, each for its own partition.
    let refused = alter(
        &cluster,
        1,
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
    assert!(list(&cluster, 0).is_empty());

    // The move begins: the union of replicas, the target's first, the leader unchanged; the
    // newcomer opens the partition on its broker and the reassignment is listed everywhere
    // (at once by the node that took it, once they applied it by the others).
    assert_eq!(alter(&cluster, 1, &[("moving", 0, Some(&[other]))]), [0]);
    assert_eq!(described(&cluster, 1, "moving"), (leader, vec![other, leader], vec![leader]));
    for via in [1, 0, 2] {
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
    common::wait_until(Duration::from_secs(10), "the new replica's broker opens it", || other_dir.exists());
    // Its old leader still takes writes meanwhile.
    assert_eq!(cluster.produce_via(0, "moving", 0, common::batch(&[b"during"])), 0);

    // Cancelled: back to the old replica alone; the newcomer's files go.
    assert_eq!(alter(&cluster, 2, &[("moving", 0, None)]), [0]);
    assert!(list(&cluster, 2).is_empty());
    assert_eq!(described(&cluster, 2, "moving"), (leader, vec![leader], vec![leader]));
    common::wait_until(Duration::from_secs(10), "the cancelled replica's files are deleted", || !other_dir.exists());
    let read = cluster.connect(leader as usize - 1).fetch_all("moving", 0);
    assert_eq!(read.iter().map(|(_, v)| v.as_slice()).collect::<Vec<_>>(), [b"before".as_slice(), b"during"]);
}

#[test]
fn the_cli_starts_lists_and_cancels_a_reassignment() {
    let _one_at_a_time = common::serial();
    let cluster = Cluster::start(2, 1, &[]);
    cluster.create_topic(0, "cli", 1, Duration::from_secs(30));
    common::wait_until(Duration::from_secs(10), "both brokers registered", || cluster.brokers_seen_by(0).len() == 2);
    let (leader, _, _) = described(&cluster, 0, "cli");
    let other = 3 - leader;
    let sluice = |args: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["cluster"])
            .args(args)
            .args(["--bootstrap", cluster.node(0).addr()])
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
}
