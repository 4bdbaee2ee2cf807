//! Log compaction (`cleanup.policy=compact`): closed segments keep only the latest record of
//! each key, so a topic like `__consumer_offsets` stays proportional to its keys, not to its
//! history. Offsets never change: compaction leaves gaps, which reads step over.
//!
//! A pass ([`Job`]) runs on a helper thread (the executor's blocking pool), never on the
//! shard's: it reads only closed segments and the active one's bytes below the size it had when
//! the pass began (both immutable), and writes only the closed segments' files, which the owner
//! no longer writes and does not delete while the pass runs (deletions wait for it, see
//! `Log::finish_compaction`). It hands back each rewritten segment's indexes as plain data; the
//! owner alone swaps them into its segment list, so a read between the rename and the swap
//! still reads the old file through its open descriptor, which holds the same records plus the
//! superseded ones. Its directory operations go through the log's [`DirClaim`], so a deleted or
//! closed partition stops it.
//!
//! A segment is rewritten beside itself (`.log.cleaned`), batch by batch, made durable, and
//! renamed over the original after its index files are removed; a crash at any point leaves
//! either the old or the new segment (a leftover `.cleaned` is removed at open), and missing
//! indexes are rebuilt on open. Memory holds one batch at a time (plus the map of latest
//! offsets per key), never a whole segment.
//!
//! A batch keeps its base offset, offset range, producer fields and codec: a batch that loses
//! nothing is copied byte for byte, one that loses records is re-encoded with the producer's
//! compression. Records without a key are kept. A deletion (a key without value) that is the
//! latest record of its key is kept for `delete.retention.ms`, so that a consumer lagging
//! behind still sees it: as Kafka does (KIP-534), the first pass that keeps a tombstone stamps
//! its batch with a delete horizon (attribute bit 6, the horizon in `baseTimestamp`, record
//! timestamps unchanged), and a pass after the horizon drops it. A batch whose records cannot
//! be read within the decompression limit is kept as it is.

use std::collections::HashMap;
use std::io::IoSlice;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

use super::StorageError;
use super::batch::{self, BatchHeader, DELETE_HORIZON_FLAG};
use super::codec::Codec;
use super::fs::{Claimed, DirClaim, FileHandle, FileSystem, Open, write_all_at};
use super::records::{for_each_record, write_record};
use super::segment::{Check, Sealed, Segment, Tail, file_name};

/// Suffix of a segment being rewritten; one a crash left is removed when the log opens.
pub const CLEANED_SUFFIX: &str = ".cleaned";

/// One compaction pass over a log, made by the owner (`Log::begin_compaction`) and run on a
/// helper thread ([`Job::run`]).
pub struct Job {
    pub(super) fs: Arc<dyn FileSystem>,
    pub(super) claim: DirClaim,
    pub(super) dir: PathBuf,
    /// Base offset and size of every segment, oldest first; all but the last (the active one,
    /// whose keys count but which is not rewritten) are closed.
    pub(super) segments: Vec<(i64, u64)>,
    pub(super) decompressed_limit: usize,
    pub(super) delete_retention_ms: i64,
    pub(super) index_interval_bytes: u64,
    pub(super) now_ms: i64,
}

/// What a pass did, for the owner to take in.
pub struct Done {
    /// The segments it rewrote, indexed.
    pub cleaned: Vec<Sealed>,
    /// The earliest delete horizon of the tombstones it kept: the time the next pass is due.
    pub tombstones_due_ms: Option<i64>,
}

impl Job {
    /// Runs the pass: plain blocking file I/O, for a helper thread.
    pub fn run(self) -> Result<Done, StorageError> {
        let fs: Arc<dyn FileSystem> = Arc::new(Claimed { fs: self.fs, claim: self.claim.clone() });
        let readers = (self.segments.iter())
            .map(|&(base, size)| Segment::reader(&fs, &self.dir, base, size))
            .collect::<Result<Vec<_>, _>>()?;
        let mut latest = HashMap::new();
        for segment in &readers {
            note_latest(segment, self.decompressed_limit, &self.claim, &mut latest)?;
        }
        let pass = Pass {
            latest: &latest,
            decompressed_limit: self.decompressed_limit,
            delete_retention_ms: self.delete_retention_ms,
            index_interval_bytes: self.index_interval_bytes,
            now_ms: self.now_ms,
            claim: &self.claim,
        };
        let mut done = Done { cleaned: Vec::new(), tombstones_due_ms: None };
        for segment in &readers[..readers.len() - 1] {
            let compacted = compact(&fs, &self.dir, segment, &pass)?;
            done.cleaned.extend(compacted.segment);
            done.tombstones_due_ms = earliest(done.tombstones_due_ms, compacted.tombstones_due_ms);
        }
        Ok(done)
    }
}

/// What one compaction pass needs to know.
struct Pass<'a> {
    /// The offset of the latest record of every key in the log.
    latest: &'a HashMap<Bytes, i64>,
    /// How far a batch's records may inflate (as on append).
    decompressed_limit: usize,
    delete_retention_ms: i64,
    index_interval_bytes: u64,
    now_ms: i64,
    /// Stops the pass between batches once released.
    claim: &'a DirClaim,
}

/// What compacting one segment did.
struct Compacted {
    /// The rewritten segment, indexed, or `None` when nothing changed.
    segment: Option<Sealed>,
    /// The earliest delete horizon of the tombstones it still holds: the time a pass is due.
    tombstones_due_ms: Option<i64>,
}

/// Records the offset of every key in `segment`; later calls overwrite earlier ones.
fn note_latest(
    segment: &Segment,
    decompressed_limit: usize,
    claim: &DirClaim,
    latest: &mut HashMap<Bytes, i64>,
) -> Result<(), StorageError> {
    segment.for_each_batch(|header, batch| {
        claim.check()?;
        let walked = for_each_record(header, batch, decompressed_limit, |record| {
            if let Some(key) = record.key {
                let offset = header.base_offset + i64::from(record.offset_delta);
                match latest.get_mut(key) {
                    Some(latest) => *latest = offset,
                    None => drop(latest.insert(Bytes::copy_from_slice(key), offset)),
                }
            }
            Ok(())
        });
        // An unreadable batch keeps its records (see `rewrite`); its keys supersede nothing.
        if let Err(e) = walked {
            tracing::warn!(base_offset = header.base_offset, error = %e, "compaction skips an unreadable batch");
        }
        Ok(())
    })
}

/// Rewrites `segment` without superseded records and expired tombstones, stamping delete
/// horizons on batches whose tombstones are kept for the first time.
fn compact(
    fs: &Arc<dyn FileSystem>,
    dir: &Path,
    segment: &Segment,
    pass: &Pass<'_>,
) -> Result<Compacted, StorageError> {
    let base = segment.base_offset;
    let cleaned_path = dir.join(format!("{}{CLEANED_SUFFIX}", file_name(base, "log")));
    let mut cleaned = Cleaned { file: fs.open(&cleaned_path, Open::Truncate)?, buffer: Vec::new(), position: 0 };
    let mut changed = false;
    let mut tombstones_due_ms: Option<i64> = None;
    let written = segment.for_each_batch(|header, batch| {
        pass.claim.check()?;
        let (outcome, due) = rewrite(header, batch, pass)?;
        tombstones_due_ms = earliest(tombstones_due_ms, due);
        match outcome {
            Rewritten::Unchanged => cleaned.write(batch)?,
            Rewritten::Into(bytes) => {
                changed = true;
                cleaned.write(&bytes)?
            }
            Rewritten::Dropped => changed = true,
        }
        Ok(())
    });
    let finished = written.and_then(|()| Ok(cleaned.finish()?));
    drop(cleaned);
    if finished.is_err() || !changed {
        fs.remove_file(&cleaned_path)?;
        finished?;
        return Ok(Compacted { segment: None, tombstones_due_ms });
    }
    for extension in ["index", "timeindex"] {
        fs.remove_file(&dir.join(file_name(base, extension)))?;
    }
    fs.rename(&cleaned_path, &dir.join(file_name(base, "log")))?;
    fs.sync_dir(dir)?;
    tracing::debug!(dir = %dir.display(), base, "compacted a segment");
    let segment = Segment::open(fs, dir, base, Check::Full, Tail::MustBeWhole, pass.index_interval_bytes, pass.now_ms)?;
    // Its indexes were rebuilt in memory; they are written, so that a restart can trust them.
    Ok(Compacted { segment: Some(segment.into_sealed()?), tombstones_due_ms })
}

/// Bytes gathered before the rewritten segment is written to.
const WRITE_CHUNK_BYTES: usize = 64 * 1024;

/// The rewritten segment being written, in chunks of [`WRITE_CHUNK_BYTES`].
struct Cleaned {
    file: Box<dyn FileHandle>,
    buffer: Vec<u8>,
    position: u64,
}

impl Cleaned {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.buffer.extend_from_slice(bytes);
        if self.buffer.len() >= WRITE_CHUNK_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        write_all_at(&*self.file, &mut [IoSlice::new(&self.buffer)], self.position)?;
        self.position += self.buffer.len() as u64;
        self.buffer.clear();
        Ok(())
    }

    /// Writes what is left and makes it all durable.
    fn finish(&mut self) -> std::io::Result<()> {
        self.flush()?;
        self.file.sync_data()
    }
}

enum Rewritten {
    Unchanged,
    Dropped,
    Into(Vec<u8>),
}

/// The earlier of two optional times.
fn earliest(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Whether a record survives: it has no key, or it is its key's latest and either has a value
/// or is a tombstone whose batch's horizon has not passed (`None`: not stamped yet).
fn keeps(key: Option<&[u8]>, offset: i64, has_value: bool, horizon_ms: Option<i64>, pass: &Pass<'_>) -> bool {
    match key {
        None => true,
        Some(key) => pass.latest.get(key) == Some(&offset) && (has_value || horizon_ms.is_none_or(|h| pass.now_ms < h)),
    }
}

/// A kept record, copied out of the batch: (timestamp, offset delta, key, value, headers).
type Kept = (i64, i32, Option<Vec<u8>>, Option<Vec<u8>>, Vec<u8>);

/// One batch after compaction, and the delete horizon of the tombstones it still holds.
fn rewrite(header: &BatchHeader, batch: &[u8], pass: &Pass<'_>) -> Result<(Rewritten, Option<i64>), StorageError> {
    let Ok(codec) = Codec::from_attributes(header.attributes) else {
        return Ok((Rewritten::Unchanged, None));
    };
    let horizon = header.delete_horizon_ms();
    let mut kept: Vec<Kept> = Vec::new();
    let (mut total, mut tombstones) = (0, 0);
    let walked = for_each_record(header, batch, pass.decompressed_limit, |record| {
        total += 1;
        let offset = header.base_offset + i64::from(record.offset_delta);
        if keeps(record.key, offset, record.value.is_some(), horizon, pass) {
            tombstones += usize::from(record.key.is_some() && record.value.is_none());
            let timestamp = header.base_timestamp.wrapping_add(record.timestamp_delta);
            let copy = |field: Option<&[u8]>| field.map(<[u8]>::to_vec);
            kept.push((timestamp, record.offset_delta, copy(record.key), copy(record.value), record.headers.to_vec()));
        }
        Ok(())
    });
    if let Err(e) = walked {
        tracing::warn!(base_offset = header.base_offset, error = %e, "compaction keeps an unreadable batch as it is");
        return Ok((Rewritten::Unchanged, None));
    }
    // A batch keeping tombstones for the first time gets its horizon.
    let stamp_horizon = horizon.is_none() && tombstones > 0;
    let mut out = *header;
    if stamp_horizon {
        out.attributes |= DELETE_HORIZON_FLAG;
        out.base_timestamp = pass.now_ms.saturating_add(pass.delete_retention_ms);
    }
    let due = out.delete_horizon_ms().filter(|_| tombstones > 0);
    if kept.len() == total && !stamp_horizon {
        return Ok((Rewritten::Unchanged, due));
    }
    if kept.is_empty() {
        return Ok((Rewritten::Dropped, None));
    }
    // Record timestamps stay what they were, counted from the (possibly new) base timestamp.
    let mut payload = Vec::new();
    for (timestamp, offset_delta, key, value, headers) in &kept {
        let delta = timestamp.wrapping_sub(out.base_timestamp);
        write_record(&mut payload, delta, *offset_delta, key.as_deref(), value.as_deref(), headers);
    }
    out.records_count = kept.len() as i32;
    Ok((Rewritten::Into(batch::assemble(&out, &codec.compress(&payload)?)), due))
}
