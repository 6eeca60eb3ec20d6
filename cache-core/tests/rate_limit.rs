//! `RateLimiter` on the memory backend: exact admission under concurrency,
//! exact retry-after, a sliding window, namespacing and backend failures.
//!
//! Most tests step a manual clock, so they are exact and do not sleep; the
//! counters still live in a real backend. One test runs on the real clock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cache_core::{
    Cache, CacheBackend, CacheKey, ErrorKind, OnBackendError, RateLimiter, RateLimiterBuilder, Rule,
};
use cache_memory::MemoryBackend;
use cache_testkit::{FaultConfig, FaultInjecting};

/// A clock the test moves by hand, in Unix milliseconds.
#[derive(Clone)]
struct ManualClock(Arc<AtomicU64>);

impl ManualClock {
    /// Starts at a whole multiple of an hour plus `offset_ms`, so bucket
    /// boundaries fall at known times.
    fn at(offset_ms: u64) -> Self {
        let hour = 3_600_000;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        ManualClock(Arc::new(AtomicU64::new(now / hour * hour + offset_ms)))
    }

    fn ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }

    fn set(&self, ms: u64) {
        self.0.store(ms, Ordering::SeqCst);
    }

    fn advance(&self, d: Duration) {
        self.0.fetch_add(d.as_millis() as u64, Ordering::SeqCst);
    }

    fn install(&self, builder: RateLimiterBuilder) -> RateLimiterBuilder {
        let clock = self.clone();
        builder.clock(move || UNIX_EPOCH + Duration::from_millis(clock.ms()))
    }
}

fn memory() -> Arc<dyn CacheBackend> {
    Arc::new(MemoryBackend::new())
}

fn unique(name: &str) -> String {
    format!("{name}-{}", fastrand::u64(..))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rate_limit_admits_exactly_limit_of_many_concurrent_requests() {
    // A clock that stands still mid-bucket: the test is about atomicity,
    // not about a bucket boundary falling inside a round.
    let clock = ManualClock::at(1000);
    let limiter = clock
        .install(RateLimiter::builder(memory()))
        .rule("api", Rule::per_hour(50))
        .build()
        .unwrap();
    for round in 0..5 {
        let id = unique("user");
        let mut tasks = Vec::new();
        for _ in 0..400 {
            let (limiter, id) = (limiter.clone(), id.clone());
            tasks.push(tokio::spawn(async move { limiter.check("api", &id).await }));
        }
        let mut allowed = 0;
        let mut remaining_seen = Vec::new();
        for task in tasks {
            let decision = task.await.unwrap().unwrap();
            assert!(!decision.degraded);
            if decision.allowed {
                allowed += 1;
                remaining_seen.push(decision.remaining);
            } else {
                assert_eq!(decision.remaining, 0);
                assert!(decision.retry_after.is_some());
            }
        }
        assert_eq!(allowed, 50, "round {round}");
        // Every allowed request saw its own count: remaining 49..=0 once each.
        remaining_seen.sort_unstable();
        assert_eq!(
            remaining_seen,
            (0..50).collect::<Vec<u64>>(),
            "round {round}"
        );
        // Denied attempts were not counted: the window holds exactly 50.
        let next = limiter.check("api", &id).await.unwrap();
        assert!(!next.allowed);
    }
    let stats = limiter.stats();
    assert_eq!(stats.allowed, 250);
    assert_eq!(stats.denied, 5 * 351);
    assert_eq!(stats.backend_errors, 0);
}

#[tokio::test]
async fn rate_limit_retry_after_is_exact() {
    // 5 per 10 s in 10 buckets of 1 s.
    let clock = ManualClock::at(300);
    let t0 = clock.ms();
    let limiter = clock
        .install(RateLimiter::builder(memory()))
        .rule("login", Rule::new(5, Duration::from_secs(10)))
        .build()
        .unwrap();
    for _ in 0..2 {
        assert!(limiter.check("login", "ada").await.unwrap().allowed);
    }
    clock.advance(Duration::from_secs(2));
    for expected_remaining in [2, 1, 0] {
        let decision = limiter.check("login", "ada").await.unwrap();
        assert!(decision.allowed);
        assert_eq!(decision.remaining, expected_remaining);
    }
    clock.advance(Duration::from_secs(2)); // t0 + 4 s
    let denied = limiter.check("login", "ada").await.unwrap();
    assert!(!denied.allowed);
    assert_eq!(denied.remaining, 0);
    assert_eq!(denied.limit, 5);
    // The two oldest requests (bucket of t0, which starts at t0 - 300 ms)
    // leave the window when it lies entirely before now - 10 s: at
    // t0 - 300 ms + 11 s. Now is t0 + 4 s.
    let retry = denied.retry_after.unwrap();
    assert_eq!(retry, Duration::from_millis(11_000 - 300 - 4000));
    // Everything counted now is gone when the t0 + 2 s bucket has left.
    assert_eq!(
        denied.reset_after,
        Duration::from_millis(13_000 - 300 - 4000)
    );
    assert_eq!(
        denied.reset_at(),
        UNIX_EPOCH + Duration::from_millis(t0 - 300 + 13_000)
    );

    // A millisecond early: still denied, and the answer counts down.
    clock.advance(retry - Duration::from_millis(1));
    let early = limiter.check("login", "ada").await.unwrap();
    assert!(!early.allowed);
    assert_eq!(early.retry_after, Some(Duration::from_millis(1)));
    // On time: allowed, with room for one more (3 + this one are counted).
    clock.advance(Duration::from_millis(1));
    let on_time = limiter.check("login", "ada").await.unwrap();
    assert!(on_time.allowed, "{on_time:?}");
    assert_eq!(on_time.remaining, 1);
}

#[tokio::test]
async fn rate_limit_window_slides_bucket_by_bucket() {
    // 3 per 3 s in 3 buckets: capacity comes back one request at a time,
    // as each old request leaves the window, not all at once as with a
    // fixed window.
    let clock = ManualClock::at(0);
    let start = clock.ms();
    let at = |ms: u64| clock.set(start + ms);
    let limiter = clock
        .install(RateLimiter::builder(memory()))
        .rule("r", Rule::new(3, Duration::from_secs(3)).with_buckets(3))
        .build()
        .unwrap();
    let check = || async { limiter.check("r", "id").await.unwrap() };

    for ms in [500, 1500, 2500] {
        at(ms);
        assert!(check().await.allowed, "at {ms}");
    }
    at(2900);
    assert!(!check().await.allowed);
    at(3500); // the 500 ms request is 3 s old, its bucket still overlaps
    let denied = check().await;
    assert!(!denied.allowed);
    assert_eq!(denied.retry_after, Some(Duration::from_millis(500)));
    at(4000); // the bucket [0, 1 s) has left the window: one slot back
    let back = check().await;
    assert!(back.allowed);
    assert_eq!(back.remaining, 0);
    at(4999);
    assert!(!check().await.allowed);
    at(5000); // the 1500 ms request's bucket leaves: one more slot
    assert!(check().await.allowed);
    assert!(!check().await.allowed);
    at(9000); // everything has left
    let fresh = check().await;
    assert!(fresh.allowed);
    assert_eq!(fresh.remaining, 2);
}

#[tokio::test]
async fn rate_limit_never_exceeds_limit_in_any_window() {
    // Random traffic on a manual clock; then check every interval of the
    // window's length against the log of admitted requests.
    let clock = ManualClock::at(0);
    let window = 10_000;
    let limiter = clock
        .install(RateLimiter::builder(memory()))
        .rule("r", Rule::new(20, Duration::from_millis(window)))
        .build()
        .unwrap();
    let mut rng = fastrand::Rng::with_seed(7);
    let mut admitted = Vec::new();
    let mut denied = 0;
    for _ in 0..3000 {
        clock.advance(Duration::from_millis(rng.u64(0..40)));
        let decision = limiter.check("r", "id").await.unwrap();
        if decision.allowed {
            admitted.push(clock.ms());
        } else {
            denied += 1;
            // retry_after is never too early: a check then is allowed.
            let retry = decision.retry_after.unwrap();
            assert!(retry > Duration::ZERO);
        }
    }
    assert!(
        denied > 0 && admitted.len() > 80,
        "{denied} {}",
        admitted.len()
    );
    for (i, t) in admitted.iter().enumerate() {
        let in_window = admitted[..=i].iter().filter(|s| *s + window > *t).count();
        assert!(
            in_window <= 20,
            "{in_window} admitted in the 10 s before {t}"
        );
    }
    // And the limiter does not under-admit by much: over a long stretch of
    // saturated traffic it admits close to 20 per (window + one bucket).
    let span = (admitted.last().unwrap() - admitted[0]) as f64;
    let rate = admitted.len() as f64 / span * 11_000.0;
    assert!(rate > 18.0, "admitted only {rate:.1} per 11 s");
}

#[tokio::test]
async fn rate_limit_retry_after_holds_on_the_real_clock() {
    let backend = Arc::new(MemoryBackend::new());
    let limiter = RateLimiter::builder(backend.clone())
        .prefix("rt")
        .rule("fast", Rule::new(2, Duration::from_millis(600)))
        .build()
        .unwrap();
    assert!(limiter.check("fast", "ada").await.unwrap().allowed);
    assert!(limiter.check("fast", "ada").await.unwrap().allowed);
    let denied = limiter.check("fast", "ada").await.unwrap();
    assert!(!denied.allowed);
    let retry = denied.retry_after.unwrap();
    assert!(retry <= Duration::from_millis(660), "{retry:?}");
    tokio::time::sleep(retry + Duration::from_millis(5)).await;
    assert!(limiter.check("fast", "ada").await.unwrap().allowed);

    // The counters clean themselves up (TTL of k + 2 buckets).
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(backend.scan("rt:*").await.unwrap(), Vec::<String>::new());
}

#[tokio::test]
async fn rate_limit_keys_are_namespaced_by_rule_and_id() {
    let backend = memory();
    let limiter = RateLimiter::builder(backend.clone())
        .prefix("app")
        .rule("login", Rule::per_minute(1))
        .rule("api", Rule::per_minute(1))
        .build()
        .unwrap();
    assert!(limiter.check("login", "ada").await.unwrap().allowed);
    assert!(!limiter.check("login", "ada").await.unwrap().allowed);
    // Other rules, other ids, and ids that try to look like keys.
    for (rule, id) in [
        ("api", "ada"),
        ("login", "bob"),
        ("login", "ada}:1"),
        ("login", "ada:*"),
        ("login", "*"),
        ("login", "{ada}"),
    ] {
        let decision = limiter.check(rule, id).await.unwrap();
        assert!(decision.allowed, "{rule} {id}");
    }
    let keys = backend.scan("*").await.unwrap();
    assert!(!keys.is_empty());
    for key in &keys {
        assert!(key.starts_with("app:#rl:"), "{key}");
    }
    assert!(keys.iter().any(|k| k.starts_with("app:#rl:login:{ada}:")));
    assert!(keys
        .iter()
        .any(|k| k.starts_with("app:#rl:login:{ada%7D%3A1}:")));

    // A cache with the same prefix sees none of them, and its clear()
    // resets the limits too.
    let cache = Cache::builder(backend.clone())
        .prefix("app")
        .build()
        .unwrap();
    assert_eq!(
        cache
            .get::<i64>(&CacheKey::new("login", "ada").unwrap())
            .await
            .unwrap(),
        None
    );
    cache.clear().await.unwrap();
    assert!(limiter.check("login", "ada").await.unwrap().allowed);

    // reset() forgets one id under one rule.
    assert!(!limiter.check("login", "ada").await.unwrap().allowed);
    limiter.reset("login", "ada").await.unwrap();
    assert!(limiter.check("login", "ada").await.unwrap().allowed);
}

#[tokio::test]
async fn rate_limit_backend_down_is_the_rules_choice() {
    let flaky = Arc::new(FaultInjecting::new(
        MemoryBackend::new(),
        FaultConfig::none(),
    ));
    let limiter = RateLimiter::builder(flaky.clone())
        .rule("anon", Rule::per_minute(1)) // default: allow
        .rule(
            "login",
            Rule::per_minute(1).on_backend_error(OnBackendError::Deny),
        )
        .build()
        .unwrap();
    assert!(limiter.check("login", "ada").await.unwrap().allowed);

    flaky.set_config(FaultConfig::none().with_fail_probability(1.0));
    let open = limiter.check("anon", "ada").await.unwrap();
    assert!(open.allowed && open.degraded);
    assert_eq!(open.remaining, 1);
    let closed = limiter.check("login", "bob").await.unwrap();
    assert!(!closed.allowed && closed.degraded);
    assert_eq!(closed.retry_after, Some(Duration::from_secs(1)));
    let stats = limiter.stats();
    assert_eq!(stats.backend_errors, 2);

    // Back up: counting resumes where it was.
    flaky.set_config(FaultConfig::none());
    let counted = limiter.check("login", "ada").await.unwrap();
    assert!(!counted.allowed && !counted.degraded);
    assert!(limiter.check("login", "bob").await.unwrap().allowed);
}

#[tokio::test]
async fn rate_limit_rejects_bad_rules_and_ids() {
    let build = |rules: Vec<(&str, Rule)>| {
        let mut b = RateLimiter::builder(memory());
        for (name, rule) in rules {
            b = b.rule(name, rule);
        }
        b.build()
    };
    let kind = |r: cache_core::Result<RateLimiter>| r.unwrap_err().kind();
    assert_eq!(kind(build(vec![])), ErrorKind::Config);
    assert_eq!(
        kind(build(vec![("a", Rule::per_minute(0))])),
        ErrorKind::Config
    );
    assert_eq!(
        kind(build(vec![("a", Rule::new(1, Duration::ZERO))])),
        ErrorKind::Config
    );
    assert_eq!(
        kind(build(vec![
            ("a", Rule::per_minute(1)),
            ("a", Rule::per_hour(1))
        ])),
        ErrorKind::Config
    );
    assert_eq!(
        kind(build(vec![("has space", Rule::per_minute(1))])),
        ErrorKind::InvalidKey
    );
    assert_eq!(
        kind(
            RateLimiter::builder(memory())
                .prefix("")
                .rule("a", Rule::per_minute(1))
                .build()
        ),
        ErrorKind::InvalidKey
    );

    let limiter = build(vec![("a", Rule::per_minute(1))]).unwrap();
    let err = limiter.check("nope", "x").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(err.message().contains("rules: a"), "{err}");
    for id in ["", "a\nb"] {
        let err = limiter.check("a", id).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidKey, "{id:?}");
    }
    let long = "x".repeat(1100);
    assert_eq!(
        limiter.check("a", &long).await.unwrap_err().kind(),
        ErrorKind::InvalidKey
    );
}

#[tokio::test]
async fn rate_limit_peek_says_what_check_would_without_counting() {
    // 3 per 10 s in 10 buckets of 1 s.
    let clock = ManualClock::at(300);
    let limiter = clock
        .install(RateLimiter::builder(memory()))
        .rule("api", Rule::new(3, Duration::from_secs(10)))
        .build()
        .unwrap();
    let fresh = limiter.peek("api", 7).await.unwrap();
    assert_eq!((fresh.allowed, fresh.remaining), (true, 3));
    assert_eq!(
        (fresh.reset_after, fresh.retry_after),
        (Duration::ZERO, None)
    );
    for remaining in [2, 1, 0] {
        let checked = limiter.check("api", 7).await.unwrap();
        assert_eq!((checked.allowed, checked.remaining), (true, remaining));
        // Peeking twice counts nothing: the same room as the check left,
        // and the next request fits while there is room.
        for _ in 0..2 {
            let peeked = limiter.peek("api", 7).await.unwrap();
            assert_eq!(
                (peeked.allowed, peeked.remaining),
                (remaining > 0, remaining)
            );
            assert_eq!(peeked.reset_after, checked.reset_after);
        }
    }
    clock.advance(Duration::from_secs(4));
    let peeked = limiter.peek("api", 7).await.unwrap();
    let denied = limiter.check("api", 7).await.unwrap();
    assert!(!peeked.allowed && !denied.allowed);
    assert_eq!(peeked.retry_after, denied.retry_after);
    // The bucket of the three checks (it starts 300 ms before them) leaves
    // the window at +10.7 s; now is +4 s.
    assert_eq!(peeked.retry_after, Some(Duration::from_millis(6_700)));
    assert_eq!(peeked.remaining, 0);
    let stats = limiter.stats();
    assert_eq!(
        (stats.allowed, stats.denied),
        (3, 1),
        "peeks are not counted"
    );
}

#[tokio::test]
async fn rate_limit_failures_only_locks_out_after_limit_failures() {
    // A login lockout: 3 failures per 10 s; successes never count.
    let clock = ManualClock::at(300);
    let limiter = clock
        .install(RateLimiter::builder(memory()))
        .rule(
            "login",
            Rule::new(3, Duration::from_secs(10)).failures_only(),
        )
        .build()
        .unwrap();
    assert!(limiter.rule("login").unwrap().counts_failures_only());
    for _ in 0..20 {
        let ok = limiter.check("login", "ada").await.unwrap();
        assert_eq!((ok.allowed, ok.remaining), (true, 3));
    }
    let mut left = Vec::new();
    for _ in 0..3 {
        let after = limiter.record_failure("login", "ada").await.unwrap();
        left.push((after.allowed, after.remaining));
        clock.advance(Duration::from_secs(1));
    }
    assert_eq!(left, [(true, 2), (true, 1), (false, 0)]);
    // Locked out (now +3 s) until the first failure, in the bucket that
    // starts 300 ms before it, has left the window: +10.7 s.
    let locked = limiter.check("login", "ada").await.unwrap();
    assert!(!locked.allowed);
    assert_eq!(locked.retry_after, Some(Duration::from_millis(7_700)));
    assert!(limiter.check("login", "bob").await.unwrap().allowed);
    // Checks while locked out count nothing either: on time, one attempt.
    for _ in 0..5 {
        assert!(!limiter.check("login", "ada").await.unwrap().allowed);
    }
    clock.advance(Duration::from_millis(7_700));
    let again = limiter.check("login", "ada").await.unwrap();
    assert_eq!((again.allowed, again.remaining), (true, 1));
    // A successful login forgets the failures.
    limiter.reset("login", "ada").await.unwrap();
    assert_eq!(limiter.check("login", "ada").await.unwrap().remaining, 3);
    let stats = limiter.stats();
    assert_eq!((stats.allowed, stats.denied), (23, 6));
}

#[tokio::test]
async fn rate_limit_peek_and_record_failure_follow_the_rule_when_the_backend_fails() {
    let flaky = Arc::new(FaultInjecting::new(
        MemoryBackend::new(),
        FaultConfig::none().with_fail_probability(1.0),
    ));
    let limiter = RateLimiter::builder(flaky)
        .rule("anon", Rule::per_minute(1))
        .rule(
            "login",
            Rule::per_minute(1)
                .failures_only()
                .on_backend_error(OnBackendError::Deny),
        )
        .build()
        .unwrap();
    let open = limiter.peek("anon", 1).await.unwrap();
    assert!(open.allowed && open.degraded);
    let closed = limiter.check("login", 1).await.unwrap();
    assert!(!closed.allowed && closed.degraded);
    let failure = limiter.record_failure("login", 1).await.unwrap();
    assert!(!failure.allowed && failure.degraded);
    assert_eq!(limiter.stats().backend_errors, 3);
}
