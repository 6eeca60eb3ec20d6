//! How long a category invalidation takes to reach another instance, as
//! the docs say: with an L1 and no backplane, within the generation refresh
//! (generations are read from the shared backend, never from an L1 copy
//! that lives `l1.max_ttl_secs`); with a backplane, at once. Fails if an
//! instance keeps rendering the old generation from its L1.
#![cfg(all(feature = "redis", feature = "memory"))]

use std::time::{Duration, Instant};

use cache::{CacheConfig, CacheKey};
use cache_testkit::redis_server::RedisServer;

fn config(url: &str, backplane: bool) -> CacheConfig {
    // With a backplane, the default refresh (0: read from the L1, which
    // the backplane invalidates).
    let extra = if backplane {
        r#", "backplane": {}"#
    } else {
        r#", "generation_refresh_ms": 300"#
    };
    CacheConfig::from_json(&format!(
        r#"{{ "url": "{url}", "prefix": "catinv",
             "l1": {{ "max_entries": 1000, "max_ttl_secs": 60 }} {extra} }}"#
    ))
    .unwrap()
}

async fn reaches_the_other_instance(backplane: bool) -> Duration {
    let server = RedisServer::new();
    let a = cache::open(&config(server.url(), backplane)).await.unwrap();
    let b = cache::open(&config(server.url(), backplane)).await.unwrap();
    let key = CacheKey::new("price", 1).unwrap();
    a.set(&key, &10).await.unwrap();
    // B reads the value and the generation (both now in B's L1 too).
    assert_eq!(b.get::<i32>(&key).await.unwrap(), Some(10));
    assert_eq!(b.get::<i32>(&key).await.unwrap(), Some(10));
    a.invalidate_category("price").await.unwrap();
    let started = Instant::now();
    while b.get::<i32>(&key).await.unwrap().is_some() {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "B still serves the invalidated category (L1 max TTL is 60 s)"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn category_invalidation_reaches_another_instance_within_the_refresh_without_a_backplane() {
    let took = reaches_the_other_instance(false).await;
    eprintln!("without a backplane: {took:?} (refresh 300 ms)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn category_invalidation_reaches_another_instance_at_once_with_a_backplane() {
    let took = reaches_the_other_instance(true).await;
    eprintln!("with a backplane: {took:?}");
}
