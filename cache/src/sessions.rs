//! Sessions in the cache: a [`tower_sessions_core::SessionStore`] over a
//! [`Cache`] (feature `sessions`).
//!
//! - A session's expiry date becomes the entry's TTL, so the backend drops
//!   an expired session by itself (Redis: `PX`); a record whose date has
//!   passed is never returned, even by a backend that keeps it a little
//!   longer.
//! - [`create`](SessionStore::create) writes with `set_if_absent` and draws
//!   a new id until it finds a free one: an existing session is never
//!   overwritten by a new one with the same id.
//! - Entries live under `{prefix}:session:{hash of the id}`: the cache
//!   never holds a usable session id, neither in a key nor in a value (the
//!   id is not stored; a record is rebuilt from the id it was loaded by).
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use cache::sessions::{CacheSessionStore, Id, Record, SessionStore};
//! use std::collections::HashMap;
//!
//! let cache = cache::open(&cache::CacheConfig::from_url("memory://")).await?;
//! let store = CacheSessionStore::new(cache);
//!
//! let mut record = Record {
//!     id: Id::default(),
//!     data: HashMap::from([("user_id".to_owned(), serde_json::json!(42))]),
//!     expiry_date: time::OffsetDateTime::now_utc() + time::Duration::minutes(30),
//! };
//! store.create(&mut record).await?; // may change record.id
//! assert_eq!(store.load(&record.id).await?, Some(record.clone()));
//! store.delete(&record.id).await?;
//! assert_eq!(store.load(&record.id).await?, None);
//! # Ok(())
//! # }
//! ```

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
pub use tower_sessions_core::session::{Id, Record};
pub use tower_sessions_core::session_store::{Error as SessionError, SessionStore};

use crate::{Cache, CacheKey, ErrorKind, Ttl};

/// The category session entries are stored under unless
/// [`CacheSessionStore::with_category`] names another.
pub const SESSION_CATEGORY: &str = "session";

/// How many ids [`create`](SessionStore::create) draws before it gives up
/// (with 128-bit random ids, a second draw already means a broken random
/// source or a backend that refuses writes).
const CREATE_ATTEMPTS: usize = 8;

/// A session store over a [`Cache`]: see the [module](self) docs.
///
/// Cloning is cheap (the cache is shared).
#[derive(Debug, Clone)]
pub struct CacheSessionStore {
    cache: Cache,
    category: String,
}

/// What is stored for a session: its record without the id.
#[derive(Serialize, Deserialize)]
struct Stored {
    data: HashMap<String, serde_json::Value>,
    expiry_date: OffsetDateTime,
}

impl CacheSessionStore {
    /// A store keeping sessions in `cache` under the category
    /// [`SESSION_CATEGORY`].
    pub fn new(cache: Cache) -> Self {
        CacheSessionStore {
            cache,
            category: SESSION_CATEGORY.to_owned(),
        }
    }

    /// The same store with its sessions under `category`.
    ///
    /// # Errors
    ///
    /// [`InvalidKey`](ErrorKind::InvalidKey) for a category a
    /// [`CacheKey`] refuses.
    pub fn with_category(mut self, category: &str) -> crate::Result<Self> {
        CacheKey::new(category, "probe")?;
        category.clone_into(&mut self.category);
        Ok(self)
    }

    /// The cache the sessions live in.
    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    fn key(&self, id: &Id) -> Result<CacheKey, SessionError> {
        CacheKey::hashed(&self.category, &id.to_string()).map_err(backend)
    }

    /// The TTL that makes the entry expire at `record.expiry_date`; `None`
    /// when that date has passed (less than a millisecond left counts).
    fn ttl(record: &Record) -> Option<Ttl> {
        let left = record.expiry_date - OffsetDateTime::now_utc();
        let left = Duration::try_from(left).ok()?;
        (left >= Duration::from_millis(1)).then_some(Ttl::After(left))
    }

    fn stored(record: &Record) -> Stored {
        Stored {
            data: record.data.clone(),
            expiry_date: record.expiry_date,
        }
    }
}

/// A cache error as the store's: codec failures keep their direction.
fn mapped(err: crate::Error, codec: fn(String) -> SessionError) -> SessionError {
    match err.kind() {
        ErrorKind::Codec => codec(err.to_string()),
        _ => backend(err),
    }
}

fn backend(err: crate::Error) -> SessionError {
    SessionError::Backend(err.to_string())
}

#[async_trait]
impl SessionStore for CacheSessionStore {
    /// Stores a new session; draws a new `record.id` while the id is taken.
    /// A record already expired is not stored.
    ///
    /// # Errors
    ///
    /// The cache's errors; [`SessionError::Backend`] when no free id was
    /// found (a backend that skips writes, e.g. fail-open during an
    /// outage, ends here).
    async fn create(&self, record: &mut Record) -> Result<(), SessionError> {
        let Some(ttl) = Self::ttl(record) else {
            return Ok(());
        };
        let stored = Self::stored(record);
        for _ in 0..CREATE_ATTEMPTS {
            let key = self.key(&record.id)?;
            let written = self
                .cache
                .set_if_absent(&key, &stored, ttl)
                .await
                .map_err(|e| mapped(e, SessionError::Encode))?;
            if written {
                return Ok(());
            }
            record.id = Id::default();
        }
        Err(SessionError::Backend(format!(
            "no free session id after {CREATE_ATTEMPTS} attempts (is the cache refusing writes?)"
        )))
    }

    /// Writes the session, replacing what the id held; a record whose
    /// expiry date has passed is deleted instead.
    ///
    /// # Errors
    ///
    /// The cache's errors.
    async fn save(&self, record: &Record) -> Result<(), SessionError> {
        let key = self.key(&record.id)?;
        match Self::ttl(record) {
            Some(ttl) => self
                .cache
                .set_with_ttl(&key, &Self::stored(record), ttl)
                .await
                .map_err(|e| mapped(e, SessionError::Encode)),
            None => self.cache.delete(&key).await.map(drop).map_err(backend),
        }
    }

    /// The session `id` names, unless it is missing or expired.
    ///
    /// # Errors
    ///
    /// The cache's errors ([`SessionError::Decode`] for an entry that does
    /// not decode).
    async fn load(&self, id: &Id) -> Result<Option<Record>, SessionError> {
        let key = self.key(id)?;
        let stored = self
            .cache
            .get::<Stored>(&key)
            .await
            .map_err(|e| mapped(e, SessionError::Decode))?;
        Ok(stored
            .filter(|s| s.expiry_date > OffsetDateTime::now_utc())
            .map(|s| Record {
                id: *id,
                data: s.data,
                expiry_date: s.expiry_date,
            }))
    }

    /// Removes the session (nothing happens when there is none).
    ///
    /// # Errors
    ///
    /// The cache's errors.
    async fn delete(&self, id: &Id) -> Result<(), SessionError> {
        let key = self.key(id)?;
        self.cache.delete(&key).await.map(drop).map_err(backend)
    }
}
