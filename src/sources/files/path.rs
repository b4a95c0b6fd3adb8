//! Following one path through its generations, one task per path.
//!
//! The task reads the file the path names until a rotation moves it away (and it was read to its
//! end), then the rotated generations written since that it has not read (oldest first: when
//! rotations outrun it, plain and gzipped ones are read in the order they were written), then
//! the path's new file. Generations are read one after the other, so a path's entries leave in
//! the order they were written, and each task holds at most one file open. A listing that raced
//! a rotation or compression under way (see [`super::generations::Unread::settled`]), or a
//! generation gone between listing and opening, is listed again before anything newer is read.
//!
//! The task ends when the path names no file any more (a removed pod) or when cancelled. The
//! path's position is the oldest generation with entries the sinks have not settled, at its
//! committed offset (see [`PathState::position`]).
//!
//! A kubelet path with pod enrichment first resolves its labels (see [`super::kubernetes`]),
//! before it opens anything; when a relabel rule drops it, the task ends at once, marked
//! [`PathState::dropped`], having read nothing.

use super::config::FileFormat;
use super::discover::PodPath;
use super::discover::{FileId, Fingerprint};
use super::generations::{Generation, History};
use super::kubernetes::{Labeled, PodLabeler};
use super::tailer::{self, FileLabels, Mode, TailContext, TailEnd, Tailed};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::Notify;

/// How often, and how long apart, a path's rotated files are listed again while a rotation
/// under way leaves the listing unsettled (see [`super::generations::Unread::settled`]).
const UNSETTLED_RETRIES: u32 = 50;
const UNSETTLED_WAIT: std::time::Duration = std::time::Duration::from_millis(20);

/// Where a path is up to, as saved in the positions file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    /// The identity of the generation (of the gzipped file, for a compressed one).
    pub dev: u64,
    pub ino: u64,
    #[serde(default)]
    pub compressed: bool,
    pub fingerprint: Fingerprint,
    /// Content offset after the last settled entry.
    pub offset: u64,
}

impl Position {
    pub fn id(&self) -> FileId {
        FileId { dev: self.dev, ino: self.ino }
    }
}

/// A followed path, shared by its task and the source's manager.
pub struct PathState {
    pub base: PathBuf,
    /// Notified on change events for the path.
    pub wake: Notify,
    /// The generations read, oldest first, while any has entries not settled.
    generations: Mutex<VecDeque<Arc<Tailed>>>,
    /// A relabel rule dropped the path's target.
    dropped: AtomicBool,
}

impl PathState {
    pub fn new(base: PathBuf) -> Arc<PathState> {
        Arc::new(PathState {
            base,
            wake: Notify::new(),
            generations: Mutex::new(VecDeque::new()),
            dropped: AtomicBool::new(false),
        })
    }

    /// Whether the task ended because a relabel rule dropped the path (it read nothing).
    pub fn dropped(&self) -> bool {
        self.dropped.load(Ordering::Acquire)
    }

    fn push(&self, generation: Arc<Tailed>) {
        self.generations.lock().push_back(generation);
    }

    /// The oldest generation with entries not settled, or the newest one, at its committed
    /// offset. (Generations before it are forgotten: they are settled.)
    pub fn position(&self) -> Option<Position> {
        let mut generations = self.generations.lock();
        while generations.len() > 1
            && generations
                .front()
                .is_some_and(|t| t.done.load(Ordering::Acquire) && t.checkpoints.lock().in_flight() == 0)
        {
            generations.pop_front();
        }
        generations.front().map(|t| Position {
            dev: t.id.dev,
            ino: t.id.ino,
            compressed: t.compressed,
            fingerprint: *t.fingerprint.lock(),
            offset: t.committed.load(Ordering::Acquire),
        })
    }

    /// Whether some batch sent has not been acknowledged yet.
    pub fn unresolved(&self) -> bool {
        self.generations.lock().iter().any(|t| t.checkpoints.lock().unresolved() > 0)
    }
}

/// Where a path's task begins.
pub struct Start {
    pub history: History,
    /// A rotated generation to read first, from a content offset (a saved position in a file
    /// rotated while sluice was down).
    pub resume: Option<(Generation, u64)>,
    /// Where the current file starts when it is this one: `(identity, offset)`.
    pub current: Option<(FileId, u64)>,
}

/// The pod labels a kubelet path's task resolves before reading.
pub struct PodLabeling {
    pub labeler: Arc<PodLabeler>,
    pub path: PodPath,
}

/// One path's task.
pub struct PathTask {
    pub state: Arc<PathState>,
    pub ctx: Arc<TailContext>,
    pub labels: FileLabels,
    pub format: FileFormat,
    /// When set, the labels come from it (they replace `labels`) before anything is read.
    pub pod: Option<PodLabeling>,
}

impl PathTask {
    /// Runs until the path names no file ([`TailEnd::Moved`]), cancellation or a read error;
    /// returns the history for a later task of the same path.
    pub async fn run(mut self, start: Start) -> (TailEnd, History) {
        if let Some(pod) = self.pod.take() {
            match pod.labeler.labels(&pod.path, &self.ctx.cancel).await {
                Labeled::Labels(labels) => self.labels = labels,
                Labeled::Cancelled => return (TailEnd::Cancelled, start.history),
                Labeled::Dropped => {
                    self.state.dropped.store(true, Ordering::Release);
                    return (TailEnd::Moved, start.history);
                }
            }
        }
        let Start { mut history, resume, mut current } = start;
        let base = self.state.base.clone();
        let mut queue: VecDeque<(Generation, u64)> = resume.into_iter().collect();
        let mut unsettled = 0;
        loop {
            while let Some((generation, offset)) = queue.pop_front() {
                let resumed = current.is_some_and(|(saved, _)| !generation.compressed && generation.id == saved);
                match self.drain(&mut history, generation, offset).await {
                    TailEnd::Cancelled => return (TailEnd::Cancelled, history),
                    // Gone since it was listed (renamed on, compressed): list again, so that
                    // an older generation it turned into is not read after the newer ones.
                    TailEnd::Vanished => queue.clear(),
                    _ if resumed => current = None,
                    _ => {}
                }
            }
            let Ok(meta) = tokio::fs::metadata(&base).await else { return (TailEnd::Moved, history) };
            let id = FileId::of(&meta);
            // Rotations since the last look come first (the file just identified among them,
            // if it was rotated in between).
            let unread = history.unread(&base);
            if !unread.settled && unsettled < UNSETTLED_RETRIES {
                unsettled += 1;
                tokio::select! {
                    _ = self.ctx.cancel.cancelled() => return (TailEnd::Cancelled, history),
                    _ = tokio::time::sleep(UNSETTLED_WAIT) => continue,
                }
            }
            unsettled = 0;
            if !unread.generations.is_empty() {
                queue.extend(unread.generations.into_iter().map(|(g, offset)| match current {
                    Some((saved, at)) if !g.compressed && g.id == saved => (g, offset.max(at)),
                    _ => (g, offset),
                }));
                continue;
            }
            let offset = match current.take() {
                Some((saved, at)) if saved == id && at <= meta.len() => at,
                _ => 0,
            };
            let tailed = Tailed::new(id, false, base.clone(), Fingerprint::of(b""), offset);
            self.state.push(Arc::clone(&tailed));
            let (end, reached) = tailer::read(
                Arc::clone(&tailed),
                &self.ctx,
                &self.labels,
                self.format,
                offset,
                Mode::Follow { wake: &self.state.wake },
            )
            .await;
            match end {
                TailEnd::Moved | TailEnd::Drained => history.record(id, false, *tailed.fingerprint.lock(), reached),
                TailEnd::Vanished => {}
                TailEnd::Cancelled | TailEnd::Failed => return (end, history),
            }
        }
    }

    /// Reads a rotated generation to its end.
    async fn drain(&self, history: &mut History, generation: Generation, offset: u64) -> TailEnd {
        let fingerprint = generation.fingerprint().unwrap_or(Fingerprint::of(b""));
        tracing::info!(source = %self.ctx.source, path = %generation.path.display(), offset, "reading a rotated generation");
        let tailed = Tailed::new(generation.id, generation.compressed, generation.path.clone(), fingerprint, offset);
        self.state.push(Arc::clone(&tailed));
        let (end, reached) =
            tailer::read(Arc::clone(&tailed), &self.ctx, &self.labels, self.format, offset, Mode::Drain).await;
        // A generation that cannot be read is not tried again.
        match end {
            TailEnd::Vanished | TailEnd::Cancelled => {}
            TailEnd::Failed => history.record(generation.id, generation.compressed, fingerprint, u64::MAX),
            TailEnd::Moved | TailEnd::Drained => {
                history.record(generation.id, generation.compressed, fingerprint, reached)
            }
        }
        end
    }
}
