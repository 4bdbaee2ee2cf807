//! DeleteRecords: moves partitions' log start offsets forward (-1: to the high watermark).
//! Each partition's owner moves it, and deletes the segments wholly below it; fetches below
//! the new start get OFFSET_OUT_OF_RANGE.

use std::rc::Rc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::delete_records_response::{DeleteRecordsPartitionResult, DeleteRecordsTopicResult};
use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse};

use crate::protocol::errors::owner_answer;
use crate::shard::Shard;
use crate::shard::router::DeleteRecords;

pub async fn handle(shard: &Rc<Shard>, request: DeleteRecordsRequest) -> DeleteRecordsResponse {
    let image = shard.metadata();
    let entries =
        request.topics.iter().flat_map(|t| t.partitions.iter().map(|p| (t.name.0.as_str(), p.partition_index, p)));
    let deletions = super::route(shard, &image, entries, |topic, p| {
        if topic == crate::group::OFFSETS_TOPIC {
            // Kafka refuses it too: committed offsets live there.
            return Err(ResponseError::InvalidTopicException);
        }
        Ok(p.offset)
    });
    let mut outcomes = shard.scatter(deletions, |partitions| DeleteRecords { partitions }).await.into_iter();

    let topics = request
        .topics
        .iter()
        .map(|topic| {
            let partitions = topic
                .partitions
                .iter()
                .map(|p| {
                    let result = DeleteRecordsPartitionResult::default().with_partition_index(p.partition_index);
                    let outcome = outcomes.next().expect("one outcome per partition");
                    match owner_answer(outcome) {
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
