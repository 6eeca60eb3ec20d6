//! client_tracking through the configuration: `"backplane": {"mode":
//! "tracking"}` (`CACHE_BACKPLANE_MODE=tracking`) makes `cache::open`'s L1
//! follow Redis client tracking, so a write by any client — here
//! `redis-cli` — drops the L1 copy. With the pub/sub backplane the same
//! write goes unseen until the L1 copy expires.
#![cfg(all(feature = "redis", feature = "memory"))]

use std::time::{Duration, Instant};

use cache::{Cache, CacheConfig, CacheKey};
use cache_testkit::redis_server::RedisServer;

fn config(url: &str, mode: &str) -> CacheConfig {
    CacheConfig::from_lookup(|name| match name {
        "CACHE_URL" => Some(url.to_owned()),
        "CACHE_PREFIX" => Some("tracked".to_owned()),
        "CACHE_L1_MAX_TTL_SECS" => Some("60".to_owned()),
        "CACHE_BACKPLANE_MODE" => Some(mode.to_owned()),
        _ => None,
    })
    .unwrap()
}

/// Reads `key` until it reads `want` or 5 s pass; returns what it read.
async fn read_until(cache: &Cache, key: &CacheKey, want: &str) -> Option<String> {
    let started = Instant::now();
    loop {
        let got = cache.get::<String>(key).await.unwrap();
        if got.as_deref() == Some(want) || started.elapsed() > Duration::from_secs(5) {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_tracking_from_config_drops_the_l1_copy_on_a_redis_cli_write() {
    let server = RedisServer::new();
    let tracked = cache::open(&config(server.url(), "tracking"))
        .await
        .unwrap();
    let pubsub = cache::open(&config(server.url(), "pubsub")).await.unwrap();
    let key = CacheKey::new("greeting", "en").unwrap();
    tracked.set(&key, "hello").await.unwrap();
    // Both read it: each now holds an L1 copy.
    for cache in [&tracked, &pubsub] {
        assert_eq!(
            cache.get::<String>(&key).await.unwrap().as_deref(),
            Some("hello")
        );
    }
    server.cli(&["SET", "tracked:greeting:en", r#""hi there""#]);
    assert_eq!(
        read_until(&tracked, &key, "hi there").await.as_deref(),
        Some("hi there")
    );
    // The pub/sub backplane never hears of redis-cli: its copy stays.
    assert_eq!(
        pubsub.get::<String>(&key).await.unwrap().as_deref(),
        Some("hello")
    );

    let err = cache::open(&config("memory://", "tracking"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), cache::ErrorKind::Config);
}
