//! The whole conformance suite against `MemoryBackend`, unbounded and bounded.

use std::sync::Arc;

use cache_core::CacheBackend;
use cache_memory::{MemoryBackend, MemoryConfig};

async fn memory() -> Arc<dyn CacheBackend> {
    // A 2 MiB value limit makes the oversize-value case run (it skips above
    // 16 MiB).
    Arc::new(MemoryBackend::with_config(
        MemoryConfig::default().with_max_value_size(2 << 20),
    ))
}

async fn memory_bounded() -> Arc<dyn CacheBackend> {
    // Bounded (eviction on), with room for every case's data.
    Arc::new(MemoryBackend::with_config(
        MemoryConfig::default()
            .with_max_value_size(2 << 20)
            .with_max_entries(10_000)
            .with_max_bytes(64 << 20),
    ))
}

cache_testkit::conformance_suite!(memory, memory);
cache_testkit::conformance_suite!(memory_bounded, memory_bounded);
