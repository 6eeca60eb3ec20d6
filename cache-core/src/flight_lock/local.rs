//! [`LocalFlightLock`]: the leases of one process.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::{lock, Acquire, FlightLock, LeaseWakers, LeaseWatch};
use crate::error::Result;

/// A [`FlightLock`] inside one process: caches sharing it (clones share
/// the leases) run one loader per key between them. For tests, and for
/// several caches over one shared backend in one service.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> cache::Result<()> {
/// use cache::{Acquire, FlightLock, LocalFlightLock};
/// use std::time::Duration;
///
/// let lock = LocalFlightLock::new();
/// let lease = Duration::from_secs(5);
/// assert_eq!(lock.acquire("k:lease", "a", lease).await?, Acquire::Acquired);
/// assert!(matches!(lock.acquire("k:lease", "b", lease).await?, Acquire::Held { .. }));
/// let mut watch = lock.watch("k:lease").await?;
/// assert!(!lock.release("k:lease", "b").await?); // not b's
/// assert!(watch.wait(Duration::from_secs(1)).await); // woken all the same
/// assert!(lock.release("k:lease", "a").await?);
/// assert_eq!(lock.acquire("k:lease", "b", lease).await?, Acquire::Acquired);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Default)]
pub struct LocalFlightLock {
    leases: Arc<Mutex<HashMap<String, (String, Instant)>>>,
    wakers: LeaseWakers,
}

/// Past this many leases, `acquire` drops the expired ones.
const SWEEP_ABOVE: usize = 1024;

impl LocalFlightLock {
    /// A lock with no lease taken.
    pub fn new() -> Self {
        LocalFlightLock::default()
    }
}

#[async_trait]
impl FlightLock for LocalFlightLock {
    fn name(&self) -> &'static str {
        "local"
    }

    async fn acquire(&self, key: &str, token: &str, lease: Duration) -> Result<Acquire> {
        let now = Instant::now();
        let mut leases = lock(&self.leases);
        if leases.len() > SWEEP_ABOVE {
            leases.retain(|_, (_, until)| *until > now);
        }
        if let Some((_, until)) = leases.get(key) {
            if *until > now {
                return Ok(Acquire::Held {
                    remaining: Some(*until - now),
                });
            }
        }
        let until = now.checked_add(lease).unwrap_or(now + FAR);
        leases.insert(key.to_owned(), (token.to_owned(), until));
        Ok(Acquire::Acquired)
    }

    async fn extend(&self, key: &str, token: &str, lease: Duration) -> Result<bool> {
        let now = Instant::now();
        let mut leases = lock(&self.leases);
        match leases.get_mut(key) {
            Some((holder, until)) if holder == token && *until > now => {
                *until = now.checked_add(lease).unwrap_or(now + FAR);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn release(&self, key: &str, token: &str) -> Result<bool> {
        let held = {
            let mut leases = lock(&self.leases);
            let now = Instant::now();
            let held = leases
                .get(key)
                .is_some_and(|(holder, until)| holder == token && *until > now);
            if held {
                leases.remove(key);
            }
            held
        };
        self.wakers.wake(key);
        Ok(held)
    }

    async fn watch(&self, key: &str) -> Result<LeaseWatch> {
        Ok(self.wakers.watch(key))
    }
}

/// The end of a lease too long for `Instant` (about 30 years).
const FAR: Duration = Duration::from_secs(30 * 365 * 24 * 3600);

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_lease_ends_by_itself() {
        let lock = LocalFlightLock::new();
        let short = Duration::from_millis(30);
        assert_eq!(
            lock.acquire("k", "a", short).await.unwrap(),
            Acquire::Acquired
        );
        assert!(!lock.extend("k", "b", short).await.unwrap());
        tokio::time::sleep(short * 2).await;
        assert!(!lock.extend("k", "a", short).await.unwrap());
        assert_eq!(
            lock.acquire("k", "b", short).await.unwrap(),
            Acquire::Acquired
        );
    }
}
