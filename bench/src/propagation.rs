//! Propagation: how long after another instance's write the reader's L1
//! copy is gone, with the pub/sub backplane (`RedisBackplane`) and with
//! client tracking (`RedisTracking`), in the same run, on one private
//! `redis-server` on loopback.
//!
//! Per mechanism: a writer and a reader, each a `Tiered` (memory L1 over
//! its own `RedisBackend`) with its own subscription; their keys have
//! different prefixes, so neither mechanism sees the other's traffic. One
//! round: the reader reads the key until its L1 holds a copy; the clock
//! starts; the writer `set`s the key (pub/sub: `SET`, then `PUBLISH` once
//! it is stored; tracking: `SET` only, the server tells the reader); the
//! reader's subscription reports the event (a thin wrapper around its
//! backplane signals after handing the event to `Tiered`, so nobody
//! busy-waits meanwhile); then the L1 is checked until the copy is gone;
//! the clock stops. Rounds alternate between the mechanisms, so drift of
//! the machine hits both alike. A round whose event does not arrive within
//! 2 s counts as lost (not in the percentiles).

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use cache_core::layers::{Tiered, TieredConfig};
use cache_core::{Backplane, BackplaneEvent, BackplaneMessage, CacheBackend, SetOptions};
use cache_memory::MemoryBackend;
use cache_redis::{RedisBackend, RedisBackplane, RedisTracking};
use cache_testkit::redis_server::RedisServer;
use tokio::sync::mpsc;

use crate::harness::ready;
use crate::report::Report;
use crate::Options;

pub(crate) const GROUP: &str = "propagation";
/// The baseline column.
pub(crate) const PUBSUB: &str = "pub/sub backplane";
const TRACKING: &str = "client tracking (BCAST)";
const METRIC: &str = "latency_us";
/// A round whose event takes longer is lost.
const LOST_AFTER: Duration = Duration::from_secs(2);

/// A backplane that signals each event once it handed it on.
struct Observed {
    inner: Arc<dyn Backplane>,
    seen: mpsc::UnboundedSender<()>,
}

#[async_trait]
impl Backplane for Observed {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    async fn publish(&self, message: &BackplaneMessage) -> cache_core::Result<()> {
        self.inner.publish(message).await
    }

    async fn subscribe(&self) -> cache_core::Result<mpsc::Receiver<BackplaneEvent>> {
        let mut events = self.inner.subscribe().await?;
        let (tx, rx) = mpsc::channel(1024);
        let seen = self.seen.clone();
        tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                if tx.send(event).await.is_err() {
                    return;
                }
                let _ = seen.send(());
            }
        });
        Ok(rx)
    }
}

/// One mechanism's writer and reader.
struct Pair {
    name: &'static str,
    key: String,
    writer: Tiered,
    reader: Tiered,
    reader_l1: Arc<MemoryBackend>,
    seen: mpsc::UnboundedReceiver<()>,
    samples: Vec<f64>,
    lost: usize,
}

async fn tier(url: &str, l1: Arc<MemoryBackend>, backplane: Arc<dyn Backplane>) -> Tiered {
    Tiered::new(
        l1,
        Arc::new(RedisBackend::from_url(url).await.expect("connects")),
        TieredConfig::default().with_l1_max_ttl(Duration::from_secs(600)),
    )
    .with_backplane(backplane)
    .await
    .expect("subscribes")
}

async fn pair(name: &'static str, url: &str, prefix: &str) -> Pair {
    let backplane = || async {
        let backplane: Arc<dyn Backplane> = if name == PUBSUB {
            Arc::new(
                RedisBackplane::connect(url, format!("{prefix}:invalidations"))
                    .await
                    .expect("backplane"),
            )
        } else {
            Arc::new(RedisTracking::from_url(url, prefix).expect("tracking"))
        };
        backplane
    };
    let (seen_tx, seen) = mpsc::unbounded_channel();
    let writer = tier(url, Arc::new(MemoryBackend::new()), backplane().await).await;
    let reader_l1 = Arc::new(MemoryBackend::new());
    let observed = Arc::new(Observed {
        inner: backplane().await,
        seen: seen_tx,
    });
    let reader = tier(url, Arc::clone(&reader_l1), observed).await;
    let key = format!("{prefix}:user:1");
    writer
        .set(&key, b"0".to_vec().into(), SetOptions::default())
        .await
        .expect("set");
    Pair {
        name,
        key,
        writer,
        reader,
        reader_l1,
        seen,
        samples: Vec::new(),
        lost: 0,
    }
}

impl Pair {
    /// One round; `value` differs from the previous round's.
    async fn round(&mut self, value: u64) {
        // The reader's L1 holds a copy (the first read after a write
        // copies it from Redis).
        let deadline = Instant::now() + LOST_AFTER;
        while !ready(self.reader_l1.exists(&self.key)).unwrap_or(false) {
            let _ = self.reader.get(&self.key).await;
            if Instant::now() > deadline {
                self.lost += 1;
                return;
            }
        }
        while self.seen.try_recv().is_ok() {}
        let started = Instant::now();
        self.writer
            .set(
                &self.key,
                value.to_string().into_bytes().into(),
                SetOptions::default(),
            )
            .await
            .expect("set");
        'dropped: loop {
            match tokio::time::timeout(LOST_AFTER, self.seen.recv()).await {
                Ok(Some(())) => {}
                _ => {
                    self.lost += 1;
                    return;
                }
            }
            // Handed to the Tiered: the drop follows within microseconds,
            // or this event was another one: wait for the next.
            let handed = Instant::now();
            while handed.elapsed() < Duration::from_millis(50) {
                if !ready(self.reader_l1.exists(&self.key)).unwrap_or(true) {
                    break 'dropped;
                }
                std::hint::spin_loop();
            }
        }
        self.samples.push(started.elapsed().as_secs_f64() * 1e6);
    }
}

/// The `p`-quantile (nearest rank) of sorted `values`.
fn quantile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Runs the group.
pub(crate) fn run(report: &mut Report, opts: &Options) {
    let have_server = std::process::Command::new("redis-server")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !have_server {
        eprintln!(
            "skipping {GROUP}: redis-server not found \
             (install it with `sudo apt-get install -y redis-server`)"
        );
        return;
    }
    let rounds = if opts.quick { 200 } else { 1000 };
    let server = RedisServer::builder()
        .args(["--save", "", "--appendonly", "no"])
        .spawn();
    let url = server.url().to_owned();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let pairs = rt.block_on(async {
        let mut pairs = [
            pair(PUBSUB, &url, "prop-pubsub").await,
            pair(TRACKING, &url, "prop-tracking").await,
        ];
        // Warm-up: connections, allocations.
        for i in 0..20 {
            for p in &mut pairs {
                p.round(i).await;
            }
        }
        for p in &mut pairs {
            if p.samples.is_empty() {
                eprintln!(
                    "{GROUP}: {}: no event arrived in the warm-up, skipping",
                    p.name
                );
                return None;
            }
            p.samples.clear();
            p.lost = 0;
        }
        for i in 0..rounds {
            // Alternate which mechanism goes first.
            let order = if i % 2 == 0 { [0, 1] } else { [1, 0] };
            for k in order {
                pairs[k].round(1000 + i).await;
            }
        }
        Some(pairs)
    });
    let Some(pairs) = pairs else {
        return;
    };
    for mut p in pairs {
        p.samples.sort_by(f64::total_cmp);
        let s = &p.samples;
        report.add(
            GROUP,
            "write -> L1 drop p50",
            p.name,
            METRIC,
            quantile(s, 0.50),
        );
        report.add(
            GROUP,
            "write -> L1 drop p99",
            p.name,
            METRIC,
            quantile(s, 0.99),
        );
        report.add(
            GROUP,
            "write -> L1 drop max",
            p.name,
            METRIC,
            quantile(s, 1.0),
        );
        report.note(
            GROUP,
            format!("{}: {} rounds timed, {} lost", p.name, s.len(), p.lost),
        );
    }
    report.note(
        GROUP,
        "microseconds from the writer's set() call to the reader's L1 copy being gone; \
         one writer and one reader Tiered per mechanism, loopback redis-server, rounds alternated",
    );
    drop(server);
}
