//! Adaptive caching: `get_or_set_adaptive`, whose loader decides per value
//! how long it is cached (`Loaded::with_ttl`) or whether it is cached at
//! all (`Loaded::dont_cache`), sharing `get_or_set`'s single flight.
//!
//! It proves that the loader's TTL is the stored TTL to the millisecond
//! (memory backend on a mock clock: the value is there 1 ms before the TTL
//! and gone at it), that a value not to be cached is returned but not
//! stored (the next call loads again), that every caller waiting on one
//! flight gets the value (cached or not) from one loader run, and that
//! fail-safe still serves the stale value when the adaptive loader fails.
//! It fails if `load` ignores the loader's TTL or its `store` flag, or if a
//! don't-cache answer is not sent to the waiters.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cache_core::{Cache, CacheBackend, CacheKey, CategoryTtl, FailSafe, KeyTtl, Loaded, Ttl};
use cache_memory::{MemoryBackend, MemoryConfig, MockClock};

/// What a page fetch answers: a body or a "not found".
type Page = Result<String, u16>;

fn key(id: u32) -> CacheKey {
    CacheKey::new("page", id).unwrap()
}

/// A cache over a memory backend whose time moves only when told to.
fn mock_cache() -> (Cache, MockClock) {
    let clock = MockClock::new();
    let backend = MemoryBackend::with_clock(MemoryConfig::default(), Arc::new(clock.clone()));
    let cache = Cache::builder(Arc::new(backend) as Arc<dyn CacheBackend>)
        .ttl_policy(CategoryTtl::new(Some(Duration::from_secs(60))))
        .build()
        .unwrap();
    (cache, clock)
}

/// Fetches page `id` (only page 1 exists), counting calls: a found page is
/// cached 10 minutes, a 404 for 30 s.
async fn fetch(cache: &Cache, id: u32, calls: &Arc<AtomicUsize>) -> Page {
    let calls = Arc::clone(calls);
    cache
        .get_or_set_adaptive(&key(id), move || async move {
            calls.fetch_add(1, Ordering::SeqCst);
            let page: Page = if id == 1 { Ok("home".into()) } else { Err(404) };
            let ttl = if page.is_ok() {
                Ttl::secs(600)
            } else {
                Ttl::secs(30)
            };
            Ok::<_, std::io::Error>(Loaded::new(page).with_ttl(ttl))
        })
        .await
        .unwrap()
}

#[tokio::test]
async fn adaptive_per_value_ttl_is_the_stored_ttl() {
    let (cache, clock) = mock_cache();
    let calls = Arc::new(AtomicUsize::new(0));
    assert_eq!(fetch(&cache, 1, &calls).await, Ok("home".to_string()));
    assert_eq!(fetch(&cache, 2, &calls).await, Err(404));
    assert_eq!(
        cache.ttl(&key(1)).await.unwrap(),
        KeyTtl::Expires(Duration::from_secs(600))
    );
    assert_eq!(
        cache.ttl(&key(2)).await.unwrap(),
        KeyTtl::Expires(Duration::from_secs(30))
    );

    // 1 ms before its TTL the 404 is still a hit; at its TTL it is gone.
    clock.advance(Duration::from_millis(29_999));
    assert_eq!(fetch(&cache, 2, &calls).await, Err(404));
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    clock.advance(Duration::from_millis(1));
    assert_eq!(cache.get::<Page>(&key(2)).await.unwrap(), None);
    assert_eq!(fetch(&cache, 2, &calls).await, Err(404));
    assert_eq!(calls.load(Ordering::SeqCst), 3);

    // The found page lives its own 10 minutes, no more.
    assert_eq!(fetch(&cache, 1, &calls).await, Ok("home".to_string()));
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    clock.advance(Duration::from_millis(600_000 - 30_000 - 1));
    assert_eq!(
        cache.get::<Page>(&key(1)).await.unwrap(),
        Some(Ok("home".to_string()))
    );
    clock.advance(Duration::from_millis(1));
    assert_eq!(cache.get::<Page>(&key(1)).await.unwrap(), None);
}

#[tokio::test]
async fn adaptive_without_a_ttl_uses_the_category_ttl() {
    let (cache, _clock) = mock_cache();
    let v: u32 = cache
        .get_or_set_adaptive(&key(1), || async {
            Ok::<_, std::io::Error>(Loaded::new(7))
        })
        .await
        .unwrap();
    assert_eq!(v, 7);
    assert_eq!(
        cache.ttl(&key(1)).await.unwrap(),
        KeyTtl::Expires(Duration::from_secs(60))
    );
}

#[tokio::test]
async fn adaptive_dont_cache_returns_the_value_and_the_next_call_loads_again() {
    let (cache, _clock) = mock_cache();
    for round in 1..=3u32 {
        let v: u32 = cache
            .get_or_set_adaptive(&key(1), move || async move {
                Ok::<_, std::io::Error>(Loaded::new(round).dont_cache())
            })
            .await
            .unwrap();
        assert_eq!(v, round);
        assert_eq!(cache.get::<u32>(&key(1)).await.unwrap(), None);
    }
    let stats = cache.stats();
    assert_eq!((stats.loader_calls, stats.sets), (3, 0));
}

#[tokio::test]
async fn adaptive_zero_ttl_stores_nothing() {
    let (cache, _clock) = mock_cache();
    let v: u32 = cache
        .get_or_set_adaptive(&key(1), || async {
            Ok::<_, std::io::Error>(Loaded::new(5).with_ttl(Ttl::secs(0)))
        })
        .await
        .unwrap();
    assert_eq!(v, 5);
    assert_eq!(cache.ttl(&key(1)).await.unwrap(), KeyTtl::Missing);
}

/// `callers` concurrent calls on one key whose loader answers `answer` once
/// released; returns what each caller got and how often the loader ran.
async fn one_flight(cache: &Cache, callers: usize, answer: Loaded<u32>) -> (Vec<u32>, usize) {
    let calls = Arc::new(AtomicUsize::new(0));
    let release = Arc::new(tokio::sync::Notify::new());
    let mut tasks = Vec::new();
    for _ in 0..callers {
        let (cache, calls, release, answer) = (
            cache.clone(),
            Arc::clone(&calls),
            Arc::clone(&release),
            answer.clone(),
        );
        tasks.push(tokio::spawn(async move {
            cache
                .get_or_set_adaptive(&key(9), move || async move {
                    calls.fetch_add(1, Ordering::SeqCst);
                    release.notified().await;
                    Ok::<_, std::io::Error>(answer)
                })
                .await
                .unwrap()
        }));
    }
    // On this single-threaded runtime a caller joins the flight and counts
    // itself (the leader a miss, the others coalesced) without yielding in
    // between: once every caller is counted, every caller waits on the one
    // flight.
    let counted = |s: cache_core::CacheStats| s.misses + s.coalesced;
    while counted(cache.stats()) < callers as u64 || calls.load(Ordering::SeqCst) == 0 {
        tokio::task::yield_now().await;
    }
    release.notify_one();
    let mut got = Vec::new();
    for t in tasks {
        got.push(t.await.unwrap());
    }
    let stats = cache.stats();
    assert_eq!((stats.misses, stats.coalesced), (1, callers as u64 - 1));
    (got, calls.load(Ordering::SeqCst))
}

#[tokio::test(flavor = "current_thread")]
async fn adaptive_waiters_of_one_flight_all_get_the_value() {
    let (cache, _clock) = mock_cache();
    let (got, calls) = one_flight(&cache, 50, Loaded::new(3).with_ttl(Ttl::secs(5))).await;
    assert_eq!((got, calls), (vec![3; 50], 1));
    assert_eq!(cache.get::<u32>(&key(9)).await.unwrap(), Some(3));
    assert_eq!(
        cache.ttl(&key(9)).await.unwrap(),
        KeyTtl::Expires(Duration::from_secs(5))
    );
}

#[tokio::test(flavor = "current_thread")]
async fn adaptive_waiters_of_one_flight_all_get_a_value_not_cached() {
    let (cache, _clock) = mock_cache();
    let (got, calls) = one_flight(&cache, 50, Loaded::new(4).dont_cache()).await;
    assert_eq!((got, calls), (vec![4; 50], 1));
    assert_eq!(cache.get::<u32>(&key(9)).await.unwrap(), None);
}

#[tokio::test]
async fn adaptive_fail_safe_serves_the_stale_value_when_the_loader_fails() {
    // Physical expiry on the mock clock (exact), logical expiry (in the
    // fail-safe envelope) on the system clock: a short real sleep.
    let backend = MemoryBackend::with_clock(MemoryConfig::default(), Arc::new(MockClock::new()));
    let cache = Cache::builder(Arc::new(backend) as Arc<dyn CacheBackend>)
        .fail_safe(FailSafe::new(Duration::from_secs(60)))
        .build()
        .unwrap();
    let v: f64 = cache
        .get_or_set_adaptive(&key(1), || async {
            Ok::<_, std::io::Error>(Loaded::new(1.1).with_ttl(Ttl::millis(100)))
        })
        .await
        .unwrap();
    assert_eq!(v, 1.1);
    // Kept past its own TTL for max_stale (physical TTL 100 ms + 60 s).
    let full = cache.full_key(&key(1)).await.unwrap();
    assert_eq!(
        cache.backend().ttl(&full).await.unwrap(),
        KeyTtl::Expires(Duration::from_millis(60_100))
    );
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(cache.get::<f64>(&key(1)).await.unwrap(), None);

    let v: f64 = cache
        .get_or_set_adaptive(&key(1), || async {
            Err::<Loaded<f64>, _>(std::io::Error::other("upstream down"))
        })
        .await
        .unwrap();
    assert_eq!(v, 1.1);
    // A value not to be cached is returned but leaves the stale one in
    // place, to be served on the next failure.
    let v: f64 = cache
        .get_or_set_adaptive(&key(1), || async {
            Ok::<_, std::io::Error>(Loaded::new(9.9).dont_cache())
        })
        .await
        .unwrap();
    assert_eq!(v, 9.9);
    let v: f64 = cache
        .get_or_set_adaptive(&key(1), || async {
            Err::<Loaded<f64>, _>(std::io::Error::other("upstream down"))
        })
        .await
        .unwrap();
    assert_eq!(v, 1.1);
    let stats = cache.stats();
    assert_eq!((stats.stale_served, stats.loader_errors), (2, 2));
}
