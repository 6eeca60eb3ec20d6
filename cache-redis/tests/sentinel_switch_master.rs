//! The Sentinel backend follows a failover from the Sentinels'
//! `+switch-master` announcement, not only from failed calls: a manual
//! `SENTINEL FAILOVER` demotes the primary without killing it, so the
//! backend's connection to it stays up and its `PING`s keep succeeding;
//! the backend must still move to the new primary while making only calls
//! that succeed.
//!
//! How it could fail: without the `+switch-master` watcher nothing tells
//! the backend, which stays on the demoted node (now a replica) until a
//! write fails with `READONLY`; the test never writes before the move, so
//! it waits in vain (a 60 s guard stops it; nothing asserts on timing).
#![cfg(feature = "sentinel")]

use std::time::{Duration, Instant};

use bytes::Bytes;
use cache_core::{CacheBackend, SetOptions};
use cache_redis::{RedisBackend, RedisConfig};
use cache_testkit::redis_sentinel::{RedisSentinel, MASTER_NAME};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_switch_master_moves_the_backend_without_a_failed_call() {
    let deployment = RedisSentinel::new();
    let backend = RedisBackend::connect(RedisConfig::from_url(&deployment.url()).unwrap())
        .await
        .unwrap();
    let old = deployment.primary();
    let primary = |health: &cache_core::Health| health.details["primary"].to_string();
    assert_eq!(
        primary(&backend.health().await.unwrap()),
        format!("127.0.0.1:{old}")
    );

    let sentinel = deployment.sentinel_ports()[0];
    assert_eq!(
        deployment.cli(sentinel, &["SENTINEL", "FAILOVER", MASTER_NAME]),
        b"OK"
    );
    let started = Instant::now();
    let new = loop {
        let now = deployment.primary();
        if now != old {
            break now;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "no failover");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    println!("the Sentinels name {new} after {:?}", started.elapsed());

    // Only reads that succeed on the demoted node too: no failed call tells
    // the backend anything.
    loop {
        let health = backend.health().await.unwrap();
        if primary(&health) == format!("127.0.0.1:{new}") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the backend stayed on {}",
            primary(&health)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("the backend moved after {:?}", started.elapsed());
    backend
        .set("ssm:k", Bytes::from_static(b"v"), SetOptions::default())
        .await
        .unwrap();
    assert_eq!(deployment.cli(new, &["GET", "ssm:k"]), b"v");
}
