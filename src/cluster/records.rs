//! The records of the metadata log: what one controller change did to the image, in Sluice's
//! own serialisation (JSON of these types).
//!
//! The controller builds the next image as a whole (validation reads the current one), then
//! [`changes`] turns the difference into records, which travel through the Raft log; every
//! node [`apply`]s committed records to its image. Invariant: `apply(old, changes(old, new))`
//! gives `new` back, exactly (tested below).
//!
//! With several controllers, two of them may validate changes against the same image and
//! both commit (a topic created through two nodes at once). So [`apply`] checks each entry's
//! records against the image they land on and applies all of them or none; every node reaches
//! the same verdict, since it applies the same entries in the same order.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{BrokerRegistration, MetadataImage, PartitionMetadata, TopicMetadata};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum MetadataRecord {
    /// The first record of a cluster whose quorum has several voters: its id, drawn by the
    /// first leader (a one-voter quorum starts from a snapshot that has it).
    InitCluster {
        cluster_id: String,
    },
    CreateTopic(TopicMetadata),
    DeleteTopic {
        name: String,
    },
    /// Partitions appended to an existing topic (CreatePartitions).
    AddPartitions {
        topic: String,
        partitions: Vec<PartitionMetadata>,
    },
    /// The whole set of a topic's configs after the change.
    TopicConfigs {
        topic: String,
        configs: BTreeMap<String, String>,
    },
    /// The whole set of dynamic broker configs after the change: the cluster-wide default...
    ClusterConfigs(BTreeMap<String, String>),
    /// ... and this broker's own.
    BrokerConfigs(BTreeMap<String, String>),
    /// The producer ids in [from, to) have been handed out; `from` must be the first free one
    /// (two controllers reserving at once must not both get it).
    NextProducerId {
        from: i64,
        to: i64,
    },
    /// A broker's whole registration after the change: registered (a new epoch), fenced or
    /// unfenced (the same epoch).
    Broker(BrokerRegistration),
    /// A partition's replicas changed (a reassignment began, was replaced, cancelled or
    /// completed), decided against `was`, its replicas before; comes before the
    /// `PartitionChange` (a new partition epoch) of the same change.
    PartitionReplicas {
        topic: String,
        partition: i32,
        was: Vec<i32>,
        replicas: Vec<i32>,
        adding_replicas: Vec<i32>,
        removing_replicas: Vec<i32>,
    },
    /// A partition's new leader (or none: -1) and ISR, at a higher partition epoch (the
    /// leader epoch grows too when the leader changed). Records written before partition
    /// epochs were kept have none: they changed the leader epoch, and count as one change.
    PartitionChange {
        topic: String,
        partition: i32,
        leader: i32,
        leader_epoch: i32,
        isr: Vec<i32>,
        #[serde(default)]
        partition_epoch: Option<i32>,
    },
}

/// The records that turn `old` into `new`.
pub fn changes(old: &MetadataImage, new: &MetadataImage) -> Vec<MetadataRecord> {
    let mut records = Vec::new();
    if old.cluster_id != new.cluster_id {
        assert!(old.cluster_id.is_empty(), "the cluster id never changes once set");
        records.push(MetadataRecord::InitCluster { cluster_id: new.cluster_id.clone() });
    }
    for (name, topic) in &old.topics {
        if new.topics.get(name).is_none_or(|t| t.topic_id != topic.topic_id) {
            records.push(MetadataRecord::DeleteTopic { name: name.clone() });
        }
    }
    for (name, topic) in &new.topics {
        let Some(before) = old.topics.get(name).filter(|t| t.topic_id == topic.topic_id) else {
            records.push(MetadataRecord::CreateTopic(topic.clone()));
            continue;
        };
        assert!(topic.partitions.len() >= before.partitions.len(), "partitions are only ever added to a topic: {name}");
        for (p, was) in topic.partitions.iter().zip(&before.partitions) {
            let assignment =
                |p: &PartitionMetadata| (p.replicas.clone(), p.adding_replicas.clone(), p.removing_replicas.clone());
            if assignment(p) != assignment(was) {
                assert!(p.partition_epoch > was.partition_epoch, "a change bumps the epoch: {name}-{}", p.partition);
                records.push(MetadataRecord::PartitionReplicas {
                    topic: name.clone(),
                    partition: p.partition,
                    was: was.replicas.clone(),
                    replicas: p.replicas.clone(),
                    adding_replicas: p.adding_replicas.clone(),
                    removing_replicas: p.removing_replicas.clone(),
                });
            }
            if (p.leader, p.leader_epoch, &p.isr, p.partition_epoch)
                != (was.leader, was.leader_epoch, &was.isr, was.partition_epoch)
            {
                assert!(p.partition_epoch > was.partition_epoch, "a change bumps the epoch: {name}-{}", p.partition);
                assert!(p.leader == was.leader || p.leader_epoch > was.leader_epoch, "a new leader, a new epoch");
                records.push(MetadataRecord::PartitionChange {
                    topic: name.clone(),
                    partition: p.partition,
                    leader: p.leader,
                    leader_epoch: p.leader_epoch,
                    isr: p.isr.clone(),
                    partition_epoch: Some(p.partition_epoch),
                });
            }
        }
        if topic.partitions.len() > before.partitions.len() {
            let partitions = topic.partitions[before.partitions.len()..].to_vec();
            records.push(MetadataRecord::AddPartitions { topic: name.clone(), partitions });
        }
        if topic.configs != before.configs {
            records.push(MetadataRecord::TopicConfigs { topic: name.clone(), configs: topic.configs.clone() });
        }
    }
    if new.cluster_configs != old.cluster_configs {
        records.push(MetadataRecord::ClusterConfigs(new.cluster_configs.clone()));
    }
    if new.broker_configs != old.broker_configs {
        records.push(MetadataRecord::BrokerConfigs(new.broker_configs.clone()));
    }
    for (id, broker) in &new.brokers {
        if old.brokers.get(id) != Some(broker) {
            records.push(MetadataRecord::Broker(broker.clone()));
        }
    }
    assert!(old.brokers.keys().all(|id| new.brokers.contains_key(id)), "brokers are never unregistered");
    if new.next_producer_id != old.next_producer_id {
        records.push(MetadataRecord::NextProducerId { from: old.next_producer_id, to: new.next_producer_id });
    }
    records
}

/// Applies one entry's committed records to `image`, all or none: when one does not fit the
/// image (a concurrent change won), the image is left as it was and the reason returned.
pub fn apply(image: &mut MetadataImage, records: Vec<MetadataRecord>) -> Result<(), String> {
    let mut next = image.clone();
    for record in records {
        apply_one(&mut next, record)?;
    }
    *image = next;
    Ok(())
}

fn apply_one(image: &mut MetadataImage, record: MetadataRecord) -> Result<(), String> {
    let missing = |name: &str| format!("topic {name:?} does not exist");
    match record {
        MetadataRecord::InitCluster { cluster_id } => match image.cluster_id.is_empty() {
            true => image.cluster_id = cluster_id,
            false => return Err("the cluster is initialised already".into()),
        },
        MetadataRecord::CreateTopic(topic) => {
            if image.topics.contains_key(&topic.name) {
                return Err(format!("topic {:?} already exists", topic.name));
            }
            image.topics.insert(topic.name.clone(), topic);
        }
        MetadataRecord::DeleteTopic { name } => {
            image.topics.remove(&name).ok_or_else(|| missing(&name))?;
        }
        MetadataRecord::AddPartitions { topic, partitions } => {
            let existing = image.topics.get_mut(&topic).ok_or_else(|| missing(&topic))?;
            if partitions.first().is_none_or(|p| p.partition != existing.partitions.len() as i32) {
                return Err(format!("topic {topic:?} has {} partitions now", existing.partitions.len()));
            }
            existing.partitions.extend(partitions);
        }
        MetadataRecord::TopicConfigs { topic, configs } => {
            image.topics.get_mut(&topic).ok_or_else(|| missing(&topic))?.configs = configs;
        }
        MetadataRecord::ClusterConfigs(configs) => image.cluster_configs = configs,
        MetadataRecord::BrokerConfigs(configs) => image.broker_configs = configs,
        MetadataRecord::NextProducerId { from, to } => match image.next_producer_id == from {
            true => image.next_producer_id = to,
            false => {
                return Err(format!("producer ids from {} are handed out, not from {from}", image.next_producer_id));
            }
        },
        MetadataRecord::PartitionReplicas { topic, partition, was, replicas, adding_replicas, removing_replicas } => {
            let p = partition_mut(image, &topic, partition)?;
            // Decided against other replicas: another change came first.
            if p.replicas != was {
                return Err(format!("{topic}-{partition} has replicas {:?} now, not {was:?}", p.replicas));
            }
            (p.replicas, p.adding_replicas, p.removing_replicas) = (replicas, adding_replicas, removing_replicas);
        }
        MetadataRecord::PartitionChange { topic, partition, leader, leader_epoch, isr, partition_epoch } => {
            let p = partition_mut(image, &topic, partition)?;
            // Decided against an older state of the partition: another change came first.
            let stale = match partition_epoch {
                Some(epoch) => epoch <= p.partition_epoch,
                None => leader_epoch <= p.leader_epoch,
            };
            if stale || leader_epoch < p.leader_epoch {
                return Err(format!(
                    "{topic}-{partition} is at leader epoch {}, partition epoch {} already",
                    p.leader_epoch, p.partition_epoch
                ));
            }
            let partition_epoch = partition_epoch.unwrap_or(p.partition_epoch + 1);
            (p.leader, p.leader_epoch, p.isr, p.partition_epoch) = (leader, leader_epoch, isr, partition_epoch);
        }
        MetadataRecord::Broker(broker) => {
            // A fence or unfence decided on an older registration must not undo a newer one.
            if let Some(current) = image.brokers.get(&broker.node_id)
                && current.epoch > broker.epoch
            {
                return Err(format!("broker {} registered again (epoch {})", broker.node_id, current.epoch));
            }
            image.brokers.insert(broker.node_id, broker);
        }
    }
    Ok(())
}

fn partition_mut<'a>(
    image: &'a mut MetadataImage,
    topic: &str,
    partition: i32,
) -> Result<&'a mut PartitionMetadata, String> {
    let existing = image.topics.get_mut(topic).ok_or_else(|| format!("topic {topic:?} does not exist"))?;
    usize::try_from(partition)
        .ok()
        .and_then(|i| existing.partitions.get_mut(i))
        .ok_or_else(|| format!("topic {topic:?} has no partition {partition}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(name: &str, partitions: i32) -> TopicMetadata {
        TopicMetadata {
            name: name.into(),
            topic_id: uuid::Uuid::new_v4(),
            partitions: (0..partitions).map(|partition| PartitionMetadata::new(partition, 0, vec![1])).collect(),
            configs: BTreeMap::new(),
        }
    }

    fn broker(node_id: i32, epoch: i64) -> BrokerRegistration {
        BrokerRegistration {
            node_id,
            incarnation_id: uuid::Uuid::new_v4(),
            epoch,
            host: "localhost".into(),
            port: 9092,
            rack: None,
            fenced: true,
        }
    }

    fn roundtrip(old: &MetadataImage, new: &MetadataImage) -> Vec<MetadataRecord> {
        let records = changes(old, new);
        // Through the log's serialisation, as they travel.
        let records: Vec<MetadataRecord> = serde_json::from_slice(&serde_json::to_vec(&records).unwrap()).unwrap();
        let mut applied = old.clone();
        apply(&mut applied, records.clone()).unwrap();
        assert_eq!(&applied, new);
        records
    }

    #[test]
    fn every_kind_of_change_applies_back_to_the_new_image() {
        let mut old = MetadataImage { cluster_id: "c".into(), ..MetadataImage::default() };
        old.topics.insert("kept".into(), topic("kept", 1));
        old.topics.insert("gone".into(), topic("gone", 2));
        old.topics.insert("again".into(), topic("again", 1));
        let mut new = old.clone();
        assert!(roundtrip(&old, &new).is_empty());

        new.topics.remove("gone");
        new.topics.insert("again".into(), topic("again", 3));
        new.topics.insert("fresh".into(), topic("fresh", 4));
        let kept = new.topics.get_mut("kept").unwrap();
        kept.partitions.push(PartitionMetadata::new(1, 1, vec![1]));
        kept.configs.insert("retention.ms".into(), "1000".into());
        new.cluster_configs.insert("log.retention.ms".into(), "5".into());
        new.broker_configs.insert("log.retention.ms".into(), "6".into());
        new.next_producer_id = 1000;
        new.brokers.insert(1, broker(1, 1));
        let records = roundtrip(&old, &new);
        // A topic recreated under its name is a deletion and a creation (a new topic id).
        assert!(records.contains(&MetadataRecord::DeleteTopic { name: "again".into() }));
        assert_eq!(records.len(), 10, "{records:?}");

        let (old, mut new) = (new.clone(), new);
        new.brokers.get_mut(&1).unwrap().fenced = false;
        new.brokers.insert(2, broker(2, 1));
        let moved = &mut new.topics.get_mut("kept").unwrap().partitions[0];
        (moved.leader, moved.leader_epoch, moved.partition_epoch) = (crate::cluster::NO_LEADER, 1, 1);
        assert_eq!(roundtrip(&old, &new).len(), 3);

        // An ISR change alone keeps the leader epoch.
        let (old, mut new) = (new.clone(), new);
        let shrunk = &mut new.topics.get_mut("kept").unwrap().partitions[0];
        (shrunk.isr, shrunk.partition_epoch) = (vec![2], 2);
        assert_eq!(roundtrip(&old, &new).len(), 1);

        // A reassignment's start: replicas, and a new partition epoch.
        let (old, mut new) = (new.clone(), new);
        let moving = &mut new.topics.get_mut("kept").unwrap().partitions[1];
        (moving.replicas, moving.adding_replicas, moving.removing_replicas) = (vec![2, 1], vec![2], vec![1]);
        moving.partition_epoch += 1;
        assert!(matches!(
            roundtrip(&old, &new).as_slice(),
            [MetadataRecord::PartitionReplicas { .. }, MetadataRecord::PartitionChange { .. }]
        ));
        // Its end: replicas, then leader and ISR.
        let (old, mut new) = (new.clone(), new);
        let moved = &mut new.topics.get_mut("kept").unwrap().partitions[1];
        (moved.replicas, moved.adding_replicas, moved.removing_replicas) = (vec![2], vec![], vec![]);
        (moved.leader, moved.leader_epoch, moved.isr) = (2, 1, vec![2]);
        moved.partition_epoch += 1;
        let records = roundtrip(&old, &new);
        assert!(matches!(
            records.as_slice(),
            [MetadataRecord::PartitionReplicas { .. }, MetadataRecord::PartitionChange { .. }]
        ));
        // Decided against replicas that changed since: refused.
        let mut moved_again = old.clone();
        apply(&mut moved_again, records.clone()).unwrap();
        assert!(apply(&mut moved_again, records[..1].to_vec()).is_err());
    }

    #[test]
    fn an_entry_that_no_longer_fits_changes_nothing() {
        let mut image = MetadataImage { cluster_id: "c".into(), ..MetadataImage::default() };
        image.topics.insert("t".into(), topic("t", 1));
        let before = image.clone();
        // Created through two controllers at once: the second creation loses, with its other records.
        let records =
            vec![MetadataRecord::NextProducerId { from: 0, to: 7 }, MetadataRecord::CreateTopic(topic("t", 2))];
        assert!(apply(&mut image, records).is_err());
        assert_eq!(image, before);
        let grow = |from| MetadataRecord::AddPartitions {
            topic: "t".into(),
            partitions: vec![PartitionMetadata::new(from, 0, vec![1])],
        };
        assert!(apply(&mut image, vec![grow(1)]).is_ok());
        assert!(apply(&mut image, vec![grow(1)]).is_err(), "grown by another controller meanwhile");
        let elect = |leader_epoch, partition_epoch| MetadataRecord::PartitionChange {
            topic: "t".into(),
            partition: 0,
            leader: 1,
            leader_epoch,
            isr: vec![1],
            partition_epoch,
        };
        assert!(apply(&mut image, vec![elect(1, Some(1))]).is_ok());
        assert!(apply(&mut image, vec![elect(1, Some(1))]).is_err(), "decided against the epoch before");
        assert!(apply(&mut image, vec![elect(1, Some(2))]).is_ok(), "an ISR change keeps the leader epoch");
        // A record from before partition epochs: one change, if its leader epoch is new.
        assert!(apply(&mut image, vec![elect(1, None)]).is_err());
        assert!(apply(&mut image, vec![elect(2, None)]).is_ok());
        assert_eq!(image.topics["t"].partitions[0].partition_epoch, 3);
        assert!(apply(&mut image, vec![MetadataRecord::InitCluster { cluster_id: "d".into() }]).is_err());

        // A broker fenced by a controller that had not seen its new registration stays as it
        // registered.
        let registered = broker(1, 2);
        assert!(apply(&mut image, vec![MetadataRecord::Broker(registered.clone())]).is_ok());
        let stale = BrokerRegistration { fenced: true, ..broker(1, 1) };
        assert!(apply(&mut image, vec![MetadataRecord::Broker(stale)]).is_err());
        assert_eq!(image.brokers[&1], registered);
    }
}
