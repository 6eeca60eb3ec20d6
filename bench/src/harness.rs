//! Timing tools: a seeded RNG, a poll-once executor, medians, interleaved
//! repetition, and the counting allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::future::Future;
use std::hint::spin_loop;
use std::sync::atomic::{AtomicBool, AtomicIsize, Ordering::Relaxed};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

/// splitmix64: small, fast, deterministic for a seed.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n`.
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in `[0, 1)`.
    pub(crate) fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Runs a future that completes without waiting (an in-memory cache call)
/// by polling it with a no-op waker; spins if it is not ready yet (e.g. a
/// lock held by another thread for an instant).
pub(crate) fn ready<F: Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        spin_loop();
    }
}

/// A read through `&dyn CacheBackend` as a caller of the trait makes it
/// (as `Cache` does): the synchronous answer when the backend gives one
/// (`get_now`), else the awaited `get`.
#[inline]
pub(crate) fn dyn_get(
    backend: &dyn cache_core::CacheBackend,
    key: &str,
) -> cache_core::Result<Option<bytes::Bytes>> {
    match backend.get_now(key) {
        Some(answer) => answer,
        None => ready(backend.get(key)),
    }
}

pub(crate) fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// The first and third quartiles of `values` (between ranks, linearly, as
/// numpy's default); sorts them in place. NaN without values.
pub(crate) fn quartiles(values: &mut [f64]) -> (f64, f64) {
    values.sort_by(f64::total_cmp);
    let at = |q: f64| {
        let Some(last) = values.len().checked_sub(1) else {
            return f64::NAN;
        };
        let rank = q * last as f64;
        let below = rank.floor() as usize;
        let above = rank.ceil() as usize;
        values[below] + (values[above] - values[below]) * (rank - below as f64)
    };
    (at(0.25), at(0.75))
}

/// Runs `reps` rounds; each round times every contender once, in an order
/// rotated by one each round, so drift of the machine hits all alike.
/// `run(i)` runs contender `i` once and returns its value (e.g. ops/s);
/// returns the median per contender.
pub(crate) fn interleaved(
    contenders: usize,
    reps: usize,
    run: impl FnMut(usize) -> f64,
) -> Vec<f64> {
    interleaved_rounds(contenders, reps, run)
        .iter_mut()
        .map(|v| median(v))
        .collect()
}

/// [`interleaved`], with every round's value per contender (in round
/// order) instead of the median: for ratios paired by round.
pub(crate) fn interleaved_rounds(
    contenders: usize,
    reps: usize,
    mut run: impl FnMut(usize) -> f64,
) -> Vec<Vec<f64>> {
    let mut values = vec![Vec::with_capacity(reps); contenders];
    for rep in 0..reps {
        for k in 0..contenders {
            let i = (k + rep) % contenders;
            values[i].push(run(i));
        }
    }
    values
}

/// Ops per second of `ops` operations run by `threads` threads, each doing
/// `ops / threads` through `work(thread, count)`.
pub(crate) fn ops_per_sec(threads: usize, ops: usize, work: &(dyn Fn(usize, usize) + Sync)) -> f64 {
    let per = ops / threads;
    let elapsed = if threads == 1 {
        let t = Instant::now();
        work(0, per);
        t.elapsed()
    } else {
        // Each worker times itself from the barrier: a clock read by this
        // thread after the barrier could come after the workers finished
        // (this thread descheduled there), an elapsed time of almost
        // nothing, and a calibration of billions of ops.
        let barrier = std::sync::Barrier::new(threads);
        std::thread::scope(|s| {
            let workers: Vec<_> = (0..threads)
                .map(|t| {
                    let barrier = &barrier;
                    s.spawn(move || {
                        barrier.wait();
                        let began = Instant::now();
                        work(t, per);
                        began.elapsed()
                    })
                })
                .collect();
            workers
                .into_iter()
                .filter_map(|w| w.join().ok())
                .max()
                .unwrap_or_default()
        })
    };
    (per * threads) as f64 / elapsed.as_secs_f64()
}

/// Whether the counting allocator counts (off outside memory measurements,
/// so timed cells pay one relaxed load per allocation, nothing more).
static COUNTING: AtomicBool = AtomicBool::new(false);
static LIVE: AtomicIsize = AtomicIsize::new(0);

/// The system allocator, counting live bytes while [`count_from_zero`] is on.
pub(crate) struct CountingAlloc;

// SAFETY: forwards to `System`, only adding counters.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Relaxed) {
            LIVE.fetch_add(layout.size() as isize, Relaxed);
        }
        // SAFETY: the caller's contract is `System`'s.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if COUNTING.load(Relaxed) {
            LIVE.fetch_sub(layout.size() as isize, Relaxed);
        }
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Relaxed) {
            LIVE.fetch_add(new_size as isize - layout.size() as isize, Relaxed);
        }
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Starts counting live heap bytes from zero.
pub(crate) fn count_from_zero() {
    LIVE.store(0, Relaxed);
    COUNTING.store(true, Relaxed);
}

/// Stops counting; returns the live bytes allocated since `count_from_zero`.
pub(crate) fn stop_counting() -> isize {
    COUNTING.store(false, Relaxed);
    LIVE.load(Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quartiles_lie_between_ranks() {
        // Ranks 0..=4: the quartiles at ranks 1 and 3.
        assert_eq!(quartiles(&mut [5.0, 1.0, 4.0, 2.0, 3.0]), (2.0, 4.0));
        // Ranks 0..=3: at 0.75 and 2.25.
        assert_eq!(quartiles(&mut [10.0, 20.0, 30.0, 40.0]), (17.5, 32.5));
        assert_eq!(quartiles(&mut [7.0]), (7.0, 7.0));
        let (q1, q3) = quartiles(&mut []);
        assert!(q1.is_nan() && q3.is_nan());
    }
}
