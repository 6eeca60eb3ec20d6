//! Invalidation by tag on a real Redis and a real Redis Cluster: typed
//! entries with several tags, `get_or_set` reloading after an
//! invalidation, two `Cache`s sharing one Redis (the other instance misses
//! once its refresh interval is over, exactly), and instances with an L1
//! and the Redis pub/sub backplane. Untagged values stay the plain JSON
//! `redis-cli GET` shows. It fails if a read skips the tag check, if a tag
//! invalidation does not reach Redis, or if tags leak into untagged bytes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cache_core::layers::{Tiered, TieredConfig};
use cache_core::{Cache, CacheBackend, CacheKey, GetOrSetOptions, Loaded, Ttl, WriteOptions};
use cache_memory::MemoryBackend;
use cache_redis::{RedisBackend, RedisBackplane};
use cache_testkit::redis_cluster::RedisCluster;
use cache_testkit::redis_server::RedisServer;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Order {
    id: u32,
    customer: u32,
    items: Vec<String>,
}

fn order(id: u32, customer: u32) -> Order {
    Order {
        id,
        customer,
        items: vec![format!("item-{id}")],
    }
}

fn prefix() -> String {
    format!("tags{:08x}", fastrand::u32(..))
}

fn key(category: &str, id: u32) -> CacheKey {
    CacheKey::new(category, id).unwrap()
}

fn tagged(tags: &[&str]) -> WriteOptions {
    WriteOptions::default()
        .with_ttl(Ttl::secs(600))
        .with_tags(tags.iter().copied())
}

async fn standalone() -> Arc<dyn CacheBackend> {
    Arc::new(
        RedisBackend::from_url(RedisServer::shared().url())
            .await
            .unwrap(),
    )
}

async fn cluster() -> Arc<dyn CacheBackend> {
    Arc::new(
        RedisBackend::from_url(&RedisCluster::shared().url())
            .await
            .unwrap(),
    )
}

fn cache(backend: &Arc<dyn CacheBackend>, prefix: &str, refresh: Duration) -> Cache {
    Cache::builder(Arc::clone(backend))
        .prefix(prefix)
        .generation_refresh(refresh)
        .build()
        .unwrap()
}

/// Several tags per entry; one invalidation leaves untagged and
/// other-tagged entries alone; `get_or_set` (options and adaptive) reloads.
async fn typed_entries(backend: Arc<dyn CacheBackend>) {
    let cache = cache(&backend, &prefix(), Duration::from_secs(1));
    let (o1, o2, o3, o4) = (
        key("order", 1),
        key("order", 2),
        key("order", 3),
        key("order", 4),
    );
    cache
        .set_opts(&o1, &order(1, 42), tagged(&["customer:42", "open"]))
        .await
        .unwrap();
    cache
        .set_opts(&o2, &order(2, 42), tagged(&["customer:42"]))
        .await
        .unwrap();
    cache
        .set_opts(&o3, &order(3, 7), tagged(&["customer:7", "open"]))
        .await
        .unwrap();
    cache.set(&o4, &order(4, 42)).await.unwrap();

    cache.invalidate_tag("customer:42").await.unwrap();
    let all = [o1.clone(), o2.clone(), o3.clone(), o4.clone()];
    assert_eq!(
        cache.get_many::<Order>(&all).await.unwrap(),
        vec![None, None, Some(order(3, 7)), Some(order(4, 42))]
    );
    cache.invalidate_tag("open").await.unwrap();
    assert_eq!(cache.get::<Order>(&o3).await.unwrap(), None);
    assert_eq!(cache.get::<Order>(&o4).await.unwrap(), Some(order(4, 42)));

    let opts = GetOrSetOptions::default().with_tags(["customer:42"]);
    for expected_calls in [1, 1] {
        let got: Order = cache
            .get_or_set_opts(&o1, opts.clone(), || async {
                Ok::<_, std::io::Error>(order(1, 42))
            })
            .await
            .unwrap();
        assert_eq!(got, order(1, 42));
        assert_eq!(cache.stats().loader_calls, expected_calls);
    }
    let adaptive = || async {
        let loaded = order(2, 42);
        let tag = format!("customer:{}", loaded.customer);
        Ok::<_, std::io::Error>(Loaded::new(loaded).with_tags([tag]))
    };
    cache.get_or_set_adaptive(&o2, adaptive).await.unwrap();
    cache.get_or_set_adaptive(&o2, adaptive).await.unwrap();
    assert_eq!(cache.stats().loader_calls, 2);
    cache.invalidate_tag("customer:42").await.unwrap();
    cache
        .get_or_set_opts(&o1, opts, || async {
            Ok::<_, std::io::Error>(order(1, 42))
        })
        .await
        .unwrap();
    cache.get_or_set_adaptive(&o2, adaptive).await.unwrap();
    assert_eq!(cache.stats().loader_calls, 4, "both reloaded once");
    cache.clear().await.unwrap();
}

/// Two `Cache`s over one Redis: A's invalidation is seen by A at once,
/// and by B once B's epoch is older than its refresh interval.
async fn two_instances(backend_a: Arc<dyn CacheBackend>, backend_b: Arc<dyn CacheBackend>) {
    let prefix = prefix();
    let refresh = Duration::from_millis(500);
    let a = cache(&backend_a, &prefix, refresh);
    let b = cache(&backend_b, &prefix, refresh);
    let k = key("order", 1);
    a.set_opts(&k, &order(1, 42), tagged(&["customer:42"]))
        .await
        .unwrap();
    let read = Instant::now();
    assert_eq!(b.get::<Order>(&k).await.unwrap(), Some(order(1, 42)));
    a.invalidate_tag("customer:42").await.unwrap();
    assert_eq!(a.get::<Order>(&k).await.unwrap(), None);
    let within = b.get::<Order>(&k).await.unwrap();
    if read.elapsed() < refresh {
        // B still trusts the epoch it read: the refresh interval is the
        // bound, and it is what B shows.
        assert_eq!(within, Some(order(1, 42)));
    }
    tokio::time::sleep(refresh.saturating_sub(read.elapsed()) + Duration::from_millis(20)).await;
    assert_eq!(b.get::<Order>(&k).await.unwrap(), None);
    // B's get_or_set reloads, and A then reads B's value.
    let got: Order = b
        .get_or_set_opts(
            &k,
            GetOrSetOptions::default().with_tags(["customer:42"]),
            || async { Ok::<_, std::io::Error>(order(1, 43)) },
        )
        .await
        .unwrap();
    assert_eq!(got, order(1, 43));
    assert_eq!(a.get::<Order>(&k).await.unwrap(), Some(order(1, 43)));
    a.clear().await.unwrap();
}

#[tokio::test]
async fn redis_invalidate_tag_typed_entries() {
    typed_entries(standalone().await).await;
}

#[tokio::test]
async fn cluster_invalidate_tag_typed_entries() {
    typed_entries(cluster().await).await;
}

#[tokio::test]
async fn redis_invalidate_tag_reaches_a_second_cache_within_the_refresh() {
    two_instances(standalone().await, standalone().await).await;
}

#[tokio::test]
async fn cluster_invalidate_tag_reaches_a_second_cache_within_the_refresh() {
    two_instances(cluster().await, cluster().await).await;
}

#[tokio::test]
async fn redis_invalidate_tag_untagged_values_stay_plain_json() {
    let server = RedisServer::shared();
    let backend = standalone().await;
    let prefix = prefix();
    let cache = cache(&backend, &prefix, Duration::from_secs(1));
    cache.set(&key("order", 1), &order(1, 42)).await.unwrap();
    cache
        .set_opts(&key("order", 2), &order(2, 42), tagged(&["customer:42"]))
        .await
        .unwrap();
    assert_eq!(
        server.cli(&["GET", &format!("{prefix}:order:1")]),
        br#"{"id":1,"customer":42,"items":["item-1"]}"#.to_vec()
    );
    // The marker is readable text: the tag's epoch.
    let epoch = server.cli(&["GET", &format!("{prefix}:#tag:customer%3A42")]);
    let epoch: u64 = String::from_utf8(epoch).unwrap().trim().parse().unwrap();
    let tagged_bytes = backend
        .get(&format!("{prefix}:order:2"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&tagged_bytes[..4], &[0xFF, b'C', b'T', 1]);
    // No logical expiry (no fail-safe): the Redis TTL is the only one.
    assert_eq!(&tagged_bytes[4..16], &[0; 12]);
    assert_eq!(&tagged_bytes[16..18], &[1, 11]); // one tag, 11 bytes
    assert_eq!(&tagged_bytes[18..29], b"customer:42");
    assert_eq!(&tagged_bytes[29..37], &epoch.to_be_bytes());
    assert_eq!(
        &tagged_bytes[37..],
        br#"{"id":2,"customer":42,"items":["item-2"]}"#
    );
    cache.clear().await.unwrap();
}

async fn with_l1(url: &str, channel: &str, prefix: &str) -> (Cache, Arc<MemoryBackend>) {
    let l1 = Arc::new(MemoryBackend::new());
    let tier = Tiered::new(
        Arc::clone(&l1) as Arc<dyn CacheBackend>,
        Arc::new(RedisBackend::from_url(url).await.unwrap()),
        TieredConfig::default().with_l1_max_ttl(Duration::from_secs(600)),
    )
    .with_backplane(Arc::new(
        RedisBackplane::connect(url, channel).await.unwrap(),
    ))
    .await
    .unwrap();
    let cache = Cache::builder(Arc::new(tier))
        .prefix(prefix)
        .generation_refresh(Duration::ZERO)
        .build()
        .unwrap();
    (cache, l1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_invalidate_tag_reaches_another_l1_over_the_backplane() {
    let url = RedisServer::shared().url();
    let prefix = prefix();
    let channel = format!("{prefix}-bp");
    let (a, _) = with_l1(url, &channel, &prefix).await;
    let (b, b_l1) = with_l1(url, &channel, &prefix).await;
    let k = key("order", 1);
    a.set_opts(&k, &order(1, 42), tagged(&["customer:42"]))
        .await
        .unwrap();
    assert_eq!(b.get::<Order>(&k).await.unwrap(), Some(order(1, 42)));
    let entry = format!("{prefix}:order:1");
    assert!(b_l1.exists(&entry).await.unwrap());
    a.invalidate_tag("customer:42").await.unwrap();
    let started = Instant::now();
    while b.get::<Order>(&k).await.unwrap().is_some() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "B never missed"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // B's L1 still holds the entry's bytes: the read-side tag check hid it.
    assert!(b_l1.exists(&entry).await.unwrap());
    a.clear().await.unwrap();
}
