//! sluice's integration tests: one binary, one shared harness (`tests/support`).

#[path = "../support/mod.rs"]
mod support;

mod compose;
mod convert;
mod core;
mod docker;
mod files;
mod kubernetes;
mod metrics;
mod reload;
mod traces;
