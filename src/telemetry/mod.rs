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
    pub readiness: Readiness,
}

impl Telemetry {
    pub fn new() -> Telemetry {
        let mut registry = Registry::default();
        let metrics = metrics::Metrics::register(&mut registry);
        let custom = Arc::new(crate::pipeline::metrics_stage::CustomMetrics::default());
        registry.register_collector(Box::new(Arc::clone(&custom)));
        Telemetry { registry, metrics, custom, readiness: Readiness::default() }
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
