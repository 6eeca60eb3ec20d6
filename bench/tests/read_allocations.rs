//! What `Cache::get` allocates of its own over a backend that does not
//! answer at once (Redis, or any awaited backend): one box, the rest of
//! the read (its future is three words, so that a read the backend
//! answers at once moves no large state; see `Cache::get`). No key: the
//! full key it renders goes with the awaited read and comes back to the
//! thread for the next one. Alone in its binary: it counts this thread's allocations with
//! a global allocator (here, in the bench crate, where `unsafe_code` is
//! `deny` rather than `forbid`).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::Arc;

use cache_core::{Cache, CacheBackend, CacheKey};
use cache_memory::MemoryBackend;
use cache_testkit::{FaultConfig, FaultInjecting};

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: every call is forwarded to `System` unchanged; the count is a
// thread-local `Cell` with a const initializer (it allocates nothing).
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        // SAFETY: the caller's contract is `System`'s.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

/// The allocations this thread makes in `reads` runs of `read`.
fn allocations_of(reads: u64, mut read: impl FnMut()) -> u64 {
    let before = ALLOCATIONS.with(Cell::get);
    for _ in 0..reads {
        read();
    }
    ALLOCATIONS.with(Cell::get) - before
}

#[test]
fn a_read_of_an_awaited_backend_allocates_one_box_beyond_the_backends_own_read() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // Never answers now: every read is awaited.
    let backend = Arc::new(FaultInjecting::new(
        MemoryBackend::new(),
        FaultConfig::none(),
    ));
    let cache = Cache::new(Arc::clone(&backend) as Arc<dyn CacheBackend>);
    let key = CacheKey::new("user", 42).unwrap();
    rt.block_on(cache.set(&key, &7_u64)).unwrap();
    // Warm: the generation is known and the thread has its key buffer.
    for _ in 0..2 {
        assert_eq!(rt.block_on(cache.get::<u64>(&key)).unwrap(), Some(7));
    }

    // The awaited read's own allocations: the two boxed futures of
    // `FaultInjecting::get` and the `MemoryBackend::get` it awaits
    // (`async_trait`); the cache's: the box of the rest of its read.
    // Nothing more: no full key, no buffer.
    let by_cache = allocations_of(100, || {
        assert_eq!(rt.block_on(cache.get::<u64>(&key)).unwrap(), Some(7));
    });
    assert_eq!(by_cache, (2 + 1) * 100);
}
