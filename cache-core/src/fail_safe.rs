//! Fail-safe and refresh-ahead: values that outlive their TTL on purpose.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};

/// Serve stale values when the loader fails or is slow.
///
/// With fail-safe on, a value written with TTL `t` stays in the backend for
/// `t + max_stale`. After `t` it is *stale*: `get` reports a miss and
/// `get_or_set` runs the loader as usual, but if the loader fails, or takes
/// longer than `soft_timeout` (when set), `get_or_set` returns the stale
/// value instead (counted in `stale_served`). After a soft timeout the load
/// goes on in the background and stores its value when it completes.
///
/// Values are stored in a small envelope (16 bytes before the encoded
/// value, recording the logical expiry), so with fail-safe on the bytes in
/// the backend are no longer exactly the codec's output. A tagged write
/// (see [`Cache::invalidate_tag`](crate::Cache::invalidate_tag)) uses one
/// envelope that carries both the expiry and the tags.
///
/// # Examples
///
/// ```
/// use cache::FailSafe;
/// use std::time::Duration;
///
/// let fail_safe = FailSafe::new(Duration::from_secs(3600))
///     .with_soft_timeout(Duration::from_millis(200));
/// assert_eq!(fail_safe.max_stale, Duration::from_secs(3600));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct FailSafe {
    /// How long past its TTL a value is kept to be served stale.
    pub max_stale: Duration,
    /// With a stale value at hand, wait this long for the loader before
    /// serving the stale value (`None`: wait for the loader to finish).
    pub soft_timeout: Option<Duration>,
}

impl FailSafe {
    /// Fail-safe keeping values `max_stale` past their TTL.
    pub fn new(max_stale: Duration) -> Self {
        FailSafe {
            max_stale,
            soft_timeout: None,
        }
    }

    /// Serve the stale value when the loader takes longer than `timeout`.
    #[must_use]
    pub fn with_soft_timeout(mut self, timeout: Duration) -> Self {
        self.soft_timeout = Some(timeout);
        self
    }
}

/// The envelope's first bytes: 0xFF never starts JSON text, and in
/// MessagePack it is a complete value (-1) that nothing can follow.
const MAGIC: [u8; 4] = [0xFF, b'C', b'E', 1];
const HEADER: usize = MAGIC.len() + 12;

/// The tagged envelope's first bytes (the compressed form of
/// `compression.rs` is `0xFF C Z 1`, the fail-safe envelope `0xFF C E 1`).
///
/// A tagged envelope is recognised by every cache, also one without
/// fail-safe or refresh-ahead (tags are chosen per write, so any cache may
/// meet one): no codec output starts with it. 0xFF is not UTF-8, so JSON
/// text never starts with it; in MessagePack 0xFF is a complete value (-1),
/// so a single encoded value that starts with it is exactly one byte long;
/// a compressed value starts `0xFF C Z`. A custom codec must not produce
/// output that starts `0xFF C T`.
///
/// The layout, integers big-endian:
///
/// ```text
/// FF 43 54 01          magic ("\xFFCT", version 1)
/// u64 expires_at_ms    logical expiry (0: none, or not recorded)
/// u32 ttl_ms           the TTL written with (0: unknown or never)
/// u8  n                number of tags, 1..=255
/// n × (u8 len, len bytes of the tag's UTF-8, u64 epoch)
/// payload              the codec's output
/// ```
const TAGGED_MAGIC: [u8; 4] = [0xFF, b'C', b'T', 1];
/// The tagged envelope's fixed part: magic, expiry, TTL, tag count.
const TAGGED_HEADER: usize = TAGGED_MAGIC.len() + 13;

/// The most tags one entry carries (the count is one byte in the
/// envelope).
pub const MAX_TAGS_PER_ENTRY: usize = 255;

/// The longest tag, in bytes (its length is one byte in the envelope).
pub const MAX_TAG_LEN: usize = 255;

/// A tag of an entry and its tag's epoch when the entry was written (see
/// `cache/tags.rs`): the entry is current while the tag's stored epoch is
/// still this one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TagStamp {
    pub(crate) tag: String,
    pub(crate) epoch: u64,
}

/// A stored value with its logical expiry and TTL.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub(crate) payload: Bytes,
    /// Unix milliseconds; `None` never expires (or unknown: not enveloped).
    pub(crate) expires_at_ms: Option<u64>,
    /// The TTL the value was written with, in ms (0: unknown or never).
    pub(crate) ttl_ms: u32,
    /// Its tags with their epochs at write time (empty: untagged).
    pub(crate) tags: Vec<TagStamp>,
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The logical expiry (unix ms, 0: none) and the TTL in ms of a value
/// written now with `ttl`.
fn expiry(ttl: Option<Duration>) -> (u64, u32) {
    let ttl_ms = ttl.map_or(0, |t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX));
    let expires = if ttl.is_some() {
        now_ms().saturating_add(ttl_ms).max(1)
    } else {
        0
    };
    (expires, u32::try_from(ttl_ms).unwrap_or(u32::MAX))
}

impl Entry {
    /// Wraps `payload` with its logical expiry.
    pub(crate) fn wrap(payload: &[u8], ttl: Option<Duration>) -> Bytes {
        let (expires, ttl_ms) = expiry(ttl);
        let mut out = BytesMut::with_capacity(HEADER + payload.len());
        out.put_slice(&MAGIC);
        out.put_u64(expires);
        out.put_u32(ttl_ms);
        out.put_slice(payload);
        out.freeze()
    }

    /// Wraps `payload` with its tags (1 to [`MAX_TAGS_PER_ENTRY`], each 1
    /// to [`MAX_TAG_LEN`] bytes: the caller checks) and, when `ttl` is given, its
    /// logical expiry (`None`: none recorded, the backend's TTL is the
    /// value's only expiry).
    pub(crate) fn wrap_tagged(payload: &[u8], ttl: Option<Duration>, tags: &[TagStamp]) -> Bytes {
        let (expires, ttl_ms) = expiry(ttl);
        let tags_len: usize = tags.iter().map(|t| 9 + t.tag.len()).sum();
        let mut out = BytesMut::with_capacity(TAGGED_HEADER + tags_len + payload.len());
        out.put_slice(&TAGGED_MAGIC);
        out.put_u64(expires);
        out.put_u32(ttl_ms);
        out.put_u8(u8::try_from(tags.len()).unwrap_or(u8::MAX));
        for stamp in tags.iter().take(MAX_TAGS_PER_ENTRY) {
            let name = &stamp.tag.as_bytes()[..stamp.tag.len().min(MAX_TAG_LEN)];
            out.put_u8(u8::try_from(name.len()).unwrap_or(u8::MAX));
            out.put_slice(name);
            out.put_u64(stamp.epoch);
        }
        out.put_slice(payload);
        out.freeze()
    }

    /// Reads a tagged envelope, or returns the bytes as they are (plain):
    /// what a cache without fail-safe and refresh-ahead reads.
    /// Whether `bytes` start like a tagged envelope (one compare of four
    /// bytes, no `memcmp` call: every read asks).
    #[inline]
    pub(crate) fn is_tagged(bytes: &[u8]) -> bool {
        bytes.first_chunk::<4>() == Some(&TAGGED_MAGIC)
    }

    pub(crate) fn unwrap_tagged(bytes: Bytes) -> Entry {
        if Entry::is_tagged(&bytes) {
            if let Some(entry) = Entry::parse_tagged(&bytes) {
                return entry;
            }
        }
        Entry::plain(bytes)
    }

    /// Parses a tagged envelope; `None` when it is cut short or a tag is
    /// not UTF-8 (the bytes are then read as a value, which fails to
    /// decode: counted, and a miss).
    fn parse_tagged(bytes: &Bytes) -> Option<Entry> {
        let mut at = TAGGED_MAGIC.len();
        let expires = u64::from_be_bytes(bytes.get(at..at + 8)?.try_into().ok()?);
        at += 8;
        let ttl_ms = u32::from_be_bytes(bytes.get(at..at + 4)?.try_into().ok()?);
        at += 4;
        let count = usize::from(*bytes.get(at)?);
        at += 1;
        let mut tags = Vec::with_capacity(count);
        for _ in 0..count {
            let len = usize::from(*bytes.get(at)?);
            at += 1;
            let tag = std::str::from_utf8(bytes.get(at..at + len)?)
                .ok()?
                .to_owned();
            at += len;
            let epoch = u64::from_be_bytes(bytes.get(at..at + 8)?.try_into().ok()?);
            at += 8;
            tags.push(TagStamp { tag, epoch });
        }
        if tags.is_empty() {
            return None;
        }
        Some(Entry {
            payload: bytes.slice(at..),
            expires_at_ms: (expires != 0).then_some(expires),
            ttl_ms,
            tags,
        })
    }

    /// Reads an envelope (fail-safe or tagged); bytes without one are a
    /// value that never goes stale (written by a cache without fail-safe,
    /// or another program).
    pub(crate) fn unwrap(bytes: Bytes) -> Entry {
        if Entry::is_tagged(&bytes) {
            return Entry::unwrap_tagged(bytes);
        }
        if bytes.len() >= HEADER && bytes[..MAGIC.len()] == MAGIC {
            let mut expires = [0u8; 8];
            expires.copy_from_slice(&bytes[4..12]);
            let mut ttl = [0u8; 4];
            ttl.copy_from_slice(&bytes[12..16]);
            let expires = u64::from_be_bytes(expires);
            Entry {
                payload: bytes.slice(HEADER..),
                expires_at_ms: (expires != 0).then_some(expires),
                ttl_ms: u32::from_be_bytes(ttl),
                tags: Vec::new(),
            }
        } else {
            Entry::plain(bytes)
        }
    }

    /// Bytes that are a value as they are: they never go stale.
    pub(crate) fn plain(bytes: Bytes) -> Entry {
        Entry {
            payload: bytes,
            expires_at_ms: None,
            ttl_ms: 0,
            tags: Vec::new(),
        }
    }

    pub(crate) fn is_fresh(&self, now_ms: u64) -> bool {
        self.expires_at_ms.is_none_or(|at| now_ms < at)
    }

    /// How long the value stays fresh and, with refresh-ahead at
    /// `refresh` (a fraction of the TTL), out of its refresh window; `None`
    /// when the envelope holds no expiry (never expires, or not enveloped).
    pub(crate) fn fresh_for(&self, now_ms: u64, refresh: Option<f64>) -> Option<Duration> {
        let at = self.expires_at_ms?;
        let mut left = at.saturating_sub(now_ms) as f64;
        if let Some(fraction) = refresh {
            left -= f64::from(self.ttl_ms) * fraction;
        }
        Some(Duration::from_millis(left.max(0.0) as u64))
    }

    /// Whether less than `fraction` of the TTL is left.
    pub(crate) fn in_refresh_window(&self, now_ms: u64, fraction: f64) -> bool {
        match self.expires_at_ms {
            Some(at) if self.ttl_ms > 0 => {
                let left = at.saturating_sub(now_ms) as f64;
                left < f64::from(self.ttl_ms) * fraction
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_round_trips_and_plain_bytes_pass_through() {
        let wrapped = Entry::wrap(br#"{"a":1}"#, Some(Duration::from_secs(10)));
        let entry = Entry::unwrap(wrapped);
        assert_eq!(&entry.payload[..], br#"{"a":1}"#);
        assert!(entry.is_fresh(now_ms()));
        assert!(!entry.is_fresh(now_ms() + 11_000));
        assert!(!entry.in_refresh_window(now_ms(), 0.2));
        assert!(entry.in_refresh_window(now_ms() + 9_000, 0.2));

        let plain = Entry::unwrap(Bytes::from_static(b"[1,2]"));
        assert_eq!(&plain.payload[..], b"[1,2]");
        assert!(plain.is_fresh(u64::MAX - 1));

        let never = Entry::unwrap(Entry::wrap(b"x", None));
        assert_eq!(never.expires_at_ms, None);
    }

    #[test]
    fn tagged_envelope_round_trips_and_any_cut_reads_as_plain_bytes() {
        let tags = vec![
            TagStamp {
                tag: "a:1".into(),
                epoch: 7,
            },
            TagStamp {
                tag: "é".into(),
                epoch: u64::MAX,
            },
        ];
        let wrapped = Entry::wrap_tagged(b"[1]", Some(Duration::from_secs(10)), &tags);
        assert_eq!(wrapped.len(), TAGGED_HEADER + (1 + 3 + 8) + (1 + 2 + 8) + 3);
        for entry in [
            Entry::unwrap(wrapped.clone()),
            Entry::unwrap_tagged(wrapped.clone()),
        ] {
            assert_eq!(&entry.payload[..], b"[1]");
            assert_eq!(entry.tags, tags);
            assert_eq!(entry.ttl_ms, 10_000);
            assert!(entry.is_fresh(now_ms()));
        }
        let untimed = Entry::unwrap_tagged(Entry::wrap_tagged(b"x", None, &tags[..1]));
        assert_eq!((untimed.expires_at_ms, untimed.ttl_ms), (None, 0));
        // Cut short anywhere within its tags, it is no envelope: the bytes
        // are read as they are (and fail to decode), never a panic.
        let tags_end = wrapped.len() - 3;
        for cut in 0..tags_end {
            let entry = Entry::unwrap_tagged(wrapped.slice(..cut));
            assert!(entry.tags.is_empty(), "cut at {cut}");
            assert_eq!(entry.payload, wrapped.slice(..cut));
        }
        // A tag count of zero is no envelope either.
        let mut zero = wrapped[..TAGGED_HEADER].to_vec();
        zero[TAGGED_HEADER - 1] = 0;
        zero.extend_from_slice(b"[1]");
        let zero = Bytes::from(zero);
        assert_eq!(Entry::unwrap_tagged(zero.clone()).payload, zero);
        // The fail-safe envelope is not read by `unwrap_tagged`.
        let fail_safe = Entry::wrap(b"[1]", None);
        assert_eq!(Entry::unwrap_tagged(fail_safe.clone()).payload, fail_safe);
    }
}
