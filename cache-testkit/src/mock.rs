//! `MockBackend`: a mockall mock of `CacheBackend`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use cache_core::{
    CacheBackend, Capabilities, Error, ErrorKind, Health, KeyTtl, Result, SetMode, SetOptions,
};

mockall::mock! {
    /// A mock [`CacheBackend`] for unit tests of code that uses a cache.
    ///
    /// Set expectations with `expect_get()`, `expect_set()`… (mockall); the
    /// expectations are synchronous and batch operations take owned keys
    /// (`Vec<String>`), so canned answers are one closure. Use the mock as an
    /// `Arc<dyn CacheBackend>` (or call `CacheBackend::get(&mock, ..)`): its
    /// `CacheBackend` impl forwards every call to the expectations.
    ///
    /// Backends themselves are tested for real, with the conformance suite.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use cache_core::{CacheBackend, Error, ErrorKind};
    /// use cache_testkit::MockBackend;
    /// use std::sync::Arc;
    ///
    /// let mut mock = MockBackend::new();
    /// mock.expect_get()
    ///     .withf(|key| key == "app:user:1")
    ///     .returning(|_| Err(Error::new(ErrorKind::Timeout, "slow")));
    /// let backend: Arc<dyn CacheBackend> = Arc::new(mock);
    /// let err = backend.get("app:user:1").await.unwrap_err();
    /// assert_eq!(err.kind(), ErrorKind::Timeout);
    /// # }
    /// ```
    pub Backend {
        /// Expectation behind `CacheBackend::name`.
        pub fn name(&self) -> &'static str;
        /// Expectation behind `CacheBackend::capabilities`.
        pub fn capabilities(&self) -> Capabilities;
        /// Expectation behind `CacheBackend::get`.
        pub fn get(&self, key: &str) -> Result<Option<Bytes>>;
        /// Expectation behind `CacheBackend::set`.
        pub fn set(&self, key: &str, value: Bytes, opts: SetOptions) -> Result<bool>;
        /// Expectation behind `CacheBackend::delete`.
        pub fn delete(&self, key: &str) -> Result<bool>;
        /// Expectation behind `CacheBackend::exists`.
        pub fn exists(&self, key: &str) -> Result<bool>;
        /// Expectation behind `CacheBackend::ttl`.
        pub fn ttl(&self, key: &str) -> Result<KeyTtl>;
        /// Expectation behind `CacheBackend::expire`.
        pub fn expire(&self, key: &str, ttl: Option<Duration>) -> Result<bool>;
        /// Expectation behind `CacheBackend::incr`.
        pub fn incr(&self, key: &str, delta: i64, ttl: Option<Duration>) -> Result<i64>;
        /// Expectation behind `CacheBackend::health`.
        pub fn health(&self) -> Result<Health>;
        /// Expectation behind `CacheBackend::get_many`.
        pub fn get_many(&self, keys: Vec<String>) -> Result<Vec<Option<Bytes>>>;
        /// Expectation behind `CacheBackend::set_many`.
        pub fn set_many(&self, items: Vec<(String, Bytes)>, ttl: Option<Duration>) -> Result<()>;
        /// Expectation behind `CacheBackend::delete_many`.
        pub fn delete_many(&self, keys: Vec<String>) -> Result<u64>;
        /// Expectation behind `CacheBackend::scan`.
        pub fn scan(&self, pattern: &str) -> Result<Vec<String>>;
        /// Expectation behind `CacheBackend::delete_matching`.
        pub fn delete_matching(&self, pattern: &str) -> Result<u64>;
        /// Expectation behind `CacheBackend::clear`.
        pub fn clear(&self, namespace: &str) -> Result<u64>;
        /// Expectation behind `CacheBackend::close`.
        pub fn close(&self) -> Result<()>;
    }
}

/// Whether `key` is one of `Cache`'s category generation keys,
/// `{prefix}:#gen:{category}`. A prefix holds no `:` and a category never
/// starts with `#`, so no value key (whatever its id or version) has this
/// shape.
fn is_generation_key(key: &str) -> bool {
    key.split_once(':')
        .and_then(|(_, rest)| rest.strip_prefix("#gen:"))
        .is_some_and(|category| !category.is_empty() && !category.contains(':'))
}

impl MockBackend {
    /// What [`allow_metadata`](MockBackend::allow_metadata) answers to
    /// `capabilities()`: everything a Redis server can do (atomic `incr`,
    /// pattern operations, millisecond TTLs, its key and value limits), so
    /// no code under test refuses the mock or takes a slower path for it.
    pub fn full_capabilities() -> Capabilities {
        let mut caps = Capabilities::default();
        caps.max_value_size = 512 * 1024 * 1024;
        caps.sub_second_ttl = true;
        caps.atomic_incr = true;
        caps.pattern_delete = true;
        caps
    }

    /// Answers the questions every user of a backend asks before it calls
    /// it: `name()` is `"mock"` and `capabilities()` is
    /// [`full_capabilities`](MockBackend::full_capabilities). `Cache`,
    /// `RateLimiter` and the wrappers ask them; with this, a test sets
    /// expectations only for the calls it is about.
    ///
    /// Set your own `expect_name` / `expect_capabilities` **instead**, not
    /// after: mockall uses the first expectation that matches.
    ///
    /// # Examples
    ///
    /// ```
    /// use cache_core::{RateLimiter, Rule};
    /// use cache_testkit::MockBackend;
    /// use std::sync::Arc;
    ///
    /// let mut mock = MockBackend::new();
    /// mock.allow_metadata();
    /// let limiter = RateLimiter::builder(Arc::new(mock)).rule("api", Rule::per_second(5)).build();
    /// assert!(limiter.is_ok());
    /// ```
    pub fn allow_metadata(&mut self) -> &mut Self {
        self.expect_name().return_const("mock");
        self.expect_capabilities()
            .returning(MockBackend::full_capabilities);
        self
    }

    /// Lets [`Cache`](cache_core::Cache)'s own bookkeeping through, so an
    /// exact-call test only states the calls it is about.
    ///
    /// A `Cache` keeps each category's generation (what
    /// [`invalidate_category`](cache_core::Cache::invalidate_category) bumps)
    /// under `{prefix}:#gen:{category}`, and reads, creates and bumps it
    /// with `get`, `set` (`IfAbsent`) and `incr` around the calls a test
    /// cares about. This adds expectations for exactly those keys that
    /// behave like a store: the generations live in a small map inside the
    /// mock, so `invalidate_category` works and later keys carry the new
    /// generation (`app:profile#1:42`). Calls on every other key still go
    /// to your expectations, and a call no expectation matches still
    /// panics.
    ///
    /// Call it **before** setting your own expectations: mockall tries
    /// expectations in the order they were set, so an earlier catch-all
    /// (`expect_get()` with no `withf`, or with `times(1)`) would otherwise
    /// receive the bookkeeping calls too.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> cache_core::Result<()> {
    /// use cache_core::{Bytes, Cache, CacheKey};
    /// use cache_testkit::MockBackend;
    /// use std::sync::Arc;
    ///
    /// let mut mock = MockBackend::new();
    /// mock.allow_bookkeeping();
    /// // Only the call this test is about:
    /// mock.expect_get()
    ///     .withf(|key| key == "prices:price:EUR")
    ///     .times(1)
    ///     .returning(|_| Ok(Some(Bytes::from_static(b"1.08"))));
    /// let cache = Cache::builder(Arc::new(mock)).prefix("prices").build()?;
    /// let rate = cache.get::<f64>(&CacheKey::new("price", "EUR")?).await?;
    /// assert_eq!(rate, Some(1.08));
    /// # Ok(())
    /// # }
    /// ```
    pub fn allow_bookkeeping(&mut self) -> &mut Self {
        let generations: Arc<Mutex<HashMap<String, i64>>> = Arc::default();
        let map = Arc::clone(&generations);
        self.expect_get()
            .withf(is_generation_key)
            .returning(move |key| {
                let map = map.lock().unwrap_or_else(PoisonError::into_inner);
                Ok(map.get(key).map(|g| Bytes::from(g.to_string())))
            });
        let map = Arc::clone(&generations);
        self.expect_set()
            .withf(|key, _, _| is_generation_key(key))
            .returning(move |key, value, opts| {
                let mut map = map.lock().unwrap_or_else(PoisonError::into_inner);
                if opts.ttl.is_some_and(|t| t.is_zero()) {
                    if opts.mode == SetMode::Always {
                        map.remove(key);
                    }
                    return Ok(false);
                }
                if opts.mode == SetMode::IfAbsent && map.contains_key(key) {
                    return Ok(false);
                }
                let generation = std::str::from_utf8(&value)
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .ok_or_else(|| {
                        Error::new(ErrorKind::InvalidValue, "a generation is an integer")
                    })?;
                map.insert(key.to_owned(), generation);
                Ok(true)
            });
        let map = generations;
        self.expect_incr()
            .withf(|key, _, _| is_generation_key(key))
            .returning(move |key, delta, _| {
                let mut map = map.lock().unwrap_or_else(PoisonError::into_inner);
                let generation = map.entry(key.to_owned()).or_insert(0);
                *generation = generation.checked_add(delta).ok_or_else(|| {
                    Error::new(ErrorKind::InvalidValue, "the generation overflows")
                })?;
                Ok(*generation)
            });
        self
    }
}

fn owned(keys: &[&str]) -> Vec<String> {
    keys.iter().map(|k| (*k).to_owned()).collect()
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl CacheBackend for MockBackend {
    fn name(&self) -> &'static str {
        MockBackend::name(self)
    }

    fn capabilities(&self) -> Capabilities {
        MockBackend::capabilities(self)
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        MockBackend::get(self, key)
    }

    /// The mock answers every read now, as `get` (one expected `get` call
    /// per read, whichever path the caller takes).
    fn get_now(&self, key: &str) -> Option<Result<Option<Bytes>>> {
        Some(MockBackend::get(self, key))
    }

    /// Not answered in parts: the caller joins the key and calls
    /// `get_now` (the key the expectation names).
    fn get_now_joined(&self, _head: &str, _tail: &str) -> Option<Result<Option<Bytes>>> {
        None
    }

    /// Not answered in parts, as `get_now_joined`.
    fn read_now_joined(
        &self,
        _head: &str,
        _tail: &str,
        _read: &mut dyn FnMut(&Bytes),
    ) -> Option<Result<bool>> {
        None
    }

    async fn set(&self, key: &str, value: Bytes, opts: SetOptions) -> Result<bool> {
        MockBackend::set(self, key, value, opts)
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        MockBackend::delete(self, key)
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        MockBackend::exists(self, key)
    }

    async fn ttl(&self, key: &str) -> Result<KeyTtl> {
        MockBackend::ttl(self, key)
    }

    async fn expire(&self, key: &str, ttl: Option<Duration>) -> Result<bool> {
        MockBackend::expire(self, key, ttl)
    }

    async fn incr(&self, key: &str, delta: i64, ttl: Option<Duration>) -> Result<i64> {
        MockBackend::incr(self, key, delta, ttl)
    }

    async fn health(&self) -> Result<Health> {
        MockBackend::health(self)
    }

    async fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Bytes>>> {
        MockBackend::get_many(self, owned(keys))
    }

    async fn set_many(&self, items: &[(&str, Bytes)], ttl: Option<Duration>) -> Result<()> {
        let items = items
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect();
        MockBackend::set_many(self, items, ttl)
    }

    async fn delete_many(&self, keys: &[&str]) -> Result<u64> {
        MockBackend::delete_many(self, owned(keys))
    }

    async fn scan(&self, pattern: &str) -> Result<Vec<String>> {
        MockBackend::scan(self, pattern)
    }

    async fn delete_matching(&self, pattern: &str) -> Result<u64> {
        MockBackend::delete_matching(self, pattern)
    }

    async fn clear(&self, namespace: &str) -> Result<u64> {
        MockBackend::clear(self, namespace)
    }

    async fn close(&self) -> Result<()> {
        MockBackend::close(self)
    }
}
