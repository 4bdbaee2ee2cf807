//! Idempotent producers' state of one partition: per producer id, its epoch and its last few
//! batches (sequences and the offsets they got), so that a batch must continue its producer's
//! sequence and a retry of a recent batch is answered with its original offsets instead of
//! being written twice.
//!
//! The state survives restarts as Kafka's does: `<offset>.snapshot` files in the partition
//! directory hold the state as it was with the log ending at `offset`; they are written when a
//! segment rolls, at clean shutdown and after a recovery that had to scan the log. Opening a
//! partition loads the newest valid snapshot at or below the log end and replays the batch
//! headers after it (they carry producer id, epoch, base sequence and offset delta).
//!
//! Invariants: every entry holds between 1 and [`RECENT_BATCHES`] batches, oldest first, all of
//! the entry's epoch; a snapshot's offset is a batch boundary of the log that wrote it, and no
//! snapshot above the log end survives opening. Snapshots are not fsynced: each carries a
//! CRC-32C, and one that is torn or missing only sends the loader to an older one or to the log.
//! Owned by the partition's shard, like the log.

use std::collections::{HashMap, VecDeque};
use std::io::IoSlice;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::batch::BatchHeader;
use super::fs::{FileSystem, Open, write_all_at};
use super::{AppendInfo, Log, StorageError};

/// Why an idempotent producer's batch is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SequenceError {
    /// A batch with a producer id has a negative base sequence.
    #[error("negative base sequence")]
    NegativeSequence,
    /// The batch comes from an older epoch than its producer's.
    #[error("producer epoch older than the producer's current one")]
    StaleEpoch,
    /// The batch does not continue its producer's sequence.
    #[error("sequence does not continue the producer's last batch")]
    OutOfOrder,
}

/// Batches per producer remembered for answering retries, as Kafka does (and as many as a
/// producer may have in flight with idempotence).
pub const RECENT_BATCHES: usize = 5;
/// Snapshot files kept per partition; older ones go when a new one is written.
const SNAPSHOTS_KEPT: usize = 2;
const SNAPSHOT_EXTENSION: &str = "snapshot";
/// "SPS" and the format version.
const SNAPSHOT_MAGIC: u32 = u32::from_be_bytes(*b"SPS1");
const SNAPSHOT_HEADER_LEN: usize = 12;
const ENTRY_HEADER_LEN: usize = 19;
const BATCH_LEN: usize = 32;

/// `producer.id.expiration.ms` and how often it is applied.
#[derive(Debug, Clone, Copy)]
pub struct ProducerExpiry {
    /// A producer that appended nothing for this long is forgotten.
    pub expiration_ms: i64,
    pub check_interval_ms: i64,
}

/// One appended batch of a producer, as a retry must be answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct BatchMetadata {
    first_sequence: i32,
    last_sequence: i32,
    first_offset: i64,
    last_offset: i64,
    /// The LogAppendTime stamped, or -1.
    log_append_time_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct ProducerEntry {
    epoch: i16,
    /// The broker's clock at the producer's last append; drives `producer.id.expiration.ms`.
    last_append_ms: i64,
    batches: VecDeque<BatchMetadata>,
}

impl ProducerEntry {
    fn last_sequence(&self) -> i32 {
        self.batches.back().expect("an entry holds a batch").last_sequence
    }

    /// The earlier append of `header` if it is a retry of one of the recent batches.
    fn duplicate_of(&self, header: &BatchHeader) -> Option<&BatchMetadata> {
        let last_sequence = last_sequence(header);
        (header.producer_epoch == self.epoch).then_some(())?;
        self.batches.iter().find(|b| b.first_sequence == header.base_sequence && b.last_sequence == last_sequence)
    }

    /// Records an appended batch; a new epoch forgets the old epoch's batches.
    fn push(&mut self, epoch: i16, batch: BatchMetadata, now_ms: i64) {
        if epoch != self.epoch {
            self.epoch = epoch;
            self.batches.clear();
        }
        if self.batches.len() == RECENT_BATCHES {
            self.batches.pop_front();
        }
        self.batches.push_back(batch);
        self.last_append_ms = now_ms;
    }
}

/// What [`ProducerStates::check`] decided for a request's batches.
pub enum Checked {
    /// Append them, then [`ProducerStates::record`] them.
    Append,
    /// A retry of a batch already in the log: answer with this and write nothing.
    Duplicate(AppendInfo),
}

/// One producer as DescribeProducers reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActiveProducer {
    pub producer_id: i64,
    pub epoch: i16,
    pub last_sequence: i32,
    /// The broker's clock at its last append.
    pub last_append_ms: i64,
}

/// What [`ProducerStates::load`] reads of a log: a [`Log`], or on a helper thread its
/// [`super::LogHeaders`].
pub trait BatchHeaders {
    fn file_system(&self) -> Arc<dyn FileSystem>;
    fn log_start_offset(&self) -> i64;
    fn log_end_offset(&self) -> i64;
    /// Calls `f` with the header of every batch from the one holding `offset` (or the first
    /// after it) to the log end, in offset order.
    fn scan_headers(&self, offset: i64, f: impl FnMut(&BatchHeader)) -> Result<(), StorageError>;
}

impl BatchHeaders for Log {
    fn file_system(&self) -> Arc<dyn FileSystem> {
        Log::file_system(self)
    }

    fn log_start_offset(&self) -> i64 {
        Log::log_start_offset(self)
    }

    fn log_end_offset(&self) -> i64 {
        Log::log_end_offset(self)
    }

    fn scan_headers(&self, offset: i64, f: impl FnMut(&BatchHeader)) -> Result<(), StorageError> {
        Log::scan_headers(self, offset, f)
    }
}

pub struct ProducerStates {
    fs: Arc<dyn FileSystem>,
    dir: PathBuf,
    expiry: ProducerExpiry,
    producers: HashMap<i64, ProducerEntry>,
    last_expiry_check_ms: i64,
}

impl ProducerStates {
    /// The state of the partition in `dir` whose log is `log`: the newest valid snapshot at or
    /// below the log end, then every batch after it. Producers found only in the log count as
    /// active now (their batch timestamps are the client's and may be anything).
    pub fn load(
        dir: &Path,
        log: &impl BatchHeaders,
        expiry: ProducerExpiry,
        now_ms: i64,
    ) -> Result<ProducerStates, StorageError> {
        let log_end_offset = log.log_end_offset();
        let fs = log.file_system();
        let mut snapshots = snapshot_offsets(&*fs, dir)?;
        snapshots.sort_unstable_by(|a, b| b.cmp(a));
        let mut loaded = None;
        for &offset in &snapshots {
            if offset > log_end_offset || loaded.is_some() {
                // Above the log end it describes batches that are gone (a truncated tail).
                if offset > log_end_offset {
                    remove_snapshot(&*fs, dir, offset)?;
                }
                continue;
            }
            match fs.read(&snapshot_path(dir, offset)).map_err(StorageError::from).and_then(|b| decode(&b)) {
                Ok(producers) => loaded = Some((offset, producers)),
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), offset, error = %e, "ignoring a bad producer snapshot");
                    remove_snapshot(&*fs, dir, offset)?;
                }
            }
        }
        let (from, producers) = loaded.unwrap_or_else(|| (log.log_start_offset(), HashMap::new()));
        let mut states = ProducerStates { fs, dir: dir.to_path_buf(), expiry, producers, last_expiry_check_ms: now_ms };
        let mut replayed = 0u64;
        log.scan_headers(from, |header| {
            states.replay(header, now_ms);
            replayed += 1;
        })?;
        // The next start then replays from here, not again from the old snapshot. Only a
        // shortcut: on a full disk the partition opens without it.
        if replayed > 0
            && let Err(e) = states.write_snapshot(log_end_offset)
        {
            tracing::warn!(dir = %dir.display(), error = %e, "could not write a producer snapshot");
        }
        Ok(states)
    }

    /// Forgets every producer: the log was emptied and started again (`Log::begin_restart_at`,
    /// which removed the snapshots too).
    pub fn clear(&mut self) {
        self.producers.clear();
    }

    /// When producers are forgotten, as given to [`ProducerStates::load`].
    pub fn expiry(&self) -> ProducerExpiry {
        self.expiry
    }

    /// Applies a batch read back from the log: no checks, it was accepted once.
    fn replay(&mut self, header: &BatchHeader, now_ms: i64) {
        if !header.has_producer_id() {
            return;
        }
        let batch = metadata(header, header.base_offset, header.log_append_time());
        self.producers.entry(header.producer_id).or_insert_with(|| new_entry(header.producer_epoch)).push(
            header.producer_epoch,
            batch,
            now_ms,
        );
    }

    /// Checks every idempotent batch of one request (`headers`, in order) as Kafka does: a
    /// batch must not come from an older epoch and must continue its producer's sequence
    /// (counting the request's earlier batches); a new epoch starts at sequence 0; a producer
    /// we do not know may start anywhere. If a batch repeats one of its producer's recent
    /// batches, the request is a retry and is answered with that batch's original offsets.
    pub fn check(&self, headers: &[BatchHeader]) -> Result<Checked, SequenceError> {
        // (producer id, epoch, last sequence) after the request's batches checked so far.
        let mut pending: Vec<(i64, i16, i32)> = Vec::new();
        for header in headers.iter().filter(|h| h.has_producer_id()) {
            if header.base_sequence < 0 {
                return Err(SequenceError::NegativeSequence);
            }
            let known = self.producers.get(&header.producer_id);
            if let Some(original) = known.and_then(|entry| entry.duplicate_of(header)) {
                return Ok(Checked::Duplicate(AppendInfo {
                    base_offset: original.first_offset,
                    last_offset: original.last_offset,
                    log_append_time_ms: original.log_append_time_ms,
                    records: 0,
                }));
            }
            let position = match pending.iter().position(|p| p.0 == header.producer_id) {
                Some(i) => Some((pending[i].1, pending[i].2)),
                None => known.map(|entry| (entry.epoch, entry.last_sequence())),
            };
            if let Some((epoch, last)) = position {
                let in_order = match header.producer_epoch.cmp(&epoch) {
                    std::cmp::Ordering::Less => return Err(SequenceError::StaleEpoch),
                    std::cmp::Ordering::Greater => header.base_sequence == 0,
                    std::cmp::Ordering::Equal => header.base_sequence == next_sequence(last, 1),
                };
                if !in_order {
                    return Err(SequenceError::OutOfOrder);
                }
            }
            pending.retain(|p| p.0 != header.producer_id);
            pending.push((header.producer_id, header.producer_epoch, last_sequence(header)));
        }
        Ok(Checked::Append)
    }

    /// Records the batches [`ProducerStates::check`] passed, now appended from `info.base_offset`.
    pub fn record(&mut self, headers: &[BatchHeader], info: &AppendInfo, now_ms: i64) {
        let mut base_offset = info.base_offset;
        for header in headers {
            if header.has_producer_id() {
                let log_append_time = (info.log_append_time_ms >= 0).then_some(info.log_append_time_ms);
                let batch = metadata(header, base_offset, log_append_time);
                self.producers.entry(header.producer_id).or_insert_with(|| new_entry(header.producer_epoch)).push(
                    header.producer_epoch,
                    batch,
                    now_ms,
                );
            }
            base_offset += header.offset_count();
        }
        debug_assert_eq!(base_offset, info.last_offset + 1);
    }

    /// Forgets producers idle for `producer.id.expiration.ms`, every
    /// `producer.id.expiration.check.interval.ms`.
    /// The producers this partition remembers, by producer id.
    pub fn active(&self) -> Vec<ActiveProducer> {
        let mut active: Vec<_> = self
            .producers
            .iter()
            .map(|(&producer_id, entry)| ActiveProducer {
                producer_id,
                epoch: entry.epoch,
                last_sequence: entry.last_sequence(),
                last_append_ms: entry.last_append_ms,
            })
            .collect();
        active.sort_unstable_by_key(|p| p.producer_id);
        active
    }

    pub fn expire_if_due(&mut self, now_ms: i64) {
        if now_ms - self.last_expiry_check_ms < self.expiry.check_interval_ms {
            return;
        }
        self.last_expiry_check_ms = now_ms;
        let expiration_ms = self.expiry.expiration_ms;
        self.producers.retain(|_, entry| now_ms - entry.last_append_ms < expiration_ms);
    }

    /// Writes `<offset>.snapshot` (through a temporary file and a rename) and removes all but
    /// the newest [`SNAPSHOTS_KEPT`]. `offset` must be the log end the state reflects.
    pub fn write_snapshot(&self, offset: i64) -> Result<(), StorageError> {
        self.snapshot_writer(offset)()
    }

    /// [`ProducerStates::write_snapshot`] as work for a helper thread: the state is taken now,
    /// the files written when it runs.
    pub fn snapshot_writer(&self, offset: i64) -> impl FnOnce() -> Result<(), StorageError> + Send + use<> {
        let (fs, dir, bytes) = (self.fs.clone(), self.dir.clone(), encode(&self.producers));
        move || {
            let path = snapshot_path(&dir, offset);
            let tmp = path.with_extension("snapshot.tmp");
            let file = fs.open(&tmp, Open::Truncate)?;
            if let Err(e) = write_all_at(&*file, &mut [IoSlice::new(&bytes)], 0) {
                // Gives the space back on a full disk.
                let _ = fs.remove_file(&tmp);
                return Err(e.into());
            }
            drop(file);
            fs.rename(&tmp, &path)?;
            let mut offsets = snapshot_offsets(&*fs, &dir)?;
            offsets.sort_unstable_by(|a, b| b.cmp(a));
            for &old in offsets.iter().skip(SNAPSHOTS_KEPT) {
                remove_snapshot(&*fs, &dir, old)?;
            }
            Ok(())
        }
    }

    #[cfg(test)]
    fn producer_count(&self) -> usize {
        self.producers.len()
    }
}

fn new_entry(epoch: i16) -> ProducerEntry {
    ProducerEntry { epoch, last_append_ms: 0, batches: VecDeque::with_capacity(RECENT_BATCHES) }
}

fn metadata(header: &BatchHeader, base_offset: i64, log_append_time_ms: Option<i64>) -> BatchMetadata {
    BatchMetadata {
        first_sequence: header.base_sequence,
        last_sequence: last_sequence(header),
        first_offset: base_offset,
        last_offset: base_offset + i64::from(header.last_offset_delta),
        log_append_time_ms: log_append_time_ms.unwrap_or(-1),
    }
}

/// Sequences count up to `i32::MAX`, then start again at 0.
fn next_sequence(sequence: i32, increment: i32) -> i32 {
    debug_assert!(sequence >= 0 && increment >= 0);
    if sequence > i32::MAX - increment { increment - (i32::MAX - sequence) - 1 } else { sequence + increment }
}

fn last_sequence(header: &BatchHeader) -> i32 {
    next_sequence(header.base_sequence.max(0), header.last_offset_delta)
}

fn snapshot_path(dir: &Path, offset: i64) -> PathBuf {
    dir.join(format!("{offset:020}.{SNAPSHOT_EXTENSION}"))
}

fn snapshot_offsets(fs: &dyn FileSystem, dir: &Path) -> Result<Vec<i64>, StorageError> {
    let mut offsets = Vec::new();
    for name in fs.list_dir(dir)? {
        if let Some(offset) = name.strip_suffix(".snapshot").and_then(|s| s.parse().ok()) {
            offsets.push(offset);
        }
    }
    Ok(offsets)
}

/// Removes every snapshot: the log was emptied to start again past its end
/// (`Log::begin_restart_at`), and they describe batches that are gone.
pub fn remove_snapshots(fs: &dyn FileSystem, dir: &Path) -> Result<(), StorageError> {
    for offset in snapshot_offsets(fs, dir)? {
        remove_snapshot(fs, dir, offset)?;
    }
    Ok(())
}

fn remove_snapshot(fs: &dyn FileSystem, dir: &Path, offset: i64) -> Result<(), StorageError> {
    match fs.remove_file(&snapshot_path(dir, offset)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
        _ => Ok(()),
    }
}

/// magic u32 | crc32c u32 (of what follows) | producer count u32 | per producer: id i64,
/// epoch i16, last append ms i64, batch count u8, then per batch: first sequence i32, last
/// sequence i32, first offset i64, last offset i64, log append time i64. Big-endian.
fn encode(producers: &HashMap<i64, ProducerEntry>) -> Vec<u8> {
    let mut body = Vec::with_capacity(4 + producers.len() * (ENTRY_HEADER_LEN + RECENT_BATCHES * BATCH_LEN));
    body.extend_from_slice(&(producers.len() as u32).to_be_bytes());
    for (id, entry) in producers {
        body.extend_from_slice(&id.to_be_bytes());
        body.extend_from_slice(&entry.epoch.to_be_bytes());
        body.extend_from_slice(&entry.last_append_ms.to_be_bytes());
        body.push(entry.batches.len() as u8);
        for b in &entry.batches {
            body.extend_from_slice(&b.first_sequence.to_be_bytes());
            body.extend_from_slice(&b.last_sequence.to_be_bytes());
            body.extend_from_slice(&b.first_offset.to_be_bytes());
            body.extend_from_slice(&b.last_offset.to_be_bytes());
            body.extend_from_slice(&b.log_append_time_ms.to_be_bytes());
        }
    }
    let mut file = Vec::with_capacity(8 + body.len());
    file.extend_from_slice(&SNAPSHOT_MAGIC.to_be_bytes());
    file.extend_from_slice(&crc32c::crc32c(&body).to_be_bytes());
    file.extend_from_slice(&body);
    file
}

/// Reads what [`encode`] wrote; anything short, long, out of range or with a wrong CRC is an
/// error, never a panic.
fn decode(bytes: &[u8]) -> Result<HashMap<i64, ProducerEntry>, StorageError> {
    let bad = |why: &str| StorageError::CorruptBatch(format!("producer snapshot: {why}"));
    if bytes.len() < SNAPSHOT_HEADER_LEN || bytes[..4] != SNAPSHOT_MAGIC.to_be_bytes() {
        return Err(bad("no snapshot header"));
    }
    let body = &bytes[8..];
    if crc32c::crc32c(body) != u32::from_be_bytes(bytes[4..8].try_into().expect("4 bytes")) {
        return Err(bad("CRC-32C mismatch"));
    }
    let mut reader = Reader(body);
    let count = reader.take::<4>()?;
    let count = u32::from_be_bytes(count) as usize;
    // Every entry takes at least its header: a count the file cannot hold is refused unallocated.
    if count > body.len() / ENTRY_HEADER_LEN {
        return Err(bad("producer count beyond the file"));
    }
    let mut producers = HashMap::with_capacity(count);
    for _ in 0..count {
        let id = i64::from_be_bytes(reader.take()?);
        let epoch = i16::from_be_bytes(reader.take()?);
        let last_append_ms = i64::from_be_bytes(reader.take()?);
        let [batch_count] = reader.take()?;
        if batch_count == 0 || usize::from(batch_count) > RECENT_BATCHES {
            return Err(bad("batch count out of range"));
        }
        let mut batches = VecDeque::with_capacity(RECENT_BATCHES);
        for _ in 0..batch_count {
            batches.push_back(BatchMetadata {
                first_sequence: i32::from_be_bytes(reader.take()?),
                last_sequence: i32::from_be_bytes(reader.take()?),
                first_offset: i64::from_be_bytes(reader.take()?),
                last_offset: i64::from_be_bytes(reader.take()?),
                log_append_time_ms: i64::from_be_bytes(reader.take()?),
            });
        }
        producers.insert(id, ProducerEntry { epoch, last_append_ms, batches });
    }
    if !reader.0.is_empty() {
        return Err(bad("bytes after the last producer"));
    }
    Ok(producers)
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], StorageError> {
        if self.0.len() < N {
            return Err(StorageError::CorruptBatch("producer snapshot: truncated".into()));
        }
        let (head, rest) = self.0.split_at(N);
        self.0 = rest;
        Ok(head.try_into().expect("N bytes"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::batch::tests::producer_batch;
    use crate::storage::log::tests::config;

    const EXPIRY: ProducerExpiry = ProducerExpiry { expiration_ms: 1000, check_interval_ms: 100 };

    fn header(count: usize, producer_id: i64, epoch: i16, sequence: i32) -> BatchHeader {
        BatchHeader::parse(&producer_batch(count, 0, producer_id, epoch, sequence)).unwrap()
    }

    /// Checks and appends one batch as a partition would.
    async fn append(
        log: &mut Log,
        states: &mut ProducerStates,
        count: usize,
        id: i64,
        epoch: i16,
        sequence: i32,
    ) -> i64 {
        let batch = producer_batch(count, 0, id, epoch, sequence);
        let headers = [BatchHeader::parse(&batch).unwrap()];
        assert!(matches!(states.check(&headers).unwrap(), Checked::Append));
        let info = log.append(batch, 0, 0).await.unwrap();
        states.record(&headers, &info, 0);
        info.base_offset
    }

    #[test]
    fn sequences_wrap_to_zero() {
        assert_eq!(next_sequence(5, 1), 6);
        assert_eq!(next_sequence(i32::MAX, 1), 0);
        assert_eq!(next_sequence(i32::MAX - 1, 3), 1);
    }

    #[test]
    fn snapshots_round_trip_and_refuse_damage() {
        let mut producers = HashMap::new();
        let mut entry = new_entry(3);
        for i in 0..7 {
            entry.push(3, metadata(&header(2, 9, 3, 2 * i), 10 * i64::from(i), None), 55);
        }
        producers.insert(9, entry);
        producers.insert(4, ProducerEntry { epoch: 0, last_append_ms: 1, ..new_entry(0) });
        producers.get_mut(&4).unwrap().push(0, metadata(&header(1, 4, 0, 0), 0, Some(77)), 1);
        let bytes = encode(&producers);
        assert_eq!(decode(&bytes).unwrap(), producers);
        assert_eq!(producers[&9].batches.len(), RECENT_BATCHES);
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        for at in 0..bytes.len() {
            let mut flipped = bytes.clone();
            flipped[at] ^= 0x10;
            assert!(decode(&flipped).is_err(), "flipped byte {at}");
        }
    }

    #[test]
    fn requests_of_several_batches_are_checked_batch_by_batch() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(&crate::storage::fs::os(), dir.path(), config(), false).unwrap();
        let mut states = ProducerStates::load(dir.path(), &log, EXPIRY, 0).unwrap();
        // The second batch continues the first's sequence within the request.
        let in_order = [header(2, 7, 0, 0), header(3, 7, 0, 2)];
        assert!(matches!(states.check(&in_order).unwrap(), Checked::Append));
        let gap = [header(2, 7, 0, 0), header(3, 7, 0, 3)];
        assert_eq!(states.check(&gap).err(), Some(SequenceError::OutOfOrder));
        let info = AppendInfo { base_offset: 10, last_offset: 14, log_append_time_ms: -1, records: 5 };
        states.record(&in_order, &info, 0);
        // A later batch in the request that retries an appended one makes the request a retry.
        let retry = [header(1, 8, 0, 0), header(3, 7, 0, 2)];
        match states.check(&retry).unwrap() {
            Checked::Duplicate(original) => assert_eq!((original.base_offset, original.last_offset), (12, 14)),
            Checked::Append => panic!("a retry was taken for new data"),
        }
        assert_eq!(states.check(&[header(1, 7, 0, 4)]).err(), Some(SequenceError::OutOfOrder));
        assert_eq!(states.check(&[header(1, 7, 1, 4)]).err(), Some(SequenceError::OutOfOrder));
        assert!(matches!(states.check(&[header(1, 7, 1, 0)]).unwrap(), Checked::Append));
    }

    #[test]
    fn state_is_rebuilt_from_snapshots_and_the_log_tail() {
        crate::runtime::file::block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let mut log = Log::open(&crate::storage::fs::os(), dir.path(), config(), false).unwrap();
            let mut states = ProducerStates::load(dir.path(), &log, EXPIRY, 0).unwrap();
            for i in 0..4 {
                append(&mut log, &mut states, 2, 1, 0, 2 * i).await;
            }
            states.write_snapshot(log.log_end_offset()).unwrap();
            let before_tail = states.producers.clone();
            append(&mut log, &mut states, 2, 1, 0, 8).await;
            append(&mut log, &mut states, 3, 2, 5, 100).await;
            let expected = states.producers.clone();
            drop((log, states));

            // A crash: the snapshot at 8 plus the batches after it.
            let log = Log::open(&crate::storage::fs::os(), dir.path(), config(), false).unwrap();
            let states = ProducerStates::load(dir.path(), &log, EXPIRY, 0).unwrap();
            let without_times = |p: &HashMap<i64, ProducerEntry>| {
                p.iter().map(|(id, e)| (*id, (e.epoch, e.batches.clone()))).collect::<HashMap<_, _>>()
            };
            assert_eq!(without_times(&states.producers), without_times(&expected));
            match states.check(&[header(2, 1, 0, 2)]).unwrap() {
                Checked::Duplicate(original) => assert_eq!(original.base_offset, 2, "a batch from before the snapshot"),
                Checked::Append => panic!("retry not detected"),
            }
            assert!(matches!(states.check(&[header(3, 2, 5, 100)]).unwrap(), Checked::Duplicate(_)));
            drop((log, states));

            // The replay wrote a snapshot at the log end; a snapshot above the log end (its tail
            // was lost) is removed, and a damaged one is passed over for an older one.
            assert!(snapshot_path(dir.path(), 13).exists());
            std::fs::write(snapshot_path(dir.path(), 13), b"torn").unwrap();
            std::fs::write(snapshot_path(dir.path(), 500), encode(&HashMap::new())).unwrap();
            let log = Log::open(&crate::storage::fs::os(), dir.path(), config(), false).unwrap();
            let states = ProducerStates::load(dir.path(), &log, EXPIRY, 0).unwrap();
            assert_eq!(without_times(&states.producers), without_times(&expected));
            assert!(!snapshot_path(dir.path(), 500).exists());
            assert!(snapshot_path(dir.path(), 8).exists());
            assert_ne!(before_tail, expected);
        })
    }

    #[test]
    fn idle_producers_expire() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(&crate::storage::fs::os(), dir.path(), config(), false).unwrap();
        let mut states = ProducerStates::load(dir.path(), &log, EXPIRY, 0).unwrap();
        let info = |base| AppendInfo { base_offset: base, last_offset: base, log_append_time_ms: -1, records: 1 };
        states.record(&[header(1, 1, 0, 0)], &info(0), 0);
        states.record(&[header(1, 2, 0, 0)], &info(1), 600);
        states.expire_if_due(50);
        states.expire_if_due(1000);
        assert_eq!(states.producer_count(), 1, "producer 1 idle for 1000 ms");
        // Its next batch is then accepted at any sequence, as from a producer never seen.
        assert!(matches!(states.check(&[header(1, 1, 0, 42)]).unwrap(), Checked::Append));
        states.expire_if_due(1050);
        assert_eq!(states.producer_count(), 1, "checked at most every 100 ms");
        states.expire_if_due(1600);
        assert_eq!(states.producer_count(), 0);
    }
}
