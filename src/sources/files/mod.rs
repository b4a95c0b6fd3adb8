//! `files`: container log files of a Kubernetes node (CRI) or a Docker host (json-file), and any
//! other log files, found by glob, followed through rotation, with acknowledged positions.
//!
//! The manager expands the globs (every `scan_interval`, and soon after an inotify event under
//! the patterns' directories), starts one task per matched path (see [`path`]) up to
//! `max_open_files`, wakes the task of a path that changed, and saves positions.
//!
//! Positions are kept per path: the generation it is reading (device and inode, with a
//! fingerprint of the first bytes against inode reuse) and the offset after the newest entry
//! every sink settled. At start a path resumes there, in its current file or, when a rotation
//! happened while sluice was down, in the rotated file (found by identity, or by content once
//! gzipped), then reads the generations written since. Positions of paths whose directory is
//! gone are pruned when positions are saved. When the sinks' queues are full, reading stops:
//! the files are the buffer and memory stays flat.
//!
//! Kubelet paths get their labels from [`kubernetes`] when `kubernetes.api` or
//! `kubernetes.relabel_configs` is set: the path's task resolves them (waiting a bounded time
//! for its pod's metadata) before it reads. A path whose target a relabel rule drops is not
//! followed while it exists.

pub mod config;
pub mod decode;
pub mod discover;
pub mod generations;
pub mod kubernetes;
pub mod path;
pub mod tailer;

use crate::event::{LabelSet, LogBatch};
use crate::sources::file::StartAt;
use crate::sources::positions::PositionsFile;
use crate::telemetry::metrics::SourceLabel;
use crate::topology::Emitter;
use bytes::Bytes;
use config::FilesConfig;
use discover::{FileId, Fingerprint, Globs, PodPath};
use generations::History;
use kubernetes::{PodCache, PodLabeler, WatchSettings};
use notify::{RecursiveMode, Watcher};
use path::{PathState, PathTask, PodLabeling, Position, Start};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tailer::{FileLabels, TailContext, TailEnd};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    #[error("{0}")]
    Config(String),
    #[error("positions file: {0}")]
    Positions(std::io::Error),
}

/// The positions file of a files source: per path, the generation and offset it is up to.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Saved {
    paths: BTreeMap<PathBuf, Position>,
}

/// A path's task ended: how, and what it read.
type TaskExit = (PathBuf, TailEnd, History);

/// A path being followed.
struct Followed {
    state: Arc<PathState>,
    task: JoinHandle<()>,
}

struct Manager {
    name: String,
    config: FilesConfig,
    globs: Globs,
    base_labels: LabelSet,
    positions: PositionsFile,
    saved: Saved,
    /// Rotated files modified before this are history for paths without a position.
    started: SystemTime,
    first_scan: bool,
    paths: HashMap<PathBuf, Followed>,
    /// Paths whose task ended, kept until every batch they sent is acknowledged.
    ended: Vec<Arc<PathState>>,
    /// What ended tasks read, for a later task of the same path (a file deleted and created
    /// again): its rotated files read already are not read again.
    histories: HashMap<PathBuf, History>,
    context: Option<Arc<TailContext>>,
    exits: (mpsc::UnboundedSender<TaskExit>, mpsc::UnboundedReceiver<TaskExit>),
    open: prometheus_client::metrics::gauge::Gauge,
    waiting: prometheus_client::metrics::gauge::Gauge,
    limit_hits: prometheus_client::metrics::counter::Counter,
    warned_limit: bool,
    /// Labels of kubelet paths from the Kubernetes API and relabel rules, when configured.
    pod_labeler: Option<Arc<PodLabeler>>,
    /// Paths whose target a relabel rule dropped: not followed again while they exist.
    dropped: HashSet<PathBuf>,
    /// Ends the pod watch.
    watch_cancel: CancellationToken,
}

pub async fn run(config: FilesConfig, emitter: Emitter, cancel: CancellationToken) -> Result<(), FilesError> {
    let name = emitter.source().to_string();
    let include: Vec<String> = config.include.iter().map(|p| p.value.clone()).collect();
    let exclude: Vec<String> = config.exclude.iter().map(|p| p.value.clone()).collect();
    let globs = Globs::new(&include, &exclude).map_err(FilesError::Config)?;
    let positions = PositionsFile::new(&emitter.shared().data_dir, &name);
    let saved: Saved = match positions.load() {
        Ok(s) => s.unwrap_or_default(),
        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
            let aside = positions.path().with_extension("json.corrupt");
            tracing::error!(source = %name, error = %e, moved_to = %aside.display(), "the positions file is unreadable; starting without it");
            let _ = std::fs::rename(positions.path(), &aside);
            Saved::default()
        }
        Err(e) => return Err(FilesError::Positions(e)),
    };
    let label = SourceLabel { source: name.clone() };
    let files_metrics = &emitter.shared().telemetry.metrics.files;
    // Few batches between the readers and the pipelines: each holds up to 1 MiB of lines, and
    // when the sinks are slow the files are the buffer, not memory.
    let (batches, rx) = mpsc::channel(4);
    let context = Arc::new(TailContext {
        batches,
        read_slots: tokio::sync::Semaphore::new(tailer::READ_SLOTS),
        cancel: cancel.child_token(),
        malformed: files_metrics.malformed.get_or_create_owned(&label),
        truncations: files_metrics.truncations.get_or_create_owned(&label),
        source: name.clone(),
    });
    let watch_cancel = cancel.child_token();
    let pod_labeler = pod_labeler(&config, &name, &emitter, &watch_cancel)?;
    let mut manager = Manager {
        pod_labeler,
        dropped: HashSet::new(),
        watch_cancel,
        base_labels: emitter.base_labels().clone(),
        open: emitter.handles().streams.clone(),
        waiting: files_metrics.waiting.get_or_create_owned(&label),
        limit_hits: files_metrics.open_limit_reached.get_or_create_owned(&label),
        name,
        config,
        globs,
        positions,
        saved,
        started: SystemTime::now(),
        first_scan: true,
        paths: HashMap::new(),
        ended: Vec::new(),
        histories: HashMap::new(),
        context: Some(context),
        exits: mpsc::unbounded_channel(),
        warned_limit: false,
    };
    let emit_task = tokio::spawn(emit_loop(emitter, rx));
    manager.run(&cancel).await;
    manager.stop().await;
    let _ = emit_task.await;
    manager.wait_for_acks(Duration::from_secs(60)).await;
    manager.save().await;
    Ok(())
}

/// The labeler of kubelet paths, with the pod watch started, when the source asks for the API
/// or has relabel rules; `None` leaves kubelet paths with the labels their path gives.
fn pod_labeler(
    config: &FilesConfig,
    name: &str,
    emitter: &Emitter,
    cancel: &CancellationToken,
) -> Result<Option<Arc<PodLabeler>>, FilesError> {
    let Some(k8s) = config.kubernetes.as_ref().filter(|k| k.api || !k.relabel_configs.is_empty()) else {
        return Ok(None);
    };
    let compile = |rules: &[crate::config::Located<crate::relabel::RelabelConfig>]| {
        crate::relabel::Relabeler::compile(rules)
            .map_err(|errors| FilesError::Config(errors.into_iter().map(|(_, m)| m).collect::<Vec<_>>().join("; ")))
    };
    let label = SourceLabel { source: name.to_string() };
    let metrics = &emitter.shared().telemetry.metrics.files;
    let pods = if k8s.api {
        let node = k8s.node().ok_or_else(|| FilesError::Config("kubernetes.api needs kubernetes.node".into()))?;
        let cache = PodCache::new(metrics.kubernetes_pods.get_or_create_owned(&label));
        let settings = WatchSettings {
            source: name.to_string(),
            node: node.to_string(),
            kubeconfig: k8s.kubeconfig.as_ref().map(PathBuf::from),
            errors: metrics.kubernetes_api_errors.clone(),
        };
        tokio::spawn(kubernetes::watch(Arc::clone(&cache), settings, cancel.clone()));
        Some(cache)
    } else {
        None
    };
    Ok(Some(Arc::new(PodLabeler {
        base: emitter.base_labels().pairs().iter().map(|(n, v)| (n.to_string(), v.to_string())).collect(),
        node: k8s.node().map(str::to_string),
        relabel: compile(&k8s.relabel_configs)?,
        without_filters: compile(&k8s.relabel_without_filters())?,
        pods,
        wait: k8s.wait_for_pod.0,
        missing: metrics.pod_metadata_missing.get_or_create_owned(&label),
        dropped: metrics.dropped_by_relabel.get_or_create_owned(&label),
    })))
}

/// The label sets of a file's entries (`stream` added for formats that have one).
fn file_labels_from(pairs: &[(String, String)], metadata: Vec<(Arc<str>, Bytes)>) -> FileLabels {
    let with = |stream: Option<&str>| {
        LabelSet::from_pairs(pairs.iter().map(|(n, v)| (n.as_str(), v.as_str())).chain(stream.map(|s| ("stream", s))))
    };
    FileLabels { plain: with(None), stdout: with(Some("stdout")), stderr: with(Some("stderr")), metadata }
}

/// The label sets of a kubelet path's entries: the pod uid is structured metadata.
pub(crate) fn file_labels(pairs: &[(String, String)], pod_uid: &str) -> FileLabels {
    file_labels_from(pairs, vec![(Arc::from("pod_uid"), Bytes::from(pod_uid.to_string()))])
}

async fn emit_loop(mut emitter: Emitter, mut rx: mpsc::Receiver<LogBatch>) {
    while let Some(batch) = rx.recv().await {
        if emitter.send(batch).await.is_err() {
            return;
        }
    }
}

impl Manager {
    async fn run(&mut self, cancel: &CancellationToken) {
        let (events_tx, mut events) = mpsc::unbounded_channel::<Vec<PathBuf>>();
        let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            if let Ok(event) = event
                && crate::fswatch::is_change(&event)
            {
                let _ = events_tx.send(event.paths);
            }
        })
        .ok();
        let mut watched: HashSet<PathBuf> = HashSet::new();
        let mut scan = tokio::time::interval(self.config.scan_interval.0);
        let mut save = tokio::time::interval(self.config.sync_period.0);
        save.tick().await;
        loop {
            if let Some(w) = watcher.as_mut() {
                for root in self.globs.roots() {
                    if !watched.contains(&root) && root.is_dir() && w.watch(&root, RecursiveMode::Recursive).is_ok() {
                        watched.insert(root);
                    }
                }
                watched.retain(|r| r.is_dir());
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = scan.tick() => self.scan(),
                Some(paths) = events.recv() => {
                    let mut unknown = false;
                    for p in paths.into_iter().chain(std::iter::from_fn(|| events.try_recv().ok()).flatten()) {
                        match self.paths.get(&p) {
                            Some(followed) => followed.state.wake.notify_one(),
                            None => unknown = true,
                        }
                    }
                    if unknown {
                        self.scan();
                    }
                }
                Some((base, end, history)) = self.exits.1.recv() => self.task_ended(base, end, history),
                _ = save.tick() => self.save().await,
            }
        }
    }

    /// Cancels the paths' tasks and waits for them; their senders go with the context.
    async fn stop(&mut self) {
        self.watch_cancel.cancel();
        if let Some(context) = self.context.take() {
            context.cancel.cancel();
        }
        for (_, followed) in self.paths.drain() {
            let _ = followed.task.await;
            self.ended.push(followed.state);
        }
    }

    /// The labels of a file: the source's, plus `filename`, or the pod's from a kubelet path.
    fn labels(&self, path: &Path) -> FileLabels {
        let mut pairs: Vec<(String, String)> =
            self.base_labels.pairs().iter().map(|(n, v)| (n.to_string(), v.to_string())).collect();
        let mut metadata = Vec::new();
        match (self.config.kubernetes.as_ref(), PodPath::parse(path)) {
            (Some(k8s), Some(pod)) => {
                pairs.push(("namespace".into(), pod.namespace));
                pairs.push(("pod".into(), pod.pod));
                pairs.push(("container".into(), pod.container));
                if let Some(node) = k8s.node.as_ref().filter(|n| !n.is_empty()) {
                    pairs.push(("node".into(), node.clone()));
                }
                metadata.push((Arc::from("pod_uid"), Bytes::from(pod.uid)));
            }
            _ => pairs.push(("filename".into(), path.display().to_string())),
        }
        file_labels_from(&pairs, metadata)
    }

    /// Expands the globs and follows the paths that are new.
    fn scan(&mut self) {
        let mut waiting = 0;
        let expanded = self.globs.expand();
        if !self.dropped.is_empty() {
            self.dropped.retain(|p| expanded.binary_search(p).is_ok());
        }
        for path in expanded {
            if self.paths.contains_key(&path) || self.dropped.contains(&path) {
                continue;
            }
            if self.paths.len() >= self.config.max_open_files {
                waiting += 1;
                continue;
            }
            self.follow(path);
        }
        if waiting > 0 {
            self.limit_hits.inc();
            if !self.warned_limit {
                self.warned_limit = true;
                tracing::warn!(source = %self.name, limit = self.config.max_open_files, waiting, "max_open_files reached: some files wait until others are closed");
            }
        }
        self.waiting.set(waiting);
        self.first_scan = false;
    }

    fn follow(&mut self, base: PathBuf) {
        let Some(context) = self.context.clone() else { return };
        if context.cancel.is_cancelled() {
            // Shutting down: a task that just ended is not replaced by one that would read
            // nothing (and whose position would be saved over the one that read).
            return;
        }
        let Ok(meta) = std::fs::metadata(&base) else { return };
        let start = self.start_of(&base, &meta);
        let state = PathState::new(base.clone());
        let pod = self
            .pod_labeler
            .as_ref()
            .and_then(|labeler| PodPath::parse(&base).map(|path| PodLabeling { labeler: Arc::clone(labeler), path }));
        let task = PathTask {
            state: Arc::clone(&state),
            ctx: context,
            labels: self.labels(&base),
            format: self.config.format,
            pod,
        };
        let exits = self.exits.0.clone();
        let task = tokio::spawn(async move {
            let (end, history) = task.run(start).await;
            let _ = exits.send((base, end, history));
        });
        self.paths.insert(state.base.clone(), Followed { state, task });
        self.open.inc();
    }

    /// Where a path's task begins: at its saved position (in the current file, or in the rotated
    /// file it was in when sluice stopped), or, without one, at the start of its file (its end
    /// on the first scan with `start_at: end`).
    fn start_of(&mut self, base: &Path, meta: &std::fs::Metadata) -> Start {
        let id = FileId::of(meta);
        let history = self.histories.remove(base);
        let resumed_history = history.is_some();
        let mut start =
            Start { history: history.unwrap_or_else(|| History::since(self.started)), resume: None, current: None };
        let Some(saved) = self.saved.paths.get(base).copied() else {
            if self.first_scan && self.config.start_at == StartAt::End {
                start.current = Some((id, meta.len()));
            }
            return start;
        };
        let same_content = |path: &Path| {
            saved.fingerprint.len > 0
                && Fingerprint::read(path, saved.fingerprint.len as usize).is_ok_and(|fp| fp == saved.fingerprint)
        };
        if !saved.compressed && saved.id() == id && (saved.fingerprint.len == 0 || same_content(base)) {
            start.current = Some((id, saved.offset));
            return start;
        }
        if resumed_history {
            return start;
        }
        // The file of the saved position was rotated while sluice was down.
        let found = generations::siblings(base).into_iter().find(|g| {
            let same_file = !g.compressed && g.id == saved.id() && same_content(&g.path);
            same_file || (g.compressed && saved.fingerprint.len > 0 && g.fingerprint() == Some(saved.fingerprint))
        });
        match found {
            Some(generation) => {
                tracing::info!(source = %self.name, path = %generation.path.display(), offset = saved.offset, "resuming in a file rotated while sluice was down");
                start.history = History::since(generation.modified);
                start.resume = Some((generation, saved.offset));
            }
            None => {
                tracing::warn!(source = %self.name, path = %base.display(), "the file of the saved position is gone (rotated away while sluice was down): its unread lines are lost; reading the current file from its start");
            }
        }
        start
    }

    fn task_ended(&mut self, base: PathBuf, end: TailEnd, history: History) {
        let Some(followed) = self.paths.remove(&base) else { return };
        self.open.dec();
        if let Some(position) = followed.state.position() {
            self.saved.paths.insert(base.clone(), position);
        }
        if followed.state.dropped() {
            self.dropped.insert(base.clone());
        }
        self.ended.push(followed.state);
        self.histories.insert(base, history);
        if end == TailEnd::Failed {
            tracing::warn!(source = %self.name, "a file could not be read; it is tried again at the next scan");
        }
        // A slot is free: a waiting path may take it.
        self.scan();
    }

    async fn wait_for_acks(&self, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        while tokio::time::Instant::now() < deadline {
            if !self.ended.iter().any(|state| state.unresolved()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Writes the paths' positions; forgets paths whose directory is gone.
    async fn save(&mut self) {
        for state in self.paths.values().map(|f| &f.state).chain(&self.ended) {
            if let Some(position) = state.position() {
                self.saved.paths.insert(state.base.clone(), position);
            }
        }
        self.ended.retain(|state| state.unresolved());
        let gone = |base: &Path| !base.parent().is_some_and(Path::is_dir);
        let followed = &self.paths;
        self.saved.paths.retain(|base, _| followed.contains_key(base) || !gone(base));
        self.histories.retain(|base, _| !gone(base));
        if let Err(e) = self.positions.save_async(self.saved.clone()).await {
            tracing::error!(source = %self.name, path = %self.positions.path().display(), error = %e, "cannot save positions");
        }
    }
}
