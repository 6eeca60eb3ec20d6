//! Test support for cache backends and for code that uses a cache.
//!
//! - The conformance suite: [`conformance_suite!`] expands to one named
//!   `#[test]` per rule of `CacheBackend`'s `# Behavior`, each on a fresh
//!   backend and a namespace of its own; [`run_all`] runs them in a custom
//!   harness. Every built-in backend and wrapper runs it from its crate's
//!   `tests/` folder, and so should yours.
//! - [`mutants`]: backends with one realistic bug each, and the correct
//!   [`Reference`](mutants::Reference) they are built on; the suite must
//!   fail every mutant (`tests/mutants.rs` checks it does).
//! - [`MockBackend`] (mockall) for unit tests of code that uses a cache.
//! - [`FaultInjecting`]: a wrapper that fails every Nth call, fails with a
//!   probability, or adds latency, to test how callers cope.
//! - [`RedisServer`](redis_server::RedisServer): a private `redis-server`
//!   for tests.
//!
//! # Examples
//!
//! In `tests/conformance.rs` of a backend crate:
//!
//! ```ignore
//! use std::sync::Arc;
//! use cache_core::CacheBackend;
//!
//! async fn backend() -> Arc<dyn CacheBackend> {
//!     Arc::new(my_backend::MyBackend::new())
//! }
//!
//! cache_testkit::conformance_suite!(my_backend, backend);
//! ```

mod conformance;
mod fault;
mod mock;
pub mod model;
pub mod mutants;
mod process;
pub mod redis_cluster;
pub mod redis_sentinel;
pub mod redis_server;

pub use conformance::{
    case_names, run_all, run_all_concurrently, run_case, run_case_blocking, CaseResult, Ctx, Need,
    Outcome, Report,
};
pub use fault::{FaultConfig, FaultInjecting};
pub use mock::MockBackend;

/// Expands to a module `$name` with one `#[test]` per conformance case,
/// each running on a fresh backend from `$factory` (an expression callable
/// with no arguments that returns a future of `Arc<dyn CacheBackend>`, such
/// as the path of an `async fn`).
///
/// A case the backend's capabilities rule out (see [`Need`]) passes and
/// prints `SKIPPED <case>: <why>` on standard error, even under the test
/// harness's output capture; a skip the capabilities do not justify fails.
///
/// # Examples
///
/// ```ignore
/// async fn memory() -> std::sync::Arc<dyn cache_core::CacheBackend> {
///     std::sync::Arc::new(cache_memory::MemoryBackend::new())
/// }
/// cache_testkit::conformance_suite!(memory, memory);
/// ```
#[macro_export]
macro_rules! conformance_suite {
    ($name:ident, $factory:expr) => {
        $crate::__for_each_case!($crate::__conformance_cases! { $name, $factory; });
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_cases {
    ($name:ident, $factory:expr; $($case:ident),* $(,)?) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            $(
                #[test]
                fn $case() {
                    $crate::run_case_blocking(stringify!($case), || $factory());
                }
            )*
        }
    };
}
