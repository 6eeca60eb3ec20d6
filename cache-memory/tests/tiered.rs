//! `Tiered` with a bounded memory L1 over a memory L2: the conformance suite,
//! and the tier's own rules (L1 TTLs, the staleness window, counters,
//! coherence under concurrent calls).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cache_core::layers::{Tiered, TieredConfig};
use cache_core::{CacheBackend, ErrorKind, HealthStatus, KeyTtl, SetMode, SetOptions};
use cache_memory::{MemoryBackend, MemoryConfig};
use cache_testkit::{FaultConfig, FaultInjecting};

fn l1() -> Arc<MemoryBackend> {
    // Bounded, as an L1 is in practice, with room for every case's data.
    Arc::new(MemoryBackend::with_config(
        MemoryConfig::default()
            .with_max_entries(10_000)
            .with_max_bytes(64 << 20),
    ))
}

fn l2() -> Arc<MemoryBackend> {
    // A 2 MiB value limit makes the oversize-value case run.
    Arc::new(MemoryBackend::with_config(
        MemoryConfig::default().with_max_value_size(2 << 20),
    ))
}

async fn tiered_memory() -> Arc<dyn CacheBackend> {
    Arc::new(Tiered::new(l1(), l2(), TieredConfig::default()))
}

cache_testkit::conformance_suite!(tiered_memory_over_memory, tiered_memory);

struct Setup {
    l1: Arc<MemoryBackend>,
    l2: Arc<MemoryBackend>,
    tiered: Tiered,
}

fn setup(config: TieredConfig) -> Setup {
    let (l1, l2) = (l1(), l2());
    let tiered = Tiered::new(l1.clone(), l2.clone(), config);
    Setup { l1, l2, tiered }
}

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn ttl_ms(ms: u64) -> SetOptions {
    SetOptions::ttl(Some(Duration::from_millis(ms)))
}

/// The remaining TTL of `key` in `backend`, which must be `Expires`.
async fn expires_in(backend: &dyn CacheBackend, key: &str) -> Duration {
    match backend.ttl(key).await.unwrap() {
        KeyTtl::Expires(left) => left,
        other => panic!("{key} should expire, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l1_copy_ttl_is_capped_by_l2_remaining_ttl() {
    let s = setup(TieredConfig::default());
    s.l2.set("k", b("v"), ttl_ms(300)).await.unwrap();
    assert_eq!(s.tiered.get("k").await.unwrap(), Some(b("v")));
    let left = expires_in(&*s.l1, "k").await;
    assert!(
        left <= Duration::from_millis(300),
        "the L1 copy must not outlive L2's 300 ms, got {left:?}"
    );
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(s.tiered.get("k").await.unwrap(), None);
    assert_eq!(s.l1.get("k").await.unwrap(), None, "the copy expired too");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l1_copy_ttl_is_capped_by_l1_max_ttl() {
    let cap = Duration::from_secs(2);
    let s = setup(TieredConfig::default().with_l1_max_ttl(cap));

    // Copies made by reads.
    s.l2.set("persistent", b("p"), SetOptions::default())
        .await
        .unwrap();
    s.l2.set("long", b("l"), ttl_ms(60_000)).await.unwrap();
    for key in ["persistent", "long"] {
        assert!(s.tiered.get(key).await.unwrap().is_some());
        let left = expires_in(&*s.l1, key).await;
        assert!(left <= cap, "{key}: L1 copy lives {left:?}, cap is {cap:?}");
    }

    // Copies made by writes.
    s.tiered
        .set("written", b("w"), SetOptions::default())
        .await
        .unwrap();
    assert!(expires_in(&*s.l1, "written").await <= cap);
    assert_eq!(
        s.tiered.ttl("written").await.unwrap(),
        KeyTtl::Persistent,
        "ttl is L2's answer"
    );
    s.tiered.set("short", b("s"), ttl_ms(300)).await.unwrap();
    assert!(expires_in(&*s.l1, "short").await <= Duration::from_millis(300));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_many_copies_are_capped_by_l1_max_ttl() {
    let cap = Duration::from_secs(1);
    let s = setup(TieredConfig::default().with_l1_max_ttl(cap));
    s.l2.set("a", b("1"), ttl_ms(60_000)).await.unwrap();
    s.l2.set("b", b("2"), SetOptions::default()).await.unwrap();
    let got = s.tiered.get_many(&["a", "x", "b", "a"]).await.unwrap();
    assert_eq!(got, vec![Some(b("1")), None, Some(b("2")), Some(b("1"))]);
    for key in ["a", "b"] {
        assert!(expires_in(&*s.l1, key).await <= cap);
    }
    assert_eq!(s.l1.get("x").await.unwrap(), None);
}

/// A copy made by `get_many` keeps L2's remaining TTL: once the key has
/// expired in L2, `get_many` (and `get`) no longer return it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_many_copies_never_outlive_l2() {
    let s = setup(TieredConfig::default().with_l1_max_ttl(Duration::from_secs(60)));
    s.l2.set("short", b("s"), ttl_ms(200)).await.unwrap();
    s.l2.set("long", b("l"), ttl_ms(60_000)).await.unwrap();
    let got = s.tiered.get_many(&["short", "long"]).await.unwrap();
    assert_eq!(got, vec![Some(b("s")), Some(b("l"))]);
    assert!(expires_in(&*s.l1, "short").await <= Duration::from_millis(200));
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(s.l2.get("short").await.unwrap(), None, "expired in L2");
    let got = s.tiered.get_many(&["short", "long"]).await.unwrap();
    assert_eq!(got, vec![None, Some(b("l"))]);
    assert_eq!(s.tiered.get("short").await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_by_another_instance_is_served_from_l1_until_the_copy_expires() {
    let s = setup(TieredConfig::default().with_l1_max_ttl(Duration::from_millis(300)));
    s.tiered
        .set("k", b("v"), SetOptions::default())
        .await
        .unwrap();
    // Another instance deletes the value in the shared L2.
    assert!(s.l2.delete("k").await.unwrap());
    // The documented staleness window: this instance still has its copy.
    assert_eq!(s.tiered.get("k").await.unwrap(), Some(b("v")));
    assert!(s.tiered.exists("k").await.unwrap());
    assert_eq!(s.tiered.ttl("k").await.unwrap(), KeyTtl::Missing);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(s.tiered.get("k").await.unwrap(), None, "the window is over");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_count_where_reads_were_answered() {
    let s = setup(TieredConfig::default());
    let count = |t: &Tiered| {
        let stats = t.stats();
        (stats.l1_hits, stats.l2_hits, stats.misses)
    };
    assert_eq!(s.tiered.get("a").await.unwrap(), None);
    assert_eq!(count(&s.tiered), (0, 0, 1));
    s.l2.set("a", b("1"), SetOptions::default()).await.unwrap();
    s.tiered.get("a").await.unwrap();
    assert_eq!(count(&s.tiered), (0, 1, 1), "from L2");
    s.tiered.get("a").await.unwrap();
    assert_eq!(count(&s.tiered), (1, 1, 1), "from the L1 copy");
    s.l2.set("c", b("3"), SetOptions::default()).await.unwrap();
    s.tiered.get_many(&["a", "b", "c"]).await.unwrap();
    assert_eq!(count(&s.tiered), (2, 2, 2), "one of each");
    s.tiered.get_many(&["a", "c"]).await.unwrap();
    assert_eq!(count(&s.tiered), (4, 2, 2), "get_many copied c into L1");
}

/// A read in two parts (`get_now_joined`, how `Cache` reads a key) is
/// answered by the L1 copy and counted as an L1 hit; an L1 miss and a key
/// this layer refuses are left to the caller (which reads L2, or joins the
/// key and has `get_now` report the refusal).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_in_two_parts_is_an_l1_hit_and_leaves_the_rest_to_the_caller() {
    let s = setup(TieredConfig::default());
    s.l2.set("user:1", b("Ada"), SetOptions::default())
        .await
        .unwrap();
    assert!(s.tiered.get_now_joined("user:", "1").is_none(), "not in L1");
    assert_eq!(s.tiered.get("user:1").await.unwrap(), Some(b("Ada")));
    let before = s.tiered.stats().l1_hits;
    for (head, tail) in [("user:", "1"), ("", "user:1"), ("user:1", "")] {
        let read = s.tiered.get_now_joined(head, tail).map(Result::unwrap);
        assert_eq!(read, Some(Some(b("Ada"))), "{head:?} + {tail:?}");
    }
    assert_eq!(s.tiered.stats().l1_hits - before, 3);
    assert!(
        s.tiered.get_now_joined("user:", "2").is_none(),
        "an L1 miss"
    );
    let long = "k".repeat(cache_core::MAX_KEY_LEN);
    for (head, tail) in [("", ""), (long.as_str(), "1")] {
        assert!(s.tiered.get_now_joined(head, tail).is_none(), "refused");
        let joined = format!("{head}{tail}");
        let refusal = s.tiered.get_now(&joined).unwrap().unwrap_err();
        assert_eq!(refusal.kind(), ErrorKind::InvalidKey);
    }
    assert_eq!(s.tiered.stats().l1_hits - before, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_if_absent_drops_the_l1_copy() {
    let s = setup(TieredConfig::default());
    s.l1.set("k", b("stale"), SetOptions::default())
        .await
        .unwrap();
    s.l2.set("k", b("current"), SetOptions::default())
        .await
        .unwrap();
    let wrote = s
        .tiered
        .set(
            "k",
            b("new"),
            SetOptions::default().with_mode(SetMode::IfAbsent),
        )
        .await
        .unwrap();
    assert!(!wrote, "L2 decides: the key is there");
    assert_eq!(s.l1.get("k").await.unwrap(), None);
    assert_eq!(s.tiered.get("k").await.unwrap(), Some(b("current")));

    let wrote = s
        .tiered
        .set(
            "fresh",
            b("v"),
            SetOptions::default().with_mode(SetMode::IfAbsent),
        )
        .await
        .unwrap();
    assert!(wrote);
    assert_eq!(s.l1.get("fresh").await.unwrap(), Some(b("v")), "copied");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_l2_write_drops_the_l1_copy_and_returns_the_error() {
    let l1 = l1();
    let l2 = Arc::new(FaultInjecting::new(
        MemoryBackend::new(),
        FaultConfig::none(),
    ));
    let tiered = Tiered::new(l1.clone(), l2.clone(), TieredConfig::default());
    tiered
        .set("k", b("v1"), SetOptions::default())
        .await
        .unwrap();
    assert_eq!(l1.get("k").await.unwrap(), Some(b("v1")));

    l2.set_config(FaultConfig::none().with_fail_every(1));
    let err = tiered
        .set("k", b("v2"), SetOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Connection);
    assert_eq!(l1.get("k").await.unwrap(), None, "no copy of either value");
    let err = tiered.set_many(&[("k", b("v3"))], None).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Connection);

    l2.set_config(FaultConfig::none());
    assert_eq!(tiered.get("k").await.unwrap(), Some(b("v1")), "L2 kept v1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incr_and_expire_drop_the_l1_copy() {
    let s = setup(TieredConfig::default());
    s.tiered
        .set("c", b("10"), SetOptions::default())
        .await
        .unwrap();
    assert_eq!(s.tiered.incr("c", 1, None).await.unwrap(), 11);
    assert_eq!(s.l1.get("c").await.unwrap(), None);
    assert_eq!(s.tiered.get("c").await.unwrap(), Some(b("11")));

    s.tiered.set("e", b("v"), ttl_ms(60_000)).await.unwrap();
    assert!(s
        .tiered
        .expire("e", Some(Duration::from_millis(200)))
        .await
        .unwrap());
    assert_eq!(s.l1.get("e").await.unwrap(), None);
    assert_eq!(s.tiered.get("e").await.unwrap(), Some(b("v")));
    assert!(expires_in(&*s.l1, "e").await <= Duration::from_millis(200));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletes_and_patterns_reach_both_tiers() {
    let s = setup(TieredConfig::default());
    for key in ["a:1", "a:2", "b:1", "c:1"] {
        s.tiered
            .set(key, b("v"), SetOptions::default())
            .await
            .unwrap();
    }
    assert_eq!(s.tiered.delete_matching("a:*").await.unwrap(), 2);
    assert_eq!(s.tiered.delete_many(&["b:1", "nope"]).await.unwrap(), 1);
    assert_eq!(s.tiered.clear("c:").await.unwrap(), 1);
    assert!(s.l1.scan("*").await.unwrap().is_empty());
    assert!(s.l2.scan("*").await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_capabilities_and_close_cover_both_tiers() {
    let small_l1 = Arc::new(MemoryBackend::with_config(
        MemoryConfig::default().with_max_value_size(1024),
    ));
    let l2 = l2();
    let tiered = Tiered::new(small_l1.clone(), l2.clone(), TieredConfig::default());
    assert_eq!(tiered.name(), "tiered");
    assert_eq!(tiered.capabilities().max_value_size, 1024, "the smaller");
    let err = tiered
        .set("big", Bytes::from(vec![0u8; 2000]), SetOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidValue);
    assert!(!l2.exists("big").await.unwrap(), "refused before L2");

    let health = tiered.health().await.unwrap();
    assert_eq!(health.status, HealthStatus::Healthy);
    assert_eq!(health.details["l1_status"], "healthy");
    assert!(health.details.contains_key("l1_entries"));
    assert!(health.details.contains_key("entries"), "L2's own details");

    tiered.close().await.unwrap();
    assert_eq!(
        tiered.health().await.unwrap().status,
        HealthStatus::Unhealthy
    );
    assert_eq!(
        small_l1.health().await.unwrap().status,
        HealthStatus::Unhealthy
    );
    assert_eq!(l2.health().await.unwrap().status, HealthStatus::Unhealthy);
}

/// Writes, deletes, expiries and reads of a few keys from many tasks at
/// once, over tiers slowed down so that calls interleave; afterwards every
/// L1 copy must equal L2's value. (Without the tier's write tracking, a
/// read that copies an old value after a write, or two writes landing in L1
/// in the other order than in L2, leave a copy that contradicts L2.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_leave_no_contradicting_copy() {
    const KEYS: [&str; 3] = ["k0", "k1", "k2"];
    let slow = FaultConfig::none().with_latency(Duration::from_millis(1));
    for round in 0..24 {
        let l1 = Arc::new(FaultInjecting::new(MemoryBackend::new(), slow));
        let l2 = Arc::new(FaultInjecting::new(MemoryBackend::new(), slow));
        let tiered = Arc::new(Tiered::new(l1.clone(), l2.clone(), TieredConfig::default()));
        let mut tasks = Vec::new();
        for t in 0..12u64 {
            let tiered = Arc::clone(&tiered);
            tasks.push(tokio::spawn(async move {
                for i in 0..20u64 {
                    let key = KEYS[((t + i) % 3) as usize];
                    let value = Bytes::from(format!("{t}-{i}"));
                    let result = match (t * 7 + i) % 6 {
                        0 => tiered
                            .set(key, value, SetOptions::default())
                            .await
                            .map(drop),
                        1 => tiered.delete(key).await.map(drop),
                        2 => tiered.set_many(&[(key, value)], None).await,
                        3 => tiered.get_many(&KEYS).await.map(drop),
                        4 => tiered.expire(key, None).await.map(drop),
                        _ => tiered.get(key).await.map(drop),
                    };
                    result.unwrap();
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        for key in KEYS {
            let copy = l1.inner().get(key).await.unwrap();
            let original = l2.inner().get(key).await.unwrap();
            assert!(
                copy.is_none() || copy == original,
                "round {round}: L1 holds {copy:?} for {key}, L2 {original:?}"
            );
        }
    }
}
