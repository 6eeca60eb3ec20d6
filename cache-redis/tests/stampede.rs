//! Distributed single flight on a real Redis (`RedisFlightLock`): leases
//! with `SET NX PX`, releases announced over pub/sub.
//!
//! - 4 OS processes × 250 concurrent callers of one cold key run the loader
//!   exactly once in all (each child is this test binary re-run as
//!   `stampede_child`, released by the parent at the same moment; loads are
//!   counted by each child and by an `INCR` in Redis). Without the lease,
//!   each process would load: 4.
//! - A leader killed with SIGKILL mid-load holds the others back until its
//!   lease ends, then exactly one other process loads, not before the lease
//!   end measured (`PTTL`) right after the kill.
//! - In one process, two instances (each with its own lock, subscription
//!   and in-process flight table): the waiter returns promptly after the
//!   leader stores, with a 30 s fallback poll and a 60 s lease, so only the
//!   pub/sub notification can wake it; and the wake latency (leader's
//!   store → waiter's return), p50 and p99 over 200 rounds, is printed.
//! - Redis down: the load runs locally, the value is returned, the
//!   fallback is counted.
//! - A lost subscription wakes its waiters (they re-check), so a release
//!   announced while it was down costs no more than the reconnection.
//! - On a cluster (feature `cluster`): leases on several slots, releases
//!   over sharded pub/sub.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cache_core::{Cache, CacheBackend, CacheKey, DistributedFlight, FlightLock};
use cache_memory::MemoryBackend;
use cache_redis::{RedisBackend, RedisFlightLock};
use cache_testkit::redis_server::RedisServer;
use tokio::sync::oneshot;

/// Set (to the Redis URL) in a child process: run as a child.
const CHILD_URL: &str = "STAMPEDE_CHILD_URL";
const CHILD_PREFIX: &str = "STAMPEDE_CHILD_PREFIX";
const CHILD_CALLERS: &str = "STAMPEDE_CHILD_CALLERS";
const CHILD_LOAD_MS: &str = "STAMPEDE_CHILD_LOAD_MS";
const CHILD_LEASE_MS: &str = "STAMPEDE_CHILD_LEASE_MS";
const CHILD_POLL_MS: &str = "STAMPEDE_CHILD_POLL_MS";

/// What the children print for the parent, each line starting with it.
const TAG: &str = "STAMPEDE";

fn unix_ms() -> u64 {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    u64::try_from(since.as_millis()).unwrap()
}

fn env_u64(name: &str) -> u64 {
    std::env::var(name).unwrap().parse().unwrap()
}

fn unique_prefix(name: &str) -> String {
    format!(
        "stampede-{name}-{}-{}",
        std::process::id(),
        fastrand::u32(..)
    )
}

/// The child role: connects, prints `ready`, waits for a line on stdin,
/// then runs `CALLERS` concurrent `get_or_set` of one cold key whose
/// loader prints `load <unix ms>`, counts itself in Redis and sleeps
/// `LOAD_MS`. Ends with `done …` counters and every caller's value. Not a
/// child (no `STAMPEDE_CHILD_URL`): does nothing.
#[test]
fn stampede_child() {
    let Ok(url) = std::env::var(CHILD_URL) else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(child(url));
}

async fn child(url: String) {
    let prefix = std::env::var(CHILD_PREFIX).unwrap();
    let callers = env_u64(CHILD_CALLERS);
    let load = Duration::from_millis(env_u64(CHILD_LOAD_MS));
    let settings = DistributedFlight::default()
        .with_lease(Duration::from_millis(env_u64(CHILD_LEASE_MS)))
        .with_fallback_poll(Duration::from_millis(env_u64(CHILD_POLL_MS)));
    let backend = Arc::new(RedisBackend::from_url(&url).await.unwrap());
    let lock = RedisFlightLock::connect(&url, format!("{prefix}:flights"))
        .await
        .unwrap();
    let cache = Cache::builder(Arc::clone(&backend) as Arc<dyn CacheBackend>)
        .prefix(prefix.clone())
        .distributed_single_flight(Arc::new(lock), settings)
        .build()
        .unwrap();
    println!("{TAG} ready");
    let mut go = String::new();
    std::io::stdin().read_line(&mut go).unwrap();

    let key = CacheKey::new("report", "cold").unwrap();
    let counter = format!("{prefix}:loads");
    let mut tasks = Vec::new();
    for _ in 0..callers {
        let (cache, key, backend, counter) = (
            cache.clone(),
            key.clone(),
            Arc::clone(&backend),
            counter.clone(),
        );
        tasks.push(tokio::spawn(async move {
            cache
                .get_or_set(&key, move || async move {
                    println!("{TAG} load {}", unix_ms());
                    backend.incr(&counter, 1, None).await.unwrap();
                    tokio::time::sleep(load).await;
                    Ok::<_, std::io::Error>(format!("report by {}", std::process::id()))
                })
                .await
                .unwrap()
        }));
    }
    let mut values = Vec::new();
    for task in tasks {
        values.push(task.await.unwrap());
    }
    values.sort();
    values.dedup();
    let stats = cache.stats();
    println!(
        "{TAG} done loader_calls={} lease_waits={} lease_fallbacks={} values={}",
        stats.loader_calls,
        stats.lease_waits,
        stats.lease_fallbacks,
        values.join(",")
    );
}

/// A child process and its tagged output lines.
struct Child {
    process: std::process::Child,
    stdin: Option<std::process::ChildStdin>,
    lines: mpsc::Receiver<String>,
}

struct ChildSpec<'a> {
    url: &'a str,
    prefix: &'a str,
    callers: u64,
    load_ms: u64,
    lease_ms: u64,
    poll_ms: u64,
}

impl Child {
    fn spawn(spec: &ChildSpec<'_>) -> Child {
        let mut process = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "stampede_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_URL, spec.url)
            .env(CHILD_PREFIX, spec.prefix)
            .env(CHILD_CALLERS, spec.callers.to_string())
            .env(CHILD_LOAD_MS, spec.load_ms.to_string())
            .env(CHILD_LEASE_MS, spec.lease_ms.to_string())
            .env(CHILD_POLL_MS, spec.poll_ms.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = process.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                // The harness may have begun the line (`test … ... `).
                if let Some(at) = line.find(TAG) {
                    if tx.send(line[at + TAG.len()..].trim().to_owned()).is_err() {
                        return;
                    }
                }
            }
        });
        let stdin = process.stdin.take();
        Child {
            process,
            stdin,
            lines,
        }
    }

    /// The next tagged line, which must start with `word`.
    fn expect(&self, word: &str) -> String {
        let line = self
            .lines
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("no `{word}` line from the child: {e}"));
        assert!(line.starts_with(word), "expected `{word}`, got `{line}`");
        line
    }

    fn go(&mut self) {
        let mut stdin = self.stdin.take().unwrap();
        stdin.write_all(b"go\n").unwrap();
    }

    /// Waits for the child's `done` line and exit; returns its `load`
    /// times and its `done` fields.
    fn finish(mut self) -> (Vec<u64>, Done) {
        let mut loads = Vec::new();
        loop {
            let line = self
                .lines
                .recv_timeout(Duration::from_secs(60))
                .expect("the child never finished");
            if let Some(at) = line.strip_prefix("load ") {
                loads.push(at.parse().unwrap());
            } else if let Some(done) = line.strip_prefix("done ") {
                let status = self.process.wait().unwrap();
                assert!(status.success(), "the child failed: {status}");
                return (loads, Done::parse(done));
            }
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// A child's final counters and the values its callers got.
#[derive(Debug)]
struct Done {
    loader_calls: u64,
    lease_waits: u64,
    lease_fallbacks: u64,
    values: Vec<String>,
}

impl Done {
    fn parse(line: &str) -> Done {
        let field = |name: &str| -> String {
            line.split(' ')
                .find_map(|f| f.strip_prefix(&format!("{name}=")))
                .unwrap_or_else(|| panic!("no {name} in `{line}`"))
                .to_owned()
        };
        Done {
            loader_calls: field("loader_calls").parse().unwrap(),
            lease_waits: field("lease_waits").parse().unwrap(),
            lease_fallbacks: field("lease_fallbacks").parse().unwrap(),
            values: field("values").split(',').map(str::to_owned).collect(),
        }
    }
}

#[test]
fn stampede_four_processes_of_250_callers_load_once() {
    let server = RedisServer::shared();
    let prefix = unique_prefix("four");
    let spec = ChildSpec {
        url: server.url(),
        prefix: &prefix,
        callers: 250,
        load_ms: 500,
        lease_ms: 10_000,
        poll_ms: 1_000,
    };
    let mut children: Vec<Child> = (0..4).map(|_| Child::spawn(&spec)).collect();
    for child in &children {
        child.expect("ready");
    }
    // All 1000 callers start together.
    for child in &mut children {
        child.go();
    }
    let mut loads = 0;
    let mut waited = 0;
    let mut values = Vec::new();
    for child in children {
        let (load_lines, done) = child.finish();
        assert_eq!(done.loader_calls, load_lines.len() as u64);
        assert_eq!(done.lease_fallbacks, 0);
        loads += done.loader_calls;
        waited += done.lease_waits;
        values.extend(done.values);
    }
    values.sort();
    values.dedup();
    println!("4 processes x 250 callers: {loads} loader call(s), {waited} process(es) served by another's load");
    assert_eq!(loads, 1, "loader calls across the 4 processes");
    assert_eq!(server.cli(&["GET", &format!("{prefix}:loads")]), b"1");
    // Every caller of every process got the one loaded value.
    assert_eq!(values.len(), 1, "{values:?}");
    assert_eq!(waited, 3);
}

#[test]
fn stampede_leader_killed_mid_load_hands_over_after_its_lease() {
    let server = RedisServer::shared();
    let prefix = unique_prefix("killed");
    let lease_ms = 1_500;
    let leader_spec = ChildSpec {
        url: server.url(),
        prefix: &prefix,
        callers: 10,
        load_ms: 600_000, // never finishes: it is killed
        lease_ms,
        // Long: the others must find the lease's end by its time left.
        poll_ms: 30_000,
    };
    let mut leader = Child::spawn(&leader_spec);
    leader.expect("ready");
    leader.go();
    leader.expect("load");

    let others_spec = ChildSpec {
        load_ms: 200,
        callers: 50,
        ..leader_spec
    };
    let mut others: Vec<Child> = (0..2).map(|_| Child::spawn(&others_spec)).collect();
    for child in &others {
        child.expect("ready");
    }
    for child in &mut others {
        child.go();
    }
    // Let them reach their wait on the lease (the leader extends it).
    std::thread::sleep(Duration::from_millis(lease_ms + 500));

    leader.process.kill().unwrap(); // SIGKILL
    leader.process.wait().unwrap();
    let killed_at = unix_ms();
    let lease_key = format!("{prefix}:report:cold:lease");
    let left: u64 = String::from_utf8(server.cli(&["PTTL", &lease_key]))
        .unwrap()
        .parse()
        .expect("the dead leader's lease is still there");
    assert!(left > 0 && left <= lease_ms, "lease time left: {left} ms");
    let lease_end = killed_at + left;

    let mut loads = Vec::new();
    let mut values = Vec::new();
    for child in others {
        let (at, done) = child.finish();
        assert_eq!(done.lease_fallbacks, 0);
        loads.extend(at);
        values.extend(done.values);
    }
    values.sort();
    values.dedup();
    println!(
        "leader killed with {left} ms of lease left; the next load began {} ms after the kill",
        loads.first().map_or(0, |at| at.saturating_sub(killed_at))
    );
    assert_eq!(loads.len(), 1, "loads after the kill: {loads:?}");
    // Not before the lease ended (1 ms for the truncation of two clocks' ms).
    assert!(
        loads[0] + 1 >= lease_end,
        "loaded at {} ms, the lease ended at {lease_end} ms",
        loads[0]
    );
    assert_eq!(values.len(), 1, "{values:?}");
    assert_eq!(server.cli(&["GET", &format!("{prefix}:loads")]), b"2");
}

/// One instance of a cache over Redis, with its own lock (subscription).
async fn instance(url: &str, prefix: &str) -> Cache {
    let lock = RedisFlightLock::connect(url, format!("{prefix}:flights"))
        .await
        .unwrap();
    Cache::builder(Arc::new(RedisBackend::from_url(url).await.unwrap()))
        .prefix(prefix)
        .distributed_single_flight(
            Arc::new(lock),
            DistributedFlight::default()
                .with_lease(Duration::from_secs(60))
                .with_fallback_poll(Duration::from_secs(30)),
        )
        .build()
        .unwrap()
}

/// One round: `leader` loads `key` with a loader held until released;
/// `waiter` asks meanwhile. Returns the time from the leader's loader
/// returning to the waiter's return, and the waiter's value.
async fn round(leader: &Cache, waiter: &Cache, key: &CacheKey, value: u64) -> (Duration, u64) {
    let (started_tx, started_rx) = oneshot::channel();
    let (go_tx, go_rx) = oneshot::channel::<()>();
    let (returned_tx, returned_rx) = oneshot::channel();
    let lead = {
        let (leader, key) = (leader.clone(), key.clone());
        tokio::spawn(async move {
            leader
                .get_or_set(&key, move || async move {
                    let _ = started_tx.send(());
                    let _ = go_rx.await;
                    let _ = returned_tx.send(Instant::now());
                    Ok::<_, std::io::Error>(value)
                })
                .await
                .unwrap()
        })
    };
    started_rx.await.unwrap();
    let wait = {
        let (waiter, key) = (waiter.clone(), key.clone());
        tokio::spawn(async move {
            let value = waiter
                .get_or_set(&key, || async { Ok::<_, std::io::Error>(u64::MAX) })
                .await
                .unwrap();
            (value, Instant::now())
        })
    };
    tokio::time::sleep(Duration::from_millis(15)).await;
    go_tx.send(()).unwrap();
    let (got, waiter_returned) = tokio::time::timeout(Duration::from_secs(5), wait)
        .await
        .expect("the waiter was not woken by the release")
        .unwrap();
    assert_eq!(lead.await.unwrap(), value);
    let loader_returned = returned_rx.await.unwrap();
    (waiter_returned.duration_since(loader_returned), got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stampede_redis_waiter_is_woken_by_the_release_not_the_poll() {
    let server = RedisServer::shared();
    let prefix = unique_prefix("wake");
    let (a, b) = (
        instance(server.url(), &prefix).await,
        instance(server.url(), &prefix).await,
    );
    let key = CacheKey::new("report", 1).unwrap();
    let (_, got) = round(&a, &b, &key, 7).await;
    assert_eq!(got, 7);
    assert_eq!((a.stats().loader_calls, b.stats().loader_calls), (1, 0));
    assert_eq!(b.stats().lease_waits, 1);
    // Released: no lease is left behind.
    let lease_key = format!("{prefix}:report:1:lease");
    assert_eq!(server.cli(&["EXISTS", &lease_key]), b"0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stampede_redis_wake_latency() {
    let server = RedisServer::shared();
    let prefix = unique_prefix("latency");
    let (a, b) = (
        instance(server.url(), &prefix).await,
        instance(server.url(), &prefix).await,
    );
    let mut samples = Vec::new();
    for i in 0..200u64 {
        let key = CacheKey::new("latency", i).unwrap();
        let (took, got) = round(&a, &b, &key, i).await;
        assert_eq!(got, i);
        samples.push(took);
    }
    samples.sort();
    println!(
        "wake latency, RedisFlightLock ({} rounds, {} woken by a release): p50 {:?}, p99 {:?}, max {:?}",
        samples.len(),
        b.stats().lease_waits,
        samples[samples.len() / 2],
        samples[samples.len() * 99 / 100],
        samples[samples.len() - 1],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stampede_redis_down_loads_locally_and_counts_it() {
    let server = RedisServer::new();
    let lock = RedisFlightLock::connect(server.url(), "down:flights")
        .await
        .unwrap();
    // The values live in memory: only the lock needs Redis.
    let cache = Cache::builder(Arc::new(MemoryBackend::new()))
        .distributed_single_flight(
            Arc::new(lock.clone()) as Arc<dyn FlightLock>,
            DistributedFlight::default(),
        )
        .build()
        .unwrap();
    server.stop();
    let key = CacheKey::new("report", 1).unwrap();
    let got = tokio::time::timeout(
        Duration::from_secs(10),
        cache.get_or_set(&key, || async { Ok::<_, std::io::Error>(5u64) }),
    )
    .await
    .expect("the load waited on a lock that is down")
    .unwrap();
    assert_eq!(got, 5);
    let stats = cache.stats();
    assert_eq!((stats.loader_calls, stats.lease_fallbacks), (1, 1));
    let err = lock
        .acquire("k:lease", "t", Duration::from_secs(1))
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
}

/// On a cluster (3 primaries): each lease is one key on its slot's
/// primary, releases go over sharded pub/sub; the waiter is woken by the
/// release (30 s poll) for keys on different slots.
#[cfg(feature = "cluster")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stampede_cluster_waiters_are_woken_by_the_release() {
    use cache_testkit::redis_cluster::RedisCluster;

    let cluster = RedisCluster::builder().replicas(0).spawn();
    let url = cluster.url();
    let prefix = unique_prefix("cluster");
    let (a, b) = (instance(&url, &prefix).await, instance(&url, &prefix).await);
    let mut samples = Vec::new();
    for i in 0..20u64 {
        let key = CacheKey::new("report", i).unwrap();
        let (took, got) = round(&a, &b, &key, i).await;
        assert_eq!(got, i);
        samples.push(took);
    }
    assert_eq!((a.stats().loader_calls, b.stats().loader_calls), (20, 0));
    assert_eq!(b.stats().lease_waits, 20);
    samples.sort();
    println!(
        "wake latency, RedisFlightLock on a cluster (20 rounds): p50 {:?}, max {:?}",
        samples[samples.len() / 2],
        samples[samples.len() - 1],
    );
}

/// A waiter whose subscription is lost re-checks: here the leader
/// announces its release on another channel (the waiter never hears it),
/// then the server drops every subscription; the waiter, with a 30 s poll
/// and a 60 s lease, must return on its lock's resync.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stampede_redis_lost_subscription_wakes_the_waiters() {
    let server = RedisServer::new();
    let prefix = unique_prefix("resync");
    let leader = instance(server.url(), &prefix).await;
    let waiter = {
        // Same keys and leases, but releases announced elsewhere.
        let lock = RedisFlightLock::connect(server.url(), format!("{prefix}:other"))
            .await
            .unwrap();
        Cache::builder(Arc::new(
            RedisBackend::from_url(server.url()).await.unwrap(),
        ))
        .prefix(prefix.clone())
        .distributed_single_flight(
            Arc::new(lock),
            DistributedFlight::default()
                .with_lease(Duration::from_secs(60))
                .with_fallback_poll(Duration::from_secs(30)),
        )
        .build()
        .unwrap()
    };
    let key = CacheKey::new("report", 1).unwrap();
    let (started_tx, started_rx) = oneshot::channel();
    let (go_tx, go_rx) = oneshot::channel::<()>();
    let lead = {
        let (leader, key) = (leader.clone(), key.clone());
        tokio::spawn(async move {
            leader
                .get_or_set(&key, move || async move {
                    let _ = started_tx.send(());
                    let _ = go_rx.await;
                    Ok::<_, std::io::Error>(3u64)
                })
                .await
                .unwrap()
        })
    };
    started_rx.await.unwrap();
    let wait = {
        let (waiter, key) = (waiter.clone(), key.clone());
        tokio::spawn(async move {
            waiter
                .get_or_set(&key, || async { Ok::<_, std::io::Error>(u64::MAX) })
                .await
                .unwrap()
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    go_tx.send(()).unwrap();
    assert_eq!(lead.await.unwrap(), 3);
    // The release went unheard: the waiter still waits.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!wait.is_finished(), "the waiter heard another channel");
    server.cli(&["CLIENT", "KILL", "TYPE", "pubsub"]);
    let got = tokio::time::timeout(Duration::from_secs(5), wait)
        .await
        .expect("a lost subscription did not wake the waiter")
        .unwrap();
    assert_eq!(got, 3);
    assert_eq!(waiter.stats().loader_calls, 0);
}
