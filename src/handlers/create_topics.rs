//! CreateTopics: validated, placed and applied by the active controller (forwarded there by
//! the controller shard of any other broker, `controller::create_topics`), which also resolves
//! the defaults (-1: `num.partitions`, one replica) with its own settings, as in KRaft.

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
        // -1 (the defaults) is resolved by the active controller, with its settings, as in KRaft.
        let partitions = if assigned { assignments.len() as i32 } else { topic.num_partitions };
        let assignments = assigned
            .then(|| assignments.into_iter().map(|(_, ids)| ids.into_iter().map(|id| id.0).collect()).collect());
        let replication_factor = topic.replication_factor;
        let configs =
            topic.configs.into_iter().filter_map(|c| c.value.map(|v| (c.name.to_string(), v.to_string()))).collect();
        new_topics.push(NewTopic { name, partitions, replication_factor, assignments, configs });
    }
    // A validation only makes nothing: it reports what was asked.
    let asked: std::collections::HashMap<String, (i32, i16)> = new_topics
        .iter()
        .map(|t| {
            let replicas =
                t.assignments.as_ref().and_then(|a| a.first()).map_or(t.replication_factor, |r| r.len() as i16);
            (t.name.clone(), (t.partitions, replicas))
        })
        .collect();
    let create = CreateTopics { topics: new_topics, validate_only: request.validate_only };
    let outcomes = shard.invoke_on(CONTROLLER_SHARD, create).await;
    let image = shard.metadata();
    for (name, outcome) in outcomes {
        // As the controller made it.
        let topic = image.topic(&name).filter(|_| !request.validate_only);
        let (partitions, replicas) = match topic {
            Some(t) => (t.partitions.len() as i32, t.partitions.first().map_or(0, |p| p.replicas.len() as i16)),
            None => asked[&name],
        };
        results.push(match outcome {
            Ok(()) => CreatableTopicResult::default()
                .with_name(super::topic_name(&name))
                .with_topic_id(topic.map(|t| t.topic_id).unwrap_or_default())
                .with_num_partitions(partitions)
                .with_replication_factor(replicas),
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
