//! The expiry index the sweeper walks: keys filed by when they expire, so
//! a sweep costs what has expired, not what is stored.
//!
//! Keys are filed in slots of [`SLOT_NANOS`] (about 67 ms), keyed by the
//! end of the slot, in a few mutex-guarded stripes so that writers on
//! different threads rarely meet. A key is filed when it gets an expiry
//! that is earlier than any it was filed under: a new key, a persistent key
//! given a TTL, a TTL shortened. A later expiry is not filed: when the old
//! slot comes due, the sweeper finds the entry still live and files it
//! again at its current expiry. So a key that is rewritten all the time
//! costs one item, not one per write.
//!
//! An item is only a hint: the sweeper removes an entry only if it is the
//! very entry the item was filed for (the same `Arc<str>`, see
//! [`Item`]) and it has expired. Items of deleted or replaced keys are
//! dropped when their slot comes due.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Mutex, PoisonError};

use crate::eviction::Item;

/// The width of a slot, in nanoseconds (2^26 ns, about 67 ms). An entry is
/// swept at most one slot plus one sweep interval after it expires (reads
/// never return it once expired, whatever the sweeper does).
const SLOT_SHIFT: u32 = 26;

/// The slot width, for docs and tests.
#[cfg(test)]
pub(crate) const SLOT_NANOS: u64 = 1 << SLOT_SHIFT;

const STRIPES: usize = 8;

type Slots = BTreeMap<u64, Vec<Item>>;

std::thread_local! {
    /// This thread's stripe: threads take stripes in turn, so writers on
    /// different threads file into different locks.
    static STRIPE: usize = {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        NEXT.fetch_add(1, Relaxed) % STRIPES
    };
}

/// Keys by the slot their expiry falls in.
#[derive(Debug)]
pub(crate) struct ExpiryIndex {
    stripes: [Mutex<Slots>; STRIPES],
}

impl Default for ExpiryIndex {
    fn default() -> Self {
        ExpiryIndex {
            stripes: std::array::from_fn(|_| Mutex::new(BTreeMap::new())),
        }
    }
}

/// The slot an expiry (nanoseconds on the backend's clock) falls in: the
/// end of the slot, so a slot is due once the clock has passed it.
fn slot_of(expires_at: u64) -> u64 {
    ((expires_at >> SLOT_SHIFT) + 1) << SLOT_SHIFT
}

impl ExpiryIndex {
    /// Files `item` under `expires_at` (0 means never: nothing to file).
    pub(crate) fn file(&self, item: Item, expires_at: u64) {
        if expires_at == 0 {
            return;
        }
        let stripe = &self.stripes[STRIPE.with(|s| *s)];
        stripe
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(slot_of(expires_at))
            .or_default()
            .push(item);
    }

    /// Whether an entry whose expiry changes from `old` to `new` must be
    /// filed again: only when it expires earlier than it was filed for.
    pub(crate) fn needs_filing(old: u64, new: u64) -> bool {
        new != 0 && (old == 0 || new < old)
    }

    /// Takes every item whose slot has come due by `now`. Each stripe's
    /// lock is held only to split its map, never while entries are
    /// examined.
    pub(crate) fn take_due(&self, now: u64) -> Vec<Item> {
        let mut due = Vec::new();
        for stripe in &self.stripes {
            let taken = {
                let mut slots = stripe.lock().unwrap_or_else(PoisonError::into_inner);
                match slots.first_key_value() {
                    Some((&first, _)) if first <= now => {
                        let later = slots.split_off(&(now + 1));
                        std::mem::replace(&mut *slots, later)
                    }
                    _ => continue,
                }
            };
            due.extend(taken.into_values().flatten());
        }
        due
    }

    /// Items filed, stale ones included.
    #[cfg(test)]
    pub(crate) fn filed(&self) -> usize {
        self.stripes
            .iter()
            .map(|s| {
                s.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .values()
                    .map(Vec::len)
                    .sum::<usize>()
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn only_due_slots_are_taken() {
        let index = ExpiryIndex::default();
        let a: Item = Arc::from("a");
        let b: Item = Arc::from("b");
        index.file(Arc::clone(&a), 10);
        index.file(Arc::clone(&b), 5 * SLOT_NANOS + 1);
        index.file(Arc::from("never"), 0);
        assert_eq!(index.filed(), 2);
        assert!(index.take_due(SLOT_NANOS - 1).is_empty());
        assert_eq!(index.take_due(SLOT_NANOS), vec![a]);
        assert!(index.take_due(6 * SLOT_NANOS - 1).is_empty());
        assert_eq!(index.take_due(6 * SLOT_NANOS), vec![b]);
        assert_eq!(index.filed(), 0);
    }

    #[test]
    fn only_earlier_expiries_are_filed_again() {
        assert!(ExpiryIndex::needs_filing(0, 5));
        assert!(ExpiryIndex::needs_filing(9, 5));
        assert!(!ExpiryIndex::needs_filing(5, 9));
        assert!(!ExpiryIndex::needs_filing(5, 5));
        assert!(!ExpiryIndex::needs_filing(5, 0));
    }
}
