//! The metadata image and its persistence (`metadata.json`, replaced atomically).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::shard::ShardId;

const FILE_NAME: &str = "metadata.json";

/// Kafka's limit on topic names (a partition directory adds "-<partition>" to them).
const TOPIC_NAME_MAX_LEN: usize = 249;

/// Whether `name` may name a topic, by Kafka's rules: 1 to 249 of `[a-zA-Z0-9._-]`, and
/// neither "." nor "..". Names also become directory names, so this guards the file system.
pub fn is_legal_topic_name(name: &str) -> bool {
    let legal = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    !name.is_empty() && name != "." && name != ".." && name.len() <= TOPIC_NAME_MAX_LEN && name.chars().all(legal)
}

/// Everything a shard needs to know about the cluster's topics. Immutable once published:
/// the controller builds a new image for each change.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MetadataImage {
    pub cluster_id: String,
    /// First producer id not yet handed out (idempotent producers), in blocks per shard.
    #[serde(default)]
    pub next_producer_id: i64,
    #[serde(with = "topics_as_list")]
    pub topics: BTreeMap<String, TopicMetadata>,
    /// Dynamic broker configs set through AlterConfigs for the cluster-wide default (resource
    /// name "")...
    #[serde(default)]
    pub cluster_configs: BTreeMap<String, String>,
    /// ... and for this broker (resource name: its node id), which win over those.
    #[serde(default)]
    pub broker_configs: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TopicMetadata {
    pub name: String,
    /// Kafka's topic id (KIP-516), needed by Fetch v13+ and Metadata v10+.
    pub topic_id: uuid::Uuid,
    pub partitions: Vec<PartitionMetadata>,
    pub configs: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PartitionMetadata {
    pub partition: i32,
    /// The shard that owns this partition's log on this broker.
    pub shard: ShardId,
    pub leader_epoch: i32,
    /// Its owner failed to open it in this run (damaged files, I/O errors): Metadata reports
    /// no leader, reads and writes get KAFKA_STORAGE_ERROR. Never persisted.
    #[serde(skip)]
    pub offline: bool,
}

impl MetadataImage {
    pub fn topic(&self, name: &str) -> Option<&TopicMetadata> {
        self.topics.get(name)
    }

    pub fn topic_by_id(&self, topic_id: uuid::Uuid) -> Option<&TopicMetadata> {
        self.topics.values().find(|t| t.topic_id == topic_id)
    }

    /// The shard owning `partition` of `topic`, if both exist.
    pub fn owner(&self, topic: &str, partition: i32) -> Option<ShardId> {
        let topic = self.topics.get(topic)?;
        let index = usize::try_from(partition).ok()?;
        topic.partitions.get(index).map(|p| p.shard)
    }

    /// Loads the image, or a fresh one with a new cluster id when the file does not exist.
    pub fn load_or_create(data_dir: &Path) -> anyhow::Result<MetadataImage> {
        let path = data_dir.join(FILE_NAME);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).with_context(|| format!("reading {}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(MetadataImage {
                cluster_id: uuid::Uuid::new_v4().simple().to_string(),
                next_producer_id: 0,
                topics: BTreeMap::new(),
                cluster_configs: BTreeMap::new(),
                broker_configs: BTreeMap::new(),
            }),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// Writes the image durably: a temporary file, fsync, rename over the old one, fsync the
    /// directory. A crash leaves either the old or the new image, never a mix. A write that
    /// fails (a full disk) removes the temporary file, giving its space back.
    pub fn persist(&self, data_dir: &Path) -> anyhow::Result<()> {
        let path = data_dir.join(FILE_NAME);
        let tmp = data_dir.join(format!("{FILE_NAME}.tmp"));
        let write = || -> anyhow::Result<()> {
            let mut file = std::fs::File::create(&tmp)?;
            file.write_all(&serde_json::to_vec_pretty(self)?)?;
            file.sync_all()?;
            Ok(())
        };
        if let Err(e) = write() {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        std::fs::rename(&tmp, &path)?;
        std::fs::File::open(data_dir)?.sync_all()?;
        Ok(())
    }
}

/// `metadata.json` lists topics as an array, which reads better than a map keyed by name.
mod topics_as_list {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::TopicMetadata;

    pub fn serialize<S: Serializer>(
        topics: &BTreeMap<String, TopicMetadata>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        topics.values().collect::<Vec<_>>().serialize(serializer)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<BTreeMap<String, TopicMetadata>, D::Error> {
        let list = Vec::<TopicMetadata>::deserialize(deserializer)?;
        Ok(list.into_iter().map(|t| (t.name.clone(), t)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn persists_and_loads_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut image = MetadataImage::load_or_create(dir.path()).unwrap();
        image.topics.insert(
            "t".into(),
            TopicMetadata {
                name: "t".into(),
                topic_id: uuid::Uuid::new_v4(),
                partitions: vec![PartitionMetadata { partition: 0, shard: 1, leader_epoch: 0, offline: false }],
                configs: BTreeMap::from([("flush.messages".into(), "1".into())]),
            },
        );
        image.persist(dir.path()).unwrap();
        let loaded = MetadataImage::load_or_create(dir.path()).unwrap();
        assert_eq!(loaded.cluster_id, image.cluster_id);
        assert_eq!(loaded.topics["t"].partitions[0].shard, 1);
        assert_eq!(loaded.topics["t"].configs["flush.messages"], "1");
    }
}
