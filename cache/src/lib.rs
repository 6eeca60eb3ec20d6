//! One typed cache API for Rust services: in memory for development and
//! tests, Redis in production, picked by a URL.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> cache::Result<()> {
//! use cache::{CacheConfig, CacheKey};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize)]
//! struct Profile {
//!     name: String,
//! }
//!
//! // CACHE_URL=redis://127.0.0.1:6379 switches this to Redis (feature `redis`).
//! let cache = cache::open(&CacheConfig::from_env()?).await?;
//! let key = CacheKey::new("profile", 42)?;
//! let profile: Profile = cache
//!     .get_or_set(&key, || async {
//!         // the slow part: a database, an HTTP API...
//!         Ok::<_, std::io::Error>(Profile { name: "Ada".into() })
//!     })
//!     .await?;
//! assert_eq!(profile.name, "Ada");
//! # Ok(())
//! # }
//! ```
//!
//! - [`open`] builds a [`Cache`] from a [`CacheConfig`] (serde; from the
//!   environment, JSON or your own config).
//! - [`Cache`]: typed `get::<T>`, `set`, `get_or_set` with single flight,
//!   invalidation by key, pattern ([`Cache::invalidate_matching`]) and
//!   category in O(1) ([`Cache::invalidate_category`]), batches, `stats()`.
//! - [`CacheBackend`]: the byte-level trait every backend implements;
//!   `cache-testkit` has the conformance suite a backend must pass.
//!
//! # Features
//!
//! | feature | what it adds |
//! |---|---|
//! | `memory` (default) | `memory://`: [`memory::MemoryBackend`] |
//! | `redis` | `redis://`: the Redis backend (`cache::redis`) |
//! | `tls` | `rediss://` (Redis over TLS, rustls) |
//! | `cluster` | `redis+cluster://`: Redis Cluster |
//! | `sentinel` | `redis+sentinel://`: Redis behind Sentinel |
//! | `msgpack` | the MessagePack codec (`codec: "msgpack"`) |
//! | `metrics` | export counters and latencies through the `metrics` facade |
//! | `sessions` | [`sessions::CacheSessionStore`], a `tower-sessions` store |
//!
//! A URL whose backend is not compiled in is a [`ErrorKind::Config`] error
//! naming the feature to enable.

mod config;
#[cfg(feature = "sessions")]
pub mod sessions;

pub use cache_core::*;
pub use config::{
    open, open_backend, open_stack, open_stack_with, open_with, BackplaneConfig, BackplaneMode,
    CacheConfig, FailOpenConfig, FailSafeConfig, L1Config, MemoryOptions, RedisOptions,
    ReportConfig, StampedeConfig,
};

/// The README's code blocks, compiled (and, where they need no server, run)
/// by `cargo test --doc`, so the tour cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;

/// The in-process backend (feature `memory`).
#[cfg(feature = "memory")]
pub mod memory {
    pub use cache_memory::*;
}

/// The Redis backend (feature `redis`).
#[cfg(feature = "redis")]
pub mod redis {
    pub use cache_redis::*;
}
