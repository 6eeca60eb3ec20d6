//! Load comparison of the tasks API: `GET /tasks` latency with the cache
//! and without it, at the same request rate, through real HTTP on
//! loopback. A bench, not a test: it prints a table and asserts nothing.
//!
//! ```text
//! cargo bench -p cache-examples --bench tasks_api_load
//! BENCH_RATE=2000 BENCH_SECS=10 cargo bench -p cache-examples --bench tasks_api_load
//! CACHE_URL=redis://127.0.0.1:6379 cargo bench -p cache-examples --bench tasks_api_load   # adds a Redis row
//! ```
//!
//! Setup: 200 users with 50 tasks each in SQLite; `BENCH_RATE` requests
//! a second (default 1000) for `BENCH_SECS` seconds (default 5) from 64
//! keep-alive connections, open loop: each request has a scheduled send
//! time, and a request that waits behind a slow one is measured from its
//! scheduled time, so queueing shows in the figures. 95% are lists of a
//! random user, 5% create a task (which invalidates that user's list).
//! Each setup runs twice: with the database in-process (SQLite as it is)
//! and with 1 ms added per query, as a database across the network
//! would. Client and server share the process (and the machine's cores).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cache::{CacheBackend, CacheConfig, Rule};
use cache_examples::http::HttpClient;
use cache_examples::stack::ExampleConfig;
use cache_examples::tasks_api::{self, Db, TasksApi};

const USERS: usize = 200;
const TASKS_PER_USER: usize = 50;
const CONNECTIONS: usize = 64;
const WRITE_PERCENT: u32 = 5;

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Latencies of the lists, and what went wrong.
#[derive(Default)]
struct Run {
    lists: Vec<Duration>,
    writes: usize,
    errors: usize,
    elapsed: Duration,
}

async fn load(addr: SocketAddr, tokens: Arc<Vec<String>>, rate: f64, secs: f64) -> Run {
    let interval = Duration::from_secs_f64(CONNECTIONS as f64 / rate);
    let started = tokio::time::Instant::now() + Duration::from_millis(20);
    let end = started + Duration::from_secs_f64(secs);
    let mut workers = Vec::new();
    for worker in 0..CONNECTIONS {
        let tokens = Arc::clone(&tokens);
        workers.push(tokio::spawn(async move {
            let mut http = HttpClient::new(addr);
            let mut run = Run::default();
            let mut busy_until = started;
            let offset = Duration::from_secs_f64(worker as f64 / rate);
            for k in 0u32.. {
                let scheduled = started + offset + interval * k;
                if scheduled >= end {
                    break;
                }
                tokio::time::sleep_until(scheduled).await;
                // Behind schedule because the previous request ran long:
                // measure from the scheduled time. Otherwise from the send
                // (the timer's own lateness is not the server's).
                let from = if busy_until > scheduled {
                    scheduled
                } else {
                    tokio::time::Instant::now()
                };
                let token = &tokens[fastrand::usize(..tokens.len())];
                let write = fastrand::u32(..100) < WRITE_PERCENT;
                let response = if write {
                    let body = serde_json::json!({ "title": "another task" });
                    http.send("POST", "/tasks", Some(token), Some(&body)).await
                } else {
                    http.send("GET", "/tasks", Some(token), None).await
                };
                let done = tokio::time::Instant::now();
                busy_until = done;
                match response {
                    Ok(r) if r.status < 300 => {
                        if write {
                            run.writes += 1;
                        } else {
                            run.lists.push(done - from);
                        }
                    }
                    _ => run.errors += 1,
                }
            }
            run
        }));
    }
    let mut total = Run::default();
    for worker in workers {
        let run = worker.await.expect("load worker");
        total.lists.extend(run.lists);
        total.writes += run.writes;
        total.errors += run.errors;
    }
    total.elapsed = started.elapsed();
    total
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

async fn setup(
    cache_url: Option<&str>,
    db_latency: Duration,
) -> Result<(TasksApi, Arc<Vec<String>>), Box<dyn std::error::Error>> {
    let db = Db::open(":memory:")?;
    let mut tokens = Vec::with_capacity(USERS);
    for u in 0..USERS {
        let name = format!("user{u}");
        let id = db.create_user(&name, "password").await?;
        for t in 0..TASKS_PER_USER {
            db.insert_task(id, &format!("task {t} of {name}")).await?;
        }
    }
    let db = db.with_query_latency(db_latency);
    let unlimited = Rule::per_minute(100_000_000);
    let api = match cache_url {
        None => {
            let backend: Arc<dyn CacheBackend> = Arc::new(cache::memory::MemoryBackend::new());
            let limiter = tasks_api::rate_limiter(backend, "bench", unlimited)?;
            TasksApi::new(db, None, limiter)
        }
        Some(url) => {
            // The plain backend, no production stack (no L1 in front of
            // Redis): the rows compare a round trip with none.
            let mut config = CacheConfig::from_url(url);
            config.prefix = format!("tasks-bench-{}", fastrand::u32(..));
            TasksApi::open(&ExampleConfig::as_given(config), db, unlimited).await?
        }
    };
    // Sessions live in the API's cache: log in through it.
    for u in 0..USERS {
        tokens.push(api.login(&format!("user{u}"), "password").await?);
    }
    Ok((api, Arc::new(tokens)))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // `cargo bench` passes `--bench`; a filter argument is ignored.
    let rate: f64 = env("BENCH_RATE", 1000.0);
    let secs: f64 = env("BENCH_SECS", 5.0);
    let redis = std::env::var("CACHE_URL")
        .ok()
        .filter(|u| u.starts_with("redis"));
    let mut setups: Vec<(&str, Option<String>)> = vec![
        ("no cache", None),
        ("memory cache", Some("memory://".to_owned())),
    ];
    if let Some(url) = redis {
        setups.push(("redis cache", Some(url)));
    }
    println!(
        "GET /tasks at {rate} req/s for {secs} s, {CONNECTIONS} connections, {USERS} users x {TASKS_PER_USER} tasks, {WRITE_PERCENT}% writes"
    );
    println!(
        "| setup | db latency | lists | achieved req/s | p50 ms | p90 ms | p99 ms | max ms | hit rate | db queries | errors |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for db_latency in [Duration::ZERO, Duration::from_millis(1)] {
        for (name, url) in &setups {
            let (api, tokens) = setup(url.as_deref(), db_latency).await?;
            let cache = api.cache().cloned();
            let db = api.db().clone();
            let server = api.serve("127.0.0.1:0".parse()?).await?;
            let queries_before = db.queries();
            let wall = Instant::now();
            let mut run = load(server.addr(), tokens, rate, secs).await;
            let wall = wall.elapsed().min(run.elapsed);
            let queries = db.queries() - queries_before;
            server.shutdown().await;
            run.lists.sort_unstable();
            let hit_rate = cache.map_or("-".to_owned(), |c| {
                format!("{:.1}%", 100.0 * c.stats().hit_rate())
            });
            println!(
                "| {name} | {} ms | {} | {:.0} | {} | {} | {} | {} | {hit_rate} | {queries} | {} |",
                db_latency.as_millis(),
                run.lists.len(),
                (run.lists.len() + run.writes) as f64 / wall.as_secs_f64(),
                ms(percentile(&run.lists, 50.0)),
                ms(percentile(&run.lists, 90.0)),
                ms(percentile(&run.lists, 99.0)),
                ms(run.lists.last().copied().unwrap_or_default()),
                run.errors
            );
        }
    }
    Ok(())
}
