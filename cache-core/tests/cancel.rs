//! Cancellation safety: a caller may drop any operation's future at any
//! point (a `select!`, an outer timeout, a client that hung up), and what
//! is left behind must still work.
//!
//! How: the backend under test is a memory backend behind a [`Gate`] that
//! parks its n-th call, before or after the memory backend ran it (a
//! request never sent, or sent and applied with its answer lost). Each
//! test takes a fresh stack, drives one operation until the chosen call
//! parks, drops the operation's future there, resumes whatever else was
//! parked (a single-flight load runs in a task of its own), and checks the
//! stack; then the next call, until the operation finishes before reaching
//! it. Nothing is timed: futures are polled by hand and a future still
//! pending after [`ROUNDS`] polls (with the runtime's other tasks run in
//! between) counts as stuck.
//!
//! It fails if a cancelled call leaves state behind: a circuit breaker
//! wedged half-open, a single-flight entry that no load will ever answer
//! (or a next caller that loads again instead of joining), a write still
//! "in flight" in the write tracking of `Tiered`, `Cache` or `TypedL1` (no
//! copy or loaded value is ever kept again), an L1 copy that contradicts
//! its L2, counters that count a call with no outcome, or a rate limit that
//! counts more than the cancelled check itself, or a cancelled `Tiered`
//! read that leaves a stale copy in an L1 that is not in-process, or a
//! cancelled `Tiered` write that never tells the other instances, or a
//! cancelled `invalidate_category` that this instance does not see.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, SystemTime};

use cache_core::layers::{
    BreakerConfig, BreakerState, FailOpen, Metered, Tiered, TieredConfig, Timeout,
};
use cache_core::{
    async_trait, Backplane, BackplaneEvent, BackplaneMessage, Bytes, Cache, CacheBackend, CacheKey,
    CacheStats, Capabilities, Error, ErrorKind, FailSafe, GetOrSetOptions, Health, HealthStatus,
    KeyTtl, LocalBackplane, RateLimiter, Result, Rule, SetOptions, Ttl, TypedL1, TypedL1Config,
};
use cache_memory::MemoryBackend;
use tokio::sync::{mpsc, watch};

/// Polls (and yields to the runtime's other tasks in between) before a
/// future counts as stuck.
const ROUNDS: usize = 1_000;

// ------------------------------------------------------------------ harness

/// Where a parked call stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    /// Before the call reaches the backend: the request is never sent.
    Before,
    /// After the backend ran it: the request is applied, its answer lost.
    After,
}

/// Parks a chosen call until [`Gate::release`].
struct Gate {
    calls: AtomicUsize,
    /// The number of the call to park; 0 for none.
    park_at: AtomicUsize,
    after: AtomicBool,
    /// Calls parked since the gate was armed.
    parked: AtomicUsize,
    /// Bumped by each release; a parked call waits for the next bump.
    released: watch::Sender<u64>,
}

impl Gate {
    fn new() -> Self {
        Gate {
            calls: AtomicUsize::new(0),
            park_at: AtomicUsize::new(0),
            after: AtomicBool::new(false),
            parked: AtomicUsize::new(0),
            released: watch::Sender::new(0),
        }
    }

    /// Parks the `n`-th call from now (1: the next one) on `side`.
    fn arm(&self, n: usize, side: Side) {
        self.after.store(side == Side::After, SeqCst);
        self.parked.store(0, SeqCst);
        self.park_at.store(self.calls.load(SeqCst) + n, SeqCst);
    }

    /// Disarms the gate and resumes every parked call.
    fn release(&self) {
        self.park_at.store(0, SeqCst);
        self.released.send_modify(|n| *n += 1);
    }

    fn parked(&self) -> usize {
        self.parked.load(SeqCst)
    }

    fn calls(&self) -> usize {
        self.calls.load(SeqCst)
    }

    async fn pass<F: Future>(&self, call: F) -> F::Output {
        let n = self.calls.fetch_add(1, SeqCst) + 1;
        let park = n == self.park_at.load(SeqCst);
        let after = self.after.load(SeqCst);
        if park && !after {
            self.park().await;
        }
        let output = call.await;
        if park && after {
            self.park().await;
        }
        output
    }

    async fn park(&self) {
        let mut released = self.released.subscribe();
        let ticket = *released.borrow_and_update();
        self.parked.fetch_add(1, SeqCst);
        let _ = released.wait_for(|n| *n > ticket).await;
    }
}

/// A memory backend behind a [`Gate`]; it can also fail every call.
struct Gated {
    inner: MemoryBackend,
    gate: Gate,
    failing: AtomicBool,
}

impl Gated {
    fn new() -> Arc<Self> {
        Arc::new(Gated {
            inner: MemoryBackend::new(),
            gate: Gate::new(),
            failing: AtomicBool::new(false),
        })
    }

    async fn through<T>(
        &self,
        op: &'static str,
        call: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        if self.failing.load(SeqCst) {
            return Err(Error::new(ErrorKind::Connection, "gated: failing").with_operation(op));
        }
        self.gate.pass(call).await
    }
}

#[async_trait]
impl CacheBackend for Gated {
    fn name(&self) -> &'static str {
        "gated"
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        self.through("get", self.inner.get(key)).await
    }

    async fn set(&self, key: &str, value: Bytes, opts: SetOptions) -> Result<bool> {
        self.through("set", self.inner.set(key, value, opts)).await
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        self.through("delete", self.inner.delete(key)).await
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        self.through("exists", self.inner.exists(key)).await
    }

    async fn ttl(&self, key: &str) -> Result<KeyTtl> {
        self.through("ttl", self.inner.ttl(key)).await
    }

    async fn expire(&self, key: &str, ttl: Option<Duration>) -> Result<bool> {
        self.through("expire", self.inner.expire(key, ttl)).await
    }

    async fn incr(&self, key: &str, delta: i64, ttl: Option<Duration>) -> Result<i64> {
        self.through("incr", self.inner.incr(key, delta, ttl)).await
    }

    async fn health(&self) -> Result<Health> {
        self.through("health", self.inner.health()).await
    }

    async fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Bytes>>> {
        self.through("get_many", self.inner.get_many(keys)).await
    }

    async fn set_many(&self, items: &[(&str, Bytes)], ttl: Option<Duration>) -> Result<()> {
        self.through("set_many", self.inner.set_many(items, ttl))
            .await
    }

    async fn delete_many(&self, keys: &[&str]) -> Result<u64> {
        self.through("delete_many", self.inner.delete_many(keys))
            .await
    }

    async fn scan(&self, pattern: &str) -> Result<Vec<String>> {
        self.through("scan", self.inner.scan(pattern)).await
    }

    async fn delete_matching(&self, pattern: &str) -> Result<u64> {
        self.through("delete_matching", self.inner.delete_matching(pattern))
            .await
    }

    async fn clear(&self, namespace: &str) -> Result<u64> {
        self.through("clear", self.inner.clear(namespace)).await
    }

    async fn close(&self) -> Result<()> {
        self.through("close", self.inner.close()).await
    }
}

/// A local backplane whose `publish` goes through a [`Gate`].
struct GatedBackplane {
    inner: LocalBackplane,
    gate: Gate,
}

#[async_trait]
impl Backplane for GatedBackplane {
    fn name(&self) -> &'static str {
        "gated"
    }

    async fn publish(&self, message: &BackplaneMessage) -> Result<()> {
        self.gate.pass(self.inner.publish(message)).await
    }

    async fn subscribe(&self) -> Result<mpsc::Receiver<BackplaneEvent>> {
        self.inner.subscribe().await
    }
}

fn poll_once<F: Future + ?Sized>(future: Pin<&mut F>) -> Poll<F::Output> {
    future.poll(&mut Context::from_waker(Waker::noop()))
}

/// Drives `op` until a call parks at `gate` (armed at `call`, `side`), then
/// drops it there and releases the gate. False when `op` finished first.
async fn cancel_at(gate: &Gate, call: usize, side: Side, op: impl Future) -> bool {
    let cancelled = drop_at(gate, call, side, op).await;
    gate.release();
    cancelled
}

/// As [`cancel_at`], but a call parked elsewhere (in a task the operation
/// started) stays parked until the caller releases the gate.
async fn drop_at(gate: &Gate, call: usize, side: Side, op: impl Future) -> bool {
    gate.arm(call, side);
    let mut op = Box::pin(op);
    for _ in 0..ROUNDS {
        if poll_once(op.as_mut()).is_ready() {
            return false;
        }
        if gate.parked() > 0 {
            return true;
        }
        tokio::task::yield_now().await;
    }
    panic!("the operation neither finished nor reached call {call}: stuck");
}

/// Drives `future` to its end, failing the test if it is stuck.
async fn finish<F: Future>(what: &str, future: F) -> F::Output {
    let mut future = Box::pin(future);
    for _ in 0..ROUNDS {
        if let Poll::Ready(output) = poll_once(future.as_mut()) {
            return output;
        }
        tokio::task::yield_now().await;
    }
    panic!("{what}: still pending after {ROUNDS} rounds: something is stuck");
}

/// Runs the runtime's other tasks until `done`, failing if it never is.
async fn until(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..ROUNDS {
        if done() {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("{what}: never happened");
}

/// Calls `at(call, side)` for call 1, 2... on each side until it returns
/// false (the operation finished before reaching that call); returns how
/// many cancellations were made.
async fn sweep(mut at: impl AsyncFnMut(usize, Side) -> bool) -> usize {
    let mut cancelled = 0;
    for side in [Side::Before, Side::After] {
        for call in 1.. {
            assert!(call < 100, "an operation made 100 calls: runaway");
            if !at(call, side).await {
                break;
            }
            cancelled += 1;
        }
    }
    cancelled
}

fn bytes(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

// ------------------------------------------------------- byte-level wrappers

const K: &str = "app:k";
const J: &str = "app:j";
const N: &str = "app:n";

/// Every operation of the backend contract but `close`.
const OPS: [&str; 14] = [
    "get",
    "set",
    "delete",
    "exists",
    "ttl",
    "expire",
    "incr",
    "health",
    "get_many",
    "set_many",
    "delete_many",
    "scan",
    "delete_matching",
    "clear",
];

/// `op` on `backend`, over the keys [`seed`] wrote; every call must succeed.
fn run<'a>(backend: &'a dyn CacheBackend, op: &str) -> Pin<Box<dyn Future<Output = ()> + 'a>> {
    let ttl = Some(Duration::from_secs(3600));
    match op {
        "get" => Box::pin(async move {
            let _ = backend.get(K).await.unwrap();
        }),
        "set" => Box::pin(async move {
            backend
                .set(K, bytes("new"), SetOptions::ttl(ttl))
                .await
                .unwrap();
        }),
        "delete" => Box::pin(async move {
            let _ = backend.delete(K).await.unwrap();
        }),
        "exists" => Box::pin(async move {
            let _ = backend.exists(K).await.unwrap();
        }),
        "ttl" => Box::pin(async move {
            let _ = backend.ttl(K).await.unwrap();
        }),
        "expire" => Box::pin(async move {
            let _ = backend.expire(K, ttl).await.unwrap();
        }),
        "incr" => Box::pin(async move {
            let _ = backend.incr(N, 1, ttl).await.unwrap();
        }),
        "health" => Box::pin(async move {
            let _ = backend.health().await.unwrap();
        }),
        "get_many" => Box::pin(async move {
            let _ = backend.get_many(&[K, J, "app:x"]).await.unwrap();
        }),
        "set_many" => Box::pin(async move {
            backend
                .set_many(&[(K, bytes("new")), (J, bytes("new"))], ttl)
                .await
                .unwrap();
        }),
        "delete_many" => Box::pin(async move {
            let _ = backend.delete_many(&[K, J]).await.unwrap();
        }),
        "scan" => Box::pin(async move {
            let _ = backend.scan("app:*").await.unwrap();
        }),
        "delete_matching" => Box::pin(async move {
            let _ = backend.delete_matching("app:*").await.unwrap();
        }),
        "clear" => Box::pin(async move {
            let _ = backend.clear("app:").await.unwrap();
        }),
        other => unreachable!("no operation {other}"),
    }
}

/// Writes `K`, `J` and `N` (a counter) through `backend`.
async fn seed(backend: &dyn CacheBackend) {
    for (key, value) in [(K, "old-k"), (J, "old-j"), (N, "5")] {
        backend
            .set(key, bytes(value), SetOptions::default())
            .await
            .unwrap();
    }
}

/// `Metered` over `FailOpen` over `Timeout`, the production order.
type Stack = Metered<FailOpen<Timeout<Arc<Gated>>>>;

/// A fresh stack over seeded data; with `probe`, its breaker is open with
/// its cool-down over, so the next call is the half-open probe.
async fn wrapper_stack(probe: bool) -> (Arc<Gated>, Stack) {
    let gated = Gated::new();
    seed(&gated.inner).await;
    let cool_down = if probe {
        Duration::ZERO
    } else {
        Duration::from_secs(3600)
    };
    let stack = Metered::new(FailOpen::new(
        Timeout::new(Arc::clone(&gated), Duration::from_secs(3600)),
        BreakerConfig::default()
            .with_failure_threshold(1)
            .with_cool_down(cool_down),
    ));
    if probe {
        gated.failing.store(true, SeqCst);
        assert_eq!(stack.get(K).await.unwrap(), None);
        gated.failing.store(false, SeqCst);
        assert_eq!(stack.inner().stats().state, BreakerState::Open);
    }
    (gated, stack)
}

/// Metered, FailOpen and Timeout: whichever call is cancelled, and whether
/// or not it is the breaker's half-open probe, the breaker is not left
/// half-open, health tells its state, the next call goes through
/// `Timeout` to the backend and closes the breaker, and `Metered` counts
/// only whole calls (a cancelled call has no outcome to count).
#[tokio::test]
async fn wrapper_stack_cancel_at_every_call() {
    for probe in [false, true] {
        for op in OPS {
            let cancelled = sweep(async |call, side| {
                let (gated, stack) = wrapper_stack(probe).await;
                let counted = stack.snapshot();
                if !cancel_at(&gated.gate, call, side, run(&stack, op)).await {
                    return false;
                }
                let at = format!("{op} cancelled at call {call} {side:?} (probe: {probe})");
                let breaker = stack.inner().stats();
                assert_eq!(
                    stack.snapshot(),
                    counted,
                    "{at}: a cancelled call is not counted"
                );
                assert_eq!(stack.errors().len(), 0, "{at}");
                let health = finish(&at, stack.health()).await.unwrap();
                if probe {
                    assert_eq!(breaker.state, BreakerState::Open, "{at}");
                    assert_eq!(breaker.abandoned_probes, 1, "{at}");
                    assert_eq!(breaker.breaker_opened, 1, "{at}");
                    assert_eq!(health.status, HealthStatus::Unhealthy, "{at}");
                    assert_eq!(health.details["breaker"], "open", "{at}");
                } else {
                    assert_eq!(breaker.state, BreakerState::Closed, "{at}");
                    assert_eq!(breaker.abandoned_probes, 0, "{at}");
                    assert_eq!(health.status, HealthStatus::Healthy, "{at}");
                    assert_eq!(health.details["breaker"], "closed", "{at}");
                }

                // The next call reaches the backend and answers.
                let calls = gated.gate.calls();
                finish(&at, stack.exists(J)).await.unwrap();
                assert_eq!(gated.gate.calls(), calls + 1, "{at}: skipped the backend");
                let breaker = stack.inner().stats();
                assert_eq!(breaker.state, BreakerState::Closed, "{at}");
                assert_eq!(
                    (breaker.failed_reads, breaker.skipped_writes),
                    (u64::from(probe), 0)
                );
                let exists = stack.snapshot()["exists"];
                assert_eq!(
                    (exists.calls, exists.hits + exists.misses, exists.errors),
                    (1, 1, 0)
                );
                true
            })
            .await;
            // In open state `health` answers without calling the backend.
            if !(probe && op == "health") {
                assert!(cancelled > 0, "{op}: never cancelled (probe: {probe})");
            }
        }
    }
}

/// Which tier of a [`TierStack`] a sweep parks.
#[derive(Debug, Clone, Copy)]
enum Tier {
    L1,
    L2,
}

struct TierStack {
    l1: Arc<Gated>,
    l2: Arc<Gated>,
    tiered: Tiered,
}

impl TierStack {
    async fn new() -> Self {
        let (l1, l2) = (Gated::new(), Gated::new());
        let tiered = Tiered::new(
            Arc::clone(&l1) as Arc<dyn CacheBackend>,
            Arc::clone(&l2) as Arc<dyn CacheBackend>,
            TieredConfig::default(),
        );
        seed(&tiered).await;
        for key in [K, J, N] {
            assert!(
                l1.inner.exists(key).await.unwrap(),
                "seeded {key} has an L1 copy"
            );
        }
        TierStack { l1, l2, tiered }
    }

    fn gate(&self, tier: Tier) -> &Gate {
        match tier {
            Tier::L1 => &self.l1.gate,
            Tier::L2 => &self.l2.gate,
        }
    }
}

/// Tiered, with either tier slow (any backend can be an L1): a call
/// cancelled anywhere leaves no L1 copy that contradicts L2, and no write
/// counted as in flight, so values read from L2 afterwards are copied into
/// L1 again.
#[tokio::test]
async fn tiered_cancel_at_every_call_of_either_tier() {
    for op in OPS {
        let mut cancelled = 0;
        for tier in [Tier::L1, Tier::L2] {
            cancelled += sweep(async |call, side| {
                let stack = TierStack::new().await;
                if !cancel_at(stack.gate(tier), call, side, run(&stack.tiered, op)).await {
                    return false;
                }
                let at = format!("{op} cancelled at {tier:?} call {call} {side:?}");
                for key in [K, J, N] {
                    let copy = stack.l1.inner.get(key).await.unwrap();
                    let truth = stack.l2.inner.get(key).await.unwrap();
                    assert!(
                        copy.is_none() || copy == truth,
                        "{at}: L1 {copy:?}, L2 {truth:?} for {key}"
                    );
                }

                // No write of these keys is still "in flight": a value read
                // from L2 is copied into L1.
                let before = stack.tiered.stats();
                for key in [K, J] {
                    stack
                        .l2
                        .inner
                        .set(key, bytes("fresh"), SetOptions::default())
                        .await
                        .unwrap();
                    stack.l1.inner.delete(key).await.unwrap();
                    let read = finish(&at, stack.tiered.get(key)).await.unwrap();
                    assert_eq!(read, Some(bytes("fresh")), "{at}");
                    let copy = stack.l1.inner.get(key).await.unwrap();
                    assert_eq!(copy, Some(bytes("fresh")), "{at}: no L1 copy of {key}");
                }
                let after = stack.tiered.stats();
                assert_eq!(after.l2_hits, before.l2_hits + 2, "{at}");
                assert_eq!(
                    (after.l1_hits, after.misses),
                    (before.l1_hits, before.misses),
                    "{at}"
                );
                true
            })
            .await;
        }
        assert!(cancelled > 0, "{op}: never cancelled");
    }
}

/// With an L1 that can be slow: a read copies an old value into L1 after a
/// write replaced it, notices, and is cancelled while dropping the copy.
/// The copy must not outlive the cancellation (the type's docs: an
/// abandoned call leaves "at worst a missing L1 copy, never a stale one").
#[tokio::test]
async fn tiered_cancelled_read_leaves_no_stale_copy_cancel() {
    let l1 = Gated::new();
    let l2: Arc<dyn CacheBackend> = Arc::new(MemoryBackend::new());
    let tiered = Tiered::new(
        Arc::clone(&l1) as Arc<dyn CacheBackend>,
        Arc::clone(&l2),
        TieredConfig::default(),
    );
    l2.set(K, bytes("old"), SetOptions::default())
        .await
        .unwrap();

    // The read misses L1 (call 1), reads L2, and parks copying into L1.
    l1.gate.arm(2, Side::Before);
    let mut read = Box::pin(tiered.get(K));
    until("the read parks", || {
        assert!(poll_once(read.as_mut()).is_pending());
        l1.gate.parked() == 1
    })
    .await;
    // A write replaces the value in both tiers meanwhile.
    finish("write", tiered.set(K, bytes("new"), SetOptions::default()))
        .await
        .unwrap();
    assert_eq!(l1.inner.get(K).await.unwrap(), Some(bytes("new")));
    // The read's copy lands; it is cancelled while dropping it.
    l1.gate.release();
    l1.gate.arm(1, Side::Before);
    until("the read parks dropping its copy", || {
        assert!(poll_once(read.as_mut()).is_pending());
        l1.gate.parked() == 1
    })
    .await;
    drop(read);
    l1.gate.release();
    // The cancelled fill drops its provisional copy from a task of its own
    // (no await is possible in `Drop`): give that task its turn.
    until("the provisional copy is dropped", || {
        let mut copy = Box::pin(l1.inner.get(K));
        !matches!(poll_once(copy.as_mut()), Poll::Ready(Ok(Some(v))) if v == bytes("old"))
    })
    .await;

    assert_eq!(l2.get(K).await.unwrap(), Some(bytes("new")));
    assert_eq!(
        tiered.get(K).await.unwrap(),
        Some(bytes("new")),
        "a stale L1 copy is served"
    );
}

/// Two instances over one L2 with a backplane: a write cancelled while it
/// publishes its invalidation must still reach the other instance, whose
/// L1 copy is otherwise stale for up to `l1_max_ttl`.
#[tokio::test]
async fn tiered_cancelled_write_still_reaches_other_instances_cancel() {
    let l2: Arc<dyn CacheBackend> = Arc::new(MemoryBackend::new());
    let backplane = Arc::new(GatedBackplane {
        inner: LocalBackplane::new(),
        gate: Gate::new(),
    });
    let tier = || {
        Tiered::new(
            Arc::new(MemoryBackend::new()),
            Arc::clone(&l2),
            TieredConfig::default(),
        )
    };
    let a = tier().with_backplane(backplane.clone()).await.unwrap();
    let b = tier().with_backplane(backplane.clone()).await.unwrap();
    l2.set(K, bytes("old"), SetOptions::default())
        .await
        .unwrap();
    assert_eq!(b.get(K).await.unwrap(), Some(bytes("old"))); // b keeps a copy

    let write = a.set(K, bytes("new"), SetOptions::default());
    assert!(cancel_at(&backplane.gate, 1, Side::Before, write).await);
    assert_eq!(l2.get(K).await.unwrap(), Some(bytes("new")));
    until("b sees the write", || {
        let mut read = Box::pin(b.get(K));
        matches!(poll_once(read.as_mut()), Poll::Ready(Ok(Some(v))) if v == bytes("new"))
    })
    .await;
}

// ---------------------------------------------------------------- Cache

fn key(id: &str) -> CacheKey {
    CacheKey::new("user", id).unwrap()
}

/// `Cache` operations, by name; every call must succeed.
const CACHE_OPS: [&str; 14] = [
    "get",
    "set",
    "set_if_absent",
    "delete",
    "exists",
    "incr",
    "get_many",
    "set_many",
    "get_or_set",
    "invalidate_category",
    "invalidate_matching",
    "clear",
    "health",
    "full_key",
];

fn run_cache<'a>(cache: &'a Cache, op: &str) -> Pin<Box<dyn Future<Output = ()> + 'a>> {
    let (k, j) = (key("k"), key("j"));
    let ttl = Ttl::After(Duration::from_secs(3600));
    match op {
        "get" => Box::pin(async move {
            let _ = cache.get::<String>(&k).await.unwrap();
        }),
        "set" => Box::pin(async move { cache.set(&k, "new").await.unwrap() }),
        "set_if_absent" => Box::pin(async move {
            let _ = cache.set_if_absent(&key("x"), "new", ttl).await.unwrap();
        }),
        "delete" => Box::pin(async move {
            let _ = cache.delete(&k).await.unwrap();
        }),
        "exists" => Box::pin(async move {
            let _ = cache.exists(&k).await.unwrap();
        }),
        "incr" => Box::pin(async move {
            let _ = cache.incr(&key("count"), 1).await.unwrap();
        }),
        "get_many" => Box::pin(async move {
            let _ = cache.get_many::<String>(&[k, j, key("x")]).await.unwrap();
        }),
        "set_many" => Box::pin(async move {
            cache
                .set_many(&[(k, "new"), (j, "new")], ttl)
                .await
                .unwrap();
        }),
        "get_or_set" => Box::pin(async move {
            let v: String = cache
                .get_or_set(&key("x"), || async {
                    Ok::<_, std::io::Error>("loaded".to_string())
                })
                .await
                .unwrap();
            assert_eq!(v, "loaded");
        }),
        "invalidate_category" => Box::pin(async move {
            let _ = cache.invalidate_category("user").await.unwrap();
        }),
        "invalidate_matching" => Box::pin(async move {
            let _ = cache.invalidate_matching("user", "*").await.unwrap();
        }),
        "clear" => Box::pin(async move {
            let _ = cache.clear().await.unwrap();
        }),
        "health" => Box::pin(async move {
            let _ = cache.health().await.unwrap();
        }),
        "full_key" => Box::pin(async move {
            let _ = cache.full_key(&key("new-category-less")).await.unwrap();
        }),
        other => unreachable!("no cache operation {other}"),
    }
}

/// A cache over `gated` that reads its category generation on every call
/// (so every operation has that call to cancel, whatever the time).
fn cache_over(gated: &Arc<Gated>) -> cache_core::CacheBuilder {
    Cache::builder(Arc::clone(gated) as Arc<dyn CacheBackend>).generation_refresh(Duration::ZERO)
}

async fn seeded_cache(gated: &Arc<Gated>) -> Cache {
    let cache = cache_over(gated).build().unwrap();
    cache.set(&key("k"), "old-k").await.unwrap();
    cache.set(&key("j"), "old-j").await.unwrap();
    cache
}

/// The counters of `stats`, all but `uptime`.
fn counts(stats: &CacheStats) -> [u64; 11] {
    [
        stats.hits,
        stats.misses,
        stats.sets,
        stats.deletes,
        stats.errors,
        stats.decode_errors,
        stats.loader_calls,
        stats.loader_errors,
        stats.stale_served,
        stats.loader_timeouts,
        stats.refreshes,
    ]
}

/// Every `Cache` operation cancelled at each backend call: it counted
/// nothing (a `get_or_set` counts its miss as its load begins, and the load
/// goes on), nothing fails or hangs afterwards (no lock, flight or
/// generation left half-done), no error is counted, and a `get_or_set` of
/// a key the operation touched loads it (or finds it) exactly once.
#[tokio::test]
async fn cache_operations_cancel_at_every_call() {
    for op in CACHE_OPS {
        let cancelled = sweep(async |call, side| {
            let gated = Gated::new();
            let cache = seeded_cache(&gated).await;
            let seeded = counts(&cache.stats());
            assert_eq!(seeded, [0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0]);
            if !cancel_at(&gated.gate, call, side, run_cache(&cache, op)).await {
                return false;
            }
            let at = format!("{op} cancelled at call {call} {side:?}");
            let mut expected = seeded;
            if cache.stats().misses > 0 && op == "get_or_set" {
                // Its load goes on in its own task: let it end.
                until(&at, || cache.stats().sets == 3).await;
                expected = [0, 1, 3, 0, 0, 0, 1, 0, 0, 0, 0];
            }
            assert_eq!(counts(&cache.stats()), expected, "{at}");
            let before = cache.stats();
            let mut values = Vec::new();
            for id in ["k", "x"] {
                let v: String = finish(&at, cache.get_or_set(&key(id), loader("loaded")))
                    .await
                    .unwrap();
                assert!(
                    ["old-k", "new", "loaded"].contains(&v.as_str()),
                    "{at}: {v}"
                );
                values.push((id, v));
            }
            let after = cache.stats();
            assert_eq!(after.errors, 0, "{at}");
            assert_eq!(
                after.hits + after.misses,
                before.hits + before.misses + 2,
                "{at}"
            );
            assert_eq!(
                after.loader_calls - before.loader_calls,
                after.misses - before.misses,
                "{at}: each miss loads once"
            );
            // Loaded values were stored: no write of these keys is still
            // counted as in flight (a load never stores over one).
            for (id, v) in values {
                let stored = finish(&at, cache.get::<String>(&key(id))).await.unwrap();
                assert_eq!(stored.as_deref(), Some(v.as_str()), "{at}: {id} not stored");
            }
            true
        })
        .await;
        assert!(cancelled > 0, "{op}: never cancelled");
    }
}

fn loader(value: &'static str) -> impl FnOnce() -> std::future::Ready<std::io::Result<String>> {
    move || std::future::ready(Ok(value.to_string()))
}

fn failing_loader() -> impl FnOnce() -> std::future::Ready<std::io::Result<String>> {
    || std::future::ready(Err(std::io::Error::other("the database is down")))
}

/// `get_or_set` cancelled at any call, its own or its load's (the load runs
/// in a task of its own and goes on). The next caller arrives while that
/// load is still parked: it joins it rather than loading again (a load of
/// its own would miss the value not stored yet and run the loader twice),
/// or, when the cancelled caller had not begun a load, loads; either way
/// the loader runs once.
#[tokio::test]
async fn get_or_set_cancel_then_the_next_caller_joins_the_load() {
    let cancelled = sweep(async |call, side| {
        let gated = Gated::new();
        let cache = cache_over(&gated).build().unwrap();
        let k = key("k");
        let first = cache.get_or_set(&k, loader("first"));
        if !drop_at(&gated.gate, call, side, first).await {
            gated.gate.release();
            return false;
        }
        let at = format!("get_or_set cancelled at call {call} {side:?}");
        // The cancelled caller counted its miss just before the load began.
        let load_began = cache.stats().misses == 1;
        // It reads (a hit if the parked load already stored its value)...
        let mut next = Box::pin(cache.get_or_set(&k, loader("second")));
        let v: String = match poll_once(next.as_mut()) {
            Poll::Ready(v) => v.unwrap(),
            // ...or waits for a load, which can only end once released.
            Poll::Pending => {
                gated.gate.release();
                finish(&at, next).await.unwrap()
            }
        };
        gated.gate.release();
        assert_eq!(v, if load_began { "first" } else { "second" }, "{at}");
        let stats = cache.stats();
        assert_eq!((stats.loader_calls, stats.errors), (1, 0), "{at}");
        assert_eq!(
            cache.get::<String>(&k).await.unwrap().as_deref(),
            Some(v.as_str())
        );
        true
    })
    .await;
    // Three calls of the caller's (generation read and store, the read)
    // and two of the load's (the re-check, the store), on each side.
    assert_eq!(cancelled, 10);
}

/// `get_or_set` with a failing loader cancelled at any call: the load
/// ends and leaves the single-flight table, so the next caller runs a load
/// of its own (a leftover entry would hand it the old error, or a channel
/// no load will ever answer).
#[tokio::test]
async fn get_or_set_cancel_leaves_no_flight_behind() {
    let cancelled = sweep(async |call, side| {
        let gated = Gated::new();
        let cache = cache_over(&gated).build().unwrap();
        let k = key("k");
        if !cancel_at(
            &gated.gate,
            call,
            side,
            cache.get_or_set(&k, failing_loader()),
        )
        .await
        {
            return false;
        }
        let at = format!("get_or_set cancelled at call {call} {side:?}");
        let load_began = cache.stats().misses == 1;
        if load_began {
            until(&at, || cache.stats().loader_errors == 1).await;
        }
        let v: String = finish(&at, cache.get_or_set(&k, loader("second")))
            .await
            .unwrap();
        assert_eq!(v, "second", "{at}");
        let stats = cache.stats();
        let began = u64::from(load_began);
        assert_eq!(stats.loader_calls, began + 1, "{at}");
        assert_eq!((stats.loader_errors, stats.errors), (began, began), "{at}");
        true
    })
    .await;
    // The caller's three calls and the load's re-check, on each side.
    assert_eq!(cancelled, 8);
}

/// Fail-safe with a soft timeout: a `get_or_set` of a stale key cancelled
/// at any call, its loader failing. The next caller is served the stale
/// value (once, counted once), not stuck behind the cancelled one's load.
#[tokio::test]
async fn fail_safe_get_or_set_cancel_still_serves_stale() {
    let cancelled = sweep(async |call, side| {
        let gated = Gated::new();
        let cache = cache_over(&gated)
            .fail_safe(
                FailSafe::new(Duration::from_secs(3600))
                    .with_soft_timeout(Duration::from_secs(3600)),
            )
            .build()
            .unwrap();
        let k = key("k");
        cache
            .set_with_ttl(&k, "stale", Ttl::After(Duration::from_millis(1)))
            .await
            .unwrap();
        // Not a timed assertion: the value only has to be past its TTL.
        tokio::time::sleep(Duration::from_millis(20)).await;
        if !cancel_at(
            &gated.gate,
            call,
            side,
            cache.get_or_set(&k, failing_loader()),
        )
        .await
        {
            return false;
        }
        let at = format!("get_or_set cancelled at call {call} {side:?}");
        let load_began = cache.stats().misses == 1;
        if load_began {
            until(&at, || cache.stats().loader_errors == 1).await;
        }
        let v: String = finish(&at, cache.get_or_set(&k, failing_loader()))
            .await
            .unwrap();
        assert_eq!(v, "stale", "{at}");
        let stats = cache.stats();
        assert_eq!(stats.stale_served, 1, "{at}");
        assert_eq!(stats.loader_calls, u64::from(load_began) + 1, "{at}");
        assert_eq!(stats.loader_timeouts, 0, "{at}");
        true
    })
    .await;
    assert_eq!(cancelled, 6);
}

/// Refresh-ahead: a `get_or_set` hit near expiry cancelled before it
/// started its refresh; the next hit starts one, which completes, and the
/// hit after it starts another (no single-flight entry is left to keep
/// refreshes from starting).
#[tokio::test]
async fn refresh_ahead_cancel_then_the_next_hit_refreshes() {
    let cancelled = sweep(async |call, side| {
        let gated = Gated::new();
        let cache = cache_over(&gated).refresh_ahead(1.0).build().unwrap();
        let k = key("k");
        cache
            .set_with_ttl(&k, "old", Ttl::After(Duration::from_secs(3600)))
            .await
            .unwrap();
        // With fraction 1.0 a value is in its refresh window once a
        // millisecond of its TTL has passed.
        tokio::time::sleep(Duration::from_millis(5)).await;
        if !cancel_at(
            &gated.gate,
            call,
            side,
            cache.get_or_set(&k, loader("refreshed")),
        )
        .await
        {
            return false;
        }
        let at = format!("get_or_set cancelled at call {call} {side:?}");
        assert_eq!(cache.stats().refreshes, 0, "{at}");
        let opts = GetOrSetOptions::default().with_ttl(Ttl::After(Duration::from_secs(3600)));
        for (n, value) in [(1, "old"), (2, "refreshed")] {
            let v: String = finish(
                &at,
                cache.get_or_set_opts(&k, opts.clone(), loader("refreshed")),
            )
            .await
            .unwrap();
            assert_eq!(v, value, "{at}");
            // Each hit starts a refresh: the one before left the table.
            assert_eq!(cache.stats().refreshes, n, "{at}");
            until(&at, || cache.stats().sets == n + 1).await;
            assert_eq!(cache.stats().loader_calls, n, "{at}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        true
    })
    .await;
    assert_eq!(cancelled, 4);
}

/// `invalidate_category` cancelled at any call: when the new generation
/// reached the backend, this instance reads under it at once (the method's
/// docs: "This instance sees the bump at once"), however long it trusts a
/// generation it read.
#[tokio::test]
async fn cancelled_invalidate_category_is_seen_here_cancel() {
    let cancelled = sweep(async |call, side| {
        let gated = Gated::new();
        let cache = Cache::builder(Arc::clone(&gated) as Arc<dyn CacheBackend>)
            .generation_refresh(Duration::from_secs(3600))
            .build()
            .unwrap();
        // Another instance created the category's generation (one created
        // here is re-read on every call for a while, which hides this).
        gated
            .inner
            .set("cache:#gen:user", bytes("0"), SetOptions::default())
            .await
            .unwrap();
        let k = key("k");
        cache.set(&k, "old").await.unwrap();
        assert_eq!(
            cache.get::<String>(&k).await.unwrap().as_deref(),
            Some("old")
        );
        if !cancel_at(&gated.gate, call, side, cache.invalidate_category("user")).await {
            return false;
        }
        let at = format!("invalidate_category cancelled at call {call} {side:?}");
        let stored = gated.inner.get("cache:#gen:user").await.unwrap();
        let bumped = stored.as_deref() != Some(&b"0"[..]);
        let seen = finish(&at, cache.get::<String>(&k)).await.unwrap();
        let expected = if bumped { None } else { Some("old") };
        assert_eq!(
            seen.as_deref(),
            expected,
            "{at} (stored generation {stored:?})"
        );
        true
    })
    .await;
    assert_eq!(cancelled, 2);
}

// ------------------------------------------------------------- TypedL1

/// `TypedL1` operations, by name; every call must succeed.
const TYPED_OPS: [&str; 7] = [
    "get",
    "set",
    "delete",
    "get_or_set",
    "invalidate_category",
    "invalidate_matching",
    "clear",
];

fn run_typed<'a>(l1: &'a TypedL1, op: &str) -> Pin<Box<dyn Future<Output = ()> + 'a>> {
    match op {
        "get" => Box::pin(async move {
            let _ = l1.get::<String>(&key("j")).await.unwrap();
        }),
        "set" => Box::pin(async move { l1.set(&key("k"), "new").await.unwrap() }),
        "delete" => Box::pin(async move {
            let _ = l1.delete(&key("k")).await.unwrap();
        }),
        "get_or_set" => Box::pin(async move {
            let _ = l1.get_or_set(&key("x"), loader("loaded")).await.unwrap();
        }),
        "invalidate_category" => Box::pin(async move {
            let _ = l1.invalidate_category("user").await.unwrap();
        }),
        "invalidate_matching" => Box::pin(async move {
            let _ = l1.invalidate_matching("user", "*").await.unwrap();
        }),
        "clear" => Box::pin(async move {
            let _ = l1.clear().await.unwrap();
        }),
        other => unreachable!("no TypedL1 operation {other}"),
    }
}

/// A `TypedL1` holding a decoded copy of `k`, over a cache that also holds
/// `j` (not copied yet).
async fn typed_stack(gated: &Arc<Gated>) -> TypedL1 {
    let l1 = TypedL1::new(
        cache_over(gated).build().unwrap(),
        TypedL1Config::default().with_recheck(Duration::from_secs(3600)),
    );
    l1.set(&key("k"), "old-k").await.unwrap();
    l1.cache().set(&key("j"), "old-j").await.unwrap();
    assert_eq!(
        l1.get::<String>(&key("k"))
            .await
            .unwrap()
            .as_deref()
            .map(String::as_str),
        Some("old-k")
    );
    assert_eq!(l1.len(), 1);
    l1
}

/// TypedL1 cancelled at any call: no decoded copy contradicts the cache
/// underneath, and no shard stays marked as written (values read
/// afterwards are kept and served from L1 again).
#[tokio::test]
async fn typed_l1_cancel_at_every_call() {
    for op in TYPED_OPS {
        let cancelled = sweep(async |call, side| {
            let gated = Gated::new();
            let l1 = typed_stack(&gated).await;
            if !cancel_at(&gated.gate, call, side, run_typed(&l1, op)).await {
                return false;
            }
            let at = format!("{op} cancelled at call {call} {side:?}");
            // Wait for a get_or_set load left running (by joining it).
            let _: String = finish(&at, l1.cache().get_or_set(&key("x"), loader("loaded")))
                .await
                .unwrap();
            for id in ["k", "j", "x"] {
                let copy = finish(&at, l1.get::<String>(&key(id))).await.unwrap();
                let truth = finish(&at, l1.cache().get::<String>(&key(id)))
                    .await
                    .unwrap();
                assert_eq!(copy.as_deref(), truth.as_ref(), "{at}: {id}");
            }
            for id in ["k", "j", "x"] {
                finish(&at, l1.set(&key(id), "fresh")).await.unwrap();
                let read = finish(&at, l1.get::<String>(&key(id))).await.unwrap();
                assert_eq!(read.as_deref().map(String::as_str), Some("fresh"), "{at}");
                let hits = l1.l1_hits();
                let again = finish(&at, l1.get::<String>(&key(id))).await.unwrap();
                assert_eq!(again, read, "{at}");
                assert_eq!(l1.l1_hits(), hits + 1, "{at}: {id} was not kept");
            }
            true
        })
        .await;
        assert!(cancelled > 0, "{op}: never cancelled");
    }
}

// --------------------------------------------------------- RateLimiter

/// The sum of every rate-limit counter stored in `gated`.
async fn counted(gated: &Gated) -> u64 {
    let keys = gated.inner.scan("cache:#rl:*").await.unwrap();
    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    let values = gated.inner.get_many(&refs).await.unwrap();
    values
        .iter()
        .flatten()
        .map(|v| std::str::from_utf8(v).unwrap().parse::<u64>().unwrap())
        .sum()
}

/// RateLimiter holds nothing across awaits but the counters in the
/// backend. A check cancelled at any call (the first, allowed, or the
/// third, over the limit of 2) counts at most itself: a denied check
/// cancelled before taking its count back leaves one, never more. It
/// decides nothing in the stats, and the next check is answered normally
/// (allowed only if there is room; a denied one not counted).
#[tokio::test]
async fn rate_limiter_cancel_counts_at_most_the_cancelled_check() {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    for nth in [1, 3] {
        let cancelled = sweep(async |call, side| {
            let gated = Gated::new();
            let limiter = RateLimiter::builder(Arc::clone(&gated) as Arc<dyn CacheBackend>)
                .rule("api", Rule::per_minute(2))
                .clock(move || now)
                .build()
                .unwrap();
            for _ in 1..nth {
                assert!(limiter.check("api", "ada").await.unwrap().allowed);
            }
            let before = counted(&gated).await;
            if !cancel_at(&gated.gate, call, side, limiter.check("api", "ada")).await {
                return false;
            }
            let at = format!("check {nth} cancelled at call {call} {side:?}");
            let used = counted(&gated).await;
            assert!(
                used == before || used == before + 1,
                "{at}: {before} -> {used}"
            );
            let stats = limiter.stats();
            assert_eq!(stats.allowed + stats.denied, nth - 1, "{at}");
            assert_eq!(stats.backend_errors, 0, "{at}");

            let decision = finish(&at, limiter.check("api", "ada")).await.unwrap();
            assert_eq!(decision.allowed, used < 2, "{at}");
            assert!(!decision.degraded, "{at}");
            let expected = if decision.allowed { used + 1 } else { used };
            assert_eq!(counted(&gated).await, expected, "{at}");
            let stats = limiter.stats();
            assert_eq!(stats.allowed + stats.denied, nth, "{at}");
            true
        })
        .await;
        assert!(cancelled > 0, "check {nth}: never cancelled");
    }
}
