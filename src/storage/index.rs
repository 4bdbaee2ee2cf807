//! Sparse, append-only index files of fixed-size entries: the `.index` (relative offset →
//! file position) and the `.timeindex` (max timestamp so far → relative offset) of a segment.
//!
//! Entries live in memory (they are sparse: one per `index.interval.bytes`), so lookups are a
//! binary search without I/O. New entries reach the file when the segment is synced (flush,
//! roll, clean shutdown): an index is trusted at startup only below the recovery point, which
//! moves only after such a sync, so entries not yet written are never missed. Keeping no file
//! open also spares two descriptors per partition, which a broker with many partitions needs.
//! Invariant: keys never decrease.

use std::cell::Cell;
use std::io::IoSlice;
use std::path::{Path, PathBuf};

use super::fs::{FileSystem, Open, write_all_at};

/// One entry type of an index file.
pub trait Entry: Copy {
    const SIZE: usize;
    type Key: Ord + Copy;
    fn key(&self) -> Self::Key;
    fn encode(&self, out: &mut Vec<u8>);
    fn decode(bytes: &[u8]) -> Self;
    /// The offset (relative to the segment base) the entry is about.
    fn relative_offset(&self) -> u32;
}

/// `.index` entry: the first offset of a batch, relative to the segment base, and the batch's
/// position in the `.log`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetEntry {
    pub relative_offset: u32,
    pub position: u32,
}

impl Entry for OffsetEntry {
    const SIZE: usize = 8;
    type Key = u32;
    fn key(&self) -> u32 {
        self.relative_offset
    }
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.relative_offset.to_be_bytes());
        out.extend_from_slice(&self.position.to_be_bytes());
    }
    fn relative_offset(&self) -> u32 {
        self.relative_offset
    }

    fn decode(b: &[u8]) -> Self {
        OffsetEntry {
            relative_offset: u32::from_be_bytes(b[0..4].try_into().expect("4 bytes")),
            position: u32::from_be_bytes(b[4..8].try_into().expect("4 bytes")),
        }
    }
}

/// `.timeindex` entry: the largest timestamp seen up to and including the batch starting at
/// `relative_offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeEntry {
    pub timestamp: i64,
    pub relative_offset: u32,
}

impl Entry for TimeEntry {
    const SIZE: usize = 12;
    type Key = i64;
    fn key(&self) -> i64 {
        self.timestamp
    }
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.timestamp.to_be_bytes());
        out.extend_from_slice(&self.relative_offset.to_be_bytes());
    }
    fn relative_offset(&self) -> u32 {
        self.relative_offset
    }

    fn decode(b: &[u8]) -> Self {
        TimeEntry {
            timestamp: i64::from_be_bytes(b[0..8].try_into().expect("8 bytes")),
            relative_offset: u32::from_be_bytes(b[8..12].try_into().expect("4 bytes")),
        }
    }
}

/// Entries an index file lacks, with where they go: plain data, so that a helper thread can
/// write them.
pub struct PendingEntries {
    path: PathBuf,
    position: u64,
    bytes: Vec<u8>,
    /// How many entries the file holds once these are written.
    pub entries: usize,
}

impl PendingEntries {
    /// Writes the entries and makes them durable.
    pub fn write(&self, fs: &dyn FileSystem) -> std::io::Result<()> {
        let file = fs.open(&self.path, Open::Create)?;
        write_all_at(&*file, &mut [IoSlice::new(&self.bytes)], self.position)?;
        file.sync_data()
    }
}

pub struct IndexFile<E: Entry> {
    path: PathBuf,
    entries: Vec<E>,
    /// How many of `entries` the file holds, durably.
    synced: Cell<usize>,
}

impl<E: Entry> IndexFile<E> {
    /// Opens the index, returning `None` when its content cannot be trusted (a size that is
    /// not a whole number of entries, or keys going backwards): the caller rebuilds it.
    pub fn open(fs: &dyn FileSystem, path: &Path) -> std::io::Result<Option<IndexFile<E>>> {
        let bytes = match fs.read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        if bytes.len() % E::SIZE != 0 {
            return Ok(None);
        }
        let entries: Vec<E> = bytes.chunks_exact(E::SIZE).map(E::decode).collect();
        if entries.windows(2).any(|w| w[0].key() > w[1].key()) {
            return Ok(None);
        }
        let synced = Cell::new(entries.len());
        Ok(Some(IndexFile { path: path.to_path_buf(), entries, synced }))
    }

    /// Creates an empty index, replacing whatever was at `path`.
    pub fn create(fs: &dyn FileSystem, path: &Path) -> std::io::Result<IndexFile<E>> {
        fs.open(path, Open::Truncate)?;
        Ok(IndexFile::created(path))
    }

    /// The index of an empty file already created at `path` (by [`IndexFile::create`] or off
    /// the shard's thread).
    pub fn created(path: &Path) -> IndexFile<E> {
        IndexFile { path: path.to_path_buf(), entries: Vec::new(), synced: Cell::new(0) }
    }

    /// The index at `path` with `entries`, of which its file holds the first `synced` (what
    /// [`IndexFile::into_parts`] gave, maybe on another thread).
    pub fn from_parts(path: &Path, (entries, synced): (Vec<E>, usize)) -> IndexFile<E> {
        IndexFile { path: path.to_path_buf(), entries, synced: Cell::new(synced) }
    }

    /// The entries, and how many of them the file holds.
    pub fn into_parts(self) -> (Vec<E>, usize) {
        (self.entries, self.synced.get())
    }

    pub fn append(&mut self, entry: E) {
        if let Some(last) = self.entries.last() {
            assert!(last.key() <= entry.key(), "index keys must not decrease");
        }
        self.entries.push(entry);
    }

    /// The last entry whose key is at most `key`.
    pub fn floor(&self, key: E::Key) -> Option<E> {
        let after = self.entries.partition_point(|e| e.key() <= key);
        after.checked_sub(1).map(|i| self.entries[i])
    }

    pub fn entries(&self) -> &[E] {
        &self.entries
    }

    pub fn last(&self) -> Option<E> {
        self.entries.last().copied()
    }

    /// Writes the entries the file lacks and makes them durable.
    pub fn sync(&self, fs: &dyn FileSystem) -> std::io::Result<()> {
        if let Some(pending) = self.pending() {
            pending.write(fs)?;
            self.synced_up_to(pending.entries);
        }
        Ok(())
    }

    /// The entries the file lacks, to write with [`PendingEntries::write`] (on any thread) and
    /// then record with [`IndexFile::synced_up_to`]; `None` when the file has them all.
    pub fn pending(&self) -> Option<PendingEntries> {
        let pending = &self.entries[self.synced.get()..];
        if pending.is_empty() {
            return None;
        }
        let mut bytes = Vec::with_capacity(pending.len() * E::SIZE);
        for entry in pending {
            entry.encode(&mut bytes);
        }
        let position = (self.synced.get() * E::SIZE) as u64;
        Some(PendingEntries { path: self.path.clone(), position, bytes, entries: self.entries.len() })
    }

    /// Records that the file holds its first `entries` entries, durably.
    pub fn synced_up_to(&self, entries: usize) {
        self.synced.set(self.synced.get().max(entries));
    }

    /// How many entries are about offsets below `relative_offset`: those a cut there keeps.
    pub fn kept(&self, relative_offset: u32) -> usize {
        self.entries.partition_point(|e| e.relative_offset() < relative_offset)
    }

    /// Keeps the first `kept` entries (the log was cut after them). Returns the length the
    /// file must be cut to if it holds more, for a helper thread to cut it durably; the file
    /// counts as cut from now on.
    pub fn cut(&mut self, kept: usize) -> Option<(PathBuf, u64)> {
        self.entries.truncate(kept);
        (self.synced.get() > kept).then(|| {
            self.synced.set(kept);
            (self.path.clone(), (kept * E::SIZE) as u64)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floor_lookup_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.index");
        let fs = crate::storage::fs::os();
        let mut index = IndexFile::<OffsetEntry>::create(&*fs, &path).unwrap();
        for i in 0..10u32 {
            index.append(OffsetEntry { relative_offset: i * 10, position: i * 100 });
        }
        index.sync(&*fs).unwrap();
        assert_eq!(index.floor(0).unwrap().position, 0);
        assert_eq!(index.floor(35).unwrap().position, 300);
        assert_eq!(index.floor(1000).unwrap().position, 900);
        let reopened = IndexFile::<OffsetEntry>::open(&*fs, &path).unwrap().unwrap();
        assert_eq!(reopened.entries(), index.entries());
    }

    #[test]
    fn a_torn_index_is_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.timeindex");
        std::fs::write(&path, [0u8; 13]).unwrap();
        assert!(IndexFile::<TimeEntry>::open(&*crate::storage::fs::os(), &path).unwrap().is_none());
    }
}
