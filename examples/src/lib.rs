//! The parts of the examples that tests, benches and example binaries
//! share. Each module is one example's application code; the binaries
//! beside this folder (`../rates_bot.rs`, `../tasks_api.rs`, ...) run them,
//! and `../tests/` checks them.

pub mod custom_backend;
pub mod http;
pub mod rates_bot;
pub mod tasks_api;
