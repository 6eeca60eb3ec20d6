//! The connection plumbing every deployment shares (OpenDAL's `core.rs`
//! role): [`Conn`], one connection whatever the deployment; [`Core`], the
//! round-robin set of connections with every exchange bounded by the
//! response timeout and its errors mapped; opening one server's connections;
//! and the command helpers (`SET … PX`, the `SCAN` page size, `INFO` fields).
//!
//! `backend`, `cluster` and `sentinel` build on this module; it depends on
//! none of them but for the Sentinel connection type `Conn` wraps.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use cache_core::{Error, ErrorKind, Result};
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::{Cmd, FromRedisValue, Pipeline, RedisFuture, RedisResult, ScriptInvocation, Value};

use crate::config::RedisConfig;
use crate::deadline::{Deadlines, MIN_LIMIT};
use crate::error::{connect_error, map_error};

/// Keys asked for per `SCAN` round trip.
pub(crate) const SCAN_COUNT: usize = 1000;

/// The longest TTL sent to Redis, in ms (about 146 million years). Redis
/// rejects an expiry that overflows when added to the current time.
const MAX_TTL_MS: u64 = 1 << 62;

/// The connections of a backend and how one exchange with the server is
/// made: on the next connection, round-robin, bounded by the response
/// timeout, the client's error mapped.
pub(crate) struct Core {
    /// The connections, round-robin; empty after `close`.
    connections: RwLock<Vec<Conn>>,
    next: AtomicUsize,
    /// How long one answer may take.
    response_timeout: Duration,
    /// Bounds every exchange by the response timeout, without a timer per
    /// exchange; `None` for a timeout under [`MIN_LIMIT`] (a timer each).
    deadlines: Option<Arc<Deadlines>>,
    /// Where the server is, without credentials.
    target: String,
}

impl Core {
    /// A core over `connections` to `target`.
    pub(crate) fn new(connections: Vec<Conn>, response_timeout: Duration, target: String) -> Self {
        Core {
            connections: RwLock::new(connections),
            next: AtomicUsize::new(0),
            response_timeout,
            deadlines: (response_timeout >= MIN_LIMIT).then(|| Deadlines::new(response_timeout)),
            target,
        }
    }

    /// Where the server is, without credentials.
    pub(crate) fn target(&self) -> &str {
        &self.target
    }

    /// How long one answer may take.
    pub(crate) fn response_timeout(&self) -> Duration {
        self.response_timeout
    }

    /// How many connections are open (0 after `close`).
    pub(crate) fn connection_count(&self) -> usize {
        self.connections.read().map(|c| c.len()).unwrap_or_default()
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.connections
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .is_empty()
    }

    /// Drops the connections; they close once calls in flight (which hold
    /// clones) finish.
    pub(crate) fn close(&self) {
        self.connections
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clear();
    }

    /// The next connection, round-robin.
    pub(crate) fn connection(&self, op: &'static str) -> Result<Conn> {
        let connections = self
            .connections
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if connections.is_empty() {
            return Err(Error::new(ErrorKind::Closed, "the Redis backend is closed")
                .with_backend("redis")
                .with_operation(op));
        }
        // One connection (the default): no shared counter to bump, which
        // every call on every thread would contend for.
        let i = match connections.len() {
            1 => 0,
            n => self.next.fetch_add(1, Relaxed) % n,
        };
        Ok(connections[i].clone())
    }

    /// Awaits one exchange with the server, bounded by the response timeout.
    pub(crate) async fn bounded<T: Send>(
        &self,
        op: &'static str,
        exchange: impl Future<Output = RedisResult<T>> + Send,
    ) -> Result<T> {
        self.bounded_by(self.response_timeout(), op, exchange).await
    }

    /// Awaits one exchange with the server, bounded by `limit`.
    pub(crate) async fn bounded_by<T: Send>(
        &self,
        limit: Duration,
        op: &'static str,
        exchange: impl Future<Output = RedisResult<T>> + Send,
    ) -> Result<T> {
        let answer = match &self.deadlines {
            Some(deadlines) if deadlines.limit() == limit => deadlines.bound(exchange).await,
            _ => tokio::time::timeout(limit, exchange).await.ok(),
        };
        match answer {
            Some(Ok(value)) => Ok(value),
            Some(Err(e)) => Err(map_error(e, op)),
            None => Err(Error::new(
                ErrorKind::Timeout,
                format!(
                    "no answer from {} within {} ms",
                    self.target,
                    limit.as_millis()
                ),
            )
            .with_backend("redis")
            .with_operation(op)),
        }
    }

    /// One command on the next connection.
    pub(crate) async fn query<T: FromRedisValue + Send>(
        &self,
        op: &'static str,
        cmd: &Cmd,
    ) -> Result<T> {
        let mut conn = self.connection(op)?;
        let result = self.bounded(op, cmd.query_async(&mut conn)).await;
        conn.observe(&result);
        result
    }

    /// One pipeline on the next connection.
    pub(crate) async fn query_pipeline<T: FromRedisValue + Send>(
        &self,
        op: &'static str,
        pipeline: &Pipeline,
    ) -> Result<T> {
        let mut conn = self.connection(op)?;
        let result = self.bounded(op, pipeline.query_async(&mut conn)).await;
        conn.observe(&result);
        result
    }

    /// One script call on the next connection.
    pub(crate) async fn invoke<T: FromRedisValue + Send>(
        &self,
        op: &'static str,
        script: &ScriptInvocation<'_>,
    ) -> Result<T> {
        let mut conn = self.connection(op)?;
        let result = self.bounded(op, script.invoke_async(&mut conn)).await;
        conn.observe(&result);
        result
    }
}

/// Opens `config.pool_size()` connections to one server, each checked with
/// a `PING`, within the connect timeout.
pub(crate) async fn connect_standalone(config: &RedisConfig) -> Result<Vec<ConnectionManager>> {
    let info = config.connection_info()?;
    let target = config.target();
    let client = redis::Client::open(info).map_err(|e| connect_error(e, &target))?;
    let manager_config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(config.connect_timeout()))
        // No timer of its own: `Core::bounded` already bounds every call
        // (the wait for a reconnect included) by the response timeout, and
        // a second timer per call costs ~900 instructions per GET. A
        // reconnect's handshake stays bounded: redis-rs applies the
        // connection timeout to the connect and the handshake together
        // (`get_multiplexed_async_connection_inner_with_timeout`).
        .set_response_timeout(None)
        // One attempt per reconnect: while the server is down, calls
        // fail fast with `Connection` (and each failed call starts the
        // next attempt) rather than queueing behind a backoff.
        .set_number_of_retries(0);
    let open_all = async {
        let mut connections = Vec::with_capacity(config.pool_size());
        for _ in 0..config.pool_size() {
            let mut connection =
                ConnectionManager::new_with_config(client.clone(), manager_config.clone()).await?;
            // The handshake does not authenticate without credentials;
            // one round trip shows NOAUTH (or any refusal) now, not on
            // the first real call.
            redis::cmd("PING")
                .query_async::<Value>(&mut connection)
                .await?;
            connections.push(connection);
        }
        RedisResult::Ok(connections)
    };
    within_connect_timeout(config, &target, open_all).await
}

/// A TTL as Redis milliseconds: at least 1 for any positive duration.
/// Runs `connect` (opening connections to `target`) within the
/// configuration's connect timeout; its error or the timeout is a
/// `Connection` error naming the target.
pub(crate) async fn within_connect_timeout<T>(
    config: &RedisConfig,
    target: &str,
    connect: impl Future<Output = RedisResult<T>>,
) -> Result<T> {
    match tokio::time::timeout(config.connect_timeout(), connect).await {
        Ok(Ok(opened)) => Ok(opened),
        Ok(Err(e)) => Err(connect_error(e, target)),
        Err(_) => Err(Error::new(
            ErrorKind::Connection,
            format!(
                "cannot connect to {target}: no connection within {} ms",
                config.connect_timeout().as_millis()
            ),
        )
        .with_backend("redis")
        .with_operation("connect")),
    }
}

pub(crate) fn ttl_millis(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_nanos().div_ceil(1_000_000))
        .unwrap_or(u64::MAX)
        .clamp(1, MAX_TTL_MS)
}

/// `SET key value [PX ttl]`.
pub(crate) fn set_command(key: &str, value: &[u8], ttl: Option<Duration>) -> Cmd {
    let mut cmd = redis::cmd("SET");
    cmd.arg(key).arg(value);
    if let Some(ttl) = ttl {
        cmd.arg("PX").arg(ttl_millis(ttl));
    }
    cmd
}

/// Facts from `INFO` text, by field name.
pub(crate) fn info_field<'a>(info: &'a str, name: &str) -> Option<&'a str> {
    info.lines().find_map(|line| {
        let (field, value) = line.split_once(':')?;
        (field == name).then(|| value.trim())
    })
}

/// One connection of the backend, whatever the deployment.
#[derive(Clone)]
pub(crate) enum Conn {
    /// One server, reconnecting by itself.
    Manager(ConnectionManager),
    /// The primary named by Sentinel, followed across failovers.
    #[cfg(feature = "sentinel")]
    Sentinel(crate::sentinel::SentinelConnection),
    /// A cluster: one connection per node, routing by slot.
    #[cfg(feature = "cluster")]
    Cluster(redis::cluster_async::ClusterConnection),
}

impl Conn {
    /// Tells the connection how a call went, so that it can look for a new
    /// primary after a failure (Sentinel).
    fn observe<T>(&self, result: &Result<T>) {
        #[cfg(feature = "sentinel")]
        if let (Conn::Sentinel(conn), Err(e)) = (self, result) {
            conn.observe_failure(e.kind());
        }
        let _ = result;
    }

    /// The address of the primary in use (Sentinel).
    pub(crate) fn primary_address(&self) -> Option<String> {
        match self {
            #[cfg(feature = "sentinel")]
            Conn::Sentinel(conn) => conn.primary_address(),
            _ => None,
        }
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Manager(conn) => conn.req_packed_command(cmd),
            #[cfg(feature = "sentinel")]
            Conn::Sentinel(conn) => conn.req_packed_command(cmd),
            #[cfg(feature = "cluster")]
            Conn::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Manager(conn) => conn.req_packed_commands(pipeline, offset, count),
            #[cfg(feature = "sentinel")]
            Conn::Sentinel(conn) => conn.req_packed_commands(pipeline, offset, count),
            #[cfg(feature = "cluster")]
            Conn::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Manager(conn) => conn.get_db(),
            #[cfg(feature = "sentinel")]
            Conn::Sentinel(conn) => conn.get_db(),
            #[cfg(feature = "cluster")]
            Conn::Cluster(conn) => conn.get_db(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_millis_rounds_up_and_caps() {
        assert_eq!(ttl_millis(Duration::from_nanos(1)), 1);
        assert_eq!(ttl_millis(Duration::from_micros(1500)), 2);
        assert_eq!(ttl_millis(Duration::from_millis(300)), 300);
        assert_eq!(ttl_millis(Duration::MAX), MAX_TTL_MS);
    }

    #[test]
    fn a_response_timeout_under_the_minimum_keeps_a_timer_per_exchange() {
        let core = |ms| Core::new(Vec::new(), Duration::from_millis(ms), "t".into());
        let short = core(99);
        assert!(short.deadlines.is_none());
        assert_eq!(short.response_timeout(), Duration::from_millis(99));
        let long = core(100);
        let deadlines = long.deadlines.as_ref().expect("shared deadlines");
        assert_eq!(deadlines.limit(), Duration::from_millis(100));
        assert_eq!(long.response_timeout(), Duration::from_millis(100));
    }

    #[test]
    fn info_fields() {
        let info = "# Server\r\nredis_version:7.0.15\r\nused_memory:1024\r\n";
        assert_eq!(info_field(info, "redis_version"), Some("7.0.15"));
        assert_eq!(info_field(info, "used_memory"), Some("1024"));
        assert_eq!(info_field(info, "maxmemory"), None);
    }
}
