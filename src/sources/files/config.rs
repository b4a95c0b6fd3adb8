//! Configuration of the `files` source.

use crate::config::{HumanDuration, Located, Position};
use crate::relabel::{Action, RelabelConfig, Relabeler};
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
    /// optional enrichment from the Kubernetes API (see [`super::kubernetes`]).
    #[serde(default)]
    pub kubernetes: Option<Located<KubernetesConfig>>,
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

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesConfig {
    /// This node's name (label `node`), usually `${NODE_NAME}` from the downward API. Required
    /// with `api: true`: only this node's pods are watched.
    #[serde(default)]
    pub node: Option<String>,
    /// Read pod labels and annotations from the Kubernetes API (a watch on the pods of `node`
    /// only) for `relabel_configs` (`__meta_kubernetes_pod_label_<name>`, ...).
    #[serde(default)]
    pub api: bool,
    /// A kubeconfig file for the API; without it, `KUBECONFIG` or `~/.kube/config`, then the
    /// pod's service account (in-cluster).
    #[serde(default)]
    pub kubeconfig: Option<String>,
    /// How long a new file whose pod the watch has not delivered yet waits for it before it is
    /// shipped with the labels of its path only (not at all while the API was never reached).
    #[serde(default = "default_wait_for_pod")]
    pub wait_for_pod: HumanDuration,
    /// Prometheus relabeling over the `__meta_kubernetes_*` labels of each kubelet path, with
    /// the path's labels; the result (without `__` names) is the file's stream labels.
    #[serde(default)]
    pub relabel_configs: Vec<Located<RelabelConfig>>,
}

impl Default for KubernetesConfig {
    fn default() -> Self {
        KubernetesConfig {
            node: None,
            api: false,
            kubeconfig: None,
            wait_for_pod: default_wait_for_pod(),
            relabel_configs: Vec::new(),
        }
    }
}

fn default_wait_for_pod() -> HumanDuration {
    HumanDuration::from_secs(5)
}

impl KubernetesConfig {
    /// The node name, when set and not empty.
    pub fn node(&self) -> Option<&str> {
        self.node.as_deref().map(str::trim).filter(|n| !n.is_empty())
    }

    /// The rules that apply when a pod's metadata could not be had: all but `keep` and `drop`,
    /// so that an unreachable API never leaves a file out.
    pub fn relabel_without_filters(&self) -> Vec<Located<RelabelConfig>> {
        self.relabel_configs
            .iter()
            .filter(|r| !matches!(r.value.action, Action::Keep | Action::Drop))
            .cloned()
            .collect()
    }
}

impl FilesConfig {
    /// What serde cannot check; positions are [`Position::START`] where the caller should put
    /// the source's own place.
    pub fn validate(&self) -> Vec<(Position, String)> {
        let mut errors = Vec::new();
        let Some(k8s) = &self.kubernetes else { return errors };
        if k8s.api && k8s.node().is_none() {
            errors.push((
                k8s.position,
                "kubernetes.api needs kubernetes.node (this node's name, e.g. `${NODE_NAME}` set from the downward API's spec.nodeName): only this node's pods are watched".into(),
            ));
        }
        if let Err(rule_errors) = Relabeler::compile(&k8s.relabel_configs) {
            errors.extend(rule_errors.into_iter().map(|(p, m)| (p, format!("kubernetes.relabel_configs: {m}"))));
        }
        errors
    }
}
