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
    /// The breaker's state now.
    pub state: BreakerState,
}

#[derive(Debug)]
struct Breaker {
    state: BreakerState,
    consecutive_failures: u32,
    opened_at: Instant,
}

/// Keeps a service up when its cache backend is down or slow: backend
/// failures become misses (reads) and skipped writes, each counted, instead
/// of errors. After `failure_threshold` consecutive failures a circuit
/// breaker opens and calls skip the backend for `cool_down`; then one probe
/// call goes through (half-open): success closes the breaker, failure opens
/// it again. State changes are logged once each (`warn` on open, `info` on
/// close), not once per call.
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
}

/// Whether the call may go to the backend.
enum Gate {
    Pass,
    Skip,
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
            }),
            failed_reads: AtomicU64::new(0),
            skipped_writes: AtomicU64::new(0),
            opened: AtomicU64::new(0),
            closed: AtomicU64::new(0),
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
            state: self.lock().state,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Breaker> {
        self.breaker.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn gate(&self) -> Gate {
        let mut breaker = self.lock();
        match breaker.state {
            BreakerState::Closed => Gate::Pass,
            BreakerState::Open if breaker.opened_at.elapsed() >= self.config.cool_down => {
                breaker.state = BreakerState::HalfOpen;
                Gate::Pass
            }
            BreakerState::Open | BreakerState::HalfOpen => Gate::Skip,
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
        if let Gate::Skip = self.gate() {
            return Ok(None);
        }
        match call.await {
            Ok(value) => {
                self.on_success();
                Ok(Some(value))
            }
            Err(err) if is_backend_failure(&err) => {
                self.on_failure(&err);
                Ok(None)
            }
            Err(err) => {
                // The backend answered; the request was wrong.
                self.on_success();
                Err(err)
            }
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
        if let Gate::Skip = self.gate() {
            return Err(Error::new(ErrorKind::Connection, "circuit breaker open")
                .with_backend(self.inner.name())
                .with_operation("incr"));
        }
        let result = self.inner.incr(key, delta, ttl).await;
        match &result {
            Err(err) if is_backend_failure(err) => self.on_failure(err),
            _ => self.on_success(),
        }
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
