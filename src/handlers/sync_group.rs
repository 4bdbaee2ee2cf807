//! SyncGroup: the leader hands out assignments; every member gets its own once the leader has.

use std::rc::Rc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::{SyncGroupRequest, SyncGroupResponse};

use super::str_bytes;
use crate::group::coordinator::{SyncGroup, Synced};
use crate::group::route;
use crate::shard::Shard;

/// From v5 the request and response name the protocol type and name.
const PROTOCOL_FIELDS_VERSION: i16 = 5;

pub async fn handle(shard: &Rc<Shard>, request: SyncGroupRequest, version: i16) -> SyncGroupResponse {
    if request.group_id.0.is_empty() {
        return SyncGroupResponse::default().with_error_code(ResponseError::InvalidGroupId.code());
    }
    let group_id = request.group_id.0.to_string();
    let sync = SyncGroup {
        group_id: group_id.clone(),
        member_id: request.member_id.to_string(),
        group_instance_id: request.group_instance_id.map(|s| s.to_string()),
        generation_id: request.generation_id,
        assignments: request.assignments.into_iter().map(|a| (a.member_id.to_string(), a.assignment)).collect(),
        protocol_type: request.protocol_type.map(|t| t.to_string()),
        protocol_name: request.protocol_name.map(|n| n.to_string()),
    };
    let synced = route(shard, &group_id, sync).await.unwrap_or_else(|error| Synced {
        result: Err(error),
        protocol_type: None,
        protocol_name: None,
    });
    let response = match synced.result {
        Ok(assignment) => SyncGroupResponse::default().with_assignment(assignment),
        Err(error) => SyncGroupResponse::default().with_error_code(error.code()),
    };
    if version >= PROTOCOL_FIELDS_VERSION {
        response
            .with_protocol_type(synced.protocol_type.map(|t| str_bytes(&t)))
            .with_protocol_name(synced.protocol_name.map(|n| str_bytes(&n)))
    } else {
        response
    }
}
