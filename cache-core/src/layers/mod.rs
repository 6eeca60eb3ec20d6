//! Wrappers: cross-cutting behaviour as a backend over a backend.
//!
//! Each wrapper is itself a [`CacheBackend`](crate::CacheBackend), forwards
//! every method (no default silently bypasses the inner backend's fast
//! path) and passes the conformance suite. Compose them by nesting; the
//! last one applied is the outermost, which sees a call first:
//!
//! ```text
//! FailOpen::new(Timeout::new(redis, 250ms), breaker)   // fail-open sees timeouts
//! ```

mod deferred;
mod fail_open;
mod metered;
mod tiered;
mod timeout;

pub use deferred::Deferred;
pub use fail_open::{
    BreakerConfig, BreakerState, FailOpen, FailOpenHandle, FailOpenStats, MAX_PENDING_KEYS,
};
pub use metered::{Metered, OpStats};
pub use tiered::{Tiered, TieredConfig, TieredHandle, TieredStats};
pub use timeout::{Timeout, DEFAULT_BULK_DEADLINE};
