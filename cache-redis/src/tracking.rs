//! [`RedisTracking`]: L1 invalidation told by Redis itself (RESP3 client
//! tracking, broadcasting mode), so a write by *any* client — another
//! service, a script, `redis-cli` — drops the L1 copies.
//!
//! One connection per subscription speaks RESP3 and sends
//! `CLIENT TRACKING ON BCAST PREFIX {prefix}:`; from then on the server
//! pushes `invalidate` with the keys under the prefix that any client
//! changed (written, deleted, expired, evicted), and `invalidate` with no
//! key list after `FLUSHDB`/`FLUSHALL`. The subscription turns them into
//! [`BackplaneEvent`]s, so [`Tiered::with_backplane`] takes it unchanged.
//!
//! # Why the push API of redis-rs, not its client-side cache
//!
//! redis-rs 1.x offers two ways in. Its experimental client-side cache
//! (feature `cache-aio`, `AsyncConnectionConfig::set_cache_config`) keeps
//! its own LRU of *command replies* inside the connection, turns on
//! default-mode tracking on the data connection and drops entries on
//! `invalidate` pushes. It does not fit here: the copies would live in a
//! second cache beside our L1 (not the bounded, TTL-capped `MemoryBackend`
//! whose hits `Tiered` counts), nothing tells the caller when a copy is
//! dropped or when the connection was lost (a reconnect only bumps an
//! internal epoch), it caches per connection (every `RedisBackend`
//! connection would hold its own copy) and it adds the `lru` dependency
//! for an API marked experimental. The push API
//! (`AsyncConnectionConfig::set_push_sender` with
//! `ProtocolVersion::RESP3`, delivering `PushInfo` with
//! `PushKind::Invalidate` and `PushKind::Disconnection`) is stable, is what
//! [`RedisBackplane`](crate::RedisBackplane) already uses, and gives
//! exactly the two signals `Tiered` needs: these keys changed, and the
//! channel was lost.
//!
//! # Why BCAST, not OPTIN
//!
//! In the default and `OPTIN` modes the server remembers, per client, the
//! keys that *client* read, and only those are invalidated. Our reads go
//! through `RedisBackend`'s own connections, so `OPTIN` would need each of
//! them to send `CLIENT TRACKING ON REDIRECT <id> OPTIN` on every
//! (re)connect and `CLIENT CACHING YES` before every read, and it costs the
//! server memory per key read per client (`tracking-table-max-keys`).
//! Broadcasting mode costs the server nothing per key: every change under
//! the prefix goes to every subscription, the same fan-out as the pub/sub
//! backplane. Only `BCAST` is offered.
//!
//! [`Tiered::with_backplane`]: cache_core::layers::Tiered::with_backplane

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use cache_core::{
    Backplane, BackplaneEvent, BackplaneMessage, Error, ErrorKind, Invalidation, Result,
};
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, ConnectionInfo, ProtocolVersion, PushInfo, PushKind, Value};
use tokio::sync::mpsc;

use crate::backplane::{until_dead, DEAD_AFTER, RETRY_MAX, RETRY_MIN};
use crate::config::{RedisConfig, RedisMode};

/// The origin of every message: no `Tiered` instance has it (theirs are
/// random and non-zero), so none is ignored as the instance's own.
pub const TRACKING_ORIGIN: u64 = 0;

/// L1 invalidation by Redis client tracking: a [`Backplane`] whose
/// subscriptions receive, from the server, every change of a key under the
/// cache's prefix, whoever made it. `publish` does nothing (the server
/// tells every subscription).
///
/// Supported deployments: one server (`redis://`, `rediss://`,
/// `redis+unix://`), Redis 6 or later. Not supported: Redis Cluster (each
/// primary tracks only its own keys, so a subscription per primary would be
/// needed, following resharding and failovers) and Sentinel (the
/// subscription would have to follow the primary); both are an
/// [`Unsupported`](ErrorKind::Unsupported) error.
///
/// # Events
///
/// - An `invalidate` push with keys: [`BackplaneEvent::Message`] with
///   [`Invalidation::Keys`] and origin [`TRACKING_ORIGIN`]. This includes
///   the instance's own writes (the server cannot tell them apart): the L1
///   copy a write just made is dropped too, and the next read copies it
///   again from Redis.
/// - An `invalidate` push without keys (`FLUSHDB`, `FLUSHALL`):
///   [`BackplaneEvent::Resync`].
/// - The connection lost (closed, or a `PING`, sent each second, not
///   answered within 2.5 s): `Resync`, then reconnection with backoff
///   (50 ms to 2 s), and `Resync` again once tracking is back, since a read
///   in between may have copied a value whose change was not told.
///
/// Tracking in broadcasting mode is not per database: a change of a key
/// under the prefix in another database of the same server is told too (a
/// harmless extra drop).
///
/// # Examples
///
/// ```no_run
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> cache::Result<()> {
/// use cache::layers::{Tiered, TieredConfig};
/// use cache::memory::MemoryBackend;
/// use cache::redis::{RedisBackend, RedisTracking};
/// use std::sync::Arc;
///
/// let url = "redis://127.0.0.1:6379";
/// // Keys of the cache with prefix "shop" are "shop:…".
/// let tracking = RedisTracking::from_url(url, "shop")?;
/// let tiered = Tiered::new(
///     Arc::new(MemoryBackend::new()),
///     Arc::new(RedisBackend::from_url(url).await?),
///     TieredConfig::default(),
/// )
/// .with_backplane(Arc::new(tracking))
/// .await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RedisTracking {
    inner: Arc<Inner>,
}

struct Inner {
    /// The server.
    info: ConnectionInfo,
    /// `{prefix}:`.
    prefix: String,
    /// Where the server is, for messages (no credentials).
    target: String,
    connect_timeout: Duration,
}

impl std::fmt::Debug for RedisTracking {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisTracking")
            .field("prefix", &self.inner.prefix)
            .field("target", &self.inner.target)
            .finish_non_exhaustive()
    }
}

impl RedisTracking {
    /// Tracking of the keys of the cache with `prefix` (keys
    /// `{prefix}:…`) on the server at `url`. Nothing is connected until
    /// [`subscribe`](Backplane::subscribe).
    ///
    /// # Errors
    ///
    /// As [`new`](Self::new).
    pub fn from_url(url: &str, prefix: &str) -> Result<Self> {
        Self::new(&RedisConfig::from_url(url)?, prefix)
    }

    /// Tracking of the keys of the cache with `prefix` on the server
    /// `config` describes; its connect timeout bounds connecting.
    ///
    /// # Errors
    ///
    /// [`Config`](ErrorKind::Config) for an invalid configuration or a
    /// prefix a cache cannot have (see [`validate_prefix`](cache_core::validate_prefix));
    /// [`Unsupported`](ErrorKind::Unsupported) for a Redis Cluster or a
    /// Sentinel configuration.
    ///
    /// # Examples
    ///
    /// ```
    /// use cache::ErrorKind;
    /// use cache::redis::{RedisConfig, RedisTracking};
    ///
    /// let tracking = RedisTracking::from_url("redis://127.0.0.1:6379", "shop")?;
    /// assert_eq!(tracking.prefix(), "shop:");
    /// let cluster = RedisConfig::cluster(["127.0.0.1:7000"]);
    /// let err = RedisTracking::new(&cluster, "shop").unwrap_err();
    /// assert_eq!(err.kind(), ErrorKind::Unsupported);
    /// # Ok::<(), cache::Error>(())
    /// ```
    pub fn new(config: &RedisConfig, prefix: &str) -> Result<Self> {
        match config.mode() {
            RedisMode::Standalone => {}
            mode => {
                return Err(Error::new(
                    ErrorKind::Unsupported,
                    format!(
                        "client tracking supports one Redis server, not {}; use the pub/sub \
                         backplane (RedisBackplane)",
                        match mode {
                            RedisMode::Cluster => "a Redis Cluster",
                            _ => "a Sentinel deployment",
                        }
                    ),
                )
                .with_backend("redis")
                .with_operation("tracking"));
            }
        }
        cache_core::validate_prefix(prefix).map_err(|e| {
            Error::new(
                ErrorKind::Config,
                format!("client tracking needs a cache prefix, not {prefix:?}"),
            )
            .with_backend("redis")
            .with_source(e)
        })?;
        let info = config.connection_info()?;
        let settings = info
            .redis_settings()
            .clone()
            .set_protocol(ProtocolVersion::RESP3);
        let info = info
            .set_redis_settings(settings)
            .set_tcp_settings(crate::backplane::tcp_settings());
        Ok(RedisTracking {
            inner: Arc::new(Inner {
                info,
                prefix: format!("{prefix}:"),
                target: config.target(),
                connect_timeout: config.connect_timeout(),
            }),
        })
    }

    /// The tracked key prefix: the cache's prefix and `:`.
    pub fn prefix(&self) -> &str {
        &self.inner.prefix
    }

    /// Connects (RESP3) and turns tracking on.
    async fn open(&self) -> redis::RedisResult<Tracked> {
        let (push_tx, pushes) = mpsc::unbounded_channel();
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.inner.connect_timeout))
            .set_response_timeout(Some(DEAD_AFTER))
            .set_push_sender(push_tx);
        let client = redis::Client::open(self.inner.info.clone())?;
        let mut conn = client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        redis::pipe()
            .cmd("CLIENT")
            .arg("SETNAME")
            .arg("cache-tracking")
            .ignore()
            .cmd("CLIENT")
            .arg("TRACKING")
            .arg("ON")
            .arg("BCAST")
            .arg("PREFIX")
            .arg(&self.inner.prefix)
            .ignore()
            .query_async::<()>(&mut conn)
            .await?;
        Ok(Tracked { conn, pushes })
    }

    /// [`open`](Self::open), bounded.
    async fn open_bounded(&self) -> Result<Tracked> {
        let limit = self.inner.connect_timeout + DEAD_AFTER;
        match tokio::time::timeout(limit, self.open()).await {
            Ok(Ok(tracked)) => Ok(tracked),
            Ok(Err(e)) => Err(crate::error::map_error(e, "tracking")),
            Err(_) => Err(Error::new(
                ErrorKind::Timeout,
                format!(
                    "client tracking on {} not on within {} ms",
                    self.inner.target,
                    limit.as_millis()
                ),
            )
            .with_backend("redis")
            .with_operation("tracking")),
        }
    }

    /// Forwards the connection's invalidations to `tx` until it is lost
    /// (`Some(why)`) or `tx`'s receiver is gone (`None`).
    async fn pump(
        &self,
        mut tracked: Tracked,
        tx: &mpsc::Sender<BackplaneEvent>,
    ) -> Option<&'static str> {
        let dead = until_dead(tracked.conn.clone());
        tokio::pin!(dead);
        loop {
            tokio::select! {
                push = tracked.pushes.recv() => match push {
                    None => return Some("the connection closed"),
                    Some(push) => match push.kind {
                        PushKind::Invalidate => {
                            let delivered = tx.send(event(push)).await.is_ok();
                            if !delivered {
                                return None;
                            }
                        }
                        PushKind::Disconnection => return Some("the connection closed"),
                        _ => {}
                    },
                },
                () = &mut dead => return Some("no answer to PING within 2.5 s"),
                () = tx.closed() => return None,
            }
        }
    }
}

/// The event an `invalidate` push stands for: its keys, or (no key list:
/// `FLUSHDB`/`FLUSHALL`) a resync.
fn event(push: PushInfo) -> BackplaneEvent {
    match push.data.into_iter().next() {
        Some(Value::Array(keys)) => {
            let keys = keys
                .into_iter()
                .filter_map(|key| match key {
                    Value::BulkString(bytes) => Some(String::from_utf8_lossy(&bytes).into_owned()),
                    Value::SimpleString(text) => Some(text),
                    _ => None,
                })
                .collect();
            BackplaneEvent::Message(BackplaneMessage::new(
                TRACKING_ORIGIN,
                Invalidation::Keys(keys),
            ))
        }
        // Null (a flush), or a shape this version does not know: drop all.
        _ => BackplaneEvent::Resync,
    }
}

/// A connection with tracking on, and the pushes it receives.
struct Tracked {
    /// For `PING`s; invalidations arrive on `pushes`.
    conn: MultiplexedConnection,
    pushes: mpsc::UnboundedReceiver<PushInfo>,
}

#[async_trait]
impl Backplane for RedisTracking {
    fn name(&self) -> &'static str {
        "redis-tracking"
    }

    /// Does nothing: the server tells every subscription about every
    /// change, including this instance's writes.
    async fn publish(&self, _message: &BackplaneMessage) -> Result<()> {
        Ok(())
    }

    /// Opens a connection with tracking on.
    ///
    /// # Errors
    ///
    /// [`Connection`](ErrorKind::Connection) or
    /// [`Timeout`](ErrorKind::Timeout) when the server cannot be reached;
    /// the server's error when it refuses tracking (Redis before 6).
    async fn subscribe(&self) -> Result<mpsc::Receiver<BackplaneEvent>> {
        let first = self.open_bounded().await?;
        tracing::debug!(prefix = %self.inner.prefix, target = %self.inner.target, "tracking: on");
        let (tx, rx) = mpsc::channel(1024);
        let this = self.clone();
        tokio::spawn(async move {
            let mut tracked = Some(first);
            let mut wait = RETRY_MIN;
            loop {
                if let Some(on) = tracked.take() {
                    wait = RETRY_MIN;
                    let Some(why) = this.pump(on, &tx).await else {
                        return;
                    };
                    tracing::warn!(prefix = %this.inner.prefix, target = %this.inner.target, reason = why, "tracking: connection lost, reconnecting");
                    if tx.send(BackplaneEvent::Resync).await.is_err() {
                        return;
                    }
                }
                if tx.is_closed() {
                    return;
                }
                match this.open_bounded().await {
                    Ok(on) => {
                        tracing::info!(prefix = %this.inner.prefix, target = %this.inner.target, "tracking: on again");
                        // Changes made while we were away were not told.
                        if tx.send(BackplaneEvent::Resync).await.is_err() {
                            return;
                        }
                        tracked = Some(on);
                    }
                    Err(err) => {
                        tracing::debug!(error = %err, "tracking: reconnecting failed");
                        tokio::select! {
                            () = tokio::time::sleep(wait) => {}
                            () = tx.closed() => return,
                        }
                        wait = (wait * 2).min(RETRY_MAX);
                    }
                }
            }
        });
        Ok(rx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push(data: Vec<Value>) -> PushInfo {
        PushInfo {
            kind: PushKind::Invalidate,
            data,
        }
    }

    #[test]
    fn an_invalidate_push_is_its_keys_or_a_resync() {
        let keys = push(vec![Value::Array(vec![
            Value::BulkString(b"app:user:1".to_vec()),
            Value::BulkString(b"app:user:2".to_vec()),
        ])]);
        assert_eq!(
            event(keys),
            BackplaneEvent::Message(BackplaneMessage::new(
                0,
                Invalidation::Keys(vec!["app:user:1".into(), "app:user:2".into()])
            ))
        );
        assert_eq!(event(push(vec![Value::Nil])), BackplaneEvent::Resync);
        assert_eq!(event(push(vec![])), BackplaneEvent::Resync);
    }
}
