//! One partition on its owning shard: the log plus the replication-facing offsets.
//!
//! Invariants: `log_start_offset <= high_watermark <= log_end_offset`. With a single replica
//! the high watermark follows the log end after every append. Appends are synchronous, so
//! two mutations of one partition never interleave (single writer).
//!
//! Idempotent producers: each batch carrying a producer id must continue that producer's
//! sequence; a retry of one of its last few batches is answered with the original offsets
//! instead of being written twice. That state ([`ProducerStates`]) is snapshotted when the log
//! rolls and at close, and rebuilt from the log after a crash, so it survives restarts.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures::channel::oneshot;

use crate::runtime::zero_copy::FileSlice;
use crate::storage::batch::BatchHeader;
use crate::storage::fs::FileSystem;
use crate::storage::producer_state::{Checked, ProducerExpiry, ProducerStates, SequenceError};
use crate::storage::{AppendInfo, Log, LogConfig, StorageError};

/// Why an operation on a partition failed. Kafka's error codes come from it at the handler edge
/// (`protocol::errors::partition_error_code`), nowhere else.
#[derive(Debug, thiserror::Error)]
pub enum PartitionError {
    /// The partition's owner does not have it (its topic was deleted meanwhile).
    #[error("unknown partition")]
    Unknown,
    /// The partition failed to open at startup; it stays offline until a restart.
    #[error("partition offline")]
    Offline,
    /// The log refused the operation (validation) or failed (I/O).
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// An idempotent producer's batch does not continue its sequence.
    #[error(transparent)]
    Sequence(#[from] SequenceError),
    /// Transactional and control batches are refused until transactions are supported.
    #[error("transactional and control batches are not supported")]
    Transactional,
    /// DeleteRecords to an offset outside `[0, high_watermark]`.
    #[error("offset {offset} outside [0, {high_watermark}]")]
    BeyondHighWatermark { offset: i64, high_watermark: i64 },
}

/// DeleteRecords' offset meaning "up to the high watermark".
const HIGH_WATERMARK: i64 = -1;

pub struct Partition {
    log: Log,
    dir: PathBuf,
    high_watermark: i64,
    leader_epoch: i32,
    /// Fetches parked until this partition gets new data (woken on every append).
    data_waiters: Vec<oneshot::Sender<()>>,
    producers: ProducerStates,
}

impl Partition {
    /// Opens (and on an unclean start, recovers) the partition's log in `dir`, and its
    /// producers' state.
    pub fn open(
        fs: &Arc<dyn FileSystem>,
        dir: &Path,
        config: LogConfig,
        expiry: ProducerExpiry,
        leader_epoch: i32,
        clean_shutdown: bool,
    ) -> Result<Partition, StorageError> {
        let log = Log::open(fs, dir, config, clean_shutdown)?;
        let producers = ProducerStates::load(dir, &log, expiry, crate::runtime::now_ms())?;
        let high_watermark = log.log_end_offset();
        Ok(Partition { log, dir: dir.to_path_buf(), high_watermark, leader_epoch, data_waiters: Vec::new(), producers })
    }

    /// Validates and appends the batches of one produce request, then wakes parked fetches.
    /// A retried idempotent batch is answered with its original offsets and not written.
    pub fn append(&mut self, batches: Bytes, now_ms: i64) -> Result<AppendInfo, PartitionError> {
        let headers = batch_headers(&batches)?;
        if let Checked::Duplicate(original) = self.producers.check(&headers)? {
            return Ok(original);
        }
        let active_segment = self.log.active_base_offset();
        let info = self.log.append(batches, self.leader_epoch, now_ms).inspect_err(|e| {
            tracing::debug!(dir = %self.dir.display(), error = %e, "append refused");
        })?;
        if self.log.active_base_offset() != active_segment {
            // The log rolled before writing these batches: the state so far is the state at the
            // new segment's base.
            if let Err(e) = self.producers.write_snapshot(self.log.active_base_offset()) {
                tracing::warn!(dir = %self.dir.display(), error = %e, "writing a producer snapshot");
            }
        }
        self.producers.record(&headers, &info, now_ms);
        // One replica: everything appended is committed.
        self.high_watermark = self.log.log_end_offset();
        debug_assert!(self.high_watermark > info.last_offset);
        for waiter in self.data_waiters.drain(..) {
            let _ = waiter.send(());
        }
        Ok(info)
    }

    /// Whole batches from `offset`, up to `max_bytes` (at least one batch), below the high
    /// watermark.
    pub fn read(&self, offset: i64, max_bytes: usize) -> Result<Bytes, StorageError> {
        self.log.read(offset, max_bytes, self.high_watermark)
    }

    /// The batches [`Partition::read`] would return, as a file range to send without a copy.
    pub fn read_slice(&self, offset: i64, max_bytes: usize) -> Result<Option<FileSlice>, StorageError> {
        self.log.read_slice(offset, max_bytes, self.high_watermark)
    }

    /// A receiver that fires on the next append.
    pub fn wait_for_data(&mut self) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        // Drop waiters whose fetch already gave up, so the list stays bounded by live fetches.
        self.data_waiters.retain(|w| !w.is_canceled());
        self.data_waiters.push(tx);
        rx
    }

    pub fn offset_for_timestamp(&self, timestamp_ms: i64) -> Result<Option<(i64, i64)>, StorageError> {
        self.log.offset_for_timestamp(timestamp_ms)
    }

    pub fn max_timestamp_offset(&self) -> Result<Option<(i64, i64)>, StorageError> {
        self.log.max_timestamp_offset()
    }

    pub fn log_start_offset(&self) -> i64 {
        self.log.log_start_offset()
    }

    pub fn log_end_offset(&self) -> i64 {
        self.log.log_end_offset()
    }

    pub fn high_watermark(&self) -> i64 {
        self.high_watermark
    }

    pub fn leader_epoch(&self) -> i32 {
        self.leader_epoch
    }

    /// Moves the log start offset to `offset` (DeleteRecords; -1 means the high watermark)
    /// and returns the new log start offset. Offsets past the high watermark are refused.
    pub fn delete_records(&mut self, offset: i64) -> Result<i64, PartitionError> {
        let offset = if offset == HIGH_WATERMARK { self.high_watermark } else { offset };
        if !(0..=self.high_watermark).contains(&offset) {
            return Err(PartitionError::BeyondHighWatermark { offset, high_watermark: self.high_watermark });
        }
        Ok(self.log.delete_records(offset)?)
    }

    /// Background upkeep: the time-based flush policy (`flush.ms`), compaction,
    /// `producer.id.expiration.ms`, and when `check_retention` says so, retention.
    pub fn maintain(&mut self, now_ms: i64, check_retention: bool) -> Result<(), StorageError> {
        self.producers.expire_if_due(now_ms);
        self.log.flush_if_due(now_ms)?;
        if check_retention {
            let deleted = self.log.apply_retention(now_ms)?;
            if deleted > 0 {
                tracing::info!(dir = %self.dir.display(), deleted, log_start_offset = self.log_start_offset(), "retention deleted segments");
            }
        }
        self.log.compact_if_due(now_ms)
    }

    /// New topic configs, in force from the next append, read or upkeep pass.
    pub fn set_config(&mut self, config: LogConfig) {
        self.log.set_config(config);
    }

    /// The idempotent producers this partition remembers (DescribeProducers).
    pub fn active_producers(&self) -> Vec<crate::storage::producer_state::ActiveProducer> {
        self.producers.active()
    }

    /// Bytes of the partition's segments.
    pub fn size(&self) -> u64 {
        self.log.size()
    }

    /// Flushes and checkpoints the log and snapshots its producers; used on clean shutdown.
    pub fn close(mut self) -> Result<(), StorageError> {
        self.log.close()?;
        self.producers.write_snapshot(self.log.log_end_offset())
    }

    /// Closes the log and removes its directory; used when the topic is deleted.
    pub fn delete(self) -> Result<(), StorageError> {
        let (dir, fs) = (self.dir.clone(), self.log.file_system());
        drop(self);
        fs.remove_dir_all(&dir)?;
        Ok(())
    }
}

/// The headers of every batch of a request, for the producer checks. Transactional and
/// control batches are refused until transactions are supported. A request whose batches do
/// not even parse gives no headers: the log refuses it with the precise error.
fn batch_headers(mut batches: &[u8]) -> Result<Vec<BatchHeader>, PartitionError> {
    let mut headers = Vec::with_capacity(1);
    while !batches.is_empty() {
        let Some(header) = BatchHeader::parse(batches).ok().filter(|h| h.size() <= batches.len()) else {
            return Ok(Vec::new());
        };
        if header.is_transactional() || header.is_control() {
            return Err(PartitionError::Transactional);
        }
        headers.push(header);
        batches = &batches[header.size()..];
    }
    Ok(headers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::TimestampType;
    use crate::storage::batch::tests::{batch, producer_batch};

    fn partition(dir: &Path) -> Partition {
        let config = LogConfig {
            segment_bytes: 1 << 20,
            segment_ms: i64::MAX,
            index_interval_bytes: 4096,
            max_message_bytes: 1 << 20,
            timestamp_type: TimestampType::CreateTime,
            flush_messages: None,
            flush_ms: None,
            compact: false,
            delete_retention_ms: 86_400_000,
            delete: true,
            retention_ms: None,
            retention_bytes: None,
            validate_compressed_records: true,
            timestamp_before_max_ms: i64::MAX,
            timestamp_after_max_ms: i64::MAX,
        };
        let expiry = ProducerExpiry { expiration_ms: i64::MAX, check_interval_ms: 1000 };
        Partition::open(&crate::storage::fs::os(), dir, config, expiry, 0, false).unwrap()
    }

    #[test]
    fn a_retried_batch_is_not_written_twice() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = partition(dir.path());
        let first = p.append(producer_batch(3, 0, 7, 0, 0), 0).unwrap();
        let retry = p.append(producer_batch(3, 0, 7, 0, 0), 0).unwrap();
        assert_eq!((retry.base_offset, retry.last_offset), (first.base_offset, first.last_offset));
        assert_eq!(p.log_end_offset(), 3);
        assert_eq!(p.append(producer_batch(2, 0, 7, 0, 3), 0).unwrap().base_offset, 3);
        assert_eq!(p.high_watermark(), 5);
    }

    #[test]
    fn sequence_gaps_and_stale_epochs_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = partition(dir.path());
        p.append(producer_batch(3, 0, 7, 1, 0), 0).unwrap();
        let refused = p.append(producer_batch(1, 0, 7, 1, 5), 0).unwrap_err();
        assert!(matches!(refused, PartitionError::Sequence(SequenceError::OutOfOrder)), "{refused:?}");
        let refused = p.append(producer_batch(1, 0, 7, 0, 3), 0).unwrap_err();
        assert!(matches!(refused, PartitionError::Sequence(SequenceError::StaleEpoch)), "{refused:?}");
        assert_eq!(p.append(producer_batch(1, 0, 7, 2, 0), 0).unwrap().base_offset, 3);
        // Batches without a producer id are never checked.
        assert_eq!(p.append(batch(1, 0), 0).unwrap().base_offset, 4);
    }
}
