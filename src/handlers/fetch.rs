//! Fetch: read every requested partition on its owning shard; while less than `min_bytes`
//! came back and `max_wait_ms` has not passed, park on the owners until one of them gets
//! more data, then read again. A partition error (unknown partition, offset out of range, a
//! `current_leader_epoch` other than the partition's), a diverging log (the fetcher's
//! `last_fetched_epoch` ends before its fetch offset here: `diverging_epoch` says where), or
//! `min_bytes` of 0 answers at once, as in Kafka.
//!
//! The response-wide `max_bytes` bounds the response: no partition reads more than it, and
//! it is applied in request order, letting only the first non-empty partition exceed it, and
//! only by its first batch (KIP-74).
//!
//! A fetch from a follower replica (`replica_id`, or `replica_state` from v15, at least 0) is
//! the leader's side of replication: it reads to the log end rather than the high watermark,
//! and its fetch offset tells the leader where that follower's log ends, which may move the
//! high watermark (`Partition::replica_fetched`). It long-polls like a consumer's, waiting for
//! data past the log end it saw. A broker holding no replica gets NOT_LEADER_OR_FOLLOWER.

use std::pin::pin;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::fetch_response::{EpochEndOffset, FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{BrokerId, FetchRequest, FetchResponse};

use crate::partition::ReadLimit;
use crate::protocol::errors::partition_error_code;
use crate::runtime::sleep;
use crate::runtime::zero_copy::FileSlice;
use crate::shard::router::{PartitionRead, PartitionReadResult, Read, RecordData, WaitForData};
use crate::shard::{Shard, ShardId, TopicPartition};

/// Fetch v13+ names topics by id.
const TOPIC_ID_VERSION: i16 = 13;
/// Fetch v15+ names the fetching replica in `replica_state` (KIP-903), no longer `replica_id`.
pub const REPLICA_STATE_VERSION: i16 = 15;

/// A partition to read: its owner, and where its answer goes in the response.
struct Wanted {
    topic_index: usize,
    owner: ShardId,
    read: PartitionRead,
}

/// The response, and the file ranges whose placeholders stand for records in it.
pub async fn handle(
    shard: &Rc<Shard>,
    request: FetchRequest,
    version: i16,
) -> (FetchResponse, Vec<(Bytes, FileSlice)>) {
    let image = shard.metadata();
    // A follower replica names itself (v15+ in `replica_state`); a consumer gives -1.
    let replica_id =
        if version >= REPLICA_STATE_VERSION { request.replica_state.replica_id.0 } else { request.replica_id.0 };
    let response_max_bytes = usize::try_from(request.max_bytes.max(0)).unwrap_or(0);
    let mut refused_any = false;
    let mut topics: Vec<FetchableTopicResponse> = Vec::new();
    let mut wanted: Vec<Wanted> = Vec::new();
    for topic in &request.topics {
        let found = if version >= TOPIC_ID_VERSION {
            image.topic_by_id(topic.topic_id)
        } else {
            image.topic(topic.topic.0.as_str())
        };
        let missing_error = if version >= TOPIC_ID_VERSION {
            ResponseError::UnknownTopicId
        } else {
            ResponseError::UnknownTopicOrPartition
        };
        let name = found.map_or_else(|| topic.topic.0.to_string(), |t| t.name.clone());
        topics
            .push(FetchableTopicResponse::default().with_topic(super::topic_name(&name)).with_topic_id(topic.topic_id));
        for p in &topic.partitions {
            let Some(owner) = found.and_then(|_| image.owner(&name, p.partition)) else {
                topics.last_mut().expect("pushed above").partitions.push(error_partition(p.partition, missing_error));
                refused_any = true;
                continue;
            };
            if !shard.leads(&image, &name, p.partition) {
                let refused = error_partition(p.partition, ResponseError::NotLeaderOrFollower);
                topics.last_mut().expect("pushed above").partitions.push(refused);
                refused_any = true;
                continue;
            }
            let partition_max_bytes = usize::try_from(p.partition_max_bytes.max(0)).unwrap_or(0);
            let read = PartitionRead {
                partition: TopicPartition { topic: name.clone(), partition: p.partition },
                offset: p.fetch_offset,
                max_bytes: partition_max_bytes.min(response_max_bytes),
                zero_copy: shard.config.fetch_zero_copy,
                current_leader_epoch: p.current_leader_epoch,
                last_fetched_epoch: p.last_fetched_epoch,
                replica_id,
            };
            wanted.push(Wanted { topic_index: topics.len() - 1, owner, read });
        }
    }

    let min_bytes = usize::try_from(request.min_bytes.max(0)).unwrap_or(0);
    let max_wait_ms = u64::try_from(request.max_wait_ms.max(0)).unwrap_or(0).min(shard.config.fetch_max_wait_ms_limit);
    let deadline = Instant::now() + Duration::from_millis(max_wait_ms);
    let mut results = read_all(shard, &wanted).await;
    loop {
        let total: usize = results.iter().map(|r| r.records.len()).sum();
        // A diverging log answers at once too, as in Kafka.
        let errors = refused_any || results.iter().any(|r| r.error.is_some() || r.diverging_epoch.is_some());
        let left = deadline.saturating_duration_since(Instant::now());
        if total >= min_bytes || errors || wanted.is_empty() || left.is_zero() {
            break;
        }
        // Woken by data that still falls short of `min_bytes`, the next wait is for data
        // past what this read saw.
        let limit = if replica_id >= 0 { ReadLimit::LogEnd } else { ReadLimit::HighWatermark };
        let seen: Vec<i64> = results.iter().map(|r| r.read_limit).collect();
        let waits =
            wanted.iter().zip(seen).map(|(w, seen)| (w.owner, (w.read.partition.clone(), seen, limit))).collect();
        let woken = shard.scatter_first(waits, |partitions| WaitForData { partitions, timeout: left });
        // The owners time out too, but an envelope may wait in a full mesh channel.
        futures::future::select(pin!(woken), pin!(sleep(left))).await;
        results = read_all(shard, &wanted).await;
    }

    let mut file_parts = Vec::new();
    let mut placeholders = crate::runtime::zero_copy::Placeholders::default();
    let mut budget = response_max_bytes;
    let mut first = true;
    for (w, result) in wanted.iter().zip(results) {
        if let Some(error) = result.error {
            // As Kafka: a partition that failed reports no offsets, only its error.
            let error = error_partition(w.read.partition.partition, partition_error_code(&error));
            topics[w.topic_index].partitions.push(error);
            continue;
        }
        let mut records = result.records;
        if !records.is_empty() {
            if !first && records.len() > budget {
                // Over the response-wide limit: the client asks again from the same offset.
                records = RecordData::Memory(bytes::Bytes::new());
            }
            budget = budget.saturating_sub(records.len());
            first = false;
        }
        let records = match records {
            RecordData::Memory(bytes) => {
                shard.metrics.borrow_mut().fetch_bytes_copied += bytes.len() as u64;
                bytes
            }
            // The encoder meets this placeholder where the records go, and leaves the file
            // range in its place (runtime::zero_copy); the placeholder itself is never sent.
            RecordData::File(slice) => {
                let placeholder = placeholders.make(slice.len);
                file_parts.push((placeholder.clone(), slice));
                placeholder
            }
        };
        let diverging_epoch = result.diverging_epoch.map_or_else(Default::default, |(epoch, end_offset)| {
            EpochEndOffset::default().with_epoch(epoch).with_end_offset(end_offset)
        });
        topics[w.topic_index].partitions.push(
            PartitionData::default()
                .with_diverging_epoch(diverging_epoch)
                .with_partition_index(w.read.partition.partition)
                .with_high_watermark(result.high_watermark)
                .with_last_stable_offset(result.high_watermark)
                .with_log_start_offset(result.log_start_offset)
                .with_aborted_transactions(Some(Vec::new()))
                .with_preferred_read_replica(BrokerId(-1))
                .with_records(Some(records)),
        );
    }
    (FetchResponse::default().with_responses(topics), file_parts)
}

fn error_partition(partition: i32, error: ResponseError) -> PartitionData {
    PartitionData::default()
        .with_partition_index(partition)
        .with_error_code(error.code())
        .with_high_watermark(-1)
        .with_last_stable_offset(-1)
        .with_log_start_offset(-1)
        .with_preferred_read_replica(BrokerId(-1))
        .with_records(Some(bytes::Bytes::new()))
}

/// Reads every wanted partition from its owner; results come back in `wanted` order.
async fn read_all(shard: &Rc<Shard>, wanted: &[Wanted]) -> Vec<PartitionReadResult> {
    shard.gather(wanted.iter().map(|w| (w.owner, w.read.clone())).collect(), |reads| Read { reads }).await
}
