//! S3-FIFO eviction queues (Yang et al., SOSP 2023).
//!
//! New keys enter a small FIFO (about 3% of the entries; see
//! [`SMALL_PERCENT`]). A key leaving the
//! small queue moves to the main FIFO if it was read while there, otherwise
//! it is evicted and remembered in a ghost FIFO of key hashes. A key written
//! again while its hash is in the ghost goes straight to main. A key leaving
//! main is reinserted at its tail while its read counter (capped at 3) is
//! above zero, losing one count each time.
//!
//! Reads never take the queue lock: they bump a per-entry counter. Only
//! inserts and evictions lock the queues, and only when the backend is
//! bounded.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// The small queue's share of the entries, in percent. The paper uses
/// 10%; on the bench's Zipf traces (with and without scans, 1% and 10%
/// capacity) 2-5% is better on every trace, by up to 0.4 points of hit
/// ratio at 1% capacity (a short probation leaves more room to keys that
/// proved themselves). 3% is quick_cache's default too.
pub(crate) const SMALL_PERCENT: usize = 3;

/// A queued key: the very `Arc<str>` the map holds for the entry it was
/// queued for. A key deleted and written again is a new `Arc` (the queue's
/// clone keeps the old allocation alive, so its address is not reused), so
/// stale queue items are recognised (`Arc::ptr_eq`) and dropped.
pub(crate) type Item = Arc<str>;

/// What the eviction loop asks of the map.
pub(crate) trait Store {
    /// The read counter of the live entry `item` names, or `None` when the
    /// item is stale.
    fn freq(&self, item: &Item) -> Option<u8>;
    /// Sets the read counter of the live entry `item` names.
    fn set_freq(&self, item: &Item, freq: u8);
    /// Removes the entry `item` names, if still live.
    fn evict(&self, item: &Item);
    /// Whether the store is over its bounds.
    fn over_capacity(&self) -> bool;
    /// Number of live entries.
    fn live(&self) -> usize;
}

#[derive(Debug, Default)]
pub(crate) struct Queues {
    small: VecDeque<Item>,
    main: VecDeque<Item>,
    ghost: VecDeque<u64>,
    ghost_counts: HashMap<u64, u32>,
}

impl Queues {
    /// Queues a newly inserted entry.
    pub(crate) fn insert(&mut self, item: Item, hash: u64) {
        if self.ghost_counts.contains_key(&hash) {
            self.main.push_back(item);
        } else {
            self.small.push_back(item);
        }
    }

    /// Evicts until the store is within its bounds, never `spare` (the
    /// entry a write has just stored: a write that succeeded is readable).
    pub(crate) fn evict<S: Store>(
        &mut self,
        store: &S,
        spare: Option<&Item>,
        hash_of: impl Fn(&str) -> u64,
    ) {
        let mut guard = 0usize;
        while store.over_capacity() {
            guard += 1;
            if guard > 4 * (self.small.len() + self.main.len()) + 16 {
                // Every queued item is stale or cycling: nothing left to do.
                break;
            }
            let from_small = !self.small.is_empty()
                && (self.main.is_empty()
                    || self.small.len() * 100 >= SMALL_PERCENT * store.live().max(1));
            let progressed = if from_small {
                self.evict_small(store, spare, &hash_of) || self.evict_main(store, spare)
            } else {
                self.evict_main(store, spare)
            };
            if !progressed {
                break;
            }
        }
        self.compact(store);
    }

    /// Returns false when small holds nothing but `spare`.
    fn evict_small<S: Store>(
        &mut self,
        store: &S,
        spare: Option<&Item>,
        hash_of: &impl Fn(&str) -> u64,
    ) -> bool {
        let Some(item) = self.small.pop_front() else {
            return false;
        };
        if spare.is_some_and(|s| Arc::ptr_eq(s, &item)) {
            let alone = self.small.is_empty();
            self.small.push_back(item);
            return !alone;
        }
        match store.freq(&item) {
            None => {}
            Some(freq) if freq > 0 => {
                store.set_freq(&item, 0);
                self.main.push_back(item);
            }
            Some(_) => {
                let hash = hash_of(&item);
                store.evict(&item);
                self.remember(hash, store.live());
            }
        }
        true
    }

    /// Returns false when main holds nothing but `spare`.
    fn evict_main<S: Store>(&mut self, store: &S, spare: Option<&Item>) -> bool {
        let Some(item) = self.main.pop_front() else {
            return false;
        };
        if spare.is_some_and(|s| Arc::ptr_eq(s, &item)) {
            let alone = self.main.is_empty();
            self.main.push_back(item);
            return !alone;
        }
        match store.freq(&item) {
            None => {}
            Some(freq) if freq > 0 => {
                store.set_freq(&item, freq - 1);
                self.main.push_back(item);
            }
            Some(_) => store.evict(&item),
        }
        true
    }

    fn remember(&mut self, hash: u64, live: usize) {
        self.ghost.push_back(hash);
        *self.ghost_counts.entry(hash).or_insert(0) += 1;
        while self.ghost.len() > live.max(16) {
            if let Some(old) = self.ghost.pop_front() {
                if let Some(count) = self.ghost_counts.get_mut(&old) {
                    *count -= 1;
                    if *count == 0 {
                        self.ghost_counts.remove(&old);
                    }
                }
            }
        }
    }

    /// Drops stale items when they outnumber live ones, so deleted keys do
    /// not grow the queues without bound.
    fn compact<S: Store>(&mut self, store: &S) {
        let queued = self.small.len() + self.main.len();
        if queued > 2 * store.live() + 1024 {
            self.small.retain(|item| store.freq(item).is_some());
            self.main.retain(|item| store.freq(item).is_some());
        }
    }

    /// Items queued, stale ones included.
    #[cfg(test)]
    pub(crate) fn queued(&self) -> usize {
        self.small.len() + self.main.len()
    }
}
