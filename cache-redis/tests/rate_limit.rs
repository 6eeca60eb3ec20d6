//! `RateLimiter` on a real Redis: exact admission from many tasks and from
//! independent backend instances sharing the server, exact retry-after, a
//! sliding window, and Redis going down.
//!
//! The shared tests use one private `redis-server` (or
//! `CACHE_TEST_REDIS_URL`); the outage test starts its own.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cache_core::{CacheBackend, OnBackendError, RateLimiter, RateLimiterBuilder, Rule};
use cache_redis::{RedisBackend, RedisConfig};
use cache_testkit::redis_server::RedisServer;

async fn redis() -> Arc<dyn CacheBackend> {
    let url = RedisServer::shared().url();
    Arc::new(
        RedisBackend::from_url(url)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to the test server {url}: {e:?}")),
    )
}

/// A prefix of its own for each test, so runs never meet.
fn prefix(test: &str) -> String {
    format!("rl-{test}-{}", fastrand::u32(..))
}

/// A clock the test moves by hand, in Unix milliseconds, starting on a
/// whole hour plus `offset_ms`.
#[derive(Clone)]
struct ManualClock(Arc<AtomicU64>);

impl ManualClock {
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

    fn advance(&self, d: Duration) {
        self.0.fetch_add(d.as_millis() as u64, Ordering::SeqCst);
    }

    fn install(&self, builder: RateLimiterBuilder) -> RateLimiterBuilder {
        let clock = self.clone();
        builder.clock(move || UNIX_EPOCH + Duration::from_millis(clock.ms()))
    }
}

/// Runs `n` concurrent checks spread over `limiters`; returns how many were
/// allowed.
async fn allowed_of(limiters: &[RateLimiter], rule: &str, id: &str, n: usize) -> usize {
    let mut tasks = Vec::new();
    for i in 0..n {
        let limiter = limiters[i % limiters.len()].clone();
        let (rule, id) = (rule.to_owned(), id.to_owned());
        tasks.push(tokio::spawn(async move {
            limiter.check(&rule, &id).await.unwrap()
        }));
    }
    let mut allowed = 0;
    for task in tasks {
        let decision = task.await.unwrap();
        assert!(!decision.degraded, "{decision:?}");
        allowed += usize::from(decision.allowed);
    }
    allowed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rate_limit_redis_admits_exactly_limit_from_many_tasks() {
    // A clock that stands still mid-bucket: the test is about atomicity,
    // not about a bucket boundary falling inside a round.
    let clock = ManualClock::at(1000);
    let limiter = clock
        .install(RateLimiter::builder(redis().await))
        .prefix(prefix("tasks"))
        .rule("api", Rule::per_hour(40))
        .build()
        .unwrap();
    for round in 0..3 {
        let id = format!("user-{round}");
        assert_eq!(
            allowed_of(std::slice::from_ref(&limiter), "api", &id, 300).await,
            40
        );
        // The denied ones were not counted: exactly 40 are in the window.
        let next = limiter.check("api", &id).await.unwrap();
        assert!(!next.allowed);
        assert_eq!(next.remaining, 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rate_limit_redis_admits_exactly_limit_across_two_instances() {
    // Two independent backends (their own connections), each with its own
    // limiter, as two replicas of a service would have.
    let prefix = prefix("instances");
    // Both instances agree on the time (as NTP makes them), which stands
    // still mid-bucket for the test.
    let clock = ManualClock::at(1000);
    let mut limiters = Vec::new();
    for _ in 0..2 {
        let backend = RedisBackend::connect(
            RedisConfig::from_url(RedisServer::shared().url())
                .unwrap()
                .with_connections(2),
        )
        .await
        .unwrap();
        limiters.push(
            clock
                .install(RateLimiter::builder(Arc::new(backend)))
                .prefix(prefix.clone())
                .rule("login", Rule::per_minute(25))
                .build()
                .unwrap(),
        );
    }
    for round in 0..3 {
        let id = format!("ada-{round}");
        assert_eq!(allowed_of(&limiters, "login", &id, 200).await, 25);
        for limiter in &limiters {
            assert!(!limiter.check("login", &id).await.unwrap().allowed);
        }
    }
    let stats: u64 = limiters.iter().map(|l| l.stats().allowed).sum();
    assert_eq!(stats, 75);
}

#[tokio::test]
async fn rate_limit_redis_retry_after_is_exact_and_window_slides() {
    // 5 per 10 s in 10 buckets of 1 s, on a manual clock.
    let clock = ManualClock::at(300);
    let limiter = clock
        .install(RateLimiter::builder(redis().await))
        .prefix(prefix("retry"))
        .rule("login", Rule::new(5, Duration::from_secs(10)))
        .build()
        .unwrap();
    for _ in 0..2 {
        assert!(limiter.check("login", "ada").await.unwrap().allowed);
    }
    clock.advance(Duration::from_secs(2));
    for _ in 0..3 {
        assert!(limiter.check("login", "ada").await.unwrap().allowed);
    }
    clock.advance(Duration::from_secs(2));
    let denied = limiter.check("login", "ada").await.unwrap();
    assert!(!denied.allowed);
    let retry = denied.retry_after.unwrap();
    assert_eq!(retry, Duration::from_millis(11_000 - 300 - 4000));

    clock.advance(retry - Duration::from_millis(1));
    let early = limiter.check("login", "ada").await.unwrap();
    assert_eq!(early.retry_after, Some(Duration::from_millis(1)));
    clock.advance(Duration::from_millis(1));
    // The two oldest left the window: two slots back, not five.
    let first = limiter.check("login", "ada").await.unwrap();
    assert!(first.allowed);
    assert_eq!(first.remaining, 1);
    assert!(limiter.check("login", "ada").await.unwrap().allowed);
    let full = limiter.check("login", "ada").await.unwrap();
    assert!(!full.allowed);
    // The next slot comes back when the three requests of t0 + 2 s leave.
    assert_eq!(full.retry_after, Some(Duration::from_secs(2)));
}

#[tokio::test]
async fn rate_limit_redis_retry_after_holds_on_the_real_clock() {
    let server = RedisServer::shared();
    let backend = redis().await;
    let prefix = prefix("realtime");
    let limiter = RateLimiter::builder(backend)
        .prefix(prefix.clone())
        .rule("fast", Rule::new(3, Duration::from_millis(800)))
        .build()
        .unwrap();
    for _ in 0..3 {
        assert!(limiter.check("fast", "ada").await.unwrap().allowed);
    }
    let denied = limiter.check("fast", "ada").await.unwrap();
    assert!(!denied.allowed);
    let retry = denied.retry_after.unwrap();
    assert!(retry <= Duration::from_millis(880), "{retry:?}");
    tokio::time::sleep(retry + Duration::from_millis(5)).await;
    assert!(limiter.check("fast", "ada").await.unwrap().allowed);

    // Counters carry a TTL in Redis (PEXPIRE from the incr script).
    let keys = server.cli(&["--scan", "--pattern", &format!("{prefix}:#rl:*")]);
    let keys = String::from_utf8(keys).unwrap();
    // The newest bucket: the one the last check wrote.
    let key = keys
        .lines()
        .max_by_key(|k| k.rsplit(':').next().unwrap().parse::<u64>().unwrap())
        .expect("a counter key");
    assert!(
        key.starts_with(&format!("{prefix}:#rl:fast:{{ada}}:")),
        "{key}"
    );
    let pttl: i64 = String::from_utf8(server.cli(&["PTTL", key]))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(pttl > 0 && pttl <= 960, "PTTL {pttl}");
}

#[tokio::test]
async fn rate_limit_redis_down_allows_or_denies_as_configured() {
    let server = RedisServer::new();
    let config = RedisConfig::from_url(server.url())
        .unwrap()
        .with_response_timeout(Duration::from_millis(300))
        .with_connect_timeout(Duration::from_millis(300));
    let backend = Arc::new(RedisBackend::connect(config).await.unwrap());
    let limiter = RateLimiter::builder(backend)
        .prefix(prefix("down"))
        .rule("anon", Rule::per_minute(1))
        .rule(
            "login",
            Rule::per_minute(1).on_backend_error(OnBackendError::Deny),
        )
        .build()
        .unwrap();
    assert!(limiter.check("anon", "ada").await.unwrap().allowed);
    assert!(!limiter.check("anon", "ada").await.unwrap().allowed);

    server.stop();
    let open = limiter.check("anon", "ada").await.unwrap();
    assert!(open.allowed && open.degraded, "{open:?}");
    let closed = limiter.check("login", "bob").await.unwrap();
    assert!(!closed.allowed && closed.degraded, "{closed:?}");
    assert_eq!(limiter.stats().backend_errors, 2);

    // Back (empty: no persistence): counting resumes, no rebuild needed.
    server.start();
    let mut recovered = None;
    for _ in 0..50 {
        let decision = limiter.check("login", "bob").await.unwrap();
        if !decision.degraded {
            recovered = Some(decision);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let decision = recovered.expect("the limiter counts again after Redis is back");
    assert!(decision.allowed);
    assert!(!limiter.check("login", "bob").await.unwrap().allowed);
}
