//! Metrics: the documented names, with the right counts, through a real
//! `metrics` recorder (feature `metrics`). Alone in its test binary: the
//! recorder is global.
#![cfg(feature = "metrics")]

use std::sync::Arc;

use cache_core::layers::{Metered, Tiered, TieredConfig};
use cache_core::{Cache, CacheBackend, CacheKey};
use cache_memory::MemoryBackend;
use cache_testkit::{FaultConfig, FaultInjecting};

fn key(id: u32) -> CacheKey {
    CacheKey::new("user", id).unwrap()
}

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// A recorder that keeps every counter and histogram by name and labels.
#[derive(Default)]
struct Capture {
    counters: Mutex<BTreeMap<String, Arc<AtomicU64>>>,
    histograms: Mutex<BTreeMap<String, Arc<AtomicU64>>>,
}

struct Count(Arc<AtomicU64>);
impl metrics::CounterFn for Count {
    fn increment(&self, value: u64) {
        self.0.fetch_add(value, Ordering::SeqCst);
    }
    fn absolute(&self, value: u64) {
        self.0.store(value, Ordering::SeqCst);
    }
}
impl metrics::HistogramFn for Count {
    fn record(&self, _value: f64) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

fn render(key: &Key) -> String {
    let mut labels: Vec<String> = key
        .labels()
        .map(|l| format!("{}={}", l.key(), l.value()))
        .collect();
    labels.sort();
    format!("{}{{{}}}", key.name(), labels.join(","))
}

impl Recorder for Capture {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        let cell = Arc::clone(
            self.counters
                .lock()
                .unwrap()
                .entry(render(key))
                .or_default(),
        );
        Counter::from_arc(Arc::new(Count(cell)))
    }
    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }
    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        let cell = Arc::clone(
            self.histograms
                .lock()
                .unwrap()
                .entry(render(key))
                .or_default(),
        );
        Histogram::from_arc(Arc::new(Count(cell)))
    }
}

#[tokio::test]
async fn metrics_documented_names_have_the_right_counts() {
    let capture: &'static Capture = Box::leak(Box::default());
    metrics::set_global_recorder(capture).unwrap();

    let backend = Metered::new(MemoryBackend::new());
    let cache = Cache::builder(Arc::new(backend) as Arc<dyn CacheBackend>)
        .prefix("shop")
        .generation_refresh(std::time::Duration::from_secs(3600))
        .build()
        .unwrap();
    // The first call reads the category's generation (a get miss) and stores
    // generation 0 (a set).
    cache.set(&key(1), &1).await.unwrap();
    cache.set(&key(2), &2).await.unwrap();
    assert_eq!(cache.get::<u32>(&key(1)).await.unwrap(), Some(1));
    assert_eq!(cache.get::<u32>(&key(9)).await.unwrap(), None);
    let v: u32 = cache
        .get_or_set(&key(3), || async { Ok::<_, std::io::Error>(3) })
        .await
        .unwrap();
    assert_eq!(v, 3);
    let err = cache
        .get_or_set(&key(4), || async {
            Err::<u32, _>(std::io::Error::other("down"))
        })
        .await;
    assert!(err.is_err());
    assert!(cache.delete(&key(1)).await.unwrap());
    // The caller's mistake: a full key over the limit, refused before any
    // backend call.
    let long = CacheKey::new("user", "i".repeat(cache_core::MAX_KEY_LEN)).unwrap();
    assert!(cache.set(&long, &1).await.is_err());

    let counters: BTreeMap<String, u64> = capture
        .counters
        .lock()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.load(Ordering::SeqCst)))
        .collect();
    let get = |name: &str| counters.get(name).copied().unwrap_or(0);
    // Cache level, label `prefix`.
    assert_eq!(get("cache_hits_total{prefix=shop}"), 1, "{counters:#?}");
    assert_eq!(get("cache_misses_total{prefix=shop}"), 3);
    assert_eq!(get("cache_sets_total{prefix=shop}"), 3);
    assert_eq!(get("cache_deletes_total{prefix=shop}"), 1);
    assert_eq!(get("cache_loader_calls_total{prefix=shop}"), 2);
    assert_eq!(get("cache_loader_errors_total{prefix=shop}"), 1);
    assert_eq!(get("cache_errors_total{prefix=shop}"), 2);
    assert_eq!(get("cache_caller_errors_total{prefix=shop}"), 1);
    // Backend level, labels `backend`, `op`, `outcome`.
    // gets: generation read (miss), get 1 (hit), get 9 (miss), get_or_set 3
    // (miss + leader re-check miss), get_or_set 4 (miss + re-check miss).
    assert_eq!(
        get("cache_backend_calls_total{backend=memory,op=get,outcome=hit}"),
        1,
        "{counters:#?}"
    );
    assert_eq!(
        get("cache_backend_calls_total{backend=memory,op=get,outcome=miss}"),
        6
    );
    assert_eq!(
        get("cache_backend_calls_total{backend=memory,op=set,outcome=ok}"),
        4
    );
    assert_eq!(
        get("cache_backend_calls_total{backend=memory,op=delete,outcome=ok}"),
        1
    );
    {
        let histograms = capture.histograms.lock().unwrap();
        let timed = histograms["cache_backend_duration_seconds{backend=memory,op=get}"]
            .load(Ordering::SeqCst);
        assert_eq!(timed, 7);
        // No label carries a key.
        assert!(counters
            .keys()
            .chain(histograms.keys())
            .all(|k| !k.contains("user")));
    }

    // Errors by kind.
    let failing = Metered::new(FaultInjecting::new(
        MemoryBackend::new(),
        FaultConfig::none().with_fail_every(1),
    ));
    assert!(failing.get("k").await.is_err());
    {
        let counters = capture.counters.lock().unwrap();
        assert_eq!(
            counters["cache_backend_errors_total{backend=memory,kind=connection,op=get}"]
                .load(Ordering::SeqCst),
            1
        );
        assert_eq!(
            counters["cache_backend_calls_total{backend=memory,op=get,outcome=error}"]
                .load(Ordering::SeqCst),
            1
        );
    }

    // Tier hits, label `tier`: one read from L2 (copied into L1), then two
    // from L1.
    let l2 = Arc::new(MemoryBackend::new());
    l2.set("t", bytes::Bytes::from_static(b"1"), Default::default())
        .await
        .unwrap();
    let tiered = Tiered::new(Arc::new(MemoryBackend::new()), l2, TieredConfig::default());
    for _ in 0..3 {
        assert!(tiered.get("t").await.unwrap().is_some());
    }
    let counters = capture.counters.lock().unwrap();
    let tier =
        |t: &str| counters[&format!("cache_tier_hits_total{{tier={t}}}")].load(Ordering::SeqCst);
    assert_eq!((tier("l1"), tier("l2")), (2, 1), "{counters:#?}");
}
