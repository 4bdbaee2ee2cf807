//! ListGroups: every shard lists the groups it coordinates; the answers are merged, unless a
//! shard is still loading an offsets partition's groups: then, as Kafka's coordinator,
//! COORDINATOR_LOAD_IN_PROGRESS and no groups, rather than a list missing some.

use std::rc::Rc;

use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{GroupId, ListGroupsRequest, ListGroupsResponse};

use super::str_bytes;
use crate::group::coordinator::ListGroups;
use crate::shard::Shard;

/// Sluice's groups all speak the classic protocol (KIP-848 groups are "consumer").
const GROUP_TYPE: &str = "classic";

pub async fn handle(shard: &Rc<Shard>, request: ListGroupsRequest) -> ListGroupsResponse {
    let states: Vec<String> = request.states_filter.iter().map(|s| s.to_lowercase()).collect();
    let types: Vec<String> = request.types_filter.iter().map(|s| s.to_lowercase()).collect();
    let mut groups = Vec::new();
    for listed in shard.on_every_shard(|| ListGroups).await {
        let listed = match listed {
            Ok(listed) => listed,
            Err(error) => return ListGroupsResponse::default().with_error_code(error.code()),
        };
        for (group_id, protocol_type, state) in listed {
            let wanted = (states.is_empty() || states.contains(&state.name().to_lowercase()))
                && (types.is_empty() || types.iter().any(|t| t == GROUP_TYPE));
            if wanted {
                groups.push(
                    ListedGroup::default()
                        .with_group_id(GroupId(str_bytes(&group_id)))
                        .with_protocol_type(str_bytes(&protocol_type))
                        .with_group_state(str_bytes(state.name()))
                        .with_group_type(str_bytes(GROUP_TYPE)),
                );
            }
        }
    }
    groups.sort_by(|a, b| a.group_id.0.cmp(&b.group_id.0));
    ListGroupsResponse::default().with_groups(groups)
}
