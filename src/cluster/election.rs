//! Leaders and in-sync replicas: how the controller changes them, with the rules of KRaft's
//! `PartitionChangeBuilder` (without its eligible leader replicas, KIP-966). Pure: over the
//! image and which brokers may lead; the controller (`shard::controller`) calls these and
//! writes the result to the metadata log as `PartitionChange` records.
//!
//! - A broker fenced (silent past its session, shutting down, or registered from a new
//!   incarnation, which replaces the old one) leaves every ISR it is in, unless it is the
//!   last member, and leads nothing: its partitions elect the first replica (in replica
//!   order) that is in the ISR and unfenced, else have no leader, unless unclean
//!   leader election is enabled for the topic: then the first unfenced replica leads, with the
//!   ISR cut to it alone (what it lacks of acknowledged records is lost, by the operator's
//!   choice).
//! - A broker unfenced leads the leaderless partitions whose ISR holds it (or, unclean
//!   election enabled, whose replicas do). Its other replicas come back as followers, outside
//!   the ISR until their leader adds them through AlterPartition.
//! - AlterPartition ([`alter_isr`]): a leader proposes a new ISR in its leader epoch and the
//!   partition epoch it knows; stale proposals are refused, and so is an ISR naming a broker
//!   that may not join it (fenced, shutting down, registered anew since).
//! - Preferred election moves leadership to the first replica when it is in the ISR and
//!   unfenced.
//!
//! Invariants, for every partition: the leader is in the ISR, or is [`NO_LEADER`]; the ISR is
//! never empty (its last member stays, so that it is known which replica holds every
//! acknowledged record); the leader epoch grows with every change of leader, and the partition
//! epoch with every change at all.

use std::collections::BTreeMap;

use super::{BrokerRegistration, MetadataImage, NO_LEADER, PartitionMetadata};

/// A topic's own configs.
pub type TopicConfigs = BTreeMap<String, String>;

/// How a partition's leader is chosen when its ISR or its brokers change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Election {
    /// Keep the leader if it still may lead, else the first eligible ISR member, else none.
    Online,
    /// The first replica if it may lead, else as [`Election::Online`].
    Preferred,
    /// As [`Election::Online`], and if that finds none, the first eligible replica even if it
    /// is outside the ISR.
    Unclean,
}

/// Moves `p` to `target_isr` (an empty one keeps the current ISR: its last member stays) and
/// elects its leader among the brokers for which `eligible` holds. Returns whether anything
/// changed; if so, the partition epoch was bumped, and the leader epoch too if the leader
/// changed.
pub fn change(
    p: &mut PartitionMetadata,
    target_isr: Vec<i32>,
    election: Election,
    eligible: &dyn Fn(i32) -> bool,
) -> bool {
    let may_lead = |r: i32| target_isr.contains(&r) && eligible(r);
    let preferred = p.replicas.first().copied().filter(|&r| election == Election::Preferred && may_lead(r));
    let clean = preferred
        .or_else(|| Some(p.leader).filter(|&l| may_lead(l)))
        .or_else(|| p.replicas.iter().copied().find(|&r| may_lead(r)));
    let (leader, isr) = match clean {
        Some(leader) => (leader, target_isr),
        None => match p.replicas.iter().copied().find(|&r| election == Election::Unclean && eligible(r)) {
            Some(leader) => {
                tracing::warn!(partition = p.partition, leader, isr = ?p.isr, "unclean leader election");
                (leader, vec![leader])
            }
            None => (NO_LEADER, target_isr),
        },
    };
    let isr = if isr.is_empty() { p.isr.clone() } else { isr };
    if (leader, &isr) == (p.leader, &p.isr) {
        return false;
    }
    if leader != p.leader {
        p.leader_epoch += 1;
    }
    (p.leader, p.isr) = (leader, isr);
    p.partition_epoch += 1;
    true
}

/// Fences or unfences broker `node_id` in `image`, moving leaders and ISRs as KRaft's
/// controller does (see the module doc). `unclean` says whether a topic with these configs
/// allows unclean leader election.
pub fn set_fenced(image: &mut MetadataImage, node_id: i32, fenced: bool, unclean: &dyn Fn(&TopicConfigs) -> bool) {
    let Some(broker) = image.brokers.get_mut(&node_id) else { return };
    broker.fenced = fenced;
    let eligible: std::collections::HashSet<i32> = image.unfenced_brokers().map(|b| b.node_id).collect();
    let eligible = |r: i32| eligible.contains(&r);
    for topic in image.topics.values_mut() {
        let election = if unclean(&topic.configs) { Election::Unclean } else { Election::Online };
        for p in &mut topic.partitions {
            let target_isr = match fenced {
                true if p.isr.contains(&node_id) || p.leader == node_id => {
                    p.isr.iter().copied().filter(|&r| r != node_id).collect()
                }
                false if p.leader == NO_LEADER && p.replicas.contains(&node_id) => p.isr.clone(),
                _ => continue,
            };
            change(p, target_isr, election, &eligible);
        }
    }
}

/// A broker's registration from a new incarnation (a restart, however fast): the old
/// incarnation is gone, so it is fenced as any broker that stops (out of every ISR but as the
/// last member, its leaderships moved; Kafka's `handleBrokerShutdown` on re-registration,
/// without eligible leader replicas), and `broker`, fenced until its first heartbeat, takes
/// its place.
pub fn register(image: &mut MetadataImage, broker: BrokerRegistration, unclean: &dyn Fn(&TopicConfigs) -> bool) {
    assert!(broker.fenced, "a broker registers fenced");
    set_fenced(image, broker.node_id, true, unclean);
    image.brokers.insert(broker.node_id, broker);
}

/// What an election asked for by name (ElectLeaders, or the controller's own rebalancing) did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Elected {
    /// A new leader (the partition changed).
    Done,
    /// Preferred: the first replica leads already; unclean: the partition has a leader.
    NotNeeded,
    /// No replica the election may take is live (PREFERRED_LEADER_NOT_AVAILABLE,
    /// ELIGIBLE_LEADERS_NOT_AVAILABLE).
    NoneEligible,
}

/// Kafka's `electLeader` for ElectLeaders: a preferred election when the first replica does
/// not lead, an unclean one when nothing leads.
pub fn elect(p: &mut PartitionMetadata, election: Election, eligible: &dyn Fn(i32) -> bool) -> Elected {
    let needed = match election {
        Election::Preferred => p.replicas.first() != Some(&p.leader),
        Election::Unclean | Election::Online => p.leader == NO_LEADER,
    };
    match needed {
        false => Elected::NotNeeded,
        true if change(p, p.isr.clone(), election, eligible) => Elected::Done,
        true => Elected::NoneEligible,
    }
}

/// The partitions (topic, partition) whose leadership should go back to their preferred
/// replica, by the rule of Kafka's `auto.leader.rebalance.enable`: for each broker, the share
/// of the partitions it is preferred for that it does not lead; above `percentage`
/// (`leader.imbalance.per.broker.percentage`), those of them where it is in the ISR and
/// `eligible` are moved back.
pub fn imbalanced(image: &MetadataImage, percentage: u32, eligible: &dyn Fn(i32) -> bool) -> Vec<(String, i32)> {
    /// For one preferred broker: its partitions, how many it does not lead, those it could.
    type Share = (usize, usize, Vec<(String, i32)>);
    let mut brokers: BTreeMap<i32, Share> = BTreeMap::new();
    for topic in image.topics.values() {
        for p in &topic.partitions {
            let Some(&first) = p.replicas.first() else { continue };
            let (count, not_led, movable) = brokers.entry(first).or_default();
            *count += 1;
            if p.leader != first {
                *not_led += 1;
                if p.isr.contains(&first) && eligible(first) {
                    movable.push((topic.name.clone(), p.partition));
                }
            }
        }
    }
    let over = |(count, not_led, _): &Share| *not_led * 100 > percentage as usize * *count;
    brokers.into_values().filter(over).flat_map(|(_, _, movable)| movable).collect()
}

/// A leader's AlterPartition for one partition: the ISR it proposes, with the epochs it knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsrProposal {
    /// The broker sending it, and its broker epoch.
    pub broker_id: i32,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    /// The proposed ISR, each member with the broker epoch the leader knows it by (-1: any).
    pub new_isr: Vec<(i32, i64)>,
    /// Kafka's leader recovery state: 0 recovered, 1 recovering from an unclean election.
    pub leader_recovery_state: i8,
}

/// Why the controller refused an [`IsrProposal`], as Kafka names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IsrRefusal {
    /// The proposal is ahead of this controller's image: it is likely no longer the active
    /// controller (NOT_CONTROLLER, so that the leader looks for the new one).
    Behind,
    /// A leader epoch older than the partition's (FENCED_LEADER_EPOCH).
    FencedLeaderEpoch,
    /// A partition epoch older than the partition's (INVALID_UPDATE_VERSION).
    StalePartitionEpoch,
    /// Not sent by the leader, an ISR outside the replicas, repeated, without the leader, or a
    /// recovery state Sluice does not keep (INVALID_REQUEST).
    Invalid(String),
    /// A member that may not join the ISR (INELIGIBLE_REPLICA).
    Ineligible(String),
}

/// Checks `proposal` against partition `p` and, if it holds, applies it (the leader stays:
/// it must be in the proposed ISR). `ineligible` says why a broker (with the epoch the leader
/// knows it by) may not be in the ISR, if it may not.
pub fn alter_isr(
    p: &mut PartitionMetadata,
    proposal: &IsrProposal,
    ineligible: &dyn Fn(i32, i64) -> Option<&'static str>,
) -> Result<(), IsrRefusal> {
    if proposal.leader_epoch > p.leader_epoch || proposal.partition_epoch > p.partition_epoch {
        return Err(IsrRefusal::Behind);
    }
    if proposal.leader_epoch < p.leader_epoch {
        return Err(IsrRefusal::FencedLeaderEpoch);
    }
    if proposal.broker_id != p.leader {
        return Err(IsrRefusal::Invalid(format!("broker {} does not lead it, {} does", proposal.broker_id, p.leader)));
    }
    if proposal.partition_epoch < p.partition_epoch {
        return Err(IsrRefusal::StalePartitionEpoch);
    }
    let new_isr: Vec<i32> = proposal.new_isr.iter().map(|(id, _)| *id).collect();
    let distinct: std::collections::HashSet<i32> = new_isr.iter().copied().collect();
    if distinct.len() != new_isr.len() || !new_isr.iter().all(|r| p.replicas.contains(r)) {
        return Err(IsrRefusal::Invalid(format!("ISR {new_isr:?} is not a set of the replicas {:?}", p.replicas)));
    }
    if !distinct.contains(&p.leader) {
        return Err(IsrRefusal::Invalid(format!("ISR {new_isr:?} lacks its leader {}", p.leader)));
    }
    // Sluice never elects uncleanly into a recovering state, so a leader cannot be recovering.
    if proposal.leader_recovery_state != 0 {
        return Err(IsrRefusal::Invalid(format!("leader recovery state {}", proposal.leader_recovery_state)));
    }
    let refused: Vec<String> = proposal
        .new_isr
        .iter()
        .filter_map(|&(id, epoch)| ineligible(id, epoch).map(|why| format!("{id} ({why})")))
        .collect();
    if !refused.is_empty() {
        return Err(IsrRefusal::Ineligible(format!("ineligible replicas {}", refused.join(", "))));
    }
    let leader = p.leader;
    change(p, new_isr, Election::Online, &|r| r == leader);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::TopicMetadata;

    fn partition(replicas: &[i32], leader: i32, isr: &[i32]) -> PartitionMetadata {
        PartitionMetadata { leader, isr: isr.to_vec(), ..PartitionMetadata::new(0, 0, replicas.to_vec()) }
    }

    /// Brokers 1..=n unfenced, and topic "t" with the given partition.
    fn cluster(n: i32, p: PartitionMetadata) -> MetadataImage {
        let mut image = MetadataImage::default();
        for node_id in 1..=n {
            image.brokers.insert(node_id, BrokerRegistration::unfenced_for_test(node_id));
        }
        let topic = TopicMetadata {
            name: "t".into(),
            topic_id: uuid::Uuid::new_v4(),
            partitions: vec![p],
            configs: BTreeMap::new(),
        };
        image.topics.insert("t".into(), topic);
        image
    }

    fn state(image: &MetadataImage) -> (i32, Vec<i32>, i32, i32) {
        let p = &image.topics["t"].partitions[0];
        (p.leader, p.isr.clone(), p.leader_epoch, p.partition_epoch)
    }

    const CLEAN: &dyn Fn(&TopicConfigs) -> bool = &|_| false;
    const UNCLEAN: &dyn Fn(&TopicConfigs) -> bool = &|_| true;

    #[test]
    fn a_fenced_broker_leads_nothing_until_it_is_back() {
        let mut image = MetadataImage::default();
        for node_id in [1, 2] {
            image.brokers.insert(node_id, BrokerRegistration::unfenced_for_test(node_id));
        }
        let partitions = vec![PartitionMetadata::new(0, 0, vec![1]), PartitionMetadata::new(1, 0, vec![2])];
        let topic =
            TopicMetadata { name: "t".into(), topic_id: uuid::Uuid::new_v4(), partitions, configs: BTreeMap::new() };
        image.topics.insert("t".into(), topic);

        set_fenced(&mut image, 1, true, CLEAN);
        assert_eq!((image.leader("t", 0), image.leader("t", 1)), (Some(NO_LEADER), Some(2)));
        let p0 = &image.topics["t"].partitions[0];
        assert_eq!((p0.leader_epoch, p0.isr.as_slice()), (1, [1].as_slice()), "the last replica stays in sync");
        assert_eq!(image.topics["t"].partitions[1].leader_epoch, 0, "untouched");
        assert!(image.brokers[&1].fenced);

        set_fenced(&mut image, 1, false, CLEAN);
        assert_eq!(image.leader("t", 0), Some(1));
        assert_eq!(image.topics["t"].partitions[0].leader_epoch, 2);
    }

    #[test]
    fn a_fenced_leader_hands_over_to_the_first_live_isr_member_in_replica_order() {
        let mut image = cluster(3, partition(&[1, 2, 3], 1, &[1, 3, 2]));
        set_fenced(&mut image, 1, true, CLEAN);
        assert_eq!(state(&image), (2, vec![3, 2], 1, 1), "replica order, not ISR order");
    }

    #[test]
    fn a_fenced_follower_leaves_the_isr_and_the_leader_stays() {
        let mut image = cluster(3, partition(&[1, 2, 3], 1, &[1, 2, 3]));
        set_fenced(&mut image, 3, true, CLEAN);
        assert_eq!(state(&image), (1, vec![1, 2], 0, 1), "the leader epoch stays, the partition epoch moves");
        // Back: a follower, not in the ISR until its leader adds it.
        set_fenced(&mut image, 3, false, CLEAN);
        assert_eq!(state(&image), (1, vec![1, 2], 0, 1));
    }

    #[test]
    fn the_last_isr_member_stays_and_leads_again_when_it_returns() {
        let mut image = cluster(3, partition(&[1, 2, 3], 1, &[1, 2]));
        set_fenced(&mut image, 2, true, CLEAN);
        set_fenced(&mut image, 1, true, CLEAN);
        assert_eq!(state(&image), (NO_LEADER, vec![1], 1, 2), "3 is live but out of sync");
        // A replica outside the ISR returning changes nothing.
        set_fenced(&mut image, 3, true, CLEAN);
        set_fenced(&mut image, 3, false, CLEAN);
        assert_eq!(state(&image), (NO_LEADER, vec![1], 1, 2));
        set_fenced(&mut image, 1, false, CLEAN);
        assert_eq!(state(&image), (1, vec![1], 2, 3));
    }

    #[test]
    fn a_new_incarnation_fences_the_old_one_and_its_leaderships_move() {
        let mut image = cluster(3, partition(&[1, 2, 3], 1, &[1, 2, 3]));
        let mut follower = partition(&[2, 1, 3], 2, &[2, 1]);
        follower.partition = 1;
        let mut sole = partition(&[1, 3], 1, &[1]);
        sole.partition = 2;
        image.topics.get_mut("t").unwrap().partitions.extend([follower, sole]);
        let restarted = BrokerRegistration { epoch: 2, fenced: true, ..BrokerRegistration::unfenced_for_test(1) };
        register(&mut image, restarted.clone(), CLEAN);
        assert_eq!(image.brokers[&1], restarted);
        let t = &image.topics["t"].partitions;
        assert_eq!(state(&image), (2, vec![2, 3], 1, 1), "led: leadership moves, the old one leaves the ISR");
        assert_eq!((t[1].leader, t[1].isr.as_slice(), t[1].leader_epoch), (2, &[2][..], 0), "followed: out of the ISR");
        assert_eq!(
            (t[2].leader, t[2].isr.as_slice()),
            (NO_LEADER, &[1][..]),
            "the last ISR member stays, leading nothing"
        );
        // Its first heartbeat unfences it: it leads again only where it is the last ISR member.
        set_fenced(&mut image, 1, false, CLEAN);
        let t = &image.topics["t"].partitions;
        assert_eq!((t[0].leader, t[1].leader, t[2].leader), (2, 2, 1));
    }

    #[test]
    fn unclean_election_takes_a_live_replica_outside_the_isr() {
        let mut image = cluster(3, partition(&[1, 2, 3], 1, &[1]));
        set_fenced(&mut image, 1, true, UNCLEAN);
        assert_eq!(state(&image), (2, vec![2], 1, 1));

        // Enabled while the partition has no leader: the next replica to return leads.
        let mut leaderless = cluster(2, partition(&[1, 2], 1, &[1]));
        set_fenced(&mut leaderless, 2, true, CLEAN);
        set_fenced(&mut leaderless, 1, true, CLEAN);
        assert_eq!(state(&leaderless).0, NO_LEADER);
        set_fenced(&mut leaderless, 2, false, UNCLEAN);
        assert_eq!(state(&leaderless), (2, vec![2], 2, 2));
    }

    #[test]
    fn preferred_election_needs_the_first_replica_live_and_in_sync() {
        let mut p = partition(&[1, 2, 3], 2, &[2, 3]);
        let all = |_| true;
        assert!(!change(&mut p, vec![2, 3], Election::Preferred, &all), "1 is out of sync: 2 stays");
        let mut p = partition(&[1, 2, 3], 2, &[1, 2, 3]);
        assert!(!change(&mut p, vec![1, 2, 3], Election::Preferred, &|r| r != 1), "1 is fenced");
        assert!(change(&mut p, vec![1, 2, 3], Election::Preferred, &all));
        assert_eq!((p.leader, p.leader_epoch, p.partition_epoch), (1, 1, 1));
        assert!(!change(&mut p, vec![1, 2, 3], Election::Preferred, &all), "nothing left to do");
    }

    #[test]
    fn elect_leaders_answers_per_partition_as_kafka_does() {
        let all = |_| true;
        let mut led = partition(&[1, 2], 1, &[1, 2]);
        assert_eq!(elect(&mut led, Election::Preferred, &all), Elected::NotNeeded);
        assert_eq!(elect(&mut led, Election::Unclean, &all), Elected::NotNeeded);
        let mut moved = partition(&[1, 2], 2, &[1, 2]);
        assert_eq!(elect(&mut moved, Election::Preferred, &|r| r == 2), Elected::NoneEligible);
        assert_eq!(elect(&mut moved, Election::Preferred, &all), Elected::Done);
        assert_eq!((moved.leader, moved.leader_epoch), (1, 1));
        let mut out_of_sync = partition(&[1, 2], 2, &[2]);
        assert_eq!(elect(&mut out_of_sync, Election::Preferred, &all), Elected::NoneEligible);
        let mut leaderless = partition(&[1, 2], NO_LEADER, &[1]);
        assert_eq!(elect(&mut leaderless, Election::Unclean, &|r| r == 3), Elected::NoneEligible);
        assert_eq!(elect(&mut leaderless, Election::Unclean, &|r| r == 2), Elected::Done);
        assert_eq!((leaderless.leader, leaderless.isr.as_slice()), (2, &[2][..]));
    }

    #[test]
    fn leaders_go_back_to_brokers_whose_imbalance_passes_the_percentage() {
        let mut image = MetadataImage::default();
        // Broker 1 is preferred for 4 partitions and leads 3; broker 2 for 2 and leads none.
        let partitions = vec![
            partition(&[1, 2], 1, &[1, 2]),
            partition(&[1, 2], 1, &[1, 2]),
            partition(&[1, 2], 1, &[1, 2]),
            partition(&[1, 2], 2, &[1, 2]),
            partition(&[2, 1], 1, &[1, 2]),
            partition(&[2, 1], 1, &[1]),
        ];
        let partitions =
            partitions.into_iter().enumerate().map(|(i, p)| PartitionMetadata { partition: i as i32, ..p });
        let topic = TopicMetadata {
            name: "t".into(),
            topic_id: uuid::Uuid::new_v4(),
            partitions: partitions.collect(),
            configs: BTreeMap::new(),
        };
        image.topics.insert("t".into(), topic);
        let all = |_| true;
        let moved = |percentage| imbalanced(&image, percentage, &all);
        // 25% for broker 1, 100% for broker 2 (of which partition 5 lacks it in its ISR).
        assert_eq!(moved(10), [("t".to_string(), 3), ("t".to_string(), 4)]);
        assert_eq!(moved(25), [("t".to_string(), 4)]);
        assert_eq!(moved(100), []);
        assert_eq!(imbalanced(&image, 10, &|r| r == 1), [("t".to_string(), 3)], "2 is fenced");
    }

    fn proposal(leader_epoch: i32, partition_epoch: i32, new_isr: &[i32]) -> IsrProposal {
        IsrProposal {
            broker_id: 1,
            leader_epoch,
            partition_epoch,
            new_isr: new_isr.iter().map(|&r| (r, -1)).collect(),
            leader_recovery_state: 0,
        }
    }

    #[test]
    fn alter_isr_refuses_stale_or_invalid_proposals_and_ineligible_members() {
        let none = |_, _| None;
        let mut p = partition(&[1, 2, 3], 1, &[1, 2, 3]);
        (p.leader_epoch, p.partition_epoch) = (4, 7);
        let before = p.clone();
        let refused = |p: &mut PartitionMetadata, proposal: IsrProposal| alter_isr(p, &proposal, &none).unwrap_err();
        assert_eq!(refused(&mut p, proposal(3, 7, &[1])), IsrRefusal::FencedLeaderEpoch);
        assert_eq!(refused(&mut p, proposal(4, 6, &[1])), IsrRefusal::StalePartitionEpoch);
        assert_eq!(refused(&mut p, proposal(5, 7, &[1])), IsrRefusal::Behind);
        assert_eq!(refused(&mut p, proposal(4, 8, &[1])), IsrRefusal::Behind);
        for isr in [&[2, 3][..], &[1, 4], &[1, 1], &[]] {
            assert!(matches!(refused(&mut p, proposal(4, 7, isr)), IsrRefusal::Invalid(_)), "{isr:?}");
        }
        let not_leader = IsrProposal { broker_id: 2, ..proposal(4, 7, &[1, 2]) };
        assert!(matches!(refused(&mut p, not_leader), IsrRefusal::Invalid(_)));
        let recovering = IsrProposal { leader_recovery_state: 1, ..proposal(4, 7, &[1]) };
        assert!(matches!(refused(&mut p, recovering), IsrRefusal::Invalid(_)));
        let fenced_3 = |id, _| (id == 3).then_some("fenced");
        let refusal = alter_isr(&mut p, &proposal(4, 7, &[1, 3]), &fenced_3).unwrap_err();
        assert_eq!(refusal, IsrRefusal::Ineligible("ineligible replicas 3 (fenced)".into()));
        assert_eq!(p, before, "nothing refused changes the partition");

        // A shrink, then an expand, each in the partition epoch the last one left.
        alter_isr(&mut p, &proposal(4, 7, &[1]), &none).unwrap();
        assert_eq!((p.leader, p.isr.as_slice(), p.leader_epoch, p.partition_epoch), (1, &[1][..], 4, 8));
        assert_eq!(refused(&mut p, proposal(4, 7, &[1, 2])), IsrRefusal::StalePartitionEpoch);
        alter_isr(&mut p, &proposal(4, 8, &[1, 2]), &none).unwrap();
        assert_eq!((p.isr.as_slice(), p.partition_epoch), (&[1, 2][..], 9));
        // The same ISR again changes nothing, and is answered with the state as it is.
        alter_isr(&mut p, &proposal(4, 9, &[1, 2]), &none).unwrap();
        assert_eq!(p.partition_epoch, 9);
    }
}
