//! The rate limiter of a `cache::open` stack runs on the plain backend
//! (`Cache::rate_limiter`, `Cache::plain_backend`): under fail-open and the
//! L1. It counts in the shared store, so two instances share one limit; and
//! when Redis is down it decides by each rule's `OnBackendError`, marked
//! degraded, instead of reading fail-open's misses as empty windows (which
//! would allow every login).
#![cfg(all(feature = "redis", feature = "memory"))]

use cache::{CacheConfig, CacheKey, OnBackendError, Rule};
use cache_testkit::redis_server::RedisServer;

fn config(url: &str) -> CacheConfig {
    CacheConfig::from_json(&format!(
        r#"{{
            "url": "{url}",
            "prefix": "limits",
            "l1": {{ "max_entries": 1000, "max_ttl_secs": 60 }},
            "timeout_ms": 300,
            "fail_open": {{ "failure_threshold": 1, "cool_down_ms": 60000 }}
        }}"#
    ))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limiter_of_an_open_stack_counts_in_redis_and_sees_its_failures() {
    let server = RedisServer::new();
    let a = cache::open(&config(server.url())).await.unwrap();
    let b = cache::open(&config(server.url())).await.unwrap();
    assert_eq!(a.backend().name(), "tiered");
    // The timeout layer is there (it reports its inner backend's name); no
    // fail-open, no L1.
    assert_eq!(a.plain_backend().name(), "redis");
    let login = Rule::per_minute(3).on_backend_error(OnBackendError::Deny);
    let limiter_a = a.rate_limiter().rule("login", login).build().unwrap();
    let limiter_b = b.rate_limiter().rule("login", login).build().unwrap();
    assert_eq!(limiter_a.prefix(), "limits");

    // One limit across both instances: the counters are in Redis, not in
    // either L1.
    let mut allowed = Vec::new();
    for limiter in [&limiter_a, &limiter_b, &limiter_a, &limiter_b] {
        allowed.push(limiter.check("login", "ada").await.unwrap().allowed);
    }
    assert_eq!(allowed, [true, true, true, false]);

    // Redis frozen: the cache answers misses (fail-open), the limiter
    // applies the rule's `Deny`, degraded, instead of an empty window.
    server.pause();
    let key = CacheKey::new("user", 1).unwrap();
    assert_eq!(a.get::<String>(&key).await.unwrap(), None);
    assert!(a.stats().breaker_open);
    let decision = limiter_a.check("login", "bob").await.unwrap();
    server.resume();
    assert!(decision.degraded, "{decision:?}");
    assert!(!decision.allowed);
    assert_eq!(limiter_a.stats().backend_errors, 1);
}
