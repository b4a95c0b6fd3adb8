//! Stage behaviour, case by case, with Promtail's documented examples (cases written for sluice).

use super::dry_run::DryRun;
use super::{BuildContext, LoadedPipeline, build_set};
use crate::config::parse_yaml_expanded;
use crate::event::LabelSet;
use crate::telemetry::metrics::PipelineMetrics;
use std::path::Path;

/// Builds a one-file pipeline set from YAML text.
pub(crate) fn dry_run(yaml: &str) -> DryRun {
    let file = parse_yaml_expanded(Path::new("test.yaml"), yaml).expect("pipeline parses");
    let loaded = LoadedPipeline { path: "test.yaml".into(), file };
    let metrics = PipelineMetrics::default();
    let set = build_set(&[loaded], &BuildContext { metrics: &metrics, previous: None }).expect("pipeline builds");
    DryRun::new(set)
}

#[test]
fn json_then_labels() {
    let mut dry = dry_run("stages:\n  - json:\n      expressions: {level: level}\n  - labels: {level:}\n");
    let r = dry.run_line("test", &LabelSet::from_pairs([("job", "x")]), 1, br#"{"level":"info"}"#);
    assert_eq!(r.entries[0].labels.rendered(), r#"{job="x", level="info"}"#);
}
