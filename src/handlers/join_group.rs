//! JoinGroup: a member enters (or re-enters) its group's rebalance; the answer comes once the
//! rebalance's join phase ends, with the member list for the leader.

use std::rc::Rc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::{JoinGroupRequest, JoinGroupResponse};

use super::str_bytes;
use crate::group::coordinator::JoinGroup;
use crate::group::route;
use crate::group::state::{JoinArgs, JoinResult};
use crate::shard::Shard;

/// From v4 a new member must come back with the id it is given (KIP-394).
const KNOWN_MEMBER_ID_VERSION: i16 = 4;
/// From v7 the protocol name may be null.
const NULLABLE_PROTOCOL_NAME_VERSION: i16 = 7;

/// Who sent a request, as DescribeGroups reports members.
pub struct ClientInfo {
    pub client_id: String,
    pub client_host: String,
}

pub async fn handle(
    shard: &Rc<Shard>,
    request: JoinGroupRequest,
    version: i16,
    client: ClientInfo,
) -> JoinGroupResponse {
    if request.group_id.0.is_empty() {
        return response(JoinResult::error(ResponseError::InvalidGroupId, ""), version);
    }
    let group_id = request.group_id.0.to_string();
    let args = JoinArgs {
        member_id: request.member_id.to_string(),
        group_instance_id: request.group_instance_id.map(|s| s.to_string()),
        client_id: client.client_id,
        client_host: client.client_host,
        session_timeout_ms: i64::from(request.session_timeout_ms),
        // v0 has no rebalance timeout: it is the session timeout.
        rebalance_timeout_ms: i64::from(if version == 0 {
            request.session_timeout_ms
        } else {
            request.rebalance_timeout_ms
        }),
        protocol_type: request.protocol_type.to_string(),
        protocols: request.protocols.into_iter().map(|p| (p.name.to_string(), p.metadata)).collect(),
        require_known_member_id: version >= KNOWN_MEMBER_ID_VERSION,
    };
    let result = route(shard, &group_id.clone(), JoinGroup { group_id, args }).await;
    response(result.unwrap_or_else(|error| JoinResult::error(error, "")), version)
}

fn response(result: JoinResult, version: i16) -> JoinGroupResponse {
    let protocol_name = match (result.protocol_name, version >= NULLABLE_PROTOCOL_NAME_VERSION) {
        (Some(name), _) => Some(str_bytes(&name)),
        (None, true) => None,
        (None, false) => Some(str_bytes("")),
    };
    JoinGroupResponse::default()
        .with_error_code(result.error.map_or(0, |e| e.code()))
        .with_generation_id(result.generation_id)
        .with_protocol_type(result.protocol_type.map(|t| str_bytes(&t)))
        .with_protocol_name(protocol_name)
        .with_leader(str_bytes(&result.leader_id))
        .with_member_id(str_bytes(&result.member_id))
        .with_members(
            result
                .members
                .into_iter()
                .map(|(member_id, instance_id, metadata)| {
                    JoinGroupResponseMember::default()
                        .with_member_id(str_bytes(&member_id))
                        .with_group_instance_id(instance_id.map(|i| str_bytes(&i)))
                        .with_metadata(metadata)
                })
                .collect(),
        )
}
