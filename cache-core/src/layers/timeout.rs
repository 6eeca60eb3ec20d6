//! `Timeout`: a deadline on every call.

use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use crate::backend::{CacheBackend, Capabilities, Health, KeyTtl, SetOptions};
use crate::error::{Error, ErrorKind, Result};

/// Bounds every call to the inner backend by a deadline; a call that takes
/// longer fails with [`ErrorKind::Timeout`] (retryable).
///
/// Work whose size is the keyspace's, not one key's (`scan`,
/// `delete_matching`, `clear`), has its own deadline,
/// [`bulk_deadline`](Timeout::bulk_deadline) (default
/// [`DEFAULT_BULK_DEADLINE`], 5 minutes): a SCAN-based clear of a million
/// keys takes seconds, not the milliseconds of a `get`.
///
/// A write that timed out may still be applied by the backend later (the
/// request may already be on its way); callers must not assume it was not.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> cache::Result<()> {
/// use cache::layers::Timeout;
/// use cache::CacheBackend;
/// use cache::memory::MemoryBackend;
/// use std::time::Duration;
///
/// let backend = Timeout::new(MemoryBackend::new(), Duration::from_millis(250));
/// assert_eq!(backend.get("k").await?, None);
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Timeout<B> {
    inner: B,
    deadline: Duration,
    bulk_deadline: Duration,
}

/// The default deadline of `scan`, `delete_matching` and `clear` under
/// [`Timeout`].
pub const DEFAULT_BULK_DEADLINE: Duration = Duration::from_secs(300);

impl<B: CacheBackend> Timeout<B> {
    /// Wraps `inner` with a per-call `deadline` (and the default
    /// [bulk deadline](Timeout::with_bulk_deadline)).
    pub fn new(inner: B, deadline: Duration) -> Self {
        Timeout {
            inner,
            deadline,
            bulk_deadline: DEFAULT_BULK_DEADLINE.max(deadline),
        }
    }

    /// Sets the deadline of `scan`, `delete_matching` and `clear`, whose
    /// work grows with the keyspace.
    ///
    /// # Examples
    ///
    /// ```
    /// use cache::layers::Timeout;
    /// use cache::memory::MemoryBackend;
    /// use std::time::Duration;
    ///
    /// let backend = Timeout::new(MemoryBackend::new(), Duration::from_millis(250))
    ///     .with_bulk_deadline(Duration::from_secs(60));
    /// assert_eq!(backend.bulk_deadline(), Duration::from_secs(60));
    /// ```
    #[must_use]
    pub fn with_bulk_deadline(mut self, bulk_deadline: Duration) -> Self {
        self.bulk_deadline = bulk_deadline;
        self
    }

    /// The deadline of `scan`, `delete_matching` and `clear`.
    pub fn bulk_deadline(&self) -> Duration {
        self.bulk_deadline
    }

    /// The wrapped backend.
    pub fn inner(&self) -> &B {
        &self.inner
    }

    /// The per-call deadline.
    pub fn deadline(&self) -> Duration {
        self.deadline
    }

    async fn bounded<T>(
        &self,
        op: &'static str,
        call: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        self.within(self.deadline, op, call).await
    }

    async fn bulk<T>(&self, op: &'static str, call: impl Future<Output = Result<T>>) -> Result<T> {
        self.within(self.bulk_deadline, op, call).await
    }

    async fn within<T>(
        &self,
        deadline: Duration,
        op: &'static str,
        call: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        match tokio::time::timeout(deadline, call).await {
            Ok(result) => result,
            Err(_) => Err(Error::new(
                ErrorKind::Timeout,
                format!("no answer within {} ms", deadline.as_millis()),
            )
            .with_backend(self.inner.name())
            .with_operation(op)),
        }
    }
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl<B: CacheBackend> CacheBackend for Timeout<B> {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        self.bounded("get", self.inner.get(key)).await
    }

    /// An answer given now cannot be late: forwarded unbounded.
    fn get_now(&self, key: &str) -> Option<Result<Option<Bytes>>> {
        self.inner.get_now(key)
    }

    /// As `get_now`.
    fn get_now_joined(&self, head: &str, tail: &str) -> Option<Result<Option<Bytes>>> {
        self.inner.get_now_joined(head, tail)
    }

    /// As `get_now`.
    fn read_now_joined(
        &self,
        head: &str,
        tail: &str,
        read: &mut dyn FnMut(&Bytes),
    ) -> Option<Result<bool>> {
        self.inner.read_now_joined(head, tail, read)
    }

    async fn set(&self, key: &str, value: Bytes, opts: SetOptions) -> Result<bool> {
        self.bounded("set", self.inner.set(key, value, opts)).await
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        self.bounded("delete", self.inner.delete(key)).await
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        self.bounded("exists", self.inner.exists(key)).await
    }

    async fn ttl(&self, key: &str) -> Result<KeyTtl> {
        self.bounded("ttl", self.inner.ttl(key)).await
    }

    async fn expire(&self, key: &str, ttl: Option<Duration>) -> Result<bool> {
        self.bounded("expire", self.inner.expire(key, ttl)).await
    }

    async fn incr(&self, key: &str, delta: i64, ttl: Option<Duration>) -> Result<i64> {
        self.bounded("incr", self.inner.incr(key, delta, ttl)).await
    }

    async fn health(&self) -> Result<Health> {
        self.bounded("health", self.inner.health()).await
    }

    async fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Bytes>>> {
        self.bounded("get_many", self.inner.get_many(keys)).await
    }

    async fn set_many(&self, items: &[(&str, Bytes)], ttl: Option<Duration>) -> Result<()> {
        self.bounded("set_many", self.inner.set_many(items, ttl))
            .await
    }

    async fn delete_many(&self, keys: &[&str]) -> Result<u64> {
        self.bounded("delete_many", self.inner.delete_many(keys))
            .await
    }

    async fn scan(&self, pattern: &str) -> Result<Vec<String>> {
        self.bulk("scan", self.inner.scan(pattern)).await
    }

    async fn delete_matching(&self, pattern: &str) -> Result<u64> {
        self.bulk("delete_matching", self.inner.delete_matching(pattern))
            .await
    }

    async fn clear(&self, namespace: &str) -> Result<u64> {
        self.bulk("clear", self.inner.clear(namespace)).await
    }

    async fn close(&self) -> Result<()> {
        self.bounded("close", self.inner.close()).await
    }
}
