//! `FailOpen`: a failing backend degrades to misses instead of errors,
//! behind a circuit breaker.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;

use crate::backend::{
    CacheBackend, Capabilities, Health, HealthStatus, KeyTtl, SetMode, SetOptions,
};
use crate::error::{Error, ErrorKind, Result};

/// When the breaker opens and how long it stays open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct BreakerConfig {
    /// Consecutive failures that open the breaker.
    pub failure_threshold: u32,
    /// How long the breaker stays open before one probe call is let through.
    pub cool_down: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failure_threshold: 5,
            cool_down: Duration::from_secs(5),
        }
    }
}

impl BreakerConfig {
    /// Sets the consecutive failures that open the breaker (at least 1).
    #[must_use]
    pub fn with_failure_threshold(mut self, n: u32) -> Self {
        self.failure_threshold = n.max(1);
        self
    }

    /// Sets how long the breaker stays open.
    #[must_use]
    pub fn with_cool_down(mut self, cool_down: Duration) -> Self {
        self.cool_down = cool_down;
        self
    }
}

/// The circuit breaker's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls go to the backend.
    Closed,
    /// Calls skip the backend until the cool-down ends.
    Open,
    /// The cool-down ended; one probe call is on its way to the backend.
    /// If its caller gives up before the backend answers (the call's
    /// future is dropped), the breaker goes back to `Open` for another
    /// cool-down.
    HalfOpen,
}

/// Counters of a [`FailOpen`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct FailOpenStats {
    /// Reads answered as misses because the backend failed or the breaker
    /// was open.
    pub failed_reads: u64,
    /// Writes skipped because the backend failed or the breaker was open.
    pub skipped_writes: u64,
    /// Times the breaker opened.
    pub breaker_opened: u64,
    /// Times the breaker closed again after a successful probe.
    pub breaker_closed: u64,
    /// Probes whose caller gave up (dropped the call) before the backend
    /// answered; each sent the breaker back to open for another cool-down.
    pub abandoned_probes: u64,
    /// Invalidations (and skipped writes, which leave an outdated value
    /// behind) waiting to be replayed when the backend answers again.
    pub pending_invalidations: u64,
    /// Invalidations replayed after the backend came back.
    pub replayed_invalidations: u64,
    /// Lost invalidations past the bound, replaced by a clear of their
    /// namespace (the key's prefix up to its first `:`).
    pub coarsened_invalidations: u64,
    /// The breaker's state now.
    pub state: BreakerState,
}

/// Reads the counters of a [`FailOpen`] that is out of reach (wrapped in
/// an `Arc<dyn CacheBackend>`, under other layers); from
/// [`FailOpen::handle`].
///
/// It does not keep the layer alive: once the `FailOpen` is dropped,
/// [`stats`](Self::stats) answers `None`.
#[derive(Debug, Clone)]
pub struct FailOpenHandle {
    shared: Weak<Shared>,
}

impl FailOpenHandle {
    /// The layer's counters and breaker state, as [`FailOpen::stats`];
    /// `None` once the layer is dropped.
    pub fn stats(&self) -> Option<FailOpenStats> {
        self.shared.upgrade().map(|shared| shared.stats())
    }
}

/// The most keys remembered for replay; past it, a key's invalidation
/// becomes a clear of its namespace (its prefix up to the first `:`).
pub const MAX_PENDING_KEYS: usize = 10_000;
/// The most patterns and namespaces remembered for replay.
const MAX_PENDING_PATTERNS: usize = 1_000;

#[derive(Debug)]
struct Breaker {
    state: BreakerState,
    consecutive_failures: u32,
    opened_at: Instant,
    /// Probes let through so far; the current one's number while
    /// `HalfOpen`.
    probes: u64,
}

/// Keeps a service up when its cache backend is down or slow: backend
/// failures become misses (reads) and skipped writes, each counted, instead
/// of errors. After `failure_threshold` consecutive failures a circuit
/// breaker opens and calls skip the backend for `cool_down`; then one probe
/// call goes through (half-open): success closes the breaker, failure opens
/// it again. A probe whose caller is cancelled (its future dropped before
/// the backend answered) opens it again too, without counting as a
/// failure, so the next call after another cool-down probes. State changes
/// are logged once each (`warn` on open, `info` on close), not once per
/// call.
///
/// Only failures of the backend count: `Connection`, `Timeout`, `Backend`
/// and `Closed`. Errors that are the caller's (`InvalidKey`,
/// `InvalidValue`, `Codec`, `Unsupported`) are returned as they are. `incr`
/// cannot invent a count, so it returns its error (and respects the
/// breaker by failing fast with `Connection` while open). `health` reports
/// the inner backend's answer, or `Unhealthy` while the breaker is open.
///
/// Put a [`Timeout`](crate::layers::Timeout) inside it so a hung backend
/// counts as failing.
///
/// While the breaker is closed and no failure is counted (a healthy
/// backend), a call takes no lock: threads calling at once do not contend
/// on the breaker.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> cache::Result<()> {
/// use cache::layers::{BreakerConfig, FailOpen};
/// use cache::{CacheBackend, ErrorKind};
/// use cache_testkit::{FaultConfig, FaultInjecting};
/// use cache::memory::MemoryBackend;
///
/// let down = FaultInjecting::new(MemoryBackend::new(), FaultConfig::none().with_fail_every(1));
/// let backend = FailOpen::new(down, BreakerConfig::default().with_failure_threshold(3));
/// for _ in 0..10 {
///     assert_eq!(backend.get("k").await?, None); // a miss, not an error
/// }
/// let stats = backend.stats();
/// assert_eq!(stats.failed_reads, 10);
/// assert_eq!(stats.breaker_opened, 1);
/// assert_eq!(backend.inner().injected(), 3); // the breaker spared the backend 7 calls
/// # Ok(())
/// # }
/// ```
pub struct FailOpen<B> {
    inner: Arc<B>,
    shared: Arc<Shared>,
}

impl<B: CacheBackend> std::fmt::Debug for FailOpen<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FailOpen")
            .field("backend", &self.inner.name())
            .field("stats", &self.stats())
            .finish()
    }
}

/// What a `FailOpen` shares with its recovery task.
struct Shared {
    name: &'static str,
    config: BreakerConfig,
    breaker: Mutex<Breaker>,
    /// Whether the breaker is closed with no failure counted since the
    /// last success: read without its lock, the healthy path takes none
    /// (every call through the layer would lock it, from every thread).
    /// Kept by [`BreakerGuard`], under the lock.
    healthy: AtomicBool,
    pending: Mutex<Pending>,
    /// Items in `pending`, read without its lock on the hot path.
    pending_count: AtomicUsize,
    /// A recovery task is running.
    recovering: AtomicBool,
    failed_reads: AtomicU64,
    skipped_writes: AtomicU64,
    opened: AtomicU64,
    closed: AtomicU64,
    abandoned: AtomicU64,
    replayed: AtomicU64,
    coarsened: AtomicU64,
}

/// Invalidations that could not reach the backend, deduplicated.
#[derive(Default)]
struct Pending {
    keys: HashSet<String>,
    patterns: HashSet<String>,
    namespaces: HashSet<String>,
}

impl Pending {
    fn len(&self) -> usize {
        self.keys.len() + self.patterns.len() + self.namespaces.len()
    }

    /// Whether an invalidation waiting here covers `key`.
    fn covers(&self, key: &str) -> bool {
        self.keys.contains(key)
            || self
                .namespaces
                .iter()
                .any(|ns| key.starts_with(ns.as_str()))
            || self
                .patterns
                .iter()
                .any(|p| crate::glob::glob_match(p, key))
    }
}

/// An invalidation that could not reach the backend.
enum Lost<'a> {
    /// Nothing to invalidate (an `IfAbsent` write: skipped, it leaves no
    /// outdated value behind).
    Nothing,
    Keys(&'a [&'a str]),
    Pattern(&'a str),
    Namespace(&'a str),
}

/// The namespace a key or pattern falls back to past the bound: its prefix
/// up to and including the first `:` (the cache's prefix, which never
/// holds `:`), if that part is literal.
fn coarse_namespace(key: &str) -> Option<&str> {
    let end = key.find(':')? + 1;
    let head = &key[..end];
    (!head.contains(['*', '?', '[', '\\'])).then_some(head)
}

/// A call the breaker let through to the backend; report its outcome with
/// [`Pass::settle`].
///
/// The half-open probe's pass is the breaker's only way out of `HalfOpen`:
/// dropped unsettled (the caller's future was dropped mid-call), it sends
/// the breaker back to `Open` for another cool-down, so a cancelled probe
/// cannot leave every later call skipped.
struct Pass<'a> {
    shared: &'a Shared,
    /// The probe's number when this call is the half-open probe and its
    /// outcome is not reported yet.
    probe: Option<u64>,
}

impl Pass<'_> {
    /// Reports the call's outcome to the breaker.
    fn settle<T>(mut self, result: &Result<T>) {
        self.probe = None;
        match result {
            Err(err) if is_backend_failure(err) => {
                self.shared.on_failure(err);
            }
            // An answer, even a refusal of the request, means the backend
            // is up.
            _ => self.shared.on_success(),
        }
    }
}

impl Drop for Pass<'_> {
    fn drop(&mut self) {
        if let Some(probe) = self.probe.take() {
            self.shared.abandon(probe);
        }
    }
}

/// The breaker, locked; when dropped, it sets [`Shared::healthy`] from
/// what it leaves, before the lock is released. Every change of the
/// breaker goes through one.
struct BreakerGuard<'a> {
    breaker: std::sync::MutexGuard<'a, Breaker>,
    healthy: &'a AtomicBool,
}

impl Drop for BreakerGuard<'_> {
    fn drop(&mut self) {
        let healthy =
            self.breaker.state == BreakerState::Closed && self.breaker.consecutive_failures == 0;
        // Stored only when it changes: every call reads this line, and a
        // guard that changed nothing (`stats`, the recovery task's look)
        // should not take it from them. Relaxed: a flag, through which
        // nothing else is read.
        if self.healthy.load(Relaxed) != healthy {
            self.healthy.store(healthy, Relaxed);
        }
    }
}

impl std::ops::Deref for BreakerGuard<'_> {
    type Target = Breaker;
    fn deref(&self) -> &Breaker {
        &self.breaker
    }
}

impl std::ops::DerefMut for BreakerGuard<'_> {
    fn deref_mut(&mut self) -> &mut Breaker {
        &mut self.breaker
    }
}

impl Shared {
    fn lock(&self) -> BreakerGuard<'_> {
        BreakerGuard {
            breaker: self.breaker.lock().unwrap_or_else(PoisonError::into_inner),
            healthy: &self.healthy,
        }
    }

    /// Whether the breaker is closed with no failure counted (no lock).
    fn healthy(&self) -> bool {
        self.healthy.load(Relaxed)
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether a call may go to the backend now: `None` to skip it.
    fn gate(&self) -> Option<Pass<'_>> {
        if self.healthy() {
            return Some(Pass {
                shared: self,
                probe: None,
            });
        }
        let mut breaker = self.lock();
        let probe = match breaker.state {
            BreakerState::Closed => None,
            BreakerState::Open if breaker.opened_at.elapsed() >= self.config.cool_down => {
                breaker.state = BreakerState::HalfOpen;
                breaker.probes = breaker.probes.wrapping_add(1);
                Some(breaker.probes)
            }
            BreakerState::Open | BreakerState::HalfOpen => return None,
        };
        Some(Pass {
            shared: self,
            probe,
        })
    }

    /// A pass while the breaker is closed (never a half-open probe, which
    /// an answer that does not come now would abandon); `None` otherwise.
    fn gate_closed(&self) -> Option<Pass<'_>> {
        (self.healthy() || self.lock().state == BreakerState::Closed).then_some(Pass {
            shared: self,
            probe: None,
        })
    }

    /// The caller of probe number `probe` gave up before the backend
    /// answered: unless the breaker has moved on meanwhile, it opens again
    /// for another cool-down (nothing is known of the backend, so this is
    /// not counted as a failure).
    fn abandon(&self, probe: u64) {
        let mut breaker = self.lock();
        if breaker.state == BreakerState::HalfOpen && breaker.probes == probe {
            breaker.state = BreakerState::Open;
            breaker.opened_at = Instant::now();
            self.abandoned.fetch_add(1, Relaxed);
            tracing::debug!(
                backend = self.name,
                "circuit breaker probe cancelled by its caller: breaker open again"
            );
        }
    }

    /// The backend answered. The breaker closes, unless invalidations lost
    /// meanwhile wait to be replayed: then it stays open until the recovery
    /// task has replayed them, so nothing reads a value that should have
    /// been invalidated (a read of a key they cover is a miss). Its
    /// cool-down is not restarted: the recovery task replays at its next
    /// look, and meanwhile calls go through one at a time, each a probe,
    /// the others skipping.
    fn on_success(&self) {
        // Closed with no failure to forget: nothing to change.
        if self.healthy() {
            return;
        }
        let mut breaker = self.lock();
        breaker.consecutive_failures = 0;
        if breaker.state == BreakerState::Closed {
            return;
        }
        if self.pending_count.load(Relaxed) > 0 {
            breaker.state = BreakerState::Open;
            return;
        }
        breaker.state = BreakerState::Closed;
        self.closed.fetch_add(1, Relaxed);
        tracing::info!(
            backend = self.name,
            "cache backend recovered: circuit breaker closed"
        );
    }

    fn on_failure(&self, err: &Error) {
        let mut breaker = self.lock();
        breaker.consecutive_failures = breaker.consecutive_failures.saturating_add(1);
        let trips = breaker.state == BreakerState::HalfOpen
            || (breaker.state == BreakerState::Closed
                && breaker.consecutive_failures >= self.config.failure_threshold);
        if trips {
            breaker.state = BreakerState::Open;
            breaker.opened_at = Instant::now();
            self.opened.fetch_add(1, Relaxed);
            tracing::warn!(
                backend = self.name,
                error = %err,
                cool_down_ms = self.config.cool_down.as_millis() as u64,
                "cache backend failing: circuit breaker open, serving misses"
            );
        }
    }

    /// Remembers `lost` for replay, bounded and deduplicated.
    fn remember(&self, lost: Lost<'_>) {
        if matches!(lost, Lost::Nothing) {
            return;
        }
        let mut pending = self.pending();
        match lost {
            Lost::Nothing => {}
            Lost::Keys(keys) => {
                for key in keys {
                    if pending.keys.len() < MAX_PENDING_KEYS || pending.keys.contains(*key) {
                        pending.keys.insert((*key).to_owned());
                    } else {
                        self.coarsen(&mut pending, key);
                    }
                }
            }
            Lost::Pattern(pattern) => {
                if pending.patterns.len() < MAX_PENDING_PATTERNS {
                    pending.patterns.insert(pattern.to_owned());
                } else {
                    self.coarsen(&mut pending, pattern);
                }
            }
            Lost::Namespace(namespace) => {
                pending.namespaces.insert(namespace.to_owned());
            }
        }
        self.pending_count.store(pending.len(), Relaxed);
    }

    /// Past the bound: the namespace of `key` is cleared instead. A key or
    /// pattern with no literal namespace is kept all the same (rather than
    /// lost).
    fn coarsen(&self, pending: &mut Pending, key: &str) {
        self.coarsened.fetch_add(1, Relaxed);
        match coarse_namespace(key) {
            Some(namespace) => {
                if pending.namespaces.insert(namespace.to_owned()) {
                    tracing::warn!(
                        backend = self.name,
                        namespace,
                        "too many lost invalidations: the namespace will be cleared on recovery"
                    );
                }
            }
            None => {
                pending.patterns.insert(key.to_owned());
            }
        }
    }

    /// Whether a lost invalidation, not replayed yet, covers one of `keys`:
    /// the backend may still hold the value it should have removed (a
    /// resumed server, a write that timed out while the breaker stayed
    /// closed), so a read of those keys must not reach it.
    fn stale(&self, keys: &[&str]) -> bool {
        if self.pending_count.load(Relaxed) == 0 {
            return false;
        }
        let pending = self.pending();
        keys.iter().any(|key| pending.covers(key))
    }

    /// Keys written successfully since: their pending invalidations are
    /// superseded.
    fn superseded(&self, keys: &[&str]) {
        if self.pending_count.load(Relaxed) == 0 {
            return;
        }
        let mut pending = self.pending();
        for key in keys {
            pending.keys.remove(*key);
        }
        self.pending_count.store(pending.len(), Relaxed);
    }
}

impl<B: CacheBackend> FailOpen<B> {
    /// Wraps `inner` with a breaker configured by `config`.
    pub fn new(inner: B, config: BreakerConfig) -> Self {
        FailOpen {
            shared: Arc::new(Shared {
                name: inner.name(),
                config,
                breaker: Mutex::new(Breaker {
                    state: BreakerState::Closed,
                    consecutive_failures: 0,
                    opened_at: Instant::now(),
                    probes: 0,
                }),
                healthy: AtomicBool::new(true),
                pending: Mutex::new(Pending::default()),
                pending_count: AtomicUsize::new(0),
                recovering: AtomicBool::new(false),
                failed_reads: AtomicU64::new(0),
                skipped_writes: AtomicU64::new(0),
                opened: AtomicU64::new(0),
                closed: AtomicU64::new(0),
                abandoned: AtomicU64::new(0),
                replayed: AtomicU64::new(0),
                coarsened: AtomicU64::new(0),
            }),
            inner: Arc::new(inner),
        }
    }

    /// The wrapped backend.
    pub fn inner(&self) -> &B {
        &self.inner
    }

    /// The counters and the breaker's state.
    pub fn stats(&self) -> FailOpenStats {
        self.shared.stats()
    }

    /// A handle that reads this layer's counters from elsewhere, e.g. to
    /// attach them to a [`Cache`](crate::Cache) with
    /// [`CacheBuilder::fail_open_stats`](crate::CacheBuilder::fail_open_stats)
    /// once the layer is hidden in an `Arc<dyn CacheBackend>`.
    pub fn handle(&self) -> FailOpenHandle {
        FailOpenHandle {
            shared: Arc::downgrade(&self.shared),
        }
    }

    /// Starts the recovery task unless one runs: it probes the backend's
    /// health while the breaker is open, replays the pending invalidations
    /// once the backend answers, then closes the breaker. Without a tokio
    /// runtime, callers' probes close the breaker as before.
    fn recover(&self) {
        if self.shared.recovering.swap(true, Relaxed) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.shared.recovering.store(false, Relaxed);
            return;
        };
        runtime.spawn(recovery(
            Arc::clone(&self.inner),
            Arc::downgrade(&self.shared),
        ));
    }

    /// Runs `call` through the breaker; `Ok(None)` means "failed open".
    async fn guarded<T>(
        &self,
        call: impl std::future::Future<Output = Result<T>>,
    ) -> Result<Option<T>> {
        let Some(pass) = self.shared.gate() else {
            return Ok(None);
        };
        let result = call.await;
        self.settled(pass, result)
    }

    /// Reports a call's `result` to the breaker; `Ok(None)` means "failed
    /// open".
    fn settled<T>(&self, pass: Pass<'_>, result: Result<T>) -> Result<Option<T>> {
        let failed = matches!(&result, Err(err) if is_backend_failure(err));
        pass.settle(&result);
        if failed && self.shared.lock().state == BreakerState::Open {
            self.recover();
        }
        match result {
            Ok(value) => Ok(Some(value)),
            Err(err) if is_backend_failure(&err) => Ok(None),
            // The backend answered; the request was wrong.
            Err(err) => Err(err),
        }
    }

    /// A read the inner backend answers now (`read`), while the breaker is
    /// closed: a failure is a miss (`T`'s default: no value, nothing
    /// lent), counted, and tells the breaker.
    fn read_now<T: Default>(&self, read: impl FnOnce() -> Option<Result<T>>) -> Option<Result<T>> {
        let pass = self.shared.gate_closed()?;
        let result = read()?;
        Some(match self.settled(pass, result) {
            Ok(Some(value)) => Ok(value),
            Ok(None) => {
                self.shared.failed_reads.fetch_add(1, Relaxed);
                Ok(T::default())
            }
            Err(err) => Err(err),
        })
    }

    /// A read of `keys`: answered with `fallback` (a miss) when the breaker
    /// skips the backend, when the backend fails, or when a lost
    /// invalidation of one of the keys waits to be replayed (the backend
    /// may still hold what it removes).
    async fn read<T>(
        &self,
        keys: &[&str],
        fallback: T,
        call: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        if self.shared.stale(keys) {
            self.shared.failed_reads.fetch_add(1, Relaxed);
            self.recover();
            return Ok(fallback);
        }
        match self.guarded(call).await? {
            Some(value) => Ok(value),
            None => {
                self.shared.failed_reads.fetch_add(1, Relaxed);
                Ok(fallback)
            }
        }
    }

    /// A write or invalidation: skipped, it is remembered as `lost` for
    /// replay; done, it supersedes pending invalidations of its keys.
    async fn write<T>(
        &self,
        fallback: T,
        lost: Lost<'_>,
        call: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        match self.guarded(call).await? {
            Some(value) => {
                if let Lost::Keys(keys) = lost {
                    self.shared.superseded(keys);
                }
                Ok(value)
            }
            None => {
                self.shared.skipped_writes.fetch_add(1, Relaxed);
                self.shared.remember(lost);
                self.recover();
                Ok(fallback)
            }
        }
    }
}

/// The recovery task of a `FailOpen` (see [`FailOpen::recover`]); ends
/// when the breaker is closed with nothing pending, or the `FailOpen` is
/// dropped.
///
/// Every `cool_down / 4` (50 ms to 1 s) once the cool-down has passed, it
/// asks the backend's `health`: so the breaker closes within about one
/// cool-down of the backend's return even if no caller comes, and a first
/// probe that only finds the dropped connection (and makes the client
/// reconnect) does not cost another cool-down. A failed health probe is
/// not a new opening. Callers' own probes work as before.
async fn recovery<B: CacheBackend>(inner: Arc<B>, shared: Weak<Shared>) {
    let every = match shared.upgrade() {
        Some(shared) => {
            (shared.config.cool_down / 4).clamp(Duration::from_millis(50), Duration::from_secs(1))
        }
        None => return,
    };
    loop {
        tokio::time::sleep(every).await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let (state, cooled) = {
            let breaker = shared.lock();
            (
                breaker.state,
                breaker.opened_at.elapsed() >= shared.config.cool_down,
            )
        };
        match state {
            BreakerState::Closed if shared.pending_count.load(Relaxed) == 0 => {
                shared.recovering.store(false, Relaxed);
                // Something may have been remembered just before the flag
                // dropped: carry on if so (and nobody started another task).
                if shared.pending_count.load(Relaxed) == 0 || shared.recovering.swap(true, Relaxed)
                {
                    return;
                }
                continue;
            }
            BreakerState::Closed => {}
            // Also while a caller's probe is out: under steady traffic a
            // caller probes at nearly every moment, and a success cannot
            // close the breaker while invalidations wait (it stays open).
            BreakerState::Open | BreakerState::HalfOpen if cooled => match inner.health().await {
                Ok(health) if health.status != HealthStatus::Unhealthy => {}
                _ => continue,
            },
            // Cooling down.
            BreakerState::Open | BreakerState::HalfOpen => continue,
        }
        if replay(&*inner, &shared).await {
            let mut breaker = shared.lock();
            breaker.consecutive_failures = 0;
            if breaker.state != BreakerState::Closed && shared.pending_count.load(Relaxed) == 0 {
                breaker.state = BreakerState::Closed;
                shared.closed.fetch_add(1, Relaxed);
                tracing::info!(
                    backend = shared.name,
                    "cache backend recovered: circuit breaker closed"
                );
            }
        }
    }
}

/// Replays the pending invalidations; returns whether all went through.
/// An item the backend refuses as the caller's mistake (an invalid key or
/// pattern, skipped without ever reaching it) is dropped, not retried for
/// ever.
async fn replay<B: CacheBackend>(inner: &B, shared: &Shared) -> bool {
    let (keys, patterns, namespaces) = {
        let pending = shared.pending();
        let keys: Vec<String> = pending.keys.iter().cloned().collect();
        let patterns: Vec<String> = pending.patterns.iter().cloned().collect();
        let namespaces: Vec<String> = pending.namespaces.iter().cloned().collect();
        (keys, patterns, namespaces)
    };
    for namespace in &namespaces {
        if !replayed(inner.clear(namespace).await) {
            return false;
        }
        shared.done(|p| usize::from(p.namespaces.remove(namespace)));
    }
    for pattern in &patterns {
        if !replayed(inner.delete_matching(pattern).await) {
            return false;
        }
        shared.done(|p| usize::from(p.patterns.remove(pattern)));
    }
    for chunk in keys.chunks(512) {
        let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
        if !replayed(inner.delete_many(&refs).await) {
            return false;
        }
        shared.done(|p| chunk.iter().filter(|k| p.keys.remove(k.as_str())).count());
    }
    true
}

/// Whether a replayed call is done with: answered, or refused for a reason
/// a retry cannot change.
fn replayed<T>(result: Result<T>) -> bool {
    match result {
        Ok(_) => true,
        Err(err) if is_backend_failure(&err) => false,
        Err(err) => {
            tracing::warn!(error = %err, "a lost invalidation was refused on replay: dropped");
            true
        }
    }
}

impl Shared {
    fn stats(&self) -> FailOpenStats {
        FailOpenStats {
            failed_reads: self.failed_reads.load(Relaxed),
            skipped_writes: self.skipped_writes.load(Relaxed),
            breaker_opened: self.opened.load(Relaxed),
            breaker_closed: self.closed.load(Relaxed),
            abandoned_probes: self.abandoned.load(Relaxed),
            pending_invalidations: self.pending_count.load(Relaxed) as u64,
            replayed_invalidations: self.replayed.load(Relaxed),
            coarsened_invalidations: self.coarsened.load(Relaxed),
            state: self.lock().state,
        }
    }

    /// Records replayed items (those `remove` found still pending).
    fn done(&self, remove: impl FnOnce(&mut Pending) -> usize) {
        let mut pending = self.pending();
        let replayed = remove(&mut pending);
        self.replayed.fetch_add(replayed as u64, Relaxed);
        self.pending_count.store(pending.len(), Relaxed);
    }
}

fn is_backend_failure(err: &Error) -> bool {
    matches!(
        err.kind(),
        ErrorKind::Connection | ErrorKind::Timeout | ErrorKind::Backend | ErrorKind::Closed
    )
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl<B: CacheBackend> CacheBackend for FailOpen<B> {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        self.read(&[key], None, self.inner.get(key)).await
    }

    /// Forwarded while the breaker is closed and nothing waits for replay;
    /// otherwise `get` answers (a skipped read, a half-open probe, a key
    /// whose invalidation waits).
    fn get_now(&self, key: &str) -> Option<Result<Option<Bytes>>> {
        if self.shared.stale(&[key]) {
            return None;
        }
        self.read_now(|| self.inner.get_now(key))
    }

    /// Forwarded in its two parts as `get_now` is, while no lost
    /// invalidation waits for replay; while one does, left to the caller,
    /// whose `get_now` of the joined key checks the key against them.
    fn get_now_joined(&self, head: &str, tail: &str) -> Option<Result<Option<Bytes>>> {
        if self.shared.pending_count.load(Relaxed) != 0 {
            return None;
        }
        self.read_now(|| self.inner.get_now_joined(head, tail))
    }

    /// As `get_now_joined`, lent.
    fn read_now_joined(
        &self,
        head: &str,
        tail: &str,
        read: &mut dyn FnMut(&Bytes),
    ) -> Option<Result<bool>> {
        if self.shared.pending_count.load(Relaxed) != 0 {
            return None;
        }
        self.read_now(|| self.inner.read_now_joined(head, tail, read))
    }

    async fn set(&self, key: &str, value: Bytes, opts: SetOptions) -> Result<bool> {
        // A skipped write leaves an outdated value behind: invalidated on
        // recovery like a delete.
        let lost = match opts.mode {
            SetMode::IfAbsent => Lost::Nothing,
            _ => Lost::Keys(&[key]),
        };
        self.write(false, lost, self.inner.set(key, value, opts))
            .await
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        self.write(false, Lost::Keys(&[key]), self.inner.delete(key))
            .await
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        self.read(&[key], false, self.inner.exists(key)).await
    }

    async fn ttl(&self, key: &str) -> Result<KeyTtl> {
        self.read(&[key], KeyTtl::Missing, self.inner.ttl(key))
            .await
    }

    async fn expire(&self, key: &str, ttl: Option<Duration>) -> Result<bool> {
        self.write(false, Lost::Keys(&[key]), self.inner.expire(key, ttl))
            .await
    }

    async fn incr(&self, key: &str, delta: i64, ttl: Option<Duration>) -> Result<i64> {
        let Some(pass) = self.shared.gate() else {
            return Err(Error::new(ErrorKind::Connection, "circuit breaker open")
                .with_backend(self.inner.name())
                .with_operation("incr"));
        };
        let result = self.inner.incr(key, delta, ttl).await;
        pass.settle(&result);
        result
    }

    async fn health(&self) -> Result<Health> {
        let state = self.shared.lock().state;
        if state == BreakerState::Open {
            return Ok(Health::new(HealthStatus::Unhealthy, Duration::ZERO)
                .with_detail("breaker", "open")
                .with_detail(
                    "pending_invalidations",
                    self.shared.pending_count.load(Relaxed),
                ));
        }
        let label = if state == BreakerState::Closed {
            "closed"
        } else {
            "half_open"
        };
        Ok(self.inner.health().await?.with_detail("breaker", label))
    }

    async fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Bytes>>> {
        self.read(keys, vec![None; keys.len()], self.inner.get_many(keys))
            .await
    }

    async fn set_many(&self, items: &[(&str, Bytes)], ttl: Option<Duration>) -> Result<()> {
        let keys: Vec<&str> = items.iter().map(|(key, _)| *key).collect();
        self.write((), Lost::Keys(&keys), self.inner.set_many(items, ttl))
            .await
    }

    async fn delete_many(&self, keys: &[&str]) -> Result<u64> {
        self.write(0, Lost::Keys(keys), self.inner.delete_many(keys))
            .await
    }

    async fn scan(&self, pattern: &str) -> Result<Vec<String>> {
        self.read(&[], Vec::new(), self.inner.scan(pattern)).await
    }

    async fn delete_matching(&self, pattern: &str) -> Result<u64> {
        self.write(
            0,
            Lost::Pattern(pattern),
            self.inner.delete_matching(pattern),
        )
        .await
    }

    async fn clear(&self, namespace: &str) -> Result<u64> {
        self.write(0, Lost::Namespace(namespace), self.inner.clear(namespace))
            .await
    }

    async fn close(&self) -> Result<()> {
        self.inner.close().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Holds nothing: every read answered now, a miss; every call done.
    struct Empty;

    #[async_trait]
    impl CacheBackend for Empty {
        fn name(&self) -> &'static str {
            "empty"
        }
        fn capabilities(&self) -> Capabilities {
            Capabilities::default()
        }
        async fn get(&self, _key: &str) -> Result<Option<Bytes>> {
            Ok(None)
        }
        fn get_now(&self, _key: &str) -> Option<Result<Option<Bytes>>> {
            Some(Ok(None))
        }
        fn get_now_joined(&self, _head: &str, _tail: &str) -> Option<Result<Option<Bytes>>> {
            Some(Ok(None))
        }
        async fn set(&self, _key: &str, _value: Bytes, _opts: SetOptions) -> Result<bool> {
            Ok(true)
        }
        async fn delete(&self, _key: &str) -> Result<bool> {
            Ok(false)
        }
        async fn exists(&self, _key: &str) -> Result<bool> {
            Ok(false)
        }
        async fn ttl(&self, _key: &str) -> Result<KeyTtl> {
            Ok(KeyTtl::Missing)
        }
        async fn expire(&self, _key: &str, _ttl: Option<Duration>) -> Result<bool> {
            Ok(false)
        }
        async fn incr(&self, _key: &str, delta: i64, _ttl: Option<Duration>) -> Result<i64> {
            Ok(delta)
        }
        async fn health(&self) -> Result<Health> {
            Ok(Health::new(HealthStatus::Healthy, Duration::ZERO))
        }
    }

    /// While the breaker is closed with no failure counted, a call through
    /// the layer takes no lock of the breaker (from every thread at once,
    /// it would be one contended lock per call): reads answered now,
    /// awaited reads and writes all finish while a test holds that lock.
    #[test]
    fn the_healthy_path_takes_no_lock_of_the_breaker() {
        let layer = Arc::new(FailOpen::new(Empty, BreakerConfig::default()));
        let held = layer.shared.breaker.lock().unwrap();
        let (finished, done) = std::sync::mpsc::channel();
        let calls = {
            let layer = Arc::clone(&layer);
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .build()
                    .unwrap();
                let now = layer.get_now("k").map(Result::unwrap);
                let joined = layer.get_now_joined("k", "1").map(Result::unwrap);
                let awaited = runtime.block_on(layer.get("k")).unwrap();
                let wrote = runtime
                    .block_on(layer.set("k", Bytes::from_static(b"v"), SetOptions::default()))
                    .unwrap();
                finished.send((now, joined, awaited, wrote)).unwrap();
            })
        };
        let answered = done.recv_timeout(Duration::from_secs(10));
        drop(held);
        calls.join().unwrap();
        assert_eq!(
            answered,
            Ok((Some(None), Some(None), None, true)),
            "blocked on the breaker's lock"
        );
    }

    /// A probe's success while a lost invalidation waits for replay leaves
    /// the breaker open with no failure counted. That is not healthy: calls
    /// still go through the breaker, one probe at a time, and no read is
    /// answered now (the flag is "closed *and* no failure", not the latter).
    #[test]
    fn an_open_breaker_with_no_failure_counted_is_not_healthy() {
        let layer = FailOpen::new(
            Empty,
            BreakerConfig::default()
                .with_failure_threshold(1)
                .with_cool_down(Duration::ZERO),
        );
        let shared = &layer.shared;
        shared.on_failure(&Error::new(ErrorKind::Connection, "down"));
        shared.remember(Lost::Keys(&["k"]));
        shared
            .gate()
            .expect("the cool-down is over: a probe")
            .settle(&Ok(()));
        let breaker = shared.lock();
        assert_eq!(
            (breaker.state, breaker.consecutive_failures),
            (BreakerState::Open, 0)
        );
        drop(breaker);
        assert!(!shared.healthy());
        assert_eq!(layer.get_now("other").map(Result::unwrap), None);
        let _probe = shared.gate().expect("the next call is a probe");
        assert!(
            shared.gate().is_none(),
            "a second call while the probe is out"
        );
    }
}
