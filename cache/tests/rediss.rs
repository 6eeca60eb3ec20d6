//! Redis over TLS, configured through `cache::open` and the `redis` keys
//! (`tls_ca_file`, `tls_cert_file`, `tls_key_file`) of `CacheConfig`, the
//! URL query and the `CACHE_REDIS_TLS_*` variables, against real
//! `redis-server`s started with a TLS port and throw-away certificates.
//!
//! It would fail if the CA file were not used (the test CA is in no system
//! store: the handshake would fail), if the client certificate were not
//! presented (`tls-auth-clients yes` closes the connection), if a server
//! signed by another CA were trusted, or if the cluster's nodes were dialed
//! without TLS (their TLS ports do not speak plain RESP).
#![cfg(feature = "tls")]

use std::sync::OnceLock;

use cache::{CacheConfig, CacheKey, ErrorKind};
use cache_testkit::redis_server::{RedisServer, TestCertificates, TlsAuthClients};

fn certs() -> &'static TestCertificates {
    static CERTS: OnceLock<TestCertificates> = OnceLock::new();
    CERTS.get_or_init(TestCertificates::generate)
}

/// A server that requires a client certificate signed by the test CA.
fn strict_server() -> &'static RedisServer {
    static SERVER: OnceLock<RedisServer> = OnceLock::new();
    SERVER.get_or_init(|| {
        RedisServer::builder()
            .tls(certs(), TlsAuthClients::Required)
            .spawn()
    })
}

fn prefix() -> String {
    format!("rediss{}", fastrand::u32(..))
}

/// Writes through the cache and reads the value back, then checks with
/// `redis-cli` on the plain port that it reached this server.
async fn round_trip(config: &CacheConfig, server: &RedisServer) {
    let cache = cache::open(config).await.expect("open over TLS");
    let key = CacheKey::new("tls", "k").unwrap();
    cache.set(&key, &"over tls").await.unwrap();
    assert_eq!(
        cache.get::<String>(&key).await.unwrap().as_deref(),
        Some("over tls")
    );
    let stored = server.cli(&["GET", &format!("{}:tls:k", config.prefix)]);
    assert_eq!(stored, b"\"over tls\"");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_with_ca_and_client_cert_from_json() {
    let server = strict_server();
    let json = serde_json::json!({
        "url": server.tls_url().unwrap(),
        "prefix": prefix(),
        "redis": {
            "tls_ca_file": certs().ca_file(),
            "tls_cert_file": certs().client_cert_file(),
            "tls_key_file": certs().client_key_file(),
        }
    });
    let config = CacheConfig::from_json(&json.to_string()).unwrap();
    round_trip(&config, server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_with_ca_and_client_cert_from_url_query() {
    let server = strict_server();
    let mut config = CacheConfig::from_url(format!(
        "{}?tls_ca_file={}&tls_cert_file={}&tls_key_file={}",
        server.tls_url().unwrap(),
        certs().ca_file().display(),
        certs().client_cert_file().display(),
        certs().client_key_file().display(),
    ));
    config.prefix = prefix();
    round_trip(&config, server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_with_ca_and_client_cert_from_env() {
    let server = strict_server();
    let path = |p: std::path::PathBuf| p.display().to_string();
    let config = CacheConfig::from_vars([
        ("CACHE_URL".to_owned(), server.tls_url().unwrap()),
        ("CACHE_PREFIX".to_owned(), prefix()),
        (
            "CACHE_REDIS_TLS_CA_FILE".to_owned(),
            path(certs().ca_file()),
        ),
        (
            "CACHE_REDIS_TLS_CERT_FILE".to_owned(),
            path(certs().client_cert_file()),
        ),
        (
            "CACHE_REDIS_TLS_KEY_FILE".to_owned(),
            path(certs().client_key_file()),
        ),
    ])
    .unwrap();
    round_trip(&config, server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_without_client_cert_is_refused_when_required() {
    let server = strict_server();
    let mut config = CacheConfig::from_url(server.tls_url().unwrap());
    config.redis.tls_ca_file = Some(certs().ca_file());
    config.redis.connect_timeout_ms = Some(1000);
    let err = cache::open(&config).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Connection, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_with_wrong_ca_fails_with_a_clear_connection_error() {
    let server = strict_server();
    let mut config = CacheConfig::from_url(server.tls_url().unwrap());
    config.redis.tls_ca_file = Some(certs().other_ca_file());
    config.redis.tls_cert_file = Some(certs().client_cert_file());
    config.redis.tls_key_file = Some(certs().client_key_file());
    config.redis.connect_timeout_ms = Some(1000);
    let err = cache::open(&config).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Connection, "{err}");
    let chain = error_chain(&err);
    eprintln!("wrong CA: {chain}");
    assert!(chain.contains("certificate"), "{chain}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_with_system_roots_does_not_trust_the_test_ca() {
    let server = strict_server();
    let mut config = CacheConfig::from_url(server.tls_url().unwrap());
    config.redis.connect_timeout_ms = Some(1000);
    let err = cache::open(&config).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Connection, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_optional_client_auth_needs_only_the_ca() {
    let server = RedisServer::builder()
        .tls(certs(), TlsAuthClients::Optional)
        .spawn();
    let mut config = CacheConfig::from_url(server.tls_url().unwrap());
    config.prefix = prefix();
    config.redis.tls_ca_file = Some(certs().ca_file());
    round_trip(&config, &server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_files_on_a_plain_url_are_a_config_error() {
    let server = strict_server();
    let mut config = CacheConfig::from_url(server.url());
    config.redis.tls_ca_file = Some(certs().ca_file());
    let err = cache::open(&config).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    assert!(err.to_string().contains("tls_ca_file"), "{err}");
}

/// The error's message and its sources', joined.
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

#[cfg(feature = "cluster")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_cluster_with_ca_through_config() {
    use cache_testkit::redis_cluster::RedisCluster;

    let cluster = RedisCluster::builder().replicas(0).tls(certs()).spawn();
    let json = serde_json::json!({
        "url": cluster.tls_url().unwrap(),
        "prefix": prefix(),
        "redis": { "tls_ca_file": certs().ca_file(), "pool_size": 2 }
    });
    let config = CacheConfig::from_json(&json.to_string()).unwrap();
    let cache = cache::open(&config)
        .await
        .expect("open the cluster over TLS");
    assert_eq!(cache.backend().name(), "redis");
    // Keys in many slots, so every primary is written to over TLS.
    let keys: Vec<CacheKey> = (0..30).map(|i| CacheKey::new("tls", i).unwrap()).collect();
    for (i, key) in keys.iter().enumerate() {
        cache.set(key, &i).await.unwrap();
    }
    for (i, key) in keys.iter().enumerate() {
        assert_eq!(cache.get::<usize>(key).await.unwrap(), Some(i));
    }
    let many = cache.get_many::<usize>(&keys).await.unwrap();
    assert_eq!(many, (0..30).map(Some).collect::<Vec<_>>());
    // They are on the nodes (read through the plain ports), spread over
    // all three primaries.
    let pattern = format!("{}:tls:*", config.prefix);
    let per_node: Vec<usize> = cluster
        .primaries()
        .into_iter()
        .map(|port| {
            let keys = cluster.cli(port, &["KEYS", &pattern]);
            String::from_utf8_lossy(&keys)
                .lines()
                .filter(|l| !l.is_empty())
                .count()
        })
        .collect();
    assert_eq!(per_node.iter().sum::<usize>(), 30, "{per_node:?}");
    assert!(per_node.iter().all(|n| *n > 0), "{per_node:?}");
}
