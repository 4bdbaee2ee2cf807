//! A partition's leader-epoch cache, Kafka's `LeaderEpochFileCache`: for each leader epoch
//! that wrote to the log, the offset of its first batch. It answers OffsetForLeaderEpoch (where
//! an epoch's part of the log ends) and lets a follower find where its log diverged from the
//! leader's.
//!
//! Invariants: entries are sorted by epoch and by start offset, both strictly increasing;
//! every start offset lies in `[log_start_offset, log_end_offset)` of the log once the log has
//! applied its changes (appends, truncation, a moved log start). The file
//! `leader-epoch-checkpoint` in the partition directory holds them in Kafka's text format
//! (`0`, the count, then one `epoch start_offset` line each), replaced atomically through
//! [`super::fs::replace`] when the log's end changes them (a new epoch, a truncation). The log
//! writes it before the first batch of a new epoch is written, so the file is never behind
//! the log; at open, entries past the log end (a tail a crash cut off) are dropped, entries
//! below the log start cut (a moved log start only cuts the cache in memory), and a missing or
//! unreadable file is rebuilt from the batches' `partition_leader_epoch`.
//!
//! A new epoch's write (a leader change) runs on the shard's blocking pool, before the epoch's
//! first batch is written (`Log::begin_checkpoint`); a truncation, rare and blocking as a
//! whole, writes it on the shard's thread.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::fs::FileSystem;

/// The checkpoint's file name in the partition directory (Kafka's).
pub const CHECKPOINT_FILE: &str = "leader-epoch-checkpoint";
/// The only version of the checkpoint format.
const CHECKPOINT_VERSION: u32 = 0;

/// Kafka's UNDEFINED_EPOCH and UNDEFINED_EPOCH_OFFSET: no epoch, no offset known.
pub const UNDEFINED_EPOCH: i32 = -1;
pub const UNDEFINED_EPOCH_OFFSET: i64 = -1;

/// The first offset written by a leader epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochEntry {
    pub epoch: i32,
    pub start_offset: i64,
}

/// The epochs of one partition's log, with the file that keeps them.
#[derive(Debug, Clone)]
pub struct LeaderEpochCache {
    entries: Vec<EpochEntry>,
    path: PathBuf,
}

impl LeaderEpochCache {
    /// The cache of the partition in `dir` as its checkpoint holds it; `None` when the file is
    /// missing or does not parse (then the log rebuilds it from its batches).
    pub fn load(fs: &dyn FileSystem, dir: &Path) -> Option<LeaderEpochCache> {
        let path = dir.join(CHECKPOINT_FILE);
        let text = String::from_utf8(fs.read(&path).ok()?).ok()?;
        match parse(&text) {
            Some(entries) => Some(LeaderEpochCache { entries, path }),
            None => {
                tracing::warn!(path = %path.display(), "unreadable leader-epoch checkpoint; rebuilding it from the log");
                None
            }
        }
    }

    /// An empty cache for the partition in `dir` (its file is written at the first change).
    pub fn empty(dir: &Path) -> LeaderEpochCache {
        LeaderEpochCache { entries: Vec::new(), path: dir.join(CHECKPOINT_FILE) }
    }

    pub fn entries(&self) -> &[EpochEntry] {
        &self.entries
    }

    /// The epoch of the newest entry.
    pub fn latest_epoch(&self) -> Option<i32> {
        self.entries.last().map(|e| e.epoch)
    }

    /// Records that `epoch` wrote a batch at `start_offset`, as Kafka's `assign`: nothing
    /// changes if that is the latest epoch already (from an offset at or below); otherwise
    /// every entry of that epoch or later, or starting at or after the offset, is dropped and
    /// the new one added. Batches without an epoch (negative) are ignored. Returns whether the
    /// cache changed.
    pub fn assign(&mut self, epoch: i32, start_offset: i64) -> bool {
        if !self.assigns(epoch, start_offset) {
            return false;
        }
        self.entries.retain(|e| e.epoch < epoch && e.start_offset < start_offset);
        self.entries.push(EpochEntry { epoch, start_offset });
        true
    }

    /// Whether [`LeaderEpochCache::assign`] would change the cache.
    pub fn assigns(&self, epoch: i32, start_offset: i64) -> bool {
        epoch >= 0
            && start_offset >= 0
            && !self.entries.last().is_some_and(|e| e.epoch == epoch && e.start_offset <= start_offset)
    }

    /// The log was cut at `end_offset`: drops the epochs that started at or after it. Returns
    /// whether the cache changed.
    pub fn truncate_from_end(&mut self, end_offset: i64) -> bool {
        let kept = self.entries.partition_point(|e| e.start_offset < end_offset);
        let changed = kept < self.entries.len();
        self.entries.truncate(kept);
        changed
    }

    /// The log now starts at `start_offset`: drops the epochs wholly below it, and the one that
    /// holds it starts there, as in Kafka. Returns whether the cache changed.
    pub fn truncate_from_start(&mut self, start_offset: i64) -> bool {
        let below = self.entries.partition_point(|e| e.start_offset <= start_offset);
        let unchanged = match below {
            0 => true,
            1 => self.entries[0].start_offset == start_offset,
            _ => false,
        };
        if unchanged {
            return false;
        }
        let holding = EpochEntry { epoch: self.entries[below - 1].epoch, start_offset };
        self.entries.drain(..below - 1);
        self.entries[0] = holding;
        true
    }

    /// OffsetForLeaderEpoch: the largest epoch at or below `requested` and the offset where the
    /// log moved past it (the start of the next larger epoch; `log_end_offset` for the latest
    /// epoch), as Kafka's `endOffsetFor`. An epoch older than every entry gets itself and the
    /// first entry's start (its data is gone below the log start); an epoch later than all, or
    /// no entries, gets ([`UNDEFINED_EPOCH`], [`UNDEFINED_EPOCH_OFFSET`]).
    pub fn end_offset_for(&self, requested: i32, log_end_offset: i64) -> (i32, i64) {
        const UNDEFINED: (i32, i64) = (UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET);
        if requested == UNDEFINED_EPOCH {
            return UNDEFINED;
        }
        if self.latest_epoch() == Some(requested) {
            return (requested, log_end_offset);
        }
        let higher = self.entries.partition_point(|e| e.epoch <= requested);
        match (higher, self.entries.get(higher)) {
            (_, None) => UNDEFINED,
            (0, Some(next)) => (requested, next.start_offset),
            (_, Some(next)) => (self.entries[higher - 1].epoch, next.start_offset),
        }
    }

    /// The epoch that wrote `offset`, if known.
    pub fn epoch_for_offset(&self, offset: i64) -> Option<i32> {
        let holding = self.entries.partition_point(|e| e.start_offset <= offset);
        holding.checked_sub(1).map(|i| self.entries[i].epoch)
    }

    /// Writes the checkpoint (atomically and durably).
    pub fn write(&self, fs: &dyn FileSystem) -> std::io::Result<()> {
        super::fs::replace(fs, &self.path, encode(&self.entries).as_bytes())
    }

    /// The same write of the entries as they are now, for a helper thread.
    pub fn writer(&self, fs: Arc<dyn FileSystem>) -> impl FnOnce() -> std::io::Result<()> + Send + use<> {
        let (path, text) = (self.path.clone(), encode(&self.entries));
        move || super::fs::replace(&*fs, &path, text.as_bytes())
    }
}

/// Kafka's checkpoint text: the version, the count, then `epoch start_offset` lines.
fn encode(entries: &[EpochEntry]) -> String {
    let mut text = format!("{CHECKPOINT_VERSION}\n{}\n", entries.len());
    for e in entries {
        text.push_str(&format!("{} {}\n", e.epoch, e.start_offset));
    }
    text
}

/// The entries of a checkpoint's text; `None` unless it is version 0 with exactly the count of
/// well-formed lines announced, epochs and offsets non-negative and strictly increasing.
fn parse(text: &str) -> Option<Vec<EpochEntry>> {
    let mut lines = text.lines();
    if lines.next()?.trim().parse::<u32>().ok()? != CHECKPOINT_VERSION {
        return None;
    }
    let count: usize = lines.next()?.trim().parse().ok()?;
    let mut entries: Vec<EpochEntry> = Vec::new();
    for line in lines.by_ref().take(count) {
        let mut fields = line.split_whitespace();
        let entry = EpochEntry { epoch: fields.next()?.parse().ok()?, start_offset: fields.next()?.parse().ok()? };
        let increasing = entries.last().is_none_or(|p| p.epoch < entry.epoch && p.start_offset < entry.start_offset);
        if fields.next().is_some() || entry.epoch < 0 || entry.start_offset < 0 || !increasing {
            return None;
        }
        entries.push(entry);
    }
    (entries.len() == count && lines.all(|l| l.trim().is_empty())).then_some(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(entries: &[(i32, i64)]) -> LeaderEpochCache {
        let mut cache = LeaderEpochCache::empty(Path::new("/data/t-0"));
        for &(epoch, start_offset) in entries {
            assert!(cache.assign(epoch, start_offset));
        }
        cache
    }

    fn pairs(cache: &LeaderEpochCache) -> Vec<(i32, i64)> {
        cache.entries().iter().map(|e| (e.epoch, e.start_offset)).collect()
    }

    #[test]
    fn appends_across_epochs_add_one_entry_per_new_epoch() {
        let mut cache = cache(&[]);
        assert!(cache.assign(0, 0));
        assert!(!cache.assign(0, 5), "the same epoch goes on");
        assert!(cache.assign(2, 10));
        assert!(!cache.assign(-1, 12), "a batch without an epoch");
        assert!(cache.assign(3, 12));
        assert_eq!(pairs(&cache), vec![(0, 0), (2, 10), (3, 12)]);
        // A leader epoch older than the latest (a follower taking the leader's log after
        // truncation) replaces what conflicts with it, as in Kafka.
        assert!(cache.assign(2, 11));
        assert_eq!(pairs(&cache), vec![(0, 0), (2, 11)]);
        assert_eq!(cache.latest_epoch(), Some(2));
    }

    #[test]
    fn end_offsets_follow_kafka() {
        let cache = cache(&[(1, 0), (3, 10), (6, 25)]);
        let log_end_offset = 40;
        assert_eq!(cache.end_offset_for(6, log_end_offset), (6, 40), "the latest epoch ends at the log end");
        assert_eq!(cache.end_offset_for(3, log_end_offset), (3, 25));
        assert_eq!(cache.end_offset_for(1, log_end_offset), (1, 10));
        assert_eq!(cache.end_offset_for(4, log_end_offset), (3, 25), "an epoch that never wrote: the one before");
        assert_eq!(cache.end_offset_for(5, log_end_offset), (3, 25));
        assert_eq!(cache.end_offset_for(0, log_end_offset), (0, 0), "older than all: the first start");
        assert_eq!(cache.end_offset_for(7, log_end_offset), (-1, -1), "later than all");
        assert_eq!(cache.end_offset_for(-1, log_end_offset), (-1, -1));
        assert_eq!(LeaderEpochCache::empty(Path::new("/d")).end_offset_for(0, 5), (-1, -1));
        assert_eq!(cache.epoch_for_offset(9), Some(1));
        assert_eq!(cache.epoch_for_offset(10), Some(3));
        assert_eq!(cache.epoch_for_offset(100), Some(6));
    }

    #[test]
    fn truncation_from_the_end_drops_epochs_that_started_after_the_cut() {
        let mut cache = cache(&[(1, 0), (3, 10), (6, 25)]);
        assert!(!cache.truncate_from_end(26));
        assert!(cache.truncate_from_end(25));
        assert_eq!(pairs(&cache), vec![(1, 0), (3, 10)]);
        assert!(cache.truncate_from_end(3));
        assert_eq!(pairs(&cache), vec![(1, 0)]);
        assert!(cache.truncate_from_end(0));
        assert!(cache.entries().is_empty());
    }

    #[test]
    fn a_moved_log_start_drops_older_epochs_and_starts_the_holding_one_there() {
        let mut cache = cache(&[(1, 0), (3, 10), (6, 25)]);
        assert!(!cache.truncate_from_start(0));
        assert!(cache.truncate_from_start(4));
        assert_eq!(pairs(&cache), vec![(1, 4), (3, 10), (6, 25)]);
        assert!(cache.truncate_from_start(10));
        assert_eq!(pairs(&cache), vec![(3, 10), (6, 25)]);
        assert!(!cache.truncate_from_start(10));
        assert!(cache.truncate_from_start(30));
        assert_eq!(pairs(&cache), vec![(6, 30)]);
    }

    #[test]
    fn the_checkpoint_has_kafkas_format_and_bad_files_are_refused() {
        let cache = cache(&[(0, 0), (4, 117)]);
        assert_eq!(encode(cache.entries()), "0\n2\n0 0\n4 117\n");
        assert_eq!(parse("0\n2\n0 0\n4 117\n").unwrap(), cache.entries());
        assert_eq!(parse("0\n0\n").unwrap(), vec![]);
        for bad in [
            "",
            "1\n0\n",
            "0\n2\n0 0\n",
            "0\n1\n0 0\n1 5\n",
            "0\n1\n0\n",
            "0\n1\n0 0 0\n",
            "0\n2\n3 0\n2 5\n",
            "0\n2\n0 5\n1 5\n",
            "0\n1\n-2 0\n",
            "0\nx\n",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_checkpoint_is_written_and_read_back_through_the_file_system() {
        let disk = crate::storage::fs::simulated::SimDisk::new();
        let fs: std::sync::Arc<dyn FileSystem> = disk.clone();
        let dir = Path::new("/data/t-0");
        fs.create_dir_all(dir).unwrap();
        assert!(LeaderEpochCache::load(&*fs, dir).is_none());
        let cache = LeaderEpochCache { path: dir.join(CHECKPOINT_FILE), ..cache(&[(2, 0), (5, 9)]) };
        cache.write(&*fs).unwrap();
        assert_eq!(fs.read(&dir.join(CHECKPOINT_FILE)).unwrap(), b"0\n2\n2 0\n5 9\n");
        assert_eq!(LeaderEpochCache::load(&*fs, dir).unwrap().entries(), cache.entries());
        let broken = "0\n3\n2 0\n";
        crate::storage::fs::replace(&*fs, &dir.join(CHECKPOINT_FILE), broken.as_bytes()).unwrap();
        assert!(LeaderEpochCache::load(&*fs, dir).is_none());
    }
}
