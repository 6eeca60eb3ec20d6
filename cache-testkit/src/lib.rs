//! Conformance suite, mocks, fault injection and Redis fixtures.

pub mod redis_server;
