//! `Timeout` gives each call a deadline that fits its work: one key's
//! calls the per-call deadline, keyspace-sized calls (`scan`,
//! `delete_matching`, `clear`) the bulk deadline. It fails if a clear is
//! cut off by the deadline of a `get`, or if the bulk deadline is ignored.

use std::time::Duration;

use bytes::Bytes;
use cache_core::layers::Timeout;
use cache_core::{CacheBackend, ErrorKind, SetOptions};
use cache_memory::MemoryBackend;
use cache_testkit::{FaultConfig, FaultInjecting};

async fn filled(n: usize) -> MemoryBackend {
    let memory = MemoryBackend::new();
    for i in 0..n {
        memory
            .set(
                &format!("ns:{i}"),
                Bytes::from_static(b"v"),
                SetOptions::default(),
            )
            .await
            .unwrap();
    }
    memory
}

#[tokio::test]
async fn bulk_calls_get_the_bulk_deadline_not_the_per_call_one() {
    let slow = FaultInjecting::new(
        filled(100).await,
        FaultConfig::none().with_latency(Duration::from_millis(200)),
    );
    let backend = Timeout::new(slow, Duration::from_millis(50));
    assert_eq!(
        backend.bulk_deadline(),
        cache_core::layers::DEFAULT_BULK_DEADLINE
    );
    let err = backend.get("ns:1").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout);
    assert_eq!(backend.delete_matching("ns:1*").await.unwrap(), 11);
    assert_eq!(backend.scan("ns:2*").await.unwrap().len(), 11);
    assert_eq!(backend.clear("ns:").await.unwrap(), 89, "the true count");
}

#[tokio::test]
async fn the_bulk_deadline_still_bounds_bulk_calls() {
    let slow = FaultInjecting::new(
        filled(10).await,
        FaultConfig::none().with_latency(Duration::from_millis(200)),
    );
    let backend =
        Timeout::new(slow, Duration::from_secs(10)).with_bulk_deadline(Duration::from_millis(50));
    let err = backend.clear("ns:").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout);
    assert_eq!(err.operation(), Some("clear"));
    assert!(backend.get("ns:1").await.unwrap().is_some());
}
