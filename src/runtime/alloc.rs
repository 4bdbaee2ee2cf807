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
    #[test]
    fn an_absurd_capacity_does_not_abort() {
        // What kafka-protocol does with a claimed count of i32::MAX elements.
        let v: Vec<[u8; 64]> = Vec::with_capacity(i32::MAX as usize);
        assert!(v.capacity() >= i32::MAX as usize);
    }
}
