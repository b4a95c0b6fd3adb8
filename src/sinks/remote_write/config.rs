//! Configuration of Remote Write.

use crate::config::common::QueueConfig;
use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteWriteConfig {
    /// e.g. `http://prometheus:9090/api/v1/write`.
    pub url: String,
    #[serde(default)]
    pub sources: Vec<String>,
    #[serde(default)]
    pub queue: QueueConfig,
}
