//! Cluster mode: batches grouped by node, scans over every primary, health
//! of every node.
//!
//! Single-key calls need nothing special: the redis crate's cluster
//! connection sends each command to the node that owns its key's slot and
//! follows `MOVED`/`ASK` redirections and topology changes itself. What it
//! does not do is batch by node: a multi-slot `MGET` becomes one command per
//! slot, each sent on its own, and a pipeline must stay within one slot.
//! So this module keeps its own copy of the slot map (`CLUSTER SLOTS`) and,
//! for `get_many`/`set_many`/`delete_many`, sends one pipeline per node
//! (holding one `MGET`/`UNLINK` per slot, or one `SET` per key), the nodes
//! in parallel. Whatever fails in a node's pipeline (its slot moved, the
//! node failed over) is sent again command by command through the client's
//! own routing, which follows the cluster, and the map is refreshed before
//! the next batch.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cache_core::{Error, ErrorKind, Health, HealthStatus, Result};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::{Cmd, IntoConnectionInfo, RedisError, RedisResult, Value};
use tokio::task::JoinSet;

use crate::config::RedisConfig;
use crate::core::{info_field, set_command, Conn, Core, SCAN_COUNT};
use crate::error::{connect_error, map_error};

/// The number of hash slots of a Redis Cluster.
pub(crate) const SLOTS: u16 = 16384;

/// The least and most the client waits between two retries of a command
/// (during a failover or a slot migration), in ms. The crate's defaults
/// (over a second) are longer than a cache's whole time budget.
const MIN_RETRY_WAIT_MS: u64 = 10;
const MAX_RETRY_WAIT_MS: u64 = 200;

/// Opens `config.pool_size()` cluster connections and reads the slot map.
pub(crate) async fn connect(
    config: &RedisConfig,
) -> Result<(Vec<ClusterConnection>, ClusterState)> {
    let target = config.target();
    let (nodes, redis_settings) = config.cluster_parts()?;
    let mut infos = Vec::with_capacity(nodes.len());
    for (host, port) in nodes {
        let info = config
            .node_addr(&host, port)
            .into_connection_info()
            .map_err(|e| connect_error(e, &target))?
            .set_redis_settings(redis_settings.clone());
        infos.push(info);
    }
    let mut builder = ClusterClientBuilder::new(infos)
        .connection_timeout(config.connect_timeout())
        .response_timeout(config.response_timeout())
        .min_retry_wait(MIN_RETRY_WAIT_MS)
        .max_retry_wait(MAX_RETRY_WAIT_MS);
    if let Some(username) = redis_settings.username() {
        builder = builder.username(username);
    }
    if let Some(password) = redis_settings.password() {
        builder = builder.password(password);
    }
    if config.reads_from_replicas() {
        builder = builder.read_routing_strategy(redis::cluster_read_routing::RandomReplicaStrategy);
    }
    #[cfg(feature = "tls")]
    if config.uses_tls() {
        builder = builder.tls(redis::TlsMode::Secure);
        if let Some(certs) = config.tls_certificates()? {
            builder = builder.certs(certs);
        }
    }
    let client = builder.build().map_err(|e| connect_error(e, &target))?;
    let open_all = async {
        let mut connections = Vec::with_capacity(config.pool_size());
        for _ in 0..config.pool_size() {
            connections.push(client.get_async_connection().await?);
        }
        let map = SlotMap::fetch(&mut connections[0]).await?;
        RedisResult::Ok((connections, map))
    };
    let (connections, map) = crate::core::within_connect_timeout(config, &target, open_all).await?;
    tracing::debug!(%target, primaries = map.primaries.len(), "read the cluster's slot map");
    let state = ClusterState {
        map: RwLock::new(Arc::new(map)),
        stale: AtomicBool::new(false),
    };
    Ok((connections, state))
}

/// The slot of `key`: CRC16 (XMODEM) of the key, or of its hash tag (the
/// first non-empty `{…}`), modulo 16384, as Redis Cluster computes it.
pub(crate) fn key_slot(key: &[u8]) -> u16 {
    let hashed = key
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            let close = rest.iter().position(|&b| b == b'}')?;
            (close > 0).then(|| &rest[..close])
        })
        .unwrap_or(key);
    crc16(hashed) % SLOTS
}

fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in data {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// A node's address.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Node {
    host: String,
    port: u16,
}

impl std::fmt::Display for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// Which primary owns each slot, as `CLUSTER SLOTS` said.
#[derive(Debug, Default)]
struct SlotMap {
    /// For each slot, the index of its primary in `primaries`, or
    /// `u16::MAX` when no node serves it.
    owner: Vec<u16>,
    primaries: Vec<Node>,
    /// Each primary's replicas, by primary index.
    replicas: Vec<Vec<Node>>,
}

impl SlotMap {
    async fn fetch(conn: &mut ClusterConnection) -> RedisResult<SlotMap> {
        let reply: Value = redis::cmd("CLUSTER").arg("SLOTS").query_async(conn).await?;
        SlotMap::parse(reply)
    }

    fn parse(reply: Value) -> RedisResult<SlotMap> {
        let bad = || RedisError::from((redis::ErrorKind::Parse, "unexpected CLUSTER SLOTS reply"));
        let Value::Array(ranges) = reply else {
            return Err(bad());
        };
        let mut map = SlotMap {
            owner: vec![u16::MAX; usize::from(SLOTS)],
            ..SlotMap::default()
        };
        let mut index: HashMap<Node, u16> = HashMap::new();
        for range in ranges {
            let Value::Array(items) = range else {
                return Err(bad());
            };
            let mut items = items.into_iter();
            let (Some(Value::Int(start)), Some(Value::Int(end))) = (items.next(), items.next())
            else {
                return Err(bad());
            };
            let nodes: Vec<Node> = items.filter_map(parse_node).collect();
            let Some(primary) = nodes.first() else {
                continue;
            };
            let i = match index.get(primary) {
                Some(i) => *i,
                None => {
                    let i = u16::try_from(map.primaries.len()).map_err(|_| bad())?;
                    index.insert(primary.clone(), i);
                    map.primaries.push(primary.clone());
                    map.replicas.push(Vec::new());
                    i
                }
            };
            for replica in &nodes[1..] {
                let replicas = &mut map.replicas[usize::from(i)];
                if !replicas.contains(replica) {
                    replicas.push(replica.clone());
                }
            }
            let (Ok(start), Ok(end)) = (usize::try_from(start), usize::try_from(end)) else {
                return Err(bad());
            };
            for slot in start..=end.min(usize::from(SLOTS) - 1) {
                map.owner[slot] = i;
            }
        }
        Ok(map)
    }

    fn owner_of(&self, slot: u16) -> Option<u16> {
        self.owner
            .get(usize::from(slot))
            .copied()
            .filter(|&i| i != u16::MAX)
    }

    /// The first slot each primary owns, by primary index.
    fn first_slots(&self) -> Vec<Option<u16>> {
        let mut first = vec![None; self.primaries.len()];
        for (slot, &owner) in self.owner.iter().enumerate() {
            if let Some(entry) = first.get_mut(usize::from(owner)) {
                if entry.is_none() {
                    *entry = u16::try_from(slot).ok();
                }
            }
        }
        first
    }

    /// Slot ranges of primary `i`, as `0-5460,10923`.
    fn ranges_of(&self, i: u16) -> String {
        let mut ranges = Vec::new();
        let mut start: Option<usize> = None;
        for slot in 0..=self.owner.len() {
            let owned = self.owner.get(slot) == Some(&i);
            match (owned, start) {
                (true, None) => start = Some(slot),
                (false, Some(s)) => {
                    ranges.push(if s + 1 == slot {
                        s.to_string()
                    } else {
                        format!("{s}-{}", slot - 1)
                    });
                    start = None;
                }
                _ => {}
            }
        }
        ranges.join(",")
    }
}

fn parse_node(value: Value) -> Option<Node> {
    let Value::Array(fields) = value else {
        return None;
    };
    let mut fields = fields.into_iter();
    let host = match fields.next()? {
        Value::BulkString(host) => String::from_utf8(host).ok()?,
        Value::SimpleString(host) => host,
        _ => return None,
    };
    let port = match fields.next()? {
        Value::Int(port) => u16::try_from(port).ok()?,
        _ => return None,
    };
    // A node that does not know its own address answers with "".
    (!host.is_empty()).then_some(Node { host, port })
}

/// The cluster side of a [`RedisBackend`](crate::RedisBackend): its copy of
/// the slot map.
pub(crate) struct ClusterState {
    map: RwLock<Arc<SlotMap>>,
    /// Something failed because the map may be out of date: read it again
    /// before the next batch.
    stale: AtomicBool,
}

/// A command whose keys are all in `slot`, and how to do it key by key.
struct SlotCommand {
    slot: u16,
    cmd: Cmd,
    /// Single-key commands that together do what `cmd` does.
    fallback: Vec<Cmd>,
    /// How the fallback's replies make `cmd`'s reply.
    combine: Combine,
}

/// How single-key replies make a multi-key command's reply.
#[derive(Clone, Copy)]
enum Combine {
    /// The one reply (a single-key command).
    Single,
    /// An array of the replies (`MGET` from `GET`s).
    Array,
    /// The sum of integer replies (`UNLINK` from `UNLINK`s).
    Sum,
}

impl Combine {
    fn apply(self, values: impl Iterator<Item = Value>) -> RedisResult<Value> {
        Ok(match self {
            Combine::Single => values.last().unwrap_or(Value::Nil),
            Combine::Array => Value::Array(values.collect()),
            Combine::Sum => {
                let mut sum = 0;
                for value in values {
                    sum += redis::from_redis_value::<i64>(value)?;
                }
                Value::Int(sum)
            }
        })
    }
}

/// Commands for one node: indices into the caller's command list.
struct NodeBatch {
    /// A slot the node owns, for the client's routing.
    slot: u16,
    commands: Vec<usize>,
}

impl ClusterState {
    fn snapshot(&self) -> Arc<SlotMap> {
        Arc::clone(&self.map.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Reads the slot map again.
    async fn refresh(&self, core: &Core, op: &'static str) -> Result<Arc<SlotMap>> {
        let mut conn = cluster_connection(core, op)?;
        let map = Arc::new(core.bounded(op, SlotMap::fetch(&mut conn)).await?);
        *self.map.write().unwrap_or_else(|p| p.into_inner()) = Arc::clone(&map);
        self.stale.store(false, Ordering::Release);
        Ok(map)
    }

    /// The slot map, read again first when the last batch saw it was out
    /// of date (a failure to re-read it is not this call's failure).
    async fn current(&self, core: &Core, op: &'static str) -> Arc<SlotMap> {
        if self.stale.load(Ordering::Acquire) {
            if let Ok(map) = self.refresh(core, op).await {
                return map;
            }
        }
        self.snapshot()
    }

    /// Runs `commands` as one pipeline per node, the nodes in parallel;
    /// returns each command's reply, in order.
    ///
    /// A node whose pipeline fails, and any command that answers with an
    /// error, is sent again as its single-key parts (`fallback`), each
    /// routed by the client, which follows `MOVED`/`ASK` (a multi-key
    /// command on a slot being migrated answers `TRYAGAIN` until the move
    /// ends; single-key commands do not) and refreshes its own map; the
    /// parts' replies are combined into the shape of the whole command's.
    /// The slot map here is then marked for a refresh. An error on that
    /// second try is the call's error.
    async fn run_per_node(
        &self,
        core: &Core,
        op: &'static str,
        commands: Vec<SlotCommand>,
    ) -> Result<Vec<Value>> {
        let map = self.current(core, op).await;
        let conn = cluster_connection(core, op)?;
        let commands = Arc::new(commands);

        // Group by the owning node; a slot nobody owns (per this map) gets
        // its own batch and lets the client route it.
        let mut by_node: BTreeMap<u32, NodeBatch> = BTreeMap::new();
        for (i, command) in commands.iter().enumerate() {
            let group = match map.owner_of(command.slot) {
                Some(owner) => u32::from(owner),
                None => u32::from(u16::MAX) + 1 + u32::from(command.slot),
            };
            by_node
                .entry(group)
                .or_insert_with(|| NodeBatch {
                    slot: command.slot,
                    commands: Vec::new(),
                })
                .commands
                .push(i);
        }

        let run = async {
            let mut replies: Vec<Option<Value>> = vec![None; commands.len()];
            let mut retry: Vec<usize> = Vec::new();
            let mut tasks = JoinSet::new();
            for batch in by_node.into_values() {
                let mut conn = conn.clone();
                let commands = Arc::clone(&commands);
                tasks.spawn(async move {
                    let mut pipeline = redis::pipe();
                    for &i in &batch.commands {
                        pipeline.add_command(commands[i].cmd.clone());
                    }
                    let route = SingleNodeRoutingInfo::SpecificNode(Route::new(
                        batch.slot,
                        SlotAddr::Master,
                    ));
                    let count = batch.commands.len();
                    let result = conn.route_pipeline(pipeline, 0, count, route).await;
                    (batch.commands, result)
                });
            }
            while let Some(joined) = tasks.join_next().await {
                let (indices, result) = joined.map_err(join_error)?;
                match result {
                    Ok(values) if values.len() == indices.len() => {
                        for (i, value) in indices.into_iter().zip(values) {
                            if matches!(value, Value::ServerError(_)) {
                                retry.push(i);
                            } else {
                                replies[i] = Some(value);
                            }
                        }
                    }
                    Ok(_) | Err(_) => retry.extend(indices),
                }
            }

            if !retry.is_empty() {
                self.stale.store(true, Ordering::Release);
                // One task per failed command, its parts in order: the
                // client answers `ASK` with `ASKING` and the command as two
                // separate requests on a multiplexed connection, so many
                // concurrent redirected requests to one node can interleave
                // and lose the `ASKING` (seen with redis 1.8).
                let mut tasks = JoinSet::new();
                for i in retry {
                    let mut conn = conn.clone();
                    let commands = Arc::clone(&commands);
                    tasks.spawn(async move {
                        let command = &commands[i];
                        let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(
                            Route::new(command.slot, SlotAddr::Master),
                        ));
                        let mut values = Vec::with_capacity(command.fallback.len());
                        for cmd in &command.fallback {
                            let value = conn
                                .route_command(cmd.clone(), route.clone())
                                .await
                                .and_then(|v| v.extract_error())?;
                            values.push(value);
                        }
                        let reply = command.combine.apply(values.into_iter())?;
                        RedisResult::Ok((i, reply))
                    });
                }
                while let Some(joined) = tasks.join_next().await {
                    let (i, reply) = joined.map_err(join_error)??;
                    replies[i] = Some(reply);
                }
            }
            Ok(replies
                .into_iter()
                .map(|v| v.unwrap_or(Value::Nil))
                .collect())
        };
        core.bounded(op, run).await
    }

    /// `MGET` per slot, one pipeline per node.
    pub(crate) async fn get_many(&self, core: &Core, keys: &[&str]) -> Result<Vec<Option<Bytes>>> {
        let mut by_slot: BTreeMap<u16, Vec<usize>> = BTreeMap::new();
        for (i, key) in keys.iter().enumerate() {
            by_slot.entry(key_slot(key.as_bytes())).or_default().push(i);
        }
        let mut order = Vec::with_capacity(by_slot.len());
        let mut commands = Vec::with_capacity(by_slot.len());
        for (slot, indices) in by_slot {
            let mut cmd = redis::cmd("MGET");
            let mut fallback = Vec::with_capacity(indices.len());
            for &i in &indices {
                cmd.arg(keys[i]);
                fallback.push(redis::cmd("GET").arg(keys[i]).clone());
            }
            commands.push(SlotCommand {
                slot,
                cmd,
                fallback,
                combine: Combine::Array,
            });
            order.push(indices);
        }
        let replies = self.run_per_node(core, "get_many", commands).await?;
        let mut out: Vec<Option<Bytes>> = vec![None; keys.len()];
        for (indices, reply) in order.into_iter().zip(replies) {
            let values: Vec<Option<Vec<u8>>> = redis::from_redis_value(reply)
                .map_err(|e| map_error(RedisError::from(e), "get_many"))?;
            if values.len() != indices.len() {
                return Err(
                    Error::new(ErrorKind::Backend, "MGET answered with the wrong count")
                        .with_backend("redis")
                        .with_operation("get_many"),
                );
            }
            for (i, value) in indices.into_iter().zip(values) {
                out[i] = value.map(Bytes::from);
            }
        }
        Ok(out)
    }

    /// One `SET … PX` per key, one pipeline per node.
    pub(crate) async fn set_many(
        &self,
        core: &Core,
        items: &[(&str, Bytes)],
        ttl: Option<Duration>,
    ) -> Result<()> {
        let commands = items
            .iter()
            .map(|(key, value)| {
                let cmd = set_command(key, value, ttl);
                SlotCommand {
                    slot: key_slot(key.as_bytes()),
                    fallback: vec![cmd.clone()],
                    cmd,
                    combine: Combine::Single,
                }
            })
            .collect();
        self.run_per_node(core, "set_many", commands).await?;
        Ok(())
    }

    /// `UNLINK` per slot, one pipeline per node; how many keys existed.
    ///
    /// Exact unless a node fails over or a slot moves during the call: then
    /// the part sent again may count keys the first try already removed as
    /// missing.
    pub(crate) async fn unlink<K: AsRef<[u8]>>(
        &self,
        core: &Core,
        op: &'static str,
        keys: &[K],
    ) -> Result<u64> {
        let mut by_slot: BTreeMap<u16, SlotCommand> = BTreeMap::new();
        for key in keys {
            let key = key.as_ref();
            let slot = key_slot(key);
            let command = by_slot.entry(slot).or_insert_with(|| SlotCommand {
                slot,
                cmd: redis::cmd("UNLINK"),
                fallback: Vec::new(),
                combine: Combine::Sum,
            });
            command.cmd.arg(key);
            command.fallback.push(redis::cmd("UNLINK").arg(key).clone());
        }
        let replies = self
            .run_per_node(core, op, by_slot.into_values().collect())
            .await?;
        let mut removed = 0;
        for reply in replies {
            let n: u64 =
                redis::from_redis_value(reply).map_err(|e| map_error(RedisError::from(e), op))?;
            removed += n;
        }
        Ok(removed)
    }

    /// Where to send `SCAN` for every primary: the slot map is read first,
    /// so a primary promoted by a failover is included. Routing by a slot
    /// the primary owns sends every page to that primary (the one the
    /// client's own map names for the slot).
    async fn primary_routes(
        &self,
        core: &Core,
        op: &'static str,
    ) -> Result<Vec<(Node, RoutingInfo)>> {
        let map = self.refresh(core, op).await?;
        Ok(map
            .primaries
            .iter()
            .zip(map.first_slots())
            .filter_map(|(primary, slot)| {
                let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(
                    Route::new(slot?, SlotAddr::Master),
                ));
                Some((primary.clone(), route))
            })
            .collect())
    }

    /// One `SCAN cursor MATCH pattern COUNT …` on one primary.
    async fn scan_page(
        core: &Core,
        conn: &mut ClusterConnection,
        op: &'static str,
        route: &RoutingInfo,
        pattern: &str,
        cursor: u64,
    ) -> Result<(u64, Vec<Vec<u8>>)> {
        let mut cmd = redis::cmd("SCAN");
        cmd.arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(SCAN_COUNT);
        let reply = core
            .bounded(op, conn.route_command(cmd, route.clone()))
            .await?;
        redis::from_redis_value(reply).map_err(|e| map_error(RedisError::from(e), op))
    }

    /// Every key matching `pattern`, from every primary.
    pub(crate) async fn scan(&self, core: &Core, pattern: &str) -> Result<Vec<String>> {
        let mut conn = cluster_connection(core, "scan")?;
        let mut found = Vec::new();
        for (_, route) in self.primary_routes(core, "scan").await? {
            let mut cursor = 0;
            loop {
                let (next, keys) =
                    Self::scan_page(core, &mut conn, "scan", &route, pattern, cursor).await?;
                found.extend(keys.into_iter().filter_map(|k| String::from_utf8(k).ok()));
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        found.sort_unstable();
        found.dedup();
        Ok(found)
    }

    /// `SCAN` every primary, `UNLINK` each page; how many keys were removed.
    pub(crate) async fn unlink_matching(
        &self,
        core: &Core,
        op: &'static str,
        pattern: &str,
    ) -> Result<u64> {
        let mut conn = cluster_connection(core, op)?;
        let mut removed = 0;
        for (node, route) in self.primary_routes(core, op).await? {
            let mut cursor = 0;
            loop {
                let (next, keys) =
                    Self::scan_page(core, &mut conn, op, &route, pattern, cursor).await?;
                tracing::trace!(%node, found = keys.len(), "SCAN page");
                if !keys.is_empty() {
                    removed += self.unlink(core, op, &keys).await?;
                }
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        Ok(removed)
    }

    /// The health of every node: `INFO` from each node the cluster knows,
    /// `CLUSTER INFO` for the cluster's own verdict.
    ///
    /// Healthy when every node answers and the cluster state is `ok`;
    /// degraded when some node is failed or does not answer but every slot
    /// is served; unhealthy when the cluster state is not `ok` or a primary
    /// does not answer.
    pub(crate) async fn health(&self, core: &Core, target: &str) -> Result<Health> {
        let started = Instant::now();
        let map = self.refresh(core, "health").await?;
        let latency = started.elapsed();
        let mut conn = cluster_connection(core, "health")?;
        let info: String = core
            .bounded(
                "health",
                redis::cmd("CLUSTER").arg("INFO").query_async(&mut conn),
            )
            .await?;
        let cluster_state = info_field(&info, "cluster_state")
            .unwrap_or("unknown")
            .to_owned();
        let known_nodes = info_field(&info, "cluster_known_nodes")
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap_or(0);

        let mut nodes: Vec<(Node, Option<u16>)> = Vec::new();
        for (i, primary) in map.primaries.iter().enumerate() {
            let i = u16::try_from(i).unwrap_or(u16::MAX);
            nodes.push((primary.clone(), Some(i)));
            nodes.extend(
                map.replicas[usize::from(i)]
                    .iter()
                    .map(|r| (r.clone(), None)),
            );
        }
        let mut tasks = JoinSet::new();
        for (node, primary) in nodes.iter().cloned() {
            let mut conn = conn.clone();
            let limit = core.response_timeout();
            tasks.spawn(async move {
                let started = Instant::now();
                let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                    host: node.host.clone(),
                    port: node.port,
                });
                let reply =
                    tokio::time::timeout(limit, conn.route_command(redis::cmd("INFO"), route))
                        .await;
                let outcome = match reply {
                    Ok(Ok(value)) => redis::from_redis_value::<String>(value)
                        .map(|info| (started.elapsed(), info))
                        .map_err(|e| e.to_string()),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err(format!("no answer within {} ms", limit.as_millis())),
                };
                (node, primary, outcome)
            });
        }
        let mut status = if cluster_state == "ok" {
            HealthStatus::Healthy
        } else {
            HealthStatus::Unhealthy
        };
        let mut reports = Vec::new();
        let mut answering = 0;
        while let Some(joined) = tasks.join_next().await {
            let (node, primary, outcome) =
                joined.map_err(|e| map_error(join_error(e), "health"))?;
            let role = match primary {
                Some(i) => format!("primary of slots {}", map.ranges_of(i)),
                None => "replica".to_owned(),
            };
            let report = match outcome {
                Ok((took, info)) => {
                    answering += 1;
                    format!(
                        "{role}; {} µs; used_memory {}; keys {}",
                        took.as_micros(),
                        info_field(&info, "used_memory_human").unwrap_or("?"),
                        info_field(&info, "db0")
                            .and_then(|db| db.split(',').next())
                            .and_then(|k| k.strip_prefix("keys="))
                            .unwrap_or("0"),
                    )
                }
                Err(e) => {
                    status = if primary.is_some() {
                        HealthStatus::Unhealthy
                    } else if status == HealthStatus::Healthy {
                        HealthStatus::Degraded
                    } else {
                        status
                    };
                    format!("{role}; not answering: {e}")
                }
            };
            reports.push((node, report));
        }
        // Nodes the cluster still knows but that serve nothing (a failed
        // primary after its failover) are not in the slot map.
        if known_nodes > nodes.len() && status == HealthStatus::Healthy {
            status = HealthStatus::Degraded;
        }
        reports.sort();
        let replicas: usize = map.replicas.iter().map(Vec::len).sum();
        let mut health = Health::new(status, latency)
            .with_detail("target", target)
            .with_detail("mode", "cluster")
            .with_detail("cluster_state", &cluster_state)
            .with_detail("primaries", map.primaries.len())
            .with_detail("replicas", replicas)
            .with_detail("known_nodes", known_nodes)
            .with_detail("answering_nodes", answering);
        for (node, report) in reports {
            health = health.with_detail(format!("node {node}"), report);
        }
        Ok(health)
    }
}

fn cluster_connection(core: &Core, op: &'static str) -> Result<ClusterConnection> {
    match core.connection(op)? {
        Conn::Cluster(conn) => Ok(conn),
        #[allow(unreachable_patterns)]
        _ => Err(Error::new(ErrorKind::Backend, "not a cluster connection")
            .with_backend("redis")
            .with_operation(op)),
    }
}

fn join_error(e: tokio::task::JoinError) -> RedisError {
    RedisError::from(std::io::Error::other(format!("a batch task failed: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_match_redis() {
        // Values from `CLUSTER KEYSLOT`.
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"bar"), 5061);
        assert_eq!(key_slot(b"123456789"), 12739);
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        assert_eq!(key_slot(b"app:{t42}:a"), key_slot(b"t42"));
        // An empty tag is no tag; only the first `{` counts.
        assert_eq!(key_slot(b"{}x"), crc16(b"{}x") % SLOTS);
        assert_eq!(key_slot(b"a{b}{c}"), key_slot(b"b"));
        assert_eq!(key_slot(b"a{{b}}"), key_slot(b"{b"));
    }

    #[test]
    fn parses_cluster_slots() {
        let node = |host: &str, port: i64| {
            Value::Array(vec![
                Value::BulkString(host.as_bytes().to_vec()),
                Value::Int(port),
                Value::BulkString(b"id".to_vec()),
            ])
        };
        let reply = Value::Array(vec![
            Value::Array(vec![
                Value::Int(0),
                Value::Int(5460),
                node("127.0.0.1", 7000),
                node("127.0.0.1", 7003),
            ]),
            Value::Array(vec![
                Value::Int(5461),
                Value::Int(16383),
                node("127.0.0.1", 7001),
            ]),
            Value::Array(vec![
                Value::Int(5461),
                Value::Int(5461),
                node("127.0.0.1", 7000),
            ]),
        ]);
        let map = SlotMap::parse(reply).unwrap();
        assert_eq!(map.primaries.len(), 2);
        assert_eq!(map.owner_of(0), Some(0));
        assert_eq!(map.owner_of(5461), Some(0));
        assert_eq!(map.owner_of(5462), Some(1));
        assert_eq!(
            map.replicas[0],
            vec![Node {
                host: "127.0.0.1".into(),
                port: 7003
            }]
        );
        assert_eq!(map.first_slots(), vec![Some(0), Some(5462)]);
        assert_eq!(map.ranges_of(0), "0-5461");
        assert_eq!(map.ranges_of(1), "5462-16383");
    }
}
