//! DescribeGroups: state, protocol and members (with their assignments) of each group.

use std::rc::Rc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::{DescribeGroupsRequest, DescribeGroupsResponse};

use super::str_bytes;
use crate::group::coordinator::DescribeGroup;
use crate::group::route;
use crate::group::state::GroupState;
use crate::shard::Shard;

/// From v6 an unknown group is an error rather than a group in state Dead.
const NOT_FOUND_VERSION: i16 = 6;
/// Sentinel for "authorized operations not asked for".
const AUTHORIZED_OPERATIONS_OMITTED: i32 = i32::MIN;

pub async fn handle(shard: &Rc<Shard>, request: DescribeGroupsRequest, version: i16) -> DescribeGroupsResponse {
    let lookups = request.groups.into_iter().map(|group_id| async move {
        let description = route(shard, group_id.0.as_str(), DescribeGroup { group_id: group_id.0.to_string() })
            .await
            .and_then(|answer| answer);
        let described =
            DescribedGroup::default().with_group_id(group_id).with_authorized_operations(AUTHORIZED_OPERATIONS_OMITTED);
        let description = match description {
            Ok(description) => description,
            Err(error) => return described.with_error_code(error.code()),
        };
        let Some(group) = description else {
            return match version >= NOT_FOUND_VERSION {
                true => {
                    described.with_group_state(str_bytes("Dead")).with_error_code(ResponseError::GroupIdNotFound.code())
                }
                false => described.with_group_state(str_bytes("Dead")),
            };
        };
        let members = group
            .members
            .into_iter()
            .map(|m| {
                DescribedGroupMember::default()
                    .with_member_id(str_bytes(&m.member_id))
                    .with_group_instance_id(m.group_instance_id.as_deref().map(str_bytes))
                    .with_client_id(str_bytes(&m.client_id))
                    .with_client_host(str_bytes(&m.client_host))
                    .with_member_metadata(m.metadata)
                    .with_member_assignment(m.assignment)
            })
            .collect();
        let described = described
            .with_group_state(str_bytes(group.state.name()))
            .with_protocol_type(str_bytes(&group.protocol_type))
            .with_protocol_data(str_bytes(&group.protocol))
            .with_members(members);
        if group.state == GroupState::Dead && version >= NOT_FOUND_VERSION {
            described.with_error_code(ResponseError::GroupIdNotFound.code())
        } else {
            described
        }
    });
    DescribeGroupsResponse::default().with_groups(futures::future::join_all(lookups).await)
}
