//! `otlp` sink: exports span batches over OTLP/gRPC (to Jaeger) or OTLP/HTTP protobuf.
//!
//! Shape: a dispatcher reads the sink's queue and starts one export task per batch, at most
//! `concurrency` at once (span order does not matter to a trace store). A task writes the
//! `ExportTraceServiceRequest` once, by concatenating the batch's span records, and sends it
//! until it is delivered or refused for good; it keeps the batch's queue permit meanwhile, so
//! the sink's queue bound covers the batches being retried, and sources feel the backpressure.
//!
//! Answers (PROTOCOLS.md): success, possibly with `partial_success` (its rejected spans are
//! counted as `sluice_sink_dropped_total{reason="partial_success"}` and logged, never
//! retried); retryable gRPC codes (CANCELLED, DEADLINE_EXCEEDED, ABORTED, OUT_OF_RANGE,
//! UNAVAILABLE, DATA_LOSS, and RESOURCE_EXHAUSTED with RetryInfo) or HTTP 429/502/503/504 and
//! transport errors are retried with exponential backoff, honouring RetryInfo / `Retry-After`;
//! anything else drops the batch, counted as `rejected_<code>`. Each batch's acknowledgement
//! is settled when it is delivered or dropped.

pub mod config;
mod grpc;
mod http;

use crate::config::common::BackoffConfig;
use crate::event::SpanBatch;
use crate::sinks::retry::Backoff;
use crate::telemetry::metrics::SinkHandles;
use crate::topology::queue::{QueueReceiver, QueuedBatch};
use config::{OtlpSinkConfig, Protocol};
use parking_lot::Mutex;
use prometheus_client::metrics::counter::Counter;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

#[derive(Debug, thiserror::Error)]
pub enum OtlpSinkError {
    #[error("endpoint `{endpoint}`: {message}")]
    Endpoint { endpoint: String, message: String },
    #[error(transparent)]
    Client(#[from] crate::sinks::http_client::ClientError),
    #[error("header `{name}`: {message}")]
    Header { name: String, message: String },
}

/// What an answer means for a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Accepted; `rejected` spans of it refused for good by the receiver.
    Delivered {
        rejected: i64,
        message: String,
    },
    Retry {
        reason: String,
        retry_after: Option<Duration>,
    },
    Drop {
        reason: String,
        detail: String,
    },
}

enum Exporter {
    Grpc(Box<grpc::GrpcExporter>),
    Http(Box<http::HttpExporter>),
}

impl Exporter {
    async fn export(&self, batch: &Arc<SpanBatch>) -> Outcome {
        match self {
            Exporter::Grpc(e) => e.export(batch).await,
            Exporter::Http(e) => e.export(batch).await,
        }
    }
}

struct Shared {
    exporter: Exporter,
    backoff: BackoffConfig,
    handles: SinkHandles,
    partial: Counter,
    dropped: Mutex<HashMap<String, Counter>>,
    last_log: Mutex<HashMap<String, Instant>>,
}

impl Shared {
    fn dropped(&self, reason: &str) -> Counter {
        self.dropped.lock().entry(reason.to_string()).or_insert_with(|| self.handles.dropped(reason)).clone()
    }

    /// Logs a refusal at most once a minute per reason.
    fn log_refusal(&self, reason: &str, detail: &str, spans: usize) {
        let now = Instant::now();
        let mut last = self.last_log.lock();
        if last.get(reason).is_some_and(|t| now.duration_since(*t) < Duration::from_secs(60)) {
            return;
        }
        last.insert(reason.to_string(), now);
        tracing::error!(sink = %self.handles.name, reason, detail, spans, "the OTLP receiver refused spans for good; they are dropped (logged at most once a minute per reason)");
    }
}

/// The sink, built and ready to run.
pub struct OtlpSink {
    shared: Arc<Shared>,
    concurrency: usize,
}

impl OtlpSink {
    /// Builds the client (reads TLS files); connects lazily.
    pub fn build(config: &OtlpSinkConfig, handles: SinkHandles) -> Result<OtlpSink, OtlpSinkError> {
        let exporter = match config.protocol {
            Protocol::Grpc => Exporter::Grpc(Box::new(grpc::GrpcExporter::build(config)?)),
            Protocol::Http => Exporter::Http(Box::new(http::HttpExporter::build(config)?)),
        };
        let partial = handles.dropped("partial_success");
        let shared = Shared {
            exporter,
            backoff: config.backoff.clone(),
            partial,
            handles,
            dropped: Mutex::new(HashMap::new()),
            last_log: Mutex::new(HashMap::new()),
        };
        Ok(OtlpSink { shared: Arc::new(shared), concurrency: config.concurrency.max(1) })
    }

    /// Runs until the queue closes and every batch taken is delivered or dropped.
    pub async fn run(self, mut rx: QueueReceiver<SpanBatch>) {
        let slots = Arc::new(Semaphore::new(self.concurrency));
        let mut tasks = JoinSet::new();
        while let Some(queued) = rx.recv().await {
            let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
                break;
            };
            let shared = Arc::clone(&self.shared);
            tasks.spawn(async move {
                deliver(&shared, queued).await;
                drop(slot);
            });
            while tasks.try_join_next().is_some() {}
        }
        while tasks.join_next().await.is_some() {}
    }
}

/// Sends one batch until it is delivered or refused for good.
async fn deliver(shared: &Shared, queued: QueuedBatch<SpanBatch>) {
    let QueuedBatch { mut batch, permit } = queued;
    let acks = std::mem::take(&mut batch.acks);
    let spans = batch.spans;
    shared.handles.batches.inc();
    let batch = Arc::new(batch);
    let mut backoff = Backoff::new(&shared.backoff);
    loop {
        let started = Instant::now();
        let outcome = shared.exporter.export(&batch).await;
        shared.handles.request_duration.observe(started.elapsed().as_secs_f64());
        match outcome {
            Outcome::Delivered { rejected, message } => {
                shared.handles.requests_success.inc();
                let rejected = usize::try_from(rejected).unwrap_or(0).min(spans);
                shared.handles.lines_sent.inc_by((spans - rejected) as u64);
                shared.handles.bytes_sent.inc_by(batch.bytes as u64);
                if rejected > 0 {
                    shared.partial.inc_by(rejected as u64);
                    shared.log_refusal("partial_success", &message, rejected);
                }
                break;
            }
            Outcome::Drop { reason, detail } => {
                shared.handles.requests_rejected.inc();
                shared.dropped(&reason).inc_by(spans as u64);
                shared.log_refusal(&reason, &detail, spans);
                break;
            }
            Outcome::Retry { reason, retry_after } => {
                shared.handles.requests_retry.inc();
                let Some(delay) = backoff.next_delay(retry_after) else {
                    shared.dropped("max_retries").inc_by(spans as u64);
                    tracing::error!(sink = %shared.handles.name, reason, retries = backoff.retries(), spans, "giving up on a span batch after its last retry");
                    break;
                };
                if backoff.retries() == 1 || backoff.retries().is_multiple_of(10) {
                    tracing::warn!(sink = %shared.handles.name, reason, retry_in_ms = delay.as_millis() as u64, retries = backoff.retries(), "span export failed; retrying");
                }
                shared.handles.retries.inc();
                tokio::time::sleep(delay).await;
            }
        }
    }
    acks.settle();
    drop(permit);
}

/// The gRPC status codes OTLP retries (RESOURCE_EXHAUSTED only with RetryInfo).
pub fn grpc_retryable(code: tonic::Code, has_retry_info: bool) -> bool {
    use tonic::Code::*;
    match code {
        Cancelled | DeadlineExceeded | Aborted | OutOfRange | Unavailable | DataLoss => true,
        ResourceExhausted => has_retry_info,
        _ => false,
    }
}

/// `rejected_<code>` for a final gRPC status.
pub fn grpc_reason(code: tonic::Code) -> String {
    let name = format!("{code:?}");
    let mut reason = String::from("rejected_");
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            reason.push('_');
        }
        reason.push(c.to_ascii_lowercase());
    }
    reason
}

#[cfg(test)]
mod tests;
