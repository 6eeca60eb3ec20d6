//! The conformance suite through the `Timeout`, `FailOpen` and `Metered` wrappers over
//! a real Redis.

use std::sync::Arc;
use std::time::Duration;

use cache_core::layers::{BreakerConfig, FailOpen, Metered, Timeout};
use cache_core::CacheBackend;
use cache_redis::{RedisBackend, RedisConfig};
use cache_testkit::redis_server::RedisServer;

async fn redis() -> RedisBackend {
    // A value limit the suite can test, with room for its 1 MiB case.
    let config = RedisConfig::from_url(RedisServer::shared().url())
        .unwrap()
        .with_max_value_size((1 << 20) + 4096);
    RedisBackend::connect(config)
        .await
        .expect("the test redis-server")
}

async fn timeout_over_redis() -> Arc<dyn CacheBackend> {
    Arc::new(Timeout::new(redis().await, Duration::from_secs(5)))
}

async fn fail_open_over_redis() -> Arc<dyn CacheBackend> {
    Arc::new(FailOpen::new(
        Timeout::new(redis().await, Duration::from_secs(5)),
        BreakerConfig::default(),
    ))
}

async fn metrics_over_redis() -> Arc<dyn CacheBackend> {
    Arc::new(Metered::new(redis().await))
}

cache_testkit::conformance_suite!(metrics_redis, metrics_over_redis);
cache_testkit::conformance_suite!(timeout_redis, timeout_over_redis);
cache_testkit::conformance_suite!(fail_open_redis, fail_open_over_redis);
