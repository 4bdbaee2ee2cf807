//! ListOffsets: earliest (-2, and -4 earliest local), latest (-1), the first record with the
//! largest timestamp (-3) or the first offset at or after a timestamp (found through the time
//! index), each answered by the partition's owner with the leader epoch that wrote the offset
//! (the current one for the latest offset); a `current_leader_epoch` other than the
//! partition's is refused (FENCED_LEADER_EPOCH / UNKNOWN_LEADER_EPOCH).

use std::rc::Rc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::list_offsets_response::{ListOffsetsPartitionResponse, ListOffsetsTopicResponse};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};

use crate::protocol::errors::owner_answer;
use crate::shard::Shard;
use crate::shard::router::{ListOffsets, OffsetQuery};

/// ListOffsets v4 added the leader epoch to the answer.
const LEADER_EPOCH_VERSION: i16 = 4;

/// Kafka's special timestamps: what a negative one asks for, if we serve it.
fn query(timestamp: i64) -> Option<OffsetQuery> {
    match timestamp {
        -1 => Some(OffsetQuery::Latest),
        // Without tiered storage the earliest local offset (-4) is the log start offset.
        -2 | -4 => Some(OffsetQuery::Earliest),
        -3 => Some(OffsetQuery::MaxTimestamp),
        t if t >= 0 => Some(OffsetQuery::AtTime(t)),
        _ => None,
    }
}

pub async fn handle(shard: &Rc<Shard>, request: ListOffsetsRequest, version: i16) -> ListOffsetsResponse {
    let image = shard.metadata();
    let entries =
        request.topics.iter().flat_map(|t| t.partitions.iter().map(|p| (t.name.0.as_str(), p.partition_index, p)));
    let queries = super::route(shard, &image, entries, |_, p| {
        query(p.timestamp).map(|q| (q, p.current_leader_epoch)).ok_or(ResponseError::UnsupportedVersion)
    });
    let mut outcomes = shard.scatter(queries, |queries| ListOffsets { queries }).await.into_iter();

    let topics = request
        .topics
        .iter()
        .map(|topic| {
            let partitions = topic
                .partitions
                .iter()
                .map(|p| {
                    let response = ListOffsetsPartitionResponse::default().with_partition_index(p.partition_index);
                    let outcome = outcomes.next().expect("one outcome per partition");
                    match owner_answer(outcome) {
                        Ok(found) => response
                            .with_offset(found.offset)
                            .with_timestamp(found.timestamp)
                            .with_leader_epoch(if version >= LEADER_EPOCH_VERSION { found.leader_epoch } else { -1 }),
                        Err(error) => response.with_error_code(error.code()).with_offset(-1).with_timestamp(-1),
                    }
                })
                .collect();
            ListOffsetsTopicResponse::default().with_name(topic.name.clone()).with_partitions(partitions)
        })
        .collect();
    ListOffsetsResponse::default().with_topics(topics)
}
