//! The leader's side of ISR changes: every shard checks the partitions it leads and proposes
//! to the active controller (Kafka's AlterPartition, through this broker's lifecycle on the
//! controller shard) to remove the in-sync followers not caught up within
//! `replica.lag.time.max.ms` and to add the others once caught up (`ReplicaSet::isr_candidates`,
//! only brokers the image shows unfenced).
//!
//! Invariants: one proposal per partition at a time, until the image carries a newer partition
//! epoch or the controller refuses it; the ISR in force is the image's, and while a proposal is
//! pending the high watermark counts the replicas of both (`Partition::isr_proposed`).

use std::rc::Rc;
use std::time::Duration;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::alter_partition_request::{BrokerState, PartitionData, TopicData};
use kafka_protocol::messages::alter_partition_response::PartitionData as PartitionAnswer;
use kafka_protocol::messages::{AlterPartitionRequest, BrokerId};

use crate::runtime::{now_ms, sleep};
use crate::shard::router::AlterIsr;
use crate::shard::{CONTROLLER_SHARD, Shard, TopicPartition};

/// The longest wait between two checks; a shorter `replica.lag.time.max.ms` checks at half it.
const CHECK_INTERVAL_MAX: Duration = Duration::from_millis(250);

/// One partition's proposed ISR, with the epochs its leader decided it in.
#[derive(Debug, Clone)]
pub struct IsrChange {
    pub topic_id: uuid::Uuid,
    pub partition: i32,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    pub isr: Vec<i32>,
}

/// Runs on every shard: proposes the ISR changes of the partitions it leads.
pub async fn maintain(shard: Rc<Shard>) {
    let lag_max_ms = shard.config.replica_lag_time_max_ms;
    let period = Duration::from_millis((lag_max_ms / 2).max(1) as u64).min(CHECK_INTERVAL_MAX);
    loop {
        sleep(period).await;
        let (partitions, changes) = proposals(&shard, lag_max_ms);
        if changes.is_empty() {
            continue;
        }
        let answers = shard.invoke_on(CONTROLLER_SHARD, AlterIsr { changes: changes.clone() }).await;
        for ((partition, change), answer) in partitions.iter().zip(&changes).zip(answers) {
            match answer {
                // The image will carry it; one that changed nothing settles now.
                Ok(epoch) if epoch > change.partition_epoch => {}
                Ok(_) => partition.isr_settled(now_ms()),
                Err(reason) => {
                    tracing::info!(partition = change.partition, isr = ?change.isr, %reason, "ISR change not made");
                    partition.isr_settled(now_ms());
                }
            }
        }
    }
}

/// The ISR changes to propose now, each marked pending on its partition.
fn proposals(shard: &Shard, lag_max_ms: i64) -> (Vec<crate::partition::Partition>, Vec<IsrChange>) {
    let image = shard.metadata();
    let now = now_ms();
    let table = shard.partitions.borrow();
    let (mut partitions, mut changes) = (Vec::new(), Vec::new());
    for (TopicPartition { topic, partition }, p) in table.iter() {
        let Some(meta) = image.topic(topic).and_then(|t| t.partitions.get(*partition as usize).map(|p| (t, p))) else {
            continue;
        };
        let (topic_meta, assigned) = meta;
        if assigned.leader != shard.config.node_id || !p.leads() || p.isr_pending() {
            continue;
        }
        let (to_remove, to_add) = p.isr_candidates(now, lag_max_ms);
        // KIP-841: a fenced or shutting-down broker may not join; the controller would refuse.
        let to_add: Vec<i32> =
            to_add.into_iter().filter(|id| image.brokers.get(id).is_some_and(|b| !b.fenced)).collect();
        if to_remove.is_empty() && to_add.is_empty() {
            continue;
        }
        let isr: Vec<i32> = assigned
            .replicas
            .iter()
            .copied()
            .filter(|r| (assigned.isr.contains(r) && !to_remove.contains(r)) || to_add.contains(r))
            .collect();
        p.isr_proposed(&isr, now);
        partitions.push(p.clone());
        changes.push(IsrChange {
            topic_id: topic_meta.topic_id,
            partition: *partition,
            leader_epoch: assigned.leader_epoch,
            partition_epoch: assigned.partition_epoch,
            isr,
        });
    }
    (partitions, changes)
}

/// On the controller shard: sends `changes` to the active controller in one AlterPartition;
/// each change's answer in order (the partition epoch after it, or why not).
pub async fn send(shard: &Shard, changes: Vec<IsrChange>) -> Vec<Result<i32, String>> {
    let Some(lifecycle) = shard.lifecycle.get().cloned() else {
        return changes.iter().map(|_| Err("this node is no broker".into())).collect();
    };
    let topics = changes
        .iter()
        .map(|c| {
            let members =
                c.isr.iter().map(|&id| BrokerState::default().with_broker_id(BrokerId(id)).with_broker_epoch(-1));
            let partition = PartitionData::default()
                .with_partition_index(c.partition)
                .with_leader_epoch(c.leader_epoch)
                .with_partition_epoch(c.partition_epoch)
                .with_new_isr_with_epochs(members.collect());
            TopicData::default().with_topic_id(c.topic_id).with_partitions(vec![partition])
        })
        .collect();
    let response = match lifecycle.alter_partition(AlterPartitionRequest::default().with_topics(topics)).await {
        Ok(response) => response,
        Err(reason) => return changes.iter().map(|_| Err(reason.clone())).collect(),
    };
    if let Some(error) = ResponseError::try_from_code(response.error_code) {
        return changes.iter().map(|_| Err(format!("{error:?}"))).collect();
    }
    // One topic entry per change, answered in request order.
    let answers =
        response.topics.iter().map(|t| (t.topic_id, t.partitions.first())).map(Some).chain(std::iter::repeat(None));
    let answered = |(c, answer): (&IsrChange, Option<(uuid::Uuid, Option<&PartitionAnswer>)>)| match answer {
        Some((topic_id, Some(a))) if topic_id == c.topic_id && a.partition_index == c.partition => {
            match ResponseError::try_from_code(a.error_code) {
                None => Ok(a.partition_epoch),
                Some(error) => Err(format!("{error:?}")),
            }
        }
        _ => Err("not answered".into()),
    };
    changes.iter().zip(answers).map(answered).collect()
}
