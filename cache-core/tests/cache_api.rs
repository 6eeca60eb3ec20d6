//! `Cache::delete_many`, `Cache::expire` and `Cache::ttl`: they reach the
//! key the typed operations use (category, generation, version), resolve
//! `Ttl` like `set_with_ttl`, keep fail-safe's logical expiry and physical
//! TTL apart, are seen by the write tracker and are counted as documented.
//!
//! How they could fail: a raw key instead of `full_key` (a key of an old
//! generation deleted, a versioned key missed), `Ttl::Default` not resolved
//! (a persistent key instead of the category's TTL), `expire` under
//! fail-safe that only moves the backend TTL (the envelope still says the
//! old expiry, or the value lives `max_stale` too short), `ttl` reporting
//! the physical TTL (60 s + 1 h), a stale value touched back to life, a
//! `get_or_set` load that overwrites a value deleted or touched meanwhile
//! (no write tracking), or deletes not counted.

use std::sync::Arc;
use std::time::Duration;

use cache_core::{Cache, CacheBackend, CacheKey, CategoryTtl, ErrorKind, FailSafe, KeyTtl, Ttl};
use cache_memory::MemoryBackend;
use cache_testkit::MockBackend;

fn key(category: &str, id: u32) -> CacheKey {
    CacheKey::new(category, id).unwrap()
}

fn memory() -> Arc<dyn CacheBackend> {
    Arc::new(MemoryBackend::new())
}

fn fail_safe_cache() -> Cache {
    Cache::builder(memory())
        .fail_safe(FailSafe::new(Duration::from_secs(3600)))
        .build()
        .unwrap()
}

/// The backend's own TTL of the key `key` is stored under.
async fn physical_ttl(cache: &Cache, key: &CacheKey) -> KeyTtl {
    let full = cache.full_key(key).await.unwrap();
    cache.backend().ttl(&full).await.unwrap()
}

fn expires_within(ttl: KeyTtl, low: Duration, high: Duration) -> bool {
    matches!(ttl, KeyTtl::Expires(d) if low < d && d <= high)
}

#[tokio::test]
async fn delete_many_removes_exactly_the_given_keys_and_counts_them() {
    let cache = Cache::new(memory());
    let versioned = key("user", 3).with_version(2);
    for k in [key("user", 1), key("user", 2), versioned.clone()] {
        cache.set(&k, &1u32).await.unwrap();
    }
    let removed = cache
        .delete_many(&[key("user", 1), versioned.clone(), key("user", 9)])
        .await
        .unwrap();
    assert_eq!(removed, 2);
    assert_eq!(cache.get::<u32>(&key("user", 1)).await.unwrap(), None);
    assert_eq!(cache.get::<u32>(&versioned).await.unwrap(), None);
    assert_eq!(cache.get::<u32>(&key("user", 2)).await.unwrap(), Some(1));
    assert_eq!(cache.stats().deletes, 2);
    assert_eq!(cache.delete_many(&[]).await.unwrap(), 0);
    assert_eq!(cache.stats().deletes, 2);
}

#[tokio::test]
async fn delete_many_after_a_category_bump_reaches_the_new_generation_only() {
    let cache = Cache::new(memory());
    cache.set(&key("user", 1), &1u32).await.unwrap();
    let old = cache.full_key(&key("user", 1)).await.unwrap();
    cache.invalidate_category("user").await.unwrap();
    cache.set(&key("user", 1), &2u32).await.unwrap();
    assert_eq!(cache.delete_many(&[key("user", 1)]).await.unwrap(), 1);
    // The old generation's entry is unreachable, not deleted: it ages out.
    assert!(cache.backend().exists(&old).await.unwrap());
    assert_eq!(cache.get::<u32>(&key("user", 1)).await.unwrap(), None);
}

#[tokio::test]
async fn exact_calls_delete_many_and_expire_use_full_keys_and_the_category_ttl() {
    let mut mock = MockBackend::new();
    mock.allow_bookkeeping();
    mock.expect_delete_many()
        .withf(|keys| *keys == ["app:price:1", "app:price:2:v3"])
        .times(1)
        .returning(|_| Ok(1));
    mock.expect_expire()
        .withf(|key, ttl| key == "app:price:1" && *ttl == Some(Duration::from_secs(300)))
        .times(1)
        .returning(|_, _| Ok(true));
    mock.expect_expire()
        .withf(|key, ttl| key == "app:price:2" && ttl.is_none())
        .times(1)
        .returning(|_, _| Ok(false));
    let cache = Cache::builder(Arc::new(mock))
        .prefix("app")
        .ttl_policy(CategoryTtl::new(None).with_category("price", Some(Duration::from_secs(300))))
        .build()
        .unwrap();
    let batch = [key("price", 1), key("price", 2).with_version(3)];
    assert_eq!(cache.delete_many(&batch).await.unwrap(), 1);
    assert!(cache.expire(&key("price", 1), Ttl::Default).await.unwrap());
    assert!(!cache.expire(&key("price", 2), Ttl::Never).await.unwrap());
    let stats = cache.stats();
    assert_eq!(
        (stats.deletes, stats.sets, stats.hits, stats.misses),
        (1, 0, 0, 0)
    );
}

#[tokio::test]
async fn expire_touches_an_existing_value_and_reports_a_missing_one() {
    let cache = Cache::new(memory());
    let k = key("session", 1);
    assert!(!cache.expire(&k, Ttl::secs(60)).await.unwrap());
    assert_eq!(cache.ttl(&k).await.unwrap(), KeyTtl::Missing);
    assert!(!cache
        .backend()
        .exists(&cache.full_key(&k).await.unwrap())
        .await
        .unwrap());

    cache.set(&k, "Ada").await.unwrap();
    assert_eq!(cache.ttl(&k).await.unwrap(), KeyTtl::Persistent);
    assert!(cache.expire(&k, Ttl::secs(60)).await.unwrap());
    let (sixty, fifty) = (Duration::from_secs(60), Duration::from_secs(50));
    assert!(expires_within(cache.ttl(&k).await.unwrap(), fifty, sixty));
    assert_eq!(
        cache.get::<String>(&k).await.unwrap().as_deref(),
        Some("Ada")
    );
    assert!(cache.expire(&k, Ttl::Never).await.unwrap());
    assert_eq!(cache.ttl(&k).await.unwrap(), KeyTtl::Persistent);
    // Touching counts nothing; the get above was the only hit.
    let stats = cache.stats();
    assert_eq!((stats.sets, stats.deletes, stats.hits), (1, 0, 1));
}

#[tokio::test]
async fn expire_zero_deletes_and_counts_a_delete() {
    for cache in [Cache::new(memory()), fail_safe_cache()] {
        let k = key("session", 1);
        cache.set(&k, "Ada").await.unwrap();
        assert!(cache.expire(&k, Ttl::secs(0)).await.unwrap());
        assert_eq!(cache.ttl(&k).await.unwrap(), KeyTtl::Missing);
        assert!(!cache
            .backend()
            .exists(&cache.full_key(&k).await.unwrap())
            .await
            .unwrap());
        assert_eq!(cache.stats().deletes, 1);
        assert!(!cache.expire(&k, Ttl::secs(0)).await.unwrap());
        assert_eq!(cache.stats().deletes, 1);
    }
}

#[tokio::test]
async fn with_fail_safe_expire_rewrites_the_logical_expiry_and_keeps_max_stale() {
    let cache = fail_safe_cache();
    let k = key("rate", 1);
    cache.set_with_ttl(&k, &1.08, Ttl::secs(60)).await.unwrap();
    assert!(cache.expire(&k, Ttl::secs(10)).await.unwrap());
    // Logical: what `ttl` and `get_with_ttl` report.
    let (ten, five) = (Duration::from_secs(10), Duration::from_secs(5));
    assert!(expires_within(cache.ttl(&k).await.unwrap(), five, ten));
    let (value, fresh_for) = cache.get_with_ttl::<f64>(&k).await.unwrap().unwrap();
    assert_eq!(value, 1.08);
    assert!(fresh_for.unwrap() <= ten);
    // Physical: the new TTL plus max_stale, so it can still be served stale.
    let (low, high) = (Duration::from_secs(3600), Duration::from_secs(3610));
    assert!(expires_within(physical_ttl(&cache, &k).await, low, high));

    // Longer than before, and persistent.
    assert!(cache.expire(&k, Ttl::secs(600)).await.unwrap());
    let (low, high) = (Duration::from_secs(500), Duration::from_secs(600));
    assert!(expires_within(cache.ttl(&k).await.unwrap(), low, high));
    assert!(cache.expire(&k, Ttl::Never).await.unwrap());
    assert_eq!(cache.ttl(&k).await.unwrap(), KeyTtl::Persistent);
    assert_eq!(physical_ttl(&cache, &k).await, KeyTtl::Persistent);
    assert_eq!(cache.get::<f64>(&k).await.unwrap(), Some(1.08));
}

#[tokio::test]
async fn with_fail_safe_a_stale_value_is_not_touched_back_to_life() {
    let cache = fail_safe_cache();
    let k = key("rate", 1);
    cache.set_with_ttl(&k, &1.08, Ttl::millis(1)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await; // past 1 ms, surely
    assert_eq!(cache.ttl(&k).await.unwrap(), KeyTtl::Missing);
    assert!(!cache.expire(&k, Ttl::secs(600)).await.unwrap());
    assert_eq!(cache.get::<f64>(&k).await.unwrap(), None);
    // Still kept to be served stale.
    assert!(cache
        .backend()
        .exists(&cache.full_key(&k).await.unwrap())
        .await
        .unwrap());
}

#[tokio::test]
async fn with_fail_safe_a_counter_is_touched_with_its_own_ttl() {
    let cache = fail_safe_cache();
    let k = key("hits", 1);
    assert_eq!(cache.incr(&k, 5).await.unwrap(), 5);
    assert!(cache.expire(&k, Ttl::secs(10)).await.unwrap());
    // No envelope: the backend TTL is the counter's only expiry, no max_stale.
    let (ten, five) = (Duration::from_secs(10), Duration::from_secs(5));
    assert!(expires_within(physical_ttl(&cache, &k).await, five, ten));
    assert!(expires_within(cache.ttl(&k).await.unwrap(), five, ten));
    assert_eq!(cache.get::<i64>(&k).await.unwrap(), Some(5));
}

/// A `get_or_set` load that a `delete_many` or an `expire` overtakes does
/// not store its value (the write tracker sees them): the loader itself
/// makes the call, so the overlap is certain.
#[tokio::test]
async fn a_load_overtaken_by_delete_many_or_expire_is_not_stored() {
    for touch in [false, true] {
        let cache = fail_safe_cache();
        let k = key("report", 1);
        let (inner, k2) = (cache.clone(), k.clone());
        let value = cache
            .get_or_set(&k, move || async move {
                if touch {
                    inner.expire(&k2, Ttl::secs(60)).await.unwrap();
                } else {
                    inner.delete_many(&[k2]).await.unwrap();
                }
                Ok::<_, std::io::Error>(7u32)
            })
            .await
            .unwrap();
        assert_eq!(value, 7);
        assert_eq!(cache.get::<u32>(&k).await.unwrap(), None, "touch = {touch}");
    }
}

#[tokio::test]
async fn ttl_expire_and_delete_many_on_a_closed_cache_fail_with_closed() {
    let cache = Cache::new(memory());
    cache.close().await.unwrap();
    let k = key("user", 1);
    assert_eq!(cache.ttl(&k).await.unwrap_err().kind(), ErrorKind::Closed);
    let err = cache.expire(&k, Ttl::Never).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Closed);
    let err = cache.delete_many(&[]).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Closed);
}
