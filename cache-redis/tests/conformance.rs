//! The conformance suite of `cache-testkit` on one Redis server.
//!
//! One private `redis-server` for the whole binary (or the server named by
//! `CACHE_TEST_REDIS_URL`); every case makes its own `RedisBackend` on its
//! own runtime and works in a namespace of its own.

use std::sync::Arc;

use cache_core::CacheBackend;
use cache_redis::RedisBackend;
use cache_testkit::redis_server::RedisServer;

async fn make_backend() -> Arc<dyn CacheBackend> {
    let url = RedisServer::shared().url();
    Arc::new(
        RedisBackend::from_url(url)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to the test server {url}: {e:?}")),
    )
}

cache_testkit::conformance_suite!(redis_single, make_backend);
