//! A private Redis Cluster for tests: [`RedisCluster`].
//!
//! The fixture starts `redis-server --cluster-enabled yes` nodes on free
//! loopback ports (each with its own temporary directory, no persistence,
//! a short `cluster-node-timeout` so failovers take seconds), joins them
//! with `redis-cli --cluster create … --cluster-replicas N`, and waits until
//! every node reports `cluster_state:ok` and every replica is in sync. It
//! can kill a node (`SIGKILL`, as a crash) to test failover.
//!
//! Every node runs under the same `sh` guardian as
//! [`RedisServer`](crate::redis_server::RedisServer): it dies with the test
//! process, even when the fixture lives in a `static` or the test aborts,
//! and dropping the fixture (also while a test panics) stops every node.
//!
//! A missing `redis-server` or `redis-cli` is a test failure that names the
//! install command, never a skipped test.

use std::ffi::OsString;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

pub(crate) use crate::process::{free_port_except, new_dir};
use crate::process::{run_cli, signal_quiet, INSTALL_HINT};
use crate::redis_server::{TestCertificates, TlsAuthClients};

/// How long a node may take to answer after it starts.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the cluster may take to form.
const FORM_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a stopping node may take to exit before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs the server (`$0 "$@"`) and kills it when stdin closes, so it never
/// outlives the test process. Prints the server's pid first; when the
/// server exits, prints its status and the end of its log, then removes
/// its directory.
const GUARDIAN: &str = r#"
dir="$CACHE_TESTKIT_REDIS_DIR"
"$0" "$@" >/dev/null 2>&1 &
pid=$!
echo "$pid"
exec 3<&0
{ read -r _ <&3; kill -CONT "$pid" 2>/dev/null; kill "$pid" 2>/dev/null; } &
watch=$!
trap '' PIPE
wait "$pid"
status=$?
kill "$watch" 2>/dev/null
{
  echo "exited with status $status; the end of its log:"
  tail -n 20 "$dir"/*.log
} 2>/dev/null
rm -rf "$dir"
"#;

/// A `redis-server` (data node or Sentinel) under the guardian.
#[derive(Debug)]
pub(crate) struct Guarded {
    guardian: Child,
    /// Closing it makes the guardian stop the server.
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    pid: u32,
    dir: PathBuf,
}

impl Guarded {
    /// Starts `redis-server args…` in `dir` (created here, removed when the
    /// server exits) and waits until it answers `PING` on `port`.
    pub(crate) fn spawn(args: &[OsString], dir: &Path, port: u16) -> Result<Guarded, String> {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let mut guardian = Command::new("sh")
            .arg("-c")
            .arg(GUARDIAN)
            .arg("redis-server")
            .args(args)
            .env("CACHE_TESTKIT_REDIS_DIR", dir)
            .current_dir(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot run sh: {e}"))?;
        let stdin = guardian.stdin.take();
        let mut stdout = BufReader::new(guardian.stdout.take().expect("piped stdout"));
        let mut line = String::new();
        let pid = stdout
            .read_line(&mut line)
            .ok()
            .and_then(|_| line.trim().parse::<u32>().ok());
        let Some(pid) = pid else {
            let _ = guardian.kill();
            let _ = guardian.wait();
            return Err(format!(
                "the guardian shell did not report a pid ({line:?})"
            ));
        };
        let mut process = Guarded {
            guardian,
            stdin,
            stdout,
            pid,
            dir: dir.to_owned(),
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if !process.is_alive() {
                let mut report = String::new();
                let _ = process.stdout.read_to_string(&mut report);
                return Err(format!("redis-server on port {port} {report}"));
            }
            if let Ok(Reply::Status(pong)) = request(port, &["PING"]) {
                if pong == "PONG" {
                    return Ok(process);
                }
            }
            if Instant::now() > deadline {
                process.stop();
                return Err(format!(
                    "redis-server on port {port} did not answer within {START_TIMEOUT:?}"
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub(crate) fn is_alive(&mut self) -> bool {
        matches!(self.guardian.try_wait(), Ok(None))
    }

    /// Kills the server with `SIGKILL` (a crash: no shutdown, no goodbye to
    /// the cluster) and waits until it is gone.
    pub(crate) fn kill(&mut self) {
        signal_quiet("-KILL", self.pid);
        self.wait_exit();
    }

    /// Stops the server (`SIGTERM` through the guardian) and waits until
    /// it has exited; `SIGKILL` after a while.
    pub(crate) fn stop(&mut self) {
        drop(self.stdin.take());
        self.wait_exit();
    }

    fn wait_exit(&mut self) {
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            match self.guardian.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if Instant::now() > deadline => {
                    signal_quiet("-KILL", self.pid);
                    let _ = self.guardian.wait();
                    break;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
        let mut report = String::new();
        let _ = self.stdout.read_to_string(&mut report);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Options of a private cluster; see [`RedisCluster::builder`].
#[derive(Debug, Clone)]
#[must_use]
pub struct RedisClusterBuilder {
    primaries: usize,
    replicas: usize,
    node_timeout: Duration,
    args: Vec<String>,
    tls: Option<TestCertificates>,
}

impl Default for RedisClusterBuilder {
    fn default() -> Self {
        RedisClusterBuilder {
            primaries: 3,
            replicas: 1,
            node_timeout: Duration::from_millis(1000),
            args: Vec::new(),
            tls: None,
        }
    }
}

impl RedisClusterBuilder {
    /// The number of primaries (at least 3, as `redis-cli --cluster create`
    /// requires). Default 3.
    pub fn primaries(mut self, n: usize) -> Self {
        self.primaries = n;
        self
    }

    /// The number of replicas of each primary. Default 1.
    pub fn replicas(mut self, n: usize) -> Self {
        self.replicas = n;
        self
    }

    /// `cluster-node-timeout`: how long a node may be unreachable before it
    /// counts as failing (and a replica takes over). Default 1 s.
    pub fn node_timeout(mut self, timeout: Duration) -> Self {
        self.node_timeout = timeout;
        self
    }

    /// Gives every node a TLS port with these certificates
    /// (`--tls-port`, `--tls-cluster yes`, `--tls-replication yes`,
    /// `--tls-auth-clients optional`): the cluster bus and replication run
    /// over TLS, clients on TLS ports are told the TLS ports of the other
    /// nodes ([`RedisCluster::tls_url`]). The plain ports stay for the
    /// fixture and `redis-cli`.
    pub fn tls(mut self, certificates: &TestCertificates) -> Self {
        self.tls = Some(certificates.clone());
        self
    }

    /// Adds a command-line argument for every node's `redis-server`.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Starts the nodes, creates the cluster and waits until it is ready.
    ///
    /// # Panics
    ///
    /// When `redis-server` or `redis-cli` is missing (the message gives
    /// the install command), or the cluster does not form.
    pub fn spawn(self) -> RedisCluster {
        check_binaries();
        assert!(
            self.primaries >= 3,
            "a Redis Cluster needs at least 3 primaries"
        );
        let started = Instant::now();
        let count = self.primaries * (1 + self.replicas);
        let mut nodes = Vec::with_capacity(count);
        let mut taken = Vec::new();
        for _ in 0..count {
            let mut last_failure = String::new();
            let mut node = None;
            for _ in 0..5 {
                let port = free_port_except(&taken);
                let bus = free_port_except(&[&taken[..], &[port]].concat());
                let tls_port = self
                    .tls
                    .as_ref()
                    .map(|_| free_port_except(&[&taken[..], &[port, bus]].concat()));
                let dir = new_dir("cluster", port);
                let mut args: Vec<OsString> = Vec::new();
                for a in [
                    "--port".to_owned(),
                    port.to_string(),
                    "--bind".to_owned(),
                    "127.0.0.1".to_owned(),
                    "--cluster-enabled".to_owned(),
                    "yes".to_owned(),
                    "--cluster-port".to_owned(),
                    bus.to_string(),
                    "--cluster-node-timeout".to_owned(),
                    self.node_timeout.as_millis().to_string(),
                    "--save".to_owned(),
                    String::new(),
                    "--appendonly".to_owned(),
                    "no".to_owned(),
                    "--daemonize".to_owned(),
                    "no".to_owned(),
                    // Replicas sync at once (the default waits 5 s for
                    // more replicas to share a diskless transfer).
                    "--repl-diskless-sync-delay".to_owned(),
                    "0".to_owned(),
                ] {
                    args.push(a.into());
                }
                args.push("--cluster-config-file".into());
                args.push(dir.join("nodes.conf").into());
                args.push("--dir".into());
                args.push(dir.clone().into());
                args.push("--logfile".into());
                args.push(dir.join("redis.log").into());
                if let (Some(certs), Some(tls_port)) = (&self.tls, tls_port) {
                    args.extend(
                        certs
                            .server_args(tls_port, TlsAuthClients::Optional)
                            .into_iter()
                            .map(OsString::from),
                    );
                    for a in ["--tls-cluster", "yes", "--tls-replication", "yes"] {
                        args.push(a.into());
                    }
                }
                args.extend(self.args.iter().map(OsString::from));
                match Guarded::spawn(&args, &dir, port) {
                    Ok(process) => {
                        taken.extend([port, bus]);
                        taken.extend(tls_port);
                        node = Some(ClusterNode {
                            port,
                            tls_port,
                            process: Mutex::new(Some(process)),
                        });
                        break;
                    }
                    Err(failure) => last_failure = failure,
                }
            }
            match node {
                Some(node) => nodes.push(node),
                None => panic!("could not start a cluster node: {last_failure}"),
            }
        }
        let cluster = RedisCluster {
            nodes,
            replicas: self.replicas,
        };
        cluster.create();
        cluster.wait_until_ready(FORM_TIMEOUT);
        eprintln!(
            "RedisCluster: {} nodes on ports {:?} ready in {:?}",
            count,
            cluster.ports(),
            started.elapsed()
        );
        cluster
    }
}

/// A Redis Cluster on loopback for tests: by default 3 primaries with one
/// replica each, `cluster-node-timeout` 1 s.
///
/// All methods take `&self`, so one cluster can live in a `static` and be
/// shared by the tests of a binary ([`RedisCluster::shared`]); tests that
/// kill nodes start their own.
///
/// # Examples
///
/// ```no_run
/// use cache_testkit::redis_cluster::RedisCluster;
/// use std::time::Duration;
///
/// let cluster = RedisCluster::new();
/// let url = cluster.url(); // redis+cluster://127.0.0.1:P1,127.0.0.1:P2,…
/// let victim = cluster.primaries()[0];
/// cluster.kill(victim);
/// let took = cluster.wait_for_failover(victim, Duration::from_secs(20)); // a replica took over
/// # let _ = (url, took);
/// ```
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<ClusterNode>,
    replicas: usize,
}

#[derive(Debug)]
struct ClusterNode {
    port: u16,
    /// The TLS port, with [`RedisClusterBuilder::tls`].
    tls_port: Option<u16>,
    /// `None` once killed.
    process: Mutex<Option<Guarded>>,
}

/// One line of `CLUSTER NODES`.
#[derive(Debug, Clone)]
struct NodeLine {
    port: u16,
    flags: Vec<String>,
    master_id: String,
    id: String,
    serves_slots: bool,
}

impl RedisCluster {
    /// Starts a cluster of 3 primaries with one replica each.
    ///
    /// # Panics
    ///
    /// As [`RedisClusterBuilder::spawn`].
    pub fn new() -> RedisCluster {
        RedisCluster::builder().spawn()
    }

    /// Options for a private cluster.
    pub fn builder() -> RedisClusterBuilder {
        RedisClusterBuilder::default()
    }

    /// One cluster for the whole test binary, started on first use and
    /// never dropped (its nodes still die with the process). Tests sharing
    /// it keep to their own keys and must not kill nodes.
    ///
    /// # Panics
    ///
    /// As [`RedisClusterBuilder::spawn`].
    pub fn shared() -> &'static RedisCluster {
        static SHARED: OnceLock<RedisCluster> = OnceLock::new();
        SHARED.get_or_init(RedisCluster::new)
    }

    /// The cluster's URL, naming every node as a seed:
    /// `redis+cluster://127.0.0.1:P1,127.0.0.1:P2,…`.
    pub fn url(&self) -> String {
        let nodes: Vec<String> = self
            .ports()
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        format!("redis+cluster://{}", nodes.join(","))
    }

    /// The cluster's TLS URL, naming every node's TLS port as a seed:
    /// `rediss+cluster://127.0.0.1:T1,127.0.0.1:T2,…`, when started with
    /// [`RedisClusterBuilder::tls`].
    pub fn tls_url(&self) -> Option<String> {
        let nodes = self
            .nodes
            .iter()
            .map(|n| n.tls_port.map(|p| format!("127.0.0.1:{p}")))
            .collect::<Option<Vec<String>>>()?;
        Some(format!("rediss+cluster://{}", nodes.join(",")))
    }

    /// The ports of every node, killed ones included, in start order.
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|n| n.port).collect()
    }

    /// Whether the node on `port` is running (not killed).
    pub fn is_running(&self, port: u16) -> bool {
        self.node(port)
            .process
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_mut()
            .is_some_and(Guarded::is_alive)
    }

    /// The ports of the primaries that serve slots now, as a running node
    /// sees the cluster, sorted.
    ///
    /// # Panics
    ///
    /// When no node answers.
    pub fn primaries(&self) -> Vec<u16> {
        let mut ports: Vec<u16> = self
            .cluster_nodes()
            .iter()
            .filter(|n| n.has_flag("master") && !n.failed() && n.serves_slots)
            .map(|n| n.port)
            .collect();
        ports.sort_unstable();
        ports
    }

    /// The ports of the replicas that are up, as a running node sees the
    /// cluster, sorted.
    ///
    /// # Panics
    ///
    /// When no node answers.
    pub fn replicas(&self) -> Vec<u16> {
        let mut ports: Vec<u16> = self
            .cluster_nodes()
            .iter()
            .filter(|n| n.has_flag("slave") && !n.failed())
            .map(|n| n.port)
            .collect();
        ports.sort_unstable();
        ports
    }

    /// The port of a live replica of the primary on `primary`, if any.
    ///
    /// # Panics
    ///
    /// When no node answers.
    pub fn replica_of(&self, primary: u16) -> Option<u16> {
        let nodes = self.cluster_nodes();
        let id = nodes.iter().find(|n| n.port == primary)?.id.clone();
        nodes
            .iter()
            .find(|n| n.master_id == id && n.has_flag("slave") && !n.failed())
            .map(|n| n.port)
    }

    /// Kills the node on `port` with `SIGKILL` (a crash) and waits until it
    /// is gone. Its replica takes over after about `cluster-node-timeout`
    /// plus an election; [`wait_until_ready`](Self::wait_until_ready) waits
    /// for that.
    ///
    /// # Panics
    ///
    /// When no node of this cluster has that port.
    pub fn kill(&self, port: u16) {
        if let Some(mut process) = self
            .node(port)
            .process
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            process.kill();
        }
    }

    /// Waits until every running node reports `cluster_state:ok` with all
    /// 16384 slots served, and every running replica's link to its primary
    /// is up; returns how long that took.
    ///
    /// # Panics
    ///
    /// When that does not happen within `timeout` (the message shows the
    /// last `CLUSTER INFO` seen).
    pub fn wait_until_ready(&self, timeout: Duration) -> Duration {
        let started = Instant::now();
        let mut last;
        loop {
            match self.ready() {
                Ok(()) => return started.elapsed(),
                Err(why) => last = why,
            }
            assert!(
                started.elapsed() < timeout,
                "the cluster was not ready within {timeout:?}: {last}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// After [`kill`](Self::kill)ing the primary on `killed`: waits until
    /// the cluster has marked it failed, a replica serves its slots, and the
    /// cluster is [ready](Self::wait_until_ready) again; returns how long
    /// that took.
    ///
    /// # Panics
    ///
    /// When that does not happen within `timeout`.
    pub fn wait_for_failover(&self, killed: u16, timeout: Duration) -> Duration {
        let started = Instant::now();
        let mut last;
        loop {
            let failed_over = self
                .cluster_nodes()
                .iter()
                .any(|n| n.port == killed && n.has_flag("fail") && !n.serves_slots);
            if failed_over {
                match self.ready() {
                    Ok(()) => return started.elapsed(),
                    Err(why) => last = why,
                }
            } else {
                last = format!("{killed} not marked failed yet");
            }
            assert!(
                started.elapsed() < timeout,
                "no failover of {killed} within {timeout:?}: {last}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn ready(&self) -> Result<(), String> {
        let live: Vec<u16> = self
            .ports()
            .into_iter()
            .filter(|p| self.is_running(*p))
            .collect();
        for &port in &live {
            let info = text(port, &["CLUSTER", "INFO"]).map_err(|e| format!("{port}: {e}"))?;
            if field(&info, "cluster_state") != Some("ok")
                || field(&info, "cluster_slots_ok") != Some("16384")
            {
                return Err(format!("{port}: {}", info.replace("\r\n", " ")));
            }
            let replication =
                text(port, &["INFO", "replication"]).map_err(|e| format!("{port}: {e}"))?;
            if field(&replication, "role") == Some("slave")
                && field(&replication, "master_link_status") != Some("up")
            {
                return Err(format!("{port}: replica not in sync yet"));
            }
        }
        let nodes = self.cluster_nodes_from(&live)?;
        let expected_replicas = live.len().saturating_sub(self.primaries_count(&nodes));
        let live_replicas = nodes
            .iter()
            .filter(|n| n.has_flag("slave") && !n.failed())
            .count();
        if live_replicas != expected_replicas {
            return Err(format!(
                "{live_replicas} replicas seen, {expected_replicas} expected"
            ));
        }
        Ok(())
    }

    fn primaries_count(&self, nodes: &[NodeLine]) -> usize {
        nodes
            .iter()
            .filter(|n| n.has_flag("master") && !n.failed() && n.serves_slots)
            .count()
    }

    /// Runs `redis-cli -p PORT args…` and returns its output without the
    /// final newline (raw, so `GET` returns the value's bytes).
    ///
    /// # Panics
    ///
    /// When `redis-cli` cannot be run or exits with an error.
    pub fn cli(&self, port: u16, args: &[&str]) -> Vec<u8> {
        cli(port, args)
    }

    /// The text of `INFO section` on the node on `port`.
    ///
    /// # Panics
    ///
    /// When the node does not answer.
    pub fn info(&self, port: u16, section: &str) -> String {
        text(port, &["INFO", section]).unwrap_or_else(|e| panic!("INFO on {port}: {e}"))
    }

    fn node(&self, port: u16) -> &ClusterNode {
        self.nodes
            .iter()
            .find(|n| n.port == port)
            .unwrap_or_else(|| panic!("no node of this cluster listens on {port}"))
    }

    fn create(&self) {
        let mut cmd = Command::new("redis-cli");
        cmd.arg("--cluster").arg("create");
        for port in self.ports() {
            cmd.arg(format!("127.0.0.1:{port}"));
        }
        cmd.arg("--cluster-replicas")
            .arg(self.replicas.to_string())
            .arg("--cluster-yes")
            .stdin(Stdio::null());
        let output = cmd
            .output()
            .unwrap_or_else(|e| panic!("cannot run redis-cli --cluster create: {e}"));
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success() && stdout.contains("All 16384 slots covered"),
            "redis-cli --cluster create failed ({}):\n{stdout}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }

    fn cluster_nodes(&self) -> Vec<NodeLine> {
        let live: Vec<u16> = self
            .ports()
            .into_iter()
            .filter(|p| self.is_running(*p))
            .collect();
        self.cluster_nodes_from(&live)
            .unwrap_or_else(|e| panic!("no node answers CLUSTER NODES: {e}"))
    }

    fn cluster_nodes_from(&self, live: &[u16]) -> Result<Vec<NodeLine>, String> {
        let mut last = String::from("no running node");
        for &port in live {
            match text(port, &["CLUSTER", "NODES"]) {
                Ok(nodes) => return Ok(nodes.lines().filter_map(parse_node_line).collect()),
                Err(e) => last = format!("{port}: {e}"),
            }
        }
        Err(last)
    }
}

impl Default for RedisCluster {
    fn default() -> Self {
        RedisCluster::new()
    }
}

impl NodeLine {
    fn has_flag(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f == flag)
    }

    fn failed(&self) -> bool {
        self.has_flag("fail") || self.has_flag("fail?") || self.has_flag("noaddr")
    }
}

/// `<id> <ip:port@cport[,hostname]> <flags> <master> <ping> <pong> <epoch> <link> <slot>…`
fn parse_node_line(line: &str) -> Option<NodeLine> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    if fields.len() < 8 {
        return None;
    }
    let addr = fields[1].split(['@', ',']).next()?;
    let port = addr.rsplit_once(':')?.1.parse().ok()?;
    Some(NodeLine {
        port,
        id: fields[0].to_owned(),
        flags: fields[2].split(',').map(str::to_owned).collect(),
        master_id: fields[3].to_owned(),
        serves_slots: fields[8..].iter().any(|s| !s.starts_with('[')),
    })
}

pub(crate) fn check_binaries() {
    for binary in ["redis-server", "redis-cli"] {
        match Command::new(binary)
            .arg("--version")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
        {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => panic!(
                "`{binary}` is not installed, and the Redis Cluster and Sentinel tests need \
                 real servers: {INSTALL_HINT}"
            ),
            Err(e) => panic!("cannot run `{binary}`: {e}"),
        }
    }
}

/// Runs `redis-cli -p PORT args…`; the output without the final newline.
pub(crate) fn cli(port: u16, args: &[&str]) -> Vec<u8> {
    let mut cmd = Command::new("redis-cli");
    cmd.arg("-h")
        .arg("127.0.0.1")
        .arg("-p")
        .arg(port.to_string());
    run_cli(cmd, args)
}

/// A `field:value` line of `INFO`-style text.
pub(crate) fn field<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    text.lines().find_map(|line| {
        let (f, v) = line.split_once(':')?;
        (f == name).then(|| v.trim())
    })
}

/// A RESP reply, as much of it as the fixtures need.
#[derive(Debug)]
#[allow(dead_code)] // The payloads are read through `Debug` in messages.
pub(crate) enum Reply {
    /// `+OK`.
    Status(String),
    /// `-ERR …`.
    Error(String),
    /// `:1`.
    Int(i64),
    /// A bulk string (`None` for nil).
    Bulk(Option<Vec<u8>>),
    /// An array (`None` for nil).
    Array(Option<Vec<Reply>>),
}

/// Sends one command to the server on `port` and reads the reply.
pub(crate) fn request(port: u16, args: &[&str]) -> io::Result<Reply> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(200))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.set_write_timeout(Some(Duration::from_secs(2)))?;
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    stream.write_all(&out)?;
    read_reply(&mut BufReader::new(stream))
}

/// The reply of a command that answers with text (`INFO`, `CLUSTER NODES`).
pub(crate) fn text(port: u16, args: &[&str]) -> io::Result<String> {
    match request(port, args)? {
        Reply::Bulk(Some(bytes)) => Ok(String::from_utf8_lossy(&bytes).into_owned()),
        Reply::Status(s) => Ok(s),
        other => Err(io::Error::other(format!("unexpected reply {other:?}"))),
    }
}

fn read_reply(reader: &mut impl BufRead) -> io::Result<Reply> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    let line = line.trim_end();
    let bad = || io::Error::new(io::ErrorKind::InvalidData, line.to_owned());
    let (kind, rest) = line.split_at(line.len().min(1));
    Ok(match kind {
        "+" => Reply::Status(rest.to_owned()),
        "-" => Reply::Error(rest.to_owned()),
        ":" => Reply::Int(rest.parse().map_err(|_| bad())?),
        "$" => {
            let len: i64 = rest.parse().map_err(|_| bad())?;
            match usize::try_from(len) {
                Ok(len) => {
                    let mut buf = vec![0; len + 2];
                    reader.read_exact(&mut buf)?;
                    buf.truncate(len);
                    Reply::Bulk(Some(buf))
                }
                Err(_) => Reply::Bulk(None),
            }
        }
        "*" => {
            let len: i64 = rest.parse().map_err(|_| bad())?;
            match usize::try_from(len) {
                Ok(len) => {
                    let mut items = Vec::with_capacity(len);
                    for _ in 0..len {
                        items.push(read_reply(reader)?);
                    }
                    Reply::Array(Some(items))
                }
                Err(_) => Reply::Array(None),
            }
        }
        _ => return Err(bad()),
    })
}
