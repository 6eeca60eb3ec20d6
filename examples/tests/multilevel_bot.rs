//! The multi-level assistant bot: per-tier stats from a `cache::open`
//! cache are exact, and two instances over one real Redis (from the
//! testkit) stay coherent through the backplane.
//!
//! They fail if the Tiered layer's counters are not attached by
//! `cache::open` (`l1_hits`/`l2_hits` stay 0), if a tier is counted for
//! the other, or if an instance keeps serving its L1 copy after another
//! instance's write (the backplane's invalidation not applied): B's next
//! read would return the old permissions.

use std::sync::Arc;
use std::time::Duration;

use cache::CacheStats;
use cache_examples::multilevel_bot::{
    bot_config, open_instances, run, wait_for_backplane, Backend, Instance, RunConfig,
};
use cache_examples::stack::ExampleConfig;
use cache_testkit::redis_server::RedisServer;

/// The bot's configuration on the testkit's Redis, under a prefix (and so
/// a backplane channel) of this test's own.
fn on_redis() -> ExampleConfig {
    let mut config = ExampleConfig::from_url(RedisServer::shared().url());
    config.config_mut().prefix = format!("mlbot{}", fastrand::u64(..));
    bot_config(config)
}

/// `after - before` for the counters the tests look at: (typed hits,
/// typed misses, L1 hits, L2 hits).
fn delta(before: &CacheStats, after: &CacheStats) -> (u64, u64, u64, u64) {
    (
        after.hits - before.hits,
        after.misses - before.misses,
        after.l1_hits - before.l1_hits,
        after.l2_hits - before.l2_hits,
    )
}

async fn two_instances() -> (Instance, Instance, Arc<Backend>) {
    let backend = Arc::new(Backend::new(Duration::from_millis(1)));
    let mut instances = open_instances(&on_redis(), &backend).await.unwrap();
    assert_eq!(instances.len(), 2);
    let b = instances.pop().unwrap();
    let a = instances.pop().unwrap();
    (a, b, backend)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multilevel_bot_a_permission_change_on_a_is_seen_by_bs_next_read() {
    let (a, b, backend) = two_instances().await;
    let before = a.permissions(7).await.unwrap();
    assert_eq!(before.version, 1);
    wait_for_backplane(&a.cache, &b.cache).await;
    // B reads it twice: from Redis (copied into its L1), then from its L1.
    assert_eq!(b.permissions(7).await.unwrap(), before);
    let warm = b.cache.stats();
    assert_eq!(b.permissions(7).await.unwrap(), before);
    assert_eq!(delta(&warm, &b.cache.stats()).3, 0, "not from the L1");

    let granted = a.grant(7, "admin").await.unwrap();
    assert_eq!(granted.version, 2);
    wait_for_backplane(&a.cache, &b.cache).await;
    let (a_stats, b_stats) = (a.cache.stats(), b.cache.stats());
    assert_eq!(
        b_stats.invalidations_received,
        a_stats.invalidations_published
    );
    // B's next read: the new permissions, exactly, from Redis (its L1
    // copy was dropped), without a load of its own.
    assert_eq!(b.permissions(7).await.unwrap(), granted);
    assert_eq!(delta(&b_stats, &b.cache.stats()), (1, 0, 1, 1));
    assert_eq!(backend.calls().permissions, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multilevel_bot_per_tier_hits_are_exact_on_redis() {
    const N: u64 = 10;
    let (a, b, backend) = two_instances().await;
    // A loads the key (a miss: the marker and the value are stored, in
    // Redis and in A's L1).
    let start = a.cache.stats();
    a.session(3).await.unwrap();
    assert_eq!(delta(&start, &a.cache.stats()), (0, 1, 0, 0));
    let warm = a.cache.stats();
    for _ in 0..N {
        a.session(3).await.unwrap();
    }
    // N typed hits; through the stack, each read the value and the
    // category's generation marker (read every time with a backplane),
    // both from A's L1.
    assert_eq!(delta(&warm, &a.cache.stats()), (N, 0, 2 * N, 0));

    // B has neither: its first read takes both from Redis, the next N from
    // its L1.
    wait_for_backplane(&a.cache, &b.cache).await;
    let cold = b.cache.stats();
    b.session(3).await.unwrap();
    assert_eq!(delta(&cold, &b.cache.stats()), (1, 0, 0, 2));
    let warm = b.cache.stats();
    for _ in 0..N {
        b.session(3).await.unwrap();
    }
    assert_eq!(delta(&warm, &b.cache.stats()), (N, 0, 2 * N, 0));
    assert_eq!(backend.calls().sessions, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multilevel_bot_per_tier_hits_are_exact_on_memory() {
    const N: u64 = 10;
    let config = bot_config(ExampleConfig::from_url("memory://"));
    let backend = Arc::new(Backend::new(Duration::from_millis(1)));
    let instances = open_instances(&config, &backend).await.unwrap();
    assert_eq!(instances.len(), 1);
    let a = &instances[0];
    a.session(3).await.unwrap();
    let warm = a.cache.stats();
    for _ in 0..N {
        a.session(3).await.unwrap();
    }
    // No backplane: generations are read from the shared tier, under the
    // L1, so each typed hit is one L1 hit.
    assert_eq!(delta(&warm, &a.cache.stats()), (N, 0, N, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multilevel_bot_the_bot_runs_in_memory_with_one_instance() {
    let config = RunConfig::default();
    let report = run(ExampleConfig::from_url("memory://"), config.clone())
        .await
        .unwrap();
    println!("{report}");
    assert_eq!(report.instances.len(), 1);
    let bot = &report.instances[0];
    let s = &bot.stats;
    // Every typed hit was one tier's hit (no backplane: no marker reads
    // through the L1), and every miss one call of a slow system.
    assert_eq!(s.l1_hits + s.l2_hits, s.hits);
    assert!(s.l1_hits > s.l2_hits, "{s:?}");
    let c = report.backend_calls;
    assert_eq!(
        c.permissions + c.sessions + c.searches + c.translations,
        s.misses
    );
    // The spammer's burst past `ask=30/min` was refused, nobody else's.
    assert_eq!(report.rate_limited, config.spam - 30);
    assert_eq!(
        bot.answered,
        config.questions + config.spam - report.rate_limited
    );
    assert_eq!(report.permission_changes, config.permission_changes);
    // The report carries the configured thresholds' advice and a time.
    assert!(bot.report.unix_time_secs > 1_700_000_000);
    assert!(
        bot.report.advice.iter().any(|a| a.code == "near_capacity"),
        "{}",
        bot.report
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multilevel_bot_the_bot_runs_on_redis_with_two_coherent_instances() {
    let config = RunConfig::default();
    let report = run(on_redis(), config.clone()).await.unwrap();
    println!("{report}");
    assert_eq!(report.instances.len(), 2);
    // Every permission change on bot-a was seen by bot-b's next read.
    assert_eq!(report.permission_changes, config.permission_changes);
    assert_eq!(report.changes_seen, config.permission_changes);
    // Values loaded by one instance were L2 hits for the other.
    assert!(report.instances.iter().all(|i| i.stats.l2_hits > 0));
    let misses: u64 = report.instances.iter().map(|i| i.stats.misses).sum();
    let c = report.backend_calls;
    assert_eq!(
        c.permissions + c.sessions + c.searches + c.translations,
        misses
    );
    assert_eq!(report.rate_limited, config.spam - 30);
    let (a, b) = (&report.instances[0].stats, &report.instances[1].stats);
    assert_eq!(a.invalidations_published, b.invalidations_received);
    assert_eq!(b.invalidations_published, a.invalidations_received);
}
