//! Heartbeat: keeps a member's session alive and tells it when to rejoin.

use std::rc::Rc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::{HeartbeatRequest, HeartbeatResponse};

use crate::group::coordinator::Heartbeat;
use crate::group::route;
use crate::shard::Shard;

pub async fn handle(shard: &Rc<Shard>, request: HeartbeatRequest) -> HeartbeatResponse {
    if request.group_id.0.is_empty() {
        return HeartbeatResponse::default().with_error_code(ResponseError::InvalidGroupId.code());
    }
    let group_id = request.group_id.0.to_string();
    let heartbeat = Heartbeat {
        group_id: group_id.clone(),
        member_id: request.member_id.to_string(),
        group_instance_id: request.group_instance_id.map(|s| s.to_string()),
        generation_id: request.generation_id,
    };
    let result = route(shard, &group_id, heartbeat).await.and_then(|answer| answer);
    HeartbeatResponse::default().with_error_code(result.err().map_or(0, |e| e.code()))
}
