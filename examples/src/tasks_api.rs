//! The tasks API: an HTTP service (axum) over an embedded SQL database
//! (SQLite), with each user's task list cached under a per-user key and
//! login attempts throttled by the rate limiter.
//!
//! | route | what |
//! |---|---|
//! | `POST /users` `{"name","password"}` | register (201) |
//! | `POST /login` `{"name","password"}` | a bearer token: a new session (200); 401; 429 with `Retry-After` after 5 attempts a minute |
//! | `POST /logout` | ends the caller's session (204) |
//! | `GET /tasks` | the caller's tasks; `X-Cache: hit`, `miss` or `bypass` |
//! | `POST /tasks` `{"title"}` | create (201): the list is invalidated |
//! | `PUT /tasks/{id}` `{"title"?, "done"?}` | update (200): the new row is written through to the cached list |
//! | `DELETE /tasks/{id}` | delete (204): the list is invalidated |
//! | `GET /health` | the cache backend's and the database's health (200 or 503) |
//! | `GET /metrics` | Prometheus text: cache, rate limiter, database, HTTP |
//!
//! # Sessions and rate limits
//!
//! A login creates a session in the cache ([`CacheSessionStore`]: the
//! session's expiry date is the entry's TTL, so an expired session is gone
//! from Redis by itself); its id is the bearer token. Logout deletes it.
//! The database holds no sessions, so a session lives as long as the
//! cache keeps it: a Redis restarted without persistence logs everyone out,
//! and while the cache cannot be reached (and the L1 has no copy) requests
//! with a session get 503, not 401.
//!
//! Requests to the API routes without a valid session are limited per
//! client under the rule `anon` ([`anon_rule`] by default): the client is
//! the first address of `X-Forwarded-For` when present (set it in the
//! proxy in front of the service; a client talking to the service directly
//! can forge it), else the peer's IP. `/health`, `/metrics` and `/stats`
//! are not limited. Callers with a session are limited per user under
//! `api`, failed logins per name under `login`.
//!
//! # Why nobody sees a stale list or someone else's
//!
//! - Lists are cached under `tasks:{user id}`, the id taken from the
//!   session, never from the request; every query filters by that user.
//! - Writes change the cache right after the database commit: create and
//!   delete remove the cached list, update replaces the row in it.
//! - The classic race of cache-aside — a reader loads the old list, a
//!   writer commits and invalidates, then the reader stores the old list —
//!   is closed with a per-user lease in the cache itself (`SET NX PX` on
//!   Redis): a reader stores a list it loaded only while holding the lease,
//!   and writers take the lease around commit + cache update. A reader that
//!   finds the lease taken serves the database's answer without caching
//!   it. The lease lives in the shared backend, so this holds across
//!   instances too; it expires after 10 s if its holder dies. Each lease
//!   carries a token: a reader stores only if the lease is still its own,
//!   and only the holder releases it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, FromRequestParts, MatchedPath, Path, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use cache::sessions::{CacheSessionStore, Id, Record, SessionError, SessionStore};
use cache::{Cache, CacheKey, Decision, HealthStatus, OnBackendError, RateLimiter, Rule, Ttl};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::stack::ExampleConfig;

mod db;
pub use db::Db;

/// The key prefix of the API's cache entries and rate limit counters.
pub const PREFIX: &str = "tasks-api";

/// How long a cached task list lives.
pub const LIST_TTL: Duration = Duration::from_secs(60);

/// How long a session lives after login (unless
/// [`TasksApi::with_session_ttl`] says otherwise).
pub const SESSION_TTL: Duration = Duration::from_secs(300);

/// How many requests without a session a client may send a minute under
/// the default `anon` rule ([`anon_rule`]).
pub const ANON_PER_MINUTE: u64 = 120;

/// The default `anon` rule: [`ANON_PER_MINUTE`] requests a minute per
/// client, allowed while the backend is down.
pub fn anon_rule() -> Rule {
    Rule::per_minute(ANON_PER_MINUTE)
}

/// The session data field holding the user id.
const SESSION_USER: &str = "user_id";

/// How long a per-user lease lives if its holder never releases it. Long
/// against any request (a holder stalled past it loses exclusivity, and a
/// starved CI machine stalls for seconds), short enough that a crashed
/// holder delays that user's writes only briefly.
const LEASE_TTL: Duration = Duration::from_secs(10);

/// A task, as stored and as served.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    /// The task's id.
    pub id: i64,
    /// The owner.
    pub user_id: i64,
    /// What to do.
    pub title: String,
    /// Whether it is done.
    pub done: bool,
    /// Last change, Unix milliseconds.
    pub updated_at: i64,
}

/// An error answer: a status and a JSON body `{"error": ...}`.
#[derive(Debug)]
pub enum ApiError {
    /// 400.
    BadRequest(String),
    /// 401, saying why.
    Unauthorized(&'static str),
    /// 404 (also for another user's task: its existence is not revealed).
    NotFound,
    /// 409.
    Conflict(String),
    /// 429, with the rate limiter's headers.
    TooManyRequests(Decision),
    /// 503: a part the request needs (the session store) cannot be reached.
    Unavailable(String),
    /// 500.
    Internal(String),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, message, headers) = match self {
            ApiError::BadRequest(m) => (StatusCode::BAD_REQUEST, m, HeaderMap::new()),
            ApiError::Unauthorized(why) => (StatusCode::UNAUTHORIZED, why.into(), HeaderMap::new()),
            ApiError::NotFound => (
                StatusCode::NOT_FOUND,
                "no such task".into(),
                HeaderMap::new(),
            ),
            ApiError::Conflict(m) => (StatusCode::CONFLICT, m, HeaderMap::new()),
            ApiError::TooManyRequests(decision) => (
                StatusCode::TOO_MANY_REQUESTS,
                "too many requests".into(),
                Decision::header_map(&decision),
            ),
            ApiError::Internal(m) => (StatusCode::INTERNAL_SERVER_ERROR, m, HeaderMap::new()),
            ApiError::Unavailable(m) => (StatusCode::SERVICE_UNAVAILABLE, m, HeaderMap::new()),
        };
        (
            status,
            headers,
            Json(serde_json::json!({ "error": message })),
        )
            .into_response()
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApiError::BadRequest(m)
            | ApiError::Conflict(m)
            | ApiError::Internal(m)
            | ApiError::Unavailable(m) => f.write_str(m),
            ApiError::Unauthorized(why) => f.write_str(why),
            ApiError::NotFound => f.write_str("no such task"),
            ApiError::TooManyRequests(d) => {
                write!(f, "too many requests; retry after {:?}", d.retry_after)
            }
        }
    }
}

impl std::error::Error for ApiError {}

impl From<rusqlite::Error> for ApiError {
    fn from(err: rusqlite::Error) -> Self {
        ApiError::Internal(format!("database: {err}"))
    }
}

/// Requests by (method, route, status): (count, total seconds).
type HttpStats = BTreeMap<(String, String, u16), (u64, f64)>;

/// Counters behind `/metrics` that the cache and limiter do not keep.
#[derive(Debug, Default)]
struct Metrics {
    list_hit: AtomicU64,
    list_miss: AtomicU64,
    list_bypass: AtomicU64,
    lease_busy: AtomicU64,
    cache_write_failures: AtomicU64,
    http: Mutex<HttpStats>,
}

/// The service: database, optional cache, rate limiter, metrics.
///
/// # Examples
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
/// use cache_examples::tasks_api::TasksApi;
///
/// // CACHE_URL picks the backend (memory:// when unset).
/// let api = TasksApi::from_env().await?;
/// let server = api.serve("127.0.0.1:3000".parse()?).await?;
/// println!("listening on http://{}", server.addr());
/// server.shutdown().await;
/// # Ok(())
/// # }
/// ```
pub struct TasksApi {
    db: Db,
    cache: Option<Cache>,
    sessions: CacheSessionStore,
    session_ttl: Duration,
    limiter: RateLimiter,
    metrics: Metrics,
}

impl std::fmt::Debug for TasksApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TasksApi")
            .field("db", &self.db)
            .field("cache", &self.cache)
            .field("limiter", &self.limiter)
            .finish_non_exhaustive()
    }
}

/// The rate limit rules: `login` 5 attempts a minute per name (denied while
/// the backend is down: an outage must not open the door to password
/// guessing), `api` per user (allowed while the backend is down), `anon`
/// per client without a session ([`anon_rule`]).
///
/// # Errors
///
/// As [`RateLimiterBuilder::build`](cache::RateLimiterBuilder::build).
pub fn rate_limiter(
    backend: Arc<dyn cache::CacheBackend>,
    prefix: &str,
    api_rule: Rule,
) -> cache::Result<RateLimiter> {
    rate_limiter_with(backend, prefix, api_rule, anon_rule())
}

/// [`rate_limiter`] with an `anon` rule of the caller's.
///
/// # Errors
///
/// As [`RateLimiterBuilder::build`](cache::RateLimiterBuilder::build).
pub fn rate_limiter_with(
    backend: Arc<dyn cache::CacheBackend>,
    prefix: &str,
    api_rule: Rule,
    anon: Rule,
) -> cache::Result<RateLimiter> {
    RateLimiter::builder(backend)
        .prefix(prefix)
        .rule(
            "login",
            Rule::per_minute(5).on_backend_error(OnBackendError::Deny),
        )
        .rule("api", api_rule)
        .rule("anon", anon)
        .build()
}

/// The API's settings over `config`: the prefix [`PREFIX`] unless the
/// configuration names one, and the list TTL.
fn with_api_defaults(config: &ExampleConfig) -> ExampleConfig {
    let mut config = config.clone();
    let cache = config.config_mut();
    if cache.prefix == cache::DEFAULT_PREFIX {
        cache.prefix = PREFIX.to_owned();
    }
    cache
        .ttls
        .insert("tasks".to_owned(), LIST_TTL.as_secs() as i64);
    config
}

/// Opens the cache `config` describes ([`ExampleConfig::open`]: on Redis
/// the production stack unless configured otherwise), with the list TTL,
/// and the prefix [`PREFIX`] unless the configuration names one.
///
/// # Errors
///
/// As [`cache::open`].
pub async fn open_cache(config: &ExampleConfig) -> cache::Result<Cache> {
    // Boxed: opening a backend is a deep future, and so is a service.
    Box::pin(with_api_defaults(config).open()).await
}

impl TasksApi {
    /// The service over `db`, caching in `cache` (`None`: no caching, every
    /// list is read from the database), limiting with `limiter`. Sessions
    /// live in `cache` ([`CacheSessionStore`]); without one, in a memory
    /// cache of this process.
    pub fn new(db: Db, cache: Option<Cache>, limiter: RateLimiter) -> Self {
        let session_cache = cache
            .clone()
            .unwrap_or_else(|| Cache::new(Arc::new(cache::memory::MemoryBackend::new())));
        TasksApi {
            db,
            cache,
            sessions: CacheSessionStore::new(session_cache),
            session_ttl: SESSION_TTL,
            limiter,
            metrics: Metrics::default(),
        }
    }

    /// The same service with sessions that live `ttl` after login
    /// (default [`SESSION_TTL`]).
    #[must_use]
    pub fn with_session_ttl(mut self, ttl: Duration) -> Self {
        self.session_ttl = ttl;
        self
    }

    /// Checks `name` and `password` and opens a session; returns its id,
    /// the bearer token. (`POST /login` also applies the `login` rule.)
    ///
    /// # Errors
    ///
    /// [`ApiError::Unauthorized`] for a wrong name or password;
    /// [`ApiError::Unavailable`] when the session cannot be stored.
    pub async fn login(&self, name: &str, password: &str) -> Result<String, ApiError> {
        let user_id = self.db.check_password(name, password).await?;
        let lives = time_duration(self.session_ttl);
        let mut record = Record {
            id: Id::default(),
            data: [(SESSION_USER.to_owned(), serde_json::json!(user_id))].into(),
            expiry_date: time::OffsetDateTime::now_utc() + lives,
        };
        self.sessions
            .create(&mut record)
            .await
            .map_err(session_error)?;
        Ok(record.id.to_string())
    }

    /// The user of a bearer token: `None` for a token that names no live
    /// session (malformed, unknown, expired or logged out).
    async fn session_user(&self, token: &str) -> Result<Option<(Id, i64)>, ApiError> {
        let Ok(id) = token.parse::<Id>() else {
            return Ok(None);
        };
        let record = self.sessions.load(&id).await.map_err(session_error)?;
        Ok(record
            .and_then(|r| r.data.get(SESSION_USER).and_then(serde_json::Value::as_i64))
            .map(|user| (id, user)))
    }

    /// The service over `db`, caching in the cache `config` describes
    /// ([`open_cache`]), limiting with [`rate_limiter`] (`api_rule` per
    /// user) on the cache's plain backend ([`Cache::plain_backend`]: under
    /// fail-open and the L1, so the limiter sees Redis failures).
    ///
    /// # Errors
    ///
    /// The cache's errors (a Redis that cannot be reached at start).
    pub async fn open(config: &ExampleConfig, db: Db, api_rule: Rule) -> cache::Result<Self> {
        let config = with_api_defaults(config);
        let cache = Box::pin(config.open()).await?;
        let limiter = rate_limiter(Arc::clone(cache.plain_backend()), cache.prefix(), api_rule)?;
        Ok(TasksApi::new(db, Some(cache), limiter))
    }

    /// The service as configured by the environment: `CACHE_URL` (and the
    /// other `CACHE_*` variables, or `CACHE_CONFIG_FILE`) for the cache,
    /// `DATABASE_URL=postgres://...` for PostgreSQL, else `TASKS_DB` for
    /// the SQLite file (in memory when unset; the cache's prefix is then
    /// cleared, as it describes a database that is gone).
    ///
    /// # Errors
    ///
    /// The cache's and the database's errors.
    pub async fn from_env() -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        let config = ExampleConfig::from_env()?;
        let path = match std::env::var("DATABASE_URL") {
            Ok(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => url,
            _ => std::env::var("TASKS_DB").unwrap_or_else(|_| ":memory:".into()),
        };
        let db = Db::connect(&path).await?;
        let api = TasksApi::open(&config, db, Rule::per_minute(600)).await?;
        if let (":memory:", Some(cache)) = (path.as_str(), api.cache()) {
            // A new database: what a shared cache (Redis) holds under this
            // prefix describes an old one.
            cache.clear().await?;
        }
        Ok(api)
    }

    /// The database.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// The cache, when caching is on.
    pub fn cache(&self) -> Option<&Cache> {
        self.cache.as_ref()
    }

    /// The HTTP routes.
    pub fn router(self: Arc<Self>) -> Router {
        Router::new()
            .route("/users", post(register))
            .route("/login", post(login))
            .route("/logout", post(logout))
            .route("/tasks", get(list_tasks).post(create_task))
            .route("/tasks/{id}", put(update_task).delete(delete_task))
            .route_layer(middleware::from_fn_with_state(
                Arc::clone(&self),
                authenticate,
            ))
            .route("/health", get(health))
            .route("/metrics", get(metrics))
            .route("/stats", get(stats))
            .route_layer(middleware::from_fn_with_state(Arc::clone(&self), track))
            .with_state(self)
    }

    /// Serves the API on `addr` (port 0: a free one) until
    /// [`Server::shutdown`].
    ///
    /// # Errors
    ///
    /// When `addr` cannot be bound.
    pub async fn serve(self, addr: SocketAddr) -> std::io::Result<Server> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let router = Arc::new(self).router();
        let task = tokio::spawn(async move {
            let router = router.into_make_service_with_connect_info::<SocketAddr>();
            let _ = axum::serve(listener, router)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
        });
        Ok(Server { addr, stop, task })
    }

    /// The cached list of `user_id`, or the database's. Returns whether it
    /// was a hit, a miss or a bypass (no cache, or the cache failed).
    async fn tasks_of(&self, user_id: i64) -> Result<(Vec<Task>, &'static str), ApiError> {
        let Some(cache) = &self.cache else {
            self.metrics.list_bypass.fetch_add(1, Relaxed);
            return Ok((self.db.list_tasks(user_id).await?, "bypass"));
        };
        let key = list_key(user_id)?;
        match cache.get::<Vec<Task>>(&key).await {
            Ok(Some(tasks)) => {
                self.metrics.list_hit.fetch_add(1, Relaxed);
                return Ok((tasks, "hit"));
            }
            Ok(None) => {}
            Err(err) => {
                // A cache outage is not the user's problem: read the database.
                log_warn(&format!("cache read failed: {err}"));
                self.metrics.list_bypass.fetch_add(1, Relaxed);
                return Ok((self.db.list_tasks(user_id).await?, "bypass"));
            }
        }
        self.metrics.list_miss.fetch_add(1, Relaxed);
        // Store what we load only while holding the user's lease, so a
        // write cannot slip in between our read and our store.
        let lease = self.try_lease(cache, user_id).await;
        let tasks = self.db.list_tasks(user_id).await?;
        if let Some(lease) = lease {
            // Still ours (not expired and taken by a writer meanwhile)?
            if lease.held(cache).await
                && cache
                    .set_with_ttl(&key, &tasks, Ttl::Default)
                    .await
                    .is_err()
            {
                self.metrics.cache_write_failures.fetch_add(1, Relaxed);
            }
            lease.release(cache).await;
        } else {
            self.metrics.lease_busy.fetch_add(1, Relaxed);
        }
        Ok((tasks, "miss"))
    }

    /// Runs a write (`commit`), then the cache update `after` picks from
    /// its result, holding the user's lease around both.
    async fn write<R>(
        &self,
        user_id: i64,
        commit: impl std::future::Future<Output = Result<R, ApiError>>,
        after: impl FnOnce(&R) -> CacheUpdate,
    ) -> Result<R, ApiError> {
        let Some(cache) = &self.cache else {
            return commit.await;
        };
        let key = list_key(user_id)?;
        let lease = self.lease(cache, user_id).await;
        let result = commit.await;
        if let Ok(value) = &result {
            match after(value) {
                CacheUpdate::Nothing => {}
                CacheUpdate::WriteThrough(task) if lease.is_some() => {
                    self.write_through(cache, &key, task).await;
                }
                // Without the lease (the cache is down or slow), another
                // writer may be changing the same list: a read-modify-write
                // could store a list that misses their change (and, with
                // the shared tier down, the L1 keeps what it is given), so
                // invalidate instead.
                CacheUpdate::Invalidate | CacheUpdate::WriteThrough(_) => {
                    self.invalidate(cache, &key).await;
                }
            }
        }
        if let Some(lease) = lease {
            lease.release(cache).await;
        }
        result
    }

    /// Puts a committed row into the cached list (when one is cached).
    async fn write_through(&self, cache: &Cache, key: &CacheKey, task: Task) {
        match cache.get::<Vec<Task>>(key).await {
            Ok(Some(mut tasks)) => match tasks.iter_mut().find(|t| t.id == task.id) {
                Some(slot) => {
                    *slot = task;
                    if cache.set(key, &tasks).await.is_err() {
                        self.invalidate(cache, key).await;
                    }
                }
                None => self.invalidate(cache, key).await,
            },
            Ok(None) => {}
            Err(_) => self.invalidate(cache, key).await,
        }
    }

    /// Removes the cached list; counts a failure (the list then lives
    /// until its TTL, the one way a stale list can be seen: the cache was
    /// reachable for the read but not for the invalidation).
    async fn invalidate(&self, cache: &Cache, key: &CacheKey) {
        if let Err(err) = cache.delete(key).await {
            self.metrics.cache_write_failures.fetch_add(1, Relaxed);
            log_warn(&format!("invalidating {key} failed: {err}"));
        }
    }

    async fn try_lease(&self, cache: &Cache, user_id: i64) -> Option<Lease> {
        let lease = Lease::new(user_id)?;
        match cache
            .set_if_absent(&lease.key, &lease.token, Ttl::After(LEASE_TTL))
            .await
        {
            Ok(true) => Some(lease),
            _ => None,
        }
    }

    /// Waits for the user's lease (at most its TTL: a holder that died
    /// loses it by then). `None` when the cache is down: the write goes
    /// ahead, and its invalidation is the cache's best effort.
    async fn lease(&self, cache: &Cache, user_id: i64) -> Option<Lease> {
        let lease = Lease::new(user_id)?;
        let deadline = Instant::now() + LEASE_TTL;
        loop {
            match cache
                .set_if_absent(&lease.key, &lease.token, Ttl::After(LEASE_TTL))
                .await
            {
                Ok(true) => return Some(lease),
                Ok(false) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                _ => return None,
            }
        }
    }
}

/// What a write does to the cached list after its commit.
enum CacheUpdate {
    Nothing,
    Invalidate,
    WriteThrough(Task),
}

/// A user's lease, held under a token of its own: only its holder
/// releases it (a holder whose lease expired and was taken by another
/// leaves the new one alone).
struct Lease {
    key: CacheKey,
    token: u64,
}

impl Lease {
    fn new(user_id: i64) -> Option<Self> {
        use std::hash::BuildHasher as _;
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let key = CacheKey::new("tasks-lease", user_id).ok()?;
        // Unique in this process, and random across processes.
        let token =
            std::collections::hash_map::RandomState::new().hash_one(NEXT.fetch_add(1, Relaxed));
        Some(Lease { key, token })
    }

    /// Whether the lease is still this one.
    async fn held(&self, cache: &Cache) -> bool {
        matches!(cache.get::<u64>(&self.key).await, Ok(Some(t)) if t == self.token)
    }

    async fn release(&self, cache: &Cache) {
        if self.held(cache).await {
            let _ = cache.delete(&self.key).await;
        }
    }
}

fn list_key(user_id: i64) -> Result<CacheKey, ApiError> {
    CacheKey::new("tasks", user_id).map_err(|e| ApiError::Internal(e.to_string()))
}

fn log_warn(message: &str) {
    eprintln!("tasks_api: {message}");
}

/// A running server, from [`TasksApi::serve`].
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, lets requests in flight finish, and waits.
    pub async fn shutdown(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

/// A session store error as an answer: the store could not be reached
/// (503), or a session did not encode or decode (500).
fn session_error(err: SessionError) -> ApiError {
    match err {
        SessionError::Backend(m) => ApiError::Unavailable(format!("session store: {m}")),
        other => ApiError::Internal(format!("session store: {other}")),
    }
}

fn time_duration(d: Duration) -> time::Duration {
    time::Duration::try_from(d).unwrap_or(time::Duration::MAX)
}

/// What [`authenticate`] found: the caller's live session, or why there is
/// none.
#[derive(Clone, Copy)]
enum Caller {
    User { session: Id, user_id: i64 },
    Anonymous(&'static str),
}

/// Who is calling: from `Authorization: Bearer <token>`, the token being a
/// session id in the store. Requests without a live session are checked
/// against the `anon` rule, per client ([`client_of`]).
async fn authenticate(
    State(app): State<Arc<TasksApi>>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let token = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let caller = match token {
        None => Caller::Anonymous("an Authorization: Bearer header is needed"),
        Some(token) => match app.session_user(token).await? {
            Some((session, user_id)) => Caller::User { session, user_id },
            None => Caller::Anonymous("unknown or expired session"),
        },
    };
    if let Caller::Anonymous(_) = caller {
        let decision = app
            .limiter
            .check("anon", client_of(&request))
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        if !decision.allowed {
            return Err(ApiError::TooManyRequests(decision));
        }
    }
    request.extensions_mut().insert(caller);
    Ok(next.run(request).await)
}

/// The client a request without a session is counted as: the first
/// address of `X-Forwarded-For`, else the peer's IP, else `unknown`.
fn client_of(request: &Request) -> String {
    let forwarded = request
        .headers()
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .map(str::trim)
        .filter(|v| !v.is_empty());
    match forwarded {
        Some(client) => client.to_owned(),
        None => request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map_or_else(|| "unknown".to_owned(), |c| c.0.ip().to_string()),
    }
}

/// The authenticated caller (see [`authenticate`]), then checked against
/// the `api` rate limit.
struct AuthUser(i64);

impl FromRequestParts<Arc<TasksApi>> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        app: &Arc<TasksApi>,
    ) -> Result<Self, Self::Rejection> {
        let user_id = match parts.extensions.get::<Caller>() {
            Some(Caller::User { user_id, .. }) => *user_id,
            Some(Caller::Anonymous(why)) => return Err(ApiError::Unauthorized(why)),
            None => return Err(ApiError::Internal("no authentication layer".into())),
        };
        let decision = app
            .limiter
            .check("api", user_id)
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        if !decision.allowed {
            return Err(ApiError::TooManyRequests(decision));
        }
        Ok(AuthUser(user_id))
    }
}

#[derive(Deserialize)]
struct Credentials {
    name: String,
    password: String,
}

async fn register(
    State(app): State<Arc<TasksApi>>,
    Json(body): Json<Credentials>,
) -> Result<Response, ApiError> {
    let valid = !body.name.is_empty()
        && body.name.len() <= 64
        && body
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.@-".contains(c));
    if !valid {
        return Err(ApiError::BadRequest(
            "name: 1 to 64 of ASCII letters, digits and _.@-".into(),
        ));
    }
    if body.password.len() < 4 {
        return Err(ApiError::BadRequest("password: at least 4 bytes".into()));
    }
    let id = app.db.create_user(&body.name, &body.password).await?;
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({ "id": id, "name": body.name })),
    )
        .into_response())
}

async fn login(
    State(app): State<Arc<TasksApi>>,
    Json(body): Json<Credentials>,
) -> Result<Response, ApiError> {
    // Every attempt counts, before the password is checked.
    let decision = app
        .limiter
        .check("login", &body.name)
        .await
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    if !decision.allowed {
        return Err(ApiError::TooManyRequests(decision));
    }
    let token = app.login(&body.name, &body.password).await?;
    Ok((
        Decision::header_map(&decision),
        Json(serde_json::json!({ "token": token })),
    )
        .into_response())
}

/// Ends the caller's session: its token is refused from now on.
async fn logout(State(app): State<Arc<TasksApi>>, request: Request) -> Result<Response, ApiError> {
    match request.extensions().get::<Caller>() {
        Some(Caller::User { session, .. }) => {
            app.sessions.delete(session).await.map_err(session_error)?;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        Some(Caller::Anonymous(why)) => Err(ApiError::Unauthorized(why)),
        None => Err(ApiError::Internal("no authentication layer".into())),
    }
}

async fn list_tasks(
    State(app): State<Arc<TasksApi>>,
    AuthUser(user_id): AuthUser,
) -> Result<Response, ApiError> {
    let (tasks, source) = app.tasks_of(user_id).await?;
    Ok(([("x-cache", source)], Json(tasks)).into_response())
}

#[derive(Deserialize)]
struct NewTask {
    title: String,
}

#[derive(Deserialize)]
struct TaskChange {
    title: Option<String>,
    done: Option<bool>,
}

fn check_title(title: &str) -> Result<(), ApiError> {
    if title.trim().is_empty() || title.len() > 200 {
        return Err(ApiError::BadRequest("title: 1 to 200 bytes".into()));
    }
    Ok(())
}

async fn create_task(
    State(app): State<Arc<TasksApi>>,
    AuthUser(user_id): AuthUser,
    Json(body): Json<NewTask>,
) -> Result<Response, ApiError> {
    check_title(&body.title)?;
    let task = app
        .write(user_id, app.db.insert_task(user_id, &body.title), |_| {
            CacheUpdate::Invalidate
        })
        .await?;
    Ok((StatusCode::CREATED, Json(task)).into_response())
}

async fn update_task(
    State(app): State<Arc<TasksApi>>,
    AuthUser(user_id): AuthUser,
    Path(id): Path<i64>,
    Json(body): Json<TaskChange>,
) -> Result<Response, ApiError> {
    if let Some(title) = &body.title {
        check_title(title)?;
    }
    let task = app
        .write(
            user_id,
            app.db.update_task(user_id, id, body.title, body.done),
            |task| match task {
                Some(task) => CacheUpdate::WriteThrough(task.clone()),
                None => CacheUpdate::Nothing,
            },
        )
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok(Json(task).into_response())
}

async fn delete_task(
    State(app): State<Arc<TasksApi>>,
    AuthUser(user_id): AuthUser,
    Path(id): Path<i64>,
) -> Result<Response, ApiError> {
    let existed = app
        .write(user_id, app.db.delete_task(user_id, id), |existed| {
            if *existed {
                CacheUpdate::Invalidate
            } else {
                CacheUpdate::Nothing
            }
        })
        .await?;
    if existed {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(ApiError::NotFound)
    }
}

async fn health(State(app): State<Arc<TasksApi>>) -> Response {
    let database = app.db.ping().await.is_ok();
    let (cache_status, backend, latency_ms) = match &app.cache {
        None => ("disabled".to_owned(), "none", 0.0),
        Some(cache) => match cache.health().await {
            Ok(health) => (
                match health.status {
                    HealthStatus::Healthy => "healthy",
                    HealthStatus::Degraded => "degraded",
                    _ => "unhealthy",
                }
                .to_owned(),
                cache.backend().name(),
                health.latency.as_secs_f64() * 1000.0,
            ),
            Err(err) => (format!("unhealthy: {err}"), cache.backend().name(), 0.0),
        },
    };
    let ok = database && !cache_status.starts_with("unhealthy");
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = serde_json::json!({
        "status": if ok { "ok" } else { "unavailable" },
        "database": if database { "ok" } else { "failing" },
        "cache": { "status": cache_status, "backend": backend, "latency_ms": latency_ms },
    });
    (status, Json(body)).into_response()
}

/// The cache's report (counters, health, advice) and the rate limiter's
/// counters, as JSON: every type is `Serialize`.
async fn stats(State(app): State<Arc<TasksApi>>) -> Response {
    let cache = match &app.cache {
        Some(cache) => serde_json::to_value(cache.report().await),
        None => Ok(serde_json::Value::Null),
    };
    let body = cache
        .map(|cache| serde_json::json!({ "cache": cache, "rate_limits": app.limiter.stats() }));
    match body {
        Ok(body) => Json(body).into_response(),
        Err(err) => ApiError::Internal(format!("stats: {err}")).into_response(),
    }
}

/// Counts requests by method, route and status, and their time.
async fn track(State(app): State<Arc<TasksApi>>, request: Request, next: Next) -> Response {
    let method = request.method().to_string();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let started = Instant::now();
    let response = next.run(request).await;
    let took = started.elapsed().as_secs_f64();
    let mut http = app
        .metrics
        .http
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let entry = http
        .entry((method, route, response.status().as_u16()))
        .or_default();
    entry.0 += 1;
    entry.1 += took;
    response
}

async fn metrics(State(app): State<Arc<TasksApi>>) -> Response {
    use std::fmt::Write as _;
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, samples: &[(String, f64)]| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    };
    let one = |v: u64| vec![(String::new(), v as f64)];
    if let Some(cache) = &app.cache {
        let s = cache.stats();
        let backend = format!("{{backend=\"{}\"}}", cache.backend().name());
        for (name, help, value) in [
            ("hits", "Cache reads that found a value.", s.hits),
            ("misses", "Cache reads that found nothing.", s.misses),
            ("sets", "Values written to the cache.", s.sets),
            ("deletes", "Cache keys deleted.", s.deletes),
            ("errors", "Failed cache operations.", s.errors),
        ] {
            metric(
                &format!("tasks_api_cache_{name}_total"),
                "counter",
                help,
                &[(backend.clone(), value as f64)],
            );
        }
        metric(
            "tasks_api_cache_hit_ratio",
            "gauge",
            "hits / (hits + misses) since start.",
            &[(backend.clone(), s.hit_rate())],
        );
    }
    let m = &app.metrics;
    metric(
        "tasks_api_task_lists_total",
        "counter",
        "GET /tasks answers by where the list came from.",
        &[
            ("{source=\"hit\"}".into(), m.list_hit.load(Relaxed) as f64),
            ("{source=\"miss\"}".into(), m.list_miss.load(Relaxed) as f64),
            (
                "{source=\"bypass\"}".into(),
                m.list_bypass.load(Relaxed) as f64,
            ),
        ],
    );
    metric(
        "tasks_api_lease_busy_total",
        "counter",
        "Lists loaded but not cached because a write held the user's lease.",
        &one(m.lease_busy.load(Relaxed)),
    );
    metric(
        "tasks_api_cache_write_failures_total",
        "counter",
        "Cache writes or invalidations that failed after a database commit.",
        &one(m.cache_write_failures.load(Relaxed)),
    );
    metric(
        "tasks_api_db_queries_total",
        "counter",
        "Database queries.",
        &one(app.db.queries()),
    );
    let limits = app.limiter.stats();
    metric(
        "tasks_api_rate_limit_decisions_total",
        "counter",
        "Rate limit checks by outcome.",
        &[
            ("{outcome=\"allowed\"}".into(), limits.allowed as f64),
            ("{outcome=\"denied\"}".into(), limits.denied as f64),
        ],
    );
    metric(
        "tasks_api_rate_limit_backend_errors_total",
        "counter",
        "Rate limit checks decided without the backend.",
        &one(limits.backend_errors),
    );
    let http = m
        .http
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    let label = |(method, route, status): &(String, String, u16)| {
        format!("{{method=\"{method}\",route=\"{route}\",status=\"{status}\"}}")
    };
    metric(
        "tasks_api_http_requests_total",
        "counter",
        "HTTP requests by method, route and status.",
        &http
            .iter()
            .map(|(k, (count, _))| (label(k), *count as f64))
            .collect::<Vec<_>>(),
    );
    metric(
        "tasks_api_http_request_seconds_total",
        "counter",
        "Time spent answering HTTP requests.",
        &http
            .iter()
            .map(|(k, (_, secs))| (label(k), *secs))
            .collect::<Vec<_>>(),
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}
