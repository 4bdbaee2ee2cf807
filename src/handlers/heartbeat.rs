//! Heartbeat: keeps a member's session alive and tells it when to rejoin.

use std::rc::Rc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::{HeartbeatRequest, HeartbeatResponse};

use super::groups::route;
use crate::runtime::now_ms;
use crate::shard::Shard;
use crate::shard::router::{GroupAnswer, GroupCall};

pub async fn handle(shard: &Rc<Shard>, request: HeartbeatRequest) -> HeartbeatResponse {
    if request.group_id.0.is_empty() {
        return HeartbeatResponse::default().with_error_code(ResponseError::InvalidGroupId.code());
    }
    let group_id = request.group_id.0.to_string();
    let GroupAnswer::Heartbeat(answer) = route(shard, &group_id, GroupCall::Heartbeat { request }).await else {
        unreachable!("Heartbeat answers with Heartbeat");
    };
    answer
}

pub fn on_coordinator(shard: &Shard, request: HeartbeatRequest) -> HeartbeatResponse {
    let mut groups = shard.groups.borrow_mut();
    let result = match groups.get_mut(request.group_id.0.as_str()) {
        None => Err(ResponseError::UnknownMemberId),
        Some(entry) => entry.group.heartbeat(
            request.member_id.as_str(),
            request.group_instance_id.as_ref().map(|s| s.as_str()),
            request.generation_id,
            now_ms(),
        ),
    };
    HeartbeatResponse::default().with_error_code(result.err().map_or(0, |e| e.code()))
}
