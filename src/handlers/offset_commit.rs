//! OffsetCommit: checks the member and generation, then appends the commits to the group's
//! `__consumer_offsets` partition (on this same shard) before acknowledging them.

use std::rc::Rc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::offset_commit_response::{OffsetCommitResponsePartition, OffsetCommitResponseTopic};
use kafka_protocol::messages::{OffsetCommitRequest, OffsetCommitResponse};

use super::groups::route;
use crate::group::state::Group;
use crate::group::{CommittedOffset, GroupEntry, Offsets, append_offset_records, offsets};
use crate::runtime::now_ms;
use crate::shard::Shard;
use crate::shard::router::{GroupAnswer, GroupCall};

pub async fn handle(shard: &Rc<Shard>, request: OffsetCommitRequest) -> OffsetCommitResponse {
    // From v8 the id is a compact string, which may be longer than the record key can hold.
    if request.group_id.0.is_empty() || request.group_id.0.len() > offsets::STRING_MAX_BYTES {
        return every_partition(&request, |_, _| Some(ResponseError::InvalidGroupId));
    }
    let group_id = request.group_id.0.to_string();
    let GroupAnswer::Commit(answer) = route(shard, &group_id, GroupCall::Commit { request }).await else {
        unreachable!("Commit answers with Commit");
    };
    answer
}

/// A response naming every requested partition, with the error `error_of` gives it.
fn every_partition(
    request: &OffsetCommitRequest,
    mut error_of: impl FnMut(&str, i32) -> Option<ResponseError>,
) -> OffsetCommitResponse {
    let topics = request
        .topics
        .iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    OffsetCommitResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(error_of(t.name.0.as_str(), p.partition_index).map_or(0, |e| e.code()))
                })
                .collect();
            OffsetCommitResponseTopic::default().with_name(t.name.clone()).with_partitions(partitions)
        })
        .collect();
    OffsetCommitResponse::default().with_topics(topics)
}

pub async fn on_coordinator(shard: &Shard, request: OffsetCommitRequest) -> OffsetCommitResponse {
    let group_id = request.group_id.0.to_string();
    let now = now_ms();
    let membership = match shard.groups.borrow().get(&group_id) {
        Some(entry) => entry.group.check_commit(
            request.member_id.as_str(),
            request.group_instance_id.as_ref().map(|s| s.as_str()),
            request.generation_id_or_member_epoch,
        ),
        None if request.generation_id_or_member_epoch < 0 => Ok(()),
        None => Err(ResponseError::IllegalGeneration),
    };
    if let Err(error) = membership {
        return every_partition(&request, |_, _| Some(error));
    }

    let image = shard.metadata();
    let mut accepted = Vec::new();
    let mut refused = std::collections::HashMap::new();
    for topic in &request.topics {
        let name = topic.name.0.to_string();
        for p in &topic.partitions {
            let metadata = p.committed_metadata.as_ref().map(|m| m.to_string()).unwrap_or_default();
            let error = if image.owner(&name, p.partition_index).is_none() {
                Some(ResponseError::UnknownTopicOrPartition)
            } else if metadata.len() > shard.config.offset_metadata_max_bytes {
                Some(ResponseError::OffsetMetadataTooLarge)
            } else {
                None
            };
            match error {
                Some(error) => {
                    refused.insert((name.clone(), p.partition_index), error);
                }
                None => accepted.push((
                    (name.clone(), p.partition_index),
                    CommittedOffset {
                        offset: p.committed_offset,
                        leader_epoch: p.committed_leader_epoch,
                        metadata,
                        commit_timestamp_ms: now,
                    },
                )),
            }
        }
    }
    let records =
        accepted.iter().map(|((t, p), c)| (offsets::key(&group_id, t, *p), Some(offsets::value(c)))).collect();
    // Acknowledged only once durable in the log, like any produce.
    let written = append_offset_records(shard, &group_id, records).await;
    if written.is_ok() {
        let mut groups = shard.groups.borrow_mut();
        let entry = groups
            .entry(group_id.clone())
            .or_insert_with(|| GroupEntry { group: Group::new(&group_id, now), offsets: Offsets::new() });
        entry.offsets.extend(accepted);
    }
    every_partition(&request, |topic, partition| {
        refused.get(&(topic.to_string(), partition)).copied().or(written.err())
    })
}
