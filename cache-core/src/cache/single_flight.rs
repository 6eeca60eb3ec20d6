//! `get_or_set`: cache-aside with single flight (one load per key in
//! flight in this process), refresh-ahead and fail-safe stale values; and
//! its adaptive form, whose loader decides per value how it is cached
//! ([`Loaded`]). Every flavour runs through one `join_or_lead` / `load`.

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::watch;

use super::distributed::Gate;
use super::typed::Lent;
use super::{lock, Cache, Inner};
use crate::backend::{SetMode, SetOptions};
use crate::codec::Codec;
use crate::error::{Error, ErrorKind, Result};
use crate::fail_safe::now_ms;
use crate::key::CacheKey;
use crate::stats::Stat;
use crate::ttl::Ttl;

/// What a load in flight answers: `None` until it finishes.
pub(super) type FlightResult = Option<Result<Bytes>>;

/// Options of [`Cache::get_or_set_opts`].
///
/// # Examples
///
/// ```
/// use cache::{GetOrSetOptions, Ttl};
///
/// let opts = GetOrSetOptions::default().with_ttl(Ttl::secs(60)).with_tags(["user:42"]);
/// assert_eq!(opts.tags, ["user:42"]);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct GetOrSetOptions {
    /// The TTL of a loaded value.
    pub ttl: Ttl,
    /// Whether this call uses the cache's distributed single flight
    /// ([`CacheBuilder::distributed_single_flight`](super::CacheBuilder::distributed_single_flight));
    /// `None`: as the cache's settings say. Without a flight lock on the
    /// cache there is none to use.
    pub distributed: Option<bool>,
    /// The tags a loaded value is stored with (see
    /// [`Cache::invalidate_tag`]); none by default.
    pub tags: Vec<String>,
}

impl GetOrSetOptions {
    /// Sets the TTL of a loaded value.
    #[must_use]
    pub fn with_ttl(mut self, ttl: impl Into<Ttl>) -> Self {
        self.ttl = ttl.into();
        self
    }

    /// Uses (or not) the cache's distributed single flight for this call.
    #[must_use]
    pub fn with_distributed(mut self, on: bool) -> Self {
        self.distributed = Some(on);
        self
    }

    /// Adds tags to a loaded value: [`Cache::invalidate_tag`] of any of
    /// them makes it unreachable, and the next `get_or_set` reloads it
    /// (FusionCache's `Tags` and `RemoveByTag`).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> cache::Result<()> {
    /// use cache::{Cache, CacheKey, GetOrSetOptions};
    /// use cache::memory::MemoryBackend;
    /// use std::sync::Arc;
    ///
    /// let cache = Cache::new(Arc::new(MemoryBackend::new()));
    /// let key = CacheKey::new("product", 7)?;
    /// let opts = GetOrSetOptions::default().with_tags(["catalog"]);
    /// let load = || async { Ok::<_, std::io::Error>(9.5_f64) };
    /// cache.get_or_set_opts(&key, opts.clone(), load).await?;
    /// cache.get_or_set_opts(&key, opts.clone(), load).await?; // a hit
    /// cache.invalidate_tag("catalog").await?;
    /// cache.get_or_set_opts(&key, opts, load).await?; // reloaded
    /// assert_eq!(cache.stats().loader_calls, 2);
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn with_tags<I, S>(mut self, tags: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.tags.extend(tags.into_iter().map(Into::into));
        self
    }
}

/// A loader's answer to [`Cache::get_or_set_adaptive`]: the value, and how
/// to cache it, decided from the value itself (e.g. a 404 for 30 s, a 200
/// for 10 min, an error page not at all).
///
/// Built with [`Loaded::new`] (stored with the category's TTL, like
/// [`Cache::get_or_set`]) and adjusted with [`with_ttl`](Loaded::with_ttl),
/// [`with_tags`](Loaded::with_tags) or [`dont_cache`](Loaded::dont_cache).
///
/// The struct is `#[non_exhaustive]` so that per-value options can be
/// added without breaking loaders.
///
/// # Examples
///
/// ```
/// use cache::{Loaded, Ttl};
///
/// let found = Loaded::new("page").with_ttl(Ttl::secs(600));
/// assert_eq!((found.ttl, found.store), (Ttl::secs(600), true));
/// let failed = Loaded::new("error page").dont_cache();
/// assert!(!failed.store);
/// assert_eq!(failed.into_value(), "error page");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Loaded<T> {
    /// The loaded value, returned to every caller of the flight.
    pub value: T,
    /// The TTL it is stored with ([`Ttl::Default`]: the category's TTL from
    /// the cache's [`TtlPolicy`](crate::TtlPolicy)). A zero TTL means "do
    /// not store" and removes the stored value, as for every write.
    pub ttl: Ttl,
    /// Whether the value is stored at all: `false` returns it to the
    /// callers of this flight only, and leaves the backend untouched, so the
    /// next call runs the loader again.
    pub store: bool,
    /// The tags it is stored with (see [`Cache::invalidate_tag`]), after
    /// those of the [`GetOrSetOptions`], if any.
    pub tags: Vec<String>,
}

impl<T> Loaded<T> {
    /// `value`, to be stored with the category's TTL.
    pub fn new(value: T) -> Self {
        Loaded {
            value,
            ttl: Ttl::Default,
            store: true,
            tags: Vec::new(),
        }
    }

    /// Stores the value with these tags (added to any already set), e.g.
    /// tags chosen from the value itself: the ids it refers to.
    ///
    /// # Examples
    ///
    /// ```
    /// use cache::Loaded;
    ///
    /// let order = ("order 17", 42); // (what, customer id)
    /// let loaded = Loaded::new(order).with_tags([format!("customer:{}", order.1)]);
    /// assert_eq!(loaded.tags, ["customer:42"]);
    /// ```
    #[must_use]
    pub fn with_tags<I, S>(mut self, tags: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.tags.extend(tags.into_iter().map(Into::into));
        self
    }

    /// Stores the value with `ttl`.
    #[must_use]
    pub fn with_ttl(mut self, ttl: impl Into<Ttl>) -> Self {
        self.ttl = ttl.into();
        self
    }

    /// Returns the value to the callers without storing it.
    #[must_use]
    pub fn dont_cache(mut self) -> Self {
        self.store = false;
        self
    }

    /// The value.
    pub fn into_value(self) -> T {
        self.value
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
impl<C: Codec> Cache<C> {
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
    /// - A load never overwrites a value written after it started: a write
    ///   or delete through this `Cache` during the load (tracked per key)
    ///   means the loaded value is returned but not stored; and a load that
    ///   began from a miss stores with `IfAbsent`, so a value another
    ///   instance wrote meanwhile stays. (A write by another instance over a
    ///   *stale* or undecodable value can still race the reload that
    ///   replaces it.)
    /// - With [fail-safe](super::CacheBuilder::fail_safe): a stale value is served
    ///   (and counted in `stale_served`) when the loader fails or exceeds
    ///   the soft timeout; the slow load finishes in the background.
    /// - With [refresh-ahead](super::CacheBuilder::refresh_ahead): a hit close to
    ///   expiry starts one background reload.
    /// - With [distributed single flight](super::CacheBuilder::distributed_single_flight)
    ///   (and unless `opts` turn it off): the load of this process first
    ///   takes the key's lease, so one process of all those sharing the
    ///   lock runs the loader; the others wait for its value.
    ///
    /// # Errors
    ///
    /// - [`Loader`](ErrorKind::Loader) with the loader's error as source.
    ///   With fail-safe and a stale value, loader errors are not returned.
    /// - [`InvalidKey`](ErrorKind::InvalidKey) for a full key over
    ///   [`MAX_KEY_LEN`](crate::MAX_KEY_LEN) bytes, as for
    ///   [`get`](Cache::get); the loader does not run.
    /// - [`Codec`](ErrorKind::Codec) when the loaded value cannot be
    ///   encoded.
    /// - The backend's errors on the read.
    ///
    /// A loaded value the backend refuses to store (over its size limit,
    /// or the backend failing) is still returned, not stored: the failure
    /// is logged (`warn`) and counted in [`CacheStats`](crate::CacheStats)
    /// (`errors`, and `caller_errors` for an oversize value).
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
        let GetOrSetOptions {
            ttl,
            tags,
            distributed,
        } = opts;
        self.get_or_set_loaded(key, distributed, move || {
            let load = loader();
            async move {
                load.await
                    .map(|value| Loaded::new(value).with_ttl(ttl).with_tags(tags))
            }
        })
        .await
    }

    /// Adaptive caching: [`get_or_set`](Cache::get_or_set) where the loader
    /// decides, from the value it loaded, how long it is cached or whether
    /// it is cached at all (a [`Loaded`]).
    ///
    /// Everything else is as in [`get_or_set_opts`](Cache::get_or_set_opts):
    /// one load per key in flight (every caller waiting on it gets the
    /// value, also one that is not cached), fail-safe, refresh-ahead, and a
    /// load never overwrites a newer write.
    ///
    /// # Examples
    ///
    /// Cache a "not found" for 30 s and a found page for 10 minutes:
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> cache::Result<()> {
    /// use cache::{Cache, CacheKey, Loaded, Ttl};
    /// use cache::memory::MemoryBackend;
    /// use std::sync::Arc;
    ///
    /// async fn fetch(id: u32) -> Result<Option<String>, std::io::Error> {
    ///     Ok((id == 1).then(|| "Ada".to_string()))
    /// }
    ///
    /// let cache = Cache::new(Arc::new(MemoryBackend::new()));
    /// for id in [1, 2] {
    ///     let key = CacheKey::new("user", id)?;
    ///     let user: Option<String> = cache
    ///         .get_or_set_adaptive(&key, move || async move {
    ///             let user = fetch(id).await?;
    ///             let ttl = if user.is_some() { Ttl::secs(600) } else { Ttl::secs(30) };
    ///             Ok::<_, std::io::Error>(Loaded::new(user).with_ttl(ttl))
    ///         })
    ///         .await?;
    ///     assert_eq!(user.is_some(), id == 1);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`get_or_set_opts`](Cache::get_or_set_opts).
    pub async fn get_or_set_adaptive<T, F, Fut, E>(&self, key: &CacheKey, loader: F) -> Result<T>
    where
        T: Serialize + DeserializeOwned + Send + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = std::result::Result<Loaded<T>, E>> + Send + 'static,
        E: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
    {
        self.get_or_set_loaded(key, None, loader).await
    }

    /// The work of every `get_or_set` flavour: the loader answers a
    /// [`Loaded`] that carries its own caching decision.
    async fn get_or_set_loaded<T, F, Fut, E>(
        &self,
        key: &CacheKey,
        distributed: Option<bool>,
        loader: F,
    ) -> Result<T>
    where
        T: Serialize + DeserializeOwned + Send + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = std::result::Result<Loaded<T>, E>> + Send + 'static,
        E: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
    {
        // A small plain value lent now is decoded where it lies and is a
        // fresh hit (no envelope: no expiry, no tags), as `get` reads it;
        // one that does not decode is counted and read as a miss, as
        // `decode_stored` reads it.
        let read = match self.read_lent::<T>(key)? {
            Lent::Decoded(Ok(value)) => {
                self.inner.counters.inc(Stat::Hits, 1);
                return Ok(value);
            }
            Lent::Decoded(Err(_)) => Ok(None),
            Lent::Kept(stored) => Ok(stored),
            Lent::Pending(pending) => Err(pending),
        };
        let (stored, full) = self.read_rest(key, read).await?;
        let now = now_ms();
        let mut stale = None;
        if let Some((value, entry)) = self.decode_stored::<T>(stored).await? {
            if entry.is_fresh(now) {
                self.inner.counters.inc(Stat::Hits, 1);
                if let Some(fraction) = self.inner.refresh_ahead {
                    if entry.in_refresh_window(now, fraction) {
                        let full = self.or_full_key(key, full).await?;
                        self.refresh(key, full, distributed, loader);
                    }
                }
                return Ok(value);
            }
            if self.inner.fail_safe.is_some() {
                stale = Some(value);
            }
        }
        let full = self.or_full_key(key, full).await?;
        let (mut flight, joined) = self.join_or_lead(key, &full, distributed, loader);
        // A caller that joins a load in flight is answered without a load of
        // its own: counted apart from the miss that started the load.
        let stat = if joined {
            Stat::Coalesced
        } else {
            Stat::Misses
        };
        self.inner.counters.inc(stat, 1);
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
    fn refresh<T, F, Fut, E>(
        &self,
        key: &CacheKey,
        full: String,
        distributed: Option<bool>,
        loader: F,
    ) where
        T: Serialize + DeserializeOwned + Send + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = std::result::Result<Loaded<T>, E>> + Send + 'static,
        E: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
    {
        if lock(&self.inner.flights).contains_key(&full) {
            return;
        }
        self.inner.counters.inc(Stat::Refreshes, 1);
        drop(self.join_or_lead(key, &full, distributed, loader).0);
    }

    /// Joins the load of `full` in flight, or starts one in a task of its
    /// own; returns the channel its result arrives on, and whether it joined
    /// a load already in flight.
    fn join_or_lead<T, F, Fut, E>(
        &self,
        key: &CacheKey,
        full: &str,
        distributed: Option<bool>,
        loader: F,
    ) -> (watch::Receiver<FlightResult>, bool)
    where
        T: Serialize + DeserializeOwned + Send + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = std::result::Result<Loaded<T>, E>> + Send + 'static,
        E: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
    {
        let mut flights = lock(&self.inner.flights);
        if let Some(rx) = flights.get(full) {
            return (rx.clone(), true);
        }
        let (tx, rx) = watch::channel(None);
        flights.insert(full.to_owned(), rx.clone());
        drop(flights);
        let cache = self.clone();
        let guard = FlightGuard {
            inner: Arc::clone(&self.inner),
            key: full.to_owned(),
        };
        let category = key.category().to_owned();
        tokio::spawn(async move {
            let result = cache
                .load::<T, _, _, _>(&guard.key, &category, distributed, loader)
                .await;
            // Leave the table before answering: a caller arriving after the
            // answer must start a new load, not receive this (maybe failed)
            // one. Callers already waiting hold the channel.
            drop(guard);
            let _ = tx.send(Some(result));
        });
        (rx, false)
    }

    /// The leader's work: re-check the backend (another instance, or a
    /// load that just finished, may have stored the value), else run the
    /// loader and store its value as its [`Loaded`] answer says (TTL, or
    /// not at all). Returns the encoded value.
    async fn load<T, F, Fut, E>(
        &self,
        full: &str,
        category: &str,
        distributed: Option<bool>,
        loader: F,
    ) -> Result<Bytes>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce() -> Fut,
        Fut: Future<Output = std::result::Result<Loaded<T>, E>>,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        // Across processes: lead the load, or return the leader's value.
        // The lease is released after the store below, or when it drops.
        let lease = match self.flight_gate::<T>(full, distributed).await {
            Gate::Ready(payload) => return Ok(payload),
            Gate::Lead(lease) => Some(lease),
            Gate::Local => None,
        };
        // Taken before the backend is read: a write through this cache that
        // begins after it (or is in flight now) wins over this load.
        let snapshot = self.inner.writes.snapshot(full);
        let mut absent = false;
        match (*self.inner.backend).get(full).await {
            Ok(Some(bytes)) => {
                let entry = self.unwrap_stored(bytes);
                // An invalidated (tag) entry is reloaded and overwritten.
                if entry.is_fresh(now_ms())
                    && !entry.in_refresh_window(now_ms(), self.inner.refresh_ahead.unwrap_or(0.0))
                    && self.tags_current(&entry).await.unwrap_or(false)
                {
                    // A failure is not counted again: the read that
                    // started this load counted these bytes (bytes written
                    // since, that do not decode either, go uncounted; they
                    // are reloaded all the same).
                    if self.inner.codec.decode::<T>(&entry.payload).is_ok() {
                        return Ok(entry.payload);
                    }
                }
            }
            Ok(None) => absent = true,
            Err(_) => {}
        }
        self.inner.counters.inc(Stat::LoaderCalls, 1);
        let loaded = match loader().await {
            Ok(loaded) => loaded,
            Err(e) => {
                self.inner.counters.inc(Stat::LoaderErrors, 1);
                self.inner.counters.inc(Stat::Errors, 1);
                let cause = e.into();
                // The cause is in the message too: most logs print only
                // `Display`, and "the loader failed" alone says nothing.
                let message = format!("the get_or_set loader failed: {cause}");
                return Err(Error::new(ErrorKind::Loader, message)
                    .with_operation("get_or_set")
                    .with_boxed_source(cause));
            }
        };
        let payload = self.encode(&loaded.value)?;
        if !loaded.store {
            tracing::debug!(category, "the loader asked not to cache its value");
            return Ok(payload);
        }
        let ttl = loaded.ttl.resolve(&*self.inner.policy, category);
        let Some(snapshot) = snapshot.filter(|s| self.inner.writes.unchanged(*s)) else {
            tracing::debug!(
                category,
                "a write overtook the load: its value is not stored"
            );
            return Ok(payload);
        };
        let stamps = match self.stamp_tags(&loaded.tags).await {
            Ok(stamps) => stamps,
            Err(err) => {
                // Invalid tags are the loader's mistake (returned); an
                // unreachable marker leaves the value unstored. Either is
                // counted already, where `stamp_tags` met it.
                tracing::warn!(error = %err, category, "reading the tags of a loaded value failed");
                if err.is_retryable() {
                    return Ok(payload);
                }
                return Err(err);
            }
        };
        let (stored, physical) = self.stored_form(payload.clone(), ttl, &stamps);
        // From a miss, store only if still absent: a value another instance
        // wrote meanwhile is newer than this load's.
        let mode = if absent {
            SetMode::IfAbsent
        } else {
            SetMode::Always
        };
        let opts = SetOptions::ttl(physical).with_mode(mode);
        match (*self.inner.backend).set(full, stored, opts).await {
            Ok(written) => self.inner.counters.inc(Stat::Sets, u64::from(written)),
            Err(err) => {
                self.count_error(&err);
                tracing::warn!(error = %err, category, "storing a loaded value failed");
            }
        }
        if mode == SetMode::Always && !self.inner.writes.unchanged(snapshot) {
            // A write began while this value was being stored: which landed
            // last is unknown, so leave a miss rather than maybe a stale value.
            if let Err(err) = (*self.inner.backend).delete(full).await {
                tracing::warn!(error = %err, category, "dropping an overtaken load failed");
            }
        }
        if let Some(lease) = lease {
            lease.release().await;
        }
        Ok(payload)
    }
}
