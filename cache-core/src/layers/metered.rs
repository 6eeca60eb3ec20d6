//! `Metered`: counters, latency histograms and tracing spans per operation.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use tracing::Instrument;

use crate::backend::{CacheBackend, Capabilities, Health, KeyTtl, SetOptions};
use crate::error::{ErrorKind, Result};
use crate::stats::Striped;

/// Counts and times every call to the inner backend, and traces it.
///
/// Always kept in process ([`Metered::snapshot`]); with the `metrics`
/// feature also exported through the [`metrics`](https://docs.rs/metrics)
/// facade to whatever recorder the application installed (Prometheus,
/// StatsD…). Labels are low-cardinality: never a key.
///
/// | metric | kind | labels | meaning |
/// |---|---|---|---|
/// | `cache_backend_calls_total` | counter | `backend`, `op`, `outcome` | calls; `outcome` is `hit` or `miss` for `get`/`exists`, `ok` for other successes, `error` |
/// | `cache_backend_errors_total` | counter | `backend`, `op`, `kind` | failed calls by [`ErrorKind`] (`connection`, `timeout`…) |
/// | `cache_backend_duration_seconds` | histogram | `backend`, `op` | call latency |
/// | `cache_backend_evictions` | gauge | `backend` | entries evicted so far, as the backend's `health()` reports it (`evictions`, or Redis `evicted_keys`), updated on each `health()` call |
///
/// `Cache` itself exports `cache_hits_total`, `cache_misses_total`,
/// `cache_sets_total`, `cache_deletes_total`, `cache_errors_total`,
/// `cache_decode_errors_total`, `cache_caller_errors_total`,
/// `cache_loader_calls_total`, `cache_loader_errors_total`,
/// `cache_stale_served_total`, `cache_loader_timeouts_total`,
/// `cache_refreshes_total`, `cache_coalesced_total`,
/// `cache_lease_waits_total` and `cache_lease_fallbacks_total` (label
/// `prefix`), and `Tiered` exports `cache_tier_hits_total` (label `tier`:
/// `l1` or `l2`).
///
/// Each call runs in a `debug`-level tracing span `cache.op` with fields
/// `backend` and `op`; keys are not recorded unless
/// [`Metered::with_key_logging`] is on (then the key's length is).
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> cache::Result<()> {
/// use cache::layers::Metered;
/// use cache::{CacheBackend, SetOptions};
/// use cache::memory::MemoryBackend;
///
/// let backend = Metered::new(MemoryBackend::new());
/// backend.set("k", "v".into(), SetOptions::default()).await?;
/// backend.get("k").await?;
/// backend.get("nothing").await?;
/// let ops = backend.snapshot();
/// assert_eq!((ops["get"].hits, ops["get"].misses), (1, 1));
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Metered<B> {
    inner: B,
    /// Per operation, its [`Field`]s: striped, so threads calling at once
    /// do not write one cache line.
    counters: Striped<{ Op::ALL.len() * FIELDS }>,
    log_key_lengths: bool,
    errors: Mutex<BTreeMap<(&'static str, ErrorKind), u64>>,
    /// The exported keys of every operation, built once: the `counter!`
    /// and `histogram!` macros build a key with its label vector on every
    /// call (three allocations per backend call).
    #[cfg(feature = "metrics")]
    keys: Box<[OpKeys; Op::ALL.len()]>,
}

/// The exported metric keys of one operation (labels `backend`, `op`).
#[cfg(feature = "metrics")]
#[derive(Debug)]
struct OpKeys {
    /// `cache_backend_calls_total`, by [`Outcome`]'s number (the last: `error`).
    calls: [metrics::Key; 4],
    duration: metrics::Key,
}

#[cfg(feature = "metrics")]
impl OpKeys {
    fn new(backend: &'static str, op: &'static str) -> Self {
        let key = |name: &'static str, extra: Option<(&'static str, &'static str)>| {
            let mut labels = vec![
                metrics::Label::from_static_parts("backend", backend),
                metrics::Label::from_static_parts("op", op),
            ];
            labels.extend(extra.map(|(k, v)| metrics::Label::from_static_parts(k, v)));
            metrics::Key::from_parts(name, labels)
        };
        OpKeys {
            calls: ["hit", "miss", "ok", "error"]
                .map(|outcome| key("cache_backend_calls_total", Some(("outcome", outcome)))),
            duration: key("cache_backend_duration_seconds", None),
        }
    }
}

/// A backend operation; its number indexes the counters (through
/// [`counter`]) and the exported keys.
#[derive(Clone, Copy)]
enum Op {
    Get,
    Set,
    Delete,
    Exists,
    Ttl,
    Expire,
    Incr,
    Health,
    GetMany,
    SetMany,
    DeleteMany,
    Scan,
    DeleteMatching,
    Clear,
    Close,
}

impl Op {
    /// Every operation, by number.
    const ALL: [Op; 15] = [
        Op::Get,
        Op::Set,
        Op::Delete,
        Op::Exists,
        Op::Ttl,
        Op::Expire,
        Op::Incr,
        Op::Health,
        Op::GetMany,
        Op::SetMany,
        Op::DeleteMany,
        Op::Scan,
        Op::DeleteMatching,
        Op::Clear,
        Op::Close,
    ];

    fn name(self) -> &'static str {
        match self {
            Op::Get => "get",
            Op::Set => "set",
            Op::Delete => "delete",
            Op::Exists => "exists",
            Op::Ttl => "ttl",
            Op::Expire => "expire",
            Op::Incr => "incr",
            Op::Health => "health",
            Op::GetMany => "get_many",
            Op::SetMany => "set_many",
            Op::DeleteMany => "delete_many",
            Op::Scan => "scan",
            Op::DeleteMatching => "delete_matching",
            Op::Clear => "clear",
            Op::Close => "close",
        }
    }
}

// `Op::ALL` holds every operation at its number, the last one included.
const _: () = {
    let mut i = 0;
    while i < Op::ALL.len() {
        assert!(Op::ALL[i] as usize == i);
        i += 1;
    }
    assert!(Op::Close as usize + 1 == Op::ALL.len());
};

/// The counters of an operation.
#[derive(Clone, Copy)]
enum Field {
    Calls,
    Hits,
    Misses,
    Errors,
    Nanos,
}

const FIELDS: usize = Field::Nanos as usize + 1;

/// The index in [`Metered::counters`] of counter `field` of `op`.
fn counter(op: Op, field: Field) -> usize {
    op as usize * FIELDS + field as usize
}

/// Counters of one operation, from [`Metered::snapshot`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct OpStats {
    /// Calls made.
    pub calls: u64,
    /// Calls that found a value (`get`, `exists`; per key for `get_many`).
    pub hits: u64,
    /// Calls that found nothing (`get`, `exists`; per key for `get_many`).
    pub misses: u64,
    /// Calls that failed.
    pub errors: u64,
    /// Time spent in the calls.
    pub total_time: Duration,
}

/// How a call went, for the counters; its number indexes
/// [`OpKeys::calls`].
#[derive(Clone, Copy)]
enum Outcome {
    Hit = 0,
    Miss = 1,
    Ok = 2,
}

impl<B: CacheBackend> Metered<B> {
    /// Wraps `inner`.
    pub fn new(inner: B) -> Self {
        Metered {
            #[cfg(feature = "metrics")]
            keys: Box::new(Op::ALL.map(|op| OpKeys::new(inner.name(), op.name()))),
            inner,
            counters: Striped::default(),
            log_key_lengths: false,
            errors: Mutex::new(BTreeMap::new()),
        }
    }

    /// Records the length of the key in each span (never its contents).
    #[must_use]
    pub fn with_key_logging(mut self, on: bool) -> Self {
        self.log_key_lengths = on;
        self
    }

    /// The wrapped backend.
    pub fn inner(&self) -> &B {
        &self.inner
    }

    /// The counters of every operation called so far, by name.
    pub fn snapshot(&self) -> BTreeMap<&'static str, OpStats> {
        let count = |op: Op, field: Field| self.counters.sum(counter(op, field));
        Op::ALL
            .into_iter()
            .filter(|&op| count(op, Field::Calls) > 0)
            .map(|op| {
                (
                    op.name(),
                    OpStats {
                        calls: count(op, Field::Calls),
                        hits: count(op, Field::Hits),
                        misses: count(op, Field::Misses),
                        errors: count(op, Field::Errors),
                        total_time: Duration::from_nanos(count(op, Field::Nanos)),
                    },
                )
            })
            .collect()
    }

    /// Failed calls by operation and error kind.
    pub fn errors(&self) -> BTreeMap<(&'static str, ErrorKind), u64> {
        self.errors
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    async fn observe<T>(
        &self,
        op: Op,
        key: Option<&str>,
        call: impl Future<Output = Result<T>>,
        classify: impl FnOnce(&T) -> (u64, u64),
    ) -> Result<T> {
        let span = self.span(op, key.map(str::len));
        let started = Instant::now();
        let result = call.instrument(span).await;
        self.record(op, started, &result, classify);
        result
    }

    /// The span of one call.
    /// The span of one call on a key `key_len` bytes long (`None`: a call
    /// on no key, or on many).
    fn span(&self, op: Op, key_len: Option<usize>) -> tracing::Span {
        let span = tracing::debug_span!(
            "cache.op",
            backend = self.inner.name(),
            op = op.name(),
            key_len = tracing::field::Empty
        );
        if let (true, Some(len)) = (self.log_key_lengths, key_len) {
            span.record("key_len", len);
        }
        span
    }

    /// A read answered now, `read` being the inner backend's: counted and
    /// timed as `get` is when it answers (`is_hit` tells a hit from its
    /// answer); nothing is counted when it leaves the read to the caller.
    fn read_now<T>(
        &self,
        key_len: usize,
        read: impl FnOnce() -> Option<Result<T>>,
        is_hit: impl FnOnce(&T) -> bool,
    ) -> Option<Result<T>> {
        let span = self.span(Op::Get, Some(key_len));
        let _entered = span.enter();
        let started = Instant::now();
        let result = read()?;
        self.record(Op::Get, started, &result, |v| found(is_hit(v)));
        Some(result)
    }

    /// Counts one call that started at `started` and ended with `result`.
    fn record<T>(
        &self,
        op: Op,
        started: Instant,
        result: &Result<T>,
        classify: impl FnOnce(&T) -> (u64, u64),
    ) {
        let elapsed = started.elapsed();
        let stripe = self.counters.local();
        let add = |field: Field, n: u64| {
            if n != 0 {
                stripe.add(counter(op, field), n);
            }
        };
        add(Field::Calls, 1);
        add(
            Field::Nanos,
            u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX),
        );
        let outcome = match result {
            Ok(value) => {
                let (hits, misses) = classify(value);
                add(Field::Hits, hits);
                add(Field::Misses, misses);
                Ok(match (hits, misses) {
                    (0, 0) => Outcome::Ok,
                    (_, 0) => Outcome::Hit,
                    _ => Outcome::Miss,
                })
            }
            Err(err) => {
                add(Field::Errors, 1);
                *self
                    .errors
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .entry((op.name(), err.kind()))
                    .or_insert(0) += 1;
                tracing::debug!(backend = self.inner.name(), op = op.name(), error = %err, "cache backend call failed");
                Err(err.kind())
            }
        };
        self.export(op, &outcome, elapsed);
    }

    #[cfg(feature = "metrics")]
    fn export(&self, op: Op, outcome: &std::result::Result<Outcome, ErrorKind>, elapsed: Duration) {
        let keys = &self.keys[op as usize];
        let at = match outcome {
            Ok(outcome) => *outcome as usize,
            Err(_) => 3,
        };
        crate::stats::export(&keys.calls[at], 1);
        if let Err(kind) = outcome {
            // Rare: built here.
            metrics::counter!("cache_backend_errors_total", "backend" => self.inner.name(), "op" => op.name(), "kind" => kind.as_str())
                .increment(1);
        }
        crate::stats::export_histogram(&keys.duration, elapsed.as_secs_f64());
    }

    #[cfg(not(feature = "metrics"))]
    fn export(
        &self,
        _op: Op,
        _outcome: &std::result::Result<Outcome, ErrorKind>,
        _elapsed: Duration,
    ) {
    }
}

fn none<T>(_: &T) -> (u64, u64) {
    (0, 0)
}

fn found(hit: bool) -> (u64, u64) {
    if hit {
        (1, 0)
    } else {
        (0, 1)
    }
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl<B: CacheBackend> CacheBackend for Metered<B> {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        self.observe(Op::Get, Some(key), self.inner.get(key), |v| {
            found(v.is_some())
        })
        .await
    }

    /// Counted as `get` is, when the inner backend answers now.
    fn get_now(&self, key: &str) -> Option<Result<Option<Bytes>>> {
        self.read_now(key.len(), || self.inner.get_now(key), Option::is_some)
    }

    /// Forwarded in its two parts; counted as `get` is, when the inner
    /// backend answers them now.
    fn get_now_joined(&self, head: &str, tail: &str) -> Option<Result<Option<Bytes>>> {
        self.read_now(
            head.len() + tail.len(),
            || self.inner.get_now_joined(head, tail),
            Option::is_some,
        )
    }

    /// As `get_now_joined`, lent: the time counted includes the lender's
    /// reader (a `Cache` decoding the value).
    fn read_now_joined(
        &self,
        head: &str,
        tail: &str,
        read: &mut dyn FnMut(&Bytes),
    ) -> Option<Result<bool>> {
        self.read_now(
            head.len() + tail.len(),
            || self.inner.read_now_joined(head, tail, read),
            |found| *found,
        )
    }

    async fn set(&self, key: &str, value: Bytes, opts: SetOptions) -> Result<bool> {
        self.observe(Op::Set, Some(key), self.inner.set(key, value, opts), none)
            .await
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        self.observe(Op::Delete, Some(key), self.inner.delete(key), none)
            .await
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        self.observe(Op::Exists, Some(key), self.inner.exists(key), |v| found(*v))
            .await
    }

    async fn ttl(&self, key: &str) -> Result<KeyTtl> {
        self.observe(Op::Ttl, Some(key), self.inner.ttl(key), none)
            .await
    }

    async fn expire(&self, key: &str, ttl: Option<Duration>) -> Result<bool> {
        self.observe(Op::Expire, Some(key), self.inner.expire(key, ttl), none)
            .await
    }

    async fn incr(&self, key: &str, delta: i64, ttl: Option<Duration>) -> Result<i64> {
        self.observe(Op::Incr, Some(key), self.inner.incr(key, delta, ttl), none)
            .await
    }

    async fn health(&self) -> Result<Health> {
        let health = self
            .observe(Op::Health, None, self.inner.health(), none)
            .await?;
        #[cfg(feature = "metrics")]
        if let Some(evictions) = health
            .details
            .get("evictions")
            .or_else(|| health.details.get("evicted_keys"))
            .and_then(|v| v.parse::<f64>().ok())
        {
            metrics::gauge!("cache_backend_evictions", "backend" => self.inner.name())
                .set(evictions);
        }
        Ok(health)
    }

    async fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Bytes>>> {
        self.observe(Op::GetMany, None, self.inner.get_many(keys), |values| {
            let hits = values.iter().filter(|v| v.is_some()).count() as u64;
            (hits, values.len() as u64 - hits)
        })
        .await
    }

    async fn set_many(&self, items: &[(&str, Bytes)], ttl: Option<Duration>) -> Result<()> {
        self.observe(Op::SetMany, None, self.inner.set_many(items, ttl), none)
            .await
    }

    async fn delete_many(&self, keys: &[&str]) -> Result<u64> {
        self.observe(Op::DeleteMany, None, self.inner.delete_many(keys), none)
            .await
    }

    async fn scan(&self, pattern: &str) -> Result<Vec<String>> {
        self.observe(Op::Scan, None, self.inner.scan(pattern), none)
            .await
    }

    async fn delete_matching(&self, pattern: &str) -> Result<u64> {
        self.observe(
            Op::DeleteMatching,
            None,
            self.inner.delete_matching(pattern),
            none,
        )
        .await
    }

    async fn clear(&self, namespace: &str) -> Result<u64> {
        self.observe(Op::Clear, None, self.inner.clear(namespace), none)
            .await
    }

    async fn close(&self) -> Result<()> {
        self.observe(Op::Close, None, self.inner.close(), none)
            .await
    }
}
