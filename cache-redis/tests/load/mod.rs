//! Concurrent load for the failover tests: callers doing `set` + `get` on
//! random keys, each call's outcome recorded with its time.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cache_core::{CacheBackend, SetOptions};

/// One call: when it ended, on which key, and its error kind if it failed.
#[derive(Debug, Clone)]
pub(crate) struct Call {
    pub(crate) at: Instant,
    pub(crate) key: String,
    pub(crate) error: Option<String>,
}

pub(crate) struct Load {
    stop: Arc<AtomicBool>,
    calls: Arc<Mutex<Vec<Call>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    /// Starts `callers` tasks looping over random keys until stopped.
    pub(crate) fn start(backend: Arc<dyn CacheBackend>, keys: Vec<String>, callers: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let calls = Arc::new(Mutex::new(Vec::new()));
        let keys = Arc::new(keys);
        let tasks = (0..callers)
            .map(|_| {
                let (backend, stop, calls, keys) = (
                    Arc::clone(&backend),
                    Arc::clone(&stop),
                    Arc::clone(&calls),
                    Arc::clone(&keys),
                );
                tokio::spawn(async move {
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let key = &keys[fastrand::usize(..keys.len())];
                        n += 1;
                        let result = if n % 2 == 0 {
                            backend
                                .set(key, Bytes::from(n.to_string()), SetOptions::default())
                                .await
                                .map(drop)
                        } else {
                            backend.get(key).await.map(drop)
                        };
                        let failed = result.is_err();
                        calls.lock().unwrap().push(Call {
                            at: Instant::now(),
                            key: key.clone(),
                            error: result
                                .err()
                                .map(|e| format!("{:?}: {}", e.kind(), e.message())),
                        });
                        if failed {
                            // A failing call returns fast; do not spin.
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    }
                })
            })
            .collect();
        Load { stop, calls, tasks }
    }

    /// Waits until, after `since`, every call has succeeded for `stable`
    /// (or `limit` passed), then stops the load and reports.
    pub(crate) async fn stop_after_stable(
        self,
        since: Instant,
        stable: Duration,
        limit: Duration,
    ) -> Report {
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let last_error = self
                .calls
                .lock()
                .unwrap()
                .iter()
                .filter(|c| c.error.is_some())
                .map(|c| c.at)
                .max();
            let quiet_since = last_error.map_or(since, |t| t.max(since));
            if quiet_since.elapsed() >= stable || since.elapsed() > limit {
                break;
            }
        }
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            let _ = task.await;
        }
        let calls = std::mem::take(&mut *self.calls.lock().unwrap());
        Report::new(since, calls)
    }
}

pub(crate) struct Report {
    pub(crate) since: Instant,
    pub(crate) calls: Vec<Call>,
    pub(crate) ok_after_kill: usize,
}

impl Report {
    fn new(since: Instant, calls: Vec<Call>) -> Report {
        let ok_after_kill = calls
            .iter()
            .filter(|c| c.at > since && c.error.is_none())
            .count();
        Report {
            since,
            calls,
            ok_after_kill,
        }
    }

    /// From the kill to the last failed call (zero when none failed).
    pub(crate) fn window_all(&self) -> Duration {
        self.window(|_| true)
    }

    fn window(&self, filter: impl Fn(&Call) -> bool) -> Duration {
        self.calls
            .iter()
            .filter(|c| c.error.is_some() && filter(c))
            .map(|c| c.at.saturating_duration_since(self.since))
            .max()
            .unwrap_or_default()
    }

    fn first_error(&self, filter: impl Fn(&Call) -> bool) -> Option<Duration> {
        self.calls
            .iter()
            .filter(|c| c.error.is_some() && filter(c))
            .map(|c| c.at.saturating_duration_since(self.since))
            .min()
    }

    /// Prints the windows, for keys on the killed node and the others.
    pub(crate) fn print(&self, what: &str, on_victim: &BTreeSet<String>) {
        let before = self.calls.iter().filter(|c| c.at <= self.since).count();
        let after: Vec<&Call> = self.calls.iter().filter(|c| c.at > self.since).collect();
        let failed = after.iter().filter(|c| c.error.is_some()).count();
        let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
        for call in after.iter().filter_map(|c| c.error.as_ref()) {
            *kinds.entry(call.clone()).or_default() += 1;
        }
        println!(
            "{what}: {before} calls before the kill; after it {} calls, {failed} failed",
            after.len()
        );
        for (kind, n) in kinds {
            println!("  {n} x {kind}");
        }
        let victim = |c: &Call| on_victim.contains(&c.key);
        let others = |c: &Call| !on_victim.contains(&c.key);
        println!(
            "{what}: unavailability window (kill -> last failed call): all keys {:?}; \
             keys of the killed node {:?} (first failure {:?}); other keys {:?} (first failure {:?})",
            self.window_all(),
            self.window(victim),
            self.first_error(victim),
            self.window(others),
            self.first_error(others),
        );
    }
}
