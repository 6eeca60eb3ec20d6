//! Redis-specific behaviour beyond the conformance suite: exact TTL rules
//! of `incr`/`set`/`expire`, batch edge cases, health, close, errors.

use std::time::Duration;

use bytes::Bytes;
use cache_core::{CacheBackend, ErrorKind, HealthStatus, KeyTtl, SetMode, SetOptions};
use cache_redis::{RedisBackend, RedisConfig};
use cache_testkit::redis_server::RedisServer;

fn prefix(test: &str) -> String {
    format!("sem{:08x}:{test}", fastrand::u32(..))
}

async fn backend() -> RedisBackend {
    RedisBackend::from_url(RedisServer::shared().url())
        .await
        .unwrap()
}

fn v(bytes: &'static [u8]) -> Bytes {
    Bytes::from_static(bytes)
}

const MINUTE: Duration = Duration::from_secs(60);

fn expires_within(ttl: KeyTtl, max: Duration) -> bool {
    matches!(ttl, KeyTtl::Expires(d) if d <= max && d > max - Duration::from_secs(5))
}

/// `incr` answers exact 64-bit results: the script returns the stored
/// string, not INCRBY's reply, which Lua turns into a double (rounded
/// beyond 2^53). Found by the model test.
#[tokio::test]
async fn incr_answers_exact_64_bit_results() {
    let backend = backend().await;
    let key = format!("{}:big", prefix("incr64"));
    assert_eq!(backend.incr(&key, i64::MAX, None).await.unwrap(), i64::MAX);
    assert_eq!(backend.incr(&key, -1, None).await.unwrap(), i64::MAX - 1);
    assert_eq!(
        backend
            .incr(&key, -(1 << 53) - 1, Some(MINUTE))
            .await
            .unwrap(),
        i64::MAX - 1 - (1 << 53) - 1
    );
    backend.delete(&key).await.unwrap();
}

#[tokio::test]
async fn incr_sets_the_ttl_only_when_it_creates_the_key() {
    let b = backend().await;
    let p = prefix("incr");

    // Created: gets the TTL.
    let k = format!("{p}:created");
    assert_eq!(b.incr(&k, 5, Some(MINUTE)).await.unwrap(), 5);
    assert!(expires_within(b.ttl(&k).await.unwrap(), MINUTE));

    // Existing without TTL: stays persistent.
    let k = format!("{p}:persistent");
    b.set(&k, v(b"10"), SetOptions::default()).await.unwrap();
    assert_eq!(b.incr(&k, 1, Some(MINUTE)).await.unwrap(), 11);
    assert_eq!(b.ttl(&k).await.unwrap(), KeyTtl::Persistent);

    // Existing with a TTL: keeps it, not replaced by the new one.
    let k = format!("{p}:ttl");
    b.set(&k, v(b"1"), SetOptions::ttl(Some(MINUTE * 10)))
        .await
        .unwrap();
    assert_eq!(b.incr(&k, 1, Some(MINUTE)).await.unwrap(), 2);
    assert!(expires_within(b.ttl(&k).await.unwrap(), MINUTE * 10));

    // No TTL asked: a created key is persistent.
    let k = format!("{p}:none");
    assert_eq!(b.incr(&k, -3, None).await.unwrap(), -3);
    assert_eq!(b.ttl(&k).await.unwrap(), KeyTtl::Persistent);
    assert_eq!(b.get(&k).await.unwrap().as_deref(), Some(&b"-3"[..]));

    // A zero TTL stores nothing on a missing key, and leaves an existing
    // key's TTL alone.
    let k = format!("{p}:zero");
    assert_eq!(b.incr(&k, 7, Some(Duration::ZERO)).await.unwrap(), 7);
    assert!(!b.exists(&k).await.unwrap());
    b.set(&k, v(b"1"), SetOptions::default()).await.unwrap();
    assert_eq!(b.incr(&k, 1, Some(Duration::ZERO)).await.unwrap(), 2);
    assert_eq!(b.ttl(&k).await.unwrap(), KeyTtl::Persistent);

    // Errors leave the value alone.
    let k = format!("{p}:text");
    b.set(&k, v(b"abc"), SetOptions::default()).await.unwrap();
    let err = b.incr(&k, 1, None).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidValue, "{err:?}");
    assert_eq!(err.operation(), Some("incr"));
    let k = format!("{p}:max");
    b.set(&k, v(b"9223372036854775807"), SetOptions::default())
        .await
        .unwrap();
    let err = b.incr(&k, 1, None).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidValue, "{err:?}");
    assert_eq!(
        b.get(&k).await.unwrap().as_deref(),
        Some(&b"9223372036854775807"[..])
    );

    b.clear(&p).await.unwrap();
}

#[tokio::test]
async fn zero_ttls_store_nothing() {
    let b = backend().await;
    let p = prefix("zero");
    let k = format!("{p}:k");

    b.set(&k, v(b"old"), SetOptions::default()).await.unwrap();
    // IfAbsent with a zero TTL: stores nothing and removes nothing.
    let opts = SetOptions::ttl(Some(Duration::ZERO)).with_mode(SetMode::IfAbsent);
    assert!(!b.set(&k, v(b"new"), opts).await.unwrap());
    assert_eq!(b.get(&k).await.unwrap().as_deref(), Some(&b"old"[..]));
    assert!(!b.set(&format!("{p}:other"), v(b"new"), opts).await.unwrap());
    assert!(!b.exists(&format!("{p}:other")).await.unwrap());

    // set_many with a zero TTL removes the old values.
    b.set_many(&[(k.as_str(), v(b"x"))], Some(Duration::ZERO))
        .await
        .unwrap();
    assert!(!b.exists(&k).await.unwrap());

    // A TTL under a millisecond still stores (for a millisecond).
    assert!(b
        .set(
            &k,
            v(b"brief"),
            SetOptions::ttl(Some(Duration::from_micros(1)))
        )
        .await
        .unwrap());
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(!b.exists(&k).await.unwrap());
}

#[tokio::test]
async fn expire_reports_whether_the_key_exists() {
    let b = backend().await;
    let p = prefix("expire");
    let k = format!("{p}:k");
    // PERSIST alone would say 0 for a key without a TTL.
    b.set(&k, v(b"v"), SetOptions::default()).await.unwrap();
    assert!(b.expire(&k, None).await.unwrap());
    assert!(b.expire(&k, Some(MINUTE)).await.unwrap());
    assert!(expires_within(b.ttl(&k).await.unwrap(), MINUTE));
    assert!(b.expire(&k, None).await.unwrap());
    assert_eq!(b.ttl(&k).await.unwrap(), KeyTtl::Persistent);
    assert!(!b.expire(&format!("{p}:missing"), None).await.unwrap());
    assert!(b.expire(&k, Some(Duration::ZERO)).await.unwrap());
    assert!(!b.exists(&k).await.unwrap());
    assert!(!b.expire(&k, Some(Duration::ZERO)).await.unwrap());
}

#[tokio::test]
async fn empty_batches_need_no_round_trip() {
    let b = backend().await;
    b.close().await.unwrap();
    // Closed, so any round trip would fail.
    assert!(b.get_many(&[]).await.unwrap().is_empty());
    b.set_many(&[], None).await.unwrap();
    assert_eq!(b.delete_many(&[]).await.unwrap(), 0);
}

#[tokio::test]
async fn keys_and_patterns_are_checked() {
    let b = backend().await;
    let ok = format!("{}:ok", prefix("keys"));
    let ok = ok.as_str();
    let long = "k".repeat(cache_core::MAX_KEY_LEN + 1);
    for key in ["", long.as_str()] {
        let kinds = [
            b.get(key).await.unwrap_err().kind(),
            b.exists(key).await.unwrap_err().kind(),
            b.incr(key, 1, None).await.unwrap_err().kind(),
            b.get_many(&[ok, key]).await.unwrap_err().kind(),
            b.delete_many(&[ok, key]).await.unwrap_err().kind(),
            b.set_many(&[(ok, v(b"x")), (key, v(b"x"))], None)
                .await
                .unwrap_err()
                .kind(),
        ];
        assert!(
            kinds.iter().all(|k| *k == ErrorKind::InvalidKey),
            "{kinds:?}"
        );
    }
    assert!(
        !b.exists(ok).await.unwrap(),
        "a failed set_many wrote nothing"
    );
    assert_eq!(
        b.delete_matching("").await.unwrap_err().kind(),
        ErrorKind::InvalidKey
    );
    assert_eq!(b.clear("").await.unwrap_err().kind(), ErrorKind::InvalidKey);
}

#[tokio::test]
async fn a_key_of_another_type_is_a_backend_error() {
    let server = RedisServer::shared();
    let b = backend().await;
    let k = format!("{}:list", prefix("type"));
    server.cli(&["RPUSH", &k, "a"]);
    let err = b.get(&k).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Backend, "{err:?}");
    assert!(!err.is_retryable());
    assert!(b.delete(&k).await.unwrap());
}

#[tokio::test]
async fn health_reports_server_facts() {
    let b = backend().await;
    let health = b.health().await.unwrap();
    assert_eq!(health.status, HealthStatus::Healthy);
    for detail in [
        "redis_version",
        "used_memory",
        "connected_clients",
        "keyspace_hits",
        "keyspace_misses",
    ] {
        assert!(health.details.contains_key(detail), "{detail}: {health:?}");
    }
    assert!(health.latency < Duration::from_secs(1));
}

#[tokio::test]
async fn capabilities_are_truthful() {
    let caps = backend().await.capabilities();
    assert!(caps.shared && caps.evicts && caps.sub_second_ttl);
    assert!(caps.atomic_incr && caps.pattern_delete);
    assert_eq!(caps.max_key_len, cache_core::MAX_KEY_LEN);
    assert_eq!(caps.max_value_size, 512 * 1024 * 1024);
}

#[tokio::test]
async fn close_makes_calls_fail_with_closed() {
    let b = backend().await;
    let other = b.clone();
    b.close().await.unwrap();
    assert_eq!(b.get("k").await.unwrap_err().kind(), ErrorKind::Closed);
    // Clones share the connections.
    assert_eq!(other.get("k").await.unwrap_err().kind(), ErrorKind::Closed);
    assert_eq!(b.health().await.unwrap().status, HealthStatus::Unhealthy);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_connections_round_robin() {
    let config = RedisConfig::from_url(RedisServer::shared().url())
        .unwrap()
        .with_connections(3);
    let b = RedisBackend::connect(config).await.unwrap();
    assert!(format!("{b:?}").contains("connections: 3"), "{b:?}");
    let p = prefix("rr");
    let tasks: Vec<_> = (0..30)
        .map(|i| {
            let b = b.clone();
            let key = format!("{p}:{i}");
            tokio::spawn(async move {
                b.set(&key, Bytes::from(i.to_string()), SetOptions::default())
                    .await
                    .unwrap();
                b.get(&key).await.unwrap()
            })
        })
        .collect();
    for (i, task) in tasks.into_iter().enumerate() {
        assert_eq!(task.await.unwrap(), Some(Bytes::from(i.to_string())));
    }
    assert_eq!(b.clear(&p).await.unwrap(), 30);
}

#[tokio::test]
async fn the_url_selects_the_database() {
    let server = RedisServer::new();
    let b = RedisBackend::from_url(&format!("redis://127.0.0.1:{}/3", server.port()))
        .await
        .unwrap();
    b.set("db:k", v(b"in three"), SetOptions::default())
        .await
        .unwrap();
    assert_eq!(server.cli(&["-n", "3", "GET", "db:k"]), b"in three");
    assert_eq!(server.cli(&["GET", "db:k"]), b"");
}

#[tokio::test]
async fn bad_configuration_is_a_config_error() {
    for url in ["http://127.0.0.1", "redis://127.0.0.1/x", "nonsense"] {
        let err = RedisBackend::from_url(url).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config, "{url}: {err:?}");
    }
    let err = RedisBackend::connect(RedisConfig::default().with_connections(0))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
}
