//! Pipelines: Promtail-compatible stages that parse, relabel, filter and reshape log entries.
//!
//! Contract:
//! - A [`PipelineSet`] is built from pipeline files by [`build::build_set`], which is pure: it
//!   compiles regexes, selectors, templates and time formats and returns every error with its
//!   place. The built set is immutable and shared (`Arc`); reloading builds a new one and swaps
//!   it (see `topology`). State that must survive entries (multiline and CRI partial buffers,
//!   limit buckets, fudged timestamps, metrics) sits behind `Arc`s in the stages and carries
//!   over to an equal stage of the next set.
//! - Running is synchronous and does no I/O: [`Runner::run_batch`] takes a batch, applies every
//!   pipeline whose selection matches each entry, in file-name order, and returns what survives
//!   with labels interned. Each pipeline starts with an empty extracted map; label changes carry
//!   from one pipeline to the next.
//! - A stage that cannot process an entry (malformed JSON, a format that does not parse) counts
//!   `sluice_pipeline_errors_total{pipeline,stage}` and lets the entry continue unchanged. Only
//!   `drop`, `match` with `action: drop`, `limit` with `drop: true` and `json` with
//!   `drop_malformed` drop entries, each counted in `sluice_pipeline_dropped_total` with a reason.
//! - Stages that hold entries (`multiline`, `cri` partial lines) keep the acknowledgement tokens
//!   of what they hold, so a source's position never passes a line still held.

pub mod build;
pub mod config_str;
pub mod dry_run;
mod envelope;
mod extract;
mod filter;
mod go_time;
mod hold;
mod label_stages;
pub mod metrics_stage;
pub mod selector;
pub mod template;
mod timestamp;
mod transform;
pub mod work;

#[cfg(test)]
mod tests;

use crate::event::{AckSet, LabelCache, LogBatch, LogEntry};
use prometheus_client::metrics::counter::Counter;
use std::sync::Arc;
use std::time::Duration;

pub use build::{BuildContext, LoadedPipeline, build_set};
pub use work::Work;

/// What a stage decided about an entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// Dropped on purpose (and counted by the stage that dropped it).
    Drop(Dropped),
}

/// Which stage dropped an entry, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dropped {
    pub stage: Arc<str>,
    pub reason: Arc<str>,
}

/// Identity and error counter of a built stage.
#[derive(Debug, Clone)]
pub struct StageInfo {
    /// The stage's name, with its enclosing `match` stages: `json`, `match/drop`.
    pub id: Arc<str>,
    pub errors: Counter,
}

impl StageInfo {
    /// Counts an entry this stage could not process; the entry continues unchanged.
    pub fn error(&self, what: impl FnOnce() -> String) {
        self.errors.inc();
        tracing::trace!(stage = %self.id, error = %what(), "stage could not process an entry");
    }
}

/// What the runner hands to stages besides the entry.
pub struct StageCtx<'a> {
    /// Nanoseconds since the epoch, read once per batch.
    pub now: i64,
    pub cache: &'a mut LabelCache,
    /// Time the source must wait before sending more (from `limit` stages in wait mode).
    pub throttle: Duration,
    /// The acknowledgement tokens of the batch being processed.
    pub acks: &'a AckSet,
    /// Tokens of held entries that rejoined the flow: they travel with the output.
    pub extra_acks: AckSet,
}

/// A stage as built: a closed set, dispatched with a `match`.
pub(crate) enum Stage {
    Docker(envelope::DockerStage),
    Cri(envelope::CriStage),
    Json(extract::JsonStage),
    Logfmt(extract::LogfmtStage),
    Regex(extract::RegexStage),
    Labels(label_stages::LabelsStage),
    StaticLabels(label_stages::StaticLabelsStage),
    Labeldrop(label_stages::LabeldropStage),
    Labelallow(label_stages::LabelallowStage),
    StructuredMetadata(label_stages::StructuredMetadataStage),
    Timestamp(timestamp::TimestampStage),
    Output(transform::OutputStage),
    Drop(filter::DropStage),
    Match(filter::MatchStage),
    Replace(transform::ReplaceStage),
    Limit(filter::LimitStage),
    Multiline(hold::MultilineStage),
    Template(transform::TemplateStage),
    Metrics(metrics_stage::MetricsStage),
}

/// A built stage and its identity.
pub(crate) struct StageNode {
    pub info: StageInfo,
    pub stage: Stage,
}

impl StageNode {
    /// Applies a stage that never holds entries.
    fn apply(&self, w: &mut Work, ctx: &mut StageCtx<'_>) -> Flow {
        let info = &self.info;
        match &self.stage {
            Stage::Docker(s) => s.apply(w, info),
            Stage::Json(s) => s.apply(w, info),
            Stage::Logfmt(s) => s.apply(w, info),
            Stage::Regex(s) => s.apply(w, info),
            Stage::Labels(s) => s.apply(w),
            Stage::StaticLabels(s) => s.apply(w),
            Stage::Labeldrop(s) => s.apply(w),
            Stage::Labelallow(s) => s.apply(w),
            Stage::StructuredMetadata(s) => s.apply(w),
            Stage::Timestamp(s) => s.apply(w, info),
            Stage::Output(s) => s.apply(w, info),
            Stage::Drop(s) => s.apply(w, ctx, info),
            Stage::Match(s) => s.apply(w, ctx),
            Stage::Replace(s) => s.apply(w, info),
            Stage::Limit(s) => s.apply(w, ctx),
            Stage::Template(s) => s.apply(w, info),
            Stage::Metrics(s) => s.apply(w),
            // Holding stages are offered entries by the runner (see `hold`), never applied.
            Stage::Multiline(_) | Stage::Cri(_) => Flow::Continue,
        }
    }
}

/// Runs nested stages (inside `match`), which never hold entries.
pub(crate) fn apply_all(stages: &[StageNode], w: &mut Work, ctx: &mut StageCtx<'_>) -> Flow {
    for node in stages {
        if let flow @ Flow::Drop(_) = node.apply(w, ctx) {
            return flow;
        }
    }
    Flow::Continue
}

/// One pipeline: the entries it selects and its stages.
pub struct Pipeline {
    pub name: Arc<str>,
    sources: Vec<String>,
    selector: Option<selector::Selector>,
    stages: Vec<StageNode>,
    /// State of stateful stages by stage path, with the config that made it (see `build`).
    states: std::collections::HashMap<String, (crate::config::pipeline::StageConfig, build::StageState)>,
}

impl Pipeline {
    fn selects(&self, w: &Work) -> bool {
        if !self.sources.is_empty() && !self.sources.iter().any(|s| **s == *w.source) {
            return false;
        }
        match &self.selector {
            None => true,
            Some(sel) => sel.matches(&w.current_labels(), &w.entry.line),
        }
    }
}

/// Every pipeline, in file-name order.
pub struct PipelineSet {
    pipelines: Vec<Pipeline>,
}

/// Where an entry left the pipelines, for `sluice test`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DropRecord {
    pub pipeline: Arc<str>,
    pub stage: Arc<str>,
    pub reason: Arc<str>,
}

/// What a run produced.
#[derive(Debug, Default)]
pub struct RunOutput {
    pub entries: Vec<LogEntry>,
    /// Tokens of held entries released in this run: they travel with `entries`.
    pub acks: AckSet,
    pub throttle: Duration,
    /// Filled only when the runner traces drops (`sluice test`).
    pub drops: Vec<DropRecord>,
    /// Entries held by a `multiline` or `cri` stage during this run.
    pub held: usize,
}

impl PipelineSet {
    pub fn empty() -> Self {
        PipelineSet { pipelines: Vec::new() }
    }

    pub fn len(&self) -> usize {
        self.pipelines.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pipelines.is_empty()
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.pipelines.iter().map(|p| &*p.name)
    }

    /// The state of every holding stage.
    fn held_groups(&self) -> impl Iterator<Item = &Arc<hold::Groups>> {
        self.pipelines.iter().flat_map(|p| p.stages.iter()).filter_map(|node| match &node.stage {
            Stage::Multiline(m) => Some(&m.groups),
            Stage::Cri(c) => Some(&c.groups),
            _ => None,
        })
    }

    /// The metrics that `metrics` stages of this set define.
    pub fn custom_metrics(&self) -> Vec<Arc<metrics_stage::CustomMetric>> {
        self.pipelines
            .iter()
            .flat_map(|p| p.states.values())
            .filter_map(|(_, state)| match state {
                build::StageState::Metrics(m) => Some(m.clone()),
                _ => None,
            })
            .flatten()
            .collect()
    }

    /// Runs one entry from pipeline `p`, stage `s` on, pushing survivors to `out`.
    fn run_from(&self, p: usize, s: usize, w: &mut Work, ctx: &mut StageCtx<'_>, out: &mut RunOutput, trace: bool) {
        let mut stage_start = s;
        for (pi, pipeline) in self.pipelines.iter().enumerate().skip(p) {
            if pi != p || s == 0 {
                if !pipeline.selects(w) {
                    stage_start = 0;
                    continue;
                }
                w.clear_extracted();
            }
            for (si, node) in pipeline.stages.iter().enumerate().skip(stage_start) {
                let holder: Option<&dyn hold::Holding> = match &node.stage {
                    Stage::Multiline(m) => Some(m),
                    Stage::Cri(c) => Some(c),
                    _ => None,
                };
                if let Some(holder) = holder {
                    match holder.offer(w, ctx, &node.info) {
                        hold::Offer::Continue => continue,
                        hold::Offer::Held(released) => {
                            out.held += 1;
                            for mut r in released {
                                out.acks.append(&mut r.acks);
                                let mut rw = Work::new(r.entry, Arc::clone(&w.source));
                                self.run_from(pi, si + 1, &mut rw, ctx, out, trace);
                            }
                            return;
                        }
                    }
                }
                if let Flow::Drop(dropped) = node.apply(w, ctx) {
                    if trace {
                        out.drops.push(DropRecord {
                            pipeline: Arc::clone(&pipeline.name),
                            stage: dropped.stage,
                            reason: dropped.reason,
                        });
                    }
                    return;
                }
            }
            stage_start = 0;
        }
        w.commit_labels(ctx.cache);
        out.entries.push(w.take_entry());
    }

    /// Releases what holding stages have kept longer than their wait (all of it with `force`,
    /// at shutdown or before this set is replaced), running each released entry through the
    /// rest of the stages. Returns the output per source.
    /// Holders whose state `keep` shares (a successor set took it over) are left alone.
    fn flush_held(
        &self,
        force: bool,
        keep: Option<&PipelineSet>,
        ctx: &mut StageCtx<'_>,
    ) -> Vec<(Arc<str>, RunOutput)> {
        let kept: Vec<*const hold::Groups> =
            keep.map(|k| k.held_groups().map(Arc::as_ptr).collect()).unwrap_or_default();
        let mut outputs = Vec::new();
        for (pi, pipeline) in self.pipelines.iter().enumerate() {
            for (si, node) in pipeline.stages.iter().enumerate() {
                let holder: &dyn hold::Holding = match &node.stage {
                    Stage::Multiline(m) if !kept.contains(&Arc::as_ptr(&m.groups)) => m,
                    Stage::Cri(c) if !kept.contains(&Arc::as_ptr(&c.groups)) => c,
                    _ => continue,
                };
                for (source, mut released) in holder.take_expired(ctx.now, force) {
                    let mut out = RunOutput::default();
                    out.acks.append(&mut released.acks);
                    let mut w = Work::new(released.entry, Arc::clone(&source));
                    self.run_from(pi, si + 1, &mut w, ctx, &mut out, false);
                    out.acks.append(&mut ctx.extra_acks);
                    outputs.push((source, out));
                }
            }
        }
        outputs
    }
}

/// A worker's reusable state for running batches: its label cache and its working entry.
pub struct Runner {
    pub cache: LabelCache,
    work: Option<Work>,
}

impl Runner {
    pub fn new(cache: LabelCache) -> Self {
        Runner { cache, work: None }
    }

    /// Runs every entry of `batch` through `set`. The batch's acks stay with the caller.
    pub fn run_batch(&mut self, set: &PipelineSet, source: &Arc<str>, batch: &mut LogBatch, trace: bool) -> RunOutput {
        self.cache.refresh();
        let mut out = RunOutput { entries: Vec::with_capacity(batch.entries.len()), ..RunOutput::default() };
        let mut ctx = StageCtx {
            now: crate::event::now_nanos(),
            cache: &mut self.cache,
            throttle: Duration::ZERO,
            acks: &batch.acks,
            extra_acks: AckSet::new(),
        };
        if set.is_empty() {
            out.entries = std::mem::take(&mut batch.entries);
            return out;
        }
        let mut work = self.work.take();
        for entry in batch.entries.drain(..) {
            let w = match &mut work {
                Some(w) => {
                    w.reset(entry, source);
                    w
                }
                None => work.insert(Work::new(entry, Arc::clone(source))),
            };
            set.run_from(0, 0, w, &mut ctx, &mut out, trace);
        }
        out.throttle = ctx.throttle;
        out.acks.append(&mut ctx.extra_acks);
        self.work = work;
        out
    }

    /// Releases held entries (see [`PipelineSet::flush_held`]), with the output per source.
    /// State that `keep` took over is left alone.
    pub fn flush_held(
        &mut self,
        set: &PipelineSet,
        force: bool,
        keep: Option<&PipelineSet>,
    ) -> Vec<(Arc<str>, RunOutput)> {
        self.cache.refresh();
        let acks = AckSet::new();
        let mut ctx = StageCtx {
            now: crate::event::now_nanos(),
            cache: &mut self.cache,
            throttle: Duration::ZERO,
            acks: &acks,
            extra_acks: AckSet::new(),
        };
        set.flush_held(force, keep, &mut ctx)
    }
}
