//! Model-based tests: random sequences of
//! [`CacheBackend`](cache_core::CacheBackend) operations, checked step by
//! step against a reference model.
//!
//! The conformance suite checks one rule at a time; this module checks
//! that the rules hold *together*, in any order: a `set` after an `incr`
//! after an `expire` after a `delete_matching`, on a handful of colliding
//! keys, with TTLs that are zero, sub-second, long or absent, while time
//! moves. Each step's answer is compared with what the reference model
//! allows; the first difference is a [`Divergence`], and [`check_model`]
//! shrinks the failing sequence (proptest) to a minimal one and prints it:
//!
//! ```text
//! model memory max_bytes=100: divergence at step 2 `delete "a"` (namespace model:7c28…:): expected true (written at step 1), got false
//! minimal failing sequence (3 steps):
//!     0: set_many [("a", "x"), ("b", "x"), ("?b", "9223372036854775807")] ttl none
//!     1: set_many [("ab", "x"), ("ba", "x"), ("a", "9223372036854775807")] ttl none
//!     2: delete "a"
//! ```
//!
//! - [`Op`]: one call of the trait (every operation, with both
//!   [`SetMode`](cache_core::SetMode)s), or [`Op::Advance`] to move time.
//! - [`ModelRunner`]: runs a sequence against any `Arc<dyn CacheBackend>`
//!   in a namespace of its own and returns the first divergence.
//! - [`ModelClock`]: how time moves. A mock clock (the memory backend's
//!   `MockClock`) makes expiry exact; real time (Redis) makes the model
//!   accept either answer near an expiry boundary, within the time the
//!   calls measurably took plus a slack.
//! - Eviction: on a backend that [`evicts`](cache_core::Capabilities::evicts),
//!   any write may drop *other* keys, so a read of a key written before
//!   the latest write may miss, but never return a wrong value, and counts
//!   (`delete_many`, `delete_matching`, `clear`) are bounded accordingly.
//!   The key a write just wrote must still be there.
//! - [`ops`] and [`Profile`]: the proptest strategy of sequences.
//!
//! Generation and shrinking are plain proptest over a `Vec<Op>`: every
//! operation is valid in every state (keys come from a fixed small set), so
//! the state-dependent generation of `proptest-state-machine` is not
//! needed, the backend calls stay `async`, and a `Vec` shrinks by dropping
//! steps and simplifying each one.
//!
//! # Examples
//!
//! A model test of a backend with real time, in `tests/model.rs`:
//!
//! ```no_run
//! use cache_testkit::model::{check_model, cases_from_env, ModelRunner, Profile};
//! use std::sync::Arc;
//!
//! // #[test]
//! fn model_my_backend() {
//!     check_model("my backend", &Profile::real_time(), cases_from_env(16), || async {
//!         ModelRunner::new(Arc::new(cache_memory::MemoryBackend::new()))
//!     });
//! }
//! ```
//!
//! A hand-written sequence:
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use cache_core::SetMode;
//! use cache_testkit::model::{ModelRunner, Op};
//! use std::sync::Arc;
//!
//! let runner = ModelRunner::new(Arc::new(cache_memory::MemoryBackend::new()));
//! let ops = [
//!     Op::Set { key: "a", value: "7", ttl: None, mode: SetMode::Always },
//!     Op::Incr { key: "a", delta: 1, ttl: None },
//!     Op::Get("a"),
//! ];
//! assert!(runner.run(&ops).await.is_ok());
//! runner.cleanup().await;
//! # }
//! ```

mod harness;
mod op;
mod reference;
mod runner;

pub use harness::{cases_from_env, check_model};
pub use op::{format_sequence, ops, Op, Profile, DELTAS, KEYS, PATTERNS, VALUES};
pub use runner::{run_model, Divergence, ModelClock, ModelRunner};
