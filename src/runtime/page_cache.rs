//! Whether a file range is in the page cache, asked without touching it: a fetch sends a
//! cached range with sendfile, but sendfile of pages that are not cached reads them from the
//! disk synchronously, stalling the whole shard, so such a range is read through the shard's
//! io_uring instead (`zero_copy`).
//!
//! Two probes. [`present`] asks `cachestat(2)` (Linux 6.5), which counts a range's pages in
//! the cache without faulting anything in, in under a microsecond for 256 KiB; it counts pages
//! whose read from the disk is still in flight (readahead) as cached. [`up_to_date`] maps the
//! range and asks `mincore(2)`, which counts only pages whose data is there, for a few
//! microseconds more (about 10 for 256 KiB). Where `cachestat` is missing (an older kernel, a
//! seccomp filter that refuses it) [`present`] asks `mincore` too. Either answer is a
//! snapshot: a page evicted right after the probe makes sendfile read it synchronously, which
//! costs time, never a wrong byte.
//!
//! [`read_cached`] reads only what is cached (`preadv2` with `RWF_NOWAIT`), for the small
//! reads a partition's owner makes on the fetch path (batch headers): the storage layer loads
//! what it does not find through io_uring and tries again.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, Ordering};

/// How much of a range is in the page cache, in pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Residency {
    /// Pages of the range that are cached (dirty ones included: they are in memory).
    pub cached_pages: u64,
    /// Pages the range touches, the partial first and last ones included.
    pub pages: u64,
}

impl Residency {
    /// Whether every page of the range is cached, so that reading it cannot block.
    pub fn is_whole(&self) -> bool {
        self.cached_pages >= self.pages
    }
}

/// `cachestat`'s number, the same on every architecture (it came after the syscall tables
/// were unified); the `libc` crate does not name it for x86-64.
const SYS_CACHESTAT: libc::c_long = 451;

#[repr(C)]
struct CachestatRange {
    offset: u64,
    len: u64,
}

#[repr(C)]
#[derive(Default)]
struct Cachestat {
    cached: u64,
    dirty: u64,
    writeback: u64,
    evicted: u64,
    recently_evicted: u64,
}

/// Set once `cachestat` was refused as unknown or not permitted: ask `mincore` from then on.
static CACHESTAT_MISSING: AtomicBool = AtomicBool::new(false);

fn page_bytes() -> u64 {
    static PAGE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *PAGE.get_or_init(|| match nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE) {
        Ok(Some(bytes)) if bytes > 0 => bytes as u64,
        _ => 4096,
    })
}

/// How much of `len` bytes of `file` from `position` is in the page cache, counting pages
/// still being read in. `len` must not be zero.
pub fn present(file: BorrowedFd<'_>, position: u64, len: u64) -> io::Result<Residency> {
    let pages = pages(position, len);
    if !CACHESTAT_MISSING.load(Ordering::Relaxed) {
        match cachestat(file, position, len) {
            Ok(cached_pages) => return Ok(Residency { cached_pages, pages }),
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOSYS | libc::EPERM)) => {
                CACHESTAT_MISSING.store(true, Ordering::Relaxed);
            }
            Err(e) => return Err(e),
        }
    }
    up_to_date(file, position, len)
}

/// How much of `len` bytes of `file` from `position` is in the page cache with its data read
/// (a page still being read in does not count). `len` must not be zero.
pub fn up_to_date(file: BorrowedFd<'_>, position: u64, len: u64) -> io::Result<Residency> {
    let pages = pages(position, len);
    Ok(Residency { cached_pages: mincore(file, position, len)?, pages })
}

/// The pages that `len` bytes from `position` touch.
fn pages(position: u64, len: u64) -> u64 {
    assert!(len > 0, "a probe covers at least one byte");
    let page = page_bytes();
    (position + len - 1) / page - position / page + 1
}

/// Reads into `buf` the bytes of `file` from `position` that are in the page cache, without
/// waiting for the disk: returns how many, fewer than asked where a page is not cached (or at
/// the end of the file), or an error of kind `WouldBlock` when the first page is not. A file
/// system that cannot tell (`EOPNOTSUPP`) is read normally.
pub fn read_cached(file: BorrowedFd<'_>, buf: &mut [u8], position: u64) -> io::Result<usize> {
    let offset = libc::off_t::try_from(position).map_err(|_| io::ErrorKind::InvalidInput)?;
    let vector = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    loop {
        // SAFETY: one iovec over `buf`, which is writable for its length and outlives the call.
        let read = unsafe { libc::preadv2(file.as_raw_fd(), &vector, 1, offset, libc::RWF_NOWAIT) };
        if read >= 0 {
            return Ok(read as usize);
        }
        let error = io::Error::last_os_error();
        match error.raw_os_error() {
            Some(libc::EINTR) => {}
            Some(libc::EAGAIN) => return Err(io::ErrorKind::WouldBlock.into()),
            Some(libc::EOPNOTSUPP) => return nix::sys::uio::pread(file, buf, offset).map_err(io::Error::from),
            _ => return Err(error),
        }
    }
}

fn cachestat(file: BorrowedFd<'_>, position: u64, len: u64) -> io::Result<u64> {
    let range = CachestatRange { offset: position, len };
    let mut stat = Cachestat::default();
    // SAFETY: both structs are laid out as the kernel's `cachestat_range` and `cachestat`
    // and outlive the call; the descriptor is open for its duration.
    let rc = unsafe {
        libc::syscall(SYS_CACHESTAT, file.as_raw_fd(), &range as *const CachestatRange, &mut stat as *mut Cachestat, 0)
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(stat.cached)
}

fn mincore(file: BorrowedFd<'_>, position: u64, len: u64) -> io::Result<u64> {
    let page = page_bytes();
    let start = position / page * page;
    let map_len = usize::try_from(position + len - start).map_err(|_| io::ErrorKind::InvalidInput)?;
    let offset = libc::off_t::try_from(start).map_err(|_| io::ErrorKind::InvalidInput)?;
    // SAFETY: a fresh read-only shared mapping of the file that nothing dereferences; it is
    // unmapped below. Mapping faults nothing in.
    let address = unsafe {
        libc::mmap(std::ptr::null_mut(), map_len, libc::PROT_READ, libc::MAP_SHARED, file.as_raw_fd(), offset)
    };
    if address == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    let mut resident = vec![0u8; map_len.div_ceil(page as usize)];
    // SAFETY: `address` is a page-aligned mapping of `map_len` bytes and `resident` holds one
    // byte per page of it.
    let rc = unsafe { libc::mincore(address, map_len, resident.as_mut_ptr()) };
    let error = io::Error::last_os_error();
    // SAFETY: the mapping made above, not used after this.
    unsafe { libc::munmap(address, map_len) };
    if rc != 0 {
        return Err(error);
    }
    Ok(resident.iter().filter(|&&state| state & 1 != 0).count() as u64)
}

/// Test helper: writes `len` bytes of `file` from `position` back to the disk (only clean
/// pages can be dropped), then drops them from the page cache (`len` 0: to the end).
#[cfg(test)]
pub fn evict(file: &std::fs::File, position: u64, len: u64) {
    use nix::fcntl::{PosixFadviseAdvice, posix_fadvise};
    file.sync_data().unwrap();
    posix_fadvise(file.as_raw_fd(), position as i64, len as i64, PosixFadviseAdvice::POSIX_FADV_DONTNEED).unwrap();
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::os::fd::AsFd;

    use super::*;

    /// A file of `len` bytes, written and synced (pages that are clean can be evicted). It is
    /// written a page at a time: a file system with large folios caches one large write as one
    /// folio, which the kernel evicts only whole.
    fn synced_file(len: usize) -> (tempfile::TempDir, std::fs::File) {
        let dir = tempfile::tempdir().unwrap();
        let mut file =
            std::fs::OpenOptions::new().read(true).write(true).create_new(true).open(dir.path().join("f")).unwrap();
        for _ in 0..len.div_ceil(page_bytes() as usize) {
            file.write_all(&vec![7u8; page_bytes() as usize]).unwrap();
        }
        file.sync_all().unwrap();
        (dir, file)
    }

    fn both_probes(file: &std::fs::File, position: u64, len: u64) -> [Residency; 2] {
        [present(file.as_fd(), position, len).unwrap(), up_to_date(file.as_fd(), position, len).unwrap()]
    }

    #[test]
    fn a_half_evicted_file_is_cached_in_its_first_half_only() {
        const HALF: u64 = 512 * 1024;
        let (_dir, file) = synced_file(2 * HALF as usize);
        evict(&file, HALF, HALF);
        let page = page_bytes();
        for probe in both_probes(&file, 0, HALF) {
            assert!(probe.is_whole(), "first half cached: {probe:?}");
            assert_eq!(probe.pages, HALF / page);
        }
        for probe in both_probes(&file, HALF, HALF) {
            assert_eq!(probe.cached_pages, 0, "second half evicted: {probe:?}");
            assert!(!probe.is_whole());
        }
        // A range straddling the two, starting and ending mid-page: counted by the pages it
        // touches.
        for probe in both_probes(&file, HALF - 100, 2 * page) {
            assert_eq!(probe.pages, 3, "{probe:?}");
            assert_eq!(probe.cached_pages, 1, "{probe:?}");
            assert!(!probe.is_whole());
        }
        // Reads from the cache only: up to the evicted half, and nothing of it.
        let mut buffer = vec![0u8; 2 * page as usize];
        assert_eq!(read_cached(file.as_fd(), &mut buffer, HALF - page).unwrap(), page as usize);
        let error = read_cached(file.as_fd(), &mut buffer, HALF).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::WouldBlock);
        // Reading the evicted half brings it back.
        let mut buffer = vec![0u8; HALF as usize];
        std::os::unix::fs::FileExt::read_exact_at(&file, &mut buffer, HALF).unwrap();
        for probe in both_probes(&file, 0, 2 * HALF) {
            assert!(probe.is_whole(), "{probe:?}");
        }
        assert_eq!(read_cached(file.as_fd(), &mut buffer, HALF).unwrap(), buffer.len());
    }
}
