//! How every example gets its cache: a [`CacheConfig`] from the `CACHE_*`
//! variables (or a JSON file), opened with [`cache::open`], and on Redis
//! the production stack for whatever the user left unset.
//!
//! On a Redis URL, unless the configuration says otherwise, an example runs
//! on:
//!
//! - a memory L1 ([`L1Config::default`]: 10 000 entries, copies kept 60 s
//!   at most), so hot keys do not pay a round trip and survive an outage;
//! - a deadline of [`PRODUCTION_TIMEOUT_MS`] on every call, so a hung
//!   server costs 250 ms, not the client's 1 s response timeout;
//! - fail-open with its breaker ([`FailOpenConfig::default`]), so an outage
//!   turns reads into misses and skips writes instead of failing requests;
//! - fail-safe where the example asks for it
//!   ([`ExampleConfig::with_fail_safe`]), on every backend.
//!
//! Setting a knob, even to "off", keeps it as set: `CACHE_FAIL_OPEN=false`
//! runs without fail-open, `CACHE_TIMEOUT_MS=1000` with a 1 s deadline,
//! `CACHE_L1_MAX_ENTRIES`, `CACHE_BACKPLANE` or a JSON `"l1"` (even `null`)
//! keep the L1 as configured. On memory nothing is added but fail-safe.
//!
//! The rate limiter is the exception: it runs on the cache's plain backend
//! ([`Cache::rate_limiter`]), under fail-open and the L1.

use cache::{Cache, CacheConfig, ErrorKind, FailOpenConfig, FailSafeConfig, L1Config};

/// The variable naming a JSON file with the whole cache configuration
/// (the format of [`CacheConfig::from_json`]); when set, the `CACHE_*`
/// variables are not read.
pub const CONFIG_FILE_ENV: &str = "CACHE_CONFIG_FILE";

/// The per-call deadline of the production stack, in milliseconds.
pub const PRODUCTION_TIMEOUT_MS: u64 = 250;

/// Which production settings the user gave (or turned off) themselves.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Given {
    l1: bool,
    timeout: bool,
    fail_open: bool,
    fail_safe: bool,
}

impl Given {
    const ALL: Given = Given {
        l1: true,
        timeout: true,
        fail_open: true,
        fail_safe: true,
    };
}

/// An example's cache configuration: what the user set, plus the
/// production stack for what they left unset (see the [module](self)).
///
/// # Examples
///
/// ```
/// use cache_examples::stack::ExampleConfig;
///
/// let config = ExampleConfig::from_url("redis://127.0.0.1:6379").resolved();
/// assert_eq!(config.timeout_ms, Some(250));
/// assert!(config.l1.is_some() && config.fail_open.is_some());
///
/// let vars = |name: &str| match name {
///     "CACHE_URL" => Some("redis://127.0.0.1:6379".to_owned()),
///     "CACHE_FAIL_OPEN" => Some("false".to_owned()),
///     _ => None,
/// };
/// let config = ExampleConfig::from_lookup(vars)?.resolved();
/// assert_eq!(config.fail_open, None); // turned off by the user
/// assert_eq!(config.timeout_ms, Some(250));
///
/// let memory = ExampleConfig::from_url("memory://").resolved();
/// assert_eq!((memory.l1, memory.timeout_ms, memory.fail_open), (None, None, None));
/// # Ok::<(), cache::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct ExampleConfig {
    config: CacheConfig,
    given: Given,
    fail_safe: Option<FailSafeConfig>,
}

impl ExampleConfig {
    /// The JSON file named by `CACHE_CONFIG_FILE` when it is set, else the
    /// `CACHE_*` variables ([`CacheConfig::from_env`]).
    ///
    /// # Errors
    ///
    /// [`Config`](ErrorKind::Config) when the file cannot be read or does
    /// not parse, or a variable does not parse.
    pub fn from_env() -> cache::Result<Self> {
        match std::env::var(CONFIG_FILE_ENV) {
            Ok(path) if !path.trim().is_empty() => {
                let json = std::fs::read_to_string(path.trim()).map_err(|e| {
                    cache::Error::new(
                        ErrorKind::Config,
                        format!("{CONFIG_FILE_ENV}={path:?} cannot be read"),
                    )
                    .with_source(e)
                })?;
                Self::from_json(&json)
            }
            _ => Self::from_lookup(|name| std::env::var(name).ok()),
        }
    }

    /// The `CACHE_*` settings read through `lookup`
    /// ([`CacheConfig::from_lookup`]).
    ///
    /// # Errors
    ///
    /// As [`CacheConfig::from_lookup`].
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> cache::Result<Self> {
        let given = Given {
            l1: lookup("CACHE_L1_MAX_ENTRIES").is_some() || lookup("CACHE_BACKPLANE").is_some(),
            timeout: lookup("CACHE_TIMEOUT_MS").is_some(),
            fail_open: lookup("CACHE_FAIL_OPEN").is_some(),
            fail_safe: lookup("CACHE_FAIL_SAFE_SECS").is_some(),
        };
        Ok(ExampleConfig {
            config: CacheConfig::from_lookup(lookup)?,
            given,
            fail_safe: None,
        })
    }

    /// A JSON configuration ([`CacheConfig::from_json`]); a key that is
    /// present, even `null`, counts as given.
    ///
    /// # Errors
    ///
    /// As [`CacheConfig::from_json`].
    pub fn from_json(json: &str) -> cache::Result<Self> {
        let config = CacheConfig::from_json(json)?;
        let object: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(json).unwrap_or_default();
        let given = Given {
            l1: object.contains_key("l1"),
            timeout: object.contains_key("timeout_ms"),
            fail_open: object.contains_key("fail_open"),
            fail_safe: object.contains_key("fail_safe"),
        };
        Ok(ExampleConfig {
            config,
            given,
            fail_safe: None,
        })
    }

    /// `url` with nothing else given: on Redis, the production stack.
    pub fn from_url(url: impl Into<String>) -> Self {
        ExampleConfig {
            config: CacheConfig::from_url(url),
            given: Given::default(),
            fail_safe: None,
        }
    }

    /// `config` exactly as it is: nothing is added, not even an example's
    /// fail-safe (for benches and tests that need a plain stack).
    pub fn as_given(config: CacheConfig) -> Self {
        ExampleConfig {
            config,
            given: Given::ALL,
            fail_safe: None,
        }
    }

    /// The example's fail-safe, used unless the user configured one (on
    /// every backend, memory too).
    #[must_use]
    pub fn with_fail_safe(mut self, fail_safe: FailSafeConfig) -> Self {
        self.fail_safe = Some(fail_safe);
        self
    }

    /// The configuration as the user gave it.
    pub fn config(&self) -> &CacheConfig {
        &self.config
    }

    /// The configuration as the user gave it, for an example to fill in
    /// its own defaults (prefix, TTLs).
    pub fn config_mut(&mut self) -> &mut CacheConfig {
        &mut self.config
    }

    /// Whether the URL is a Redis one (`redis://`, `rediss://`,
    /// `redis+cluster://`, `redis+sentinel://`).
    pub fn is_redis(&self) -> bool {
        self.config.url.starts_with("redis")
    }

    /// The configuration to open: the user's, plus the production stack
    /// on Redis for what they left unset, plus the example's fail-safe.
    pub fn resolved(&self) -> CacheConfig {
        let mut config = self.config.clone();
        if self.is_redis() {
            if !self.given.l1 && config.l1.is_none() {
                config.l1 = Some(L1Config::default());
            }
            if !self.given.timeout && config.timeout_ms.is_none() {
                config.timeout_ms = Some(PRODUCTION_TIMEOUT_MS);
            }
            if !self.given.fail_open && config.fail_open.is_none() {
                config.fail_open = Some(FailOpenConfig::default());
            }
        }
        if !self.given.fail_safe && config.fail_safe.is_none() {
            config.fail_safe.clone_from(&self.fail_safe);
        }
        config
    }

    /// Opens the cache: [`cache::open`] on [`resolved`](Self::resolved).
    ///
    /// # Errors
    ///
    /// As [`cache::open`] (a Redis that cannot be reached at start is a
    /// [`Connection`](ErrorKind::Connection) error).
    pub async fn open(&self) -> cache::Result<Cache> {
        // Boxed: opening a stack is a deep future.
        Box::pin(cache::open(&self.resolved())).await
    }

    /// One line saying what [`open`](Self::open) builds, outermost first,
    /// e.g. `L1 (10000 entries, 60 s) > fail-open (5 failures, 5000 ms) >
    /// timeout 250 ms > redis://127.0.0.1:6379, fail-safe 9 s`.
    pub fn describe(&self) -> String {
        describe(&self.resolved())
    }
}

/// One line saying which stack `config` describes, outermost first; see
/// [`ExampleConfig::describe`].
pub fn describe(config: &CacheConfig) -> String {
    let mut parts = Vec::new();
    if let Some(l1) = &config.l1 {
        let entries = l1
            .max_entries
            .map_or_else(|| "unbounded".to_owned(), |n| format!("{n} entries"));
        parts.push(format!("L1 ({entries}, {} s)", l1.max_ttl_secs));
    }
    if let Some(fo) = &config.fail_open {
        parts.push(format!(
            "fail-open ({} failures, {} ms)",
            fo.failure_threshold, fo.cool_down_ms
        ));
    }
    if let Some(ms) = config.timeout_ms {
        parts.push(format!("timeout {ms} ms"));
    }
    if config.metrics {
        parts.push("metered".to_owned());
    }
    // The URL without its password.
    let url = match (config.url.find("://"), config.url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            format!("{}***{}", &config.url[..s + 3], &config.url[at..])
        }
        _ => config.url.clone(),
    };
    parts.push(url);
    let mut line = parts.join(" > ");
    if let Some(fs) = &config.fail_safe {
        line.push_str(&format!(", fail-safe {} s", fs.max_stale_secs));
        if let Some(ms) = fs.soft_timeout_ms {
            line.push_str(&format!(" (soft timeout {ms} ms)"));
        }
    }
    if config.backplane.is_some() {
        line.push_str(", backplane");
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            vars.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn redis_gets_the_production_stack_for_what_is_unset() {
        let config = ExampleConfig::from_url("redis://h:1").resolved();
        assert_eq!(config.l1, Some(L1Config::default()));
        assert_eq!(config.timeout_ms, Some(PRODUCTION_TIMEOUT_MS));
        assert_eq!(config.fail_open, Some(FailOpenConfig::default()));
        assert_eq!(config.fail_safe, None);

        let vars = [
            ("CACHE_URL", "redis://h:1"),
            ("CACHE_TIMEOUT_MS", "900"),
            ("CACHE_FAIL_OPEN", "false"),
            ("CACHE_L1_MAX_ENTRIES", "7"),
            ("CACHE_PREFIX", "p"),
        ];
        let config = ExampleConfig::from_lookup(lookup(&vars))
            .unwrap()
            .resolved();
        assert_eq!(config.timeout_ms, Some(900));
        assert_eq!(config.fail_open, None);
        assert_eq!(config.l1.and_then(|l1| l1.max_entries), Some(7));
        assert_eq!(config.prefix, "p");
    }

    #[test]
    fn json_keys_count_as_given_even_null() {
        let json = r#"{"url": "redis://h:1", "l1": null, "timeout_ms": 40}"#;
        let config = ExampleConfig::from_json(json).unwrap().resolved();
        assert_eq!(config.l1, None);
        assert_eq!(config.timeout_ms, Some(40));
        assert_eq!(config.fail_open, Some(FailOpenConfig::default()));
        assert!(ExampleConfig::from_json(r#"{"nope": 1}"#).is_err());
    }

    #[test]
    fn fail_safe_is_the_examples_unless_the_user_set_one() {
        let mut ours = FailSafeConfig::default();
        ours.max_stale_secs = 9;
        let memory = ExampleConfig::from_url("memory://").with_fail_safe(ours.clone());
        let config = memory.resolved();
        assert_eq!(config.fail_safe, Some(ours.clone()));
        assert_eq!(
            (config.l1, config.timeout_ms, config.fail_open),
            (None, None, None)
        );

        let vars = [("CACHE_FAIL_SAFE_SECS", "60")];
        let theirs = ExampleConfig::from_lookup(lookup(&vars))
            .unwrap()
            .with_fail_safe(ours.clone())
            .resolved();
        assert_eq!(theirs.fail_safe.map(|f| f.max_stale_secs), Some(60));

        let plain = ExampleConfig::as_given(CacheConfig::from_url("redis://h:1"))
            .with_fail_safe(ours)
            .resolved();
        assert_eq!(plain, CacheConfig::from_url("redis://h:1"));
    }

    #[test]
    fn describe_names_the_stack_outermost_first() {
        let line = ExampleConfig::from_url("redis://u:secret@h:1").describe();
        assert_eq!(
            line,
            "L1 (10000 entries, 60 s) > fail-open (5 failures, 5000 ms) > timeout 250 ms > redis://***@h:1"
        );
        assert_eq!(ExampleConfig::from_url("memory://").describe(), "memory://");
    }
}
