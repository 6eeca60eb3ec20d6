//! Sweeps against reads: get latency of one reader thread over 1M entries
//! of a `MemoryBackend` while its sweeper removes what expires, against the
//! same workload with the sweeper off.
//!
//! Every run fills a fresh backend (unbounded, 1M keys `user:000000`..,
//! 64-byte values): one key in ten never expires, the others get a TTL
//! spread uniformly over 1-30 s, so about 31k entries expire every second
//! (about 7.8k per sweep at 250 ms). Measuring starts 1.5 s after the fill
//! started, when expiries are under way, and lasts a few seconds; the
//! reader (the main thread) gets uniformly random keys that stay live for
//! the whole run (no TTL, or a TTL of 12 s or more: about 66% of the
//! keys), and every get is checked to hit. The sweeper is the backend's
//! own task on a one-worker tokio runtime, so it runs on the other core;
//! with it off, the runtime is there all the same.
//!
//! Latency: the reader gets keys back to back and, on a fixed schedule
//! (one get every [`SAMPLE_EVERY`], about one get in 10-20), times one
//! get with `Instant::now` (the vDSO clock, about 20 ns, in every sample
//! alike; the reader reads the clock once per get to follow the schedule).
//! Two figures come from each sampled get, kept as sorted samples:
//! - service time: from the get's start to its end;
//! - response time: from when the get was due on the schedule to its end.
//!   A reader stalled for 5 ms does one slow get, which service time
//!   counts once; the 250 gets due meanwhile are each late, which response
//!   time counts (the "coordinated omission" correction). This is what
//!   shows a sweeper that holds a shard's lock for milliseconds.
//!
//! Runs alternate on, off, on, off...; the medians of the runs'
//! percentiles are reported. For comparison, the old design (a raw
//! `DashMap` swept by `retain` over the whole map every 250 ms from a
//! thread) runs the same reader, with and without its sweeps.

use std::hint::black_box;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cache_core::SetOptions;
use cache_memory::{MemoryBackend, MemoryConfig};
use dashmap::DashMap;

use crate::harness::{median, Rng};
use crate::hash::KeyHasherBuilder;
use crate::report::Report;
use crate::throughput::VALUE_LEN;
use crate::Options;

pub(crate) const GROUP: &str = "sweep";
/// Service-time rows.
const P50: &str = "get p50 service, 1M entries, TTL 1-30 s";
/// The p99 row (the goal's).
pub(crate) const P99: &str = "get p99 service, 1M entries, TTL 1-30 s";
/// The p99.9 row.
const P999: &str = "get p99.9 service, 1M entries, TTL 1-30 s";
/// Response-time rows (from when the get was due).
const R50: &str = "get p50 response, 1M entries, TTL 1-30 s";
/// The response-time p99 (the second goal's).
pub(crate) const R99: &str = "get p99 response, 1M entries, TTL 1-30 s";
const R999: &str = "get p99.9 response, 1M entries, TTL 1-30 s";
/// The slowest sampled get.
const MAX: &str = "get max response, 1M entries, TTL 1-30 s";
/// The sweeper running every [`SWEEP_EVERY`].
pub(crate) const ON: &str = "sweeper on (250 ms)";
/// `sweep_interval` 0: expired entries stay until read.
pub(crate) const OFF: &str = "sweeper off";
/// For comparison: a raw `DashMap` swept by `retain` every [`SWEEP_EVERY`].
const OLD_ON: &str = "old: DashMap retain/250 ms";
/// The same map, not swept.
const OLD_OFF: &str = "old: DashMap, no sweep";

const N: usize = 1_000_000;
const SWEEP_EVERY: Duration = Duration::from_millis(250);
/// One get is due to be timed every this long.
const SAMPLE_EVERY: Duration = Duration::from_micros(20);
/// Keys whose TTL is at least this are read: they outlive any run.
const LIVE_TTL: Duration = Duration::from_secs(12);
/// Measuring starts this long after the fill started (the shortest TTL is 1 s).
const SETTLE: Duration = Duration::from_millis(1500);

/// The keys, their TTLs and the ones the reader may get.
struct Workload {
    keys: Vec<String>,
    ttls: Vec<Option<Duration>>,
    live: Vec<u32>,
    value: Bytes,
}

impl Workload {
    fn new() -> Self {
        let mut rng = Rng::new(0x5eed_5eed);
        let keys: Vec<String> = (0..N).map(|i| format!("user:{i:06}")).collect();
        let ttls: Vec<Option<Duration>> = (0..N)
            .map(|i| (i % 10 != 0).then(|| Duration::from_millis(1_000 + rng.below(29_000))))
            .collect();
        let live = (0..N)
            .filter(|&i| ttls[i].is_none_or(|t| t >= LIVE_TTL))
            .map(|i| i as u32)
            .collect();
        Workload {
            keys,
            ttls,
            live,
            value: Bytes::from(vec![b'x'; VALUE_LEN]),
        }
    }
}

/// One run's figures.
struct Run {
    p50: f64,
    p99: f64,
    p999: f64,
    r50: f64,
    r99: f64,
    r999: f64,
    max: f64,
    gets_per_sec: f64,
    /// Entries the sweeper removed while the reader ran.
    expired: u64,
    misses: u64,
    /// With the sweeper off: one manual sweep of 250 ms of expiries
    /// (entries removed, time taken).
    manual_sweep: Option<(usize, Duration)>,
}

fn percentile(sorted: &[u32], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    f64::from(sorted[i])
}

/// What one reader saw in one window.
struct Reads {
    /// Every sampled get's service time, sorted.
    service: Vec<u32>,
    /// Every sampled get's response time, sorted.
    response: Vec<u32>,
    gets_per_sec: f64,
    misses: u64,
}

fn nanos(d: Duration) -> u32 {
    u32::try_from(d.as_nanos()).unwrap_or(u32::MAX)
}

/// Gets uniformly random live keys through `get` (which says whether it
/// hit) back to back for `window`, timing one get every [`SAMPLE_EVERY`].
fn read_for(w: &Workload, window: Duration, get: impl Fn(&str) -> bool) -> Reads {
    let mut rng = Rng::new(0x00c0_ffee);
    let live = w.live.len() as u64;
    let cap = (window.as_nanos() / SAMPLE_EVERY.as_nanos()) as usize + 1;
    let mut service: Vec<u32> = Vec::with_capacity(cap);
    let mut response: Vec<u32> = Vec::with_capacity(cap);
    let mut misses = 0u64;
    let mut gets = 0u64;
    let start = Instant::now();
    let end = start + window;
    let mut due = start + SAMPLE_EVERY;
    while due < end {
        let key = &w.keys[w.live[rng.below(live) as usize] as usize];
        let t = Instant::now();
        let hit = black_box(get(key));
        if t >= due {
            let done = Instant::now();
            service.push(nanos(done - t));
            response.push(nanos(done - due));
            due += SAMPLE_EVERY;
        }
        misses += u64::from(!hit);
        gets += 1;
    }
    let gets_per_sec = gets as f64 / start.elapsed().as_secs_f64();
    service.sort_unstable();
    response.sort_unstable();
    Reads {
        service,
        response,
        gets_per_sec,
        misses,
    }
}

impl Run {
    fn new(reads: Reads, expired: u64, manual_sweep: Option<(usize, Duration)>) -> Self {
        let (s, r) = (&reads.service, &reads.response);
        Run {
            p50: percentile(s, 0.50),
            p99: percentile(s, 0.99),
            p999: percentile(s, 0.999),
            r50: percentile(r, 0.50),
            r99: percentile(r, 0.99),
            r999: percentile(r, 0.999),
            max: r.last().map_or(f64::NAN, |&m| f64::from(m)),
            gets_per_sec: reads.gets_per_sec,
            expired,
            misses: reads.misses,
            manual_sweep,
        }
    }
}

fn run_once(rt: &tokio::runtime::Runtime, w: &Workload, sweeper: bool, window: Duration) -> Run {
    let _in_runtime = rt.enter();
    let every = if sweeper { SWEEP_EVERY } else { Duration::ZERO };
    let backend = MemoryBackend::with_config(MemoryConfig::default().with_sweep_interval(every));
    let filled = Instant::now();
    for (key, ttl) in w.keys.iter().zip(&w.ttls) {
        let _ = backend.set_sync(key, w.value.clone(), SetOptions::ttl(*ttl));
    }
    std::thread::sleep(SETTLE.saturating_sub(filled.elapsed()));

    let expired_before = backend.stats().expirations;
    let reads = read_for(w, window, |key| {
        backend.get_sync(key).ok().flatten().is_some()
    });
    let expired = backend.stats().expirations - expired_before;

    let manual_sweep = (!sweeper).then(|| {
        backend.sweep();
        std::thread::sleep(SWEEP_EVERY);
        let t = Instant::now();
        let removed = backend.sweep();
        (removed, t.elapsed())
    });
    drop(backend);
    Run::new(reads, expired, manual_sweep)
}

/// A `DashMap` of (value, expiry in ns since `base`; 0 never) with the
/// memory backend's hasher: the old design.
type OldMap = DashMap<Arc<str>, (Bytes, u64), KeyHasherBuilder>;

fn nanos_since(base: Instant) -> u64 {
    u64::try_from(base.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// The same workload over the old design: a raw `DashMap` whose sweeper
/// (a thread, when `retain` is on) runs `DashMap::retain` over the whole
/// map every [`SWEEP_EVERY`], holding each shard's write lock while it
/// walks the shard.
fn run_old(w: &Workload, retain: bool, window: Duration) -> Run {
    let map: OldMap = DashMap::with_hasher(Default::default());
    let base = Instant::now();
    for (key, ttl) in w.keys.iter().zip(&w.ttls) {
        let expires = ttl.map_or(0, |t| nanos_since(base) + t.as_nanos() as u64);
        map.insert(Arc::from(key.as_str()), (w.value.clone(), expires));
    }
    std::thread::sleep(SETTLE.saturating_sub(base.elapsed()));
    let stop = std::sync::atomic::AtomicBool::new(false);
    let removed = std::sync::atomic::AtomicU64::new(0);
    let reads = std::thread::scope(|s| {
        if retain {
            s.spawn(|| {
                while !stop.load(Relaxed) {
                    std::thread::sleep(SWEEP_EVERY);
                    let now = nanos_since(base);
                    let before = map.len();
                    map.retain(|_, (_, exp)| *exp == 0 || *exp > now);
                    removed.fetch_add((before - map.len()) as u64, Relaxed);
                }
            });
        }
        let reads = read_for(w, window, |key| {
            map.get(key).is_some_and(|e| {
                let exp = e.1;
                (exp == 0 || exp > nanos_since(base)) && !black_box(e.0.clone()).is_empty()
            })
        });
        stop.store(true, Relaxed);
        reads
    });
    Run::new(reads, removed.load(Relaxed), None)
}

/// The old sweeper's cost: one `retain` over a 1M-entry `DashMap` that
/// removes 250 ms worth of expiries (of the same TTL spread). Returns
/// (entries removed, time taken).
fn full_scan(w: &Workload) -> (usize, Duration) {
    let map: DashMap<Arc<str>, (Bytes, u64), KeyHasherBuilder> =
        DashMap::with_hasher(Default::default());
    for (key, ttl) in w.keys.iter().zip(&w.ttls) {
        let expires = ttl.map_or(0, |t| t.as_millis() as u64);
        map.insert(Arc::from(key.as_str()), (w.value.clone(), expires));
    }
    // The clock stands at 10 s: expiries in (10 s, 10.25 s] are due.
    let (from, to) = (10_000, 10_000 + SWEEP_EVERY.as_millis() as u64);
    let before = map.len();
    let t = Instant::now();
    map.retain(|_, (_, exp)| *exp == 0 || *exp <= from || *exp > to);
    let took = t.elapsed();
    (before - map.len(), took)
}

/// Runs the group.
pub(crate) fn run(report: &mut Report, opts: &Options) {
    // Five pairs in a full run: a response p99 is the host's as much as the
    // sweeper's (one stall of a few ms makes it), and the median of three
    // runs still moved 20x between full runs.
    let (pairs, old_pairs, window) = if opts.quick {
        (2, 1, Duration::from_secs(2))
    } else {
        (5, 2, Duration::from_secs(4))
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_time()
        .build()
        .expect("a runtime");
    let w = Workload::new();
    let show = |label: &str, r: &Run| {
        eprintln!(
            "  {label}: service p50 {:.0} p99 {:.0} p99.9 {:.0} ns; response p50 {:.0} p99 {:.0} p99.9 {:.0} max {:.0} ns; {:.2}M gets/s, {} expired by the sweeper, {} misses",
            r.p50,
            r.p99,
            r.p999,
            r.r50,
            r.r99,
            r.r999,
            r.max,
            r.gets_per_sec / 1e6,
            r.expired,
            r.misses
        );
    };
    let mut on: Vec<Run> = Vec::new();
    let mut off: Vec<Run> = Vec::new();
    for _ in 0..pairs {
        for sweeper in [true, false] {
            let r = run_once(&rt, &w, sweeper, window);
            show(if sweeper { ON } else { OFF }, &r);
            if sweeper { &mut on } else { &mut off }.push(r);
        }
    }
    let mut old_on: Vec<Run> = Vec::new();
    let mut old_off: Vec<Run> = Vec::new();
    for _ in 0..old_pairs {
        for retain in [true, false] {
            let r = run_old(&w, retain, window);
            show(if retain { OLD_ON } else { OLD_OFF }, &r);
            if retain { &mut old_on } else { &mut old_off }.push(r);
        }
    }
    let med =
        |runs: &[Run], f: fn(&Run) -> f64| median(&mut runs.iter().map(f).collect::<Vec<_>>());
    for (imp, runs) in [
        (ON, &on),
        (OFF, &off),
        (OLD_ON, &old_on),
        (OLD_OFF, &old_off),
    ] {
        report.add(GROUP, P50, imp, "latency_ns", med(runs, |r| r.p50));
        report.add(GROUP, P99, imp, "latency_ns", med(runs, |r| r.p99));
        report.add(GROUP, P999, imp, "latency_ns", med(runs, |r| r.p999));
        report.add(GROUP, R50, imp, "latency_ns", med(runs, |r| r.r50));
        report.add(GROUP, R99, imp, "latency_ns", med(runs, |r| r.r99));
        report.add(GROUP, R999, imp, "latency_ns", med(runs, |r| r.r999));
        report.add(GROUP, MAX, imp, "latency_ns", med(runs, |r| r.max));
    }
    // Each pair's on/off ratio: the host's moments of slowness (the vCPUs
    // move) reach the response p99 of one run in either state, so a
    // verdict is settled only when the pairs agree (their quartiles).
    for (row, f) in [
        (P99, (|r: &Run| r.p99) as fn(&Run) -> f64),
        (R99, |r: &Run| r.r99),
    ] {
        let values = |runs: &[Run]| runs.iter().map(f).collect::<Vec<_>>();
        crate::redis_groups::add_paired(report, (GROUP, row, ON), &values(&on), &values(&off));
    }
    let p99 = |runs: &[Run]| med(runs, |r| r.p99);
    let r99 = |runs: &[Run]| med(runs, |r| r.r99);
    report.note(
        GROUP,
        format!(
            "p99 with sweeps / without: service {:.2}x, response {:.2}x (medians of {pairs} runs each, alternated on/off, {} s each; one get timed every {} us); the old design (raw DashMap, retain every 250 ms, {old_pairs} run(s) each): service {:.2}x, response {:.2}x",
            p99(&on) / p99(&off),
            r99(&on) / r99(&off),
            window.as_secs(),
            SAMPLE_EVERY.as_micros(),
            p99(&old_on) / p99(&old_off),
            r99(&old_on) / r99(&old_off),
        ),
    );
    let expired = med(&on, |r| r.expired as f64);
    report.note(
        GROUP,
        format!(
            "the sweeper removed {expired:.0} entries per run ({:.0}/s, ~{:.0} per sweep); gets/s {:.2}M on, {:.2}M off; misses {}",
            expired / window.as_secs_f64(),
            expired / (window.as_secs_f64() / SWEEP_EVERY.as_secs_f64()),
            med(&on, |r| r.gets_per_sec) / 1e6,
            med(&off, |r| r.gets_per_sec) / 1e6,
            on.iter()
                .chain(&off)
                .chain(&old_on)
                .chain(&old_off)
                .map(|r| r.misses)
                .sum::<u64>()
        ),
    );
    let mut sweeps: Vec<(usize, Duration)> = off.iter().filter_map(|r| r.manual_sweep).collect();
    sweeps.sort_by_key(|s| s.1);
    if let Some(&(removed, took)) = sweeps.get(sweeps.len() / 2) {
        let (scanned_out, scan) = full_scan(&w);
        report.note(
            GROUP,
            format!(
                "one sweep of 250 ms of expiries: expiry index {removed} entries in {:.2} ms; old full-map retain over 1M {scanned_out} entries in {:.2} ms",
                took.as_secs_f64() * 1e3,
                scan.as_secs_f64() * 1e3
            ),
        );
    }
}
