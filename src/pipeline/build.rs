//! Building a [`PipelineSet`] from pipeline files: compiles every regex, selector, template,
//! JSON expression and time format, and reports every problem with its file, line and column.
//! Pure: no I/O.
//!
//! State carries over from the set being replaced: a stateful stage (`multiline`, `cri`,
//! `limit`, `metrics`) at the same place (pipeline name and stage path) with an equal config
//! reuses the previous stage's state.

use super::config_str::ConfigStr;
use super::envelope::{CriStage, DockerStage};
use super::extract::{JsonExpr, JsonStage, LogfmtStage, RegexStage, parse_json_path};
use super::filter::{DropCount, DropStage, LimitStage, MatchAction, MatchStage};
use super::hold::{Groups, MultilineStage};
use super::label_stages::*;
use super::metrics_stage::{Action, CustomMetric, MetricKind, MetricRule, MetricsStage};
use super::selector::Selector;
use super::template::Template;
use super::timestamp::{TimeFormat, TimestampStage};
use super::transform::{OutputStage, ReplaceStage, TemplateStage};
use super::{Dropped, Pipeline, PipelineSet, Stage, StageInfo, StageNode};
use crate::config::pipeline::{MetricConfig, StageConfig};
use crate::config::{ConfigError, ConfigErrors, Located, PipelineFile, Position};
use crate::event::labels::is_valid_name;
use crate::telemetry::metrics::{PipelineMetrics, PipelineStage, PipelineStageReason};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// State a stage can hand to its successor.
#[derive(Clone)]
pub(crate) enum StageState {
    Groups(Arc<Groups>),
    Limit(Arc<parking_lot::Mutex<HashMap<String, super::filter::Bucket>>>),
    Metrics(Vec<Arc<CustomMetric>>),
}

/// What building needs besides the files.
pub struct BuildContext<'a> {
    pub metrics: &'a PipelineMetrics,
    /// The set being replaced, whose state carries over.
    pub previous: Option<&'a PipelineSet>,
}

/// A pipeline file read from disk.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadedPipeline {
    pub path: PathBuf,
    pub file: PipelineFile,
}

impl LoadedPipeline {
    /// The pipeline's name: its `name`, or the file name without extension.
    pub fn name(&self) -> String {
        self.file.name.clone().unwrap_or_else(|| {
            self.path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "pipeline".into())
        })
    }
}

struct Builder<'a> {
    file: &'a Path,
    pipeline: Arc<str>,
    metrics: &'a PipelineMetrics,
    previous: HashMap<String, (StageConfig, StageState)>,
    errors: ConfigErrors,
    /// Every metric name defined so far in this set (names are global in `/metrics`).
    metric_names: &'a mut HashMap<String, PathBuf>,
    /// State of the stateful stages built, by stage path.
    states: HashMap<String, (StageConfig, StageState)>,
}

impl Builder<'_> {
    fn error(&mut self, position: Position, message: impl Into<String>) {
        self.errors.push(ConfigError::new(self.file, position, message));
    }

    fn info(&self, id: &str) -> StageInfo {
        let labels = PipelineStage { pipeline: self.pipeline.to_string(), stage: id.to_string() };
        StageInfo { id: Arc::from(id), errors: self.metrics.errors.get_or_create_owned(&labels) }
    }

    fn drop_count(&self, id: &str, reason: &str) -> DropCount {
        let labels = PipelineStageReason {
            pipeline: self.pipeline.to_string(),
            stage: id.to_string(),
            reason: reason.to_string(),
        };
        DropCount {
            dropped: Dropped { stage: Arc::from(id), reason: Arc::from(reason) },
            counter: self.metrics.dropped.get_or_create_owned(&labels),
        }
    }

    fn regex(&mut self, text: &Located<String>) -> Option<regex::bytes::Regex> {
        match regex::bytes::Regex::new(&text.value) {
            Ok(re) => Some(re),
            Err(e) => {
                self.error(text.position, format!("invalid regex `{}`: {}", text.value, first_line(&e.to_string())));
                None
            }
        }
    }

    fn template(&mut self, text: &Located<String>) -> Option<Template> {
        match Template::parse(&text.value) {
            Ok(t) => Some(t),
            Err(e) => {
                self.error(text.position, format!("invalid template: {e}"));
                None
            }
        }
    }

    /// `name`, after an error where it is not a valid label name.
    fn checked_label_name<'n>(&mut self, position: Position, name: &'n str) -> &'n str {
        if !is_valid_name(name) || name.starts_with("__") {
            self.error(
                position,
                format!("`{name}` is not a valid label name ([a-zA-Z_][a-zA-Z0-9_]*, not starting with __)"),
            );
        }
        name
    }

    fn label_name(&mut self, position: Position, name: &str) -> ConfigStr {
        ConfigStr::new(self.checked_label_name(position, name))
    }

    fn carried(&self, path: &str, config: &StageConfig) -> Option<StageState> {
        match self.previous.get(path) {
            Some((old, state)) if old == config => Some(state.clone()),
            _ => None,
        }
    }

    fn stages(&mut self, stages: &[Located<StageConfig>], prefix: &str, nested: bool) -> Vec<StageNode> {
        let mut out = Vec::new();
        for (index, located) in stages.iter().enumerate() {
            let config = &located.value;
            let position = located.position;
            let id = if prefix.is_empty() { config.name().to_string() } else { format!("{prefix}/{}", config.name()) };
            let path = format!("{prefix}#{index}:{}", config.name());
            let info = self.info(&id);
            let carried = self.carried(&path, config);
            let mut state = None;
            let stage = match config {
                StageConfig::Docker(_) => Some(Stage::Docker(DockerStage::default())),
                StageConfig::Cri(c) => {
                    if nested {
                        self.error(
                            position,
                            "`cri` joins partial lines and must be a top-level stage, not inside `match`",
                        );
                    }
                    let groups = match carried {
                        Some(StageState::Groups(g)) => g,
                        _ => Arc::default(),
                    };
                    state = Some(StageState::Groups(Arc::clone(&groups)));
                    let max_partial_lines = c.as_ref().and_then(|c| c.max_partial_lines).unwrap_or(100).max(1);
                    Some(Stage::Cri(CriStage::new(max_partial_lines, groups)))
                }
                StageConfig::Json(c) => {
                    let mut exprs = Vec::new();
                    for (name, expr) in &c.expressions {
                        let (text, at) = match expr {
                            Some(e) => (e.value.as_str(), e.position),
                            None => (name.as_str(), position),
                        };
                        match parse_json_path(text) {
                            Ok(path) => exprs.push(JsonExpr { name: ConfigStr::new(name), path }),
                            Err(e) => self.error(at, format!("json: {e}")),
                        }
                    }
                    let drop_malformed = c.drop_malformed.then(|| {
                        let count = self.drop_count(&id, "malformed_json");
                        (count.dropped, count.counter)
                    });
                    Some(Stage::Json(JsonStage::new(c.source.clone(), exprs, drop_malformed)))
                }
                StageConfig::Logfmt(c) => Some(Stage::Logfmt(LogfmtStage {
                    source: c.source.clone(),
                    mapping: c
                        .mapping
                        .iter()
                        .map(|(n, k)| (ConfigStr::new(n), k.clone().unwrap_or_else(|| n.clone())))
                        .collect(),
                })),
                StageConfig::Regex(c) => self.regex(&c.expression).map(|regex| {
                    let names = named_groups(&regex);
                    if names.is_empty() {
                        self.error(
                            c.expression.position,
                            "regex: the expression has no named capture group (?P<name>...), so it extracts nothing",
                        );
                    }
                    Stage::Regex(RegexStage { source: c.source.clone(), regex, names })
                }),
                StageConfig::Labels(map) => {
                    let pairs = map
                        .iter()
                        .map(|(l, s)| (self.label_name(position, l), s.clone().unwrap_or_else(|| l.clone())))
                        .collect();
                    Some(Stage::Labels(LabelsStage { pairs }))
                }
                StageConfig::StaticLabels(map) => {
                    let pairs = map
                        .iter()
                        .filter_map(|(l, v)| v.as_ref().map(|v| (l, v)))
                        .map(|(l, v)| (self.label_name(position, l), ConfigStr::new(v)))
                        .collect();
                    Some(Stage::StaticLabels(StaticLabelsStage { pairs }))
                }
                StageConfig::Labeldrop(names) => {
                    Some(Stage::Labeldrop(LabeldropStage { names: names.iter().map(|n| ConfigStr::new(n)).collect() }))
                }
                StageConfig::Labelallow(names) => Some(Stage::Labelallow(LabelallowStage {
                    names: names.iter().map(|n| Arc::from(n.as_str())).collect::<Vec<_>>().into(),
                })),
                StageConfig::StructuredMetadata(map) => {
                    let pairs = map
                        .iter()
                        .map(|(n, s)| {
                            (Arc::from(self.checked_label_name(position, n)), s.clone().unwrap_or_else(|| n.clone()))
                        })
                        .collect();
                    Some(Stage::StructuredMetadata(StructuredMetadataStage { pairs }))
                }
                StageConfig::Timestamp(c) => {
                    let mut formats = Vec::new();
                    for f in std::iter::once(&c.format).chain(&c.fallback_formats) {
                        match TimeFormat::compile(&f.value) {
                            Ok(t) => formats.push(t),
                            Err(e) => self.error(f.position, format!("timestamp: {e}")),
                        }
                    }
                    let location = c.location.as_ref().and_then(|l| match jiff::tz::TimeZone::get(&l.value) {
                        Ok(tz) => Some(tz),
                        Err(_) => {
                            self.error(
                                l.position,
                                format!(
                                    "timestamp: unknown time zone `{}` (use an IANA name such as Europe/Paris)",
                                    l.value
                                ),
                            );
                            None
                        }
                    });
                    let fudge = match c.action_on_failure.as_ref().map(|a| (a.value.as_str(), a.position)) {
                        None | Some(("fudge", _)) => true,
                        Some(("skip", _)) => false,
                        Some((other, at)) => {
                            self.error(at, format!("timestamp: action_on_failure `{other}` is not `fudge` or `skip`"));
                            true
                        }
                    };
                    Some(Stage::Timestamp(TimestampStage { source: c.source.clone(), formats, location, fudge }))
                }
                StageConfig::Output(c) => Some(Stage::Output(OutputStage { source: c.source.clone() })),
                StageConfig::Drop(c) => {
                    let expression = c.expression.as_ref().and_then(|e| self.regex(e));
                    let sources = c.source.as_ref().map(|s| s.0.clone()).unwrap_or_default();
                    if c.value.is_some() && sources.is_empty() {
                        self.error(position, "drop: `value` needs a `source`");
                    }
                    if c.value.is_some() && c.expression.is_some() {
                        self.error(position, "drop: `value` and `expression` cannot be used together");
                    }
                    let reason = c.drop_counter_reason.clone().unwrap_or_else(|| "drop_stage".into());
                    Some(Stage::Drop(DropStage {
                        sources,
                        separator: c.separator.clone().unwrap_or_else(|| ";".into()),
                        value: c.value.clone(),
                        expression,
                        older_than: c.older_than.map(Duration::from),
                        longer_than: c.longer_than.map(|b| b.as_usize()),
                        count: self.drop_count(&id, &reason),
                    }))
                }
                StageConfig::Match(c) => {
                    let selector = match Selector::parse(&c.selector.value) {
                        Ok(s) => Some(s),
                        Err(e) => {
                            self.error(c.selector.position, format!("match: {e} in `{}`", c.selector.value));
                            None
                        }
                    };
                    let action = match c.action.as_ref().map(|a| (a.value.as_str(), a.position)) {
                        None | Some(("keep", _)) => {
                            if c.stages.is_empty() {
                                self.error(position, "match: `action: keep` needs `stages`");
                            }
                            let nested_prefix = c.pipeline_name.clone().unwrap_or_else(|| id.clone());
                            MatchAction::Keep(self.stages(&c.stages, &nested_prefix, true))
                        }
                        Some(("drop", _)) => {
                            if !c.stages.is_empty() {
                                self.error(position, "match: `action: drop` takes no `stages`");
                            }
                            MatchAction::Drop(
                                self.drop_count(&id, c.drop_counter_reason.as_deref().unwrap_or("match_stage")),
                            )
                        }
                        Some((other, at)) => {
                            self.error(at, format!("match: action `{other}` is not `keep` or `drop`"));
                            MatchAction::Keep(Vec::new())
                        }
                    };
                    selector.map(|selector| Stage::Match(MatchStage { selector, action }))
                }
                StageConfig::Replace(c) => {
                    let regex = self.regex(&c.expression);
                    let template = self.template(&c.replace);
                    regex.zip(template).map(|(regex, template)| {
                        let names = named_groups(&regex);
                        Stage::Replace(ReplaceStage {
                            source: c.source.as_deref().map(ConfigStr::new),
                            regex,
                            template,
                            names,
                        })
                    })
                }
                StageConfig::Limit(c) => {
                    if !(c.rate > 0.0 && c.rate.is_finite()) {
                        self.error(position, "limit: `rate` must be a positive number of entries per second");
                    }
                    let drop = c.drop.then(|| self.drop_count(&id, "limit"));
                    let mut stage = LimitStage::new(
                        c.rate,
                        c.burst,
                        c.by_label_name.clone(),
                        c.max_distinct_labels.unwrap_or(10_000),
                        drop,
                    );
                    if let Some(StageState::Limit(buckets)) = carried {
                        stage.buckets = buckets;
                    }
                    state = Some(StageState::Limit(Arc::clone(&stage.buckets)));
                    Some(Stage::Limit(stage))
                }
                StageConfig::Multiline(c) => {
                    if nested {
                        self.error(
                            position,
                            "`multiline` holds lines and must be a top-level stage, not inside `match`",
                        );
                    }
                    let groups = match carried {
                        Some(StageState::Groups(g)) => g,
                        _ => Arc::default(),
                    };
                    state = Some(StageState::Groups(Arc::clone(&groups)));
                    self.regex(&c.firstline).map(|firstline| {
                        Stage::Multiline(MultilineStage {
                            firstline,
                            max_wait_nanos: c.max_wait_time.map_or(3_000_000_000, |d| d.0.as_nanos() as i64),
                            max_lines: c.max_lines.unwrap_or(128).max(1),
                            groups,
                        })
                    })
                }
                StageConfig::Template(c) => self
                    .template(&c.template)
                    .map(|template| Stage::Template(TemplateStage { source: ConfigStr::new(&c.source), template })),
                StageConfig::Metrics(map) => {
                    let carried_metrics = match carried {
                        Some(StageState::Metrics(m)) => m,
                        _ => Vec::new(),
                    };
                    let mut rules = Vec::new();
                    for (name, metric) in map {
                        if let Some(rule) = self.metric_rule(name, metric, &carried_metrics) {
                            rules.push(rule);
                        }
                    }
                    state = Some(StageState::Metrics(rules.iter().map(|r| Arc::clone(&r.metric)).collect()));
                    Some(Stage::Metrics(MetricsStage { rules, info: info.clone() }))
                }
            };
            if let Some(state) = state {
                self.states.insert(path, (config.clone(), state));
            }
            if let Some(stage) = stage {
                out.push(StageNode { info, stage });
            }
        }
        out
    }

    fn metric_rule(
        &mut self,
        name: &str,
        located: &Located<MetricConfig>,
        carried: &[Arc<CustomMetric>],
    ) -> Option<MetricRule> {
        let m = &located.value;
        let kind = match m.kind.value.to_ascii_lowercase().as_str() {
            "counter" => MetricKind::Counter,
            "gauge" => MetricKind::Gauge,
            "histogram" => {
                let buckets = m
                    .config
                    .buckets
                    .clone()
                    .unwrap_or_else(|| vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]);
                if buckets.windows(2).any(|w| w[0] >= w[1]) {
                    self.error(located.position, format!("metrics: `{name}`: buckets must increase"));
                }
                MetricKind::Histogram(buckets)
            }
            other => {
                self.error(
                    m.kind.position,
                    format!("metrics: `{name}`: type `{other}` is not Counter, Gauge or Histogram"),
                );
                return None;
            }
        };
        let action = match Action::parse(&kind, m.config.action.as_ref().map(|a| a.value.as_str())) {
            Ok(a) => a,
            Err(e) => {
                let at = m.config.action.as_ref().map_or(located.position, |a| a.position);
                self.error(at, format!("metrics: `{name}`: {e}"));
                return None;
            }
        };
        let prefix = m.prefix.clone().unwrap_or_else(|| "sluice_custom_".into());
        let mut full = format!("{prefix}{name}");
        if kind == MetricKind::Counter {
            // The exposition adds `_total` to counters.
            if let Some(stripped) = full.strip_suffix("_total") {
                full = stripped.to_string();
            }
        }
        if !is_valid_name(&full) {
            self.error(located.position, format!("metrics: `{full}` is not a valid metric name"));
            return None;
        }
        if let Some(other) = self.metric_names.insert(full.clone(), self.file.to_path_buf()) {
            self.error(located.position, format!("metrics: `{full}` is already defined (in {})", other.display()));
            return None;
        }
        let match_all = m.config.match_all.unwrap_or(false);
        if m.config.count_entry_bytes.unwrap_or(false) && !match_all {
            self.error(located.position, format!("metrics: `{name}`: count_entry_bytes needs match_all: true"));
        }
        let help = m.description.clone().unwrap_or_else(|| format!("{name} (from pipeline {})", self.pipeline));
        let max_idle = m.max_idle_duration.map_or(Duration::from_secs(300), Duration::from);
        let fresh = CustomMetric::new(full.clone(), help, kind, max_idle);
        let metric = carried
            .iter()
            .find(|c| c.name == full && c.kind() == fresh.kind())
            .cloned()
            .unwrap_or_else(|| Arc::new(fresh));
        Some(MetricRule {
            metric,
            source: m.source.clone().unwrap_or_else(|| name.to_string()),
            value: m.config.value.clone(),
            action,
            match_all,
            count_entry_bytes: m.config.count_entry_bytes.unwrap_or(false),
        })
    }
}

fn first_line(s: &str) -> String {
    s.lines().rfind(|l| !l.trim().is_empty()).unwrap_or(s).trim().to_string()
}

fn named_groups(re: &regex::bytes::Regex) -> Vec<(usize, ConfigStr)> {
    re.capture_names().enumerate().filter_map(|(i, n)| n.map(|n| (i, ConfigStr::new(n)))).collect()
}

/// Builds the set from pipeline files (in the order given: callers sort by file name).
pub fn build_set(files: &[LoadedPipeline], ctx: &BuildContext<'_>) -> Result<PipelineSet, ConfigErrors> {
    let mut errors = ConfigErrors::default();
    let mut pipelines = Vec::new();
    let mut metric_names = HashMap::new();
    let mut names: HashMap<String, PathBuf> = HashMap::new();
    for loaded in files {
        let name = loaded.name();
        if let Some(other) = names.insert(name.clone(), loaded.path.clone()) {
            errors.push(ConfigError::new(
                &loaded.path,
                Position::START,
                format!("pipeline name `{name}` is also used by {}", other.display()),
            ));
        }
        let previous = ctx
            .previous
            .and_then(|set| set.pipelines.iter().find(|p| *p.name == *name))
            .map(|p| p.states.clone())
            .unwrap_or_default();
        let mut builder = Builder {
            file: &loaded.path,
            pipeline: Arc::from(name.as_str()),
            metrics: ctx.metrics,
            previous,
            errors: ConfigErrors::default(),
            metric_names: &mut metric_names,
            states: HashMap::new(),
        };
        let selector = loaded.file.selection.selector.as_ref().and_then(|s| match Selector::parse(&s.value) {
            Ok(sel) => Some(sel),
            Err(e) => {
                builder.error(s.position, format!("match.selector: {e} in `{}`", s.value));
                None
            }
        });
        let stages = builder.stages(&loaded.file.stages, "", false);
        let states = std::mem::take(&mut builder.states);
        errors.extend(builder.errors);
        pipelines.push(Pipeline {
            name: Arc::from(name.as_str()),
            sources: loaded.file.selection.sources.clone(),
            selector,
            stages,
            states,
        });
    }
    errors.into_result(PipelineSet { pipelines })
}
