//! The backend on a primary found through Sentinel (a primary, a replica
//! and three Sentinels on loopback, shared by the tests of this binary):
//! the whole conformance suite, URL and config forms, health. Failover is
//! in `sentinel_failover.rs`.
#![cfg(feature = "sentinel")]

use std::sync::Arc;

use bytes::Bytes;
use cache_core::{CacheBackend, ErrorKind, HealthStatus, SetOptions};
use cache_redis::{RedisBackend, RedisConfig, RedisMode};
use cache_testkit::redis_sentinel::{RedisSentinel, MASTER_NAME};

async fn sentinel_backend() -> Arc<dyn CacheBackend> {
    let url = RedisSentinel::shared().url();
    // A value limit the suite can test, with room for its 1 MiB case.
    let config = RedisConfig::from_url(&url)
        .unwrap()
        .with_max_value_size((1 << 20) + 4096);
    Arc::new(
        RedisBackend::connect(config)
            .await
            .unwrap_or_else(|e| panic!("cannot connect through the Sentinels {url}: {e:?}")),
    )
}

cache_testkit::conformance_suite!(redis_sentinel, sentinel_backend);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_writes_reach_the_primary_and_its_replica() {
    let deployment = RedisSentinel::shared();
    let backend = RedisBackend::from_url(&deployment.url()).await.unwrap();
    assert_eq!(backend.mode(), RedisMode::Sentinel);
    let key = format!("sn{:08x}:a", fastrand::u32(..));
    backend
        .set(&key, Bytes::from_static(b"v"), SetOptions::default())
        .await
        .unwrap();
    let primary = deployment.primary();
    assert_eq!(deployment.cli(primary, &["GET", &key]), b"v");
    let replica = *deployment
        .data_ports()
        .iter()
        .find(|&&p| p != primary)
        .unwrap();
    deployment.cli(replica, &["WAIT", "0", "0"]);
    let started = std::time::Instant::now();
    while deployment.cli(replica, &["GET", &key]) != b"v" {
        assert!(
            started.elapsed().as_secs() < 5,
            "the replica never got the write"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let health = backend.health().await.unwrap();
    assert_eq!(health.status, HealthStatus::Healthy);
    assert_eq!(health.details["mode"], "sentinel");
    assert_eq!(health.details["primary"], format!("127.0.0.1:{primary}"));
    assert!(backend.delete(&key).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_config_by_parts_and_errors() {
    let deployment = RedisSentinel::shared();
    let sentinels: Vec<String> = deployment
        .sentinel_ports()
        .iter()
        .map(|p| format!("127.0.0.1:{p}"))
        .collect();
    let config = RedisConfig::sentinel(sentinels.clone(), MASTER_NAME);
    assert_eq!(config.mode(), RedisMode::Sentinel);
    let backend = RedisBackend::connect(config).await.unwrap();
    assert!(backend.health().await.is_ok());

    // A name the Sentinels do not know: a prompt Connection error.
    let config = RedisConfig::sentinel(sentinels, "nosuchmaster")
        .with_connect_timeout(std::time::Duration::from_millis(500));
    let err = RedisBackend::connect(config).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Connection, "{err:?}");

    // Through `cache_redis::connect`, as `cache::open` does.
    let backend = cache_redis::connect(&deployment.url()).await.unwrap();
    assert!(backend.health().await.is_ok());
}

#[test]
fn sentinel_fixture_stops_every_process_when_a_test_panics() {
    let ports = std::sync::Mutex::new(Vec::new());
    let outcome = std::thread::scope(|s| {
        s.spawn(|| {
            let deployment = RedisSentinel::new();
            let mut all = deployment.data_ports();
            all.extend(deployment.sentinel_ports());
            *ports.lock().unwrap() = all;
            panic!("a failing test");
        })
        .join()
    });
    assert!(outcome.is_err());
    let ports = ports.into_inner().unwrap();
    assert_eq!(ports.len(), 5);
    for port in ports {
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
            "process on {port} outlived the panicking test"
        );
    }
}
