//! `MemoryBackend`: the in-process backend.

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use cache_core::{
    check_key, check_namespace, check_pattern, check_value, glob_match, key_len_fits, CacheBackend,
    Capabilities, Error, ErrorKind, Health, HealthStatus, KeyTtl, Result, SetMode, SetOptions,
    MAX_KEY_LEN,
};
use dashmap::mapref::entry::Entry as MapEntry;
use dashmap::DashMap;
use tokio::sync::watch;

use crate::clock::{BackendClock, Clock, SystemClock};
use crate::config::MemoryConfig;
use crate::eviction::{Item, Queues, Store};
use crate::expiry::ExpiryIndex;
use crate::hash::{KeyHasherBuilder, ShortKey};

/// Bytes counted per entry on top of its key and value, for `max_bytes`.
const ENTRY_OVERHEAD: usize = 0;

/// An in-process [`CacheBackend`] on a sharded concurrent map (dashmap).
///
/// - Values are stored as bytes, so a value that fails to encode or decode
///   fails here exactly as it would on Redis.
/// - TTLs to the nanosecond; an expired entry is never returned (checked on
///   every read), and a background sweeper removes expired entries every
///   `sweep_interval_ms` (it stops when the backend is dropped or closed).
/// - Bounded by entries and/or bytes of keys plus values. When over a bound,
///   the writer evicts with **S3-FIFO**: new keys enter a small FIFO; keys
///   read while there are promoted to a main FIFO, the others are evicted
///   and remembered in a ghost list; a key coming back from the ghost list
///   goes straight to main; main gives keys read since their last pass
///   another round. This keeps frequently read keys through one-off scans,
///   and reads never take a lock beyond the map shard's read lock.
/// - `delete_matching` and `clear` scan the map with Redis-compatible glob
///   matching ([`glob_match`]).
///
/// With several concurrent writers a bounded backend may exceed its bounds
/// by a few entries for the instant between an insert and its eviction.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> cache::Result<()> {
/// use cache::{CacheBackend, SetOptions};
/// use cache::memory::{MemoryBackend, MemoryConfig};
/// use std::time::Duration;
///
/// let backend = MemoryBackend::with_config(MemoryConfig::default().with_max_entries(10_000));
/// let ttl = SetOptions::ttl(Some(Duration::from_secs(30)));
/// backend.set("app:user:1", "ada".into(), ttl).await?;
/// assert_eq!(backend.get("app:user:1").await?.as_deref(), Some(&b"ada"[..]));
/// # Ok(())
/// # }
/// ```
pub struct MemoryBackend {
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
}

/// A stored value. 40 bytes, so a map slot (key `Arc<str>` + entry) is
/// 56 bytes, like a `DashMap<String, Bytes>`'s.
struct Entry {
    value: Bytes,
    /// The expiry (clock nanoseconds, 0: never) in the low 62 bits, and the
    /// S3-FIFO read counter (0..=3) in the top 2. Readers bump the counter
    /// under the shard's read lock with a plain load and store (a lost
    /// increment is harmless); the expiry only changes under the write lock,
    /// so a reader's store never undoes it.
    meta: AtomicU64,
}

/// The expiry bits of [`Entry::meta`]; also the latest expiry (146 years
/// after the clock's start), which TTLs saturate to.
const EXPIRY: u64 = (1 << 62) - 1;
/// One read in the counter bits of [`Entry::meta`].
const FREQ_ONE: u64 = 1 << 62;
/// The counter's cap (3) in [`Entry::meta`].
const FREQ_MAX: u64 = 3 << 62;

impl Entry {
    fn new(value: Bytes, expires_at: u64) -> Self {
        Entry {
            value,
            meta: AtomicU64::new(expires_at),
        }
    }

    fn expires_at(&self) -> u64 {
        self.meta.load(Relaxed) & EXPIRY
    }

    fn expired(&self, now: u64) -> bool {
        let at = self.expires_at();
        at != 0 && at <= now
    }

    /// Whether the entry has expired, reading the clock only when it has
    /// a TTL.
    fn expired_by(&self, clock: &dyn Clock) -> bool {
        let at = self.expires_at();
        at != 0 && at <= clock.now_nanos()
    }

    fn freq(&self) -> u8 {
        (self.meta.load(Relaxed) >> 62) as u8
    }

    /// Sets the read counter (callers hold at least the shard's read lock).
    fn set_freq(&self, freq: u8) {
        let meta = self.meta.load(Relaxed);
        self.meta
            .store((meta & EXPIRY) | (u64::from(freq.min(3)) << 62), Relaxed);
    }

    /// Sets the expiry, keeping the read counter (under the write lock).
    fn set_expiry(&mut self, expires_at: u64) {
        let meta = self.meta.get_mut();
        *meta = (*meta & !EXPIRY) | expires_at;
    }

    /// Replaces the value and expiry; `fresh` also zeroes the read counter
    /// (the old value had expired: the key starts over).
    fn replace(&mut self, value: Bytes, expires_at: u64, fresh: bool) {
        self.value = value;
        if fresh {
            *self.meta.get_mut() = expires_at;
        } else {
            self.set_expiry(expires_at);
        }
    }

    fn size(key: &str, value: &[u8]) -> usize {
        key.len() + value.len() + ENTRY_OVERHEAD
    }
}

struct Shared {
    map: DashMap<Arc<str>, Entry, KeyHasherBuilder>,
    queues: Option<Mutex<Queues>>,
    expiries: ExpiryIndex,
    config: MemoryConfig,
    clock: BackendClock,
    len: AtomicUsize,
    bytes: AtomicUsize,
    evictions: AtomicU64,
    expirations: AtomicU64,
    closed: AtomicBool,
}

/// Counters of a [`MemoryBackend`], from [`MemoryBackend::stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct MemoryStats {
    /// Live entries (expired ones not yet swept included).
    pub entries: usize,
    /// Bytes of keys plus values.
    pub bytes: usize,
    /// Entries evicted to stay within the bounds.
    pub evictions: u64,
    /// Expired entries removed (on read or by the sweeper).
    pub expirations: u64,
}

impl Default for MemoryBackend {
    fn default() -> Self {
        MemoryBackend::new()
    }
}

impl std::fmt::Debug for MemoryBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryBackend")
            .field("config", &self.shared.config)
            .field("stats", &self.stats())
            .finish()
    }
}

impl MemoryBackend {
    /// An unbounded backend with the default configuration.
    pub fn new() -> Self {
        MemoryBackend::with_config(MemoryConfig::default())
    }

    /// A backend with `config`.
    ///
    /// The sweeper is a task on the current tokio runtime; called outside a
    /// runtime, the backend has no sweeper (expired entries are still never
    /// returned, and are removed when read or evicted).
    pub fn with_config(config: MemoryConfig) -> Self {
        MemoryBackend::with_backend_clock(config, BackendClock::System(SystemClock::default()))
    }

    /// A backend with `config` and a clock of your choice (a
    /// [`MockClock`](crate::MockClock) in tests).
    pub fn with_clock(config: MemoryConfig, clock: Arc<dyn Clock>) -> Self {
        MemoryBackend::with_backend_clock(config, BackendClock::Given(clock))
    }

    fn with_backend_clock(config: MemoryConfig, clock: BackendClock) -> Self {
        let shared = Arc::new(Shared {
            map: DashMap::with_hasher(KeyHasherBuilder::default()),
            queues: config.bounded().then(|| Mutex::new(Queues::default())),
            expiries: ExpiryIndex::default(),
            config,
            clock,
            len: AtomicUsize::new(0),
            bytes: AtomicUsize::new(0),
            evictions: AtomicU64::new(0),
            expirations: AtomicU64::new(0),
            closed: AtomicBool::new(false),
        });
        let (stop, stopped) = watch::channel(false);
        if let (Some(every), Ok(handle)) = (
            shared.config.sweep_interval(),
            tokio::runtime::Handle::try_current(),
        ) {
            handle.spawn(sweeper(Arc::downgrade(&shared), every, stopped));
        }
        MemoryBackend { shared, stop }
    }

    /// The current counters.
    pub fn stats(&self) -> MemoryStats {
        MemoryStats {
            entries: self.shared.len.load(Relaxed),
            bytes: self.shared.bytes.load(Relaxed),
            evictions: self.shared.evictions.load(Relaxed),
            expirations: self.shared.expirations.load(Relaxed),
        }
    }

    /// Removes every expired entry now; returns how many. The sweeper calls
    /// this periodically.
    pub fn sweep(&self) -> usize {
        self.shared.sweep()
    }

    /// The value of `key`, without going through `async` (the same as
    /// [`CacheBackend::get`]).
    ///
    /// # Errors
    ///
    /// `InvalidKey` for an invalid key; `Closed` after `close()`.
    #[inline]
    pub fn get_sync(&self, key: &str) -> Result<Option<Bytes>> {
        self.shared.checked_read(key)
    }

    /// Writes `value` under `key`, without going through `async` (the same
    /// as [`CacheBackend::set`]).
    ///
    /// # Errors
    ///
    /// `InvalidKey`, `InvalidValue` (over `max_value_size`), `Closed`.
    #[inline]
    pub fn set_sync(&self, key: &str, value: Bytes, opts: SetOptions) -> Result<bool> {
        if !self.shared.usable(key) {
            return Err(self.shared.refusal(key, "set"));
        }
        if value.len() > self.max_value_size() {
            return Err(self.shared.too_big(&value, self.max_value_size(), "set"));
        }
        Ok(self.shared.write(key, value, opts))
    }

    #[inline]
    fn max_value_size(&self) -> usize {
        let c = &self.shared.config;
        c.max_bytes
            .map_or(c.max_value_size, |b| b.min(c.max_value_size))
    }
}

async fn sweeper(shared: Weak<Shared>, every: Duration, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            // `close()` sends, dropping the backend drops the sender: either ends us.
            _ = stop.changed() => return,
        }
        match shared.upgrade() {
            Some(shared) => {
                shared.sweep();
            }
            None => return,
        }
    }
}

/// What a read found under a key: what it made of a live value (its
/// `Bytes`, cloned, or what a lender's reader made of them), or none.
enum Found<T> {
    Live(T),
    Expired,
    Missing,
}

impl Shared {
    fn now(&self) -> u64 {
        self.clock.now_nanos()
    }

    /// The fast check of every call: the key is valid and the backend
    /// open. [`Shared::refusal`] says why not.
    #[inline(always)]
    fn usable(&self, key: &str) -> bool {
        self.usable_len(key.len())
    }

    /// [`usable`](Shared::usable) of a key of `len` bytes.
    #[inline(always)]
    fn usable_len(&self, len: usize) -> bool {
        key_len_fits(len, MAX_KEY_LEN) && !self.closed.load(Relaxed)
    }

    /// The error of a call that [`Shared::usable`] refused.
    #[cold]
    #[inline(never)]
    fn refusal(&self, key: &str, op: &'static str) -> Error {
        match self.check(key, op) {
            Err(e) => e,
            Ok(()) => Error::new(ErrorKind::Backend, "refused").context("memory", op),
        }
    }

    #[cold]
    #[inline(never)]
    fn too_big(&self, value: &[u8], max: usize, op: &'static str) -> Error {
        match check_value(value, max) {
            Err(e) => e.context("memory", op),
            Ok(()) => Error::new(ErrorKind::Backend, "refused").context("memory", op),
        }
    }

    fn check(&self, key: &str, op: &'static str) -> Result<()> {
        if self.closed.load(Relaxed) {
            return Err(
                Error::new(ErrorKind::Closed, "the memory backend is closed").context("memory", op),
            );
        }
        check_key(key, MAX_KEY_LEN).map_err(|e| e.context("memory", op))
    }

    fn check_pattern(&self, pattern: &str, op: &'static str) -> Result<()> {
        if self.closed.load(Relaxed) {
            return Err(
                Error::new(ErrorKind::Closed, "the memory backend is closed").context("memory", op),
            );
        }
        check_pattern(pattern, MAX_KEY_LEN).map_err(|e| e.context("memory", op))
    }

    fn expiry(&self, ttl: Option<Duration>) -> u64 {
        match ttl {
            None => 0,
            Some(d) => self
                .now()
                .saturating_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
                .clamp(1, EXPIRY),
        }
    }

    /// [`read`](Shared::read) of a key [`usable`](Shared::usable) checked:
    /// `get_sync` and `get_now`.
    #[inline(always)]
    fn checked_read(&self, key: &str) -> Result<Option<Bytes>> {
        if !self.usable(key) {
            return Err(self.refusal(key, "get"));
        }
        Ok(self.read(key))
    }

    /// Reads a live value, removing it if expired.
    #[inline(always)]
    fn read(&self, key: &str) -> Option<Bytes> {
        match self.find(
            self.map.hasher().hash_key(key),
            |stored| stored == key,
            Bytes::clone,
        ) {
            Found::Live(value) => Some(value),
            Found::Expired => {
                self.remove_expired(key);
                None
            }
            Found::Missing => None,
        }
    }

    /// [`checked_read`](Shared::checked_read) of the key `head` followed
    /// by `tail`, hashed and compared where the two lie (not joined); a
    /// live value is given to `hit` under the shard's read lock.
    #[inline(always)]
    fn checked_read_joined<T>(
        &self,
        head: &str,
        tail: &str,
        hit: impl FnOnce(&Bytes) -> T,
    ) -> Result<Option<T>> {
        let len = head.len() + tail.len();
        if !self.usable_len(len) {
            return Err(self.refusal(&format!("{head}{tail}"), "get"));
        }
        let found = match ShortKey::joined(head, tail) {
            // Most keys: hashed and compared from the words read once.
            Some(short) => self.find(
                self.map.hasher().hash_short(&short),
                |stored| short.is(stored),
                hit,
            ),
            None => self.find(
                self.map.hasher().hash_joined(head, tail),
                |stored| {
                    let stored = stored.as_bytes();
                    stored.len() == len
                        && stored[..head.len()] == *head.as_bytes()
                        && stored[head.len()..] == *tail.as_bytes()
                },
                hit,
            ),
        };
        Ok(match found {
            Found::Live(value) => Some(value),
            Found::Expired => {
                self.remove_expired(&format!("{head}{tail}"));
                None
            }
            Found::Missing => None,
        })
    }

    /// The entry under `hash` whose key `is_key` accepts, as a read finds
    /// it (a live one counted as read, its value given to `hit` under the
    /// shard's read lock); the lock is released on return, so an expired
    /// entry is removed after it.
    ///
    /// Through the shard itself (dashmap's raw API), not `DashMap::get`:
    /// the same hash, shard, read lock and probe, but inlined here, where
    /// `DashMap::get` was a call that called the hasher (callgrind: a
    /// direct read 255 -> 226 instructions, through `dyn` 283 -> 253).
    #[inline(always)]
    fn find<T>(
        &self,
        hash: u64,
        is_key: impl Fn(&str) -> bool,
        hit: impl FnOnce(&Bytes) -> T,
    ) -> Found<T> {
        // As `DashMap::get` finds the shard (`hash_usize` is this hash).
        let shard = self.map.shards()[self.map.determine_shard(hash as usize)].read();
        let Some((_, entry)) = shard.get(hash, |(stored, _)| is_key(stored)) else {
            return Found::Missing;
        };
        let entry = entry.get();
        let meta = entry.meta.load(Relaxed);
        let expires_at = meta & EXPIRY;
        if expires_at == 0 || self.clock.before(expires_at) {
            if meta < FREQ_MAX {
                entry.meta.store(meta + FREQ_ONE, Relaxed);
            }
            return Found::Live(hit(&entry.value));
        }
        Found::Expired
    }

    fn remove_expired(&self, key: &str) {
        let now = self.now();
        if let Some((k, e)) = self.map.remove_if(key, |_, e| e.expired(now)) {
            self.account_removed(&k, &e);
            self.expirations.fetch_add(1, Relaxed);
        }
    }

    fn account_removed(&self, key: &str, entry: &Entry) {
        self.len.fetch_sub(1, Relaxed);
        self.bytes
            .fetch_sub(Entry::size(key, &entry.value), Relaxed);
    }

    /// Writes; returns whether it wrote. Runs eviction when bounded.
    #[inline]
    fn write(&self, key: &str, value: Bytes, opts: SetOptions) -> bool {
        if opts.ttl.is_some_and(|d| d.is_zero()) {
            if opts.mode == SetMode::Always {
                self.remove(key);
            }
            return false;
        }
        let expires_at = self.expiry(opts.ttl);
        let new_size = Entry::size(key, &value);
        // Fast path: the key is there. Update it in place under the shard's
        // write lock: no key allocation, no queue lock (the entry keeps its
        // place in the eviction queues).
        if let Some(mut entry) = self.map.get_mut(key) {
            let live = !entry.expired_by(&self.clock);
            if live && opts.mode == SetMode::IfAbsent {
                return false;
            }
            let old_size = Entry::size(key, &entry.value);
            let old_expiry = entry.expires_at();
            entry.replace(value, expires_at, !live);
            let refile = ExpiryIndex::needs_filing(old_expiry, expires_at);
            let written = (refile || new_size > old_size).then(|| Arc::clone(entry.key()));
            drop(entry);
            if let (true, Some(item)) = (refile, &written) {
                self.expiries.file(Arc::clone(item), expires_at);
            }
            if new_size != old_size {
                self.bytes.fetch_add(new_size, Relaxed);
                self.bytes.fetch_sub(old_size, Relaxed);
                if new_size > old_size {
                    self.evict_over(None, written.as_ref());
                }
            }
            return true;
        }
        let inserted: Option<Item> = match self.map.entry(Arc::from(key)) {
            // Written by another thread since the look-up above.
            MapEntry::Occupied(mut occupied) => {
                let live = !occupied.get().expired_by(&self.clock);
                if live && opts.mode == SetMode::IfAbsent {
                    return false;
                }
                let entry = occupied.get_mut();
                let old_size = Entry::size(key, &entry.value);
                let old_expiry = entry.expires_at();
                entry.replace(value, expires_at, !live);
                if ExpiryIndex::needs_filing(old_expiry, expires_at) {
                    self.expiries.file(Arc::clone(occupied.key()), expires_at);
                }
                self.bytes.fetch_add(new_size, Relaxed);
                self.bytes.fetch_sub(old_size, Relaxed);
                None
            }
            MapEntry::Vacant(vacant) => {
                let item = Arc::clone(vacant.key());
                vacant.insert(Entry::new(value, expires_at));
                self.expiries.file(Arc::clone(&item), expires_at);
                self.len.fetch_add(1, Relaxed);
                self.bytes.fetch_add(new_size, Relaxed);
                Some(item)
            }
        };
        self.evict_if_over(inserted);
        true
    }

    /// Queues a newly inserted item (if any) and evicts while over the
    /// bounds, never the item just written. Takes the queue lock only when
    /// there is something to do.
    fn evict_if_over(&self, inserted: Option<Item>) {
        self.evict_over(inserted.clone(), inserted.as_ref());
    }

    /// Queues `inserted` (if any) and evicts while over the bounds, sparing
    /// `written`: a write that returned `Ok` is readable.
    fn evict_over(&self, inserted: Option<Item>, written: Option<&Item>) {
        let Some(queues) = &self.queues else {
            return;
        };
        if inserted.is_none() && !self.over_capacity() {
            return;
        }
        let mut queues = queues.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(item) = inserted {
            let hash = self.map.hasher().hash_one(&*item);
            queues.insert(item, hash);
        }
        queues.evict(self, written, |k| self.map.hasher().hash_one(k));
    }

    fn remove(&self, key: &str) -> bool {
        match self.map.remove(key) {
            Some((k, e)) => {
                self.account_removed(&k, &e);
                !e.expired(self.now())
            }
            None => false,
        }
    }

    /// Removes the entries whose expiry has come, from the expiry index:
    /// the cost is what has expired (plus keys whose expiry moved later,
    /// which are filed again), not the size of the map. Each removal holds
    /// one shard's lock for one entry.
    fn sweep(&self) -> usize {
        let now = self.now();
        let mut removed = 0;
        for item in self.expiries.take_due(now) {
            let expiry = match self.map.get(&*item) {
                Some(entry) if Arc::ptr_eq(entry.key(), &item) => entry.expires_at(),
                // Deleted, or deleted and written again (filed anew then).
                _ => continue,
            };
            if expiry == 0 {
                continue;
            }
            if expiry > now {
                // Its expiry moved later since it was filed.
                self.expiries.file(item, expiry);
                continue;
            }
            let gone = self
                .map
                .remove_if(&*item, |k, e| Arc::ptr_eq(k, &item) && e.expired(now));
            match gone {
                Some((k, e)) => {
                    self.account_removed(&k, &e);
                    removed += 1;
                }
                // Written again between the look-up and the removal.
                None => {
                    if let Some(entry) = self.map.get(&*item) {
                        if Arc::ptr_eq(entry.key(), &item) && entry.expires_at() != 0 {
                            let expiry = entry.expires_at();
                            drop(entry);
                            self.expiries.file(item, expiry);
                        }
                    }
                }
            }
        }
        self.expirations.fetch_add(removed as u64, Relaxed);
        removed
    }

    fn matching(&self, pattern: &str) -> Vec<Arc<str>> {
        let now = self.now();
        self.map
            .iter()
            .filter(|e| !e.value().expired(now) && glob_match(pattern, e.key()))
            .map(|e| Arc::clone(e.key()))
            .collect()
    }
}

impl Store for Shared {
    fn freq(&self, item: &Item) -> Option<u8> {
        let entry = self.map.get(&**item)?;
        Arc::ptr_eq(entry.key(), item).then(|| entry.freq())
    }

    fn set_freq(&self, item: &Item, freq: u8) {
        if let Some(entry) = self.map.get(&**item) {
            if Arc::ptr_eq(entry.key(), item) {
                entry.set_freq(freq);
            }
        }
    }

    fn evict(&self, item: &Item) {
        if let Some((k, e)) = self.map.remove_if(&**item, |k, _| Arc::ptr_eq(k, item)) {
            self.account_removed(&k, &e);
            self.evictions.fetch_add(1, Relaxed);
        }
    }

    fn over_capacity(&self) -> bool {
        let c = &self.config;
        c.max_entries.is_some_and(|m| self.len.load(Relaxed) > m)
            || c.max_bytes.is_some_and(|m| self.bytes.load(Relaxed) > m)
    }

    fn live(&self) -> usize {
        self.len.load(Relaxed)
    }
}

/// Parses an integer exactly as Redis's `string2ll` does: `0`, or an
/// optional `-` and digits without a leading zero, fitting in an `i64`.
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

fn not_integer() -> Error {
    Error::new(
        ErrorKind::InvalidValue,
        "value is not an integer or out of range",
    )
    .context("memory", "incr")
}

#[async_trait]
impl CacheBackend for MemoryBackend {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn capabilities(&self) -> Capabilities {
        let mut caps = Capabilities::default();
        caps.max_key_len = MAX_KEY_LEN;
        caps.max_value_size = self.max_value_size();
        caps.sub_second_ttl = true;
        caps.atomic_incr = true;
        caps.pattern_delete = true;
        caps.shared = false;
        caps.evicts = self.shared.config.bounded();
        caps
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        self.get_sync(key)
    }

    fn get_now(&self, key: &str) -> Option<Result<Option<Bytes>>> {
        // Not through `get_sync`, which stays a call here: this is the whole
        // read of a caller through `dyn CacheBackend`.
        Some(self.shared.checked_read(key))
    }

    fn get_now_joined(&self, head: &str, tail: &str) -> Option<Result<Option<Bytes>>> {
        Some(self.shared.checked_read_joined(head, tail, Bytes::clone))
    }

    /// `read` is called under the shard's read lock: writers of the keys
    /// of that shard wait for it.
    fn read_now_joined(
        &self,
        head: &str,
        tail: &str,
        read: &mut dyn FnMut(&Bytes),
    ) -> Option<Result<bool>> {
        Some(
            self.shared
                .checked_read_joined(head, tail, read)
                .map(|found| found.is_some()),
        )
    }

    async fn set(&self, key: &str, value: Bytes, opts: SetOptions) -> Result<bool> {
        self.set_sync(key, value, opts)
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        self.shared.check(key, "delete")?;
        Ok(self.shared.remove(key))
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        self.shared.check(key, "exists")?;
        let now = self.shared.now();
        Ok(self.shared.map.get(key).is_some_and(|e| !e.expired(now)))
    }

    async fn ttl(&self, key: &str) -> Result<KeyTtl> {
        self.shared.check(key, "ttl")?;
        let now = self.shared.now();
        Ok(match self.shared.map.get(key) {
            Some(e) if e.expires_at() == 0 => KeyTtl::Persistent,
            Some(e) if !e.expired(now) => {
                KeyTtl::Expires(Duration::from_nanos(e.expires_at() - now))
            }
            _ => KeyTtl::Missing,
        })
    }

    async fn expire(&self, key: &str, ttl: Option<Duration>) -> Result<bool> {
        self.shared.check(key, "expire")?;
        if ttl.is_some_and(|d| d.is_zero()) {
            return Ok(self.shared.remove(key));
        }
        let now = self.shared.now();
        let expires_at = self.shared.expiry(ttl);
        Ok(match self.shared.map.get_mut(key) {
            Some(mut e) if !e.expired(now) => {
                let old = e.expires_at();
                e.set_expiry(expires_at);
                if ExpiryIndex::needs_filing(old, expires_at) {
                    let item = Arc::clone(e.key());
                    drop(e);
                    self.shared.expiries.file(item, expires_at);
                }
                true
            }
            _ => false,
        })
    }

    async fn incr(&self, key: &str, delta: i64, ttl: Option<Duration>) -> Result<i64> {
        self.shared.check(key, "incr")?;
        let now = self.shared.now();
        let shared = &self.shared;
        let created: (i64, Option<Item>) = match shared.map.entry(Arc::from(key)) {
            MapEntry::Occupied(mut occupied) if !occupied.get().expired(now) => {
                let entry = occupied.get_mut();
                let current = parse_redis_int(&entry.value).ok_or_else(not_integer)?;
                let next = current.checked_add(delta).ok_or_else(|| {
                    Error::new(
                        ErrorKind::InvalidValue,
                        "increment or decrement would overflow",
                    )
                    .context("memory", "incr")
                })?;
                let bytes = Bytes::from(next.to_string());
                let old = entry.value.len();
                shared.bytes.fetch_add(bytes.len(), Relaxed);
                shared.bytes.fetch_sub(old, Relaxed);
                entry.value = bytes;
                return Ok(next);
            }
            MapEntry::Occupied(mut occupied) => {
                // Expired: start over, as if missing.
                let value = Bytes::from(delta.to_string());
                let expires_at = shared.expiry(ttl);
                let entry = occupied.get_mut();
                let old_expiry = entry.expires_at();
                shared.bytes.fetch_add(value.len(), Relaxed);
                shared.bytes.fetch_sub(entry.value.len(), Relaxed);
                entry.replace(value, expires_at, true);
                if ExpiryIndex::needs_filing(old_expiry, expires_at) {
                    shared.expiries.file(Arc::clone(occupied.key()), expires_at);
                }
                (delta, None)
            }
            MapEntry::Vacant(vacant) => {
                let value = Bytes::from(delta.to_string());
                let size = Entry::size(key, &value);
                let item = Arc::clone(vacant.key());
                let expires_at = shared.expiry(ttl);
                vacant.insert(Entry::new(value, expires_at));
                shared.expiries.file(Arc::clone(&item), expires_at);
                shared.len.fetch_add(1, Relaxed);
                shared.bytes.fetch_add(size, Relaxed);
                (delta, Some(item))
            }
        };
        if created.1.is_some() {
            shared.evict_if_over(created.1);
        }
        Ok(created.0)
    }

    async fn health(&self) -> Result<Health> {
        let started = Instant::now();
        if self.shared.closed.load(Relaxed) {
            return Ok(
                Health::new(HealthStatus::Unhealthy, started.elapsed()).with_detail("closed", true)
            );
        }
        let stats = self.stats();
        let mut health = Health::new(HealthStatus::Healthy, started.elapsed())
            .with_detail("entries", stats.entries)
            .with_detail("bytes", stats.bytes)
            .with_detail("evictions", stats.evictions)
            .with_detail("expirations", stats.expirations);
        if let Some(max) = self.shared.config.max_entries {
            health = health.with_detail("max_entries", max);
        }
        if let Some(max) = self.shared.config.max_bytes {
            health = health.with_detail("max_bytes", max);
        }
        Ok(health)
    }

    async fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Bytes>>> {
        keys.iter().map(|k| self.get_sync(k)).collect()
    }

    async fn set_many(&self, items: &[(&str, Bytes)], ttl: Option<Duration>) -> Result<()> {
        for (key, value) in items {
            self.shared.check(key, "set_many")?;
            check_value(value, self.max_value_size())
                .map_err(|e| e.context("memory", "set_many"))?;
        }
        for (key, value) in items {
            self.shared.write(key, value.clone(), SetOptions::ttl(ttl));
        }
        Ok(())
    }

    async fn delete_many(&self, keys: &[&str]) -> Result<u64> {
        for key in keys {
            self.shared.check(key, "delete_many")?;
        }
        Ok(keys.iter().map(|k| u64::from(self.shared.remove(k))).sum())
    }

    async fn scan(&self, pattern: &str) -> Result<Vec<String>> {
        self.shared.check_pattern(pattern, "scan")?;
        Ok(self
            .shared
            .matching(pattern)
            .iter()
            .map(|k| k.to_string())
            .collect())
    }

    async fn delete_matching(&self, pattern: &str) -> Result<u64> {
        self.shared.check_pattern(pattern, "delete_matching")?;
        let keys = self.shared.matching(pattern);
        Ok(keys.iter().map(|k| u64::from(self.shared.remove(k))).sum())
    }

    async fn clear(&self, namespace: &str) -> Result<u64> {
        check_namespace(namespace).map_err(|e| e.context("memory", "clear"))?;
        let now = self.shared.now();
        let keys: Vec<Arc<str>> = self
            .shared
            .map
            .iter()
            .filter(|e| e.key().starts_with(namespace))
            .map(|e| (Arc::clone(e.key()), e.value().expired(now)))
            .filter(|(_, expired)| !expired)
            .map(|(k, _)| k)
            .collect();
        Ok(keys.iter().map(|k| u64::from(self.shared.remove(k))).sum())
    }

    async fn close(&self) -> Result<()> {
        self.shared.closed.store(true, Relaxed);
        self.stop.send_replace(true);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_integers_like_redis() {
        for (s, v) in [("0", Some(0)), ("-7", Some(-7)), ("42", Some(42))] {
            assert_eq!(parse_redis_int(s.as_bytes()), v, "{s}");
        }
        for s in [
            "",
            "-",
            "-0",
            "01",
            "+1",
            " 1",
            "1 ",
            "1.0",
            "9223372036854775808",
        ] {
            assert_eq!(parse_redis_int(s.as_bytes()), None, "{s}");
        }
        assert_eq!(parse_redis_int(b"-9223372036854775808"), Some(i64::MIN));
    }

    /// The read goes to the shard and bucket itself (not through
    /// `DashMap::get`): at a size where each shard's table is many groups
    /// wide, every key written is found, by both read paths, with its own
    /// value (a hash or shard choice that differs from dashmap's loses
    /// keys here, not in a small map whose table is one group).
    #[test]
    fn every_key_of_a_large_map_reads_back_its_own_value() {
        let backend =
            MemoryBackend::with_config(MemoryConfig::default().with_sweep_interval(Duration::ZERO));
        let n = 20_000;
        for i in 0..n {
            let value = Bytes::from(i.to_string());
            backend
                .set_sync(&format!("user:{i}"), value, SetOptions::default())
                .unwrap();
        }
        let found = (0..n)
            .filter(|i| {
                let key = format!("user:{i}");
                let want = Some(Bytes::from(i.to_string()));
                backend.get_sync(&key).unwrap() == want
                    && backend.get_now(&key).unwrap().unwrap() == want
            })
            .count();
        assert_eq!(found, n);
        assert_eq!(backend.get_sync("user:absent").unwrap(), None);
    }

    /// A read of a key in two parts answers what `get_now` of the joined
    /// key answers, wherever the key is split: hits, misses, an expired
    /// key (removed and counted), refusals.
    #[test]
    fn a_read_in_two_parts_answers_as_the_read_of_the_joined_key() {
        let clock = crate::MockClock::new();
        let backend = MemoryBackend::with_clock(
            MemoryConfig::default().with_sweep_interval(Duration::ZERO),
            Arc::new(clock.clone()),
        );
        let keys = [
            "cache:user:000123",
            "cache:user:000124",
            "app:k",
            "a",
            "cache:a-longer-key:id-42",
        ];
        for key in keys {
            backend
                .set_sync(key, Bytes::from(key.to_uppercase()), SetOptions::default())
                .unwrap();
        }
        let joined = |head: &str, tail: &str| {
            backend
                .get_now_joined(head, tail)
                .expect("the memory backend answers now")
                .map_err(|e| e.kind())
        };
        let whole = |key: &str| backend.get_now(key).unwrap().map_err(|e| e.kind());
        for key in keys
            .iter()
            .chain(&["cache:user:000125", "cache:user:00012", "cache:", "b"])
        {
            for split in 0..=key.len() {
                let (head, tail) = key.split_at(split);
                assert_eq!(joined(head, tail), whole(key), "{head:?} + {tail:?}");
            }
        }
        assert_eq!(
            joined("cache:", "user:000123"),
            Ok(Some(Bytes::from("CACHE:USER:000123")))
        );
        assert_eq!(joined("cache:", "user:000125"), Ok(None));
        // Refused as `get_now` refuses.
        let long = "k".repeat(MAX_KEY_LEN);
        assert_eq!(joined(&long, "x"), whole(&format!("{long}x")));
        assert_eq!(joined(&long, "x"), Err(ErrorKind::InvalidKey));
        assert_eq!(joined("", ""), Err(ErrorKind::InvalidKey));
        // An expired key: not served, removed, counted once.
        backend
            .set_sync(
                "cache:ttl",
                Bytes::from_static(b"v"),
                SetOptions::ttl(Some(Duration::from_secs(1))),
            )
            .unwrap();
        assert_eq!(joined("cache:", "ttl"), Ok(Some(Bytes::from_static(b"v"))));
        clock.advance(Duration::from_secs(2));
        assert_eq!(joined("cache:", "ttl"), Ok(None));
        assert_eq!(backend.stats().expirations, 1);
        assert!(backend.shared.map.get("cache:ttl").is_none());
    }

    #[test]
    fn read_counter_saturates_without_touching_the_expiry() {
        let clock = crate::MockClock::new();
        let backend = MemoryBackend::with_clock(
            MemoryConfig::default().with_sweep_interval(Duration::ZERO),
            Arc::new(clock.clone()),
        );
        let ttl = SetOptions::ttl(Some(Duration::from_millis(500)));
        backend
            .set_sync("k", Bytes::from_static(b"v"), ttl)
            .unwrap();
        let meta = |b: &MemoryBackend| {
            let e = b.shared.map.get("k").unwrap();
            (e.freq(), e.expires_at())
        };
        assert_eq!(meta(&backend), (0, 500_000_000));
        for _ in 0..10 {
            backend.get_sync("k").unwrap().unwrap();
        }
        assert_eq!(meta(&backend), (3, 500_000_000));
        // A rewrite of a live key keeps its counter, takes the new expiry.
        let longer = SetOptions::ttl(Some(Duration::from_secs(1)));
        backend
            .set_sync("k", Bytes::from_static(b"w"), longer)
            .unwrap();
        assert_eq!(meta(&backend), (3, 1_000_000_000));
        // After expiry the key starts over.
        clock.advance(Duration::from_secs(2));
        backend
            .set_sync("k", Bytes::from_static(b"x"), longer)
            .unwrap();
        assert_eq!(meta(&backend), (0, 3_000_000_000));
    }

    #[test]
    fn huge_ttls_saturate_below_the_counter_bits() {
        let backend = MemoryBackend::with_config(MemoryConfig::default());
        let forever = SetOptions::ttl(Some(Duration::MAX));
        backend
            .set_sync("k", Bytes::from_static(b"v"), forever)
            .unwrap();
        for _ in 0..5 {
            assert!(backend.get_sync("k").unwrap().is_some());
        }
        let e = backend.shared.map.get("k").unwrap();
        assert_eq!((e.freq(), e.expires_at()), (3, EXPIRY));
    }

    /// Rewriting a key in place with a value of another size keeps the
    /// byte count exact, and growing it over `max_bytes` evicts another key.
    #[test]
    fn in_place_rewrites_keep_the_byte_count_exact() {
        let backend = MemoryBackend::new();
        let set = |key: &str, len: usize| {
            backend
                .set_sync(key, Bytes::from(vec![b'v'; len]), SetOptions::default())
                .unwrap()
        };
        assert!(set("k", 1));
        assert_eq!(backend.stats().bytes, Entry::size("k", b"v"));
        assert!(set("k", 10));
        assert_eq!(backend.stats().bytes, 1 + 10);
        assert!(set("k", 3));
        assert_eq!(backend.stats().bytes, 1 + 3);

        let each = Entry::size("k0", &[0; 40]);
        let bounded = MemoryBackend::with_config(
            MemoryConfig::default()
                .with_max_bytes(3 * each)
                .with_sweep_interval(Duration::ZERO),
        );
        for key in ["k0", "k1", "k2"] {
            bounded
                .set_sync(key, Bytes::from(vec![0; 40]), SetOptions::default())
                .unwrap();
        }
        assert_eq!(bounded.stats().bytes, 3 * each);
        assert_eq!(bounded.stats().evictions, 0);
        bounded
            .set_sync("k0", Bytes::from(vec![0; 41]), SetOptions::default())
            .unwrap();
        let stats = bounded.stats();
        assert_eq!((stats.entries, stats.evictions), (2, 1), "{stats:?}");
        assert_eq!(stats.bytes, Entry::size("k0", &[0; 41]) + each);
        assert_eq!(bounded.get_sync("k0").unwrap().map(|v| v.len()), Some(41));
    }

    fn swept_backend() -> (MemoryBackend, crate::MockClock) {
        let clock = crate::MockClock::new();
        let backend = MemoryBackend::with_clock(
            MemoryConfig::default().with_sweep_interval(Duration::ZERO),
            Arc::new(clock.clone()),
        );
        (backend, clock)
    }

    /// A key whose expiry moved later to exactly the end of the slot it was
    /// filed in has expired when that slot is swept (`expires_at <= now`).
    #[test]
    fn sweep_removes_a_key_expiring_exactly_now() {
        let (backend, clock) = swept_backend();
        let slot = crate::expiry::SLOT_NANOS;
        let ttl = |nanos| SetOptions::ttl(Some(Duration::from_nanos(nanos)));
        backend
            .set_sync("k", Bytes::from_static(b"v"), ttl(1))
            .unwrap();
        // Later expiry: not filed again, found when the first slot is due.
        backend
            .set_sync("k", Bytes::from_static(b"v"), ttl(slot))
            .unwrap();
        clock.advance(Duration::from_nanos(slot));
        assert_eq!(backend.sweep(), 1);
        assert_eq!(backend.stats().entries, 0);
        assert_eq!(backend.shared.expiries.filed(), 0);
    }

    /// A key deleted and written again is filed anew; the sweep drops the
    /// old filing instead of filing it again under the new expiry.
    #[test]
    fn sweep_drops_the_filing_of_a_deleted_key() {
        let (backend, clock) = swept_backend();
        let ttl = |secs| SetOptions::ttl(Some(Duration::from_secs(secs)));
        backend
            .set_sync("k", Bytes::from_static(b"v"), ttl(1))
            .unwrap();
        assert!(backend.shared.remove("k"));
        backend
            .set_sync("k", Bytes::from_static(b"w"), ttl(100))
            .unwrap();
        assert_eq!(backend.shared.expiries.filed(), 2);
        clock.advance(Duration::from_secs(2));
        assert_eq!(backend.sweep(), 0);
        assert_eq!(backend.shared.expiries.filed(), 1);
        assert_eq!(
            backend.get_sync("k").unwrap(),
            Some(Bytes::from_static(b"w"))
        );
    }

    #[test]
    fn deleted_keys_do_not_grow_the_queues_forever() {
        let backend = MemoryBackend::with_config(MemoryConfig::default().with_max_entries(100));
        for i in 0..50_000 {
            let key = format!("k{i}");
            backend
                .set_sync(&key, Bytes::from_static(b"v"), SetOptions::default())
                .unwrap();
            backend.shared.remove(&key);
        }
        let queued = backend
            .shared
            .queues
            .as_ref()
            .unwrap()
            .lock()
            .unwrap()
            .queued();
        assert!(queued <= 2 * 100 + 1024 + 1, "{queued} items queued");
    }
}
