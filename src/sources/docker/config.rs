//! Configuration of the Docker source.

use crate::config::{HumanDuration, Located};
use crate::relabel::RelabelConfig;
use crate::sources::file::StartAt;
use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DockerConfig {
    /// `unix:///var/run/docker.sock` or `tcp://host:2375`; default: `DOCKER_HOST`, then the
    /// local socket.
    #[serde(default)]
    pub host: Option<String>,
    /// Labels put on every entry (default: `job: <source name>`).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Which containers to follow (all of them by default).
    #[serde(default)]
    pub filters: Filters,
    /// Relabeling of each container's metadata (`__meta_docker_container_*`) into its labels,
    /// as Promtail's `docker_sd_configs` + `relabel_configs`.
    #[serde(default)]
    pub relabel_configs: Vec<Located<RelabelConfig>>,
    /// Where a container that has no position starts: its first line (default) or now.
    #[serde(default)]
    pub start_at: StartAt,
    /// How often positions are saved (also at shutdown).
    #[serde(default = "default_sync_period")]
    pub sync_period: HumanDuration,
    /// How long the positions of a destroyed container are kept.
    #[serde(default = "default_forget_after")]
    pub forget_destroyed_after: HumanDuration,
    /// A running container's stream that delivered nothing for this long is checked for lines it
    /// should have delivered (the engine's follow stream can stall after json-file rotation).
    #[serde(default = "default_stall_check")]
    pub stall_check_interval: HumanDuration,
    /// How often the container list is read again (events catch changes in between).
    #[serde(default = "default_refresh")]
    pub refresh_interval: HumanDuration,
}

fn default_sync_period() -> HumanDuration {
    HumanDuration::from_secs(10)
}
fn default_forget_after() -> HumanDuration {
    HumanDuration::from_secs(3600)
}
fn default_stall_check() -> HumanDuration {
    HumanDuration::from_secs(60)
}
fn default_refresh() -> HumanDuration {
    HumanDuration::from_secs(60)
}

/// Container filters; a container is followed when it passes all that are set.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filters {
    /// Label selectors: `key` (the label exists) or `key=value`.
    #[serde(default)]
    pub labels: Vec<String>,
    /// A regex on the container name (anchored; the name has no leading `/`).
    #[serde(default)]
    pub name: Option<Located<String>>,
    /// Only containers of this compose project.
    #[serde(default)]
    pub compose_project: Option<String>,
    /// Leave out the container sluice runs in.
    #[serde(default = "default_true")]
    pub exclude_self: bool,
}

fn default_true() -> bool {
    true
}

impl DockerConfig {
    /// Checks regexes and relabel rules; errors carry their place.
    pub fn validate(&self) -> Vec<(crate::config::Position, String)> {
        let mut errors = Vec::new();
        if let Some(host) = &self.host
            && let Err(e) = super::client::Endpoint::parse(host)
        {
            errors.push((crate::config::Position::START, e));
        }
        if let Some(name) = &self.filters.name
            && let Err(e) = regex::Regex::new(&name.value)
        {
            errors.push((name.position, format!("filters.name: invalid regex `{}`: {e}", name.value)));
        }
        if let Err(e) = crate::relabel::Relabeler::compile(&self.relabel_configs) {
            errors.extend(e.into_iter().map(|(p, m)| (p, format!("relabel_configs: {m}"))));
        }
        errors
    }
}

impl Default for Filters {
    fn default() -> Self {
        Filters { labels: Vec::new(), name: None, compose_project: None, exclude_self: true }
    }
}
