//! A `get_or_set` load never overwrites a value written after the load
//! started: not by this cache (write tracking), and not by another
//! instance when the load began from a miss (the store is `IfAbsent`).
//! It fails if a slow loader's value lands over a newer `set`, or comes
//! back after a newer `delete`.

use std::sync::Arc;
use std::time::Duration;

use cache_core::{Cache, CacheBackend, CacheKey};
use cache_memory::MemoryBackend;
use tokio::sync::Notify;

/// A loader that returns `value` once `gate` is notified.
fn gated(
    gate: Arc<Notify>,
    value: &'static str,
) -> impl FnOnce() -> std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<String, std::io::Error>> + Send>,
> + Send
       + 'static {
    move || {
        Box::pin(async move {
            gate.notified().await;
            Ok(value.to_string())
        })
    }
}

async fn settle() {
    tokio::time::sleep(Duration::from_millis(50)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_set_during_the_load_wins() {
    let cache = Cache::new(Arc::new(MemoryBackend::new()));
    let key = CacheKey::new("user", 1).unwrap();
    let gate = Arc::new(Notify::new());
    let load = tokio::spawn({
        let (cache, key, gate) = (cache.clone(), key.clone(), gate.clone());
        async move { cache.get_or_set(&key, gated(gate, "old")).await }
    });
    settle().await;
    cache.set(&key, &"new".to_string()).await.unwrap();
    gate.notify_one();
    assert_eq!(
        load.await.unwrap().unwrap(),
        "old",
        "the caller gets its load"
    );
    settle().await;
    assert_eq!(
        cache.get::<String>(&key).await.unwrap().as_deref(),
        Some("new")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_during_the_load_wins() {
    let cache = Cache::new(Arc::new(MemoryBackend::new()));
    let key = CacheKey::new("user", 1).unwrap();
    cache.set(&key, &"v1".to_string()).await.unwrap();
    cache.delete(&key).await.unwrap();
    let gate = Arc::new(Notify::new());
    let load = tokio::spawn({
        let (cache, key, gate) = (cache.clone(), key.clone(), gate.clone());
        async move { cache.get_or_set(&key, gated(gate, "loaded")).await }
    });
    settle().await;
    // Written and deleted while the load runs: the load's value is older.
    cache.set(&key, &"v2".to_string()).await.unwrap();
    cache.delete(&key).await.unwrap();
    gate.notify_one();
    assert_eq!(load.await.unwrap().unwrap(), "loaded");
    settle().await;
    assert_eq!(cache.get::<String>(&key).await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_instances_set_during_the_load_wins() {
    let backend: Arc<dyn CacheBackend> = Arc::new(MemoryBackend::new());
    let a = Cache::new(backend.clone());
    let b = Cache::new(backend);
    let key = CacheKey::new("user", 1).unwrap();
    let gate = Arc::new(Notify::new());
    let load = tokio::spawn({
        let (a, key, gate) = (a.clone(), key.clone(), gate.clone());
        async move { a.get_or_set(&key, gated(gate, "old")).await }
    });
    settle().await;
    b.set(&key, &"new".to_string()).await.unwrap();
    gate.notify_one();
    assert_eq!(load.await.unwrap().unwrap(), "old");
    settle().await;
    assert_eq!(a.get::<String>(&key).await.unwrap().as_deref(), Some("new"));
    assert_eq!(b.get::<String>(&key).await.unwrap().as_deref(), Some("new"));
}
