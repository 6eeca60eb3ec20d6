//! Configuration of the memory backend.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The default largest value, in bytes (64 MiB).
pub const DEFAULT_MAX_VALUE_SIZE: usize = 64 * 1024 * 1024;

/// How a [`MemoryBackend`](crate::MemoryBackend) is bounded and swept.
///
/// Deserializes from the query of a `memory://` URL or a config file, e.g.
/// `{"max_entries": 10000, "max_bytes": 67108864, "sweep_interval_ms": 500}`.
///
/// # Examples
///
/// ```
/// use cache::memory::MemoryConfig;
///
/// let config = MemoryConfig::default().with_max_entries(10_000);
/// assert_eq!(config.max_entries, Some(10_000));
/// assert_eq!(config.max_bytes, None);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct MemoryConfig {
    /// At most this many entries; the eviction policy makes room. `None`:
    /// unbounded.
    pub max_entries: Option<usize>,
    /// At most this many bytes of keys plus values; `None`: unbounded.
    pub max_bytes: Option<usize>,
    /// The largest value accepted, in bytes.
    pub max_value_size: usize,
    /// How often the background sweeper removes expired entries, in
    /// milliseconds (0 turns the sweeper off; expiry on read still applies).
    pub sweep_interval_ms: u64,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        MemoryConfig {
            max_entries: None,
            max_bytes: None,
            max_value_size: DEFAULT_MAX_VALUE_SIZE,
            sweep_interval_ms: 1000,
        }
    }
}

impl MemoryConfig {
    /// Bounds the number of entries.
    #[must_use]
    pub fn with_max_entries(mut self, max: usize) -> Self {
        self.max_entries = Some(max);
        self
    }

    /// Bounds the bytes of keys plus values.
    #[must_use]
    pub fn with_max_bytes(mut self, max: usize) -> Self {
        self.max_bytes = Some(max);
        self
    }

    /// Sets the largest value accepted.
    #[must_use]
    pub fn with_max_value_size(mut self, max: usize) -> Self {
        self.max_value_size = max;
        self
    }

    /// Sets the sweep interval (`Duration::ZERO` turns the sweeper off).
    #[must_use]
    pub fn with_sweep_interval(mut self, every: Duration) -> Self {
        self.sweep_interval_ms = u64::try_from(every.as_millis()).unwrap_or(u64::MAX);
        self
    }

    pub(crate) fn sweep_interval(&self) -> Option<Duration> {
        (self.sweep_interval_ms > 0).then(|| Duration::from_millis(self.sweep_interval_ms))
    }

    pub(crate) fn bounded(&self) -> bool {
        self.max_entries.is_some() || self.max_bytes.is_some()
    }
}
