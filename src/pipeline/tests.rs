//! Stage behaviour, case by case, with Promtail's documented examples (cases written for sluice).
//!
//! Each test builds a one-file pipeline set from YAML (file `test.yaml`, pipeline `test`), runs
//! lines through it with a [`Runner`] as the agent does, and checks exactly what comes out: the
//! line, the labels (rendered), the structured metadata, the timestamp, which stage dropped an
//! entry and why, and the counters: `sluice_pipeline_errors_total` and
//! `sluice_pipeline_dropped_total` from the [`PipelineMetrics`] the set was built with, and the
//! metrics that `metrics` stages define.
//!
//! Where sluice deliberately differs from Promtail, the test says so in a comment that starts
//! with "Differs from Promtail".

use super::dry_run::DEFAULT_TEST_TIME;
use super::metrics_stage::{CustomMetric, CustomMetrics};
use super::{BuildContext, DropRecord, LoadedPipeline, PipelineSet, Runner, build_set};
use crate::config::{ConfigErrors, parse_yaml_expanded};
use crate::event::{AckSet, LabelCache, LabelInterner, LabelLimits, LabelSet, LogBatch, LogEntry};
use crate::formats::time::format_rfc3339_nanos;
use crate::telemetry::metrics::{LabelMetrics, PipelineMetrics, PipelineStage, PipelineStageReason};
use bytes::Bytes;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// The labels a line has unless a test gives others.
const JOB: &[(&str, &str)] = &[("job", "app")];
/// The name of the pipeline every test builds (from `test.yaml`).
const PIPELINE: &str = "test";

fn load(yaml: &str) -> LoadedPipeline {
    let file = parse_yaml_expanded(Path::new("test.yaml"), yaml).expect("pipeline parses");
    LoadedPipeline { path: "test.yaml".into(), file }
}

/// A built pipeline set, a runner for it, and the metric families it counts in.
pub(crate) struct Harness {
    set: PipelineSet,
    runner: Runner,
    metrics: PipelineMetrics,
}

/// What became of one input line.
#[derive(Debug)]
pub(crate) struct Out {
    entries: Vec<LogEntry>,
    dropped: Option<DropRecord>,
    held: bool,
    throttle: Duration,
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn metadata_of(entry: &LogEntry) -> Vec<(String, String)> {
    entry.metadata.iter().map(|(n, v)| (n.to_string(), text(v))).collect()
}

fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
    p.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect()
}

impl Out {
    /// The one entry that came out.
    fn entry(&self) -> &LogEntry {
        assert_eq!(self.entries.len(), 1, "expected one entry; dropped: {:?}, held: {}", self.dropped, self.held);
        &self.entries[0]
    }

    fn line(&self) -> String {
        text(&self.entry().line)
    }

    fn labels(&self) -> &str {
        self.entry().labels.rendered()
    }

    fn timestamp(&self) -> i64 {
        self.entry().timestamp
    }

    fn metadata(&self) -> Vec<(String, String)> {
        metadata_of(self.entry())
    }

    /// The (stage, reason) of the drop; checks that nothing came out.
    fn dropped_by(&self) -> (String, String) {
        let d = self.dropped.as_ref().unwrap_or_else(|| panic!("expected a drop, got {:?}", self.entries));
        assert!(self.entries.is_empty(), "a dropped line leaves nothing behind");
        assert_eq!(&*d.pipeline, PIPELINE);
        (d.stage.to_string(), d.reason.to_string())
    }

    /// Checks that the line was neither dropped nor held.
    fn kept(&self) -> &Self {
        assert!(self.dropped.is_none(), "unexpected drop: {:?}", self.dropped);
        assert!(!self.held, "unexpectedly held");
        self.entry();
        self
    }
}

/// Builds the set, or returns every build error.
fn try_build(yaml: &str) -> Result<Harness, ConfigErrors> {
    let metrics = PipelineMetrics::default();
    let set = build_set(&[load(yaml)], &BuildContext { metrics: &metrics, previous: None })?;
    let label_metrics = LabelMetrics::default();
    let interner = LabelInterner::new(LabelLimits::default(), &label_metrics);
    Ok(Harness { set, runner: Runner::new(LabelCache::new(interner)), metrics })
}

/// Builds a one-file pipeline set from YAML text.
pub(crate) fn dry_run(yaml: &str) -> Harness {
    try_build(yaml).unwrap_or_else(|e| panic!("pipeline builds: {e}"))
}

/// The build errors of a pipeline, each as `FILE:LINE:COL: message`.
fn build_errors(yaml: &str) -> Vec<String> {
    match try_build(yaml) {
        Ok(_) => panic!("expected build errors"),
        Err(errors) => errors.0.iter().map(ToString::to_string).collect(),
    }
}

impl Harness {
    /// Runs one line from `source` with these labels and this timestamp.
    fn run_line(&mut self, source: &str, labels: &[(&str, &str)], timestamp: i64, line: &str) -> Out {
        let entry = LogEntry::new(
            timestamp,
            Bytes::copy_from_slice(line.as_bytes()),
            LabelSet::from_pairs(labels.iter().copied()),
        );
        let mut batch = LogBatch::new(vec![entry], AckSet::new());
        let out = self.runner.run_batch(&self.set, &Arc::from(source), &mut batch, true);
        Out { entries: out.entries, dropped: out.drops.into_iter().next(), held: out.held > 0, throttle: out.throttle }
    }

    /// Runs one line with the labels {job="app"} at [`DEFAULT_TEST_TIME`].
    fn line(&mut self, line: &str) -> Out {
        self.run_line("test", JOB, DEFAULT_TEST_TIME, line)
    }

    /// Runs one line with these labels at [`DEFAULT_TEST_TIME`].
    fn labelled(&mut self, labels: &[(&str, &str)], line: &str) -> Out {
        self.run_line("test", labels, DEFAULT_TEST_TIME, line)
    }

    /// Releases everything still held, as at shutdown.
    fn finish(&mut self) -> Vec<LogEntry> {
        self.runner.flush_held(&self.set, true, None).into_iter().flat_map(|(_, out)| out.entries).collect()
    }

    /// Releases what waited longer than its stage's wait, as the topology's timer does.
    fn flush_expired(&mut self) -> Vec<LogEntry> {
        self.runner.flush_held(&self.set, false, None).into_iter().flat_map(|(_, out)| out.entries).collect()
    }

    /// `sluice_pipeline_errors_total{pipeline="test",stage}`; the stage must exist.
    fn errors(&self, stage: &str) -> u64 {
        let labels = PipelineStage { pipeline: PIPELINE.into(), stage: stage.into() };
        self.metrics.errors.get(&labels).unwrap_or_else(|| panic!("no stage `{stage}` in the pipeline")).get()
    }

    /// `sluice_pipeline_dropped_total{pipeline="test",stage,reason}`; the counter must exist.
    fn dropped(&self, stage: &str, reason: &str) -> u64 {
        let labels = PipelineStageReason { pipeline: PIPELINE.into(), stage: stage.into(), reason: reason.into() };
        self.metrics.dropped.get(&labels).unwrap_or_else(|| panic!("no drop counter {stage}/{reason}")).get()
    }

    /// A metric that a `metrics` stage defines, by its full name.
    fn metric(&self, name: &str) -> Arc<CustomMetric> {
        let all = self.set.custom_metrics();
        let names: Vec<String> = all.iter().map(|m| m.name.clone()).collect();
        all.into_iter().find(|m| m.name == name).unwrap_or_else(|| panic!("no metric `{name}` in {names:?}"))
    }

    /// The custom metrics as `/metrics` serves them.
    fn exposition(&self) -> String {
        let custom = CustomMetrics::default();
        custom.set(self.set.custom_metrics());
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(custom));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).expect("encodes");
        out
    }
}

#[test]
fn json_then_labels() {
    let mut p = dry_run("stages:\n  - json:\n      expressions: {level: level}\n  - labels: {level:}\n");
    let out = p.line(r#"{"level":"info"}"#);
    assert_eq!(out.kept().labels(), r#"{job="app", level="info"}"#);
}

// ---- docker ---------------------------------------------------------------------------------

#[test]
fn docker_unwraps_the_json_file_envelope() {
    let mut p = dry_run("stages:\n  - docker: {}\n");
    let out = p.line(r#"{"log":"log message\n","stream":"stderr","time":"2019-04-30T02:12:41.8443515Z"}"#);
    // Differs from Promtail: Promtail keeps the trailing newline of `log`; sluice removes it.
    assert_eq!(out.kept().line(), "log message");
    assert_eq!(out.labels(), r#"{job="app", stream="stderr"}"#);
    assert_eq!(out.timestamp(), 1_556_590_361_844_351_500);
    assert!(out.metadata().is_empty());
    assert_eq!(p.errors("docker"), 0);
}

#[test]
fn docker_unescapes_the_log_field() {
    let mut p = dry_run("stages:\n  - docker: {}\n");
    let out = p.line(r#"{"log":"say \"hi\"\tto caf\u00e9 \\o/\n","stream":"stdout","time":"2024-05-06T07:08:09Z"}"#);
    assert_eq!(out.kept().line(), "say \"hi\"\tto café \\o/");
    assert_eq!(out.labels(), r#"{job="app", stream="stdout"}"#);
    assert_eq!(out.timestamp(), 1_714_979_289_000_000_000);
}

#[test]
fn docker_counts_lines_that_are_not_envelopes_and_lets_them_through() {
    let mut p = dry_run("stages:\n  - docker: {}\n");
    for line in ["plain text", r#"{"log":"no stream or time\n"}"#, r#"{"log":"x","stream":"stdin","time":"2024"}"#] {
        let out = p.line(line);
        assert_eq!(out.kept().line(), line);
        assert_eq!(out.labels(), r#"{job="app"}"#);
        assert_eq!(out.timestamp(), DEFAULT_TEST_TIME);
    }
    assert_eq!(p.errors("docker"), 3);
}

#[test]
fn docker_then_json_on_the_payload() {
    let mut p = dry_run(
        r#"
stages:
  - docker: {}
  - json:
      expressions: {level:, msg:}
  - labels: {level:}
  - output: {source: msg}
"#,
    );
    let out = p.line(
        r#"{"log":"{\"level\":\"warn\",\"msg\":\"disk 91% full\"}\n","stream":"stdout","time":"2024-05-06T07:08:09.5Z"}"#,
    );
    assert_eq!(out.kept().line(), "disk 91% full");
    assert_eq!(out.labels(), r#"{job="app", level="warn", stream="stdout"}"#);
    assert_eq!(out.timestamp(), 1_714_979_289_500_000_000);
    assert_eq!((p.errors("docker"), p.errors("json")), (0, 0));
}

#[test]
fn docker_stream_reads_as_an_extracted_value() {
    // As in Promtail, `stream` can be read by later stages (here through the `stream` label,
    // which the extracted map includes). Differs from Promtail: `output` and `timestamp` are not
    // extracted; the line and the time are set directly.
    let mut p = dry_run("stages:\n  - docker: {}\n  - labels: {copy: stream}\n");
    let out = p.line(r#"{"log":"x\n","stream":"stderr","time":"2019-04-30T02:12:41Z"}"#);
    assert_eq!(out.kept().labels(), r#"{copy="stderr", job="app", stream="stderr"}"#);
}

// ---- cri ------------------------------------------------------------------------------------

#[test]
fn cri_parses_a_full_line() {
    let mut p = dry_run("stages:\n  - cri: {}\n");
    let out = p.line("2019-04-30T02:12:41.8443515Z stdout F message");
    assert_eq!(out.kept().line(), "message");
    assert_eq!(out.labels(), r#"{job="app", stream="stdout"}"#);
    assert_eq!(out.timestamp(), 1_556_590_361_844_351_500);
    let out = p.line("2019-04-30T02:12:41Z stderr F with  two  spaces ");
    assert_eq!(out.kept().line(), "with  two  spaces ");
    assert_eq!(out.labels(), r#"{job="app", stream="stderr"}"#);
    assert_eq!(p.errors("cri"), 0);
}

#[test]
fn cri_joins_partial_lines_until_the_full_one() {
    let mut p = dry_run("stages:\n  - cri:\n  - labels: {}\n");
    let first = p.line("2024-05-06T07:08:09.000000001Z stdout P hello ");
    assert!(first.held && first.entries.is_empty() && first.dropped.is_none());
    let second = p.line("2024-05-06T07:08:09.000000002Z stdout P big ");
    assert!(second.held && second.entries.is_empty());
    let out = p.line("2024-05-06T07:08:09.000000003Z stdout F world");
    assert_eq!(out.kept().line(), "hello big world");
    assert_eq!(out.labels(), r#"{job="app", stream="stdout"}"#);
    // Differs from Promtail: the joined line keeps the first part's time (Promtail's has the full
    // line's time).
    assert_eq!(out.timestamp(), 1_714_979_289_000_000_001);
    assert!(p.finish().is_empty(), "nothing left behind");
}

#[test]
fn cri_joins_each_stream_on_its_own() {
    let mut p = dry_run("stages:\n  - cri: {}\n");
    assert!(p.line("2024-05-06T07:08:09Z stdout P out-1 ").held);
    assert!(p.line("2024-05-06T07:08:09Z stderr P err-1 ").held);
    assert!(p.labelled(&[("job", "other")], "2024-05-06T07:08:09Z stdout P other-1 ").held);
    let out = p.line("2024-05-06T07:08:10Z stdout F out-2");
    assert_eq!((out.kept().line().as_str(), out.labels()), ("out-1 out-2", r#"{job="app", stream="stdout"}"#));
    let out = p.line("2024-05-06T07:08:10Z stderr F err-2");
    assert_eq!((out.kept().line().as_str(), out.labels()), ("err-1 err-2", r#"{job="app", stream="stderr"}"#));
    let out = p.labelled(&[("job", "other")], "2024-05-06T07:08:10Z stdout F other-2");
    assert_eq!((out.kept().line().as_str(), out.labels()), ("other-1 other-2", r#"{job="other", stream="stdout"}"#));
}

#[test]
fn cri_max_partial_lines_releases_a_long_run() {
    let mut p = dry_run("stages:\n  - cri:\n      max_partial_lines: 2\n");
    assert!(p.line("2024-05-06T07:08:09Z stdout P a").held);
    let out = p.line("2024-05-06T07:08:09Z stdout P b");
    assert_eq!(out.kept().line(), "ab", "two partial lines reach the limit");
    let out = p.line("2024-05-06T07:08:09Z stdout F c");
    assert_eq!(out.kept().line(), "c");
}

#[test]
fn cri_releases_dangling_partial_lines_at_the_end() {
    let mut p = dry_run("stages:\n  - cri: {}\n  - static_labels: {after: cri}\n");
    assert!(p.line("2024-05-06T07:08:09Z stderr P dangling").held);
    let released = p.finish();
    assert_eq!(released.len(), 1);
    assert_eq!(text(&released[0].line), "dangling");
    assert_eq!(released[0].labels.rendered(), r#"{after="cri", job="app", stream="stderr"}"#, "later stages ran");
    assert_eq!(released[0].timestamp, 1_714_979_289_000_000_000);
}

#[test]
fn cri_counts_lines_it_cannot_read() {
    let mut p = dry_run("stages:\n  - cri: {}\n");
    for line in ["hello", "2019-01-01 T01:00:00.000000001Z stderr testgood", "2019-01-01T01:00:00Z testgood"] {
        let out = p.line(line);
        assert_eq!(out.kept().line(), line);
        assert_eq!(out.labels(), r#"{job="app"}"#);
        assert_eq!(out.timestamp(), DEFAULT_TEST_TIME);
    }
    assert_eq!(p.errors("cri"), 3);
}

// ---- json -----------------------------------------------------------------------------------

#[test]
fn json_extracts_expressions_from_the_line() {
    let mut p = dry_run(
        r#"
stages:
  - json:
      expressions:
        output: log
        stream: stream
        timestamp: time
  - labels: {stream:}
  - output: {source: output}
"#,
    );
    let out = p.line(r#"{"log":"log message\n","stream":"stderr","time":"2019-04-30T02:12:41.8443515Z"}"#);
    assert_eq!(out.kept().line(), "log message\n", "string values are unescaped");
    assert_eq!(out.labels(), r#"{job="app", stream="stderr"}"#);
    assert_eq!(out.timestamp(), DEFAULT_TEST_TIME, "extracting a time does not set it");
    assert_eq!(p.errors("json"), 0);
}

#[test]
fn json_parses_an_extracted_value_with_source() {
    let mut p = dry_run(
        r#"
stages:
  - json:
      expressions: {output: log, extra:}
  - json:
      expressions: {user:}
      source: extra
  - labels: {user:}
"#,
    );
    let out = p.line(r#"{"log":"log message\n","stream":"stderr","extra":"{\"user\":\"marco\"}"}"#);
    assert_eq!(out.kept().labels(), r#"{job="app", user="marco"}"#);
    assert_eq!(out.line(), r#"{"log":"log message\n","stream":"stderr","extra":"{\"user\":\"marco\"}"}"#);
    // A source that was never extracted: nothing happens and nothing is counted.
    let out = p.line(r#"{"log":"no extra"}"#);
    assert_eq!(out.kept().labels(), r#"{job="app"}"#);
    assert_eq!(p.errors("json"), 0);
}

#[test]
fn json_quoted_keys_nested_paths_and_array_indexes() {
    let mut p = dry_run(
        r#"
stages:
  - json:
      expressions:
        stream: '"grpc.stream"'
        method: http.request.method
        first_id: items[0].id
        last_tag: tags[-1]
        odd: '"a-b"."c.d"[1]'
        request: http.request
        missing: http.response.status
        out_of_range: tags[7]
  - labels: {stream:, method:, first_id:, last_tag:, odd:, missing:, out_of_range:}
  - output: {source: request}
"#,
    );
    let out = p.line(
        r#"{"grpc.stream":"stderr","http":{"request":{"method":"GET","path":"/x"}},"items":[{"id":1},{"id":2}],"tags":["a","b","c"],"a-b":{"c.d":[0,"second"]}}"#,
    );
    assert_eq!(
        out.kept().labels(),
        r#"{first_id="1", job="app", last_tag="c", method="GET", odd="second", stream="stderr"}"#
    );
    assert_eq!(out.line(), r#"{"method":"GET","path":"/x"}"#, "objects are extracted as compact JSON");
    assert_eq!(p.errors("json"), 0);
}

#[test]
fn json_values_that_are_not_strings() {
    let mut p = dry_run(
        r#"
stages:
  - json:
      expressions: {status:, ok:, ratio:, nothing:, list:, negative:}
  - labels: {status:, ok:, ratio:, nothing:, negative:}
  - output: {source: list}
"#,
    );
    let out =
        p.line(r#"{"status":200,"ok":true,"ratio":0.25,"nothing":null,"list":[1,"two",null,false],"negative":-3}"#);
    assert_eq!(out.kept().labels(), r#"{job="app", negative="-3", ok="true", ratio="0.25", status="200"}"#);
    assert_eq!(out.line(), r#"[1,"two",null,false]"#);
}

#[test]
fn json_without_expressions_extracts_every_top_level_field() {
    // A sluice extension: Promtail requires `expressions`.
    let mut p = dry_run("stages:\n  - json: {}\n  - labels: {a:, b:, c:}\n");
    let out = p.line(r#"{"a":"x","b":{"c":"nested"},"c":3}"#);
    assert_eq!(out.kept().labels(), r#"{a="x", b="{\"c\":\"nested\"}", c="3", job="app"}"#);
}

#[test]
fn json_counts_malformed_lines_and_lets_them_through() {
    let mut p = dry_run("stages:\n  - json:\n      expressions: {level:}\n  - labels: {level:}\n");
    for line in ["not json", r#"{"level":"info""#, r#"["level","info"]"#, r#""level""#, ""] {
        let out = p.line(line);
        assert_eq!(out.kept().line(), line);
        assert_eq!(out.labels(), r#"{job="app"}"#);
    }
    assert_eq!(p.errors("json"), 5);
    let out = p.line(r#"{"level":"info"}"#);
    assert_eq!(out.kept().labels(), r#"{job="app", level="info"}"#);
    assert_eq!(p.errors("json"), 5);
}

#[test]
fn json_drop_malformed_drops_and_counts() {
    let mut p = dry_run("stages:\n  - json:\n      expressions: {level:}\n      drop_malformed: true\n");
    let out = p.line("{not json");
    assert_eq!(out.dropped_by(), ("json".into(), "malformed_json".into()));
    let out = p.line(r#"[1, 2]"#);
    assert_eq!(out.dropped_by(), ("json".into(), "malformed_json".into()));
    assert_eq!(p.line(r#"{"level":"info"}"#).kept().line(), r#"{"level":"info"}"#);
    assert_eq!(p.dropped("json", "malformed_json"), 2);
    assert_eq!(p.errors("json"), 0, "a drop is not an error");
}

// ---- logfmt ---------------------------------------------------------------------------------

#[test]
fn logfmt_mapping_from_the_line() {
    let mut p = dry_run(
        r#"
stages:
  - logfmt:
      mapping:
        timestamp: time
        app:
        duration:
        unknown:
  - labels: {app:, duration:, level:, unknown:}
  - timestamp: {source: timestamp, format: RFC3339}
"#,
    );
    let out = p.line(r#"time=2012-11-01T22:08:41+00:00 app=loki level=WARN duration=125 message="this is a log line""#);
    assert_eq!(out.kept().labels(), r#"{app="loki", duration="125", job="app"}"#, "level is not mapped");
    assert_eq!(out.timestamp(), 1_351_807_721_000_000_000);
    assert_eq!(p.errors("logfmt"), 0);
}

#[test]
fn logfmt_parses_an_extracted_value_with_source() {
    let mut p = dry_run(
        r#"
stages:
  - logfmt:
      mapping: {extra:}
  - logfmt:
      mapping: {user:}
      source: extra
  - labels: {user:}
  - output: {source: extra}
"#,
    );
    let out = p.line(r#"time=2012-11-01T22:08:41+00:00 app=loki message="this is a log line" extra="user=foo""#);
    assert_eq!(out.kept().labels(), r#"{job="app", user="foo"}"#);
    assert_eq!(out.line(), "user=foo");
}

#[test]
fn logfmt_without_mapping_extracts_every_key() {
    let mut p = dry_run("stages:\n  - logfmt: {}\n  - labels: {level:, flag:}\n  - output: {source: msg}\n");
    let out = p.line(r#"level=info msg="hello \"world\"" flag dur=1.5s"#);
    assert_eq!(out.kept().line(), r#"hello "world""#);
    assert_eq!(out.labels(), r#"{job="app", level="info"}"#, "a bare key has an empty value: no label");
}

#[test]
fn logfmt_counts_text_it_cannot_read() {
    let mut p = dry_run("stages:\n  - logfmt: {}\n");
    for line in ["=oops", r#"msg="unterminated"#] {
        assert_eq!(p.line(line).kept().line(), line);
    }
    assert_eq!(p.errors("logfmt"), 2);
}

// ---- regex ----------------------------------------------------------------------------------

#[test]
fn regex_named_groups_from_the_line() {
    let mut p = dry_run(
        r#"
stages:
  - regex:
      expression: "^(?s)(?P<time>\\S+?) (?P<stream>stdout|stderr) (?P<flags>\\S+?) (?P<content>.*)$"
  - labels: {stream:, flags:}
  - timestamp: {source: time, format: RFC3339Nano}
  - output: {source: content}
"#,
    );
    let out = p.line("2019-01-01T01:00:00.000000001Z stderr P i'm a log message!\nsecond line");
    assert_eq!(out.kept().line(), "i'm a log message!\nsecond line");
    assert_eq!(out.labels(), r#"{flags="P", job="app", stream="stderr"}"#);
    assert_eq!(out.timestamp(), 1_546_304_400_000_000_001);
    assert_eq!(p.errors("regex"), 0);
}

#[test]
fn regex_on_an_extracted_value_with_source() {
    let mut p = dry_run(
        r#"
stages:
  - json:
      expressions: {time:}
  - regex:
      expression: '^(?P<year>\d+)'
      source: time
  - labels: {year:}
"#,
    );
    let out = p.line(r#"{"time":"2019-01-01T01:00:00.000000001Z"}"#);
    assert_eq!(out.kept().labels(), r#"{job="app", year="2019"}"#);
    let out = p.line(r#"{"msg":"no time"}"#);
    assert_eq!(out.kept().labels(), r#"{job="app"}"#);
    assert_eq!(p.errors("regex"), 0, "a missing source is not an error");
}

#[test]
fn regex_that_does_not_match_is_counted() {
    let mut p = dry_run("stages:\n  - regex:\n      expression: '^(?P<a>x)?(?P<b>y)$'\n  - labels: {a:, b:}\n");
    let out = p.line("y");
    assert_eq!(out.kept().labels(), r#"{b="y", job="app"}"#, "a group that did not take part extracts nothing");
    let out = p.line("z");
    assert_eq!(out.kept().line(), "z");
    assert_eq!(out.labels(), r#"{job="app"}"#);
    assert_eq!(p.errors("regex"), 1);
}

// ---- labels, static_labels, labeldrop, labelallow -------------------------------------------

#[test]
fn labels_from_extracted_values() {
    let mut p = dry_run(
        r#"
stages:
  - json:
      expressions: {stream:, svc: service, job:, empty:}
  - labels:
      stream:
      service: svc
      job:
      absent:
      empty:
"#,
    );
    let out = p.line(r#"{"log":"log message\n","stream":"stderr","service":"gateway","job":"override","empty":""}"#);
    assert_eq!(out.kept().labels(), r#"{job="override", service="gateway", stream="stderr"}"#);
    assert_eq!(
        out.line(),
        r#"{"log":"log message\n","stream":"stderr","service":"gateway","job":"override","empty":""}"#
    );
}

#[test]
fn labels_with_an_empty_value_remove_the_label() {
    let mut p = dry_run("stages:\n  - json:\n      expressions: {job:}\n  - labels: {job:}\n");
    let out = p.line(r#"{"job":""}"#);
    assert_eq!(out.kept().labels(), "{}", "an empty value removes the label, as in Loki");
}

#[test]
fn static_labels_add_and_override() {
    let mut p =
        dry_run("stages:\n  - static_labels:\n      custom_key: custom_value\n      job: fixed\n      nothing:\n");
    let out = p.labelled(&[("job", "app"), ("host", "h1")], "x");
    assert_eq!(out.kept().labels(), r#"{custom_key="custom_value", host="h1", job="fixed"}"#);
    assert_eq!(out.line(), "x");
}

#[test]
fn labeldrop_removes_labels() {
    let mut p = dry_run("stages:\n  - labeldrop:\n      - kubernetes_pod_name\n      - filename\n      - not_there\n");
    let out = p.labelled(&[("job", "app"), ("kubernetes_pod_name", "loki-0"), ("filename", "/var/log/x.log")], "x");
    assert_eq!(out.kept().labels(), r#"{job="app"}"#);
}

#[test]
fn labels_are_part_of_the_extracted_map() {
    // As in Promtail: the entry's labels read as extracted values, so its labeldrop example moves
    // the pod name into the line before dropping the label.
    let mut p = dry_run(
        r#"
stages:
  - replace:
      expression: "(.*)"
      replace: "pod_name:{{ .kubernetes_pod_name }} {{ .Value }}"
  - labeldrop: [kubernetes_pod_name]
"#,
    );
    let out = p.labelled(&[("job", "app"), ("kubernetes_pod_name", "loki-0")], "log message");
    assert_eq!(out.kept().line(), "pod_name:loki-0 log message");
    assert_eq!(out.labels(), r#"{job="app"}"#);
}

#[test]
fn labelallow_keeps_only_the_listed_labels() {
    let mut p = dry_run(
        r#"
stages:
  - docker: {}
  - labelallow:
      - kubernetes_pod_name
      - kubernetes_container_name
"#,
    );
    let labels = [
        ("kubernetes_pod_name", "loki-pqrs"),
        ("kubernetes_container_name", "loki"),
        ("kubernetes_pod_template_hash", "79f5db67b"),
        ("kubernetes_controller_revision_hash", "774858987d"),
    ];
    let out = p.labelled(&labels, r#"{"log":"log message\n","stream":"stderr","time":"2019-04-30T02:12:41Z"}"#);
    assert_eq!(out.kept().labels(), r#"{kubernetes_container_name="loki", kubernetes_pod_name="loki-pqrs"}"#);
    assert_eq!(out.line(), "log message");
}

#[test]
fn labelallow_applies_in_stage_order() {
    let mut p = dry_run("stages:\n  - labelallow: [job]\n  - static_labels: {added: after}\n");
    let out = p.labelled(&[("job", "app"), ("host", "h1")], "x");
    assert_eq!(out.kept().labels(), r#"{added="after", job="app"}"#);
}

// ---- structured_metadata --------------------------------------------------------------------

#[test]
fn structured_metadata_from_extracted_values() {
    let mut p = dry_run(
        r#"
stages:
  - json:
      expressions: {stream: stream, traceID: traceID, status:, empty:}
  - labels: {stream:}
  - structured_metadata:
      traceID:
      http_status: status
      empty:
      absent:
"#,
    );
    let line = r#"{"log":"log message\n","stream":"stderr","traceID":"0242ac120002","status":200,"empty":""}"#;
    let out = p.line(line);
    assert_eq!(out.kept().labels(), r#"{job="app", stream="stderr"}"#);
    // Set in name order (the stage is a map).
    assert_eq!(out.metadata(), pairs(&[("http_status", "200"), ("traceID", "0242ac120002")]));
    assert_eq!(out.line(), line);
    // A value taken verbatim from the line shares its buffer.
    let entry = out.entry();
    let value = entry.metadata.get("traceID").unwrap();
    assert!(entry.line.as_ptr_range().contains(&value.as_ptr()), "no copy of the trace id");
}

// ---- timestamp ------------------------------------------------------------------------------

/// The time a `timestamp` stage with `format` (and `extra` config lines) reads from `value`, or
/// `None` when it counted a failure (the entry then keeps its time).
fn time_of(format: &str, extra: &str, value: &str) -> Option<i64> {
    let yaml = format!(
        "stages:\n  - regex:\n      expression: '^(?P<t>.*)$'\n  - timestamp:\n      source: t\n      format: '{format}'\n      action_on_failure: skip\n{extra}"
    );
    let mut p = dry_run(&yaml);
    let out = p.line(value);
    match p.errors("timestamp") {
        0 => Some(out.timestamp()),
        _ => {
            assert_eq!(out.timestamp(), DEFAULT_TEST_TIME, "skip keeps the entry's time");
            None
        }
    }
}

#[test]
fn timestamp_rfc3339() {
    assert_eq!(time_of("RFC3339", "", "2019-04-30T02:12:41Z"), Some(1_556_590_361_000_000_000));
    assert_eq!(time_of("RFC3339", "", "2019-04-30T04:12:41+02:00"), Some(1_556_590_361_000_000_000));
    assert_eq!(time_of("RFC3339", "", "2019-04-30T02:12:41.8443515Z"), Some(1_556_590_361_844_351_500));
    assert_eq!(time_of("RFC3339Nano", "", "2019-01-01T01:00:00.000000001Z"), Some(1_546_304_400_000_000_001));
    assert_eq!(time_of("RFC3339Nano", "", "2018-12-31T20:00:00.000000001-05:00"), Some(1_546_304_400_000_000_001));
    assert_eq!(time_of("RFC3339", "", "2019-04-30 02:12:41"), None);
    assert_eq!(time_of("RFC3339Nano", "", "1556590361"), None);
}

#[test]
fn timestamp_unix_formats() {
    assert_eq!(time_of("Unix", "", "1562708916"), Some(1_562_708_916_000_000_000));
    assert_eq!(time_of("Unix", "", "1562708916.000000123"), Some(1_562_708_916_000_000_123));
    assert_eq!(time_of("Unix", "", "1562708916.5"), Some(1_562_708_916_500_000_000));
    assert_eq!(time_of("UnixMs", "", "1562708916414"), Some(1_562_708_916_414_000_000));
    assert_eq!(time_of("UnixUs", "", "1562708916414123"), Some(1_562_708_916_414_123_000));
    assert_eq!(time_of("UnixNs", "", "1562708916000000123"), Some(1_562_708_916_000_000_123));
    assert_eq!(time_of("Unix", "", "soon"), None);
    assert_eq!(time_of("UnixMs", "", "1562708916.414"), None);
    assert_eq!(time_of("UnixNs", "", "2019-04-30T02:12:41Z"), None);
}

#[test]
fn timestamp_go_layouts() {
    let t = 1_714_979_289_000_000_000; // 2024-05-06T07:08:09Z
    assert_eq!(time_of("2006-01-02 15:04:05.000", "", "2024-05-06 07:08:09.123"), Some(t + 123_000_000));
    assert_eq!(time_of("2006-01-02 15:04:05.000", "", "2024-05-06 07:08:09.12"), None, "three digits needed");
    assert_eq!(time_of("2006-01-02 15:04:05", "", "2024-05-06 07:08:09.5"), Some(t + 500_000_000));
    assert_eq!(time_of("02/Jan/2006:15:04:05 -0700", "", "25/Jan/2000:14:00:01 -0500"), Some(948_826_801_000_000_000));
    assert_eq!(time_of("2006-01-02T15:04:05Z07:00", "", "2024-05-06T07:08:09Z"), Some(t));
    assert_eq!(time_of("Jan 2, 2006 at 3:04pm (MST)", "", "May 6, 2024 at 7:08am (UTC)"), Some(t - 9_000_000_000));
    assert_eq!(time_of("2006-01-02", "", "2024-05-06"), Some(1_714_953_600_000_000_000));
    assert_eq!(time_of("2006-01-02", "", "06/05/2024"), None);
}

#[test]
fn timestamp_named_layouts() {
    let t = 1_714_979_289_000_000_000; // 2024-05-06T07:08:09Z
    assert_eq!(time_of("ANSIC", "", "Mon May  6 07:08:09 2024"), Some(t));
    assert_eq!(time_of("UnixDate", "", "Mon May  6 07:08:09 UTC 2024"), Some(t));
    assert_eq!(time_of("RubyDate", "", "Mon May 06 09:08:09 +0200 2024"), Some(t));
    assert_eq!(time_of("RFC822", "", "06 May 24 07:08 UTC"), Some(t - 9_000_000_000));
    assert_eq!(time_of("RFC822Z", "", "06 May 24 09:08 +0200"), Some(t - 9_000_000_000));
    assert_eq!(time_of("RFC850", "", "Monday, 06-May-24 07:08:09 UTC"), Some(t));
    assert_eq!(time_of("RFC1123", "", "Mon, 06 May 2024 07:08:09 GMT"), Some(t));
    assert_eq!(time_of("RFC1123Z", "", "Mon, 06 May 2024 09:08:09 +0200"), Some(t));
    assert_eq!(time_of("RFC1123", "", "2024-05-06T07:08:09Z"), None);
}

#[test]
fn timestamp_layout_without_year_takes_the_current_year() {
    let year = jiff::Zoned::now().year();
    let expected = |month, day, h, m, s| {
        let dt = jiff::civil::date(year, month, day).at(h, m, s, 0);
        i64::try_from(dt.to_zoned(jiff::tz::TimeZone::UTC).unwrap().timestamp().as_nanosecond()).unwrap()
    };
    assert_eq!(time_of("Stamp", "", "May  6 07:08:09"), Some(expected(5, 6, 7, 8, 9)));
    assert_eq!(time_of("StampMilli", "", "Jun 16 07:08:09.250"), Some(expected(6, 16, 7, 8, 9) + 250_000_000));
}

#[test]
fn timestamp_location_applies_to_values_without_offset() {
    let paris = "      location: Europe/Paris\n";
    // Summer (CEST, UTC+2) and winter (CET, UTC+1).
    assert_eq!(time_of("2006-01-02 15:04:05", paris, "2024-07-01 12:00:00"), Some(1_719_828_000_000_000_000));
    assert_eq!(time_of("2006-01-02 15:04:05", paris, "2024-01-15 12:00:00"), Some(1_705_316_400_000_000_000));
    // An offset in the value wins over the location.
    assert_eq!(
        time_of("2006-01-02 15:04:05 -0700", paris, "2024-07-01 12:00:00 +0000"),
        Some(1_719_835_200_000_000_000)
    );
    let new_york = "      location: America/New_York\n";
    assert_eq!(time_of("2006-01-02 15:04:05", new_york, "2024-03-10 01:30:00"), Some(1_710_052_200_000_000_000));
}

#[test]
fn timestamp_fallback_formats_are_tried_in_order() {
    let fallbacks = "      fallback_formats: [UnixMs, '2006-01-02', RFC1123]\n";
    assert_eq!(time_of("RFC3339", fallbacks, "2019-04-30T02:12:41Z"), Some(1_556_590_361_000_000_000));
    assert_eq!(time_of("RFC3339", fallbacks, "1562708916414"), Some(1_562_708_916_414_000_000));
    assert_eq!(time_of("RFC3339", fallbacks, "2024-05-06"), Some(1_714_953_600_000_000_000));
    assert_eq!(time_of("RFC3339", fallbacks, "Mon, 06 May 2024 07:08:09 GMT"), Some(1_714_979_289_000_000_000));
    assert_eq!(time_of("RFC3339", fallbacks, "yesterday"), None);
}

#[test]
fn timestamp_fudge_uses_the_last_good_time_of_the_stream() {
    let mut p = dry_run(
        r#"
stages:
  - json:
      expressions: {time:}
  - timestamp:
      source: time
      format: RFC3339Nano
"#,
    );
    let t = 1_714_979_289_500_000_000;
    assert_eq!(p.line(r#"{"time":"2024-05-06T07:08:09.5Z"}"#).timestamp(), t);
    assert_eq!(p.line(r#"{"time":"not a time"}"#).timestamp(), t + 1);
    assert_eq!(p.line(r#"{"time":"still not"}"#).timestamp(), t + 2);
    assert_eq!(p.errors("timestamp"), 2);
    // As in Promtail, a line without the source is fudged too (it has nothing to parse: no error).
    assert_eq!(p.line(r#"{"msg":"a continuation without time"}"#).timestamp(), t + 3);
    assert_eq!(p.errors("timestamp"), 2);
    // Another stream has no good time yet: its entry keeps its own.
    assert_eq!(p.labelled(&[("job", "other")], r#"{"time":"bad"}"#).timestamp(), DEFAULT_TEST_TIME);
    assert_eq!(p.errors("timestamp"), 3);
    // A good time resets the stream's base.
    assert_eq!(p.line(r#"{"time":"2024-05-06T07:08:10Z"}"#).timestamp(), t + 500_000_000);
    assert_eq!(p.line(r#"{"time":""}"#).timestamp(), t + 500_000_001);
}

#[test]
fn timestamp_skip_keeps_the_entry_time() {
    let mut p = dry_run(
        r#"
stages:
  - json:
      expressions: {time:}
  - timestamp:
      source: time
      format: RFC3339Nano
      action_on_failure: skip
"#,
    );
    assert_eq!(p.line(r#"{"time":"2024-05-06T07:08:09.5Z"}"#).timestamp(), 1_714_979_289_500_000_000);
    assert_eq!(p.line(r#"{"time":"not a time"}"#).timestamp(), DEFAULT_TEST_TIME);
    assert_eq!(p.line(r#"{"msg":"no time"}"#).timestamp(), DEFAULT_TEST_TIME);
    assert_eq!(p.errors("timestamp"), 1);
}

// ---- output ---------------------------------------------------------------------------------

#[test]
fn output_replaces_the_line_with_an_extracted_value() {
    let mut p = dry_run(
        r#"
stages:
  - json:
      expressions: {user: user, message: message}
  - labels: {user:}
  - output: {source: message}
"#,
    );
    let out = p.line(r#"{"user": "alexis", "message": "hello, world!"}"#);
    assert_eq!(out.kept().line(), "hello, world!");
    assert_eq!(out.labels(), r#"{job="app", user="alexis"}"#);
    // Without the value, the line stays as it is.
    let out = p.line(r#"{"user": "alexis"}"#);
    assert_eq!(out.kept().line(), r#"{"user": "alexis"}"#);
}

// ---- drop -----------------------------------------------------------------------------------

const LOKI_PUSH: &str = r#"11.11.11.11 - \"POST /loki/api/push/ HTTP/1.1\" 200 932 \"-\" \"Mozilla/5.0\""#;

#[test]
fn drop_by_source_value() {
    let mut p = dry_run(
        r#"
stages:
  - json:
      expressions: {level:, msg:}
  - drop:
      source: level
      value: error
"#,
    );
    let line = format!(r#"{{"time":"2019-01-01T01:00:00.000000001Z", "level": "error", "msg":"{LOKI_PUSH}"}}"#);
    assert_eq!(p.line(&line).dropped_by(), ("drop".into(), "drop_stage".into()));
    assert_eq!(p.line(r#"{"level":"ERROR"}"#).kept().line(), r#"{"level":"ERROR"}"#, "the value matches exactly");
    assert_eq!(p.line(r#"{"msg":"no level"}"#).kept().line(), r#"{"msg":"no level"}"#);
    assert_eq!(p.dropped("drop", "drop_stage"), 1);
}

#[test]
fn drop_by_expression_on_the_line() {
    let mut p = dry_run("stages:\n  - drop:\n      expression: \".*debug.*\"\n");
    assert_eq!(p.line("level=debug msg=x").dropped_by(), ("drop".into(), "drop_stage".into()));
    assert_eq!(p.line("level=info msg=x").kept().line(), "level=info msg=x");
    assert_eq!(p.dropped("drop", "drop_stage"), 1);
}

#[test]
fn drop_by_sources_present() {
    // Every source must have been extracted for the line to be dropped.
    let mut p =
        dry_run("stages:\n  - json:\n      expressions: {level:, msg:}\n  - drop:\n      source: [level, msg]\n");
    assert_eq!(p.line(r#"{"level":"info","msg":"x"}"#).dropped_by(), ("drop".into(), "drop_stage".into()));
    assert_eq!(p.line(r#"{"level":"info"}"#).kept().line(), r#"{"level":"info"}"#);
    assert_eq!(p.line(r#"{"msg":"x"}"#).kept().line(), r#"{"msg":"x"}"#);
}

#[test]
fn drop_by_expression_on_joined_sources() {
    let mut p = dry_run(
        r##"
stages:
  - json:
      expressions: {level:, msg:}
  - drop:
      source: ["level","msg"]
      separator: "#"
      expression: "(error|ERROR)#.*\/loki\/api\/push.*"
"##,
    );
    for level in ["error", "ERROR"] {
        let line = format!(r#"{{"time":"2019-01-01T01:00:00.000000001Z", "level": "{level}", "msg":"{LOKI_PUSH}"}}"#);
        assert_eq!(p.line(&line).dropped_by(), ("drop".into(), "drop_stage".into()), "{line}");
    }
    let line = format!(r#"{{"level": "info", "msg":"{LOKI_PUSH}"}}"#);
    p.line(&line).kept();
    p.line(r#"{"level": "error", "msg":"GET /ready"}"#).kept();
    assert_eq!(p.dropped("drop", "drop_stage"), 2);
}

#[test]
fn drop_by_value_of_joined_sources() {
    let mut p = dry_run(
        "stages:\n  - json:\n      expressions: {level:, code:}\n  - drop:\n      source: [level, code]\n      value: 'error;500'\n",
    );
    assert_eq!(p.line(r#"{"level":"error","code":500}"#).dropped_by(), ("drop".into(), "drop_stage".into()));
    p.line(r#"{"level":"error","code":404}"#).kept();
}

#[test]
fn drop_older_than() {
    let mut p = dry_run(
        r#"
stages:
  - json:
      expressions: {time:, msg:}
  - timestamp:
      source: time
      format: RFC3339
  - drop:
      older_than: 24h
      drop_counter_reason: line_too_old
"#,
    );
    let now = crate::event::now_nanos();
    let hour = 3_600_000_000_000i64;
    let old = format!(r#"{{"time":"{}", "level": "error", "msg":"old"}}"#, format_rfc3339_nanos(now - 25 * hour));
    assert_eq!(p.line(&old).dropped_by(), ("drop".into(), "line_too_old".into()));
    let recent = format!(r#"{{"time":"{}", "level": "error", "msg":"recent"}}"#, format_rfc3339_nanos(now - 23 * hour));
    assert_eq!(p.line(&recent).kept().timestamp(), now - 23 * hour);
    assert_eq!(p.dropped("drop", "line_too_old"), 1);
}

#[test]
fn drop_longer_than() {
    let mut p = dry_run("stages:\n  - drop:\n      longer_than: 16\n      drop_counter_reason: line_too_long\n");
    assert_eq!(p.line("seventeen bytes!!").dropped_by(), ("drop".into(), "line_too_long".into()));
    assert_eq!(p.line("sixteen bytes!!!").kept().line(), "sixteen bytes!!!");
    assert_eq!(p.dropped("drop", "line_too_long"), 1);
    let mut p = dry_run("stages:\n  - drop:\n      longer_than: 1KB\n");
    p.line(&"x".repeat(1000)).kept();
    assert_eq!(p.line(&"x".repeat(1001)).dropped_by(), ("drop".into(), "drop_stage".into()));
    let mut p = dry_run("stages:\n  - drop:\n      longer_than: 1KiB\n");
    p.line(&"x".repeat(1024)).kept();
    p.line(&"x".repeat(1025)).dropped_by();
}

#[test]
fn drop_conditions_are_anded() {
    let mut p = dry_run("stages:\n  - drop:\n      expression: \".*debug.*\"\n      longer_than: 20\n");
    p.line("debug short").kept();
    p.line("no match but quite a long line").kept();
    assert_eq!(p.line("debug and quite a long line").dropped_by(), ("drop".into(), "drop_stage".into()));
}

#[test]
fn drop_stages_are_ored() {
    let mut p = dry_run(
        r#"
stages:
  - json:
      expressions: {msg:}
  - drop:
      longer_than: 40
      drop_counter_reason: too_long
  - drop:
      source: msg
      expression: ".*trace.*"
      drop_counter_reason: trace
"#,
    );
    assert_eq!(p.line(r#"{"msg":"a trace line"}"#).dropped_by(), ("drop".into(), "trace".into()));
    assert_eq!(
        p.line(r#"{"msg":"fine", "pad":"...................."}"#).dropped_by(),
        ("drop".into(), "too_long".into())
    );
    p.line(r#"{"msg":"fine"}"#).kept();
    p.line(r#"{"other":"trace but not in msg"}"#).kept();
    assert_eq!((p.dropped("drop", "trace"), p.dropped("drop", "too_long")), (1, 1));
}

// ---- match ----------------------------------------------------------------------------------

#[test]
fn match_runs_nested_stages_and_drops() {
    let mut p = dry_run(
        r#"
stages:
  - json:
      expressions: {app:}
  - labels: {app:}
  - match:
      selector: '{app="loki"}'
      stages:
        - json:
            expressions: {msg: message}
  - match:
      pipeline_name: "app2"
      selector: '{app="pokey"}'
      action: keep
      stages:
        - json:
            expressions: {msg: msg}
  - match:
      selector: '{app="promtail"} |~ ".*noisy error.*"'
      action: drop
      drop_counter_reason: promtail_noisy_error
  - output: {source: msg}
"#,
    );
    let out = p.line(r#"{ "time":"2012-11-01T22:08:41+00:00", "app":"loki", "component": ["parser","type"], "level" : "WARN", "message" : "app1 log line" }"#);
    assert_eq!(out.kept().line(), "app1 log line");
    assert_eq!(out.labels(), r#"{app="loki", job="app"}"#);
    let out = p.line(r#"{ "time":"2012-11-01T22:08:41+00:00", "app":"promtail", "component": ["parser","type"], "level" : "ERROR", "message" : "foo noisy error" }"#);
    assert_eq!(out.dropped_by(), ("match".into(), "promtail_noisy_error".into()));
    let out = p.line(r#"{"app":"promtail", "message":"a quiet line"}"#);
    assert_eq!(out.kept().line(), r#"{"app":"promtail", "message":"a quiet line"}"#, "the line filter did not match");
    let out = p.line(r#"{"app":"pokey", "msg":"app2 line", "message":"not this"}"#);
    assert_eq!(out.kept().line(), "app2 line");
    assert_eq!(p.dropped("match", "promtail_noisy_error"), 1);
}

#[test]
fn match_nested_stage_ids_and_default_drop_reason() {
    let mut p = dry_run(
        r#"
stages:
  - match:
      selector: '{job="app"}'
      pipeline_name: parse_app
      stages:
        - json:
            expressions: {level:}
        - labels: {level:}
  - match:
      selector: '{level="debug"}'
      stages:
        - drop:
            expression: "health"
  - match:
      selector: '{job="noise"}'
      action: drop
"#,
    );
    assert_eq!(p.line("not json").kept().labels(), r#"{job="app"}"#);
    assert_eq!(p.errors("parse_app/json"), 1, "nested stages count under the match's pipeline_name");
    let out = p.line(r#"{"level":"debug","path":"/health"}"#);
    assert_eq!(out.dropped_by(), ("match/drop".into(), "drop_stage".into()));
    assert_eq!(p.line(r#"{"level":"debug","path":"/api"}"#).kept().labels(), r#"{job="app", level="debug"}"#);
    assert_eq!(p.labelled(&[("job", "noise")], "x").dropped_by(), ("match".into(), "match_stage".into()));
    assert_eq!(p.labelled(&[("job", "other")], "not json").kept().line(), "not json");
    assert_eq!(p.errors("parse_app/json"), 1, "the selector kept the other job out");
    assert_eq!((p.dropped("match/drop", "drop_stage"), p.dropped("match", "match_stage")), (1, 1));
}

#[test]
fn match_selector_operators_and_line_filters() {
    let mut p = dry_run(
        r#"
stages:
  - match:
      selector: '{job=~"api|web", env!="dev", team!~"qa.*"} |= "error" != "expected"'
      stages:
        - static_labels: {alert: "yes"}
"#,
    );
    let alert = |p: &mut Harness, labels: &[(&str, &str)], line: &str| {
        p.labelled(labels, line).kept().labels().contains("alert")
    };
    assert!(alert(&mut p, &[("job", "api")], "an error happened"));
    assert!(alert(&mut p, &[("job", "web"), ("env", "prod"), ("team", "core")], "error"));
    assert!(!alert(&mut p, &[("job", "apiserver")], "an error happened"), "label regexes are anchored");
    assert!(!alert(&mut p, &[("job", "api"), ("env", "dev")], "an error happened"));
    assert!(!alert(&mut p, &[("job", "api"), ("team", "qa-east")], "an error happened"));
    assert!(!alert(&mut p, &[("job", "api")], "all good"));
    assert!(!alert(&mut p, &[("job", "api")], "an expected error"));
}

#[test]
fn pipeline_selection_by_source_and_selector() {
    let mut p = dry_run(
        r#"
match:
  sources: [docker]
  selector: '{job="app"}'
stages:
  - static_labels: {seen: "yes"}
"#,
    );
    assert_eq!(p.run_line("docker", JOB, 1, "x").kept().labels(), r#"{job="app", seen="yes"}"#);
    assert_eq!(p.run_line("files", JOB, 1, "x").kept().labels(), r#"{job="app"}"#);
    assert_eq!(p.run_line("docker", &[("job", "db")], 1, "x").kept().labels(), r#"{job="db"}"#);
}

// ---- replace --------------------------------------------------------------------------------

const APACHE: &str = r#"11.11.11.11 - frank [25/Jan/2000:14:00:01 -0500] "GET /1986.js HTTP/1.1" 200 932 "-" "Mozilla/5.0 (Windows; U; Windows NT 5.1; de; rv:1.9.1.7) Gecko/20091221 Firefox/3.5.7 GTB6""#;

#[test]
fn replace_a_capture_group_in_the_line() {
    let mut p = dry_run("stages:\n  - replace:\n      expression: \"password (\\\\S+)\"\n      replace: \"****\"\n");
    let out = p.line("2019-01-01T01:00:00.000000001Z stderr P i'm a log message who has sensitive information with password xyz and more");
    assert_eq!(
        out.kept().line(),
        "2019-01-01T01:00:00.000000001Z stderr P i'm a log message who has sensitive information with password **** and more"
    );
    // `\S+` takes the `!` too.
    assert_eq!(p.line("with password xyz!").kept().line(), "with password ****");
    // Every match is replaced.
    assert_eq!(p.line("password a, password b").kept().line(), "password **** password ****");
    assert_eq!(p.line("no secret here").kept().line(), "no secret here");
    assert_eq!(p.errors("replace"), 0);
}

#[test]
fn replace_in_an_extracted_value_with_source() {
    let mut p = dry_run(
        r#"
stages:
  - json:
      expressions: {level:, msg:}
  - replace:
      expression: "\\S+ - \"POST (\\S+) .*"
      source: msg
      replace: "/loki/api/v1/push"
  - output: {source: msg}
"#,
    );
    let out = p.line(&format!(r#"{{"time":"2019-01-01T01:00:00.000000001Z", "level": "info", "msg":"{LOKI_PUSH}"}}"#));
    assert_eq!(out.kept().line(), r#"11.11.11.11 - "POST /loki/api/v1/push HTTP/1.1" 200 932 "-" "Mozilla/5.0""#);
    // A missing source changes nothing.
    assert_eq!(p.line(r#"{"level":"info"}"#).kept().line(), r#"{"level":"info"}"#);
}

#[test]
fn replace_with_a_template() {
    let mut p = dry_run(
        r#"
stages:
  - replace:
      expression: "^(\\S+) (\\S+) (\\S+) \\[([\\w:/]+\\s[+\\-]\\d{4})\\] \"(\\S+)\\s?(\\S+)?\\s?(\\S+)?\" (\\d{3}|-) (\\d+|-)\\s?\"?([^\"]*)\"?\\s?\"?([^\"]*)?\"?$"
      replace: '{{ if eq .Value "200" }}{{ Replace .Value "200" "HttpStatusOk" -1 }}{{ else }}{{ .Value | ToUpper }}{{ end }}'
"#,
    );
    // Every group goes through the template: `200` is renamed, the rest upper-cased.
    assert_eq!(
        p.line(APACHE).kept().line(),
        r#"11.11.11.11 - FRANK [25/JAN/2000:14:00:01 -0500] "GET /1986.JS HTTP/1.1" HttpStatusOk 932 "-" "MOZILLA/5.0 (WINDOWS; U; WINDOWS NT 5.1; DE; RV:1.9.1.7) GECKO/20091221 FIREFOX/3.5.7 GTB6""#
    );
}

#[test]
fn replace_extracts_named_groups_with_their_replaced_value() {
    let mut p = dry_run(
        r#"
stages:
  - replace:
      expression: "^(?P<ip>\\S+) (?P<identd>\\S+) (\\S+) \\[(?P<timestamp>[\\w:/]+\\s[+\\-]\\d{4})\\] \"(?P<action>\\S+)\\s?(?P<path>\\S+)?\\s?(?P<protocol>\\S+)?\" (?P<status>\\d{3}|-) (?P<size>\\d+|-)\\s?\"?(?P<referer>[^\"]*)\"?\\s?\"?(?P<useragent>[^\"]*)?\"?$"
      replace: '{{ .Value | ToUpper }}'
  - labels: {ip:, identd:, user:, action:, path:, status:, size:}
  - structured_metadata: {timestamp:, useragent:}
"#,
    );
    let out = p.line(APACHE);
    assert_eq!(
        out.kept().line(),
        r#"11.11.11.11 - FRANK [25/JAN/2000:14:00:01 -0500] "GET /1986.JS HTTP/1.1" 200 932 "-" "MOZILLA/5.0 (WINDOWS; U; WINDOWS NT 5.1; DE; RV:1.9.1.7) GECKO/20091221 FIREFOX/3.5.7 GTB6""#
    );
    // As Promtail documents, named groups are extracted with the value the template gave them;
    // `user` is not extracted: its group has no name.
    assert_eq!(
        out.labels(),
        r#"{action="GET", identd="-", ip="11.11.11.11", job="app", path="/1986.JS", size="932", status="200"}"#
    );
    assert_eq!(
        out.metadata(),
        pairs(&[
            ("timestamp", "25/JAN/2000:14:00:01 -0500"),
            ("useragent", "MOZILLA/5.0 (WINDOWS; U; WINDOWS NT 5.1; DE; RV:1.9.1.7) GECKO/20091221 FIREFOX/3.5.7 GTB6"),
        ])
    );
}

#[test]
fn replace_named_groups_take_the_first_match() {
    let mut p = dry_run(
        "stages:\n  - replace:\n      expression: 'user=(?P<user>\\w+)'\n      replace: '{{ .Value | ToUpper }}'\n  - labels: {user:}\n",
    );
    let out = p.line("user=alice then user=bob");
    assert_eq!(out.kept().line(), "user=ALICE then user=BOB");
    assert_eq!(out.labels(), r#"{job="app", user="ALICE"}"#);
}

#[test]
fn replace_with_empty_replacement_removes_the_group() {
    let mut p =
        dry_run("stages:\n  - replace:\n      expression: \"11.11.11.11 - (\\\\S+\\\\s)\"\n      replace: \"\"\n");
    assert_eq!(
        p.line(APACHE).kept().line(),
        r#"11.11.11.11 - [25/Jan/2000:14:00:01 -0500] "GET /1986.js HTTP/1.1" 200 932 "-" "Mozilla/5.0 (Windows; U; Windows NT 5.1; de; rv:1.9.1.7) Gecko/20091221 Firefox/3.5.7 GTB6""#
    );
}

#[test]
fn replace_without_groups_replaces_the_whole_match() {
    // Differs from Promtail: Promtail replaces capture groups only, so an expression without
    // groups changes nothing there; sluice replaces each whole match.
    let mut p = dry_run("stages:\n  - replace:\n      expression: '\\d{3}-\\d{2}-\\d{4}'\n      replace: '[ssn]'\n");
    assert_eq!(p.line("ssn 123-45-6789 and 987-65-4321.").kept().line(), "ssn [ssn] and [ssn].");
}

#[test]
fn replace_adjacent_and_nested_groups() {
    // Adjacent groups are both replaced; a group inside a replaced group is not replaced again.
    let mut p = dry_run("stages:\n  - replace:\n      expression: '(a)(b)((c)d)'\n      replace: '<{{ .Value }}>'\n");
    assert_eq!(p.line("xabcdy").kept().line(), "x<a><b><cd>y");
}

#[test]
fn replace_template_reads_extracted_values() {
    let mut p = dry_run(
        r#"
stages:
  - regex:
      expression: '^(?P<user>\w+):'
  - replace:
      expression: '(secret=\S+)'
      replace: 'secret of {{ .user }} hidden'
"#,
    );
    assert_eq!(p.line("alice: secret=hunter2 ok").kept().line(), "alice: secret of alice hidden ok");
}

#[test]
fn replace_counts_a_template_that_fails() {
    let mut p = dry_run(
        "stages:\n  - replace:\n      expression: '(\\d+)'\n      replace: '{{ Replace .Value \"1\" \"2\" \"many\" }}'\n",
    );
    assert_eq!(p.line("id 123").kept().line(), "id 123", "the line is left as it was");
    assert_eq!(p.errors("replace"), 1);
}

// ---- template -------------------------------------------------------------------------------

#[test]
fn template_documented_examples() {
    let mut p = dry_run(
        r#"
stages:
  - json:
      expressions: {app:, level:, module:, name:}
  - template:
      source: new_key
      template: 'hello world!'
  - template:
      source: suffixed
      template: '{{ .app }}_some_suffix'
  - template:
      source: lowered
      template: '{{ ToLower .app }}'
  - template:
      source: output_msg
      template: '{{ .level }} for app {{ ToUpper .app }}'
  - template:
      source: name
      template: '{{ Replace .Value "loki" "blokey" 1 }}'
  - template:
      source: app
      template: '{{ .level }} for app {{ ToUpper .Value }} in module {{.module}}'
  - labels: {suffixed:, lowered:, name:}
  - structured_metadata: {new_key:, output_msg:, app:}
"#,
    );
    let out = p.line(r#"{"app":"loki","level":"warn","module":"test","name":"loki loki"}"#);
    assert_eq!(out.kept().labels(), r#"{job="app", lowered="loki", name="blokey loki", suffixed="loki_some_suffix"}"#);
    assert_eq!(
        out.metadata(),
        pairs(&[
            ("app", "warn for app LOKI in module test"),
            ("new_key", "hello world!"),
            ("output_msg", "warn for app LOKI"),
        ])
    );
    assert_eq!(p.errors("template"), 0);
}

#[test]
fn template_entry_prepends_to_the_line() {
    let mut p = dry_run(
        r#"
stages:
  - regex:
      expression: '^(?P<app>\w+)'
  - template:
      source: message
      template: '{{.app }}: {{ .Entry }}'
  - output: {source: message}
"#,
    );
    assert_eq!(p.line("loki started").kept().line(), "loki: loki started");
}

#[test]
fn template_functions() {
    let mut p = dry_run(
        r#"
stages:
  - logfmt: {}
  - template: {source: trimmed, template: '{{ Trim .padded ",. " }}'}
  - template: {source: left, template: '{{ TrimLeft .padded ",. " }}|'}
  - template: {source: right, template: '|{{ TrimRight .padded ",. " }}'}
  - template: {source: prefix, template: '{{ TrimPrefix .flag "--" }}'}
  - template: {source: suffix, template: '{{ TrimSuffix .file ".log" }}'}
  - template: {source: space, template: '[{{ TrimSpace .spaced }}]'}
  - template: {source: regex, template: '{{ regexReplaceAll "(a*)bc" .abc "${1}a" }}'}
  - template: {source: literal, template: '{{ regexReplaceAllLiteral "(ts=)" .ts "timestamp=" }}'}
  - template: {source: upper, template: '{{ .file | ToUpper }}'}
  - template: {source: all, template: '{{ Replace .flag "-" "+" -1 }}'}
  - template: {source: missing, template: '{{ .nope }}'}
  - template: {source: fallback, template: '{{ .nope | default "none" }}'}
  - structured_metadata:
      trimmed:
      left:
      right:
      prefix:
      suffix:
      space:
      regex:
      literal:
      upper:
      all:
      missing:
      fallback:
"#,
    );
    let out = p.line(r#"padded=",. hi ., " flag=--verbose file=app.log spaced="  x  " abc=aaabc ts="ts=1 ts=2""#);
    // structured_metadata sets names in its (sorted) map order.
    let mut got = out.kept().metadata();
    got.sort();
    let mut wanted = pairs(&[
        ("trimmed", "hi"),
        ("left", "hi ., |"),
        ("right", "|,. hi"),
        ("prefix", "verbose"),
        ("suffix", "app"),
        ("space", "[x]"),
        ("regex", "aaaa"),
        ("literal", "timestamp=1 timestamp=2"),
        ("upper", "APP.LOG"),
        ("all", "++verbose"),
        ("missing", "<no value>"),
        ("fallback", "none"),
    ]);
    wanted.sort();
    assert_eq!(got, wanted);
    assert_eq!(p.errors("template"), 0);
}

#[test]
fn template_conditionals() {
    let mut p = dry_run(
        r#"
stages:
  - json:
      expressions: {level:, code:}
  - template:
      source: severity
      template: '{{ if eq .level "error" }}high{{ else if eq .level "warn" }}medium{{ else }}low{{ end }}'
  - template:
      source: server_error
      template: '{{ if and (hasPrefix "5" .code) (ne .level "debug") }}yes{{ else }}no{{ end }}'
  - template:
      source: has_level
      template: '{{- if .level -}} yes {{- else -}} no {{- end -}}'
  - labels: {severity:, server_error:, has_level:}
"#,
    );
    let labels = |p: &mut Harness, line: &str| p.line(line).kept().labels().to_string();
    assert_eq!(
        labels(&mut p, r#"{"level":"error","code":"503"}"#),
        r#"{has_level="yes", job="app", server_error="yes", severity="high"}"#
    );
    assert_eq!(
        labels(&mut p, r#"{"level":"warn","code":"404"}"#),
        r#"{has_level="yes", job="app", server_error="no", severity="medium"}"#
    );
    assert_eq!(
        labels(&mut p, r#"{"code":"500"}"#),
        r#"{has_level="no", job="app", server_error="yes", severity="low"}"#
    );
}

#[test]
fn template_counts_a_failure_and_keeps_the_value() {
    let mut p = dry_run(
        "stages:\n  - json:\n      expressions: {app:}\n  - template:\n      source: app\n      template: '{{ Replace .Value \"a\" \"b\" \"x\" }}'\n  - labels: {app:}\n",
    );
    assert_eq!(p.line(r#"{"app":"loki"}"#).kept().labels(), r#"{app="loki", job="app"}"#);
    assert_eq!(p.errors("template"), 1);
}

#[test]
fn template_that_renders_empty_keeps_an_empty_value() {
    // Differs from Promtail: a template that renders the empty string removes its key from
    // Promtail's extracted map; sluice keeps the key with an empty value, so a later `drop` on
    // that source still sees it.
    let mut p = dry_run(
        "stages:\n  - json:\n      expressions: {app:}\n  - template:\n      source: app\n      template: ''\n  - drop:\n      source: app\n",
    );
    assert_eq!(p.line(r#"{"app":"loki"}"#).dropped_by(), ("drop".into(), "drop_stage".into()));
}

// ---- limit ----------------------------------------------------------------------------------

#[test]
fn limit_drop_keeps_exactly_the_burst() {
    let mut p = dry_run("stages:\n  - limit:\n      rate: 0.01\n      burst: 3\n      drop: true\n");
    let mut kept = Vec::new();
    for i in 0..10 {
        let out = p.line(&format!("line {i}"));
        match &out.dropped {
            None => kept.push(out.line()),
            Some(_) => assert_eq!(out.dropped_by(), ("limit".into(), "limit".into())),
        }
        assert_eq!(out.throttle, Duration::ZERO, "drop mode never throttles");
    }
    assert_eq!(kept, ["line 0", "line 1", "line 2"]);
    assert_eq!(p.dropped("limit", "limit"), 7);
}

#[test]
fn limit_by_label_keeps_a_bucket_per_value() {
    let mut p = dry_run(
        "stages:\n  - limit:\n      rate: 0.01\n      burst: 1\n      drop: true\n      by_label_name: namespace\n",
    );
    p.labelled(&[("namespace", "a")], "a1").kept();
    p.labelled(&[("namespace", "a")], "a2").dropped_by();
    p.labelled(&[("namespace", "b")], "b1").kept();
    // Entries without the label are not limited.
    p.line("no namespace 1").kept();
    p.line("no namespace 2").kept();
    assert_eq!(p.dropped("limit", "limit"), 1);
}

#[test]
fn limit_wait_mode_throttles_the_source() {
    // A slow rate, so that the time the test itself takes does not count.
    let mut p = dry_run("stages:\n  - limit:\n      rate: 0.1\n      burst: 2\n");
    assert_eq!(p.line("1").kept().line(), "1");
    assert_eq!(p.line("2").throttle, Duration::ZERO);
    let third = p.line("3");
    assert_eq!(third.kept().line(), "3", "wait mode keeps every line");
    assert!(
        third.throttle > Duration::from_secs(9) && third.throttle <= Duration::from_secs(10),
        "one token at 0.1/s: {:?}",
        third.throttle
    );
    let fourth = p.line("4");
    fourth.kept();
    assert!(fourth.throttle > Duration::from_secs(19) && fourth.throttle <= Duration::from_secs(20));
    let labels = PipelineStageReason { pipeline: PIPELINE.into(), stage: "limit".into(), reason: "limit".into() };
    assert!(p.metrics.dropped.get(&labels).is_none(), "wait mode has no drop counter");
}

// ---- multiline ------------------------------------------------------------------------------

#[test]
fn multiline_joins_a_traceback() {
    let mut p = dry_run(
        r#"
stages:
  - multiline:
      firstline: '^\[\d{4}-\d{2}-\d{2} \d{1,2}:\d{2}:\d{2}\]'
      max_wait_time: 3s
  - regex:
      expression: '^(?P<time>\[\d{4}-\d{2}-\d{2} \d{1,2}:\d{2}:\d{2}\]) (?P<message>(?s:.*))$'
  - output: {source: message}
"#,
    );
    let mut ts = 0;
    let mut run = |p: &mut Harness, line: &str| {
        ts += 1;
        p.run_line("test", JOB, ts, line)
    };
    let out = run(&mut p, r#"[2020-12-03 11:36:20] "GET /hello HTTP/1.1" 200 -"#);
    assert!(out.held && out.entries.is_empty());
    let out = run(&mut p, "[2020-12-03 11:36:23] ERROR in app: Exception on /error [GET]");
    assert!(out.held);
    assert_eq!(out.line(), r#""GET /hello HTTP/1.1" 200 -"#);
    assert_eq!(out.timestamp(), 1);
    for line in [
        "Traceback (most recent call last):",
        r#"  File "/srv/app.py", line 2447, in wsgi_app"#,
        "    response = self.full_dispatch_request()",
        "Exception: Sorry, this route always breaks",
    ] {
        let out = run(&mut p, line);
        assert!(out.held && out.entries.is_empty(), "{line}");
    }
    let out = run(&mut p, r#"[2020-12-03 11:36:23] "GET /error HTTP/1.1" 500 -"#);
    assert_eq!(
        out.line(),
        "ERROR in app: Exception on /error [GET]\nTraceback (most recent call last):\n  File \"/srv/app.py\", line 2447, in wsgi_app\n    response = self.full_dispatch_request()\nException: Sorry, this route always breaks"
    );
    assert_eq!(out.timestamp(), 2, "the block has its first line's time");
    assert_eq!(out.labels(), r#"{job="app"}"#);
    let rest = p.finish();
    assert_eq!(rest.len(), 1);
    assert_eq!(text(&rest[0].line), r#""GET /error HTTP/1.1" 500 -"#, "the last block is released at the end");
    assert_eq!(p.errors("regex"), 0);
}

#[test]
fn multiline_max_lines_starts_a_new_block() {
    let mut p = dry_run("stages:\n  - multiline:\n      firstline: '^\\d{4} '\n      max_lines: 3\n");
    assert!(p.line("2024 a").entries.is_empty());
    assert!(p.line("b").entries.is_empty());
    assert_eq!(p.line("c").line(), "2024 a\nb\nc", "released as soon as it has three lines");
    assert!(p.line("d").entries.is_empty(), "the next line starts a new block");
    assert_eq!(p.line("2024 e").line(), "d");
    let rest = p.finish();
    assert_eq!(rest.iter().map(|e| text(&e.line)).collect::<Vec<_>>(), ["2024 e"]);
}

#[test]
fn multiline_releases_a_block_after_max_wait_time() {
    let mut p = dry_run("stages:\n  - multiline:\n      firstline: '^\\d{4} '\n      max_wait_time: 1s\n");
    assert!(p.line("2024 a").held);
    assert!(p.line("  b").held);
    assert!(p.flush_expired().is_empty(), "not yet");
    std::thread::sleep(Duration::from_millis(1100));
    let released = p.flush_expired();
    assert_eq!(released.iter().map(|e| text(&e.line)).collect::<Vec<_>>(), ["2024 a\n  b"]);
    assert!(p.finish().is_empty());
}

#[test]
fn multiline_keeps_a_block_per_stream() {
    let mut p = dry_run("stages:\n  - multiline:\n      firstline: '^START'\n");
    p.labelled(&[("job", "a")], "START a");
    p.labelled(&[("job", "b")], "START b");
    p.labelled(&[("job", "a")], "a2");
    p.labelled(&[("job", "b")], "b2");
    let out = p.labelled(&[("job", "a")], "START a again");
    assert_eq!((out.line().as_str(), out.labels()), ("START a\na2", r#"{job="a"}"#));
    let mut rest: Vec<(String, String)> =
        p.finish().iter().map(|e| (text(&e.line), e.labels.rendered().to_string())).collect();
    rest.sort();
    assert_eq!(rest, pairs(&[("START a again", r#"{job="a"}"#), ("START b\nb2", r#"{job="b"}"#)]));
}

// ---- metrics --------------------------------------------------------------------------------

#[test]
fn metrics_counters_match_all_and_bytes() {
    let mut p = dry_run(
        r#"
stages:
  - metrics:
      log_lines_total:
        type: Counter
        description: "total number of log lines"
        prefix: my_promtail_custom_
        max_idle_duration: 24h
        config:
          match_all: true
          action: inc
      log_bytes_total:
        type: Counter
        description: "total bytes of log lines"
        prefix: my_promtail_custom_
        max_idle_duration: 24h
        config:
          match_all: true
          count_entry_bytes: true
          action: add
"#,
    );
    for line in ["a", "bb", "ccc"] {
        p.line(line).kept();
    }
    p.labelled(&[("job", "other")], "dddd").kept();
    let lines = p.metric("my_promtail_custom_log_lines");
    let bytes = p.metric("my_promtail_custom_log_bytes");
    assert_eq!(lines.value(JOB), Some(3.0));
    assert_eq!(bytes.value(JOB), Some(6.0));
    assert_eq!(lines.value(&[("job", "other")]), Some(1.0));
    assert_eq!(bytes.value(&[("job", "other")]), Some(4.0));
    let text = p.exposition();
    assert!(text.contains("# TYPE my_promtail_custom_log_lines counter\n"), "{text}");
    assert!(text.contains("# HELP my_promtail_custom_log_lines total number of log lines\n"), "{text}");
    assert!(text.contains("my_promtail_custom_log_lines_total{job=\"app\"} 3.0\n"), "{text}");
    assert!(text.contains("my_promtail_custom_log_bytes_total{job=\"other\"} 4.0\n"), "{text}");
}

#[test]
fn metrics_counter_from_an_extracted_value() {
    let mut p = dry_run(
        r#"
stages:
  - regex:
      expression: "^.*(?P<order_success>order successful).*$"
  - metrics:
      successful_orders_total:
        type: Counter
        description: "log lines with the message `order successful`"
        source: order_success
        config:
          action: inc
"#,
    );
    for line in ["order successful id=1", "order failed id=2", "order successful id=3"] {
        p.line(line).kept();
    }
    assert_eq!(p.metric("sluice_custom_successful_orders").value(JOB), Some(2.0));
    assert_eq!(p.errors("regex"), 1);
}

#[test]
fn metrics_counters_filtered_by_value() {
    let mut p = dry_run(
        r#"
stages:
  - regex:
      expression: "^.* order_status=(?P<order_status>.*?) .*$"
  - metrics:
      successful_orders_total:
        type: Counter
        source: order_status
        config: {value: success, action: inc}
      failed_orders_total:
        type: Counter
        source: order_status
        config: {value: fail, action: inc}
"#,
    );
    for status in ["success", "fail", "success", "pending"] {
        p.line(&format!("ts=1 order_status={status} id=7")).kept();
    }
    assert_eq!(p.metric("sluice_custom_successful_orders").value(JOB), Some(2.0));
    assert_eq!(p.metric("sluice_custom_failed_orders").value(JOB), Some(1.0));
}

#[test]
fn metrics_counter_add_and_numbers_that_do_not_parse() {
    let mut p = dry_run(
        r#"
stages:
  - json:
      expressions: {bytes:}
  - metrics:
      bytes_total:
        type: Counter
        source: bytes
        config: {action: add}
"#,
    );
    for line in [r#"{"bytes":100}"#, r#"{"bytes":"2.5"}"#, r#"{"bytes":-7}"#, r#"{"bytes":"lots"}"#, r#"{}"#] {
        p.line(line).kept();
    }
    assert_eq!(p.metric("sluice_custom_bytes").value(JOB), Some(102.5), "a counter never goes down");
    assert_eq!(p.errors("metrics"), 1, "`lots` is not a number");
}

#[test]
fn metrics_values_as_promtail_reads_them() {
    // Promtail reads metric values as numbers, Go durations (in seconds) and booleans.
    let mut p = dry_run(
        r#"
stages:
  - json:
      expressions: {took:, cached:}
  - metrics:
      took_seconds_total:
        type: Counter
        source: took
        config: {action: add}
      cached_total:
        type: Counter
        source: cached
        config: {action: add}
"#,
    );
    for line in [r#"{"took":"0.5ms","cached":true}"#, r#"{"took":"1m1.5s","cached":false}"#, r#"{"took":2}"#] {
        p.line(line).kept();
    }
    let took = p.metric("sluice_custom_took_seconds").value(JOB).unwrap();
    assert!((took - 63.5005).abs() < 1e-9, "{took}");
    assert_eq!(p.metric("sluice_custom_cached").value(JOB), Some(1.0));
    assert_eq!(p.errors("metrics"), 0);
}

#[test]
fn metrics_gauge_actions() {
    let mut p = dry_run(
        r#"
stages:
  - regex:
      expression: "^.* retries=(?P<retries>\\d+) .*$"
  - metrics:
      retries_total:
        type: Gauge
        description: "total retries"
        source: retries
        config: {action: add}
      retries_last:
        type: Gauge
        source: retries
        config: {action: set}
      retries_inc:
        type: Gauge
        source: retries
        config: {action: inc}
      retries_dec:
        type: Gauge
        source: retries
        config: {action: dec}
      retries_sub:
        type: Gauge
        source: retries
        config: {action: sub}
      retries_three:
        type: Gauge
        source: retries
        config: {action: Inc, value: "3"}
"#,
    );
    for line in ["call retries=3 ok", "call retries=4 ok", "call without retries"] {
        p.line(line).kept();
    }
    let value = |name: &str| p.metric(&format!("sluice_custom_{name}")).value(JOB);
    assert_eq!(value("retries_total"), Some(7.0));
    assert_eq!(value("retries_last"), Some(4.0));
    assert_eq!(value("retries_inc"), Some(2.0));
    assert_eq!(value("retries_dec"), Some(-2.0));
    assert_eq!(value("retries_sub"), Some(-7.0));
    assert_eq!(value("retries_three"), Some(1.0));
    assert!(p.exposition().contains("# TYPE sluice_custom_retries_total gauge\n"));
}

#[test]
fn metrics_histogram_buckets() {
    let mut p = dry_run(
        r#"
stages:
  - json:
      expressions: {response_time:}
  - metrics:
      http_response_time_seconds:
        type: Histogram
        description: "length of each log line"
        source: response_time
        config:
          buckets: [0.001,0.0025,0.005,0.010,0.025,0.050]
"#,
    );
    for v in ["0.0005", "0.002", "0.0025", "0.03", "0.2", "\"fast\""] {
        p.line(&format!(r#"{{"response_time":{v}}}"#)).kept();
    }
    let sum = p.metric("sluice_custom_http_response_time_seconds").value(JOB).unwrap();
    assert!((sum - 0.235).abs() < 1e-12, "{sum}");
    assert_eq!(p.errors("metrics"), 1);
    let text = p.exposition();
    let name = "sluice_custom_http_response_time_seconds";
    for (le, count) in [("0.001", 1), ("0.0025", 3), ("0.005", 3), ("0.01", 3), ("0.025", 3), ("0.05", 4), ("+Inf", 5)]
    {
        let line = format!("{name}_bucket{{le=\"{le}\",job=\"app\"}} {count}\n");
        assert!(text.contains(&line), "missing {line:?} in\n{text}");
    }
    assert!(text.contains(&format!("{name}_count{{job=\"app\"}} 5\n")), "{text}");
}

#[test]
fn metrics_series_follow_the_labels_at_the_stage() {
    let mut p = dry_run(
        r#"
stages:
  - json:
      expressions: {level:, app:}
  - labels: {level:, app:}
  - metrics:
      lines_total:
        type: Counter
        config: {match_all: true}
"#,
    );
    p.line(r#"{"level":"info","app":"a"}"#).kept();
    p.line(r#"{"level":"info","app":"a"}"#).kept();
    p.line(r#"{"level":"error","app":"a"}"#).kept();
    // The same label set, reached from other source labels: the same series.
    p.labelled(&[("app", "a"), ("job", "app")], r#"{"level":"info"}"#).kept();
    let m = p.metric("sluice_custom_lines");
    assert_eq!(m.value(&[("app", "a"), ("job", "app"), ("level", "info")]), Some(3.0));
    assert_eq!(m.value(&[("app", "a"), ("job", "app"), ("level", "error")]), Some(1.0));
    let text = p.exposition();
    assert_eq!(text.matches("sluice_custom_lines_total{").count(), 2, "one series per label set:\n{text}");
}

// ---- carried state --------------------------------------------------------------------------

#[test]
fn metrics_and_held_lines_carry_over_to_an_equal_stage_after_a_reload() {
    let yaml = "stages:\n  - multiline:\n      firstline: '^START'\n  - metrics:\n      lines_total:\n        type: Counter\n        config: {match_all: true}\n";
    let mut p = dry_run(yaml);
    p.line("START one");
    p.line("more");
    assert_eq!(p.line("START two").line(), "START one\nmore");
    assert_eq!(p.metric("sluice_custom_lines").value(JOB), Some(1.0));
    let next = build_set(&[load(yaml)], &BuildContext { metrics: &p.metrics, previous: Some(&p.set) }).unwrap();
    p.set = next;
    assert_eq!(p.metric("sluice_custom_lines").value(JOB), Some(1.0), "the counter continues");
    assert_eq!(p.finish().iter().map(|e| text(&e.line)).collect::<Vec<_>>(), ["START two"], "the held block too");
    assert_eq!(p.metric("sluice_custom_lines").value(JOB), Some(2.0));
}

// ---- build errors ---------------------------------------------------------------------------

#[test]
fn build_error_invalid_regex() {
    let errors = build_errors("stages:\n  - regex:\n      expression: '(?P<x>'\n");
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].starts_with("test.yaml:3:19: invalid regex `(?P<x>`: "), "{errors:?}");
    let errors = build_errors("stages:\n  - drop:\n      expression: \"[a-\"\n  - replace:\n      expression: ')'\n");
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(errors[0].starts_with("test.yaml:3:19: invalid regex `[a-`: "), "{errors:?}");
    assert!(errors[1].starts_with("test.yaml:5:19: invalid regex `)`: "), "{errors:?}");
}

#[test]
fn build_error_regex_without_named_group() {
    let errors = build_errors("stages:\n  - regex:\n      expression: '^(\\w+) '\n");
    assert_eq!(
        errors,
        ["test.yaml:3:19: regex: the expression has no named capture group (?P<name>...), so it extracts nothing"]
    );
}

#[test]
fn build_error_invalid_selector() {
    let errors =
        build_errors("stages:\n  - match:\n      selector: '{app=\"x\"'\n      stages:\n        - labels: {app:}\n");
    assert_eq!(errors, ["test.yaml:3:17: match: invalid selector at offset 8: expected `,` or `}` in `{app=\"x\"`"]);
    let errors = build_errors("match:\n  selector: 'app=\"x\"'\nstages: []\n");
    assert_eq!(
        errors,
        ["test.yaml:2:13: match.selector: invalid selector at offset 0: a selector starts with `{` in `app=\"x\"`"]
    );
}

#[test]
fn build_error_unknown_time_zone() {
    let errors = build_errors(
        "stages:\n  - timestamp:\n      source: t\n      format: RFC3339\n      location: Mars/Olympus_Mons\n",
    );
    assert_eq!(
        errors,
        ["test.yaml:5:17: timestamp: unknown time zone `Mars/Olympus_Mons` (use an IANA name such as Europe/Paris)"]
    );
}

#[test]
fn build_error_timestamp_format_and_action() {
    let errors = build_errors(
        "stages:\n  - timestamp:\n      source: t\n      format: hello\n      fallback_formats: [UnixMs, nope]\n      action_on_failure: retry\n",
    );
    assert_eq!(errors.len(), 3, "{errors:?}");
    assert!(errors[0].starts_with("test.yaml:4:15: timestamp: `hello` is not a Go time layout"), "{errors:?}");
    assert!(errors[1].starts_with("test.yaml:5:34: timestamp: `nope` is not a Go time layout"), "{errors:?}");
    assert_eq!(errors[2], "test.yaml:6:26: timestamp: action_on_failure `retry` is not `fudge` or `skip`");
}

#[test]
fn build_error_bad_template() {
    let errors = build_errors("stages:\n  - template:\n      source: x\n      template: '{{ .Value '\n");
    assert_eq!(errors, ["test.yaml:4:17: invalid template: template error at offset 0: unclosed action: missing `}}`"]);
    let errors =
        build_errors("stages:\n  - replace:\n      expression: '(x)'\n      replace: '{{ Hash .Value \"salt\" }}'\n");
    assert_eq!(
        errors,
        ["test.yaml:4:16: invalid template: template error at offset 3: function `Hash` is not supported"]
    );
}

#[test]
fn build_error_holding_stages_inside_match() {
    let errors = build_errors(
        "stages:\n  - match:\n      selector: '{app=\"x\"}'\n      stages:\n        - multiline:\n            firstline: '^\\d'\n        - cri: {}\n",
    );
    assert_eq!(
        errors,
        [
            "test.yaml:5:11: `multiline` holds lines and must be a top-level stage, not inside `match`",
            "test.yaml:7:11: `cri` joins partial lines and must be a top-level stage, not inside `match`",
        ]
    );
}

#[test]
fn build_error_other_stage_checks() {
    let errors = build_errors(
        r#"stages:
  - labels:
      bad-name: x
  - drop:
      value: x
  - drop:
      source: a
      value: x
      expression: x
  - limit:
      rate: 0
      burst: 1
  - match:
      selector: '{a="b"}'
      action: drop
      stages:
        - labels: {a:}
  - match:
      selector: '{a="b"}'
  - metrics:
      bytes_total:
        type: Counter
        config: {count_entry_bytes: true, action: add}
      depth:
        type: Gauge
      spread:
        type: Summary
"#,
    );
    assert_eq!(
        errors,
        [
            "test.yaml:2:5: `bad-name` is not a valid label name ([a-zA-Z_][a-zA-Z0-9_]*, not starting with __)",
            "test.yaml:4:5: drop: `value` needs a `source`",
            "test.yaml:6:5: drop: `value` and `expression` cannot be used together",
            "test.yaml:10:5: limit: `rate` must be a positive number of entries per second",
            "test.yaml:13:5: match: `action: drop` takes no `stages`",
            "test.yaml:18:5: match: `action: keep` needs `stages`",
            // A metric's own errors point at its definition (its first field).
            "test.yaml:22:9: metrics: `bytes_total`: count_entry_bytes needs match_all: true",
            "test.yaml:25:9: metrics: `depth`: a gauge needs an `action` (set, inc, dec, add, sub)",
            "test.yaml:27:15: metrics: `spread`: type `summary` is not Counter, Gauge or Histogram",
        ]
    );
}
