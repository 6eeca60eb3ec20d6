//! The backend next to other Redis clients: bytes as `redis-cli` sees them,
//! ACL users and passwords, and pattern deletes on many keys.

use std::collections::BTreeSet;
use std::time::Duration;

use bytes::Bytes;
use cache_core::{CacheBackend, ErrorKind, SetOptions};
use cache_redis::{RedisBackend, RedisConfig};
use cache_testkit::redis_server::RedisServer;

/// A key prefix no other test (or run) uses.
fn prefix(test: &str) -> String {
    format!("interop{:08x}-{test}", fastrand::u32(..))
}

async fn shared_backend() -> RedisBackend {
    let config = RedisConfig::from_url(RedisServer::shared().url())
        .unwrap()
        // Generous: the 100k-key test sends big batches on a busy machine.
        .with_response_timeout(Duration::from_secs(10));
    RedisBackend::connect(config).await.unwrap()
}

/// Every key matching `pattern`, as `redis-cli --scan` lists it.
fn cli_scan(server: &RedisServer, pattern: &str) -> BTreeSet<String> {
    let out = server.cli(&["--scan", "--pattern", pattern]);
    String::from_utf8(out)
        .unwrap()
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_read_back_byte_exact_with_redis_cli() {
    let server = RedisServer::shared();
    let backend = shared_backend().await;
    let p = prefix("bytes");
    let values: Vec<(&str, Vec<u8>)> = vec![
        ("text", b"hello".to_vec()),
        (
            "json",
            br#"{"id":42,"name":"Ada","tags":["a","b"],"none":null}"#.to_vec(),
        ),
        ("binary", vec![0, 1, 2, 0xff, 0xfe, b'\r', b'\n', 0, 0x7f]),
        ("unicode", "héllo wörld ✓ 日本".as_bytes().to_vec()),
        ("spaces", b"  leading and trailing  ".to_vec()),
        ("big", (0..=255u8).cycle().take(100_000).collect()),
    ];
    for (name, value) in &values {
        let key = format!("{p}:{name}");
        backend
            .set(&key, Bytes::from(value.clone()), SetOptions::default())
            .await
            .unwrap();
        assert_eq!(
            &server.cli(&["GET", &key]),
            value,
            "{name}: redis-cli GET must show the bytes as written"
        );
        assert_eq!(
            server.cli(&["STRLEN", &key]),
            value.len().to_string().into_bytes()
        );
    }

    // The other way round: what redis-cli writes, the backend reads.
    let key = format!("{p}:from-cli");
    server.cli(&["SET", &key, r#"{"written":"by redis-cli"}"#]);
    assert_eq!(
        backend.get(&key).await.unwrap().as_deref(),
        Some(&br#"{"written":"by redis-cli"}"#[..])
    );

    // TTLs are real Redis TTLs, in milliseconds.
    let key = format!("{p}:ttl");
    backend
        .set(
            &key,
            Bytes::from_static(b"x"),
            SetOptions::ttl(Some(Duration::from_millis(90_500))),
        )
        .await
        .unwrap();
    let pttl: u64 = String::from_utf8(server.cli(&["PTTL", &key]))
        .unwrap()
        .parse()
        .unwrap();
    assert!((89_000..=90_500).contains(&pttl), "PTTL {pttl}");

    // incr stores ASCII decimal, as INCRBY does.
    let key = format!("{p}:counter");
    backend.incr(&key, 41, None).await.unwrap();
    server.cli(&["INCR", &key]);
    assert_eq!(backend.incr(&key, 0, None).await.unwrap(), 42);
    assert_eq!(server.cli(&["GET", &key]), b"42");

    assert!(backend.clear(&p).await.unwrap() >= values.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_user_in_the_url_works_and_missing_credentials_fail_clearly() {
    let server = RedisServer::builder().requirepass("admin-pw").spawn();
    server.cli(&["ACL", "SETUSER", "alice", "on", ">alice-pw", "~*", "+@all"]);
    let port = server.port();

    // A user of its own, credentials in the URL.
    let alice = RedisBackend::from_url(&format!("redis://alice:alice-pw@127.0.0.1:{port}"))
        .await
        .unwrap();
    alice
        .set("acl:k", Bytes::from_static(b"v"), SetOptions::default())
        .await
        .unwrap();
    assert_eq!(
        alice.get("acl:k").await.unwrap().as_deref(),
        Some(&b"v"[..])
    );
    assert_eq!(server.cli(&["GET", "acl:k"]), b"v");
    alice.health().await.unwrap();

    // Credentials as separate fields, over a URL without them.
    let config = RedisConfig::from_url(&format!("redis://127.0.0.1:{port}"))
        .unwrap()
        .with_username("alice")
        .with_password("alice-pw");
    let by_fields = RedisBackend::connect(config).await.unwrap();
    assert_eq!(
        by_fields.get("acl:k").await.unwrap().as_deref(),
        Some(&b"v"[..])
    );

    // The default user, password only.
    let default_user = RedisBackend::from_url(&format!("redis://:admin-pw@127.0.0.1:{port}"))
        .await
        .unwrap();
    assert!(default_user.exists("acl:k").await.unwrap());

    // No credentials: a Connection error that says why, at connect time.
    let err = RedisBackend::from_url(&format!("redis://127.0.0.1:{port}"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Connection, "{err:?}");
    assert!(err.to_string().contains("authentication"), "{err}");
    assert!(std::error::Error::source(&err).is_some());

    // Wrong password.
    let url = format!("redis://alice:wrong@127.0.0.1:{port}");
    let err = RedisBackend::from_url(&url).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Connection, "{err:?}");
    assert!(err.to_string().contains("password"), "{err}");
    assert!(
        !err.to_string().contains("wrong"),
        "the password leaked: {err}"
    );
    assert!(
        !format!("{err:?}").contains(":wrong@"),
        "the password leaked: {err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_matching_on_100k_keys_removes_exactly_one_namespace() {
    const N: usize = 100_000;
    let server = RedisServer::shared();
    let backend = shared_backend().await;
    let p = prefix("many");
    let value = Bytes::from_static(b"v");

    // The namespace to delete, and neighbours that share its prefix or
    // look like it to a careless pattern.
    let target = format!("{p}:users:");
    let mut keep: Vec<String> = (0..1_000).map(|i| format!("{p}:userz:{i}")).collect();
    keep.extend((0..1_000).map(|i| format!("{p}:users-archive:{i}")));
    keep.extend((0..100).map(|i| format!("{p}:Users:{i}")));
    keep.push(format!("{p}:users")); // the namespace's name without ':'
    keep.push(format!("{p}:x:{p}:users:1")); // contains it, does not start with it

    let doomed: Vec<String> = (0..N).map(|i| format!("{target}{i}")).collect();
    for chunk in doomed.chunks(10_000).chain(keep.chunks(10_000)) {
        let items: Vec<(&str, Bytes)> = chunk.iter().map(|k| (k.as_str(), value.clone())).collect();
        backend
            .set_many(&items, Some(Duration::from_secs(600)))
            .await
            .unwrap();
    }
    assert_eq!(cli_scan(server, &format!("{p}*")).len(), N + keep.len());

    let removed = backend
        .delete_matching(&format!("{target}*"))
        .await
        .unwrap();
    assert_eq!(removed, N as u64);

    let left = cli_scan(server, &format!("{p}*"));
    let expected: BTreeSet<String> = keep.iter().cloned().collect();
    assert_eq!(left.len(), expected.len());
    assert!(
        left == expected,
        "SCAN afterwards must list exactly the other keys"
    );

    // clear is the same walk, for a literal namespace.
    assert_eq!(backend.clear(&format!("{p}:userz:")).await.unwrap(), 1_000);
    assert_eq!(cli_scan(server, &format!("{p}:userz:*")).len(), 0);
    assert_eq!(
        backend.clear(&p).await.unwrap(),
        (keep.len() - 1_000) as u64
    );
    assert!(cli_scan(server, &format!("{p}*")).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clear_treats_glob_characters_in_the_namespace_as_data() {
    let server = RedisServer::shared();
    let backend = shared_backend().await;
    let p = prefix("glob");
    let ns = format!("{p}:we*ird?[ns]\\:");
    let keys = [
        format!("{ns}1"),
        format!("{ns}2"),
        format!("{p}:weXirdY[ns]\\:3"), // what `*` and `?` would match
        format!("{p}:we*ird?n\\:4"),    // what `[ns]` would match
        format!("{p}:we*ird?[ns]:5"),   // no backslash
    ];
    for key in &keys {
        backend
            .set(key, Bytes::from_static(b"v"), SetOptions::default())
            .await
            .unwrap();
    }
    assert_eq!(backend.clear(&ns).await.unwrap(), 2);
    let left = cli_scan(server, &format!("{p}*"));
    let expected: BTreeSet<String> = keys[2..].iter().cloned().collect();
    assert_eq!(left, expected);
    assert_eq!(backend.clear(&p).await.unwrap(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_json_values_read_back_as_the_json_text_with_redis_cli() {
    use cache_core::{Cache, CacheKey, Ttl};
    use std::sync::Arc;

    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    struct Rate {
        base: String,
        quote: String,
        rate: f64,
        sources: Vec<String>,
    }

    let server = RedisServer::shared();
    let p = prefix("typed");
    let cache = Cache::builder(Arc::new(shared_backend().await))
        .prefix(p.clone())
        .build()
        .unwrap();
    let rate = Rate {
        base: "USD".into(),
        quote: "EUR".into(),
        rate: 0.92,
        sources: vec!["ecb".into(), "fed \"h.10\"".into()],
    };
    let key = CacheKey::new("rate", "USD:EUR").unwrap();
    cache
        .set_with_ttl(&key, &rate, Ttl::secs(60))
        .await
        .unwrap();

    // The id's ':' is escaped in the stored key; the value is the JSON text.
    let stored_key = format!("{p}:rate:USD%3AEUR");
    let raw = server.cli(&["GET", &stored_key]);
    assert_eq!(raw, serde_json::to_vec(&rate).unwrap());
    assert_eq!(
        String::from_utf8(raw).unwrap(),
        r#"{"base":"USD","quote":"EUR","rate":0.92,"sources":["ecb","fed \"h.10\""]}"#
    );
    // And a value another service wrote as JSON reads back typed.
    server.cli(&[
        "SET",
        &format!("{p}:rate:GBP"),
        r#"{"base":"GBP","quote":"EUR","rate":1.17,"sources":[]}"#,
    ]);
    let gbp: Rate = cache
        .get(&CacheKey::new("rate", "GBP").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(gbp.rate, 1.17);
    cache.clear().await.unwrap();
}
