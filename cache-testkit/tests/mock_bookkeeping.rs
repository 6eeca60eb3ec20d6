//! `MockBackend::allow_bookkeeping`: an exact-call test of code using a
//! `Cache` states only its own calls; the cache's category generations
//! (`{prefix}:#gen:{category}`, read, created and bumped behind every
//! operation) are answered by the mock itself, like a store.
//!
//! How it could fail: a bookkeeping call left unanswered (the mock panics
//! "No matching expectation"), generations not kept (after
//! `invalidate_category` the cache would still use `app:user:1`, or fail),
//! or a matcher too wide, swallowing a user key that merely contains
//! `#gen:` (the test's own `times(1)` expectation then sees no call and
//! mockall panics when the mock is dropped).

use std::sync::Arc;

use cache_core::{Bytes, Cache, CacheKey};
use cache_testkit::MockBackend;

fn cache(mock: MockBackend) -> Cache {
    Cache::builder(Arc::new(mock))
        .prefix("app")
        .build()
        .unwrap()
}

#[tokio::test]
async fn exact_calls_need_not_know_the_generation_keys() {
    let mut mock = MockBackend::new();
    mock.allow_bookkeeping();
    mock.expect_get()
        .withf(|key| key == "app:user:1")
        .times(2)
        .returning(|_| Ok(Some(Bytes::from_static(b"\"Ada\""))));
    let cache = cache(mock);
    let user = CacheKey::new("user", 1).unwrap();
    for _ in 0..2 {
        let name = cache.get::<String>(&user).await.unwrap();
        assert_eq!(name.as_deref(), Some("Ada"));
    }
}

#[tokio::test]
async fn generations_are_kept_so_invalidation_moves_to_the_next_key() {
    let mut mock = MockBackend::new();
    mock.allow_bookkeeping();
    mock.expect_delete()
        .withf(|key| key == "app:user#2:1")
        .times(1)
        .returning(|_| Ok(false));
    let cache = cache(mock);
    let user = CacheKey::new("user", 1).unwrap();
    assert_eq!(cache.full_key(&user).await.unwrap(), "app:user:1");
    assert_eq!(cache.invalidate_category("user").await.unwrap(), 1);
    assert_eq!(cache.invalidate_category("user").await.unwrap(), 2);
    assert!(!cache.delete(&user).await.unwrap());
    // Other categories keep generation 0.
    let order = CacheKey::new("order", 1).unwrap();
    assert_eq!(cache.full_key(&order).await.unwrap(), "app:order:1");
}

#[tokio::test]
async fn a_user_key_that_contains_gen_is_not_bookkeeping() {
    let mut mock = MockBackend::new();
    mock.allow_bookkeeping();
    // Id `#gen`, version 1: `app:x:#gen:v1` holds `:#gen:` but is a value.
    mock.expect_get()
        .withf(|key| key == "app:x:#gen:v1")
        .times(1)
        .returning(|_| Ok(Some(Bytes::from_static(b"7"))));
    let cache = cache(mock);
    let key = CacheKey::new("x", "#gen").unwrap().with_version(1);
    assert_eq!(cache.get::<u32>(&key).await.unwrap(), Some(7));
}

#[tokio::test]
#[should_panic(expected = "No matching expectation")]
async fn without_it_the_bookkeeping_reaches_the_expectations() {
    let mut mock = MockBackend::new();
    mock.expect_get()
        .withf(|key| key == "app:user:1")
        .returning(|_| Ok(None));
    let cache = cache(mock);
    let _ = cache
        .get::<String>(&CacheKey::new("user", 1).unwrap())
        .await;
}
