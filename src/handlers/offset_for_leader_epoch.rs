//! OffsetForLeaderEpoch (API 23): for each partition, the largest leader epoch at or below
//! the one asked that wrote to the log, and the offset where its part of the log ends (the
//! start of the next epoch, or the log end for the current one), answered by the partition's
//! owner from its leader-epoch cache. Clients use it to validate their position after a
//! leader change (KIP-320), followers to find where their log diverged. A
//! `current_leader_epoch` other than the partition's is refused (FENCED_LEADER_EPOCH /
//! UNKNOWN_LEADER_EPOCH); an epoch the log cannot place gets epoch -1 and offset -1.

use std::rc::Rc;

use kafka_protocol::messages::offset_for_leader_epoch_response::{EpochEndOffset, OffsetForLeaderTopicResult};
use kafka_protocol::messages::{OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};

use crate::protocol::errors::owner_answer;
use crate::shard::Shard;
use crate::shard::router::OffsetForLeaderEpoch;

pub async fn handle(shard: &Rc<Shard>, request: OffsetForLeaderEpochRequest) -> OffsetForLeaderEpochResponse {
    let image = shard.metadata();
    let entries = request.topics.iter().flat_map(|t| t.partitions.iter().map(|p| (t.topic.0.as_str(), p.partition, p)));
    let queries = super::route(shard, &image, entries, |_, p| Ok((p.current_leader_epoch, p.leader_epoch)));
    let mut outcomes = shard.scatter(queries, |queries| OffsetForLeaderEpoch { queries }).await.into_iter();
    let topics = request
        .topics
        .iter()
        .map(|topic| {
            let partitions = topic
                .partitions
                .iter()
                .map(|p| {
                    let response = EpochEndOffset::default().with_partition(p.partition);
                    match owner_answer(outcomes.next().expect("one outcome per partition")) {
                        Ok((epoch, end_offset)) => response.with_leader_epoch(epoch).with_end_offset(end_offset),
                        Err(error) => response.with_error_code(error.code()),
                    }
                })
                .collect();
            OffsetForLeaderTopicResult::default().with_topic(topic.topic.clone()).with_partitions(partitions)
        })
        .collect();
    OffsetForLeaderEpochResponse::default().with_topics(topics)
}
