//! Invalidation by tag on the memory backend, through `Tiered` (with and
//! without a backplane) and through `FailOpen` during an outage.
//!
//! It proves: `invalidate_tag` hides exactly the entries written with the
//! tag (typed values, several tags per entry, untagged and other-tagged
//! entries stay); `get_or_set` reloads them; untagged writes store the
//! plain codec bytes and tagged ones the tagged envelope, byte for byte;
//! no codec output can be taken for a tagged envelope; a lost marker
//! never brings entries back; other instances see an invalidation within
//! the refresh interval (and an L1 copy of a tagged entry is checked on
//! read); an invalidation made while the backend is down is replayed by
//! `FailOpen`, or returned as an error without it. Each would fail if the
//! read skipped the tag check, if the envelope layout changed, or if the
//! invalidation were dropped during the outage.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cache_core::layers::{BreakerConfig, BreakerState, FailOpen, Tiered, TieredConfig};
use cache_core::{
    Cache, CacheBackend, CacheKey, Codec, ErrorKind, FailSafe, GetOrSetOptions, JsonCodec, KeyTtl,
    Loaded, LocalBackplane, SetOptions, Ttl, WriteOptions, MAX_TAGS_PER_ENTRY,
};
use cache_memory::MemoryBackend;
use cache_testkit::{FaultConfig, FaultInjecting};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Book {
    title: String,
    author_id: u32,
    price_cents: u64,
}

fn book(title: &str, author_id: u32) -> Book {
    Book {
        title: title.to_owned(),
        author_id,
        price_cents: 1250,
    }
}

fn tags(list: &[&str]) -> WriteOptions {
    WriteOptions::default().with_tags(list.iter().copied())
}

fn key(category: &str, id: u32) -> CacheKey {
    CacheKey::new(category, id).unwrap()
}

#[tokio::test]
async fn invalidate_tag_hides_every_entry_with_the_tag_and_nothing_else() {
    let cache = Cache::new(Arc::new(MemoryBackend::new()));
    let dune = key("book", 1);
    let children = key("book", 2);
    let emma = key("book", 3);
    let untagged = key("book", 4);
    cache
        .set_opts(&dune, &book("Dune", 7), tags(&["author:7", "scifi"]))
        .await
        .unwrap();
    cache
        .set_opts(&children, &book("Children", 7), tags(&["author:7"]))
        .await
        .unwrap();
    cache
        .set_opts(&emma, &book("Emma", 9), tags(&["author:9", "classics"]))
        .await
        .unwrap();
    cache.set(&untagged, &book("Untagged", 7)).await.unwrap();

    cache.invalidate_tag("author:7").await.unwrap();
    assert_eq!(cache.get::<Book>(&dune).await.unwrap(), None);
    assert_eq!(cache.get::<Book>(&children).await.unwrap(), None);
    assert_eq!(
        cache.get::<Book>(&emma).await.unwrap(),
        Some(book("Emma", 9))
    );
    assert_eq!(
        cache.get::<Book>(&untagged).await.unwrap(),
        Some(book("Untagged", 7))
    );
    let many = cache
        .get_many::<Book>(&[dune.clone(), emma.clone(), untagged.clone()])
        .await
        .unwrap();
    assert_eq!(
        many,
        vec![None, Some(book("Emma", 9)), Some(book("Untagged", 7))]
    );

    // A second tag of an entry is enough; a rewrite after the
    // invalidation is reachable again.
    cache.invalidate_tag("classics").await.unwrap();
    assert_eq!(cache.get::<Book>(&emma).await.unwrap(), None);
    cache
        .set_opts(&dune, &book("Dune 2", 7), tags(&["author:7"]))
        .await
        .unwrap();
    assert_eq!(
        cache.get::<Book>(&dune).await.unwrap(),
        Some(book("Dune 2", 7))
    );
    // The invalidated entries are still stored (they age out by TTL):
    // O(1), nothing was scanned or deleted.
    assert!(cache.exists(&children).await.unwrap());
}

#[tokio::test]
async fn invalidate_tag_makes_get_or_set_reload_with_option_and_loaded_tags() {
    let cache = Cache::new(Arc::new(MemoryBackend::new()));
    let by_opts = key("book", 1);
    let by_loaded = key("book", 2);
    let opts = GetOrSetOptions::default()
        .with_ttl(Ttl::secs(60))
        .with_tags(["author:7"]);
    for round in 0..2 {
        let value: Book = cache
            .get_or_set_opts(&by_opts, opts.clone(), || async {
                Ok::<_, std::io::Error>(book("Dune", 7))
            })
            .await
            .unwrap();
        assert_eq!(value, book("Dune", 7), "round {round}");
        let value: Book = cache
            .get_or_set_adaptive(&by_loaded, || async {
                let loaded = book("Children", 7);
                let tag = format!("author:{}", loaded.author_id);
                Ok::<_, std::io::Error>(Loaded::new(loaded).with_tags([tag]))
            })
            .await
            .unwrap();
        assert_eq!(value, book("Children", 7), "round {round}");
    }
    assert_eq!(cache.stats().loader_calls, 2, "the second round hits");

    cache.invalidate_tag("author:7").await.unwrap();
    let value: Book = cache
        .get_or_set_opts(&by_opts, opts.clone(), || async {
            Ok::<_, std::io::Error>(book("Dune (2nd ed.)", 7))
        })
        .await
        .unwrap();
    assert_eq!(value, book("Dune (2nd ed.)", 7));
    let value: Book = cache
        .get_or_set_adaptive(&by_loaded, || async {
            Ok::<_, std::io::Error>(Loaded::new(book("Children 2", 7)).with_tags(["author:7"]))
        })
        .await
        .unwrap();
    assert_eq!(value, book("Children 2", 7));
    assert_eq!(cache.stats().loader_calls, 4);
    // The reloaded values are stored, tagged, and hit.
    assert_eq!(
        cache.get::<Book>(&by_opts).await.unwrap(),
        Some(book("Dune (2nd ed.)", 7))
    );
    cache.invalidate_tag("author:7").await.unwrap();
    assert_eq!(cache.get::<Book>(&by_loaded).await.unwrap(), None);
}

#[tokio::test]
async fn invalidate_tag_applies_to_set_many_opts() {
    let cache = Cache::new(Arc::new(MemoryBackend::new()));
    let items = vec![(key("book", 1), 1_u32), (key("author", 1), 2_u32)];
    cache
        .set_many_opts(&items, tags(&["batch"]).with_ttl(Ttl::secs(60)))
        .await
        .unwrap();
    cache.set(&key("book", 2), &3_u32).await.unwrap();
    let all = [key("book", 1), key("author", 1), key("book", 2)];
    assert_eq!(
        cache.get_many::<u32>(&all).await.unwrap(),
        vec![Some(1), Some(2), Some(3)]
    );
    cache.invalidate_tag("batch").await.unwrap();
    assert_eq!(
        cache.get_many::<u32>(&all).await.unwrap(),
        vec![None, None, Some(3)]
    );
}

/// The marker key of `tag` in a cache with prefix `cache`, and its epoch.
async fn epoch(backend: &MemoryBackend, tag: &str) -> u64 {
    let stored = backend.get(&format!("cache:#tag:{tag}")).await.unwrap();
    std::str::from_utf8(&stored.expect("the marker exists"))
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn invalidate_tag_untagged_bytes_are_plain_json_and_tagged_bytes_the_envelope() {
    let backend = Arc::new(MemoryBackend::new());
    let cache = Cache::new(Arc::clone(&backend) as Arc<dyn CacheBackend>);
    cache.set(&key("book", 1), &book("Dune", 7)).await.unwrap();
    cache
        .set_opts(&key("book", 2), &book("Dune", 7), WriteOptions::default())
        .await
        .unwrap();
    let json = br#"{"title":"Dune","author_id":7,"price_cents":1250}"#;
    for id in [1, 2] {
        let stored = backend.get(&format!("cache:book:{id}")).await.unwrap();
        assert_eq!(stored.as_deref(), Some(&json[..]), "book {id}");
    }

    cache
        .set_opts(&key("book", 3), &book("Dune", 7), tags(&["b", "a:1"]))
        .await
        .unwrap();
    let stored = backend.get("cache:book:3").await.unwrap().unwrap();
    // Tags are sorted and deduplicated; no logical expiry without
    // fail-safe or refresh-ahead.
    let mut expected = vec![0xFF, b'C', b'T', 1];
    expected.extend_from_slice(&0_u64.to_be_bytes());
    expected.extend_from_slice(&0_u32.to_be_bytes());
    expected.push(2);
    // The marker of "a:1" is stored under its escaped name.
    for (tag, marker) in [("a:1", "a%3A1"), ("b", "b")] {
        expected.push(tag.len() as u8);
        expected.extend_from_slice(tag.as_bytes());
        expected.extend_from_slice(&epoch(&backend, marker).await.to_be_bytes());
    }
    expected.extend_from_slice(json);
    assert_eq!(&stored[..], &expected[..]);
}

#[tokio::test]
async fn invalidate_tag_with_fail_safe_one_envelope_carries_expiry_and_tags() {
    let backend = Arc::new(MemoryBackend::new());
    let cache = Cache::builder(Arc::clone(&backend) as Arc<dyn CacheBackend>)
        .fail_safe(FailSafe::new(Duration::from_secs(3600)))
        .build()
        .unwrap();
    let stale_ok = key("rate", 1);
    let invalidated = key("rate", 2);
    let opts = |tag: &str| tags(&[tag]).with_ttl(Ttl::millis(50));
    cache
        .set_opts(&stale_ok, &1.5_f64, opts("keep"))
        .await
        .unwrap();
    cache
        .set_opts(&invalidated, &2.5_f64, opts("drop"))
        .await
        .unwrap();
    let stored = backend.get("cache:rate:1").await.unwrap().unwrap();
    assert_eq!(&stored[..4], &[0xFF, b'C', b'T', 1]);
    let expires = u64::from_be_bytes(stored[4..12].try_into().unwrap());
    assert!(expires > 0, "the logical expiry is in the tagged envelope");
    assert_eq!(u32::from_be_bytes(stored[12..16].try_into().unwrap()), 50);
    assert_eq!(&stored[stored.len() - 3..], b"1.5");

    tokio::time::sleep(Duration::from_millis(80)).await;
    cache.invalidate_tag("drop").await.unwrap();
    let failing = || async { Err::<f64, _>(std::io::Error::other("upstream down")) };
    // Stale and still tagged current: served by fail-safe.
    assert_eq!(cache.get_or_set(&stale_ok, failing).await.unwrap(), 1.5);
    // Invalidated by its tag: never served, not even stale.
    let err = cache.get_or_set(&invalidated, failing).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Loader);
    assert_eq!(cache.stats().stale_served, 1);

    // `expire` rewrites the envelope with its tags (and their epochs); an
    // invalidated entry is missing to `expire` and `ttl`.
    let touched = key("rate", 3);
    cache
        .set_opts(&touched, &3.5_f64, opts("touch"))
        .await
        .unwrap();
    assert!(cache.expire(&touched, Ttl::secs(60)).await.unwrap());
    assert!(matches!(
        cache.ttl(&touched).await.unwrap(),
        KeyTtl::Expires(_)
    ));
    cache.invalidate_tag("touch").await.unwrap();
    assert_eq!(cache.get::<f64>(&touched).await.unwrap(), None);
    assert!(!cache.expire(&touched, Ttl::secs(60)).await.unwrap());
    assert_eq!(cache.ttl(&touched).await.unwrap(), KeyTtl::Missing);
}

#[test]
fn invalidate_tag_envelope_marker_never_starts_codec_output() {
    // 0xFF is not UTF-8: JSON text never starts with it. In MessagePack it
    // is the whole encoding of -1, one byte, so nothing follows it.
    let marker = [0xFF, b'C', b'T', 1];
    let json = JsonCodec;
    let texts = ["", "\u{ff}CT", "ÿCT\u{1}", "\u{10ffff}"];
    for text in texts {
        assert!(!json.encode(text).unwrap().starts_with(&marker));
    }
    for number in [-1_i64, i64::MIN, 0, 255, -33] {
        assert!(!json.encode(&number).unwrap().starts_with(&marker));
    }
    assert!(!json
        .encode(&vec![255_u8, b'C', b'T', 1])
        .unwrap()
        .starts_with(&marker));
    #[cfg(feature = "msgpack")]
    {
        let msgpack = cache_core::MsgPackCodec;
        assert_eq!(&msgpack.encode(&-1_i64).unwrap()[..], &[0xFF]);
        for first in 0..=255_u8 {
            let bytes = msgpack.encode(&(first, "CT", 1)).unwrap();
            assert!(!bytes.starts_with(&marker));
            let bytes = msgpack.encode(&vec![first, b'C', b'T', 1]).unwrap();
            assert!(!bytes.starts_with(&marker));
            let value = i64::from(first) - 256;
            assert!(!msgpack.encode(&value).unwrap().starts_with(&marker));
        }
    }
    #[cfg(feature = "compression")]
    {
        let compressed = cache_core::Compressed::new(JsonCodec);
        let long = "x".repeat(10_000);
        let bytes = compressed.encode(&long).unwrap();
        assert_eq!(&bytes[..3], &[0xFF, b'C', b'Z']);
    }
}

#[tokio::test]
async fn invalidate_tag_a_plain_cache_reads_codec_bytes_that_look_like_other_envelopes() {
    // A cache with no fail-safe reads the fail-safe envelope's magic as
    // the codec's bytes (not its envelope), and a tagged envelope cut
    // short as an undecodable value: a miss, counted.
    let backend = Arc::new(MemoryBackend::new());
    let cache = Cache::new(Arc::clone(&backend) as Arc<dyn CacheBackend>);
    backend
        .set(
            "cache:raw:1",
            Bytes::from_static(&[0xFF, b'C', b'T', 1, 0, 0]),
            SetOptions::default(),
        )
        .await
        .unwrap();
    let err = cache.get::<u32>(&key("raw", 1)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Codec);
    assert_eq!(cache.stats().decode_errors, 1);
}

#[tokio::test]
async fn invalidate_tag_lost_marker_never_resurrects_entries() {
    let backend = Arc::new(MemoryBackend::new());
    let a = Cache::builder(Arc::clone(&backend) as Arc<dyn CacheBackend>)
        .generation_refresh(Duration::ZERO)
        .build()
        .unwrap();
    let old = key("book", 1);
    a.set_opts(&old, &1_u32, tags(&["t"])).await.unwrap();
    a.invalidate_tag("t").await.unwrap();
    assert_eq!(a.get::<u32>(&old).await.unwrap(), None);
    // The marker is lost (evicted, deleted by hand): nothing comes back,
    // for this instance nor for a new one.
    assert!(backend.delete("cache:#tag:t").await.unwrap());
    let fresh = Cache::builder(Arc::clone(&backend) as Arc<dyn CacheBackend>)
        .generation_refresh(Duration::ZERO)
        .build()
        .unwrap();
    assert_eq!(a.get::<u32>(&old).await.unwrap(), None);
    assert_eq!(fresh.get::<u32>(&old).await.unwrap(), None);

    // An entry written before the loss is invalidated by the loss itself.
    let before = key("book", 2);
    a.set_opts(&before, &2_u32, tags(&["t"])).await.unwrap();
    assert_eq!(a.get::<u32>(&before).await.unwrap(), Some(2));
    assert!(backend.delete("cache:#tag:t").await.unwrap());
    assert_eq!(a.get::<u32>(&before).await.unwrap(), None);
    assert_eq!(fresh.get::<u32>(&before).await.unwrap(), None);
    // Entries written after it live.
    a.set_opts(&before, &3_u32, tags(&["t"])).await.unwrap();
    assert_eq!(fresh.get::<u32>(&before).await.unwrap(), Some(3));

    // `clear()` removes the markers and this instance forgets their
    // epochs, also within its refresh interval: what it writes next is
    // reachable, for it and for others.
    let trusting = Cache::builder(Arc::clone(&backend) as Arc<dyn CacheBackend>)
        .generation_refresh(Duration::from_secs(3600))
        .build()
        .unwrap();
    trusting
        .set_opts(&before, &4_u32, tags(&["t"]))
        .await
        .unwrap();
    trusting.clear().await.unwrap();
    trusting
        .set_opts(&before, &5_u32, tags(&["t"]))
        .await
        .unwrap();
    assert_eq!(trusting.get::<u32>(&before).await.unwrap(), Some(5));
    assert_eq!(fresh.get::<u32>(&before).await.unwrap(), Some(5));
}

#[tokio::test]
async fn invalidate_tag_rejects_bad_tags_and_writes_nothing() {
    let backend = Arc::new(MemoryBackend::new());
    let cache = Cache::new(Arc::clone(&backend) as Arc<dyn CacheBackend>);
    let k = key("book", 1);
    for bad in ["", "a\nb", &"x".repeat(256)] {
        let err = cache.set_opts(&k, &1, tags(&[bad])).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidKey, "{bad:?}");
        let err = cache.invalidate_tag(bad).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidKey, "{bad:?}");
    }
    let many: Vec<String> = (0..=MAX_TAGS_PER_ENTRY).map(|i| i.to_string()).collect();
    let err = cache
        .set_opts(&k, &1, WriteOptions::default().with_tags(many))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidValue);
    assert_eq!(backend.get("cache:book:1").await.unwrap(), None);
    // 255 tags of 255 bytes each are fine, duplicates counted once.
    let most: Vec<String> = (0..MAX_TAGS_PER_ENTRY)
        .map(|i| format!("{i:0>255}"))
        .chain(["0".repeat(255)])
        .collect();
    cache
        .set_opts(&k, &1, WriteOptions::default().with_tags(most))
        .await
        .unwrap();
    assert_eq!(cache.get::<u32>(&k).await.unwrap(), Some(1));
    cache
        .invalidate_tag(&format!("{:0>255}", 254))
        .await
        .unwrap();
    assert_eq!(cache.get::<u32>(&k).await.unwrap(), None);
}

#[tokio::test]
async fn invalidate_tag_reaches_another_instance_within_the_refresh_interval() {
    let backend: Arc<dyn CacheBackend> = Arc::new(MemoryBackend::new());
    let refresh = Duration::from_millis(400);
    let build = || {
        Cache::builder(Arc::clone(&backend))
            .generation_refresh(refresh)
            .build()
            .unwrap()
    };
    let (a, b) = (build(), build());
    let k = key("book", 1);
    a.set_opts(&k, &book("Dune", 7), tags(&["author:7"]))
        .await
        .unwrap();
    let read = Instant::now();
    assert_eq!(b.get::<Book>(&k).await.unwrap(), Some(book("Dune", 7)));
    a.invalidate_tag("author:7").await.unwrap();
    assert_eq!(a.get::<Book>(&k).await.unwrap(), None, "at once on A");
    // B trusts the epoch it read for the refresh interval...
    let stale = b.get::<Book>(&k).await.unwrap();
    if read.elapsed() < refresh {
        assert_eq!(stale, Some(book("Dune", 7)));
    }
    // ...and no longer after it.
    tokio::time::sleep(refresh.saturating_sub(read.elapsed()) + Duration::from_millis(20)).await;
    assert_eq!(b.get::<Book>(&k).await.unwrap(), None);
}

struct Instance {
    cache: Cache,
    l1: Arc<MemoryBackend>,
}

async fn tiered(l2: &Arc<MemoryBackend>, backplane: Option<&LocalBackplane>) -> Instance {
    let l1 = Arc::new(MemoryBackend::new());
    let tier = Tiered::new(
        Arc::clone(&l1) as Arc<dyn CacheBackend>,
        Arc::clone(l2) as Arc<dyn CacheBackend>,
        TieredConfig::default().with_l1_max_ttl(Duration::from_secs(600)),
    );
    let builder = match backplane {
        Some(backplane) => Cache::builder(Arc::new(
            tier.with_backplane(Arc::new(backplane.clone()))
                .await
                .unwrap(),
        ))
        .generation_refresh(Duration::ZERO),
        None => Cache::builder(Arc::new(tier))
            .generation_backend(Arc::clone(l2) as Arc<dyn CacheBackend>)
            .generation_refresh(Duration::from_millis(300)),
    };
    Instance {
        cache: builder.build().unwrap(),
        l1,
    }
}

async fn until_miss(cache: &Cache, k: &CacheKey) {
    let started = Instant::now();
    while cache.get::<Book>(k).await.unwrap().is_some() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "never saw the invalidation"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn invalidate_tag_through_tiered_l1_with_and_without_backplane() {
    for with_backplane in [true, false] {
        let l2 = Arc::new(MemoryBackend::new());
        let backplane = LocalBackplane::new();
        let a = tiered(&l2, with_backplane.then_some(&backplane)).await;
        let b = tiered(&l2, with_backplane.then_some(&backplane)).await;
        let k = key("book", 1);
        a.cache
            .set_opts(&k, &book("Dune", 7), tags(&["author:7"]))
            .await
            .unwrap();
        assert_eq!(
            b.cache.get::<Book>(&k).await.unwrap(),
            Some(book("Dune", 7))
        );
        assert!(
            b.l1.exists("cache:book:1").await.unwrap(),
            "B has an L1 copy"
        );
        a.cache.invalidate_tag("author:7").await.unwrap();
        assert_eq!(a.cache.get::<Book>(&k).await.unwrap(), None);
        until_miss(&b.cache, &k).await;
        // The entry itself was never invalidated in B's L1: the tag check
        // on its envelope hid it.
        assert!(
            b.l1.exists("cache:book:1").await.unwrap(),
            "backplane {with_backplane}"
        );
        let reloaded: Book = b
            .cache
            .get_or_set_opts(
                &k,
                GetOrSetOptions::default().with_tags(["author:7"]),
                || async { Ok::<_, std::io::Error>(book("Dune 2", 7)) },
            )
            .await
            .unwrap();
        assert_eq!(reloaded, book("Dune 2", 7));
    }
}

#[tokio::test]
async fn invalidate_tag_during_an_outage_is_replayed_by_fail_open() {
    let store = Arc::new(MemoryBackend::new());
    let faults = Arc::new(FaultInjecting::new(Arc::clone(&store), FaultConfig::none()));
    let fail_open = Arc::new(FailOpen::new(
        Arc::clone(&faults),
        BreakerConfig::default()
            .with_failure_threshold(1)
            .with_cool_down(Duration::from_millis(100)),
    ));
    let a = Cache::builder(Arc::clone(&fail_open) as Arc<dyn CacheBackend>)
        .generation_refresh(Duration::ZERO)
        .build()
        .unwrap();
    let k = key("book", 1);
    a.set_opts(&k, &book("Dune", 7), tags(&["author:7"]))
        .await
        .unwrap();

    faults.set_config(FaultConfig::none().with_fail_every(1));
    a.invalidate_tag("author:7").await.unwrap();
    assert_eq!(fail_open.stats().pending_invalidations, 1);
    assert_eq!(a.get::<Book>(&k).await.unwrap(), None, "failing open");

    faults.set_config(FaultConfig::none());
    let started = Instant::now();
    loop {
        let stats = fail_open.stats();
        if stats.state == BreakerState::Closed && stats.pending_invalidations == 0 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "{stats:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(fail_open.stats().replayed_invalidations, 1);
    // An instance that never heard of the invalidation misses too.
    let b = Cache::new(Arc::clone(&store) as Arc<dyn CacheBackend>);
    assert_eq!(b.get::<Book>(&k).await.unwrap(), None);
    assert_eq!(a.get::<Book>(&k).await.unwrap(), None);
}

#[tokio::test]
async fn invalidate_tag_without_fail_open_returns_the_backend_error() {
    let store = Arc::new(MemoryBackend::new());
    let faults = Arc::new(FaultInjecting::new(Arc::clone(&store), FaultConfig::none()));
    let a = Cache::new(Arc::clone(&faults) as Arc<dyn CacheBackend>);
    let k = key("book", 1);
    a.set_opts(&k, &book("Dune", 7), tags(&["author:7"]))
        .await
        .unwrap();
    faults.set_config(FaultConfig::none().with_fail_every(1));
    let err = a.invalidate_tag("author:7").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Connection);
    assert!(err.is_retryable());
    faults.set_config(FaultConfig::none());
    // Nothing happened, and the caller was told: the entry is there.
    assert_eq!(a.get::<Book>(&k).await.unwrap(), Some(book("Dune", 7)));
    a.invalidate_tag("author:7").await.unwrap();
    assert_eq!(a.get::<Book>(&k).await.unwrap(), None);
}
