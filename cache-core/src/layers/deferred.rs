//! `Deferred`: a backend that connects in the background, so a service can
//! start while its cache server is down.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use crate::backend::{CacheBackend, Capabilities, Health, HealthStatus, KeyTtl, SetOptions};
use crate::connecting::Connecting;
use crate::error::{Error, ErrorKind, Result};

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
    backend: Connecting<Arc<dyn CacheBackend>>,
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
        let backend = Connecting::spawn("backend", connect, || ());
        Deferred {
            name,
            caps,
            backend,
        }
    }

    /// Whether the backend is connected.
    pub fn is_connected(&self) -> bool {
        self.backend.get().is_some()
    }

    /// Connection attempts made so far.
    pub fn attempts(&self) -> u64 {
        self.backend.attempts()
    }

    /// Waits until the backend is connected.
    pub async fn connected(&self) {
        self.backend.connected().await;
    }

    fn backend(&self, op: &'static str) -> Result<&dyn CacheBackend> {
        match self.backend.get() {
            Some(backend) => Ok(&**backend),
            None => Err(self.not_yet(op)),
        }
    }

    #[cold]
    fn not_yet(&self, op: &'static str) -> Error {
        Error::new(
            ErrorKind::Connection,
            format!(
                "not connected yet, connecting in the background ({})",
                self.backend.why_not_yet()
            ),
        )
        .with_backend(self.name)
        .with_operation(op)
    }
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl CacheBackend for Deferred {
    fn name(&self) -> &'static str {
        self.backend.get().map_or(self.name, |b| b.name())
    }

    fn capabilities(&self) -> Capabilities {
        self.backend.get().map_or(self.caps, |b| b.capabilities())
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        self.backend("get")?.get(key).await
    }

    /// Forwarded once connected; before, `get` answers (with the error).
    fn get_now(&self, key: &str) -> Option<Result<Option<Bytes>>> {
        self.backend.get()?.get_now(key)
    }

    /// As `get_now`.
    fn get_now_joined(&self, head: &str, tail: &str) -> Option<Result<Option<Bytes>>> {
        self.backend.get()?.get_now_joined(head, tail)
    }

    /// As `get_now`.
    fn read_now_joined(
        &self,
        head: &str,
        tail: &str,
        read: &mut dyn FnMut(&Bytes),
    ) -> Option<Result<bool>> {
        self.backend.get()?.read_now_joined(head, tail, read)
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
        match self.backend.get() {
            Some(backend) => backend.health().await,
            None => {
                let mut health = Health::new(HealthStatus::Unhealthy, Duration::ZERO)
                    .with_detail("connecting", true)
                    .with_detail("attempts", self.attempts());
                if let Some(err) = self.backend.last_error() {
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
        match self.backend.get() {
            Some(backend) => backend.close().await,
            None => Ok(()),
        }
    }
}
