//! A private Sentinel deployment for tests: [`RedisSentinel`].
//!
//! The fixture starts, on free loopback ports, a primary, a replica of it
//! and three Sentinels that monitor the primary (quorum 2,
//! `down-after-milliseconds` 1000, so a failover takes a few seconds), and
//! waits until the replica is in sync and every Sentinel knows the replica
//! and the other Sentinels. It can kill any node (`SIGKILL`) and wait for
//! the Sentinels to promote the replica.
//!
//! Every process runs under the `sh` guardian of the other Redis fixtures:
//! it dies with the test process, and dropping the fixture (also while a
//! test panics) stops them all.

use std::ffi::OsString;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::redis_cluster::{
    check_binaries, cli, field, free_port_except, new_dir, request, text, Guarded, Reply,
};

/// How long the deployment may take to be ready.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// The name the Sentinels know the primary by.
pub const MASTER_NAME: &str = "cachemaster";

/// A primary, a replica and three Sentinels on loopback, for tests.
///
/// All methods take `&self`, so one deployment can live in a `static`
/// ([`RedisSentinel::shared`]); tests that kill nodes start their own.
///
/// # Examples
///
/// ```no_run
/// use cache_testkit::redis_sentinel::RedisSentinel;
/// use std::time::Duration;
///
/// let deployment = RedisSentinel::new();
/// let url = deployment.url(); // redis+sentinel://127.0.0.1:S1,…/cachemaster
/// let old = deployment.primary();
/// deployment.kill(old);
/// let (new, took) = deployment.wait_for_failover(old, Duration::from_secs(30));
/// # let _ = (url, new, took);
/// ```
#[derive(Debug)]
pub struct RedisSentinel {
    data: Vec<Node>,
    sentinels: Vec<Node>,
}

#[derive(Debug)]
struct Node {
    port: u16,
    /// `None` once killed.
    process: Mutex<Option<Guarded>>,
}

impl Node {
    fn is_running(&self) -> bool {
        self.process
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_mut()
            .is_some_and(Guarded::is_alive)
    }
}

impl RedisSentinel {
    /// Starts the primary, the replica and the three Sentinels, and waits
    /// until they know each other.
    ///
    /// # Panics
    ///
    /// When `redis-server` or `redis-cli` is missing (the message gives the
    /// install command) or the deployment does not get ready.
    pub fn new() -> RedisSentinel {
        check_binaries();
        let started = Instant::now();
        let mut taken = Vec::new();
        let primary = start_data_node(&mut taken, None);
        let replica = start_data_node(&mut taken, Some(primary.port));
        let primary_port = primary.port;
        let mut deployment = RedisSentinel {
            data: vec![primary, replica],
            sentinels: Vec::new(),
        };
        deployment.wait(|d| d.replica_in_sync(), "the replica to sync");
        for _ in 0..3 {
            deployment
                .sentinels
                .push(start_sentinel(&mut taken, primary_port));
        }
        deployment.wait(|d| d.sentinels_agree(), "the Sentinels to know each other");
        eprintln!(
            "RedisSentinel: primary {primary_port}, replica {}, sentinels {:?} ready in {:?}",
            deployment.data[1].port,
            deployment.sentinel_ports(),
            started.elapsed()
        );
        deployment
    }

    /// One deployment for the whole test binary, started on first use and
    /// never dropped (its processes still die with the test process). Tests
    /// sharing it keep to their own keys and must not kill nodes.
    ///
    /// # Panics
    ///
    /// As [`RedisSentinel::new`].
    pub fn shared() -> &'static RedisSentinel {
        static SHARED: OnceLock<RedisSentinel> = OnceLock::new();
        SHARED.get_or_init(RedisSentinel::new)
    }

    /// `redis+sentinel://127.0.0.1:S1,127.0.0.1:S2,127.0.0.1:S3/cachemaster`.
    pub fn url(&self) -> String {
        let sentinels: Vec<String> = self
            .sentinel_ports()
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        format!("redis+sentinel://{}/{MASTER_NAME}", sentinels.join(","))
    }

    /// The Sentinels' ports.
    pub fn sentinel_ports(&self) -> Vec<u16> {
        self.sentinels.iter().map(|n| n.port).collect()
    }

    /// The data nodes' ports (the first started as primary, the second as
    /// its replica), killed ones included.
    pub fn data_ports(&self) -> Vec<u16> {
        self.data.iter().map(|n| n.port).collect()
    }

    /// The port of the primary, as a running Sentinel names it.
    ///
    /// # Panics
    ///
    /// When no Sentinel answers.
    pub fn primary(&self) -> u16 {
        let mut last = String::from("no Sentinel is running");
        for sentinel in self.sentinels.iter().filter(|s| s.is_running()) {
            match primary_by(sentinel.port) {
                Ok(port) => return port,
                Err(e) => last = e,
            }
        }
        panic!("no Sentinel names the primary: {last}");
    }

    /// Kills the node (data node or Sentinel) on `port` with `SIGKILL`.
    ///
    /// # Panics
    ///
    /// When no node of this deployment has that port.
    pub fn kill(&self, port: u16) {
        let node = self
            .data
            .iter()
            .chain(&self.sentinels)
            .find(|n| n.port == port)
            .unwrap_or_else(|| panic!("no node of this deployment listens on {port}"));
        if let Some(mut process) = node
            .process
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            process.kill();
        }
    }

    /// After the primary on `old` was killed: waits until every running
    /// Sentinel names another primary and that node answers as a primary;
    /// returns its port and how long that took.
    ///
    /// # Panics
    ///
    /// When that does not happen within `timeout`.
    pub fn wait_for_failover(&self, old: u16, timeout: Duration) -> (u16, Duration) {
        let started = Instant::now();
        let mut last;
        loop {
            let named: Result<Vec<u16>, String> = self
                .sentinels
                .iter()
                .filter(|s| s.is_running())
                .map(|s| primary_by(s.port))
                .collect();
            match named {
                Ok(ports) if !ports.is_empty() && ports.iter().all(|p| *p == ports[0]) => {
                    let new = ports[0];
                    let role = text(new, &["INFO", "replication"]).unwrap_or_default();
                    if new != old && field(&role, "role") == Some("master") {
                        return (new, started.elapsed());
                    }
                    last = format!("Sentinels name {new}");
                }
                Ok(ports) => last = format!("Sentinels disagree: {ports:?}"),
                Err(e) => last = e,
            }
            assert!(
                started.elapsed() < timeout,
                "no failover from {old} within {timeout:?}: {last}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs `redis-cli -p PORT args…` (data node or Sentinel) and returns
    /// its output without the final newline.
    ///
    /// # Panics
    ///
    /// When `redis-cli` cannot be run or exits with an error.
    pub fn cli(&self, port: u16, args: &[&str]) -> Vec<u8> {
        cli(port, args)
    }

    fn wait(&self, mut ready: impl FnMut(&Self) -> Result<(), String>, what: &str) {
        let started = Instant::now();
        loop {
            match ready(self) {
                Ok(()) => return,
                Err(why) => assert!(
                    started.elapsed() < READY_TIMEOUT,
                    "timed out waiting for {what}: {why}"
                ),
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn replica_in_sync(&self) -> Result<(), String> {
        let info = text(self.data[1].port, &["INFO", "replication"]).map_err(|e| e.to_string())?;
        match field(&info, "master_link_status") {
            Some("up") => Ok(()),
            other => Err(format!("master_link_status {other:?}")),
        }
    }

    fn sentinels_agree(&self) -> Result<(), String> {
        for sentinel in &self.sentinels {
            let reply = request(sentinel.port, &["SENTINEL", "MASTER", MASTER_NAME])
                .map_err(|e| e.to_string())?;
            let Reply::Array(Some(items)) = reply else {
                return Err(format!(
                    "{}: SENTINEL MASTER answered {reply:?}",
                    sentinel.port
                ));
            };
            let fields: Vec<String> = items
                .into_iter()
                .map(|r| match r {
                    Reply::Bulk(Some(b)) => String::from_utf8_lossy(&b).into_owned(),
                    _ => String::new(),
                })
                .collect();
            let get = |name: &str| {
                fields
                    .chunks(2)
                    .find(|kv| kv[0] == name)
                    .and_then(|kv| kv.get(1))
                    .cloned()
                    .unwrap_or_default()
            };
            if get("num-slaves") != "1" || get("num-other-sentinels") != "2" {
                return Err(format!(
                    "{}: num-slaves {}, num-other-sentinels {}",
                    sentinel.port,
                    get("num-slaves"),
                    get("num-other-sentinels")
                ));
            }
        }
        Ok(())
    }
}

impl Default for RedisSentinel {
    fn default() -> Self {
        RedisSentinel::new()
    }
}

/// The primary's port as the Sentinel on `port` names it.
fn primary_by(port: u16) -> Result<u16, String> {
    match request(port, &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME]) {
        Ok(Reply::Array(Some(items))) if items.len() == 2 => match &items[1] {
            Reply::Bulk(Some(p)) => String::from_utf8_lossy(p)
                .parse()
                .map_err(|_| format!("{port}: bad port")),
            other => Err(format!("{port}: {other:?}")),
        },
        Ok(other) => Err(format!("{port}: {other:?}")),
        Err(e) => Err(format!("{port}: {e}")),
    }
}

fn start_data_node(taken: &mut Vec<u16>, replica_of: Option<u16>) -> Node {
    let mut last = String::new();
    for _ in 0..5 {
        let port = free_port_except(taken);
        let dir = new_dir("sentinel-data", port);
        let mut args: Vec<OsString> = Vec::new();
        for a in [
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--repl-diskless-sync-delay",
            "0",
        ] {
            args.push(a.into());
        }
        args.push("--dir".into());
        args.push(dir.clone().into());
        args.push("--logfile".into());
        args.push(dir.join("redis.log").into());
        if let Some(primary) = replica_of {
            args.push("--replicaof".into());
            args.push("127.0.0.1".into());
            args.push(primary.to_string().into());
        }
        match Guarded::spawn(&args, &dir, port) {
            Ok(process) => {
                taken.push(port);
                return Node {
                    port,
                    process: Mutex::new(Some(process)),
                };
            }
            Err(e) => last = e,
        }
    }
    panic!("could not start a Redis data node: {last}");
}

fn start_sentinel(taken: &mut Vec<u16>, primary: u16) -> Node {
    let mut last = String::new();
    for _ in 0..5 {
        let port = free_port_except(taken);
        let dir = new_dir("sentinel", port);
        if let Err(e) = std::fs::create_dir_all(&dir) {
            panic!("cannot create {}: {e}", dir.display());
        }
        let conf = dir.join("sentinel.conf");
        let text = format!(
            "port {port}\n\
             bind 127.0.0.1\n\
             daemonize no\n\
             dir {dir}\n\
             logfile {log}\n\
             sentinel monitor {MASTER_NAME} 127.0.0.1 {primary} 2\n\
             sentinel down-after-milliseconds {MASTER_NAME} 1000\n\
             sentinel failover-timeout {MASTER_NAME} 5000\n\
             sentinel parallel-syncs {MASTER_NAME} 1\n",
            dir = dir.display(),
            log = dir.join("sentinel.log").display(),
        );
        if let Err(e) = std::fs::write(&conf, text) {
            panic!("cannot write {}: {e}", conf.display());
        }
        let args: Vec<OsString> = vec![conf.into(), "--sentinel".into()];
        match Guarded::spawn(&args, &dir, port) {
            Ok(process) => {
                taken.push(port);
                return Node {
                    port,
                    process: Mutex::new(Some(process)),
                };
            }
            Err(e) => last = e,
        }
    }
    panic!("could not start a Sentinel: {last}");
}
