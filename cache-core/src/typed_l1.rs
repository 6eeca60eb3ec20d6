//! `TypedL1`: decoded values in front of a [`Cache`], returned as `Arc<T>`
//! without decoding.
//!
//! It uses `Cache`'s public API only, and the crate's coarse clock.

use std::any::Any;
use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::coarse::Ticks;
use crate::{Cache, CacheKey, Codec, Result, Ttl};

/// Shards of the decoded map (each its own lock).
const SHARDS: usize = 64;

/// How a [`TypedL1`] keeps its decoded copies.
///
/// # Examples
///
/// ```
/// use cache::TypedL1Config;
/// use std::time::Duration;
///
/// let config = TypedL1Config::default()
///     .with_max_entries(50_000)
///     .with_max_ttl(Duration::from_secs(10));
/// assert_eq!(config.max_entries, 50_000);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct TypedL1Config {
    /// At most this many decoded values are kept (default 10,000); beyond
    /// it, inserting evicts an arbitrary value of the same shard.
    pub max_entries: usize,
    /// The longest a decoded copy is served (default 60 s): the bound on
    /// how long a change made by *another* instance (or written to the
    /// backend directly) can go unseen here, as `Tiered`'s `l1_max_ttl`.
    /// A copy never outlives the stored value's own TTL.
    ///
    /// The hit path reads a coarse clock (a precise read costs more than
    /// the rest of a hit), which lags by up to its resolution: a copy is
    /// served 20 ms less than the lifetime it is given, and one whose
    /// lifetime is 20 ms or less is not kept.
    pub max_ttl: Duration,
    /// How often a category's generation is checked again (one full key of
    /// the category rendered through the `Cache`), to see category
    /// invalidations made elsewhere (default 1 s, `Cache`'s own generation
    /// refresh). On the coarse clock too: 20 ms early, and a recheck of
    /// 20 ms or less checks on every read.
    pub recheck: Duration,
}

impl Default for TypedL1Config {
    fn default() -> Self {
        TypedL1Config {
            max_entries: 10_000,
            max_ttl: Duration::from_secs(60),
            recheck: crate::DEFAULT_GENERATION_REFRESH,
        }
    }
}

impl TypedL1Config {
    /// Sets the most decoded values kept.
    #[must_use]
    pub fn with_max_entries(mut self, max_entries: usize) -> Self {
        self.max_entries = max_entries;
        self
    }

    /// Sets the longest a decoded copy is served.
    #[must_use]
    pub fn with_max_ttl(mut self, max_ttl: Duration) -> Self {
        self.max_ttl = max_ttl;
        self
    }

    /// Sets how often a category's generation is checked again.
    #[must_use]
    pub fn with_recheck(mut self, recheck: Duration) -> Self {
        self.recheck = recheck;
        self
    }
}

/// A decoded-value L1 over a [`Cache`]: a hit returns the `Arc<T>` decoded
/// earlier, with no backend call and no decoding.
///
/// On a typed hit `Cache::get::<T>` spends most of its time decoding (a
/// ~200-byte struct takes 130-350 ns to decode from JSON, 5-15 times a map
/// lookup). `TypedL1` keeps the decoded values, shared as `Arc<T>`:
///
/// - `get::<T>`: a fresh copy of type `T` is returned as is. Otherwise the
///   value is read (and decoded) through the `Cache`, and kept until
///   `min(its remaining TTL, max_ttl)` (one more backend call, `ttl`).
/// - `set`, `delete`, `get_or_set`, `invalidate_category`,
///   `invalidate_matching`, `clear`: done by the `Cache`, and the copies
///   they affect are dropped (category-wide ones drop the whole category's
///   copies), so this instance never reads its own stale value.
/// - A read whose backend call overlapped a write made through this
///   `TypedL1` keeps no copy (the write might have lost the race).
/// - Category invalidations made by other instances are seen within
///   `recheck`: once per `recheck`, a read of the category renders its full
///   key through the `Cache` again, and a new generation drops every copy
///   of the category. Other changes made elsewhere are seen within
///   `max_ttl`, as with `Tiered`.
/// - L1 hits are counted in [`TypedL1::l1_hits`], not in the `Cache`'s
///   stats (which count the reads that reach it).
///
/// Values are immutable once shared: a `T` with interior mutability would
/// let one reader's change be seen by the others.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> cache::Result<()> {
/// use cache::{Cache, CacheKey, TypedL1, TypedL1Config};
/// use cache::memory::MemoryBackend;
/// use std::sync::Arc;
///
/// let cache = Cache::new(Arc::new(MemoryBackend::new()));
/// let l1 = TypedL1::new(cache, TypedL1Config::default());
/// let key = CacheKey::new("user", 1)?;
/// l1.set(&key, &"Ada".to_string()).await?;
/// let first: Arc<String> = l1.get(&key).await?.unwrap(); // decoded once
/// let again: Arc<String> = l1.get(&key).await?.unwrap(); // the same Arc
/// assert!(Arc::ptr_eq(&first, &again));
/// assert_eq!(l1.l1_hits(), 1);
/// # Ok(())
/// # }
/// ```
pub struct TypedL1<C: Codec = crate::AnyCodec> {
    cache: Cache<C>,
    config: TypedL1Config,
    hasher: KeyHasher,
    shards: Box<[Shard]>,
    per_shard: usize,
    /// Each category's generation check, shared by its copies.
    categories: RwLock<HashMap<String, Arc<CategoryCheck>>>,
}

/// What is known of a category's generation.
#[derive(Default)]
struct CategoryCheck {
    /// The head of its full keys (`{prefix}:{category}#{generation}`) when
    /// last checked.
    head: std::sync::Mutex<String>,
    /// Bumped when the head changes (or the category is invalidated here):
    /// copies made under an older version are not served.
    version: AtomicU64,
    /// Until when (a [`Ticks`] deadline) the head is trusted.
    valid_until: AtomicU64,
}

#[derive(Default)]
struct Shard {
    /// By the key's 64-bit hash; the slot holds the key, compared on
    /// every read (a hash collision is a miss, never another key's value).
    map: RwLock<HashMap<u64, Slot, BuildHasherDefault<PassThrough>>>,
    /// Bumped when a write through this `TypedL1` starts and ends.
    epoch: AtomicU64,
    /// Writes in flight.
    writing: AtomicU64,
    /// Reads answered from this shard's copies (per shard: the line the
    /// lock already dirtied, not one counter shared by every thread).
    hits: AtomicU64,
}

/// What [`TypedL1::load`] found.
enum Loaded<T> {
    /// A value, kept as a copy (or served from one).
    Kept(Arc<T>),
    /// A fresh value not kept: refresh-ahead wants the next reads to reach
    /// the cache (or it is about to expire).
    Due(Arc<T>),
    Missing,
}

enum Lookup<T> {
    Hit(Arc<T>),
    /// A fresh copy whose category generation must be checked again.
    Recheck,
    Miss,
}

/// Where a copy came from: its category's check and version. (The full
/// key it was read under need not be kept: a new generation changes the
/// category's head, and so its version.)
struct Origin {
    category: Arc<CategoryCheck>,
    version: u64,
}

struct Slot {
    key: CacheKey,
    value: Arc<dyn Any + Send + Sync>,
    /// When the copy stops being served.
    expires_at: Ticks,
    category: Arc<CategoryCheck>,
    /// `category.version` when the copy was made.
    version: u64,
}

/// The hash of a `u64` key is the key (already hashed by [`KeyHasher`]).
#[derive(Default)]
struct PassThrough(u64);

/// A keyed folded-multiply hasher (the family of foldhash, hashbrown's
/// default; the same as the memory backend's key hasher): SipHash costs
/// ~300 instructions on a `CacheKey`, more than the rest of a hit.
#[derive(Clone, Copy)]
struct KeyHasher {
    acc: u64,
    seed: u64,
}

impl KeyHasher {
    fn seeded() -> Self {
        let random = RandomState::new();
        KeyHasher {
            acc: random.hash_one(0x243f_6a88_85a3_08d3_u64),
            seed: random.hash_one(0x1319_8a2e_0370_7344_u64) | 1,
        }
    }

    fn fold(a: u64, b: u64) -> u64 {
        let product = u128::from(a) * u128::from(b);
        (product as u64) ^ ((product >> 64) as u64)
    }

    fn read8(bytes: &[u8], at: usize) -> u64 {
        let mut word = [0; 8];
        word.copy_from_slice(&bytes[at..at + 8]);
        u64::from_le_bytes(word)
    }

    fn read4(bytes: &[u8], at: usize) -> u64 {
        let mut word = [0; 4];
        word.copy_from_slice(&bytes[at..at + 4]);
        u64::from(u32::from_le_bytes(word))
    }
}

impl Hasher for KeyHasher {
    fn write(&mut self, bytes: &[u8]) {
        let len = bytes.len();
        // The length enters through a seed-dependent rotation.
        let mut acc = self.acc.rotate_left(len as u32).wrapping_add(len as u64);
        let (a, b) = if len <= 16 {
            if len >= 8 {
                (Self::read8(bytes, 0), Self::read8(bytes, len - 8))
            } else if len >= 4 {
                (Self::read4(bytes, 0), Self::read4(bytes, len - 4))
            } else if len > 0 {
                let lo = u64::from(bytes[0]) | (u64::from(bytes[len / 2]) << 8);
                (lo, u64::from(bytes[len - 1]))
            } else {
                (0, 0)
            }
        } else {
            let mut at = 0;
            while len - at > 16 {
                acc = Self::fold(
                    Self::read8(bytes, at) ^ acc ^ 0xa409_3822_299f_31d0,
                    Self::read8(bytes, at + 8) ^ self.seed,
                );
                at += 16;
            }
            (Self::read8(bytes, len - 16), Self::read8(bytes, len - 8))
        };
        self.acc = Self::fold(a ^ acc ^ 0xa409_3822_299f_31d0, b ^ self.seed);
    }

    fn write_u8(&mut self, i: u8) {
        self.acc = self.acc.wrapping_add(u64::from(i));
    }

    fn write_u32(&mut self, i: u32) {
        self.write_u64(u64::from(i));
    }

    fn write_u64(&mut self, i: u64) {
        self.acc = Self::fold(i ^ self.acc, self.seed ^ 0x0827_31d0_1c8a_4f53);
    }

    fn write_usize(&mut self, i: usize) {
        self.write_u64(i as u64);
    }

    fn finish(&self) -> u64 {
        Self::fold(self.acc ^ 0x243f_6a88_85a3_08d3, self.seed).rotate_left(23)
    }
}

impl Hasher for PassThrough {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, i: u64) {
        self.0 = i;
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// A write in flight on one shard; ends when dropped (also when the
/// write's future is dropped half-way).
struct Writing<'a>(&'a Shard);

impl Drop for Writing<'_> {
    fn drop(&mut self) {
        self.0.epoch.fetch_add(1, Relaxed);
        self.0.writing.fetch_sub(1, Relaxed);
    }
}

impl<C: Codec> fmt::Debug for TypedL1<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TypedL1")
            .field("cache", &self.cache)
            .field("config", &self.config)
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

impl<C: Codec> TypedL1<C> {
    /// A decoded L1 over `cache`.
    pub fn new(cache: Cache<C>, config: TypedL1Config) -> Self {
        TypedL1 {
            cache,
            config,
            hasher: KeyHasher::seeded(),
            shards: (0..SHARDS).map(|_| Shard::default()).collect(),
            per_shard: config.max_entries.div_ceil(SHARDS),
            categories: RwLock::new(HashMap::new()),
        }
    }

    /// The cache underneath (writes made on it directly bypass this L1's
    /// invalidation: use the methods of `TypedL1`).
    pub fn cache(&self) -> &Cache<C> {
        &self.cache
    }

    /// Reads answered from the decoded copies.
    pub fn l1_hits(&self) -> u64 {
        self.shards.iter().map(|s| s.hits.load(Relaxed)).sum()
    }

    /// Decoded copies held (expired ones not yet replaced included).
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| read(&s.map).len()).sum()
    }

    /// Whether no decoded copy is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn locate(&self, key: &CacheKey) -> (u64, &Shard) {
        let mut hasher = self.hasher;
        std::hash::Hash::hash(key, &mut hasher);
        let hash = hasher.finish();
        // Middle bits: a shard's map takes its control bytes from the top 7
        // bits and its buckets from the low ones; shards picked by the top
        // bits would leave their maps 2 control-byte values, not 128.
        (hash, &self.shards[(hash >> 32) as usize % SHARDS])
    }

    /// The fresh decoded copy of `key`, if this L1 holds one of type `T`,
    /// without calling the cache (no `await`, no decoding). A copy older
    /// than `recheck` is not returned here: [`get`](TypedL1::get) checks
    /// its category generation first.
    pub fn peek<T: Send + Sync + 'static>(&self, key: &CacheKey) -> Option<Arc<T>> {
        match self.lookup::<T>(key, Ticks::now()) {
            Lookup::Hit(value) => Some(value),
            _ => None,
        }
    }

    /// The copy of `key` at `now` (a coarse reading: the hit path reads no
    /// precise clock, whose cost is most of a hit's).
    fn lookup<T: Send + Sync + 'static>(&self, key: &CacheKey, now: Ticks) -> Lookup<T> {
        let (hash, shard) = self.locate(key);
        let map = read(&shard.map);
        let Some(slot) = map.get(&hash) else {
            return Lookup::Miss;
        };
        if now >= slot.expires_at
            || slot.category.version.load(Relaxed) != slot.version
            || slot.key != *key
        {
            return Lookup::Miss;
        }
        if now.as_u64() >= slot.category.valid_until.load(Relaxed) {
            return Lookup::Recheck;
        }
        let Ok(value) = Arc::clone(&slot.value).downcast::<T>() else {
            return Lookup::Miss;
        };
        drop(map);
        shard.hits.fetch_add(1, Relaxed);
        Lookup::Hit(value)
    }

    /// The generation check of `key`'s category.
    fn category(&self, key: &CacheKey) -> Arc<CategoryCheck> {
        if let Some(check) = read(&self.categories).get(key.category()) {
            return Arc::clone(check);
        }
        let mut categories = write(&self.categories);
        Arc::clone(categories.entry(key.category().to_owned()).or_default())
    }

    /// Records `full` (a full key of `key`'s category just rendered by the
    /// cache) as the category's current generation, trusted for `recheck`;
    /// returns the category's version after it.
    fn observe(&self, key: &CacheKey, full: &str, check: &CategoryCheck, now: Ticks) -> u64 {
        // The full key is `{head}{tail}`, `tail` the part after the
        // category (id, version, hash tag), the same in every generation.
        let prefix = self.cache.prefix();
        let plain = key.render(prefix, 0);
        let tail = plain
            .get(prefix.len() + 1 + key.category().len()..)
            .unwrap_or("");
        // A full key of another shape: the whole key is the head (a change
        // of key then looks like a change of generation: safe, slower).
        let head = full.strip_suffix(tail).unwrap_or(full);
        let mut known = check.head.lock().unwrap_or_else(PoisonError::into_inner);
        if *known != head {
            head.clone_into(&mut known);
            check.version.fetch_add(1, Relaxed);
        }
        // No deadline (a recheck shorter than the clock's slack): every
        // read checks.
        let until = now.deadline(self.config.recheck).map_or(0, Ticks::as_u64);
        check.valid_until.store(until, Relaxed);
        check.version.load(Relaxed)
    }

    /// The value of `key` as an `Arc<T>`: the decoded copy when fresh,
    /// otherwise read and decoded through the `Cache` (and kept).
    ///
    /// # Errors
    ///
    /// As [`Cache::get`].
    pub async fn get<T>(&self, key: &CacheKey) -> Result<Option<Arc<T>>>
    where
        T: DeserializeOwned + Send + Sync + 'static,
    {
        let now = Ticks::now();
        match self.lookup::<T>(key, now) {
            Lookup::Hit(value) => Ok(Some(value)),
            // Boxed: the slow path's state stays off the fast path's future.
            Lookup::Recheck | Lookup::Miss => match Box::pin(self.load::<T>(key, now)).await? {
                Loaded::Kept(value) | Loaded::Due(value) => Ok(Some(value)),
                Loaded::Missing => Ok(None),
            },
        }
    }

    /// Checks the category's generation; serves the copy if it is still
    /// current, else reads `key` through the cache and keeps the value for
    /// as long as the cache says it is fresh.
    async fn load<T>(&self, key: &CacheKey, now: Ticks) -> Result<Loaded<T>>
    where
        T: DeserializeOwned + Send + Sync + 'static,
    {
        let (hash, shard) = self.locate(key);
        let (epoch, quiet) = (shard.epoch.load(Relaxed), shard.writing.load(Relaxed) == 0);
        let check = self.category(key);
        let full = self.cache.full_key(key).await?;
        let version = self.observe(key, &full, &check, now);
        {
            // The copy is still this key's value if made under this
            // generation (a recheck, or a copy another reader just made).
            let map = read(&shard.map);
            if let Some(slot) = map.get(&hash) {
                if slot.key == *key
                    && slot.version == version
                    && now < slot.expires_at
                    && slot.value.is::<T>()
                {
                    let value = Arc::clone(&slot.value);
                    drop(map);
                    shard.hits.fetch_add(1, Relaxed);
                    return Ok(value.downcast::<T>().map_or(Loaded::Missing, Loaded::Kept));
                }
            }
        }
        let started = Ticks::now();
        let Some((value, fresh_for)) = self.cache.get_with_ttl::<T>(key).await? else {
            self.forget(key);
            return Ok(Loaded::Missing);
        };
        let value = Arc::new(value);
        // The cache's logical TTL (not the physical one fail-safe stretches),
        // ending where refresh-ahead wants a read to reach the cache.
        let life = fresh_for.map_or(self.config.max_ttl, |left| left.min(self.config.max_ttl));
        // Ended the clock's slack early; a life within the slack (or none
        // left) keeps no copy.
        let Some(until) = started.deadline(life) else {
            return Ok(Loaded::Due(value));
        };
        if quiet {
            let copy = Origin {
                category: check,
                version,
            };
            self.keep(key, hash, shard, copy, &value, epoch, until);
        }
        Ok(Loaded::Kept(value))
    }

    /// Keeps `value` for `key` until `until`, unless a write started since
    /// `epoch`.
    #[allow(clippy::too_many_arguments)]
    fn keep<T: Send + Sync + 'static>(
        &self,
        key: &CacheKey,
        hash: u64,
        shard: &Shard,
        copy: Origin,
        value: &Arc<T>,
        epoch: u64,
        until: Ticks,
    ) {
        let mut map = write(&shard.map);
        if shard.epoch.load(Relaxed) != epoch || shard.writing.load(Relaxed) != 0 {
            return;
        }
        if map.len() >= self.per_shard && !map.contains_key(&hash) {
            if let Some(&victim) = map.keys().next() {
                map.remove(&victim);
            }
        }
        let value: Arc<dyn Any + Send + Sync> = Arc::clone(value) as _;
        map.insert(
            hash,
            Slot {
                key: key.clone(),
                value,
                expires_at: until,
                category: copy.category,
                version: copy.version,
            },
        );
    }

    /// Drops the copy of `key`.
    fn forget(&self, key: &CacheKey) {
        let (hash, shard) = self.locate(key);
        let mut map = write(&shard.map);
        if map.get(&hash).is_some_and(|slot| slot.key == *key) {
            map.remove(&hash);
        }
    }

    /// Drops the copy of `key` and marks a write in flight on its shard
    /// until the returned guard is dropped.
    fn begin_write(&self, key: &CacheKey) -> Writing<'_> {
        let (_, shard) = self.locate(key);
        shard.writing.fetch_add(1, Relaxed);
        shard.epoch.fetch_add(1, Relaxed);
        self.forget(key);
        Writing(shard)
    }

    /// Drops every copy whose key `drop` selects, each shard marked as
    /// written meanwhile.
    async fn write_all<R, Fut>(&self, affected: impl Fn(&CacheKey) -> bool, op: Fut) -> Result<R>
    where
        Fut: Future<Output = Result<R>>,
    {
        let guards: Vec<Writing<'_>> = self
            .shards
            .iter()
            .map(|shard| {
                shard.writing.fetch_add(1, Relaxed);
                shard.epoch.fetch_add(1, Relaxed);
                write(&shard.map).retain(|_, slot| !affected(&slot.key));
                Writing(shard)
            })
            .collect();
        let result = op.await;
        for shard in &self.shards {
            write(&shard.map).retain(|_, slot| !affected(&slot.key));
        }
        drop(guards);
        result
    }

    /// Writes `value` with the category's TTL ([`Cache::set`]); the copy of
    /// `key` is dropped.
    ///
    /// # Errors
    ///
    /// As [`Cache::set`].
    pub async fn set<T: Serialize + ?Sized>(&self, key: &CacheKey, value: &T) -> Result<()> {
        let _writing = self.begin_write(key);
        self.cache.set(key, value).await
    }

    /// Writes `value` with an explicit TTL ([`Cache::set_with_ttl`]); the
    /// copy of `key` is dropped.
    ///
    /// # Errors
    ///
    /// As [`Cache::set_with_ttl`].
    pub async fn set_with_ttl<T: Serialize + ?Sized>(
        &self,
        key: &CacheKey,
        value: &T,
        ttl: Ttl,
    ) -> Result<()> {
        let _writing = self.begin_write(key);
        self.cache.set_with_ttl(key, value, ttl).await
    }

    /// Removes `key` ([`Cache::delete`]) and its copy.
    ///
    /// # Errors
    ///
    /// As [`Cache::delete`].
    pub async fn delete(&self, key: &CacheKey) -> Result<bool> {
        let _writing = self.begin_write(key);
        self.cache.delete(key).await
    }

    /// The value of `key`, or the loader's ([`Cache::get_or_set`]), as an
    /// `Arc<T>`; a fresh copy is returned without calling the cache.
    ///
    /// # Errors
    ///
    /// As [`Cache::get_or_set`].
    pub async fn get_or_set<T, F, Fut, E>(&self, key: &CacheKey, loader: F) -> Result<Arc<T>>
    where
        T: Serialize + DeserializeOwned + Send + Sync + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = std::result::Result<T, E>> + Send + 'static,
        E: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
    {
        let now = Ticks::now();
        match self.lookup::<T>(key, now) {
            Lookup::Hit(value) => return Ok(value),
            Lookup::Recheck | Lookup::Miss => {
                if let Loaded::Kept(value) = Box::pin(self.load::<T>(key, now)).await? {
                    return Ok(value);
                }
            }
        }
        // Missing, or due for refresh-ahead: the cache's `get_or_set`
        // answers (and starts the refresh). The load may write: no copy is kept of what it returns (the next
        // `get` reads the stored value back and keeps that).
        let _writing = self.begin_write(key);
        Ok(Arc::new(self.cache.get_or_set(key, loader).await?))
    }

    /// Invalidates `category` ([`Cache::invalidate_category`]) and drops
    /// its copies; returns the new generation.
    ///
    /// # Errors
    ///
    /// As [`Cache::invalidate_category`].
    pub async fn invalidate_category(&self, category: &str) -> Result<u64> {
        if let Some(check) = read(&self.categories).get(category) {
            check.version.fetch_add(1, Relaxed);
            check.valid_until.store(0, Relaxed);
        }
        self.write_all(
            |key| key.category() == category,
            self.cache.invalidate_category(category),
        )
        .await
    }

    /// Removes the keys of `category` matching `id_pattern`
    /// ([`Cache::invalidate_matching`]) and drops every copy of the
    /// category; returns how many keys were removed.
    ///
    /// # Errors
    ///
    /// As [`Cache::invalidate_matching`].
    pub async fn invalidate_matching(&self, category: &str, id_pattern: &str) -> Result<u64> {
        self.write_all(
            |key| key.category() == category,
            self.cache.invalidate_matching(category, id_pattern),
        )
        .await
    }

    /// Removes every key under the cache's prefix ([`Cache::clear`]) and
    /// every copy.
    ///
    /// # Errors
    ///
    /// As [`Cache::clear`].
    pub async fn clear(&self) -> Result<u64> {
        self.write_all(|_| true, self.cache.clear()).await
    }
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}
