//! `cache-bench`: the cache against its peers, in one process.
//!
//! ```text
//! cargo run --release -p cache-bench -- [--quick] [--json FILE] [--group NAME]...
//! ```
//!
//! Groups: `host` (also run with `memory_throughput`),
//! `memory_throughput`, `hit_ratio`, `bytes_per_entry`, `codec`, `redis`,
//! `typed`, `tiered`, `sweep`, `propagation` (all by default).
//! See `bench/README.md`.

mod codec;
mod goals;
mod harness;
#[path = "../../cache-memory/src/hash.rs"]
#[allow(dead_code)]
mod hash;
mod hitratio;
mod host;
mod memory;
mod propagation;
mod redis_groups;
mod report;
mod svg;
mod sweep;
mod throughput;

use std::time::Instant;

use harness::CountingAlloc;
use report::Report;

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

/// Command-line options.
#[derive(Debug, Default)]
pub(crate) struct Options {
    pub(crate) quick: bool,
    pub(crate) json: Option<String>,
    pub(crate) groups: Vec<String>,
    pub(crate) only_impl: Option<String>,
    pub(crate) small_only: bool,
    pub(crate) profile: Option<String>,
    pub(crate) svg: Option<String>,
}

impl Options {
    fn parse() -> Result<Self, String> {
        let mut opts = Options::default();
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--quick" => opts.quick = true,
                "--json" => opts.json = Some(args.next().ok_or("--json needs a file")?),
                "--group" => opts.groups.push(args.next().ok_or("--group needs a name")?),
                "--small" => opts.small_only = true,
                "--svg" => opts.svg = Some(args.next().ok_or("--svg needs a file")?),
                "--profile" => {
                    opts.profile = Some(args.next().ok_or("--profile needs get|mixed|set")?)
                }
                "--impl" => opts.only_impl = Some(args.next().ok_or("--impl needs a name")?),
                "-h" | "--help" => return Err(
                    "usage: cache-bench [--quick] [--json FILE] [--svg FILE] [--group NAME]... [--impl NAME] [--small] [--profile get|mixed|set[:OPS]|typed:CELL[:OPS]|redis:CLIENT:OPS[:TASKS]]"
                        .into(),
                ),
                other => return Err(format!("unknown argument {other:?}")),
            }
        }
        let known = [
            host::GROUP,
            throughput::GROUP,
            hitratio::GROUP,
            memory::GROUP,
            sweep::GROUP,
            codec::GROUP,
            redis_groups::REDIS,
            redis_groups::BATCH,
            redis_groups::TIERED,
            redis_groups::TYPED,
            propagation::GROUP,
        ];
        if let Some(unknown) = opts.groups.iter().find(|g| !known.contains(&g.as_str())) {
            return Err(format!(
                "unknown group {unknown:?}; the groups: {}",
                known.join(", ")
            ));
        }
        Ok(opts)
    }

    fn wants(&self, group: &str) -> bool {
        self.groups.is_empty() || self.groups.iter().any(|g| g == group)
    }
}

fn main() {
    let opts = match Options::parse() {
        Ok(opts) => opts,
        Err(msg) => {
            eprintln!("{msg}");
            std::process::exit(2);
        }
    };
    if let Some(spec) = opts
        .profile
        .as_deref()
        .and_then(|p| p.strip_prefix("redis:"))
    {
        let mut parts = spec.split(':');
        let client = parts.next().unwrap_or(spec);
        let mut number = |default| parts.next().and_then(|n| n.parse().ok()).unwrap_or(default);
        let (ops, tasks) = (number(20_000), number(50));
        redis_groups::profile_redis(client, ops, tasks);
        return;
    }
    if let Some(cell) = opts
        .profile
        .as_deref()
        .and_then(|p| p.strip_prefix("typed:"))
    {
        let (cell, ops) = cell.split_once(':').unwrap_or((cell, "200000"));
        redis_groups::profile_typed(cell, ops.parse().unwrap_or(200_000));
        return;
    }
    if let Some(mix) = &opts.profile {
        let imp = opts.only_impl.as_deref().unwrap_or("MemoryBackend direct");
        let (mix, ops) = mix.split_once(':').unwrap_or((mix, "1000000"));
        throughput::profile(imp, mix, ops.parse().unwrap_or(1_000_000));
        return;
    }
    let started = Instant::now();
    let cpu_at_start = host::CpuTimes::read();
    let mut report = Report::default();
    // The 2-thread goal is judged only where the host runs two threads'
    // reads of shared memory in parallel: the probe tells.
    if opts.wants(host::GROUP) || opts.wants(throughput::GROUP) {
        host::run(&mut report, &opts);
        print!("{}", report.table(host::GROUP, host::PRIVATE));
    }
    if opts.wants(throughput::GROUP) {
        let t = Instant::now();
        throughput::run(&mut report, &opts);
        eprintln!(
            " {} in {:.1}s",
            throughput::GROUP,
            t.elapsed().as_secs_f64()
        );
        print!("{}", report.table(throughput::GROUP, "moka::future"));
    }
    if opts.wants(hitratio::GROUP) {
        let t = Instant::now();
        hitratio::run(&mut report, opts.only_impl.as_deref(), opts.quick);
        eprintln!(" hit_ratio in {:.1}s", t.elapsed().as_secs_f64());
        print!("{}", report.table(hitratio::GROUP, "lru"));
    }
    if opts.wants(memory::GROUP) {
        let t = Instant::now();
        memory::run(&mut report, &opts);
        eprintln!(" {} in {:.1}s", memory::GROUP, t.elapsed().as_secs_f64());
        print!("{}", report.table(memory::GROUP, "moka::sync"));
    }
    if opts.wants(sweep::GROUP) {
        let t = Instant::now();
        sweep::run(&mut report, &opts);
        eprintln!(" {} in {:.1}s", sweep::GROUP, t.elapsed().as_secs_f64());
        print!("{}", report.table(sweep::GROUP, sweep::OFF));
    }
    if opts.wants(codec::GROUP) {
        codec::run(&mut report, &opts);
        print!("{}", report.table(codec::GROUP, "json"));
    }
    let redis_groups = [
        redis_groups::REDIS,
        redis_groups::BATCH,
        redis_groups::TIERED,
        redis_groups::TYPED,
    ];
    if redis_groups.iter().any(|g| opts.wants(g)) {
        let t = Instant::now();
        redis_groups::run(&mut report, &opts);
        eprintln!(
            " redis, tiered and typed in {:.1}s",
            t.elapsed().as_secs_f64()
        );
        print!("{}", report.table(redis_groups::REDIS, "raw redis-rs"));
        print!(
            "{}",
            report.table(redis_groups::BATCH, "RedisBackend 100 x get")
        );
        print!("{}", report.table(redis_groups::TYPED, "lookup + decode"));
        print!(
            "{}",
            report.table(redis_groups::TIERED, "MemoryBackend direct")
        );
    }
    if opts.wants(propagation::GROUP) {
        let t = Instant::now();
        propagation::run(&mut report, &opts);
        eprintln!(
            " {} in {:.1}s",
            propagation::GROUP,
            t.elapsed().as_secs_f64()
        );
        print!("{}", report.table(propagation::GROUP, propagation::PUBSUB));
    }
    print!("{}", goals::summary(&report));
    let steal = host::CpuTimes::read()
        .zip(cpu_at_start)
        .and_then(|(end, start)| end.steal_since(&start));
    if let Some(steal) = steal {
        println!("host: {steal:.1}% of the CPU time during the run was stolen by the hypervisor");
    }
    if let Some(path) = &opts.svg {
        if let Some(chart) = svg::hit_ratio_chart(&report) {
            if let Err(e) = std::fs::write(path, chart) {
                eprintln!("cannot write {path}: {e}");
            }
        }
    }
    if let Some(path) = &opts.json {
        if let Err(e) = std::fs::write(path, report.json_lines()) {
            eprintln!("cannot write {path}: {e}");
            std::process::exit(1);
        }
    }
    eprintln!("total {:.1}s", started.elapsed().as_secs_f64());
    if !report.errors.is_empty() {
        std::process::exit(2);
    }
}
