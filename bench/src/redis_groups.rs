//! Redis on loopback (a private `redis-server` the bench starts), the
//! two-level `Tiered`, and typed reads (decode costs).

use std::hint::black_box;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cache_core::layers::{Tiered, TieredConfig};
use cache_core::{Cache, CacheBackend, CacheKey, Codec, JsonCodec, SetOptions};
use cache_memory::MemoryBackend;
use cache_redis::{RedisBackend, RedisConfig};
use cache_testkit::redis_server::RedisServer;
use redis::aio::MultiplexedConnection;

use crate::codec::Profile;
use crate::harness::{
    dyn_get, interleaved, interleaved_rounds, median, ops_per_sec, quartiles, ready, Rng,
};
use crate::report::Report;
use crate::throughput::{memory_backend, VALUE_LEN};
use crate::Options;
use cache_core::{TypedL1, TypedL1Config};

pub(crate) const REDIS: &str = "redis";
pub(crate) const BATCH: &str = "redis_batch";
pub(crate) const TIERED: &str = "tiered";
pub(crate) const TYPED: &str = "typed";

const KEYS: usize = 10_000;

fn key(i: usize) -> String {
    format!("user:{i:06}")
}

/// The value the typed client stores: its JSON encoding is `VALUE_LEN`
/// bytes, as the raw clients' values are (the JSON *text* of it would be
/// encoded again, with escapes, and decode the slow way).
fn typed_text() -> String {
    "v".repeat(VALUE_LEN - 2)
}

fn typed_key(i: usize) -> CacheKey {
    CacheKey::new("user", format_args!("{i:06}")).expect("valid key")
}

/// A Redis client under test.
enum Client {
    Backend(RedisBackend),
    Typed(Cache),
    Raw(MultiplexedConnection),
}

impl Client {
    async fn get(&self, i: usize) -> bool {
        match self {
            Client::Backend(b) => b.get(&key(i)).await.ok().flatten().is_some(),
            Client::Typed(c) => c
                .get::<String>(&typed_key(i))
                .await
                .ok()
                .flatten()
                .is_some(),
            Client::Raw(conn) => {
                let mut conn = conn.clone();
                let v: Option<Vec<u8>> = redis::cmd("GET")
                    .arg(key(i))
                    .query_async(&mut conn)
                    .await
                    .unwrap_or(None);
                v.is_some()
            }
        }
    }

    /// Writes every key once, as the GETs of the groups expect (hits).
    async fn store_every_key(&self) {
        let value = Bytes::from(vec![b'x'; VALUE_LEN]);
        let text = typed_text();
        for i in 0..KEYS {
            self.set(i, &value, &text).await;
        }
    }

    /// Writes key `i`: `value` (raw clients) or `text` (the typed one,
    /// which stores its JSON encoding).
    async fn set(&self, i: usize, value: &Bytes, text: &str) {
        match self {
            Client::Backend(b) => {
                let _ = b.set(&key(i), value.clone(), SetOptions::default()).await;
            }
            Client::Typed(c) => {
                let _ = c.set(&typed_key(i), text).await;
            }
            Client::Raw(conn) => {
                let mut conn = conn.clone();
                let _: redis::RedisResult<()> = redis::cmd("SET")
                    .arg(key(i))
                    .arg(&value[..])
                    .query_async(&mut conn)
                    .await;
            }
        }
    }
}

/// `tasks` tasks doing `total / tasks` ops each; ops per second, and with
/// `timed` each op's latency in ns (two clock reads per op, the same for
/// every client; the profiles run untimed).
async fn load(
    client: Arc<Client>,
    tasks: usize,
    total: usize,
    set: bool,
    timed: bool,
) -> (f64, Vec<u32>) {
    let per = (total / tasks).max(1);
    let value = Bytes::from(vec![b'x'; VALUE_LEN]);
    let text = typed_text();
    let start = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            let client = Arc::clone(&client);
            // Each task its own value (as each request of a service has):
            // clones of one `Bytes` would bump one reference count from
            // every task on every thread, a contention no service has.
            let (value, text) = (Bytes::copy_from_slice(&value), text.clone());
            tokio::spawn(async move {
                let mut rng = Rng::new(t as u64 + 1);
                let mut latencies = Vec::with_capacity(if timed { per } else { 0 });
                for _ in 0..per {
                    let i = rng.below(KEYS as u64) as usize;
                    let began = timed.then(Instant::now);
                    if set {
                        client.set(i, &value, &text).await;
                    } else {
                        black_box(client.get(i).await);
                    }
                    if let Some(began) = began {
                        latencies
                            .push(u32::try_from(began.elapsed().as_nanos()).unwrap_or(u32::MAX));
                    }
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(if timed { per * tasks } else { 0 });
    for h in handles {
        if let Ok(l) = h.await {
            latencies.extend(l);
        }
    }
    let rate = (per * tasks) as f64 / start.elapsed().as_secs_f64();
    (rate, latencies)
}

/// The `p`-th percentile (0..=1) of `ns`, in microseconds; sorts `ns`.
fn percentile_us(ns: &mut [u32], p: f64) -> f64 {
    if ns.is_empty() {
        return f64::NAN;
    }
    ns.sort_unstable();
    let rank = ((ns.len() as f64 * p).ceil() as usize).clamp(1, ns.len());
    f64::from(ns[rank - 1]) / 1e3
}

/// One `redis-benchmark` run: ops per second and p50 / p99 latency (us),
/// for SET and for GET.
#[derive(Clone, Copy)]
struct BenchmarkRun {
    set: [f64; 3],
    get: [f64; 3],
}

/// `redis-benchmark` against the same server: SET and GET, each as
/// (rps, p50 us, p99 us) from its CSV (columns found by their header).
fn redis_benchmark(port: u16, clients: usize, requests: usize) -> Option<BenchmarkRun> {
    let out = Command::new("redis-benchmark")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["-c", &clients.to_string(), "-n", &requests.to_string()])
        .args(["-d", &VALUE_LEN.to_string(), "-r", &KEYS.to_string()])
        .args(["-t", "set,get", "--csv"])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let fields = |line: &str| -> Vec<String> {
        line.split(',')
            .map(|f| f.trim().trim_matches('"').to_owned())
            .collect()
    };
    let header = fields(text.lines().find(|l| l.starts_with("\"test\""))?);
    let column = |name: &str| header.iter().position(|h| h == name);
    let (rps, p50, p99) = (
        column("rps")?,
        column("p50_latency_ms")?,
        column("p99_latency_ms")?,
    );
    let row = |name: &str| -> Option<[f64; 3]> {
        let row = fields(
            text.lines()
                .find(|l| l.starts_with(&format!("\"{name}\"")))?,
        );
        let at = |i: usize| row.get(i)?.parse::<f64>().ok();
        Some([at(rps)?, at(p50)? * 1e3, at(p99)? * 1e3])
    };
    Some(BenchmarkRun {
        set: row("SET")?,
        get: row("GET")?,
    })
}

fn have(binary: &str) -> bool {
    Command::new(binary)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Runs the Redis, Tiered and typed groups (those in `opts`).
pub(crate) fn run(report: &mut Report, opts: &Options) {
    if !have("redis-server") {
        eprintln!(
            "skipping {REDIS}, {BATCH}, {TIERED}, {TYPED}: redis-server not found \
             (install it with `sudo apt-get install -y redis-server`)"
        );
        return;
    }
    let server = RedisServer::builder()
        .args(["--save", "", "--appendonly", "no"])
        .spawn();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let url = server.url().to_owned();
    let backend = rt
        .block_on(RedisBackend::connect(
            RedisConfig::from_url(&url)
                .expect("url")
                .with_connections(1),
        ))
        .expect("connects to the private redis-server");
    let raw = rt
        .block_on(async {
            redis::Client::open(url.as_str())?
                .get_multiplexed_async_connection()
                .await
        })
        .expect("raw connection");
    let typed = Cache::new(Arc::new(backend.clone()));
    let clients = [
        ("RedisBackend", Arc::new(Client::Backend(backend.clone()))),
        ("Cache::get::<T>", Arc::new(Client::Typed(typed.clone()))),
        (RAW, Arc::new(Client::Raw(raw.clone()))),
    ];
    // Preload: every client's keys exist.
    rt.block_on(async {
        for (_, c) in &clients {
            load(Arc::clone(c), 50, KEYS * 2, true, false).await;
        }
        // The raw client reads the keys the backend writes.
        clients[0].1.store_every_key().await;
        clients[1].1.store_every_key().await;
    });

    if opts.wants(REDIS) {
        redis_group(report, opts, &rt, &clients, server.port());
    }

    if opts.wants(BATCH) {
        let reps = if opts.quick { 5 } else { 11 };
        let iters = if opts.quick { 30 } else { 100 };
        let keys: Vec<String> = (0..100).map(|i| key(i * 97)).collect();
        let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        let tkeys: Vec<CacheKey> = (0..100).map(|i| typed_key(i * 97)).collect();
        let names = [
            "RedisBackend get_many (MGET)",
            "raw redis-rs MGET",
            "Cache::get_many::<T>",
            "RedisBackend 100 x get",
        ];
        let medians = interleaved(names.len(), reps, |i| {
            let t = Instant::now();
            rt.block_on(async {
                for _ in 0..iters {
                    match i {
                        0 => drop(black_box(backend.get_many(&refs).await)),
                        1 => {
                            let mut conn = raw.clone();
                            let v: redis::RedisResult<Vec<Option<Vec<u8>>>> =
                                redis::cmd("MGET").arg(&refs).query_async(&mut conn).await;
                            drop(black_box(v));
                        }
                        2 => drop(black_box(typed.get_many::<String>(&tkeys).await)),
                        _ => {
                            for k in &refs {
                                drop(black_box(backend.get(k).await));
                            }
                        }
                    }
                }
            });
            t.elapsed().as_nanos() as f64 / iters as f64
        });
        for (i, m) in medians.iter().enumerate() {
            report.add(
                BATCH,
                "100 keys, 64 B values, 1 task",
                names[i],
                "ns_per_op",
                *m,
            );
        }
        eprint!(".");
    }

    // Tiered: L1 memory over L2 Redis; every key has an L1 copy.
    let l1 = Arc::new(memory_backend(KEYS * 2));
    let tiered = Arc::new(Tiered::new(
        l1.clone(),
        Arc::new(backend.clone()),
        TieredConfig::default().with_l1_max_ttl(Duration::from_secs(3600)),
    ));
    let profile_json: Vec<Bytes> = (0..KEYS)
        .map(|i| {
            JsonCodec
                .encode(&Profile::sample(i as u64))
                .expect("encodes")
        })
        .collect();
    rt.block_on(async {
        for i in 0..KEYS {
            let _ = tiered
                .set(
                    &key(i),
                    Bytes::from(vec![b'x'; VALUE_LEN]),
                    SetOptions::default(),
                )
                .await;
        }
    });

    if opts.wants(TIERED) {
        let (target, reps) = if opts.quick { (0.03, 5) } else { (0.12, 15) };
        let keys: Vec<String> = (0..KEYS).map(key).collect();
        let mut rng = Rng::new(7);
        let order: Vec<usize> = (0..1 << 16)
            .map(|_| rng.below(KEYS as u64) as usize)
            .collect();
        let tiered_dyn: &dyn CacheBackend = &*tiered;
        let l1_dyn: &dyn CacheBackend = &*l1;
        let names = [
            "MemoryBackend direct",
            "MemoryBackend dyn",
            "Tiered L1 hit",
            "Redis GET (1 task)",
        ];
        // Threads 1 and 2: at 2 the L1 reads of both threads must scale as
        // the backend's own do (no counter every hit bumps on one line).
        for threads in [1, 2] {
            let run_one = |i: usize, count: usize| -> f64 {
                if i == 3 {
                    return rt
                        .block_on(load(Arc::clone(&clients[0].1), 1, count, false, false))
                        .0;
                }
                ops_per_sec(threads, count, &|t, c| {
                    let mut hits = 0usize;
                    let from = t * 0x8000;
                    for j in from..from + c {
                        let k = &keys[order[j & 0xffff]];
                        hits += usize::from(match i {
                            0 => l1.get_sync(k).ok().flatten().is_some(),
                            1 => dyn_get(l1_dyn, k).ok().flatten().is_some(),
                            _ => dyn_get(tiered_dyn, k).ok().flatten().is_some(),
                        });
                    }
                    black_box(hits);
                })
            };
            // Redis only at 1 thread (it is the L1's point of comparison).
            let cells = if threads == 1 { names.len() } else { 3 };
            let counts: Vec<usize> = (0..cells)
                .map(|i| {
                    ((run_one(i, if i == 3 { 2_000 } else { 20_000 }) * target) as usize).max(2_000)
                        * threads
                })
                .collect();
            let rounds = interleaved_rounds(cells, reps, |i| run_one(i, counts[i]));
            let workload = if threads == 1 {
                "get hit, 10k keys, 64 B, 1 thread".to_owned()
            } else {
                format!("get hit, 10k keys, 64 B, {threads} threads")
            };
            for (i, values) in rounds.iter().enumerate() {
                let m = median(&mut values.clone());
                report.add(TIERED, &workload, names[i], "ops_per_sec", m);
            }
            // The L1 hit against the direct read paired by round, as the
            // goal judges it: a round that ran slow for both cancels out.
            let paired = add_paired(
                report,
                (TIERED, &workload, names[2]),
                &rounds[2],
                &rounds[0],
            );
            report.note(
                TIERED,
                format!(
                    "{workload}: Tiered L1 hit {paired:.2}x MemoryBackend direct, \
                     paired by round (median of each round's ratio)"
                ),
            );
        }
        eprint!(".");
    }

    if opts.wants(TYPED) {
        typed_group(report, opts, &rt, &tiered, &profile_json);
    }
    drop(server);
}

/// The `redis` group: GET and SET at 1, 50 and 200 tasks for each client
/// (interleaved rounds) and `redis-benchmark`; ops per second (the median
/// round) and per-op latency p50 / p99 (over every op of every round).
fn redis_group(
    report: &mut Report,
    opts: &Options,
    rt: &tokio::runtime::Runtime,
    clients: &[(&str, Arc<Client>)],
    port: u16,
) {
    let raw = clients.iter().position(|(name, _)| *name == RAW);
    for tasks in [1, 50, 200] {
        let suffix = if tasks == 1 { "" } else { "s" };
        // The concurrent cells swing most between rounds (the host moves
        // the vCPUs): more rounds there, where a round is short.
        let reps = match (opts.quick, tasks) {
            (true, _) => 3,
            (false, 1) => 7,
            (false, _) => 11,
        };
        for set in [false, true] {
            let total = if tasks == 1 { 15_000 } else { 100_000 };
            let total = if opts.quick { total } else { total * 3 };
            let mut latencies: Vec<Vec<u32>> = vec![Vec::new(); clients.len()];
            let mut rounds: Vec<Vec<f64>> = vec![Vec::new(); clients.len()];
            let medians = interleaved(clients.len(), reps, |i| {
                let (rate, l) =
                    rt.block_on(load(Arc::clone(&clients[i].1), tasks, total, set, true));
                latencies[i].extend(l);
                rounds[i].push(rate);
                rate
            });
            let workload = format!(
                "{} 64 B, {tasks} task{suffix}",
                if set { "SET" } else { "GET" }
            );
            for (i, m) in medians.iter().enumerate() {
                report.add(REDIS, &workload, clients[i].0, "ops_per_sec", *m);
            }
            if let Some(raw) = raw {
                for (i, (name, _)) in clients.iter().enumerate() {
                    add_paired(report, (REDIS, &workload, name), &rounds[i], &rounds[raw]);
                }
            }
            for (i, l) in latencies.iter_mut().enumerate() {
                report.add(REDIS, &workload, clients[i].0, P50, percentile_us(l, 0.50));
                report.add(REDIS, &workload, clients[i].0, P99, percentile_us(l, 0.99));
            }
            eprint!(".");
        }
        let n = if tasks == 1 { 20_000 } else { 200_000 };
        let runs: Vec<BenchmarkRun> = (0..if opts.quick { 1 } else { 3 })
            .filter_map(|_| redis_benchmark(port, tasks, n))
            .collect();
        if !runs.is_empty() {
            for (op, pick) in [("GET", 0), ("SET", 1)] {
                let figure = |k: usize| {
                    let mut v: Vec<f64> = runs
                        .iter()
                        .map(|r| if pick == 0 { r.get[k] } else { r.set[k] })
                        .collect();
                    median(&mut v)
                };
                let workload = format!("{op} 64 B, {tasks} task{suffix}");
                report.add(
                    REDIS,
                    &workload,
                    "redis-benchmark",
                    "ops_per_sec",
                    figure(0),
                );
                report.add(REDIS, &workload, "redis-benchmark", P50, figure(1));
                report.add(REDIS, &workload, "redis-benchmark", P99, figure(2));
            }
        }
    }
    report.note(REDIS, "RedisBackend and raw redis-rs share one multiplexed connection each; redis-benchmark opens one connection per task (-c) and is the server's own ceiling.");
    report.note(REDIS, latency_table(report));
    report.note(REDIS, paired_table(report));
}

/// The raw client's name in the `redis` group.
pub(crate) const RAW: &str = "raw redis-rs";

/// Metric of the `redis` group's paired ratios: the median, over rounds, of
/// a client's ops per second over the raw client's in the same round.
/// Rounds run the clients back to back, so a change of the host's speed
/// between rounds (the vCPUs move) cancels out of each round's ratio; the
/// ratio of the medians keeps it.
pub(crate) const PAIRED: &str = "paired_ratio";

/// Metrics of a paired ratio's spread: the first and third quartiles of
/// the rounds' ratios. A goal's bound between them is a verdict this run
/// does not settle: the rounds fall on both sides of it.
pub(crate) const PAIRED_Q1: &str = "paired_q1";
/// See [`PAIRED_Q1`].
pub(crate) const PAIRED_Q3: &str = "paired_q3";

/// Each round's `ours[r] / raw[r]`.
fn round_ratios(ours: &[f64], raw: &[f64]) -> Vec<f64> {
    ours.iter()
        .zip(raw)
        .filter(|(_, raw)| **raw > 0.0)
        .map(|(ours, raw)| ours / raw)
        .collect()
}

/// Records `imp`'s ratio to its reference paired by round: the median
/// ([`PAIRED`]) and quartiles ([`PAIRED_Q1`], [`PAIRED_Q3`]) of the rounds'
/// ratios. Returns the median.
pub(crate) fn add_paired(
    report: &mut Report,
    (group, workload, imp): (&str, &str, &str),
    ours: &[f64],
    raw: &[f64],
) -> f64 {
    let mut ratios = round_ratios(ours, raw);
    let (q1, q3) = quartiles(&mut ratios);
    let paired = median(&mut ratios);
    report.add(group, workload, imp, PAIRED, paired);
    report.add(group, workload, imp, PAIRED_Q1, q1);
    report.add(group, workload, imp, PAIRED_Q3, q3);
    paired
}

/// What [`add_paired`] recorded for a cell: the median and quartiles of
/// its rounds' ratios.
pub(crate) fn paired_of(
    report: &Report,
    (group, workload, imp): (&str, &str, &str),
) -> Option<(f64, f64, f64)> {
    let find = |metric| report.value_of(group, workload, imp, metric);
    Some((find(PAIRED)?, find(PAIRED_Q1)?, find(PAIRED_Q3)?))
}

/// The `redis` group's paired ratios as a table, printed as a note.
fn paired_table(report: &Report) -> String {
    let rows: Vec<&crate::report::Record> = report
        .records
        .iter()
        .filter(|r| r.group == REDIS && r.metric == PAIRED && r.imp != RAW)
        .collect();
    let (workloads, impls) = crate::report::axes(rows.iter().copied());
    let width = workloads.iter().map(|w| w.len()).max().unwrap_or(8).max(8);
    let mut out = format!(
        "paired ratio to raw redis-rs (median over rounds of the round's ratio)\n{:<width$}",
        "workload"
    );
    for imp in &impls {
        out.push_str(&format!(" | {imp:>w$}", w = imp.len().max(12)));
    }
    for w in &workloads {
        out.push_str(&format!("\n{w:<width$}"));
        for imp in &impls {
            let cell = report
                .value_of(REDIS, w, imp, PAIRED)
                .map_or("-".to_owned(), |v| format!("{v:.2}x"));
            out.push_str(&format!(" | {cell:>w$}", w = imp.len().max(12)));
        }
    }
    out
}

/// Metric of the per-op latency records of the `redis` group: median (p50)
/// and 99th percentile, in microseconds.
pub(crate) const P50: &str = "p50_us";
/// See [`P50`].
pub(crate) const P99: &str = "p99_us";

/// The `redis` group's latencies as a second table (`p50 / p99` in us per
/// cell), printed as a note under its throughput table.
fn latency_table(report: &Report) -> String {
    let (workloads, impls) = crate::report::axes(
        report
            .records
            .iter()
            .filter(|r| r.group == REDIS && r.metric == P50),
    );
    let find = |w: &str, i: &str, m: &str| report.value_of(REDIS, w, i, m);
    let width = workloads.iter().map(|w| w.len()).max().unwrap_or(8).max(8);
    let mut out = format!("per-op latency, p50 / p99 in us\n{:<width$}", "workload");
    for imp in &impls {
        out.push_str(&format!(" | {imp:>w$}", w = imp.len().max(15)));
    }
    for w in &workloads {
        out.push_str(&format!("\n{w:<width$}"));
        for imp in &impls {
            let cell = match (find(w, imp, P50), find(w, imp, P99)) {
                (Some(p50), Some(p99)) => format!("{p50:.0} / {p99:.0}"),
                _ => "-".to_owned(),
            };
            out.push_str(&format!(" | {cell:>w$}", w = imp.len().max(15)));
        }
    }
    out
}

fn typed_group(
    report: &mut Report,
    opts: &Options,
    rt: &tokio::runtime::Runtime,
    tiered: &Arc<Tiered>,
    profile_json: &[Bytes],
) {
    let (iters, reps) = if opts.quick {
        (20_000, 5)
    } else {
        (100_000, 15)
    };
    let memory = Arc::new(MemoryBackend::with_config(
        cache_memory::MemoryConfig::default()
            .with_max_entries(KEYS * 2)
            .with_sweep_interval(Duration::ZERO),
    ));
    let on_memory = Cache::new(memory.clone());
    let on_tiered = Cache::new(tiered.clone());
    let keys: Vec<CacheKey> = (0..KEYS).map(typed_key).collect();
    let full: Vec<String> = rt.block_on(async {
        let mut full = Vec::with_capacity(KEYS);
        for (i, k) in keys.iter().enumerate() {
            let p = Profile::sample(i as u64);
            let _ = on_memory.set(k, &p).await;
            let _ = on_tiered.set(k, &p).await;
            full.push(on_memory.full_key(k).await.expect("key"));
        }
        full
    });
    let _ = profile_json;
    let mut rng = Rng::new(9);
    let order: Vec<usize> = (0..1 << 16)
        .map(|_| rng.below(KEYS as u64) as usize)
        .collect();
    let l1_memory = TypedL1::new(
        on_memory.clone(),
        TypedL1Config::default().with_max_entries(KEYS * 2),
    );
    let l1_tiered = TypedL1::new(
        on_tiered.clone(),
        TypedL1Config::default().with_max_entries(KEYS * 2),
    );
    rt.block_on(async {
        for k in &keys {
            let _ = l1_memory.get::<Profile>(k).await;
            let _ = l1_tiered.get::<Profile>(k).await;
        }
    });
    let names = [
        "map lookup (get_sync)",
        "JSON decode only",
        "lookup + decode",
        "Cache::get::<T> memory",
        "Cache::get::<T> Tiered L1",
        "TypedL1 hit (memory)",
        "TypedL1 hit (Tiered)",
        "quick_cache Arc<T>",
    ];
    // The peer of the decoded L1: a concurrent map of the same keys to
    // `Arc`s of the same decoded struct.
    let quick: quick_cache::sync::Cache<CacheKey, Arc<Profile>> =
        quick_cache::sync::Cache::new(KEYS * 2);
    for (i, k) in keys.iter().enumerate() {
        quick.insert(k.clone(), Arc::new(Profile::sample(i as u64)));
    }
    let sample = JsonCodec.encode(&Profile::sample(1)).expect("encodes");
    // Inside the runtime: a typed read may refresh its category's
    // generation from L2 (once a second).
    let rounds = interleaved_rounds(names.len(), reps, |i| {
        rt.block_on(async {
            let t = Instant::now();
            for j in 0..iters {
                let k = order[j & 0xffff];
                match i {
                    0 => drop(black_box(memory.get_sync(&full[k]))),
                    1 => drop(black_box(JsonCodec.decode::<Profile>(black_box(&sample)))),
                    2 => {
                        let bytes = memory.get_sync(&full[k]).ok().flatten().unwrap_or_default();
                        drop(black_box(JsonCodec.decode::<Profile>(&bytes)));
                    }
                    3 => drop(black_box(on_memory.get::<Profile>(&keys[k]).await)),
                    4 => drop(black_box(on_tiered.get::<Profile>(&keys[k]).await)),
                    5 => drop(black_box(l1_memory.get::<Profile>(&keys[k]).await)),
                    6 => drop(black_box(l1_tiered.get::<Profile>(&keys[k]).await)),
                    _ => drop(black_box(quick.get(&keys[k]))),
                }
            }
            t.elapsed().as_nanos() as f64 / iters as f64
        })
    });
    let workload = format!("get hit, ~{} B struct, 1 thread", sample.len());
    // The goals' pairs, also as each round's ratio (then the median): the
    // host's drift between rounds cancels out of it.
    let at = |name: &str| names.iter().position(|n| *n == name).expect("a cell");
    // The group's own metric first (see `Report::value`); `median` sorts
    // a copy, the rounds stay in round order for the pairs.
    for (i, values) in rounds.iter().enumerate() {
        report.add(
            TYPED,
            &workload,
            names[i],
            "ns_per_op",
            median(&mut values.clone()),
        );
    }
    let mut note = String::from("paired by round (median of each round's ratio):");
    for (ours, floor, _) in TYPED_GOALS {
        let paired = add_paired(
            report,
            (TYPED, &workload, ours),
            &rounds[at(ours)],
            &rounds[at(floor)],
        );
        note.push_str(&format!(" {ours} {paired:.2}x {floor};"));
    }
    report.note(TYPED, note);
    eprint!(".");
}

/// The typed group's goals: a cell, the cell it is measured against each
/// round, and the most their paired ratio may be.
pub(crate) const TYPED_GOALS: [(&str, &str, f64); 3] = [
    ("Cache::get::<T> memory", "lookup + decode", 1.15),
    ("TypedL1 hit (memory)", "quick_cache Arc<T>", 2.0),
    ("TypedL1 hit (Tiered)", "quick_cache Arc<T>", 2.0),
];

/// Runs `ops` typed reads of one kind on memory once, for a profiler
/// (`valgrind --tool=callgrind --toggle-collect='*typed_work*'`); `cell` is
/// `lookup`, `lookup+decode`, `get` (`Cache::get::<T>`), `l1` (`TypedL1` hit)
/// or `quick` (`quick_cache Arc<T>`).
pub(crate) fn profile_typed(cell: &str, ops: usize) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let memory = Arc::new(memory_backend(KEYS * 2));
    let cache = Cache::new(memory.clone());
    let l1 = TypedL1::new(
        cache.clone(),
        TypedL1Config::default().with_max_entries(KEYS * 2),
    );
    let keys: Vec<CacheKey> = (0..KEYS).map(typed_key).collect();
    let full: Vec<String> = rt.block_on(async {
        let mut full = Vec::new();
        for (i, k) in keys.iter().enumerate() {
            let _ = cache.set(k, &Profile::sample(i as u64)).await;
            full.push(cache.full_key(k).await.expect("key"));
        }
        for k in &keys {
            let _ = l1.get::<Profile>(k).await;
        }
        full
    });
    let quick = quick_cache::sync::Cache::new(KEYS * 2);
    for (i, k) in keys.iter().enumerate() {
        quick.insert(k.clone(), Arc::new(Profile::sample(i as u64)));
    }
    let _guard = rt.enter();
    let maps = TypedMaps {
        memory: &memory,
        cache: &cache,
        l1: &l1,
        quick: &quick,
    };
    let done = typed_work(cell, ops, &maps, &keys, &full);
    eprintln!("{cell}: {done} ops");
}

/// What [`typed_work`] reads from.
struct TypedMaps<'a> {
    memory: &'a MemoryBackend,
    cache: &'a Cache,
    l1: &'a TypedL1,
    quick: &'a quick_cache::sync::Cache<CacheKey, Arc<Profile>>,
}

#[inline(never)]
fn typed_work(
    cell: &str,
    ops: usize,
    maps: &TypedMaps<'_>,
    keys: &[CacheKey],
    full: &[String],
) -> usize {
    let TypedMaps {
        memory,
        cache,
        l1,
        quick,
    } = maps;
    let mut done = 0;
    for j in 0..ops {
        let k = (j * 7919) % KEYS;
        done += usize::from(match cell {
            "lookup" => memory.get_sync(&full[k]).ok().flatten().is_some(),
            "decode" | "lookup+decode" => {
                let bytes = memory.get_sync(&full[k]).ok().flatten().unwrap_or_default();
                JsonCodec.decode::<Profile>(&bytes).is_ok()
            }
            "get" => ready(cache.get::<Profile>(&keys[k]))
                .ok()
                .flatten()
                .is_some(),
            "quick" => quick.get(&keys[k]).is_some(),
            _ => ready(l1.get::<Profile>(&keys[k])).ok().flatten().is_some(),
        });
    }
    done
}

/// Runs `ops` GETs of stored keys from `tasks` tasks with one Redis client
/// (`backend`, `typed` or `raw`) against a private server, for a profiler:
/// the difference of two runs' instruction counts over the difference of
/// their ops is the client's cost per GET.
pub(crate) fn profile_redis(client: &str, ops: usize, tasks: usize) {
    let server = RedisServer::builder()
        .args(["--save", "", "--appendonly", "no"])
        .spawn();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let url = server.url().to_owned();
    let c = rt.block_on(async {
        match client {
            "raw" => Client::Raw(
                redis::Client::open(url.as_str())
                    .expect("url")
                    .get_multiplexed_async_connection()
                    .await
                    .expect("connects"),
            ),
            other => {
                let backend = RedisBackend::connect(
                    RedisConfig::from_url(&url)
                        .expect("url")
                        .with_connections(1),
                )
                .await
                .expect("connects");
                if other == "typed" {
                    Client::Typed(Cache::new(Arc::new(backend)))
                } else {
                    Client::Backend(backend)
                }
            }
        }
    });
    // Every key exists, as in the `redis` group: the GETs hit (and the
    // typed client decodes), and the typed client's category generation
    // is stored before the GETs begin.
    rt.block_on(c.store_every_key());
    let c = Arc::new(c);
    let (rate, _) = rt.block_on(load(c, tasks, ops, false, false));
    eprintln!("{client}: {ops} GETs from {tasks} tasks at {rate:.0}/s");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_paired_ratio_is_the_median_of_each_rounds_ratio() {
        let mut report = Report::default();
        let mut paired = |ours: &[f64], raw: &[f64]| {
            let median = add_paired(&mut report, (REDIS, "w", "ours"), ours, raw);
            let find = |metric| report.value_of(REDIS, "w", "ours", metric);
            let recorded = (find(PAIRED), find(PAIRED_Q1), find(PAIRED_Q3));
            report.records.clear();
            (median, recorded)
        };
        // The raw client's round 3 ran on a slow host: ratio of medians
        // 200/150 = 1.33, the rounds' ratios 1.0, 1.0 and 2.0.
        let ours = [100.0, 200.0, 300.0];
        let raw = [100.0, 200.0, 150.0];
        assert_eq!(
            paired(&ours, &raw),
            (1.0, (Some(1.0), Some(1.0), Some(1.5)))
        );
        // Rounds' ratios 1.0, 0.5, 0.75: median 0.75, quartiles between
        // ranks.
        assert_eq!(
            paired(&[100.0, 50.0, 75.0], &[100.0, 100.0, 100.0]),
            (0.75, (Some(0.75), Some(0.625), Some(0.875)))
        );
        assert!(paired(&[], &[]).0.is_nan());
    }

    #[test]
    fn the_typed_value_encodes_to_value_len_bytes_without_escapes() {
        let encoded = serde_json::to_vec(&typed_text()).expect("a string encodes");
        assert_eq!(encoded.len(), VALUE_LEN);
        assert_eq!(encoded.iter().filter(|&&b| b == b'\\').count(), 0);
    }
}
