//! The `RedisServer` fixture of `cache-testkit` itself (it lives there, but
//! needs a Redis client to be checked, so its tests live here).

use std::net::TcpStream;

use cache_testkit::redis_server::RedisServer;

#[test]
fn stop_and_start_keep_the_port() {
    let server = RedisServer::new();
    let port = server.port();
    assert_eq!(server.url(), format!("redis://127.0.0.1:{port}"));
    assert!(server.is_running());
    assert!(!server.is_external());
    assert_eq!(server.cli(&["PING"]), b"PONG");

    server.stop();
    assert!(!server.is_running());
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
    server.stop(); // idempotent

    server.start();
    assert!(server.is_running());
    assert_eq!(server.port(), port);
    assert_eq!(server.cli(&["PING"]), b"PONG");
    // No persistence.
    assert_eq!(server.cli(&["CONFIG", "GET", "save"]), b"save\n");
    assert_eq!(
        server.cli(&["CONFIG", "GET", "appendonly"]),
        b"appendonly\nno"
    );
}

#[test]
fn pause_and_resume() {
    let server = RedisServer::new();
    server.pause();
    assert!(server.is_running());
    server.resume();
    assert_eq!(server.cli(&["PING"]), b"PONG");
    // Dropping a paused server must not hang.
    server.pause();
}

#[test]
fn extra_arguments_and_password() {
    let server = RedisServer::builder()
        .args(["--maxmemory", "10mb"])
        .requirepass("pw")
        .spawn();
    assert_eq!(
        server.url(),
        format!("redis://:pw@127.0.0.1:{}", server.port())
    );
    assert_eq!(
        server.cli(&["CONFIG", "GET", "maxmemory"]),
        b"maxmemory\n10485760"
    );
}

#[test]
fn dropping_the_server_stops_it() {
    let server = RedisServer::new();
    let port = server.port();
    drop(server);
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
}

#[test]
#[should_panic(expected = "apt-get install -y redis-server")]
fn a_missing_binary_names_the_install_command() {
    let _ = RedisServer::builder()
        .binary("/nonexistent/redis-server")
        .spawn();
}
