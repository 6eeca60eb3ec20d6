//! value_types: the types services keep in caches — money as
//! `rust_decimal::Decimal`, timestamps as `chrono::DateTime<Utc>`, ids as
//! `uuid::Uuid` — come back exactly (scale, nanoseconds, every bit), through
//! JSON and MessagePack, on memory and on a real Redis. A codec or backend
//! that rounded through `f64`, cut sub-second time or mangled bytes fails.
#![cfg(all(feature = "memory", feature = "redis", feature = "msgpack"))]

use std::str::FromStr;

use cache::{Cache, CacheConfig, CacheKey};
use cache_testkit::redis_server::RedisServer;
use chrono::{DateTime, TimeZone, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Payment {
    id: Uuid,
    amount: Decimal,
    fee: Decimal,
    at: DateTime<Utc>,
    refunds: Vec<(Uuid, Decimal)>,
}

fn payment() -> Payment {
    Payment {
        id: Uuid::from_u128(0x0192_1a2b_3c4d_7e5f_8a9b_0c1d_2e3f_4a5b),
        // 0.1 + 0.2 is not 0.3 in f64; it is here. Scale is kept: 10.50.
        amount: Decimal::from_str("0.1").unwrap() + Decimal::from_str("0.2").unwrap(),
        fee: Decimal::from_str("10.50").unwrap(),
        at: Utc
            .timestamp_opt(1_764_662_400, 123_456_789)
            .single()
            .unwrap(),
        refunds: vec![
            (
                Uuid::nil(),
                Decimal::from_str("-0.000000000000000001").unwrap(),
            ),
            (Uuid::max(), Decimal::MAX),
        ],
    }
}

async fn round_trip(cache: &Cache, codec: &str) {
    let original = payment();
    assert_eq!(original.amount.to_string(), "0.3");
    assert_eq!(original.fee.to_string(), "10.50");
    let key = CacheKey::new("payment", codec).unwrap();
    cache.set(&key, &original).await.unwrap();
    let back: Payment = cache.get(&key).await.unwrap().unwrap();
    assert_eq!(back, original, "{codec}");
    assert_eq!(back.fee.scale(), 2, "{codec}: the scale survives");
    assert_eq!(back.at.timestamp_subsec_nanos(), 123_456_789, "{codec}");
    // Each type alone, too (top-level values, not just fields).
    let pairs = [
        (CacheKey::new("money", codec).unwrap(), original.fee),
        (CacheKey::new("max", codec).unwrap(), Decimal::MAX),
    ];
    for (key, value) in &pairs {
        cache.set(key, value).await.unwrap();
        assert_eq!(cache.get::<Decimal>(key).await.unwrap(), Some(*value));
    }
    let at = CacheKey::new("at", codec).unwrap();
    cache.set(&at, &original.at).await.unwrap();
    assert_eq!(
        cache.get::<DateTime<Utc>>(&at).await.unwrap(),
        Some(original.at)
    );
    let id = CacheKey::new("id", codec).unwrap();
    cache.set(&id, &original.id).await.unwrap();
    assert_eq!(cache.get::<Uuid>(&id).await.unwrap(), Some(original.id));
}

fn config(url: &str, codec: &str) -> CacheConfig {
    let mut config = CacheConfig::from_url(url);
    config.prefix = format!("values-{codec}");
    config.codec = codec.to_owned();
    config
}

#[tokio::test]
async fn value_types_round_trip_exactly_on_memory() {
    for codec in ["json", "msgpack"] {
        let cache = cache::open(&config("memory://", codec)).await.unwrap();
        round_trip(&cache, codec).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn value_types_round_trip_exactly_on_redis() {
    let server = RedisServer::new();
    for codec in ["json", "msgpack"] {
        let cache = cache::open(&config(server.url(), codec)).await.unwrap();
        round_trip(&cache, codec).await;
    }
    // In JSON, what another service reads: money as an exact decimal
    // string, time as RFC 3339 with nanoseconds, the id as text.
    let stored = server.cli(&["GET", "values-json:money:json"]);
    assert_eq!(stored, br#""10.50""#);
    let stored = server.cli(&["GET", "values-json:at:json"]);
    assert_eq!(stored, br#""2025-12-02T08:00:00.123456789Z""#);
    let stored = server.cli(&["GET", "values-json:id:json"]);
    assert_eq!(stored, br#""01921a2b-3c4d-7e5f-8a9b-0c1d2e3f4a5b""#);
}
