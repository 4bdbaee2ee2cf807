//! DeleteTopics: applied by the controller shard; owners delete the partition directories.

use std::rc::Rc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{DeleteTopicsRequest, DeleteTopicsResponse};

use super::{str_bytes, topic_name};
use crate::shard::router::DeleteTopics;
use crate::shard::{CONTROLLER_SHARD, Shard};

pub async fn handle(shard: &Rc<Shard>, request: DeleteTopicsRequest) -> DeleteTopicsResponse {
    let image = shard.metadata();
    let mut results = Vec::new();
    let mut names = Vec::new();
    // v6 names topics by name or id; earlier versions by name only.
    for name in request.topic_names {
        names.push(name.0.to_string());
    }
    for state in request.topics {
        match state.name {
            Some(name) => names.push(name.0.to_string()),
            None => match image.topic_by_id(state.topic_id) {
                Some(topic) => names.push(topic.name.clone()),
                None => results.push(
                    DeletableTopicResult::default()
                        .with_topic_id(state.topic_id)
                        .with_error_code(ResponseError::UnknownTopicId.code()),
                ),
            },
        }
    }
    let outcomes = shard.invoke_on(CONTROLLER_SHARD, DeleteTopics { topics: names }).await;
    for (name, outcome) in outcomes {
        let result = DeletableTopicResult::default()
            .with_name(Some(topic_name(&name)))
            .with_topic_id(image.topic(&name).map(|t| t.topic_id).unwrap_or_default());
        results.push(match outcome {
            Ok(()) => result,
            Err((error, message)) => result.with_error_code(error.code()).with_error_message(Some(str_bytes(&message))),
        });
    }
    DeleteTopicsResponse::default().with_responses(results)
}
