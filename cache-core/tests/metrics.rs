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

/// Every operation is counted under its own name, with exact numbers, and
/// calls from several threads at once all count (each thread adds to a
/// stripe of the counters; the snapshot sums the stripes).
#[test]
fn metered_counts_every_operation_exactly_across_threads() {
    use cache_core::ErrorKind;
    use std::time::Duration;

    const THREADS: u64 = 4;
    let metered = Metered::new(MemoryBackend::new());
    std::thread::scope(|scope| {
        for t in 0..THREADS {
            let metered = &metered;
            scope.spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                runtime.block_on(async {
                    let key = |i: u32| format!("{t}:{i}");
                    for i in 0..100 {
                        let value = bytes::Bytes::from_static(b"v");
                        metered
                            .set(&key(i), value, SetOptions::default())
                            .await
                            .unwrap();
                    }
                    for i in 0..150 {
                        metered.get(&key(i)).await.unwrap();
                    }
                    for i in 90..130 {
                        metered.exists(&key(i)).await.unwrap();
                    }
                    for i in 0..20 {
                        metered.delete(&key(i)).await.unwrap();
                    }
                    for _ in 0..7 {
                        metered.incr(&key(1000), 1, None).await.unwrap();
                    }
                    for i in 0..3 {
                        metered.ttl(&key(i)).await.unwrap();
                    }
                    for i in 50..52 {
                        let ttl = Some(Duration::from_secs(60));
                        metered.expire(&key(i), ttl).await.unwrap();
                    }
                    let (a, b, c) = (key(60), key(61), key(5000));
                    metered.get_many(&[&a, &b, &c]).await.unwrap();
                    metered.get("").await.unwrap_err();
                });
            });
        }
    });
    let ops = metered.snapshot();
    let counted = |op: &str| {
        let s = ops[op];
        (s.calls, s.hits, s.misses, s.errors)
    };
    let n = THREADS;
    assert_eq!(counted("set"), (100 * n, 0, 0, 0));
    assert_eq!(counted("get"), (151 * n, 100 * n, 50 * n, n));
    assert_eq!(counted("exists"), (40 * n, 10 * n, 30 * n, 0));
    assert_eq!(counted("delete"), (20 * n, 0, 0, 0));
    assert_eq!(counted("incr"), (7 * n, 0, 0, 0));
    assert_eq!(counted("ttl"), (3 * n, 0, 0, 0));
    assert_eq!(counted("expire"), (2 * n, 0, 0, 0));
    assert_eq!(counted("get_many"), (n, 2 * n, n, 0));
    assert_eq!(ops.len(), 8, "{ops:?}");
    assert_eq!(
        metered.errors().into_iter().collect::<Vec<_>>(),
        [(("get", ErrorKind::InvalidKey), n)]
    );
}

/// A read in two parts (`get_now_joined`, how `Cache` reads a key) is
/// counted as one `get` when the inner backend answers it now, and not at
/// all when it leaves the read to the caller (who then calls `get_now` or
/// `get`, counted there).
#[tokio::test]
async fn a_read_in_two_parts_is_counted_once_when_the_inner_backend_answers_it() {
    let metered = Metered::new(MemoryBackend::new());
    let value = bytes::Bytes::from_static(b"Ada");
    metered
        .set("user:1", value.clone(), SetOptions::default())
        .await
        .unwrap();
    let read = |head, tail| metered.get_now_joined(head, tail).map(Result::unwrap);
    assert_eq!(read("user:", "1"), Some(Some(value)));
    assert_eq!(read("user:", "2"), Some(None));
    let get = metered.snapshot()["get"];
    assert_eq!((get.calls, get.hits, get.misses), (2, 1, 1));

    // A backend that never answers now: nothing to count here.
    let never = Metered::new(FaultInjecting::new(
        MemoryBackend::new(),
        FaultConfig::none(),
    ));
    assert!(never.get_now_joined("user:", "1").is_none());
    assert!(never.snapshot().is_empty(), "no call is counted");
}
