//! `FailOpen` and `Timeout` behaviour with a failing backend.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use cache_core::layers::{BreakerConfig, BreakerState, FailOpen, Tiered, TieredConfig, Timeout};
use cache_core::{Cache, CacheBackend, CacheKey, ErrorKind, HealthStatus, SetOptions};
use cache_memory::MemoryBackend;
use cache_testkit::{FaultConfig, FaultInjecting};

fn failing() -> FaultInjecting<MemoryBackend> {
    FaultInjecting::new(MemoryBackend::new(), FaultConfig::none().with_fail_every(1))
}

#[tokio::test]
async fn fail_open_turns_failures_into_misses_and_skipped_writes() {
    let backend = FailOpen::new(
        failing(),
        BreakerConfig::default().with_failure_threshold(100),
    );
    assert_eq!(backend.get("k").await.unwrap(), None);
    assert!(!backend
        .set("k", Bytes::from_static(b"v"), SetOptions::default())
        .await
        .unwrap());
    assert!(!backend.exists("k").await.unwrap());
    assert_eq!(
        backend.get_many(&["a", "b"]).await.unwrap(),
        vec![None, None]
    );
    assert_eq!(backend.delete_matching("x*").await.unwrap(), 0);
    let stats = backend.stats();
    assert_eq!((stats.failed_reads, stats.skipped_writes), (3, 2));
    // incr cannot invent a count: its error is returned.
    assert_eq!(
        backend.incr("n", 1, None).await.unwrap_err().kind(),
        ErrorKind::Connection
    );
}

#[tokio::test]
async fn caller_errors_are_not_swallowed() {
    let backend = FailOpen::new(MemoryBackend::new(), BreakerConfig::default());
    let err = backend.get("").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidKey);
    backend
        .set("n", Bytes::from_static(b"x"), SetOptions::default())
        .await
        .unwrap();
    let err = backend.incr("n", 1, None).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidValue);
    assert_eq!(backend.stats().state, BreakerState::Closed);
}

#[tokio::test]
async fn breaker_opens_and_calls_skip_the_backend() {
    let faults = Arc::new(failing());
    let backend = FailOpen::new(
        Arc::clone(&faults),
        BreakerConfig::default()
            .with_failure_threshold(3)
            .with_cool_down(Duration::from_secs(3600)),
    );
    for _ in 0..20 {
        assert_eq!(backend.get("k").await.unwrap(), None);
    }
    assert_eq!(
        faults.injected(),
        3,
        "an open breaker must not call the backend"
    );
    let stats = backend.stats();
    assert_eq!(stats.state, BreakerState::Open);
    assert_eq!((stats.breaker_opened, stats.failed_reads), (1, 20));
}

#[tokio::test]
async fn a_caller_probe_that_fails_opens_the_breaker_again() {
    let faults = Arc::new(failing());
    let backend = FailOpen::new(
        Arc::clone(&faults),
        BreakerConfig::default()
            .with_failure_threshold(1)
            .with_cool_down(Duration::ZERO),
    );
    assert_eq!(backend.get("k").await.unwrap(), None);
    assert_eq!(backend.get("k").await.unwrap(), None, "the probe fails");
    let stats = backend.stats();
    assert_eq!(stats.state, BreakerState::Open);
    assert_eq!(stats.breaker_opened, 2);
}

/// The breaker closes by itself within about one cool-down of the
/// backend's return: no caller has to come and probe.
#[tokio::test]
async fn the_breaker_closes_after_recovery_without_any_caller() {
    let faults = Arc::new(failing());
    let backend = FailOpen::new(
        Arc::clone(&faults),
        BreakerConfig::default()
            .with_failure_threshold(1)
            .with_cool_down(Duration::from_millis(200)),
    );
    assert_eq!(backend.get("k").await.unwrap(), None);
    assert_eq!(backend.stats().state, BreakerState::Open);
    faults.set_config(FaultConfig::none());
    let took = until_closed(&backend).await;
    eprintln!("closed {took:?} after the backend came back");
    let stats = backend.stats();
    assert_eq!((stats.breaker_opened, stats.breaker_closed), (1, 1));
    assert_eq!(stats.failed_reads, 1, "no caller call was made meanwhile");
    backend
        .set("k", Bytes::from_static(b"v"), SetOptions::default())
        .await
        .unwrap();
    assert_eq!(backend.get("k").await.unwrap().as_deref(), Some(&b"v"[..]));
}

#[tokio::test]
async fn a_cache_over_a_dead_backend_serves_from_the_loader() {
    let cache = Cache::new(Arc::new(FailOpen::new(failing(), BreakerConfig::default())));
    let key = CacheKey::new("user", 1).unwrap();
    for _ in 0..10 {
        let v: u32 = cache
            .get_or_set(&key, || async { Ok::<_, std::io::Error>(7) })
            .await
            .unwrap();
        assert_eq!(v, 7);
    }
    assert_eq!(cache.stats().errors, 0);
    assert_eq!(cache.stats().loader_calls, 10);
}

#[tokio::test]
async fn timeout_bounds_a_slow_backend() {
    let slow = FaultInjecting::new(
        MemoryBackend::new(),
        FaultConfig::none().with_latency(Duration::from_secs(30)),
    );
    let backend = Timeout::new(slow, Duration::from_millis(50));
    let started = std::time::Instant::now();
    let err = backend.get("k").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout);
    assert!(err.is_retryable());
    assert!(started.elapsed() < Duration::from_secs(5));
    // Fail-open over the timeout: a miss, promptly.
    let backend = FailOpen::new(backend, BreakerConfig::default());
    assert_eq!(backend.get("k").await.unwrap(), None);
}

/// A fail-open layer (threshold 1, cool-down 100 ms) over a memory backend
/// holding `keys`, behind a fault injector that does not fail yet.
async fn holding(
    keys: &[&str],
) -> (
    Arc<FaultInjecting<MemoryBackend>>,
    FailOpen<Arc<FaultInjecting<MemoryBackend>>>,
) {
    let faults = Arc::new(FaultInjecting::new(
        MemoryBackend::new(),
        FaultConfig::none(),
    ));
    for key in keys {
        faults
            .inner()
            .set(key, Bytes::from_static(b"v1"), SetOptions::default())
            .await
            .unwrap();
    }
    let backend = FailOpen::new(
        Arc::clone(&faults),
        BreakerConfig::default()
            .with_failure_threshold(1)
            .with_cool_down(Duration::from_millis(100)),
    );
    (faults, backend)
}

/// Waits until the breaker of `backend` is closed (at most 10 s); returns
/// how long it took.
async fn until_closed<B: CacheBackend>(backend: &FailOpen<B>) -> Duration {
    let back = std::time::Instant::now();
    while backend.stats().state != BreakerState::Closed {
        assert!(back.elapsed() < Duration::from_secs(10), "never closed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    back.elapsed()
}

/// Polls `future` once, as a caller that then gives up (drops it) would.
fn poll_once<F: Future>(future: F) -> Poll<F::Output> {
    pin!(future).poll(&mut Context::from_waker(Waker::noop()))
}

#[tokio::test]
async fn a_cancelled_probe_does_not_wedge_the_breaker_cancel() {
    let faults = Arc::new(failing());
    let backend = FailOpen::new(
        Arc::clone(&faults),
        BreakerConfig::default()
            .with_failure_threshold(1)
            .with_cool_down(Duration::ZERO),
    );
    assert_eq!(backend.get("k").await.unwrap(), None);
    assert_eq!(backend.stats().state, BreakerState::Open);

    // The cool-down is over: the next call is the probe. The backend hangs
    // and the probe's caller gives up, dropping its future mid-call.
    faults.set_config(FaultConfig::none().with_latency(Duration::from_secs(3600)));
    assert!(poll_once(backend.get("k")).is_pending());

    // The breaker is open again (not half-open for ever, skipping every
    // call), and health says so.
    let stats = backend.stats();
    assert_eq!(stats.state, BreakerState::Open);
    assert_eq!(stats.abandoned_probes, 1);
    assert_eq!(
        stats.breaker_opened, 1,
        "a cancelled probe is not a failure"
    );
    let health = backend.health().await.unwrap();
    assert_eq!(health.status, HealthStatus::Unhealthy);
    assert_eq!(health.details["breaker"], "open");

    // The backend recovers: the next call probes it and closes the breaker.
    faults.set_config(FaultConfig::none());
    assert!(backend
        .set("k", Bytes::from_static(b"v"), SetOptions::default())
        .await
        .unwrap());
    assert_eq!(backend.stats().state, BreakerState::Closed);
    assert_eq!(backend.get("k").await.unwrap().as_deref(), Some(&b"v"[..]));
    assert_eq!(
        backend.health().await.unwrap().status,
        HealthStatus::Healthy
    );
}

/// Invalidations that could not reach the backend are remembered and
/// replayed once it answers again, before the breaker lets reads through;
/// a skipped plain write invalidates its key (the old value is outdated).
#[tokio::test]
async fn lost_invalidations_are_replayed_on_recovery_auto_recovery() {
    let (faults, backend) =
        holding(&["k1", "k2", "k3", "p:1", "p:2", "ns:a", "ns:b", "other"]).await;
    let memory = faults.inner();
    faults.set_config(FaultConfig::none().with_fail_every(1));
    assert!(!backend.delete("k1").await.unwrap());
    assert_eq!(backend.delete_matching("p:*").await.unwrap(), 0);
    assert_eq!(backend.clear("ns:").await.unwrap(), 0);
    assert!(!backend
        .set("k2", Bytes::from_static(b"v2"), SetOptions::default())
        .await
        .unwrap());
    // An IfAbsent write leaves nothing outdated behind: not remembered.
    let nx = SetOptions::default().with_mode(cache_core::SetMode::IfAbsent);
    assert!(!backend
        .set("k3", Bytes::from_static(b"v2"), nx)
        .await
        .unwrap());
    let stats = backend.stats();
    assert_eq!(stats.pending_invalidations, 4);
    assert_eq!(stats.state, BreakerState::Open);
    assert_eq!(
        backend.health().await.unwrap().details["pending_invalidations"],
        "4"
    );

    faults.set_config(FaultConfig::none());
    until_closed(&backend).await;
    let mut left = memory.scan("*").await.unwrap();
    left.sort();
    assert_eq!(left, ["k3", "other"]);
    let stats = backend.stats();
    assert_eq!(
        (stats.pending_invalidations, stats.replayed_invalidations),
        (0, 4)
    );
}

/// Past the bound, a lost key's invalidation becomes a clear of its
/// namespace (its prefix up to the first `:`), counted.
#[tokio::test]
async fn past_the_bound_lost_invalidations_clear_their_namespace_auto_recovery() {
    use cache_core::layers::MAX_PENDING_KEYS;
    let (faults, backend) = holding(&["app:kept-until-recovery", "zzz:other"]).await;
    let memory = faults.inner();
    faults.set_config(FaultConfig::none().with_fail_every(1));
    let keys: Vec<String> = (0..MAX_PENDING_KEYS + 5)
        .map(|i| format!("app:user:{i}"))
        .collect();
    for chunk in keys.chunks(1000) {
        let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
        backend.delete_many(&refs).await.unwrap();
    }
    let stats = backend.stats();
    assert_eq!(stats.coarsened_invalidations, 5);
    assert_eq!(stats.pending_invalidations, MAX_PENDING_KEYS as u64 + 1);

    faults.set_config(FaultConfig::none());
    until_closed(&backend).await;
    assert_eq!(memory.scan("*").await.unwrap(), ["zzz:other"]);
}

/// Under steady traffic a caller probes at nearly every moment; with lost
/// invalidations waiting, a caller's success cannot close the breaker, so
/// the recovery task must replay them even while a caller's probe is out.
/// (It once waited for a quiet moment that never came, and the breaker
/// stayed open for good.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_replays_under_steady_traffic_auto_recovery() {
    let faults = Arc::new(FaultInjecting::new(
        MemoryBackend::new(),
        FaultConfig::none(),
    ));
    let backend = Arc::new(FailOpen::new(
        Arc::clone(&faults),
        BreakerConfig::default()
            .with_failure_threshold(1)
            .with_cool_down(Duration::from_millis(100)),
    ));
    faults.set_config(FaultConfig::none().with_fail_every(1));
    backend.delete("k").await.unwrap();
    assert_eq!(backend.stats().pending_invalidations, 1);
    faults.set_config(FaultConfig::none().with_latency(Duration::from_millis(20)));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let callers: Vec<_> = (0..8)
        .map(|_| {
            let (backend, stop) = (Arc::clone(&backend), Arc::clone(&stop));
            tokio::spawn(async move {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    backend.get("x").await.unwrap();
                    // A skipped call does not wait: let the others run.
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    let back = std::time::Instant::now();
    while backend.stats().state != BreakerState::Closed && back.elapsed() < Duration::from_secs(10)
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for caller in callers {
        caller.await.unwrap();
    }
    let stats = backend.stats();
    assert_eq!(stats.state, BreakerState::Closed, "{stats:?}");
    assert_eq!(
        (stats.pending_invalidations, stats.replayed_invalidations),
        (0, 1)
    );
}

/// A delete lost while the breaker stays closed (one failure, under the
/// threshold) leaves the old value in the backend until it is replayed:
/// reads of that key are misses until then, never the old value; other
/// keys are read as usual; after the replay the key is gone for real.
#[tokio::test]
async fn a_read_never_returns_a_value_whose_invalidation_waits_for_replay() {
    let flaky = Arc::new(FaultInjecting::new(
        MemoryBackend::new(),
        FaultConfig::none(),
    ));
    let backend = FailOpen::new(
        Arc::clone(&flaky),
        BreakerConfig::default()
            .with_failure_threshold(5)
            .with_cool_down(Duration::from_millis(100)),
    );
    for key in ["list:1", "list:2"] {
        backend
            .set(key, Bytes::from_static(b"old"), SetOptions::default())
            .await
            .unwrap();
    }
    flaky.set_config(FaultConfig::none().with_fail_every(1));
    assert!(!backend.delete("list:1").await.unwrap(), "skipped");
    flaky.set_config(FaultConfig::none());
    assert_eq!(backend.stats().state, BreakerState::Closed);
    assert_eq!(backend.stats().pending_invalidations, 1);
    // The backend still holds it; the read does not reach it.
    assert_eq!(
        flaky.inner().get("list:1").await.unwrap().as_deref(),
        Some(&b"old"[..])
    );
    assert_eq!(backend.get("list:1").await.unwrap(), None);
    assert_eq!(
        backend.get_many(&["list:2", "list:1"]).await.unwrap(),
        vec![None, None]
    );
    assert!(!backend.exists("list:1").await.unwrap());
    assert_eq!(
        backend.get("list:2").await.unwrap().as_deref(),
        Some(&b"old"[..])
    );
    // The recovery task replays the delete.
    let started = std::time::Instant::now();
    while backend.stats().pending_invalidations > 0 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "never replayed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(flaky.inner().get("list:1").await.unwrap(), None);
    assert_eq!(backend.stats().replayed_invalidations, 1);
}

/// While L2 hangs, every write lasts the whole deadline and dozens are in
/// flight at once. Each one a fail-open L2 skips keeps its L1 copy, the
/// only copy there is (what a fail-safe cache serves when its loader fails
/// too): writes of other keys overlapping it, which share the stripes of
/// the tier's write tracking, do not drop it. (They did: the rates bot's
/// paused-Redis test lost a currency's rates for a whole upstream outage.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_skipped_while_l2_hangs_keep_their_l1_copies() {
    let hung = FaultInjecting::new(
        MemoryBackend::new(),
        FaultConfig::none().with_latency(Duration::from_secs(30)),
    );
    // The breaker stays closed: every call waits for the deadline, as
    // before a breaker opens.
    let l2 = FailOpen::new(
        Timeout::new(hung, Duration::from_millis(100)),
        BreakerConfig::default().with_failure_threshold(1_000),
    );
    let l1 = Arc::new(MemoryBackend::new());
    let tiered = Arc::new(Tiered::new(
        l1.clone(),
        Arc::new(l2),
        TieredConfig::default(),
    ));
    let keys: Vec<String> = (0..64).map(|i| format!("app:rates:{i}")).collect();
    let mut writes = tokio::task::JoinSet::new();
    for key in keys.clone() {
        let tiered = Arc::clone(&tiered);
        writes.spawn(async move {
            let opts = SetOptions::ttl(Some(Duration::from_secs(60)));
            tiered.set(&key, Bytes::from(key.clone()), opts).await
        });
    }
    while let Some(written) = writes.join_next().await {
        assert!(!written.unwrap().unwrap(), "L2 skipped the write");
    }
    let mut dropped = Vec::new();
    for key in &keys {
        if l1.get(key).await.unwrap().is_none() {
            dropped.push(key.as_str());
        }
    }
    assert!(dropped.is_empty(), "L1 copies dropped: {dropped:?}");
}

/// The memory backend, whose reads answer now (`get_now`, in two parts
/// too) and never fail, with every awaited call failing while `failing` is
/// set: so a test can lose an invalidation, or open the breaker, and still
/// see whether `FailOpen` forwards a read answered now.
#[derive(Default)]
struct FailingAwaited {
    inner: MemoryBackend,
    failing: std::sync::atomic::AtomicBool,
    /// A lent read (`read_now_joined`) lends the value, then fails.
    lends_then_fails: std::sync::atomic::AtomicBool,
}

impl FailingAwaited {
    fn check(&self) -> cache_core::Result<()> {
        if self.failing.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(cache_core::Error::new(ErrorKind::Connection, "down"));
        }
        Ok(())
    }

    fn fail(&self, failing: bool) {
        self.failing
            .store(failing, std::sync::atomic::Ordering::Relaxed);
    }
}

#[async_trait::async_trait]
impl CacheBackend for FailingAwaited {
    fn name(&self) -> &'static str {
        "failing-awaited"
    }
    fn capabilities(&self) -> cache_core::Capabilities {
        self.inner.capabilities()
    }
    async fn get(&self, key: &str) -> cache_core::Result<Option<Bytes>> {
        self.check()?;
        self.inner.get(key).await
    }
    fn get_now(&self, key: &str) -> Option<cache_core::Result<Option<Bytes>>> {
        self.inner.get_now(key)
    }
    fn get_now_joined(&self, head: &str, tail: &str) -> Option<cache_core::Result<Option<Bytes>>> {
        self.inner.get_now_joined(head, tail)
    }
    fn read_now_joined(
        &self,
        head: &str,
        tail: &str,
        read: &mut dyn FnMut(&Bytes),
    ) -> Option<cache_core::Result<bool>> {
        let found = self.inner.read_now_joined(head, tail, read)?;
        if self
            .lends_then_fails
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            return Some(Err(cache_core::Error::new(ErrorKind::Connection, "down")));
        }
        Some(found)
    }
    async fn set(&self, key: &str, value: Bytes, opts: SetOptions) -> cache_core::Result<bool> {
        self.check()?;
        self.inner.set(key, value, opts).await
    }
    async fn delete(&self, key: &str) -> cache_core::Result<bool> {
        self.check()?;
        self.inner.delete(key).await
    }
    async fn exists(&self, key: &str) -> cache_core::Result<bool> {
        self.check()?;
        self.inner.exists(key).await
    }
    async fn ttl(&self, key: &str) -> cache_core::Result<cache_core::KeyTtl> {
        self.check()?;
        self.inner.ttl(key).await
    }
    async fn expire(&self, key: &str, ttl: Option<Duration>) -> cache_core::Result<bool> {
        self.check()?;
        self.inner.expire(key, ttl).await
    }
    async fn incr(&self, key: &str, delta: i64, ttl: Option<Duration>) -> cache_core::Result<i64> {
        self.check()?;
        self.inner.incr(key, delta, ttl).await
    }
    async fn health(&self) -> cache_core::Result<cache_core::Health> {
        self.check()?;
        self.inner.health().await
    }
}

/// A read in two parts (`get_now_joined`, how `Cache` reads a key) is
/// forwarded while the breaker is closed and no lost invalidation waits;
/// while one waits it is left to the caller (whose `get_now` of the joined
/// key checks the key against it), and while the breaker is open too.
#[tokio::test]
async fn a_read_in_two_parts_is_answered_now_only_while_closed_with_nothing_to_replay() {
    let old = Bytes::from_static(b"old");
    let flaky = Arc::new(FailingAwaited::default());
    let backend = FailOpen::new(
        Arc::clone(&flaky),
        BreakerConfig::default()
            .with_failure_threshold(100)
            .with_cool_down(Duration::from_secs(60)),
    );
    for key in ["list:1", "list:2"] {
        backend
            .set(key, old.clone(), SetOptions::default())
            .await
            .unwrap();
    }
    let read = |tail| backend.get_now_joined("list:", tail).map(Result::unwrap);
    assert_eq!(read("1"), Some(Some(old.clone())));
    assert_eq!(read("3"), Some(None));

    // A delete of list:1 lost; it stays lost while awaited calls fail (its
    // replay too), the breaker closed.
    flaky.fail(true);
    assert!(!backend.delete("list:1").await.unwrap(), "skipped");
    let stats = backend.stats();
    assert_eq!(
        (stats.state, stats.pending_invalidations),
        (BreakerState::Closed, 1)
    );
    assert_eq!(read("1"), None, "left to the caller");
    assert!(backend.get_now("list:1").is_none(), "stale: left to `get`");
    // Any key: its parts are not checked against the lost keys.
    assert_eq!(read("2"), None);
    assert_eq!(
        backend.get_now("list:2").map(Result::unwrap),
        Some(Some(old.clone()))
    );

    // The breaker open (a failed read, threshold 1), nothing lost.
    let flaky = Arc::new(FailingAwaited::default());
    let backend = FailOpen::new(
        Arc::clone(&flaky),
        BreakerConfig::default()
            .with_failure_threshold(1)
            .with_cool_down(Duration::from_secs(60)),
    );
    backend
        .set("list:1", old.clone(), SetOptions::default())
        .await
        .unwrap();
    flaky.fail(true);
    assert_eq!(backend.get("list:1").await.unwrap(), None);
    flaky.fail(false);
    let stats = backend.stats();
    assert_eq!(
        (stats.state, stats.pending_invalidations),
        (BreakerState::Open, 0)
    );
    assert!(backend.get_now_joined("list:", "1").is_none(), "skipped");
}

/// A lent read that fails after lending its value is a miss through
/// `FailOpen` (a failure turned into a miss): `Cache::get` serves what the
/// layer answers, not the value it was lent, and counts a miss.
#[tokio::test]
async fn a_lent_value_whose_read_then_failed_is_not_served() {
    let flaky = Arc::new(FailingAwaited::default());
    let cache = Cache::new(Arc::new(FailOpen::new(
        Arc::clone(&flaky),
        BreakerConfig::default().with_failure_threshold(100),
    )));
    let key = CacheKey::new("user", 1).unwrap();
    cache.set(&key, "Ada").await.unwrap();
    assert_eq!(
        cache.get::<String>(&key).await.unwrap().as_deref(),
        Some("Ada")
    );
    flaky
        .lends_then_fails
        .store(true, std::sync::atomic::Ordering::Relaxed);
    assert_eq!(cache.get::<String>(&key).await.unwrap(), None);
    let stats = cache.stats();
    assert_eq!((stats.hits, stats.misses), (1, 1));
}

/// Failures open the breaker only in a row: a success between two resets
/// the count (the healthy path, which takes no lock, must not skip that).
#[tokio::test]
async fn a_success_between_failures_resets_their_count() {
    let flaky = Arc::new(FailingAwaited::default());
    let backend = FailOpen::new(
        Arc::clone(&flaky),
        BreakerConfig::default()
            .with_failure_threshold(2)
            .with_cool_down(Duration::from_secs(60)),
    );
    let failed_read = || async {
        flaky.fail(true);
        assert_eq!(backend.get("k").await.unwrap(), None);
        flaky.fail(false);
    };
    failed_read().await;
    assert_eq!(backend.get("k").await.unwrap(), None, "a success");
    failed_read().await;
    let stats = backend.stats();
    assert_eq!(
        (stats.state, stats.breaker_opened, stats.failed_reads),
        (BreakerState::Closed, 0, 2)
    );
    // Two in a row open it.
    failed_read().await;
    let stats = backend.stats();
    assert_eq!(
        (stats.state, stats.breaker_opened, stats.failed_reads),
        (BreakerState::Open, 1, 3)
    );
}
