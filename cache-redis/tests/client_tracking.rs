//! L1 invalidation by Redis client tracking (`RedisTracking`): a Tiered
//! (memory L1 over Redis) drops its L1 copy when *any* client changes the
//! key, here the `redis-cli` binary: `SET` and `DEL` under the cache's
//! prefix drop the copy and the next read returns Redis's value; a write
//! outside the prefix (`{p}2:…`, `{p}x…`, `other:{p}:…`) drops nothing and
//! is not even told; `FLUSHDB` and the loss of the server (stopped, or
//! frozen with `SIGSTOP`) clear the whole L1, and once the server is back
//! tracking is on again (a later `redis-cli SET` still drops the copy). Cluster and Sentinel configurations are refused
//! as `Unsupported`.
//!
//! How it could fail: tracking not turned on, or on without `BCAST` (the
//! server then tells only keys read on the tracking connection: nothing),
//! the prefix without its `:` (`{p}2:…` would be told), the messages
//! carrying an origin a Tiered ignores, a flush (`invalidate` with a null
//! key list) read as "no keys", no `Resync` when the connection drops (the
//! L1 keeps its copies), no heartbeat (a frozen server is never noticed),
//! or no reconnection after a restart. Waits are
//! bounded loops on the Tiered's counters (30 s guards against a hung
//! test); every assertion is exact.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cache_core::layers::{Tiered, TieredConfig, TieredStats};
use cache_core::{
    Backplane, BackplaneEvent, BackplaneMessage, CacheBackend, ErrorKind, Invalidation, SetOptions,
};
use cache_memory::MemoryBackend;
use cache_redis::{RedisBackend, RedisConfig, RedisTracking, TRACKING_ORIGIN};
use cache_testkit::redis_server::RedisServer;

/// Guard against a hung test (not a timing assertion).
const GUARD: Duration = Duration::from_secs(30);

/// A Tiered with tracking, and its L1 (to look at the copies directly).
struct Tracked {
    tier: Tiered,
    l1: Arc<MemoryBackend>,
}

async fn tracked(server: &RedisServer, prefix: &str) -> Tracked {
    let l1 = Arc::new(MemoryBackend::new());
    let tier = Tiered::new(
        Arc::clone(&l1) as Arc<dyn CacheBackend>,
        Arc::new(RedisBackend::from_url(server.url()).await.unwrap()),
        TieredConfig::default().with_l1_max_ttl(Duration::from_secs(600)),
    )
    .with_backplane(Arc::new(
        RedisTracking::from_url(server.url(), prefix).unwrap(),
    ))
    .await
    .unwrap();
    Tracked { tier, l1 }
}

/// A prefix no other test uses.
fn prefix() -> String {
    format!("trk{}", fastrand::u32(..))
}

/// Waits until `done(stats)` holds; panics after [`GUARD`].
async fn wait_for(tier: &Tiered, what: &str, done: impl Fn(&TieredStats) -> bool) {
    let started = Instant::now();
    while !done(&tier.stats()) {
        assert!(
            started.elapsed() < GUARD,
            "never saw {what}: {:?}",
            tier.stats()
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn invalidations(tier: &Tiered, n: u64) {
    wait_for(tier, &format!("{n} invalidations"), |s| {
        s.invalidations_received >= n
    })
    .await;
    assert_eq!(tier.stats().invalidations_received, n);
}

async fn get(t: &Tracked, key: &str) -> Option<Vec<u8>> {
    t.tier.get(key).await.unwrap().map(|v| v.to_vec())
}

/// `redis-cli SET key value`, checked.
fn cli_set(server: &RedisServer, key: &str, value: &str) {
    assert_eq!(server.cli(&["SET", key, value]), b"OK");
}

/// Seeds `key` with `value` through `redis-cli` (1 invalidation told) and
/// reads it twice: the first read copies it into L1, the second is an L1
/// hit.
async fn seed_and_fill(server: &RedisServer, t: &Tracked, key: &str, value: &str) {
    let before = t.tier.stats();
    cli_set(server, key, value);
    invalidations(&t.tier, before.invalidations_received + 1).await;
    assert_eq!(get(t, key).await.as_deref(), Some(value.as_bytes()));
    assert_eq!(get(t, key).await.as_deref(), Some(value.as_bytes()));
    let after = t.tier.stats();
    assert_eq!(after.l2_hits, before.l2_hits + 1);
    assert_eq!(after.l1_hits, before.l1_hits + 1);
    assert!(t.l1.exists(key).await.unwrap(), "the L1 holds a copy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_tracking_a_redis_cli_set_drops_the_l1_copy() {
    let server = RedisServer::shared();
    let p = prefix();
    let key = format!("{p}:user:1");
    let t = tracked(server, &p).await;
    seed_and_fill(server, &t, &key, "v1").await;

    cli_set(server, &key, "v2");
    invalidations(&t.tier, 2).await;
    assert!(!t.l1.exists(&key).await.unwrap());
    assert_eq!(get(&t, &key).await.as_deref(), Some(&b"v2"[..]));
    assert_eq!(t.tier.stats().l2_hits, 2);
    assert_eq!(t.tier.stats().resyncs, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_tracking_a_redis_cli_del_drops_the_l1_copy() {
    let server = RedisServer::shared();
    let p = prefix();
    let key = format!("{p}:user:1");
    let t = tracked(server, &p).await;
    seed_and_fill(server, &t, &key, "v1").await;

    assert_eq!(server.cli(&["DEL", &key]), b"1");
    invalidations(&t.tier, 2).await;
    assert!(!t.l1.exists(&key).await.unwrap());
    assert_eq!(get(&t, &key).await, None);
    assert_eq!(t.tier.stats().misses, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_tracking_a_write_through_another_instance_drops_the_copy() {
    let server = RedisServer::shared();
    let p = prefix();
    let key = format!("{p}:user:1");
    let a = tracked(server, &p).await;
    let b = tracked(server, &p).await;
    seed_and_fill(server, &b, &key, "v1").await;
    invalidations(&a.tier, 1).await;

    a.tier
        .set(&key, "v2".into(), SetOptions::default())
        .await
        .unwrap();
    // B is told (origin 0 is nobody's own)...
    invalidations(&b.tier, 2).await;
    assert_eq!(get(&b, &key).await.as_deref(), Some(&b"v2"[..]));
    // ...and so is A, about its own write: its copy goes too.
    invalidations(&a.tier, 2).await;
    assert!(!a.l1.exists(&key).await.unwrap());
    assert_eq!(get(&a, &key).await.as_deref(), Some(&b"v2"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_tracking_a_write_outside_the_prefix_drops_nothing() {
    let server = RedisServer::shared();
    let p = prefix();
    let key = format!("{p}:user:1");
    let t = tracked(server, &p).await;
    seed_and_fill(server, &t, &key, "v1").await;

    for outside in [
        format!("{p}2:user:1"),
        format!("{p}x"),
        format!("other:{p}:user:1"),
    ] {
        cli_set(server, &outside, "x");
    }
    // A marker under the prefix, told after anything the writes above
    // would have caused (one server, commands in order).
    cli_set(server, &format!("{p}:marker"), "m");
    invalidations(&t.tier, 2).await;
    assert!(t.l1.exists(&key).await.unwrap());
    assert_eq!(get(&t, &key).await.as_deref(), Some(&b"v1"[..]));
    assert_eq!(t.tier.stats().l1_hits, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_tracking_the_subscription_tells_the_changed_keys_under_the_prefix_only() {
    let server = RedisServer::shared();
    let p = prefix();
    let tracking = RedisTracking::from_url(server.url(), &p).unwrap();
    assert_eq!(tracking.prefix(), format!("{p}:"));
    let mut events = tracking.subscribe().await.unwrap();

    cli_set(server, &format!("{p}2:user:1"), "x");
    cli_set(server, &format!("other:{p}:user:1"), "x");
    cli_set(server, &format!("{p}:user:1"), "x");
    let event = tokio::time::timeout(GUARD, events.recv()).await.unwrap();
    assert_eq!(
        event,
        Some(BackplaneEvent::Message(BackplaneMessage::new(
            TRACKING_ORIGIN,
            Invalidation::Keys(vec![format!("{p}:user:1")]),
        )))
    );
    // publish is a no-op: nothing arrives from it.
    tracking
        .publish(&BackplaneMessage::new(
            7,
            Invalidation::Keys(vec![format!("{p}:user:2")]),
        ))
        .await
        .unwrap();
    assert_eq!(server.cli(&["DEL", &format!("{p}:user:1")]), b"1");
    let event = tokio::time::timeout(GUARD, events.recv()).await.unwrap();
    assert_eq!(
        event,
        Some(BackplaneEvent::Message(BackplaneMessage::new(
            TRACKING_ORIGIN,
            Invalidation::Keys(vec![format!("{p}:user:1")]),
        )))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_tracking_a_flush_clears_the_l1() {
    let server = RedisServer::new();
    let p = prefix();
    let keys = [format!("{p}:user:1"), format!("{p}:user:2")];
    let t = tracked(&server, &p).await;
    for key in &keys {
        seed_and_fill(&server, &t, key, "v1").await;
    }

    assert_eq!(server.cli(&["FLUSHDB"]), b"OK");
    wait_for(&t.tier, "a resync", |s| s.resyncs >= 1).await;
    assert_eq!(t.tier.stats().resyncs, 1);
    assert_eq!(t.tier.stats().invalidations_received, 2);
    for key in &keys {
        assert!(!t.l1.exists(key).await.unwrap());
        assert_eq!(get(&t, key).await, None);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_tracking_a_restart_clears_the_l1_and_tracking_comes_back() {
    let server = RedisServer::new();
    let p = prefix();
    let key = format!("{p}:user:1");
    let t = tracked(&server, &p).await;
    seed_and_fill(&server, &t, &key, "v1").await;

    server.stop();
    wait_for(&t.tier, "the loss", |s| s.resyncs >= 1).await;
    assert_eq!(t.tier.stats().resyncs, 1);
    assert!(!t.l1.exists(&key).await.unwrap(), "the L1 was cleared");

    server.start();
    // Tracking is on again: the second resync.
    wait_for(&t.tier, "tracking back", |s| s.resyncs >= 2).await;
    assert_eq!(t.tier.stats().resyncs, 2);

    // The data is gone (no persistence); the L2 connection reconnects by
    // itself, possibly after the tracking one.
    cli_set(&server, &key, "v3");
    invalidations(&t.tier, 2).await;
    let started = Instant::now();
    loop {
        match t.tier.get(&key).await {
            Ok(value) => {
                assert_eq!(value.as_deref(), Some(&b"v3"[..]));
                break;
            }
            Err(err) => assert!(started.elapsed() < GUARD, "L2 never came back: {err}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(t.l1.exists(&key).await.unwrap());

    cli_set(&server, &key, "v4");
    invalidations(&t.tier, 3).await;
    assert!(!t.l1.exists(&key).await.unwrap());
    assert_eq!(get(&t, &key).await.as_deref(), Some(&b"v4"[..]));
    assert_eq!(t.tier.stats().resyncs, 2);
}

#[test]
fn client_tracking_a_cluster_or_sentinel_configuration_is_unsupported() {
    // Refused from the configuration alone: nothing listens on these ports.
    let cluster = RedisConfig::cluster(["127.0.0.1:1", "127.0.0.1:2"]);
    let err = RedisTracking::new(&cluster, "app").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unsupported);
    assert!(err.to_string().contains("Redis Cluster"), "{err}");
    let sentinel = RedisConfig::sentinel(["127.0.0.1:1"], "mymaster");
    let err = RedisTracking::new(&sentinel, "app").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unsupported);

    #[cfg(feature = "cluster")]
    assert_eq!(
        RedisTracking::from_url("redis+cluster://127.0.0.1:1,127.0.0.1:2", "app")
            .unwrap_err()
            .kind(),
        ErrorKind::Unsupported
    );
}

#[test]
fn client_tracking_a_prefix_a_cache_cannot_have_is_a_config_error() {
    for prefix in ["", "a:b", "a*"] {
        let err = RedisTracking::from_url("redis://127.0.0.1:1", prefix).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config, "{prefix:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_tracking_a_frozen_server_clears_the_l1() {
    // SIGSTOP: the TCP connection stays up and nothing answers; only the
    // PING heartbeat notices (within about 3.5 s).
    let server = RedisServer::new();
    let p = prefix();
    let key = format!("{p}:user:1");
    let t = tracked(&server, &p).await;
    seed_and_fill(&server, &t, &key, "v1").await;

    server.pause();
    wait_for(&t.tier, "the loss", |s| s.resyncs >= 1).await;
    assert!(!t.l1.exists(&key).await.unwrap(), "the L1 was cleared");
    server.resume();
    wait_for(&t.tier, "tracking back", |s| s.resyncs >= 2).await;
    assert_eq!(t.tier.stats().resyncs, 2);

    // The data survived (same process): read, copy, and be told again.
    assert_eq!(get(&t, &key).await.as_deref(), Some(&b"v1"[..]));
    assert!(t.l1.exists(&key).await.unwrap());
    cli_set(&server, &key, "v2");
    invalidations(&t.tier, 2).await;
    assert_eq!(get(&t, &key).await.as_deref(), Some(&b"v2"[..]));
}
