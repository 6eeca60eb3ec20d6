//! An exchange-rate chat bot, shaped like a real one.
//!
//! Users send `/rate USD EUR`, `/convert 100 USD JPY` and `/stats EUR`.
//! Answers come from a slow upstream rates API that fails now and then
//! (simulated in-process: latency, errors, an outage), through a cache with
//! three TTL categories:
//!
//! | category | TTL | what |
//! |---|---|---|
//! | `rates` | 300 s | the rates of one base currency (one upstream call) |
//! | `calc` | 60 s | a conversion result (computed from cached rates) |
//! | `stats` | 900 s | 30-day min/mean/max (one slow upstream call) |
//!
//! `get_or_set` runs with fail-safe: when the upstream fails or is slower
//! than the soft timeout, users get the last known value (stale, counted)
//! instead of an error. Each user is rate limited (`user: 20/min`). The run
//! ends with a report: hit rate, loader and upstream calls, stale values
//! served, answers during the outage.
//!
//! The cache is the one the configuration describes
//! ([`ExampleConfig`]: the `CACHE_*` variables), so on Redis it is the
//! production stack (L1, 250 ms deadline, fail-open) and a Redis outage
//! costs no answers: reads fall back to the L1 and the upstream. The rate
//! limiter runs on the plain backend of the same URL.
//!
//! Time is simulated: with `speedup` 400, one simulated second takes
//! 2.5 ms, so TTLs, the rate limit window and the users' pace shrink
//! together and 30 minutes of traffic run in a few seconds; the
//! upstream's latency and the soft timeout are real time.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use cache::{
    Cache, CacheKey, CacheStats, FailSafeConfig, GetOrSetOptions, RateLimiter, Rule, Ttl,
    DEFAULT_PREFIX,
};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::stack::ExampleConfig;

/// TTL of a base currency's rates.
pub const RATES_TTL: Duration = Duration::from_secs(300);
/// TTL of a conversion result.
pub const CALC_TTL: Duration = Duration::from_secs(60);
/// TTL of 30-day statistics.
pub const STATS_TTL: Duration = Duration::from_secs(900);

/// The currencies the bot knows, with their rate to USD.
const CURRENCIES: [(&str, f64); 6] = [
    ("USD", 1.0),
    ("EUR", 0.92),
    ("GBP", 0.79),
    ("JPY", 151.3),
    ("CHF", 0.88),
    ("CAD", 1.36),
];

/// How the simulated upstream behaves (latencies are real time).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UpstreamConfig {
    /// The chance that a call fails.
    pub failure_rate: f64,
    /// The usual latency, uniform in `latency.0..latency.1`.
    pub latency: (Duration, Duration),
    /// The chance that a call is slow.
    pub slow_rate: f64,
    /// The latency of a slow call.
    pub slow_latency: Duration,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        UpstreamConfig {
            failure_rate: 0.1,
            latency: (Duration::from_millis(10), Duration::from_millis(40)),
            slow_rate: 0.05,
            slow_latency: Duration::from_millis(400),
        }
    }
}

/// One run of the bot.
#[derive(Debug, Clone, PartialEq)]
pub struct BotConfig {
    /// Ordinary users.
    pub users: usize,
    /// Of which this many send far too often (and get rate limited).
    pub spammers: usize,
    /// Simulated length of the run.
    pub duration: Duration,
    /// Simulated seconds per real second.
    pub speedup: f64,
    /// Mean simulated time between two messages of an ordinary user.
    pub message_every: Duration,
    /// Mean simulated time between two messages of a spammer.
    pub spam_every: Duration,
    /// The upstream.
    pub upstream: UpstreamConfig,
    /// A simulated stretch, as fractions of the run, when every upstream
    /// call fails.
    pub outage: Option<(f64, f64)>,
    /// Messages per user (simulated time).
    pub user_limit: Rule,
    /// How long past its TTL a value may be served (simulated time; the
    /// cache keeps whole real seconds, rounded up). Used unless the cache
    /// configuration sets fail-safe (`CACHE_FAIL_SAFE_SECS`).
    pub max_stale: Duration,
    /// With a stale value at hand, how long to wait for the upstream
    /// (real time).
    pub soft_timeout: Duration,
    /// Replies to print (a sample of the conversation).
    pub transcript_lines: usize,
}

impl Default for BotConfig {
    fn default() -> Self {
        BotConfig {
            users: 30,
            spammers: 2,
            duration: Duration::from_secs(30 * 60),
            speedup: 400.0,
            message_every: Duration::from_secs(30),
            spam_every: Duration::from_secs(2),
            upstream: UpstreamConfig::default(),
            outage: Some((0.4, 0.7)),
            user_limit: Rule::per_minute(20),
            max_stale: Duration::from_secs(3600),
            soft_timeout: Duration::from_millis(100),
            transcript_lines: 8,
        }
    }
}

/// The decimal places of a rate, as the upstream sends it.
const RATE_PLACES: u32 = 6;
/// The decimal places of an amount of money.
const MONEY_PLACES: u32 = 2;

/// `x` as a decimal with `places` places: where the simulated upstream's
/// floating-point drift becomes the fixed-point figures a real rates API
/// sends. From here on, money is exact: never `f64`.
fn decimal(x: f64, places: u32) -> Decimal {
    Decimal::from_f64_retain(x)
        .unwrap_or_default()
        .round_dp(places)
}

/// A base currency's rates, as the upstream sends them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rates {
    /// The base currency.
    pub base: String,
    /// Units of each currency per unit of `base`, to 6 decimal places
    /// (stored as exact decimal strings: `"0.921234"`).
    pub rates: BTreeMap<String, Decimal>,
    /// When the upstream made them, simulated seconds since the start.
    pub at_secs: f64,
}

/// 30 days of a currency against USD.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// The currency.
    pub currency: String,
    /// The lowest daily rate.
    pub min: Decimal,
    /// The mean daily rate.
    pub mean: Decimal,
    /// The highest daily rate.
    pub max: Decimal,
}

/// The error of a failed upstream call.
#[derive(Debug)]
pub struct UpstreamError(&'static str);

impl fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "upstream rates API: {}", self.0)
    }
}

impl std::error::Error for UpstreamError {}

/// Simulated time: real time since the start, times the speedup.
#[derive(Debug, Clone)]
struct SimClock {
    started: Arc<Mutex<Instant>>,
    speedup: f64,
}

impl SimClock {
    fn new(speedup: f64) -> Self {
        SimClock {
            started: Arc::new(Mutex::new(Instant::now())),
            speedup,
        }
    }

    /// Simulated time starts again from zero (after the warm-up).
    fn restart(&self) {
        *self.started.lock().unwrap_or_else(PoisonError::into_inner) = Instant::now();
    }

    fn elapsed(&self) -> Duration {
        self.started
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .elapsed()
    }

    fn now(&self) -> Duration {
        self.elapsed().mul_f64(self.speedup)
    }

    /// The real duration of a simulated one.
    fn real(&self, simulated: Duration) -> Duration {
        simulated.div_f64(self.speedup)
    }
}

/// The slow, sometimes failing rates API, simulated in-process.
#[derive(Debug)]
pub struct Upstream {
    config: UpstreamConfig,
    clock: SimClock,
    down: AtomicBool,
    calls: AtomicU64,
    failures: AtomicU64,
    slow: AtomicU64,
}

impl Upstream {
    fn new(config: UpstreamConfig, clock: SimClock) -> Self {
        Upstream {
            config,
            clock,
            down: AtomicBool::new(false),
            calls: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            slow: AtomicU64::new(0),
        }
    }

    /// One call's latency and outcome.
    async fn call(&self) -> Result<(), UpstreamError> {
        self.calls.fetch_add(1, Relaxed);
        let (lo, hi) = self.config.latency;
        let latency = if fastrand::f64() < self.config.slow_rate {
            self.slow.fetch_add(1, Relaxed);
            self.config.slow_latency
        } else {
            lo + (hi.saturating_sub(lo)).mul_f64(fastrand::f64())
        };
        tokio::time::sleep(latency).await;
        if self.down.load(Relaxed) {
            self.failures.fetch_add(1, Relaxed);
            return Err(UpstreamError("503 Service Unavailable"));
        }
        if fastrand::f64() < self.config.failure_rate {
            self.failures.fetch_add(1, Relaxed);
            return Err(UpstreamError("502 Bad Gateway"));
        }
        Ok(())
    }

    /// The rate of `currency` to USD at simulated time `secs`: it drifts.
    fn usd_rate(currency: &str, secs: f64) -> f64 {
        let (i, base) = CURRENCIES
            .iter()
            .enumerate()
            .find(|(_, (c, _))| *c == currency)
            .map_or((0, 1.0), |(i, (_, r))| (i, *r));
        if i == 0 {
            return 1.0;
        }
        base * (1.0 + 0.01 * (secs / 600.0 + i as f64).sin())
    }

    /// `GET /latest?base=...`.
    ///
    /// # Errors
    ///
    /// When the call fails.
    pub async fn latest(&self, base: &str) -> Result<Rates, UpstreamError> {
        self.call().await?;
        let secs = self.clock.now().as_secs_f64();
        let base_usd = Self::usd_rate(base, secs);
        let rates = CURRENCIES
            .iter()
            .map(|(c, _)| {
                let rate = Self::usd_rate(c, secs) / base_usd;
                ((*c).to_owned(), decimal(rate, RATE_PLACES))
            })
            .collect();
        Ok(Rates {
            base: base.to_owned(),
            rates,
            at_secs: secs,
        })
    }

    /// `GET /history?currency=...&days=30` (two calls' latency).
    ///
    /// # Errors
    ///
    /// When the call fails.
    pub async fn history(&self, currency: &str) -> Result<Stats, UpstreamError> {
        self.call().await?;
        self.call().await?;
        let now = self.clock.now().as_secs_f64();
        let days: Vec<Decimal> = (0..30)
            .map(|d| {
                let rate = Self::usd_rate(currency, now - f64::from(d) * 86_400.0);
                decimal(rate, RATE_PLACES)
            })
            .collect();
        let min = days.iter().copied().min().unwrap_or_default();
        let max = days.iter().copied().max().unwrap_or_default();
        let mean = (days.iter().sum::<Decimal>() / Decimal::from(days.len())).round_dp(RATE_PLACES);
        Ok(Stats {
            currency: currency.to_owned(),
            min,
            mean,
            max,
        })
    }
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct Report {
    /// The cache backend's name (the outermost layer's).
    pub backend: &'static str,
    /// The cache's stack, outermost first ([`ExampleConfig::describe`]).
    pub stack: String,
    /// Simulated length of the run.
    pub simulated: Duration,
    /// Real length of the run.
    pub real: Duration,
    /// Messages users sent.
    pub messages: u64,
    /// Messages answered with data.
    pub answered: u64,
    /// Messages refused by the per-user rate limit.
    pub rate_limited: u64,
    /// Messages answered "sorry, no data" (upstream failed, nothing cached,
    /// or the cache failed).
    pub unanswered: u64,
    /// Rate limit checks decided without the backend (it failed), letting
    /// the message through.
    pub limiter_backend_errors: u64,
    /// Messages (past the rate limit) sent while the upstream was down.
    pub outage_messages: u64,
    /// Of those, answered with data.
    pub outage_answered: u64,
    /// Upstream calls.
    pub upstream_calls: u64,
    /// Upstream calls that failed.
    pub upstream_failures: u64,
    /// Upstream calls that were slow.
    pub upstream_slow: u64,
    /// Per category: (name, TTL in simulated time, requests, loads).
    pub categories: Vec<(&'static str, Duration, u64, u64)>,
    /// The cache's counters.
    pub cache: CacheStats,
    /// A sample of the conversation.
    pub transcript: Vec<String>,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pct = |a: u64, b: u64| {
            if b == 0 {
                0.0
            } else {
                100.0 * a as f64 / b as f64
            }
        };
        writeln!(
            f,
            "rates bot on {}: {} simulated minutes in {:.1} s",
            self.stack,
            self.simulated.as_secs() / 60,
            self.real.as_secs_f64()
        )?;
        writeln!(
            f,
            "messages:   {} sent, {} rate limited, {} answered ({:.2}% of the rest), {} unanswered",
            self.messages,
            self.rate_limited,
            self.answered,
            pct(self.answered, self.messages - self.rate_limited),
            self.unanswered
        )?;
        if self.limiter_backend_errors > 0 {
            writeln!(
                f,
                "limiter:    {} checks decided without the backend (it failed)",
                self.limiter_backend_errors
            )?;
        }
        writeln!(
            f,
            "outage:     {} of {} messages answered while the upstream was down",
            self.outage_answered, self.outage_messages
        )?;
        writeln!(
            f,
            "upstream:   {} calls, {} failed ({:.0}%), {} slow",
            self.upstream_calls,
            self.upstream_failures,
            pct(self.upstream_failures, self.upstream_calls),
            self.upstream_slow
        )?;
        writeln!(
            f,
            "cache:      hit rate {:.1}%, {} hits, {} misses, {} loader calls ({} failed), {} stale values served, {} loads cut short by the soft timeout",
            100.0 * self.cache.hit_rate(),
            self.cache.hits,
            self.cache.misses,
            self.cache.loader_calls,
            self.cache.loader_errors,
            self.cache.stale_served,
            self.cache.loader_timeouts
        )?;
        for (name, ttl, requests, loads) in &self.categories {
            writeln!(
                f,
                "  {name:<6} TTL {:>4.0} s: {requests:>5} requests, {loads:>4} loads",
                ttl.as_secs_f64()
            )?;
        }
        if !self.transcript.is_empty() {
            writeln!(f, "sample of the conversation:")?;
            for line in &self.transcript {
                writeln!(f, "  {line}")?;
            }
        }
        Ok(())
    }
}

/// The bot: cache, limiter, upstream and counters.
struct Bot {
    cache: Cache,
    limiter: RateLimiter,
    upstream: Arc<Upstream>,
    clock: SimClock,
    /// The real TTLs of `rates`, `calc` and `stats`.
    ttls: [Duration; 3],
    requests: [AtomicU64; 3],
    loads: [AtomicU64; 3],
    transcript: Mutex<Vec<(Line, String)>>,
    transcript_lines: usize,
}

/// A message a user sends.
#[derive(Debug, Clone, Copy)]
enum Command {
    Rate(&'static str, &'static str),
    Convert(u32, &'static str, &'static str),
    Stats(&'static str),
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Rate(a, b) => write!(f, "/rate {a} {b}"),
            Command::Convert(n, a, b) => write!(f, "/convert {n} {a} {b}"),
            Command::Stats(c) => write!(f, "/stats {c}"),
        }
    }
}

fn currency() -> &'static str {
    CURRENCIES[fastrand::usize(..CURRENCIES.len())].0
}

/// Two different currencies.
fn pair() -> (&'static str, &'static str) {
    let a = currency();
    loop {
        let b = currency();
        if b != a {
            return (a, b);
        }
    }
}

fn random_command() -> Command {
    let roll = fastrand::u32(..100);
    let (a, b) = pair();
    if roll < 55 {
        Command::Rate(a, b)
    } else if roll < 90 {
        let amounts = [10, 50, 100, 250, 1000];
        Command::Convert(amounts[fastrand::usize(..amounts.len())], a, b)
    } else {
        // Against USD: any currency but USD.
        Command::Stats(if a == "USD" { b } else { a })
    }
}

impl Bot {
    /// The options of a load of category `i` (`rates`, `calc`, `stats`).
    fn ttl(&self, i: usize) -> GetOrSetOptions {
        GetOrSetOptions::default().with_ttl(Ttl::After(self.ttls[i]))
    }

    /// The rates of `base`: cached 300 s, stale when the upstream fails.
    async fn rates(self: &Arc<Self>, base: &str) -> cache::Result<Rates> {
        self.requests[0].fetch_add(1, Relaxed);
        let (bot, base) = (Arc::clone(self), base.to_owned());
        self.cache
            .get_or_set_opts(
                &CacheKey::new("rates", &base)?,
                self.ttl(0),
                move || async move {
                    bot.loads[0].fetch_add(1, Relaxed);
                    bot.upstream.latest(&base).await
                },
            )
            .await
    }

    /// `amount` of `from` in `to`: cached 60 s, computed from cached rates.
    async fn convert(
        self: &Arc<Self>,
        amount: u32,
        from: &'static str,
        to: &'static str,
    ) -> cache::Result<(Decimal, f64)> {
        self.requests[1].fetch_add(1, Relaxed);
        let key = CacheKey::hashed("calc", &(amount, from, to))?;
        let bot = Arc::clone(self);
        self.cache
            .get_or_set_opts(&key, self.ttl(1), move || async move {
                bot.loads[1].fetch_add(1, Relaxed);
                let rates = bot.rates(from).await?;
                let rate = rates.rates.get(to).copied().unwrap_or_default();
                let value = (Decimal::from(amount) * rate).round_dp(MONEY_PLACES);
                Ok::<_, cache::Error>((value, rates.at_secs))
            })
            .await
    }

    /// 30-day statistics of `currency`: cached 900 s.
    async fn stats(self: &Arc<Self>, currency: &str) -> cache::Result<Stats> {
        self.requests[2].fetch_add(1, Relaxed);
        let (bot, currency) = (Arc::clone(self), currency.to_owned());
        self.cache
            .get_or_set_opts(
                &CacheKey::new("stats", &currency)?,
                self.ttl(2),
                move || async move {
                    bot.loads[2].fetch_add(1, Relaxed);
                    bot.upstream.history(&currency).await
                },
            )
            .await
    }

    /// The bot's reply to `command`, or why there is none.
    async fn answer(self: &Arc<Self>, command: &Command) -> cache::Result<String> {
        let now = self.clock.now().as_secs_f64();
        let age = |at: f64| format!("{:.0} min old", ((now - at) / 60.0).max(0.0));
        Ok(match *command {
            Command::Rate(a, b) => {
                let rates = self.rates(a).await?;
                let rate = rates.rates.get(b).copied().unwrap_or_default();
                format!("1 {a} = {rate:.4} {b} (rates {})", age(rates.at_secs))
            }
            Command::Convert(n, a, b) => {
                let (value, at) = self.convert(n, a, b).await?;
                format!("{n} {a} = {value:.2} {b} (rates {})", age(at))
            }
            Command::Stats(c) => {
                let s = self.stats(c).await?;
                format!(
                    "{c}/USD over 30 days: min {:.4}, mean {:.4}, max {:.4}",
                    s.min, s.mean, s.max
                )
            }
        })
    }

    /// Keeps a few lines of each kind for the report.
    fn say(&self, kind: Line, line: String) {
        let quota = match kind {
            Line::Answer => self.transcript_lines / 2,
            Line::Outage | Line::Limited | Line::NoData => self.transcript_lines / 6,
        }
        .max(1);
        let mut transcript = self
            .transcript
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if transcript.iter().filter(|(k, _)| *k == kind).count() < quota {
            transcript.push((kind, line));
        }
    }
}

/// Kinds of transcript lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Line {
    Answer,
    Outage,
    Limited,
    NoData,
}

/// Per-user counters, summed at the end.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    messages: u64,
    answered: u64,
    rate_limited: u64,
    unanswered: u64,
    outage_messages: u64,
    outage_answered: u64,
}

/// Runs the bot on the cache `cache` describes and reports.
///
/// The cache is opened with [`ExampleConfig::open`] (so on Redis it is the
/// production stack unless configured otherwise), with the prefix
/// `rates-bot` unless the configuration names one (cleared first, so runs
/// on a shared Redis start cold), and fail-safe keeping values `max_stale`
/// past their TTL with the `soft_timeout` unless the configuration sets
/// fail-safe. The three categories' TTLs are the simulated ones above,
/// scaled by the speedup, unless `ttls` (`CACHE_TTLS`) names a category:
/// that TTL is taken as it is, in real seconds. The rate limiter runs on
/// the cache's plain backend ([`Cache::rate_limiter`]: under fail-open and
/// the L1, so it sees Redis failures).
///
/// # Errors
///
/// The cache's errors while setting up (a backend that cannot be reached,
/// an invalid configuration). Failures during the run are counted instead.
///
/// # Examples
///
/// ```no_run
/// # async fn demo() -> cache::Result<()> {
/// use cache_examples::rates_bot::{run, BotConfig};
/// use cache_examples::stack::ExampleConfig;
///
/// // CACHE_URL picks the backend (memory:// when unset).
/// let report = run(&ExampleConfig::from_env()?, BotConfig::default()).await?;
/// println!("{report}");
/// # Ok(())
/// # }
/// ```
pub async fn run(cache: &ExampleConfig, config: BotConfig) -> cache::Result<Report> {
    let clock = SimClock::new(config.speedup);
    let mut settings = cache.clone();
    if settings.config().prefix == DEFAULT_PREFIX {
        settings.config_mut().prefix = "rates-bot".to_owned();
    }
    let mut fail_safe = FailSafeConfig::default();
    fail_safe.max_stale_secs = clock.real(config.max_stale).as_secs_f64().ceil() as u64;
    fail_safe.soft_timeout_ms = Some(
        config
            .soft_timeout
            .as_millis()
            .try_into()
            .unwrap_or(u64::MAX),
    );
    let settings = settings.with_fail_safe(fail_safe);
    let ttls = [
        ("rates", RATES_TTL),
        ("calc", CALC_TTL),
        ("stats", STATS_TTL),
    ]
    .map(|(name, simulated)| match settings.config().ttls.get(name) {
        Some(&secs) => Duration::from_secs(secs.max(0).unsigned_abs()),
        None => clock.real(simulated),
    });
    let stack = settings.describe();
    let cache = settings.open().await?;
    cache.clear().await?;
    let limit = Rule::new(
        config.user_limit.limit(),
        clock.real(config.user_limit.window()),
    );
    let limiter = cache.rate_limiter().rule("user", limit).build()?;
    let upstream = Arc::new(Upstream::new(config.upstream, clock.clone()));
    let bot = Arc::new(Bot {
        cache,
        limiter,
        upstream: Arc::clone(&upstream),
        clock: clock.clone(),
        ttls,
        requests: Default::default(),
        loads: Default::default(),
        transcript: Mutex::new(Vec::new()),
        transcript_lines: config.transcript_lines,
    });

    // Warm up, as a real bot does at start (retrying a flaky upstream
    // with a short pause): the rates every answer needs, and the
    // statistics.
    for (currency, _) in CURRENCIES {
        for _ in 0..50 {
            if bot.rates(currency).await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        for _ in 0..50 {
            if bot.stats(currency).await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    clock.restart();

    // The outage, on the simulated clock.
    let outage = config.outage.map(|(from, to)| {
        let upstream = Arc::clone(&upstream);
        let (start, end) = (
            clock.real(config.duration.mul_f64(from)),
            clock.real(config.duration.mul_f64(to)),
        );
        tokio::spawn(async move {
            tokio::time::sleep(start).await;
            upstream.down.store(true, Relaxed);
            tokio::time::sleep(end.saturating_sub(start)).await;
            upstream.down.store(false, Relaxed);
        })
    });

    let mut users = Vec::new();
    let (burst_from, burst_size) = (config.users, config.user_limit.limit() as usize + 5);
    for user in 0..config.users + config.spammers {
        let every = if user < config.users {
            config.message_every
        } else {
            config.spam_every
        };
        let (bot, duration) = (Arc::clone(&bot), config.duration);
        users.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            loop {
                // Exponential gaps: messages arrive at random, like people.
                let gap = every.mul_f64(-(1.0 - fastrand::f64()).ln());
                tokio::time::sleep(bot.clock.real(gap)).await;
                if bot.clock.now() >= duration {
                    return tally;
                }
                let who = format!("user{user}");
                // A spammer pastes a burst of commands at once: all are
                // checked against the limit before any is answered, so the
                // burst lands in one window whatever the machine's speed.
                let burst = if user < burst_from { 1 } else { burst_size };
                let mut allowed = Vec::with_capacity(burst);
                for _ in 0..burst {
                    let command = random_command();
                    tally.messages += 1;
                    match bot.limiter.check("user", &who).await {
                        Ok(decision) if !decision.allowed => {
                            tally.rate_limited += 1;
                            // The limiter works in real time; users think in simulated time.
                            let wait = decision
                                .retry_after
                                .unwrap_or_default()
                                .mul_f64(bot.clock.speedup);
                            bot.say(
                                Line::Limited,
                                format!(
                                    "{who}: {command} -> slow down, try again in {} s",
                                    wait.as_secs().max(1)
                                ),
                            );
                            continue;
                        }
                        _ => {}
                    }
                    allowed.push(command);
                }
                for command in allowed {
                    let during_outage = bot.upstream.down.load(Relaxed);
                    tally.outage_messages += u64::from(during_outage);
                    match bot.answer(&command).await {
                        Ok(reply) => {
                            tally.answered += 1;
                            tally.outage_answered += u64::from(during_outage);
                            if during_outage {
                                bot.say(
                                    Line::Outage,
                                    format!("{who}: {command} -> {reply} [upstream down]"),
                                );
                            } else {
                                bot.say(Line::Answer, format!("{who}: {command} -> {reply}"));
                            }
                        }
                        Err(err) => {
                            tally.unanswered += 1;
                            bot.say(
                                Line::NoData,
                                format!("{who}: {command} -> sorry, no data right now ({err})"),
                            );
                        }
                    }
                }
            }
        }));
    }
    let mut total = Tally::default();
    for user in users {
        let t = user
            .await
            .map_err(|e| cache::Error::new(cache::ErrorKind::Backend, e.to_string()))?;
        total.messages += t.messages;
        total.answered += t.answered;
        total.rate_limited += t.rate_limited;
        total.unanswered += t.unanswered;
        total.outage_messages += t.outage_messages;
        total.outage_answered += t.outage_answered;
    }
    if let Some(outage) = outage {
        outage.abort();
    }
    let real = clock.elapsed();
    let categories = ["rates", "calc", "stats"]
        .iter()
        .enumerate()
        .map(|(i, name)| {
            (
                *name,
                bot.ttls[i].mul_f64(config.speedup),
                bot.requests[i].load(Relaxed),
                bot.loads[i].load(Relaxed),
            )
        })
        .collect();
    let transcript = bot
        .transcript
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .map(|(_, line)| line.clone())
        .collect();
    Ok(Report {
        backend: bot.cache.backend().name(),
        stack,
        simulated: config.duration,
        real,
        messages: total.messages,
        answered: total.answered,
        rate_limited: total.rate_limited,
        unanswered: total.unanswered,
        limiter_backend_errors: bot.limiter.stats().backend_errors,
        outage_messages: total.outage_messages,
        outage_answered: total.outage_answered,
        upstream_calls: upstream.calls.load(Relaxed),
        upstream_failures: upstream.failures.load(Relaxed),
        upstream_slow: upstream.slow.load(Relaxed),
        categories,
        cache: bot.cache.stats(),
        transcript,
    })
}
