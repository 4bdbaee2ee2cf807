//! DeleteGroups: removes empty groups and their committed offsets (tombstones in
//! `__consumer_offsets`).

use std::rc::Rc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::{DeleteGroupsRequest, DeleteGroupsResponse};

use super::groups::route;
use crate::group::{append_offset_records, offsets};
use crate::shard::Shard;
use crate::shard::router::{GroupAnswer, GroupCall};

pub async fn handle(shard: &Rc<Shard>, request: DeleteGroupsRequest) -> DeleteGroupsResponse {
    let deletions = request.groups_names.into_iter().map(|group_id| async move {
        let error = if group_id.0.is_empty() {
            Some(ResponseError::InvalidGroupId)
        } else {
            let call = GroupCall::Delete { group_id: group_id.0.to_string() };
            let GroupAnswer::Delete(error) = route(shard, group_id.0.as_str(), call).await else {
                unreachable!("Delete answers with Delete");
            };
            error
        };
        DeletableGroupResult::default().with_group_id(group_id).with_error_code(error.map_or(0, |e| e.code()))
    });
    DeleteGroupsResponse::default().with_results(futures::future::join_all(deletions).await)
}

pub async fn on_coordinator(shard: &Shard, group_id: &str) -> Option<ResponseError> {
    let keys: Vec<(String, i32)> = {
        let groups = shard.groups.borrow();
        let Some(entry) = groups.get(group_id) else { return Some(ResponseError::GroupIdNotFound) };
        if !entry.group.is_idle() {
            return Some(ResponseError::NonEmptyGroup);
        }
        entry.offsets.keys().cloned().collect()
    };
    let tombstones = keys.iter().map(|(t, p)| (offsets::key(group_id, t, *p), None)).collect();
    if let Err(error) = append_offset_records(shard, group_id, tombstones).await {
        return Some(error);
    }
    shard.groups.borrow_mut().remove(group_id);
    None
}
