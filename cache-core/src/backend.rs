//! The backend author's contract.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use crate::error::{Error, Result};
use crate::glob::glob_escape;

/// Whether a write replaces an existing value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SetMode {
    /// Write whatever is there (Redis `SET`).
    #[default]
    Always,
    /// Write only when the key is absent or expired (Redis `SET NX`).
    IfAbsent,
}

/// Options of [`CacheBackend::set`].
///
/// # Examples
///
/// ```
/// use cache::{SetMode, SetOptions};
/// use std::time::Duration;
///
/// let opts = SetOptions::default()
///     .with_ttl(Some(Duration::from_millis(1500)))
///     .with_mode(SetMode::IfAbsent);
/// assert_eq!(opts.ttl, Some(Duration::from_millis(1500)));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct SetOptions {
    /// How long the value lives: `None` never expires, `Some(ZERO)` means
    /// "do not store" (and remove any existing value).
    pub ttl: Option<Duration>,
    /// Whether to replace an existing value.
    pub mode: SetMode,
}

impl SetOptions {
    /// Options with this TTL and mode [`SetMode::Always`].
    pub fn ttl(ttl: Option<Duration>) -> Self {
        SetOptions {
            ttl,
            mode: SetMode::Always,
        }
    }

    /// Sets the TTL.
    #[must_use]
    pub fn with_ttl(mut self, ttl: Option<Duration>) -> Self {
        self.ttl = ttl;
        self
    }

    /// Sets the mode.
    #[must_use]
    pub fn with_mode(mut self, mode: SetMode) -> Self {
        self.mode = mode;
        self
    }
}

/// The remaining life of a key, as [`CacheBackend::ttl`] reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyTtl {
    /// No such key (or it has expired).
    Missing,
    /// The key exists and never expires.
    Persistent,
    /// The key exists and expires in this long.
    Expires(Duration),
}

/// What a backend can do; gates conformance cases and tells wrappers and
/// `Cache` what to expect.
///
/// The [`Default`] claims little, so a new backend that starts from it
/// passes the conformance suite before it claims more:
///
/// | field | default | claim it when |
/// |---|---|---|
/// | `max_key_len` | [`MAX_KEY_LEN`](crate::MAX_KEY_LEN) (1024) | your store takes longer keys (and you check them) |
/// | `max_value_size` | [`DEFAULT_MAX_VALUE_SIZE`] (1 MiB) | your store takes larger values (Redis: 512 MiB) |
/// | `sub_second_ttl` | `false` | TTLs below a second are honoured to the millisecond |
/// | `atomic_incr` | `false` | concurrent `incr`s never lose an update |
/// | `pattern_delete` | `false` | you implement `scan` (the defaults of `delete_matching` and `clear` use it) |
/// | `shared` | `false` | other processes see the data (a server) |
/// | `evicts` | `false` | you may drop live entries to stay within a bound |
///
/// Every claim is checked by the conformance suite: a case that needs a
/// capability runs when it is claimed and is skipped, saying which
/// capability it needs, when it is not. A claim you make must hold:
/// `pattern_delete` without a working `scan` fails the scan cases.
///
/// # Examples
///
/// ```
/// use cache::Capabilities;
///
/// let mut caps = Capabilities::default();
/// assert!(!caps.pattern_delete && !caps.atomic_incr && !caps.sub_second_ttl);
/// assert_eq!(caps.max_value_size, 1 << 20);
/// caps.atomic_incr = true; // one lock around read-add-write
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Capabilities {
    /// The longest key accepted, in bytes.
    pub max_key_len: usize,
    /// The largest value accepted, in bytes.
    pub max_value_size: usize,
    /// TTLs below one second are honoured to the millisecond.
    pub sub_second_ttl: bool,
    /// `incr` is atomic.
    pub atomic_incr: bool,
    /// `delete_matching` and `clear` are supported.
    pub pattern_delete: bool,
    /// Data is visible to other processes (e.g. Redis), not just this one.
    pub shared: bool,
    /// The backend may evict live entries to stay within its bounds.
    pub evicts: bool,
}

/// The largest value [`Capabilities::default`] claims: 1 MiB.
pub const DEFAULT_MAX_VALUE_SIZE: usize = 1 << 20;

impl Default for Capabilities {
    /// Conservative: see the table on [`Capabilities`].
    fn default() -> Self {
        Capabilities {
            max_key_len: crate::MAX_KEY_LEN,
            max_value_size: DEFAULT_MAX_VALUE_SIZE,
            sub_second_ttl: false,
            atomic_incr: false,
            pattern_delete: false,
            shared: false,
            evicts: false,
        }
    }
}

/// How a backend is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum HealthStatus {
    /// Working normally.
    Healthy,
    /// Working, with a problem worth a look (e.g. close to its memory limit).
    Degraded,
    /// Not working.
    Unhealthy,
}

/// The answer of [`CacheBackend::health`].
///
/// `Serialize` writes the latency as `latency_ms`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct Health {
    /// Overall status.
    pub status: HealthStatus,
    /// How long the health check took (a PING round trip on Redis).
    #[serde(rename = "latency_ms", serialize_with = "crate::stats::as_millis")]
    pub latency: Duration,
    /// Facts worth showing, by name (e.g. `entries`, `used_memory`).
    pub details: BTreeMap<String, String>,
}

impl Health {
    /// A health answer with no details.
    pub fn new(status: HealthStatus, latency: Duration) -> Self {
        Health {
            status,
            latency,
            details: BTreeMap::new(),
        }
    }

    /// Adds a detail.
    #[must_use]
    pub fn with_detail(mut self, name: impl Into<String>, value: impl fmt::Display) -> Self {
        self.details.insert(name.into(), value.to_string());
        self
    }
}

/// The contract between the cache and a storage backend.
///
/// Bytes in, bytes out; keys arrive fully built (prefix included). Object
/// safe: the cache holds an `Arc<dyn CacheBackend>`. Wrappers (metrics,
/// timeouts, fail-open, tiering) are backends over backends.
///
/// # Behavior
///
/// Each rule has a conformance case of the same name in `cache-testkit`; a
/// case skips only when the backend's [`Capabilities`] rule it out (named
/// after "needs"), and a rule without a capability applies to every backend.
///
/// Reads
/// - `get_missing_returns_none`: a miss MUST be `Ok(None)`, never an error.
/// - `get_now_agrees_with_get`: when [`get_now`](CacheBackend::get_now)
///   answers, it MUST answer what `get` does (a miss, a value written,
///   overwritten, deleted); it MUST refuse an invalid key as `get` does.
/// - `get_now_joined_agrees_with_get`: when
///   [`get_now_joined`](CacheBackend::get_now_joined) answers, it MUST
///   answer what `get` of the joined key does, wherever the key is split.
/// - `set_then_get_returns_value`: `get` MUST return exactly the bytes last
///   written, and `set` returns `true` when it wrote;
///   `binary_value_with_nul_bytes`, `large_value_1mib` (needs values of 1
///   MiB), `unicode_keys` (keys are bytes: no normalization, no case folding)
///   and `empty_value_is_a_hit` (an empty value is `Some(empty)`, a hit, for
///   `get`, `get_many` and `exists`) hold for any bytes and any UTF-8 key.
/// - `get_many_preserves_order_and_missing`: `get_many` MUST return one entry
///   per key, in order, `None` for each miss; `get_many_empty_is_empty`.
///
/// Writes
/// - `set_overwrites_value`; `set_without_ttl_clears_previous_ttl`: a plain
///   `set` replaces the value and its TTL (none, or the new one).
/// - `set_if_absent_does_not_overwrite`, `set_if_absent_on_missing_stores`,
///   `set_if_absent_after_expiry_stores`: `SetMode::IfAbsent` MUST write only
///   when the key is absent or expired (then with the new TTL), and return
///   whether it wrote; `set_if_absent_race_has_one_winner`: of many
///   concurrent `IfAbsent` writes to one key exactly one MUST win.
/// - `set_zero_ttl_does_not_store`, `set_zero_ttl_removes_existing`: a zero
///   TTL MUST NOT store, MUST return `false`, and (mode `Always`) MUST remove
///   an existing value; `set_if_absent_zero_ttl_keeps_existing`: with
///   `IfAbsent` it leaves a present value alone.
/// - `concurrent_writers_leave_one_value`: after concurrent writes of
///   different values to one key, `get` MUST return one of them, whole.
/// - `set_many_then_get_many` (no TTL: persistent keys),
///   `set_many_with_ttl_expires` (every key gets the TTL),
///   `set_many_zero_ttl_does_not_store` (and removes existing values).
/// - `oversize_value_is_invalid` (needs a `max_value_size` of at most 16 MiB,
///   so that a test can send a value over it): a value of exactly
///   `max_value_size` bytes MUST be stored; one byte more MUST fail with
///   `InvalidValue` (`set` and `set_many`) and leave the old value in place.
///
/// Keys and patterns
/// - `empty_key_is_invalid`, `oversize_key_is_invalid`: an empty key or one
///   of more than `max_key_len` bytes MUST fail with `InvalidKey` on every
///   operation that takes keys: `get`, `set`, `delete`, `exists`, `ttl`,
///   `expire`, `incr`, and `get_many`, `set_many`, `delete_many` when any of
///   their keys is invalid. A key of exactly `max_key_len` bytes MUST work
///   everywhere (`capabilities_are_consistent`).
/// - `empty_pattern_is_invalid`, `oversize_pattern_is_invalid`: `scan` and
///   `delete_matching` MUST fail with `InvalidKey` for an empty pattern or
///   one of more than `2 * max_key_len + 1` bytes (the longest pattern a
///   valid key needs: every byte escaped, plus a `*`; a pattern of exactly
///   that length MUST work). Without `pattern_delete`, `Unsupported` is also
///   right.
///
/// Expiry
/// - `ttl_expires_value`: a value written with a TTL of T MUST be readable
///   before T has passed and MUST be gone once T has passed (give or take the
///   TTL granularity: 1 ms, or 1 s without `sub_second_ttl`, rounding up,
///   never down); `ttl` reports what is left, which shrinks with time.
/// - `exists_false_after_expiry`, `expired_key_is_missing_everywhere`: an
///   expired key MUST read as missing everywhere: `get`, `get_many`, `exists`
///   (`false`), `ttl` (`Missing`), `delete`/`delete_many` (not counted),
///   `expire` (`false`), `incr` (starts from 0, without the old TTL), `scan`
///   (not listed), `delete_matching` and `clear` (not counted).
/// - `ttl_none_persists`; `sub_second_ttl_is_honoured` (needs
///   `sub_second_ttl`): a 300 ms TTL MUST be kept to the millisecond (not
///   rounded to seconds).
/// - `ttl_of_missing_is_missing`, `ttl_of_persistent_is_persistent`,
///   `ttl_reports_remaining`: for a key written with a TTL of T, `ttl` MUST
///   report `Expires(d)` with `d` between T minus the time since the write
///   (less the granularity) and T.
/// - `expire_sets_ttl` (the new TTL, as `ttl` reports it and as the key
///   expires), `expire_missing_returns_false` (for any TTL, creating
///   nothing), `expire_none_persists` (`true` for any existing key, with or
///   without a TTL), `expire_zero_deletes`: `expire` changes the TTL of an
///   existing key and returns whether the key existed.
///
/// Other operations
/// - `delete_existing_returns_true`, `delete_missing_returns_false`,
///   `delete_many_counts_existing` (each existing key counted once, exactly),
///   `exists_reflects_presence`.
/// - `incr_missing_creates_with_delta_and_ttl`,
///   `incr_existing_adds_and_keeps_ttl`, `incr_negative_delta`: values are
///   stored as ASCII decimal (as Redis does), so `get` reads `b"5"`;
///   `incr_non_integer_is_invalid_value` (anything Redis would not parse as
///   an `i64`, such as `"+1"`, `"01"`, `"-0"`, `" 1"`),
///   `incr_overflow_is_invalid_value` (both ways): `InvalidValue`, value
///   unchanged. These hold for every backend; `incr_concurrent_is_atomic`
///   (needs `atomic_incr`).
/// - `scan_lists_matching_keys` (needs `pattern_delete`): `scan` MUST list
///   every live key that matches, each once, in any order.
/// - `delete_matching_star`, `delete_matching_question_mark`,
///   `delete_matching_character_classes`,
///   `delete_matching_escaped_metacharacters`,
///   `delete_matching_leaves_other_namespaces` (all need `pattern_delete`):
///   Redis glob syntax (see [`glob_match`](crate::glob_match)),
///   case-sensitive; `delete_matching` MUST return exactly how many keys it
///   removed.
/// - `clear_removes_only_namespace`, `clear_namespace_is_literal` (both need
///   `pattern_delete`): `clear(ns)` MUST remove every key that starts with
///   `ns` and nothing else, and return exactly how many it removed; `ns` is a
///   literal, so `clear("app:a*")` removes `app:a*x` but not `app:ab` (a
///   `delete_matching(ns + "*")` must escape `ns` first). A namespace longer
///   than `max_key_len` matches no key: `Ok(0)` or `InvalidKey`.
///   `clear_empty_namespace_is_invalid`: `clear("")` MUST fail with
///   `InvalidKey` (or `Unsupported` without `pattern_delete`).
/// - `health_reports_healthy`, `name_is_not_empty`,
///   `capabilities_are_consistent` (the same answer every time; without
///   `pattern_delete`, `scan`, `delete_matching` and `clear` fail with
///   `Unsupported`).
///
/// Implementations SHOULD override the batch operations when the storage
/// has a faster way than one call per key; the defaults are correct.
///
/// # Examples
///
/// A minimal backend: a map in a mutex, with the batch defaults and the
/// default [`Capabilities`] (no pattern operations, so `scan`,
/// `delete_matching` and `clear` keep their `Unsupported` defaults). It
/// passes the conformance suite as written; the last lines run it.
///
/// ```
/// use cache::{
///     async_trait, check_key, check_value, parse_counter, Bytes, CacheBackend, Capabilities,
///     Error, ErrorKind, Health, HealthStatus, KeyTtl, Result, SetMode, SetOptions,
/// };
/// use std::collections::HashMap;
/// use std::sync::{Mutex, MutexGuard};
/// use std::time::{Duration, Instant};
///
/// type Entries = HashMap<String, (Bytes, Option<Instant>)>;
///
/// #[derive(Default)]
/// struct MapBackend(Mutex<Entries>);
///
/// impl MapBackend {
///     /// Checks `key`, locks the map and drops `key` if it has expired.
///     fn entries(&self, key: &str) -> Result<MutexGuard<'_, Entries>> {
///         check_key(key, self.capabilities().max_key_len)?;
///         let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
///         if map.get(key).is_some_and(|(_, at)| at.is_some_and(|at| at <= Instant::now())) {
///             map.remove(key);
///         }
///         Ok(map)
///     }
/// }
///
/// #[async_trait]
/// impl CacheBackend for MapBackend {
///     fn name(&self) -> &'static str { "map" }
///     fn capabilities(&self) -> Capabilities { Capabilities::default() }
///
///     async fn get(&self, key: &str) -> Result<Option<Bytes>> {
///         Ok(self.entries(key)?.get(key).map(|(value, _)| value.clone()))
///     }
///     async fn set(&self, key: &str, value: Bytes, opts: SetOptions) -> Result<bool> {
///         check_value(&value, self.capabilities().max_value_size)?;
///         let mut map = self.entries(key)?;
///         if opts.mode == SetMode::IfAbsent && map.contains_key(key) {
///             return Ok(false);
///         }
///         if opts.ttl == Some(Duration::ZERO) {
///             map.remove(key); // a zero TTL stores nothing and removes the old value
///             return Ok(false);
///         }
///         map.insert(key.to_owned(), (value, opts.ttl.map(|t| Instant::now() + t)));
///         Ok(true)
///     }
///     async fn delete(&self, key: &str) -> Result<bool> {
///         Ok(self.entries(key)?.remove(key).is_some())
///     }
///     async fn exists(&self, key: &str) -> Result<bool> {
///         Ok(self.entries(key)?.contains_key(key))
///     }
///     async fn ttl(&self, key: &str) -> Result<KeyTtl> {
///         Ok(match self.entries(key)?.get(key) {
///             None => KeyTtl::Missing,
///             Some((_, None)) => KeyTtl::Persistent,
///             Some((_, Some(at))) => KeyTtl::Expires(at.saturating_duration_since(Instant::now())),
///         })
///     }
///     async fn expire(&self, key: &str, ttl: Option<Duration>) -> Result<bool> {
///         let mut map = self.entries(key)?;
///         if ttl == Some(Duration::ZERO) {
///             return Ok(map.remove(key).is_some());
///         }
///         Ok(map.get_mut(key).map(|(_, at)| *at = ttl.map(|t| Instant::now() + t)).is_some())
///     }
///     async fn incr(&self, key: &str, delta: i64, ttl: Option<Duration>) -> Result<i64> {
///         let invalid = |why: &str| Error::new(ErrorKind::InvalidValue, why);
///         let mut map = self.entries(key)?;
///         let (next, at) = match map.get(key) {
///             Some((value, at)) => {
///                 let current = parse_counter(value).ok_or_else(|| invalid("not an integer"))?;
///                 (current.checked_add(delta).ok_or_else(|| invalid("overflow"))?, *at)
///             }
///             None => (delta, ttl.map(|t| Instant::now() + t)),
///         };
///         map.insert(key.to_owned(), (Bytes::from(next.to_string()), at));
///         Ok(next)
///     }
///     async fn health(&self) -> Result<Health> {
///         Ok(Health::new(HealthStatus::Healthy, Duration::ZERO))
///     }
/// }
///
/// // In your crate's tests: the conformance suite (cache-testkit, a
/// // dev-dependency), or `cache_testkit::conformance_suite!` for one test
/// // per case.
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let report = cache_testkit::run_all(|| async {
///     std::sync::Arc::new(MapBackend::default()) as std::sync::Arc<dyn CacheBackend>
/// })
/// .await;
/// report.assert_passed();
/// # }
/// ```
#[async_trait]
pub trait CacheBackend: Send + Sync + 'static {
    /// A short, static name for errors, logs and metrics (`"memory"`).
    fn name(&self) -> &'static str;

    /// What this backend can do.
    fn capabilities(&self) -> Capabilities;

    /// The value of `key`, or `None` when it is missing or expired.
    async fn get(&self, key: &str) -> Result<Option<Bytes>>;

    /// [`get`](CacheBackend::get) answered without waiting, when this
    /// backend can: an in-process backend answers every read here, a
    /// wrapper forwards to what it wraps, and a two-level cache answers its
    /// L1 hits. `None` means "call `get`": the default, for a backend that
    /// needs I/O.
    ///
    /// This is the synchronous fast path of [`Cache`](crate::Cache)'s reads:
    /// an `async fn` of this trait boxes its future (a `malloc` and a `free`
    /// per call), which costs an in-memory read as much as the lookup
    /// itself. Callers try `get_now` first and await `get` on `None`.
    ///
    /// A `Some` answer is exactly what `get` would answer at that moment,
    /// with the same effects (counters, recency). A `None` answer has no
    /// effect that the following `get` would not have anyway (a two-level
    /// cache's L1 miss reads the in-process L1 twice, which changes
    /// nothing). The conformance suite checks that the two agree.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> cache::Result<()> {
    /// use cache::{Bytes, CacheBackend, SetOptions};
    /// use cache::memory::MemoryBackend;
    ///
    /// let backend = MemoryBackend::new();
    /// backend.set("k", Bytes::from_static(b"v"), SetOptions::default()).await?;
    /// let value = match backend.get_now("k") {
    ///     Some(answer) => answer?,
    ///     None => backend.get("k").await?,
    /// };
    /// assert_eq!(value.as_deref(), Some(&b"v"[..]));
    /// # Ok(())
    /// # }
    /// ```
    fn get_now(&self, key: &str) -> Option<Result<Option<Bytes>>> {
        let _ = key;
        None
    }

    /// [`get_now`](CacheBackend::get_now) of the key `head` followed by
    /// `tail`, given in its two parts (a `Cache` reads its keys as its
    /// prefix and the key's own text). A backend that finds a key without
    /// joining it answers here and saves the caller the join: the memory
    /// backend hashes and compares the two parts where they lie.
    ///
    /// `None` when this backend does not (the default): the caller joins
    /// the key and calls `get_now`. A backend that answers here answers
    /// exactly as `get_now` of the joined key would.
    fn get_now_joined(&self, head: &str, tail: &str) -> Option<Result<Option<Bytes>>> {
        let _ = (head, tail);
        None
    }

    /// [`get_now_joined`](CacheBackend::get_now_joined) that lends the
    /// stored value to `read` instead of returning it: `Some(Ok(true))`
    /// once `read` has been given it, `Some(Ok(false))` when there is none,
    /// `None` when this backend does not answer now.
    ///
    /// A backend that keeps values in memory calls `read` where the value
    /// lies, under its lock on it: a `Cache` decodes a small value there
    /// and takes no reference count (two atomic operations and a cache line
    /// fewer per hit). So `read` must be short and must not call this
    /// backend. It may clone the `Bytes` to keep them.
    ///
    /// The default lends what `get_now_joined` answers.
    fn read_now_joined(
        &self,
        head: &str,
        tail: &str,
        read: &mut dyn FnMut(&Bytes),
    ) -> Option<Result<bool>> {
        Some(lend(self.get_now_joined(head, tail)?, read))
    }

    /// Writes `value` under `key`; returns whether it was written (`false`
    /// for `IfAbsent` on a present key, and for a zero TTL).
    async fn set(&self, key: &str, value: Bytes, opts: SetOptions) -> Result<bool>;

    /// Removes `key`; returns whether it existed.
    async fn delete(&self, key: &str) -> Result<bool>;

    /// Whether `key` exists (and has not expired).
    async fn exists(&self, key: &str) -> Result<bool>;

    /// The remaining life of `key`.
    async fn ttl(&self, key: &str) -> Result<KeyTtl>;

    /// Sets the TTL of an existing key (`None`: never expire; zero: delete
    /// it); returns whether the key existed.
    async fn expire(&self, key: &str, ttl: Option<Duration>) -> Result<bool>;

    /// Adds `delta` to the integer stored at `key` and returns the new
    /// value. A missing key is created holding `delta`, with `ttl`; an
    /// existing key keeps its TTL.
    async fn incr(&self, key: &str, delta: i64, ttl: Option<Duration>) -> Result<i64>;

    /// Reports how the backend is doing.
    async fn health(&self) -> Result<Health>;

    /// The values of `keys`, in order, `None` for each miss.
    async fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Bytes>>> {
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            out.push(self.get(key).await?);
        }
        Ok(out)
    }

    /// Writes every item with the same TTL (mode `Always`).
    async fn set_many(&self, items: &[(&str, Bytes)], ttl: Option<Duration>) -> Result<()> {
        for (key, value) in items {
            self.set(key, value.clone(), SetOptions::ttl(ttl)).await?;
        }
        Ok(())
    }

    /// Removes `keys`; returns how many existed.
    async fn delete_many(&self, keys: &[&str]) -> Result<u64> {
        let mut removed = 0;
        for key in keys {
            removed += u64::from(self.delete(key).await?);
        }
        Ok(removed)
    }

    /// Every key matching the Redis glob `pattern`. Backs the default
    /// `delete_matching`; the default fails with `Unsupported`.
    async fn scan(&self, pattern: &str) -> Result<Vec<String>> {
        let _ = pattern;
        Err(Error::unsupported(self.name(), "scan"))
    }

    /// Removes every key matching the Redis glob `pattern`; returns how many.
    async fn delete_matching(&self, pattern: &str) -> Result<u64> {
        let keys = self.scan(pattern).await?;
        let mut removed = 0;
        for chunk in keys.chunks(512) {
            let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
            removed += self.delete_many(&refs).await?;
        }
        Ok(removed)
    }

    /// Removes every key that starts with `namespace` (a literal, not a
    /// pattern); returns how many. Never touches other keys.
    ///
    /// # Errors
    ///
    /// `InvalidKey` for an empty namespace: clearing a whole server is not
    /// something a cache does.
    async fn clear(&self, namespace: &str) -> Result<u64> {
        check_namespace(namespace)?;
        self.delete_matching(&format!("{}*", glob_escape(namespace)))
            .await
    }

    /// Stops background work (sweepers, connections). Further calls MAY fail
    /// with `Closed`. The default does nothing.
    async fn close(&self) -> Result<()> {
        Ok(())
    }
}

/// A shared backend is a backend: wrappers take `Arc<dyn CacheBackend>`
/// (or any `Arc<B>`) as their inner backend.
#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl<T: CacheBackend + ?Sized> CacheBackend for std::sync::Arc<T> {
    fn name(&self) -> &'static str {
        (**self).name()
    }

    fn capabilities(&self) -> Capabilities {
        (**self).capabilities()
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        (**self).get(key).await
    }

    fn get_now(&self, key: &str) -> Option<Result<Option<Bytes>>> {
        (**self).get_now(key)
    }

    fn get_now_joined(&self, head: &str, tail: &str) -> Option<Result<Option<Bytes>>> {
        (**self).get_now_joined(head, tail)
    }

    fn read_now_joined(
        &self,
        head: &str,
        tail: &str,
        read: &mut dyn FnMut(&Bytes),
    ) -> Option<Result<bool>> {
        (**self).read_now_joined(head, tail, read)
    }

    async fn set(&self, key: &str, value: Bytes, opts: SetOptions) -> Result<bool> {
        (**self).set(key, value, opts).await
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        (**self).delete(key).await
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        (**self).exists(key).await
    }

    async fn ttl(&self, key: &str) -> Result<KeyTtl> {
        (**self).ttl(key).await
    }

    async fn expire(&self, key: &str, ttl: Option<Duration>) -> Result<bool> {
        (**self).expire(key, ttl).await
    }

    async fn incr(&self, key: &str, delta: i64, ttl: Option<Duration>) -> Result<i64> {
        (**self).incr(key, delta, ttl).await
    }

    async fn health(&self) -> Result<Health> {
        (**self).health().await
    }

    async fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Bytes>>> {
        (**self).get_many(keys).await
    }

    async fn set_many(&self, items: &[(&str, Bytes)], ttl: Option<Duration>) -> Result<()> {
        (**self).set_many(items, ttl).await
    }

    async fn delete_many(&self, keys: &[&str]) -> Result<u64> {
        (**self).delete_many(keys).await
    }

    async fn scan(&self, pattern: &str) -> Result<Vec<String>> {
        (**self).scan(pattern).await
    }

    async fn delete_matching(&self, pattern: &str) -> Result<u64> {
        (**self).delete_matching(pattern).await
    }

    async fn clear(&self, namespace: &str) -> Result<u64> {
        (**self).clear(namespace).await
    }

    async fn close(&self) -> Result<()> {
        (**self).close().await
    }
}

/// `answer`, a read's, lent to `read`: whether there was a value to lend.
pub(crate) fn lend(answer: Result<Option<Bytes>>, read: &mut dyn FnMut(&Bytes)) -> Result<bool> {
    Ok(answer?.map(|value| read(&value)).is_some())
}

/// Checks a key against the rules every backend enforces: not empty and at
/// most `max_len` bytes.
///
/// # Errors
///
/// [`InvalidKey`](crate::ErrorKind::InvalidKey).
#[inline]
pub fn check_key(key: &str, max_len: usize) -> Result<()> {
    // The check inline (every call of every backend makes it), its error
    // out of line.
    if !key_len_fits(key.len(), max_len) {
        return Err(key_refused(key, max_len));
    }
    Ok(())
}

/// Whether a key of `len` bytes passes [`check_key`]: not empty and at
/// most `max_len` bytes. For a key given in parts
/// ([`CacheBackend::get_now_joined`]), checked without joining it.
///
/// # Examples
///
/// ```
/// use cache::key_len_fits;
///
/// assert!(key_len_fits("user:".len() + "42".len(), 1024));
/// assert!(!key_len_fits(0, 1024));
/// assert!(!key_len_fits(1025, 1024));
/// ```
#[inline]
pub fn key_len_fits(len: usize, max_len: usize) -> bool {
    len != 0 && len <= max_len
}

/// The error of a key [`check_key`] refused.
#[cold]
#[inline(never)]
fn key_refused(key: &str, max_len: usize) -> Error {
    if key.is_empty() {
        Error::invalid_key("key is empty")
    } else {
        Error::invalid_key(format!(
            "key is {} bytes, the limit is {max_len}",
            key.len()
        ))
    }
}

/// Checks a pattern of `scan` / `delete_matching`: not empty and at most
/// `2 * max_key_len + 1` bytes (the longest valid key with every byte
/// escaped, and a `*`).
///
/// # Errors
///
/// [`InvalidKey`](crate::ErrorKind::InvalidKey).
pub fn check_pattern(pattern: &str, max_key_len: usize) -> Result<()> {
    if pattern.is_empty() {
        return Err(Error::invalid_key("pattern is empty"));
    }
    let max = max_key_len.saturating_mul(2).saturating_add(1);
    if pattern.len() > max {
        return Err(Error::invalid_key(format!(
            "pattern is {} bytes, the limit is {max}",
            pattern.len()
        )));
    }
    Ok(())
}

/// Checks a `clear` namespace: not empty.
///
/// # Errors
///
/// [`InvalidKey`](crate::ErrorKind::InvalidKey).
pub fn check_namespace(namespace: &str) -> Result<()> {
    if namespace.is_empty() {
        return Err(Error::invalid_key(
            "clear needs a non-empty namespace; it never clears a whole server",
        ));
    }
    Ok(())
}

/// Parses a counter as Redis stores it for `INCRBY`: ASCII decimal, an
/// optional `-`, no `+`, no spaces, no leading zeros, within `i64`. `None`
/// for anything else (which `incr` must answer with
/// [`InvalidValue`](crate::ErrorKind::InvalidValue)).
///
/// # Examples
///
/// ```
/// use cache::parse_counter;
///
/// assert_eq!(parse_counter(b"-42"), Some(-42));
/// assert_eq!(parse_counter(b"0"), Some(0));
/// for bad in [&b"+1"[..], b" 1", b"01", b"1.0", b"", b"-", b"9223372036854775808"] {
///     assert_eq!(parse_counter(bad), None);
/// }
/// ```
pub fn parse_counter(bytes: &[u8]) -> Option<i64> {
    if bytes == b"0" {
        return Some(0);
    }
    let digits = bytes.strip_prefix(b"-").unwrap_or(bytes);
    if !matches!(digits.first(), Some(b'1'..=b'9')) || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(bytes).ok()?.parse().ok()
}

/// Checks a value's size against `max`.
///
/// # Errors
///
/// [`InvalidValue`](crate::ErrorKind::InvalidValue).
pub fn check_value(value: &[u8], max: usize) -> Result<()> {
    if value.len() > max {
        return Err(Error::new(
            crate::ErrorKind::InvalidValue,
            format!("value is {} bytes, the limit is {max}", value.len()),
        ));
    }
    Ok(())
}
