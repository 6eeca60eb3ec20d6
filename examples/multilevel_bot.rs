//! The multi-level assistant: bot instances, each with a memory L1 in
//! front of one shared Redis, kept coherent by the backplane; per-tier
//! stats (L1 hits, L2 hits, misses) per instance and the cache's report
//! with the configured thresholds.
//!
//! ```text
//! cargo run --example multilevel_bot                                   # in memory, one instance
//! CACHE_URL=redis://127.0.0.1:6379 cargo run --example multilevel_bot  # on Redis, two instances
//! CACHE_RATE_LIMITS="ask=5/min" CACHE_REPORT_LOW_HIT_RATE=0.9 cargo run --example multilevel_bot
//! ```
//!
//! The application code is in `src/multilevel_bot.rs`; this file reads the
//! configuration (every `CACHE_*` variable, or `CACHE_CONFIG_FILE`) and
//! prints the report.

use cache_examples::multilevel_bot::{run, RunConfig};
use cache_examples::stack::ExampleConfig;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let config = ExampleConfig::from_env()?;
    if config.is_redis() {
        println!(
            "two bot instances (bot-a, bot-b) share {}",
            config.config().url
        );
    } else {
        println!(
            "{}: one bot instance, nothing to share (set CACHE_URL=redis://... for two \
             instances kept coherent by the backplane)",
            config.config().url
        );
    }
    let report = run(config, RunConfig::default()).await?;
    print!("{report}");
    Ok(())
}
