//! Broker settings, spelled with Kafka's names (`num.partitions`, `message.max.bytes`...).
//!
//! Settings come from defaults, then an optional TOML file (`--config`), then `--set key=value`
//! flags, then the dedicated serve flags. Every limit the broker enforces is named here.
//! Per-topic configs (`segment.bytes`, `flush.messages`...) override the broker-wide `log.*`
//! defaults; [`BrokerConfig::log_config`] merges them. The settings in [`DYNAMIC_BROKER_CONFIG_NAMES`]
//! may also be changed at run time (AlterConfigs); those dynamic values live in the metadata
//! image and [`BrokerConfig::with_dynamic`] lays them over the static ones.
//!
//! No setting is accepted and ignored: a topic config is either in [`TOPIC_CONFIGS`] and
//! honoured, or refused (INVALID_CONFIG); an unknown broker setting stops startup.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, bail};

use crate::storage::producer_state::ProducerExpiry;
use crate::storage::{LogConfig, TimestampType};

/// Everything a broker process needs to run; immutable once the shards start.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    pub node_id: i32,
    /// The controller quorum (`controller.quorum.voters`, `ID@HOST:PORT,...`, KRaft's form):
    /// every voter's node id and the address its Raft messages go to. Empty: this node alone.
    pub controller_quorum_voters: Vec<(i32, String)>,
    /// `process.roles`: what this node is (KRaft's roles); both by default.
    pub roles: Roles,
    pub listen: SocketAddr,
    /// Whether `listeners` was set (a controller-only node has no client listener to set).
    pub listen_set: bool,
    /// The admin HTTP listener (Prometheus `/metrics`); `None` turns it off.
    pub admin: Option<SocketAddr>,
    /// Address handed to clients in Metadata; defaults to the listen address.
    pub advertise: Option<String>,
    pub data_dir: PathBuf,
    pub cores: usize,
    pub num_partitions: i32,
    pub auto_create_topics_enable: bool,
    /// Largest record batch accepted (`message.max.bytes`); topics may override.
    pub message_max_bytes: usize,
    /// Largest request frame read from a socket (`socket.request.max.bytes`).
    pub socket_request_max_bytes: usize,
    /// Requests read ahead on one connection before its reader waits for responses to drain.
    pub queued_max_requests_per_connection: usize,
    /// Bytes of requests read and not yet handled, over all connections
    /// (`queued.max.request.bytes`); each shard reads within an equal share. `None` (-1, Kafka's
    /// default) bounds nothing.
    pub queued_max_request_bytes: Option<usize>,
    /// A connection that completes no request and gets no response written for this long, with
    /// no request being handled, is closed (`connections.max.idle.ms`; -1: never). A peer that
    /// trickles a frame too slowly is idle.
    pub connections_max_idle: Option<std::time::Duration>,
    pub log_segment_bytes: u64,
    pub log_roll_ms: i64,
    pub log_index_interval_bytes: u32,
    pub log_flush_interval_messages: Option<u64>,
    pub log_flush_interval_ms: Option<i64>,
    /// `log.write.caching` (Redpanda's `write_caching_default`): false makes every
    /// acknowledged produce wait for the fsync covering it; topics override it with
    /// `write.caching`.
    pub log_write_caching: bool,
    pub log_message_timestamp_type: TimestampType,
    /// CreateTime records stamped further before the broker's clock are refused
    /// (INVALID_TIMESTAMP); Kafka's default accepts any age.
    pub log_message_timestamp_before_max_ms: i64,
    /// ... and further after it; Kafka 4's default is an hour.
    pub log_message_timestamp_after_max_ms: i64,
    pub log_cleanup_policy: CleanupPolicy,
    /// `log.retention.hours`, overridden by `log.retention.minutes`, overridden by
    /// `log.retention.ms` (Kafka's precedence); -1 keeps segments forever.
    pub log_retention_hours: i64,
    pub log_retention_minutes: Option<i64>,
    pub log_retention_ms: Option<i64>,
    /// Largest a partition's log may grow before its oldest segments go; -1: no limit.
    pub log_retention_bytes: i64,
    /// How long compaction keeps tombstones (`log.cleaner.delete.retention.ms`); topics may
    /// override it with `delete.retention.ms`.
    pub log_cleaner_delete_retention_ms: i64,
    /// How often each shard applies retention to its partitions.
    pub log_retention_check_interval_ms: i64,
    /// Send fetched records from the page cache with sendfile rather than copying them.
    pub fetch_zero_copy: bool,
    /// How long an idle shard spins before it sleeps in io_uring (`reactor.spin.before.park.us`):
    /// CPU time traded for wake-up latency; 0 sleeps at once.
    pub spin_before_park: std::time::Duration,
    /// `num.io.threads`, per shard: the most kernel workers (io_uring's io-wq) that run the
    /// shard's file I/O at once (buffered writes, fdatasyncs, reads missing the page cache).
    /// Each partition has at most one write and one fsync in flight, so partitions beyond
    /// about half of this wait for a worker (see `runtime::executor::set_file_io_workers`).
    pub num_io_threads: u32,
    /// Longest a Fetch may wait, whatever the client asks.
    pub fetch_max_wait_ms_limit: u64,
    pub group_min_session_timeout_ms: i64,
    pub group_max_session_timeout_ms: i64,
    /// How long the first rebalance of an empty group waits for more members.
    pub group_initial_rebalance_delay_ms: i64,
    pub group_max_size: usize,
    /// Partitions of `__consumer_offsets`, fixed when the topic is first created.
    pub offsets_topic_num_partitions: i32,
    /// Replicas of each `__consumer_offsets` partition, capped by the unfenced brokers when
    /// the topic is created.
    pub offsets_topic_replication_factor: i16,
    pub offsets_topic_segment_bytes: u64,
    /// Offsets of a group that stays empty this long are deleted.
    pub offsets_retention_minutes: i64,
    pub offsets_retention_check_interval_ms: i64,
    /// Longest metadata string a commit may carry.
    pub offset_metadata_max_bytes: usize,
    /// An idempotent producer that appended nothing for this long is forgotten by each
    /// partition (its next batch is then accepted at any sequence).
    pub producer_id_expiration_ms: i64,
    pub producer_id_expiration_check_interval_ms: i64,
    /// `broker.rack`: replicas of one partition go to different racks while racks remain.
    pub broker_rack: Option<String>,
    /// How often this broker heartbeats to the active controller.
    pub broker_heartbeat_interval_ms: u64,
    /// A broker not heard from for this long is fenced by the active controller.
    pub broker_session_timeout_ms: u64,
    /// Whether SIGTERM first moves this broker's leaderships away (controlled shutdown); if
    /// not, it just stops, and is fenced once its session expires.
    pub controlled_shutdown_enable: bool,
    /// Whether the active controller moves leadership back to preferred replicas, every
    /// `leader.imbalance.check.interval.seconds`, for the brokers that lead fewer than
    /// `leader.imbalance.per.broker.percentage` of the partitions they are preferred for.
    pub auto_leader_rebalance_enable: bool,
    /// A follower not caught up with its leader for this long leaves the ISR (its leader asks
    /// the controller with AlterPartition); one caught up again rejoins it.
    pub replica_lag_time_max_ms: i64,
    pub leader_imbalance_check_interval_seconds: u64,
    pub leader_imbalance_per_broker_percentage: u32,
    /// Bytes of records applied to the metadata log after which the image becomes its new
    /// snapshot and the log is cut behind it (KRaft's name and default, 20 MiB).
    pub metadata_log_max_record_bytes_between_snapshots: u64,
    /// acks=all produces need this many in-sync replicas; with one, anything above 1 refuses
    /// them with NOT_ENOUGH_REPLICAS, as Kafka does.
    pub min_insync_replicas: i32,
    /// Whether a replica outside the ISR may become leader when no in-sync one is live
    /// (losing what it lacks of acknowledged records); a topic's own value wins.
    pub unclean_leader_election_enable: bool,
    /// The keys set explicitly (file, `--set`, flags): DescribeConfigs reports them as static
    /// broker configs rather than defaults.
    pub explicit: BTreeSet<String>,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            node_id: 0,
            controller_quorum_voters: Vec::new(),
            roles: Roles { broker: true, controller: true },
            listen: "127.0.0.1:9092".parse().expect("valid literal address"),
            listen_set: false,
            admin: Some("127.0.0.1:9644".parse().expect("valid literal address")),
            advertise: None,
            data_dir: PathBuf::from("sluice-data"),
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            num_partitions: 1,
            auto_create_topics_enable: true,
            message_max_bytes: 1_048_588,
            socket_request_max_bytes: 104_857_600,
            queued_max_requests_per_connection: 64,
            // Kafka's default is unbounded; 512 MiB holds several largest requests
            // (socket.request.max.bytes) at once and bounds what slow or hostile peers can pin.
            queued_max_request_bytes: Some(512 << 20),
            connections_max_idle: Some(std::time::Duration::from_millis(600_000)),
            log_segment_bytes: 1 << 30,
            log_roll_ms: 7 * 24 * 3600 * 1000,
            log_index_interval_bytes: 4096,
            log_flush_interval_messages: None,
            log_write_caching: true,
            log_flush_interval_ms: None,
            log_message_timestamp_type: TimestampType::CreateTime,
            log_message_timestamp_before_max_ms: i64::MAX,
            log_message_timestamp_after_max_ms: 3_600_000,
            log_cleanup_policy: CleanupPolicy { compact: false, delete: true },
            log_retention_hours: 168,
            log_retention_minutes: None,
            log_retention_ms: None,
            log_retention_bytes: -1,
            log_cleaner_delete_retention_ms: 86_400_000,
            log_retention_check_interval_ms: 300_000,
            fetch_zero_copy: true,
            spin_before_park: std::time::Duration::ZERO,
            num_io_threads: DEFAULT_NUM_IO_THREADS,
            fetch_max_wait_ms_limit: 30_000,
            group_min_session_timeout_ms: 6_000,
            group_max_session_timeout_ms: 1_800_000,
            group_initial_rebalance_delay_ms: 3_000,
            group_max_size: i32::MAX as usize,
            offsets_topic_num_partitions: 50,
            offsets_topic_replication_factor: 3,
            offsets_topic_segment_bytes: 100 << 20,
            offsets_retention_minutes: 7 * 24 * 60,
            offsets_retention_check_interval_ms: 600_000,
            offset_metadata_max_bytes: 4096,
            producer_id_expiration_ms: 86_400_000,
            producer_id_expiration_check_interval_ms: 600_000,
            broker_rack: None,
            // Kafka's defaults.
            broker_heartbeat_interval_ms: 2000,
            broker_session_timeout_ms: 9000,
            controlled_shutdown_enable: true,
            auto_leader_rebalance_enable: true,
            replica_lag_time_max_ms: 30_000,
            leader_imbalance_check_interval_seconds: 300,
            leader_imbalance_per_broker_percentage: 10,
            metadata_log_max_record_bytes_between_snapshots: 20 << 20,
            min_insync_replicas: 1,
            unclean_leader_election_enable: false,
            explicit: BTreeSet::new(),
        }
    }
}

/// `num.io.threads`' default: kernel workers per shard for its file I/O, enough for 32
/// partitions each with a write and an fsync in flight. The kernel creates a worker only when
/// work waits for one, so a shard with less to do runs fewer (8 to 25 were seen over 16 and 64
/// durable partitions with a limit of 64 or 256).
pub const DEFAULT_NUM_IO_THREADS: u32 = 64;
/// The most `num.io.threads` takes: each worker is a kernel thread, created when the work
/// queued needs it.
const NUM_IO_THREADS_MAX: u32 = 1024;

/// The topic configs Sluice honours, each with the broker settings it falls back to, in
/// Kafka's order of precedence. Every other topic config Kafka defines is refused with
/// INVALID_CONFIG rather than accepted and ignored.
pub const TOPIC_CONFIGS: &[(&str, &[&str])] = &[
    ("cleanup.policy", &["log.cleanup.policy"]),
    ("compression.type", &["compression.type"]),
    ("delete.retention.ms", &["log.cleaner.delete.retention.ms"]),
    ("flush.messages", &["log.flush.interval.messages"]),
    ("flush.ms", &["log.flush.interval.ms"]),
    ("write.caching", &["log.write.caching"]),
    ("index.interval.bytes", &["log.index.interval.bytes"]),
    ("max.message.bytes", &["message.max.bytes"]),
    ("message.timestamp.after.max.ms", &["log.message.timestamp.after.max.ms"]),
    ("message.timestamp.before.max.ms", &["log.message.timestamp.before.max.ms"]),
    ("message.timestamp.type", &["log.message.timestamp.type"]),
    ("min.insync.replicas", &["min.insync.replicas"]),
    ("retention.bytes", &["log.retention.bytes"]),
    ("retention.ms", &["log.retention.ms", "log.retention.minutes", "log.retention.hours"]),
    ("segment.bytes", &["log.segment.bytes"]),
    ("segment.ms", &["log.roll.ms"]),
    ("unclean.leader.election.enable", &["unclean.leader.election.enable"]),
    // Sluice's own: no broker-wide fallback.
    ("sluice.validate.compressed.records", &[]),
];

/// Whether `name` is a topic config Sluice honours.
pub fn is_topic_config(name: &str) -> bool {
    TOPIC_CONFIGS.iter().any(|(n, _)| *n == name)
}

/// Every broker setting, by its Kafka name (aliases accepted by [`BrokerConfig::set`] aside).
pub const BROKER_CONFIG_NAMES: &[&str] = &[
    "node.id",
    "listeners",
    "admin.listen",
    "advertised.listeners",
    "log.dirs",
    "cores",
    "num.partitions",
    "auto.create.topics.enable",
    "message.max.bytes",
    "socket.request.max.bytes",
    "queued.max.requests.per.connection",
    "queued.max.request.bytes",
    "connections.max.idle.ms",
    "log.segment.bytes",
    "log.roll.ms",
    "log.index.interval.bytes",
    "log.flush.interval.messages",
    "log.flush.interval.ms",
    "log.write.caching",
    "log.cleanup.policy",
    "log.cleaner.delete.retention.ms",
    "log.retention.hours",
    "log.retention.minutes",
    "log.retention.ms",
    "log.retention.bytes",
    "log.retention.check.interval.ms",
    "log.message.timestamp.type",
    "log.message.timestamp.before.max.ms",
    "log.message.timestamp.after.max.ms",
    "compression.type",
    "min.insync.replicas",
    "unclean.leader.election.enable",
    "fetch.zero.copy.enable",
    "reactor.spin.before.park.us",
    "num.io.threads",
    "fetch.max.wait.ms.limit",
    "group.min.session.timeout.ms",
    "group.max.session.timeout.ms",
    "group.initial.rebalance.delay.ms",
    "group.max.size",
    "offsets.topic.num.partitions",
    "offsets.topic.replication.factor",
    "offsets.topic.segment.bytes",
    "offsets.retention.minutes",
    "offsets.retention.check.interval.ms",
    "offset.metadata.max.bytes",
    "producer.id.expiration.ms",
    "producer.id.expiration.check.interval.ms",
    "broker.rack",
    "broker.heartbeat.interval.ms",
    "broker.session.timeout.ms",
    "controlled.shutdown.enable",
    "auto.leader.rebalance.enable",
    "replica.lag.time.max.ms",
    "leader.imbalance.check.interval.seconds",
    "leader.imbalance.per.broker.percentage",
];

/// The broker settings that AlterConfigs may change while the broker runs: the defaults of
/// topic configs, which take effect on every partition at once. The others are read-only.
pub const DYNAMIC_BROKER_CONFIG_NAMES: &[&str] = &[
    "message.max.bytes",
    "log.segment.bytes",
    "log.roll.ms",
    "log.index.interval.bytes",
    "log.flush.interval.messages",
    "log.flush.interval.ms",
    "log.write.caching",
    "log.cleanup.policy",
    "log.cleaner.delete.retention.ms",
    "log.retention.ms",
    "log.retention.bytes",
    "log.message.timestamp.type",
    "log.message.timestamp.before.max.ms",
    "log.message.timestamp.after.max.ms",
    "min.insync.replicas",
    "unclean.leader.election.enable",
];

impl BrokerConfig {
    /// Applies one `key = value` setting with Kafka's name, and remembers it was set.
    pub fn set(&mut self, key: &str, value: &str) -> anyhow::Result<()> {
        self.apply(key, value)?;
        self.explicit.insert(key.to_string());
        Ok(())
    }

    /// This config with dynamic broker configs over it: the cluster-wide defaults, then this
    /// broker's own (Kafka's precedence). Dynamic values are not "explicit" (static) ones.
    pub fn with_dynamic(
        &self,
        cluster_default: &BTreeMap<String, String>,
        per_broker: &BTreeMap<String, String>,
    ) -> anyhow::Result<BrokerConfig> {
        let mut config = self.clone();
        for (key, value) in cluster_default.iter().chain(per_broker) {
            config.apply(key, value)?;
        }
        config.validate()?;
        Ok(config)
    }

    /// The current value of a setting in Kafka's text form; `None` for one that is unset and
    /// has no default (`log.retention.ms` when the hours decide) or that does not exist.
    pub fn get(&self, key: &str) -> Option<String> {
        let text = |v: &dyn ToString| Some(v.to_string());
        match key {
            "node.id" => text(&self.node_id),
            "controller.quorum.voters" => Some(
                self.controller_quorum_voters.iter().map(|(id, at)| format!("{id}@{at}")).collect::<Vec<_>>().join(","),
            ),
            "process.roles" => Some(self.roles.to_string()),
            "listeners" => text(&self.listen),
            "admin.listen" => Some(self.admin.map_or("off".to_string(), |a| a.to_string())),
            "advertised.listeners" => self.advertise.clone(),
            "log.dirs" => Some(self.data_dir.display().to_string()),
            "cores" => text(&self.cores),
            "num.partitions" => text(&self.num_partitions),
            "auto.create.topics.enable" => text(&self.auto_create_topics_enable),
            "message.max.bytes" => text(&self.message_max_bytes),
            "socket.request.max.bytes" => text(&self.socket_request_max_bytes),
            "queued.max.requests.per.connection" => text(&self.queued_max_requests_per_connection),
            "queued.max.request.bytes" => text(&self.queued_max_request_bytes.map_or(-1, |n| n as i64)),
            "connections.max.idle.ms" => text(&self.connections_max_idle.map_or(-1, |d| d.as_millis() as i64)),
            "log.segment.bytes" => text(&self.log_segment_bytes),
            "log.roll.ms" => text(&self.log_roll_ms),
            "log.index.interval.bytes" => text(&self.log_index_interval_bytes),
            // Kafka's "never" for the flush policy.
            "log.write.caching" => text(&self.log_write_caching),
            "log.flush.interval.messages" => text(&self.log_flush_interval_messages.unwrap_or(i64::MAX as u64)),
            "log.flush.interval.ms" => self.log_flush_interval_ms.map(|ms| ms.to_string()),
            "log.cleanup.policy" => Some(cleanup_policy_text(self.log_cleanup_policy)),
            "log.cleaner.delete.retention.ms" => text(&self.log_cleaner_delete_retention_ms),
            "log.retention.hours" => text(&self.log_retention_hours),
            "log.retention.minutes" => self.log_retention_minutes.map(|m| m.to_string()),
            "log.retention.ms" => self.log_retention_ms.map(|ms| ms.to_string()),
            "log.retention.bytes" => text(&self.log_retention_bytes),
            "log.retention.check.interval.ms" => text(&self.log_retention_check_interval_ms),
            "log.message.timestamp.type" => Some(timestamp_type_text(self.log_message_timestamp_type).to_string()),
            "log.message.timestamp.before.max.ms" => text(&self.log_message_timestamp_before_max_ms),
            "log.message.timestamp.after.max.ms" => text(&self.log_message_timestamp_after_max_ms),
            "compression.type" => Some("producer".to_string()),
            "min.insync.replicas" => text(&self.min_insync_replicas),
            "unclean.leader.election.enable" => text(&self.unclean_leader_election_enable),
            "fetch.zero.copy.enable" => text(&self.fetch_zero_copy),
            "reactor.spin.before.park.us" => text(&self.spin_before_park.as_micros()),
            "num.io.threads" => text(&self.num_io_threads),
            "fetch.max.wait.ms.limit" => text(&self.fetch_max_wait_ms_limit),
            "group.min.session.timeout.ms" => text(&self.group_min_session_timeout_ms),
            "group.max.session.timeout.ms" => text(&self.group_max_session_timeout_ms),
            "group.initial.rebalance.delay.ms" => text(&self.group_initial_rebalance_delay_ms),
            "group.max.size" => text(&self.group_max_size),
            "offsets.topic.num.partitions" => text(&self.offsets_topic_num_partitions),
            "offsets.topic.replication.factor" => text(&self.offsets_topic_replication_factor),
            "offsets.topic.segment.bytes" => text(&self.offsets_topic_segment_bytes),
            "offsets.retention.minutes" => text(&self.offsets_retention_minutes),
            "offsets.retention.check.interval.ms" => text(&self.offsets_retention_check_interval_ms),
            "offset.metadata.max.bytes" => text(&self.offset_metadata_max_bytes),
            "producer.id.expiration.ms" => text(&self.producer_id_expiration_ms),
            "producer.id.expiration.check.interval.ms" => text(&self.producer_id_expiration_check_interval_ms),
            "broker.rack" => self.broker_rack.clone(),
            "broker.heartbeat.interval.ms" => text(&self.broker_heartbeat_interval_ms),
            "broker.session.timeout.ms" => text(&self.broker_session_timeout_ms),
            "controlled.shutdown.enable" => text(&self.controlled_shutdown_enable),
            "auto.leader.rebalance.enable" => text(&self.auto_leader_rebalance_enable),
            "replica.lag.time.max.ms" => text(&self.replica_lag_time_max_ms),
            "leader.imbalance.check.interval.seconds" => text(&self.leader_imbalance_check_interval_seconds),
            "leader.imbalance.per.broker.percentage" => text(&self.leader_imbalance_per_broker_percentage),
            "metadata.log.max.record.bytes.between.snapshots" => {
                text(&self.metadata_log_max_record_bytes_between_snapshots)
            }
            _ => None,
        }
    }

    /// The value a topic config takes on a topic that does not set it: its broker default.
    pub fn topic_default(&self, name: &str) -> Option<String> {
        match name {
            "retention.ms" => Some(self.retention_ms().to_string()),
            "flush.ms" => Some(self.log_flush_interval_ms.unwrap_or(i64::MAX).to_string()),
            "sluice.validate.compressed.records" => Some("true".to_string()),
            _ => TOPIC_CONFIGS.iter().find(|(n, _)| *n == name).and_then(|(_, broker)| self.get(broker.first()?)),
        }
    }

    fn apply(&mut self, key: &str, value: &str) -> anyhow::Result<()> {
        let context = || format!("setting {key} = {value}");
        match key {
            "node.id" | "broker.id" => self.node_id = value.parse().with_context(context)?,
            "controller.quorum.voters" => self.controller_quorum_voters = parse_quorum_voters(value)?,
            "process.roles" => self.roles = value.parse()?,
            "listeners" | "listen" => {
                self.listen = value.parse().with_context(context)?;
                self.listen_set = true;
            }
            "admin.listen" | "admin" => {
                self.admin = if value == "off" { None } else { Some(value.parse().with_context(context)?) }
            }
            "advertised.listeners" | "advertise" => self.advertise = Some(value.to_string()),
            "log.dirs" | "log.dir" | "data.dir" => self.data_dir = PathBuf::from(value),
            "cores" => self.cores = value.parse().with_context(context)?,
            "num.partitions" => self.num_partitions = value.parse().with_context(context)?,
            "auto.create.topics.enable" => self.auto_create_topics_enable = value.parse().with_context(context)?,
            "message.max.bytes" => self.message_max_bytes = value.parse().with_context(context)?,
            "socket.request.max.bytes" => self.socket_request_max_bytes = value.parse().with_context(context)?,
            "queued.max.requests.per.connection" => {
                self.queued_max_requests_per_connection = value.parse().with_context(context)?
            }
            "queued.max.request.bytes" => {
                self.queued_max_request_bytes = unlimited_if_negative(parse_retention(key, value)?).map(|n| n as usize)
            }
            "connections.max.idle.ms" => {
                self.connections_max_idle = unlimited_if_negative(parse_retention(key, value)?)
                    .map(|n| std::time::Duration::from_millis(n as u64))
            }
            "log.segment.bytes" => self.log_segment_bytes = value.parse().with_context(context)?,
            "log.roll.ms" => self.log_roll_ms = value.parse().with_context(context)?,
            "log.index.interval.bytes" => self.log_index_interval_bytes = value.parse().with_context(context)?,
            "log.flush.interval.messages" => {
                self.log_flush_interval_messages = Some(value.parse().with_context(context)?)
            }
            "log.flush.interval.ms" => self.log_flush_interval_ms = Some(value.parse().with_context(context)?),
            "log.write.caching" => self.log_write_caching = parse_bool(key, value)?,
            "log.cleanup.policy" => self.log_cleanup_policy = parse_cleanup_policy(value)?,
            "log.retention.hours" => self.log_retention_hours = parse_retention(key, value)?,
            "log.retention.minutes" => self.log_retention_minutes = Some(parse_retention(key, value)?),
            "log.retention.ms" => self.log_retention_ms = Some(parse_retention(key, value)?),
            "log.retention.bytes" => self.log_retention_bytes = parse_retention(key, value)?,
            "log.cleaner.delete.retention.ms" => self.log_cleaner_delete_retention_ms = parse_non_negative(key, value)?,
            "log.retention.check.interval.ms" => {
                self.log_retention_check_interval_ms = value.parse().with_context(context)?;
                if self.log_retention_check_interval_ms < 1 {
                    bail!("log.retention.check.interval.ms must be at least 1");
                }
            }
            "log.message.timestamp.type" => self.log_message_timestamp_type = parse_timestamp_type(value)?,
            "log.message.timestamp.before.max.ms" => {
                self.log_message_timestamp_before_max_ms = parse_non_negative(key, value)?
            }
            "log.message.timestamp.after.max.ms" => {
                self.log_message_timestamp_after_max_ms = parse_non_negative(key, value)?
            }
            "fetch.zero.copy.enable" => self.fetch_zero_copy = value.parse().with_context(context)?,
            "reactor.spin.before.park.us" => {
                self.spin_before_park = std::time::Duration::from_micros(value.parse().with_context(context)?)
            }
            "num.io.threads" => {
                self.num_io_threads = value.parse().with_context(context)?;
                if !(1..=NUM_IO_THREADS_MAX).contains(&self.num_io_threads) {
                    bail!("num.io.threads must be from 1 to {NUM_IO_THREADS_MAX} (kernel workers per shard)");
                }
            }
            "fetch.max.wait.ms.limit" => self.fetch_max_wait_ms_limit = value.parse().with_context(context)?,
            "group.min.session.timeout.ms" => {
                self.group_min_session_timeout_ms = value.parse().with_context(context)?
            }
            "group.max.session.timeout.ms" => {
                self.group_max_session_timeout_ms = value.parse().with_context(context)?
            }
            "group.initial.rebalance.delay.ms" => {
                self.group_initial_rebalance_delay_ms = value.parse().with_context(context)?
            }
            "group.max.size" => self.group_max_size = value.parse().with_context(context)?,
            "offsets.topic.num.partitions" => {
                self.offsets_topic_num_partitions = value.parse().with_context(context)?
            }
            "offsets.topic.replication.factor" => {
                self.offsets_topic_replication_factor = value.parse().with_context(context)?
            }
            "offsets.topic.segment.bytes" => self.offsets_topic_segment_bytes = value.parse().with_context(context)?,
            "offsets.retention.minutes" => self.offsets_retention_minutes = value.parse().with_context(context)?,
            "offsets.retention.check.interval.ms" => {
                self.offsets_retention_check_interval_ms = value.parse().with_context(context)?
            }
            "offset.metadata.max.bytes" => self.offset_metadata_max_bytes = value.parse().with_context(context)?,
            "producer.id.expiration.ms" => self.producer_id_expiration_ms = value.parse().with_context(context)?,
            "broker.rack" => self.broker_rack = Some(value.to_string()),
            "broker.heartbeat.interval.ms" => {
                self.broker_heartbeat_interval_ms = value.parse().with_context(context)?
            }
            "broker.session.timeout.ms" => self.broker_session_timeout_ms = value.parse().with_context(context)?,
            "controlled.shutdown.enable" => self.controlled_shutdown_enable = parse_bool(key, value)?,
            "auto.leader.rebalance.enable" => self.auto_leader_rebalance_enable = parse_bool(key, value)?,
            "replica.lag.time.max.ms" => self.replica_lag_time_max_ms = value.parse().with_context(context)?,
            "leader.imbalance.check.interval.seconds" => {
                self.leader_imbalance_check_interval_seconds = value.parse().with_context(context)?
            }
            "leader.imbalance.per.broker.percentage" => {
                self.leader_imbalance_per_broker_percentage = value.parse().with_context(context)?
            }
            "producer.id.expiration.check.interval.ms" => {
                self.producer_id_expiration_check_interval_ms = value.parse().with_context(context)?
            }
            "metadata.log.max.record.bytes.between.snapshots" => {
                self.metadata_log_max_record_bytes_between_snapshots = value.parse().with_context(context)?
            }
            "compression.type" => parse_compression_type(value)?,
            "min.insync.replicas" => self.min_insync_replicas = parse_min_insync_replicas(value)?,
            "unclean.leader.election.enable" => {
                self.unclean_leader_election_enable = value.parse().with_context(context)?
            }
            _ => bail!("unknown setting {key:?}"),
        }
        Ok(())
    }

    /// Applies every setting of a TOML file; values may be strings, numbers or booleans.
    pub fn load_toml(&mut self, text: &str) -> anyhow::Result<()> {
        let table: toml::Table = text.parse().context("parsing TOML config")?;
        for (key, value) in flatten_toml(&table) {
            self.set(&key, &value)?;
        }
        Ok(())
    }

    /// Checks the settings make sense together; called once before the shards start.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.cores == 0 {
            bail!("cores must be at least 1");
        }
        if self.num_partitions < 1 {
            bail!("num.partitions must be at least 1");
        }
        if self.message_max_bytes > self.socket_request_max_bytes {
            bail!("message.max.bytes cannot exceed socket.request.max.bytes");
        }
        if self.offsets_topic_num_partitions < 1 {
            bail!("offsets.topic.num.partitions must be at least 1");
        }
        if self.offsets_topic_replication_factor < 1 {
            bail!("offsets.topic.replication.factor must be at least 1");
        }
        if self.group_min_session_timeout_ms > self.group_max_session_timeout_ms {
            bail!("group.min.session.timeout.ms exceeds group.max.session.timeout.ms");
        }
        if self.producer_id_expiration_ms < 1 || self.producer_id_expiration_check_interval_ms < 1 {
            bail!("producer.id.expiration.ms and producer.id.expiration.check.interval.ms must be at least 1");
        }
        if self.broker_heartbeat_interval_ms < 1 || self.broker_session_timeout_ms <= self.broker_heartbeat_interval_ms
        {
            bail!(
                "broker.session.timeout.ms must be longer than broker.heartbeat.interval.ms, which must be at least 1"
            );
        }
        if self.node_id < 0 {
            bail!("node.id must not be negative");
        }
        if self.replica_lag_time_max_ms < 1 {
            bail!("replica.lag.time.max.ms must be at least 1");
        }
        if self.leader_imbalance_check_interval_seconds < 1 || self.leader_imbalance_per_broker_percentage > 100 {
            bail!(
                "leader.imbalance.check.interval.seconds must be at least 1, leader.imbalance.per.broker.percentage at most 100"
            );
        }
        self.validate_roles()?;
        if self.metadata_log_max_record_bytes_between_snapshots == 0 {
            bail!("metadata.log.max.record.bytes.between.snapshots must be at least 1");
        }
        if self.queued_max_request_bytes == Some(0) {
            bail!("queued.max.request.bytes must be positive or -1 (no limit)");
        }
        if self.connections_max_idle.is_some_and(|idle| idle.is_zero()) {
            bail!("connections.max.idle.ms must be positive or -1 (never)");
        }
        if self.queued_max_requests_per_connection == 0 {
            bail!("queued.max.requests.per.connection must be at least 1");
        }
        if self.offset_metadata_max_bytes > crate::group::offsets::STRING_MAX_BYTES {
            bail!("offset.metadata.max.bytes cannot exceed {}", crate::group::offsets::STRING_MAX_BYTES);
        }
        Ok(())
    }

    /// KRaft's rules for `process.roles` against the quorum: a node with the controller role
    /// is a voter, a broker-only node is not (it follows the voters), and a controller-only node
    /// has no client listener.
    fn validate_roles(&self) -> anyhow::Result<()> {
        let voter = self.controller_quorum_voters.iter().any(|(id, _)| *id == self.node_id);
        let (roles, id) = (self.roles, self.node_id);
        if roles.controller && !self.controller_quorum_voters.is_empty() && !voter {
            bail!(
                "node.id {id} is not among controller.quorum.voters, but process.roles = {roles} makes it a controller"
            );
        }
        if !roles.broker && self.controller_quorum_voters.is_empty() {
            bail!(
                "process.roles = controller needs controller.quorum.voters (this node's controller listener, and the brokers' way in)"
            );
        }
        if !roles.controller && self.controller_quorum_voters.is_empty() {
            bail!("process.roles = broker needs controller.quorum.voters: a broker-only node follows the controllers");
        }
        if !roles.controller && voter {
            bail!(
                "node.id {id} is among controller.quorum.voters, but process.roles = broker: a broker-only node does not vote (make it broker,controller, or take it out of the voters)"
            );
        }
        if !roles.broker && (self.listen_set || self.advertise.is_some()) {
            bail!(
                "process.roles = controller: a controller-only node has no client listener (no listeners nor advertised.listeners)"
            );
        }
        Ok(())
    }

    /// The broker-wide retention time: `log.retention.ms`, else `.minutes`, else `.hours`;
    /// -1 for none.
    pub fn retention_ms(&self) -> i64 {
        let from_hours = || if self.log_retention_hours < 0 { -1 } else { self.log_retention_hours * 3_600_000 };
        let from_minutes = || self.log_retention_minutes.map(|m| if m < 0 { -1 } else { m * 60_000 });
        self.log_retention_ms.or_else(from_minutes).unwrap_or_else(from_hours)
    }

    /// How long partitions remember idle idempotent producers.
    pub fn producer_expiry(&self) -> ProducerExpiry {
        ProducerExpiry {
            expiration_ms: self.producer_id_expiration_ms,
            check_interval_ms: self.producer_id_expiration_check_interval_ms,
        }
    }

    /// Whether a topic with `topic_configs` may elect a leader outside its ISR: its own
    /// `unclean.leader.election.enable` (validated when it was set) over this broker's.
    pub fn unclean_leader_election(&self, topic_configs: &BTreeMap<String, String>) -> bool {
        topic_configs
            .get("unclean.leader.election.enable")
            .and_then(|value| parse_bool("unclean.leader.election.enable", value).ok())
            .unwrap_or(self.unclean_leader_election_enable)
    }

    /// The log settings of one topic: its own configs over the broker-wide defaults.
    pub fn log_config(&self, topic_configs: &BTreeMap<String, String>) -> anyhow::Result<LogConfig> {
        let mut config = LogConfig {
            segment_bytes: self.log_segment_bytes,
            segment_ms: self.log_roll_ms,
            index_interval_bytes: self.log_index_interval_bytes,
            max_message_bytes: self.message_max_bytes,
            timestamp_type: self.log_message_timestamp_type,
            flush_messages: self.log_flush_interval_messages,
            flush_ms: self.log_flush_interval_ms,
            write_caching: self.log_write_caching,
            compact: self.log_cleanup_policy.compact,
            delete: self.log_cleanup_policy.delete,
            delete_retention_ms: self.log_cleaner_delete_retention_ms,
            retention_ms: unlimited_if_negative(self.retention_ms()),
            retention_bytes: unlimited_if_negative(self.log_retention_bytes).map(|b| b as u64),
            validate_compressed_records: true,
            timestamp_before_max_ms: self.log_message_timestamp_before_max_ms,
            timestamp_after_max_ms: self.log_message_timestamp_after_max_ms,
        };
        for (key, value) in topic_configs {
            let context = || format!("topic config {key} = {value}");
            match key.as_str() {
                "segment.bytes" => config.segment_bytes = value.parse().with_context(context)?,
                "segment.ms" => config.segment_ms = value.parse().with_context(context)?,
                "index.interval.bytes" => config.index_interval_bytes = value.parse().with_context(context)?,
                "max.message.bytes" => config.max_message_bytes = value.parse().with_context(context)?,
                "message.timestamp.type" => config.timestamp_type = parse_timestamp_type(value)?,
                "flush.messages" => config.flush_messages = Some(value.parse().with_context(context)?),
                "flush.ms" => config.flush_ms = Some(value.parse().with_context(context)?),
                "write.caching" => config.write_caching = parse_bool(key, value)?,
                "cleanup.policy" => {
                    let policy = parse_cleanup_policy(value)?;
                    (config.compact, config.delete) = (policy.compact, policy.delete);
                }
                // Checked here, applied by the produce path (acks=all).
                "min.insync.replicas" => {
                    parse_min_insync_replicas(value)?;
                }
                // Checked here, applied by the controller's elections (`unclean_leader_election`).
                "unclean.leader.election.enable" => {
                    parse_bool(key, value)?;
                }
                // Batches are stored as the producer compressed them.
                "compression.type" => parse_compression_type(value)?,
                "retention.ms" => config.retention_ms = unlimited_if_negative(parse_retention(key, value)?),
                "retention.bytes" => {
                    config.retention_bytes = unlimited_if_negative(parse_retention(key, value)?).map(|b| b as u64)
                }
                "delete.retention.ms" => config.delete_retention_ms = parse_non_negative(key, value)?,
                "sluice.validate.compressed.records" => config.validate_compressed_records = parse_bool(key, value)?,
                "message.timestamp.before.max.ms" => config.timestamp_before_max_ms = parse_non_negative(key, value)?,
                "message.timestamp.after.max.ms" => config.timestamp_after_max_ms = parse_non_negative(key, value)?,
                _ => bail!("unknown topic config {key:?}"),
            }
        }
        Ok(config)
    }
}

/// `cleanup.policy`: what happens to closed segments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CleanupPolicy {
    /// Keep only the latest record of each key.
    pub compact: bool,
    /// Delete whole segments by `retention.ms` / `retention.bytes`.
    pub delete: bool,
}

/// "delete", "compact", or both separated by a comma.
fn parse_cleanup_policy(value: &str) -> anyhow::Result<CleanupPolicy> {
    let mut policy = CleanupPolicy { compact: false, delete: false };
    for part in value.split(',').map(str::trim) {
        match part {
            "compact" => policy.compact = true,
            "delete" => policy.delete = true,
            _ => bail!("cleanup.policy must be compact and/or delete, not {value:?}"),
        }
    }
    Ok(policy)
}

/// A limit (a retention, a budget): a number, -1 meaning none.
fn parse_retention(key: &str, value: &str) -> anyhow::Result<i64> {
    match value.trim().parse::<i64>() {
        Ok(n) if n >= -1 => Ok(n),
        _ => bail!("{key} must be -1 (no limit) or a non-negative number, not {value:?}"),
    }
}

fn unlimited_if_negative(value: i64) -> Option<i64> {
    (value >= 0).then_some(value)
}

/// A duration or size that Kafka bounds below by 0.
fn parse_non_negative(key: &str, value: &str) -> anyhow::Result<i64> {
    match value.parse::<i64>() {
        Ok(n) if n >= 0 => Ok(n),
        _ => bail!("{key} must be a whole number of at least 0, not {value:?}"),
    }
}

/// Exactly "true" or "false", as Kafka's boolean configs.
/// `ID@HOST:PORT,...`: distinct non-negative ids, each with an address.
/// KRaft's `process.roles`: `broker`, `controller`, or both (the default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Roles {
    /// Holds partitions, serves clients, registers with the active controller.
    pub broker: bool,
    /// Votes in the metadata quorum and serves the controller listener.
    pub controller: bool,
}

impl std::str::FromStr for Roles {
    type Err = anyhow::Error;

    fn from_str(value: &str) -> anyhow::Result<Roles> {
        let mut roles = Roles { broker: false, controller: false };
        for role in value.split(',').map(str::trim) {
            let seen = match role {
                "broker" => std::mem::replace(&mut roles.broker, true),
                "controller" => std::mem::replace(&mut roles.controller, true),
                other => bail!("process.roles = {value}: {other:?} is neither broker nor controller"),
            };
            if seen {
                bail!("process.roles = {value}: {role} is named twice");
            }
        }
        Ok(roles)
    }
}

impl std::fmt::Display for Roles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names = [("broker", self.broker), ("controller", self.controller)];
        let named: Vec<&str> = names.iter().filter(|(_, on)| *on).map(|(name, _)| *name).collect();
        f.write_str(&named.join(","))
    }
}

fn parse_quorum_voters(value: &str) -> anyhow::Result<Vec<(i32, String)>> {
    let mut voters: Vec<(i32, String)> = Vec::new();
    for voter in value.split(',').map(str::trim).filter(|v| !v.is_empty()) {
        let (id, address) =
            voter.split_once('@').with_context(|| format!("quorum voter {voter:?}: expected ID@HOST:PORT"))?;
        let id: i32 = id.parse().with_context(|| format!("quorum voter {voter:?}: the id"))?;
        let (_, port) =
            address.rsplit_once(':').with_context(|| format!("quorum voter {voter:?}: expected HOST:PORT"))?;
        port.parse::<u16>().with_context(|| format!("quorum voter {voter:?}: the port"))?;
        if id < 0 || voters.iter().any(|(other, _)| *other == id) {
            bail!("quorum voter {voter:?}: ids must be distinct and not negative");
        }
        voters.push((id, address.to_string()));
    }
    Ok(voters)
}

fn parse_bool(key: &str, value: &str) -> anyhow::Result<bool> {
    match value {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => bail!("{key} must be true or false, not {value:?}"),
    }
}

fn cleanup_policy_text(policy: CleanupPolicy) -> String {
    let parts = [("compact", policy.compact), ("delete", policy.delete)];
    parts.iter().filter(|(_, on)| *on).map(|(name, _)| *name).collect::<Vec<_>>().join(",")
}

/// Only "producer" (batches kept as the producer compressed them): Sluice does not recompress.
fn parse_compression_type(value: &str) -> anyhow::Result<()> {
    match value {
        "producer" => Ok(()),
        _ => bail!("compression.type {value:?} would need recompression, which Sluice does not do; use producer"),
    }
}

fn parse_min_insync_replicas(value: &str) -> anyhow::Result<i32> {
    match value.parse::<i32>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => bail!("min.insync.replicas must be at least 1, not {value:?}"),
    }
}

pub fn timestamp_type_text(timestamp_type: TimestampType) -> &'static str {
    match timestamp_type {
        TimestampType::CreateTime => "CreateTime",
        TimestampType::LogAppendTime => "LogAppendTime",
    }
}

fn parse_timestamp_type(value: &str) -> anyhow::Result<TimestampType> {
    match value {
        "CreateTime" => Ok(TimestampType::CreateTime),
        "LogAppendTime" => Ok(TimestampType::LogAppendTime),
        _ => bail!("message.timestamp.type must be CreateTime or LogAppendTime, not {value:?}"),
    }
}

/// Turns nested TOML tables into dotted keys, so `[log] segment.bytes = 1` and
/// `"log.segment.bytes" = 1` mean the same.
fn flatten_toml(table: &toml::Table) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (key, value) in table {
        match value {
            toml::Value::Table(inner) => {
                for (inner_key, inner_value) in flatten_toml(inner) {
                    out.push((format!("{key}.{inner_key}"), inner_value));
                }
            }
            toml::Value::String(s) => out.push((key.clone(), s.clone())),
            other => out.push((key.clone(), other.to_string())),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_with_nested_and_dotted_keys() {
        let mut config = BrokerConfig::default();
        config
            .load_toml("num.partitions = 3\n[log]\nsegment.bytes = 1024\n[auto.create.topics]\nenable = false\n")
            .unwrap();
        assert_eq!(config.num_partitions, 3);
        assert_eq!(config.log_segment_bytes, 1024);
        assert!(!config.auto_create_topics_enable);
    }

    #[test]
    fn num_io_threads_takes_a_worker_count_and_refuses_zero_and_absurd_ones() {
        let mut config = BrokerConfig::default();
        assert_eq!(config.num_io_threads, DEFAULT_NUM_IO_THREADS);
        config.set("num.io.threads", "64").unwrap();
        assert_eq!((config.num_io_threads, config.get("num.io.threads").as_deref()), (64, Some("64")));
        for bad in ["0", "-1", "1025", "eight"] {
            assert!(config.set("num.io.threads", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn reactor_spin_is_set_in_microseconds() {
        let mut config = BrokerConfig::default();
        assert!(config.spin_before_park.is_zero());
        config.set("reactor.spin.before.park.us", "250").unwrap();
        assert_eq!(config.spin_before_park, std::time::Duration::from_micros(250));
        assert!(config.set("reactor.spin.before.park.us", "-1").is_err());
    }

    #[test]
    fn offset_metadata_limit_fits_an_offset_record() {
        let mut config = BrokerConfig::default();
        config.set("offset.metadata.max.bytes", "32767").unwrap();
        config.validate().unwrap();
        config.set("offset.metadata.max.bytes", "32768").unwrap();
        assert!(config.validate().is_err());
    }

    #[test]
    fn request_memory_and_idle_limits_take_minus_one_for_none_and_refuse_zero() {
        let mut config = BrokerConfig::default();
        assert_eq!(config.queued_max_request_bytes, Some(512 << 20));
        assert_eq!(config.connections_max_idle, Some(std::time::Duration::from_secs(600)));
        config.set("queued.max.request.bytes", "-1").unwrap();
        config.set("connections.max.idle.ms", "-1").unwrap();
        assert_eq!((config.queued_max_request_bytes, config.connections_max_idle), (None, None));
        config.set("queued.max.request.bytes", "1048576").unwrap();
        config.set("connections.max.idle.ms", "2500").unwrap();
        assert_eq!(config.queued_max_request_bytes, Some(1 << 20));
        assert_eq!(config.connections_max_idle, Some(std::time::Duration::from_millis(2500)));
        assert!(config.set("queued.max.request.bytes", "-2").is_err());
        assert!(config.set("connections.max.idle.ms", "soon").is_err());
        config.validate().unwrap();
        config.set("queued.max.request.bytes", "0").unwrap();
        assert!(config.validate().is_err());
        config.set("queued.max.request.bytes", "-1").unwrap();
        config.set("connections.max.idle.ms", "0").unwrap();
        assert!(config.validate().is_err());
    }

    #[test]
    fn roles_must_fit_the_quorum() {
        let quorum = "1@127.0.0.1:9093,2@127.0.0.1:9094,3@127.0.0.1:9095";
        let check = |settings: &[(&str, &str)]| {
            let mut config = BrokerConfig::default();
            for (key, value) in settings {
                config.set(key, value)?;
            }
            config.validate()
        };
        let refused = |settings: &[(&str, &str)], why: &str| {
            let error = format!("{:#}", check(settings).expect_err(why));
            assert!(error.contains("process.roles"), "{why}: {error}");
        };
        check(&[("node.id", "2"), ("controller.quorum.voters", quorum)]).unwrap();
        check(&[("node.id", "2"), ("controller.quorum.voters", quorum), ("process.roles", "controller")]).unwrap();
        check(&[("node.id", "4"), ("controller.quorum.voters", quorum), ("process.roles", "broker")]).unwrap();
        check(&[("process.roles", "controller , broker")]).unwrap();
        refused(
            &[("node.id", "4"), ("controller.quorum.voters", quorum), ("process.roles", "controller")],
            "not a voter",
        );
        refused(&[("node.id", "4"), ("controller.quorum.voters", quorum)], "both, not a voter");
        refused(&[("node.id", "1"), ("controller.quorum.voters", quorum), ("process.roles", "broker")], "a voter");
        refused(&[("process.roles", "broker")], "a broker alone has no controller");
        refused(&[("process.roles", "controller")], "a controller alone serves no one");
        let listening = [("node.id", "1"), ("controller.quorum.voters", quorum), ("process.roles", "controller")];
        refused(&[listening.as_slice(), &[("listeners", "127.0.0.1:9092")]].concat(), "no client listener");
        for roles in ["", "broker,broker", "observer"] {
            refused(&[("process.roles", roles)], roles);
        }
        let mut config = BrokerConfig::default();
        assert_eq!(config.get("process.roles").as_deref(), Some("broker,controller"));
        config.set("process.roles", "controller").unwrap();
        assert_eq!(config.get("process.roles").as_deref(), Some("controller"));
    }

    #[test]
    fn unknown_settings_are_refused() {
        let mut config = BrokerConfig::default();
        assert!(config.set("no.such.thing", "1").is_err());
        assert!(config.log_config(&BTreeMap::from([("bogus".into(), "1".into())])).is_err());
    }

    #[test]
    fn every_broker_setting_reads_back_as_it_is_set() {
        let mut config = BrokerConfig::default();
        for name in BROKER_CONFIG_NAMES {
            if let Some(value) = config.get(name) {
                config.set(name, &value).unwrap_or_else(|e| panic!("{name} = {value}: {e:#}"));
                assert_eq!(config.get(name), Some(value), "{name}");
            }
        }
        let known = |name: &&str| BROKER_CONFIG_NAMES.contains(name);
        assert!(DYNAMIC_BROKER_CONFIG_NAMES.iter().all(known));
        assert!(TOPIC_CONFIGS.iter().flat_map(|(_, synonyms)| synonyms.iter()).all(known));
        // Every topic config has a default, so DescribeConfigs always has a value for it.
        assert!(TOPIC_CONFIGS.iter().all(|(name, _)| config.topic_default(name).is_some()));
    }

    #[test]
    fn configs_kafka_defines_but_sluice_cannot_honour_are_refused() {
        let config = BrokerConfig::default();
        for (key, value) in [("segment.jitter.ms", "1"), ("preallocate", "true"), ("compression.type", "gzip")] {
            assert!(config.log_config(&BTreeMap::from([(key.into(), value.into())])).is_err(), "{key}");
        }
        let honoured = BTreeMap::from([
            ("compression.type".to_string(), "producer".to_string()),
            ("min.insync.replicas".to_string(), "2".to_string()),
            ("unclean.leader.election.enable".to_string(), "true".to_string()),
        ]);
        config.log_config(&honoured).unwrap();
        assert!(config.log_config(&BTreeMap::from([("min.insync.replicas".into(), "0".into())])).is_err());
    }

    #[test]
    fn retention_settings_follow_kafkas_precedence() {
        let mut config = BrokerConfig::default();
        assert_eq!(config.log_config(&BTreeMap::new()).unwrap().retention_ms, Some(7 * 24 * 3_600_000));
        config.set("log.retention.hours", "2").unwrap();
        assert_eq!(config.retention_ms(), 2 * 3_600_000);
        config.set("log.retention.minutes", "3").unwrap();
        assert_eq!(config.retention_ms(), 3 * 60_000);
        config.set("log.retention.ms", "-1").unwrap();
        assert_eq!(config.log_config(&BTreeMap::new()).unwrap().retention_ms, None);
        assert!(config.set("log.retention.bytes", "-2").is_err());
        let topic = BTreeMap::from([
            ("retention.ms".to_string(), "1000".to_string()),
            ("retention.bytes".to_string(), "4096".to_string()),
            ("cleanup.policy".to_string(), "compact,delete".to_string()),
        ]);
        let log = config.log_config(&topic).unwrap();
        assert_eq!(
            (log.retention_ms, log.retention_bytes, log.compact, log.delete),
            (Some(1000), Some(4096), true, true)
        );
        let compact_only = BTreeMap::from([("cleanup.policy".to_string(), "compact".to_string())]);
        assert!(!config.log_config(&compact_only).unwrap().delete);
        assert!(config.log_config(&BTreeMap::from([("retention.ms".into(), "soon".into())])).is_err());
    }

    #[test]
    fn tombstones_are_kept_a_day_unless_the_topic_says_otherwise() {
        let mut config = BrokerConfig::default();
        assert_eq!(config.log_config(&BTreeMap::new()).unwrap().delete_retention_ms, 86_400_000);
        config.set("log.cleaner.delete.retention.ms", "5000").unwrap();
        assert_eq!(config.log_config(&BTreeMap::new()).unwrap().delete_retention_ms, 5000);
        let topic = |v: &str| BTreeMap::from([("delete.retention.ms".to_string(), v.to_string())]);
        assert_eq!(config.log_config(&topic("100")).unwrap().delete_retention_ms, 100);
        assert!(config.log_config(&topic("-1")).is_err());
        assert!(config.set("log.cleaner.delete.retention.ms", "soon").is_err());
    }

    #[test]
    fn compressed_record_validation_can_be_turned_off_per_topic() {
        let config = BrokerConfig::default();
        assert!(config.log_config(&BTreeMap::new()).unwrap().validate_compressed_records);
        let key = "sluice.validate.compressed.records".to_string();
        let off = config.log_config(&BTreeMap::from([(key.clone(), "false".into())])).unwrap();
        assert!(!off.validate_compressed_records);
        assert!(config.log_config(&BTreeMap::from([(key, "no".into())])).is_err());
    }

    #[test]
    fn topic_configs_override_broker_defaults() {
        let mut config = BrokerConfig::default();
        let log = config.log_config(&BTreeMap::from([("flush.messages".into(), "1".into())])).unwrap();
        assert_eq!(log.flush_messages, Some(1));
        assert!(log.write_caching, "writes are cached by default, as in Kafka");
        let log = config.log_config(&BTreeMap::from([("write.caching".into(), "false".into())])).unwrap();
        assert!(!log.write_caching);
        assert!(config.log_config(&BTreeMap::from([("write.caching".into(), "no".into())])).is_err());
        config.set("log.write.caching", "false").unwrap();
        assert!(!config.log_config(&BTreeMap::new()).unwrap().write_caching);
        assert_eq!(config.topic_default("write.caching").as_deref(), Some("false"));
        assert_eq!(log.segment_bytes, config.log_segment_bytes);
    }
}
