//! LeaveGroup: members leave at once instead of waiting for their session to time out
//! (one member before v3, a batch from v3).

use std::rc::Rc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{LeaveGroupRequest, LeaveGroupResponse};

use super::groups::route;
use crate::group::limits;
use crate::runtime::now_ms;
use crate::shard::Shard;
use crate::shard::router::{GroupAnswer, GroupCall};

/// From v3 a request names a batch of members.
const BATCH_VERSION: i16 = 3;

pub async fn handle(shard: &Rc<Shard>, request: LeaveGroupRequest, version: i16) -> LeaveGroupResponse {
    if request.group_id.0.is_empty() {
        return LeaveGroupResponse::default().with_error_code(ResponseError::InvalidGroupId.code());
    }
    let group_id = request.group_id.0.to_string();
    let GroupAnswer::Leave(answer) = route(shard, &group_id, GroupCall::Leave { request, version }).await else {
        unreachable!("Leave answers with Leave");
    };
    answer
}

pub fn on_coordinator(shard: &Shard, request: LeaveGroupRequest, version: i16) -> LeaveGroupResponse {
    let limits = limits(shard);
    let now = now_ms();
    let mut groups = shard.groups.borrow_mut();
    let Some(entry) = groups.get_mut(request.group_id.0.as_str()) else {
        return LeaveGroupResponse::default().with_error_code(ResponseError::UnknownMemberId.code());
    };
    if version < BATCH_VERSION {
        let result = entry.group.leave(request.member_id.as_str(), None, now, &limits);
        return LeaveGroupResponse::default().with_error_code(result.err().map_or(0, |e| e.code()));
    }
    let members = request
        .members
        .into_iter()
        .map(|m| {
            let result =
                entry.group.leave(m.member_id.as_str(), m.group_instance_id.as_ref().map(|s| s.as_str()), now, &limits);
            MemberResponse::default()
                .with_member_id(m.member_id)
                .with_group_instance_id(m.group_instance_id)
                .with_error_code(result.err().map_or(0, |e| e.code()))
        })
        .collect();
    LeaveGroupResponse::default().with_members(members)
}
