//! stampede through the configuration: `cache::open` with a `stampede`
//! section (or `CACHE_STAMPEDE=true`) gives caches that share one loader
//! per key across instances. Two instances on one Redis, a cold key, a slow
//! loader: one load, the other instance waits for it and reads its value.
//! Without the section each instance loads.
#![cfg(all(feature = "redis", feature = "memory"))]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cache::{Cache, CacheConfig, CacheKey};
use cache_testkit::redis_server::RedisServer;

fn config(url: &str, stampede: bool) -> CacheConfig {
    CacheConfig::from_lookup(|name| match name {
        "CACHE_URL" => Some(url.to_owned()),
        "CACHE_PREFIX" => Some("herd".to_owned()),
        "CACHE_STAMPEDE" => Some(stampede.to_string()),
        _ => None,
    })
    .unwrap()
}

/// Both instances ask for the same cold key at once; returns how many
/// loads ran and what each got.
async fn herd(a: &Cache, b: &Cache) -> (usize, Vec<String>) {
    let loads = Arc::new(AtomicUsize::new(0));
    let key = CacheKey::new("report", 1).unwrap();
    let call = |cache: &Cache| {
        let (cache, loads, key) = (cache.clone(), Arc::clone(&loads), key.clone());
        tokio::spawn(async move {
            cache
                .get_or_set(&key, move || async move {
                    let n = loads.fetch_add(1, Ordering::SeqCst) + 1;
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    Ok::<_, std::io::Error>(format!("load {n}"))
                })
                .await
                .unwrap()
        })
    };
    let (x, y) = (call(a), call(b));
    let got = vec![x.await.unwrap(), y.await.unwrap()];
    (loads.load(Ordering::SeqCst), got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stampede_from_config_loads_once_across_instances() {
    let server = RedisServer::new();
    let on = config(server.url(), true);
    assert!(on.stampede.is_some());
    let (a, b) = (
        cache::open(&on).await.unwrap(),
        cache::open(&on).await.unwrap(),
    );
    let (loads, got) = herd(&a, &b).await;
    assert_eq!(loads, 1);
    assert_eq!(got, ["load 1", "load 1"]);
    let waits = a.stats().lease_waits + b.stats().lease_waits;
    assert_eq!(waits, 1, "the second instance waited on the lease");

    // Without it, each instance loads.
    server.cli(&["FLUSHALL"]);
    let off = config(server.url(), false);
    assert!(off.stampede.is_none());
    let (a, b) = (
        cache::open(&off).await.unwrap(),
        cache::open(&off).await.unwrap(),
    );
    let (loads, _) = herd(&a, &b).await;
    assert_eq!(loads, 2);
}
