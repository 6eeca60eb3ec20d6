//! The stored form of a value when fail-safe or refresh-ahead is on: the
//! fail-safe envelope (the value with its logical expiry), kept for
//! `max_stale` past its TTL.

use std::time::Duration;

use bytes::Bytes;
use serde::de::DeserializeOwned;

use super::Cache;
use crate::codec::Codec;
use crate::error::Result;
use crate::fail_safe::Entry;

impl<C: Codec> Cache<C> {
    /// Reads `full` and decodes it; an undecodable value is counted and
    /// read as a miss.
    pub(super) async fn read_decoded<T: DeserializeOwned>(
        &self,
        full: &str,
    ) -> Result<Option<(T, Entry)>> {
        let Some(bytes) = self.track((*self.inner.backend).get(full).await)? else {
            return Ok(None);
        };
        let entry = self.unwrap_stored(bytes);
        match self.inner.codec.decode(&entry.payload) {
            Ok(value) => Ok(Some((value, entry))),
            Err(err) => {
                self.count_decode_error(&err);
                Ok(None)
            }
        }
    }

    /// The stored bytes as an entry. Only a cache that writes envelopes
    /// looks for one: without fail-safe and refresh-ahead, every byte is the
    /// codec's, even bytes that happen to start like an envelope.
    pub(super) fn unwrap_stored(&self, bytes: Bytes) -> Entry {
        if self.enveloped() {
            Entry::unwrap(bytes)
        } else {
            Entry::plain(bytes)
        }
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

    /// The bytes and TTL to store an encoded value with.
    pub(super) fn stored_form(
        &self,
        payload: Bytes,
        ttl: Option<Duration>,
    ) -> (Bytes, Option<Duration>) {
        if self.enveloped() {
            (Entry::wrap(&payload, ttl), self.physical_ttl(ttl))
        } else {
            (payload, ttl)
        }
    }
}
