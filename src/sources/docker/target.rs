//! A followed container as the source sees it: which containers to follow (filters), and the
//! labels of each, from its metadata and the relabel rules.
//!
//! Labels of a container, before relabeling: the source's own labels; `container_name`,
//! `compose_project`, `compose_service`, `image`; and the metadata Promtail's `docker_sd_configs`
//! exposes: `__meta_docker_container_id`, `__meta_docker_container_name` (with its leading `/`),
//! `__meta_docker_container_image`, `__meta_docker_container_network_mode` and
//! `__meta_docker_container_label_<name>` for every container label (name sanitized). After
//! relabeling, names starting with `__` are dropped; `stream` is added per line. The container
//! id is structured metadata (`container_id`), never a label: it would make a stream per restart.

use super::config::Filters;
use crate::event::LabelSet;
use crate::event::labels::sanitize_name;
use crate::relabel::Relabeler;
use bollard::models::ContainerInspectResponse;
use bytes::Bytes;
use regex::Regex;
use std::collections::HashMap;

pub const COMPOSE_PROJECT: &str = "com.docker.compose.project";
pub const COMPOSE_SERVICE: &str = "com.docker.compose.service";

/// What the source knows of a container, from its inspect data.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerInfo {
    pub id: String,
    /// Without the leading `/`.
    pub name: String,
    pub image: String,
    pub labels: HashMap<String, String>,
    pub tty: bool,
    pub running: bool,
    pub network_mode: String,
    /// When it stopped, nanoseconds since the epoch (0 when running or unknown).
    pub finished_at: i64,
}

impl ContainerInfo {
    pub fn from_inspect(c: &ContainerInspectResponse) -> Option<ContainerInfo> {
        let config = c.config.as_ref();
        let state = c.state.as_ref();
        Some(ContainerInfo {
            id: c.id.clone()?,
            name: c.name.clone().unwrap_or_default().trim_start_matches('/').to_string(),
            image: config.and_then(|c| c.image.clone()).or_else(|| c.image.clone()).unwrap_or_default(),
            labels: config.and_then(|c| c.labels.clone()).unwrap_or_default(),
            tty: config.and_then(|c| c.tty).unwrap_or(false),
            running: state.and_then(|s| s.running).unwrap_or(false),
            network_mode: c.host_config.as_ref().and_then(|h| h.network_mode.clone()).unwrap_or_default(),
            finished_at: state
                .and_then(|s| s.finished_at.as_deref())
                .and_then(|t| crate::formats::time::parse_rfc3339_nanos(t.as_bytes()))
                .filter(|t| *t > 0)
                .unwrap_or(0),
        })
    }
}

/// Compiled container filters.
pub struct ContainerFilter {
    labels: Vec<(String, Option<String>)>,
    name: Option<Regex>,
    compose_project: Option<String>,
    self_id: Option<String>,
}

impl ContainerFilter {
    /// `self_id`: the id of the container sluice runs in, when it does and `exclude_self` is on.
    pub fn new(filters: &Filters, self_id: Option<String>) -> Result<ContainerFilter, String> {
        let name = match &filters.name {
            Some(re) => Some(
                Regex::new(&format!("^(?:{})$", re.value)).map_err(|e| format!("filters.name: invalid regex: {e}"))?,
            ),
            None => None,
        };
        let labels = filters
            .labels
            .iter()
            .map(|s| match s.split_once('=') {
                Some((k, v)) => (k.to_string(), Some(v.to_string())),
                None => (s.clone(), None),
            })
            .collect();
        Ok(ContainerFilter {
            labels,
            name,
            compose_project: filters.compose_project.clone(),
            self_id: self_id.filter(|_| filters.exclude_self),
        })
    }

    pub fn accepts(&self, c: &ContainerInfo) -> bool {
        if self.self_id.as_deref() == Some(c.id.as_str()) {
            return false;
        }
        if let Some(project) = &self.compose_project
            && c.labels.get(COMPOSE_PROJECT) != Some(project)
        {
            return false;
        }
        if let Some(re) = &self.name
            && !re.is_match(&c.name)
        {
            return false;
        }
        self.labels.iter().all(|(k, v)| match (c.labels.get(k), v) {
            (Some(_), None) => true,
            (Some(have), Some(want)) => have == want,
            (None, _) => false,
        })
    }
}

/// The label sets of a container's two streams, and its id as metadata.
#[derive(Debug, Clone)]
pub struct StreamLabels {
    pub stdout: LabelSet,
    pub stderr: LabelSet,
    pub container_id: Bytes,
}

/// Labels for a container; `None` when a relabel rule drops it.
pub fn stream_labels(source_labels: &LabelSet, c: &ContainerInfo, relabel: &Relabeler) -> Option<StreamLabels> {
    let mut labels: Vec<(String, String)> =
        source_labels.pairs().iter().map(|(n, v)| (n.to_string(), v.to_string())).collect();
    let mut add = |n: &str, v: &str| {
        if !v.is_empty() {
            labels.retain(|(existing, _)| existing != n);
            labels.push((n.to_string(), v.to_string()));
        }
    };
    add("container_name", &c.name);
    add("compose_project", c.labels.get(COMPOSE_PROJECT).map_or("", String::as_str));
    add("compose_service", c.labels.get(COMPOSE_SERVICE).map_or("", String::as_str));
    add("image", &c.image);
    add("__meta_docker_container_id", &c.id);
    add("__meta_docker_container_name", &format!("/{}", c.name));
    add("__meta_docker_container_image", &c.image);
    add("__meta_docker_container_network_mode", &c.network_mode);
    for (k, v) in &c.labels {
        add(&format!("__meta_docker_container_label_{}", sanitize_name(k)), v);
    }
    let labels = relabel.apply(labels)?;
    let with_stream = |stream: &str| {
        LabelSet::from_pairs(
            labels.iter().map(|(n, v)| (n.as_str(), v.as_str())).chain(std::iter::once(("stream", stream))),
        )
    };
    Some(StreamLabels {
        stdout: with_stream("stdout"),
        stderr: with_stream("stderr"),
        container_id: Bytes::from(c.id.clone()),
    })
}

/// The id of the Docker container this process runs in, from `/proc/self/mountinfo` (Docker
/// bind-mounts `/etc/hostname` from `/var/lib/docker/containers/<id>/`) or `/proc/self/cgroup`.
pub fn own_container_id() -> Option<String> {
    let from = |text: &str| container_id_in(text);
    std::fs::read_to_string("/proc/self/mountinfo")
        .ok()
        .as_deref()
        .and_then(from)
        .or_else(|| std::fs::read_to_string("/proc/self/cgroup").ok().as_deref().and_then(from))
}

/// Finds `containers/<64 hex>` or `docker-<64 hex>.scope` or `/docker/<64 hex>` in `text`.
pub fn container_id_in(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    for marker in ["/containers/", "docker-", "/docker/"] {
        let mut from = 0;
        while let Some(at) = text[from..].find(marker) {
            let start = from + at + marker.len();
            let id = &bytes[start..(start + 64).min(bytes.len())];
            if id.len() == 64 && id.iter().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()) {
                return Some(String::from_utf8_lossy(id).into_owned());
            }
            from = start;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Located, parse_yaml_expanded};
    use crate::relabel::RelabelConfig;

    fn info() -> ContainerInfo {
        ContainerInfo {
            id: "a".repeat(64),
            name: "shop-api-1".into(),
            image: "shop/api:1.2".into(),
            labels: [
                (COMPOSE_PROJECT, "shop"),
                (COMPOSE_SERVICE, "api"),
                ("com.example.team", "core"),
                ("logging", "on"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
            tty: false,
            running: true,
            network_mode: "bridge".into(),
            finished_at: 0,
        }
    }

    #[test]
    fn default_labels_and_relabeling() {
        let rules: Vec<Located<RelabelConfig>> = parse_yaml_expanded(
            std::path::Path::new("r"),
            "- action: labelmap\n  regex: __meta_docker_container_label_com_example_(.+)\n- action: labeldrop\n  regex: image\n",
        )
        .unwrap();
        let relabel = Relabeler::compile(&rules).unwrap();
        let l = stream_labels(&LabelSet::from_pairs([("job", "docker")]), &info(), &relabel).unwrap();
        assert_eq!(
            l.stdout.rendered(),
            r#"{compose_project="shop", compose_service="api", container_name="shop-api-1", job="docker", stream="stdout", team="core"}"#
        );
        assert_eq!(l.stderr.get("stream"), Some("stderr"));
        assert_eq!(l.container_id.len(), 64);
    }

    #[test]
    fn a_relabel_drop_leaves_the_container_out() {
        let rules: Vec<Located<RelabelConfig>> = parse_yaml_expanded(
            std::path::Path::new("r"),
            "- source_labels: [__meta_docker_container_label_logging]\n  regex: 'on'\n  action: drop\n",
        )
        .unwrap();
        assert!(stream_labels(&LabelSet::empty(), &info(), &Relabeler::compile(&rules).unwrap()).is_none());
    }

    #[test]
    fn filters() {
        let f = |filters: Filters, self_id: Option<String>| {
            ContainerFilter::new(&filters, self_id).unwrap().accepts(&info())
        };
        assert!(f(Filters::default(), None));
        assert!(!f(Filters::default(), Some("a".repeat(64))), "its own container");
        assert!(f(Filters { exclude_self: false, ..Filters::default() }, Some("a".repeat(64))));
        assert!(f(Filters { labels: vec!["logging".into(), "logging=on".into()], ..Filters::default() }, None));
        assert!(!f(Filters { labels: vec!["logging=off".into()], ..Filters::default() }, None));
        assert!(f(Filters { compose_project: Some("shop".into()), ..Filters::default() }, None));
        assert!(!f(Filters { compose_project: Some("other".into()), ..Filters::default() }, None));
        let name = |re: &str| Filters { name: Some(Located::new(re.into(), Default::default())), ..Filters::default() };
        assert!(f(name("shop-.*"), None));
        assert!(!f(name("shop"), None), "anchored");
    }

    #[test]
    fn finds_its_own_container_id() {
        let id = "0123456789abcdef".repeat(4);
        let mountinfo = format!(
            "611 590 254:1 /var/lib/docker/containers/{id}/hostname /etc/hostname rw,relatime - ext4 /dev/vda rw\n"
        );
        assert_eq!(container_id_in(&mountinfo), Some(id.clone()));
        assert_eq!(container_id_in(&format!("0::/system.slice/docker-{id}.scope\n")), Some(id.clone()));
        assert_eq!(container_id_in("0::/user.slice\n"), None);
    }
}
