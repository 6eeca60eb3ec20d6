//! Failover with Sentinel: under concurrent load, the primary is killed
//! (`SIGKILL`); once the Sentinels promote the replica, calls succeed again
//! through the same backend, which moved to the new primary by itself.
//! Prints the observed unavailability window.
#![cfg(feature = "sentinel")]

mod load;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cache_core::{CacheBackend, SetOptions};
use cache_redis::{RedisBackend, RedisConfig};
use cache_testkit::redis_sentinel::RedisSentinel;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_failover_under_load_follows_the_new_primary() {
    let deployment = Arc::new(RedisSentinel::new());
    let config = RedisConfig::from_url(&deployment.url())
        .unwrap()
        .with_response_timeout(Duration::from_millis(500))
        .with_connect_timeout(Duration::from_millis(500));
    let redis = RedisBackend::connect(config).await.unwrap();
    let backend: Arc<dyn CacheBackend> = Arc::new(redis.clone());
    let old = deployment.primary();
    let health = backend.health().await.unwrap();
    assert_eq!(health.details["mode"], "sentinel");
    assert_eq!(health.details["primary"], format!("127.0.0.1:{old}"));

    let keys: Vec<String> = (0..100).map(|i| format!("sfo:k{i}")).collect();
    for key in &keys {
        backend
            .set(key, Bytes::from_static(b"0"), SetOptions::default())
            .await
            .unwrap();
    }
    let load = load::Load::start(Arc::clone(&backend), keys.clone(), 8);
    tokio::time::sleep(Duration::from_millis(1000)).await;

    let killed_at = Instant::now();
    deployment.kill(old);
    let waiter = Arc::clone(&deployment);
    let (new, promoted_after) =
        tokio::task::spawn_blocking(move || waiter.wait_for_failover(old, Duration::from_secs(30)))
            .await
            .unwrap();
    println!("the Sentinels name {new} as primary {promoted_after:?} after the kill of {old}");

    let report = load
        .stop_after_stable(killed_at, Duration::from_secs(2), Duration::from_secs(30))
        .await;
    let all: BTreeSet<String> = keys.iter().cloned().collect();
    report.print("sentinel", &all);
    assert!(report.ok_after_kill > 0, "calls must succeed again");
    assert!(
        report.window_all() < Duration::from_secs(20),
        "unavailable for {:?}",
        report.window_all()
    );

    // The same backend, on the new primary.
    let health = backend.health().await.unwrap();
    assert_eq!(health.details["primary"], format!("127.0.0.1:{new}"));
    for key in &keys {
        backend
            .set(key, Bytes::from_static(b"after"), SetOptions::default())
            .await
            .unwrap();
    }
    assert_eq!(deployment.cli(new, &["GET", "sfo:k7"]), b"after");
    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    assert!(backend
        .get_many(&refs)
        .await
        .unwrap()
        .iter()
        .all(|v| v.as_deref() == Some(&b"after"[..])));
    assert_eq!(backend.delete_matching("sfo:k*").await.unwrap(), 100);
}
