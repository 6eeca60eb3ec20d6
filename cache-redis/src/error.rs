//! Mapping the client's errors to the cache's [`Error`].

use cache_core::{Error, ErrorKind};
use redis::{RedisError, ServerErrorKind};

/// Maps a `redis` error to the cache's error; the client's error becomes the
/// `source()`, never part of a public signature.
pub(crate) fn map_error(err: RedisError, operation: &'static str) -> Error {
    let (kind, message) = classify(&err);
    Error::new(kind, message)
        .with_backend("redis")
        .with_operation(operation)
        .with_source(err)
}

/// Maps a failure to connect to `target`: a [`Connection`](ErrorKind::Connection)
/// error (or [`Config`](ErrorKind::Config)) that names the server.
pub(crate) fn connect_error(err: RedisError, target: &str) -> Error {
    let (kind, message) = classify(&err);
    let kind = match kind {
        ErrorKind::Config => ErrorKind::Config,
        _ => ErrorKind::Connection,
    };
    Error::new(kind, format!("cannot connect to {target}: {message}"))
        .with_backend("redis")
        .with_operation("connect")
        .with_source(err)
}

/// A cluster between two configurations (a failover, a slot moving); the
/// client follows redirections itself, so these reach us only when it ran
/// out of retries.
const CLUSTER_CHANGING: (ErrorKind, &str) = (
    ErrorKind::Connection,
    "the Redis Cluster is changing its configuration (failover or resharding)",
);

/// A write reached a node that is a replica now (after a failover).
const READ_ONLY: (ErrorKind, &str) = (
    ErrorKind::Connection,
    "the Redis server is a read-only replica now (failover in progress)",
);

fn classify(err: &RedisError) -> (ErrorKind, &'static str) {
    use redis::ErrorKind as K;

    if err.is_timeout() {
        return (
            ErrorKind::Timeout,
            "the Redis server did not answer in time",
        );
    }
    if err.is_connection_refusal() {
        return (
            ErrorKind::Connection,
            "the Redis server refused the connection",
        );
    }
    if let Some(code) = err.code() {
        match code {
            "NOAUTH" => {
                return (
                    ErrorKind::Connection,
                    "the Redis server requires authentication; give the credentials \
                     (redis://user:password@host)",
                )
            }
            "WRONGPASS" => {
                return (
                    ErrorKind::Connection,
                    "the Redis server rejected the user name or password",
                )
            }
            "CLUSTERDOWN" | "TRYAGAIN" | "MOVED" | "ASK" => return CLUSTER_CHANGING,
            "READONLY" => return READ_ONLY,
            _ => {}
        }
        let text = err.to_string().to_ascii_lowercase();
        if text.contains("not an integer") || text.contains("overflow") {
            return (
                ErrorKind::InvalidValue,
                "the value is not an integer, or the result would overflow",
            );
        }
    }
    match err.kind() {
        K::AuthenticationFailed => (
            ErrorKind::Connection,
            "the Redis server rejected the user name or password",
        ),
        // The server is there but cannot serve yet (loading its data set,
        // failing over): retryable, like an unreachable server.
        K::Server(ServerErrorKind::BusyLoading | ServerErrorKind::MasterDown) => (
            ErrorKind::Connection,
            "the Redis server is not ready to serve",
        ),
        K::Server(
            ServerErrorKind::ClusterDown
            | ServerErrorKind::TryAgain
            | ServerErrorKind::Moved
            | ServerErrorKind::Ask,
        )
        | K::ClusterConnectionNotFound => CLUSTER_CHANGING,
        K::Server(ServerErrorKind::ReadOnly) => READ_ONLY,
        K::MasterNameNotFoundBySentinel
        | K::NoValidReplicasFoundBySentinel
        | K::EmptySentinelList => (
            ErrorKind::Connection,
            "the Sentinels do not name a reachable primary",
        ),
        K::InvalidClientConfig => (
            ErrorKind::Config,
            "the Redis client configuration is invalid",
        ),
        K::Io => (
            ErrorKind::Connection,
            if err.is_connection_dropped() {
                "the connection to the Redis server was lost"
            } else {
                "cannot reach the Redis server"
            },
        ),
        _ => (
            ErrorKind::Backend,
            "the Redis server answered with an error",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;
    use std::io;

    fn kind_of(err: RedisError) -> ErrorKind {
        map_error(err, "get").kind()
    }

    #[test]
    fn io_errors_are_connection_or_timeout() {
        for k in [
            io::ErrorKind::ConnectionRefused,
            io::ErrorKind::ConnectionReset,
            io::ErrorKind::BrokenPipe,
            io::ErrorKind::UnexpectedEof,
        ] {
            assert_eq!(
                kind_of(io::Error::from(k).into()),
                ErrorKind::Connection,
                "{k:?}"
            );
        }
        assert_eq!(
            kind_of(io::Error::from(io::ErrorKind::TimedOut).into()),
            ErrorKind::Timeout
        );
    }

    #[test]
    fn server_errors() {
        let server = |code: &str, detail: &str| -> RedisError {
            redis::make_extension_error(code.to_owned(), Some(detail.to_owned()))
        };
        assert_eq!(
            kind_of(server("WRONGPASS", "invalid username-password pair")),
            ErrorKind::Connection
        );
        assert_eq!(
            kind_of(server("NOAUTH", "Authentication required.")),
            ErrorKind::Connection
        );
        assert_eq!(
            kind_of(server("ERR", "value is not an integer or out of range")),
            ErrorKind::InvalidValue
        );
        assert_eq!(
            kind_of(server("ERR", "increment or decrement would overflow")),
            ErrorKind::InvalidValue
        );
        assert_eq!(
            kind_of(server(
                "WRONGTYPE",
                "Operation against a key holding the wrong kind of value"
            )),
            ErrorKind::Backend
        );
        assert_eq!(
            kind_of((redis::ErrorKind::AuthenticationFailed, "denied").into()),
            ErrorKind::Connection
        );
        assert_eq!(
            kind_of((redis::ErrorKind::InvalidClientConfig, "bad").into()),
            ErrorKind::Config
        );
        for (code, detail) in [
            ("CLUSTERDOWN", "The cluster is down"),
            ("TRYAGAIN", "Multiple keys request during rehashing of slot"),
            ("MOVED", "3999 127.0.0.1:6381"),
            ("READONLY", "You can't write against a read only replica."),
        ] {
            let err = map_error(server(code, detail), "get");
            assert_eq!(err.kind(), ErrorKind::Connection, "{code}");
            assert!(err.is_retryable(), "{code}");
        }
        assert_eq!(
            kind_of(server(
                "CROSSSLOT",
                "Keys in request don't hash to the same slot"
            )),
            ErrorKind::Backend
        );
    }

    #[test]
    fn keeps_the_cause_and_context() {
        let err = map_error(
            io::Error::from(io::ErrorKind::ConnectionRefused).into(),
            "set",
        );
        assert_eq!(err.backend(), Some("redis"));
        assert_eq!(err.operation(), Some("set"));
        assert!(err.source().is_some());
        assert!(err.is_retryable());
    }
}
