//! The rates bot runs to completion on memory and on a real Redis, with
//! the upstream failing half of its calls and down for a stretch: users
//! still get answers, from stale values (counted), and spammers are rate
//! limited.

use std::sync::Arc;
use std::time::Duration;

use cache::{CacheBackend, CacheConfig};
use cache_examples::rates_bot::{run, BotConfig, Report};
use cache_testkit::redis_server::RedisServer;

fn flaky_upstream() -> BotConfig {
    let mut config = BotConfig {
        duration: Duration::from_secs(10 * 60),
        ..BotConfig::default()
    };
    config.upstream.failure_rate = 0.5;
    config
}

fn check(report: &Report) {
    println!("{report}");
    let asked = report.messages - report.rate_limited;
    assert!(asked > 200, "too few messages: {asked}");
    // Everyone who got past the rate limit got an answer, but for a rare
    // unlucky first load.
    assert!(
        report.answered * 100 >= asked * 99,
        "only {} of {asked} answered",
        report.answered
    );
    // While the upstream was down, every answer came from the cache.
    assert_eq!(report.outage_answered, report.outage_messages);
    assert!(report.outage_messages > 0);
    // Failing and slow loads were covered by stale values, and counted.
    assert!(report.upstream_failures > 0);
    assert!(report.cache.stale_served > 0, "{:?}", report.cache);
    assert!(report.cache.loader_calls > 0);
    assert!(report.cache.hit_rate() > 0.3, "{:?}", report.cache);
    // The spammers hit the per-user limit; nobody else needs to.
    assert!(report.rate_limited > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rates_bot_on_memory_answers_while_the_upstream_fails() {
    let backend: Arc<dyn CacheBackend> = Arc::new(cache::memory::MemoryBackend::new());
    let report = run(backend, flaky_upstream()).await.unwrap();
    assert_eq!(report.backend, "memory");
    check(&report);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rates_bot_on_redis_answers_while_the_upstream_fails() {
    let config = CacheConfig::from_url(RedisServer::shared().url());
    let backend = cache::open_backend(&config).await.unwrap();
    let report = run(backend, flaky_upstream()).await.unwrap();
    assert_eq!(report.backend, "redis");
    check(&report);
}
