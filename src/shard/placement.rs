//! Placement: which shard owns what. Pure functions of names and the shard count, so every
//! shard computes the same answer without asking anyone.

use super::ShardId;

/// FNV-1a: tiny, stable across releases and platforms (unlike `DefaultHasher`), which matters
/// because placements are persisted.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// The shard owning partition `partition` of `topic`. Consecutive partitions of one topic go
/// to consecutive shards, so a topic with at least as many partitions as shards uses them all.
pub fn shard_for_partition(topic: &str, partition: i32, shard_count: usize) -> ShardId {
    assert!(shard_count > 0);
    assert!(partition >= 0);
    let start = fnv1a(topic.as_bytes()) % shard_count as u64;
    ((start + partition as u64) % shard_count as u64) as ShardId
}

/// The `__consumer_offsets` partition (and so the coordinator) of a consumer group.
pub fn offsets_partition(group_id: &str, partitions: i32) -> i32 {
    assert!(partitions > 0);
    (fnv1a(group_id.as_bytes()) % partitions as u64) as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spreads_consecutive_partitions_over_all_shards() {
        let shards: std::collections::BTreeSet<_> = (0..4).map(|p| shard_for_partition("orders", p, 4)).collect();
        assert_eq!(shards.len(), 4);
    }

    /// A group's placement is computed again at every start: a change to the hash or the
    /// arithmetic would lose every group's committed offsets (and would move partitions of
    /// topics created after an upgrade). These values were computed outside this code, from
    /// FNV-1a's published definition.
    #[test]
    fn placements_are_pinned() {
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c, "FNV-1a's published test vector");
        let first_five = |topic: &str, shards: usize| -> Vec<ShardId> {
            (0..5).map(|p| shard_for_partition(topic, p, shards)).collect()
        };
        let pinned: [(&str, usize, Vec<ShardId>); 6] = [
            ("orders", 3, vec![1, 2, 0, 1, 2]),
            ("orders", 16, vec![12, 13, 14, 15, 0]),
            ("__consumer_offsets", 3, vec![2, 0, 1, 2, 0]),
            ("__consumer_offsets", 16, vec![4, 5, 6, 7, 8]),
            ("x.y_z-1", 4, vec![1, 2, 3, 0, 1]),
            ("x.y_z-1", 1, vec![0, 0, 0, 0, 0]),
        ];
        for (topic, shards, expected) in pinned {
            assert_eq!(first_five(topic, shards), expected, "{topic} over {shards} shards");
        }
        let groups: Vec<i32> =
            ["g", "my-group", "console-consumer-1"].iter().map(|g| offsets_partition(g, 50)).collect();
        assert_eq!(groups, [24, 15, 5]);
    }
}
