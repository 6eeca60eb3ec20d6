//! A private redis-server for tests (written by the Redis work).
