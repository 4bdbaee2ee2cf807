//! Produce: validate the request, send each partition's batches to its owning shard (one
//! envelope per shard, `Shard::scatter`), answer in request order.
//!
//! The batches travel as the `Bytes` slices of the request frame: no copy until the owner
//! writes them to its segment.

use std::rc::Rc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};

use crate::protocol::errors::owner_answer;
use crate::shard::Shard;
use crate::shard::router::{Appended, Produce, ProducePart};

/// `min.insync.replicas` of a topic: its own, else the broker's.
fn min_insync_replicas(shard: &Shard, image: &crate::cluster::MetadataImage, topic: &str) -> i32 {
    let own = image.topic(topic).and_then(|t| t.configs.get("min.insync.replicas")).and_then(|v| v.parse().ok());
    own.unwrap_or_else(|| shard.effective_config().min_insync_replicas)
}

/// Returns `None` for acks=0: Kafka sends no response then.
pub async fn handle(shard: &Rc<Shard>, request: ProduceRequest) -> Option<ProduceResponse> {
    let acks = request.acks;
    let image = shard.metadata();
    // Every partition in request order: where its batches go, or the answer it gets at once.
    let entries =
        request.topic_data.iter().flat_map(|t| t.partition_data.iter().map(|p| (t.name.0.as_str(), p.index, p)));
    let parts = super::route(shard, &image, entries, |topic, data| {
        if !matches!(acks, -1..=1) {
            return Err(ResponseError::InvalidRequiredAcks);
        }
        if topic == crate::group::OFFSETS_TOPIC {
            // Only the group coordinator writes there.
            return Err(ResponseError::InvalidTopicException);
        }
        let records = data.records.clone().ok_or(ResponseError::CorruptMessage)?;
        if acks != -1 {
            return Ok(ProducePart { records, min_insync_replicas: None });
        }
        // As Kafka's leader: too small an ISR refuses acks=all before anything is written.
        let min_insync_replicas = usize::try_from(min_insync_replicas(shard, &image, topic)).unwrap_or(1);
        let isr = image.topic(topic).and_then(|t| t.partitions.get(usize::try_from(data.index).ok()?));
        if isr.map_or(0, |p| p.isr.len()) < min_insync_replicas {
            return Err(ResponseError::NotEnoughReplicas);
        }
        Ok(ProducePart { records, min_insync_replicas: Some(min_insync_replicas) })
    });
    let timeout = std::time::Duration::from_millis(u64::try_from(request.timeout_ms).unwrap_or(0));
    let outcomes: Vec<Result<Appended, ResponseError>> =
        shard.scatter(parts, |parts| Produce { parts, timeout }).await.into_iter().map(owner_answer).collect();
    let partitions = request.topic_data.iter().flat_map(|t| t.partition_data.iter().map(move |p| (&t.name, p.index)));

    if acks == 0 {
        // The client hears nothing, so the failures are counted and logged here.
        let failed: Vec<_> =
            partitions.zip(&outcomes).filter_map(|(tp, outcome)| outcome.as_ref().err().map(|e| (tp, *e))).collect();
        if let Some(((topic, partition), error)) = failed.first() {
            shard.metrics.borrow_mut().unacknowledged_produce_errors += failed.len() as u64;
            tracing::warn!(topic = %topic.0, partition, %error, partitions = failed.len(), "acks=0 produce failed");
        }
        return None;
    }

    let mut responses: Vec<TopicProduceResponse> = Vec::new();
    for ((topic, partition), outcome) in partitions.zip(outcomes) {
        let response = match outcome {
            Ok(appended) => PartitionProduceResponse::default()
                .with_index(partition)
                .with_base_offset(appended.base_offset)
                .with_log_append_time_ms(appended.log_append_time_ms)
                .with_log_start_offset(appended.log_start_offset),
            Err(error) => PartitionProduceResponse::default()
                .with_index(partition)
                .with_error_code(error.code())
                .with_base_offset(-1)
                .with_log_append_time_ms(-1)
                .with_log_start_offset(-1),
        };
        match responses.last_mut() {
            Some(last) if last.name == *topic => last.partition_responses.push(response),
            _ => responses.push(
                TopicProduceResponse::default().with_name(topic.clone()).with_partition_responses(vec![response]),
            ),
        }
    }
    Some(ProduceResponse::default().with_responses(responses))
}
