//! SyncGroup: the leader hands out assignments; every member gets its own once the leader has.

use std::rc::Rc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::{SyncGroupRequest, SyncGroupResponse};

use super::groups::route;
use super::str_bytes;
use crate::group::state::{Reply, SyncResult};
use crate::runtime::now_ms;
use crate::shard::Shard;
use crate::shard::router::{GroupAnswer, GroupCall};

/// From v5 the request and response name the protocol type and name.
const PROTOCOL_FIELDS_VERSION: i16 = 5;

pub async fn handle(shard: &Rc<Shard>, request: SyncGroupRequest, version: i16) -> SyncGroupResponse {
    if request.group_id.0.is_empty() {
        return SyncGroupResponse::default().with_error_code(ResponseError::InvalidGroupId.code());
    }
    let group_id = request.group_id.0.to_string();
    let GroupAnswer::Sync(answer) = route(shard, &group_id, GroupCall::Sync { request, version }).await else {
        unreachable!("Sync answers with Sync");
    };
    answer
}

pub async fn on_coordinator(shard: &Rc<Shard>, request: SyncGroupRequest, version: i16) -> SyncGroupResponse {
    let group_id = request.group_id.0.as_str();
    let member_id = request.member_id.to_string();
    let instance_id = request.group_instance_id.as_ref().map(|s| s.to_string());
    let assignments = request.assignments.into_iter().map(|a| (a.member_id.to_string(), a.assignment)).collect();
    let (reply, protocol) = {
        let mut groups = shard.groups.borrow_mut();
        let Some(entry) = groups.get_mut(group_id) else {
            return SyncGroupResponse::default().with_error_code(ResponseError::UnknownMemberId.code());
        };
        let group = &mut entry.group;
        // v5 clients state what they expect; a mismatch means they are in another group's world.
        let mismatch =
            request.protocol_type.as_ref().is_some_and(|t| group.protocol_type.as_deref() != Some(t.as_str()))
                || request.protocol_name.as_ref().is_some_and(|n| group.protocol_name.as_deref() != Some(n.as_str()));
        if mismatch {
            return SyncGroupResponse::default().with_error_code(ResponseError::InconsistentGroupProtocol.code());
        }
        let reply = group.sync(&member_id, instance_id.as_deref(), request.generation_id, assignments, now_ms());
        (reply, (group.protocol_type.clone(), group.protocol_name.clone()))
    };
    let result: SyncResult = match reply {
        Reply::Now(result) => result,
        Reply::Later(answer) => answer.await.unwrap_or(Err(ResponseError::CoordinatorNotAvailable)),
    };
    let response = match result {
        Ok(assignment) => SyncGroupResponse::default().with_assignment(assignment),
        Err(error) => SyncGroupResponse::default().with_error_code(error.code()),
    };
    if version >= PROTOCOL_FIELDS_VERSION {
        response
            .with_protocol_type(protocol.0.map(|t| str_bytes(&t)))
            .with_protocol_name(protocol.1.map(|n| str_bytes(&n)))
    } else {
        response
    }
}
