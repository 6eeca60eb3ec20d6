//! The third-party backend of `examples/src/custom_backend.rs` runs the
//! conformance suite, exactly as a backend crate's `tests/conformance.rs`
//! would: one named test per rule of `CacheBackend`'s `# Behavior`.

use std::sync::Arc;

use cache::CacheBackend;
use cache_examples::custom_backend::BTreeBackend;

async fn btree() -> Arc<dyn CacheBackend> {
    Arc::new(BTreeBackend::new())
}

cache_testkit::conformance_suite!(btree_backend, btree);

/// The rate limiter and the typed cache run on it unchanged.
#[tokio::test]
async fn custom_backend_runs_the_rate_limiter_and_the_cache() {
    use cache::{Cache, CacheKey, RateLimiter, Rule};

    let backend = btree().await;
    let limiter = RateLimiter::builder(backend.clone())
        .prefix("limits")
        .rule("api", Rule::per_minute(3))
        .build()
        .unwrap();
    let mut allowed = 0;
    for _ in 0..10 {
        allowed += usize::from(limiter.check("api", "ada").await.unwrap().allowed);
    }
    assert_eq!(allowed, 3);

    let cache = Cache::new(backend);
    let key = CacheKey::new("user", 1).unwrap();
    let name: String = cache
        .get_or_set(&key, || async { Ok::<_, std::io::Error>("Ada".to_owned()) })
        .await
        .unwrap();
    assert_eq!(name, "Ada");
    // The cache's clear() removes its own keys, not the limiter's counters.
    assert!(cache.clear().await.unwrap() >= 1);
    assert_eq!(cache.get::<String>(&key).await.unwrap(), None);
    assert!(!limiter.check("api", "ada").await.unwrap().allowed);
}
