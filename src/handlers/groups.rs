//! What the consumer-group APIs share: the trip to the coordinating shard and, there, the
//! dispatch to each API's `on_coordinator`.

use std::rc::Rc;

use super::{
    delete_groups, describe_groups, heartbeat, join_group, leave_group, list_groups, offset_commit, offset_delete,
    offset_fetch, sync_group,
};
use crate::group::coordinator_shard;
use crate::shard::Shard;
use crate::shard::router::{GroupAnswer, GroupCall};

/// Runs `call` on the shard coordinating `group_id`.
pub async fn route(shard: &Rc<Shard>, group_id: &str, call: GroupCall) -> GroupAnswer {
    let owner = coordinator_shard(&shard.metadata(), group_id);
    shard.invoke_on(owner, call).await
}

/// On the coordinating shard: hands the call to its API.
pub async fn on_coordinator(shard: &Rc<Shard>, call: GroupCall) -> GroupAnswer {
    match call {
        GroupCall::Join { request, version, client } => {
            GroupAnswer::Join(join_group::on_coordinator(shard, request, version, client).await)
        }
        GroupCall::Sync { request, version } => {
            GroupAnswer::Sync(sync_group::on_coordinator(shard, request, version).await)
        }
        GroupCall::Heartbeat { request } => GroupAnswer::Heartbeat(heartbeat::on_coordinator(shard, request)),
        GroupCall::Leave { request, version } => {
            GroupAnswer::Leave(leave_group::on_coordinator(shard, request, version))
        }
        GroupCall::Commit { request } => GroupAnswer::Commit(offset_commit::on_coordinator(shard, request).await),
        GroupCall::FetchOffsets { group_id, topics } => {
            GroupAnswer::Offsets(offset_fetch::on_coordinator(shard, &group_id, topics))
        }
        GroupCall::List => GroupAnswer::List(list_groups::on_coordinator(shard)),
        GroupCall::Describe { group_id } => GroupAnswer::Describe(describe_groups::on_coordinator(shard, &group_id)),
        GroupCall::Delete { group_id } => GroupAnswer::Delete(delete_groups::on_coordinator(shard, &group_id).await),
        GroupCall::DeleteOffsets { request } => {
            GroupAnswer::DeleteOffsets(offset_delete::on_coordinator(shard, request).await)
        }
    }
}
