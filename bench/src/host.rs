//! What the host lets two threads do: whether a 2-thread figure of this
//! run can show anything about the code under test.
//!
//! A 2-thread cell reads one shared map from both threads. On some hosts
//! (seen on this project's VMs) two threads' reads of *shared* memory run
//! no faster than one thread's, while the same reads of private memory run
//! twice as fast: there every shared-map cell scales badly whatever its
//! code does, and a goal about scaling cannot be judged. The probe below
//! measures both, so the goals can tell.

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use crate::harness::median;
use crate::report::Report;
use crate::Options;

pub(crate) const GROUP: &str = "host";
/// The probe's one row.
pub(crate) const SCALING: &str = "2 threads / 1 thread, lookups in a 10k-key HashMap";
pub(crate) const PRIVATE: &str = "private memory";
pub(crate) const SHARED: &str = "shared memory";

/// The least 2-thread/1-thread ratio of reads of shared memory at which
/// the host is taken to run two threads' reads in parallel. Two cores
/// give ~2x (private memory here: 1.85-2.14x); one CPU time-sliced, or
/// the hosts described above, ~1x.
pub(crate) const MIN_SHARED_SCALING: f64 = 1.5;

/// The keys of the map, as many as the 2-thread cells read.
const KEYS: usize = 10_000;

/// What the probe's threads read: a map of the cells' size and key shape.
struct Probe {
    map: HashMap<String, u64>,
    keys: Vec<String>,
}

impl Probe {
    fn new() -> Self {
        let keys: Vec<String> = (0..KEYS).map(|i| format!("user:{i:06}")).collect();
        let map = keys.iter().cloned().zip(0..).collect();
        Probe { map, keys }
    }
}

/// Measures the 2-thread/1-thread ratio of lookups in a map of each
/// thread's own and in one shared map (read-only: nothing is written to
/// it), interleaved, and records the median of each.
pub(crate) fn run(report: &mut Report, opts: &Options) {
    let (rounds, per) = if opts.quick {
        (3, Duration::from_millis(100))
    } else {
        (5, Duration::from_millis(250))
    };
    let shared = Arc::new(Probe::new());
    let (mut private, mut common) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        private.push(reads(2, None, per) / reads(1, None, per));
        common.push(reads(2, Some(&shared), per) / reads(1, Some(&shared), per));
    }
    report.add(GROUP, SCALING, PRIVATE, "ratio", median(&mut private));
    report.add(GROUP, SCALING, SHARED, "ratio", median(&mut common));
}

/// Lookups per second of `threads` threads looking keys up for `per`: in
/// `shared` if given, else each in a map of its own (built by the thread,
/// so its pages are the thread's first touch).
fn reads(threads: usize, shared: Option<&Arc<Probe>>, per: Duration) -> f64 {
    let start = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let shared = shared.cloned();
            let start = Arc::clone(&start);
            std::thread::spawn(move || {
                let own;
                let probe: &Probe = match &shared {
                    Some(probe) => probe,
                    None => {
                        own = Probe::new();
                        &own
                    }
                };
                start.wait();
                let began = Instant::now();
                let (mut n, mut j) = (0u64, t * 7);
                while began.elapsed() < per {
                    for _ in 0..1024 {
                        j = (j + 7919) % KEYS;
                        black_box(probe.map.get(&probe.keys[j]));
                    }
                    n += 1024;
                }
                n as f64 / began.elapsed().as_secs_f64()
            })
        })
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().expect("a probe thread"))
        .sum()
}

/// The CPU time of the whole host, from `/proc/stat` (Linux): how much of
/// it the hypervisor took (steal) while the run went on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CpuTimes {
    total: u64,
    steal: u64,
}

impl CpuTimes {
    /// Now; `None` where `/proc/stat` cannot be read.
    pub(crate) fn read() -> Option<Self> {
        Self::parse(&std::fs::read_to_string("/proc/stat").ok()?)
    }

    fn parse(stat: &str) -> Option<Self> {
        let line = stat.lines().find(|l| l.starts_with("cpu "))?;
        let fields: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .map(|f| f.parse().unwrap_or(0))
            .collect();
        // user nice system idle iowait irq softirq steal (guest time is
        // already inside user and nice).
        let counted = fields.get(..8)?;
        Some(CpuTimes {
            total: counted.iter().sum(),
            steal: counted[7],
        })
    }

    /// The share of the CPU time since `earlier` that was stolen, in %.
    pub(crate) fn steal_since(&self, earlier: &CpuTimes) -> Option<f64> {
        let total = self.total.checked_sub(earlier.total)?;
        let steal = self.steal.checked_sub(earlier.steal)?;
        (total > 0).then(|| steal as f64 * 100.0 / total as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steal_is_the_share_of_the_cpu_time_between_two_readings() {
        let before = CpuTimes::parse("cpu  100 0 50 800 10 0 5 35 0 0\ncpu0 1 2 3\n").unwrap();
        let after = CpuTimes::parse("cpu  200 0 100 1500 10 0 5 185 0 0\n").unwrap();
        // 1,000 ticks in all, 150 of them stolen.
        assert_eq!(after.steal_since(&before), Some(15.0));
        assert_eq!(before.steal_since(&after), None);
        assert!(CpuTimes::parse("cpu0 1 2 3 4 5 6 7 8\n").is_none());
        assert!(CpuTimes::parse("cpu  1 2 3\n").is_none());
    }
}
