//! `FailOpen`: a failing backend degrades to misses instead of errors,
//! behind a circuit breaker.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;

use crate::backend::{CacheBackend, Capabilities, Health, HealthStatus, KeyTtl, SetOptions};
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
    /// The breaker's state now.
    pub state: BreakerState,
}

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
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> cache_core::Result<()> {
/// use cache_core::layers::{BreakerConfig, FailOpen};
/// use cache_core::{CacheBackend, ErrorKind};
/// use cache_testkit::{FaultConfig, FaultInjecting};
/// use cache_memory::MemoryBackend;
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
#[derive(Debug)]
pub struct FailOpen<B> {
    inner: B,
    config: BreakerConfig,
    breaker: Mutex<Breaker>,
    failed_reads: AtomicU64,
    skipped_writes: AtomicU64,
    opened: AtomicU64,
    closed: AtomicU64,
    abandoned: AtomicU64,
}

/// A call the breaker let through to the backend; report its outcome with
/// [`Pass::settle`].
///
/// The half-open probe's pass is the breaker's only way out of `HalfOpen`:
/// dropped unsettled (the caller's future was dropped mid-call), it sends
/// the breaker back to `Open` for another cool-down, so a cancelled probe
/// cannot leave every later call skipped.
struct Pass<'a, B: CacheBackend> {
    fail_open: &'a FailOpen<B>,
    /// The probe's number when this call is the half-open probe and its
    /// outcome is not reported yet.
    probe: Option<u64>,
}

impl<B: CacheBackend> Pass<'_, B> {
    /// Reports the call's outcome to the breaker.
    fn settle<T>(mut self, result: &Result<T>) {
        self.probe = None;
        match result {
            Err(err) if is_backend_failure(err) => self.fail_open.on_failure(err),
            // An answer, even a refusal of the request, means the backend
            // is up.
            _ => self.fail_open.on_success(),
        }
    }
}

impl<B: CacheBackend> Drop for Pass<'_, B> {
    fn drop(&mut self) {
        if let Some(probe) = self.probe.take() {
            self.fail_open.abandon(probe);
        }
    }
}

impl<B: CacheBackend> FailOpen<B> {
    /// Wraps `inner` with a breaker configured by `config`.
    pub fn new(inner: B, config: BreakerConfig) -> Self {
        FailOpen {
            inner,
            config,
            breaker: Mutex::new(Breaker {
                state: BreakerState::Closed,
                consecutive_failures: 0,
                opened_at: Instant::now(),
                probes: 0,
            }),
            failed_reads: AtomicU64::new(0),
            skipped_writes: AtomicU64::new(0),
            opened: AtomicU64::new(0),
            closed: AtomicU64::new(0),
            abandoned: AtomicU64::new(0),
        }
    }

    /// The wrapped backend.
    pub fn inner(&self) -> &B {
        &self.inner
    }

    /// The counters and the breaker's state.
    pub fn stats(&self) -> FailOpenStats {
        FailOpenStats {
            failed_reads: self.failed_reads.load(Relaxed),
            skipped_writes: self.skipped_writes.load(Relaxed),
            breaker_opened: self.opened.load(Relaxed),
            breaker_closed: self.closed.load(Relaxed),
            abandoned_probes: self.abandoned.load(Relaxed),
            state: self.lock().state,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Breaker> {
        self.breaker.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether a call may go to the backend now: `None` to skip it.
    fn gate(&self) -> Option<Pass<'_, B>> {
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
            fail_open: self,
            probe,
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
                backend = self.inner.name(),
                "circuit breaker probe cancelled by its caller: breaker open again"
            );
        }
    }

    fn on_success(&self) {
        let mut breaker = self.lock();
        breaker.consecutive_failures = 0;
        if breaker.state != BreakerState::Closed {
            breaker.state = BreakerState::Closed;
            self.closed.fetch_add(1, Relaxed);
            tracing::info!(
                backend = self.inner.name(),
                "cache backend recovered: circuit breaker closed"
            );
        }
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
                backend = self.inner.name(),
                error = %err,
                cool_down_ms = self.config.cool_down.as_millis() as u64,
                "cache backend failing: circuit breaker open, serving misses"
            );
        }
    }

    /// Runs `call` through the breaker; `Ok(None)` means "failed open".
    async fn guarded<T>(
        &self,
        call: impl std::future::Future<Output = Result<T>>,
    ) -> Result<Option<T>> {
        let Some(pass) = self.gate() else {
            return Ok(None);
        };
        let result = call.await;
        pass.settle(&result);
        match result {
            Ok(value) => Ok(Some(value)),
            Err(err) if is_backend_failure(&err) => Ok(None),
            // The backend answered; the request was wrong.
            Err(err) => Err(err),
        }
    }

    async fn read<T>(
        &self,
        fallback: T,
        call: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        self.or_fallback(fallback, call, &self.failed_reads).await
    }

    async fn write<T>(
        &self,
        fallback: T,
        call: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        self.or_fallback(fallback, call, &self.skipped_writes).await
    }

    /// The call's answer, or `fallback` (counted in `counter`) when the
    /// backend failed or the breaker is open.
    async fn or_fallback<T>(
        &self,
        fallback: T,
        call: impl std::future::Future<Output = Result<T>>,
        counter: &AtomicU64,
    ) -> Result<T> {
        match self.guarded(call).await? {
            Some(value) => Ok(value),
            None => {
                counter.fetch_add(1, Relaxed);
                Ok(fallback)
            }
        }
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
        self.read(None, self.inner.get(key)).await
    }

    async fn set(&self, key: &str, value: Bytes, opts: SetOptions) -> Result<bool> {
        self.write(false, self.inner.set(key, value, opts)).await
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        self.write(false, self.inner.delete(key)).await
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        self.read(false, self.inner.exists(key)).await
    }

    async fn ttl(&self, key: &str) -> Result<KeyTtl> {
        self.read(KeyTtl::Missing, self.inner.ttl(key)).await
    }

    async fn expire(&self, key: &str, ttl: Option<Duration>) -> Result<bool> {
        self.write(false, self.inner.expire(key, ttl)).await
    }

    async fn incr(&self, key: &str, delta: i64, ttl: Option<Duration>) -> Result<i64> {
        let Some(pass) = self.gate() else {
            return Err(Error::new(ErrorKind::Connection, "circuit breaker open")
                .with_backend(self.inner.name())
                .with_operation("incr"));
        };
        let result = self.inner.incr(key, delta, ttl).await;
        pass.settle(&result);
        result
    }

    async fn health(&self) -> Result<Health> {
        let state = self.lock().state;
        if state == BreakerState::Open {
            return Ok(
                Health::new(HealthStatus::Unhealthy, Duration::ZERO).with_detail("breaker", "open")
            );
        }
        let label = if state == BreakerState::Closed {
            "closed"
        } else {
            "half_open"
        };
        Ok(self.inner.health().await?.with_detail("breaker", label))
    }

    async fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Bytes>>> {
        self.read(vec![None; keys.len()], self.inner.get_many(keys))
            .await
    }

    async fn set_many(&self, items: &[(&str, Bytes)], ttl: Option<Duration>) -> Result<()> {
        self.write((), self.inner.set_many(items, ttl)).await
    }

    async fn delete_many(&self, keys: &[&str]) -> Result<u64> {
        self.write(0, self.inner.delete_many(keys)).await
    }

    async fn scan(&self, pattern: &str) -> Result<Vec<String>> {
        self.read(Vec::new(), self.inner.scan(pattern)).await
    }

    async fn delete_matching(&self, pattern: &str) -> Result<u64> {
        self.write(0, self.inner.delete_matching(pattern)).await
    }

    async fn clear(&self, namespace: &str) -> Result<u64> {
        self.write(0, self.inner.clear(namespace)).await
    }

    async fn close(&self) -> Result<()> {
        self.inner.close().await
    }
}
