//! Running a sequence against a backend, step by step, with the model.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cache_core::{glob_escape, glob_match, CacheBackend, ErrorKind, SetOptions};

use super::op::{Op, KEYS};
use super::reference::{unexpected, Mismatch, Model, Window};

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

pub(super) fn nanos(d: Duration) -> u64 {
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
        let mut model = Model::new(self.evicts, self.clock.slack());
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
