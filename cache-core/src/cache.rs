//! `Cache`: the typed facade application code uses.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::watch;

use crate::backend::{CacheBackend, Health, SetMode, SetOptions};
use crate::codec::{AnyCodec, Codec};
use crate::error::{Error, ErrorKind, Result};
use crate::key::{escape_id_pattern, validate_category, validate_prefix, CacheKey};
use crate::stats::{CacheStats, Counters};
use crate::ttl::{CategoryTtl, Ttl, TtlPolicy};

/// The default key prefix.
pub const DEFAULT_PREFIX: &str = "cache";

/// How long a category's generation, once read from the backend, is trusted
/// before it is read again (see [`Cache::invalidate_category`]).
pub const DEFAULT_GENERATION_REFRESH: Duration = Duration::from_secs(1);

/// A typed cache over any [`CacheBackend`].
///
/// Values are encoded with a [`Codec`] (JSON by default) under structured
/// keys (`{prefix}:{category}:{id}`), with TTLs from a [`TtlPolicy`].
/// `Cache` is cheap to clone: clones share the backend, the counters and
/// the single-flight table.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> cache_core::Result<()> {
/// use cache_core::{Cache, CacheKey, CategoryTtl};
/// use cache_memory::MemoryBackend;
/// use std::sync::Arc;
/// use std::time::Duration;
///
/// let backend = Arc::new(MemoryBackend::new());
///
/// let cache = Cache::builder(backend)
///     .prefix("app")
///     .ttl_policy(CategoryTtl::new(Some(Duration::from_secs(60))))
///     .build()?;
///
/// let key = CacheKey::new("user", 42)?;
/// let name: String = cache
///     .get_or_set(&key, || async { Ok::<_, std::io::Error>("Ada".to_string()) })
///     .await?;
/// assert_eq!(name, "Ada");
/// assert_eq!(cache.get::<String>(&key).await?, Some("Ada".to_string()));
/// assert_eq!(cache.stats().loader_calls, 1);
/// # Ok(())
/// # }
/// ```
pub struct Cache<C: Codec = AnyCodec> {
    inner: Arc<Inner<C>>,
}

impl<C: Codec> Clone for Cache<C> {
    fn clone(&self) -> Self {
        Cache {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<C: Codec> fmt::Debug for Cache<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cache")
            .field("backend", &self.inner.backend.name())
            .field("codec", &self.inner.codec.name())
            .field("prefix", &self.inner.prefix)
            .finish_non_exhaustive()
    }
}

type FlightResult = Option<Result<Bytes>>;

struct Inner<C> {
    backend: Arc<dyn CacheBackend>,
    codec: C,
    prefix: String,
    policy: Arc<dyn TtlPolicy>,
    counters: Counters,
    flights: Mutex<HashMap<String, watch::Receiver<FlightResult>>>,
    generations: RwLock<HashMap<String, (u64, Instant)>>,
    generation_refresh: Duration,
    closed: AtomicBool,
}

/// Builds a [`Cache`]; from [`Cache::builder`].
pub struct CacheBuilder<C: Codec = AnyCodec> {
    backend: Arc<dyn CacheBackend>,
    codec: C,
    prefix: String,
    policy: Arc<dyn TtlPolicy>,
    generation_refresh: Duration,
}

impl Cache<AnyCodec> {
    /// A cache over `backend` with the defaults: prefix `cache`, JSON,
    /// values never expire unless a TTL is given.
    pub fn new(backend: Arc<dyn CacheBackend>) -> Self {
        Cache::builder(backend)
            .build()
            .unwrap_or_else(|_| unreachable!("the default prefix is valid"))
    }

    /// A builder over `backend`.
    pub fn builder(backend: Arc<dyn CacheBackend>) -> CacheBuilder<AnyCodec> {
        CacheBuilder {
            backend,
            codec: AnyCodec::Json,
            prefix: DEFAULT_PREFIX.to_owned(),
            policy: Arc::new(CategoryTtl::new(None)),
            generation_refresh: DEFAULT_GENERATION_REFRESH,
        }
    }
}

impl<C: Codec> CacheBuilder<C> {
    /// The key prefix, e.g. the service name; it is the namespace `clear`
    /// removes.
    #[must_use]
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The codec; the cache's type follows it.
    pub fn codec<D: Codec>(self, codec: D) -> CacheBuilder<D> {
        CacheBuilder {
            backend: self.backend,
            codec,
            prefix: self.prefix,
            policy: self.policy,
            generation_refresh: self.generation_refresh,
        }
    }

    /// The TTL policy for writes with [`Ttl::Default`].
    #[must_use]
    pub fn ttl_policy(mut self, policy: impl TtlPolicy) -> Self {
        self.policy = Arc::new(policy);
        self
    }

    /// How long a category generation read from the backend is trusted
    /// (default 1 s). Other instances see a category invalidation within
    /// this time; `Duration::ZERO` reads it on every call.
    #[must_use]
    pub fn generation_refresh(mut self, every: Duration) -> Self {
        self.generation_refresh = every;
        self
    }

    /// Builds the cache.
    ///
    /// # Errors
    ///
    /// [`InvalidKey`](ErrorKind::InvalidKey) for an invalid prefix.
    pub fn build(self) -> Result<Cache<C>> {
        validate_prefix(&self.prefix)?;
        Ok(Cache {
            inner: Arc::new(Inner {
                backend: self.backend,
                codec: self.codec,
                prefix: self.prefix,
                policy: self.policy,
                counters: Counters::new(),
                flights: Mutex::new(HashMap::new()),
                generations: RwLock::new(HashMap::new()),
                generation_refresh: self.generation_refresh,
                closed: AtomicBool::new(false),
            }),
        })
    }
}

/// Options of [`Cache::get_or_set_opts`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct GetOrSetOptions {
    /// The TTL of a loaded value.
    pub ttl: Ttl,
}

impl GetOrSetOptions {
    /// Sets the TTL of a loaded value.
    #[must_use]
    pub fn with_ttl(mut self, ttl: Ttl) -> Self {
        self.ttl = ttl;
        self
    }
}

enum Role {
    Leader(watch::Sender<FlightResult>),
    Waiter(watch::Receiver<FlightResult>),
}

/// Removes a single-flight entry when its leader finishes or is cancelled.
struct FlightGuard<'a> {
    flights: &'a Mutex<HashMap<String, watch::Receiver<FlightResult>>>,
    key: &'a str,
}

impl Drop for FlightGuard<'_> {
    fn drop(&mut self) {
        lock(self.flights).remove(self.key);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<C: Codec> Cache<C> {
    /// The value of `key`, decoded as `T`; `None` on a miss.
    ///
    /// # Errors
    ///
    /// [`Codec`](ErrorKind::Codec) when the stored bytes do not decode as
    /// `T` (counted in `decode_errors`); the backend's errors.
    pub async fn get<T: DeserializeOwned>(&self, key: &CacheKey) -> Result<Option<T>> {
        let full = self.full_key(key).await?;
        match self.track(self.inner.backend.get(&full).await)? {
            Some(bytes) => {
                let value = self.decode(&bytes)?;
                Counters::add(&self.inner.counters.hits, 1);
                Ok(Some(value))
            }
            None => {
                Counters::add(&self.inner.counters.misses, 1);
                Ok(None)
            }
        }
    }

    /// Writes `value` with the category's TTL.
    ///
    /// # Errors
    ///
    /// [`Codec`](ErrorKind::Codec) when `value` cannot be encoded (nothing
    /// is written); the backend's errors.
    pub async fn set<T: Serialize + ?Sized>(&self, key: &CacheKey, value: &T) -> Result<()> {
        self.set_with_ttl(key, value, Ttl::Default).await
    }

    /// Writes `value` with an explicit TTL. A zero TTL stores nothing and
    /// removes the current value.
    ///
    /// # Errors
    ///
    /// As [`set`](Cache::set).
    pub async fn set_with_ttl<T: Serialize + ?Sized>(
        &self,
        key: &CacheKey,
        value: &T,
        ttl: Ttl,
    ) -> Result<()> {
        self.write(key, value, ttl, SetMode::Always).await.map(drop)
    }

    /// Writes `value` only if `key` holds nothing; returns whether it wrote.
    ///
    /// # Errors
    ///
    /// As [`set`](Cache::set).
    pub async fn set_if_absent<T: Serialize + ?Sized>(
        &self,
        key: &CacheKey,
        value: &T,
        ttl: Ttl,
    ) -> Result<bool> {
        self.write(key, value, ttl, SetMode::IfAbsent).await
    }

    async fn write<T: Serialize + ?Sized>(
        &self,
        key: &CacheKey,
        value: &T,
        ttl: Ttl,
        mode: SetMode,
    ) -> Result<bool> {
        let full = self.full_key(key).await?;
        let bytes = self.encode(value)?;
        let ttl = ttl.resolve(&*self.inner.policy, key.category());
        let opts = SetOptions::ttl(ttl).with_mode(mode);
        let written = self.track(self.inner.backend.set(&full, bytes, opts).await)?;
        if written {
            Counters::add(&self.inner.counters.sets, 1);
        }
        Ok(written)
    }

    /// Removes `key`; returns whether it existed.
    ///
    /// # Errors
    ///
    /// The backend's errors.
    pub async fn delete(&self, key: &CacheKey) -> Result<bool> {
        let full = self.full_key(key).await?;
        let existed = self.track(self.inner.backend.delete(&full).await)?;
        Counters::add(&self.inner.counters.deletes, u64::from(existed));
        Ok(existed)
    }

    /// Whether `key` holds a value.
    ///
    /// # Errors
    ///
    /// The backend's errors.
    pub async fn exists(&self, key: &CacheKey) -> Result<bool> {
        let full = self.full_key(key).await?;
        self.track(self.inner.backend.exists(&full).await)
    }

    /// Adds `delta` to the counter at `key` (created with the category's
    /// TTL when missing) and returns the new value. Read it back with
    /// `get::<i64>`.
    ///
    /// # Errors
    ///
    /// [`InvalidValue`](ErrorKind::InvalidValue) when the key holds a
    /// non-integer or the sum overflows; the backend's errors.
    pub async fn incr(&self, key: &CacheKey, delta: i64) -> Result<i64> {
        let full = self.full_key(key).await?;
        let ttl = Ttl::Default.resolve(&*self.inner.policy, key.category());
        self.track(self.inner.backend.incr(&full, delta, ttl).await)
    }

    /// The values of `keys`, in order, `None` for each miss.
    ///
    /// # Errors
    ///
    /// [`Codec`](ErrorKind::Codec) when any stored value does not decode as
    /// `T`; the backend's errors.
    pub async fn get_many<T: DeserializeOwned>(&self, keys: &[CacheKey]) -> Result<Vec<Option<T>>> {
        let mut full = Vec::with_capacity(keys.len());
        for key in keys {
            full.push(self.full_key(key).await?);
        }
        let refs: Vec<&str> = full.iter().map(String::as_str).collect();
        let values = self.track(self.inner.backend.get_many(&refs).await)?;
        let mut out = Vec::with_capacity(values.len());
        let (mut hits, mut misses) = (0, 0);
        for value in values {
            match value {
                Some(bytes) => {
                    out.push(Some(self.decode(&bytes)?));
                    hits += 1;
                }
                None => {
                    out.push(None);
                    misses += 1;
                }
            }
        }
        Counters::add(&self.inner.counters.hits, hits);
        Counters::add(&self.inner.counters.misses, misses);
        Ok(out)
    }

    /// Writes every item with `ttl`. With [`Ttl::Default`], each category's
    /// TTL is resolved once per call (so jitter is per batch and category).
    ///
    /// # Errors
    ///
    /// [`Codec`](ErrorKind::Codec) when any value cannot be encoded (nothing
    /// is written); the backend's errors.
    pub async fn set_many<T: Serialize>(&self, items: &[(CacheKey, T)], ttl: Ttl) -> Result<()> {
        // One backend batch per category: (its TTL, its entries).
        type Batch = (Option<Duration>, Vec<(String, Bytes)>);
        let mut groups: Vec<Batch> = Vec::new();
        let mut by_category: HashMap<&str, usize> = HashMap::new();
        for (key, value) in items {
            let full = self.full_key(key).await?;
            let bytes = self.encode(value)?;
            let slot = *by_category.entry(key.category()).or_insert_with(|| {
                groups.push((ttl.resolve(&*self.inner.policy, key.category()), Vec::new()));
                groups.len() - 1
            });
            groups[slot].1.push((full, bytes));
        }
        for (ttl, entries) in groups {
            let refs: Vec<(&str, Bytes)> = entries
                .iter()
                .map(|(k, v)| (k.as_str(), v.clone()))
                .collect();
            self.track(self.inner.backend.set_many(&refs, ttl).await)?;
        }
        Counters::add(&self.inner.counters.sets, items.len() as u64);
        Ok(())
    }

    /// The value of `key`, or the loader's value, stored with the category's
    /// TTL. See [`get_or_set_opts`](Cache::get_or_set_opts).
    ///
    /// # Errors
    ///
    /// As [`get_or_set_opts`](Cache::get_or_set_opts).
    pub async fn get_or_set<T, F, Fut, E>(&self, key: &CacheKey, loader: F) -> Result<T>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce() -> Fut,
        Fut: Future<Output = std::result::Result<T, E>>,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        self.get_or_set_opts(key, GetOrSetOptions::default(), loader)
            .await
    }

    /// Cache-aside with single flight: returns the cached value of `key`, or
    /// runs `loader`, stores its value and returns it.
    ///
    /// Concurrent callers of one missing key in this process share one
    /// loader run: the first becomes the leader, the others wait for its
    /// result (if the leader is cancelled, a waiter takes over). A loader
    /// error is returned to the leader and every waiter, and nothing is
    /// cached. A stored value that does not decode as `T` is counted and
    /// treated as a miss (it is reloaded and overwritten). If storing the
    /// loaded value fails, the value is still returned and the error is
    /// counted and logged.
    ///
    /// # Errors
    ///
    /// [`Loader`](ErrorKind::Loader) with the loader's error as source;
    /// [`Codec`](ErrorKind::Codec) when the loaded value cannot be encoded;
    /// the backend's errors on the read.
    pub async fn get_or_set_opts<T, F, Fut, E>(
        &self,
        key: &CacheKey,
        opts: GetOrSetOptions,
        loader: F,
    ) -> Result<T>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce() -> Fut,
        Fut: Future<Output = std::result::Result<T, E>>,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let full = self.full_key(key).await?;
        if let Some((value, _)) = self.read_decoded::<T>(&full).await? {
            Counters::add(&self.inner.counters.hits, 1);
            return Ok(value);
        }
        Counters::add(&self.inner.counters.misses, 1);

        let mut loader = Some(loader);
        loop {
            let role = {
                let mut flights = lock(&self.inner.flights);
                match flights.get(&full) {
                    Some(rx) => Role::Waiter(rx.clone()),
                    None => {
                        let (tx, rx) = watch::channel(None);
                        flights.insert(full.clone(), rx);
                        Role::Leader(tx)
                    }
                }
            };
            match role {
                Role::Waiter(mut rx) => {
                    let shared = match rx.wait_for(Option::is_some).await {
                        Ok(done) => done.clone(),
                        // The leader was cancelled: take over.
                        Err(_) => continue,
                    };
                    return match shared {
                        Some(Ok(bytes)) => self.decode(&bytes),
                        Some(Err(err)) => Err(err),
                        None => continue,
                    };
                }
                Role::Leader(tx) => {
                    let _guard = FlightGuard {
                        flights: &self.inner.flights,
                        key: &full,
                    };
                    // Another leader may have stored the value between our
                    // miss and taking the lead.
                    if let Some((value, bytes)) = self.read_decoded::<T>(&full).await? {
                        let _ = tx.send(Some(Ok(bytes)));
                        return Ok(value);
                    }
                    let Some(loader) = loader.take() else {
                        // A leader always returns, so a call leads at most once.
                        return Err(Error::new(
                            ErrorKind::Backend,
                            "single-flight loader already used",
                        ));
                    };
                    let result = self.load(key, &full, opts, loader).await;
                    let shared = match &result {
                        Ok((_, bytes)) => Ok(bytes.clone()),
                        Err(err) => Err(err.clone()),
                    };
                    let _ = tx.send(Some(shared));
                    return result.map(|(value, _)| value);
                }
            }
        }
    }

    async fn load<T, F, Fut, E>(
        &self,
        key: &CacheKey,
        full: &str,
        opts: GetOrSetOptions,
        loader: F,
    ) -> Result<(T, Bytes)>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce() -> Fut,
        Fut: Future<Output = std::result::Result<T, E>>,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        Counters::add(&self.inner.counters.loader_calls, 1);
        let value = match loader().await {
            Ok(value) => value,
            Err(e) => {
                Counters::add(&self.inner.counters.loader_errors, 1);
                Counters::add(&self.inner.counters.errors, 1);
                return Err(
                    Error::new(ErrorKind::Loader, "the get_or_set loader failed")
                        .with_operation("get_or_set")
                        .with_boxed_source(e.into()),
                );
            }
        };
        let bytes = self.encode(&value)?;
        let ttl = opts.ttl.resolve(&*self.inner.policy, key.category());
        match self
            .inner
            .backend
            .set(full, bytes.clone(), SetOptions::ttl(ttl))
            .await
        {
            Ok(written) => Counters::add(&self.inner.counters.sets, u64::from(written)),
            Err(err) => {
                Counters::add(&self.inner.counters.errors, 1);
                tracing::warn!(error = %err, category = key.category(), "storing a loaded value failed");
            }
        }
        Ok((value, bytes))
    }

    /// Reads `full` and decodes it; an undecodable value is counted and
    /// read as a miss.
    async fn read_decoded<T: DeserializeOwned>(&self, full: &str) -> Result<Option<(T, Bytes)>> {
        let Some(bytes) = self.track(self.inner.backend.get(full).await)? else {
            return Ok(None);
        };
        match self.inner.codec.decode(&bytes) {
            Ok(value) => Ok(Some((value, bytes))),
            Err(err) => {
                self.count_decode_error(&err);
                Ok(None)
            }
        }
    }

    /// Makes every key of `category` unreachable in O(1), by bumping the
    /// category's generation (stored in the backend under
    /// `{prefix}:#gen:{category}`); returns the new generation.
    ///
    /// Old entries are not deleted: they age out by their TTL. This instance
    /// sees the bump at once; other instances sharing the backend within
    /// the generation refresh interval (1 s by default).
    ///
    /// # Errors
    ///
    /// [`InvalidKey`](ErrorKind::InvalidKey) for an invalid category; the
    /// backend's errors.
    pub async fn invalidate_category(&self, category: &str) -> Result<u64> {
        self.check_open()?;
        validate_category(category)?;
        let gen_key = self.generation_key(category);
        let local = self.cached_generation(category).map_or(0, |(g, _)| g);
        let stored = self.track(self.inner.backend.incr(&gen_key, 1, None).await)?;
        let mut generation = u64::try_from(stored).unwrap_or(0);
        if generation <= local {
            // The stored generation was lost (evicted or cleared): never go
            // back to a generation whose keys may still be alive.
            generation = local + 1;
            let bytes = Bytes::from(generation.to_string());
            self.track(
                self.inner
                    .backend
                    .set(&gen_key, bytes, SetOptions::default())
                    .await,
            )?;
        }
        self.remember_generation(category, generation);
        Counters::add(&self.inner.counters.deletes, 1);
        Ok(generation)
    }

    /// Removes the keys of `category` whose id matches `id_pattern`, a Redis
    /// glob over ids (`*`, `?`, `[a-z]`, `\x` for a literal `x`); returns
    /// how many. This scans (`SCAN` on Redis): prefer
    /// [`invalidate_category`](Cache::invalidate_category) for a whole
    /// category.
    ///
    /// # Errors
    ///
    /// [`InvalidKey`](ErrorKind::InvalidKey) for an invalid category or
    /// pattern; [`Unsupported`](ErrorKind::Unsupported) when the backend has
    /// no pattern delete; the backend's errors.
    pub async fn invalidate_matching(&self, category: &str, id_pattern: &str) -> Result<u64> {
        validate_category(category)?;
        let pattern = escape_id_pattern(id_pattern)?;
        let generation = self.generation(category).await?;
        let tag = if generation == 0 {
            String::new()
        } else {
            format!("#{generation}")
        };
        let full = format!(
            "{}:{category}{tag}:{pattern}",
            crate::glob_escape(&self.inner.prefix)
        );
        // Keys with a version suffix too.
        let removed = self.track(self.inner.backend.delete_matching(&full).await)?
            + self.track(
                self.inner
                    .backend
                    .delete_matching(&format!("{full}:v*"))
                    .await,
            )?;
        Counters::add(&self.inner.counters.deletes, removed);
        Ok(removed)
    }

    /// Removes every key under this cache's prefix (and nothing else);
    /// returns how many.
    ///
    /// # Errors
    ///
    /// The backend's errors.
    pub async fn clear(&self) -> Result<u64> {
        self.check_open()?;
        let namespace = format!("{}:", self.inner.prefix);
        let removed = self.track(self.inner.backend.clear(&namespace).await)?;
        Counters::add(&self.inner.counters.deletes, removed);
        Ok(removed)
    }

    /// The backend's health.
    ///
    /// # Errors
    ///
    /// The backend's errors.
    pub async fn health(&self) -> Result<Health> {
        self.check_open()?;
        self.track(self.inner.backend.health().await)
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> CacheStats {
        self.inner.counters.snapshot()
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.inner.prefix
    }

    /// The codec.
    pub fn codec(&self) -> &C {
        &self.inner.codec
    }

    /// The backend (to reach byte-level operations).
    pub fn backend(&self) -> &Arc<dyn CacheBackend> {
        &self.inner.backend
    }

    /// The full key `key` is stored under now (with its category's current
    /// generation).
    ///
    /// # Errors
    ///
    /// The backend's errors while reading the generation.
    pub async fn full_key(&self, key: &CacheKey) -> Result<String> {
        self.check_open()?;
        let generation = self.generation(key.category()).await?;
        let full = key.render(&self.inner.prefix, generation);
        crate::backend::check_key(&full, crate::MAX_KEY_LEN)?;
        Ok(full)
    }

    /// Shuts the cache down: later calls on it (and its clones) fail with
    /// [`Closed`](ErrorKind::Closed), and the backend's background work
    /// (e.g. the memory backend's sweeper) stops.
    ///
    /// # Errors
    ///
    /// The backend's errors while closing.
    pub async fn close(&self) -> Result<()> {
        if self.inner.closed.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        self.inner.backend.close().await
    }

    fn check_open(&self) -> Result<()> {
        if self.inner.closed.load(Ordering::Relaxed) {
            Err(Error::new(ErrorKind::Closed, "the cache is closed"))
        } else {
            Ok(())
        }
    }

    fn generation_key(&self, category: &str) -> String {
        format!("{}:#gen:{category}", self.inner.prefix)
    }

    fn cached_generation(&self, category: &str) -> Option<(u64, Instant)> {
        self.inner
            .generations
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(category)
            .copied()
    }

    fn remember_generation(&self, category: &str, generation: u64) {
        let mut map = self
            .inner
            .generations
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let entry = map
            .entry(category.to_owned())
            .or_insert((0, Instant::now()));
        *entry = (entry.0.max(generation), Instant::now());
    }

    async fn generation(&self, category: &str) -> Result<u64> {
        let cached = self.cached_generation(category);
        if let Some((generation, at)) = cached {
            if at.elapsed() < self.inner.generation_refresh {
                return Ok(generation);
            }
        }
        let stored = self.track(self.inner.backend.get(&self.generation_key(category)).await)?;
        let stored = stored
            .and_then(|b| std::str::from_utf8(&b).ok()?.parse::<u64>().ok())
            .unwrap_or(0);
        self.remember_generation(category, stored);
        Ok(stored.max(cached.map_or(0, |(g, _)| g)))
    }

    fn encode<T: Serialize + ?Sized>(&self, value: &T) -> Result<Bytes> {
        self.inner.codec.encode(value).inspect_err(|_| {
            Counters::add(&self.inner.counters.errors, 1);
        })
    }

    fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T> {
        self.inner
            .codec
            .decode(bytes)
            .inspect_err(|err| self.count_decode_error(err))
    }

    fn count_decode_error(&self, err: &Error) {
        Counters::add(&self.inner.counters.decode_errors, 1);
        Counters::add(&self.inner.counters.errors, 1);
        tracing::debug!(error = %err, "a stored value did not decode");
    }

    fn track<T>(&self, result: Result<T>) -> Result<T> {
        if result.is_err() {
            Counters::add(&self.inner.counters.errors, 1);
        }
        result
    }
}
