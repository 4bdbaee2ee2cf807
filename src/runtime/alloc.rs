//! The process allocator: the system allocator, except that very large requests get lazily
//! backed memory.
//!
//! Why: `kafka-protocol` sizes a vector from the element count a request claims before
//! reading the elements (`Vec::with_capacity(n)`). A hostile or broken frame can claim two
//! billion elements; the system allocator then fails and the process aborts, taking every
//! connection down. Here such a request gets an address range reserved with `MAP_NORESERVE`:
//! nothing is committed until touched, the decoder fails at the end of the (bounded) frame,
//! and the range is unmapped. No legitimate allocation of the broker comes near the threshold
//! (frames are capped by `socket.request.max.bytes`).

use std::alloc::{GlobalAlloc, Layout, System};

/// Below this, glibc serves allocations from its heaps rather than from a mapping of their own.
const MMAP_THRESHOLD_BYTES: i32 = 32 << 20;
/// How much free memory at the top of a heap glibc keeps rather than giving it back.
const TRIM_THRESHOLD_BYTES: i32 = 256 << 20;

/// Makes glibc keep the memory of freed request frames for the next ones. A produce request's
/// frame (up to a MiB or more) lives until its batches are written, so frames are freed in
/// another order than they were allocated; with glibc's defaults the heap's top is then
/// trimmed and regrown, and every regrown page faults and is zeroed again: up to 200,000
/// faults per GB produced, about half the broker's CPU for page-cache produce. Fixed
/// thresholds (instead of glibc's moving ones) keep those pages mapped, at most
/// `TRIM_THRESHOLD_BYTES` of free memory per heap.
pub fn keep_freed_memory() {
    // SAFETY: mallopt only sets allocator parameters, under glibc's own lock.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES);
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES);
    }
}

/// Allocations at or above this size are mapped lazily.
const LAZY_THRESHOLD_BYTES: usize = 1 << 30;
const PAGE_BYTES: usize = 4096;

pub struct BrokerAllocator;

fn is_lazy(layout: &Layout) -> bool {
    layout.size() >= LAZY_THRESHOLD_BYTES && layout.align() <= PAGE_BYTES
}

// SAFETY: every pointer handed out is either from `System` (and returned to it) or from a
// private anonymous mapping of exactly `layout.size()` bytes (and unmapped with that size);
// `is_lazy` depends only on the layout, so both paths pair up.
unsafe impl GlobalAlloc for BrokerAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !is_lazy(&layout) {
            // SAFETY: forwarded unchanged.
            return unsafe { System.alloc(layout) };
        }
        // SAFETY: an anonymous private mapping touches no existing memory.
        let pointer = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                layout.size(),
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if pointer == libc::MAP_FAILED { std::ptr::null_mut() } else { pointer.cast() }
    }

    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        if is_lazy(&layout) {
            // SAFETY: `pointer` came from the mmap above with this very size.
            unsafe { libc::munmap(pointer.cast(), layout.size()) };
        } else {
            // SAFETY: `pointer` came from `System.alloc` with this layout.
            unsafe { System.dealloc(pointer, layout) };
        }
    }
}

#[cfg(test)]
mod tests {
    /// Minor page faults of the calling thread so far.
    fn thread_faults() -> i64 {
        // SAFETY: getrusage writes the one struct it is given.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        assert_eq!(unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) }, 0);
        usage.ru_minflt
    }

    #[test]
    fn freed_frames_are_reused_without_faulting_their_pages_again() {
        super::keep_freed_memory();
        // On a thread of its own: its own glibc arena, its own fault count.
        std::thread::spawn(|| {
            // What produce requests do: frames of a MiB, written (touched), then freed.
            let frames = || drop((0..8).map(|_| vec![1u8; 1 << 20]).collect::<Vec<_>>());
            frames();
            let before = thread_faults();
            for _ in 0..16 {
                frames();
            }
            let faults = thread_faults() - before;
            // One round touches 2,048 pages; with glibc's defaults every round faults them all again.
            assert!(faults < 512, "{faults} page faults in 16 rounds of reused frames");
        })
        .join()
        .unwrap();
    }

    #[test]
    fn an_absurd_capacity_does_not_abort() {
        // What kafka-protocol does with a claimed count of i32::MAX elements.
        let v: Vec<[u8; 64]> = Vec::with_capacity(i32::MAX as usize);
        assert!(v.capacity() >= i32::MAX as usize);
    }
}
