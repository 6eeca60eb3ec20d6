//! The goals, checked against this run's figures.

use std::fmt::Write as _;

use crate::redis_groups::paired_of;
use crate::report::Report;

struct Check {
    goal: String,
    figure: String,
    met: bool,
    /// Judged by a ratio paired by round whose rounds fall on both sides
    /// of the goal's bound (it lies between their quartiles): this run
    /// does not settle the verdict.
    unsettled: bool,
}

impl Check {
    /// Whether the goal's cells ran; a goal that did not run is a MISS.
    fn ran(&self) -> bool {
        self.figure != NOT_RUN
    }

    /// Whether its cells ran on a host that cannot show what the goal is
    /// about; such a goal is a MISS too.
    fn unmeasured(&self) -> bool {
        self.figure.starts_with(UNMEASURED)
    }
}

/// Why a goal has no figure.
const NOT_RUN: &str = "did not run (its cell is missing: group not selected, or it failed)";

/// How the figure of a goal starts when its cells ran but this host
/// cannot show what the goal is about.
const UNMEASURED: &str = "unmeasured on this host";

/// The goals checked so far.
#[derive(Default)]
struct Checks(Vec<Check>);

impl Checks {
    /// A goal, `met` or not by `figure` (never met when it did not run).
    fn add(&mut self, goal: String, figure: String, met: bool) {
        self.push(goal, figure, met, false);
    }

    fn push(&mut self, goal: String, figure: String, met: bool, unsettled: bool) {
        let met = met && figure != NOT_RUN;
        self.0.push(Check {
            goal,
            figure,
            met,
            unsettled,
        });
    }

    /// A goal judged by a ratio paired by round: its median `paired`, with
    /// the rounds' quartiles, must reach `bound` (`at_least`) or stay
    /// within it; `figure` says what else to show beside it.
    fn add_paired(
        &mut self,
        goal: String,
        paired: (f64, f64, f64),
        (bound, at_least): (f64, bool),
        figure: String,
    ) {
        let (median, q1, q3) = paired;
        let met = if at_least {
            median >= bound
        } else {
            median <= bound
        };
        self.push(
            goal,
            format!("{median:.2}x paired, rounds' quartiles {q1:.2}-{q3:.2}x ({figure})"),
            met,
            q1 < bound && bound < q3,
        );
    }
}

/// A table of every goal whose cells ran: the figure reached and whether
/// the goal is met.
pub(crate) fn summary(r: &Report) -> String {
    let mut checks = Checks::default();

    // Hit ratio: >= the better of moka and quick_cache (within 0.5 points), never below LRU.
    let g = crate::hitratio::GROUP;
    let (workloads, _) = crate::report::axes(r.records.iter().filter(|x| x.group == g));
    if workloads.is_empty() {
        checks.add(
            "hit ratio: >= max(moka, quick_cache) - 0.005, >= lru".into(),
            NOT_RUN.into(),
            false,
        );
    }
    for w in workloads {
        let v = |i: &str| r.value(g, w, i);
        if let (Some(ours), Some(moka), Some(quick), Some(lru)) =
            (v("MemoryBackend"), v("moka"), v("quick_cache"), v("lru"))
        {
            let best = moka.max(quick);
            checks.add(
                format!("hit ratio {w}: >= max(moka, quick_cache) - 0.005, >= lru"),
                format!(
                    "{ours:.4} vs best peer {best:.4} ({:+.2} pts), lru {lru:.4}",
                    (ours - best) * 100.0
                ),
                ours >= best - 0.005 && ours >= lru,
            );
        } else {
            checks.add(
                format!("hit ratio {w}: >= max(moka, quick_cache) - 0.005, >= lru"),
                NOT_RUN.into(),
                false,
            );
        }
    }

    // Throughput, 1 thread, 10k keys.
    let t = crate::throughput::GROUP;
    let get = "get 100% hit 10k keys 1t";
    let set = "set 100% 10k keys 1t";
    let v = |w: &str, i: &str| r.value(t, w, i);
    let mut ratio = |goal: &str, w: &str, a: &str, b: &str, min: f64| {
        let name = format!("{goal} ({w}): {a} >= {min}x {b}");
        match (v(w, a), v(w, b)) {
            (Some(x), Some(y)) => checks.add(name, format!("{:.2}x", x / y), x / y >= min),
            _ => checks.add(name, NOT_RUN.into(), false),
        }
    };
    ratio(
        "direct get",
        get,
        "MemoryBackend direct",
        "quick_cache",
        0.8,
    );
    ratio("dyn get", get, "MemoryBackend dyn", "raw DashMap", 0.7);
    ratio(
        "direct get",
        get,
        "MemoryBackend direct",
        "moka::future",
        3.0,
    );
    ratio("dyn get", get, "MemoryBackend dyn", "moka::future", 3.0);
    ratio(
        "direct set",
        set,
        "MemoryBackend direct",
        "moka::future",
        2.0,
    );
    ratio("dyn set", set, "MemoryBackend dyn", "moka::future", 2.0);

    ratio("typed get", get, "Cache::get::<T>", "moka::future", 2.5);

    // Two threads: the typed facade scales as the backend does (its
    // 2-thread/1-thread ratio within 10% of the backend's). Judged only
    // where the host runs two threads' reads of shared memory in parallel
    // (the host probe): elsewhere every shared-map cell is held back by the
    // host, and the two ratios compare nothing.
    let get2 = "get 100% hit 10k keys 2t";
    let name =
        format!("2-thread scaling ({get2} / 1t): Cache::get::<T> >= 0.9x MemoryBackend direct's");
    let shared = r.value(
        crate::host::GROUP,
        crate::host::SCALING,
        crate::host::SHARED,
    );
    match (
        v(get, "Cache::get::<T>"),
        v(get2, "Cache::get::<T>"),
        v(get, "MemoryBackend direct"),
        v(get2, "MemoryBackend direct"),
        shared,
    ) {
        (Some(c1), Some(c2), Some(d1), Some(d2), Some(shared)) => {
            let (typed, direct) = (c2 / c1, d2 / d1);
            let figure = format!("{typed:.2}x vs {direct:.2}x ({:.2})", typed / direct);
            if shared < crate::host::MIN_SHARED_SCALING {
                checks.add(
                    name,
                    format!(
                        "{UNMEASURED}: this host ran 2 threads' reads of shared memory at \
                         {shared:.2}x 1 thread's (< {}x); {figure}",
                        crate::host::MIN_SHARED_SCALING
                    ),
                    false,
                );
            } else {
                checks.add(name, figure, typed >= 0.9 * direct);
            }
        }
        _ => checks.add(name, NOT_RUN.into(), false),
    }

    // Memory per entry.
    let m = crate::memory::GROUP;
    let w = "1M entries, 11 B key + 64 B value";
    if let (Some(ours), Some(moka)) = (r.value(m, w, "MemoryBackend"), r.value(m, w, "moka::sync"))
    {
        checks.add(
            "bytes per entry beyond key+value <= moka's".into(),
            format!("{ours:.1} B vs moka {moka:.1} B"),
            ours <= moka,
        );
    } else {
        checks.add(
            "bytes per entry beyond key+value <= moka's".into(),
            NOT_RUN.into(),
            false,
        );
    }

    // Redis: RedisBackend GET and SET, and the typed facade's GET, each
    // >= 0.9x raw redis-rs (one shared multiplexed connection), at 1, 50
    // and 200 tasks; every cell named here, so a missing one is a MISS.
    // Judged by the paired ratio (each round's ratio, then the median):
    // the ratio of the medians is shown beside it.
    let rg = crate::redis_groups::REDIS;
    let ops = |w: &str, i: &str| r.value_of(rg, w, i, "ops_per_sec");
    let raw_name = crate::redis_groups::RAW;
    for tasks in [1, 50, 200] {
        let suffix = if tasks == 1 { "" } else { "s" };
        for (op, ours) in [
            ("GET", "RedisBackend"),
            ("SET", "RedisBackend"),
            ("GET", "Cache::get::<T>"),
        ] {
            let w = format!("{op} 64 B, {tasks} task{suffix}");
            let goal = format!("Redis {w}: {ours} >= 0.9x raw redis-rs");
            match (
                ops(&w, ours),
                ops(&w, raw_name),
                paired_of(r, (rg, &w, ours)),
            ) {
                (Some(x), Some(raw), Some(paired)) => checks.add_paired(
                    goal,
                    paired,
                    (0.9, true),
                    format!("ratio of medians {:.2}x", x / raw),
                ),
                _ => checks.add(goal, NOT_RUN.into(), false),
            }
        }
    }
    let b = crate::redis_groups::BATCH;
    let bw = "100 keys, 64 B values, 1 task";
    if let (Some(mget), Some(seq)) = (
        r.value(b, bw, "RedisBackend get_many (MGET)"),
        r.value(b, bw, "RedisBackend 100 x get"),
    ) {
        checks.add(
            "batch of 100 keys >= 10x faster than 100 GETs".into(),
            format!(
                "{:.1} us vs {:.1} us ({:.1}x)",
                mget / 1e3,
                seq / 1e3,
                seq / mget
            ),
            seq / mget >= 10.0,
        );
    } else {
        checks.add(
            "batch of 100 keys >= 10x faster than 100 GETs".into(),
            NOT_RUN.into(),
            false,
        );
    }

    // Tiered.
    let tg = crate::redis_groups::TIERED;
    let tw = "get hit, 10k keys, 64 B, 1 thread";
    // Judged by the ratio paired by round, as the Redis goals are.
    if let (Some(tiered), Some(direct), Some(paired)) = (
        r.value_of(tg, tw, "Tiered L1 hit", "ops_per_sec"),
        r.value_of(tg, tw, "MemoryBackend direct", "ops_per_sec"),
        paired_of(r, (tg, tw, "Tiered L1 hit")),
    ) {
        checks.add_paired(
            "Tiered L1 hit >= 0.8x MemoryBackend direct".into(),
            paired,
            (0.8, true),
            format!("ratio of medians {:.2}x", tiered / direct),
        );
    } else {
        checks.add(
            "Tiered L1 hit >= 0.8x MemoryBackend direct".into(),
            NOT_RUN.into(),
            false,
        );
    }

    // Typed: the facade adds little to lookup + decode; the decoded L1 is
    // near a concurrent map of `Arc<T>`.
    let yg = crate::redis_groups::TYPED;
    let mut yw = None;
    for rec in r.records.iter().filter(|x| x.group == yg) {
        yw = Some(rec.workload.clone());
    }
    let y = |i: &str, metric: &str| yw.as_deref().and_then(|w| r.value_of(yg, w, i, metric));
    // Judged, as the Redis goals are, by the ratio paired by round; the
    // ratio of the medians is shown beside it.
    for (ours, floor, max) in crate::redis_groups::TYPED_GOALS {
        let goal = format!("{ours} <= {max}x {floor} (ns per get)");
        match (
            y(ours, "ns_per_op"),
            y(floor, "ns_per_op"),
            yw.as_deref().and_then(|w| paired_of(r, (yg, w, ours))),
        ) {
            (Some(a), Some(b), Some(paired)) => checks.add_paired(
                goal,
                paired,
                (max, false),
                format!("{a:.0} ns vs {b:.0} ns, ratio of medians {:.2}x", a / b),
            ),
            _ => checks.add(goal, NOT_RUN.into(), false),
        }
    }

    // Sweeps do not stall reads: p99 of gets with the sweeper on vs off,
    // per get (service) and from when each get was due (response).
    let sg = crate::sweep::GROUP;
    for (row, what) in [
        (crate::sweep::P99, "service"),
        (crate::sweep::R99, "response"),
    ] {
        if let (Some(on), Some(off), Some(paired)) = (
            r.value(sg, row, crate::sweep::ON),
            r.value(sg, row, crate::sweep::OFF),
            paired_of(r, (sg, row, crate::sweep::ON)),
        ) {
            checks.add_paired(
                format!("get p99 {what} at 1M entries with sweeps <= 1.5x without"),
                paired,
                (1.5, false),
                format!(
                    "{on:.0} ns vs {off:.0} ns, ratio of medians {:.2}x",
                    on / off
                ),
            );
        } else {
            checks.add(
                format!("get p99 {what} at 1M entries with sweeps <= 1.5x without"),
                NOT_RUN.into(),
                false,
            );
        }
    }

    let mut out = String::from("\n== goals ==\n");
    let width = checks.0.iter().map(|c| c.goal.len()).max().unwrap_or(10);
    for c in &checks.0 {
        let _ = writeln!(
            out,
            "{:<4} {:<width$} | {}",
            if c.met { "MET" } else { "MISS" },
            c.goal,
            c.figure
        );
    }
    let met = checks.0.iter().filter(|c| c.met).count();
    let not_run = checks.0.iter().filter(|c| !c.ran()).count();
    let unmeasured = checks.0.iter().filter(|c| c.unmeasured()).count();
    let unsettled = checks.0.iter().filter(|c| c.unsettled).count();
    let _ = writeln!(
        out,
        "{met} of {} goals met; {} MISS, of which {not_run} did not run and {unmeasured} could not be measured on this host; {unsettled} verdicts (MET or MISS) not settled by this run, their bound between the quartiles of their rounds' ratios; {} get cells that missed (errors)",
        checks.0.len(),
        checks.0.len() - met,
        r.errors.len()
    );
    for error in &r.errors {
        let _ = writeln!(out, "ERROR {error}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redis_groups::{PAIRED, PAIRED_Q1, PAIRED_Q3, TYPED};

    /// A report of one paired goal's cells: `metric`'s medians of `ours`
    /// and of `other` in `group`'s `workload`, and `ours`' paired ratio's
    /// median and quartiles.
    fn paired_report(
        (group, workload, metric): (&'static str, &'static str, &'static str),
        (ours, other): (&'static str, &'static str),
        medians: (f64, f64),
        paired: (f64, f64, f64),
    ) -> Report {
        let mut r = Report::default();
        r.add(group, workload, ours, metric, medians.0);
        r.add(group, workload, other, metric, medians.1);
        r.add(group, workload, ours, PAIRED, paired.0);
        r.add(group, workload, ours, PAIRED_Q1, paired.1);
        r.add(group, workload, ours, PAIRED_Q3, paired.2);
        r
    }

    /// The typed goal's line and the summary's count line, for a report
    /// of its cells: the medians' ns per get, and the paired ratio's median
    /// and quartiles.
    fn typed_goal(medians: (f64, f64), paired: (f64, f64, f64)) -> (String, String) {
        let r = paired_report(
            (TYPED, "get hit, ~214 B struct, 1 thread", "ns_per_op"),
            ("Cache::get::<T> memory", "lookup + decode"),
            medians,
            paired,
        );
        goal_and_count(&r, "Cache::get::<T> memory <= 1.15x")
    }

    /// The line of the summary of `r` that names the goal `needle`, and
    /// its count line.
    fn goal_and_count(r: &Report, needle: &str) -> (String, String) {
        let summary = summary(r);
        let line = |needle: &str| {
            summary
                .lines()
                .find(|l| l.contains(needle))
                .expect("the line")
                .to_owned()
        };
        (line(needle), line("goals met"))
    }

    /// Asserts that the goal's `line` reads `verdict` ("MET " or "MISS ")
    /// and that the `count` line counts `unsettled` verdicts not settled.
    fn assert_judged(line: &str, count: &str, verdict: &str, unsettled: u32) {
        assert!(line.starts_with(verdict), "{line}");
        assert!(
            count.contains(&format!("; {unsettled} verdicts (MET or MISS) not settled")),
            "{count}"
        );
    }

    #[test]
    fn the_typed_goal_is_judged_by_the_ratio_paired_by_round() {
        // The medians' ratio is 1.20; each round's, 1.05 to 1.12.
        let (line, count) = typed_goal((120.0, 100.0), (1.10, 1.05, 1.12));
        assert!(
            line.ends_with(
                "| 1.10x paired, rounds' quartiles 1.05-1.12x \
                 (120 ns vs 100 ns, ratio of medians 1.20x)"
            ),
            "{line}"
        );
        assert_judged(&line, &count, "MET ", 0);
        let (line, _) = typed_goal((110.0, 100.0), (1.20, 1.18, 1.25));
        assert!(line.starts_with("MISS "), "{line}");
    }

    #[test]
    fn the_tiered_goal_is_judged_by_the_ratio_paired_by_round() {
        let tiered = |medians: (f64, f64), paired: (f64, f64, f64)| {
            let w = "get hit, 10k keys, 64 B, 1 thread";
            let r = paired_report(
                (crate::redis_groups::TIERED, w, "ops_per_sec"),
                ("Tiered L1 hit", "MemoryBackend direct"),
                (medians.1, medians.0),
                paired,
            );
            goal_and_count(&r, "Tiered L1 hit >= 0.8x").0
        };
        // The medians' ratio is 0.75; each round's, 0.82 to 0.86.
        let line = tiered((20.0, 15.0), (0.84, 0.82, 0.86));
        assert_eq!(
            line.split_once('|').map(|(_, figure)| figure.trim()),
            Some("0.84x paired, rounds' quartiles 0.82-0.86x (ratio of medians 0.75x)"),
        );
        assert!(line.starts_with("MET "), "{line}");
        let line = tiered((20.0, 17.0), (0.78, 0.76, 0.79));
        assert!(line.starts_with("MISS "), "{line}");
    }

    #[test]
    fn a_verdict_whose_rounds_fall_on_both_sides_of_its_bound_is_counted_unsettled() {
        // MISS by its median, but a quarter of the rounds or more met it.
        let (line, count) = typed_goal((120.0, 100.0), (1.17, 1.12, 1.21));
        assert!(line.starts_with("MISS "), "{line}");
        assert!(
            count.contains(
                "; 1 verdicts (MET or MISS) not settled by this run, their bound between \
                 the quartiles of their rounds' ratios;"
            ),
            "{count}"
        );
        // MET, with a quarter of the rounds or more over the bound.
        let (line, count) = typed_goal((120.0, 100.0), (1.14, 1.10, 1.16));
        assert_judged(&line, &count, "MET ", 1);
        // Every quartile on one side: settled.
        let (_, count) = typed_goal((120.0, 100.0), (1.20, 1.16, 1.25));
        assert!(
            count.contains("; 0 verdicts (MET or MISS) not settled"),
            "{count}"
        );
    }

    #[test]
    fn the_sweep_goals_are_judged_by_the_ratio_paired_by_run() {
        let sweep = |medians: (f64, f64), paired: (f64, f64, f64)| {
            let r = paired_report(
                (crate::sweep::GROUP, crate::sweep::R99, "latency_ns"),
                (crate::sweep::ON, crate::sweep::OFF),
                medians,
                paired,
            );
            goal_and_count(&r, "get p99 response at 1M entries")
        };
        // The medians' ratio is 2.51; the pairs', 1.1 to 1.4.
        let (line, count) = sweep((18327.0, 7303.0), (1.2, 1.1, 1.4));
        assert_eq!(
            line.split_once('|').map(|(_, figure)| figure.trim()),
            Some(
                "1.20x paired, rounds' quartiles 1.10-1.40x \
                 (18327 ns vs 7303 ns, ratio of medians 2.51x)"
            ),
        );
        assert_judged(&line, &count, "MET ", 0);
        let (line, count) = sweep((18327.0, 7303.0), (2.7, 2.4, 2.9));
        assert_judged(&line, &count, "MISS ", 0);
        let (line, count) = sweep((18327.0, 7303.0), (1.3, 0.9, 2.4));
        assert_judged(&line, &count, "MET ", 1);
    }

    /// The 2-thread goal's line and the summary's count line, for a run
    /// whose cells scaled `typed` and `direct` (2t / 1t) on a host whose
    /// probe read shared memory at `shared` (None: the probe did not run).
    fn scaling_goal(typed: f64, direct: f64, shared: Option<f64>) -> (String, String) {
        let mut r = Report::default();
        let t = crate::throughput::GROUP;
        for (imp, scaled) in [("Cache::get::<T>", typed), ("MemoryBackend direct", direct)] {
            r.add(t, "get 100% hit 10k keys 1t", imp, "ops_per_sec", 100.0);
            r.add(
                t,
                "get 100% hit 10k keys 2t",
                imp,
                "ops_per_sec",
                100.0 * scaled,
            );
        }
        if let Some(shared) = shared {
            let h = crate::host::GROUP;
            r.add(h, crate::host::SCALING, crate::host::PRIVATE, "ratio", 1.9);
            r.add(
                h,
                crate::host::SCALING,
                crate::host::SHARED,
                "ratio",
                shared,
            );
        }
        goal_and_count(&r, "2-thread scaling")
    }

    #[test]
    fn the_scaling_goal_is_judged_only_where_the_host_reads_shared_memory_in_parallel() {
        let (line, _) = scaling_goal(1.8, 1.9, Some(1.9));
        assert!(line.starts_with("MET "), "{line}");
        assert!(line.ends_with("| 1.80x vs 1.90x (0.95)"), "{line}");
        let (line, _) = scaling_goal(1.5, 1.9, Some(1.9));
        assert!(line.starts_with("MISS "), "{line}");

        // Met by its ratios, but the host held shared reads back.
        let (line, count) = scaling_goal(1.39, 0.62, Some(1.02));
        assert!(line.starts_with("MISS "), "{line}");
        assert!(
            line.ends_with(
                "| unmeasured on this host: this host ran 2 threads' reads of shared memory \
                 at 1.02x 1 thread's (< 1.5x); 1.39x vs 0.62x (2.24)"
            ),
            "{line}"
        );
        assert!(
            count.starts_with(
                "0 of 26 goals met; 26 MISS, of which 25 did not run and 1 could not be measured \
                 on this host;"
            ),
            "{count}"
        );

        // Without the probe's figure there is nothing to judge by.
        let (line, _) = scaling_goal(1.8, 1.9, None);
        assert!(line.starts_with("MISS "), "{line}");
        assert!(line.contains(NOT_RUN), "{line}");
    }
}
