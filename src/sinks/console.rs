//! `console`: prints entries (timestamp, labels, metadata, line) as text or JSON lines.

use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsoleFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleConfig {
    #[serde(default)]
    pub sources: Vec<String>,
    #[serde(default)]
    pub format: ConsoleFormat,
}
