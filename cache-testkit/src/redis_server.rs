//! A private `redis-server` for tests: [`RedisServer`].
//!
//! The fixture starts `redis-server` on a free loopback port, with no
//! persistence (`--save ""`, `--appendonly no`) and its own temporary
//! directory, waits until it answers, and can stop, restart (same port),
//! pause (`SIGSTOP`) and resume (`SIGCONT`) it to inject faults. The server
//! dies with the test process, even when the fixture lives in a `static` or
//! the test aborts: a small `sh` guardian kills it when the fixture's pipe
//! closes.
//!
//! Set `CACHE_TEST_REDIS_URL` to run the shared tests against an existing
//! server instead ([`RedisServer::from_env`], [`RedisServer::shared`]);
//! fault injection is then unavailable and tests that need it start their
//! own server ([`RedisServer::new`]).
//!
//! A missing `redis-server` binary is a test failure that names the install
//! command, never a skipped test.
//!
//! TLS: [`TestCertificates::generate`] makes a throw-away CA, a server and
//! a client certificate with the `openssl` command, and
//! [`RedisServerBuilder::tls`] adds a TLS port to the server
//! ([`RedisServer::tls_url`]); the plain port stays for the fixture's own
//! probes and `redis-cli`.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use crate::process::{free_port_except, new_dir, run_cli, signal_quiet, INSTALL_HINT};

/// The environment variable naming an existing server to use instead of a
/// private one (e.g. `redis://127.0.0.1:6379/15`).
pub const REDIS_URL_ENV: &str = "CACHE_TEST_REDIS_URL";

/// How long a starting server may take to answer.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a stopping server may take to exit before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs redis-server (`$0 "$@"`) and kills it when stdin closes, so the
/// server never outlives the test process. Prints the server's pid first;
/// when the server exits, prints its status and the end of its log, then
/// removes the server's directory.
const GUARDIAN: &str = r#"
dir="$CACHE_TESTKIT_REDIS_DIR"
"$0" "$@" >/dev/null 2>&1 &
pid=$!
echo "$pid"
exec 3<&0
{ read -r _ <&3; kill -CONT "$pid" 2>/dev/null; kill "$pid" 2>/dev/null; } &
watch=$!
# The test process may be gone by now: reporting must not kill us first.
trap '' PIPE
wait "$pid"
status=$?
kill "$watch" 2>/dev/null
{
  echo "redis-server exited with status $status; the end of its log:"
  tail -n 20 "$dir/redis.log"
} 2>/dev/null
rm -rf "$dir"
"#;

/// A Redis server for tests: a private `redis-server` this fixture started
/// (and stops on drop), or an existing one named by `CACHE_TEST_REDIS_URL`.
///
/// All methods take `&self`, so one server can live in a `static` and be
/// shared by the tests of a binary (each test makes its own client).
///
/// # Examples
///
/// ```no_run
/// use cache_testkit::redis_server::RedisServer;
///
/// let server = RedisServer::new();
/// let url = server.url(); // redis://127.0.0.1:PORT
/// server.pause(); // clients now time out
/// server.resume();
/// server.stop(); // clients now fail to connect
/// server.start(); // same port again
/// # let _ = url;
/// ```
#[derive(Debug)]
pub struct RedisServer {
    host: String,
    port: u16,
    /// The TLS port, when started with [`RedisServerBuilder::tls`].
    tls_port: Option<u16>,
    url: String,
    password: Option<String>,
    /// `None` for an external server.
    process: Option<Mutex<Process>>,
}

/// Options of a private server; see [`RedisServer::builder`].
#[derive(Debug, Clone)]
#[must_use]
pub struct RedisServerBuilder {
    binary: PathBuf,
    args: Vec<String>,
    password: Option<String>,
    tls: Option<(TestCertificates, TlsAuthClients)>,
}

/// Whether a TLS server asks clients for a certificate
/// (`--tls-auth-clients`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsAuthClients {
    /// Clients must present a certificate signed by the CA (`yes`).
    Required,
    /// A certificate, when presented, must be signed by the CA
    /// (`optional`).
    Optional,
    /// Client certificates are not asked for (`no`).
    No,
}

impl TlsAuthClients {
    fn arg(self) -> &'static str {
        match self {
            TlsAuthClients::Required => "yes",
            TlsAuthClients::Optional => "optional",
            TlsAuthClients::No => "no",
        }
    }
}

/// Throw-away certificates for TLS tests, made by the `openssl` command in
/// a new directory under the system's temp directory (named with the
/// process id; a few kilobytes, left for the OS to clean): a CA, a server
/// certificate for `127.0.0.1` and `localhost` signed by it, a client
/// certificate signed by it, and a second, unrelated CA (to test that a
/// server signed by another CA is refused). Keys are P-256 (fast to make),
/// PKCS#8 PEM.
///
/// # Examples
///
/// ```no_run
/// use cache_testkit::redis_server::{RedisServer, TestCertificates, TlsAuthClients};
///
/// let certs = TestCertificates::generate();
/// let server = RedisServer::builder().tls(&certs, TlsAuthClients::Optional).spawn();
/// let url = format!("{}?tls_ca_file={}", server.tls_url().unwrap(), certs.ca_file().display());
/// # let _ = url;
/// ```
#[derive(Debug, Clone)]
pub struct TestCertificates {
    dir: PathBuf,
}

impl TestCertificates {
    /// Makes the certificates.
    ///
    /// # Panics
    ///
    /// When `openssl` is missing or fails (the message says which step).
    pub fn generate() -> TestCertificates {
        let dir = new_dir("tls", 0);
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        let certs = TestCertificates { dir };
        for ca in ["ca", "other-ca"] {
            certs.openssl(&[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-days",
                "2",
                "-subj",
                &format!("/CN=cache-testkit {ca}"),
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
                "-keyout",
                &format!("{ca}.key"),
                "-out",
                &format!("{ca}.crt"),
            ]);
        }
        for (name, usage, san) in [
            (
                "server",
                "serverAuth,clientAuth",
                "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
            ),
            ("client", "clientAuth", ""),
        ] {
            certs.openssl(&[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-subj",
                &format!("/CN=cache-testkit {name}"),
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
            ]);
            let ext = format!(
                "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage={usage}\n{san}"
            );
            std::fs::write(certs.dir.join(format!("{name}.ext")), ext)
                .unwrap_or_else(|e| panic!("cannot write {name}.ext: {e}"));
            certs.openssl(&[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                &format!("{name}.ext"),
                "-out",
                &format!("{name}.crt"),
            ]);
        }
        certs
    }

    fn openssl(&self, args: &[&str]) {
        let output = Command::new("openssl")
            .args(args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| {
                panic!("cannot run openssl ({e}); the TLS tests need it: sudo apt-get install -y openssl")
            });
        assert!(
            output.status.success(),
            "openssl {args:?} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// The CA certificate (PEM) that signed the server and client
    /// certificates.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    /// A CA certificate (PEM) that signed nothing here.
    pub fn other_ca_file(&self) -> PathBuf {
        self.dir.join("other-ca.crt")
    }

    /// The server's certificate (PEM; for `127.0.0.1` and `localhost`).
    pub fn server_cert_file(&self) -> PathBuf {
        self.dir.join("server.crt")
    }

    /// The server's private key (PEM).
    pub fn server_key_file(&self) -> PathBuf {
        self.dir.join("server.key")
    }

    /// The client's certificate (PEM).
    pub fn client_cert_file(&self) -> PathBuf {
        self.dir.join("client.crt")
    }

    /// The client's private key (PEM).
    pub fn client_key_file(&self) -> PathBuf {
        self.dir.join("client.key")
    }

    /// The `redis-server` arguments for TLS on `tls_port` with these
    /// certificates.
    pub(crate) fn server_args(&self, tls_port: u16, auth: TlsAuthClients) -> Vec<String> {
        let path = |p: PathBuf| p.display().to_string();
        vec![
            "--tls-port".to_owned(),
            tls_port.to_string(),
            "--tls-cert-file".to_owned(),
            path(self.server_cert_file()),
            "--tls-key-file".to_owned(),
            path(self.server_key_file()),
            "--tls-ca-cert-file".to_owned(),
            path(self.ca_file()),
            "--tls-auth-clients".to_owned(),
            auth.arg().to_owned(),
        ]
    }
}

#[derive(Debug)]
struct Process {
    binary: PathBuf,
    args: Vec<String>,
    password: Option<String>,
    port: u16,
    dir: PathBuf,
    running: Option<Running>,
    paused: bool,
}

#[derive(Debug)]
struct Running {
    guardian: Child,
    /// Closing it (dropping) makes the guardian kill the server.
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    pid: u32,
}

impl Default for RedisServerBuilder {
    fn default() -> Self {
        RedisServerBuilder {
            binary: PathBuf::from("redis-server"),
            args: Vec::new(),
            password: None,
            tls: None,
        }
    }
}

impl RedisServerBuilder {
    /// Adds one command-line argument for `redis-server` (e.g.
    /// `"--maxmemory"`, then `"10mb"`).
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Adds command-line arguments for `redis-server`.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Requires this password for the `default` user (`--requirepass`).
    /// [`RedisServer::url`] then carries it (`redis://:password@…`) and
    /// [`RedisServer::cli`] authenticates with it.
    pub fn requirepass(mut self, password: impl Into<String>) -> Self {
        let password = password.into();
        self.args.push("--requirepass".to_owned());
        self.args.push(password.clone());
        self.password = Some(password);
        self
    }

    /// Adds a TLS port with these certificates (`--tls-port`, the server
    /// certificate and key, the CA for client certificates,
    /// `--tls-auth-clients`); [`RedisServer::tls_url`] names it. The plain
    /// port stays open (the fixture probes it; `redis-cli` uses it).
    pub fn tls(mut self, certificates: &TestCertificates, auth: TlsAuthClients) -> Self {
        self.tls = Some((certificates.clone(), auth));
        self
    }

    /// Uses this `redis-server` binary instead of the one on `PATH`.
    pub fn binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.binary = path.into();
        self
    }

    /// Starts the server on a free loopback port and waits until it answers.
    ///
    /// # Panics
    ///
    /// When `redis-server` is not installed (the message gives the install
    /// command) or the server does not start.
    pub fn spawn(self) -> RedisServer {
        check_binary(&self.binary);
        let mut last_failure = String::new();
        // A free port can be taken by someone else before the server binds
        // it; try a few.
        for _ in 0..5 {
            let port = free_port_except(&[]);
            let mut args = self.args.clone();
            let tls_port = self.tls.as_ref().map(|(certs, auth)| {
                let tls_port = free_port_except(&[port]);
                args.extend(certs.server_args(tls_port, *auth));
                tls_port
            });
            let mut process = Process {
                binary: self.binary.clone(),
                args,
                password: self.password.clone(),
                port,
                dir: new_dir("redis", port),
                running: None,
                paused: false,
            };
            match process.spawn() {
                Ok(()) => {
                    let host = Ipv4Addr::LOCALHOST.to_string();
                    let url = match &self.password {
                        Some(p) => format!("redis://:{p}@{host}:{port}"),
                        None => format!("redis://{host}:{port}"),
                    };
                    return RedisServer {
                        host,
                        port,
                        tls_port,
                        url,
                        password: self.password,
                        process: Some(Mutex::new(process)),
                    };
                }
                Err(failure) => last_failure = failure,
            }
        }
        panic!("could not start redis-server: {last_failure}");
    }
}

impl RedisServer {
    /// Starts a private server with default options.
    ///
    /// # Panics
    ///
    /// As [`RedisServerBuilder::spawn`].
    pub fn new() -> RedisServer {
        RedisServer::builder().spawn()
    }

    /// Options for a private server (extra arguments, a password).
    pub fn builder() -> RedisServerBuilder {
        RedisServerBuilder::default()
    }

    /// The server named by `CACHE_TEST_REDIS_URL` when it is set, else a new
    /// private one.
    ///
    /// # Panics
    ///
    /// As [`RedisServerBuilder::spawn`], or when the variable is not a
    /// `redis://` URL.
    pub fn from_env() -> RedisServer {
        match std::env::var(REDIS_URL_ENV) {
            Ok(url) if !url.trim().is_empty() => RedisServer::external(url.trim()),
            _ => RedisServer::new(),
        }
    }

    /// One server for the whole test binary, made by
    /// [`from_env`](RedisServer::from_env) on first use. It is never
    /// dropped; the private server still dies with the process.
    ///
    /// Tests sharing it must keep to their own keys (a random prefix) and
    /// must not stop or pause it.
    ///
    /// # Panics
    ///
    /// As [`from_env`](RedisServer::from_env).
    pub fn shared() -> &'static RedisServer {
        static SHARED: OnceLock<RedisServer> = OnceLock::new();
        SHARED.get_or_init(RedisServer::from_env)
    }

    fn external(url: &str) -> RedisServer {
        let rest = url
            .strip_prefix("redis://")
            .unwrap_or_else(|| panic!("{REDIS_URL_ENV} must be a redis:// URL, got `{url}`"));
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((userinfo, hostport)) => (Some(userinfo), hostport),
            None => (None, authority),
        };
        let password = userinfo
            .and_then(|u| u.split_once(':'))
            .map(|(_, p)| p.to_owned());
        let (host, port) = match hostport.rsplit_once(':') {
            Some((host, port)) if !host.ends_with(']') || hostport.starts_with('[') => {
                match port.parse() {
                    Ok(port) => (host.to_owned(), port),
                    Err(_) => (hostport.to_owned(), 6379),
                }
            }
            _ => (hostport.to_owned(), 6379),
        };
        RedisServer {
            host,
            port,
            tls_port: None,
            url: url.to_owned(),
            password,
            process: None,
        }
    }

    /// The server's URL: `redis://127.0.0.1:PORT` (with the password when
    /// set with [`requirepass`](RedisServerBuilder::requirepass)), or the
    /// value of `CACHE_TEST_REDIS_URL`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The server's TLS URL, `rediss://127.0.0.1:TLS_PORT` (with the
    /// password when set), when started with [`RedisServerBuilder::tls`].
    pub fn tls_url(&self) -> Option<String> {
        let tls_port = self.tls_port?;
        Some(match &self.password {
            Some(p) => format!("rediss://:{p}@{}:{tls_port}", self.host),
            None => format!("rediss://{}:{tls_port}", self.host),
        })
    }

    /// The server's TLS port, when started with [`RedisServerBuilder::tls`].
    pub fn tls_port(&self) -> Option<u16> {
        self.tls_port
    }

    /// The server's host (`127.0.0.1` for a private server).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The server's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Whether this is an existing server named by `CACHE_TEST_REDIS_URL`
    /// (then [`stop`](Self::stop), [`start`](Self::start),
    /// [`pause`](Self::pause) and [`resume`](Self::resume) panic).
    pub fn is_external(&self) -> bool {
        self.process.is_none()
    }

    /// Whether the server process is running (stopped by [`stop`](Self::stop)
    /// or dead: false). Always true for an external server.
    pub fn is_running(&self) -> bool {
        match &self.process {
            None => true,
            Some(_) => self.process("is_running").is_alive(),
        }
    }

    /// Stops the server (clients see refused connections) and waits until it
    /// has exited. Does nothing when it is already stopped.
    ///
    /// # Panics
    ///
    /// On an external server, or when the server does not exit.
    pub fn stop(&self) {
        self.process("stop").stop();
    }

    /// Starts the server again on the same port, with the same options, and
    /// waits until it answers. Does nothing when it is running. The data is
    /// gone (no persistence).
    ///
    /// # Panics
    ///
    /// On an external server, or when the server does not start (e.g. the
    /// port was taken in the meantime).
    pub fn start(&self) {
        let mut process = self.process("start");
        if process.is_alive() {
            return;
        }
        process.dir = new_dir("redis", process.port);
        if let Err(failure) = process.spawn() {
            panic!("could not restart redis-server: {failure}");
        }
    }

    /// Freezes the server with `SIGSTOP`: connections stay open, nothing is
    /// answered (clients time out) until [`resume`](Self::resume).
    ///
    /// # Panics
    ///
    /// On an external server, or when the server is not running.
    pub fn pause(&self) {
        let mut process = self.process("pause");
        let pid = process.pid("pause");
        signal("-STOP", pid);
        process.paused = true;
    }

    /// Resumes a paused server with `SIGCONT`.
    ///
    /// # Panics
    ///
    /// On an external server, or when the server is not running.
    pub fn resume(&self) {
        let mut process = self.process("resume");
        let pid = process.pid("resume");
        signal("-CONT", pid);
        process.paused = false;
    }

    /// Runs `redis-cli` against this server (authenticated when the password
    /// is known) and returns its standard output without the final newline.
    /// Output is raw (not a terminal), so `GET` returns the value's bytes.
    ///
    /// # Panics
    ///
    /// When `redis-cli` cannot be run (the message gives the install
    /// command) or exits with an error.
    pub fn cli(&self, args: &[&str]) -> Vec<u8> {
        let mut cmd = Command::new("redis-cli");
        cmd.arg("-h")
            .arg(&self.host)
            .arg("-p")
            .arg(self.port.to_string());
        if let Some(db) = self.db() {
            cmd.arg("-n").arg(db);
        }
        if let Some(password) = &self.password {
            cmd.arg("--no-auth-warning").arg("-a").arg(password);
        }
        run_cli(cmd, args)
    }

    /// The database number in the URL, when one is given.
    fn db(&self) -> Option<String> {
        let rest = self.url.split_once("://")?.1;
        let path = rest.split_once('/')?.1;
        let db = path.split(['?', '#']).next()?;
        (!db.is_empty()).then(|| db.to_owned())
    }

    fn process(&self, what: &str) -> MutexGuard<'_, Process> {
        let Some(process) = &self.process else {
            panic!(
                "RedisServer::{what} needs a server started by this fixture, but \
                 {REDIS_URL_ENV} points at an existing one; this test starts its own \
                 (RedisServer::new) or must run without {REDIS_URL_ENV}"
            )
        };
        process.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Default for RedisServer {
    fn default() -> Self {
        RedisServer::new()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(process) = &self.process {
            let mut process = process.lock().unwrap_or_else(|p| p.into_inner());
            process.stop();
            let _ = std::fs::remove_dir_all(&process.dir);
        }
    }
}

impl Process {
    /// Starts the server on `self.port` and waits until it answers.
    fn spawn(&mut self) -> Result<(), String> {
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| format!("cannot create {}: {e}", self.dir.display()))?;
        let log = self.dir.join("redis.log");
        let mut guardian = Command::new("sh")
            .arg("-c")
            .arg(GUARDIAN)
            .arg(&self.binary)
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .args(["--daemonize", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .arg("--logfile")
            .arg(&log)
            .args(&self.args)
            .env("CACHE_TESTKIT_REDIS_DIR", &self.dir)
            .current_dir(&self.dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot run sh: {e}"))?;
        let stdin = guardian.stdin.take();
        let mut stdout = BufReader::new(guardian.stdout.take().expect("piped stdout"));
        let mut line = String::new();
        let pid = match stdout.read_line(&mut line) {
            Ok(_) => line.trim().parse::<u32>().ok(),
            Err(_) => None,
        };
        let Some(pid) = pid else {
            let _ = guardian.kill();
            let _ = guardian.wait();
            return Err(format!(
                "the guardian shell did not report a pid ({line:?})"
            ));
        };
        self.running = Some(Running {
            guardian,
            stdin,
            stdout,
            pid,
        });
        self.paused = false;

        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(report) = self.exited() {
                return Err(format!("port {}: {report}", self.port));
            }
            match probe(self.port, self.password.as_deref()) {
                // Our server, or one we cannot check (password unknown).
                Ok(Some(server_pid)) if server_pid == pid => return Ok(()),
                Ok(None) => return Ok(()),
                // Someone else's server on this port: ours will fail to bind.
                Ok(Some(_)) | Err(_) => {}
            }
            if Instant::now() > deadline {
                self.stop();
                return Err(format!(
                    "redis-server on port {} did not answer within {START_TIMEOUT:?}",
                    self.port
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// When the server has exited: the guardian's report (status, log).
    fn exited(&mut self) -> Option<String> {
        let running = self.running.as_mut()?;
        match running.guardian.try_wait() {
            Ok(None) => None,
            _ => {
                let mut report = String::new();
                let _ = running.stdout.read_to_string(&mut report);
                self.running = None;
                Some(report)
            }
        }
    }

    fn is_alive(&mut self) -> bool {
        self.exited();
        self.running.is_some()
    }

    fn pid(&mut self, what: &str) -> u32 {
        if !self.is_alive() {
            panic!("RedisServer::{what}: the server is not running");
        }
        self.running.as_ref().map_or(0, |r| r.pid)
    }

    fn stop(&mut self) {
        let Some(mut running) = self.running.take() else {
            return;
        };
        if self.paused {
            signal_quiet("-CONT", running.pid);
            self.paused = false;
        }
        // The guardian resumes and terminates the server on EOF.
        drop(running.stdin.take());
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            match running.guardian.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if Instant::now() > deadline => {
                    signal_quiet("-KILL", running.pid);
                    let _ = running.guardian.wait();
                    break;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
        // The guardian prints a short report; drain it.
        let mut report = String::new();
        let _ = running.stdout.read_to_string(&mut report);
    }
}

fn check_binary(binary: &Path) {
    match Command::new(binary)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => panic!(
            "`{}` is not installed, and the Redis tests need a real server: {INSTALL_HINT}. \
             To use a running server for the shared tests, set {REDIS_URL_ENV}=redis://host:port/db \
             (fault-injection tests always start their own).",
            binary.display()
        ),
        Err(e) => panic!("cannot run `{}`: {e}", binary.display()),
    }
}

fn signal(sig: &str, pid: u32) {
    let status = Command::new("kill")
        .arg(sig)
        .arg(pid.to_string())
        .status()
        .unwrap_or_else(|e| panic!("cannot run kill: {e}"));
    assert!(status.success(), "kill {sig} {pid} failed: {status}");
}

/// Asks the server on `port` who it is: `Ok(Some(pid))` from `INFO server`,
/// `Ok(None)` when it answers but will not say (it wants a password we do
/// not know), `Err` when it does not answer.
fn probe(port: u16, password: Option<&str>) -> io::Result<Option<u32>> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(200))?;
    stream.set_read_timeout(Some(Duration::from_millis(500)))?;
    stream.set_write_timeout(Some(Duration::from_millis(500)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    if let Some(password) = password {
        stream.write_all(&command(&["AUTH", password]))?;
        read_reply(&mut reader)?;
    }
    stream.write_all(&command(&["INFO", "server"]))?;
    match read_reply(&mut reader)? {
        Reply::Bulk(info) => Ok(String::from_utf8_lossy(&info)
            .lines()
            .find_map(|l| l.strip_prefix("process_id:"))
            .and_then(|pid| pid.trim().parse().ok())),
        // -NOAUTH, -LOADING…: alive, but not telling.
        Reply::Line(line) if line.starts_with("-LOADING") => {
            Err(io::Error::new(io::ErrorKind::WouldBlock, line))
        }
        Reply::Line(_) => Ok(None),
    }
}

fn command(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out
}

enum Reply {
    /// A one-line reply (`+OK`, `-ERR …`, `:1`), as sent.
    Line(String),
    /// A bulk string.
    Bulk(Vec<u8>),
}

fn read_reply(reader: &mut impl BufRead) -> io::Result<Reply> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    let line = line.trim_end().to_owned();
    match line.strip_prefix('$') {
        Some(len) => {
            let len: i64 = len
                .parse()
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, line.clone()))?;
            let Ok(len) = usize::try_from(len) else {
                return Ok(Reply::Line(line)); // $-1: nil
            };
            let mut buf = vec![0; len + 2];
            reader.read_exact(&mut buf)?;
            buf.truncate(len);
            Ok(Reply::Bulk(buf))
        }
        None => Ok(Reply::Line(line)),
    }
}
