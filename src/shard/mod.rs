//! Shards: one per core, each owning a set of partitions outright.
//!
//! - [`placement`]: pure functions saying which shard owns a partition.
//! - [`router`]: the typed envelopes that cross cores (each request type names its reply), and
//!   `Shard::invoke_on`, the one way to reach state owned by another shard (a call on the own
//!   shard skips the mesh), with the helpers built on it: `gather` / `scatter` (a request's
//!   partitions to their owners and the answers back in request order), `scatter_first`,
//!   `on_every_shard`.
//! - [`ops`]: what the owning shard does with an envelope.
//! - [`controller`]: topic creation, growth (CreatePartitions) and deletion, run by shard 0,
//!   the metadata's single writer.

pub mod controller;
pub mod ops;
pub mod placement;
pub mod router;

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::sync::Arc;

use crate::cluster::MetadataImage;
use crate::config::BrokerConfig;
use crate::group::GroupEntry;
use crate::metrics::ShardMetrics;
use crate::partition::{Partition, PartitionError, SyncCounters};
use crate::runtime::{Semaphore, Senders};
use crate::storage::fs::FileSystem;

pub use router::{ShardCall, ShardRequest};

/// Index of a shard (and of its executor) within this broker process.
pub type ShardId = usize;

/// The shard that writes metadata.
pub const CONTROLLER_SHARD: ShardId = 0;

/// A partition's name; the key of a shard's partition table.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    pub topic: String,
    pub partition: i32,
}

/// All the state of one shard. Lives on its executor only (`Rc`, never sent); other shards
/// reach it through envelopes. No `RefCell` borrow is held across an `.await`.
pub struct Shard {
    pub id: ShardId,
    pub shard_count: usize,
    pub config: BrokerConfig,
    /// The host and port handed to clients in Metadata.
    pub advertised_host: String,
    pub advertised_port: i32,
    metadata: RefCell<Rc<MetadataImage>>,
    /// `config` with the dynamic broker configs of `metadata` over it.
    effective_config: RefCell<Rc<BrokerConfig>>,
    /// Where this shard's partitions keep their files.
    pub fs: Arc<dyn FileSystem>,
    pub partitions: RefCell<HashMap<TopicPartition, Partition>>,
    /// The fsyncs of this shard's partitions, for `/metrics`.
    pub sync_counters: Rc<SyncCounters>,
    /// Partitions this shard owns that failed to open, with the reason; they stay offline
    /// until a restart.
    pub offline: RefCell<BTreeMap<TopicPartition, String>>,
    /// The fetchers of the partitions this shard follows (`replication::fetcher`).
    pub fetchers: crate::replication::fetcher::Fetchers,
    /// The consumer groups this shard coordinates.
    pub groups: RefCell<HashMap<String, GroupEntry>>,
    /// The `__consumer_offsets` partitions whose groups are in `groups` (those this node
    /// leads), loaded or being loaded (`group::follow_leadership`).
    pub offsets_partitions: RefCell<crate::group::OffsetsPartitions>,
    senders: Senders<ShardRequest>,
    /// Serialises metadata changes on the controller shard (they await other shards).
    controller_lock: Semaphore,
    /// On the controller shard: the way to the metadata log's Raft task (set at startup).
    pub quorum: std::cell::OnceCell<crate::cluster::quorum::Quorum>,
    /// On the controller shard: when each broker was last heard of, while this node is the
    /// active controller.
    pub broker_sessions: RefCell<crate::cluster::brokers::Sessions>,
    /// On the controller shard of a broker: its registration with the active controller, the
    /// way its calls (heartbeats, its partitions' ISR changes) reach it (set at startup).
    pub lifecycle: std::cell::OnceCell<Rc<crate::cluster::brokers::Lifecycle>>,
    /// On the controller shard: serialises installs of images on every shard.
    install_lock: Semaphore,
    /// On the controller shard: partitions that failed to open in this run; every installed
    /// image marks them offline.
    offline_marks: RefCell<Vec<TopicPartition>>,
    /// Producer ids reserved for this shard: [next, end).
    pub producer_ids: Cell<(i64, i64)>,
    /// This shard's counters; read by scrapes through the mesh.
    pub metrics: RefCell<ShardMetrics>,
    /// Whether this node's image has caught up with the quorum's committed metadata since this
    /// start (its broker's registration, as the controller says in a heartbeat; at once for a
    /// lone controller, whose log is the quorum's). Until then it leads nothing, whatever its
    /// own, possibly stale, image says: see [`Shard::leads`].
    pub caught_up: Cell<bool>,
    /// Set when shutdown begins: connections stop reading new requests.
    pub stopping: Cell<bool>,
    /// Requests accepted and not yet answered on this shard.
    pub in_flight: Cell<usize>,
}

impl Shard {
    pub fn new(
        id: ShardId,
        config: BrokerConfig,
        advertised: (String, i32),
        metadata: MetadataImage,
        senders: Senders<ShardRequest>,
    ) -> Shard {
        Shard {
            id,
            shard_count: config.cores,
            // Until the first image is applied at startup.
            effective_config: RefCell::new(Rc::new(config.clone())),
            config,
            advertised_host: advertised.0,
            advertised_port: advertised.1,
            metadata: RefCell::new(Rc::new(metadata)),
            fs: crate::storage::fs::os(),
            partitions: RefCell::new(HashMap::new()),
            sync_counters: Rc::new(SyncCounters::default()),
            offline: RefCell::new(BTreeMap::new()),
            fetchers: Default::default(),
            groups: RefCell::new(HashMap::new()),
            offsets_partitions: RefCell::new(Default::default()),
            senders,
            controller_lock: Semaphore::new(1),
            quorum: std::cell::OnceCell::new(),
            broker_sessions: RefCell::new(Default::default()),
            lifecycle: std::cell::OnceCell::new(),
            install_lock: Semaphore::new(1),
            offline_marks: RefCell::new(Vec::new()),
            producer_ids: Cell::new((0, 0)),
            metrics: RefCell::new(ShardMetrics::default()),
            caught_up: Cell::new(false),
            stopping: Cell::new(false),
            in_flight: Cell::new(0),
        }
    }

    /// This shard's current copy of the metadata image.
    pub fn metadata(&self) -> Rc<MetadataImage> {
        self.metadata.borrow().clone()
    }

    /// Whether this node acts as the leader of `topic`-`partition` in `image`: the image names
    /// it, and the image has caught up since this start (a restarted broker's own image may
    /// still name it for a partition whose leadership moved while it was down).
    pub fn leads(&self, image: &MetadataImage, topic: &str, partition: i32) -> bool {
        self.caught_up.get() && image.leader(topic, partition) == Some(self.config.node_id)
    }

    /// The error for a partition of the image that this shard's table lacks.
    pub fn missing_partition_error(&self, tp: &TopicPartition) -> PartitionError {
        match self.offline.borrow().contains_key(tp) {
            true => PartitionError::Offline,
            false => PartitionError::Unknown,
        }
    }

    /// The broker settings in force: the static ones with dynamic broker configs over them.
    pub fn effective_config(&self) -> Rc<BrokerConfig> {
        self.effective_config.borrow().clone()
    }

    /// The settings in force under `image`. The controller validated its dynamic configs; if
    /// they no longer fit the static ones (changed since), the static ones rule, loudly.
    fn effective_config_for(&self, image: &MetadataImage) -> Rc<BrokerConfig> {
        match self.config.with_dynamic(&image.cluster_configs, &image.broker_configs) {
            Ok(config) => Rc::new(config),
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "dynamic broker configs ignored");
                Rc::new(self.config.clone())
            }
        }
    }

    fn set_metadata(&self, image: MetadataImage, effective: Rc<BrokerConfig>) {
        *self.metadata.borrow_mut() = Rc::new(image);
        *self.effective_config.borrow_mut() = effective;
    }
}
