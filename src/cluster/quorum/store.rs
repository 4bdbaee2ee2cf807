//! The metadata Raft node's log and snapshot: in memory for raft-rs ([`LogStorage`], its
//! `Storage`), and on disk in `<data dir>/__cluster_metadata/` ([`DurableLog`]).
//!
//! On disk:
//! - `snapshot`: JSON of [`SnapshotFile`], the image at an applied index with that index, its
//!   term and the voters; replaced atomically (`storage::fs::replace`).
//! - `log`: frames appended in order, each `[length u32][crc32c u32][kind u8][body]` (little
//!   endian; length and CRC cover kind and body): an entry, or a hard state. Each append
//!   starts on a fresh 4 KiB page (a padding frame fills the one before), so that a write torn by a power
//!   cut can only damage its own page, never a frame already acknowledged; and so that an
//!   append on a full disk needs space and fails, rather than slipping into a tail page's
//!   slack. An entry at an
//!   index already in the file replaces it and everything after it (Raft's log overwrite).
//!   After a snapshot the file is rewritten with only the entries after it.
//!
//! Invariants: nothing is acknowledged to raft-rs (and so nothing is counted for a commit)
//! before the write holding it was fdatasync'ed; a torn tail (a crash mid-append) is cut off
//! at recovery, as it was never acknowledged; entries at or below the snapshot are dropped.
//! Appends and syncs go through the shard's io_uring (`FileHandle::write_at`, `fdatasync`);
//! the snapshot's atomic replacement and the log's rewrite rename run on the blocking pool.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use raft::prelude::{ConfState, Entry, EntryType, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, Storage, StorageError};
use serde::{Deserialize, Serialize};

use crate::cluster::MetadataImage;
use crate::cluster::records::{self, MetadataRecord};
use crate::storage::fs::{self, FileHandle, FileSystem, Open};

/// The folder of the metadata log, named like KRaft's.
pub const DIR_NAME: &str = "__cluster_metadata";
const SNAPSHOT_FILE: &str = "snapshot";
const LOG_FILE: &str = "log";
const FRAME_HEADER_BYTES: usize = 8;
/// Appends start at multiples of this.
const PAGE_BYTES: u64 = 4096;
/// No frame is larger: a length above it is damage, not an allocation to make.
pub const FRAME_MAX_BYTES: usize = 64 << 20;
/// Fills the rest of a page before an append.
const KIND_PADDING: u8 = 0;
const KIND_ENTRY: u8 = 1;
const KIND_HARD_STATE: u8 = 2;

#[derive(Serialize, Deserialize)]
pub struct SnapshotFile {
    pub index: u64,
    pub term: u64,
    pub voters: Vec<u64>,
    pub image: MetadataImage,
}

/// raft-rs's view of the log: the last snapshot, the entries after it, the hard state.
pub struct LogStorage {
    hard_state: HardState,
    conf_state: ConfState,
    /// Its data is the serialised [`SnapshotFile`], what a lagging follower would install.
    snapshot: Snapshot,
    /// Contiguous, starting right after the snapshot's index.
    entries: Vec<Entry>,
}

impl LogStorage {
    fn snapshot_index(&self) -> u64 {
        self.snapshot.get_metadata().index
    }

    /// Takes in entries that were made durable: each replaces any at its index or later.
    pub fn append(&mut self, entries: &[Entry]) {
        let Some(first) = entries.first() else { return };
        assert!(first.index > self.snapshot_index(), "entries at or below the snapshot are never rewritten");
        let keep = (first.index - self.snapshot_index() - 1) as usize;
        assert!(keep <= self.entries.len(), "a gap in the log at index {}", first.index);
        self.entries.truncate(keep);
        self.entries.extend_from_slice(entries);
    }

    pub fn set_hard_state(&mut self, hard_state: HardState) {
        self.hard_state = hard_state;
    }

    /// The entries after `index`.
    pub fn entries_after(&self, index: u64) -> &[Entry] {
        let skip = index.saturating_sub(self.snapshot_index()) as usize;
        &self.entries[skip.min(self.entries.len())..]
    }

    /// Makes `snapshot` the new base: the entries it covers are dropped.
    fn install_snapshot(&mut self, snapshot: Snapshot) {
        let index = snapshot.get_metadata().index;
        let skip = (index.saturating_sub(self.snapshot_index()) as usize).min(self.entries.len());
        self.entries.drain(..skip);
        if self.entries.first().is_some_and(|e| e.index != index + 1) {
            self.entries.clear();
        }
        self.conf_state = snapshot.get_metadata().get_conf_state().clone();
        self.snapshot = snapshot;
    }

    pub fn last_index_now(&self) -> u64 {
        self.entries.last().map_or(self.snapshot_index(), |e| e.index)
    }
}

impl Storage for LogStorage {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState::new(self.hard_state.clone(), self.conf_state.clone()))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low <= self.snapshot_index() {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > self.last_index_now() + 1 {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let offset = self.snapshot_index() + 1;
        let mut entries = self.entries[(low - offset) as usize..(high - offset) as usize].to_vec();
        raft::util::limit_size(&mut entries, max_size.into());
        Ok(entries)
    }

    fn term(&self, index: u64) -> raft::Result<u64> {
        let snapshot = self.snapshot.get_metadata();
        if index == snapshot.index {
            return Ok(snapshot.term);
        }
        if index < snapshot.index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        match self.entries.get((index - snapshot.index - 1) as usize) {
            Some(entry) => Ok(entry.term),
            None => Err(raft::Error::Store(StorageError::Unavailable)),
        }
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.snapshot_index() + 1)
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last_index_now())
    }

    fn snapshot(&self, _request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        Ok(self.snapshot.clone())
    }
}

/// The files behind [`LogStorage`], written by the Raft task on shard 0 only.
pub struct DurableLog {
    fs: Arc<dyn FileSystem>,
    data_dir: PathBuf,
    dir: PathBuf,
    log: Box<dyn FileHandle>,
    /// Where the next frame goes: the end of the frames known to be whole.
    log_len: u64,
}

/// What recovery found: the node's storage, the image at its commit index, and the files.
pub struct Recovered {
    pub storage: LogStorage,
    pub image: MetadataImage,
    /// The index `image` includes: everything committed.
    pub applied: u64,
    pub log: DurableLog,
}

impl DurableLog {
    /// Opens the metadata log under `data_dir`. A data dir without one (a first start, or one
    /// written by a Sluice before the Raft log) is bootstrapped: `initial()` gives the image
    /// (the `metadata.json` of old, or a new one), which becomes the first snapshot, with
    /// `voters` as the quorum. Blocking: runs before the shards start.
    pub fn recover(
        fs: Arc<dyn FileSystem>,
        data_dir: &Path,
        voters: &[u64],
        initial: impl FnOnce() -> anyhow::Result<MetadataImage>,
    ) -> anyhow::Result<Recovered> {
        let dir = data_dir.join(DIR_NAME);
        let snapshot_path = dir.join(SNAPSHOT_FILE);
        if !fs.list_dir(data_dir)?.iter().any(|name| name == DIR_NAME)
            || !fs.list_dir(&dir)?.contains(&SNAPSHOT_FILE.into())
        {
            let image = initial()?;
            fs.create_dir_all(&dir)?;
            fs.sync_dir(data_dir)?;
            // Index 1, term 1: the first entry the node writes follows it.
            let file = SnapshotFile { index: 1, term: 1, voters: voters.to_vec(), image };
            fs::replace(fs.as_ref(), &snapshot_path, &serde_json::to_vec(&file)?)
                .with_context(|| format!("writing {}", snapshot_path.display()))?;
        }
        let bytes = fs.read(&snapshot_path).with_context(|| format!("reading {}", snapshot_path.display()))?;
        let file: SnapshotFile =
            serde_json::from_slice(&bytes).with_context(|| format!("reading {}", snapshot_path.display()))?;
        if file.voters != voters {
            bail!(
                "{}: this node's metadata log has the quorum {:?}, not {:?} as configured; changing the quorum is not supported",
                dir.display(),
                file.voters,
                voters
            );
        }

        let log_path = dir.join(LOG_FILE);
        let log = fs.open(&log_path, Open::Create).with_context(|| format!("opening {}", log_path.display()))?;
        let (frames, whole) = read_frames(log.as_ref()).with_context(|| format!("reading {}", log_path.display()))?;
        if whole < log.len()? {
            tracing::warn!(path = %log_path.display(), at = whole, "cutting a torn tail off the metadata log");
            log.set_len(whole)?;
            log.sync_data()?;
        }

        let (storage, image, applied) = replay(file, frames)?;
        let log_len = log.len()?;
        Ok(Recovered {
            storage,
            image,
            applied,
            log: DurableLog { fs, data_dir: data_dir.to_path_buf(), dir, log, log_len },
        })
    }

    pub fn fs(&self) -> Arc<dyn FileSystem> {
        self.fs.clone()
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Appends `entries` and then `hard_state`, and waits until they are durable. On an error
    /// the file is cut back to what it held: the caller treats all of them as never written.
    pub async fn append(&mut self, entries: &[Entry], hard_state: Option<&HardState>) -> std::io::Result<()> {
        let mut bytes = Vec::new();
        for entry in entries {
            encode_entry(&mut bytes, entry);
        }
        if let Some(state) = hard_state {
            encode_hard_state(&mut bytes, state);
        }
        if bytes.is_empty() {
            return Ok(());
        }
        let mut gap = self.log_len.next_multiple_of(PAGE_BYTES) - self.log_len;
        if gap > 0 && gap < FRAME_HEADER_BYTES as u64 + 1 {
            // Too small for a padding frame: pad to the page after.
            gap += PAGE_BYTES;
        }
        let mut padded = Vec::with_capacity(gap as usize + bytes.len());
        if gap > 0 {
            encode_frame(&mut padded, KIND_PADDING, &vec![0; gap as usize - FRAME_HEADER_BYTES - 1]);
        }
        padded.append(&mut bytes);
        let bytes = padded;
        let len = bytes.len() as u64;
        let written = async {
            self.log.write_at(vec![bytes.into()], self.log_len).await?;
            self.log.fdatasync().await
        }
        .await;
        match written {
            Ok(()) => {
                self.log_len += len;
                Ok(())
            }
            Err(e) => {
                let _ = self.log.set_len(self.log_len);
                Err(e)
            }
        }
    }

    /// Writes `file` as the snapshot, then rewrites the log with only what follows it: the
    /// entries of `storage` after the snapshot (none when `replace_log`, for a snapshot from
    /// the leader) and its hard state. `storage` then starts at it.
    pub async fn snapshot(
        &mut self,
        file: SnapshotFile,
        storage: &mut LogStorage,
        replace_log: bool,
    ) -> anyhow::Result<()> {
        if replace_log {
            storage.entries.clear();
            storage.hard_state.commit = storage.hard_state.commit.max(file.index);
        }
        let snapshot = snapshot_of(&file)?;
        let bytes = snapshot.get_data().to_vec();
        let fs = self.fs.clone();
        let path = self.dir.join(SNAPSHOT_FILE);
        crate::runtime::file::run_blocking(move || fs::replace(fs.as_ref(), &path, &bytes)).await?;

        let mut rest = Vec::new();
        for entry in storage.entries_after(file.index) {
            encode_entry(&mut rest, entry);
        }
        encode_hard_state(&mut rest, &storage.hard_state);
        let (tmp, path) = (self.dir.join("log.tmp"), self.dir.join(LOG_FILE));
        let new_log = self.fs.open(&tmp, Open::Truncate)?;
        let len = rest.len() as u64;
        new_log.write_at(vec![rest.into()], 0).await?;
        new_log.fdatasync().await?;
        let (fs, dir) = (self.fs.clone(), self.dir.clone());
        crate::runtime::file::run_blocking(move || {
            fs.rename(&tmp, &path)?;
            fs.sync_dir(&dir)
        })
        .await?;
        self.log = new_log;
        self.log_len = len;
        storage.install_snapshot(snapshot);
        if replace_log {
            storage.entries.clear();
        }
        Ok(())
    }
}

/// The image in a metadata log, read without changing anything (for tools and tests; the
/// broker may be running).
pub fn read_image(data_dir: &Path) -> anyhow::Result<MetadataImage> {
    let dir = data_dir.join(DIR_NAME);
    let file: SnapshotFile = serde_json::from_slice(&std::fs::read(dir.join(SNAPSHOT_FILE))?)?;
    let log = fs::os().open(&dir.join(LOG_FILE), Open::Existing)?;
    let (frames, _) = read_frames(log.as_ref())?;
    Ok(replay(file, frames)?.1)
}

/// The storage that the snapshot `file` and the log's `frames` make, and the image with every
/// committed entry applied, with the index it includes.
fn replay(file: SnapshotFile, frames: Vec<Frame>) -> anyhow::Result<(LogStorage, MetadataImage, u64)> {
    let mut storage = LogStorage {
        hard_state: HardState::default(),
        conf_state: ConfState::from((file.voters.clone(), vec![])),
        snapshot: snapshot_of(&file)?,
        entries: Vec::new(),
    };
    let mut hard_state = HardState::default();
    for frame in frames {
        match frame {
            Frame::Entry(entry) if entry.index > file.index => storage.append(&[entry]),
            Frame::Entry(_) => {}
            Frame::HardState(state) => hard_state = state,
        }
    }
    hard_state.term = hard_state.term.max(file.term);
    hard_state.commit = hard_state.commit.clamp(file.index, storage.last_index_now());
    let mut image = file.image;
    for entry in storage.entries_after(file.index).iter().take_while(|e| e.index <= hard_state.commit) {
        // One that did not fit was refused when it was first applied: the same verdict again.
        let _ = records::apply(&mut image, decode_records(entry));
    }
    let applied = hard_state.commit;
    storage.set_hard_state(hard_state);
    Ok((storage, image, applied))
}

fn snapshot_of(file: &SnapshotFile) -> anyhow::Result<Snapshot> {
    let mut snapshot = Snapshot::default();
    snapshot.set_data(serde_json::to_vec(file)?.into());
    let metadata = snapshot.mut_metadata();
    metadata.index = file.index;
    metadata.term = file.term;
    metadata.set_conf_state(ConfState::from((file.voters.clone(), vec![])));
    Ok(snapshot)
}

/// The records an entry carries; a leader's empty entry carries none. An entry whose data is
/// not records (sent by something that is not a Sluice controller) carries none either, on
/// every node alike: it is logged, never a panic.
pub fn decode_records(entry: &Entry) -> Vec<MetadataRecord> {
    if entry.get_entry_type() != EntryType::EntryNormal || entry.get_data().is_empty() {
        return Vec::new();
    }
    serde_json::from_slice(entry.get_data()).unwrap_or_else(|e| {
        tracing::error!(index = entry.index, error = %e, "a metadata log entry that holds no records is ignored");
        Vec::new()
    })
}

enum Frame {
    Entry(Entry),
    HardState(HardState),
}

fn encode_frame(out: &mut Vec<u8>, kind: u8, body: &[u8]) {
    let mut crc = crc32c::crc32c(&[kind]);
    crc = crc32c::crc32c_append(crc, body);
    out.extend_from_slice(&((body.len() + 1) as u32).to_le_bytes());
    out.extend_from_slice(&crc.to_le_bytes());
    out.push(kind);
    out.extend_from_slice(body);
}

fn encode_entry(out: &mut Vec<u8>, entry: &Entry) {
    let mut body = Vec::with_capacity(29 + entry.get_data().len() + entry.get_context().len());
    body.push(entry.get_entry_type() as u8);
    body.extend_from_slice(&entry.term.to_le_bytes());
    body.extend_from_slice(&entry.index.to_le_bytes());
    for bytes in [entry.get_data(), entry.get_context()] {
        body.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        body.extend_from_slice(bytes);
    }
    encode_frame(out, KIND_ENTRY, &body);
}

fn encode_hard_state(out: &mut Vec<u8>, state: &HardState) {
    let mut body = Vec::with_capacity(24);
    for n in [state.term, state.vote, state.commit] {
        body.extend_from_slice(&n.to_le_bytes());
    }
    encode_frame(out, KIND_HARD_STATE, &body);
}

/// The whole frames of the log, and where they end. A frame that is cut short or fails its
/// CRC ends the log there (a torn append); a whole frame that cannot be decoded is damage.
fn read_frames(log: &dyn FileHandle) -> anyhow::Result<(Vec<Frame>, u64)> {
    let len = log.len()?;
    let mut bytes = vec![0; len as usize];
    log.read_exact_at(&mut bytes, 0)?;
    let mut frames = Vec::new();
    let mut at = 0usize;
    while bytes.len() - at >= FRAME_HEADER_BYTES {
        let size = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().expect("4 bytes"));
        let start = at + FRAME_HEADER_BYTES;
        if size == 0
            || size > FRAME_MAX_BYTES
            || bytes.len() - start < size
            || crc32c::crc32c(&bytes[start..start + size]) != crc
        {
            break;
        }
        let (kind, mut body) = (bytes[start], &bytes[start + 1..start + size]);
        let frame = match kind {
            KIND_PADDING => {
                at = start + size;
                continue;
            }
            KIND_ENTRY => Frame::Entry(decode_entry(&mut body).context("a metadata log entry")?),
            KIND_HARD_STATE => {
                // In the order they were written.
                let term = take_u64(&mut body)?;
                let vote = take_u64(&mut body)?;
                let commit = take_u64(&mut body)?;
                Frame::HardState(HardState { term, vote, commit, ..Default::default() })
            }
            other => bail!("unknown frame kind {other} at {at}"),
        };
        frames.push(frame);
        at = start + size;
    }
    Ok((frames, at as u64))
}

fn decode_entry(body: &mut &[u8]) -> anyhow::Result<Entry> {
    let mut entry = Entry::default();
    let kind = take(body, 1)?[0];
    entry.set_entry_type(match kind {
        0 => EntryType::EntryNormal,
        1 => EntryType::EntryConfChange,
        2 => EntryType::EntryConfChangeV2,
        other => bail!("unknown entry type {other}"),
    });
    entry.term = take_u64(body)?;
    entry.index = take_u64(body)?;
    let data_len = take_u32(body)? as usize;
    entry.set_data(take(body, data_len)?.to_vec().into());
    let context_len = take_u32(body)? as usize;
    entry.set_context(take(body, context_len)?.to_vec().into());
    Ok(entry)
}

fn take<'a>(body: &mut &'a [u8], n: usize) -> anyhow::Result<&'a [u8]> {
    if body.len() < n {
        bail!("{} bytes left where {n} are needed", body.len());
    }
    let (head, tail) = body.split_at(n);
    *body = tail;
    Ok(head)
}

fn take_u32(body: &mut &[u8]) -> anyhow::Result<u32> {
    Ok(u32::from_le_bytes(take(body, 4)?.try_into().expect("4 bytes")))
}

fn take_u64(body: &mut &[u8]) -> anyhow::Result<u64> {
    Ok(u64::from_le_bytes(take(body, 8)?.try_into().expect("8 bytes")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(term: u64, index: u64, records: &[MetadataRecord]) -> Entry {
        let mut entry = Entry { term, index, ..Default::default() };
        entry.set_data(serde_json::to_vec(records).unwrap().into());
        entry
    }

    fn commit(term: u64, commit: u64) -> HardState {
        HardState { term, commit, ..Default::default() }
    }

    #[test]
    fn recovery_replays_overwrites_skips_padding_and_cuts_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let fresh = || Ok(MetadataImage { cluster_id: "c".into(), ..MetadataImage::default() });
        let mut recovered = DurableLog::recover(fs::os(), dir.path(), &[1], fresh).unwrap();
        assert_eq!(recovered.applied, 1, "the bootstrap snapshot");
        let log = &mut recovered.log;
        crate::runtime::file::block_on(async {
            let first = [
                entry(1, 2, &[MetadataRecord::NextProducerId { from: 0, to: 10 }]),
                entry(1, 3, &[MetadataRecord::NextProducerId { from: 10, to: 20 }]),
            ];
            log.append(&first, Some(&commit(1, 2))).await.unwrap();
            // A new leader's entry replaces the uncommitted one at index 3.
            let mut junk = entry(2, 4, &[]);
            junk.set_data(b"not records".to_vec().into());
            let second = [entry(2, 3, &[MetadataRecord::NextProducerId { from: 10, to: 30 }]), junk];
            log.append(&second, Some(&commit(2, 4))).await.unwrap();
        });
        let path = dir.path().join(DIR_NAME).join(LOG_FILE);
        let whole = std::fs::metadata(&path).unwrap().len();
        assert!(whole > PAGE_BYTES, "each append starts on its own page");
        // A torn append: a header promising more than follows.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.extend_from_slice(&[200, 0, 0, 0, 1, 2, 3, 4, KIND_ENTRY, 9]);
        std::fs::write(&path, bytes).unwrap();

        let recovered = DurableLog::recover(fs::os(), dir.path(), &[1], || unreachable!()).unwrap();
        assert_eq!(recovered.applied, 4);
        assert_eq!(recovered.image.next_producer_id, 30);
        let terms: Vec<u64> = recovered.storage.entries_after(1).iter().map(|e| e.term).collect();
        assert_eq!(terms, [1, 2, 2]);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), whole, "the torn tail is cut off");
        // Another quorum than the log's is refused.
        assert!(DurableLog::recover(fs::os(), dir.path(), &[1, 2], || unreachable!()).is_err());
    }
}
