//! What the host lets two threads do: whether a 2-thread figure of this
//! run can show anything about the code under test.
//!
//! A 2-thread cell reads one shared map from both threads. On some hosts
//! (seen on this project's VMs) two threads' lookups in *one* map, though
//! nothing writes to it, run at 1.1-1.3x one thread's, while lookups in
//! two maps, one each, run at ~1.9x; with the threads pinned to the two
//! CPUs the same, whichever CPU built the map. There every shared-map cell
//! scales badly whatever its code does, and a goal about scaling cannot be
//! judged. The probe below measures both, so the goals can tell.

use std::collections::HashMap;
use std::hint::black_box;

use crate::harness::{interleaved_rounds, median, ops_per_sec};
use crate::report::Report;
use crate::Options;

pub(crate) const GROUP: &str = "host";
/// The probe's one row.
pub(crate) const SCALING: &str = "2 threads / 1 thread, lookups in a 10k-key HashMap";
pub(crate) const PRIVATE: &str = "private memory";
pub(crate) const SHARED: &str = "shared memory";

/// The least 2-thread/1-thread ratio of reads of shared memory at which
/// the host is taken to run two threads' reads in parallel. Two cores
/// give ~2x (private memory on this project's VMs: 1.70-1.95x); one CPU
/// time-sliced ~1x, the hosts described above 1.1-1.3x.
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
/// it), the four cells interleaved, and records the median over rounds of
/// each round's ratio.
pub(crate) fn run(report: &mut Report, opts: &Options) {
    let (rounds, ops) = if opts.quick {
        (3, 4_000_000)
    } else {
        (5, 8_000_000)
    };
    let shared = Probe::new();
    let own = [Probe::new(), Probe::new()];
    // Cells: 0 and 1 private at 1 and 2 threads, 2 and 3 shared.
    let values = interleaved_rounds(4, rounds, |cell| {
        let threads = 1 + cell % 2;
        ops_per_sec(threads, ops, &|t, count| {
            lookups(if cell < 2 { &own[t] } else { &shared }, t, count);
        })
    });
    let scaling = |one: &[f64], two: &[f64]| {
        let mut ratios: Vec<f64> = two.iter().zip(one).map(|(two, one)| two / one).collect();
        median(&mut ratios)
    };
    report.add(
        GROUP,
        SCALING,
        PRIVATE,
        "ratio",
        scaling(&values[0], &values[1]),
    );
    report.add(
        GROUP,
        SCALING,
        SHARED,
        "ratio",
        scaling(&values[2], &values[3]),
    );
}

/// `count` lookups of keys of `probe`, thread `t`'s sequence.
fn lookups(probe: &Probe, t: usize, count: usize) {
    let mut j = t * 7;
    for _ in 0..count {
        j = (j + 7919) % KEYS;
        black_box(probe.map.get(&probe.keys[j]));
    }
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
