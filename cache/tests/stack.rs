//! `CacheConfig` describes a whole stack and `cache::open` builds it: two
//! instances with an L1 each, fail-open, timeouts, metrics, fail-safe and a
//! backplane, over one real redis-server.
#![cfg(all(feature = "redis", feature = "memory"))]

use std::time::{Duration, Instant};

use cache::{CacheConfig, CacheKey};
use cache_testkit::redis_server::RedisServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_stack_from_config_is_coherent_across_instances() {
    let server = RedisServer::new();
    let json = format!(
        r#"{{
            "url": "{}",
            "prefix": "stack",
            "default_ttl_secs": 300,
            "l1": {{ "max_entries": 1000, "max_ttl_secs": 60 }},
            "timeout_ms": 500,
            "fail_open": {{ "failure_threshold": 3, "cool_down_ms": 1000 }},
            "backplane": {{}},
            "fail_safe": {{ "max_stale_secs": 600, "soft_timeout_ms": 200 }},
            "metrics": true
        }}"#,
        server.url()
    );
    let config = CacheConfig::from_json(&json).unwrap();
    let a = cache::open(&config).await.unwrap();
    let b = cache::open(&config).await.unwrap();
    assert_eq!(a.backend().name(), "tiered");

    let key = CacheKey::new("price", 1).unwrap();
    a.set(&key, &10u32).await.unwrap();
    assert_eq!(b.get::<u32>(&key).await.unwrap(), Some(10)); // now in B's L1
    a.set(&key, &11u32).await.unwrap();
    let started = Instant::now();
    while b.get::<u32>(&key).await.unwrap() != Some(11) {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "B never saw the update"
        );
        tokio::task::yield_now().await;
    }

    let health = b.health().await.unwrap();
    assert_eq!(
        health.details.get("backplane").map(String::as_str),
        Some("redis")
    );
    assert_eq!(
        health.details.get("breaker").map(String::as_str),
        Some("closed")
    );
    assert!(health.details.contains_key("l1_entries"));

    // Redis goes away: fail-open keeps callers error-free.
    server.stop();
    let other = CacheKey::new("price", 2).unwrap();
    for _ in 0..10 {
        let v: u32 = b
            .get_or_set(&other, || async { Ok::<_, std::io::Error>(5) })
            .await
            .unwrap();
        assert_eq!(v, 5);
    }
    let report = b.report().await;
    assert!(
        report.advice.iter().any(|a| a.code == "breaker_open"),
        "{report}"
    );
}

#[tokio::test]
async fn backplane_needs_an_l1_and_redis() {
    let mut config = CacheConfig::from_url("memory://");
    config.backplane = Some(Default::default());
    let err = cache::open(&config).await.unwrap_err();
    assert_eq!(err.kind(), cache::ErrorKind::Config);
    config.l1 = Some(Default::default());
    let err = cache::open(&config).await.unwrap_err();
    assert_eq!(err.kind(), cache::ErrorKind::Config);
}
