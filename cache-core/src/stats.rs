//! Counters kept by [`Cache`](crate::Cache), and their snapshot.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// A snapshot of a cache's counters, from [`Cache::stats`](crate::Cache::stats).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheStats {
    /// Reads that found a value (including a cached empty value).
    pub hits: u64,
    /// Reads that found nothing (or nothing decodable, in `get_or_set`).
    pub misses: u64,
    /// Values written.
    pub sets: u64,
    /// Keys deleted, or patterns and categories invalidated.
    pub deletes: u64,
    /// Operations that failed (backend, codec and loader errors).
    pub errors: u64,
    /// Stored values that could not be decoded as the requested type.
    pub decode_errors: u64,
    /// Times a `get_or_set` loader ran.
    pub loader_calls: u64,
    /// Times a `get_or_set` loader failed.
    pub loader_errors: u64,
    /// Stale values served by `get_or_set` (fail-safe).
    pub stale_served: u64,
    /// Loads that exceeded the fail-safe soft timeout.
    pub loader_timeouts: u64,
    /// Background reloads started by refresh-ahead.
    pub refreshes: u64,
    /// How long the cache has been open.
    pub uptime: Duration,
}

impl CacheStats {
    /// `hits / (hits + misses)`, or 0 before any read.
    pub fn hit_rate(&self) -> f64 {
        let reads = self.hits + self.misses;
        if reads == 0 {
            0.0
        } else {
            self.hits as f64 / reads as f64
        }
    }
}

#[derive(Debug)]
pub(crate) struct Counters {
    pub(crate) hits: AtomicU64,
    pub(crate) misses: AtomicU64,
    pub(crate) sets: AtomicU64,
    pub(crate) deletes: AtomicU64,
    pub(crate) errors: AtomicU64,
    pub(crate) decode_errors: AtomicU64,
    pub(crate) loader_calls: AtomicU64,
    pub(crate) loader_errors: AtomicU64,
    pub(crate) stale_served: AtomicU64,
    pub(crate) loader_timeouts: AtomicU64,
    pub(crate) refreshes: AtomicU64,
    started: Instant,
}

impl Counters {
    pub(crate) fn new() -> Self {
        Counters {
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            sets: AtomicU64::new(0),
            deletes: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            decode_errors: AtomicU64::new(0),
            loader_calls: AtomicU64::new(0),
            loader_errors: AtomicU64::new(0),
            stale_served: AtomicU64::new(0),
            loader_timeouts: AtomicU64::new(0),
            refreshes: AtomicU64::new(0),
            started: Instant::now(),
        }
    }

    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    pub(crate) fn snapshot(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Relaxed),
            misses: self.misses.load(Relaxed),
            sets: self.sets.load(Relaxed),
            deletes: self.deletes.load(Relaxed),
            errors: self.errors.load(Relaxed),
            decode_errors: self.decode_errors.load(Relaxed),
            loader_calls: self.loader_calls.load(Relaxed),
            loader_errors: self.loader_errors.load(Relaxed),
            stale_served: self.stale_served.load(Relaxed),
            loader_timeouts: self.loader_timeouts.load(Relaxed),
            refreshes: self.refreshes.load(Relaxed),
            uptime: self.started.elapsed(),
        }
    }
}
