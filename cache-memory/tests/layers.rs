//! The conformance suite through the `Timeout`, `FailOpen`, `Metered` and
//! `Deferred` wrappers over the memory backend.

use std::sync::Arc;
use std::time::Duration;

use cache_core::layers::{BreakerConfig, Deferred, FailOpen, Metered, Timeout};
use cache_core::CacheBackend;
use cache_memory::{MemoryBackend, MemoryConfig};

fn memory() -> MemoryBackend {
    MemoryBackend::with_config(MemoryConfig::default().with_max_value_size(2 << 20))
}

async fn timeout_over_memory() -> Arc<dyn CacheBackend> {
    Arc::new(Timeout::new(memory(), Duration::from_secs(5)))
}

async fn fail_open_over_memory() -> Arc<dyn CacheBackend> {
    Arc::new(FailOpen::new(
        Timeout::new(memory(), Duration::from_secs(5)),
        BreakerConfig::default(),
    ))
}

async fn metrics_over_memory() -> Arc<dyn CacheBackend> {
    Arc::new(Metered::new(memory()))
}

async fn deferred_memory() -> Arc<dyn CacheBackend> {
    let caps = memory().capabilities();
    let deferred = Deferred::spawn("memory", caps, || async {
        Ok(Arc::new(memory()) as Arc<dyn CacheBackend>)
    });
    deferred.connected().await;
    Arc::new(deferred)
}

cache_testkit::conformance_suite!(metrics_memory, metrics_over_memory);
cache_testkit::conformance_suite!(deferred_over_memory, deferred_memory);
cache_testkit::conformance_suite!(timeout_memory, timeout_over_memory);
cache_testkit::conformance_suite!(fail_open_memory, fail_open_over_memory);
