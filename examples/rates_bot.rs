//! An exchange-rate bot: a slow, sometimes failing upstream API behind a
//! cache with three TTL categories (rates 300 s, calculations 60 s,
//! statistics 900 s), fail-safe `get_or_set` so users get (stale) rates
//! while the upstream is down, per-user rate limiting, and a final report.
//!
//! ```text
//! cargo run --example rates_bot                                   # in memory
//! CACHE_URL=redis://127.0.0.1:6379 cargo run --example rates_bot  # on Redis
//! RATES_BOT_FAILURE_RATE=0.5 cargo run --example rates_bot        # a flakier upstream
//! ```
//!
//! The application code is in `src/rates_bot.rs`; this file configures a
//! run from the environment and prints the report. The cache is built from
//! every `CACHE_*` variable (`src/stack.rs`): on Redis, unless set
//! otherwise, a memory L1, a 250 ms deadline and fail-open in front of it,
//! so stopping Redis mid-run costs no answers (`CACHE_FAIL_OPEN=false`
//! shows the difference).

use std::time::Duration;

use cache_examples::rates_bot::{run, BotConfig};
use cache_examples::stack::ExampleConfig;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // CACHE_URL and every other CACHE_* variable (or CACHE_CONFIG_FILE);
    // on Redis, the production stack for what is not set.
    let cache = ExampleConfig::from_env()?;
    let mut config = BotConfig::default();
    if let Ok(rate) = std::env::var("RATES_BOT_FAILURE_RATE") {
        config.upstream.failure_rate = rate.parse()?;
    }
    if let Ok(minutes) = std::env::var("RATES_BOT_MINUTES") {
        config.duration = Duration::from_secs(minutes.parse::<u64>()? * 60);
    }
    println!(
        "{} users ({} of them spamming) talk to the bot for {} simulated minutes, \
         1 simulated second = {:.1} ms; the upstream fails {:.0}% of calls and is \
         down from minute {} to {}",
        config.users + config.spammers,
        config.spammers,
        config.duration.as_secs() / 60,
        1000.0 / config.speedup,
        config.upstream.failure_rate * 100.0,
        config
            .outage
            .map_or(0, |o| (config.duration.as_secs_f64() * o.0 / 60.0) as u64),
        config
            .outage
            .map_or(0, |o| (config.duration.as_secs_f64() * o.1 / 60.0) as u64),
    );
    let report = run(&cache, config).await?;
    print!("{report}");
    Ok(())
}
