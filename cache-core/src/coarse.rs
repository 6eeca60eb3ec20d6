//! A coarse monotonic clock for hot paths that only ask whether a deadline
//! has passed.
//!
//! `Instant::now()` reads the TSC behind a fence: 26-28 ns on the project's
//! VM, and the fence also waits for the loads in flight around it. A
//! `TypedL1` hit that read it took 2.5-5x a quick_cache get; the same hit
//! without it, 1.2-2x. The coarse clock (`CLOCK_MONOTONIC_COARSE` on Linux,
//! through `coarsetime`) is the time of the kernel's last tick, one load
//! from the vDSO page (~6 ns, no fence), but it lags real time by up to its
//! resolution: 1-10 ms on Linux, about 16 ms on Windows.
//!
//! So a deadline on it ends [`SLACK`] early: a reading taken at real time
//! `t` is in `(t - resolution, t]`, so a deadline of `start + after - SLACK`
//! (`start` read at or before the real start) has passed by real time
//! `start + after` whenever the resolution is at most `SLACK`. What it
//! guards is served a little less long, never longer.

use std::time::Duration;

/// How much earlier than asked a deadline on this clock ends (its
/// resolution, rounded up).
pub const SLACK: Duration = Duration::from_millis(20);

/// A reading of the coarse clock; as a `u64`, it fits an atomic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Ticks(u64);

impl Ticks {
    /// The coarse time now.
    #[inline]
    pub fn now() -> Ticks {
        // Not `now()`: that also stores the reading in a static every
        // thread writes (one cache line bounced between cores).
        Ticks(coarsetime::Instant::now_without_cache_update().as_ticks())
    }

    /// The deadline `after` from this reading, [`SLACK`] early; `None` when
    /// `after` is no longer than the slack (nothing can be promised).
    pub fn deadline(self, after: Duration) -> Option<Ticks> {
        let left = after.checked_sub(SLACK).filter(|left| !left.is_zero())?;
        Some(Ticks(
            self.0
                .saturating_add(coarsetime::Duration::from(left).as_ticks()),
        ))
    }

    /// Nanoseconds from `earlier` to this reading (0 if it is not later).
    #[inline]
    pub fn nanos_since(self, earlier: Ticks) -> u64 {
        // Ticks are 2^-32 s.
        let ticks = self.0.saturating_sub(earlier.0);
        (ticks >> 32).saturating_mul(1_000_000_000)
            + (((ticks & 0xffff_ffff) * 1_000_000_000) >> 32)
    }

    /// For an atomic.
    pub fn as_u64(self) -> u64 {
        self.0
    }

    /// From [`as_u64`](Ticks::as_u64).
    #[cfg(test)]
    pub(crate) fn from_u64(ticks: u64) -> Ticks {
        Ticks(ticks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deadline_ends_the_slack_early_and_none_is_given_within_it() {
        let start = Ticks::from_u64(1 << 40);
        let left = coarsetime::Duration::from(Duration::from_millis(980)).as_ticks();
        assert_eq!(
            start.deadline(Duration::from_secs(1)),
            Some(Ticks::from_u64((1 << 40) + left))
        );
        assert_eq!(start.deadline(SLACK), None);
        assert_eq!(start.deadline(Duration::ZERO), None);
        assert!(start.deadline(SLACK + Duration::from_millis(1)).is_some());
    }

    #[test]
    fn the_clock_lags_real_time_by_less_than_the_slack() {
        let real = std::time::Instant::now();
        let before = Ticks::now();
        let slept = Duration::from_millis(60);
        std::thread::sleep(slept);
        let after = Ticks::now();
        let passed = real.elapsed();
        let coarse = Duration::from_nanos(after.nanos_since(before));
        // Both readings lag theirs by less than the slack: the coarse span
        // is within it of the real one (which is at least `slept`).
        assert!(coarse + SLACK > slept, "{coarse:?} for {slept:?} slept");
        assert!(coarse < passed + SLACK, "{coarse:?} for {passed:?} passed");
    }
}
