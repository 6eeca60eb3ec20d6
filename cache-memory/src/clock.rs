//! Time sources: the real one, and one tests can move.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cache_core::coarse::{self, Ticks};

/// A monotonic time source, in nanoseconds since an arbitrary start.
pub trait Clock: Send + Sync + 'static {
    /// Nanoseconds since this clock's start.
    fn now_nanos(&self) -> u64;

    /// Whether the clock has not reached `at` yet: `now_nanos() < at`,
    /// which a clock may answer without a precise reading (a read of a
    /// live entry with a TTL asks it).
    #[inline]
    fn before(&self, at: u64) -> bool {
        self.now_nanos() < at
    }
}

/// The real monotonic clock.
///
/// [`before`](Clock::before) far from the deadline reads the coarse
/// monotonic clock on Linux (the time of the kernel's last tick: one load,
/// ~6 ns), not the precise one (26-28 ns here, behind a fence that also
/// stalls the loads around it); within 20 ms of it, the precise one.
#[derive(Debug, Clone, Copy)]
pub struct SystemClock {
    start: Instant,
    /// The coarse clock's reading taken just before `start`: at most
    /// `start` (it lags real time and was read first).
    coarse_start: Ticks,
}

/// How far from a deadline the coarse clock answers [`Clock::before`]: more
/// than its resolution (at most 10 ms on Linux).
const COARSE_SLACK_NANOS: u64 = coarse::SLACK.as_nanos() as u64;

impl Default for SystemClock {
    fn default() -> Self {
        let coarse_start = Ticks::now();
        SystemClock {
            start: Instant::now(),
            coarse_start,
        }
    }
}

impl Clock for SystemClock {
    #[inline]
    fn now_nanos(&self) -> u64 {
        // Seconds and nanoseconds in u64 (no u128 arithmetic).
        let elapsed = self.start.elapsed();
        elapsed
            .as_secs()
            .saturating_mul(1_000_000_000)
            .saturating_add(u64::from(elapsed.subsec_nanos()))
    }

    #[inline]
    fn before(&self, at: u64) -> bool {
        // The coarse clock and `Instant` are one clock (CLOCK_MONOTONIC)
        // on Linux, read at a tick or now; elsewhere they may drift apart.
        // Coarse elapsed + slack < `at` means precise elapsed < `at`: the
        // coarse elapsed time lags the precise one by less than the slack,
        // and overstates it by at most the (positive) gap between the two
        // start readings, which only sends more reads the precise way.
        if cfg!(target_os = "linux")
            && Ticks::now()
                .nanos_since(self.coarse_start)
                .saturating_add(COARSE_SLACK_NANOS)
                < at
        {
            return true;
        }
        self.now_nanos() < at
    }
}

/// The clock of a backend: the system's, called directly (its `before`
/// inlines into the read of an entry with a TTL, every `Tiered` L1 hit),
/// or one given to [`MemoryBackend::with_clock`](crate::MemoryBackend::with_clock),
/// through `dyn`.
pub(crate) enum BackendClock {
    System(SystemClock),
    Given(Arc<dyn Clock>),
}

impl Clock for BackendClock {
    #[inline]
    fn now_nanos(&self) -> u64 {
        match self {
            BackendClock::System(clock) => clock.now_nanos(),
            BackendClock::Given(clock) => clock.now_nanos(),
        }
    }

    #[inline]
    fn before(&self, at: u64) -> bool {
        match self {
            BackendClock::System(clock) => clock.before(at),
            BackendClock::Given(clock) => clock.before(at),
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn before_is_false_as_soon_as_the_precise_clock_reached_the_deadline() {
        let clock = SystemClock::default();
        for _ in 0..200 {
            // 0.1 ms ahead: well within the coarse clock's resolution, so a
            // coarse answer would still say "before" after the deadline.
            let at = clock.now_nanos() + 100_000;
            while clock.now_nanos() < at {
                std::hint::spin_loop();
            }
            assert!(!clock.before(at));
        }
    }

    #[test]
    fn before_is_true_until_the_deadline() {
        let clock = SystemClock::default();
        let far = clock.now_nanos() + 60_000_000_000;
        assert!(clock.before(far));
        let near = clock.now_nanos() + 5_000_000_000;
        assert!(clock.before(near));
        let mock = MockClock::new();
        mock.advance(Duration::from_nanos(10));
        assert!(mock.before(11));
        assert!(!mock.before(10));
    }
}
