//! Cluster metadata: the image of topics, partitions, placement and configs.
//!
//! Shard 0 is the single writer (the controller, see `shard::controller`): it applies changes,
//! persists the image to `<data-dir>/metadata.json` and broadcasts a copy to every shard.
//! Every shard reads only its own copy. [`configs`] says what the admin APIs see of topic and
//! broker configs, and how they change.

pub mod configs;
mod metadata;

pub use metadata::{MetadataImage, PartitionMetadata, TopicMetadata, is_legal_topic_name};
