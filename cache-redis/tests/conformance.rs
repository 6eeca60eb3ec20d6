//! The conformance suite of `cache-testkit` on one Redis server.
//!
//! One private `redis-server` for the whole binary (or the server named by
//! `CACHE_TEST_REDIS_URL`); every case makes its own `RedisBackend` on its
//! own runtime and works in a namespace of its own.

use std::sync::Arc;

use cache_core::CacheBackend;
use cache_redis::{RedisBackend, RedisConfig};
use cache_testkit::redis_server::RedisServer;

/// A value limit the suite can test (it sends a value one byte over it),
/// with room for its 1 MiB case.
const MAX_VALUE_SIZE: usize = (1 << 20) + 4096;

async fn make_backend() -> Arc<dyn CacheBackend> {
    let url = RedisServer::shared().url();
    let config = RedisConfig::from_url(url)
        .unwrap()
        .with_max_value_size(MAX_VALUE_SIZE);
    Arc::new(
        RedisBackend::connect(config)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to the test server {url}: {e:?}")),
    )
}

cache_testkit::conformance_suite!(redis_single, make_backend);
