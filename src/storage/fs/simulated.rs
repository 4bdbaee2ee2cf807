//! A simulated disk for tests: a [`FileSystem`] in memory that keeps, for every file, the
//! durable image (what survives a power cut) apart from what was written since the last sync,
//! and for the directory tree the durable entries apart from those not yet synced.
//!
//! [`SimDisk::power_cut`] then does what losing power does to a file system that honours
//! fsync and nothing more: the unsynced part of each file is dropped or torn at 4 KiB page
//! boundaries (each page independently new or old, the length anywhere between the old and
//! the new at a page boundary), and directory entries not synced are lost. Everything is
//! decided by the seed, so a failure replays exactly. [`SimDisk::fail_after`] makes the disk
//! die in the middle of whatever the code under test is doing: from the chosen operation on,
//! every call fails with EIO, as when the power goes out mid-call.
//!
//! An fsync makes durable what was written before it was submitted, when it completes.
//! [`SimDisk::hold_syncs`] keeps submitted fsyncs from completing until
//! [`SimDisk::release_syncs`], so tests can check that nothing waits on a sync that has not
//! happened; [`SimDisk::fail_syncs`] makes them fail with EIO. [`SimDisk::hold_blocking_syncs`]
//! (and [`SimDisk::hold_opens`], [`SimDisk::hold_renames`], [`SimDisk::hold_truncates`]) makes
//! the blocking syncs (`sync_data`), opens, renames or truncations of some files wait (made on helper threads), so that a test can hold such work halfway and see what the
//! shard does meanwhile.
//! Asynchronous writes are held and failed as fsyncs are: [`SimDisk::hold_writes`] keeps them
//! from completing (their bytes are in the file at once, as in a page cache, but the writer
//! does not know it yet) until [`SimDisk::release_writes`], and [`SimDisk::fail_writes`] makes
//! them write half their bytes and fail with EIO.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, IoSlice};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use bytes::Bytes;
use futures::channel::oneshot;

use super::{FileHandle, FileSystem, IoFuture, Open, Opened};

/// Unit of tearing: a page either made it to the platter or did not.
pub const PAGE: usize = 4096;

/// A small deterministic generator (SplitMix64) for seeded tests.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[low, high)`.
    pub fn below(&mut self, low: u64, high: u64) -> u64 {
        assert!(low < high);
        low + self.next_u64() % (high - low)
    }

    pub fn coin(&mut self) -> bool {
        self.next_u64() & 1 == 1
    }
}

type InodeId = u64;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Entry {
    File(InodeId),
    Dir,
}

#[derive(Default)]
struct Inode {
    /// What reads see.
    current: Vec<u8>,
    /// What survives a power cut.
    durable: Vec<u8>,
    modified: Option<SystemTime>,
    /// Bumped by every completed sync, so that a sync completing after a later one does not
    /// take the durable image back.
    syncs: u64,
}

struct State {
    inodes: HashMap<InodeId, Inode>,
    next_inode: InodeId,
    /// The directory tree as the running code sees it.
    entries: BTreeMap<PathBuf, Entry>,
    /// The tree as it would be found after a power cut.
    durable_entries: BTreeMap<PathBuf, Entry>,
    /// Operations left before the disk dies; `None`: it does not.
    operations_left: Option<u64>,
    /// While holding: the submitted fsyncs, each completing when its sender fires.
    held_syncs: Option<Vec<oneshot::Sender<()>>>,
    /// Asynchronous fsyncs submitted so far.
    syncs_submitted: u64,
    fail_syncs: bool,
    /// While holding: the submitted asynchronous writes, each completing when its sender fires.
    held_writes: Option<Vec<oneshot::Sender<()>>>,
    /// Asynchronous writes submitted so far.
    writes_submitted: u64,
    fail_writes: bool,
    /// Holds blocking syncs, opens or renames while set.
    blocking_calls: Arc<Gate>,
    /// How many times each path was opened.
    opens: HashMap<PathBuf, usize>,
}

/// Which blocking calls a [`Gate`] holds.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Call {
    Sync,
    Open,
    Rename,
    Truncate,
}

/// A gate at which blocking calls of one kind on some files wait while it is closed.
#[derive(Default)]
struct Gate {
    /// While closed, the calls held and the text in the paths of their files; how many wait.
    state: Mutex<(Option<(Call, String)>, usize)>,
    opened: std::sync::Condvar,
}

impl Gate {
    fn pass(&self, path: &Path, call: Call) {
        let held = |closed: &Option<(Call, String)>| {
            closed.as_ref().is_some_and(|(held, text)| *held == call && path.to_string_lossy().contains(text))
        };
        let mut state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if !held(&state.0) {
            return;
        }
        state.1 += 1;
        while held(&state.0) {
            state = self.opened.wait(state).unwrap_or_else(|poisoned| poisoned.into_inner());
        }
        state.1 -= 1;
    }

    fn set(&self, closed: Option<(Call, String)>) {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).0 = closed;
        self.opened.notify_all();
    }

    fn waiting(&self) -> usize {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).1
    }
}

/// The simulated disk. Share it as `Arc<SimDisk>` (and as `Arc<dyn FileSystem>`).
pub struct SimDisk {
    state: Arc<Mutex<State>>,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn dead() -> io::Error {
    io::Error::other("simulated power loss: the disk is gone")
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("{} not found", path.display()))
}

impl State {
    /// Counts one operation against the failure point.
    fn operate(&mut self) -> io::Result<()> {
        match &mut self.operations_left {
            Some(0) => Err(dead()),
            Some(n) => {
                *n -= 1;
                Ok(())
            }
            None => Ok(()),
        }
    }

    fn parent_is_dir(&self, path: &Path) -> bool {
        path.parent().is_some_and(|p| {
            p.as_os_str().is_empty() || p == Path::new("/") || self.entries.get(p) == Some(&Entry::Dir)
        })
    }
}

impl SimDisk {
    pub fn new() -> Arc<SimDisk> {
        let state = State {
            inodes: HashMap::new(),
            next_inode: 1,
            entries: BTreeMap::new(),
            durable_entries: BTreeMap::new(),
            operations_left: None,
            held_syncs: None,
            syncs_submitted: 0,
            fail_syncs: false,
            blocking_calls: Arc::default(),
            opens: HashMap::new(),
            held_writes: None,
            writes_submitted: 0,
            fail_writes: false,
        };
        Arc::new(SimDisk { state: Arc::new(Mutex::new(state)) })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// From now on, fsyncs submitted do not complete until [`SimDisk::release_syncs`].
    pub fn hold_syncs(&self) {
        self.state().held_syncs.get_or_insert_with(Vec::new);
    }

    /// Completes the fsyncs held so far (they stay held from now on too); returns how many.
    pub fn release_syncs(&self) -> usize {
        let held = self.state().held_syncs.as_mut().map(std::mem::take).unwrap_or_default();
        let count = held.len();
        for sync in held {
            let _ = sync.send(());
        }
        count
    }

    /// Fsyncs submitted and held, not yet released.
    pub fn held_syncs(&self) -> usize {
        self.state().held_syncs.as_ref().map_or(0, Vec::len)
    }

    /// Asynchronous fsyncs submitted so far.
    pub fn syncs_submitted(&self) -> u64 {
        self.state().syncs_submitted
    }

    /// From now on, blocking syncs ([`FileHandle::sync_data`]) of files whose path contains
    /// `text` wait until [`SimDisk::release_blocking_calls`]; only helper threads may make them
    /// then.
    pub fn hold_blocking_syncs(&self, text: &str) {
        self.state().blocking_calls.set(Some((Call::Sync, text.to_string())));
    }

    /// The same for opens.
    pub fn hold_opens(&self, text: &str) {
        self.state().blocking_calls.set(Some((Call::Open, text.to_string())));
    }

    /// The same for truncations (`set_len`, of files whose path holds `text`).
    pub fn hold_truncates(&self, text: &str) {
        self.state().blocking_calls.set(Some((Call::Truncate, text.to_string())));
    }

    /// The same for renames (of entries whose old path holds `text`).
    pub fn hold_renames(&self, text: &str) {
        self.state().blocking_calls.set(Some((Call::Rename, text.to_string())));
    }

    /// How many times `path` was opened.
    pub fn opens(&self, path: &Path) -> usize {
        self.state().opens.get(path).copied().unwrap_or(0)
    }

    /// Lets the blocking calls held go on, and those made later.
    pub fn release_blocking_calls(&self) {
        self.state().blocking_calls.set(None);
    }

    /// Blocking calls waiting to be released.
    pub fn blocked_calls(&self) -> usize {
        self.state().blocking_calls.waiting()
    }

    /// Makes every fsync from now on fail with EIO (`false`: succeed again).
    pub fn fail_syncs(&self, fail: bool) {
        self.state().fail_syncs = fail;
    }

    /// From now on, asynchronous writes submitted do not complete until
    /// [`SimDisk::release_writes`].
    pub fn hold_writes(&self) {
        self.state().held_writes.get_or_insert_with(Vec::new);
    }

    /// Completes the asynchronous writes held so far (they stay held from now on too);
    /// returns how many.
    pub fn release_writes(&self) -> usize {
        let held = self.state().held_writes.as_mut().map(std::mem::take).unwrap_or_default();
        let count = held.len();
        for write in held {
            let _ = write.send(());
        }
        count
    }

    /// Asynchronous writes submitted and held, not yet released.
    pub fn held_writes(&self) -> usize {
        self.state().held_writes.as_ref().map_or(0, Vec::len)
    }

    /// Asynchronous writes submitted so far.
    pub fn writes_submitted(&self) -> u64 {
        self.state().writes_submitted
    }

    /// Makes every asynchronous write from now on write half its bytes and fail with EIO
    /// (`false`: succeed again).
    pub fn fail_writes(&self, fail: bool) {
        self.state().fail_writes = fail;
    }

    /// From the `n`th operation on (0: the next one), every call fails.
    pub fn fail_after(&self, n: u64) {
        self.state().operations_left = Some(n);
    }

    /// Loses power: unsynced data is dropped or torn by `seed`, unsynced directory entries are
    /// lost, and the disk works again (as after a reboot). Handles opened before must not be
    /// used any more.
    pub fn power_cut(&self, seed: u64) {
        let mut rng = Rng::new(seed);
        let mut state = self.state();
        state.operations_left = None;
        // Entries whose parent directory did not survive went with it.
        let mut entries = state.durable_entries.clone();
        loop {
            let orphans: Vec<PathBuf> = entries
                .keys()
                .filter(|path| {
                    path.parent().is_some_and(|p| {
                        !(p.as_os_str().is_empty() || p == Path::new("/") || entries.get(p) == Some(&Entry::Dir))
                    })
                })
                .cloned()
                .collect();
            if orphans.is_empty() {
                break;
            }
            for orphan in orphans {
                entries.remove(&orphan);
            }
        }
        let reachable: std::collections::HashSet<InodeId> = entries
            .values()
            .filter_map(|e| match e {
                Entry::File(id) => Some(*id),
                Entry::Dir => None,
            })
            .collect();
        state.inodes.retain(|id, _| reachable.contains(id));
        let mut ids: Vec<InodeId> = state.inodes.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            let inode = state.inodes.get_mut(&id).expect("listed");
            let torn = tear(&inode.durable, &inode.current, &mut rng);
            inode.durable = torn.clone();
            inode.current = torn;
        }
        state.entries = entries.clone();
        state.durable_entries = entries;
    }
}

/// What a file holds after a power cut, given what was durable and what was written since.
fn tear(durable: &[u8], current: &[u8], rng: &mut Rng) -> Vec<u8> {
    if durable == current {
        return current.to_vec();
    }
    // The length: the old one, the new one, or a page boundary in between.
    let (low, high) = (durable.len().min(current.len()), durable.len().max(current.len()));
    let mut lengths = vec![durable.len(), current.len()];
    lengths.extend((low / PAGE + 1..).map(|page| page * PAGE).take_while(|&at| at < high));
    let length = lengths[rng.below(0, lengths.len() as u64) as usize];
    let mut out = vec![0u8; length];
    for start in (0..length).step_by(PAGE) {
        let end = (start + PAGE).min(length);
        let source = if rng.coin() { current } else { durable };
        if source.len() > start {
            let available = source.len().min(end);
            out[start..available].copy_from_slice(&source[start..available]);
        }
    }
    out
}

impl FileSystem for SimDisk {
    fn open_to_send(&self, path: &Path, mode: Open) -> io::Result<Opened> {
        let gate = self.state().blocking_calls.clone();
        gate.pass(path, Call::Open);
        let mut state = self.state();
        state.operate()?;
        let id = match (state.entries.get(path).copied(), mode) {
            (Some(Entry::Dir), _) => return Err(io::Error::new(io::ErrorKind::IsADirectory, "is a directory")),
            (Some(Entry::File(id)), Open::Truncate) => {
                let inode = state.inodes.get_mut(&id).expect("entries name live inodes");
                inode.current.clear();
                inode.modified = Some(SystemTime::now());
                id
            }
            (Some(Entry::File(id)), _) => id,
            (None, Open::Existing) => return Err(not_found(path)),
            (None, Open::Create | Open::Truncate) => {
                if !state.parent_is_dir(path) {
                    return Err(not_found(path));
                }
                let id = state.next_inode;
                state.next_inode += 1;
                state.inodes.insert(id, Inode { modified: Some(SystemTime::now()), ..Inode::default() });
                state.entries.insert(path.to_path_buf(), Entry::File(id));
                id
            }
        };
        *state.opens.entry(path.to_path_buf()).or_default() += 1;
        let file = SimFile { state: self.state.clone(), id, path: path.to_path_buf() };
        Ok(Opened::new(move || Box::new(file)))
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let mut state = self.state();
        state.operate()?;
        match state.entries.get(path) {
            Some(Entry::File(id)) => Ok(state.inodes[id].current.clone()),
            Some(Entry::Dir) => Err(io::Error::new(io::ErrorKind::IsADirectory, "is a directory")),
            None => Err(not_found(path)),
        }
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut state = self.state();
        state.operate()?;
        for ancestor in path.ancestors().collect::<Vec<_>>().into_iter().rev() {
            if ancestor.as_os_str().is_empty() || ancestor == Path::new("/") {
                continue;
            }
            match state.entries.get(ancestor) {
                Some(Entry::Dir) => {}
                Some(Entry::File(_)) => return Err(io::Error::new(io::ErrorKind::NotADirectory, "not a directory")),
                None => {
                    state.entries.insert(ancestor.to_path_buf(), Entry::Dir);
                }
            }
        }
        Ok(())
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let mut state = self.state();
        state.operate()?;
        if state.entries.get(path) != Some(&Entry::Dir) {
            return Err(not_found(path));
        }
        Ok(state
            .entries
            .keys()
            .filter(|p| p.parent() == Some(path))
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let gate = self.state().blocking_calls.clone();
        gate.pass(from, Call::Rename);
        let mut state = self.state();
        state.operate()?;
        if !state.entries.contains_key(from) {
            return Err(not_found(from));
        }
        if !state.parent_is_dir(to) {
            return Err(not_found(to));
        }
        // A directory moves with everything under it.
        let moved: Vec<PathBuf> = state.entries.keys().filter(|p| p.starts_with(from)).cloned().collect();
        for path in moved {
            let entry = state.entries.remove(&path).expect("listed");
            let under = path.strip_prefix(from).expect("listed under it");
            state.entries.insert(if under.as_os_str().is_empty() { to.to_path_buf() } else { to.join(under) }, entry);
        }
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut state = self.state();
        state.operate()?;
        match state.entries.get(path) {
            Some(Entry::File(_)) => {
                state.entries.remove(path);
                Ok(())
            }
            Some(Entry::Dir) => Err(io::Error::new(io::ErrorKind::IsADirectory, "is a directory")),
            None => Err(not_found(path)),
        }
    }

    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut state = self.state();
        state.operate()?;
        if state.entries.get(path) != Some(&Entry::Dir) {
            return Err(not_found(path));
        }
        state.entries.retain(|p, _| !p.starts_with(path));
        Ok(())
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        let mut state = self.state();
        state.operate()?;
        if state.entries.get(path) != Some(&Entry::Dir) && path != Path::new("/") {
            return Err(not_found(path));
        }
        let current: Vec<(PathBuf, Entry)> =
            state.entries.iter().filter(|(p, _)| p.parent() == Some(path)).map(|(p, e)| (p.clone(), *e)).collect();
        state.durable_entries.retain(|p, _| p.parent() != Some(path));
        state.durable_entries.extend(current);
        Ok(())
    }
}

struct SimFile {
    state: Arc<Mutex<State>>,
    id: InodeId,
    /// The path it was opened by.
    path: PathBuf,
}

impl SimFile {
    /// The inode, after counting the operation.
    fn with<T>(&self, f: impl FnOnce(&mut Inode) -> io::Result<T>) -> io::Result<T> {
        let mut state = lock(&self.state);
        state.operate()?;
        let inode = state.inodes.get_mut(&self.id).ok_or_else(dead)?;
        f(inode)
    }
}

impl FileHandle for SimFile {
    fn len(&self) -> io::Result<u64> {
        self.with(|inode| Ok(inode.current.len() as u64))
    }

    fn read_exact_at(&self, buf: &mut [u8], position: u64) -> io::Result<()> {
        self.with(|inode| {
            let start = position as usize;
            let end = start + buf.len();
            if end > inode.current.len() {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            buf.copy_from_slice(&inode.current[start..end]);
            Ok(())
        })
    }

    /// The simulated disk has no page cache: everything is in memory.
    fn read_cached_at(&self, buf: &mut [u8], position: u64) -> io::Result<()> {
        self.read_exact_at(buf, position)
    }

    fn load(&self, _position: u64, _len: usize) -> IoFuture {
        Box::pin(std::future::ready(Ok(())))
    }

    fn write_vectored_at(&self, slices: &[IoSlice<'_>], position: u64) -> io::Result<usize> {
        self.with(|inode| {
            let mut at = position as usize;
            for slice in slices {
                if inode.current.len() < at + slice.len() {
                    inode.current.resize(at + slice.len(), 0);
                }
                inode.current[at..at + slice.len()].copy_from_slice(slice);
                at += slice.len();
            }
            inode.modified = Some(SystemTime::now());
            Ok(at - position as usize)
        })
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let gate = lock(&self.state).blocking_calls.clone();
        gate.pass(&self.path, Call::Truncate);
        self.with(|inode| {
            inode.current.resize(len as usize, 0);
            Ok(())
        })
    }

    fn truncate(&self, len: u64) -> IoFuture {
        // As the real one, on the blocking pool: a test can hold it there.
        let file = SimFile { state: self.state.clone(), id: self.id, path: self.path.clone() };
        Box::pin(crate::runtime::file::run_blocking(move || file.set_len(len)))
    }

    fn sync_data(&self) -> io::Result<()> {
        let gate = lock(&self.state).blocking_calls.clone();
        gate.pass(&self.path, Call::Sync);
        self.with(|inode| {
            inode.durable = inode.current.clone();
            inode.syncs += 1;
            Ok(())
        })
    }

    fn write_at(&self, pieces: Vec<Bytes>, position: u64) -> IoFuture {
        let bytes = pieces.concat();
        let (fail, gate) = {
            let mut state = lock(&self.state);
            state.writes_submitted += 1;
            let gate = state.held_writes.as_mut().map(|held| {
                let (release, wait) = oneshot::channel();
                held.push(release);
                wait
            });
            (state.fail_writes, gate)
        };
        let written = if fail {
            self.write_vectored_at(&[IoSlice::new(&bytes[..bytes.len() / 2])], position)
                .and(Err(io::Error::from_raw_os_error(libc::EIO)))
        } else {
            self.write_vectored_at(&[IoSlice::new(&bytes)], position).map(|_| ())
        };
        Box::pin(async move {
            if let Some(gate) = gate {
                gate.await.map_err(|_| dead())?;
            }
            written
        })
    }

    fn fdatasync(&self) -> IoFuture {
        // What the sync covers is decided when it is submitted; it becomes durable when the
        // sync completes.
        let submitted = (|| {
            let mut state = lock(&self.state);
            state.operate()?;
            if state.fail_syncs {
                return Err(io::Error::from_raw_os_error(libc::EIO));
            }
            state.syncs_submitted += 1;
            let inode = state.inodes.get(&self.id).ok_or_else(dead)?;
            let covered = (inode.current.clone(), inode.syncs);
            let gate = state.held_syncs.as_mut().map(|held| {
                let (release, wait) = oneshot::channel();
                held.push(release);
                wait
            });
            Ok((covered, gate))
        })();
        let state = self.state.clone();
        let id = self.id;
        Box::pin(async move {
            let ((image, syncs_before), gate) = submitted?;
            if let Some(gate) = gate {
                gate.await.map_err(|_| dead())?;
            }
            let mut state = lock(&state);
            let inode = state.inodes.get_mut(&id).ok_or_else(dead)?;
            if inode.syncs == syncs_before {
                inode.durable = image;
                inode.syncs += 1;
            }
            Ok(())
        })
    }

    fn modified(&self) -> io::Result<SystemTime> {
        self.with(|inode| Ok(inode.modified.unwrap_or(SystemTime::UNIX_EPOCH)))
    }

    fn into_opened(self: Box<Self>) -> Opened {
        Opened::new(move || self)
    }

    fn os_file(&self) -> io::Result<std::fs::File> {
        Err(io::Error::new(io::ErrorKind::Unsupported, "the simulated disk has no descriptors; read by copy"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(fs: &SimDisk, path: &str, bytes: &[u8], sync: bool) {
        let file = fs.open(Path::new(path), Open::Create).unwrap();
        let len = file.len().unwrap();
        file.write_vectored_at(&[IoSlice::new(bytes)], len).unwrap();
        if sync {
            file.sync_data().unwrap();
        }
    }

    #[test]
    fn synced_data_and_entries_survive_and_the_rest_may_not() {
        for seed in 0..50 {
            let disk = SimDisk::new();
            disk.create_dir_all(Path::new("/d")).unwrap();
            disk.sync_dir(Path::new("/")).unwrap();
            write(&disk, "/d/a", &[1; 10_000], true);
            disk.sync_dir(Path::new("/d")).unwrap();
            write(&disk, "/d/a", &[2; 10_000], false);
            write(&disk, "/d/b", &[3; 100], true);
            disk.power_cut(seed);
            let a = disk.read(Path::new("/d/a")).unwrap();
            assert!(a.len() >= 10_000 && a.len() <= 20_000, "{}", a.len());
            assert_eq!(&a[..10_000], &[1; 10_000][..], "synced bytes survive");
            // Past the synced end: unsynced bytes, or zeros where their page was lost.
            assert!(a[10_000..].iter().all(|&b| b == 0 || b == 2));
            assert!(disk.read(Path::new("/d/b")).is_err(), "an entry never synced is lost");
        }
    }

    #[test]
    fn a_dead_disk_fails_every_call() {
        let disk = SimDisk::new();
        disk.create_dir_all(Path::new("/d")).unwrap();
        disk.fail_after(1);
        let file = disk.open(Path::new("/d/a"), Open::Create).unwrap();
        assert!(file.write_vectored_at(&[IoSlice::new(b"x")], 0).is_err());
        assert!(disk.list_dir(Path::new("/d")).is_err());
        disk.power_cut(0);
        assert!(disk.list_dir(Path::new("/d")).is_err(), "/d was never synced into its parent");
        disk.create_dir_all(Path::new("/d")).unwrap();
    }
}
