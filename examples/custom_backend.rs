//! A third-party backend: `BTreeBackend` (in `src/custom_backend.rs`),
//! written against the public `CacheBackend` trait, checked by the
//! conformance suite, then used like any built-in backend.
//!
//! ```text
//! cargo run --example custom_backend      # runs the suite and uses the backend
//! cargo test -p cache-examples --test custom_backend   # the suite as named tests
//! ```
//!
//! A backend author's crate looks the same: the backend in `src/`, and in
//! `tests/conformance.rs`:
//!
//! ```text
//! async fn backend() -> Arc<dyn CacheBackend> { Arc::new(MyBackend::new()) }
//! cache_testkit::conformance_suite!(my_backend, backend);
//! ```

use std::sync::Arc;

use cache::{CacheBackend, CacheConfig, CacheKey};
use cache_examples::custom_backend::BTreeBackend;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // 1. The conformance suite, case by case, on fresh backends.
    let report =
        cache_testkit::run_all(|| async { Arc::new(BTreeBackend::new()) as Arc<dyn CacheBackend> })
            .await;
    println!(
        "conformance: {} passed, {} skipped, {} failed",
        report.passed.len(),
        report.skipped.len(),
        report.failed.len()
    );
    for (case, why) in &report.skipped {
        println!("  skipped {case}: {why}");
    }
    for (case, message) in &report.failed {
        println!("  FAILED {case}: {message}");
    }
    report.assert_passed();

    // 2. Then it is a drop-in backend: the whole stack a configuration
    //    describes (here a deadline on every call and fail-open; an L1, the
    //    backplane... as for the built-in backends) over it...
    let config = CacheConfig::from_json(
        r#"{ "prefix": "shop", "timeout_ms": 250, "fail_open": {},
             "rate_limits": { "checkout": "2/min" } }"#,
    )?;
    let backend: Arc<dyn CacheBackend> = Arc::new(BTreeBackend::new());
    let cache = cache::open_with(&config, Arc::clone(&backend)).await?;
    for id in 1..=3 {
        cache
            .set(&CacheKey::new("order", format!("2024-{id}"))?, &id)
            .await?;
    }
    cache.set(&CacheKey::new("order", "2025-1")?, &4).await?;
    let removed = cache.invalidate_matching("order", "2024-*").await?;
    println!("invalidate_matching(order, 2024-*) removed {removed} keys");

    // ...and the rate limiter, with the configured rules, on the backend
    //    under fail-open (it must see failures).
    let limiter = config.rate_limiter(&cache)?;
    for attempt in 1..=3 {
        let decision = limiter.check("checkout", "ada").await?;
        println!(
            "checkout attempt {attempt}: allowed={} remaining={}",
            decision.allowed, decision.remaining
        );
    }
    let health = backend.health().await?;
    println!("health: {:?}, details {:?}", health.status, health.details);
    Ok(())
}
