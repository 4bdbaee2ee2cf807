//! What a partition's leader knows of its replicas (pure; kept by [`crate::partition`] on the
//! owning shard): each follower's log end offset, as its fetches tell it, and when it was last
//! caught up (Kafka's `lastCaughtUpTimeMs`); from them, the high watermark and the ISR changes
//! the controller may make.
//!
//! Invariants: the high watermark is the lowest log end offset among the in-sync replicas,
//! the leader included, and never goes back while this node leads; a follower whose log end is
//! not known yet (it has not fetched since this node became leader) holds it where it is. The
//! ISR is the metadata image's; this module only proposes changes to it.

use std::collections::BTreeMap;

/// A log end offset not known yet.
const UNKNOWN_OFFSET: i64 = -1;

/// One follower as its fetches have shown it to the leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Follower {
    /// The offset of its last fetch: everything below it is in its log.
    pub log_end_offset: i64,
    /// When it was last known to have everything the leader had ([`ReplicaSet::fetched`]).
    pub last_caught_up_ms: i64,
    /// The leader's log end at its previous fetch, and when that fetch came.
    last_fetch_leader_log_end_offset: i64,
    last_fetch_ms: i64,
}

/// A partition's replicas seen from its leader.
#[derive(Debug, Clone, Default)]
pub struct ReplicaSet {
    /// This node.
    node_id: i32,
    /// The leader epoch the followers' states were gathered in.
    leader_epoch: i32,
    replicas: Vec<i32>,
    isr: Vec<i32>,
    /// Every replica but this node.
    followers: BTreeMap<i32, Follower>,
}

impl ReplicaSet {
    /// The image's replicas and ISR as this node (`node_id`) leads in `leader_epoch`. A
    /// follower already known keeps its state; a new one, or every one in a new leader epoch
    /// (what this node knew is stale), starts with its log end unknown and, if in sync, caught
    /// up now (as Kafka's `resetReplicaState`).
    pub fn set_assignment(
        &mut self,
        node_id: i32,
        leader_epoch: i32,
        replicas: &[i32],
        isr: &[i32],
        leader_log_end_offset: i64,
        now_ms: i64,
    ) {
        let new_leader = node_id != self.node_id || leader_epoch != self.leader_epoch;
        let fresh = |id: i32| Follower {
            log_end_offset: UNKNOWN_OFFSET,
            last_caught_up_ms: if isr.contains(&id) { now_ms } else { 0 },
            last_fetch_leader_log_end_offset: leader_log_end_offset,
            last_fetch_ms: 0,
        };
        let mut followers = BTreeMap::new();
        for &id in replicas.iter().filter(|&&id| id != self.node_id) {
            let kept = self.followers.get(&id).filter(|_| !new_leader).copied();
            followers.insert(id, kept.unwrap_or_else(|| fresh(id)));
        }
        self.followers = followers;
        (self.node_id, self.leader_epoch) = (node_id, leader_epoch);
        self.replicas = replicas.to_vec();
        self.isr = isr.to_vec();
    }

    pub fn is_replica(&self, id: i32) -> bool {
        self.replicas.contains(&id)
    }

    /// The in-sync replicas, the leader among them: a partition never told its replicas (a
    /// lone broker's tests and tools) is alone in sync.
    pub fn isr_len(&self) -> usize {
        self.isr.len().max(1)
    }

    pub fn follower(&self, id: i32) -> Option<&Follower> {
        self.followers.get(&id)
    }

    /// A fetch from follower `id` at `fetch_offset` at `now_ms`, when the leader's log ended at
    /// `leader_log_end_offset`. Kafka's rule for `lastCaughtUpTimeMs`: a fetch at the leader's
    /// log end means caught up now; one that reaches the leader's log end as of the previous
    /// fetch means caught up as of that fetch. Returns false for a broker that holds no replica.
    pub fn fetched(&mut self, id: i32, fetch_offset: i64, leader_log_end_offset: i64, now_ms: i64) -> bool {
        let Some(follower) = self.followers.get_mut(&id) else { return false };
        if fetch_offset >= leader_log_end_offset {
            follower.last_caught_up_ms = follower.last_caught_up_ms.max(now_ms);
        } else if fetch_offset >= follower.last_fetch_leader_log_end_offset {
            follower.last_caught_up_ms = follower.last_caught_up_ms.max(follower.last_fetch_ms);
        }
        follower.log_end_offset = fetch_offset;
        follower.last_fetch_leader_log_end_offset = leader_log_end_offset;
        follower.last_fetch_ms = now_ms;
        true
    }

    /// The high watermark the in-sync replicas allow, given the leader's own log end: the
    /// lowest log end among them ([`UNKNOWN_OFFSET`] while one is not known). The caller never
    /// lets it go back.
    pub fn high_watermark(&self, leader_log_end_offset: i64) -> i64 {
        let followers = self.isr.iter().filter(|&&id| id != self.node_id);
        followers.fold(leader_log_end_offset, |lowest, id| {
            lowest.min(self.followers.get(id).map_or(UNKNOWN_OFFSET, |f| f.log_end_offset))
        })
    }

    /// The ISR changes Kafka's leader would ask for at `now_ms` (for the controller's
    /// AlterPartition): in-sync followers not caught up within `lag_max_ms`
    /// (`replica.lag.time.max.ms`) to remove; out-of-sync ones to add once their log reaches
    /// the high watermark and the start of the leader's epoch (`leader_epoch_start_offset`) and
    /// they are caught up within the lag (Kafka's `isFollowerInSync`).
    pub fn isr_candidates(
        &self,
        now_ms: i64,
        lag_max_ms: i64,
        high_watermark: i64,
        leader_epoch_start_offset: i64,
    ) -> (Vec<i32>, Vec<i32>) {
        let caught_up = |f: &Follower| now_ms - f.last_caught_up_ms <= lag_max_ms;
        let mut to_remove = Vec::new();
        let mut to_add = Vec::new();
        for (&id, follower) in &self.followers {
            let in_sync = self.isr.contains(&id);
            if in_sync && !caught_up(follower) {
                to_remove.push(id);
            }
            let reached = follower.log_end_offset >= high_watermark.max(leader_epoch_start_offset);
            if !in_sync && reached && caught_up(follower) {
                to_add.push(id);
            }
        }
        (to_remove, to_add)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn three() -> ReplicaSet {
        let mut set = ReplicaSet::default();
        set.set_assignment(1, 0, &[1, 2, 3], &[1, 2, 3], 0, 1_000);
        set
    }

    #[test]
    fn the_high_watermark_is_the_lowest_log_end_in_the_isr() {
        let mut set = three();
        assert_eq!(set.high_watermark(10), UNKNOWN_OFFSET, "followers not heard of yet hold it");
        set.fetched(2, 7, 10, 1_100);
        assert_eq!(set.high_watermark(10), UNKNOWN_OFFSET);
        set.fetched(3, 9, 10, 1_100);
        assert_eq!(set.high_watermark(10), 7);
        set.fetched(2, 10, 10, 1_200);
        assert_eq!(set.high_watermark(10), 9);
        assert_eq!(set.high_watermark(8), 8, "the leader's own log end bounds it");
    }

    #[test]
    fn a_replica_out_of_the_isr_does_not_hold_the_high_watermark() {
        let mut set = three();
        set.set_assignment(1, 0, &[1, 2, 3], &[1, 2], 10, 1_000);
        set.fetched(2, 10, 10, 1_100);
        assert_eq!(set.high_watermark(10), 10, "replica 3 never fetched, but is out of the ISR");
        set.set_assignment(1, 0, &[1], &[1], 10, 1_000);
        assert_eq!(set.high_watermark(12), 12, "alone: the log end");
    }

    #[test]
    fn known_followers_keep_their_state_until_a_new_leader_epoch() {
        let mut set = three();
        set.fetched(2, 5, 5, 1_100);
        set.set_assignment(1, 0, &[1, 2, 3], &[1, 2], 5, 2_000);
        assert_eq!(set.follower(2).map(|f| f.log_end_offset), Some(5));
        set.set_assignment(1, 1, &[1, 2, 3], &[1, 2], 5, 2_000);
        assert_eq!(set.follower(2).map(|f| f.log_end_offset), Some(UNKNOWN_OFFSET));
        assert!(!set.fetched(4, 5, 5, 2_000), "not a replica");
    }

    #[test]
    fn last_caught_up_follows_kafkas_rule() {
        let mut set = three();
        set.fetched(2, 10, 10, 2_000);
        assert_eq!(set.follower(2).unwrap().last_caught_up_ms, 2_000, "at the log end: caught up now");
        // The leader moved to 20; the follower fetches at 15: short of it, but past the
        // leader's log end at its previous fetch (10), so caught up as of that fetch.
        set.fetched(2, 15, 20, 3_000);
        assert_eq!(set.follower(2).unwrap().last_caught_up_ms, 2_000);
        set.fetched(2, 18, 30, 4_000);
        assert_eq!(set.follower(2).unwrap().last_caught_up_ms, 2_000, "18 < 20: not even as of the last fetch");
        set.fetched(2, 30, 40, 5_000);
        assert_eq!(set.follower(2).unwrap().last_caught_up_ms, 4_000, "reached the end of its previous fetch");
    }

    #[test]
    fn isr_candidates_are_lagging_members_and_caught_up_outsiders() {
        let mut set = three();
        set.set_assignment(1, 0, &[1, 2, 3], &[1, 2], 10, 1_000);
        set.fetched(3, 10, 10, 5_000);
        let (to_remove, to_add) = set.isr_candidates(40_000, 30_000, 10, 0);
        assert_eq!((to_remove, to_add), (vec![2], vec![]), "2 last caught up at 1000; 3 lags by 35 s too");
        let (to_remove, to_add) = set.isr_candidates(20_000, 30_000, 10, 0);
        assert_eq!((to_remove, to_add), (vec![], vec![3]));
        let (_, to_add) = set.isr_candidates(20_000, 30_000, 10, 11);
        assert!(to_add.is_empty(), "short of the leader epoch's start");
    }
}
