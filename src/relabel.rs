//! Prometheus relabeling (`relabel_configs`, `metric_relabel_configs`), with Prometheus'
//! semantics: regexes anchored at both ends, `source_labels` joined by `separator` (`;`), a
//! missing label read as the empty string, `$1`/`${name}` in `replacement`, and a target label
//! set to the empty string removed.
//!
//! Used wherever targets or streams get labels from discovered metadata: the Docker source
//! (`__meta_docker_*`), the files source on Kubernetes (`__meta_kubernetes_*`) and scraping.

use crate::config::Located;
use regex::Regex;
use serde::Deserialize;

/// What a rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    #[default]
    Replace,
    Keep,
    Drop,
    Labelmap,
    Labeldrop,
    Labelkeep,
    Lowercase,
    Uppercase,
    Hashmod,
}

/// One rule as written in YAML.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelabelConfig {
    #[serde(default)]
    pub source_labels: Vec<String>,
    #[serde(default)]
    pub separator: Option<String>,
    #[serde(default)]
    pub regex: Option<Located<String>>,
    #[serde(default)]
    pub target_label: Option<String>,
    #[serde(default)]
    pub replacement: Option<String>,
    #[serde(default)]
    pub modulus: Option<u64>,
    #[serde(default)]
    pub action: Action,
}

/// A compiled rule.
#[derive(Debug, Clone)]
pub struct Rule {
    source_labels: Vec<String>,
    separator: String,
    regex: Regex,
    target_label: String,
    replacement: String,
    modulus: u64,
    action: Action,
}

/// Labels being relabeled: (name, value), names unique.
pub type Labels = Vec<(String, String)>;

fn get<'a>(labels: &'a Labels, name: &str) -> &'a str {
    labels.iter().find(|(n, _)| n == name).map_or("", |(_, v)| v.as_str())
}

fn set(labels: &mut Labels, name: &str, value: String) {
    labels.retain(|(n, _)| n != name);
    if !value.is_empty() {
        labels.push((name.to_string(), value));
    }
}

impl Rule {
    /// Compiles a rule; the error names what is wrong (the caller adds the place).
    pub fn compile(c: &RelabelConfig) -> Result<Rule, String> {
        let pattern = c.regex.as_ref().map_or("(.*)", |r| r.value.as_str());
        let regex = Regex::new(&format!("^(?s:{pattern})$")).map_err(|e| format!("invalid regex `{pattern}`: {e}"))?;
        let needs_target =
            matches!(c.action, Action::Replace | Action::Lowercase | Action::Uppercase | Action::Hashmod);
        let target_label = c.target_label.clone().unwrap_or_default();
        if needs_target && target_label.is_empty() {
            return Err(format!("action `{:?}` needs a `target_label`", c.action).to_lowercase());
        }
        if matches!(c.action, Action::Keep | Action::Drop | Action::Hashmod) && c.source_labels.is_empty() {
            return Err(format!("action `{:?}` needs `source_labels`", c.action).to_lowercase());
        }
        if c.action == Action::Hashmod && c.modulus.unwrap_or(0) == 0 {
            return Err("action `hashmod` needs a `modulus` above 0".into());
        }
        Ok(Rule {
            source_labels: c.source_labels.clone(),
            separator: c.separator.clone().unwrap_or_else(|| ";".into()),
            regex,
            target_label,
            replacement: c.replacement.clone().unwrap_or_else(|| "$1".into()),
            modulus: c.modulus.unwrap_or(0),
            action: c.action,
        })
    }

    fn source_value(&self, labels: &Labels) -> String {
        self.source_labels.iter().map(|n| get(labels, n)).collect::<Vec<_>>().join(&self.separator)
    }

    /// Applies the rule; `false` means the target (or series) is dropped.
    pub fn apply(&self, labels: &mut Labels) -> bool {
        match self.action {
            Action::Keep => self.regex.is_match(&self.source_value(labels)),
            Action::Drop => !self.regex.is_match(&self.source_value(labels)),
            Action::Replace => {
                let value = self.source_value(labels);
                if let Some(caps) = self.regex.captures(&value) {
                    let mut target = String::new();
                    caps.expand(&self.target_label, &mut target);
                    let mut replaced = String::new();
                    caps.expand(&self.replacement, &mut replaced);
                    if !target.is_empty() {
                        set(labels, &target, replaced);
                    }
                }
                true
            }
            Action::Lowercase => {
                let value = self.source_value(labels).to_lowercase();
                set(labels, &self.target_label, value);
                true
            }
            Action::Uppercase => {
                let value = self.source_value(labels).to_uppercase();
                set(labels, &self.target_label, value);
                true
            }
            Action::Hashmod => {
                let digest = md5_prefix(self.source_value(labels).as_bytes());
                set(labels, &self.target_label, (digest % self.modulus).to_string());
                true
            }
            Action::Labelmap => {
                let mut added = Vec::new();
                for (name, value) in labels.iter() {
                    if let Some(caps) = self.regex.captures(name) {
                        let mut target = String::new();
                        caps.expand(&self.replacement, &mut target);
                        added.push((target, value.clone()));
                    }
                }
                for (name, value) in added {
                    set(labels, &name, value);
                }
                true
            }
            Action::Labeldrop => {
                labels.retain(|(n, _)| !self.regex.is_match(n));
                true
            }
            Action::Labelkeep => {
                labels.retain(|(n, _)| self.regex.is_match(n));
                true
            }
        }
    }
}

/// Prometheus' `hashmod`: the first 8 bytes of the MD5 digest, big-endian.
fn md5_prefix(data: &[u8]) -> u64 {
    use md5::Digest as _;
    let digest = md5::Md5::digest(data);
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

/// Compiled rules, applied in order.
#[derive(Debug, Clone, Default)]
pub struct Relabeler {
    rules: Vec<Rule>,
}

impl Relabeler {
    /// Compiles every rule; errors come with the place of the rule they concern.
    pub fn compile(configs: &[Located<RelabelConfig>]) -> Result<Relabeler, Vec<(crate::config::Position, String)>> {
        let mut rules = Vec::new();
        let mut errors = Vec::new();
        for c in configs {
            match Rule::compile(&c.value) {
                Ok(r) => rules.push(r),
                Err(e) => errors.push((c.value.regex.as_ref().map_or(c.position, |r| r.position), e)),
            }
        }
        if errors.is_empty() { Ok(Relabeler { rules }) } else { Err(errors) }
    }

    /// Applies every rule; `None` when a rule dropped the target.
    pub fn apply(&self, mut labels: Labels) -> Option<Labels> {
        for rule in &self.rules {
            if !rule.apply(&mut labels) {
                return None;
            }
        }
        Some(labels)
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Position, parse_yaml_expanded};
    use std::path::Path;

    fn relabeler(yaml: &str) -> Relabeler {
        let configs: Vec<Located<RelabelConfig>> = parse_yaml_expanded(Path::new("r.yaml"), yaml).unwrap();
        Relabeler::compile(&configs).unwrap()
    }

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect()
    }

    fn sorted(mut l: Labels) -> Labels {
        l.sort();
        l
    }

    #[test]
    fn replace_with_groups_and_defaults() {
        let r = relabeler(
            r#"
- source_labels: [__meta_docker_container_name]
  regex: '/(.*)'
  target_label: container
- source_labels: [a, b]
  separator: '-'
  target_label: ab
- source_labels: [missing]
  regex: '(.+)'
  target_label: never
"#,
        );
        let out = r.apply(labels(&[("__meta_docker_container_name", "/web-1"), ("a", "x"), ("b", "y")])).unwrap();
        assert_eq!(get(&out, "container"), "web-1");
        assert_eq!(get(&out, "ab"), "x-y");
        assert!(!out.iter().any(|(n, _)| n == "never"), "an unmatched regex changes nothing");
    }

    #[test]
    fn keep_drop_and_anchoring() {
        let keep = relabeler("- source_labels: [env]\n  regex: prod\n  action: keep\n");
        assert!(keep.apply(labels(&[("env", "prod")])).is_some());
        assert!(keep.apply(labels(&[("env", "production")])).is_none(), "regexes are anchored");
        assert!(keep.apply(labels(&[])).is_none());
        let drop = relabeler(
            "- source_labels: [__meta_docker_container_label_logging]\n  regex: 'off|false'\n  action: drop\n",
        );
        assert!(drop.apply(labels(&[("__meta_docker_container_label_logging", "off")])).is_none());
        assert!(drop.apply(labels(&[])).is_some());
    }

    #[test]
    fn labelmap_labeldrop_labelkeep_case_and_hashmod() {
        let r = relabeler(
            r#"
- action: labelmap
  regex: __meta_docker_container_label_com_example_(.+)
- action: labeldrop
  regex: 'tmp_.*'
- source_labels: [team]
  target_label: team_upper
  action: uppercase
"#,
        );
        let out =
            r.apply(labels(&[("__meta_docker_container_label_com_example_team", "core"), ("tmp_x", "1")])).unwrap();
        assert_eq!(
            sorted(out),
            sorted(labels(&[
                ("__meta_docker_container_label_com_example_team", "core"),
                ("team", "core"),
                ("team_upper", "CORE")
            ]))
        );
        let keep = relabeler("- action: labelkeep\n  regex: 'job|instance'\n");
        assert_eq!(keep.apply(labels(&[("job", "a"), ("x", "b")])).unwrap(), labels(&[("job", "a")]));
        // hashmod matches Prometheus: md5("a") = 0cc175b9c0f1b6a8... → 0x0cc175b9c0f1b6a8 % 10 = 6.
        let h = relabeler("- source_labels: [v]\n  target_label: shard\n  modulus: 10\n  action: hashmod\n");
        assert_eq!(get(&h.apply(labels(&[("v", "a")])).unwrap(), "shard"), (0x0cc1_75b9_c0f1_b6a8u64 % 10).to_string());
    }

    #[test]
    fn setting_an_empty_value_removes_the_label() {
        let r = relabeler("- source_labels: [none]\n  target_label: job\n  regex: '(.*)'\n  replacement: ''\n");
        assert!(r.apply(labels(&[("job", "x")])).unwrap().is_empty());
    }

    #[test]
    fn compile_errors_are_placed() {
        let configs: Vec<Located<RelabelConfig>> = parse_yaml_expanded(
            Path::new("r.yaml"),
            "- source_labels: [a]\n  regex: '('\n  target_label: b\n- action: keep\n",
        )
        .unwrap();
        let errors = Relabeler::compile(&configs).unwrap_err();
        assert_eq!(errors[0].0, Position { line: 2, column: 10 });
        assert!(errors[0].1.contains("invalid regex"));
        assert!(errors[1].1.contains("needs `source_labels`"), "{}", errors[1].1);
    }
}
