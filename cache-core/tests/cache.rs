//! The typed `Cache` over a real memory backend (and a mock, for errors).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cache_core::{Cache, CacheBackend, CacheKey, CategoryTtl, ErrorKind, KeyTtl, SetOptions, Ttl};
use cache_memory::MemoryBackend;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct User {
    id: u64,
    name: String,
}

fn memory() -> Arc<dyn CacheBackend> {
    Arc::new(MemoryBackend::new())
}

/// A cache with the prefix `app` over a memory backend, and the backend
/// itself, to read and write the full keys (`app:{category}:{id}`) directly.
fn app_cache() -> (Arc<dyn CacheBackend>, Cache) {
    let backend = memory();
    let cache = Cache::builder(Arc::clone(&backend))
        .prefix("app")
        .build()
        .unwrap();
    (backend, cache)
}

fn key(category: &str, id: impl std::fmt::Display) -> CacheKey {
    CacheKey::new(category, id).unwrap()
}

fn user(id: u64, name: &str) -> User {
    User {
        id,
        name: name.into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_flight_1000_concurrent_callers_run_the_loader_once() {
    let cache = Cache::new(memory());
    let calls = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..1000 {
        let cache = cache.clone();
        let calls = Arc::clone(&calls);
        tasks.push(tokio::spawn(async move {
            cache
                .get_or_set(&key("user", 7), || async move {
                    calls.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    Ok::<_, std::io::Error>(user(7, "Ada"))
                })
                .await
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), user(7, "Ada"));
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let stats = cache.stats();
    assert_eq!(stats.loader_calls, 1);
    assert_eq!(stats.hits + stats.misses + stats.coalesced, 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_flight_loader_error_reaches_every_waiter_and_is_not_cached() {
    let cache = Cache::new(memory());
    let calls = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let cache = cache.clone();
        let calls = Arc::clone(&calls);
        tasks.push(tokio::spawn(async move {
            cache
                .get_or_set(&key("user", 1), || async move {
                    calls.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    Err::<User, _>(std::io::Error::other("database down"))
                })
                .await
        }));
    }
    for t in tasks {
        let err = t.await.unwrap().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Loader);
        let source = std::error::Error::source(&err).unwrap();
        assert_eq!(source.to_string(), "database down");
        // The cause is in the message too: logs that print only `Display`
        // still say why.
        assert_eq!(
            err.to_string(),
            "loader in get_or_set: the get_or_set loader failed: database down"
        );
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(cache.stats().loader_errors, 1);
    assert_eq!(cache.get::<User>(&key("user", 1)).await.unwrap(), None);
    // The next call loads again.
    let loaded = cache
        .get_or_set(&key("user", 1), || async {
            Ok::<_, std::io::Error>(user(1, "B"))
        })
        .await
        .unwrap();
    assert_eq!(loaded.name, "B");
    assert_eq!(cache.stats().loader_calls, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_flight_cancelled_caller_does_not_cancel_the_load() {
    let cache = Cache::new(memory());
    let calls = Arc::new(AtomicUsize::new(0));
    let call = |cache: Cache, calls: Arc<AtomicUsize>| async move {
        cache
            .get_or_set(&key("k", 1), move || async move {
                calls.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(200)).await;
                Ok::<_, std::io::Error>(42u32)
            })
            .await
    };
    let first = tokio::spawn(call(cache.clone(), Arc::clone(&calls)));
    tokio::time::sleep(Duration::from_millis(50)).await;
    let second = tokio::spawn(call(cache.clone(), Arc::clone(&calls)));
    tokio::time::sleep(Duration::from_millis(50)).await;
    first.abort();
    let value = tokio::time::timeout(Duration::from_secs(5), second)
        .await
        .expect("the second caller gets the load's result")
        .unwrap()
        .unwrap();
    assert_eq!(value, 42);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    // The load stored its value although its first caller went away.
    assert_eq!(cache.get::<u32>(&key("k", 1)).await.unwrap(), Some(42));
}

#[tokio::test]
async fn bad_keys_are_invalid_key_errors() {
    for (category, id) in [
        ("user", String::new()),
        ("user", "x".repeat(10 * 1024)),
        ("user", "line\nbreak".to_string()),
        ("user", "nul\0".to_string()),
        ("", "1".to_string()),
        ("bad category", "1".to_string()),
    ] {
        let err = CacheKey::new(category, &id).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidKey, "{category:?}");
    }
    let err = Cache::builder(memory())
        .prefix("has space")
        .build()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidKey);
    // Valid parts that are too long together.
    let cache = Cache::builder(memory())
        .prefix("p".repeat(64))
        .build()
        .unwrap();
    let err = cache
        .get::<u32>(&key("user", "x".repeat(1000)))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidKey);
}

#[tokio::test]
async fn unencodable_value_is_a_codec_error_and_writes_nothing() {
    let cache = Cache::new(memory());
    let mut bad = HashMap::new();
    bad.insert(vec![1u8, 2], "map keys must be strings in JSON");
    let err = cache.set(&key("bad", 1), &bad).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Codec);
    assert!(!cache.exists(&key("bad", 1)).await.unwrap());
    assert_eq!(cache.stats().errors, 1);
}

#[tokio::test]
async fn undecodable_bytes_are_reported_and_reloaded_by_get_or_set() {
    let (backend, cache) = app_cache();
    backend
        .set("app:user:1", "\u{1}not json".into(), SetOptions::default())
        .await
        .unwrap();
    backend
        .set(
            "app:user:2",
            r#"{"id":"wrong type"}"#.into(),
            SetOptions::default(),
        )
        .await
        .unwrap();
    for id in [1, 2] {
        let err = cache.get::<User>(&key("user", id)).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Codec);
    }
    assert_eq!(cache.stats().decode_errors, 2);
    let loaded = cache
        .get_or_set(&key("user", 1), || async {
            Ok::<_, std::io::Error>(user(1, "new"))
        })
        .await
        .unwrap();
    assert_eq!(loaded.name, "new");
    assert_eq!(
        cache.get::<User>(&key("user", 1)).await.unwrap(),
        Some(loaded)
    );
    // Another type's bytes never decode into this type.
    cache.set(&key("n", 1), &5u32).await.unwrap();
    assert!(cache.get::<User>(&key("n", 1)).await.is_err());
}

#[tokio::test]
async fn cached_empty_values_are_hits() {
    let cache = Cache::new(memory());
    cache
        .set(&key("opt", 1), &Option::<u32>::None)
        .await
        .unwrap();
    cache.set(&key("vec", 1), &Vec::<u32>::new()).await.unwrap();
    cache.set(&key("str", 1), "").await.unwrap();
    assert_eq!(
        cache.get::<Option<u32>>(&key("opt", 1)).await.unwrap(),
        Some(None)
    );
    assert_eq!(
        cache.get::<Vec<u32>>(&key("vec", 1)).await.unwrap(),
        Some(vec![])
    );
    assert_eq!(
        cache.get::<String>(&key("str", 1)).await.unwrap(),
        Some(String::new())
    );
    assert_eq!(cache.stats().hits, 3);
    let value: Option<u32> = cache
        .get_or_set(&key("opt", 1), || async {
            Ok::<_, std::io::Error>(Some(9))
        })
        .await
        .unwrap();
    assert_eq!(
        value, None,
        "the cached None is a hit; the loader must not run"
    );
    assert_eq!(cache.stats().loader_calls, 0);
}

#[tokio::test]
async fn json_bytes_are_exactly_the_json_text() {
    let (backend, cache) = app_cache();
    cache.set(&key("user", 1), &user(1, "Ada")).await.unwrap();
    let raw = backend.get("app:user:1").await.unwrap().unwrap();
    assert_eq!(&raw[..], br#"{"id":1,"name":"Ada"}"#);
}

#[tokio::test]
async fn ttl_policy_by_category_and_zero_ttl() {
    let backend = memory();
    let policy = CategoryTtl::new(Some(Duration::from_secs(60)))
        .with_category("rates", Some(Duration::from_secs(300)))
        .with_category("config", None);
    let cache = Cache::builder(Arc::clone(&backend))
        .prefix("app")
        .ttl_policy(policy)
        .build()
        .unwrap();
    cache.set(&key("rates", "usd"), &1.1).await.unwrap();
    cache.set(&key("config", "x"), &1).await.unwrap();
    cache.set(&key("other", "x"), &1).await.unwrap();
    let secs = |t: KeyTtl| match t {
        KeyTtl::Expires(d) => d.as_secs_f64().round() as u64,
        other => panic!("{other:?}"),
    };
    assert_eq!(secs(backend.ttl("app:rates:usd").await.unwrap()), 300);
    assert_eq!(
        backend.ttl("app:config:x").await.unwrap(),
        KeyTtl::Persistent
    );
    assert_eq!(secs(backend.ttl("app:other:x").await.unwrap()), 60);
    // Zero TTL: not stored, and the old value is gone.
    cache
        .set_with_ttl(&key("other", "x"), &2, Ttl::After(Duration::ZERO))
        .await
        .unwrap();
    assert_eq!(cache.get::<i32>(&key("other", "x")).await.unwrap(), None);
    cache
        .set_with_ttl(&key("other", "y"), &2, Ttl::from_signed_secs(-1))
        .await
        .unwrap();
    assert_eq!(cache.get::<i32>(&key("other", "y")).await.unwrap(), None);
    // Sub-second TTLs.
    cache
        .set_with_ttl(&key("other", "z"), &3, Ttl::millis(80))
        .await
        .unwrap();
    assert_eq!(cache.get::<i32>(&key("other", "z")).await.unwrap(), Some(3));
    tokio::time::sleep(Duration::from_millis(120)).await;
    assert_eq!(cache.get::<i32>(&key("other", "z")).await.unwrap(), None);
}

#[tokio::test]
async fn category_invalidation_is_a_generation_bump() {
    let backend = memory();
    let build = || {
        Cache::builder(Arc::clone(&backend))
            .prefix("app")
            .generation_refresh(Duration::ZERO)
            .build()
            .unwrap()
    };
    let (a, b) = (build(), build());
    for i in 0..100 {
        a.set(&key("user", i), &i).await.unwrap();
    }
    a.set(&key("order", 1), &1).await.unwrap();
    assert_eq!(a.invalidate_category("user").await.unwrap(), 1);
    for i in 0..100 {
        assert_eq!(a.get::<i32>(&key("user", i)).await.unwrap(), None);
        assert_eq!(b.get::<i32>(&key("user", i)).await.unwrap(), None);
    }
    assert_eq!(b.get::<i32>(&key("order", 1)).await.unwrap(), Some(1));
    // New writes land in the new generation and are visible to both.
    b.set(&key("user", 1), &11).await.unwrap();
    assert_eq!(a.get::<i32>(&key("user", 1)).await.unwrap(), Some(11));
    assert_eq!(a.full_key(&key("user", 1)).await.unwrap(), "app:user#1:1");
    // A lost generation key never sends the category back to old data.
    backend.delete("app:#gen:user").await.unwrap();
    assert_eq!(a.get::<i32>(&key("user", 1)).await.unwrap(), Some(11));
    assert_eq!(a.invalidate_category("user").await.unwrap(), 2);
}

#[tokio::test]
async fn pattern_invalidation_treats_ids_as_data() {
    let cache = Cache::new(memory());
    for id in ["order:1", "order:2", "order:10", "order*", "other"] {
        cache.set(&key("o", id), &1).await.unwrap();
    }
    let versioned = CacheKey::new("o", "order:3").unwrap().with_version(2);
    cache.set(&versioned, &1).await.unwrap();
    cache.set(&key("p", "order:1"), &1).await.unwrap();
    // `\*` is a literal star: only the id "order*" goes.
    assert_eq!(cache.invalidate_matching("o", r"order\*").await.unwrap(), 1);
    assert_eq!(cache.invalidate_matching("o", "order:?").await.unwrap(), 3);
    assert!(!cache.exists(&versioned).await.unwrap());
    assert!(cache.exists(&key("o", "order:10")).await.unwrap());
    assert!(cache.exists(&key("o", "other")).await.unwrap());
    assert!(cache.exists(&key("p", "order:1")).await.unwrap());
    let err = cache.invalidate_matching("o", "[:]").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidKey);
}

#[tokio::test]
async fn clear_removes_only_this_prefix() {
    let backend = memory();
    let a = Cache::builder(Arc::clone(&backend))
        .prefix("a")
        .build()
        .unwrap();
    let ab = Cache::builder(Arc::clone(&backend))
        .prefix("ab")
        .build()
        .unwrap();
    for i in 0..10 {
        a.set(&key("k", i), &i).await.unwrap();
        ab.set(&key("k", i), &i).await.unwrap();
    }
    // The 10 values and the category's generation key.
    assert_eq!(a.clear().await.unwrap(), 11);
    assert_eq!(ab.get::<i32>(&key("k", 3)).await.unwrap(), Some(3));
    assert_eq!(a.get::<i32>(&key("k", 3)).await.unwrap(), None);
}

#[tokio::test]
async fn batches_and_counters() {
    let cache = Cache::new(memory());
    let items: Vec<(CacheKey, u32)> = (0..10).map(|i| (key("n", i), i)).collect();
    cache.set_many(&items, Ttl::secs(60)).await.unwrap();
    let keys = [key("n", 3), key("n", 99), key("n", 0)];
    assert_eq!(
        cache.get_many::<u32>(&keys).await.unwrap(),
        vec![Some(3), None, Some(0)]
    );
    assert!(cache.delete(&key("n", 3)).await.unwrap());
    assert!(!cache.delete(&key("n", 3)).await.unwrap());
    assert_eq!(cache.incr(&key("hits", "page"), 2).await.unwrap(), 2);
    assert_eq!(cache.incr(&key("hits", "page"), 3).await.unwrap(), 5);
    assert_eq!(
        cache.get::<i64>(&key("hits", "page")).await.unwrap(),
        Some(5)
    );
    let stats = cache.stats();
    assert_eq!(
        (stats.hits, stats.misses, stats.sets, stats.deletes),
        (3, 1, 10, 1)
    );
    assert!((stats.hit_rate() - 0.75).abs() < 1e-9);
}

#[tokio::test]
async fn close_stops_the_cache() {
    let cache = Cache::new(memory());
    cache.set(&key("k", 1), &1).await.unwrap();
    cache.close().await.unwrap();
    let err = cache.get::<i32>(&key("k", 1)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Closed);
    cache.close().await.unwrap();
}

#[tokio::test]
async fn backend_errors_reach_the_caller_and_are_counted() {
    use cache_core::Error;
    use cache_testkit::MockBackend;

    let mut mock = MockBackend::new();
    mock.expect_get()
        .returning(|_| Err(Error::new(ErrorKind::Connection, "refused")));
    let cache = Cache::new(Arc::new(mock));
    let err = cache.get::<u32>(&key("k", 1)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Connection);
    assert!(err.is_retryable());
    let err = cache
        .get_or_set(&key("k", 1), || async { Ok::<_, std::io::Error>(1u32) })
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Connection);
    assert_eq!(cache.stats().errors, 2);
    assert_eq!(cache.stats().loader_calls, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_flight_a_retry_after_a_failed_load_runs_the_loader_again() {
    let cache = Cache::new(memory());
    let calls = Arc::new(AtomicUsize::new(0));
    // Back-to-back retries: each must run the loader, none may be handed the
    // previous call's error.
    for attempt in 0..200 {
        let counter = Arc::clone(&calls);
        let result = cache
            .get_or_set(&key("flaky", 1), move || async move {
                counter.fetch_add(1, Ordering::SeqCst);
                Err::<u32, _>(std::io::Error::other("down"))
            })
            .await;
        assert_eq!(result.unwrap_err().kind(), ErrorKind::Loader);
        assert_eq!(calls.load(Ordering::SeqCst), attempt + 1);
    }
}

/// A codec whose output starts with the fail-safe envelope's marker bytes.
struct MarkerLike;

impl cache_core::Codec for MarkerLike {
    fn name(&self) -> &'static str {
        "marker-like"
    }

    fn encode<T: Serialize + ?Sized>(&self, value: &T) -> cache_core::Result<bytes::Bytes> {
        let mut out = vec![0xFF, b'C', b'E', 1];
        out.extend(serde_json::to_vec(value).unwrap());
        Ok(out.into())
    }

    fn decode<T: serde::de::DeserializeOwned>(&self, bytes: &[u8]) -> cache_core::Result<T> {
        serde_json::from_slice(&bytes[4..]).map_err(|e| {
            cache_core::Error::new(ErrorKind::Codec, "marker-like decode").with_source(e)
        })
    }
}

/// Without fail-safe or refresh-ahead the cache writes no envelope, so it
/// never looks for one: bytes that happen to start like an envelope are the
/// codec's, whole.
#[tokio::test]
async fn codec_output_that_looks_like_an_envelope_is_not_unwrapped_without_fail_safe() {
    let cache = Cache::builder(memory()).codec(MarkerLike).build().unwrap();
    let k = key("doc", 1);
    let value = "a value long enough to cover the envelope's header".to_string();
    cache.set(&k, &value).await.unwrap();
    assert_eq!(cache.get::<String>(&k).await.unwrap(), Some(value.clone()));
    assert_eq!(
        cache
            .get_many::<String>(std::slice::from_ref(&k))
            .await
            .unwrap(),
        vec![Some(value.clone())]
    );
    let loaded: String = cache
        .get_or_set(&k, || async {
            Ok::<_, std::io::Error>("loaded".to_string())
        })
        .await
        .unwrap();
    assert_eq!(loaded, value, "a hit, not a reload");
    assert_eq!(cache.stats().decode_errors, 0);
}

/// Two instances over one backend agree on a category's generation again
/// within the refresh interval after the stored generation is lost, by a
/// `clear()` or by eviction: the instance that knew a higher generation
/// raises the stored one, and the instance that re-created it is on
/// probation (reads it every call) meanwhile.
#[tokio::test]
async fn generations_converge_after_clear_or_eviction() {
    let refresh = Duration::from_millis(300);
    let backend = memory();
    let open = || {
        Cache::builder(backend.clone())
            .prefix("app")
            .generation_refresh(refresh)
            .build()
            .unwrap()
    };
    for lose in ["clear", "evict"] {
        let a = open();
        for _ in 0..5 {
            a.invalidate_category("user").await.unwrap();
        }
        let k = key("user", 1);
        a.set(&k, &"a1".to_string()).await.unwrap();
        // `a` will read the stored generation again on its next call.
        tokio::time::sleep(refresh + Duration::from_millis(50)).await;
        match lose {
            "clear" => {
                a.clear().await.unwrap();
            }
            _ => {
                backend.delete("app:#gen:user").await.unwrap();
            }
        }
        // A fresh instance finds no stored generation and starts at 0,
        // while `a` still uses 5 from its cache.
        let b = open();
        b.set(&k, &"b1".to_string()).await.unwrap();
        // `a` finds the stored generation went back and raises it; `b`,
        // which created it a moment ago, trusts it for 50 ms only, then
        // reads it again and follows (well within the 300 ms refresh).
        a.full_key(&k).await.unwrap();
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(
            a.full_key(&k).await.unwrap(),
            b.full_key(&k).await.unwrap(),
            "{lose}: the instances render one key again"
        );
        a.set(&k, &"a2".to_string()).await.unwrap();
        assert_eq!(
            b.get::<String>(&k).await.unwrap().as_deref(),
            Some("a2"),
            "{lose}"
        );
        b.set(&k, &"b2".to_string()).await.unwrap();
        assert_eq!(
            a.get::<String>(&k).await.unwrap().as_deref(),
            Some("b2"),
            "{lose}"
        );
        // Never back to a generation whose keys were written before.
        assert_eq!(a.full_key(&k).await.unwrap(), "app:user#5:1", "{lose}");
        a.clear().await.unwrap();
    }
}

/// A slow backend (20 ms a call) whose calls are counted, a cache over it
/// holding "Ada" under `user:1`, and the time for its trust in the
/// category's generation to run out (`refresh`) waited.
async fn past_generation_trust(
    refresh: Duration,
) -> (
    Cache,
    Arc<cache_core::layers::Metered<cache_testkit::FaultInjecting<MemoryBackend>>>,
    CacheKey,
) {
    use cache_testkit::{FaultConfig, FaultInjecting};

    let slow = FaultConfig::none().with_latency(Duration::from_millis(20));
    let metered = Arc::new(cache_core::layers::Metered::new(FaultInjecting::new(
        MemoryBackend::new(),
        slow,
    )));
    let cache = Cache::builder(Arc::clone(&metered) as Arc<dyn CacheBackend>)
        .generation_refresh(refresh)
        .build()
        .unwrap();
    let k = key("user", 1);
    cache.set(&k, &"Ada".to_string()).await.unwrap();
    tokio::time::sleep(refresh + Duration::from_millis(50)).await;
    (cache, metered, k)
}

/// The backend GETs `metered` has answered.
fn gets(
    metered: &cache_core::layers::Metered<cache_testkit::FaultInjecting<MemoryBackend>>,
) -> u64 {
    metered.snapshot()["get"].calls
}

/// A read of a cache, boxed.
type Read<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = cache_core::Result<Option<String>>> + 'a>>;

/// Two reads of `k` started (each polled once, neither done): the first
/// reads the generation, the second waits for that read.
async fn two_reads_started<'a>(cache: &'a Cache, k: &'a CacheKey) -> (Read<'a>, Read<'a>) {
    let mut first: Read<'a> = Box::pin(cache.get::<String>(k));
    let mut second: Read<'a> = Box::pin(cache.get::<String>(k));
    std::future::poll_fn(|cx| {
        assert!(first.as_mut().poll(cx).is_pending());
        assert!(second.as_mut().poll(cx).is_pending());
        std::task::Poll::Ready(())
    })
    .await;
    (first, second)
}

/// The reads of one category whose trust in its generation ran out
/// together read the generation once: the first reads it, the others wait
/// for that read (not one read of the generation key each, a burst on one
/// hot key every refresh interval). With a refresh of 0 every read still
/// reads it itself: a read must see the bumps made before it started.
#[tokio::test]
async fn reads_whose_generation_trust_ran_out_together_share_one_read_of_it() {
    for (refresh, generation_reads) in [(Duration::from_millis(100), 1), (Duration::ZERO, 20)] {
        let (cache, metered, k) = past_generation_trust(refresh).await;
        let before = gets(&metered);
        let reads = (0..20).map(|_| cache.get::<String>(&k));
        for read in futures_util::future::join_all(reads).await {
            assert_eq!(read.unwrap().as_deref(), Some("Ada"));
        }
        // 20 reads of the value, and the generation's.
        assert_eq!(
            gets(&metered) - before,
            20 + generation_reads,
            "refresh {refresh:?}"
        );
    }
}

/// A read that waits for another call's read of the generation does not
/// hang or fail when that call is dropped midway: the read is shared, and
/// the waiter, polled, drives it on from where it was.
#[tokio::test]
async fn a_read_waiting_for_a_dropped_generation_read_is_answered() {
    let (cache, metered, k) = past_generation_trust(Duration::from_millis(100)).await;
    let before = gets(&metered);
    let (leader, waiter) = two_reads_started(&cache, &k).await;
    drop(leader);
    let read = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("the waiter is not left waiting");
    assert_eq!(read.unwrap().as_deref(), Some("Ada"));
    // The read of the generation, and the waiter's read of its value.
    assert_eq!(gets(&metered) - before, 2);
}

/// Nor when that call is kept but no longer polled (a future raced and
/// put aside): the waiting call drives the shared read itself.
#[tokio::test]
async fn a_read_waiting_for_a_generation_read_whose_caller_stopped_polling_is_answered() {
    let (cache, metered, k) = past_generation_trust(Duration::from_millis(100)).await;
    let before = gets(&metered);
    let (parked, waiter) = two_reads_started(&cache, &k).await;
    let read = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("the waiter is answered though the first caller is not polled");
    assert_eq!(read.unwrap().as_deref(), Some("Ada"));
    // One read of the generation, and the waiter's read of its value.
    assert_eq!(gets(&metered) - before, 2);
    drop(parked);
}

/// Polls `future` with a waker that does nothing until it is ready, at
/// most 100,000 times (a read of memory is ready at once; a read waiting
/// for a task nobody runs never is).
fn poll_until_ready<F: std::future::Future>(future: F) -> Option<F::Output> {
    use std::task::{Context, Poll, Waker};

    let mut future = std::pin::pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    (0..100_000).find_map(|_| match future.as_mut().poll(&mut cx) {
        Poll::Ready(output) => Some(output),
        Poll::Pending => None,
    })
}

/// A value stored, its generation's trust run out, and read again, each
/// call polled by [`poll_until_ready`] (no executor drives anything).
fn read_past_generation_trust_by_polling() {
    let cache = Cache::builder(memory())
        .generation_refresh(Duration::from_millis(1))
        .build()
        .unwrap();
    let k = key("user", 1);
    poll_until_ready(cache.set(&k, &"Ada".to_string()))
        .unwrap()
        .unwrap();
    std::thread::sleep(Duration::from_millis(60));
    let read = poll_until_ready(cache.get::<String>(&k)).expect("the read is ready");
    assert_eq!(read.unwrap().as_deref(), Some("Ada"));
}

/// Outside a tokio runtime (another executor) the call reads the
/// generation itself.
#[test]
fn a_generation_is_read_without_a_runtime_too() {
    read_past_generation_trust_by_polling();
}

/// Nor does it need a runtime that is driven: in a current-thread
/// runtime's context (entered, as a synchronous function called from a
/// task is), a caller that blocks on a read of memory gets its answer,
/// with no task left for the blocked runtime to run.
#[test]
fn a_generation_is_read_in_a_runtime_nobody_drives() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let _entered = runtime.enter();
    read_past_generation_trust_by_polling();
}

/// A decode error's `Display` alone says what did not fit (the codec's
/// reason), so a log line that prints only `Display` is enough to act on.
#[tokio::test]
async fn a_decode_errors_display_carries_the_codecs_reason() {
    let (backend, cache) = app_cache();
    backend
        .set(
            "app:user:2",
            r#"{"id":"two"}"#.into(),
            SetOptions::default(),
        )
        .await
        .unwrap();
    let err = cache.get::<User>(&key("user", 2)).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "codec in decode: json decode failed: invalid type: string \"…\", expected u64 at line 1 column 11"
    );
    // Nor in `Debug` (what `unwrap` prints); the source itself has it.
    let debug = format!("{err:?}");
    assert!(
        debug.contains(r#"source: "invalid type: string \"…\""#),
        "{debug}"
    );
    let source = std::error::Error::source(&err).unwrap();
    assert_eq!(
        source.to_string(),
        "invalid type: string \"two\", expected u64 at line 1 column 11"
    );
}

/// What the `# Errors` docs of `get`, `set` and `get_or_set` promise for
/// the caller's mistakes: a full key over `MAX_KEY_LEN` (a `CacheKey`
/// accepts an id of that length by itself) is `InvalidKey` and the loader
/// does not run; a value over the backend's size limit is `InvalidValue`
/// for `set`, and `get_or_set` returns the loaded value without storing it.
#[tokio::test]
async fn the_documented_errors_of_the_callers_mistakes() {
    let backend: Arc<dyn CacheBackend> = Arc::new(MemoryBackend::with_config(
        cache_memory::MemoryConfig::default().with_max_value_size(16),
    ));
    let cache = Cache::new(backend);
    let long = CacheKey::new("user", "i".repeat(cache_core::MAX_KEY_LEN)).unwrap();
    assert_eq!(
        cache.get::<u32>(&long).await.unwrap_err().kind(),
        ErrorKind::InvalidKey
    );
    assert_eq!(
        cache.set(&long, &1).await.unwrap_err().kind(),
        ErrorKind::InvalidKey
    );
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&calls);
    let err = cache
        .get_or_set(&long, move || async move {
            counted.fetch_add(1, Ordering::SeqCst);
            Ok::<_, std::io::Error>(1)
        })
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidKey);
    assert_eq!(calls.load(Ordering::SeqCst), 0);

    let big = "x".repeat(64);
    let err = cache.set(&key("page", 1), &big).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidValue, "{err}");
    let loaded = big.clone();
    let value = cache
        .get_or_set(&key("page", 2), move || async move {
            Ok::<_, std::io::Error>(loaded)
        })
        .await
        .unwrap();
    assert_eq!(value, big);
    assert_eq!(cache.get::<String>(&key("page", 2)).await.unwrap(), None);
    let stats = cache.stats();
    assert_eq!((stats.errors, stats.caller_errors), (5, 5), "{stats:?}");
}

/// The README's bookkeeping keys: the first read in a category stores its
/// generation, `{prefix}:#gen:{category}` = "0", without a TTL (one small
/// key per category used, never evicted by a `volatile-*` policy).
#[tokio::test]
async fn the_first_read_of_a_category_stores_its_generation_without_ttl() {
    let (backend, cache) = app_cache();
    assert_eq!(backend.get("app:#gen:user").await.unwrap(), None);
    assert_eq!(cache.get::<u32>(&key("user", 1)).await.unwrap(), None);
    assert_eq!(
        backend.get("app:#gen:user").await.unwrap().as_deref(),
        Some(&b"0"[..])
    );
    assert_eq!(
        backend.ttl("app:#gen:user").await.unwrap(),
        KeyTtl::Persistent
    );
    assert_eq!(backend.get("app:#gen:order").await.unwrap(), None);
}
