//! Every setting of `CacheConfig` reaches the stack, from JSON, the URL
//! query and `CACHE_*` variables; an unknown key is a `Config` error that
//! names it; the documented defaults are the real ones; `open_with` builds
//! the whole stack over a backend the caller passes in.
//!
//! Fails if a key is silently ignored (`poolsize`), a section stops denying
//! unknown fields, a default drifts from the README table, or `open_with`
//! skips a layer (no timeout, no fail-open).

#[cfg(feature = "memory")]
use std::sync::Arc;
use std::time::Duration;

#[cfg(feature = "memory")]
use cache::CacheKey;
use cache::{CacheConfig, ErrorKind};
#[cfg(feature = "memory")]
use cache_testkit::{FaultConfig, FaultInjecting};

fn assert_names(err: &cache::Error, key: &str) {
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    assert!(err.to_string().contains(key), "{key} not named in: {err}");
}

#[test]
fn unknown_key_in_json_is_named_in_every_section() {
    for (json, key) in [
        (r#"{"urll": "memory://"}"#, "urll"),
        (r#"{"l1": {"max_entires": 5}}"#, "max_entires"),
        (r#"{"fail_open": {"threshold": 5}}"#, "threshold"),
        (r#"{"fail_safe": {"max_stale": 5}}"#, "max_stale"),
        (r#"{"backplane": {"chanel": "x"}}"#, "chanel"),
        (r#"{"redis": {"poolsize": 3}}"#, "poolsize"),
        (r#"{"memory": {"sweep_ms": 3}}"#, "sweep_ms"),
        (r#"{"report": {"low_hitrate": 0.3}}"#, "low_hitrate"),
    ] {
        let err = CacheConfig::from_json(json).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config, "{json}");
        // In `Display` itself: a log that prints only it names the key.
        let message = err.to_string();
        assert!(
            message.starts_with(&format!(
                "config: invalid cache configuration: unknown field `{key}`, expected "
            )),
            "{key} not named in: {message}"
        );
    }
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn unknown_key_in_redis_url_query_is_named() {
    let err = cache::open(&CacheConfig::from_url("redis://127.0.0.1:1?poolsize=3"))
        .await
        .unwrap_err();
    eprintln!("unknown URL key: {err}");
    assert_names(&err, "unknown key `poolsize`");
}

#[cfg(feature = "memory")]
#[tokio::test]
async fn unknown_key_in_memory_url_query_is_named() {
    let err = cache::open(&CacheConfig::from_url("memory://?sweep_ms=10"))
        .await
        .unwrap_err();
    assert_names(&err, "sweep_ms");
}

#[test]
fn unknown_key_in_env_is_named() {
    let vars = |pairs: &[(&str, &str)]| {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect::<Vec<_>>()
    };
    let err = CacheConfig::from_vars(vars(&[
        ("CACHE_URL", "memory://"),
        ("CACHE_TIMEOUT", "250"),
    ]))
    .unwrap_err();
    eprintln!("unknown variable: {err}");
    assert_names(&err, "CACHE_TIMEOUT ");
    // Others' variables and the test kit's are not ours to judge.
    let config = CacheConfig::from_vars(vars(&[
        ("PATH", "/bin"),
        ("CACHE_TEST_REDIS_URL", "redis://x"),
        ("CACHE_TIMEOUT_MS", "250"),
    ]))
    .unwrap();
    assert_eq!(config.timeout_ms, Some(250));
}

#[test]
fn every_variable_sets_its_key() {
    let vars: Vec<(String, String)> = [
        ("CACHE_URL", "redis://h:6379"),
        ("CACHE_PREFIX", "shop"),
        ("CACHE_DEFAULT_TTL", "60"),
        ("CACHE_TTLS", "rates=300"),
        ("CACHE_TTL_JITTER", "0.1"),
        ("CACHE_CODEC", "json"),
        ("CACHE_GENERATION_REFRESH_MS", "500"),
        ("CACHE_L1_MAX_ENTRIES", "100"),
        ("CACHE_L1_MAX_BYTES", "4096"),
        ("CACHE_L1_MAX_TTL_SECS", "30"),
        ("CACHE_L1_SWEEP_INTERVAL_MS", "250"),
        ("CACHE_TIMEOUT_MS", "200"),
        ("CACHE_BULK_TIMEOUT_MS", "60000"),
        ("CACHE_FAIL_OPEN_THRESHOLD", "3"),
        ("CACHE_FAIL_OPEN_COOL_DOWN_MS", "1500"),
        ("CACHE_BACKPLANE_CHANNEL", "inv"),
        ("CACHE_BACKPLANE_URL", "redis://bp:6379"),
        ("CACHE_BACKPLANE_MODE", "tracking"),
        ("CACHE_FAIL_SAFE_SECS", "600"),
        ("CACHE_FAIL_SAFE_SOFT_TIMEOUT_MS", "80"),
        ("CACHE_REFRESH_AHEAD", "0.2"),
        ("CACHE_METRICS", "true"),
        ("CACHE_REDIS_POOL_SIZE", "8"),
        ("CACHE_REDIS_CONNECT_TIMEOUT_MS", "700"),
        ("CACHE_REDIS_RESPONSE_TIMEOUT_MS", "300"),
        ("CACHE_REDIS_READ_FROM_REPLICAS", "true"),
        ("CACHE_REDIS_TLS_CA_FILE", "/ca.pem"),
        ("CACHE_REDIS_TLS_CERT_FILE", "/c.pem"),
        ("CACHE_REDIS_TLS_KEY_FILE", "/k.pem"),
        ("CACHE_REDIS_MAX_VALUE_SIZE", "1024"),
        ("CACHE_MEMORY_MAX_ENTRIES", "10"),
        ("CACHE_MEMORY_MAX_BYTES", "2048"),
        ("CACHE_MEMORY_MAX_VALUE_SIZE", "512"),
        ("CACHE_MEMORY_SWEEP_INTERVAL_MS", "0"),
        ("CACHE_REPORT_MIN_READS", "10"),
        ("CACHE_REPORT_LOW_HIT_RATE", "0.8"),
        ("CACHE_REPORT_HIGH_ERROR_RATE", "0.05"),
        ("CACHE_REPORT_NEAR_CAPACITY", "0.75"),
        ("CACHE_STAMPEDE_LEASE_MS", "4000"),
        ("CACHE_STAMPEDE_POLL_MS", "250"),
        ("CACHE_STAMPEDE_CHANNEL", "shop:sf"),
        ("CACHE_RATE_LIMITS", "anon=100/hour"),
    ]
    .iter()
    .map(|(n, v)| (n.to_string(), v.to_string()))
    .collect();
    let from_env = CacheConfig::from_vars(vars).unwrap();
    let from_json = CacheConfig::from_json(
        r#"{
        "url": "redis://h:6379", "prefix": "shop", "default_ttl_secs": 60,
        "ttls": {"rates": 300}, "ttl_jitter": 0.1, "codec": "json",
        "generation_refresh_ms": 500,
        "l1": {"max_entries": 100, "max_bytes": 4096, "max_ttl_secs": 30, "sweep_interval_ms": 250},
        "timeout_ms": 200, "bulk_timeout_ms": 60000,
        "fail_open": {"failure_threshold": 3, "cool_down_ms": 1500},
        "backplane": {"url": "redis://bp:6379", "channel": "inv", "mode": "tracking"},
        "fail_safe": {"max_stale_secs": 600, "soft_timeout_ms": 80},
        "refresh_ahead": 0.2, "metrics": true,
        "redis": {"pool_size": 8, "connect_timeout_ms": 700, "response_timeout_ms": 300,
                  "read_from_replicas": true, "tls_ca_file": "/ca.pem",
                  "tls_cert_file": "/c.pem", "tls_key_file": "/k.pem", "max_value_size": 1024},
        "memory": {"max_entries": 10, "max_bytes": 2048, "max_value_size": 512,
                   "sweep_interval_ms": 0},
        "report": {"min_reads": 10, "low_hit_rate": 0.8, "high_error_rate": 0.05,
                   "near_capacity": 0.75},
        "stampede": {"lease_ms": 4000, "poll_ms": 250, "channel": "shop:sf"},
        "rate_limits": {"anon": "100/hour"}
    }"#,
    )
    .unwrap();
    assert_eq!(from_env, from_json);
    // An explicit "off" wins over the settings that turn a part on.
    let off = CacheConfig::from_vars([
        ("CACHE_FAIL_OPEN_THRESHOLD".to_owned(), "3".to_owned()),
        ("CACHE_FAIL_OPEN".to_owned(), "false".to_owned()),
    ])
    .unwrap();
    assert_eq!(off.fail_open, None);
}

/// The README's "Configuration" table: each row's default, checked
/// against `CacheConfig::default()` and the layers' own defaults.
#[test]
fn documented_defaults_match_the_code() {
    let readme = include_str!("../../README.md");
    let table: Vec<(String, String)> = readme
        .split("<!-- config-table -->")
        .nth(1)
        .expect("README has the configuration table between <!-- config-table --> markers")
        .lines()
        .filter(|l| l.starts_with("| `"))
        .map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            (cells[1].trim_matches('`').to_owned(), cells[3].to_owned())
        })
        .collect();
    let default = |key: &str| {
        table
            .iter()
            .find(|(k, _)| k == key)
            .unwrap_or_else(|| panic!("`{key}` is not in the README table"))
            .1
            .clone()
    };
    let d = CacheConfig::default();
    let l1 = cache::L1Config::default();
    let fo = cache::FailOpenConfig::default();
    let fs = cache::FailSafeConfig::default();
    let report = cache::ReportThresholds::default();
    let breaker = cache::layers::BreakerConfig::default();
    let stampede = cache::StampedeConfig::default();
    assert_eq!(default("stampede.lease_ms"), stampede.lease_ms.to_string());
    assert_eq!(default("stampede.poll_ms"), stampede.poll_ms.to_string());
    assert_eq!(default("url"), format!("`{}`", d.url));
    assert_eq!(default("prefix"), format!("`{}`", d.prefix));
    assert_eq!(default("codec"), format!("`{}`", d.codec));
    assert_eq!(default("ttl_jitter"), d.ttl_jitter.to_string());
    assert_eq!(
        default("l1.max_entries"),
        l1.max_entries.unwrap().to_string()
    );
    assert_eq!(default("l1.max_ttl_secs"), l1.max_ttl_secs.to_string());
    assert_eq!(
        Duration::from_secs(l1.max_ttl_secs),
        cache::layers::TieredConfig::default().l1_max_ttl
    );
    assert_eq!(
        default("l1.sweep_interval_ms"),
        l1.sweep_interval_ms.to_string()
    );
    assert_eq!(
        default("bulk_timeout_ms"),
        cache::layers::DEFAULT_BULK_DEADLINE.as_millis().to_string()
    );
    assert_eq!(
        default("fail_open.failure_threshold"),
        fo.failure_threshold.to_string()
    );
    assert_eq!(
        default("fail_open.cool_down_ms"),
        fo.cool_down_ms.to_string()
    );
    assert_eq!(fo.failure_threshold, breaker.failure_threshold);
    assert_eq!(Duration::from_millis(fo.cool_down_ms), breaker.cool_down);
    assert_eq!(
        default("fail_safe.max_stale_secs"),
        fs.max_stale_secs.to_string()
    );
    assert_eq!(default("metrics"), format!("`{}`", d.metrics));
    assert_eq!(default("report.min_reads"), report.min_reads.to_string());
    assert_eq!(
        default("report.low_hit_rate"),
        report.low_hit_rate.to_string()
    );
    assert_eq!(
        default("report.high_error_rate"),
        report.high_error_rate.to_string()
    );
    assert_eq!(
        default("report.near_capacity"),
        report.near_capacity.to_string()
    );
    assert_eq!(
        default("generation_refresh_ms"),
        format!(
            "{} (0 with a backplane)",
            cache::DEFAULT_GENERATION_REFRESH.as_millis()
        )
    );
    #[cfg(feature = "memory")]
    {
        let memory = cache::memory::MemoryConfig::default();
        assert_eq!(
            default("memory.sweep_interval_ms"),
            memory.sweep_interval_ms.to_string()
        );
        assert_eq!(
            default("memory.max_value_size"),
            memory.max_value_size.to_string()
        );
    }
    #[cfg(feature = "redis")]
    {
        let redis = cache::redis::RedisConfig::default();
        assert_eq!(default("redis.pool_size"), redis.pool_size().to_string());
        assert_eq!(
            default("redis.connect_timeout_ms"),
            redis.connect_timeout().as_millis().to_string()
        );
        assert_eq!(
            default("redis.response_timeout_ms"),
            redis.response_timeout().as_millis().to_string()
        );
        assert_eq!(
            default("redis.read_from_replicas"),
            format!("`{}`", redis.reads_from_replicas())
        );
        assert_eq!(
            default("redis.max_value_size"),
            redis.max_value_size().to_string()
        );
    }
}

#[cfg(feature = "memory")]
#[tokio::test]
async fn report_thresholds_from_config() {
    let open = |json: &str| {
        let config = CacheConfig::from_json(json).unwrap();
        async move { cache::open(&config).await.unwrap() }
    };
    // 10 misses: under the default `min_reads` (100), nothing to say; with
    // `min_reads: 10`, a low hit rate.
    for (json, advised) in [
        (r#"{}"#, false),
        (r#"{"report": {"min_reads": 10}}"#, true),
        (
            r#"{"report": {"min_reads": 10, "low_hit_rate": 0.0}}"#,
            false,
        ),
    ] {
        let cache = open(json).await;
        for i in 0..10 {
            cache
                .get::<u32>(&CacheKey::new("r", i).unwrap())
                .await
                .unwrap();
        }
        let report = cache.report().await;
        let codes: Vec<&str> = report.advice.iter().map(|a| a.code).collect();
        assert_eq!(
            codes.contains(&"low_hit_rate"),
            advised,
            "{json}: {codes:?}"
        );
        assert!(
            report.unix_time_secs > 1_600_000_000,
            "{}",
            report.unix_time_secs
        );
    }
    let bad = CacheConfig::from_json(r#"{"report": {"low_hit_rate": 50}}"#).unwrap();
    assert_names(&cache::open(&bad).await.unwrap_err(), "report.low_hit_rate");
}

#[cfg(feature = "memory")]
#[tokio::test]
async fn open_with_applies_the_stack_to_a_given_backend() {
    // A backend that takes 500 ms per call.
    let slow = || {
        Arc::new(FaultInjecting::new(
            cache::memory::MemoryBackend::new(),
            FaultConfig::default().with_latency(Duration::from_millis(500)),
        ))
    };
    let key = CacheKey::new("k", 1).unwrap();

    // The timeout layer fires.
    let config = CacheConfig::from_json(r#"{"timeout_ms": 50}"#).unwrap();
    let cache = cache::open_with(&config, slow()).await.unwrap();
    let err = cache.get::<u32>(&key).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");

    // With fail-open over it, the same timeout is a miss, and counted.
    let config = CacheConfig::from_json(
        r#"{"timeout_ms": 50, "fail_open": {"failure_threshold": 1, "cool_down_ms": 60000}}"#,
    )
    .unwrap();
    let cache = cache::open_with(&config, slow()).await.unwrap();
    assert_eq!(cache.get::<u32>(&key).await.unwrap(), None);
    let stats = cache.stats();
    assert!(stats.failed_open_reads > 0, "{stats:?}");
    assert!(stats.breaker_open);

    // The L1 sits on top: the stack's outermost layer is `Tiered`.
    let config = CacheConfig::from_json(r#"{"l1": {}, "metrics": true}"#).unwrap();
    let stack = cache::open_stack_with(&config, slow()).await.unwrap();
    assert_eq!(stack.name(), "tiered");
}

/// Rate limit rules from the configuration: JSON and `CACHE_RATE_LIMITS`
/// give the same rules, which `CacheConfig::rate_limiter` builds on the
/// cache's plain backend; a rule that does not parse is named.
#[cfg(feature = "memory")]
#[tokio::test]
async fn rate_limits_from_config_and_env() {
    let json = CacheConfig::from_json(
        r#"{ "url": "memory://", "prefix": "rl",
             "rate_limits": { "anon": "100/hour", "user": "1000/hour", "login": "5/min failures deny" } }"#,
    )
    .unwrap();
    let env = CacheConfig::from_lookup(|name| match name {
        "CACHE_URL" => Some("memory://".into()),
        "CACHE_PREFIX" => Some("rl".into()),
        "CACHE_RATE_LIMITS" => {
            Some("anon=100/hour,user=1000/hour, login=5/min failures deny".into())
        }
        _ => None,
    })
    .unwrap();
    assert_eq!(json, env);
    let cache = cache::open(&env).await.unwrap();
    let limiter = env.rate_limiter(&cache).unwrap();
    assert_eq!(limiter.prefix(), "rl");
    let rules: Vec<(String, String)> = limiter
        .rules()
        .map(|(name, rule)| (name.to_owned(), rule.to_string()))
        .collect();
    assert_eq!(
        rules,
        [
            ("anon".to_owned(), "100/1h".to_owned()),
            ("login".to_owned(), "5/1m failures deny".to_owned()),
            ("user".to_owned(), "1000/1h".to_owned()),
        ]
    );
    for _ in 0..5 {
        limiter.record_failure("login", "ada").await.unwrap();
    }
    assert!(!limiter.check("login", "ada").await.unwrap().allowed);

    let err = CacheConfig::from_lookup(|name| {
        (name == "CACHE_RATE_LIMITS").then(|| "anon=100/fortnight".to_owned())
    })
    .unwrap_err();
    assert_eq!(err.kind(), cache::ErrorKind::Config);
    assert!(err.to_string().contains("CACHE_RATE_LIMITS"), "{err}");
    let mut bad = CacheConfig::from_url("memory://");
    bad.rate_limits.insert("anon".into(), "100 per hour".into());
    let err = bad.rate_limiter(&cache).unwrap_err();
    assert!(err.to_string().contains("rate_limits.anon"), "{err}");
}

/// A backplane URL that is no Redis URL is named by its scheme alone: its
/// query may hold a misspelt password key, which no redaction knows.
#[cfg(all(feature = "redis", feature = "memory"))]
#[tokio::test]
async fn a_backplane_url_of_another_kind_is_named_by_its_scheme_only() {
    for mode in ["pubsub", "tracking"] {
        let json = format!(
            r#"{{"url": "memory://", "l1": {{"max_entries": 10}},
                "backplane": {{"url": "http://h?pasword=secret", "mode": "{mode}"}}}}"#
        );
        let config = CacheConfig::from_json(&json).unwrap();
        let err = cache::open(&config).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config, "{err}");
        let message = err.to_string();
        assert!(message.contains("not a http:// URL"), "{mode}: {message}");
        assert!(!message.contains("secret"), "{mode}: {message}");
    }
}
