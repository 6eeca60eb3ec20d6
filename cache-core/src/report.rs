//! `CacheReport`: the stats and health, read for you.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::backend::{Health, HealthStatus};
use crate::stats::{CacheStats, Human};

/// How urgent a piece of advice is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Worth knowing.
    Info,
    /// Worth a look soon.
    Warning,
    /// The cache is not doing its job right now.
    Critical,
}

/// One thing that needs attention.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Advice {
    /// How urgent it is.
    pub severity: Severity,
    /// A short, stable identifier (`low_hit_rate`, `breaker_open`…).
    pub code: &'static str,
    /// What was seen and what to do about it.
    pub message: String,
}

/// What [`Cache::report`](crate::Cache::report) found: the counters, the
/// backend's health, and advice on what needs attention, worst first.
///
/// `Display` writes it for people; `Serialize` (e.g. to JSON for a
/// `/stats` endpoint) writes every field.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct CacheReport {
    /// The counters now.
    pub stats: CacheStats,
    /// The backend's health (`None` if asking failed).
    pub health: Option<Health>,
    /// What needs attention; empty when all is well.
    pub advice: Vec<Advice>,
    /// When the report was made, in seconds since the Unix epoch (UTC).
    pub unix_time_secs: u64,
}

/// When the advice of a [`CacheReport`] speaks up; see
/// [`CacheBuilder::report_thresholds`](crate::CacheBuilder::report_thresholds).
///
/// # Examples
///
/// ```
/// use cache::ReportThresholds;
///
/// let strict = ReportThresholds::default().with_low_hit_rate(0.8);
/// assert_eq!(strict.low_hit_rate, 0.8);
/// assert_eq!(strict.min_reads, 100);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct ReportThresholds {
    /// `low_hit_rate` is judged only after this many reads. Default 100.
    pub min_reads: u64,
    /// A hit rate below this fraction is `low_hit_rate`. Default 0.5.
    pub low_hit_rate: f64,
    /// A fraction of backend failures above this is `high_error_rate` (or
    /// `rising_error_rate`). Default 0.01.
    pub high_error_rate: f64,
    /// A memory tier holding this fraction of its entry bound or more is
    /// `near_capacity`. Default 0.9.
    pub near_capacity: f64,
}

impl Default for ReportThresholds {
    fn default() -> Self {
        ReportThresholds {
            min_reads: 100,
            low_hit_rate: 0.5,
            high_error_rate: 0.01,
            near_capacity: 0.9,
        }
    }
}

impl ReportThresholds {
    /// Sets the reads needed before the hit rate is judged.
    #[must_use]
    pub fn with_min_reads(mut self, reads: u64) -> Self {
        self.min_reads = reads;
        self
    }

    /// Sets the hit rate under which `low_hit_rate` is advised.
    #[must_use]
    pub fn with_low_hit_rate(mut self, fraction: f64) -> Self {
        self.low_hit_rate = fraction;
        self
    }

    /// Sets the failure rate over which `high_error_rate` is advised.
    #[must_use]
    pub fn with_high_error_rate(mut self, fraction: f64) -> Self {
        self.high_error_rate = fraction;
        self
    }

    /// Sets the fill fraction from which `near_capacity` is advised.
    #[must_use]
    pub fn with_near_capacity(mut self, fraction: f64) -> Self {
        self.near_capacity = fraction;
        self
    }
}

/// The breaker's counts, when fail-open counters are attached (it opened
/// at least once), for the advice's messages.
fn breaker_counts(stats: &CacheStats) -> String {
    if stats.breaker_opened == 0 {
        return String::new();
    }
    let mut counts = format!(
        " (opened {} times, closed {} times; {} reads answered as misses, {} writes skipped",
        stats.breaker_opened, stats.breaker_closed, stats.failed_open_reads, stats.skipped_writes
    );
    if stats.pending_invalidations > 0 {
        counts += &format!(
            "; {} lost invalidations wait to be replayed",
            stats.pending_invalidations
        );
    }
    if stats.replayed_invalidations > 0 {
        counts += &format!("; {} invalidations replayed", stats.replayed_invalidations);
    }
    counts.push(')');
    counts
}

impl CacheReport {
    pub(crate) fn new(
        stats: CacheStats,
        previous: Option<CacheStats>,
        health: Option<Health>,
        thresholds: &ReportThresholds,
    ) -> Self {
        let mut advice = Vec::new();
        let mut add = |severity, code, message: String| {
            advice.push(Advice {
                severity,
                code,
                message,
            })
        };
        let breaker_open = stats.breaker_open
            || health
                .as_ref()
                .and_then(|h| h.details.get("breaker"))
                .map(String::as_str)
                == Some("open");
        if breaker_open {
            add(
                Severity::Critical,
                "breaker_open",
                format!(
                    "circuit breaker open{}: the backend is failing, reads are misses and writes are skipped until it recovers; check the backend's health and logs",
                    breaker_counts(&stats)
                ),
            );
        } else if let Some(health) = &health {
            if health.status == HealthStatus::Unhealthy {
                add(
                    Severity::Critical,
                    "unhealthy",
                    "the backend reports itself unhealthy".to_owned(),
                );
            } else if health.status == HealthStatus::Degraded {
                add(
                    Severity::Warning,
                    "degraded",
                    "the backend reports itself degraded (e.g. near its memory limit)".to_owned(),
                );
            }
        }
        let recent_trips = stats
            .breaker_opened
            .saturating_sub(previous.map_or(0, |p| p.breaker_opened));
        if !breaker_open && recent_trips > 0 {
            add(
                Severity::Warning,
                "breaker_tripped",
                format!(
                    "the circuit breaker opened {recent_trips} times {}and is closed again{}: the backend had outages; check its health and logs",
                    if previous.is_some() { "since the last report " } else { "" },
                    breaker_counts(&stats)
                ),
            );
        }
        let reads = stats.hits + stats.misses;
        if reads >= thresholds.min_reads && stats.hit_rate() < thresholds.low_hit_rate {
            add(
                Severity::Warning,
                "low_hit_rate",
                format!(
                    "hit rate is {:.0}% over {reads} reads: TTLs may be too short, keys too specific \
                     (e.g. a timestamp in the id), or the cache too small",
                    stats.hit_rate() * 100.0
                ),
            );
        }
        // The backend's failures: errors returned (not the loader's nor
        // decoding's, which have their own advice, nor the caller's) and
        // those fail-open swallowed. Operations: the answered ones and the
        // failed ones (a read fail-open answered is already a miss; a
        // skipped write is not a set).
        let ops = |s: &CacheStats| {
            s.hits + s.misses + s.sets + s.deletes + s.backend_errors() + s.skipped_writes
        };
        let failures = |s: &CacheStats| s.backend_errors() + s.backend_failures_swallowed();
        let (now_ops, now_failures) = (ops(&stats), failures(&stats));
        let (then_ops, then_failures) = previous.as_ref().map_or((0, 0), |p| (ops(p), failures(p)));
        let recent_ops = now_ops.saturating_sub(then_ops);
        let recent_failures = now_failures.saturating_sub(then_failures);
        let recent_rate = recent_failures as f64 / recent_ops.max(1) as f64;
        let earlier_rate = then_failures as f64 / then_ops.max(1) as f64;
        if recent_failures > 0 && recent_rate > thresholds.high_error_rate {
            let rising = previous.is_some() && recent_rate > earlier_rate;
            let errors = stats
                .backend_errors()
                .saturating_sub(previous.map_or(0, |p| p.backend_errors()));
            let swallowed = recent_failures.saturating_sub(errors);
            add(
                if rising { Severity::Critical } else { Severity::Warning },
                if rising { "rising_error_rate" } else { "high_error_rate" },
                format!(
                    "{recent_failures} backend failures in {recent_ops} operations ({:.1}%){}: {errors} errors returned{}; check the backend's health and logs",
                    recent_rate * 100.0,
                    if rising {
                        format!(", up from {:.1}%", earlier_rate * 100.0)
                    } else {
                        String::new()
                    },
                    if swallowed > 0 {
                        format!(", {swallowed} swallowed by fail-open (reads answered as misses, writes skipped)")
                    } else {
                        String::new()
                    }
                ),
            );
        }
        if stats.decode_errors > 0 {
            add(
                Severity::Warning,
                "decode_errors",
                format!(
                    "{} stored values did not decode as the requested type: if a type changed shape, \
                     bump its key version (CacheKey::with_version)",
                    stats.decode_errors
                ),
            );
        }
        if stats.stale_served > 0 {
            add(
                Severity::Warning,
                "stale_served",
                format!(
                    "served {} stale values because loaders failed or were slow ({} loader errors, {} soft timeouts): \
                     check the upstream the loaders read from",
                    stats.stale_served, stats.loader_errors, stats.loader_timeouts
                ),
            );
        } else if stats.loader_errors > 0 {
            add(
                Severity::Warning,
                "loader_errors",
                format!(
                    "{} of {} loads failed ({:.1}%): the loader's upstream (database, service) is failing, not the cache backend; \
                     check the upstream, and consider fail-safe (CacheBuilder::fail_safe) to serve stale values meanwhile",
                    stats.loader_errors,
                    stats.loader_calls,
                    stats.loader_errors as f64 / stats.loader_calls.max(1) as f64 * 100.0
                ),
            );
        }
        if let Some(health) = &health {
            for (entries, max, what) in [
                ("l1_entries", "l1_max_entries", "the L1 (memory tier)"),
                ("entries", "max_entries", "the memory backend"),
            ] {
                let number =
                    |name: &str| health.details.get(name).and_then(|v| v.parse::<f64>().ok());
                if let (Some(n), Some(m)) = (number(entries), number(max)) {
                    if m > 0.0 && n / m >= thresholds.near_capacity {
                        add(
                            Severity::Info,
                            "near_capacity",
                            format!(
                                "{what} holds {n} of at most {m} entries: it evicts to make room; raise the bound if the hit rate suffers"
                            ),
                        );
                    }
                }
            }
        }
        advice.sort_by_key(|a| std::cmp::Reverse(a.severity));
        CacheReport {
            stats,
            health,
            advice,
            unix_time_secs: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        }
    }

    /// Whether nothing needs attention.
    pub fn is_ok(&self) -> bool {
        self.advice.is_empty()
    }
}

impl fmt::Display for CacheReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.stats;
        writeln!(f, "cache report at unix time {}", self.unix_time_secs)?;
        writeln!(
            f,
            "hits {} misses {} coalesced {} (hit rate {:.1}%), sets {}, deletes {}, errors {} ({} the caller's), loads {} ({} failed), stale served {}, up {}",
            s.hits,
            s.misses,
            s.coalesced,
            s.hit_rate() * 100.0,
            s.sets,
            s.deletes,
            s.errors,
            s.caller_errors,
            s.loader_calls,
            s.loader_errors,
            s.stale_served,
            Human(s.uptime)
        )?;
        if s.breaker_open || s.breaker_opened > 0 || s.backend_failures_swallowed() > 0 {
            writeln!(
                f,
                "fail-open: breaker {} (opened {}, closed {}), {} reads answered as misses, {} writes skipped, \
                 {} invalidations pending, {} replayed",
                if s.breaker_open { "open" } else { "closed" },
                s.breaker_opened,
                s.breaker_closed,
                s.failed_open_reads,
                s.skipped_writes,
                s.pending_invalidations,
                s.replayed_invalidations
            )?;
        }
        match &self.health {
            Some(h) => writeln!(f, "backend: {:?} ({})", h.status, Human(h.latency))?,
            None => writeln!(f, "backend: health unknown")?,
        }
        if self.advice.is_empty() {
            writeln!(f, "all good")?;
        }
        for a in &self.advice {
            writeln!(f, "[{:?}] {}: {}", a.severity, a.code, a.message)?;
        }
        Ok(())
    }
}
