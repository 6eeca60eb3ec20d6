//! [`RedisFlightLock`]: the leases of the distributed single flight in
//! Redis, and their release notifications over pub/sub.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use cache_core::{
    Acquire, Backplane, BackplaneEvent, BackplaneMessage, FlightLock, Invalidation, LeaseWakers,
    LeaseWatch, Result,
};
use redis::Script;

use crate::backend::RedisBackend;
use crate::backplane::RedisBackplane;
use crate::config::RedisConfig;
use crate::core::ttl_millis;

/// The default channel of release notifications.
pub const DEFAULT_FLIGHT_CHANNEL: &str = "cache:flights";

/// `SET NX PX`; when the lease is held, its remaining time.
/// Returns -3 when taken, else `PTTL` (ms left, -1 without expiry).
const ACQUIRE_SCRIPT: &str = r"
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return -3
end
return redis.call('PTTL', KEYS[1])
";

/// Compare-and-`PEXPIRE`: 1 when `ARGV[1]` holds the lease.
const EXTEND_SCRIPT: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
";

/// Compare-and-delete: 1 when `ARGV[1]` held the lease.
const RELEASE_SCRIPT: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// A [`FlightLock`] in Redis: what makes `get_or_set` run one loader per
/// key across every process sharing the Redis deployment.
///
/// - A lease is a key (`{cache key}:lease`) set with `SET NX PX` to a
///   random token; extending and releasing are Lua scripts that act only
///   while the token holds it (compare-and-`PEXPIRE`, compare-and-`DEL`).
/// - A release is announced on one pub/sub channel per lock (default
///   [`DEFAULT_FLIGHT_CHANNEL`]; give each cache's prefix its own, e.g.
///   `shop:flights`), carrying the lease key. Each `RedisFlightLock` holds
///   one subscription (a [`RedisBackplane`], with its reconnection,
///   heartbeat and deployment handling) and wakes its waiters of that key;
///   when the subscription is lost it wakes them all, so they re-check.
///   Every process receives every release of the channel: one small message
///   per load that had a lease, not per read.
/// - On a cluster (feature `cluster`), a lease is one key, so one slot,
///   and the scripts run on its primary; the channel is a shard channel
///   (`SPUBLISH`/`SSUBSCRIBE`, Redis 7). With Sentinel, both follow the
///   primary.
///
/// # Examples
///
/// ```no_run
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> cache::Result<()> {
/// use cache::{Cache, DistributedFlight};
/// use cache::redis::{RedisBackend, RedisFlightLock};
/// use std::sync::Arc;
///
/// let url = "redis://127.0.0.1:6379";
/// let lock = RedisFlightLock::connect(url, "shop:flights").await?;
/// let cache = Cache::builder(Arc::new(RedisBackend::from_url(url).await?))
///     .prefix("shop")
///     .distributed_single_flight(Arc::new(lock), DistributedFlight::default())
///     .build()?;
/// # let _ = cache;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RedisFlightLock {
    inner: Arc<Inner>,
}

struct Inner {
    /// For the scripts (one connection).
    redis: RedisBackend,
    /// Publishes the releases; its subscription feeds `wakers`.
    backplane: RedisBackplane,
    wakers: LeaseWakers,
    /// This lock's id on the channel.
    origin: u64,
    acquire: Script,
    extend: Script,
    release: Script,
    /// The task moving notifications to `wakers`.
    pump: tokio::task::AbortHandle,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.pump.abort();
    }
}

impl std::fmt::Debug for RedisFlightLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisFlightLock")
            .field("backplane", &self.inner.backplane)
            .finish_non_exhaustive()
    }
}

impl RedisFlightLock {
    /// Connects to the deployment at `url` (as
    /// [`RedisBackend::from_url`]) and announces releases on `channel`.
    ///
    /// # Errors
    ///
    /// As [`RedisConfig::from_url`] and [`with_config`](Self::with_config).
    pub async fn connect(url: &str, channel: impl Into<String>) -> Result<Self> {
        Self::with_config(RedisConfig::from_url(url)?, channel).await
    }

    /// Connects to the deployment `config` describes (one connection for
    /// the leases, one subscription) and announces releases on `channel`.
    ///
    /// # Errors
    ///
    /// [`Config`](cache_core::ErrorKind::Config) for an invalid
    /// configuration; [`Connection`](cache_core::ErrorKind::Connection)
    /// or [`Timeout`](cache_core::ErrorKind::Timeout) when the deployment
    /// cannot be reached or subscribed to.
    pub async fn with_config(config: RedisConfig, channel: impl Into<String>) -> Result<Self> {
        let redis = RedisBackend::connect(config.clone().with_connections(1)).await?;
        let backplane = RedisBackplane::with_config(config, channel).await?;
        let mut events = backplane.subscribe().await?;
        let wakers = LeaseWakers::new();
        let pump = {
            let wakers = wakers.clone();
            tokio::spawn(async move {
                while let Some(event) = events.recv().await {
                    match event {
                        BackplaneEvent::Message(message) => {
                            if let Invalidation::Keys(keys) = message.invalidation {
                                for key in keys {
                                    wakers.wake(&key);
                                }
                            }
                        }
                        // Releases may have been missed: everyone re-checks.
                        _ => wakers.wake_all(),
                    }
                }
            })
            .abort_handle()
        };
        Ok(RedisFlightLock {
            inner: Arc::new(Inner {
                redis,
                backplane,
                wakers,
                origin: fastrand::u64(..),
                acquire: Script::new(ACQUIRE_SCRIPT),
                extend: Script::new(EXTEND_SCRIPT),
                release: Script::new(RELEASE_SCRIPT),
                pump,
            }),
        })
    }

    /// The channel releases are announced on.
    pub fn channel(&self) -> &str {
        self.inner.backplane.channel()
    }
}

#[async_trait]
impl FlightLock for RedisFlightLock {
    fn name(&self) -> &'static str {
        "redis"
    }

    async fn acquire(&self, key: &str, token: &str, lease: Duration) -> Result<Acquire> {
        let mut invocation = self.inner.acquire.key(key);
        invocation.arg(token).arg(ttl_millis(lease));
        let reply: i64 = self
            .inner
            .redis
            .core()
            .invoke("lease_acquire", &invocation)
            .await?;
        Ok(match reply {
            -3 => Acquire::Acquired,
            -1 => Acquire::Held { remaining: None },
            ms => Acquire::Held {
                remaining: Some(Duration::from_millis(u64::try_from(ms).unwrap_or(0))),
            },
        })
    }

    async fn extend(&self, key: &str, token: &str, lease: Duration) -> Result<bool> {
        let mut invocation = self.inner.extend.key(key);
        invocation.arg(token).arg(ttl_millis(lease));
        let reply: i64 = self
            .inner
            .redis
            .core()
            .invoke("lease_extend", &invocation)
            .await?;
        Ok(reply == 1)
    }

    async fn release(&self, key: &str, token: &str) -> Result<bool> {
        let mut invocation = self.inner.release.key(key);
        invocation.arg(token);
        let released = self
            .inner
            .redis
            .core()
            .invoke::<i64>("lease_release", &invocation)
            .await;
        // Waiters here wake now; the others on the message.
        self.inner.wakers.wake(key);
        let message =
            BackplaneMessage::new(self.inner.origin, Invalidation::Keys(vec![key.to_owned()]));
        let published = self.inner.backplane.publish(&message).await;
        let released = released? == 1;
        published?;
        Ok(released)
    }

    async fn watch(&self, key: &str) -> Result<LeaseWatch> {
        Ok(self.inner.wakers.watch(key))
    }
}
