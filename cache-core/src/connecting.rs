//! [`Connecting`]: a value (a backend, a flight lock) made by a background
//! task that retries until it succeeds, so a service starts while the
//! server behind it is down. [`Deferred`](crate::layers::Deferred) and
//! [`DeferredFlightLock`](crate::DeferredFlightLock) are built on it.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use crate::error::Result;

/// The first wait between connection attempts; doubled after each failure
/// up to [`MAX_RETRY`].
const FIRST_RETRY: Duration = Duration::from_millis(100);
/// The longest wait between connection attempts.
const MAX_RETRY: Duration = Duration::from_secs(2);

/// The value once connected, and how connecting goes until then. Clones
/// share it.
pub(crate) struct Connecting<T> {
    state: Arc<State<T>>,
}

struct State<T> {
    value: OnceLock<T>,
    connected: tokio::sync::Notify,
    last_error: Mutex<Option<String>>,
    attempts: AtomicU64,
}

impl<T> Clone for Connecting<T> {
    fn clone(&self) -> Self {
        Connecting {
            state: Arc::clone(&self.state),
        }
    }
}

impl<T: Send + Sync + 'static> Connecting<T> {
    /// Starts connecting with `connect` in a task on the current tokio
    /// runtime: attempts with exponential back-off (100 ms doubling to
    /// 2 s) until one succeeds, or until every `Connecting` of it is
    /// dropped. `on_connected` runs once the value is set and the waiters
    /// of [`connected`](Self::connected) are woken; `what` names the value
    /// in the logs.
    ///
    /// # Panics
    ///
    /// When called outside a tokio runtime.
    pub(crate) fn spawn<F, Fut>(
        what: &'static str,
        connect: F,
        on_connected: impl FnOnce() + Send + 'static,
    ) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<T>> + Send + 'static,
    {
        let state = Arc::new(State {
            value: OnceLock::new(),
            connected: tokio::sync::Notify::new(),
            last_error: Mutex::new(None),
            attempts: AtomicU64::new(0),
        });
        let weak = Arc::downgrade(&state);
        let since = Instant::now();
        tokio::spawn(async move {
            let mut wait = FIRST_RETRY;
            loop {
                let result = connect().await;
                let Some(state) = weak.upgrade() else { return };
                state.attempts.fetch_add(1, Relaxed);
                match result {
                    Ok(value) => {
                        let _ = state.value.set(value);
                        state.connected.notify_waiters();
                        on_connected();
                        tracing::info!(
                            what,
                            after_ms = since.elapsed().as_millis() as u64,
                            "connected in the background"
                        );
                        return;
                    }
                    Err(err) => {
                        tracing::debug!(what, error = %err, "connecting in the background failed");
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
        Connecting { state }
    }

    /// The value, once connected.
    pub(crate) fn get(&self) -> Option<&T> {
        self.state.value.get()
    }

    /// Connection attempts made so far.
    pub(crate) fn attempts(&self) -> u64 {
        self.state.attempts.load(Relaxed)
    }

    /// The error of the last failed attempt, if any.
    pub(crate) fn last_error(&self) -> Option<String> {
        self.state
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Why a call cannot be made yet: the last attempt's error, or that the
    /// first attempt is still in progress.
    pub(crate) fn why_not_yet(&self) -> String {
        self.last_error()
            .unwrap_or_else(|| "first attempt in progress".to_owned())
    }

    /// Waits until connected.
    pub(crate) async fn connected(&self) {
        loop {
            let notified = self.state.connected.notified();
            if self.get().is_some() {
                return;
            }
            notified.await;
        }
    }
}
