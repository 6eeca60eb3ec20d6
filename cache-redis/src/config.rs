//! Configuration of the Redis backend.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use cache_core::{redact_url, Error, ErrorKind, Result};
use redis::IntoConnectionInfo;
use serde::{Deserialize, Serialize};

/// The default time allowed to open a connection (2 s).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The default time allowed for one answer from Redis (1 s).
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(1);

/// The default largest value (512 MiB: Redis's `proto-max-bulk-len`
/// default).
pub const DEFAULT_MAX_VALUE_SIZE: usize = 512 * 1024 * 1024;

/// Where the Redis deployment is and how to talk to it.
///
/// Either a `url` or the parts: `host`, `port`, `db`, `username`,
/// `password`, `tls` for one server; `cluster_nodes` for a Redis Cluster;
/// `sentinels` and `sentinel_master` for a primary found through Sentinel.
/// When `url` is set it gives the address; `username`, `password` and `db`,
/// when also set, override the URL's (so a password can come from a secret
/// store while the URL sits in a config file).
///
/// URL forms ([`mode`](Self::mode) tells which one a config describes):
/// - `redis://[user[:password]@]host[:port][/db]`, `rediss://…` (TLS; needs
///   the crate feature `tls`), `redis+unix:///path/to/socket` (or `unix://`):
///   one server.
/// - `redis+cluster://[user[:password]@]host1:port1,host2:port2[,…]`: a Redis
///   Cluster, given by some of its nodes (the rest are discovered); needs the
///   crate feature `cluster`. Port 6379 when left out; no database number
///   (a cluster has only database 0).
/// - `redis+sentinel://[user[:password]@]sentinel1:port,sentinel2:port[,…]/master-name[/db]`:
///   the primary that the Sentinels name `master-name`, followed across
///   failovers; needs the crate feature `sentinel`. Port 26379 when left
///   out. The credentials are the data nodes'; the Sentinels' own password,
///   if any, is `sentinel_password`.
///
/// `rediss+cluster://` and `rediss+sentinel://` are the same over TLS (the
/// Sentinels and the data nodes both speak TLS).
///
/// Any of these URLs may carry options in its query, each the field of the
/// same meaning (the field wins when both are set):
///
/// | query key | field | default |
/// |---|---|---|
/// | `pool_size` | [`connections`](Self::connections) | 1 |
/// | `connect_timeout_ms` | [`connect_timeout_ms`](Self::connect_timeout_ms) | 2000 |
/// | `response_timeout_ms` | [`response_timeout_ms`](Self::response_timeout_ms) | 1000 |
/// | `read_from_replicas` | [`read_from_replicas`](Self::read_from_replicas) | `false` |
/// | `tls_ca_file` | [`tls_ca_file`](Self::tls_ca_file) | system roots |
/// | `tls_cert_file` | [`tls_cert_file`](Self::tls_cert_file) | none |
/// | `tls_key_file` | [`tls_key_file`](Self::tls_key_file) | none |
/// | `max_value_size` | [`max_value_size`](Self::max_value_size) | 512 MiB |
///
/// The Redis client's own `protocol` (and `db`, `user`, `pass` of a
/// `redis+unix://` URL) pass through; any other key is a
/// [`Config`](ErrorKind::Config) error that names it (a typo such as
/// `poolsize` never goes unnoticed).
///
/// Timeouts are whole milliseconds in serialized form
/// (`connect_timeout_ms`, `response_timeout_ms`), as in the other backends'
/// configs. `Debug` never prints the password, neither the field nor the one
/// inside `url`.
///
/// # Examples
///
/// ```
/// use cache::redis::{RedisConfig, RedisMode};
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
///
/// // A cluster or a Sentinel-managed primary, by parts instead of a URL.
/// let cluster = RedisConfig::cluster(["10.0.0.1:7000", "10.0.0.2:7000"]);
/// assert_eq!(cluster.mode(), RedisMode::Cluster);
/// let sentinel = RedisConfig::sentinel(["10.0.0.1:26379", "10.0.0.2:26379"], "cache");
/// assert_eq!(sentinel.mode(), RedisMode::Sentinel);
/// # Ok::<(), cache::Error>(())
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
    /// Connect with TLS (without `url`; with a URL use `rediss://`,
    /// `rediss+cluster://` or `rediss+sentinel://`). Needs the crate feature
    /// `tls`.
    pub tls: bool,
    /// How long opening a connection may take, in milliseconds; overrides
    /// the URL's `connect_timeout_ms`; default 2000
    /// ([`DEFAULT_CONNECT_TIMEOUT`]).
    pub connect_timeout_ms: Option<u64>,
    /// How long one answer may take, in milliseconds. Every call is bounded
    /// by it: a stopped or hung server yields `Timeout` after this long
    /// (never sooner; at most about 0.4 of it plus 20 ms later: the calls
    /// share a coarse ticker rather than arm a timer each: a thread,
    /// `cache-redis-deadlines`, that parks after a second with no call
    /// waiting and costs no wake-ups while the backend is idle).
    /// Overrides the URL's `response_timeout_ms`; default 1000
    /// ([`DEFAULT_RESPONSE_TIMEOUT`]).
    pub response_timeout_ms: Option<u64>,
    /// How many multiplexed connections to open (the pool size); calls are
    /// spread over them round-robin. One is enough for most services. (On a
    /// cluster: how many cluster connections, each with one connection per
    /// node.) Overrides the URL's `pool_size`; default 1.
    pub connections: Option<usize>,
    /// On a cluster, send single-key reads to a random replica of the key's
    /// shard (writes still go to the primary). Replicas lag their primary:
    /// a read may miss a value just written. Overrides the URL's
    /// `read_from_replicas`; default `false`. Needs the feature `cluster`.
    pub read_from_replicas: Option<bool>,
    /// A PEM file of the certificate authorities to trust for the server's
    /// certificate, instead of the system's roots. TLS only; overrides the
    /// URL's `tls_ca_file`.
    pub tls_ca_file: Option<PathBuf>,
    /// A PEM file of this client's certificate (chain), for servers that
    /// verify clients (`tls-auth-clients yes`); needs `tls_key_file`. TLS
    /// only; overrides the URL's `tls_cert_file`.
    pub tls_cert_file: Option<PathBuf>,
    /// A PEM file of the private key of `tls_cert_file`. TLS only;
    /// overrides the URL's `tls_key_file`.
    pub tls_key_file: Option<PathBuf>,
    /// Some nodes of a Redis Cluster, as `host:port` (without `url`); when
    /// not empty the config describes a cluster. Needs the feature `cluster`.
    pub cluster_nodes: Vec<String>,
    /// The Sentinels, as `host:port` (without `url`); when not empty the
    /// config describes a primary found through them. Needs the feature
    /// `sentinel`.
    pub sentinels: Vec<String>,
    /// The name the Sentinels know the primary by (without `url`; with a
    /// `redis+sentinel://` URL it is the URL's path).
    pub sentinel_master: Option<String>,
    /// The password of the Sentinels themselves (`requirepass` in their
    /// configuration), when they have one. Never printed by `Debug`.
    pub sentinel_password: Option<String>,
    /// The largest value the backend sends, in bytes; larger ones fail with
    /// `InvalidValue` before anything is sent, and the backend's
    /// capabilities declare it. Overrides the URL's `max_value_size` when
    /// set; default [`DEFAULT_MAX_VALUE_SIZE`] (Redis's own limit, unless
    /// the server's `proto-max-bulk-len` says otherwise).
    pub max_value_size: Option<usize>,
}

/// `(host, port)` pairs.
pub(crate) type HostList = Vec<(String, u16)>;

/// The kind of Redis deployment a [`RedisConfig`] describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RedisMode {
    /// One server (`redis://`, `rediss://`, `redis+unix://`).
    Standalone,
    /// A Redis Cluster (`redis+cluster://`, or `cluster_nodes`).
    Cluster,
    /// A primary found, and followed across failovers, through Sentinel
    /// (`redis+sentinel://`, or `sentinels`).
    Sentinel,
}

/// A Sentinel deployment, checked and ready for the client.
#[cfg(feature = "sentinel")]
#[derive(Clone)]
pub(crate) struct SentinelTarget {
    /// The Sentinels' addresses.
    pub(crate) sentinels: Vec<(String, u16)>,
    /// The primary's name.
    pub(crate) master: String,
    /// Database and credentials of the data nodes.
    pub(crate) redis: redis::RedisConnectionInfo,
    /// The Sentinels' password.
    pub(crate) sentinel_password: Option<String>,
    /// TLS to the Sentinels and the data nodes.
    pub(crate) tls: TlsSettings,
}

/// Whether a deployment's nodes speak TLS, and the certificates to use.
#[derive(Clone, Default)]
pub(crate) struct TlsSettings {
    /// TLS on.
    pub(crate) on: bool,
    /// The configured CA and client certificate, when files are set.
    #[cfg(feature = "tls")]
    pub(crate) certs: Option<redis::TlsCertificates>,
}

impl TlsSettings {
    /// The client's connection info for the node `host:port`, with `redis`
    /// (database, credentials).
    #[cfg_attr(not(any(feature = "sentinel", feature = "cluster")), allow(dead_code))]
    pub(crate) fn node_info(
        &self,
        host: &str,
        port: u16,
        redis: redis::RedisConnectionInfo,
    ) -> redis::RedisResult<redis::ConnectionInfo> {
        let addr = if self.on {
            tls_addr(host, port)
        } else {
            redis::ConnectionAddr::Tcp(host.to_owned(), port)
        };
        let info = addr.into_connection_info()?.set_redis_settings(redis);
        #[cfg(feature = "tls")]
        if let (true, Some(certs)) = (self.on, &self.certs) {
            return Ok(redis::Client::build_with_tls(info, certs.clone())?
                .get_connection_info()
                .clone());
        }
        Ok(info)
    }
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
            connect_timeout_ms: None,
            response_timeout_ms: None,
            connections: None,
            read_from_replicas: None,
            tls_ca_file: None,
            tls_cert_file: None,
            tls_key_file: None,
            cluster_nodes: Vec::new(),
            sentinels: Vec::new(),
            sentinel_master: None,
            sentinel_password: None,
            max_value_size: None,
        }
    }
}

impl RedisConfig {
    /// A configuration for the server at `url`, other settings default.
    ///
    /// # Errors
    ///
    /// [`Config`](ErrorKind::Config) when the URL does not parse, is not a
    /// Redis URL, has an unknown query key, or needs a crate feature that is
    /// off (`tls` for `rediss://`, `cluster` for `redis+cluster://`,
    /// `sentinel` for `redis+sentinel://`).
    pub fn from_url(url: &str) -> Result<Self> {
        let config = RedisConfig {
            url: Some(url.to_owned()),
            ..RedisConfig::default()
        };
        config.validate()?;
        Ok(config)
    }

    /// A configuration for the Redis Cluster that has these nodes
    /// (`host:port`; a few are enough, the others are discovered), other
    /// settings default.
    pub fn cluster<I, S>(nodes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        RedisConfig {
            cluster_nodes: nodes.into_iter().map(Into::into).collect(),
            ..RedisConfig::default()
        }
    }

    /// A configuration for the primary the `sentinels` (`host:port`) know as
    /// `master`, other settings default.
    pub fn sentinel<I, S>(sentinels: I, master: impl Into<String>) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        RedisConfig {
            sentinels: sentinels.into_iter().map(Into::into).collect(),
            sentinel_master: Some(master.into()),
            ..RedisConfig::default()
        }
    }

    /// The kind of deployment this configuration describes: by the URL's
    /// scheme, else by which fields are set.
    pub fn mode(&self) -> RedisMode {
        match &self.url {
            Some(url) => match url.split_once("://").map(|(s, _)| s) {
                Some("redis+cluster" | "rediss+cluster") => RedisMode::Cluster,
                Some("redis+sentinel" | "rediss+sentinel") => RedisMode::Sentinel,
                _ => RedisMode::Standalone,
            },
            None if !self.cluster_nodes.is_empty() => RedisMode::Cluster,
            None if !self.sentinels.is_empty() => RedisMode::Sentinel,
            None => RedisMode::Standalone,
        }
    }

    /// Sets the Sentinels' own password.
    #[must_use]
    pub fn with_sentinel_password(mut self, password: impl Into<String>) -> Self {
        self.sentinel_password = Some(password.into());
        self
    }

    /// Whether connections use TLS: a `rediss…://` URL, or `tls` without
    /// a URL.
    pub fn uses_tls(&self) -> bool {
        match &self.url {
            Some(url) => url
                .split_once("://")
                .is_some_and(|(scheme, _)| scheme.starts_with("rediss")),
            None => self.tls,
        }
    }

    /// The URL's query options (none without a URL, or when it does not
    /// parse: `validate` reports that).
    fn url_options(&self) -> UrlOptions {
        self.url
            .as_deref()
            .and_then(|url| split_url_options(url).ok())
            .map(|(_, options)| options)
            .unwrap_or_default()
    }

    /// The CA file: the field, else the URL's `tls_ca_file`.
    pub fn tls_ca_file(&self) -> Option<PathBuf> {
        self.tls_ca_file.clone().or(self.url_options().tls_ca_file)
    }

    /// The client certificate file: the field, else the URL's.
    pub fn tls_cert_file(&self) -> Option<PathBuf> {
        self.tls_cert_file
            .clone()
            .or(self.url_options().tls_cert_file)
    }

    /// The client key file: the field, else the URL's.
    pub fn tls_key_file(&self) -> Option<PathBuf> {
        self.tls_key_file
            .clone()
            .or(self.url_options().tls_key_file)
    }

    /// Whether single-key reads on a cluster go to replicas: the field,
    /// else the URL's `read_from_replicas`, else `false`.
    pub fn reads_from_replicas(&self) -> bool {
        self.read_from_replicas
            .or(self.url_options().read_from_replicas)
            .unwrap_or(false)
    }

    /// How many connections to open: the field, else the URL's
    /// `pool_size`, else 1.
    pub fn pool_size(&self) -> usize {
        self.connections
            .or(self.url_options().pool_size)
            .unwrap_or(1)
    }

    /// The certificates to use, read from the configured files; `None`
    /// when no file is configured (the system's roots, no client
    /// certificate).
    #[cfg(feature = "tls")]
    pub(crate) fn tls_certificates(&self) -> Result<Option<redis::TlsCertificates>> {
        let (ca, cert, key) = (
            self.tls_ca_file(),
            self.tls_cert_file(),
            self.tls_key_file(),
        );
        if ca.is_none() && cert.is_none() && key.is_none() {
            return Ok(None);
        }
        let client_tls = match (cert, key) {
            (Some(cert), Some(key)) => Some(redis::ClientTlsConfig {
                client_cert: read_pem(&cert, "tls_cert_file")?,
                client_key: read_pem(&key, "tls_key_file")?,
            }),
            _ => None,
        };
        let root_cert = ca.map(|ca| read_pem(&ca, "tls_ca_file")).transpose()?;
        Ok(Some(redis::TlsCertificates {
            client_tls,
            root_cert,
        }))
    }

    /// Checks the configuration for its mode.
    pub(crate) fn validate(&self) -> Result<()> {
        self.check_common()?;
        match self.mode() {
            RedisMode::Standalone => self.connection_info().map(drop),
            RedisMode::Cluster => {
                require_feature(cfg!(feature = "cluster"), "cluster", "redis+cluster://")?;
                self.cluster_parts().map(drop)
            }
            RedisMode::Sentinel => {
                require_feature(cfg!(feature = "sentinel"), "sentinel", "redis+sentinel://")?;
                self.sentinel_parts().map(drop)
            }
        }
    }

    /// TLS settings that make sense together: files only with TLS, a
    /// certificate with its key, the feature on.
    fn check_tls(&self) -> Result<()> {
        let (ca, cert, key) = (
            self.tls_ca_file(),
            self.tls_cert_file(),
            self.tls_key_file(),
        );
        if !self.uses_tls() {
            if let Some(name) = [
                ("tls_ca_file", &ca),
                ("tls_cert_file", &cert),
                ("tls_key_file", &key),
            ]
            .iter()
            .find_map(|(name, file)| file.is_some().then_some(*name))
            {
                return Err(config_error(format!(
                    "`{name}` is set but the connection is not TLS; use a rediss:// \
                     (rediss+cluster://, rediss+sentinel://) URL or `tls: true`"
                )));
            }
            return Ok(());
        }
        require_tls()?;
        match (&cert, &key) {
            (Some(_), None) => Err(config_error(
                "`tls_cert_file` is set without `tls_key_file`; give both",
            )),
            (None, Some(_)) => Err(config_error(
                "`tls_key_file` is set without `tls_cert_file`; give both",
            )),
            _ => Ok(()),
        }
    }

    fn check_common(&self) -> Result<()> {
        let from_url = match &self.url {
            Some(url) => split_url_options(url)?.1.max_value_size,
            None => None,
        };
        if self.max_value_size == Some(0) || from_url == Some(0) {
            return Err(config_error("`max_value_size` must be at least 1 byte"));
        }
        if self.pool_size() == 0 {
            return Err(config_error(
                "`connections` (`pool_size`) must be at least 1",
            ));
        }
        if self.connect_timeout().is_zero() || self.response_timeout().is_zero() {
            return Err(config_error("timeouts must be at least 1 ms"));
        }
        self.check_tls()?;
        if self.url.is_none() && !self.cluster_nodes.is_empty() && !self.sentinels.is_empty() {
            return Err(config_error(
                "`cluster_nodes` and `sentinels` are both set; a deployment is one or the other",
            ));
        }
        Ok(())
    }

    /// `db`, `username` and `password` over `base` (the URL's).
    fn apply_overrides(&self, mut redis: redis::RedisConnectionInfo) -> redis::RedisConnectionInfo {
        if let Some(db) = self.db {
            redis = redis.set_db(db);
        }
        if let Some(username) = &self.username {
            redis = redis.set_username(username);
        }
        if let Some(password) = &self.password {
            redis = redis.set_password(password);
        }
        redis
    }

    /// The cluster's seed nodes and the data nodes' settings.
    pub(crate) fn cluster_parts(&self) -> Result<(HostList, redis::RedisConnectionInfo)> {
        let (nodes, path, base) = match &self.url {
            Some(url) => {
                let parts = parse_multi_host_url(url, &["redis+cluster", "rediss+cluster"], 6379)?;
                (parts.hosts, parts.path, parts.redis)
            }
            None => (
                parse_host_list(&self.cluster_nodes, 6379, "cluster_nodes")?,
                Vec::new(),
                redis::RedisConnectionInfo::default(),
            ),
        };
        match path.as_slice() {
            [] => {}
            [db] if db == "0" => {}
            _ => {
                return Err(config_error(format!(
                    "a cluster URL has no path (a Redis Cluster has only database 0), got `/{}`",
                    path.join("/")
                )))
            }
        }
        let redis = self.apply_overrides(base);
        if redis.db() != 0 {
            return Err(config_error(
                "a Redis Cluster has only database 0; leave `db` unset",
            ));
        }
        Ok((nodes, redis))
    }

    /// The Sentinels, the primary's name and the data nodes' settings.
    pub(crate) fn sentinel_parts(&self) -> Result<(HostList, String, redis::RedisConnectionInfo)> {
        let (sentinels, master, base) = match &self.url {
            Some(url) => {
                let parts =
                    parse_multi_host_url(url, &["redis+sentinel", "rediss+sentinel"], 26379)?;
                let mut path = parts.path.into_iter();
                let master = path.next().ok_or_else(|| {
                    config_error(format!(
                        "`{}` names no primary; use redis+sentinel://host:port/master-name",
                        shown(url)
                    ))
                })?;
                let mut redis = parts.redis;
                if let Some(db) = path.next() {
                    let db = db.parse::<i64>().map_err(|_| {
                        config_error(format!(
                            "`{}`: the database after the primary's name must be a number",
                            shown(url)
                        ))
                    })?;
                    redis = redis.set_db(db);
                }
                if path.next().is_some() {
                    return Err(config_error(format!(
                        "`{}`: expected redis+sentinel://host:port/master-name[/db]",
                        shown(url)
                    )));
                }
                (parts.hosts, master, redis)
            }
            None => (
                parse_host_list(&self.sentinels, 26379, "sentinels")?,
                self.sentinel_master.clone().unwrap_or_default(),
                redis::RedisConnectionInfo::default(),
            ),
        };
        if master.is_empty() {
            return Err(config_error(
                "the Sentinel primary's name (`sentinel_master`) is empty",
            ));
        }
        Ok((sentinels, master, self.apply_overrides(base)))
    }

    /// The checked Sentinel deployment.
    #[cfg(feature = "sentinel")]
    pub(crate) fn sentinel_target(&self) -> Result<SentinelTarget> {
        self.check_common()?;
        let (sentinels, master, redis) = self.sentinel_parts()?;
        Ok(SentinelTarget {
            sentinels,
            master,
            redis,
            sentinel_password: self.sentinel_password.clone(),
            tls: self.tls_settings()?,
        })
    }

    /// Whether the nodes speak TLS, with the certificates read from the
    /// configured files.
    #[cfg_attr(not(any(feature = "sentinel", feature = "cluster")), allow(dead_code))]
    pub(crate) fn tls_settings(&self) -> Result<TlsSettings> {
        Ok(TlsSettings {
            on: self.uses_tls(),
            #[cfg(feature = "tls")]
            certs: if self.uses_tls() {
                self.tls_certificates()?
            } else {
                None
            },
        })
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
        self.connect_timeout_ms = Some(millis(timeout));
        self
    }

    /// Sets how long one answer may take.
    #[must_use]
    pub fn with_response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout_ms = Some(millis(timeout));
        self
    }

    /// Sets the number of multiplexed connections (the pool size).
    #[must_use]
    pub fn with_connections(mut self, connections: usize) -> Self {
        self.connections = Some(connections);
        self
    }

    /// Sends single-key reads on a cluster to replicas (or not).
    #[must_use]
    pub fn with_read_from_replicas(mut self, on: bool) -> Self {
        self.read_from_replicas = Some(on);
        self
    }

    /// Trusts the certificate authorities in this PEM file (TLS).
    #[must_use]
    pub fn with_tls_ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.tls_ca_file = Some(path.into());
        self
    }

    /// Presents this client certificate and key (PEM files) to servers
    /// that verify clients (TLS).
    #[must_use]
    pub fn with_tls_client_cert(
        mut self,
        cert_file: impl Into<PathBuf>,
        key_file: impl Into<PathBuf>,
    ) -> Self {
        self.tls_cert_file = Some(cert_file.into());
        self.tls_key_file = Some(key_file.into());
        self
    }

    /// Sets the largest value the backend sends.
    #[must_use]
    pub fn with_max_value_size(mut self, bytes: usize) -> Self {
        self.max_value_size = Some(bytes);
        self
    }

    /// The largest value the backend sends: the field, else the URL's
    /// `max_value_size`, else [`DEFAULT_MAX_VALUE_SIZE`].
    pub fn max_value_size(&self) -> usize {
        let from_url = || {
            let url = self.url.as_deref()?;
            split_url_options(url).ok()?.1.max_value_size
        };
        self.max_value_size
            .or_else(from_url)
            .unwrap_or(DEFAULT_MAX_VALUE_SIZE)
    }

    /// The capabilities of the backend this configuration connects to,
    /// known without connecting (e.g. to stand in for it while it is
    /// unreachable).
    pub fn capabilities(&self) -> cache_core::Capabilities {
        crate::backend::capabilities(self.max_value_size())
    }

    /// How long opening a connection may take: the field, else the URL's
    /// `connect_timeout_ms`, else [`DEFAULT_CONNECT_TIMEOUT`].
    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout_ms
            .or(self.url_options().connect_timeout_ms)
            .map_or(DEFAULT_CONNECT_TIMEOUT, Duration::from_millis)
    }

    /// How long one answer may take: the field, else the URL's
    /// `response_timeout_ms`, else [`DEFAULT_RESPONSE_TIMEOUT`].
    pub fn response_timeout(&self) -> Duration {
        self.response_timeout_ms
            .or(self.url_options().response_timeout_ms)
            .map_or(DEFAULT_RESPONSE_TIMEOUT, Duration::from_millis)
    }

    /// Checks the settings of one server and builds the client's
    /// connection info.
    pub(crate) fn connection_info(&self) -> Result<redis::ConnectionInfo> {
        self.check_common()?;
        let info = match &self.url {
            Some(url) => {
                let scheme = url.split_once("://").map(|(s, _)| s).unwrap_or_default();
                match scheme {
                    "redis" | "redis+unix" | "unix" => {}
                    "rediss" => require_tls()?,
                    "redis+cluster" | "redis+sentinel" | "rediss+cluster" | "rediss+sentinel" => {
                        return Err(config_error(format!(
                            "`{}` is a {scheme}:// URL, not one server's",
                            shown(url)
                        )))
                    }
                    _ => {
                        return Err(config_error(format!(
                        "`{}` is not a Redis URL; expected redis://, rediss://, redis+unix://, \
                         redis+cluster://, rediss+cluster://, redis+sentinel:// or rediss+sentinel://",
                        shown(url)
                    )))
                    }
                }
                let (url, _) = split_url_options(url)?;
                url.as_str().into_connection_info().map_err(|e| {
                    config_error(format!("invalid Redis URL `{}`", shown(&url))).with_source(e)
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
        let redis = self.apply_overrides(info.redis_settings().clone());
        let info = info.set_redis_settings(redis);
        self.with_tls_params(info)
    }

    /// `info` with the configured certificates when it is a TLS address
    /// and certificate files are set.
    #[cfg(feature = "tls")]
    pub(crate) fn with_tls_params(
        &self,
        info: redis::ConnectionInfo,
    ) -> Result<redis::ConnectionInfo> {
        match self.tls_certificates()? {
            Some(certs) if matches!(info.addr(), redis::ConnectionAddr::TcpTls { .. }) => {
                let client = redis::Client::build_with_tls(info, certs).map_err(|e| {
                    config_error(
                        "invalid TLS certificate or key (tls_ca_file, tls_cert_file, tls_key_file)",
                    )
                    .with_source(e)
                })?;
                Ok(client.get_connection_info().clone())
            }
            _ => Ok(info),
        }
    }

    #[cfg(not(feature = "tls"))]
    pub(crate) fn with_tls_params(
        &self,
        info: redis::ConnectionInfo,
    ) -> Result<redis::ConnectionInfo> {
        Ok(info)
    }

    /// The client's address of the node `host:port`: TLS or not as this
    /// configuration says (certificates are set on the client).
    #[cfg_attr(not(any(feature = "sentinel", feature = "cluster")), allow(dead_code))]
    pub(crate) fn node_addr(&self, host: &str, port: u16) -> redis::ConnectionAddr {
        if self.uses_tls() {
            tls_addr(host, port)
        } else {
            redis::ConnectionAddr::Tcp(host.to_owned(), port)
        }
    }

    /// Where the server is, for messages (no credentials).
    pub(crate) fn target(&self) -> String {
        match &self.url {
            Some(url) => redact_url(url),
            None if self.mode() == RedisMode::Cluster => format!(
                "{}+cluster://{}",
                if self.tls { "rediss" } else { "redis" },
                self.cluster_nodes.join(",")
            ),
            None if self.mode() == RedisMode::Sentinel => format!(
                "{}+sentinel://{}/{}",
                if self.tls { "rediss" } else { "redis" },
                self.sentinels.join(","),
                self.sentinel_master.as_deref().unwrap_or_default()
            ),
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
            .field("read_from_replicas", &self.read_from_replicas)
            .field("tls_ca_file", &self.tls_ca_file)
            .field("tls_cert_file", &self.tls_cert_file)
            .field("tls_key_file", &self.tls_key_file)
            .field("cluster_nodes", &self.cluster_nodes)
            .field("sentinels", &self.sentinels)
            .field("sentinel_master", &self.sentinel_master)
            .field(
                "sentinel_password",
                &self.sentinel_password.as_ref().map(|_| "<redacted>"),
            )
            .field("max_value_size", &self.max_value_size)
            .finish()
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn config_error(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::Config, message).with_backend("redis")
}

fn require_feature(enabled: bool, feature: &str, scheme: &str) -> Result<()> {
    if enabled {
        Ok(())
    } else {
        Err(config_error(format!(
            "{scheme} needs the feature `cache/{feature}` (`cache-redis/{feature}` when \
             using cache-redis directly)"
        )))
    }
}

/// The options of this crate that a URL's query may carry (see the table
/// in [`RedisConfig`]'s docs).
#[derive(Debug, Default, PartialEq, Eq)]
struct UrlOptions {
    /// `max_value_size=<bytes>`.
    max_value_size: Option<usize>,
    /// `pool_size=<connections>`.
    pool_size: Option<usize>,
    /// `connect_timeout_ms=<ms>`.
    connect_timeout_ms: Option<u64>,
    /// `response_timeout_ms=<ms>`.
    response_timeout_ms: Option<u64>,
    /// `read_from_replicas=true|false`.
    read_from_replicas: Option<bool>,
    /// `tls_ca_file=<path>`.
    tls_ca_file: Option<PathBuf>,
    /// `tls_cert_file=<path>`.
    tls_cert_file: Option<PathBuf>,
    /// `tls_key_file=<path>`.
    tls_key_file: Option<PathBuf>,
}

/// The query keys of this crate, in the order of the docs' table.
pub(crate) const URL_OPTION_KEYS: [&str; 8] = [
    "pool_size",
    "connect_timeout_ms",
    "response_timeout_ms",
    "read_from_replicas",
    "tls_ca_file",
    "tls_cert_file",
    "tls_key_file",
    "max_value_size",
];

/// The query keys the Redis client itself reads, left in the URL.
const CLIENT_KEYS: [&str; 4] = ["protocol", "db", "user", "pass"];

/// Parses the value of the query key `name`.
fn url_value<T: std::str::FromStr>(
    url: &str,
    name: &str,
    value: &str,
    expected: &str,
) -> Result<T> {
    percent_decode(value)
        .and_then(|v| v.parse::<T>().ok())
        .ok_or_else(|| {
            config_error(format!(
                "`{name}={value}` in `{}`: expected {expected}",
                shown(url)
            ))
        })
}

/// Reads a PEM file named by the setting `what`.
#[cfg(feature = "tls")]
fn read_pem(path: &std::path::Path, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| {
        config_error(format!("cannot read `{what}` {}: {e}", path.display())).with_source(e)
    })
}

/// `url` for an error message: redacted ([`redact_url`]) and without its
/// query and fragment, which may hold a misspelt password key
/// (`pasword=`) that `redact_url` cannot know; only `scheme://…` when the
/// part cut off holds an `@` (the `?` or `#` may then be in the password).
fn shown(url: &str) -> String {
    let end = url.find(['?', '#']).unwrap_or(url.len());
    let (base, cut) = url.split_at(end);
    if cut.contains('@') {
        return match url.split_once("://") {
            Some((scheme, _)) => format!("{scheme}://…"),
            None => "…".to_owned(),
        };
    }
    redact_url(base)
}

/// `url` without this crate's query parameters (see [`UrlOptions`]), which
/// the Redis client does not know, and their values; the client's own
/// parameters stay; any other is an error naming it.
fn split_url_options(url: &str) -> Result<(String, UrlOptions)> {
    let mut options = UrlOptions::default();
    let (before_fragment, fragment) = match url.find('#') {
        Some(i) => url.split_at(i),
        None => (url, ""),
    };
    let Some((base, query)) = before_fragment.split_once('?') else {
        return Ok((url.to_owned(), options));
    };
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let path = |value: &str| -> Result<PathBuf> {
            let path = percent_decode(value)
                .filter(|p| !p.is_empty())
                .ok_or_else(|| {
                    config_error(format!(
                        "`{name}={value}` in `{}`: expected a file path",
                        shown(url)
                    ))
                })?;
            Ok(PathBuf::from(path))
        };
        match name {
            "max_value_size" => {
                options.max_value_size = Some(url_value(url, name, value, "a number of bytes")?);
            }
            "pool_size" => {
                options.pool_size = Some(url_value(url, name, value, "a number of connections")?);
            }
            "connect_timeout_ms" => {
                options.connect_timeout_ms =
                    Some(url_value(url, name, value, "a number of milliseconds")?);
            }
            "response_timeout_ms" => {
                options.response_timeout_ms =
                    Some(url_value(url, name, value, "a number of milliseconds")?);
            }
            "read_from_replicas" => {
                options.read_from_replicas = Some(url_value(url, name, value, "true or false")?);
            }
            "tls_ca_file" => options.tls_ca_file = Some(path(value)?),
            "tls_cert_file" => options.tls_cert_file = Some(path(value)?),
            "tls_key_file" => options.tls_key_file = Some(path(value)?),
            _ if CLIENT_KEYS.contains(&name) => kept.push(pair),
            _ => {
                // Named only if it looks like a key: a parameter with no
                // `=` may be a pasted password.
                let named = if pair.contains('=')
                    && name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
                {
                    format!("unknown key `{name}`")
                } else {
                    "a parameter that is no `key=value` of a known key".to_owned()
                };
                return Err(config_error(format!(
                    "{named} in the query of `{}`; known keys: {}, and the client's {}",
                    shown(url),
                    URL_OPTION_KEYS.join(", "),
                    CLIENT_KEYS.join(", ")
                )));
            }
        }
    }
    let mut out = base.to_owned();
    if !kept.is_empty() {
        out.push('?');
        out.push_str(&kept.join("&"));
    }
    out.push_str(fragment);
    Ok((out, options))
}

/// A `scheme://[user[:password]@]host[:port],host[:port]…[/path…]` URL, split.
struct MultiHostUrl {
    hosts: Vec<(String, u16)>,
    /// The path's segments, decoded, without empty ones.
    path: Vec<String>,
    /// The credentials, in client form.
    redis: redis::RedisConnectionInfo,
}

fn parse_multi_host_url(url: &str, schemes: &[&str], default_port: u16) -> Result<MultiHostUrl> {
    let (url, _) = split_url_options(url)?;
    let url = url.as_str();
    let scheme = schemes[0];
    let bad = |why: &str| config_error(format!("invalid {scheme} URL `{}`: {why}", shown(url)));
    let rest = schemes
        .iter()
        .find_map(|scheme| url.strip_prefix(scheme)?.strip_prefix("://"))
        .ok_or_else(|| bad("wrong scheme"))?;
    if rest.contains(['?', '#']) {
        return Err(bad("query parameters and fragments are not supported"));
    }
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let (userinfo, hosts) = match authority.rsplit_once('@') {
        Some((userinfo, hosts)) => (Some(userinfo), hosts),
        None => (None, authority),
    };
    let mut redis = redis::RedisConnectionInfo::default();
    if let Some(userinfo) = userinfo {
        let (user, password) = match userinfo.split_once(':') {
            Some((user, password)) => (user, Some(password)),
            None => (userinfo, None),
        };
        let user = percent_decode(user).ok_or_else(|| bad("bad percent-encoding"))?;
        if !user.is_empty() {
            redis = redis.set_username(user);
        }
        if let Some(password) = password {
            let password = percent_decode(password).ok_or_else(|| bad("bad percent-encoding"))?;
            redis = redis.set_password(password);
        }
    }
    let hosts: Vec<String> = hosts.split(',').map(str::to_owned).collect();
    let hosts = parse_host_list(&hosts, default_port, "hosts").map_err(|e| bad(e.message()))?;
    let path = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| percent_decode(s).ok_or_else(|| bad("bad percent-encoding")))
        .collect::<Result<Vec<_>>>()?;
    Ok(MultiHostUrl { hosts, path, redis })
}

/// `host[:port]` items (IPv6 in brackets), `default_port` when left out.
fn parse_host_list(items: &[String], default_port: u16, what: &str) -> Result<Vec<(String, u16)>> {
    let mut hosts = Vec::with_capacity(items.len());
    for item in items {
        let item = item.trim();
        let (host, port) = if let Some(rest) = item.strip_prefix('[') {
            let (host, after) = rest
                .split_once(']')
                .ok_or_else(|| config_error(format!("`{item}` in {what}: unclosed `[`")))?;
            match after.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None if after.is_empty() => (host, None),
                None => return Err(config_error(format!("`{item}` in {what} is not host:port"))),
            }
        } else {
            match item.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (item, None),
            }
        };
        if host.is_empty() || host.contains(['/', '@', ' ']) {
            return Err(config_error(format!("`{item}` in {what} is not host:port")));
        }
        let port = match port {
            Some(port) => port
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| config_error(format!("`{item}` in {what}: bad port")))?,
            None => default_port,
        };
        hosts.push((host.to_owned(), port));
    }
    if hosts.is_empty() {
        return Err(config_error(format!("{what}: no host given")));
    }
    Ok(hosts)
}

/// Decodes `%XX` escapes; `None` for a bad escape or non-UTF-8 result.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(feature = "tls")]
fn require_tls() -> Result<()> {
    // rustls needs a process-wide crypto provider; install ring's unless
    // the application installed one (a lost race is fine: one is set).
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
    Ok(())
}

#[cfg(not(feature = "tls"))]
fn require_tls() -> Result<()> {
    Err(config_error(
        "TLS (rediss://) needs the feature `cache/tls` (`cache-redis/tls` when using \
         cache-redis directly)",
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

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(config.connections, Some(2));
        assert_eq!(config.pool_size(), 2);
        assert_eq!(config.connect_timeout(), DEFAULT_CONNECT_TIMEOUT);
        assert_eq!(config.response_timeout(), DEFAULT_RESPONSE_TIMEOUT);
        let json = serde_json::to_string(&config).unwrap();
        let back: RedisConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(back, config);
        assert!(serde_json::from_str::<RedisConfig>(r#"{"hots": "x"}"#).is_err());
    }

    #[test]
    fn modes_by_url_and_by_parts() {
        let mode = |url: &str| {
            RedisConfig {
                url: Some(url.to_owned()),
                ..RedisConfig::default()
            }
            .mode()
        };
        assert_eq!(mode("redis://h"), RedisMode::Standalone);
        assert_eq!(mode("redis+cluster://a:1,b:2"), RedisMode::Cluster);
        assert_eq!(mode("redis+sentinel://a:1/m"), RedisMode::Sentinel);
        assert_eq!(RedisConfig::default().mode(), RedisMode::Standalone);
        assert_eq!(RedisConfig::cluster(["a:1"]).mode(), RedisMode::Cluster);
        assert_eq!(
            RedisConfig::sentinel(["a:1"], "m").mode(),
            RedisMode::Sentinel
        );
        let both = RedisConfig {
            sentinels: vec!["s:1".into()],
            ..RedisConfig::cluster(["a:1"])
        };
        assert_eq!(both.validate().unwrap_err().kind(), ErrorKind::Config);
    }

    #[test]
    fn cluster_urls() {
        let config = RedisConfig {
            url: Some("redis+cluster://u:p%40ss@10.0.0.1:7000,10.0.0.2,[::1]:7002/".into()),
            ..RedisConfig::default()
        };
        let (nodes, redis) = config.cluster_parts().unwrap();
        assert_eq!(
            nodes,
            vec![
                ("10.0.0.1".to_owned(), 7000),
                ("10.0.0.2".to_owned(), 6379),
                ("::1".to_owned(), 7002)
            ]
        );
        assert_eq!(redis.username(), Some("u"));
        assert_eq!(redis.password(), Some("p@ss"));
        assert!(!format!("{config:?}").contains("p%40ss"));
        for bad in [
            "redis+cluster://",
            "redis+cluster://a:1,,b:2",
            "redis+cluster://a:notaport",
            "redis+cluster://a:1/3",
            "redis+cluster://a:1?x=1",
        ] {
            let config = RedisConfig {
                url: Some(bad.to_owned()),
                ..RedisConfig::default()
            };
            assert_eq!(
                config.cluster_parts().unwrap_err().kind(),
                ErrorKind::Config,
                "{bad}"
            );
        }
        let with_db = RedisConfig::cluster(["a:1"]).with_db(2);
        assert_eq!(
            with_db.cluster_parts().unwrap_err().kind(),
            ErrorKind::Config
        );
        #[cfg(not(feature = "cluster"))]
        assert_eq!(
            RedisConfig::from_url("redis+cluster://a:1")
                .unwrap_err()
                .kind(),
            ErrorKind::Config
        );
        #[cfg(feature = "cluster")]
        assert!(RedisConfig::from_url("redis+cluster://a:1,b:2").is_ok());
    }

    #[test]
    fn sentinel_urls() {
        let config = RedisConfig {
            url: Some("redis+sentinel://:secret@s1:5000,s2/cache-primary/3".into()),
            ..RedisConfig::default()
        };
        let (sentinels, master, redis) = config.sentinel_parts().unwrap();
        assert_eq!(
            sentinels,
            vec![("s1".to_owned(), 5000), ("s2".to_owned(), 26379)]
        );
        assert_eq!(master, "cache-primary");
        assert_eq!(redis.db(), 3);
        assert_eq!(redis.password(), Some("secret"));
        assert_eq!(redis.username(), None);
        for bad in [
            "redis+sentinel://s1:5000",
            "redis+sentinel://s1:5000/",
            "redis+sentinel://s1/m/notadb",
            "redis+sentinel://s1/m/1/extra",
        ] {
            let config = RedisConfig {
                url: Some(bad.to_owned()),
                ..RedisConfig::default()
            };
            assert_eq!(
                config.sentinel_parts().unwrap_err().kind(),
                ErrorKind::Config,
                "{bad}"
            );
        }
        let parts = RedisConfig::sentinel(["s1:1", "s2:2"], "m")
            .with_password("pw")
            .with_sentinel_password("spw");
        let (sentinels, master, redis) = parts.sentinel_parts().unwrap();
        assert_eq!(sentinels.len(), 2);
        assert_eq!(master, "m");
        assert_eq!(redis.password(), Some("pw"));
        let debug = format!("{parts:?}");
        assert!(
            !debug.contains("spw") && !debug.contains("\"pw\""),
            "{debug}"
        );
        #[cfg(not(feature = "sentinel"))]
        assert_eq!(
            RedisConfig::from_url("redis+sentinel://s1/m")
                .unwrap_err()
                .kind(),
            ErrorKind::Config
        );
        #[cfg(feature = "sentinel")]
        assert!(RedisConfig::from_url("redis+sentinel://s1/m").is_ok());
    }

    #[test]
    fn max_value_size_by_field_or_url() {
        assert_eq!(
            RedisConfig::default().max_value_size(),
            DEFAULT_MAX_VALUE_SIZE
        );
        let config = RedisConfig::from_url("redis://h:6380/2?max_value_size=1048576").unwrap();
        assert_eq!(config.max_value_size(), 1 << 20);
        // The client sees the URL without it.
        let info = config.connection_info().unwrap();
        assert_eq!(info.addr().to_string(), "h:6380");
        assert_eq!(info.redis_settings().db(), 2);
        // The field wins.
        assert_eq!(config.with_max_value_size(4096).max_value_size(), 4096);
        // Other parameters stay for the client.
        assert_eq!(
            split_url_options("redis://h/?protocol=resp3&max_value_size=7#x").unwrap(),
            (
                "redis://h/?protocol=resp3#x".to_owned(),
                UrlOptions {
                    max_value_size: Some(7),
                    ..UrlOptions::default()
                }
            )
        );
        let cluster = RedisConfig {
            url: Some("redis+cluster://a:1,b:2?max_value_size=2048".into()),
            ..RedisConfig::default()
        };
        assert_eq!(cluster.cluster_parts().unwrap().0.len(), 2);
        assert_eq!(cluster.max_value_size(), 2048);
        let sentinel = RedisConfig {
            url: Some("redis+sentinel://s1/m/3?max_value_size=2048".into()),
            ..RedisConfig::default()
        };
        assert_eq!(sentinel.sentinel_parts().unwrap().1, "m");
        for bad in [
            "redis://h?max_value_size=0",
            "redis://h?max_value_size=lots",
            "redis://h?max_value_size=-1",
        ] {
            let err = RedisConfig::from_url(bad).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Config, "{bad}");
        }
        let err = RedisConfig::default()
            .with_max_value_size(0)
            .validate()
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        let json: RedisConfig = serde_json::from_str(r#"{"max_value_size": 65536}"#).unwrap();
        assert_eq!(json.max_value_size(), 65536);
    }

    #[test]
    fn url_query_options_and_field_precedence() {
        let config = RedisConfig::from_url(
            "redis://h:6380/2?pool_size=8&connect_timeout_ms=1500&response_timeout_ms=250\
             &protocol=resp3",
        )
        .unwrap();
        assert_eq!(config.pool_size(), 8);
        assert_eq!(config.connect_timeout(), Duration::from_millis(1500));
        assert_eq!(config.response_timeout(), Duration::from_millis(250));
        assert!(!config.reads_from_replicas());
        // The client sees only its own parameter.
        let info = config.connection_info().unwrap();
        assert_eq!(info.addr().to_string(), "h:6380");
        // Fields win over the query.
        let config = config
            .with_connections(3)
            .with_connect_timeout(Duration::from_millis(10));
        assert_eq!(config.pool_size(), 3);
        assert_eq!(config.connect_timeout(), Duration::from_millis(10));
        // Defaults without either.
        let plain = RedisConfig::from_url("redis://h").unwrap();
        assert_eq!(plain.pool_size(), 1);
        assert_eq!(plain.connect_timeout(), DEFAULT_CONNECT_TIMEOUT);
        assert_eq!(plain.response_timeout(), DEFAULT_RESPONSE_TIMEOUT);
        let cluster = RedisConfig {
            url: Some("redis+cluster://a:1,b:2?read_from_replicas=true&pool_size=2".into()),
            ..RedisConfig::default()
        };
        assert!(cluster.reads_from_replicas());
        assert_eq!(cluster.pool_size(), 2);
        assert_eq!(cluster.cluster_parts().unwrap().0.len(), 2);
        for bad in [
            "redis://h?pool_size=0",
            "redis://h?pool_size=many",
            "redis://h?connect_timeout_ms=0",
            "redis://h?read_from_replicas=maybe",
        ] {
            let err = RedisConfig::from_url(bad).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Config, "{bad}");
        }
    }

    #[test]
    fn unknown_key_in_url_query_is_named() {
        for (url, key) in [
            ("redis://h?poolsize=3", "poolsize"),
            ("redis://u:secret@h/1?pool_size=2&tls_ca=x", "tls_ca"),
            (
                "redis+cluster://a:1,b:2?read_from_replica=true",
                "read_from_replica",
            ),
            ("redis+sentinel://s1/m?timeout=5", "timeout"),
            ("redis://h?pasword=secret", "pasword"),
            ("redis://u:secret@h?x=1#auth=secret", "x"),
            ("redis://h?pasword=p@secret", "pasword"),
            ("redis+unix:///s.sock?pasword=x@secret", "pasword"),
            ("redis://h?pasword=secret#a@b", "pasword"),
        ] {
            let config = RedisConfig {
                url: Some(url.to_owned()),
                ..RedisConfig::default()
            };
            let err = config.validate().unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Config, "{url}");
            assert!(
                err.to_string().contains(&format!("unknown key `{key}`")),
                "{url}: {err}"
            );
            assert!(!err.to_string().contains("secret"), "{err}");
        }
    }

    /// Whichever setting of the query is wrong, the message shows the
    /// URL without the query: another parameter may be a misspelt password.
    #[test]
    fn query_errors_never_print_the_query() {
        for (url, named) in [
            ("redis://h?pool_size=x&pasword=secret", "`pool_size=x`"),
            (
                "redis://h?pasword=secret&pool_size=x",
                "unknown key `pasword`",
            ),
            ("redis://h?s3cret", "no `key=value` of a known key"),
            ("redis://h?Secret=1", "no `key=value` of a known key"),
            (
                "redis+cluster://a:1?pasword=secret",
                "unknown key `pasword`",
            ),
            (
                "redis+sentinel://s1/m?pasword=secret",
                "unknown key `pasword`",
            ),
            ("http://h#pasword=secret", "not a Redis URL"),
        ] {
            let err = RedisConfig::from_url(url).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Config, "{url}");
            let message = err.to_string();
            assert!(message.contains(named), "{url}: {message}");
            assert!(
                !message.to_lowercase().contains("secret"),
                "{url}: {message}"
            );
        }
    }

    #[test]
    fn tls_files_need_tls_and_come_in_pairs() {
        let err = RedisConfig::from_url("redis://h?tls_ca_file=/tmp/ca.pem").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(err.to_string().contains("tls_ca_file"), "{err}");
        #[cfg(feature = "tls")]
        {
            let config =
                RedisConfig::default().with_url("rediss://h?tls_ca_file=/tmp/ca%20dir/ca.pem");
            assert_eq!(
                config.tls_ca_file(),
                Some(PathBuf::from("/tmp/ca dir/ca.pem"))
            );
            let err = RedisConfig::from_url("rediss://h?tls_cert_file=/tmp/c.pem").unwrap_err();
            assert!(err.to_string().contains("tls_key_file"), "{err}");
            // A file that is not there: a Config error naming the setting.
            // (read when the configuration is checked)
            let err =
                RedisConfig::from_url("rediss://h?tls_ca_file=/nonexistent/ca.pem").unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Config);
            assert!(err.to_string().contains("tls_ca_file"), "{err}");
            assert_eq!(
                RedisConfig::from_url("rediss+cluster://a:1,b:2")
                    .unwrap()
                    .mode(),
                RedisMode::Cluster
            );
        }
        #[cfg(not(feature = "tls"))]
        {
            let err = RedisConfig::from_url("rediss://h").unwrap_err();
            assert!(err.to_string().contains("`cache/tls`"), "{err}");
        }
    }

    #[test]
    fn cluster_and_sentinel_urls_are_not_single_servers() {
        let config = RedisConfig {
            url: Some("redis+cluster://a:1".to_owned()),
            ..RedisConfig::default()
        };
        assert_eq!(
            config.connection_info().unwrap_err().kind(),
            ErrorKind::Config
        );
    }
}
