//! `files`: container log files of a Kubernetes node (CRI) or a Docker host (json-file), and any
//! other log files, found by glob, followed through rotation, with acknowledged positions.
//!
//! One manager task per source expands the globs (every `scan_interval`, and soon after an
//! inotify event under the patterns' directories), starts a follower per file (see [`tailer`])
//! up to `max_open_files`, wakes followers whose file changed, and saves positions.
//!
//! Positions are kept per file identity (device and inode, with a fingerprint of the first
//! bytes against inode reuse): the offset after the newest entry every sink settled. At start a
//! file resumes there; a file that was renamed by a rotation while sluice was down is found in
//! its directory by its identity and read to its end. Entries of files that are gone are pruned
//! when positions are saved. When the sinks' queues are full, followers stop reading: the files
//! are the buffer and memory stays flat.

pub mod config;
pub mod decode;
pub mod discover;
pub mod tailer;

use crate::event::{LabelSet, LogBatch};
use crate::sources::file::StartAt;
use crate::sources::positions::{Checkpoints, PositionsFile};
use crate::telemetry::metrics::SourceLabel;
use crate::topology::Emitter;
use bytes::Bytes;
use config::FilesConfig;
use decode::Decoder;
use discover::{FileId, Fingerprint, Globs, PodPath};
use notify::{RecursiveMode, Watcher};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tailer::{FileLabels, TailContext, TailEnd, Tailed};
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

/// The positions file of a files source.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Saved {
    files: BTreeMap<String, SavedFile>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct SavedFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
    offset: u64,
    fingerprint: Fingerprint,
}

fn key(id: FileId) -> String {
    format!("{}:{}", id.dev, id.ino)
}

struct Running {
    tailed: Arc<Tailed>,
    task: Option<JoinHandle<()>>,
}

struct Manager {
    name: String,
    config: FilesConfig,
    globs: Globs,
    base_labels: LabelSet,
    positions: PositionsFile,
    saved: Saved,
    files: HashMap<FileId, Running>,
    by_path: HashMap<PathBuf, FileId>,
    context: Arc<TailContext>,
    exits: (mpsc::UnboundedSender<(FileId, TailEnd)>, mpsc::UnboundedReceiver<(FileId, TailEnd)>),
    open: prometheus_client::metrics::gauge::Gauge,
    waiting: prometheus_client::metrics::gauge::Gauge,
    limit_hits: prometheus_client::metrics::counter::Counter,
    warned_limit: bool,
    first_scan: bool,
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
    let (batches, rx) = mpsc::channel(64);
    let context = Arc::new(TailContext {
        batches,
        cancel: cancel.child_token(),
        malformed: files_metrics.malformed.get_or_create_owned(&label),
        truncations: files_metrics.truncations.get_or_create_owned(&label),
        source: name.clone(),
    });
    let mut manager = Manager {
        base_labels: emitter.base_labels().clone(),
        open: emitter.handles().streams.clone(),
        waiting: files_metrics.waiting.get_or_create_owned(&label),
        limit_hits: files_metrics.open_limit_reached.get_or_create_owned(&label),
        name,
        config,
        globs,
        positions,
        saved,
        files: HashMap::new(),
        by_path: HashMap::new(),
        context,
        exits: mpsc::unbounded_channel(),
        warned_limit: false,
        first_scan: true,
    };
    let emit_task = tokio::spawn(emit_loop(emitter, rx));
    manager.run(&cancel).await;
    manager.context.cancel.cancel();
    for running in manager.files.values_mut() {
        if let Some(task) = running.task.take() {
            let _ = task.await;
        }
    }
    // The followers' sender goes with the context; then the emitter drains.
    let context = std::mem::replace(&mut manager.context, Arc::new(TailContext {
        batches: mpsc::channel(1).0,
        cancel: CancellationToken::new(),
        malformed: Default::default(),
        truncations: Default::default(),
        source: String::new(),
    }));
    drop(context);
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
    async fn run(&mut self, cancel: &CancellationToken) {
        let (events_tx, mut events) = mpsc::unbounded_channel::<Vec<PathBuf>>();
        let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            if let Ok(event) = event {
                let _ = events_tx.send(event.paths);
            }
        })
        .ok();
        let mut watched: HashSet<PathBuf> = HashSet::new();
        let mut scan = tokio::time::interval(self.config.scan_interval.0);
        let mut save = tokio::time::interval(self.config.sync_period.0);
        save.tick().await;
        self.resume_rotated();
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
                    for p in paths.iter().chain(std::iter::from_fn(|| events.try_recv().ok()).flatten().collect::<Vec<_>>().iter()) {
                        match self.by_path.get(p).and_then(|id| self.files.get(id)) {
                            Some(running) => running.tailed.wake.notify_one(),
                            None => unknown = true,
                        }
                    }
                    if unknown {
                        self.scan();
                    }
                }
                Some((id, end)) = self.exits.1.recv() => self.follower_ended(id, end),
                _ = save.tick() => self.save().await,
            }
        }
    }

    /// The labels of a file: the source's, plus `filename`, or the pod's from a kubelet path.
    fn labels(&self, path: &Path) -> FileLabels {
        let mut pairs: Vec<(String, String)> = self.base_labels.pairs().iter().map(|(n, v)| (n.to_string(), v.to_string())).collect();
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
        let with = |stream: Option<&str>| LabelSet::from_pairs(pairs.iter().map(|(n, v)| (n.as_str(), v.as_str())).chain(stream.map(|s| ("stream", s))));
        FileLabels { plain: with(None), stdout: with(Some("stdout")), stderr: with(Some("stderr")), metadata }
    }

    /// Expands the globs and follows what is new.
    fn scan(&mut self) {
        let found = self.globs.expand();
        let mut waiting = 0;
        for path in found {
            let Ok(meta) = std::fs::metadata(&path) else { continue };
            let id = FileId::of(&meta);
            if let Some(running) = self.files.get(&id) {
                *running.tailed.path.lock() = path.clone();
                self.by_path.insert(path, id);
                continue;
            }
            if self.files.values().filter(|r| r.task.is_some()).count() >= self.config.max_open_files {
                waiting += 1;
                continue;
            }
            let start = self.start_offset(&path, id, meta.len());
            self.start(path, id, start, Fingerprint::of(b""));
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

    /// Where a newly found file starts: its saved position if the fingerprint still matches.
    fn start_offset(&self, path: &Path, id: FileId, size: u64) -> u64 {
        if let Some(saved) = self.saved.files.get(&key(id)) {
            let same_file = Fingerprint::read(path, saved.fingerprint.len as usize).map(|fp| fp == saved.fingerprint).unwrap_or(false);
            if same_file {
                return if saved.offset <= size { saved.offset } else { 0 };
            }
        }
        if self.first_scan && self.config.start_at == StartAt::End { size } else { 0 }
    }

    /// Files with a position that the globs no longer match (renamed by a rotation while sluice
    /// was down) are found in their directory by identity and read to their end.
    fn resume_rotated(&mut self) {
        let matched: HashSet<FileId> = self.globs.expand().iter().filter_map(|p| std::fs::metadata(p).ok()).map(|m| FileId::of(&m)).collect();
        let saved: Vec<SavedFile> = self.saved.files.values().cloned().collect();
        for s in saved {
            let id = FileId { dev: s.dev, ino: s.ino };
            if matched.contains(&id) {
                continue;
            }
            let Some(dir) = s.path.parent() else { continue };
            let Ok(entries) = std::fs::read_dir(dir) else { continue };
            for entry in entries.flatten() {
                let Ok(meta) = entry.metadata() else { continue };
                if FileId::of(&meta) != id || meta.len() <= s.offset {
                    continue;
                }
                if Fingerprint::read(&entry.path(), s.fingerprint.len as usize).ok() == Some(s.fingerprint) {
                    tracing::info!(source = %self.name, path = %entry.path().display(), "reading the rest of a file rotated while sluice was down");
                    self.start(entry.path(), id, s.offset, s.fingerprint);
                }
            }
        }
    }

    fn start(&mut self, path: PathBuf, id: FileId, offset: u64, fingerprint: Fingerprint) {
        let labels = self.labels(&path);
        let tailed = Arc::new(Tailed {
            id,
            path: Mutex::new(path.clone()),
            fingerprint: Mutex::new(fingerprint),
            checkpoints: Mutex::new(Checkpoints::default()),
            committed: Mutex::new(Some(offset)),
            wake: tokio::sync::Notify::new(),
        });
        let decoder = Decoder::new(self.config.format, crate::sources::stdin::MAX_LINE);
        let context = Arc::clone(&self.context);
        let exits = self.exits.0.clone();
        let follower = Arc::clone(&tailed);
        let task = tokio::spawn(async move {
            let end = tailer::follow(follower, context, labels, decoder, offset).await;
            let _ = exits.send((id, end));
        });
        self.by_path.insert(path, id);
        self.files.insert(id, Running { tailed, task: Some(task) });
        self.open.inc();
    }

    fn follower_ended(&mut self, id: FileId, end: TailEnd) {
        self.open.dec();
        if let Some(running) = self.files.get_mut(&id) {
            running.task = None;
        }
        if end != TailEnd::Cancelled {
            // The path may name a new file now; a scan picks it up, and frees a slot.
            self.scan();
        }
    }

    async fn wait_for_acks(&self, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        while tokio::time::Instant::now() < deadline {
            if !self.files.values().any(|r| r.tailed.checkpoints.lock().unresolved() > 0) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Writes the committed offsets; forgets files that are gone and fully read.
    async fn save(&mut self) {
        let mut next = BTreeMap::new();
        let mut done = Vec::new();
        for (id, running) in &self.files {
            let t = &running.tailed;
            let Some(offset) = *t.committed.lock() else { continue };
            let path = t.path.lock().clone();
            let exists = std::fs::metadata(&path).map(|m| FileId::of(&m) == *id).unwrap_or(false);
            let finished = running.task.is_none() && t.checkpoints.lock().in_flight() == 0;
            if finished && !exists {
                done.push(*id);
                continue;
            }
            next.insert(key(*id), SavedFile { path, dev: id.dev, ino: id.ino, offset, fingerprint: *t.fingerprint.lock() });
        }
        for id in done {
            self.files.remove(&id);
            self.by_path.retain(|_, v| *v != id);
        }
        // Saved entries of files not followed now stay while the file exists (it may come back
        // into the globs); those whose file is gone are pruned.
        for (k, s) in &self.saved.files {
            if !next.contains_key(k) && std::fs::metadata(&s.path).map(|m| FileId::of(&m) == FileId { dev: s.dev, ino: s.ino }).unwrap_or(false) {
                next.insert(k.clone(), s.clone());
            }
        }
        self.saved.files = next;
        if let Err(e) = self.positions.save_async(self.saved.clone()).await {
            tracing::error!(source = %self.name, path = %self.positions.path().display(), error = %e, "cannot save positions");
        }
    }
}
