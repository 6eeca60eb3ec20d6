//! The backplane: invalidation messages between instances that each keep an
//! L1 copy (see [`Tiered::with_backplane`](crate::layers::Tiered::with_backplane)).

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc};

use crate::error::{Error, ErrorKind, Result};

/// What another instance must drop from its L1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Invalidation {
    /// These keys changed (written, deleted, expired, incremented). A tag
    /// invalidation ([`Cache::invalidate_tag`](crate::Cache::invalidate_tag))
    /// travels as this too: it writes the tag's marker key, and dropping
    /// the L1 copy of the marker is all another instance needs (its tagged
    /// entries are checked against the marker on every read).
    #[serde(rename = "k")]
    Keys(Vec<String>),
    /// Every key matching this Redis glob was deleted.
    #[serde(rename = "p")]
    Pattern(String),
    /// Every key starting with this namespace was cleared.
    #[serde(rename = "c")]
    Namespace(String),
}

/// One message on the backplane: an invalidation and the instance that
/// sent it (instances ignore their own messages).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct BackplaneMessage {
    /// The sending instance's id.
    #[serde(rename = "o")]
    pub origin: u64,
    /// What to drop.
    #[serde(rename = "i")]
    pub invalidation: Invalidation,
}

impl BackplaneMessage {
    /// A message from `origin`.
    pub fn new(origin: u64, invalidation: Invalidation) -> Self {
        BackplaneMessage {
            origin,
            invalidation,
        }
    }

    /// The wire form (compact JSON, e.g. `{"o":7,"i":{"k":["app:user:1"]}}`),
    /// the same for every backplane so instances of different versions
    /// understand each other.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses the wire form.
    ///
    /// # Errors
    ///
    /// [`Codec`](ErrorKind::Codec) for bytes that are not a message.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        serde_json::from_slice(bytes).map_err(|e| {
            Error::new(ErrorKind::Codec, format!("not a backplane message: {e}")).with_source(e)
        })
    }
}

/// What a subscription delivers.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BackplaneEvent {
    /// A message (possibly this instance's own).
    Message(BackplaneMessage),
    /// The subscription was interrupted (and is being re-established):
    /// messages may have been missed, so the L1 must be cleared.
    Resync,
}

/// Carries invalidations between instances. A Redis pub/sub implementation
/// is `cache::redis::RedisBackplane`; [`LocalBackplane`] connects instances
/// inside one process (tests, or several caches in one service).
///
/// # Behavior
///
/// - `publish` MUST deliver the message to every current subscription
///   (including the publisher's own; receivers filter by origin).
/// - A subscription that may have missed messages MUST deliver
///   [`BackplaneEvent::Resync`] before further messages.
/// - The receiver closes when the backplane is gone for good.
#[async_trait]
pub trait Backplane: Send + Sync + 'static {
    /// A short name for logs.
    fn name(&self) -> &'static str;

    /// Sends `message` to every subscription.
    async fn publish(&self, message: &BackplaneMessage) -> Result<()>;

    /// Starts a subscription.
    async fn subscribe(&self) -> Result<mpsc::Receiver<BackplaneEvent>>;
}

/// An in-process [`Backplane`] on a broadcast channel: instances in one
/// process sharing an L2 (tests, or several caches in one service).
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> cache::Result<()> {
/// use cache::{Backplane, BackplaneEvent, BackplaneMessage, Invalidation, LocalBackplane};
///
/// let backplane = LocalBackplane::new();
/// let mut events = backplane.subscribe().await?;
/// let message = BackplaneMessage::new(1, Invalidation::Keys(vec!["app:user:1".into()]));
/// backplane.publish(&message).await?;
/// assert_eq!(events.recv().await, Some(BackplaneEvent::Message(message)));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct LocalBackplane {
    sender: broadcast::Sender<BackplaneMessage>,
}

impl Default for LocalBackplane {
    fn default() -> Self {
        LocalBackplane::new()
    }
}

impl LocalBackplane {
    /// A backplane with room for 4096 messages in flight per subscriber (a
    /// subscriber that falls further behind gets a `Resync`).
    pub fn new() -> Self {
        LocalBackplane {
            sender: broadcast::channel(4096).0,
        }
    }
}

#[async_trait]
impl Backplane for LocalBackplane {
    fn name(&self) -> &'static str {
        "local"
    }

    async fn publish(&self, message: &BackplaneMessage) -> Result<()> {
        // No subscribers is not an error.
        let _ = self.sender.send(message.clone());
        Ok(())
    }

    async fn subscribe(&self) -> Result<mpsc::Receiver<BackplaneEvent>> {
        let mut source = self.sender.subscribe();
        let (tx, rx) = mpsc::channel(1024);
        tokio::spawn(async move {
            loop {
                let event = match source.recv().await {
                    Ok(message) => BackplaneEvent::Message(message),
                    Err(broadcast::error::RecvError::Lagged(_)) => BackplaneEvent::Resync,
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                if tx.send(event).await.is_err() {
                    return;
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
    fn wire_form_is_stable() {
        let m = BackplaneMessage::new(7, Invalidation::Keys(vec!["a:b".into()]));
        assert_eq!(m.encode(), br#"{"o":7,"i":{"k":["a:b"]}}"#);
        assert_eq!(BackplaneMessage::decode(&m.encode()).unwrap(), m);
        let p = BackplaneMessage::new(1, Invalidation::Pattern("a:*".into()));
        assert_eq!(p.encode(), br#"{"o":1,"i":{"p":"a:*"}}"#);
        assert!(BackplaneMessage::decode(b"hello").is_err());
    }
}
