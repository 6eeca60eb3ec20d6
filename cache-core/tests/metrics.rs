//! The in-process counters of `Metered` and the report, which work without
//! the `metrics` feature (the export is tested in `metrics_export.rs`).

use std::sync::Arc;

use cache_core::layers::{BreakerConfig, FailOpen, Metered};
use cache_core::{Cache, CacheBackend, CacheKey, SetOptions};
use cache_memory::{MemoryBackend, MemoryConfig};
use cache_testkit::{FaultConfig, FaultInjecting};

fn key(id: u32) -> CacheKey {
    CacheKey::new("user", id).unwrap()
}

#[tokio::test]
async fn metered_counts_each_operation_in_process() {
    let metered = Arc::new(Metered::new(MemoryBackend::new()));
    let cache = Cache::new(Arc::clone(&metered) as Arc<dyn CacheBackend>);
    cache.set(&key(1), &1).await.unwrap();
    cache.get::<u32>(&key(1)).await.unwrap();
    cache.get::<u32>(&key(2)).await.unwrap();
    cache
        .get_many::<u32>(&[key(1), key(2), key(3)])
        .await
        .unwrap();
    let ops = metered.snapshot();
    // Each typed read also reads the category generation once (cached 1 s).
    assert_eq!(ops["get_many"].calls, 1);
    assert_eq!((ops["get_many"].hits, ops["get_many"].misses), (1, 2));
    // The value, and generation 0 of the category, stored on first use.
    assert_eq!(ops["set"].calls, 2);
    assert!(ops["get"].hits >= 1 && ops["get"].misses >= 1);
}

#[tokio::test]
async fn report_names_what_needs_attention() {
    // Low hit rate.
    let cache = Cache::new(Arc::new(MemoryBackend::new()));
    for i in 0..150 {
        cache.get::<u32>(&key(i)).await.unwrap();
    }
    let report = cache.report().await;
    assert_eq!(report.advice[0].code, "low_hit_rate", "{report}");

    // Decode errors and a memory backend near capacity.
    let backend = Arc::new(MemoryBackend::with_config(
        MemoryConfig::default().with_max_entries(10),
    ));
    let cache = Cache::builder(Arc::clone(&backend) as Arc<dyn CacheBackend>)
        .prefix("app")
        .build()
        .unwrap();
    for i in 0..10 {
        cache.set(&key(i), &i).await.unwrap();
    }
    backend
        .set("app:user:0", "not json".into(), SetOptions::default())
        .await
        .unwrap();
    assert!(cache.get::<u32>(&key(0)).await.is_err());
    let codes: Vec<_> = cache.report().await.advice.iter().map(|a| a.code).collect();
    assert!(
        codes.contains(&"decode_errors") && codes.contains(&"near_capacity"),
        "{codes:?}"
    );

    // An open breaker, and a rising error rate.
    let faults = Arc::new(FaultInjecting::new(
        MemoryBackend::new(),
        FaultConfig::none(),
    ));
    let cache = Cache::new(Arc::new(FailOpen::new(
        Arc::clone(&faults),
        BreakerConfig::default().with_failure_threshold(3),
    )));
    for i in 0..50 {
        cache.set(&key(i), &i).await.unwrap();
    }
    assert!(cache.report().await.is_ok());
    faults.set_config(FaultConfig::none().with_fail_every(1));
    for i in 0..10 {
        cache.get::<u32>(&key(i)).await.unwrap();
    }
    let report = cache.report().await;
    assert_eq!(report.advice[0].code, "breaker_open", "{report}");

    let flaky = Arc::new(FaultInjecting::new(
        MemoryBackend::new(),
        FaultConfig::none(),
    ));
    let cache = Cache::new(Arc::clone(&flaky) as Arc<dyn CacheBackend>);
    for i in 0..100 {
        cache.set(&key(i), &i).await.unwrap();
    }
    assert!(cache.report().await.is_ok());
    flaky.set_config(FaultConfig::none().with_fail_every(2));
    for i in 0..100 {
        let _ = cache.set(&key(i), &i).await;
    }
    let codes: Vec<_> = cache.report().await.advice.iter().map(|a| a.code).collect();
    assert_eq!(codes, ["rising_error_rate"]);
}
