//! Chaos: 64 tasks hammer a fail-open cache on a real redis-server for
//! about 10 s while the server is stopped, restarted, paused (SIGSTOP) and
//! resumed. No error reaches a caller, nothing panics, every value returned
//! is one written for that key, the breaker opens and closes, and Redis
//! serves hits again shortly after recovery.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cache_core::layers::{BreakerConfig, BreakerState, FailOpen, Timeout};
use cache_core::{Cache, CacheBackend, CacheKey, Ttl};
use cache_redis::{RedisBackend, RedisConfig};
use cache_testkit::redis_server::RedisServer;
use serde::{Deserialize, Serialize};

const TASKS: usize = 64;
const KEYS: u64 = 200;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Value {
    key: u64,
    version: u64,
}

type Stack = FailOpen<Timeout<RedisBackend>>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_fail_open_survives_stop_restart_pause_resume() {
    let server = RedisServer::new();
    let config = RedisConfig::from_url(server.url())
        .unwrap()
        .with_response_timeout(Duration::from_millis(300))
        .with_connect_timeout(Duration::from_millis(300));
    let redis = RedisBackend::connect(config).await.unwrap();
    let stack: Arc<Stack> = Arc::new(FailOpen::new(
        Timeout::new(redis, Duration::from_millis(300)),
        BreakerConfig::default()
            .with_failure_threshold(5)
            .with_cool_down(Duration::from_millis(500)),
    ));
    let cache = Cache::builder(Arc::clone(&stack) as Arc<dyn CacheBackend>)
        .prefix("chaos")
        .build()
        .unwrap();

    // Every version ever written per key: what a read may legally return.
    let written: Arc<Mutex<HashMap<u64, u64>>> = Arc::default();
    let versions = Arc::new(AtomicU64::new(1));
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicU64::new(0));
    let hits_seen = Arc::new(AtomicU64::new(0));

    let mut workers = Vec::new();
    for t in 0..TASKS {
        let (cache, written, versions, stop, reads, hits_seen) = (
            cache.clone(),
            Arc::clone(&written),
            Arc::clone(&versions),
            Arc::clone(&stop),
            Arc::clone(&reads),
            Arc::clone(&hits_seen),
        );
        workers.push(tokio::spawn(async move {
            let mut rng = fastrand::Rng::with_seed(t as u64);
            while !stop.load(Ordering::Relaxed) {
                let id = rng.u64(0..KEYS);
                let key = CacheKey::new("item", id).unwrap();
                match rng.u8(0..10) {
                    0..=2 => {
                        let version = record(&written, &versions, id);
                        cache
                            .set_with_ttl(&key, &Value { key: id, version }, Ttl::secs(60))
                            .await
                            .expect("fail-open: a write never errors");
                    }
                    3..=5 => {
                        let version = record(&written, &versions, id);
                        let value = cache
                            .get_or_set(&key, move || async move {
                                Ok::<_, std::io::Error>(Value { key: id, version })
                            })
                            .await
                            .expect("fail-open: get_or_set never errors");
                        check(&written, id, &value);
                    }
                    _ => {
                        reads.fetch_add(1, Ordering::Relaxed);
                        let got = cache
                            .get::<Value>(&key)
                            .await
                            .expect("fail-open: a read never errors");
                        if let Some(value) = got {
                            hits_seen.fetch_add(1, Ordering::Relaxed);
                            check(&written, id, &value);
                        }
                    }
                }
            }
        }));
    }

    let started = Instant::now();
    let at = |secs: f64| tokio::time::sleep_until((started + Duration::from_secs_f64(secs)).into());
    at(1.5).await;
    server.stop();
    at(3.5).await;
    server.start();
    at(5.5).await;
    server.pause();
    at(7.0).await;
    server.resume();
    let resumed = Instant::now();
    // Redis serves hits again: a value written now is read back from it.
    let probe = CacheKey::new("probe", 1).unwrap();
    let recovered_after = loop {
        let _ = cache
            .set_with_ttl(&probe, &Value { key: 0, version: 0 }, Ttl::secs(60))
            .await;
        if cache.get::<Value>(&probe).await.unwrap().is_some() {
            break resumed.elapsed();
        }
        assert!(
            resumed.elapsed() < Duration::from_secs(15),
            "no hits from Redis after recovery"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    at(10.0).await;
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.await.expect("no worker panicked");
    }

    let breaker = stack.stats();
    let stats = cache.stats();
    println!(
        "chaos: {} ops; reads {} (hits {}); breaker opened {} closed {}; failed reads {} skipped writes {}; \
         cache errors {}",
        versions.load(Ordering::SeqCst) + reads.load(Ordering::Relaxed),
        reads.load(Ordering::Relaxed),
        hits_seen.load(Ordering::Relaxed),
        breaker.breaker_opened,
        breaker.breaker_closed,
        breaker.failed_reads,
        breaker.skipped_writes,
        stats.errors,
    );
    println!("chaos: recovered after {recovered_after:?}");
    assert_eq!(stats.errors, 0, "no error reached the cache's callers");
    assert!(
        breaker.breaker_opened >= 1,
        "the breaker opened: {breaker:?}"
    );
    assert!(
        breaker.breaker_closed >= 1,
        "the breaker closed again: {breaker:?}"
    );
    assert_eq!(breaker.state, BreakerState::Closed);
    assert!(hits_seen.load(Ordering::Relaxed) > 0);
}

/// Takes the next version and records it as written for `id` (before the
/// write, so a read can never see a version not yet recorded).
fn record(written: &Mutex<HashMap<u64, u64>>, versions: &AtomicU64, id: u64) -> u64 {
    let version = versions.fetch_add(1, Ordering::SeqCst);
    let mut written = written.lock().unwrap();
    let newest = written.entry(id).or_insert(version);
    *newest = (*newest).max(version);
    version
}

/// A value read for `id` must be for `id`, and a version written for it.
fn check(written: &Mutex<HashMap<u64, u64>>, id: u64, value: &Value) {
    assert_eq!(value.key, id, "a value of another key was returned");
    let newest = written.lock().unwrap().get(&id).copied().unwrap_or(0);
    assert!(
        value.version <= newest && value.version > 0,
        "version {} was never written for key {id} (newest {newest})",
        value.version
    );
}
