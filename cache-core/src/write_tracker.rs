//! Write tracking: which keys have writes in flight, and whether a write
//! began since a read, per stripe of keys.
//!
//! `Tiered` uses it so a copy into L1 never contradicts L2; `Cache` uses it
//! so a `get_or_set` load never overwrites a value written after the load
//! started.
//!
//! Why (in `Tiered`): a read that copies an L2 value into L1 can race a write of the same
//! key (read old value from L2, write lands in L2 and L1, read puts the old
//! value into L1), and two writes can land in L2 in one order and in L1 in
//! the other. Either would leave an L1 copy that contradicts L2 until it
//! expires. So writes are counted per stripe of keys:
//!
//! - every write drops the L1 copy first, then calls L2, then (set) copies;
//! - a read only copies into L1 if no write of its stripe was in flight when
//!   it asked L2 and none began before its copy landed, else the copy is
//!   dropped again;
//! - a write that overlapped another write of its stripe drops its L1 copy
//!   when it ends: of two overlapping writes both drop after their own L1
//!   work, so the last L1 operation on the key is a drop.
//!
//! Deletes (delete, expire, incr, patterns) only drop copies, so they never
//! need the last step, but they are counted so that reads and writes that
//! overlap them notice. Stripes only cost precision: unrelated keys that
//! share a stripe occasionally cost an L1 copy, never correctness.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};

/// Stripes of the tracker; at most 64 so a set of stripes fits a `u64`.
const STRIPES: usize = 64;
/// A stripe's word: writes in flight in the low 32 bits, writes begun (the
/// epoch, wrapping) in the high 32 bits.
const IN_FLIGHT: u64 = (1 << 32) - 1;
const BEGUN: u64 = 1 << 32;

pub(crate) struct WriteTracker {
    stripes: [AtomicU64; STRIPES],
    hasher: RandomState,
}

/// A stripe's word as a read saw it, with no write in flight.
#[derive(Clone, Copy)]
pub(crate) struct Snapshot {
    stripe: usize,
    word: u64,
}

/// A write in flight; ends (in flight count decremented) when finished or
/// dropped, so an abandoned call does not leave the stripe busy.
pub(crate) struct Write<'a> {
    tracker: &'a WriteTracker,
    /// The stripes written, each with the epoch this write gave it.
    stripes: Vec<(usize, u32)>,
    /// No other write was in flight on these stripes when this one began.
    pub(crate) alone: bool,
}

impl WriteTracker {
    pub(crate) fn new() -> Self {
        WriteTracker {
            stripes: std::array::from_fn(|_| AtomicU64::new(0)),
            hasher: RandomState::new(),
        }
    }

    pub(crate) fn stripe(&self, key: &str) -> usize {
        (self.hasher.hash_one(key) % STRIPES as u64) as usize
    }

    pub(crate) fn begin_keys(&self, keys: &[&str]) -> Write<'_> {
        let mask = keys
            .iter()
            .fold(0u64, |mask, key| mask | 1 << self.stripe(key));
        self.begin(mask)
    }

    pub(crate) fn begin_all(&self) -> Write<'_> {
        self.begin(u64::MAX)
    }

    pub(crate) fn begin(&self, mask: u64) -> Write<'_> {
        let mut write = Write {
            tracker: self,
            stripes: Vec::with_capacity(mask.count_ones() as usize),
            alone: true,
        };
        for stripe in (0..STRIPES).filter(|i| mask & (1 << i) != 0) {
            let before = self.stripes[stripe].fetch_add(BEGUN + 1, SeqCst);
            write.alone &= before & IN_FLIGHT == 0;
            write
                .stripes
                .push((stripe, ((before >> 32) as u32).wrapping_add(1)));
        }
        write
    }

    /// The word of `key`'s stripe, or `None` while a write of it is in
    /// flight (then the value read must not be copied into L1).
    pub(crate) fn snapshot(&self, key: &str) -> Option<Snapshot> {
        let stripe = self.stripe(key);
        let word = self.stripes[stripe].load(SeqCst);
        (word & IN_FLIGHT == 0).then_some(Snapshot { stripe, word })
    }

    /// No write of the snapshot's stripe began since it was taken.
    pub(crate) fn unchanged(&self, snapshot: Snapshot) -> bool {
        self.stripes[snapshot.stripe].load(SeqCst) == snapshot.word
    }
}

impl Write<'_> {
    /// Ends the write; true when no other write overlapped it.
    pub(crate) fn finish(mut self) -> bool {
        let mut alone = self.alone;
        for (stripe, epoch) in self.stripes.drain(..) {
            let word = self.tracker.stripes[stripe].fetch_sub(1, SeqCst);
            alone &= (word >> 32) as u32 == epoch;
        }
        alone
    }
}

impl Drop for Write<'_> {
    fn drop(&mut self) {
        for (stripe, _) in self.stripes.drain(..) {
            self.tracker.stripes[stripe].fetch_sub(1, SeqCst);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlapping_writes_are_not_alone() {
        let tracker = WriteTracker::new();
        let a = tracker.begin_keys(&["k"]);
        let b = tracker.begin_keys(&["k"]);
        assert!(!b.alone);
        assert!(!a.finish(), "a saw b begin");
        assert!(!b.finish(), "b began while a was in flight");
        assert!(tracker.begin_keys(&["k"]).finish(), "a lone write");
    }

    #[test]
    fn snapshots_see_writes_and_dropped_writes_end() {
        let tracker = WriteTracker::new();
        let snapshot = tracker.snapshot("k").expect("no write in flight");
        let write = tracker.begin_all();
        assert!(tracker.snapshot("k").is_none(), "a write is in flight");
        drop(write);
        assert!(tracker.snapshot("k").is_some(), "a dropped write ends");
        assert!(
            !tracker.unchanged(snapshot),
            "a write began after the snapshot"
        );
    }
}
