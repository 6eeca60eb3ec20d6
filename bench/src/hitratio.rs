//! Hit ratio on seeded synthetic traces: Zipf popularity over 1M keys, with
//! and without sequential scans, at 1% and 10% capacity; every policy sees
//! the same trace and answers a miss by inserting the key (cache-aside).

use std::collections::BinaryHeap;
use std::num::NonZeroUsize;

use bytes::Bytes;
use cache_core::SetOptions;
use cache_memory::{MemoryBackend, MemoryConfig};

use crate::harness::{median, Rng};
use crate::report::Report;

pub(crate) const GROUP: &str = "hit_ratio";

/// A trace: request `i` reads key id `trace[i]`.
pub(crate) struct Trace {
    pub(crate) name: String,
    pub(crate) requests: Vec<u32>,
}

/// Zipf(s) ranks over `n` keys by inverse CDF (exact, table based).
pub(crate) struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    pub(crate) fn new(n: usize, s: f64) -> Self {
        let mut cdf = Vec::with_capacity(n);
        let mut sum = 0.0;
        for rank in 1..=n {
            sum += 1.0 / (rank as f64).powf(s);
            cdf.push(sum);
        }
        for c in &mut cdf {
            *c /= sum;
        }
        Zipf { cdf }
    }

    /// A rank in `0..n`, 0 the most popular.
    pub(crate) fn sample(&self, rng: &mut Rng) -> usize {
        let u = rng.unit();
        self.cdf.partition_point(|&c| c < u).min(self.cdf.len() - 1)
    }
}

/// Maps popularity ranks to key ids with a fixed permutation, so that hot
/// keys are not neighbours in id order (a scan of ids meets hot and cold
/// keys alike).
fn rank_to_id(rank: usize, n: usize) -> u32 {
    ((rank as u64 * 999_983 + 12_345) % n as u64) as u32
}

/// `requests` Zipf(s) requests over `keys` keys; with `scans`, a sequential
/// run of 10,000 ids (from a random start) follows every 30,000 Zipf
/// requests, so scans make up 25% of the requests.
pub(crate) fn trace(keys: usize, requests: usize, s: f64, scans: bool, seed: u64) -> Trace {
    let zipf = Zipf::new(keys, s);
    let mut rng = Rng::new(seed);
    let mut out = Vec::with_capacity(requests);
    while out.len() < requests {
        for _ in 0..30_000 {
            out.push(rank_to_id(zipf.sample(&mut rng), keys));
        }
        if scans {
            let start = rng.below(keys as u64) as usize;
            for i in 0..10_000 {
                out.push(((start + i) % keys) as u32);
            }
        }
    }
    out.truncate(requests);
    let name = format!("zipf{s}{}", if scans { "+scan" } else { "" });
    Trace {
        name,
        requests: out,
    }
}

/// Belady's OPT (with bypass): on a miss, evicts the resident key whose
/// next use is farthest, or does not admit the new key if its own next use
/// is farther still. The upper bound of any policy.
pub(crate) fn opt(trace: &[u32], keys: usize, capacity: usize) -> f64 {
    const NEVER: u32 = u32::MAX;
    let mut next = vec![NEVER; trace.len()];
    let mut last = vec![NEVER; keys];
    for i in (0..trace.len()).rev() {
        let k = trace[i] as usize;
        next[i] = last[k];
        last[k] = i as u32;
    }
    // Resident keys: `resident[k]` is the next use it was queued with.
    let mut resident = vec![None::<u32>; keys];
    let mut heap: BinaryHeap<(u32, u32)> = BinaryHeap::new();
    let mut size = 0;
    let mut hits = 0u64;
    for (i, &k) in trace.iter().enumerate() {
        let k = k as usize;
        let n = next[i];
        if resident[k].is_some() {
            hits += 1;
            resident[k] = Some(n);
            heap.push((n, k as u32));
            continue;
        }
        if n == NEVER {
            continue;
        }
        if size < capacity {
            size += 1;
            resident[k] = Some(n);
            heap.push((n, k as u32));
            continue;
        }
        // The resident key used farthest in the future (skip stale items).
        while let Some(&(far, victim)) = heap.peek() {
            if resident[victim as usize] == Some(far) {
                break;
            }
            heap.pop();
        }
        if let Some(&(far, victim)) = heap.peek() {
            if far > n {
                heap.pop();
                resident[victim as usize] = None;
                resident[k] = Some(n);
                heap.push((n, k as u32));
            }
        }
    }
    hits as f64 / trace.len() as f64
}

fn ours(trace: &[u32], names: &[String], capacity: usize) -> f64 {
    let backend = MemoryBackend::with_config(
        MemoryConfig::default()
            .with_max_entries(capacity)
            .with_sweep_interval(std::time::Duration::ZERO),
    );
    let value = Bytes::from_static(b"v");
    let mut hits = 0u64;
    for &k in trace {
        let key = &names[k as usize];
        if backend.get_sync(key).ok().flatten().is_some() {
            hits += 1;
        } else {
            let _ = backend.set_sync(key, value.clone(), SetOptions::default());
        }
    }
    hits as f64 / trace.len() as f64
}

fn moka_sync(trace: &[u32], capacity: usize) -> f64 {
    let cache: moka::sync::Cache<u32, ()> = moka::sync::Cache::new(capacity as u64);
    let mut hits = 0u64;
    for &k in trace {
        if cache.get(&k).is_some() {
            hits += 1;
        } else {
            cache.insert(k, ());
        }
    }
    hits as f64 / trace.len() as f64
}

fn quick(trace: &[u32], capacity: usize) -> f64 {
    let cache: quick_cache::sync::Cache<u32, ()> = quick_cache::sync::Cache::new(capacity);
    let mut hits = 0u64;
    for &k in trace {
        if cache.get(&k).is_some() {
            hits += 1;
        } else {
            cache.insert(k, ());
        }
    }
    hits as f64 / trace.len() as f64
}

fn lru(trace: &[u32], capacity: usize) -> f64 {
    let mut cache = lru::LruCache::new(NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN));
    let mut hits = 0u64;
    for &k in trace {
        if cache.get(&k).is_some() {
            hits += 1;
        } else {
            cache.put(k, ());
        }
    }
    hits as f64 / trace.len() as f64
}

/// The implementations compared, in table order.
pub(crate) const IMPLS: [&str; 5] = ["MemoryBackend", "moka", "quick_cache", "lru", "OPT"];

/// Runs the group: 4 traces x 2 capacities x every implementation (the
/// median of 3 runs of each randomized one in a full run).
pub(crate) fn run(report: &mut Report, only: Option<&str>, quick_run: bool) {
    let reps = if quick_run { 1 } else { 3 };
    const KEYS: usize = 1_000_000;
    const REQUESTS: usize = 2_000_000;
    let names: Vec<String> = (0..KEYS).map(|i| format!("user:{i:06}")).collect();
    let mut seed = 1;
    for (s, scans) in [(0.99, false), (0.8, false), (0.99, true), (0.8, true)] {
        seed += 1;
        let t = trace(KEYS, REQUESTS, s, scans, seed);
        for (pct, capacity) in [("1%", KEYS / 100), ("10%", KEYS / 10)] {
            let workload = format!("{} cap {pct}", t.name);
            for imp in IMPLS {
                if only.is_some_and(|o| o != imp) {
                    continue;
                }
                // LRU and OPT are deterministic; the others hash with a
                // random seed per cache, so their cells are repeated.
                let mut ratios: Vec<f64> = (0..if matches!(imp, "lru" | "OPT") {
                    1
                } else {
                    reps
                })
                    .map(|_| match imp {
                        "MemoryBackend" => ours(&t.requests, &names, capacity),
                        "moka" => moka_sync(&t.requests, capacity),
                        "quick_cache" => quick(&t.requests, capacity),
                        "lru" => lru(&t.requests, capacity),
                        _ => opt(&t.requests, KEYS, capacity),
                    })
                    .collect();
                report.add(GROUP, &workload, imp, "hit_ratio", median(&mut ratios));
            }
            eprint!(".");
        }
    }
}
