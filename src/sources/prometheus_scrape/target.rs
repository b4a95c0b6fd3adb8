//! Targets: what to scrape and the labels every series of a target gets.
//!
//! As in Prometheus, a target starts as discovery labels (`__address__`, `__scheme__`,
//! `__metrics_path__`, `job`, the static labels, `__meta_*` from discovery), goes through the
//! job's `relabel_configs` (which may drop it), then `instance` defaults to `__address__` and
//! every label starting with `__` is removed. The URL is built from what relabeling left.

use crate::relabel::Relabeler;

/// A target as discovery found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discovered {
    pub address: String,
    /// Overrides of the job's scheme and path (from container labels).
    pub scheme: Option<String>,
    pub path: Option<String>,
    /// Static labels or `__meta_*` labels.
    pub labels: Vec<(String, String)>,
}

/// A target ready to scrape.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Target {
    pub url: String,
    /// Sorted by name: `job`, `instance` and the rest; never a `__` label.
    pub labels: Vec<(String, String)>,
}

impl Target {
    /// A stable identity (URL and labels), also used to spread targets over the interval.
    pub fn key(&self) -> String {
        let mut key = self.url.clone();
        for (n, v) in &self.labels {
            key.push('\u{1}');
            key.push_str(n);
            key.push('=');
            key.push_str(v);
        }
        key
    }
}

/// Builds a target; `None` when relabeling dropped it or left it without an address.
pub fn build(
    job: &str,
    scheme: &str,
    path: &str,
    found: &Discovered,
    relabel: &Relabeler,
) -> Result<Option<Target>, String> {
    let mut labels: Vec<(String, String)> = vec![
        ("__address__".into(), found.address.clone()),
        ("__scheme__".into(), found.scheme.clone().unwrap_or_else(|| scheme.to_string())),
        ("__metrics_path__".into(), found.path.clone().unwrap_or_else(|| path.to_string())),
        ("job".into(), job.to_string()),
    ];
    for (n, v) in &found.labels {
        labels.retain(|(existing, _)| existing != n);
        labels.push((n.clone(), v.clone()));
    }
    let Some(mut labels) = relabel.apply(labels) else { return Ok(None) };
    let get = |labels: &[(String, String)], name: &str| {
        labels.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone()).unwrap_or_default()
    };
    let address = get(&labels, "__address__");
    if address.is_empty() {
        return Ok(None);
    }
    let scheme = get(&labels, "__scheme__");
    if scheme != "http" && scheme != "https" {
        return Err(format!("target {address}: scheme `{scheme}` is neither http nor https"));
    }
    let mut path = get(&labels, "__metrics_path__");
    if !path.starts_with('/') {
        path.insert(0, '/');
    }
    let url = format!("{scheme}://{address}{path}");
    if url.parse::<http::Uri>().is_err() {
        return Err(format!("target {address}: `{url}` is not a valid URL"));
    }
    if get(&labels, "instance").is_empty() {
        labels.retain(|(n, _)| n != "instance");
        labels.push(("instance".into(), address));
    }
    labels.retain(|(n, v)| !n.starts_with("__") && !v.is_empty());
    if let Some((bad, _)) = labels.iter().find(|(n, _)| !super::parse::is_label_name(n)) {
        return Err(format!("target {url}: relabeling made the invalid label name `{bad}`"));
    }
    labels.sort();
    labels.dedup_by(|a, b| a.0 == b.0);
    Ok(Some(Target { url, labels }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Located, parse_yaml_expanded};
    use crate::relabel::RelabelConfig;

    fn found(address: &str, labels: &[(&str, &str)]) -> Discovered {
        Discovered {
            address: address.into(),
            scheme: None,
            path: None,
            labels: labels.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect(),
        }
    }

    fn pairs(t: &Target) -> Vec<(&str, &str)> {
        t.labels.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect()
    }

    #[test]
    fn static_targets_get_job_instance_and_their_labels() {
        let t = build("gpu", "http", "/metrics", &found("node-1:9835", &[("node", "n1")]), &Relabeler::default())
            .unwrap()
            .unwrap();
        assert_eq!(t.url, "http://node-1:9835/metrics");
        assert_eq!(pairs(&t), [("instance", "node-1:9835"), ("job", "gpu"), ("node", "n1")]);
    }

    #[test]
    fn relabeling_shapes_docker_targets() {
        let rules: Vec<Located<RelabelConfig>> = parse_yaml_expanded(
            std::path::Path::new("r"),
            r#"
- source_labels: [__meta_docker_container_name]
  regex: '/(.*)'
  target_label: container
- source_labels: [__meta_docker_container_label_team]
  regex: ignored
  action: drop
"#,
        )
        .unwrap();
        let relabel = Relabeler::compile(&rules).unwrap();
        let mut d = found("172.17.0.5:9100", &[("__meta_docker_container_name", "/exporter-1")]);
        d.path = Some("/custom".into());
        d.scheme = Some("https".into());
        let t = build("docker", "http", "/metrics", &d, &relabel).unwrap().unwrap();
        assert_eq!(t.url, "https://172.17.0.5:9100/custom");
        assert_eq!(pairs(&t), [("container", "exporter-1"), ("instance", "172.17.0.5:9100"), ("job", "docker")]);
        let dropped = found("172.17.0.6:9100", &[("__meta_docker_container_label_team", "ignored")]);
        assert_eq!(build("docker", "http", "/metrics", &dropped, &relabel), Ok(None));
    }

    #[test]
    fn bad_schemes_are_errors() {
        let mut d = found("a:1", &[]);
        d.scheme = Some("ftp".into());
        assert!(build("j", "http", "/m", &d, &Relabeler::default()).unwrap_err().contains("scheme `ftp`"));
    }
}
