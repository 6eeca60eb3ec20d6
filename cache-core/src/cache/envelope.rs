//! The stored form of a value: plain codec output, unless fail-safe or
//! refresh-ahead is on (the fail-safe envelope: the value with its logical
//! expiry, kept for `max_stale` past its TTL) or the write has tags (the
//! tagged envelope, which also carries the logical expiry when the cache
//! needs it: one envelope for both).

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use serde::de::DeserializeOwned;

use super::Cache;
use crate::codec::Codec;
use crate::error::Result;
use crate::fail_safe::{now_ms, Entry, TagStamp};

/// What stored bytes are, as far as [`Cache::live_now`] can tell.
pub(super) enum Live {
    /// Nothing stored, or past its logical TTL.
    Dead,
    /// A live entry.
    Entry(Entry),
    /// An entry within its TTL whose tags are still to be checked.
    Tagged(Entry),
}

impl<C: Codec> Cache<C> {
    /// Decodes stored bytes (`None`: nothing stored); an undecodable value,
    /// or one a tag invalidated, is counted and read as a miss.
    pub(super) async fn decode_stored<T: DeserializeOwned>(
        &self,
        stored: Option<Bytes>,
    ) -> Result<Option<(T, Entry)>> {
        let Some(bytes) = stored else {
            return Ok(None);
        };
        let entry = self.unwrap_stored(bytes);
        if !self.tags_current(&entry).await? {
            // Invalidated by a tag: gone, not even stale.
            return Ok(None);
        }
        match self.inner.codec.decode(&entry.payload) {
            Ok(value) => Ok(Some((value, entry))),
            Err(err) => {
                self.count_decode_error(&err);
                Ok(None)
            }
        }
    }

    /// The stored bytes as they are, when they are the codec's: no
    /// envelope is written by this cache (no fail-safe, no refresh-ahead)
    /// and they are not tagged. The common read needs no [`Entry`].
    #[inline]
    pub(super) fn plain<'a>(&self, bytes: &'a [u8]) -> Option<&'a [u8]> {
        (!self.enveloped() && !Entry::is_tagged(bytes)).then_some(bytes)
    }

    /// The stored bytes as an entry. Only a cache that writes fail-safe
    /// envelopes looks for one: without fail-safe and refresh-ahead, bytes
    /// that happen to start like one are the codec's. The tagged envelope
    /// is read by every cache (any write may carry tags), its marker being
    /// one no codec output starts with (see `fail_safe.rs`).
    pub(super) fn unwrap_stored(&self, bytes: Bytes) -> Entry {
        if self.enveloped() {
            Entry::unwrap(bytes)
        } else {
            Entry::unwrap_tagged(bytes)
        }
    }

    /// The stored bytes as an entry if it is live: within its logical TTL
    /// at `now` (unix ms; `None`: read the clock if the entry has an
    /// expiry), and none of its tags invalidated since it was written.
    pub(super) async fn live_entry(
        &self,
        stored: Option<Bytes>,
        now: Option<u64>,
    ) -> Result<Option<Entry>> {
        match self.live_now(stored, now) {
            Live::Dead => Ok(None),
            Live::Entry(entry) => Ok(Some(entry)),
            Live::Tagged(entry) => self.tags_checked(entry).await,
        }
    }

    /// As much of [`live_entry`](Cache::live_entry) as needs no await: the
    /// logical TTL; the tags of a tagged entry are left to
    /// [`tags_checked`](Cache::tags_checked).
    pub(super) fn live_now(&self, stored: Option<Bytes>, now: Option<u64>) -> Live {
        let Some(bytes) = stored else {
            return Live::Dead;
        };
        let entry = self.unwrap_stored(bytes);
        if entry.expires_at_ms.is_some() && !entry.is_fresh(now.unwrap_or_else(now_ms)) {
            Live::Dead
        } else if entry.tags.is_empty() {
            Live::Entry(entry)
        } else {
            Live::Tagged(entry)
        }
    }

    /// `entry` if none of its tags was invalidated since it was written.
    /// Boxed: the tag check and the entry it holds stay off the future of
    /// a read that has no tags to check.
    pub(super) fn tags_checked(
        &self,
        entry: Entry,
    ) -> Pin<Box<impl Future<Output = Result<Option<Entry>>> + '_>> {
        Box::pin(async move { Ok(self.tags_current(&entry).await?.then_some(entry)) })
    }

    /// Whether values are written in the fail-safe envelope.
    pub(super) fn enveloped(&self) -> bool {
        self.inner.fail_safe.is_some() || self.inner.refresh_ahead.is_some()
    }

    /// The TTL a value with logical TTL `ttl` is stored with.
    pub(super) fn physical_ttl(&self, ttl: Option<Duration>) -> Option<Duration> {
        match (ttl, self.inner.fail_safe) {
            (Some(t), Some(f)) if !t.is_zero() => Some(t.saturating_add(f.max_stale)),
            _ => ttl,
        }
    }

    /// The bytes and TTL to store an encoded value with: with no tags and
    /// no fail-safe or refresh-ahead, the codec's bytes as they are.
    pub(super) fn stored_form(
        &self,
        payload: Bytes,
        ttl: Option<Duration>,
        tags: &[TagStamp],
    ) -> (Bytes, Option<Duration>) {
        match (self.enveloped(), tags.is_empty()) {
            (true, true) => (Entry::wrap(&payload, ttl), self.physical_ttl(ttl)),
            (true, false) => (
                Entry::wrap_tagged(&payload, ttl, tags),
                self.physical_ttl(ttl),
            ),
            // No logical expiry recorded: the backend's TTL is the only
            // one, so `expire` can change it in place.
            (false, false) => (Entry::wrap_tagged(&payload, None, tags), ttl),
            (false, true) => (payload, ttl),
        }
    }
}
