//! The agent's self-metrics: every family is defined and registered here, once per process.
//!
//! Components never register anything themselves: when built they resolve their handles from
//! these families (`family.get_or_create_owned(&labels)`) and keep them, so the hot path only
//! touches an atomic. A component rebuilt by a reload resolves the same handles again and its
//! counters continue. Families that can hold a label value per stream or per config item are
//! cleared by their owner when the item goes away.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabel {
    pub source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceReason {
    pub source: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SinkLabel {
    pub sink: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SinkReason {
    pub sink: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SinkResult {
    pub sink: String,
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PipelineStage {
    pub pipeline: String,
    pub stage: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PipelineStageReason {
    pub pipeline: String,
    pub stage: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LabelName {
    pub label: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LabelReason {
    pub label: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceTransport {
    pub source: String,
    pub transport: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceTransportReason {
    pub source: String,
    pub transport: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceTrigger {
    pub source: String,
    pub trigger: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ScrapeJob {
    pub source: String,
    pub scrape_job: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ScrapeJobReason {
    pub source: String,
    pub scrape_job: String,
    pub reason: String,
}

type CounterFamily<L> = Family<L, Counter>;
type GaugeFamily<L> = Family<L, Gauge>;
type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn request_duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 14))
}

/// Sources: what was read and what could not be.
#[derive(Default)]
pub struct SourceMetrics {
    pub lines: CounterFamily<SourceLabel>,
    pub bytes: CounterFamily<SourceLabel>,
    pub dropped: CounterFamily<SourceReason>,
    /// Streams (containers, files) a source follows right now.
    pub streams: GaugeFamily<SourceLabel>,
}

/// Pipelines: stage failures (the entry went on unchanged) and intentional drops.
#[derive(Default)]
pub struct PipelineMetrics {
    pub errors: CounterFamily<PipelineStage>,
    pub dropped: CounterFamily<PipelineStageReason>,
}

/// Sinks: what went out, what was refused, and how the queue in front of each sink looks.
pub struct SinkMetrics {
    pub lines_sent: CounterFamily<SinkLabel>,
    pub bytes_sent: CounterFamily<SinkLabel>,
    pub dropped: CounterFamily<SinkReason>,
    pub truncated: CounterFamily<SinkLabel>,
    pub batches: CounterFamily<SinkLabel>,
    pub requests: CounterFamily<SinkResult>,
    pub retries: CounterFamily<SinkLabel>,
    pub request_duration: HistogramFamily<SinkLabel>,
    pub queue_bytes: GaugeFamily<SinkLabel>,
    pub queue_capacity_bytes: GaugeFamily<SinkLabel>,
    pub active_streams: GaugeFamily<SinkLabel>,
}

impl Default for SinkMetrics {
    fn default() -> Self {
        SinkMetrics {
            lines_sent: Family::default(),
            bytes_sent: Family::default(),
            dropped: Family::default(),
            truncated: Family::default(),
            batches: Family::default(),
            requests: Family::default(),
            retries: Family::default(),
            request_duration: Family::new_with_constructor(request_duration_histogram),
            queue_bytes: Family::default(),
            queue_capacity_bytes: Family::default(),
            active_streams: Family::default(),
        }
    }
}

/// Label safety: values moved to structured metadata instead of becoming labels.
#[derive(Default)]
pub struct LabelMetrics {
    pub cardinality_capped: CounterFamily<LabelName>,
    pub limited: CounterFamily<LabelReason>,
    pub interned_sets: Gauge,
}

/// The Docker source.
#[derive(Default)]
pub struct DockerMetrics {
    pub daemon_errors: CounterFamily<SourceLabel>,
    pub stalls: CounterFamily<SourceLabel>,
    pub reconnects: CounterFamily<SourceLabel>,
    pub replays: CounterFamily<SourceLabel>,
}

/// The OTLP receiver and the span metrics it derives.
#[derive(Default)]
pub struct OtlpMetrics {
    /// Spans accepted (answered with success), by transport (`grpc`, `http`).
    pub received_spans: CounterFamily<SourceTransport>,
    /// Spans refused with a retryable answer (the client keeps them and retries), by reason.
    pub refused_spans: CounterFamily<SourceTransportReason>,
    /// Requests refused for good (malformed, too large, wrong content type), by reason.
    pub rejected_requests: CounterFamily<SourceTransportReason>,
    /// Bytes of spans accepted and not yet exported, and the bound on them.
    pub memory_bytes: GaugeFamily<SourceLabel>,
    pub memory_limit_bytes: GaugeFamily<SourceLabel>,
    /// Batches sent to the sinks, by what closed them (`size`, `timeout`, `max_size`, `shutdown`).
    pub batches: CounterFamily<SourceTrigger>,
    pub span_metrics_series: Gauge,
    pub span_metrics_evicted: Counter,
    pub span_metrics_overflow_spans: Counter,
    pub span_metrics_dropped_spans: Counter,
}

/// The files source.
#[derive(Default)]
pub struct FilesMetrics {
    pub malformed: CounterFamily<SourceLabel>,
    pub truncations: CounterFamily<SourceLabel>,
    pub waiting: GaugeFamily<SourceLabel>,
    pub open_limit_reached: CounterFamily<SourceLabel>,
    /// Kubelet paths started without their pod's metadata from the Kubernetes API.
    pub pod_metadata_missing: CounterFamily<SourceLabel>,
    /// Files not shipped because a relabel rule dropped their target.
    pub dropped_by_relabel: CounterFamily<SourceLabel>,
    /// Failed lists and watches of the node's pods, by reason.
    pub kubernetes_api_errors: CounterFamily<SourceReason>,
    /// Pods in the metadata cache.
    pub kubernetes_pods: GaugeFamily<SourceLabel>,
}

/// Scraping (`prometheus_scrape`), per source and job. The label is `scrape_job`, not `job`, so
/// that it does not clash with the `job` Prometheus gives sluice's own target.
pub struct ScrapeMetrics {
    pub scrapes: CounterFamily<ScrapeJob>,
    pub failures: CounterFamily<ScrapeJobReason>,
    pub samples: CounterFamily<ScrapeJob>,
    pub targets: GaugeFamily<ScrapeJob>,
    pub duration: HistogramFamily<ScrapeJob>,
}

fn scrape_duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 14))
}

impl Default for ScrapeMetrics {
    fn default() -> Self {
        ScrapeMetrics {
            scrapes: Family::default(),
            failures: Family::default(),
            samples: Family::default(),
            targets: Family::default(),
            duration: Family::new_with_constructor(scrape_duration_histogram),
        }
    }
}

/// Config loading and reloads.
#[derive(Default)]
pub struct ConfigMetrics {
    pub last_reload_successful: Gauge,
    pub last_reload_success_timestamp_seconds: Gauge<f64, AtomicU64>,
    pub reloads: Counter,
    pub reload_failures: Counter,
}

/// Every self-metric of the agent, and the registry that serves them.
pub struct Metrics {
    pub source: SourceMetrics,
    pub pipeline: PipelineMetrics,
    pub sink: SinkMetrics,
    pub labels: LabelMetrics,
    pub config: ConfigMetrics,
    pub docker: DockerMetrics,
    pub scrape: ScrapeMetrics,
    pub files: FilesMetrics,
    pub otlp: OtlpMetrics,
}

impl Metrics {
    /// Creates every family and registers it in `registry` under the `sluice_` prefix.
    pub fn register(registry: &mut Registry) -> Metrics {
        let m = Metrics {
            source: SourceMetrics::default(),
            pipeline: PipelineMetrics::default(),
            sink: SinkMetrics::default(),
            labels: LabelMetrics::default(),
            config: ConfigMetrics::default(),
            docker: DockerMetrics::default(),
            scrape: ScrapeMetrics::default(),
            files: FilesMetrics::default(),
            otlp: OtlpMetrics::default(),
        };
        let r = registry.sub_registry_with_prefix("sluice");
        r.register("build", "Build information", Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]));

        r.register("source_lines", "Lines read by a source", m.source.lines.clone());
        r.register("source_bytes", "Bytes of line content read by a source", m.source.bytes.clone());
        r.register("source_dropped", "Lines a source could not pass on, by reason", m.source.dropped.clone());
        r.register("source_streams", "Streams (containers, files) a source follows", m.source.streams.clone());

        r.register(
            "docker_daemon_errors",
            "Errors the Docker engine reported inside log streams (never shipped as container output)",
            m.docker.daemon_errors.clone(),
        );
        r.register(
            "docker_stream_stalls",
            "Follow streams of running containers found stalled and reopened",
            m.docker.stalls.clone(),
        );
        r.register("docker_reconnects", "Log streams reopened from the position", m.docker.reconnects.clone());
        r.register(
            "docker_replayed_lines_skipped",
            "Lines the engine sent a second time (after log rotation), recognised by their timestamp and skipped",
            m.docker.replays.clone(),
        );
        r.register(
            "otlp_received_spans",
            "Spans an OTLP receiver accepted, by transport",
            m.otlp.received_spans.clone(),
        );
        r.register(
            "otlp_refused_spans",
            "Spans an OTLP receiver refused with a retryable answer (the client retries), by transport and reason",
            m.otlp.refused_spans.clone(),
        );
        r.register(
            "otlp_rejected_requests",
            "OTLP requests refused for good (malformed, too large, unsupported content type), by reason",
            m.otlp.rejected_requests.clone(),
        );
        r.register(
            "otlp_memory_bytes",
            "Bytes of spans an OTLP receiver accepted that are not yet exported",
            m.otlp.memory_bytes.clone(),
        );
        r.register(
            "otlp_memory_limit_bytes",
            "Bound on the bytes of spans accepted and not yet exported; above it requests are refused",
            m.otlp.memory_limit_bytes.clone(),
        );
        r.register("otlp_batches", "Span batches sent to the sinks, by what closed them", m.otlp.batches.clone());
        r.register(
            "span_metrics_series",
            "Series of traces_span_metrics_* held (at most span_metrics.max_series, plus overflow series)",
            m.otlp.span_metrics_series.clone(),
        );
        r.register(
            "span_metrics_series_evicted",
            "Span metric series removed after their expiration",
            m.otlp.span_metrics_evicted.clone(),
        );
        r.register(
            "span_metrics_overflow_spans",
            "Spans counted in an overflow series because max_series was reached",
            m.otlp.span_metrics_overflow_spans.clone(),
        );
        r.register(
            "span_metrics_dropped_spans",
            "Spans left out of span metrics because even the overflow series were at their cap",
            m.otlp.span_metrics_dropped_spans.clone(),
        );
        r.register(
            "files_malformed_lines",
            "Lines that did not parse in their file's format (CRI, json-file) and were passed through as they were",
            m.files.malformed.clone(),
        );
        r.register(
            "files_truncations",
            "Files found truncated and read again from the start",
            m.files.truncations.clone(),
        );
        r.register(
            "files_waiting",
            "Files matched but not followed because max_open_files was reached",
            m.files.waiting.clone(),
        );
        r.register(
            "files_open_limit_reached",
            "Scans that found more files than max_open_files allows",
            m.files.open_limit_reached.clone(),
        );
        r.register(
            "files_pod_metadata_missing",
            "Kubelet log files labeled from their path only: their pod was not in the Kubernetes metadata cache (not synced, or not seen within wait_for_pod)",
            m.files.pod_metadata_missing.clone(),
        );
        r.register(
            "files_dropped_by_relabel",
            "Log files not shipped because a relabel rule (keep/drop) dropped their target",
            m.files.dropped_by_relabel.clone(),
        );
        r.register(
            "files_kubernetes_api_errors",
            "Failed lists and watches of this node's pods, by reason (unauthorized, forbidden, unreachable, refused, invalid_response, config)",
            m.files.kubernetes_api_errors.clone(),
        );
        r.register(
            "files_kubernetes_pods",
            "Pods in the files source's Kubernetes metadata cache",
            m.files.kubernetes_pods.clone(),
        );
        r.register("scrapes", "Scrapes of a target, failed or not, by job", m.scrape.scrapes.clone());
        r.register(
            "scrape_failures",
            "Scrapes that failed, by job and reason (timeout, connection, http_status, body_too_large, parse, invalid_series, sample_limit, auth)",
            m.scrape.failures.clone(),
        );
        r.register("scrape_samples", "Samples read from the expositions of a job's targets", m.scrape.samples.clone());
        r.register("scrape_targets", "Targets a job scrapes", m.scrape.targets.clone());
        r.register(
            "scrape_duration_seconds",
            "Time a scrape took, from request to parsed body",
            m.scrape.duration.clone(),
        );
        r.register(
            "pipeline_errors",
            "Entries a stage could not process; they continued unchanged",
            m.pipeline.errors.clone(),
        );
        r.register(
            "pipeline_dropped",
            "Entries dropped on purpose by a pipeline stage, by reason",
            m.pipeline.dropped.clone(),
        );

        r.register("sink_lines_sent", "Lines a sink delivered", m.sink.lines_sent.clone());
        r.register("sink_bytes_sent", "Bytes of line content a sink delivered", m.sink.bytes_sent.clone());
        r.register("sink_dropped", "Lines a sink dropped, by reason", m.sink.dropped.clone());
        r.register("sink_lines_truncated", "Lines a sink shortened to its line size limit", m.sink.truncated.clone());
        r.register("sink_batches", "Batches a sink built", m.sink.batches.clone());
        r.register(
            "sink_requests",
            "Requests a sink made, by result (success, retry, rejected)",
            m.sink.requests.clone(),
        );
        r.register("sink_retries", "Requests a sink repeated after a retryable failure", m.sink.retries.clone());
        r.register(
            "sink_request_duration_seconds",
            "Time from sending a request to its answer",
            m.sink.request_duration.clone(),
        );
        r.register("sink_queue_bytes", "Bytes of entries queued for or held by a sink", m.sink.queue_bytes.clone());
        r.register(
            "sink_queue_capacity_bytes",
            "Bound on the bytes queued for a sink",
            m.sink.queue_capacity_bytes.clone(),
        );
        r.register("sink_active_streams", "Streams in a sink's pending batches", m.sink.active_streams.clone());

        r.register(
            "label_cardinality_capped",
            "Entries whose label value was moved to structured metadata because the label reached its cap of distinct values",
            m.labels.cardinality_capped.clone(),
        );
        r.register(
            "label_limited",
            "Entries whose label was moved to structured metadata by a Loki limit, by reason",
            m.labels.limited.clone(),
        );
        r.register("label_sets_interned", "Distinct label sets held by the interner", m.labels.interned_sets.clone());

        r.register(
            "config_last_reload_successful",
            "Whether the last config load or reload succeeded",
            m.config.last_reload_successful.clone(),
        );
        r.register(
            "config_last_reload_success_timestamp_seconds",
            "Time of the last successful config load or reload",
            m.config.last_reload_success_timestamp_seconds.clone(),
        );
        r.register("config_reloads", "Config reloads attempted", m.config.reloads.clone());
        r.register(
            "config_reload_failures",
            "Config reloads refused because a file was invalid",
            m.config.reload_failures.clone(),
        );
        m
    }
}

/// Handles of one sink, resolved once when the sink is built.
#[derive(Clone)]
pub struct SinkHandles {
    pub name: String,
    pub lines_sent: Counter,
    pub bytes_sent: Counter,
    pub truncated: Counter,
    pub batches: Counter,
    pub requests_success: Counter,
    pub requests_retry: Counter,
    pub requests_rejected: Counter,
    pub retries: Counter,
    pub request_duration: Histogram,
    pub queue_bytes: Gauge,
    pub queue_capacity_bytes: Gauge,
    pub active_streams: Gauge,
    dropped: CounterFamily<SinkReason>,
}

impl SinkHandles {
    pub fn new(m: &SinkMetrics, sink: &str) -> Self {
        let label = SinkLabel { sink: sink.to_string() };
        let result =
            |r: &str| m.requests.get_or_create_owned(&SinkResult { sink: sink.to_string(), result: r.to_string() });
        SinkHandles {
            name: sink.to_string(),
            lines_sent: m.lines_sent.get_or_create_owned(&label),
            bytes_sent: m.bytes_sent.get_or_create_owned(&label),
            truncated: m.truncated.get_or_create_owned(&label),
            batches: m.batches.get_or_create_owned(&label),
            requests_success: result("success"),
            requests_retry: result("retry"),
            requests_rejected: result("rejected"),
            retries: m.retries.get_or_create_owned(&label),
            request_duration: m.request_duration.get_or_create_owned(&label),
            queue_bytes: m.queue_bytes.get_or_create_owned(&label),
            queue_capacity_bytes: m.queue_capacity_bytes.get_or_create_owned(&label),
            active_streams: m.active_streams.get_or_create_owned(&label),
            dropped: m.dropped.clone(),
        }
    }

    /// The drop counter for `reason` (resolve once per reason, outside per-line loops).
    pub fn dropped(&self, reason: &str) -> Counter {
        self.dropped.get_or_create_owned(&SinkReason { sink: self.name.clone(), reason: reason.to_string() })
    }
}

/// Handles of one source.
#[derive(Clone)]
pub struct SourceHandles {
    pub name: String,
    pub lines: Counter,
    pub bytes: Counter,
    pub streams: Gauge,
    dropped: CounterFamily<SourceReason>,
}

impl SourceHandles {
    pub fn new(m: &SourceMetrics, source: &str) -> Self {
        let label = SourceLabel { source: source.to_string() };
        SourceHandles {
            name: source.to_string(),
            lines: m.lines.get_or_create_owned(&label),
            bytes: m.bytes.get_or_create_owned(&label),
            streams: m.streams.get_or_create_owned(&label),
            dropped: m.dropped.clone(),
        }
    }

    pub fn dropped(&self, reason: &str) -> Counter {
        self.dropped.get_or_create_owned(&SourceReason { source: self.name.clone(), reason: reason.to_string() })
    }
}
