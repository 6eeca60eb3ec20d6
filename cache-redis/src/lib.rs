//! The Redis backend of the cache: [`RedisBackend`], configured by
//! [`RedisConfig`] (one URL, or host/port/credentials), on one server, a
//! Redis Cluster (feature `cluster`) or a primary found through Sentinel
//! (feature `sentinel`); the URL's scheme picks ([`RedisMode`]).
//!
//! - Values are plain Redis strings, byte for byte: with the JSON codec,
//!   `redis-cli GET` shows the JSON text.
//! - TTLs in milliseconds (`SET … PX`), so sub-second TTLs work; a zero TTL
//!   stores nothing and removes the old value.
//! - `incr` is one Lua script: atomic, creates a missing key with the TTL,
//!   keeps the TTL of an existing one.
//! - Batch calls are one round trip (`MGET`, a pipeline of `SET`, `UNLINK`);
//!   pattern deletes and `clear` walk `SCAN MATCH … COUNT 1000` and `UNLINK`
//!   each batch, never `KEYS`, never `FLUSHDB`.
//! - Reconnects by itself after a restart; every call is bounded by the
//!   response timeout (`Timeout`), an unreachable server is `Connection`.
//! - `rediss://` (TLS) with the crate feature `tls`.
//! - `redis+cluster://host1:port1,host2:port2` with the feature `cluster`:
//!   single-key calls go to the key's node (the client follows `MOVED`/`ASK`
//!   and failovers); batches are grouped by slot, one pipeline per node;
//!   pattern deletes and `clear` scan every primary; `health` asks every
//!   node. A hash tag in the prefix (`{tenant42}`) keeps a cache's keys in
//!   one slot.
//! - [`RedisFlightLock`]: distributed single flight for `get_or_set`
//!   (`CacheBuilder::distributed_single_flight`): one loader per key across
//!   processes, a lease per key (`SET NX PX`, Lua compare-and-delete),
//!   waiters woken over pub/sub.
//! - `redis+sentinel://sentinel1:port,sentinel2:port/master-name[/db]` with
//!   the feature `sentinel`: the backend asks the Sentinels for the primary
//!   and moves to the new one after a failover, without being rebuilt.
//! - L1 invalidation for a `Tiered` in front of Redis, as a
//!   [`Backplane`](cache_core::Backplane): [`RedisBackplane`] (pub/sub;
//!   writes through this library) or [`RedisTracking`] (RESP3 client
//!   tracking on the cache's prefix; writes by any client, one server).
//!
//! # Examples
//!
//! ```no_run
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> cache::Result<()> {
//! use cache::{Cache, CacheKey, Ttl};
//! use cache::redis::{RedisBackend, RedisConfig};
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! let config = RedisConfig::from_url("redis://127.0.0.1:6379/0")?
//!     .with_response_timeout(Duration::from_millis(250));
//! let cache = Cache::new(Arc::new(RedisBackend::connect(config).await?));
//! let key = CacheKey::new("greeting", "en")?;
//! cache.set_with_ttl(&key, "hello", Ttl::secs(30)).await?;
//! # Ok(())
//! # }
//! ```

mod backend;
mod backplane;
#[cfg(feature = "cluster")]
mod cluster;
mod config;
mod core;
mod deadline;
mod error;
mod lock;
#[cfg(feature = "sentinel")]
mod sentinel;
mod tracking;

pub use backend::RedisBackend;
pub use backplane::{RedisBackplane, DEFAULT_CHANNEL};
pub use config::{
    RedisConfig, RedisMode, DEFAULT_CONNECT_TIMEOUT, DEFAULT_MAX_VALUE_SIZE,
    DEFAULT_RESPONSE_TIMEOUT,
};
pub use lock::{RedisFlightLock, DEFAULT_FLIGHT_CHANNEL};
pub use tracking::{RedisTracking, TRACKING_ORIGIN};

/// Connects to the Redis deployment `url` describes and returns it as a
/// shared backend; what `cache::open` calls for the Redis URL schemes:
/// `redis://`, `rediss://`, `redis+unix://` (one server),
/// `redis+cluster://` (a cluster) and `redis+sentinel://` (Sentinel).
///
/// # Errors
///
/// As [`RedisConfig::from_url`] and [`RedisBackend::connect`].
pub async fn connect(
    url: &str,
) -> cache_core::Result<std::sync::Arc<dyn cache_core::CacheBackend>> {
    Ok(std::sync::Arc::new(RedisBackend::from_url(url).await?))
}
