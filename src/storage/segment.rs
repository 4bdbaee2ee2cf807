//! One segment: `<base offset>.log` holding whole batches back to back, plus its sparse
//! `.index` and `.timeindex`.
//!
//! Invariants: batches are contiguous from position 0 to `size`; offsets increase; an index
//! entry never points past `size`. A header read from the file is used only if its batch ends
//! within the file and its offsets fit the segment ([`Segment::read_header`]), so a damaged
//! length or base offset (neither is covered by the CRC) never sizes a read or an allocation. Positions fit in `u32` (segments are capped below 4 GiB)
//! and relative offsets in `u32` (the log rolls before they would not).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use super::batch::{BatchHeader, CRC_FROM, HEADER_LEN};
use super::fs::{FileHandle, FileSystem, IoFuture, Open, Opened};
use super::index::{IndexFile, OffsetEntry, PendingEntries, TimeEntry};
use super::{StorageError, Wait};
use crate::runtime::zero_copy::FileSlice;

/// Largest segment we write; keeps every position within the `u32` of an index entry.
pub const SEGMENT_BYTES_LIMIT: u64 = i32::MAX as u64;

pub struct Segment {
    pub base_offset: i64,
    fs: Arc<dyn FileSystem>,
    log: Box<dyn FileHandle>,
    log_path: PathBuf,
    size: u64,
    offset_index: IndexFile<OffsetEntry>,
    time_index: IndexFile<TimeEntry>,
    bytes_since_index_entry: u64,
    /// One past the last offset stored here (`base_offset` when empty).
    pub next_offset: i64,
    pub max_timestamp: i64,
    /// When this process created or opened the segment; drives `segment.ms`.
    pub created_ms: i64,
}

/// How much to trust a segment's files when opening it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// Clean shutdown: trust the indexes, read only the few batches after the last entry. A
    /// tail that does not parse falls back to `Full`.
    Tail,
    /// After a crash: CRC-check every batch, truncate at the first bad one, rebuild indexes.
    Full,
}

/// Whether recovery may cut a bad tail off the segment. Only the last segment of a log can
/// have been torn by a crash: a closed one was fsynced before the next was created, so a bad
/// batch in it is damage, and cutting it would silently drop acknowledged records.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Tail {
    MayTruncate,
    MustBeWhole,
}

pub fn file_name(base_offset: i64, extension: &str) -> String {
    format!("{base_offset:020}.{extension}")
}

/// A segment that a helper thread opened (recovered, or rewrote and indexed), as data that
/// can cross threads, for its owner to take in with [`Segment::attach`]: its `.log` still
/// open, so that the owner makes no open call.
pub struct Sealed {
    pub base_offset: i64,
    log: Opened,
    size: u64,
    next_offset: i64,
    max_timestamp: i64,
    /// Each index's entries, and how many of them its file holds.
    offsets: (Vec<OffsetEntry>, usize),
    times: (Vec<TimeEntry>, usize),
    bytes_since_index_entry: u64,
    created_ms: i64,
}

impl Segment {
    /// Creates an empty segment, its directory entries durable before anything is written.
    pub fn create(
        fs: &Arc<dyn FileSystem>,
        dir: &Path,
        base_offset: i64,
        now_ms: i64,
    ) -> Result<Segment, StorageError> {
        let log = Segment::create_files(&**fs, dir, base_offset)?;
        Ok(Segment::with_log(fs, dir, base_offset, log.into_handle(), now_ms))
    }

    /// Creates the empty files of a new segment and makes their directory entries durable:
    /// plain file-system calls, for a helper thread. Returns the `.log` open, for the shard to
    /// take ([`Segment::with_log`]) without opening it again.
    pub fn create_files(fs: &dyn FileSystem, dir: &Path, base_offset: i64) -> Result<Opened, StorageError> {
        let log = fs.open_to_send(&dir.join(file_name(base_offset, "log")), Open::Truncate)?;
        for extension in ["index", "timeindex"] {
            fs.open(&dir.join(file_name(base_offset, extension)), Open::Truncate)?;
        }
        // Without this, a record fsynced into the new file could vanish with its directory entry.
        fs.sync_dir(dir)?;
        Ok(log)
    }

    /// The empty segment whose files exist, its `.log` opened again.
    pub fn open_created(
        fs: &Arc<dyn FileSystem>,
        dir: &Path,
        base_offset: i64,
        now_ms: i64,
    ) -> Result<Segment, StorageError> {
        let log = fs.open(&dir.join(file_name(base_offset, "log")), Open::Existing)?;
        Ok(Segment::with_log(fs, dir, base_offset, log, now_ms))
    }

    /// The empty segment whose files [`Segment::create_files`] made, on its open `.log`.
    pub fn with_log(
        fs: &Arc<dyn FileSystem>,
        dir: &Path,
        base_offset: i64,
        log: Box<dyn FileHandle>,
        now_ms: i64,
    ) -> Segment {
        let log_path = dir.join(file_name(base_offset, "log"));
        Segment {
            base_offset,
            fs: fs.clone(),
            log,
            log_path,
            size: 0,
            offset_index: IndexFile::created(&dir.join(file_name(base_offset, "index"))),
            time_index: IndexFile::created(&dir.join(file_name(base_offset, "timeindex"))),
            bytes_since_index_entry: u64::MAX,
            next_offset: base_offset,
            max_timestamp: -1,
            created_ms: now_ms,
        }
    }

    pub fn open(
        fs: &Arc<dyn FileSystem>,
        dir: &Path,
        base_offset: i64,
        check: Check,
        tail: Tail,
        index_interval_bytes: u64,
        now_ms: i64,
    ) -> Result<Segment, StorageError> {
        let log_path = dir.join(file_name(base_offset, "log"));
        let log = fs.open(&log_path, Open::Existing)?;
        let size = log.len()?;
        let indexes = match check {
            Check::Full => None,
            Check::Tail => {
                let offsets = IndexFile::open(&**fs, &dir.join(file_name(base_offset, "index")))?;
                let times = IndexFile::open(&**fs, &dir.join(file_name(base_offset, "timeindex")))?;
                // The first batch of a segment is always indexed: an empty index over a non-empty
                // log (its index files were lost) cannot be trusted either.
                offsets.zip(times).filter(|(o, _): &(IndexFile<OffsetEntry>, IndexFile<TimeEntry>)| match o.last() {
                    None => size == 0,
                    Some(e) => u64::from(e.position) < size,
                })
            }
        };
        let rebuild = indexes.is_none();
        let (offset_index, time_index) = match indexes {
            Some(pair) => pair,
            None => (
                IndexFile::create(&**fs, &dir.join(file_name(base_offset, "index")))?,
                IndexFile::create(&**fs, &dir.join(file_name(base_offset, "timeindex")))?,
            ),
        };
        let mut segment = Segment {
            base_offset,
            fs: fs.clone(),
            log,
            log_path,
            size,
            offset_index,
            time_index,
            bytes_since_index_entry: u64::MAX,
            next_offset: base_offset,
            max_timestamp: -1,
            created_ms: now_ms,
        };
        if rebuild {
            segment.recover(index_interval_bytes, tail)?;
        } else if let Err(e) = segment.scan_tail() {
            // The marker said clean, yet the tail does not parse (a file cut or damaged after the
            // shutdown): trust nothing and recover as after a crash.
            tracing::warn!(segment = %segment.log_path.display(), error = %e, "the tail does not parse; recovering the segment");
            segment.offset_index = IndexFile::create(&**fs, &dir.join(file_name(base_offset, "index")))?;
            segment.time_index = IndexFile::create(&**fs, &dir.join(file_name(base_offset, "timeindex")))?;
            segment.bytes_since_index_entry = u64::MAX;
            segment.next_offset = base_offset;
            segment.max_timestamp = -1;
            segment.recover(index_interval_bytes, tail)?;
        }
        Ok(segment)
    }

    /// A closed segment of `size` bytes, for reading its batches on a helper thread
    /// ([`Segment::for_each_batch`]): its indexes are not read.
    pub fn reader(fs: &Arc<dyn FileSystem>, dir: &Path, base_offset: i64, size: u64) -> Result<Segment, StorageError> {
        let mut segment = Segment::open_created(fs, dir, base_offset, 0)?;
        segment.size = size;
        Ok(segment)
    }

    /// The segment as plain data, its index files synced first.
    pub fn into_sealed(self) -> Result<Sealed, StorageError> {
        self.sync()?;
        Ok(self.detach())
    }

    /// The segment as data for another thread to [`Segment::attach`].
    pub fn detach(self) -> Sealed {
        Sealed {
            base_offset: self.base_offset,
            log: self.log.into_opened(),
            size: self.size,
            next_offset: self.next_offset,
            max_timestamp: self.max_timestamp,
            offsets: self.offset_index.into_parts(),
            times: self.time_index.into_parts(),
            bytes_since_index_entry: self.bytes_since_index_entry,
            created_ms: self.created_ms,
        }
    }

    /// The segment that [`Segment::detach`] handed over.
    pub fn attach(fs: &Arc<dyn FileSystem>, dir: &Path, sealed: Sealed) -> Segment {
        let Sealed {
            base_offset,
            log,
            size,
            next_offset,
            max_timestamp,
            offsets,
            times,
            bytes_since_index_entry,
            created_ms,
        } = sealed;
        let mut segment = Segment::with_log(fs, dir, base_offset, log.into_handle(), created_ms);
        segment.offset_index = IndexFile::from_parts(&dir.join(file_name(base_offset, "index")), offsets);
        segment.time_index = IndexFile::from_parts(&dir.join(file_name(base_offset, "timeindex")), times);
        (segment.size, segment.next_offset, segment.max_timestamp) = (size, next_offset, max_timestamp);
        segment.bytes_since_index_entry = bytes_since_index_entry;
        segment
    }

    /// Walks every batch with its CRC, re-indexing as it goes; truncates the file at the first
    /// batch that is torn or corrupt, or fails if `tail` forbids that.
    fn recover(&mut self, index_interval_bytes: u64, tail: Tail) -> Result<(), StorageError> {
        let file_size = self.size;
        let mut position = 0u64;
        self.size = 0;
        while position < file_size {
            let Some(header) = self.read_header(position, file_size, Wait::Yes)? else {
                break;
            };
            if header.base_offset < self.next_offset || !self.crc_matches(position, &header)? {
                break;
            }
            self.index_batch(&header, position, header.max_timestamp, index_interval_bytes)?;
            position += header.size() as u64;
            self.size = position;
        }
        if self.size < file_size && tail == Tail::MustBeWhole {
            return Err(StorageError::CorruptBatch(format!(
                "{} is damaged at position {} of {file_size} and is not the last segment",
                self.log_path.display(),
                self.size
            )));
        }
        if self.size < file_size {
            tracing::warn!(
                segment = %self.log_path.display(),
                valid_bytes = self.size,
                file_bytes = file_size,
                "truncating a torn or corrupt tail"
            );
            self.log.set_len(self.size)?;
            self.log.sync_data()?;
        }
        Ok(())
    }

    /// After a clean shutdown: the indexes are right; find the end and the max timestamp by
    /// reading the batch headers after the last index entry.
    fn scan_tail(&mut self) -> Result<(), StorageError> {
        let end = self.end_at((self.offset_index.last(), self.time_index.last()), self.size, Wait::Yes)?;
        (self.next_offset, self.max_timestamp, self.bytes_since_index_entry) =
            (end.next_offset, end.max_timestamp, end.bytes_since_index_entry);
        Ok(())
    }

    /// Where the segment would end if its file ended at `size` with `last` its last index
    /// entries: from those entries and the headers of the batches after them.
    fn end_at(
        &self,
        last: (Option<OffsetEntry>, Option<TimeEntry>),
        size: u64,
        wait: Wait,
    ) -> Result<End, StorageError> {
        let mut position = 0u64;
        let mut end = End { next_offset: self.base_offset, max_timestamp: -1, bytes_since_index_entry: 0 };
        if let Some(entry) = last.0 {
            position = u64::from(entry.position);
            end.next_offset = self.base_offset + i64::from(entry.relative_offset);
        }
        if let Some(entry) = last.1 {
            end.max_timestamp = entry.timestamp;
        }
        while position < size {
            let header =
                self.read_header(position, size, wait)?.filter(|h| h.base_offset >= end.next_offset).ok_or_else(
                    || StorageError::CorruptBatch(format!("bad batch at {position} in {}", self.log_path.display())),
                )?;
            end.next_offset = header.last_offset() + 1;
            end.max_timestamp = end.max_timestamp.max(header.max_timestamp);
            position += header.size() as u64;
            end.bytes_since_index_entry += header.size() as u64;
        }
        Ok(end)
    }

    /// The header of the batch at `position`, or `None` when no sane batch is there: a header
    /// that does not parse, a length running past `end`, or offsets outside what this segment
    /// can hold (the CRC does not cover the base offset, so a damaged one must be caught here).
    /// Every reader of the file goes through this, so no length read from disk is trusted.
    fn read_header(&self, position: u64, end: u64, wait: Wait) -> Result<Option<BatchHeader>, StorageError> {
        if position + HEADER_LEN as u64 > end {
            return Ok(None);
        }
        let mut bytes = [0u8; HEADER_LEN];
        self.read_at(&mut bytes, position, wait)?;
        let Ok(header) = BatchHeader::parse(&bytes) else {
            return Ok(None);
        };
        let fits_file = position + header.size() as u64 <= end;
        let relative_last = header
            .base_offset
            .checked_sub(self.base_offset)
            .and_then(|r| r.checked_add(i64::from(header.last_offset_delta)));
        let fits_offsets =
            header.base_offset >= self.base_offset && relative_last.is_some_and(|r| r <= i64::from(u32::MAX));
        Ok((fits_file && fits_offsets).then_some(header))
    }

    /// Fills `buf` from `position`; with [`Wait::No`] only from the page cache, failing with
    /// [`StorageError::NotCached`] (for [`Segment::load`]) where it is not.
    fn read_at(&self, buf: &mut [u8], position: u64, wait: Wait) -> Result<(), StorageError> {
        match wait {
            Wait::Yes => Ok(self.log.read_exact_at(buf, position)?),
            Wait::No => match self.log.read_cached_at(buf, position) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    Err(StorageError::NotCached { base_offset: self.base_offset, position, len: buf.len() })
                }
                result => Ok(result?),
            },
        }
    }

    /// Reads `len` bytes at `position` into the page cache through the shard's io_uring, for a
    /// read that failed with [`StorageError::NotCached`]. The kernel reads ahead of it, so a
    /// scan of the headers that follow usually finds them cached.
    pub fn load(&self, position: u64, len: usize) -> IoFuture {
        self.log.load(position, len)
    }

    /// Whether the batch `header` at `position` (which fits the file) has a right CRC-32C, read
    /// through a fixed buffer whatever the batch's size.
    fn crc_matches(&self, position: u64, header: &BatchHeader) -> Result<bool, StorageError> {
        let mut buffer = vec![0u8; header.size().min(64 * 1024)];
        let mut at = position + CRC_FROM as u64;
        let end = position + header.size() as u64;
        let mut crc = 0;
        while at < end {
            let chunk = &mut buffer[..(end - at).min(64 * 1024) as usize];
            self.log.read_exact_at(chunk, at)?;
            crc = crc32c::crc32c_append(crc, chunk);
            at += chunk.len() as u64;
        }
        Ok(crc == header.crc)
    }

    /// Records that the batch `header` now sits at `position`: index entries, end offset, max
    /// timestamp.
    fn index_batch(
        &mut self,
        header: &BatchHeader,
        position: u64,
        max_timestamp: i64,
        index_interval_bytes: u64,
    ) -> Result<(), StorageError> {
        debug_assert!(header.base_offset >= self.next_offset);
        let relative_offset = u32::try_from(header.base_offset - self.base_offset).expect("log rolls before overflow");
        let position_u32 = u32::try_from(position).expect("segments stay below 4 GiB");
        self.max_timestamp = self.max_timestamp.max(max_timestamp);
        if self.bytes_since_index_entry >= index_interval_bytes {
            self.offset_index.append(OffsetEntry { relative_offset, position: position_u32 });
            if self.time_index.last().is_none_or(|e| self.max_timestamp > e.timestamp) {
                self.time_index.append(TimeEntry { timestamp: self.max_timestamp, relative_offset });
            }
            self.bytes_since_index_entry = 0;
        }
        self.bytes_since_index_entry = self.bytes_since_index_entry.saturating_add(header.size() as u64);
        self.next_offset = header.last_offset() + 1;
        Ok(())
    }

    /// Starts writing `pieces` (whole stamped batches, one after the other) at the end.
    /// Nothing about the segment changes until [`Segment::finish_append`] is given the
    /// outcome, so reads never reach bytes still being written.
    pub fn write_at_end(&self, pieces: Vec<Bytes>) -> IoFuture {
        let len: usize = pieces.iter().map(Bytes::len).sum();
        assert!(self.size + len as u64 <= SEGMENT_BYTES_LIMIT, "the log rolls before a segment overflows");
        self.log.write_at(pieces, self.size)
    }

    /// Takes the batches [`Segment::write_at_end`] wrote (`batches`: each stamped header with
    /// its max timestamp, in order) into the segment, or on a failed write starts cutting
    /// whatever part of them reached the file back off, giving the space back and keeping the
    /// file exactly its whole batches: the caller awaits [`FailedWrite::cut_back`] before it
    /// writes again.
    pub fn finish_append(
        &mut self,
        written: std::io::Result<()>,
        batches: &[(BatchHeader, i64)],
        index_interval_bytes: u64,
    ) -> Result<(), FailedWrite> {
        if let Err(e) = written {
            let (truncate, path) = (self.log.truncate(self.size), self.log_path.clone());
            let cut_back = Box::pin(async move {
                if let Err(e) = truncate.await {
                    tracing::error!(segment = %path.display(), error = %e, "cutting off a failed write");
                }
            });
            return Err(FailedWrite { error: e.into(), cut_back });
        }
        let mut position = self.size;
        for (header, max_timestamp) in batches {
            let indexed = self.index_batch(header, position, *max_timestamp, index_interval_bytes);
            indexed.map_err(|error| FailedWrite { error, cut_back: Box::pin(std::future::ready(())) })?;
            position += header.size() as u64;
        }
        self.size = position;
        Ok(())
    }

    /// fdatasync of the `.log` through the shard's ring: covers every append finished before
    /// it was submitted. The indexes are not synced: after a crash the active segment is
    /// recovered (its indexes rebuilt) from the recovery point anyway.
    pub fn fdatasync(&self) -> IoFuture {
        self.log.fdatasync()
    }

    /// Calls `f` with the header of every batch from `position` to the end.
    pub fn for_each_header(&self, mut position: u64, f: &mut impl FnMut(&BatchHeader)) -> Result<(), StorageError> {
        while let Some(header) = self.read_header(position, self.size, Wait::Yes)? {
            f(&header);
            position += header.size() as u64;
        }
        Ok(())
    }

    /// Position of the batch holding `offset`, if this segment has it.
    pub fn locate(&self, offset: i64, wait: Wait) -> Result<Option<u64>, StorageError> {
        if offset < self.base_offset || offset >= self.next_offset {
            return Ok(None);
        }
        let relative = u32::try_from(offset - self.base_offset).expect("offset within segment");
        let mut position = self.offset_index.floor(relative).map_or(0, |e| u64::from(e.position));
        while let Some(header) = self.read_header(position, self.size, wait)? {
            if header.last_offset() >= offset {
                return Ok(Some(position));
            }
            position += header.size() as u64;
        }
        Ok(None)
    }

    /// How many bytes from `position` make whole batches: at least the first, then as many
    /// as fit in `max_bytes`, none with a base offset at or past `max_offset`. Reads headers
    /// only.
    fn extent(&self, position: u64, max_bytes: usize, max_offset: i64, wait: Wait) -> Result<usize, StorageError> {
        // The index marks batch starts: jump to the furthest one within both limits, so that
        // only the batches after it (one index interval at most) have their headers read.
        let entries = self.offset_index.entries();
        let within_bytes = entries.partition_point(|e| u64::from(e.position) <= position + max_bytes as u64);
        let below_offset = entries.partition_point(|e| self.base_offset + i64::from(e.relative_offset) < max_offset);
        let mut end = match within_bytes.min(below_offset).checked_sub(1).map(|i| u64::from(entries[i].position)) {
            Some(jump) if jump > position => jump,
            _ => position,
        };
        while let Some(header) = self.read_header(end, self.size, wait)? {
            let next = end + header.size() as u64;
            let over_limit = end > position && (next - position) as usize > max_bytes;
            if header.base_offset >= max_offset || next > self.size || over_limit {
                break;
            }
            end = next;
        }
        Ok((end - position) as usize)
    }

    /// The bytes of [`Segment::extent`], read into memory.
    pub fn read(&self, position: u64, max_bytes: usize, max_offset: i64, wait: Wait) -> Result<Bytes, StorageError> {
        let length = self.extent(position, max_bytes, max_offset, wait)?;
        let mut buffer = BytesMut::zeroed(length);
        self.read_at(&mut buffer, position, wait)?;
        Ok(buffer.freeze())
    }

    /// Calls `visit` with every batch in order, each read whole into one reused buffer, so
    /// that a pass over the segment holds one batch at a time (compaction).
    pub fn for_each_batch(
        &self,
        mut visit: impl FnMut(&BatchHeader, &[u8]) -> Result<(), StorageError>,
    ) -> Result<(), StorageError> {
        let mut buffer = Vec::new();
        let mut position = 0;
        while position < self.size {
            let header = self.read_header(position, self.size, Wait::Yes)?.ok_or_else(|| {
                StorageError::CorruptBatch(format!("bad batch at {position} in {}", self.log_path.display()))
            })?;
            buffer.resize(header.size(), 0);
            self.log.read_exact_at(&mut buffer, position)?;
            visit(&header, &buffer)?;
            position += header.size() as u64;
        }
        Ok(())
    }

    /// The range of [`Segment::extent`], to be sent from the file without a copy.
    pub fn slice(
        &self,
        position: u64,
        max_bytes: usize,
        max_offset: i64,
        wait: Wait,
    ) -> Result<Option<FileSlice>, StorageError> {
        let len = self.extent(position, max_bytes, max_offset, wait)?;
        if len == 0 {
            return Ok(None);
        }
        Ok(Some(FileSlice { file: self.log.os_file()?, position, len }))
    }

    /// The first record with a timestamp at or after `timestamp`: (offset, its timestamp). With
    /// [`Wait::No`], reads only from the page cache.
    pub fn find_timestamp(&self, timestamp: i64, wait: Wait) -> Result<Option<(i64, i64)>, StorageError> {
        if self.max_timestamp < timestamp {
            return Ok(None);
        }
        // Batches up to the last time entry below the target all have smaller timestamps.
        let below = self.time_index.entries().partition_point(|e| e.timestamp < timestamp);
        let mut position = match below.checked_sub(1) {
            Some(i) => {
                let relative = self.time_index.entries()[i].relative_offset;
                self.offset_index.floor(relative).map_or(0, |e| u64::from(e.position))
            }
            None => 0,
        };
        while let Some(header) = self.read_header(position, self.size, wait)? {
            if header.max_timestamp >= timestamp {
                let mut bytes = vec![0u8; header.size()];
                self.read_at(&mut bytes, position, wait)?;
                return Ok(Some(first_record_at_or_after(&header, Bytes::from(bytes), timestamp)));
            }
            position += header.size() as u64;
        }
        Ok(None)
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// The newest record's timestamp, or the file's modification time when no record carries
    /// one: the clock of time-based retention, as in Kafka.
    pub fn largest_timestamp(&self) -> Result<i64, StorageError> {
        if self.max_timestamp >= 0 {
            return Ok(self.max_timestamp);
        }
        let modified = self.log.modified()?;
        Ok(modified.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64))
    }

    /// Where cutting the segment before the batch holding `offset` (a follower's divergent
    /// tail) leaves it, read without changing anything: `None` when the segment does not reach
    /// `offset`. With [`Wait::No`] it fails with `NotCached` rather than wait for the disk.
    pub fn plan_cut(&self, offset: i64, wait: Wait) -> Result<Option<SegmentCut>, StorageError> {
        let Some(position) = self.locate(offset.max(self.base_offset), wait)? else {
            return Ok(None);
        };
        let header = self.read_header(position, self.size, wait)?.expect("locate found a batch there");
        let cut_relative = u32::try_from(header.base_offset - self.base_offset).expect("offset within segment");
        let kept = [self.offset_index.kept(cut_relative), self.time_index.kept(cut_relative)];
        let last = (
            kept[0].checked_sub(1).map(|i| self.offset_index.entries()[i]),
            kept[1].checked_sub(1).map(|i| self.time_index.entries()[i]),
        );
        let end = self.end_at(last, position, wait)?;
        Ok(Some(SegmentCut { position, kept, end }))
    }

    /// Cuts the segment in memory as [`Segment::plan_cut`] said, which nothing changed since:
    /// reads stop at the cut at once. Returns the cuts its files need (the `.log`, and the
    /// index files holding entries past it), for a helper thread.
    pub fn cut(&mut self, cut: SegmentCut) -> FileCuts {
        self.size = cut.position;
        (self.next_offset, self.max_timestamp, self.bytes_since_index_entry) =
            (cut.end.next_offset, cut.end.max_timestamp, cut.end.bytes_since_index_entry);
        let mut files = vec![(self.log_path.clone(), cut.position)];
        files.extend(self.offset_index.cut(cut.kept[0]));
        files.extend(self.time_index.cut(cut.kept[1]));
        FileCuts(files)
    }

    /// Removes the segment: its files are renamed at once and unlinked off this thread.
    pub fn delete(self) -> Result<(), StorageError> {
        let fs = self.fs.clone();
        for path in self.into_files() {
            super::deleter::delete_later(&fs, &path)?;
        }
        Ok(())
    }

    /// Closes the segment's descriptors and returns its files' paths (`.log`, `.index`,
    /// `.timeindex`), for their deletion later on a helper thread.
    pub fn into_files(self) -> [PathBuf; 3] {
        let Segment { log, log_path, .. } = self;
        drop(log);
        ["log", "index", "timeindex"].map(|extension| log_path.with_extension(extension))
    }

    pub fn is_empty(&self) -> bool {
        self.size == 0
    }

    /// The index entries the files lack, to write off the shard's thread when the segment
    /// closes, then record with [`Segment::index_entries_synced`].
    pub fn pending_index_entries(&self) -> [Option<PendingEntries>; 2] {
        [self.offset_index.pending(), self.time_index.pending()]
    }

    /// Records that the index files hold `entries` (offset index, time index) durably.
    pub fn index_entries_synced(&self, entries: [usize; 2]) {
        self.offset_index.synced_up_to(entries[0]);
        self.time_index.synced_up_to(entries[1]);
    }

    /// Makes the log and index bytes durable.
    pub fn sync(&self) -> Result<(), StorageError> {
        self.log.sync_data()?;
        self.offset_index.sync(&*self.fs)?;
        self.time_index.sync(&*self.fs)?;
        Ok(())
    }
}

/// Where a segment ends, as its headers say.
struct End {
    /// One past the last offset.
    next_offset: i64,
    max_timestamp: i64,
    bytes_since_index_entry: u64,
}

/// Where cutting a segment leaves it ([`Segment::plan_cut`]).
pub struct SegmentCut {
    /// Where the first batch cut starts: the new size.
    position: u64,
    /// Entries kept in the offset index and the time index.
    kept: [usize; 2],
    end: End,
}

/// Files to cut to a length, durably, off the shard's thread: what [`Segment::cut`] leaves
/// to do.
pub struct FileCuts(Vec<(PathBuf, u64)>);

impl FileCuts {
    /// Cuts and syncs each file (blocking: on a helper thread).
    pub fn run(&self, fs: &dyn FileSystem) -> Result<(), StorageError> {
        for (path, len) in &self.0 {
            let file = fs.open(path, Open::Existing)?;
            file.set_len(*len)?;
            file.sync_data()?;
        }
        Ok(())
    }
}

/// A write at the end of a segment that failed, and the cut of what it left in the file
/// (through the shard's io_uring, or its blocking pool on kernels before 6.9), which must be
/// done before the next write.
pub struct FailedWrite {
    pub error: StorageError,
    pub cut_back: futures::future::LocalBoxFuture<'static, ()>,
}

/// Exact answer for a timestamp lookup inside one batch. Only this cold path decodes records.
fn first_record_at_or_after(header: &BatchHeader, mut batch: Bytes, timestamp: i64) -> (i64, i64) {
    use kafka_protocol::records::{RecordBatchDecoder, TimestampType};
    match RecordBatchDecoder::decode(&mut batch) {
        Ok(set) => set
            .records
            .iter()
            .find_map(|r| {
                let t = if r.timestamp_type == TimestampType::LogAppend { header.max_timestamp } else { r.timestamp };
                (t >= timestamp).then_some((r.offset, t))
            })
            .unwrap_or((header.base_offset, header.max_timestamp)),
        // A batch we cannot decode (an unknown codec) still answers at batch granularity.
        Err(_) => (header.base_offset, header.max_timestamp),
    }
}
