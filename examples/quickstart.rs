//! Quickstart: user profiles behind a slow loader.
//!
//! Shows typed `get_or_set` with single flight, TTL categories, invalidation
//! by key and by category, and the stats.
//!
//! ```text
//! cargo run --example quickstart                               # in memory
//! CACHE_URL=redis://127.0.0.1:6379 cargo run --example quickstart  # on Redis
//! ```
//!
//! The cache comes from the `CACHE_*` variables through `cache::open`
//! (see `src/stack.rs`), so every documented variable applies.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cache::{Cache, CacheKey};
use cache_examples::stack::ExampleConfig;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Profile {
    id: u64,
    name: String,
    plan: String,
}

/// The slow part of the service: a database query that takes 100 ms.
struct Database {
    queries: AtomicU32,
}

impl Database {
    async fn load_profile(&self, id: u64) -> Result<Profile, std::io::Error> {
        self.queries.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(100)).await;
        Ok(Profile {
            id,
            name: format!("user-{id}"),
            plan: if id % 2 == 0 { "pro" } else { "free" }.to_owned(),
        })
    }
}

async fn profile(cache: &Cache, db: &Arc<Database>, id: u64) -> cache::Result<Profile> {
    let db = Arc::clone(db);
    cache
        .get_or_set(&CacheKey::new("profile", id)?, move || async move {
            db.load_profile(id).await
        })
        .await
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // CACHE_URL picks the backend (memory:// when unset), every other
    // CACHE_* variable applies; on Redis the production stack (L1, 250 ms
    // deadline, fail-open) fills in what is unset. TTLs by category.
    let mut settings = ExampleConfig::from_env()?;
    let config = settings.config_mut();
    if config.prefix == cache::DEFAULT_PREFIX {
        config.prefix = "quickstart".to_owned();
    }
    config.default_ttl_secs.get_or_insert(300);
    config.ttls.entry("profile".to_owned()).or_insert(60);
    let cache = settings.open().await?;
    cache.clear().await?; // start clean, also on a shared Redis
    println!("cache: {}", settings.describe());

    let db = Arc::new(Database {
        queries: AtomicU32::new(0),
    });

    // 1. A miss loads from the database; the next read is a hit.
    let started = Instant::now();
    let p = profile(&cache, &db, 1).await?;
    println!("miss: {} ({}) in {:?}", p.name, p.plan, started.elapsed());
    let started = Instant::now();
    let p = profile(&cache, &db, 1).await?;
    println!("hit:  {} ({}) in {:?}", p.name, p.plan, started.elapsed());

    // 2. 100 concurrent requests for a cold key: one database query.
    let before = db.queries.load(Ordering::SeqCst);
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let (cache, db) = (cache.clone(), Arc::clone(&db));
        tasks.push(tokio::spawn(async move { profile(&cache, &db, 2).await }));
    }
    for task in tasks {
        task.await??;
    }
    let queries = db.queries.load(Ordering::SeqCst) - before;
    println!("100 concurrent requests for a cold key -> {queries} database query");
    assert_eq!(queries, 1);

    // 3. Invalidate one key after an update: the next read reloads it.
    cache.delete(&CacheKey::new("profile", 1)?).await?;
    profile(&cache, &db, 1).await?;

    // 4. Invalidate a whole category in O(1), e.g. after a schema change.
    for id in 10..20 {
        profile(&cache, &db, id).await?;
    }
    let generation = cache.invalidate_category("profile").await?;
    let miss = cache.get::<Profile>(&CacheKey::new("profile", 10)?).await?;
    println!(
        "after invalidate_category (generation {generation}): profile 10 cached = {}",
        miss.is_some()
    );
    assert!(miss.is_none());

    // 5. Cached "nothing" is a hit too: remember that user 404 does not exist.
    let missing = CacheKey::new("profile-missing", 404)?;
    cache.set(&missing, &Option::<Profile>::None).await?;
    assert_eq!(cache.get::<Option<Profile>>(&missing).await?, Some(None));

    let stats = cache.stats();
    println!(
        "stats: hits={} misses={} coalesced={} hit_rate={:.2} sets={} deletes={} loader_calls={} errors={}",
        stats.hits,
        stats.misses,
        stats.coalesced,
        stats.hit_rate(),
        stats.sets,
        stats.deletes,
        stats.loader_calls,
        stats.errors
    );
    println!("database queries: {}", db.queries.load(Ordering::SeqCst));
    cache.close().await?;
    Ok(())
}
