//! Failover on a real Redis Cluster: under concurrent load, a primary is
//! killed (`SIGKILL`); once its replica is promoted, calls succeed again
//! through the same backend, without rebuilding it. Prints the observed
//! unavailability window.
#![cfg(feature = "cluster")]

mod load;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cache_core::{CacheBackend, HealthStatus, SetOptions};
use cache_redis::{RedisBackend, RedisConfig};
use cache_testkit::redis_cluster::RedisCluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_failover_under_load_recovers_without_rebuilding_the_backend() {
    let cluster = Arc::new(RedisCluster::new());
    let config = RedisConfig::from_url(&cluster.url())
        .unwrap()
        .with_response_timeout(Duration::from_millis(500))
        .with_connect_timeout(Duration::from_millis(500));
    let backend: Arc<dyn CacheBackend> = Arc::new(RedisBackend::connect(config).await.unwrap());

    let keys: Vec<String> = (0..200).map(|i| format!("fo:k{i}")).collect();
    for key in &keys {
        backend
            .set(key, Bytes::from_static(b"0"), SetOptions::default())
            .await
            .unwrap();
    }
    let victim = cluster.primaries()[0];
    let replica = cluster
        .replica_of(victim)
        .expect("the victim has a replica");
    let on_victim: BTreeSet<String> = String::from_utf8(cluster.cli(victim, &["--scan"]))
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    println!(
        "victim primary {victim} (replica {replica}) holds {} of the 200 keys",
        on_victim.len()
    );
    assert!(!on_victim.is_empty());

    let load = load::Load::start(Arc::clone(&backend), keys.clone(), 8);
    tokio::time::sleep(Duration::from_millis(1000)).await;

    let killed_at = Instant::now();
    cluster.kill(victim);
    let waiter = Arc::clone(&cluster);
    let promoted_after = tokio::task::spawn_blocking(move || {
        waiter.wait_for_failover(victim, Duration::from_secs(30))
    })
    .await
    .unwrap();
    println!("the cluster reports the failover done {promoted_after:?} after the kill");
    assert!(
        cluster.primaries().contains(&replica),
        "the replica was promoted"
    );

    // Keep the load on until every caller has seen success for a while.
    let report = load
        .stop_after_stable(killed_at, Duration::from_secs(2), Duration::from_secs(30))
        .await;
    report.print("cluster", &on_victim);
    assert!(report.ok_after_kill > 0, "calls must succeed again");
    assert!(
        report.window_all() < Duration::from_secs(20),
        "unavailable for {:?}",
        report.window_all()
    );

    // The same backend: every key is readable and writable, batches and
    // pattern deletes reach the promoted primary.
    for key in &keys {
        backend
            .set(key, Bytes::from_static(b"after"), SetOptions::default())
            .await
            .unwrap();
    }
    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    let values = backend.get_many(&refs).await.unwrap();
    assert!(values.iter().all(|v| v.as_deref() == Some(&b"after"[..])));
    let health = backend.health().await.unwrap();
    println!("health after the failover: {health:#?}");
    assert_eq!(health.details["cluster_state"], "ok");
    assert_eq!(
        health.status,
        HealthStatus::Degraded,
        "a failed node is still known"
    );
    assert_eq!(backend.delete_matching("fo:k*").await.unwrap(), 200);
}
