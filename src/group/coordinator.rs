//! The group coordinator: what the shard coordinating a group does with each group request.
//!
//! Requests and answers are Sluice's types; the handlers decode Kafka's requests into them,
//! send them to the coordinating shard ([`super::route`]) and encode the answers, so nothing
//! here knows a wire version. Every function runs on the shard that owns the group's
//! `__consumer_offsets` partition, which is also where commits are appended; a commit is
//! acknowledged only once its records are in the log. Each first checks that the shard holds
//! the group's offsets partition loaded ([`coordinating`]): COORDINATOR_LOAD_IN_PROGRESS while
//! it loads, NOT_COORDINATOR when it does not hold it.

use std::collections::{HashMap, HashSet};

use bytes::Bytes;
use kafka_protocol::ResponseError;

use super::state::{Group, GroupState, JoinArgs, JoinResult, Reply, SyncResult};
use super::{CommittedOffset, GroupEntry, Offsets, append_offset_records, coordinating, limits, offsets};
use crate::runtime::now_ms;
use crate::shard::Shard;

/// JoinGroup: a member enters (or re-enters) the group's rebalance.
pub struct JoinGroup {
    pub group_id: String,
    pub args: JoinArgs,
}

/// SyncGroup: the leader hands out assignments; each member waits for its own.
pub struct SyncGroup {
    pub group_id: String,
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub generation_id: i32,
    /// (member id, assignment); only the leader's carries any.
    pub assignments: Vec<(String, Bytes)>,
    /// What the member expects the group to speak, if it says (SyncGroup v5+).
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
}

/// The answer to a [`SyncGroup`], with the group's protocol (none when the member was refused
/// before the group was looked at).
pub struct Synced {
    pub result: SyncResult,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
}

pub struct Heartbeat {
    pub group_id: String,
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub generation_id: i32,
}

/// LeaveGroup: these members (member id, instance id) leave at once.
pub struct LeaveGroup {
    pub group_id: String,
    pub members: Vec<(String, Option<String>)>,
}

/// OffsetCommit by a member of the group (or, with a negative generation, by a client outside
/// any group).
pub struct CommitOffsets {
    pub group_id: String,
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub generation_id: i32,
    /// In request order.
    pub offsets: Vec<OffsetToCommit>,
}

pub struct OffsetToCommit {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
}

/// Committed offsets of one group; `topics: None` asks for all of them.
pub struct FetchOffsets {
    pub group_id: String,
    pub topics: Option<Vec<(String, Vec<i32>)>>,
}

/// (topic, partition, committed offset if any), or the group-level error.
pub type Committed = Result<Vec<(String, i32, Option<CommittedOffset>)>, ResponseError>;

/// Every group this shard coordinates.
pub struct ListGroups;

/// (group id, protocol type, state) of one group.
pub type ListedGroup = (String, String, GroupState);

pub struct DescribeGroup {
    pub group_id: String,
}

/// A group as DescribeGroups shows it.
pub struct GroupDescription {
    pub state: GroupState,
    pub protocol_type: String,
    pub protocol: String,
    pub members: Vec<MemberDescription>,
}

pub struct MemberDescription {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    /// The member's metadata for the group's protocol.
    pub metadata: Bytes,
    pub assignment: Bytes,
}

/// DeleteGroups for one group: removes it and its committed offsets, if it is empty.
pub struct DeleteGroup {
    pub group_id: String,
}

/// OffsetDelete: removes the group's committed offsets of these partitions.
pub struct DeleteOffsets {
    pub group_id: String,
    pub topics: Vec<(String, Vec<i32>)>,
}

pub async fn join(shard: &Shard, JoinGroup { group_id, args }: JoinGroup) -> JoinResult {
    if let Err(error) = coordinating(shard, &group_id) {
        return JoinResult::error(error, "");
    }
    let now = now_ms();
    let reply = {
        let mut groups = shard.groups.borrow_mut();
        let entry = groups
            .entry(group_id.clone())
            .or_insert_with(|| GroupEntry { group: Group::new(&group_id, now), offsets: Offsets::new() });
        entry.group.join(args, &limits(shard), now)
    };
    match reply {
        Reply::Now(result) => result,
        Reply::Later(answer) => {
            answer.await.unwrap_or_else(|_| JoinResult::error(ResponseError::CoordinatorNotAvailable, ""))
        }
    }
}

pub async fn sync(shard: &Shard, request: SyncGroup) -> Synced {
    let refused = |error| Synced { result: Err(error), protocol_type: None, protocol_name: None };
    if let Err(error) = coordinating(shard, &request.group_id) {
        return refused(error);
    }
    let (reply, protocol_type, protocol_name) = {
        let mut groups = shard.groups.borrow_mut();
        let Some(entry) = groups.get_mut(&request.group_id) else {
            return refused(ResponseError::UnknownMemberId);
        };
        let group = &mut entry.group;
        // v5 clients state what they expect; a mismatch means they are in another group's world.
        let mismatch = request.protocol_type.as_ref().is_some_and(|t| group.protocol_type.as_ref() != Some(t))
            || request.protocol_name.as_ref().is_some_and(|n| group.protocol_name.as_ref() != Some(n));
        if mismatch {
            return refused(ResponseError::InconsistentGroupProtocol);
        }
        let reply = group.sync(
            &request.member_id,
            request.group_instance_id.as_deref(),
            request.generation_id,
            request.assignments,
            now_ms(),
        );
        (reply, group.protocol_type.clone(), group.protocol_name.clone())
    };
    let result = match reply {
        Reply::Now(result) => result,
        Reply::Later(answer) => answer.await.unwrap_or(Err(ResponseError::CoordinatorNotAvailable)),
    };
    Synced { result, protocol_type, protocol_name }
}

pub fn heartbeat(shard: &Shard, request: Heartbeat) -> Result<(), ResponseError> {
    coordinating(shard, &request.group_id)?;
    let mut groups = shard.groups.borrow_mut();
    let entry = groups.get_mut(&request.group_id).ok_or(ResponseError::UnknownMemberId)?;
    entry.group.heartbeat(&request.member_id, request.group_instance_id.as_deref(), request.generation_id, now_ms())
}

/// Each member's result in request order, or the group-level error.
pub fn leave(shard: &Shard, request: LeaveGroup) -> Result<Vec<Result<(), ResponseError>>, ResponseError> {
    coordinating(shard, &request.group_id)?;
    let limits = limits(shard);
    let now = now_ms();
    let mut groups = shard.groups.borrow_mut();
    let entry = groups.get_mut(&request.group_id).ok_or(ResponseError::UnknownMemberId)?;
    Ok(request
        .members
        .iter()
        .map(|(member_id, instance_id)| entry.group.leave(member_id, instance_id.as_deref(), now, &limits))
        .collect())
}

/// Each offset's error in request order (`None`: committed).
pub async fn commit(shard: &Shard, request: CommitOffsets) -> Vec<Option<ResponseError>> {
    let group_id = &request.group_id;
    let now = now_ms();
    if let Err(error) = coordinating(shard, group_id) {
        return request.offsets.iter().map(|_| Some(error)).collect();
    }
    let membership = match shard.groups.borrow().get(group_id) {
        Some(entry) => {
            entry.group.check_commit(&request.member_id, request.group_instance_id.as_deref(), request.generation_id)
        }
        None if request.generation_id < 0 => Ok(()),
        None => Err(ResponseError::IllegalGeneration),
    };
    if let Err(error) = membership {
        return request.offsets.iter().map(|_| Some(error)).collect();
    }

    let image = shard.metadata();
    let mut accepted = Vec::new();
    let mut refused = HashMap::new();
    for o in &request.offsets {
        let key = (o.topic.clone(), o.partition);
        let error = if image.owner(&o.topic, o.partition).is_none() {
            Some(ResponseError::UnknownTopicOrPartition)
        } else if o.metadata.len() > shard.config.offset_metadata_max_bytes {
            Some(ResponseError::OffsetMetadataTooLarge)
        } else {
            None
        };
        match error {
            Some(error) => {
                refused.insert(key, error);
            }
            None => accepted.push((
                key,
                CommittedOffset {
                    offset: o.offset,
                    leader_epoch: o.leader_epoch,
                    metadata: o.metadata.clone(),
                    commit_timestamp_ms: now,
                },
            )),
        }
    }
    let records = accepted.iter().map(|((t, p), c)| (offsets::key(group_id, t, *p), Some(offsets::value(c)))).collect();
    // Acknowledged only once durable in the log, like any produce.
    let written = append_offset_records(shard, group_id, records).await;
    if written.is_ok() {
        let mut groups = shard.groups.borrow_mut();
        let entry = groups
            .entry(group_id.clone())
            .or_insert_with(|| GroupEntry { group: Group::new(group_id, now), offsets: Offsets::new() });
        entry.offsets.extend(accepted);
    }
    // Every entry of a partition named twice gets the same answer.
    request.offsets.iter().map(|o| refused.get(&(o.topic.clone(), o.partition)).copied().or(written.err())).collect()
}

pub fn fetch_offsets(shard: &Shard, FetchOffsets { group_id, topics }: FetchOffsets) -> Committed {
    coordinating(shard, &group_id)?;
    let groups = shard.groups.borrow();
    let offsets = groups.get(&group_id).map(|e| &e.offsets);
    Ok(match topics {
        None => offsets
            .into_iter()
            .flatten()
            .map(|((topic, partition), committed)| (topic.clone(), *partition, Some(committed.clone())))
            .collect(),
        Some(topics) => topics
            .into_iter()
            .flat_map(|(topic, partitions)| partitions.into_iter().map(move |p| (topic.clone(), p)))
            .map(|(topic, partition)| {
                let committed = offsets.and_then(|o| o.get(&(topic.clone(), partition))).cloned();
                (topic, partition, committed)
            })
            .collect(),
    })
}

/// COORDINATOR_LOAD_IN_PROGRESS while any offsets partition of this shard loads: a list missing
/// that partition's groups is never given (Kafka's coordinator answers a ListGroups with this
/// error, and no groups, while one of its partitions loads).
pub fn list(shard: &Shard) -> Result<Vec<ListedGroup>, ResponseError> {
    if !shard.offsets_partitions.borrow().loading.is_empty() {
        return Err(ResponseError::CoordinatorLoadInProgress);
    }
    Ok(shard
        .groups
        .borrow()
        .values()
        .map(|e| (e.group.id.clone(), e.group.protocol_type.clone().unwrap_or_default(), e.group.state))
        .collect())
}

/// `None` when this coordinator has no such group.
pub fn describe(shard: &Shard, group_id: &str) -> Result<Option<GroupDescription>, ResponseError> {
    coordinating(shard, group_id)?;
    let groups = shard.groups.borrow();
    let Some(entry) = groups.get(group_id) else { return Ok(None) };
    let group = &entry.group;
    let protocol = group.protocol_name.clone().unwrap_or_default();
    let members = group
        .members
        .values()
        .map(|m| MemberDescription {
            member_id: m.member_id.clone(),
            group_instance_id: m.group_instance_id.clone(),
            client_id: m.client_id.clone(),
            client_host: m.client_host.clone(),
            metadata: m.metadata(&protocol),
            assignment: m.assignment.clone(),
        })
        .collect();
    Ok(Some(GroupDescription {
        state: group.state,
        protocol_type: group.protocol_type.clone().unwrap_or_default(),
        protocol,
        members,
    }))
}

pub async fn delete(shard: &Shard, group_id: &str) -> Option<ResponseError> {
    if let Err(error) = coordinating(shard, group_id) {
        return Some(error);
    }
    let keys: Vec<(String, i32)> = {
        let groups = shard.groups.borrow();
        let Some(entry) = groups.get(group_id) else { return Some(ResponseError::GroupIdNotFound) };
        if !entry.group.is_idle() {
            return Some(ResponseError::NonEmptyGroup);
        }
        entry.offsets.keys().cloned().collect()
    };
    let tombstones = keys.iter().map(|(t, p)| (offsets::key(group_id, t, *p), None)).collect();
    if let Err(error) = append_offset_records(shard, group_id, tombstones).await {
        return Some(error);
    }
    shard.groups.borrow_mut().remove(group_id);
    None
}

/// Each partition's error in request order (a topic the group still subscribes to keeps its
/// offsets), or the group-level error.
pub async fn delete_offsets(
    shard: &Shard,
    request: DeleteOffsets,
) -> Result<Vec<Option<ResponseError>>, ResponseError> {
    let group_id = &request.group_id;
    coordinating(shard, group_id)?;
    let (subscribed, known) = {
        let groups = shard.groups.borrow();
        let entry = groups.get(group_id).ok_or(ResponseError::GroupIdNotFound)?;
        (entry.group.subscribed_topics(), entry.offsets.keys().cloned().collect::<HashSet<_>>())
    };
    let mut deleted = Vec::new();
    let mut errors = Vec::new();
    for (topic, partitions) in &request.topics {
        for &partition in partitions {
            if subscribed.contains(topic) {
                errors.push(Some(ResponseError::GroupSubscribedToTopic));
                continue;
            }
            let key = (topic.clone(), partition);
            if known.contains(&key) {
                deleted.push(key);
            }
            errors.push(None);
        }
    }
    let tombstones = deleted.iter().map(|(t, p)| (offsets::key(group_id, t, *p), None)).collect();
    append_offset_records(shard, group_id, tombstones).await?;
    if let Some(entry) = shard.groups.borrow_mut().get_mut(group_id) {
        for key in &deleted {
            entry.offsets.remove(key);
        }
    }
    Ok(errors)
}
