//! `FaultInjecting`: a backend wrapper that fails on purpose.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use cache_core::{
    CacheBackend, Capabilities, Error, ErrorKind, Health, KeyTtl, Result, SetOptions,
};

/// What [`FaultInjecting`] does to calls.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct FaultConfig {
    /// Fail every Nth call (counting every operation), if set.
    pub fail_every: Option<u64>,
    /// Fail each call with this probability (0.0 to 1.0).
    pub fail_probability: f64,
    /// Sleep this long before each call.
    pub latency: Option<Duration>,
    /// The kind of the injected errors (default `Connection`).
    pub error_kind: ErrorKind,
}

impl Default for FaultConfig {
    fn default() -> Self {
        FaultConfig {
            fail_every: None,
            fail_probability: 0.0,
            latency: None,
            error_kind: ErrorKind::Connection,
        }
    }
}

impl FaultConfig {
    /// No faults: calls pass through.
    pub fn none() -> Self {
        FaultConfig::default()
    }

    /// Fail every `n`th call.
    #[must_use]
    pub fn with_fail_every(mut self, n: u64) -> Self {
        self.fail_every = Some(n.max(1));
        self
    }

    /// Fail each call with probability `p`.
    #[must_use]
    pub fn with_fail_probability(mut self, p: f64) -> Self {
        self.fail_probability = p.clamp(0.0, 1.0);
        self
    }

    /// Add `latency` to each call.
    #[must_use]
    pub fn with_latency(mut self, latency: Duration) -> Self {
        self.latency = Some(latency);
        self
    }

    /// Fail with errors of `kind`.
    #[must_use]
    pub fn with_error_kind(mut self, kind: ErrorKind) -> Self {
        self.error_kind = kind;
        self
    }
}

/// A backend that forwards to `B` but fails calls or slows them down as its
/// [`FaultConfig`] says, to test how code using a cache copes with a
/// failing backend. The config can be changed while running.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use cache_core::{CacheBackend, ErrorKind};
/// use cache_memory::MemoryBackend;
/// use cache_testkit::{FaultConfig, FaultInjecting};
///
/// let flaky = FaultInjecting::new(MemoryBackend::new(), FaultConfig::none().with_fail_every(2));
/// assert!(flaky.get("k").await.is_ok());
/// assert_eq!(flaky.get("k").await.unwrap_err().kind(), ErrorKind::Connection);
/// assert_eq!(flaky.injected(), 1);
/// # }
/// ```
#[derive(Debug)]
pub struct FaultInjecting<B> {
    inner: B,
    config: Mutex<FaultConfig>,
    calls: AtomicU64,
    injected: AtomicU64,
}

impl<B: CacheBackend> FaultInjecting<B> {
    /// Wraps `inner`.
    pub fn new(inner: B, config: FaultConfig) -> Self {
        FaultInjecting {
            inner,
            config: Mutex::new(config),
            calls: AtomicU64::new(0),
            injected: AtomicU64::new(0),
        }
    }

    /// Replaces the fault configuration.
    pub fn set_config(&self, config: FaultConfig) {
        *self.config.lock().unwrap_or_else(PoisonError::into_inner) = config;
    }

    /// How many faults were injected.
    pub fn injected(&self) -> u64 {
        self.injected.load(Ordering::Relaxed)
    }

    /// The wrapped backend.
    pub fn inner(&self) -> &B {
        &self.inner
    }

    async fn inject(&self, op: &'static str) -> Result<()> {
        let config = *self.config.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(latency) = config.latency {
            tokio::time::sleep(latency).await;
        }
        let n = self.calls.fetch_add(1, Ordering::Relaxed) + 1;
        let by_count = config.fail_every.is_some_and(|every| n % every == 0);
        let by_chance = config.fail_probability > 0.0 && fastrand::f64() < config.fail_probability;
        if by_count || by_chance {
            self.injected.fetch_add(1, Ordering::Relaxed);
            return Err(Error::new(config.error_kind, "injected fault")
                .with_backend("fault-injecting")
                .with_operation(op));
        }
        Ok(())
    }
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl<B: CacheBackend> CacheBackend for FaultInjecting<B> {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        self.inject("get").await?;
        self.inner.get(key).await
    }

    /// Never answers now: every read goes through `get` and meets the
    /// injected faults.
    fn get_now(&self, _key: &str) -> Option<Result<Option<Bytes>>> {
        None
    }

    /// Never answers now, as `get_now`.
    fn get_now_joined(&self, _head: &str, _tail: &str) -> Option<Result<Option<Bytes>>> {
        None
    }

    /// Never answers now, as `get_now`.
    fn read_now_joined(
        &self,
        _head: &str,
        _tail: &str,
        _read: &mut dyn FnMut(&Bytes),
    ) -> Option<Result<bool>> {
        None
    }

    async fn set(&self, key: &str, value: Bytes, opts: SetOptions) -> Result<bool> {
        self.inject("set").await?;
        self.inner.set(key, value, opts).await
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        self.inject("delete").await?;
        self.inner.delete(key).await
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        self.inject("exists").await?;
        self.inner.exists(key).await
    }

    async fn ttl(&self, key: &str) -> Result<KeyTtl> {
        self.inject("ttl").await?;
        self.inner.ttl(key).await
    }

    async fn expire(&self, key: &str, ttl: Option<Duration>) -> Result<bool> {
        self.inject("expire").await?;
        self.inner.expire(key, ttl).await
    }

    async fn incr(&self, key: &str, delta: i64, ttl: Option<Duration>) -> Result<i64> {
        self.inject("incr").await?;
        self.inner.incr(key, delta, ttl).await
    }

    async fn health(&self) -> Result<Health> {
        self.inject("health").await?;
        self.inner.health().await
    }

    async fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Bytes>>> {
        self.inject("get_many").await?;
        self.inner.get_many(keys).await
    }

    async fn set_many(&self, items: &[(&str, Bytes)], ttl: Option<Duration>) -> Result<()> {
        self.inject("set_many").await?;
        self.inner.set_many(items, ttl).await
    }

    async fn delete_many(&self, keys: &[&str]) -> Result<u64> {
        self.inject("delete_many").await?;
        self.inner.delete_many(keys).await
    }

    async fn scan(&self, pattern: &str) -> Result<Vec<String>> {
        self.inject("scan").await?;
        self.inner.scan(pattern).await
    }

    async fn delete_matching(&self, pattern: &str) -> Result<u64> {
        self.inject("delete_matching").await?;
        self.inner.delete_matching(pattern).await
    }

    async fn clear(&self, namespace: &str) -> Result<u64> {
        self.inject("clear").await?;
        self.inner.clear(namespace).await
    }

    async fn close(&self) -> Result<()> {
        self.inner.close().await
    }
}
