//! [`DeferredFlightLock`]: a flight lock that connects in the background,
//! so a service starts while the lock's server is down.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::{Acquire, FlightLock, LeaseWakers, LeaseWatch};
use crate::connecting::Connecting;
use crate::error::{Error, ErrorKind, Result};

/// A [`FlightLock`] that is still connecting: until a background task has
/// connected it, taking, extending or releasing a lease fails promptly
/// with [`ErrorKind::Connection`] ("not connected yet") — so `get_or_set`
/// loads without the lease and counts it in
/// [`lease_fallbacks`](crate::CacheStats::lease_fallbacks) — then every
/// call goes to the connected lock.
///
/// The task retries with exponential back-off (100 ms doubling to 2 s) and
/// ends once connected or when the `DeferredFlightLock` is dropped. The
/// same idea as [`Deferred`](crate::layers::Deferred) for backends.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> cache::Result<()> {
/// use cache::{Acquire, DeferredFlightLock, FlightLock, LocalFlightLock};
/// use std::sync::Arc;
/// use std::time::Duration;
///
/// let lock = DeferredFlightLock::spawn(|| async {
///     Ok(Arc::new(LocalFlightLock::new()) as Arc<dyn FlightLock>)
/// });
/// lock.connected().await;
/// let acquired = lock.acquire("k:lease", "t", Duration::from_secs(1)).await?;
/// assert_eq!(acquired, Acquire::Acquired);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct DeferredFlightLock {
    lock: Connecting<Arc<dyn FlightLock>>,
    /// Watches handed out before the connection: woken once connected, so
    /// their owners retry on the real lock.
    early: Arc<LeaseWakers>,
}

impl std::fmt::Debug for DeferredFlightLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeferredFlightLock")
            .field("connected", &self.is_connected())
            .field("attempts", &self.attempts())
            .finish()
    }
}

impl DeferredFlightLock {
    /// Starts connecting with `connect` in a task on the current tokio
    /// runtime.
    ///
    /// # Panics
    ///
    /// When called outside a tokio runtime.
    pub fn spawn<F, Fut>(connect: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Arc<dyn FlightLock>>> + Send + 'static,
    {
        let early = Arc::new(LeaseWakers::new());
        let wake = Arc::downgrade(&early);
        let lock = Connecting::spawn("flight lock", connect, move || {
            if let Some(early) = wake.upgrade() {
                early.wake_all();
            }
        });
        DeferredFlightLock { lock, early }
    }

    /// Whether the lock is connected.
    pub fn is_connected(&self) -> bool {
        self.lock.get().is_some()
    }

    /// Connection attempts made so far.
    pub fn attempts(&self) -> u64 {
        self.lock.attempts()
    }

    /// Waits until the lock is connected.
    pub async fn connected(&self) {
        self.lock.connected().await;
    }

    fn lock(&self, op: &'static str) -> Result<&dyn FlightLock> {
        match self.lock.get() {
            Some(connected) => Ok(&**connected),
            None => Err(self.not_yet(op)),
        }
    }

    #[cold]
    fn not_yet(&self, op: &'static str) -> Error {
        Error::new(
            ErrorKind::Connection,
            format!(
                "the flight lock is not connected yet, connecting in the background ({})",
                self.lock.why_not_yet()
            ),
        )
        .with_operation(op)
    }
}

#[async_trait]
impl FlightLock for DeferredFlightLock {
    fn name(&self) -> &'static str {
        self.lock.get().map_or("deferred", |l| l.name())
    }

    async fn acquire(&self, key: &str, token: &str, lease: Duration) -> Result<Acquire> {
        self.lock("lease_acquire")?.acquire(key, token, lease).await
    }

    async fn extend(&self, key: &str, token: &str, lease: Duration) -> Result<bool> {
        self.lock("lease_extend")?.extend(key, token, lease).await
    }

    async fn release(&self, key: &str, token: &str) -> Result<bool> {
        self.lock("lease_release")?.release(key, token).await
    }

    async fn watch(&self, key: &str) -> Result<LeaseWatch> {
        match self.lock.get() {
            Some(connected) => connected.watch(key).await,
            None => Ok(self.early.watch(key)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;
    use crate::LocalFlightLock;

    #[tokio::test]
    async fn a_watch_taken_before_the_connection_is_woken_by_it() {
        let up = Arc::new(AtomicBool::new(false));
        let lock = {
            let up = Arc::clone(&up);
            DeferredFlightLock::spawn(move || {
                let up = up.load(Ordering::SeqCst);
                async move {
                    if up {
                        Ok(Arc::new(LocalFlightLock::new()) as Arc<dyn FlightLock>)
                    } else {
                        Err(Error::new(ErrorKind::Connection, "down"))
                    }
                }
            })
        };
        let mut early = lock.watch("k:lease").await.unwrap();
        let err = lock.acquire("k:lease", "t", Duration::from_secs(1)).await;
        assert_eq!(err.map_err(|e| e.kind()).err(), Some(ErrorKind::Connection));
        while lock.attempts() == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        up.store(true, Ordering::SeqCst);
        // The retry after 100 ms connects; the watch is woken then, long
        // before its own 10 s timeout.
        let woken =
            tokio::time::timeout(Duration::from_secs(5), early.wait(Duration::from_secs(10)))
                .await
                .expect("the early watch was not woken by the connection");
        assert!(woken);
        assert!(lock.is_connected());
        assert_eq!(lock.attempts(), 2);
    }
}
