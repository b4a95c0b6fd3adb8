//! Watching the config for changes: the agent file and the pipelines directory.
//!
//! Events come from `notify` (inotify on Linux) and are debounced: a reload is asked for once
//! the files have been quiet for [`QUIET`] (or [`MAX_WAIT`] after the first change). That covers editors that write a temporary file and
//! rename it, a Kubernetes ConfigMap's `..data` symlink swap, files deleted and re-created, and
//! files written in several steps (a half-written file fails to load and is loaded again when
//! the rest arrives). A fingerprint of the files' contents is compared as well, on every event
//! and every [`POLL`] (the fallback when events are missed, e.g. a watched directory that was
//! replaced): a reload is asked for only when the contents changed.

use notify::{RecursiveMode, Watcher};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::mpsc;

/// How long the files must be quiet before a reload.
pub const QUIET: Duration = Duration::from_millis(150);
/// The longest a reload waits for quiet after the first change: files that keep changing
/// still reload this often.
pub const MAX_WAIT: Duration = Duration::from_millis(500);
/// How often the files are compared even without events.
pub const POLL: Duration = Duration::from_secs(10);

/// What to watch.
#[derive(Debug, Clone)]
pub struct Watched {
    pub agent_file: PathBuf,
    pub pipelines_dir: Option<PathBuf>,
}

impl Watched {
    /// A hash of the agent file and of every pipeline file (names and contents).
    pub fn fingerprint(&self) -> u64 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        std::fs::read(&self.agent_file).ok().hash(&mut h);
        if let Some(dir) = &self.pipelines_dir
            && let Ok(files) = super::pipeline_files(dir)
        {
            for f in files {
                f.hash(&mut h);
                std::fs::read(&f).ok().hash(&mut h);
            }
        }
        h.finish()
    }

    fn directories(&self) -> Vec<PathBuf> {
        let mut dirs = Vec::new();
        let parent = self.agent_file.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        dirs.push(parent.to_path_buf());
        if let Some(d) = &self.pipelines_dir
            && !dirs.contains(d)
        {
            dirs.push(d.clone());
        }
        dirs
    }
}

/// Sends `()` on `changes` whenever the watched files' contents changed (debounced). Runs until
/// the receiver is dropped.
pub async fn watch(watched: Watched, changes: mpsc::Sender<()>) {
    let (events_tx, mut events) = mpsc::unbounded_channel::<()>();
    let mut watcher = match notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        // An error is passed on too: the fingerprint tells whether anything changed.
        let maybe_changed = match &event {
            Ok(event) => crate::fswatch::is_change(event),
            Err(_) => true,
        };
        if maybe_changed {
            let _ = events_tx.send(());
        }
    }) {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch the config files; checking them every {}s instead", POLL.as_secs());
            None
        }
    };
    let mut watching: Vec<PathBuf> = Vec::new();
    let mut last = watched.fingerprint();
    let mut poll = tokio::time::interval(POLL);
    loop {
        // (Re-)establish the watches: a directory that was deleted and re-created has lost its.
        if let Some(w) = watcher.as_mut() {
            for dir in watching.drain(..) {
                let _ = w.unwatch(&dir);
            }
            for dir in watched.directories() {
                if w.watch(&dir, RecursiveMode::NonRecursive).is_ok() {
                    watching.push(dir);
                }
            }
        }
        tokio::select! {
            _ = poll.tick() => {}
            Some(()) = events.recv() => {
                // Debounce: wait until the files are quiet, but not longer than MAX_WAIT.
                let first = tokio::time::Instant::now();
                while first.elapsed() < MAX_WAIT {
                    match tokio::time::timeout(QUIET, events.recv()).await {
                        Ok(Some(())) => continue,
                        _ => break,
                    }
                }
            }
        }
        let now = tokio::task::spawn_blocking({
            let watched = watched.clone();
            move || watched.fingerprint()
        })
        .await
        .unwrap_or(last);
        if now != last {
            last = now;
            if changes.send(()).await.is_err() {
                return;
            }
        }
    }
}
