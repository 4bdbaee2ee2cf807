//! One partition on its owning shard: the log plus the replication-facing offsets.
//!
//! Invariants: `log_start_offset <= high_watermark <= log_end_offset`. With a single replica
//! the high watermark follows the log end after every append. Appends are synchronous, so
//! two mutations of one partition never interleave (single writer).

use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures::channel::oneshot;

use crate::storage::{AppendInfo, Log, LogConfig, StorageError};

pub struct Partition {
    log: Log,
    dir: PathBuf,
    high_watermark: i64,
    leader_epoch: i32,
    /// Fetches parked until this partition gets new data (woken on every append).
    data_waiters: Vec<oneshot::Sender<()>>,
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
        })
    }

    /// Validates and appends the batches of one produce request, then wakes parked fetches.
    pub fn append(&mut self, batches: Bytes, now_ms: i64) -> Result<AppendInfo, StorageError> {
        let info = self.log.append(batches, self.leader_epoch, now_ms)?;
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

    /// A receiver that fires on the next append.
    pub fn wait_for_data(&mut self) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        // Drop waiters whose fetch already gave up, so the list stays bounded by live fetches.
        self.data_waiters.retain(|w| !w.is_canceled());
        self.data_waiters.push(tx);
        rx
    }

    pub fn offset_for_timestamp(
        &self,
        timestamp_ms: i64,
    ) -> Result<Option<(i64, i64)>, StorageError> {
        self.log.offset_for_timestamp(timestamp_ms)
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
