//! The tasks API end to end, through real HTTP on loopback, on the memory
//! backend and on a real Redis: two users create, list, update and delete;
//! no list is ever stale after a write, no user ever sees another's tasks,
//! cache hits show in `/metrics`, logins are throttled after 5 attempts.

use std::net::SocketAddr;
use std::sync::Arc;

use cache::{CacheBackend, CacheConfig, Rule};
use cache_examples::http::{HttpClient, Response};
use cache_examples::tasks_api::{self, Db, Server, Task, TasksApi};
use cache_testkit::redis_server::RedisServer;
use serde_json::json;

/// The API over `url` (memory:// or redis://), with a prefix of its own so
/// tests sharing a Redis never meet.
async fn api(url: &str) -> TasksApi {
    let mut config = CacheConfig::from_url(url);
    config.prefix = format!("tasks-test-{}", fastrand::u32(..));
    let cache = tasks_api::open_cache(&config).await.unwrap();
    let limiter = tasks_api::rate_limiter(
        cache.backend().clone(),
        cache.prefix(),
        Rule::per_minute(100_000),
    )
    .unwrap();
    TasksApi::new(Db::open(":memory:").unwrap(), Some(cache), limiter)
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

async fn two_users_create_list_update_delete(url: &str) {
    let server = serve(api(url).await).await;
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
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_api_two_users_on_memory() {
    two_users_create_list_update_delete("memory://").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_api_two_users_on_redis() {
    two_users_create_list_update_delete(RedisServer::shared().url()).await;
}

/// Several users, each with several connections writing and reading at
/// once: after each write returns, the writer's next list shows it.
async fn concurrent_writers_never_read_stale_lists(url: &str) {
    let server = serve(api(url).await).await;
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
                        me.call("DELETE", &format!("/tasks/{}", task.id), None)
                            .await;
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
    concurrent_writers_never_read_stale_lists("memory://").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_api_concurrent_writers_never_read_stale_lists_on_redis() {
    concurrent_writers_never_read_stale_lists(RedisServer::shared().url()).await;
}

async fn login_throttled_after_5_attempts(url: &str) {
    let server = serve(api(url).await).await;
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
    login_throttled_after_5_attempts("memory://").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_api_login_throttled_after_5_attempts_on_redis() {
    login_throttled_after_5_attempts(RedisServer::shared().url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_api_health_follows_the_backend_and_lists_survive_an_outage() {
    let redis = RedisServer::new();
    let server = serve(api(redis.url()).await).await;
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
    // Lists come from the database while the cache is down...
    let (tasks, source) = erin.list().await;
    assert_eq!(
        (titles(&tasks), source.as_str()),
        (vec!["water plants"], "bypass")
    );
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
