//! The only module that connects sources, pipelines and sinks.
//!
//! It owns what they share ([`Shared`]: the pipeline set in force, the route table from sources
//! to sink queues, the label interner, telemetry), starts each component on its own task, and
//! stops them in the order that loses nothing:
//! 1. sources stop reading (a source waits for the acknowledgements of what it sent, then saves
//!    its positions);
//! 2. entries held by `multiline`/`cri` stages are released into the queues;
//! 3. the route table is emptied, so each sink's queue closes once the last sender is gone;
//! 4. sinks deliver what they hold and exit, or are cut off at the shutdown deadline, which
//!    abandons (never acknowledges) what they still held.

pub mod emitter;
pub mod queue;

use crate::config::AgentConfig;
use crate::config::agent::{Signal, SinkConfig, SourceConfig};
use crate::event::{LabelInterner, LabelLimits, LabelSet, LogBatch, SampleBatch, SpanBatch};
use crate::pipeline::{PipelineSet, Runner};
use crate::telemetry::Telemetry;
use crate::telemetry::metrics::SinkHandles;
use arc_swap::ArcSwap;
use queue::{QueueReceiver, Queued, SinkQueue};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use emitter::{Emitter, SignalEmitter};

/// Sink queues by source name.
pub type RouteTable<B = LogBatch> = HashMap<String, Vec<SinkQueue<B>>>;

/// The routes of every signal.
#[derive(Default)]
pub struct Routes {
    pub logs: RouteTable<LogBatch>,
    pub spans: RouteTable<SpanBatch>,
    pub samples: RouteTable<SampleBatch>,
    /// Shutting down: no batch is queued any more. What a source still sends is refused
    /// unsettled (abandoned), so that its position does not advance and a restart reads it again.
    pub closed: bool,
}

/// A batch type with its own routes.
pub trait Routed: Queued + Clone {
    fn table(routes: &Routes) -> &RouteTable<Self>;
}

impl Routed for SpanBatch {
    fn table(routes: &Routes) -> &RouteTable<Self> {
        &routes.spans
    }
}

impl Routed for SampleBatch {
    fn table(routes: &Routes) -> &RouteTable<Self> {
        &routes.samples
    }
}

/// A running sink's queue, of the sink's signal.
#[derive(Clone)]
enum AnyQueue {
    Logs(SinkQueue<LogBatch>),
    Spans(SinkQueue<SpanBatch>),
    Samples(SinkQueue<SampleBatch>),
}

/// What every component shares.
pub struct Shared {
    pub telemetry: Arc<Telemetry>,
    pub interner: Arc<LabelInterner>,
    pub pipelines: ArcSwap<PipelineSet>,
    pub routes: ArcSwap<Routes>,
    /// Where sources keep positions.
    pub data_dir: PathBuf,
}

/// Why the topology could not start.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("sink `{sink}`: {message}")]
    Sink { sink: String, message: String },
    #[error("source `{source_name}`: {message}")]
    Source { source_name: String, message: String },
}

struct RunningSource {
    config: SourceConfig,
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

struct RunningSink {
    config: SinkConfig,
    queue: AnyQueue,
    task: JoinHandle<()>,
}

/// What a reload changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReloadSummary {
    pub sources_started: Vec<String>,
    pub sources_stopped: Vec<String>,
    pub sinks_started: Vec<String>,
    pub sinks_stopped: Vec<String>,
}

/// The running agent.
pub struct Topology {
    shared: Arc<Shared>,
    sources: BTreeMap<String, RunningSource>,
    sinks: BTreeMap<String, RunningSink>,
    housekeeping: CancellationToken,
    housekeeping_task: JoinHandle<()>,
}

/// The labels a source puts on every entry: its configured ones, or `job: <source name>`.
pub fn source_labels(name: &str, config: &SourceConfig) -> LabelSet {
    let labels = config.labels();
    if labels.is_empty() { LabelSet::from_pairs([("job", name)]) } else { LabelSet::from_pairs(labels.iter()) }
}

impl Topology {
    /// Starts every sink, then every source. `pipelines` is the built set to run.
    pub async fn start(
        config: &AgentConfig,
        data_dir: PathBuf,
        pipelines: PipelineSet,
        telemetry: Arc<Telemetry>,
    ) -> Result<Topology, BuildError> {
        let limits = LabelLimits {
            max_values_per_label: config.limits.max_label_values,
            max_names: config.limits.max_label_names,
            max_value_length: config.limits.max_label_value_length,
        };
        telemetry.custom.set(pipelines.custom_metrics());
        let shared = Arc::new(Shared {
            interner: LabelInterner::new(limits, &telemetry.metrics.labels),
            telemetry,
            pipelines: ArcSwap::from_pointee(pipelines),
            routes: ArcSwap::from_pointee(Routes::default()),
            data_dir,
        });
        let mut sinks = BTreeMap::new();
        for (name, sink) in &config.sinks {
            sinks.insert(name.clone(), start_sink(&shared, name, &sink.value)?);
        }
        let routes = routes(config.sources.iter().map(|(n, s)| (n, s.value.signal())), &sinks);
        shared.routes.store(Arc::new(routes));
        let mut sources = BTreeMap::new();
        for (name, source) in &config.sources {
            sources.insert(name.clone(), start_source(&shared, name, &source.value)?);
        }
        let housekeeping = CancellationToken::new();
        let housekeeping_task = tokio::spawn(housekeep(Arc::clone(&shared), housekeeping.clone()));
        Ok(Topology { shared, sources, sinks, housekeeping, housekeeping_task })
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Puts a new pipeline set in force. Entries held by the old set's stages whose state does
    /// not carry over are released through the old set first, so each entry is processed by
    /// exactly one version.
    pub async fn replace_pipelines(&self, set: PipelineSet) {
        let custom = set.custom_metrics();
        let new = Arc::new(set);
        let old = self.shared.pipelines.swap(Arc::clone(&new));
        // A source may still be running a batch through the old set: wait until none is, so
        // nothing it holds is left behind.
        let waited = tokio::time::Instant::now();
        while Arc::strong_count(&old) > 1 && waited.elapsed() < Duration::from_secs(10) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        flush_released(&self.shared, &old, true, Some(&new)).await;
        self.shared.telemetry.custom.set(custom);
    }

    /// Applies a new agent config and pipeline set: only the components whose config changed are
    /// rebuilt. A sink whose config is unchanged keeps its queue and connections; a source whose
    /// config is unchanged keeps its streams and positions. New and changed sinks are built
    /// first, so a sink that cannot be built leaves everything as it was. A changed source is
    /// stopped (saving its positions) before its successor starts from them.
    pub async fn reload(&mut self, config: &AgentConfig, pipelines: PipelineSet) -> Result<ReloadSummary, BuildError> {
        let mut summary = ReloadSummary::default();
        let mut started: BTreeMap<String, RunningSink> = BTreeMap::new();
        for (name, sink) in &config.sinks {
            if self.sinks.get(name).is_some_and(|running| running.config == sink.value) {
                continue;
            }
            match start_sink(&self.shared, name, &sink.value) {
                Ok(running) => {
                    started.insert(name.clone(), running);
                }
                Err(e) => {
                    for (_, running) in started {
                        running.task.abort();
                    }
                    return Err(e);
                }
            }
        }
        let mut retired_sinks = Vec::new();
        let names: Vec<String> = self.sinks.keys().cloned().collect();
        for name in names {
            if (!config.sinks.contains_key(&name) || started.contains_key(&name))
                && let Some(old) = self.sinks.remove(&name)
            {
                summary.sinks_stopped.push(name.clone());
                retired_sinks.push((name, old));
            }
        }
        for (name, running) in started {
            summary.sinks_started.push(name.clone());
            self.sinks.insert(name, running);
        }
        // Sources whose config changed or that are gone stop first (saving their positions).
        let names: Vec<String> = self.sources.keys().cloned().collect();
        for name in names {
            let keep =
                config.sources.get(&name).is_some_and(|s| self.sources.get(&name).is_some_and(|r| r.config == s.value));
            if keep {
                continue;
            }
            if let Some(old) = self.sources.remove(&name) {
                old.cancel.cancel();
                if tokio::time::timeout(Duration::from_secs(60), old.task).await.is_err() {
                    tracing::warn!(source = %name, "the replaced source did not stop within 60s");
                }
                summary.sources_stopped.push(name);
            }
        }
        self.replace_pipelines(pipelines).await;
        let routes = routes(config.sources.iter().map(|(n, s)| (n, s.value.signal())), &self.sinks);
        self.shared.routes.store(Arc::new(routes));
        for (name, source) in &config.sources {
            if !self.sources.contains_key(name) {
                self.sources.insert(name.clone(), start_source(&self.shared, name, &source.value)?);
                summary.sources_started.push(name.clone());
            }
        }
        // A retired sink drains what it holds once the last route to it is gone.
        for (name, old) in retired_sinks {
            drop(old.queue);
            tokio::spawn(async move {
                let mut task = old.task;
                if tokio::time::timeout(Duration::from_secs(300), &mut task).await.is_err() {
                    tracing::warn!(sink = %name, "a replaced sink could not deliver what it held within 5 minutes; abandoning it");
                    task.abort();
                }
            });
        }
        Ok(summary)
    }

    /// Stops everything (see the module docs), giving sinks until `deadline` to deliver.
    pub async fn shutdown(self, deadline: Duration) {
        let started = tokio::time::Instant::now();
        for source in self.sources.values() {
            source.cancel.cancel();
        }
        self.housekeeping.cancel();
        let _ = self.housekeeping_task.await;
        // Sources end once they stopped reading and the sinks settled their batches (or the
        // sinks were cut off): wait for the sinks first, sources after.
        flush_held(&self.shared, true).await;
        self.shared.routes.store(Arc::new(Routes { closed: true, ..Routes::default() }));
        let mut source_tasks = Vec::new();
        for (name, source) in self.sources {
            drop(source.config);
            source_tasks.push((name, source.task));
        }
        for (name, sink) in self.sinks {
            drop(sink.queue);
            let mut task = sink.task;
            let left = deadline.saturating_sub(started.elapsed());
            if tokio::time::timeout(left, &mut task).await.is_err() {
                tracing::warn!(sink = %name, "shutdown deadline reached: undelivered entries are left for the next start");
                task.abort();
                let _ = task.await;
            }
        }
        for (name, mut task) in source_tasks {
            if tokio::time::timeout(Duration::from_secs(5), &mut task).await.is_err() {
                tracing::warn!(source = %name, "source did not stop in time");
                task.abort();
            }
        }
    }
}

/// Which queues each source feeds: the sinks of its signal that read it.
fn routes<'a>(sources: impl Iterator<Item = (&'a String, Signal)>, sinks: &BTreeMap<String, RunningSink>) -> Routes {
    let mut routes = Routes::default();
    for (source, signal) in sources {
        let feeds = |s: &&RunningSink| {
            s.config.signal() == signal
                && (s.config.sources().is_empty() || s.config.sources().iter().any(|x| x == source))
        };
        for sink in sinks.values().filter(feeds) {
            match &sink.queue {
                AnyQueue::Logs(q) => routes.logs.entry(source.clone()).or_default().push(q.clone()),
                AnyQueue::Spans(q) => routes.spans.entry(source.clone()).or_default().push(q.clone()),
                AnyQueue::Samples(q) => routes.samples.entry(source.clone()).or_default().push(q.clone()),
            }
        }
    }
    routes
}

fn queue<B: Queued>(name: &str, config: &SinkConfig, handles: &SinkHandles) -> (SinkQueue<B>, QueueReceiver<B>) {
    let (max_bytes, when_full) = config.queue();
    SinkQueue::new(
        name,
        max_bytes.as_usize(),
        when_full,
        handles.queue_bytes.clone(),
        handles.queue_capacity_bytes.clone(),
        handles.dropped("queue_full"),
    )
}

fn start_sink(shared: &Arc<Shared>, name: &str, config: &SinkConfig) -> Result<RunningSink, BuildError> {
    let handles = SinkHandles::new(&shared.telemetry.metrics.sink, name);
    let error = |message: String| BuildError::Sink { sink: name.to_string(), message };
    let (queue, task) = match config {
        SinkConfig::Console(c) => {
            let (q, rx) = queue(name, config, &handles);
            (AnyQueue::Logs(q), tokio::spawn(crate::sinks::console::run(c.clone(), rx, handles)))
        }
        SinkConfig::Loki(c) => {
            let sink = crate::sinks::loki::LokiSink::build(c, handles.clone()).map_err(|e| error(e.to_string()))?;
            let (q, rx) = queue(name, config, &handles);
            (AnyQueue::Logs(q), tokio::spawn(sink.run(rx)))
        }
        SinkConfig::Otlp(c) => {
            let sink = crate::sinks::otlp::OtlpSink::build(c, handles.clone()).map_err(|e| error(e.to_string()))?;
            let (q, rx) = queue(name, config, &handles);
            (AnyQueue::Spans(q), tokio::spawn(sink.run(rx)))
        }
        SinkConfig::PrometheusRemoteWrite(c) => {
            let sink = crate::sinks::remote_write::RemoteWriteSink::build(c, handles.clone())
                .map_err(|e| error(e.to_string()))?;
            let (q, rx) = queue(name, config, &handles);
            (AnyQueue::Samples(q), tokio::spawn(sink.run(rx)))
        }
    };
    Ok(RunningSink { config: config.clone(), queue, task })
}

fn start_source(shared: &Arc<Shared>, name: &str, config: &SourceConfig) -> Result<RunningSource, BuildError> {
    let emitter = Emitter::new(name, Arc::clone(shared), source_labels(name, config));
    let cancel = CancellationToken::new();
    let token = cancel.clone();
    let source_name = name.to_string();
    let task = match config.clone() {
        SourceConfig::Stdin(c) => tokio::spawn(async move {
            if let Err(e) = crate::sources::stdin::run(c, emitter, token).await {
                tracing::error!(source = %source_name, error = %e, "source stopped");
            }
        }),
        SourceConfig::File(c) => tokio::spawn(async move {
            if let Err(e) = crate::sources::file::run(c, emitter, token).await {
                tracing::error!(source = %source_name, error = %e, "source stopped");
            }
        }),
        SourceConfig::Files(c) => tokio::spawn(async move {
            if let Err(e) = crate::sources::files::run(*c, emitter, token).await {
                tracing::error!(source = %source_name, error = %e, "source stopped");
            }
        }),
        SourceConfig::Docker(c) => tokio::spawn(async move {
            if let Err(e) = crate::sources::docker::run(*c, emitter, token).await {
                tracing::error!(source = %source_name, error = %e, "source stopped");
            }
        }),
        SourceConfig::Otlp(c) => {
            let emitter = SignalEmitter::new(name, Arc::clone(shared));
            tokio::spawn(async move {
                if let Err(e) = crate::sources::otlp::run(*c, emitter, token).await {
                    tracing::error!(source = %source_name, error = %e, "source stopped");
                }
            })
        }
        SourceConfig::PrometheusScrape(c) => {
            let emitter = SignalEmitter::new(name, Arc::clone(shared));
            tokio::spawn(async move {
                if let Err(e) = crate::sources::prometheus_scrape::run(*c, emitter, token).await {
                    tracing::error!(source = %source_name, error = %e, "source stopped");
                }
            })
        }
    };
    Ok(RunningSource { config: config.clone(), cancel, task })
}

/// Releases held entries into the sink queues.
async fn flush_held(shared: &Shared, force: bool) {
    let set = shared.pipelines.load_full();
    flush_released(shared, &set, force, None).await;
}

async fn flush_released(shared: &Shared, set: &PipelineSet, force: bool, keep: Option<&PipelineSet>) {
    let mut runner = Runner::new(crate::event::LabelCache::new(Arc::clone(&shared.interner)));
    let outputs = runner.flush_held(set, force, keep);
    let routes = shared.routes.load_full();
    let no_sink = prometheus_client::metrics::counter::Counter::default();
    for (source, out) in outputs {
        let _ = emitter::deliver(&routes.logs, &source, out.entries, out.acks, &no_sink).await;
    }
}

/// Periodic work: release held entries that waited long enough, age the label interner.
async fn housekeep(shared: Arc<Shared>, cancel: CancellationToken) {
    let mut flush = tokio::time::interval(Duration::from_millis(500));
    let mut sweep = tokio::time::interval(Duration::from_secs(300));
    sweep.tick().await;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = flush.tick() => flush_held(&shared, false).await,
            _ = sweep.tick() => shared.interner.sweep(),
        }
    }
}
