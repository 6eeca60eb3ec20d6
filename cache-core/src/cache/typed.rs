//! Typed reads and writes: `get`, `set`, `delete`, `exists`, `incr` and
//! their batch forms, over the codec and the key's full name.

use std::collections::HashMap;
use std::future::Future;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::envelope::Live;
use super::{Cache, Pending, ReadNow};
use crate::backend::{KeyTtl, SetMode, SetOptions};
use crate::codec::Codec;
use crate::error::Result;
use crate::fail_safe::now_ms;
use crate::key::CacheKey;
use crate::stats::Stat;
use crate::ttl::Ttl;

/// The largest value [`Cache::get`] decodes where a backend lends it, under
/// the backend's lock (see [`CacheBackend::read_now_joined`]): a decode of
/// a kilobyte holds the lock for a microsecond or two. A larger value is
/// cloned out first.
///
/// [`CacheBackend::read_now_joined`]: crate::CacheBackend::read_now_joined
const DECODED_IN_PLACE: usize = 1024;

/// What [`Cache::read_lent`] got now.
pub(super) enum Lent<T> {
    /// A value decoded where it lay (or its decode error).
    Decoded(Result<T>),
    /// What is stored, to read the long way (an envelope, a large value,
    /// nothing).
    Kept(Option<Bytes>),
    /// No answer now.
    Pending(Pending),
}

impl<C: Codec> Cache<C> {
    /// The value of `key`, decoded as `T`; `None` on a miss.
    ///
    /// A value of up to 1 KiB that the backend keeps in memory is decoded
    /// where it lies, under the backend's read lock on it (see
    /// [`CacheBackend::read_now_joined`](crate::CacheBackend::read_now_joined)):
    /// `T`'s `Deserialize` must not call that backend itself.
    ///
    /// # Errors
    ///
    /// - [`InvalidKey`](crate::ErrorKind::InvalidKey) when the full key
    ///   (prefix, category, generation and id) is longer than
    ///   [`MAX_KEY_LEN`](crate::MAX_KEY_LEN) bytes: a [`CacheKey`]'s id
    ///   alone may be that long, so bound ids well under it.
    /// - [`Codec`](crate::ErrorKind::Codec) when the stored bytes do not
    ///   decode as `T` (counted in `decode_errors`).
    /// - [`Closed`](crate::ErrorKind::Closed) after [`close`](Cache::close).
    /// - The backend's errors: [`Connection`](crate::ErrorKind::Connection),
    ///   [`Timeout`](crate::ErrorKind::Timeout),
    ///   [`Backend`](crate::ErrorKind::Backend).
    pub fn get<'a, T: DeserializeOwned>(
        &'a self,
        key: &'a CacheKey,
    ) -> impl Future<Output = Result<Option<T>>> + use<'a, C, T> {
        // A backend that answers now (in memory) is read at the first poll
        // by a future of three words: it is moved whole wherever it goes
        // (a first time before it is polled), and a large one is costly to
        // move just after it is written. What needs an await is boxed.
        let mut rest = None;
        std::future::poll_fn(move |cx| {
            let rest = match &mut rest {
                Some(rest) => rest,
                None => {
                    let now = match self.read_lent(key) {
                        Err(err) => return Poll::Ready(Err(err)),
                        Ok(Lent::Decoded(decoded)) => {
                            // Mapped, not `?` then `Ok(Some(..))`: one move
                            // of `T` less.
                            return Poll::Ready(decoded.map(|value| {
                                self.inner.counters.inc(Stat::Hits, 1);
                                Some(value)
                            }));
                        }
                        Ok(Lent::Kept(None)) => return Poll::Ready(self.counted_miss()),
                        Ok(Lent::Kept(Some(stored))) => match self.plain(&stored) {
                            Some(payload) => return Poll::Ready(self.decode_hit(payload)),
                            None => Ok(Some(stored)),
                        },
                        Ok(Lent::Pending(pending)) => Err(pending),
                    };
                    rest.insert(Box::pin(self.get_rest(key, now)))
                }
            };
            rest.as_mut().poll(cx)
        })
    }

    /// The rest of [`get`](Cache::get) after the read now: the awaited
    /// read of what it did not get, and the envelope of what it got.
    async fn get_rest<T: DeserializeOwned>(
        &self,
        key: &CacheKey,
        now: std::result::Result<Option<Bytes>, Pending>,
    ) -> Result<Option<T>> {
        // The awaited read written out, not `read_rest`'s: awaited from
        // here, that future's state holds `now` twice, and a typed Redis
        // GET took ~150-250 more instructions (callgrind, 50 tasks). Each
        // `match` that awaits matches a local, not a temporary (which
        // would be kept to the end of its statement, across the await).
        let stored = match now {
            Ok(stored) => stored,
            Err(Pending::Rendered(full)) => {
                let stored = self.track((*self.inner.backend).get(&full).await)?;
                Self::recycle(Some(full));
                stored
            }
            Err(Pending::Unknown) => {
                let (stored, full) = Box::pin(self.read_unknown(key)).await?;
                Self::recycle(Some(full));
                stored
            }
        };
        if let Some(payload) = stored.as_deref().and_then(|bytes| self.plain(bytes)) {
            return self.decode_hit(payload);
        }
        let tags_checked = match self.live_now(stored, None) {
            Live::Entry(entry) => return self.decode_hit(&entry.payload),
            Live::Tagged(entry) => self.tags_checked(entry),
            Live::Dead => return self.counted_miss(),
        };
        match tags_checked.await? {
            Some(entry) => self.decode_hit(&entry.payload),
            None => self.counted_miss(),
        }
    }

    /// `payload` decoded, counted as a hit.
    #[inline(always)]
    fn decode_hit<T: DeserializeOwned>(&self, payload: &[u8]) -> Result<Option<T>> {
        // Mapped, not `?` then `Ok(Some(..))`: one move of `T` less.
        self.decode(payload).map(|value| {
            self.inner.counters.inc(Stat::Hits, 1);
            Some(value)
        })
    }

    /// A miss, counted.
    fn counted_miss<T>(&self) -> Result<Option<T>> {
        self.inner.counters.inc(Stat::Misses, 1);
        Ok(None)
    }

    /// The read of [`get`](Cache::get) as far as it goes now. A backend
    /// that answers now lends the value: a small one that is the codec's
    /// alone is decoded where it lies (no reference count taken), any other
    /// is kept for the rest of the read.
    ///
    /// Not in `get` itself: what it holds would be held across the awaited
    /// read, in the future of every `get`.
    #[inline(always)]
    pub(super) fn read_lent<T: DeserializeOwned>(&self, key: &CacheKey) -> Result<Lent<T>> {
        let mut lent = Lent::Kept(None);
        let now = self.read_now_lent(key, &mut |stored| {
            lent = match self.plain(stored) {
                Some(payload) if payload.len() <= DECODED_IN_PLACE => {
                    Lent::Decoded(self.decode(payload))
                }
                _ => Lent::Kept(Some(stored.clone())),
            }
        });
        Ok(match now {
            // What the backend answers rules: a value it did not report
            // (a layer that turned a failure into a miss) is not served.
            ReadNow::Answered(found) => {
                if found? {
                    lent
                } else {
                    Lent::Kept(None)
                }
            }
            ReadNow::Pending(pending) => Lent::Pending(pending),
        })
    }

    /// The value of `key` with how long it stays fresh here: its remaining
    /// *logical* TTL (`None`: never expires). With fail-safe on, that is
    /// the TTL it was written with, not the longer time the backend keeps
    /// it to serve stale; with refresh-ahead on, the time until its refresh
    /// window opens. This is how long a copy of the decoded value (an L1
    /// such as [`TypedL1`](crate::TypedL1)) may serve it.
    ///
    /// # Errors
    ///
    /// As [`get`](Cache::get).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> cache::Result<()> {
    /// use cache::{Cache, CacheKey, FailSafe, Ttl};
    /// use cache::memory::MemoryBackend;
    /// use std::sync::Arc;
    /// use std::time::Duration;
    ///
    /// let cache = Cache::builder(Arc::new(MemoryBackend::new()))
    ///     .fail_safe(FailSafe::new(Duration::from_secs(3600)))
    ///     .build()?;
    /// let key = CacheKey::new("rate", "EUR")?;
    /// cache.set_with_ttl(&key, &1.08, Ttl::secs(60)).await?;
    /// let (rate, fresh_for) = cache.get_with_ttl::<f64>(&key).await?.unwrap();
    /// assert_eq!(rate, 1.08);
    /// assert!(fresh_for.unwrap() <= Duration::from_secs(60)); // not 60 s + 1 h
    /// # Ok(())
    /// # }
    /// ```
    pub async fn get_with_ttl<T: DeserializeOwned>(
        &self,
        key: &CacheKey,
    ) -> Result<Option<(T, Option<Duration>)>> {
        let (stored, full) = self.read_stored(key).await?;
        let now = now_ms();
        let entry = match self.live_entry(stored, Some(now)).await? {
            Some(entry) => entry,
            None => {
                self.inner.counters.inc(Stat::Misses, 1);
                return Ok(None);
            }
        };
        let value = self.decode(&entry.payload)?;
        self.inner.counters.inc(Stat::Hits, 1);
        let fresh_for = match entry.fresh_for(now, self.inner.refresh_ahead) {
            Some(left) => Some(left),
            None => match self.track(
                (*self.inner.backend)
                    .ttl(&self.or_full_key(key, full).await?)
                    .await,
            )? {
                KeyTtl::Persistent => None,
                KeyTtl::Expires(left) => Some(left),
                KeyTtl::Missing => Some(Duration::ZERO),
            },
        };
        Ok(Some((value, fresh_for)))
    }

    /// Writes `value` with the category's TTL.
    ///
    /// # Errors
    ///
    /// Nothing is written when any of these is returned:
    /// - [`InvalidKey`](crate::ErrorKind::InvalidKey) for a full key over
    ///   [`MAX_KEY_LEN`](crate::MAX_KEY_LEN) bytes, as for
    ///   [`get`](Cache::get).
    /// - [`InvalidValue`](crate::ErrorKind::InvalidValue) when the encoded
    ///   value is larger than the backend accepts (its `max_value_size`:
    ///   by default 64 MiB in memory, 512 MiB on Redis).
    /// - [`Codec`](crate::ErrorKind::Codec) when `value` cannot be encoded.
    /// - [`Closed`](crate::ErrorKind::Closed) after [`close`](Cache::close).
    ///
    /// And the backend's errors (a write that timed out may have landed).
    pub async fn set<T: Serialize + ?Sized>(&self, key: &CacheKey, value: &T) -> Result<()> {
        self.set_with_ttl(key, value, Ttl::Default).await
    }

    /// Writes `value` with an explicit TTL: a [`Ttl`], or a `Duration`. A
    /// zero TTL stores nothing and removes the current value.
    ///
    /// # Errors
    ///
    /// As [`set`](Cache::set).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> cache::Result<()> {
    /// use cache::{Cache, CacheKey, KeyTtl, Ttl};
    /// use cache::memory::MemoryBackend;
    /// use std::sync::Arc;
    /// use std::time::Duration;
    ///
    /// let cache = Cache::new(Arc::new(MemoryBackend::new()));
    /// let key = CacheKey::new("otp", "ada")?;
    /// cache.set_with_ttl(&key, "492113", Duration::from_secs(300)).await?;
    /// cache.set_with_ttl(&key, "492113", Ttl::secs(300)).await?; // the same
    /// assert!(matches!(cache.ttl(&key).await?, KeyTtl::Expires(left) if left <= Duration::from_secs(300)));
    /// cache.set_with_ttl(&key, "492113", Duration::ZERO).await?; // removes it
    /// assert_eq!(cache.get::<String>(&key).await?, None);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn set_with_ttl<T: Serialize + ?Sized>(
        &self,
        key: &CacheKey,
        value: &T,
        ttl: impl Into<Ttl>,
    ) -> Result<()> {
        self.write(key, value, ttl.into(), SetMode::Always, &[])
            .await
            .map(drop)
    }

    /// Writes `value` with options: a TTL and tags (see
    /// [`WriteOptions`]). A tagged entry becomes unreachable when any of
    /// its tags is invalidated ([`invalidate_tag`](Cache::invalidate_tag)).
    ///
    /// Without tags, the value is stored as [`set_with_ttl`](Cache::set_with_ttl)
    /// stores it (the codec's bytes, with no fail-safe or refresh-ahead);
    /// with tags, in the tagged envelope, which records each tag's current
    /// epoch (read from the backend at most once per generation refresh
    /// interval, and created there on first use).
    ///
    /// # Errors
    ///
    /// As [`set`](Cache::set); [`InvalidKey`](crate::ErrorKind::InvalidKey)
    /// for an invalid tag (empty, longer than [`MAX_TAG_LEN`](crate::MAX_TAG_LEN)
    /// bytes, a control character), [`InvalidValue`](crate::ErrorKind::InvalidValue)
    /// for more than [`MAX_TAGS_PER_ENTRY`](crate::MAX_TAGS_PER_ENTRY)
    /// distinct tags: nothing is written.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> cache::Result<()> {
    /// use cache::{Cache, CacheKey, Ttl, WriteOptions};
    /// use cache::memory::MemoryBackend;
    /// use std::sync::Arc;
    ///
    /// let cache = Cache::new(Arc::new(MemoryBackend::new()));
    /// let key = CacheKey::new("order", 17)?;
    /// let opts = WriteOptions::default()
    ///     .with_ttl(Ttl::secs(300))
    ///     .with_tags(["customer:42", "orders"]);
    /// cache.set_opts(&key, &["book", "pen"], opts).await?;
    /// assert!(cache.get::<Vec<String>>(&key).await?.is_some());
    /// cache.invalidate_tag("customer:42").await?;
    /// assert_eq!(cache.get::<Vec<String>>(&key).await?, None);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn set_opts<T: Serialize + ?Sized>(
        &self,
        key: &CacheKey,
        value: &T,
        opts: WriteOptions,
    ) -> Result<()> {
        self.write(key, value, opts.ttl, SetMode::Always, &opts.tags)
            .await
            .map(drop)
    }

    /// Writes `value` only if `key` holds nothing; returns whether it wrote.
    ///
    /// The value is a claim (a lease, a lock, an idempotency marker): with
    /// [fail-safe](super::CacheBuilder::fail_safe) on it is still not kept
    /// past its TTL, so once `ttl` has passed the key can be claimed again.
    /// A value written by [`set`](Cache::set) or
    /// [`get_or_set`](Cache::get_or_set) under fail-safe is kept `max_stale`
    /// past its TTL to be served stale, and counts as present here until
    /// then.
    ///
    /// # Errors
    ///
    /// As [`set`](Cache::set).
    pub async fn set_if_absent<T: Serialize + ?Sized>(
        &self,
        key: &CacheKey,
        value: &T,
        ttl: impl Into<Ttl>,
    ) -> Result<bool> {
        self.write(key, value, ttl.into(), SetMode::IfAbsent, &[])
            .await
    }

    async fn write<T: Serialize + ?Sized>(
        &self,
        key: &CacheKey,
        value: &T,
        ttl: Ttl,
        mode: SetMode,
        tags: &[String],
    ) -> Result<bool> {
        let full = self.full_key(key).await?;
        let ttl = ttl.resolve(&*self.inner.policy, key.category());
        let payload = self.encode(value)?;
        let stamps = self.stamp_tags(tags).await?;
        let (bytes, physical) = self.stored_form(payload, ttl, &stamps);
        // A claim is not kept past its TTL to be served stale: it would
        // refuse every later claim while reads find the key empty.
        let physical = match mode {
            SetMode::IfAbsent => ttl,
            SetMode::Always => physical,
        };
        let opts = SetOptions::ttl(physical).with_mode(mode);
        let _write = self.inner.writes.begin_keys(&[&full]);
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
        let _write = self.inner.writes.begin_keys(&[&full]);
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
    /// [`InvalidValue`](crate::ErrorKind::InvalidValue) when the key holds a
    /// non-integer or the sum overflows; the backend's errors.
    pub async fn incr(&self, key: &CacheKey, delta: i64) -> Result<i64> {
        let full = self.full_key(key).await?;
        let ttl = Ttl::Default.resolve(&*self.inner.policy, key.category());
        let _write = self.inner.writes.begin_keys(&[&full]);
        self.track((*self.inner.backend).incr(&full, delta, ttl).await)
    }

    /// The values of `keys`, in order, `None` for each miss.
    ///
    /// # Errors
    ///
    /// [`Codec`](crate::ErrorKind::Codec) when any stored value does not decode as
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
            match self.live_entry(value, Some(now)).await? {
                Some(entry) => {
                    out.push(Some(self.decode(&entry.payload)?));
                    hits += 1;
                }
                None => {
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
    /// [`Codec`](crate::ErrorKind::Codec) when any value cannot be encoded (nothing
    /// is written); the backend's errors.
    pub async fn set_many<T: Serialize>(
        &self,
        items: &[(CacheKey, T)],
        ttl: impl Into<Ttl>,
    ) -> Result<()> {
        self.set_many_opts(items, WriteOptions::default().with_ttl(ttl))
            .await
    }

    /// [`set_many`](Cache::set_many) with options: every item gets the
    /// TTL and the tags of `opts` (each tag's epoch is read once for the
    /// batch).
    ///
    /// # Errors
    ///
    /// As [`set_many`](Cache::set_many), and the tag errors of
    /// [`set_opts`](Cache::set_opts).
    pub async fn set_many_opts<T: Serialize>(
        &self,
        items: &[(CacheKey, T)],
        opts: WriteOptions,
    ) -> Result<()> {
        self.check_open()?;
        let ttl = opts.ttl;
        let stamps = self.stamp_tags(&opts.tags).await?;
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
            let (bytes, _) = self.stored_form(self.encode(value)?, groups[slot].0, &stamps);
            groups[slot].1.push((full, bytes));
        }
        for (ttl, entries) in groups {
            let ttl = self.physical_ttl(ttl);
            let refs: Vec<(&str, Bytes)> = entries
                .iter()
                .map(|(k, v)| (k.as_str(), v.clone()))
                .collect();
            let keys: Vec<&str> = refs.iter().map(|(k, _)| *k).collect();
            let _write = self.inner.writes.begin_keys(&keys);
            self.track((*self.inner.backend).set_many(&refs, ttl).await)?;
        }
        self.inner.counters.inc(Stat::Sets, items.len() as u64);
        Ok(())
    }
}

/// Key operations beyond reads and writes: batch delete, touch (`expire`)
/// and the remaining life (`ttl`), through the same keys (category,
/// generation, version) and counters as the typed operations.
impl<C: Codec> Cache<C> {
    /// Removes `keys`; returns how many of them existed (each counted
    /// once, in `deletes`). One backend batch; an empty slice makes no
    /// backend call.
    ///
    /// # Errors
    ///
    /// The backend's errors (nothing is counted in `deletes` then).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> cache::Result<()> {
    /// use cache::{Cache, CacheKey};
    /// use cache::memory::MemoryBackend;
    /// use std::sync::Arc;
    ///
    /// let cache = Cache::new(Arc::new(MemoryBackend::new()));
    /// let (a, b) = (CacheKey::new("user", 1)?, CacheKey::new("user", 2)?);
    /// cache.set(&a, "Ada").await?;
    /// assert_eq!(cache.delete_many(&[a.clone(), b]).await?, 1); // b was absent
    /// assert_eq!(cache.get::<String>(&a).await?, None);
    /// assert_eq!(cache.stats().deletes, 1);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn delete_many(&self, keys: &[CacheKey]) -> Result<u64> {
        self.check_open()?;
        if keys.is_empty() {
            return Ok(0);
        }
        let mut full = Vec::with_capacity(keys.len());
        for key in keys {
            full.push(self.full_key(key).await?);
        }
        let refs: Vec<&str> = full.iter().map(String::as_str).collect();
        let _write = self.inner.writes.begin_keys(&refs);
        let removed = self.track((*self.inner.backend).delete_many(&refs).await)?;
        self.inner.counters.inc(Stat::Deletes, removed);
        Ok(removed)
    }

    /// Gives the value at `key` a new TTL, keeping the value (a "touch");
    /// returns whether `key` held a value. [`Ttl::Default`] is the
    /// category's TTL from the policy; [`Ttl::Never`] makes it persistent;
    /// a zero TTL deletes the value (counted in `deletes`, like
    /// [`delete`](Cache::delete)). A non-zero `expire` writes no new value
    /// and counts nothing (only `errors` on failure).
    ///
    /// With fail-safe or refresh-ahead on, a value is stored in an envelope
    /// that records its logical expiry, so changing the backend's TTL alone
    /// would leave the old expiry inside: `expire` then reads the value and
    /// writes it back with a new envelope and the physical TTL (the new TTL
    /// plus fail-safe's `max_stale`). A value already past its logical TTL
    /// (kept only to be served stale) counts as missing, as for
    /// [`get`](Cache::get): `false`, left as it is. That rewrite is a read
    /// then a write: a concurrent write through this `Cache` (or a clone)
    /// is detected and wins, leaving a miss when the order is unknown, but
    /// a write by another process between the read and the write can be
    /// overwritten by the older value. Values without an envelope (such as
    /// [`incr`](Cache::incr) counters) get the TTL as it is, in one call.
    ///
    /// # Errors
    ///
    /// The backend's errors.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> cache::Result<()> {
    /// use cache::{Cache, CacheKey, KeyTtl, Ttl};
    /// use cache::memory::MemoryBackend;
    /// use std::sync::Arc;
    /// use std::time::Duration;
    ///
    /// let cache = Cache::new(Arc::new(MemoryBackend::new()));
    /// let session = CacheKey::new("session", "abc")?;
    /// cache.set(&session, "Ada").await?; // persistent
    /// assert!(cache.expire(&session, Ttl::secs(60)).await?);
    /// assert!(matches!(cache.ttl(&session).await?, KeyTtl::Expires(d) if d <= Duration::from_secs(60)));
    /// assert!(cache.expire(&session, Ttl::Never).await?);
    /// assert_eq!(cache.ttl(&session).await?, KeyTtl::Persistent);
    /// assert!(cache.expire(&session, Ttl::secs(0)).await?); // deletes it
    /// assert!(!cache.expire(&session, Ttl::secs(60)).await?); // nothing to touch
    /// # Ok(())
    /// # }
    /// ```
    pub async fn expire(&self, key: &CacheKey, ttl: impl Into<Ttl>) -> Result<bool> {
        let full = self.full_key(key).await?;
        let ttl = ttl.into().resolve(&*self.inner.policy, key.category());
        if ttl.is_some_and(|t| t.is_zero()) {
            let _write = self.inner.writes.begin_keys(&[&full]);
            let existed = self.track((*self.inner.backend).expire(&full, ttl).await)?;
            self.inner.counters.inc(Stat::Deletes, u64::from(existed));
            return Ok(existed);
        }
        // The whole read-modify-write is one write: a load or another write
        // of this key overlapping it is seen by the tracker.
        let write = self.inner.writes.begin_keys(&[&full]);
        if !self.enveloped() {
            return self.track((*self.inner.backend).expire(&full, ttl).await);
        }
        let Some(bytes) = self.track((*self.inner.backend).get(&full).await)? else {
            return Ok(false);
        };
        let stored_len = bytes.len();
        let entry = self.unwrap_stored(bytes);
        if entry.payload.len() == stored_len {
            // Not an envelope (a counter, or bytes another program wrote):
            // its backend TTL is its only expiry.
            return self.track((*self.inner.backend).expire(&full, ttl).await);
        }
        if !entry.is_fresh(now_ms()) || !self.tags_current(&entry).await? {
            return Ok(false);
        }
        // The tags keep the epochs they were written with.
        let (bytes, physical) = self.stored_form(entry.payload, ttl, &entry.tags);
        self.track(
            (*self.inner.backend)
                .set(&full, bytes, SetOptions::ttl(physical))
                .await,
        )?;
        if !write.finish() {
            // Another write of this key overlapped: which landed last is
            // unknown, so leave a miss rather than maybe an older value.
            self.track((*self.inner.backend).delete(&full).await)?;
        }
        Ok(true)
    }

    /// The remaining *logical* life of the value at `key`:
    /// [`KeyTtl::Missing`] when there is none, [`KeyTtl::Persistent`] when
    /// it never expires, else [`KeyTtl::Expires`] with the time left.
    ///
    /// With fail-safe on, that is the time left of the TTL it was written
    /// (or last [`expire`](Cache::expire)d) with, not the longer time the
    /// backend keeps it to serve stale; a value past it is `Missing`, as
    /// [`get`](Cache::get) reads a miss. It is read from the value's
    /// envelope, so it costs a `get` of the value. Unlike
    /// [`get_with_ttl`](Cache::get_with_ttl), the refresh-ahead window is
    /// not subtracted. Counts nothing (only `errors` on failure).
    ///
    /// # Errors
    ///
    /// The backend's errors.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> cache::Result<()> {
    /// use cache::{Cache, CacheKey, FailSafe, KeyTtl, Ttl};
    /// use cache::memory::MemoryBackend;
    /// use std::sync::Arc;
    /// use std::time::Duration;
    ///
    /// let cache = Cache::builder(Arc::new(MemoryBackend::new()))
    ///     .fail_safe(FailSafe::new(Duration::from_secs(3600)))
    ///     .build()?;
    /// let rate = CacheKey::new("rate", "EUR")?;
    /// assert_eq!(cache.ttl(&rate).await?, KeyTtl::Missing);
    /// cache.set_with_ttl(&rate, &1.08, Ttl::secs(60)).await?;
    /// match cache.ttl(&rate).await? {
    ///     KeyTtl::Expires(left) => assert!(left <= Duration::from_secs(60)), // not 60 s + 1 h
    ///     other => panic!("{other:?}"),
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn ttl(&self, key: &CacheKey) -> Result<KeyTtl> {
        let full = self.full_key(key).await?;
        if self.enveloped() {
            let Some(bytes) = self.track((*self.inner.backend).get(&full).await)? else {
                return Ok(KeyTtl::Missing);
            };
            let stored_len = bytes.len();
            let entry = self.unwrap_stored(bytes);
            if entry.payload.len() != stored_len {
                let now = now_ms();
                if !self.tags_current(&entry).await? {
                    return Ok(KeyTtl::Missing);
                }
                return Ok(match entry.expires_at_ms {
                    None => KeyTtl::Persistent,
                    Some(_) if !entry.is_fresh(now) => KeyTtl::Missing,
                    Some(at) => KeyTtl::Expires(Duration::from_millis(at.saturating_sub(now))),
                });
            }
        }
        self.track((*self.inner.backend).ttl(&full).await)
    }
}

/// Options of a typed write ([`Cache::set_opts`],
/// [`Cache::set_many_opts`]): its TTL and its tags.
///
/// Tags group entries across keys and categories so they can be
/// invalidated together with [`Cache::invalidate_tag`] (FusionCache's
/// `Tags` option and `RemoveByTag`). With no tags, the stored bytes are
/// exactly those of an untagged write.
///
/// # Examples
///
/// ```
/// use cache::{Ttl, WriteOptions};
///
/// let opts = WriteOptions::default().with_ttl(Ttl::secs(60)).with_tags(["user:42", "profiles"]);
/// assert_eq!(opts.ttl, Ttl::secs(60));
/// assert_eq!(opts.tags, ["user:42", "profiles"]);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WriteOptions {
    /// The TTL ([`Ttl::Default`]: the category's, from the policy).
    pub ttl: Ttl,
    /// The entry's tags (none by default). Each is 1 to
    /// [`MAX_TAG_LEN`](crate::MAX_TAG_LEN) bytes without control
    /// characters; any text otherwise (`:` and the like are fine).
    pub tags: Vec<String>,
}

impl WriteOptions {
    /// Sets the TTL.
    #[must_use]
    pub fn with_ttl(mut self, ttl: impl Into<Ttl>) -> Self {
        self.ttl = ttl.into();
        self
    }

    /// Adds tags.
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
