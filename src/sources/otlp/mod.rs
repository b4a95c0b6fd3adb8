//! `otlp`: receives OpenTelemetry spans over gRPC (`TraceService/Export`) and HTTP
//! (`POST /v1/traces`, protobuf or JSON, gzip allowed), the collector's receiver, `batch`,
//! `resource`, `attributes` and `spanmetrics` in one.
//!
//! Path of a request: the transport reads the body (bounded by `max_recv_message_size`), the
//! [`Receiver`] checks the memory bound, scans the body once ([`wire`]: validation, attribute
//! actions, the facts span metrics need), records span metrics, and hands the kept span records
//! to the [`batcher`], then answers. The answer means "accepted", not "delivered": like the
//! collector's, spans in memory are lost if the process dies.
//!
//! Answers:
//! - success, with `partial_success` when spans with malformed ids were left out (counted as
//!   `sluice_source_dropped_total{reason="invalid_span"}`);
//! - `INVALID_ARGUMENT` / 400 with the reason for a body that is not OTLP;
//! - `RESOURCE_EXHAUSTED` / 413 above the size limit; 415 for another content type;
//! - `UNAVAILABLE` / 503 with RetryInfo / `Retry-After` while the spans accepted and not yet
//!   exported by every sink exceed `memory_limit` (the client keeps the spans and retries),
//!   counted in `sluice_otlp_refused_spans_total`.
//!
//! The memory bound covers everything from the answer to the last sink's settlement: a batch's
//! bytes are released when every sink is done with it (delivered or dropped and counted).

pub mod attributes;
mod batcher;
pub mod config;
mod grpc;
mod http;
pub mod span_metrics;
pub mod wire;

use crate::event::SpanBatch;
use crate::telemetry::metrics::{OtlpMetrics, SourceLabel, SourceTransport, SourceTransportReason};
use crate::topology::SignalEmitter;
use bytes::Bytes;
use config::OtlpSourceConfig;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use span_metrics::SpanMetrics;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use wire::{ScanOptions, WireError};

pub use batcher::{Accepted, Batcher, BatcherSettings, Closed, Trigger};

#[derive(Debug, thiserror::Error)]
pub enum OtlpSourceError {
    #[error("cannot listen on {address} ({transport}): {source}")]
    Bind { transport: &'static str, address: SocketAddr, source: std::io::Error },
}

/// The transports, as metric labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Grpc,
    Http,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Grpc => "grpc",
            Transport::Http => "http",
        }
    }
}

/// Why a request was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Not an OTLP trace request: final.
    #[error("{0}")]
    Malformed(String),
    /// Too many spans in memory: retry later.
    #[error("sluice has {used} bytes of spans waiting for export (limit {limit}): retry later")]
    Busy { used: usize, limit: usize },
    /// The receiver is stopping: retry (elsewhere or later).
    #[error("the receiver is shutting down: retry later")]
    ShuttingDown,
}

impl From<WireError> for Refusal {
    fn from(e: WireError) -> Self {
        Refusal::Malformed(e.to_string())
    }
}

/// What an accepted request gets back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Accept {
    pub rejected_spans: i64,
    pub error_message: String,
}

/// Bytes of spans accepted and not yet settled by every sink.
#[derive(Debug)]
pub struct Memory {
    used: AtomicUsize,
    limit: usize,
    gauge: Gauge,
}

impl Memory {
    pub fn new(limit: usize, gauge: Gauge) -> Arc<Memory> {
        Arc::new(Memory { used: AtomicUsize::new(0), limit, gauge })
    }

    /// Whether `bytes` more fit under the limit (checked before work is spent on a request).
    fn admits(&self, bytes: usize) -> Result<(), Refusal> {
        let used = self.used.load(Ordering::Relaxed);
        if used.saturating_add(bytes) > self.limit {
            return Err(Refusal::Busy { used, limit: self.limit });
        }
        Ok(())
    }

    /// Charges `bytes` (done by [`Receiver::export`] for what it accepts).
    pub fn add(&self, bytes: usize) {
        self.used.fetch_add(bytes, Ordering::Relaxed);
        self.gauge.inc_by(bytes as i64);
    }

    pub fn release(&self, bytes: usize) {
        self.used.fetch_sub(bytes, Ordering::Relaxed);
        self.gauge.dec_by(bytes as i64);
    }

    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }
}

/// Counters of one transport, resolved once.
#[derive(Clone)]
struct TransportHandles {
    received: Counter,
    refused_memory: Counter,
    refused_shutdown: Counter,
    rejected: prometheus_client::metrics::family::Family<SourceTransportReason, Counter>,
    source: String,
    transport: &'static str,
}

impl TransportHandles {
    fn new(m: &OtlpMetrics, source: &str, transport: Transport) -> Self {
        let t = transport.as_str();
        let refused = |reason: &str| {
            m.refused_spans.get_or_create_owned(&SourceTransportReason {
                source: source.into(),
                transport: t.into(),
                reason: reason.into(),
            })
        };
        TransportHandles {
            received: m
                .received_spans
                .get_or_create_owned(&SourceTransport { source: source.into(), transport: t.into() }),
            refused_memory: refused("memory_limit"),
            refused_shutdown: refused("shutting_down"),
            rejected: m.rejected_requests.clone(),
            source: source.into(),
            transport: t,
        }
    }

    /// Counts a request refused for good.
    fn reject(&self, reason: &str) {
        self.rejected
            .get_or_create(&SourceTransportReason {
                source: self.source.clone(),
                transport: self.transport.into(),
                reason: reason.into(),
            })
            .inc();
    }
}

/// The part of the source the transports share: limits, scanning, span metrics, the batcher.
pub struct Receiver {
    options: ScanOptions,
    span_metrics: Option<Arc<SpanMetrics>>,
    memory: Arc<Memory>,
    tx: mpsc::UnboundedSender<Accepted>,
    retry_after: Duration,
    max_message_size: usize,
    invalid_spans: Counter,
    grpc: TransportHandles,
    http: TransportHandles,
}

impl Receiver {
    /// A receiver feeding `tx`.
    pub fn new(
        config: &OtlpSourceConfig,
        source: &str,
        metrics: &OtlpMetrics,
        span_metrics: Option<Arc<SpanMetrics>>,
        memory: Arc<Memory>,
        invalid_spans: Counter,
        tx: mpsc::UnboundedSender<Accepted>,
    ) -> Receiver {
        let options = ScanOptions {
            resource_actions: attributes::AttrActions::new(&config.resource_attributes),
            span_actions: attributes::AttrActions::new(&config.span_attributes),
            observe: span_metrics.is_some(),
        };
        Receiver {
            options,
            span_metrics,
            memory,
            tx,
            retry_after: config.retry_after.0,
            max_message_size: config.max_recv_message_size.as_usize(),
            invalid_spans,
            grpc: TransportHandles::new(metrics, source, Transport::Grpc),
            http: TransportHandles::new(metrics, source, Transport::Http),
        }
    }

    fn handles(&self, transport: Transport) -> &TransportHandles {
        match transport {
            Transport::Grpc => &self.grpc,
            Transport::Http => &self.http,
        }
    }

    pub fn retry_after(&self) -> Duration {
        self.retry_after
    }

    pub fn max_message_size(&self) -> usize {
        self.max_message_size
    }

    /// Counts a request refused for good before it reached [`Receiver::export`].
    pub fn reject(&self, transport: Transport, reason: &str) {
        self.handles(transport).reject(reason);
    }

    /// Takes an encoded `ExportTraceServiceRequest`.
    pub fn export(&self, body: Bytes, transport: Transport) -> Result<Accept, Refusal> {
        let handles = self.handles(transport);
        if let Err(refusal) = self.memory.admits(body.len()) {
            // The span count is not known without the scan this refusal exists to avoid: count
            // the spans of a quick structural count instead.
            handles.refused_memory.inc_by(count_spans(&body) as u64);
            return Err(refusal);
        }
        let scanned = match wire::scan_request(&body, &self.options) {
            Ok(s) => s,
            Err(e) => {
                handles.reject("malformed");
                return Err(e.into());
            }
        };
        let answer = Accept {
            rejected_spans: scanned.rejected as i64,
            error_message: scanned.rejection.clone().unwrap_or_default(),
        };
        if scanned.rejected > 0 {
            self.invalid_spans.inc_by(scanned.rejected as u64);
        }
        if scanned.spans == 0 {
            return Ok(answer);
        }
        if self.tx.is_closed() {
            handles.refused_shutdown.inc_by(scanned.spans as u64);
            return Err(Refusal::ShuttingDown);
        }
        if let Some(m) = &self.span_metrics {
            m.record(&body, &scanned);
        }
        self.memory.add(scanned.bytes);
        let spans = scanned.spans;
        let accepted = Accepted { groups: scanned.groups, spans, bytes: scanned.bytes };
        if let Err(mpsc::error::SendError(accepted)) = self.tx.send(accepted) {
            self.memory.release(accepted.bytes);
            handles.refused_shutdown.inc_by(spans as u64);
            return Err(Refusal::ShuttingDown);
        }
        handles.received.inc_by(spans as u64);
        Ok(answer)
    }
}

/// Spans in a request, counted without validation (for the refusal counter).
fn count_spans(body: &[u8]) -> usize {
    use crate::proto::wire::read_varint;
    fn fields(buf: &[u8], wanted: u32, mut each: impl FnMut(&[u8])) {
        let mut pos = 0;
        while pos < buf.len() {
            let Some((key, n)) = read_varint(&buf[pos..]) else { return };
            pos += n;
            match key & 7 {
                0 => match read_varint(&buf[pos..]) {
                    Some((_, n)) => pos += n,
                    None => return,
                },
                1 => pos += 8,
                5 => pos += 4,
                2 => {
                    let Some((len, n)) = read_varint(&buf[pos..]) else { return };
                    let start = pos + n;
                    let Some(end) = usize::try_from(len).ok().and_then(|l| start.checked_add(l)) else { return };
                    let Some(payload) = buf.get(start..end) else { return };
                    if key >> 3 == u64::from(wanted) {
                        each(payload);
                    }
                    pos = end;
                }
                _ => return,
            }
        }
    }
    let mut spans = 0;
    fields(body, 1, |rs| fields(rs, 2, |ss| fields(ss, 2, |_| spans += 1)));
    spans
}

/// Runs the receivers until `cancel`, then sends what the batcher holds.
pub async fn run(
    config: OtlpSourceConfig,
    emitter: SignalEmitter<SpanBatch>,
    cancel: CancellationToken,
) -> Result<(), OtlpSourceError> {
    let source = emitter.source().to_string();
    let telemetry = Arc::clone(&emitter.shared().telemetry);
    let metrics = &telemetry.metrics.otlp;
    let label = SourceLabel { source: source.clone() };
    let limit = config.memory_limit.as_usize();
    metrics.memory_limit_bytes.get_or_create(&label).set(limit as i64);
    let memory = Memory::new(limit, metrics.memory_bytes.get_or_create_owned(&label));
    let span_metrics = config.span_metrics.enabled.then(|| {
        telemetry.span_metrics.configure(config.span_metrics.max_series, config.span_metrics.expiration.0);
        Arc::clone(&telemetry.span_metrics)
    });
    let (tx, rx) = mpsc::unbounded_channel();
    let receiver = Arc::new(Receiver::new(
        &config,
        &source,
        metrics,
        span_metrics,
        Arc::clone(&memory),
        emitter.handles().dropped("invalid_span"),
        tx,
    ));
    let batcher = Batcher::new(BatcherSettings::from(&config.batch), memory, metrics, &source);
    let flush = Arc::new(tokio::sync::Notify::new());
    let batcher_task = tokio::spawn(batcher.run(rx, emitter, Arc::clone(&flush)));

    let ready = telemetry.readiness.register(&format!("source/{source}"));
    let servers = CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();
    let grpc = match config.grpc_address() {
        Some(address) => Some(bind("grpc", address, &cancel).await),
        None => None,
    };
    let http = match config.http_address() {
        Some(address) => Some(bind("http", address, &cancel).await),
        None => None,
    };
    if let Some(Some(listener)) = grpc {
        tasks.spawn(grpc::serve(listener, Arc::clone(&receiver), servers.clone()));
    }
    if let Some(Some(listener)) = http {
        tasks.spawn(http::serve(listener, Arc::clone(&receiver), servers.clone()));
    }
    if !cancel.is_cancelled() {
        ready.set(true);
        tracing::info!(source = %source, grpc = ?config.grpc_address(), http = ?config.http_address(), "otlp receiver listening");
        cancel.cancelled().await;
    }
    // Send what the batcher holds at once (the topology closes the sinks' queues soon after
    // cancelling sources), stop accepting, let requests in flight finish, send what they brought.
    flush.notify_one();
    servers.cancel();
    while tasks.join_next().await.is_some() {}
    drop(receiver);
    let _ = batcher_task.await;
    Ok(())
}

/// Binds `address`, retrying while it is taken (a replaced receiver may still hold it).
async fn bind(
    transport: &'static str,
    address: SocketAddr,
    cancel: &CancellationToken,
) -> Option<tokio::net::TcpListener> {
    let mut warned = false;
    loop {
        match tokio::net::TcpListener::bind(address).await {
            Ok(l) => return Some(l),
            Err(source) => {
                if !warned {
                    let error = OtlpSourceError::Bind { transport, address, source };
                    tracing::warn!(error = %error, "otlp receiver: retrying every second");
                    warned = true;
                }
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return None,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

#[cfg(test)]
mod tests;
