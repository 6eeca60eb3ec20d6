//! `CacheConfig`: the whole cache described as data, and `open`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use cache_core::layers::{
    BreakerConfig, FailOpen, FailOpenHandle, Metered, Tiered, TieredConfig, Timeout,
};
use cache_core::{
    AnyCodec, Backplane, Cache, CacheBackend, CategoryTtl, Error, ErrorKind, FailSafe, Result,
    DEFAULT_PREFIX,
};
use serde::{Deserialize, Serialize};

/// Everything needed to build a [`Cache`]: which backend (a URL), the key
/// prefix, TTLs and the codec.
///
/// Deserialize it from your own configuration (it is serde), read it from
/// the environment with [`CacheConfig::from_env`], or from a JSON string
/// with [`CacheConfig::from_json`].
///
/// URLs:
///
/// | URL | backend | feature |
/// |---|---|---|
/// | `memory://` | in-process, unbounded | `memory` (default) |
/// | `memory://?max_entries=10000&max_bytes=67108864&sweep_interval_ms=1000&max_value_size=1048576` | in-process, bounded | `memory` |
/// | `redis://[user:password@]host[:port][/db]` | Redis | `redis` |
/// | `rediss://…` | Redis over TLS | `tls` |
/// | `redis+cluster://host1:port1,host2:port2` | Redis Cluster | `cluster` |
/// | `redis+sentinel://s1:26379,s2:26379/master-name` | Redis behind Sentinel | `sentinel` |
///
/// The rest of the stack is optional: a memory L1 (`l1`), a deadline
/// (`timeout_ms`), fail-open with a breaker (`fail_open`), L1 invalidation
/// across instances (`backplane`), fail-safe and refresh-ahead, metrics:
///
/// ```json
/// {
///   "url": "redis://cache.internal:6379/0",
///   "prefix": "shop",
///   "default_ttl_secs": 300,
///   "l1": { "max_entries": 50000, "max_ttl_secs": 30 },
///   "timeout_ms": 250,
///   "fail_open": { "failure_threshold": 5, "cool_down_ms": 5000 },
///   "backplane": {},
///   "fail_safe": { "max_stale_secs": 3600, "soft_timeout_ms": 200 },
///   "metrics": true
/// }
/// ```
///
/// # Examples
///
/// ```
/// use cache::CacheConfig;
///
/// let config = CacheConfig::from_json(r#"{
///     "url": "memory://?max_entries=10000",
///     "prefix": "shop",
///     "default_ttl_secs": 60,
///     "ttls": { "rates": 300, "report": 900 }
/// }"#)?;
/// assert_eq!(config.ttls["rates"], 300);
/// # Ok::<(), cache::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct CacheConfig {
    /// Which backend, and its options (see the table above).
    pub url: String,
    /// The key prefix, e.g. the service name.
    pub prefix: String,
    /// TTL in seconds of values written without one; `None`: never expire.
    /// Zero or negative: such values are not stored.
    pub default_ttl_secs: Option<i64>,
    /// TTL in seconds per category, overriding the default (zero or
    /// negative: that category is not stored).
    pub ttls: BTreeMap<String, i64>,
    /// Spread TTLs by ± this fraction (0.0 to 0.5) so keys written together
    /// do not expire together.
    pub ttl_jitter: f64,
    /// `json` (default; interoperable) or `msgpack` (feature `msgpack`).
    pub codec: String,
    /// How long a category generation is trusted before it is read again,
    /// in milliseconds (see `Cache::invalidate_category`): the bound on how
    /// long a category invalidation takes to reach the other instances.
    /// Default: 1000 without a backplane (generations are then read from
    /// the shared backend, never from an L1 copy, so other instances see a
    /// bump within 1 s); 0 with a backplane (the generation is read from
    /// the L1, where the backplane invalidates it: other instances see a
    /// bump as soon as the backplane's message arrives, milliseconds).
    pub generation_refresh_ms: Option<u64>,
    /// A memory L1 in front of the backend (`Tiered`).
    pub l1: Option<L1Config>,
    /// A deadline on every backend call, in milliseconds (`Timeout`).
    pub timeout_ms: Option<u64>,
    /// The deadline of pattern deletes and clears under `timeout_ms`, whose
    /// work grows with the keyspace, in milliseconds. Default: 300000 (5
    /// minutes).
    pub bulk_timeout_ms: Option<u64>,
    /// Fail-open with a circuit breaker around the backend (`FailOpen`).
    pub fail_open: Option<FailOpenConfig>,
    /// Invalidate other instances' L1 copies over Redis pub/sub (needs
    /// `l1` and a Redis URL).
    pub backplane: Option<BackplaneConfig>,
    /// Serve stale values when loaders fail or are slow.
    pub fail_safe: Option<FailSafeConfig>,
    /// Reload values in the background in the last fraction of their TTL
    /// (e.g. 0.2).
    pub refresh_ahead: Option<f64>,
    /// Count and time backend calls (`Metered`; exported with the `metrics`
    /// feature).
    pub metrics: bool,
}

/// The L1 of a two-level cache.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct L1Config {
    /// At most this many entries in L1.
    pub max_entries: Option<usize>,
    /// At most this many bytes of keys and values in L1.
    pub max_bytes: Option<usize>,
    /// The longest an L1 copy lives, in seconds.
    pub max_ttl_secs: u64,
}

impl Default for L1Config {
    fn default() -> Self {
        L1Config {
            max_entries: Some(10_000),
            max_bytes: None,
            max_ttl_secs: 60,
        }
    }
}

/// The circuit breaker of fail-open.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct FailOpenConfig {
    /// Consecutive failures that open the breaker.
    pub failure_threshold: u32,
    /// How long it stays open, in milliseconds.
    pub cool_down_ms: u64,
}

impl Default for FailOpenConfig {
    fn default() -> Self {
        FailOpenConfig {
            failure_threshold: 5,
            cool_down_ms: 5000,
        }
    }
}

/// The backplane.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct BackplaneConfig {
    /// The Redis URL of the pub/sub server; default: the cache's URL.
    pub url: Option<String>,
    /// The channel; default `{prefix}:invalidations`.
    pub channel: Option<String>,
}

/// Fail-safe settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct FailSafeConfig {
    /// How long past its TTL a value is kept to be served stale, seconds.
    pub max_stale_secs: u64,
    /// Serve the stale value when the loader takes longer, milliseconds.
    pub soft_timeout_ms: Option<u64>,
}

impl Default for FailSafeConfig {
    fn default() -> Self {
        FailSafeConfig {
            max_stale_secs: 3600,
            soft_timeout_ms: None,
        }
    }
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            url: "memory://".to_owned(),
            prefix: DEFAULT_PREFIX.to_owned(),
            default_ttl_secs: None,
            ttls: BTreeMap::new(),
            ttl_jitter: 0.0,
            codec: "json".to_owned(),
            generation_refresh_ms: None,
            l1: None,
            timeout_ms: None,
            bulk_timeout_ms: None,
            fail_open: None,
            backplane: None,
            fail_safe: None,
            refresh_ahead: None,
            metrics: false,
        }
    }
}

impl CacheConfig {
    /// The configuration for `url` with every other setting at its default.
    pub fn from_url(url: impl Into<String>) -> Self {
        CacheConfig {
            url: url.into(),
            ..CacheConfig::default()
        }
    }

    /// Reads the configuration from the environment, defaults for what is
    /// not set:
    ///
    /// | variable | meaning | example |
    /// |---|---|---|
    /// | `CACHE_URL` | backend URL | `redis://127.0.0.1:6379/0` |
    /// | `CACHE_PREFIX` | key prefix | `shop` |
    /// | `CACHE_DEFAULT_TTL` | default TTL, seconds | `60` |
    /// | `CACHE_TTLS` | per-category TTLs, seconds | `rates=300,report=900` |
    /// | `CACHE_TTL_JITTER` | TTL jitter fraction | `0.1` |
    /// | `CACHE_CODEC` | `json` or `msgpack` | `json` |
    /// | `CACHE_L1_MAX_ENTRIES` | a memory L1 of this size | `10000` |
    /// | `CACHE_TIMEOUT_MS` | per-call deadline | `250` |
    /// | `CACHE_BULK_TIMEOUT_MS` | deadline of pattern deletes and clears | `60000` |
    /// | `CACHE_FAIL_OPEN` | fail-open with a breaker | `true` |
    /// | `CACHE_BACKPLANE` | L1 invalidation over Redis pub/sub | `true` |
    /// | `CACHE_FAIL_SAFE_SECS` | serve stale values up to this long | `3600` |
    /// | `CACHE_METRICS` | count and time backend calls | `true` |
    ///
    /// # Errors
    ///
    /// [`Config`](ErrorKind::Config) naming the variable that does not parse.
    pub fn from_env() -> Result<Self> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// As [`from_env`](CacheConfig::from_env), reading variables through
    /// `lookup` (for tests, or another source of settings).
    ///
    /// # Errors
    ///
    /// As [`from_env`](CacheConfig::from_env).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let mut config = CacheConfig::default();
        if let Some(url) = lookup("CACHE_URL") {
            config.url = url;
        }
        if let Some(prefix) = lookup("CACHE_PREFIX") {
            config.prefix = prefix;
        }
        if let Some(ttl) = lookup("CACHE_DEFAULT_TTL") {
            config.default_ttl_secs = Some(parse_var("CACHE_DEFAULT_TTL", &ttl)?);
        }
        if let Some(ttls) = lookup("CACHE_TTLS") {
            for pair in ttls.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                let (category, secs) = pair.split_once('=').ok_or_else(|| {
                    config_error(format!("CACHE_TTLS: {pair:?} is not category=seconds"))
                })?;
                config.ttls.insert(
                    category.trim().to_owned(),
                    parse_var("CACHE_TTLS", secs.trim())?,
                );
            }
        }
        if let Some(jitter) = lookup("CACHE_TTL_JITTER") {
            config.ttl_jitter = parse_var("CACHE_TTL_JITTER", &jitter)?;
        }
        if let Some(codec) = lookup("CACHE_CODEC") {
            config.codec = codec;
        }
        if let Some(n) = lookup("CACHE_L1_MAX_ENTRIES") {
            config.l1 = Some(L1Config {
                max_entries: Some(parse_var("CACHE_L1_MAX_ENTRIES", &n)?),
                ..L1Config::default()
            });
        }
        if let Some(ms) = lookup("CACHE_TIMEOUT_MS") {
            config.timeout_ms = Some(parse_var("CACHE_TIMEOUT_MS", &ms)?);
        }
        if let Some(ms) = lookup("CACHE_BULK_TIMEOUT_MS") {
            config.bulk_timeout_ms = Some(parse_var("CACHE_BULK_TIMEOUT_MS", &ms)?);
        }
        if let Some(on) = lookup("CACHE_FAIL_OPEN") {
            if parse_var::<bool>("CACHE_FAIL_OPEN", &on)? {
                config.fail_open = Some(FailOpenConfig::default());
            }
        }
        if let Some(on) = lookup("CACHE_BACKPLANE") {
            if parse_var::<bool>("CACHE_BACKPLANE", &on)? {
                config.backplane = Some(BackplaneConfig::default());
                config.l1.get_or_insert_with(L1Config::default);
            }
        }
        if let Some(secs) = lookup("CACHE_FAIL_SAFE_SECS") {
            config.fail_safe = Some(FailSafeConfig {
                max_stale_secs: parse_var("CACHE_FAIL_SAFE_SECS", &secs)?,
                soft_timeout_ms: None,
            });
        }
        if let Some(on) = lookup("CACHE_METRICS") {
            config.metrics = parse_var("CACHE_METRICS", &on)?;
        }
        Ok(config)
    }

    /// Parses the configuration from JSON.
    ///
    /// # Errors
    ///
    /// [`Config`](ErrorKind::Config) with the parser's message.
    pub fn from_json(json: &str) -> Result<Self> {
        serde_json::from_str(json)
            .map_err(|e| config_error("invalid cache configuration").with_source(e))
    }

    /// The TTL policy this configuration describes.
    pub fn ttl_policy(&self) -> CategoryTtl {
        let secs = |s: i64| Duration::from_secs(s.max(0).unsigned_abs());
        let mut policy =
            CategoryTtl::new(self.default_ttl_secs.map(secs)).with_jitter(self.ttl_jitter);
        for (category, ttl) in &self.ttls {
            policy = policy.with_category(category.clone(), Some(secs(*ttl)));
        }
        policy
    }

    /// The URL's scheme (`memory`, `redis`, …).
    fn scheme(&self) -> Result<&str> {
        self.url
            .split_once("://")
            .map(|(scheme, _)| scheme)
            .ok_or_else(|| {
                config_error(format!(
                    "cache URL {:?} has no scheme (e.g. memory://)",
                    redact(&self.url)
                ))
            })
    }
}

/// Builds the cache a configuration describes.
///
/// # Errors
///
/// [`Config`](ErrorKind::Config) for an unknown URL scheme, a backend that
/// is not compiled in (naming the feature to enable), or invalid settings;
/// [`Connection`](ErrorKind::Connection) when the backend cannot be reached.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> cache::Result<()> {
/// let cache = cache::open(&cache::CacheConfig::from_url("memory://?max_entries=1000")).await?;
/// cache.set(&cache::CacheKey::new("greeting", "en")?, "hello").await?;
///
/// let err = cache::open(&cache::CacheConfig::from_url("nosuch://x")).await.unwrap_err();
/// assert_eq!(err.kind(), cache::ErrorKind::Config);
/// # Ok(())
/// # }
/// ```
pub async fn open(config: &CacheConfig) -> Result<Cache> {
    // Boxed: the whole stack's connect futures nest deeply, and callers
    // that await `open` beside other work would hit rustc's query depth.
    let stack = Box::pin(build_stack(config)).await?;
    let refresh = config
        .generation_refresh_ms
        .unwrap_or(if config.backplane.is_some() { 0 } else { 1000 });
    let mut builder = Cache::builder(stack.top).plain_backend(stack.plain);
    if config.backplane.is_none() {
        // No backplane to invalidate an L1 copy of a generation: read
        // generations from the shared tier (within `refresh`), never from
        // an L1 copy that could live `l1.max_ttl_secs`.
        builder = builder.generation_backend(stack.shared);
    }
    if let Some(handle) = stack.fail_open {
        builder = builder.fail_open_stats(handle);
    }
    let mut builder = builder
        .prefix(config.prefix.clone())
        .codec(AnyCodec::from_name(&config.codec)?)
        .ttl_policy(config.ttl_policy())
        .generation_refresh(Duration::from_millis(refresh));
    if let Some(fs) = &config.fail_safe {
        let mut fail_safe = FailSafe::new(Duration::from_secs(fs.max_stale_secs));
        if let Some(ms) = fs.soft_timeout_ms {
            fail_safe = fail_safe.with_soft_timeout(Duration::from_millis(ms));
        }
        builder = builder.fail_safe(fail_safe);
    }
    if let Some(fraction) = config.refresh_ahead {
        builder = builder.refresh_ahead(fraction);
    }
    builder.build()
}

/// Builds the backend stack a configuration describes, innermost first:
/// the URL's backend, `Metered` (`metrics`), `Timeout` (`timeout_ms`),
/// `FailOpen` (`fail_open`), then `Tiered` with a memory L1 (`l1`) and its
/// backplane (`backplane`).
///
/// # Errors
///
/// As [`open`]; a backplane without an L1 or without a Redis URL is a
/// [`Config`](ErrorKind::Config) error.
pub async fn open_stack(config: &CacheConfig) -> Result<Arc<dyn CacheBackend>> {
    Ok(build_stack(config).await?.top)
}

/// A built stack: its outermost backend, and the shared tier under the L1
/// (the same backend when there is no L1), and the fail-open layer's
/// counters (`fail_open`).
struct Stack {
    top: Arc<dyn CacheBackend>,
    shared: Arc<dyn CacheBackend>,
    /// The URL's backend with its metrics and timeout layers, under
    /// fail-open and the L1: for rate limiters.
    plain: Arc<dyn CacheBackend>,
    fail_open: Option<FailOpenHandle>,
}

async fn build_stack(config: &CacheConfig) -> Result<Stack> {
    let mut backend = match open_backend(config).await {
        Ok(backend) => backend,
        // With fail-open, a server that is down at startup is an outage
        // like any other: start now, connect in the background.
        Err(err) if config.fail_open.is_some() && err.is_retryable() => {
            tracing::warn!(error = %err, "cache backend unreachable at startup: connecting in the background");
            deferred_backend(config)?
        }
        Err(err) => return Err(err),
    };
    if config.metrics {
        backend = Arc::new(Metered::new(backend));
    }
    if let Some(ms) = config.timeout_ms {
        let mut timeout = Timeout::new(backend, Duration::from_millis(ms));
        if let Some(bulk) = config.bulk_timeout_ms {
            timeout = timeout.with_bulk_deadline(Duration::from_millis(bulk));
        }
        backend = Arc::new(timeout);
    }
    let plain = Arc::clone(&backend);
    let mut fail_open = None;
    if let Some(fo) = &config.fail_open {
        let breaker = BreakerConfig::default()
            .with_failure_threshold(fo.failure_threshold)
            .with_cool_down(Duration::from_millis(fo.cool_down_ms));
        let layer = FailOpen::new(backend, breaker);
        fail_open = Some(layer.handle());
        backend = Arc::new(layer);
    }
    let Some(l1) = &config.l1 else {
        if config.backplane.is_some() {
            return Err(config_error("a backplane needs an L1 (`l1`) to invalidate"));
        }
        return Ok(Stack {
            top: Arc::clone(&backend),
            shared: backend,
            plain,
            fail_open,
        });
    };
    let l1_backend = open_memory_l1(l1)?;
    let shared = Arc::clone(&backend);
    let tiered = Tiered::new(
        l1_backend,
        backend,
        TieredConfig::default().with_l1_max_ttl(Duration::from_secs(l1.max_ttl_secs)),
    );
    let top: Arc<dyn CacheBackend> = match &config.backplane {
        None => Arc::new(tiered),
        Some(bp) => {
            let url = bp.url.clone().unwrap_or_else(|| config.url.clone());
            let channel = bp
                .channel
                .clone()
                .unwrap_or_else(|| format!("{}:invalidations", config.prefix));
            let backplane = open_backplane(&url, &channel).await?;
            Arc::new(tiered.with_backplane(backplane).await?)
        }
    };
    Ok(Stack {
        top,
        shared,
        plain,
        fail_open,
    })
}

/// The URL's backend, connecting in the background
/// ([`Deferred`](cache_core::layers::Deferred)).
#[cfg(feature = "redis")]
fn deferred_backend(config: &CacheConfig) -> Result<Arc<dyn CacheBackend>> {
    let caps = cache_redis::RedisConfig::from_url(&config.url)?.capabilities();
    let url = config.url.clone();
    Ok(Arc::new(cache_core::layers::Deferred::spawn(
        "redis",
        caps,
        move || {
            let url = url.clone();
            async move { open_redis(&url).await }
        },
    )))
}

#[cfg(not(feature = "redis"))]
fn deferred_backend(_config: &CacheConfig) -> Result<Arc<dyn CacheBackend>> {
    Err(config_error(
        "connecting in the background needs the `redis` feature of the `cache` crate",
    ))
}

#[cfg(feature = "memory")]
fn open_memory_l1(l1: &L1Config) -> Result<Arc<dyn CacheBackend>> {
    let mut memory = cache_memory::MemoryConfig::default();
    memory.max_entries = l1.max_entries;
    memory.max_bytes = l1.max_bytes;
    Ok(Arc::new(cache_memory::MemoryBackend::with_config(memory)))
}

#[cfg(not(feature = "memory"))]
fn open_memory_l1(_l1: &L1Config) -> Result<Arc<dyn CacheBackend>> {
    Err(config_error(
        "an L1 needs the `memory` feature of the `cache` crate",
    ))
}

#[cfg(feature = "redis")]
async fn open_backplane(url: &str, channel: &str) -> Result<Arc<dyn Backplane>> {
    // One server, a cluster (sharded pub/sub) or a Sentinel-managed primary;
    // the schemes' crate features are checked by `RedisBackplane::connect`.
    let scheme = url.split_once("://").map_or("", |(scheme, _)| scheme);
    if !matches!(
        scheme,
        "redis" | "rediss" | "redis+unix" | "unix" | "redis+cluster" | "redis+sentinel"
    ) {
        return Err(config_error(format!(
            "the backplane needs a Redis URL (redis://, rediss://, redis+cluster:// or \
             redis+sentinel://), not {:?} (set `backplane.url`)",
            redact(url)
        )));
    }
    Ok(Arc::new(
        cache_redis::RedisBackplane::connect(url, channel).await?,
    ))
}

#[cfg(not(feature = "redis"))]
async fn open_backplane(_url: &str, _channel: &str) -> Result<Arc<dyn Backplane>> {
    Err(config_error(
        "the backplane needs the `redis` feature of the `cache` crate",
    ))
}

/// Builds only the backend a configuration's URL describes.
///
/// # Errors
///
/// As [`open`].
pub async fn open_backend(config: &CacheConfig) -> Result<Arc<dyn CacheBackend>> {
    match config.scheme()? {
        "memory" => open_memory(&config.url),
        "redis" | "rediss" | "redis+cluster" | "redis+sentinel" => open_redis(&config.url).await,
        other => Err(config_error(format!(
            "unknown cache URL scheme {other:?}; use memory://, redis://, rediss://, redis+cluster:// or redis+sentinel://"
        ))),
    }
}

#[cfg(feature = "memory")]
fn open_memory(url: &str) -> Result<Arc<dyn CacheBackend>> {
    let config: cache_memory::MemoryConfig = query_config(url)?;
    Ok(Arc::new(cache_memory::MemoryBackend::with_config(config)))
}

#[cfg(not(feature = "memory"))]
fn open_memory(_url: &str) -> Result<Arc<dyn CacheBackend>> {
    Err(config_error(
        "memory:// needs the `memory` feature of the `cache` crate",
    ))
}

#[cfg(feature = "redis")]
async fn open_redis(url: &str) -> Result<Arc<dyn CacheBackend>> {
    cache_redis::connect(url).await
}

#[cfg(not(feature = "redis"))]
async fn open_redis(_url: &str) -> Result<Arc<dyn CacheBackend>> {
    Err(config_error(
        "redis://, rediss://, redis+cluster:// and redis+sentinel:// need the `redis` feature of the `cache` crate (rediss:// also `tls`, redis+cluster:// `cluster`, redis+sentinel:// `sentinel`)",
    ))
}

/// Deserializes `T` from the query of `url` (`?a=1&b=x`): numbers become
/// numbers, `true`/`false` booleans, the rest strings.
#[cfg_attr(not(feature = "memory"), allow(dead_code))]
fn query_config<T: serde::de::DeserializeOwned>(url: &str) -> Result<T> {
    let (_, rest) = url.split_once("://").unwrap_or(("", url));
    let (host, query) = rest.split_once('?').unwrap_or((rest, ""));
    if !host.is_empty() && host != "/" {
        return Err(config_error(format!(
            "{url:?}: a memory URL has no host; put options in the query, e.g. memory://?max_entries=1000"
        )));
    }
    let mut object = serde_json::Map::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, "true"));
        let value = if let Ok(n) = value.parse::<u64>() {
            serde_json::Value::from(n)
        } else if let Ok(b) = value.parse::<bool>() {
            serde_json::Value::from(b)
        } else {
            serde_json::Value::from(value)
        };
        object.insert(name.to_owned(), value);
    }
    serde_json::from_value(serde_json::Value::Object(object))
        .map_err(|e| config_error(format!("invalid options in {url:?}: {e}")).with_source(e))
}

fn parse_var<T: std::str::FromStr>(name: &str, value: &str) -> Result<T>
where
    T::Err: std::error::Error + Send + Sync + 'static,
{
    value
        .parse()
        .map_err(|e| config_error(format!("{name}={value:?} does not parse")).with_source(e))
}

fn config_error(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::Config, message)
}

/// The URL with any password replaced by `***`, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_settings_parse() {
        let vars = BTreeMap::from([
            ("CACHE_URL", "memory://?max_entries=5"),
            ("CACHE_PREFIX", "shop"),
            ("CACHE_DEFAULT_TTL", "60"),
            ("CACHE_TTLS", "rates=300, stats=900,off=0"),
            ("CACHE_TTL_JITTER", "0.1"),
        ]);
        let config = CacheConfig::from_lookup(|n| vars.get(n).map(|v| v.to_string())).unwrap();
        assert_eq!(config.prefix, "shop");
        assert_eq!(config.default_ttl_secs, Some(60));
        assert_eq!(config.ttls.get("stats"), Some(&900));
        assert_eq!(config.ttl_policy().base_ttl("off"), Some(Duration::ZERO));
        assert_eq!(
            config.ttl_policy().base_ttl("x"),
            Some(Duration::from_secs(60))
        );

        let bad = BTreeMap::from([("CACHE_TTLS", "rates")]);
        let err = CacheConfig::from_lookup(|n| bad.get(n).map(|v| v.to_string())).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(redact("redis://u:secret@h:1/0"), "redis://u:***@h:1/0");
        assert_eq!(redact("redis://h:1"), "redis://h:1");
    }

    #[cfg(feature = "memory")]
    #[test]
    fn memory_query_options() {
        let c: cache_memory::MemoryConfig =
            query_config("memory://?max_entries=10&sweep_interval_ms=0").unwrap();
        assert_eq!(c.max_entries, Some(10));
        assert_eq!(c.sweep_interval_ms, 0);
        let err =
            query_config::<cache_memory::MemoryConfig>("memory://?max_entires=10").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(err.to_string().contains("max_entires"), "{err}");
        assert!(query_config::<cache_memory::MemoryConfig>("memory://host").is_err());
    }
}
