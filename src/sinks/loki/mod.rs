//! The Loki sink: batches per tenant, protobuf + snappy pushes, retries, acknowledgements.
//!
//! Shape: one dispatcher task reads the sink's queue and fills a [`batch::PendingBatch`] per
//! tenant, encoding each entry into its stream as it joins (see [`encode`]); a batch is closed
//! when it reaches `batch_size` (at most half the queue's `max_bytes`, whose room its entries
//! hold) or is `batch_wait` old and handed to that tenant's worker, which frames and compresses
//! it, pushes it and retries it. One push in flight per tenant
//! keeps each stream in order; a tenant whose Loki refuses or hangs holds only its own worker
//! (its closed batches wait in its own list, bounded by the sink's queue permits).
//!
//! Answers (PROTOCOLS.md): 2xx is success, except Loki's 260 (ingestion blocked), which is a
//! drop; 429, 5xx and transport errors are retried with backoff, honouring `Retry-After`; any
//! other 4xx drops the batch, counted by reason and logged once per reason, and is never
//! retried, because Loki already stored the valid entries of a push it answered with 400.

pub mod batch;
pub mod config;
pub mod encode;

use crate::event::LogEntry;
use crate::sinks::http_client::{Auth, ClientError, HttpClient, build_client};
use crate::sinks::retry::{Backoff, parse_retry_after};
use crate::telemetry::metrics::SinkHandles;
use crate::topology::queue::{QueuePermit, QueueReceiver, QueuedBatch};
use batch::PendingBatch;
use bytes::Bytes;
use config::LokiConfig;
use encode::{PushEncoder, StreamRef};
use http::{HeaderValue, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use parking_lot::Mutex;
use prometheus_client::metrics::counter::Counter;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

/// A tenant: `None` sends no `X-Scope-OrgID`.
type Tenant = Option<Arc<str>>;

/// A closed batch on its way to a tenant's worker.
struct PushBatch {
    streams: Vec<batch::StreamBuf>,
    lines: usize,
    bytes: usize,
    acks: crate::event::AckSet,
    _permits: Vec<Arc<QueuePermit>>,
}

/// What Loki's answer means for a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Delivered,
    Retry { reason: String, retry_after: Option<Duration> },
    Drop { reason: String, detail: String },
}

fn classify(status: StatusCode, retry_after: Option<Duration>, body: &str) -> Outcome {
    let detail = body.trim().chars().take(512).collect::<String>();
    match status.as_u16() {
        260 => {
            Outcome::Drop { reason: "rejected_260".into(), detail: "Loki answered 260: ingestion is blocked".into() }
        }
        200..=299 => Outcome::Delivered,
        429 => Outcome::Retry { reason: "http 429".into(), retry_after },
        500..=599 => Outcome::Retry { reason: format!("http {}", status.as_u16()), retry_after },
        code => Outcome::Drop { reason: format!("rejected_{code}"), detail },
    }
}

/// What every worker of the sink shares.
struct Shared {
    client: HttpClient,
    url: Uri,
    auth: Auth,
    headers: Vec<(http::HeaderName, HeaderValue)>,
    timeout: Duration,
    backoff: crate::config::common::BackoffConfig,
    structured_metadata: bool,
    external_labels: Vec<(String, String)>,
    handles: SinkHandles,
    logged: Mutex<HashSet<String>>,
    dropped: Mutex<HashMap<String, Counter>>,
}

impl Shared {
    fn dropped(&self, reason: &str) -> Counter {
        self.dropped.lock().entry(reason.to_string()).or_insert_with(|| self.handles.dropped(reason)).clone()
    }

    /// Logs a refusal reason the first time it is seen.
    fn log_once(&self, reason: &str, detail: &str) {
        if self.logged.lock().insert(reason.to_string()) {
            tracing::error!(sink = %self.handles.name, reason, detail, "Loki refused a batch; it is dropped and not retried (logged once per reason)");
        }
    }
}

/// The sink, built and ready to run.
pub struct LokiSink {
    shared: Arc<Shared>,
    batch_size: usize,
    batch_wait: Duration,
    tenant_id: Tenant,
    tenant_label: Option<String>,
    max_line_size: usize,
    truncate: bool,
    truncated: Counter,
    too_long: Counter,
}

struct TenantState {
    pending: PendingBatch,
    closed: VecDeque<PushBatch>,
    tx: mpsc::Sender<PushBatch>,
}

impl LokiSink {
    /// Builds the client (reads TLS and credential files).
    pub fn build(config: &LokiConfig, handles: SinkHandles) -> Result<LokiSink, ClientError> {
        let client = build_client(&config.tls)?;
        let auth = Auth::from_config(
            config.basic_auth.as_ref(),
            config.bearer_token.as_deref(),
            config.bearer_token_file.as_deref(),
        )?;
        let url: Uri =
            config.url.value.parse().map_err(|_| ClientError::Tls(format!("invalid url {}", config.url.value)))?;
        let mut headers = Vec::new();
        for (name, value) in &config.headers {
            let name = http::HeaderName::from_bytes(name.as_bytes()).map_err(|_| ClientError::Header)?;
            headers.push((name, HeaderValue::from_str(value).map_err(|_| ClientError::Header)?));
        }
        let shared = Arc::new(Shared {
            client,
            url,
            auth,
            headers,
            timeout: config.timeout.0,
            backoff: config.backoff.clone(),
            structured_metadata: config.structured_metadata,
            external_labels: config.external_labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            logged: Mutex::new(HashSet::new()),
            dropped: Mutex::new(HashMap::new()),
            handles: handles.clone(),
        });
        Ok(LokiSink {
            // The batch being filled holds its entries' room in the queue: with a queue of less
            // than two batches, the sources would wait for batch_wait at every push.
            batch_size: config
                .batch_size
                .as_usize()
                .min(config.queue.max_bytes_or(LokiConfig::DEFAULT_QUEUE_BYTES).as_usize() / 2)
                .max(1),
            batch_wait: config.batch_wait.0,
            tenant_id: config.tenant_id.as_deref().map(Arc::from),
            tenant_label: config.tenant_label.clone(),
            max_line_size: config.max_line_size.as_usize(),
            truncate: config.max_line_size_truncate,
            truncated: handles.truncated.clone(),
            too_long: shared.dropped("line_too_long"),
            shared,
        })
    }

    fn tenant_of(&self, entry: &LogEntry) -> Tenant {
        match self.tenant_label.as_deref().and_then(|l| entry.labels.get(l)) {
            Some(t) => Some(Arc::from(t)),
            None => self.tenant_id.clone(),
        }
    }

    /// Applies the line size limit: truncates (at a character boundary) or drops.
    fn limit_line(&self, entry: &mut LogEntry) -> bool {
        if self.max_line_size == 0 || entry.line.len() <= self.max_line_size {
            return true;
        }
        if !self.truncate {
            self.too_long.inc();
            return false;
        }
        let mut cut = self.max_line_size;
        while cut > 0 && (entry.line[cut] & 0xC0) == 0x80 {
            cut -= 1;
        }
        entry.line.truncate(cut);
        self.truncated.inc();
        true
    }

    /// Runs until the queue closes, then delivers what it holds.
    pub async fn run(self, mut rx: QueueReceiver) {
        let mut tenants: HashMap<Tenant, TenantState> = HashMap::new();
        let mut workers = JoinSet::new();
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                queued = rx.recv() => match queued {
                    Some(queued) => self.accept(queued, &mut tenants, &mut workers),
                    None => break,
                },
                _ = tick.tick() => {
                    for state in tenants.values_mut() {
                        if !state.pending.is_empty() && state.pending.created.elapsed() >= self.batch_wait {
                            self.close(state);
                        }
                        dispatch(state);
                    }
                    self.shared.handles.active_streams.set(tenants.values().map(|t| t.pending.stream_count() as i64).sum());
                }
            }
        }
        // The queue closed: close every batch and hand everything to the workers.
        for (_, mut state) in tenants.drain() {
            if !state.pending.is_empty() {
                self.close(&mut state);
            }
            while let Some(batch) = state.closed.pop_front() {
                if state.tx.send(batch).await.is_err() {
                    break;
                }
            }
        }
        while workers.join_next().await.is_some() {}
    }

    fn accept(&self, queued: QueuedBatch, tenants: &mut HashMap<Tenant, TenantState>, workers: &mut JoinSet<()>) {
        let QueuedBatch { batch, permit } = queued;
        let acks = batch.acks;
        // A queued batch goes into one push when it fits in one: its acknowledgement settles
        // with that push, whereas a batch split over two pushes is read again whole when the
        // second one is never delivered (a shutdown deadline, a crash).
        let whole: usize = batch.entries.iter().map(PendingBatch::entry_size).sum();
        let mut touched: Vec<Tenant> = Vec::new();
        for mut entry in batch.entries {
            if !self.limit_line(&mut entry) {
                continue;
            }
            let tenant = self.tenant_of(&entry);
            let state = tenants.entry(tenant.clone()).or_insert_with(|| {
                let (tx, rx) = mpsc::channel(1);
                workers.spawn(worker(Arc::clone(&self.shared), tenant.clone(), rx));
                TenantState { pending: PendingBatch::new(self.shared.structured_metadata), closed: VecDeque::new(), tx }
            });
            let first_here = !touched.contains(&tenant);
            let coming = if first_here { whole } else { PendingBatch::entry_size(&entry) };
            if !state.pending.is_empty() && state.pending.bytes + coming > self.batch_size {
                state.pending.carry(&acks, &permit);
                self.close(state);
            }
            state.pending.add(entry);
            if first_here {
                touched.push(tenant);
            }
        }
        for tenant in &touched {
            if let Some(state) = tenants.get_mut(tenant) {
                state.pending.carry(&acks, &permit);
                if state.pending.bytes >= self.batch_size {
                    self.close(state);
                }
                dispatch(state);
            }
        }
        // Every holder took its own share; this one is done.
        acks.settle();
    }

    fn close(&self, state: &mut TenantState) {
        let pending = state.pending.take();
        let (lines, bytes) = (pending.lines, pending.bytes);
        let (streams, acks, permits) = pending.into_streams();
        self.shared.handles.batches.inc();
        state.closed.push_back(PushBatch { streams, lines, bytes, acks, _permits: permits });
    }
}

/// Hands closed batches to the tenant's worker while it has room.
fn dispatch(state: &mut TenantState) {
    while let Some(batch) = state.closed.pop_front() {
        match state.tx.try_send(batch) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(batch) | mpsc::error::TrySendError::Closed(batch)) => {
                state.closed.push_front(batch);
                return;
            }
        }
    }
}

/// A tenant's worker: one push at a time, retried until it is delivered or refused for good.
async fn worker(shared: Arc<Shared>, tenant: Tenant, mut rx: mpsc::Receiver<PushBatch>) {
    let mut encoder = PushEncoder::default();
    let mut labels_cache: HashMap<u64, Arc<str>> = HashMap::new();
    while let Some(batch) = rx.recv().await {
        let body = {
            let rendered: Vec<Arc<str>> =
                batch.streams.iter().map(|s| stream_labels(&shared, &mut labels_cache, &s.labels)).collect();
            let refs: Vec<StreamRef<'_>> = batch
                .streams
                .iter()
                .zip(&rendered)
                .map(|(s, l)| StreamRef { labels: l, entries: &s.entries })
                .collect();
            Bytes::copy_from_slice(encoder.encode(&refs))
        };
        let mut backoff = Backoff::new(&shared.backoff);
        loop {
            let outcome = push(&shared, tenant.as_deref(), body.clone()).await;
            match outcome {
                Outcome::Delivered => {
                    shared.handles.requests_success.inc();
                    shared.handles.lines_sent.inc_by(batch.lines as u64);
                    shared.handles.bytes_sent.inc_by(batch.bytes as u64);
                    batch.acks.settle();
                    break;
                }
                Outcome::Drop { reason, detail } => {
                    shared.handles.requests_rejected.inc();
                    shared.dropped(&reason).inc_by(batch.lines as u64);
                    shared.log_once(&reason, &detail);
                    batch.acks.settle();
                    break;
                }
                Outcome::Retry { reason, retry_after } => {
                    shared.handles.requests_retry.inc();
                    let Some(delay) = backoff.next_delay(retry_after) else {
                        shared.dropped("max_retries").inc_by(batch.lines as u64);
                        tracing::error!(sink = %shared.handles.name, reason, retries = backoff.retries(), "giving up on a batch after its last retry");
                        batch.acks.settle();
                        break;
                    };
                    tracing::warn!(sink = %shared.handles.name, reason, retry_in_ms = delay.as_millis() as u64, "push failed; retrying");
                    shared.handles.retries.inc();
                    tokio::time::sleep(delay).await;
                }
            }
        }
        if labels_cache.len() > 100_000 {
            labels_cache.clear();
        }
    }
}

/// The label string of a stream, with the sink's external labels (stream labels win).
fn stream_labels(shared: &Shared, cache: &mut HashMap<u64, Arc<str>>, labels: &crate::event::LabelSet) -> Arc<str> {
    if shared.external_labels.is_empty() {
        return Arc::from(labels.rendered());
    }
    cache
        .entry(labels.hash_value())
        .or_insert_with(|| {
            let mut pairs: Vec<(&str, &str)> = labels.pairs().iter().map(|(n, v)| (&**n, &**v)).collect();
            for (n, v) in &shared.external_labels {
                if !pairs.iter().any(|(existing, _)| existing == n) {
                    pairs.push((n, v));
                }
            }
            Arc::from(crate::event::LabelSet::from_pairs(pairs).rendered())
        })
        .clone()
}

async fn push(shared: &Shared, tenant: Option<&str>, body: Bytes) -> Outcome {
    let mut request = Request::post(shared.url.clone())
        .header(http::header::CONTENT_TYPE, "application/x-protobuf")
        .header(http::header::USER_AGENT, concat!("sluice/", env!("CARGO_PKG_VERSION")));
    if let Some(tenant) = tenant {
        request = request.header("X-Scope-OrgID", tenant);
    }
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
        let response = shared.client.request(request).await.map_err(|e| format!("{e:?}"))?;
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
mod tests {
    use super::*;

    #[test]
    fn answers_are_classified_as_protocols_md_says() {
        let s = |c: u16| StatusCode::from_u16(c).unwrap();
        assert_eq!(classify(s(204), None, ""), Outcome::Delivered);
        assert_eq!(classify(s(200), None, ""), Outcome::Delivered);
        assert!(matches!(classify(s(260), None, ""), Outcome::Drop { reason, .. } if reason == "rejected_260"));
        assert!(
            matches!(classify(s(429), Some(Duration::from_secs(3)), ""), Outcome::Retry { retry_after: Some(d), .. } if d == Duration::from_secs(3))
        );
        for code in [500, 502, 503, 504] {
            assert!(matches!(classify(s(code), None, ""), Outcome::Retry { .. }), "{code}");
        }
        for code in [400, 401, 403, 404, 413, 422] {
            assert!(
                matches!(classify(s(code), None, "entry too far behind"), Outcome::Drop { reason, detail } if reason == format!("rejected_{code}") && detail == "entry too far behind"),
                "{code}"
            );
        }
    }
}
