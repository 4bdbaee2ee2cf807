//! Sluice: a Kafka-compatible streaming broker, thread-per-core on io_uring.
//!
//! Code map, in data-path order (see `docs/ARCHITECTURE.md` for the whole story):
//! - [`cli`]: the `sluice` command line (serve, topic, produce, consume).
//! - [`config`]: broker settings with Kafka's names; every limit lives here.
//! - [`runtime`]: the only place that touches glommio: pinned executors, sockets, files.
//! - [`shard`]: placement (pure functions) and the cross-core mesh that routes envelopes.
//! - [`server`]: per-shard listener and per-connection framing, pipelining and ordering.
//! - [`protocol`]: frames, the versions we serve, and the one error-code mapping.
//! - [`handlers`]: one file per Kafka API.
//! - [`group`]: consumer groups: the membership state machine and committed offsets.
//! - [`partition`]: one partition on its owning shard: log, offsets, high watermark, epoch.
//! - [`replication`]: followers fetching from leaders; the leader's view of its replicas.
//! - [`storage`]: segmented logs of Kafka v2 record batches, indexes and recovery.
//! - [`metrics`]: per-shard counters and the Prometheus exposition.
//! - [`cluster`]: the metadata image (topics, placement, configs) and its persistence.
//! - [`client`]: a small blocking Kafka client used by the CLI and tests.
//! - [`bench`]: `sluice bench`, a load generator on the same runtime, with its reports.

/// See [`runtime::alloc`]: untrusted element counts must not abort the process.
#[global_allocator]
static ALLOCATOR: runtime::alloc::BrokerAllocator = runtime::alloc::BrokerAllocator;

pub mod bench;
pub mod cli;
pub mod client;
pub mod cluster;
pub mod config;
pub mod group;
pub mod handlers;
pub mod metrics;
pub mod partition;
pub mod protocol;
pub mod replication;
pub mod runtime;
pub mod server;
pub mod shard;
pub mod storage;
