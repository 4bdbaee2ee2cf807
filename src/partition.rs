//! One partition on its owning shard: the log plus the replication-facing offsets.
//!
//! Invariants: `log_start_offset <= high_watermark <= log_end_offset`. With a single replica
//! the high watermark follows the log end after every append. Appends are synchronous, so
//! two mutations of one partition never interleave (single writer).
//!
//! Idempotent producers: each batch carrying a producer id must continue that producer's
//! sequence; a retry of one of its last few batches is answered with the original offsets
//! instead of being written twice. This state lives in memory only for now, so after a
//! restart a producer's next batch is accepted whatever its sequence.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures::channel::oneshot;
use kafka_protocol::ResponseError;

use crate::protocol::errors::storage_error_code;
use crate::runtime::zero_copy::FileSlice;
use crate::storage::batch::BatchHeader;
use crate::storage::{AppendInfo, Log, LogConfig, StorageError};

/// DeleteRecords' offset meaning "up to the high watermark".
const HIGH_WATERMARK: i64 = -1;

/// Batches per producer remembered for answering retries, as Kafka does.
const RECENT_BATCHES_PER_PRODUCER: usize = 5;

/// What a partition knows of one idempotent producer.
struct ProducerState {
    epoch: i16,
    last_sequence: i32,
    /// (first sequence, last sequence, what the append returned), oldest first.
    recent: VecDeque<(i32, i32, AppendInfo)>,
}

pub struct Partition {
    log: Log,
    dir: PathBuf,
    high_watermark: i64,
    leader_epoch: i32,
    /// Fetches parked until this partition gets new data (woken on every append).
    data_waiters: Vec<oneshot::Sender<()>>,
    producers: HashMap<i64, ProducerState>,
}

impl Partition {
    /// Opens (and on an unclean start, recovers) the partition's log in `dir`.
    pub fn open(
        dir: &Path,
        config: LogConfig,
        leader_epoch: i32,
        clean_shutdown: bool,
    ) -> Result<Partition, StorageError> {
        let log = Log::open(dir, config, clean_shutdown)?;
        let high_watermark = log.log_end_offset();
        Ok(Partition {
            log,
            dir: dir.to_path_buf(),
            high_watermark,
            leader_epoch,
            data_waiters: Vec::new(),
            producers: HashMap::new(),
        })
    }

    /// Validates and appends the batches of one produce request, then wakes parked fetches.
    /// A retried idempotent batch is answered with its original offsets and not written.
    pub fn append(&mut self, batches: Bytes, now_ms: i64) -> Result<AppendInfo, ResponseError> {
        let producer = match producer_batch(&batches) {
            Some(Ok(header)) => Some(header),
            Some(Err(error)) => return Err(error),
            None => None,
        };
        if let Some(header) = &producer
            && let Some(original) = self.check_sequence(header)?
        {
            return Ok(original);
        }
        let info = self.log.append(batches, self.leader_epoch, now_ms).map_err(|e| {
            tracing::debug!(dir = %self.dir.display(), error = %e, "append refused");
            storage_error_code(&e)
        })?;
        if let Some(header) = producer {
            self.record_sequence(&header, info);
        }
        // One replica: everything appended is committed.
        self.high_watermark = self.log.log_end_offset();
        debug_assert!(self.high_watermark > info.last_offset);
        for waiter in self.data_waiters.drain(..) {
            let _ = waiter.send(());
        }
        Ok(info)
    }

    /// `Ok(Some(info))` for a retry of a recent batch, `Ok(None)` for the next batch in order.
    fn check_sequence(&self, header: &BatchHeader) -> Result<Option<AppendInfo>, ResponseError> {
        let Some(state) = self.producers.get(&header.producer_id) else {
            return Ok(None);
        };
        let last_sequence = header.base_sequence.wrapping_add(header.last_offset_delta);
        if header.producer_epoch < state.epoch {
            return Err(ResponseError::InvalidProducerEpoch);
        }
        if header.producer_epoch > state.epoch {
            // A new epoch starts its sequence again.
            return if header.base_sequence == 0 { Ok(None) } else { Err(ResponseError::OutOfOrderSequenceNumber) };
        }
        if let Some(&(_, _, info)) =
            state.recent.iter().find(|(first, last, _)| *first == header.base_sequence && *last == last_sequence)
        {
            return Ok(Some(info));
        }
        // Sequences wrap from i32::MAX to 0.
        let expected = if state.last_sequence == i32::MAX { 0 } else { state.last_sequence + 1 };
        if header.base_sequence != expected {
            return Err(ResponseError::OutOfOrderSequenceNumber);
        }
        Ok(None)
    }

    fn record_sequence(&mut self, header: &BatchHeader, info: AppendInfo) {
        let last_sequence = header.base_sequence.wrapping_add(header.last_offset_delta);
        let state = self.producers.entry(header.producer_id).or_insert(ProducerState {
            epoch: header.producer_epoch,
            last_sequence,
            recent: VecDeque::new(),
        });
        if header.producer_epoch != state.epoch {
            state.epoch = header.producer_epoch;
            state.recent.clear();
        }
        state.last_sequence = last_sequence;
        if state.recent.len() == RECENT_BATCHES_PER_PRODUCER {
            state.recent.pop_front();
        }
        state.recent.push_back((header.base_sequence, last_sequence, info));
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
    pub fn delete_records(&mut self, offset: i64) -> Result<i64, ResponseError> {
        let offset = if offset == HIGH_WATERMARK { self.high_watermark } else { offset };
        if !(0..=self.high_watermark).contains(&offset) {
            return Err(ResponseError::OffsetOutOfRange);
        }
        self.log.delete_records(offset).map_err(|e| storage_error_code(&e))
    }

    /// Background upkeep: the time-based flush policy (`flush.ms`), compaction, and when
    /// `check_retention` says so, retention.
    pub fn maintain(&mut self, now_ms: i64, check_retention: bool) -> Result<(), StorageError> {
        self.log.flush_if_due(now_ms)?;
        if check_retention {
            let deleted = self.log.apply_retention(now_ms)?;
            if deleted > 0 {
                tracing::info!(dir = %self.dir.display(), deleted, log_start_offset = self.log_start_offset(), "retention deleted segments");
            }
        }
        self.log.compact_if_due(now_ms)
    }

    /// Bytes of the partition's segments.
    pub fn size(&self) -> u64 {
        self.log.size()
    }

    /// Flushes and checkpoints the log; used on clean shutdown.
    pub fn close(mut self) -> Result<(), StorageError> {
        self.log.close()
    }

    /// Closes the log and removes its directory; used when the topic is deleted.
    pub fn delete(self) -> Result<(), StorageError> {
        let dir = self.dir.clone();
        drop(self);
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }
}

/// The header of an idempotent producer's batch, if `batches` is one. Transactional and
/// control batches are refused until transactions are supported. A request of several
/// batches is checked as a whole only by the log (producers send one batch per partition).
fn producer_batch(batches: &[u8]) -> Option<Result<BatchHeader, ResponseError>> {
    let header = BatchHeader::parse(batches).ok()?;
    if header.is_transactional() || header.is_control() {
        return Some(Err(ResponseError::InvalidRecord));
    }
    (header.has_producer_id() && header.size() == batches.len()).then_some(Ok(header))
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
            delete: true,
            retention_ms: None,
            retention_bytes: None,
            validate_compressed_records: true,
        };
        Partition::open(dir, config, 0, false).unwrap()
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
        assert_eq!(p.append(producer_batch(1, 0, 7, 1, 5), 0).unwrap_err(), ResponseError::OutOfOrderSequenceNumber);
        assert_eq!(p.append(producer_batch(1, 0, 7, 0, 3), 0).unwrap_err(), ResponseError::InvalidProducerEpoch);
        assert_eq!(p.append(producer_batch(1, 0, 7, 2, 0), 0).unwrap().base_offset, 3);
        // Batches without a producer id are never checked.
        assert_eq!(p.append(batch(1, 0), 0).unwrap().base_offset, 4);
    }
}
