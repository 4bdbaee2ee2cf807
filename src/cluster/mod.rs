//! Cluster metadata: the image of topics, partitions, placement and configs, and the log that
//! replicates it.
//!
//! Shard 0 is the single writer (the controller, see `shard::controller`): it turns a change
//! into [`records`], proposes them to the [`quorum`] (the Raft-replicated metadata log, driven
//! on shard 0), and once they are committed the image with them applied is installed on every
//! shard. Every shard reads only its own copy. [`brokers`]: each node's registration and
//! heartbeats with the active controller, and its record of brokers' sessions. [`replicas`]:
//! which brokers hold each partition's replicas, and [`reassignment`] how they move.
//! [`election`]: how leaders and ISRs change (fencing, AlterPartition, preferred and unclean
//! elections). [`configs`] says what the admin APIs see of
//! topic and broker configs, and how they change.

pub mod brokers;
pub mod configs;
pub mod election;
mod metadata;
pub mod quorum;
pub mod reassignment;
pub mod records;
pub mod replicas;

pub use metadata::{
    BrokerRegistration, MetadataImage, NO_LEADER, PartitionMetadata, TopicMetadata, is_legal_topic_name,
};
