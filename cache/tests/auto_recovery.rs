//! Invalidation is never silently lost: a delete (and a pattern delete, and
//! a category bump) made while Redis is unreachable is remembered and
//! replayed when Redis answers again, so after recovery no instance reads
//! the old value, including one that never saw the delete. It fails if a
//! fail-open stack drops the invalidation (the old value comes back from
//! Redis), or if the instance that made it serves the old value meanwhile.
//!
//! Redis is frozen (SIGSTOP) rather than stopped: the fixture's restarted
//! server starts empty (no persistence), which would lose the old value
//! anyway. A frozen server, a partition or a server with persistence keeps
//! it. The breaker is opened first, so the delete is skipped rather than
//! sent (a timed-out command may still run when the server resumes).
#![cfg(all(feature = "redis", feature = "memory"))]

use std::time::{Duration, Instant};

use cache::{Cache, CacheConfig, CacheKey};
use cache_testkit::redis_server::RedisServer;

fn config(url: &str) -> CacheConfig {
    CacheConfig::from_json(&format!(
        r#"{{
            "url": "{url}",
            "prefix": "recovery",
            "l1": {{ "max_entries": 1000, "max_ttl_secs": 60 }},
            "timeout_ms": 300,
            "fail_open": {{ "failure_threshold": 1, "cool_down_ms": 300 }}
        }}"#
    ))
    .unwrap()
}

/// A read that finds Redis frozen opens the breaker (threshold 1), so the
/// next writes are skipped, not sent.
async fn outage(cache: &Cache) {
    let probe = CacheKey::new("probe", 1).unwrap();
    assert_eq!(cache.get::<String>(&probe).await.unwrap(), None);
    let health = cache.health().await.unwrap();
    assert_eq!(
        health.details.get("breaker").map(String::as_str),
        Some("open")
    );
}

/// Waits until `cache`'s fail-open breaker is closed (its health says so).
async fn recovered(cache: &Cache) -> Duration {
    let started = Instant::now();
    loop {
        let health = cache.health().await.unwrap();
        if health.details.get("breaker").map(String::as_str) == Some("closed") {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "never recovered: {health:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_made_while_redis_is_down_is_replayed_auto_recovery() {
    let server = RedisServer::new();
    let a = cache::open(&config(server.url())).await.unwrap();
    let k = CacheKey::new("user", 1).unwrap();
    let other = CacheKey::new("user", 2).unwrap();
    a.set(&k, &"v1".to_string()).await.unwrap();
    a.set(&other, &"kept".to_string()).await.unwrap();
    let v1 = server.cli(&["GET", "recovery:user:1"]);
    assert_eq!(v1, b"\"v1\"");

    server.pause();
    outage(&a).await;
    assert!(
        a.delete(&k).await.is_ok(),
        "fail-open: the delete returns Ok"
    );
    assert_eq!(
        a.get::<String>(&k).await.unwrap(),
        None,
        "the L1 copy is gone at once"
    );
    server.resume();

    let took = recovered(&a).await;
    eprintln!("recovered {took:?} after Redis came back");
    // Redis no longer holds v1, and an instance that never saw the delete
    // (and has no L1 copy) reads a miss.
    assert_eq!(server.cli(&["EXISTS", "recovery:user:1"]), b"0");
    assert_eq!(server.cli(&["GET", "recovery:user:2"]), b"\"kept\"");
    let b = cache::open(&config(server.url())).await.unwrap();
    assert_eq!(b.get::<String>(&k).await.unwrap(), None);
    assert_eq!(a.get::<String>(&k).await.unwrap(), None);
    assert_eq!(
        b.get::<String>(&other).await.unwrap().as_deref(),
        Some("kept")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pattern_delete_and_a_category_bump_made_while_redis_is_down_are_replayed_auto_recovery()
{
    let server = RedisServer::new();
    let a = cache::open(&config(server.url())).await.unwrap();
    let order = |id: &str| CacheKey::new("order", id).unwrap();
    let price = CacheKey::new("price", 1).unwrap();
    for id in ["a1", "a2", "b1"] {
        a.set(&order(id), &id.to_string()).await.unwrap();
    }
    a.set(&price, &10).await.unwrap();

    server.pause();
    outage(&a).await;
    a.invalidate_matching("order", "a*").await.unwrap();
    let bumped = a.invalidate_category("price").await.unwrap();
    assert_eq!(bumped, 1, "the bump is taken at once here");
    assert_eq!(a.get::<i32>(&price).await.unwrap(), None);
    server.resume();

    recovered(&a).await;
    // The category bump reaches Redis on this instance's next read of the
    // generation (within its refresh interval, 1 s).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(a.get::<i32>(&price).await.unwrap(), None);
    let b = cache::open(&config(server.url())).await.unwrap();
    assert_eq!(b.get::<i32>(&price).await.unwrap(), None, "b sees the bump");
    assert_eq!(b.get::<String>(&order("a1")).await.unwrap(), None);
    assert_eq!(b.get::<String>(&order("a2")).await.unwrap(), None);
    assert_eq!(
        b.get::<String>(&order("b1")).await.unwrap().as_deref(),
        Some("b1")
    );
}
