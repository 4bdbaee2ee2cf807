//! DescribeLogDirs: the data directory, with the size of every partition in it (asked of each
//! shard for the partitions it owns) and the file system's total and usable bytes.

use std::collections::BTreeMap;
use std::rc::Rc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use kafka_protocol::messages::{DescribeLogDirsRequest, DescribeLogDirsResponse};

use super::{str_bytes, topic_name};
use crate::shard::Shard;
use crate::shard::router::PartitionSizes;

pub async fn handle(shard: &Rc<Shard>, request: DescribeLogDirsRequest) -> DescribeLogDirsResponse {
    let wanted: Option<BTreeMap<String, Vec<i32>>> =
        request.topics.map(|topics| topics.into_iter().map(|t| (t.topic.0.to_string(), t.partitions)).collect());
    let mut sizes: BTreeMap<String, Vec<(i32, u64)>> = BTreeMap::new();
    for partitions in shard.on_every_shard(|| PartitionSizes).await {
        for (tp, size) in partitions {
            let asked = match &wanted {
                None => true,
                Some(wanted) => wanted.get(&tp.topic).is_some_and(|p| p.contains(&tp.partition)),
            };
            if asked {
                sizes.entry(tp.topic).or_default().push((tp.partition, size));
            }
        }
    }
    let topics = sizes
        .into_iter()
        .map(|(name, mut partitions)| {
            partitions.sort_unstable();
            DescribeLogDirsTopic::default().with_name(topic_name(&name)).with_partitions(
                partitions
                    .into_iter()
                    .map(|(partition, size)| {
                        DescribeLogDirsPartition::default()
                            .with_partition_index(partition)
                            .with_partition_size(size as i64)
                    })
                    .collect(),
            )
        })
        .collect();
    let data_dir = &shard.config.data_dir;
    let dir = std::fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.clone());
    let result =
        DescribeLogDirsResult::default().with_log_dir(str_bytes(&dir.display().to_string())).with_topics(topics);
    let result = match nix::sys::statvfs::statvfs(data_dir) {
        Ok(fs) => {
            let fragment = fs.fragment_size() as i64;
            result
                .with_total_bytes(fs.blocks() as i64 * fragment)
                .with_usable_bytes(fs.blocks_available() as i64 * fragment)
        }
        Err(e) => {
            tracing::warn!(dir = %data_dir.display(), error = %e, "statvfs of the data directory");
            result.with_error_code(ResponseError::KafkaStorageError.code()).with_total_bytes(-1).with_usable_bytes(-1)
        }
    };
    DescribeLogDirsResponse::default().with_results(vec![result])
}
