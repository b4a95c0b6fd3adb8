//! One target's scrape loop.
//!
//! Every `scrape_interval`, at an offset within the interval fixed by the target's identity (so
//! that targets spread out and keep their phase across restarts), the loop:
//! 1. requests the target with an `Accept` header that prefers OpenMetrics (as Prometheus 2.x
//!    does) and `X-Prometheus-Scrape-Timeout-Seconds`, and reads the body into a buffer reused
//!    from one scrape to the next, up to `body_size_limit`, all within `scrape_timeout`;
//! 2. parses it by its `Content-Type` ([`super::parse`]) and turns each sample into a sample of
//!    a cached series ([`super::series`]), stamped with the scrape's start time unless the
//!    exposition gave a timestamp (and `honor_timestamps` is on);
//! 3. adds stale markers and the report series `up`, `scrape_duration_seconds`,
//!    `scrape_samples_scraped`, `scrape_samples_post_metric_relabeling` and
//!    `scrape_series_added`, with the target's labels;
//! 4. sends the scrape as one batch, waiting while the sinks' queues are full.
//!
//! A failed scrape (no answer, a status other than 200, a body too large, an invalid
//! exposition, too many samples) sends no scraped samples at all: `up` is 0 and the series of
//! the previous scrape are marked stale, as in Prometheus. The failure is counted by reason and
//! logged when a target starts failing or fails differently, not at every interval.
//!
//! When the target goes away (discovery no longer lists it) the loop sends stale markers for
//! everything it sent last; when the whole source stops it does not, as a restarted agent goes
//! on with the same series.

use super::Job;
use super::parse::{Format, ParseError, ParseState, Parser};
use super::series::{Lookup, SeriesCache, SeriesError};
use super::target::Target;
use crate::event::samples::{Sample, SampleBatch, Series, stale_nan};
use crate::topology::SignalEmitter;
use bytes::Bytes;
use http::{HeaderValue, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio_util::sync::CancellationToken;

/// Prometheus 2.x's `Accept` header when OpenMetrics is allowed.
pub const ACCEPT_OPENMETRICS: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
/// The `Accept` header for the text format only.
pub const ACCEPT_TEXT: &str = "text/plain;version=0.0.4;q=1.0,*/*;q=0.1";

/// Why a scrape failed: a short reason (the `reason` label) and the message to log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub reason: &'static str,
    pub message: String,
}

impl Failure {
    fn new(reason: &'static str, message: impl Into<String>) -> Failure {
        Failure { reason, message: message.into() }
    }
}

impl From<ParseError> for Failure {
    fn from(e: ParseError) -> Failure {
        Failure::new("parse", format!("invalid exposition: {e}"))
    }
}

impl From<SeriesError> for Failure {
    fn from(e: SeriesError) -> Failure {
        Failure::new("invalid_series", format!("invalid series: {e}"))
    }
}

fn now_ms() -> i64 {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    i64::try_from(now.as_millis()).unwrap_or(i64::MAX)
}

/// The report series of a target.
struct Report {
    up: Arc<Series>,
    duration: Arc<Series>,
    scraped: Arc<Series>,
    post_relabel: Arc<Series>,
    added: Arc<Series>,
}

impl Report {
    fn new(target: &Target) -> Result<Report, String> {
        let series = |name: &str| {
            let pairs =
                std::iter::once(("__name__", name)).chain(target.labels.iter().map(|(n, v)| (n.as_str(), v.as_str())));
            Series::new(pairs).map(Arc::new).map_err(|e| format!("target {}: {e}", target.url))
        };
        Ok(Report {
            up: series("up")?,
            duration: series("scrape_duration_seconds")?,
            scraped: series("scrape_samples_scraped")?,
            post_relabel: series("scrape_samples_post_metric_relabeling")?,
            added: series("scrape_series_added")?,
        })
    }

    fn all(&self) -> [&Arc<Series>; 5] {
        [&self.up, &self.duration, &self.scraped, &self.post_relabel, &self.added]
    }
}

/// What a successful scrape produced.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub scraped: usize,
    pub sent: usize,
    pub duplicates: usize,
    pub relabel_dropped: usize,
}

/// Parses `body` into `out` through `cache` (one scrape of the cache). On error, `out` may hold
/// part of the scrape.
#[allow(clippy::too_many_arguments)]
pub fn append(
    body: &[u8],
    format: Format,
    job: &Job,
    state: &mut ParseState,
    cache: &mut SeriesCache,
    timestamp_ms: i64,
    out: &mut Vec<Sample>,
) -> Result<Counts, Failure> {
    cache.begin();
    let mut parser = Parser::new(body, format, job.limits, state)?;
    let mut counts = Counts::default();
    while let Some(sample) = parser.next_sample()? {
        counts.scraped += 1;
        if job.sample_limit > 0 && counts.scraped > job.sample_limit {
            return Err(Failure::new("sample_limit", format!("more than {} samples (sample_limit)", job.sample_limit)));
        }
        match cache.lookup(&sample)? {
            Lookup::Send(series) => {
                let timestamp_ms = match sample.timestamp_ms {
                    Some(ts) if job.honor_timestamps => ts,
                    _ => timestamp_ms,
                };
                out.push(Sample { series, timestamp_ms, value: sample.value });
                counts.sent += 1;
            }
            Lookup::Dropped => counts.relabel_dropped += 1,
            Lookup::Duplicate => counts.duplicates += 1,
        }
    }
    Ok(counts)
}

pub struct TargetLoop {
    job: Arc<Job>,
    target: Target,
    emitter: Arc<SignalEmitter<SampleBatch>>,
    cache: SeriesCache,
    state: ParseState,
    body: Vec<u8>,
    report: Report,
    /// The message of the failure the target is in, to log only changes.
    failing: Option<String>,
    last_len: usize,
}

impl TargetLoop {
    pub fn new(job: Arc<Job>, target: Target, emitter: Arc<SignalEmitter<SampleBatch>>) -> Result<TargetLoop, String> {
        let report = Report::new(&target)?;
        let cache = SeriesCache::new(target.labels.clone(), job.honor_labels, Arc::clone(&job.metric_relabel));
        Ok(TargetLoop {
            job,
            target,
            emitter,
            cache,
            state: ParseState::default(),
            body: Vec::new(),
            report,
            failing: None,
            last_len: 0,
        })
    }

    /// The wait before the first scrape: the target's offset within the interval.
    fn first_delay(&self) -> Duration {
        let interval = u64::try_from(self.job.interval.as_millis()).unwrap_or(u64::MAX).max(1);
        let offset =
            foldhash::fast::FixedState::with_seed(0x5c4a_9e00_0000_0001).hash_one(self.target.key()) % interval;
        let now = u64::try_from(now_ms()).unwrap_or(0) % interval;
        Duration::from_millis((offset + interval - now) % interval)
    }

    /// Scrapes until `cancel` (the source stops) or `removed` (the target went away, which sends
    /// stale markers for everything last sent).
    pub async fn run(mut self, cancel: CancellationToken, removed: CancellationToken) {
        let start = tokio::time::Instant::now() + self.first_delay();
        let mut ticker = tokio::time::interval_at(start, self.job.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = removed.cancelled() => break,
                _ = ticker.tick() => {}
            }
            let batch = tokio::select! {
                _ = cancel.cancelled() => return,
                _ = removed.cancelled() => break,
                batch = self.scrape() => batch,
            };
            let sent = tokio::select! {
                _ = cancel.cancelled() => return,
                sent = self.emitter.send(batch) => sent,
            };
            if sent.is_err() {
                return;
            }
            self.job.handles.scrapes.inc();
        }
        // The target is gone: its series and its report series are stale.
        let timestamp_ms = now_ms();
        let mut samples = Vec::new();
        self.cache.end_of_target(timestamp_ms, &mut samples);
        for series in self.report.all() {
            samples.push(Sample { series: Arc::clone(series), timestamp_ms, value: stale_nan() });
        }
        tokio::select! {
            _ = cancel.cancelled() => {}
            _ = self.emitter.send(SampleBatch::new(samples)) => {}
        }
        tracing::info!(source = %self.emitter.source(), job = %self.job.name, target = %self.target.url, "target gone; its series are marked stale");
    }

    /// One scrape, as the batch to send.
    pub async fn scrape(&mut self) -> SampleBatch {
        let timestamp_ms = now_ms();
        let started = Instant::now();
        let fetched = self.fetch().await;
        let mut samples = Vec::with_capacity(self.last_len + 8);
        let result = match fetched {
            Ok(format) => {
                append(&self.body, format, &self.job, &mut self.state, &mut self.cache, timestamp_ms, &mut samples)
            }
            Err(failure) => Err(failure),
        };
        // Don't keep a huge body's buffer around.
        if self.body.capacity() > 4 * 1024 * 1024 && self.body.len() < self.body.capacity() / 4 {
            self.body = Vec::new();
        }
        let handles = &self.job.handles;
        let (up, counts) = match result {
            Ok(counts) => {
                self.cache.end_success(timestamp_ms, &mut samples);
                if self.failing.take().is_some() {
                    tracing::info!(source = %self.emitter.source(), job = %self.job.name, target = %self.target.url, "scrapes succeed again");
                }
                handles.samples.inc_by(counts.scraped as u64);
                if counts.duplicates > 0 {
                    handles.duplicates.inc_by(counts.duplicates as u64);
                }
                if counts.relabel_dropped > 0 {
                    handles.relabel_dropped.inc_by(counts.relabel_dropped as u64);
                }
                (1.0, counts)
            }
            Err(failure) => {
                samples.clear();
                self.cache.end_failure(timestamp_ms, &mut samples);
                handles.failure(failure.reason).inc();
                if self.failing.as_deref() != Some(failure.message.as_str()) {
                    tracing::warn!(
                        source = %self.emitter.source(), job = %self.job.name, target = %self.target.url,
                        reason = failure.reason, error = %failure.message,
                        "scrape failed: up is 0 and the target's series are marked stale (logged again only when the error changes)"
                    );
                    self.failing = Some(failure.message);
                }
                (0.0, Counts::default())
            }
        };
        let duration = started.elapsed().as_secs_f64();
        handles.duration.observe(duration);
        let report = [
            (&self.report.up, up),
            (&self.report.duration, duration),
            (&self.report.scraped, counts.scraped as f64),
            (&self.report.post_relabel, counts.sent as f64),
            (&self.report.added, if up > 0.0 { self.cache.added() as f64 } else { 0.0 }),
        ];
        for (series, value) in report {
            samples.push(Sample { series: Arc::clone(series), timestamp_ms, value });
        }
        self.last_len = samples.len();
        SampleBatch::new(samples)
    }

    /// Requests the target and reads its body into `self.body`; the format to parse it with.
    async fn fetch(&mut self) -> Result<Format, Failure> {
        let job = Arc::clone(&self.job);
        let timeout = job.timeout;
        let mut request = Request::get(self.target.url.as_str())
            .header(http::header::ACCEPT, job.accept.clone())
            .header(http::header::USER_AGENT, concat!("sluice/", env!("CARGO_PKG_VERSION")))
            .header("X-Prometheus-Scrape-Timeout-Seconds", format!("{}", timeout.as_secs_f64()));
        match job.auth.header() {
            Ok(Some(value)) => request = request.header(http::header::AUTHORIZATION, value),
            Ok(None) => {}
            Err(e) => return Err(Failure::new("auth", e.to_string())),
        }
        let request = request
            .body(Full::new(Bytes::new()))
            .map_err(|e| Failure::new("connection", format!("cannot build the request: {e}")))?;
        self.body.clear();
        let limit = job.body_size_limit;
        let body = &mut self.body;
        let exchange = async {
            let response = job.client.request(request).await.map_err(|e| {
                use std::error::Error as _;
                let cause = e.source().map(|s| format!(": {s}")).unwrap_or_default();
                Failure::new("connection", format!("{e}{cause}"))
            })?;
            let status = response.status();
            if status != StatusCode::OK {
                return Err(Failure::new("http_status", format!("the target answered {status}")));
            }
            let content_type = response.headers().get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
            let format = Format::from_content_type(content_type);
            let mut incoming = response.into_body();
            while let Some(frame) = incoming.frame().await {
                let frame = frame.map_err(|e| Failure::new("connection", format!("reading the body: {e}")))?;
                if let Ok(data) = frame.into_data() {
                    if body.len() + data.len() > limit {
                        return Err(Failure::new(
                            "body_too_large",
                            format!("the body is larger than body_size_limit ({limit} bytes)"),
                        ));
                    }
                    body.extend_from_slice(&data);
                }
            }
            Ok(format)
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(Failure::new("timeout", format!("no complete answer within {timeout:?}"))),
        }
    }
}

/// The `Accept` header of a job.
pub fn accept(openmetrics: bool) -> HeaderValue {
    HeaderValue::from_static(if openmetrics { ACCEPT_OPENMETRICS } else { ACCEPT_TEXT })
}
