//! The tasks API end to end, through real HTTP on loopback, on the memory
//! backend and on a real Redis: two users create, list, update and delete;
//! no list is ever stale after a write, no user ever sees another's tasks,
//! cache hits show in `/metrics`, logins are throttled after 5 attempts.
//! On Redis the API runs on the examples' production stack (L1, 250 ms
//! deadline, fail-open), as `cargo run --example tasks_api` does.
//!
//! The `postgres` tests run the same scenarios with the tasks in
//! PostgreSQL (`TASKS_TEST_POSTGRES_URL`, default
//! `postgres://postgres@127.0.0.1:5432/test`), each in a database of its
//! own that it drops; without a server they fail, saying how to start one.
//!
//! The `session` tests log in, out, and wait for a session to expire; the
//! `anon` tests send requests without a session until the `anon` rule
//! refuses them.
//!
//! The `outage` tests stop (or `SIGSTOP`) Redis while users work and bring
//! it back: every request is served (lists from the database while the
//! cache is down), no list is stale after a write, and no user sees
//! another's tasks. They fail if a cache failure reaches a user (a 500), if
//! an invalidation lost in the outage lets an old list come back, or if
//! lists cross between users.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use cache::{CacheBackend, CacheConfig, CacheKey, Rule};
use cache_examples::http::{HttpClient, Response};
use cache_examples::stack::ExampleConfig;
use cache_examples::tasks_api::{self, Db, Server, Task, TasksApi};
use cache_testkit::redis_server::RedisServer;
use serde_json::json;

/// The API over `url` (memory:// or redis://, with the production stack),
/// with a prefix of its own so tests sharing a Redis never meet.
async fn api(url: &str) -> TasksApi {
    api_on(url, sqlite()).await
}

/// [`api`] over `db`.
async fn api_on(url: &str, db: Db) -> TasksApi {
    api_with_db(ExampleConfig::from_url(url), db).await
}

/// SQLite in memory.
fn sqlite() -> Db {
    Db::open(":memory:").unwrap()
}

/// The API over the cache `config` describes, with a prefix of its own.
async fn api_with(config: ExampleConfig) -> TasksApi {
    api_with_db(config, sqlite()).await
}

/// [`api_with`] over `db`.
async fn api_with_db(mut config: ExampleConfig, db: Db) -> TasksApi {
    config.config_mut().prefix = format!("tasks-test-{}", fastrand::u32(..));
    TasksApi::open(&config, db, Rule::per_minute(100_000))
        .await
        .unwrap()
}

async fn serve(api: TasksApi) -> Server {
    api.serve("127.0.0.1:0".parse().unwrap()).await.unwrap()
}

/// A logged-in user with a connection of their own.
struct User {
    id: i64,
    token: String,
    http: HttpClient,
}

impl User {
    /// Registers `name` and logs in.
    async fn new(addr: SocketAddr, name: &str) -> User {
        let mut http = HttpClient::new(addr);
        let creds = json!({ "name": name, "password": "secret-pw" });
        let created = http
            .send("POST", "/users", None, Some(&creds))
            .await
            .unwrap();
        assert_eq!(created.status, 201, "{}", created.text());
        let id = created.json::<serde_json::Value>().unwrap()["id"]
            .as_i64()
            .unwrap();
        User::login(addr, name, id).await
    }

    /// Logs in as `name` (user `id`) on a connection of its own.
    async fn login(addr: SocketAddr, name: &str, id: i64) -> User {
        let mut http = HttpClient::new(addr);
        let creds = json!({ "name": name, "password": "secret-pw" });
        let login = http
            .send("POST", "/login", None, Some(&creds))
            .await
            .unwrap();
        assert_eq!(login.status, 200, "{}", login.text());
        let token = login.json::<serde_json::Value>().unwrap()["token"]
            .as_str()
            .unwrap()
            .to_owned();
        User { id, token, http }
    }

    async fn call(
        &mut self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Response {
        self.http
            .send(method, path, Some(&self.token), body.as_ref())
            .await
            .unwrap()
    }

    /// `GET /tasks`: the list and where it came from. Checks that every
    /// task in it is this user's.
    async fn list(&mut self) -> (Vec<Task>, String) {
        let response = self.call("GET", "/tasks", None).await;
        assert_eq!(response.status, 200, "{}", response.text());
        let tasks: Vec<Task> = response.json().unwrap();
        for task in &tasks {
            assert_eq!(task.user_id, self.id, "user {} got {task:?}", self.id);
        }
        (tasks, response.header("x-cache").unwrap_or("").to_owned())
    }

    async fn create(&mut self, title: &str) -> Task {
        let response = self
            .call("POST", "/tasks", Some(json!({ "title": title })))
            .await;
        assert_eq!(response.status, 201, "{}", response.text());
        response.json().unwrap()
    }
}

fn titles(tasks: &[Task]) -> Vec<&str> {
    tasks.iter().map(|t| t.title.as_str()).collect()
}

async fn metric(addr: SocketAddr, line_start: &str) -> f64 {
    let text = HttpClient::new(addr)
        .send("GET", "/metrics", None, None)
        .await
        .unwrap()
        .text();
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no metric {line_start} in\n{text}"))
}

async fn two_users_create_list_update_delete(url: &str, db: Db) {
    let server = serve(api_on(url, db).await).await;
    let addr = server.addr();
    let mut alice = User::new(addr, "alice").await;
    let mut bob = User::new(addr, "bob").await;

    // A cold list is a miss, the next one a hit.
    assert_eq!(alice.list().await, (vec![], "miss".to_owned()));
    assert_eq!(alice.list().await, (vec![], "hit".to_owned()));

    // Every create is visible in the very next list.
    let mut created = Vec::new();
    for title in ["milk", "bread", "eggs"] {
        created.push(alice.create(title).await);
        let (tasks, source) = alice.list().await;
        assert_eq!(source, "miss", "a create invalidates the list");
        assert_eq!(titles(&tasks), titles(&created));
        assert_eq!(alice.list().await.1, "hit");
    }

    // Bob sees none of it, and his own writes do not touch Alice's list.
    assert!(bob.list().await.0.is_empty());
    bob.create("bob's task").await;
    assert_eq!(titles(&bob.list().await.0), ["bob's task"]);
    let (tasks, source) = alice.list().await;
    assert_eq!((titles(&tasks), source.as_str()), (titles(&created), "hit"));

    // An update is written through: the list stays cached and shows it.
    let bread = created[1].id;
    let updated = alice
        .call(
            "PUT",
            &format!("/tasks/{bread}"),
            Some(json!({ "title": "rye bread", "done": true })),
        )
        .await;
    assert_eq!(updated.status, 200, "{}", updated.text());
    let (tasks, source) = alice.list().await;
    assert_eq!(source, "hit", "an update writes the new row through");
    assert_eq!(titles(&tasks), ["milk", "rye bread", "eggs"]);
    assert!(tasks[1].done);

    // Bob cannot touch Alice's tasks: 404, and her list is unchanged.
    for (method, body) in [
        ("PUT", Some(json!({ "title": "hacked" }))),
        ("DELETE", None),
    ] {
        let response = bob.call(method, &format!("/tasks/{bread}"), body).await;
        assert_eq!(response.status, 404, "{method}: {}", response.text());
    }
    assert_eq!(titles(&alice.list().await.0), ["milk", "rye bread", "eggs"]);

    // A delete is visible in the next list.
    let milk = created[0].id;
    let deleted = alice.call("DELETE", &format!("/tasks/{milk}"), None).await;
    assert_eq!(deleted.status, 204);
    let (tasks, source) = alice.list().await;
    assert_eq!(source, "miss");
    assert_eq!(titles(&tasks), ["rye bread", "eggs"]);
    assert_eq!(
        alice
            .call("DELETE", &format!("/tasks/{milk}"), None)
            .await
            .status,
        404
    );

    // No token, a wrong token: 401.
    let mut anonymous = HttpClient::new(addr);
    assert_eq!(
        anonymous
            .send("GET", "/tasks", None, None)
            .await
            .unwrap()
            .status,
        401
    );
    assert_eq!(
        anonymous
            .send("GET", "/tasks", Some("nope"), None)
            .await
            .unwrap()
            .status,
        401
    );

    // The cache's work shows in /metrics.
    assert!(metric(addr, "tasks_api_cache_hits_total").await >= 6.0);
    assert!(metric(addr, "tasks_api_task_lists_total{source=\"hit\"}").await >= 6.0);
    assert!(metric(addr, "tasks_api_task_lists_total{source=\"miss\"}").await >= 5.0);
    assert!(
        metric(
            addr,
            "tasks_api_http_requests_total{method=\"GET\",route=\"/tasks\",status=\"200\"}"
        )
        .await
            >= 14.0
    );

    // And in /stats, as JSON: the report (counters, health, advice) and
    // the limiter's counters.
    let stats = HttpClient::new(addr)
        .send("GET", "/stats", None, None)
        .await
        .unwrap();
    assert_eq!(stats.status, 200, "{}", stats.text());
    let stats: serde_json::Value = serde_json::from_str(&stats.text()).unwrap();
    eprintln!("GET /stats: {stats}");
    let hits = stats["cache"]["stats"]["hits"].as_u64().unwrap();
    let misses = stats["cache"]["stats"]["misses"].as_u64().unwrap();
    assert_eq!(
        hits as f64,
        metric(addr, "tasks_api_cache_hits_total").await
    );
    let rate = stats["cache"]["stats"]["hit_rate"].as_f64().unwrap();
    assert_eq!(rate, hits as f64 / (hits + misses) as f64);
    assert_eq!(stats["cache"]["health"]["status"], "healthy");
    assert!(stats["cache"]["health"]["latency_ms"].is_f64());
    assert!(stats["cache"]["advice"].is_array());
    assert_eq!(stats["rate_limits"]["denied"], 0);
    assert_eq!(
        stats["rate_limits"]["allowed"].as_u64().unwrap() as f64,
        metric(
            addr,
            "tasks_api_rate_limit_decisions_total{outcome=\"allowed\"}"
        )
        .await
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_api_two_users_on_memory() {
    two_users_create_list_update_delete("memory://", sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_api_two_users_on_redis() {
    two_users_create_list_update_delete(RedisServer::shared().url(), sqlite()).await;
}

/// Several users, each with several connections writing and reading at
/// once: after each write returns, the writer's next list shows it.
async fn concurrent_writers_never_read_stale_lists(url: &str, db: Db) {
    let server = serve(api_on(url, db).await).await;
    let addr = server.addr();
    let mut tasks = Vec::new();
    for u in 0..3 {
        let name = format!("user{u}");
        let id = User::new(addr, &name).await.id;
        for c in 0..3 {
            let name = name.clone();
            tasks.push(tokio::spawn(async move {
                // A session of its own for each connection.
                let mut me = User::login(addr, &name, id).await;
                for i in 0..12 {
                    let title = format!("{name}-c{c}-{i}");
                    let task = me.create(&title).await;
                    let (list, _) = me.list().await;
                    assert!(list.iter().any(|t| t.id == task.id), "{title} missing");
                    let renamed = format!("{title}-renamed");
                    let response = me
                        .call(
                            "PUT",
                            &format!("/tasks/{}", task.id),
                            Some(json!({ "title": renamed })),
                        )
                        .await;
                    assert_eq!(response.status, 200);
                    let (list, _) = me.list().await;
                    let seen = list
                        .iter()
                        .find(|t| t.id == task.id)
                        .map(|t| t.title.clone());
                    assert_eq!(seen.as_deref(), Some(renamed.as_str()), "stale title");
                    if i % 2 == 0 {
                        let response = me
                            .call("DELETE", &format!("/tasks/{}", task.id), None)
                            .await;
                        // A delete that failed is not a stale list: say which.
                        assert_eq!(response.status, 204, "delete of {title} failed");
                        let (list, _) = me.list().await;
                        assert!(list.iter().all(|t| t.id != task.id), "deleted task listed");
                    }
                }
            }));
        }
    }
    for task in tasks {
        task.await.unwrap();
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_api_concurrent_writers_never_read_stale_lists_on_memory() {
    concurrent_writers_never_read_stale_lists("memory://", sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_api_concurrent_writers_never_read_stale_lists_on_redis() {
    concurrent_writers_never_read_stale_lists(RedisServer::shared().url(), sqlite()).await;
}

/// A deleted task's id is never given to a new task: a client still
/// holding it (a repeated DELETE, a PUT from an old page) gets 404 instead
/// of reaching another task, and a list read after a delete never shows
/// that id again. (SQLite gives a new row the largest rowid plus one unless
/// the key is `AUTOINCREMENT`, so deleting the newest task handed its id to
/// the next one: the concurrent writers test then saw "deleted task
/// listed" when another connection's new task got the id just deleted.)
async fn deleted_task_ids_are_never_reused(db: Db) {
    let server = serve(api_on("memory://", db).await).await;
    let mut jo = User::new(server.addr(), "jo").await;
    jo.create("kept").await;
    let gone = jo.create("gone").await;
    let path = format!("/tasks/{}", gone.id);
    assert_eq!(jo.call("DELETE", &path, None).await.status, 204);
    let new = jo.create("new").await;
    assert_ne!(new.id, gone.id, "a new task got the id of a deleted one");
    assert_eq!(
        jo.call("DELETE", &path, None).await.status,
        404,
        "a repeated DELETE reached another task"
    );
    let (list, _) = jo.list().await;
    assert_eq!(titles(&list), ["kept", "new"]);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_api_deleted_task_ids_are_never_reused_on_sqlite() {
    deleted_task_ids_are_never_reused(sqlite()).await;
}

async fn login_throttled_after_5_attempts(url: &str, db: Db) {
    let server = serve(api_on(url, db).await).await;
    let addr = server.addr();
    User::new(addr, "carol").await; // one successful login: attempt 1
    let mut http = HttpClient::new(addr);
    let wrong = json!({ "name": "carol", "password": "guess" });
    for attempt in 2..=5 {
        let response = http
            .send("POST", "/login", None, Some(&wrong))
            .await
            .unwrap();
        assert_eq!(response.status, 401, "attempt {attempt}");
        let remaining = response.header("ratelimit-remaining");
        assert!(remaining.is_none(), "401 answers carry no limit headers");
    }
    // The 6th attempt in the minute is refused, even with the right password.
    let right = json!({ "name": "carol", "password": "secret-pw" });
    for body in [&wrong, &right] {
        let response = http.send("POST", "/login", None, Some(body)).await.unwrap();
        assert_eq!(response.status, 429, "{}", response.text());
        let retry: u64 = response.header("retry-after").unwrap().parse().unwrap();
        assert!((1..=66).contains(&retry), "Retry-After: {retry}");
        assert_eq!(response.header("ratelimit-limit"), Some("5"));
        assert_eq!(response.header("ratelimit-remaining"), Some("0"));
    }
    // Someone else is not affected.
    let dave = User::new(addr, "dave").await;
    assert!(!dave.token.is_empty());
    assert!(
        metric(
            addr,
            "tasks_api_rate_limit_decisions_total{outcome=\"denied\"}"
        )
        .await
            >= 2.0
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_api_login_throttled_after_5_attempts_on_memory() {
    login_throttled_after_5_attempts("memory://", sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_api_login_throttled_after_5_attempts_on_redis() {
    login_throttled_after_5_attempts(RedisServer::shared().url(), sqlite()).await;
}

/// Without fail-open (`CACHE_FAIL_OPEN=false`, here the plain backend)
/// and without an L1, sessions cannot be read while the cache is down: a
/// request with a session gets 503 (not 401: the session is not lost, a
/// Redis with persistence still has it when it comes back). On the
/// production stack the L1 serves sessions through an outage (the
/// `outage` tests).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_api_health_follows_the_backend_and_sessions_need_the_cache() {
    let redis = RedisServer::new();
    let plain = ExampleConfig::as_given(CacheConfig::from_url(redis.url()));
    let server = serve(api_with(plain).await).await;
    let addr = server.addr();
    let mut erin = User::new(addr, "erin").await;
    erin.create("water plants").await;
    assert_eq!(erin.list().await.1, "miss");

    let mut probe = HttpClient::new(addr);
    let health = probe.send("GET", "/health", None, None).await.unwrap();
    assert_eq!(health.status, 200, "{}", health.text());
    let body: serde_json::Value = health.json().unwrap();
    assert_eq!(body["cache"]["backend"], "redis");
    assert_eq!(body["cache"]["status"], "healthy");

    redis.stop();
    let health = probe.send("GET", "/health", None, None).await.unwrap();
    assert_eq!(health.status, 503, "{}", health.text());
    // Sessions live in the cache: none can be read while it is down...
    let response = erin.call("GET", "/tasks", None).await;
    assert_eq!(response.status, 503, "{}", response.text());
    // ...and logins are refused (the login rule fails closed).
    let login = probe
        .send(
            "POST",
            "/login",
            None,
            Some(&json!({ "name": "erin", "password": "secret-pw" })),
        )
        .await
        .unwrap();
    assert_eq!(login.status, 429);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_api_without_a_cache_reads_the_database() {
    let backend: Arc<dyn CacheBackend> = Arc::new(cache::memory::MemoryBackend::new());
    let limiter = tasks_api::rate_limiter(backend, "t", Rule::per_minute(1000)).unwrap();
    let server = serve(TasksApi::new(Db::open(":memory:").unwrap(), None, limiter)).await;
    let mut frank = User::new(server.addr(), "frank").await;
    frank.create("a").await;
    assert_eq!(frank.list().await.1, "bypass");
    assert_eq!(frank.list().await.1, "bypass");
    let health = HttpClient::new(server.addr())
        .send("GET", "/health", None, None)
        .await
        .unwrap();
    assert_eq!(health.status, 200);
    server.shutdown().await;
}

/// Sessions end to end: a login opens a session (its id is the bearer
/// token), requests with it are authorized, logout ends it (401 from then
/// on) and leaves the user's other sessions alone.
async fn session_login_logout(url: &str, db: Db) {
    let api = api_on(url, db).await;
    let cache = api.cache().unwrap().clone();
    let server = serve(api).await;
    let addr = server.addr();
    let mut gina = User::new(addr, "gina").await;
    let session = CacheKey::hashed("session", &gina.token).unwrap();
    assert!(
        cache.exists(&session).await.unwrap(),
        "a login stores a session"
    );
    assert_eq!(gina.list().await.0, vec![]);
    let mut phone = User::login(addr, "gina", gina.id).await;
    assert_ne!(phone.token, gina.token);

    let out = gina.call("POST", "/logout", None).await;
    assert_eq!(out.status, 204, "{}", out.text());
    assert!(!cache.exists(&session).await.unwrap(), "logout deletes it");
    let refused = gina.call("GET", "/tasks", None).await;
    assert_eq!(refused.status, 401, "{}", refused.text());
    assert_eq!(gina.call("POST", "/logout", None).await.status, 401);
    // The other session lives on.
    assert_eq!(phone.list().await.0, vec![]);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_login_authorized_logout_401_on_memory() {
    session_login_logout("memory://", sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_login_authorized_logout_401_on_redis() {
    session_login_logout(RedisServer::shared().url(), sqlite()).await;
}

/// A session lives as long as the API's session TTL: after it, its token
/// gets 401 and the cache holds nothing under it (the expiry date was the
/// entry's TTL).
async fn session_expiry(url: &str, db: Db) {
    let api = api_on(url, db)
        .await
        .with_session_ttl(Duration::from_millis(700));
    let cache = api.cache().unwrap().clone();
    let server = serve(api).await;
    let mut hana = User::new(server.addr(), "hana").await;
    let session = CacheKey::hashed("session", &hana.token).unwrap();
    assert_eq!(hana.list().await.0, vec![]);
    tokio::time::sleep(Duration::from_millis(900)).await;
    let refused = hana.call("GET", "/tasks", None).await;
    assert_eq!(refused.status, 401, "{}", refused.text());
    assert!(!cache.exists(&session).await.unwrap());
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_expired_401_on_memory() {
    session_expiry("memory://", sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_expired_401_on_redis() {
    session_expiry(RedisServer::shared().url(), sqlite()).await;
}

/// One request on a connection of its own, `X-Forwarded-For: client` when
/// given: the status and the `ratelimit-remaining` header.
async fn raw_get(addr: SocketAddr, path: &str, client: Option<&str>) -> (u16, Option<String>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    let forwarded = client.map_or(String::new(), |c| format!("X-Forwarded-For: {c}\r\n"));
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{forwarded}Connection: close\r\n\r\n");
    conn.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    conn.read_to_string(&mut answer).await.unwrap();
    let status = answer[9..12].parse().unwrap();
    let remaining = answer
        .lines()
        .find_map(|l| l.strip_prefix("ratelimit-remaining: "))
        .map(str::to_owned);
    (status, remaining)
}

/// Requests without a session are limited per client under `anon` (here
/// 3 a minute): the 4th from one client is refused with 429, another
/// client and a user with a session are not affected, and `/health` is
/// never limited.
async fn anon_limited_per_client(url: &str, db: Db) {
    let mut config = ExampleConfig::from_url(url);
    config.config_mut().prefix = format!("tasks-test-{}", fastrand::u32(..));
    let cache = tasks_api::open_cache(&config).await.unwrap();
    let limiter = tasks_api::rate_limiter_with(
        Arc::clone(cache.plain_backend()),
        cache.prefix(),
        Rule::per_minute(100_000),
        Rule::per_minute(3),
    )
    .unwrap();
    let api = TasksApi::new(db, Some(cache), limiter);
    let server = serve(api).await;
    let addr = server.addr();
    // Registering and logging in are anonymous too: from the peer's IP.
    let mut ivan = User::new(addr, "ivan").await;

    for n in 1..=3 {
        assert_eq!(
            raw_get(addr, "/tasks", Some("10.0.0.1")).await.0,
            401,
            "#{n}"
        );
    }
    let (status, remaining) = raw_get(addr, "/tasks", Some("10.0.0.1")).await;
    assert_eq!((status, remaining.as_deref()), (429, Some("0")));
    // A bad token does not escape the rule.
    let mut forged = HttpClient::new(addr);
    for _ in 0..2 {
        forged
            .send("GET", "/tasks", Some("forged"), None)
            .await
            .unwrap();
    }
    // 127.0.0.1 has now sent 2 (register, login) + 2: the next is refused.
    let refused = forged
        .send("GET", "/tasks", Some("forged"), None)
        .await
        .unwrap();
    assert_eq!(refused.status, 429, "{}", refused.text());

    assert_eq!(raw_get(addr, "/tasks", Some("10.0.0.2")).await.0, 401);
    assert_eq!(raw_get(addr, "/health", Some("10.0.0.1")).await.0, 200);
    // A session is limited per user (`api`), not per client.
    for _ in 0..5 {
        assert_eq!(ivan.list().await.0, vec![]);
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_api_anon_limited_per_client_on_memory() {
    anon_limited_per_client("memory://", sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_api_anon_limited_per_client_on_redis() {
    anon_limited_per_client(RedisServer::shared().url(), sqlite()).await;
}

/// The PostgreSQL server the `postgres` tests use (trust auth); each test
/// creates a database of its own there and drops it.
const POSTGRES_URL_ENV: &str = "TASKS_TEST_POSTGRES_URL";
const POSTGRES_DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// A database of one test's own on the PostgreSQL server, dropped (with
/// its connections) when this goes out of scope, panics included.
struct PgDatabase {
    admin_url: String,
    name: String,
    url: String,
}

impl PgDatabase {
    async fn create() -> PgDatabase {
        let admin_url =
            std::env::var(POSTGRES_URL_ENV).unwrap_or_else(|_| POSTGRES_DEFAULT_URL.to_owned());
        let admin = pg_connect(&admin_url).await;
        let name = format!("tasks_test_{}", fastrand::u64(..));
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
        let (base, query) = admin_url.split_once('?').unwrap_or((&admin_url, ""));
        let (server, _) = base.rsplit_once('/').unwrap();
        let url = if query.is_empty() {
            format!("{server}/{name}")
        } else {
            format!("{server}/{name}?{query}")
        };
        PgDatabase {
            admin_url,
            name,
            url,
        }
    }

    async fn db(&self) -> Db {
        let db = Db::connect(&self.url).await.unwrap();
        assert_eq!(db.kind(), "postgres");
        db
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let (url, name) = (self.admin_url.clone(), self.name.clone());
        // A runtime of its own: this may run while the test's unwinds.
        let dropped = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(async {
                    let admin = pg_connect(&url).await;
                    admin
                        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .await
                })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) && !std::thread::panicking() {
            panic!("dropping the test database {}: {dropped:?}", self.name);
        }
    }
}

/// A connection to `url`; a missing server fails the test with the way to
/// get one (never a skip).
async fn pg_connect(url: &str) -> tokio_postgres::Client {
    match tokio_postgres::connect(url, tokio_postgres::NoTls).await {
        Ok((client, connection)) => {
            tokio::spawn(connection);
            client
        }
        Err(err) => panic!(
            "PostgreSQL is not reachable at {url} ({err}). Start one (trust auth for user \
             postgres): `scripts/test` does it, or `apt-get install -y postgresql && \
             pg_ctlcluster 15 main start`; or point {POSTGRES_URL_ENV} at a server."
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_api_two_users_on_postgres() {
    let pg = PgDatabase::create().await;
    two_users_create_list_update_delete("memory://", pg.db().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_api_two_users_on_postgres_and_redis() {
    let pg = PgDatabase::create().await;
    two_users_create_list_update_delete(RedisServer::shared().url(), pg.db().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_api_concurrent_writers_never_read_stale_lists_on_postgres() {
    let pg = PgDatabase::create().await;
    concurrent_writers_never_read_stale_lists("memory://", pg.db().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_api_deleted_task_ids_are_never_reused_on_postgres() {
    let pg = PgDatabase::create().await;
    deleted_task_ids_are_never_reused(pg.db().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_api_login_throttled_after_5_attempts_on_postgres() {
    let pg = PgDatabase::create().await;
    login_throttled_after_5_attempts("memory://", pg.db().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_login_authorized_logout_401_on_postgres() {
    let pg = PgDatabase::create().await;
    session_login_logout("memory://", pg.db().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_expired_401_on_postgres() {
    let pg = PgDatabase::create().await;
    session_expiry("memory://", pg.db().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_api_anon_limited_per_client_on_postgres() {
    let pg = PgDatabase::create().await;
    anon_limited_per_client("memory://", pg.db().await).await;
}

/// The database is really PostgreSQL's: what the API wrote is in its
/// tables, and a duplicate name is a 409 there too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_api_writes_land_in_postgres() {
    let pg = PgDatabase::create().await;
    let server = serve(api_on("memory://", pg.db().await).await).await;
    let mut jo = User::new(server.addr(), "jo").await;
    let task = jo.create("from postgres").await;
    let duplicate = HttpClient::new(server.addr())
        .send(
            "POST",
            "/users",
            None,
            Some(&json!({ "name": "jo", "password": "secret-pw" })),
        )
        .await
        .unwrap();
    assert_eq!(duplicate.status, 409, "{}", duplicate.text());
    let client = pg_connect(&pg.url).await;
    let row = client
        .query_one(
            "SELECT t.title, t.done, u.name FROM tasks t JOIN users u ON u.id = t.user_id \
             WHERE t.id = $1",
            &[&task.id],
        )
        .await
        .unwrap();
    let found: (String, bool, String) = (row.get(0), row.get(1), row.get(2));
    assert_eq!(found, ("from postgres".to_owned(), false, "jo".to_owned()));
    server.shutdown().await;
}

/// How Redis goes away in an outage test.
#[derive(Debug, Clone, Copy)]
enum Fault {
    /// The process exits (refused connections) and starts again empty.
    StopAndRestart,
    /// `SIGSTOP`: connections stay open, nothing is answered, then
    /// `SIGCONT`, with the data as it was.
    PauseAndResume,
}

impl Fault {
    /// How long Redis stays away: a pause outlasts the API's 2 s lease
    /// wait, so writes commit (and invalidate) while Redis is frozen.
    fn down_for(self) -> Duration {
        match self {
            Fault::StopAndRestart => Duration::from_millis(1500),
            Fault::PauseAndResume => Duration::from_millis(3000),
        }
    }
}

/// What the users of an outage run saw.
#[derive(Debug, Default)]
struct Tally {
    requests: u64,
    /// Answered with the expected status.
    served: u64,
    /// Sent while Redis was down.
    during_outage: u64,
    /// The first few requests that were not served, and why.
    failures: Vec<String>,
    /// Lists that missed the user's last write (or differ from what the
    /// user knows is in the database).
    stale: Vec<String>,
    /// Tasks of another user in a list.
    foreign: u64,
    /// `x-cache` of the lists.
    sources: BTreeMap<String, u64>,
}

impl Tally {
    fn add(&mut self, other: Tally) {
        self.requests += other.requests;
        self.served += other.served;
        self.during_outage += other.during_outage;
        self.failures.extend(other.failures);
        self.stale.extend(other.stale);
        self.foreign += other.foreign;
        for (source, n) in other.sources {
            *self.sources.entry(source).or_default() += n;
        }
    }

    /// Sends a request and checks its status; the response when it is the
    /// expected one.
    async fn send(
        &mut self,
        me: &mut User,
        down: &AtomicBool,
        (method, path, body): (&str, &str, Option<serde_json::Value>),
        expected: u16,
    ) -> Option<Response> {
        self.requests += 1;
        self.during_outage += u64::from(down.load(SeqCst));
        let outcome = me
            .http
            .send(method, path, Some(&me.token), body.as_ref())
            .await;
        match outcome {
            Ok(response) if response.status == expected => {
                self.served += 1;
                Some(response)
            }
            Ok(response) => {
                self.fail(format!(
                    "{method} {path}: {} {}",
                    response.status,
                    response.text()
                ));
                None
            }
            Err(err) => {
                self.fail(format!("{method} {path}: {err}"));
                None
            }
        }
    }

    fn fail(&mut self, why: String) {
        if self.failures.len() < 10 {
            self.failures.push(why);
        }
    }

    /// `GET /tasks`, counting its source and any other user's task.
    async fn list(&mut self, me: &mut User, down: &AtomicBool) -> Option<Vec<Task>> {
        let response = self.send(me, down, ("GET", "/tasks", None), 200).await?;
        let source = response.header("x-cache").unwrap_or("").to_owned();
        *self.sources.entry(source).or_default() += 1;
        let tasks: Vec<Task> = response.json().ok()?;
        self.foreign += tasks.iter().filter(|t| t.user_id != me.id).count() as u64;
        Some(tasks)
    }

    /// A list that must be `expected`, else it is counted stale.
    async fn list_is(&mut self, me: &mut User, down: &AtomicBool, expected: &[Task], after: &str) {
        if let Some(tasks) = self.list(me, down).await {
            if tasks != expected {
                self.stale.push(format!(
                    "user {} after {after}: listed {:?}, the database holds {:?}",
                    me.id,
                    titles(&tasks),
                    titles(expected)
                ));
            }
        }
    }
}

/// A writer: creates, renames and deletes tasks, and after each write
/// checks that the next list is exactly what it has in the database.
async fn writer(
    mut me: User,
    db: Db,
    stop: Arc<AtomicBool>,
    down: Arc<AtomicBool>,
) -> (User, Tally) {
    let mut t = Tally::default();
    let mut i = 0;
    while !stop.load(SeqCst) {
        i += 1;
        let title = format!("u{}-{i}", me.id);
        let created = t
            .send(
                &mut me,
                &down,
                ("POST", "/tasks", Some(json!({ "title": title }))),
                201,
            )
            .await;
        let truth = db.list_tasks(me.id).await.unwrap();
        t.list_is(&mut me, &down, &truth, "a create").await;
        let Some(task) = created.and_then(|r| r.json::<Task>().ok()) else {
            continue;
        };
        let path = format!("/tasks/{}", task.id);
        let renamed = json!({ "title": format!("{title}-renamed"), "done": true });
        t.send(&mut me, &down, ("PUT", &path, Some(renamed)), 200)
            .await;
        let truth = db.list_tasks(me.id).await.unwrap();
        t.list_is(&mut me, &down, &truth, "an update").await;
        t.list_is(&mut me, &down, &truth, "an update (again)").await;
        if i % 2 == 0 {
            t.send(&mut me, &down, ("DELETE", &path, None), 204).await;
            let truth = db.list_tasks(me.id).await.unwrap();
            t.list_is(&mut me, &down, &truth, "a delete").await;
        }
    }
    (me, t)
}

/// A reader: lists its tasks, which do not change, again and again.
async fn reader(
    mut me: User,
    db: Db,
    stop: Arc<AtomicBool>,
    down: Arc<AtomicBool>,
) -> (User, Tally) {
    let mut t = Tally::default();
    let truth = db.list_tasks(me.id).await.unwrap();
    while !stop.load(SeqCst) {
        t.list_is(&mut me, &down, &truth, "nothing").await;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    (me, t)
}

/// Users work against the API on the production stack over a private
/// Redis, which goes away 1 s in, comes back 1.5 s later (3 s when
/// paused), and the users
/// go on for 6 s more (past fail-open's 5 s cool-down, so the cache is in
/// use again). Then, once `/health` says the cache is healthy, every user's
/// list must be what the database holds.
async fn api_through_a_redis_outage(fault: Fault) {
    let redis = Arc::new(RedisServer::new());
    let api = api(redis.url()).await;
    let db = api.db().clone();
    let server = serve(api).await;
    let addr = server.addr();

    let (stop, down) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let mut users = Vec::new();
    for u in 0..4 {
        let mut me = User::new(addr, &format!("user{u}")).await;
        for n in 0..3 {
            me.create(&format!("user{u}-initial-{n}")).await;
        }
        users.push(me);
    }
    let mut work = Vec::new();
    for (u, me) in users.into_iter().enumerate() {
        let (db, stop, down) = (db.clone(), Arc::clone(&stop), Arc::clone(&down));
        work.push(if u % 2 == 0 {
            tokio::spawn(writer(me, db, stop, down))
        } else {
            tokio::spawn(reader(me, db, stop, down))
        });
    }

    let faults = {
        let (redis, stop, down) = (Arc::clone(&redis), Arc::clone(&stop), Arc::clone(&down));
        tokio::task::spawn_blocking(move || {
            std::thread::sleep(Duration::from_millis(1000));
            down.store(true, SeqCst);
            match fault {
                Fault::StopAndRestart => redis.stop(),
                Fault::PauseAndResume => redis.pause(),
            }
            std::thread::sleep(fault.down_for());
            match fault {
                Fault::StopAndRestart => redis.start(),
                Fault::PauseAndResume => redis.resume(),
            }
            down.store(false, SeqCst);
            std::thread::sleep(Duration::from_millis(6000));
            stop.store(true, SeqCst);
        })
    };
    faults.await.unwrap();
    let mut tally = Tally::default();
    let mut users = Vec::new();
    for w in work {
        let (me, t) = w.await.unwrap();
        tally.add(t);
        users.push(me);
    }
    let limiter_errors = metric(addr, "tasks_api_rate_limit_backend_errors_total").await;

    // Wait (bounded) until the cache is in use again, then every list must
    // be the database's: an invalidation lost in the outage shows here.
    let mut probe = HttpClient::new(addr);
    let mut healthy = false;
    for _ in 0..300 {
        let health = probe.send("GET", "/health", None, None).await.unwrap();
        if health.status == 200 {
            healthy = true;
            break;
        }
        for me in &mut users {
            tally.list(me, &down).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for me in &mut users {
        let truth = db.list_tasks(me.id).await.unwrap();
        tally
            .list_is(me, &down, &truth, "the outage (final check)")
            .await;
        tally
            .list_is(me, &down, &truth, "the outage (final check, again)")
            .await;
    }

    println!(
        "OUTAGE FIGURES ({fault:?}): {} of {} requests served ({:.2}%), {} sent while Redis was down, \
         lists by source {:?}, {} stale lists, {} foreign tasks, {limiter_errors} limiter checks \
         without the backend, cache healthy again: {healthy}",
        tally.served,
        tally.requests,
        100.0 * tally.served as f64 / tally.requests.max(1) as f64,
        tally.during_outage,
        tally.sources,
        tally.stale.len(),
        tally.foreign,
    );
    for line in tally.failures.iter().chain(tally.stale.iter().take(10)) {
        println!("  {line}");
    }
    server.shutdown().await;

    assert!(healthy, "the cache never came back");
    // The outage reached the users' requests.
    assert!(tally.during_outage > 0);
    assert!(limiter_errors > 0.0);
    assert_eq!(tally.served, tally.requests, "{:?}", tally.failures);
    assert_eq!(tally.stale, Vec::<String>::new());
    assert_eq!(tally.foreign, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_api_outage_redis_stopped_and_restarted() {
    api_through_a_redis_outage(Fault::StopAndRestart).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_api_outage_redis_paused_and_resumed() {
    api_through_a_redis_outage(Fault::PauseAndResume).await;
}

/// A database file made before task ids were `AUTOINCREMENT` (its `tasks`
/// table a plain `INTEGER PRIMARY KEY`) is upgraded when opened: its tasks
/// are kept, and from then on a deleted task's id is never given again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_api_upgrades_an_sqlite_file_of_an_earlier_version() {
    let dir = std::env::temp_dir().join(format!("tasks-api-upgrade-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("tasks.db");
    let _ = std::fs::remove_file(&path);
    let old = rusqlite::Connection::open(&path).unwrap();
    old.execute_batch(
        "CREATE TABLE users (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            salt TEXT NOT NULL,
            password_hash TEXT NOT NULL
        );
        CREATE TABLE tasks (
            id INTEGER PRIMARY KEY,
            user_id INTEGER NOT NULL REFERENCES users(id),
            title TEXT NOT NULL,
            done INTEGER NOT NULL DEFAULT 0,
            updated_at INTEGER NOT NULL
        );
        CREATE INDEX tasks_by_user ON tasks(user_id, id);
        INSERT INTO users VALUES (7, 'old', 'salt', 'hash');
        INSERT INTO tasks VALUES (3, 7, 'from before', 1, 5);",
    )
    .unwrap();
    drop(old);
    let db = Db::open(path.to_str().unwrap()).unwrap();
    let kept = db.list_tasks(7).await.unwrap();
    assert_eq!(
        kept.iter()
            .map(|t| (t.id, t.title.as_str(), t.done, t.updated_at))
            .collect::<Vec<_>>(),
        [(3, "from before", true, 5)]
    );
    deleted_task_ids_are_never_reused(db).await;
    // Opened again: nothing left to upgrade, nothing lost.
    let db = Db::open(path.to_str().unwrap()).unwrap();
    assert_eq!(db.list_tasks(7).await.unwrap().len(), 1);
    drop(db);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A PostgreSQL that cannot be reached is named in the error without the
/// URL's password (the message ends up in logs and 503 bodies).
#[tokio::test]
async fn an_unreachable_postgres_is_named_without_its_password() {
    // A port just released: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("postgres://app:s3cret-pw@127.0.0.1:{port}/tasks");
    let Err(err) = Db::connect(&url).await else {
        panic!("connected to a port nobody listens on");
    };
    let message = err.to_string();
    assert!(
        message.contains(&format!(
            "PostgreSQL at postgres://app:***@127.0.0.1:{port}/tasks: "
        )),
        "{message}"
    );
    assert!(!message.contains("s3cret-pw"), "{message}");
}
