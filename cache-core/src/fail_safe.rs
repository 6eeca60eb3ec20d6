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
/// the backend are no longer exactly the codec's output.
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

/// A stored value with its logical expiry and TTL.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub(crate) payload: Bytes,
    /// Unix milliseconds; `None` never expires (or unknown: not enveloped).
    pub(crate) expires_at_ms: Option<u64>,
    /// The TTL the value was written with, in ms (0: unknown or never).
    pub(crate) ttl_ms: u32,
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Entry {
    /// Wraps `payload` with its logical expiry.
    pub(crate) fn wrap(payload: &[u8], ttl: Option<Duration>) -> Bytes {
        let ttl_ms = ttl.map_or(0, |t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX));
        let expires = if ttl.is_some() {
            now_ms().saturating_add(ttl_ms).max(1)
        } else {
            0
        };
        let mut out = BytesMut::with_capacity(HEADER + payload.len());
        out.put_slice(&MAGIC);
        out.put_u64(expires);
        out.put_u32(u32::try_from(ttl_ms).unwrap_or(u32::MAX));
        out.put_slice(payload);
        out.freeze()
    }

    /// Reads an envelope; bytes without one are a value that never goes
    /// stale (written by a cache without fail-safe, or another program).
    pub(crate) fn unwrap(bytes: Bytes) -> Entry {
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
}
