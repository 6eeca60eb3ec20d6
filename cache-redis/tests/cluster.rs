//! The backend on a real Redis Cluster (3 primaries, 1 replica each, on
//! loopback): the whole conformance suite, batches grouped by node (with
//! the round trips counted on the servers), pattern deletes on every
//! primary, hash tags, health, and `MOVED`/`ASK` while a slot migrates.
//!
//! One cluster is shared by the tests of this binary; the tests that
//! count commands or migrate a slot start their own, so the other tests'
//! traffic does not blur the counts. Failover is in `cluster_failover.rs`.
#![cfg(feature = "cluster")]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cache_core::{Cache, CacheBackend, CacheKey, HealthStatus, SetOptions};
use cache_redis::{RedisBackend, RedisConfig, RedisMode};
use cache_testkit::redis_cluster::RedisCluster;

async fn cluster_backend() -> Arc<dyn CacheBackend> {
    let url = RedisCluster::shared().url();
    // A value limit the suite can test, with room for its 1 MiB case.
    let config = RedisConfig::from_url(&url)
        .unwrap()
        .with_max_value_size((1 << 20) + 4096);
    Arc::new(
        RedisBackend::connect(config)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to the test cluster {url}: {e:?}")),
    )
}

cache_testkit::conformance_suite!(redis_cluster, cluster_backend);

fn prefix(test: &str) -> String {
    format!("cl{:08x}:{test}", fastrand::u32(..))
}

async fn backend_for(cluster: &RedisCluster) -> RedisBackend {
    let config = RedisConfig::from_url(&cluster.url())
        .unwrap()
        .with_response_timeout(Duration::from_secs(5));
    let backend = RedisBackend::connect(config).await.unwrap();
    assert_eq!(backend.mode(), RedisMode::Cluster);
    backend
}

/// Every key on the node on `port` matching `pattern` (`SCAN` on that node
/// only, as `redis-cli` without `-c` does).
fn keys_on(cluster: &RedisCluster, port: u16, pattern: &str) -> BTreeSet<String> {
    String::from_utf8(cluster.cli(port, &["--scan", "--pattern", pattern]))
        .unwrap()
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

/// `name:value` of `INFO section` on one node, as a number (0 when absent).
fn stat(cluster: &RedisCluster, port: u16, section: &str, name: &str) -> u64 {
    let info = cluster.info(port, section);
    info.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .map(|v| v.trim().parse().unwrap_or(0))
        .unwrap_or(0)
}

/// `calls=N` of `cmdstat_NAME` in `INFO commandstats` on one node.
fn calls(cluster: &RedisCluster, port: u16, command: &str) -> u64 {
    let info = cluster.info(port, "commandstats");
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("cmdstat_{command}:calls=")))
        .and_then(|rest| rest.split(',').next())
        .map(|n| n.parse().unwrap_or(0))
        .unwrap_or(0)
}

#[derive(Debug, Clone, Copy)]
struct Counters {
    mget: u64,
    get: u64,
    reads: u64,
    commands: u64,
}

fn counters(cluster: &RedisCluster, port: u16) -> Counters {
    Counters {
        mget: calls(cluster, port, "mget"),
        get: calls(cluster, port, "get"),
        reads: stat(cluster, port, "stats", "total_reads_processed"),
        commands: stat(cluster, port, "stats", "total_commands_processed"),
    }
}

fn deltas(
    cluster: &RedisCluster,
    before: &BTreeMap<u16, Counters>,
) -> BTreeMap<u16, (u64, u64, u64, u64)> {
    before
        .iter()
        .map(|(&port, b)| {
            let a = counters(cluster, port);
            (
                port,
                (
                    a.mget - b.mget,
                    a.get - b.get,
                    // The INFO calls of the measurement itself are reads too.
                    (a.reads - b.reads).saturating_sub(3),
                    (a.commands - b.commands).saturating_sub(3),
                ),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_get_many_1000_keys_is_one_round_trip_per_node() {
    // A cluster of its own: the counters must see only this test.
    let cluster = RedisCluster::new();
    let backend = backend_for(&cluster).await;
    let p = prefix("batch");
    let keys: Vec<String> = (0..1000).map(|i| format!("{p}:k{i}")).collect();
    let items: Vec<(&str, Bytes)> = keys
        .iter()
        .map(|k| (k.as_str(), Bytes::from(format!("value of {k}"))))
        .collect();
    backend
        .set_many(&items, Some(Duration::from_secs(300)))
        .await
        .unwrap();

    // The keys are spread over every primary.
    let primaries = cluster.primaries();
    assert_eq!(primaries.len(), 3);
    let mut slots = BTreeSet::new();
    for key in &keys {
        let slot =
            String::from_utf8(cluster.cli(primaries[0], &["CLUSTER", "KEYSLOT", key])).unwrap();
        slots.insert(slot);
    }
    let per_node: BTreeMap<u16, usize> = primaries
        .iter()
        .map(|&port| (port, keys_on(&cluster, port, &format!("{p}:*")).len()))
        .collect();
    println!(
        "1000 keys over {} slots; keys per primary: {per_node:?}",
        slots.len()
    );
    assert!(per_node.values().all(|&n| n > 200), "{per_node:?}");
    assert_eq!(per_node.values().sum::<usize>(), 1000);

    // Ask in a shuffled order, with misses in between.
    let mut asked: Vec<String> = keys.clone();
    fastrand::shuffle(&mut asked);
    for i in (0..asked.len()).step_by(10) {
        asked.insert(i, format!("{p}:missing{i}"));
    }
    let refs: Vec<&str> = asked.iter().map(String::as_str).collect();

    let before: BTreeMap<u16, Counters> = primaries
        .iter()
        .map(|&port| (port, counters(&cluster, port)))
        .collect();
    let values = backend.get_many(&refs).await.unwrap();
    let batched = deltas(&cluster, &before);

    assert_eq!(values.len(), refs.len());
    for (key, value) in refs.iter().zip(&values) {
        if key.contains(":missing") {
            assert_eq!(value, &None, "{key}");
        } else {
            assert_eq!(
                value.as_deref(),
                Some(format!("value of {key}").as_bytes()),
                "{key}"
            );
        }
    }

    // The same keys one `get` at a time, for comparison.
    let before: BTreeMap<u16, Counters> = primaries
        .iter()
        .map(|&port| (port, counters(&cluster, port)))
        .collect();
    for key in &refs {
        backend.get(key).await.unwrap();
    }
    let one_by_one = deltas(&cluster, &before);

    println!("per primary: (MGET calls, GET calls, socket reads, commands)");
    println!("  get_many of {} keys: {batched:?}", refs.len());
    println!("  get one by one:      {one_by_one:?}");
    for (port, (mget, get, reads, _)) in &batched {
        // One pipeline per node: a handful of socket reads (a ~30 KB
        // pipeline may arrive in a few reads; replicas' REPLCONF ACKs add
        // one a second), against one per key when calling `get`.
        assert!(*reads <= 8, "{port}: {reads} reads for one get_many");
        assert!(*mget > 0 && *get == 0, "{port}: {mget} MGET, {get} GET");
        let (_, _, reads_one_by_one, _) = one_by_one[port];
        assert!(reads_one_by_one >= 250, "{port}: {reads_one_by_one}");
    }
    // Redis Cluster refuses a multi-key command across slots (CROSSSLOT),
    // so a node gets one MGET per slot, in one pipeline. Sequential keys
    // fall in distinct slots, so above that is one MGET per key; keys
    // sharing hash tags show the grouping by slot.
    let total_mget: u64 = batched.values().map(|d| d.0).sum();
    // (The 100 missing keys may share slots with the others.)
    assert!(
        (slots.len()..=slots.len() + 100).contains(&(total_mget as usize)),
        "one MGET per slot: {total_mget}"
    );
    let tagged: Vec<String> = (0..1000)
        .map(|i| format!("{{{p}-g{}}}:k{i}", i % 30))
        .collect();
    let items: Vec<(&str, Bytes)> = tagged
        .iter()
        .map(|k| (k.as_str(), Bytes::from(k.clone())))
        .collect();
    backend.set_many(&items, None).await.unwrap();
    let refs: Vec<&str> = tagged.iter().map(String::as_str).collect();
    let before: BTreeMap<u16, Counters> = primaries
        .iter()
        .map(|&port| (port, counters(&cluster, port)))
        .collect();
    let values = backend.get_many(&refs).await.unwrap();
    let grouped = deltas(&cluster, &before);
    println!("  get_many of 1000 keys with 30 hash tags: {grouped:?}");
    assert!(values
        .iter()
        .zip(&refs)
        .all(|(v, k)| v.as_deref() == Some(k.as_bytes())));
    let total_mget: u64 = grouped.values().map(|d| d.0).sum();
    assert!(total_mget <= 30, "one MGET per slot: {total_mget}");
    for (port, (_, _, reads, _)) in &grouped {
        assert!(*reads <= 8, "{port}: {reads} reads for one get_many");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_set_many_and_delete_many_span_every_node() {
    let cluster = RedisCluster::shared();
    let backend = backend_for(cluster).await;
    let p = prefix("batches");
    let keys: Vec<String> = (0..300).map(|i| format!("{p}:k{i}")).collect();
    let items: Vec<(&str, Bytes)> = keys
        .iter()
        .map(|k| (k.as_str(), Bytes::from(k.clone())))
        .collect();
    backend.set_many(&items, None).await.unwrap();
    for port in cluster.primaries() {
        assert!(!keys_on(cluster, port, &format!("{p}:*")).is_empty());
    }
    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    let mut with_missing = refs.clone();
    with_missing.push("cl-never-written-a");
    with_missing.push("cl-never-written-b");
    assert_eq!(backend.delete_many(&with_missing).await.unwrap(), 300);
    assert!(backend
        .get_many(&refs)
        .await
        .unwrap()
        .iter()
        .all(Option::is_none));

    // A zero TTL stores nothing and removes what was there, on every node.
    backend.set_many(&items, None).await.unwrap();
    backend
        .set_many(&items, Some(Duration::ZERO))
        .await
        .unwrap();
    assert!(backend
        .get_many(&refs)
        .await
        .unwrap()
        .iter()
        .all(Option::is_none));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_delete_matching_removes_matches_from_every_primary_and_nothing_else() {
    let cluster = RedisCluster::shared();
    let backend = backend_for(cluster).await;
    let p = prefix("pattern");
    let mut items = Vec::new();
    for i in 0..600 {
        items.push((format!("{p}:match:{i}"), Bytes::from_static(b"m")));
        items.push((format!("{p}:other:{i}"), Bytes::from_static(b"o")));
    }
    items.push((format!("{p}:matchnot"), Bytes::from_static(b"n")));
    let refs: Vec<(&str, Bytes)> = items.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    backend.set_many(&refs, None).await.unwrap();

    let primaries = cluster.primaries();
    let before: BTreeMap<u16, usize> = primaries
        .iter()
        .map(|&port| (port, keys_on(cluster, port, &format!("{p}:match:*")).len()))
        .collect();
    println!("matching keys per primary before: {before:?}");
    assert!(before.values().all(|&n| n > 0), "{before:?}");

    let removed = backend
        .delete_matching(&format!("{p}:match:*"))
        .await
        .unwrap();
    assert_eq!(removed, 600);
    for &port in &primaries {
        assert!(
            keys_on(cluster, port, &format!("{p}:match:*")).is_empty(),
            "{port} still has matching keys"
        );
    }
    let others: usize = primaries
        .iter()
        .map(|&port| keys_on(cluster, port, &format!("{p}:other:*")).len())
        .sum();
    assert_eq!(others, 600, "the other keys must all stay");
    assert_eq!(
        backend
            .get(&format!("{p}:matchnot"))
            .await
            .unwrap()
            .as_deref(),
        Some(&b"n"[..])
    );
    // The replicas follow their primaries.
    let found = backend.scan(&format!("{p}:*")).await.unwrap();
    assert_eq!(found.len(), 601);

    assert_eq!(backend.clear(&format!("{p}:")).await.unwrap(), 601);
    assert!(backend.scan(&format!("{p}:*")).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_hash_tag_in_the_prefix_puts_a_caches_keys_in_one_slot() {
    let cluster = RedisCluster::shared();
    let backend: Arc<dyn CacheBackend> = Arc::new(backend_for(cluster).await);
    // `validate_prefix` accepts braces: the whole namespace is one hash tag.
    let tag = format!("tenant{:08x}", fastrand::u32(..));
    let cache = Cache::builder(Arc::clone(&backend))
        .prefix(format!("{{{tag}}}"))
        .build()
        .unwrap();
    for id in 0..50 {
        let key = CacheKey::new("user", id).unwrap();
        cache.set(&key, &format!("user {id}")).await.unwrap();
    }
    // Every key is on one node, in the tag's slot.
    let primaries = cluster.primaries();
    let holders: Vec<(u16, usize)> = primaries
        .iter()
        .map(|&port| (port, keys_on(cluster, port, &format!("{{{tag}}}:*")).len()))
        .filter(|(_, n)| *n > 0)
        .collect();
    assert_eq!(holders.len(), 1, "{holders:?}");
    assert!(holders[0].1 >= 50, "{holders:?}");
    let slot = cluster.cli(primaries[0], &["CLUSTER", "KEYSLOT", &tag]);
    let holder = holders[0].0;
    for key in keys_on(cluster, holder, &format!("{{{tag}}}:*")) {
        assert_eq!(cluster.cli(holder, &["CLUSTER", "KEYSLOT", &key]), slot);
    }
    // And so a multi-key command of the user's own works on them.
    let keys: Vec<String> = keys_on(cluster, holder, &format!("{{{tag}}}:user:*"))
        .into_iter()
        .collect();
    let mut args = vec!["MGET"];
    args.extend(keys.iter().map(String::as_str));
    let out = String::from_utf8(cluster.cli(holder, &args)).unwrap();
    assert_eq!(out.lines().count(), keys.len());
    assert!(cache.clear().await.unwrap() >= 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_health_reports_every_node() {
    let cluster = RedisCluster::shared();
    let backend = backend_for(cluster).await;
    let health = backend.health().await.unwrap();
    println!("{health:#?}");
    assert_eq!(health.status, HealthStatus::Healthy);
    assert_eq!(health.details["mode"], "cluster");
    assert_eq!(health.details["cluster_state"], "ok");
    assert_eq!(health.details["primaries"], "3");
    assert_eq!(health.details["replicas"], "3");
    assert_eq!(health.details["answering_nodes"], "6");
    let nodes: Vec<&String> = health
        .details
        .keys()
        .filter(|k| k.starts_with("node "))
        .collect();
    assert_eq!(nodes.len(), 6, "{nodes:?}");
    for port in cluster.ports() {
        let report = &health.details[&format!("node 127.0.0.1:{port}")];
        assert!(!report.contains("not answering"), "{report}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_follows_ask_and_moved_while_a_slot_migrates() {
    // A cluster of its own: this test moves a slot.
    let cluster = RedisCluster::builder().replicas(0).spawn();
    let backend = backend_for(&cluster).await;
    let tag = format!("mig{:08x}", fastrand::u32(..));
    let keys: Vec<String> = (0..40).map(|i| format!("{{{tag}}}:k{i}")).collect();
    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    let items: Vec<(&str, Bytes)> = refs
        .iter()
        .map(|k| (*k, Bytes::from(k.to_string())))
        .collect();
    backend.set_many(&items, None).await.unwrap();

    let slot =
        String::from_utf8(cluster.cli(cluster.ports()[0], &["CLUSTER", "KEYSLOT", &tag])).unwrap();
    let primaries = cluster.primaries();
    let source = *primaries
        .iter()
        .find(|&&p| !keys_on(&cluster, p, &format!("{{{tag}}}:*")).is_empty())
        .unwrap();
    let target = *primaries.iter().find(|&&p| p != source).unwrap();
    let id = |port: u16| String::from_utf8(cluster.cli(port, &["CLUSTER", "MYID"])).unwrap();
    let (source_id, target_id) = (id(source), id(target));

    // Half-way through: half of the keys moved (reads of those get ASK).
    cluster.cli(
        target,
        &["CLUSTER", "SETSLOT", &slot, "IMPORTING", &source_id],
    );
    cluster.cli(
        source,
        &["CLUSTER", "SETSLOT", &slot, "MIGRATING", &target_id],
    );
    let mut migrate = vec![
        "MIGRATE".to_owned(),
        "127.0.0.1".to_owned(),
        target.to_string(),
        String::new(),
        "0".to_owned(),
        "5000".to_owned(),
        "KEYS".to_owned(),
    ];
    migrate.extend(keys[..20].iter().cloned());
    let migrate: Vec<&str> = migrate.iter().map(String::as_str).collect();
    assert_eq!(cluster.cli(source, &migrate), b"OK");
    assert_eq!(keys_on(&cluster, target, &format!("{{{tag}}}:*")).len(), 20);

    for key in &refs {
        assert_eq!(
            backend.get(key).await.unwrap().as_deref(),
            Some(key.as_bytes()),
            "{key} during the migration"
        );
    }
    // A multi-key MGET on a migrating slot answers TRYAGAIN; the backend
    // falls back to single-key GETs, which follow ASK.
    let values = backend.get_many(&refs).await.unwrap();
    for (key, value) in refs.iter().zip(&values) {
        assert_eq!(value.as_deref(), Some(key.as_bytes()), "{key}");
    }

    // Finish the move; now the old owner answers MOVED.
    let mut migrate: Vec<&str> = migrate[..7].to_vec();
    migrate.extend(refs[20..].iter().copied());
    assert_eq!(cluster.cli(source, &migrate), b"OK");
    for port in cluster.ports() {
        cluster.cli(port, &["CLUSTER", "SETSLOT", &slot, "NODE", &target_id]);
    }
    for key in &refs {
        assert_eq!(
            backend.get(key).await.unwrap().as_deref(),
            Some(key.as_bytes())
        );
    }
    let values = backend.get_many(&refs).await.unwrap();
    assert!(values
        .iter()
        .zip(&refs)
        .all(|(v, k)| v.as_deref() == Some(k.as_bytes())));
    backend
        .set(refs[0], Bytes::from_static(b"new"), SetOptions::default())
        .await
        .unwrap();
    assert_eq!(
        cluster.cli(target, &["GET", refs[0]]),
        b"new",
        "the write went to the new owner"
    );
    assert_eq!(backend.delete_many(&refs).await.unwrap(), 40);
    assert!(keys_on(&cluster, target, &format!("{{{tag}}}:*")).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_url_through_connect_and_config_parts() {
    let cluster = RedisCluster::shared();
    // `cache_redis::connect` is what `cache::open` calls.
    let backend = cache_redis::connect(&cluster.url()).await.unwrap();
    let p = prefix("connect");
    backend
        .set(
            &format!("{p}:a"),
            Bytes::from_static(b"1"),
            SetOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(
        backend.get(&format!("{p}:a")).await.unwrap().as_deref(),
        Some(&b"1"[..])
    );
    // The same cluster by parts, from one seed node.
    let seed = format!("127.0.0.1:{}", cluster.ports()[0]);
    let config = RedisConfig::cluster([seed]);
    assert_eq!(config.mode(), RedisMode::Cluster);
    let by_parts = RedisBackend::connect(config).await.unwrap();
    assert_eq!(
        by_parts.get(&format!("{p}:a")).await.unwrap().as_deref(),
        Some(&b"1"[..])
    );
    assert!(backend.delete(&format!("{p}:a")).await.unwrap());
}

#[test]
fn cluster_fixture_stops_every_node_when_a_test_panics() {
    let ports = std::sync::Mutex::new(Vec::new());
    let outcome = std::thread::scope(|s| {
        s.spawn(|| {
            let cluster = RedisCluster::builder().replicas(0).spawn();
            *ports.lock().unwrap() = cluster.ports();
            assert_eq!(cluster.primaries().len(), 3);
            panic!("a failing test");
        })
        .join()
    });
    assert!(outcome.is_err());
    let ports = ports.into_inner().unwrap();
    assert_eq!(ports.len(), 3);
    for port in ports {
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
            "node {port} outlived the panicking test"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_key_hash_tags_co_locate_related_keys() {
    let cluster = RedisCluster::shared();
    let backend: Arc<dyn CacheBackend> = Arc::new(backend_for(cluster).await);
    let prefix = format!("tags{:08x}", fastrand::u32(..));
    let cache = Cache::builder(Arc::clone(&backend))
        .prefix(prefix.clone())
        .build()
        .unwrap();
    // A user's cart, orders and profile, tagged with the user: one slot.
    let keys: Vec<CacheKey> = ["cart", "orders", "profile"]
        .iter()
        .flat_map(|category| {
            (0..10).map(move |i| {
                CacheKey::new(category, i)
                    .unwrap()
                    .with_hash_tag("user-7")
                    .unwrap()
            })
        })
        .collect();
    for (i, key) in keys.iter().enumerate() {
        cache.set(key, &i).await.unwrap();
    }
    let holders: Vec<(u16, usize)> = cluster
        .primaries()
        .iter()
        .map(|&port| (port, keys_on(cluster, port, &format!("{prefix}:*")).len()))
        .filter(|(_, n)| *n > 0)
        .collect();
    // Only the generation keys (untagged, one per category) may live elsewhere.
    let tagged_holder = holders
        .iter()
        .find(|(port, _)| {
            keys_on(cluster, *port, &format!("{prefix}:*{{user-7}}")).len() == keys.len()
        })
        .unwrap_or_else(|| panic!("the tagged keys are not on one node: {holders:?}"));
    assert!(tagged_holder.1 >= keys.len());
    let values = cache.get_many::<usize>(&keys).await.unwrap();
    assert_eq!(values, (0..keys.len()).map(Some).collect::<Vec<_>>());
    cache.clear().await.unwrap();
}
