//! Test support for cache backends and for code that uses a cache.
//!
//! - The conformance suite: [`conformance_suite!`] expands to one named
//!   `#[test]` per rule of `CacheBackend`'s `# Behavior`, each on a fresh
//!   backend and a namespace of its own; [`run_all`] runs them in a custom
//!   harness. Every built-in backend and wrapper runs it from its crate's
//!   `tests/` folder, and so should yours.
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
mod process;
pub mod redis_cluster;
pub mod redis_sentinel;
pub mod redis_server;

pub use conformance::{
    case_names, run_all, run_case, run_case_blocking, CaseResult, Ctx, Outcome, Report,
};
pub use fault::{FaultConfig, FaultInjecting};
pub use mock::MockBackend;

/// Expands to a module `$name` with one `#[test]` per conformance case,
/// each running on a fresh backend from `$factory` (an expression callable
/// with no arguments that returns a future of `Arc<dyn CacheBackend>`, such
/// as the path of an `async fn`).
///
/// Skipped cases (a capability is absent) pass and print `SKIPPED` with the
/// reason. A last test, `suite_lists_every_case`, fails if this macro and
/// the suite's registry ever disagree.
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
        $crate::__conformance_cases!(
            $name,
            $factory;
            get_missing_returns_none,
            set_then_get_returns_value,
            empty_value_is_a_hit,
            binary_value_with_nul_bytes,
            large_value_1mib,
            unicode_keys,
            get_many_preserves_order_and_missing,
            get_many_empty_is_empty,
            set_overwrites_value,
            set_without_ttl_clears_previous_ttl,
            set_if_absent_does_not_overwrite,
            set_if_absent_on_missing_stores,
            set_if_absent_after_expiry_stores,
            set_if_absent_race_has_one_winner,
            set_zero_ttl_does_not_store,
            set_zero_ttl_removes_existing,
            concurrent_writers_leave_one_value,
            set_many_then_get_many,
            set_many_with_ttl_expires,
            oversize_value_is_invalid,
            empty_key_is_invalid,
            oversize_key_is_invalid,
            ttl_expires_value,
            exists_false_after_expiry,
            ttl_none_persists,
            sub_second_ttl_is_honoured,
            ttl_of_missing_is_missing,
            ttl_of_persistent_is_persistent,
            ttl_reports_remaining,
            expire_sets_ttl,
            expire_missing_returns_false,
            expire_none_persists,
            expire_zero_deletes,
            delete_existing_returns_true,
            delete_missing_returns_false,
            delete_many_counts_existing,
            exists_reflects_presence,
            incr_missing_creates_with_delta_and_ttl,
            incr_existing_adds_and_keeps_ttl,
            incr_negative_delta,
            incr_non_integer_is_invalid_value,
            incr_overflow_is_invalid_value,
            incr_concurrent_is_atomic,
            delete_matching_star,
            delete_matching_question_mark,
            delete_matching_character_classes,
            delete_matching_escaped_metacharacters,
            delete_matching_leaves_other_namespaces,
            clear_removes_only_namespace,
            clear_empty_namespace_is_invalid,
            health_reports_healthy,
            name_is_not_empty,
            capabilities_are_consistent,
        );
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

            #[test]
            fn suite_lists_every_case() {
                let listed: &[&str] = &[$(stringify!($case)),*];
                assert_eq!(listed, &$crate::case_names()[..]);
            }
        }
    };
}
