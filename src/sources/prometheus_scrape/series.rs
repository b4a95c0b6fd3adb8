//! A target's series cache: from a series as written in the exposition to the [`Series`] sent
//! to the sinks, and the bookkeeping for stale markers.
//!
//! Contract:
//! - The first time a series text is seen, its labels are built once: the scraped labels, the
//!   target's labels merged in (`honor_labels`: the scraped value wins; otherwise the target's
//!   wins and the scraped one is kept as `exported_<name>`), then `metric_relabel_configs`. The
//!   result (or the fact that relabeling dropped it) is cached by the text; later scrapes cost a
//!   hash lookup and a reference count per sample.
//! - Two texts that end up as the same series share one slot, so a series is sent at most once
//!   per scrape; a second sample of it is a duplicate ([`Lookup::Duplicate`]), counted by the
//!   caller.
//! - Staleness as in Prometheus: a series sent by the previous successful scrape (without an
//!   explicit timestamp) and absent from this one gets a stale marker at this scrape's time; a
//!   failed scrape marks every series of the previous one stale; [`SeriesCache::end_of_target`]
//!   marks them all when the target goes away.
//! - Entries not seen in the last two scrapes are evicted, so the cache follows the exposition.

use super::parse::{SampleRef, is_label_name};
use crate::event::samples::{Sample, Series, stale_nan};
use crate::relabel::Relabeler;
use std::collections::HashMap;
use std::sync::Arc;

/// Why a scraped series cannot be sent; the scrape fails, as in Prometheus.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SeriesError {
    #[error("line {line}: label `{name}` appears twice in `{series}`")]
    DuplicateLabel { line: usize, name: String, series: String },
    #[error("line {line}: metric_relabel_configs left `{series}` without a metric name")]
    NoName { line: usize, series: String },
    #[error("line {line}: metric_relabel_configs made the invalid label name `{name}` for `{series}`")]
    InvalidLabelName { line: usize, name: String, series: String },
}

/// What became of a scraped sample's series.
#[derive(Debug, Clone, PartialEq)]
pub enum Lookup {
    Send(Arc<Series>),
    /// Dropped by `metric_relabel_configs`.
    Dropped,
    /// The series was already sent by this scrape.
    Duplicate,
}

#[derive(Debug)]
struct Slot {
    /// `None`: dropped by relabeling.
    series: Option<Arc<Series>>,
    last_seen: u64,
}

type FastMap<K, V> = HashMap<K, V, foldhash::fast::FixedState>;

pub struct SeriesCache {
    target_labels: Vec<(String, String)>,
    honor_labels: bool,
    relabel: Arc<Relabeler>,
    by_text: FastMap<Box<str>, u32>,
    by_hash: FastMap<u64, u32>,
    slots: Vec<Slot>,
    iteration: u64,
    /// Slots sent (without explicit timestamps) by the previous successful scrape, and by this one.
    previous: Vec<u32>,
    current: Vec<u32>,
    /// Slots created by this scrape.
    added: usize,
}

impl SeriesCache {
    /// `target_labels`: `job`, `instance` and the static labels of the target.
    pub fn new(target_labels: Vec<(String, String)>, honor_labels: bool, relabel: Arc<Relabeler>) -> SeriesCache {
        SeriesCache {
            target_labels,
            honor_labels,
            relabel,
            by_text: FastMap::default(),
            by_hash: FastMap::default(),
            slots: Vec::new(),
            iteration: 0,
            previous: Vec::new(),
            current: Vec::new(),
            added: 0,
        }
    }

    /// Starts a scrape.
    pub fn begin(&mut self) {
        self.iteration += 1;
        self.current.clear();
        self.added = 0;
    }

    /// Series created by this scrape (`scrape_series_added`).
    pub fn added(&self) -> usize {
        self.added
    }

    /// Distinct series held.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The series of a scraped sample.
    pub fn lookup(&mut self, sample: &SampleRef<'_>) -> Result<Lookup, SeriesError> {
        let slot = match self.by_text.get(sample.series) {
            Some(&slot) => slot,
            None => {
                let slot = self.insert(sample)?;
                self.by_text.insert(Box::from(sample.series), slot);
                slot
            }
        };
        let entry = &mut self.slots[slot as usize];
        if entry.last_seen == self.iteration {
            return Ok(Lookup::Duplicate);
        }
        entry.last_seen = self.iteration;
        if sample.timestamp_ms.is_none() {
            self.current.push(slot);
        }
        Ok(match &entry.series {
            Some(series) => Lookup::Send(Arc::clone(series)),
            None => Lookup::Dropped,
        })
    }

    /// Builds the series of a text not seen before and finds or makes its slot.
    fn insert(&mut self, sample: &SampleRef<'_>) -> Result<u32, SeriesError> {
        let mut labels: Vec<(String, String)> = Vec::with_capacity(self.target_labels.len() + 8);
        labels.push(("__name__".to_string(), sample.name.to_string()));
        for (name, value) in sample.labels() {
            if labels.iter().any(|(n, _)| n == name) {
                return Err(SeriesError::DuplicateLabel {
                    line: sample.line,
                    name: name.to_string(),
                    series: sample.series.to_string(),
                });
            }
            labels.push((name.to_string(), value.into_owned()));
        }
        // An empty label is an absent label.
        labels.retain(|(_, v)| !v.is_empty());
        for (name, value) in &self.target_labels {
            let existing = labels.iter().position(|(n, _)| n == name);
            match existing {
                Some(_) if self.honor_labels => {}
                Some(i) => {
                    let mut exported = format!("exported_{name}");
                    while labels.iter().any(|(n, _)| *n == exported) {
                        exported.insert_str(0, "exported_");
                    }
                    labels[i].0 = exported;
                    labels.push((name.clone(), value.clone()));
                }
                None => labels.push((name.clone(), value.clone())),
            }
        }
        let labels = if self.relabel.is_empty() { Some(labels) } else { self.relabel.apply(labels) };
        let series = match labels {
            None => None,
            Some(labels) => {
                if let Some((bad, _)) = labels.iter().find(|(n, _)| !is_label_name(n)) {
                    return Err(SeriesError::InvalidLabelName {
                        line: sample.line,
                        name: bad.clone(),
                        series: sample.series.to_string(),
                    });
                }
                match Series::new(labels.iter().map(|(n, v)| (n.as_str(), v.as_str()))) {
                    Ok(series) => Some(series),
                    Err(crate::event::samples::SeriesError::DuplicateName(name)) => {
                        return Err(SeriesError::DuplicateLabel {
                            line: sample.line,
                            name,
                            series: sample.series.to_string(),
                        });
                    }
                    Err(_) => return Err(SeriesError::NoName { line: sample.line, series: sample.series.to_string() }),
                }
            }
        };
        if let Some(series) = &series
            && let Some(&slot) = self.by_hash.get(&series.hash())
            && self.slots[slot as usize].series.as_deref() == Some(series)
        {
            return Ok(slot);
        }
        let slot = u32::try_from(self.slots.len()).unwrap_or(u32::MAX);
        if let Some(series) = &series {
            self.by_hash.insert(series.hash(), slot);
        }
        self.slots.push(Slot { series: series.map(Arc::new), last_seen: 0 });
        self.added += 1;
        Ok(slot)
    }

    /// Ends a successful scrape at `timestamp_ms`: stale markers for the series of the previous
    /// scrape that this one did not send.
    pub fn end_success(&mut self, timestamp_ms: i64, out: &mut Vec<Sample>) {
        for &slot in &self.previous {
            let entry = &self.slots[slot as usize];
            if entry.last_seen != self.iteration
                && let Some(series) = &entry.series
            {
                out.push(Sample { series: Arc::clone(series), timestamp_ms, value: stale_nan() });
            }
        }
        std::mem::swap(&mut self.previous, &mut self.current);
        self.current.clear();
        self.evict();
    }

    /// Ends a failed scrape: every series of the previous scrape is stale.
    pub fn end_failure(&mut self, timestamp_ms: i64, out: &mut Vec<Sample>) {
        self.end_of_target(timestamp_ms, out);
        self.current.clear();
    }

    /// The target is gone: every series of the last scrape is stale.
    pub fn end_of_target(&mut self, timestamp_ms: i64, out: &mut Vec<Sample>) {
        for &slot in &self.previous {
            if let Some(series) = &self.slots[slot as usize].series {
                out.push(Sample { series: Arc::clone(series), timestamp_ms, value: stale_nan() });
            }
        }
        self.previous.clear();
    }

    /// Forgets slots not seen in this scrape or the one before, when they are many.
    fn evict(&mut self) {
        let keep_after = self.iteration.saturating_sub(2);
        let stale = self.slots.iter().filter(|s| s.last_seen <= keep_after).count();
        if stale < 64 || stale * 2 < self.slots.len() {
            return;
        }
        let mut remap = vec![u32::MAX; self.slots.len()];
        let mut kept = Vec::with_capacity(self.slots.len() - stale);
        for (old, slot) in std::mem::take(&mut self.slots).into_iter().enumerate() {
            if slot.last_seen > keep_after {
                remap[old] = kept.len() as u32;
                kept.push(slot);
            }
        }
        self.slots = kept;
        let map = |slot: &mut u32| {
            *slot = remap[*slot as usize];
            *slot != u32::MAX
        };
        self.by_text.retain(|_, slot| map(slot));
        self.by_hash.retain(|_, slot| map(slot));
        self.previous.retain_mut(|slot| map(slot));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Located, parse_yaml_expanded};
    use crate::event::samples::is_stale_nan;
    use crate::relabel::RelabelConfig;
    use crate::sources::prometheus_scrape::parse::{Format, Limits, ParseState, Parser};

    fn target() -> Vec<(String, String)> {
        [("instance", "gpu-node:9835"), ("job", "gpu"), ("zone", "b")]
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    fn relabel(yaml: &str) -> Arc<Relabeler> {
        let rules: Vec<Located<RelabelConfig>> = parse_yaml_expanded(std::path::Path::new("r"), yaml).unwrap();
        Arc::new(Relabeler::compile(&rules).unwrap())
    }

    /// One scrape of `body`: the samples sent, in order, as (series, value).
    fn scrape(cache: &mut SeriesCache, body: &str, ts: i64) -> Result<Vec<(String, f64)>, String> {
        let mut state = ParseState::default();
        let mut parser = Parser::new(body.as_bytes(), Format::Text, Limits::default(), &mut state).unwrap();
        cache.begin();
        let mut out = Vec::new();
        let mut failed = None;
        while let Some(s) = parser.next_sample().unwrap() {
            match cache.lookup(&s) {
                Ok(Lookup::Send(series)) => out.push(Sample { series, timestamp_ms: ts, value: s.value }),
                Ok(Lookup::Dropped) => {}
                Ok(Lookup::Duplicate) => out.push(Sample {
                    series: Arc::new(Series::new([("__name__", "DUPLICATE")]).unwrap()),
                    timestamp_ms: ts,
                    value: 0.0,
                }),
                Err(e) => {
                    failed = Some(e.to_string());
                    break;
                }
            }
        }
        if let Some(e) = failed {
            out.clear();
            cache.end_failure(ts, &mut out);
            let stale: Vec<(String, f64)> = out.iter().map(|s| (format!("{:?}", s.series), s.value)).collect();
            return Err(format!("{e}; stale: {stale:?}"));
        }
        cache.end_success(ts, &mut out);
        Ok(out
            .iter()
            .map(|s| {
                assert!(s.timestamp_ms == ts);
                (format!("{:?}", s.series), if is_stale_nan(s.value) { -999.0 } else { s.value })
            })
            .collect())
    }

    #[test]
    fn target_labels_win_unless_honor_labels() {
        let body = "m{job=\"exporter\",uuid=\"GPU-1\"} 1\n";
        let mut cache = SeriesCache::new(target(), false, Arc::default());
        assert_eq!(
            scrape(&mut cache, body, 1000).unwrap(),
            [(r#"{__name__="m", exported_job="exporter", instance="gpu-node:9835", job="gpu", uuid="GPU-1", zone="b"}"#.into(), 1.0)]
        );
        let mut cache = SeriesCache::new(target(), true, Arc::default());
        assert_eq!(
            scrape(&mut cache, body, 1000).unwrap(),
            [(r#"{__name__="m", instance="gpu-node:9835", job="exporter", uuid="GPU-1", zone="b"}"#.into(), 1.0)]
        );
    }

    #[test]
    fn metric_relabeling_keeps_drops_replaces_and_filters_labels() {
        let rules = relabel(
            r#"
- source_labels: [__name__]
  regex: 'nvidia_smi_(utilization_gpu_ratio|memory_.*|temperature_gpu|gpu_info)'
  action: keep
- source_labels: [__name__]
  regex: nvidia_smi_memory_free_bytes
  action: drop
- source_labels: [uuid]
  regex: 'GPU-(.*)'
  target_label: gpu
  replacement: '$1'
- action: labeldrop
  regex: zone
- action: labelkeep
  regex: '__name__|job|instance|gpu|name'
"#,
        );
        let mut cache = SeriesCache::new(target(), false, rules);
        let body = "nvidia_smi_temperature_gpu{uuid=\"GPU-7\"} 59\nnvidia_smi_memory_free_bytes{uuid=\"GPU-7\"} 1\n\
                    nvidia_smi_fan_speed_ratio{uuid=\"GPU-7\"} 0.3\nnvidia_smi_gpu_info{uuid=\"GPU-7\",name=\"H100\"} 1\n";
        assert_eq!(
            scrape(&mut cache, body, 1).unwrap(),
            [
                (
                    r#"{__name__="nvidia_smi_temperature_gpu", gpu="7", instance="gpu-node:9835", job="gpu"}"#.into(),
                    59.0
                ),
                (
                    r#"{__name__="nvidia_smi_gpu_info", gpu="7", instance="gpu-node:9835", job="gpu", name="H100"}"#
                        .into(),
                    1.0
                ),
            ]
        );
    }

    #[test]
    fn vanished_series_and_failed_scrapes_get_stale_markers() {
        let mut cache = SeriesCache::new(target(), false, Arc::default());
        let a = r#"{__name__="a", instance="gpu-node:9835", job="gpu", zone="b"}"#.to_string();
        let b = r#"{__name__="b", instance="gpu-node:9835", job="gpu", zone="b"}"#.to_string();
        assert_eq!(scrape(&mut cache, "a 1\nb 2\nc 3 1000\n", 1).unwrap().len(), 3);
        // b vanished; c has an explicit timestamp and is never marked stale.
        assert_eq!(scrape(&mut cache, "a 1\n", 2).unwrap(), [(a.clone(), 1.0), (b.clone(), -999.0)]);
        assert_eq!(scrape(&mut cache, "a 1\n", 3).unwrap(), [(a.clone(), 1.0)], "marked once");
        assert_eq!(scrape(&mut cache, "b 5\n", 4).unwrap(), [(b.clone(), 5.0), (a.clone(), -999.0)]);
        // A failed scrape (a duplicate label) marks everything of the last scrape stale.
        let failed = scrape(&mut cache, "a 1\nb{x=\"1\",x=\"2\"} 1\n", 5).unwrap_err();
        assert!(failed.starts_with("line 2: label `x` appears twice in `b{x=\"1\",x=\"2\"}`"), "{failed}");
        assert!(failed.ends_with(&format!("stale: [({b:?}, NaN)]")), "{failed}");
        // After a failure there is nothing left to mark.
        assert_eq!(scrape(&mut cache, "a 1\n", 6).unwrap(), [(a.clone(), 1.0)]);
        let mut out = Vec::new();
        cache.end_of_target(7, &mut out);
        assert_eq!(out.len(), 1);
        assert!(is_stale_nan(out[0].value) && out[0].timestamp_ms == 7);
    }

    #[test]
    fn one_series_is_sent_once_per_scrape() {
        let rules = relabel("- action: labeldrop\n  regex: pid\n");
        let mut cache = SeriesCache::new(target(), false, rules);
        let got = scrape(&mut cache, "m{pid=\"1\"} 1\nm{pid=\"2\"} 2\nm{pid=\"1\"} 3\n", 1).unwrap();
        let dup = r#"{__name__="DUPLICATE"}"#.to_string();
        assert_eq!(got.len(), 3);
        assert_eq!((got[1].0.clone(), got[2].0.clone()), (dup.clone(), dup));
        assert_eq!(cache.len(), 1, "two texts, one series, one slot");
    }

    #[test]
    fn the_cache_follows_the_exposition() {
        let mut cache = SeriesCache::new(target(), false, Arc::default());
        for round in 0..10 {
            let body: String = (0..200).map(|i| format!("m{{round=\"{round}\",i=\"{i}\"}} 1\n")).collect();
            scrape(&mut cache, &body, round).unwrap();
            assert_eq!(cache.added(), 200);
            assert!(cache.len() <= 800, "round {round}: {} slots", cache.len());
        }
    }
}
