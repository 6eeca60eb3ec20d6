//! The reference model: what each key of the run's namespace holds, until
//! when, and how sure the model is of it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use bytes::Bytes;
use cache_core::{Error, ErrorKind, KeyTtl, SetMode};

use super::runner::nanos;

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
pub(super) struct Window {
    pub(super) start: u64,
    pub(super) end: u64,
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

pub(super) struct Mismatch {
    pub(super) expected: String,
    pub(super) actual: String,
}

impl Mismatch {
    pub(super) fn new(expected: impl Into<String>, actual: impl Into<String>) -> Self {
        Mismatch {
            expected: expected.into(),
            actual: actual.into(),
        }
    }

    pub(super) fn at(self, index: usize, key: &str) -> Self {
        Mismatch {
            expected: format!("[{index}] ({key:?}) {}", self.expected),
            actual: format!("[{index}] {}", self.actual),
        }
    }
}

pub(super) fn unexpected(err: Error) -> Mismatch {
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
pub(super) struct Model {
    entries: BTreeMap<&'static str, Entry>,
    evicts: bool,
    slack: u64,
}

impl Model {
    /// An empty namespace; `evicts`: writes may drop other keys; `slack`:
    /// the uncertainty of a TTL's end, in nanoseconds.
    pub(super) fn new(evicts: bool, slack: u64) -> Self {
        Model {
            entries: BTreeMap::new(),
            evicts,
            slack,
        }
    }

    /// Forgets entries that have certainly expired by `now`.
    pub(super) fn prune(&mut self, now: u64) {
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

    pub(super) fn observe_value(
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

    pub(super) fn observe_exists(
        &mut self,
        key: &str,
        w: Window,
        actual: bool,
    ) -> Result<(), Mismatch> {
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

    pub(super) fn observe_ttl(
        &mut self,
        key: &str,
        w: Window,
        actual: KeyTtl,
    ) -> Result<(), Mismatch> {
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
    pub(super) fn set(
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

    pub(super) fn delete(&mut self, key: &str, w: Window, actual: bool) -> Result<(), Mismatch> {
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

    pub(super) fn expire(
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

    pub(super) fn incr(
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
                // The value may have grown: a backend bounded by bytes may
                // evict others.
                self.may_evict_all_but(key);
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

    pub(super) fn set_many(
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
    pub(super) fn remove_counted(
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

    pub(super) fn observe_scan(
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
    use crate::model::op::{KEYS, PATTERNS};
    use cache_core::{glob_escape, glob_match};

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
