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
use crate::fail_safe::{now_ms, Entry, FailSafe};
use crate::key::{escape_id_pattern, validate_category, validate_prefix, CacheKey};
use crate::report::CacheReport;
use crate::stats::{CacheStats, Counters, Stat};
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
    /// Called as `(*backend).op()`: calling through the `Arc` would go
    /// through `impl CacheBackend for Arc<T>` and box a second future.
    backend: Arc<dyn CacheBackend>,
    codec: C,
    prefix: String,
    policy: Arc<dyn TtlPolicy>,
    counters: Counters,
    flights: Mutex<HashMap<String, watch::Receiver<FlightResult>>>,
    generations: RwLock<HashMap<String, (u64, Instant)>>,
    generation_refresh: Duration,
    fail_safe: Option<FailSafe>,
    refresh_ahead: Option<f64>,
    last_report: Mutex<Option<CacheStats>>,
    closed: AtomicBool,
}

/// Builds a [`Cache`]; from [`Cache::builder`].
pub struct CacheBuilder<C: Codec = AnyCodec> {
    backend: Arc<dyn CacheBackend>,
    codec: C,
    prefix: String,
    policy: Arc<dyn TtlPolicy>,
    generation_refresh: Duration,
    fail_safe: Option<FailSafe>,
    refresh_ahead: Option<f64>,
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
            fail_safe: None,
            refresh_ahead: None,
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
            fail_safe: self.fail_safe,
            refresh_ahead: self.refresh_ahead,
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

    /// Turns fail-safe on: values are kept `max_stale` past their TTL and
    /// served by `get_or_set` when the loader fails or is slow (see
    /// [`FailSafe`]).
    #[must_use]
    pub fn fail_safe(mut self, fail_safe: FailSafe) -> Self {
        self.fail_safe = Some(fail_safe);
        self
    }

    /// Turns refresh-ahead on: a `get_or_set` hit in the last `fraction` of
    /// the value's TTL (e.g. 0.2: the last 20%) returns the value and starts
    /// one background reload, so hot keys are refreshed before they expire.
    /// `fraction` is clamped to `0.0..=1.0`.
    #[must_use]
    pub fn refresh_ahead(mut self, fraction: f64) -> Self {
        self.refresh_ahead = Some(if fraction.is_finite() {
            fraction.clamp(0.0, 1.0)
        } else {
            0.0
        });
        self
    }

    /// Builds the cache.
    ///
    /// # Errors
    ///
    /// [`InvalidKey`](ErrorKind::InvalidKey) for an invalid prefix.
    pub fn build(self) -> Result<Cache<C>> {
        validate_prefix(&self.prefix)?;
        let counters = Counters::new(&self.prefix);
        Ok(Cache {
            inner: Arc::new(Inner {
                backend: self.backend,
                codec: self.codec,
                prefix: self.prefix,
                policy: self.policy,
                counters,
                flights: Mutex::new(HashMap::new()),
                generations: RwLock::new(HashMap::new()),
                generation_refresh: self.generation_refresh,
                fail_safe: self.fail_safe,
                refresh_ahead: self.refresh_ahead,
                last_report: Mutex::new(None),
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

/// Removes a single-flight entry when its load finishes (or its task dies).
struct FlightGuard<C: Codec> {
    inner: Arc<Inner<C>>,
    key: String,
}

impl<C: Codec> Drop for FlightGuard<C> {
    fn drop(&mut self) {
        lock(&self.inner.flights).remove(&self.key);
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
        let stored = self.track((*self.inner.backend).get(&full).await)?;
        match stored.map(Entry::unwrap) {
            Some(entry) if entry.is_fresh(now_ms()) => {
                let value = self.decode(&entry.payload)?;
                self.inner.counters.inc(Stat::Hits, 1);
                Ok(Some(value))
            }
            _ => {
                self.inner.counters.inc(Stat::Misses, 1);
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
        let ttl = ttl.resolve(&*self.inner.policy, key.category());
        let (bytes, ttl) = self.stored_form(self.encode(value)?, ttl);
        let opts = SetOptions::ttl(ttl).with_mode(mode);
        let written = self.track((*self.inner.backend).set(&full, bytes, opts).await)?;
        if written {
            self.inner.counters.inc(Stat::Sets, 1);
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
        let existed = self.track((*self.inner.backend).delete(&full).await)?;
        self.inner.counters.inc(Stat::Deletes, u64::from(existed));
        Ok(existed)
    }

    /// Whether `key` holds a value.
    ///
    /// # Errors
    ///
    /// The backend's errors.
    pub async fn exists(&self, key: &CacheKey) -> Result<bool> {
        let full = self.full_key(key).await?;
        self.track((*self.inner.backend).exists(&full).await)
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
        self.track((*self.inner.backend).incr(&full, delta, ttl).await)
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
        let values = self.track((*self.inner.backend).get_many(&refs).await)?;
        let mut out = Vec::with_capacity(values.len());
        let (mut hits, mut misses) = (0, 0);
        let now = now_ms();
        for value in values {
            match value.map(Entry::unwrap) {
                Some(entry) if entry.is_fresh(now) => {
                    out.push(Some(self.decode(&entry.payload)?));
                    hits += 1;
                }
                _ => {
                    out.push(None);
                    misses += 1;
                }
            }
        }
        self.inner.counters.inc(Stat::Hits, hits);
        self.inner.counters.inc(Stat::Misses, misses);
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
            let slot = *by_category.entry(key.category()).or_insert_with(|| {
                groups.push((ttl.resolve(&*self.inner.policy, key.category()), Vec::new()));
                groups.len() - 1
            });
            let (bytes, _) = self.stored_form(self.encode(value)?, groups[slot].0);
            groups[slot].1.push((full, bytes));
        }
        for (ttl, entries) in groups {
            let ttl = self.physical_ttl(ttl);
            let refs: Vec<(&str, Bytes)> = entries
                .iter()
                .map(|(k, v)| (k.as_str(), v.clone()))
                .collect();
            self.track((*self.inner.backend).set_many(&refs, ttl).await)?;
        }
        self.inner.counters.inc(Stat::Sets, items.len() as u64);
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
        T: Serialize + DeserializeOwned + Send + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = std::result::Result<T, E>> + Send + 'static,
        E: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
    {
        self.get_or_set_opts(key, GetOrSetOptions::default(), loader)
            .await
    }

    /// Cache-aside with single flight: returns the cached value of `key`, or
    /// runs `loader`, stores its value and returns it.
    ///
    /// - Concurrent callers of one missing key in this process share one
    ///   loader run. The load runs in its own task, so a caller that is
    ///   cancelled does not cancel it for the others (the loader must be
    ///   `Send + 'static`: capture owned or `Arc`'d state).
    /// - A loader error is returned to every waiting caller and nothing is
    ///   cached.
    /// - A stored value that does not decode as `T` is counted and treated
    ///   as a miss (reloaded and overwritten).
    /// - If storing the loaded value fails, the value is still returned; the
    ///   error is counted and logged.
    /// - With [fail-safe](CacheBuilder::fail_safe): a stale value is served
    ///   (and counted in `stale_served`) when the loader fails or exceeds
    ///   the soft timeout; the slow load finishes in the background.
    /// - With [refresh-ahead](CacheBuilder::refresh_ahead): a hit close to
    ///   expiry starts one background reload.
    ///
    /// # Errors
    ///
    /// [`Loader`](ErrorKind::Loader) with the loader's error as source;
    /// [`Codec`](ErrorKind::Codec) when the loaded value cannot be encoded;
    /// the backend's errors on the read. With fail-safe and a stale value,
    /// loader errors are not returned.
    pub async fn get_or_set_opts<T, F, Fut, E>(
        &self,
        key: &CacheKey,
        opts: GetOrSetOptions,
        loader: F,
    ) -> Result<T>
    where
        T: Serialize + DeserializeOwned + Send + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = std::result::Result<T, E>> + Send + 'static,
        E: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
    {
        let full = self.full_key(key).await?;
        let now = now_ms();
        let mut stale = None;
        if let Some((value, entry)) = self.read_decoded::<T>(&full).await? {
            if entry.is_fresh(now) {
                self.inner.counters.inc(Stat::Hits, 1);
                if let Some(fraction) = self.inner.refresh_ahead {
                    if entry.in_refresh_window(now, fraction) {
                        self.refresh(key, full, opts, loader);
                    }
                }
                return Ok(value);
            }
            if self.inner.fail_safe.is_some() {
                stale = Some(value);
            }
        }
        self.inner.counters.inc(Stat::Misses, 1);

        let mut flight = self.join_or_lead(key, &full, opts, loader);
        let soft_timeout = self.inner.fail_safe.and_then(|f| f.soft_timeout);
        let outcome = match (&stale, soft_timeout) {
            (Some(_), Some(soft)) => {
                match tokio::time::timeout(soft, flight.wait_for(Option::is_some)).await {
                    Ok(done) => done.map(|r| r.clone()).ok().flatten(),
                    Err(_) => {
                        self.inner.counters.inc(Stat::LoaderTimeouts, 1);
                        None
                    }
                }
            }
            _ => flight
                .wait_for(Option::is_some)
                .await
                .map(|r| r.clone())
                .ok()
                .flatten(),
        };
        match (outcome, stale) {
            (Some(Ok(bytes)), _) => self.decode(&bytes),
            (Some(Err(err)), None) => Err(err),
            (None, None) => Err(Error::new(
                ErrorKind::Loader,
                "the get_or_set load ended without a result (its task panicked)",
            )
            .with_operation("get_or_set")),
            (_, Some(stale)) => {
                self.inner.counters.inc(Stat::StaleServed, 1);
                tracing::debug!(category = key.category(), "serving a stale value");
                Ok(stale)
            }
        }
    }

    /// Starts one background reload of `full` unless a load is running.
    fn refresh<T, F, Fut, E>(&self, key: &CacheKey, full: String, opts: GetOrSetOptions, loader: F)
    where
        T: Serialize + DeserializeOwned + Send + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = std::result::Result<T, E>> + Send + 'static,
        E: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
    {
        if lock(&self.inner.flights).contains_key(&full) {
            return;
        }
        self.inner.counters.inc(Stat::Refreshes, 1);
        drop(self.join_or_lead(key, &full, opts, loader));
    }

    /// Joins the load of `full` in flight, or starts one in a task of its
    /// own; returns the channel its result arrives on.
    fn join_or_lead<T, F, Fut, E>(
        &self,
        key: &CacheKey,
        full: &str,
        opts: GetOrSetOptions,
        loader: F,
    ) -> watch::Receiver<FlightResult>
    where
        T: Serialize + DeserializeOwned + Send + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = std::result::Result<T, E>> + Send + 'static,
        E: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
    {
        let mut flights = lock(&self.inner.flights);
        if let Some(rx) = flights.get(full) {
            return rx.clone();
        }
        let (tx, rx) = watch::channel(None);
        flights.insert(full.to_owned(), rx.clone());
        drop(flights);
        let cache = self.clone();
        let guard = FlightGuard {
            inner: Arc::clone(&self.inner),
            key: full.to_owned(),
        };
        let ttl = opts.ttl.resolve(&*self.inner.policy, key.category());
        let category = key.category().to_owned();
        tokio::spawn(async move {
            let result = cache
                .load::<T, _, _, _>(&guard.key, &category, ttl, loader)
                .await;
            // Leave the table before answering: a caller arriving after the
            // answer must start a new load, not receive this (maybe failed)
            // one. Callers already waiting hold the channel.
            drop(guard);
            let _ = tx.send(Some(result));
        });
        rx
    }

    /// The leader's work: re-check the backend (another instance, or a
    /// load that just finished, may have stored the value), else run the
    /// loader and store its value. Returns the encoded value.
    async fn load<T, F, Fut, E>(
        &self,
        full: &str,
        category: &str,
        ttl: Option<Duration>,
        loader: F,
    ) -> Result<Bytes>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce() -> Fut,
        Fut: Future<Output = std::result::Result<T, E>>,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        if let Ok(Some((_, entry))) = self.read_decoded::<T>(full).await {
            if entry.is_fresh(now_ms())
                && !entry.in_refresh_window(now_ms(), self.inner.refresh_ahead.unwrap_or(0.0))
            {
                return Ok(entry.payload);
            }
        }
        self.inner.counters.inc(Stat::LoaderCalls, 1);
        let value = match loader().await {
            Ok(value) => value,
            Err(e) => {
                self.inner.counters.inc(Stat::LoaderErrors, 1);
                self.inner.counters.inc(Stat::Errors, 1);
                return Err(
                    Error::new(ErrorKind::Loader, "the get_or_set loader failed")
                        .with_operation("get_or_set")
                        .with_boxed_source(e.into()),
                );
            }
        };
        let payload = self.encode(&value)?;
        let (stored, physical) = self.stored_form(payload.clone(), ttl);
        match self
            .inner
            .backend
            .set(full, stored, SetOptions::ttl(physical))
            .await
        {
            Ok(written) => self.inner.counters.inc(Stat::Sets, u64::from(written)),
            Err(err) => {
                self.inner.counters.inc(Stat::Errors, 1);
                tracing::warn!(error = %err, category, "storing a loaded value failed");
            }
        }
        Ok(payload)
    }

    /// Reads `full` and decodes it; an undecodable value is counted and
    /// read as a miss.
    async fn read_decoded<T: DeserializeOwned>(&self, full: &str) -> Result<Option<(T, Entry)>> {
        let Some(bytes) = self.track((*self.inner.backend).get(full).await)? else {
            return Ok(None);
        };
        let entry = Entry::unwrap(bytes);
        match self.inner.codec.decode(&entry.payload) {
            Ok(value) => Ok(Some((value, entry))),
            Err(err) => {
                self.count_decode_error(&err);
                Ok(None)
            }
        }
    }

    /// Whether values are written in the fail-safe envelope.
    fn enveloped(&self) -> bool {
        self.inner.fail_safe.is_some() || self.inner.refresh_ahead.is_some()
    }

    /// The TTL a value with logical TTL `ttl` is stored with.
    fn physical_ttl(&self, ttl: Option<Duration>) -> Option<Duration> {
        match (ttl, self.inner.fail_safe) {
            (Some(t), Some(f)) if !t.is_zero() => Some(t.saturating_add(f.max_stale)),
            _ => ttl,
        }
    }

    /// The bytes and TTL to store an encoded value with.
    fn stored_form(&self, payload: Bytes, ttl: Option<Duration>) -> (Bytes, Option<Duration>) {
        if self.enveloped() {
            (Entry::wrap(&payload, ttl), self.physical_ttl(ttl))
        } else {
            (payload, ttl)
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
        let stored = self.track((*self.inner.backend).incr(&gen_key, 1, None).await)?;
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
        self.inner.counters.inc(Stat::Deletes, 1);
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
        let removed = self.track((*self.inner.backend).delete_matching(&full).await)?
            + self.track(
                self.inner
                    .backend
                    .delete_matching(&format!("{full}:v*"))
                    .await,
            )?;
        self.inner.counters.inc(Stat::Deletes, removed);
        Ok(removed)
    }

    /// Removes every key under this cache's prefix (and nothing else):
    /// values and the category generation keys; returns how many.
    ///
    /// # Errors
    ///
    /// The backend's errors.
    pub async fn clear(&self) -> Result<u64> {
        self.check_open()?;
        let namespace = format!("{}:", self.inner.prefix);
        let removed = self.track((*self.inner.backend).clear(&namespace).await)?;
        self.inner.counters.inc(Stat::Deletes, removed);
        Ok(removed)
    }

    /// The backend's health.
    ///
    /// # Errors
    ///
    /// The backend's errors.
    pub async fn health(&self) -> Result<Health> {
        self.check_open()?;
        self.track((*self.inner.backend).health().await)
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> CacheStats {
        self.inner.counters.snapshot()
    }

    /// The counters and the backend's health, with advice on what needs
    /// attention: a low hit rate, a high or rising error rate (compared with
    /// the previous report), values that do not decode, stale values served,
    /// an open circuit breaker, an L1 near its capacity.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> cache_core::Result<()> {
    /// use cache_core::{Cache, CacheKey};
    /// use cache_memory::MemoryBackend;
    /// use std::sync::Arc;
    ///
    /// let cache = Cache::new(Arc::new(MemoryBackend::new()));
    /// for i in 0..200 {
    ///     cache.get::<u32>(&CacheKey::new("user", i)?).await?; // all misses
    /// }
    /// let report = cache.report().await;
    /// assert_eq!(report.advice[0].code, "low_hit_rate");
    /// println!("{report}");
    /// # Ok(())
    /// # }
    /// ```
    pub async fn report(&self) -> CacheReport {
        let health = (*self.inner.backend).health().await.ok();
        let stats = self.stats();
        let previous = lock(&self.inner.last_report).replace(stats);
        CacheReport::new(stats, previous, health)
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
        (*self.inner.backend).close().await
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
        let gen_key = self.generation_key(category);
        let stored = self.track((*self.inner.backend).get(&gen_key).await)?;
        if stored.is_none() {
            // Store generation 0 explicitly: a key that exists can be copied
            // into an L1 (and invalidated there by a backplane), so reading
            // it again is local instead of a round trip per call.
            let zero = Bytes::from_static(b"0");
            let opts = SetOptions::default().with_mode(SetMode::IfAbsent);
            if let Err(err) = (*self.inner.backend).set(&gen_key, zero, opts).await {
                tracing::debug!(error = %err, "storing generation 0 failed");
            }
        }
        let stored = stored
            .and_then(|b| std::str::from_utf8(&b).ok()?.parse::<u64>().ok())
            .unwrap_or(0);
        self.remember_generation(category, stored);
        Ok(stored.max(cached.map_or(0, |(g, _)| g)))
    }

    fn encode<T: Serialize + ?Sized>(&self, value: &T) -> Result<Bytes> {
        self.inner.codec.encode(value).inspect_err(|_| {
            self.inner.counters.inc(Stat::Errors, 1);
        })
    }

    fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T> {
        self.inner
            .codec
            .decode(bytes)
            .inspect_err(|err| self.count_decode_error(err))
    }

    fn count_decode_error(&self, err: &Error) {
        self.inner.counters.inc(Stat::DecodeErrors, 1);
        self.inner.counters.inc(Stat::Errors, 1);
        tracing::debug!(error = %err, "a stored value did not decode");
    }

    fn track<T>(&self, result: Result<T>) -> Result<T> {
        if result.is_err() {
            self.inner.counters.inc(Stat::Errors, 1);
        }
        result
    }
}
