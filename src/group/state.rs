//! One consumer group's membership state machine, as Kafka's classic group protocol has it:
//! Empty → PreparingRebalance → CompletingRebalance → Stable (and back), plus Dead.
//!
//! Pure state: no I/O, no clock of its own (every call takes `now_ms`). JoinGroup and
//! SyncGroup calls that must wait for other members get a receiver that resolves when the
//! rebalance moves on. Invariants: a member id is in at most one of `members` and
//! `pending_members`; `leader_id` names a member whenever the state is CompletingRebalance or
//! Stable; the generation only grows.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use futures::channel::oneshot;
use kafka_protocol::ResponseError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl GroupState {
    /// The name Kafka's tools print.
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

/// Group-protocol limits, from the broker's settings.
#[derive(Debug, Clone, Copy)]
pub struct GroupLimits {
    pub min_session_timeout_ms: i64,
    pub max_session_timeout_ms: i64,
    pub initial_rebalance_delay_ms: i64,
    pub max_size: usize,
}

/// A JoinGroup as the state machine sees it.
pub struct JoinArgs {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i64,
    pub rebalance_timeout_ms: i64,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    /// JoinGroup v4+ asks a new member to come back with the id it is given.
    pub require_known_member_id: bool,
}

/// What a JoinGroup gets back.
#[derive(Debug, Clone)]
pub struct JoinResult {
    pub error: Option<ResponseError>,
    pub generation_id: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader_id: String,
    pub member_id: String,
    /// Only for the leader: every member with its metadata for the chosen protocol.
    pub members: Vec<(String, Option<String>, Bytes)>,
}

impl JoinResult {
    pub fn error(error: ResponseError, member_id: &str) -> JoinResult {
        JoinResult {
            error: Some(error),
            generation_id: -1,
            protocol_type: None,
            protocol_name: None,
            leader_id: String::new(),
            member_id: member_id.to_string(),
            members: Vec::new(),
        }
    }
}

/// What a SyncGroup gets back: its assignment, or why not.
pub type SyncResult = Result<Bytes, ResponseError>;

/// An answer now, or later through the receiver.
pub enum Reply<T> {
    Now(T),
    Later(oneshot::Receiver<T>),
}

pub struct Member {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i64,
    pub rebalance_timeout_ms: i64,
    /// Supported protocols in the member's order of preference.
    pub protocols: Vec<(String, Bytes)>,
    pub assignment: Bytes,
    last_heartbeat_ms: i64,
    join_waiter: Option<oneshot::Sender<JoinResult>>,
    sync_waiter: Option<oneshot::Sender<SyncResult>>,
}

impl Member {
    /// This member's metadata for `protocol`.
    pub fn metadata(&self, protocol: &str) -> Bytes {
        self.protocols.iter().find(|(name, _)| name == protocol).map(|(_, m)| m.clone()).unwrap_or_default()
    }
}

pub struct Group {
    pub id: String,
    pub state: GroupState,
    pub generation_id: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader_id: Option<String>,
    pub members: BTreeMap<String, Member>,
    /// Ids handed out with MEMBER_ID_REQUIRED, with the time they lapse if unused.
    pending_members: HashMap<String, i64>,
    /// group.instance.id → member id of static members.
    static_members: HashMap<String, String>,
    /// The rebalance completes by then even if some members have not rejoined.
    rebalance_deadline_ms: i64,
    /// A rebalance of a group that was empty waits this long for more members.
    initial_delay_until_ms: i64,
    /// Since when the group has had no members (for offset expiry).
    pub empty_since_ms: Option<i64>,
}

impl Group {
    pub fn new(id: &str, now_ms: i64) -> Group {
        Group {
            id: id.to_string(),
            state: GroupState::Empty,
            generation_id: 0,
            protocol_type: None,
            protocol_name: None,
            leader_id: None,
            members: BTreeMap::new(),
            pending_members: HashMap::new(),
            static_members: HashMap::new(),
            rebalance_deadline_ms: 0,
            initial_delay_until_ms: 0,
            empty_since_ms: Some(now_ms),
        }
    }

    /// Kafka's member id shape: the client id and a unique suffix.
    fn new_member_id(client_id: &str) -> String {
        format!("{client_id}-{}", uuid::Uuid::new_v4())
    }

    /// Protocols every member (but `except`) supports, in the first such member's order.
    fn common_protocols(&self, except: Option<&str>) -> Vec<&str> {
        let mut sets =
            self.members.values().filter(|m| Some(m.member_id.as_str()) != except).map(|m| m.protocols.as_slice());
        let Some(first) = sets.next() else { return Vec::new() };
        let mut common: Vec<&str> = first.iter().map(|(n, _)| n.as_str()).collect();
        for set in sets {
            common.retain(|name| set.iter().any(|(n, _)| n == name));
        }
        common
    }

    pub fn join(&mut self, args: JoinArgs, limits: &GroupLimits, now_ms: i64) -> Reply<JoinResult> {
        let fail = |error| Reply::Now(JoinResult::error(error, &args.member_id));
        if self.state == GroupState::Dead {
            return fail(ResponseError::CoordinatorNotAvailable);
        }
        if args.session_timeout_ms < limits.min_session_timeout_ms
            || args.session_timeout_ms > limits.max_session_timeout_ms
        {
            return fail(ResponseError::InvalidSessionTimeout);
        }
        if args.protocol_type.is_empty() || args.protocols.is_empty() {
            return fail(ResponseError::InconsistentGroupProtocol);
        }
        let rejoining = self.members.contains_key(&args.member_id);
        if self.members.len() > usize::from(rejoining) {
            let same_type = self.protocol_type.as_deref() == Some(args.protocol_type.as_str());
            let candidates = self.common_protocols(Some(&args.member_id));
            if !same_type || !args.protocols.iter().any(|(n, _)| candidates.contains(&n.as_str())) {
                return fail(ResponseError::InconsistentGroupProtocol);
            }
        }

        if args.member_id.is_empty() {
            if let Some(instance) = args.group_instance_id.clone() {
                let new_id = Self::new_member_id(&args.client_id);
                return self.join_static(instance, new_id, args, now_ms, limits);
            }
            if self.members.len() >= limits.max_size {
                return fail(ResponseError::GroupMaxSizeReached);
            }
            let new_id = Self::new_member_id(&args.client_id);
            if args.require_known_member_id {
                self.pending_members.insert(new_id.clone(), now_ms + args.session_timeout_ms);
                return Reply::Now(JoinResult::error(ResponseError::MemberIdRequired, &new_id));
            }
            return self.add_member_and_rebalance(new_id, args, now_ms, limits);
        }

        if self.pending_members.remove(&args.member_id).is_some() {
            if self.members.len() >= limits.max_size {
                return fail(ResponseError::GroupMaxSizeReached);
            }
            let id = args.member_id.clone();
            return self.add_member_and_rebalance(id, args, now_ms, limits);
        }
        if !rejoining {
            let fenced = args.group_instance_id.as_ref().is_some_and(|i| self.static_members.contains_key(i));
            return fail(if fenced { ResponseError::FencedInstanceId } else { ResponseError::UnknownMemberId });
        }
        if let Some(instance) = &args.group_instance_id
            && self.static_members.get(instance) != Some(&args.member_id)
        {
            return fail(ResponseError::FencedInstanceId);
        }
        self.rejoin(args, now_ms, limits)
    }

    /// A static member (re)joining without a member id: it takes over its instance's slot.
    fn join_static(
        &mut self,
        instance: String,
        new_id: String,
        args: JoinArgs,
        now_ms: i64,
        limits: &GroupLimits,
    ) -> Reply<JoinResult> {
        let Some(old_id) = self.static_members.get(&instance).cloned() else {
            if self.members.len() >= limits.max_size {
                return Reply::Now(JoinResult::error(ResponseError::GroupMaxSizeReached, ""));
            }
            self.static_members.insert(instance, new_id.clone());
            return self.add_member_and_rebalance(new_id, args, now_ms, limits);
        };
        let mut member = self.members.remove(&old_id).expect("static members are members");
        // The old incarnation is fenced: whatever it waits for ends now.
        if let Some(waiter) = member.join_waiter.take() {
            let _ = waiter.send(JoinResult::error(ResponseError::FencedInstanceId, &old_id));
        }
        if let Some(waiter) = member.sync_waiter.take() {
            let _ = waiter.send(Err(ResponseError::FencedInstanceId));
        }
        let unchanged = member.protocols == args.protocols;
        member.member_id = new_id.clone();
        member.last_heartbeat_ms = now_ms;
        member.session_timeout_ms = args.session_timeout_ms;
        member.rebalance_timeout_ms = args.rebalance_timeout_ms;
        member.client_id = args.client_id.clone();
        member.client_host = args.client_host.clone();
        if self.leader_id.as_deref() == Some(old_id.as_str()) {
            self.leader_id = Some(new_id.clone());
        }
        self.static_members.insert(instance, new_id.clone());
        self.members.insert(new_id.clone(), member);
        // A restarted static member with the same subscription keeps its assignment: no rebalance.
        if self.state == GroupState::Stable && unchanged {
            return Reply::Now(self.join_result_for(&new_id, false));
        }
        self.rejoin(args_with_id(args, new_id), now_ms, limits)
    }

    fn add_member_and_rebalance(
        &mut self,
        member_id: String,
        args: JoinArgs,
        now_ms: i64,
        limits: &GroupLimits,
    ) -> Reply<JoinResult> {
        if self.members.is_empty() {
            self.protocol_type = Some(args.protocol_type.clone());
        }
        let (tx, rx) = oneshot::channel();
        self.members.insert(
            member_id.clone(),
            Member {
                member_id,
                group_instance_id: args.group_instance_id,
                client_id: args.client_id,
                client_host: args.client_host,
                session_timeout_ms: args.session_timeout_ms,
                rebalance_timeout_ms: args.rebalance_timeout_ms,
                protocols: args.protocols,
                assignment: Bytes::new(),
                last_heartbeat_ms: now_ms,
                join_waiter: Some(tx),
                sync_waiter: None,
            },
        );
        self.empty_since_ms = None;
        if self.state != GroupState::PreparingRebalance {
            self.prepare_rebalance(now_ms, limits);
        }
        self.try_complete_join(now_ms);
        Reply::Later(rx)
    }

    /// A known member joins again: answered at once when nothing changed, else it rebalances.
    fn rejoin(&mut self, args: JoinArgs, now_ms: i64, limits: &GroupLimits) -> Reply<JoinResult> {
        let member_id = args.member_id.clone();
        let is_leader = self.leader_id.as_deref() == Some(member_id.as_str());
        let member = self.members.get_mut(&member_id).expect("caller checked");
        let unchanged = member.protocols == args.protocols;
        member.protocols = args.protocols;
        member.session_timeout_ms = args.session_timeout_ms;
        member.rebalance_timeout_ms = args.rebalance_timeout_ms;
        member.last_heartbeat_ms = now_ms;
        match self.state {
            GroupState::CompletingRebalance | GroupState::Stable
                if unchanged && !(self.state == GroupState::Stable && is_leader) =>
            {
                Reply::Now(self.join_result_for(&member_id, is_leader))
            }
            _ => {
                let (tx, rx) = oneshot::channel();
                let member = self.members.get_mut(&member_id).expect("caller checked");
                if let Some(old) = member.join_waiter.replace(tx) {
                    let _ = old.send(JoinResult::error(ResponseError::RebalanceInProgress, &member_id));
                }
                if self.state != GroupState::PreparingRebalance {
                    self.prepare_rebalance(now_ms, limits);
                }
                self.try_complete_join(now_ms);
                Reply::Later(rx)
            }
        }
    }

    fn prepare_rebalance(&mut self, now_ms: i64, limits: &GroupLimits) {
        for member in self.members.values_mut() {
            if let Some(waiter) = member.sync_waiter.take() {
                let _ = waiter.send(Err(ResponseError::RebalanceInProgress));
            }
            member.assignment = Bytes::new();
        }
        let rebalance_timeout = self.members.values().map(|m| m.rebalance_timeout_ms).max().unwrap_or(0);
        self.rebalance_deadline_ms = now_ms + rebalance_timeout;
        self.initial_delay_until_ms = if self.state == GroupState::Empty {
            now_ms + limits.initial_rebalance_delay_ms.min(rebalance_timeout)
        } else {
            now_ms
        };
        self.state = GroupState::PreparingRebalance;
    }

    /// Ends the join phase once every member has rejoined (after the initial delay), or at the
    /// rebalance deadline without the stragglers.
    pub fn try_complete_join(&mut self, now_ms: i64) {
        if self.state != GroupState::PreparingRebalance {
            return;
        }
        let all_joined = self.members.values().all(|m| m.join_waiter.is_some());
        let delay_over = now_ms >= self.initial_delay_until_ms;
        if !(all_joined && delay_over) && now_ms < self.rebalance_deadline_ms {
            return;
        }
        let stragglers: Vec<String> =
            self.members.values().filter(|m| m.join_waiter.is_none()).map(|m| m.member_id.clone()).collect();
        for id in stragglers {
            self.remove_member(&id);
        }
        self.generation_id += 1;
        if self.members.is_empty() {
            self.state = GroupState::Empty;
            self.protocol_name = None;
            self.leader_id = None;
            self.empty_since_ms = Some(now_ms);
            return;
        }
        if !self.leader_id.as_ref().is_some_and(|l| self.members.contains_key(l)) {
            self.leader_id = self.members.keys().next().cloned();
        }
        self.protocol_name = Some(self.select_protocol());
        self.state = GroupState::CompletingRebalance;
        let leader = self.leader_id.clone().expect("set above");
        tracing::info!(
            group = %self.id,
            generation = self.generation_id,
            members = self.members.len(),
            protocol = self.protocol_name.as_deref().unwrap_or(""),
            "rebalance: join phase complete"
        );
        let ids: Vec<String> = self.members.keys().cloned().collect();
        for id in ids {
            let result = self.join_result_for(&id, id == leader);
            let member = self.members.get_mut(&id).expect("listed above");
            member.last_heartbeat_ms = now_ms;
            if let Some(waiter) = member.join_waiter.take() {
                let _ = waiter.send(result);
            }
        }
    }

    fn join_result_for(&self, member_id: &str, with_members: bool) -> JoinResult {
        let protocol = self.protocol_name.clone().unwrap_or_default();
        JoinResult {
            error: None,
            generation_id: self.generation_id,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol_name.clone(),
            leader_id: self.leader_id.clone().unwrap_or_default(),
            member_id: member_id.to_string(),
            members: if with_members {
                self.members
                    .values()
                    .map(|m| (m.member_id.clone(), m.group_instance_id.clone(), m.metadata(&protocol)))
                    .collect()
            } else {
                Vec::new()
            },
        }
    }

    /// Each member votes for its most preferred protocol that all support; most votes wins,
    /// ties going to the leader's preference.
    fn select_protocol(&self) -> String {
        let mut candidates = self.common_protocols(None);
        if let Some(leader) = self.leader_id.as_ref().and_then(|l| self.members.get(l)) {
            candidates.sort_by_key(|c| leader.protocols.iter().position(|(n, _)| n == c));
        }
        assert!(!candidates.is_empty(), "joins are refused unless a protocol is common to all");
        let mut votes: Vec<(usize, &str)> = candidates.iter().map(|c| (0, *c)).collect();
        for member in self.members.values() {
            if let Some((name, _)) = member.protocols.iter().find(|(n, _)| candidates.contains(&n.as_str())) {
                let slot = votes.iter_mut().find(|(_, c)| c == name).expect("a candidate");
                slot.0 += 1;
            }
        }
        // `max_by_key` would keep the last of equals: find the first instead.
        let best = votes.iter().map(|(n, _)| *n).max().expect("candidates exist");
        votes.iter().find(|(n, _)| *n == best).expect("the best exists").1.to_string()
    }

    /// Checks that `member_id` (and its instance id) may act in `generation_id`.
    fn check_member(
        &self,
        member_id: &str,
        group_instance_id: Option<&str>,
        generation_id: Option<i32>,
    ) -> Result<(), ResponseError> {
        if self.state == GroupState::Dead {
            return Err(ResponseError::CoordinatorNotAvailable);
        }
        if let Some(instance) = group_instance_id
            && let Some(owner) = self.static_members.get(instance)
            && owner != member_id
        {
            return Err(ResponseError::FencedInstanceId);
        }
        if !self.members.contains_key(member_id) {
            return Err(ResponseError::UnknownMemberId);
        }
        if generation_id.is_some_and(|g| g != self.generation_id) {
            return Err(ResponseError::IllegalGeneration);
        }
        Ok(())
    }

    /// Whether a commit from `member_id` in `generation_id` may go through. A consumer that
    /// assigns itself partitions commits with no member id and generation -1, which only an
    /// empty group accepts.
    pub fn check_commit(
        &self,
        member_id: &str,
        group_instance_id: Option<&str>,
        generation_id: i32,
    ) -> Result<(), ResponseError> {
        if generation_id < 0 && member_id.is_empty() {
            return if self.members.is_empty() { Ok(()) } else { Err(ResponseError::UnknownMemberId) };
        }
        self.check_member(member_id, group_instance_id, Some(generation_id))?;
        // Assignments are being handed out: what the member owns is about to change.
        if self.state == GroupState::CompletingRebalance {
            return Err(ResponseError::RebalanceInProgress);
        }
        Ok(())
    }

    /// Topics the members subscribe to, from their consumer-protocol metadata.
    pub fn subscribed_topics(&self) -> std::collections::HashSet<String> {
        use kafka_protocol::messages::ConsumerProtocolSubscription;
        use kafka_protocol::protocol::Decodable;
        let Some(protocol) = self.protocol_name.as_deref() else { return Default::default() };
        if self.protocol_type.as_deref() != Some("consumer") {
            return Default::default();
        }
        let mut topics = std::collections::HashSet::new();
        for member in self.members.values() {
            let mut metadata = member.metadata(protocol);
            if metadata.len() < 2 {
                continue;
            }
            let version = i16::from_be_bytes([metadata[0], metadata[1]]);
            bytes::Buf::advance(&mut metadata, 2);
            if let Ok(subscription) = ConsumerProtocolSubscription::decode(&mut metadata, version) {
                topics.extend(subscription.topics.into_iter().map(|t| t.to_string()));
            }
        }
        topics
    }

    pub fn sync(
        &mut self,
        member_id: &str,
        group_instance_id: Option<&str>,
        generation_id: i32,
        assignments: Vec<(String, Bytes)>,
        now_ms: i64,
    ) -> Reply<SyncResult> {
        if let Err(e) = self.check_member(member_id, group_instance_id, Some(generation_id)) {
            return Reply::Now(Err(e));
        }
        self.members.get_mut(member_id).expect("checked").last_heartbeat_ms = now_ms;
        match self.state {
            GroupState::PreparingRebalance => Reply::Now(Err(ResponseError::RebalanceInProgress)),
            GroupState::Stable => Reply::Now(Ok(self.members[member_id].assignment.clone())),
            GroupState::CompletingRebalance => {
                let (tx, rx) = oneshot::channel();
                self.members.get_mut(member_id).expect("checked").sync_waiter = Some(tx);
                if self.leader_id.as_deref() == Some(member_id) {
                    for (id, assignment) in assignments {
                        if let Some(member) = self.members.get_mut(&id) {
                            member.assignment = assignment;
                        }
                    }
                    self.state = GroupState::Stable;
                    tracing::info!(group = %self.id, generation = self.generation_id, "rebalance: stable");
                    for member in self.members.values_mut() {
                        // A session restarts when the wait in SyncGroup ends, as after a join.
                        member.last_heartbeat_ms = now_ms;
                        if let Some(waiter) = member.sync_waiter.take() {
                            let _ = waiter.send(Ok(member.assignment.clone()));
                        }
                    }
                }
                Reply::Later(rx)
            }
            GroupState::Empty | GroupState::Dead => Reply::Now(Err(ResponseError::UnknownMemberId)),
        }
    }

    pub fn heartbeat(
        &mut self,
        member_id: &str,
        group_instance_id: Option<&str>,
        generation_id: i32,
        now_ms: i64,
    ) -> Result<(), ResponseError> {
        self.check_member(member_id, group_instance_id, Some(generation_id))?;
        self.members.get_mut(member_id).expect("checked").last_heartbeat_ms = now_ms;
        match self.state {
            GroupState::PreparingRebalance => Err(ResponseError::RebalanceInProgress),
            _ => Ok(()),
        }
    }

    /// Removes a leaving member (found by member id, or by instance id for static members).
    pub fn leave(
        &mut self,
        member_id: &str,
        group_instance_id: Option<&str>,
        now_ms: i64,
        limits: &GroupLimits,
    ) -> Result<(), ResponseError> {
        let id = match (member_id, group_instance_id) {
            ("", Some(instance)) => self.static_members.get(instance).cloned().ok_or(ResponseError::UnknownMemberId)?,
            (id, instance) => {
                self.check_member(id, instance, None)?;
                id.to_string()
            }
        };
        self.remove_member(&id);
        self.after_member_removed(now_ms, limits);
        Ok(())
    }

    fn remove_member(&mut self, member_id: &str) {
        let Some(mut member) = self.members.remove(member_id) else { return };
        if let Some(instance) = &member.group_instance_id
            && self.static_members.get(instance).map(String::as_str) == Some(member_id)
        {
            self.static_members.remove(instance);
        }
        if let Some(waiter) = member.join_waiter.take() {
            let _ = waiter.send(JoinResult::error(ResponseError::UnknownMemberId, member_id));
        }
        if let Some(waiter) = member.sync_waiter.take() {
            let _ = waiter.send(Err(ResponseError::UnknownMemberId));
        }
        if self.leader_id.as_deref() == Some(member_id) {
            self.leader_id = None;
        }
    }

    fn after_member_removed(&mut self, now_ms: i64, limits: &GroupLimits) {
        match self.state {
            GroupState::Stable | GroupState::CompletingRebalance => self.prepare_rebalance(now_ms, limits),
            _ => {}
        }
        self.try_complete_join(now_ms);
    }

    /// Expires members whose session timed out and unused pending ids; completes a join whose
    /// time has come. Called periodically by the coordinator.
    ///
    /// As in Kafka, a member blocked in JoinGroup or SyncGroup counts as alive; any other must
    /// heartbeat within its session in every state. So a member that died without leaving while
    /// the group rebalances is removed at its session timeout, and the others' join completes
    /// then rather than at the rebalance deadline (which may be minutes away).
    pub fn tick(&mut self, now_ms: i64, limits: &GroupLimits) {
        self.pending_members.retain(|_, deadline| *deadline > now_ms);
        let expired: Vec<String> = self
            .members
            .values()
            .filter(|m| m.join_waiter.is_none() && m.sync_waiter.is_none())
            .filter(|m| now_ms - m.last_heartbeat_ms > m.session_timeout_ms)
            .map(|m| m.member_id.clone())
            .collect();
        if !expired.is_empty() {
            for id in &expired {
                tracing::info!(group = %self.id, member = %id, state = self.state.name(), "session expired");
                self.remove_member(id);
            }
            self.after_member_removed(now_ms, limits);
        }
        self.try_complete_join(now_ms);
    }

    /// Empty, with no member on its way in: nothing would be lost by forgetting it.
    pub fn is_idle(&self) -> bool {
        self.state == GroupState::Empty && self.members.is_empty() && self.pending_members.is_empty()
    }
}

fn args_with_id(mut args: JoinArgs, member_id: String) -> JoinArgs {
    args.member_id = member_id;
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: GroupLimits = GroupLimits {
        min_session_timeout_ms: 100,
        max_session_timeout_ms: 100_000,
        initial_rebalance_delay_ms: 0,
        max_size: 100,
    };

    fn args(member_id: &str, protocols: &[&str]) -> JoinArgs {
        JoinArgs {
            member_id: member_id.to_string(),
            group_instance_id: None,
            client_id: "c".into(),
            client_host: "/127.0.0.1".into(),
            session_timeout_ms: 1000,
            rebalance_timeout_ms: 5000,
            protocol_type: "consumer".into(),
            protocols: protocols.iter().map(|p| (p.to_string(), Bytes::from(p.to_string()))).collect(),
            require_known_member_id: true,
        }
    }

    fn now<T: Clone>(reply: Reply<T>) -> T {
        match reply {
            Reply::Now(v) => v,
            Reply::Later(mut rx) => rx.try_recv().unwrap().expect("answered"),
        }
    }

    fn later<T>(reply: Reply<T>) -> oneshot::Receiver<T> {
        match reply {
            Reply::Later(rx) => rx,
            Reply::Now(_) => panic!("expected to wait"),
        }
    }

    /// Joins a new member through MEMBER_ID_REQUIRED; returns its id and pending join.
    fn join_new(group: &mut Group, protocols: &[&str], t: i64) -> (String, oneshot::Receiver<JoinResult>) {
        let first = now(group.join(args("", protocols), &LIMITS, t));
        assert_eq!(first.error, Some(ResponseError::MemberIdRequired));
        let rx = later(group.join(args(&first.member_id, protocols), &LIMITS, t));
        (first.member_id, rx)
    }

    #[test]
    fn two_members_rebalance_to_stable() {
        let mut g = Group::new("g", 0);
        let (a, mut a_join) = join_new(&mut g, &["range", "roundrobin"], 0);
        // Alone and past the (zero) initial delay: the join completes at once.
        let a_result = a_join.try_recv().unwrap().unwrap();
        assert_eq!((a_result.generation_id, a_result.leader_id.as_str()), (1, a.as_str()));
        assert_eq!(g.state, GroupState::CompletingRebalance);
        let mut a_sync = later(g.sync(&a, None, 1, vec![(a.clone(), Bytes::from_static(b"all"))], 1));
        assert_eq!(a_sync.try_recv().unwrap().unwrap(), Ok(Bytes::from_static(b"all")));
        assert_eq!(g.state, GroupState::Stable);

        // A second member arrives: the first learns through its heartbeat and rejoins.
        let (b, mut b_join) = join_new(&mut g, &["roundrobin", "range"], 2);
        assert_eq!(g.state, GroupState::PreparingRebalance);
        assert_eq!(g.heartbeat(&a, None, 1, 3), Err(ResponseError::RebalanceInProgress));
        assert!(b_join.try_recv().unwrap().is_none(), "waits for the other member");
        let mut a_join = later(g.join(args(&a, &["range", "roundrobin"]), &LIMITS, 4));
        let a_result = a_join.try_recv().unwrap().unwrap();
        let b_result = b_join.try_recv().unwrap().unwrap();
        assert_eq!(a_result.generation_id, 2);
        assert_eq!(a_result.leader_id, a, "the leader stays");
        assert_eq!(a_result.members.len(), 2);
        assert!(b_result.members.is_empty());
        // One vote each: the tie goes to the leader's preference.
        assert_eq!(a_result.protocol_name.as_deref(), Some("range"));

        let mut b_sync = later(g.sync(&b, None, 2, vec![], 5));
        assert!(b_sync.try_recv().unwrap().is_none(), "waits for the leader");
        let assignments = vec![(a.clone(), Bytes::from_static(b"0,1")), (b.clone(), Bytes::from_static(b"2,3"))];
        let mut a_sync = later(g.sync(&a, None, 2, assignments, 5));
        assert_eq!(b_sync.try_recv().unwrap().unwrap(), Ok(Bytes::from_static(b"2,3")));
        assert_eq!(a_sync.try_recv().unwrap().unwrap(), Ok(Bytes::from_static(b"0,1")));
        assert_eq!(g.heartbeat(&b, None, 2, 6), Ok(()));
        assert_eq!(g.heartbeat(&b, None, 1, 6), Err(ResponseError::IllegalGeneration));
        assert_eq!(g.heartbeat("nobody", None, 2, 6), Err(ResponseError::UnknownMemberId));
    }

    #[test]
    fn a_silent_member_is_expelled_after_its_session_timeout() {
        let mut g = Group::new("g", 0);
        let (a, _a_join) = join_new(&mut g, &["range"], 0);
        let _ = g.sync(&a, None, 1, vec![], 0);
        let (b, mut b_join) = join_new(&mut g, &["range"], 10);
        let _a_join = later(g.join(args(&a, &["range"]), &LIMITS, 10));
        let _ = b_join.try_recv().unwrap().unwrap();
        let _ = g.sync(&a, None, 2, vec![], 20);
        assert_eq!(g.state, GroupState::Stable);
        // b keeps heartbeating, a goes silent.
        g.heartbeat(&b, None, 2, 800).unwrap();
        g.tick(1021, &LIMITS);
        assert!(!g.members.contains_key(&a));
        assert_eq!(g.state, GroupState::PreparingRebalance);
        let mut b_join = later(g.join(args(&b, &["range"]), &LIMITS, 1100));
        let result = b_join.try_recv().unwrap().unwrap();
        assert_eq!((result.generation_id, result.leader_id.as_str()), (3, b.as_str()));
    }

    #[test]
    fn members_that_do_not_rejoin_are_dropped_at_the_rebalance_deadline() {
        let mut g = Group::new("g", 0);
        let (a, _) = join_new(&mut g, &["range"], 0);
        let _ = g.sync(&a, None, 1, vec![], 0);
        let (_b, mut b_join) = join_new(&mut g, &["range"], 10);
        // a is alive (it heartbeats) but never rejoins.
        for t in (900..=4500).step_by(900) {
            assert_eq!(g.heartbeat(&a, None, 1, t), Err(ResponseError::RebalanceInProgress));
            g.tick(t, &LIMITS);
        }
        assert!(b_join.try_recv().unwrap().is_none());
        g.tick(5011, &LIMITS);
        let result = b_join.try_recv().unwrap().unwrap();
        assert_eq!(result.generation_id, 2);
        assert_eq!(g.members.len(), 1);
    }

    #[test]
    fn a_member_that_dies_during_a_rebalance_is_removed_at_its_session_timeout() {
        let mut g = Group::new("g", 0);
        let (a, _) = join_new(&mut g, &["range"], 0);
        let (b, mut b_join) = join_new(&mut g, &["range"], 0);
        let _a_join = later(g.join(args(&a, &["range"]), &LIMITS, 0));
        assert_eq!(b_join.try_recv().unwrap().unwrap().generation_id, 2);
        let _ = g.sync(&a, None, 2, vec![], 10);
        let _ = g.sync(&b, None, 2, vec![], 10);
        assert_eq!(g.state, GroupState::Stable);
        // c arrives; b rejoins and waits; a died without leaving. b waiting longer than its
        // own session does not expire it: its client is blocked on us.
        let (c, mut c_join) = join_new(&mut g, &["range"], 100);
        let mut b_join = later(g.join(args(&b, &["range"]), &LIMITS, 100));
        g.tick(1010, &LIMITS);
        assert!(c_join.try_recv().unwrap().is_none(), "a's session (1000 ms from 10) has not lapsed yet");
        g.tick(1200, &LIMITS);
        assert!(!g.members.contains_key(&a));
        let c_result = c_join.try_recv().unwrap().unwrap();
        let b_result = b_join.try_recv().unwrap().unwrap();
        assert_eq!((b_result.generation_id, c_result.generation_id), (3, 3));
        assert_eq!(g.members.len(), 2);
        // A follower waiting in SyncGroup for a slow leader is not expired either, and its
        // session restarts when the assignment arrives.
        let leader = b_result.leader_id.clone();
        let follower = if leader == b { c.clone() } else { b.clone() };
        let mut follower_sync = later(g.sync(&follower, None, 3, vec![], 1300));
        g.heartbeat(&leader, None, 3, 2000).unwrap();
        g.tick(2400, &LIMITS);
        assert!(g.members.contains_key(&follower));
        let _ = g.sync(&leader, None, 3, vec![], 2500);
        assert!(follower_sync.try_recv().unwrap().unwrap().is_ok());
        g.tick(3400, &LIMITS);
        assert_eq!(g.state, GroupState::Stable);
    }

    #[test]
    fn incompatible_protocols_and_bad_timeouts_are_refused() {
        let mut g = Group::new("g", 0);
        let (_a, _) = join_new(&mut g, &["range"], 0);
        assert_eq!(
            now(g.join(args("", &["sticky"]), &LIMITS, 1)).error,
            Some(ResponseError::InconsistentGroupProtocol)
        );
        let mut short = args("", &["range"]);
        short.session_timeout_ms = 1;
        assert_eq!(now(g.join(short, &LIMITS, 1)).error, Some(ResponseError::InvalidSessionTimeout));
        assert_eq!(now(g.join(args("ghost", &["range"]), &LIMITS, 1)).error, Some(ResponseError::UnknownMemberId));
    }

    #[test]
    fn a_static_member_returns_without_a_rebalance_and_fences_its_old_self() {
        let mut g = Group::new("g", 0);
        let mut static_args = args("", &["range"]);
        static_args.group_instance_id = Some("instance-1".into());
        let mut join = later(g.join(static_args, &LIMITS, 0));
        let first = join.try_recv().unwrap().unwrap();
        let _ = g.sync(
            &first.member_id,
            Some("instance-1"),
            1,
            vec![(first.member_id.clone(), Bytes::from_static(b"p0"))],
            0,
        );
        assert_eq!(g.state, GroupState::Stable);

        let mut again = args("", &["range"]);
        again.group_instance_id = Some("instance-1".into());
        let second = now(g.join(again, &LIMITS, 100));
        assert_eq!(second.error, None);
        assert_eq!(second.generation_id, 1, "no rebalance");
        assert_ne!(second.member_id, first.member_id);
        assert_eq!(g.state, GroupState::Stable);
        assert_eq!(g.heartbeat(&first.member_id, Some("instance-1"), 1, 101), Err(ResponseError::FencedInstanceId));
        assert_eq!(g.heartbeat(&second.member_id, Some("instance-1"), 1, 101), Ok(()));
    }

    #[test]
    fn a_leader_that_never_syncs_expires_and_can_join_again() {
        let mut g = Group::new("g", 0);
        let (a, mut a_join) = join_new(&mut g, &["range"], 0);
        assert_eq!(a_join.try_recv().unwrap().unwrap().generation_id, 1);
        // No SyncGroup and no heartbeat within the session: the member is gone, the group empty.
        g.tick(1001, &LIMITS);
        assert_eq!(g.state, GroupState::Empty);
        assert_eq!(now(g.sync(&a, None, 1, vec![], 1002)), Err(ResponseError::UnknownMemberId));
        assert_eq!(g.heartbeat(&a, None, 1, 1002), Err(ResponseError::UnknownMemberId));
        let (b, mut b_join) = join_new(&mut g, &["range"], 1003);
        let result = b_join.try_recv().unwrap().unwrap();
        assert_eq!((result.generation_id, result.leader_id.as_str()), (3, b.as_str()));
        assert_eq!(
            now(g.sync(&b, None, 3, vec![(b.clone(), Bytes::from_static(b"x"))], 1004)),
            Ok(Bytes::from_static(b"x"))
        );
    }

    #[test]
    fn the_last_member_leaving_empties_the_group() {
        let mut g = Group::new("g", 0);
        let (a, _) = join_new(&mut g, &["range"], 0);
        let _ = g.sync(&a, None, 1, vec![], 0);
        g.leave(&a, None, 5, &LIMITS).unwrap();
        assert_eq!(g.state, GroupState::Empty);
        assert_eq!(g.empty_since_ms, Some(5));
        assert_eq!(g.leave(&a, None, 6, &LIMITS), Err(ResponseError::UnknownMemberId));
    }
}
