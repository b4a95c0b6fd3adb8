//! Self-observability: the agent's own metrics, readiness and its HTTP server.

pub mod metrics;
pub mod readiness;
pub mod server;

use prometheus_client::registry::Registry;
use std::sync::Arc;

pub use readiness::Readiness;

/// The process-wide telemetry: the registry, the typed families in it, and readiness.
pub struct Telemetry {
    pub registry: Registry,
    pub metrics: metrics::Metrics,
    pub custom: Arc<crate::pipeline::metrics_stage::CustomMetrics>,
    /// `traces_span_metrics_*`, derived from the spans the OTLP receivers accept.
    pub span_metrics: Arc<crate::sources::otlp::span_metrics::SpanMetrics>,
    pub readiness: Readiness,
}

impl Telemetry {
    pub fn new() -> Telemetry {
        let mut registry = Registry::default();
        let metrics = metrics::Metrics::register(&mut registry);
        let custom = Arc::new(crate::pipeline::metrics_stage::CustomMetrics::default());
        registry.register_collector(Box::new(Arc::clone(&custom)));
        let span_metrics = Arc::new(crate::sources::otlp::span_metrics::SpanMetrics::new(
            crate::sources::otlp::span_metrics::SpanMetricsHandles {
                series: metrics.otlp.span_metrics_series.clone(),
                evicted: metrics.otlp.span_metrics_evicted.clone(),
                overflow_spans: metrics.otlp.span_metrics_overflow_spans.clone(),
                dropped_spans: metrics.otlp.span_metrics_dropped_spans.clone(),
            },
        ));
        registry.register_collector(Box::new(Arc::clone(&span_metrics)));
        Telemetry { registry, metrics, custom, span_metrics, readiness: Readiness::default() }
    }

    /// The metrics in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry);
        out
    }
}

impl Default for Telemetry {
    fn default() -> Self {
        Self::new()
    }
}
