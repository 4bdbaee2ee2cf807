//! DeleteRecords: moves partitions' log start offsets forward (-1: to the high watermark).
//! Each partition's owner moves it, and deletes the segments wholly below it; fetches below
//! the new start get OFFSET_OUT_OF_RANGE.

use std::collections::HashMap;
use std::rc::Rc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::delete_records_response::{DeleteRecordsPartitionResult, DeleteRecordsTopicResult};
use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse};

use crate::protocol::errors::partition_error_code;
use crate::shard::router::DeleteRecords;
use crate::shard::{Shard, ShardId, TopicPartition};

pub async fn handle(shard: &Rc<Shard>, request: DeleteRecordsRequest) -> DeleteRecordsResponse {
    let image = shard.metadata();
    let mut outcomes: HashMap<TopicPartition, Result<i64, ResponseError>> = HashMap::new();
    let mut per_shard: HashMap<ShardId, Vec<(TopicPartition, i64)>> = HashMap::new();
    let duplicated = super::duplicated(
        request.topics.iter().flat_map(|t| t.partitions.iter().map(|p| (t.name.0.as_str(), p.partition_index))),
    );
    for topic in &request.topics {
        for p in &topic.partitions {
            let tp = TopicPartition { topic: topic.name.0.to_string(), partition: p.partition_index };
            if duplicated.contains(&(tp.topic.as_str(), tp.partition)) {
                outcomes.insert(tp, Err(ResponseError::InvalidRequest));
                continue;
            }
            if tp.topic == crate::group::OFFSETS_TOPIC {
                // Kafka refuses it too: committed offsets live there.
                outcomes.insert(tp, Err(ResponseError::InvalidTopicException));
                continue;
            }
            match image.owner(&tp.topic, tp.partition) {
                Some(owner) => per_shard.entry(owner).or_default().push((tp, p.offset)),
                None => {
                    outcomes.insert(tp, Err(ResponseError::UnknownTopicOrPartition));
                }
            }
        }
    }
    let calls = per_shard.into_iter().map(|(owner, partitions)| {
        let names: Vec<TopicPartition> = partitions.iter().map(|(tp, _)| tp.clone()).collect();
        let call = shard.invoke_on(owner, DeleteRecords { partitions });
        async move {
            let results = call.await.into_iter().map(|r| r.map_err(|e| partition_error_code(&e)));
            names.into_iter().zip(results).collect::<Vec<_>>()
        }
    });
    for answers in futures::future::join_all(calls).await {
        outcomes.extend(answers);
    }

    let topics = request
        .topics
        .iter()
        .map(|topic| {
            let partitions = topic
                .partitions
                .iter()
                .map(|p| {
                    let tp = TopicPartition { topic: topic.name.0.to_string(), partition: p.partition_index };
                    let result = DeleteRecordsPartitionResult::default().with_partition_index(p.partition_index);
                    // Each entry of a duplicated partition gets the same answer, so look up, don't take.
                    match outcomes.get(&tp).cloned().expect("every partition has an outcome") {
                        Ok(low_watermark) => result.with_low_watermark(low_watermark),
                        Err(error) => result.with_low_watermark(-1).with_error_code(error.code()),
                    }
                })
                .collect();
            DeleteRecordsTopicResult::default().with_name(topic.name.clone()).with_partitions(partitions)
        })
        .collect();
    DeleteRecordsResponse::default().with_topics(topics)
}
