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
//! - a write that overlapped another write of its key drops its L1 copy
//!   when it ends: of two overlapping writes both drop after their own L1
//!   work, so the last L1 operation on the key is a drop.
//!
//! Deletes (delete, expire, incr, patterns) only drop copies, so they never
//! need the last step, but they are counted so that reads and writes that
//! overlap them notice. Stripes only cost precision: unrelated keys that
//! share a stripe occasionally cost an L1 copy, never correctness.
//!
//! Not occasionally when L2 hangs: every write then lasts the whole
//! deadline, dozens are in flight at once and nearly every one shares a
//! stripe with another key's write. A fail-open L2 skips each, so its L1
//! copy is the only copy left (the stale value fail-safe serves), and
//! dropping it for its stripe's sake cost the rates bot a currency's
//! answers through a whole upstream outage. So for the last step `Tiered`'s
//! tracker is [exact](WriteTracker::exact): a write was overlapped by a
//! write of one of its own keys (or of every key), not of its stripes.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{Mutex, MutexGuard, PoisonError};

/// Stripes of the tracker; at most 64 so a set of stripes fits a `u64`.
const STRIPES: usize = 64;
/// A stripe's word: writes in flight in the low 32 bits, writes begun (the
/// epoch, wrapping) in the high 32 bits.
const IN_FLIGHT: u64 = (1 << 32) - 1;
const BEGUN: u64 = 1 << 32;

pub(crate) struct WriteTracker {
    stripes: [AtomicU64; STRIPES],
    hasher: RandomState,
    /// With [`WriteTracker::exact`]: what [`Write::finish`] judges by.
    exact: Option<Exact>,
}

/// The writes in flight by key, so that a write is told apart from another
/// key's that only shares its stripe.
struct Exact {
    /// Each key with writes in flight, and its word (laid out as a
    /// stripe's); removed when its last write ends.
    keys: Mutex<HashMap<Box<str>, u64>>,
    /// The writes of every key (`begin_all`), laid out as a stripe's word.
    all: AtomicU64,
}

impl Exact {
    fn keys(&self) -> MutexGuard<'_, HashMap<Box<str>, u64>> {
        self.keys.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// What an exact tracker knows of a write in flight.
enum Exactly {
    /// A write of these keys, each with the epoch this write gave it; it
    /// saw the writes of every key at epoch `all`.
    Keys {
        keys: Vec<(Box<str>, u32)>,
        all: u32,
    },
    /// A write of every key.
    All,
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
    /// With an exact tracker, the keys written.
    exactly: Option<Exactly>,
    /// No other write was in flight on these stripes (with an exact
    /// tracker: of these keys, or of every key) when this one began.
    pub(crate) alone: bool,
}

impl WriteTracker {
    pub(crate) fn new() -> Self {
        WriteTracker {
            stripes: std::array::from_fn(|_| AtomicU64::new(0)),
            hasher: RandomState::new(),
            exact: None,
        }
    }

    /// A tracker whose [`Write::finish`] answers whether a write of the
    /// same key (or of every key) overlapped, not just one of the same
    /// stripe. Each write of a key costs a lock and a map entry; snapshots
    /// stay per stripe.
    pub(crate) fn exact() -> Self {
        WriteTracker {
            exact: Some(Exact {
                keys: Mutex::new(HashMap::new()),
                all: AtomicU64::new(0),
            }),
            ..WriteTracker::new()
        }
    }

    pub(crate) fn stripe(&self, key: &str) -> usize {
        (self.hasher.hash_one(key) % STRIPES as u64) as usize
    }

    pub(crate) fn begin_keys(&self, keys: &[&str]) -> Write<'_> {
        let mask = keys
            .iter()
            .fold(0u64, |mask, key| mask | 1 << self.stripe(key));
        let mut write = self.begin(mask);
        if let Some(exact) = &self.exact {
            // After the stripes: a write of every key beginning meanwhile
            // sees this one on them, and this one sees its epoch change.
            let all = exact.all.load(SeqCst);
            let mut alone = all & IN_FLIGHT == 0;
            let distinct: HashSet<&str> = keys.iter().copied().collect();
            let mut written = Vec::with_capacity(distinct.len());
            let mut words = exact.keys();
            for key in distinct {
                let word = words.entry(key.into()).or_insert(0);
                let before = *word;
                *word += BEGUN + 1;
                alone &= before & IN_FLIGHT == 0;
                written.push((key.into(), ((before >> 32) as u32).wrapping_add(1)));
            }
            write.alone = alone;
            write.exactly = Some(Exactly::Keys {
                keys: written,
                all: (all >> 32) as u32,
            });
        }
        write
    }

    pub(crate) fn begin_all(&self) -> Write<'_> {
        let mut write = self.begin(u64::MAX);
        if let Some(exact) = &self.exact {
            // Every stripe tells it whether anything overlapped; the
            // writes of keys learn of it here.
            exact.all.fetch_add(BEGUN + 1, SeqCst);
            write.exactly = Some(Exactly::All);
        }
        write
    }

    pub(crate) fn begin(&self, mask: u64) -> Write<'_> {
        let mut write = Write {
            tracker: self,
            stripes: Vec::with_capacity(mask.count_ones() as usize),
            exactly: None,
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
    /// Ends the write; true when no other write overlapped it (of its
    /// stripes; with an exact tracker, of its keys or of every key).
    pub(crate) fn finish(mut self) -> bool {
        self.end()
    }

    /// Ends the write (once: a second call finds nothing to end); whether
    /// it was alone.
    fn end(&mut self) -> bool {
        let mut striped = self.alone;
        for (stripe, epoch) in self.stripes.drain(..) {
            let word = self.tracker.stripes[stripe].fetch_sub(1, SeqCst);
            striped &= (word >> 32) as u32 == epoch;
        }
        let (Some(exact), Some(exactly)) = (&self.tracker.exact, self.exactly.take()) else {
            return striped;
        };
        match exactly {
            Exactly::All => {
                exact.all.fetch_sub(1, SeqCst);
                striped
            }
            Exactly::Keys { keys, all } => {
                let mut alone = self.alone && (exact.all.load(SeqCst) >> 32) as u32 == all;
                let mut words = exact.keys();
                for (key, epoch) in keys {
                    if let Some(word) = words.get_mut(&key) {
                        alone &= (*word >> 32) as u32 == epoch;
                        *word -= 1;
                        if *word & IN_FLIGHT == 0 {
                            words.remove(&key);
                        }
                    }
                }
                alone
            }
        }
    }
}

impl Drop for Write<'_> {
    fn drop(&mut self) {
        self.end();
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

    /// Two keys of one stripe of `tracker`.
    fn stripe_mates(tracker: &WriteTracker) -> (String, String) {
        let mut first_of_stripe: HashMap<usize, String> = HashMap::new();
        for i in 0.. {
            let key = format!("k{i}");
            match first_of_stripe.entry(tracker.stripe(&key)) {
                std::collections::hash_map::Entry::Occupied(first) => {
                    return (first.get().clone(), key);
                }
                std::collections::hash_map::Entry::Vacant(slot) => {
                    slot.insert(key);
                }
            }
        }
        unreachable!()
    }

    #[test]
    fn striped_writes_of_one_stripe_overlap() {
        let tracker = WriteTracker::new();
        let (a, b) = stripe_mates(&tracker);
        let wa = tracker.begin_keys(&[&a]);
        let wb = tracker.begin_keys(&[&b]);
        assert!(!wa.finish(), "b began on its stripe");
        assert!(!wb.finish(), "a was in flight on its stripe");
    }

    #[test]
    fn exact_writes_overlap_by_key_not_by_stripe() {
        let tracker = WriteTracker::exact();
        let (a, b) = stripe_mates(&tracker);
        let wa = tracker.begin_keys(&[&a]);
        let wb = tracker.begin_keys(&[&b]);
        assert!(wa.alone && wb.alone);
        assert!(wa.finish(), "another key of its stripe");
        assert!(wb.finish(), "another key of its stripe");

        // The same key, also in a batch (named twice, it is one write).
        let wa = tracker.begin_keys(&[&a]);
        let wab = tracker.begin_keys(&[&b, &a, &b]);
        assert!(!wab.alone);
        assert!(!wa.finish(), "a batch of its key began");
        assert!(!wab.finish(), "a write of its key was in flight");

        // A write of every key overlaps each write of a key, both ways.
        let wa = tracker.begin_keys(&[&a]);
        let all = tracker.begin_all();
        assert!(!wa.finish(), "a write of every key began");
        assert!(!all.finish(), "a write of a key was in flight");
        let all = tracker.begin_all();
        let wa = tracker.begin_keys(&[&a]);
        assert!(!wa.alone);
        assert!(!wa.finish(), "a write of every key was in flight");
        assert!(!all.finish(), "a write of a key began");

        // Ended writes, finished or dropped, leave nothing behind.
        drop(tracker.begin_keys(&[&a, &b]));
        drop(tracker.begin_all());
        assert!(tracker.exact.as_ref().unwrap().keys().is_empty());
        assert!(tracker.begin_keys(&[&a]).finish());
        assert!(tracker.begin_all().finish());
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
