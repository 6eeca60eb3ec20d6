//! `Deferred`: a backend that connects in the background, so a service can
//! start while its cache server is down.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;

use crate::backend::{CacheBackend, Capabilities, Health, HealthStatus, KeyTtl, SetOptions};
use crate::error::{Error, ErrorKind, Result};

/// The first wait between connection attempts; doubled after each failure
/// up to [`MAX_RETRY`].
const FIRST_RETRY: Duration = Duration::from_millis(100);
/// The longest wait between connection attempts.
const MAX_RETRY: Duration = Duration::from_secs(2);

/// A backend that is still connecting: every call fails promptly with
/// [`ErrorKind::Connection`] ("not connected yet") until a background task
/// has connected, then every call goes to the connected backend.
///
/// The task retries with exponential back-off (100 ms doubling to 2 s) and
/// ends once connected or when the `Deferred` is dropped. Put
/// [`FailOpen`](crate::layers::FailOpen) over it and a service starts, and
/// serves (from its loaders and L1), while the cache server is down;
/// `cache::open` does so when fail-open is configured and the first
/// connection fails.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> cache::Result<()> {
/// use cache::layers::Deferred;
/// use cache::{CacheBackend, Capabilities, ErrorKind};
/// use cache::memory::MemoryBackend;
/// use std::sync::Arc;
///
/// let backend = Deferred::spawn("memory", Capabilities::default(), || async {
///     Ok(Arc::new(MemoryBackend::new()) as Arc<dyn CacheBackend>)
/// });
/// backend.connected().await;
/// assert_eq!(backend.get("k").await?, None);
/// # Ok(())
/// # }
/// ```
pub struct Deferred {
    name: &'static str,
    caps: Capabilities,
    state: Arc<State>,
}

struct State {
    backend: OnceLock<Arc<dyn CacheBackend>>,
    connected: tokio::sync::Notify,
    last_error: Mutex<Option<String>>,
    attempts: AtomicU64,
    since: Instant,
}

impl std::fmt::Debug for Deferred {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deferred")
            .field("name", &self.name)
            .field("connected", &self.is_connected())
            .field("attempts", &self.attempts())
            .finish()
    }
}

impl Deferred {
    /// Starts connecting with `connect` in a task on the current tokio
    /// runtime. `name` and `caps` stand for the backend until it is
    /// connected (they must be what it will report).
    ///
    /// # Panics
    ///
    /// When called outside a tokio runtime.
    pub fn spawn<F, Fut>(name: &'static str, caps: Capabilities, connect: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Arc<dyn CacheBackend>>> + Send + 'static,
    {
        let state = Arc::new(State {
            backend: OnceLock::new(),
            connected: tokio::sync::Notify::new(),
            last_error: Mutex::new(None),
            attempts: AtomicU64::new(0),
            since: Instant::now(),
        });
        let weak = Arc::downgrade(&state);
        tokio::spawn(async move {
            let mut wait = FIRST_RETRY;
            loop {
                let result = connect().await;
                let Some(state) = weak.upgrade() else { return };
                state.attempts.fetch_add(1, Relaxed);
                match result {
                    Ok(backend) => {
                        let _ = state.backend.set(backend);
                        state.connected.notify_waiters();
                        tracing::info!(
                            after_ms = state.since.elapsed().as_millis() as u64,
                            "deferred backend connected"
                        );
                        return;
                    }
                    Err(err) => {
                        tracing::debug!(error = %err, "deferred backend: connecting failed");
                        *state
                            .last_error
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner) = Some(err.to_string());
                    }
                }
                drop(state);
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(MAX_RETRY);
            }
        });
        Deferred { name, caps, state }
    }

    /// Whether the backend is connected.
    pub fn is_connected(&self) -> bool {
        self.state.backend.get().is_some()
    }

    /// Connection attempts made so far.
    pub fn attempts(&self) -> u64 {
        self.state.attempts.load(Relaxed)
    }

    /// Waits until the backend is connected.
    pub async fn connected(&self) {
        loop {
            let notified = self.state.connected.notified();
            if self.is_connected() {
                return;
            }
            notified.await;
        }
    }

    fn backend(&self, op: &'static str) -> Result<&dyn CacheBackend> {
        match self.state.backend.get() {
            Some(backend) => Ok(&**backend),
            None => Err(self.not_yet(op)),
        }
    }

    #[cold]
    fn not_yet(&self, op: &'static str) -> Error {
        let last = self
            .state
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .unwrap_or_else(|| "first attempt in progress".to_owned());
        Error::new(
            ErrorKind::Connection,
            format!("not connected yet, connecting in the background ({last})"),
        )
        .with_backend(self.name)
        .with_operation(op)
    }
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl CacheBackend for Deferred {
    fn name(&self) -> &'static str {
        self.state.backend.get().map_or(self.name, |b| b.name())
    }

    fn capabilities(&self) -> Capabilities {
        self.state
            .backend
            .get()
            .map_or(self.caps, |b| b.capabilities())
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        self.backend("get")?.get(key).await
    }

    /// Forwarded once connected; before, `get` answers (with the error).
    fn get_now(&self, key: &str) -> Option<Result<Option<Bytes>>> {
        self.state.backend.get()?.get_now(key)
    }

    async fn set(&self, key: &str, value: Bytes, opts: SetOptions) -> Result<bool> {
        self.backend("set")?.set(key, value, opts).await
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        self.backend("delete")?.delete(key).await
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        self.backend("exists")?.exists(key).await
    }

    async fn ttl(&self, key: &str) -> Result<KeyTtl> {
        self.backend("ttl")?.ttl(key).await
    }

    async fn expire(&self, key: &str, ttl: Option<Duration>) -> Result<bool> {
        self.backend("expire")?.expire(key, ttl).await
    }

    async fn incr(&self, key: &str, delta: i64, ttl: Option<Duration>) -> Result<i64> {
        self.backend("incr")?.incr(key, delta, ttl).await
    }

    /// `Unhealthy`, with the attempts and the last error, until connected.
    async fn health(&self) -> Result<Health> {
        match self.state.backend.get() {
            Some(backend) => backend.health().await,
            None => {
                let mut health = Health::new(HealthStatus::Unhealthy, Duration::ZERO)
                    .with_detail("connecting", true)
                    .with_detail("attempts", self.attempts());
                if let Some(err) = self
                    .state
                    .last_error
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .as_ref()
                {
                    health = health.with_detail("last_error", err);
                }
                Ok(health)
            }
        }
    }

    async fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Bytes>>> {
        self.backend("get_many")?.get_many(keys).await
    }

    async fn set_many(&self, items: &[(&str, Bytes)], ttl: Option<Duration>) -> Result<()> {
        self.backend("set_many")?.set_many(items, ttl).await
    }

    async fn delete_many(&self, keys: &[&str]) -> Result<u64> {
        self.backend("delete_many")?.delete_many(keys).await
    }

    async fn scan(&self, pattern: &str) -> Result<Vec<String>> {
        self.backend("scan")?.scan(pattern).await
    }

    async fn delete_matching(&self, pattern: &str) -> Result<u64> {
        self.backend("delete_matching")?
            .delete_matching(pattern)
            .await
    }

    async fn clear(&self, namespace: &str) -> Result<u64> {
        self.backend("clear")?.clear(namespace).await
    }

    async fn close(&self) -> Result<()> {
        match self.state.backend.get() {
            Some(backend) => backend.close().await,
            None => Ok(()),
        }
    }
}
