//! `TypedL1`: decoded values held as `Arc<T>`, with the invalidation and
//! TTL semantics of the cache underneath.

use std::sync::Arc;
use std::time::Duration;

use cache_core::{Cache, CacheKey, Ttl};
use cache_memory::MemoryBackend;

use cache_core::{TypedL1, TypedL1Config};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn l1_over(backend: Arc<MemoryBackend>, config: TypedL1Config) -> TypedL1 {
    let cache = Cache::builder(backend)
        .generation_refresh(Duration::ZERO)
        .build()
        .unwrap();
    TypedL1::new(cache, config)
}

#[test]
fn a_hit_returns_the_same_arc_without_the_cache() {
    rt().block_on(async {
        let l1 = l1_over(Arc::new(MemoryBackend::new()), TypedL1Config::default());
        let key = CacheKey::new("user", 1).unwrap();
        assert_eq!(l1.get::<String>(&key).await.unwrap(), None);
        l1.set(&key, "ada").await.unwrap();
        let first = l1.get::<String>(&key).await.unwrap().unwrap();
        let again = l1.get::<String>(&key).await.unwrap().unwrap();
        assert_eq!(*first, "ada");
        assert!(Arc::ptr_eq(&first, &again));
        assert_eq!(l1.l1_hits(), 1);
        assert_eq!(
            l1.peek::<String>(&key).as_deref().map(String::as_str),
            Some("ada")
        );
        // Another type is not served from the copy.
        assert!(l1.peek::<u64>(&key).is_none());
        assert!(l1.get::<u64>(&key).await.is_err());
    });
}

#[test]
fn writes_and_deletes_drop_the_copy() {
    rt().block_on(async {
        let l1 = l1_over(Arc::new(MemoryBackend::new()), TypedL1Config::default());
        let key = CacheKey::new("user", 2).unwrap();
        l1.set(&key, "one").await.unwrap();
        assert_eq!(*l1.get::<String>(&key).await.unwrap().unwrap(), "one");
        l1.set(&key, "two").await.unwrap();
        assert_eq!(*l1.get::<String>(&key).await.unwrap().unwrap(), "two");
        assert!(l1.delete(&key).await.unwrap());
        assert_eq!(l1.get::<String>(&key).await.unwrap(), None);
        assert!(l1.is_empty());
    });
}

#[test]
fn a_copy_never_outlives_the_stored_ttl() {
    rt().block_on(async {
        let l1 = l1_over(Arc::new(MemoryBackend::new()), TypedL1Config::default());
        let key = CacheKey::new("rate", "usd").unwrap();
        l1.set_with_ttl(&key, &1.25f64, Ttl::After(Duration::from_millis(60)))
            .await
            .unwrap();
        assert_eq!(*l1.get::<f64>(&key).await.unwrap().unwrap(), 1.25);
        assert!(l1.peek::<f64>(&key).is_some());
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert!(l1.peek::<f64>(&key).is_none());
        assert_eq!(l1.get::<f64>(&key).await.unwrap(), None);
    });
}

#[test]
fn a_copy_lives_at_most_max_ttl() {
    rt().block_on(async {
        // Served 70 ms less the coarse clock's 20 ms slack.
        let config = TypedL1Config::default().with_max_ttl(Duration::from_millis(70));
        let l1 = l1_over(Arc::new(MemoryBackend::new()), config);
        let key = CacheKey::new("user", 3).unwrap();
        l1.set(&key, "ada").await.unwrap();
        l1.get::<String>(&key).await.unwrap();
        assert!(l1.peek::<String>(&key).is_some());
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert!(l1.peek::<String>(&key).is_none());
        // Read again through the cache: the value is still there.
        assert_eq!(*l1.get::<String>(&key).await.unwrap().unwrap(), "ada");
    });
}

#[test]
fn a_copy_that_would_live_within_the_clocks_slack_is_not_kept() {
    rt().block_on(async {
        let config = TypedL1Config::default().with_max_ttl(Duration::from_millis(15));
        let l1 = l1_over(Arc::new(MemoryBackend::new()), config);
        let key = CacheKey::new("user", 3).unwrap();
        l1.set(&key, "ada").await.unwrap();
        assert_eq!(*l1.get::<String>(&key).await.unwrap().unwrap(), "ada");
        assert!(l1.peek::<String>(&key).is_none());
        assert_eq!(l1.len(), 0);
    });
}

#[test]
fn category_invalidation_here_drops_the_copies() {
    rt().block_on(async {
        let l1 = l1_over(Arc::new(MemoryBackend::new()), TypedL1Config::default());
        let a = CacheKey::new("user", 1).unwrap();
        let b = CacheKey::new("post", 1).unwrap();
        l1.set(&a, "ada").await.unwrap();
        l1.set(&b, "hello").await.unwrap();
        l1.get::<String>(&a).await.unwrap();
        l1.get::<String>(&b).await.unwrap();
        l1.invalidate_category("user").await.unwrap();
        assert_eq!(l1.get::<String>(&a).await.unwrap(), None);
        assert_eq!(*l1.get::<String>(&b).await.unwrap().unwrap(), "hello");
        assert!(l1.peek::<String>(&b).is_some());
    });
}

#[test]
fn category_invalidation_elsewhere_is_seen_within_recheck() {
    rt().block_on(async {
        let backend = Arc::new(MemoryBackend::new());
        // Trusted 40 ms less the coarse clock's 20 ms slack.
        let config = TypedL1Config::default().with_recheck(Duration::from_millis(40));
        let l1 = l1_over(backend.clone(), config);
        let other = Cache::builder(backend)
            .generation_refresh(Duration::ZERO)
            .build()
            .unwrap();
        let a = CacheKey::new("user", 1).unwrap();
        let b = CacheKey::new("user", 2).unwrap();
        l1.set(&a, "ada").await.unwrap();
        l1.set(&b, "bob").await.unwrap();
        l1.get::<String>(&a).await.unwrap();
        l1.get::<String>(&b).await.unwrap();
        other.invalidate_category("user").await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        // The first read after `recheck` sees the new generation, and the
        // other copy of the category goes with it.
        assert_eq!(l1.get::<String>(&a).await.unwrap(), None);
        assert!(l1.peek::<String>(&b).is_none());
        assert_eq!(l1.get::<String>(&b).await.unwrap(), None);
    });
}

#[test]
fn a_recheck_with_the_same_generation_keeps_the_copies() {
    rt().block_on(async {
        // Trusted 40 ms less the coarse clock's 20 ms slack.
        let config = TypedL1Config::default().with_recheck(Duration::from_millis(40));
        let l1 = l1_over(Arc::new(MemoryBackend::new()), config);
        let a = CacheKey::new("user", 1).unwrap();
        let b = CacheKey::new("user", 2).unwrap();
        l1.set(&a, "ada").await.unwrap();
        l1.set(&b, "bob").await.unwrap();
        let first_a = l1.get::<String>(&a).await.unwrap().unwrap();
        let first_b = l1.get::<String>(&b).await.unwrap().unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let again_a = l1.get::<String>(&a).await.unwrap().unwrap();
        assert!(Arc::ptr_eq(&first_a, &again_a));
        let again_b = l1.peek::<String>(&b).unwrap();
        assert!(Arc::ptr_eq(&first_b, &again_b));
    });
}

#[test]
fn copies_are_bounded() {
    rt().block_on(async {
        let l1 = l1_over(
            Arc::new(MemoryBackend::new()),
            TypedL1Config::default().with_max_entries(128),
        );
        for i in 0..2_000 {
            let key = CacheKey::new("user", i).unwrap();
            l1.set(&key, &i).await.unwrap();
            assert_eq!(*l1.get::<i32>(&key).await.unwrap().unwrap(), i);
        }
        assert!(l1.len() <= 128, "{}", l1.len());
    });
}

#[test]
fn get_or_set_returns_and_later_serves_the_value() {
    rt().block_on(async {
        let l1 = l1_over(Arc::new(MemoryBackend::new()), TypedL1Config::default());
        let key = CacheKey::new("report", 7).unwrap();
        let v = l1
            .get_or_set(&key, || async { Ok::<_, std::io::Error>(42u32) })
            .await
            .unwrap();
        assert_eq!(*v, 42);
        let again = l1
            .get_or_set(&key, || async { Ok::<_, std::io::Error>(0u32) })
            .await
            .unwrap();
        assert_eq!(*again, 42);
        assert!(l1.peek::<u32>(&key).is_some());
    });
}

/// With fail-safe on, the backend keeps a value past its TTL to serve it
/// stale; a decoded copy still ends at the value's logical TTL.
#[test]
fn a_copy_ends_at_the_logical_ttl_under_fail_safe() {
    rt().block_on(async {
        let cache = Cache::builder(Arc::new(MemoryBackend::new()))
            .fail_safe(cache_core::FailSafe::new(Duration::from_secs(3600)))
            .build()
            .unwrap();
        let l1 = TypedL1::new(cache, TypedL1Config::default());
        let key = CacheKey::new("rate", "EUR").unwrap();
        l1.set_with_ttl(&key, &"1.08".to_string(), Ttl::millis(200))
            .await
            .unwrap();
        assert_eq!(*l1.get::<String>(&key).await.unwrap().unwrap(), "1.08");
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            l1.get::<String>(&key).await.unwrap(),
            None,
            "past its TTL the value is stale: a miss, as Cache::get says"
        );
        assert_eq!(l1.cache().get::<String>(&key).await.unwrap(), None);
    });
}

/// A decoded copy ends where refresh-ahead's window opens, so a read in
/// the window reaches the cache and starts the refresh.
#[test]
fn refresh_ahead_still_refreshes_through_the_l1() {
    rt().block_on(async {
        let cache = Cache::builder(Arc::new(MemoryBackend::new()))
            .refresh_ahead(0.5)
            .ttl_policy(cache_core::CategoryTtl::new(Some(Duration::from_millis(
                600,
            ))))
            .build()
            .unwrap();
        let l1 = TypedL1::new(cache, TypedL1Config::default());
        let key = CacheKey::new("rate", "EUR").unwrap();
        let calls = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let load = |calls: Arc<std::sync::atomic::AtomicU32>| async move {
            let n = calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            Ok::<_, std::io::Error>(n)
        };
        let first = l1.get_or_set(&key, {
            let calls = calls.clone();
            move || load(calls)
        });
        assert_eq!(*first.await.unwrap(), 1);
        // 400 ms in: fresh, but inside the last half of the TTL.
        tokio::time::sleep(Duration::from_millis(400)).await;
        let again = l1
            .get_or_set(&key, {
                let calls = calls.clone();
                move || load(calls)
            })
            .await
            .unwrap();
        assert_eq!(*again, 1, "the current value is served");
        for _ in 0..50 {
            if calls.load(std::sync::atomic::Ordering::SeqCst) == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(
            calls.load(std::sync::atomic::Ordering::SeqCst),
            2,
            "the read in the refresh window started one refresh"
        );
    });
}
