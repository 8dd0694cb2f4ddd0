//! The global allocator of a wasm32 policy: a bump arena in the module's
//! static memory, falling back to the standard allocator when it is full.
//!
//! A fresh instance then answers a hook without `memory.grow`, which is what
//! makes a clean instance per evaluation cheap (see `ABI.md`, "Performance").
//! The arena is rewound whenever no allocation in it is live, which happens
//! between two hook calls unless a policy keeps heap data in a static. A
//! hook's decoded input is freed in bulk ([`free_in_bulk`]), its blocks
//! counted rather than each freed by a call into the allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::{Cell, UnsafeCell};

const ARENA_BYTES: usize = 128 * 1024;

/// The counters come first: a hook call then writes the page they share
/// with the arena's first bytes, not one more page after the arena, and a
/// fresh instance has one page fewer to reset after it.
#[repr(C, align(16))]
struct Arena {
    /// Offset of the first free byte.
    next: Cell<usize>,
    /// Allocations in the arena not yet freed.
    live: Cell<usize>,
    /// Allocations made outside the arena, by `System`, ever.
    outside: Cell<usize>,
    bytes: UnsafeCell<[u8; ARENA_BYTES]>,
}

// SAFETY: wasm32-unknown-unknown without the atomics feature has one thread.
unsafe impl Sync for Arena {}

#[global_allocator]
static ARENA: Arena = Arena {
    next: Cell::new(0),
    live: Cell::new(0),
    outside: Cell::new(0),
    bytes: UnsafeCell::new([0; ARENA_BYTES]),
};

/// Allocates from the global allocator, the arena, directly: through
/// `std::alloc::alloc` every allocation also costs the module a call into
/// the allocator shim.
///
/// # Safety
///
/// As [`GlobalAlloc::alloc`].
#[inline(always)]
pub(crate) unsafe fn alloc(layout: Layout) -> *mut u8 {
    // SAFETY: forwarded with the caller's guarantees.
    unsafe { ARENA.alloc(layout) }
}

/// The arena's counts at one moment, to tell what was allocated after it.
#[derive(Clone, Copy)]
pub(crate) struct Mark {
    live: usize,
    outside: usize,
}

impl Mark {
    #[inline(always)]
    pub(crate) fn now() -> Mark {
        Mark {
            live: ARENA.live.get(),
            outside: ARENA.outside.get(),
        }
    }

    /// How many more arena blocks are live than at this mark: the blocks
    /// allocated since and still live, when nothing older was freed in
    /// between. `None` when an allocation since came from outside the arena.
    #[inline(always)]
    pub(crate) fn live_blocks_since(self) -> Option<usize> {
        let now = Mark::now();
        (now.outside == self.outside)
            .then(|| now.live.checked_sub(self.live))
            .flatten()
    }
}

/// Frees `value` in bulk instead of dropping it: its `blocks` arena blocks
/// are counted as freed, so the arena rewinds once nothing else is live,
/// and no destructor runs. Dropping a decoded envelope costs a module a
/// call into the allocator for every string in it.
///
/// # Safety
///
/// `blocks` must be exactly the number of live heap blocks `value` owns,
/// all in the arena, and `value` must own nothing but memory: no file,
/// lock or other resource whose destructor matters.
#[inline(always)]
pub(crate) unsafe fn free_in_bulk<T>(value: T, blocks: usize) {
    std::mem::forget(value);
    // More blocks than are live would be a miscount; then the arena keeps
    // its count and does not rewind, which wastes it but overwrites nothing.
    if let Some(live) = ARENA.live.get().checked_sub(blocks) {
        ARENA.live.set(live);
        if live == 0 {
            ARENA.next.set(0);
        }
    }
}

impl Arena {
    #[inline(always)]
    fn base(&self) -> usize {
        self.bytes.get() as usize
    }

    #[inline(always)]
    fn contains(&self, ptr: *mut u8) -> bool {
        (self.base()..self.base() + ARENA_BYTES).contains(&(ptr as usize))
    }
}

// Inlined into the allocator shims: a call costs a policy module more than
// the bump itself.
unsafe impl GlobalAlloc for Arena {
    #[inline(always)]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // A layout's alignment is a power of two: rounding up is a mask,
        // where `next_multiple_of` would divide (`i32.rem_u`) on every
        // allocation.
        let mask = layout.align() - 1;
        let start = (self.base() + self.next.get() + mask) & !mask;
        let end = start + layout.size();
        if end <= self.base() + ARENA_BYTES {
            self.next.set(end - self.base());
            self.live.set(self.live.get() + 1);
            start as *mut u8
        } else {
            self.outside.set(self.outside.get() + 1);
            // SAFETY: forwarded with the caller's guarantees.
            unsafe { System.alloc(layout) }
        }
    }

    #[inline(always)]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if !self.contains(ptr) {
            // SAFETY: not in the arena, so it came from `System`.
            return unsafe { System.dealloc(ptr, layout) };
        }
        let live = self.live.get() - 1;
        self.live.set(live);
        if live == 0 {
            self.next.set(0);
        } else if ptr as usize + layout.size() == self.base() + self.next.get() {
            self.next.set(ptr as usize - self.base());
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let is_last = ptr as usize + layout.size() == self.base() + self.next.get();
        if self.contains(ptr) && is_last && ptr as usize + new_size <= self.base() + ARENA_BYTES {
            self.next.set(ptr as usize + new_size - self.base());
            return ptr;
        }
        // SAFETY: the caller's guarantees hold for a fresh allocation.
        let Ok(new_layout) = Layout::from_size_align(new_size, layout.align()) else {
            return std::ptr::null_mut();
        };
        let new = unsafe { self.alloc(new_layout) };
        if !new.is_null() {
            // SAFETY: both blocks are valid for the smaller of the two sizes
            // and do not overlap.
            unsafe {
                std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
        }
        new
    }
}
