//! Pipeline files (`pipelines/*.yaml`): which entries a pipeline applies to, its stages, and its
//! own test cases.
//!
//! Stage names and fields follow Promtail's `pipeline_stages`, so a Promtail user's stages carry
//! over unchanged. Each stage is a one-key mapping (`- json: {...}`); values that are compiled
//! later (regexes, selectors, templates, time formats) are [`Located`] so that a compile error
//! points at its own line.

use super::Located;
use super::duration::{ByteSize, HumanDuration};
use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;

/// One pipeline file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineFile {
    /// Defaults to the file name without its extension.
    #[serde(default)]
    pub name: Option<String>,
    /// Which entries this pipeline processes; all of them when absent.
    #[serde(default, rename = "match")]
    pub selection: Selection,
    /// Required: an empty or half-written file must not load as a pipeline that does nothing.
    pub stages: Vec<Located<StageConfig>>,
    /// Test cases that `sluice test` and `sluice check` run.
    #[serde(default)]
    pub tests: Vec<Located<TestCase>>,
}

/// The entries a pipeline applies to: from these sources (all when empty) and matching this
/// LogQL stream selector (all when absent).
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Selection {
    #[serde(default)]
    pub sources: Vec<String>,
    #[serde(default)]
    pub selector: Option<Located<String>>,
}

/// A mapping or list given as null, `{}` or `[]` in YAML.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Empty;

impl<'de> Deserialize<'de> for Empty {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct NoFields {}
        Option::<NoFields>::deserialize(d).map(|_| Empty)
    }
}

/// One or several strings (`source: a` or `source: [a, b]`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct OneOrMany(pub Vec<String>);

impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            One(String),
            Many(Vec<String>),
        }
        Ok(match Raw::deserialize(d)? {
            Raw::One(s) => OneOrMany(vec![s]),
            Raw::Many(v) => OneOrMany(v),
        })
    }
}

/// A stage, written as a one-key mapping as in Promtail.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StageConfig {
    Docker(Empty),
    Cri(Option<CriStageConfig>),
    Json(JsonStageConfig),
    Logfmt(LogfmtStageConfig),
    Regex(RegexStageConfig),
    Labels(BTreeMap<String, Option<String>>),
    StaticLabels(BTreeMap<String, Option<String>>),
    Labeldrop(Vec<String>),
    Labelallow(Vec<String>),
    StructuredMetadata(BTreeMap<String, Option<String>>),
    Timestamp(TimestampStageConfig),
    Output(OutputStageConfig),
    Drop(DropStageConfig),
    Match(MatchStageConfig),
    Replace(ReplaceStageConfig),
    Limit(LimitStageConfig),
    Multiline(MultilineStageConfig),
    Template(TemplateStageConfig),
    Metrics(BTreeMap<String, Located<MetricConfig>>),
}

impl StageConfig {
    /// The stage's name as written in the file.
    pub fn name(&self) -> &'static str {
        match self {
            StageConfig::Docker(_) => "docker",
            StageConfig::Cri(_) => "cri",
            StageConfig::Json(_) => "json",
            StageConfig::Logfmt(_) => "logfmt",
            StageConfig::Regex(_) => "regex",
            StageConfig::Labels(_) => "labels",
            StageConfig::StaticLabels(_) => "static_labels",
            StageConfig::Labeldrop(_) => "labeldrop",
            StageConfig::Labelallow(_) => "labelallow",
            StageConfig::StructuredMetadata(_) => "structured_metadata",
            StageConfig::Timestamp(_) => "timestamp",
            StageConfig::Output(_) => "output",
            StageConfig::Drop(_) => "drop",
            StageConfig::Match(_) => "match",
            StageConfig::Replace(_) => "replace",
            StageConfig::Limit(_) => "limit",
            StageConfig::Multiline(_) => "multiline",
            StageConfig::Template(_) => "template",
            StageConfig::Metrics(_) => "metrics",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CriStageConfig {
    /// Partial lines joined at most (Promtail's default: 100).
    #[serde(default)]
    pub max_partial_lines: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonStageConfig {
    /// Extracted name → expression (dotted path, `[index]`, `"quoted key"`); a null expression
    /// means the name itself. Without expressions, every top-level field is extracted.
    #[serde(default)]
    pub expressions: BTreeMap<String, Option<Located<String>>>,
    #[serde(default)]
    pub source: Option<String>,
    #[serde(default)]
    pub drop_malformed: bool,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogfmtStageConfig {
    /// Extracted name → logfmt key (null: the same). Without a mapping, every key is extracted.
    #[serde(default)]
    pub mapping: BTreeMap<String, Option<String>>,
    #[serde(default)]
    pub source: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegexStageConfig {
    pub expression: Located<String>,
    #[serde(default)]
    pub source: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimestampStageConfig {
    pub source: String,
    pub format: Located<String>,
    #[serde(default)]
    pub fallback_formats: Vec<Located<String>>,
    #[serde(default)]
    pub location: Option<Located<String>>,
    #[serde(default)]
    pub action_on_failure: Option<Located<String>>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputStageConfig {
    pub source: String,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DropStageConfig {
    #[serde(default)]
    pub source: Option<OneOrMany>,
    #[serde(default)]
    pub separator: Option<String>,
    #[serde(default)]
    pub expression: Option<Located<String>>,
    #[serde(default)]
    pub value: Option<String>,
    #[serde(default)]
    pub older_than: Option<HumanDuration>,
    #[serde(default)]
    pub longer_than: Option<ByteSize>,
    #[serde(default)]
    pub drop_counter_reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchStageConfig {
    pub selector: Located<String>,
    #[serde(default)]
    pub pipeline_name: Option<String>,
    #[serde(default)]
    pub action: Option<Located<String>>,
    #[serde(default)]
    pub drop_counter_reason: Option<String>,
    #[serde(default)]
    pub stages: Vec<Located<StageConfig>>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplaceStageConfig {
    pub expression: Located<String>,
    #[serde(default)]
    pub source: Option<String>,
    #[serde(default)]
    pub replace: Located<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitStageConfig {
    /// Entries per second.
    pub rate: f64,
    pub burst: u32,
    /// Drop entries over the limit (true) or make the source wait (false, the default).
    #[serde(default)]
    pub drop: bool,
    /// Keep one bucket per value of this label.
    #[serde(default)]
    pub by_label_name: Option<String>,
    #[serde(default)]
    pub max_distinct_labels: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MultilineStageConfig {
    pub firstline: Located<String>,
    #[serde(default)]
    pub max_wait_time: Option<HumanDuration>,
    #[serde(default)]
    pub max_lines: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateStageConfig {
    pub source: String,
    pub template: Located<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricConfig {
    #[serde(rename = "type")]
    pub kind: Located<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub source: Option<String>,
    #[serde(default)]
    pub prefix: Option<String>,
    #[serde(default)]
    pub max_idle_duration: Option<HumanDuration>,
    #[serde(default)]
    pub config: MetricValueConfig,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricValueConfig {
    #[serde(default)]
    pub value: Option<String>,
    #[serde(default)]
    pub action: Option<Located<String>>,
    #[serde(default)]
    pub match_all: Option<bool>,
    #[serde(default)]
    pub count_entry_bytes: Option<bool>,
    #[serde(default)]
    pub buckets: Option<Vec<f64>>,
}

/// A test case carried by a pipeline file: one input line (with optional source labels and
/// timestamp) and what should come out.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestCase {
    #[serde(default)]
    pub name: Option<String>,
    pub input: String,
    /// Labels the source would have set.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The source's timestamp (RFC 3339); defaults to a fixed instant.
    #[serde(default)]
    pub timestamp: Option<String>,
    /// Which source the line comes from (for `match.sources`).
    #[serde(default)]
    pub source: Option<String>,
    pub expect: Expectation,
}

/// What a test case expects. Absent fields are not checked; `labels` and
/// `structured_metadata` are compared whole.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expectation {
    #[serde(default)]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub structured_metadata: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub line: Option<String>,
    #[serde(default)]
    pub timestamp: Option<String>,
    /// `false`, `true`, or the name of the stage that should drop the line.
    #[serde(default)]
    pub dropped: Option<DroppedExpectation>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum DroppedExpectation {
    No,
    Yes,
    ByStage(String),
}

impl<'de> Deserialize<'de> for DroppedExpectation {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bool(bool),
            Stage(String),
        }
        Ok(match Raw::deserialize(d)? {
            Raw::Bool(false) => DroppedExpectation::No,
            Raw::Bool(true) => DroppedExpectation::Yes,
            Raw::Stage(s) => DroppedExpectation::ByStage(s),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Position, parse_yaml_expanded};
    use std::path::Path;

    #[test]
    fn reads_promtail_style_stages() {
        let text = r#"
match:
  sources: [docker]
  selector: '{compose_service=~"gateway|router"}'
stages:
  - docker: {}
  - cri:
  - json:
      expressions:
        level:
        svc: service
        first: 'items[0]."a.b"'
  - labels:
      level:
      service: svc
  - static_labels: {env: prod}
  - labeldrop: [filename]
  - drop:
      source: [level, svc]
      value: DEBUG;x
      older_than: 24h
      longer_than: 8KiB
  - match:
      selector: '{level="ERROR"}'
      stages:
        - output: {source: message}
  - metrics:
      lines_total:
        type: Counter
        config: {match_all: true, action: inc}
tests:
  - input: '{"level":"INFO"}'
    labels: {container: x}
    expect:
      labels: {level: INFO}
      dropped: false
"#;
        let file: PipelineFile = parse_yaml_expanded(Path::new("p.yaml"), text).unwrap();
        assert_eq!(file.selection.sources, ["docker"]);
        assert_eq!(file.stages.len(), 9);
        assert_eq!(file.stages[2].position, Position { line: 8, column: 5 });
        let StageConfig::Json(json) = &file.stages[2].value else { panic!("json") };
        assert_eq!(json.expressions["level"], None);
        assert_eq!(json.expressions["first"].as_ref().unwrap().value, r#"items[0]."a.b""#);
        let StageConfig::Drop(drop) = &file.stages[6].value else { panic!("drop") };
        assert_eq!(drop.source.as_ref().unwrap().0, ["level", "svc"]);
        assert_eq!(drop.longer_than, Some(ByteSize(8192)));
        assert_eq!(file.tests[0].value.expect.dropped, Some(DroppedExpectation::No));
    }

    #[test]
    fn an_empty_file_is_not_a_pipeline() {
        assert!(parse_yaml_expanded::<PipelineFile>(Path::new("p.yaml"), "").is_err());
        for text in ["\n# only a comment\nname: x\n", "name: x\n"] {
            let err = parse_yaml_expanded::<PipelineFile>(Path::new("p.yaml"), text).unwrap_err();
            assert!(err.message.contains("stages"), "{text:?}: {}", err.message);
        }
    }

    #[test]
    fn unknown_stage_and_field_are_placed() {
        let err = parse_yaml_expanded::<PipelineFile>(Path::new("p.yaml"), "stages:\n  - jsn: {}\n").unwrap_err();
        assert_eq!(err.position, Position { line: 2, column: 5 });
        assert!(err.message.contains("unknown variant `jsn`"), "{}", err.message);
        let err =
            parse_yaml_expanded::<PipelineFile>(Path::new("p.yaml"), "stages:\n  - json:\n      expresions: {}\n")
                .unwrap_err();
        assert_eq!(err.position.line, 3);
        assert!(err.message.contains("unknown field `expresions`"), "{}", err.message);
    }
}
