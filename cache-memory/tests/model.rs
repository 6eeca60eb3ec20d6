//! Model-based tests of the memory backend and of the cache-core wrappers
//! over it: random sequences of every `CacheBackend` operation (both set
//! modes, TTLs none / zero / sub-second / long, colliding keys, glob
//! patterns), checked step by step against the reference model of
//! `cache_testkit::model`, on a mock clock so every expiry is exact.
//!
//! What it proves: the operations agree with each other in any order, not
//! just one rule at a time: e.g. an `incr` keeps the TTL an `expire` set, a
//! `set_many` after a `delete_matching` is readable through `get_many`, a
//! bounded backend evicts other keys but never returns a wrong value nor
//! loses the key it just wrote, and a wrapper forwards everything.
//! How it fails: a divergence panics with the minimal sequence (proptest
//! shrinks it) and the step whose answer the model does not allow.
//!
//! Budget: 512 cases per stack by default (well under a second each);
//! `CACHE_MODEL_CASES=2000` runs more.

use std::sync::Arc;
use std::time::Duration;

use cache_core::layers::{BreakerConfig, FailOpen, Metered, Tiered, TieredConfig, Timeout};
use cache_core::CacheBackend;
use cache_memory::{Clock, MemoryBackend, MemoryConfig, MockClock};
use cache_testkit::model::{cases_from_env, check_model, ModelClock, ModelRunner, Profile};

const CASES: u32 = 512;

/// A mock clock, started at 1 s (a real clock is never at zero), and its
/// model twin.
fn clocks() -> (MockClock, ModelClock) {
    let clock = MockClock::new();
    clock.advance(Duration::from_secs(1));
    let (now, advance) = (clock.clone(), clock.clone());
    let model = ModelClock::mock(move || now.now_nanos(), move |by| advance.advance(by));
    (clock, model)
}

fn memory(config: MemoryConfig, clock: &MockClock) -> MemoryBackend {
    MemoryBackend::with_clock(config, Arc::new(clock.clone()))
}

/// Runs the model on the backend `wrap` makes from a fresh memory backend
/// with `config`, on a fresh mock clock.
fn check(name: &str, config: MemoryConfig, wrap: impl Fn(MemoryBackend) -> Arc<dyn CacheBackend>) {
    check_model(name, &Profile::mock_clock(), cases_from_env(CASES), || {
        let (clock, model_clock) = clocks();
        let backend = wrap(memory(config.clone(), &clock));
        async move { ModelRunner::new(backend).with_clock(model_clock) }
    });
}

#[test]
fn model_memory_unbounded() {
    check("memory", MemoryConfig::default(), |m| Arc::new(m));
}

#[test]
fn model_memory_bounded_by_entries() {
    // Three entries for ten keys: evictions on most writes.
    let config = MemoryConfig::default().with_max_entries(3);
    check("memory max_entries=3", config, |m| {
        assert!(m.capabilities().evicts);
        Arc::new(m)
    });
}

#[test]
fn model_memory_bounded_by_bytes() {
    // Two or three of the model's entries (a key is ~27 bytes, a value 0-20).
    let config = MemoryConfig::default().with_max_bytes(100);
    check("memory max_bytes=100", config, |m| {
        assert!(m.capabilities().evicts);
        Arc::new(m)
    });
}

#[test]
fn model_metered_over_memory() {
    check("metered(memory)", MemoryConfig::default(), |m| {
        Arc::new(Metered::new(m))
    });
}

#[test]
fn model_timeout_over_memory() {
    check("timeout(memory)", MemoryConfig::default(), |m| {
        Arc::new(Timeout::new(m, Duration::from_secs(5)))
    });
}

#[test]
fn model_fail_open_over_memory() {
    check("fail_open(timeout(memory))", MemoryConfig::default(), |m| {
        Arc::new(FailOpen::new(
            Timeout::new(m, Duration::from_secs(5)),
            BreakerConfig::default(),
        ))
    });
}

/// `Tiered` over two memory backends on one mock clock, the L1 bounded to
/// four entries (it evicts copies) and its copies living `l1_max_ttl` at
/// most.
fn check_tiered(name: &str, l1_max_ttl: Duration) {
    check_model(name, &Profile::mock_clock(), cases_from_env(CASES), || {
        let (clock, model_clock) = clocks();
        let l1 = memory(MemoryConfig::default().with_max_entries(4), &clock);
        let l2 = memory(MemoryConfig::default(), &clock);
        let config = TieredConfig::default().with_l1_max_ttl(l1_max_ttl);
        let tiered = Tiered::new(Arc::new(l1), Arc::new(l2), config);
        async move { ModelRunner::new(Arc::new(tiered)).with_clock(model_clock) }
    });
}

#[test]
fn model_tiered_memory_over_memory() {
    // L1 copies outlive most of the sequences' TTLs unless capped by L2's.
    check_tiered(
        "tiered(memory max_entries=4, memory)",
        Duration::from_secs(60),
    );
}

#[test]
fn model_tiered_short_l1_ttl_memory_over_memory() {
    // L1 copies end before many L2 values do: reads fall through to L2.
    check_tiered(
        "tiered(memory max_entries=4, memory) l1_max_ttl=250ms",
        Duration::from_millis(250),
    );
}
