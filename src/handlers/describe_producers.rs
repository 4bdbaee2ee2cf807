//! DescribeProducers: the idempotent producers each partition remembers, asked of its owner.

use std::collections::HashMap;
use std::rc::Rc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::describe_producers_response::{PartitionResponse, ProducerState, TopicResponse};
use kafka_protocol::messages::{DescribeProducersRequest, DescribeProducersResponse, ProducerId};

use crate::protocol::errors::partition_error_code;
use crate::shard::router::DescribeProducers;
use crate::shard::{Shard, ShardId, TopicPartition};
use crate::storage::producer_state::ActiveProducer;

pub async fn handle(shard: &Rc<Shard>, request: DescribeProducersRequest) -> DescribeProducersResponse {
    let image = shard.metadata();
    let mut outcomes: HashMap<TopicPartition, Result<Vec<ActiveProducer>, ResponseError>> = HashMap::new();
    let mut per_shard: HashMap<ShardId, Vec<TopicPartition>> = HashMap::new();
    for topic in &request.topics {
        for &partition in &topic.partition_indexes {
            let tp = TopicPartition { topic: topic.name.0.to_string(), partition };
            match image.owner(&tp.topic, partition) {
                Some(owner) => per_shard.entry(owner).or_default().push(tp),
                None => {
                    outcomes.insert(tp, Err(ResponseError::UnknownTopicOrPartition));
                }
            }
        }
    }
    let calls = per_shard.into_iter().map(|(owner, partitions)| {
        let call = shard.invoke_on(owner, DescribeProducers { partitions: partitions.clone() });
        async move {
            let results = call.await.into_iter().map(|r| r.map_err(|e| partition_error_code(&e)));
            partitions.into_iter().zip(results).collect::<Vec<_>>()
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
                .partition_indexes
                .iter()
                .map(|&partition| {
                    let tp = TopicPartition { topic: topic.name.0.to_string(), partition };
                    let response = PartitionResponse::default().with_partition_index(partition);
                    match outcomes.get(&tp).cloned().expect("every partition has an outcome") {
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
