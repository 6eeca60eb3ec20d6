//! Time sources: the real one, and one tests can move.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A monotonic time source, in nanoseconds since an arbitrary start.
pub trait Clock: Send + Sync + 'static {
    /// Nanoseconds since this clock's start.
    fn now_nanos(&self) -> u64;
}

/// The real monotonic clock.
#[derive(Debug, Clone, Copy)]
pub struct SystemClock {
    start: Instant,
}

impl Default for SystemClock {
    fn default() -> Self {
        SystemClock {
            start: Instant::now(),
        }
    }
}

impl Clock for SystemClock {
    #[inline]
    fn now_nanos(&self) -> u64 {
        // Seconds and nanoseconds in u64 (no u128 arithmetic): read on
        // every access to an entry with a TTL.
        let elapsed = self.start.elapsed();
        elapsed
            .as_secs()
            .saturating_mul(1_000_000_000)
            .saturating_add(u64::from(elapsed.subsec_nanos()))
    }
}

/// A clock that moves only when told to, for tests of expiry (as moka's
/// mock clock). Clones share the time.
///
/// # Examples
///
/// ```
/// use cache::memory::{Clock, MockClock};
/// use std::time::Duration;
///
/// let clock = MockClock::new();
/// clock.advance(Duration::from_millis(60));
/// assert_eq!(clock.now_nanos(), 60_000_000);
/// ```
#[derive(Debug, Clone, Default)]
pub struct MockClock {
    nanos: Arc<AtomicU64>,
}

impl MockClock {
    /// A clock at zero.
    pub fn new() -> Self {
        MockClock::default()
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        let by = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        self.nanos.fetch_add(by, Ordering::SeqCst);
    }
}

impl Clock for MockClock {
    fn now_nanos(&self) -> u64 {
        self.nanos.load(Ordering::SeqCst)
    }
}
