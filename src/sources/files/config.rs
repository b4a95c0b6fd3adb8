//! Configuration of the `files` source.

use crate::config::{HumanDuration, Located};
use crate::relabel::RelabelConfig;
use crate::sources::file::StartAt;
use serde::Deserialize;
use std::collections::BTreeMap;

/// How the lines of a file are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileFormat {
    /// Decided per file from its first line: CRI, Docker json-file, or raw.
    #[default]
    Auto,
    /// `<RFC3339Nano> <stdout|stderr> <P|F> <line>` (containerd, CRI-O).
    Cri,
    /// Docker's json-file: `{"log":"...","stream":"...","time":"..."}`.
    Docker,
    /// One entry per line, as written.
    Raw,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilesConfig {
    /// Glob patterns of the files to follow (`*`, `?`, `[...]`, `**`).
    pub include: Vec<Located<String>>,
    /// Glob patterns of files to leave out.
    #[serde(default)]
    pub exclude: Vec<Located<String>>,
    #[serde(default)]
    pub format: FileFormat,
    /// Labels put on every entry (default: `job: <source name>`); `filename` is added unless a
    /// Kubernetes path gives `namespace`/`pod`/`container` instead.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Where a file without a position starts.
    #[serde(default)]
    pub start_at: StartAt,
    /// How often the globs are expanded again (inotify events trigger a scan in between).
    #[serde(default = "default_scan_interval")]
    pub scan_interval: HumanDuration,
    /// Files followed at most at once; more are left for later and counted.
    #[serde(default = "default_max_open_files")]
    pub max_open_files: usize,
    /// How often positions are saved (also at shutdown).
    #[serde(default = "default_sync_period")]
    pub sync_period: HumanDuration,
    /// Metadata from `/var/log/pods/<namespace>_<pod>_<uid>/<container>/N.log` paths, and
    /// optional enrichment from the Kubernetes API.
    #[serde(default)]
    pub kubernetes: Option<KubernetesConfig>,
}

fn default_scan_interval() -> HumanDuration {
    HumanDuration::from_secs(10)
}
fn default_max_open_files() -> usize {
    1024
}
fn default_sync_period() -> HumanDuration {
    HumanDuration::from_secs(10)
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesConfig {
    /// This node's name (label `node`), usually `${NODE_NAME}` from the downward API.
    #[serde(default)]
    pub node: Option<String>,
    /// Read pod labels from the Kubernetes API (pods of this node only) and map them through
    /// `relabel_configs` (`__meta_kubernetes_pod_label_<name>`).
    #[serde(default)]
    pub api: bool,
    #[serde(default)]
    pub relabel_configs: Vec<Located<RelabelConfig>>,
}
