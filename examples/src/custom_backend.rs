//! A third-party backend written against the public contract: an ordered
//! map (`BTreeMap`) behind a mutex.
//!
//! This is the path a backend author follows:
//!
//! 1. implement [`CacheBackend`] — ten required methods; the batch and
//!    pattern operations have correct defaults, override them when the
//!    storage does better (here: `clear` and `scan` walk only the keys
//!    that share the literal prefix, which an ordered map finds in
//!    O(log n));
//! 2. check keys and values with [`check_key`] and [`check_value`], and
//!    report what the backend can do in [`Capabilities`];
//! 3. run the conformance suite from the crate's `tests/` folder
//!    (`cache_testkit::conformance_suite!(btree, factory)`: see
//!    `examples/tests/custom_backend.rs`), and fix what it names.
//!
//! The backend is then a drop-in for `Cache`, the wrappers and the rate
//! limiter, like the built-in ones.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use cache::{
    async_trait, check_key, check_namespace, check_value, glob_match, Bytes, CacheBackend,
    Capabilities, Error, ErrorKind, Health, HealthStatus, KeyTtl, Result, SetMode, SetOptions,
};

/// The largest value this backend accepts.
pub const MAX_VALUE_SIZE: usize = 4 << 20;

#[derive(Debug, Clone)]
struct Entry {
    value: Bytes,
    expires_at: Option<Instant>,
}

impl Entry {
    fn live(&self, now: Instant) -> bool {
        self.expires_at.is_none_or(|at| now < at)
    }
}

/// An in-process backend on a `BTreeMap`: ordered keys make prefix scans
/// (`clear`, patterns with a literal start) cheap. Expired entries are
/// dropped when met (reads, writes, scans); there is no sweeper.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> cache::Result<()> {
/// use cache::{Cache, CacheKey};
/// use cache_examples::custom_backend::BTreeBackend;
/// use std::sync::Arc;
///
/// let cache = Cache::new(Arc::new(BTreeBackend::new()));
/// cache.set(&CacheKey::new("greeting", "en")?, "hello").await?;
/// assert_eq!(
///     cache.get::<String>(&CacheKey::new("greeting", "en")?).await?.as_deref(),
///     Some("hello")
/// );
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Default)]
pub struct BTreeBackend {
    map: Mutex<BTreeMap<String, Entry>>,
}

impl BTreeBackend {
    /// An empty backend.
    pub fn new() -> Self {
        BTreeBackend::default()
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Entry>> {
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn check(key: &str) -> Result<()> {
        check_key(key, cache::MAX_KEY_LEN)
    }

    /// Live keys starting with `prefix` (all keys for `""`).
    fn keys_with_prefix(map: &BTreeMap<String, Entry>, prefix: &str, now: Instant) -> Vec<String> {
        map.range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix))
            .filter(|(_, e)| e.live(now))
            .map(|(k, _)| k.clone())
            .collect()
    }
}

/// The literal start of a Redis glob: everything before the first
/// metacharacter, with `\x` escapes resolved.
fn literal_prefix(pattern: &str) -> String {
    let mut out = String::new();
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        match c {
            '*' | '?' | '[' => break,
            '\\' => match chars.next() {
                Some(lit) => out.push(lit),
                None => break,
            },
            c => out.push(c),
        }
    }
    out
}

/// An integer as Redis reads one: ASCII decimal, optional `-`, no `+`, no
/// leading zeros, no spaces (the conformance suite checks `"+1"`, `" 1"`…).
fn parse_redis_int(bytes: &[u8]) -> Option<i64> {
    if bytes == b"0" {
        return Some(0);
    }
    let digits = bytes.strip_prefix(b"-").unwrap_or(bytes);
    if !matches!(digits.first(), Some(b'1'..=b'9')) || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(bytes).ok()?.parse().ok()
}

fn expiry(ttl: Option<Duration>) -> Option<Instant> {
    ttl.map(|d| Instant::now() + d)
}

#[async_trait]
impl CacheBackend for BTreeBackend {
    fn name(&self) -> &'static str {
        "btree"
    }

    fn capabilities(&self) -> Capabilities {
        let mut caps = Capabilities::default();
        caps.max_key_len = cache::MAX_KEY_LEN;
        caps.max_value_size = MAX_VALUE_SIZE;
        // Expiry is checked against `Instant`s, `incr` runs under one lock,
        // and `scan` walks the map: claim what the suite can then check.
        caps.sub_second_ttl = true;
        caps.atomic_incr = true;
        caps.pattern_delete = true;
        caps
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        Self::check(key)?;
        let now = Instant::now();
        let mut map = self.lock();
        match map.get(key) {
            Some(e) if e.live(now) => Ok(Some(e.value.clone())),
            Some(_) => {
                map.remove(key);
                Ok(None)
            }
            None => Ok(None),
        }
    }

    async fn set(&self, key: &str, value: Bytes, opts: SetOptions) -> Result<bool> {
        Self::check(key)?;
        check_value(&value, MAX_VALUE_SIZE)?;
        let now = Instant::now();
        let mut map = self.lock();
        let present = map.get(key).is_some_and(|e| e.live(now));
        if opts.mode == SetMode::IfAbsent && present {
            return Ok(false);
        }
        if opts.ttl.is_some_and(|t| t.is_zero()) {
            // "Do not store", and remove what is there.
            if opts.mode == SetMode::Always {
                map.remove(key);
            }
            return Ok(false);
        }
        map.insert(
            key.to_owned(),
            Entry {
                value,
                expires_at: expiry(opts.ttl),
            },
        );
        Ok(true)
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        Self::check(key)?;
        let now = Instant::now();
        Ok(self.lock().remove(key).is_some_and(|e| e.live(now)))
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        Ok(self.get(key).await?.is_some())
    }

    async fn ttl(&self, key: &str) -> Result<KeyTtl> {
        Self::check(key)?;
        let now = Instant::now();
        Ok(match self.lock().get(key) {
            Some(e) if e.live(now) => match e.expires_at {
                None => KeyTtl::Persistent,
                Some(at) => KeyTtl::Expires(at - now),
            },
            _ => KeyTtl::Missing,
        })
    }

    async fn expire(&self, key: &str, ttl: Option<Duration>) -> Result<bool> {
        Self::check(key)?;
        let now = Instant::now();
        let mut map = self.lock();
        match map.get_mut(key) {
            Some(e) if e.live(now) => {
                if ttl.is_some_and(|t| t.is_zero()) {
                    map.remove(key);
                } else {
                    e.expires_at = expiry(ttl);
                }
                Ok(true)
            }
            Some(_) => {
                map.remove(key);
                Ok(false)
            }
            None => Ok(false),
        }
    }

    async fn incr(&self, key: &str, delta: i64, ttl: Option<Duration>) -> Result<i64> {
        Self::check(key)?;
        let now = Instant::now();
        let invalid = |m: &str| Error::new(ErrorKind::InvalidValue, m).context("btree", "incr");
        // One lock for read, add and write: atomic.
        let mut map = self.lock();
        match map.get_mut(key) {
            Some(e) if e.live(now) => {
                let current = parse_redis_int(&e.value)
                    .ok_or_else(|| invalid("the value is not an integer"))?;
                let next = current
                    .checked_add(delta)
                    .ok_or_else(|| invalid("increment or decrement would overflow"))?;
                e.value = Bytes::from(next.to_string());
                Ok(next)
            }
            _ => {
                map.insert(
                    key.to_owned(),
                    Entry {
                        value: Bytes::from(delta.to_string()),
                        expires_at: expiry(ttl),
                    },
                );
                Ok(delta)
            }
        }
    }

    async fn health(&self) -> Result<Health> {
        let started = Instant::now();
        let entries = self.lock().len();
        Ok(Health::new(HealthStatus::Healthy, started.elapsed()).with_detail("entries", entries))
    }

    /// Walks only the keys that share the pattern's literal start.
    async fn scan(&self, pattern: &str) -> Result<Vec<String>> {
        // A pattern is as long as the longest key, every byte escaped, and a `*`.
        if pattern.is_empty() || pattern.len() > 2 * cache::MAX_KEY_LEN + 1 {
            return Err(Error::invalid_key("the pattern is empty or too long"));
        }
        let prefix = literal_prefix(pattern);
        let map = self.lock();
        Ok(Self::keys_with_prefix(&map, &prefix, Instant::now())
            .into_iter()
            .filter(|k| glob_match(pattern, k))
            .collect())
    }

    /// A range delete: O(log n + removed), never a full scan.
    async fn clear(&self, namespace: &str) -> Result<u64> {
        check_namespace(namespace)?;
        let now = Instant::now();
        let mut map = self.lock();
        let keys: Vec<String> = map
            .range::<str, _>((Bound::Included(namespace), Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(namespace))
            .map(|(k, _)| k.clone())
            .collect();
        let mut removed = 0;
        for key in keys {
            if map.remove(&key).is_some_and(|e| e.live(now)) {
                removed += 1;
            }
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::{literal_prefix, parse_redis_int};

    #[test]
    fn integers_parse_as_redis_reads_them() {
        assert_eq!(parse_redis_int(b"-42"), Some(-42));
        for bad in [&b"+1"[..], b" 1", b"01", b"1.0", b"", b"-", b"-0"] {
            assert_eq!(parse_redis_int(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn literal_prefix_stops_at_the_first_metacharacter() {
        assert_eq!(literal_prefix("app:user:*"), "app:user:");
        assert_eq!(literal_prefix("a\\*b?c"), "a*b");
        assert_eq!(literal_prefix("[ab]c"), "");
    }
}
