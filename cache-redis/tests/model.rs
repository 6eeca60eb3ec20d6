//! Model-based test of the Redis backend on a real `redis-server` (the
//! testkit's private one, or `CACHE_TEST_REDIS_URL`): random sequences of
//! every `CacheBackend` operation checked step by step against the
//! reference model of `cache_testkit::model`, in real time.
//!
//! What it proves: the Redis commands behind each operation (SET PX/NX,
//! PEXPIRE, the incr and persist scripts, MGET, pipelines, SCAN + UNLINK)
//! agree with each other and with the model in any order, glob patterns
//! included (the server matches, the model uses `glob_match`).
//! How it fails: a divergence panics with the minimal sequence and the step
//! whose answer the model does not allow.
//!
//! Time is real: TTLs are none, zero, 1 hour, or 120/300 ms with sleeps of
//! 10 or 130 ms; near a TTL's end the model accepts either answer (within
//! the measured duration of the calls plus 10 ms), so a slow machine widens
//! the uncertainty instead of failing. Few, short sequences: 64 cases of up
//! to 24 steps by default (under ten seconds, mostly sleeping);
//! `CACHE_MODEL_CASES=N` runs N/10.

use std::sync::Arc;
use std::time::Duration;

use cache_core::CacheBackend;
use cache_redis::RedisBackend;
use cache_testkit::model::{cases_from_env, check_model, ModelClock, ModelRunner, Profile};
use cache_testkit::redis_server::RedisServer;
use tokio::sync::OnceCell;

const CASES: u32 = 64;

#[test]
fn model_redis() {
    run("redis", Profile::real_time());
}

fn run(name: &str, profile: Profile) {
    let url = RedisServer::shared().url().to_owned();
    let cases = (cases_from_env(0) / 10).max(CASES);
    // One connection for every case (made on check_model's runtime); each
    // case still has a namespace of its own.
    let backend: OnceCell<Arc<dyn CacheBackend>> = OnceCell::new();
    let (backend, url) = (&backend, &url);
    check_model(name, &profile, cases, move || async move {
        let backend = backend
            .get_or_init(|| async {
                let backend = RedisBackend::from_url(url)
                    .await
                    .unwrap_or_else(|e| panic!("cannot connect to the test server {url}: {e:?}"));
                Arc::new(backend) as Arc<dyn CacheBackend>
            })
            .await;
        ModelRunner::new(Arc::clone(backend))
            .with_clock(ModelClock::real(Duration::from_millis(10)))
            // The test server has no `maxmemory`: nothing is evicted.
            .with_evicts(false)
    });
}
