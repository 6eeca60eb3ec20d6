//! Fail-safe (serve stale when the loader fails or is slow) and
//! refresh-ahead, on a real memory backend.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cache_core::{Cache, CacheBackend, CacheKey, ErrorKind, FailSafe, GetOrSetOptions, Ttl};
use cache_memory::MemoryBackend;

fn key() -> CacheKey {
    CacheKey::new("rate", "usd").unwrap()
}

fn cache(fail_safe: FailSafe) -> Cache {
    Cache::builder(Arc::new(MemoryBackend::new()) as Arc<dyn CacheBackend>)
        .fail_safe(fail_safe)
        .build()
        .unwrap()
}

fn short_ttl() -> GetOrSetOptions {
    GetOrSetOptions::default().with_ttl(Ttl::millis(100))
}

#[tokio::test]
async fn fail_safe_serves_the_stale_value_when_the_loader_fails() {
    let cache = cache(FailSafe::new(Duration::from_secs(60)));
    let v: f64 = cache
        .get_or_set_opts(&key(), short_ttl(), || async {
            Ok::<_, std::io::Error>(1.1)
        })
        .await
        .unwrap();
    assert_eq!(v, 1.1);
    tokio::time::sleep(Duration::from_millis(150)).await;
    // Logically expired: a plain get is a miss...
    assert_eq!(cache.get::<f64>(&key()).await.unwrap(), None);
    // ...but when the loader fails, get_or_set serves the stale value.
    let v: f64 = cache
        .get_or_set_opts(&key(), short_ttl(), || async {
            Err::<f64, _>(std::io::Error::other("upstream down"))
        })
        .await
        .unwrap();
    assert_eq!(v, 1.1);
    let stats = cache.stats();
    assert_eq!((stats.stale_served, stats.loader_errors), (1, 1));
    // When the loader works again, the fresh value replaces the stale one.
    let v: f64 = cache
        .get_or_set_opts(&key(), short_ttl(), || async {
            Ok::<_, std::io::Error>(1.2)
        })
        .await
        .unwrap();
    assert_eq!(v, 1.2);
    assert_eq!(cache.get::<f64>(&key()).await.unwrap(), Some(1.2));
}

#[tokio::test]
async fn fail_safe_without_a_stale_value_returns_the_loader_error() {
    let cache = cache(FailSafe::new(Duration::from_secs(60)));
    let err = cache
        .get_or_set_opts(&key(), short_ttl(), || async {
            Err::<f64, _>(std::io::Error::other("upstream down"))
        })
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Loader);
    assert_eq!(cache.stats().stale_served, 0);
}

#[tokio::test]
async fn fail_safe_value_is_gone_after_max_stale() {
    let cache = cache(FailSafe::new(Duration::from_millis(100)));
    let _: f64 = cache
        .get_or_set_opts(&key(), short_ttl(), || async {
            Ok::<_, std::io::Error>(1.1)
        })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let err = cache
        .get_or_set_opts(&key(), short_ttl(), || async {
            Err::<f64, _>(std::io::Error::other("down"))
        })
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Loader);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soft_timeout_serves_stale_and_the_load_finishes_in_the_background() {
    let cache =
        cache(FailSafe::new(Duration::from_secs(60)).with_soft_timeout(Duration::from_millis(50)));
    let _: f64 = cache
        .get_or_set_opts(&key(), short_ttl(), || async {
            Ok::<_, std::io::Error>(1.1)
        })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    let v: f64 = cache
        .get_or_set_opts(
            &key(),
            GetOrSetOptions::default().with_ttl(Ttl::secs(60)),
            || async {
                tokio::time::sleep(Duration::from_millis(300)).await;
                Ok::<_, std::io::Error>(1.3)
            },
        )
        .await
        .unwrap();
    // 1.1, not 1.3: the caller did not wait for the 300 ms load.
    assert_eq!(v, 1.1, "the stale value is served after the soft timeout");
    assert_eq!(cache.stats().loader_timeouts, 1);
    // The slow load completes in the background and stores its value.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(cache.get::<f64>(&key()).await.unwrap(), Some(1.3));
    assert_eq!(cache.stats().loader_calls, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_ahead_reloads_once_in_the_background() {
    let backend: Arc<dyn CacheBackend> = Arc::new(MemoryBackend::new());
    let cache = Cache::builder(backend).refresh_ahead(0.5).build().unwrap();
    let version = Arc::new(AtomicU32::new(0));
    let load = |version: Arc<AtomicU32>| {
        move || async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            Ok::<_, std::io::Error>(version.fetch_add(1, Ordering::SeqCst))
        }
    };
    let opts = GetOrSetOptions::default().with_ttl(Ttl::millis(400));
    let v = cache
        .get_or_set_opts(&key(), opts.clone(), load(Arc::clone(&version)))
        .await
        .unwrap();
    assert_eq!(v, 0);
    // Early hits: no refresh.
    let v = cache
        .get_or_set_opts(&key(), opts.clone(), load(Arc::clone(&version)))
        .await
        .unwrap();
    assert_eq!((v, cache.stats().refreshes), (0, 0));
    // In the last half of the TTL: many hits, the old value, one refresh.
    tokio::time::sleep(Duration::from_millis(250)).await;
    for _ in 0..20 {
        let v = cache
            .get_or_set_opts(&key(), opts.clone(), load(Arc::clone(&version)))
            .await
            .unwrap();
        assert_eq!(v, 0);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(cache.stats().refreshes, 1);
    assert_eq!(cache.stats().loader_calls, 2);
    // The refreshed value is there before the old one would have expired.
    assert_eq!(cache.get::<u32>(&key()).await.unwrap(), Some(1));
}

/// A claim (`set_if_absent`: a lease, a lock, an idempotency marker) ends
/// with its TTL under fail-safe too: kept `max_stale` longer to serve
/// stale, it would refuse every later claim for an hour while `get` says
/// the key is empty.
#[tokio::test]
async fn a_set_if_absent_claim_can_be_taken_again_once_its_ttl_passed() {
    let cache = cache(FailSafe::new(Duration::from_secs(3600)));
    let lease = CacheKey::new("lease", "job-7").unwrap();
    assert!(cache
        .set_if_absent(&lease, "worker-a", Ttl::millis(100))
        .await
        .unwrap());
    assert!(!cache
        .set_if_absent(&lease, "worker-b", Ttl::millis(100))
        .await
        .unwrap());
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(cache.get::<String>(&lease).await.unwrap(), None);
    assert!(cache
        .set_if_absent(&lease, "worker-b", Ttl::millis(100))
        .await
        .unwrap());
    assert_eq!(
        cache.get::<String>(&lease).await.unwrap().as_deref(),
        Some("worker-b")
    );
}
