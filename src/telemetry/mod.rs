//! Self-observability: the agent's own metrics and its HTTP server.

pub mod metrics;
