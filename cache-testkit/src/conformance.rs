//! The conformance suite: one case per rule of `CacheBackend`'s `# Behavior`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cache_core::{
    CacheBackend, Capabilities, ErrorKind, HealthStatus, KeyTtl, SetMode, SetOptions,
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

/// How a case ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The backend behaved as the rule says.
    Passed,
    /// The rule does not apply (a capability is absent); the reason says which.
    Skipped(String),
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

macro_rules! skip_unless {
    ($cond:expr, $why:literal) => {
        if !$cond {
            return Ok(Outcome::Skipped($why.to_string()));
        }
    };
}

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
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

// ---------------------------------------------------------------- reads

async fn get_missing_returns_none(ctx: &Ctx) -> CaseResult {
    check!(
        value_of(ctx, "nothing").await?.is_none(),
        "a missing key must read as None"
    );
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
    skip_unless!(
        ctx.caps().max_value_size >= 1 << 20,
        "max_value_size is below 1 MiB"
    );
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
    for (k, v) in [("ключ", "1"), ("鍵🔑", "2"), ("clé é", "3")] {
        put(ctx, k, v).await?;
    }
    for (k, v) in [("ключ", "1"), ("鍵🔑", "2"), ("clé é", "3")] {
        check!(
            value_of(ctx, k).await? == Some(b(v)),
            "unicode key {k:?} did not round-trip"
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
    put(ctx, "o", "new").await?;
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
    Ok(Outcome::Passed)
}

async fn set_if_absent_on_missing_stores(ctx: &Ctx) -> CaseResult {
    let wrote = ok!(ctx
        .backend()
        .set(&ctx.key("nx"), b("v"), nx(ttl(60_000)))
        .await);
    check!(wrote, "IfAbsent on a missing key must return true");
    check!(
        value_of(ctx, "nx").await? == Some(b("v")),
        "IfAbsent must store on a missing key"
    );
    Ok(Outcome::Passed)
}

async fn set_if_absent_after_expiry_stores(ctx: &Ctx) -> CaseResult {
    ok!(ctx.backend().set(&ctx.key("nx"), b("old"), ttl(100)).await);
    sleep_ms(250).await;
    let wrote = ok!(ctx
        .backend()
        .set(&ctx.key("nx"), b("new"), nx(SetOptions::default()))
        .await);
    check!(wrote, "IfAbsent on an expired key must write");
    check!(
        value_of(ctx, "nx").await? == Some(b("new")),
        "IfAbsent after expiry must store"
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
    ok!(ctx.backend().set(&ctx.key("z"), b("new"), ttl(0)).await);
    check!(
        value_of(ctx, "z").await?.is_none(),
        "a zero TTL must remove the existing value"
    );
    Ok(Outcome::Passed)
}

async fn concurrent_writers_leave_one_value(ctx: &Ctx) -> CaseResult {
    let key = ctx.key("cw");
    let values: Vec<Bytes> = (0..16u8)
        .map(|i| Bytes::from(vec![i; 4096 + i as usize]))
        .collect();
    let mut tasks = Vec::new();
    for v in values.clone() {
        let backend = ctx.backend_arc();
        let key = key.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..20 {
                backend.set(&key, v.clone(), SetOptions::default()).await?;
            }
            Ok::<_, cache_core::Error>(())
        }));
    }
    for t in tasks {
        ok!(t.await.map_err(|e| e.to_string())?);
    }
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
    ok!(ctx.backend().set_many(&[], None).await);
    Ok(Outcome::Passed)
}

async fn set_many_with_ttl_expires(ctx: &Ctx) -> CaseResult {
    let (k1, k2) = (ctx.key("st1"), ctx.key("st2"));
    ok!(ctx
        .backend()
        .set_many(
            &[(&k1, b("1")), (&k2, b("2"))],
            Some(Duration::from_millis(150))
        )
        .await);
    check!(
        value_of(ctx, "st1").await?.is_some(),
        "set_many values must be readable before expiry"
    );
    sleep_ms(300).await;
    check!(
        ok!(ctx.backend().get_many(&[&k1, &k2]).await) == vec![None, None],
        "set_many values must expire with the given TTL"
    );
    Ok(Outcome::Passed)
}

async fn oversize_value_is_invalid(ctx: &Ctx) -> CaseResult {
    let max = ctx.caps().max_value_size;
    skip_unless!(
        max <= 16 << 20,
        "max_value_size is above 16 MiB (too big to send in a test)"
    );
    put(ctx, "big", "old").await?;
    let value = Bytes::from(vec![7u8; max + 1]);
    let err = ctx
        .backend()
        .set(&ctx.key("big"), value, SetOptions::default())
        .await;
    check!(
        matches!(&err, Err(e) if e.kind() == ErrorKind::InvalidValue),
        "a value over max_value_size must fail with InvalidValue, got {err:?}"
    );
    check!(
        value_of(ctx, "big").await? == Some(b("old")),
        "a refused write must leave the old value"
    );
    Ok(Outcome::Passed)
}

// ---------------------------------------------------------------- keys

async fn empty_key_is_invalid(ctx: &Ctx) -> CaseResult {
    let be = ctx.backend();
    let results = [
        be.get("").await.err(),
        be.set("", b("v"), SetOptions::default()).await.err(),
        be.delete("").await.err(),
        be.exists("").await.err(),
        be.ttl("").await.err(),
        be.incr("", 1, None).await.err(),
        be.get_many(&[""]).await.err(),
    ];
    for (i, err) in results.iter().enumerate() {
        check!(
            err.as_ref()
                .is_some_and(|e| e.kind() == ErrorKind::InvalidKey),
            "operation #{i} on an empty key must fail with InvalidKey, got {err:?}"
        );
    }
    Ok(Outcome::Passed)
}

async fn oversize_key_is_invalid(ctx: &Ctx) -> CaseResult {
    let long = ctx.key(&"k".repeat(ctx.caps().max_key_len));
    let be = ctx.backend();
    let results = [
        be.get(&long).await.err(),
        be.set(&long, b("v"), SetOptions::default()).await.err(),
        be.delete(&long).await.err(),
        be.incr(&long, 1, None).await.err(),
    ];
    for (i, err) in results.iter().enumerate() {
        check!(
            err.as_ref()
                .is_some_and(|e| e.kind() == ErrorKind::InvalidKey),
            "operation #{i} on a key over max_key_len must fail with InvalidKey, got {err:?}"
        );
    }
    let ten_kib = "x".repeat(10 * 1024);
    check!(
        be.get(&ten_kib)
            .await
            .is_err_and(|e| e.kind() == ErrorKind::InvalidKey),
        "a 10 KiB key must fail with InvalidKey"
    );
    Ok(Outcome::Passed)
}

// ---------------------------------------------------------------- expiry

async fn ttl_expires_value(ctx: &Ctx) -> CaseResult {
    ok!(ctx.backend().set(&ctx.key("e"), b("v"), ttl(100)).await);
    check!(
        value_of(ctx, "e").await?.is_some(),
        "a value must be readable before its TTL"
    );
    sleep_ms(250).await;
    check!(
        value_of(ctx, "e").await?.is_none(),
        "a value must be gone after its TTL"
    );
    Ok(Outcome::Passed)
}

async fn exists_false_after_expiry(ctx: &Ctx) -> CaseResult {
    ok!(ctx.backend().set(&ctx.key("e"), b("v"), ttl(100)).await);
    sleep_ms(250).await;
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
    skip_unless!(
        ctx.caps().sub_second_ttl,
        "the backend rounds TTLs to seconds"
    );
    ok!(ctx.backend().set(&ctx.key("s"), b("v"), ttl(300)).await);
    match ok!(ctx.backend().ttl(&ctx.key("s")).await) {
        KeyTtl::Expires(d) => check!(
            d <= Duration::from_millis(300) && d > Duration::from_millis(100),
            "a 300 ms TTL must be reported in milliseconds, got {d:?}"
        ),
        other => return Err(format!("expected Expires, got {other:?}")),
    }
    sleep_ms(450).await;
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
    ok!(ctx.backend().set(&ctx.key("r"), b("v"), ttl(60_000)).await);
    match ok!(ctx.backend().ttl(&ctx.key("r")).await) {
        KeyTtl::Expires(d) => check!(
            d <= Duration::from_secs(60) && d > Duration::from_secs(50),
            "remaining TTL must be close to 60 s, got {d:?}"
        ),
        other => return Err(format!("expected Expires, got {other:?}")),
    }
    Ok(Outcome::Passed)
}

async fn expire_sets_ttl(ctx: &Ctx) -> CaseResult {
    put(ctx, "x", "v").await?;
    check!(
        ok!(ctx
            .backend()
            .expire(&ctx.key("x"), Some(Duration::from_millis(100)))
            .await),
        "expire on an existing key must return true"
    );
    check!(
        matches!(
            ok!(ctx.backend().ttl(&ctx.key("x")).await),
            KeyTtl::Expires(_)
        ),
        "expire must give the key a TTL"
    );
    sleep_ms(250).await;
    check!(
        value_of(ctx, "x").await?.is_none(),
        "the key must expire after expire()"
    );
    Ok(Outcome::Passed)
}

async fn expire_missing_returns_false(ctx: &Ctx) -> CaseResult {
    let r = ok!(ctx
        .backend()
        .expire(&ctx.key("none"), Some(Duration::from_secs(5)))
        .await);
    check!(!r, "expire on a missing key must return false");
    check!(
        !ok!(ctx.backend().exists(&ctx.key("none")).await),
        "expire must not create a key"
    );
    Ok(Outcome::Passed)
}

async fn expire_none_persists(ctx: &Ctx) -> CaseResult {
    ok!(ctx.backend().set(&ctx.key("x"), b("v"), ttl(200)).await);
    check!(
        ok!(ctx.backend().expire(&ctx.key("x"), None).await),
        "expire(None) on a live key returns true"
    );
    sleep_ms(350).await;
    check!(
        value_of(ctx, "x").await? == Some(b("v")),
        "expire(None) must remove the TTL"
    );
    check!(
        ok!(ctx.backend().ttl(&ctx.key("x")).await) == KeyTtl::Persistent,
        "after expire(None) the key must be Persistent"
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
    let (a, b_, c) = (ctx.key("a"), ctx.key("b"), ctx.key("c"));
    let n = ok!(ctx.backend().delete_many(&[&a, &b_, &c]).await);
    check!(
        n == 2,
        "delete_many must count the keys that existed, got {n}"
    );
    check!(
        present(ctx, &["a", "b"]).await?.is_empty(),
        "delete_many must delete every key"
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
    Ok(Outcome::Passed)
}

async fn incr_missing_creates_with_delta_and_ttl(ctx: &Ctx) -> CaseResult {
    skip_unless!(ctx.caps().atomic_incr, "incr is not atomic on this backend");
    let n = ok!(ctx
        .backend()
        .incr(&ctx.key("c"), 5, Some(Duration::from_secs(60)))
        .await);
    check!(n == 5, "incr on a missing key must return delta, got {n}");
    check!(
        value_of(ctx, "c").await? == Some(b("5")),
        "counters are stored as ASCII decimal"
    );
    check!(
        matches!(
            ok!(ctx.backend().ttl(&ctx.key("c")).await),
            KeyTtl::Expires(_)
        ),
        "incr must create the key with the TTL"
    );
    let n = ok!(ctx.backend().incr(&ctx.key("c2"), 1, None).await);
    check!(
        n == 1 && ok!(ctx.backend().ttl(&ctx.key("c2")).await) == KeyTtl::Persistent,
        "incr with no TTL creates a persistent counter"
    );
    Ok(Outcome::Passed)
}

async fn incr_existing_adds_and_keeps_ttl(ctx: &Ctx) -> CaseResult {
    skip_unless!(ctx.caps().atomic_incr, "incr is not atomic on this backend");
    ok!(ctx.backend().set(&ctx.key("c"), b("10"), ttl(60_000)).await);
    let n = ok!(ctx
        .backend()
        .incr(&ctx.key("c"), 3, Some(Duration::from_millis(100)))
        .await);
    check!(n == 13, "incr must add to the stored integer, got {n}");
    match ok!(ctx.backend().ttl(&ctx.key("c")).await) {
        KeyTtl::Expires(d) => check!(
            d > Duration::from_secs(30),
            "incr must keep the existing TTL, got {d:?}"
        ),
        other => return Err(format!("incr must keep the existing TTL, got {other:?}")),
    }
    Ok(Outcome::Passed)
}

async fn incr_negative_delta(ctx: &Ctx) -> CaseResult {
    skip_unless!(ctx.caps().atomic_incr, "incr is not atomic on this backend");
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
    skip_unless!(ctx.caps().atomic_incr, "incr is not atomic on this backend");
    for (i, v) in ["abc", "1.5", "", " 1", "+1", "01", "-0"]
        .iter()
        .enumerate()
    {
        let k = format!("nan{i}");
        put(ctx, &k, v).await?;
        let err = ctx.backend().incr(&ctx.key(&k), 1, None).await;
        check!(
            matches!(&err, Err(e) if e.kind() == ErrorKind::InvalidValue),
            "incr on {v:?} must fail with InvalidValue, got {err:?}"
        );
        check!(
            value_of(ctx, &k).await? == Some(b(v)),
            "a failed incr must leave the value"
        );
    }
    Ok(Outcome::Passed)
}

async fn incr_overflow_is_invalid_value(ctx: &Ctx) -> CaseResult {
    skip_unless!(ctx.caps().atomic_incr, "incr is not atomic on this backend");
    put(ctx, "max", &i64::MAX.to_string()).await?;
    let err = ctx.backend().incr(&ctx.key("max"), 1, None).await;
    check!(
        matches!(&err, Err(e) if e.kind() == ErrorKind::InvalidValue),
        "overflowing incr must fail with InvalidValue, got {err:?}"
    );
    check!(
        value_of(ctx, "max").await? == Some(b(&i64::MAX.to_string())),
        "overflow must leave the value"
    );
    Ok(Outcome::Passed)
}

async fn incr_concurrent_is_atomic(ctx: &Ctx) -> CaseResult {
    skip_unless!(ctx.caps().atomic_incr, "incr is not atomic on this backend");
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

async fn delete_matching_star(ctx: &Ctx) -> CaseResult {
    skip_unless!(ctx.caps().pattern_delete, "no pattern delete");
    for k in ["user:1", "user:2", "user:10:x", "users", "order:1"] {
        put(ctx, k, "v").await?;
    }
    let pattern = format!("{}user:*", cache_core::glob_escape(ctx.ns()));
    let n = ok!(ctx.backend().delete_matching(&pattern).await);
    check!(n == 3, "user:* must remove 3 keys, removed {n}");
    let left = present(ctx, &["user:1", "user:2", "user:10:x", "users", "order:1"]).await?;
    check!(left == ["order:1", "users"], "user:* left {left:?}");
    Ok(Outcome::Passed)
}

async fn delete_matching_question_mark(ctx: &Ctx) -> CaseResult {
    skip_unless!(ctx.caps().pattern_delete, "no pattern delete");
    for k in ["a1", "a2", "a10", "b1"] {
        put(ctx, k, "v").await?;
    }
    let n = ok!(ctx
        .backend()
        .delete_matching(&format!("{}a?", cache_core::glob_escape(ctx.ns())))
        .await);
    check!(n == 2, "a? must remove 2 keys, removed {n}");
    check!(
        present(ctx, &["a1", "a2", "a10", "b1"]).await? == ["a10", "b1"],
        "a? must match one character only"
    );
    Ok(Outcome::Passed)
}

async fn delete_matching_character_classes(ctx: &Ctx) -> CaseResult {
    skip_unless!(ctx.caps().pattern_delete, "no pattern delete");
    let all = ["ka", "kb", "kc", "kd", "kx", "k-"];
    let ns = cache_core::glob_escape(ctx.ns());
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
        ok!(ctx
            .backend()
            .delete_matching(&format!("{ns}{pattern}"))
            .await);
        let left = present(ctx, &all).await?;
        check!(
            left == expect_left,
            "{pattern} left {left:?}, expected {expect_left:?}"
        );
    }
    Ok(Outcome::Passed)
}

async fn delete_matching_escaped_metacharacters(ctx: &Ctx) -> CaseResult {
    skip_unless!(ctx.caps().pattern_delete, "no pattern delete");
    let all = ["*", "a*b", "axb", "q?", "qz", "[x]", "x", r"\"];
    for k in all {
        put(ctx, k, "v").await?;
    }
    let ns = cache_core::glob_escape(ctx.ns());
    for (pattern, removed) in [
        (r"a\*b", "a*b"),
        (r"q\?", "q?"),
        (r"\[x\]", "[x]"),
        (r"\*", "*"),
        (r"\\", r"\"),
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
    skip_unless!(ctx.caps().pattern_delete, "no pattern delete");
    let other = format!("{}-other:k", ctx.ns().trim_end_matches(':'));
    ok!(ctx.backend().set(&other, b("keep"), ttl(60_000)).await);
    put(ctx, "k", "v").await?;
    ok!(ctx
        .backend()
        .delete_matching(&format!("{}*", cache_core::glob_escape(ctx.ns())))
        .await);
    let kept = ok!(ctx.backend().get(&other).await);
    ok!(ctx.backend().delete(&other).await);
    check!(
        kept == Some(b("keep")),
        "delete_matching must not touch another namespace"
    );
    check!(
        value_of(ctx, "k").await?.is_none(),
        "delete_matching must remove the namespace's key"
    );
    Ok(Outcome::Passed)
}

async fn clear_removes_only_namespace(ctx: &Ctx) -> CaseResult {
    skip_unless!(ctx.caps().pattern_delete, "no pattern delete");
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
        n >= 20,
        "clear must remove every key of the namespace, removed {n}"
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

async fn clear_empty_namespace_is_invalid(ctx: &Ctx) -> CaseResult {
    put(ctx, "k", "v").await?;
    let err = ctx.backend().clear("").await;
    check!(
        matches!(&err, Err(e) if e.kind() == ErrorKind::InvalidKey),
        "clear(\"\") must fail with InvalidKey, got {err:?}"
    );
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
    // A key of exactly max_key_len works.
    let exact = format!(
        "{}{}",
        ctx.ns(),
        "k".repeat(caps.max_key_len - ctx.ns().len())
    );
    ok!(ctx.backend().set(&exact, b("v"), ttl(60_000)).await);
    check!(
        ok!(ctx.backend().get(&exact).await) == Some(b("v")),
        "a key of max_key_len must work"
    );
    ok!(ctx.backend().delete(&exact).await);
    Ok(Outcome::Passed)
}

macro_rules! registry {
    ($($case:ident),* $(,)?) => {
        /// Every case, by name, in suite order.
        pub(crate) const CASES: &[(&str, CaseFn)] = &[
            $((stringify!($case), |ctx| Box::pin($case(ctx)))),*
        ];
    };
}

registry![
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
];

/// The names of every case, in suite order.
pub fn case_names() -> Vec<&'static str> {
    CASES.iter().map(|(name, _)| *name).collect()
}

/// Runs one case on a fresh backend from `factory`, in a namespace of its
/// own, and cleans the namespace afterwards.
///
/// # Errors
///
/// A message saying which rule was broken, or that the case is unknown.
pub async fn run_case<F, Fut>(name: &str, factory: F) -> CaseResult
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Arc<dyn CacheBackend>>,
{
    let Some((_, case)) = CASES.iter().find(|(n, _)| *n == name) else {
        return Err(format!("no conformance case named {name}"));
    };
    let ctx = Ctx {
        backend: factory().await,
        ns: format!("ct{:08x}-{name}:", fastrand::u32(..)),
    };
    let outcome = case(&ctx).await;
    let _ = ctx.backend.clear(&ctx.ns).await;
    outcome
}

/// Runs one case on a new multi-threaded runtime and panics if it fails;
/// what each test of [`conformance_suite!`](crate::conformance_suite) calls.
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
    match runtime.block_on(run_case(name, factory)) {
        Ok(Outcome::Passed) => {}
        Ok(Outcome::Skipped(why)) => println!("SKIPPED {name}: {why}"),
        Err(msg) => panic!(
            "conformance case {name} failed after {:?}: {msg}",
            started.elapsed()
        ),
    }
}

/// The result of [`run_all`].
#[derive(Debug, Default)]
pub struct Report {
    /// Cases that passed.
    pub passed: Vec<&'static str>,
    /// Cases skipped, with the reason.
    pub skipped: Vec<(&'static str, String)>,
    /// Cases that failed, with the message.
    pub failed: Vec<(&'static str, String)>,
}

impl Report {
    /// Panics listing the failures, if any.
    ///
    /// # Panics
    ///
    /// When any case failed.
    pub fn assert_passed(&self) {
        assert!(
            self.failed.is_empty(),
            "{} conformance case(s) failed:\n{}",
            self.failed.len(),
            self.failed
                .iter()
                .map(|(n, m)| format!("  {n}: {m}"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

/// Runs every case, each on a fresh backend from `factory`, for custom
/// harnesses (the macro is the usual way).
pub async fn run_all<F, Fut>(factory: F) -> Report
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn CacheBackend>>,
{
    let mut report = Report::default();
    for (name, _) in CASES {
        match run_case(name, &factory).await {
            Ok(Outcome::Passed) => report.passed.push(name),
            Ok(Outcome::Skipped(why)) => report.skipped.push((name, why)),
            Err(msg) => report.failed.push((name, msg)),
        }
    }
    report
}
