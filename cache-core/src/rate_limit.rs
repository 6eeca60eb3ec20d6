//! Rate limiting over any backend: named rules (`login: 5/min`), a sliding
//! window built on the backend's atomic `incr`.
//!
//! See [`RateLimiter`] for the algorithm and its guarantees.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::backend::{check_key, CacheBackend};
use crate::cache::DEFAULT_PREFIX;
use crate::error::{Error, ErrorKind, Result};
use crate::key::{escape_id, validate_category, validate_prefix, MAX_KEY_LEN};

/// How many buckets a window is cut into unless a rule says otherwise.
pub const DEFAULT_BUCKETS: u32 = 10;

/// The most buckets a rule may have (a check reads them all).
pub const MAX_BUCKETS: u32 = 100;

/// What a check does when the backend fails.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> cache::Result<()> {
/// use cache::{OnBackendError, RateLimiter, Rule};
/// use cache::memory::MemoryBackend;
/// use cache_testkit::{FaultConfig, FaultInjecting};
/// use std::sync::Arc;
///
/// let down = FaultInjecting::new(MemoryBackend::new(), FaultConfig::none().with_fail_probability(1.0));
/// let limiter = RateLimiter::builder(Arc::new(down))
///     .rule("search", Rule::per_minute(60)) // Allow: the default
///     .rule("login", Rule::per_minute(5).on_backend_error(OnBackendError::Deny))
///     .build()?;
/// assert!(limiter.check("search", "ada").await?.allowed);
/// let login = limiter.check("login", "ada").await?;
/// assert!(!login.allowed && login.degraded);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum OnBackendError {
    /// Allow the request (fail open): an outage of the cache does not stop
    /// the service. The default.
    #[default]
    Allow,
    /// Deny the request (fail closed), with a `retry_after` of one second:
    /// an outage does not lift the limit.
    Deny,
}

/// A limit: at most `limit` requests per `window`, for each id.
///
/// Parse one from text (`"100/hour"`, `"5/min"`, `"10/30s"`, `"2/500ms"`)
/// or build it.
///
/// # Examples
///
/// ```
/// use cache::{OnBackendError, Rule};
/// use std::time::Duration;
///
/// let login: Rule = "5/min".parse()?;
/// assert_eq!(login.limit(), 5);
/// assert_eq!(login.window(), Duration::from_secs(60));
///
/// let login = login.on_backend_error(OnBackendError::Deny);
/// assert_eq!(login.backend_error_mode(), OnBackendError::Deny);
/// assert_eq!(Rule::per_hour(100), "100/hour".parse()?);
/// assert_eq!(Rule::per_hour(100).to_string(), "100/1h");
/// # Ok::<(), cache::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    limit: u64,
    window: Duration,
    buckets: u32,
    on_backend_error: OnBackendError,
    failures_only: bool,
}

impl Rule {
    /// At most `limit` requests per `window` (checked when the limiter is
    /// built: the limit must be at least 1, the window at least 1 ms).
    pub fn new(limit: u64, window: Duration) -> Self {
        Rule {
            limit,
            window,
            buckets: DEFAULT_BUCKETS,
            on_backend_error: OnBackendError::Allow,
            failures_only: false,
        }
    }

    /// At most `limit` requests per second.
    pub fn per_second(limit: u64) -> Self {
        Rule::new(limit, Duration::from_secs(1))
    }

    /// At most `limit` requests per minute.
    pub fn per_minute(limit: u64) -> Self {
        Rule::new(limit, Duration::from_secs(60))
    }

    /// At most `limit` requests per hour.
    pub fn per_hour(limit: u64) -> Self {
        Rule::new(limit, Duration::from_secs(3600))
    }

    /// At most `limit` requests per day.
    pub fn per_day(limit: u64) -> Self {
        Rule::new(limit, Duration::from_secs(86_400))
    }

    /// Cuts the window into `buckets` buckets (1 to [`MAX_BUCKETS`],
    /// default [`DEFAULT_BUCKETS`]). Capacity comes back in steps of
    /// `window / buckets`: more buckets return it more smoothly, at the
    /// cost of one more counter per bucket for each active id. With 1
    /// bucket it is two fixed windows (a request counts for 1 to 2 windows).
    #[must_use]
    pub fn with_buckets(mut self, buckets: u32) -> Self {
        self.buckets = buckets.clamp(1, MAX_BUCKETS);
        self
    }

    /// What a check does when the backend fails (default
    /// [`OnBackendError::Allow`]).
    #[must_use]
    pub fn on_backend_error(mut self, mode: OnBackendError) -> Self {
        self.on_backend_error = mode;
        self
    }

    /// Counts failures only, for lockouts (a login rule counts failed
    /// logins, not every attempt): [`RateLimiter::check`] of this rule
    /// counts nothing (it is [`peek`](RateLimiter::peek)), and
    /// [`RateLimiter::record_failure`] counts one failure. After `limit`
    /// failures in the window, checks are denied until enough of them have
    /// left it; [`RateLimiter::reset`] (e.g. on a successful login) forgets
    /// them.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> cache::Result<()> {
    /// use cache::{CacheConfig, Rule};
    ///
    /// let cache = cache::open(&CacheConfig::from_url("memory://")).await?;
    /// let limiter = cache
    ///     .rate_limiter()
    ///     .rule("login", Rule::per_minute(3).failures_only())
    ///     .build()?;
    /// for _ in 0..10 {
    ///     // Successful logins: checked, never counted.
    ///     assert!(limiter.check("login", "ada").await?.allowed);
    /// }
    /// for _ in 0..3 {
    ///     limiter.record_failure("login", "ada").await?; // wrong password
    /// }
    /// let locked = limiter.check("login", "ada").await?;
    /// assert!(!locked.allowed && locked.retry_after.is_some());
    /// assert!(limiter.check("login", "bob").await?.allowed);
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn failures_only(mut self) -> Self {
        self.failures_only = true;
        self
    }

    /// Whether the rule counts failures only (see
    /// [`failures_only`](Rule::failures_only)).
    pub fn counts_failures_only(&self) -> bool {
        self.failures_only
    }

    /// The most requests allowed per window.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// The window.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// How many buckets the window is cut into.
    pub fn buckets(&self) -> u32 {
        self.buckets
    }

    /// What a check does when the backend fails.
    pub fn backend_error_mode(&self) -> OnBackendError {
        self.on_backend_error
    }

    /// The bucket length in ms and the bucket count. The bucket length is
    /// rounded up, so the effective window is never shorter than asked.
    fn layout(&self) -> (u64, u64) {
        let window_ms = u64::try_from(self.window.as_millis())
            .unwrap_or(u64::MAX / 4)
            .max(1);
        let k = u64::from(self.buckets).clamp(1, window_ms);
        (window_ms.div_ceil(k), k)
    }

    fn validate(&self, name: &str) -> Result<()> {
        if self.limit == 0 {
            return Err(config(format!(
                "rate limit rule {name:?} has a limit of 0; use at least 1"
            )));
        }
        if self.window < Duration::from_millis(1) {
            return Err(config(format!(
                "rate limit rule {name:?} has a window under 1 ms"
            )));
        }
        Ok(())
    }
}

impl fmt::Display for Rule {
    /// `limit/window`, in the largest unit that divides the window: `5/1m`,
    /// `100/1h`, `2/500ms`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.window.as_millis();
        let (n, unit) = [
            (86_400_000, "d"),
            (3_600_000, "h"),
            (60_000, "m"),
            (1000, "s"),
        ]
        .into_iter()
        .find(|(unit, _)| ms >= *unit && ms % *unit == 0)
        .map_or((ms, "ms"), |(unit, name)| (ms / unit, name));
        write!(f, "{}/{n}{unit}", self.limit)?;
        if self.failures_only {
            f.write_str(" failures")?;
        }
        if self.on_backend_error == OnBackendError::Deny {
            f.write_str(" deny")?;
        }
        Ok(())
    }
}

impl FromStr for Rule {
    type Err = Error;

    /// Parses `LIMIT/WINDOW [failures] [deny|allow]`: `WINDOW` is an
    /// optional count and a unit, `ms`, `s`/`sec`/`second`,
    /// `m`/`min`/`minute`, `h`/`hour`, `d`/`day` (plural forms too):
    /// `100/hour`, `5/min`, `10/30s`, `1000/1h`. `failures` makes it
    /// [failures-only](Rule::failures_only); `deny` / `allow` set
    /// [`on_backend_error`](Rule::on_backend_error): `5/min failures deny`.
    ///
    /// # Errors
    ///
    /// [`Config`](ErrorKind::Config) naming what does not parse.
    fn from_str(s: &str) -> Result<Self> {
        let bad = |why: &str| config(format!("rate limit {s:?}: {why} (e.g. \"100/hour\")"));
        let (limit, window) = s.split_once('/').ok_or_else(|| bad("no '/'"))?;
        let limit: u64 = limit
            .trim()
            .parse()
            .map_err(|_| bad("the limit is not a whole number"))?;
        let mut words = window.split_whitespace();
        let window = words.next().unwrap_or("");
        let mut flags = (false, OnBackendError::Allow);
        for word in words {
            match word {
                "failures" => flags.0 = true,
                "deny" => flags.1 = OnBackendError::Deny,
                "allow" => flags.1 = OnBackendError::Allow,
                _ => return Err(bad("unknown flag; use failures, deny or allow")),
            }
        }
        let split = window
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(window.len());
        let (count, unit) = window.split_at(split);
        let count: u64 = if count.is_empty() {
            1
        } else {
            count
                .parse()
                .map_err(|_| bad("the window count is too large"))?
        };
        let unit_ms: u64 = match unit.trim() {
            "ms" | "millis" => 1,
            "s" | "sec" | "secs" | "second" | "seconds" => 1000,
            "m" | "min" | "mins" | "minute" | "minutes" => 60_000,
            "h" | "hr" | "hour" | "hours" => 3_600_000,
            "d" | "day" | "days" => 86_400_000,
            _ => return Err(bad("unknown time unit; use ms, s, min, hour or day")),
        };
        let ms = count
            .checked_mul(unit_ms)
            .ok_or_else(|| bad("the window is too long"))?;
        let mut rule = Rule::new(limit, Duration::from_millis(ms)).on_backend_error(flags.1);
        rule.failures_only = flags.0;
        rule.validate(s)?;
        Ok(rule)
    }
}

/// The answer of [`RateLimiter::check`].
///
/// # Examples
///
/// Turning a decision into HTTP headers:
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> cache::Result<()> {
/// use cache::{RateLimiter, Rule};
/// use cache::memory::MemoryBackend;
/// use std::sync::Arc;
///
/// let limiter = RateLimiter::builder(Arc::new(MemoryBackend::new()))
///     .rule("login", Rule::per_minute(1))
///     .build()?;
/// assert!(limiter.check("login", "ada").await?.allowed);
/// let denied = limiter.check("login", "ada").await?;
/// assert!(!denied.allowed);
/// let headers = denied.headers();
/// assert!(headers.iter().any(|(name, _)| *name == "Retry-After"));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Decision {
    /// Whether the request may go ahead.
    pub allowed: bool,
    /// The rule's limit.
    pub limit: u64,
    /// How many more requests the window has room for now (0 when denied).
    pub remaining: u64,
    /// How long until every request counted now has left the window, so
    /// `remaining` is back to `limit` if nothing else comes in.
    pub reset_after: Duration,
    /// For a denied request: how long until a request would be allowed (if
    /// nothing else comes in). `None` when allowed.
    pub retry_after: Option<Duration>,
    /// The backend failed and the decision is the rule's
    /// [`OnBackendError`], not a count.
    pub degraded: bool,
    /// When the decision was made (by the limiter's clock).
    pub at: SystemTime,
}

impl Decision {
    /// When `remaining` is back to `limit` (see
    /// [`reset_after`](Decision::reset_after)).
    pub fn reset_at(&self) -> SystemTime {
        self.at + self.reset_after
    }

    /// HTTP response headers for this decision: `RateLimit-Limit`,
    /// `RateLimit-Remaining`, `RateLimit-Reset` (seconds, rounded up) and,
    /// when denied, `Retry-After` (seconds, rounded up, at least 1).
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        let mut out = vec![
            ("RateLimit-Limit", self.limit.to_string()),
            ("RateLimit-Remaining", self.remaining.to_string()),
            ("RateLimit-Reset", ceil_secs(self.reset_after).to_string()),
        ];
        if let Some(retry) = self.retry_after {
            out.push(("Retry-After", ceil_secs(retry).max(1).to_string()));
        }
        out
    }

    /// [`headers`](Decision::headers) as an [`http::HeaderMap`], which
    /// axum, hyper, tonic and reqwest take as they are (feature `http`).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> cache::Result<()> {
    /// use cache::{CacheConfig, Rule};
    ///
    /// let cache = cache::open(&CacheConfig::from_url("memory://")).await?;
    /// let limiter = cache.rate_limiter().rule("api", Rule::per_minute(1)).build()?;
    /// limiter.check("api", 7).await?;
    /// let denied = limiter.check("api", 7).await?;
    /// let headers: http::HeaderMap = denied.header_map();
    /// assert_eq!(headers["ratelimit-limit"], "1");
    /// assert_eq!(headers["ratelimit-remaining"], "0");
    /// assert!(headers.contains_key(http::header::RETRY_AFTER));
    /// # Ok(())
    /// # }
    /// ```
    #[cfg(feature = "http")]
    pub fn header_map(&self) -> http::HeaderMap {
        let mut map = http::HeaderMap::with_capacity(4);
        for (name, value) in self.headers() {
            // Every name is a valid token and every value a decimal number.
            if let (Ok(name), Ok(value)) = (
                http::HeaderName::from_bytes(name.as_bytes()),
                http::HeaderValue::from_str(&value),
            ) {
                map.insert(name, value);
            }
        }
        map
    }
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// Counters of a [`RateLimiter`], from [`RateLimiter::stats`].
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> cache::Result<()> {
/// use cache::{RateLimiter, Rule};
/// use cache::memory::MemoryBackend;
/// use std::sync::Arc;
///
/// let limiter = RateLimiter::builder(Arc::new(MemoryBackend::new()))
///     .rule("api", Rule::per_second(2))
///     .build()?;
/// for _ in 0..3 {
///     limiter.check("api", 42).await?;
/// }
/// let stats = limiter.stats();
/// assert_eq!((stats.allowed, stats.denied, stats.backend_errors), (2, 1, 0));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[non_exhaustive]
pub struct RateLimitStats {
    /// Checks that allowed the request (degraded ones included).
    pub allowed: u64,
    /// Checks that denied the request (degraded ones included).
    pub denied: u64,
    /// Checks decided by [`OnBackendError`] because the backend failed.
    pub backend_errors: u64,
}

type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

/// Rate limits by named rule and id, over any [`CacheBackend`].
///
/// Counters live under keys like `api:#rl:login:{ada}:4793284`: the
/// prefix, `#rl`, the rule, the id in braces and the bucket number. The id
/// is escaped as in [`CacheKey`](crate::CacheKey) (so a user-chosen id
/// cannot reach another id's or rule's counters), and the braces make it a
/// Redis Cluster hash tag (so one id's buckets share a slot). Cache categories cannot
/// contain `#`, so these keys never meet a [`Cache`](crate::Cache)'s.
///
/// # The algorithm
///
/// A rule's window `W` is cut into `k` buckets of `B = W / k` (10 by
/// default, see [`Rule::with_buckets`]). Each (rule, id, bucket) has a
/// counter in the backend. A check
///
/// 1. `incr`s the current bucket (created with a TTL, so counters clean
///    themselves up) and, at the same time, reads the `k` older buckets
///    with one `get_many` (`MGET` on Redis): one round trip;
/// 2. allows the request when the sum of the `k + 1` buckets is at most
///    the limit;
/// 3. otherwise `incr`s the current bucket by -1, so denied attempts do not
///    count, and denies it with the exact time when enough old buckets
///    will have left the window (`retry_after`).
///
/// A bucket counts until it lies entirely outside the window, so every
/// admitted request is counted for at least `W` (and at most `W + B`): in
/// **any** interval of length `W`, at most `limit` requests are admitted
/// (the limit is never exceeded; capacity comes back in steps of `B`). Old
/// buckets are never estimated or weighted.
///
/// The decision comes from the value the atomic `incr` returns, never from
/// a read followed by a write, so concurrent checks from many tasks or many
/// instances sharing a Redis admit exactly `limit` requests in a fresh
/// window: the request whose `incr` returns `limit + 1 - older` is the
/// first one denied, and every later one sees a larger count.
///
/// # Why not one Lua script
///
/// The limiter runs on the [`CacheBackend`] contract, which has no script
/// hook, so it works on every backend (memory, Redis, yours, behind any
/// wrapper). A check is two atomic backend operations sent together (one
/// round trip; on Redis `incr` is itself one Lua script and the read one
/// `MGET`) plus a third for a denied request. The price is at the edges of
/// buckets: requests racing across a bucket boundary, within one round trip
/// of it, may see each other's counts late and exceed the limit by at most
/// the number in flight there. Instances sharing a backend must agree on
/// the time (NTP): the buckets are cut by each instance's clock.
///
/// # When the backend fails
///
/// A check whose backend calls fail is decided by the rule's
/// [`OnBackendError`]: [`Allow`](OnBackendError::Allow) (the default: a
/// cache outage does not take the service down) or
/// [`Deny`](OnBackendError::Deny) (for limits that guard against abuse, such
/// as login attempts). Either way the decision is marked
/// [`degraded`](Decision::degraded) and counted in
/// [`RateLimitStats::backend_errors`]. Give the limiter the plain backend
/// (or one behind a [`Timeout`](crate::layers::Timeout)), not one behind
/// [`FailOpen`](crate::layers::FailOpen): that wrapper turns failed reads
/// into misses, which the limiter cannot tell from empty buckets.
///
/// Cheap to clone; clones share the counters.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> cache::Result<()> {
/// use cache::{OnBackendError, RateLimiter, Rule};
/// use cache::memory::MemoryBackend;
/// use std::sync::Arc;
///
/// let limiter = RateLimiter::builder(Arc::new(MemoryBackend::new()))
///     .prefix("api")
///     .rule("anon", "100/hour".parse()?)
///     .rule("user", Rule::per_hour(1000))
///     .rule("login", Rule::per_minute(5).on_backend_error(OnBackendError::Deny))
///     .build()?;
///
/// for attempt in 1..=5 {
///     let decision = limiter.check("login", "ada@example.com").await?;
///     assert!(decision.allowed);
///     assert_eq!(decision.remaining, 5 - attempt);
/// }
/// let sixth = limiter.check("login", "ada@example.com").await?;
/// assert!(!sixth.allowed);
/// assert!(sixth.retry_after.unwrap() <= std::time::Duration::from_secs(66));
///
/// // Other ids and other rules have their own counters.
/// assert!(limiter.check("login", "bob@example.com").await?.allowed);
/// assert!(limiter.check("user", "ada@example.com").await?.allowed);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RateLimiter {
    inner: Arc<LimiterInner>,
}

struct LimiterInner {
    backend: Arc<dyn CacheBackend>,
    prefix: String,
    rules: BTreeMap<String, Rule>,
    clock: Clock,
    max_key_len: usize,
    allowed: AtomicU64,
    denied: AtomicU64,
    backend_errors: AtomicU64,
    failing: AtomicBool,
}

impl fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimiter")
            .field("backend", &self.inner.backend.name())
            .field("prefix", &self.inner.prefix)
            .field("rules", &self.inner.rules)
            .finish_non_exhaustive()
    }
}

/// Builds a [`RateLimiter`]; from [`RateLimiter::builder`].
///
/// # Examples
///
/// A limiter on a clock a test moves by hand:
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> cache::Result<()> {
/// use cache::{RateLimiter, Rule};
/// use cache::memory::MemoryBackend;
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use std::sync::Arc;
/// use std::time::{Duration, UNIX_EPOCH};
///
/// let now_ms = Arc::new(AtomicU64::new(1_700_000_000_000));
/// let clock = Arc::clone(&now_ms);
/// let limiter = RateLimiter::builder(Arc::new(MemoryBackend::new()))
///     .prefix("test")
///     .rule("login", Rule::per_minute(1))
///     .clock(move || UNIX_EPOCH + Duration::from_millis(clock.load(Ordering::SeqCst)))
///     .build()?;
/// assert!(limiter.check("login", "ada").await?.allowed);
/// let denied = limiter.check("login", "ada").await?;
/// let wait = denied.retry_after.unwrap();
/// now_ms.fetch_add(wait.as_millis() as u64, Ordering::SeqCst);
/// assert!(limiter.check("login", "ada").await?.allowed);
/// # Ok(())
/// # }
/// ```
#[must_use]
pub struct RateLimiterBuilder {
    backend: Arc<dyn CacheBackend>,
    prefix: String,
    rules: Vec<(String, Rule)>,
    clock: Clock,
}

impl fmt::Debug for RateLimiterBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimiterBuilder")
            .field("backend", &self.backend.name())
            .field("prefix", &self.prefix)
            .field("rules", &self.rules)
            .finish_non_exhaustive()
    }
}

impl RateLimiterBuilder {
    /// The key prefix (default `cache`), e.g. the service name; use the
    /// prefix of the service's [`Cache`](crate::Cache) so `Cache::clear`
    /// also resets the limits.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Adds a rule under `name` (ASCII letters, digits, `_`, `-`, `.`).
    pub fn rule(mut self, name: impl Into<String>, rule: Rule) -> Self {
        self.rules.push((name.into(), rule));
        self
    }

    /// The time source (default [`SystemTime::now`]). For tests that step
    /// through windows without waiting; every instance sharing a backend
    /// must use the same time.
    pub fn clock(mut self, now: impl Fn() -> SystemTime + Send + Sync + 'static) -> Self {
        self.clock = Arc::new(now);
        self
    }

    /// Builds the limiter.
    ///
    /// # Errors
    ///
    /// [`InvalidKey`](ErrorKind::InvalidKey) for an invalid prefix or rule
    /// name; [`Config`](ErrorKind::Config) for no rules, a rule named twice,
    /// a zero limit or a window under 1 ms;
    /// [`Unsupported`](ErrorKind::Unsupported) when the backend's `incr` is
    /// not atomic.
    pub fn build(self) -> Result<RateLimiter> {
        validate_prefix(&self.prefix)?;
        let caps = self.backend.capabilities();
        if !caps.atomic_incr {
            return Err(Error::new(
                ErrorKind::Unsupported,
                "rate limiting needs a backend whose incr is atomic",
            )
            .with_backend(self.backend.name())
            .with_operation("incr"));
        }
        if self.rules.is_empty() {
            return Err(config("a rate limiter needs at least one rule"));
        }
        let mut rules = BTreeMap::new();
        for (name, rule) in self.rules {
            validate_category(&name)?;
            rule.validate(&name)?;
            if rules.insert(name.clone(), rule).is_some() {
                return Err(config(format!("rate limit rule {name:?} is defined twice")));
            }
        }
        Ok(RateLimiter {
            inner: Arc::new(LimiterInner {
                backend: self.backend,
                prefix: self.prefix,
                rules,
                clock: self.clock,
                max_key_len: caps.max_key_len.min(MAX_KEY_LEN),
                allowed: AtomicU64::new(0),
                denied: AtomicU64::new(0),
                backend_errors: AtomicU64::new(0),
                failing: AtomicBool::new(false),
            }),
        })
    }
}

impl RateLimiter {
    /// A builder over `backend`.
    pub fn builder(backend: Arc<dyn CacheBackend>) -> RateLimiterBuilder {
        RateLimiterBuilder {
            backend,
            prefix: DEFAULT_PREFIX.to_owned(),
            rules: Vec::new(),
            clock: Arc::new(SystemTime::now),
        }
    }

    /// Counts one request of `id` under `rule` and says whether it may go
    /// ahead. A denied request is not counted.
    ///
    /// # Errors
    ///
    /// [`Config`](ErrorKind::Config) for a rule that was not defined;
    /// [`InvalidKey`](ErrorKind::InvalidKey) for an empty id, one with a
    /// control character, or one too long for a key. Backend failures are
    /// not errors: the rule's [`OnBackendError`] decides (see
    /// [`Decision::degraded`]).
    pub async fn check(&self, rule: &str, id: impl fmt::Display) -> Result<Decision> {
        let (name, rule) = self.rule_entry(rule)?;
        let window = self.window(name, rule, &id)?;
        if rule.failures_only {
            let decision = self.read(name, rule, &window).await;
            self.count(&decision);
            return Ok(decision);
        }
        let mut counts = match self.count_one(name, rule, &window).await {
            Ok(counts) => counts,
            Err(counted) => return Ok(self.degraded(rule, &window, counted).await),
        };
        let decision = if window.used(&counts) <= rule.limit {
            window.decide(rule, &counts, 0)
        } else {
            // Denied: take the attempt back so it does not count.
            let backend = &self.inner.backend;
            if let Err(err) = backend.incr(window.current(), -1, Some(window.ttl)).await {
                tracing::debug!(error = %err, rule = name, "could not uncount a denied request");
            }
            if let Some(last) = counts.last_mut() {
                *last = last.saturating_sub(1);
            }
            window.decide(rule, &counts, 1)
        };
        self.count(&decision);
        Ok(decision)
    }

    /// Says whether a request of `id` under `rule` would be allowed now,
    /// without counting it: `remaining` is what is left of the limit,
    /// `retry_after` (when denied) how long until one more fits. For a
    /// "you have N attempts left" message, or a dashboard. Not counted in
    /// [`stats`](RateLimiter::stats). A failing backend gives the rule's
    /// [`OnBackendError`], marked degraded.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> cache::Result<()> {
    /// use cache::{CacheConfig, Rule};
    ///
    /// let cache = cache::open(&CacheConfig::from_url("memory://")).await?;
    /// let limiter = cache.rate_limiter().rule("api", Rule::per_minute(3)).build()?;
    /// limiter.check("api", 7).await?;
    /// let now = limiter.peek("api", 7).await?;
    /// assert_eq!((now.allowed, now.remaining), (true, 2));
    /// assert_eq!(limiter.peek("api", 7).await?.remaining, 2); // peeking counts nothing
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`check`](RateLimiter::check).
    pub async fn peek(&self, rule: &str, id: impl fmt::Display) -> Result<Decision> {
        let (name, rule) = self.rule_entry(rule)?;
        let window = self.window(name, rule, &id)?;
        Ok(self.read(name, rule, &window).await)
    }

    /// Counts one failure of `id` under `rule` (a wrong password, a failed
    /// payment) and returns the decision for the next attempt: denied once
    /// the window holds `limit` failures. Meant for rules made with
    /// [`Rule::failures_only`] (see its example); on another rule it counts
    /// one request that cannot be denied. Not counted in
    /// [`stats`](RateLimiter::stats). A failing backend gives the rule's
    /// [`OnBackendError`], marked degraded.
    ///
    /// # Errors
    ///
    /// As [`check`](RateLimiter::check).
    pub async fn record_failure(&self, rule: &str, id: impl fmt::Display) -> Result<Decision> {
        let (name, rule) = self.rule_entry(rule)?;
        let window = self.window(name, rule, &id)?;
        Ok(match self.count_one(name, rule, &window).await {
            Ok(counts) => window.decide(rule, &counts, 1),
            Err(_) => {
                self.inner.backend_errors.fetch_add(1, Relaxed);
                degraded_decision(rule, window.now)
            }
        })
    }

    /// The buckets `id` is counted in under `rule` now.
    fn window(&self, name: &str, rule: Rule, id: &impl fmt::Display) -> Result<Window> {
        let id = escape_id(&id.to_string())?;
        let now = (self.inner.clock)();
        let now_ms = unix_ms(now);
        let (bucket_ms, k) = rule.layout();
        let current = now_ms / bucket_ms;
        let first = current.saturating_sub(k);
        let keys: Vec<String> = (first..=current)
            .map(|bucket| self.key(name, &id, bucket))
            .collect();
        let window = Window {
            keys,
            first,
            bucket_ms,
            k,
            now,
            now_ms,
            // A bucket must live until it has left the window: (k + 1)
            // buckets from its start; one more for clocks that disagree a
            // little.
            ttl: Duration::from_millis(bucket_ms.saturating_mul(k + 2)),
        };
        check_key(window.current(), self.inner.max_key_len)?;
        Ok(window)
    }

    /// Adds one to the current bucket and reads the older ones, in one
    /// round trip; the counts, oldest first, or, if the backend failed,
    /// whether the `incr` went through anyway.
    async fn count_one(
        &self,
        name: &str,
        rule: Rule,
        window: &Window,
    ) -> std::result::Result<Vec<u64>, bool> {
        let backend = &self.inner.backend;
        let older = window.older();
        let (counted, read) =
            tokio::join!(backend.incr(window.current(), 1, Some(window.ttl)), async {
                if older.is_empty() {
                    Ok(Vec::new())
                } else {
                    backend.get_many(&older).await
                }
            });
        match (counted, read) {
            (Ok(counted), Ok(read)) => {
                self.recovered();
                let mut counts: Vec<u64> = read.iter().map(parse_count).collect();
                counts.push(u64::try_from(counted).unwrap_or(0));
                Ok(counts)
            }
            (counted, read) => {
                if let Some(err) = counted.as_ref().err().or(read.as_ref().err()) {
                    self.failing(name, rule, err);
                }
                Err(counted.is_ok())
            }
        }
    }

    /// The decision for one more request, from the buckets as they are.
    async fn read(&self, name: &str, rule: Rule, window: &Window) -> Decision {
        let keys: Vec<&str> = window.keys.iter().map(String::as_str).collect();
        match self.inner.backend.get_many(&keys).await {
            Ok(read) => {
                self.recovered();
                let counts: Vec<u64> = read.iter().map(parse_count).collect();
                window.decide(rule, &counts, 1)
            }
            Err(err) => {
                self.failing(name, rule, &err);
                self.inner.backend_errors.fetch_add(1, Relaxed);
                degraded_decision(rule, window.now)
            }
        }
    }

    /// Counts a check's decision in the stats.
    fn count(&self, decision: &Decision) {
        let counter = if decision.allowed {
            &self.inner.allowed
        } else {
            &self.inner.denied
        };
        counter.fetch_add(1, Relaxed);
    }

    /// Forgets the requests counted for `id` under `rule` (e.g. after a
    /// successful login, or from an admin tool).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> cache::Result<()> {
    /// use cache::{RateLimiter, Rule};
    /// use cache::memory::MemoryBackend;
    /// use std::sync::Arc;
    ///
    /// let limiter = RateLimiter::builder(Arc::new(MemoryBackend::new()))
    ///     .rule("login", Rule::per_hour(1))
    ///     .build()?;
    /// limiter.check("login", "ada").await?;
    /// assert!(!limiter.check("login", "ada").await?.allowed);
    /// limiter.reset("login", "ada").await?;
    /// assert!(limiter.check("login", "ada").await?.allowed);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`check`](RateLimiter::check) for the rule and id; the backend's
    /// errors.
    pub async fn reset(&self, rule: &str, id: impl fmt::Display) -> Result<()> {
        let (name, rule) = self.rule_entry(rule)?;
        let id = escape_id(&id.to_string())?;
        let (bucket_ms, k) = rule.layout();
        let current = unix_ms((self.inner.clock)()) / bucket_ms;
        // One bucket ahead too, for instances whose clock runs a bit fast.
        let keys: Vec<String> = (current.saturating_sub(k)..=current + 1)
            .map(|bucket| self.key(name, &id, bucket))
            .collect();
        let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        self.inner.backend.delete_many(&refs).await.map(drop)
    }

    /// The rule named `name`.
    pub fn rule(&self, name: &str) -> Option<Rule> {
        self.inner.rules.get(name).copied()
    }

    /// The rules, by name.
    pub fn rules(&self) -> impl Iterator<Item = (&str, Rule)> + '_ {
        self.inner.rules.iter().map(|(n, r)| (n.as_str(), *r))
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.inner.prefix
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> RateLimitStats {
        RateLimitStats {
            allowed: self.inner.allowed.load(Relaxed),
            denied: self.inner.denied.load(Relaxed),
            backend_errors: self.inner.backend_errors.load(Relaxed),
        }
    }

    fn rule_entry(&self, name: &str) -> Result<(&str, Rule)> {
        self.inner
            .rules
            .get_key_value(name)
            .map(|(n, r)| (n.as_str(), *r))
            .ok_or_else(|| {
                config(format!(
                    "no rate limit rule named {name:?} (rules: {})",
                    self.inner
                        .rules
                        .keys()
                        .map(String::as_str)
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })
    }

    fn key(&self, rule: &str, escaped_id: &str, bucket: u64) -> String {
        format!("{}:#rl:{rule}:{{{escaped_id}}}:{bucket}", self.inner.prefix)
    }

    /// A check the backend could not answer: the rule's
    /// [`OnBackendError`], counted in the stats. A denied request that was
    /// counted anyway is taken back.
    async fn degraded(&self, rule: Rule, window: &Window, counted: bool) -> Decision {
        self.inner.backend_errors.fetch_add(1, Relaxed);
        let decision = degraded_decision(rule, window.now);
        if counted && !decision.allowed {
            let backend = &self.inner.backend;
            let _ = backend.incr(window.current(), -1, Some(window.ttl)).await;
        }
        self.count(&decision);
        decision
    }

    /// Logs a backend failure: a warning the first time, then quietly
    /// until it recovers.
    fn failing(&self, name: &str, rule: Rule, err: &Error) {
        if !self.inner.failing.swap(true, Relaxed) {
            tracing::warn!(error = %err, rule = name, mode = ?rule.on_backend_error,
                "rate limiter backend failing; deciding by the rule's OnBackendError");
        } else {
            tracing::debug!(error = %err, rule = name, "rate limiter backend failing");
        }
    }

    fn recovered(&self) {
        if self.inner.failing.swap(false, Relaxed) {
            tracing::info!("rate limiter backend recovered");
        }
    }
}

/// A stored counter: ASCII decimal; anything else (or negative) is 0.
/// The rule's [`OnBackendError`] as a decision, marked degraded.
fn degraded_decision(rule: Rule, now: SystemTime) -> Decision {
    let allowed = match rule.on_backend_error {
        OnBackendError::Allow => true,
        OnBackendError::Deny => false,
    };
    Decision {
        allowed,
        limit: rule.limit,
        remaining: if allowed { rule.limit } else { 0 },
        reset_after: Duration::ZERO,
        retry_after: (!allowed).then_some(Duration::from_secs(1)),
        degraded: true,
        at: now,
    }
}

/// The buckets of one (rule, id) at one instant: `first..=current`.
struct Window {
    keys: Vec<String>,
    first: u64,
    bucket_ms: u64,
    k: u64,
    now: SystemTime,
    now_ms: u64,
    ttl: Duration,
}

impl Window {
    fn current(&self) -> &str {
        self.keys.last().map_or("", String::as_str)
    }

    fn older(&self) -> Vec<&str> {
        self.keys[..self.keys.len() - 1]
            .iter()
            .map(String::as_str)
            .collect()
    }

    fn used(&self, counts: &[u64]) -> u64 {
        counts.iter().sum()
    }

    /// How long until the bucket at `position` (from `first`) has left the
    /// window: the start of bucket `first + position + k + 1`.
    fn drop_time(&self, position: usize) -> Duration {
        let bucket = self.first + position as u64;
        Duration::from_millis(
            (bucket + self.k + 1)
                .saturating_mul(self.bucket_ms)
                .saturating_sub(self.now_ms),
        )
    }

    /// How long until every counted request has left the window.
    fn reset_after(&self, counts: &[u64]) -> Duration {
        counts
            .iter()
            .rposition(|c| *c > 0)
            .map_or(Duration::ZERO, |p| self.drop_time(p))
    }

    /// The decision for `counts` (oldest first) and `pending` more requests
    /// that are not in them: allowed when all fit within the limit; when
    /// denied, `retry_after` is when enough of the oldest have left the
    /// window for them to fit.
    fn decide(&self, rule: Rule, counts: &[u64], pending: u64) -> Decision {
        let used = self.used(counts);
        let allowed = used + pending <= rule.limit;
        let retry_after = (!allowed).then(|| {
            let excess = used + pending - rule.limit;
            let mut dropped = 0;
            for (position, count) in counts.iter().enumerate() {
                dropped += count;
                if dropped >= excess {
                    return self.drop_time(position);
                }
            }
            self.drop_time(counts.len().saturating_sub(1))
        });
        Decision {
            allowed,
            limit: rule.limit,
            remaining: if allowed {
                rule.limit.saturating_sub(used)
            } else {
                0
            },
            reset_after: self.reset_after(counts),
            retry_after,
            degraded: false,
            at: self.now,
        }
    }
}

fn parse_count(value: &Option<Bytes>) -> u64 {
    value
        .as_deref()
        .and_then(|b| std::str::from_utf8(b).ok())
        .and_then(|s| s.trim().parse::<i64>().ok())
        .map_or(0, |n| u64::try_from(n).unwrap_or(0))
}

fn unix_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn config(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::Config, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_parse_and_print() {
        for (text, limit, window_ms) in [
            ("100/hour", 100, 3_600_000),
            ("5/min", 5, 60_000),
            (" 10 / 30s ", 10, 30_000),
            ("1000/1h", 1000, 3_600_000),
            ("2/500ms", 2, 500),
            ("7/2days", 7, 172_800_000),
        ] {
            let rule: Rule = text.parse().unwrap();
            assert_eq!(rule.limit(), limit, "{text}");
            assert_eq!(rule.window(), Duration::from_millis(window_ms), "{text}");
            let again: Rule = rule.to_string().parse().unwrap();
            assert_eq!(again, rule, "{text} -> {rule}");
        }
        let login: Rule = "5/min failures deny".parse().unwrap();
        assert_eq!(
            login,
            Rule::per_minute(5)
                .failures_only()
                .on_backend_error(OnBackendError::Deny)
        );
        assert_eq!(login.to_string(), "5/1m failures deny");
        assert_eq!(login.to_string().parse::<Rule>().unwrap(), login);
        let allow: Rule = "5/min deny allow".parse().unwrap();
        assert_eq!(allow, Rule::per_minute(5));
        for bad in [
            "",
            "5",
            "x/min",
            "5/fortnight",
            "0/min",
            "5/0s",
            "-1/s",
            "5/min often",
        ] {
            let err = bad.parse::<Rule>().unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Config, "{bad:?}");
        }
    }

    #[test]
    fn layout_never_shortens_the_window() {
        let rule = Rule::new(1, Duration::from_millis(1005));
        let (bucket_ms, k) = rule.layout();
        assert_eq!((bucket_ms, k), (101, 10));
        assert!(bucket_ms * k >= 1005);
        let tiny = Rule::new(1, Duration::from_millis(3));
        assert_eq!(tiny.layout(), (1, 3));
        assert_eq!(Rule::per_minute(1).with_buckets(0).buckets(), 1);
    }

    #[test]
    fn headers_round_up() {
        let decision = Decision {
            allowed: false,
            limit: 5,
            remaining: 0,
            reset_after: Duration::from_millis(1500),
            retry_after: Some(Duration::from_millis(10)),
            degraded: false,
            at: UNIX_EPOCH,
        };
        let headers = decision.headers();
        assert!(headers.contains(&("RateLimit-Reset", "2".to_owned())));
        assert!(headers.contains(&("Retry-After", "1".to_owned())));
    }
}
