//! OffsetDelete: removes a group's committed offsets for some partitions, unless the group's
//! members still subscribe to those topics.

use std::rc::Rc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::offset_delete_response::{OffsetDeleteResponsePartition, OffsetDeleteResponseTopic};
use kafka_protocol::messages::{OffsetDeleteRequest, OffsetDeleteResponse};

use super::groups::route;
use crate::group::{append_offset_records, offsets};
use crate::shard::Shard;
use crate::shard::router::{GroupAnswer, GroupCall};

pub async fn handle(shard: &Rc<Shard>, request: OffsetDeleteRequest) -> OffsetDeleteResponse {
    if request.group_id.0.is_empty() {
        return OffsetDeleteResponse::default().with_error_code(ResponseError::InvalidGroupId.code());
    }
    let group_id = request.group_id.0.to_string();
    let GroupAnswer::DeleteOffsets(answer) = route(shard, &group_id, GroupCall::DeleteOffsets { request }).await else {
        unreachable!("DeleteOffsets answers with DeleteOffsets");
    };
    answer
}

pub async fn on_coordinator(shard: &Shard, request: OffsetDeleteRequest) -> OffsetDeleteResponse {
    let group_id = request.group_id.0.to_string();
    let (subscribed, known) = {
        let groups = shard.groups.borrow();
        let Some(entry) = groups.get(&group_id) else {
            return OffsetDeleteResponse::default().with_error_code(ResponseError::GroupIdNotFound.code());
        };
        (entry.group.subscribed_topics(), entry.offsets.keys().cloned().collect::<std::collections::HashSet<_>>())
    };
    let mut deleted = Vec::new();
    let topics = request
        .topics
        .iter()
        .map(|t| {
            let name = t.name.0.to_string();
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let error = if subscribed.contains(&name) {
                        Some(ResponseError::GroupSubscribedToTopic)
                    } else {
                        let key = (name.clone(), p.partition_index);
                        if known.contains(&key) {
                            deleted.push(key);
                        }
                        None
                    };
                    OffsetDeleteResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(error.map_or(0, |e| e.code()))
                })
                .collect();
            OffsetDeleteResponseTopic::default().with_name(t.name.clone()).with_partitions(partitions)
        })
        .collect();
    let tombstones = deleted.iter().map(|(t, p)| (offsets::key(&group_id, t, *p), None)).collect();
    if let Err(error) = append_offset_records(shard, &group_id, tombstones).await {
        return OffsetDeleteResponse::default().with_error_code(error.code());
    }
    if let Some(entry) = shard.groups.borrow_mut().get_mut(&group_id) {
        for key in &deleted {
            entry.offsets.remove(key);
        }
    }
    OffsetDeleteResponse::default().with_topics(topics)
}
