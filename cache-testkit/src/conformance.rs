//! The conformance suite: one case per rule of `CacheBackend`'s `# Behavior`.
//!
//! The list of cases is written once, in [`__for_each_case!`](crate::__for_each_case):
//! the registry below and [`conformance_suite!`](crate::conformance_suite)
//! both expand it.

use std::fmt;
use std::future::Future;
use std::io::Write as _;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cache_core::{
    glob_escape, CacheBackend, Capabilities, ErrorKind, HealthStatus, KeyTtl, SetMode, SetOptions,
};

/// The context a case runs in: a fresh backend and a namespace of its own.
pub struct Ctx {
    backend: Arc<dyn CacheBackend>,
    ns: String,
}

impl Ctx {
    /// The backend under test.
    pub fn backend(&self) -> &dyn CacheBackend {
        &*self.backend
    }

    /// The shared handle of the backend under test.
    pub fn backend_arc(&self) -> Arc<dyn CacheBackend> {
        Arc::clone(&self.backend)
    }

    /// The case's namespace (ends with `:`).
    pub fn ns(&self) -> &str {
        &self.ns
    }

    /// `suffix` inside the case's namespace.
    pub fn key(&self, suffix: &str) -> String {
        format!("{}{suffix}", self.ns)
    }

    /// The backend's capabilities.
    pub fn caps(&self) -> Capabilities {
        self.backend.capabilities()
    }
}

/// A capability a case needs. A case skips only for want of one of these,
/// and the runner re-checks each skip against the capabilities the backend
/// declares: a skip they do not justify is a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Need {
    /// [`Capabilities::sub_second_ttl`].
    SubSecondTtl,
    /// [`Capabilities::atomic_incr`].
    AtomicIncr,
    /// [`Capabilities::pattern_delete`].
    PatternDelete,
    /// A [`Capabilities::max_value_size`] of at least this many bytes.
    ValuesOf(usize),
    /// A [`Capabilities::max_value_size`] of at most this many bytes, so that
    /// a test can send a value over the limit.
    ValueLimitAtMost(usize),
}

impl Need {
    /// Whether `caps` declare this capability.
    pub fn is_met_by(self, caps: &Capabilities) -> bool {
        match self {
            Need::SubSecondTtl => caps.sub_second_ttl,
            Need::AtomicIncr => caps.atomic_incr,
            Need::PatternDelete => caps.pattern_delete,
            Need::ValuesOf(n) => caps.max_value_size >= n,
            Need::ValueLimitAtMost(n) => caps.max_value_size <= n,
        }
    }
}

impl fmt::Display for Need {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Need::SubSecondTtl => f.write_str("needs `sub_second_ttl`"),
            Need::AtomicIncr => f.write_str("needs `atomic_incr`"),
            Need::PatternDelete => f.write_str("needs `pattern_delete`"),
            Need::ValuesOf(n) => write!(f, "needs `max_value_size` >= {n} bytes"),
            Need::ValueLimitAtMost(n) => write!(
                f,
                "needs `max_value_size` <= {n} bytes (a value over the limit is sent)"
            ),
        }
    }
}

/// How a case ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// The backend behaved as the rule says.
    Passed,
    /// The rule does not apply: the backend does not declare this capability.
    Skipped(Need),
}

/// What a case returns: `Err` with a message when the rule is broken.
pub type CaseResult = Result<Outcome, String>;

type CaseFuture<'a> = Pin<Box<dyn Future<Output = CaseResult> + Send + 'a>>;
type CaseFn = for<'a> fn(&'a Ctx) -> CaseFuture<'a>;

macro_rules! check {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+));
        }
    };
}

macro_rules! ok {
    ($e:expr) => {
        $e.map_err(|err| format!("{} failed: {err}", stringify!($e)))?
    };
}

/// Skips the case unless the backend declares `$need` (a [`Need`]).
macro_rules! skip_unless {
    ($ctx:expr, $need:expr) => {
        if !$need.is_met_by(&$ctx.caps()) {
            return Ok(Outcome::Skipped($need));
        }
    };
}

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn ms(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

fn ttl(ms: u64) -> SetOptions {
    SetOptions::ttl(Some(Duration::from_millis(ms)))
}

fn nx(opts: SetOptions) -> SetOptions {
    opts.with_mode(SetMode::IfAbsent)
}

async fn put(ctx: &Ctx, key: &str, value: &str) -> Result<(), String> {
    ctx.backend()
        .set(&ctx.key(key), b(value), SetOptions::default())
        .await
        .map(drop)
        .map_err(|e| format!("set {key}: {e}"))
}

async fn value_of(ctx: &Ctx, key: &str) -> Result<Option<Bytes>, String> {
    ctx.backend()
        .get(&ctx.key(key))
        .await
        .map_err(|e| format!("get {key}: {e}"))
}

/// Keys of the namespace that exist, sorted, without the namespace.
async fn present(ctx: &Ctx, keys: &[&str]) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for k in keys {
        if ok!(ctx.backend().exists(&ctx.key(k)).await) {
            out.push((*k).to_string());
        }
    }
    out.sort();
    Ok(out)
}

async fn sleep_ms(ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

/// `Ok` when `result` is an error of kind `kind`.
fn refused<T: fmt::Debug>(
    what: &str,
    result: cache_core::Result<T>,
    kind: ErrorKind,
) -> Result<(), String> {
    match result {
        Err(e) if e.kind() == kind => Ok(()),
        other => Err(format!("{what} must fail with {kind:?}, got {other:?}")),
    }
}

/// `Ok` when a pattern operation refused with `InvalidKey` (or, on a backend
/// without `pattern_delete`, with `Unsupported`).
fn refused_pattern<T: fmt::Debug>(
    ctx: &Ctx,
    what: &str,
    result: cache_core::Result<T>,
) -> Result<(), String> {
    match result {
        Err(e) if e.kind() == ErrorKind::InvalidKey => Ok(()),
        Err(e) if e.kind() == ErrorKind::Unsupported && !ctx.caps().pattern_delete => Ok(()),
        other => Err(format!("{what} must fail with InvalidKey, got {other:?}")),
    }
}

/// The granularity of the backend's TTLs: 1 ms, or 1 s without
/// `sub_second_ttl`.
fn granularity(caps: &Capabilities) -> Duration {
    if caps.sub_second_ttl {
        ms(1)
    } else {
        Duration::from_secs(1)
    }
}

/// Checks that `ttl(key)` reports what is left of a TTL of `t` given by a
/// write that started at `since`: at most `t` (rounded up to the
/// granularity), at least `t` minus the time since then (minus the
/// granularity and 2 ms of clock rounding). Not timing-dependent: the
/// elapsed time is measured, not assumed.
async fn check_ttl_window(ctx: &Ctx, key: &str, t: Duration, since: Instant) -> Result<(), String> {
    let reported = ok!(ctx.backend().ttl(&ctx.key(key)).await);
    let elapsed = since.elapsed();
    let g = granularity(&ctx.caps());
    let upper = t.as_nanos().div_ceil(g.as_nanos()) * g.as_nanos();
    let lower = t.saturating_sub(elapsed + g + ms(2));
    match reported {
        KeyTtl::Expires(d) => {
            check!(
                d.as_nanos() <= upper && d >= lower,
                "{key}: a TTL of {t:?} set {elapsed:?} ago must report between {lower:?} and {t:?}, got {d:?}"
            );
            Ok(())
        }
        other => Err(format!(
            "{key}: a TTL of {t:?} must report Expires, got {other:?}"
        )),
    }
}

/// Checks that `key`, written with a TTL of `t` by a write that started at
/// `since`, is still readable at three quarters of `t`. The check counts
/// only when the read finished before `t` (the machine may stall).
async fn check_present_before_expiry(
    ctx: &Ctx,
    key: &str,
    t: Duration,
    since: Instant,
) -> Result<(), String> {
    tokio::time::sleep_until((since + t * 3 / 4).into()).await;
    let got = value_of(ctx, key).await?;
    if since.elapsed() + ms(2) < t {
        check!(
            got.is_some(),
            "{key}: a value with a TTL of {t:?} must be readable {:?} after the write",
            since.elapsed()
        );
    }
    Ok(())
}

/// Sleeps until `key`, written with a TTL of `t` by a write that returned
/// at `written`, has expired (plus 150 ms of slack and the granularity).
async fn sleep_past_expiry(ctx: &Ctx, t: Duration, written: Instant) {
    let until = written + t + granularity(&ctx.caps()) + ms(150);
    tokio::time::sleep_until(until.into()).await;
}

// ---------------------------------------------------------------- reads

async fn get_missing_returns_none(ctx: &Ctx) -> CaseResult {
    check!(
        value_of(ctx, "nothing").await?.is_none(),
        "a missing key must read as None"
    );
    Ok(Outcome::Passed)
}

/// `get_now`, when the backend answers it, answers what `get` does: a
/// hit, a miss, a value overwritten, a key deleted.
async fn get_now_agrees_with_get(ctx: &Ctx) -> CaseResult {
    async fn agree(ctx: &Ctx, key: &str, when: &str) -> Result<(), String> {
        let Some(now) = ctx.backend().get_now(&ctx.key(key)) else {
            return Ok(());
        };
        let now = now.map_err(|e| format!("get_now {key} ({when}): {e}"))?;
        let awaited = value_of(ctx, key).await?;
        check!(
            now == awaited,
            "get_now {key} ({when}) answered {now:?}, get {awaited:?}"
        );
        Ok(())
    }
    agree(ctx, "a", "missing").await?;
    put(ctx, "a", "1").await?;
    agree(ctx, "a", "written").await?;
    agree(ctx, "a", "read again").await?;
    put(ctx, "a", "2").await?;
    agree(ctx, "a", "overwritten").await?;
    ok!(ctx.backend().delete(&ctx.key("a")).await);
    agree(ctx, "a", "deleted").await?;
    Ok(Outcome::Passed)
}

/// `get_now_joined` and `read_now_joined`, when the backend answers them,
/// answer what `get` does, for every split of the key: a hit (lent once),
/// a miss (nothing lent), a value overwritten, a key deleted.
async fn get_now_joined_agrees_with_get(ctx: &Ctx) -> CaseResult {
    async fn agree(ctx: &Ctx, key: &str, when: &str) -> Result<(), String> {
        let full = ctx.key(key);
        let awaited = value_of(ctx, key).await?;
        // Split at the namespace (as a `Cache` splits its prefix from a
        // key's text), at each end and within each part.
        let ns = full.len() - key.len();
        for split in [0, ns / 2, ns, ns + key.len() / 2, full.len()] {
            let (head, tail) = full.split_at(split);
            if let Some(now) = ctx.backend().get_now_joined(head, tail) {
                let now =
                    now.map_err(|e| format!("get_now_joined {head:?} + {tail:?} ({when}): {e}"))?;
                check!(
                    now == awaited,
                    "get_now_joined {head:?} + {tail:?} ({when}) answered {now:?}, get {awaited:?}"
                );
            }
            // The lent read: the reader is given the value once, and only
            // when there is one.
            let mut lent = Vec::new();
            if let Some(found) = ctx
                .backend()
                .read_now_joined(head, tail, &mut |value| lent.push(value.clone()))
            {
                let found = found
                    .map_err(|e| format!("read_now_joined {head:?} + {tail:?} ({when}): {e}"))?;
                let expected: Vec<_> = awaited.iter().cloned().collect();
                check!(
                    found == awaited.is_some() && lent == expected,
                    "read_now_joined {head:?} + {tail:?} ({when}) answered {found} and lent \
                     {lent:?}, get {awaited:?}"
                );
            }
        }
        Ok(())
    }
    // A short key, and one longer than 32 bytes (a backend may read the
    // two kinds differently).
    for key in ["joined", "joined-by-a-key-longer-than-32-bytes"] {
        agree(ctx, key, "missing").await?;
        put(ctx, key, "1").await?;
        agree(ctx, key, "written").await?;
        put(ctx, key, "2").await?;
        agree(ctx, key, "overwritten").await?;
        ok!(ctx.backend().delete(&ctx.key(key)).await);
        agree(ctx, key, "deleted").await?;
    }
    Ok(Outcome::Passed)
}

async fn set_then_get_returns_value(ctx: &Ctx) -> CaseResult {
    let wrote = ok!(ctx
        .backend()
        .set(&ctx.key("a"), b("1"), SetOptions::default())
        .await);
    check!(wrote, "set must return true when it wrote");
    check!(
        value_of(ctx, "a").await? == Some(b("1")),
        "get must return the value set"
    );
    Ok(Outcome::Passed)
}

async fn empty_value_is_a_hit(ctx: &Ctx) -> CaseResult {
    put(ctx, "empty", "").await?;
    check!(
        value_of(ctx, "empty").await? == Some(Bytes::new()),
        "an empty value must be Some(empty), a hit"
    );
    check!(
        ok!(ctx.backend().exists(&ctx.key("empty")).await),
        "an empty value exists"
    );
    let got = ok!(ctx.backend().get_many(&[&ctx.key("empty")]).await);
    check!(
        got == vec![Some(Bytes::new())],
        "get_many must read an empty value as Some(empty), got {got:?}"
    );
    Ok(Outcome::Passed)
}

async fn binary_value_with_nul_bytes(ctx: &Ctx) -> CaseResult {
    let value: Bytes = (0u8..=255)
        .chain([0, 0, 0xff, 0])
        .collect::<Vec<_>>()
        .into();
    ok!(ctx
        .backend()
        .set(&ctx.key("bin"), value.clone(), SetOptions::default())
        .await);
    check!(
        value_of(ctx, "bin").await? == Some(value),
        "binary values must round-trip byte for byte"
    );
    Ok(Outcome::Passed)
}

async fn large_value_1mib(ctx: &Ctx) -> CaseResult {
    skip_unless!(ctx, Need::ValuesOf(1 << 20));
    let value: Bytes = (0..1 << 20)
        .map(|i: u32| (i % 251) as u8)
        .collect::<Vec<_>>()
        .into();
    ok!(ctx
        .backend()
        .set(&ctx.key("big"), value.clone(), SetOptions::default())
        .await);
    let got = value_of(ctx, "big").await?;
    check!(
        got.as_ref().map(Bytes::len) == Some(1 << 20),
        "1 MiB value came back with the wrong length"
    );
    check!(got == Some(value), "1 MiB value came back changed");
    Ok(Outcome::Passed)
}

async fn unicode_keys(ctx: &Ctx) -> CaseResult {
    // Distinct keys that a lossy transformation (non-ASCII to `?`, Unicode
    // normalization, case folding) would merge.
    let keys = [
        ("ключ", "1"),
        ("клюк", "2"),
        ("鍵🔑", "3"),
        ("clé é", "4"),
        ("cle\u{301} e\u{301}", "5"),
        ("CLÉ É", "6"),
    ];
    for (k, v) in keys {
        put(ctx, k, v).await?;
    }
    for (k, v) in keys {
        check!(
            value_of(ctx, k).await? == Some(b(v)),
            "unicode key {k:?} did not round-trip (keys are bytes: no normalization)"
        );
    }
    Ok(Outcome::Passed)
}

async fn get_many_preserves_order_and_missing(ctx: &Ctx) -> CaseResult {
    put(ctx, "m1", "one").await?;
    put(ctx, "m3", "three").await?;
    let keys = [ctx.key("m3"), ctx.key("m2"), ctx.key("m1"), ctx.key("m3")];
    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    let got = ok!(ctx.backend().get_many(&refs).await);
    check!(
        got == vec![Some(b("three")), None, Some(b("one")), Some(b("three"))],
        "get_many must answer in order with None for misses, got {got:?}"
    );
    Ok(Outcome::Passed)
}

async fn get_many_empty_is_empty(ctx: &Ctx) -> CaseResult {
    let got = ok!(ctx.backend().get_many(&[]).await);
    check!(got.is_empty(), "get_many of no keys must be empty");
    Ok(Outcome::Passed)
}

// ---------------------------------------------------------------- writes

async fn set_overwrites_value(ctx: &Ctx) -> CaseResult {
    put(ctx, "o", "old").await?;
    let wrote = ok!(ctx
        .backend()
        .set(&ctx.key("o"), b("new"), SetOptions::default())
        .await);
    check!(wrote, "an overwriting set must return true");
    check!(
        value_of(ctx, "o").await? == Some(b("new")),
        "set must overwrite"
    );
    Ok(Outcome::Passed)
}

async fn set_without_ttl_clears_previous_ttl(ctx: &Ctx) -> CaseResult {
    ok!(ctx.backend().set(&ctx.key("t"), b("1"), ttl(60_000)).await);
    put(ctx, "t", "2").await?;
    let t = ok!(ctx.backend().ttl(&ctx.key("t")).await);
    check!(
        t == KeyTtl::Persistent,
        "a plain set must replace the TTL, got {t:?}"
    );
    // And a set with a TTL replaces the old one, whatever it was.
    ok!(ctx.backend().set(&ctx.key("u"), b("1"), ttl(60_000)).await);
    let since = Instant::now();
    ok!(ctx.backend().set(&ctx.key("u"), b("2"), ttl(30_000)).await);
    check_ttl_window(ctx, "u", ms(30_000), since).await?;
    Ok(Outcome::Passed)
}

async fn set_if_absent_does_not_overwrite(ctx: &Ctx) -> CaseResult {
    put(ctx, "nx", "first").await?;
    let wrote = ok!(ctx
        .backend()
        .set(&ctx.key("nx"), b("second"), nx(SetOptions::default()))
        .await);
    check!(!wrote, "IfAbsent on a present key must return false");
    check!(
        value_of(ctx, "nx").await? == Some(b("first")),
        "IfAbsent must not overwrite"
    );
    check!(
        ok!(ctx.backend().ttl(&ctx.key("nx")).await) == KeyTtl::Persistent,
        "a refused IfAbsent must not change the TTL"
    );
    Ok(Outcome::Passed)
}

async fn set_if_absent_on_missing_stores(ctx: &Ctx) -> CaseResult {
    let since = Instant::now();
    let wrote = ok!(ctx
        .backend()
        .set(&ctx.key("nx"), b("v"), nx(ttl(60_000)))
        .await);
    check!(wrote, "IfAbsent on a missing key must return true");
    check!(
        value_of(ctx, "nx").await? == Some(b("v")),
        "IfAbsent must store on a missing key"
    );
    check_ttl_window(ctx, "nx", ms(60_000), since).await?;
    Ok(Outcome::Passed)
}

async fn set_if_absent_after_expiry_stores(ctx: &Ctx) -> CaseResult {
    ok!(ctx.backend().set(&ctx.key("nx"), b("old"), ttl(100)).await);
    sleep_past_expiry(ctx, ms(100), Instant::now()).await;
    let wrote = ok!(ctx
        .backend()
        .set(&ctx.key("nx"), b("new"), nx(SetOptions::default()))
        .await);
    check!(wrote, "IfAbsent on an expired key must write");
    check!(
        value_of(ctx, "nx").await? == Some(b("new")),
        "IfAbsent after expiry must store"
    );
    check!(
        ok!(ctx.backend().ttl(&ctx.key("nx")).await) == KeyTtl::Persistent,
        "IfAbsent after expiry must store with the new TTL, not the old one"
    );
    Ok(Outcome::Passed)
}

async fn set_if_absent_race_has_one_winner(ctx: &Ctx) -> CaseResult {
    let key = ctx.key("race");
    let mut tasks = Vec::new();
    for i in 0..32 {
        let backend = ctx.backend_arc();
        let key = key.clone();
        tasks.push(tokio::spawn(async move {
            backend
                .set(&key, Bytes::from(format!("w{i}")), nx(ttl(60_000)))
                .await
                .map(|won| (won, i))
        }));
    }
    let mut winners = Vec::new();
    for t in tasks {
        let (won, i) = ok!(t.await.map_err(|e| e.to_string())?);
        if won {
            winners.push(i);
        }
    }
    check!(
        winners.len() == 1,
        "exactly one IfAbsent writer must win, got {winners:?}"
    );
    let expected = Bytes::from(format!("w{}", winners[0]));
    check!(
        value_of(ctx, "race").await? == Some(expected),
        "the stored value must be the winner's"
    );
    Ok(Outcome::Passed)
}

async fn set_zero_ttl_does_not_store(ctx: &Ctx) -> CaseResult {
    let wrote = ok!(ctx.backend().set(&ctx.key("z"), b("v"), ttl(0)).await);
    check!(!wrote, "a zero TTL must not store (set returns false)");
    check!(
        value_of(ctx, "z").await?.is_none(),
        "a zero-TTL value must not be readable"
    );
    let wrote = ok!(ctx.backend().set(&ctx.key("z"), b("v"), nx(ttl(0))).await);
    check!(
        !wrote && value_of(ctx, "z").await?.is_none(),
        "IfAbsent with zero TTL must not store"
    );
    Ok(Outcome::Passed)
}

async fn set_zero_ttl_removes_existing(ctx: &Ctx) -> CaseResult {
    put(ctx, "z", "old").await?;
    let wrote = ok!(ctx.backend().set(&ctx.key("z"), b("new"), ttl(0)).await);
    check!(
        !wrote,
        "a zero-TTL set must return false, also over a value"
    );
    check!(
        value_of(ctx, "z").await?.is_none(),
        "a zero TTL must remove the existing value"
    );
    Ok(Outcome::Passed)
}

async fn set_if_absent_zero_ttl_keeps_existing(ctx: &Ctx) -> CaseResult {
    put(ctx, "z", "old").await?;
    let wrote = ok!(ctx.backend().set(&ctx.key("z"), b("new"), nx(ttl(0))).await);
    check!(!wrote, "IfAbsent with a zero TTL must return false");
    check!(
        value_of(ctx, "z").await? == Some(b("old")),
        "IfAbsent with a zero TTL must leave a present value alone"
    );
    Ok(Outcome::Passed)
}

async fn concurrent_writers_leave_one_value(ctx: &Ctx) -> CaseResult {
    let key = ctx.key("cw");
    let values: Arc<Vec<Bytes>> = Arc::new(
        (0..16u8)
            .map(|i| Bytes::from(vec![i; 4096 + i as usize]))
            .collect(),
    );
    let writing = Arc::new(std::sync::atomic::AtomicBool::new(true));
    // A reader beside the writers: every read is a miss or one value, whole.
    let reader = {
        let (backend, key, values, writing) = (
            ctx.backend_arc(),
            key.clone(),
            Arc::clone(&values),
            Arc::clone(&writing),
        );
        tokio::spawn(async move {
            let mut torn = 0usize;
            while writing.load(std::sync::atomic::Ordering::Relaxed) {
                match backend.get(&key).await? {
                    Some(v) if !values.contains(&v) => torn += 1,
                    _ => {}
                }
                tokio::task::yield_now().await;
            }
            Ok::<_, cache_core::Error>(torn)
        })
    };
    let mut tasks = Vec::new();
    for v in values.iter() {
        let (backend, key, v) = (ctx.backend_arc(), key.clone(), v.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..20 {
                backend.set(&key, v.clone(), SetOptions::default()).await?;
                tokio::task::yield_now().await;
            }
            Ok::<_, cache_core::Error>(())
        }));
    }
    for t in tasks {
        ok!(t.await.map_err(|e| e.to_string())?);
    }
    writing.store(false, std::sync::atomic::Ordering::Relaxed);
    let torn = ok!(reader.await.map_err(|e| e.to_string())?);
    check!(
        torn == 0,
        "a read during concurrent writes must return one of the values written, whole; {torn} reads did not"
    );
    let got = value_of(ctx, "cw").await?;
    check!(
        got.as_ref().is_some_and(|g| values.contains(g)),
        "after concurrent writes the value must be one of those written, whole"
    );
    Ok(Outcome::Passed)
}

async fn set_many_then_get_many(ctx: &Ctx) -> CaseResult {
    let keys: Vec<String> = (0..50).map(|i| ctx.key(&format!("sm{i}"))).collect();
    let items: Vec<(&str, Bytes)> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| (k.as_str(), Bytes::from(format!("v{i}"))))
        .collect();
    ok!(ctx.backend().set_many(&items, None).await);
    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    let got = ok!(ctx.backend().get_many(&refs).await);
    let expected: Vec<Option<Bytes>> = items.iter().map(|(_, v)| Some(v.clone())).collect();
    check!(
        got == expected,
        "get_many must read back what set_many wrote"
    );
    check!(
        ok!(ctx.backend().ttl(&keys[0]).await) == KeyTtl::Persistent,
        "set_many with no TTL writes persistent keys"
    );
    ok!(ctx.backend().set_many(&[], None).await);
    Ok(Outcome::Passed)
}

async fn set_many_with_ttl_expires(ctx: &Ctx) -> CaseResult {
    let (k1, k2) = (ctx.key("st1"), ctx.key("st2"));
    let t = ms(200);
    let since = Instant::now();
    ok!(ctx
        .backend()
        .set_many(&[(&k1, b("1")), (&k2, b("2"))], Some(t))
        .await);
    let written = Instant::now();
    check_ttl_window(ctx, "st2", t, since).await?;
    check_present_before_expiry(ctx, "st1", t, since).await?;
    sleep_past_expiry(ctx, t, written).await;
    check!(
        ok!(ctx.backend().get_many(&[&k1, &k2]).await) == vec![None, None],
        "set_many values must expire with the given TTL"
    );
    Ok(Outcome::Passed)
}

async fn set_many_zero_ttl_does_not_store(ctx: &Ctx) -> CaseResult {
    put(ctx, "old", "v").await?;
    let (old, new) = (ctx.key("old"), ctx.key("new"));
    ok!(ctx
        .backend()
        .set_many(&[(&old, b("1")), (&new, b("2"))], Some(Duration::ZERO))
        .await);
    check!(
        present(ctx, &["new", "old"]).await?.is_empty(),
        "set_many with a zero TTL must store nothing and remove existing values"
    );
    Ok(Outcome::Passed)
}

async fn oversize_value_is_invalid(ctx: &Ctx) -> CaseResult {
    skip_unless!(ctx, Need::ValueLimitAtMost(16 << 20));
    let max = ctx.caps().max_value_size;
    // A value of exactly the limit is fine.
    let exact = Bytes::from(vec![5u8; max]);
    ok!(ctx
        .backend()
        .set(&ctx.key("exact"), exact, SetOptions::default())
        .await);
    let got = value_of(ctx, "exact").await?;
    check!(
        got.as_ref().map(Bytes::len) == Some(max),
        "a value of exactly max_value_size ({max}) must be stored whole, got {:?} bytes",
        got.as_ref().map(Bytes::len)
    );
    ok!(ctx.backend().delete(&ctx.key("exact")).await);
    // One byte more is not, and changes nothing.
    put(ctx, "big", "old").await?;
    let over = Bytes::from(vec![7u8; max + 1]);
    let err = ctx
        .backend()
        .set(&ctx.key("big"), over.clone(), SetOptions::default())
        .await;
    refused(
        "set of max_value_size + 1 bytes",
        err,
        ErrorKind::InvalidValue,
    )?;
    let big = ctx.key("big");
    let err = ctx.backend().set_many(&[(&big, over)], None).await;
    refused(
        "set_many of max_value_size + 1 bytes",
        err,
        ErrorKind::InvalidValue,
    )?;
    check!(
        value_of(ctx, "big").await? == Some(b("old")),
        "a refused write must leave the old value"
    );
    Ok(Outcome::Passed)
}

// ---------------------------------------------------------------- keys

/// Checks that every key-taking operation refuses `bad` with `InvalidKey`,
/// alone and beside a valid key.
async fn every_operation_refuses(ctx: &Ctx, bad: &str, what: &str) -> Result<(), String> {
    let be = ctx.backend();
    let good = ctx.key("good");
    let kind = ErrorKind::InvalidKey;
    let v = b("v");
    refused(&format!("get of {what}"), be.get(bad).await, kind)?;
    if let Some(answer) = be.get_now(bad) {
        refused(&format!("get_now of {what}"), answer, kind)?;
    }
    refused(
        &format!("set of {what}"),
        be.set(bad, v.clone(), SetOptions::default()).await,
        kind,
    )?;
    refused(&format!("delete of {what}"), be.delete(bad).await, kind)?;
    refused(&format!("exists of {what}"), be.exists(bad).await, kind)?;
    refused(&format!("ttl of {what}"), be.ttl(bad).await, kind)?;
    refused(
        &format!("expire of {what}"),
        be.expire(bad, Some(ms(60_000))).await,
        kind,
    )?;
    refused(
        &format!("incr of {what}"),
        be.incr(bad, 1, None).await,
        kind,
    )?;
    for (keys, which) in [(&[bad][..], "alone"), (&[&good, bad], "after a valid key")] {
        refused(
            &format!("get_many of {what} ({which})"),
            be.get_many(keys).await,
            kind,
        )?;
        refused(
            &format!("delete_many of {what} ({which})"),
            be.delete_many(keys).await,
            kind,
        )?;
        let items: Vec<(&str, Bytes)> = keys.iter().map(|k| (*k, v.clone())).collect();
        refused(
            &format!("set_many of {what} ({which})"),
            be.set_many(&items, None).await,
            kind,
        )?;
    }
    Ok(())
}

/// Checks that `scan` and `delete_matching` refuse `bad` with `InvalidKey`
/// (or `Unsupported` without `pattern_delete`).
async fn pattern_operations_refuse(ctx: &Ctx, bad: &str, what: &str) -> Result<(), String> {
    let be = ctx.backend();
    refused_pattern(ctx, &format!("scan of {what}"), be.scan(bad).await)?;
    refused_pattern(
        ctx,
        &format!("delete_matching of {what}"),
        be.delete_matching(bad).await,
    )?;
    Ok(())
}

async fn empty_key_is_invalid(ctx: &Ctx) -> CaseResult {
    every_operation_refuses(ctx, "", "an empty key").await?;
    Ok(Outcome::Passed)
}

async fn oversize_key_is_invalid(ctx: &Ctx) -> CaseResult {
    let max = ctx.caps().max_key_len;
    // One byte over the limit.
    let long = format!(
        "{}{}",
        ctx.ns(),
        "k".repeat((max + 1).saturating_sub(ctx.ns().len()))
    );
    every_operation_refuses(
        ctx,
        &long,
        &format!("a key of max_key_len + 1 ({}) bytes", long.len()),
    )
    .await?;
    let ten_kib = "x".repeat(10 * 1024);
    if max < ten_kib.len() {
        refused(
            "get of a 10 KiB key",
            ctx.backend().get(&ten_kib).await,
            ErrorKind::InvalidKey,
        )?;
    }
    Ok(Outcome::Passed)
}

async fn empty_pattern_is_invalid(ctx: &Ctx) -> CaseResult {
    pattern_operations_refuse(ctx, "", "an empty pattern").await?;
    Ok(Outcome::Passed)
}

async fn oversize_pattern_is_invalid(ctx: &Ctx) -> CaseResult {
    let caps = ctx.caps();
    // The longest pattern: a key of max_key_len bytes with every byte
    // escaped, and a `*`.
    let key = format!(
        "{}{}",
        ctx.ns(),
        "*".repeat(caps.max_key_len.saturating_sub(ctx.ns().len()))
    );
    let longest: String = key.chars().flat_map(|c| ['\\', c]).chain(['*']).collect();
    let too_long = format!("{longest}*");
    pattern_operations_refuse(
        ctx,
        &too_long,
        &format!(
            "a pattern of 2 * max_key_len + 2 ({}) bytes",
            too_long.len()
        ),
    )
    .await?;
    if caps.pattern_delete {
        ok!(ctx.backend().set(&key, b("v"), ttl(60_000)).await);
        let found = ok!(ctx.backend().scan(&longest).await);
        check!(
            found == vec![key.clone()],
            "a pattern of 2 * max_key_len + 1 bytes is valid: scan must find its key, got {} keys",
            found.len()
        );
        let n = ok!(ctx.backend().delete_matching(&longest).await);
        check!(
            n == 1,
            "a pattern of 2 * max_key_len + 1 bytes is valid: delete_matching must remove its key, removed {n}"
        );
    }
    Ok(Outcome::Passed)
}

// ---------------------------------------------------------------- expiry

async fn ttl_expires_value(ctx: &Ctx) -> CaseResult {
    let t = ms(200);
    let since = Instant::now();
    ok!(ctx
        .backend()
        .set(&ctx.key("e"), b("v"), SetOptions::ttl(Some(t)))
        .await);
    let written = Instant::now();
    check!(
        value_of(ctx, "e").await?.is_some(),
        "a value must be readable before its TTL"
    );
    check_present_before_expiry(ctx, "e", t, since).await?;
    // What is left shrinks with time: at most T minus the time slept.
    let slept = written.elapsed();
    if let KeyTtl::Expires(left) = ok!(ctx.backend().ttl(&ctx.key("e")).await) {
        let most = (t + granularity(&ctx.caps())).saturating_sub(slept);
        check!(
            left <= most,
            "{slept:?} after a write with a TTL of {t:?}, ttl must report at most {most:?}, got {left:?}"
        );
    }
    sleep_past_expiry(ctx, t, written).await;
    check!(
        value_of(ctx, "e").await?.is_none(),
        "a value must be gone after its TTL"
    );
    Ok(Outcome::Passed)
}

async fn exists_false_after_expiry(ctx: &Ctx) -> CaseResult {
    ok!(ctx.backend().set(&ctx.key("e"), b("v"), ttl(100)).await);
    sleep_past_expiry(ctx, ms(100), Instant::now()).await;
    check!(
        !ok!(ctx.backend().exists(&ctx.key("e")).await),
        "exists must be false after expiry"
    );
    check!(
        ok!(ctx.backend().ttl(&ctx.key("e")).await) == KeyTtl::Missing,
        "ttl must report Missing after expiry"
    );
    check!(
        !ok!(ctx.backend().delete(&ctx.key("e")).await),
        "delete after expiry must return false"
    );
    Ok(Outcome::Passed)
}

async fn expired_key_is_missing_everywhere(ctx: &Ctx) -> CaseResult {
    let pattern_delete = ctx.caps().pattern_delete;
    let expiring = ["get", "dm", "exp", "incr", "sc:a", "dp:a", "cl:a"];
    for k in expiring {
        ok!(ctx.backend().set(&ctx.key(k), b("7"), ttl(100)).await);
    }
    put(ctx, "live", "v").await?;
    put(ctx, "sc:live", "v").await?;
    sleep_past_expiry(ctx, ms(100), Instant::now()).await;
    let be = ctx.backend();
    let got = ok!(be.get_many(&[&ctx.key("get"), &ctx.key("live")]).await);
    check!(
        got == vec![None, Some(b("v"))],
        "get_many must read an expired key as None, got {got:?}"
    );
    let n = ok!(be.delete_many(&[&ctx.key("dm"), &ctx.key("nothing")]).await);
    check!(n == 0, "delete_many must not count an expired key, got {n}");
    check!(
        !ok!(be.expire(&ctx.key("exp"), Some(ms(60_000))).await),
        "expire on an expired key must return false"
    );
    check!(
        !ok!(be.exists(&ctx.key("exp")).await),
        "expire must not bring an expired key back"
    );
    let n = ok!(be.incr(&ctx.key("incr"), 5, None).await);
    check!(n == 5, "incr on an expired key must start from 0, got {n}");
    check!(
        ok!(be.ttl(&ctx.key("incr")).await) == KeyTtl::Persistent,
        "incr on an expired key creates a new key, without the old TTL"
    );
    if pattern_delete {
        let keys = ok!(be.scan(&format!("{}sc:*", glob_escape(ctx.ns()))).await);
        check!(
            keys == vec![ctx.key("sc:live")],
            "scan must not list an expired key, got {keys:?}"
        );
        let n = ok!(be
            .delete_matching(&format!("{}dp:*", glob_escape(ctx.ns())))
            .await);
        check!(
            n == 0,
            "delete_matching must not count an expired key, got {n}"
        );
        let n = ok!(be.clear(&ctx.key("cl:")).await);
        check!(n == 0, "clear must not count an expired key, got {n}");
    }
    Ok(Outcome::Passed)
}

async fn ttl_none_persists(ctx: &Ctx) -> CaseResult {
    put(ctx, "p", "v").await?;
    sleep_ms(150).await;
    check!(
        value_of(ctx, "p").await? == Some(b("v")),
        "a value without TTL must persist"
    );
    Ok(Outcome::Passed)
}

async fn sub_second_ttl_is_honoured(ctx: &Ctx) -> CaseResult {
    skip_unless!(ctx, Need::SubSecondTtl);
    let t = ms(300);
    let since = Instant::now();
    ok!(ctx
        .backend()
        .set(&ctx.key("s"), b("v"), SetOptions::ttl(Some(t)))
        .await);
    let written = Instant::now();
    check_ttl_window(ctx, "s", t, since).await?;
    sleep_past_expiry(ctx, t, written).await;
    check!(
        value_of(ctx, "s").await?.is_none(),
        "a 300 ms TTL must expire well before a second"
    );
    Ok(Outcome::Passed)
}

async fn ttl_of_missing_is_missing(ctx: &Ctx) -> CaseResult {
    let t = ok!(ctx.backend().ttl(&ctx.key("none")).await);
    check!(
        t == KeyTtl::Missing,
        "ttl of a missing key must be Missing, got {t:?}"
    );
    Ok(Outcome::Passed)
}

async fn ttl_of_persistent_is_persistent(ctx: &Ctx) -> CaseResult {
    put(ctx, "p", "v").await?;
    let t = ok!(ctx.backend().ttl(&ctx.key("p")).await);
    check!(
        t == KeyTtl::Persistent,
        "ttl of a key without TTL must be Persistent, got {t:?}"
    );
    Ok(Outcome::Passed)
}

async fn ttl_reports_remaining(ctx: &Ctx) -> CaseResult {
    let since = Instant::now();
    ok!(ctx.backend().set(&ctx.key("r"), b("v"), ttl(60_000)).await);
    check_ttl_window(ctx, "r", ms(60_000), since).await?;
    let since = Instant::now();
    ok!(ctx.backend().set(&ctx.key("r2"), b("v"), ttl(2_500)).await);
    check_ttl_window(ctx, "r2", ms(2_500), since).await?;
    Ok(Outcome::Passed)
}

async fn expire_sets_ttl(ctx: &Ctx) -> CaseResult {
    put(ctx, "x", "v").await?;
    let since = Instant::now();
    check!(
        ok!(ctx.backend().expire(&ctx.key("x"), Some(ms(60_000))).await),
        "expire on an existing key must return true"
    );
    check_ttl_window(ctx, "x", ms(60_000), since).await?;
    let t = ms(150);
    let since = Instant::now();
    ok!(ctx.backend().expire(&ctx.key("x"), Some(t)).await);
    let written = Instant::now();
    check_ttl_window(ctx, "x", t, since).await?;
    check!(
        value_of(ctx, "x").await? == Some(b("v")),
        "expire must not change the value"
    );
    sleep_past_expiry(ctx, t, written).await;
    check!(
        value_of(ctx, "x").await?.is_none(),
        "the key must expire after expire()"
    );
    Ok(Outcome::Passed)
}

async fn expire_missing_returns_false(ctx: &Ctx) -> CaseResult {
    for t in [Some(Duration::from_secs(5)), None, Some(Duration::ZERO)] {
        let r = ok!(ctx.backend().expire(&ctx.key("none"), t).await);
        check!(!r, "expire({t:?}) on a missing key must return false");
    }
    check!(
        !ok!(ctx.backend().exists(&ctx.key("none")).await),
        "expire must not create a key"
    );
    Ok(Outcome::Passed)
}

async fn expire_none_persists(ctx: &Ctx) -> CaseResult {
    let t = ms(200);
    ok!(ctx
        .backend()
        .set(&ctx.key("x"), b("v"), SetOptions::ttl(Some(t)))
        .await);
    let written = Instant::now();
    check!(
        ok!(ctx.backend().expire(&ctx.key("x"), None).await),
        "expire(None) on a live key returns true"
    );
    sleep_past_expiry(ctx, t, written).await;
    check!(
        value_of(ctx, "x").await? == Some(b("v")),
        "expire(None) must remove the TTL"
    );
    check!(
        ok!(ctx.backend().ttl(&ctx.key("x")).await) == KeyTtl::Persistent,
        "after expire(None) the key must be Persistent"
    );
    check!(
        ok!(ctx.backend().expire(&ctx.key("x"), None).await),
        "expire(None) on a key without TTL returns true: the key exists"
    );
    Ok(Outcome::Passed)
}

async fn expire_zero_deletes(ctx: &Ctx) -> CaseResult {
    put(ctx, "x", "v").await?;
    check!(
        ok!(ctx
            .backend()
            .expire(&ctx.key("x"), Some(Duration::ZERO))
            .await),
        "expire(0) on an existing key returns true"
    );
    check!(
        value_of(ctx, "x").await?.is_none(),
        "expire(0) must delete the key"
    );
    check!(
        !ok!(ctx.backend().exists(&ctx.key("x")).await),
        "expire(0) must delete the key"
    );
    Ok(Outcome::Passed)
}

// ---------------------------------------------------------------- other operations

async fn delete_existing_returns_true(ctx: &Ctx) -> CaseResult {
    put(ctx, "d", "v").await?;
    check!(
        ok!(ctx.backend().delete(&ctx.key("d")).await),
        "delete of an existing key must return true"
    );
    check!(
        value_of(ctx, "d").await?.is_none(),
        "a deleted key must read as None"
    );
    Ok(Outcome::Passed)
}

async fn delete_missing_returns_false(ctx: &Ctx) -> CaseResult {
    check!(
        !ok!(ctx.backend().delete(&ctx.key("none")).await),
        "delete of a missing key must return false"
    );
    Ok(Outcome::Passed)
}

async fn delete_many_counts_existing(ctx: &Ctx) -> CaseResult {
    put(ctx, "a", "1").await?;
    put(ctx, "b", "2").await?;
    put(ctx, "keep", "3").await?;
    let (a, b_, c) = (ctx.key("a"), ctx.key("b"), ctx.key("c"));
    let n = ok!(ctx.backend().delete_many(&[&a, &b_, &c, &a]).await);
    check!(
        n == 2,
        "delete_many must count the keys that existed (each once), got {n}"
    );
    check!(
        present(ctx, &["a", "b", "keep"]).await? == ["keep"],
        "delete_many must delete every key given, and only those"
    );
    check!(
        ok!(ctx.backend().delete_many(&[]).await) == 0,
        "delete_many of no keys is 0"
    );
    Ok(Outcome::Passed)
}

async fn exists_reflects_presence(ctx: &Ctx) -> CaseResult {
    check!(
        !ok!(ctx.backend().exists(&ctx.key("x")).await),
        "exists before set must be false"
    );
    put(ctx, "x", "v").await?;
    check!(
        ok!(ctx.backend().exists(&ctx.key("x")).await),
        "exists after set must be true"
    );
    ok!(ctx.backend().delete(&ctx.key("x")).await);
    check!(
        !ok!(ctx.backend().exists(&ctx.key("x")).await),
        "exists after delete must be false"
    );
    Ok(Outcome::Passed)
}

async fn incr_missing_creates_with_delta_and_ttl(ctx: &Ctx) -> CaseResult {
    let since = Instant::now();
    let n = ok!(ctx
        .backend()
        .incr(&ctx.key("c"), 5, Some(Duration::from_secs(60)))
        .await);
    check!(n == 5, "incr on a missing key must return delta, got {n}");
    check!(
        value_of(ctx, "c").await? == Some(b("5")),
        "counters are stored as ASCII decimal, got {:?}",
        value_of(ctx, "c").await?
    );
    check_ttl_window(ctx, "c", Duration::from_secs(60), since).await?;
    let n = ok!(ctx.backend().incr(&ctx.key("c2"), 1, None).await);
    check!(
        n == 1 && ok!(ctx.backend().ttl(&ctx.key("c2")).await) == KeyTtl::Persistent,
        "incr with no TTL creates a persistent counter"
    );
    Ok(Outcome::Passed)
}

async fn incr_existing_adds_and_keeps_ttl(ctx: &Ctx) -> CaseResult {
    let since = Instant::now();
    ok!(ctx.backend().set(&ctx.key("c"), b("10"), ttl(60_000)).await);
    let n = ok!(ctx.backend().incr(&ctx.key("c"), 3, Some(ms(100))).await);
    check!(n == 13, "incr must add to the stored integer, got {n}");
    check!(
        value_of(ctx, "c").await? == Some(b("13")),
        "incr must store the sum as ASCII decimal"
    );
    check_ttl_window(ctx, "c", ms(60_000), since).await?;
    put(ctx, "p", "1").await?;
    ok!(ctx.backend().incr(&ctx.key("p"), 1, Some(ms(100))).await);
    check!(
        ok!(ctx.backend().ttl(&ctx.key("p")).await) == KeyTtl::Persistent,
        "incr must keep a persistent key persistent"
    );
    Ok(Outcome::Passed)
}

async fn incr_negative_delta(ctx: &Ctx) -> CaseResult {
    ok!(ctx.backend().incr(&ctx.key("c"), 2, None).await);
    let n = ok!(ctx.backend().incr(&ctx.key("c"), -5, None).await);
    check!(n == -3, "incr with a negative delta must subtract, got {n}");
    check!(
        value_of(ctx, "c").await? == Some(b("-3")),
        "negative counters are stored as ASCII decimal"
    );
    Ok(Outcome::Passed)
}

async fn incr_non_integer_is_invalid_value(ctx: &Ctx) -> CaseResult {
    for (i, v) in [
        "abc",
        "1.5",
        "",
        " 1",
        "+1",
        "01",
        "-0",
        "1 ",
        "9223372036854775808",
    ]
    .iter()
    .enumerate()
    {
        let k = format!("nan{i}");
        put(ctx, &k, v).await?;
        let err = ctx.backend().incr(&ctx.key(&k), 1, None).await;
        refused(&format!("incr on {v:?}"), err, ErrorKind::InvalidValue)?;
        check!(
            value_of(ctx, &k).await? == Some(b(v)),
            "a failed incr must leave the value"
        );
    }
    Ok(Outcome::Passed)
}

async fn incr_overflow_is_invalid_value(ctx: &Ctx) -> CaseResult {
    for (k, start, delta) in [("max", i64::MAX, 1), ("min", i64::MIN, -1)] {
        put(ctx, k, &start.to_string()).await?;
        let err = ctx.backend().incr(&ctx.key(k), delta, None).await;
        refused(
            &format!("incr({delta}) on {start}"),
            err,
            ErrorKind::InvalidValue,
        )?;
        check!(
            value_of(ctx, k).await? == Some(b(&start.to_string())),
            "overflow must leave the value"
        );
    }
    Ok(Outcome::Passed)
}

async fn incr_concurrent_is_atomic(ctx: &Ctx) -> CaseResult {
    skip_unless!(ctx, Need::AtomicIncr);
    let key = ctx.key("ctr");
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let backend = ctx.backend_arc();
        let key = key.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..50 {
                backend.incr(&key, 1, Some(Duration::from_secs(60))).await?;
            }
            Ok::<_, cache_core::Error>(())
        }));
    }
    for t in tasks {
        ok!(t.await.map_err(|e| e.to_string())?);
    }
    check!(
        value_of(ctx, "ctr").await? == Some(b("800")),
        "16 x 50 concurrent incr must sum to 800"
    );
    Ok(Outcome::Passed)
}

// ---------------------------------------------------------------- patterns

async fn scan_lists_matching_keys(ctx: &Ctx) -> CaseResult {
    skip_unless!(ctx, Need::PatternDelete);
    for k in ["user:1", "user:2", "user:10:x", "users", "order:1"] {
        put(ctx, k, "v").await?;
    }
    let ns = glob_escape(ctx.ns());
    let mut keys = ok!(ctx.backend().scan(&format!("{ns}user:*")).await);
    keys.sort();
    let expected = ["user:1", "user:10:x", "user:2"].map(|k| ctx.key(k));
    check!(
        keys == expected,
        "scan must list every matching key once, got {keys:?}"
    );
    let none = ok!(ctx.backend().scan(&format!("{ns}nothing*")).await);
    check!(
        none.is_empty(),
        "scan of a pattern that matches nothing is empty"
    );
    Ok(Outcome::Passed)
}

async fn delete_matching_star(ctx: &Ctx) -> CaseResult {
    skip_unless!(ctx, Need::PatternDelete);
    for k in ["user:1", "user:2", "user:10:x", "users", "order:1"] {
        put(ctx, k, "v").await?;
    }
    let pattern = format!("{}user:*", glob_escape(ctx.ns()));
    let n = ok!(ctx.backend().delete_matching(&pattern).await);
    check!(n == 3, "user:* must remove 3 keys, removed {n}");
    let left = present(ctx, &["user:1", "user:2", "user:10:x", "users", "order:1"]).await?;
    check!(left == ["order:1", "users"], "user:* left {left:?}");
    Ok(Outcome::Passed)
}

async fn delete_matching_question_mark(ctx: &Ctx) -> CaseResult {
    skip_unless!(ctx, Need::PatternDelete);
    for k in ["a1", "a2", "a10", "b1", "a"] {
        put(ctx, k, "v").await?;
    }
    let n = ok!(ctx
        .backend()
        .delete_matching(&format!("{}a?", glob_escape(ctx.ns())))
        .await);
    check!(n == 2, "a? must remove 2 keys, removed {n}");
    check!(
        present(ctx, &["a1", "a2", "a10", "b1", "a"]).await? == ["a", "a10", "b1"],
        "a? must match exactly one character"
    );
    Ok(Outcome::Passed)
}

async fn delete_matching_character_classes(ctx: &Ctx) -> CaseResult {
    skip_unless!(ctx, Need::PatternDelete);
    let all = ["ka", "kb", "kc", "kd", "kx", "k-"];
    let ns = glob_escape(ctx.ns());
    for (pattern, expect_left) in [
        ("k[ab]", vec!["k-", "kc", "kd", "kx"]),
        ("k[^abx]", vec!["ka", "kb", "kx"]),
        ("k[b-d]", vec!["k-", "ka", "kx"]),
        ("k[d-b]", vec!["k-", "ka", "kx"]),
        (r"k[\-]", vec!["ka", "kb", "kc", "kd", "kx"]),
    ] {
        for k in all {
            put(ctx, k, "v").await?;
        }
        let n = ok!(ctx
            .backend()
            .delete_matching(&format!("{ns}{pattern}"))
            .await);
        let left = present(ctx, &all).await?;
        check!(
            left == expect_left,
            "{pattern} left {left:?}, expected {expect_left:?}"
        );
        let removed = (all.len() - expect_left.len()) as u64;
        check!(
            n == removed,
            "{pattern} must report {removed} removed, got {n}"
        );
    }
    Ok(Outcome::Passed)
}

async fn delete_matching_escaped_metacharacters(ctx: &Ctx) -> CaseResult {
    skip_unless!(ctx, Need::PatternDelete);
    let all = ["*", "a*b", "axb", "q?", "qz", "[x]", "x", r"\", "y]"];
    for k in all {
        put(ctx, k, "v").await?;
    }
    let ns = glob_escape(ctx.ns());
    for (pattern, removed) in [
        (r"a\*b", "a*b"),
        (r"q\?", "q?"),
        (r"\[x\]", "[x]"),
        (r"\*", "*"),
        (r"\\", r"\"),
        (r"y\]", "y]"),
    ] {
        let n = ok!(ctx
            .backend()
            .delete_matching(&format!("{ns}{pattern}"))
            .await);
        check!(
            n == 1,
            "{pattern} must remove exactly {removed:?}, removed {n}"
        );
        check!(
            !ok!(ctx.backend().exists(&ctx.key(removed)).await),
            "{pattern} must remove {removed:?}"
        );
    }
    check!(
        present(ctx, &all).await? == ["axb", "qz", "x"],
        "escaped patterns removed too much"
    );
    Ok(Outcome::Passed)
}

async fn delete_matching_leaves_other_namespaces(ctx: &Ctx) -> CaseResult {
    skip_unless!(ctx, Need::PatternDelete);
    let base = ctx.ns().trim_end_matches(':');
    // A sibling sharing the prefix, and the namespace in upper case
    // (matching is case-sensitive).
    let others = [format!("{base}-other:k"), ctx.ns().to_uppercase() + "k"];
    for other in &others {
        ok!(ctx.backend().set(other, b("keep"), ttl(60_000)).await);
    }
    put(ctx, "k", "v").await?;
    let n = ok!(ctx
        .backend()
        .delete_matching(&format!("{}*", glob_escape(ctx.ns())))
        .await);
    let mut kept = Vec::new();
    for other in &others {
        kept.push(ok!(ctx.backend().get(other).await));
        ok!(ctx.backend().delete(other).await);
    }
    check!(
        kept.iter().all(|v| *v == Some(b("keep"))),
        "delete_matching must not touch another namespace, kept {kept:?}"
    );
    check!(
        n == 1,
        "delete_matching must count the one key it removed, got {n}"
    );
    check!(
        value_of(ctx, "k").await?.is_none(),
        "delete_matching must remove the namespace's key"
    );
    Ok(Outcome::Passed)
}

async fn clear_removes_only_namespace(ctx: &Ctx) -> CaseResult {
    skip_unless!(ctx, Need::PatternDelete);
    // A sibling namespace that shares a prefix, and one with glob characters.
    let base = ctx.ns().trim_end_matches(':');
    let siblings = [
        format!("{base}x:k"),
        base.to_string(),
        format!("[{base}]:k"),
    ];
    for s in &siblings {
        ok!(ctx.backend().set(s, b("keep"), ttl(60_000)).await);
    }
    for i in 0..20 {
        put(ctx, &format!("k{i}"), "v").await?;
    }
    let n = ok!(ctx.backend().clear(&format!("{base}:")).await);
    let mut kept = Vec::new();
    for s in &siblings {
        kept.push(ok!(ctx.backend().get(s).await));
        ok!(ctx.backend().delete(s).await);
    }
    check!(
        n == 20,
        "clear must remove and count the 20 keys of the namespace, removed {n}"
    );
    check!(
        value_of(ctx, "k3").await?.is_none(),
        "clear must remove the namespace's keys"
    );
    check!(
        kept.iter().all(|v| *v == Some(b("keep"))),
        "clear must not touch other namespaces, kept {kept:?}"
    );
    Ok(Outcome::Passed)
}

async fn clear_namespace_is_literal(ctx: &Ctx) -> CaseResult {
    skip_unless!(ctx, Need::PatternDelete);
    // (namespace, keys written, keys clear must remove): each namespace
    // holds glob metacharacters that, unescaped, would match other keys.
    let rounds: [(&str, &[&str], &[&str]); 5] = [
        ("a*", &["a*:1", "a*", "ab:1", "a:1", "aXb"], &["a*", "a*:1"]),
        ("q?", &["q?x", "qz", "qzz"], &["q?x"]),
        ("[ab]", &["[ab]:1", "a:1", "b:1"], &["[ab]:1"]),
        (r"c\", &[r"c\:1", "c*", "c:1"], &[r"c\:1"]),
        ("d]", &["d]:1", "d:1", "d"], &["d]:1"]),
    ];
    for (namespace, keys, removed) in rounds {
        for k in keys {
            put(ctx, k, "v").await?;
        }
        let n = ok!(ctx.backend().clear(&ctx.key(namespace)).await);
        let left = present(ctx, keys).await?;
        let mut expected: Vec<&str> = keys
            .iter()
            .filter(|k| !removed.contains(k))
            .copied()
            .collect();
        expected.sort_unstable();
        check!(
            left == expected,
            "clear({namespace:?}) must remove exactly {removed:?} (the namespace is literal), left {left:?}"
        );
        check!(
            n == removed.len() as u64,
            "clear({namespace:?}) must count {} keys, got {n}",
            removed.len()
        );
        let full: Vec<String> = keys.iter().map(|k| ctx.key(k)).collect();
        let refs: Vec<&str> = full.iter().map(String::as_str).collect();
        ok!(ctx.backend().delete_many(&refs).await);
    }
    Ok(Outcome::Passed)
}

async fn clear_empty_namespace_is_invalid(ctx: &Ctx) -> CaseResult {
    put(ctx, "k", "v").await?;
    let err = ctx.backend().clear("").await;
    match &err {
        Err(e) if e.kind() == ErrorKind::InvalidKey => {}
        Err(e) if e.kind() == ErrorKind::Unsupported && !ctx.caps().pattern_delete => {}
        _ => {
            return Err(format!(
                "clear(\"\") must fail with InvalidKey, got {err:?}"
            ))
        }
    }
    check!(
        value_of(ctx, "k").await?.is_some(),
        "a refused clear must not remove anything"
    );
    Ok(Outcome::Passed)
}

async fn health_reports_healthy(ctx: &Ctx) -> CaseResult {
    let health = ok!(ctx.backend().health().await);
    check!(
        health.status == HealthStatus::Healthy,
        "a working backend must report Healthy, got {health:?}"
    );
    Ok(Outcome::Passed)
}

async fn name_is_not_empty(ctx: &Ctx) -> CaseResult {
    check!(!ctx.backend().name().is_empty(), "name must not be empty");
    Ok(Outcome::Passed)
}

async fn capabilities_are_consistent(ctx: &Ctx) -> CaseResult {
    let caps = ctx.caps();
    check!(
        caps.max_key_len >= 250,
        "max_key_len must allow ordinary keys, got {}",
        caps.max_key_len
    );
    check!(
        caps.max_value_size >= 1024,
        "max_value_size must allow ordinary values"
    );
    check!(
        ctx.caps() == caps,
        "capabilities must not change from call to call"
    );
    // A key of exactly max_key_len works on every operation.
    let exact = format!(
        "{}{}",
        ctx.ns(),
        "k".repeat(caps.max_key_len.saturating_sub(ctx.ns().len()))
    );
    let be = ctx.backend();
    ok!(be.set(&exact, b("1"), ttl(60_000)).await);
    check!(
        ok!(be.get(&exact).await) == Some(b("1")),
        "a key of max_key_len must work"
    );
    check!(
        ok!(be.exists(&exact).await),
        "exists of a key of max_key_len"
    );
    ok!(be.ttl(&exact).await);
    check!(
        ok!(be.expire(&exact, Some(ms(60_000))).await),
        "expire of a key of max_key_len"
    );
    check!(
        ok!(be.incr(&exact, 1, None).await) == 2,
        "incr of a key of max_key_len"
    );
    ok!(be.get_many(&[&exact]).await);
    ok!(be.set_many(&[(&exact, b("1"))], None).await);
    check!(
        ok!(be.delete(&exact).await),
        "delete of a key of max_key_len"
    );
    ok!(be.delete_many(&[&exact]).await);
    // Without pattern_delete the pattern operations say so.
    if !caps.pattern_delete {
        let pattern = format!("{}*", glob_escape(ctx.ns()));
        refused(
            "scan without pattern_delete",
            be.scan(&pattern).await,
            ErrorKind::Unsupported,
        )?;
        refused(
            "delete_matching without pattern_delete",
            be.delete_matching(&pattern).await,
            ErrorKind::Unsupported,
        )?;
        refused(
            "clear without pattern_delete",
            be.clear(ctx.ns()).await,
            ErrorKind::Unsupported,
        )?;
    }
    Ok(Outcome::Passed)
}

// ---------------------------------------------------------------- the list

/// Expands `$m! { $($args)* case, case, … }` with every case of the suite,
/// in suite order: the one list of cases, which the registry and
/// [`conformance_suite!`](crate::conformance_suite) both expand. A new
/// case is an `async fn` above and a name here (and a rule in
/// `CacheBackend`'s `# Behavior`).
#[doc(hidden)]
#[macro_export]
macro_rules! __for_each_case {
    ($($m:ident)::+ ! { $($args:tt)* }) => {
        $($m)::+! {
            $($args)*
            get_missing_returns_none,
            get_now_agrees_with_get,
            get_now_joined_agrees_with_get,
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
            set_if_absent_zero_ttl_keeps_existing,
            concurrent_writers_leave_one_value,
            set_many_then_get_many,
            set_many_with_ttl_expires,
            set_many_zero_ttl_does_not_store,
            oversize_value_is_invalid,
            empty_key_is_invalid,
            oversize_key_is_invalid,
            empty_pattern_is_invalid,
            oversize_pattern_is_invalid,
            ttl_expires_value,
            exists_false_after_expiry,
            expired_key_is_missing_everywhere,
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
            scan_lists_matching_keys,
            delete_matching_star,
            delete_matching_question_mark,
            delete_matching_character_classes,
            delete_matching_escaped_metacharacters,
            delete_matching_leaves_other_namespaces,
            clear_removes_only_namespace,
            clear_namespace_is_literal,
            clear_empty_namespace_is_invalid,
            health_reports_healthy,
            name_is_not_empty,
            capabilities_are_consistent,
        }
    };
}

macro_rules! registry {
    ($($case:ident),* $(,)?) => {
        /// Every case, by name, in suite order.
        const CASES: &[(&str, CaseFn)] = &[
            $((stringify!($case), |ctx| Box::pin($case(ctx)))),*
        ];
    };
}

crate::__for_each_case!(registry! {});

/// The names of every case, in suite order.
pub fn case_names() -> Vec<&'static str> {
    CASES.iter().map(|(name, _)| *name).collect()
}

/// Writes a line to the process's standard error directly, so that the test
/// harness's output capture (which takes `eprintln!`) does not hide it.
fn to_stderr(line: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

/// Runs one case on a fresh backend from `factory`, in a namespace of its
/// own, and cleans the namespace afterwards.
///
/// A skip is checked against the backend's capabilities (a skip they do not
/// justify is a failure) and printed as `SKIPPED <case>: <why>` on standard
/// error. The case runs in a task of its own, so a backend that panics fails
/// the case rather than the caller. Call it inside a tokio runtime.
///
/// # Errors
///
/// A message saying which rule was broken, or that the case is unknown.
pub async fn run_case<F, Fut>(name: &str, factory: F) -> CaseResult
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Arc<dyn CacheBackend>>,
{
    let Some(&(name, case)) = CASES.iter().find(|(n, _)| *n == name) else {
        return Err(format!("no conformance case named {name}"));
    };
    finish(name, spawn_case(name, case, factory().await, None)).await
}

type CaseTask = tokio::task::JoinHandle<(CaseResult, Capabilities)>;

/// Starts `case` on `backend` in a task, in a fresh namespace, cleaning the
/// namespace afterwards; `permit` is held until then.
fn spawn_case(
    name: &'static str,
    case: CaseFn,
    backend: Arc<dyn CacheBackend>,
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
) -> CaseTask {
    let ctx = Ctx {
        backend,
        ns: format!("ct{:08x}-{name}:", fastrand::u32(..)),
    };
    tokio::spawn(async move {
        let outcome = case(&ctx).await;
        let _ = ctx.backend.clear(&ctx.ns).await;
        drop(permit);
        (outcome, ctx.caps())
    })
}

/// The outcome of a case's task: a panic is a failure, a skip is checked
/// against the capabilities and printed.
async fn finish(name: &'static str, task: CaseTask) -> CaseResult {
    let (outcome, caps) = match task.await {
        Ok(done) => done,
        Err(e) if e.is_panic() => {
            let payload = e.into_panic();
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            return Err(format!("the case panicked: {message}"));
        }
        Err(e) => return Err(format!("the case did not finish: {e}")),
    };
    match outcome {
        Ok(Outcome::Skipped(need)) if need.is_met_by(&caps) => Err(format!(
            "the case skipped ({need}), but the backend declares that capability: {caps:?}"
        )),
        Ok(Outcome::Skipped(need)) => {
            to_stderr(&format!("SKIPPED {name}: {need}"));
            Ok(Outcome::Skipped(need))
        }
        other => other,
    }
}

/// Runs one case on a new multi-threaded runtime and panics if it fails;
/// what each test of [`conformance_suite!`](crate::conformance_suite) calls.
/// A skipped case passes, printing `SKIPPED <case>: <why>` on standard error.
///
/// # Panics
///
/// When the case fails (that is the test failing).
pub fn run_case_blocking<F, Fut>(name: &str, factory: F)
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Arc<dyn CacheBackend>>,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime for the conformance case");
    let started = Instant::now();
    if let Err(msg) = runtime.block_on(run_case(name, factory)) {
        panic!(
            "conformance case {name} failed after {:?}: {msg}",
            started.elapsed()
        );
    }
}

/// The result of [`run_all`]. `Display` lists the failures and skips, then
/// the summary line (`N passed, N failed, N skipped`).
#[derive(Debug, Default)]
pub struct Report {
    /// Cases that passed.
    pub passed: Vec<&'static str>,
    /// Cases skipped, with the capability they need.
    pub skipped: Vec<(&'static str, Need)>,
    /// Cases that failed, with the message.
    pub failed: Vec<(&'static str, String)>,
}

impl Report {
    /// `N passed, N failed, N skipped`.
    pub fn summary(&self) -> String {
        format!(
            "{} passed, {} failed, {} skipped",
            self.passed.len(),
            self.failed.len(),
            self.skipped.len()
        )
    }

    fn add(&mut self, name: &'static str, result: CaseResult) {
        match result {
            Ok(Outcome::Passed) => self.passed.push(name),
            Ok(Outcome::Skipped(need)) => self.skipped.push((name, need)),
            Err(message) => self.failed.push((name, message)),
        }
    }

    /// Whether the case called `name` failed.
    pub fn failed(&self, name: &str) -> bool {
        self.failed.iter().any(|(n, _)| *n == name)
    }

    /// Panics listing the failures, if any.
    ///
    /// # Panics
    ///
    /// When any case failed.
    pub fn assert_passed(&self) {
        assert!(self.failed.is_empty(), "conformance suite failed:\n{self}");
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (name, message) in &self.failed {
            writeln!(f, "FAILED {name}: {message}")?;
        }
        for (name, need) in &self.skipped {
            writeln!(f, "SKIPPED {name}: {need}")?;
        }
        f.write_str(&self.summary())
    }
}

/// Runs every case, one after the other, each on a fresh backend from
/// `factory`, for custom harnesses (the macro is the usual way). Call it
/// inside a tokio runtime.
pub async fn run_all<F, Fut>(factory: F) -> Report
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn CacheBackend>>,
{
    let mut report = Report::default();
    for &(name, case) in CASES {
        let result = finish(name, spawn_case(name, case, factory().await, None)).await;
        report.add(name, result);
    }
    report
}

/// [`run_all`] with up to `at_once` cases running at the same time (each
/// still on its own fresh backend and namespace): the same cases and the
/// same report, in suite order, in the time of the slowest few. For slow
/// backends and for the [mutant gallery](crate::mutants).
pub async fn run_all_concurrently<F, Fut>(factory: F, at_once: usize) -> Report
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn CacheBackend>>,
{
    let permits = Arc::new(tokio::sync::Semaphore::new(at_once.max(1)));
    let mut tasks = Vec::with_capacity(CASES.len());
    for &(name, case) in CASES {
        // The semaphore is never closed: `ok()` is always `Some`.
        let permit = Arc::clone(&permits).acquire_owned().await.ok();
        tasks.push((name, spawn_case(name, case, factory().await, permit)));
    }
    let mut report = Report::default();
    for (name, task) in tasks {
        report.add(name, finish(name, task).await);
    }
    report
}
