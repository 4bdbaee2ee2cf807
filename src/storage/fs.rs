//! The storage layer's one door to the file system: every open, write, sync, truncate,
//! rename, directory listing and removal that logs, segments and indexes do goes through a
//! [`FileSystem`] and the [`FileHandle`]s it opens.
//!
//! [`Os`] is the real one: positional reads and writes through the page cache, fdatasync,
//! directory fsync. Tests put a simulated disk behind the same seam (`simulated`), which keeps
//! written-but-unsynced data apart and can lose or tear it in a power cut.
//!
//! The data path's operations, [`FileHandle::write_at`], [`FileHandle::fdatasync`] and
//! [`FileHandle::truncate`] (cutting a failed write back off), are asynchronous: on the real file system they are submitted to the shard's io_uring
//! (`runtime::file`), so a write or an fsync never blocks the shard; the simulated disk
//! completes writes at once and can hold fsyncs back (to test that nothing is acknowledged
//! before the fsync covering it). The futures own what they need, so callers hold no borrow
//! across them. The other operations are synchronous and serve cold paths (open, recovery,
//! index files, small metadata files).
//!
//! Work on a helper thread (compaction, a DeleteRecords' offset file) reaches the directory
//! through [`Claimed`], under its log's [`DirClaim`], so that it never touches a directory that
//! a deleted partition left and a topic created again may have taken.
//!
//! Cost on the hot path: one dynamic call per write or sync; the write takes the request's own
//! `Bytes` (a vectored write, no copy), beside small owned pieces (stamped batch headers).
//!
//! Durability contract that callers rely on (and the simulated disk enforces): data written
//! to a file is durable only once the file is synced; a new, renamed or removed directory
//! entry only once its directory is synced.

use std::cell::OnceCell;
use std::io::{self, IoSlice};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use bytes::Bytes;
use futures::future::LocalBoxFuture;

use crate::runtime::file::RingFile;

#[cfg(test)]
pub mod simulated;

/// How [`FileSystem::open`] treats the file at the path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Open {
    /// It must exist.
    Existing,
    /// Created empty when missing, kept as it is otherwise.
    Create,
    /// Created or emptied.
    Truncate,
}

/// The directory-level operations. Paths are absolute or relative to the process's working
/// directory, as with `std::fs`.
pub trait FileSystem: Send + Sync {
    /// Opens a file for reading and writing.
    fn open(&self, path: &Path, mode: Open) -> io::Result<Box<dyn FileHandle>> {
        self.open_to_send(path, mode).map(Opened::into_handle)
    }
    /// Opens a file on a helper thread for a shard to use ([`Opened::into_handle`]), so that
    /// the shard makes no open call.
    fn open_to_send(&self, path: &Path, mode: Open) -> io::Result<Opened>;
    /// The whole content of a (small) file.
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// Creates `path` and any missing parents.
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    /// The names of the entries of a directory.
    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>>;
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    fn remove_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Makes the entries of directory `path` (creations, renames, removals) durable.
    fn sync_dir(&self, path: &Path) -> io::Result<()>;
}

/// A file opened on one thread, to become a [`FileHandle`] on the shard that uses it (a
/// handle is tied to its shard's io_uring once used, so it cannot cross threads itself).
pub struct Opened(Box<dyn FnOnce() -> Box<dyn FileHandle> + Send>);

impl Opened {
    pub fn new(handle: impl FnOnce() -> Box<dyn FileHandle> + Send + 'static) -> Opened {
        Opened(Box::new(handle))
    }

    pub fn into_handle(self) -> Box<dyn FileHandle> {
        (self.0)()
    }
}

/// An operation in flight on a file; it owns what it needs.
pub type IoFuture = LocalBoxFuture<'static, io::Result<()>>;

/// An open file. Used only on the shard that opened it.
// `len` pairs with `set_len` as on `std::fs::File`: a file is no collection, and nothing asks
// whether one is empty (that would be a second system call).
#[allow(clippy::len_without_is_empty)]
pub trait FileHandle {
    fn len(&self) -> io::Result<u64>;
    fn read_exact_at(&self, buf: &mut [u8], position: u64) -> io::Result<()>;
    /// Like `read_exact_at`, but only from the page cache, never waiting for the disk: fails
    /// with `ErrorKind::WouldBlock` when some of the bytes are not cached.
    fn read_cached_at(&self, buf: &mut [u8], position: u64) -> io::Result<()>;
    /// Reads `len` bytes at `position` into the page cache without blocking the shard (through
    /// its io_uring), for a `read_cached_at` that found them missing.
    fn load(&self, position: u64, len: usize) -> IoFuture;
    /// Writes from `slices` at `position`; may write fewer bytes than given (like pwritev).
    fn write_vectored_at(&self, slices: &[IoSlice<'_>], position: u64) -> io::Result<usize>;
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Cuts (or extends) the file to `len` bytes without blocking the shard.
    fn truncate(&self, len: u64) -> IoFuture;
    /// Makes the data and the length durable (fdatasync), blocking: for cold paths.
    fn sync_data(&self) -> io::Result<()>;
    /// Writes all of `pieces`, one after the other, at `position` without blocking the shard
    /// and without copying them (they are kept until the write completes). Fails as a whole
    /// (the file may then hold part of it: the caller cuts it back).
    fn write_at(&self, pieces: Vec<Bytes>, position: u64) -> IoFuture;
    /// fdatasync without blocking the shard: covers every write completed before it was
    /// submitted.
    fn fdatasync(&self) -> IoFuture;
    /// When the file was last written.
    fn modified(&self) -> io::Result<SystemTime>;
    /// The handle as an [`Opened`] file, for another thread (a helper's handle handed to the
    /// shard): the file stays open.
    fn into_opened(self: Box<Self>) -> Opened;
    /// A descriptor of the same file, for sending it with sendfile; only the real file system
    /// has one.
    fn os_file(&self) -> io::Result<std::fs::File>;
}

/// Writes `bytes` as the whole content of `path` durably and atomically: a temporary file,
/// synced, renamed over `path`, and the directory synced. A crash leaves the old or the new
/// content, never a mix or an empty file.
pub fn replace(fs: &dyn FileSystem, path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = Path::new(&tmp);
    let write = || -> io::Result<()> {
        let file = fs.open(tmp, Open::Truncate)?;
        write_all_at(&*file, &mut [IoSlice::new(bytes)], 0)?;
        file.sync_data()
    };
    if let Err(e) = write() {
        // Gives the space back on a full disk.
        let _ = fs.remove_file(tmp);
        return Err(e);
    }
    fs.rename(tmp, path)?;
    fs.sync_dir(path.parent().unwrap_or(Path::new(".")))
}

/// Whether a log's directory is still its own, for work on a helper thread: released when the
/// partition is deleted (its directory is renamed away, and a topic created again may take the
/// name) or closed. A release waits for a directory operation in progress under the claim, and
/// none starts after it, so a helper never creates, renames or removes an entry in a directory
/// that is no longer its log's.
#[derive(Clone, Default)]
pub struct DirClaim(Arc<Mutex<bool>>);

impl DirClaim {
    /// From now on, operations under the claim fail; returns once none is in progress.
    pub fn release(&self) {
        *self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = true;
    }

    /// Fails if the claim was released: for long work to stop between steps.
    pub fn check(&self) -> io::Result<()> {
        self.under(|| Ok(()))
    }

    /// Runs `op` unless the claim was released, holding it meanwhile (the release waits).
    fn under<R>(&self, op: impl FnOnce() -> io::Result<R>) -> io::Result<R> {
        let released = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if *released {
            return Err(io::Error::other("the log's directory was released (partition deleted or closed)"));
        }
        op()
    }
}

/// A file system whose directory operations run under a [`DirClaim`]: what a helper thread
/// works through. Operations on files already open are not guarded (they never touch a
/// directory entry).
pub struct Claimed {
    pub fs: Arc<dyn FileSystem>,
    pub claim: DirClaim,
}

impl FileSystem for Claimed {
    fn open_to_send(&self, path: &Path, mode: Open) -> io::Result<Opened> {
        self.claim.under(|| self.fs.open_to_send(path, mode))
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        self.claim.under(|| self.fs.read(path))
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        self.claim.under(|| self.fs.create_dir_all(path))
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        self.claim.under(|| self.fs.list_dir(path))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.claim.under(|| self.fs.rename(from, to))
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.claim.under(|| self.fs.remove_file(path))
    }

    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        self.claim.under(|| self.fs.remove_dir_all(path))
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        // Syncing a directory changes no entry, whoever it belongs to now: it need not make a
        // release wait for a disk flush.
        self.claim.check()?;
        self.fs.sync_dir(path)
    }
}

/// Writes every byte of `slices` at `position`, however many calls it takes.
pub fn write_all_at(file: &dyn FileHandle, mut slices: &mut [IoSlice<'_>], mut position: u64) -> io::Result<()> {
    let mut remaining: usize = slices.iter().map(|s| s.len()).sum();
    while remaining > 0 {
        let written = file.write_vectored_at(slices, position)?;
        if written == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        position += written as u64;
        remaining -= written;
        IoSlice::advance_slices(&mut slices, written);
    }
    Ok(())
}

/// The operating system's file system.
pub struct Os;

/// The real file system, shared.
pub fn os() -> Arc<dyn FileSystem> {
    Arc::new(Os)
}

impl FileSystem for Os {
    fn open_to_send(&self, path: &Path, mode: Open) -> io::Result<Opened> {
        let mut options = std::fs::OpenOptions::new();
        options.read(true).write(true);
        match mode {
            Open::Existing => {}
            Open::Create => {
                options.create(true);
            }
            Open::Truncate => {
                options.create(true).truncate(true);
            }
        }
        let file = options.open(path)?;
        Ok(Opened::new(move || Box::new(OsFile { file, ring: OnceCell::new() })))
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        std::fs::read(path)
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir_all(path)
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        std::fs::read_dir(path)?.map(|entry| Ok(entry?.file_name().to_string_lossy().into_owned())).collect()
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_dir_all(path)
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        std::fs::File::open(path)?.sync_all()
    }
}

struct OsFile {
    file: std::fs::File,
    /// The same file on the shard's io_uring, made at its first write, sync or load.
    ring: OnceCell<RingFile>,
}

impl OsFile {
    fn ring(&self) -> io::Result<&RingFile> {
        if let Some(ring) = self.ring.get() {
            return Ok(ring);
        }
        let ring = RingFile::new(&self.file)?;
        Ok(self.ring.get_or_init(|| ring))
    }
}

impl FileHandle for OsFile {
    fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn read_exact_at(&self, buf: &mut [u8], position: u64) -> io::Result<()> {
        std::os::unix::fs::FileExt::read_exact_at(&self.file, buf, position)
    }

    fn read_cached_at(&self, mut buf: &mut [u8], mut position: u64) -> io::Result<()> {
        use std::os::fd::AsFd;
        while !buf.is_empty() {
            match crate::runtime::page_cache::read_cached(self.file.as_fd(), buf, position)? {
                0 => return Err(io::ErrorKind::UnexpectedEof.into()),
                read => {
                    buf = &mut buf[read..];
                    position += read as u64;
                }
            }
        }
        Ok(())
    }

    fn load(&self, position: u64, len: usize) -> IoFuture {
        match self.ring() {
            Ok(ring) => {
                let read = ring.read_at(position, len);
                Box::pin(async move { read.await.map(drop) })
            }
            Err(e) => Box::pin(std::future::ready(Err(e))),
        }
    }

    fn write_vectored_at(&self, slices: &[IoSlice<'_>], position: u64) -> io::Result<usize> {
        use std::os::fd::AsFd;
        nix::sys::uio::pwritev(self.file.as_fd(), slices, position as i64).map_err(io::Error::from)
    }

    fn write_at(&self, pieces: Vec<Bytes>, position: u64) -> IoFuture {
        match self.ring() {
            Ok(ring) => Box::pin(ring.write_all_at(pieces, position)),
            Err(e) => Box::pin(std::future::ready(Err(e))),
        }
    }

    fn fdatasync(&self) -> IoFuture {
        match self.ring() {
            Ok(ring) => Box::pin(ring.fdatasync()),
            Err(e) => Box::pin(std::future::ready(Err(e))),
        }
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }

    fn truncate(&self, len: u64) -> IoFuture {
        match self.ring() {
            Ok(ring) => Box::pin(ring.truncate(len)),
            Err(e) => Box::pin(std::future::ready(Err(e))),
        }
    }

    fn sync_data(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn modified(&self) -> io::Result<SystemTime> {
        self.file.metadata()?.modified()
    }

    fn into_opened(self: Box<Self>) -> Opened {
        // The ring file, if any, stays here (it belongs to this thread's ring); the shard
        // that takes the file makes its own.
        let OsFile { file, .. } = *self;
        Opened::new(move || Box::new(OsFile { file, ring: OnceCell::new() }))
    }

    fn os_file(&self) -> io::Result<std::fs::File> {
        self.file.try_clone()
    }
}
