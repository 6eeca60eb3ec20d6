//! A service can start while Redis is down: with fail-open, `cache::open`
//! succeeds, serves misses (loaders answer), and connects in the background
//! once Redis is up; without fail-open it fails promptly with a clear
//! `Connection` error. Fails if `open` errors (or hangs) with fail-open on,
//! or never reconnects.
#![cfg(all(feature = "redis", feature = "memory"))]

use std::time::{Duration, Instant};

use cache::{CacheConfig, CacheKey, ErrorKind};
use cache_testkit::redis_server::RedisServer;

fn config(url: &str, fail_open: bool) -> CacheConfig {
    let fail_open = if fail_open {
        r#", "fail_open": { "failure_threshold": 3, "cool_down_ms": 200 }"#
    } else {
        ""
    };
    CacheConfig::from_json(&format!(
        r#"{{ "url": "{url}", "prefix": "startup", "timeout_ms": 500 {fail_open} }}"#
    ))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_without_fail_open_fails_fast_while_redis_is_down_outage() {
    let server = RedisServer::new();
    server.stop();
    let err = cache::open(&config(server.url(), false)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Connection, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_with_fail_open_starts_while_redis_is_down_and_connects_later_outage() {
    let server = RedisServer::new();
    server.stop();
    let cache = cache::open(&config(server.url(), true)).await.unwrap();
    let key = CacheKey::new("rate", "EUR").unwrap();
    assert_eq!(cache.get::<String>(&key).await.unwrap(), None);
    let loaded: String = cache
        .get_or_set(&key, || async {
            Ok::<_, std::io::Error>("1.08".to_string())
        })
        .await
        .unwrap();
    assert_eq!(loaded, "1.08", "the loader answers while Redis is down");

    server.start();
    let started = Instant::now();
    loop {
        cache.set(&key, &"1.09".to_string()).await.unwrap();
        if cache.get::<String>(&key).await.unwrap().as_deref() == Some("1.09") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "never connected after Redis came up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("connected {:?} after Redis came up", started.elapsed());
    // Really in Redis, not somewhere else.
    assert_eq!(server.cli(&["GET", "startup:rate:EUR"]), b"\"1.09\"");
}
