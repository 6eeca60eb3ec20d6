//! The backend when Redis goes away, hangs and comes back.
//!
//! Each test starts its own `redis-server` (fault injection stops and
//! pauses it, so these tests never use `CACHE_TEST_REDIS_URL`).

use std::future::Future;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cache_core::{CacheBackend, ErrorKind, Result, SetOptions};
use cache_redis::{RedisBackend, RedisConfig};
use cache_testkit::redis_server::RedisServer;

const RESPONSE_TIMEOUT: Duration = Duration::from_millis(500);
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// Generous: a failing call must come back well within this.
const FAIL_BOUND: Duration = Duration::from_secs(5);

async fn backend(server: &RedisServer, connections: usize) -> RedisBackend {
    let config = RedisConfig::from_url(server.url())
        .unwrap()
        .with_response_timeout(RESPONSE_TIMEOUT)
        .with_connect_timeout(CONNECT_TIMEOUT)
        .with_connections(connections);
    RedisBackend::connect(config).await.unwrap()
}

/// Runs `call`, checks it fails with one of `kinds` within `bound`.
async fn fails_within<T: std::fmt::Debug>(
    what: &str,
    kinds: &[ErrorKind],
    bound: Duration,
    call: impl Future<Output = Result<T>>,
) {
    let started = Instant::now();
    let result = call.await;
    let took = started.elapsed();
    let err = result.expect_err(what);
    println!("{what}: {err} ({took:?})");
    assert!(
        kinds.contains(&err.kind()),
        "{what}: expected one of {kinds:?}, got {err:?}"
    );
    assert!(took < bound, "{what}: took {took:?}, bound {bound:?}");
    assert!(err.is_retryable(), "{what}: {err:?}");
    assert_eq!(err.backend(), Some("redis"));
}

/// Retries `get` until the backend answers again; panics after `within`.
async fn until_recovered(backend: &RedisBackend, key: &str, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        match backend.get(key).await {
            Ok(_) => return started.elapsed(),
            Err(e) => {
                assert!(e.is_retryable(), "while recovering: {e:?}");
                assert!(
                    started.elapsed() < within,
                    "no recovery within {within:?}: {e:?}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Every kind of call on a dead server, each bounded.
async fn all_calls_fail(backend: &RedisBackend, kinds: &[ErrorKind], bound: Duration) {
    let v = Bytes::from_static(b"v");
    fails_within("get", kinds, bound, backend.get("f:k")).await;
    fails_within(
        "set",
        kinds,
        bound,
        backend.set("f:k", v.clone(), SetOptions::default()),
    )
    .await;
    fails_within("delete", kinds, bound, backend.delete("f:k")).await;
    fails_within("exists", kinds, bound, backend.exists("f:k")).await;
    fails_within("ttl", kinds, bound, backend.ttl("f:k")).await;
    fails_within("expire", kinds, bound, backend.expire("f:k", None)).await;
    fails_within("incr", kinds, bound, backend.incr("f:n", 1, None)).await;
    fails_within("get_many", kinds, bound, backend.get_many(&["f:a", "f:b"])).await;
    fails_within(
        "set_many",
        kinds,
        bound,
        backend.set_many(&[("f:a", v.clone())], None),
    )
    .await;
    fails_within("delete_many", kinds, bound, backend.delete_many(&["f:a"])).await;
    fails_within(
        "delete_matching",
        kinds,
        bound,
        backend.delete_matching("f:*"),
    )
    .await;
    fails_within("clear", kinds, bound, backend.clear("f:")).await;
    fails_within("health", kinds, bound, backend.health()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_server_fails_promptly_and_restart_recovers() {
    let server = RedisServer::new();
    let backend = backend(&server, 2).await;
    backend
        .set("f:k", Bytes::from_static(b"before"), SetOptions::default())
        .await
        .unwrap();

    server.stop();
    let either = [ErrorKind::Connection, ErrorKind::Timeout];
    // Twice: the first round finds the connections broken, the second
    // finds the reconnect attempts failing.
    for _ in 0..2 {
        all_calls_fail(&backend, &either, FAIL_BOUND).await;
    }

    server.start();
    let took = until_recovered(&backend, "f:k", Duration::from_secs(10)).await;
    println!("recovered {took:?} after the restart");
    // Every connection of the round-robin works again.
    for i in 0..8 {
        let key = format!("f:after:{i}");
        backend
            .set(&key, Bytes::from_static(b"after"), SetOptions::default())
            .await
            .unwrap_or_else(|e| panic!("set {i} after recovery: {e:?}"));
        assert_eq!(
            backend.get(&key).await.unwrap().as_deref(),
            Some(&b"after"[..])
        );
    }
    // No persistence: the restarted server starts empty, its script cache
    // too (the scripts are loaded again on NOSCRIPT).
    assert_eq!(backend.get("f:k").await.unwrap(), None);
    assert_eq!(backend.incr("f:after:n", 3, None).await.unwrap(), 3);
    assert!(backend.expire("f:after:n", None).await.unwrap());
    backend.health().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_server_times_out_within_the_response_timeout_and_resume_recovers() {
    let server = RedisServer::new();
    let backend = backend(&server, 1).await;
    backend
        .set("f:kept", Bytes::from_static(b"kept"), SetOptions::default())
        .await
        .unwrap();

    server.pause();
    // Bounded by the response timeout (plus scheduling slack), not by TCP.
    let bound = RESPONSE_TIMEOUT + Duration::from_millis(400);
    all_calls_fail(&backend, &[ErrorKind::Timeout], bound).await;

    server.resume();
    let took = until_recovered(&backend, "f:kept", Duration::from_secs(5)).await;
    println!("answered again {took:?} after the resume");
    // Same process: the data is still there. (The calls that timed out
    // were queued, not lost: Redis runs them after the resume, which is
    // why they touched other keys.)
    assert_eq!(
        backend.get("f:kept").await.unwrap().as_deref(),
        Some(&b"kept"[..])
    );
    assert_eq!(backend.incr("f:fresh", 2, None).await.unwrap(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connecting_to_a_stopped_server_is_a_connection_error() {
    let server = RedisServer::new();
    let url = server.url().to_owned();
    server.stop();
    let started = Instant::now();
    let err = RedisBackend::from_url(&url).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Connection, "{err:?}");
    assert!(started.elapsed() < FAIL_BOUND, "{:?}", started.elapsed());
    assert!(err.to_string().contains("127.0.0.1"), "{err}");
    assert!(std::error::Error::source(&err).is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connecting_to_a_paused_server_is_bounded_by_the_connect_timeout() {
    let server = RedisServer::new();
    server.pause();
    let config = RedisConfig::from_url(server.url())
        .unwrap()
        .with_connect_timeout(CONNECT_TIMEOUT);
    let started = Instant::now();
    let err = RedisBackend::connect(config).await.unwrap_err();
    let took = started.elapsed();
    assert_eq!(err.kind(), ErrorKind::Connection, "{err:?}");
    assert!(
        took < CONNECT_TIMEOUT + Duration::from_millis(500),
        "took {took:?}"
    );
    server.resume();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_callers_on_a_paused_server_all_time_out() {
    let server = RedisServer::new();
    let backend = backend(&server, 1).await;
    server.pause();
    let started = Instant::now();
    let calls: Vec<_> = (0..50)
        .map(|i| {
            let backend = backend.clone();
            tokio::spawn(async move { backend.get(&format!("f:c:{i}")).await })
        })
        .collect();
    for call in calls {
        let err = call.await.unwrap().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Timeout, "{err:?}");
    }
    assert!(
        started.elapsed() < RESPONSE_TIMEOUT + Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    server.resume();
    until_recovered(&backend, "f:c:0", Duration::from_secs(5)).await;
}
