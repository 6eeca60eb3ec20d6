//! `Compressed<C>`: LZ4 compression of encoded values above a threshold
//! (feature `compression`).
//!
//! It proves that large values round-trip compressed (directly and through
//! a `Cache` over the memory backend, also with the fail-safe envelope),
//! that values below the threshold are the inner codec's bytes exactly (so
//! JSON interop holds), that plain values written before compression was
//! on still read, and that corrupt compressed bytes are `Codec` errors, not
//! panics. It fails if the marker is dropped or misread, the threshold is
//! ignored, or decoding trusts the stored length.
#![cfg(feature = "compression")]

use std::sync::Arc;
use std::time::Duration;

use cache_core::{
    Cache, CacheBackend, CacheKey, Codec, Compressed, ErrorKind, FailSafe, JsonCodec, SetOptions,
};
use cache_memory::MemoryBackend;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Report {
    title: String,
    rows: Vec<Row>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Row {
    id: u32,
    country: String,
    amount: f64,
}

/// About 10 KiB of JSON with the repetition real rows have.
fn report(rows: u32) -> Report {
    Report {
        title: "monthly sales".into(),
        rows: (0..rows)
            .map(|id| Row {
                id,
                country: ["GB", "FR", "DE"][id as usize % 3].into(),
                amount: f64::from(id) * 1.5,
            })
            .collect(),
    }
}

fn key() -> CacheKey {
    CacheKey::new("report", "2024-05").unwrap()
}

#[test]
fn compression_round_trips_and_saves_bytes() {
    let codec = Compressed::new(JsonCodec);
    let value = report(250);
    let json = JsonCodec.encode(&value).unwrap();
    assert!(json.len() > 8 * 1024, "{}", json.len());
    let bytes = codec.encode(&value).unwrap();
    assert_eq!(&bytes[..4], b"\xFFCZ\x01");
    assert!(
        bytes.len() * 2 < json.len(),
        "{} vs {}",
        bytes.len(),
        json.len()
    );
    assert_eq!(codec.decode::<Report>(&bytes).unwrap(), value);
}

#[test]
fn compression_below_the_threshold_stays_plain_json() {
    let codec = Compressed::new(JsonCodec);
    let value = report(3);
    let json = JsonCodec.encode(&value).unwrap();
    assert!(json.len() < 1024);
    assert_eq!(codec.encode(&value).unwrap(), json);
    // The threshold is inclusive: a value of exactly `threshold` bytes is
    // compressed (when that makes it smaller).
    let exact = Compressed::new(JsonCodec).with_threshold(json.len());
    assert_eq!(&exact.encode(&value).unwrap()[..4], b"\xFFCZ\x01");
    let above = Compressed::new(JsonCodec).with_threshold(json.len() + 1);
    assert_eq!(above.encode(&value).unwrap(), json);
}

#[test]
fn compression_keeps_values_plain_when_lz4_does_not_shrink_them() {
    // With no threshold, a 4-byte value would grow by the 8-byte header and
    // the LZ4 block: it is stored as the inner codec wrote it.
    let codec = Compressed::new(JsonCodec).with_threshold(0);
    assert_eq!(&codec.encode(&"ab").unwrap()[..], b"\"ab\"");
    assert_eq!(codec.decode::<String>(b"\"ab\"").unwrap(), "ab");
}

#[test]
fn compression_reads_plain_values_written_before() {
    let codec = Compressed::new(JsonCodec);
    let value = report(250);
    let old = JsonCodec.encode(&value).unwrap();
    assert_eq!(codec.decode::<Report>(&old).unwrap(), value);
    assert_eq!(codec.decode::<u8>(b"7").unwrap(), 7);
}

#[test]
fn compression_corrupt_bytes_are_codec_errors() {
    let codec = Compressed::new(JsonCodec);
    let good = codec.encode(&report(250)).unwrap();
    let mut cases: Vec<Vec<u8>> = vec![
        b"\xFFCZ\x01".to_vec(),                 // no length
        b"\xFFCZ\x01\x00\x00".to_vec(),         // length cut short
        b"\xFFCZ\x01\xFF\xFF\xFF\xFF".to_vec(), // 4 GiB from nothing
        good[..good.len() / 2].to_vec(),        // block cut short
    ];
    let mut flipped = good.to_vec();
    for b in flipped.iter_mut().skip(8).step_by(7) {
        *b ^= 0x5A;
    }
    cases.push(flipped);
    let mut longer = good.to_vec();
    longer[4..8]
        .copy_from_slice(&(u32::from_be_bytes(good[4..8].try_into().unwrap()) + 1).to_be_bytes());
    cases.push(longer);
    for (i, bytes) in cases.iter().enumerate() {
        let err = codec.decode::<Report>(bytes).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Codec, "case {i}: {err}");
    }
}

#[tokio::test]
async fn compression_through_a_cache_stores_compressed_bytes() {
    let backend: Arc<dyn CacheBackend> = Arc::new(MemoryBackend::new());
    let cache = Cache::builder(Arc::clone(&backend))
        .codec(Compressed::new(JsonCodec))
        .build()
        .unwrap();
    let value = report(250);
    cache.set(&key(), &value).await.unwrap();
    let full = cache.full_key(&key()).await.unwrap();
    let stored = backend.get(&full).await.unwrap().unwrap();
    assert_eq!(&stored[..4], b"\xFFCZ\x01");
    assert_eq!(cache.get::<Report>(&key()).await.unwrap(), Some(value));

    // A plain JSON value another program (or this service before the
    // upgrade) wrote reads as well.
    let small = report(2);
    let json = serde_json::to_vec(&small).unwrap();
    backend
        .set(&full, json.into(), SetOptions::default())
        .await
        .unwrap();
    assert_eq!(cache.get::<Report>(&key()).await.unwrap(), Some(small));
}

#[tokio::test]
async fn compression_inside_the_fail_safe_envelope() {
    let cache = Cache::builder(Arc::new(MemoryBackend::new()) as Arc<dyn CacheBackend>)
        .codec(Compressed::new(JsonCodec))
        .fail_safe(FailSafe::new(Duration::from_secs(60)))
        .build()
        .unwrap();
    let value = report(250);
    let loaded: Report = cache
        .get_or_set(&key(), {
            let value = value.clone();
            move || async move { Ok::<_, std::io::Error>(value) }
        })
        .await
        .unwrap();
    assert_eq!(loaded, value);
    assert_eq!(cache.get::<Report>(&key()).await.unwrap(), Some(value));
}
