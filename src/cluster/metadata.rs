//! The metadata image, and `metadata.json`, where Sluice kept it before the metadata log: a
//! data dir that has one is migrated (its image becomes the log's first snapshot).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::shard::ShardId;

const LEGACY_FILE_NAME: &str = "metadata.json";

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
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
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
    /// Every broker that ever registered, by node id, fenced or not (KRaft's broker
    /// registrations): which brokers clients are told about and partitions are placed on.
    #[serde(default)]
    pub brokers: BTreeMap<i32, BrokerRegistration>,
}

/// A broker as it registered with the active controller (BrokerRegistration), and whether it
/// is fenced: registered and not yet heartbeating, silent past `broker.session.timeout.ms`,
/// or shut down. A fenced broker leads nothing and is not shown to clients.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BrokerRegistration {
    pub node_id: i32,
    /// Drawn by the broker process at each start: a registration from another incarnation
    /// is a restart (or a second process with the same id).
    pub incarnation_id: uuid::Uuid,
    /// Kafka's broker epoch: grows with each registration of this node id; heartbeats name
    /// it, and one naming an older epoch is stale.
    pub epoch: i64,
    /// The advertised address of its Kafka listener.
    pub host: String,
    pub port: i32,
    /// `broker.rack`.
    pub rack: Option<String>,
    pub fenced: bool,
}

#[cfg(test)]
impl BrokerRegistration {
    /// A registered, unfenced broker at a placeholder address.
    pub fn unfenced_for_test(node_id: i32) -> BrokerRegistration {
        BrokerRegistration {
            node_id,
            incarnation_id: uuid::Uuid::new_v4(),
            epoch: 1,
            host: "h".into(),
            port: 1,
            rack: None,
            fenced: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopicMetadata {
    pub name: String,
    /// Kafka's topic id (KIP-516), needed by Fetch v13+ and Metadata v10+.
    pub topic_id: uuid::Uuid,
    pub partitions: Vec<PartitionMetadata>,
    pub configs: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartitionMetadata {
    pub partition: i32,
    /// The shard that owns this partition's log on this broker.
    pub shard: ShardId,
    /// The brokers holding its replicas (`cluster::replicas`), the preferred leader first;
    /// during a reassignment, the union of the old and the target replicas (as Kafka reports
    /// them), with these two saying which come and which go (`cluster::reassignment`).
    #[serde(default)]
    pub replicas: Vec<i32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub adding_replicas: Vec<i32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removing_replicas: Vec<i32>,
    /// The broker leading it; [`NO_LEADER`] while none of its in-sync replicas is unfenced.
    #[serde(default = "no_leader")]
    pub leader: i32,
    /// Its in-sync replicas.
    #[serde(default)]
    pub isr: Vec<i32>,
    pub leader_epoch: i32,
    /// Bumped by every change of its leader or ISR (Kafka's partition epoch): AlterPartition
    /// names the one it was decided against, and is refused if another change came first.
    #[serde(default)]
    pub partition_epoch: i32,
    /// Its owner failed to open it in this run (damaged files, I/O errors): Metadata reports
    /// no leader, reads and writes get KAFKA_STORAGE_ERROR. Never persisted.
    #[serde(skip)]
    pub offline: bool,
}

/// Kafka's leader id for a partition without one.
pub const NO_LEADER: i32 = -1;

fn no_leader() -> i32 {
    NO_LEADER
}

impl PartitionMetadata {
    /// A new partition on `replicas`, led by the first, all in sync, at leader epoch 0.
    pub fn new(partition: i32, shard: ShardId, replicas: Vec<i32>) -> PartitionMetadata {
        let leader = replicas.first().copied().unwrap_or(NO_LEADER);
        PartitionMetadata {
            partition,
            shard,
            isr: replicas.clone(),
            replicas,
            adding_replicas: Vec::new(),
            removing_replicas: Vec::new(),
            leader,
            leader_epoch: 0,
            partition_epoch: 0,
            offline: false,
        }
    }
}

impl MetadataImage {
    /// Gives partitions recorded before brokers were (a one-node cluster's older data dir)
    /// their one replica, `node_id`, which leads them.
    pub fn adopt_unplaced(&mut self, node_id: i32) {
        for p in self.topics.values_mut().flat_map(|t| t.partitions.iter_mut()) {
            if p.replicas.is_empty() {
                (p.replicas, p.isr, p.leader) = (vec![node_id], vec![node_id], node_id);
            }
        }
    }

    /// The broker leading `partition` of `topic`, if both exist ([`NO_LEADER`]: none).
    pub fn leader(&self, topic: &str, partition: i32) -> Option<i32> {
        let index = usize::try_from(partition).ok()?;
        self.topics.get(topic)?.partitions.get(index).map(|p| p.leader)
    }

    pub fn topic(&self, name: &str) -> Option<&TopicMetadata> {
        self.topics.get(name)
    }

    pub fn topic_by_id(&self, topic_id: uuid::Uuid) -> Option<&TopicMetadata> {
        self.topics.values().find(|t| t.topic_id == topic_id)
    }

    /// The brokers clients may use: registered and not fenced, by node id.
    pub fn unfenced_brokers(&self) -> impl Iterator<Item = &BrokerRegistration> {
        self.brokers.values().filter(|b| !b.fenced)
    }

    /// The shard owning `partition` of `topic`, if both exist.
    pub fn owner(&self, topic: &str, partition: i32) -> Option<ShardId> {
        let topic = self.topics.get(topic)?;
        let index = usize::try_from(partition).ok()?;
        topic.partitions.get(index).map(|p| p.shard)
    }

    /// Gives a shard to partitions whose recorded shard does not exist on this node (fewer
    /// cores than when it was placed, here or on the controller that placed it), so that
    /// every partition has exactly one owner.
    pub fn place_orphans(&mut self, cores: usize) {
        for topic in self.topics.values_mut() {
            for p in &mut topic.partitions {
                if p.shard >= cores {
                    p.shard = crate::shard::placement::shard_for_partition(&topic.name, p.partition, cores);
                }
            }
        }
    }

    /// The image of a data dir's `metadata.json` (written by Sluice before the metadata
    /// log), or a fresh one with a new cluster id when there is none.
    pub fn load_legacy_or_create(data_dir: &Path) -> anyhow::Result<MetadataImage> {
        let path = data_dir.join(LEGACY_FILE_NAME);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).with_context(|| format!("reading {}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(MetadataImage {
                cluster_id: uuid::Uuid::new_v4().simple().to_string(),
                next_producer_id: 0,
                topics: BTreeMap::new(),
                cluster_configs: BTreeMap::new(),
                broker_configs: BTreeMap::new(),
                brokers: BTreeMap::new(),
            }),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// Whether the data dir has a `metadata.json` not yet migrated.
    pub fn legacy_exists(data_dir: &Path) -> bool {
        data_dir.join(LEGACY_FILE_NAME).exists()
    }

    /// Once the metadata log holds its image, `metadata.json` is renamed out of the way (kept
    /// for an operator; a later start never reads it again).
    pub fn retire_legacy(data_dir: &Path) -> anyhow::Result<()> {
        let path = data_dir.join(LEGACY_FILE_NAME);
        if path.exists() {
            std::fs::rename(&path, data_dir.join(format!("{LEGACY_FILE_NAME}.migrated")))?;
            std::fs::File::open(data_dir)?.sync_all()?;
            tracing::info!(path = %path.display(), "migrated into the metadata log");
        }
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
