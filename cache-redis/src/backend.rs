//! [`RedisBackend`]: the cache's contract on Redis: one server, a primary
//! found through Sentinel, or a Redis Cluster.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use cache_core::{
    check_key, check_namespace, check_value, glob_escape, CacheBackend, Capabilities, Health,
    HealthStatus, KeyTtl, Result, SetMode, SetOptions, MAX_KEY_LEN,
};
use redis::{Script, Value};

use crate::config::{RedisConfig, RedisMode};
use crate::core::{
    connect_standalone, info_field, set_command, ttl_millis, Conn, Core, SCAN_COUNT,
};

/// Adds `delta`; a key it creates gets the TTL in `ARGV[2]` (empty: none),
/// a key that existed keeps its TTL. One script, so one atomic step.
const INCR_SCRIPT: &str = r"
local existed = redis.call('EXISTS', KEYS[1])
redis.call('INCRBY', KEYS[1], ARGV[1])
-- As a string: INCRBY's integer would become a Lua number (a double) and
-- lose precision beyond 2^53.
local value = redis.call('GET', KEYS[1])
if existed == 0 and ARGV[2] ~= '' then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return value
";

/// Removes the TTL of an existing key; returns whether the key exists
/// (`PERSIST` alone answers 0 for a key that has no TTL).
const PERSIST_SCRIPT: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('PERSIST', KEYS[1])
  return 1
end
return 0
";

/// The cache backend on Redis (Redis 6 or later): one server, a primary
/// found through Sentinel (feature `sentinel`), or a Redis Cluster (feature
/// `cluster`); [`RedisConfig::mode`] says which, the URL's scheme picks it.
///
/// Values are stored as plain Redis strings, byte for byte, so other Redis
/// clients (`redis-cli GET`, a Python service) read them as written. TTLs
/// are sent as milliseconds (`PX`), `incr` is one Lua script, pattern
/// deletes use `SCAN` + `UNLINK` (never `KEYS`, never `FLUSHDB`).
///
/// On a cluster, single-key calls go to the node that owns the key's slot
/// (the client follows `MOVED`/`ASK` and topology changes); `get_many`,
/// `set_many` and `delete_many` group the keys by slot and send one
/// pipeline per node (one `MGET`/`UNLINK` per slot, one `SET` per key), the
/// nodes in parallel; `delete_matching` and `clear` `SCAN` every primary;
/// `health` asks every node. Keys that must live together (for a
/// multi-key operation of your own) share a hash tag: a prefix such as
/// `{tenant42}` puts all of a cache's keys in one slot.
///
/// With Sentinel, the backend asks the Sentinels for the primary and, when
/// a call fails on a lost connection, a timeout or a `READONLY` reply (the
/// primary was demoted), asks them again in the background and moves to the
/// new primary; calls fail with a retryable error in between.
///
/// Connections are `redis-rs` connection managers: after a connection is
/// lost (server restart, network blip) the next call fails with
/// [`Connection`](cache_core::ErrorKind::Connection) and a reconnect starts in the
/// background; later calls use the new connection, no rebuild needed. Every
/// call is bounded by the configured response timeout, so a hung server
/// yields [`Timeout`](cache_core::ErrorKind::Timeout) promptly.
///
/// Cloning is cheap and shares the connections.
///
/// # Examples
///
/// ```no_run
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> cache::Result<()> {
/// use cache::{CacheBackend, SetOptions};
/// use cache::redis::RedisBackend;
/// use std::time::Duration;
///
/// let redis = RedisBackend::from_url("redis://127.0.0.1:6379").await?;
/// let ttl = Some(Duration::from_secs(60));
/// redis.set("app:greeting:en", "hello".into(), SetOptions::ttl(ttl)).await?;
/// assert_eq!(redis.get("app:greeting:en").await?.as_deref(), Some(&b"hello"[..]));
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RedisBackend {
    inner: Arc<Inner>,
}

struct Inner {
    /// The connections and how one exchange is made.
    core: Core,
    mode: RedisMode,
    /// The slot map, on a cluster.
    #[cfg(feature = "cluster")]
    cluster: Option<crate::cluster::ClusterState>,
    incr: Script,
    persist: Script,
    /// The largest value sent ([`RedisConfig::max_value_size`]).
    max_value_size: usize,
}

impl RedisBackend {
    /// Connects to the deployment described by `config`: one server, a
    /// Sentinel-managed primary or a cluster (see [`RedisConfig::mode`]).
    ///
    /// Opens `config.connections` connections and checks each with the
    /// handshake (authentication, database selection), all within the
    /// connect timeout.
    ///
    /// # Errors
    ///
    /// [`Config`](cache_core::ErrorKind::Config) for an invalid configuration (or a
    /// cluster or Sentinel URL without the crate feature);
    /// [`Connection`](cache_core::ErrorKind::Connection) when the server cannot be
    /// reached, refuses the credentials, or does not answer within the
    /// connect timeout.
    pub async fn connect(config: RedisConfig) -> Result<Self> {
        config.validate()?;
        match config.mode() {
            #[cfg(feature = "cluster")]
            RedisMode::Cluster => {
                let (connections, state) = crate::cluster::connect(&config).await?;
                let connections = connections.into_iter().map(Conn::Cluster).collect();
                Ok(Self::with_connections(
                    &config,
                    connections,
                    RedisMode::Cluster,
                    Some(state),
                ))
            }
            #[cfg(feature = "sentinel")]
            RedisMode::Sentinel => {
                let connections = crate::sentinel::connect(&config).await?;
                let connections = connections.into_iter().map(Conn::Sentinel).collect();
                Ok(Self::with_connections(
                    &config,
                    connections,
                    RedisMode::Sentinel,
                    None,
                ))
            }
            _ => {
                let connections = connect_standalone(&config).await?;
                let connections = connections.into_iter().map(Conn::Manager).collect();
                Ok(Self::with_connections(
                    &config,
                    connections,
                    RedisMode::Standalone,
                    None,
                ))
            }
        }
    }

    fn with_connections(
        config: &RedisConfig,
        connections: Vec<Conn>,
        mode: RedisMode,
        #[cfg(feature = "cluster")] cluster: Option<crate::cluster::ClusterState>,
        #[cfg(not(feature = "cluster"))] _cluster: Option<std::convert::Infallible>,
    ) -> Self {
        let target = config.target();
        tracing::debug!(%target, ?mode, connections = connections.len(), "connected to Redis");
        RedisBackend {
            inner: Arc::new(Inner {
                core: Core::new(connections, config.response_timeout(), target),
                mode,
                #[cfg(feature = "cluster")]
                cluster,
                incr: Script::new(INCR_SCRIPT),
                persist: Script::new(PERSIST_SCRIPT),
                max_value_size: config.max_value_size(),
            }),
        }
    }

    /// Connects to the deployment at `url` with default settings otherwise
    /// (see [`RedisConfig`] for the URL forms).
    ///
    /// # Errors
    ///
    /// As [`RedisConfig::from_url`] and [`RedisBackend::connect`].
    pub async fn from_url(url: &str) -> Result<Self> {
        Self::connect(RedisConfig::from_url(url)?).await
    }

    /// The kind of deployment this backend talks to.
    pub fn mode(&self) -> RedisMode {
        self.inner.mode
    }

    /// The connections and how one exchange with the server is made.
    pub(crate) fn core(&self) -> &Core {
        &self.inner.core
    }

    /// The cluster's slot map, when this backend talks to a cluster.
    #[cfg(feature = "cluster")]
    fn cluster(&self) -> Option<&crate::cluster::ClusterState> {
        self.inner.cluster.as_ref()
    }

    pub(crate) fn check_key(key: &str, op: &'static str) -> Result<()> {
        check_key(key, MAX_KEY_LEN).map_err(|e| e.context("redis", op))
    }

    fn check_value(&self, value: &[u8], op: &'static str) -> Result<()> {
        check_value(value, self.inner.max_value_size).map_err(|e| e.context("redis", op))
    }

    /// A pattern is not empty and at most `2 * MAX_KEY_LEN + 1` bytes (a
    /// key with every byte escaped, and a `*`).
    fn check_pattern(pattern: &str, op: &'static str) -> Result<()> {
        cache_core::check_pattern(pattern, MAX_KEY_LEN).map_err(|e| e.context("redis", op))
    }

    /// `UNLINK keys…`; how many existed. On a cluster: one `UNLINK` per
    /// slot, one pipeline per node.
    async fn unlink<K: redis::ToRedisArgs + AsRef<[u8]> + Sync>(
        &self,
        op: &'static str,
        keys: &[K],
    ) -> Result<u64> {
        if keys.is_empty() {
            return Ok(0);
        }
        #[cfg(feature = "cluster")]
        if let Some(cluster) = self.cluster() {
            if keys.len() > 1 {
                return cluster.unlink(self.core(), op, keys).await;
            }
        }
        self.core().query(op, redis::cmd("UNLINK").arg(keys)).await
    }

    /// One `SCAN cursor MATCH pattern COUNT …` round trip: the next cursor
    /// (0 when done) and a batch of keys, possibly empty.
    async fn scan_page(
        &self,
        op: &'static str,
        pattern: &str,
        cursor: u64,
    ) -> Result<(u64, Vec<Vec<u8>>)> {
        self.core()
            .query(
                op,
                redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(pattern)
                    .arg("COUNT")
                    .arg(SCAN_COUNT),
            )
            .await
    }

    /// `SCAN MATCH pattern` in batches, `UNLINK` each batch; how many keys
    /// were removed. On a cluster: on every primary.
    async fn unlink_matching(&self, op: &'static str, pattern: &str) -> Result<u64> {
        #[cfg(feature = "cluster")]
        if let Some(cluster) = self.cluster() {
            return cluster.unlink_matching(self.core(), op, pattern).await;
        }
        let mut removed = 0;
        let mut cursor = 0;
        loop {
            let (next, keys) = self.scan_page(op, pattern, cursor).await?;
            // A key SCAN repeats is already gone and not counted twice.
            removed += self.unlink(op, &keys).await?;
            if next == 0 {
                return Ok(removed);
            }
            cursor = next;
        }
    }
}

#[async_trait]
impl CacheBackend for RedisBackend {
    fn name(&self) -> &'static str {
        "redis"
    }

    fn capabilities(&self) -> Capabilities {
        capabilities(self.inner.max_value_size)
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        Self::check_key(key, "get")?;
        let value: Option<Vec<u8>> = self.core().query("get", redis::cmd("GET").arg(key)).await?;
        Ok(value.map(Bytes::from))
    }

    async fn set(&self, key: &str, value: Bytes, opts: SetOptions) -> Result<bool> {
        Self::check_key(key, "set")?;
        self.check_value(&value, "set")?;
        if opts.ttl == Some(Duration::ZERO) {
            // Do not store; `Always` also removes what is there.
            if opts.mode == SetMode::Always {
                self.unlink("set", &[key]).await?;
            }
            return Ok(false);
        }
        let mut cmd = set_command(key, &value, opts.ttl);
        if opts.mode == SetMode::IfAbsent {
            cmd.arg("NX");
        }
        let reply: Value = self.core().query("set", &cmd).await?;
        Ok(!matches!(reply, Value::Nil))
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        Self::check_key(key, "delete")?;
        Ok(self.unlink("delete", &[key]).await? > 0)
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        Self::check_key(key, "exists")?;
        let n: u64 = self
            .core()
            .query("exists", redis::cmd("EXISTS").arg(key))
            .await?;
        Ok(n > 0)
    }

    async fn ttl(&self, key: &str) -> Result<KeyTtl> {
        Self::check_key(key, "ttl")?;
        let ms: i64 = self
            .core()
            .query("ttl", redis::cmd("PTTL").arg(key))
            .await?;
        Ok(match ms {
            -2 => KeyTtl::Missing,
            -1 => KeyTtl::Persistent,
            ms => KeyTtl::Expires(Duration::from_millis(u64::try_from(ms).unwrap_or(0))),
        })
    }

    async fn expire(&self, key: &str, ttl: Option<Duration>) -> Result<bool> {
        Self::check_key(key, "expire")?;
        match ttl {
            Some(Duration::ZERO) => Ok(self.unlink("expire", &[key]).await? > 0),
            Some(ttl) => {
                let n: u64 = self
                    .core()
                    .query(
                        "expire",
                        redis::cmd("PEXPIRE").arg(key).arg(ttl_millis(ttl)),
                    )
                    .await?;
                Ok(n > 0)
            }
            None => {
                let n: u64 = self
                    .core()
                    .invoke("expire", &self.inner.persist.key(key))
                    .await?;
                Ok(n > 0)
            }
        }
    }

    async fn incr(&self, key: &str, delta: i64, ttl: Option<Duration>) -> Result<i64> {
        Self::check_key(key, "incr")?;
        let ttl_arg = match ttl {
            None => String::new(),
            Some(Duration::ZERO) => "0".to_owned(),
            Some(ttl) => ttl_millis(ttl).to_string(),
        };
        self.core()
            .invoke("incr", self.inner.incr.key(key).arg(delta).arg(ttl_arg))
            .await
    }

    async fn health(&self) -> Result<Health> {
        let started = Instant::now();
        if self.core().is_closed() {
            return Ok(
                Health::new(HealthStatus::Unhealthy, started.elapsed()).with_detail("closed", true)
            );
        }
        #[cfg(feature = "cluster")]
        if let Some(cluster) = self.cluster() {
            return cluster.health(self.core(), self.core().target()).await;
        }
        let _: String = self.core().query("health", &redis::cmd("PING")).await?;
        let latency = started.elapsed();
        let info: String = self.core().query("health", &redis::cmd("INFO")).await?;
        let mut health = Health::new(HealthStatus::Healthy, latency)
            .with_detail("target", self.core().target())
            .with_detail("mode", mode_name(self.inner.mode));
        if let Some(primary) = self.core().connection("health")?.primary_address() {
            health = health.with_detail("primary", primary);
        }
        for name in [
            "redis_version",
            "used_memory",
            "maxmemory",
            "connected_clients",
            "keyspace_hits",
            "keyspace_misses",
            "evicted_keys",
        ] {
            if let Some(value) = info_field(&info, name) {
                health = health.with_detail(name, value);
            }
        }
        let number = |name| info_field(&info, name).and_then(|v| v.parse::<u64>().ok());
        let near_limit = match (number("used_memory"), number("maxmemory")) {
            (Some(used), Some(max)) if max > 0 => used.saturating_mul(10) >= max.saturating_mul(9),
            _ => false,
        };
        if near_limit || info_field(&info, "loading") == Some("1") {
            health.status = HealthStatus::Degraded;
        }
        Ok(health)
    }

    async fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Bytes>>> {
        for key in keys {
            Self::check_key(key, "get_many")?;
        }
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        #[cfg(feature = "cluster")]
        if let Some(cluster) = self.cluster() {
            return cluster.get_many(self.core(), keys).await;
        }
        let values: Vec<Option<Vec<u8>>> = self
            .core()
            .query("get_many", redis::cmd("MGET").arg(keys))
            .await?;
        Ok(values.into_iter().map(|v| v.map(Bytes::from)).collect())
    }

    async fn set_many(&self, items: &[(&str, Bytes)], ttl: Option<Duration>) -> Result<()> {
        for (key, value) in items {
            Self::check_key(key, "set_many")?;
            self.check_value(value, "set_many")?;
        }
        if items.is_empty() {
            return Ok(());
        }
        if ttl == Some(Duration::ZERO) {
            let keys: Vec<&str> = items.iter().map(|(k, _)| *k).collect();
            self.unlink("set_many", &keys).await?;
            return Ok(());
        }
        #[cfg(feature = "cluster")]
        if let Some(cluster) = self.cluster() {
            return cluster.set_many(self.core(), items, ttl).await;
        }
        let mut pipeline = redis::pipe();
        for (key, value) in items {
            pipeline.add_command(set_command(key, value, ttl)).ignore();
        }
        self.core().query_pipeline("set_many", &pipeline).await
    }

    async fn delete_many(&self, keys: &[&str]) -> Result<u64> {
        for key in keys {
            Self::check_key(key, "delete_many")?;
        }
        self.unlink("delete_many", keys).await
    }

    async fn scan(&self, pattern: &str) -> Result<Vec<String>> {
        Self::check_pattern(pattern, "scan")?;
        #[cfg(feature = "cluster")]
        if let Some(cluster) = self.cluster() {
            return cluster.scan(self.core(), pattern).await;
        }
        let mut found = Vec::new();
        let mut cursor = 0;
        loop {
            let (next, keys) = self.scan_page("scan", pattern, cursor).await?;
            // Keys that are not UTF-8 were not written through this trait
            // (its keys are `&str`); leave them out.
            found.extend(keys.into_iter().filter_map(|k| String::from_utf8(k).ok()));
            if next == 0 {
                break;
            }
            cursor = next;
        }
        // SCAN may return a key more than once.
        found.sort_unstable();
        found.dedup();
        Ok(found)
    }

    async fn delete_matching(&self, pattern: &str) -> Result<u64> {
        Self::check_pattern(pattern, "delete_matching")?;
        self.unlink_matching("delete_matching", pattern).await
    }

    async fn clear(&self, namespace: &str) -> Result<u64> {
        check_namespace(namespace).map_err(|e| e.context("redis", "clear"))?;
        self.unlink_matching("clear", &format!("{}*", glob_escape(namespace)))
            .await
    }

    async fn close(&self) -> Result<()> {
        // Dropping the managers closes the connections once calls in flight
        // (which hold clones) finish.
        self.core().close();
        Ok(())
    }
}

impl fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBackend")
            .field("target", &self.core().target())
            .field("mode", &self.inner.mode)
            .field("connections", &self.core().connection_count())
            .field("response_timeout", &self.core().response_timeout())
            .finish()
    }
}

/// How a [`RedisMode`] is named in health details.
pub(crate) fn mode_name(mode: RedisMode) -> &'static str {
    match mode {
        RedisMode::Cluster => "cluster",
        RedisMode::Sentinel => "sentinel",
        _ => "standalone",
    }
}

/// What a Redis backend with this value limit can do (known before it
/// connects: see [`RedisConfig::capabilities`]).
pub(crate) fn capabilities(max_value_size: usize) -> Capabilities {
    let mut caps = Capabilities::default();
    caps.max_key_len = MAX_KEY_LEN;
    caps.max_value_size = max_value_size;
    caps.sub_second_ttl = true;
    caps.atomic_incr = true;
    caps.pattern_delete = true;
    caps.shared = true;
    // Redis evicts live keys under `maxmemory` with an eviction policy.
    caps.evicts = true;
    caps
}
