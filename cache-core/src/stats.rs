//! Counters kept by [`Cache`](crate::Cache), and their snapshot.

use std::marker::PhantomData;
use std::sync::atomic::{
    AtomicU32, AtomicU64, Ordering::Acquire, Ordering::Relaxed, Ordering::Release,
};
use std::time::{Duration, Instant};

use serde::{Serialize, Serializer};

use crate::layers::{BreakerState, FailOpenStats, TieredStats};

/// A snapshot of a cache's counters, from [`Cache::stats`](crate::Cache::stats).
///
/// It is `Serialize`, for a `/stats` endpoint: durations are written as
/// seconds (`uptime_secs`), and the derived rate is written beside the
/// counters (`hit_rate`).
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> cache::Result<()> {
/// use cache::{CacheConfig, CacheKey};
///
/// let cache = cache::open(&CacheConfig::from_url("memory://")).await?;
/// let key = CacheKey::new("user", 1)?;
/// assert_eq!(cache.get::<String>(&key).await?, None);
/// cache.set(&key, "Ada").await?;
/// assert_eq!(cache.get::<String>(&key).await?.as_deref(), Some("Ada"));
///
/// let stats = cache.stats();
/// assert_eq!((stats.hits, stats.misses, stats.sets), (1, 1, 1));
/// assert_eq!(stats.hit_rate(), 0.5);
/// let json = serde_json::to_value(&stats).unwrap();
/// assert_eq!(json["hits"], 1);
/// assert_eq!(json["hit_rate"], 0.5);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheStats {
    /// Reads that found a value (including a cached empty value).
    pub hits: u64,
    /// Reads that found nothing (or nothing decodable, in `get_or_set`).
    /// A `get_or_set` caller that joins a load already in flight is not a
    /// miss: it is counted in `coalesced`.
    pub misses: u64,
    /// `get_or_set` callers answered by another caller's load in flight
    /// (single flight): 100 concurrent callers of one missing key are 1 miss
    /// and 99 coalesced.
    pub coalesced: u64,
    /// Values written.
    pub sets: u64,
    /// Keys deleted, or patterns and categories invalidated.
    pub deletes: u64,
    /// Operations that failed: the backend's, codec and loader errors and
    /// the caller's mistakes (`caller_errors`); not the backend failures a
    /// fail-open layer swallowed, see `failed_open_reads` and
    /// `skipped_writes`.
    pub errors: u64,
    /// Stored values that could not be decoded as the requested type.
    pub decode_errors: u64,
    /// Operations refused for what the caller passed, counted in `errors`
    /// too: an invalid key (a full key over the limit, a bad pattern), a
    /// value over the backend's size limit or not an integer, an invalid
    /// category or tag, too many tags
    /// ([`InvalidKey`](crate::ErrorKind::InvalidKey),
    /// [`InvalidValue`](crate::ErrorKind::InvalidValue)), a value the codec
    /// cannot encode, an unsupported operation, a call after
    /// [`Cache::close`](crate::Cache::close). Not the
    /// backend's failures: [`Cache::report`](crate::Cache::report) does
    /// not count them in its error rate.
    pub caller_errors: u64,
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
    /// Keys the memory tier (L1) of a two-level stack answered. Zero
    /// without an L1, or unless its counters are attached
    /// ([`CacheBuilder::tiered_stats`](crate::CacheBuilder::tiered_stats);
    /// `cache::open` does it when `l1` is configured), as for the fields
    /// below. Counted per key read through the stack (`get`, each key of
    /// `get_many`), so it can differ from `hits`, which counts typed reads:
    /// with a backplane (generations read from the L1,
    /// `generation_refresh` 0) each typed read also reads its category's
    /// generation marker through the L1, so a typed L1 hit counts two.
    pub l1_hits: u64,
    /// Keys the L1 did not have and the shared tier (L2, e.g. Redis) did;
    /// each was then copied into the L1.
    pub l2_hits: u64,
    /// Invalidations received from other instances over the backplane,
    /// counted once applied (this instance's L1 copies of what they name
    /// are gone).
    pub invalidations_received: u64,
    /// Invalidations this instance published on the backplane (one per
    /// write, delete or clear through the L1).
    pub invalidations_published: u64,
}

impl CacheStats {
    /// The share of reads answered without a load of their own:
    /// `(hits + coalesced) / (hits + coalesced + misses)`, or 0 before any
    /// read.
    pub fn hit_rate(&self) -> f64 {
        let answered = self.hits + self.coalesced;
        let reads = answered + self.misses;
        if reads == 0 {
            0.0
        } else {
            answered as f64 / reads as f64
        }
    }

    /// Backend failures a fail-open layer swallowed:
    /// `failed_open_reads + skipped_writes`.
    pub fn backend_failures_swallowed(&self) -> u64 {
        self.failed_open_reads + self.skipped_writes
    }

    /// Errors the cache returned that were not the loader's, not a
    /// decoding failure and not the caller's (`caller_errors`): the
    /// backend's (unreachable, too slow, or an error answered).
    pub fn backend_errors(&self) -> u64 {
        self.errors
            .saturating_sub(self.loader_errors)
            .saturating_sub(self.decode_errors)
            .saturating_sub(self.caller_errors)
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

    /// These counters with a two-level stack's per-tier counters merged in.
    pub(crate) fn with_tiers(mut self, tiers: TieredStats) -> Self {
        self.l1_hits = tiers.l1_hits;
        self.l2_hits = tiers.l2_hits;
        self.invalidations_received = tiers.invalidations_received;
        self.invalidations_published = tiers.invalidations_published;
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
    Coalesced,
    LeaseWaits,
    LeaseFallbacks,
    CallerErrors,
}

impl Stat {
    const ALL: usize = 15;

    /// Every stat, in the order of their numbers.
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    const EVERY: [Stat; Stat::ALL] = [
        Stat::Hits,
        Stat::Misses,
        Stat::Sets,
        Stat::Deletes,
        Stat::Errors,
        Stat::DecodeErrors,
        Stat::LoaderCalls,
        Stat::LoaderErrors,
        Stat::StaleServed,
        Stat::LoaderTimeouts,
        Stat::Refreshes,
        Stat::Coalesced,
        Stat::LeaseWaits,
        Stat::LeaseFallbacks,
        Stat::CallerErrors,
    ];

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
            Stat::Coalesced => "cache_coalesced_total",
            Stat::LeaseWaits => "cache_lease_waits_total",
            Stat::LeaseFallbacks => "cache_lease_fallbacks_total",
            Stat::CallerErrors => "cache_caller_errors_total",
        }
    }
}

/// How many stripes threads own, one each from a thread's first count to
/// its exit: only its owner writes an owned stripe, so an add there is a
/// load and a store, not a read-modify-write (a locked instruction, ~20
/// cycles, that also waits for every store before it). Threads beyond
/// these share one more stripe, added to atomically.
const OWNED: usize = 16;

/// Every stripe: the owned ones, then the shared one (at index `OWNED`).
const STRIPES: usize = OWNED + 1;

/// The owned stripes free to claim: bit `i` set when stripe `i` is. One
/// set of indices for every [`Striped`] of the process: a thread owns the
/// same index in all of them.
static FREE: AtomicU32 = AtomicU32::new(u32::MAX >> (32 - OWNED));

/// Takes the lowest free index of `free`; `OWNED` (the shared stripe)
/// when every one is taken.
fn claim(free: &AtomicU32) -> usize {
    let mut bits = free.load(Relaxed);
    while bits != 0 {
        let i = bits.trailing_zeros();
        // Acquire: the last owner's stores, released with the index,
        // come before this thread's first load of the stripe.
        match free.compare_exchange_weak(bits, bits & !(1 << i), Acquire, Relaxed) {
            Ok(_) => return i as usize,
            Err(now) => bits = now,
        }
    }
    OWNED
}

/// Gives index `i` back to `free` (nothing for the shared stripe).
fn release(free: &AtomicU32, i: usize) {
    if i < OWNED {
        free.fetch_or(1 << i, Release);
    }
}

/// A thread's stripe index, given back when the thread exits.
struct Claim(usize);

impl Drop for Claim {
    fn drop(&mut self) {
        release(&FREE, self.0);
    }
}

/// The index of this thread's stripe: one it owns (below `OWNED`), or the
/// shared one. After this thread's claim is given back (its thread-locals
/// being destroyed), the shared one.
#[inline]
fn stripe() -> usize {
    thread_local! {
        static CLAIM: Claim = Claim(claim(&FREE));
    }
    CLAIM.try_with(|claim| claim.0).unwrap_or(OWNED)
}

/// Adds `n` to `counter`: its owner alone writes an owned stripe's counter
/// (a plain load and store), every sharer of the shared one adds atomically.
#[inline(always)]
fn bump(counter: &AtomicU64, n: u64, owned: bool) {
    if owned {
        counter.store(counter.load(Relaxed).wrapping_add(n), Relaxed);
    } else {
        counter.fetch_add(n, Relaxed);
    }
}

/// One thread's share of `N` counters, on cache lines of its own.
#[derive(Debug)]
#[repr(align(128))]
struct Stripe<const N: usize>([AtomicU64; N]);

/// `N` counters, striped: a shared counter that every read increments
/// would bounce its cache line between the cores of every thread reading
/// (the reads themselves scale, the counter would not). Each thread adds
/// to its stripe; a read sums the stripes.
#[derive(Debug)]
pub(crate) struct Striped<const N: usize> {
    stripes: Box<[Stripe<N>; STRIPES]>,
}

impl<const N: usize> Default for Striped<N> {
    fn default() -> Self {
        Striped {
            stripes: Box::new(std::array::from_fn(|_| {
                Stripe(std::array::from_fn(|_| AtomicU64::new(0)))
            })),
        }
    }
}

impl<const N: usize> Striped<N> {
    /// Adds `n` to counter `i`.
    #[inline]
    pub(crate) fn add(&self, i: usize, n: u64) {
        self.local().add(i, n);
    }

    /// This thread's stripe, for a caller adding to several counters at
    /// once (one look-up of the stripe).
    #[inline]
    pub(crate) fn local(&self) -> Local<'_, N> {
        let i = stripe();
        Local {
            counters: &self.stripes[i].0,
            owned: i < OWNED,
            _this_thread: PhantomData,
        }
    }

    /// Counter `i`: the sum of its stripes.
    pub(crate) fn sum(&self, i: usize) -> u64 {
        self.stripes
            .iter()
            .map(|stripe| stripe.0[i].load(Relaxed))
            .fold(0, u64::wrapping_add)
    }
}

/// A thread's stripe of a [`Striped`], from [`Striped::local`]. Not
/// `Send`: an owned stripe is added to by its owner thread alone.
pub(crate) struct Local<'a, const N: usize> {
    counters: &'a [AtomicU64; N],
    owned: bool,
    _this_thread: PhantomData<*const ()>,
}

impl<const N: usize> Local<'_, N> {
    /// Adds `n` to counter `i`.
    #[inline]
    pub(crate) fn add(&self, i: usize, n: u64) {
        bump(&self.counters[i], n, self.owned);
    }
}

/// The counters of a [`Cache`](crate::Cache), [striped](Striped).
#[derive(Debug)]
pub(crate) struct Counters {
    stripes: Striped<{ Stat::ALL }>,
    /// The exported name and `prefix` label of each stat, built once: the
    /// `counter!` macro would build them (two allocations) on every call.
    #[cfg(feature = "metrics")]
    keys: [metrics::Key; Stat::ALL],
    started: Instant,
}

impl Counters {
    pub(crate) fn new(prefix: &str) -> Self {
        #[cfg(not(feature = "metrics"))]
        let _ = prefix;
        Counters {
            stripes: Striped::default(),
            #[cfg(feature = "metrics")]
            keys: Stat::EVERY.map(|stat| {
                metrics::Key::from_parts(
                    stat.metric(),
                    vec![metrics::Label::new("prefix", prefix.to_owned())],
                )
            }),
            started: Instant::now(),
        }
    }

    /// Adds `n` to a counter (and to its exported metric).
    pub(crate) fn inc(&self, stat: Stat, n: u64) {
        if n == 0 {
            return;
        }
        self.stripes.add(stat as usize, n);
        #[cfg(feature = "metrics")]
        export(&self.keys[stat as usize], n);
    }

    fn get(&self, stat: Stat) -> u64 {
        self.stripes.sum(stat as usize)
    }

    pub(crate) fn snapshot(&self) -> CacheStats {
        CacheStats {
            hits: self.get(Stat::Hits),
            misses: self.get(Stat::Misses),
            coalesced: self.get(Stat::Coalesced),
            sets: self.get(Stat::Sets),
            deletes: self.get(Stat::Deletes),
            errors: self.get(Stat::Errors),
            decode_errors: self.get(Stat::DecodeErrors),
            caller_errors: self.get(Stat::CallerErrors),
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
            l1_hits: 0,
            l2_hits: 0,
            invalidations_received: 0,
            invalidations_published: 0,
        }
    }
}

impl Serialize for CacheStats {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;

        let mut s = serializer.serialize_struct("CacheStats", 28)?;
        s.serialize_field("hits", &self.hits)?;
        s.serialize_field("misses", &self.misses)?;
        s.serialize_field("coalesced", &self.coalesced)?;
        s.serialize_field("hit_rate", &self.hit_rate())?;
        s.serialize_field("sets", &self.sets)?;
        s.serialize_field("deletes", &self.deletes)?;
        s.serialize_field("errors", &self.errors)?;
        s.serialize_field("decode_errors", &self.decode_errors)?;
        s.serialize_field("caller_errors", &self.caller_errors)?;
        s.serialize_field("loader_calls", &self.loader_calls)?;
        s.serialize_field("loader_errors", &self.loader_errors)?;
        s.serialize_field("stale_served", &self.stale_served)?;
        s.serialize_field("loader_timeouts", &self.loader_timeouts)?;
        s.serialize_field("refreshes", &self.refreshes)?;
        s.serialize_field("lease_waits", &self.lease_waits)?;
        s.serialize_field("lease_fallbacks", &self.lease_fallbacks)?;
        s.serialize_field("uptime_secs", &self.uptime.as_secs_f64())?;
        s.serialize_field("failed_open_reads", &self.failed_open_reads)?;
        s.serialize_field("skipped_writes", &self.skipped_writes)?;
        s.serialize_field("breaker_opened", &self.breaker_opened)?;
        s.serialize_field("breaker_closed", &self.breaker_closed)?;
        s.serialize_field("breaker_open", &self.breaker_open)?;
        s.serialize_field("pending_invalidations", &self.pending_invalidations)?;
        s.serialize_field("replayed_invalidations", &self.replayed_invalidations)?;
        s.serialize_field("l1_hits", &self.l1_hits)?;
        s.serialize_field("l2_hits", &self.l2_hits)?;
        s.serialize_field("invalidations_received", &self.invalidations_received)?;
        s.serialize_field("invalidations_published", &self.invalidations_published)?;
        s.end()
    }
}

/// A duration written for people: `850 µs`, `12.3 ms`, `4.2 s`,
/// `3 min 12 s`, `2 h 5 min`, `3 d 4 h` (not `56.476400974s`).
pub(crate) struct Human(pub(crate) Duration);

impl std::fmt::Display for Human {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let d = self.0;
        let secs = d.as_secs();
        match secs {
            0 if d.as_millis() == 0 => write!(f, "{} µs", d.as_micros()),
            0 => write!(f, "{:.1} ms", d.as_secs_f64() * 1e3),
            1..=59 => write!(f, "{:.1} s", d.as_secs_f64()),
            60..=3_599 => write!(f, "{} min {} s", secs / 60, secs % 60),
            3_600..=86_399 => write!(f, "{} h {} min", secs / 3_600, secs % 3_600 / 60),
            _ => write!(f, "{} d {} h", secs / 86_400, secs % 86_400 / 3_600),
        }
    }
}

/// Serializes a duration as milliseconds (a float: sub-millisecond
/// latencies stay visible).
pub(crate) fn as_millis<S: Serializer>(d: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_f64(d.as_secs_f64() * 1e3)
}

/// Adds `n` to the counter `key` of the recorder in use now (as
/// `metrics::counter!` does, with the key built once).
#[cfg(feature = "metrics")]
pub(crate) fn export(key: &metrics::Key, n: u64) {
    metrics::with_recorder(|recorder| recorder.register_counter(key, &METADATA).increment(n));
}

/// Records `value` in the histogram `key` of the recorder in use now (as
/// `metrics::histogram!` does, with the key built once).
#[cfg(feature = "metrics")]
pub(crate) fn export_histogram(key: &metrics::Key, value: f64) {
    metrics::with_recorder(|recorder| recorder.register_histogram(key, &METADATA).record(value));
}

/// What the `metrics` macros would say of the call site.
#[cfg(feature = "metrics")]
static METADATA: metrics::Metadata<'static> =
    metrics::Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_stat_is_at_its_number() {
        for (i, stat) in Stat::EVERY.into_iter().enumerate() {
            assert_eq!(stat as usize, i);
        }
    }

    #[test]
    fn striped_counters_sum_what_every_thread_added() {
        // More threads at once than there are owned stripes, so some share
        // the shared one; then a second wave, on the indices the first gave
        // back. Every add counts: an owned stripe has one writer at a time.
        const ADDS: u64 = 20_000;
        let counters: Striped<2> = Striped::default();
        let threads = 3 * OWNED as u64;
        for _wave in 0..2 {
            // All at once: the sharers add to one stripe at the same time.
            let start = std::sync::Barrier::new(threads as usize);
            std::thread::scope(|s| {
                for t in 0..threads {
                    let (counters, start) = (&counters, &start);
                    s.spawn(move || {
                        start.wait();
                        for _ in 0..ADDS {
                            counters.add(0, 1);
                        }
                        counters.local().add(1, t);
                    });
                }
            });
        }
        counters.add(1, 10);
        let sum_of_t = threads * (threads - 1) / 2;
        assert_eq!(
            (counters.sum(0), counters.sum(1)),
            (2 * threads * ADDS, 2 * sum_of_t + 10)
        );
    }

    #[test]
    fn the_shared_stripe_adds_atomically() {
        // Its sharers add at the same time, long enough to overlap on
        // every core: a load and a store would lose some of their adds.
        let counter = AtomicU64::new(0);
        let start = std::sync::Barrier::new(4);
        std::thread::scope(|s| {
            for _ in 0..4 {
                let (counter, start) = (&counter, &start);
                s.spawn(move || {
                    start.wait();
                    for _ in 0..1_000_000 {
                        bump(counter, 1, false);
                    }
                });
            }
        });
        assert_eq!(counter.load(Relaxed), 4_000_000);
    }

    #[test]
    fn an_owned_stripe_is_claimed_by_one_thread_at_a_time_and_given_back() {
        let free = AtomicU32::new(u32::MAX >> (32 - OWNED));
        let claimed: Vec<usize> = (0..OWNED).map(|_| claim(&free)).collect();
        assert_eq!(claimed, (0..OWNED).collect::<Vec<_>>());
        // None left: the shared stripe, which is never given back.
        assert_eq!(claim(&free), OWNED);
        release(&free, OWNED);
        assert_eq!(free.load(Relaxed), 0);
        release(&free, 5);
        release(&free, 3);
        assert_eq!((claim(&free), claim(&free), claim(&free)), (3, 5, OWNED));
    }

    #[test]
    fn a_thread_gives_its_stripe_back_when_it_exits() {
        // Other tests' threads claim and give back indices meanwhile: this
        // thread's own index is free again once it has exited, unless one
        // of them took it in between; each try is a new thread.
        let given_back = (0..100).any(|_| {
            let i = std::thread::spawn(stripe).join().expect("the thread ran");
            i < OWNED && FREE.load(Relaxed) & (1 << i) != 0
        });
        assert!(given_back);
    }

    #[test]
    fn durations_read_like_people_write_them() {
        let cases = [
            (Duration::from_micros(850), "850 µs"),
            (Duration::from_micros(12_345), "12.3 ms"),
            (Duration::from_millis(4_240), "4.2 s"),
            (Duration::from_secs_f64(56.476_400_974), "56.5 s"),
            (Duration::from_secs(192), "3 min 12 s"),
            (Duration::from_secs(2 * 3_600 + 5 * 60 + 9), "2 h 5 min"),
            (Duration::from_secs(3 * 86_400 + 4 * 3_600 + 1), "3 d 4 h"),
        ];
        for (duration, written) in cases {
            assert_eq!(Human(duration).to_string(), written, "{duration:?}");
        }
    }

    #[test]
    fn coalesced_callers_count_as_answered_without_a_load() {
        let stats = CacheStats {
            hits: 0,
            misses: 1,
            coalesced: 99,
            ..Counters::new("t").snapshot()
        };
        assert_eq!(stats.hit_rate(), 0.99);
        assert_eq!(Counters::new("t").snapshot().hit_rate(), 0.0);
    }

    #[test]
    fn stats_serialize_with_the_rate_and_seconds() {
        let stats = CacheStats {
            hits: 3,
            misses: 1,
            uptime: Duration::from_millis(1_500),
            ..Counters::new("t").snapshot()
        };
        let json = serde_json::to_value(stats).unwrap();
        assert_eq!(json["hits"], 3);
        assert_eq!(json["misses"], 1);
        assert_eq!(json["hit_rate"], 0.75);
        assert_eq!(json["uptime_secs"], 1.5);
        assert_eq!(json["l1_hits"], 0);
        assert_eq!(json.as_object().unwrap().len(), 28);
    }
}
