//! [`DeferredFlightLock`]: a flight lock that connects in the background,
//! so a service starts while the lock's server is down.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;

use super::{lock, Acquire, FlightLock, LeaseWakers, LeaseWatch};
use crate::error::{Error, ErrorKind, Result};

/// The first wait between connection attempts, doubled after each failure
/// up to [`MAX_RETRY`].
const FIRST_RETRY: Duration = Duration::from_millis(100);
/// The longest wait between connection attempts.
const MAX_RETRY: Duration = Duration::from_secs(2);

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
    state: Arc<State>,
}

struct State {
    lock: OnceLock<Arc<dyn FlightLock>>,
    connected: tokio::sync::Notify,
    last_error: Mutex<Option<String>>,
    attempts: AtomicU64,
    /// Watches handed out before the connection: woken once connected, so
    /// their owners retry on the real lock.
    early: LeaseWakers,
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
        let state = Arc::new(State {
            lock: OnceLock::new(),
            connected: tokio::sync::Notify::new(),
            last_error: Mutex::new(None),
            attempts: AtomicU64::new(0),
            early: LeaseWakers::new(),
        });
        let weak = Arc::downgrade(&state);
        tokio::spawn(async move {
            let mut wait = FIRST_RETRY;
            loop {
                let result = connect().await;
                let Some(state) = weak.upgrade() else { return };
                state.attempts.fetch_add(1, Relaxed);
                match result {
                    Ok(connected) => {
                        let _ = state.lock.set(connected);
                        state.connected.notify_waiters();
                        state.early.wake_all();
                        tracing::info!("deferred flight lock connected");
                        return;
                    }
                    Err(err) => {
                        tracing::debug!(error = %err, "deferred flight lock: connecting failed");
                        *lock(&state.last_error) = Some(err.to_string());
                    }
                }
                drop(state);
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(MAX_RETRY);
            }
        });
        DeferredFlightLock { state }
    }

    /// Whether the lock is connected.
    pub fn is_connected(&self) -> bool {
        self.state.lock.get().is_some()
    }

    /// Connection attempts made so far.
    pub fn attempts(&self) -> u64 {
        self.state.attempts.load(Relaxed)
    }

    /// Waits until the lock is connected.
    pub async fn connected(&self) {
        loop {
            let notified = self.state.connected.notified();
            if self.is_connected() {
                return;
            }
            notified.await;
        }
    }

    fn lock(&self, op: &'static str) -> Result<&dyn FlightLock> {
        match self.state.lock.get() {
            Some(connected) => Ok(&**connected),
            None => Err(self.not_yet(op)),
        }
    }

    #[cold]
    fn not_yet(&self, op: &'static str) -> Error {
        let last = lock(&self.state.last_error)
            .clone()
            .unwrap_or_else(|| "first attempt in progress".to_owned());
        Error::new(
            ErrorKind::Connection,
            format!("the flight lock is not connected yet, connecting in the background ({last})"),
        )
        .with_operation(op)
    }
}

#[async_trait]
impl FlightLock for DeferredFlightLock {
    fn name(&self) -> &'static str {
        self.state.lock.get().map_or("deferred", |l| l.name())
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
        match self.state.lock.get() {
            Some(connected) => connected.watch(key).await,
            None => Ok(self.state.early.watch(key)),
        }
    }
}
