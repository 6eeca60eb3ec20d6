//! Model-based tests: random sequences of [`CacheBackend`] operations,
//! checked step by step against a reference model.
//!
//! The conformance suite checks one rule at a time; this module checks
//! that the rules hold *together*, in any order: a `set` after an `incr`
//! after an `expire` after a `delete_matching`, on a handful of colliding
//! keys, with TTLs that are zero, sub-second, long or absent, while time
//! moves. Each step's answer is compared with what the [model](Op) allows;
//! the first difference is a [`Divergence`], and [`check_model`] shrinks the
//! failing sequence (proptest) to a minimal one and prints it.
//!
//! - [`Op`]: one call of the trait (every operation, with both
//!   [`SetMode`]s), or [`Op::Advance`] to move time.
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

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cache_core::SetOptions;
use cache_core::{glob_escape, glob_match, CacheBackend, Error, ErrorKind, KeyTtl, SetMode};
use proptest::collection::vec;
use proptest::prelude::{prop_oneof, Just, Strategy};
use proptest::sample::select;
use proptest::test_runner::{Config, TestCaseError, TestError, TestRunner};

/// Key suffixes the sequences use, inside the run's namespace: six plain
/// keys that the [`PATTERNS`] tell apart, and four holding glob
/// metacharacters (data in a key, syntax only in a pattern).
pub const KEYS: [&str; 10] = [
    "a", "b", "ab", "ba", "a1", "b22", "a*", "?b", "[ab]", r"a\b",
];

/// Values: empty, plain, integers `incr` adds to (`"0"` included), the
/// edges of `i64` (overflow), and strings `incr` must refuse (`"007"` is
/// not an integer to Redis).
pub const VALUES: [&str; 9] = [
    "x",
    "",
    "hello",
    "0",
    "7",
    "-12",
    "007",
    "9223372036854775807",
    "-9223372036854775808",
];

/// `incr` deltas (`i64::MAX` overflows anything positive).
pub const DELTAS: [i64; 6] = [1, -1, 0, 7, -250, i64::MAX];

/// Glob patterns for `delete_matching` and `scan`, written after the
/// escaped namespace, so a pattern never reaches outside the run's keys.
pub const PATTERNS: [&str; 14] = [
    "*", "a*", "b*", "?", "??", "*b", "[ab]", "[ab]?", "[^a]*", r"a\*", r"\[ab\]", r"a\\b",
    r"*\**", "zz*",
];

/// One step of a sequence: a call of the [`CacheBackend`] trait on keys of
/// [`KEYS`] (inside the run's namespace), or a move of time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// `get(key)`.
    Get(&'static str),
    /// `set(key, value, opts)`.
    Set {
        /// The key suffix.
        key: &'static str,
        /// The value.
        value: &'static str,
        /// The TTL (`Some(ZERO)`: do not store).
        ttl: Option<Duration>,
        /// `Always` or `IfAbsent`.
        mode: SetMode,
    },
    /// `delete(key)`.
    Delete(&'static str),
    /// `exists(key)`.
    Exists(&'static str),
    /// `ttl(key)`.
    Ttl(&'static str),
    /// `expire(key, ttl)`.
    Expire(&'static str, Option<Duration>),
    /// `incr(key, delta, ttl)`.
    Incr {
        /// The key suffix.
        key: &'static str,
        /// The amount added.
        delta: i64,
        /// The TTL of a key `incr` creates.
        ttl: Option<Duration>,
    },
    /// `get_many(keys)` (duplicates allowed).
    GetMany(Vec<&'static str>),
    /// `set_many(items, ttl)` (duplicates allowed: the last one wins).
    SetMany(Vec<(&'static str, &'static str)>, Option<Duration>),
    /// `delete_many(keys)` (duplicates allowed, counted once).
    DeleteMany(Vec<&'static str>),
    /// `delete_matching(escaped namespace + pattern)`.
    DeleteMatching(&'static str),
    /// `scan(escaped namespace + pattern)`.
    Scan(&'static str),
    /// `clear(namespace)`.
    Clear,
    /// Moves time forward: the mock clock advances, or the run sleeps.
    Advance(Duration),
}

struct ShowTtl(Option<Duration>);

impl fmt::Display for ShowTtl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            None => f.write_str("none"),
            Some(d) => write!(f, "{d:?}"),
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Get(k) => write!(f, "get {k:?}"),
            Op::Set {
                key,
                value,
                ttl,
                mode,
            } => {
                write!(f, "set {key:?} = {value:?} ttl {}", ShowTtl(*ttl))?;
                if *mode == SetMode::IfAbsent {
                    f.write_str(" if-absent")?;
                }
                Ok(())
            }
            Op::Delete(k) => write!(f, "delete {k:?}"),
            Op::Exists(k) => write!(f, "exists {k:?}"),
            Op::Ttl(k) => write!(f, "ttl {k:?}"),
            Op::Expire(k, ttl) => write!(f, "expire {k:?} ttl {}", ShowTtl(*ttl)),
            Op::Incr { key, delta, ttl } => {
                write!(f, "incr {key:?} by {delta} ttl {}", ShowTtl(*ttl))
            }
            Op::GetMany(keys) => write!(f, "get_many {keys:?}"),
            Op::SetMany(items, ttl) => write!(f, "set_many {items:?} ttl {}", ShowTtl(*ttl)),
            Op::DeleteMany(keys) => write!(f, "delete_many {keys:?}"),
            Op::DeleteMatching(p) => write!(f, "delete_matching {p:?}"),
            Op::Scan(p) => write!(f, "scan {p:?}"),
            Op::Clear => f.write_str("clear"),
            Op::Advance(d) => write!(f, "advance {d:?}"),
        }
    }
}

/// A sequence as numbered lines, one step each (the form [`check_model`]
/// prints a minimal failing sequence in).
pub fn format_sequence(ops: &[Op]) -> String {
    ops.iter()
        .enumerate()
        .map(|(i, op)| format!("  {i:>3}: {op}\n"))
        .collect()
}

/// What a sequence may hold: its length, and the TTLs, time steps, values
/// and deltas drawn (an empty list draws the defaults).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Profile {
    /// The longest sequence (the shortest is one step).
    pub max_len: usize,
    /// The TTLs drawn for `set`, `expire`, `incr` and `set_many` (repeat an
    /// entry to draw it more often).
    pub ttls: Vec<Option<Duration>>,
    /// The steps [`Op::Advance`] moves time by.
    pub advances: Vec<Duration>,
    /// The values written (default [`VALUES`]).
    pub values: Vec<&'static str>,
    /// The `incr` deltas (default [`DELTAS`]).
    pub deltas: Vec<i64>,
    /// The most shrink steps spent on a failure.
    pub max_shrink_iters: u32,
}

impl Profile {
    /// For a backend on a mock clock: up to 64 steps; TTLs none, zero,
    /// 1 ms, 250 ms, 999 ms, 1 hour and 30 days; time steps from 1 ms to
    /// 2 hours, some landing exactly on a TTL's end. Time is free, so the
    /// boundaries are hit exactly.
    pub fn mock_clock() -> Self {
        let ms = Duration::from_millis;
        Profile {
            max_len: 64,
            ttls: vec![
                None,
                None,
                Some(Duration::ZERO),
                Some(ms(1)),
                Some(ms(250)),
                Some(ms(250)),
                Some(ms(999)),
                Some(Duration::from_secs(3600)),
                Some(Duration::from_secs(30 * 86_400)),
            ],
            advances: vec![ms(1), ms(249), ms(250), ms(500), ms(1000), ms(7_200_000)],
            values: VALUES.to_vec(),
            deltas: DELTAS.to_vec(),
            max_shrink_iters: 4096,
        }
    }

    /// For a backend on real time (Redis): up to 24 steps; TTLs none, zero,
    /// 120 ms, 300 ms and 1 hour; sleeps of 10 and 130 ms (a 130 ms sleep
    /// ends a 120 ms TTL; so do three for 300 ms). Sleeps are what a run
    /// costs, so they are few and short; near a TTL's end the model accepts
    /// either answer.
    pub fn real_time() -> Self {
        let ms = Duration::from_millis;
        Profile {
            max_len: 24,
            ttls: vec![
                None,
                None,
                Some(Duration::ZERO),
                Some(ms(120)),
                Some(ms(300)),
                Some(Duration::from_secs(3600)),
            ],
            advances: vec![ms(10), ms(130)],
            values: VALUES.to_vec(),
            deltas: DELTAS.to_vec(),
            max_shrink_iters: 256,
        }
    }

    /// Sets the values written.
    #[must_use]
    pub fn with_values(mut self, values: &[&'static str]) -> Self {
        self.values = values.to_vec();
        self
    }

    /// Sets the `incr` deltas.
    #[must_use]
    pub fn with_deltas(mut self, deltas: &[i64]) -> Self {
        self.deltas = deltas.to_vec();
        self
    }

    /// Sets the longest sequence.
    #[must_use]
    pub fn with_max_len(mut self, max_len: usize) -> Self {
        self.max_len = max_len.max(1);
        self
    }
}

/// The proptest strategy of sequences under `profile`.
///
/// Keys and patterns come from [`KEYS`] and [`PATTERNS`], values and
/// deltas from the profile; batches hold 0 to 4 items. Shrinking drops
/// steps and moves each choice towards the first entry of its list.
pub fn ops(profile: &Profile) -> impl Strategy<Value = Vec<Op>> {
    // An empty list in the profile draws the defaults.
    fn or<T: Clone>(list: &[T], default: &[T]) -> Vec<T> {
        if list.is_empty() { default } else { list }.to_vec()
    }
    let ttl = select(or(&profile.ttls, &[None]));
    let advance = select(or(&profile.advances, &[Duration::from_millis(1)]));
    // Three hot keys drawn most of the time, so operations collide.
    let key = || prop_oneof![3 => select(&KEYS[..3]), 1 => select(&KEYS[..])];
    let values = or(&profile.values, &VALUES);
    let value = move || select(values.clone());
    let pattern = || select(&PATTERNS[..]);
    let mode = select(&[SetMode::Always, SetMode::IfAbsent][..]);
    let op = prop_oneof![
        3 => key().prop_map(Op::Get),
        4 => (key(), value(), ttl.clone(), mode).prop_map(|(key, value, ttl, mode)| Op::Set {
            key,
            value,
            ttl,
            mode
        }),
        2 => key().prop_map(Op::Delete),
        1 => key().prop_map(Op::Exists),
        2 => key().prop_map(Op::Ttl),
        2 => (key(), ttl.clone()).prop_map(|(k, t)| Op::Expire(k, t)),
        2 => (key(), select(or(&profile.deltas, &DELTAS)), ttl.clone())
            .prop_map(|(key, delta, ttl)| Op::Incr { key, delta, ttl }),
        2 => vec(key(), 0..=4).prop_map(Op::GetMany),
        2 => (vec((key(), value()), 0..=4), ttl).prop_map(|(items, t)| Op::SetMany(items, t)),
        1 => vec(key(), 0..=4).prop_map(Op::DeleteMany),
        1 => pattern().prop_map(Op::DeleteMatching),
        1 => pattern().prop_map(Op::Scan),
        1 => Just(Op::Clear),
        2 => advance.prop_map(Op::Advance),
    ];
    vec(op, 1..=profile.max_len.max(1))
}

/// How a model run reads and moves time.
pub struct ModelClock {
    kind: ClockKind,
}

enum ClockKind {
    Mock {
        now: Box<dyn Fn() -> u64 + Send + Sync>,
        advance: Box<dyn Fn(Duration) + Send + Sync>,
    },
    Real {
        start: Instant,
        slack: u64,
    },
}

impl fmt::Debug for ModelClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            ClockKind::Mock { now, .. } => f
                .debug_struct("ModelClock::Mock")
                .field("now_nanos", &now())
                .finish(),
            ClockKind::Real { slack, .. } => f
                .debug_struct("ModelClock::Real")
                .field("slack_nanos", slack)
                .finish(),
        }
    }
}

impl ModelClock {
    /// The clock the backend reads: `now` returns its nanoseconds,
    /// `advance` moves it ([`Op::Advance`]). Expiry is then exact: a key
    /// written with TTL `d` at `t` is live before `t + d` and gone from it.
    ///
    /// # Examples
    ///
    /// ```
    /// use cache_memory::{Clock, MockClock};
    /// use cache_testkit::model::ModelClock;
    ///
    /// let clock = MockClock::new();
    /// let (now, advance) = (clock.clone(), clock.clone());
    /// let model_clock = ModelClock::mock(move || now.now_nanos(), move |by| advance.advance(by));
    /// # drop(model_clock);
    /// ```
    pub fn mock(
        now: impl Fn() -> u64 + Send + Sync + 'static,
        advance: impl Fn(Duration) + Send + Sync + 'static,
    ) -> Self {
        ModelClock {
            kind: ClockKind::Mock {
                now: Box::new(now),
                advance: Box::new(advance),
            },
        }
    }

    /// Real time: [`Op::Advance`] sleeps. A TTL's end is placed between the
    /// start and the end of the call that set it, widened by `slack` on
    /// both sides (clock granularity: Redis counts milliseconds); a read
    /// within that span may find the key or not.
    pub fn real(slack: Duration) -> Self {
        ModelClock {
            kind: ClockKind::Real {
                start: Instant::now(),
                slack: nanos(slack),
            },
        }
    }

    fn now(&self) -> u64 {
        match &self.kind {
            ClockKind::Mock { now, .. } => now(),
            ClockKind::Real { start, .. } => nanos(start.elapsed()),
        }
    }

    fn slack(&self) -> u64 {
        match &self.kind {
            ClockKind::Mock { .. } => 0,
            ClockKind::Real { slack, .. } => *slack,
        }
    }

    async fn advance(&self, by: Duration) {
        match &self.kind {
            ClockKind::Mock { advance, .. } => advance(by),
            ClockKind::Real { .. } => tokio::time::sleep(by).await,
        }
    }
}

impl Default for ModelClock {
    /// Real time with a 10 ms slack.
    fn default() -> Self {
        ModelClock::real(Duration::from_millis(10))
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// The first step at which a backend's answer was not one the model
/// allows.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Divergence {
    /// The step's index in the sequence.
    pub step: usize,
    /// The step.
    pub op: Op,
    /// What the model allowed.
    pub expected: String,
    /// What the backend answered.
    pub actual: String,
    /// The run's namespace.
    pub namespace: String,
}

impl fmt::Display for Divergence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "step {} `{}` (namespace {}): expected {}, got {}",
            self.step, self.op, self.namespace, self.expected, self.actual
        )
    }
}

impl std::error::Error for Divergence {}

/// Runs sequences of [`Op`]s against one backend, in a namespace of its
/// own, and compares every answer with the reference model.
pub struct ModelRunner {
    backend: Arc<dyn CacheBackend>,
    clock: ModelClock,
    evicts: bool,
    ns: String,
}

impl fmt::Debug for ModelRunner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ModelRunner")
            .field("backend", &self.backend.name())
            .field("clock", &self.clock)
            .field("evicts", &self.evicts)
            .field("namespace", &self.ns)
            .finish()
    }
}

impl ModelRunner {
    /// A runner on `backend` with a fresh random namespace
    /// (`model:<hex>:`), real time ([`ModelClock::default`]) and eviction
    /// as the backend's capabilities say.
    pub fn new(backend: Arc<dyn CacheBackend>) -> Self {
        let evicts = backend.capabilities().evicts;
        ModelRunner {
            backend,
            clock: ModelClock::default(),
            evicts,
            ns: format!("model:{:016x}:", fastrand::u64(..)),
        }
    }

    /// Uses `clock` for time.
    #[must_use]
    pub fn with_clock(mut self, clock: ModelClock) -> Self {
        self.clock = clock;
        self
    }

    /// Overrides whether the backend may evict (e.g. `false` for a Redis
    /// without `maxmemory`, whose capabilities say it may).
    #[must_use]
    pub fn with_evicts(mut self, evicts: bool) -> Self {
        self.evicts = evicts;
        self
    }

    /// The namespace the runner's keys live in (ends with `:`).
    pub fn namespace(&self) -> &str {
        &self.ns
    }

    /// The full key of a suffix of [`KEYS`].
    pub fn key(&self, suffix: &str) -> String {
        format!("{}{suffix}", self.ns)
    }

    /// Runs `ops` from an empty namespace; returns how many steps ran, or
    /// the first step whose answer the model does not allow.
    ///
    /// # Errors
    ///
    /// The first [`Divergence`], an unexpected backend error included.
    pub async fn run(&self, ops: &[Op]) -> Result<usize, Divergence> {
        let mut model = Model {
            entries: BTreeMap::new(),
            evicts: self.evicts,
            slack: self.clock.slack(),
        };
        for (step, op) in ops.iter().enumerate() {
            self.step(&mut model, step, op)
                .await
                .map_err(|m| Divergence {
                    step,
                    op: op.clone(),
                    expected: m.expected,
                    actual: m.actual,
                    namespace: self.ns.clone(),
                })?;
        }
        Ok(ops.len())
    }

    /// Removes the runner's keys from the backend (errors ignored).
    pub async fn cleanup(&self) {
        let _ = self.backend.clear(&self.ns).await;
    }

    fn pattern(&self, pattern: &str) -> String {
        format!("{}{pattern}", glob_escape(&self.ns))
    }

    async fn step(&self, model: &mut Model, step: usize, op: &Op) -> Result<(), Mismatch> {
        let b = &*self.backend;
        let start = self.clock.now();
        model.prune(start);
        macro_rules! call {
            ($e:expr) => {{
                let r = $e.await;
                (
                    r,
                    Window {
                        start,
                        end: self.clock.now(),
                    },
                )
            }};
        }
        match op {
            Op::Get(k) => {
                let (r, w) = call!(b.get(&self.key(k)));
                model.observe_value(k, w, r.map_err(unexpected)?.as_ref())
            }
            Op::Set {
                key,
                value,
                ttl,
                mode,
            } => {
                let opts = SetOptions::ttl(*ttl).with_mode(*mode);
                let (r, w) =
                    call!(b.set(&self.key(key), Bytes::from_static(value.as_bytes()), opts));
                model.set(step, key, value, *ttl, *mode, w, r.map_err(unexpected)?)
            }
            Op::Delete(k) => {
                let (r, w) = call!(b.delete(&self.key(k)));
                model.delete(k, w, r.map_err(unexpected)?)
            }
            Op::Exists(k) => {
                let (r, w) = call!(b.exists(&self.key(k)));
                model.observe_exists(k, w, r.map_err(unexpected)?)
            }
            Op::Ttl(k) => {
                let (r, w) = call!(b.ttl(&self.key(k)));
                model.observe_ttl(k, w, r.map_err(unexpected)?)
            }
            Op::Expire(k, ttl) => {
                let (r, w) = call!(b.expire(&self.key(k), *ttl));
                model.expire(step, k, *ttl, w, r.map_err(unexpected)?)
            }
            Op::Incr { key, delta, ttl } => {
                let (r, w) = call!(b.incr(&self.key(key), *delta, *ttl));
                model.incr(step, key, *delta, *ttl, w, r)
            }
            Op::GetMany(keys) => {
                let full: Vec<String> = keys.iter().map(|k| self.key(k)).collect();
                let refs: Vec<&str> = full.iter().map(String::as_str).collect();
                let (r, w) = call!(b.get_many(&refs));
                let values = r.map_err(unexpected)?;
                if values.len() != keys.len() {
                    return Err(Mismatch::new(
                        format!("{} values", keys.len()),
                        format!("{} values", values.len()),
                    ));
                }
                for (i, (k, v)) in keys.iter().zip(&values).enumerate() {
                    model
                        .observe_value(k, w, v.as_ref())
                        .map_err(|m| m.at(i, k))?;
                }
                Ok(())
            }
            Op::SetMany(items, ttl) => {
                let full: Vec<(String, Bytes)> = items
                    .iter()
                    .map(|(k, v)| (self.key(k), Bytes::from_static(v.as_bytes())))
                    .collect();
                let refs: Vec<(&str, Bytes)> =
                    full.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
                let (r, w) = call!(b.set_many(&refs, *ttl));
                r.map_err(unexpected)?;
                model.set_many(step, items, *ttl, w);
                Ok(())
            }
            Op::DeleteMany(keys) => {
                let full: Vec<String> = keys.iter().map(|k| self.key(k)).collect();
                let refs: Vec<&str> = full.iter().map(String::as_str).collect();
                let (r, w) = call!(b.delete_many(&refs));
                let distinct: BTreeSet<&'static str> = keys.iter().copied().collect();
                model.remove_counted(&distinct, w, r.map_err(unexpected)?)
            }
            Op::DeleteMatching(p) => {
                let pattern = self.pattern(p);
                let (r, w) = call!(b.delete_matching(&pattern));
                let matched = self.matching(&pattern);
                model.remove_counted(&matched, w, r.map_err(unexpected)?)
            }
            Op::Scan(p) => {
                let pattern = self.pattern(p);
                let (r, w) = call!(b.scan(&pattern));
                let found = match r {
                    Err(e) if e.kind() == ErrorKind::Unsupported => return Ok(()),
                    r => r.map_err(unexpected)?,
                };
                let matched = self.matching(&pattern);
                let mut seen = BTreeSet::new();
                for key in &found {
                    match key.strip_prefix(&self.ns).and_then(|s| matched.get(s)) {
                        Some(k) => {
                            seen.insert(*k);
                        }
                        None => {
                            return Err(Mismatch::new(
                                format!("keys matching {pattern:?} only"),
                                format!("{key:?} in {found:?}"),
                            ))
                        }
                    }
                }
                model.observe_scan(&matched, &seen, w)
            }
            Op::Clear => {
                let (r, w) = call!(b.clear(&self.ns));
                let all: BTreeSet<&'static str> = KEYS.iter().copied().collect();
                model.remove_counted(&all, w, r.map_err(unexpected)?)
            }
            Op::Advance(by) => {
                self.clock.advance(*by).await;
                Ok(())
            }
        }
    }

    /// The suffixes of [`KEYS`] whose full key matches `pattern`, by
    /// [`glob_match`] (the Redis rules; on Redis the server decides, so a
    /// difference between the two shows up as a divergence).
    fn matching(&self, pattern: &str) -> BTreeSet<&'static str> {
        KEYS.iter()
            .copied()
            .filter(|k| glob_match(pattern, &self.key(k)))
            .collect()
    }
}

/// Runs a sequence against `backend` with real time and eviction as its
/// capabilities say, in a fresh namespace that is cleared afterwards.
///
/// # Errors
///
/// The first [`Divergence`].
pub async fn run_model(backend: Arc<dyn CacheBackend>, ops: &[Op]) -> Result<usize, Divergence> {
    let runner = ModelRunner::new(backend);
    let result = runner.run(ops).await;
    runner.cleanup().await;
    result
}

/// The number of cases to run: `CACHE_MODEL_CASES` when set to a number,
/// else `default`.
pub fn cases_from_env(default: u32) -> u32 {
    std::env::var("CACHE_MODEL_CASES")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// Runs `cases` random sequences of `profile` (proptest), each on a fresh
/// runner from `factory` (so a fresh namespace, and a fresh backend if the
/// factory makes one), on a two-thread tokio runtime. Prints the cases and
/// operations run. A divergence is shrunk to a minimal sequence.
///
/// `PROPTEST_*` variables (e.g. `PROPTEST_RNG_SEED`) apply; failures are not
/// persisted to files.
///
/// # Panics
///
/// On a divergence, with the minimal failing sequence and the step that
/// diverged; when no tokio runtime can be built.
pub fn check_model<F, Fut>(name: &str, profile: &Profile, cases: u32, factory: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = ModelRunner>,
{
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime for the model run");
    let config = Config {
        cases,
        max_shrink_iters: profile.max_shrink_iters,
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    let (runs, steps) = (Cell::new(0u64), Cell::new(0u64));
    let started = Instant::now();
    let result = runner.run(&ops(profile), |ops| {
        let outcome = rt.block_on(async {
            let model = factory().await;
            let outcome = model.run(&ops).await;
            model.cleanup().await;
            outcome
        });
        runs.set(runs.get() + 1);
        match outcome {
            Ok(n) => {
                steps.set(steps.get() + n as u64);
                Ok(())
            }
            Err(d) => {
                steps.set(steps.get() + d.step as u64 + 1);
                Err(TestCaseError::fail(d.to_string()))
            }
        }
    });
    let summary = format!(
        "model {name}: {cases} cases, {} sequences run (shrinking included), {} operations, {:.2?}",
        runs.get(),
        steps.get(),
        started.elapsed()
    );
    println!("{summary}");
    match result {
        Ok(()) => {}
        Err(TestError::Fail(reason, ops)) => panic!(
            "{summary}\nmodel {name}: divergence at {reason}\nminimal failing sequence ({} steps):\n{}",
            ops.len(),
            format_sequence(&ops)
        ),
        Err(TestError::Abort(reason)) => panic!("{summary}\nmodel {name}: aborted: {reason}"),
    }
}

// ------------------------------------------------------------------ model

/// The end of a TTL, as the span of instants it may fall in (model
/// nanoseconds; `NEVER`: no TTL). A mock clock makes the span one instant.
const NEVER: u64 = u64::MAX;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Expiry {
    lo: u64,
    hi: u64,
}

impl Expiry {
    const NEVER: Expiry = Expiry {
        lo: NEVER,
        hi: NEVER,
    };

    fn union(self, other: Expiry) -> Expiry {
        Expiry {
            lo: self.lo.min(other.lo),
            hi: self.hi.max(other.hi),
        }
    }

    /// Whether a `ttl` answer during `w` fits.
    fn allows(self, ttl: KeyTtl, w: Window) -> bool {
        match ttl {
            KeyTtl::Missing => false,
            KeyTtl::Persistent => self.hi == NEVER,
            KeyTtl::Expires(left) => {
                let left = nanos(left);
                self.lo != NEVER
                    && left >= self.lo.saturating_sub(w.end)
                    && (self.hi == NEVER || left <= self.hi.saturating_sub(w.start))
            }
        }
    }

    fn describe(self, w: Window) -> String {
        let (lo, hi) = (
            self.lo.saturating_sub(w.end),
            self.hi.saturating_sub(w.start),
        );
        match (self.lo == NEVER, self.hi == NEVER) {
            (true, _) => "Persistent".to_string(),
            (false, true) => format!("Persistent or Expires(>= {:?})", Duration::from_nanos(lo)),
            (false, false) if lo == hi => format!("Expires({:?})", Duration::from_nanos(lo)),
            (false, false) => format!(
                "Expires({:?}..={:?})",
                Duration::from_nanos(lo),
                Duration::from_nanos(hi)
            ),
        }
    }
}

/// When a call ran, in model nanoseconds.
#[derive(Debug, Clone, Copy)]
struct Window {
    start: u64,
    end: u64,
}

#[derive(Debug, Clone)]
struct Entry {
    value: Bytes,
    expiry: Expiry,
    /// The key may be gone without the model knowing: evicted since the
    /// last write of it, or an `incr` whose effect was ambiguous.
    maybe_gone: bool,
    /// The step that wrote it, for messages.
    written_at: usize,
}

/// What the model knows of a key at a call.
enum Know {
    Absent,
    Present(Entry),
    /// Present (with this entry) or gone: eviction, or a TTL's end inside
    /// the uncertainty of real time.
    Maybe(Entry),
}

impl Know {
    fn entry(&self) -> Option<&Entry> {
        match self {
            Know::Absent => None,
            Know::Present(e) | Know::Maybe(e) => Some(e),
        }
    }

    fn may_be_absent(&self) -> bool {
        !matches!(self, Know::Present(_))
    }

    fn describe_value(&self) -> String {
        match self {
            Know::Absent => "None".to_string(),
            Know::Present(e) => format!("{} (written at step {})", show(&e.value), e.written_at),
            Know::Maybe(e) => format!(
                "None or {} (written at step {})",
                show(&e.value),
                e.written_at
            ),
        }
    }
}

struct Mismatch {
    expected: String,
    actual: String,
}

impl Mismatch {
    fn new(expected: impl Into<String>, actual: impl Into<String>) -> Self {
        Mismatch {
            expected: expected.into(),
            actual: actual.into(),
        }
    }

    fn at(self, index: usize, key: &str) -> Self {
        Mismatch {
            expected: format!("[{index}] ({key:?}) {}", self.expected),
            actual: format!("[{index}] {}", self.actual),
        }
    }
}

fn unexpected(err: Error) -> Mismatch {
    Mismatch::new("no error", format!("Err({err}) [{:?}]", err.kind()))
}

fn show(value: &Bytes) -> String {
    format!("Some({:?})", String::from_utf8_lossy(value))
}

fn show_opt(value: Option<&Bytes>) -> String {
    value.map_or_else(|| "None".to_string(), show)
}

/// Parses an integer as Redis does: `0`, or an optional `-` and digits
/// without a leading zero, fitting in an `i64`.
fn redis_int(value: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(value).ok()?;
    let digits = text.strip_prefix('-').unwrap_or(text);
    let canonical = text == "0"
        || (digits.starts_with(|c: char| c.is_ascii_digit() && c != '0')
            && digits.chars().all(|c| c.is_ascii_digit()));
    if canonical {
        text.parse().ok()
    } else {
        None
    }
}

/// The reference model: the keys of the run's namespace, what each holds
/// and until when.
struct Model {
    entries: BTreeMap<&'static str, Entry>,
    evicts: bool,
    slack: u64,
}

impl Model {
    /// Forgets entries that have certainly expired by `now`.
    fn prune(&mut self, now: u64) {
        self.entries
            .retain(|_, e| e.expiry.hi == NEVER || now < e.expiry.hi);
    }

    fn know(&self, key: &str, w: Window) -> Know {
        match self.entries.get(key) {
            None => Know::Absent,
            Some(e) if e.expiry.hi != NEVER && w.start >= e.expiry.hi => Know::Absent,
            Some(e) if !e.maybe_gone && (e.expiry.lo == NEVER || w.end < e.expiry.lo) => {
                Know::Present(e.clone())
            }
            Some(e) => Know::Maybe(e.clone()),
        }
    }

    /// The end of a TTL given at a call during `w`.
    fn expiry(&self, ttl: Option<Duration>, w: Window) -> Expiry {
        match ttl {
            None => Expiry::NEVER,
            Some(d) => {
                let d = nanos(d);
                Expiry {
                    lo: w.start.saturating_add(d).saturating_sub(self.slack),
                    hi: w
                        .end
                        .saturating_add(d)
                        .saturating_add(self.slack)
                        .min(NEVER - 1),
                }
            }
        }
    }

    /// The backend showed the key present.
    fn seen(&mut self, key: &str) {
        if let Some(e) = self.entries.get_mut(key) {
            e.maybe_gone = false;
        }
    }

    fn store(&mut self, step: usize, key: &'static str, value: Bytes, expiry: Expiry) {
        self.entries.insert(
            key,
            Entry {
                value,
                expiry,
                maybe_gone: false,
                written_at: step,
            },
        );
    }

    /// A write that may have inserted: on an evicting backend every other
    /// key may now be gone.
    fn may_evict_all_but(&mut self, key: &str) {
        if self.evicts {
            for (k, e) in &mut self.entries {
                if *k != key {
                    e.maybe_gone = true;
                }
            }
        }
    }

    fn observe_value(
        &mut self,
        key: &str,
        w: Window,
        actual: Option<&Bytes>,
    ) -> Result<(), Mismatch> {
        let know = self.know(key, w);
        match (&know, actual) {
            (Know::Absent, None) => Ok(()),
            (Know::Maybe(_), None) => {
                self.entries.remove(key);
                Ok(())
            }
            (Know::Present(e) | Know::Maybe(e), Some(v)) if *v == e.value => {
                self.seen(key);
                Ok(())
            }
            _ => Err(Mismatch::new(know.describe_value(), show_opt(actual))),
        }
    }

    fn observe_exists(&mut self, key: &str, w: Window, actual: bool) -> Result<(), Mismatch> {
        let know = self.know(key, w);
        match (&know, actual) {
            (Know::Absent, false) | (Know::Present(_), true) => Ok(()),
            (Know::Maybe(_), false) => {
                self.entries.remove(key);
                Ok(())
            }
            (Know::Maybe(_), true) => {
                self.seen(key);
                Ok(())
            }
            (Know::Absent, true) => Err(Mismatch::new("false", "true")),
            (Know::Present(e), false) => Err(Mismatch::new(
                format!("true (written at step {})", e.written_at),
                "false",
            )),
        }
    }

    fn observe_ttl(&mut self, key: &str, w: Window, actual: KeyTtl) -> Result<(), Mismatch> {
        let know = self.know(key, w);
        match (&know, actual) {
            (Know::Absent, KeyTtl::Missing) => Ok(()),
            (Know::Maybe(_), KeyTtl::Missing) => {
                self.entries.remove(key);
                Ok(())
            }
            (Know::Present(e) | Know::Maybe(e), t) if e.expiry.allows(t, w) => {
                self.seen(key);
                Ok(())
            }
            _ => {
                let expected = match &know {
                    Know::Absent => "Missing".to_string(),
                    Know::Present(e) => e.expiry.describe(w),
                    Know::Maybe(e) => format!("Missing or {}", e.expiry.describe(w)),
                };
                Err(Mismatch::new(expected, format!("{actual:?}")))
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn set(
        &mut self,
        step: usize,
        key: &'static str,
        value: &'static str,
        ttl: Option<Duration>,
        mode: SetMode,
        w: Window,
        actual: bool,
    ) -> Result<(), Mismatch> {
        let value = Bytes::from_static(value.as_bytes());
        let if_absent = mode == SetMode::IfAbsent;
        if ttl == Some(Duration::ZERO) {
            // Never stored; `Always` removes what is there.
            if actual {
                return Err(Mismatch::new("false (zero TTL)", "true"));
            }
            if !if_absent {
                self.entries.remove(key);
            }
            return Ok(());
        }
        let know = self.know(key, w);
        let wrote = match (&know, if_absent) {
            (_, false) | (Know::Absent, true) => true,
            (Know::Present(_), true) => false,
            (Know::Maybe(_), true) => actual,
        };
        if wrote != actual {
            let why = if if_absent {
                format!(" (if-absent; key {})", know.describe_value())
            } else {
                String::new()
            };
            return Err(Mismatch::new(format!("{wrote}{why}"), actual.to_string()));
        }
        if wrote {
            self.store(step, key, value, self.expiry(ttl, w));
            self.may_evict_all_but(key);
        } else {
            self.seen(key);
        }
        Ok(())
    }

    fn delete(&mut self, key: &str, w: Window, actual: bool) -> Result<(), Mismatch> {
        let know = self.know(key, w);
        self.entries.remove(key);
        match (&know, actual) {
            (Know::Absent, false) | (Know::Present(_), true) | (Know::Maybe(_), _) => Ok(()),
            (Know::Absent, true) => Err(Mismatch::new("false", "true")),
            (Know::Present(e), false) => Err(Mismatch::new(
                format!("true (written at step {})", e.written_at),
                "false",
            )),
        }
    }

    fn expire(
        &mut self,
        step: usize,
        key: &'static str,
        ttl: Option<Duration>,
        w: Window,
        actual: bool,
    ) -> Result<(), Mismatch> {
        if ttl == Some(Duration::ZERO) {
            return self.delete(key, w, actual);
        }
        let know = self.know(key, w);
        match (&know, actual) {
            (Know::Absent, false) => Ok(()),
            (Know::Maybe(_), false) => {
                self.entries.remove(key);
                Ok(())
            }
            (Know::Present(e) | Know::Maybe(e), true) => {
                let value = e.value.clone();
                self.store(step, key, value, self.expiry(ttl, w));
                Ok(())
            }
            (Know::Absent, true) => Err(Mismatch::new("false", "true")),
            (Know::Present(e), false) => Err(Mismatch::new(
                format!("true (written at step {})", e.written_at),
                "false",
            )),
        }
    }

    fn incr(
        &mut self,
        step: usize,
        key: &'static str,
        delta: i64,
        ttl: Option<Duration>,
        w: Window,
        actual: Result<i64, Error>,
    ) -> Result<(), Mismatch> {
        // The answer if the key is there, and if it is not.
        let know = self.know(key, w);
        let if_present: Option<Result<i64, ErrorKind>> = know.entry().map(|e| {
            redis_int(&e.value)
                .and_then(|n| n.checked_add(delta))
                .ok_or(ErrorKind::InvalidValue)
        });
        let if_absent: Option<Result<i64, ErrorKind>> = know.may_be_absent().then_some(Ok(delta));
        let got: Result<i64, ErrorKind> = actual.as_ref().map(|n| *n).map_err(Error::kind);
        let present = if_present == Some(got);
        let absent = if_absent == Some(got);
        if !present && !absent {
            let expected: Vec<String> = [if_present, if_absent]
                .into_iter()
                .flatten()
                .map(|r| format!("{r:?}"))
                .collect();
            let actual = match &actual {
                Ok(n) => format!("Ok({n})"),
                Err(e) => format!("Err({:?}: {e})", e.kind()),
            };
            return Err(Mismatch::new(
                format!("{} (key {})", expected.join(" or "), know.describe_value()),
                actual,
            ));
        }
        let created_expiry = self.expiry(ttl, w);
        let zero = ttl == Some(Duration::ZERO);
        match (got, know.entry()) {
            // Refused: the key is there, unchanged.
            (Err(_), _) => self.seen(key),
            (Ok(n), Some(e)) if present && absent => {
                // Either it held 0 and keeps its TTL, or it was created
                // with `ttl`: keep both possibilities.
                // (A created key with a zero TTL is not kept: then the
                // key may be gone.)
                let expiry = if zero {
                    e.expiry
                } else {
                    e.expiry.union(created_expiry)
                };
                self.entries.insert(
                    key,
                    Entry {
                        value: Bytes::from(n.to_string()),
                        expiry,
                        maybe_gone: zero,
                        written_at: step,
                    },
                );
                self.may_evict_all_but(key);
            }
            (Ok(n), Some(e)) if present => {
                let expiry = e.expiry;
                self.store(step, key, Bytes::from(n.to_string()), expiry);
            }
            (Ok(n), _) => {
                if zero {
                    self.entries.remove(key);
                } else {
                    self.store(step, key, Bytes::from(n.to_string()), created_expiry);
                }
                self.may_evict_all_but(key);
            }
        }
        Ok(())
    }

    fn set_many(
        &mut self,
        step: usize,
        items: &[(&'static str, &'static str)],
        ttl: Option<Duration>,
        w: Window,
    ) {
        if ttl == Some(Duration::ZERO) {
            for (k, _) in items {
                self.entries.remove(k);
            }
            return;
        }
        let expiry = self.expiry(ttl, w);
        for (k, v) in items {
            self.store(step, k, Bytes::from_static(v.as_bytes()), expiry);
        }
        if let Some((last, _)) = items.last() {
            // Each item's write may evict the items before it.
            self.may_evict_all_but(last);
        }
    }

    /// A removal of `keys` that answers how many it removed.
    fn remove_counted(
        &mut self,
        keys: &BTreeSet<&'static str>,
        w: Window,
        actual: u64,
    ) -> Result<(), Mismatch> {
        let (mut sure, mut maybe) = (0u64, 0u64);
        for key in keys {
            match self.know(key, w) {
                Know::Absent => {}
                Know::Present(_) => sure += 1,
                Know::Maybe(_) => maybe += 1,
            }
            self.entries.remove(key);
        }
        if actual < sure || actual > sure + maybe {
            let expected = if maybe == 0 {
                sure.to_string()
            } else {
                format!("{sure}..={}", sure + maybe)
            };
            return Err(Mismatch::new(
                format!("{expected} (of {keys:?})"),
                actual.to_string(),
            ));
        }
        Ok(())
    }

    fn observe_scan(
        &mut self,
        matched: &BTreeSet<&'static str>,
        found: &BTreeSet<&'static str>,
        w: Window,
    ) -> Result<(), Mismatch> {
        let mut must = BTreeSet::new();
        let mut may = BTreeSet::new();
        for key in matched {
            match self.know(key, w) {
                Know::Absent => {}
                Know::Present(_) => {
                    must.insert(*key);
                }
                Know::Maybe(_) => {
                    may.insert(*key);
                }
            }
        }
        if !must.is_subset(found) || !found.iter().all(|k| must.contains(k) || may.contains(k)) {
            return Err(Mismatch::new(
                format!("{must:?} and any of {may:?}"),
                format!("{found:?}"),
            ));
        }
        for key in may {
            if found.contains(key) {
                self.seen(key);
            } else {
                self.entries.remove(key);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_integers() {
        for (s, v) in [("0", Some(0)), ("-12", Some(-12)), ("7", Some(7))] {
            assert_eq!(redis_int(s.as_bytes()), v, "{s}");
        }
        for s in ["", "-", "-0", "007", "+1", "x", "9223372036854775808"] {
            assert_eq!(redis_int(s.as_bytes()), None, "{s}");
        }
        assert_eq!(redis_int(b"-9223372036854775808"), Some(i64::MIN));
    }

    #[test]
    fn patterns_stay_in_the_namespace_and_match_something() {
        let runner_ns = "model:00ff:";
        for p in PATTERNS {
            let pattern = format!("{}{p}", glob_escape(runner_ns));
            assert!(!glob_match(&pattern, "model:00fe:a"), "{p}");
            assert!(!glob_match(&pattern, "other:a"), "{p}");
        }
        let matches = |p: &str| {
            let pattern = format!("{}{p}", glob_escape(runner_ns));
            KEYS.iter()
                .filter(|k| glob_match(&pattern, &format!("{runner_ns}{k}")))
                .count()
        };
        assert_eq!(matches("*"), KEYS.len());
        assert_eq!(matches(r"a\*"), 1);
        assert_eq!(matches(r"\[ab\]"), 1);
        assert_eq!(matches(r"a\\b"), 1);
        assert_eq!(matches("zz*"), 0);
    }

    #[test]
    fn a_mock_expiry_is_one_instant() {
        let model = Model {
            entries: BTreeMap::new(),
            evicts: false,
            slack: 0,
        };
        let w = Window {
            start: 1_000,
            end: 1_000,
        };
        let e = model.expiry(Some(Duration::from_nanos(500)), w);
        assert_eq!(
            e,
            Expiry {
                lo: 1_500,
                hi: 1_500
            }
        );
        assert!(e.allows(KeyTtl::Expires(Duration::from_nanos(500)), w));
        assert!(!e.allows(KeyTtl::Expires(Duration::from_nanos(499)), w));
        assert!(!e.allows(KeyTtl::Persistent, w));
    }
}
