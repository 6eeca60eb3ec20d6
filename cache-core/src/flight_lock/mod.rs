//! Cross-process single flight: [`FlightLock`], a lease per key in a store
//! every instance shares, and the wake-up of the instances waiting on it.
//!
//! `get_or_set` keeps its in-process single flight first: within one
//! process only the caller leading a key's load takes part. That leader
//! takes the key's lease (`SET {key}:lease {token} NX PX {lease}` on Redis);
//! the instance that wins runs the loader, stores the value, releases the
//! lease (only if it still holds its token) and notifies; the others wait
//! for the notification, bounded by a fallback poll and by the lease's
//! remaining time, then read the stored value — or, if the lease ended
//! without one (the leader died), race for the lease again. See
//! [`CacheBuilder::distributed_single_flight`](crate::CacheBuilder::distributed_single_flight).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;

use crate::error::Result;

mod deferred;
mod local;

pub use deferred::DeferredFlightLock;
pub use local::LocalFlightLock;

/// The answer to [`FlightLock::acquire`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Acquire {
    /// The lease is ours, for the requested time.
    Acquired,
    /// Another token holds the lease.
    Held {
        /// How long it still runs, if it has an end (a waiter re-checks
        /// no later than this).
        remaining: Option<Duration>,
    },
}

/// A lease per key in a store shared by every instance of a cache, and
/// the notification that wakes the instances waiting for it: what
/// [`Cache::get_or_set`](crate::Cache::get_or_set) uses to run one loader
/// per key across processes. Implementations: `cache::redis::RedisFlightLock`
/// (a Lua compare-and-delete, pub/sub for the wake-ups) and
/// [`LocalFlightLock`] (one process: tests, or several caches in one
/// service).
///
/// # Behavior
///
/// - `acquire` MUST be atomic: of any number of concurrent calls on a free
///   key, exactly one gets [`Acquire::Acquired`]; a lease ends by itself
///   after its time, so a crashed holder blocks the others at most that
///   long.
/// - `extend` and `release` MUST act only while `token` holds the lease
///   (compare-and-set, compare-and-delete) and answer whether it did.
/// - `release` MUST then notify: every [`LeaseWatch`] of the key (in every
///   instance) started before the call wakes. It notifies also when the
///   token no longer held the lease (the value was stored all the same).
/// - A watch that may have missed a notification (a lost subscription)
///   SHOULD wake, so its owner re-checks.
#[async_trait]
pub trait FlightLock: Send + Sync + 'static {
    /// A short name for logs.
    fn name(&self) -> &'static str;

    /// Takes the lease on `key` for `lease` with `token`, unless another
    /// token holds it.
    async fn acquire(&self, key: &str, token: &str, lease: Duration) -> Result<Acquire>;

    /// Resets the lease's time to `lease` if `token` still holds it;
    /// answers whether it did.
    async fn extend(&self, key: &str, token: &str, lease: Duration) -> Result<bool>;

    /// Ends the lease if `token` holds it (answers whether it did), then
    /// wakes the watchers of `key`.
    async fn release(&self, key: &str, token: &str) -> Result<bool>;

    /// A watch on `key` that wakes on the next release after this call.
    async fn watch(&self, key: &str) -> Result<LeaseWatch>;
}

/// Waits for the release of one lease; from [`FlightLock::watch`] (built
/// by an implementation with [`LeaseWakers::watch`]).
#[derive(Debug)]
pub struct LeaseWatch {
    rx: Option<watch::Receiver<()>>,
    key: String,
    wakers: Arc<Mutex<HashMap<String, watch::Sender<()>>>>,
}

impl LeaseWatch {
    /// Waits until the lease is released (answers `true`) or `timeout`
    /// passes (`false`). A release before this call but after the watch
    /// began counts.
    pub async fn wait(&mut self, timeout: Duration) -> bool {
        let Some(rx) = self.rx.as_mut() else {
            tokio::time::sleep(timeout).await;
            return false;
        };
        match tokio::time::timeout(timeout, rx.changed()).await {
            Ok(Ok(())) => true,
            Ok(Err(_)) => {
                // The lock is gone: nothing will wake us.
                tokio::time::sleep(timeout).await;
                false
            }
            Err(_) => false,
        }
    }
}

impl Drop for LeaseWatch {
    fn drop(&mut self) {
        drop(self.rx.take());
        let mut wakers = lock(&self.wakers);
        if wakers
            .get(&self.key)
            .is_some_and(|tx| tx.receiver_count() == 0)
        {
            wakers.remove(&self.key);
        }
    }
}

/// The watchers of one instance, by key: a building block for
/// [`FlightLock`] implementations, which call [`wake`](Self::wake) when a
/// release notification arrives. Cheap to clone (clones share the table);
/// a key's entry lives as long as a [`LeaseWatch`] on it.
#[derive(Debug, Clone, Default)]
pub struct LeaseWakers {
    wakers: Arc<Mutex<HashMap<String, watch::Sender<()>>>>,
}

impl LeaseWakers {
    /// An empty table.
    pub fn new() -> Self {
        LeaseWakers::default()
    }

    /// A watch on `key`, woken by the next [`wake`](Self::wake) of `key`
    /// or [`wake_all`](Self::wake_all).
    pub fn watch(&self, key: &str) -> LeaseWatch {
        let mut wakers = lock(&self.wakers);
        let rx = wakers
            .entry(key.to_owned())
            .or_insert_with(|| watch::channel(()).0)
            .subscribe();
        LeaseWatch {
            rx: Some(rx),
            key: key.to_owned(),
            wakers: Arc::clone(&self.wakers),
        }
    }

    /// Wakes the watches of `key`; answers whether there were any.
    pub fn wake(&self, key: &str) -> bool {
        match lock(&self.wakers).get(key) {
            Some(tx) => {
                tx.send_replace(());
                true
            }
            None => false,
        }
    }

    /// Wakes every watch (a notification may have been missed).
    pub fn wake_all(&self) {
        for tx in lock(&self.wakers).values() {
            tx.send_replace(());
        }
    }

    /// How many keys are watched.
    pub fn len(&self) -> usize {
        lock(&self.wakers).len()
    }

    /// Whether no key is watched.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_watch_entry_lives_as_long_as_its_watches() {
        let wakers = LeaseWakers::new();
        let first = wakers.watch("k");
        let second = wakers.watch("k");
        assert_eq!(wakers.len(), 1);
        drop(first);
        assert!(wakers.wake("k"));
        drop(second);
        assert!(wakers.is_empty());
        assert!(!wakers.wake("k"));
    }
}
