//! Replica placement: which brokers hold each partition's replicas. Pure; the controller calls
//! it with the unfenced brokers and a random start when it creates or grows a topic.
//!
//! Kafka's algorithm (`AdminUtils.assignReplicasToBrokers`): partition p's first replica (its
//! preferred leader) is broker (start + p) mod n of the list, so consecutive partitions lead
//! on consecutive brokers; replica j ≥ 1 sits at a shift from the first that depends on j and
//! on a second random number, which grows by one every n partitions, so that followers spread
//! too. With racks (`broker.rack`, on every broker), the list alternates racks, and a replica
//! goes to a rack that has none of the partition's replicas while such racks remain, and to a
//! broker that has none while such brokers remain.
//!
//! Invariants: every partition gets `replication_factor` distinct brokers; with at least as
//! many racks as replicas, no two replicas of a partition share a rack.

use std::collections::{BTreeMap, HashSet};

/// A broker as placement sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub node_id: i32,
    pub rack: Option<String>,
}

/// The random numbers a placement starts from (drawn by the caller; fixed in tests).
#[derive(Debug, Clone, Copy)]
pub struct Start {
    pub index: usize,
    pub shift: usize,
}

impl Start {
    pub fn random() -> Start {
        let bits = uuid::Uuid::new_v4().as_u128();
        Start { index: (bits as u64) as usize, shift: ((bits >> 64) as u64) as usize }
    }
}

/// The replicas of partitions `first_partition..first_partition + partitions`, each a list of
/// node ids whose first is the preferred leader. `brokers` must hold at least
/// `replication_factor` brokers (the caller refuses the request otherwise).
pub fn assign(
    brokers: &[Candidate],
    partitions: i32,
    replication_factor: usize,
    first_partition: i32,
    start: Start,
) -> Vec<Vec<i32>> {
    assert!(replication_factor >= 1 && replication_factor <= brokers.len(), "validated by the controller");
    let mut sorted = brokers.to_vec();
    sorted.sort_by_key(|b| b.node_id);
    let racks_known = sorted.iter().all(|b| b.rack.is_some());
    let arranged = match racks_known {
        true => rack_alternated(&sorted),
        false => sorted,
    };
    let racks: HashSet<&Option<String>> = arranged.iter().map(|b| &b.rack).collect();
    let rack_count = if racks_known { racks.len() } else { 1 };
    let n = arranged.len();
    let start_index = start.index % n;
    let mut shift = start.shift % n;
    let mut replicas = Vec::with_capacity(partitions.max(0) as usize);
    for partition in first_partition.max(0)..first_partition.max(0) + partitions {
        let partition = partition as usize;
        if partition > 0 && partition.is_multiple_of(n) {
            shift += 1;
        }
        let first = (partition + start_index) % n;
        let mut chosen = vec![first];
        let mut k = 0;
        while chosen.len() < replication_factor {
            let candidate = replica_index(first, shift * rack_count, k, n);
            k += 1;
            let rack = &arranged[candidate].rack;
            let chosen_racks: HashSet<&Option<String>> = chosen.iter().map(|&i| &arranged[i].rack).collect();
            let rack_ok = !racks_known || !chosen_racks.contains(rack) || chosen_racks.len() == rack_count;
            if rack_ok && !chosen.contains(&candidate) {
                chosen.push(candidate);
            }
        }
        replicas.push(chosen.into_iter().map(|i| arranged[i].node_id).collect());
    }
    replicas
}

/// Kafka's shift of replica `j` (0 for the second replica) from the first.
fn replica_index(first: usize, shift: usize, j: usize, n: usize) -> usize {
    if n == 1 {
        return first;
    }
    let offset = 1 + (shift + j) % (n - 1);
    (first + offset) % n
}

/// The brokers with racks interleaved: the first broker of each rack (racks in name order),
/// then the second of each, and so on.
fn rack_alternated(brokers: &[Candidate]) -> Vec<Candidate> {
    let mut by_rack: BTreeMap<&Option<String>, Vec<&Candidate>> = BTreeMap::new();
    for broker in brokers {
        by_rack.entry(&broker.rack).or_default().push(broker);
    }
    let deepest = by_rack.values().map(Vec::len).max().unwrap_or(0);
    (0..deepest).flat_map(|i| by_rack.values().filter_map(move |rack| rack.get(i).map(|b| (*b).clone()))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn brokers(racks: &[Option<&str>]) -> Vec<Candidate> {
        racks
            .iter()
            .enumerate()
            .map(|(i, rack)| Candidate { node_id: i as i32 + 1, rack: rack.map(str::to_string) })
            .collect()
    }

    #[test]
    fn leaders_go_round_the_brokers_from_the_start() {
        let three = brokers(&[None, None, None]);
        let placed = assign(&three, 6, 1, 0, Start { index: 1, shift: 0 });
        assert_eq!(placed, [[2], [3], [1], [2], [3], [1]]);
        // Growing a topic goes on from the partition it starts at.
        assert_eq!(assign(&three, 2, 1, 4, Start { index: 1, shift: 0 }), [[3], [1]]);
        for start in 0..10 {
            let placed = assign(&three, 6, 1, 0, Start { index: start, shift: start * 7 });
            for broker in 1..=3 {
                assert_eq!(placed.iter().filter(|r| r[0] == broker).count(), 2, "start {start}");
            }
        }
    }

    #[test]
    fn followers_are_distinct_and_spread() {
        let five = brokers(&[None; 5]);
        for (index, shift) in [(0, 0), (3, 2), (4, 9)] {
            let placed = assign(&five, 20, 3, 0, Start { index, shift });
            let mut held = [0; 5];
            for replicas in &placed {
                assert_eq!(replicas.iter().collect::<HashSet<_>>().len(), 3, "{replicas:?}");
                for &r in replicas {
                    held[r as usize - 1] += 1;
                }
            }
            // 60 replicas over 5 brokers: 12 each.
            assert_eq!(held, [12; 5], "start ({index}, {shift}): {placed:?}");
        }
        // Kafka's own example: the second replica shifts by one more every n partitions.
        let placed = assign(&five, 10, 2, 0, Start { index: 0, shift: 0 });
        assert_eq!(placed[0], [1, 2]);
        assert_eq!(placed[5], [1, 3]);
    }

    #[test]
    fn replicas_of_a_partition_are_on_different_racks_while_racks_remain() {
        // Three racks, unevenly filled.
        let racked = brokers(&[Some("a"), Some("a"), Some("b"), Some("c"), Some("c"), Some("a")]);
        let rack_of = |id: i32| racked[id as usize - 1].rack.clone();
        for start in 0..12 {
            let placed = assign(&racked, 12, 3, 0, Start { index: start, shift: start * 5 });
            for replicas in &placed {
                let racks: HashSet<_> = replicas.iter().map(|&r| rack_of(r)).collect();
                assert_eq!(racks.len(), 3, "{replicas:?}");
            }
        }
        // More replicas than racks: every rack is used, then brokers are reused across racks.
        let two_racks = brokers(&[Some("a"), Some("b"), Some("a"), Some("b")]);
        for replicas in assign(&two_racks, 8, 3, 0, Start { index: 2, shift: 1 }) {
            assert_eq!(replicas.iter().collect::<HashSet<_>>().len(), 3);
            let racks: HashSet<_> = replicas.iter().map(|&r| two_racks[r as usize - 1].rack.clone()).collect();
            assert_eq!(racks.len(), 2, "{replicas:?}");
        }
    }

    #[test]
    fn one_broker_holds_everything() {
        let one = brokers(&[Some("a")]);
        assert_eq!(assign(&one, 3, 1, 0, Start::random()), [[1], [1], [1]]);
    }
}
