//! A tasks API: axum over SQLite, each user's task list cached under a
//! per-user key (invalidated on create and delete, written through on
//! update), `/health` and `/metrics`, login throttled by the rate limiter.
//!
//! ```text
//! cargo run --example tasks_api                  # serves on 127.0.0.1:3000, in memory
//! cargo run --example tasks_api -- --demo        # a scripted session through HTTP, then exits
//! CACHE_URL=redis://127.0.0.1:6379 cargo run --example tasks_api
//! TASKS_ADDR=0.0.0.0:8080 TASKS_DB=tasks.sqlite cargo run --example tasks_api
//! DATABASE_URL=postgres://postgres@127.0.0.1:5432/test cargo run --example tasks_api  # on PostgreSQL
//! ```
//!
//! ```text
//! curl -X POST localhost:3000/users -H 'content-type: application/json' -d '{"name":"ada","password":"pw-ada"}'
//! curl -X POST localhost:3000/login -H 'content-type: application/json' -d '{"name":"ada","password":"pw-ada"}'
//! curl localhost:3000/tasks -H "authorization: Bearer $TOKEN" -i        # x-cache: miss, then hit
//! curl -X POST localhost:3000/logout -H "authorization: Bearer $TOKEN" -i  # 204; the token is refused from now on
//! curl localhost:3000/metrics
//! ```
//!
//! The application is `src/tasks_api.rs`; its end-to-end tests are
//! `tests/tasks_api.rs` and its load comparison `benches/tasks_api_load.rs`.
//! The cache is built from every `CACHE_*` variable (`src/stack.rs`); on
//! Redis, unless set otherwise, with a memory L1, a 250 ms deadline and
//! fail-open, so a Redis outage only sends reads to the database. The rate
//! limiter runs on the plain backend of the same URL.

use std::net::SocketAddr;

use cache_examples::http::HttpClient;
use cache_examples::stack::ExampleConfig;
use cache_examples::tasks_api::TasksApi;
use serde_json::json;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let demo = std::env::args().any(|a| a == "--demo");
    // Every CACHE_* variable (or CACHE_CONFIG_FILE); on Redis, the
    // production stack (L1, 250 ms deadline, fail-open) for what is unset.
    let api = TasksApi::from_env().await?;
    let stack = ExampleConfig::from_env()?.describe();
    let addr: SocketAddr = if demo {
        "127.0.0.1:0".parse()?
    } else {
        std::env::var("TASKS_ADDR")
            .unwrap_or_else(|_| "127.0.0.1:3000".into())
            .parse()?
    };
    let server = api.serve(addr).await?;
    println!("tasks API on http://{} (cache: {stack})", server.addr());
    if demo {
        let result = Box::pin(run_demo(server.addr())).await;
        server.shutdown().await;
        return result;
    }
    println!("Ctrl-C stops it");
    tokio::signal::ctrl_c().await?;
    server.shutdown().await;
    Ok(())
}

/// Sends one request and prints it with the interesting parts of the answer.
async fn show(
    http: &mut HttpClient,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<serde_json::Value>,
) -> Result<serde_json::Value, BoxError> {
    let response = http.send(method, path, token, body.as_ref()).await?;
    let mut extra = String::new();
    for header in ["x-cache", "retry-after"] {
        if let Some(value) = response.header(header) {
            extra.push_str(&format!(" [{header}: {value}]"));
        }
    }
    let text = response.text();
    let shown = if text.len() > 120 {
        format!("{}…", &text[..120])
    } else {
        text.clone()
    };
    println!(
        "{method:<6} {path:<10} -> {}{extra} {shown}",
        response.status
    );
    Ok(serde_json::from_str(&text).unwrap_or(serde_json::Value::Null))
}

/// A short session: two users, their tasks, a throttled login, the metrics.
async fn run_demo(addr: SocketAddr) -> Result<(), BoxError> {
    let mut http = HttpClient::new(addr);
    let mut tokens = Vec::new();
    for name in ["alice", "bob"] {
        let creds = json!({ "name": name, "password": format!("pw-{name}") });
        show(&mut http, "POST", "/users", None, Some(creds.clone())).await?;
        let login = show(&mut http, "POST", "/login", None, Some(creds)).await?;
        tokens.push(login["token"].as_str().unwrap_or_default().to_owned());
    }
    let (alice, bob) = (Some(tokens[0].as_str()), Some(tokens[1].as_str()));

    println!("\n# Alice's list: a miss, then a hit; her writes show at once");
    show(&mut http, "GET", "/tasks", alice, None).await?;
    show(&mut http, "GET", "/tasks", alice, None).await?;
    let milk = show(
        &mut http,
        "POST",
        "/tasks",
        alice,
        Some(json!({"title": "milk"})),
    )
    .await?;
    show(
        &mut http,
        "POST",
        "/tasks",
        alice,
        Some(json!({"title": "bread"})),
    )
    .await?;
    show(&mut http, "GET", "/tasks", alice, None).await?;
    let path = format!("/tasks/{}", milk["id"]);
    show(&mut http, "PUT", &path, alice, Some(json!({"done": true}))).await?;
    show(&mut http, "GET", "/tasks", alice, None).await?;

    println!("\n# Bob sees only his own, and cannot touch Alice's");
    show(&mut http, "GET", "/tasks", bob, None).await?;
    show(&mut http, "DELETE", &path, bob, None).await?;
    show(&mut http, "DELETE", &path, alice, None).await?;
    show(&mut http, "GET", "/tasks", alice, None).await?;

    println!("\n# Bob logs out: his session is gone, his token refused");
    show(&mut http, "POST", "/logout", bob, None).await?;
    show(&mut http, "GET", "/tasks", bob, None).await?;

    println!("\n# Password guessing: the 6th login in a minute is refused");
    for _ in 0..5 {
        let guess = json!({"name": "alice", "password": "guess"});
        show(&mut http, "POST", "/login", None, Some(guess)).await?;
    }

    println!("\n# Health and metrics");
    show(&mut http, "GET", "/health", None, None).await?;
    let metrics = http.send("GET", "/metrics", None, None).await?.text();
    for line in metrics.lines().filter(|l| {
        l.starts_with("tasks_api_cache_")
            || l.starts_with("tasks_api_task_lists")
            || l.starts_with("tasks_api_rate_limit_decisions")
    }) {
        println!("  {line}");
    }
    Ok(())
}
