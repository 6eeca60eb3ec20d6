//! Sessions in the cache (`CacheSessionStore`), on memory and on a real
//! Redis: a created session loads back exactly, a save replaces it, a
//! delete removes it, an expired session is gone (its expiry date is the
//! entry's TTL), and `create` never overwrites a session that already holds
//! the id. They fail if the TTL is not taken from the expiry date, if
//! `create` writes unconditionally, or if `delete` or `load` reach another
//! key.
#![cfg(all(feature = "sessions", feature = "memory"))]

use std::collections::HashMap;
use std::time::Duration;

use cache::sessions::{CacheSessionStore, Id, Record, SessionStore};
use cache::{Cache, CacheConfig, CacheKey, KeyTtl};

async fn store(url: &str) -> CacheSessionStore {
    let mut config = CacheConfig::from_url(url);
    config.prefix = format!("sessions-test-{}", fastrand::u32(..));
    CacheSessionStore::new(cache::open(&config).await.unwrap())
}

fn record(user: i64, lives: time::Duration) -> Record {
    Record {
        id: Id::default(),
        data: HashMap::from([
            ("user_id".to_owned(), serde_json::json!(user)),
            ("name".to_owned(), serde_json::json!(format!("user{user}"))),
        ]),
        expiry_date: time::OffsetDateTime::now_utc() + lives,
    }
}

fn session_key(id: &Id) -> CacheKey {
    CacheKey::hashed("session", &id.to_string()).unwrap()
}

async fn session_create_save_load_delete(store: CacheSessionStore) {
    let mut alice = record(1, time::Duration::minutes(5));
    let mut bob = record(2, time::Duration::minutes(5));
    store.create(&mut alice).await.unwrap();
    store.create(&mut bob).await.unwrap();
    assert_eq!(store.load(&alice.id).await.unwrap(), Some(alice.clone()));
    assert_eq!(store.load(&bob.id).await.unwrap(), Some(bob.clone()));
    assert_eq!(store.load(&Id::default()).await.unwrap(), None);

    // The expiry date is the entry's TTL (5 minutes, give or take the
    // time this test took).
    match store.cache().ttl(&session_key(&alice.id)).await.unwrap() {
        KeyTtl::Expires(left) => assert!(
            left > Duration::from_secs(290) && left <= Duration::from_secs(300),
            "{left:?}"
        ),
        other => panic!("TTL of a session: {other:?}"),
    }

    // A save replaces the data.
    alice
        .data
        .insert("theme".to_owned(), serde_json::json!("dark"));
    store.save(&alice).await.unwrap();
    assert_eq!(store.load(&alice.id).await.unwrap(), Some(alice.clone()));

    // The cache holds no usable id.
    let raw = store
        .cache()
        .get::<serde_json::Value>(&session_key(&alice.id))
        .await
        .unwrap()
        .unwrap();
    assert!(!raw.to_string().contains(&alice.id.to_string()), "{raw}");

    // A delete removes that session only.
    store.delete(&alice.id).await.unwrap();
    assert_eq!(store.load(&alice.id).await.unwrap(), None);
    assert_eq!(store.load(&bob.id).await.unwrap(), Some(bob.clone()));
    store.delete(&alice.id).await.unwrap(); // twice is fine
}

async fn session_expired_is_gone(store: CacheSessionStore) {
    let mut short = record(3, time::Duration::milliseconds(300));
    store.create(&mut short).await.unwrap();
    assert_eq!(store.load(&short.id).await.unwrap(), Some(short.clone()));
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(store.load(&short.id).await.unwrap(), None);
    // The backend dropped the entry itself (the TTL), not only the load.
    assert!(!store.cache().exists(&session_key(&short.id)).await.unwrap());

    // A record already expired is not stored, and saving one deletes it.
    let mut past = record(4, time::Duration::seconds(-1));
    store.create(&mut past).await.unwrap();
    assert!(!store.cache().exists(&session_key(&past.id)).await.unwrap());
    let mut live = record(5, time::Duration::minutes(5));
    store.create(&mut live).await.unwrap();
    live.expiry_date = time::OffsetDateTime::now_utc() - time::Duration::seconds(1);
    store.save(&live).await.unwrap();
    assert_eq!(store.load(&live.id).await.unwrap(), None);
    assert!(!store.cache().exists(&session_key(&live.id)).await.unwrap());
}

async fn session_ids_do_not_collide(store: CacheSessionStore) {
    let mut first = record(6, time::Duration::minutes(5));
    store.create(&mut first).await.unwrap();
    // A second session drawn with the same id gets another one, and the
    // first is untouched.
    let mut second = record(7, time::Duration::minutes(5));
    second.id = first.id;
    store.create(&mut second).await.unwrap();
    assert_ne!(second.id, first.id);
    assert_eq!(store.load(&first.id).await.unwrap(), Some(first.clone()));
    assert_eq!(store.load(&second.id).await.unwrap(), Some(second.clone()));
}

#[tokio::test]
async fn session_create_save_load_delete_on_memory() {
    session_create_save_load_delete(store("memory://").await).await;
}

#[tokio::test]
async fn session_expired_is_gone_on_memory() {
    session_expired_is_gone(store("memory://").await).await;
}

#[tokio::test]
async fn session_ids_do_not_collide_on_memory() {
    session_ids_do_not_collide(store("memory://").await).await;
}

#[tokio::test]
async fn session_store_over_a_custom_category() {
    let cache = Cache::new(std::sync::Arc::new(cache::memory::MemoryBackend::new()));
    let store = CacheSessionStore::new(cache)
        .with_category("login")
        .unwrap();
    let mut r = record(8, time::Duration::minutes(1));
    store.create(&mut r).await.unwrap();
    let key = CacheKey::hashed("login", &r.id.to_string()).unwrap();
    assert!(store.cache().exists(&key).await.unwrap());
    assert!(!store.cache().exists(&session_key(&r.id)).await.unwrap());
    assert!(CacheSessionStore::new(store.cache().clone())
        .with_category("")
        .is_err());
}

#[cfg(feature = "redis")]
mod on_redis {
    use super::*;
    use cache_testkit::redis_server::RedisServer;

    #[tokio::test]
    async fn session_create_save_load_delete_on_redis() {
        session_create_save_load_delete(store(RedisServer::shared().url()).await).await;
    }

    #[tokio::test]
    async fn session_expired_is_gone_on_redis() {
        session_expired_is_gone(store(RedisServer::shared().url()).await).await;
    }

    #[tokio::test]
    async fn session_ids_do_not_collide_on_redis() {
        session_ids_do_not_collide(store(RedisServer::shared().url()).await).await;
    }
}
