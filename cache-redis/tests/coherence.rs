//! Two instances, each with its own L1, sharing one real Redis and a Redis
//! pub/sub backplane: after a write, delete or category bump on A, B never
//! returns the old value once the message is delivered; a killed subscriber
//! connection makes B clear its L1. Also the conformance suite through a
//! tier with the backplane on.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cache_core::layers::{Tiered, TieredConfig};
use cache_core::{Cache, CacheBackend, CacheKey};
use cache_memory::MemoryBackend;
use cache_redis::{RedisBackend, RedisBackplane};
use cache_testkit::redis_server::RedisServer;

struct Instance {
    cache: Cache,
    tier: Arc<Tiered>,
}

async fn instance(url: &str, channel: &str) -> Instance {
    let backplane = RedisBackplane::connect(url, channel).await.unwrap();
    let tier = Tiered::new(
        Arc::new(MemoryBackend::new()),
        Arc::new(RedisBackend::from_url(url).await.unwrap()),
        TieredConfig::default().with_l1_max_ttl(Duration::from_secs(600)),
    )
    .with_backplane(Arc::new(backplane))
    .await
    .unwrap();
    let tier = Arc::new(tier);
    let cache = Cache::builder(Arc::clone(&tier) as Arc<dyn CacheBackend>)
        .prefix("coherence")
        // The generation key lives in L1 too, invalidated by the backplane.
        .generation_refresh(Duration::ZERO)
        .build()
        .unwrap();
    Instance { cache, tier }
}

/// Reads `key` on `reader` until `expected(value)`; returns how long it took.
async fn wait_until(
    reader: &Cache,
    key: &CacheKey,
    expected: impl Fn(Option<u64>) -> bool,
) -> Duration {
    let started = Instant::now();
    loop {
        let value = reader.get::<u64>(key).await.unwrap();
        if expected(value) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "never saw the change (last {value:?})"
        );
        tokio::task::yield_now().await;
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coherence_writes_deletes_and_category_bumps_reach_the_other_l1() {
    let server = RedisServer::new();
    let a = instance(server.url(), "coherence-1").await;
    let b = instance(server.url(), "coherence-1").await;
    let key = CacheKey::new("price", "sku-1").unwrap();

    a.cache.set(&key, &0u64).await.unwrap();
    assert_eq!(b.cache.get::<u64>(&key).await.unwrap(), Some(0));
    let mut delays = Vec::with_capacity(1000);
    for i in 1..=1000u64 {
        // B holds i-1 in its L1; A writes i.
        a.cache.set(&key, &i).await.unwrap();
        delays.push(wait_until(&b.cache, &key, |v| v == Some(i)).await);
        // Once delivered, never the old value again.
        for _ in 0..3 {
            assert_eq!(b.cache.get::<u64>(&key).await.unwrap(), Some(i));
        }
    }
    delays.sort();
    println!(
        "propagation over 1000 updates: p50 {:?}, p99 {:?}, max {:?}",
        percentile(&delays, 0.5),
        percentile(&delays, 0.99),
        delays[delays.len() - 1]
    );
    let stats = b.tier.stats();
    assert!(stats.invalidations_received >= 1000, "{stats:?}");
    assert!(stats.l1_hits > 0, "B served from its L1 between updates");

    // Delete on A: B sees the miss, and never the old value after.
    a.cache.delete(&key).await.unwrap();
    wait_until(&b.cache, &key, |v| v.is_none()).await;
    assert_eq!(b.cache.get::<u64>(&key).await.unwrap(), None);

    // Category bump on A: B's reads of the category miss.
    let other = CacheKey::new("price", "sku-2").unwrap();
    a.cache.set(&other, &7u64).await.unwrap();
    assert_eq!(b.cache.get::<u64>(&other).await.unwrap(), Some(7));
    a.cache.invalidate_category("price").await.unwrap();
    wait_until(&b.cache, &other, |v| v.is_none()).await;

    // Pattern delete and clear on A reach B's L1 too.
    let k3 = CacheKey::new("stock", "sku-3").unwrap();
    a.cache.set(&k3, &3u64).await.unwrap();
    assert_eq!(b.cache.get::<u64>(&k3).await.unwrap(), Some(3));
    a.cache.invalidate_matching("stock", "sku-*").await.unwrap();
    wait_until(&b.cache, &k3, |v| v.is_none()).await;
    a.cache.set(&k3, &4u64).await.unwrap();
    assert_eq!(b.cache.get::<u64>(&k3).await.unwrap(), Some(4));
    a.cache.clear().await.unwrap();
    wait_until(&b.cache, &k3, |v| v.is_none()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coherence_killed_subscriber_clears_l1_and_resubscribes() {
    let server = RedisServer::new();
    let a = instance(server.url(), "coherence-2").await;
    let b = instance(server.url(), "coherence-2").await;
    let keys: Vec<CacheKey> = (0..50).map(|i| CacheKey::new("user", i).unwrap()).collect();
    for (i, key) in keys.iter().enumerate() {
        a.cache.set(key, &(i as u64)).await.unwrap();
    }
    // Let A's invalidations land first, so they do not drop B's new copies.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for (i, key) in keys.iter().enumerate() {
        assert_eq!(b.cache.get::<u64>(key).await.unwrap(), Some(i as u64));
    }
    let l1_keys = b.tier.l1().scan("coherence:user:*").await.unwrap();
    assert_eq!(l1_keys.len(), 50, "B's L1 holds copies");

    // Kill every pub/sub connection on the server (both subscribers).
    server.cli(&["CLIENT", "KILL", "TYPE", "pubsub"]);
    let started = Instant::now();
    while b.tier.stats().resyncs == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "B never noticed"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The resync clears the L1 right after it is counted.
    let mut left = usize::MAX;
    while left > 0 && started.elapsed() < Duration::from_secs(10) {
        left = b.tier.l1().scan("coherence:user:*").await.unwrap().len();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(left, 0, "B cleared its L1 when its subscription dropped");

    // It resubscribed: invalidations flow again.
    let key = &keys[0];
    assert_eq!(b.cache.get::<u64>(key).await.unwrap(), Some(0));
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut n = 100u64;
    loop {
        a.cache.set(key, &n).await.unwrap();
        let seen = tokio::time::timeout(
            Duration::from_millis(500),
            wait_until(&b.cache, key, |v| v == Some(n)),
        )
        .await;
        if seen.is_ok() {
            break;
        }
        // Still resubscribing: B's L1 holds n-1 and no message reached it.
        assert!(Instant::now() < deadline, "B never resubscribed");
        n += 1;
    }
}

async fn tiered_with_backplane() -> Arc<dyn CacheBackend> {
    let url = RedisServer::shared().url();
    let backplane = RedisBackplane::connect(url, "coherence-conformance")
        .await
        .unwrap();
    Arc::new(
        Tiered::new(
            Arc::new(MemoryBackend::with_config(
                cache_memory::MemoryConfig::default().with_max_value_size(2 << 20),
            )),
            Arc::new(RedisBackend::from_url(url).await.unwrap()),
            TieredConfig::default(),
        )
        .with_backplane(Arc::new(backplane))
        .await
        .unwrap(),
    )
}

cache_testkit::conformance_suite!(tiered_backplane_redis, tiered_with_backplane);
