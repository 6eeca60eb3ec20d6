//! [`RedisBackplane`]: L1 invalidations between instances over Redis pub/sub.

use std::time::Duration;

use async_trait::async_trait;
use cache_core::{Backplane, BackplaneEvent, BackplaneMessage, Error, ErrorKind, Result};
use futures_util::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::mpsc;

use crate::error::{connect_error, map_error};

/// The default channel.
pub const DEFAULT_CHANNEL: &str = "cache:invalidations";

/// How long to wait between attempts to resubscribe.
const RETRY_MIN: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_secs(2);

/// A [`Backplane`] on Redis pub/sub: `PUBLISH` on one channel, one
/// subscriber connection per subscription.
///
/// When the subscriber connection drops (Redis restarted, the connection
/// was killed), the subscription delivers [`BackplaneEvent::Resync`] at
/// once, resubscribes with backoff, and delivers `Resync` again once it is
/// back (messages sent in between were missed). With a `redis+cluster://`
/// URL the subscriber and publisher use the first node: Redis Cluster
/// forwards `PUBLISH` to every node.
///
/// # Examples
///
/// ```no_run
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> cache_core::Result<()> {
/// use cache_core::layers::{Tiered, TieredConfig};
/// use cache_memory::MemoryBackend;
/// use cache_redis::{RedisBackend, RedisBackplane};
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
    client: redis::Client,
    publisher: ConnectionManager,
    channel: String,
}

impl std::fmt::Debug for RedisBackplane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackplane")
            .field("channel", &self.channel)
            .finish_non_exhaustive()
    }
}

/// The single-node URL to use for pub/sub.
fn pubsub_url(url: &str) -> String {
    match url.strip_prefix("redis+cluster://") {
        Some(rest) => {
            let (creds, hosts) = rest.rsplit_once('@').map_or(("", rest), |(c, h)| (c, h));
            let first = hosts.split(',').next().unwrap_or(hosts);
            let first = first.split('/').next().unwrap_or(first);
            if creds.is_empty() {
                format!("redis://{first}")
            } else {
                format!("redis://{creds}@{first}")
            }
        }
        None => url.to_owned(),
    }
}

impl RedisBackplane {
    /// Connects to the server at `url` and uses `channel`.
    ///
    /// # Errors
    ///
    /// [`Config`](ErrorKind::Config) for an invalid URL;
    /// [`Connection`](ErrorKind::Connection) when the server cannot be
    /// reached.
    pub async fn connect(url: &str, channel: impl Into<String>) -> Result<Self> {
        let url = pubsub_url(url);
        let client = redis::Client::open(url.as_str()).map_err(|e| {
            Error::new(ErrorKind::Config, "invalid backplane URL")
                .with_backend("redis")
                .with_source(e)
        })?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(1)))
            .set_number_of_retries(0);
        let publisher = tokio::time::timeout(
            Duration::from_secs(3),
            ConnectionManager::new_with_config(client.clone(), config),
        )
        .await
        .map_err(|_| {
            Error::new(ErrorKind::Connection, "no backplane connection within 3 s")
                .with_backend("redis")
        })?
        .map_err(|e| connect_error(e, "the backplane server"))?;
        Ok(RedisBackplane {
            client,
            publisher,
            channel: channel.into(),
        })
    }

    /// The channel.
    pub fn channel(&self) -> &str {
        &self.channel
    }

    async fn open_subscription(&self) -> redis::RedisResult<redis::aio::PubSub> {
        let mut pubsub = self.client.get_async_pubsub().await?;
        pubsub.subscribe(&self.channel).await?;
        Ok(pubsub)
    }
}

#[async_trait]
impl Backplane for RedisBackplane {
    fn name(&self) -> &'static str {
        "redis"
    }

    async fn publish(&self, message: &BackplaneMessage) -> Result<()> {
        let mut conn = self.publisher.clone();
        let cmd = redis::cmd("PUBLISH")
            .arg(&self.channel)
            .arg(message.encode())
            .to_owned();
        match tokio::time::timeout(Duration::from_secs(1), cmd.query_async::<i64>(&mut conn)).await
        {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(map_error(e, "publish")),
            Err(_) => Err(Error::new(ErrorKind::Timeout, "PUBLISH took over 1 s")
                .with_backend("redis")
                .with_operation("publish")),
        }
    }

    async fn subscribe(&self) -> Result<mpsc::Receiver<BackplaneEvent>> {
        let first = self
            .open_subscription()
            .await
            .map_err(|e| map_error(e, "subscribe"))?;
        let (tx, rx) = mpsc::channel(1024);
        let this = self.clone();
        tokio::spawn(async move {
            let mut pubsub = Some(first);
            let mut wait = RETRY_MIN;
            loop {
                if let Some(subscribed) = pubsub.take() {
                    wait = RETRY_MIN;
                    let mut stream = subscribed.into_on_message();
                    while let Some(msg) = stream.next().await {
                        match BackplaneMessage::decode(msg.get_payload_bytes()) {
                            Ok(message) => {
                                if tx.send(BackplaneEvent::Message(message)).await.is_err() {
                                    return;
                                }
                            }
                            Err(err) => {
                                tracing::warn!(error = %err, "backplane: ignoring a malformed message")
                            }
                        }
                    }
                    // The connection is gone: messages may be lost from now on.
                    tracing::warn!(channel = %this.channel, "backplane: subscription lost, resubscribing");
                    if tx.send(BackplaneEvent::Resync).await.is_err() {
                        return;
                    }
                }
                if tx.is_closed() {
                    return;
                }
                match this.open_subscription().await {
                    Ok(subscribed) => {
                        tracing::info!(channel = %this.channel, "backplane: resubscribed");
                        // Messages sent while we were away were missed.
                        if tx.send(BackplaneEvent::Resync).await.is_err() {
                            return;
                        }
                        pubsub = Some(subscribed);
                    }
                    Err(err) => {
                        tracing::debug!(error = %err, "backplane: resubscribing failed");
                        tokio::time::sleep(wait).await;
                        wait = (wait * 2).min(RETRY_MAX);
                    }
                }
            }
        });
        Ok(rx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_urls_use_their_first_node() {
        assert_eq!(pubsub_url("redis://h:1/0"), "redis://h:1/0");
        assert_eq!(pubsub_url("redis+cluster://a:1,b:2"), "redis://a:1");
        assert_eq!(pubsub_url("redis+cluster://u:p@a:1,b:2"), "redis://u:p@a:1");
    }
}
