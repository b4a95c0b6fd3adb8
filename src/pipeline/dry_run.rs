//! Running lines through a pipeline outside the agent: `sluice test` (like `promtail --dry-run`)
//! and the test cases that pipeline files carry.

use super::{DropRecord, LoadedPipeline, PipelineSet, Runner};
use crate::config::pipeline::{DroppedExpectation, TestCase};
use crate::config::{Located, Position};
use crate::event::{AckSet, LabelCache, LabelInterner, LabelLimits, LabelSet, LogBatch, LogEntry};
use crate::formats::time::{format_rfc3339_nanos, parse_rfc3339_nanos};
use crate::telemetry::metrics::LabelMetrics;
use std::collections::BTreeMap;
use std::sync::Arc;

/// The instant test cases use when they give no timestamp: 2024-01-01T00:00:00Z.
pub const DEFAULT_TEST_TIME: i64 = 1_704_067_200_000_000_000;

/// What became of one input line.
#[derive(Debug)]
pub struct LineResult {
    /// Entries that came out (usually one; several when a `multiline` group was released).
    pub entries: Vec<LogEntry>,
    pub dropped: Option<DropRecord>,
    /// A `multiline` or `cri` stage kept the line for later.
    pub held: bool,
}

/// A pipeline set and a runner of its own.
pub struct DryRun {
    set: PipelineSet,
    runner: Runner,
}

impl DryRun {
    pub fn new(set: PipelineSet) -> DryRun {
        let metrics = LabelMetrics::default();
        let interner = LabelInterner::new(LabelLimits::default(), &metrics);
        DryRun { set, runner: Runner::new(LabelCache::new(interner)) }
    }

    /// Runs one line from `source` with these labels and this timestamp.
    pub fn run_line(&mut self, source: &str, labels: &LabelSet, timestamp: i64, line: &[u8]) -> LineResult {
        let entry = LogEntry::new(timestamp, bytes::Bytes::copy_from_slice(line), labels.clone());
        let mut batch = LogBatch::new(vec![entry], AckSet::new());
        let out = self.runner.run_batch(&self.set, &Arc::from(source), &mut batch, true);
        LineResult { entries: out.entries, dropped: out.drops.into_iter().next(), held: out.held > 0 }
    }

    /// Releases everything still held (at the end of the input).
    pub fn finish(&mut self) -> Vec<LogEntry> {
        self.runner.flush_held(&self.set, true, None).into_iter().flat_map(|(_, out)| out.entries).collect()
    }
}

/// One entry as the JSON object `sluice test --format json` prints.
pub fn entry_json(entry: &LogEntry, dropped: Option<&DropRecord>) -> serde_json::Value {
    let labels: serde_json::Map<String, serde_json::Value> =
        entry.labels.pairs().iter().map(|(n, v)| (n.to_string(), serde_json::Value::from(&**v))).collect();
    let metadata: serde_json::Map<String, serde_json::Value> = entry
        .metadata
        .iter()
        .map(|(n, v)| (n.to_string(), serde_json::Value::from(String::from_utf8_lossy(v).into_owned())))
        .collect();
    serde_json::json!({
        "timestamp": format_rfc3339_nanos(entry.timestamp),
        "labels": labels,
        "structured_metadata": metadata,
        "line": String::from_utf8_lossy(&entry.line),
        "dropped": dropped.map(|d| serde_json::json!({"stage": &*d.stage, "reason": &*d.reason})),
    })
}

/// The outcome of one test case.
#[derive(Debug)]
pub struct CaseReport {
    pub name: String,
    pub position: Position,
    /// Empty when the case passed; otherwise one line per difference.
    pub differences: Vec<String>,
}

fn map_of(entry: &LogEntry) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    let labels = entry.labels.pairs().iter().map(|(n, v)| (n.to_string(), v.to_string())).collect();
    let metadata =
        entry.metadata.iter().map(|(n, v)| (n.to_string(), String::from_utf8_lossy(v).into_owned())).collect();
    (labels, metadata)
}

fn diff_maps(what: &str, want: &BTreeMap<String, String>, got: &BTreeMap<String, String>, out: &mut Vec<String>) {
    for (k, v) in want {
        match got.get(k) {
            None => out.push(format!("{what}: missing {k}={v:?}")),
            Some(g) if g != v => out.push(format!("{what}: {k}: expected {v:?}, got {g:?}")),
            _ => {}
        }
    }
    for (k, v) in got {
        if !want.contains_key(k) {
            out.push(format!("{what}: unexpected {k}={v:?}"));
        }
    }
}

fn check_case(case: &TestCase, result: &LineResult) -> Vec<String> {
    let mut out = Vec::new();
    let expect = &case.expect;
    let dropped_ok = match (&expect.dropped, &result.dropped) {
        (Some(DroppedExpectation::Yes), None) => Err("expected the line to be dropped, it was kept".to_string()),
        (Some(DroppedExpectation::ByStage(stage)), None) => {
            Err(format!("expected stage `{stage}` to drop the line, it was kept"))
        }
        (Some(DroppedExpectation::ByStage(stage)), Some(d))
            if *d.stage != **stage && !d.stage.ends_with(&format!("/{stage}")) =>
        {
            Err(format!("expected stage `{stage}` to drop the line, `{}` dropped it", d.stage))
        }
        (None | Some(DroppedExpectation::No), Some(d)) => {
            Err(format!("expected the line to be kept, stage `{}` dropped it (reason {})", d.stage, d.reason))
        }
        _ => Ok(()),
    };
    if let Err(e) = dropped_ok {
        out.push(e);
        return out;
    }
    if result.dropped.is_some() {
        return out;
    }
    let Some(entry) = result.entries.last() else {
        out.push(if result.held {
            "the line is still held by a multiline or cri stage".into()
        } else {
            "no entry came out".into()
        });
        return out;
    };
    let (labels, metadata) = map_of(entry);
    if let Some(want) = &expect.labels {
        diff_maps("labels", want, &labels, &mut out);
    }
    if let Some(want) = &expect.structured_metadata {
        diff_maps("structured_metadata", want, &metadata, &mut out);
    }
    if let Some(want) = &expect.line {
        let got = String::from_utf8_lossy(&entry.line);
        if *want != got {
            out.push(format!("line: expected {want:?}, got {got:?}"));
        }
    }
    if let Some(want) = &expect.timestamp {
        match parse_rfc3339_nanos(want.as_bytes()) {
            Some(ns) if ns == entry.timestamp => {}
            Some(_) => out.push(format!("timestamp: expected {want}, got {}", format_rfc3339_nanos(entry.timestamp))),
            None => out.push(format!("timestamp: the expected value {want:?} is not RFC 3339")),
        }
    }
    out
}

/// Runs the test cases of a pipeline file against the built `set` (which holds that file's
/// pipeline alone). Each case starts from a fresh state.
pub fn run_cases(pipeline: &LoadedPipeline, build: impl Fn() -> PipelineSet) -> Vec<CaseReport> {
    pipeline
        .file
        .tests
        .iter()
        .enumerate()
        .map(|(i, Located { value: case, position })| {
            let mut dry = DryRun::new(build());
            let labels = LabelSet::from_pairs(case.labels.iter());
            let timestamp = match &case.timestamp {
                Some(t) => parse_rfc3339_nanos(t.as_bytes()),
                None => Some(DEFAULT_TEST_TIME),
            };
            let name = case.name.clone().unwrap_or_else(|| format!("case {}", i + 1));
            let differences = match timestamp {
                None => vec![format!("the case's timestamp {:?} is not RFC 3339", case.timestamp)],
                Some(ts) => {
                    let mut result =
                        dry.run_line(case.source.as_deref().unwrap_or("test"), &labels, ts, case.input.as_bytes());
                    if result.held {
                        result.entries.extend(dry.finish());
                    }
                    check_case(case, &result)
                }
            };
            CaseReport { name, position: *position, differences }
        })
        .collect()
}
