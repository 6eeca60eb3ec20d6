//! A clear of a big keyspace through the production stack (L1 > fail-open >
//! timeout 250 ms > Redis) removes every key under the cache's prefix and
//! returns exactly how many, and nothing outside the prefix.
//!
//! The SCAN + UNLINK of hundreds of thousands of keys takes seconds, far
//! past the 250 ms per-call deadline: it completes only because `Timeout`
//! gives `clear` its own bulk deadline. It fails if the clear is cut at the
//! per-call deadline (fail-open then answers `Ok(0)` and the keys stay), if
//! a SCAN page is lost or counted twice, or if the clear reaches past the
//! prefix (`bulkx:…`, `other:…`).
//!
//! N is a million keys (13-21 s for the whole test on the project's busy
//! 2-core machine); `CACHE_BULK_KEYS=200000` runs a smaller one. The fill
//! and clear times are printed (`-- --nocapture`), never asserted.
#![cfg(all(feature = "redis", feature = "memory"))]

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::Instant;

use cache::{CacheConfig, CacheKey, Ttl};
use cache_testkit::redis_server::RedisServer;

const PREFIX: &str = "bulk";

/// How many values `Cache::set_many` writes through the stack (the rest go
/// straight to Redis through `redis-cli --pipe`, 10-20 times faster).
const STACK_KEYS: u64 = 10_000;

/// Keys per `set_many` call: well inside the 250 ms per-call deadline.
const BATCH: u64 = 500;

fn keys_wanted() -> u64 {
    match std::env::var("CACHE_BULK_KEYS") {
        Ok(n) => n.trim().parse().expect("CACHE_BULK_KEYS: a number of keys"),
        Err(_) => 1_000_000,
    }
}

/// The production stack, as the examples build it on a Redis URL.
fn config(url: &str) -> CacheConfig {
    CacheConfig::from_json(&format!(
        r#"{{
            "url": "{url}",
            "prefix": "{PREFIX}",
            "l1": {{ "max_entries": 10000, "max_ttl_secs": 60 }},
            "timeout_ms": 250,
            "fail_open": {{ "failure_threshold": 5, "cool_down_ms": 5000 }}
        }}"#
    ))
    .unwrap()
}

/// `SET {PREFIX}:item:{i} "v{i}"` for each `i` in `ids`, through
/// `redis-cli --pipe`: the key and the JSON bytes `Cache::set` would write.
fn pipe_fill(host: &str, port: u16, ids: std::ops::Range<u64>) {
    let mut protocol = Vec::with_capacity((ids.end - ids.start) as usize * 64);
    for i in ids.clone() {
        let key = format!("{PREFIX}:item:{i}");
        let value = format!("\"v{i}\"");
        write!(
            protocol,
            "*3\r\n$3\r\nSET\r\n${}\r\n{key}\r\n${}\r\n{value}\r\n",
            key.len(),
            value.len()
        )
        .unwrap();
    }
    let mut child = Command::new("redis-cli")
        .args(["-h", host, "-p", &port.to_string(), "--pipe"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("redis-cli (apt-get install redis-tools)");
    child.stdin.take().unwrap().write_all(&protocol).unwrap();
    let output = child.wait_with_output().unwrap();
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "redis-cli --pipe: {report}");
    let expected = format!("errors: 0, replies: {}", ids.end - ids.start);
    assert!(report.contains(&expected), "redis-cli --pipe: {report}");
}

/// The keys that are not values written by the fill, for failure messages.
fn not_items(server: &RedisServer) -> String {
    let all = server.cli(&["--scan", "--pattern", "*"]);
    let all = String::from_utf8_lossy(&all);
    let rest: Vec<&str> = all
        .lines()
        .filter(|k| !k.starts_with(&format!("{PREFIX}:item:")))
        .collect();
    format!("keys besides the values: {rest:?}")
}

fn dbsize(server: &RedisServer) -> u64 {
    let out = server.cli(&["DBSIZE"]);
    String::from_utf8(out).unwrap().trim().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_clear_through_the_production_stack_removes_every_key_under_the_prefix() {
    let n = keys_wanted();
    assert!(n >= STACK_KEYS, "CACHE_BULK_KEYS: at least {STACK_KEYS}");
    let server = RedisServer::new();
    let cache = cache::open(&config(server.url())).await.unwrap();

    // Outside the namespace: a prefix that starts the same, and another.
    server.cli(&["SET", "bulkx:item:1", "\"kept\""]);
    server.cli(&["SET", "other:item:1", "\"kept\""]);
    // The bookkeeping keys this cache writes: a generation key per category
    // it uses, `bulk:#gen:item` ("0", stored on the first use of `item`,
    // below) and `bulk:#gen:bumped` ("1", a bump).
    assert_eq!(cache.invalidate_category("bumped").await.unwrap(), 1);

    let started = Instant::now();
    for start in (0..STACK_KEYS).step_by(BATCH as usize) {
        let items: Vec<(CacheKey, String)> = (start..start + BATCH)
            .map(|i| (CacheKey::new("item", i).unwrap(), format!("v{i}")))
            .collect();
        cache.set_many(&items, Ttl::Default).await.unwrap();
    }
    let stack_fill = started.elapsed();
    let started = Instant::now();
    let (host, port) = (server.host().to_owned(), server.port());
    tokio::task::spawn_blocking(move || pipe_fill(&host, port, STACK_KEYS..n))
        .await
        .unwrap();
    let pipe_fill = started.elapsed();

    // N values, the two generation keys, the two keys outside the prefix: a
    // set_many skipped by fail-open (a batch past 250 ms) shows here.
    assert_eq!(dbsize(&server), n + 2 + 2, "{}", not_items(&server));
    let first = CacheKey::new("item", 0).unwrap();
    let last = CacheKey::new("item", n - 1).unwrap();
    assert_eq!(
        cache.get::<String>(&first).await.unwrap(),
        Some("v0".into())
    );
    let last_value = format!("v{}", n - 1);
    assert_eq!(cache.get::<String>(&last).await.unwrap(), Some(last_value));

    let started = Instant::now();
    let removed = cache.clear().await.unwrap();
    let clear = started.elapsed();
    println!(
        "BULK CLEAR FIGURES: N={n} keys (+2 generation keys); fill: {STACK_KEYS} via set_many \
         in {:.2?} ({:.0} keys/s), {} via redis-cli --pipe in {:.2?} ({:.0} keys/s); \
         clear returned {removed} in {clear:.2?} ({:.0} keys/s)",
        stack_fill,
        STACK_KEYS as f64 / stack_fill.as_secs_f64(),
        n - STACK_KEYS,
        pipe_fill,
        (n - STACK_KEYS) as f64 / pipe_fill.as_secs_f64(),
        removed as f64 / clear.as_secs_f64(),
    );

    assert_eq!(removed, n + 2, "every value and both generation keys");
    assert_eq!(dbsize(&server), 2, "only the keys outside the prefix");
    let left = server.cli(&["--scan", "--pattern", &format!("{PREFIX}:*")]);
    assert_eq!(String::from_utf8_lossy(&left), "");
    assert_eq!(server.cli(&["GET", "bulkx:item:1"]), b"\"kept\"");
    assert_eq!(server.cli(&["GET", "other:item:1"]), b"\"kept\"");
    // The L1 copies went too.
    assert_eq!(cache.get::<String>(&first).await.unwrap(), None);
}
