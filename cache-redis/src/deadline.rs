//! The response timeout without a timer per call.
//!
//! `tokio::time::timeout` arms a timer for every exchange: a clock read,
//! a lock of the timer wheel and an insert, and on completion a second lock
//! and a removal. Callgrind put that at ~820 of the ~10,100 instructions
//! of a `GET` at 50 tasks, the largest single part of the client's cost
//! (raw redis-rs pays it too, for its own response timeout).
//!
//! [`Deadlines`] bounds every exchange of one limit with a shared ticker
//! instead. Time is cut into epochs of a period (a power of two of
//! nanoseconds between a sixteenth and an eighth of the limit, at least
//! 4.2 ms), read on the coarse clock (`cache_core::coarse`: one load, no
//! fence; a clock read of `Instant` alone cost ~110 instructions here). An
//! exchange still pending after its first poll leaves
//! its waker in the bucket of the epoch by which its limit has surely
//! passed, and takes it back when it ends, however it ends (so a bucket
//! keeps no finished task alive). A ticker thread wakes what a bucket still
//! holds when its epoch passes; a woken exchange whose epoch has passed
//! fails with a timeout.
//!
//! An exchange therefore costs a coarse clock read and two uncontended
//! locks. It fails no earlier than the limit: its epoch is counted from a
//! reading that may lag real time by the coarse clock's resolution, so the
//! bucket it waits in is [`SLACK`] further out. It fails at most about
//! three periods and the slack after the limit (about 0.4 of a 1 s limit
//! plus 20 ms), plus the scheduler's delay.
//!
//! The ticker is a thread of its own (`cache-redis-deadlines`), started
//! at the first exchange that waits and ended within a period of the
//! backend being dropped. After [`REST`] in which no bucket held a waker
//! at its rounds, it parks instead of waking every period; the next
//! exchange that waits catches the epochs up itself (after a long rest,
//! every bucket fires once, all empty) and unparks it. Not a task: a task
//! lives on one runtime, and a runtime that stops, or is kept but no
//! longer driven (a `block_on` that returned), would leave exchanges on
//! other runtimes unwoken. Waking a
//! waker from any thread is what wakers are for. If the thread cannot be
//! started, each exchange arms its own `tokio` timer, as every exchange
//! did before; so does an exchange whose bucket still holds an epoch that
//! has not passed (the ticker has not kept up with the clock).

use std::future::{poll_fn, Future};
use std::panic::AssertUnwindSafe;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, Weak};
use std::task::{Context, Poll, Waker};
use std::thread::Thread;
use std::time::Duration;

use cache_core::coarse::{Ticks, SLACK};

const NONE: u8 = 0;
const RUNNING: u8 = 1;
const FAILED: u8 = 2;

/// Buckets per shard: epochs a bucket is reused after. An exchange waits at
/// most `ceil((limit + SLACK) / period) + 1` epochs ahead of the clock: 18
/// for a 1 s limit, at most 30 for any.
const SLOTS: u64 = 32;
/// Shards of buckets, one chosen per thread, so that threads registering
/// in the same epoch do not take turns on one lock.
const SHARDS: usize = 4;
/// Below this limit the coarse epochs would add more than half the limit
/// (a period is at least 4.2 ms, and the slack 20 ms): such exchanges keep
/// a `tokio` timer each.
pub(crate) const MIN_LIMIT: Duration = Duration::from_millis(100);
/// How long the ticker's rounds find no waker before it parks: an idle
/// backend's ticker then costs no wake-ups, and a lightly used one's at
/// most one unpark this often.
const REST: Duration = Duration::from_secs(1);

/// Every exchange of one limit, bounded by a shared ticker.
pub(crate) struct Deadlines {
    limit: Duration,
    /// An epoch is `1 << shift` ns.
    shift: u32,
    /// Epochs from an exchange's first poll to the epoch it times out at.
    ahead: u64,
    origin: Ticks,
    /// Every epoch up to this one has been processed.
    passed: AtomicU64,
    /// The ticker thread: `NONE` until an exchange waits, then `RUNNING`,
    /// or `FAILED` if it could not be started.
    ticker: AtomicU8,
    /// The ticker's thread, to unpark.
    ticker_thread: OnceLock<Thread>,
    /// Set by the ticker before it looks at the buckets a last time and
    /// parks; the exchange that clears it unparks the ticker.
    resting: AtomicBool,
    shards: Box<[[Slot; SLOTS as usize]]>,
    /// Held by the ticker thread until it ends (tests).
    #[cfg(test)]
    ticker_alive: Arc<()>,
    /// How many times the ticker has parked (tests).
    #[cfg(test)]
    parks: AtomicUsize,
}

/// One epoch's wakers in one shard.
#[repr(align(64))]
struct Slot {
    bucket: Mutex<Bucket>,
}

struct Bucket {
    /// The epoch this bucket fires at next.
    epoch: u64,
    /// The wakers of the exchanges registered for `epoch`; an exchange
    /// that ended took its own back.
    wakers: Vec<Option<Waker>>,
    /// How many of `wakers` are `Some`: what the ticker looks at before it
    /// rests, without walking the vector.
    held: usize,
}

impl Deadlines {
    /// Deadlines for exchanges bounded by `limit`.
    pub(crate) fn new(limit: Duration) -> Arc<Self> {
        let limit_ns = u64::try_from(limit.as_nanos()).unwrap_or(u64::MAX / 2);
        // The largest power of two at most an eighth of the limit, and at
        // least 2^22 ns (4.2 ms): the slack then adds at most 5 epochs.
        let shift = (limit_ns / 8).max(1).ilog2().max(22);
        let slack_ns = u64::try_from(SLACK.as_nanos()).unwrap_or(u64::MAX);
        let ahead = limit_ns.saturating_add(slack_ns).div_ceil(1 << shift) + 1;
        let shards = (0..SHARDS)
            .map(|_| {
                std::array::from_fn(|i| Slot {
                    bucket: Mutex::new(Bucket {
                        epoch: next_epoch(i as u64, 0),
                        wakers: Vec::new(),
                        held: 0,
                    }),
                })
            })
            .collect();
        Arc::new(Deadlines {
            limit,
            shift,
            ahead,
            origin: Ticks::now(),
            passed: AtomicU64::new(0),
            ticker: AtomicU8::new(NONE),
            ticker_thread: OnceLock::new(),
            resting: AtomicBool::new(false),
            shards,
            #[cfg(test)]
            ticker_alive: Arc::new(()),
            #[cfg(test)]
            parks: AtomicUsize::new(0),
        })
    }

    /// The limit every exchange here is bounded by.
    pub(crate) fn limit(&self) -> Duration {
        self.limit
    }

    /// Awaits `exchange`, or `None` once the limit has passed first.
    pub(crate) async fn bound<F: Future>(self: &Arc<Self>, exchange: F) -> Option<F::Output> {
        let mut exchange = pin!(exchange);
        let mut alarm = Alarm {
            deadlines: self,
            state: Armed::Not,
        };
        poll_fn(|cx| {
            if let Poll::Ready(out) = exchange.as_mut().poll(cx) {
                return Poll::Ready(Some(out));
            }
            alarm.poll(cx).map(|()| None)
        })
        .await
    }

    /// The epoch the coarse clock is in.
    #[inline]
    fn epoch_now(&self) -> u64 {
        Ticks::now().nanos_since(self.origin) >> self.shift
    }

    fn slot(&self, shard: usize, epoch: u64) -> &Slot {
        &self.shards[shard][(epoch % SLOTS) as usize]
    }

    /// Whether a ticker thread runs, starting it if none was.
    fn ticker_runs(self: &Arc<Self>) -> bool {
        match self.ticker.load(Ordering::Acquire) {
            RUNNING => return true,
            FAILED => return false,
            _ => {}
        }
        if self
            .ticker
            .compare_exchange(NONE, RUNNING, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return self.ticker.load(Ordering::Acquire) == RUNNING;
        }
        let deadlines = Arc::downgrade(self);
        #[cfg(test)]
        let alive = Arc::clone(&self.ticker_alive);
        let started = std::thread::Builder::new()
            .name("cache-redis-deadlines".into())
            .spawn(move || {
                tick(&deadlines);
                #[cfg(test)]
                drop(alive);
            });
        if started.is_err() {
            self.ticker.store(FAILED, Ordering::Release);
            return false;
        }
        true
    }

    /// Wakes a resting ticker, catching the epochs up first (a bucket
    /// then holds the epoch an exchange registering now is due at). Called
    /// by an exchange before it registers (to find its bucket current) and
    /// after (a ticker that looked at the buckets before the registration
    /// set `resting` first, and is seen here).
    fn rouse(&self) {
        if !self.resting.load(Ordering::SeqCst) || !self.resting.swap(false, Ordering::SeqCst) {
            return;
        }
        self.advance();
        if let Some(ticker) = self.ticker_thread.get() {
            ticker.unpark();
        }
    }

    /// Whether a bucket holds the waker of an exchange not yet ended.
    fn holds_any(&self) -> bool {
        self.shards
            .iter()
            .flatten()
            .any(|slot| lock(&slot.bucket).held > 0)
    }

    /// The ticker's last look before it parks: `true` (resting) if no
    /// bucket holds a waker once `resting` is set. An exchange that
    /// registers after that look sees `resting` and unparks the ticker;
    /// one that registered before it is seen here.
    fn rest(&self) -> bool {
        self.resting.store(true, Ordering::SeqCst);
        if self.holds_any() {
            self.resting.store(false, Ordering::SeqCst);
            return false;
        }
        true
    }

    fn period(&self) -> Duration {
        Duration::from_nanos(1 << self.shift)
    }

    /// Processes every epoch up to the clock's, waking what each bucket
    /// holds. Tickers may race; each epoch is claimed by one. After a long
    /// pause (more epochs than buckets) every bucket is fired at once.
    fn advance(&self) {
        let now = self.epoch_now();
        loop {
            let passed = self.passed.load(Ordering::Acquire);
            if passed >= now {
                return;
            }
            let through = if now - passed > SLOTS {
                now
            } else {
                passed + 1
            };
            if self
                .passed
                .compare_exchange(passed, through, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
            {
                continue;
            }
            let slots = if through == passed + 1 {
                through % SLOTS..through % SLOTS + 1
            } else {
                0..SLOTS
            };
            for shard in 0..SHARDS {
                for slot in slots.clone() {
                    self.fire(shard, slot, through);
                }
            }
        }
    }

    /// Wakes what the bucket at `slot` holds if its epoch is `through` or
    /// earlier, and moves it to its next epoch after `through`.
    fn fire(&self, shard: usize, slot: u64, through: u64) {
        let bucket = &self.shards[shard][slot as usize].bucket;
        let mut wakers = {
            let mut bucket = lock(bucket);
            if bucket.epoch > through || bucket.wakers.is_empty() {
                bucket.epoch = bucket.epoch.max(next_epoch(slot, through));
                return;
            }
            bucket.epoch = next_epoch(slot, through);
            bucket.held = 0;
            std::mem::take(&mut bucket.wakers)
        };
        // Woken outside the lock: a waker may poll the exchange at once
        // (an executor's choice), and its poll takes this lock. A waker
        // that panics must not take the ticker, or the other wakers, down.
        for waker in wakers.drain(..).flatten() {
            let _ = std::panic::catch_unwind(AssertUnwindSafe(|| waker.wake()));
        }
        // The emptied vector goes back, so a busy bucket keeps its room.
        let mut bucket = lock(bucket);
        if bucket.wakers.capacity() < wakers.capacity() {
            std::mem::swap(&mut bucket.wakers, &mut wakers);
            bucket.wakers.append(&mut wakers);
        }
    }

    /// The wakers the buckets hold of exchanges not yet ended (tests),
    /// each bucket's count checked against them.
    #[cfg(test)]
    fn held(&self) -> usize {
        self.shards
            .iter()
            .flatten()
            .map(|s| {
                let bucket = lock(&s.bucket);
                let held = bucket.wakers.iter().flatten().count();
                assert_eq!(bucket.held, held, "a bucket's count of its wakers");
                held
            })
            .sum()
    }
}

/// The first epoch after `through` whose bucket is `slot`.
fn next_epoch(slot: u64, through: u64) -> u64 {
    let next = through - through % SLOTS + slot;
    if next > through {
        next
    } else {
        next + SLOTS
    }
}

fn lock(bucket: &Mutex<Bucket>) -> MutexGuard<'_, Bucket> {
    bucket.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The ticker: processes the epochs as the clock passes them, until the
/// deadlines are dropped; parks after [`REST`] of rounds that found no
/// waker.
fn tick(deadlines: &Weak<Deadlines>) {
    let mut quiet = Duration::ZERO;
    if let Some(d) = deadlines.upgrade() {
        // Before any rest: an exchange finds it here to unpark.
        let _ = d.ticker_thread.set(std::thread::current());
    }
    loop {
        let Some(d) = deadlines.upgrade() else {
            return;
        };
        d.advance();
        let period = d.period();
        quiet = if d.holds_any() {
            Duration::ZERO
        } else {
            quiet + period
        };
        if quiet >= REST {
            // A token left by an exchange that roused this thread while
            // it ran (it saw `resting` from a look that found a waker)
            // would end the park at once. An exchange that rouses it
            // after this clears `resting` first, so the park it ends was
            // one to end.
            std::thread::park_timeout(Duration::ZERO);
            if d.rest() {
                #[cfg(test)]
                d.parks.fetch_add(1, Ordering::SeqCst);
                // Not holding the deadlines while parked: their drop
                // unparks this thread, which then ends.
                drop(d);
                std::thread::park();
                quiet = Duration::ZERO;
                continue;
            }
        }
        drop(d);
        std::thread::sleep(period);
    }
}

impl Drop for Deadlines {
    /// Unparks a resting ticker, so that it sees the deadlines gone and
    /// ends.
    fn drop(&mut self) {
        if let Some(ticker) = self.ticker_thread.get() {
            ticker.unpark();
        }
    }
}

/// The shard of this thread's registrations.
fn shard() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SHARD: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
    }
    SHARD.try_with(|s| *s).unwrap_or(0)
}

/// One exchange's side of the deadlines.
struct Alarm<'a> {
    deadlines: &'a Arc<Deadlines>,
    state: Armed,
}

enum Armed {
    /// Not polled pending yet.
    Not,
    /// Registered: the epoch it times out at, and where its waker is.
    Bucket {
        due: u64,
        shard: usize,
        index: usize,
    },
    /// No ticker could take it: a timer of its own.
    Timer(Pin<Box<tokio::time::Sleep>>),
}

impl Alarm<'_> {
    /// `Ready` once the limit has passed.
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        match &mut self.state {
            Armed::Not => self.arm(cx),
            Armed::Timer(sleep) => sleep.as_mut().poll(cx),
            &mut Armed::Bucket { due, shard, index } => {
                if self.deadlines.passed.load(Ordering::Acquire) >= due {
                    return Poll::Ready(());
                }
                // Polled again, still pending: the waker to wake may have
                // changed (a task moved the exchange, or a combinator
                // polls it with its own).
                let slot = self.deadlines.slot(shard, due);
                let mut bucket = lock(&slot.bucket);
                if bucket.epoch != due {
                    return Poll::Ready(());
                }
                let Some(Some(waker)) = bucket.wakers.get_mut(index) else {
                    return Poll::Pending;
                };
                if waker.will_wake(cx.waker()) {
                    return Poll::Pending;
                }
                drop(bucket);
                let new = cx.waker().clone();
                let mut bucket = lock(&slot.bucket);
                let current = bucket.epoch == due;
                let old = match bucket.wakers.get_mut(index) {
                    Some(held) if current => {
                        // Only the exchange itself takes its waker back.
                        debug_assert!(held.is_some(), "a registered waker is held");
                        held.replace(new)
                    }
                    _ => return Poll::Ready(()),
                };
                drop(bucket);
                drop(old);
                Poll::Pending
            }
        }
    }

    fn arm(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let deadlines = self.deadlines;
        if !deadlines.ticker_runs() {
            return self.arm_timer(cx);
        }
        deadlines.rouse();
        let due = deadlines.epoch_now() + deadlines.ahead;
        let shard = shard();
        let slot = deadlines.slot(shard, due);
        // Cloned (and, in `Drop`, dropped) outside the lock: waker code
        // may do anything, this lock's exchanges included.
        let waker = cx.waker().clone();
        #[cfg(test)]
        if let Some(hook) = tests::BEFORE_REGISTER.get() {
            hook(deadlines);
        }
        let mut bucket = lock(&slot.bucket);
        if bucket.epoch == due {
            bucket.wakers.push(Some(waker));
            bucket.held += 1;
            self.state = Armed::Bucket {
                due,
                shard,
                index: bucket.wakers.len() - 1,
            };
            drop(bucket);
            deadlines.rouse();
            return Poll::Pending;
        }
        if bucket.epoch > due {
            // A ticker passed `due` between the clock read and the lock
            // (this thread was descheduled there): the limit has passed.
            return Poll::Ready(());
        }
        drop(bucket);
        // The bucket still holds an epoch that has not passed: the ticker
        // has not kept up with the clock.
        self.arm_timer(cx)
    }

    fn arm_timer(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let mut sleep = Box::pin(tokio::time::sleep(self.deadlines.limit));
        let polled = sleep.as_mut().poll(cx);
        self.state = Armed::Timer(sleep);
        polled
    }
}

impl Drop for Alarm<'_> {
    /// Takes the exchange's waker back from its bucket (unless the bucket
    /// has fired, and woken it): a finished task is freed when it ends,
    /// not when the epoch passes.
    fn drop(&mut self) {
        if let Armed::Bucket { due, shard, index } = self.state {
            let mut bucket = lock(&self.deadlines.slot(shard, due).bucket);
            let current = bucket.epoch == due;
            let taken = match bucket.wakers.get_mut(index) {
                Some(held) if current => held.take(),
                _ => None,
            };
            if taken.is_some() {
                bucket.held -= 1;
            }
            drop(bucket);
            drop(taken);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::pending;
    use std::sync::atomic::{AtomicBool, AtomicU32};
    use std::task::Wake;
    use std::time::Instant;

    const LIMIT: Duration = Duration::from_millis(80);

    thread_local! {
        /// Run by an exchange of this thread between its first look at
        /// `resting` and its registration.
        pub(super) static BEFORE_REGISTER: std::cell::Cell<Option<fn(&Deadlines)>> =
            const { std::cell::Cell::new(None) };
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_time()
            .build()
            .unwrap()
    }

    /// Counts its wakes; its `Arc`'s count shows whether a bucket holds it.
    #[derive(Default)]
    struct Counting(AtomicU32);

    impl Wake for Counting {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// A bounded exchange that never answers; a panic, not a hang, if
    /// nothing wakes it.
    async fn hung(deadlines: &Arc<Deadlines>) -> Option<()> {
        tokio::time::timeout(LIMIT * 10, deadlines.bound(pending()))
            .await
            .expect("the deadline never woke the exchange")
    }

    /// Awaits a hung exchange: it times out, no earlier than the limit;
    /// how long that took.
    async fn times_out(deadlines: &Arc<Deadlines>) -> Duration {
        let started = Instant::now();
        assert_eq!(hung(deadlines).await, None);
        let took = started.elapsed();
        assert!(took >= LIMIT, "early: {took:?}");
        took
    }

    /// Polls `fut` once with `waker`.
    fn poll_once<F: Future + Unpin>(fut: &mut F, waker: &Arc<Counting>) -> Poll<F::Output> {
        let waker = Waker::from(waker.clone());
        Pin::new(fut).poll(&mut Context::from_waker(&waker))
    }

    #[test]
    fn a_hung_exchange_times_out_no_earlier_than_the_limit_and_soon_after() {
        let deadlines = Deadlines::new(LIMIT);
        runtime().block_on(async {
            for _ in 0..5 {
                let took = times_out(&deadlines).await;
                // Three periods (of 8.4 ms here) and the coarse clock's
                // slack late at most, and a generous scheduling slack.
                assert!(took < LIMIT + Duration::from_millis(250), "{took:?}");
            }
        });
        assert_eq!(deadlines.held(), 0);
    }

    #[test]
    fn an_exchange_that_answers_gets_its_answer_and_leaves_no_waker() {
        let deadlines = Deadlines::new(LIMIT);
        runtime().block_on(async {
            assert_eq!(deadlines.bound(async { 7 }).await, Some(7));
            let late = async {
                tokio::time::sleep(Duration::from_millis(5)).await;
                8
            };
            assert_eq!(deadlines.bound(late).await, Some(8));
        });
        assert_eq!(deadlines.held(), 0);
    }

    #[test]
    fn concurrent_exchanges_each_get_their_own_outcome() {
        let deadlines = Deadlines::new(LIMIT);
        let outcomes = runtime().block_on(async {
            let calls: Vec<_> = (0..200u32)
                .map(|i| {
                    let deadlines = deadlines.clone();
                    tokio::spawn(async move {
                        let answers = i % 2 == 0;
                        let bounded = deadlines.bound(async move {
                            if answers {
                                tokio::time::sleep(Duration::from_millis(1)).await;
                                i
                            } else {
                                pending().await
                            }
                        });
                        tokio::time::timeout(LIMIT * 10, bounded)
                            .await
                            .expect("the deadline never woke the exchange")
                    })
                })
                .collect();
            let mut outcomes = Vec::new();
            for call in calls {
                outcomes.push(call.await.unwrap());
            }
            outcomes
        });
        let expected: Vec<_> = (0..200u32).map(|i| (i % 2 == 0).then_some(i)).collect();
        assert_eq!(outcomes, expected);
        assert_eq!(deadlines.held(), 0);
    }

    #[test]
    fn the_waker_of_an_exchange_that_answered_is_taken_back_unwoken() {
        let deadlines = Deadlines::new(LIMIT);
        let rt = runtime();
        let _entered = rt.enter();
        let answered = Arc::new(AtomicBool::new(false));
        let exchange = poll_fn(|_| {
            if answered.load(Ordering::SeqCst) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        });
        let waker = Arc::new(Counting::default());
        let mut bounded = Box::pin(deadlines.bound(exchange));
        assert!(poll_once(&mut bounded, &waker).is_pending());
        assert_eq!(Arc::strong_count(&waker), 2, "the bucket holds the waker");
        answered.store(true, Ordering::SeqCst);
        assert_eq!(poll_once(&mut bounded, &waker), Poll::Ready(Some(())));
        assert_eq!(Arc::strong_count(&waker), 1, "taken back as it ended");
        drop(bounded);
        std::thread::sleep(LIMIT * 2);
        assert_eq!(waker.0.load(Ordering::SeqCst), 0);
        assert_eq!(deadlines.held(), 0);
    }

    #[test]
    fn a_pending_exchange_wakes_the_waker_it_was_last_polled_with() {
        let deadlines = Deadlines::new(LIMIT);
        let rt = runtime();
        let _entered = rt.enter();
        let (first, last) = (Arc::new(Counting::default()), Arc::new(Counting::default()));
        let mut bounded = Box::pin(deadlines.bound(pending::<()>()));
        assert!(poll_once(&mut bounded, &first).is_pending());
        assert!(poll_once(&mut bounded, &last).is_pending());
        std::thread::sleep(LIMIT * 2);
        assert_eq!(first.0.load(Ordering::SeqCst), 0);
        assert_eq!(last.0.load(Ordering::SeqCst), 1);
        assert_eq!(poll_once(&mut bounded, &last), Poll::Ready(None));
        drop(bounded);
        assert_eq!(deadlines.held(), 0);
    }

    #[test]
    fn a_dropped_exchange_takes_its_waker_back() {
        let deadlines = Deadlines::new(LIMIT);
        let rt = runtime();
        let _entered = rt.enter();
        let waker = Arc::new(Counting::default());
        let mut bounded = Box::pin(deadlines.bound(pending::<()>()));
        assert!(poll_once(&mut bounded, &waker).is_pending());
        assert_eq!(deadlines.held(), 1);
        drop(bounded);
        assert_eq!(deadlines.held(), 0);
        assert_eq!(Arc::strong_count(&waker), 1);
    }

    #[test]
    fn deadlines_outlive_the_runtime_of_their_first_exchange() {
        let deadlines = Deadlines::new(LIMIT);
        runtime().block_on(times_out(&deadlines));
        // That runtime is gone; a hung exchange on a second one still
        // times out.
        runtime().block_on(times_out(&deadlines));
    }

    #[test]
    fn a_runtime_kept_but_no_longer_driven_does_not_strand_exchanges() {
        let deadlines = Deadlines::new(LIMIT);
        // A current-thread runtime runs nothing once its `block_on` returns.
        let idle = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        idle.block_on(times_out(&deadlines));
        runtime().block_on(times_out(&deadlines));
        drop(idle);
    }

    #[test]
    fn deadlines_idle_for_longer_than_their_buckets_span_still_bound() {
        let deadlines = Deadlines::new(LIMIT);
        // 32 epochs of 8.4 ms pass before the first exchange.
        std::thread::sleep(Duration::from_millis(400));
        let rt = runtime();
        rt.block_on(async {
            times_out(&deadlines).await;
            assert_eq!(deadlines.bound(async { 1 }).await, Some(1));
        });
        // The ticker has caught up, every bucket at once (13 epochs later,
        // one at a time, most would still hold an epoch long passed): an
        // exchange waits in a bucket again, not on a timer of its own.
        let _entered = rt.enter();
        let waker = Arc::new(Counting::default());
        let mut bounded = Box::pin(deadlines.bound(pending::<()>()));
        assert!(poll_once(&mut bounded, &waker).is_pending());
        assert_eq!(deadlines.held(), 1);
    }

    /// A waker that reads the buckets when woken, as a waker that polls
    /// its exchange at once would.
    struct Inline(Arc<Deadlines>, std::sync::mpsc::Sender<usize>);

    impl Wake for Inline {
        fn wake(self: Arc<Self>) {
            let _ = self.1.send(self.0.held());
        }
    }

    #[test]
    fn wakers_are_woken_outside_the_buckets_lock() {
        let deadlines = Deadlines::new(LIMIT);
        // Leaked: were its ticker stuck, dropping it would wait forever.
        let rt = Box::leak(Box::new(runtime()));
        let _entered = rt.enter();
        let (sent, woken) = std::sync::mpsc::channel();
        let waker = Waker::from(Arc::new(Inline(deadlines.clone(), sent)));
        // Not dropped either: its drop takes the bucket's lock.
        let mut bounded = std::mem::ManuallyDrop::new(Box::pin(deadlines.bound(pending::<()>())));
        let polled = bounded.as_mut().poll(&mut Context::from_waker(&waker));
        assert!(polled.is_pending());
        // Under the lock, the wake would wait for that lock forever.
        let held = woken
            .recv_timeout(LIMIT * 10)
            .expect("woken, and not stuck");
        assert_eq!(held, 0, "the bucket gave its wakers up before waking them");
    }

    struct Panics;

    impl Wake for Panics {
        fn wake(self: Arc<Self>) {
            panic!("a waker that panics");
        }
    }

    #[test]
    fn a_waker_that_panics_takes_neither_the_ticker_nor_the_others_down() {
        let deadlines = Deadlines::new(LIMIT);
        let rt = runtime();
        let _entered = rt.enter();
        let panics = Waker::from(Arc::new(Panics));
        let counting = Arc::new(Counting::default());
        // Registered one after the other: the same bucket, the panicking
        // waker first.
        let mut first = Box::pin(deadlines.bound(pending::<()>()));
        assert!(first
            .as_mut()
            .poll(&mut Context::from_waker(&panics))
            .is_pending());
        let mut second = Box::pin(deadlines.bound(pending::<()>()));
        assert!(poll_once(&mut second, &counting).is_pending());
        // Waited for, not slept on: the panic's report (a backtrace, with
        // RUST_BACKTRACE set) can hold the ticker up for a while.
        wait_until(Duration::from_secs(10), "never woken", || {
            counting.0.load(Ordering::SeqCst) > 0
        });
        assert_eq!(counting.0.load(Ordering::SeqCst), 1);
        // The ticker still runs.
        rt.block_on(times_out(&deadlines));
    }

    #[test]
    fn a_runtime_without_timers_still_bounds_exchanges() {
        let deadlines = Deadlines::new(LIMIT);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let started = Instant::now();
        assert_eq!(rt.block_on(deadlines.bound(pending::<()>())), None);
        assert!(started.elapsed() >= LIMIT);
    }

    #[test]
    fn the_ticker_stops_when_the_deadlines_are_dropped() {
        let deadlines = Deadlines::new(LIMIT);
        let rt = runtime();
        rt.block_on(times_out(&deadlines));
        let weak = Arc::downgrade(&deadlines);
        drop(deadlines);
        // The ticker holds a `Weak` (a strong one only during a round):
        // nothing keeps the deadlines, and the thread ends at its next round.
        wait_until(LIMIT * 10, "kept alive", || weak.strong_count() == 0);
    }

    /// Polls `done` until it holds; a panic naming `what` if it does not
    /// within `within`.
    fn wait_until(within: Duration, what: &str, done: impl Fn() -> bool) {
        let started = Instant::now();
        while !done() {
            assert!(started.elapsed() < within, "{what}");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Waits (at most ten limits) until `waker` is woken, then checks it
    /// was woken once.
    fn woken_once(waker: &Counting) {
        wait_until(LIMIT * 10, "never woken", || {
            waker.0.load(Ordering::SeqCst) > 0
        });
        std::thread::sleep(LIMIT);
        assert_eq!(waker.0.load(Ordering::SeqCst), 1);
    }

    /// Waits (at most 10 s) until the ticker rests.
    fn until_resting(deadlines: &Deadlines) {
        wait_until(REST * 10, "the ticker never rested", || {
            deadlines.resting.load(Ordering::SeqCst)
        });
    }

    #[test]
    fn an_idle_ticker_parks_and_the_next_exchange_waits_in_a_bucket_again() {
        let deadlines = Deadlines::new(LIMIT);
        let rt = runtime();
        rt.block_on(times_out(&deadlines));
        until_resting(&deadlines);
        // Parked: no round processes an epoch while as many pass as there
        // are buckets (so every bucket now holds an epoch long passed).
        let passed = deadlines.passed.load(Ordering::SeqCst);
        std::thread::sleep(deadlines.period() * SLOTS as u32);
        assert_eq!(deadlines.passed.load(Ordering::SeqCst), passed);
        // The next exchange catches the epochs up, so it waits in a bucket
        // (not on a timer of its own), and the ticker it unparked wakes it.
        let _entered = rt.enter();
        let waker = Arc::new(Counting::default());
        let mut bounded = Box::pin(deadlines.bound(pending::<()>()));
        assert!(poll_once(&mut bounded, &waker).is_pending());
        assert_eq!(deadlines.held(), 1);
        assert!(!deadlines.resting.load(Ordering::SeqCst));
        woken_once(&waker);
        assert_eq!(poll_once(&mut bounded, &waker), Poll::Ready(None));
        rt.block_on(times_out(&deadlines));
    }

    #[test]
    fn a_stray_unpark_while_the_ticker_runs_does_not_keep_it_from_parking() {
        let deadlines = Deadlines::new(LIMIT);
        runtime().block_on(times_out(&deadlines));
        // An exchange that roused the ticker while it ran leaves a token
        // like this one.
        deadlines.ticker_thread.get().expect("started").unpark();
        until_resting(&deadlines);
        // Long enough for a second rest, had the token ended the first
        // park at once.
        std::thread::sleep(REST + REST / 2);
        assert_eq!(deadlines.parks.load(Ordering::SeqCst), 1);
        assert!(deadlines.resting.load(Ordering::SeqCst));
    }

    #[test]
    fn an_exchange_registering_after_the_tickers_last_look_rouses_it() {
        let deadlines = Deadlines::new(LIMIT);
        let rt = runtime();
        let _entered = rt.enter();
        let waker = Arc::new(Counting::default());
        // The ticker's last look before parking falls between the
        // exchange's first look at `resting` and its registration.
        BEFORE_REGISTER.set(Some(|d| assert!(d.rest(), "no waker held yet")));
        let mut bounded = Box::pin(deadlines.bound(pending::<()>()));
        let polled = poll_once(&mut bounded, &waker);
        BEFORE_REGISTER.set(None);
        assert!(polled.is_pending());
        assert_eq!(deadlines.held(), 1);
        assert!(
            !deadlines.resting.load(Ordering::SeqCst),
            "registered after the look, it saw the ticker resting and roused it"
        );
        woken_once(&waker);
    }

    #[test]
    fn a_parked_ticker_ends_when_the_deadlines_are_dropped() {
        let deadlines = Deadlines::new(LIMIT);
        runtime().block_on(times_out(&deadlines));
        until_resting(&deadlines);
        let alive = Arc::clone(&deadlines.ticker_alive);
        drop(deadlines);
        wait_until(LIMIT * 10, "the ticker still runs", || {
            Arc::strong_count(&alive) == 1
        });
    }
}
