//! The steps of a sequence and the proptest strategy that draws them.

use std::fmt;
use std::time::Duration;

use cache_core::SetMode;
use proptest::collection::vec;
use proptest::prelude::{prop_oneof, Just, Strategy};
use proptest::sample::select;

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

/// One step of a sequence: a call of the [`CacheBackend`](cache_core::CacheBackend) trait on keys of
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

/// A sequence as numbered lines, one step each (the form [`check_model`](super::check_model)
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
