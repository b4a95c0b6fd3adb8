//! `file`: one append-only file, read from its start or its end and followed as it grows.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Where a file source starts when it has no position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StartAt {
    #[default]
    Beginning,
    End,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub path: PathBuf,
    #[serde(default)]
    pub start_at: StartAt,
    /// Labels put on every entry (default: `job: <source name>`; `filename` is always added).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}
