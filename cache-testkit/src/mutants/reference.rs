//! [`Reference`]: a small backend that is correct by being simple.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use cache_core::{
    check_key, check_namespace, check_value, glob_match, CacheBackend, Capabilities, Error,
    ErrorKind, Health, HealthStatus, KeyTtl, Result, SetMode, SetOptions, MAX_KEY_LEN,
};

/// The name in errors.
const NAME: &str = "reference";

/// A stored value and when it expires (`None`: never).
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub(crate) value: Bytes,
    pub(crate) expires_at: Option<Instant>,
}

impl Entry {
    pub(crate) fn new(value: Bytes, ttl: Option<Duration>) -> Self {
        Entry {
            value,
            expires_at: expiry(ttl),
        }
    }

    pub(crate) fn live(&self, now: Instant) -> bool {
        self.expires_at.is_none_or(|at| now < at)
    }
}

/// When a TTL that starts now ends (`None`: never; a TTL too long for the
/// clock never ends either).
pub(crate) fn expiry(ttl: Option<Duration>) -> Option<Instant> {
    ttl.and_then(|d| Instant::now().checked_add(d))
}

/// An in-process [`CacheBackend`] written to be obviously right rather than
/// fast: one `HashMap` behind one mutex, every operation one critical
/// section, expired entries left in the map until a write replaces them
/// (and never returned). It passes the whole conformance suite, and is the
/// base of every [mutant](super::Mutant).
///
/// Capabilities: every one, keys of up to [`MAX_KEY_LEN`] bytes, values of
/// up to [`Reference::MAX_VALUE_SIZE`] bytes.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> cache_core::Result<()> {
/// use cache_core::{CacheBackend, SetOptions};
/// use cache_testkit::mutants::Reference;
///
/// let backend = Reference::new();
/// backend.set("app:k", "v".into(), SetOptions::default()).await?;
/// assert_eq!(backend.get("app:k").await?.as_deref(), Some(&b"v"[..]));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Default)]
pub struct Reference {
    map: Mutex<HashMap<String, Entry>>,
}

impl Reference {
    /// The largest value accepted: 1 MiB and 1 KiB, so that the suite's
    /// 1 MiB case runs and its oversize case can send a value over it.
    pub const MAX_VALUE_SIZE: usize = (1 << 20) + 1024;

    /// An empty backend.
    pub fn new() -> Self {
        Reference::default()
    }

    /// The map, for one critical section.
    pub(crate) fn lock(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn check_key(key: &str, op: &'static str) -> Result<()> {
        check_key(key, MAX_KEY_LEN).map_err(|e| e.context(NAME, op))
    }

    pub(crate) fn check_value(value: &[u8], op: &'static str) -> Result<()> {
        check_value(value, Self::MAX_VALUE_SIZE).map_err(|e| e.context(NAME, op))
    }

    /// Not empty, and at most `2 * MAX_KEY_LEN + 1` bytes.
    pub(crate) fn check_pattern(pattern: &str, op: &'static str) -> Result<()> {
        if pattern.is_empty() || pattern.len() > 2 * MAX_KEY_LEN + 1 {
            return Err(Error::invalid_key(format!(
                "a pattern is 1 to {} bytes, this one is {}",
                2 * MAX_KEY_LEN + 1,
                pattern.len()
            ))
            .context(NAME, op));
        }
        Ok(())
    }

    /// The value of a live entry.
    pub(crate) fn live_value(map: &HashMap<String, Entry>, key: &str) -> Option<Bytes> {
        let now = Instant::now();
        map.get(key)
            .filter(|e| e.live(now))
            .map(|e| e.value.clone())
    }

    /// Removes `key`; whether it was live.
    pub(crate) fn remove(map: &mut HashMap<String, Entry>, key: &str) -> bool {
        let now = Instant::now();
        map.remove(key).is_some_and(|e| e.live(now))
    }

    /// Live keys that match `pattern`, sorted.
    pub(crate) fn matching(map: &HashMap<String, Entry>, pattern: &str) -> Vec<String> {
        let now = Instant::now();
        let mut keys: Vec<String> = map
            .iter()
            .filter(|(k, e)| e.live(now) && glob_match(pattern, k))
            .map(|(k, _)| k.clone())
            .collect();
        keys.sort_unstable();
        keys
    }
}

/// Parses an integer as Redis does: `0`, or an optional `-` and digits
/// without a leading zero, fitting in an `i64`.
pub(crate) fn parse_redis_int(bytes: &[u8]) -> Option<i64> {
    if bytes == b"0" {
        return Some(0);
    }
    let digits = bytes.strip_prefix(b"-").unwrap_or(bytes);
    if !matches!(digits.first(), Some(b'1'..=b'9')) || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(bytes).ok()?.parse().ok()
}

/// The `InvalidValue` error of `incr`.
pub(crate) fn not_an_integer(why: &str) -> Error {
    Error::new(ErrorKind::InvalidValue, why).context(NAME, "incr")
}

#[async_trait]
impl CacheBackend for Reference {
    fn name(&self) -> &'static str {
        NAME
    }

    fn capabilities(&self) -> Capabilities {
        let mut caps = Capabilities::default();
        caps.max_key_len = MAX_KEY_LEN;
        caps.max_value_size = Self::MAX_VALUE_SIZE;
        caps.sub_second_ttl = true;
        caps.atomic_incr = true;
        caps.pattern_delete = true;
        caps.shared = false;
        caps.evicts = false;
        caps
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        Self::check_key(key, "get")?;
        Ok(Self::live_value(&self.lock(), key))
    }

    async fn set(&self, key: &str, value: Bytes, opts: SetOptions) -> Result<bool> {
        Self::check_key(key, "set")?;
        Self::check_value(&value, "set")?;
        let mut map = self.lock();
        if opts.ttl.is_some_and(|d| d.is_zero()) {
            if opts.mode == SetMode::Always {
                map.remove(key);
            }
            return Ok(false);
        }
        if opts.mode == SetMode::IfAbsent && Self::live_value(&map, key).is_some() {
            return Ok(false);
        }
        map.insert(key.to_owned(), Entry::new(value, opts.ttl));
        Ok(true)
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        Self::check_key(key, "delete")?;
        Ok(Self::remove(&mut self.lock(), key))
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        Self::check_key(key, "exists")?;
        Ok(Self::live_value(&self.lock(), key).is_some())
    }

    async fn ttl(&self, key: &str) -> Result<KeyTtl> {
        Self::check_key(key, "ttl")?;
        let now = Instant::now();
        Ok(match self.lock().get(key) {
            Some(e) if e.live(now) => match e.expires_at {
                None => KeyTtl::Persistent,
                Some(at) => KeyTtl::Expires(at.saturating_duration_since(now)),
            },
            _ => KeyTtl::Missing,
        })
    }

    async fn expire(&self, key: &str, ttl: Option<Duration>) -> Result<bool> {
        Self::check_key(key, "expire")?;
        let now = Instant::now();
        let mut map = self.lock();
        match map.get_mut(key) {
            Some(e) if e.live(now) => {
                if ttl.is_some_and(|d| d.is_zero()) {
                    map.remove(key);
                } else {
                    e.expires_at = expiry(ttl);
                }
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn incr(&self, key: &str, delta: i64, ttl: Option<Duration>) -> Result<i64> {
        Self::check_key(key, "incr")?;
        let now = Instant::now();
        let mut map = self.lock();
        match map.get_mut(key) {
            Some(e) if e.live(now) => {
                let current = parse_redis_int(&e.value)
                    .ok_or_else(|| not_an_integer("the value is not an integer"))?;
                let next = current
                    .checked_add(delta)
                    .ok_or_else(|| not_an_integer("increment or decrement would overflow"))?;
                e.value = Bytes::from(next.to_string());
                Ok(next)
            }
            _ => {
                if ttl.is_some_and(|d| d.is_zero()) {
                    map.remove(key);
                } else {
                    map.insert(
                        key.to_owned(),
                        Entry::new(Bytes::from(delta.to_string()), ttl),
                    );
                }
                Ok(delta)
            }
        }
    }

    async fn health(&self) -> Result<Health> {
        let started = Instant::now();
        let entries = self.lock().len();
        Ok(Health::new(HealthStatus::Healthy, started.elapsed()).with_detail("entries", entries))
    }

    async fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Bytes>>> {
        for key in keys {
            Self::check_key(key, "get_many")?;
        }
        let map = self.lock();
        Ok(keys.iter().map(|k| Self::live_value(&map, k)).collect())
    }

    async fn set_many(&self, items: &[(&str, Bytes)], ttl: Option<Duration>) -> Result<()> {
        for (key, value) in items {
            Self::check_key(key, "set_many")?;
            Self::check_value(value, "set_many")?;
        }
        let mut map = self.lock();
        for (key, value) in items {
            if ttl.is_some_and(|d| d.is_zero()) {
                map.remove(*key);
            } else {
                map.insert((*key).to_owned(), Entry::new(value.clone(), ttl));
            }
        }
        Ok(())
    }

    async fn delete_many(&self, keys: &[&str]) -> Result<u64> {
        for key in keys {
            Self::check_key(key, "delete_many")?;
        }
        let mut map = self.lock();
        Ok(keys
            .iter()
            .map(|k| u64::from(Self::remove(&mut map, k)))
            .sum())
    }

    async fn scan(&self, pattern: &str) -> Result<Vec<String>> {
        Self::check_pattern(pattern, "scan")?;
        Ok(Self::matching(&self.lock(), pattern))
    }

    async fn delete_matching(&self, pattern: &str) -> Result<u64> {
        Self::check_pattern(pattern, "delete_matching")?;
        let mut map = self.lock();
        let keys = Self::matching(&map, pattern);
        Ok(keys
            .iter()
            .map(|k| u64::from(Self::remove(&mut map, k)))
            .sum())
    }

    async fn clear(&self, namespace: &str) -> Result<u64> {
        check_namespace(namespace).map_err(|e| e.context(NAME, "clear"))?;
        let now = Instant::now();
        let mut removed = 0;
        self.lock().retain(|k, e| {
            if !k.starts_with(namespace) {
                return true;
            }
            removed += u64::from(e.live(now));
            false
        });
        Ok(removed)
    }
}
