//! Counters kept by [`Cache`](crate::Cache), and their snapshot.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use crate::layers::{BreakerState, FailOpenStats};

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
    /// Operations that failed (backend, codec and loader errors; not the
    /// backend failures a fail-open layer swallowed, see
    /// `failed_open_reads` and `skipped_writes`).
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
    /// Loads answered by another instance's load: this process waited on
    /// the key's lease (distributed single flight) and read the value it
    /// stored, without running the loader.
    pub lease_waits: u64,
    /// Loads that ran without the distributed single flight because the
    /// flight lock failed (e.g. Redis down): the loader ran here.
    pub lease_fallbacks: u64,
    /// How long the cache has been open.
    pub uptime: Duration,
    /// Reads a fail-open layer answered as misses because the backend
    /// failed or its breaker was open (errors swallowed, not in `errors`).
    /// Zero unless fail-open counters are attached
    /// ([`CacheBuilder::fail_open_stats`](crate::CacheBuilder::fail_open_stats)),
    /// as for all the fields below.
    pub failed_open_reads: u64,
    /// Writes and invalidations a fail-open layer skipped because the
    /// backend failed or its breaker was open (errors swallowed, not in
    /// `errors`).
    pub skipped_writes: u64,
    /// Times the fail-open circuit breaker opened (the backend kept
    /// failing).
    pub breaker_opened: u64,
    /// Times the circuit breaker closed again (the backend recovered).
    pub breaker_closed: u64,
    /// Whether the circuit breaker is open (or half-open: one probe out)
    /// now, so calls skip the backend.
    pub breaker_open: bool,
    /// Invalidations (and skipped writes) lost during an outage, waiting
    /// to be replayed when the backend answers again.
    pub pending_invalidations: u64,
    /// Lost invalidations replayed after the backend came back.
    pub replayed_invalidations: u64,
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

    /// Backend failures a fail-open layer swallowed:
    /// `failed_open_reads + skipped_writes`.
    pub fn backend_failures_swallowed(&self) -> u64 {
        self.failed_open_reads + self.skipped_writes
    }

    /// Errors the cache returned that were neither the loader's nor a
    /// decoding failure: mostly the backend's.
    pub fn backend_errors(&self) -> u64 {
        self.errors
            .saturating_sub(self.loader_errors)
            .saturating_sub(self.decode_errors)
    }

    /// These counters with a fail-open layer's merged in.
    pub(crate) fn with_fail_open(mut self, fail_open: FailOpenStats) -> Self {
        self.failed_open_reads = fail_open.failed_reads;
        self.skipped_writes = fail_open.skipped_writes;
        self.breaker_opened = fail_open.breaker_opened;
        self.breaker_closed = fail_open.breaker_closed;
        self.breaker_open = fail_open.state != BreakerState::Closed;
        self.pending_invalidations = fail_open.pending_invalidations;
        self.replayed_invalidations = fail_open.replayed_invalidations;
        self
    }
}

/// One of the counters, for [`Counters::inc`].
#[derive(Debug, Clone, Copy)]
pub(crate) enum Stat {
    Hits,
    Misses,
    Sets,
    Deletes,
    Errors,
    DecodeErrors,
    LoaderCalls,
    LoaderErrors,
    StaleServed,
    LoaderTimeouts,
    Refreshes,
    LeaseWaits,
    LeaseFallbacks,
}

impl Stat {
    const ALL: usize = 13;

    /// The name it is exported under with the `metrics` feature.
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    fn metric(self) -> &'static str {
        match self {
            Stat::Hits => "cache_hits_total",
            Stat::Misses => "cache_misses_total",
            Stat::Sets => "cache_sets_total",
            Stat::Deletes => "cache_deletes_total",
            Stat::Errors => "cache_errors_total",
            Stat::DecodeErrors => "cache_decode_errors_total",
            Stat::LoaderCalls => "cache_loader_calls_total",
            Stat::LoaderErrors => "cache_loader_errors_total",
            Stat::StaleServed => "cache_stale_served_total",
            Stat::LoaderTimeouts => "cache_loader_timeouts_total",
            Stat::Refreshes => "cache_refreshes_total",
            Stat::LeaseWaits => "cache_lease_waits_total",
            Stat::LeaseFallbacks => "cache_lease_fallbacks_total",
        }
    }
}

#[derive(Debug)]
pub(crate) struct Counters {
    values: [AtomicU64; Stat::ALL],
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    prefix: String,
    started: Instant,
}

impl Counters {
    pub(crate) fn new(prefix: &str) -> Self {
        Counters {
            values: Default::default(),
            prefix: prefix.to_owned(),
            started: Instant::now(),
        }
    }

    /// Adds `n` to a counter (and to its exported metric).
    pub(crate) fn inc(&self, stat: Stat, n: u64) {
        if n == 0 {
            return;
        }
        self.values[stat as usize].fetch_add(n, Relaxed);
        #[cfg(feature = "metrics")]
        metrics::counter!(stat.metric(), "prefix" => self.prefix.clone()).increment(n);
    }

    fn get(&self, stat: Stat) -> u64 {
        self.values[stat as usize].load(Relaxed)
    }

    pub(crate) fn snapshot(&self) -> CacheStats {
        CacheStats {
            hits: self.get(Stat::Hits),
            misses: self.get(Stat::Misses),
            sets: self.get(Stat::Sets),
            deletes: self.get(Stat::Deletes),
            errors: self.get(Stat::Errors),
            decode_errors: self.get(Stat::DecodeErrors),
            loader_calls: self.get(Stat::LoaderCalls),
            loader_errors: self.get(Stat::LoaderErrors),
            stale_served: self.get(Stat::StaleServed),
            loader_timeouts: self.get(Stat::LoaderTimeouts),
            refreshes: self.get(Stat::Refreshes),
            lease_waits: self.get(Stat::LeaseWaits),
            lease_fallbacks: self.get(Stat::LeaseFallbacks),
            uptime: self.started.elapsed(),
            failed_open_reads: 0,
            skipped_writes: 0,
            breaker_opened: 0,
            breaker_closed: 0,
            breaker_open: false,
            pending_invalidations: 0,
            replayed_invalidations: 0,
        }
    }
}
