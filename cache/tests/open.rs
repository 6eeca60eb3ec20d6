//! `cache::open` picks the backend from the URL, or says which feature is
//! missing.

use cache::{CacheConfig, ErrorKind};

#[tokio::test]
async fn unknown_scheme_is_a_config_error() {
    for url in ["nosuch://x", "no-scheme-at-all"] {
        let err = cache::open(&CacheConfig::from_url(url)).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config, "{url}");
    }
}

#[tokio::test]
async fn bad_settings_are_config_errors() {
    let mut config = CacheConfig::from_url("memory://");
    config.codec = "yaml".into();
    let err = cache::open(&config).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(CacheConfig::from_json(r#"{"urll": "memory://"}"#).is_err());

    // A TTL for a category no key can have would never apply.
    let config =
        CacheConfig::from_json(r#"{"ttls": {"rates": 300, "User Profiles": 60}}"#).unwrap();
    let err = cache::open(&config).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert_eq!(
        err.to_string(),
        "config: `ttls` names \"User Profiles\", which no CacheKey can have as its category: \
         category \"User Profiles\" contains ' '; use ASCII letters, digits, '_', '-' and '.'"
    );
}

#[cfg(feature = "memory")]
#[tokio::test]
async fn memory_url_opens_a_bounded_memory_cache() {
    let config = CacheConfig::from_json(
        r#"{"url": "memory://?max_entries=3", "prefix": "t", "ttls": {"k": 60}}"#,
    )
    .unwrap();
    let cache = cache::open(&config).await.unwrap();
    assert_eq!(cache.backend().name(), "memory");
    for i in 0..10 {
        cache
            .set(&cache::CacheKey::new("k", i).unwrap(), &i)
            .await
            .unwrap();
    }
    let health = cache.health().await.unwrap();
    assert_eq!(health.details["max_entries"], "3");
    assert!(health.details["entries"].parse::<usize>().unwrap() <= 3);
}

#[cfg(not(feature = "memory"))]
#[tokio::test]
async fn memory_without_the_feature_names_it() {
    let err = cache::open(&CacheConfig::from_url("memory://"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(err.to_string().contains("`cache/memory`"), "{err}");
}

#[cfg(not(feature = "cluster"))]
#[tokio::test]
async fn cluster_without_the_feature_names_it() {
    let err = cache::open(&CacheConfig::from_url("redis+cluster://127.0.0.1:7000"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(err.to_string().contains("`cache/cluster`"), "{err}");
}

#[cfg(not(feature = "redis"))]
#[tokio::test]
async fn redis_without_the_feature_names_it() {
    let err = cache::open(&CacheConfig::from_url("redis://127.0.0.1:6379"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(err.to_string().contains("`cache/redis`"), "{err}");
}

#[cfg(feature = "msgpack")]
#[tokio::test]
async fn msgpack_codec_round_trips() {
    let mut config = CacheConfig::from_url("memory://");
    config.codec = "msgpack".into();
    let cache = cache::open(&config).await.unwrap();
    let key = cache::CacheKey::new("k", 1).unwrap();
    cache.set(&key, &vec![1u8, 2, 3]).await.unwrap();
    assert_eq!(
        cache.get::<Vec<u8>>(&key).await.unwrap(),
        Some(vec![1, 2, 3])
    );
}
