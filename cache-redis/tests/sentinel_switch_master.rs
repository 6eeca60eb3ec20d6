//! The Sentinel backend follows a failover from the Sentinels'
//! `+switch-master` announcement, not only from failed calls: a manual
//! `SENTINEL FAILOVER` demotes the primary without killing it, and the
//! backend, which makes no call at all meanwhile, must connect to the new
//! primary by itself; its first call after the failover then succeeds
//! there.
//!
//! How it could fail: without the `+switch-master` watcher nothing tells
//! the idle backend, which finds out only when its first call fails on the
//! demoted node; the test waits in vain for its connection on the new
//! primary (a 60 s guard stops it; nothing asserts on timing).
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

    // No call through the backend until it is on the new primary (the
    // Sentinels kill the demoted node's client connections, so a call there
    // would fail and start a lookup by itself): watch the new primary's
    // client list for the backend's connection (unnamed, a normal client,
    // last command the `PING` that checks a new connection).
    loop {
        let clients = String::from_utf8(deployment.cli(new, &["CLIENT", "LIST"])).unwrap();
        if clients
            .lines()
            .any(|c| c.contains(" name= ") && c.contains(" flags=N ") && c.contains(" cmd=ping "))
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the backend never connected to the new primary: {clients}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The first call after the failover already goes to the new primary.
    let health = backend.health().await.unwrap();
    assert_eq!(primary(&health), format!("127.0.0.1:{new}"));
    println!("the backend moved after {:?}", started.elapsed());
    backend
        .set("ssm:k", Bytes::from_static(b"v"), SetOptions::default())
        .await
        .unwrap();
    assert_eq!(deployment.cli(new, &["GET", "ssm:k"]), b"v");
}
