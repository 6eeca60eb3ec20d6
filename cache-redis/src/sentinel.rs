//! Sentinel mode: a connection to the primary the Sentinels name, moved to
//! the new primary after a failover.
//!
//! The redis crate's `SentinelClient` finds the primary (it asks the
//! Sentinels, then checks that the node it names answers `ROLE` as a
//! primary), but a connection it opens stays on that node. This module
//! keeps one multiplexed connection to the current primary and, when a call
//! fails in a way a failover explains (a lost connection, a timeout, a
//! `READONLY` reply from a demoted primary), asks the Sentinels again in the
//! background: a new address means a new connection; the same address with
//! a working connection means nothing changed. Calls made meanwhile fail
//! fast with a retryable error, as with a single server that restarts.
//!
//! It does not wait for a failed call to learn of a failover: each
//! connection also subscribes, on one Sentinel after another, to the
//! `+switch-master` channel ([`watch_switch_master`]), and looks for the
//! new primary as soon as the Sentinels announce it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use cache_core::{Error, ErrorKind, Result};
use futures_util::StreamExt;
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{AsyncConnectionConfig, Cmd, Pipeline, RedisFuture, Value};

use crate::config::{RedisConfig, SentinelTarget};
use crate::error::connect_error;

/// The first pause between two attempts to find the new primary.
const FIRST_RETRY: Duration = Duration::from_millis(50);

/// The longest pause between two attempts to find the new primary.
const MAX_RETRY: Duration = Duration::from_millis(500);

/// How often the `+switch-master` subscription is checked with a `PING`.
const WATCH_HEARTBEAT: Duration = Duration::from_secs(1);

/// A `PING` on the `+switch-master` subscription unanswered this long
/// means the Sentinel is gone: the watcher moves to the next one.
const WATCH_DEAD_AFTER: Duration = Duration::from_millis(2500);

/// Opens `config.pool_size()` connections to the primary the Sentinels
/// name, each checked with a `PING`, within the connect timeout.
pub(crate) async fn connect(config: &RedisConfig) -> Result<Vec<SentinelConnection>> {
    let target = config.sentinel_target()?;
    let mut connections = Vec::with_capacity(config.pool_size());
    for _ in 0..config.pool_size() {
        let shared = Arc::new(Shared::new(&target, config)?);
        let (conn, addr) = tokio::time::timeout(config.connect_timeout(), shared.open())
            .await
            .map_err(|_| {
                Error::new(
                    ErrorKind::Connection,
                    format!(
                        "cannot connect to {}: no primary found within {} ms",
                        config.target(),
                        config.connect_timeout().as_millis()
                    ),
                )
                .with_backend("redis")
                .with_operation("connect")
            })?
            .map_err(|e| connect_error(e, &config.target()))?;
        tracing::debug!(master = %target.master, primary = %addr, "found the primary through Sentinel");
        *shared.state.write().unwrap_or_else(|p| p.into_inner()) = State {
            conn: Some(conn),
            addr,
        };
        let weak = Arc::downgrade(&shared);
        let watcher = tokio::spawn(watch_switch_master(
            target.clone(),
            config.connect_timeout(),
            move |primary| {
                if let Some(shared) = weak.upgrade() {
                    tracing::info!(master = %shared.master, %primary, "the Sentinels announced a new primary");
                    start_refresh(&shared);
                    // A lookup already running looks again now, not after
                    // its pause.
                    shared.wake.notify_one();
                }
            },
        ));
        *shared.watcher.lock().unwrap_or_else(|p| p.into_inner()) = Some(watcher.abort_handle());
        connections.push(SentinelConnection { shared });
    }
    Ok(connections)
}

/// A connection to the current primary; clones share it.
#[derive(Clone)]
pub(crate) struct SentinelConnection {
    shared: Arc<Shared>,
}

struct Shared {
    /// Asks the Sentinels; one lookup at a time.
    sentinel: tokio::sync::Mutex<SentinelClient>,
    state: RwLock<State>,
    /// A background lookup is running.
    refreshing: AtomicBool,
    /// Wakes a running lookup from its pause (a failover was announced).
    wake: tokio::sync::Notify,
    /// The `+switch-master` watcher, stopped with the connection.
    watcher: std::sync::Mutex<Option<tokio::task::AbortHandle>>,
    connection_config: AsyncConnectionConfig,
    connect_timeout: Duration,
    response_timeout: Duration,
    master: String,
    db: i64,
}

#[derive(Default)]
struct State {
    conn: Option<MultiplexedConnection>,
    /// `host:port` of the primary `conn` talks to.
    addr: String,
}

impl Drop for Shared {
    fn drop(&mut self) {
        if let Some(watcher) = self
            .watcher
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            watcher.abort();
        }
    }
}

/// A client that asks the Sentinels of `target` for its primary.
pub(crate) fn sentinel_client(
    target: &SentinelTarget,
    config: &RedisConfig,
) -> Result<SentinelClient> {
    let addrs = target
        .sentinels
        .iter()
        .map(|(host, port)| config.node_addr(host, *port));
    let mut builder = SentinelClientBuilder::new(addrs, &target.master, SentinelServerType::Master)
        .map_err(|e| connect_error(e, &config.target()))?
        .set_client_to_redis_db(target.redis.db());
    if let Some(username) = target.redis.username() {
        builder = builder.set_client_to_redis_username(username);
    }
    if let Some(password) = target.redis.password() {
        builder = builder.set_client_to_redis_password(password);
    }
    if let Some(password) = &target.sentinel_password {
        builder = builder.set_client_to_sentinel_password(password);
    }
    #[cfg(feature = "tls")]
    if target.tls.on {
        builder = builder
            .set_client_to_redis_tls_mode(redis::TlsMode::Secure)
            .set_client_to_sentinel_tls_mode(redis::TlsMode::Secure);
        if let Some(certs) = &target.tls.certs {
            builder = builder
                .set_client_to_redis_certificates(certs.clone())
                .set_client_to_sentinel_certificates(certs.clone());
        }
    }
    builder
        .build()
        .map_err(|e| connect_error(e, &config.target()))
}

impl Shared {
    fn new(target: &SentinelTarget, config: &RedisConfig) -> Result<Self> {
        let client = sentinel_client(target, config)?;
        Ok(Shared {
            sentinel: tokio::sync::Mutex::new(client),
            state: RwLock::new(State::default()),
            refreshing: AtomicBool::new(false),
            wake: tokio::sync::Notify::new(),
            watcher: std::sync::Mutex::new(None),
            connection_config: AsyncConnectionConfig::new()
                .set_connection_timeout(Some(config.connect_timeout()))
                .set_response_timeout(Some(config.response_timeout())),
            connect_timeout: config.connect_timeout(),
            response_timeout: config.response_timeout(),
            master: target.master.clone(),
            db: target.redis.db(),
        })
    }

    /// Asks the Sentinels for the primary, connects and `PING`s it.
    async fn open(&self) -> redis::RedisResult<(MultiplexedConnection, String)> {
        let client = self.sentinel.lock().await.async_get_client().await?;
        let addr = client.get_connection_info().addr().to_string();
        let mut conn = client
            .get_multiplexed_async_connection_with_config(&self.connection_config)
            .await?;
        redis::cmd("PING").query_async::<Value>(&mut conn).await?;
        Ok((conn, addr))
    }

    /// Where the Sentinels say the primary is, and whether the node there
    /// answers as a primary.
    async fn primary_address(&self) -> redis::RedisResult<String> {
        let client = self.sentinel.lock().await.async_get_client().await?;
        Ok(client.get_connection_info().addr().to_string())
    }

    fn current(&self) -> (Option<MultiplexedConnection>, String) {
        let state = self.state.read().unwrap_or_else(|p| p.into_inner());
        (state.conn.clone(), state.addr.clone())
    }

    /// One attempt: `Ok` when the connection in use is to the primary and
    /// works (kept or replaced).
    async fn refresh_once(&self) -> redis::RedisResult<()> {
        let (conn, addr) = self.current();
        let primary = bounded(
            self.connect_timeout,
            "Sentinel lookup",
            self.primary_address(),
        )
        .await?;
        if primary == addr {
            if let Some(mut conn) = conn {
                let ping = bounded(
                    self.response_timeout,
                    "PING",
                    redis::cmd("PING").query_async::<Value>(&mut conn),
                )
                .await;
                if ping.is_ok() {
                    return Ok(());
                }
            }
        }
        let (conn, new_addr) = bounded(self.connect_timeout, "connect", self.open()).await?;
        if new_addr != addr {
            tracing::info!(master = %self.master, from = %addr, to = %new_addr, "Redis primary changed");
        } else {
            tracing::debug!(master = %self.master, primary = %addr, "reconnected to the Redis primary");
        }
        *self.state.write().unwrap_or_else(|p| p.into_inner()) = State {
            conn: Some(conn),
            addr: new_addr,
        };
        Ok(())
    }
}

/// `future`, or a timeout error after `limit`.
async fn bounded<T>(
    limit: Duration,
    what: &'static str,
    future: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> redis::RedisResult<T> {
    match tokio::time::timeout(limit, future).await {
        Ok(result) => result,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("{what} took more than {} ms", limit.as_millis()),
        )
        .into()),
    }
}

/// Looks for the primary until the connection works again; stops early
/// when the backend is gone.
async fn refresh_until_done(shared: Weak<Shared>) {
    let mut pause = FIRST_RETRY;
    loop {
        let Some(strong) = shared.upgrade() else {
            return;
        };
        match strong.refresh_once().await {
            Ok(()) => {
                strong.refreshing.store(false, Ordering::Release);
                return;
            }
            Err(e) => {
                tracing::debug!(master = %strong.master, error = %e, "no usable Redis primary yet");
            }
        }
        let woken = tokio::select! {
            () = tokio::time::sleep(pause) => false,
            () = strong.wake.notified() => true,
        };
        drop(strong);
        pause = if woken {
            FIRST_RETRY
        } else {
            (pause * 2).min(MAX_RETRY)
        };
    }
}

/// Starts looking for the primary in the background, unless a lookup is
/// running already.
fn start_refresh(shared: &Arc<Shared>) {
    if shared.refreshing.swap(true, Ordering::AcqRel) {
        return;
    }
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        shared.refreshing.store(false, Ordering::Release);
        return;
    };
    runtime.spawn(refresh_until_done(Arc::downgrade(shared)));
}

/// Follows the Sentinels' failover announcements for `target.master`:
/// subscribes to `+switch-master` on one Sentinel after another (the next
/// one when a Sentinel cannot be reached, drops the connection or leaves a
/// `PING` unanswered for 2.5 s) and calls `on_switch` with the new
/// primary's `host:port` for each announced failover of this primary.
/// Runs until aborted; `connect_timeout` bounds each connection attempt.
pub(crate) async fn watch_switch_master(
    target: SentinelTarget,
    connect_timeout: Duration,
    on_switch: impl Fn(String) + Send + 'static,
) {
    let mut pause = FIRST_RETRY;
    for (host, port) in target.sentinels.iter().cycle() {
        match watch_one(&target, host, *port, connect_timeout, &on_switch).await {
            Ok(()) => pause = FIRST_RETRY,
            Err(e) => {
                tracing::debug!(sentinel = %format!("{host}:{port}"), error = %e, "no +switch-master subscription on this Sentinel");
            }
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(MAX_RETRY);
    }
}

/// One Sentinel's `+switch-master` subscription, until it fails: `Ok` when
/// it was up and then ended, `Err` when it could not be opened.
async fn watch_one(
    target: &SentinelTarget,
    host: &str,
    port: u16,
    connect_timeout: Duration,
    on_switch: &(impl Fn(String) + Send),
) -> redis::RedisResult<()> {
    let mut redis = redis::RedisConnectionInfo::default();
    if let Some(password) = &target.sentinel_password {
        redis = redis.set_password(password);
    }
    let info = target.tls.node_info(host, port, redis)?;
    let client = redis::Client::open(info)?;
    let pubsub = bounded(connect_timeout, "Sentinel subscription", async {
        let mut pubsub = client.get_async_pubsub().await?;
        pubsub.subscribe("+switch-master").await?;
        Ok(pubsub)
    })
    .await?;
    tracing::debug!(sentinel = %format!("{host}:{port}"), master = %target.master, "watching +switch-master");
    let (mut sink, mut stream) = pubsub.split();
    let mut heartbeat = tokio::time::interval(WATCH_HEARTBEAT);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    heartbeat.tick().await;
    loop {
        tokio::select! {
            message = stream.next() => {
                let Some(message) = message else {
                    return Ok(());
                };
                let payload: String = message.get_payload().unwrap_or_default();
                if let Some(primary) = switched_primary(&payload, &target.master) {
                    on_switch(primary);
                }
            }
            _ = heartbeat.tick() => {
                // In RESP2 subscribed mode the answer is `["pong", ""]`.
                let pong = bounded(WATCH_DEAD_AFTER, "PING", sink.ping::<Value>()).await;
                if let Err(e) = pong {
                    tracing::debug!(sentinel = %format!("{host}:{port}"), error = %e, "the Sentinel stopped answering");
                    return Ok(());
                }
            }
        }
    }
}

/// The new primary's `host:port` in a `+switch-master` payload
/// (`<name> <old-ip> <old-port> <new-ip> <new-port>`) about `master`.
fn switched_primary(payload: &str, master: &str) -> Option<String> {
    let fields: Vec<&str> = payload.split_whitespace().collect();
    match fields.as_slice() {
        [name, _, _, host, port] if *name == master => Some(format!("{host}:{port}")),
        _ => None,
    }
}

impl SentinelConnection {
    /// After a failed call: a lost connection, a timeout or a `READONLY`
    /// reply may mean the primary changed; look again in the background
    /// (once at a time).
    pub(crate) fn observe_failure(&self, kind: ErrorKind) {
        if !matches!(kind, ErrorKind::Connection | ErrorKind::Timeout) {
            return;
        }
        start_refresh(&self.shared);
    }

    /// `host:port` of the primary in use.
    pub(crate) fn primary_address(&self) -> Option<String> {
        let (_, addr) = self.shared.current();
        (!addr.is_empty()).then_some(addr)
    }

    fn connection(&self) -> redis::RedisResult<MultiplexedConnection> {
        self.shared.current().0.ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::NotConnected,
                format!("no connection to the primary `{}` yet", self.shared.master),
            )
            .into()
        })
    }
}

impl ConnectionLike for SentinelConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move { self.connection()?.req_packed_command(cmd).await })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            self.connection()?
                .req_packed_commands(pipeline, offset, count)
                .await
        })
    }

    fn get_db(&self) -> i64 {
        self.shared.db
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn switch_master_payloads() {
        assert_eq!(
            switched_primary("cachemaster 127.0.0.1 7001 127.0.0.1 7002", "cachemaster"),
            Some("127.0.0.1:7002".to_owned())
        );
        assert_eq!(
            switched_primary("other 127.0.0.1 7001 127.0.0.1 7002", "cachemaster"),
            None
        );
        assert_eq!(switched_primary("cachemaster 1 2", "cachemaster"), None);
    }
}
