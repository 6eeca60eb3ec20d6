//! The rates bot runs to completion on memory and on a real Redis, with
//! the upstream failing half of its calls and down for a stretch: users
//! still get answers, from stale values (counted), and spammers are rate
//! limited.
//!
//! The `outage` tests stop (or `SIGSTOP`) the bot's Redis 1.5 s into a
//! default run and bring it back 1.5 s later: on the examples' production
//! stack (L1, 250 ms deadline, fail-open, fail-safe) at least 99% of the
//! messages past the rate limiter are answered. They fail if the cache's
//! errors reach the users (a stack without fail-open, or an L1 that cannot
//! serve while L2 is down): answers then drop to a fraction.

use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use cache_examples::rates_bot::{run, BotConfig, Report};
use cache_examples::stack::ExampleConfig;
use cache_testkit::redis_server::RedisServer;

fn flaky_upstream() -> BotConfig {
    let mut config = BotConfig {
        duration: Duration::from_secs(10 * 60),
        ..BotConfig::default()
    };
    config.upstream.failure_rate = 0.5;
    config
}

/// Messages that got past the rate limiter, and the answered share of
/// them, in percent.
fn answer_rate(report: &Report) -> (u64, f64) {
    let asked = report.messages - report.rate_limited;
    (asked, 100.0 * report.answered as f64 / asked.max(1) as f64)
}

fn check(report: &Report) {
    println!("{report}");
    let (asked, _) = answer_rate(report);
    assert!(asked > 200, "too few messages: {asked}");
    // Everyone who got past the rate limit got an answer, but for a rare
    // unlucky first load.
    assert!(
        report.answered * 100 >= asked * 99,
        "only {} of {asked} answered",
        report.answered
    );
    // While the upstream was down, every answer came from the cache.
    assert_eq!(report.outage_answered, report.outage_messages);
    assert!(report.outage_messages > 0);
    // Failing and slow loads were covered by stale values, and counted.
    assert!(report.upstream_failures > 0);
    assert!(report.cache.stale_served > 0, "{:?}", report.cache);
    assert!(report.cache.loader_calls > 0);
    assert!(report.cache.hit_rate() > 0.3, "{:?}", report.cache);
    // The spammers hit the per-user limit; nobody else needs to.
    assert!(report.rate_limited > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rates_bot_on_memory_answers_while_the_upstream_fails() {
    let report = run(&ExampleConfig::from_url("memory://"), flaky_upstream())
        .await
        .unwrap();
    assert_eq!(report.backend, "memory");
    check(&report);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rates_bot_on_redis_answers_while_the_upstream_fails() {
    let config = ExampleConfig::from_url(RedisServer::shared().url());
    let report = run(&config, flaky_upstream()).await.unwrap();
    // The production stack: an L1 in front of Redis.
    assert_eq!(report.backend, "tiered");
    assert!(report.stack.contains("fail-open"), "{}", report.stack);
    check(&report);
}

/// How Redis goes away.
#[derive(Debug, Clone, Copy)]
enum Fault {
    /// The process exits (refused connections) and starts again empty.
    StopAndRestart,
    /// `SIGSTOP`: connections stay open, nothing is answered, then
    /// `SIGCONT`.
    PauseAndResume,
}

/// On a thread of its own: after `after`, takes `redis` away for `down`
/// as `fault` says, then sets `back`.
fn schedule(
    redis: Arc<RedisServer>,
    fault: Fault,
    after: Duration,
    down: Duration,
    back: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        std::thread::sleep(after);
        match fault {
            Fault::StopAndRestart => redis.stop(),
            Fault::PauseAndResume => redis.pause(),
        }
        std::thread::sleep(down);
        match fault {
            Fault::StopAndRestart => redis.start(),
            Fault::PauseAndResume => redis.resume(),
        }
        back.store(true, SeqCst);
    })
}

/// A default run (30 simulated minutes, about 4.5 s) on a private Redis
/// that goes away 1.5 s in and comes back 1.5 s later; whether Redis was
/// back before the run ended (else the run proves nothing).
async fn one_run_through_an_outage(fault: Fault) -> (Report, bool) {
    let redis = Arc::new(RedisServer::new());
    let config = ExampleConfig::from_url(redis.url());
    let back = Arc::new(AtomicBool::new(false));
    let faults = schedule(
        Arc::clone(&redis),
        fault,
        Duration::from_millis(1500),
        Duration::from_millis(1500),
        Arc::clone(&back),
    );
    let report = run(&config, BotConfig::default()).await.unwrap();
    let back_before_the_end = back.load(SeqCst);
    faults.join().unwrap();
    (report, back_before_the_end)
}

/// The bot through a Redis outage: every message past the limiter
/// answered, and the limiter saw the outage.
async fn bot_through_a_redis_outage(fault: Fault) {
    // A run the outage did not reach (no limiter check failed: seen about
    // once in eight runs of this binary, its four tests at once, before
    // and after issue 15) proves nothing either way: it is run again, at
    // most three times, and the last run is judged.
    let mut attempt = 1;
    let (report, back_before_the_end) = loop {
        let (report, back) = one_run_through_an_outage(fault).await;
        if report.limiter_backend_errors > 0 || attempt == 3 {
            break (report, back);
        }
        eprintln!(
            "OUTAGE RUN {attempt} ({fault:?}): the outage did not reach the run (no limiter check failed); running it again"
        );
        attempt += 1;
    };
    println!("{report}");
    let (asked, rate) = answer_rate(&report);
    println!(
        "OUTAGE FIGURES ({fault:?}): {} of {asked} messages past the limiter answered ({rate:.2}%), \
         {} unanswered, {} limiter checks without the backend, stack {}",
        report.answered, report.unanswered, report.limiter_backend_errors, report.stack
    );
    assert!(back_before_the_end, "Redis came back after the run ended");
    // The outage reached the run: the limiter (on the plain backend) saw it.
    assert!(report.limiter_backend_errors > 0, "{report}");
    assert!(asked > 200, "too few messages: {asked}");
    assert!(
        report.answered * 100 >= asked * 99,
        "only {} of {asked} messages past the limiter answered ({rate:.2}%)",
        report.answered
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rates_bot_outage_redis_stopped_and_restarted_mid_run() {
    bot_through_a_redis_outage(Fault::StopAndRestart).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rates_bot_outage_redis_paused_and_resumed_mid_run() {
    bot_through_a_redis_outage(Fault::PauseAndResume).await;
}
