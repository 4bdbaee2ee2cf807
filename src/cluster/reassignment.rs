//! Partition reassignment (AlterPartitionReassignments, ListPartitionReassignments) as KRaft's
//! controller does it, on the image: pure functions, run by the controller (`shard::controller`)
//! on the image it is about to propose.
//!
//! A reassignment to target replicas T of a partition whose replicas are R (before any
//! reassignment) makes its replicas T followed by R − T (Kafka's order: the target's stays, its
//! first is the preferred leader), `adding_replicas` T − R and `removing_replicas` R − T; the
//! ISR and leader stay. The new replicas are opened by their brokers and catch up as
//! followers, and their leader adds them to the ISR (AlterPartition); once every replica of T
//! is in the ISR, the controller completes it: replicas = T, the ISR keeps only T's members,
//! and a leader outside T hands over to the first of T in the ISR on an unfenced broker
//! (`election::change`, at a new leader epoch).
//! A target already in the ISR completes at once. A new target replaces one in progress
//! (counted from R again); none (null) cancels it: replicas go back to R, the ISR keeps only
//! R's members.
//!
//! Invariants: `adding_replicas` and `removing_replicas` are disjoint subsets of `replicas`, both
//! empty when no reassignment is in progress; `replicas` minus `removing_replicas` is the
//! target; every change bumps the partition epoch, and a change of leader the leader epoch.

use kafka_protocol::ResponseError;

use super::election::{self, Election};
use super::{MetadataImage, PartitionMetadata};

/// A per-partition refusal: Kafka's error and its message.
pub type Refusal = (ResponseError, String);

impl PartitionMetadata {
    pub fn is_reassigning(&self) -> bool {
        !self.adding_replicas.is_empty() || !self.removing_replicas.is_empty()
    }

    /// The replicas it will have once its reassignment completes (its replicas when none is in
    /// progress).
    pub fn target_replicas(&self) -> Vec<i32> {
        self.replicas.iter().copied().filter(|r| !self.removing_replicas.contains(r)).collect()
    }

    /// The replicas it had before its reassignment began.
    fn original_replicas(&self) -> Vec<i32> {
        self.replicas.iter().copied().filter(|r| !self.adding_replicas.contains(r)).collect()
    }
}

/// Starts, replaces or (with `target` None) cancels the reassignment of `partition` of
/// `topic` in `image`, completing it at once when its target is in sync already.
/// `allow_replication_factor_change` false refuses a target of another size (KIP-860).
pub fn alter(
    image: &mut MetadataImage,
    topic: &str,
    partition: i32,
    target: Option<Vec<i32>>,
    allow_replication_factor_change: bool,
) -> Result<(), Refusal> {
    let unknown = || (ResponseError::UnknownTopicOrPartition, format!("{topic}-{partition} does not exist"));
    let registered: Vec<i32> = image.brokers.keys().copied().collect();
    let unfenced: Vec<i32> = image.unfenced_brokers().map(|b| b.node_id).collect();
    let topic_metadata = image.topics.get_mut(topic).ok_or_else(unknown)?;
    let p = usize::try_from(partition).ok().and_then(|i| topic_metadata.partitions.get_mut(i)).ok_or_else(unknown)?;
    let Some(target) = target else {
        if !p.is_reassigning() {
            let message = format!("no reassignment of {topic}-{partition} is in progress");
            return Err((ResponseError::NoReassignmentInProgress, message));
        }
        let original = p.original_replicas();
        assign(p, original, Vec::new(), Vec::new(), &unfenced);
        return Ok(());
    };
    check_target(&target, &registered)?;
    let current = p.target_replicas();
    if !allow_replication_factor_change && target.len() != current.len() {
        let message = format!(
            "the replication factor would change from {} to {}, and allow_replication_factor_change is false",
            current.len(),
            target.len()
        );
        return Err((ResponseError::InvalidReplicationFactor, message));
    }
    if target.iter().all(|r| p.isr.contains(r)) {
        assign(p, target, Vec::new(), Vec::new(), &unfenced);
        return Ok(());
    }
    // Kafka's order: the target's (its first is the preferred leader), then those leaving.
    let original = p.original_replicas();
    let mut replicas = target.clone();
    replicas.extend(original.iter().filter(|r| !target.contains(r)));
    let adding = target.iter().copied().filter(|r| !original.contains(r)).collect();
    let removing = original.iter().copied().filter(|r| !target.contains(r)).collect();
    assign(p, replicas, adding, removing, &unfenced);
    Ok(())
}

/// Completes every reassignment whose target replicas are all in the ISR; returns how many.
pub fn complete_ready(image: &mut MetadataImage) -> usize {
    let unfenced: Vec<i32> = image.unfenced_brokers().map(|b| b.node_id).collect();
    let mut completed = 0;
    for p in image.topics.values_mut().flat_map(|t| t.partitions.iter_mut()) {
        let target = p.target_replicas();
        if p.is_reassigning() && target.iter().all(|r| p.isr.contains(r)) {
            assign(p, target, Vec::new(), Vec::new(), &unfenced);
            completed += 1;
        }
    }
    completed
}

/// Whether some reassignment could be completed now (a cheap check before taking the lock).
pub fn any_ready(image: &MetadataImage) -> bool {
    image
        .topics
        .values()
        .flat_map(|t| &t.partitions)
        .any(|p| p.is_reassigning() && p.target_replicas().iter().all(|r| p.isr.contains(r)))
}

/// Kafka's checks of a manual assignment: not empty, no broker twice, every broker registered.
fn check_target(target: &[i32], registered: &[i32]) -> Result<(), Refusal> {
    let refuse = |message: String| Err((ResponseError::InvalidReplicaAssignment, message));
    if target.is_empty() {
        return refuse("The manual partition assignment includes an empty replica list.".into());
    }
    for (i, broker) in target.iter().enumerate() {
        if target[..i].contains(broker) {
            return refuse(format!("The manual partition assignment includes the broker {broker} more than once."));
        }
        if !registered.contains(broker) {
            return refuse(format!(
                "The manual partition assignment includes broker {broker}, but no such broker is registered."
            ));
        }
    }
    Ok(())
}

/// Gives `p` these replicas (the ISR keeps only those among them, a replaced reassignment's
/// newcomers leaving too) and elects its leader among them, at a new partition epoch.
fn assign(p: &mut PartitionMetadata, replicas: Vec<i32>, adding: Vec<i32>, removing: Vec<i32>, unfenced: &[i32]) {
    let mut isr: Vec<i32> = p.isr.iter().copied().filter(|r| replicas.contains(r)).collect();
    if isr.is_empty() {
        // Only when cancelling a reassignment whose old replicas all left the ISR: the ISR is
        // never empty, and the first of them is as good a guess as Sluice can make.
        isr.push(replicas[0]);
    }
    let moved = (&replicas, &adding, &removing) != (&p.replicas, &p.adding_replicas, &p.removing_replicas);
    (p.replicas, p.adding_replicas, p.removing_replicas) = (replicas, adding, removing);
    let elected = election::change(p, isr, Election::Online, &|r| unfenced.contains(&r));
    if moved && !elected {
        p.partition_epoch += 1;
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::cluster::{BrokerRegistration, TopicMetadata, records};

    fn image(brokers: &[i32], replicas: Vec<i32>) -> MetadataImage {
        let mut image = MetadataImage::default();
        for &id in brokers {
            image.brokers.insert(id, BrokerRegistration::unfenced_for_test(id));
        }
        let partitions = vec![PartitionMetadata::new(0, 0, replicas)];
        let topic =
            TopicMetadata { name: "t".into(), topic_id: uuid::Uuid::new_v4(), partitions, configs: BTreeMap::new() };
        image.topics.insert("t".into(), topic);
        image
    }

    fn partition(image: &MetadataImage) -> &PartitionMetadata {
        &image.topics["t"].partitions[0]
    }

    /// The records that take `old` to `new` apply back to `new` (through the log).
    fn logged(old: &MetadataImage, new: &MetadataImage) {
        let mut applied = old.clone();
        records::apply(&mut applied, records::changes(old, new)).unwrap();
        assert_eq!(&applied, new);
    }

    #[test]
    fn a_move_waits_for_the_new_replica_in_sync_then_the_old_leader_leaves() {
        let mut image = image(&[1, 2, 3, 4], vec![1, 2, 3]);
        let before = image.clone();
        alter(&mut image, "t", 0, Some(vec![4, 2, 3]), false).unwrap();
        logged(&before, &image);
        // Metadata lists the union (Kafka's replicas during a reassignment); the leader stays.
        let p = partition(&image);
        assert_eq!(
            (p.replicas.clone(), p.adding_replicas.clone(), p.removing_replicas.clone()),
            (vec![4, 2, 3, 1], vec![4], vec![1])
        );
        assert_eq!((p.leader, p.leader_epoch, p.target_replicas()), (1, 0, vec![4, 2, 3]));
        // ... and nothing completes while 4 is not in sync.
        assert_eq!(complete_ready(&mut image), 0);
        assert!(!any_ready(&image));

        // 4 caught up (AlterPartition, the ISR's business): it completes, leadership moves.
        image.topics.get_mut("t").unwrap().partitions[0].isr.push(4);
        assert!(any_ready(&image));
        let before = image.clone();
        assert_eq!(complete_ready(&mut image), 1);
        logged(&before, &image);
        let p = partition(&image);
        // The new leader is the first of the target in sync (Kafka's election order).
        assert_eq!((p.replicas.clone(), p.isr.clone(), p.leader, p.leader_epoch), (vec![4, 2, 3], vec![2, 3, 4], 4, 1));
        assert_eq!(p.partition_epoch, 2, "one change to start, one to complete");
        assert!(!p.is_reassigning());
    }

    #[test]
    fn a_target_in_sync_already_completes_at_once() {
        let mut image = image(&[1, 2, 3], vec![1, 2, 3]);
        alter(&mut image, "t", 0, Some(vec![3, 2]), true).unwrap();
        let p = partition(&image);
        assert_eq!((p.replicas.clone(), p.isr.clone(), p.leader, p.leader_epoch), (vec![3, 2], vec![2, 3], 3, 1));
        assert!(!p.is_reassigning());
        // Reordering (a new preferred leader) changes neither the leader nor its epoch.
        let before = image.clone();
        alter(&mut image, "t", 0, Some(vec![2, 3]), false).unwrap();
        logged(&before, &image);
        let p = partition(&image);
        assert_eq!((p.replicas.clone(), p.leader, p.leader_epoch, p.partition_epoch), (vec![2, 3], 3, 1, 2));
    }

    #[test]
    fn cancelling_or_replacing_goes_back_to_the_old_replicas() {
        let mut image = image(&[1, 2, 3, 4], vec![1]);
        alter(&mut image, "t", 0, Some(vec![2]), false).unwrap();
        // Replaced: counted from [1] again; 2 is no longer being added.
        alter(&mut image, "t", 0, Some(vec![3]), false).unwrap();
        let p = partition(&image);
        assert_eq!(
            (p.replicas.clone(), p.adding_replicas.clone(), p.removing_replicas.clone()),
            (vec![3, 1], vec![3], vec![1])
        );
        // 3 joined the ISR, then the reassignment is cancelled: 3 leaves the ISR too.
        image.topics.get_mut("t").unwrap().partitions[0].isr.push(3);
        let before = image.clone();
        alter(&mut image, "t", 0, None, false).unwrap();
        logged(&before, &image);
        let p = partition(&image);
        assert_eq!((p.replicas.clone(), p.isr.clone(), p.leader), (vec![1], vec![1], 1));
        assert!(!p.is_reassigning());
        let error = alter(&mut image, "t", 0, None, false).unwrap_err();
        assert_eq!(error.0, ResponseError::NoReassignmentInProgress);
    }

    #[test]
    fn bad_targets_get_kafkas_errors() {
        let mut image = image(&[1, 2], vec![1]);
        let before = image.clone();
        let error = |image: &mut MetadataImage, topic, partition, target: Vec<i32>, allow| {
            alter(image, topic, partition, Some(target), allow).unwrap_err().0
        };
        assert_eq!(error(&mut image, "nope", 0, vec![1], true), ResponseError::UnknownTopicOrPartition);
        assert_eq!(error(&mut image, "t", 1, vec![1], true), ResponseError::UnknownTopicOrPartition);
        assert_eq!(error(&mut image, "t", -1, vec![1], true), ResponseError::UnknownTopicOrPartition);
        assert_eq!(error(&mut image, "t", 0, vec![], true), ResponseError::InvalidReplicaAssignment);
        assert_eq!(error(&mut image, "t", 0, vec![2, 2], true), ResponseError::InvalidReplicaAssignment);
        assert_eq!(error(&mut image, "t", 0, vec![7], true), ResponseError::InvalidReplicaAssignment);
        assert_eq!(error(&mut image, "t", 0, vec![1, 2], false), ResponseError::InvalidReplicationFactor);
        assert_eq!(image, before, "nothing changed");
    }
}
