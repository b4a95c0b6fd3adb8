//! `prometheus_remote_write` sink: Remote Write 1.0 to Prometheus (PROTOCOLS.md).
//!
//! Shape: one dispatcher task reads the sink's queue and deals samples to `shards` shards by
//! series hash, so that every sample of a series goes through one shard, in order. A shard's
//! batch is closed when it holds `max_samples_per_send` samples or its oldest sample waited
//! `batch_send_deadline`, and handed to the shard's worker, which encodes it (protobuf by hand,
//! snappy block format), sends it and retries it. One request in flight per shard keeps each
//! series in order even across retries (Prometheus refuses out-of-order samples). A batch holds
//! the queue permits of the samples it carries, so the queue's byte bound covers everything the
//! sink holds: when the receiver is down, the queue fills and scrapes wait.
//!
//! Requests: `POST` with `Content-Encoding: snappy`, `Content-Type: application/x-protobuf`,
//! `X-Prometheus-Remote-Write-Version: 0.1.0` and `User-Agent`. Answers: 2xx is success; 429
//! and 5xx and transport errors are retried with backoff, honouring `Retry-After`; any other
//! 4xx drops the batch, counted as `sluice_sink_dropped_total{reason="rejected_<code>"}` (in
//! samples) and logged once per reason, never retried: Prometheus refuses a whole request when
//! one sample is invalid and would refuse it again.
//!
//! Self-metrics, the sink families with records being samples: `sluice_sink_lines_sent_total`
//! (samples written), `sluice_sink_bytes_sent_total` (compressed request bytes),
//! `sluice_sink_requests_total{result}`, `sluice_sink_retries_total`,
//! `sluice_sink_dropped_total{reason}` (samples), `sluice_sink_batches_total`,
//! `sluice_sink_request_duration_seconds`, `sluice_sink_queue_bytes` (the queue, up to
//! delivery) and `sluice_sink_active_streams`, which for this sink is the number of samples it
//! holds in its shards (each becomes one `TimeSeries` of a request): the queue length in samples.

pub mod config;
pub mod encode;

use crate::event::AckSet;
use crate::event::samples::{Sample, SampleBatch};
use crate::sinks::http_client::{Auth, ClientError, HttpClient, build_client};
use crate::sinks::retry::{Backoff, parse_retry_after};
use crate::telemetry::metrics::SinkHandles;
use crate::topology::queue::{QueuePermit, QueueReceiver, QueuedBatch};
use bytes::Bytes;
use config::RemoteWriteConfig;
use encode::WriteEncoder;
use http::{HeaderValue, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use parking_lot::Mutex;
use prometheus_client::metrics::counter::Counter;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

#[derive(Debug, thiserror::Error)]
pub enum RemoteWriteError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("invalid url `{0}`")]
    Url(String),
    #[error("header `{0}` cannot be sent")]
    Header(String),
}

/// What an answer means for a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Delivered,
    Retry { reason: String, retry_after: Option<Duration> },
    Drop { reason: String, detail: String },
}

fn classify(status: StatusCode, retry_after: Option<Duration>, body: &str) -> Outcome {
    match status.as_u16() {
        200..=299 => Outcome::Delivered,
        429 => Outcome::Retry { reason: "http 429".into(), retry_after },
        500..=599 => Outcome::Retry { reason: format!("http {}", status.as_u16()), retry_after },
        code => Outcome::Drop { reason: format!("rejected_{code}"), detail: body.trim().chars().take(512).collect() },
    }
}

/// What every shard worker shares.
struct Shared {
    client: HttpClient,
    url: Uri,
    auth: Auth,
    headers: Vec<(http::HeaderName, HeaderValue)>,
    timeout: Duration,
    backoff: crate::config::common::BackoffConfig,
    external_labels: Vec<(String, String)>,
    handles: SinkHandles,
    logged: Mutex<HashSet<String>>,
    dropped: Mutex<HashMap<String, Counter>>,
}

impl Shared {
    fn dropped(&self, reason: &str) -> Counter {
        self.dropped.lock().entry(reason.to_string()).or_insert_with(|| self.handles.dropped(reason)).clone()
    }

    fn log_once(&self, reason: &str, detail: &str) {
        if self.logged.lock().insert(reason.to_string()) {
            tracing::error!(sink = %self.handles.name, reason, detail, "the receiver refused a request; its samples are dropped and not retried (logged once per reason)");
        }
    }
}

/// Samples of one shard on their way out, with the tokens and queue space they hold.
struct ShardBatch {
    samples: Vec<Sample>,
    acks: AckSet,
    permits: Vec<Arc<QueuePermit>>,
    created: Instant,
    /// Whether samples were added since the tokens of the queued batch being dealt were carried.
    fresh: bool,
}

impl ShardBatch {
    fn new(capacity: usize) -> ShardBatch {
        ShardBatch {
            samples: Vec::with_capacity(capacity),
            acks: AckSet::new(),
            permits: Vec::new(),
            created: Instant::now(),
            fresh: false,
        }
    }

    fn carry(&mut self, acks: &AckSet, permit: &Arc<QueuePermit>) {
        self.acks.extend_cloned(acks);
        if !self.permits.iter().any(|p| Arc::ptr_eq(p, permit)) {
            self.permits.push(Arc::clone(permit));
        }
        self.fresh = false;
    }
}

struct Shard {
    batch: ShardBatch,
    closed: VecDeque<ShardBatch>,
    tx: mpsc::Sender<ShardBatch>,
}

/// The sink, built and ready to run.
pub struct RemoteWriteSink {
    shared: Arc<Shared>,
    shards: usize,
    max_samples: usize,
    deadline: Duration,
}

impl RemoteWriteSink {
    /// Builds the client (reads TLS and credential files).
    pub fn build(config: &RemoteWriteConfig, handles: SinkHandles) -> Result<RemoteWriteSink, RemoteWriteError> {
        let client = build_client(&config.tls)?;
        let auth = Auth::from_config(
            config.basic_auth.as_ref(),
            config.bearer_token.as_deref(),
            config.bearer_token_file.as_deref(),
        )?;
        let url: Uri = config.url.value.parse().map_err(|_| RemoteWriteError::Url(config.url.value.clone()))?;
        let mut headers = Vec::new();
        for (name, value) in &config.headers {
            let header =
                http::HeaderName::from_bytes(name.as_bytes()).map_err(|_| RemoteWriteError::Header(name.clone()))?;
            headers.push((header, HeaderValue::from_str(value).map_err(|_| RemoteWriteError::Header(name.clone()))?));
        }
        let shards = config.shards.max(1);
        let shared = Arc::new(Shared {
            client,
            url,
            auth,
            headers,
            timeout: config.timeout.0,
            backoff: config.backoff.clone(),
            external_labels: config.external_labels.iter().map(|(n, v)| (n.clone(), v.clone())).collect(),
            logged: Mutex::new(HashSet::new()),
            dropped: Mutex::new(HashMap::new()),
            handles,
        });
        Ok(RemoteWriteSink {
            shared,
            shards,
            max_samples: config.max_samples_per_send.max(1),
            deadline: config.batch_send_deadline.0,
        })
    }

    /// Runs until the queue closes, then delivers what it holds.
    pub async fn run(self, mut rx: QueueReceiver<SampleBatch>) {
        let mut workers = JoinSet::new();
        let mut shards: Vec<Shard> = (0..self.shards)
            .map(|_| {
                let (tx, rx) = mpsc::channel(1);
                workers.spawn(worker(Arc::clone(&self.shared), rx));
                Shard { batch: ShardBatch::new(self.max_samples), closed: VecDeque::new(), tx }
            })
            .collect();
        let tick_every = (self.deadline / 4).clamp(Duration::from_millis(10), Duration::from_millis(250));
        let mut tick = tokio::time::interval(tick_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                queued = rx.recv() => match queued {
                    Some(queued) => self.accept(queued, &mut shards),
                    None => break,
                },
                _ = tick.tick() => {
                    for shard in &mut shards {
                        if !shard.batch.samples.is_empty() && shard.batch.created.elapsed() >= self.deadline {
                            self.close(shard);
                        }
                        dispatch(shard);
                    }
                }
            }
        }
        // The queue closed: close every batch and hand everything to the workers.
        for mut shard in shards {
            if !shard.batch.samples.is_empty() {
                self.close(&mut shard);
            }
            while let Some(batch) = shard.closed.pop_front() {
                if shard.tx.send(batch).await.is_err() {
                    break;
                }
            }
        }
        while workers.join_next().await.is_some() {}
    }

    fn accept(&self, queued: QueuedBatch<SampleBatch>, shards: &mut [Shard]) {
        let QueuedBatch { batch, permit } = queued;
        let SampleBatch { samples, acks } = batch;
        self.shared.handles.active_streams.inc_by(samples.len() as i64);
        let n = shards.len() as u64;
        for sample in samples {
            let shard = &mut shards[(sample.series.hash() % n) as usize];
            if shard.batch.samples.is_empty() {
                shard.batch.created = Instant::now();
            }
            shard.batch.samples.push(sample);
            shard.batch.fresh = true;
            if shard.batch.samples.len() >= self.max_samples {
                shard.batch.carry(&acks, &permit);
                self.close(shard);
            }
        }
        for shard in shards.iter_mut() {
            if shard.batch.fresh {
                shard.batch.carry(&acks, &permit);
            }
            dispatch(shard);
        }
        // Every shard that holds samples of this batch took its own share.
        acks.settle();
    }

    fn close(&self, shard: &mut Shard) {
        let batch = std::mem::replace(&mut shard.batch, ShardBatch::new(self.max_samples));
        self.shared.handles.batches.inc();
        shard.closed.push_back(batch);
    }
}

/// Hands closed batches to the shard's worker while it has room.
fn dispatch(shard: &mut Shard) {
    while let Some(batch) = shard.closed.pop_front() {
        match shard.tx.try_send(batch) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(batch) | mpsc::error::TrySendError::Closed(batch)) => {
                shard.closed.push_front(batch);
                return;
            }
        }
    }
}

/// A shard's worker: one request at a time, retried until delivered or refused for good.
async fn worker(shared: Arc<Shared>, mut rx: mpsc::Receiver<ShardBatch>) {
    let mut encoder = WriteEncoder::new(shared.external_labels.iter().cloned());
    while let Some(batch) = rx.recv().await {
        let count = batch.samples.len() as u64;
        let body = Bytes::copy_from_slice(encoder.encode(&batch.samples));
        let mut backoff = Backoff::new(&shared.backoff);
        loop {
            match send(&shared, body.clone()).await {
                Outcome::Delivered => {
                    shared.handles.requests_success.inc();
                    shared.handles.lines_sent.inc_by(count);
                    shared.handles.bytes_sent.inc_by(body.len() as u64);
                    break;
                }
                Outcome::Drop { reason, detail } => {
                    shared.handles.requests_rejected.inc();
                    shared.dropped(&reason).inc_by(count);
                    shared.log_once(&reason, &detail);
                    break;
                }
                Outcome::Retry { reason, retry_after } => {
                    shared.handles.requests_retry.inc();
                    let Some(delay) = backoff.next_delay(retry_after) else {
                        shared.dropped("max_retries").inc_by(count);
                        tracing::error!(sink = %shared.handles.name, reason, retries = backoff.retries(), samples = count, "giving up on a request after its last retry");
                        break;
                    };
                    tracing::warn!(sink = %shared.handles.name, reason, retry_in_ms = delay.as_millis() as u64, "remote write failed; retrying");
                    shared.handles.retries.inc();
                    tokio::time::sleep(delay).await;
                }
            }
        }
        shared.handles.active_streams.dec_by(count as i64);
        batch.acks.settle();
        drop(batch.permits);
    }
}

async fn send(shared: &Shared, body: Bytes) -> Outcome {
    let mut request = Request::post(shared.url.clone())
        .header(http::header::CONTENT_ENCODING, "snappy")
        .header(http::header::CONTENT_TYPE, "application/x-protobuf")
        .header("X-Prometheus-Remote-Write-Version", "0.1.0")
        .header(http::header::USER_AGENT, concat!("sluice/", env!("CARGO_PKG_VERSION")));
    match shared.auth.header() {
        Ok(Some(value)) => request = request.header(http::header::AUTHORIZATION, value),
        Ok(None) => {}
        Err(e) => return Outcome::Retry { reason: e.to_string(), retry_after: None },
    }
    for (name, value) in &shared.headers {
        request = request.header(name, value);
    }
    let request = match request.body(Full::new(body)) {
        Ok(r) => r,
        Err(e) => return Outcome::Drop { reason: "invalid_request".into(), detail: e.to_string() },
    };
    let started = Instant::now();
    let answer = tokio::time::timeout(shared.timeout, async {
        let response = shared.client.request(request).await.map_err(|e| {
            use std::error::Error as _;
            format!("{e}{}", e.source().map(|s| format!(": {s}")).unwrap_or_default())
        })?;
        let status = response.status();
        let retry_after = parse_retry_after(response.headers().get(http::header::RETRY_AFTER));
        let body = response.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        Ok::<_, String>((status, retry_after, body))
    })
    .await;
    shared.handles.request_duration.observe(started.elapsed().as_secs_f64());
    match answer {
        Ok(Ok((status, retry_after, body))) => classify(status, retry_after, &String::from_utf8_lossy(&body)),
        Ok(Err(e)) => Outcome::Retry { reason: format!("transport error: {e}"), retry_after: None },
        Err(_) => Outcome::Retry { reason: format!("no answer within {:?}", shared.timeout), retry_after: None },
    }
}

#[cfg(test)]
mod tests;
