//! `Tiered`: a local L1 copy in front of an authoritative L2.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;

use crate::backend::{
    check_key, check_namespace, check_value, key_len_fits, CacheBackend, Capabilities, Health,
    HealthStatus, KeyTtl, SetMode, SetOptions,
};
use crate::backplane::{Backplane, BackplaneEvent, BackplaneMessage, Invalidation};
use crate::error::Result;
use crate::stats::Striped;
use crate::write_tracker::{Snapshot, Write, WriteTracker};

const NAME: &str = "tiered";

/// How a [`Tiered`] keeps its L1 copies.
///
/// # Examples
///
/// ```
/// use cache::layers::TieredConfig;
/// use std::time::Duration;
///
/// let config = TieredConfig::default().with_l1_max_ttl(Duration::from_secs(5));
/// assert_eq!(config.l1_max_ttl, Duration::from_secs(5));
/// assert_eq!(TieredConfig::default().l1_max_ttl, Duration::from_secs(60));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct TieredConfig {
    /// The longest an L1 copy lives (default 60 s). It is also the longest
    /// a change made by *another* instance can go unseen here, so it is the
    /// staleness bound of the tier. `Duration::ZERO` keeps nothing in L1.
    pub l1_max_ttl: Duration,
}

impl Default for TieredConfig {
    fn default() -> Self {
        TieredConfig {
            l1_max_ttl: Duration::from_secs(60),
        }
    }
}

impl TieredConfig {
    /// Sets the longest an L1 copy lives.
    ///
    /// # Examples
    ///
    /// ```
    /// use cache::layers::TieredConfig;
    /// use std::time::Duration;
    ///
    /// let config = TieredConfig::default().with_l1_max_ttl(Duration::from_millis(500));
    /// assert_eq!(config.l1_max_ttl, Duration::from_millis(500));
    /// ```
    #[must_use]
    pub fn with_l1_max_ttl(mut self, l1_max_ttl: Duration) -> Self {
        self.l1_max_ttl = l1_max_ttl;
        self
    }
}

/// Counters of a [`Tiered`], from [`Tiered::stats`]. Each key read by `get`
/// or `get_many` counts once, in exactly one of the three.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> cache::Result<()> {
/// use cache::layers::{Tiered, TieredConfig};
/// use cache::CacheBackend;
/// use cache::memory::MemoryBackend;
/// use std::sync::Arc;
///
/// let tiered = Tiered::new(
///     Arc::new(MemoryBackend::new()),
///     Arc::new(MemoryBackend::new()),
///     TieredConfig::default(),
/// );
/// assert_eq!(tiered.get("k").await?, None);
/// let stats = tiered.stats();
/// assert_eq!((stats.l1_hits, stats.l2_hits, stats.misses), (0, 0, 1));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct TieredStats {
    /// Keys answered by L1.
    pub l1_hits: u64,
    /// Keys L1 did not have and L2 did (each one then copied into L1).
    pub l2_hits: u64,
    /// Keys neither tier had.
    pub misses: u64,
    /// Invalidations received from other instances over the backplane
    /// (counted once applied: the L1 copies they name are gone).
    pub invalidations_received: u64,
    /// Invalidations this instance published on the backplane.
    pub invalidations_published: u64,
    /// Times the backplane subscription was interrupted and L1 was cleared
    /// (counted once the copies are gone).
    pub resyncs: u64,
    /// Invalidations that could not be published.
    pub publish_errors: u64,
}

/// A two-level backend: a fast local L1 (in practice a bounded
/// `MemoryBackend`) in front of an authoritative, usually shared L2 (e.g.
/// Redis, itself wrapped in `Timeout`/`FailOpen` if wanted).
///
/// L1 holds *copies* of L2 values. Everything this instance does keeps the
/// copies from outliving or contradicting L2. What other instances do to L2
/// is seen here when the L1 copy expires
/// ([`l1_max_ttl`](TieredConfig::l1_max_ttl) is the staleness bound), or at
/// once with a [`Backplane`] ([`Tiered::with_backplane`]): every write,
/// delete, pattern delete and clear is then published, and each instance
/// drops the affected L1 copies when another instance's message arrives
/// (its own are ignored). When the subscription is interrupted, the
/// instance clears its whole L1 (it may have missed messages) while the
/// backplane resubscribes.
///
/// # Behavior
///
/// - `get`: an L1 hit is returned. Otherwise L2 answers; a found value is
///   copied into L1 with TTL `min(L2's remaining TTL, l1_max_ttl)` (one more
///   L2 round trip: `ttl`); a persistent L2 key gets `l1_max_ttl`; a key that
///   vanished in between is not copied.
/// - `get_many`: one L1 `get_many`, then **one** L2 `get_many` for the
///   distinct keys L1 missed; each found one is copied into L1 as `get`
///   copies it, with L2's remaining TTL (the `ttl` calls run concurrently,
///   so on a multiplexed Redis connection they cost about one round trip).
///   A copy never outlives its L2 original.
/// - `set` / `set_many`: L2 decides; when it stored the value, L1 gets a
///   copy with TTL `min(ttl, l1_max_ttl)` (`None`: `l1_max_ttl`), counted
///   from before the L2 call, so the copy never outlives the original. An
///   `IfAbsent` that L2 refused (the key is there), a zero TTL and a failed
///   L2 write all leave no L1 copy; the L2 error is returned. A write that
///   a fail-open L2 *skipped* (L2 down: `Ok(false)` for a plain `set`, or
///   an `IfAbsent` refused while L2 does not have the key) keeps its L1
///   copy, so a service keeps serving what it loaded and wrote through an
///   outage ([`FailOpen`](crate::layers::FailOpen) invalidates the key in
///   L2 once it is back).
/// - `delete` / `delete_many` / `delete_matching` / `clear`: both tiers; the
///   count is L2's.
/// - `expire` and `incr`: L2's answer; the L1 copy is dropped (the next
///   `get` copies the new value or TTL from L2). Dropping is chosen over
///   re-applying the TTL to L1 because it is right whatever L2 did.
/// - `exists`: true when L1 has the key, else L2's answer. `ttl` and
///   `scan`: L2's answer.
/// - `health`: L2's, with L1's details added under `l1_` (and `l1_status`);
///   the status is the worse of the two.
/// - `capabilities`: L2's, with `max_key_len` and `max_value_size` the
///   smaller of the two tiers and `sub_second_ttl` / `pattern_delete` only
///   when both tiers have them (read once, by [`Tiered::new`]). Keys and
///   values over the limits fail with `InvalidKey` / `InvalidValue` before
///   either tier is touched.
/// - `close`: both tiers.
///
/// Every write drops the L1 copy *before* it calls L2 and copies the new
/// value after, so a call abandoned half-way (a timeout, a dropped future)
/// leaves at worst a missing L1 copy, never a stale one. Concurrent calls
/// of this instance on one key are tracked: a read does not copy a value
/// into L1 while a write of that key is in flight, and when two writes (or
/// a read's copy and a write) overlap, the L1 copy is dropped rather than
/// risk keeping the loser's value.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> cache::Result<()> {
/// use cache::layers::{Tiered, TieredConfig};
/// use cache::{CacheBackend, SetOptions};
/// use cache::memory::{MemoryBackend, MemoryConfig};
/// use std::sync::Arc;
/// use std::time::Duration;
///
/// let l1 = Arc::new(MemoryBackend::with_config(MemoryConfig::default().with_max_entries(10_000)));
/// let l2 = Arc::new(MemoryBackend::new()); // Redis, in production
/// let tiered = Tiered::new(
///     l1.clone(),
///     l2.clone(),
///     TieredConfig::default().with_l1_max_ttl(Duration::from_secs(10)),
/// );
///
/// tiered.set("app:user:1", "ada".into(), SetOptions::default()).await?;
/// assert!(l2.exists("app:user:1").await?); // L2 has the value...
/// assert!(l1.exists("app:user:1").await?); // ...and L1 a copy, for 10 s at most
/// assert_eq!(tiered.get("app:user:1").await?.as_deref(), Some(&b"ada"[..]));
/// assert_eq!(tiered.stats().l1_hits, 1);
/// # Ok(())
/// # }
/// ```
pub struct Tiered {
    // Called as `(*self.l1).op()`, not through the `Arc` (which would box a
    // second future via `impl CacheBackend for Arc<T>`).
    l1: Arc<dyn CacheBackend>,
    l2: Arc<dyn CacheBackend>,
    config: TieredConfig,
    caps: Capabilities,
    writes: Arc<WriteTracker>,
    remote: Option<Remote>,
    /// Shared with the backplane listener and with [`TieredHandle`]s.
    counters: Arc<TierCounters>,
}

/// The backplane of a [`Tiered`] and its listener task.
struct Remote {
    backplane: Arc<dyn Backplane>,
    origin: u64,
    listener: tokio::task::AbortHandle,
}

/// The counters behind [`TieredStats`]. The reads' outcomes are
/// [striped](Striped): every L1 hit of every thread counts one.
#[derive(Default)]
struct TierCounters {
    /// Indexed by [`L1_HIT`], [`L2_HIT`] and [`MISS`].
    reads: Striped<3>,
    received: AtomicU64,
    published: AtomicU64,
    resyncs: AtomicU64,
    publish_errors: AtomicU64,
}

const L1_HIT: usize = 0;
const L2_HIT: usize = 1;
const MISS: usize = 2;

impl TierCounters {
    fn snapshot(&self) -> TieredStats {
        TieredStats {
            l1_hits: self.reads.sum(L1_HIT),
            l2_hits: self.reads.sum(L2_HIT),
            misses: self.reads.sum(MISS),
            invalidations_received: self.received.load(Relaxed),
            invalidations_published: self.published.load(Relaxed),
            resyncs: self.resyncs.load(Relaxed),
            publish_errors: self.publish_errors.load(Relaxed),
        }
    }
}

/// Reads the counters of a [`Tiered`] that is out of reach (wrapped in an
/// `Arc<dyn CacheBackend>`, under other layers); from [`Tiered::handle`].
///
/// It does not keep the layer alive: once the `Tiered` is dropped (and its
/// backplane listener has stopped), [`stats`](Self::stats) answers `None`.
#[derive(Debug, Clone)]
pub struct TieredHandle {
    counters: Weak<TierCounters>,
}

impl TieredHandle {
    /// The tier's counters, as [`Tiered::stats`]; `None` once the layer is
    /// dropped.
    pub fn stats(&self) -> Option<TieredStats> {
        self.counters.upgrade().map(|counters| counters.snapshot())
    }
}

impl Drop for Tiered {
    fn drop(&mut self) {
        if let Some(remote) = &self.remote {
            remote.listener.abort();
        }
    }
}

impl fmt::Debug for Tiered {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tiered")
            .field("l1", &self.l1.name())
            .field("l2", &self.l2.name())
            .field("config", &self.config)
            .field("stats", &self.stats())
            .finish()
    }
}

impl Tiered {
    /// A tier of `l1` copies in front of `l2`.
    ///
    /// # Examples
    ///
    /// ```
    /// use cache::layers::{Tiered, TieredConfig};
    /// use cache::CacheBackend;
    /// use cache::memory::MemoryBackend;
    /// use std::sync::Arc;
    ///
    /// let tiered = Tiered::new(
    ///     Arc::new(MemoryBackend::new()),
    ///     Arc::new(MemoryBackend::new()),
    ///     TieredConfig::default(),
    /// );
    /// assert_eq!(tiered.name(), "tiered");
    /// ```
    pub fn new(l1: Arc<dyn CacheBackend>, l2: Arc<dyn CacheBackend>, config: TieredConfig) -> Self {
        let caps = combine(l1.capabilities(), l2.capabilities());
        Tiered {
            l1,
            l2,
            config,
            caps,
            // Exact: a write skipped by a fail-open L2 keeps the only copy
            // there is (see `write_tracker`).
            writes: Arc::new(WriteTracker::exact()),
            remote: None,
            counters: Arc::default(),
        }
    }

    /// Connects this tier to a backplane: its writes are published, and
    /// other instances' invalidations drop the L1 copies here.
    ///
    /// # Errors
    ///
    /// The backplane's errors while subscribing.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> cache::Result<()> {
    /// use cache::layers::{Tiered, TieredConfig};
    /// use cache::{CacheBackend, LocalBackplane, SetOptions};
    /// use cache::memory::MemoryBackend;
    /// use std::sync::Arc;
    /// use std::time::Duration;
    ///
    /// let shared_l2: Arc<dyn CacheBackend> = Arc::new(MemoryBackend::new());
    /// let backplane = Arc::new(LocalBackplane::new());
    /// let a = Tiered::new(Arc::new(MemoryBackend::new()), Arc::clone(&shared_l2), TieredConfig::default())
    ///     .with_backplane(backplane.clone()).await?;
    /// let b = Tiered::new(Arc::new(MemoryBackend::new()), shared_l2, TieredConfig::default())
    ///     .with_backplane(backplane).await?;
    /// a.set("k", "old".into(), SetOptions::default()).await?;
    /// assert_eq!(b.get("k").await?.as_deref(), Some(&b"old"[..])); // now in b's L1
    /// a.set("k", "new".into(), SetOptions::default()).await?;
    /// tokio::time::sleep(Duration::from_millis(50)).await; // delivery
    /// assert_eq!(b.get("k").await?.as_deref(), Some(&b"new"[..]));
    /// # Ok(())
    /// # }
    /// ```
    pub async fn with_backplane(mut self, backplane: Arc<dyn Backplane>) -> Result<Self> {
        let events = backplane.subscribe().await?;
        let origin = fastrand::u64(1..);
        let listener = tokio::spawn(listen(
            events,
            Arc::clone(&self.l1),
            Arc::clone(&self.writes),
            origin,
            Arc::clone(&self.counters),
        ))
        .abort_handle();
        self.remote = Some(Remote {
            backplane,
            origin,
            listener,
        });
        Ok(self)
    }

    /// The invalidation a write is about to make, to publish to the other
    /// instances once L2 has it ([`Announcement::send`]). Made before the
    /// L2 call: if the write's future is dropped after that (L2 may have
    /// applied it), the announcement is published from a task of its own.
    fn announcement(&self, invalidation: impl FnOnce() -> Invalidation) -> Announcement {
        Announcement {
            armed: self.remote.as_ref().map(|remote| {
                let message = BackplaneMessage::new(remote.origin, invalidation());
                (
                    Arc::clone(&remote.backplane),
                    message,
                    Arc::clone(&self.counters),
                )
            }),
        }
    }

    fn announce_keys(&self, keys: &[&str]) -> Announcement {
        if keys.is_empty() {
            return Announcement { armed: None };
        }
        self.announcement(|| Invalidation::Keys(keys.iter().map(|k| (*k).to_owned()).collect()))
    }

    /// The L1 backend (the local copies).
    ///
    /// # Examples
    ///
    /// ```
    /// use cache::layers::{Tiered, TieredConfig};
    /// use cache::memory::MemoryBackend;
    /// use std::sync::Arc;
    ///
    /// let tiered = Tiered::new(
    ///     Arc::new(MemoryBackend::new()),
    ///     Arc::new(MemoryBackend::new()),
    ///     TieredConfig::default(),
    /// );
    /// assert_eq!(tiered.l1().name(), "memory");
    /// ```
    pub fn l1(&self) -> &Arc<dyn CacheBackend> {
        &self.l1
    }

    /// The L2 backend (the authoritative one).
    ///
    /// # Examples
    ///
    /// ```
    /// use cache::layers::{Tiered, TieredConfig};
    /// use cache::memory::MemoryBackend;
    /// use std::sync::Arc;
    ///
    /// let tiered = Tiered::new(
    ///     Arc::new(MemoryBackend::new()),
    ///     Arc::new(MemoryBackend::new()),
    ///     TieredConfig::default(),
    /// );
    /// assert_eq!(tiered.l2().name(), "memory");
    /// ```
    pub fn l2(&self) -> &Arc<dyn CacheBackend> {
        &self.l2
    }

    /// The configuration.
    ///
    /// # Examples
    ///
    /// ```
    /// use cache::layers::{Tiered, TieredConfig};
    /// use cache::memory::MemoryBackend;
    /// use std::sync::Arc;
    /// use std::time::Duration;
    ///
    /// let config = TieredConfig::default().with_l1_max_ttl(Duration::from_secs(1));
    /// let tiered = Tiered::new(Arc::new(MemoryBackend::new()), Arc::new(MemoryBackend::new()), config);
    /// assert_eq!(tiered.config(), config);
    /// ```
    pub fn config(&self) -> TieredConfig {
        self.config
    }

    /// Where reads were answered, since the tier was made.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> cache::Result<()> {
    /// use cache::layers::{Tiered, TieredConfig};
    /// use cache::{CacheBackend, SetOptions};
    /// use cache::memory::MemoryBackend;
    /// use std::sync::Arc;
    ///
    /// let l2 = Arc::new(MemoryBackend::new());
    /// l2.set("k", "v".into(), SetOptions::default()).await?;
    /// let tiered = Tiered::new(Arc::new(MemoryBackend::new()), l2, TieredConfig::default());
    /// tiered.get("k").await?; // from L2, copied into L1
    /// tiered.get("k").await?; // from L1
    /// let stats = tiered.stats();
    /// assert_eq!((stats.l1_hits, stats.l2_hits, stats.misses), (1, 1, 0));
    /// # Ok(())
    /// # }
    /// ```
    pub fn stats(&self) -> TieredStats {
        self.counters.snapshot()
    }

    /// A handle that reads this tier's counters once it is out of reach
    /// (wrapped in an `Arc<dyn CacheBackend>`, under other layers), for
    /// [`CacheBuilder::tiered_stats`](crate::CacheBuilder::tiered_stats).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> cache::Result<()> {
    /// use cache::layers::{Tiered, TieredConfig};
    /// use cache::{CacheBackend, SetOptions};
    /// use cache::memory::MemoryBackend;
    /// use std::sync::Arc;
    ///
    /// let tiered = Tiered::new(
    ///     Arc::new(MemoryBackend::new()),
    ///     Arc::new(MemoryBackend::new()),
    ///     TieredConfig::default(),
    /// );
    /// let handle = tiered.handle();
    /// let stack: Arc<dyn CacheBackend> = Arc::new(tiered);
    /// stack.set("k", "v".into(), SetOptions::default()).await?;
    /// stack.get("k").await?;
    /// assert_eq!(handle.stats().map(|s| s.l1_hits), Some(1));
    /// drop(stack);
    /// assert_eq!(handle.stats(), None);
    /// # Ok(())
    /// # }
    /// ```
    pub fn handle(&self) -> TieredHandle {
        TieredHandle {
            counters: Arc::downgrade(&self.counters),
        }
    }

    /// Counts an L1 hit of `value`.
    fn l1_hit(&self, value: Bytes) -> Bytes {
        self.count_l1_hit();
        value
    }

    fn count_l1_hit(&self) {
        self.counters.reads.add(L1_HIT, 1);
        tier_hit(Tier::L1, 1);
    }

    /// What `get_now` (or the lent read) answers for L1's answer `read`: a
    /// hit (`is_hit`, counted), an error, or `None` on a miss (left to
    /// `get`, which reads L2).
    #[inline]
    fn l1_answer<T>(&self, read: Result<T>, is_hit: impl FnOnce(&T) -> bool) -> Option<Result<T>> {
        match read {
            Ok(answer) if is_hit(&answer) => {
                self.count_l1_hit();
                Some(Ok(answer))
            }
            Ok(_) => None,
            Err(err) => Some(Err(err)),
        }
    }

    #[inline]
    fn check_key(&self, key: &str, op: &'static str) -> Result<()> {
        check_key(key, self.caps.max_key_len).map_err(|e| e.context(NAME, op))
    }

    fn check_value(&self, value: &[u8], op: &'static str) -> Result<()> {
        check_value(value, self.caps.max_value_size).map_err(|e| e.context(NAME, op))
    }

    /// The TTL of an L1 copy of a value written to L2 with `ttl`, the L2
    /// call having started at `started`; `None` when no copy should be kept.
    fn copy_ttl(&self, ttl: Option<Duration>, started: Instant) -> Option<Duration> {
        let ttl = match ttl {
            None => self.config.l1_max_ttl,
            Some(ttl) => ttl
                .saturating_sub(started.elapsed())
                .min(self.config.l1_max_ttl),
        };
        (!ttl.is_zero()).then_some(ttl)
    }

    /// Copies `value`, just read from L2, into L1, unless a write of this
    /// instance got in the way (then any copy made is dropped again).
    async fn fill(&self, key: &str, value: &Bytes, snapshot: Snapshot) {
        let asked = Instant::now();
        let ttl = match (*self.l2).ttl(key).await {
            Ok(KeyTtl::Missing) => return,
            Ok(KeyTtl::Persistent) => self.config.l1_max_ttl,
            Ok(KeyTtl::Expires(left)) => left
                .saturating_sub(asked.elapsed())
                .min(self.config.l1_max_ttl),
            Err(err) => {
                tracing::debug!(error = %err, "tiered: no L2 ttl, so no L1 copy");
                return;
            }
        };
        if ttl.is_zero() || !self.writes.unchanged(snapshot) {
            return;
        }
        // Until it is known whether a write overtook it, the copy is
        // provisional: a fill whose future is dropped meanwhile drops it.
        let mut copy = Provisional {
            l1: Some(Arc::clone(&self.l1)),
            key,
        };
        if let Err(err) = self
            .l1
            .set(key, value.clone(), SetOptions::ttl(Some(ttl)))
            .await
        {
            tracing::warn!(error = %err, "tiered: copying a value into L1 failed");
            return;
        }
        if !self.writes.unchanged(snapshot) {
            self.drop_copies(&[key]).await;
        }
        copy.l1 = None;
    }

    /// Ends `write`; if another write overlapped it, drops the L1 copies of
    /// `keys` (which of the two copies landed last is unknown).
    async fn settle(&self, write: Write<'_>, keys: &[&str]) {
        if !write.finish() {
            self.drop_copies(keys).await;
        }
    }

    /// Drops L1 copies after the L2 work is done; a failure is logged, not
    /// returned (L2 has the caller's answer already).
    async fn drop_copies(&self, keys: &[&str]) {
        if let Err(err) = (*self.l1).delete_many(keys).await {
            tracing::warn!(error = %err, "tiered: dropping L1 copies failed");
        }
    }
}

/// An invalidation a write will publish; see [`Tiered::announcement`].
struct Announcement {
    armed: Option<(Arc<dyn Backplane>, BackplaneMessage, Arc<TierCounters>)>,
}

impl Announcement {
    /// Publishes it now; a failure is counted and logged (L2 has the
    /// change; the others' copies expire by `l1_max_ttl`).
    async fn send(mut self) {
        if let Some((backplane, message, stats)) = &self.armed {
            publish(&**backplane, message, stats).await;
        }
        // Dropped mid-publish, it publishes again from a task: a duplicate
        // invalidation is harmless, a lost one is not.
        self.armed = None;
    }
}

impl Drop for Announcement {
    fn drop(&mut self) {
        let Some((backplane, message, stats)) = self.armed.take() else {
            return;
        };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move { publish(&*backplane, &message, &stats).await });
        }
    }
}

async fn publish(backplane: &dyn Backplane, message: &BackplaneMessage, stats: &TierCounters) {
    match backplane.publish(message).await {
        Ok(()) => {
            stats.published.fetch_add(1, Relaxed);
        }
        Err(err) => {
            stats.publish_errors.fetch_add(1, Relaxed);
            tracing::warn!(error = %err, backplane = backplane.name(), "tiered: publishing an invalidation failed");
        }
    }
}

/// An L1 copy that a cancelled fill must not leave behind: dropped (from a
/// task of its own) unless the fill clears `l1` first.
struct Provisional<'a> {
    l1: Option<Arc<dyn CacheBackend>>,
    key: &'a str,
}

impl Drop for Provisional<'_> {
    fn drop(&mut self) {
        let Some(l1) = self.l1.take() else {
            return;
        };
        let key = self.key.to_owned();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(err) = (*l1).delete(&key).await {
                    tracing::warn!(error = %err, "tiered: dropping a provisional L1 copy failed");
                }
            });
        }
    }
}

/// Drops the L1 copies other instances invalidate, until the subscription
/// ends (the backplane is gone) or the tier is dropped.
async fn listen(
    mut events: tokio::sync::mpsc::Receiver<BackplaneEvent>,
    l1: Arc<dyn CacheBackend>,
    writes: Arc<WriteTracker>,
    origin: u64,
    stats: Arc<TierCounters>,
) {
    while let Some(event) = events.recv().await {
        // Each drop counts as a write, so a read of L2 that raced the remote
        // change does not copy the old value into L1 afterwards.
        let result = match event {
            BackplaneEvent::Message(message) if message.origin == origin => continue,
            BackplaneEvent::Message(message) => {
                let applied = match message.invalidation {
                    Invalidation::Keys(keys) => {
                        let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
                        let _write = writes.begin_keys(&refs);
                        l1.delete_many(&refs).await.map(drop)
                    }
                    Invalidation::Pattern(pattern) => {
                        let _write = writes.begin_all();
                        l1.delete_matching(&pattern).await.map(drop)
                    }
                    Invalidation::Namespace(namespace) => {
                        let _write = writes.begin_all();
                        l1.clear(&namespace).await.map(drop)
                    }
                };
                // Counted once applied, so a reader of the count knows
                // the copies are gone.
                stats.received.fetch_add(1, Relaxed);
                applied
            }
            BackplaneEvent::Resync => {
                tracing::warn!("tiered: backplane interrupted, clearing L1");
                let cleared = {
                    let _write = writes.begin_all();
                    l1.delete_matching("*").await.map(drop)
                };
                // Counted once cleared, as `received`: a reader of the
                // count knows the copies are gone.
                stats.resyncs.fetch_add(1, Relaxed);
                cleared
            }
        };
        if let Err(err) = result {
            tracing::warn!(error = %err, "tiered: applying an invalidation to L1 failed");
        }
    }
}

/// The tier a read was served from.
#[derive(Clone, Copy)]
enum Tier {
    L1 = 0,
    L2 = 1,
}

/// Counts `n` hits in `tier` as `cache_tier_hits_total{tier="l1"|"l2"}`.
#[cfg(feature = "metrics")]
fn tier_hit(tier: Tier, n: u64) {
    use metrics::{Key, Label};
    // The keys are static: `counter!` with a label builds one (a vector)
    // on every call.
    static L1: [Label; 1] = [Label::from_static_parts("tier", "l1")];
    static L2: [Label; 1] = [Label::from_static_parts("tier", "l2")];
    static KEYS: [Key; 2] = [
        Key::from_static_parts("cache_tier_hits_total", &L1),
        Key::from_static_parts("cache_tier_hits_total", &L2),
    ];
    crate::stats::export(&KEYS[tier as usize], n);
}

#[cfg(not(feature = "metrics"))]
fn tier_hit(_tier: Tier, _n: u64) {}

/// The capabilities of L1 in front of L2.
fn combine(l1: Capabilities, l2: Capabilities) -> Capabilities {
    let mut caps = l2;
    caps.max_key_len = l1.max_key_len.min(l2.max_key_len);
    caps.max_value_size = l1.max_value_size.min(l2.max_value_size);
    // A copy kept to the second could be served after the original expired.
    caps.sub_second_ttl = l1.sub_second_ttl && l2.sub_second_ttl;
    // A pattern delete must reach the copies too.
    caps.pattern_delete = l1.pattern_delete && l2.pattern_delete;
    caps
}

fn severity(status: HealthStatus) -> u8 {
    match status {
        HealthStatus::Healthy => 0,
        HealthStatus::Degraded => 1,
        HealthStatus::Unhealthy => 2,
    }
}

fn status_name(status: HealthStatus) -> &'static str {
    match status {
        HealthStatus::Healthy => "healthy",
        HealthStatus::Degraded => "degraded",
        HealthStatus::Unhealthy => "unhealthy",
    }
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl CacheBackend for Tiered {
    fn name(&self) -> &'static str {
        NAME
    }

    fn capabilities(&self) -> Capabilities {
        self.caps
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        self.check_key(key, "get")?;
        if let Some(value) = (*self.l1).get(key).await? {
            return Ok(Some(self.l1_hit(value)));
        }
        let snapshot = self.writes.snapshot(key);
        let Some(value) = (*self.l2).get(key).await? else {
            self.counters.reads.add(MISS, 1);
            return Ok(None);
        };
        self.counters.reads.add(L2_HIT, 1);
        tier_hit(Tier::L2, 1);
        if let Some(snapshot) = snapshot {
            self.fill(key, &value, snapshot).await;
        }
        Ok(Some(value))
    }

    /// An L1 hit, answered now; an L1 miss is left to `get` (which reads
    /// the L1 again, then L2).
    fn get_now(&self, key: &str) -> Option<Result<Option<Bytes>>> {
        if let Err(err) = self.check_key(key, "get") {
            return Some(Err(err));
        }
        // `(*self.l1)`: on the `Arc` itself the call would go through
        // `impl CacheBackend for Arc<T>`, one call more.
        self.l1_answer((*self.l1).get_now(key)?, Option::is_some)
    }

    /// [`get_now`](CacheBackend::get_now) of the key `head` then `tail`,
    /// read from L1 in those two parts: an L1 hit, counted as one. A key
    /// this layer refuses (empty, too long) is left to the caller, which
    /// joins it and calls `get_now` (that reports the refusal).
    fn get_now_joined(&self, head: &str, tail: &str) -> Option<Result<Option<Bytes>>> {
        if !key_len_fits(head.len() + tail.len(), self.caps.max_key_len) {
            return None;
        }
        self.l1_answer((*self.l1).get_now_joined(head, tail)?, Option::is_some)
    }

    /// As `get_now_joined`, lent by L1.
    fn read_now_joined(
        &self,
        head: &str,
        tail: &str,
        read: &mut dyn FnMut(&Bytes),
    ) -> Option<Result<bool>> {
        if !key_len_fits(head.len() + tail.len(), self.caps.max_key_len) {
            return None;
        }
        self.l1_answer((*self.l1).read_now_joined(head, tail, read)?, |found| {
            *found
        })
    }

    async fn set(&self, key: &str, value: Bytes, opts: SetOptions) -> Result<bool> {
        self.check_key(key, "set")?;
        self.check_value(&value, "set")?;
        let write = self.writes.begin_keys(&[key]);
        (*self.l1).delete(key).await?;
        let started = Instant::now();
        let announcement = self.announce_keys(&[key]);
        let wrote = (*self.l2).set(key, value.clone(), opts).await?;
        // L2 said "not written": a refused `IfAbsent` (the key is there) or
        // a write a fail-open L2 skipped while down. Skipped, the value
        // stays in L1 (bounded by its TTL) so this instance keeps serving
        // it through the outage.
        let keep = wrote
            || match opts.mode {
                SetMode::IfAbsent => !(*self.l2).exists(key).await.unwrap_or(true),
                _ => true,
            };
        if keep {
            if let Some(ttl) = self.copy_ttl(opts.ttl, started) {
                if let Err(err) = (*self.l1).set(key, value, SetOptions::ttl(Some(ttl))).await {
                    tracing::warn!(error = %err, "tiered: copying a value into L1 failed");
                }
            }
        }
        self.settle(write, &[key]).await;
        announcement.send().await;
        Ok(wrote)
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        self.check_key(key, "delete")?;
        let _write = self.writes.begin_keys(&[key]);
        (*self.l1).delete(key).await?;
        let announcement = self.announce_keys(&[key]);
        let existed = (*self.l2).delete(key).await?;
        announcement.send().await;
        Ok(existed)
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        self.check_key(key, "exists")?;
        if (*self.l1).exists(key).await? {
            return Ok(true);
        }
        (*self.l2).exists(key).await
    }

    async fn ttl(&self, key: &str) -> Result<KeyTtl> {
        self.check_key(key, "ttl")?;
        (*self.l2).ttl(key).await
    }

    async fn expire(&self, key: &str, ttl: Option<Duration>) -> Result<bool> {
        self.check_key(key, "expire")?;
        let _write = self.writes.begin_keys(&[key]);
        (*self.l1).delete(key).await?;
        let announcement = self.announce_keys(&[key]);
        let existed = (*self.l2).expire(key, ttl).await?;
        announcement.send().await;
        Ok(existed)
    }

    async fn incr(&self, key: &str, delta: i64, ttl: Option<Duration>) -> Result<i64> {
        self.check_key(key, "incr")?;
        let _write = self.writes.begin_keys(&[key]);
        (*self.l1).delete(key).await?;
        let announcement = self.announce_keys(&[key]);
        let value = (*self.l2).incr(key, delta, ttl).await?;
        announcement.send().await;
        Ok(value)
    }

    async fn health(&self) -> Result<Health> {
        let l1 = (*self.l1).health().await?;
        let mut health = (*self.l2).health().await?;
        if severity(l1.status) > severity(health.status) {
            health.status = l1.status;
        }
        for (name, value) in l1.details {
            health.details.insert(format!("l1_{name}"), value);
        }
        health
            .details
            .insert("l1_status".to_string(), status_name(l1.status).to_string());
        health.details.insert(
            "l1_latency_us".to_string(),
            l1.latency.as_micros().to_string(),
        );
        if let Some(remote) = &self.remote {
            let stats = self.stats();
            health
                .details
                .insert("backplane".to_string(), remote.backplane.name().to_string());
            health
                .details
                .insert("backplane_resyncs".to_string(), stats.resyncs.to_string());
        }
        Ok(health)
    }

    async fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Bytes>>> {
        for key in keys {
            self.check_key(key, "get_many")?;
        }
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut out = (*self.l1).get_many(keys).await?;
        let l1_hits = out.iter().filter(|v| v.is_some()).count();
        self.counters.reads.add(L1_HIT, l1_hits as u64);
        tier_hit(Tier::L1, l1_hits as u64);
        if l1_hits == keys.len() {
            return Ok(out);
        }

        // The distinct keys L1 missed, each with its snapshot taken before
        // L2 is asked.
        let mut seen = HashSet::new();
        let missed: Vec<&str> = keys
            .iter()
            .zip(&out)
            .filter(|(key, value)| value.is_none() && seen.insert(**key))
            .map(|(key, _)| *key)
            .collect();
        let snapshots: Vec<Option<Snapshot>> =
            missed.iter().map(|key| self.writes.snapshot(key)).collect();
        let found = (*self.l2).get_many(&missed).await?;

        let by_key: HashMap<&str, &Bytes> = missed
            .iter()
            .zip(&found)
            .filter_map(|(key, value)| value.as_ref().map(|v| (*key, v)))
            .collect();
        for (key, slot) in keys.iter().zip(out.iter_mut()) {
            if slot.is_none() {
                match by_key.get(key) {
                    Some(value) => {
                        self.counters.reads.add(L2_HIT, 1);
                        tier_hit(Tier::L2, 1);
                        *slot = Some((*value).clone());
                    }
                    None => {
                        self.counters.reads.add(MISS, 1);
                    }
                }
            }
        }

        // Each copy gets L2's remaining TTL, as `get` gives it, so a copy
        // never outlives its original; the `ttl` calls run concurrently.
        let fills = missed
            .iter()
            .zip(&found)
            .zip(snapshots)
            .filter_map(|((key, value), snapshot)| Some((*key, value.as_ref()?, snapshot?)))
            .map(|(key, value, snapshot)| self.fill(key, value, snapshot));
        futures_util::future::join_all(fills).await;
        Ok(out)
    }

    async fn set_many(&self, items: &[(&str, Bytes)], ttl: Option<Duration>) -> Result<()> {
        for (key, value) in items {
            self.check_key(key, "set_many")?;
            self.check_value(value, "set_many")?;
        }
        let keys: Vec<&str> = items.iter().map(|(key, _)| *key).collect();
        let write = self.writes.begin_keys(&keys);
        if !keys.is_empty() {
            (*self.l1).delete_many(&keys).await?;
        }
        let started = Instant::now();
        let announcement = self.announce_keys(&keys);
        (*self.l2).set_many(items, ttl).await?;
        if !items.is_empty() {
            if let Some(ttl) = self.copy_ttl(ttl, started) {
                if let Err(err) = (*self.l1).set_many(items, Some(ttl)).await {
                    tracing::warn!(error = %err, "tiered: copying values into L1 failed");
                }
            }
        }
        self.settle(write, &keys).await;
        announcement.send().await;
        Ok(())
    }

    async fn delete_many(&self, keys: &[&str]) -> Result<u64> {
        for key in keys {
            self.check_key(key, "delete_many")?;
        }
        let _write = self.writes.begin_keys(keys);
        if !keys.is_empty() {
            (*self.l1).delete_many(keys).await?;
        }
        let announcement = self.announce_keys(keys);
        let removed = (*self.l2).delete_many(keys).await?;
        announcement.send().await;
        Ok(removed)
    }

    async fn scan(&self, pattern: &str) -> Result<Vec<String>> {
        (*self.l2).scan(pattern).await
    }

    async fn delete_matching(&self, pattern: &str) -> Result<u64> {
        let _write = self.writes.begin_all();
        (*self.l1).delete_matching(pattern).await?;
        let announcement = self.announcement(|| Invalidation::Pattern(pattern.to_owned()));
        let removed = (*self.l2).delete_matching(pattern).await?;
        announcement.send().await;
        Ok(removed)
    }

    async fn clear(&self, namespace: &str) -> Result<u64> {
        check_namespace(namespace).map_err(|e| e.context(NAME, "clear"))?;
        let _write = self.writes.begin_all();
        (*self.l1).clear(namespace).await?;
        let announcement = self.announcement(|| Invalidation::Namespace(namespace.to_owned()));
        let removed = (*self.l2).clear(namespace).await?;
        announcement.send().await;
        Ok(removed)
    }

    async fn close(&self) -> Result<()> {
        if let Some(remote) = &self.remote {
            remote.listener.abort();
        }
        let l1 = (*self.l1).close().await;
        let l2 = (*self.l2).close().await;
        l2.and(l1)
    }
}
