//! ListPartitionReassignments (46): the reassignments in progress, from this shard's copy of
//! the image: every one (topics null), or those among the partitions asked about (others,
//! unknown ones included, are left out, as Kafka does).

use kafka_protocol::messages::list_partition_reassignments_response::{
    OngoingPartitionReassignment, OngoingTopicReassignment,
};
use kafka_protocol::messages::{BrokerId, ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse};

use super::topic_name;
use crate::cluster::{PartitionMetadata, TopicMetadata};
use crate::shard::Shard;

pub fn handle(shard: &Shard, request: ListPartitionReassignmentsRequest) -> ListPartitionReassignmentsResponse {
    let image = shard.metadata();
    let topics = match request.topics {
        None => image.topics.values().filter_map(|topic| ongoing(topic, |_| true)).collect(),
        Some(asked) => asked
            .iter()
            .filter_map(|wanted| {
                let topic = image.topic(&wanted.name.0)?;
                ongoing(topic, |p| wanted.partition_indexes.contains(&p.partition))
            })
            .collect(),
    };
    ListPartitionReassignmentsResponse::default().with_topics(topics)
}

/// `topic`'s partitions chosen by `wanted` that are being reassigned; none: `None`.
fn ongoing(topic: &TopicMetadata, wanted: impl Fn(&PartitionMetadata) -> bool) -> Option<OngoingTopicReassignment> {
    let brokers = |ids: &[i32]| ids.iter().map(|&id| BrokerId(id)).collect::<Vec<_>>();
    let partitions: Vec<OngoingPartitionReassignment> = topic
        .partitions
        .iter()
        .filter(|p| p.is_reassigning() && wanted(p))
        .map(|p| {
            OngoingPartitionReassignment::default()
                .with_partition_index(p.partition)
                .with_replicas(brokers(&p.replicas))
                .with_adding_replicas(brokers(&p.adding_replicas))
                .with_removing_replicas(brokers(&p.removing_replicas))
        })
        .collect();
    (!partitions.is_empty())
        .then(|| OngoingTopicReassignment::default().with_name(topic_name(&topic.name)).with_partitions(partitions))
}
