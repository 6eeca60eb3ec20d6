//! The proptest harness: many random sequences, shrinking, a summary.

use std::cell::Cell;
use std::future::Future;
use std::time::Instant;

use proptest::test_runner::{Config, TestCaseError, TestError, TestRunner};

use super::op::{format_sequence, ops, Profile};
use super::runner::ModelRunner;

/// The number of cases to run: `CACHE_MODEL_CASES` when set to a number,
/// else `default`.
pub fn cases_from_env(default: u32) -> u32 {
    std::env::var("CACHE_MODEL_CASES")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// Runs `cases` random sequences of `profile` (proptest), each on a fresh
/// runner from `factory` (so a fresh namespace, and a fresh backend if the
/// factory makes one), on a two-thread tokio runtime. Prints the cases and
/// operations run. A divergence is shrunk to a minimal sequence.
///
/// `PROPTEST_*` variables (e.g. `PROPTEST_RNG_SEED`) apply; failures are not
/// persisted to files.
///
/// # Panics
///
/// On a divergence, with the minimal failing sequence and the step that
/// diverged; when no tokio runtime can be built.
pub fn check_model<F, Fut>(name: &str, profile: &Profile, cases: u32, factory: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = ModelRunner>,
{
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime for the model run");
    let config = Config {
        cases,
        max_shrink_iters: profile.max_shrink_iters,
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    let (runs, steps) = (Cell::new(0u64), Cell::new(0u64));
    let started = Instant::now();
    let result = runner.run(&ops(profile), |ops| {
        let outcome = rt.block_on(async {
            let model = factory().await;
            let outcome = model.run(&ops).await;
            model.cleanup().await;
            outcome
        });
        runs.set(runs.get() + 1);
        match outcome {
            Ok(n) => {
                steps.set(steps.get() + n as u64);
                Ok(())
            }
            Err(d) => {
                steps.set(steps.get() + d.step as u64 + 1);
                Err(TestCaseError::fail(d.to_string()))
            }
        }
    });
    let summary = format!(
        "model {name}: {cases} cases, {} sequences run (shrinking included), {} operations, {:.2?}",
        runs.get(),
        steps.get(),
        started.elapsed()
    );
    println!("{summary}");
    match result {
        Ok(()) => {}
        Err(TestError::Fail(reason, ops)) => panic!(
            "{summary}\nmodel {name}: divergence at {reason}\nminimal failing sequence ({} steps):\n{}",
            ops.len(),
            format_sequence(&ops)
        ),
        Err(TestError::Abort(reason)) => panic!("{summary}\nmodel {name}: aborted: {reason}"),
    }
}
