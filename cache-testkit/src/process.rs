//! What the Redis fixtures share: running `redis-cli`, free ports, scratch
//! directories, signals and the install hint.

use std::io;
use std::net::{Ipv4Addr, TcpListener};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

/// How to get the Redis binaries, for messages when one is missing.
pub(crate) const INSTALL_HINT: &str = "install it with `sudo apt-get install -y redis-server` \
     (Debian/Ubuntu; it brings redis-cli and redis-sentinel; `brew install redis` on macOS)";

/// Runs `cmd` (a prepared `redis-cli` with its connection flags) with
/// `args`; its output without the final newline.
///
/// # Panics
///
/// When `redis-cli` cannot be run (the message gives the install command)
/// or exits with an error.
pub(crate) fn run_cli(mut cmd: Command, args: &[&str]) -> Vec<u8> {
    let output = match cmd.args(args).stdin(Stdio::null()).output() {
        Ok(output) => output,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            panic!("redis-cli is not installed: {INSTALL_HINT}")
        }
        Err(e) => panic!("cannot run redis-cli: {e}"),
    };
    assert!(
        output.status.success(),
        "redis-cli {args:?} failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let mut out = output.stdout;
    if out.last() == Some(&b'\n') {
        out.pop();
    }
    out
}

/// A free loopback port not in `taken`.
pub(crate) fn free_port_except(taken: &[u16]) -> u16 {
    loop {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("cannot find a free loopback port");
        if !taken.contains(&port) {
            return port;
        }
    }
}

/// A fresh scratch directory path (not created) for a `kind` of node.
pub(crate) fn new_dir(kind: &str, port: u16) -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    std::env::temp_dir().join(format!(
        "cache-testkit-{kind}-{}-{port}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ))
}

/// Sends `sig` to `pid`, ignoring failure (the process may be gone).
pub(crate) fn signal_quiet(sig: &str, pid: u32) {
    let _ = Command::new("kill")
        .arg(sig)
        .arg(pid.to_string())
        .stderr(Stdio::null())
        .status();
}
