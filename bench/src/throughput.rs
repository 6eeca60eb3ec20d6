//! Memory throughput: one cache call per op, keys like `user:123456`,
//! 64-byte values, uniform random keys over a preloaded key set.

use std::hint::black_box;
use std::sync::Arc;

use bytes::Bytes;
use cache_core::layers::Metered;
use cache_core::{Cache, CacheBackend, CacheKey, Codec, JsonCodec, SetOptions};
use cache_memory::{MemoryBackend, MemoryConfig};
use dashmap::DashMap;

use crate::harness::{dyn_get, interleaved, ops_per_sec, ready, Rng};
use crate::hash::KeyHasherBuilder;
use crate::report::Report;
use crate::Options;

pub(crate) const GROUP: &str = "memory_throughput";
pub(crate) const VALUE_LEN: usize = 64;

/// A cache under test, by key index.
pub(crate) trait Subject: Sync {
    /// Reads key `i`; returns whether it hit.
    fn get(&self, i: usize) -> bool;
    /// Writes key `i`.
    fn set(&self, i: usize);
}

/// The keys and the value every subject uses.
pub(crate) struct Data {
    pub(crate) keys: Vec<String>,
    pub(crate) typed: Vec<CacheKey>,
    /// One value per key, each its own allocation: a get clones the
    /// stored `Bytes` (a count in its allocation), and one value shared by
    /// every key would make every get of every thread bump one counter.
    pub(crate) values: Vec<Bytes>,
    /// The JSON text of `json_value` (64 bytes): what the typed cache stores.
    pub(crate) json_value: String,
    /// `json_value` encoded: the bytes the typed cache stores.
    pub(crate) json_bytes: Bytes,
    /// The keys as the typed cache stores them (`cache:user:000123`).
    pub(crate) full: Vec<String>,
}

impl Data {
    pub(crate) fn new(n: usize) -> Arc<Self> {
        let json_value = "v".repeat(VALUE_LEN - 2);
        Arc::new(Data {
            keys: (0..n).map(|i| format!("user:{i:06}")).collect(),
            typed: (0..n)
                .map(|i| CacheKey::new("user", format!("{i:06}")).expect("valid key"))
                .collect(),
            values: (0..n).map(|_| Bytes::from(vec![b'x'; VALUE_LEN])).collect(),
            json_bytes: Bytes::from(serde_json::to_vec(&json_value).expect("a string encodes")),
            full: (0..n).map(|i| format!("cache:user:{i:06}")).collect(),
            json_value,
        })
    }
}

pub(crate) fn memory_backend(capacity: usize) -> MemoryBackend {
    MemoryBackend::with_config(
        MemoryConfig::default()
            .with_max_entries(capacity)
            .with_sweep_interval(std::time::Duration::ZERO),
    )
}

/// Through `&dyn CacheBackend`, as a caller of the trait reads: `get_now`,
/// which an in-memory backend answers, else the awaited `get` (one boxed
/// future; calling `.get()` on the `Arc<dyn CacheBackend>` itself would go
/// through the blanket `impl CacheBackend for Arc<T>` and box two).
struct OursDyn(Arc<dyn CacheBackend>, Arc<Data>);
impl Subject for OursDyn {
    fn get(&self, i: usize) -> bool {
        dyn_get(&*self.0, &self.1.keys[i]).ok().flatten().is_some()
    }
    fn set(&self, i: usize) {
        let backend: &dyn CacheBackend = &*self.0;
        let _ = ready(backend.set(
            &self.1.keys[i],
            self.1.values[i].clone(),
            SetOptions::default(),
        ));
    }
}

struct OursDirect(Arc<MemoryBackend>, Arc<Data>);
impl Subject for OursDirect {
    fn get(&self, i: usize) -> bool {
        self.0.get_sync(&self.1.keys[i]).ok().flatten().is_some()
    }
    fn set(&self, i: usize) {
        let _ = self.0.set_sync(
            &self.1.keys[i],
            self.1.values[i].clone(),
            SetOptions::default(),
        );
    }
}

struct Typed(Cache, Arc<Data>);
impl Subject for Typed {
    fn get(&self, i: usize) -> bool {
        ready(self.0.get::<String>(&self.1.typed[i]))
            .ok()
            .flatten()
            .is_some()
    }
    fn set(&self, i: usize) {
        let _ = ready(self.0.set(&self.1.typed[i], &self.1.json_value));
    }
}

/// `get_or_set` of the typed keys: a hit returns the stored value, a miss
/// (none once they are set) would store an empty string.
struct GetOrSet(Cache, Arc<Data>);
impl Subject for GetOrSet {
    fn get(&self, i: usize) -> bool {
        ready(self.0.get_or_set(&self.1.typed[i], || async {
            Ok::<_, std::io::Error>(String::new())
        }))
        .is_ok_and(|value: String| !value.is_empty())
    }
    fn set(&self, i: usize) {
        let _ = ready(self.0.set(&self.1.typed[i], &self.1.json_value));
    }
}

/// The floor of a typed get: the backend's own read of the full key and the
/// cache's JSON decode ([`JsonCodec`]) of the same 64-byte string, with no
/// facade.
struct LookupDecode(Arc<MemoryBackend>, Arc<Data>);
impl Subject for LookupDecode {
    fn get(&self, i: usize) -> bool {
        match self.0.get_sync(&self.1.full[i]) {
            Ok(Some(bytes)) => JsonCodec.decode::<String>(&bytes).is_ok(),
            _ => false,
        }
    }
    fn set(&self, i: usize) {
        // A copy per key, as the typed cache stores (an encoded value per
        // write): one shared allocation would keep its count and bytes hot.
        let _ = self.0.set_sync(
            &self.1.full[i],
            Bytes::copy_from_slice(&self.1.json_bytes),
            SetOptions::default(),
        );
    }
}

struct RawDashMap(DashMap<String, Bytes, KeyHasherBuilder>, Arc<Data>);
impl Subject for RawDashMap {
    fn get(&self, i: usize) -> bool {
        self.0
            .get(self.1.keys[i].as_str())
            .map(|v| v.clone())
            .is_some()
    }
    fn set(&self, i: usize) {
        let key = &self.1.keys[i];
        match self.0.get_mut(key.as_str()) {
            Some(mut v) => *v = self.1.values[i].clone(),
            None => {
                self.0.insert(key.clone(), self.1.values[i].clone());
            }
        }
    }
}

struct MokaFuture(moka::future::Cache<String, Bytes>, Arc<Data>);
impl Subject for MokaFuture {
    fn get(&self, i: usize) -> bool {
        ready(self.0.get(self.1.keys[i].as_str())).is_some()
    }
    fn set(&self, i: usize) {
        ready(
            self.0
                .insert(self.1.keys[i].clone(), self.1.values[i].clone()),
        );
    }
}

struct MokaSync(moka::sync::Cache<String, Bytes>, Arc<Data>);
impl Subject for MokaSync {
    fn get(&self, i: usize) -> bool {
        self.0.get(self.1.keys[i].as_str()).is_some()
    }
    fn set(&self, i: usize) {
        self.0
            .insert(self.1.keys[i].clone(), self.1.values[i].clone());
    }
}

struct Quick(quick_cache::sync::Cache<String, Bytes>, Arc<Data>);
impl Subject for Quick {
    fn get(&self, i: usize) -> bool {
        self.0.get(self.1.keys[i].as_str()).is_some()
    }
    fn set(&self, i: usize) {
        self.0
            .insert(self.1.keys[i].clone(), self.1.values[i].clone());
    }
}

/// The implementations, in table order.
pub(crate) const IMPLS: [&str; 9] = [
    "MemoryBackend dyn",
    "Metered dyn",
    "MemoryBackend direct",
    "Cache::get::<T>",
    "lookup + decode",
    "raw DashMap",
    "moka::future",
    "moka::sync",
    "quick_cache",
];

fn subject(name: &str, data: &Arc<Data>, capacity: usize) -> Box<dyn Subject> {
    let data = Arc::clone(data);
    match name {
        "MemoryBackend dyn" => Box::new(OursDyn(Arc::new(memory_backend(capacity)), data)),
        // The metered layer of `cache::open` with `metrics` on, through
        // `dyn` as `Cache` calls it: its counters must not stop 2 threads
        // from scaling.
        "Metered dyn" => Box::new(OursDyn(
            Arc::new(Metered::new(memory_backend(capacity))),
            data,
        )),
        "MemoryBackend direct" => Box::new(OursDirect(Arc::new(memory_backend(capacity)), data)),
        "Cache::get::<T>" => Box::new(Typed(Cache::new(Arc::new(memory_backend(capacity))), data)),
        "Cache::get::<T> over Tiered" => Box::new(Typed(
            Cache::new(Arc::new(cache_core::layers::Tiered::new(
                Arc::new(memory_backend(capacity)),
                Arc::new(memory_backend(capacity)),
                cache_core::layers::TieredConfig::default(),
            ))),
            data,
        )),
        // Profile-only: the cache-aside read, every call a hit.
        "Cache::get_or_set::<T>" => Box::new(GetOrSet(
            Cache::new(Arc::new(memory_backend(capacity))),
            data,
        )),
        // `cache::open` of `memory://` with `metrics` on.
        "Cache::get::<T> over Metered" => Box::new(Typed(
            Cache::new(Arc::new(Metered::new(memory_backend(capacity)))),
            data,
        )),
        // `cache::open` of `memory://` with `fail_open` on: its breaker's
        // healthy path, as every call through the layer takes it.
        "Cache::get::<T> over FailOpen" => Box::new(Typed(
            Cache::new(Arc::new(cache_core::layers::FailOpen::new(
                memory_backend(capacity),
                cache_core::layers::BreakerConfig::default(),
            ))),
            data,
        )),
        "lookup + decode" => Box::new(LookupDecode(Arc::new(memory_backend(capacity)), data)),
        "raw DashMap" => Box::new(RawDashMap(
            DashMap::with_capacity_and_hasher(capacity, KeyHasherBuilder::default()),
            data,
        )),
        "moka::future" => Box::new(MokaFuture(moka::future::Cache::new(capacity as u64), data)),
        "moka::sync" => Box::new(MokaSync(moka::sync::Cache::new(capacity as u64), data)),
        _ => Box::new(Quick(quick_cache::sync::Cache::new(capacity), data)),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mix {
    Get,
    GetSet,
    Set,
}

impl Mix {
    fn name(self) -> &'static str {
        match self {
            Mix::Get => "get 100% hit",
            Mix::GetSet => "get 90 / set 10",
            Mix::Set => "set 100%",
        }
    }
}

/// Runs `count` ops of `mix` from position `from` of `ops`; returns hits.
#[inline(never)]
fn work(s: &dyn Subject, ops: &[u32], from: usize, count: usize, mix: Mix) -> usize {
    let mask = ops.len() - 1;
    let mut hits = 0;
    match mix {
        Mix::Get => {
            for j in from..from + count {
                hits += usize::from(s.get(ops[j & mask] as usize));
            }
        }
        Mix::Set => {
            for j in from..from + count {
                s.set(ops[j & mask] as usize);
            }
        }
        Mix::GetSet => {
            let mut n = 0u8;
            for j in from..from + count {
                let i = ops[j & mask] as usize;
                n += 1;
                if n == 10 {
                    n = 0;
                    s.set(i);
                } else {
                    hits += usize::from(s.get(i));
                }
            }
        }
    }
    black_box(hits)
}

/// Runs `ops` ops of one implementation once, for a profiler
/// (`valgrind --tool=callgrind --toggle-collect='*throughput::work*'`).
pub(crate) fn profile(imp: &str, mix: &str, ops_count: usize) {
    let n = 10_000;
    let data = Data::new(n);
    let s: Box<dyn Subject> = if imp == "Tiered L1 hit" {
        // L2 is memory too: an L1 hit never reaches it.
        let tiered = cache_core::layers::Tiered::new(
            Arc::new(memory_backend(2 * n)),
            Arc::new(memory_backend(2 * n)),
            cache_core::layers::TieredConfig::default(),
        );
        Box::new(OursDyn(Arc::new(tiered), Arc::clone(&data)))
    } else {
        subject(imp, &data, n + n / 4)
    };
    for i in 0..n {
        s.set(i);
    }
    let mix = match mix {
        "set" => Mix::Set,
        "mixed" => Mix::GetSet,
        _ => Mix::Get,
    };
    let mut rng = Rng::new(n as u64);
    let ops: Vec<u32> = (0..1 << 20).map(|_| rng.below(n as u64) as u32).collect();
    let hits = work(&*s, &ops, 0, ops_count, mix);
    eprintln!("{imp}: {ops_count} ops, {hits} hits");
}

/// Runs the group.
pub(crate) fn run(report: &mut Report, opts: &Options) {
    let (target_secs, reps) = if opts.quick { (0.03, 5) } else { (0.12, 9) };
    let sizes: &[usize] = if opts.small_only {
        &[10_000]
    } else {
        &[10_000, 1_000_000]
    };
    let impls: Vec<&str> = IMPLS
        .iter()
        .copied()
        .filter(|i| opts.only_impl.as_deref().is_none_or(|o| o == *i))
        .collect();
    for &n in sizes {
        let data = Data::new(n);
        let capacity = n + n / 4;
        let subjects: Vec<Box<dyn Subject>> = impls
            .iter()
            .map(|name| subject(name, &data, capacity))
            .collect();
        for s in &subjects {
            for i in 0..n {
                s.set(i);
            }
        }
        // Uniform random keys; positions per thread are far apart.
        let mut rng = Rng::new(n as u64);
        let ops: Vec<u32> = (0..1 << 22).map(|_| rng.below(n as u64) as u32).collect();
        for threads in [1, 2] {
            for mix in [Mix::Get, Mix::GetSet, Mix::Set] {
                // Calibrate the op count of each subject to the target time.
                let counts: Vec<usize> = subjects
                    .iter()
                    .map(|s| {
                        let probe = 20_000;
                        let rate = ops_per_sec(1, probe, &|_, c| {
                            work(&**s, &ops, 0, c, mix);
                        });
                        ((rate * target_secs) as usize).clamp(10_000, 50_000_000)
                    })
                    .collect();
                let mut start = 0usize;
                let medians = interleaved(subjects.len(), reps, |i| {
                    start = start.wrapping_add(1 << 20);
                    let s = &*subjects[i];
                    let base = start;
                    ops_per_sec(threads, counts[i], &|t, c| {
                        work(s, &ops, base + t * (1 << 21), c, mix);
                    })
                });
                let workload = format!("{} {} keys {}t", mix.name(), short(n), threads);
                // Hits must be hits: a get cell that misses measures
                // something else, and is an error of the run.
                if mix == Mix::Get {
                    for (i, s) in subjects.iter().enumerate() {
                        let hits = work(&**s, &ops, 0, 10_000, mix);
                        if hits < 10_000 {
                            report.errors.push(format!(
                                "{GROUP} / {workload} / {}: {hits} of 10000 gets hit",
                                impls[i]
                            ));
                        }
                    }
                }
                for (i, m) in medians.iter().enumerate() {
                    report.add(GROUP, &workload, impls[i], "ops_per_sec", *m);
                }
                eprint!(".");
            }
        }
    }
}

fn short(n: usize) -> String {
    if n >= 1_000_000 {
        format!("{}M", n / 1_000_000)
    } else {
        format!("{}k", n / 1000)
    }
}
