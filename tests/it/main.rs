//! sluice's integration tests: one binary, one shared harness (`tests/support`).

#[path = "../support/mod.rs"]
mod support;

mod compose;
mod core;
mod docker;
mod files;
mod metrics;
mod reload;
mod traces;
