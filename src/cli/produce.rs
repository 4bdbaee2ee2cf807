//! `sluice produce TOPIC`: one record per stdin line, batched per partition.

use std::collections::HashMap;
use std::io::BufRead;

use anyhow::Context;
use bytes::Bytes;

use crate::client::Client;

/// A partition's pending records are sent once either limit is reached.
const BATCH_RECORDS: usize = 1000;
const BATCH_BYTES: usize = 1 << 20;

#[derive(clap::Args)]
pub struct ProduceArgs {
    topic: String,
    #[arg(long, default_value = super::DEFAULT_BOOTSTRAP)]
    bootstrap: String,
    /// Split each line at the first SEP into key and value.
    #[arg(long, value_name = "SEP")]
    key_separator: Option<String>,
    /// Send every record to this partition.
    #[arg(long)]
    partition: Option<i32>,
    /// 0, 1 or -1 (all).
    #[arg(long, default_value_t = -1, allow_hyphen_values = true)]
    acks: i16,
}

type Pending = Vec<(Option<Bytes>, Option<Bytes>)>;

pub fn run(args: ProduceArgs) -> anyhow::Result<()> {
    let mut client = Client::connect(&args.bootstrap)?;
    let partitions = client.partition_count(&args.topic)?;
    anyhow::ensure!(partitions > 0, "topic {} has no partitions", args.topic);
    let mut pending: HashMap<i32, (Pending, usize)> = HashMap::new();
    let mut next_unkeyed = 0;
    for (number, line) in std::io::stdin().lock().lines().enumerate() {
        let line = line.context("reading stdin")?;
        let (key, value) = match &args.key_separator {
            Some(separator) => {
                let (key, value) = line
                    .split_once(separator.as_str())
                    .with_context(|| format!("line {}: no key separator {separator:?}", number + 1))?;
                (Some(Bytes::from(key.to_string())), Bytes::from(value.to_string()))
            }
            None => (None, Bytes::from(line)),
        };
        let partition = match (args.partition, &key) {
            (Some(p), _) => p,
            (None, Some(key)) => partition_for_key(key, partitions),
            (None, None) => {
                next_unkeyed = (next_unkeyed + 1) % partitions;
                next_unkeyed
            }
        };
        let (records, bytes) = pending.entry(partition).or_default();
        *bytes += key.as_ref().map_or(0, Bytes::len) + value.len();
        records.push((key, Some(value)));
        if records.len() >= BATCH_RECORDS || *bytes >= BATCH_BYTES {
            client.produce(&args.topic, partition, records, args.acks)?;
            records.clear();
            *bytes = 0;
        }
    }
    for (partition, (records, _)) in pending {
        if !records.is_empty() {
            client.produce(&args.topic, partition, &records, args.acks)?;
        }
    }
    Ok(())
}

/// The Java client's default partitioner for keyed records, so keys land where Kafka's own
/// clients would put them.
pub fn partition_for_key(key: &[u8], partitions: i32) -> i32 {
    ((murmur2(key) & 0x7fff_ffff) % partitions as u32) as i32
}

/// MurmurHash2 as Kafka's clients compute it (seed 0x9747b28c, little-endian words).
fn murmur2(data: &[u8]) -> u32 {
    const M: u32 = 0x5bd1_e995;
    let mut h: u32 = 0x9747_b28c ^ data.len() as u32;
    let mut words = data.chunks_exact(4);
    for word in &mut words {
        let mut k = u32::from_le_bytes(word.try_into().expect("4 bytes"));
        k = k.wrapping_mul(M);
        k ^= k >> 24;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M) ^ k;
    }
    let tail = words.remainder();
    if tail.len() >= 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^ (h >> 15)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_kafka_clients() {
        // Values from kafka-python's murmur2, which mirrors the Java client's.
        let expected: [(&[u8], u32); 7] = [
            (b"", 275646681),
            (b"a", 2731586172),
            (b"ab", 316155434),
            (b"abc", 479470107),
            (b"abcd", 2971317748),
            (b"hello world", 1221641059),
            (b"key-17", 956945460),
        ];
        for (key, hash) in expected {
            assert_eq!(murmur2(key), hash, "{:?}", String::from_utf8_lossy(key));
        }
    }
}
