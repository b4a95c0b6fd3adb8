//! Span metrics: `traces_span_metrics_calls_total` and the histogram
//! `traces_span_metrics_duration_seconds`, by `service_name`, `span_name`, `span_kind`
//! (`SPAN_KIND_SERVER`...) and `status_code` (`STATUS_CODE_ERROR`...), the names and label
//! values of the collector's `spanmetrics` connector, which the stack's HighTraceErrorRate alert
//! reads.
//!
//! One table per process, served on `/metrics` by a collector registered in
//! [`crate::telemetry::Telemetry`]. Receivers record a request's spans under one lock. Two
//! safety limits: at most `max_series` series (a span of a new label set beyond it is counted in
//! the overflow series of its service, kind and status, `span_name="__overflow__"`, so error
//! rates stay right), and a series not updated for `expiration` is removed. When several OTLP
//! sources configure different limits, the last one started sets them.

use super::wire::Scanned;
use parking_lot::Mutex;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, LabelSetEncoder};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, Instant};

/// Bucket bounds in seconds: the `spanmetrics` connector's defaults.
pub const BUCKETS: [f64; 16] =
    [0.002, 0.004, 0.006, 0.008, 0.01, 0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.4, 2.0, 5.0, 10.0, 15.0];

/// The span name of the overflow series.
pub const OVERFLOW: &str = "__overflow__";

pub fn kind_label(kind: i32) -> &'static str {
    match kind {
        1 => "SPAN_KIND_INTERNAL",
        2 => "SPAN_KIND_SERVER",
        3 => "SPAN_KIND_CLIENT",
        4 => "SPAN_KIND_PRODUCER",
        5 => "SPAN_KIND_CONSUMER",
        _ => "SPAN_KIND_UNSPECIFIED",
    }
}

pub fn status_label(code: i32) -> &'static str {
    match code {
        1 => "STATUS_CODE_OK",
        2 => "STATUS_CODE_ERROR",
        _ => "STATUS_CODE_UNSET",
    }
}

#[derive(Debug)]
struct Series {
    service: Box<str>,
    name: Box<str>,
    kind: &'static str,
    status: &'static str,
    calls: u64,
    sum: f64,
    buckets: [u64; BUCKETS.len() + 1],
    last: Instant,
    overflow: bool,
}

#[derive(Debug)]
struct Table {
    series: HashMap<u64, Vec<Series>>,
    regular: usize,
    overflow: usize,
    max_series: usize,
    expiration: Duration,
    last_sweep: Instant,
}

/// Self-metrics of the span metrics table.
#[derive(Debug, Clone, Default)]
pub struct SpanMetricsHandles {
    pub series: Gauge,
    pub evicted: Counter,
    pub overflow_spans: Counter,
    pub dropped_spans: Counter,
}

/// The process's span metrics.
#[derive(Debug)]
pub struct SpanMetrics {
    table: Mutex<Table>,
    hasher: foldhash::fast::FixedState,
    handles: SpanMetricsHandles,
}

/// Labels of one series, for the encoder.
struct Labels<'a>(&'a Series);

impl EncodeLabelSet for Labels<'_> {
    fn encode(&self, encoder: &mut LabelSetEncoder<'_>) -> Result<(), std::fmt::Error> {
        let s = self.0;
        let pairs: [(&str, &str); 4] =
            [("service_name", &s.service), ("span_name", &s.name), ("span_kind", s.kind), ("status_code", s.status)];
        pairs.encode(encoder)
    }
}

impl SpanMetrics {
    pub fn new(handles: SpanMetricsHandles) -> SpanMetrics {
        let table = Table {
            series: HashMap::new(),
            regular: 0,
            overflow: 0,
            max_series: 10_000,
            expiration: Duration::from_secs(300),
            last_sweep: Instant::now(),
        };
        SpanMetrics { table: Mutex::new(table), hasher: foldhash::fast::FixedState::with_seed(0x5eed), handles }
    }

    /// Sets the limits (see the module docs).
    pub fn configure(&self, max_series: usize, expiration: Duration) {
        let mut table = self.table.lock();
        table.max_series = max_series.max(1);
        table.expiration = expiration;
    }

    fn key(&self, service: &str, name: &[u8], kind: &str, status: &str) -> u64 {
        let mut h = self.hasher.build_hasher();
        h.write(service.as_bytes());
        h.write_u8(0xff);
        h.write(name);
        h.write_u8(0xff);
        h.write(kind.as_bytes());
        h.write(status.as_bytes());
        h.finish()
    }

    /// Records the spans of a scanned request; `body` is the request the name ranges point into.
    pub fn record(&self, body: &[u8], scanned: &Scanned) {
        if scanned.observations.is_empty() {
            return;
        }
        let now = Instant::now();
        let mut table = self.table.lock();
        for o in &scanned.observations {
            let Some(service) = scanned.services.get(o.service as usize) else {
                continue;
            };
            let name = body.get(o.name.start as usize..o.name.end as usize).unwrap_or_default();
            let (kind, status) = (kind_label(o.kind), status_label(o.status_code));
            let seconds = o.duration_nanos as f64 / 1e9;
            let key = self.key(service, name, kind, status);
            if let Some(s) = find(&mut table.series, key, service, name, kind, status) {
                observe(s, seconds, now);
                continue;
            }
            if table.regular >= table.max_series {
                self.sweep(&mut table, now, false);
            }
            if table.regular < table.max_series {
                let series = new_series(service, &String::from_utf8_lossy(name), kind, status, now, false);
                table.regular += 1;
                let bucket = table.series.entry(key).or_default();
                bucket.push(series);
                if let Some(s) = bucket.last_mut() {
                    observe(s, seconds, now);
                }
                continue;
            }
            // Over the cap: the overflow series of the service, kind and status.
            self.handles.overflow_spans.inc();
            let key = self.key(service, OVERFLOW.as_bytes(), kind, status) ^ 1;
            if let Some(s) = find(&mut table.series, key, service, OVERFLOW.as_bytes(), kind, status) {
                observe(s, seconds, now);
                continue;
            }
            if table.overflow >= table.max_series / 10 + 64 {
                self.handles.dropped_spans.inc();
                continue;
            }
            table.overflow += 1;
            let bucket = table.series.entry(key).or_default();
            bucket.push(new_series(service, OVERFLOW, kind, status, now, true));
            if let Some(s) = bucket.last_mut() {
                observe(s, seconds, now);
            }
        }
        self.handles.series.set((table.regular + table.overflow) as i64);
    }

    /// Removes series idle for longer than the expiration (at most once a second unless forced).
    fn sweep(&self, table: &mut Table, now: Instant, force: bool) {
        if !force && now.duration_since(table.last_sweep) < Duration::from_secs(1) {
            return;
        }
        table.last_sweep = now;
        let expiration = table.expiration;
        let (mut regular, mut overflow) = (0, 0);
        let mut evicted = 0;
        table.series.retain(|_, bucket| {
            bucket.retain(|s| {
                let keep = now.duration_since(s.last) < expiration;
                if !keep {
                    evicted += 1;
                } else if s.overflow {
                    overflow += 1;
                } else {
                    regular += 1;
                }
                keep
            });
            !bucket.is_empty()
        });
        table.regular = regular;
        table.overflow = overflow;
        self.handles.evicted.inc_by(evicted);
        self.handles.series.set((regular + overflow) as i64);
    }

    /// The calls and the histogram of one series, for tests: (calls, sum of seconds, bucket counts).
    pub fn get(&self, service: &str, name: &str, kind: &str, status: &str) -> Option<(u64, f64, Vec<u64>)> {
        let mut table = self.table.lock();
        let key = self.key(service, name.as_bytes(), kind, status) ^ u64::from(name == OVERFLOW);
        find(&mut table.series, key, service, name.as_bytes(), kind, status)
            .map(|s| (s.calls, s.sum, s.buckets.to_vec()))
    }

    /// Series held now.
    pub fn len(&self) -> usize {
        let table = self.table.lock();
        table.regular + table.overflow
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn find<'a>(
    series: &'a mut HashMap<u64, Vec<Series>>,
    key: u64,
    service: &str,
    name: &[u8],
    kind: &str,
    status: &str,
) -> Option<&'a mut Series> {
    series
        .get_mut(&key)?
        .iter_mut()
        .find(|s| s.kind == kind && s.status == status && s.name.as_bytes() == name && &*s.service == service)
}

fn new_series(
    service: &str,
    name: &str,
    kind: &'static str,
    status: &'static str,
    now: Instant,
    overflow: bool,
) -> Series {
    Series {
        service: service.into(),
        name: name.into(),
        kind,
        status,
        calls: 0,
        sum: 0.0,
        buckets: [0; BUCKETS.len() + 1],
        last: now,
        overflow,
    }
}

#[inline]
fn observe(s: &mut Series, seconds: f64, now: Instant) {
    let i = BUCKETS.iter().position(|b| seconds <= *b).unwrap_or(BUCKETS.len());
    s.buckets[i] += 1;
    s.calls += 1;
    s.sum += seconds;
    s.last = now;
}

impl Collector for SpanMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let mut table = self.table.lock();
        self.sweep(&mut table, Instant::now(), true);
        if table.series.is_empty() {
            return Ok(());
        }
        {
            let mut family = encoder.encode_descriptor(
                "traces_span_metrics_calls",
                "Spans received, by service, span name, kind and status (span metrics)",
                None,
                MetricType::Counter,
            )?;
            for s in table.series.values().flatten() {
                family
                    .encode_family(&Labels(s))?
                    .encode_counter::<prometheus_client::encoding::NoLabelSet, _, u64>(&s.calls, None)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "traces_span_metrics_duration_seconds",
            "Span durations, by service, span name, kind and status (span metrics)",
            None,
            MetricType::Histogram,
        )?;
        let mut buckets: Vec<(f64, u64)> = Vec::with_capacity(BUCKETS.len() + 1);
        for s in table.series.values().flatten() {
            buckets.clear();
            buckets.extend(BUCKETS.iter().copied().zip(s.buckets.iter().copied()));
            buckets.push((f64::INFINITY, s.buckets[BUCKETS.len()]));
            family
                .encode_family(&Labels(s))?
                .encode_histogram::<prometheus_client::encoding::NoLabelSet>(s.sum, s.calls, &buckets, None)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::otlp::wire::Observation;

    fn scanned(body: &str, spans: &[(u32, std::ops::Range<u32>, i32, i32, u64)], services: &[&str]) -> Scanned {
        assert!(spans.iter().all(|s| s.1.end as usize <= body.len()));
        Scanned {
            services: services.iter().map(|s| s.to_string()).collect(),
            observations: spans
                .iter()
                .map(|(service, name, kind, status, nanos)| Observation {
                    service: *service,
                    name: name.clone(),
                    kind: *kind,
                    status_code: *status,
                    duration_nanos: *nanos,
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn counts_and_buckets_per_series() {
        let m = SpanMetrics::new(SpanMetricsHandles::default());
        let body = "GET /aPOST /b";
        let s = scanned(
            body,
            &[
                (0, 0..6, 2, 0, 1_000_000),     // 1 ms
                (0, 0..6, 2, 0, 3_000_000),     // 3 ms
                (0, 0..6, 2, 2, 2_500_000_000), // 2.5 s, error
                (1, 6..13, 3, 1, 20_000_000),   // another service, client, ok
            ],
            &["gateway", "router"],
        );
        m.record(body.as_bytes(), &s);
        let (calls, sum, buckets) = m.get("gateway", "GET /a", "SPAN_KIND_SERVER", "STATUS_CODE_UNSET").unwrap();
        assert_eq!(calls, 2);
        assert!((sum - 0.004).abs() < 1e-12);
        assert_eq!(&buckets[..3], &[1, 1, 0]);
        let (calls, _, buckets) = m.get("gateway", "GET /a", "SPAN_KIND_SERVER", "STATUS_CODE_ERROR").unwrap();
        assert_eq!((calls, buckets[13]), (1, 1), "2.5 s falls in the 5 s bucket");
        assert_eq!(m.get("router", "POST /b", "SPAN_KIND_CLIENT", "STATUS_CODE_OK").unwrap().0, 1);
        assert_eq!(m.len(), 3);
    }

    #[test]
    fn caps_series_into_overflow_and_evicts_stale_ones() {
        let handles = SpanMetricsHandles::default();
        let m = SpanMetrics::new(handles.clone());
        m.configure(2, Duration::from_secs(300));
        let body = "abcd";
        let s =
            scanned(body, &[(0, 0..1, 2, 2, 1), (0, 1..2, 2, 2, 1), (0, 2..3, 2, 2, 1), (0, 3..4, 2, 2, 1)], &["svc"]);
        m.record(body.as_bytes(), &s);
        assert_eq!(m.get("svc", "a", "SPAN_KIND_SERVER", "STATUS_CODE_ERROR").unwrap().0, 1);
        assert_eq!(m.get("svc", "c", "SPAN_KIND_SERVER", "STATUS_CODE_ERROR"), None);
        assert_eq!(m.get("svc", OVERFLOW, "SPAN_KIND_SERVER", "STATUS_CODE_ERROR").unwrap().0, 2);
        assert_eq!(handles.overflow_spans.get(), 2);
        assert_eq!(handles.series.get(), 3);
        // Everything idle for longer than the expiration goes.
        m.configure(2, Duration::ZERO);
        let mut out = String::new();
        let mut registry = prometheus_client::registry::Registry::default();
        let shared = std::sync::Arc::new(m);
        registry.register_collector(Box::new(std::sync::Arc::clone(&shared)));
        prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
        assert!(!out.contains("traces_span_metrics"), "{out}");
        assert_eq!(handles.evicted.get(), 3);
        assert!(shared.is_empty());
    }

    #[test]
    fn exposition_names_and_labels() {
        let m = std::sync::Arc::new(SpanMetrics::new(SpanMetricsHandles::default()));
        let body = "op";
        m.record(body.as_bytes(), &scanned(body, &[(0, 0..2, 2, 2, 5_000_000)], &["gw"]));
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(std::sync::Arc::clone(&m)));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
        let labels = r#"service_name="gw",span_name="op",span_kind="SPAN_KIND_SERVER",status_code="STATUS_CODE_ERROR""#;
        assert!(out.contains(&format!("traces_span_metrics_calls_total{{{labels}}} 1\n")), "{out}");
        assert!(out.contains(&format!("traces_span_metrics_duration_seconds_count{{{labels}}} 1\n")), "{out}");
        assert!(
            out.contains(&format!("traces_span_metrics_duration_seconds_bucket{{le=\"0.004\",{labels}}} 0\n")),
            "{out}"
        );
        assert!(
            out.contains(&format!("traces_span_metrics_duration_seconds_bucket{{le=\"0.006\",{labels}}} 1\n")),
            "{out}"
        );
        assert!(
            out.contains(&format!("traces_span_metrics_duration_seconds_bucket{{le=\"+Inf\",{labels}}} 1\n")),
            "{out}"
        );
    }
}
