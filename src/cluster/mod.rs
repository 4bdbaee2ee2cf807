//! Cluster metadata: the image of topics, partitions, placement and configs.
//!
//! Shard 0 is the single writer (the controller, see `shard::controller`): it applies changes,
//! persists the image to `<data-dir>/metadata.json` and broadcasts a copy to every shard.
//! Every shard reads only its own copy.

mod metadata;

pub use metadata::{MetadataImage, PartitionMetadata, TopicMetadata, is_legal_topic_name};
