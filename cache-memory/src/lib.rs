//! The in-process backend of the cache: [`MemoryBackend`].
//!
//! A sharded concurrent map (dashmap) of encoded values with TTLs, bounded
//! by entries and/or bytes with S3-FIFO eviction, a background sweeper for
//! expired entries, Redis-compatible glob matching and atomic `incr`. Use it
//! in development and tests, or as the first level in front of Redis.
//!
//! # Examples
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> cache::Result<()> {
//! use cache::{Cache, CacheKey};
//! use cache::memory::{MemoryBackend, MemoryConfig};
//! use std::sync::Arc;
//!
//! let backend = MemoryBackend::with_config(MemoryConfig::default().with_max_entries(1000));
//! let cache = Cache::new(Arc::new(backend));
//! cache.set(&CacheKey::new("user", 1)?, &"ada").await?;
//! # Ok(())
//! # }
//! ```

mod backend;
mod clock;
mod config;
mod eviction;
mod expiry;
mod hash;

pub use backend::{MemoryBackend, MemoryStats};
pub use clock::{Clock, MockClock, SystemClock};
pub use config::{MemoryConfig, DEFAULT_MAX_VALUE_SIZE};
