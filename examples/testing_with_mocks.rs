//! How an application unit-tests its own code that uses the cache, with
//! `MockBackend` (exact calls, canned errors) and `FaultInjecting` (a real
//! backend that fails on purpose).
//!
//! ```text
//! cargo test -p cache-examples --example testing_with_mocks   # the tests are the point
//! cargo run --example testing_with_mocks                      # the service under faults
//! ```
//!
//! The code under test is `ProfileService`: profiles from a database,
//! cached for 5 minutes under `app:profile:{id}`, served from the database
//! when the cache fails, and a login throttle that fails closed.
//!
//! Which tool for which test:
//! - the happy path and the exact keys/TTLs: a real `MemoryBackend`
//!   (behaviour, not calls), or a `MockBackend` when the test is about the
//!   calls themselves (`allow_bookkeeping()` first, so the test states
//!   only its own calls, not the cache's generation bookkeeping);
//! - "the cache times out": a `MockBackend` returning `Timeout`;
//! - "the cache fails now and then": `FaultInjecting` over a real backend.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use cache::{Cache, CacheBackend, CacheConfig, CacheKey, RateLimiter};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Profile {
    id: u64,
    name: String,
}

/// The application's database (a stand-in that counts its queries).
#[derive(Default)]
struct Database {
    queries: AtomicU32,
}

impl Database {
    async fn load_profile(&self, id: u64) -> Result<Profile, std::io::Error> {
        self.queries.fetch_add(1, Ordering::SeqCst);
        Ok(Profile {
            id,
            name: format!("user-{id}"),
        })
    }
}

/// The code under test.
struct ProfileService {
    cache: Cache,
    limiter: RateLimiter,
    db: Arc<Database>,
}

impl ProfileService {
    /// The service as production builds it: the cache and the limiter from
    /// its configuration, over `backend` (Redis in production; a mock or a
    /// fault injector in tests: `cache::open_with`).
    async fn new(backend: Arc<dyn CacheBackend>, db: Arc<Database>) -> cache::Result<Self> {
        let config = CacheConfig::from_json(
            r#"{ "prefix": "app", "ttls": { "profile": 300 },
                 "rate_limits": { "login": "5/min deny" } }"#,
        )?;
        let cache = cache::open_with(&config, backend).await?;
        let limiter = config.rate_limiter(&cache)?;
        Ok(ProfileService { cache, limiter, db })
    }

    /// A profile: cached, or from the database when the cache is down.
    async fn profile(&self, id: u64) -> Result<Profile, Box<dyn std::error::Error + Send + Sync>> {
        let key = CacheKey::new("profile", id)?;
        let db = Arc::clone(&self.db);
        match self
            .cache
            .get_or_set(&key, move || async move { db.load_profile(id).await })
            .await
        {
            Ok(profile) => Ok(profile),
            // A cache outage is not the user's problem.
            Err(err) if err.kind() != cache::ErrorKind::Loader => {
                Ok(self.db.load_profile(id).await?)
            }
            Err(err) => Err(err.into()),
        }
    }

    /// Whether a login attempt for `name` may go ahead.
    async fn may_try_login(&self, name: &str) -> bool {
        self.limiter
            .check("login", name)
            .await
            .is_ok_and(|d| d.allowed)
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    use cache_testkit::{FaultConfig, FaultInjecting};

    // The service over a backend that fails every third call.
    let flaky = Arc::new(FaultInjecting::new(
        cache::memory::MemoryBackend::new(),
        FaultConfig::none().with_fail_every(3),
    ));
    let db = Arc::new(Database::default());
    let service = ProfileService::new(flaky.clone(), Arc::clone(&db)).await?;
    for round in 0..20 {
        let profile = service.profile(round % 4).await?;
        assert_eq!(profile.id, round % 4);
    }
    println!(
        "20 profile reads over a backend failing every 3rd call: all answered, \
         {} injected faults, {} database queries",
        flaky.injected(),
        db.queries.load(Ordering::SeqCst)
    );
    // The login throttle fails closed: with every call failing, no attempt.
    flaky.set_config(FaultConfig::none().with_fail_probability(1.0));
    println!(
        "login attempt while the backend is down: allowed = {}",
        service.may_try_login("ada").await
    );
    println!("run `cargo test -p cache-examples --example testing_with_mocks` for the tests");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use cache::{Bytes, Error, ErrorKind};
    use cache_testkit::{FaultConfig, FaultInjecting, MockBackend};

    async fn service(backend: Arc<dyn CacheBackend>) -> (ProfileService, Arc<Database>) {
        let db = Arc::new(Database::default());
        let service = ProfileService::new(backend, Arc::clone(&db)).await.unwrap();
        (service, db)
    }

    /// Behaviour on a real in-memory backend: one query, then hits.
    #[tokio::test]
    async fn profiles_are_loaded_once_then_cached() {
        let (service, db) = service(Arc::new(cache::memory::MemoryBackend::new())).await;
        for _ in 0..3 {
            assert_eq!(service.profile(7).await.unwrap().name, "user-7");
        }
        assert_eq!(db.queries.load(Ordering::SeqCst), 1);
        assert_eq!(service.cache.stats().hits, 2);
    }

    /// The calls themselves: on a miss of `app:profile:42`, the service
    /// stores the profile there, as JSON, for 5 minutes, once. Every call
    /// names its exact key; the cache's own bookkeeping (a category's
    /// generation, under `app:#gen:profile`) is let through by
    /// `allow_bookkeeping`, called before the expectations.
    #[tokio::test]
    async fn a_miss_stores_the_profile_under_its_key_for_five_minutes() {
        let mut mock = MockBackend::new();
        mock.allow_bookkeeping();
        mock.allow_metadata();
        // The miss (a canned answer: `get_or_set` may look again before
        // it loads, in case a concurrent load has just stored the value).
        mock.expect_get()
            .withf(|key| key == "app:profile:42")
            .returning(|_| Ok(None));
        // The one write this test is about.
        mock.expect_set()
            .withf(|key, value, opts| {
                key == "app:profile:42"
                    && value == &Bytes::from_static(br#"{"id":42,"name":"user-42"}"#)
                    && opts.ttl == Some(std::time::Duration::from_secs(300))
            })
            .times(1)
            .returning(|_, _, _| Ok(true));
        let (service, db) = service(Arc::new(mock)).await;
        assert_eq!(service.profile(42).await.unwrap().id, 42);
        assert_eq!(db.queries.load(Ordering::SeqCst), 1);
    }

    /// After a category invalidation, the service's keys carry the new
    /// generation (`app:profile#1:42`): the mock keeps the bookkeeping it
    /// lets through, so the test can name the key the cache uses next.
    #[tokio::test]
    async fn after_invalidating_profiles_the_next_read_uses_the_new_generation() {
        let mut mock = MockBackend::new();
        mock.allow_bookkeeping();
        mock.allow_metadata();
        mock.expect_get()
            .withf(|key| key == "app:profile#1:42")
            .times(1)
            .returning(|_| Ok(Some(Bytes::from_static(br#"{"id":42,"name":"cached"}"#))));
        let (service, db) = service(Arc::new(mock)).await;
        assert_eq!(
            service.cache.invalidate_category("profile").await.unwrap(),
            1
        );
        assert_eq!(service.profile(42).await.unwrap().name, "cached");
        assert_eq!(db.queries.load(Ordering::SeqCst), 0);
    }

    /// A cache that times out: the user still gets the profile.
    #[tokio::test]
    async fn a_cache_timeout_falls_back_to_the_database() {
        let mut mock = MockBackend::new();
        mock.allow_metadata();
        mock.expect_get()
            .returning(|_| Err(Error::new(ErrorKind::Timeout, "no answer in 250 ms")));
        mock.expect_set().never();
        let (service, db) = service(Arc::new(mock)).await;
        assert_eq!(service.profile(1).await.unwrap().name, "user-1");
        assert_eq!(db.queries.load(Ordering::SeqCst), 1);
        assert!(service.cache.stats().errors >= 1);
    }

    /// A cache that fails now and then: every read is answered.
    #[tokio::test]
    async fn an_intermittently_failing_cache_never_fails_a_read() {
        let flaky = Arc::new(FaultInjecting::new(
            cache::memory::MemoryBackend::new(),
            FaultConfig::none().with_fail_probability(0.3),
        ));
        let (service, db) = service(flaky.clone()).await;
        for i in 0..200 {
            assert_eq!(service.profile(i % 10).await.unwrap().id, i % 10);
        }
        assert!(flaky.injected() > 0);
        // The cache still saved most of the queries.
        assert!(db.queries.load(Ordering::SeqCst) < 150);
    }

    /// The login throttle fails closed: with the backend down, no attempt
    /// goes through (and it counts normally when the backend works).
    #[tokio::test]
    async fn the_login_rate_limit_fails_closed() {
        let backend = Arc::new(FaultInjecting::new(
            cache::memory::MemoryBackend::new(),
            FaultConfig::none(),
        ));
        let (service, _) = service(backend.clone()).await;
        for _ in 0..5 {
            assert!(service.may_try_login("ada").await);
        }
        assert!(!service.may_try_login("ada").await);

        backend.set_config(FaultConfig::none().with_fail_probability(1.0));
        assert!(!service.may_try_login("bob").await);
        assert_eq!(service.limiter.stats().backend_errors, 1);
    }

    /// A rate limiter's counter writes, seen through a mock: one `incr` of
    /// the current bucket per check, with a TTL.
    #[tokio::test]
    async fn a_login_check_is_one_counted_incr() {
        let mut mock = MockBackend::new();
        mock.allow_metadata();
        mock.expect_incr()
            .withf(|key, delta, ttl| {
                key.starts_with("app:#rl:login:{ada}:") && *delta == 1 && ttl.is_some()
            })
            .times(1)
            .returning(|_, _, _| Ok(1));
        mock.expect_get_many()
            .returning(|keys| Ok(vec![None; keys.len()]));
        let (service, _) = service(Arc::new(mock)).await;
        assert!(service.may_try_login("ada").await);
    }
}
