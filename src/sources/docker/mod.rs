//! `docker`: every container's logs through the Docker Engine API.
//!
//! One manager task per source discovers containers (list, then the `/events` stream for
//! `start`, `die`, `destroy` and `rename`), keeps positions, and runs one follower task per
//! container (see [`follower`]). Followers hand batches to one emitter task through a bounded
//! channel: when the sinks' queues are full, followers stop reading and the engine keeps the
//! lines in the container's log file, so waiting loses nothing.
//!
//! Guarantees: a container resumes from the newest line the sinks acknowledged (nanosecond
//! timestamp, with the lines that share it counted), after a restart of the container, of
//! sluice or of Loki. A stopped container keeps its position; a destroyed one's is forgotten
//! after `forget_destroyed_after`. Containers that stopped or were created while sluice was down
//! are read on start. Delivery is at least once: lines between the last acknowledged position
//! and a crash are sent again with their original timestamps, which Loki deduplicates.

pub mod client;
pub mod config;
pub mod follower;
pub mod frames;
pub mod target;

use crate::event::LogBatch;
use crate::formats::time::{format_rfc3339_nanos, parse_rfc3339_nanos};
use crate::relabel::Relabeler;
use crate::sources::file::StartAt;
use crate::sources::positions::{Checkpoints, PositionsFile};
use crate::telemetry::metrics::SourceLabel;
use crate::topology::Emitter;
use arc_swap::ArcSwap;
use bollard::query_parameters::{EventsOptions, ListContainersOptions};
use client::Endpoint;
use config::DockerConfig;
use follower::{FollowContext, FollowEnd, Position, Start};
use futures_util::StreamExt;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;
use target::{ContainerFilter, ContainerInfo, StreamLabels};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use config::DockerConfig as Config;

/// A container the source knows, shared by the manager, its follower and the ack callbacks.
pub struct Tracked {
    pub id: String,
    pub info: Mutex<ContainerInfo>,
    pub labels: ArcSwap<StreamLabels>,
    pub metadata_name: Arc<str>,
    pub checkpoints: Mutex<Checkpoints<Position>>,
    /// The newest position the sinks acknowledged.
    pub committed: Mutex<Option<Position>>,
    /// The last message read (where a new follower resumes in this process).
    pub read: Mutex<Option<Position>>,
    pub destroyed_at: Mutex<Option<i64>>,
}

impl Tracked {
    pub fn name(&self) -> String {
        self.info.lock().name.clone()
    }
}

/// The positions file of a Docker source.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Saved {
    /// When this file was written (RFC 3339).
    saved_at: Option<String>,
    containers: BTreeMap<String, SavedContainer>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct SavedContainer {
    name: String,
    /// The newest acknowledged line's Docker timestamp (RFC 3339, nanoseconds).
    time: String,
    /// How many lines with exactly that timestamp were acknowledged.
    ties: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    destroyed_at: Option<String>,
}

impl SavedContainer {
    fn position(&self) -> Option<Position> {
        parse_rfc3339_nanos(self.time.as_bytes()).map(|time| Position { time, ties: self.ties })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    #[error("{0}")]
    Config(String),
    #[error("positions file: {0}")]
    Positions(std::io::Error),
}

/// Why the manager looks at a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trigger {
    /// The first listing after sluice started.
    Startup,
    /// A later, periodic listing.
    Refresh,
    /// A `start` event.
    Event,
}

struct Entry {
    tracked: Arc<Tracked>,
    follower: Option<JoinHandle<()>>,
}

struct Manager {
    name: String,
    config: DockerConfig,
    endpoint: Endpoint,
    filter: ContainerFilter,
    relabel: Relabeler,
    source_labels: crate::event::LabelSet,
    positions: PositionsFile,
    saved: Saved,
    /// When the positions file was last written before this start (0: never).
    previous_save: i64,
    /// When this source started.
    started_at: i64,
    containers: HashMap<String, Entry>,
    batches: Option<mpsc::Sender<LogBatch>>,
    exits_tx: mpsc::UnboundedSender<(String, FollowEnd)>,
    exits: mpsc::UnboundedReceiver<(String, FollowEnd)>,
    cancel: CancellationToken,
    streams: prometheus_client::metrics::gauge::Gauge,
    daemon_errors: prometheus_client::metrics::counter::Counter,
    stalls: prometheus_client::metrics::counter::Counter,
    reconnects: prometheus_client::metrics::counter::Counter,
    replays: prometheus_client::metrics::counter::Counter,
    metadata_name: Arc<str>,
}

fn default_host() -> String {
    std::env::var("DOCKER_HOST").ok().filter(|h| !h.is_empty()).unwrap_or_else(|| "unix:///var/run/docker.sock".into())
}

pub async fn run(config: DockerConfig, emitter: Emitter, cancel: CancellationToken) -> Result<(), DockerError> {
    let name = emitter.source().to_string();
    let endpoint = Endpoint::parse(&config.host.clone().unwrap_or_else(default_host)).map_err(DockerError::Config)?;
    let relabel = Relabeler::compile(&config.relabel_configs).map_err(|e| DockerError::Config(format!("{e:?}")))?;
    let self_id = target::own_container_id();
    let filter = ContainerFilter::new(&config.filters, self_id).map_err(DockerError::Config)?;
    let positions = PositionsFile::new(&emitter.shared().data_dir, &name);
    let saved: Saved = match positions.load() {
        Ok(s) => s.unwrap_or_default(),
        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
            let aside = positions.path().with_extension("json.corrupt");
            tracing::error!(source = %name, error = %e, moved_to = %aside.display(), "the positions file is unreadable; starting without it");
            let _ = std::fs::rename(positions.path(), &aside);
            Saved::default()
        }
        Err(e) => return Err(DockerError::Positions(e)),
    };
    let previous_save = saved.saved_at.as_deref().and_then(|t| parse_rfc3339_nanos(t.as_bytes())).unwrap_or(0);
    let telemetry = &emitter.shared().telemetry;
    let label = SourceLabel { source: name.clone() };
    let docker_metrics = &telemetry.metrics.docker;
    let (batches, rx) = mpsc::channel(64);
    let (exits_tx, exits) = mpsc::unbounded_channel();
    let ready = telemetry.readiness.register(&format!("source/{name}"));
    let mut manager = Manager {
        source_labels: emitter.base_labels().clone(),
        streams: emitter.handles().streams.clone(),
        daemon_errors: docker_metrics.daemon_errors.get_or_create_owned(&label),
        stalls: docker_metrics.stalls.get_or_create_owned(&label),
        reconnects: docker_metrics.reconnects.get_or_create_owned(&label),
        replays: docker_metrics.replays.get_or_create_owned(&label),
        name,
        config,
        endpoint,
        filter,
        relabel,
        positions,
        saved,
        previous_save,
        started_at: crate::event::now_nanos(),
        containers: HashMap::new(),
        batches: Some(batches),
        exits_tx,
        exits,
        cancel: cancel.clone(),
        metadata_name: Arc::from("container_id"),
    };
    let emit_task = tokio::spawn(emit_loop(emitter, rx));
    manager.run(&ready).await;
    // Shutdown: followers saw the cancellation; once their batches are through and the sinks
    // settled (or abandoned) them, the positions are final.
    for entry in manager.containers.values_mut() {
        if let Some(f) = entry.follower.take() {
            let _ = f.await;
        }
    }
    manager.batches = None;
    let _ = emit_task.await;
    manager.wait_for_acks(Duration::from_secs(60)).await;
    manager.save().await;
    Ok(())
}

async fn emit_loop(mut emitter: Emitter, mut rx: mpsc::Receiver<LogBatch>) {
    while let Some(batch) = rx.recv().await {
        if emitter.send(batch).await.is_err() {
            return;
        }
    }
}

impl Manager {
    async fn connect(&self) -> Result<(bollard::Docker, String), String> {
        let docker = bollard::Docker::connect_with_host(&self.endpoint.as_host()).map_err(|e| e.to_string())?;
        let docker = docker.negotiate_version().await.map_err(|e| e.to_string())?;
        let version = docker.client_version();
        Ok((docker, format!("{}.{}", version.major_version, version.minor_version)))
    }

    async fn run(&mut self, ready: &crate::telemetry::readiness::ReadyFlag) {
        let mut failures = 0u32;
        let mut first = true;
        loop {
            let (docker, api) = match self.connect().await {
                Ok(ok) => ok,
                Err(e) => {
                    ready.set(false);
                    failures += 1;
                    if failures == 1 {
                        tracing::error!(source = %self.name, host = %self.endpoint.as_host(), error = %e, "cannot reach the Docker engine; retrying with backoff until it answers");
                    }
                    let delay = Duration::from_millis(500u64.saturating_mul(1 << failures.min(6)).min(30_000));
                    tokio::select! {
                        _ = self.cancel.cancelled() => return,
                        _ = tokio::time::sleep(delay) => continue,
                    }
                }
            };
            if failures > 0 {
                tracing::info!(source = %self.name, host = %self.endpoint.as_host(), "connected to the Docker engine");
            }
            failures = 0;
            let Some(batches) = self.batches.clone() else { return };
            let context = Arc::new(FollowContext {
                endpoint: self.endpoint.clone(),
                api_version: api,
                docker: docker.clone(),
                batches,
                cancel: self.cancel.child_token(),
                stall_interval: self.config.stall_check_interval.0,
                daemon_errors: self.daemon_errors.clone(),
                stalls: self.stalls.clone(),
                reconnects: self.reconnects.clone(),
                replays: self.replays.clone(),
                source: self.name.clone(),
            });
            let events_since = crate::event::now_nanos() / 1_000_000_000 - 1;
            let trigger = if first { Trigger::Startup } else { Trigger::Refresh };
            if let Err(e) = self.reconcile(&docker, &context, trigger).await {
                tracing::warn!(source = %self.name, error = %e, "listing containers failed; reconnecting");
                continue;
            }
            first = false;
            ready.set(true);
            let filters = HashMap::from([
                ("type".to_string(), vec!["container".to_string()]),
                ("event".to_string(), ["start", "die", "destroy", "rename"].iter().map(|s| s.to_string()).collect()),
            ]);
            let options = EventsOptions { since: Some(events_since.to_string()), until: None, filters: Some(filters) };
            let mut events = docker.events(Some(options));
            let mut save = tokio::time::interval(self.config.sync_period.0);
            let mut refresh = tokio::time::interval(self.config.refresh_interval.0);
            refresh.tick().await;
            loop {
                tokio::select! {
                    _ = self.cancel.cancelled() => return,
                    event = events.next() => match event {
                        Some(Ok(event)) => {
                            let id = event.actor.as_ref().and_then(|a| a.id.clone()).unwrap_or_default();
                            match event.action.as_deref() {
                                Some("start") => self.start(&docker, &context, &id, Trigger::Event).await,
                                Some("destroy") => self.destroyed(&id),
                                Some("rename") => self.renamed(&docker, &id).await,
                                _ => {}
                            }
                        }
                        other => {
                            let error = match other { Some(Err(e)) => e.to_string(), _ => "the stream ended".into() };
                            tracing::warn!(source = %self.name, error, "lost the Docker events stream; reconnecting");
                            ready.set(false);
                            break;
                        }
                    },
                    Some((id, end)) = self.exits.recv() => self.follower_ended(&docker, &context, &id, end).await,
                    _ = save.tick() => self.save().await,
                    _ = refresh.tick() => {
                        if let Err(e) = self.reconcile(&docker, &context, Trigger::Refresh).await {
                            tracing::warn!(source = %self.name, error = %e, "listing containers failed");
                        }
                    }
                }
            }
        }
    }

    /// Lists every container and follows those that need it.
    async fn reconcile(
        &mut self,
        docker: &bollard::Docker,
        context: &Arc<FollowContext>,
        trigger: Trigger,
    ) -> Result<(), bollard::errors::Error> {
        let list = docker.list_containers(Some(ListContainersOptions { all: true, ..Default::default() })).await?;
        let ids: Vec<String> = list.iter().filter_map(|c| c.id.clone()).collect();
        for id in &ids {
            self.start(docker, context, id, trigger).await;
        }
        if trigger == Trigger::Startup {
            let now = format_rfc3339_nanos(crate::event::now_nanos());
            for (id, saved) in self.saved.containers.iter_mut() {
                if !ids.contains(id) && saved.destroyed_at.is_none() {
                    saved.destroyed_at = Some(now.clone());
                }
            }
        }
        Ok(())
    }

    /// Follows a container if it passes the filters and has lines to read.
    async fn start(&mut self, docker: &bollard::Docker, context: &Arc<FollowContext>, id: &str, trigger: Trigger) {
        let at_start = trigger == Trigger::Startup;
        if self.containers.get(id).is_some_and(|e| e.follower.as_ref().is_some_and(|f| !f.is_finished())) {
            return;
        }
        let Ok(inspect) = docker.inspect_container(id, None).await else { return };
        let Some(info) = ContainerInfo::from_inspect(&inspect) else { return };
        if !self.filter.accepts(&info) {
            return;
        }
        let Some(labels) = target::stream_labels(&self.source_labels, &info, &self.relabel) else { return };
        let saved = self.saved.containers.get(id).and_then(SavedContainer::position);
        let known = self.containers.contains_key(id);
        // A stopped container found by listing is read only if it has lines nobody read: it
        // stopped after its position, or it ran while sluice was down (or, at a periodic
        // listing, since sluice started). A `start` event always counts: a short-lived container
        // may be gone by the time it is inspected.
        if !info.running && !known && trigger != Trigger::Event {
            let since = if trigger == Trigger::Startup { self.previous_save } else { self.started_at };
            let unread = match saved {
                Some(p) => info.finished_at > p.time,
                None => since > 0 && info.finished_at > since,
            };
            if !unread {
                return;
            }
        }
        let start = match (known, saved) {
            (true, _) => Start::Beginning,
            (false, Some(p)) => Start::At(p),
            (false, None) if at_start && self.config.start_at == StartAt::End && info.running => Start::Now,
            (false, None) => Start::Beginning,
        };
        let entry = self.containers.entry(id.to_string()).or_insert_with(|| Entry {
            tracked: Arc::new(Tracked {
                id: id.to_string(),
                info: Mutex::new(info.clone()),
                labels: ArcSwap::from_pointee(labels.clone()),
                metadata_name: Arc::clone(&self.metadata_name),
                checkpoints: Mutex::new(Checkpoints::default()),
                committed: Mutex::new(saved),
                read: Mutex::new(None),
                destroyed_at: Mutex::new(None),
            }),
            follower: None,
        });
        *entry.tracked.info.lock() = info;
        entry.tracked.labels.store(Arc::new(labels));
        let tracked = Arc::clone(&entry.tracked);
        let exits = self.exits_tx.clone();
        let context = Arc::clone(context);
        let id = id.to_string();
        entry.follower = Some(tokio::spawn(async move {
            let end = follower::follow(tracked, context, start).await;
            let _ = exits.send((id, end));
        }));
        self.streams.inc();
    }

    async fn follower_ended(
        &mut self,
        docker: &bollard::Docker,
        context: &Arc<FollowContext>,
        id: &str,
        end: FollowEnd,
    ) {
        self.streams.dec();
        if let Some(entry) = self.containers.get_mut(id) {
            entry.follower = None;
        }
        match end {
            FollowEnd::Gone => self.destroyed(id),
            // The container may have started again while its follower read the end of the log.
            FollowEnd::Stopped => {
                let running =
                    docker.inspect_container(id, None).await.ok().and_then(|c| c.state.and_then(|s| s.running));
                if running == Some(true) {
                    self.start(docker, context, id, Trigger::Event).await;
                }
            }
            FollowEnd::Cancelled => {}
        }
    }

    fn destroyed(&mut self, id: &str) {
        if let Some(entry) = self.containers.get(id) {
            entry.tracked.destroyed_at.lock().get_or_insert_with(crate::event::now_nanos);
        }
    }

    async fn renamed(&mut self, docker: &bollard::Docker, id: &str) {
        let Some(entry) = self.containers.get(id) else { return };
        let Ok(inspect) = docker.inspect_container(id, None).await else { return };
        let Some(info) = ContainerInfo::from_inspect(&inspect) else { return };
        if let Some(labels) = target::stream_labels(&self.source_labels, &info, &self.relabel) {
            entry.tracked.labels.store(Arc::new(labels));
        }
        *entry.tracked.info.lock() = info;
    }

    /// Waits until the sinks settled or abandoned every batch sent.
    async fn wait_for_acks(&self, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        while tokio::time::Instant::now() < deadline {
            let open = self.containers.values().any(|e| e.tracked.checkpoints.lock().unresolved() > 0);
            if !open {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Writes the committed positions; forgets destroyed containers after the grace period.
    async fn save(&mut self) {
        let now = crate::event::now_nanos();
        for entry in self.containers.values() {
            let t = &entry.tracked;
            let Some(position) = *t.committed.lock() else { continue };
            let destroyed_at = t.destroyed_at.lock().map(format_rfc3339_nanos);
            self.saved.containers.insert(
                t.id.clone(),
                SavedContainer {
                    name: t.name(),
                    time: format_rfc3339_nanos(position.time),
                    ties: position.ties,
                    destroyed_at,
                },
            );
        }
        let forget = i64::try_from(self.config.forget_destroyed_after.0.as_nanos()).unwrap_or(i64::MAX);
        let gone: Vec<String> = self
            .saved
            .containers
            .iter()
            .filter(|(_, c)| {
                c.destroyed_at
                    .as_deref()
                    .and_then(|t| parse_rfc3339_nanos(t.as_bytes()))
                    .is_some_and(|t| now.saturating_sub(t) > forget)
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in gone {
            self.saved.containers.remove(&id);
            if self.containers.get(&id).is_some_and(|e| e.follower.is_none()) {
                self.containers.remove(&id);
            }
        }
        self.saved.saved_at = Some(format_rfc3339_nanos(now));
        if let Err(e) = self.positions.save_async(self.saved.clone()).await {
            tracing::error!(source = %self.name, path = %self.positions.path().display(), error = %e, "cannot save positions");
        }
    }
}
