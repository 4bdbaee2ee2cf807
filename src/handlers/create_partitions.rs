//! CreatePartitions: grows topics, validated and applied by the controller shard; every shard
//! has the new partitions (their owners have opened them) before the answer.

use std::collections::HashSet;
use std::rc::Rc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse};

use super::{str_bytes, topic_name};
use crate::shard::router::CreatePartitions;
use crate::shard::router::PartitionGrowth;
use crate::shard::{CONTROLLER_SHARD, Shard};

pub async fn handle(shard: &Rc<Shard>, request: CreatePartitionsRequest) -> CreatePartitionsResponse {
    let mut seen = HashSet::new();
    let duplicated: HashSet<String> =
        request.topics.iter().map(|t| t.name.0.to_string()).filter(|name| !seen.insert(name.clone())).collect();
    let mut results = Vec::new();
    let mut growths = Vec::new();
    for topic in request.topics {
        let name = topic.name.0.to_string();
        if duplicated.contains(&name) {
            results.push(result(&name, Err((ResponseError::InvalidRequest, "topic named twice".to_string()))));
            continue;
        }
        let assignments = topic
            .assignments
            .map(|list| list.into_iter().map(|a| a.broker_ids.into_iter().map(|id| id.0).collect()).collect());
        growths.push(PartitionGrowth { name, count: topic.count, assignments });
    }
    if !growths.is_empty() {
        let call = CreatePartitions { topics: growths, validate_only: request.validate_only };
        let outcomes = shard.invoke_on(CONTROLLER_SHARD, call).await;
        results.extend(outcomes.into_iter().map(|(name, outcome)| result(&name, outcome)));
    }
    CreatePartitionsResponse::default().with_results(results)
}

fn result(name: &str, outcome: crate::shard::router::TopicOutcome) -> CreatePartitionsTopicResult {
    let result = CreatePartitionsTopicResult::default().with_name(topic_name(name));
    match outcome {
        Ok(()) => result,
        Err((error, message)) => result.with_error_code(error.code()).with_error_message(Some(str_bytes(&message))),
    }
}
