//! Memory per entry: heap bytes a cache holds for 1M entries, beyond the
//! bytes of the keys and values themselves, counted by the bench's global
//! allocator (requested sizes; the allocator's own rounding is not counted).

use bytes::Bytes;
use cache_core::SetOptions;

use crate::harness::{count_from_zero, median, stop_counting};
use crate::report::Report;
use crate::throughput::{memory_backend, VALUE_LEN};
use crate::Options;

pub(crate) const GROUP: &str = "bytes_per_entry";

/// The implementations, in table order.
pub(crate) const IMPLS: [&str; 5] = [
    "MemoryBackend",
    "moka::sync",
    "moka::future",
    "quick_cache",
    "raw DashMap",
];

fn key(i: usize) -> String {
    format!("user:{i:06}")
}

fn value(i: usize) -> Bytes {
    let mut v = [b'x'; VALUE_LEN];
    v[..8].copy_from_slice(&(i as u64).to_le_bytes());
    Bytes::copy_from_slice(&v)
}

/// Fills one cache with `n` entries while counting; returns (live heap
/// bytes, entries held).
fn fill(imp: &str, n: usize) -> (isize, usize) {
    count_from_zero();
    match imp {
        "MemoryBackend" => {
            let cache = memory_backend(n);
            for i in 0..n {
                let _ = cache.set_sync(&key(i), value(i), SetOptions::default());
            }
            let held = cache.stats().entries;
            let live = stop_counting();
            drop(cache);
            (live, held)
        }
        "moka::sync" => {
            let cache: moka::sync::Cache<String, Bytes> = moka::sync::Cache::new(n as u64);
            for i in 0..n {
                cache.insert(key(i), value(i));
            }
            cache.run_pending_tasks();
            let held = cache.entry_count() as usize;
            let live = stop_counting();
            drop(cache);
            (live, held)
        }
        "moka::future" => {
            let cache: moka::future::Cache<String, Bytes> = moka::future::Cache::new(n as u64);
            for i in 0..n {
                crate::harness::ready(cache.insert(key(i), value(i)));
            }
            crate::harness::ready(cache.run_pending_tasks());
            let held = cache.entry_count() as usize;
            let live = stop_counting();
            drop(cache);
            (live, held)
        }
        "quick_cache" => {
            let cache: quick_cache::sync::Cache<String, Bytes> = quick_cache::sync::Cache::new(n);
            for i in 0..n {
                cache.insert(key(i), value(i));
            }
            let held = cache.len();
            let live = stop_counting();
            drop(cache);
            (live, held)
        }
        _ => {
            let map: dashmap::DashMap<String, Bytes, crate::hash::KeyHasherBuilder> =
                dashmap::DashMap::with_hasher(Default::default());
            for i in 0..n {
                map.insert(key(i), value(i));
            }
            let held = map.len();
            let live = stop_counting();
            drop(map);
            (live, held)
        }
    }
}

/// Runs the group.
pub(crate) fn run(report: &mut Report, opts: &Options) {
    let n = 1_000_000;
    let reps = if opts.quick { 1 } else { 3 };
    let payload = (key(0).len() + VALUE_LEN) as f64;
    for imp in IMPLS {
        let mut per_entry = Vec::new();
        for _ in 0..reps {
            let (live, held) = fill(imp, n);
            per_entry.push(live as f64 / held.max(1) as f64 - payload);
        }
        report.add(
            GROUP,
            "1M entries, 11 B key + 64 B value",
            imp,
            "bytes_per_entry",
            median(&mut per_entry),
        );
        eprint!(".");
    }
}
