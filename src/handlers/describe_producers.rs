//! DescribeProducers: the idempotent producers each partition remembers, asked of its owner.

use std::rc::Rc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::describe_producers_response::{PartitionResponse, ProducerState, TopicResponse};
use kafka_protocol::messages::{DescribeProducersRequest, DescribeProducersResponse, ProducerId};

use crate::protocol::errors::owner_answer;
use crate::shard::router::DescribeProducers;
use crate::shard::{Shard, TopicPartition};
use crate::storage::producer_state::ActiveProducer;

pub async fn handle(shard: &Rc<Shard>, request: DescribeProducersRequest) -> DescribeProducersResponse {
    let image = shard.metadata();
    let partitions = request
        .topics
        .iter()
        .flat_map(|t| t.partition_indexes.iter().map(move |&partition| (t.name.0.as_str(), partition)))
        .map(|(topic, partition)| {
            let owner = image.owner(topic, partition).ok_or(ResponseError::UnknownTopicOrPartition)?;
            if !shard.leads(&image, topic, partition) {
                return Err(ResponseError::NotLeaderOrFollower);
            }
            Ok((owner, TopicPartition { topic: topic.to_string(), partition }))
        })
        .collect();
    let mut outcomes = shard.scatter(partitions, |partitions| DescribeProducers { partitions }).await.into_iter();
    let topics = request
        .topics
        .iter()
        .map(|topic| {
            let partitions = topic
                .partition_indexes
                .iter()
                .map(|&partition| {
                    let response = PartitionResponse::default().with_partition_index(partition);
                    let outcome = outcomes.next().expect("one outcome per partition");
                    match owner_answer(outcome) {
                        Ok(producers) => response.with_active_producers(producers.iter().map(state).collect()),
                        Err(error) => response.with_error_code(error.code()),
                    }
                })
                .collect();
            TopicResponse::default().with_name(topic.name.clone()).with_partitions(partitions)
        })
        .collect();
    DescribeProducersResponse::default().with_topics(topics)
}

fn state(producer: &ActiveProducer) -> ProducerState {
    ProducerState::default()
        .with_producer_id(ProducerId(producer.producer_id))
        .with_producer_epoch(i32::from(producer.epoch))
        .with_last_sequence(producer.last_sequence)
        .with_last_timestamp(producer.last_append_ms)
        // No transactions: no coordinator, no open transaction.
        .with_coordinator_epoch(-1)
        .with_current_txn_start_offset(-1)
}
