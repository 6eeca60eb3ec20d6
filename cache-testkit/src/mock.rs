//! `MockBackend`: a mockall mock of `CacheBackend`.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use cache_core::{CacheBackend, Capabilities, Health, KeyTtl, Result, SetOptions};

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
