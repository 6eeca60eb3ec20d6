//! The Redis backplane survives the loss of the node it subscribes on: two
//! instances (each with its own L1, sharing an L2 and a `RedisBackplane`)
//! are coherent; then the backplane's node is killed (a cluster primary,
//! the Sentinel primary) or frozen with `SIGSTOP` (a half-open connection:
//! TCP stays up, nothing answers); the subscribed instance must notice on
//! its own, count a resync and clear its L1, resubscribe where the channel
//! now lives, and the coherence check must pass again.
//!
//! How it could fail: a subscription pinned to a dead node (the cluster
//! case never resubscribes anywhere else, the Sentinel case keeps asking
//! the killed primary), no heartbeat on the subscribed connection (the
//! frozen server is never noticed while it is frozen: the test waits for
//! the resync *before* `SIGCONT`), no `Resync` (B's L1 keeps its copies),
//! or plain `SUBSCRIBE` on a cluster (the shard channel has no subscribers
//! on the owning node). Guards of tens of seconds only stop a hung test;
//! nothing asserts on timing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cache_core::layers::{Tiered, TieredConfig};
use cache_core::{Cache, CacheBackend, CacheKey};
use cache_memory::MemoryBackend;
use cache_redis::{RedisBackend, RedisBackplane};

/// Guard against a hung test (not a timing assertion).
const GUARD: Duration = Duration::from_secs(60);

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
        .prefix("bpfo")
        .generation_refresh(Duration::ZERO)
        .build()
        .unwrap();
    Instance { cache, tier }
}

/// Reads `key` on `reader` until it is `expected`; `false` after `limit`.
async fn sees(reader: &Cache, key: &CacheKey, expected: Option<u64>, limit: Duration) -> bool {
    let started = Instant::now();
    while started.elapsed() < limit {
        if let Ok(value) = reader.get::<u64>(key).await {
            if value == expected {
                return true;
            }
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    false
}

/// The coherence check of `coherence.rs`: B holds a copy in its L1; each
/// write and the delete on A reach B, which never returns the old value
/// once it saw the new one.
async fn assert_coherent(a: &Instance, b: &Instance, name: &str) {
    let key = CacheKey::new("price", name).unwrap();
    a.cache.set(&key, &0u64).await.unwrap();
    assert!(sees(&b.cache, &key, Some(0), GUARD).await);
    let hits = b.tier.stats().l1_hits;
    for i in 1..=50u64 {
        a.cache.set(&key, &i).await.unwrap();
        assert!(
            sees(&b.cache, &key, Some(i), GUARD).await,
            "B never saw {i}"
        );
        for _ in 0..3 {
            assert_eq!(b.cache.get::<u64>(&key).await.unwrap(), Some(i));
        }
    }
    assert!(b.tier.stats().l1_hits > hits, "B served from its L1");
    a.cache.delete(&key).await.unwrap();
    assert!(sees(&b.cache, &key, None, GUARD).await);
    assert_eq!(b.cache.get::<u64>(&key).await.unwrap(), None);
}

/// After an outage: A writes fresh values until B (whose L1 holds the
/// previous one) sees one, i.e. until B's subscription is back.
async fn wait_until_resubscribed(a: &Instance, b: &Instance, name: &str) {
    let key = CacheKey::new("probe", name).unwrap();
    let started = Instant::now();
    let mut n = 0u64;
    loop {
        assert!(started.elapsed() < GUARD, "B never resubscribed");
        n += 1;
        if a.cache.set(&key, &n).await.is_err() {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        // B copies n into its L1 (or already holds it)...
        if !sees(&b.cache, &key, Some(n), Duration::from_secs(2)).await {
            continue;
        }
        // ...and must then see n + 1 only through an invalidation.
        n += 1;
        if a.cache.set(&key, &n).await.is_ok()
            && sees(&b.cache, &key, Some(n), Duration::from_millis(500)).await
        {
            return;
        }
    }
}

/// B's L1 holds copies of 20 keys.
async fn fill_l1(a: &Instance, b: &Instance) {
    let keys: Vec<CacheKey> = (0..20).map(|i| CacheKey::new("user", i).unwrap()).collect();
    for (i, key) in keys.iter().enumerate() {
        a.cache.set(key, &(i as u64)).await.unwrap();
    }
    // Let A's invalidations land first, so they do not drop B's copies.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for (i, key) in keys.iter().enumerate() {
        assert_eq!(b.cache.get::<u64>(key).await.unwrap(), Some(i as u64));
    }
    assert_eq!(l1_len(b).await, 20, "B's L1 holds copies");
}

async fn l1_len(b: &Instance) -> usize {
    b.tier.l1().scan("bpfo:user:*").await.unwrap().len()
}

/// Waits until B counted a resync and its L1 is empty; returns how long the
/// resync took to come (printed, not asserted).
async fn wait_for_resync_and_empty_l1(b: &Instance, resyncs_before: u64) -> Duration {
    let started = Instant::now();
    while b.tier.stats().resyncs == resyncs_before {
        assert!(started.elapsed() < GUARD, "B never noticed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let noticed = started.elapsed();
    while l1_len(b).await > 0 {
        assert!(started.elapsed() < GUARD, "B never cleared its L1");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(l1_len(b).await, 0);
    noticed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backplane_notices_a_frozen_server_clears_l1_and_recovers_after_sigcont() {
    use cache_testkit::redis_server::RedisServer;
    let server = RedisServer::new();
    let a = instance(server.url(), "bpfo-frozen").await;
    let b = instance(server.url(), "bpfo-frozen").await;
    assert_coherent(&a, &b, "before").await;
    fill_l1(&a, &b).await;

    let resyncs = b.tier.stats().resyncs;
    server.pause();
    // The TCP connection stays up: only the heartbeat can tell. The server
    // stays frozen until B noticed.
    let noticed = wait_for_resync_and_empty_l1(&b, resyncs).await;
    println!("B noticed the frozen server after {noticed:?}");
    server.resume();

    wait_until_resubscribed(&a, &b, "frozen").await;
    assert_coherent(&a, &b, "after").await;
}

#[cfg(feature = "cluster")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backplane_follows_the_cluster_when_its_node_is_killed() {
    use cache_testkit::redis_cluster::RedisCluster;
    let channel = "bpfo-cluster";
    let cluster = RedisCluster::new();
    let url = cluster.url();
    let a = instance(&url, channel).await;
    let b = instance(&url, channel).await;
    assert_coherent(&a, &b, "before").await;

    // Sharded pub/sub: both subscriptions are on the one primary owning the
    // channel's slot, none is a plain channel subscription.
    let subscribed_on =
        |port: u16| -> Vec<u8> { cluster.cli(port, &["PUBSUB", "SHARDNUMSUB", channel]) };
    let owner = {
        let owners: Vec<u16> = cluster
            .primaries()
            .into_iter()
            .filter(|&p| subscribed_on(p).ends_with(b"\n2"))
            .collect();
        assert_eq!(owners.len(), 1, "one primary holds both subscriptions");
        owners[0]
    };
    assert_eq!(
        cluster.cli(owner, &["PUBSUB", "NUMSUB", channel]),
        format!("{channel}\n0").into_bytes(),
        "no plain subscription"
    );
    println!("the backplane subscribes on {owner}");
    fill_l1(&a, &b).await;

    let resyncs = b.tier.stats().resyncs;
    cluster.kill(owner);
    let noticed = wait_for_resync_and_empty_l1(&b, resyncs).await;
    println!("B noticed the killed node after {noticed:?}");
    let promoted = cluster.wait_for_failover(owner, GUARD);
    println!("the cluster finished the failover {promoted:?} after the kill");

    wait_until_resubscribed(&a, &b, "cluster").await;
    assert_coherent(&a, &b, "after").await;
    let new_owners: Vec<u16> = cluster
        .primaries()
        .into_iter()
        .filter(|&p| subscribed_on(p).ends_with(b"\n2"))
        .collect();
    assert_eq!(new_owners.len(), 1, "both subscriptions moved together");
    assert_ne!(new_owners[0], owner);
}

#[cfg(feature = "sentinel")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backplane_follows_a_sentinel_failover() {
    use cache_testkit::redis_sentinel::RedisSentinel;
    let channel = "bpfo-sentinel";
    let deployment = RedisSentinel::new();
    let url = deployment.url();
    let a = instance(&url, channel).await;
    let b = instance(&url, channel).await;
    assert_coherent(&a, &b, "before").await;
    let old = deployment.primary();
    assert_eq!(
        deployment.cli(old, &["PUBSUB", "NUMSUB", channel]),
        format!("{channel}\n2").into_bytes(),
        "both subscriptions are on the primary"
    );
    fill_l1(&a, &b).await;

    let resyncs = b.tier.stats().resyncs;
    deployment.kill(old);
    let noticed = wait_for_resync_and_empty_l1(&b, resyncs).await;
    println!("B noticed the killed primary after {noticed:?}");
    let (new, promoted) = deployment.wait_for_failover(old, GUARD);
    println!("the Sentinels name {new} as primary {promoted:?} after the kill");

    wait_until_resubscribed(&a, &b, "sentinel").await;
    assert_coherent(&a, &b, "after").await;
    assert_eq!(
        deployment.cli(new, &["PUBSUB", "NUMSUB", channel]),
        format!("{channel}\n2").into_bytes(),
        "both subscriptions moved to the new primary"
    );
}
