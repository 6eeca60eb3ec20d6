//! [`RedisBackplane`]: L1 invalidations between instances over Redis pub/sub,
//! on one server, a Redis Cluster (sharded pub/sub) or a primary found
//! through Sentinel.
//!
//! The subscription lives on its own RESP3 connection to one node, found
//! anew each time it is (re)opened: the server itself, the primary owning
//! the channel's slot (`CLUSTER SLOTS`, asked of the nodes known so far in
//! turn), or the primary the Sentinels name. A `PING` each second on that
//! connection and TCP keepalive notice a dead or half-open connection; the
//! Sentinels' `+switch-master` announcements move it after a failover.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use cache_core::{Backplane, BackplaneEvent, BackplaneMessage, Error, ErrorKind, Result};
use redis::aio::MultiplexedConnection;
use redis::io::tcp::{socket2::TcpKeepalive, TcpSettings};
use redis::{
    AsyncConnectionConfig, ConnectionInfo, Msg, ProtocolVersion, PushInfo, PushKind, RedisResult,
};
use tokio::sync::mpsc;

use crate::config::{RedisConfig, RedisMode};
use crate::core::{Conn, Core};

/// The default channel.
pub const DEFAULT_CHANNEL: &str = "cache:invalidations";

/// How long to wait between attempts to resubscribe (or, for
/// [`RedisTracking`](crate::RedisTracking), to reconnect).
pub(crate) const RETRY_MIN: Duration = Duration::from_millis(50);
pub(crate) const RETRY_MAX: Duration = Duration::from_secs(2);

/// How long opening a connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a `PUBLISH` may take.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(1);

/// How often the subscribed connection is checked with a `PING`.
const HEARTBEAT: Duration = Duration::from_secs(1);

/// A `PING` on the subscribed connection unanswered this long means the
/// connection is dead (a frozen server, a half-open TCP connection).
pub(crate) const DEAD_AFTER: Duration = Duration::from_millis(2500);

/// TCP keepalive on the subscribed connection: first probe after this much
/// silence (the `PING`s keep it from firing on a live connection).
const KEEPALIVE: Duration = Duration::from_secs(5);

/// A [`Backplane`] on Redis pub/sub: each message is published once on one
/// channel, and each subscription holds one connection to one node.
///
/// The URL picks the deployment, as for [`RedisBackend`](crate::RedisBackend):
///
/// - `redis://` (one server): `PUBLISH` and `SUBSCRIBE`.
/// - `redis+cluster://a:7000,b:7000` (feature `cluster`): sharded pub/sub
///   (Redis 7): the channel hashes to one slot, publishers `SPUBLISH` to
///   the primary owning it and subscriptions `SSUBSCRIBE` there. A
///   subscription finds that primary with `CLUSTER SLOTS`, asking the nodes
///   it knows (the URL's, then those the cluster reported) in turn, so it
///   follows the cluster when nodes die, are replaced or the slot moves.
/// - `redis+sentinel://s1:26379,s2:26379/master-name` (feature
///   `sentinel`): publishes and subscribes on the primary the Sentinels
///   name, and moves to the new one on a failover (on the Sentinels'
///   `+switch-master` announcement, or when the connection fails).
///
/// # Message rate
///
/// With `I` instances each making `w` invalidating writes per second, the
/// channel carries `I · w` messages per second and each instance receives
/// all of them (its own included), `I² · w` deliveries in all. On one
/// server or a Sentinel primary all of it goes through that server (plus
/// its replicas, as Redis replicates published messages). On a cluster of
/// `N` primaries, plain `PUBLISH` is forwarded over the cluster bus to all
/// `N` primaries and their replicas whatever the subscribers; sharded
/// pub/sub keeps the traffic on the one shard owning the channel's slot:
/// it does not grow with `N`, and adding nodes adds no backplane load
/// (nor capacity: one channel is one shard's work; use several caches'
/// channels, which hash to different slots, to spread it).
///
/// # Failures
///
/// When the subscription may have missed messages, it delivers
/// [`BackplaneEvent::Resync`] (the instance clears its L1), finds the node
/// again, resubscribes with backoff, and delivers `Resync` again once it is
/// back. It counts as lost when the connection closes, when the server ends
/// the subscription (a slot migrated), when a `PING` (sent each second) is
/// not answered within 2.5 s — so a frozen server or a half-open TCP
/// connection is noticed within about 3.5 s — and, with Sentinel, when the
/// Sentinels announce a new primary. Connecting is bounded by 2 s, a
/// publish by 1 s; TCP keepalive is on. The subscribed connection speaks
/// RESP3 (Redis 6 or later; sharded pub/sub needs Redis 7).
///
/// # Examples
///
/// ```no_run
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> cache::Result<()> {
/// use cache::layers::{Tiered, TieredConfig};
/// use cache::memory::MemoryBackend;
/// use cache::redis::{RedisBackend, RedisBackplane};
/// use std::sync::Arc;
///
/// let url = "redis://127.0.0.1:6379";
/// let backplane = RedisBackplane::connect(url, "shop:invalidations").await?;
/// let tiered = Tiered::new(
///     Arc::new(MemoryBackend::new()),
///     Arc::new(RedisBackend::from_url(url).await?),
///     TieredConfig::default(),
/// )
/// .with_backplane(Arc::new(backplane))
/// .await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RedisBackplane {
    inner: Arc<Inner>,
}

struct Inner {
    /// Where subscriptions go.
    target: Target,
    /// The publishing connection, bounded and error-mapped.
    publisher: Core,
    channel: String,
}

/// How a subscription finds its node.
enum Target {
    /// One server.
    Server(ConnectionInfo),
    /// The primary owning the channel's slot.
    #[cfg(feature = "cluster")]
    Cluster(ClusterTarget),
    /// The primary the Sentinels name.
    #[cfg(feature = "sentinel")]
    Sentinel(Box<SentinelSource>),
}

/// The Sentinels and a client asking them for the primary.
#[cfg(feature = "sentinel")]
struct SentinelSource {
    target: crate::config::SentinelTarget,
    client: tokio::sync::Mutex<redis::sentinel::SentinelClient>,
}

impl std::fmt::Debug for RedisBackplane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackplane")
            .field("channel", &self.inner.channel)
            .field("target", &self.inner.publisher.target())
            .finish_non_exhaustive()
    }
}

#[cfg(not(all(feature = "cluster", feature = "sentinel")))]
fn feature_off(feature: &str) -> Error {
    Error::new(
        ErrorKind::Config,
        format!(
            "this backplane URL needs the feature `cache/{feature}` (`cache-redis/{feature}` \
             when using cache-redis directly)"
        ),
    )
    .with_backend("redis")
}

impl RedisBackplane {
    /// Connects to the deployment at `url` (`redis://`, `rediss://`,
    /// `redis+cluster://`, `redis+sentinel://`) and uses `channel`.
    ///
    /// # Errors
    ///
    /// [`Config`](ErrorKind::Config) for an invalid URL, or one whose
    /// crate feature is off; [`Connection`](ErrorKind::Connection) when the
    /// deployment cannot be reached within 2 s.
    pub async fn connect(url: &str, channel: impl Into<String>) -> Result<Self> {
        let config = RedisConfig::from_url(url)?
            .with_connect_timeout(CONNECT_TIMEOUT)
            .with_response_timeout(PUBLISH_TIMEOUT);
        Self::with_config(config, channel).await
    }

    /// Connects to the deployment `config` describes and uses `channel`;
    /// its connect and response timeouts bound connecting and publishing.
    ///
    /// # Errors
    ///
    /// As [`connect`](Self::connect).
    pub async fn with_config(config: RedisConfig, channel: impl Into<String>) -> Result<Self> {
        let config = config.with_connections(1);
        let target_name = config.target();
        let (target, publisher) = match config.mode() {
            RedisMode::Standalone => {
                let info = config.connection_info()?;
                let mut managers = crate::core::connect_standalone(&config).await?;
                let publisher = Conn::Manager(managers.remove(0));
                (Target::Server(info), publisher)
            }
            #[cfg(feature = "cluster")]
            RedisMode::Cluster => {
                let (nodes, redis) = config.cluster_parts()?;
                let (mut connections, _) = crate::cluster::connect(&config).await?;
                let publisher = Conn::Cluster(connections.remove(0));
                let tls = config.tls_settings()?;
                (
                    Target::Cluster(ClusterTarget::new(nodes, redis, tls)),
                    publisher,
                )
            }
            #[cfg(not(feature = "cluster"))]
            RedisMode::Cluster => return Err(feature_off("cluster")),
            #[cfg(feature = "sentinel")]
            RedisMode::Sentinel => {
                let target = config.sentinel_target()?;
                let client = crate::sentinel::sentinel_client(&target, &config)?;
                let mut connections = crate::sentinel::connect(&config).await?;
                let publisher = Conn::Sentinel(connections.remove(0));
                (
                    Target::Sentinel(Box::new(SentinelSource {
                        target,
                        client: tokio::sync::Mutex::new(client),
                    })),
                    publisher,
                )
            }
            #[cfg(not(feature = "sentinel"))]
            RedisMode::Sentinel => return Err(feature_off("sentinel")),
        };
        Ok(RedisBackplane {
            inner: Arc::new(Inner {
                target,
                publisher: Core::new(vec![publisher], config.response_timeout(), target_name),
                channel: channel.into(),
            }),
        })
    }

    /// The channel.
    pub fn channel(&self) -> &str {
        &self.inner.channel
    }

    /// Whether the channel is a shard channel (`SPUBLISH`/`SSUBSCRIBE`).
    fn sharded(&self) -> bool {
        #[cfg(feature = "cluster")]
        if matches!(self.inner.target, Target::Cluster(_)) {
            return true;
        }
        false
    }

    /// The node a new subscription goes to.
    async fn resolve(&self) -> RedisResult<ConnectionInfo> {
        match &self.inner.target {
            Target::Server(info) => Ok(info.clone()),
            #[cfg(feature = "cluster")]
            Target::Cluster(cluster) => cluster.owner_of(&self.inner.channel).await,
            #[cfg(feature = "sentinel")]
            Target::Sentinel(sentinel) => {
                let primary = sentinel.client.lock().await.async_get_client().await?;
                Ok(primary.get_connection_info().clone())
            }
        }
    }

    /// Finds the node, connects (RESP3, TCP keepalive) and subscribes.
    async fn open_subscription(&self) -> RedisResult<Subscription> {
        let info = self.resolve().await?;
        let node = info.addr().to_string();
        let redis_settings = info
            .redis_settings()
            .clone()
            .set_protocol(ProtocolVersion::RESP3);
        let info = info
            .set_redis_settings(redis_settings)
            .set_tcp_settings(tcp_settings());
        let (push_tx, pushes) = mpsc::unbounded_channel();
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(DEAD_AFTER))
            .set_push_sender(push_tx);
        let client = redis::Client::open(info)?;
        let mut conn = client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        if self.sharded() {
            // On a node that does not own the slot: `MOVED`, and the next
            // attempt asks the cluster again.
            redis::cmd("SSUBSCRIBE")
                .arg(&self.inner.channel)
                .query_async::<redis::Value>(&mut conn)
                .await?;
        } else {
            conn.subscribe(&self.inner.channel).await?;
        }
        Ok(Subscription { conn, pushes, node })
    }

    /// [`open_subscription`](Self::open_subscription), bounded.
    async fn open_bounded(&self) -> Result<Subscription> {
        let limit = CONNECT_TIMEOUT + DEAD_AFTER;
        match tokio::time::timeout(limit, self.open_subscription()).await {
            Ok(Ok(subscription)) => Ok(subscription),
            Ok(Err(e)) => Err(crate::error::map_error(e, "subscribe")),
            Err(_) => Err(Error::new(
                ErrorKind::Timeout,
                format!("no subscription within {} ms", limit.as_millis()),
            )
            .with_backend("redis")
            .with_operation("subscribe")),
        }
    }

    /// The Sentinels' failover announcements, while the returned guard
    /// lives (none without Sentinel).
    fn watch_failovers(&self) -> (Option<mpsc::UnboundedReceiver<String>>, AbortOnDrop) {
        match &self.inner.target {
            #[cfg(feature = "sentinel")]
            Target::Sentinel(sentinel) => {
                let (tx, rx) = mpsc::unbounded_channel();
                let task = tokio::spawn(crate::sentinel::watch_switch_master(
                    sentinel.target.clone(),
                    CONNECT_TIMEOUT,
                    move |primary| {
                        let _ = tx.send(primary);
                    },
                ));
                (Some(rx), AbortOnDrop(Some(task.abort_handle())))
            }
            _ => (None, AbortOnDrop(None)),
        }
    }

    /// Forwards the subscription's messages to `tx` until it is lost
    /// (`Some(why)`) or `tx`'s receiver is gone (`None`).
    async fn pump(
        &self,
        mut subscription: Subscription,
        tx: &mpsc::Sender<BackplaneEvent>,
        switches: &mut Option<mpsc::UnboundedReceiver<String>>,
    ) -> Option<&'static str> {
        let dead = until_dead(subscription.conn.clone());
        tokio::pin!(dead);
        loop {
            tokio::select! {
                push = subscription.pushes.recv() => match push {
                    None => return Some("the connection closed"),
                    Some(push) => match push.kind {
                        PushKind::Message | PushKind::SMessage => {
                            let delivered = forward(push, tx).await;
                            if !delivered {
                                return None;
                            }
                        }
                        PushKind::Disconnection => return Some("the connection closed"),
                        // Not an answer to ours: the server ended it (the
                        // slot moved to another node).
                        PushKind::Unsubscribe | PushKind::SUnsubscribe => {
                            return Some("the server ended the subscription")
                        }
                        _ => {}
                    },
                },
                () = &mut dead => return Some("no answer to PING within 2.5 s"),
                Some(primary) = next_switch(switches) => {
                    tracing::info!(%primary, old = %subscription.node, "backplane: the Sentinels announced a new primary");
                    return Some("the primary changed");
                }
                () = tx.closed() => return None,
            }
        }
    }
}

/// Completes when `conn` stops answering: a `PING` each [`HEARTBEAT`] (the
/// next one once the last is answered) not answered within [`DEAD_AFTER`]
/// (a frozen server, a half-open TCP connection).
pub(crate) async fn until_dead(mut conn: MultiplexedConnection) {
    let mut heartbeat = tokio::time::interval(HEARTBEAT);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    heartbeat.tick().await;
    loop {
        heartbeat.tick().await;
        let pong = tokio::time::timeout(
            DEAD_AFTER,
            redis::cmd("PING").query_async::<String>(&mut conn),
        )
        .await;
        if !matches!(pong, Ok(Ok(pong)) if pong == "PONG") {
            return;
        }
    }
}

/// One message push to `tx`; `false` when the receiver is gone.
async fn forward(push: PushInfo, tx: &mpsc::Sender<BackplaneEvent>) -> bool {
    let Some(message) = Msg::from_push_info(push) else {
        return true;
    };
    match BackplaneMessage::decode(message.get_payload_bytes()) {
        Ok(message) => tx.send(BackplaneEvent::Message(message)).await.is_ok(),
        Err(err) => {
            tracing::warn!(error = %err, "backplane: ignoring a malformed message");
            true
        }
    }
}

/// The next announced primary, or never.
async fn next_switch(switches: &mut Option<mpsc::UnboundedReceiver<String>>) -> Option<String> {
    match switches {
        Some(rx) => match rx.recv().await {
            Some(primary) => Some(primary),
            None => std::future::pending().await,
        },
        None => std::future::pending().await,
    }
}

/// TCP settings of the subscribed connection: no delay, keepalive (and on
/// Linux a user timeout, so unacknowledged data fails the connection too).
pub(crate) fn tcp_settings() -> TcpSettings {
    let keepalive = TcpKeepalive::new().with_time(KEEPALIVE);
    #[cfg(target_os = "linux")]
    let keepalive = keepalive
        .with_interval(Duration::from_secs(1))
        .with_retries(3);
    let settings = TcpSettings::default()
        .set_nodelay(true)
        .set_keepalive(keepalive);
    #[cfg(target_os = "linux")]
    let settings = settings.set_user_timeout(KEEPALIVE + Duration::from_secs(3));
    settings
}

/// A subscribed connection and the pushes it receives.
struct Subscription {
    /// For `PING`s; messages arrive on `pushes`.
    conn: MultiplexedConnection,
    pushes: mpsc::UnboundedReceiver<PushInfo>,
    /// `host:port`, for logs.
    node: String,
}

/// Aborts a background task when dropped.
struct AbortOnDrop(Option<tokio::task::AbortHandle>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(task) = self.0.take() {
            task.abort();
        }
    }
}

#[async_trait]
impl Backplane for RedisBackplane {
    fn name(&self) -> &'static str {
        "redis"
    }

    async fn publish(&self, message: &BackplaneMessage) -> Result<()> {
        let verb = if self.sharded() {
            "SPUBLISH"
        } else {
            "PUBLISH"
        };
        let cmd = redis::cmd(verb)
            .arg(&self.inner.channel)
            .arg(message.encode())
            .to_owned();
        self.inner
            .publisher
            .query::<i64>("publish", &cmd)
            .await
            .map(drop)
    }

    async fn subscribe(&self) -> Result<mpsc::Receiver<BackplaneEvent>> {
        let (mut switches, watcher) = self.watch_failovers();
        let first = self.open_bounded().await?;
        tracing::debug!(channel = %self.inner.channel, node = %first.node, "backplane: subscribed");
        let (tx, rx) = mpsc::channel(1024);
        let this = self.clone();
        tokio::spawn(async move {
            let _watcher = watcher;
            let mut subscription = Some(first);
            let mut wait = RETRY_MIN;
            loop {
                if let Some(subscribed) = subscription.take() {
                    wait = RETRY_MIN;
                    let node = subscribed.node.clone();
                    let Some(why) = this.pump(subscribed, &tx, &mut switches).await else {
                        return;
                    };
                    // Messages may be lost from now on.
                    tracing::warn!(channel = %this.inner.channel, %node, reason = why, "backplane: subscription lost, resubscribing");
                    if tx.send(BackplaneEvent::Resync).await.is_err() {
                        return;
                    }
                }
                if tx.is_closed() {
                    return;
                }
                match this.open_bounded().await {
                    Ok(subscribed) => {
                        tracing::info!(channel = %this.inner.channel, node = %subscribed.node, "backplane: resubscribed");
                        // Messages sent while we were away were missed.
                        if tx.send(BackplaneEvent::Resync).await.is_err() {
                            return;
                        }
                        subscription = Some(subscribed);
                    }
                    Err(err) => {
                        tracing::debug!(error = %err, "backplane: resubscribing failed");
                        tokio::select! {
                            () = tokio::time::sleep(wait) => {}
                            () = tx.closed() => return,
                        }
                        wait = (wait * 2).min(RETRY_MAX);
                    }
                }
            }
        });
        Ok(rx)
    }
}

/// Finding the primary that owns a channel's slot.
#[cfg(feature = "cluster")]
struct ClusterTarget {
    /// Nodes to ask, the last one that answered first: the URL's, then
    /// those the cluster reported.
    nodes: std::sync::Mutex<Vec<(String, u16)>>,
    /// Credentials of the data nodes.
    redis: redis::RedisConnectionInfo,
    /// TLS to the nodes.
    tls: crate::config::TlsSettings,
}

#[cfg(feature = "cluster")]
impl ClusterTarget {
    fn new(
        nodes: Vec<(String, u16)>,
        redis: redis::RedisConnectionInfo,
        tls: crate::config::TlsSettings,
    ) -> Self {
        ClusterTarget {
            nodes: std::sync::Mutex::new(nodes),
            redis,
            tls,
        }
    }

    fn info(&self, host: &str, port: u16) -> RedisResult<ConnectionInfo> {
        self.tls.node_info(host, port, self.redis.clone())
    }

    /// Asks the known nodes in turn for `CLUSTER SLOTS` and returns the
    /// primary owning `channel`'s slot.
    async fn owner_of(&self, channel: &str) -> RedisResult<ConnectionInfo> {
        let slot = crate::cluster::key_slot(channel.as_bytes());
        let candidates = self.nodes.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut last_error: Option<redis::RedisError> = None;
        for (host, port) in candidates {
            let asked = async {
                let client = redis::Client::open(self.info(&host, port)?)?;
                let config = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(CONNECT_TIMEOUT))
                    .set_response_timeout(Some(DEAD_AFTER));
                let mut conn = client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await?;
                redis::cmd("CLUSTER")
                    .arg("SLOTS")
                    .query_async::<redis::Value>(&mut conn)
                    .await
            };
            let reply = match tokio::time::timeout(CONNECT_TIMEOUT + DEAD_AFTER, asked).await {
                Ok(Ok(reply)) => reply,
                Ok(Err(e)) => {
                    last_error = Some(e);
                    continue;
                }
                Err(_) => continue,
            };
            let Some((owner, seen)) = slot_owner(&reply, slot, &host) else {
                continue;
            };
            self.remember(&(host, port), seen);
            return self.info(&owner.0, owner.1);
        }
        Err(last_error.unwrap_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::NotConnected,
                "no cluster node answered CLUSTER SLOTS with an owner of the channel's slot",
            )
            .into()
        }))
    }

    /// Puts the node that answered first and adds the nodes it reported.
    fn remember(&self, answered: &(String, u16), seen: Vec<(String, u16)>) {
        let mut nodes = self.nodes.lock().unwrap_or_else(|p| p.into_inner());
        nodes.retain(|n| n != answered);
        nodes.insert(0, answered.clone());
        for node in seen {
            if !nodes.contains(&node) {
                nodes.push(node);
            }
        }
    }
}

/// A node's `(host, port)`.
#[cfg(feature = "cluster")]
type Node = (String, u16);

/// From a `CLUSTER SLOTS` reply asked of `asked_host`: the primary serving
/// `slot`, and every node the reply names.
#[cfg(feature = "cluster")]
fn slot_owner(reply: &redis::Value, slot: u16, asked_host: &str) -> Option<(Node, Vec<Node>)> {
    use redis::Value;
    let Value::Array(ranges) = reply else {
        return None;
    };
    let node = |value: &Value| -> Option<(String, u16)> {
        let Value::Array(fields) = value else {
            return None;
        };
        let host = match fields.first()? {
            Value::BulkString(bytes) => String::from_utf8(bytes.clone()).ok()?,
            Value::SimpleString(text) => text.clone(),
            _ => return None,
        };
        let Value::Int(port) = fields.get(1)? else {
            return None;
        };
        // An empty host is the node that was asked; `?` is unknown.
        let host = match host.as_str() {
            "" => asked_host.to_owned(),
            "?" => return None,
            _ => host,
        };
        Some((host, u16::try_from(*port).ok()?))
    };
    let mut owner = None;
    let mut seen = Vec::new();
    for range in ranges {
        let Value::Array(items) = range else {
            continue;
        };
        let (Some(Value::Int(start)), Some(Value::Int(end))) = (items.first(), items.get(1)) else {
            continue;
        };
        let nodes: Vec<(String, u16)> = items.iter().skip(2).filter_map(node).collect();
        if (*start..=*end).contains(&i64::from(slot)) && owner.is_none() {
            owner = nodes.first().cloned();
        }
        seen.extend(nodes);
    }
    owner.map(|owner| (owner, seen))
}

#[cfg(all(test, feature = "cluster"))]
mod tests {
    use super::*;
    use redis::Value;

    fn node(host: &str, port: i64) -> Value {
        Value::Array(vec![
            Value::BulkString(host.as_bytes().to_vec()),
            Value::Int(port),
            Value::BulkString(b"id".to_vec()),
        ])
    }

    #[test]
    fn the_slot_owner_is_the_first_node_of_its_range() {
        let reply = Value::Array(vec![
            Value::Array(vec![
                Value::Int(0),
                Value::Int(8191),
                node("10.0.0.1", 7000),
                node("10.0.0.2", 7001),
            ]),
            Value::Array(vec![
                Value::Int(8192),
                Value::Int(16383),
                node("", 7002),
                node("?", 7003),
            ]),
        ]);
        let (owner, seen) = slot_owner(&reply, 9000, "10.0.0.9").unwrap();
        assert_eq!(owner, ("10.0.0.9".to_owned(), 7002));
        assert_eq!(
            seen,
            vec![
                ("10.0.0.1".to_owned(), 7000),
                ("10.0.0.2".to_owned(), 7001),
                ("10.0.0.9".to_owned(), 7002),
            ]
        );
        let (owner, _) = slot_owner(&reply, 0, "x").unwrap();
        assert_eq!(owner, ("10.0.0.1".to_owned(), 7000));
        assert_eq!(slot_owner(&Value::Array(vec![]), 0, "x"), None);
    }
}
