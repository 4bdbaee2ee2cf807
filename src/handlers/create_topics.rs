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
        // One broker: a replica count above one can never be met; -1 asks for the default.
        if topic.replication_factor > 1 {
            results.push(failure(&name, ResponseError::InvalidReplicationFactor, "this cluster has one broker"));
            continue;
        }
        if topic.replication_factor == 0 || topic.replication_factor < -1 {
            let message = "replication factor must be larger than 0, or -1 to use the default value";
            results.push(failure(&name, ResponseError::InvalidReplicationFactor, message));
            continue;
        }
        let partitions = match (topic.num_partitions, topic.assignments.len()) {
            (-1, 0) => shard.config.num_partitions,
            (-1, assigned) => assigned as i32,
            (n, _) => n,
        };
        let configs =
            topic.configs.into_iter().filter_map(|c| c.value.map(|v| (c.name.to_string(), v.to_string()))).collect();
        new_topics.push(NewTopic { name, partitions, configs });
    }
    let partitions_of: std::collections::HashMap<String, i32> =
        new_topics.iter().map(|t| (t.name.clone(), t.partitions)).collect();
    let create = CreateTopics { topics: new_topics, validate_only: request.validate_only };
    let outcomes = shard.invoke_on(CONTROLLER_SHARD, create).await;
    let image = shard.metadata();
    for (name, outcome) in outcomes {
        results.push(match outcome {
            Ok(()) => CreatableTopicResult::default()
                .with_name(super::topic_name(&name))
                .with_topic_id(image.topic(&name).map(|t| t.topic_id).unwrap_or_default())
                .with_num_partitions(partitions_of[&name])
                .with_replication_factor(1),
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
