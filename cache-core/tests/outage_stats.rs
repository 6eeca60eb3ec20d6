//! Outages are visible in `Cache::stats()` and `Cache::report()`: the
//! backend failures a `FailOpen` layer swallows (reads answered as misses,
//! skipped writes), its breaker's openings and closings and its lost and
//! replayed invalidations are counted once its counters are attached with
//! `CacheBuilder::fail_open_stats`; and the report tells a failing loader
//! (the upstream) from a failing backend.
//!
//! How these could fail: the handle not merged into `stats()` (all zero),
//! fields crossed or counted twice (the `==` against the layer's own
//! counters), the report blaming the backend for loader errors (it did:
//! loader errors were in the error rate) or not seeing swallowed failures
//! at all (they never reached `errors`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cache_core::layers::{BreakerConfig, FailOpen, FailOpenStats};
use cache_core::{Cache, CacheBackend, CacheKey, CacheStats, SetOptions};
use cache_memory::MemoryBackend;
use cache_testkit::{FaultConfig, FaultInjecting};

type Faulty = Arc<FaultInjecting<MemoryBackend>>;
type Layer = Arc<FailOpen<Faulty>>;

fn key(id: u32) -> CacheKey {
    CacheKey::new("user", id).unwrap()
}

/// A cache over `FailOpen` over a healthy fault-injecting memory backend,
/// with the layer's counters attached. The category's generation is stored
/// beforehand and trusted for an hour, so once read (by `warm`) typed calls
/// make exactly one backend call each.
async fn stack(breaker: BreakerConfig) -> (Cache, Layer, Faulty) {
    let faults: Faulty = Arc::new(FaultInjecting::new(
        MemoryBackend::new(),
        FaultConfig::none(),
    ));
    faults
        .set(
            "cache:#gen:user",
            Bytes::from_static(b"0"),
            SetOptions::default(),
        )
        .await
        .unwrap();
    let layer = Arc::new(FailOpen::new(Arc::clone(&faults), breaker));
    let cache = Cache::builder(Arc::clone(&layer) as Arc<dyn CacheBackend>)
        .generation_refresh(Duration::from_secs(3600))
        .fail_open_stats(layer.handle())
        .build()
        .unwrap();
    cache.get::<u32>(&key(0)).await.unwrap();
    (cache, layer, faults)
}

fn down() -> FaultConfig {
    FaultConfig::none().with_fail_every(1)
}

/// The fail-open fields of `stats` are the layer's own counters.
fn assert_merged(stats: &CacheStats, layer: &FailOpenStats) {
    assert_eq!(stats.failed_open_reads, layer.failed_reads);
    assert_eq!(stats.skipped_writes, layer.skipped_writes);
    assert_eq!(stats.breaker_opened, layer.breaker_opened);
    assert_eq!(stats.breaker_closed, layer.breaker_closed);
    assert_eq!(stats.pending_invalidations, layer.pending_invalidations);
    assert_eq!(stats.replayed_invalidations, layer.replayed_invalidations);
}

fn codes(report: &cache_core::CacheReport) -> Vec<&'static str> {
    report.advice.iter().map(|a| a.code).collect()
}

#[tokio::test]
async fn swallowed_failures_are_counted_in_stats() {
    let (cache, layer, faults) = stack(
        BreakerConfig::default()
            .with_failure_threshold(1000)
            .with_cool_down(Duration::from_secs(3600)),
    )
    .await;
    cache.set(&key(1), &1).await.unwrap();
    assert_eq!(cache.get::<u32>(&key(1)).await.unwrap(), Some(1));
    let stats = cache.stats();
    assert_eq!(stats.backend_failures_swallowed(), 0);
    assert!(!stats.breaker_open);

    faults.set_config(down());
    for i in 1..=5 {
        assert_eq!(cache.get::<u32>(&key(i)).await.unwrap(), None);
    }
    for i in 10..13 {
        cache.set(&key(i), &i).await.unwrap();
    }
    let stats = cache.stats();
    assert_merged(&stats, &layer.stats());
    assert_eq!(
        (stats.failed_open_reads, stats.skipped_writes),
        (5, 3),
        "{stats:?}"
    );
    assert_eq!(stats.backend_failures_swallowed(), 8);
    // Swallowed: none of them reached the caller as an error.
    assert_eq!(stats.errors, 0);
    assert_eq!((stats.hits, stats.misses, stats.sets), (1, 6, 1));
    // Each skipped write left a possibly outdated value to invalidate.
    assert_eq!(stats.pending_invalidations, 3);
    assert_eq!((stats.breaker_opened, stats.breaker_closed), (0, 0));
    assert!(!stats.breaker_open);

    // The report sees them as backend failures.
    let report = cache.report().await;
    assert_eq!(codes(&report), ["high_error_rate"], "{report}");
    let message = &report.advice[0].message;
    assert!(
        message.starts_with("8 backend failures in 11 operations (72.7%)")
            && message.contains("0 errors returned, 8 swallowed by fail-open")
            && message.contains("check the backend"),
        "{message}"
    );
    assert!(
        report.to_string().contains(
            "fail-open: breaker closed (opened 0, closed 0), 5 reads answered as misses, \
             3 writes skipped, 3 invalidations pending, 0 replayed"
        ),
        "{report}"
    );
}

#[tokio::test]
async fn breaker_openings_closings_and_replays_are_counted() {
    let (cache, layer, faults) = stack(
        BreakerConfig::default()
            .with_failure_threshold(3)
            .with_cool_down(Duration::from_millis(100)),
    )
    .await;
    cache.set(&key(1), &1).await.unwrap();
    faults.set_config(down());
    // Three failures in a row open the breaker: all made while it is
    // closed, so no cool-down (no timing) is involved. The skipped delete
    // is remembered for replay. (The third read is of another key: a read
    // of key 1 now never reaches the backend while its delete waits.)
    assert_eq!(cache.get::<u32>(&key(1)).await.unwrap(), None);
    assert!(!cache.delete(&key(1)).await.unwrap());
    assert_eq!(cache.get::<u32>(&key(2)).await.unwrap(), None);
    // Open now: the recovery task's health probes fail while the backend
    // is down, and no caller probes.
    let stats = cache.stats();
    assert!(stats.breaker_open, "{stats:?}");
    assert_merged(&stats, &layer.stats());
    assert_eq!((stats.breaker_opened, stats.breaker_closed), (1, 0));
    assert_eq!((stats.failed_open_reads, stats.skipped_writes), (2, 1));
    assert_eq!(stats.pending_invalidations, 1);

    // The backend comes back: the recovery task replays the delete and
    // closes the breaker, with no caller.
    faults.set_config(FaultConfig::none());
    let back = Instant::now();
    while cache.stats().breaker_open {
        assert!(back.elapsed() < Duration::from_secs(30), "never closed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let stats = cache.stats();
    assert_merged(&stats, &layer.stats());
    assert_eq!((stats.breaker_opened, stats.breaker_closed), (1, 1));
    assert_eq!(
        (stats.pending_invalidations, stats.replayed_invalidations),
        (0, 1)
    );
    assert_eq!(cache.get::<u32>(&key(1)).await.unwrap(), None, "replayed");

    let report = cache.report().await;
    let tripped = report
        .advice
        .iter()
        .find(|a| a.code == "breaker_tripped")
        .unwrap_or_else(|| panic!("{report}"));
    assert!(
        tripped.message.contains("opened 1 times, closed 1 times")
            && tripped.message.contains("1 invalidations replayed"),
        "{report}"
    );
    assert!(!codes(&report).contains(&"breaker_open"), "{report}");
    // Seen once: the next report does not repeat it.
    assert!(!codes(&cache.report().await).contains(&"breaker_tripped"));
}

#[tokio::test]
async fn an_open_breaker_is_reported_with_its_counts() {
    let (cache, _layer, faults) = stack(
        BreakerConfig::default()
            .with_failure_threshold(1)
            .with_cool_down(Duration::from_secs(3600)),
    )
    .await;
    faults.set_config(down());
    for i in 1..=3 {
        assert_eq!(cache.get::<u32>(&key(i)).await.unwrap(), None);
    }
    let report = cache.report().await;
    assert_eq!(report.advice[0].code, "breaker_open", "{report}");
    assert!(
        report.advice[0].message.contains(
            "(opened 1 times, closed 0 times; 3 reads answered as misses, 0 writes skipped)"
        ),
        "{report}"
    );
    assert!(report.stats.breaker_open);
}

#[tokio::test]
async fn a_failing_loader_is_not_blamed_on_the_backend() {
    let (cache, _layer, _faults) = stack(BreakerConfig::default()).await;
    for i in 1..=10 {
        cache
            .get_or_set(&key(i), || async {
                Err::<u32, _>(std::io::Error::other("upstream down"))
            })
            .await
            .unwrap_err();
    }
    let stats = cache.stats();
    assert_eq!((stats.loader_calls, stats.loader_errors), (10, 10));
    assert_eq!(
        (stats.backend_errors(), stats.backend_failures_swallowed()),
        (0, 0)
    );
    let report = cache.report().await;
    let codes = codes(&report);
    assert!(codes.contains(&"loader_errors"), "{report}");
    assert!(
        !codes.contains(&"high_error_rate") && !codes.contains(&"rising_error_rate"),
        "{report}"
    );
    let loader = report
        .advice
        .iter()
        .find(|a| a.code == "loader_errors")
        .unwrap();
    assert!(
        loader.message.starts_with("10 of 10 loads failed")
            && loader.message.contains("upstream")
            && !loader.message.contains("check the backend"),
        "{report}"
    );
}

#[tokio::test]
async fn a_failing_backend_is_not_blamed_on_the_loader() {
    let (cache, _layer, faults) = stack(
        BreakerConfig::default()
            .with_failure_threshold(1000)
            .with_cool_down(Duration::from_secs(3600)),
    )
    .await;
    faults.set_config(down());
    for i in 1..=10 {
        let value = cache
            .get_or_set(&key(i), move || async move { Ok::<_, std::io::Error>(i) })
            .await
            .unwrap();
        assert_eq!(value, i);
    }
    let stats = cache.stats();
    assert_eq!((stats.loader_calls, stats.loader_errors), (10, 0));
    assert_eq!(stats.errors, 0);
    // Each load reads the key twice (before and inside its flight) and
    // writes once (if absent: nothing left to invalidate).
    assert_eq!(
        (stats.failed_open_reads, stats.skipped_writes),
        (20, 10),
        "{stats:?}"
    );
    assert_eq!(stats.pending_invalidations, 0);
    let report = cache.report().await;
    let codes = codes(&report);
    assert!(codes.contains(&"high_error_rate"), "{report}");
    assert!(
        !codes.contains(&"loader_errors") && !codes.contains(&"stale_served"),
        "{report}"
    );
}

/// The caller's own mistakes (a key too long, a value over the backend's
/// size limit, a value the codec cannot encode) are errors returned, but not backend failures: the report does not send
/// anyone to check the backend's health for them. Before, one oversize
/// `set` on a fresh cache gave "1 backend failures in 0 operations
/// (100.0%)", and an invalid key was not counted at all.
#[tokio::test]
async fn the_callers_mistakes_are_errors_but_not_backend_failures() {
    let backend =
        MemoryBackend::with_config(cache_memory::MemoryConfig::default().with_max_value_size(16));
    let cache = Cache::new(Arc::new(backend));
    let err = cache.set(&key(1), &"x".repeat(64)).await.unwrap_err();
    assert_eq!(err.kind(), cache_core::ErrorKind::InvalidValue, "{err}");
    // The id alone is within the limit; with the prefix and category the
    // full key is not.
    let long = CacheKey::new("user", "i".repeat(cache_core::MAX_KEY_LEN)).unwrap();
    let err = cache.set(&long, &1).await.unwrap_err();
    assert_eq!(err.kind(), cache_core::ErrorKind::InvalidKey, "{err}");
    let err = cache.get::<u32>(&long).await.unwrap_err();
    assert_eq!(err.kind(), cache_core::ErrorKind::InvalidKey, "{err}");
    // JSON maps need string keys.
    let unencodable = std::collections::BTreeMap::from([((1, 2), 3)]);
    let err = cache.set(&key(2), &unencodable).await.unwrap_err();
    assert_eq!(err.kind(), cache_core::ErrorKind::Codec, "{err}");

    let stats = cache.stats();
    assert_eq!((stats.errors, stats.caller_errors), (4, 4), "{stats:?}");
    assert_eq!(stats.backend_errors(), 0, "{stats:?}");
    let report = cache.report().await;
    assert!(codes(&report).is_empty(), "{report}");
    assert!(
        report.to_string().contains(", errors 4 (4 the caller's), "),
        "{report}"
    );

    // A backend failure still counts as one.
    let faults = Arc::new(FaultInjecting::new(MemoryBackend::new(), down()));
    let cache = Cache::new(faults);
    let err = cache.set(&key(1), &1).await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
    let stats = cache.stats();
    assert_eq!((stats.errors, stats.caller_errors), (1, 0), "{stats:?}");
    assert_eq!(stats.backend_errors(), 1, "{stats:?}");
    let report = cache.report().await;
    assert_eq!(codes(&report), ["high_error_rate"], "{report}");
    let message = &report.advice[0].message;
    assert!(
        message.starts_with("1 backend failures in 1 operations (100.0%): 1 errors returned;"),
        "{message}"
    );
}

/// Each of the caller's mistakes that a `Cache` checks itself (a category,
/// a pattern, a tag, a call after `close`) is counted once, as the
/// caller's; a backend's own `Closed` is the backend's failure.
#[tokio::test]
async fn every_callers_mistake_is_counted_once_as_the_callers() {
    use cache_core::{ErrorKind, GetOrSetOptions, WriteOptions};

    let cache = Cache::new(Arc::new(MemoryBackend::new()));
    let kinds = [
        cache.invalidate_category("no:colons").await.unwrap_err(),
        cache
            .invalidate_matching("no:colons", "*")
            .await
            .unwrap_err(),
        cache.invalidate_matching("user", "").await.unwrap_err(),
        cache.invalidate_tag("").await.unwrap_err(),
        cache
            .set_opts(&key(1), &1, WriteOptions::default().with_tags([""]))
            .await
            .unwrap_err(),
        cache
            .set_many_opts(&[(key(2), 2)], WriteOptions::default().with_tags([""]))
            .await
            .unwrap_err(),
        cache
            .get_or_set_opts(
                &key(3),
                GetOrSetOptions::default().with_tags([""]),
                || async { Ok::<_, std::io::Error>(3) },
            )
            .await
            .unwrap_err(),
    ]
    .map(|err| err.kind());
    assert_eq!(kinds, [ErrorKind::InvalidKey; 7]);
    let stats = cache.stats();
    assert_eq!((stats.errors, stats.caller_errors), (7, 7), "{stats:?}");

    cache.close().await.unwrap();
    for err in [
        cache.invalidate_matching("user", "*").await.unwrap_err(),
        cache.get::<u32>(&key(1)).await.unwrap_err(),
        // Its tags' epochs are read first.
        cache
            .set_many_opts(&[(key(2), 2)], WriteOptions::default().with_tags(["t"]))
            .await
            .unwrap_err(),
    ] {
        assert_eq!(err.kind(), ErrorKind::Closed, "{err}");
    }
    let stats = cache.stats();
    assert_eq!((stats.errors, stats.caller_errors), (10, 10), "{stats:?}");

    // A backend that answers `Closed` (closed under a live cache) fails.
    let faults = Arc::new(FaultInjecting::new(
        MemoryBackend::new(),
        down().with_error_kind(ErrorKind::Closed),
    ));
    let cache = Cache::new(faults);
    let err = cache.get::<u32>(&key(1)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Closed, "{err}");
    let stats = cache.stats();
    assert_eq!((stats.errors, stats.caller_errors), (1, 0), "{stats:?}");
}

/// A backend failure while `get_or_set` reads the loaded value's tags is
/// counted once (it was counted where it happened and again by the caller).
#[tokio::test]
async fn a_tag_read_failure_in_get_or_set_is_counted_once() {
    use cache_core::GetOrSetOptions;

    let faults = Arc::new(FaultInjecting::new(
        MemoryBackend::new(),
        FaultConfig::none(),
    ));
    let cache = Cache::new(Arc::clone(&faults) as Arc<dyn CacheBackend>);
    let during_load = Arc::clone(&faults);
    let value = cache
        .get_or_set_opts(
            &key(1),
            GetOrSetOptions::default().with_tags(["t"]),
            || async move {
                during_load.set_config(down());
                Ok::<_, std::io::Error>(1)
            },
        )
        .await
        .unwrap();
    assert_eq!(value, 1, "the loaded value is returned, unstored");
    assert_eq!(faults.injected(), 1);
    let stats = cache.stats();
    assert_eq!((stats.errors, stats.caller_errors), (1, 0), "{stats:?}");
}
