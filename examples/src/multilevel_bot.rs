//! A multi-level assistant bot: several instances of one service, each
//! with a memory L1 in front of a shared Redis, kept coherent by the
//! backplane.
//!
//! Users ask questions; answering one takes four lookups against slow
//! systems (simulated in-process, a few milliseconds each), each cached in
//! its own category with its own TTL:
//!
//! | category | TTL | what |
//! |---|---|---|
//! | `user` | 30 min | a user's permissions (roles, with a version) |
//! | `session` | 1 h | a user's session (language) |
//! | `search` | 10 min | search results; the key is hashed from the query ([`CacheKey::hashed`]) |
//! | `translation` | 24 h | a translated answer; the key is hashed from text and language |
//!
//! Every instance is a [`Cache`] opened with [`cache::open`] from one
//! [`CacheConfig`](cache::CacheConfig) ([`bot_config`] fills in what the
//! user left unset: TTLs, an L1, the backplane on Redis, the report's
//! thresholds and the `ask` rate limit), as a production service would.
//! A permission change is written through on one instance; the others drop
//! their L1 copy when the backplane's message arrives, and their next read
//! sees the change. Each instance's stats say which tier answered
//! (`l1_hits`, `l2_hits`), and [`Cache::report`] gives advice against the
//! configured thresholds.
//!
//! On `memory://` there is nothing to share: one instance runs, with an L1
//! over the memory backend.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use cache::{
    BackplaneConfig, Cache, CacheKey, CacheReport, CacheStats, L1Config, RateLimiter, ReportConfig,
    DEFAULT_PREFIX,
};
use serde::{Deserialize, Serialize};

use crate::stack::ExampleConfig;

/// TTL of a user's permissions.
pub const PERMISSIONS_TTL: Duration = Duration::from_secs(30 * 60);
/// TTL of a session.
pub const SESSION_TTL: Duration = Duration::from_secs(60 * 60);
/// TTL of search results.
pub const SEARCH_TTL: Duration = Duration::from_secs(10 * 60);
/// TTL of a translation.
pub const TRANSLATION_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// The cache categories and their TTLs, as [`bot_config`] sets them.
pub const CATEGORIES: [(&str, Duration); 4] = [
    ("user", PERMISSIONS_TTL),
    ("session", SESSION_TTL),
    ("search", SEARCH_TTL),
    ("translation", TRANSLATION_TTL),
];

/// The rate limit rule every question is checked against.
pub const ASK_RULE: &str = "ask";
/// Its default: 30 questions per minute and user.
pub const ASK_LIMIT: &str = "30/min";
/// The key prefix the bot uses unless one is configured.
pub const PREFIX: &str = "assistant";
/// The L1 size the bot uses unless one is configured.
pub const L1_ENTRIES: usize = 200;

/// A user's permissions, from the permission database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Permissions {
    /// The user.
    pub user: u64,
    /// Their roles.
    pub roles: Vec<String>,
    /// Bumped by every change.
    pub version: u64,
}

/// A user's session, from the session store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// The user.
    pub user: u64,
    /// The language answers are translated to.
    pub language: String,
}

/// A search, as its key is hashed from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SearchQuery {
    /// What was asked.
    pub text: String,
    /// Only results the user may see: the search depends on the roles.
    pub roles: Vec<String>,
}

/// How many calls each slow system answered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct BackendCalls {
    /// Permission database reads.
    pub permissions: u64,
    /// Session store reads.
    pub sessions: u64,
    /// Search engine queries.
    pub searches: u64,
    /// Translation service calls.
    pub translations: u64,
}

/// The slow systems behind the bot (simulated): a permission database, a
/// session store, a search engine and a translation service. Every call
/// takes `latency`.
#[derive(Debug)]
pub struct Backend {
    latency: Duration,
    permissions: Mutex<HashMap<u64, Permissions>>,
    calls: [AtomicU64; 4],
}

const LANGUAGES: [&str; 3] = ["en", "de", "fr"];

impl Backend {
    /// Systems that take `latency` per call.
    pub fn new(latency: Duration) -> Self {
        Backend {
            latency,
            permissions: Mutex::new(HashMap::new()),
            calls: Default::default(),
        }
    }

    async fn call(&self, which: usize) {
        self.calls[which].fetch_add(1, Relaxed);
        tokio::time::sleep(self.latency).await;
    }

    fn db(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Permissions>> {
        self.permissions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Reads a user's permissions (every user starts as a `reader`).
    pub async fn load_permissions(&self, user: u64) -> Permissions {
        self.call(0).await;
        self.db()
            .entry(user)
            .or_insert_with(|| Permissions {
                user,
                roles: vec!["reader".to_owned()],
                version: 1,
            })
            .clone()
    }

    /// Gives `user` the role `role` in the database; returns the new
    /// permissions.
    pub fn change_permissions(&self, user: u64, role: &str) -> Permissions {
        let mut db = self.db();
        let entry = db.entry(user).or_insert_with(|| Permissions {
            user,
            roles: vec!["reader".to_owned()],
            version: 1,
        });
        if !entry.roles.iter().any(|r| r == role) {
            entry.roles.push(role.to_owned());
        }
        entry.version += 1;
        entry.clone()
    }

    /// Reads a user's session.
    pub async fn load_session(&self, user: u64) -> Session {
        self.call(1).await;
        Session {
            user,
            language: LANGUAGES[(user % 3) as usize].to_owned(),
        }
    }

    /// Runs a search.
    pub async fn search(&self, query: &SearchQuery) -> Vec<String> {
        self.call(2).await;
        let mut results = vec![format!("the guide to {}", query.text)];
        if query.roles.iter().any(|r| r == "admin") {
            results.push(format!("internal notes on {}", query.text));
        }
        results
    }

    /// Translates `text` into `language`.
    pub async fn translate(&self, text: &str, language: &str) -> String {
        self.call(3).await;
        format!("[{language}] {text}")
    }

    /// The calls answered so far.
    pub fn calls(&self) -> BackendCalls {
        let n = |i: usize| self.calls[i].load(Relaxed);
        BackendCalls {
            permissions: n(0),
            sessions: n(1),
            searches: n(2),
            translations: n(3),
        }
    }
}

/// `config` with the bot's settings for what the user left unset: the
/// prefix `assistant`, the TTLs of [`CATEGORIES`], an L1 of
/// [`L1_ENTRIES`] entries, the backplane (on Redis), the rate limit
/// `ask=30/min`, and report advice under a 70% hit rate (after 50 reads)
/// and over 90% L1 fill.
///
/// # Examples
///
/// ```
/// use cache_examples::multilevel_bot::bot_config;
/// use cache_examples::stack::ExampleConfig;
///
/// let config = bot_config(ExampleConfig::from_url("redis://127.0.0.1:6379")).resolved();
/// assert_eq!(config.ttls["user"], 30 * 60);
/// assert!(config.l1.is_some() && config.backplane.is_some());
/// assert_eq!(config.report.low_hit_rate, 0.7);
/// assert_eq!(config.rate_limits["ask"], "30/min");
///
/// let memory = bot_config(ExampleConfig::from_url("memory://")).resolved();
/// assert!(memory.l1.is_some() && memory.backplane.is_none());
/// ```
pub fn bot_config(mut config: ExampleConfig) -> ExampleConfig {
    let redis = config.is_redis();
    let c = config.config_mut();
    if c.prefix == DEFAULT_PREFIX {
        PREFIX.clone_into(&mut c.prefix);
    }
    for (category, ttl) in CATEGORIES {
        c.ttls
            .entry(category.to_owned())
            .or_insert(ttl.as_secs() as i64);
    }
    if c.l1.is_none() {
        let mut l1 = L1Config::default();
        l1.max_entries = Some(L1_ENTRIES);
        c.l1 = Some(l1);
    }
    if redis && c.backplane.is_none() {
        c.backplane = Some(BackplaneConfig::default());
    }
    c.rate_limits
        .entry(ASK_RULE.to_owned())
        .or_insert_with(|| ASK_LIMIT.to_owned());
    if c.report == ReportConfig::default() {
        c.report.min_reads = 50;
        c.report.low_hit_rate = 0.7;
        c.report.near_capacity = 0.9;
    }
    config
}

/// One instance of the bot: its own cache (L1 and all) over the shared
/// backend, and the slow systems.
#[derive(Debug, Clone)]
pub struct Instance {
    /// Its name in the output (`bot-a`, `bot-b`).
    pub name: String,
    /// Its cache.
    pub cache: Cache,
    backend: Arc<Backend>,
}

impl Instance {
    /// An instance named `name` on `cache`, in front of `backend`.
    pub fn new(name: impl Into<String>, cache: Cache, backend: Arc<Backend>) -> Self {
        Instance {
            name: name.into(),
            cache,
            backend,
        }
    }

    /// The cache key of a user's permissions.
    ///
    /// # Errors
    ///
    /// None in practice (the category is valid).
    pub fn permissions_key(user: u64) -> cache::Result<CacheKey> {
        CacheKey::new("user", user)
    }

    /// A user's permissions, cached for 30 minutes.
    ///
    /// # Errors
    ///
    /// The cache's errors (with fail-open, an outage is a load instead).
    pub async fn permissions(&self, user: u64) -> cache::Result<Permissions> {
        let backend = Arc::clone(&self.backend);
        self.cache
            .get_or_set(&Self::permissions_key(user)?, move || async move {
                Ok::<_, cache::Error>(backend.load_permissions(user).await)
            })
            .await
    }

    /// Gives `user` the role `role`: the database first, then the cache
    /// (write-through), whose backplane tells the other instances to drop
    /// their L1 copy.
    ///
    /// # Errors
    ///
    /// The cache's errors.
    pub async fn grant(&self, user: u64, role: &str) -> cache::Result<Permissions> {
        let permissions = self.backend.change_permissions(user, role);
        self.cache
            .set(&Self::permissions_key(user)?, &permissions)
            .await?;
        Ok(permissions)
    }

    /// A user's session, cached for an hour.
    ///
    /// # Errors
    ///
    /// The cache's errors.
    pub async fn session(&self, user: u64) -> cache::Result<Session> {
        let backend = Arc::clone(&self.backend);
        self.cache
            .get_or_set(&CacheKey::new("session", user)?, move || async move {
                Ok::<_, cache::Error>(backend.load_session(user).await)
            })
            .await
    }

    /// Search results, cached for 10 minutes under a key hashed from the
    /// query.
    ///
    /// # Errors
    ///
    /// The cache's errors.
    pub async fn search(&self, query: &SearchQuery) -> cache::Result<Vec<String>> {
        let backend = Arc::clone(&self.backend);
        let owned = query.clone();
        self.cache
            .get_or_set(&CacheKey::hashed("search", query)?, || async move {
                Ok::<_, cache::Error>(backend.search(&owned).await)
            })
            .await
    }

    /// A translation, cached for a day under a key hashed from the text
    /// and the language.
    ///
    /// # Errors
    ///
    /// The cache's errors.
    pub async fn translate(&self, text: &str, language: &str) -> cache::Result<String> {
        let backend = Arc::clone(&self.backend);
        let (t, l) = (text.to_owned(), language.to_owned());
        self.cache
            .get_or_set(
                &CacheKey::hashed("translation", &(text, language))?,
                || async move { Ok::<_, cache::Error>(backend.translate(&t, &l).await) },
            )
            .await
    }

    /// Answers `question` for `user`: permissions, session, search,
    /// translation of the first result.
    ///
    /// # Errors
    ///
    /// The cache's errors.
    pub async fn ask(&self, user: u64, question: &str) -> cache::Result<String> {
        let permissions = self.permissions(user).await?;
        let session = self.session(user).await?;
        let query = SearchQuery {
            text: question.to_owned(),
            roles: permissions.roles,
        };
        let results = self.search(&query).await?;
        let first = results.first().map_or("nothing found", String::as_str);
        self.translate(first, &session.language).await
    }
}

/// What a run does.
#[derive(Debug, Clone, PartialEq)]
pub struct RunConfig {
    /// Distinct users.
    pub users: u64,
    /// Questions asked in all (spread over the instances in turn).
    pub questions: u64,
    /// Distinct questions (popular ones are asked more often).
    pub distinct_questions: u64,
    /// Permission changes made on the first instance during the run.
    pub permission_changes: u64,
    /// Extra questions a spammer (user 0) fires in a burst, to hit the
    /// rate limit.
    pub spam: u64,
    /// The latency of the slow systems.
    pub latency: Duration,
    /// The seed of the simulated traffic.
    pub seed: u64,
}

impl Default for RunConfig {
    fn default() -> Self {
        RunConfig {
            users: 40,
            questions: 400,
            distinct_questions: 60,
            permission_changes: 4,
            spam: 45,
            latency: Duration::from_millis(3),
            seed: 13,
        }
    }
}

/// One instance's figures at the end of a run.
#[derive(Debug, Clone)]
pub struct InstanceReport {
    /// The instance's name.
    pub name: String,
    /// Questions it answered.
    pub answered: u64,
    /// Its cache's counters (with `l1_hits` and `l2_hits`).
    pub stats: CacheStats,
    /// Its cache's report, with advice against the configured thresholds.
    pub report: CacheReport,
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct Report {
    /// The stack every instance runs on.
    pub stack: String,
    /// Per instance.
    pub instances: Vec<InstanceReport>,
    /// Questions refused by the `ask` rate limit.
    pub rate_limited: u64,
    /// Permission changes made on the first instance.
    pub permission_changes: u64,
    /// Of those, how many the last instance saw on its first read after
    /// the backplane's message arrived (all of them, when coherent).
    pub changes_seen: u64,
    /// The longest a change took to reach the last instance's L1
    /// (the backplane's delay).
    pub max_propagation: Duration,
    /// Calls the slow systems answered.
    pub backend_calls: BackendCalls,
    /// How long the run took.
    pub elapsed: Duration,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "stack: {}", self.stack)?;
        let c = &self.backend_calls;
        writeln!(
            f,
            "slow systems called: permissions {}, sessions {}, searches {}, translations {}; \
             {} questions rate limited; run took {:.2} s",
            c.permissions,
            c.sessions,
            c.searches,
            c.translations,
            self.rate_limited,
            self.elapsed.as_secs_f64()
        )?;
        if self.instances.len() > 1 {
            writeln!(
                f,
                "coherence: {} permission changes on {}, {} seen by {} on its next read \
                 (backplane delay up to {} µs); with the backplane, each typed read also \
                 reads its category's generation marker (an L1 hit, mostly)",
                self.permission_changes,
                self.instances[0].name,
                self.changes_seen,
                self.instances[self.instances.len() - 1].name,
                self.max_propagation.as_micros()
            )?;
        }
        for i in &self.instances {
            let s = &i.stats;
            writeln!(f, "--- {} ({} questions answered)", i.name, i.answered)?;
            writeln!(
                f,
                "typed reads: {} hits, {} misses ({:.1}% hit rate); key reads through the \
                 stack: L1 hits {}, L2 hits {}; backplane: {} invalidations sent, {} received",
                s.hits,
                s.misses,
                s.hit_rate() * 100.0,
                s.l1_hits,
                s.l2_hits,
                s.invalidations_published,
                s.invalidations_received
            )?;
            write!(f, "{}", i.report)?;
        }
        Ok(())
    }
}

/// Opens the instances `config` describes: two over a shared Redis, one
/// on memory (nothing to share).
///
/// # Errors
///
/// As [`ExampleConfig::open`].
pub async fn open_instances(
    config: &ExampleConfig,
    backend: &Arc<Backend>,
) -> cache::Result<Vec<Instance>> {
    let names: &[&str] = if config.is_redis() {
        &["bot-a", "bot-b"]
    } else {
        &["bot-a"]
    };
    let mut instances = Vec::new();
    for name in names {
        instances.push(Instance::new(
            *name,
            config.open().await?,
            Arc::clone(backend),
        ));
    }
    Ok(instances)
}

/// Waits (up to 2 s) until `to` has applied every invalidation `from` has
/// published; returns how long it took.
pub async fn wait_for_backplane(from: &Cache, to: &Cache) -> Duration {
    let started = Instant::now();
    while to.stats().invalidations_received < from.stats().invalidations_published
        && started.elapsed() < Duration::from_secs(2)
    {
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    started.elapsed()
}

/// Runs the bot on the cache `config` describes ([`bot_config`] fills in
/// the bot's defaults) and reports.
///
/// # Errors
///
/// The cache's errors, and a rate limit rule that does not parse
/// ([`Config`](cache::ErrorKind::Config)).
///
/// # Examples
///
/// ```no_run
/// # async fn demo() -> cache::Result<()> {
/// use cache_examples::multilevel_bot::{run, RunConfig};
/// use cache_examples::stack::ExampleConfig;
///
/// let report = run(ExampleConfig::from_env()?, RunConfig::default()).await?;
/// println!("{report}");
/// # Ok(())
/// # }
/// ```
pub async fn run(config: ExampleConfig, run: RunConfig) -> cache::Result<Report> {
    let config = bot_config(config);
    let backend = Arc::new(Backend::new(run.latency));
    let instances = open_instances(&config, &backend).await?;
    let resolved = config.resolved();
    let limiter: RateLimiter = resolved.rate_limiter(&instances[0].cache)?;
    let first = &instances[0];
    let last = &instances[instances.len() - 1];
    let started = Instant::now();
    let mut rng = fastrand::Rng::with_seed(run.seed);
    let mut answered: BTreeMap<usize, u64> = BTreeMap::new();
    let mut rate_limited = 0;
    let (mut changes_seen, mut max_propagation) = (0, Duration::ZERO);
    let change_every = run.questions / (run.permission_changes + 1);
    let mut changes = 0;
    // A burst from the spammer (user 0) first: past the limit, questions
    // are refused. Then the users, one question each in turn of the
    // instances; popular questions are asked more often (the square skews
    // towards low numbers).
    let spam = (0..run.spam).map(|_| (0, 0));
    let traffic: Vec<(u64, u64)> = (0..run.questions)
        .map(|_| {
            let q = (rng.f64().powi(2) * run.distinct_questions as f64) as u64;
            (1 + rng.u64(0..run.users.max(1)), q)
        })
        .collect();
    for (n, (user, q)) in spam.chain(traffic).enumerate() {
        let instance = n % instances.len();
        if !limiter.check(ASK_RULE, user).await?.allowed {
            rate_limited += 1;
            continue;
        }
        instances[instance]
            .ask(user, &format!("question {q}"))
            .await?;
        *answered.entry(instance).or_default() += 1;
        let past_spam = (n as u64 + 1).saturating_sub(run.spam);
        if user != 0
            && changes < run.permission_changes
            && past_spam > 0
            && past_spam % change_every.max(1) == 0
        {
            // An admin promotes this user on the first instance; the last
            // one, with the old permissions in its L1, must see it.
            changes += 1;
            last.permissions(user).await?;
            let granted = first.grant(user, "admin").await?;
            let delay = wait_for_backplane(&first.cache, &last.cache).await;
            max_propagation = max_propagation.max(delay);
            if last.permissions(user).await? == granted {
                changes_seen += 1;
            }
        }
    }
    let elapsed = started.elapsed();
    // Let the last invalidations arrive, so the counters are settled.
    wait_for_backplane(&first.cache, &last.cache).await;
    wait_for_backplane(&last.cache, &first.cache).await;
    let mut reports = Vec::new();
    for (i, instance) in instances.iter().enumerate() {
        reports.push(InstanceReport {
            name: instance.name.clone(),
            answered: answered.get(&i).copied().unwrap_or(0),
            stats: instance.cache.stats(),
            report: instance.cache.report().await,
        });
    }
    Ok(Report {
        stack: config.describe(),
        instances: reports,
        rate_limited,
        permission_changes: changes,
        changes_seen,
        max_propagation,
        backend_calls: backend.calls(),
        elapsed,
    })
}
