//! sluice's integration tests: one binary, one shared harness (`tests/support`).

#[path = "../support/mod.rs"]
mod support;

mod core;
mod docker;
