//! Files on the shard's own io_uring: what storage needs from glommio's file API, so that
//! writes and fsyncs of the data path never block a shard's thread.
//!
//! A [`RingFile`] wraps a duplicate of a plain file's descriptor in a glommio `BufferedFile`:
//! writes (and the reads of fetched ranges that are not cached, `zero_copy`) go through the page cache (so fetches keep their zero-copy sendfile path) and, like
//! fdatasync, are submitted to the ring of the executor the file was first used on. The kernel
//! completes them in its own workers; the shard serves other requests meanwhile.
//!
//! Invariant: a `RingFile` is used only on the executor (shard) that created it; the futures it
//! returns own everything they need (`'static`), so a caller holds no borrow across them.

use std::future::Future;
use std::io;
use std::os::fd::{AsFd, FromRawFd, IntoRawFd};
use std::rc::Rc;

use glommio::io::BufferedFile;

/// io_uring buffer memory of a one-off executor ([`block_on`]).
const ONE_OFF_IO_MEMORY_BYTES: usize = 64 * 1024;

/// A file whose writes and syncs are submitted to this shard's io_uring.
#[derive(Clone)]
pub struct RingFile(Rc<BufferedFile>);

impl RingFile {
    /// A ring file on a duplicate of `file`'s descriptor (the caller keeps its own for reads
    /// and sendfile). Must be called on a shard's executor.
    pub fn new(file: &std::fs::File) -> io::Result<RingFile> {
        let duplicate = file.as_fd().try_clone_to_owned()?;
        // SAFETY: the descriptor was just duplicated and is owned by nothing else; the
        // BufferedFile takes it over and closes it when dropped.
        Ok(RingFile(Rc::new(unsafe { BufferedFile::from_raw_fd(duplicate.into_raw_fd()) })))
    }

    /// Writes all of `bytes` at `position` through the page cache. The buffer moves to the
    /// kernel and does not come back, so a short write (only a disk filling up under it makes
    /// one on a regular file) is an error: the caller cuts the file back, as for any failure.
    pub fn write_all_at(&self, bytes: Vec<u8>, position: u64) -> impl Future<Output = io::Result<()>> + 'static {
        let file = self.0.clone();
        async move {
            let len = bytes.len();
            let written = file.write_at(bytes, position).await.map_err(io_error)?;
            if written < len {
                return Err(io::Error::new(
                    io::ErrorKind::StorageFull,
                    format!("short write: {written} of {len} bytes at {position}"),
                ));
            }
            Ok(())
        }
    }

    /// Reads up to `len` bytes at `position` (fewer at the end of the file; none past it)
    /// through the page cache, into a buffer of glommio's: a page that is not cached is read
    /// from the disk while the shard serves other work.
    pub fn read_at(&self, position: u64, len: usize) -> impl Future<Output = io::Result<ReadBytes>> + 'static {
        let file = self.0.clone();
        async move { file.read_at(position, len).await.map(ReadBytes).map_err(io_error) }
    }

    /// fdatasync: makes the data written so far (and the length) durable.
    pub fn fdatasync(&self) -> impl Future<Output = io::Result<()>> + 'static {
        let file = self.0.clone();
        async move { file.fdatasync().await.map_err(io_error) }
    }
}

/// Bytes read by [`RingFile::read_at`].
pub struct ReadBytes(glommio::io::ReadResult);

impl std::ops::Deref for ReadBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.0
    }
}

/// glommio's error, as the `io::Error` it carries (keeping the OS error code, ENOSPC or EIO).
fn io_error(error: glommio::GlommioError<()>) -> io::Error {
    match error {
        glommio::GlommioError::IoError(e) => e,
        glommio::GlommioError::EnhancedIoError { source, .. } => source,
        other => other.into(),
    }
}

/// Threads of each executor's blocking pool (unpinned, so that long work there competes with
/// no shard in particular).
pub const BLOCKING_THREADS: usize = 3;

/// Long work ([`run_long`]) running at once on one executor's pool: a thread is always left for
/// short work, so that no roll or DeleteRecords waits behind a compaction.
const LONG_WORK_MAX: u64 = BLOCKING_THREADS as u64 - 1;

thread_local! {
    /// Permits for long work on this thread's executor.
    static LONG_WORK: std::rc::Rc<glommio::sync::Semaphore> =
        std::rc::Rc::new(glommio::sync::Semaphore::new(LONG_WORK_MAX));
}

/// Runs `work` on a helper thread of this shard's executor (glommio's blocking pool) and
/// waits for it without blocking the shard: for file-system calls io_uring cannot take
/// (directory fsync, open, unlink) and other short work.
pub async fn run_blocking<R: Send + 'static>(work: impl FnOnce() -> R + Send + 'static) -> R {
    glommio::executor().spawn_blocking(work).await
}

/// [`run_blocking`] for work that may take long (compaction, recovery): at most
/// `BLOCKING_THREADS - 1` at a time per shard, the rest waiting their turn.
pub async fn run_long<R: Send + 'static>(work: impl FnOnce() -> R + Send + 'static) -> R {
    let permits = LONG_WORK.with(std::rc::Rc::clone);
    let _turn = permits.acquire_permit(1).await.expect("the semaphore is never closed");
    run_blocking(work).await
}

/// An executor on this thread for code that drives storage outside a shard (tests, tools,
/// fuzz targets): each [`Driver::block_on`] runs a future to completion on it. Files first
/// written or synced under one driver stay on its ring, so a caller that keeps storage open
/// across calls keeps one driver for as long, and drops the files before it.
pub struct Driver(glommio::LocalExecutor);

impl Driver {
    pub fn new() -> Driver {
        let executor = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .blocking_thread_pool_placement(glommio::PoolPlacement::Unbound(BLOCKING_THREADS))
            .io_memory(ONE_OFF_IO_MEMORY_BYTES)
            .make()
            .expect("starting an executor");
        Driver(executor)
    }

    pub fn block_on<T>(&self, future: impl Future<Output = T>) -> T {
        self.0.run(async {
            // A shard's periodic tasks wake its reactor often; this executor has only the
            // future, so it ticks, lest a wake-up glommio loses (see `tick_while_connecting`)
            // leave it asleep for ever.
            let _ticker = super::tick_while_connecting();
            future.await
        })
    }
}

impl Default for Driver {
    fn default() -> Driver {
        Driver::new()
    }
}

/// Runs `future` to completion on a one-off [`Driver`].
pub fn block_on<T>(future: impl Future<Output = T>) -> T {
    Driver::new().block_on(future)
}
