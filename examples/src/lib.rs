//! The parts of the examples that tests, benches and example binaries
//! share. Each module is one example's application code; the binaries
//! beside this folder (`../rates_bot.rs`, `../tasks_api.rs`, ...) run them,
//! and `../tests/` checks them. [`stack`] is how every example builds its
//! cache from the `CACHE_*` variables (or JSON), and the production stack
//! it defaults to on Redis.

pub mod custom_backend;
pub mod http;
pub mod multilevel_bot;
pub mod rates_bot;
pub mod stack;
pub mod tasks_api;
