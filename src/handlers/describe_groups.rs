//! DescribeGroups: state, protocol and members (with their assignments) of each group.

use std::rc::Rc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::{DescribeGroupsRequest, DescribeGroupsResponse, GroupId};

use super::groups::route;
use super::str_bytes;
use crate::shard::Shard;
use crate::shard::router::{GroupAnswer, GroupCall};

/// From v6 an unknown group is an error rather than a group in state Dead.
const NOT_FOUND_VERSION: i16 = 6;
/// Sentinel for "authorized operations not asked for".
const AUTHORIZED_OPERATIONS_OMITTED: i32 = i32::MIN;

pub async fn handle(shard: &Rc<Shard>, request: DescribeGroupsRequest, version: i16) -> DescribeGroupsResponse {
    let lookups = request.groups.into_iter().map(|group_id| async move {
        let GroupAnswer::Describe(described) =
            route(shard, group_id.0.as_str(), GroupCall::Describe { group_id: group_id.0.to_string() }).await
        else {
            unreachable!("Describe answers with Describe");
        };
        if described.group_state.as_str() == "Dead" && version >= NOT_FOUND_VERSION {
            described.with_error_code(ResponseError::GroupIdNotFound.code())
        } else {
            described
        }
    });
    DescribeGroupsResponse::default().with_groups(futures::future::join_all(lookups).await)
}

pub fn on_coordinator(shard: &Shard, group_id: &str) -> DescribedGroup {
    let described = DescribedGroup::default()
        .with_group_id(GroupId(str_bytes(group_id)))
        .with_authorized_operations(AUTHORIZED_OPERATIONS_OMITTED);
    let groups = shard.groups.borrow();
    let Some(entry) = groups.get(group_id) else {
        return described.with_group_state(str_bytes("Dead"));
    };
    let group = &entry.group;
    let protocol = group.protocol_name.clone().unwrap_or_default();
    let members = group
        .members
        .values()
        .map(|m| {
            DescribedGroupMember::default()
                .with_member_id(str_bytes(&m.member_id))
                .with_group_instance_id(m.group_instance_id.as_deref().map(str_bytes))
                .with_client_id(str_bytes(&m.client_id))
                .with_client_host(str_bytes(&m.client_host))
                .with_member_metadata(m.metadata(&protocol))
                .with_member_assignment(m.assignment.clone())
        })
        .collect();
    described
        .with_group_state(str_bytes(group.state.name()))
        .with_protocol_type(str_bytes(group.protocol_type.as_deref().unwrap_or("")))
        .with_protocol_data(str_bytes(&protocol))
        .with_members(members)
}
