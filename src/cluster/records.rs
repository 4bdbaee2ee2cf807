//! The records of the metadata log: what one controller change did to the image, in Sluice's
//! own serialisation (JSON of these types).
//!
//! The controller builds the next image as a whole (validation reads the current one), then
//! [`changes`] turns the difference into records, which travel through the Raft log; every
//! node [`apply`]s committed records to its image. Invariant: `apply(old, changes(old, new))`
//! gives `new` back, exactly (tested below).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{MetadataImage, PartitionMetadata, TopicMetadata};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum MetadataRecord {
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
    /// Producer ids below this one have been handed out.
    NextProducerId(i64),
}

/// The records that turn `old` into `new`.
pub fn changes(old: &MetadataImage, new: &MetadataImage) -> Vec<MetadataRecord> {
    assert_eq!(old.cluster_id, new.cluster_id, "the cluster id never changes");
    let mut records = Vec::new();
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
        assert!(topic.partitions.starts_with(&before.partitions), "partitions are only ever added to a topic: {name}");
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
    if new.next_producer_id != old.next_producer_id {
        records.push(MetadataRecord::NextProducerId(new.next_producer_id));
    }
    records
}

/// Applies committed records to `image`. Records come from the log, which only the controller
/// writes after validating; one naming a topic that is not there is a broken invariant.
pub fn apply(image: &mut MetadataImage, records: Vec<MetadataRecord>) {
    for record in records {
        match record {
            MetadataRecord::CreateTopic(topic) => {
                image.topics.insert(topic.name.clone(), topic);
            }
            MetadataRecord::DeleteTopic { name } => {
                image.topics.remove(&name).expect("a committed deletion names an existing topic");
            }
            MetadataRecord::AddPartitions { topic, partitions } => {
                let topic = image.topics.get_mut(&topic).expect("committed partitions name an existing topic");
                topic.partitions.extend(partitions);
            }
            MetadataRecord::TopicConfigs { topic, configs } => {
                image.topics.get_mut(&topic).expect("committed configs name an existing topic").configs = configs;
            }
            MetadataRecord::ClusterConfigs(configs) => image.cluster_configs = configs,
            MetadataRecord::BrokerConfigs(configs) => image.broker_configs = configs,
            MetadataRecord::NextProducerId(next) => image.next_producer_id = next,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(name: &str, partitions: i32) -> TopicMetadata {
        TopicMetadata {
            name: name.into(),
            topic_id: uuid::Uuid::new_v4(),
            partitions: (0..partitions)
                .map(|partition| PartitionMetadata { partition, shard: 0, leader_epoch: 0, offline: false })
                .collect(),
            configs: BTreeMap::new(),
        }
    }

    fn roundtrip(old: &MetadataImage, new: &MetadataImage) -> Vec<MetadataRecord> {
        let records = changes(old, new);
        // Through the log's serialisation, as they travel.
        let records: Vec<MetadataRecord> = serde_json::from_slice(&serde_json::to_vec(&records).unwrap()).unwrap();
        let mut applied = old.clone();
        apply(&mut applied, records.clone());
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
        kept.partitions.push(PartitionMetadata { partition: 1, shard: 1, leader_epoch: 0, offline: false });
        kept.configs.insert("retention.ms".into(), "1000".into());
        new.cluster_configs.insert("log.retention.ms".into(), "5".into());
        new.broker_configs.insert("log.retention.ms".into(), "6".into());
        new.next_producer_id = 1000;
        let records = roundtrip(&old, &new);
        // A topic recreated under its name is a deletion and a creation (a new topic id).
        assert!(records.contains(&MetadataRecord::DeleteTopic { name: "again".into() }));
        assert_eq!(records.len(), 9, "{records:?}");
    }
}
