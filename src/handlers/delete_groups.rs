//! DeleteGroups: removes empty groups and their committed offsets (tombstones in
//! `__consumer_offsets`).

use std::rc::Rc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::{DeleteGroupsRequest, DeleteGroupsResponse};

use crate::group::coordinator::DeleteGroup;
use crate::group::route;
use crate::shard::Shard;

pub async fn handle(shard: &Rc<Shard>, request: DeleteGroupsRequest) -> DeleteGroupsResponse {
    let deletions = request.groups_names.into_iter().map(|group_id| async move {
        let error = if group_id.0.is_empty() {
            Some(ResponseError::InvalidGroupId)
        } else {
            let deleted = route(shard, group_id.0.as_str(), DeleteGroup { group_id: group_id.0.to_string() }).await;
            deleted.unwrap_or_else(Some)
        };
        DeletableGroupResult::default().with_group_id(group_id).with_error_code(error.map_or(0, |e| e.code()))
    });
    DeleteGroupsResponse::default().with_results(futures::future::join_all(deletions).await)
}
