//! OffsetCommit: checks the member and generation, then appends the commits to the group's
//! `__consumer_offsets` partition (on this same shard) before acknowledging them.

use std::rc::Rc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::offset_commit_response::{OffsetCommitResponsePartition, OffsetCommitResponseTopic};
use kafka_protocol::messages::{OffsetCommitRequest, OffsetCommitResponse};

use crate::group::coordinator::{CommitOffsets, OffsetToCommit};
use crate::group::{offsets, route};
use crate::shard::Shard;

pub async fn handle(shard: &Rc<Shard>, request: OffsetCommitRequest) -> OffsetCommitResponse {
    // From v8 the id is a compact string, which may be longer than the record key can hold.
    if request.group_id.0.is_empty() || request.group_id.0.len() > offsets::STRING_MAX_BYTES {
        return every_partition(&request, std::iter::repeat(Some(ResponseError::InvalidGroupId)));
    }
    let group_id = request.group_id.0.to_string();
    let commit = CommitOffsets {
        group_id: group_id.clone(),
        member_id: request.member_id.to_string(),
        group_instance_id: request.group_instance_id.as_ref().map(|s| s.to_string()),
        generation_id: request.generation_id_or_member_epoch,
        offsets: request
            .topics
            .iter()
            .flat_map(|t| {
                t.partitions.iter().map(|p| OffsetToCommit {
                    topic: t.name.0.to_string(),
                    partition: p.partition_index,
                    offset: p.committed_offset,
                    leader_epoch: p.committed_leader_epoch,
                    metadata: p.committed_metadata.as_ref().map(|m| m.to_string()).unwrap_or_default(),
                })
            })
            .collect(),
    };
    match route(shard, &group_id, commit).await {
        Ok(errors) => every_partition(&request, errors),
        Err(error) => every_partition(&request, std::iter::repeat(Some(error))),
    }
}

/// A response naming every requested partition, with its error from `errors` (in request order).
fn every_partition(
    request: &OffsetCommitRequest,
    errors: impl IntoIterator<Item = Option<ResponseError>>,
) -> OffsetCommitResponse {
    let mut errors = errors.into_iter();
    let topics = request
        .topics
        .iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let error = errors.next().expect("one error or none per partition");
                    OffsetCommitResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(error.map_or(0, |e| e.code()))
                })
                .collect();
            OffsetCommitResponseTopic::default().with_name(t.name.clone()).with_partitions(partitions)
        })
        .collect();
    OffsetCommitResponse::default().with_topics(topics)
}
