//! Metadata: the unfenced brokers (and this one), topics, partitions and their leaders; creates unknown
//! topics on the fly when `auto.create.topics.enable` and the client allow it.

use std::rc::Rc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse};

use super::{str_bytes, topic_name};
use crate::cluster::{MetadataImage, NO_LEADER, TopicMetadata, is_legal_topic_name};
use crate::shard::router::CreateTopics;
use crate::shard::router::NewTopic;
use crate::shard::{CONTROLLER_SHARD, Shard};

/// Sentinel for "authorized operations not asked for".
const AUTHORIZED_OPERATIONS_OMITTED: i32 = i32::MIN;

pub async fn handle(shard: &Rc<Shard>, request: MetadataRequest, version: i16) -> MetadataResponse {
    let node_id = BrokerId(shard.config.node_id);
    let mut image = shard.metadata();
    // v0 asks for all topics with an empty list; later versions with a null one.
    let wanted: Option<Vec<_>> = match request.topics {
        None => None,
        Some(topics) if topics.is_empty() && version == 0 => None,
        Some(topics) => Some(topics),
    };

    let topics = match wanted {
        None => image.topics.values().map(|t| describe(t, &image, node_id)).collect(),
        Some(requested) => {
            let auto_create =
                shard.config.auto_create_topics_enable && (version < 4 || request.allow_auto_topic_creation);
            let missing: Vec<String> = requested
                .iter()
                .filter_map(|t| t.name.as_ref().map(|n| n.0.to_string()))
                .filter(|n| image.topic(n).is_none() && is_legal_topic_name(n))
                .collect();
            if auto_create && !missing.is_empty() {
                let new_topics = missing
                    .into_iter()
                    .map(|name| NewTopic {
                        name,
                        partitions: shard.config.num_partitions,
                        replication_factor: 1,
                        assignments: None,
                        configs: Default::default(),
                    })
                    .collect();
                let create = CreateTopics { topics: new_topics, validate_only: false };
                // Results are read back from the new image below.
                shard.invoke_on(CONTROLLER_SHARD, create).await;
                image = shard.metadata();
            }
            requested
                .iter()
                .map(|t| {
                    let found = match &t.name {
                        Some(name) => image.topic(name.0.as_str()),
                        None => image.topic_by_id(t.topic_id),
                    };
                    // As Kafka: a name that can never exist is an invalid topic, not an unknown one.
                    let error = match &t.name {
                        Some(name) if !is_legal_topic_name(name.0.as_str()) => ResponseError::InvalidTopicException,
                        Some(_) => ResponseError::UnknownTopicOrPartition,
                        None => ResponseError::UnknownTopicId,
                    };
                    match found {
                        Some(topic) => describe(topic, &image, node_id),
                        None => MetadataResponseTopic::default()
                            .with_error_code(error.code())
                            .with_name(t.name.clone())
                            .with_topic_id(t.topic_id)
                            .with_topic_authorized_operations(AUTHORIZED_OPERATIONS_OMITTED),
                    }
                })
                .collect()
        }
    };

    // This node stays listed while fenced (between a restart's registration and its
    // unfencing): the client reached it, and librdkafka drops every broker it knows on an
    // answer that lists none, then can never ask again ("no usable brokers").
    let brokers = image
        .brokers
        .values()
        .filter(|b| !b.fenced || b.node_id == node_id.0)
        .map(|b| {
            MetadataResponseBroker::default()
                .with_node_id(BrokerId(b.node_id))
                .with_host(str_bytes(&b.host))
                .with_port(b.port)
                .with_rack(b.rack.as_deref().map(str_bytes))
        })
        .collect();
    MetadataResponse::default()
        .with_brokers(brokers)
        .with_cluster_id(Some(str_bytes(&image.cluster_id)))
        .with_controller_id(node_id)
        .with_topics(topics)
        .with_cluster_authorized_operations(AUTHORIZED_OPERATIONS_OMITTED)
}

/// A topic as the image has it: each partition's replicas, ISR, leader and leader epoch; no
/// leader (LEADER_NOT_AVAILABLE) while its in-sync replicas are all fenced, or when this node,
/// its leader, failed to open it (as Kafka answers for a replica on a failed log directory).
fn describe(topic: &TopicMetadata, image: &MetadataImage, node_id: BrokerId) -> MetadataResponseTopic {
    let brokers = |ids: &[i32]| ids.iter().copied().map(BrokerId).collect::<Vec<_>>();
    let live = |id: &i32| image.brokers.get(id).is_some_and(|b| !b.fenced);
    let partitions = topic
        .partitions
        .iter()
        .map(|p| {
            let mut offline: Vec<i32> = p.replicas.iter().copied().filter(|id| !live(id)).collect();
            if p.offline && !offline.contains(&node_id.0) {
                offline.push(node_id.0);
            }
            let partition = MetadataResponsePartition::default()
                .with_partition_index(p.partition)
                .with_leader_epoch(p.leader_epoch)
                .with_replica_nodes(brokers(&p.replicas))
                .with_isr_nodes(brokers(&p.isr))
                .with_offline_replicas(brokers(&offline));
            match p.leader == NO_LEADER || p.offline {
                false => partition.with_leader_id(BrokerId(p.leader)),
                true => partition
                    .with_error_code(ResponseError::LeaderNotAvailable.code())
                    .with_leader_id(BrokerId(NO_LEADER)),
            }
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(topic_name(&topic.name)))
        .with_topic_id(topic.topic_id)
        .with_is_internal(topic.name.starts_with("__"))
        .with_partitions(partitions)
        .with_topic_authorized_operations(AUTHORIZED_OPERATIONS_OMITTED)
}
