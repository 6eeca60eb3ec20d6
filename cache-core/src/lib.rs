//! The contract of the cache and everything that does not depend on a
//! backend.
//!
//! - [`CacheBackend`]: the byte-level trait a backend implements (memory,
//!   Redis, your own), with a `# Behavior` list that the conformance suite in
//!   `cache-testkit` checks case by case.
//! - [`Cache`]: the typed facade applications use — `get::<T>`, `set`,
//!   `get_or_set` with single flight, invalidation by key, pattern and
//!   category, and [`CacheStats`].
//! - [`CacheKey`] (`{prefix}:{category}:{id}[:v{version}]`, escaped), [`Ttl`]
//!   and [`TtlPolicy`], [`Codec`]s, one [`Error`] type with an [`ErrorKind`].
//!
//! Applications usually depend on the `cache` crate, which re-exports all
//! of this and builds a cache from a URL.
//!
//! # Examples
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> cache::Result<()> {
//! use cache::{Cache, CacheKey, Ttl};
//! use cache::memory::MemoryBackend;
//! use std::sync::Arc;
//!
//! let cache = Cache::new(Arc::new(MemoryBackend::new()));
//! let key = CacheKey::new("greeting", "en")?;
//! cache.set_with_ttl(&key, "hello", Ttl::secs(30)).await?;
//! assert_eq!(cache.get::<String>(&key).await?.as_deref(), Some("hello"));
//! # Ok(())
//! # }
//! ```

mod backend;
mod backplane;
mod cache;
// The coarse clock of the hit paths, shared with the memory backend: not
// part of the API.
#[doc(hidden)]
pub mod coarse;
mod codec;
#[cfg(feature = "compression")]
mod compression;
mod connecting;
mod error;
mod fail_safe;
mod flight_lock;
mod glob;
mod key;
pub mod layers;
mod rate_limit;
mod report;
mod stats;
mod ttl;
mod typed_l1;
mod write_tracker;

pub use backend::{
    check_key, check_namespace, check_pattern, check_value, key_len_fits, parse_counter,
    CacheBackend, Capabilities, Health, HealthStatus, KeyTtl, SetMode, SetOptions,
    DEFAULT_MAX_VALUE_SIZE,
};
pub use backplane::{Backplane, BackplaneEvent, BackplaneMessage, Invalidation, LocalBackplane};
pub use cache::{
    Cache, CacheBuilder, DistributedFlight, GetOrSetOptions, Loaded, WriteOptions,
    DEFAULT_GENERATION_REFRESH, DEFAULT_PREFIX,
};
#[cfg(feature = "msgpack")]
pub use codec::MsgPackCodec;
pub use codec::{AnyCodec, Codec, JsonCodec};
#[cfg(feature = "compression")]
pub use compression::{Compressed, DEFAULT_COMPRESSION_THRESHOLD};
pub use error::{redact_url, Error, ErrorKind, Result};
pub use fail_safe::{FailSafe, MAX_TAGS_PER_ENTRY, MAX_TAG_LEN};
pub use flight_lock::{
    Acquire, DeferredFlightLock, FlightLock, LeaseWakers, LeaseWatch, LocalFlightLock,
};
pub use glob::{glob_escape, glob_match};
pub use key::{
    escape_id, escape_id_pattern, validate_category, validate_prefix, CacheKey, MAX_CATEGORY_LEN,
    MAX_KEY_LEN,
};
pub use rate_limit::{
    Decision, OnBackendError, RateLimitStats, RateLimiter, RateLimiterBuilder, Rule,
    DEFAULT_BUCKETS, MAX_BUCKETS,
};
pub use report::{Advice, CacheReport, ReportThresholds, Severity};
pub use stats::CacheStats;
pub use ttl::{CategoryTtl, Ttl, TtlPolicy};
pub use typed_l1::{TypedL1, TypedL1Config};

/// Re-exported so backend authors use the same `async_trait` and `Bytes`.
pub use async_trait::async_trait;
pub use bytes::Bytes;
