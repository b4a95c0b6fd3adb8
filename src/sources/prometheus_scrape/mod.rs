//! `prometheus_scrape`: scrapes Prometheus and OpenMetrics targets, as Prometheus in agent mode
//! does, and sends the samples to the metrics sinks (Remote Write).
//!
//! Shape: one task per job keeps the job's targets (static ones, and those Docker discovery
//! finds every `refresh_interval`) and one task per target scrapes it ([`scrape::TargetLoop`]).
//! A target that disappears gets stale markers for every series it had; a new one starts
//! scraping at its offset within the interval. When discovery fails (the engine is down), the
//! targets found last are kept and discovery is tried again at the next refresh.
//!
//! Parsing ([`parse`]) allocates nothing per sample on the common path, and a series' labels
//! (target labels, `honor_labels`, `metric_relabel_configs`) are built once per distinct series
//! ([`series`]): a scrape costs a hash lookup per sample.
//!
//! Self-metrics, per source and `scrape_job`: `sluice_scrapes_total`,
//! `sluice_scrape_failures_total{reason}`, `sluice_scrape_samples_total`,
//! `sluice_scrape_targets`, `sluice_scrape_duration_seconds`; duplicates and series dropped by
//! `metric_relabel_configs` are counted in `sluice_source_dropped_total{reason}`
//! (`duplicate_series`, `metric_relabel`).

pub mod config;
pub mod discovery;
pub mod parse;
pub mod scrape;
pub mod series;
pub mod target;

use crate::event::SampleBatch;
use crate::relabel::Relabeler;
use crate::sinks::http_client::{Auth, ClientError, HttpClient, build_client};
use crate::telemetry::metrics::{ScrapeJob, ScrapeJobReason, ScrapeMetrics};
use crate::topology::SignalEmitter;
use config::{JobConfig, ScrapeConfig};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use target::{Discovered, Target};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum ScrapeError {
    #[error("job `{job}`: {source}")]
    Client { job: String, source: ClientError },
    #[error("job `{job}`: {message}")]
    Config { job: String, message: String },
}

/// A job's self-metric handles.
pub struct JobHandles {
    pub scrapes: Counter,
    pub samples: Counter,
    pub duration: Histogram,
    pub targets: Gauge,
    pub duplicates: Counter,
    pub relabel_dropped: Counter,
    failures: Family<ScrapeJobReason, Counter>,
    source: String,
    job: String,
}

impl JobHandles {
    fn new(m: &ScrapeMetrics, emitter: &SignalEmitter<SampleBatch>, job: &str) -> JobHandles {
        let label = ScrapeJob { source: emitter.source().to_string(), scrape_job: job.to_string() };
        JobHandles {
            scrapes: m.scrapes.get_or_create_owned(&label),
            samples: m.samples.get_or_create_owned(&label),
            duration: m.duration.get_or_create_owned(&label),
            targets: m.targets.get_or_create_owned(&label),
            duplicates: emitter.handles().dropped("duplicate_series"),
            relabel_dropped: emitter.handles().dropped("metric_relabel"),
            failures: m.failures.clone(),
            source: label.source,
            job: label.scrape_job,
        }
    }

    /// The failure counter of `reason` (failures are rare: resolved when they happen).
    pub fn failure(&self, reason: &str) -> Counter {
        self.failures.get_or_create_owned(&ScrapeJobReason {
            source: self.source.clone(),
            scrape_job: self.job.clone(),
            reason: reason.to_string(),
        })
    }
}

/// A job, built: its client, credentials, rules and limits.
pub struct Job {
    pub name: String,
    pub config: JobConfig,
    pub interval: Duration,
    pub timeout: Duration,
    pub client: HttpClient,
    pub auth: Auth,
    pub accept: http::HeaderValue,
    pub honor_labels: bool,
    pub honor_timestamps: bool,
    pub relabel: Relabeler,
    pub metric_relabel: Arc<Relabeler>,
    pub limits: parse::Limits,
    pub sample_limit: usize,
    pub body_size_limit: usize,
    pub handles: JobHandles,
}

impl Job {
    /// Builds a job (reads TLS and credential files).
    pub fn build(config: JobConfig, emitter: &SignalEmitter<SampleBatch>) -> Result<Job, ScrapeError> {
        let name = config.job_name.clone();
        let client_error = |source| ScrapeError::Client { job: name.clone(), source };
        let client = build_client(&config.tls_config).map_err(client_error)?;
        let auth = Auth::from_config(
            config.basic_auth.as_ref(),
            config.bearer_token.as_deref(),
            config.bearer_token_file.as_deref(),
        )
        .map_err(client_error)?;
        let rules = |rules| {
            Relabeler::compile(rules).map_err(|e| ScrapeError::Config {
                job: name.clone(),
                message: e.into_iter().map(|(_, m)| m).collect::<Vec<_>>().join("; "),
            })
        };
        let relabel = rules(&config.relabel_configs)?;
        let metric_relabel = Arc::new(rules(&config.metric_relabel_configs)?);
        let handles = JobHandles::new(&emitter.shared().telemetry.metrics.scrape, emitter, &name);
        Ok(Job {
            interval: config.scrape_interval.0,
            timeout: config.timeout(),
            client,
            auth,
            accept: scrape::accept(config.openmetrics),
            honor_labels: config.honor_labels,
            honor_timestamps: config.honor_timestamps,
            relabel,
            metric_relabel,
            limits: parse::Limits { max_line_size: config.max_line_size.as_usize() },
            sample_limit: config.sample_limit,
            body_size_limit: config.body_size_limit.as_usize(),
            handles,
            config,
            name,
        })
    }

    /// The targets of `found`, relabeled; targets whose relabeling failed are logged and left out.
    fn targets(&self, found: &[Discovered]) -> Vec<Target> {
        let mut targets = Vec::new();
        for d in found {
            match target::build(&self.name, self.config.scheme.as_str(), &self.config.metrics_path, d, &self.relabel) {
                Ok(Some(t)) => targets.push(t),
                Ok(None) => {}
                Err(e) => tracing::warn!(job = %self.name, error = %e, "target left out"),
            }
        }
        targets.sort();
        targets.dedup();
        targets
    }

    fn static_targets(&self) -> Vec<Discovered> {
        self.config
            .static_configs
            .iter()
            .flat_map(|s| {
                s.targets.iter().map(|address| Discovered {
                    address: address.clone(),
                    scheme: None,
                    path: None,
                    labels: s.labels.iter().map(|(n, v)| (n.clone(), v.clone())).collect(),
                })
            })
            .collect()
    }
}

/// Runs every job until `cancel`.
pub async fn run(
    config: ScrapeConfig,
    emitter: SignalEmitter<SampleBatch>,
    cancel: CancellationToken,
) -> Result<(), ScrapeError> {
    let mut jobs = Vec::new();
    for job in config.jobs {
        jobs.push(Arc::new(Job::build(job.value, &emitter)?));
    }
    let emitter = Arc::new(emitter);
    let mut tasks = JoinSet::new();
    for job in jobs {
        tasks.spawn(run_job(job, Arc::clone(&emitter), cancel.clone()));
    }
    while tasks.join_next().await.is_some() {}
    Ok(())
}

struct Running {
    removed: CancellationToken,
}

/// Keeps the targets of one job running.
async fn run_job(job: Arc<Job>, emitter: Arc<SignalEmitter<SampleBatch>>, cancel: CancellationToken) {
    let statics = job.static_targets();
    let mut running: BTreeMap<Target, Running> = BTreeMap::new();
    let mut tasks = JoinSet::new();
    let sync = |found: &[Discovered], running: &mut BTreeMap<Target, Running>, tasks: &mut JoinSet<()>| {
        let wanted = job.targets(found);
        running.retain(|target, r| {
            let keep = wanted.binary_search(target).is_ok();
            if !keep {
                r.removed.cancel();
            }
            keep
        });
        for target in wanted {
            if running.contains_key(&target) {
                continue;
            }
            match scrape::TargetLoop::new(Arc::clone(&job), target.clone(), Arc::clone(&emitter)) {
                Ok(target_loop) => {
                    let removed = CancellationToken::new();
                    tasks.spawn(target_loop.run(cancel.clone(), removed.clone()));
                    running.insert(target, Running { removed });
                }
                Err(e) => tracing::warn!(job = %job.name, error = %e, "target left out"),
            }
        }
        job.handles.targets.set(running.len() as i64);
    };
    sync(&statics, &mut running, &mut tasks);
    if let Some(docker) = job.config.docker_discovery.clone() {
        let mut refresh = tokio::time::interval(docker.refresh_interval.0);
        refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut client: Option<bollard::Docker> = None;
        let mut failing = false;
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = refresh.tick() => {}
                // Reap finished target tasks as they end, so the set does not grow.
                Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
            }
            if client.is_none() {
                client = discovery::connect(&docker).await.map_err(|e| log_discovery(&job, &mut failing, &e)).ok();
            }
            let Some(engine) = &client else { continue };
            match discovery::discover(engine, &docker).await {
                Ok(found) => {
                    if failing {
                        tracing::info!(job = %job.name, "Docker discovery works again");
                        failing = false;
                    }
                    let mut all = statics.clone();
                    all.extend(found);
                    sync(&all, &mut running, &mut tasks);
                }
                Err(e) => {
                    log_discovery(&job, &mut failing, &e);
                    client = None;
                }
            }
        }
    }
    cancel.cancelled().await;
    while tasks.join_next().await.is_some() {}
    job.handles.targets.set(0);
}

fn log_discovery(job: &Job, failing: &mut bool, error: &str) {
    if !*failing {
        tracing::warn!(job = %job.name, error, "Docker discovery failed; keeping the targets found last and retrying at each refresh");
        *failing = true;
    }
}

#[cfg(test)]
mod tests;
