//! `CacheConfig`: the whole cache described as data, and `open`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use cache_core::layers::{
    BreakerConfig, FailOpen, FailOpenHandle, Metered, Tiered, TieredConfig, TieredHandle, Timeout,
};
use cache_core::{
    redact_url, AnyCodec, Backplane, Cache, CacheBackend, CategoryTtl, DistributedFlight, Error,
    ErrorKind, FailSafe, FlightLock, LocalFlightLock, RateLimiter, ReportThresholds, Result, Rule,
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
/// Every setting, its `CACHE_*` variable, its URL query key and its
/// default are in one table: the "Configuration" section of the README
/// (checked against the code by the `config_keys` test). Sections:
/// [`L1Config`], [`FailOpenConfig`], [`BackplaneConfig`],
/// [`FailSafeConfig`], [`RedisOptions`], [`MemoryOptions`],
/// [`ReportConfig`]. Unknown keys are [`Config`](ErrorKind::Config) errors
/// naming them.
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
///
/// `Debug` never prints a password: the one in `url` (and in
/// `backplane.url`) shows as `***`, so logging the configuration at
/// startup is safe.
///
/// ```
/// use cache::CacheConfig;
///
/// let config = CacheConfig::from_url("redis://app:s3cret@cache.internal:6379/0");
/// let printed = format!("{config:?}");
/// assert!(printed.contains(r#"url: "redis://app:***@cache.internal:6379/0""#));
/// assert!(!printed.contains("s3cret"));
/// ```
#[derive(Clone, PartialEq, Serialize, Deserialize)]
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
    /// negative: that category is not stored). Each name must be one a
    /// [`CacheKey`](cache_core::CacheKey) can have as its category (ASCII
    /// letters, digits, `_`, `-`, `.`): `open` refuses any other.
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
    /// Settings of the Redis connection (`redis://`, `rediss://`,
    /// `redis+cluster://`, `redis+sentinel://`; also the backplane's):
    /// pool size, timeouts, TLS files, reads from replicas. Each may also be
    /// given in the URL's query; these win.
    pub redis: RedisOptions,
    /// Settings of the `memory://` backend; each may also be given in the
    /// URL's query; these win.
    pub memory: MemoryOptions,
    /// When [`Cache::report`]'s advice speaks up.
    pub report: ReportConfig,
    /// Rate limit rules by name, for [`CacheConfig::rate_limiter`]:
    /// `LIMIT/WINDOW`, then optionally `failures` (count failures only, for
    /// lockouts) and `deny` (deny while the backend fails), e.g.
    /// `{"anon": "100/hour", "login": "5/min failures deny"}`.
    pub rate_limits: BTreeMap<String, String>,
    /// Distributed single flight (stampede protection across processes):
    /// one `get_or_set` loader per key across every instance sharing the
    /// backend, waiting on a lease (`Cache`'s
    /// [`distributed_single_flight`](cache_core::CacheBuilder::distributed_single_flight)).
    pub stampede: Option<StampedeConfig>,
}

/// Distributed single flight settings (the `stampede` section).
///
/// # Examples
///
/// ```
/// use cache::CacheConfig;
///
/// let config = CacheConfig::from_json(r#"{ "stampede": { "lease_ms": 5000 } }"#)?;
/// let stampede = config.stampede.unwrap();
/// assert_eq!((stampede.lease_ms, stampede.poll_ms, stampede.by_default), (5000, 1000, true));
/// # Ok::<(), cache::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct StampedeConfig {
    /// How long a lease runs, in milliseconds: a leader that dies holds the
    /// others back at most this long (a live one extends it).
    pub lease_ms: u64,
    /// The longest a waiter sleeps without a release notification, in
    /// milliseconds.
    pub poll_ms: u64,
    /// Whether `get_or_set` uses it unless its options say otherwise
    /// (`GetOrSetOptions::with_distributed`).
    pub by_default: bool,
    /// The pub/sub channel of releases; default `{prefix}:flights`.
    pub channel: Option<String>,
}

impl Default for StampedeConfig {
    fn default() -> Self {
        StampedeConfig {
            lease_ms: 10_000,
            poll_ms: 1_000,
            by_default: true,
            channel: None,
        }
    }
}

/// The Redis connection's settings (the `redis` section); `None`: the
/// URL's query, else the default. The same keys work in the URL's query
/// (`redis://host?pool_size=4&tls_ca_file=/etc/ca.pem`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct RedisOptions {
    /// Multiplexed connections to open (round-robin). Default 1.
    pub pool_size: Option<usize>,
    /// How long opening a connection may take, milliseconds. Default 2000.
    pub connect_timeout_ms: Option<u64>,
    /// How long one answer may take, milliseconds. Default 1000.
    pub response_timeout_ms: Option<u64>,
    /// On a Redis Cluster, send single-key reads to replicas. Default
    /// `false`.
    pub read_from_replicas: Option<bool>,
    /// PEM file of the CAs to trust (TLS); default: the system's roots.
    pub tls_ca_file: Option<PathBuf>,
    /// PEM file of the client certificate (TLS, for `tls-auth-clients`).
    pub tls_cert_file: Option<PathBuf>,
    /// PEM file of the client certificate's key.
    pub tls_key_file: Option<PathBuf>,
    /// The largest value sent, bytes. Default 512 MiB.
    pub max_value_size: Option<usize>,
}

/// The memory backend's settings (the `memory` section); `None`: the
/// URL's query, else the default. The same keys work in the URL's query
/// (`memory://?max_entries=10000`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct MemoryOptions {
    /// At most this many entries. Default: unbounded.
    pub max_entries: Option<usize>,
    /// At most this many bytes of keys and values. Default: unbounded.
    pub max_bytes: Option<usize>,
    /// The largest value accepted, bytes. Default 64 MiB.
    pub max_value_size: Option<usize>,
    /// How often expired entries are swept, milliseconds (0: never; expiry
    /// on read still applies). Default 1000.
    pub sweep_interval_ms: Option<u64>,
}

/// When the advice of [`Cache::report`] speaks up (the `report` section;
/// see [`ReportThresholds`]).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct ReportConfig {
    /// Reads before the hit rate is judged. Default 100.
    pub min_reads: u64,
    /// A hit rate under this is `low_hit_rate`. Default 0.5.
    pub low_hit_rate: f64,
    /// A backend failure rate over this is `high_error_rate`. Default 0.01.
    pub high_error_rate: f64,
    /// A memory tier this full is `near_capacity`. Default 0.9.
    pub near_capacity: f64,
}

impl Default for ReportConfig {
    fn default() -> Self {
        let t = ReportThresholds::default();
        ReportConfig {
            min_reads: t.min_reads,
            low_hit_rate: t.low_hit_rate,
            high_error_rate: t.high_error_rate,
            near_capacity: t.near_capacity,
        }
    }
}

impl ReportConfig {
    /// These thresholds for [`CacheBuilder::report_thresholds`](cache_core::CacheBuilder::report_thresholds).
    pub fn thresholds(&self) -> ReportThresholds {
        ReportThresholds::default()
            .with_min_reads(self.min_reads)
            .with_low_hit_rate(self.low_hit_rate)
            .with_high_error_rate(self.high_error_rate)
            .with_near_capacity(self.near_capacity)
    }
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
    /// How often the L1 sweeps out expired copies, in milliseconds (0:
    /// never; expiry on read still applies).
    pub sweep_interval_ms: u64,
}

impl Default for L1Config {
    fn default() -> Self {
        L1Config {
            max_entries: Some(10_000),
            max_bytes: None,
            max_ttl_secs: 60,
            sweep_interval_ms: 1000,
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

/// The backplane. `Debug` prints `url` without its password.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct BackplaneConfig {
    /// The Redis URL of the pub/sub server; default: the cache's URL.
    pub url: Option<String>,
    /// The channel; default `{prefix}:invalidations`.
    pub channel: Option<String>,
    /// How other instances' L1 copies are dropped: `pubsub` (default:
    /// every write through this library is announced on `channel`) or
    /// `tracking` (Redis tells: RESP3 `CLIENT TRACKING` on the prefix, so
    /// a write by *any* client, `redis-cli` or another service, drops the
    /// copy; one server only, not Cluster or Sentinel).
    pub mode: BackplaneMode,
}

/// How a backplane learns of changes (see [`BackplaneConfig::mode`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum BackplaneMode {
    /// Redis pub/sub messages sent by each instance (`RedisBackplane`).
    #[default]
    Pubsub,
    /// Redis client tracking (`RedisTracking`): writes by any client.
    Tracking,
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

impl fmt::Debug for CacheConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Destructured without `..`: a new field does not compile until it
        // is printed here, or deliberately left out.
        let CacheConfig {
            url,
            prefix,
            default_ttl_secs,
            ttls,
            ttl_jitter,
            codec,
            generation_refresh_ms,
            l1,
            timeout_ms,
            bulk_timeout_ms,
            fail_open,
            backplane,
            fail_safe,
            refresh_ahead,
            metrics,
            redis,
            memory,
            report,
            rate_limits,
            stampede,
        } = self;
        f.debug_struct("CacheConfig")
            .field("url", &redact_url(url))
            .field("prefix", prefix)
            .field("default_ttl_secs", default_ttl_secs)
            .field("ttls", ttls)
            .field("ttl_jitter", ttl_jitter)
            .field("codec", codec)
            .field("generation_refresh_ms", generation_refresh_ms)
            .field("l1", l1)
            .field("timeout_ms", timeout_ms)
            .field("bulk_timeout_ms", bulk_timeout_ms)
            .field("fail_open", fail_open)
            .field("backplane", backplane)
            .field("fail_safe", fail_safe)
            .field("refresh_ahead", refresh_ahead)
            .field("metrics", metrics)
            .field("redis", redis)
            .field("memory", memory)
            .field("report", report)
            .field("rate_limits", rate_limits)
            .field("stampede", stampede)
            .finish()
    }
}

impl fmt::Debug for BackplaneConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let BackplaneConfig { url, channel, mode } = self;
        f.debug_struct("BackplaneConfig")
            .field("url", &url.as_deref().map(redact_url))
            .field("channel", channel)
            .field("mode", mode)
            .finish()
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
            redis: RedisOptions::default(),
            memory: MemoryOptions::default(),
            report: ReportConfig::default(),
            rate_limits: BTreeMap::new(),
            stampede: None,
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

    /// Reads the configuration from the `CACHE_*` variables of the
    /// environment (see the table of settings above for each variable),
    /// defaults for what is not set.
    ///
    /// A setting of an optional part turns that part on with defaults for
    /// the rest (`CACHE_L1_MAX_TTL_SECS=30` adds an L1, `CACHE_FAIL_OPEN_THRESHOLD=3`
    /// fail-open, `CACHE_BACKPLANE_URL` a backplane and an L1,
    /// `CACHE_FAIL_SAFE_SOFT_TIMEOUT_MS` fail-safe); `CACHE_FAIL_OPEN=false`
    /// (and the like) turns it off whatever else is set.
    ///
    /// # Errors
    ///
    /// [`Config`](ErrorKind::Config) naming the variable that does not
    /// parse, or a `CACHE_`-prefixed variable this crate does not know
    /// (a typo: `CACHE_TIMEOUT=250` for `CACHE_TIMEOUT_MS`). Variables
    /// starting with `CACHE_TEST` belong to the test kit and are skipped.
    pub fn from_env() -> Result<Self> {
        let vars = std::env::vars_os().filter_map(|(name, value)| {
            // Names and values that are not Unicode cannot be ours; a
            // `CACHE_` one is reported below as not parsing.
            let name = name.into_string().ok()?;
            let value = value
                .into_string()
                .unwrap_or_else(|v| v.to_string_lossy().into_owned());
            Some((name, value))
        });
        Self::from_vars(vars)
    }

    /// As [`from_env`](CacheConfig::from_env), from these `(name, value)`
    /// pairs (for tests, or another source of settings). Names that do not
    /// start with `CACHE_` are ignored.
    ///
    /// # Errors
    ///
    /// As [`from_env`](CacheConfig::from_env).
    ///
    /// # Examples
    ///
    /// ```
    /// use cache::{CacheConfig, ErrorKind};
    ///
    /// let config = CacheConfig::from_vars([
    ///     ("CACHE_URL".to_owned(), "redis://cache.internal:6379".to_owned()),
    ///     ("CACHE_REDIS_POOL_SIZE".to_owned(), "4".to_owned()),
    ///     ("HOME".to_owned(), "/root".to_owned()),
    /// ])?;
    /// assert_eq!(config.redis.pool_size, Some(4));
    ///
    /// let err = CacheConfig::from_vars([("CACHE_POOLSIZE".to_owned(), "4".to_owned())]).unwrap_err();
    /// assert_eq!(err.kind(), ErrorKind::Config);
    /// assert!(err.to_string().contains("CACHE_POOLSIZE"));
    /// # Ok::<(), cache::Error>(())
    /// ```
    pub fn from_vars(vars: impl IntoIterator<Item = (String, String)>) -> Result<Self> {
        let mut known = BTreeMap::new();
        for (name, value) in vars {
            if !name.starts_with("CACHE_") || name.starts_with("CACHE_TEST") {
                continue;
            }
            if !ENV_VARS.iter().any(|(var, _)| *var == name) {
                return Err(config_error(format!(
                    "unknown key: the environment variable {name} is not a cache setting \
                     (known: {})",
                    ENV_VARS
                        .iter()
                        .map(|(v, _)| *v)
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
            known.insert(name, value);
        }
        Self::from_lookup(|name| known.get(name).cloned())
    }

    /// As [`from_env`](CacheConfig::from_env), reading each known variable
    /// through `lookup`. It cannot tell unknown variables (it is only
    /// asked for known ones); [`from_vars`](CacheConfig::from_vars) can.
    ///
    /// # Errors
    ///
    /// [`Config`](ErrorKind::Config) naming the variable that does not parse.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let mut config = CacheConfig::default();
        for (name, apply) in ENV_VARS {
            if let Some(value) = lookup(name) {
                apply(&mut config, name, value.trim())?;
            }
        }
        // Explicit "off" switches win over the settings that turn parts on.
        for (name, off) in [
            ("CACHE_FAIL_OPEN", &mut config.fail_open as &mut dyn Clear),
            ("CACHE_BACKPLANE", &mut config.backplane),
            ("CACHE_STAMPEDE", &mut config.stampede),
        ] {
            if let Some(value) = lookup(name) {
                if !parse_var::<bool>(name, value.trim())? {
                    off.clear();
                }
            }
        }
        Ok(config)
    }

    /// Parses the configuration from JSON.
    ///
    /// # Errors
    ///
    /// [`Config`](ErrorKind::Config) with the parser's message.
    pub fn from_json(json: &str) -> Result<Self> {
        serde_json::from_str(json).map_err(|e| {
            // The parser quotes values: a URL among them loses its password.
            let reason = e
                .to_string()
                .split(' ')
                .map(|word| {
                    if word.contains('@') {
                        redact_url(word)
                    } else {
                        word.to_owned()
                    }
                })
                .collect::<Vec<_>>()
                .join(" ");
            config_error(format!("invalid cache configuration: {reason}")).with_source(e)
        })
    }

    /// A rate limiter with the configured rules
    /// ([`rate_limits`](CacheConfig::rate_limits)), over `cache`'s plain
    /// backend and under its prefix ([`Cache::rate_limiter`]).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> cache::Result<()> {
    /// use cache::CacheConfig;
    ///
    /// let config = CacheConfig::from_lookup(|name| match name {
    ///     "CACHE_URL" => Some("memory://".into()),
    ///     "CACHE_RATE_LIMITS" => Some("anon=100/hour, login=5/min failures deny".into()),
    ///     _ => None,
    /// })?;
    /// let cache = cache::open(&config).await?;
    /// let limiter = config.rate_limiter(&cache)?;
    /// assert_eq!(limiter.rule("anon").unwrap().limit(), 100);
    /// assert!(limiter.rule("login").unwrap().counts_failures_only());
    /// assert!(limiter.check("anon", "10.0.0.1").await?.allowed);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Config`](ErrorKind::Config) for a rule that does not parse (its
    /// name and what is wrong).
    pub fn rate_limiter(&self, cache: &Cache) -> Result<RateLimiter> {
        let mut builder = cache.rate_limiter();
        for (name, rule) in &self.rate_limits {
            let rule: Rule = rule
                .parse()
                .map_err(|e| config_error(format!("rate_limits.{name}: {e}")))?;
            builder = builder.rule(name.clone(), rule);
        }
        builder.build()
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
                    redact_url(&self.url)
                ))
            })
    }
}

/// Turns an optional part off.
trait Clear {
    fn clear(&mut self);
}

impl<T> Clear for Option<T> {
    fn clear(&mut self) {
        *self = None;
    }
}

/// Applies one variable's value to a configuration.
type ApplyVar = fn(&mut CacheConfig, &str, &str) -> Result<()>;

/// Every `CACHE_*` variable and what it sets: the one list `from_lookup`
/// reads and `from_vars` checks names against.
const ENV_VARS: &[(&str, ApplyVar)] = &[
    ("CACHE_URL", |c, _, v| {
        c.url = v.to_owned();
        Ok(())
    }),
    ("CACHE_PREFIX", |c, _, v| {
        c.prefix = v.to_owned();
        Ok(())
    }),
    ("CACHE_DEFAULT_TTL", |c, n, v| {
        c.default_ttl_secs = Some(parse_var(n, v)?);
        Ok(())
    }),
    ("CACHE_TTLS", |c, n, v| {
        for pair in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (category, secs) = pair
                .split_once('=')
                .ok_or_else(|| config_error(format!("{n}: {pair:?} is not category=seconds")))?;
            c.ttls
                .insert(category.trim().to_owned(), parse_var(n, secs.trim())?);
        }
        Ok(())
    }),
    ("CACHE_TTL_JITTER", |c, n, v| {
        c.ttl_jitter = parse_var(n, v)?;
        Ok(())
    }),
    ("CACHE_CODEC", |c, _, v| {
        c.codec = v.to_owned();
        Ok(())
    }),
    ("CACHE_GENERATION_REFRESH_MS", |c, n, v| {
        c.generation_refresh_ms = Some(parse_var(n, v)?);
        Ok(())
    }),
    ("CACHE_L1_MAX_ENTRIES", |c, n, v| {
        l1(c).max_entries = Some(parse_var(n, v)?);
        Ok(())
    }),
    ("CACHE_L1_MAX_BYTES", |c, n, v| {
        l1(c).max_bytes = Some(parse_var(n, v)?);
        Ok(())
    }),
    ("CACHE_L1_MAX_TTL_SECS", |c, n, v| {
        l1(c).max_ttl_secs = parse_var(n, v)?;
        Ok(())
    }),
    ("CACHE_L1_SWEEP_INTERVAL_MS", |c, n, v| {
        l1(c).sweep_interval_ms = parse_var(n, v)?;
        Ok(())
    }),
    ("CACHE_TIMEOUT_MS", |c, n, v| {
        c.timeout_ms = Some(parse_var(n, v)?);
        Ok(())
    }),
    ("CACHE_BULK_TIMEOUT_MS", |c, n, v| {
        c.bulk_timeout_ms = Some(parse_var(n, v)?);
        Ok(())
    }),
    ("CACHE_STAMPEDE", |c, n, v| {
        if parse_var::<bool>(n, v)? {
            c.stampede.get_or_insert_with(StampedeConfig::default);
        }
        Ok(())
    }),
    ("CACHE_STAMPEDE_LEASE_MS", |c, n, v| {
        c.stampede
            .get_or_insert_with(StampedeConfig::default)
            .lease_ms = parse_var(n, v)?;
        Ok(())
    }),
    ("CACHE_STAMPEDE_POLL_MS", |c, n, v| {
        c.stampede
            .get_or_insert_with(StampedeConfig::default)
            .poll_ms = parse_var(n, v)?;
        Ok(())
    }),
    ("CACHE_STAMPEDE_CHANNEL", |c, _, v| {
        c.stampede
            .get_or_insert_with(StampedeConfig::default)
            .channel = Some(v.to_owned());
        Ok(())
    }),
    ("CACHE_FAIL_OPEN", |c, n, v| {
        if parse_var::<bool>(n, v)? {
            c.fail_open.get_or_insert_with(FailOpenConfig::default);
        }
        Ok(())
    }),
    ("CACHE_FAIL_OPEN_THRESHOLD", |c, n, v| {
        c.fail_open
            .get_or_insert_with(FailOpenConfig::default)
            .failure_threshold = parse_var(n, v)?;
        Ok(())
    }),
    ("CACHE_FAIL_OPEN_COOL_DOWN_MS", |c, n, v| {
        c.fail_open
            .get_or_insert_with(FailOpenConfig::default)
            .cool_down_ms = parse_var(n, v)?;
        Ok(())
    }),
    ("CACHE_BACKPLANE", |c, n, v| {
        if parse_var::<bool>(n, v)? {
            backplane(c);
        }
        Ok(())
    }),
    ("CACHE_BACKPLANE_URL", |c, _, v| {
        backplane(c).url = Some(v.to_owned());
        Ok(())
    }),
    ("CACHE_BACKPLANE_CHANNEL", |c, _, v| {
        backplane(c).channel = Some(v.to_owned());
        Ok(())
    }),
    ("CACHE_BACKPLANE_MODE", |c, n, v| {
        backplane(c).mode = match v.trim() {
            "pubsub" => BackplaneMode::Pubsub,
            "tracking" => BackplaneMode::Tracking,
            other => {
                return Err(config_error(format!(
                    "{n}: {other:?} is not a backplane mode (pubsub or tracking)"
                )))
            }
        };
        Ok(())
    }),
    ("CACHE_FAIL_SAFE_SECS", |c, n, v| {
        fail_safe(c).max_stale_secs = parse_var(n, v)?;
        Ok(())
    }),
    ("CACHE_FAIL_SAFE_SOFT_TIMEOUT_MS", |c, n, v| {
        fail_safe(c).soft_timeout_ms = Some(parse_var(n, v)?);
        Ok(())
    }),
    ("CACHE_REFRESH_AHEAD", |c, n, v| {
        c.refresh_ahead = Some(parse_var(n, v)?);
        Ok(())
    }),
    ("CACHE_METRICS", |c, n, v| {
        c.metrics = parse_var(n, v)?;
        Ok(())
    }),
    ("CACHE_RATE_LIMITS", |c, n, v| {
        for pair in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, rule) = pair
                .split_once('=')
                .ok_or_else(|| config_error(format!("{n}: {pair:?} is not name=limit/window")))?;
            let rule = rule.trim();
            rule.parse::<Rule>()
                .map_err(|e| config_error(format!("{n}: {e}")))?;
            c.rate_limits
                .insert(name.trim().to_owned(), rule.to_owned());
        }
        Ok(())
    }),
    ("CACHE_REDIS_POOL_SIZE", |c, n, v| {
        c.redis.pool_size = Some(parse_var(n, v)?);
        Ok(())
    }),
    ("CACHE_REDIS_CONNECT_TIMEOUT_MS", |c, n, v| {
        c.redis.connect_timeout_ms = Some(parse_var(n, v)?);
        Ok(())
    }),
    ("CACHE_REDIS_RESPONSE_TIMEOUT_MS", |c, n, v| {
        c.redis.response_timeout_ms = Some(parse_var(n, v)?);
        Ok(())
    }),
    ("CACHE_REDIS_READ_FROM_REPLICAS", |c, n, v| {
        c.redis.read_from_replicas = Some(parse_var(n, v)?);
        Ok(())
    }),
    ("CACHE_REDIS_TLS_CA_FILE", |c, _, v| {
        c.redis.tls_ca_file = Some(v.into());
        Ok(())
    }),
    ("CACHE_REDIS_TLS_CERT_FILE", |c, _, v| {
        c.redis.tls_cert_file = Some(v.into());
        Ok(())
    }),
    ("CACHE_REDIS_TLS_KEY_FILE", |c, _, v| {
        c.redis.tls_key_file = Some(v.into());
        Ok(())
    }),
    ("CACHE_REDIS_MAX_VALUE_SIZE", |c, n, v| {
        c.redis.max_value_size = Some(parse_var(n, v)?);
        Ok(())
    }),
    ("CACHE_MEMORY_MAX_ENTRIES", |c, n, v| {
        c.memory.max_entries = Some(parse_var(n, v)?);
        Ok(())
    }),
    ("CACHE_MEMORY_MAX_BYTES", |c, n, v| {
        c.memory.max_bytes = Some(parse_var(n, v)?);
        Ok(())
    }),
    ("CACHE_MEMORY_MAX_VALUE_SIZE", |c, n, v| {
        c.memory.max_value_size = Some(parse_var(n, v)?);
        Ok(())
    }),
    ("CACHE_MEMORY_SWEEP_INTERVAL_MS", |c, n, v| {
        c.memory.sweep_interval_ms = Some(parse_var(n, v)?);
        Ok(())
    }),
    ("CACHE_REPORT_MIN_READS", |c, n, v| {
        c.report.min_reads = parse_var(n, v)?;
        Ok(())
    }),
    ("CACHE_REPORT_LOW_HIT_RATE", |c, n, v| {
        c.report.low_hit_rate = parse_var(n, v)?;
        Ok(())
    }),
    ("CACHE_REPORT_HIGH_ERROR_RATE", |c, n, v| {
        c.report.high_error_rate = parse_var(n, v)?;
        Ok(())
    }),
    ("CACHE_REPORT_NEAR_CAPACITY", |c, n, v| {
        c.report.near_capacity = parse_var(n, v)?;
        Ok(())
    }),
];

fn l1(c: &mut CacheConfig) -> &mut L1Config {
    c.l1.get_or_insert_with(L1Config::default)
}

fn backplane(c: &mut CacheConfig) -> &mut BackplaneConfig {
    // A backplane invalidates L1 copies: it needs an L1.
    l1(c);
    c.backplane.get_or_insert_with(BackplaneConfig::default)
}

fn fail_safe(c: &mut CacheConfig) -> &mut FailSafeConfig {
    c.fail_safe.get_or_insert_with(FailSafeConfig::default)
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
    let stack = Box::pin(build_stack(config, None)).await?;
    cache_over(config, stack)
}

/// Builds the cache a configuration describes over `backend` instead of the
/// URL's: the same stack as [`open`] (`Metered`, `Timeout`, `FailOpen`, the
/// L1 and its backplane, fail-safe, refresh-ahead, TTLs, codec, report
/// thresholds) around your backend — a third-party backend, a mock, or a
/// fault injector in tests. The URL is not opened (the backplane, if
/// configured, still uses it or `backplane.url`).
///
/// # Errors
///
/// As [`open`], but for the backend's own connection.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> cache::Result<()> {
/// use cache::{CacheConfig, CacheKey};
/// use std::sync::Arc;
///
/// let config = CacheConfig::from_json(r#"{"timeout_ms": 250, "fail_open": {}, "l1": {}}"#)?;
/// let backend = Arc::new(cache::memory::MemoryBackend::new()); // or your own
/// let cache = cache::open_with(&config, backend).await?;
/// cache.set(&CacheKey::new("greeting", "en")?, "hello").await?;
/// assert_eq!(cache.backend().name(), "tiered");
/// # Ok(())
/// # }
/// ```
pub async fn open_with(config: &CacheConfig, backend: Arc<dyn CacheBackend>) -> Result<Cache> {
    let stack = Box::pin(build_stack(config, Some(backend))).await?;
    cache_over(config, stack)
}

/// The [`Cache`] over a built stack.
fn cache_over(config: &CacheConfig, stack: Stack) -> Result<Cache> {
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
    if let Some(handle) = stack.tiered {
        builder = builder.tiered_stats(handle);
    }
    let mut builder = builder
        .prefix(config.prefix.clone())
        .codec(AnyCodec::from_name(&config.codec)?)
        .ttl_policy(config.ttl_policy())
        .generation_refresh(Duration::from_millis(refresh))
        .report_thresholds(config.report.thresholds());
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
    if let (Some(st), Some(lock)) = (&config.stampede, stack.flight_lock) {
        builder = builder.distributed_single_flight(
            lock,
            DistributedFlight::default()
                .with_lease(Duration::from_millis(st.lease_ms))
                .with_fallback_poll(Duration::from_millis(st.poll_ms))
                .with_by_default(st.by_default),
        );
    }
    builder.build()
}

/// The lock of the distributed single flight (`stampede`): in-process for
/// `memory://`, else in Redis, connecting in the background when
/// fail-open is on and Redis is down now.
async fn open_flight_lock(
    config: &CacheConfig,
    st: &StampedeConfig,
) -> Result<Arc<dyn FlightLock>> {
    let channel = st
        .channel
        .clone()
        .unwrap_or_else(|| format!("{}:flights", config.prefix));
    if config.url.starts_with("memory://") {
        return Ok(Arc::new(LocalFlightLock::new()));
    }
    #[cfg(feature = "redis")]
    {
        let redis = redis_config(&config.url, &config.redis);
        match cache_redis::RedisFlightLock::with_config(redis.clone(), channel.clone()).await {
            Ok(lock) => Ok(Arc::new(lock)),
            Err(err) if config.fail_open.is_some() && err.is_retryable() => {
                Ok(Arc::new(cache_core::DeferredFlightLock::spawn(move || {
                    let (redis, channel) = (redis.clone(), channel.clone());
                    async move {
                        let lock =
                            cache_redis::RedisFlightLock::with_config(redis, channel).await?;
                        Ok(Arc::new(lock) as Arc<dyn FlightLock>)
                    }
                })))
            }
            Err(err) => Err(err),
        }
    }
    #[cfg(not(feature = "redis"))]
    {
        let _ = channel;
        Err(config_error(
            "`stampede` on this URL needs the feature `cache/redis`",
        ))
    }
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
    Ok(build_stack(config, None).await?.top)
}

/// Builds the backend stack a configuration describes (as [`open_stack`])
/// over `backend` instead of the URL's.
///
/// # Errors
///
/// As [`open_with`].
pub async fn open_stack_with(
    config: &CacheConfig,
    backend: Arc<dyn CacheBackend>,
) -> Result<Arc<dyn CacheBackend>> {
    Ok(build_stack(config, Some(backend)).await?.top)
}

/// A built stack: its outermost backend, and the shared tier under the L1
/// (the same backend when there is no L1), and the counters of the
/// fail-open layer (`fail_open`) and of the L1's `Tiered` layer (`l1`).
struct Stack {
    top: Arc<dyn CacheBackend>,
    shared: Arc<dyn CacheBackend>,
    /// The lock of the distributed single flight (`stampede`).
    flight_lock: Option<Arc<dyn FlightLock>>,
    /// The URL's backend with its metrics and timeout layers, under
    /// fail-open and the L1: for rate limiters.
    plain: Arc<dyn CacheBackend>,
    fail_open: Option<FailOpenHandle>,
    tiered: Option<TieredHandle>,
}

async fn build_stack(config: &CacheConfig, given: Option<Arc<dyn CacheBackend>>) -> Result<Stack> {
    check_report(&config.report)?;
    check_ttls(&config.ttls)?;
    let flight_lock = match &config.stampede {
        Some(st) => Some(open_flight_lock(config, st).await?),
        None => None,
    };
    let mut backend = match given {
        Some(backend) => backend,
        None => match open_backend(config).await {
            Ok(backend) => backend,
            // With fail-open, a server that is down at startup is an outage
            // like any other: start now, connect in the background.
            Err(err) if config.fail_open.is_some() && err.is_retryable() => {
                tracing::warn!(error = %err, "cache backend unreachable at startup: connecting in the background");
                deferred_backend(config)?
            }
            Err(err) => return Err(err),
        },
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
            tiered: None,
            flight_lock,
        });
    };
    let l1_backend = open_memory_l1(l1)?;
    let shared = Arc::clone(&backend);
    let tiered = Tiered::new(
        l1_backend,
        backend,
        TieredConfig::default().with_l1_max_ttl(Duration::from_secs(l1.max_ttl_secs)),
    );
    let tiered_handle = tiered.handle();
    let top: Arc<dyn CacheBackend> = match &config.backplane {
        None => Arc::new(tiered),
        Some(bp) => {
            let url = bp.url.clone().unwrap_or_else(|| config.url.clone());
            let channel = bp
                .channel
                .clone()
                .unwrap_or_else(|| format!("{}:invalidations", config.prefix));
            let backplane = match bp.mode {
                BackplaneMode::Pubsub => open_backplane(&url, &config.redis, &channel).await?,
                BackplaneMode::Tracking => open_tracking(&url, &config.redis, &config.prefix)?,
            };
            Arc::new(tiered.with_backplane(backplane).await?)
        }
    };
    Ok(Stack {
        top,
        shared,
        plain,
        fail_open,
        tiered: Some(tiered_handle),
        flight_lock,
    })
}

/// The URL's backend, connecting in the background
/// ([`Deferred`](cache_core::layers::Deferred)).
#[cfg(feature = "redis")]
fn deferred_backend(config: &CacheConfig) -> Result<Arc<dyn CacheBackend>> {
    let redis = redis_config(&config.url, &config.redis);
    let caps = redis.capabilities();
    Ok(Arc::new(cache_core::layers::Deferred::spawn(
        "redis",
        caps,
        move || {
            let redis = redis.clone();
            async move {
                let backend: Arc<dyn CacheBackend> =
                    Arc::new(cache_redis::RedisBackend::connect(redis).await?);
                Ok(backend)
            }
        },
    )))
}

#[cfg(not(feature = "redis"))]
fn deferred_backend(_config: &CacheConfig) -> Result<Arc<dyn CacheBackend>> {
    Err(config_error(
        "connecting in the background needs the feature `cache/redis`",
    ))
}

/// The Redis backend's configuration: the URL (with its query options),
/// then the `redis` section's settings over them.
#[cfg(feature = "redis")]
fn redis_config(url: &str, options: &RedisOptions) -> cache_redis::RedisConfig {
    let mut redis = cache_redis::RedisConfig::default().with_url(url);
    if let Some(n) = options.pool_size {
        redis = redis.with_connections(n);
    }
    if let Some(ms) = options.connect_timeout_ms {
        redis = redis.with_connect_timeout(Duration::from_millis(ms));
    }
    if let Some(ms) = options.response_timeout_ms {
        redis = redis.with_response_timeout(Duration::from_millis(ms));
    }
    if let Some(on) = options.read_from_replicas {
        redis = redis.with_read_from_replicas(on);
    }
    if let Some(bytes) = options.max_value_size {
        redis = redis.with_max_value_size(bytes);
    }
    redis.tls_ca_file.clone_from(&options.tls_ca_file);
    redis.tls_cert_file.clone_from(&options.tls_cert_file);
    redis.tls_key_file.clone_from(&options.tls_key_file);
    redis
}

/// Each category of `ttls` is one a [`CacheKey`](cache_core::CacheKey)
/// can have: a TTL for any other name would never apply.
fn check_ttls(ttls: &BTreeMap<String, i64>) -> Result<()> {
    for category in ttls.keys() {
        cache_core::validate_category(category).map_err(|e| {
            config_error(format!(
                "`ttls` names {category:?}, which no CacheKey can have as its category: {}",
                e.message()
            ))
        })?;
    }
    Ok(())
}

/// The report thresholds are fractions (and a count).
fn check_report(report: &ReportConfig) -> Result<()> {
    for (name, value) in [
        ("report.low_hit_rate", report.low_hit_rate),
        ("report.high_error_rate", report.high_error_rate),
        ("report.near_capacity", report.near_capacity),
    ] {
        if !(0.0..=1.0).contains(&value) {
            return Err(config_error(format!(
                "`{name}` is {value}; it is a fraction from 0 to 1"
            )));
        }
    }
    Ok(())
}

#[cfg(feature = "memory")]
fn open_memory_l1(l1: &L1Config) -> Result<Arc<dyn CacheBackend>> {
    let mut memory = cache_memory::MemoryConfig::default();
    memory.max_entries = l1.max_entries;
    memory.max_bytes = l1.max_bytes;
    memory.sweep_interval_ms = l1.sweep_interval_ms;
    Ok(Arc::new(cache_memory::MemoryBackend::with_config(memory)))
}

#[cfg(not(feature = "memory"))]
fn open_memory_l1(_l1: &L1Config) -> Result<Arc<dyn CacheBackend>> {
    Err(config_error("an L1 needs the feature `cache/memory`"))
}

/// `Ok` if `url` is a Redis URL; else the `Config` error "`needs`, not a
/// `x://` URL": named by its scheme alone, as the rest may hold a password
/// `redact_url` cannot see (a misspelt query key).
#[cfg(feature = "redis")]
fn check_backplane_url(url: &str, needs: &str) -> Result<()> {
    let scheme = url.split_once("://").map_or("", |(scheme, _)| scheme);
    if REDIS_SCHEMES.contains(&scheme) || matches!(scheme, "redis+unix" | "unix") {
        return Ok(());
    }
    let named = if scheme.is_empty() {
        "a URL without a scheme".to_owned()
    } else {
        format!("a {scheme}:// URL")
    };
    Err(config_error(format!(
        "{needs}, not {named} (set `backplane.url`)"
    )))
}

#[cfg(feature = "redis")]
async fn open_backplane(
    url: &str,
    options: &RedisOptions,
    channel: &str,
) -> Result<Arc<dyn Backplane>> {
    // One server, a cluster (sharded pub/sub) or a Sentinel-managed primary;
    // the schemes' crate features are checked by `RedisBackplane::connect`.
    check_backplane_url(
        url,
        "the backplane needs a Redis URL (redis://, rediss://, redis+cluster:// or \
         redis+sentinel://)",
    )?;
    Ok(Arc::new(
        cache_redis::RedisBackplane::with_config(redis_config(url, options), channel).await?,
    ))
}

/// Client tracking as the backplane: Redis reports every write under the
/// prefix, by any client.
#[cfg(feature = "redis")]
fn open_tracking(url: &str, options: &RedisOptions, prefix: &str) -> Result<Arc<dyn Backplane>> {
    check_backplane_url(url, "client tracking needs a Redis URL")?;
    // Cluster and Sentinel: `Unsupported`, from `RedisTracking::new`.
    Ok(Arc::new(cache_redis::RedisTracking::new(
        &redis_config(url, options),
        prefix,
    )?))
}

#[cfg(not(feature = "redis"))]
fn open_tracking(_url: &str, _options: &RedisOptions, _prefix: &str) -> Result<Arc<dyn Backplane>> {
    Err(config_error(
        "client tracking needs the feature `cache/redis`",
    ))
}

#[cfg(not(feature = "redis"))]
async fn open_backplane(
    _url: &str,
    _options: &RedisOptions,
    _channel: &str,
) -> Result<Arc<dyn Backplane>> {
    Err(config_error(
        "the backplane needs the feature `cache/redis`",
    ))
}

/// The URL schemes of the Redis backend.
const REDIS_SCHEMES: [&str; 6] = [
    "redis",
    "rediss",
    "redis+cluster",
    "rediss+cluster",
    "redis+sentinel",
    "rediss+sentinel",
];

/// Builds only the backend a configuration's URL describes.
///
/// # Errors
///
/// As [`open`].
pub async fn open_backend(config: &CacheConfig) -> Result<Arc<dyn CacheBackend>> {
    match config.scheme()? {
        "memory" => open_memory(&config.url, &config.memory),
        scheme if REDIS_SCHEMES.contains(&scheme) => open_redis(config).await,
        other => Err(config_error(format!(
            "unknown cache URL scheme {other:?}; use memory://, redis://, rediss://, \
             redis+cluster://, rediss+cluster://, redis+sentinel:// or rediss+sentinel://"
        ))),
    }
}

#[cfg(feature = "memory")]
fn open_memory(url: &str, options: &MemoryOptions) -> Result<Arc<dyn CacheBackend>> {
    let mut config: cache_memory::MemoryConfig = query_config(url)?;
    if let Some(n) = options.max_entries {
        config.max_entries = Some(n);
    }
    if let Some(n) = options.max_bytes {
        config.max_bytes = Some(n);
    }
    if let Some(n) = options.max_value_size {
        config.max_value_size = n;
    }
    if let Some(ms) = options.sweep_interval_ms {
        config.sweep_interval_ms = ms;
    }
    Ok(Arc::new(cache_memory::MemoryBackend::with_config(config)))
}

#[cfg(not(feature = "memory"))]
fn open_memory(_url: &str, _options: &MemoryOptions) -> Result<Arc<dyn CacheBackend>> {
    Err(config_error("memory:// needs the feature `cache/memory`"))
}

#[cfg(feature = "redis")]
async fn open_redis(config: &CacheConfig) -> Result<Arc<dyn CacheBackend>> {
    let redis = redis_config(&config.url, &config.redis);
    Ok(Arc::new(cache_redis::RedisBackend::connect(redis).await?))
}

#[cfg(not(feature = "redis"))]
async fn open_redis(_config: &CacheConfig) -> Result<Arc<dyn CacheBackend>> {
    Err(config_error(
        "redis://, rediss://, redis+cluster:// and redis+sentinel:// need the feature \
         `cache/redis` (rediss:// also `cache/tls`, redis+cluster:// `cache/cluster`, \
         redis+sentinel:// `cache/sentinel`)",
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
    fn debug_never_prints_a_password() {
        let mut config = CacheConfig::from_url("redis://app:s3cret@cache.internal:6379/0");
        config.backplane = Some(BackplaneConfig {
            url: Some("redis://:hunter2@bus:6379".to_owned()),
            ..BackplaneConfig::default()
        });
        let err = CacheConfig::from_json(r#"{"backplane": "redis://u:pw-9@h"}"#).unwrap_err();
        assert!(!err.to_string().contains("pw-9"), "{err}");
        assert!(err.to_string().contains("redis://u:***@h"), "{err}");
        for printed in [format!("{config:?}"), format!("{config:#?}")] {
            assert!(!printed.contains("s3cret"), "{printed}");
            assert!(!printed.contains("hunter2"), "{printed}");
        }
        let printed = format!("{config:?}");
        assert!(
            printed.starts_with(
                r#"CacheConfig { url: "redis://app:***@cache.internal:6379/0", prefix: "cache","#
            ),
            "{printed}"
        );
        assert!(
            printed.contains(r#"backplane: Some(BackplaneConfig { url: Some("redis://:***@bus:6379"), channel: None, mode: Pubsub })"#),
            "{printed}"
        );
        assert!(printed.ends_with("stampede: None }"), "{printed}");
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
