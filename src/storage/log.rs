//! A partition's log: its segments in offset order, the append path, reads, flush policy and
//! recovery.
//!
//! Invariants: segments are sorted by base offset and contiguous (each starts where the last
//! ended); only the last one is written to; `log_end_offset` is the last segment's
//! `next_offset`; `recovery_point <= log_end_offset`, and everything below it was fsynced;
//! `first segment's base_offset <= log_start_offset <= log_end_offset`.
//!
//! A segment's life: created empty as the active segment (at open, or when the active one
//! rolls at `segment.bytes` / `segment.ms`, see [`Roll`]); written until it rolls, then
//! fsynced and closed (read-only, compacted in place under `cleanup.policy=compact`); deleted
//! whole from the head of the log by retention (`retention.ms` / `retention.bytes` under
//! `cleanup.policy=delete`) or once DeleteRecords moved the log start offset past it. The
//! active segment is never deleted. Deletion from the head drops the segment at once and
//! renames its files to `.deleted` later, on a helper thread ([`Log::take_deleted`]; a close
//! does what is left), leaving the unlinking to [`super::deleter`]. A follower may cut the
//! tail ([`Truncation`]), or empty the log and start it again past its end
//! ([`RestartAt`]); a log whose start is past the end of its segments opens empty at its start.
//!
//! Each leader epoch's first offset is kept in the leader-epoch cache ([`LeaderEpochCache`]),
//! cut with the log at either end.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use super::batch::{self, BatchHeader, HEADER_LEN, Stamp};
use super::fs::{Claimed, DirClaim, FileSystem, IoFuture, Opened};
use super::leader_epoch::LeaderEpochCache;
use super::producer_state::BatchHeaders;
use super::segment::{Check, FailedWrite, SEGMENT_BYTES_LIMIT, Sealed, Segment, SegmentCut, Tail};
use super::{AppendInfo, LogConfig, StorageError, TimestampType, Wait};
use super::{compaction, deleter};
use crate::runtime::zero_copy::FileSlice;

/// File holding the offset below which everything is known to be on disk.
const RECOVERY_POINT_FILE: &str = "recovery-point";
/// File holding the log start offset, written when DeleteRecords moves it; retention moves it
/// only to a segment's base, which the segment files themselves record.
const LOG_START_OFFSET_FILE: &str = "log-start-offset";

/// What [`Log::stage`] did with an append.
pub enum Staging {
    /// Stamped into the [`Staged`] write.
    Staged,
    /// It does not fit beside the appends staged already: write those first.
    WriteFirst,
    /// The active segment must roll first ([`Log::begin_roll`]); then stage it again.
    RollFirst,
    /// The leader-epoch checkpoint must be written first ([`Log::begin_checkpoint`]): it lacks
    /// an epoch assigned in memory, or the append's own (this epoch from this offset, which
    /// enters the cache once the file holds it); then stage it again.
    CheckpointFirst(Option<(i32, i64)>),
}

/// Making the active segment durable up to its end: its `.log` fdatasync on the shard's ring,
/// then on a helper thread its index entries, the recovery point, and what follows (`T`), so
/// that it never blocks the shard on the disk nor makes a file-system call on its thread.
pub struct Seal<T> {
    sync: Option<IoFuture>,
    seal: Option<Box<dyn FnOnce() -> Result<T, StorageError> + Send>>,
    /// What the helper thread made, once it ran.
    made: Option<T>,
    closing_end: i64,
    /// How many entries each index file holds once sealed (`None`: it had them all).
    entries: [Option<usize>; 2],
}

impl<T: Send + 'static> Seal<T> {
    /// Syncs the `.log`, then runs the helper thread's part.
    pub async fn run(&mut self) -> Result<(), StorageError> {
        self.sync.take().expect("a seal runs once").await?;
        let seal = self.seal.take().expect("a seal runs once");
        self.made = Some(crate::runtime::file::run_blocking(seal).await?);
        Ok(())
    }
}

/// Closing the active segment ([`Log::begin_roll`]): the seal then creates the next segment's
/// files (with their directory entry synced; its `.log` opened there and handed over). The
/// closing segment is durable before the next one exists: recovery relies on it.
pub type Roll = Seal<Opened>;

/// Closing the log at clean shutdown ([`Log::begin_close`]): the seal also renames away the
/// files of segments deleted from the head, so that none comes back at the next open.
pub type Close = Seal<()>;

/// Emptying the log to start it again at an offset past its end (Kafka's
/// `truncateFullyAndStartAt`: a follower whose log ends below its leader's log start): the
/// files are done on a helper thread ([`RestartAt::run`]), then [`Log::finish_restart_at`]
/// swaps the segments on the shard, making no open call.
///
/// Crash-safe, as Kafka's log loading: the `log-start-offset` file is written first, and a log
/// whose start file is past the end of its segments opens restarted there (see [`Log::open`]);
/// then the leader-epoch checkpoint is emptied, the producer snapshots removed, the recovery
/// point moved to the new start, and the new segment's files created. The old segments' files are
/// renamed away last, off the shard's thread as those deleted from the head
/// ([`Log::take_deleted`]; a log opened with segments wholly below its start drops them).
pub struct RestartAt {
    offset: i64,
    work: Option<Box<dyn FnOnce() -> Result<Opened, StorageError> + Send>>,
    /// The new segment's `.log`, opened by the helper thread that created it.
    log: Option<Opened>,
}

impl RestartAt {
    /// Writes the new start and creates the new segment's files, on a helper thread.
    pub async fn run(&mut self) -> Result<(), StorageError> {
        let work = self.work.take().expect("a restart runs once");
        self.log = Some(crate::runtime::file::run_blocking(work).await?);
        Ok(())
    }
}

/// Where a truncation cuts ([`Log::plan_truncation`]): `None` when the log ends at or below
/// the offset asked for (only the leader-epoch cache may change).
pub struct TruncationPlan {
    cut: Option<i64>,
    /// How the last segment kept is cut, if it reaches the cut.
    segment: Option<SegmentCut>,
}

/// A follower's cut of its log's tail, in steps that never block the shard on the disk: the
/// shard plans it reading only through the page cache ([`Log::plan_truncation`]); a helper
/// thread brings the recovery point down to the cut ([`Log::recovery_point_write`]); the shard
/// then cuts the log in memory ([`Log::begin_truncate`]), so that nothing reads what is being
/// cut; a helper thread does the files ([`Truncation::run`]); the leader-epoch checkpoint,
/// which was cut in memory, is written last ([`Log::begin_checkpoint`]).
///
/// Crash-safe: the recovery point comes down first (durably), so that recovery checks
/// everything from the cut on; segments go from the last one back, each rename synced, so a
/// crash leaves a prefix of the log; the cut segment is synced; the checkpoint is written last
/// (one left ahead of the log is cut at open). A failed recovery-point write changes nothing;
/// a failed [`Truncation::run`] leaves the log cut in memory and maybe not on disk, so the
/// caller must append nothing more to it until a reopen.
pub struct Truncation {
    work: Option<Box<dyn FnOnce() -> Result<(), StorageError> + Send>>,
}

impl Truncation {
    /// Renames the segments past the cut away and cuts the last one kept, on a helper thread.
    pub async fn run(&mut self) -> Result<(), StorageError> {
        let work = self.work.take().expect("a truncation runs once");
        crate::runtime::file::run_blocking(work).await
    }
}

/// Batch bodies (all but the header) at least this long are written from the request's own
/// bytes; shorter ones are copied beside the stamped headers, where a piece of their own would
/// cost the kernel more than the copy. So a write of `n` bytes has at most
/// `2 * n / BORROWED_BODY_BYTES_MIN + 1` pieces.
const BORROWED_BODY_BYTES_MIN: usize = 4096;

/// Room first set aside for the stamped headers and short bodies of one write.
const COPIED_BYTES_INITIAL: usize = 64 * 1024;

/// The leader-epoch checkpoint written on a helper thread (its two fsyncs and rename never on
/// the shard's), before the first batch of a new epoch is written.
pub struct CheckpointWrite {
    write: Option<Box<dyn FnOnce() -> std::io::Result<()> + Send>>,
    /// The epochs assigned in memory when it was taken: the file holds those once written...
    assigned: u64,
    /// ...and this epoch from this offset, which enters the cache once the file holds it.
    assign: Option<(i32, i64)>,
}

impl CheckpointWrite {
    /// Writes the file (atomically and durably), on a helper thread.
    pub async fn run(&mut self) -> Result<(), StorageError> {
        let write = self.write.take().expect("a checkpoint write runs once");
        Ok(crate::runtime::file::run_blocking(write).await?)
    }
}

/// Appends stamped for one write at the end of the active segment ([`Log::stage`]), in the
/// order they were staged: their bytes as pieces written one after the other (each batch's
/// stamped header, then its records: sliced from the request, not copied, unless short), each
/// append's offsets and each batch's stamped header.
pub struct Staged {
    /// The write so far, in order; `copied` follows them.
    pieces: Vec<Bytes>,
    /// Stamped headers and short bodies after the last piece.
    copied: BytesMut,
    len: usize,
    appends: Vec<AppendInfo>,
    /// Each stamped batch header with its max timestamp, in order.
    stamped: Vec<(BatchHeader, i64)>,
}

impl Staged {
    /// For a write of about `bytes` bytes of batches.
    pub fn with_capacity(bytes: usize) -> Staged {
        Staged {
            pieces: Vec::new(),
            copied: BytesMut::with_capacity(bytes.min(COPIED_BYTES_INITIAL)),
            len: 0,
            appends: Vec::new(),
            stamped: Vec::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.appends.is_empty()
    }

    /// Bytes staged.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Offsets staged.
    fn offsets(&self) -> i64 {
        self.appends.iter().map(|a| a.last_offset + 1 - a.base_offset).sum()
    }

    /// Adds `batch` (validated, whole, a slice of `request`) with `header` in place of its own.
    fn push_batch(&mut self, request: &Bytes, batch: std::ops::Range<usize>, header: &[u8; HEADER_LEN]) {
        self.copied.extend_from_slice(header);
        let body = batch.start + HEADER_LEN..batch.end;
        if body.len() >= BORROWED_BODY_BYTES_MIN {
            self.seal_copied();
            self.pieces.push(request.slice(body));
        } else {
            self.copied.extend_from_slice(&request[body]);
        }
        self.len += batch.len();
    }

    /// Adds whole batches written as they are (a follower's, fetched from its leader): one
    /// piece, no copy.
    fn push_as_is(&mut self, batches: Bytes) {
        self.seal_copied();
        self.len += batches.len();
        self.pieces.push(batches);
    }

    /// Ends the copied run: it becomes a piece (sharing its buffer with the next run).
    fn seal_copied(&mut self) {
        if !self.copied.is_empty() {
            self.pieces.push(self.copied.split().freeze());
        }
    }

    /// The pieces to write, in order.
    fn into_pieces(mut self) -> (Vec<Bytes>, Vec<AppendInfo>, Vec<(BatchHeader, i64)>) {
        self.seal_copied();
        (self.pieces, self.appends, self.stamped)
    }
}

/// A write of [`Staged`] appends in flight: what [`Log::finish_write`] needs to take them in.
pub struct PendingWrite {
    appends: Vec<AppendInfo>,
    stamped: Vec<(BatchHeader, i64)>,
    segment_base_offset: i64,
}

pub struct Log {
    fs: Arc<dyn FileSystem>,
    dir: PathBuf,
    config: LogConfig,
    segments: Vec<Segment>,
    /// The first offset readable; everything below was deleted by retention or DeleteRecords.
    log_start_offset: i64,
    recovery_point: i64,
    /// Records appended since the last fsync was started; drives `flush.messages`.
    messages_since_flush: u64,
    last_flush_ms: i64,
    /// Set between [`Log::write_staged`] and [`Log::finish_write`].
    write_in_flight: bool,
    /// Closed segments at the last compaction; a pass runs only once another has closed...
    compacted_segments: usize,
    /// ...or once the earliest delete horizon of the tombstones compaction kept has passed.
    tombstones_due_ms: Option<i64>,
    /// Where each leader epoch's batches start (`leader-epoch-checkpoint`).
    epochs: LeaderEpochCache,
    /// Changes to the cache in memory so far (epochs assigned, truncations that cut it), and
    /// how many of them the checkpoint holds: a batch is written only while they are equal
    /// (see [`Log::begin_checkpoint`]).
    epochs_assigned: u64,
    epochs_written: u64,
    /// Closed segments when the compaction in flight (on a helper thread) began.
    compacting: Option<usize>,
    /// Segments deleted while a compaction was in flight: their files are renamed away once it
    /// is done, since it may be rewriting them.
    deleted_meanwhile: Vec<Segment>,
    /// Files of segments deleted from the head whose renames to `.deleted` are still to be
    /// done, off the shard's thread ([`Log::take_deleted`]; [`Log::begin_close`] does what is
    /// left). Their base offsets are below the log start, and no file is ever created there, so
    /// a pending rename never meets a new file of the same name.
    deleted_files: Vec<PathBuf>,
    /// Whether the directory is still this log's, for work on helper threads.
    claim: DirClaim,
}

/// A log opened on a helper thread, as plain data that can cross threads (its files closed),
/// for its owner to take in with [`Log::attach`].
pub struct Detached {
    dir: PathBuf,
    config: LogConfig,
    segments: Vec<Sealed>,
    log_start_offset: i64,
    recovery_point: i64,
    last_flush_ms: i64,
    epochs: LeaderEpochCache,
}

impl Log {
    /// The log as plain data, for another thread: only a log that nothing is under way on
    /// (just opened).
    pub fn detach(self) -> Detached {
        assert!(
            !self.write_in_flight && self.compacting.is_none() && self.deleted_files.is_empty(),
            "a log is detached only at rest"
        );
        Detached {
            dir: self.dir,
            config: self.config,
            segments: self.segments.into_iter().map(Segment::detach).collect(),
            log_start_offset: self.log_start_offset,
            recovery_point: self.recovery_point,
            last_flush_ms: self.last_flush_ms,
            epochs: self.epochs,
        }
    }

    /// The log that [`Log::detach`] made plain data of, its segments' files opened again.
    pub fn attach(fs: &Arc<dyn FileSystem>, detached: Detached) -> Result<Log, StorageError> {
        let Detached { dir, config, segments, log_start_offset, recovery_point, last_flush_ms, epochs } = detached;
        let segments = segments.into_iter().map(|s| Segment::attach(fs, &dir, s)).collect();
        Ok(Log {
            fs: fs.clone(),
            dir,
            config,
            segments,
            log_start_offset,
            recovery_point,
            messages_since_flush: 0,
            last_flush_ms,
            write_in_flight: false,
            compacted_segments: 0,
            tombstones_due_ms: None,
            epochs,
            epochs_assigned: 0,
            epochs_written: 0,
            compacting: None,
            deleted_meanwhile: Vec::new(),
            deleted_files: Vec::new(),
            claim: DirClaim::default(),
        })
    }

    /// Opens the log in `dir` (created if missing). After an unclean shutdown every segment from
    /// the one holding the recovery point is CRC-checked, a torn tail truncated and the
    /// indexes rebuilt; after a clean one only the last batches of each segment are read.
    pub fn open(
        fs: &Arc<dyn FileSystem>,
        dir: &Path,
        config: LogConfig,
        clean_shutdown: bool,
    ) -> Result<Log, StorageError> {
        let names = match fs.list_dir(dir) {
            Ok(names) => names,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                fs.create_dir_all(dir)?;
                // The new directory's entry must outlive a crash, or so would not its records.
                fs.sync_dir(dir.parent().unwrap_or(Path::new(".")))?;
                Vec::new()
            }
            Err(e) => return Err(e.into()),
        };
        let now = crate::runtime::now_ms();
        let recovery_point = read_offset_file(&**fs, dir, RECOVERY_POINT_FILE);
        let mut bases = segment_bases(fs, dir, &names)?;
        bases.sort_unstable();
        let index_interval = u64::from(config.index_interval_bytes);
        let mut segments: Vec<Segment> = Vec::with_capacity(bases.len().max(1));
        for (i, &base) in bases.iter().enumerate() {
            // The segment holding the recovery point starts at or below it, and the next one above.
            let above_recovery_point = bases.get(i + 1).is_none_or(|&next| next > recovery_point);
            let check = if clean_shutdown || !above_recovery_point { Check::Tail } else { Check::Full };
            let tail = if i + 1 == bases.len() { Tail::MayTruncate } else { Tail::MustBeWhole };
            let segment = Segment::open(fs, dir, base, check, tail, index_interval, now)?;
            // Compaction leaves gaps between segments; overlapping ones cannot be trusted.
            if let Some(previous) = segments.last()
                && previous.next_offset > segment.base_offset
            {
                tracing::warn!(dir = %dir.display(), base, "dropping segments that overlap the one before");
                for &later in &bases[i..] {
                    delete_segment_files(&**fs, dir, later)?;
                }
                break;
            }
            segments.push(segment);
        }
        let log_start_offset = read_offset_file(&**fs, dir, LOG_START_OFFSET_FILE);
        if segments.last().is_some_and(|last| last.next_offset < log_start_offset) {
            // A restart past the end (`Log::begin_restart_at`) that a crash interrupted, or
            // files lost: as Kafka's log loading, the log starts again empty at its start.
            tracing::warn!(dir = %dir.display(), log_start_offset, "every segment ends below the log start; starting the log there");
            for segment in segments.drain(..) {
                segment.delete()?;
            }
            LeaderEpochCache::empty(dir).write(&**fs)?;
            super::producer_state::remove_snapshots(&**fs, dir)?;
        }
        if segments.is_empty() {
            segments.push(Segment::create(fs, dir, log_start_offset, now)?);
        }
        // Segments wholly below the log start (a crash before their deletion) go.
        let below = segments[1..].partition_point(|s| s.base_offset <= log_start_offset);
        for segment in segments.drain(..below) {
            segment.delete()?;
        }
        let mut log = Log {
            fs: fs.clone(),
            dir: dir.to_path_buf(),
            config,
            segments,
            log_start_offset: 0,
            recovery_point: 0,
            messages_since_flush: 0,
            last_flush_ms: now,
            write_in_flight: false,
            compacted_segments: 0,
            tombstones_due_ms: None,
            epochs: LeaderEpochCache::empty(dir),
            epochs_assigned: 0,
            epochs_written: 0,
            compacting: None,
            deleted_meanwhile: Vec::new(),
            deleted_files: Vec::new(),
            claim: DirClaim::default(),
        };
        log.recovery_point = recovery_point.min(log.log_end_offset());
        let first_base = log.segments[0].base_offset;
        log.log_start_offset = log_start_offset.max(first_base).min(log.log_end_offset());
        log.epochs = log.recover_epochs(clean_shutdown)?;
        Ok(log)
    }

    /// The leader-epoch cache as the checkpoint holds it, cut to the log (a crash may have cut
    /// the tail its last entries started in); after an unclean shutdown, the entries from the
    /// recovery point on are redone from the batches there. A missing or unreadable checkpoint is rebuilt
    /// from every batch. The checkpoint is rewritten if that changed anything; if that write
    /// fails, the next open does the same again.
    fn recover_epochs(&self, clean_shutdown: bool) -> Result<LeaderEpochCache, StorageError> {
        let (mut epochs, scan_from, mut changed) = match LeaderEpochCache::load(&*self.fs, &self.dir) {
            Some(epochs) => (epochs, (!clean_shutdown).then_some(self.recovery_point), false),
            None => (LeaderEpochCache::empty(&self.dir), Some(self.log_start_offset), true),
        };
        if let Some(offset) = scan_from {
            // As Kafka's recovery: what the cache says from there on is redone from the
            // batches (assigning an epoch from the middle of its run would cut the entries
            // after it).
            changed |= epochs.truncate_from_end(offset);
            self.scan_headers(offset, |h| changed |= epochs.assign(h.partition_leader_epoch, h.base_offset))?;
        }
        changed |= epochs.truncate_from_end(self.log_end_offset());
        changed |= epochs.truncate_from_start(self.log_start_offset);
        if changed && let Err(e) = epochs.write(&*self.fs) {
            tracing::warn!(dir = %self.dir.display(), error = %e, "writing the leader-epoch checkpoint");
        }
        Ok(epochs)
    }

    /// Validates every batch of `batches` (all or nothing); unless it must wait
    /// ([`Staging::RollFirst`], [`Staging::WriteFirst`]), assigns offsets after the log end
    /// and the appends staged before it, stamps the leader epoch (and LogAppendTime when
    /// configured), and adds the stamped batches to `staged`. Nothing is visible (log end,
    /// indexes, reads) until [`Log::finish_write`] gets the write's outcome; no append may be
    /// staged while a write is in flight.
    pub fn stage(
        &mut self,
        staged: &mut Staged,
        batches: &Bytes,
        leader_epoch: i32,
        now_ms: i64,
    ) -> Result<Staging, StorageError> {
        assert!(!self.write_in_flight, "appends to one log never interleave");
        let rules = batch::Validation {
            max_batch_bytes: self.config.max_message_bytes,
            compressed_records: self.config.validate_compressed_records,
            keys_required: self.config.compact,
            timestamps: (self.config.timestamp_type == TimestampType::CreateTime).then(|| {
                let earliest = now_ms.saturating_sub(self.config.timestamp_before_max_ms);
                (earliest, now_ms.saturating_add(self.config.timestamp_after_max_ms))
            }),
        };
        let parsed = batch::validate_all(batches, &rules)?;
        let offsets: i64 = parsed.iter().map(|(_, h)| h.offset_count()).sum();
        if !self.fits((staged.len() + batches.len()) as u64, staged.offsets() + offsets, now_ms) {
            if !staged.is_empty() {
                // The staged appends fitted without this one: they go to this segment.
                return Ok(Staging::WriteFirst);
            }
            // An append alone in an empty segment is written there, whatever its size.
            if !self.active().is_empty() {
                return Ok(Staging::RollFirst);
            }
        }

        let log_append_time = (self.config.timestamp_type == TimestampType::LogAppendTime).then_some(now_ms);
        let base_offset = staged.appends.last().map_or(self.log_end_offset(), |a| a.last_offset + 1);
        if staged.is_empty() {
            let assign = self.epochs.assigns(leader_epoch, base_offset).then_some((leader_epoch, base_offset));
            if assign.is_some() || self.epochs_assigned != self.epochs_written {
                return Ok(Staging::CheckpointFirst(assign));
            }
        } else if self.latest_epoch() != Some(leader_epoch) {
            // The cache takes an epoch from an offset at the log end, not one that a failed
            // write may never reach: the new epoch starts the next write.
            return Ok(Staging::WriteFirst);
        }
        let mut next_offset = base_offset;
        let mut records = 0u64;
        // Each batch is written as its stamped header followed by its untouched records.
        for (position, header) in &parsed {
            let range = *position..*position + header.size();
            let batch = &batches[range.clone()];
            let stamp = Stamp {
                base_offset: next_offset,
                leader_epoch,
                log_append_time_ms: log_append_time,
                attributes: header.attributes,
                max_timestamp: header.max_timestamp,
            };
            staged.push_batch(batches, range, &batch::stamped_header(batch, &stamp));
            let mut header = *header;
            header.base_offset = next_offset;
            staged.stamped.push((header, log_append_time.unwrap_or(header.max_timestamp)));
            next_offset += header.offset_count();
            records += header.records_count as u64;
        }
        staged.appends.push(AppendInfo {
            base_offset,
            last_offset: next_offset - 1,
            log_append_time_ms: log_append_time.unwrap_or(-1),
            records,
        });
        Ok(Staging::Staged)
    }

    /// A follower's append: stages batches fetched from the leader as they are, keeping their
    /// offsets, leader epochs and timestamps (nothing is stamped; Kafka's `appendAsFollower`).
    /// Every batch's length and CRC are checked, and offsets must increase from the log end
    /// (compaction on the leader may leave gaps). All batches must carry one leader epoch (the
    /// caller splits a fetched range where it changes): a newer one than the cache's enters it
    /// at the first batch's offset before anything is written (once the checkpoint holds it,
    /// [`Staging::CheckpointFirst`]), and starts a write of its own.
    pub fn stage_replica(
        &mut self,
        staged: &mut Staged,
        batches: &Bytes,
        now_ms: i64,
    ) -> Result<Staging, StorageError> {
        assert!(!self.write_in_flight, "appends to one log never interleave");
        let mut parsed = Vec::new();
        let mut next_offset = staged.appends.last().map_or(self.log_end_offset(), |a| a.last_offset + 1);
        let mut position = 0;
        while position < batches.len() {
            let header = BatchHeader::parse(&batches[position..])?;
            let end = position.checked_add(header.size()).filter(|&end| end <= batches.len());
            let Some(end) = end else {
                return Err(StorageError::CorruptBatch("a replicated batch runs past its records".into()));
            };
            let header = batch::validate(&batches[position..end])?;
            if header.base_offset < next_offset {
                return Err(StorageError::CorruptBatch(format!(
                    "replicated batch at offset {} does not follow offset {}",
                    header.base_offset,
                    next_offset - 1
                )));
            }
            if parsed.first().is_some_and(|(_, first): &(usize, BatchHeader)| {
                first.partition_leader_epoch != header.partition_leader_epoch
            }) {
                return Err(StorageError::CorruptBatch("one replicated append, several leader epochs".into()));
            }
            next_offset = header.last_offset() + 1;
            parsed.push((position, header));
            position = end;
        }
        let (Some((_, first)), Some((_, last))) = (parsed.first(), parsed.last()) else {
            return Err(StorageError::CorruptBatch("no replicated batch".into()));
        };
        let (base_offset, last_offset, epoch) = (first.base_offset, last.last_offset(), first.partition_leader_epoch);
        let offsets = last_offset + 1 - staged.appends.last().map_or(self.log_end_offset(), |a| a.last_offset + 1);
        if !self.fits((staged.len() + batches.len()) as u64, staged.offsets() + offsets, now_ms) {
            if !staged.is_empty() {
                return Ok(Staging::WriteFirst);
            }
            if !self.active().is_empty() {
                return Ok(Staging::RollFirst);
            }
        }
        let new_epoch = self.latest_epoch().is_none_or(|latest| epoch > latest);
        if new_epoch && !staged.is_empty() {
            return Ok(Staging::WriteFirst);
        }
        if staged.is_empty() {
            let assign = (new_epoch && self.epochs.assigns(epoch, base_offset)).then_some((epoch, base_offset));
            if assign.is_some() || self.epochs_assigned != self.epochs_written {
                return Ok(Staging::CheckpointFirst(assign));
            }
        }
        staged.push_as_is(batches.clone());
        let mut records = 0u64;
        for (_, header) in &parsed {
            staged.stamped.push((*header, header.log_append_time().unwrap_or(header.max_timestamp)));
            records += header.records_count as u64;
        }
        staged.appends.push(AppendInfo { base_offset, last_offset, log_append_time_ms: -1, records });
        Ok(Staging::Staged)
    }

    /// Starts writing the `staged` appends (at least one) after the last batch, as one write
    /// through the shard's ring.
    pub fn write_staged(&mut self, staged: Staged) -> (PendingWrite, IoFuture) {
        assert!(!staged.is_empty() && !self.write_in_flight, "one write at a time, of staged appends");
        let (pieces, appends, stamped) = staged.into_pieces();
        let write = self.active().write_at_end(pieces);
        self.write_in_flight = true;
        let pending = PendingWrite { appends, stamped, segment_base_offset: self.active_base_offset() };
        (pending, write)
    }

    /// Takes the appends [`Log::write_staged`] wrote into the log once the write completed (or
    /// starts cutting them all back off the file if it failed: the caller awaits the cut
    /// before the next write). Returns each append's offsets, in order, and whether it must be
    /// durable before it is acknowledged: `write.caching=false`, or `flush.messages` reached by
    /// the records up to it.
    pub fn finish_write(
        &mut self,
        pending: PendingWrite,
        written: std::io::Result<()>,
    ) -> Result<Vec<(AppendInfo, bool)>, FailedWrite> {
        assert!(self.write_in_flight, "a write was started");
        self.write_in_flight = false;
        assert_eq!(pending.segment_base_offset, self.active_base_offset(), "the log rolls only between writes");
        let index_interval = u64::from(self.config.index_interval_bytes);
        self.active_mut().finish_append(written, &pending.stamped, index_interval)?;
        debug_assert_eq!(self.log_end_offset(), pending.appends.last().map_or(0, |a| a.last_offset + 1));
        let appends = pending.appends.into_iter().map(|info| {
            self.messages_since_flush += info.records;
            let flush_by_count = self.config.flush_messages.is_some_and(|n| self.messages_since_flush >= n);
            (info, flush_by_count || !self.config.write_caching)
        });
        Ok(appends.collect())
    }

    /// The whole append on a log owned by the caller (tests, tools): stage, write, finish, and
    /// the fsync `flush.messages` asks for.
    pub async fn append(&mut self, batches: Bytes, leader_epoch: i32, now_ms: i64) -> Result<AppendInfo, StorageError> {
        let mut staged = Staged::with_capacity(batches.len());
        loop {
            match self.stage(&mut staged, &batches, leader_epoch, now_ms)? {
                Staging::Staged => break,
                Staging::RollFirst => self.roll(now_ms).await?,
                Staging::CheckpointFirst(assign) => {
                    let mut write = self.begin_checkpoint(assign).expect("the checkpoint is behind");
                    let outcome = write.run().await;
                    self.finish_checkpoint(write, outcome)?;
                }
                Staging::WriteFirst => unreachable!("nothing else is staged"),
            }
        }
        let (pending, write) = self.write_staged(staged);
        let written = write.await;
        let (info, flush) = match self.finish_write(pending, written) {
            Ok(mut appends) => appends.pop().expect("one append was written"),
            Err(failed) => {
                failed.cut_back.await;
                return Err(failed.error);
            }
        };
        if flush {
            self.sync_now(now_ms).await?;
        }
        Ok(info)
    }

    /// Records in memory that the partition leads in `leader_epoch` from `base_offset` (its log
    /// end, as Kafka's `makeLeader` and `maybeAssignEpochStartOffset`), so that
    /// OffsetForLeaderEpoch knows the epoch at once. The checkpoint is then behind: it is
    /// written ([`Log::begin_checkpoint`]) before the next batch is staged.
    pub fn assign_epoch(&mut self, leader_epoch: i32, base_offset: i64) {
        if self.epochs.assign(leader_epoch, base_offset) {
            self.epochs_assigned += 1;
        }
    }

    /// The checkpoint write that brings the file up to the epochs assigned in memory and, with
    /// `assign`, an append's epoch from its first offset ([`Staging::CheckpointFirst`]; it
    /// enters the cache only once the file holds it: a refused append leaves the cache as it
    /// was). To run on a helper thread: the file is replaced atomically, with two fsyncs and a
    /// rename. `None` when there is nothing to write. A new epoch's entry reaches the file
    /// before its first batch is written, so the file is never behind the log.
    pub fn begin_checkpoint(&self, assign: Option<(i32, i64)>) -> Option<CheckpointWrite> {
        let mut next = self.epochs.clone();
        let assigns = assign.is_some_and(|(epoch, offset)| next.assign(epoch, offset));
        (assigns || self.epochs_assigned != self.epochs_written).then(|| CheckpointWrite {
            write: Some(Box::new(next.writer(self.claimed_fs()))),
            assigned: self.epochs_assigned,
            assign,
        })
    }

    /// Records the outcome of a [`Log::begin_checkpoint`] write: on success the file holds the
    /// epochs assigned when it began, and the append's epoch enters the cache.
    pub fn finish_checkpoint(
        &mut self,
        write: CheckpointWrite,
        outcome: Result<(), StorageError>,
    ) -> Result<(), StorageError> {
        outcome?;
        self.epochs_written = self.epochs_written.max(write.assigned);
        let up_to_date = self.epochs_written == self.epochs_assigned;
        if let Some((epoch, offset)) = write.assign
            && self.epochs.assign(epoch, offset)
        {
            self.epochs_assigned += 1;
            if up_to_date {
                self.epochs_written = self.epochs_assigned;
            }
        }
        Ok(())
    }

    /// Starts an fsync of the active segment through the ring, covering everything appended
    /// so far: returns the offset it makes durable (to hand to [`Log::finish_sync`]) and the
    /// sync itself; `None` when everything is durable already.
    pub fn begin_sync(&mut self, now_ms: i64) -> Option<(i64, IoFuture)> {
        let target = self.log_end_offset();
        if target <= self.recovery_point {
            return None;
        }
        self.messages_since_flush = 0;
        self.last_flush_ms = now_ms;
        Some((target, self.active().fdatasync()))
    }

    /// Records that the fsync [`Log::begin_sync`] started for `target` succeeded.
    pub fn finish_sync(&mut self, target: i64) {
        self.recovery_point = self.recovery_point.max(target);
    }

    /// An fsync through the ring on a log owned by the caller.
    async fn sync_now(&mut self, now_ms: i64) -> Result<(), StorageError> {
        if let Some((target, sync)) = self.begin_sync(now_ms) {
            sync.await?;
            self.finish_sync(target);
        }
        Ok(())
    }

    /// Whether the active segment takes `incoming_bytes` and `incoming_offsets` more: it would
    /// not outgrow `segment.bytes`, is younger than `segment.ms`, and would not overflow its
    /// relative offsets.
    fn fits(&self, incoming_bytes: u64, incoming_offsets: i64, now_ms: i64) -> bool {
        let segment_bytes = self.config.segment_bytes.min(SEGMENT_BYTES_LIMIT);
        let active = self.active();
        let too_big = active.size() + incoming_bytes > segment_bytes;
        let too_old = now_ms - active.created_ms >= self.config.segment_ms;
        let offsets_overflow = active.next_offset + incoming_offsets - active.base_offset > i64::from(u32::MAX);
        !(too_big || too_old || offsets_overflow)
    }

    /// Starts closing the active segment so that a new one takes the appends: see [`Roll`].
    /// Nothing changes until [`Log::finish_roll`]; no append may start meanwhile.
    pub fn begin_roll(&mut self) -> Roll {
        assert!(!self.write_in_flight, "a roll happens between appends");
        self.seal(|fs, dir, closing_end| Segment::create_files(fs, dir, closing_end))
    }

    /// The active segment's seal: its `.log` synced, then on a helper thread its index entries
    /// written and synced, the recovery point moved to its end, and `then` run.
    fn seal<T: Send + 'static>(
        &self,
        then: impl FnOnce(&dyn FileSystem, &Path, i64) -> Result<T, StorageError> + Send + 'static,
    ) -> Seal<T> {
        let active = self.active();
        let closing_end = active.next_offset;
        let pending = active.pending_index_entries();
        let entries = [0, 1].map(|i| pending[i].as_ref().map(|p| p.entries));
        let (fs, dir) = (self.fs.clone(), self.dir.clone());
        let seal = move || -> Result<T, StorageError> {
            for entries in pending.iter().flatten() {
                entries.write(&*fs)?;
            }
            // The segment is durable now, so recovery never needs to look at it again.
            write_offset_file(&*fs, &dir, RECOVERY_POINT_FILE, closing_end)?;
            then(&*fs, &dir, closing_end)
        };
        Seal { sync: Some(active.fdatasync()), seal: Some(Box::new(seal)), made: None, closing_end, entries }
    }

    /// Takes a seal that ran in: the index entries it wrote, the recovery point.
    fn finish_seal<T>(&mut self, seal: &mut Seal<T>) -> Option<T> {
        self.active().index_entries_synced(seal.entries.map(|e| e.unwrap_or(0)));
        self.recovery_point = self.recovery_point.max(seal.closing_end);
        seal.made.take()
    }

    /// Takes the roll in once [`Roll::run`] succeeded: the new segment becomes the active one.
    /// A failed roll changes nothing; the next append tries again.
    pub fn finish_roll(
        &mut self,
        roll: Roll,
        outcome: Result<(), StorageError>,
        now_ms: i64,
    ) -> Result<(), StorageError> {
        outcome?;
        assert_eq!(roll.closing_end, self.log_end_offset(), "nothing was appended during the roll");
        let mut roll = roll;
        let log = self.finish_seal(&mut roll).expect("a roll that succeeded created the next segment").into_handle();
        self.segments.push(Segment::with_log(&self.fs, &self.dir, roll.closing_end, log, now_ms));
        Ok(())
    }

    /// A whole roll on a log owned by the caller.
    async fn roll(&mut self, now_ms: i64) -> Result<(), StorageError> {
        let mut roll = self.begin_roll();
        let outcome = roll.run().await;
        self.finish_roll(roll, outcome, now_ms)
    }

    /// Whole batches from the one holding `offset`, up to `max_bytes` (at least one batch),
    /// none starting at or past `max_offset`, read into memory.
    pub fn read(&self, offset: i64, max_bytes: usize, max_offset: i64, wait: Wait) -> Result<Bytes, StorageError> {
        match self.locate(offset, max_offset, wait)? {
            Some((segment, position)) => segment.read(position, max_bytes, max_offset, wait),
            None => Ok(Bytes::new()),
        }
    }

    /// The same batches as [`Log::read`], as a file range to send without a copy.
    pub fn read_slice(
        &self,
        offset: i64,
        max_bytes: usize,
        max_offset: i64,
        wait: Wait,
    ) -> Result<Option<FileSlice>, StorageError> {
        match self.locate(offset, max_offset, wait)? {
            Some((segment, position)) => segment.slice(position, max_bytes, max_offset, wait),
            None => Ok(None),
        }
    }

    /// Loads what a read with [`Wait::No`] found missing ([`StorageError::NotCached`]) into
    /// the page cache, through the shard's io_uring; `None` if that segment is gone meanwhile
    /// (a retry then reads elsewhere).
    pub fn load(&self, base_offset: i64, position: u64, len: usize) -> Option<IoFuture> {
        let index = self.segments.binary_search_by_key(&base_offset, |s| s.base_offset).ok()?;
        Some(self.segments[index].load(position, len))
    }

    /// The segment and position of the first batch to return for a read from `offset`.
    fn locate(&self, offset: i64, max_offset: i64, wait: Wait) -> Result<Option<(&Segment, u64)>, StorageError> {
        let log_end_offset = self.log_end_offset();
        if offset < self.log_start_offset() || offset > log_end_offset {
            return Err(StorageError::OffsetOutOfRange {
                offset,
                log_start_offset: self.log_start_offset(),
                log_end_offset,
            });
        }
        if offset >= max_offset.min(log_end_offset) {
            return Ok(None);
        }
        let index = self.segments.partition_point(|s| s.base_offset <= offset) - 1;
        // The offset may fall in a gap that compaction left (or in an empty segment): the
        // answer then starts with the first batch after it, in a later segment.
        for segment in &self.segments[index..] {
            let position = match segment.base_offset <= offset {
                true => segment.locate(offset, wait)?,
                false => (!segment.is_empty()).then_some(0),
            };
            if let Some(position) = position {
                return Ok(Some((segment, position)));
            }
        }
        Ok(None)
    }

    /// Calls `f` with the header of every batch from the one holding `offset` (or the first
    /// after it) to the log end, in offset order. Reads headers only.
    pub fn scan_headers(&self, offset: i64, mut f: impl FnMut(&BatchHeader)) -> Result<(), StorageError> {
        let first = self.segments.partition_point(|s| s.base_offset <= offset).saturating_sub(1);
        for segment in &self.segments[first..] {
            let position = match segment.base_offset < offset {
                true => match segment.locate(offset, Wait::Yes)? {
                    Some(position) => position,
                    None => continue,
                },
                false => 0,
            };
            segment.for_each_header(position, &mut f)?;
        }
        Ok(())
    }

    /// The first record with a timestamp at or after `timestamp_ms`: (offset, timestamp).
    /// Records below the log start offset are not considered.
    pub fn offset_for_timestamp(&self, timestamp_ms: i64, wait: Wait) -> Result<Option<(i64, i64)>, StorageError> {
        for segment in self.segments.iter().filter(|s| s.next_offset > self.log_start_offset) {
            if let Some((offset, timestamp)) = segment.find_timestamp(timestamp_ms, wait)? {
                return Ok(Some((offset.max(self.log_start_offset), timestamp)));
            }
        }
        Ok(None)
    }

    /// The first record holding the largest timestamp in the log: (offset, timestamp), as
    /// ListOffsets answers the max-timestamp query (KIP-734). Of segments with equal maximum
    /// timestamps the earliest is searched, as in Kafka.
    pub fn max_timestamp_offset(&self, wait: Wait) -> Result<Option<(i64, i64)>, StorageError> {
        let latest = self
            .segments
            .iter()
            .filter(|s| !s.is_empty())
            .reduce(|best, s| if s.max_timestamp > best.max_timestamp { s } else { best });
        match latest {
            Some(segment) => segment.find_timestamp(segment.max_timestamp, wait),
            None => Ok(None),
        }
    }

    /// Under `cleanup.policy=compact`, once a segment has closed since the last pass or a kept
    /// tombstone's `delete.retention.ms` has run out, and no pass is in flight: a pass that
    /// drops from closed segments every record a later record of the same key supersedes, and
    /// expired tombstones. It is to run on a helper thread ([`compaction::Job::run`]), its
    /// outcome taken in by [`Log::finish_compaction`]; the log serves meanwhile.
    pub fn begin_compaction(&mut self, now_ms: i64) -> Option<compaction::Job> {
        let closed = self.segments.len() - 1;
        let tombstones_due = self.tombstones_due_ms.is_some_and(|due| now_ms >= due);
        if !self.config.compact
            || self.compacting.is_some()
            || closed == 0
            || (closed == self.compacted_segments && !tombstones_due)
        {
            return None;
        }
        self.compacting = Some(closed);
        Some(compaction::Job {
            fs: self.fs.clone(),
            claim: self.claim.clone(),
            dir: self.dir.clone(),
            segments: self.segments.iter().map(|s| (s.base_offset, s.size())).collect(),
            decompressed_limit: self.config.max_message_bytes.saturating_mul(batch::DECOMPRESSION_RATIO_LIMIT),
            delete_retention_ms: self.config.delete_retention_ms,
            index_interval_bytes: u64::from(self.config.index_interval_bytes),
            now_ms,
        })
    }

    /// Takes in what the compaction pass did: each rewritten segment replaces the one it was
    /// made from (unless that one was deleted meanwhile); then the segments deleted meanwhile
    /// go. A failed pass changes nothing here (it left the old or the new file of each
    /// segment, both holding its latest records); the next upkeep tries again.
    pub fn finish_compaction(&mut self, outcome: Result<compaction::Done, StorageError>) -> Result<(), StorageError> {
        let closed = self.compacting.take().expect("a compaction was in flight");
        let deleted = std::mem::take(&mut self.deleted_meanwhile);
        if self.claim.check().is_err() {
            // The directory went with the partition (a new one may have its name), or the log
            // was closed (which renamed those files): touch nothing.
            return Ok(());
        }
        let swapped = outcome.map(|done| {
            for cleaned in done.cleaned {
                if let Ok(i) = self.segments.binary_search_by_key(&cleaned.base_offset, |s| s.base_offset) {
                    self.segments[i] = Segment::attach(&self.fs, &self.dir, cleaned);
                }
            }
            self.tombstones_due_ms = done.tombstones_due_ms;
            self.compacted_segments = closed.saturating_sub(deleted.len());
        });
        self.deleted_files.extend(deleted.into_iter().flat_map(Segment::into_files));
        swapped
    }

    /// A whole compaction pass on a log owned by the caller (tests, tools).
    pub async fn compact_if_due(&mut self, now_ms: i64) -> Result<(), StorageError> {
        if let Some(job) = self.begin_compaction(now_ms) {
            let outcome = crate::runtime::file::run_long(move || job.run()).await;
            self.finish_compaction(outcome)?;
        }
        Ok(())
    }

    /// The log's file system for work on a helper thread: its directory operations stop once the
    /// directory is released.
    fn claimed_fs(&self) -> Arc<dyn FileSystem> {
        Arc::new(Claimed { fs: self.fs.clone(), claim: self.claim.clone() })
    }

    /// Stops work on helper threads from touching the log's directory (see [`DirClaim`]): the
    /// partition is being deleted or closed.
    pub fn release_dir(&self) {
        self.claim.release();
    }

    /// Whether `flush.ms` has passed since the last fsync and something was appended since.
    /// The owning partition checks it after appends and periodically, so that a partition
    /// that went quiet is flushed too.
    pub fn flush_due(&self, now_ms: i64) -> bool {
        self.messages_since_flush > 0 && self.config.flush_ms.is_some_and(|ms| now_ms - self.last_flush_ms >= ms)
    }

    /// Closing the log at clean shutdown, to run ([`Seal::run`]) and take in with
    /// [`Log::finish_close`]: the active segment synced with its indexes, the recovery point
    /// at the log end, and the files of every segment deleted from the head renamed away (the
    /// caller lets no rename of [`Log::take_deleted`] be in flight). A compaction pass in
    /// flight must have been stopped first ([`Log::release_dir`]): it may be rewriting the
    /// segments deleted meanwhile, whose files are renamed now.
    pub fn begin_close(&mut self) -> Close {
        assert!(!self.write_in_flight, "a log closes between appends");
        assert!(self.compacting.is_none() || self.claim.check().is_err(), "a compaction in flight was stopped");
        let mut deleted = std::mem::take(&mut self.deleted_files);
        deleted.extend(self.deleted_meanwhile.drain(..).flat_map(Segment::into_files));
        let fs = self.fs.clone();
        self.seal(move |_, _, _| rename_deleted(&fs, &deleted))
    }

    /// Takes a close that ran in.
    pub fn finish_close(&mut self, mut close: Close, outcome: Result<(), StorageError>) -> Result<(), StorageError> {
        outcome?;
        self.finish_seal(&mut close);
        self.messages_since_flush = 0;
        Ok(())
    }

    /// A whole close on a log owned by the caller.
    pub async fn close(&mut self) -> Result<(), StorageError> {
        let mut close = self.begin_close();
        let outcome = close.run().await;
        self.finish_close(close, outcome)
    }

    /// The renames to `.deleted` of the files of segments deleted from the head since the last
    /// call, to run on a helper thread ([`DeletedFiles::rename`]); `None` when there are none.
    /// They go through the log's claim, so none touches a directory a deleted partition left.
    pub fn take_deleted(&mut self) -> Option<DeletedFiles> {
        (!self.deleted_files.is_empty())
            .then(|| DeletedFiles { fs: self.claimed_fs(), paths: std::mem::take(&mut self.deleted_files) })
    }

    /// Renames the files of the segments deleted from the head, on a log owned by the caller.
    pub async fn rename_deleted(&mut self) -> Result<(), StorageError> {
        match self.take_deleted() {
            Some(deleted) => crate::runtime::file::run_blocking(move || deleted.rename()).await,
            None => Ok(()),
        }
    }

    /// The first half of DeleteRecords up to `offset`: the write of the new log start offset to
    /// its file (durably, replacing the old one), to run on a helper thread before
    /// [`Log::finish_delete_records`]; `None` when the log already starts there.
    pub fn log_start_offset_write(
        &self,
        offset: i64,
    ) -> Option<impl FnOnce() -> Result<(), StorageError> + Send + use<>> {
        if offset <= self.log_start_offset {
            return None;
        }
        let (fs, dir) = (self.claimed_fs(), self.dir.clone());
        Some(move || write_offset_file(&*fs, &dir, LOG_START_OFFSET_FILE, offset))
    }

    /// Moves the log start offset up to `offset` once its file holds it: reads below it fail
    /// from now on, and the segments wholly below it are deleted. Returns the log start offset.
    pub fn finish_delete_records(&mut self, offset: i64) -> Result<i64, StorageError> {
        assert!(offset <= self.log_end_offset(), "DeleteRecords stops at the high watermark");
        if offset > self.log_start_offset {
            self.log_start_offset = offset;
            // A segment can go once the next one starts at or below the new start.
            let below = self.segments[1..].partition_point(|s| s.base_offset <= offset);
            self.delete_head_segments(below);
            self.epochs_follow_log_start();
        }
        Ok(self.log_start_offset)
    }

    /// Both halves of DeleteRecords on a log owned by the caller.
    pub async fn delete_records(&mut self, offset: i64) -> Result<i64, StorageError> {
        if let Some(write) = self.log_start_offset_write(offset) {
            crate::runtime::file::run_blocking(write).await?;
        }
        let log_start_offset = self.finish_delete_records(offset)?;
        self.rename_deleted().await?;
        Ok(log_start_offset)
    }

    /// Where a cut before the batch holding `offset` goes (a follower dropping a tail that
    /// diverged from its leader's; no Kafka API truncates a leader), read without changing
    /// anything: see [`Truncation`]. Offsets below the log start, or in the batch that holds
    /// it, are refused. With [`Wait::No`] it fails with `NotCached` rather than wait for the
    /// disk (the caller loads the bytes and plans again).
    pub fn plan_truncation(&self, offset: i64, wait: Wait) -> Result<TruncationPlan, StorageError> {
        let log_end_offset = self.log_end_offset();
        if offset >= log_end_offset {
            // No batch to cut, but an epoch may start at the log end with none written (this
            // node led it and lost the leadership before its first append): it goes, or the
            // leader names the same divergence at every fetch (Kafka's `truncateTo` too).
            return Ok(TruncationPlan { cut: None, segment: None });
        }
        // The batch holding `offset` goes whole: it must not hold the log start too.
        let cut = match self.read(offset.max(self.log_start_offset), 1, i64::MAX, wait)? {
            bytes if !bytes.is_empty() => BatchHeader::parse(&bytes)?.base_offset.min(offset),
            _ => offset,
        };
        if cut < self.log_start_offset || (cut == self.log_start_offset && offset > cut) {
            let log_start_offset = self.log_start_offset;
            return Err(StorageError::OffsetOutOfRange { offset, log_start_offset, log_end_offset });
        }
        // The segments starting at or past the cut go (but the first), the last one kept is cut.
        let kept = self.segments.partition_point(|s| s.base_offset < cut).max(1);
        let segment = self.segments[kept - 1].plan_cut(cut, wait)?;
        Ok(TruncationPlan { cut: Some(cut), segment })
    }

    /// The write that brings the recovery point down to the cut (durably), when it is above:
    /// the first step of a [`Truncation`], for a helper thread, before anything else changes.
    pub fn recovery_point_write(
        &self,
        plan: &TruncationPlan,
    ) -> Option<impl FnOnce() -> Result<(), StorageError> + Send + use<>> {
        let cut = plan.cut.filter(|&cut| cut < self.recovery_point)?;
        let (fs, dir) = (self.claimed_fs(), self.dir.clone());
        Some(move || write_offset_file(&*fs, &dir, RECOVERY_POINT_FILE, cut))
    }

    /// Cuts the log in memory as `plan` says, once the recovery point's file is at or below
    /// the cut ([`Log::recovery_point_write`]): reads stop at the new log end at once, the
    /// segments past the cut leave the log, the leader-epoch cache is cut to match (its file
    /// then counts as behind). Returns what is left to do on the files ([`Truncation::run`]).
    /// Nothing may have changed the log since the plan, and no append nor compaction pass may
    /// be under way.
    pub fn begin_truncate(&mut self, plan: TruncationPlan) -> Truncation {
        assert!(!self.write_in_flight, "a truncation happens between appends");
        // A pass may be rewriting the segments it would cut or delete.
        assert!(self.compacting.is_none(), "a truncation happens between compaction passes");
        let mut deleted = Vec::new();
        if let Some(cut) = plan.cut {
            assert!(cut <= self.log_end_offset() && cut >= self.log_start_offset, "the log changed since the plan");
            while self.segments.len() > 1 && self.active().base_offset >= cut {
                deleted.push(self.segments.pop().expect("more than one").into_files());
            }
        }
        let cut_files = plan.segment.map(|cut| self.active_mut().cut(cut));
        let log_end_offset = self.log_end_offset();
        self.recovery_point = self.recovery_point.min(log_end_offset);
        self.compacted_segments = self.compacted_segments.min(self.segments.len() - 1);
        self.messages_since_flush = 0;
        if self.epochs.truncate_from_end(log_end_offset) {
            self.epochs_assigned += 1;
        }
        let (fs, dir) = (self.claimed_fs(), self.dir.clone());
        let work = move || -> Result<(), StorageError> {
            // From the last segment back, each rename synced, so that a crash leaves a prefix.
            for files in deleted {
                rename_deleted(&fs, &files)?;
                fs.sync_dir(&dir)?;
            }
            cut_files.map_or(Ok(()), |cuts| cuts.run(&*fs))
        };
        Truncation { work: Some(Box::new(work)) }
    }

    /// A whole truncation on a log owned by the caller, reading where to cut as it may (waiting
    /// for the disk); the leader-epoch checkpoint written last. Returns the new log end. Only
    /// for tests of the log alone: a partition runs the steps itself (`Partition::truncate_to`),
    /// loading what is not cached through the ring and reloading its producers in between.
    #[cfg(test)]
    pub async fn truncate_to(&mut self, offset: i64) -> Result<i64, StorageError> {
        let plan = self.plan_truncation(offset, Wait::Yes)?;
        if let Some(write) = self.recovery_point_write(&plan) {
            crate::runtime::file::run_blocking(write).await?;
        }
        self.begin_truncate(plan).run().await?;
        if let Some(mut write) = self.begin_checkpoint(None) {
            let outcome = write.run().await;
            self.finish_checkpoint(write, outcome)?;
        }
        Ok(self.log_end_offset())
    }

    /// Starts emptying the log to start it again at `offset`, past its end: see [`RestartAt`].
    /// Nothing changes in memory until [`Log::finish_restart_at`]; no append nor compaction
    /// pass may be under way meanwhile.
    pub fn begin_restart_at(&self, offset: i64) -> RestartAt {
        assert!(offset > self.log_end_offset(), "a log restarts only past its end");
        let (fs, dir) = (self.claimed_fs(), self.dir.clone());
        let epochs = LeaderEpochCache::empty(&self.dir);
        let work = move || -> Result<Opened, StorageError> {
            write_offset_file(&*fs, &dir, LOG_START_OFFSET_FILE, offset)?;
            epochs.write(&*fs)?;
            super::producer_state::remove_snapshots(&*fs, &dir)?;
            write_offset_file(&*fs, &dir, RECOVERY_POINT_FILE, offset)?;
            Segment::create_files(&*fs, &dir, offset)
        };
        RestartAt { offset, work: Some(Box::new(work)), log: None }
    }

    /// Takes the restart in once [`RestartAt::run`] succeeded: one empty segment at the new
    /// start, which is the log start, log end and recovery point; the leader-epoch cache empty;
    /// the old segments' files renamed away. A failed restart changes nothing in memory (a
    /// reopen finishes it if its start file was written).
    pub fn finish_restart_at(
        &mut self,
        restart: RestartAt,
        outcome: Result<(), StorageError>,
        now_ms: i64,
    ) -> Result<(), StorageError> {
        outcome?;
        assert!(!self.write_in_flight && self.compacting.is_none(), "a log restarts at rest");
        let offset = restart.offset;
        let log = restart.log.expect("a restart that succeeded created its segment").into_handle();
        let new = Segment::with_log(&self.fs, &self.dir, offset, log, now_ms);
        let old = std::mem::replace(&mut self.segments, vec![new]);
        self.log_start_offset = offset;
        self.recovery_point = offset;
        self.messages_since_flush = 0;
        self.compacted_segments = 0;
        self.tombstones_due_ms = None;
        self.epochs = LeaderEpochCache::empty(&self.dir);
        self.epochs_written = self.epochs_assigned;
        // Renamed later, not synced: a reopen drops segments left wholly below the log start.
        self.deleted_files.extend(old.into_iter().flat_map(Segment::into_files));
        Ok(())
    }

    /// Both halves of a restart on a log owned by the caller.
    pub async fn restart_at(&mut self, offset: i64) -> Result<(), StorageError> {
        let mut restart = self.begin_restart_at(offset);
        let outcome = restart.run().await;
        self.finish_restart_at(restart, outcome, crate::runtime::now_ms())?;
        self.rename_deleted().await
    }

    /// Under `cleanup.policy=delete`, deletes closed segments from the head while the oldest
    /// one's newest record is older than `retention.ms` or the log without it would still
    /// exceed `retention.bytes`. Returns how many were deleted (their files are renamed away
    /// later: [`Log::take_deleted`]).
    pub fn apply_retention(&mut self, now_ms: i64) -> Result<usize, StorageError> {
        if !self.config.delete {
            return Ok(0);
        }
        let mut excess = self.config.retention_bytes.map(|limit| self.size().saturating_sub(limit));
        let mut count = 0;
        for segment in &self.segments[..self.segments.len() - 1] {
            let expired = match self.config.retention_ms {
                Some(ms) => now_ms - segment.largest_timestamp()? > ms,
                None => false,
            };
            let oversized = excess.is_some_and(|excess| excess > 0 && excess >= segment.size());
            if !expired && !oversized {
                break;
            }
            excess = excess.map(|excess| excess.saturating_sub(segment.size()));
            count += 1;
        }
        self.delete_head_segments(count);
        Ok(count)
    }

    /// Deletes the first `count` segments (never the active one) and moves the log start
    /// offset to the base of the first one kept. Their descriptors close now; their files are
    /// renamed away later, off the shard's thread ([`Log::take_deleted`]).
    fn delete_head_segments(&mut self, count: usize) {
        if count == 0 {
            return;
        }
        assert!(count < self.segments.len(), "the active segment is never deleted");
        self.log_start_offset = self.log_start_offset.max(self.segments[count].base_offset);
        self.compacted_segments = self.compacted_segments.saturating_sub(count);
        for segment in self.segments.drain(..count) {
            tracing::debug!(dir = %self.dir.display(), base_offset = segment.base_offset, "deleting segment");
            match self.compacting {
                Some(_) => self.deleted_meanwhile.push(segment),
                None => self.deleted_files.extend(segment.into_files()),
            }
        }
        self.epochs_follow_log_start();
    }

    /// Drops the epochs wholly below the log start from the cache. The checkpoint is not
    /// rewritten for it (that would be an fsync on the shard's thread at every DeleteRecords and
    /// retention pass): entries below the log start are harmless there, cut at open and
    /// gone at its next write.
    fn epochs_follow_log_start(&mut self) {
        self.epochs.truncate_from_start(self.log_start_offset);
    }

    /// OffsetForLeaderEpoch: the largest epoch at or below `leader_epoch` that wrote to this
    /// log and the offset where its part ends (see [`LeaderEpochCache::end_offset_for`]).
    pub fn end_offset_for_epoch(&self, leader_epoch: i32) -> (i32, i64) {
        self.epochs.end_offset_for(leader_epoch, self.log_end_offset())
    }

    /// The leader epoch that wrote `offset`, if known.
    pub fn epoch_for_offset(&self, offset: i64) -> Option<i32> {
        self.epochs.epoch_for_offset(offset)
    }

    /// The newest leader epoch that wrote to this log.
    pub fn latest_epoch(&self) -> Option<i32> {
        self.epochs.latest_epoch()
    }

    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    /// New settings (AlterConfigs), in force from the next append or upkeep pass.
    pub fn set_config(&mut self, config: LogConfig) {
        self.config = config;
    }

    /// The batch headers as they are now, for a helper thread to read.
    pub fn headers(&self) -> LogHeaders {
        LogHeaders {
            fs: self.claimed_fs(),
            dir: self.dir.clone(),
            segments: self.segments.iter().map(|s| (s.base_offset, s.size())).collect(),
            log_start_offset: self.log_start_offset,
            log_end_offset: self.log_end_offset(),
        }
    }

    /// The file system the log lives on.
    pub fn file_system(&self) -> Arc<dyn FileSystem> {
        self.fs.clone()
    }

    pub fn log_start_offset(&self) -> i64 {
        self.log_start_offset
    }

    /// Bytes of all segments.
    pub fn size(&self) -> u64 {
        self.segments.iter().map(Segment::size).sum()
    }

    pub fn log_end_offset(&self) -> i64 {
        self.active().next_offset
    }

    /// The base offset of the segment appends go to; it changes when the log rolls.
    pub fn active_base_offset(&self) -> i64 {
        self.active().base_offset
    }

    pub fn recovery_point(&self) -> i64 {
        self.recovery_point
    }

    fn active(&self) -> &Segment {
        self.segments.last().expect("a log has a segment")
    }

    fn active_mut(&mut self) -> &mut Segment {
        self.segments.last_mut().expect("a log has a segment")
    }
}

/// The batch headers of a log as it is now, for a helper thread to read
/// ([`super::producer_state::ProducerStates::load`] after a truncation): each segment's `.log`
/// is opened again there, by its path, through the log's claim.
pub struct LogHeaders {
    fs: Arc<dyn FileSystem>,
    dir: PathBuf,
    /// Each segment's base offset and size, in order.
    segments: Vec<(i64, u64)>,
    log_start_offset: i64,
    log_end_offset: i64,
}

impl BatchHeaders for LogHeaders {
    fn file_system(&self) -> Arc<dyn FileSystem> {
        self.fs.clone()
    }

    fn log_start_offset(&self) -> i64 {
        self.log_start_offset
    }

    fn log_end_offset(&self) -> i64 {
        self.log_end_offset
    }

    /// Reads each segment holding `offset` or later from its start (the indexes stay on the
    /// shard): at most one segment's headers more than [`Log::scan_headers`] reads.
    fn scan_headers(&self, offset: i64, mut f: impl FnMut(&BatchHeader)) -> Result<(), StorageError> {
        let first = self.segments.partition_point(|&(base, _)| base <= offset).saturating_sub(1);
        for &(base_offset, size) in &self.segments[first..] {
            let segment = Segment::reader(&self.fs, &self.dir, base_offset, size)?;
            segment.for_each_header(0, &mut |header: &BatchHeader| {
                if header.last_offset() >= offset {
                    f(header);
                }
            })?;
        }
        Ok(())
    }
}

/// Files of segments deleted from the head of a log, to rename to `.deleted` (and queue for
/// unlinking) on a helper thread: [`Log::take_deleted`].
pub struct DeletedFiles {
    fs: Arc<dyn FileSystem>,
    paths: Vec<PathBuf>,
}

impl DeletedFiles {
    /// Renames them (blocking: on a helper thread).
    pub fn rename(self) -> Result<(), StorageError> {
        rename_deleted(&self.fs, &self.paths)
    }
}

/// Renames each of `paths` to `.deleted` and queues it for unlinking; a file already gone is
/// fine. A crash before the renames brings the segments back at the next open (below the log
/// start they are unreadable, and retention deletes them again), as a crash before their
/// directory is synced would.
fn rename_deleted(fs: &Arc<dyn FileSystem>, paths: &[PathBuf]) -> Result<(), StorageError> {
    for path in paths {
        deleter::delete_later(fs, path)?;
    }
    Ok(())
}

fn delete_segment_files(fs: &dyn FileSystem, dir: &Path, base_offset: i64) -> Result<(), StorageError> {
    for extension in ["log", "index", "timeindex"] {
        match fs.remove_file(&dir.join(super::segment::file_name(base_offset, extension))) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
            _ => {}
        }
    }
    Ok(())
}

/// The base offsets of the segments among `names`, the entries of `dir`. Files a crash left
/// `.deleted` are queued for unlinking on the way, unfinished compactions removed.
fn segment_bases(fs: &Arc<dyn FileSystem>, dir: &Path, names: &[String]) -> Result<Vec<i64>, StorageError> {
    let mut bases = Vec::new();
    for name in names {
        if name.ends_with(deleter::DELETED_SUFFIX) {
            deleter::unlink_later(fs, dir.join(name));
            continue;
        }
        // A compaction that a crash interrupted left its rewrite unfinished: the original
        // stands. Removed at once, lest the deleter remove the next pass's file of that name.
        if name.ends_with(compaction::CLEANED_SUFFIX) {
            fs.remove_file(&dir.join(name))?;
            continue;
        }
        if let Some(stem) = name.strip_suffix(".log")
            && let Ok(base) = stem.parse::<i64>()
        {
            bases.push(base);
        }
    }
    Ok(bases)
}

/// The offset kept in file `name` of `dir`. A missing or unreadable file reads as 0: for the
/// recovery point, "nothing known flushed", so recovery scans it all.
fn read_offset_file(fs: &dyn FileSystem, dir: &Path, name: &str) -> i64 {
    let text = fs.read(&dir.join(name)).ok().and_then(|bytes| String::from_utf8(bytes).ok());
    text.and_then(|s| s.trim().parse().ok()).unwrap_or(0)
}

/// Replaced atomically and durably, so a crash leaves the old or the new value.
fn write_offset_file(fs: &dyn FileSystem, dir: &Path, name: &str, offset: i64) -> Result<(), StorageError> {
    super::fs::replace(fs, &dir.join(name), format!("{offset}\n").as_bytes())?;
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::BTreeSet;
    use std::fs::OpenOptions;
    use std::io::Write;

    use bytes::BytesMut;

    use super::*;
    use crate::storage::batch::BatchHeader;
    use crate::storage::batch::tests::batch;
    use crate::storage::batch::validate;
    use crate::storage::fs::os;

    /// Settings for tests: 1 MiB segments, an index entry every 256 bytes, no flush policy.
    pub(crate) fn config() -> LogConfig {
        LogConfig {
            segment_bytes: 1 << 20,
            segment_ms: i64::MAX,
            index_interval_bytes: 256,
            max_message_bytes: 1 << 20,
            timestamp_type: TimestampType::CreateTime,
            flush_messages: None,
            flush_ms: None,
            write_caching: true,
            compact: false,
            delete_retention_ms: 86_400_000,
            delete: true,
            retention_ms: None,
            retention_bytes: None,
            validate_compressed_records: true,
            timestamp_before_max_ms: i64::MAX,
            timestamp_after_max_ms: i64::MAX,
        }
    }

    /// Every batch in `bytes`, validated, as (base offset, record count).
    fn batches_in(mut bytes: &[u8]) -> Vec<(i64, i32)> {
        let mut out = Vec::new();
        while !bytes.is_empty() {
            let header = crate::storage::batch::BatchHeader::parse(bytes).unwrap();
            validate(&bytes[..header.size()]).unwrap();
            out.push((header.base_offset, header.records_count));
            bytes = &bytes[header.size()..];
        }
        out
    }

    /// Reads everything from `offset`, batch by batch, as a consumer would.
    fn read_all(log: &Log, mut offset: i64) -> Vec<(i64, i32)> {
        let mut all = Vec::new();
        while offset < log.log_end_offset() {
            let bytes = log.read(offset, 1000, i64::MAX, Wait::Yes).unwrap();
            let batches = batches_in(&bytes);
            assert!(!batches.is_empty(), "no progress at offset {offset}");
            offset = batches.last().map(|&(base, count)| base + i64::from(count)).unwrap();
            all.extend(batches);
        }
        all
    }

    /// Evicts the log's pages, then runs `read` as a fetch does: from the page cache only,
    /// loading what it names as missing and trying again. A read that cannot wait still starts
    /// the kernel's readahead, which a fast disk may finish before the read looks again, so the
    /// eviction is tried a few times until one read has to load. Returns the result.
    async fn read_evicted<T>(
        log: &Log,
        segment: &std::fs::File,
        read: impl Fn(&Log, Wait) -> Result<T, StorageError>,
    ) -> T {
        for _ in 0..5 {
            crate::runtime::page_cache::evict(segment, 0, 0);
            let mut loads = 0;
            let result = loop {
                match read(log, Wait::No) {
                    Err(StorageError::NotCached { base_offset, position, len }) => {
                        assert!(loads < 8, "each load brings in what a try lacked");
                        log.load(base_offset, position, len).expect("the segment is there").await.unwrap();
                        loads += 1;
                    }
                    result => break result.unwrap(),
                }
            };
            if loads > 0 {
                return result;
            }
        }
        panic!("evicted bytes were always read in place, never loaded");
    }

    #[test]
    fn reads_that_may_not_wait_load_what_is_not_cached_and_return_the_same() {
        crate::runtime::file::block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let mut log = Log::open(&os(), dir.path(), config(), false).unwrap();
            for i in 0..300 {
                log.append(batch(100, 1000 + i), 7, 0).await.unwrap();
            }
            let segment = std::fs::File::open(dir.path().join(super::super::segment::file_name(0, "log"))).unwrap();
            // From the middle of the segment, 256 KiB: a header to find where the range starts,
            // one after the index's jump to find where it ends.
            let (offset, max_bytes) = (150 * 100 + 7, 256 * 1024);

            let slice =
                read_evicted(&log, &segment, |log, wait| log.read_slice(offset, max_bytes, i64::MAX, wait)).await;
            let waited = log.read_slice(offset, max_bytes, i64::MAX, Wait::Yes).unwrap().unwrap();
            let slice = slice.expect("batches from the offset");
            assert_eq!((slice.position, slice.len), (waited.position, waited.len));

            let bytes = read_evicted(&log, &segment, |log, wait| log.read(offset, max_bytes, i64::MAX, wait)).await;
            assert_eq!(bytes, log.read(offset, max_bytes, i64::MAX, Wait::Yes).unwrap());
            assert_eq!(batches_in(&bytes)[0].0, 150 * 100);

            // ListOffsets by time reads the same way.
            let found = read_evicted(&log, &segment, |log, wait| log.offset_for_timestamp(1150, wait)).await;
            assert_eq!(found, log.offset_for_timestamp(1150, Wait::Yes).unwrap());
            assert!(found.is_some(), "a record at that time");
            let latest = read_evicted(&log, &segment, |log, wait| log.max_timestamp_offset(wait)).await;
            assert_eq!(latest, log.max_timestamp_offset(Wait::Yes).unwrap());
        })
    }

    #[test]
    fn appends_get_contiguous_offsets_and_read_back() {
        crate::runtime::file::block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let mut log = Log::open(&os(), dir.path(), config(), false).unwrap();
            for i in 0..50 {
                let info = log.append(batch(3, 1000 + i), 7, 0).await.unwrap();
                assert_eq!(info.base_offset, 3 * i);
                assert_eq!(info.last_offset, 3 * i + 2);
            }
            assert_eq!(log.log_end_offset(), 150);
            let all = read_all(&log, 0);
            assert_eq!(all.len(), 50);
            assert!(all.iter().enumerate().all(|(i, &(base, n))| base == 3 * i as i64 && n == 3));
            // An offset in the middle of a batch returns that whole batch first.
            assert_eq!(batches_in(&log.read(31, 1, i64::MAX, Wait::Yes).unwrap()), vec![(30, 3)]);
            assert!(log.read(150, 1000, i64::MAX, Wait::Yes).unwrap().is_empty());
            assert!(matches!(log.read(151, 1000, i64::MAX, Wait::Yes), Err(StorageError::OffsetOutOfRange { .. })));
        })
    }

    #[test]
    fn several_batches_in_one_append() {
        crate::runtime::file::block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let mut log = Log::open(&os(), dir.path(), config(), false).unwrap();
            let mut two = BytesMut::from(&batch(2, 0)[..]);
            two.extend_from_slice(&batch(4, 0));
            let info = log.append(two.freeze(), 0, 0).await.unwrap();
            assert_eq!((info.base_offset, info.last_offset, info.records), (0, 5, 6));
            assert_eq!(read_all(&log, 0), vec![(0, 2), (2, 4)]);
        })
    }

    #[test]
    fn long_batch_bodies_are_written_from_the_request_not_copied() {
        crate::runtime::file::block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let mut log = Log::open(&os(), dir.path(), config(), false).unwrap();
            let (short, long) = (batch(2, 0), batch(400, 0));
            assert!(long.len() - HEADER_LEN >= BORROWED_BODY_BYTES_MIN);
            let mut request = BytesMut::from(&short[..]);
            request.extend_from_slice(&long);
            request.extend_from_slice(&batch(3, 0));
            let request = request.freeze();
            let mut staged = Staged::with_capacity(request.len());
            // Epoch 0 is new to the log.
            assert!(matches!(log.stage(&mut staged, &request, 0, 0).unwrap(), Staging::CheckpointFirst(Some((0, 0)))));
            let mut checkpoint = log.begin_checkpoint(Some((0, 0))).unwrap();
            let outcome = checkpoint.run().await;
            log.finish_checkpoint(checkpoint, outcome).unwrap();
            assert!(matches!(log.stage(&mut staged, &request, 0, 0).unwrap(), Staging::Staged));
            // The short batch and the long one's stamped header, copied; the long one's
            // records, the request's own memory; the last batch still being copied.
            assert_eq!(staged.pieces.len(), 2);
            assert_eq!(staged.pieces[0].len(), short.len() + HEADER_LEN);
            let long_body = &request[short.len() + HEADER_LEN..short.len() + long.len()];
            assert_eq!(staged.pieces[1].as_ptr(), long_body.as_ptr());
            assert_eq!(staged.len(), request.len());
            let (pending, write) = log.write_staged(staged);
            let written = write.await;
            assert!(log.finish_write(pending, written).is_ok());
            assert_eq!(read_all(&log, 0), vec![(0, 2), (2, 400), (402, 3)]);
        })
    }

    #[test]
    fn a_roll_opens_the_next_segment_where_it_creates_it_not_again_on_the_shard() {
        crate::runtime::file::block_on(async {
            let disk = crate::storage::fs::simulated::SimDisk::new();
            let fs: Arc<dyn FileSystem> = disk.clone();
            fs.create_dir_all(Path::new("/data")).unwrap();
            let one_batch = LogConfig { segment_bytes: batch(1, 0).len() as u64, ..config() };
            let mut log = Log::open(&fs, Path::new("/data/t-0"), one_batch, false).unwrap();
            log.append(batch(1, 0), 0, 0).await.unwrap();
            log.append(batch(1, 0), 0, 0).await.unwrap();
            assert_eq!(log.active_base_offset(), 1, "the second append rolled");
            let next = Path::new("/data/t-0").join(super::super::segment::file_name(1, "log"));
            assert_eq!(disk.opens(&next), 1, "opened once, by the helper thread that created it");
            assert_eq!(read_all(&log, 0), vec![(0, 1), (1, 1)]);
        })
    }

    #[test]
    fn a_log_opened_on_a_helper_thread_hands_its_open_files_over() {
        crate::runtime::file::block_on(async {
            let disk = crate::storage::fs::simulated::SimDisk::new();
            let fs: Arc<dyn FileSystem> = disk.clone();
            fs.create_dir_all(Path::new("/data")).unwrap();
            let dir = Path::new("/data/t-0");
            let one_batch = LogConfig { segment_bytes: batch(1, 0).len() as u64, ..config() };
            let mut log = Log::open(&fs, dir, one_batch.clone(), false).unwrap();
            log.append(batch(1, 0), 0, 0).await.unwrap();
            log.append(batch(1, 0), 0, 0).await.unwrap();
            log.close().await.unwrap();
            drop(log);
            let (opener, detached) = (fs.clone(), dir.to_path_buf());
            let detached = crate::runtime::file::run_blocking(move || {
                Log::open(&opener, &detached, one_batch, true).map(Log::detach).unwrap()
            })
            .await;
            let logs = [0, 1].map(|base| dir.join(super::super::segment::file_name(base, "log")));
            let opens = logs.clone().map(|path| disk.opens(&path));
            let log = Log::attach(&fs, detached).unwrap();
            assert_eq!(logs.map(|path| disk.opens(&path)), opens, "the shard opened nothing again");
            assert_eq!(read_all(&log, 0), vec![(0, 1), (1, 1)]);
        })
    }

    #[test]
    fn rolls_segments_and_finds_offsets_in_any_of_them() {
        crate::runtime::file::block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let mut log = Log::open(&os(), dir.path(), LogConfig { segment_bytes: 2000, ..config() }, false).unwrap();
            for _ in 0..100 {
                log.append(batch(2, 0), 0, 0).await.unwrap();
            }
            let logs: BTreeSet<_> = std::fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
                .filter(|n| n.ends_with(".log"))
                .collect();
            assert!(logs.len() >= 5, "{logs:?}");
            assert!(logs.contains("00000000000000000000.log"));
            for offset in [0, 1, 57, 99, 100, 133, 199] {
                let first = batches_in(&log.read(offset, 1, i64::MAX, Wait::Yes).unwrap())[0];
                assert!(first.0 <= offset && offset < first.0 + 2, "offset {offset} gave {first:?}");
            }
            assert_eq!(read_all(&log, 0).len(), 100);
        })
    }

    #[test]
    fn max_bytes_and_high_watermark_bound_reads() {
        crate::runtime::file::block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let mut log = Log::open(&os(), dir.path(), config(), false).unwrap();
            for _ in 0..10 {
                log.append(batch(1, 0), 0, 0).await.unwrap();
            }
            let one = batch(1, 0).len();
            assert_eq!(batches_in(&log.read(0, 3 * one, i64::MAX, Wait::Yes).unwrap()).len(), 3);
            // KIP-74: a limit below one batch still returns that batch.
            assert_eq!(batches_in(&log.read(0, 1, i64::MAX, Wait::Yes).unwrap()).len(), 1);
            assert_eq!(batches_in(&log.read(0, 1 << 20, 4, Wait::Yes).unwrap()).len(), 4);
            assert!(log.read(4, 1 << 20, 4, Wait::Yes).unwrap().is_empty());
        })
    }

    /// Reads skip through the index to the end of their range; every bound must still land
    /// exactly where a batch-by-batch walk would.
    #[test]
    fn indexed_reads_end_where_a_batch_walk_would() {
        crate::runtime::file::block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let mut log = Log::open(&os(), dir.path(), config(), false).unwrap();
            let mut batches = Vec::new(); // (base offset, size)
            for i in 0..60 {
                let batch = batch(1 + i % 4, 0);
                let info = log.append(batch.clone(), 0, 0).await.unwrap();
                batches.push((info.base_offset, batch.len()));
            }
            let end = log.log_end_offset();
            for start in 0..batches.len() {
                for max_bytes in [1, 150, 700, 2000, 1 << 20] {
                    for max_offset in [batches[start].0 + 1, end / 2, end] {
                        let mut expected = Vec::new();
                        let mut total = 0;
                        for &(base, size) in &batches[start..] {
                            if base >= max_offset || (!expected.is_empty() && total + size > max_bytes) {
                                break;
                            }
                            expected.push(base);
                            total += size;
                        }
                        let read = log.read(batches[start].0, max_bytes, max_offset, Wait::Yes).unwrap();
                        let got: Vec<i64> = batches_in(&read).iter().map(|b| b.0).collect();
                        assert_eq!(got, expected, "from {start} max_bytes {max_bytes} max_offset {max_offset}");
                    }
                }
            }
        })
    }

    #[test]
    fn invalid_appends_write_nothing() {
        crate::runtime::file::block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let mut log =
                Log::open(&os(), dir.path(), LogConfig { max_message_bytes: 200, ..config() }, false).unwrap();
            log.append(batch(1, 0), 0, 0).await.unwrap();
            let mut corrupt = BytesMut::from(&batch(1, 0)[..]);
            let last = corrupt.len() - 1;
            corrupt[last] ^= 0xff;
            let mut good_then_bad = BytesMut::from(&batch(1, 0)[..]);
            good_then_bad.extend_from_slice(&corrupt);
            assert!(matches!(log.append(good_then_bad.freeze(), 0, 0).await, Err(StorageError::CorruptBatch(_))));
            assert!(matches!(log.append(batch(20, 0), 0, 0).await, Err(StorageError::BatchTooLarge { .. })));
            assert_eq!(log.log_end_offset(), 1);
            assert_eq!(read_all(&log, 0), vec![(0, 1)]);
        })
    }

    #[test]
    fn log_append_time_is_stamped() {
        crate::runtime::file::block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let config = LogConfig { timestamp_type: TimestampType::LogAppendTime, ..config() };
            let mut log = Log::open(&os(), dir.path(), config, false).unwrap();
            let info = log.append(batch(2, 5), 0, 123_456).await.unwrap();
            assert_eq!(info.log_append_time_ms, 123_456);
            let bytes = log.read(0, 1000, i64::MAX, Wait::Yes).unwrap();
            assert_eq!(validate(&bytes).unwrap().max_timestamp, 123_456);
        })
    }

    #[test]
    fn finds_offsets_by_timestamp() {
        crate::runtime::file::block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let mut log = Log::open(&os(), dir.path(), LogConfig { segment_bytes: 2000, ..config() }, false).unwrap();
            for i in 0..40 {
                log.append(batch(2, 1000 + 10 * i), 0, 0).await.unwrap();
            }
            assert_eq!(log.offset_for_timestamp(0, Wait::Yes).unwrap(), Some((0, 1000)));
            // Batch 20 holds timestamps 1200 and 1201 at offsets 40 and 41.
            assert_eq!(log.offset_for_timestamp(1201, Wait::Yes).unwrap(), Some((41, 1201)));
            assert_eq!(log.offset_for_timestamp(1202, Wait::Yes).unwrap(), Some((42, 1210)));
            assert_eq!(log.offset_for_timestamp(5000, Wait::Yes).unwrap(), None);
        })
    }

    #[test]
    fn clean_reopen_keeps_everything() {
        crate::runtime::file::block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let mut log = Log::open(&os(), dir.path(), LogConfig { segment_bytes: 3000, ..config() }, false).unwrap();
            for _ in 0..60 {
                log.append(batch(2, 0), 0, 0).await.unwrap();
            }
            log.close().await.unwrap();
            drop(log);
            let mut log = Log::open(&os(), dir.path(), config(), true).unwrap();
            assert_eq!(log.log_end_offset(), 120);
            assert_eq!(log.recovery_point(), 120);
            assert_eq!(read_all(&log, 0).len(), 60);
            assert_eq!(log.append(batch(1, 0), 0, 0).await.unwrap().base_offset, 120);
        })
    }

    /// Overwrites bytes `at` of segment file `name`: fields outside the CRC's reach.
    fn patch(dir: &Path, name: &str, at: u64, bytes: &[u8]) {
        use std::os::unix::fs::FileExt;
        OpenOptions::new().write(true).open(dir.join(name)).unwrap().write_all_at(bytes, at).unwrap();
    }

    /// A batch whose base offset (not covered by the CRC) was damaged: huge, negative, or below
    /// the batch before it. Recovery cuts the log there instead of panicking or believing it.
    #[test]
    fn a_crc_valid_batch_with_a_corrupt_base_offset_is_cut() {
        crate::runtime::file::block_on(async {
            let size = batch(2, 0).len() as u64;
            let name = crate::storage::segment::file_name(0, "log");
            for bad in [i64::MAX - 1, 1 << 40, -1, 4] {
                for (clean, damaged) in [(false, 5), (true, 9)] {
                    let dir = tempfile::tempdir().unwrap();
                    let mut log = Log::open(&crate::storage::fs::os(), dir.path(), config(), false).unwrap();
                    for i in 0..10 {
                        log.append(batch(2, 100 * i), 0, 0).await.unwrap();
                    }
                    log.close().await.unwrap();
                    drop(log);
                    patch(dir.path(), &name, damaged * size, &bad.to_be_bytes());
                    let log = Log::open(&crate::storage::fs::os(), dir.path(), config(), clean).unwrap();
                    assert_eq!(log.log_end_offset(), 2 * damaged as i64, "base offset {bad}, clean {clean}");
                    assert_eq!(read_all(&log, 0).len(), damaged as usize);
                    assert_eq!(log.offset_for_timestamp(100 * damaged as i64, Wait::Yes).unwrap(), None);
                }
            }
        })
    }

    /// A batch length that runs past the file (here, 2 GiB) is never read, served or kept.
    #[test]
    fn an_absurd_batch_length_is_cut_not_served() {
        crate::runtime::file::block_on(async {
            let size = batch(2, 0).len() as u64;
            let name = crate::storage::segment::file_name(0, "log");
            for clean in [false, true] {
                let dir = tempfile::tempdir().unwrap();
                let mut log = Log::open(&crate::storage::fs::os(), dir.path(), config(), false).unwrap();
                for i in 0..10 {
                    log.append(batch(2, 100 * i), 0, 0).await.unwrap();
                }
                log.close().await.unwrap();
                drop(log);
                patch(dir.path(), &name, 9 * size + 8, &i32::MAX.to_be_bytes());
                let log = Log::open(&crate::storage::fs::os(), dir.path(), config(), clean).unwrap();
                assert_eq!(log.log_end_offset(), 18);
                assert_eq!(read_all(&log, 0).len(), 9);
                assert_eq!(std::fs::metadata(dir.path().join(&name)).unwrap().len(), 9 * size);
            }
            // Left in place behind a trusted index (a clean shutdown), a lying length in the middle
            // of a segment still sizes no read and no allocation: reads that reach it stop there.
            let dir = tempfile::tempdir().unwrap();
            let mut log = Log::open(&crate::storage::fs::os(), dir.path(), config(), false).unwrap();
            for i in 0..10 {
                log.append(batch(2, 100 * i), 0, 0).await.unwrap();
            }
            log.close().await.unwrap();
            drop(log);
            patch(dir.path(), &name, 2 * size + 8, &(i32::MAX - 12).to_be_bytes());
            let log = Log::open(&crate::storage::fs::os(), dir.path(), config(), true).unwrap();
            assert_eq!(batches_in(&log.read(0, 1, i64::MAX, Wait::Yes).unwrap()), vec![(0, 2)]);
            assert!(log.read(4, 1 << 30, i64::MAX, Wait::Yes).unwrap().is_empty());
            assert_eq!(log.offset_for_timestamp(200, Wait::Yes).unwrap(), None);
        })
    }

    #[test]
    fn unclean_reopen_truncates_a_torn_tail() {
        crate::runtime::file::block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let mut log = Log::open(&os(), dir.path(), config(), false).unwrap();
            for _ in 0..10 {
                log.append(batch(2, 0), 0, 0).await.unwrap();
            }
            drop(log);
            let segment = dir.path().join("00000000000000000000.log");
            let length = std::fs::metadata(&segment).unwrap().len();
            // Half of the last batch made it to disk, then the process died.
            let cut = length - (batch(2, 0).len() as u64) / 2;
            OpenOptions::new().write(true).open(&segment).unwrap().set_len(cut).unwrap();
            let mut log = Log::open(&os(), dir.path(), config(), false).unwrap();
            assert_eq!(log.log_end_offset(), 18);
            assert_eq!(read_all(&log, 0).len(), 9);
            assert_eq!(log.append(batch(2, 0), 0, 0).await.unwrap().base_offset, 18);
            drop(log);
            // Garbage after the last batch goes as well.
            OpenOptions::new().append(true).open(&segment).unwrap().write_all(&[0xAB; 100]).unwrap();
            let log = Log::open(&os(), dir.path(), config(), false).unwrap();
            assert_eq!(log.log_end_offset(), 20);
            assert_eq!(read_all(&log, 0).len(), 10);
        })
    }

    /// Cuts `bytes` off the end of segment file `name`.
    fn cut(dir: &Path, name: &str, bytes: u64) {
        let path = dir.join(name);
        let length = std::fs::metadata(&path).unwrap().len();
        OpenOptions::new().write(true).open(&path).unwrap().set_len(length - bytes).unwrap();
    }

    #[test]
    fn a_tail_cut_after_a_clean_shutdown_is_recovered() {
        crate::runtime::file::block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let config = LogConfig { segment_bytes: 3000, ..config() };
            let mut log = Log::open(&os(), dir.path(), config.clone(), false).unwrap();
            for _ in 0..60 {
                log.append(batch(2, 0), 0, 0).await.unwrap();
            }
            let last = log.active().base_offset;
            log.close().await.unwrap();
            drop(log);
            cut(dir.path(), &crate::storage::segment::file_name(last, "log"), 7);
            // The marker says clean, but the last batch is torn: it goes, the rest stays.
            let mut log = Log::open(&os(), dir.path(), config, true).unwrap();
            assert_eq!(log.log_end_offset(), 118);
            assert_eq!(read_all(&log, 0).len(), 59);
            assert_eq!(log.append(batch(1, 0), 0, 0).await.unwrap().base_offset, 118);
        })
    }

    #[test]
    fn a_damaged_closed_segment_is_refused_not_truncated() {
        crate::runtime::file::block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let config = LogConfig { segment_bytes: 3000, ..config() };
            let mut log = Log::open(&os(), dir.path(), config.clone(), false).unwrap();
            for _ in 0..60 {
                log.append(batch(2, 0), 0, 0).await.unwrap();
            }
            log.close().await.unwrap();
            drop(log);
            let first = crate::storage::segment::file_name(0, "log");
            let length = std::fs::metadata(dir.path().join(&first)).unwrap().len();
            cut(dir.path(), &first, 7);
            for clean in [true, false] {
                let error =
                    Log::open(&os(), dir.path(), config.clone(), clean).err().expect("a hole in the log is refused");
                assert!(matches!(error, StorageError::CorruptBatch(_)), "{error}");
            }
            // The evidence stays on disk for an operator.
            assert_eq!(std::fs::metadata(dir.path().join(&first)).unwrap().len(), length - 7);
        })
    }

    #[test]
    fn unclean_reopen_rebuilds_a_corrupt_index() {
        crate::runtime::file::block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let mut log = Log::open(&os(), dir.path(), config(), false).unwrap();
            for _ in 0..30 {
                log.append(batch(2, 0), 0, 0).await.unwrap();
            }
            log.close().await.unwrap();
            drop(log);
            std::fs::write(dir.path().join("00000000000000000000.index"), [1u8; 13]).unwrap();
            // Even a "clean" open refuses an index it cannot trust, and rebuilds it.
            let log = Log::open(&os(), dir.path(), config(), true).unwrap();
            assert_eq!(log.log_end_offset(), 60);
            for offset in [0, 17, 59] {
                let first = batches_in(&log.read(offset, 1, i64::MAX, Wait::Yes).unwrap())[0];
                assert!(first.0 <= offset && offset < first.0 + 2);
            }
        })
    }

    #[test]
    fn flush_ms_flushes_a_quiet_log() {
        crate::runtime::file::block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let mut log = Log::open(&os(), dir.path(), LogConfig { flush_ms: Some(1000), ..config() }, false).unwrap();
            let start = log.last_flush_ms;
            log.append(batch(2, 0), 0, start + 10).await.unwrap();
            assert_eq!(log.recovery_point(), 0, "not due yet");
            assert!(!log.flush_due(start + 500), "not due yet");
            assert!(log.flush_due(start + 1010));
            log.sync_now(start + 1010).await.unwrap();
            assert_eq!(log.recovery_point(), 2);
            assert!(!log.flush_due(start + 2020), "nothing appended since");
        })
    }

    /// A batch of one keyed record (`None` value: a deletion).
    fn keyed(key: &str, value: Option<&str>) -> Bytes {
        let record = (Some(Bytes::from(key.to_string())), value.map(|v| Bytes::from(v.to_string())));
        crate::protocol::records::encode_batch(&[record], 0)
    }

    /// (offset, key, value) of every record, read as a consumer would.
    fn records(log: &Log) -> Vec<(i64, String, Option<String>)> {
        let mut out = Vec::new();
        let mut offset = log.log_start_offset();
        while offset < log.log_end_offset() {
            let bytes = log.read(offset, 1 << 20, i64::MAX, Wait::Yes).unwrap();
            if bytes.is_empty() {
                break;
            }
            let decoded = crate::protocol::records::decode_records(bytes, offset).unwrap();
            offset = decoded.last().unwrap().offset + 1;
            out.extend(decoded.into_iter().map(|r| {
                let text = |b: Bytes| String::from_utf8(b.to_vec()).unwrap();
                (r.offset, r.key.map(text).unwrap(), r.value.map(text))
            }));
        }
        out
    }

    #[test]
    fn compaction_keeps_the_latest_record_of_each_key() {
        crate::runtime::file::block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let config = LogConfig { compact: true, segment_bytes: 300, ..config() };
            let mut log = Log::open(&os(), dir.path(), config.clone(), false).unwrap();
            for round in 0..10 {
                for key in ["a", "b", "c"] {
                    log.append(keyed(key, Some(&format!("{key}{round}"))), 0, 0).await.unwrap();
                }
            }
            log.append(keyed("b", None), 0, 0).await.unwrap();
            log.append(keyed("d", Some("d0")), 0, 0).await.unwrap();
            let before = log.segments.len();
            assert!(before > 3);
            log.compact_if_due(0).await.unwrap();
            let after = records(&log);
            // Closed segments keep only each key's latest record ("b" was last deleted, at 30);
            // the open segment is left alone. Offsets do not change.
            let latest = |key: &str| match key {
                "a" => 27,
                "b" => 30,
                "c" => 29,
                _ => 31,
            };
            let open_from = log.segments.last().unwrap().base_offset;
            for (offset, key, _) in &after {
                assert!(*offset >= open_from || *offset == latest(key), "{offset} {key} survived: {after:?}");
            }
            assert!(after.contains(&(27, "a".to_string(), Some("a9".to_string()))));
            assert!(after.contains(&(29, "c".to_string(), Some("c9".to_string()))));
            assert!(after.len() < 10, "{after:?}");
            assert_eq!(after.last().unwrap(), &(31, "d".to_string(), Some("d0".to_string())));
            assert_eq!(log.log_end_offset(), 32);
            // Reads from an offset that was compacted away continue at the next record.
            assert_eq!(
                crate::protocol::records::decode_records(log.read(3, 1 << 20, i64::MAX, Wait::Yes).unwrap(), 3)
                    .unwrap()[0]
                    .offset,
                27
            );

            // The compacted log reopens, cleanly or not, and takes appends after the same end.
            log.close().await.unwrap();
            drop(log);
            for clean in [true, false] {
                let log = Log::open(&os(), dir.path(), config.clone(), clean).unwrap();
                assert_eq!(records(&log), after);
                assert_eq!(log.log_end_offset(), 32);
            }
            let mut log = Log::open(&os(), dir.path(), config, true).unwrap();
            assert_eq!(log.append(keyed("a", Some("a10")), 0, 0).await.unwrap().base_offset, 32);
        })
    }

    /// The `.log` files in `dir`, by base offset, once the deleter has unlinked the rest.
    pub(super) fn segment_files(dir: &Path) -> Vec<i64> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let names: Vec<String> = std::fs::read_dir(dir)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            if !names.iter().any(|n| n.ends_with(deleter::DELETED_SUFFIX)) {
                let mut bases: Vec<i64> =
                    names.iter().filter_map(|n| n.strip_suffix(".log")).map(|b| b.parse().unwrap()).collect();
                bases.sort_unstable();
                return bases;
            }
            assert!(std::time::Instant::now() < deadline, "deleted files linger: {names:?}");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    #[test]
    fn time_retention_deletes_expired_closed_segments_from_the_head() {
        crate::runtime::file::block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let retention = LogConfig { segment_bytes: 1000, retention_ms: Some(500), ..config() };
            let mut log = Log::open(&os(), dir.path(), retention, false).unwrap();
            for i in 0..80 {
                log.append(batch(2, 1000 + i), 0, 0).await.unwrap();
            }
            let segments = log.segments.len();
            assert!(segments > 4);
            // The newest record of the first segment is not yet 500 ms old.
            assert_eq!(log.apply_retention(1000 + 505).unwrap(), 0);
            assert_eq!(log.log_start_offset(), 0);
            // Later, every closed segment has expired; the active one stays, however old.
            assert_eq!(log.apply_retention(10_000).unwrap(), segments - 1);
            let active_base = log.segments[0].base_offset;
            assert_eq!(log.segments.len(), 1);
            assert_eq!(log.log_start_offset(), active_base);
            log.rename_deleted().await.unwrap();
            assert_eq!(segment_files(dir.path()), vec![active_base]);
            assert!(matches!(
                log.read(active_base - 1, 1000, i64::MAX, Wait::Yes),
                Err(StorageError::OffsetOutOfRange { .. })
            ));
            assert_eq!(read_all(&log, active_base).last().unwrap(), &(158, 2));
            assert_eq!(log.offset_for_timestamp(0, Wait::Yes).unwrap().unwrap().0, active_base);
            // The start survives a reopen: the segment files say where the log begins.
            log.close().await.unwrap();
            drop(log);
            let log = Log::open(&os(), dir.path(), config(), true).unwrap();
            assert_eq!((log.log_start_offset(), log.log_end_offset()), (active_base, 160));
        })
    }

    #[test]
    fn size_retention_keeps_the_log_just_above_its_limit() {
        crate::runtime::file::block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let config = LogConfig { segment_bytes: 1000, retention_bytes: Some(2500), ..config() };
            let mut log = Log::open(&os(), dir.path(), config, false).unwrap();
            for _ in 0..60 {
                log.append(batch(2, 0), 0, 0).await.unwrap();
            }
            assert!(log.size() > 5000);
            assert!(log.apply_retention(0).unwrap() > 0);
            // Deleting the next segment would take the log below the limit.
            assert!(log.size() >= 2500 && log.size() - log.segments[0].size() < 2500, "{}", log.size());
            assert_eq!(log.log_start_offset(), log.segments[0].base_offset);
            assert_eq!(log.apply_retention(0).unwrap(), 0);
        })
    }

    #[test]
    fn retention_needs_the_delete_policy() {
        crate::runtime::file::block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let config = LogConfig {
                segment_bytes: 1000,
                retention_bytes: Some(0),
                retention_ms: Some(0),
                delete: false,
                ..config()
            };
            let mut log = Log::open(&os(), dir.path(), config, false).unwrap();
            for _ in 0..40 {
                log.append(batch(2, 0), 0, 0).await.unwrap();
            }
            assert_eq!(log.apply_retention(i64::MAX / 2).unwrap(), 0);
            assert_eq!(log.log_start_offset(), 0);
        })
    }

    /// `cleanup.policy=compact,delete`: closed segments are compacted, and deleted once expired.
    #[test]
    fn compact_and_delete_policies_work_together() {
        crate::runtime::file::block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let both =
                LogConfig { compact: true, delete: true, segment_bytes: 300, retention_ms: Some(1000), ..config() };
            let mut log = Log::open(&os(), dir.path(), both, false).unwrap();
            for round in 0..10 {
                for key in ["a", "b"] {
                    log.append(keyed(key, Some(&format!("{key}{round}"))), 0, 0).await.unwrap();
                }
            }
            let closed = log.segments.len() - 1;
            assert!(closed > 2);
            log.compact_if_due(0).await.unwrap();
            assert!(records(&log).len() < 20, "compacted");
            // Every closed segment has expired 2 s from now (a segment that compaction emptied
            // has no timestamp left and ages by its file's modification time).
            assert_eq!(log.apply_retention(crate::runtime::now_ms() + 2000).unwrap(), closed);
            assert_eq!(log.log_start_offset(), log.segments[0].base_offset);
            assert_eq!(records(&log).last().unwrap().0, 19);
        })
    }

    #[test]
    fn delete_records_moves_the_start_and_drops_segments_below_it() {
        crate::runtime::file::block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let mut log = Log::open(&os(), dir.path(), LogConfig { segment_bytes: 1000, ..config() }, false).unwrap();
            for _ in 0..40 {
                log.append(batch(2, 0), 0, 0).await.unwrap();
            }
            let second_base = log.segments[1].base_offset;
            let start = second_base + 3;
            assert_eq!(log.delete_records(start).await.unwrap(), start);
            assert_eq!(log.segments[0].base_offset, second_base);
            assert_eq!(segment_files(dir.path())[0], second_base);
            assert!(matches!(
                log.read(start - 1, 1000, i64::MAX, Wait::Yes),
                Err(StorageError::OffsetOutOfRange { .. })
            ));
            // The batch holding the start comes back whole, as in Kafka.
            let first = batches_in(&log.read(start, 1, i64::MAX, Wait::Yes).unwrap())[0];
            assert!(first.0 <= start && start < first.0 + 2);
            // The start never moves back.
            assert_eq!(log.delete_records(1).await.unwrap(), start);
            drop(log);
            for clean in [true, false] {
                let log = Log::open(&os(), dir.path(), config(), clean).unwrap();
                assert_eq!(log.log_start_offset(), start);
                assert_eq!(log.log_end_offset(), 80);
            }
            let mut log = Log::open(&os(), dir.path(), config(), true).unwrap();
            assert_eq!(log.delete_records(80).await.unwrap(), 80);
            assert!(log.read(80, 1000, i64::MAX, Wait::Yes).unwrap().is_empty());
            assert_eq!(log.append(batch(1, 0), 0, 0).await.unwrap().base_offset, 80);
        })
    }

    #[test]
    fn files_left_deleted_by_a_crash_are_removed_at_open() {
        crate::runtime::file::block_on(async {
            let dir = tempfile::tempdir().unwrap();
            Log::open(&os(), dir.path(), config(), false).unwrap().append(batch(1, 0), 0, 0).await.unwrap();
            std::fs::write(dir.path().join("00000000000000000007.log.deleted"), b"old").unwrap();
            let log = Log::open(&os(), dir.path(), config(), false).unwrap();
            assert_eq!(segment_files(dir.path()), vec![0]);
            assert_eq!(log.log_end_offset(), 1);
        })
    }

    /// A deletion stays visible for `delete.retention.ms` after the pass that first kept it
    /// (its batch stamped with the horizon, its timestamp unchanged), then goes; the horizon
    /// survives a restart.
    #[test]
    fn tombstones_are_kept_for_delete_retention_ms() {
        crate::runtime::file::block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let config = LogConfig { compact: true, segment_bytes: 300, delete_retention_ms: 1000, ..config() };
            let mut log = Log::open(&crate::storage::fs::os(), dir.path(), config.clone(), false).unwrap();
            for key in ["a", "b", "a"] {
                log.append(keyed(key, Some(key)), 0, 0).await.unwrap();
            }
            log.append(keyed("b", None), 0, 0).await.unwrap();
            while log.segments.len() < 4 {
                log.append(keyed("filler", Some("f")), 0, 0).await.unwrap();
            }
            let start = 10_000;
            log.compact_if_due(start).await.unwrap();
            let tombstone = (3, "b".to_string(), None);
            let after = records(&log);
            assert!(after.contains(&tombstone), "{after:?}");
            assert!(!after.iter().any(|r| r.0 == 1 || r.0 == 0), "superseded records go at once: {after:?}");
            let bytes = log.read(3, 1, i64::MAX, Wait::Yes).unwrap();
            let header = BatchHeader::parse(&bytes).unwrap();
            assert_eq!(header.delete_horizon_ms(), Some(start + 1000));
            assert_eq!(crate::protocol::records::decode_records(bytes, 3).unwrap()[0].timestamp, 0);

            // Not due yet: no segment closed, the horizon has not passed.
            log.compact_if_due(start + 999).await.unwrap();
            assert!(records(&log).contains(&tombstone));
            log.close().await.unwrap();
            drop(log);
            let mut log = Log::open(&crate::storage::fs::os(), dir.path(), config, true).unwrap();
            log.compact_if_due(start + 500).await.unwrap();
            assert!(records(&log).contains(&tombstone), "a restart does not restart the clock");
            log.compact_if_due(start + 1000).await.unwrap();
            let gone = records(&log);
            assert!(!gone.iter().any(|r| r.1 == "b"), "{gone:?}");
            assert!(gone.contains(&(2, "a".to_string(), Some("a".to_string()))));
        })
    }

    /// Compaction re-encodes a batch that lost records with the producer's codec, copies a
    /// batch that lost nothing byte for byte, and keeps base offsets and offset ranges.
    #[test]
    fn compaction_keeps_the_producers_compression() {
        crate::runtime::file::block_on(async {
            use crate::storage::codec::Codec;
            use crate::storage::records::write_record;
            for codec in [Codec::Gzip, Codec::Snappy, Codec::Lz4, Codec::Zstd] {
                let dir = tempfile::tempdir().unwrap();
                let config = LogConfig { compact: true, segment_bytes: 400, ..config() };
                let mut log = Log::open(&crate::storage::fs::os(), dir.path(), config, false).unwrap();
                // Batches of three keyed records k0, k1, k<2 + i>: k0 and k1 are superseded by later
                // batches, the third key never is.
                let mut originals = Vec::new();
                for i in 0..12 {
                    let mut payload = Vec::new();
                    for (delta, key) in ["k0".to_string(), "k1".to_string(), format!("k{}", 2 + i)].iter().enumerate() {
                        write_record(
                            &mut payload,
                            delta as i64,
                            delta as i32,
                            Some(key.as_bytes()),
                            Some(b"value"),
                            &[0],
                        );
                    }
                    let mut header = BatchHeader::parse(&batch(1, 0)).unwrap();
                    (header.attributes, header.last_offset_delta, header.records_count) = (codec as i16, 2, 3);
                    header.base_timestamp = 1000 * i;
                    let bytes = Bytes::from(batch::assemble(&header, &codec.compress(&payload).unwrap()));
                    originals.push(log.append(bytes, 0, 0).await.unwrap().base_offset);
                }
                assert!(log.segments.len() > 2, "{codec:?}");
                log.compact_if_due(0).await.unwrap();
                let closed_end = log.segments.last().unwrap().base_offset;
                for &base in originals.iter().filter(|&&b| b < closed_end) {
                    let bytes = log.read(base, 1, i64::MAX, Wait::Yes).unwrap();
                    let header = BatchHeader::parse(&bytes).unwrap();
                    assert_eq!((header.base_offset, header.last_offset_delta), (base, 2), "{codec:?}");
                    assert_eq!(header.attributes & 7, codec as i16, "{codec:?}");
                    let decoded = crate::protocol::records::decode_records(bytes.slice(..header.size()), base).unwrap();
                    let keys: Vec<_> =
                        decoded.iter().map(|r| (r.offset - base, r.key.clone().unwrap(), r.timestamp)).collect();
                    let i = base / 3;
                    let third = Bytes::from(format!("k{}", 2 + i));
                    assert_eq!(keys, vec![(2, third, 1000 * i + 2)], "{codec:?}");
                }
                // The open segment is untouched, and still holds the latest k0 and k1.
                let all = records(&log);
                assert!(all.iter().any(|r| r.1 == "k0"), "{codec:?}");
            }
        })
    }

    #[test]
    fn create_time_outside_the_allowed_window_is_refused() {
        crate::runtime::file::block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let bounded = LogConfig { timestamp_before_max_ms: 1000, timestamp_after_max_ms: 100, ..config() };
            let mut log = Log::open(&os(), dir.path(), bounded.clone(), false).unwrap();
            let now = 50_000;
            log.append(batch(2, now - 1000), 0, now).await.unwrap();
            log.append(batch(2, now + 99), 0, now).await.unwrap();
            // Records without a timestamp are not judged.
            log.append(batch(1, -1), 0, now).await.unwrap();
            for stamped in [now - 1001, now + 101] {
                assert!(matches!(log.append(batch(2, stamped), 0, now).await, Err(StorageError::InvalidTimestamp(_))));
            }
            assert_eq!(log.log_end_offset(), 5);
            // Under LogAppendTime the broker's clock is what counts.
            let appended = LogConfig { timestamp_type: TimestampType::LogAppendTime, ..bounded };
            let other_dir = tempfile::tempdir().unwrap();
            let mut log = Log::open(&os(), other_dir.path(), appended, false).unwrap();
            log.append(batch(1, 0), 0, now).await.unwrap();
        })
    }

    #[test]
    fn flush_messages_advances_the_recovery_point() {
        crate::runtime::file::block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let mut log =
                Log::open(&os(), dir.path(), LogConfig { flush_messages: Some(1), ..config() }, false).unwrap();
            log.append(batch(3, 0), 0, 0).await.unwrap();
            assert_eq!(log.recovery_point(), 3);
        })
    }
}

#[cfg(test)]
mod epoch_tests {
    use super::tests::config;
    use super::*;
    use crate::storage::batch::tests::batch;
    use crate::storage::fs::os;
    use crate::storage::leader_epoch::CHECKPOINT_FILE;

    pub(super) fn checkpoint(dir: &Path) -> String {
        std::fs::read_to_string(dir.join(CHECKPOINT_FILE)).unwrap()
    }

    /// Appends one batch of two records per epoch given, returning the log.
    pub(super) async fn log_with_epochs(dir: &Path, config: LogConfig, epochs: &[i32]) -> Log {
        let mut log = Log::open(&os(), dir, config, false).unwrap();
        for &epoch in epochs {
            log.append(batch(2, 0), epoch, 0).await.unwrap();
        }
        log
    }

    #[test]
    fn appends_stamp_their_epoch_and_a_new_epoch_reaches_the_checkpoint() {
        crate::runtime::file::block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let log = log_with_epochs(dir.path(), config(), &[0, 0, 3, 3, 5]).await;
            assert_eq!(checkpoint(dir.path()), "0\n3\n0 0\n3 4\n5 8\n");
            let header = BatchHeader::parse(&log.read(4, 1, i64::MAX, Wait::Yes).unwrap()).unwrap();
            assert_eq!(header.partition_leader_epoch, 3);
            assert_eq!(log.end_offset_for_epoch(3), (3, 8));
            assert_eq!(log.end_offset_for_epoch(4), (3, 8));
            assert_eq!(log.end_offset_for_epoch(5), (5, 10));
            assert_eq!(log.epoch_for_offset(7), Some(3));
        })
    }

    #[test]
    fn a_new_epoch_whose_checkpoint_cannot_be_written_is_refused_before_its_batch() {
        crate::runtime::file::block_on(async {
            let disk = crate::storage::fs::simulated::SimDisk::new();
            let fs: Arc<dyn FileSystem> = disk.clone();
            fs.create_dir_all(Path::new("/data")).unwrap();
            let mut log = Log::open(&fs, Path::new("/data/t-0"), config(), false).unwrap();
            log.append(batch(2, 0), 0, 0).await.unwrap();
            disk.fail_after(0);
            assert!(matches!(log.append(batch(2, 0), 1, 0).await, Err(StorageError::Io(_))));
            assert_eq!((log.log_end_offset(), log.latest_epoch()), (2, Some(0)), "nothing of it was taken");
            disk.fail_after(u64::MAX);
            assert_eq!(log.append(batch(2, 0), 1, 0).await.unwrap().base_offset, 2);
            let checkpoint = fs.read(&Path::new("/data/t-0").join(CHECKPOINT_FILE)).unwrap();
            assert_eq!(checkpoint, b"0\n2\n0 0\n1 2\n");
        })
    }

    #[test]
    fn a_missing_or_broken_checkpoint_is_rebuilt_from_the_batches() {
        crate::runtime::file::block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let one_batch = LogConfig { segment_bytes: batch(2, 0).len() as u64, ..config() };
            let mut log = log_with_epochs(dir.path(), one_batch, &[1, 1, 2, 4, 4]).await;
            assert!(log.segments.len() > 2);
            log.close().await.unwrap();
            drop(log);
            let expected = "0\n3\n1 0\n2 4\n4 6\n";
            for damage in [None, Some("0\n3\n1 0\n")] {
                match damage {
                    None => std::fs::remove_file(dir.path().join(CHECKPOINT_FILE)).unwrap(),
                    Some(text) => std::fs::write(dir.path().join(CHECKPOINT_FILE), text).unwrap(),
                }
                let log = Log::open(&os(), dir.path(), config(), true).unwrap();
                assert_eq!(log.end_offset_for_epoch(2), (2, 6));
                assert_eq!(checkpoint(dir.path()), expected);
            }
        })
    }

    #[test]
    fn recovery_cuts_epochs_past_the_log_end_and_adds_those_after_the_recovery_point() {
        crate::runtime::file::block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let mut log = log_with_epochs(dir.path(), config(), &[0, 2, 2]).await;
            log.close().await.unwrap();
            drop(log);
            // A checkpoint ahead of the log (its epoch's batch was cut off) ...
            std::fs::write(dir.path().join(CHECKPOINT_FILE), "0\n3\n0 0\n2 2\n7 6\n").unwrap();
            let log = Log::open(&os(), dir.path(), config(), true).unwrap();
            assert_eq!(log.latest_epoch(), Some(2));
            assert_eq!(checkpoint(dir.path()), "0\n2\n0 0\n2 2\n");
            drop(log);
            // ... or behind it: the batches after the recovery point tell (none flushed here).
            std::fs::write(dir.path().join(CHECKPOINT_FILE), "0\n1\n0 0\n").unwrap();
            std::fs::remove_file(dir.path().join(RECOVERY_POINT_FILE)).unwrap();
            let log = Log::open(&os(), dir.path(), config(), false).unwrap();
            assert_eq!(log.end_offset_for_epoch(0), (0, 2));
            assert_eq!(checkpoint(dir.path()), "0\n2\n0 0\n2 2\n");
        })
    }

    #[test]
    fn epochs_below_a_moved_log_start_are_dropped() {
        crate::runtime::file::block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let one_batch = LogConfig { segment_bytes: batch(2, 0).len() as u64, ..config() };
            let mut log = log_with_epochs(dir.path(), one_batch, &[0, 0, 1, 1, 1, 2, 2, 2]).await;
            let entries =
                |log: &Log| log.epochs.entries().iter().map(|e| (e.epoch, e.start_offset)).collect::<Vec<_>>();
            assert_eq!(log.delete_records(3).await.unwrap(), 3);
            assert_eq!(entries(&log), vec![(0, 3), (1, 4), (2, 10)]);
            assert_eq!(log.delete_records(5).await.unwrap(), 5);
            assert_eq!(entries(&log), vec![(1, 5), (2, 10)]);
            // Retention moves it to a segment's base.
            let config = LogConfig { retention_bytes: Some(0), ..log.config().clone() };
            log.set_config(config.clone());
            log.apply_retention(0).unwrap();
            let start = log.log_start_offset();
            assert!(start > 10, "{start}");
            assert_eq!(entries(&log), vec![(2, start)]);
            // The checkpoint still has the older entries; the next open cuts them and writes it.
            assert_eq!(checkpoint(dir.path()), "0\n3\n0 0\n1 4\n2 10\n");
            log.close().await.unwrap();
            drop(log);
            let log = Log::open(&os(), dir.path(), config, true).unwrap();
            assert_eq!(entries(&log), vec![(2, start)]);
            assert_eq!(checkpoint(dir.path()), format!("0\n1\n2 {start}\n"));
            assert_eq!(log.end_offset_for_epoch(1), (1, start), "an epoch wholly deleted: the first start");
        })
    }
}

#[cfg(test)]
mod truncation_tests {
    use super::epoch_tests::{checkpoint, log_with_epochs};
    use super::tests::{config, segment_files};
    use super::*;
    use crate::storage::batch::tests::batch;
    use crate::storage::fs::os;
    use crate::storage::leader_epoch::CHECKPOINT_FILE;

    /// Base offset and epoch of every batch, read as a consumer would.
    fn batches(log: &Log) -> Vec<(i64, i32)> {
        let mut out = Vec::new();
        log.scan_headers(log.log_start_offset(), |h| out.push((h.base_offset, h.partition_leader_epoch))).unwrap();
        out
    }

    #[test]
    fn truncation_cuts_segments_indexes_and_epochs() {
        crate::runtime::file::block_on(async {
            let dir = tempfile::tempdir().unwrap();
            // Two batches of two records a segment, an index entry for every batch.
            let config = LogConfig { segment_bytes: 2 * batch(2, 0).len() as u64, index_interval_bytes: 1, ..config() };
            let mut log = Log::open(&os(), dir.path(), config.clone(), false).unwrap();
            for epoch in [0, 0, 1, 1, 1, 2, 2, 2] {
                log.append(batch(2, 0), epoch, 0).await.unwrap();
            }
            assert_eq!(log.segments.len(), 4);
            log.close().await.unwrap();
            // Offset 9 is in the batch at 8: the log ends at 8, the third segment (8..12)
            // and the fourth go.
            assert_eq!(log.truncate_to(9).await.unwrap(), 8);
            assert_eq!(log.log_end_offset(), 8);
            assert_eq!(log.segments.len(), 2);
            // What the recovery point promises is durable, on disk too: nothing past the cut.
            assert!(log.recovery_point() <= 8);
            assert!(read_offset_file(&*os(), dir.path(), RECOVERY_POINT_FILE) <= 8);
            assert_eq!(batches(&log), vec![(0, 0), (2, 0), (4, 1), (6, 1)]);
            assert_eq!(std::fs::read_to_string(dir.path().join(CHECKPOINT_FILE)).unwrap(), "0\n2\n0 0\n1 4\n");
            assert_eq!(log.end_offset_for_epoch(1), (1, 8));
            assert!(matches!(log.read(8, 100, i64::MAX, Wait::Yes), Ok(b) if b.is_empty()));
            // Within one segment now: the batch at 6 goes, its index entry with it.
            assert_eq!(log.truncate_to(6).await.unwrap(), 6);
            assert_eq!(batches(&log), vec![(0, 0), (2, 0), (4, 1)]);
            assert_eq!(log.truncate_to(7).await.unwrap(), 6, "past the log end: nothing to cut");
            // Appends go on from the cut, in a new epoch.
            assert_eq!(log.append(batch(2, 0), 3, 0).await.unwrap().base_offset, 6);
            assert_eq!(log.end_offset_for_epoch(2), (1, 6));
            let expected = vec![(0, 0), (2, 0), (4, 1), (6, 3)];
            assert_eq!(batches(&log), expected);
            log.close().await.unwrap();
            drop(log);
            for clean in [true, false] {
                let log = Log::open(&os(), dir.path(), config.clone(), clean).unwrap();
                assert_eq!(batches(&log), expected, "clean: {clean}");
                assert_eq!(log.end_offset_for_epoch(1), (1, 6));
                // Every offset is found through the indexes.
                for offset in 0..8 {
                    let header = BatchHeader::parse(&log.read(offset, 1, i64::MAX, Wait::Yes).unwrap()).unwrap();
                    assert_eq!(header.base_offset, offset / 2 * 2);
                }
            }
        })
    }

    /// A node that led an epoch and lost the leadership before its first append has the epoch
    /// in its cache at its log end. Its new leader, asked for that epoch, names an older one
    /// diverging there: the fetcher truncates at its log end, which must drop the empty epoch,
    /// or every fetch gets the same answer and the follower never catches up.
    #[test]
    fn truncation_at_the_log_end_drops_an_epoch_that_wrote_nothing() {
        crate::runtime::file::block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let mut log = log_with_epochs(dir.path(), config(), &[0, 1]).await;
            log.assign_epoch(2, 4);
            log.truncate_to(4).await.unwrap();
            assert_eq!(log.latest_epoch(), Some(1));
            assert_eq!(checkpoint(dir.path()), "0\n2\n0 0\n1 2\n");
            assert_eq!(log.log_end_offset(), 4);
        })
    }

    #[test]
    fn truncation_below_the_log_start_is_refused() {
        crate::runtime::file::block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let mut log = Log::open(&os(), dir.path(), config(), false).unwrap();
            for _ in 0..3 {
                log.append(batch(2, 0), 0, 0).await.unwrap();
            }
            log.delete_records(3).await.unwrap();
            assert!(matches!(log.truncate_to(2).await, Err(StorageError::OffsetOutOfRange { .. })));
            // The batch holding 3 starts at 2, below the log start: it cannot go.
            assert!(matches!(log.truncate_to(3).await, Err(StorageError::OffsetOutOfRange { .. })));
            assert_eq!(log.truncate_to(4).await.unwrap(), 4);
            assert_eq!((log.log_start_offset(), log.log_end_offset()), (3, 4));
        })
    }

    fn snapshot_files(dir: &Path) -> Vec<String> {
        let names = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned());
        names.filter(|n| n.ends_with(".snapshot")).collect()
    }

    #[test]
    fn a_restart_past_the_end_empties_the_log_and_survives_a_reopen() {
        crate::runtime::file::block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let config = LogConfig { segment_bytes: 2 * batch(2, 0).len() as u64, ..config() };
            let mut log = log_with_epochs(dir.path(), config.clone(), &[0, 0, 1, 1, 1]).await;
            assert_eq!(log.segments.len(), 3);
            std::fs::write(dir.path().join(format!("{:020}.snapshot", 4)), b"producers").unwrap();
            log.restart_at(20).await.unwrap();
            assert_eq!((log.log_start_offset(), log.log_end_offset(), log.recovery_point()), (20, 20, 20));
            assert_eq!(segment_files(dir.path()), vec![20]);
            assert_eq!(log.latest_epoch(), None);
            assert_eq!(checkpoint(dir.path()), "0\n0\n");
            assert!(snapshot_files(dir.path()).is_empty());
            assert!(matches!(log.read(10, 100, i64::MAX, Wait::Yes), Err(StorageError::OffsetOutOfRange { .. })));
            // Appends go on from the new start, in the leader's epoch.
            assert_eq!(log.append(batch(2, 0), 3, 0).await.unwrap().base_offset, 20);
            assert_eq!(batches(&log), vec![(20, 3)]);
            log.close().await.unwrap();
            drop(log);
            for clean in [true, false] {
                let log = Log::open(&os(), dir.path(), config.clone(), clean).unwrap();
                assert_eq!((log.log_start_offset(), log.log_end_offset()), (20, 22), "clean: {clean}");
                assert_eq!(batches(&log), vec![(20, 3)]);
                assert_eq!(log.end_offset_for_epoch(3), (3, 22));
                assert_eq!(log.end_offset_for_epoch(1), (1, 20), "no epoch before the new start");
            }
        })
    }

    #[test]
    fn a_restart_cut_short_by_a_crash_is_finished_at_open() {
        crate::runtime::file::block_on(async {
            let config = LogConfig { segment_bytes: 2 * batch(2, 0).len() as u64, ..config() };
            // A crash once the log start's file was written, and once the new segment existed
            // too, before the old segments were renamed away.
            for with_new_segment in [false, true] {
                let dir = tempfile::tempdir().unwrap();
                let mut log = log_with_epochs(dir.path(), config.clone(), &[0, 0, 1, 1, 1]).await;
                log.close().await.unwrap();
                drop(log);
                std::fs::write(dir.path().join(format!("{:020}.snapshot", 4)), b"producers").unwrap();
                write_offset_file(&*os(), dir.path(), LOG_START_OFFSET_FILE, 20).unwrap();
                if with_new_segment {
                    LeaderEpochCache::empty(dir.path()).write(&*os()).unwrap();
                    crate::storage::producer_state::remove_snapshots(&*os(), dir.path()).unwrap();
                    Segment::create_files(&*os(), dir.path(), 20).unwrap();
                }
                let log = Log::open(&os(), dir.path(), config.clone(), false).unwrap();
                assert_eq!((log.log_start_offset(), log.log_end_offset()), (20, 20), "{with_new_segment}");
                assert_eq!(segment_files(dir.path()), vec![20]);
                assert_eq!(log.latest_epoch(), None);
                assert!(snapshot_files(dir.path()).is_empty());
            }
        })
    }
}
