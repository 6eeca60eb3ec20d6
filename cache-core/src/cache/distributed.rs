//! Distributed single flight: the gate a process's load passes before it
//! runs the loader, so that one process of many loads a key (see
//! [`FlightLock`](crate::FlightLock) for the protocol).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::de::DeserializeOwned;

use super::Cache;
use crate::codec::Codec;
use crate::error::Error;
use crate::fail_safe::now_ms;
use crate::flight_lock::{Acquire, FlightLock};
use crate::stats::Stat;

/// The shortest wait between two attempts on a held lease (so a lease at
/// its last millisecond is not spun on).
const MIN_WAIT: Duration = Duration::from_millis(2);

/// Settings of the distributed single flight
/// ([`CacheBuilder::distributed_single_flight`](super::CacheBuilder::distributed_single_flight)).
///
/// # Examples
///
/// ```
/// use cache::DistributedFlight;
/// use std::time::Duration;
///
/// let settings = DistributedFlight::default()
///     .with_lease(Duration::from_secs(30))
///     .with_fallback_poll(Duration::from_millis(500));
/// assert_eq!(settings.lease, Duration::from_secs(30));
/// assert!(settings.by_default);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct DistributedFlight {
    /// How long a lease runs (default 10 s): how long a crashed leader can
    /// hold the others back. A live leader extends its lease every third
    /// of this while its loader runs, so a slow loader keeps it.
    pub lease: Duration,
    /// The longest a waiter sleeps between two checks when no notification
    /// arrives (default 1 s): what a lost notification costs at most. A
    /// waiter also checks when the lease it waits on ends.
    pub fallback_poll: Duration,
    /// Whether `get_or_set` calls use it unless their options say
    /// otherwise ([`GetOrSetOptions::with_distributed`](super::GetOrSetOptions::with_distributed));
    /// default `true`.
    pub by_default: bool,
}

impl Default for DistributedFlight {
    fn default() -> Self {
        DistributedFlight {
            lease: Duration::from_secs(10),
            fallback_poll: Duration::from_secs(1),
            by_default: true,
        }
    }
}

impl DistributedFlight {
    /// Sets the lease length (at least 3 ms, so it can be extended).
    #[must_use]
    pub fn with_lease(mut self, lease: Duration) -> Self {
        self.lease = lease.max(Duration::from_millis(3));
        self
    }

    /// Sets the fallback poll (at least 2 ms).
    #[must_use]
    pub fn with_fallback_poll(mut self, poll: Duration) -> Self {
        self.fallback_poll = poll.max(MIN_WAIT);
        self
    }

    /// Whether calls use it unless their options say otherwise.
    #[must_use]
    pub fn with_by_default(mut self, on: bool) -> Self {
        self.by_default = on;
        self
    }
}

/// A cache's lock and its settings.
pub(super) struct Distributed {
    pub(super) lock: Arc<dyn FlightLock>,
    pub(super) settings: DistributedFlight,
    /// Whether the lock's last call failed: its failures are logged once
    /// per burst, with one line when it answers again.
    pub(super) failing: AtomicBool,
}

impl Distributed {
    pub(super) fn new(lock: Arc<dyn FlightLock>, settings: DistributedFlight) -> Self {
        Distributed {
            lock,
            settings,
            failing: AtomicBool::new(false),
        }
    }

    fn answered(&self) {
        if self.failing.swap(false, Ordering::Relaxed) {
            tracing::info!(lock = self.lock.name(), "the flight lock answers again");
        }
    }
}

/// What a load does after the gate.
pub(super) enum Gate {
    /// Another instance loaded the value: these are its stored bytes.
    Ready(Bytes),
    /// This process leads: load, store, then release.
    Lead(Lease),
    /// No distributed flight (off, or the lock failed): load here.
    Local,
}

/// A lease this process holds; extended in the background while it lives,
/// released by [`release`](Lease::release) or, failing that, on drop.
pub(super) struct Lease {
    lock: Arc<dyn FlightLock>,
    key: String,
    token: String,
    extender: tokio::task::AbortHandle,
    released: bool,
}

impl Lease {
    fn start(lock: Arc<dyn FlightLock>, key: String, token: String, lease: Duration) -> Self {
        let extender = {
            let (lock, key, token) = (Arc::clone(&lock), key.clone(), token.clone());
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(lease / 3).await;
                    match lock.extend(&key, &token, lease).await {
                        Ok(true) => {}
                        Ok(false) => {
                            tracing::warn!(
                                key,
                                "the load outlived its lease: another instance may load too"
                            );
                            return;
                        }
                        Err(err) => tracing::debug!(error = %err, key, "extending a lease failed"),
                    }
                }
            })
            .abort_handle()
        };
        Lease {
            lock,
            key,
            token,
            extender,
            released: false,
        }
    }

    /// Releases the lease (if still ours) and wakes the waiters.
    pub(super) async fn release(mut self) {
        self.released = true;
        self.extender.abort();
        release(&*self.lock, &self.key, &self.token).await;
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.extender.abort();
        if self.released {
            return;
        }
        let (lock, key, token) = (
            Arc::clone(&self.lock),
            std::mem::take(&mut self.key),
            std::mem::take(&mut self.token),
        );
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move { release(&*lock, &key, &token).await });
        }
    }
}

async fn release(lock: &dyn FlightLock, key: &str, token: &str) {
    match lock.release(key, token).await {
        Ok(true) => {}
        Ok(false) => tracing::debug!(key, "the lease had ended before its release"),
        Err(err) => {
            tracing::warn!(error = %err, key, "releasing a lease failed (it ends by itself)")
        }
    }
}

/// A token no other lease holder has: process id and 128 random bits.
fn new_token() -> String {
    format!(
        "{}-{:016x}{:016x}",
        std::process::id(),
        fastrand::u64(..),
        fastrand::u64(..)
    )
}

impl<C: Codec> Cache<C> {
    /// The distributed gate of the load of `full`: with distributed single
    /// flight on for this call (`per_call`, else the cache's default),
    /// takes the key's lease, or waits for its holder to store the value
    /// and returns that value. When the lock fails, counts it and loads
    /// here (the cache stays up).
    pub(super) async fn flight_gate<T: DeserializeOwned>(
        &self,
        full: &str,
        per_call: Option<bool>,
    ) -> Gate {
        let Some(distributed) = &self.inner.distributed else {
            return Gate::Local;
        };
        let settings = distributed.settings;
        if !per_call.unwrap_or(settings.by_default) {
            return Gate::Local;
        }
        let lock = &distributed.lock;
        let key = format!("{full}:lease");
        let token = new_token();
        loop {
            // Watch before asking: a release between the two still wakes us.
            let mut watch = match lock.watch(&key).await {
                Ok(watch) => watch,
                Err(err) => return self.lease_fallback(distributed, &err),
            };
            let acquired = lock.acquire(&key, &token, settings.lease).await;
            if acquired.is_ok() {
                distributed.answered();
            }
            match acquired {
                Ok(Acquire::Acquired) => {
                    return Gate::Lead(Lease::start(Arc::clone(lock), key, token, settings.lease))
                }
                Ok(Acquire::Held { remaining }) => {
                    let wait = remaining
                        .map_or(settings.fallback_poll, |r| {
                            // Check right after the lease ends.
                            (r + Duration::from_millis(1)).min(settings.fallback_poll)
                        })
                        .max(MIN_WAIT);
                    watch.wait(wait).await;
                    if let Some(bytes) = self.fresh_stored::<T>(full).await {
                        self.inner.counters.inc(Stat::LeaseWaits, 1);
                        return Gate::Ready(bytes);
                    }
                }
                Err(err) => return self.lease_fallback(distributed, &err),
            }
        }
    }

    fn lease_fallback(&self, distributed: &Distributed, err: &Error) -> Gate {
        self.inner.counters.inc(Stat::LeaseFallbacks, 1);
        if distributed.failing.swap(true, Ordering::Relaxed) {
            tracing::debug!(error = %err, "the flight lock failed: loading without it");
        } else {
            tracing::warn!(error = %err, "the flight lock failed: loading without it (logged once until it answers again)");
        }
        Gate::Local
    }

    /// The stored payload of `full` if it is fresh and decodes as `T`.
    async fn fresh_stored<T: DeserializeOwned>(&self, full: &str) -> Option<Bytes> {
        let bytes = (*self.inner.backend).get(full).await.ok()??;
        let entry = self.unwrap_stored(bytes);
        if !entry.is_fresh(now_ms()) {
            return None;
        }
        self.inner.codec.decode::<T>(&entry.payload).ok()?;
        Some(entry.payload)
    }
}
