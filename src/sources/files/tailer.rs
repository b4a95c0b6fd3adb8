//! Following one file: read from its position as it grows, decode its lines, send batches, and
//! notice when it is truncated (start again at 0), rotated or deleted (read the old file to its
//! end through the open descriptor, then stop; the manager follows the new file).
//!
//! Positions are byte offsets. Each batch carries a checkpoint: the offset after its last
//! complete entry (never inside a line still being joined), committed once the sinks settled it.

use super::decode::{Decoded, Decoder};
use super::discover::{FINGERPRINT_BYTES, FileId, Fingerprint};
use crate::event::{AckSet, AckToken, LabelSet, LogBatch, LogEntry};
use crate::formats::StreamKind;
use crate::sources::lines::LineSplitter;
use crate::sources::positions::Checkpoints;
use crate::sources::stdin::{MAX_BATCH_BYTES, MAX_BATCH_LINES, MAX_LINE};
use bytes::Bytes;
use parking_lot::Mutex;
use prometheus_client::metrics::counter::Counter;
use std::io::SeekFrom;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

/// How often an idle file is read again when no event woke its follower.
const POLL: Duration = Duration::from_secs(1);
/// How long the old file of a rotation is given for its last writes.
const ROTATION_GRACE: Duration = Duration::from_millis(200);
/// Bytes read at once.
const CHUNK: usize = 16 * 1024;

/// The label sets of a file's entries (by stream), and its metadata.
#[derive(Debug, Clone)]
pub struct FileLabels {
    pub plain: LabelSet,
    pub stdout: LabelSet,
    pub stderr: LabelSet,
    pub metadata: Vec<(Arc<str>, Bytes)>,
}

/// A followed file, shared by its follower, the manager and the ack callbacks.
pub struct Tailed {
    pub id: FileId,
    pub path: Mutex<PathBuf>,
    pub fingerprint: Mutex<Fingerprint>,
    pub checkpoints: Mutex<Checkpoints<u64>>,
    pub committed: Mutex<Option<u64>>,
    /// Wakes the follower (a change event for its path).
    pub wake: Notify,
}

/// What the followers of a source share.
pub struct TailContext {
    pub batches: mpsc::Sender<LogBatch>,
    pub cancel: CancellationToken,
    pub malformed: Counter,
    pub truncations: Counter,
    pub source: String,
}

/// How a follower ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TailEnd {
    /// The path now names another file (rotation, replacement) or nothing: the old one was read
    /// to its end.
    Moved,
    Cancelled,
    Failed,
}

struct Pending {
    entries: Vec<LogEntry>,
    bytes: usize,
}

pub async fn follow(t: Arc<Tailed>, ctx: Arc<TailContext>, labels: FileLabels, decoder: Decoder, start: u64) -> TailEnd {
    let path = t.path.lock().clone();
    let mut file = match tokio::fs::File::open(&path).await {
        Ok(f) => f,
        Err(e) => {
            tracing::debug!(source = %ctx.source, path = %path.display(), error = %e, "cannot open file");
            return TailEnd::Moved;
        }
    };
    match file.metadata().await {
        Ok(m) if FileId::of(&m) == t.id => {}
        // The path was rotated between discovery and opening: the manager will find both.
        _ => return TailEnd::Moved,
    }
    let mut follower = Follower { t, ctx, labels, decoder, offset: start, complete: start, splitter: LineSplitter::with_chunk(MAX_LINE, CHUNK), pending: Pending { entries: Vec::new(), bytes: 0 } };
    if follower.offset > 0 && file.seek(SeekFrom::Start(follower.offset)).await.is_err() {
        return TailEnd::Failed;
    }
    follower.run(&mut file, &path).await
}

struct Follower {
    t: Arc<Tailed>,
    ctx: Arc<TailContext>,
    labels: FileLabels,
    decoder: Decoder,
    /// Offset of the next byte to read.
    offset: u64,
    /// Offset after the last complete entry.
    complete: u64,
    splitter: LineSplitter,
    pending: Pending,
}

impl Follower {
    async fn run(&mut self, file: &mut tokio::fs::File, path: &PathBuf) -> TailEnd {
        let mut rotated_at: Option<tokio::time::Instant> = None;
        loop {
            if self.ctx.cancel.is_cancelled() {
                return TailEnd::Cancelled;
            }
            let n = match file.read_buf(self.splitter.reserve()).await {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(source = %self.ctx.source, path = %path.display(), error = %e, "read failed; the file is left");
                    return TailEnd::Failed;
                }
            };
            if n > 0 {
                self.offset += n as u64;
                self.take_lines();
                self.refresh_fingerprint(file).await;
                if self.pending.entries.len() >= MAX_BATCH_LINES || self.pending.bytes >= MAX_BATCH_BYTES {
                    if self.send().await.is_err() {
                        return TailEnd::Cancelled;
                    }
                }
                continue;
            }
            // At the end of what is written.
            if self.send().await.is_err() {
                return TailEnd::Cancelled;
            }
            self.splitter.shrink();
            let size = file.metadata().await.map(|m| m.len()).unwrap_or(self.offset);
            if size < self.offset {
                self.ctx.truncations.inc();
                tracing::info!(source = %self.ctx.source, path = %path.display(), "file truncated; reading it from the start");
                if file.seek(SeekFrom::Start(0)).await.is_err() {
                    return TailEnd::Failed;
                }
                self.restart_at_zero();
                continue;
            }
            let same = tokio::fs::metadata(path).await.map(|m| FileId::of(&m) == self.t.id).unwrap_or(false);
            if !same {
                // Rotated or deleted: give the old file a moment for its last writes, then stop.
                match rotated_at {
                    None => rotated_at = Some(tokio::time::Instant::now()),
                    Some(at) if at.elapsed() >= ROTATION_GRACE => {
                        self.flush_rest();
                        return if self.send().await.is_err() { TailEnd::Cancelled } else { TailEnd::Moved };
                    }
                    Some(_) => {}
                }
                tokio::time::sleep(ROTATION_GRACE / 4).await;
                continue;
            }
            tokio::select! {
                _ = self.ctx.cancel.cancelled() => return TailEnd::Cancelled,
                _ = self.t.wake.notified() => {}
                _ = tokio::time::sleep(POLL) => {}
            }
        }
    }

    fn restart_at_zero(&mut self) {
        self.offset = 0;
        self.complete = 0;
        self.splitter = LineSplitter::with_chunk(MAX_LINE, CHUNK);
        self.decoder = Decoder::new(self.decoder.format(), MAX_LINE);
        *self.t.fingerprint.lock() = Fingerprint::of(b"");
    }

    /// Keeps the fingerprint growing until it covers [`FINGERPRINT_BYTES`].
    async fn refresh_fingerprint(&mut self, file: &tokio::fs::File) {
        let known = self.t.fingerprint.lock().len as u64;
        if known as usize >= FINGERPRINT_BYTES || self.offset <= known {
            return;
        }
        let Ok(std_file) = file.try_clone().await.map(|f| f.try_into_std()) else { return };
        let Ok(std_file) = std_file else { return };
        let read = tokio::task::spawn_blocking(move || {
            let mut buf = vec![0u8; FINGERPRINT_BYTES];
            let n = std_file.read_at(&mut buf, 0).unwrap_or(0);
            Fingerprint::of(&buf[..n])
        })
        .await;
        if let Ok(fp) = read {
            *self.t.fingerprint.lock() = fp;
        }
    }

    /// Decodes the lines buffered; entries go to `pending`.
    fn take_lines(&mut self) {
        let base = self.offset - self.splitter.buffered() as u64;
        let mut consumed = 0u64;
        while let Some(line) = self.splitter.next_line() {
            consumed += line.consumed as u64;
            if let Some(decoded) = self.decoder.decode(line.bytes) {
                self.push(decoded);
            }
            if !self.decoder.holds_partial() {
                self.complete = base + consumed;
            }
        }
    }

    /// At the end of a rotated file: what is held goes out as it is.
    fn flush_rest(&mut self) {
        if let Some(rest) = self.splitter.take_rest() {
            if let Some(decoded) = self.decoder.decode(rest) {
                self.push(decoded);
            }
        }
        if let Some(decoded) = self.decoder.flush() {
            self.push(decoded);
        }
        self.complete = self.offset;
    }

    fn push(&mut self, d: Decoded) {
        if d.malformed {
            self.ctx.malformed.inc();
        }
        let labels = match d.stream {
            Some(StreamKind::Stdout) => &self.labels.stdout,
            Some(StreamKind::Stderr) => &self.labels.stderr,
            None => &self.labels.plain,
        };
        let mut entry = LogEntry::new(d.time.unwrap_or_else(crate::event::now_nanos), d.content, labels.clone());
        for (name, value) in &self.labels.metadata {
            entry.metadata.set(Arc::clone(name), value.clone());
        }
        self.pending.bytes += entry.line.len();
        self.pending.entries.push(entry);
    }

    /// Sends what is pending with a token that commits the checkpoint once settled.
    async fn send(&mut self) -> Result<(), ()> {
        if self.pending.entries.is_empty() {
            return Ok(());
        }
        let entries = std::mem::take(&mut self.pending.entries);
        self.pending.bytes = 0;
        let seq = self.t.checkpoints.lock().push(self.complete);
        let tailed = Arc::clone(&self.t);
        let token = AckToken::new(move |status| {
            let committed = tailed.checkpoints.lock().ack(seq, status);
            if let Some(offset) = committed {
                *tailed.committed.lock() = Some(offset);
            }
        });
        self.ctx.batches.send(LogBatch::new(entries, AckSet::one(token))).await.map_err(|_| ())
    }
}
