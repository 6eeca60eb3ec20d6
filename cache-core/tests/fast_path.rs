//! The read a backend answers without waiting (`CacheBackend::get_now`):
//! `Cache` reads through it with no lock and no allocation of its own, so
//! these tests pin that it answers exactly what the awaited read would:
//! invalidations seen at once on every thread, a bump by another instance
//! seen within the refresh interval, every read counted once, by the cache
//! and by the layers under it.

use std::sync::Arc;
use std::time::Duration;

use cache_core::layers::{Metered, Tiered, TieredConfig};
use cache_core::{Cache, CacheBackend, CacheKey};
use cache_memory::MemoryBackend;

fn key(id: u64) -> CacheKey {
    CacheKey::new("user", id).unwrap()
}

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(future)
}

#[test]
fn a_category_invalidated_on_another_thread_is_gone_at_once_for_a_thread_that_read_it() {
    let cache = Cache::new(Arc::new(MemoryBackend::new()));
    block_on(cache.set(&key(1), "Ada")).unwrap();
    let (read, invalidated) = (std::sync::mpsc::channel(), std::sync::mpsc::channel());
    let reader = {
        let cache = cache.clone();
        let (read, invalidated) = (read.0, invalidated.1);
        std::thread::spawn(move || {
            // This thread now knows the category's generation.
            let before = block_on(cache.get::<String>(&key(1))).unwrap();
            read.send(()).unwrap();
            invalidated.recv().unwrap();
            let after = block_on(cache.get::<String>(&key(1))).unwrap();
            (before, after)
        })
    };
    read.1.recv().unwrap();
    block_on(cache.invalidate_category("user")).unwrap();
    invalidated.0.send(()).unwrap();
    let (before, after) = reader.join().unwrap();
    assert_eq!(before.as_deref(), Some("Ada"));
    assert_eq!(after, None);
}

#[tokio::test]
async fn a_bump_by_another_instance_is_seen_once_the_refresh_interval_has_passed() {
    let backend: Arc<dyn CacheBackend> = Arc::new(MemoryBackend::new());
    let refresh = Duration::from_millis(200);
    let a = Cache::builder(Arc::clone(&backend))
        .generation_refresh(refresh)
        .build()
        .unwrap();
    let b = Cache::builder(backend)
        .generation_refresh(refresh)
        .build()
        .unwrap();
    a.set(&key(1), "Ada").await.unwrap();
    // Read twice: the second read takes the generation `b` knows, without
    // a lock.
    for _ in 0..2 {
        assert_eq!(
            b.get::<String>(&key(1)).await.unwrap().as_deref(),
            Some("Ada")
        );
    }
    a.invalidate_category("user").await.unwrap();
    tokio::time::sleep(refresh + Duration::from_millis(100)).await;
    // `b` trusted what it knew for one refresh interval, not longer.
    assert_eq!(b.get::<String>(&key(1)).await.unwrap(), None);
}

#[test]
fn every_read_from_many_threads_is_counted_once() {
    let cache = Cache::new(Arc::new(MemoryBackend::new()));
    block_on(cache.set(&key(1), "Ada")).unwrap();
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let cache = cache.clone();
            std::thread::spawn(move || {
                block_on(async {
                    for _ in 0..10_000 {
                        cache.get::<String>(&key(1)).await.unwrap().unwrap();
                        assert_eq!(cache.get::<String>(&key(2)).await.unwrap(), None);
                    }
                })
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    let stats = cache.stats();
    assert_eq!((stats.hits, stats.misses), (40_000, 40_000));
}

#[tokio::test]
async fn reads_through_the_layers_are_counted_once_by_each() {
    let metered = Arc::new(Metered::new(MemoryBackend::new()));
    let cache = Cache::new(metered.clone());
    cache.set(&key(1), "Ada").await.unwrap();
    assert_eq!(
        cache.get::<String>(&key(1)).await.unwrap().as_deref(),
        Some("Ada")
    );
    assert_eq!(cache.get::<String>(&key(2)).await.unwrap(), None);
    let get = metered.snapshot()["get"];
    // The two reads, and the generation of `user` read once (a miss: the
    // first write then stores generation 0).
    assert_eq!((get.calls, get.hits, get.misses), (3, 1, 2));

    let tiered = Tiered::new(
        Arc::new(MemoryBackend::new()),
        Arc::new(MemoryBackend::new()),
        TieredConfig::default(),
    );
    let handle = tiered.handle();
    let cache = Cache::builder(Arc::new(tiered))
        .tiered_stats(handle)
        .build()
        .unwrap();
    cache.set(&key(1), "Ada").await.unwrap();
    let generation_reads = cache.stats();
    for _ in 0..3 {
        assert_eq!(
            cache.get::<String>(&key(1)).await.unwrap().as_deref(),
            Some("Ada")
        );
    }
    assert_eq!(cache.get::<String>(&key(2)).await.unwrap(), None);
    let stats = cache.stats();
    assert_eq!((stats.hits, stats.misses), (3, 1));
    assert_eq!(
        (
            stats.l1_hits - generation_reads.l1_hits,
            stats.l2_hits - generation_reads.l2_hits
        ),
        (3, 0)
    );
}

/// A `get` future is three words (the cache, the key, and the box of an
/// awaited read if one is needed) and `Send`: it is moved whole wherever it
/// goes, and a large one written just before it is moved costs a hit as
/// much as its decode (an `async fn` future was 248 bytes).
#[test]
fn a_get_future_is_three_words_and_send() {
    fn send<F: Send>(future: F) -> F {
        future
    }
    let cache = Cache::new(Arc::new(MemoryBackend::new()));
    let k = key(1);
    let get = send(cache.get::<String>(&k));
    assert_eq!(
        std::mem::size_of_val(&get),
        3 * std::mem::size_of::<usize>()
    );
    assert_eq!(block_on(get).unwrap(), None);
}

#[test]
fn print_future_sizes() {
    let cache = Cache::new(Arc::new(MemoryBackend::new()));
    let k = key(1);
    eprintln!(
        "get future: {} bytes",
        std::mem::size_of_val(&cache.get::<String>(&k))
    );
    eprintln!(
        "get_or_set future: {} bytes",
        std::mem::size_of_val(
            &cache.get_or_set(&k, || async { Ok::<_, std::io::Error>(String::new()) })
        )
    );
}

/// A hit the memory backend lends is decoded where it lies up to 1 KiB
/// encoded, and cloned out past that: values either side of the limit
/// (a JSON string of `len` bytes encodes to `len + 2`), read in two parts
/// (generation 0) and whole (after an invalidation), each read back as
/// written and counted once as a hit.
#[tokio::test]
async fn values_either_side_of_the_in_place_limit_read_back_and_count_once() {
    let cache = Cache::new(Arc::new(MemoryBackend::new()));
    for invalidated in [false, true] {
        if invalidated {
            cache.invalidate_category("user").await.unwrap();
        }
        for len in [0, 1, 1021, 1022, 1023, 5000] {
            let value = "x".repeat(len);
            cache.set(&key(len as u64), &value).await.unwrap();
            let before = cache.stats();
            assert_eq!(
                cache.get::<String>(&key(len as u64)).await.unwrap(),
                Some(value),
                "len {len}, invalidated {invalidated}"
            );
            let after = cache.stats();
            assert_eq!(
                (after.hits - before.hits, after.misses - before.misses),
                (1, 0),
                "len {len}, invalidated {invalidated}"
            );
        }
    }
}

/// A small stored value that does not decode as the type asked for is a
/// `Codec` error, counted once as a decode error and as nothing else.
#[tokio::test]
async fn a_small_value_that_does_not_decode_is_a_codec_error_counted_once() {
    let cache = Cache::new(Arc::new(MemoryBackend::new()));
    cache.set(&key(1), "not a number").await.unwrap();
    let err = cache.get::<u32>(&key(1)).await.unwrap_err();
    assert_eq!(err.kind(), cache_core::ErrorKind::Codec);
    let stats = cache.stats();
    assert_eq!(
        (stats.hits, stats.misses, stats.decode_errors, stats.errors),
        (0, 0, 1, 1)
    );
}

/// `get_or_set` reads a lent value as `get` does: a hit either side of the
/// in-place limit is returned without a load and counted once; a small
/// value that does not decode is counted once as a decode error and
/// reloaded as a miss.
#[tokio::test]
async fn get_or_set_reads_a_lent_value_as_get_does() {
    let cache = Cache::new(Arc::new(MemoryBackend::new()));
    let loads = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let load = |value: &'static str| {
        let loads = Arc::clone(&loads);
        move || async move {
            loads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Ok::<_, std::io::Error>(value.to_owned())
        }
    };
    for len in [3, 1022, 1023, 5000] {
        let value = "x".repeat(len);
        cache.set(&key(len as u64), &value).await.unwrap();
        let before = cache.stats();
        let read: String = cache
            .get_or_set(&key(len as u64), load("loaded"))
            .await
            .unwrap();
        assert_eq!(read, value, "len {len}");
        let after = cache.stats();
        assert_eq!(
            (after.hits - before.hits, after.misses - before.misses),
            (1, 0),
            "len {len}"
        );
    }
    assert_eq!(loads.load(std::sync::atomic::Ordering::Relaxed), 0);

    cache.set(&key(1), &7u32).await.unwrap();
    let before = cache.stats();
    let read: String = cache.get_or_set(&key(1), load("reloaded")).await.unwrap();
    assert_eq!(read, "reloaded");
    let after = cache.stats();
    assert_eq!(
        (
            after.hits - before.hits,
            after.misses - before.misses,
            after.decode_errors - before.decode_errors,
            after.errors - before.errors
        ),
        (0, 1, 1, 1)
    );
    assert_eq!(loads.load(std::sync::atomic::Ordering::Relaxed), 1);
    assert_eq!(
        cache.get::<String>(&key(1)).await.unwrap().as_deref(),
        Some("reloaded")
    );
}
