//! The memory backend's own limits: bounds, expiry, the sweeper, eviction.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cache_core::{CacheBackend, SetOptions};
use cache_memory::{MemoryBackend, MemoryConfig, MockClock};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

async fn live_keys(backend: &MemoryBackend) -> usize {
    backend.scan("*").await.unwrap().len()
}

#[test]
fn max_entries_is_respected_under_concurrent_inserts() {
    rt().block_on(async {
        let backend = Arc::new(MemoryBackend::with_config(
            MemoryConfig::default().with_max_entries(1000),
        ));
        let mut tasks = Vec::new();
        for t in 0..8 {
            let backend = Arc::clone(&backend);
            tasks.push(tokio::spawn(async move {
                for i in 0..5000 {
                    let key = format!("t{t}:k{i}");
                    backend
                        .set(&key, Bytes::from_static(b"value"), SetOptions::default())
                        .await
                        .unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let stats = backend.stats();
        assert!(stats.entries <= 1000, "{stats:?}");
        assert_eq!(live_keys(&backend).await, stats.entries);
        assert_eq!(stats.evictions, 40_000 - stats.entries as u64);
    });
}

#[test]
fn max_bytes_is_respected_under_concurrent_inserts() {
    rt().block_on(async {
        let backend = Arc::new(MemoryBackend::with_config(
            MemoryConfig::default().with_max_bytes(100_000),
        ));
        let mut tasks = Vec::new();
        for t in 0..4 {
            let backend = Arc::clone(&backend);
            tasks.push(tokio::spawn(async move {
                for i in 0..2000 {
                    let value = Bytes::from(vec![b'x'; 100 + (i % 900)]);
                    backend
                        .set(&format!("t{t}:{i}"), value, SetOptions::default())
                        .await
                        .unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let stats = backend.stats();
        assert!(stats.bytes <= 100_000, "{stats:?}");
        assert!(stats.evictions > 0);
        // The byte count matches what is really stored.
        let mut real = 0;
        for key in backend.scan("*").await.unwrap() {
            real += key.len() + backend.get(&key).await.unwrap().unwrap().len();
        }
        assert_eq!(real, stats.bytes);
    });
}

#[test]
fn value_larger_than_max_bytes_is_refused() {
    rt().block_on(async {
        let backend = MemoryBackend::with_config(MemoryConfig::default().with_max_bytes(1000));
        let err = backend
            .set("k", Bytes::from(vec![0; 2000]), SetOptions::default())
            .await
            .unwrap_err();
        assert_eq!(err.kind(), cache_core::ErrorKind::InvalidValue);
    });
}

#[test]
fn key_with_50ms_ttl_is_gone_at_60ms() {
    rt().block_on(async {
        let backend = MemoryBackend::new();
        let opts = SetOptions::ttl(Some(Duration::from_millis(50)));
        backend
            .set("k", Bytes::from_static(b"v"), opts)
            .await
            .unwrap();
        let written = std::time::Instant::now();
        assert!(backend.get("k").await.unwrap().is_some());
        tokio::time::sleep(Duration::from_millis(60).saturating_sub(written.elapsed())).await;
        assert!(backend.get("k").await.unwrap().is_none());
    });
}

#[test]
fn expiry_follows_the_clock_to_the_nanosecond() {
    rt().block_on(async {
        let clock = MockClock::new();
        let backend = MemoryBackend::with_clock(
            MemoryConfig::default().with_sweep_interval(Duration::ZERO),
            Arc::new(clock.clone()),
        );
        let opts = SetOptions::ttl(Some(Duration::from_millis(50)));
        backend
            .set("k", Bytes::from_static(b"v"), opts)
            .await
            .unwrap();
        clock.advance(Duration::from_millis(50) - Duration::from_nanos(1));
        assert!(backend.get("k").await.unwrap().is_some());
        clock.advance(Duration::from_nanos(1));
        assert!(backend.get("k").await.unwrap().is_none());
        assert_eq!(backend.stats().expirations, 1);
        assert_eq!(backend.stats().entries, 0);
    });
}

#[test]
fn sweeper_removes_expired_entries_without_reads() {
    rt().block_on(async {
        let backend = MemoryBackend::with_config(
            MemoryConfig::default().with_sweep_interval(Duration::from_millis(20)),
        );
        let opts = SetOptions::ttl(Some(Duration::from_millis(30)));
        for i in 0..500 {
            backend
                .set(&format!("k{i}"), Bytes::from_static(b"v"), opts)
                .await
                .unwrap();
        }
        backend
            .set("forever", Bytes::from_static(b"v"), SetOptions::default())
            .await
            .unwrap();
        assert_eq!(backend.stats().entries, 501);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while backend.stats().entries > 1 && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let stats = backend.stats();
        assert_eq!(stats.entries, 1, "{stats:?}");
        assert_eq!(stats.expirations, 500);
    });
}

#[test]
fn sweeper_stops_when_the_backend_is_dropped_or_closed() {
    let runtime = rt();
    runtime.block_on(async {
        let metrics = tokio::runtime::Handle::current().metrics();
        let backend = MemoryBackend::with_config(
            MemoryConfig::default().with_sweep_interval(Duration::from_millis(5)),
        );
        assert_eq!(metrics.num_alive_tasks(), 1, "the sweeper runs");
        drop(backend);
        wait_for_no_tasks(&metrics).await;

        let backend = MemoryBackend::with_config(
            MemoryConfig::default().with_sweep_interval(Duration::from_millis(5)),
        );
        assert_eq!(metrics.num_alive_tasks(), 1);
        backend.close().await.unwrap();
        wait_for_no_tasks(&metrics).await;
        let err = backend.get("k").await.unwrap_err();
        assert_eq!(err.kind(), cache_core::ErrorKind::Closed);
    });
}

async fn wait_for_no_tasks(metrics: &tokio::runtime::RuntimeMetrics) {
    for _ in 0..200 {
        if metrics.num_alive_tasks() == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("the sweeper task is still alive");
}

#[test]
fn frequently_read_keys_survive_a_scan() {
    rt().block_on(async {
        let backend = MemoryBackend::with_config(MemoryConfig::default().with_max_entries(1000));
        let opts = SetOptions::default();
        for i in 0..200 {
            backend
                .set(&format!("hot{i}"), Bytes::from_static(b"v"), opts)
                .await
                .unwrap();
        }
        // Read the hot keys while a scan of one-off keys streams through.
        for i in 0..20_000 {
            backend
                .set(&format!("scan{i}"), Bytes::from_static(b"v"), opts)
                .await
                .unwrap();
            if i % 100 == 0 {
                for h in 0..200 {
                    backend.get(&format!("hot{h}")).await.unwrap();
                }
            }
        }
        let mut alive = 0;
        for h in 0..200 {
            alive += usize::from(backend.get(&format!("hot{h}")).await.unwrap().is_some());
        }
        assert!(
            alive >= 190,
            "only {alive} of 200 hot keys survived the scan"
        );
        assert!(backend.stats().entries <= 1000);
    });
}

#[test]
fn works_without_a_runtime() {
    let backend = MemoryBackend::new();
    backend
        .set_sync("k", Bytes::from_static(b"v"), SetOptions::default())
        .unwrap();
    assert_eq!(backend.get_sync("k").unwrap().as_deref(), Some(&b"v"[..]));
}

/// A `set` that returned `Ok` is readable: with a tiny `max_entries`, the
/// eviction that makes room for a new key never picks that key.
#[test]
fn a_write_never_evicts_the_key_it_wrote() {
    rt().block_on(async {
        for max in 1..=33 {
            let backend = MemoryBackend::with_config(MemoryConfig::default().with_max_entries(max));
            let v = Bytes::from_static(b"v");
            for i in 0..3 * max {
                let key = format!("k{i}");
                backend
                    .set(&key, v.clone(), SetOptions::default())
                    .await
                    .unwrap();
                // Read the older keys so they look hot to S3-FIFO.
                for j in i.saturating_sub(max)..i {
                    backend.get(&format!("k{j}")).await.unwrap();
                }
                assert_eq!(
                    backend.get(&key).await.unwrap(),
                    Some(v.clone()),
                    "max_entries={max}: {key} was evicted by its own write"
                );
                assert!(backend.stats().entries <= max);
            }
        }
        // The example, exactly.
        let backend = MemoryBackend::with_config(MemoryConfig::default().with_max_entries(1));
        let v = Bytes::from_static(b"v");
        backend
            .set("k0", v.clone(), SetOptions::default())
            .await
            .unwrap();
        backend.get("k0").await.unwrap();
        backend
            .set("k1", v.clone(), SetOptions::default())
            .await
            .unwrap();
        assert_eq!(backend.get("k1").await.unwrap(), Some(v));
        assert_eq!(backend.get("k0").await.unwrap(), None);
    });
}

/// A value that grows in place makes room by evicting others, not itself.
#[test]
fn growing_a_value_never_evicts_it() {
    rt().block_on(async {
        let backend = MemoryBackend::with_config(MemoryConfig::default().with_max_bytes(300));
        for i in 0..4 {
            let key = format!("k{i}");
            backend
                .set(&key, Bytes::from(vec![1u8; 40]), SetOptions::default())
                .await
                .unwrap();
        }
        backend
            .set("k0", Bytes::from(vec![2u8; 200]), SetOptions::default())
            .await
            .unwrap();
        assert_eq!(
            backend.get("k0").await.unwrap(),
            Some(Bytes::from(vec![2u8; 200]))
        );
        assert!(backend.stats().bytes <= 300, "{:?}", backend.stats());
    });
}

/// The sweeper's work is what has expired: with a mock clock, a sweep
/// removes exactly the expired entries, including keys whose TTL was
/// shortened, and keeps keys whose TTL was lengthened or removed.
#[test]
fn sweep_removes_exactly_what_expired() {
    rt().block_on(async {
        let clock = Arc::new(MockClock::new());
        let backend = MemoryBackend::with_clock(
            MemoryConfig::default().with_sweep_interval(Duration::ZERO),
            clock.clone(),
        );
        let v = Bytes::from_static(b"v");
        let ttl = |ms| SetOptions::ttl(Some(Duration::from_millis(ms)));
        for i in 0..1000 {
            backend
                .set(&format!("short{i}"), v.clone(), ttl(100))
                .await
                .unwrap();
        }
        for i in 0..1000 {
            backend
                .set(&format!("long{i}"), v.clone(), ttl(60_000))
                .await
                .unwrap();
        }
        backend
            .set("lengthened", v.clone(), ttl(100))
            .await
            .unwrap();
        backend
            .set("lengthened", v.clone(), ttl(60_000))
            .await
            .unwrap();
        backend.set("persisted", v.clone(), ttl(100)).await.unwrap();
        backend.expire("persisted", None).await.unwrap();
        backend
            .set("shortened", v.clone(), ttl(60_000))
            .await
            .unwrap();
        backend
            .expire("shortened", Some(Duration::from_millis(100)))
            .await
            .unwrap();
        backend
            .set("counter", v.clone(), SetOptions::default())
            .await
            .unwrap();
        backend.delete("counter").await.unwrap();
        backend
            .incr("counter", 1, Some(Duration::from_millis(100)))
            .await
            .unwrap();

        assert_eq!(backend.sweep(), 0, "nothing has expired yet");
        clock.advance(Duration::from_secs(1));
        assert_eq!(backend.sweep(), 1002, "short*, shortened and counter");
        assert_eq!(backend.stats().entries, 1002);
        assert!(backend.exists("lengthened").await.unwrap());
        assert!(backend.exists("persisted").await.unwrap());
        assert_eq!(backend.sweep(), 0, "a second sweep finds nothing");
        clock.advance(Duration::from_secs(60));
        assert_eq!(backend.sweep(), 1001, "long* and lengthened");
        assert_eq!(backend.stats().entries, 1);
        assert_eq!(backend.stats().expirations, 2003);
    });
}

/// `sweep_interval_ms = 0` turns the sweeper off: no task is spawned.
#[test]
fn a_zero_sweep_interval_starts_no_sweeper() {
    rt().block_on(async {
        let metrics = tokio::runtime::Handle::current().metrics();
        let config = MemoryConfig::default().with_sweep_interval(Duration::ZERO);
        assert_eq!(config.sweep_interval_ms, 0);
        let backend = MemoryBackend::with_config(config);
        assert_eq!(metrics.num_alive_tasks(), 0);
        let config = MemoryConfig::default().with_sweep_interval(Duration::from_millis(1));
        assert_eq!(config.sweep_interval_ms, 1);
        let second = MemoryBackend::with_config(config);
        assert_eq!(metrics.num_alive_tasks(), 1);
        drop((backend, second));
    });
}

/// The default value limit is 64 MiB, `max_bytes` and `max_value_size`
/// lower it, and only a bounded backend evicts.
#[test]
fn the_default_value_limit_is_64_mib() {
    assert_eq!(cache_memory::DEFAULT_MAX_VALUE_SIZE, 67_108_864);
    let config = MemoryConfig::default();
    assert_eq!(config.max_value_size, 67_108_864);
    assert_eq!((config.max_entries, config.max_bytes), (None, None));
    assert_eq!(config.sweep_interval_ms, 1000);
    let backend = MemoryBackend::new();
    assert_eq!(backend.capabilities().max_value_size, 67_108_864);
    // Only a bounded backend evicts.
    assert!(!backend.capabilities().evicts);
    let by_entries = MemoryBackend::with_config(MemoryConfig::default().with_max_entries(9));
    assert!(by_entries.capabilities().evicts);
    let small = MemoryBackend::with_config(MemoryConfig::default().with_max_bytes(4096));
    assert_eq!(small.capabilities().max_value_size, 4096);
    let tiny = MemoryBackend::with_config(MemoryConfig::default().with_max_value_size(10));
    assert_eq!(tiny.capabilities().max_value_size, 10);
    let ok = tiny.set_sync("k", Bytes::from(vec![0; 10]), SetOptions::default());
    assert!(ok.unwrap());
    let err = tiny
        .set_sync("k", Bytes::from(vec![0; 11]), SetOptions::default())
        .unwrap_err();
    assert_eq!(err.kind(), cache_core::ErrorKind::InvalidValue);
}
