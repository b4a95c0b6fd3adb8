//! Sources: where entries come from. Each hands batches to the topology through an
//! [`crate::topology`] emitter and never sees pipelines or sinks.

pub mod docker;
pub mod file;
pub mod files;
pub mod lines;
pub mod otlp;
pub mod positions;
pub mod prometheus_scrape;
pub mod stdin;
