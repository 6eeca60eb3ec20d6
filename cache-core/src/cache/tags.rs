//! Tags: [`Cache::invalidate_tag`] makes every entry written with a tag
//! unreachable with one backend write, no scan.
//!
//! Each tag has a marker key, `{prefix}:#tag:{tag}`, in the generation
//! backend (where category generations live), holding the tag's *epoch*: a
//! random 64-bit number. A tagged entry is stored in the tagged envelope
//! (`fail_safe.rs`) with, for each of its tags, the epoch read when it was
//! written. A read compares: the entry is current only while every one of
//! its tags' stored epochs is still the one it recorded. `invalidate_tag`
//! writes a new random epoch, so every entry written before is unreachable
//! (and ages out by its TTL).
//!
//! Why random epochs compared for equality, not timestamps or counters:
//! - no clock is involved, so clock skew between instances can neither
//!   hide an entry from an invalidation (a timestamp written by a fast
//!   clock) nor kill fresh entries;
//! - a lost marker (a `clear()`, an eviction) cannot resurrect anything: the
//!   next read finds no marker and creates a new random epoch, which no
//!   entry recorded; unlike a counter, a new epoch never comes back to a
//!   value an old entry holds (the odds are 2⁻⁶⁴);
//! - concurrent invalidations need no atomic increment: each writes its
//!   own new epoch, and whichever lands last is the one all instances
//!   read.
//!
//! The cost: eight bytes per tag in each tagged entry, and an instance
//! that has not yet seen a new epoch (within its refresh interval) reads
//! entries written with it as misses, which only reloads more.
//!
//! Each instance trusts an epoch it read for the generation refresh
//! interval (`CacheBuilder::generation_refresh`), like a generation, so
//! every instance sees an invalidation made elsewhere within that interval
//! (at once with a refresh of 0, the marker then being read from an L1 that
//! a backplane invalidates: the marker is an ordinary key, and the write of
//! its new epoch is published like any other).

use std::collections::BTreeSet;
use std::sync::PoisonError;
use std::time::Instant;

use bytes::Bytes;

use super::Cache;
use crate::backend::{check_key, SetMode, SetOptions};
use crate::codec::Codec;
use crate::error::{Error, ErrorKind, Result};
use crate::fail_safe::{Entry, TagStamp, MAX_TAGS_PER_ENTRY, MAX_TAG_LEN};
use crate::key::{escape_id, MAX_KEY_LEN};
use crate::stats::Stat;

impl<C: Codec> Cache<C> {
    /// Makes every entry written with `tag` unreachable, in O(1): one
    /// backend write (a new epoch in the tag's marker key,
    /// `{prefix}:#tag:{tag}`), no scan. The equivalent of FusionCache's
    /// `RemoveByTag`.
    ///
    /// Entries are tagged by their write:
    /// [`set_opts`](Cache::set_opts) with
    /// [`WriteOptions::with_tags`](crate::WriteOptions::with_tags),
    /// [`get_or_set_opts`](Cache::get_or_set_opts) with
    /// [`GetOrSetOptions::with_tags`](crate::GetOrSetOptions::with_tags),
    /// or a [`Loaded::with_tags`](crate::Loaded::with_tags) answer. An
    /// entry with several tags is unreachable once any of them is
    /// invalidated; untagged entries and entries with other tags stay. The
    /// invalidated entries are not deleted: they age out by their TTL, and
    /// a write of the key replaces them (a `get_or_set` reloads). Unlike a
    /// stale value, an invalidated entry is never served by fail-safe.
    ///
    /// This instance sees the invalidation at once; other instances sharing
    /// the backend within the generation refresh interval
    /// ([`CacheBuilder::generation_refresh`](super::CacheBuilder::generation_refresh),
    /// 1 s by default), or as soon as a backplane's message arrives with a
    /// refresh of 0 (what `cache::open` sets up with a backplane). If the
    /// marker key is lost (a `clear()`, an eviction), every entry with the
    /// tag becomes unreachable: a lost marker invalidates, it never brings
    /// old entries back. A load of this process in flight when the tag is
    /// invalidated returns its value but does not store it.
    ///
    /// When the backend cannot be reached and a
    /// [`FailOpen`](crate::layers::FailOpen) layer skips the write, the
    /// layer remembers the marker key and deletes it when the backend is
    /// back, which invalidates the tag everywhere; without one, the
    /// backend's error is returned. An invalidation is never `Ok` while
    /// nothing will happen.
    ///
    /// Limits: [`exists`](Cache::exists), and [`ttl`](Cache::ttl) without
    /// fail-safe or refresh-ahead, ask the backend and do not read tags:
    /// they can answer for an invalidated entry. A
    /// [`TypedL1`](crate::TypedL1) in front of the cache keeps its decoded
    /// copies until their `max_ttl`. A value's tags take their epochs when
    /// it is stored, so a `get_or_set` load running in *another* process
    /// when the tag is invalidated can store what it loaded before (as a
    /// write racing a delete can); its tags' next invalidation removes it.
    ///
    /// # Errors
    ///
    /// [`InvalidKey`](ErrorKind::InvalidKey) for an empty tag, one longer
    /// than [`MAX_TAG_LEN`] bytes or holding a control character; the
    /// backend's errors.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> cache::Result<()> {
    /// use cache::{Cache, CacheKey, WriteOptions};
    /// use cache::memory::MemoryBackend;
    /// use std::sync::Arc;
    ///
    /// let cache = Cache::new(Arc::new(MemoryBackend::new()));
    /// let (book, author) = (CacheKey::new("book", 1)?, CacheKey::new("author", 7)?);
    /// cache.set_opts(&book, "Dune", WriteOptions::default().with_tags(["author:7", "books"])).await?;
    /// cache.set_opts(&author, "Herbert", WriteOptions::default().with_tags(["author:7"])).await?;
    /// cache.set(&CacheKey::new("book", 2)?, "Emma").await?; // untagged
    ///
    /// cache.invalidate_tag("author:7").await?;
    /// assert_eq!(cache.get::<String>(&book).await?, None);
    /// assert_eq!(cache.get::<String>(&author).await?, None);
    /// assert_eq!(cache.get::<String>(&CacheKey::new("book", 2)?).await?.as_deref(), Some("Emma"));
    /// # Ok(())
    /// # }
    /// ```
    pub async fn invalidate_tag(&self, tag: &str) -> Result<()> {
        self.check_open()?;
        let marker = self.callers(self.tag_key(tag))?;
        // A load in flight may have read the data before the change that
        // this invalidation announces: it must not store it.
        let _write = self.inner.writes.begin_all();
        // Until the new epoch is known here, the cached one is not to be
        // trusted: if this call is dropped after the backend applied the
        // write, the next call reads it back.
        self.forget_epoch(tag);
        let started = Instant::now();
        let epoch = new_epoch();
        let written = self.track(
            (*self.inner.generation_backend)
                .set(&marker, epoch_bytes(epoch), SetOptions::default())
                .await,
        )?;
        if written {
            self.remember_epoch(tag, epoch, started);
        } else {
            // Only a fail-open layer answers `false` to a plain set: it
            // skipped the write and will delete the marker on recovery,
            // which invalidates the tag too.
            tracing::warn!(tag, "tag invalidation deferred until the backend answers");
        }
        self.inner.counters.inc(Stat::Deletes, 1);
        Ok(())
    }

    /// The tags of a write, checked and deduplicated, each with its
    /// current epoch.
    pub(super) async fn stamp_tags(&self, tags: &[String]) -> Result<Vec<TagStamp>> {
        if tags.is_empty() {
            return Ok(Vec::new());
        }
        let unique: BTreeSet<&str> = tags.iter().map(String::as_str).collect();
        if unique.len() > MAX_TAGS_PER_ENTRY {
            return self.callers(Err(Error::new(
                ErrorKind::InvalidValue,
                format!(
                    "{} tags on one entry, the limit is {MAX_TAGS_PER_ENTRY}",
                    unique.len()
                ),
            )));
        }
        for tag in &unique {
            self.callers(self.tag_key(tag))?;
        }
        let mut stamps = Vec::with_capacity(unique.len());
        for tag in unique {
            let epoch = self.tag_epoch(tag).await?;
            stamps.push(TagStamp {
                tag: tag.to_owned(),
                epoch,
            });
        }
        Ok(stamps)
    }

    /// Whether no tag of `entry` was invalidated since it was written (an
    /// untagged entry: always, without a backend call). A tag that is not
    /// valid (bytes another program wrote) reads as invalidated.
    pub(super) async fn tags_current(&self, entry: &Entry) -> Result<bool> {
        for stamp in &entry.tags {
            if self.tag_key(&stamp.tag).is_err() {
                return Ok(false);
            }
            if self.tag_epoch(&stamp.tag).await? != stamp.epoch {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The marker key of `tag`.
    fn tag_key(&self, tag: &str) -> Result<String> {
        if tag.len() > MAX_TAG_LEN {
            return Err(Error::invalid_key(format!(
                "tag is {} bytes, the limit is {MAX_TAG_LEN}",
                tag.len()
            )));
        }
        let escaped = escape_id(tag)
            .map_err(|e| Error::invalid_key(format!("invalid tag {tag:?}: {}", e.message())))?;
        let key = format!("{}:#tag:{escaped}", self.inner.prefix);
        check_key(&key, MAX_KEY_LEN)?;
        Ok(key)
    }

    /// The current epoch of `tag`, read from the generation backend at most
    /// once per refresh interval. No marker (never invalidated, cleared,
    /// evicted) or an unreadable one: a new epoch is stored, `IfAbsent` so
    /// that instances racing to create it agree on the first.
    async fn tag_epoch(&self, tag: &str) -> Result<u64> {
        if let Some(known) = self.known_epoch(tag) {
            if known.read_at.elapsed() < self.inner.generation_refresh {
                return Ok(known.epoch);
            }
        }
        let marker = self.tag_key(tag)?;
        let started = Instant::now();
        let backend = &*self.inner.generation_backend;
        let stored = self.track(backend.get(&marker).await)?;
        let epoch = match stored.as_deref().and_then(parse_epoch) {
            Some(epoch) => epoch,
            None => {
                let fresh = new_epoch();
                let mode = if stored.is_some() {
                    SetMode::Always
                } else {
                    SetMode::IfAbsent
                };
                let opts = SetOptions::default().with_mode(mode);
                if self.track(backend.set(&marker, epoch_bytes(fresh), opts).await)? {
                    fresh
                } else {
                    // Another instance created it first; or a fail-open
                    // layer skipped the write: then use an epoch nothing
                    // recorded, unremembered, so the next call reads again.
                    let again = self.track(backend.get(&marker).await)?;
                    match again.as_deref().and_then(parse_epoch) {
                        Some(epoch) => epoch,
                        None => return Ok(fresh),
                    }
                }
            }
        };
        self.remember_epoch(tag, epoch, started);
        Ok(epoch)
    }

    fn known_epoch(&self, tag: &str) -> Option<KnownEpoch> {
        self.inner
            .tag_epochs
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(tag)
            .copied()
    }

    /// Makes the next call read the epoch of `tag` again.
    fn forget_epoch(&self, tag: &str) {
        self.inner
            .tag_epochs
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(tag);
    }

    /// Records `epoch`, read (or written) by a call that started at
    /// `started`; an answer of a call that started later is kept.
    fn remember_epoch(&self, tag: &str, epoch: u64, started: Instant) {
        let refresh = self.inner.generation_refresh;
        if refresh.is_zero() {
            return; // read on every call: nothing to remember
        }
        let mut map = self
            .inner
            .tag_epochs
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if map.len() >= MAX_KNOWN_EPOCHS {
            // Many distinct tags: forget those no longer trusted anyway.
            map.retain(|_, known| known.read_at.elapsed() < refresh);
        }
        let known = map.entry(tag.to_owned()).or_insert(KnownEpoch {
            epoch,
            read_at: started,
        });
        if known.read_at <= started {
            *known = KnownEpoch {
                epoch,
                read_at: started,
            };
        }
    }
}

/// Past this many remembered epochs, those older than the refresh
/// interval are forgotten.
const MAX_KNOWN_EPOCHS: usize = 10_000;

/// A new random epoch.
fn new_epoch() -> u64 {
    fastrand::u64(..)
}

/// The stored form of an epoch: decimal text, readable in `redis-cli`.
fn epoch_bytes(epoch: u64) -> Bytes {
    Bytes::from(epoch.to_string())
}

fn parse_epoch(bytes: &[u8]) -> Option<u64> {
    std::str::from_utf8(bytes).ok()?.parse().ok()
}

/// What an instance knows of a tag's epoch.
#[derive(Debug, Clone, Copy)]
pub(super) struct KnownEpoch {
    epoch: u64,
    /// When the call that read it started.
    read_at: Instant,
}
