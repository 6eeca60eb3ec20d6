//! `Cache`: the typed facade application code uses.
//!
//! One idea per file:
//! - this file: the [`Cache`] type, its [`CacheBuilder`], and the
//!   operations on the whole cache (clear, health, stats, close, keys);
//! - `typed`: typed reads and writes of single keys and batches;
//! - `single_flight`: `get_or_set` (cache-aside, one load per key in flight,
//!   refresh-ahead, stale values on loader failure);
//! - `generations`: category generations and invalidation by category or
//!   pattern;
//! - `distributed`: the distributed single flight, a lease per key across
//!   processes, that a `get_or_set` load passes before its loader runs;
//! - `tags`: invalidation by tag (a marker key per tag, its epoch recorded
//!   in each tagged entry);
//! - `envelope`: how a value is stored when fail-safe or refresh-ahead needs
//!   its logical expiry, or tags their epochs (the envelopes, the physical
//!   TTL).

mod distributed;
mod envelope;
mod generations;
mod single_flight;
mod tags;
mod typed;

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::watch;

use crate::backend::{lend, CacheBackend, Health};
use crate::codec::{AnyCodec, Codec};
use crate::error::{Error, ErrorKind, Result};
use crate::fail_safe::FailSafe;
use crate::flight_lock::FlightLock;
use crate::key::{validate_prefix, CacheKey};
use crate::layers::{FailOpenHandle, TieredHandle};
use crate::report::{CacheReport, ReportThresholds};
use crate::stats::{CacheStats, Counters, Stat};
use crate::ttl::{CategoryTtl, TtlPolicy};
use crate::write_tracker::WriteTracker;

use distributed::Distributed;
pub use distributed::DistributedFlight;
use single_flight::FlightResult;
pub use single_flight::{GetOrSetOptions, Loaded};
pub use typed::WriteOptions;

/// The default key prefix.
pub const DEFAULT_PREFIX: &str = "cache";

/// How long a category's generation, once read from the backend, is trusted
/// before it is read again (see [`Cache::invalidate_category`]).
pub const DEFAULT_GENERATION_REFRESH: Duration = Duration::from_secs(1);

/// A typed cache over any [`CacheBackend`].
///
/// Values are encoded with a [`Codec`] (JSON by default) under structured
/// keys (`{prefix}:{category}:{id}`), with TTLs from a [`TtlPolicy`].
/// `Cache` is cheap to clone: clones share the backend, the counters and
/// the single-flight table.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> cache::Result<()> {
/// use cache::{Cache, CacheKey, CategoryTtl};
/// use cache::memory::MemoryBackend;
/// use std::sync::Arc;
/// use std::time::Duration;
///
/// let backend = Arc::new(MemoryBackend::new());
///
/// let cache = Cache::builder(backend)
///     .prefix("app")
///     .ttl_policy(CategoryTtl::new(Some(Duration::from_secs(60))))
///     .build()?;
///
/// let key = CacheKey::new("user", 42)?;
/// let name: String = cache
///     .get_or_set(&key, || async { Ok::<_, std::io::Error>("Ada".to_string()) })
///     .await?;
/// assert_eq!(name, "Ada");
/// assert_eq!(cache.get::<String>(&key).await?, Some("Ada".to_string()));
/// assert_eq!(cache.stats().loader_calls, 1);
/// # Ok(())
/// # }
/// ```
pub struct Cache<C: Codec = AnyCodec> {
    inner: Arc<Inner<C>>,
}

impl<C: Codec> Clone for Cache<C> {
    fn clone(&self) -> Self {
        Cache {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<C: Codec> fmt::Debug for Cache<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cache")
            .field("backend", &self.inner.backend.name())
            .field("codec", &self.inner.codec.name())
            .field("prefix", &self.inner.prefix)
            .finish_non_exhaustive()
    }
}

struct Inner<C> {
    /// Called as `(*backend).op()`: calling through the `Arc` would go
    /// through `impl CacheBackend for Arc<T>` and box a second future.
    backend: Arc<dyn CacheBackend>,
    codec: C,
    prefix: String,
    /// `{prefix}:`, what a key's text follows at generation 0.
    prefix_colon: String,
    policy: Arc<dyn TtlPolicy>,
    counters: Counters,
    flights: Mutex<HashMap<String, watch::Receiver<FlightResult>>>,
    /// Writes made through this cache, so a load never overwrites a value
    /// written after it started.
    writes: WriteTracker,
    generations: generations::Generations,
    /// The epochs of tags, as last read (see `tags.rs`).
    tag_epochs: RwLock<HashMap<String, tags::KnownEpoch>>,
    /// Where category generations and tag markers are read and bumped: the backend, or
    /// the shared tier under an L1 (see
    /// [`CacheBuilder::generation_backend`]).
    generation_backend: Arc<dyn CacheBackend>,
    /// The backend under the stack's wrappers, for a rate limiter (see
    /// [`CacheBuilder::plain_backend`]).
    plain_backend: Arc<dyn CacheBackend>,
    generation_refresh: Duration,
    fail_safe: Option<FailSafe>,
    refresh_ahead: Option<f64>,
    /// The counters of the fail-open layer in the stack, if attached.
    fail_open: Option<FailOpenHandle>,
    /// The counters of the two-level layer in the stack, if attached.
    tiered: Option<TieredHandle>,
    /// The distributed single flight, if on.
    distributed: Option<Distributed>,
    last_report: Mutex<Option<CacheStats>>,
    report_thresholds: ReportThresholds,
    closed: AtomicBool,
}

thread_local! {
    /// The buffer [`Cache::read_now`] renders full keys into.
    static FULL_KEY: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

/// How far a read got without waiting (see `Cache::read_now`).
pub(super) enum ReadNow<A = Option<Bytes>> {
    /// The backend answered: the value, or (a lent read) whether there was
    /// one.
    Answered(Result<A>),
    /// The backend did not answer now.
    Pending(Pending),
}

/// What a read that was not answered now did (see `Cache::read_now`).
pub(super) enum Pending {
    /// The full key, for the awaited read.
    Rendered(String),
    /// Nothing done: read the async way.
    Unknown,
}

/// A full key as [`Cache::read_now_by`] asks the backend for it.
enum Parts<'a> {
    /// `{prefix}:` and the key's text.
    Joined(&'a str, &'a str),
    Whole(&'a str),
}

/// Builds a [`Cache`]; from [`Cache::builder`].
pub struct CacheBuilder<C: Codec = AnyCodec> {
    backend: Arc<dyn CacheBackend>,
    codec: C,
    prefix: String,
    policy: Arc<dyn TtlPolicy>,
    generation_backend: Option<Arc<dyn CacheBackend>>,
    plain_backend: Option<Arc<dyn CacheBackend>>,
    generation_refresh: Duration,
    fail_safe: Option<FailSafe>,
    refresh_ahead: Option<f64>,
    fail_open: Option<FailOpenHandle>,
    tiered: Option<TieredHandle>,
    report_thresholds: ReportThresholds,
    distributed: Option<Distributed>,
}

impl Cache<AnyCodec> {
    /// A cache over `backend` with the defaults: prefix `cache`, JSON,
    /// values never expire unless a TTL is given.
    pub fn new(backend: Arc<dyn CacheBackend>) -> Self {
        Cache::builder(backend)
            .build()
            .unwrap_or_else(|_| unreachable!("the default prefix is valid"))
    }

    /// A builder over `backend`.
    pub fn builder(backend: Arc<dyn CacheBackend>) -> CacheBuilder<AnyCodec> {
        CacheBuilder {
            backend,
            codec: AnyCodec::Json,
            prefix: DEFAULT_PREFIX.to_owned(),
            policy: Arc::new(CategoryTtl::new(None)),
            generation_backend: None,
            plain_backend: None,
            generation_refresh: DEFAULT_GENERATION_REFRESH,
            fail_safe: None,
            refresh_ahead: None,
            fail_open: None,
            tiered: None,
            report_thresholds: ReportThresholds::default(),
            distributed: None,
        }
    }
}

impl<C: Codec> CacheBuilder<C> {
    /// The key prefix, e.g. the service name; it is the namespace `clear`
    /// removes.
    #[must_use]
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The codec; the cache's type follows it.
    pub fn codec<D: Codec>(self, codec: D) -> CacheBuilder<D> {
        CacheBuilder {
            backend: self.backend,
            codec,
            prefix: self.prefix,
            policy: self.policy,
            generation_backend: self.generation_backend,
            plain_backend: self.plain_backend,
            generation_refresh: self.generation_refresh,
            fail_safe: self.fail_safe,
            refresh_ahead: self.refresh_ahead,
            fail_open: self.fail_open,
            tiered: self.tiered,
            report_thresholds: self.report_thresholds,
            distributed: self.distributed,
        }
    }

    /// The TTL policy for writes with [`Ttl::Default`](crate::Ttl::Default).
    #[must_use]
    pub fn ttl_policy(mut self, policy: impl TtlPolicy) -> Self {
        self.policy = Arc::new(policy);
        self
    }

    /// How long a category generation or a tag's epoch read from the
    /// backend is trusted (default 1 s). Other instances see a category or
    /// tag invalidation within this time; `Duration::ZERO` reads it on
    /// every call.
    #[must_use]
    pub fn generation_refresh(mut self, every: Duration) -> Self {
        self.generation_refresh = every;
        self
    }

    /// Where category generations and tag markers are read and bumped,
    /// when not the backend itself: under a [`Tiered`](crate::layers::Tiered) L1 with no
    /// backplane, pass its shared tier (L2), so a generation is never read
    /// from an L1 copy (which lives up to `l1_max_ttl`) and a category
    /// invalidation reaches the other instances within the generation
    /// refresh. With a backplane, keep the default: the L1 copy of a
    /// generation is invalidated like any other key, and reading it is
    /// local. `cache::open` chooses this for you.
    #[must_use]
    pub fn generation_backend(mut self, backend: Arc<dyn CacheBackend>) -> Self {
        self.generation_backend = Some(backend);
        self
    }

    /// The backend under the stack's fail-open and L1 layers, which
    /// [`Cache::plain_backend`] and [`Cache::rate_limiter`] hand out: a
    /// rate limiter must see the backend's failures (to decide by its
    /// [`OnBackendError`](crate::OnBackendError)) and must count in the
    /// shared store, not in an L1 copy. Defaults to the backend the cache
    /// is built over. `cache::open` sets it to the URL's backend with its
    /// metrics and timeout layers (which pass errors on, not swallow them).
    #[must_use]
    pub fn plain_backend(mut self, backend: Arc<dyn CacheBackend>) -> Self {
        self.plain_backend = Some(backend);
        self
    }

    /// Turns fail-safe on: values are kept `max_stale` past their TTL and
    /// served by `get_or_set` when the loader fails or is slow (see
    /// [`FailSafe`]).
    #[must_use]
    pub fn fail_safe(mut self, fail_safe: FailSafe) -> Self {
        self.fail_safe = Some(fail_safe);
        self
    }

    /// Turns refresh-ahead on: a `get_or_set` hit in the last `fraction` of
    /// the value's TTL (e.g. 0.2: the last 20%) returns the value and starts
    /// one background reload, so hot keys are refreshed before they expire.
    /// `fraction` is clamped to `0.0..=1.0`.
    #[must_use]
    pub fn refresh_ahead(mut self, fraction: f64) -> Self {
        self.refresh_ahead = Some(if fraction.is_finite() {
            fraction.clamp(0.0, 1.0)
        } else {
            0.0
        });
        self
    }

    /// Attaches the counters of the [`FailOpen`](crate::layers::FailOpen)
    /// layer in the backend's stack, so [`Cache::stats`] and
    /// [`Cache::report`] show the backend failures it swallowed and its
    /// circuit breaker (`cache::open` does this when `fail_open` is
    /// configured).
    ///
    /// # Examples
    ///
    /// ```
    /// use cache::layers::{BreakerConfig, FailOpen};
    /// use cache::Cache;
    /// use cache::memory::MemoryBackend;
    /// use std::sync::Arc;
    ///
    /// let fail_open = FailOpen::new(MemoryBackend::new(), BreakerConfig::default());
    /// let handle = fail_open.handle();
    /// let cache = Cache::builder(Arc::new(fail_open))
    ///     .fail_open_stats(handle)
    ///     .build()?;
    /// assert!(!cache.stats().breaker_open);
    /// # Ok::<(), cache::Error>(())
    /// ```
    #[must_use]
    pub fn fail_open_stats(mut self, handle: FailOpenHandle) -> Self {
        self.fail_open = Some(handle);
        self
    }

    /// Attaches the counters of the [`Tiered`](crate::layers::Tiered)
    /// layer in the backend's stack, so [`Cache::stats`] and
    /// [`Cache::report`] show per-tier hits (`l1_hits`, `l2_hits`) and the
    /// backplane's invalidations (`cache::open` does this when `l1` is
    /// configured).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> cache::Result<()> {
    /// use cache::layers::{Tiered, TieredConfig};
    /// use cache::memory::MemoryBackend;
    /// use cache::{Cache, CacheKey};
    /// use std::sync::Arc;
    ///
    /// let tiered = Tiered::new(
    ///     Arc::new(MemoryBackend::new()),
    ///     Arc::new(MemoryBackend::new()), // Redis, in production
    ///     TieredConfig::default(),
    /// );
    /// let handle = tiered.handle();
    /// let cache = Cache::builder(Arc::new(tiered)).tiered_stats(handle).build()?;
    /// let key = CacheKey::new("user", 1)?;
    /// cache.set(&key, "Ada").await?;
    /// cache.get::<String>(&key).await?;
    /// let stats = cache.stats();
    /// assert_eq!((stats.hits, stats.l1_hits, stats.l2_hits), (1, 1, 0));
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn tiered_stats(mut self, handle: TieredHandle) -> Self {
        self.tiered = Some(handle);
        self
    }

    /// When [`Cache::report`]'s advice speaks up (default:
    /// [`ReportThresholds::default`], e.g. a hit rate under 50% after 100
    /// reads).
    #[must_use]
    pub fn report_thresholds(mut self, thresholds: ReportThresholds) -> Self {
        self.report_thresholds = thresholds;
        self
    }

    /// Turns the distributed single flight on: concurrent `get_or_set`
    /// loads of one key in different processes run the loader once, the
    /// others waiting on the key's lease in `lock` (shared by every
    /// instance, e.g. `cache::redis::RedisFlightLock` on the Redis the
    /// backend uses) and reading the value it stored.
    ///
    /// The in-process single flight stays first: per process, only the
    /// caller leading a key's load takes the lease. Waiters wake on the
    /// lock's release notification, at the latest after
    /// [`fallback_poll`](DistributedFlight::fallback_poll) or when the
    /// lease ends (its holder died), then race for the lease again if no
    /// value was stored. A loader that fails or asks not to cache hands the
    /// lease on, so the next instance loads. When the lock fails, the load
    /// runs here, counted in
    /// [`lease_fallbacks`](crate::CacheStats::lease_fallbacks). Leases live
    /// beside the value as `{key}:lease`; `clear` may remove them, which
    /// costs at most one more load.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> cache::Result<()> {
    /// use cache::{Cache, CacheKey, DistributedFlight, LocalFlightLock};
    /// use cache::memory::MemoryBackend;
    /// use std::sync::Arc;
    ///
    /// let shared = Arc::new(MemoryBackend::new());
    /// let lock = Arc::new(LocalFlightLock::new());
    /// let instance = || {
    ///     Cache::builder(shared.clone())
    ///         .distributed_single_flight(lock.clone(), DistributedFlight::default())
    ///         .build()
    /// };
    /// let (a, b) = (instance()?, instance()?);
    /// let key = CacheKey::new("report", 1)?;
    /// let slow = || async {
    ///     tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    ///     Ok::<_, std::io::Error>(42u32)
    /// };
    /// let (x, y) = tokio::join!(a.get_or_set(&key, slow), b.get_or_set(&key, slow));
    /// assert_eq!((x?, y?), (42, 42));
    /// assert_eq!(a.stats().loader_calls + b.stats().loader_calls, 1);
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn distributed_single_flight(
        mut self,
        lock: Arc<dyn FlightLock>,
        settings: DistributedFlight,
    ) -> Self {
        self.distributed = Some(Distributed::new(lock, settings));
        self
    }

    /// Builds the cache.
    ///
    /// # Errors
    ///
    /// [`InvalidKey`](ErrorKind::InvalidKey) for an invalid prefix.
    pub fn build(self) -> Result<Cache<C>> {
        validate_prefix(&self.prefix)?;
        let counters = Counters::new(&self.prefix);
        Ok(Cache {
            inner: Arc::new(Inner {
                generation_backend: self
                    .generation_backend
                    .unwrap_or_else(|| Arc::clone(&self.backend)),
                plain_backend: self
                    .plain_backend
                    .unwrap_or_else(|| Arc::clone(&self.backend)),
                backend: self.backend,
                codec: self.codec,
                prefix_colon: format!("{}:", self.prefix),
                prefix: self.prefix,
                policy: self.policy,
                counters,
                flights: Mutex::new(HashMap::new()),
                writes: WriteTracker::new(),
                generations: generations::Generations::new(),
                tag_epochs: RwLock::new(HashMap::new()),
                generation_refresh: self.generation_refresh,
                fail_safe: self.fail_safe,
                refresh_ahead: self.refresh_ahead,
                fail_open: self.fail_open,
                tiered: self.tiered,
                distributed: self.distributed,
                last_report: Mutex::new(None),
                report_thresholds: self.report_thresholds,
                closed: AtomicBool::new(false),
            }),
        })
    }
}
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<C: Codec> Cache<C> {
    /// Removes every key under this cache's prefix (and nothing else):
    /// values, the category generation keys and the tag markers; returns
    /// how many.
    ///
    /// # Errors
    ///
    /// The backend's errors.
    pub async fn clear(&self) -> Result<u64> {
        self.check_open()?;
        let namespace = format!("{}:", self.inner.prefix);
        let _write = self.inner.writes.begin_all();
        let removed = self.track((*self.inner.backend).clear(&namespace).await)?;
        // The tag markers went too: the next tagged read or write creates
        // new epochs instead of trusting the cleared ones.
        self.inner
            .tag_epochs
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        self.inner.counters.inc(Stat::Deletes, removed);
        Ok(removed)
    }

    /// The backend's health.
    ///
    /// # Errors
    ///
    /// The backend's errors.
    pub async fn health(&self) -> Result<Health> {
        self.check_open()?;
        self.track((*self.inner.backend).health().await)
    }

    /// A snapshot of the counters, with those of the fail-open layer
    /// ([`CacheBuilder::fail_open_stats`]) and of the two-level layer
    /// ([`CacheBuilder::tiered_stats`]) if attached.
    pub fn stats(&self) -> CacheStats {
        let mut stats = self.inner.counters.snapshot();
        let fail_open = self.inner.fail_open.as_ref();
        if let Some(fail_open) = fail_open.and_then(FailOpenHandle::stats) {
            stats = stats.with_fail_open(fail_open);
        }
        if let Some(tiers) = self.inner.tiered.as_ref().and_then(TieredHandle::stats) {
            stats = stats.with_tiers(tiers);
        }
        stats
    }

    /// The counters and the backend's health, with advice on what needs
    /// attention: a low hit rate, a high or rising rate of backend failures
    /// (compared with the previous report; errors returned and those a
    /// fail-open layer swallowed), failing loaders (the upstream, told apart
    /// from the backend), values that do not decode, stale values served,
    /// an open or recently tripped circuit breaker, an L1 near its capacity.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> cache::Result<()> {
    /// use cache::{Cache, CacheKey};
    /// use cache::memory::MemoryBackend;
    /// use std::sync::Arc;
    ///
    /// let cache = Cache::new(Arc::new(MemoryBackend::new()));
    /// for i in 0..200 {
    ///     cache.get::<u32>(&CacheKey::new("user", i)?).await?; // all misses
    /// }
    /// let report = cache.report().await;
    /// assert_eq!(report.advice[0].code, "low_hit_rate");
    /// println!("{report}");
    /// # Ok(())
    /// # }
    /// ```
    pub async fn report(&self) -> CacheReport {
        let health = (*self.inner.backend).health().await.ok();
        let stats = self.stats();
        let previous = lock(&self.inner.last_report).replace(stats);
        CacheReport::new(stats, previous, health, &self.inner.report_thresholds)
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.inner.prefix
    }

    /// The codec.
    pub fn codec(&self) -> &C {
        &self.inner.codec
    }

    /// The backend (to reach byte-level operations): the top of the stack,
    /// with its wrappers (fail-open, timeouts, L1).
    pub fn backend(&self) -> &Arc<dyn CacheBackend> {
        &self.inner.backend
    }

    /// The backend under the stack's fail-open and L1 layers: from
    /// `cache::open`, the URL's backend with its metrics and timeout layers
    /// (which pass failures on); else the one set with
    /// [`CacheBuilder::plain_backend`], else [`backend`](Cache::backend).
    pub fn plain_backend(&self) -> &Arc<dyn CacheBackend> {
        &self.inner.plain_backend
    }

    /// A [`RateLimiter`](crate::RateLimiter) builder over the
    /// [plain backend](Cache::plain_backend), under this cache's prefix: the
    /// limiter sees the backend's failures and decides them by each rule's
    /// [`OnBackendError`](crate::OnBackendError), instead of sharing the
    /// cache's breaker (whose "miss" answers it could not tell from empty
    /// counters), and counts in the shared store, not in an L1.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> cache::Result<()> {
    /// use cache::{CacheConfig, Rule};
    ///
    /// let cache = cache::open(&CacheConfig::from_url("memory://")).await?;
    /// let limiter = cache.rate_limiter().rule("login", Rule::per_minute(5)).build()?;
    /// for _ in 0..5 {
    ///     assert!(limiter.check("login", "ada").await?.allowed);
    /// }
    /// assert!(!limiter.check("login", "ada").await?.allowed);
    /// # Ok(())
    /// # }
    /// ```
    pub fn rate_limiter(&self) -> crate::RateLimiterBuilder {
        crate::RateLimiter::builder(Arc::clone(&self.inner.plain_backend))
            .prefix(self.inner.prefix.clone())
    }

    /// The full key `key` is stored under now (with its category's current
    /// generation).
    ///
    /// # Errors
    ///
    /// [`InvalidKey`](ErrorKind::InvalidKey) when the full key is over
    /// [`MAX_KEY_LEN`](crate::MAX_KEY_LEN) bytes;
    /// [`Closed`](ErrorKind::Closed) after [`close`](Cache::close); the
    /// backend's errors while reading the generation. The first two are
    /// counted in [`CacheStats::caller_errors`](crate::CacheStats::caller_errors).
    pub async fn full_key(&self, key: &CacheKey) -> Result<String> {
        self.check_open()?;
        let generation = self.generation(key.category()).await?;
        let full = key.render(&self.inner.prefix, generation);
        self.callers(crate::backend::check_key(&full, crate::MAX_KEY_LEN))?;
        Ok(full)
    }

    /// The stored bytes of `key`, and its full key when it was rendered
    /// on the heap: read now when the backend answers without waiting
    /// ([`CacheBackend::get_now`]), else awaited.
    pub(super) async fn read_stored(
        &self,
        key: &CacheKey,
    ) -> Result<(Option<Bytes>, Option<String>)> {
        let now = match self.read_now(key) {
            ReadNow::Answered(stored) => Ok(stored?),
            ReadNow::Pending(pending) => Err(pending),
        };
        self.read_rest(key, now).await
    }

    /// The rest of a read after [`read_now`](Cache::read_now): the value it
    /// got (`Ok`), or the awaited read of one that got no answer, with the
    /// full key it rendered. `now` is given whole (moved, not matched by
    /// the caller): what a caller matches stays in its future across the
    /// awaited read.
    pub(super) async fn read_rest(
        &self,
        key: &CacheKey,
        now: std::result::Result<Option<Bytes>, Pending>,
    ) -> Result<(Option<Bytes>, Option<String>)> {
        match now {
            Ok(stored) => Ok((stored, None)),
            Err(Pending::Rendered(full)) => {
                let stored = self.track((*self.inner.backend).get(&full).await)?;
                Ok((stored, Some(full)))
            }
            Err(Pending::Unknown) => {
                let (stored, full) = Box::pin(self.read_unknown(key)).await?;
                Ok((stored, Some(full)))
            }
        }
    }

    /// The read of `key` the async way from the start (the generation
    /// read if it is not known), with the full key it rendered. Callers
    /// box it: the generation's read stays off the future of a read whose
    /// generation is known.
    pub(super) async fn read_unknown(&self, key: &CacheKey) -> Result<(Option<Bytes>, String)> {
        let full = self.full_key(key).await?;
        let stored = self.track((*self.inner.backend).get(&full).await)?;
        Ok((stored, full))
    }

    /// `full` if rendered, else the full key of `key` now.
    pub(super) async fn or_full_key(&self, key: &CacheKey, full: Option<String>) -> Result<String> {
        match full {
            Some(full) => Ok(full),
            None => self.full_key(key).await,
        }
    }

    /// The read of `key` as far as it can go now: the category's
    /// generation is trusted (no read of it needed), the full key is
    /// rendered into a buffer of the thread's, and the backend answers now
    /// or the full key is handed back for the awaited read.
    /// [`Pending::Unknown`] means "the async way from the start" (which
    /// also reports what stopped this one: a closed cache, an invalid key).
    pub(super) fn read_now(&self, key: &CacheKey) -> ReadNow {
        self.read_now_by(key, |backend, key| match key {
            Parts::Joined(head, tail) => backend.get_now_joined(head, tail),
            Parts::Whole(full) => backend.get_now(full),
        })
    }

    /// [`read_now`](Cache::read_now) that lends the value to `read` (see
    /// [`CacheBackend::read_now_joined`]) rather than return it.
    pub(super) fn read_now_lent(
        &self,
        key: &CacheKey,
        read: &mut dyn FnMut(&Bytes),
    ) -> ReadNow<bool> {
        self.read_now_by(key, |backend, key| match key {
            Parts::Joined(head, tail) => backend.read_now_joined(head, tail, read),
            Parts::Whole(full) => Some(lend(backend.get_now(full)?, read)),
        })
    }

    /// [`read_now`](Cache::read_now), asking the backend with `ask`: first
    /// for the key in its two parts (at generation 0), then whole.
    #[inline(always)]
    fn read_now_by<A>(
        &self,
        key: &CacheKey,
        mut ask: impl FnMut(&dyn CacheBackend, Parts<'_>) -> Option<Result<A>>,
    ) -> ReadNow<A> {
        if self.inner.closed.load(Ordering::Relaxed) {
            return ReadNow::Pending(Pending::Unknown);
        }
        let Some(generation) = self.trusted_generation(key.category()) else {
            return ReadNow::Pending(Pending::Unknown);
        };
        // At generation 0 the full key is `{prefix}:` and the key's text:
        // a backend that reads it in those two parts (memory) needs no join.
        let (head, tail) = (self.inner.prefix_colon.as_str(), key.text());
        if generation == 0 && head.len() + tail.len() <= crate::MAX_KEY_LEN {
            if let Some(answer) = ask(&*self.inner.backend, Parts::Joined(head, tail)) {
                return ReadNow::Answered(self.track(answer));
            }
        }
        FULL_KEY.with(|buffer| {
            // Busy only if a backend's `get_now` reads a `Cache` itself.
            let Ok(mut full) = buffer.try_borrow_mut() else {
                return ReadNow::Pending(Pending::Unknown);
            };
            full.clear();
            key.render_into(&self.inner.prefix, generation, &mut full);
            if full.len() > crate::MAX_KEY_LEN {
                return ReadNow::Pending(Pending::Unknown);
            }
            match ask(&*self.inner.backend, Parts::Whole(&full)) {
                Some(answer) => ReadNow::Answered(self.track(answer)),
                // The buffer itself goes with the awaited read (no copy);
                // `recycle` brings it back.
                None => ReadNow::Pending(Pending::Rendered(std::mem::take(&mut *full))),
            }
        })
    }

    /// Gives a full key's buffer back to this thread for the next
    /// [`read_now`](Cache::read_now) to render into, if the thread has none
    /// (an awaited read took it): a read of a backend that does not answer
    /// at once (Redis) then allocates no key.
    pub(super) fn recycle(full: Option<String>) {
        let Some(full) = full else { return };
        FULL_KEY.with(|buffer| {
            if let Ok(mut buffer) = buffer.try_borrow_mut() {
                if buffer.capacity() == 0 {
                    *buffer = full;
                }
            }
        });
    }

    /// Shuts the cache down: later calls on it (and its clones) fail with
    /// [`Closed`](ErrorKind::Closed), and the backend's background work
    /// (e.g. the memory backend's sweeper) stops.
    ///
    /// # Errors
    ///
    /// The backend's errors while closing.
    pub async fn close(&self) -> Result<()> {
        if self.inner.closed.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        (*self.inner.backend).close().await
    }

    fn check_open(&self) -> Result<()> {
        if self.inner.closed.load(Ordering::Relaxed) {
            // A call after `close` is the caller's mistake (see
            // `is_callers` for a backend's `Closed`).
            self.callers(Err(Error::new(ErrorKind::Closed, "the cache is closed")))
        } else {
            Ok(())
        }
    }

    /// `result`, with its error counted as the caller's: for checks of the
    /// caller's input (a category, a pattern, a tag, a value to encode)
    /// before any backend call.
    #[inline]
    fn callers<T>(&self, result: Result<T>) -> Result<T> {
        if result.is_err() {
            self.inner.counters.inc(Stat::Errors, 1);
            self.inner.counters.inc(Stat::CallerErrors, 1);
        }
        result
    }
    fn encode<T: Serialize + ?Sized>(&self, value: &T) -> Result<Bytes> {
        // A value the codec cannot encode is the caller's to fix.
        self.callers(self.inner.codec.encode(value))
    }

    #[inline(always)]
    fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T> {
        self.inner
            .codec
            .decode(bytes)
            .inspect_err(|err| self.count_decode_error(err))
    }

    fn count_decode_error(&self, err: &Error) {
        self.inner.counters.inc(Stat::DecodeErrors, 1);
        self.inner.counters.inc(Stat::Errors, 1);
        tracing::debug!(error = %err, "a stored value did not decode");
    }

    /// `result`, with its error counted. Only the error's kind, a value,
    /// goes out of line: a call given the error itself kept the `Result`
    /// in memory and cost every hit 5 instructions (callgrind,
    /// `Cache::get`).
    #[inline(always)]
    fn track<T>(&self, result: Result<T>) -> Result<T> {
        if let Err(err) = &result {
            self.count_failure(err.kind());
        }
        result
    }

    /// Counts an error returned (or logged in place of a result), and
    /// whether it is the caller's rather than the backend's.
    fn count_error(&self, err: &Error) {
        self.count_failure(err.kind());
    }

    #[cold]
    #[inline(never)]
    fn count_failure(&self, kind: ErrorKind) {
        self.inner.counters.inc(Stat::Errors, 1);
        if is_callers(kind, &self.inner.closed) {
            self.inner.counters.inc(Stat::CallerErrors, 1);
        }
    }
}

/// Whether an error of `kind`, returned by a backend, is the caller's to
/// fix (counted in `caller_errors`) rather than the backend's failure. A
/// backend's `Closed` is the caller's when it follows [`Cache::close`]
/// (`closed`: a call that passed `check_open` before it, or that reached
/// a backend without that check); otherwise the backend was closed under
/// a live cache, its failure (as `FailOpen` treats it).
fn is_callers(kind: ErrorKind, closed: &AtomicBool) -> bool {
    match kind {
        ErrorKind::InvalidKey | ErrorKind::InvalidValue | ErrorKind::Unsupported => true,
        ErrorKind::Closed => closed.load(Ordering::Relaxed),
        _ => false,
    }
}
