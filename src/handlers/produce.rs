//! Produce: validate the request, send each partition's batches to its owning shard (one
//! envelope per shard and topic), merge the answers in request order.
//!
//! The batches travel as the `Bytes` slices of the request frame: no copy until the owner
//! writes them to its segment.

use std::collections::HashMap;
use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};

use crate::protocol::errors::partition_error_code;
use crate::shard::router::Produce;
use crate::shard::{Shard, ShardId};
use crate::storage::AppendInfo;

/// `min.insync.replicas` of a topic: its own, else the broker's.
fn min_insync_replicas(shard: &Shard, image: &crate::cluster::MetadataImage, topic: &str) -> i32 {
    let own = image.topic(topic).and_then(|t| t.configs.get("min.insync.replicas")).and_then(|v| v.parse().ok());
    own.unwrap_or_else(|| shard.effective_config().min_insync_replicas)
}

/// Returns `None` for acks=0: Kafka sends no response then.
pub async fn handle(shard: &Rc<Shard>, request: ProduceRequest) -> Option<ProduceResponse> {
    let acks = request.acks;
    let image = shard.metadata();
    let mut outcomes: HashMap<(String, i32), Result<(AppendInfo, i64), ResponseError>> = HashMap::new();
    let mut per_shard: HashMap<(ShardId, String), Vec<(i32, Bytes)>> = HashMap::new();
    let mut order = Vec::new();
    let duplicated = super::duplicated(
        request.topic_data.iter().flat_map(|t| t.partition_data.iter().map(|p| (t.name.0.as_str(), p.index))),
    );
    for topic in &request.topic_data {
        let name = topic.name.0.to_string();
        for data in &topic.partition_data {
            order.push((name.clone(), data.index));
            let key = (name.clone(), data.index);
            if duplicated.contains(&(name.as_str(), data.index)) {
                outcomes.insert(key, Err(ResponseError::InvalidRequest));
                continue;
            }
            if !matches!(acks, -1..=1) {
                outcomes.insert(key, Err(ResponseError::InvalidRequiredAcks));
                continue;
            }
            if name == crate::group::OFFSETS_TOPIC {
                // Only the group coordinator writes there.
                outcomes.insert(key, Err(ResponseError::InvalidTopicException));
                continue;
            }
            match (image.owner(&name, data.index), &data.records) {
                (None, _) => {
                    outcomes.insert(key, Err(ResponseError::UnknownTopicOrPartition));
                }
                (Some(_), None) => {
                    outcomes.insert(key, Err(ResponseError::CorruptMessage));
                }
                (Some(_), Some(_)) if acks == -1 && min_insync_replicas(shard, &image, &name) > 1 => {
                    // The one replica there is cannot make up a larger in-sync set.
                    outcomes.insert(key, Err(ResponseError::NotEnoughReplicas));
                }
                (Some(owner), Some(records)) => {
                    per_shard.entry((owner, name.clone())).or_default().push((data.index, records.clone()))
                }
            }
        }
    }

    let calls = per_shard.into_iter().map(|((owner, topic), partitions)| {
        let shard = shard.clone();
        async move {
            let results = shard.invoke_on(owner, Produce { topic: topic.clone(), partitions }).await;
            (topic, results)
        }
    });
    for (topic, results) in futures::future::join_all(calls).await {
        for (partition, outcome) in results {
            outcomes.insert((topic.clone(), partition), outcome.map_err(|e| partition_error_code(&e)));
        }
    }
    if acks == 0 {
        // The client hears nothing, so the failures are counted and logged here.
        let failed: Vec<_> = outcomes.iter().filter_map(|(tp, o)| o.as_ref().err().map(|e| (tp, *e))).collect();
        if let Some(((topic, partition), error)) = failed.first() {
            shard.metrics.borrow_mut().unacknowledged_produce_errors += failed.len() as u64;
            tracing::warn!(%topic, partition, %error, partitions = failed.len(), "acks=0 produce failed");
        }
        return None;
    }

    let mut responses: Vec<TopicProduceResponse> = Vec::new();
    for (topic, partition) in order {
        // Each entry of a duplicated partition gets the same answer, so look up, don't take.
        let outcome = *outcomes.get(&(topic.clone(), partition)).expect("every partition has an outcome");
        let response = match outcome {
            Ok((info, log_start_offset)) => PartitionProduceResponse::default()
                .with_index(partition)
                .with_base_offset(info.base_offset)
                .with_log_append_time_ms(info.log_append_time_ms)
                .with_log_start_offset(log_start_offset),
            Err(error) => PartitionProduceResponse::default()
                .with_index(partition)
                .with_error_code(error.code())
                .with_base_offset(-1)
                .with_log_append_time_ms(-1)
                .with_log_start_offset(-1),
        };
        match responses.last_mut() {
            Some(last) if last.name.0.as_str() == topic => last.partition_responses.push(response),
            _ => responses.push(
                TopicProduceResponse::default()
                    .with_name(super::topic_name(&topic))
                    .with_partition_responses(vec![response]),
            ),
        }
    }
    Some(ProduceResponse::default().with_responses(responses))
}
