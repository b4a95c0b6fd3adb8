//! sluice: one agent for logs, traces and node metrics.
//!
//! Data flows one way: sources → pipelines → sinks, wired by [`topology`] with bounded queues
//! and end-to-end acknowledgements (see `DESIGN.md`). Sources, pipelines and sinks never import
//! one another; shared types live in [`event`], [`formats`] and [`config`].

pub mod app;
pub mod config;
pub mod convert;
pub mod event;
pub mod formats;
pub mod fswatch;
pub mod pipeline;
pub mod proto;
pub mod relabel;
pub mod sinks;
pub mod sources;
pub mod telemetry;
pub mod topology;
