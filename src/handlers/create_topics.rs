//! CreateTopics: validated and applied by the controller shard.

use std::rc::Rc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse};

use super::str_bytes;
use crate::shard::router::CreateTopics;
use crate::shard::router::NewTopic;
use crate::shard::{CONTROLLER_SHARD, Shard};

pub async fn handle(shard: &Rc<Shard>, request: CreateTopicsRequest) -> CreateTopicsResponse {
    let mut results = Vec::new();
    let mut new_topics = Vec::new();
    for topic in request.topics {
        let name = topic.name.0.to_string();
        // -1 asks for the default (Kafka's default.replication.factor, 1); the controller
        // checks the rest against the brokers.
        if topic.replication_factor == 0 || topic.replication_factor < -1 {
            let message = "replication factor must be larger than 0, or -1 to use the default value";
            results.push(failure(&name, ResponseError::InvalidReplicationFactor, message));
            continue;
        }
        let assigned = !topic.assignments.is_empty();
        if assigned && (topic.num_partitions != -1 || topic.replication_factor != -1) {
            // Kafka's words.
            let message = "Both numPartitions or replicationFactor and replicasAssignments were set. Both cannot be used at the same time.";
            results.push(failure(&name, ResponseError::InvalidRequest, message));
            continue;
        }
        let mut assignments: Vec<_> =
            topic.assignments.into_iter().map(|a| (a.partition_index, a.broker_ids)).collect();
        assignments.sort_by_key(|(partition, _)| *partition);
        if assignments.iter().enumerate().any(|(i, (partition, _))| *partition != i as i32) {
            let message = "partitions must be numbered from 0 without gaps";
            results.push(failure(&name, ResponseError::InvalidReplicaAssignment, message));
            continue;
        }
        let partitions = match topic.num_partitions {
            -1 if assigned => assignments.len() as i32,
            -1 => shard.config.num_partitions,
            n => n,
        };
        let assignments = assigned
            .then(|| assignments.into_iter().map(|(_, ids)| ids.into_iter().map(|id| id.0).collect()).collect());
        let replication_factor = if topic.replication_factor == -1 { 1 } else { topic.replication_factor };
        let configs =
            topic.configs.into_iter().filter_map(|c| c.value.map(|v| (c.name.to_string(), v.to_string()))).collect();
        new_topics.push(NewTopic { name, partitions, replication_factor, assignments, configs });
    }
    let partitions_of: std::collections::HashMap<String, i32> =
        new_topics.iter().map(|t| (t.name.clone(), t.partitions)).collect();
    let replicas_of: std::collections::HashMap<String, i16> = new_topics
        .iter()
        .map(|t| {
            (
                t.name.clone(),
                t.assignments.as_ref().and_then(|a| a.first()).map_or(t.replication_factor, |r| r.len() as i16),
            )
        })
        .collect();
    let create = CreateTopics { topics: new_topics, validate_only: request.validate_only };
    let outcomes = shard.invoke_on(CONTROLLER_SHARD, create).await;
    let image = shard.metadata();
    for (name, outcome) in outcomes {
        results.push(match outcome {
            Ok(()) => CreatableTopicResult::default()
                .with_name(super::topic_name(&name))
                .with_topic_id(image.topic(&name).map(|t| t.topic_id).unwrap_or_default())
                .with_num_partitions(partitions_of[&name])
                .with_replication_factor(replicas_of[&name]),
            Err((error, message)) => failure(&name, error, &message),
        });
    }
    CreateTopicsResponse::default().with_topics(results)
}

fn failure(name: &str, error: ResponseError, message: &str) -> CreatableTopicResult {
    CreatableTopicResult::default()
        .with_name(super::topic_name(name))
        .with_error_code(error.code())
        .with_error_message(Some(str_bytes(message)))
        .with_num_partitions(-1)
        .with_replication_factor(-1)
}
