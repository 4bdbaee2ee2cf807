//! One partition on its owning shard: the log plus the replication-facing offsets.
//!
//! Invariants: `log_start_offset <= high_watermark <= log_end_offset`. With a single replica
//! the high watermark follows the log end once an append's write has completed, so reads never
//! reach bytes still being written.
//!
//! A [`Partition`] is a handle (cloned cheaply) on state that lives on its shard. Appends are
//! queued in the order they are made (the order of the requests) and written one at a time
//! by the partition's writer task (single writer), so that two appends never interleave nor
//! overtake each other, and a request dropped halfway never leaves an append half done: each
//! is validated and stamped (no system call), written through the shard's io_uring, then
//! taken into the log; reads and other partitions go on meanwhile. No `RefCell` borrow of the
//! state is held across an `.await`.
//!
//! Group commit: an append that must be durable before its answer (`write.caching=false`, or
//! `flush.messages` reached) waits for an fsync of its segment submitted after its write
//! completed. One fsync is in flight per partition at a time; every append that finished
//! before it was submitted is covered by it, and the waiters it does not cover get the next
//! one, started when it completes. So N producers waiting together cost about two fsyncs,
//! not N. An fsync that fails fails every
//! waiter (KAFKA_STORAGE_ERROR) and marks the partition failed: after a failed fsync the
//! kernel may have dropped the dirty pages while marking them clean, so the unsynced tail
//! cannot be trusted or retried; appends are refused until a restart recovers the log from
//! its recovery point. Reads keep working. So after a truncation whose files failed: the log
//! is cut in memory and maybe not on disk.
//!
//! Idempotent producers: each batch carrying a producer id must continue that producer's
//! sequence; a retry of one of its last few batches is answered with the original offsets
//! instead of being written twice. That state ([`ProducerStates`]) is snapshotted when the log
//! rolls and at close, and rebuilt from the log after a crash, so it survives restarts.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use futures::channel::oneshot;

use crate::replication::replicas::ReplicaSet;
use crate::runtime::zero_copy::FileSlice;
use crate::runtime::{Semaphore, spawn_local};
use crate::storage::batch::BatchHeader;
use crate::storage::fs::FileSystem;
use crate::storage::leader_epoch::{UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET};
use crate::storage::producer_state::{Checked, ProducerExpiry, ProducerStates, SequenceError};
use crate::storage::{AppendInfo, CheckpointWrite, Log, LogConfig, Roll, Staged, Staging, StorageError, Wait};

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
    /// An fsync of the partition failed: what it covered may be lost, so appends are refused
    /// until a restart recovers the log (see the module doc). So does a truncation whose file
    /// work failed.
    #[error("an fsync or a truncation of the partition failed; appends are refused until a restart")]
    SyncFailed,
    /// The log refused the operation (validation) or failed (I/O).
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// An idempotent producer's batch does not continue its sequence.
    #[error(transparent)]
    Sequence(#[from] SequenceError),
    /// Transactional and control batches are refused until transactions are supported.
    #[error("transactional and control batches are not supported")]
    Transactional,
    /// This node does not lead the partition (any more): a produce or a replica's fetch went to
    /// a follower, a broker that holds no replica fetched as one, or leadership moved while an
    /// acks=-1 produce waited for its replicas (NOT_LEADER_OR_FOLLOWER).
    #[error("not the leader")]
    NotLeader,
    /// acks=-1: written, but the ISR had shrunk below `min.insync.replicas` once the high
    /// watermark covered it (NOT_ENOUGH_REPLICAS_AFTER_APPEND; the produce handler refuses an
    /// ISR already too small before anything is written, NOT_ENOUGH_REPLICAS).
    #[error("written, but {isr} in-sync replicas, {min_insync_replicas} required")]
    NotEnoughReplicasAfterAppend { isr: usize, min_insync_replicas: usize },
    /// acks=-1: the replicas did not all have it within the request's timeout (REQUEST_TIMED_OUT).
    #[error("the in-sync replicas did not replicate it in time")]
    ReplicationTimedOut,
    /// DeleteRecords to an offset outside `[0, high_watermark]`.
    #[error("offset {offset} outside [0, {high_watermark}]")]
    BeyondHighWatermark { offset: i64, high_watermark: i64 },
    /// A request's `current_leader_epoch` is older than the partition's: the client's
    /// metadata is stale (FENCED_LEADER_EPOCH).
    #[error("leader epoch {requested} is older than the partition's {current}")]
    FencedLeaderEpoch { requested: i32, current: i32 },
    /// A request's `current_leader_epoch` is newer than the partition's: this broker has not
    /// heard of that leader yet (UNKNOWN_LEADER_EPOCH).
    #[error("leader epoch {requested} is newer than the partition's {current}")]
    UnknownLeaderEpoch { requested: i32, current: i32 },
}

/// A request's `current_leader_epoch` meaning "not given": no check.
const NO_LEADER_EPOCH: i32 = -1;

/// DeleteRecords' offset meaning "up to the high watermark".
const HIGH_WATERMARK: i64 = -1;

/// Loads a fetch's read may make before its last try, which may wait for the disk. Each load
/// brings in what a try lacked (a batch header, and the kernel's readahead after it), so a few
/// suffice unless memory is so short that pages are evicted as fast as they are loaded.
const FETCH_LOADS_MAX: u32 = 8;

/// A shard's counters of its partitions' writes and fsyncs, for `/metrics`: group commit shows
/// as far fewer fsyncs than appends covered; the times, from each operation's submission to
/// its completion, include waiting for a kernel worker (`num.io.threads`).
#[derive(Default)]
pub struct SyncCounters {
    /// fsyncs submitted by group commit and `flush.ms`.
    pub fsyncs: Cell<u64>,
    /// Appends acknowledged once an fsync covered them.
    pub covered_appends: Cell<u64>,
    /// Microseconds the fsyncs took, summed.
    pub fsync_micros: Cell<u64>,
    /// Writes of staged appends to segments (each may gather several appends).
    pub writes: Cell<u64>,
    /// Microseconds the writes took, summed.
    pub write_micros: Cell<u64>,
}

impl SyncCounters {
    fn add_micros(sum: &Cell<u64>, since: std::time::Instant) {
        sum.set(sum.get() + since.elapsed().as_micros() as u64);
    }
}

/// A handle on one partition; clones share it.
#[derive(Clone)]
pub struct Partition(Rc<Shared>);

struct Shared {
    state: RefCell<State>,
    counters: Rc<SyncCounters>,
    /// One permit: DeleteRecords take turns.
    delete_records_turn: Semaphore,
    /// One permit, held by a compaction pass in flight (truncation waits for it).
    compaction_turn: Rc<Semaphore>,
    /// One permit, held while the files of segments deleted from the head are renamed on a
    /// helper thread (a close waits for it).
    renames_turn: Rc<Semaphore>,
}

/// Most bytes the writer gathers into one write from the appends queued on a partition
/// (one larger append is written alone): each write costs a hand-off to the kernel's worker
/// (ext4 takes no buffered write without blocking), so appends that queued up meanwhile share
/// one; the bound keeps the copy they are gathered in, and the wait of the first of them, small.
const COALESCED_WRITE_BYTES_MAX: usize = 1 << 20;

/// An append's outcome, and whether it must be durable before it is answered.
type Outcome = Result<(AppendInfo, bool), PartitionError>;

/// An append waiting for the writer task.
struct QueuedAppend {
    batches: Bytes,
    now_ms: i64,
    /// Batches a follower fetched from its leader, kept as they are (`Log::stage_replica`).
    replica: bool,
    done: oneshot::Sender<Outcome>,
}

/// An append staged in the write the writer task is gathering.
struct Member {
    /// Its batches' headers, for the producers' state once it is written.
    headers: Vec<BatchHeader>,
    now_ms: i64,
    replica: bool,
    done: oneshot::Sender<Outcome>,
}

/// What the writer does with an append.
enum Stage {
    /// It is answered without being written: refused, or a retry of a batch in the log.
    Answer(Outcome),
    /// What the log did with it.
    Log(Staging),
}

/// What the writer waits for, on a helper thread, before it stages again.
enum Before {
    /// The active segment's roll, for this append that did not fit in it.
    Roll(Roll, QueuedAppend),
    /// The leader-epoch checkpoint, for this append of a new epoch, or (`None`) for the epoch
    /// the partition became leader in.
    Checkpoint(CheckpointWrite, Option<QueuedAppend>),
}

/// An acks=-1 append waiting for the high watermark to reach its `end`.
struct ReplicationWaiter {
    end: i64,
    min_insync_replicas: usize,
    tell: oneshot::Sender<Result<(), PartitionError>>,
}

struct State {
    log: Log,
    dir: PathBuf,
    high_watermark: i64,
    leader_epoch: i32,
    /// Whether this node leads the partition: only a leader puts its epoch in the leader-epoch
    /// cache before it has written (a follower's cache follows the leader's batches).
    leads: bool,
    /// Whether another node leads it: its high watermark is then the leader's, as its fetcher
    /// hears it, capped by the log end ([`Partition::set_follower_high_watermark`]). Otherwise
    /// (leading, or not told yet) it is the lowest log end in the ISR.
    follows: bool,
    /// What this node knows of the other replicas while it leads.
    replicas: ReplicaSet,
    /// The image's assignment as last set: this node, the replicas, the ISR, the partition epoch.
    assignment: (i32, Vec<i32>, Vec<i32>, i32),
    /// An ISR change this leader proposed (AlterPartition) against the image's partition epoch,
    /// until an image past that epoch, or a refusal, settles it. Meanwhile the high watermark
    /// counts every replica in the ISR before or after the change (KIP-497's maximal ISR): a
    /// replica being added may lead once the change commits, so it must have all that is
    /// acknowledged by then.
    proposed_isr: Option<(i32, Vec<i32>)>,
    /// acks=-1 appends waiting for the high watermark; bounded by the requests in flight.
    replication_waiters: Vec<ReplicationWaiter>,
    /// Truncations waiting for the writer and the fsync in flight to be done.
    idle_waiters: Vec<oneshot::Sender<()>>,
    /// Fetches parked until this partition gets new data (woken on every append).
    data_waiters: Vec<oneshot::Sender<()>>,
    producers: ProducerStates,
    /// The offset the fsync in flight makes durable.
    sync_in_flight: Option<i64>,
    /// Appends waiting to be durable: the offset after each, and where to say so.
    durability_waiters: Vec<(i64, oneshot::Sender<Result<(), PartitionError>>)>,
    /// Why appends are refused: an fsync or a truncation failed (see the module doc).
    failed: Option<String>,
    /// Appends made and not yet written, in order; bounded by the requests in flight.
    appends: VecDeque<QueuedAppend>,
    /// Whether the writer task is running (it stops when the queue is empty).
    writing: bool,
    /// Whether a truncation is under way (`Partition::truncate_to`): no retention meanwhile.
    truncating: bool,
    /// Set when the topic is deleted: appends still queued are refused, so that none writes
    /// (or rolls a segment) under a directory name a new topic may have taken.
    deleted: bool,
}

impl Partition {
    /// Opens (and on an unclean start, recovers) the partition's log in `dir`, and its
    /// producers' state. It leads in no epoch until [`Partition::set_leadership`] says so.
    pub fn open(
        fs: &Arc<dyn FileSystem>,
        dir: &Path,
        config: LogConfig,
        expiry: ProducerExpiry,
        leader_epoch: i32,
        clean_shutdown: bool,
        counters: Rc<SyncCounters>,
    ) -> Result<Partition, StorageError> {
        let log = Log::open(fs, dir, config, clean_shutdown)?;
        let producers = ProducerStates::load(dir, &log, expiry, crate::runtime::now_ms())?;
        Ok(Partition::of(log, producers, dir, leader_epoch, counters))
    }

    /// [`Partition::open`] without blocking the shard: the log is opened (and recovered) and
    /// the producers' state loaded on the shard's blocking pool, as long work (a few partitions
    /// of a shard at once); the shard then only opens the segments' files again.
    pub async fn open_off_thread(
        fs: &Arc<dyn FileSystem>,
        dir: &Path,
        config: LogConfig,
        expiry: ProducerExpiry,
        leader_epoch: i32,
        clean_shutdown: bool,
        counters: Rc<SyncCounters>,
    ) -> Result<Partition, StorageError> {
        let (helper_fs, helper_dir) = (fs.clone(), dir.to_path_buf());
        let (log, producers) = crate::runtime::file::run_long(move || {
            let log = Log::open(&helper_fs, &helper_dir, config, clean_shutdown)?;
            let producers = ProducerStates::load(&helper_dir, &log, expiry, crate::runtime::now_ms())?;
            Ok::<_, StorageError>((log.detach(), producers))
        })
        .await?;
        Ok(Partition::of(Log::attach(fs, log)?, producers, dir, leader_epoch, counters))
    }

    /// The partition of an opened log and its producers' state.
    fn of(log: Log, producers: ProducerStates, dir: &Path, leader_epoch: i32, counters: Rc<SyncCounters>) -> Partition {
        let high_watermark = log.log_end_offset();
        let state = State {
            log,
            dir: dir.to_path_buf(),
            high_watermark,
            leader_epoch,
            leads: false,
            follows: false,
            replicas: ReplicaSet::default(),
            assignment: (crate::cluster::NO_LEADER, Vec::new(), Vec::new(), 0),
            proposed_isr: None,
            replication_waiters: Vec::new(),
            idle_waiters: Vec::new(),
            data_waiters: Vec::new(),
            producers,
            sync_in_flight: None,
            durability_waiters: Vec::new(),
            failed: None,
            appends: VecDeque::new(),
            writing: false,
            truncating: false,
            deleted: false,
        };
        Partition(Rc::new(Shared {
            state: RefCell::new(state),
            counters,
            delete_records_turn: Semaphore::new(1),
            compaction_turn: Rc::new(Semaphore::new(1)),
            renames_turn: Rc::new(Semaphore::new(1)),
        }))
    }

    /// Validates and appends the batches of one produce request, wakes parked fetches, and
    /// answers once the flush policy is met. A retried idempotent batch is answered with its
    /// original offsets and not written. The append is queued at once, behind the appends made
    /// before it; dropping the returned future does not stop it.
    pub fn append(
        &self,
        batches: Bytes,
        now_ms: i64,
    ) -> impl std::future::Future<Output = Result<AppendInfo, PartitionError>> + 'static {
        let (done, answer) = oneshot::channel();
        let start_writer = {
            let mut state = self.0.state.borrow_mut();
            state.appends.push_back(QueuedAppend { batches, now_ms, replica: false, done });
            !std::mem::replace(&mut state.writing, true)
        };
        if start_writer {
            self.start_writer();
        }
        let partition = self.clone();
        async move {
            let (info, durable_before_answer) = answer.await.unwrap_or(Err(PartitionError::SyncFailed))?;
            partition.wait_durable_if_required(info.last_offset + 1, durable_before_answer).await?;
            Ok(info)
        }
    }

    fn start_writer(&self) {
        let partition = self.clone();
        spawn_local(async move { partition.write_queued().await }).detach();
    }

    /// A follower's append of the batches its fetcher got from the leader, kept as they are
    /// (offsets, epochs, timestamps; `Log::stage_replica` checks each CRC). Queued behind the
    /// appends made before it, one append per run of batches of one leader epoch (the cache
    /// takes a new epoch at the start of a write). Returns the offset after its last batch.
    pub fn append_replica(
        &self,
        batches: Bytes,
        now_ms: i64,
    ) -> impl std::future::Future<Output = Result<i64, PartitionError>> + 'static {
        let mut answers = Vec::new();
        let start_writer = {
            let mut state = self.0.state.borrow_mut();
            for run in epoch_runs(&batches) {
                let (done, answer) = oneshot::channel();
                state.appends.push_back(QueuedAppend { batches: run, now_ms, replica: true, done });
                answers.push(answer);
            }
            !answers.is_empty() && !std::mem::replace(&mut state.writing, true)
        };
        if start_writer {
            self.start_writer();
        }
        let partition = self.clone();
        async move {
            let mut end = partition.log_end_offset();
            for answer in answers {
                let (info, durable_before_answer) = answer.await.unwrap_or(Err(PartitionError::SyncFailed))?;
                end = info.last_offset + 1;
                partition.wait_durable_if_required(end, durable_before_answer).await?;
            }
            Ok(end)
        }
    }

    /// The writer task: writes the queued appends in order until none is left, those queued
    /// together in one write, and the leader-epoch checkpoint when the partition became
    /// leader in a new epoch. The one task that writes the partition's files while `writing`.
    async fn write_queued(&self) {
        while let Some((staged, members)) = self.stage_queued().await {
            self.write(staged, members).await;
        }
    }

    /// Stages the appends at the head of the queue, in order, for one write: as many as fit in
    /// [`COALESCED_WRITE_BYTES_MAX`] (at least one) and in the active segment, rolling it
    /// first if the first does not fit, and writing the leader-epoch checkpoint first if its
    /// epoch is new. Appends refused, and retries (answered with their original offsets), are
    /// answered at once. `None` when the queue is empty and the checkpoint written (or failed):
    /// the writer stops.
    async fn stage_queued(&self) -> Option<(Staged, Vec<Member>)> {
        let mut staged = {
            let state = self.0.state.borrow();
            let mut bytes = 0;
            for append in &state.appends {
                if bytes > 0 && bytes + append.batches.len() > COALESCED_WRITE_BYTES_MAX {
                    break;
                }
                bytes += append.batches.len();
            }
            Staged::with_capacity(bytes)
        };
        let mut members: Vec<Member> = Vec::new();
        // A checkpoint for a new leader epoch alone (no append waiting) failed: not retried
        // until an append needs it.
        let mut leading_checkpoint_failed = false;
        'queue: loop {
            // Stages appends until the write is full, or the first must wait for a roll or for
            // the leader-epoch checkpoint.
            let before = 'stage: {
                let mut state = self.0.state.borrow_mut();
                let Some(next) = state.appends.front() else {
                    if members.is_empty() {
                        let state = &mut *state;
                        // The leader epoch changed while appends were written (`set_leadership`).
                        if state.leads && state.log.latest_epoch() != Some(state.leader_epoch) {
                            let log_end_offset = state.log.log_end_offset();
                            state.log.assign_epoch(state.leader_epoch, log_end_offset);
                        }
                        if !leading_checkpoint_failed && let Some(write) = state.log.begin_checkpoint(None) {
                            break 'stage Before::Checkpoint(write, None);
                        }
                        state.writing = false;
                        state.wake_idle_waiters();
                        return None;
                    }
                    return Some((staged, members));
                };
                let headers = match batch_headers(&next.batches, next.replica) {
                    Ok(headers) => headers,
                    Err(e) => {
                        let next = state.appends.pop_front().expect("looked at");
                        let _ = next.done.send(Err(e));
                        continue 'queue;
                    }
                };
                // A producer's next batch is checked against the state its previous one
                // recorded once written: a producer's appends go in separate writes.
                let joins = staged.len() + next.batches.len() <= COALESCED_WRITE_BYTES_MAX
                    && !members.iter().any(|m| shares_producer(&m.headers, &headers));
                if !members.is_empty() && !joins {
                    return Some((staged, members));
                }
                let next = state.appends.pop_front().expect("looked at");
                match state.stage(&mut staged, &next.batches, &headers, next.now_ms, next.replica) {
                    Stage::Answer(outcome) => {
                        let _ = next.done.send(outcome);
                        continue 'queue;
                    }
                    Stage::Log(Staging::Staged) => {
                        let replica = next.replica;
                        members.push(Member { headers, now_ms: next.now_ms, replica, done: next.done });
                        continue 'queue;
                    }
                    Stage::Log(Staging::WriteFirst) => {
                        state.appends.push_front(next);
                        return Some((staged, members));
                    }
                    Stage::Log(Staging::RollFirst) => Before::Roll(state.log.begin_roll(), next),
                    Stage::Log(Staging::CheckpointFirst(assign)) => {
                        let write = state.log.begin_checkpoint(assign);
                        Before::Checkpoint(write.expect("the checkpoint is behind"), Some(next))
                    }
                }
            };
            match before {
                Before::Roll(roll, next) => self.roll(roll, next).await,
                Before::Checkpoint(mut write, next) => {
                    let outcome = write.run().await;
                    let mut state = self.0.state.borrow_mut();
                    match (state.log.finish_checkpoint(write, outcome), next) {
                        // Staged again, now that the file holds its epoch.
                        (Ok(()), Some(next)) => state.appends.push_front(next),
                        (Ok(()), None) => {}
                        (Err(e), Some(next)) => {
                            let _ = next.done.send(Err(state.refused(e)));
                        }
                        (Err(e), None) => {
                            leading_checkpoint_failed = true;
                            tracing::warn!(dir = %state.dir.display(), error = %e, "writing the leader-epoch checkpoint");
                        }
                    }
                }
            }
        }
    }

    /// Rolls the active segment for `next`, which did not fit in it, and puts `next` back at
    /// the head of the queue (or refuses it if the roll failed).
    async fn roll(&self, mut roll: Roll, next: QueuedAppend) {
        let outcome = roll.run().await;
        let snapshot = {
            let mut state = self.0.state.borrow_mut();
            match state.log.finish_roll(roll, outcome, next.now_ms) {
                Ok(()) => {
                    // The state so far is the state at the new segment's base.
                    let snapshot = state.producers.snapshot_writer(state.log.active_base_offset());
                    // Staged again, into the new segment.
                    state.appends.push_front(next);
                    Some((snapshot, state.dir.clone()))
                }
                Err(e) => {
                    let _ = next.done.send(Err(state.refused(e)));
                    None
                }
            }
        };
        if let Some((snapshot, dir)) = snapshot
            && let Err(e) = crate::runtime::file::run_blocking(snapshot).await
        {
            tracing::warn!(dir = %dir.display(), error = %e, "writing a producer snapshot");
        }
    }

    /// Writes the staged appends with one write and takes them into the log; answers each,
    /// in order. A failed write fails them all, once the log has cut it back off the file
    /// (`runtime::file::RingFile::truncate`; the writer writes nothing meanwhile).
    async fn write(&self, staged: Staged, members: Vec<Member>) {
        let (pending, write) = self.0.state.borrow_mut().log.write_staged(staged);
        let submitted = std::time::Instant::now();
        let written = write.await;
        let counters = &self.0.counters;
        counters.writes.set(counters.writes.get() + 1);
        SyncCounters::add_micros(&counters.write_micros, submitted);
        let finished = self.0.state.borrow_mut().log.finish_write(pending, written);
        let mut state = self.0.state.borrow_mut();
        let appends = match finished {
            Ok(appends) => appends,
            Err(failed) => {
                drop(state);
                failed.cut_back.await;
                let e = self.0.state.borrow().refused(failed.error);
                for member in members {
                    let each = std::io::Error::other(e.to_string());
                    let _ = member.done.send(Err(PartitionError::Storage(StorageError::Io(each))));
                }
                return;
            }
        };
        for (member, (info, durable_before_answer)) in members.into_iter().zip(appends) {
            if member.replica {
                // The leader's batches keep their offsets, which compaction may have spaced.
                for header in &member.headers {
                    state.producers.record(std::slice::from_ref(header), &replicated(header), member.now_ms);
                }
            } else {
                state.producers.record(&member.headers, &info, member.now_ms);
            }
            let _ = member.done.send(Ok((info, durable_before_answer)));
        }
        // Wakes fetches parked for data, replicas' among them, whether or not it is committed.
        state.advance_high_watermark();
        state.wake_data_waiters();
    }

    /// Waits until everything below `end` is durable when `durable_before_answer`
    /// (`write.caching=false`, or `flush.messages` reached); otherwise only starts the fsync
    /// `flush.ms` may be due.
    async fn wait_durable_if_required(&self, end: i64, durable_before_answer: bool) -> Result<(), PartitionError> {
        let waiting = {
            let mut state = self.0.state.borrow_mut();
            if !durable_before_answer || state.log.recovery_point() >= end {
                None
            } else if state.failed.is_some() {
                return Err(PartitionError::SyncFailed);
            } else {
                let (tell, wait) = oneshot::channel();
                state.durability_waiters.push((end, tell));
                Some(wait)
            }
        };
        let flush_due = waiting.is_some() || self.0.state.borrow().log.flush_due(crate::runtime::now_ms());
        if flush_due {
            self.start_sync();
        }
        match waiting {
            Some(wait) => wait.await.unwrap_or(Err(PartitionError::SyncFailed)),
            None => Ok(()),
        }
    }

    /// Starts an fsync covering every append finished so far, unless one is in flight (its
    /// completion starts the next one if waiters are left).
    fn start_sync(&self) {
        let started = {
            let mut state = self.0.state.borrow_mut();
            if state.sync_in_flight.is_some() || state.failed.is_some() {
                return;
            }
            let now = crate::runtime::now_ms();
            let started = state.log.begin_sync(now);
            if let Some((target, _)) = &started {
                state.sync_in_flight = Some(*target);
            }
            started
        };
        let Some((target, sync)) = started else {
            // Everything is durable already (a roll synced it): nobody needs to wait.
            self.sync_completed(self.0.state.borrow().log.recovery_point(), Ok(()));
            return;
        };
        self.0.counters.fsyncs.set(self.0.counters.fsyncs.get() + 1);
        let partition = self.clone();
        let submitted = std::time::Instant::now();
        spawn_local(async move {
            let synced = sync.await;
            SyncCounters::add_micros(&partition.0.counters.fsync_micros, submitted);
            partition.sync_completed(target, synced);
        })
        .detach();
    }

    /// Answers the waiters the fsync up to `target` covered, or on failure all of them, and
    /// starts the next fsync for those it did not cover.
    fn sync_completed(&self, target: i64, synced: std::io::Result<()>) {
        let more = {
            let mut state = self.0.state.borrow_mut();
            if state.sync_in_flight == Some(target) {
                state.sync_in_flight = None;
                state.wake_idle_waiters();
            }
            match synced {
                Ok(()) => {
                    state.log.finish_sync(target);
                    let durable = state.log.recovery_point();
                    let waiters = std::mem::take(&mut state.durability_waiters);
                    let (covered, left): (Vec<_>, Vec<_>) = waiters.into_iter().partition(|(end, _)| *end <= durable);
                    let counters = &self.0.counters;
                    counters.covered_appends.set(counters.covered_appends.get() + covered.len() as u64);
                    for (_, tell) in covered {
                        let _ = tell.send(Ok(()));
                    }
                    state.durability_waiters = left;
                }
                Err(e) => {
                    tracing::error!(dir = %state.dir.display(), error = %e, "fsync failed; the partition refuses appends until a restart recovers it");
                    state.failed = Some(format!("an fsync failed: {e}"));
                    for (_, tell) in state.durability_waiters.drain(..) {
                        let _ = tell.send(Err(PartitionError::SyncFailed));
                    }
                }
            }
            !state.durability_waiters.is_empty()
        };
        if more {
            self.start_sync();
        }
    }

    /// Whole batches from `offset`, up to `max_bytes` (at least one batch), below the high
    /// watermark; read synchronously, waiting for the disk if need be (tests).
    pub fn read(&self, offset: i64, max_bytes: usize) -> Result<Bytes, StorageError> {
        let state = self.0.state.borrow();
        state.log.read(offset, max_bytes, state.high_watermark, Wait::Yes)
    }

    /// The batches [`Partition::read`] would return, for a fetch: the shard never waits for
    /// the disk ([`Partition::read_for_fetch`]); `loads` counts the loads it took.
    pub async fn fetch_bytes(
        &self,
        offset: i64,
        max_bytes: usize,
        limit: ReadLimit,
        loads: &mut u64,
    ) -> Result<Bytes, StorageError> {
        self.read_for_fetch(loads, limit, |log, max_offset, wait| log.read(offset, max_bytes, max_offset, wait)).await
    }

    /// The same batches as a file range to send without a copy, for a fetch.
    pub async fn fetch_slice(
        &self,
        offset: i64,
        max_bytes: usize,
        limit: ReadLimit,
        loads: &mut u64,
    ) -> Result<Option<FileSlice>, StorageError> {
        self.read_for_fetch(loads, limit, |log, max_offset, wait| log.read_slice(offset, max_bytes, max_offset, wait))
            .await
    }

    /// Runs `read` (given the log, the offset `limit` stands for and how to wait) from the page cache
    /// only; where it meets bytes that are not cached (a consumer far behind), loads them
    /// through the shard's io_uring, the shard serving others meanwhile, and reads again from
    /// scratch (the log may have moved). Only the last of [`FETCH_LOADS_MAX`] tries may wait
    /// for the disk, should pages be evicted as fast as they are loaded. Adds its loads to
    /// `loads`.
    async fn read_for_fetch<T>(
        &self,
        loads: &mut u64,
        limit: ReadLimit,
        read: impl Fn(&Log, i64, Wait) -> Result<T, StorageError>,
    ) -> Result<T, StorageError> {
        for tries in 0.. {
            let wait = if tries < FETCH_LOADS_MAX { Wait::No } else { Wait::Yes };
            let load = {
                let state = self.0.state.borrow();
                match read(&state.log, state.read_limit(limit), wait) {
                    Err(StorageError::NotCached { base_offset, position, len }) => {
                        state.log.load(base_offset, position, len)
                    }
                    done => return done,
                }
            };
            if let Some(load) = load {
                *loads += 1;
                load.await?;
            }
        }
        unreachable!("the tries end with the one that may wait")
    }

    /// A receiver that fires on the next append or move of the high watermark.
    pub fn wait_for_data(&self) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        let mut state = self.0.state.borrow_mut();
        // Drop waiters whose fetch already gave up, so the list stays bounded by live fetches.
        state.data_waiters.retain(|w| !w.is_canceled());
        state.data_waiters.push(tx);
        rx
    }

    /// ListOffsets by time: the first record at or after `timestamp_ms` (offset, timestamp).
    /// Like a fetch, it never waits for the disk on the shard's thread: what is not cached is
    /// loaded through the ring ([`Partition::read_for_fetch`]).
    pub async fn offset_for_timestamp(&self, timestamp_ms: i64) -> Result<Option<(i64, i64)>, StorageError> {
        self.read_for_fetch(&mut 0, ReadLimit::HighWatermark, |log, _, wait| {
            log.offset_for_timestamp(timestamp_ms, wait)
        })
        .await
    }

    /// ListOffsets' max-timestamp query, read as [`Partition::offset_for_timestamp`] reads.
    pub async fn max_timestamp_offset(&self) -> Result<Option<(i64, i64)>, StorageError> {
        self.read_for_fetch(&mut 0, ReadLimit::HighWatermark, |log, _, wait| log.max_timestamp_offset(wait)).await
    }

    pub fn log_start_offset(&self) -> i64 {
        self.0.state.borrow().log.log_start_offset()
    }

    pub fn log_end_offset(&self) -> i64 {
        self.0.state.borrow().log.log_end_offset()
    }

    pub fn high_watermark(&self) -> i64 {
        self.0.state.borrow().high_watermark
    }

    pub fn leader_epoch(&self) -> i32 {
        self.0.state.borrow().leader_epoch
    }

    /// Where a read up to `limit` stops: the high watermark or the log end.
    pub fn read_limit(&self, limit: ReadLimit) -> i64 {
        self.0.state.borrow().read_limit(limit)
    }

    /// Whether both handles are on one partition (not a deleted one's namesake).
    pub fn same(&self, other: &Partition) -> bool {
        Rc::ptr_eq(&self.0, &other.0)
    }

    /// Whether this node leads the partition in its current leader epoch.
    pub fn leads(&self) -> bool {
        self.0.state.borrow().leads
    }

    /// The newest leader epoch that wrote to the log (a follower's `last_fetched_epoch`).
    pub fn latest_epoch(&self) -> Option<i32> {
        self.0.state.borrow().log.latest_epoch()
    }

    /// The replicas and ISR of the metadata image, on the leader (`ops::apply_metadata`, after
    /// [`Partition::set_leadership`]): the high watermark may move (a smaller ISR), and
    /// acks=-1 appends waiting for it are answered. Followers' states start over at each new
    /// leader epoch.
    pub fn set_replicas(&self, node_id: i32, replicas: &[i32], isr: &[i32], partition_epoch: i32, now_ms: i64) {
        let state = &mut *self.0.state.borrow_mut();
        state.assignment = (node_id, replicas.to_vec(), isr.to_vec(), partition_epoch);
        if state.proposed_isr.as_ref().is_some_and(|(at, _)| partition_epoch > *at) {
            state.proposed_isr = None;
        }
        state.assign_isr(now_ms);
    }

    /// This leader proposed `isr` to the controller, against the partition epoch its image
    /// has: until settled, the high watermark counts the ISR before and after it.
    pub fn isr_proposed(&self, isr: &[i32], now_ms: i64) {
        let state = &mut *self.0.state.borrow_mut();
        state.proposed_isr = Some((state.assignment.3, isr.to_vec()));
        state.assign_isr(now_ms);
    }

    /// The controller refused the proposed ISR, or kept the ISR as it was: the image's rules.
    pub fn isr_settled(&self, now_ms: i64) {
        let state = &mut *self.0.state.borrow_mut();
        state.proposed_isr = None;
        state.assign_isr(now_ms);
    }

    /// Whether an ISR change this leader proposed is not settled yet (one at a time).
    pub fn isr_pending(&self) -> bool {
        self.0.state.borrow().proposed_isr.is_some()
    }

    /// A fetch from replica `replica_id` at `fetch_offset` (the leader's side of replication):
    /// that follower's log ends there, so the high watermark may move, waking acks=-1 appends
    /// and parked consumers. Refused unless this node leads and `replica_id` holds a replica.
    pub fn replica_fetched(&self, replica_id: i32, fetch_offset: i64, now_ms: i64) -> Result<(), PartitionError> {
        let state = &mut *self.0.state.borrow_mut();
        let log_end_offset = state.log.log_end_offset();
        if !state.leads || !state.replicas.fetched(replica_id, fetch_offset, log_end_offset, now_ms) {
            return Err(PartitionError::NotLeader);
        }
        if state.advance_high_watermark() {
            state.wake_data_waiters();
        }
        Ok(())
    }

    /// Resolves once the high watermark reaches `end` (acks=-1): with an error if by then the
    /// ISR is smaller than `min_insync_replicas` (Kafka checks it then too), or if this node
    /// stops leading first. The caller bounds the wait (the request's timeout).
    pub fn wait_replicated(
        &self,
        end: i64,
        min_insync_replicas: usize,
    ) -> impl std::future::Future<Output = Result<(), PartitionError>> + 'static {
        let (tell, answer) = oneshot::channel();
        {
            let state = &mut *self.0.state.borrow_mut();
            state.replication_waiters.push(ReplicationWaiter { end, min_insync_replicas, tell });
            state.answer_replication_waiters();
        }
        async move { answer.await.unwrap_or(Err(PartitionError::NotLeader)) }
    }

    /// The ISR changes Kafka's leader would propose now (see
    /// [`ReplicaSet::isr_candidates`]): `(to_remove, to_add)`, empty unless this node leads.
    pub fn isr_candidates(&self, now_ms: i64, lag_max_ms: i64) -> (Vec<i32>, Vec<i32>) {
        let state = self.0.state.borrow();
        if !state.leads {
            return (Vec::new(), Vec::new());
        }
        let (_, epoch_start) = state.log.end_offset_for_epoch(state.leader_epoch - 1);
        state.replicas.isr_candidates(now_ms, lag_max_ms, state.high_watermark, epoch_start.max(0))
    }

    /// A partition with several replicas, just opened: what its log holds past the log start
    /// may not be committed (this node may have led an epoch the others moved on from, and a
    /// restart may find an image not caught up yet), so its high watermark starts at the log
    /// start and moves up as the ISR's log ends become known (leading) or the leader says
    /// (following). Kafka keeps it in a checkpoint; starting lower is the safe side of it.
    pub fn forget_high_watermark(&self) {
        let state = &mut *self.0.state.borrow_mut();
        state.high_watermark = state.log.log_start_offset();
    }

    /// A follower's high watermark: the leader's, as its last fetch answered, within this log.
    /// Ignored once this node leads (a new image came while the fetcher appended).
    pub fn set_follower_high_watermark(&self, leader_high_watermark: i64) {
        let state = &mut *self.0.state.borrow_mut();
        if !state.follows {
            return;
        }
        let log_end_offset = state.log.log_end_offset();
        state.high_watermark = leader_high_watermark.min(log_end_offset).max(state.log.log_start_offset());
    }

    /// Cuts the log before the batch holding `offset` (a [`crate::storage::Truncation`]: a
    /// follower dropping a tail that diverged from its leader's) and rolls back what depends on
    /// it: the idempotent producers' state (reloaded from a snapshot at or below the new end
    /// and the log), the high watermark. Returns the new log end. Only for a log that takes no appends of its
    /// own (a follower's, or in tests): none may be queued, written or waiting. A compaction
    /// pass in flight is waited for (it may be rewriting what is cut), and none starts
    /// meanwhile; so is the writer task (the last append, a leader-epoch checkpoint), and the
    /// partition counts as writing until the end; no DeleteRecords nor retention runs
    /// meanwhile either. The shard's thread makes no file-system call: where to cut is read
    /// through the page cache (what is missing loaded through the ring), the files are done
    /// on helper threads. A truncation that failed once the log was cut in memory leaves the
    /// partition refusing appends until a restart (which recovers the log from the cut).
    pub async fn truncate_to(&self, offset: i64) -> Result<i64, PartitionError> {
        let _no_delete_records =
            self.0.delete_records_turn.acquire_permit(1).await.map_err(|_| PartitionError::Unknown)?;
        let _no_compaction = self.quiesce().await?;
        {
            let mut state = self.0.state.borrow_mut();
            state.writing = true;
            state.truncating = true;
        }
        let truncated = self.truncate_writing(offset).await;
        let appends_waited = {
            let mut state = self.0.state.borrow_mut();
            state.truncating = false;
            if state.appends.is_empty() {
                // Nothing more is written in the background: a checkpoint the truncation
                // could not write is written before the next batch.
                state.writing = false;
                state.wake_idle_waiters();
            }
            !state.appends.is_empty()
        };
        // The writer ends the turn: it takes in what waited meanwhile, then stops.
        if appends_waited {
            self.start_writer();
        }
        truncated
    }

    /// The steps of [`Partition::truncate_to`], the partition counting as writing.
    async fn truncate_writing(&self, offset: i64) -> Result<i64, PartitionError> {
        let plan =
            self.read_for_fetch(&mut 0, ReadLimit::LogEnd, |log, _, wait| log.plan_truncation(offset, wait)).await?;
        let recovery_point_write = self.0.state.borrow().log.recovery_point_write(&plan);
        if let Some(write) = recovery_point_write {
            // A failure here (a full disk) changed nothing: the fetcher tries again.
            crate::runtime::file::run_blocking(write).await?;
        }
        let (mut truncation, headers, dir, expiry) = {
            let state = &mut *self.0.state.borrow_mut();
            let truncation = state.log.begin_truncate(plan);
            state.high_watermark = state.high_watermark.min(state.log.log_end_offset());
            (truncation, state.log.headers(), state.dir.clone(), state.producers.expiry())
        };
        let files = async {
            truncation.run().await?;
            let now_ms = crate::runtime::now_ms();
            crate::runtime::file::run_blocking(move || ProducerStates::load(&dir, &headers, expiry, now_ms)).await
        };
        let checkpoint = match files.await {
            Ok(producers) => {
                let state = &mut *self.0.state.borrow_mut();
                state.producers = producers;
                state.log.begin_checkpoint(None)
            }
            Err(e) => {
                let mut state = self.0.state.borrow_mut();
                tracing::error!(dir = %state.dir.display(), error = %e, "a truncation failed; the partition refuses appends until a restart recovers it");
                state.failed = Some(format!("a truncation failed: {e}"));
                return Err(e.into());
            }
        };
        // Last, as the log's files are cut. If it fails, the file is written before the next batch.
        if let Some(mut write) = checkpoint {
            let outcome = write.run().await;
            let mut state = self.0.state.borrow_mut();
            if let Err(e) = state.log.finish_checkpoint(write, outcome) {
                tracing::warn!(dir = %state.dir.display(), error = %e, "writing the leader-epoch checkpoint after a truncation");
            }
        }
        Ok(self.log_end_offset())
    }

    /// Empties the log and starts it again at `offset`, past its end (`Log::begin_restart_at`,
    /// Kafka's `truncateFullyAndStartAt`: a follower whose log ends below its leader's log
    /// start), with what depends on it: no idempotent producer, the high watermark at `offset`.
    /// The files are done on a helper thread; meanwhile the partition counts as writing (no
    /// append nor leader-epoch checkpoint starts) and no compaction pass runs. Only for a log
    /// that takes no appends of its own, as [`Partition::truncate_to`].
    pub async fn restart_at(&self, offset: i64) -> Result<(), PartitionError> {
        let _no_compaction = self.quiesce().await?;
        let mut restart = {
            let mut state = self.0.state.borrow_mut();
            state.writing = true;
            state.log.begin_restart_at(offset)
        };
        let outcome = restart.run().await;
        let finished = {
            let state = &mut *self.0.state.borrow_mut();
            let finished = state.log.finish_restart_at(restart, outcome, crate::runtime::now_ms());
            if finished.is_ok() {
                state.producers.clear();
                state.high_watermark = offset;
            }
            finished
        };
        self.rename_deleted();
        // The writer ends the turn: it takes in what waited meanwhile (appends, a new leader
        // epoch's checkpoint), then stops.
        self.start_writer();
        Ok(finished?)
    }

    /// Waits until nothing writes to the log, for a truncation or restart: the compaction turn
    /// taken (kept by the caller, so that no pass starts), the writer done with the last
    /// append (its answer went out first) and any `flush.ms` fsync in flight done; both end
    /// soon, and no client appends to a follower.
    async fn quiesce(&self) -> Result<crate::runtime::Permit<'_>, PartitionError> {
        let no_compaction = self.0.compaction_turn.acquire_permit(1).await.map_err(|_| PartitionError::Unknown)?;
        self.wait_idle().await;
        let state = self.0.state.borrow();
        assert!(
            state.durability_waiters.is_empty() && state.replication_waiters.is_empty(),
            "a log is cut only while no append is under way"
        );
        Ok(no_compaction)
    }

    /// Waits until the writer task has stopped and no fsync is in flight. The caller then acts
    /// on the log before it yields again.
    async fn wait_idle(&self) {
        loop {
            let busy = {
                let mut state = self.0.state.borrow_mut();
                (state.writing || state.sync_in_flight.is_some()).then(|| {
                    let (tell, wait) = oneshot::channel();
                    state.idle_waiters.push(tell);
                    wait
                })
            };
            match busy {
                Some(wait) => {
                    let _ = wait.await;
                }
                None => return,
            }
        }
    }

    /// Checks a request's `current_leader_epoch` against the partition's, as Kafka's
    /// `Partition.checkCurrentLeaderEpoch` (Fetch, ListOffsets, OffsetForLeaderEpoch).
    pub fn check_leader_epoch(&self, requested: i32) -> Result<(), PartitionError> {
        let current = self.leader_epoch();
        match requested {
            NO_LEADER_EPOCH => Ok(()),
            _ if requested < current => Err(PartitionError::FencedLeaderEpoch { requested, current }),
            _ if requested > current => Err(PartitionError::UnknownLeaderEpoch { requested, current }),
            _ => Ok(()),
        }
    }

    /// OffsetForLeaderEpoch: the largest epoch at or below `leader_epoch` that wrote to the log
    /// and the offset where its part ends, once `current_leader_epoch` passed the check.
    pub fn end_offset_for_epoch(
        &self,
        current_leader_epoch: i32,
        leader_epoch: i32,
    ) -> Result<(i32, i64), PartitionError> {
        self.check_leader_epoch(current_leader_epoch)?;
        Ok(self.0.state.borrow().log.end_offset_for_epoch(leader_epoch))
    }

    /// Where a fetcher's log diverged from this one (Fetch v12+, KIP-595), as Kafka's
    /// `Partition.readRecords`: given its `last_fetched_epoch` (-1: not given) and next
    /// offset, `Some` (epoch, end offset) when this log has no such epoch up to that offset.
    /// An epoch this log cannot place, or an offset below the log start, is out of range.
    pub fn diverging_epoch(
        &self,
        fetch_offset: i64,
        last_fetched_epoch: i32,
    ) -> Result<Option<(i32, i64)>, PartitionError> {
        if last_fetched_epoch < 0 {
            return Ok(None);
        }
        let state = self.0.state.borrow();
        let (epoch, end_offset) = state.log.end_offset_for_epoch(last_fetched_epoch);
        let log_start_offset = state.log.log_start_offset();
        if epoch == UNDEFINED_EPOCH || end_offset == UNDEFINED_EPOCH_OFFSET || fetch_offset < log_start_offset {
            let log_end_offset = state.log.log_end_offset();
            return Err(
                StorageError::OffsetOutOfRange { offset: fetch_offset, log_start_offset, log_end_offset }.into()
            );
        }
        Ok((epoch < last_fetched_epoch || end_offset < fetch_offset).then_some((epoch, end_offset)))
    }

    /// The leader epoch that wrote `offset`, if known (ListOffsets answers it).
    pub fn epoch_for_offset(&self, offset: i64) -> Option<i32> {
        self.0.state.borrow().log.epoch_for_offset(offset)
    }

    /// The leader epoch the metadata image gives the partition, and whether this node leads
    /// it (`ops::apply_metadata`, the one place that reads them): appends from now on are
    /// stamped with the epoch, and a leader's epoch enters the cache at once.
    pub fn set_leadership(&self, leader_epoch: i32, leads: bool) {
        let mut state = self.0.state.borrow_mut();
        state.leader_epoch = leader_epoch;
        state.leads = leads;
        state.follows = !leads;
        if !leads {
            for waiter in state.replication_waiters.drain(..) {
                let _ = waiter.tell.send(Err(PartitionError::NotLeader));
            }
        }
        // An append being written was stamped with the epoch before: the writer task takes
        // the new one into the cache once it is done (`write_queued`).
        if leads && !state.writing && state.log.latest_epoch() != Some(leader_epoch) {
            let log_end_offset = state.log.log_end_offset();
            state.log.assign_epoch(leader_epoch, log_end_offset);
            // The writer task writes the checkpoint on a helper thread, before any append.
            state.writing = true;
            drop(state);
            self.start_writer();
        }
    }

    /// Moves the log start offset to `offset` (DeleteRecords; -1 means the high watermark)
    /// and returns the new log start offset. Offsets past the high watermark are refused. The
    /// new start is written to its file on a helper thread before it takes effect; DeleteRecords
    /// on one partition take turns, so that the file never goes back to an older start.
    pub fn delete_records(
        &self,
        offset: i64,
    ) -> impl std::future::Future<Output = Result<i64, PartitionError>> + 'static {
        let partition = self.clone();
        async move {
            let _turn = partition.0.delete_records_turn.acquire_permit(1).await.map_err(|_| PartitionError::Unknown)?;
            let (offset, write) = {
                let state = partition.0.state.borrow();
                let offset = if offset == HIGH_WATERMARK { state.high_watermark } else { offset };
                if !(0..=state.high_watermark).contains(&offset) {
                    return Err(PartitionError::BeyondHighWatermark { offset, high_watermark: state.high_watermark });
                }
                (offset, state.log.log_start_offset_write(offset))
            };
            if let Some(write) = write {
                crate::runtime::file::run_blocking(write).await?;
            }
            let log_start_offset = partition.0.state.borrow_mut().log.finish_delete_records(offset)?;
            partition.rename_deleted();
            Ok(log_start_offset)
        }
    }

    /// Renames away, on a helper thread, the files of the segments deleted from the head of
    /// the log (retention, DeleteRecords, those a compaction pass kept until it was done), one
    /// batch at a time: [`Partition::close`] waits for the batch in flight and does the rest.
    fn rename_deleted(&self) {
        let partition = self.clone();
        spawn_local(async move {
            let Ok(_turn) = partition.0.renames_turn.acquire_permit(1).await else { return };
            let Some(deleted) = partition.0.state.borrow_mut().log.take_deleted() else { return };
            if let Err(e) = crate::runtime::file::run_blocking(move || deleted.rename()).await {
                // The partition was deleted or closed meanwhile (its claim released), or the
                // disk failed: the files stay, and the next open deletes them again.
                tracing::warn!(dir = %partition.0.state.borrow().dir.display(), error = %e, "renaming deleted segments");
            }
        })
        .detach();
    }

    /// Background upkeep: the time-based flush policy (`flush.ms`, an fsync through the ring),
    /// compaction (started on a helper thread, taken in when it is done), `producer.id.expiration.ms`,
    /// and when `check_retention` says so, retention.
    pub fn maintain(&self, now_ms: i64, check_retention: bool) -> Result<(), StorageError> {
        let (flush_due, compaction, deleted) = {
            let mut state = self.0.state.borrow_mut();
            state.producers.expire_if_due(now_ms);
            // A truncation may be planning its cut on the segments retention would delete.
            let deleted = if check_retention && !state.truncating { state.log.apply_retention(now_ms)? } else { 0 };
            if deleted > 0 {
                let log_start_offset = state.log.log_start_offset();
                tracing::info!(dir = %state.dir.display(), deleted, log_start_offset, "retention deleted segments");
            }
            // No pass starts while a truncation waits for its turn.
            let compaction = match self.0.compaction_turn.try_acquire_static_permit(1) {
                Ok(turn) => state.log.begin_compaction(now_ms).map(|job| (turn, job)),
                Err(_) => None,
            };
            (state.log.flush_due(now_ms), compaction, deleted)
        };
        if deleted > 0 {
            self.rename_deleted();
        }
        if flush_due {
            self.start_sync();
        }
        if let Some((turn, job)) = compaction {
            let partition = self.clone();
            spawn_local(async move {
                let _turn = turn;
                let outcome = crate::runtime::file::run_long(move || job.run()).await;
                let mut state = partition.0.state.borrow_mut();
                if let Err(e) = state.log.finish_compaction(outcome) {
                    tracing::error!(dir = %state.dir.display(), error = %e, "compaction");
                }
                drop(state);
                partition.rename_deleted();
            })
            .detach();
        }
        Ok(())
    }

    /// New topic configs, in force from the next append, read or upkeep pass.
    pub fn set_config(&self, config: LogConfig) {
        self.0.state.borrow_mut().log.set_config(config);
    }

    /// The idempotent producers this partition remembers (DescribeProducers).
    pub fn active_producers(&self) -> Vec<crate::storage::producer_state::ActiveProducer> {
        self.0.state.borrow().producers.active()
    }

    /// Bytes of the partition's segments.
    pub fn size(&self) -> u64 {
        self.0.state.borrow().log.size()
    }

    /// Flushes and checkpoints the log, renames away the files of segments deleted from its
    /// head, and snapshots its producers; used on clean shutdown. The `.log` is synced on the
    /// shard's ring and the rest done on a helper thread, so the partitions of a shard close
    /// at once. Returns once all of it is durable: a segment deleted before the close never
    /// comes back at the next open.
    pub async fn close(self) -> Result<(), StorageError> {
        // The renames in flight first: they go through the claim that the close releases.
        let _renames = self.0.renames_turn.acquire_permit(1).await.expect("the semaphore is never closed");
        self.wait_idle().await;
        let mut close = {
            let mut state = self.0.state.borrow_mut();
            if let Some(reason) = &state.failed {
                return Err(StorageError::Io(std::io::Error::other(format!("the partition failed: {reason}"))));
            }
            // A compaction in flight stops at its next step: what it leaves is recovered at open.
            state.log.release_dir();
            state.log.begin_close()
        };
        let outcome = close.run().await;
        let snapshot = {
            let mut state = self.0.state.borrow_mut();
            state.log.finish_close(close, outcome)?;
            state.producers.snapshot_writer(state.log.log_end_offset())
        };
        crate::runtime::file::run_blocking(snapshot).await
    }

    /// Closes the log and removes its directory (renamed on a helper thread, removed on the
    /// deleter's); used when the topic is deleted. The directory's name is free once this
    /// returns, for a topic created again under it.
    pub async fn delete(self) -> Result<(), StorageError> {
        let (dir, fs) = {
            let mut state = self.0.state.borrow_mut();
            state.deleted = true;
            state.log.release_dir();
            (state.dir.clone(), state.log.file_system())
        };
        drop(self);
        crate::runtime::file::run_blocking(move || crate::storage::deleter::delete_dir_later(&fs, &dir)).await?;
        Ok(())
    }
}

impl State {
    /// Stages one append (whose batches have `headers`) into `staged`, unless it is answered
    /// at once: refused (topic deleted, a failed fsync, a client's append to a follower, out of
    /// sequence, invalid) or a retry. A `replica` append (a follower's) is the leader's batches
    /// as they are: the leader checked their sequences.
    fn stage(
        &mut self,
        staged: &mut Staged,
        batches: &Bytes,
        headers: &[BatchHeader],
        now_ms: i64,
        replica: bool,
    ) -> Stage {
        if self.deleted {
            return Stage::Answer(Err(PartitionError::Unknown));
        }
        if self.failed.is_some() {
            return Stage::Answer(Err(PartitionError::SyncFailed));
        }
        if replica {
            return match self.log.stage_replica(staged, batches, now_ms) {
                Ok(staging) => Stage::Log(staging),
                Err(e) => Stage::Answer(Err(self.refused(e))),
            };
        }
        if self.follows {
            return Stage::Answer(Err(PartitionError::NotLeader));
        }
        match self.producers.check(headers) {
            // The original may still wait for its fsync: so does its retry.
            Ok(Checked::Duplicate(original)) => return Stage::Answer(Ok((original, !self.log.config().write_caching))),
            Ok(Checked::Append) => {}
            Err(e) => return Stage::Answer(Err(e.into())),
        }
        match self.log.stage(staged, batches, self.leader_epoch, now_ms) {
            Ok(staging) => Stage::Log(staging),
            Err(e) => Stage::Answer(Err(self.refused(e))),
        }
    }

    /// Where a read up to `limit` stops.
    fn read_limit(&self, limit: ReadLimit) -> i64 {
        match limit {
            ReadLimit::HighWatermark => self.high_watermark,
            ReadLimit::LogEnd => self.log.log_end_offset(),
        }
    }

    /// Gives the replica set the image's assignment, with the ISR widened by a proposed change
    /// not yet settled; the high watermark may move, and waiters are woken.
    fn assign_isr(&mut self, now_ms: i64) {
        let (node_id, replicas, isr, _) = &self.assignment;
        let mut maximal = isr.clone();
        if let Some((_, proposed)) = &self.proposed_isr {
            maximal.extend(proposed.iter().filter(|r| !isr.contains(r)));
        }
        let log_end_offset = self.log.log_end_offset();
        self.replicas.set_assignment(*node_id, self.leader_epoch, replicas, &maximal, log_end_offset, now_ms);
        self.advance_high_watermark();
        self.wake_data_waiters();
    }

    /// Moves a leader's high watermark (or a partition's not told it follows) up to the
    /// lowest log end in the ISR, never back, and answers the acks=-1 appends it now covers.
    /// Returns whether it moved.
    fn advance_high_watermark(&mut self) -> bool {
        if self.follows {
            return false;
        }
        let allowed = self.replicas.high_watermark(self.log.log_end_offset());
        let moved = allowed > self.high_watermark;
        if moved {
            self.high_watermark = allowed;
        }
        self.answer_replication_waiters();
        moved
    }

    /// Answers the acks=-1 appends the high watermark covers: in error if the ISR is smaller
    /// than their `min.insync.replicas` (NOT_ENOUGH_REPLICAS_AFTER_APPEND, as Kafka's
    /// `checkEnoughReplicasReachOffset`).
    fn answer_replication_waiters(&mut self) {
        let (high_watermark, isr) = (self.high_watermark, self.replicas.isr_len());
        let waiters = std::mem::take(&mut self.replication_waiters);
        for waiter in waiters {
            let min_insync_replicas = waiter.min_insync_replicas;
            if waiter.end > high_watermark {
                self.replication_waiters.push(waiter);
            } else if isr < min_insync_replicas {
                let _ =
                    waiter.tell.send(Err(PartitionError::NotEnoughReplicasAfterAppend { isr, min_insync_replicas }));
            } else {
                let _ = waiter.tell.send(Ok(()));
            }
        }
    }

    fn wake_data_waiters(&mut self) {
        for waiter in self.data_waiters.drain(..) {
            let _ = waiter.send(());
        }
    }

    /// Truncations wait for the writer and the fsync in flight: one of them just ended.
    fn wake_idle_waiters(&mut self) {
        for waiter in self.idle_waiters.drain(..) {
            let _ = waiter.send(());
        }
    }

    /// An append the log refused.
    fn refused(&self, error: StorageError) -> PartitionError {
        tracing::debug!(dir = %self.dir.display(), error = %error, "append refused");
        error.into()
    }
}

/// How far a fetch reads: a consumer up to the high watermark (what every in-sync replica
/// has), a follower replica up to the log end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadLimit {
    HighWatermark,
    LogEnd,
}

/// A replicated batch's offsets, for the producers' state.
fn replicated(header: &BatchHeader) -> AppendInfo {
    AppendInfo {
        base_offset: header.base_offset,
        last_offset: header.last_offset(),
        log_append_time_ms: header.log_append_time().unwrap_or(-1),
        records: header.records_count as u64,
    }
}

/// Splits batches fetched from a leader where their leader epoch changes (each run is one
/// append: a new epoch enters the cache at the start of a write). Bytes that do not parse stay
/// with the run before them, for the log to refuse.
fn epoch_runs(batches: &Bytes) -> Vec<Bytes> {
    let mut runs = Vec::new();
    let (mut start, mut position, mut epoch) = (0, 0, None);
    while position < batches.len() {
        let Ok(header) = BatchHeader::parse(&batches[position..]) else { break };
        if epoch.is_some_and(|e| e != header.partition_leader_epoch) {
            runs.push(batches.slice(start..position));
            start = position;
        }
        epoch = Some(header.partition_leader_epoch);
        position = position.saturating_add(header.size());
    }
    if start < batches.len() {
        runs.push(batches.slice(start..));
    }
    runs
}

/// Whether two appends carry batches of the same idempotent producer.
fn shares_producer(a: &[BatchHeader], b: &[BatchHeader]) -> bool {
    a.iter()
        .filter(|h| h.has_producer_id())
        .any(|h| b.iter().any(|o| o.has_producer_id() && o.producer_id == h.producer_id))
}

/// The headers of every batch of a request, for the producer checks. Transactional and
/// control batches are refused until transactions are supported (a client's; a `replica`
/// append is refused by the leader first). A request whose batches do not even parse gives no
/// headers: the log refuses it with the precise error.
fn batch_headers(mut batches: &[u8], replica: bool) -> Result<Vec<BatchHeader>, PartitionError> {
    let mut headers = Vec::with_capacity(1);
    while !batches.is_empty() {
        let Some(header) = BatchHeader::parse(batches).ok().filter(|h| h.size() <= batches.len()) else {
            return Ok(Vec::new());
        };
        if !replica && (header.is_transactional() || header.is_control()) {
            return Err(PartitionError::Transactional);
        }
        headers.push(header);
        batches = &batches[header.size()..];
    }
    Ok(headers)
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use crate::storage::TimestampType;
    use crate::storage::batch::tests::{batch, producer_batch};
    use crate::storage::fs::simulated::SimDisk;
    use kafka_protocol::ResponseError;

    fn config() -> LogConfig {
        LogConfig {
            segment_bytes: 1 << 20,
            segment_ms: i64::MAX,
            index_interval_bytes: 4096,
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

    const EXPIRY: ProducerExpiry = ProducerExpiry { expiration_ms: i64::MAX, check_interval_ms: 1000 };

    /// A partition this node leads in epoch 0.
    pub fn partition(dir: &Path) -> Partition {
        let p = Partition::open(&crate::storage::fs::os(), dir, config(), EXPIRY, 0, false, Rc::default()).unwrap();
        p.set_leadership(0, true);
        p
    }

    /// A partition `name` on the simulated disk, counting its fsyncs in `counters`.
    fn simulated(disk: &Arc<SimDisk>, name: &str, config: LogConfig, counters: &Rc<SyncCounters>) -> Partition {
        let fs: Arc<dyn FileSystem> = disk.clone();
        fs.create_dir_all(Path::new("/data")).unwrap();
        let p =
            Partition::open(&fs, &Path::new("/data").join(name), config, EXPIRY, 0, false, counters.clone()).unwrap();
        p.set_leadership(0, true);
        p
    }

    /// Lets the other tasks run once.
    async fn yield_now() {
        let mut yielded = false;
        std::future::poll_fn(|cx| {
            if std::mem::replace(&mut yielded, true) {
                return std::task::Poll::Ready(());
            }
            cx.waker().wake_by_ref();
            std::task::Poll::Pending
        })
        .await
    }

    /// Runs `future` on the shard; the cell holds its output once it is done.
    fn started<T: 'static>(future: impl std::future::Future<Output = T> + 'static) -> Rc<RefCell<Option<T>>> {
        let outcome = Rc::new(RefCell::new(None));
        let filled = outcome.clone();
        spawn_local(async move { *filled.borrow_mut() = Some(future.await) }).detach();
        outcome
    }

    /// Waits until `condition` holds, for at most a few seconds.
    async fn until(what: &str, condition: impl Fn() -> bool) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !condition() {
            assert!(std::time::Instant::now() < deadline, "timed out waiting until {what}");
            crate::runtime::sleep(std::time::Duration::from_millis(1)).await;
        }
    }

    /// Each append's answer, once it came.
    type Answers = RefCell<Vec<Option<Result<AppendInfo, PartitionError>>>>;

    /// Starts `count` appends of one record each at once; the returned cells fill in as they
    /// are answered.
    fn append_concurrently(p: &Partition, count: usize) -> Rc<Answers> {
        append_all(p, (0..count).map(|_| batch(1, 0)))
    }

    /// Starts an append of each of `requests` at once, in order; the returned cells fill in as
    /// they are answered.
    fn append_all(p: &Partition, requests: impl ExactSizeIterator<Item = Bytes>) -> Rc<Answers> {
        let answers = Rc::new(RefCell::new((0..requests.len()).map(|_| None).collect::<Vec<_>>()));
        for (i, batches) in requests.enumerate() {
            let (answers, append) = (answers.clone(), p.append(batches, 0));
            spawn_local(async move { answers.borrow_mut()[i] = Some(append.await) }).detach();
        }
        answers
    }

    fn answered(answers: &Answers) -> usize {
        answers.borrow().iter().filter(|a| a.is_some()).count()
    }

    #[test]
    fn appends_are_written_in_the_order_they_were_made() {
        crate::runtime::file::block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let p = partition(dir.path());
            // Started one after the other without waiting, as pipelined requests are: each
            // must get the offsets after its predecessor's, whatever the tasks' scheduling.
            let mut appends = Vec::new();
            for i in 0..1000 {
                appends.push(p.append(batch(1 + i % 3, 0), 0));
                // Let the appends under way progress between arrivals, by varying amounts.
                for _ in 0..i % 4 {
                    yield_now().await;
                }
            }
            let mut expected_base = 0;
            for (i, append) in appends.into_iter().enumerate() {
                let info = append.await.unwrap();
                assert_eq!(info.base_offset, expected_base, "append {i} out of order");
                expected_base = info.last_offset + 1;
            }
        })
    }

    #[test]
    fn appends_queued_when_the_topic_is_deleted_are_refused_and_write_nothing() {
        crate::runtime::file::block_on(async {
            let data = tempfile::tempdir().unwrap();
            let dir = data.path().join("t-0");
            let p = partition(&dir);
            let mut appends: Vec<_> = (0..4).map(|_| p.append(batch(1, 0), 0)).collect();
            // The first one's write is under way by now (the writer task starts at once); the
            // others wait in the queue.
            let queued = appends.split_off(1);
            p.clone().delete().await.unwrap();
            for append in queued {
                let outcome = append.await;
                assert!(matches!(outcome, Err(PartitionError::Unknown)), "{outcome:?}");
            }
            assert!(!dir.exists(), "nothing was written under the deleted partition's name");
        })
    }

    #[test]
    fn no_append_is_answered_before_the_fsync_covering_it_and_one_fsync_covers_many() {
        let started = std::time::Instant::now();
        crate::runtime::file::block_on(async {
            let disk = SimDisk::new();
            let counters = Rc::new(SyncCounters::default());
            let p = simulated(&disk, "t-0", LogConfig { flush_messages: Some(1), ..config() }, &counters);
            disk.hold_syncs();
            let first = append_concurrently(&p, 1);
            until("the first append's fsync is submitted", || disk.held_syncs() == 1).await;
            // Nine more are written while it is in flight: it does not cover them.
            let answers = append_concurrently(&p, 9);
            until("all ten are written", || p.log_end_offset() == 10).await;
            assert_eq!(disk.held_syncs(), 1, "one fsync at a time");
            assert_eq!(answered(&first) + answered(&answers), 0, "nothing answered before its fsync completed");

            assert_eq!(disk.release_syncs(), 1);
            until("the second fsync is submitted", || disk.held_syncs() == 1).await;
            until("the first append is answered", || answered(&first) == 1).await;
            assert_eq!(answered(&answers), 0, "the appends written after the first fsync was submitted still wait");
            assert_eq!(disk.release_syncs(), 1);
            until("all are answered", || answered(&answers) == 9).await;
            assert!(first.borrow().iter().chain(answers.borrow().iter()).all(|a| matches!(a, Some(Ok(_)))));
            assert_eq!(disk.syncs_submitted(), 2, "two fsyncs covered ten appends");
            assert_eq!((counters.fsyncs.get(), counters.covered_appends.get()), (2, 10));
            assert_eq!(disk.held_syncs(), 0, "no fsync left over");
            // Timed from submission to completion: held fsyncs took time, at most the test's.
            let fsync_micros = counters.fsync_micros.get();
            assert!(fsync_micros > 0 && fsync_micros <= 2 * started.elapsed().as_micros() as u64, "{fsync_micros}");
            let writes = counters.writes.get();
            assert!((2..=10).contains(&writes), "ten appends, the first written alone: {writes} writes");
            assert!(counters.write_micros.get() <= writes * started.elapsed().as_micros() as u64);
        })
    }

    #[test]
    fn without_write_caching_every_append_waits_for_its_fsync() {
        crate::runtime::file::block_on(async {
            let disk = SimDisk::new();
            let counters = Rc::new(SyncCounters::default());
            let p = simulated(&disk, "t-0", LogConfig { write_caching: false, ..config() }, &counters);
            disk.hold_syncs();
            let answers = append_concurrently(&p, 1);
            until("the fsync is submitted", || disk.held_syncs() == 1).await;
            assert_eq!((p.high_watermark(), answered(&answers)), (1, 0), "written, readable, not yet answered");
            disk.release_syncs();
            until("the append is answered", || answered(&answers) == 1).await;
            // Changed live: caching again, an append is answered without an fsync.
            p.set_config(config());
            p.append(batch(1, 0), 0).await.unwrap();
            assert_eq!(disk.syncs_submitted(), 1);
        })
    }

    #[test]
    fn a_stalled_fsync_does_not_delay_another_partition() {
        crate::runtime::file::block_on(async {
            let disk = SimDisk::new();
            let counters = Rc::new(SyncCounters::default());
            let durable = simulated(&disk, "t-0", LogConfig { flush_messages: Some(1), ..config() }, &counters);
            let cached = simulated(&disk, "t-1", config(), &counters);
            disk.hold_syncs();
            let stalled = append_concurrently(&durable, 1);
            until("the fsync is submitted", || disk.held_syncs() == 1).await;
            // The other partition of the same shard appends and answers while that fsync hangs.
            let info = cached.append(batch(3, 0), 0).await.unwrap();
            assert_eq!((info.base_offset, cached.high_watermark()), (0, 3));
            assert_eq!(answered(&stalled), 0);
            disk.release_syncs();
            until("the stalled append is answered", || answered(&stalled) == 1).await;
        })
    }

    #[test]
    fn a_roll_syncs_the_closing_segment_on_the_ring_while_other_partitions_go_on() {
        crate::runtime::file::block_on(async {
            let disk = SimDisk::new();
            let counters = Rc::new(SyncCounters::default());
            // Room for one batch a segment: the second append rolls.
            let one_batch = LogConfig { segment_bytes: batch(1, 0).len() as u64, ..config() };
            let rolling = simulated(&disk, "t-0", one_batch, &counters);
            let other = simulated(&disk, "t-1", config(), &counters);
            rolling.append(batch(1, 0), 0).await.unwrap();
            disk.hold_syncs();
            let waiting = append_concurrently(&rolling, 1);
            until("the closing segment's fsync is submitted", || disk.held_syncs() == 1).await;
            other.append(batch(2, 0), 0).await.unwrap();
            assert_eq!((answered(&waiting), rolling.log_end_offset()), (0, 1), "the roll waits for its fsync");
            disk.release_syncs();
            until("the append after the roll is answered", || answered(&waiting) == 1).await;
            assert_eq!(rolling.log_end_offset(), 2);
            let fs: Arc<dyn FileSystem> = disk.clone();
            let files = fs.list_dir(Path::new("/data/t-0")).unwrap();
            assert!(files.contains(&"00000000000000000001.log".to_string()), "{files:?}");
            assert_eq!(std::str::from_utf8(&fs.read(Path::new("/data/t-0/recovery-point")).unwrap()).unwrap(), "1\n");
        })
    }

    #[test]
    fn a_failed_fsync_fails_its_waiters_and_the_partition_refuses_appends_but_serves_reads() {
        crate::runtime::file::block_on(async {
            let disk = SimDisk::new();
            let counters = Rc::new(SyncCounters::default());
            let p = simulated(&disk, "t-0", LogConfig { flush_messages: Some(2), ..config() }, &counters);
            p.append(batch(1, 0), 0).await.unwrap();
            disk.fail_syncs(true);
            assert!(matches!(p.append(batch(1, 0), 0).await.unwrap_err(), PartitionError::SyncFailed));
            disk.fail_syncs(false);
            // The pages the failed fsync covered may be lost: nothing more is taken until a
            // restart recovers the log from its recovery point.
            assert!(matches!(p.append(batch(1, 0), 0).await.unwrap_err(), PartitionError::SyncFailed));
            assert_eq!(p.high_watermark(), 2);
            assert!(!p.read(0, 1 << 20).unwrap().is_empty(), "reads go on");
            assert!(p.close().await.is_err(), "no clean shutdown over a failed fsync");
        })
    }

    #[test]
    fn appends_are_stamped_with_the_current_leader_epoch() {
        crate::runtime::file::block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let p = partition(dir.path());
            p.append(batch(1, 0), 0).await.unwrap();
            p.set_leadership(4, true);
            p.append(batch(1, 0), 0).await.unwrap();
            let epochs: Vec<i32> = (0..2)
                .map(|offset| BatchHeader::parse(&p.read(offset, 1).unwrap()).unwrap().partition_leader_epoch)
                .collect();
            assert_eq!(epochs, vec![0, 4]);
        })
    }

    #[test]
    fn leader_epochs_are_checked_and_answered_from_the_cache() {
        crate::runtime::file::block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let p = partition(dir.path());
            // Leader from the start: epoch 0 is known before any append, as in Kafka.
            assert_eq!(p.end_offset_for_epoch(-1, 0).unwrap(), (0, 0));
            p.append(batch(3, 0), 0).await.unwrap();
            p.set_leadership(2, true);
            assert_eq!(p.end_offset_for_epoch(2, 1).unwrap(), (0, 3), "epoch 1 never wrote: epoch 0 ends at 3");
            assert_eq!(p.end_offset_for_epoch(2, 2).unwrap(), (2, 3));
            p.append(batch(2, 0), 0).await.unwrap();
            assert_eq!(p.end_offset_for_epoch(-1, 2).unwrap(), (2, 5));
            let fenced = p.end_offset_for_epoch(1, 0).unwrap_err();
            assert!(matches!(fenced, PartitionError::FencedLeaderEpoch { requested: 1, current: 2 }), "{fenced:?}");
            let unknown = p.end_offset_for_epoch(3, 0).unwrap_err();
            assert!(matches!(unknown, PartitionError::UnknownLeaderEpoch { requested: 3, current: 2 }), "{unknown:?}");
            assert!(p.check_leader_epoch(-1).is_ok() && p.check_leader_epoch(2).is_ok());

            // A fetcher whose last batch was of epoch 0 and that asks from offset 4 has a tail
            // this log does not: epoch 0 ended at 3 here.
            assert_eq!(p.diverging_epoch(4, 0).unwrap(), Some((0, 3)));
            assert_eq!(p.diverging_epoch(3, 0).unwrap(), None);
            assert_eq!(p.diverging_epoch(4, 1).unwrap(), Some((0, 3)), "an epoch this log skipped");
            assert_eq!(p.diverging_epoch(5, 2).unwrap(), None);
            assert_eq!(p.diverging_epoch(9, -1).unwrap(), None, "no epoch given: nothing to compare");
            let beyond = p.diverging_epoch(4, 3).unwrap_err();
            assert!(matches!(beyond, PartitionError::Storage(StorageError::OffsetOutOfRange { .. })), "{beyond:?}");
            assert_eq!(p.epoch_for_offset(2), Some(0));
            assert_eq!(p.epoch_for_offset(3), Some(2));
        })
    }

    #[test]
    fn only_a_leader_puts_its_epoch_in_the_cache_before_writing() {
        crate::runtime::file::block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let p = partition(dir.path());
            p.append(batch(2, 0), 0).await.unwrap();
            // Another node leads in epoch 1: this replica's cache follows the batches only.
            p.set_leadership(1, false);
            assert_eq!(p.end_offset_for_epoch(-1, 1).unwrap(), (-1, -1));
            // Leading again in epoch 2, from its log end.
            p.set_leadership(2, true);
            assert_eq!(p.end_offset_for_epoch(-1, 1).unwrap(), (0, 2));
            assert_eq!(p.end_offset_for_epoch(-1, 2).unwrap(), (2, 2));
        })
    }

    #[test]
    fn a_leader_epoch_changed_while_the_writer_is_busy_starts_at_its_next_batch() {
        crate::runtime::file::block_on(async {
            let disk = SimDisk::new();
            let counters = Rc::new(SyncCounters::default());
            let one_batch = LogConfig { segment_bytes: batch(1, 0).len() as u64, ..config() };
            let p = simulated(&disk, "t-0", one_batch, &counters);
            p.append(batch(1, 0), 0).await.unwrap();
            disk.hold_syncs();
            // The writer task is busy rolling the segment (its fsync held) for the next append.
            let answers = append_concurrently(&p, 1);
            until("the roll's fsync is submitted", || disk.held_syncs() == 1).await;
            p.set_leadership(1, true);
            disk.release_syncs();
            until("the append is answered", || answered(&answers) == 1).await;
            assert_eq!(p.end_offset_for_epoch(-1, 0).unwrap(), (0, 1));
            assert_eq!(p.end_offset_for_epoch(-1, 1).unwrap(), (1, 2));
            let header = BatchHeader::parse(&p.read(1, 1).unwrap()).unwrap();
            assert_eq!(header.partition_leader_epoch, 1);
        })
    }

    #[test]
    fn truncation_rolls_back_the_producers_and_the_high_watermark() {
        crate::runtime::file::block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let p = partition(dir.path());
            p.append(producer_batch(3, 0, 7, 0, 0), 0).await.unwrap();
            p.append(producer_batch(2, 0, 7, 0, 3), 0).await.unwrap();
            assert_eq!(p.truncate_to(3).await.unwrap(), 3);
            assert_eq!((p.log_end_offset(), p.high_watermark()), (3, 3));
            // The cut batch is gone from the producer's state too: sent again, it is written
            // again, not answered as a duplicate of what no longer exists.
            let again = p.append(producer_batch(2, 0, 7, 0, 3), 0).await.unwrap();
            assert_eq!((again.base_offset, p.log_end_offset()), (3, 5));
            let refused = p.append(producer_batch(1, 0, 7, 0, 9), 0).await.unwrap_err();
            assert!(matches!(refused, PartitionError::Sequence(SequenceError::OutOfOrder)), "{refused:?}");
        })
    }

    /// The log of `p` from offset 0 to its log end, as a follower fetches it.
    async fn everything(p: &Partition) -> Bytes {
        p.fetch_bytes(0, 1 << 20, ReadLimit::LogEnd, &mut 0).await.unwrap()
    }

    #[test]
    fn the_high_watermark_waits_for_every_in_sync_replica_and_so_do_acks_all_appends() {
        crate::runtime::file::block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let p = partition(dir.path());
            p.set_replicas(1, &[1, 2, 3], &[1, 2, 3], 0, 0);
            let info = p.append(batch(3, 0), 0).await.unwrap();
            assert_eq!((p.log_end_offset(), p.high_watermark()), (3, 0), "written, not replicated");
            let acked = Rc::new(Cell::new(None));
            let waiting = p.wait_replicated(info.last_offset + 1, 2);
            let answer = acked.clone();
            spawn_local(async move { answer.set(Some(waiting.await)) }).detach();
            // Consumers read to the high watermark, followers to the log end.
            assert!(p.fetch_bytes(0, 1 << 20, ReadLimit::HighWatermark, &mut 0).await.unwrap().is_empty());
            assert!(!everything(&p).await.is_empty());

            p.replica_fetched(2, 3, 0).unwrap();
            yield_now().await;
            assert_eq!(p.high_watermark(), 0, "replica 3 has not fetched yet");
            assert!(acked.take().is_none());
            p.replica_fetched(3, 2, 0).unwrap();
            assert_eq!(p.high_watermark(), 2);
            p.replica_fetched(3, 3, 0).unwrap();
            assert_eq!(p.high_watermark(), 3);
            until("the acks=all append is answered", || matches!(acked.take(), Some(Ok(())))).await;
            assert!(matches!(p.replica_fetched(4, 3, 0), Err(PartitionError::NotLeader)), "not a replica");

            // The ISR shrinks below min.insync.replicas while an append waits: once the high
            // watermark covers it, NOT_ENOUGH_REPLICAS_AFTER_APPEND.
            let info = p.append(batch(1, 0), 0).await.unwrap();
            let waiting = p.wait_replicated(info.last_offset + 1, 2);
            let answer = acked.clone();
            spawn_local(async move { answer.set(Some(waiting.await)) }).detach();
            p.set_replicas(1, &[1, 2, 3], &[1], 0, 0);
            assert_eq!(p.high_watermark(), 4, "alone in sync: the log end");
            until("the append is answered", || {
                matches!(acked.take(), Some(Err(PartitionError::NotEnoughReplicasAfterAppend { isr: 1, .. })))
            })
            .await;

            // Leadership moves away while an append waits: NOT_LEADER_OR_FOLLOWER.
            p.set_replicas(1, &[1, 2], &[1, 2], 0, 0);
            let info = p.append(batch(1, 0), 0).await.unwrap();
            let waiting = p.wait_replicated(info.last_offset + 1, 1);
            p.set_leadership(1, false);
            assert!(matches!(waiting.await, Err(PartitionError::NotLeader)));
        })
    }

    #[test]
    fn a_proposed_isr_holds_the_high_watermark_for_its_new_members_until_settled() {
        crate::runtime::file::block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let p = partition(dir.path());
            p.set_replicas(1, &[1, 2, 3], &[1, 2], 5, 0);
            p.append(batch(3, 0), 0).await.unwrap();
            p.replica_fetched(2, 3, 0).unwrap();
            p.replica_fetched(3, 1, 0).unwrap();
            assert_eq!(p.high_watermark(), 3, "3 is out of sync");
            // Adding 3 is proposed: until the image carries it, the high watermark waits for 3
            // too (KIP-497), since 3 may lead once the change commits.
            p.isr_proposed(&[1, 2, 3], 0);
            assert!(p.isr_pending());
            p.append(batch(2, 0), 0).await.unwrap();
            p.replica_fetched(2, 5, 0).unwrap();
            assert_eq!(p.high_watermark(), 3, "held for 3");
            // An image of the same partition epoch (another topic changed) keeps it pending.
            p.set_replicas(1, &[1, 2, 3], &[1, 2], 5, 0);
            assert_eq!((p.isr_pending(), p.high_watermark()), (true, 3));
            p.replica_fetched(3, 4, 0).unwrap();
            assert_eq!(p.high_watermark(), 4);
            // The image carries the change: settled.
            p.set_replicas(1, &[1, 2, 3], &[1, 2, 3], 6, 0);
            assert!(!p.isr_pending());
            // A refused proposal settles back to the image's ISR.
            p.isr_proposed(&[1, 2], 0);
            p.isr_settled(0);
            assert!(!p.isr_pending());
        })
    }

    #[test]
    fn a_replicated_partition_opened_again_commits_nothing_until_its_isr_says_so() {
        crate::runtime::file::block_on(async {
            let dir = tempfile::tempdir().unwrap();
            partition(dir.path()).append(batch(3, 0), 0).await.unwrap();
            let p = partition(dir.path());
            p.forget_high_watermark();
            p.set_replicas(1, &[1, 2], &[1, 2], 0, 0);
            assert_eq!((p.high_watermark(), p.log_end_offset()), (0, 3), "maybe never replicated");
            assert!(p.fetch_bytes(0, 1 << 20, ReadLimit::HighWatermark, &mut 0).await.unwrap().is_empty());
            p.replica_fetched(2, 3, 0).unwrap();
            assert_eq!(p.high_watermark(), 3);
        })
    }

    #[test]
    fn a_follower_appends_the_leader_s_batches_as_they_are_and_refuses_clients() {
        crate::runtime::file::block_on(async {
            let (leader_dir, follower_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
            let leader = partition(leader_dir.path());
            leader.append(producer_batch(2, 0, 7, 0, 0), 0).await.unwrap();
            leader.set_leadership(3, true);
            leader.append(batch(3, 0), 0).await.unwrap();
            let fetched = everything(&leader).await;

            let follower = partition(follower_dir.path());
            follower.set_leadership(3, false);
            assert!(matches!(follower.append(batch(1, 0), 0).await, Err(PartitionError::NotLeader)));
            // Two leader epochs in one fetch: each enters the cache where its batches start.
            assert_eq!(follower.append_replica(fetched.clone(), 0).await.unwrap(), 5);
            assert_eq!(everything(&follower).await, fetched, "byte for byte");
            assert_eq!(follower.end_offset_for_epoch(-1, 0).unwrap(), (0, 2));
            assert_eq!(follower.end_offset_for_epoch(-1, 3).unwrap(), (3, 5));
            assert_eq!(follower.high_watermark(), 0, "the leader's, once it says");
            follower.set_follower_high_watermark(9);
            assert_eq!(follower.high_watermark(), 5, "capped by the own log end");
            // The producer's state followed: it continues its sequence once this one leads.
            assert_eq!(follower.active_producers()[0].last_sequence, 1);

            // What does not follow the log end, or is damaged, is refused.
            let again = follower.append_replica(fetched.clone(), 0).await.unwrap_err();
            assert!(matches!(again, PartitionError::Storage(StorageError::CorruptBatch(_))), "{again:?}");
            // A batch that would follow (its base offset, outside the CRC, says 5), but whose
            // records do not match its CRC.
            let mut damaged = batch(1, 0).to_vec();
            damaged[..8].copy_from_slice(&5i64.to_be_bytes());
            *damaged.last_mut().unwrap() ^= 1;
            let refused = follower.append_replica(Bytes::from(damaged), 0).await.unwrap_err();
            assert!(matches!(refused, PartitionError::Storage(StorageError::CorruptBatch(_))), "{refused:?}");
            assert_eq!(follower.log_end_offset(), 5);
        })
    }

    #[test]
    fn a_truncation_waits_for_the_writer_to_finish() {
        crate::runtime::file::block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let p = partition(dir.path());
            p.append(batch(2, 0), 0).await.unwrap();
            p.append(batch(2, 0), 0).await.unwrap();
            let fetched = everything(&p).await;
            let follower_dir = tempfile::tempdir().unwrap();
            let follower = partition(follower_dir.path());
            follower.set_leadership(0, false);
            // Started together: the truncation comes after the append, never in its middle.
            let append = follower.append_replica(fetched, 0);
            let truncation = follower.truncate_to(3);
            assert_eq!(truncation.await.unwrap(), 2, "the batch holding offset 3 goes whole");
            assert_eq!(append.await.unwrap(), 4, "the append was done before it");
            assert_eq!(follower.log_end_offset(), 2);
        })
    }

    #[test]
    fn a_retried_batch_is_not_written_twice() {
        crate::runtime::file::block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let p = partition(dir.path());
            let first = p.append(producer_batch(3, 0, 7, 0, 0), 0).await.unwrap();
            let retry = p.append(producer_batch(3, 0, 7, 0, 0), 0).await.unwrap();
            assert_eq!((retry.base_offset, retry.last_offset), (first.base_offset, first.last_offset));
            assert_eq!(p.log_end_offset(), 3);
            assert_eq!(p.append(producer_batch(2, 0, 7, 0, 3), 0).await.unwrap().base_offset, 3);
            assert_eq!(p.high_watermark(), 5);
        })
    }

    #[test]
    fn sequence_gaps_and_stale_epochs_are_refused() {
        crate::runtime::file::block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let p = partition(dir.path());
            p.append(producer_batch(3, 0, 7, 1, 0), 0).await.unwrap();
            let refused = p.append(producer_batch(1, 0, 7, 1, 5), 0).await.unwrap_err();
            assert!(matches!(refused, PartitionError::Sequence(SequenceError::OutOfOrder)), "{refused:?}");
            let refused = p.append(producer_batch(1, 0, 7, 0, 3), 0).await.unwrap_err();
            assert!(matches!(refused, PartitionError::Sequence(SequenceError::StaleEpoch)), "{refused:?}");
            assert_eq!(p.append(producer_batch(1, 0, 7, 2, 0), 0).await.unwrap().base_offset, 3);
            // Batches without a producer id are never checked.
            assert_eq!(p.append(batch(1, 0), 0).await.unwrap().base_offset, 4);
        })
    }

    /// A batch of one record with `key`.
    fn keyed(key: &str, value: &str) -> Bytes {
        crate::protocol::records::encode_batch(
            &[(Some(Bytes::from(key.to_string())), Some(Bytes::from(value.to_string())))],
            0,
        )
    }

    /// A partition on the simulated disk with `rounds` records of each of three keys, in
    /// segments of about 300 bytes, under `cleanup.policy=compact`.
    async fn compactable(disk: &Arc<SimDisk>, name: &str, rounds: usize, counters: &Rc<SyncCounters>) -> Partition {
        let p = simulated(disk, name, LogConfig { compact: true, segment_bytes: 300, ..config() }, counters);
        for round in 0..rounds {
            for key in ["a", "b", "c"] {
                p.append(keyed(key, &round.to_string()), 0).await.unwrap();
            }
        }
        p
    }

    /// Lets blocking syncs held on `disk` go after 10 s unless told first (the thread then says
    /// it timed out): a test that holds a helper thread's work fails instead of hanging, should
    /// that work block the shard.
    fn release_in_time(disk: &Arc<SimDisk>) -> (std::sync::mpsc::Sender<()>, std::thread::JoinHandle<bool>) {
        let (finished, wait) = std::sync::mpsc::channel::<()>();
        let disk = disk.clone();
        let watchdog = std::thread::spawn(move || {
            let timed_out = wait.recv_timeout(std::time::Duration::from_secs(10)).is_err();
            disk.release_blocking_calls();
            timed_out
        });
        (finished, watchdog)
    }

    /// A compactable partition whose compaction pass is under way and held at the sync of its
    /// first rewritten segment; the watchdog releases it if the test blocks the shard.
    async fn held_compaction(
        disk: &Arc<SimDisk>,
        counters: &Rc<SyncCounters>,
    ) -> (Partition, std::sync::mpsc::Sender<()>, std::thread::JoinHandle<bool>) {
        let p = compactable(disk, "t-0", 20, counters).await;
        disk.hold_blocking_syncs(".cleaned");
        let (finished, watchdog) = release_in_time(disk);
        p.maintain(crate::runtime::now_ms(), false).unwrap();
        until("the compaction waits for its sync", || disk.blocked_calls() == 1).await;
        (p, finished, watchdog)
    }

    #[test]
    fn compaction_runs_off_the_shards_thread() {
        crate::runtime::file::block_on(async {
            let disk = SimDisk::new();
            let counters = Rc::new(SyncCounters::default());
            // The pass is held halfway, at the sync of its first rewritten segment: the shard
            // serves meanwhile, the compacting partition included.
            let (compacting, finished, watchdog) = held_compaction(&disk, &counters).await;
            let other = simulated(&disk, "t-1", config(), &counters);
            let (size, end) = (compacting.size(), compacting.log_end_offset());
            assert_eq!(other.append(batch(2, 0), 0).await.unwrap().base_offset, 0);
            assert_eq!(other.read(0, 1 << 20).unwrap().len(), batch(2, 0).len());
            assert!(!compacting.read(0, 1 << 20).unwrap().is_empty(), "the old segments still serve");
            assert_eq!(compacting.size(), size, "nothing is swapped in before the pass is done");
            assert_eq!(disk.blocked_calls(), 1, "the compaction is still held");
            let _ = finished.send(());
            assert!(!watchdog.join().unwrap(), "the shard was blocked until the watchdog released the sync");
            until("the compacted segments are swapped in", || compacting.size() < size).await;
            assert_eq!(compacting.log_end_offset(), end);
        })
    }

    #[test]
    fn segments_deleted_while_compaction_runs_go_once_it_is_done() {
        crate::runtime::file::block_on(async {
            let disk = SimDisk::new();
            let counters = Rc::new(SyncCounters::default());
            let (p, finished, watchdog) = held_compaction(&disk, &counters).await;
            // DeleteRecords past the first segments: they are gone for reads at once, and their
            // files stay until the compaction that may be rewriting them is done.
            let start = p.delete_records(-1).await.unwrap();
            assert_eq!(start, p.high_watermark());
            assert!(p.read(0, 1 << 20).is_err(), "below the log start offset");
            let fs: Arc<dyn FileSystem> = disk.clone();
            let logs =
                || fs.list_dir(Path::new("/data/t-0")).unwrap().into_iter().filter(|n| n.ends_with(".log")).count();
            assert!(logs() > 2, "the files wait for the compaction");
            let _ = finished.send(());
            assert!(!watchdog.join().unwrap(), "the shard was blocked until the watchdog released the sync");
            until("the deleted segments' files are gone", || logs() == 1).await;
            assert_eq!(p.log_start_offset(), start);
        })
    }

    /// A partition of one-batch segments holding offsets 0, 1 and 2, whose first segment's
    /// renames are held once DeleteRecords(2) deleted it and the next; the watchdog releases
    /// them if the test blocks the shard.
    async fn held_renames(
        disk: &Arc<SimDisk>,
        counters: &Rc<SyncCounters>,
    ) -> (Partition, LogConfig, std::sync::mpsc::Sender<()>, std::thread::JoinHandle<bool>) {
        let one_batch = LogConfig { segment_bytes: batch(1, 0).len() as u64, ..config() };
        let p = simulated(disk, "t-0", one_batch.clone(), counters);
        for _ in 0..3 {
            p.append(batch(1, 0), 0).await.unwrap();
        }
        disk.hold_renames("t-0/00000000000000000000.");
        let (finished, watchdog) = release_in_time(disk);
        assert_eq!(p.delete_records(2).await.unwrap(), 2, "answered while the renames wait");
        until("the first segment's files are being renamed", || disk.blocked_calls() == 1).await;
        (p, one_batch, finished, watchdog)
    }

    /// The `.log` files under `/data/t-0`.
    fn segment_logs(disk: &Arc<SimDisk>) -> Vec<String> {
        let fs: Arc<dyn FileSystem> = disk.clone();
        let mut logs: Vec<String> =
            fs.list_dir(Path::new("/data/t-0")).unwrap().into_iter().filter(|n| n.ends_with(".log")).collect();
        logs.sort();
        logs
    }

    #[test]
    fn segments_deleted_from_the_head_are_renamed_off_the_shards_thread() {
        crate::runtime::file::block_on(async {
            let disk = SimDisk::new();
            let counters = Rc::new(SyncCounters::default());
            let (p, _, finished, watchdog) = held_renames(&disk, &counters).await;
            let other = simulated(&disk, "t-1", config(), &counters);
            assert_eq!(other.append(batch(2, 0), 0).await.unwrap().base_offset, 0, "the shard goes on");
            assert!(p.read(0, 1 << 20).is_err(), "gone for reads at once");
            let _ = finished.send(());
            assert!(!watchdog.join().unwrap(), "the shard was blocked until the watchdog released the rename");
            until("the deleted segments' files are gone", || segment_logs(&disk).len() == 1).await;
            assert_eq!(p.log_start_offset(), 2);
        })
    }

    #[test]
    fn segments_deleted_by_retention_are_renamed_off_the_shards_thread() {
        crate::runtime::file::block_on(async {
            let disk = SimDisk::new();
            let counters = Rc::new(SyncCounters::default());
            let one_batch = LogConfig { segment_bytes: batch(1, 0).len() as u64, retention_ms: Some(0), ..config() };
            let p = simulated(&disk, "t-0", one_batch, &counters);
            for _ in 0..3 {
                p.append(batch(1, 0), 0).await.unwrap();
            }
            disk.hold_renames("t-0/00000000000000000000.");
            let (finished, watchdog) = release_in_time(&disk);
            p.maintain(i64::MAX / 2, true).unwrap();
            assert_eq!(p.log_start_offset(), 2, "gone for reads at once");
            until("the first segment's files are being renamed", || disk.blocked_calls() == 1).await;
            let _ = finished.send(());
            assert!(!watchdog.join().unwrap(), "the shard was blocked until the watchdog released the rename");
            until("the deleted segments' files are gone", || segment_logs(&disk).len() == 1).await;
        })
    }

    #[test]
    fn a_close_waits_for_the_renames_of_deleted_segments_and_none_comes_back() {
        crate::runtime::file::block_on(async {
            let disk = SimDisk::new();
            let counters = Rc::new(SyncCounters::default());
            let (p, one_batch, finished, watchdog) = held_renames(&disk, &counters).await;
            let closed = started(async move { p.close().await.is_ok() });
            // The shard serves while the close waits (an append is several turns of it).
            let other = simulated(&disk, "t-1", config(), &counters);
            assert_eq!(other.append(batch(2, 0), 0).await.unwrap().base_offset, 0);
            assert!(closed.borrow().is_none(), "the close waits for the renames in flight");
            let _ = finished.send(());
            assert!(!watchdog.join().unwrap(), "the shard was blocked until the watchdog released the rename");
            until("the partition is closed", || closed.borrow().is_some()).await;
            assert_eq!(*closed.borrow(), Some(true));
            // Opened again after that clean close: the deleted segments stay deleted.
            assert_eq!(segment_logs(&disk), ["00000000000000000002.log"]);
            let fs: Arc<dyn FileSystem> = disk.clone();
            let p = Partition::open(&fs, Path::new("/data/t-0"), one_batch, EXPIRY, 0, true, counters).unwrap();
            assert_eq!((p.log_start_offset(), p.log_end_offset()), (2, 3));
        })
    }

    #[test]
    fn a_deleted_partition_s_directory_is_renamed_off_the_shards_thread() {
        crate::runtime::file::block_on(async {
            let disk = SimDisk::new();
            let counters = Rc::new(SyncCounters::default());
            let p = simulated(&disk, "t-0", config(), &counters);
            let other = simulated(&disk, "t-1", config(), &counters);
            p.append(batch(1, 0), 0).await.unwrap();
            disk.hold_renames("/data/t-0");
            let (finished, watchdog) = release_in_time(&disk);
            let deleted = started(async move { p.delete().await.is_ok() });
            until("the directory is being renamed", || disk.blocked_calls() == 1).await;
            assert_eq!(other.append(batch(2, 0), 0).await.unwrap().base_offset, 0, "the shard goes on");
            assert!(deleted.borrow().is_none(), "the delete returns once the name is free");
            let _ = finished.send(());
            assert!(!watchdog.join().unwrap(), "the shard was blocked until the watchdog released the rename");
            until("the partition is deleted", || deleted.borrow().is_some()).await;
            assert_eq!(*deleted.borrow(), Some(true));
            let fs: Arc<dyn FileSystem> = disk.clone();
            assert!(!fs.list_dir(Path::new("/data")).unwrap().contains(&"t-0".to_string()), "the name is free");
        })
    }

    #[test]
    fn closes_sync_on_the_ring_all_at_once() {
        crate::runtime::file::block_on(async {
            let disk = SimDisk::new();
            let counters = Rc::new(SyncCounters::default());
            let partitions = ["t-0", "t-1"].map(|name| simulated(&disk, name, config(), &counters));
            for p in &partitions {
                p.append(batch(2, 0), 0).await.unwrap();
            }
            disk.hold_syncs();
            let closed = started(async move {
                let outcomes = futures::future::join_all(partitions.map(Partition::close)).await;
                outcomes.iter().all(Result::is_ok)
            });
            until("both partitions' fsyncs are in flight", || disk.held_syncs() == 2).await;
            assert!(closed.borrow().is_none(), "a close waits for its fsync");
            assert_eq!(disk.release_syncs(), 2);
            until("both partitions are closed", || closed.borrow().is_some()).await;
            assert_eq!(*closed.borrow(), Some(true));
            let fs: Arc<dyn FileSystem> = disk.clone();
            for name in ["t-0", "t-1"] {
                let p =
                    Partition::open(&fs, &Path::new("/data").join(name), config(), EXPIRY, 0, true, counters.clone())
                        .unwrap();
                assert_eq!(p.log_end_offset(), 2);
            }
        })
    }

    #[test]
    fn delete_records_writes_the_log_start_offset_off_the_shards_thread() {
        crate::runtime::file::block_on(async {
            let disk = SimDisk::new();
            let counters = Rc::new(SyncCounters::default());
            let p = simulated(&disk, "t-0", config(), &counters);
            let other = simulated(&disk, "t-1", config(), &counters);
            p.append(batch(3, 0), 0).await.unwrap();
            disk.hold_blocking_syncs("log-start-offset");
            let (finished, watchdog) = release_in_time(&disk);
            let answer = started(p.delete_records(2));
            until("the log start offset's file is being synced", || disk.blocked_calls() == 1).await;
            assert_eq!(other.append(batch(1, 0), 0).await.unwrap().base_offset, 0, "the shard goes on");
            assert!(answer.borrow().is_none());
            assert_eq!(p.log_start_offset(), 0, "the start moves once its file holds it");
            let _ = finished.send(());
            assert!(!watchdog.join().unwrap(), "the shard was blocked until the watchdog released the sync");
            until("DeleteRecords is answered", || answer.borrow().is_some()).await;
            assert_eq!(answer.borrow_mut().take().unwrap().unwrap(), 2);
            assert_eq!(p.log_start_offset(), 2);
            assert_eq!(p.delete_records(-1).await.unwrap(), 3, "the next one gets its turn");
        })
    }

    #[test]
    fn a_truncation_waits_for_the_compaction_in_flight() {
        crate::runtime::file::block_on(async {
            let disk = SimDisk::new();
            let counters = Rc::new(SyncCounters::default());
            let (p, finished, watchdog) = held_compaction(&disk, &counters).await;
            // A cut inside the closed segments the pass is rewriting.
            let truncating = p.clone();
            let answer = started(async move { truncating.truncate_to(10).await });
            for _ in 0..10 {
                yield_now().await;
            }
            assert!(answer.borrow().is_none(), "the truncation waits for the pass");
            assert_eq!(p.log_end_offset(), 60);
            let _ = finished.send(());
            assert!(!watchdog.join().unwrap(), "the shard was blocked until the watchdog released the sync");
            until("the truncation is done", || answer.borrow().is_some()).await;
            let end = answer.borrow_mut().take().unwrap().unwrap();
            assert!(end <= 10 && p.log_end_offset() == end, "{end}");
            // What compaction kept below the cut reads back; nothing at or past it does.
            let mut offset = p.log_start_offset();
            while offset < end {
                let bytes = p.read(offset, 1 << 20).unwrap();
                if bytes.is_empty() {
                    break;
                }
                let records = crate::protocol::records::decode_records(bytes, offset).unwrap();
                assert!(records.iter().all(|r| r.offset < end), "{records:?}");
                offset = records.last().unwrap().offset + 1;
            }
        })
    }

    #[test]
    fn a_truncation_cuts_the_files_off_the_shards_thread_and_reads_stop_at_the_cut_first() {
        crate::runtime::file::block_on(async {
            let disk = SimDisk::new();
            let counters = Rc::new(SyncCounters::default());
            // Two batches of two records a segment: 0..4, 4..8, 8..12.
            let small = LogConfig { segment_bytes: 2 * batch(2, 0).len() as u64, ..config() };
            let p = simulated(&disk, "t-0", small, &counters);
            let other = simulated(&disk, "t-1", config(), &counters);
            for _ in 0..6 {
                p.append(batch(2, 0), 0).await.unwrap();
            }
            disk.hold_truncates("t-0/00000000000000000004.log");
            let (finished, watchdog) = release_in_time(&disk);
            // The batch holding 7 starts at 6: the segment at 8 goes, the one at 4 is cut.
            let truncating = p.clone();
            let answer = started(async move { truncating.truncate_to(7).await });
            until("the cut segment's file is being cut", || disk.blocked_calls() == 1).await;
            assert_eq!(other.append(batch(2, 0), 0).await.unwrap().base_offset, 0, "the shard goes on");
            assert_eq!(other.read(0, 1 << 20).unwrap().len(), batch(2, 0).len());
            assert!(answer.borrow().is_none());
            assert_eq!((p.log_end_offset(), p.high_watermark()), (6, 6), "reads stop at the cut before the file does");
            assert_eq!(p.read(4, 1 << 20).unwrap().len(), batch(2, 0).len());
            assert!(p.read(8, 1 << 20).is_err(), "past the log end");
            let _ = finished.send(());
            assert!(!watchdog.join().unwrap(), "the shard was blocked until the watchdog released the cut");
            until("the truncation is done", || answer.borrow().is_some()).await;
            assert_eq!(answer.borrow_mut().take().unwrap().unwrap(), 6);
            let fs: Arc<dyn FileSystem> = disk.clone();
            let files = fs.list_dir(Path::new("/data/t-0")).unwrap();
            assert!(!files.iter().any(|f| f.starts_with("00000000000000000008.")), "{files:?}");
            let cut = fs.open(Path::new("/data/t-0/00000000000000000004.log"), crate::storage::fs::Open::Existing);
            assert_eq!(cut.unwrap().len().unwrap(), batch(2, 0).len() as u64);
            assert_eq!(p.append(batch(2, 0), 0).await.unwrap().base_offset, 6, "appends go on from the cut");
        })
    }

    /// Six batches of two records, two a segment (0..4, 4..8, 8..12): the rolls moved the
    /// recovery point to 8. A truncation to 7 is then started and held at the `hold`ing call
    /// until the disk dies; returns the partition and the truncation's answer.
    async fn truncation_failed_at(hold: impl FnOnce(&SimDisk)) -> (Partition, Result<i64, PartitionError>) {
        let disk = SimDisk::new();
        let small = LogConfig { segment_bytes: 2 * batch(2, 0).len() as u64, ..config() };
        let p = simulated(&disk, "t-0", small, &Rc::default());
        for _ in 0..6 {
            p.append(batch(2, 0), 0).await.unwrap();
        }
        hold(&disk);
        let (finished, watchdog) = release_in_time(&disk);
        let truncating = p.clone();
        let answer = started(async move { truncating.truncate_to(7).await });
        until("the truncation is held", || disk.blocked_calls() == 1).await;
        disk.fail_after(0);
        let _ = finished.send(());
        assert!(!watchdog.join().unwrap(), "the shard was blocked until the watchdog released the call");
        until("the truncation is answered", || answer.borrow().is_some()).await;
        let answer = answer.borrow_mut().take().unwrap();
        (p, answer)
    }

    #[test]
    fn a_truncation_whose_recovery_point_write_fails_changes_nothing() {
        crate::runtime::file::block_on(async {
            let (p, answer) = truncation_failed_at(|disk| disk.hold_blocking_syncs("t-0/recovery-point")).await;
            assert!(answer.is_err());
            assert_eq!((p.log_end_offset(), p.high_watermark()), (12, 12), "the log is as it was");
            assert!(p.0.state.borrow().failed.is_none(), "the fetcher may try again");
        })
    }

    #[test]
    fn a_truncation_whose_files_fail_refuses_appends_until_a_restart() {
        crate::runtime::file::block_on(async {
            let (p, answer) = truncation_failed_at(|disk| disk.hold_truncates("t-0/00000000000000000004.log")).await;
            assert!(answer.is_err());
            // Cut in memory, maybe not on disk: nothing may be appended after the cut.
            assert_eq!((p.log_end_offset(), p.high_watermark()), (6, 6));
            let refused = p.append(batch(2, 0), 0).await.unwrap_err();
            assert!(matches!(refused, PartitionError::SyncFailed), "{refused:?}");
            assert!(p.close().await.is_err(), "no clean shutdown: the restart recovers the log from the cut");
        })
    }

    #[test]
    fn appends_queued_behind_a_write_share_the_next_one_in_order() {
        crate::runtime::file::block_on(async {
            let disk = SimDisk::new();
            let p = simulated(&disk, "t-0", config(), &Rc::default());
            disk.hold_writes();
            let first = append_concurrently(&p, 1);
            until("the first append's write is submitted", || disk.held_writes() == 1).await;
            // Nine more queue meanwhile, and go out together once it completes.
            let answers = append_concurrently(&p, 9);
            disk.release_writes();
            until("a second write is submitted", || disk.held_writes() == 1).await;
            disk.release_writes();
            until("all are answered", || answered(&first) + answered(&answers) == 10).await;
            assert_eq!(disk.writes_submitted(), 2, "ten appends, two writes");
            assert_eq!(base_offsets(&first), [0]);
            assert_eq!(
                base_offsets(&answers),
                (1..10).collect::<Vec<_>>(),
                "offsets in the order the appends were made"
            );
            // The file holds the batches in that order, each stamped with its offset.
            let mut read = p.read(0, 1 << 20).unwrap();
            for offset in 0..10 {
                let header = BatchHeader::parse(&read).unwrap();
                assert_eq!(header.base_offset, offset);
                read = read.slice(header.size()..);
            }
            assert!(read.is_empty());
        })
    }

    #[test]
    fn a_failed_write_is_cut_back_off_the_shards_thread_before_the_next_write() {
        crate::runtime::file::block_on(async {
            let disk = SimDisk::new();
            let counters = Rc::new(SyncCounters::default());
            let p = simulated(&disk, "t-0", config(), &counters);
            let other = simulated(&disk, "t-1", config(), &counters);
            p.append(batch(1, 0), 0).await.unwrap();
            // The next write lands half its bytes and fails; cutting them off is held.
            disk.fail_writes(true);
            disk.hold_truncates("t-0/");
            let (finished, watchdog) = release_in_time(&disk);
            let failed = append_concurrently(&p, 1);
            until("the failed write is being cut back", || disk.blocked_calls() == 1).await;
            disk.fail_writes(false);
            let queued = append_concurrently(&p, 1);
            assert_eq!(other.append(batch(2, 0), 0).await.unwrap().base_offset, 0, "the shard goes on");
            assert_eq!(answered(&failed) + answered(&queued), 0, "the writer waits for the cut");
            let _ = finished.send(());
            assert!(!watchdog.join().unwrap(), "the shard was blocked until the watchdog released the cut");
            until("both are answered", || answered(&failed) + answered(&queued) == 2).await;
            assert!(failed.borrow()[0].as_ref().unwrap().is_err());
            assert_eq!(base_offsets(&queued), [1], "written right after the first batch");
            let fs: Arc<dyn FileSystem> = disk.clone();
            let log = fs.open(Path::new("/data/t-0/00000000000000000000.log"), crate::storage::fs::Open::Existing);
            assert_eq!(log.unwrap().len().unwrap(), 2 * batch(1, 0).len() as u64, "nothing of the failed write");
        })
    }

    #[test]
    fn a_failed_coalesced_write_fails_every_append_in_it_and_none_is_acknowledged() {
        crate::runtime::file::block_on(async {
            let disk = SimDisk::new();
            let p = simulated(&disk, "t-0", config(), &Rc::default());
            disk.hold_writes();
            let first = append_concurrently(&p, 1);
            until("the first append's write is submitted", || disk.held_writes() == 1).await;
            let answers = append_concurrently(&p, 9);
            // The first write completes; the one gathering the nine others writes half and fails.
            disk.fail_writes(true);
            disk.release_writes();
            until("a second write is submitted", || disk.held_writes() == 1).await;
            disk.release_writes();
            until("all are answered", || answered(&first) + answered(&answers) == 10).await;
            assert_eq!(disk.writes_submitted(), 2);
            assert_eq!(base_offsets(&first), [0]);
            for answer in answers.borrow().iter() {
                let error = answer.as_ref().unwrap().as_ref().unwrap_err();
                let code = crate::protocol::errors::partition_error_code(error);
                assert_eq!(code, ResponseError::KafkaStorageError, "{error:?}");
            }
            // Nothing of the failed write is readable, and its half was cut off the file.
            assert_eq!((p.log_end_offset(), p.high_watermark()), (1, 1));
            assert_eq!(p.read(0, 1 << 20).unwrap().len(), batch(1, 0).len());
            disk.fail_writes(false);
            disk.release_writes();
            let next = p.append(batch(1, 0), 0);
            until("the next write is submitted", || disk.held_writes() == 1).await;
            disk.release_writes();
            assert_eq!(next.await.unwrap().base_offset, 1, "written right after the first batch");
            assert_eq!(p.read(0, 1 << 20).unwrap().len(), 2 * batch(1, 0).len());
        })
    }

    #[test]
    fn a_producer_s_queued_batches_go_in_separate_writes_each_checked_after_the_one_before() {
        crate::runtime::file::block_on(async {
            let disk = SimDisk::new();
            let p = simulated(&disk, "t-0", config(), &Rc::default());
            disk.hold_writes();
            let requests = [
                producer_batch(3, 0, 7, 0, 0),
                producer_batch(3, 0, 7, 0, 3),
                producer_batch(3, 0, 8, 0, 0),
                producer_batch(3, 0, 7, 0, 6),
                batch(1, 0),
            ];
            let answers = append_all(&p, requests.into_iter());
            // Writes: the first; the second with producer 8's; producer 7's third with the last.
            for write in 0..3 {
                until("the next write is submitted", || disk.held_writes() == 1).await;
                assert_eq!(disk.writes_submitted(), write + 1);
                disk.release_writes();
            }
            until("all are answered", || answered(&answers) == 5).await;
            assert_eq!(base_offsets(&answers), [0, 3, 6, 9, 12], "each in order, none refused");
            assert_eq!((p.log_end_offset(), disk.writes_submitted()), (13, 3));
        })
    }

    #[test]
    fn queued_appends_that_overflow_the_segment_are_written_after_the_roll() {
        crate::runtime::file::block_on(async {
            let disk = SimDisk::new();
            // Room for three batches a segment.
            let three = LogConfig { segment_bytes: 3 * batch(1, 0).len() as u64, ..config() };
            let p = simulated(&disk, "t-0", three, &Rc::default());
            disk.hold_writes();
            let first = append_concurrently(&p, 1);
            until("the first append's write is submitted", || disk.held_writes() == 1).await;
            let answers = append_concurrently(&p, 7);
            for _ in 0..3 {
                disk.release_writes();
                until("the next write is submitted", || disk.held_writes() == 1).await;
            }
            disk.release_writes();
            until("all are answered", || answered(&first) + answered(&answers) == 8).await;
            // 1, then 2 filling the first segment, 3 filling the next, 2 in the last.
            assert_eq!(disk.writes_submitted(), 4);
            assert_eq!(base_offsets(&answers), (1..8).collect::<Vec<_>>());
            let fs: Arc<dyn FileSystem> = disk.clone();
            let mut logs: Vec<String> =
                fs.list_dir(Path::new("/data/t-0")).unwrap().into_iter().filter(|f| f.ends_with(".log")).collect();
            logs.sort();
            assert_eq!(logs, ["00000000000000000000.log", "00000000000000000003.log", "00000000000000000006.log"]);
        })
    }

    fn base_offsets(answers: &Answers) -> Vec<i64> {
        answers.borrow().iter().map(|a| a.as_ref().unwrap().as_ref().unwrap().base_offset).collect()
    }

    #[test]
    fn recovery_runs_off_the_shards_thread() {
        crate::runtime::file::block_on(async {
            use crate::storage::fs::{Open, write_all_at};
            let disk = SimDisk::new();
            let counters = Rc::new(SyncCounters::default());
            let fs: Arc<dyn FileSystem> = disk.clone();
            let recovering = simulated(&disk, "t-0", config(), &counters);
            for _ in 0..5 {
                recovering.append(batch(2, 0), 0).await.unwrap();
            }
            drop(recovering);
            // A torn tail after the last batch, as a crash in the middle of a write leaves.
            let log = fs.open(Path::new("/data/t-0/00000000000000000000.log"), Open::Existing).unwrap();
            write_all_at(&*log, &mut [std::io::IoSlice::new(&[7; 100])], log.len().unwrap()).unwrap();
            drop(log);
            let other = simulated(&disk, "t-1", config(), &counters);
            disk.hold_blocking_syncs("t-0/00000000000000000000.log");
            let (finished, watchdog) = release_in_time(&disk);
            let (fs, counters) = (fs.clone(), counters.clone());
            let opened = started(async move {
                Partition::open_off_thread(&fs, Path::new("/data/t-0"), config(), EXPIRY, 0, false, counters).await
            });
            // Recovery cut the tail and syncs the cut: the shard serves meanwhile.
            until("the recovery's sync is held", || disk.blocked_calls() == 1).await;
            assert_eq!(other.append(batch(1, 0), 0).await.unwrap().base_offset, 0, "the shard goes on");
            assert!(opened.borrow().is_none(), "the partition is not there before it is recovered");
            let _ = finished.send(());
            assert!(!watchdog.join().unwrap(), "the shard was blocked until the watchdog released the sync");
            until("the partition is open", || opened.borrow().is_some()).await;
            let recovered = opened.borrow_mut().take().unwrap().unwrap();
            assert_eq!(recovered.log_end_offset(), 10);
            assert_eq!(recovered.append(batch(1, 0), 0).await.unwrap().base_offset, 10);
            assert_eq!(recovered.read(0, 1 << 20).unwrap().len(), 5 * batch(2, 0).len() + batch(1, 0).len());
        })
    }

    #[test]
    fn a_new_leader_epoch_is_checkpointed_off_the_shards_thread_before_its_first_batch() {
        crate::runtime::file::block_on(async {
            let disk = SimDisk::new();
            let counters = Rc::new(SyncCounters::default());
            let p = simulated(&disk, "t-0", config(), &counters);
            let other = simulated(&disk, "t-1", config(), &counters);
            p.append(batch(1, 0), 0).await.unwrap();
            disk.hold_blocking_syncs("t-0/leader-epoch-checkpoint");
            let (finished, watchdog) = release_in_time(&disk);
            p.set_leadership(1, true);
            let waiting = append_concurrently(&p, 1);
            until("the new epoch's checkpoint is being synced", || disk.blocked_calls() == 1).await;
            assert_eq!(other.append(batch(2, 0), 0).await.unwrap().base_offset, 0, "the shard goes on");
            assert_eq!(p.end_offset_for_epoch(1, 1).unwrap(), (1, 1), "the leader's epoch is known at once");
            assert_eq!(answered(&waiting), 0, "the epoch's first batch waits for its checkpoint");
            assert_eq!(p.log_end_offset(), 1);
            let _ = finished.send(());
            assert!(!watchdog.join().unwrap(), "the shard was blocked until the watchdog released the sync");
            until("the append is answered", || answered(&waiting) == 1).await;
            let fs: Arc<dyn FileSystem> = disk.clone();
            let checkpoint = fs.read(Path::new("/data/t-0/leader-epoch-checkpoint")).unwrap();
            assert_eq!(String::from_utf8(checkpoint).unwrap(), "0\n2\n0 0\n1 1\n");
            assert_eq!(p.epoch_for_offset(1), Some(1));
        })
    }

    #[test]
    fn a_truncation_waits_for_the_leader_epoch_checkpoint_being_written() {
        crate::runtime::file::block_on(async {
            let disk = SimDisk::new();
            let counters = Rc::new(SyncCounters::default());
            let p = simulated(&disk, "t-0", config(), &counters);
            p.append(batch(2, 0), 0).await.unwrap();
            p.append(batch(2, 0), 0).await.unwrap();
            disk.hold_blocking_syncs("t-0/leader-epoch-checkpoint");
            let (finished, watchdog) = release_in_time(&disk);
            p.set_leadership(1, true);
            until("the new epoch's checkpoint is being synced", || disk.blocked_calls() == 1).await;
            p.set_leadership(2, false);
            let truncating = p.clone();
            let answer = started(async move { truncating.truncate_to(2).await });
            for _ in 0..10 {
                yield_now().await;
            }
            assert!(answer.borrow().is_none(), "the truncation waits for the checkpoint");
            let _ = finished.send(());
            assert!(!watchdog.join().unwrap(), "the shard was blocked until the watchdog released the sync");
            until("the truncation is done", || answer.borrow().is_some()).await;
            assert_eq!(answer.borrow_mut().take().unwrap().unwrap(), 2);
            assert_eq!(p.log_end_offset(), 2);
            let fs: Arc<dyn FileSystem> = disk.clone();
            let checkpoint = fs.read(Path::new("/data/t-0/leader-epoch-checkpoint")).unwrap();
            assert_eq!(String::from_utf8(checkpoint).unwrap(), "0\n1\n0 0\n");
        })
    }

    #[test]
    fn a_roll_writes_the_producers_snapshot_off_the_shards_thread() {
        crate::runtime::file::block_on(async {
            let disk = SimDisk::new();
            let counters = Rc::new(SyncCounters::default());
            // Room for one batch a segment: the second append rolls.
            let one_batch = LogConfig { segment_bytes: producer_batch(1, 0, 7, 0, 0).len() as u64, ..config() };
            let rolling = simulated(&disk, "t-0", one_batch, &counters);
            let other = simulated(&disk, "t-1", config(), &counters);
            rolling.append(producer_batch(1, 0, 7, 0, 0), 0).await.unwrap();
            disk.hold_opens(".snapshot");
            let (finished, watchdog) = release_in_time(&disk);
            let waiting = append_concurrently(&rolling, 1);
            until("the roll's producer snapshot is being written", || disk.blocked_calls() == 1).await;
            assert_eq!(other.append(batch(2, 0), 0).await.unwrap().base_offset, 0, "the shard goes on");
            let _ = finished.send(());
            assert!(!watchdog.join().unwrap(), "the shard was blocked until the watchdog released the call");
            until("the append after the roll is answered", || answered(&waiting) == 1).await;
            let fs: Arc<dyn FileSystem> = disk.clone();
            let files = fs.list_dir(Path::new("/data/t-0")).unwrap();
            assert!(files.contains(&"00000000000000000001.snapshot".to_string()), "{files:?}");
        })
    }
}
