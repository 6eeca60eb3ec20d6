//! `CacheConfig`: the whole cache described as data, and `open`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use cache_core::{
    AnyCodec, Cache, CacheBackend, CategoryTtl, Error, ErrorKind, Result, DEFAULT_PREFIX,
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
    /// in milliseconds (see `Cache::invalidate_category`).
    pub generation_refresh_ms: u64,
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
            generation_refresh_ms: 1000,
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
    let backend = open_backend(config).await?;
    Cache::builder(backend)
        .prefix(config.prefix.clone())
        .codec(AnyCodec::from_name(&config.codec)?)
        .ttl_policy(config.ttl_policy())
        .generation_refresh(Duration::from_millis(config.generation_refresh_ms))
        .build()
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
