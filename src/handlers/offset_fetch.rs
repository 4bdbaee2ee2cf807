//! OffsetFetch: a group's committed offsets (one group before v8, a batch of groups from v8,
//! each answered by its own coordinator).

use std::rc::Rc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions, OffsetFetchResponseTopic,
    OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{OffsetFetchRequest, OffsetFetchResponse, TopicName};

use super::{str_bytes, topic_name};
use crate::group::coordinator::{Committed, FetchOffsets};
use crate::group::{CommittedOffset, route};
use crate::shard::Shard;

/// From v8 a request names a batch of groups.
const BATCH_VERSION: i16 = 8;

/// One topic's partitions with their committed offsets.
type TopicOffsets = (String, Vec<(i32, Option<CommittedOffset>)>);

async fn fetch(shard: &Rc<Shard>, group_id: String, topics: Option<Vec<(String, Vec<i32>)>>) -> Committed {
    if group_id.is_empty() {
        return Err(ResponseError::InvalidGroupId);
    }
    route(shard, &group_id.clone(), FetchOffsets { group_id, topics }).await.and_then(|answer| answer)
}

/// Committed offsets grouped by topic, in the order they came.
fn by_topic(offsets: Vec<(String, i32, Option<CommittedOffset>)>) -> Vec<TopicOffsets> {
    let mut topics: Vec<TopicOffsets> = Vec::new();
    for (topic, partition, committed) in offsets {
        match topics.last_mut() {
            Some((name, partitions)) if *name == topic => partitions.push((partition, committed)),
            _ => topics.push((topic, vec![(partition, committed)])),
        }
    }
    topics
}

/// (offset, leader epoch, metadata) as the response carries them; -1 when nothing was committed.
fn fields(committed: Option<CommittedOffset>) -> (i64, i32, String) {
    committed.map_or((-1, -1, String::new()), |c| (c.offset, c.leader_epoch, c.metadata))
}

pub async fn handle(shard: &Rc<Shard>, request: OffsetFetchRequest, version: i16) -> OffsetFetchResponse {
    if version < BATCH_VERSION {
        let topics =
            request.topics.map(|ts| ts.into_iter().map(|t| (t.name.0.to_string(), t.partition_indexes)).collect());
        return match fetch(shard, request.group_id.0.to_string(), topics).await {
            Err(error) => OffsetFetchResponse::default().with_error_code(error.code()),
            Ok(offsets) => OffsetFetchResponse::default().with_topics(
                by_topic(offsets)
                    .into_iter()
                    .map(|(topic, partitions)| {
                        OffsetFetchResponseTopic::default().with_name(topic_name(&topic)).with_partitions(
                            partitions
                                .into_iter()
                                .map(|(partition, committed)| {
                                    let (offset, epoch, metadata) = fields(committed);
                                    OffsetFetchResponsePartition::default()
                                        .with_partition_index(partition)
                                        .with_committed_offset(offset)
                                        .with_committed_leader_epoch(epoch)
                                        .with_metadata(Some(str_bytes(&metadata)))
                                })
                                .collect(),
                        )
                    })
                    .collect(),
            ),
        };
    }
    let lookups = request.groups.into_iter().map(|g| {
        let topics = g.topics.map(|ts| ts.into_iter().map(|t| (t.name.0.to_string(), t.partition_indexes)).collect());
        let group_id = g.group_id;
        async move { (group_id.clone(), fetch(shard, group_id.0.to_string(), topics).await) }
    });
    let groups = futures::future::join_all(lookups)
        .await
        .into_iter()
        .map(|(group_id, result)| {
            let group = OffsetFetchResponseGroup::default().with_group_id(group_id);
            match result {
                Err(error) => group.with_error_code(error.code()),
                Ok(offsets) => group.with_topics(
                    by_topic(offsets)
                        .into_iter()
                        .map(|(topic, partitions)| {
                            OffsetFetchResponseTopics::default()
                                .with_name(TopicName(str_bytes(&topic)))
                                .with_partitions(
                                    partitions
                                        .into_iter()
                                        .map(|(partition, committed)| {
                                            let (offset, epoch, metadata) = fields(committed);
                                            OffsetFetchResponsePartitions::default()
                                                .with_partition_index(partition)
                                                .with_committed_offset(offset)
                                                .with_committed_leader_epoch(epoch)
                                                .with_metadata(Some(str_bytes(&metadata)))
                                        })
                                        .collect(),
                                )
                        })
                        .collect(),
                ),
            }
        })
        .collect();
    OffsetFetchResponse::default().with_groups(groups)
}
