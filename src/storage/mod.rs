//! Storage: one [`Log`] per partition, a directory of segments holding Kafka v2 record
//! batches exactly as producers sent them (with broker-assigned offsets).
//!
//! Runs on the shard that owns the partition; nothing here is shared between threads.
//! All I/O goes through the [`fs`] seam: on the real file system, positional reads and writes
//! through the page cache; appends and their fsyncs are submitted to the shard's io_uring, and
//! the fetch path's reads take only what is cached ([`Wait::No`]), loading the rest through
//! the ring before trying again.
//!
//! - [`batch`]: v2 batch headers, validation (CRC-32C, the records inside) and the fields the
//!   broker stamps.
//! - [`records`]: walking the records inside a batch; [`codec`]: bounded decompression.
//! - [`segment`]: one `.log` file with its `.index` and `.timeindex`.
//! - [`index`]: the sparse index files.
//! - [`log`]: the segments of one partition, appends, reads, flush policy, recovery.
//! - [`leader_epoch`]: which leader epoch wrote which part of the log, and its checkpoint.
//! - [`compaction`]: keeping only the latest record per key in closed segments.
//! - [`deleter`]: removes deleted segments' files and deleted partitions' directories off the
//!   shard threads.
//! - [`producer_state`]: idempotent producers' sequences, with their snapshots.
//! - [`fs`]: the file-system seam, its OS implementation, and a simulated disk for tests.

pub mod batch;
pub mod codec;
mod compaction;
pub mod deleter;
pub mod fs;
pub mod index;
pub mod leader_epoch;
mod log;
#[cfg(test)]
mod power_loss;
pub mod producer_state;
pub mod records;
mod segment;

/// Errors that storage reports; mapped to Kafka error codes in `protocol::errors`.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// A batch failed validation: bad CRC, bad length, truncated header.
    #[error("corrupt record batch: {0}")]
    CorruptBatch(String),
    /// A record inside a batch is malformed, or disagrees with the batch header (count, offset
    /// deltas, lengths); Kafka's InvalidRecordException.
    #[error("invalid record: {0}")]
    InvalidRecord(String),
    /// A CreateTime timestamp outside `message.timestamp.before.max.ms` /
    /// `message.timestamp.after.max.ms` of the broker's clock.
    #[error("invalid timestamp: {0}")]
    InvalidTimestamp(String),
    /// Compression codec id 5-7 in a batch's attributes.
    #[error("unsupported compression codec {0}")]
    UnsupportedCompression(i16),
    /// A compressed batch inflates past the limit (`max.message.bytes` times
    /// [`batch::DECOMPRESSION_RATIO_LIMIT`]).
    #[error("compressed batch decompresses to more than {limit} bytes")]
    DecompressedTooLarge { limit: usize },
    /// magic byte other than 2.
    #[error("unsupported record batch magic {0}")]
    UnsupportedMagic(i8),
    /// A batch larger than `max.message.bytes`.
    #[error("record batch of {size} bytes exceeds max.message.bytes {max}")]
    BatchTooLarge { size: usize, max: usize },
    /// Reading an offset outside [log_start_offset, log_end_offset].
    #[error("offset {offset} out of range [{log_start_offset}, {log_end_offset}]")]
    OffsetOutOfRange { offset: i64, log_start_offset: i64, log_end_offset: i64 },
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// A read with [`Wait::No`] met bytes that are not in the page cache: `len` bytes at
    /// `position` of the segment based at `base_offset`, for [`Log::load`] to bring in before
    /// the read is tried again. The fetch path handles it; it never reaches a client.
    #[error("{len} bytes at {position} of segment {base_offset} are not in the page cache")]
    NotCached { base_offset: i64, position: u64, len: usize },
}

/// Whether a read may wait for the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Read synchronously: recovery, upkeep, tools, and a fetch's last try.
    Yes,
    /// The fetch path: read only what is in the page cache, else fail with
    /// [`StorageError::NotCached`], so that the shard never waits for the disk.
    No,
}

/// How the broker stamps batch timestamps (`message.timestamp.type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampType {
    CreateTime,
    LogAppendTime,
}

/// Per-log settings, Kafka's topic configs.
#[derive(Debug, Clone)]
pub struct LogConfig {
    pub segment_bytes: u64,
    pub segment_ms: i64,
    pub index_interval_bytes: u32,
    pub max_message_bytes: usize,
    pub timestamp_type: TimestampType,
    /// fsync after this many appended messages (records); None = leave it to the OS.
    pub flush_messages: Option<u64>,
    /// fsync when this long has passed since the last flush; None = leave it to the OS.
    pub flush_ms: Option<i64>,
    /// `write.caching`: true answers produces once their write reached the page cache (the
    /// flush policy aside); false answers every produce only once an fsync covers it.
    pub write_caching: bool,
    /// `cleanup.policy=compact`: closed segments keep only the latest record of each key.
    pub compact: bool,
    /// `delete.retention.ms`: how long compaction keeps a tombstone that is its key's latest
    /// record, so that consumers lagging behind still see the deletion.
    pub delete_retention_ms: i64,
    /// `cleanup.policy=delete`: closed segments past `retention_ms` or beyond
    /// `retention_bytes` are deleted from the head of the log.
    pub delete: bool,
    /// Delete a closed segment once its newest record is older than this; None = never.
    pub retention_ms: Option<i64>,
    /// Delete closed segments from the head while the log would still exceed this; None = never.
    pub retention_bytes: Option<u64>,
    /// `sluice.validate.compressed.records`: walk the records of compressed batches on append
    /// (decompressing them); false trusts the producer for what is inside the compression.
    pub validate_compressed_records: bool,
    /// Under CreateTime, refuse records stamped more than this before the broker's clock
    /// (`message.timestamp.before.max.ms`; i64::MAX: any).
    pub timestamp_before_max_ms: i64,
    /// ... or more than this after it (`message.timestamp.after.max.ms`).
    pub timestamp_after_max_ms: i64,
}

/// What an append did.
#[derive(Debug, Clone, Copy)]
pub struct AppendInfo {
    pub base_offset: i64,
    pub last_offset: i64,
    /// The LogAppendTime stamped, or -1 under CreateTime.
    pub log_append_time_ms: i64,
    pub records: u64,
}

pub use log::{CheckpointWrite, Log, LogHeaders, Roll, Staged, Staging, Truncation};
