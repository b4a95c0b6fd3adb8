//! Configuration of the OTLP exporter.

use crate::config::common::QueueConfig;
use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtlpSinkConfig {
    /// e.g. `http://jaeger:4317`.
    pub endpoint: String,
    #[serde(default)]
    pub sources: Vec<String>,
    #[serde(default)]
    pub queue: QueueConfig,
}
