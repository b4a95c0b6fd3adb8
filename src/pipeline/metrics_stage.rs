//! `metrics`: counters, gauges and histograms computed from entries, served on `/metrics`.
//!
//! As in Promtail, a metric's series are labelled with the entry's labels at that stage, and a
//! series that was not updated for `max_idle_duration` (default 5 minutes) disappears. Metrics
//! belong to the pipeline set that defined them: the [`CustomMetrics`] collector serves the
//! metrics of the set in force, so a metric removed from the config disappears from `/metrics`
//! after a reload, and one whose definition did not change keeps its values.

use super::work::Work;
use super::{Flow, StageInfo};
use crate::event::labels::hash_pairs;
use arc_swap::ArcSwap;
use parking_lot::Mutex;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelKey, EncodeLabelSet, EncodeLabelValue, LabelSetEncoder,
};
use prometheus_client::metrics::MetricType;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, PartialEq)]
pub enum MetricKind {
    Counter,
    Gauge,
    Histogram(Vec<f64>),
}

#[derive(Debug)]
struct Series {
    labels: Vec<(String, String)>,
    value: f64,
    /// Per-bucket counts (histograms).
    buckets: Vec<u64>,
    count: u64,
    last_update: Instant,
}

/// One metric defined by a `metrics` stage, with its series.
#[derive(Debug)]
pub struct CustomMetric {
    pub name: String,
    help: String,
    kind: MetricKind,
    max_idle: Duration,
    series: Mutex<HashMap<u64, Vec<Series>>>,
}

impl CustomMetric {
    pub fn new(name: String, help: String, kind: MetricKind, max_idle: Duration) -> Self {
        CustomMetric { name, help, kind, max_idle, series: Mutex::new(HashMap::new()) }
    }

    pub fn kind(&self) -> &MetricKind {
        &self.kind
    }

    fn update(&self, labels: &[(&str, &str)], f: impl FnOnce(&mut Series, &MetricKind)) {
        let hash = hash_pairs(labels.iter().copied());
        let mut series = self.series.lock();
        let bucket = series.entry(hash).or_default();
        let index = match bucket
            .iter()
            .position(|s| s.labels.iter().map(|(n, v)| (n.as_str(), v.as_str())).eq(labels.iter().copied()))
        {
            Some(i) => i,
            None => {
                let buckets = match &self.kind {
                    MetricKind::Histogram(b) => vec![0; b.len() + 1],
                    _ => Vec::new(),
                };
                let labels = labels.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect();
                bucket.push(Series { labels, value: 0.0, buckets, count: 0, last_update: Instant::now() });
                bucket.len() - 1
            }
        };
        let s = &mut bucket[index];
        s.last_update = Instant::now();
        f(s, &self.kind);
    }

    /// Current value of the series with these labels, sorted by name (for tests and `sluice test`).
    pub fn value(&self, labels: &[(&str, &str)]) -> Option<f64> {
        let hash = hash_pairs(labels.iter().copied());
        let series = self.series.lock();
        series
            .get(&hash)?
            .iter()
            .find(|s| s.labels.iter().map(|(n, v)| (n.as_str(), v.as_str())).eq(labels.iter().copied()))
            .map(|s| s.value)
    }
}

/// How a rule changes its metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    Inc,
    Add,
    Set,
    Dec,
    Sub,
    Observe,
}

impl Action {
    pub fn parse(kind: &MetricKind, action: Option<&str>) -> Result<Action, String> {
        let allowed: &[(&str, Action)] = match kind {
            MetricKind::Counter => &[("inc", Action::Inc), ("add", Action::Add)],
            MetricKind::Gauge => &[
                ("set", Action::Set),
                ("inc", Action::Inc),
                ("dec", Action::Dec),
                ("add", Action::Add),
                ("sub", Action::Sub),
            ],
            MetricKind::Histogram(_) => return Ok(Action::Observe),
        };
        let Some(action) = action else {
            return match kind {
                MetricKind::Counter => Ok(Action::Inc),
                _ => Err("a gauge needs an `action` (set, inc, dec, add, sub)".into()),
            };
        };
        allowed.iter().find(|(name, _)| name.eq_ignore_ascii_case(action)).map(|(_, a)| *a).ok_or_else(|| {
            format!(
                "`{action}` is not an action for this metric (use {})",
                allowed.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
            )
        })
    }
}

/// One metric's rule in a `metrics` stage.
pub(crate) struct MetricRule {
    pub metric: Arc<CustomMetric>,
    pub source: String,
    pub value: Option<String>,
    pub action: Action,
    pub match_all: bool,
    pub count_entry_bytes: bool,
}

pub(crate) struct MetricsStage {
    pub rules: Vec<MetricRule>,
    pub info: StageInfo,
}

impl MetricsStage {
    pub fn apply(&self, w: &mut Work) -> Flow {
        let mut labels = w.current_labels();
        // Labels set by stages come after the entry's own: sort them, so that a label set has
        // one series whatever order its labels were set in. Empty values mean no label.
        labels.retain(|(_, v)| !v.is_empty());
        labels.sort_unstable_by(|a, b| a.0.cmp(b.0));
        for rule in &self.rules {
            let amount = if rule.match_all {
                if rule.count_entry_bytes { w.entry.line.len() as f64 } else { 1.0 }
            } else {
                let Some(value) = w.extracted(&rule.source) else {
                    continue;
                };
                if let Some(wanted) = &rule.value
                    && value != wanted.as_bytes()
                {
                    continue;
                }
                match rule.action {
                    Action::Inc | Action::Dec => 1.0,
                    _ => match std::str::from_utf8(value).ok().and_then(metric_value) {
                        Some(v) => v,
                        None => {
                            self.info.error(|| format!("`{}` is not a number", String::from_utf8_lossy(value)));
                            continue;
                        }
                    },
                }
            };
            rule.metric.update(&labels, |s, kind| match (rule.action, kind) {
                (Action::Observe, MetricKind::Histogram(bounds)) => {
                    let i = bounds.iter().position(|b| amount <= *b).unwrap_or(bounds.len());
                    s.buckets[i] += 1;
                    s.count += 1;
                    s.value += amount;
                }
                (Action::Inc | Action::Add, MetricKind::Counter) if amount < 0.0 => {}
                (Action::Inc | Action::Add, _) => s.value += amount,
                (Action::Dec | Action::Sub, _) => s.value -= amount,
                (Action::Set, _) => s.value = amount,
                (Action::Observe, _) => {}
            });
        }
        Flow::Continue
    }
}

/// An extracted value as Promtail reads it for a metric: a number, a Go duration (as seconds)
/// or a boolean (1 or 0).
fn metric_value(text: &str) -> Option<f64> {
    match text.trim() {
        "true" => Some(1.0),
        "false" => Some(0.0),
        t => t.parse::<f64>().ok().or_else(|| crate::config::duration::parse_duration(t).ok().map(|d| d.as_secs_f64())),
    }
}

struct Pairs<'a>(&'a [(String, String)]);

impl EncodeLabelSet for Pairs<'_> {
    fn encode(&self, encoder: &mut LabelSetEncoder<'_>) -> Result<(), std::fmt::Error> {
        for (name, value) in self.0 {
            let mut label = encoder.encode_label();
            let mut key = label.encode_label_key()?;
            EncodeLabelKey::encode(name, &mut key)?;
            let mut value_encoder = key.encode_label_value()?;
            EncodeLabelValue::encode(value, &mut value_encoder)?;
            value_encoder.finish()?;
        }
        Ok(())
    }
}

/// Serves the custom metrics of the pipeline set in force.
#[derive(Debug, Default)]
pub struct CustomMetrics {
    current: ArcSwap<Vec<Arc<CustomMetric>>>,
}

impl CustomMetrics {
    pub fn set(&self, metrics: Vec<Arc<CustomMetric>>) {
        self.current.store(Arc::new(metrics));
    }
}

impl Collector for CustomMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let now = Instant::now();
        for metric in self.current.load().iter() {
            let metric_type = match metric.kind {
                MetricKind::Counter => MetricType::Counter,
                MetricKind::Gauge => MetricType::Gauge,
                MetricKind::Histogram(_) => MetricType::Histogram,
            };
            let mut series = metric.series.lock();
            series.retain(|_, bucket| {
                bucket.retain(|s| now.duration_since(s.last_update) < metric.max_idle);
                !bucket.is_empty()
            });
            if series.is_empty() {
                continue;
            }
            let mut family = encoder.encode_descriptor(&metric.name, &metric.help, None, metric_type)?;
            for s in series.values().flatten() {
                let labels = Pairs(&s.labels);
                let mut m = family.encode_family(&labels)?;
                match &metric.kind {
                    MetricKind::Counter => {
                        m.encode_counter::<prometheus_client::encoding::NoLabelSet, _, f64>(&s.value, None)?
                    }
                    MetricKind::Gauge => m.encode_gauge(&s.value)?,
                    MetricKind::Histogram(bounds) => {
                        let mut buckets: Vec<(f64, u64)> =
                            bounds.iter().copied().zip(s.buckets.iter().copied()).collect();
                        buckets.push((f64::INFINITY, s.buckets.last().copied().unwrap_or(0)));
                        m.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                            s.value, s.count, &buckets, None,
                        )?;
                    }
                }
            }
        }
        Ok(())
    }
}
