//! Distributed single flight with the in-process lock (`LocalFlightLock`):
//! two `Cache` instances over one backend stand for two processes (each
//! has its own in-process single-flight table). Proves that the waiting
//! instance wakes on the release notification, not on its fallback poll
//! (set to 30 s: a missing notification fails the 5 s bound); that a
//! failed load hands the lease on; that a call can opt out; that a lock
//! still connecting (`DeferredFlightLock`) lets loads run here, counted,
//! then protects them once connected; and prints the wake latency
//! (leader's store → waiter's return), p50 and p99.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cache_core::{
    Cache, CacheBackend, CacheKey, DeferredFlightLock, DistributedFlight, Error, ErrorKind,
    FlightLock, GetOrSetOptions, LocalFlightLock,
};
use cache_memory::MemoryBackend;
use tokio::sync::oneshot;

/// Long enough that a waiter woken by its poll fails the test.
const POLL: Duration = Duration::from_secs(30);
/// Long enough that a waiter woken by the lease's end fails the test.
const LEASE: Duration = Duration::from_secs(60);
/// A generous bound for "promptly" (correctness, not speed).
const PROMPTLY: Duration = Duration::from_secs(5);

fn instance<L: FlightLock>(backend: &Arc<MemoryBackend>, lock: &Arc<L>) -> Cache {
    Cache::builder(Arc::clone(backend) as Arc<dyn CacheBackend>)
        .prefix("stampede")
        .distributed_single_flight(
            Arc::clone(lock) as Arc<dyn FlightLock>,
            DistributedFlight::default()
                .with_lease(LEASE)
                .with_fallback_poll(POLL),
        )
        .build()
        .unwrap()
}

/// One round: `leader` loads `key` with a loader held until released;
/// `waiter` asks meanwhile. Returns the time from the leader's loader
/// returning to the waiter's return, and the waiter's value.
async fn round(leader: &Cache, waiter: &Cache, key: &CacheKey, value: u64) -> (Duration, u64) {
    let (started_tx, started_rx) = oneshot::channel();
    let (go_tx, go_rx) = oneshot::channel::<()>();
    let (returned_tx, returned_rx) = oneshot::channel();
    let lead = {
        let (leader, key) = (leader.clone(), key.clone());
        tokio::spawn(async move {
            leader
                .get_or_set(&key, move || async move {
                    let _ = started_tx.send(());
                    let _ = go_rx.await;
                    let _ = returned_tx.send(Instant::now());
                    Ok::<_, std::io::Error>(value)
                })
                .await
                .unwrap()
        })
    };
    // The leader holds the lease once its loader runs.
    started_rx.await.unwrap();
    let wait = {
        let (waiter, key) = (waiter.clone(), key.clone());
        tokio::spawn(async move {
            let value = waiter
                .get_or_set(&key, || async {
                    Ok::<_, std::io::Error>(u64::MAX) // never runs
                })
                .await
                .unwrap();
            (value, Instant::now())
        })
    };
    // Let the waiter reach its wait on the lease.
    tokio::time::sleep(Duration::from_millis(10)).await;
    go_tx.send(()).unwrap();
    let (got, waiter_returned) = tokio::time::timeout(PROMPTLY, wait)
        .await
        .expect("the waiter was not woken by the release")
        .unwrap();
    assert_eq!(lead.await.unwrap(), value);
    let loader_returned = returned_rx.await.unwrap();
    (waiter_returned.duration_since(loader_returned), got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stampede_waiter_is_woken_by_the_release_not_the_poll() {
    let backend = Arc::new(MemoryBackend::new());
    let lock = Arc::new(LocalFlightLock::new());
    let (a, b) = (instance(&backend, &lock), instance(&backend, &lock));
    let key = CacheKey::new("report", 1).unwrap();
    let (_, got) = round(&a, &b, &key, 7).await;
    assert_eq!(got, 7);
    assert_eq!(a.stats().loader_calls, 1);
    assert_eq!(b.stats().loader_calls, 0);
    assert_eq!(b.stats().lease_waits, 1);
    assert_eq!(b.stats().lease_fallbacks, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stampede_failed_load_hands_the_lease_on() {
    let backend = Arc::new(MemoryBackend::new());
    let lock = Arc::new(LocalFlightLock::new());
    let (a, b) = (instance(&backend, &lock), instance(&backend, &lock));
    let key = CacheKey::new("report", 2).unwrap();
    let (started_tx, started_rx) = oneshot::channel();
    let (go_tx, go_rx) = oneshot::channel::<()>();
    let failing = {
        let (a, key) = (a.clone(), key.clone());
        tokio::spawn(async move {
            a.get_or_set(&key, move || async move {
                let _ = started_tx.send(());
                let _ = go_rx.await;
                Err::<u64, _>(std::io::Error::other("upstream down"))
            })
            .await
        })
    };
    started_rx.await.unwrap();
    let waiting = {
        let (b, key) = (b.clone(), key.clone());
        tokio::spawn(async move {
            b.get_or_set(&key, || async { Ok::<_, std::io::Error>(8u64) })
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(10)).await;
    go_tx.send(()).unwrap();
    assert!(failing.await.unwrap().is_err());
    let got = tokio::time::timeout(PROMPTLY, waiting)
        .await
        .expect("the waiter did not take the lease over")
        .unwrap()
        .unwrap();
    assert_eq!(got, 8);
    assert_eq!(a.stats().loader_calls, 1);
    assert_eq!(b.stats().loader_calls, 1);
    assert_eq!(b.stats().lease_waits, 0);
    assert_eq!(a.get::<u64>(&key).await.unwrap(), Some(8));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stampede_a_call_can_opt_out() {
    let backend = Arc::new(MemoryBackend::new());
    let lock = Arc::new(LocalFlightLock::new());
    let (a, b) = (instance(&backend, &lock), instance(&backend, &lock));
    let key = CacheKey::new("report", 3).unwrap();
    let (started_tx, started_rx) = oneshot::channel();
    let (go_tx, go_rx) = oneshot::channel::<()>();
    let lead = {
        let (a, key) = (a.clone(), key.clone());
        tokio::spawn(async move {
            a.get_or_set(&key, move || async move {
                let _ = started_tx.send(());
                let _ = go_rx.await;
                Ok::<_, std::io::Error>(1u64)
            })
            .await
        })
    };
    started_rx.await.unwrap();
    // Without the lease, b does not wait for a: it loads by itself.
    let opts = GetOrSetOptions::default().with_distributed(false);
    let got = tokio::time::timeout(
        PROMPTLY,
        b.get_or_set_opts(&key, opts, || async { Ok::<_, std::io::Error>(2u64) }),
    )
    .await
    .expect("an opted-out call waited on the lease")
    .unwrap();
    assert_eq!(got, 2);
    go_tx.send(()).unwrap();
    lead.await.unwrap().unwrap();
    assert_eq!(a.stats().loader_calls + b.stats().loader_calls, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stampede_wake_latency_local() {
    let backend = Arc::new(MemoryBackend::new());
    let lock = Arc::new(LocalFlightLock::new());
    let (a, b) = (instance(&backend, &lock), instance(&backend, &lock));
    let mut samples = Vec::new();
    for i in 0..200u64 {
        let key = CacheKey::new("latency", i).unwrap();
        let (took, got) = round(&a, &b, &key, i).await;
        assert_eq!(got, i);
        samples.push(took);
    }
    samples.sort();
    println!(
        "wake latency, LocalFlightLock ({} rounds, {} woken by a release): p50 {:?}, p99 {:?}, max {:?}",
        samples.len(),
        b.stats().lease_waits,
        samples[samples.len() / 2],
        samples[samples.len() * 99 / 100],
        samples[samples.len() - 1],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stampede_a_lock_still_connecting_lets_loads_run_here() {
    let up = Arc::new(AtomicBool::new(false));
    let shared = Arc::new(LocalFlightLock::new());
    let lock = {
        let (up, shared) = (Arc::clone(&up), Arc::clone(&shared));
        Arc::new(DeferredFlightLock::spawn(move || {
            let (up, shared) = (up.load(Ordering::SeqCst), Arc::clone(&shared));
            async move {
                if up {
                    Ok(shared as Arc<dyn FlightLock>)
                } else {
                    Err(Error::new(ErrorKind::Connection, "down"))
                }
            }
        }))
    };
    let backend = Arc::new(MemoryBackend::new());
    let (a, b) = (instance(&backend, &lock), instance(&backend, &lock));
    let key = CacheKey::new("report", 4).unwrap();
    let got = tokio::time::timeout(
        PROMPTLY,
        a.get_or_set(&key, || async { Ok::<_, std::io::Error>(4u64) }),
    )
    .await
    .expect("a load waited on a lock that is not connected")
    .unwrap();
    assert_eq!(got, 4);
    assert_eq!((a.stats().loader_calls, a.stats().lease_fallbacks), (1, 1));

    up.store(true, Ordering::SeqCst);
    tokio::time::timeout(PROMPTLY, lock.connected())
        .await
        .expect("the lock never connected");
    let key = CacheKey::new("report", 5).unwrap();
    let (_, got) = round(&a, &b, &key, 5).await;
    assert_eq!(got, 5);
    assert_eq!(b.stats().loader_calls, 0);
    assert_eq!(b.stats().lease_waits, 1);
    assert_eq!(a.stats().lease_fallbacks + b.stats().lease_fallbacks, 1);
}
