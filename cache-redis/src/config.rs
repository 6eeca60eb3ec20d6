//! Configuration of the Redis backend.

use std::fmt;
use std::time::Duration;

use cache_core::{Error, ErrorKind, Result};
use redis::IntoConnectionInfo;
use serde::{Deserialize, Serialize};

/// The default time allowed to open a connection (2 s).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The default time allowed for one answer from Redis (1 s).
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(1);

/// Where the Redis server is and how to talk to it.
///
/// Either a `url` or the parts (`host`, `port`, `db`, `username`,
/// `password`, `tls`). When `url` is set it gives the address; `username`,
/// `password` and `db`, when also set, override the URL's (so a password can
/// come from a secret store while the URL sits in a config file).
///
/// URL forms: `redis://[user[:password]@]host[:port][/db]`,
/// `rediss://…` (TLS; needs the crate feature `tls`),
/// `redis+unix:///path/to/socket` (or `unix://`).
///
/// Timeouts are whole milliseconds in serialized form
/// (`connect_timeout_ms`, `response_timeout_ms`), as in the other backends'
/// configs. `Debug` never prints the password, neither the field nor the one
/// inside `url`.
///
/// # Examples
///
/// ```
/// use cache_redis::RedisConfig;
/// use std::time::Duration;
///
/// let config = RedisConfig::from_url("redis://app:s3cret@cache.internal:6380/2")?
///     .with_response_timeout(Duration::from_millis(250))
///     .with_connections(4);
/// assert_eq!(config.response_timeout(), Duration::from_millis(250));
/// assert!(!format!("{config:?}").contains("s3cret"));
///
/// let parts = RedisConfig::default().with_host("10.0.0.7").with_port(6380).with_db(1);
/// assert_eq!(parts.port, 6380);
/// # Ok::<(), cache_core::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct RedisConfig {
    /// The server's URL; when set, `host`, `port` and `tls` are ignored.
    pub url: Option<String>,
    /// The server's host name or address (without `url`).
    pub host: String,
    /// The server's port (without `url`).
    pub port: u16,
    /// The logical database; overrides the URL's when set. Default 0.
    pub db: Option<i64>,
    /// The ACL user name; overrides the URL's when set.
    pub username: Option<String>,
    /// The password; overrides the URL's when set. Never printed by `Debug`.
    pub password: Option<String>,
    /// Connect with TLS (without `url`; with a URL use `rediss://`). Needs
    /// the crate feature `tls`.
    pub tls: bool,
    /// How long opening a connection may take, in milliseconds.
    pub connect_timeout_ms: u64,
    /// How long one answer may take, in milliseconds. Every call is bounded
    /// by it: a stopped or hung server yields `Timeout` after this long.
    pub response_timeout_ms: u64,
    /// How many multiplexed connections to open; calls are spread over them
    /// round-robin. One is enough for most services.
    pub connections: usize,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            url: None,
            host: "127.0.0.1".to_owned(),
            port: 6379,
            db: None,
            username: None,
            password: None,
            tls: false,
            connect_timeout_ms: millis(DEFAULT_CONNECT_TIMEOUT),
            response_timeout_ms: millis(DEFAULT_RESPONSE_TIMEOUT),
            connections: 1,
        }
    }
}

impl RedisConfig {
    /// A configuration for the server at `url`, other settings default.
    ///
    /// # Errors
    ///
    /// [`Config`](ErrorKind::Config) when the URL does not parse, is not a
    /// Redis URL, or asks for TLS (`rediss://`) without the feature `tls`.
    pub fn from_url(url: &str) -> Result<Self> {
        let config = RedisConfig {
            url: Some(url.to_owned()),
            ..RedisConfig::default()
        };
        config.connection_info()?;
        Ok(config)
    }

    /// Sets the URL.
    #[must_use]
    pub fn with_url(mut self, url: impl Into<String>) -> Self {
        self.url = Some(url.into());
        self
    }

    /// Sets the host (used when there is no URL).
    #[must_use]
    pub fn with_host(mut self, host: impl Into<String>) -> Self {
        self.host = host.into();
        self
    }

    /// Sets the port (used when there is no URL).
    #[must_use]
    pub fn with_port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// Sets the logical database.
    #[must_use]
    pub fn with_db(mut self, db: i64) -> Self {
        self.db = Some(db);
        self
    }

    /// Sets the ACL user name.
    #[must_use]
    pub fn with_username(mut self, username: impl Into<String>) -> Self {
        self.username = Some(username.into());
        self
    }

    /// Sets the password.
    #[must_use]
    pub fn with_password(mut self, password: impl Into<String>) -> Self {
        self.password = Some(password.into());
        self
    }

    /// Turns TLS on or off (used when there is no URL).
    #[must_use]
    pub fn with_tls(mut self, tls: bool) -> Self {
        self.tls = tls;
        self
    }

    /// Sets how long opening a connection may take.
    #[must_use]
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout_ms = millis(timeout);
        self
    }

    /// Sets how long one answer may take.
    #[must_use]
    pub fn with_response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout_ms = millis(timeout);
        self
    }

    /// Sets the number of multiplexed connections.
    #[must_use]
    pub fn with_connections(mut self, connections: usize) -> Self {
        self.connections = connections;
        self
    }

    /// How long opening a connection may take.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    /// How long one answer may take.
    pub fn response_timeout(&self) -> Duration {
        Duration::from_millis(self.response_timeout_ms)
    }

    /// Checks the settings and builds the client's connection info.
    pub(crate) fn connection_info(&self) -> Result<redis::ConnectionInfo> {
        if self.connections == 0 {
            return Err(config_error("`connections` must be at least 1"));
        }
        if self.connect_timeout_ms == 0 || self.response_timeout_ms == 0 {
            return Err(config_error("timeouts must be at least 1 ms"));
        }
        let info = match &self.url {
            Some(url) => {
                let scheme = url.split_once("://").map(|(s, _)| s).unwrap_or_default();
                match scheme {
                    "redis" | "redis+unix" | "unix" => {}
                    "rediss" => require_tls()?,
                    _ => {
                        return Err(config_error(format!(
                        "`{}` is not a Redis URL; expected redis://, rediss:// or redis+unix://",
                        redact_url(url)
                    )))
                    }
                }
                url.as_str().into_connection_info().map_err(|e| {
                    config_error(format!("invalid Redis URL `{}`", redact_url(url))).with_source(e)
                })?
            }
            None => {
                if self.host.is_empty() {
                    return Err(config_error("`host` is empty and there is no `url`"));
                }
                let addr = if self.tls {
                    require_tls()?;
                    tls_addr(&self.host, self.port)
                } else {
                    redis::ConnectionAddr::Tcp(self.host.clone(), self.port)
                };
                addr.into_connection_info()
                    .map_err(|e| config_error("invalid Redis address").with_source(e))?
            }
        };
        let mut redis = info.redis_settings().clone();
        if let Some(db) = self.db {
            redis = redis.set_db(db);
        }
        if let Some(username) = &self.username {
            redis = redis.set_username(username);
        }
        if let Some(password) = &self.password {
            redis = redis.set_password(password);
        }
        Ok(info.set_redis_settings(redis))
    }

    /// Where the server is, for messages (no credentials).
    pub(crate) fn target(&self) -> String {
        match &self.url {
            Some(url) => redact_url(url),
            None => format!(
                "{}://{}:{}",
                if self.tls { "rediss" } else { "redis" },
                self.host,
                self.port
            ),
        }
    }
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &self.url.as_deref().map(redact_url))
            .field("host", &self.host)
            .field("port", &self.port)
            .field("db", &self.db)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("tls", &self.tls)
            .field("connect_timeout_ms", &self.connect_timeout_ms)
            .field("response_timeout_ms", &self.response_timeout_ms)
            .field("connections", &self.connections)
            .finish()
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn config_error(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::Config, message).with_backend("redis")
}

#[cfg(feature = "tls")]
fn require_tls() -> Result<()> {
    Ok(())
}

#[cfg(not(feature = "tls"))]
fn require_tls() -> Result<()> {
    Err(config_error(
        "TLS (rediss://) needs cache-redis built with the feature `tls`",
    ))
}

#[cfg(feature = "tls")]
fn tls_addr(host: &str, port: u16) -> redis::ConnectionAddr {
    redis::ConnectionAddr::TcpTls {
        host: host.to_owned(),
        port,
        insecure: false,
        tls_params: None,
    }
}

#[cfg(not(feature = "tls"))]
fn tls_addr(host: &str, port: u16) -> redis::ConnectionAddr {
    // Unreachable: `require_tls` fails first without the feature.
    redis::ConnectionAddr::Tcp(host.to_owned(), port)
}

/// `url` with the password part of its user info replaced by `***`.
pub(crate) fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let Some(at) = authority.rfind('@') else {
        return url.to_owned();
    };
    let (userinfo, host) = authority.split_at(at);
    let user = match userinfo.split_once(':') {
        Some((user, _password)) => format!("{user}:***"),
        None => userinfo.to_owned(),
    };
    format!("{scheme}://{user}{host}{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords_in_urls() {
        assert_eq!(
            redact_url("redis://u:p@h:1/0"),
            "redis://u:***@h:1/0".to_owned()
        );
        assert_eq!(redact_url("redis://:p@h"), "redis://:***@h");
        assert_eq!(redact_url("redis://u@h"), "redis://u@h");
        assert_eq!(redact_url("redis://h:1/0"), "redis://h:1/0");
        assert_eq!(redact_url("redis://u:p:q@h"), "redis://u:***@h");
        assert_eq!(redact_url("not a url"), "not a url");
    }

    #[test]
    fn debug_hides_password() {
        let config = RedisConfig::from_url("redis://app:hunter2@localhost:6379/3")
            .unwrap()
            .with_password("swordfish");
        let debug = format!("{config:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(!debug.contains("swordfish"), "{debug}");
        assert!(debug.contains("app"), "{debug}");
    }

    #[test]
    fn url_parts_and_overrides() {
        let info = RedisConfig::from_url("redis://a:b@localhost:6390/4")
            .unwrap()
            .with_db(5)
            .with_password("c")
            .connection_info()
            .unwrap();
        assert_eq!(info.addr().to_string(), "localhost:6390");
        assert_eq!(info.redis_settings().db(), 5);
        assert_eq!(info.redis_settings().username(), Some("a"));
        assert_eq!(info.redis_settings().password(), Some("c"));

        let info = RedisConfig::default()
            .with_host("example.test")
            .with_port(7000)
            .with_username("u")
            .connection_info()
            .unwrap();
        assert_eq!(info.addr().to_string(), "example.test:7000");
        assert_eq!(info.redis_settings().db(), 0);
        assert_eq!(info.redis_settings().username(), Some("u"));
    }

    #[test]
    fn bad_urls_are_config_errors() {
        for url in [
            "http://localhost",
            "redis://",
            "redis://localhost/notadb",
            "x",
        ] {
            let err = RedisConfig::from_url(url).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Config, "{url}: {err}");
        }
        let err = RedisConfig::from_url("http://u:secret@h").unwrap_err();
        assert!(!err.to_string().contains("secret"), "{err}");
        #[cfg(not(feature = "tls"))]
        assert_eq!(
            RedisConfig::from_url("rediss://localhost")
                .unwrap_err()
                .kind(),
            ErrorKind::Config
        );
        assert_eq!(
            RedisConfig::default()
                .with_connections(0)
                .connection_info()
                .unwrap_err()
                .kind(),
            ErrorKind::Config
        );
    }

    #[cfg(feature = "tls")]
    #[test]
    fn tls_by_url_or_flag() {
        let info = RedisConfig::from_url("rediss://cache.example:6380")
            .unwrap()
            .connection_info()
            .unwrap();
        assert!(matches!(info.addr(), redis::ConnectionAddr::TcpTls { .. }));
        let info = RedisConfig::default()
            .with_host("cache.example")
            .with_tls(true)
            .connection_info()
            .unwrap();
        assert!(matches!(info.addr(), redis::ConnectionAddr::TcpTls { .. }));
    }

    #[test]
    fn serde_round_trip_and_defaults() {
        let config: RedisConfig =
            serde_json::from_str(r#"{"url": "redis://localhost:6380", "connections": 2}"#).unwrap();
        assert_eq!(config.connections, 2);
        assert_eq!(config.connect_timeout(), DEFAULT_CONNECT_TIMEOUT);
        assert_eq!(config.response_timeout(), DEFAULT_RESPONSE_TIMEOUT);
        let json = serde_json::to_string(&config).unwrap();
        let back: RedisConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(back, config);
        assert!(serde_json::from_str::<RedisConfig>(r#"{"hots": "x"}"#).is_err());
    }
}
