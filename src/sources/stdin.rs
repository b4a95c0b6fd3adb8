//! `stdin`: one entry per line of standard input, timestamped when read.

use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StdinConfig {
    /// Labels put on every entry (default: `job: <source name>`).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}
