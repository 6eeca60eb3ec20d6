//! `cache::open` with `fail_open` attaches the fail-open layer's counters
//! to the cache: the failures it swallows and its breaker show in
//! `Cache::stats()` and `report()`. The outage is made by closing the
//! memory backend under the stack (its calls then fail with `Closed`, a
//! backend failure fail-open swallows).
//!
//! How it could fail: `open` not calling `CacheBuilder::fail_open_stats`
//! (the counters stay zero and `breaker_open` false while the breaker is
//! open).

#![cfg(feature = "memory")]

use cache::{CacheConfig, CacheKey};

#[tokio::test]
async fn open_with_fail_open_shows_its_counters_in_stats() {
    // Generations read on every call, so each typed read makes the same
    // backend calls whatever the timing: read the generation, store
    // generation 0 if absent, read the value.
    let config = CacheConfig::from_json(
        r#"{ "url": "memory://", "prefix": "outage", "generation_refresh_ms": 0,
             "fail_open": { "failure_threshold": 3, "cool_down_ms": 3600000 } }"#,
    )
    .unwrap();
    let cache = cache::open(&config).await.unwrap();
    let key = CacheKey::new("user", 1).unwrap();
    cache.set(&key, &1).await.unwrap();
    assert_eq!(cache.get::<u32>(&key).await.unwrap(), Some(1));
    let stats = cache.stats();
    assert_eq!(
        (stats.backend_failures_swallowed(), stats.breaker_opened),
        (0, 0)
    );
    assert!(!stats.breaker_open);

    cache.backend().close().await.unwrap();
    for _ in 0..4 {
        assert_eq!(cache.get::<u32>(&key).await.unwrap(), None);
    }
    let stats = cache.stats();
    assert!(stats.breaker_open, "{stats:?}");
    assert_eq!((stats.breaker_opened, stats.breaker_closed), (1, 0));
    assert_eq!(
        (stats.failed_open_reads, stats.skipped_writes),
        (8, 4),
        "{stats:?}"
    );
    assert_eq!(stats.errors, 0, "swallowed, not returned");

    let report = cache.report().await;
    assert_eq!(report.advice[0].code, "breaker_open", "{report}");
    assert!(
        report.advice[0].message.contains(
            "(opened 1 times, closed 0 times; 8 reads answered as misses, 4 writes skipped)"
        ),
        "{report}"
    );
}
