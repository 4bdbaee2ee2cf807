//! Files on the shard's own io_uring: what storage needs from glommio's file API, so that
//! writes and fsyncs of the data path never block a shard's thread.
//!
//! A [`RingFile`] wraps a duplicate of a plain file's descriptor in a glommio `BufferedFile`:
//! writes (vectored, straight from the callers' `Bytes`: our glommio patch, see
//! `vendor/glommio/PATCHES.md`; and the reads of fetched ranges that are not cached, `zero_copy`) go through the page cache (so fetches keep their zero-copy sendfile path) and, like
//! fdatasync, are submitted to the ring of the executor the file was first used on. The kernel
//! completes them in its own workers; the shard serves other requests meanwhile.
//!
//! Invariant: a `RingFile` is used only on the executor (shard) that created it; the futures it
//! returns own everything they need (`'static`), so a caller holds no borrow across them.

use std::future::Future;
use std::io;
use std::os::fd::{AsFd, FromRawFd, IntoRawFd};
use std::rc::Rc;

use bytes::Bytes;

use glommio::io::BufferedFile;

/// The most buffers one vectored write takes (the kernel's `UIO_MAXIOV`).
pub const IOVECS_PER_WRITE: usize = 1024;

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

    /// Writes all of `pieces`, one after the other, at `position` through the page cache, with
    /// vectored writes (at most [`IOVECS_PER_WRITE`] pieces each) straight from the pieces'
    /// memory: no copy. The pieces move to the kernel and are dropped once it is done with
    /// them, so a short write (only a disk filling up under it makes one on a regular file)
    /// is an error: the caller cuts the file back, as for any failure.
    pub fn write_all_at(
        &self,
        mut pieces: Vec<Bytes>,
        position: u64,
    ) -> impl Future<Output = io::Result<()>> + 'static {
        let file = self.0.clone();
        async move {
            let mut at = position;
            while !pieces.is_empty() {
                let rest = pieces.split_off(pieces.len().min(IOVECS_PER_WRITE));
                let len: usize = pieces.iter().map(Bytes::len).sum();
                let written = file.write_vectored_at(pieces, at).await.map_err(io_error)?;
                if written < len {
                    return Err(io::Error::new(
                        io::ErrorKind::StorageFull,
                        format!("short write: {written} of {len} bytes at {at}"),
                    ));
                }
                at += len as u64;
                pieces = rest;
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

    /// Cuts the file to `len` bytes without blocking the shard: submitted to the ring
    /// (IORING_OP_FTRUNCATE, our glommio patch) where the kernel takes it (Linux 6.9 and
    /// later, probed once), so that it never waits behind long work holding the blocking pool;
    /// on older kernels glommio hands the ftruncate to that pool.
    pub fn truncate(&self, len: u64) -> impl Future<Output = io::Result<()>> + 'static {
        let file = self.0.clone();
        async move { file.truncate(len).await.map_err(io_error) }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Pieces of every size, more than one vectored write takes.
    fn pieces() -> Vec<Bytes> {
        (0..IOVECS_PER_WRITE * 2 + 7).map(|i| Bytes::from(vec![(i % 251) as u8; i % 13])).collect()
    }

    #[test]
    fn a_vectored_write_lands_every_piece_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let file = std::fs::File::create_new(&path).unwrap();
        block_on(async {
            let ring = RingFile::new(&file).unwrap();
            ring.write_all_at(vec![Bytes::from_static(b"head")], 0).await.unwrap();
            ring.write_all_at(pieces(), 4).await.unwrap();
        });
        let mut expected = b"head".to_vec();
        expected.extend(pieces().concat());
        assert_eq!(std::fs::read(&path).unwrap(), expected);
    }

    /// A failed write is cut back with this before the partition writes again: it must not
    /// wait behind long work (compaction, recovery) holding every thread of the blocking pool.
    #[test]
    fn a_truncate_does_not_wait_for_the_blocking_pool() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, [7u8; 100]).unwrap();
        let file = std::fs::File::options().read(true).write(true).open(&path).unwrap();
        let in_time = block_on(async {
            let ring = RingFile::new(&file).unwrap();
            let busy = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let mut release = Vec::new();
            for _ in 0..BLOCKING_THREADS {
                let (tell, wait) = std::sync::mpsc::channel::<()>();
                let busy = busy.clone();
                release.push(tell);
                glommio::spawn_local(run_blocking(move || {
                    busy.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let _ = wait.recv();
                }))
                .detach();
            }
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            while busy.load(std::sync::atomic::Ordering::SeqCst) < BLOCKING_THREADS {
                assert!(std::time::Instant::now() < deadline, "the blocking pool never got busy");
                glommio::timer::sleep(std::time::Duration::from_millis(1)).await;
            }
            let timeout = glommio::timer::sleep(std::time::Duration::from_secs(5));
            let outcome = match futures::future::select(Box::pin(ring.truncate(10)), Box::pin(timeout)).await {
                futures::future::Either::Left((truncated, _)) => Ok(truncated),
                futures::future::Either::Right((_, truncate)) => Err(truncate),
            };
            drop(release);
            match outcome {
                Ok(truncated) => Some(truncated),
                // Done once the pool is free, before the executor goes.
                Err(truncate) => {
                    let _ = truncate.await;
                    None
                }
            }
        });
        in_time.expect("the truncate waited for the blocking pool").unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 10);
    }

    #[test]
    fn a_write_dropped_in_flight_keeps_its_pieces_until_the_kernel_is_done() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let file = std::fs::File::create_new(&path).unwrap();
        // Below malloc's mmap threshold, so that freed memory is reused at once.
        let len = 64 * 1024;
        block_on(async {
            let ring = RingFile::new(&file).unwrap();
            for _ in 0..32 {
                // Submitted, then dropped: the kernel may still be copying from the piece,
                // which the reactor keeps until the completion arrives. Memory freed early
                // would be taken by the allocations meanwhile, and their bytes would land.
                let mut write = Box::pin(ring.write_all_at(vec![Bytes::from(vec![1u8; len])], 0));
                assert!(futures::FutureExt::now_or_never(&mut write).is_none());
                let reuse: Vec<Vec<u8>> = (0..8).map(|_| vec![2u8; len]).collect();
                // One turn of the reactor, which submits the write.
                glommio::timer::sleep(std::time::Duration::from_micros(1)).await;
                drop(write);
                let reuse_after: Vec<Vec<u8>> = (0..8).map(|_| vec![3u8; len]).collect();
                std::hint::black_box((reuse, reuse_after));
            }
            ring.fdatasync().await.unwrap();
        });
        let written = std::fs::read(&path).unwrap();
        assert!(written.iter().all(|&b| b == 1), "only the written piece's bytes reached the file");
    }
}
