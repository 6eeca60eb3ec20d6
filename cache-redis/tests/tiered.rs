//! `Tiered` with a bounded memory L1 over Redis: the conformance suite, and
//! what two instances sharing one Redis see of each other's writes.
//!
//! One private `redis-server` for the whole binary (or the server named by
//! `CACHE_TEST_REDIS_URL`); every case makes its own tier on its own runtime
//! and works in a namespace of its own.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cache_core::layers::{Tiered, TieredConfig};
use cache_core::{CacheBackend, KeyTtl, SetOptions};
use cache_memory::{MemoryBackend, MemoryConfig};
use cache_redis::{RedisBackend, RedisConfig};
use cache_testkit::redis_server::RedisServer;

async fn redis() -> Arc<RedisBackend> {
    let url = RedisServer::shared().url();
    // A value limit the suite can test, with room for its 1 MiB case.
    let config = RedisConfig::from_url(url)
        .unwrap()
        .with_max_value_size((1 << 20) + 4096);
    Arc::new(
        RedisBackend::connect(config)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to the test server {url}: {e:?}")),
    )
}

fn l1() -> Arc<MemoryBackend> {
    // Bounded, as an L1 is in practice. The tier's value limit is the
    // smaller of the two (Redis's, above).
    Arc::new(MemoryBackend::with_config(
        MemoryConfig::default()
            .with_max_entries(10_000)
            .with_max_bytes(64 << 20)
            .with_max_value_size(2 << 20),
    ))
}

async fn tiered_redis() -> Arc<dyn CacheBackend> {
    Arc::new(Tiered::new(l1(), redis().await, TieredConfig::default()))
}

cache_testkit::conformance_suite!(tiered_memory_over_redis, tiered_redis);

fn key(name: &str) -> String {
    format!("tiered-test-{:08x}:{name}", fastrand::u32(..))
}

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l1_copy_ttl_follows_redis_pttl() {
    let redis = redis().await;
    let l1 = l1();
    let tiered = Tiered::new(l1.clone(), redis.clone(), TieredConfig::default());
    let k = key("short");
    redis
        .set(
            &k,
            b("v"),
            SetOptions::ttl(Some(Duration::from_millis(300))),
        )
        .await
        .unwrap();
    assert_eq!(tiered.get(&k).await.unwrap(), Some(b("v")));
    match l1.ttl(&k).await.unwrap() {
        KeyTtl::Expires(left) => assert!(
            left <= Duration::from_millis(300),
            "the L1 copy must not outlive Redis's 300 ms, got {left:?}"
        ),
        other => panic!("the L1 copy should expire, got {other:?}"),
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(tiered.get(&k).await.unwrap(), None);
}

/// Two instances over one Redis: the writer sees its write at once; the
/// other serves its L1 copy until `l1_max_ttl` (the staleness window that a
/// backplane will close).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_instance_sees_a_write_within_l1_max_ttl() {
    let config = TieredConfig::default().with_l1_max_ttl(Duration::from_millis(300));
    let a = Tiered::new(l1(), redis().await, config);
    let b_ = Tiered::new(l1(), redis().await, config);
    let k = key("shared");
    a.set(&k, b("v1"), SetOptions::default()).await.unwrap();
    assert_eq!(b_.get(&k).await.unwrap(), Some(b("v1")), "b copies v1");
    a.set(&k, b("v2"), SetOptions::default()).await.unwrap();
    assert_eq!(a.get(&k).await.unwrap(), Some(b("v2")), "the writer");
    assert_eq!(b_.get(&k).await.unwrap(), Some(b("v1")), "b's stale copy");
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        b_.get(&k).await.unwrap(),
        Some(b("v2")),
        "the window is over"
    );
    a.delete(&k).await.unwrap();
}
