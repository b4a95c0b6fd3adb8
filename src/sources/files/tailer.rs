//! Reading one generation of a file: decode its lines and send them in batches.
//!
//! - [`Mode::Follow`]: the file the path names now. Read as it grows; when it shrinks it was
//!   truncated (copy-truncate rotation) and is read again from 0; when the path names another
//!   file or nothing (rename rotation, deletion) the old file is read to its end through the open
//!   descriptor, with a grace period for the writer's last lines, and the read ends
//!   ([`TailEnd::Moved`]).
//! - [`Mode::Drain`]: a rotated generation, plain or gzipped, read once to its end
//!   ([`TailEnd::Drained`]).
//!
//! Plain files are read with blocking `read` calls on the task's own thread: what a tailer reads
//! was just written and sits in the page cache, so a read costs microseconds, far less than a
//! round trip through the blocking pool (measured: that round trip was ~8% of the CPU per line).
//! Reads start at [`MIN_CHUNK`] and double while they come back full, up to [`MAX_CHUNK`], so a
//! file with a backlog is read in larger chunks and an idle one holds little memory.
//!
//! Memory does not grow with the number of files: a reader reads only while it holds one of the
//! source's [`READ_SLOTS`], from its first read of a batch until the batch is sent (when it is
//! full, or at the file's end), and a reader without a slot keeps no batch and no read buffer
//! beyond the part of a line it holds.
//!
//! Positions are content offsets (decompressed ones for a gzipped file). Each batch carries a
//! checkpoint: the offset after its last complete entry (never inside a line still being
//! joined), committed in [`Tailed`] once the sinks settled it.

use super::decode::{Decoded, Decoder};
use super::discover::{FINGERPRINT_BYTES, FileId, Fingerprint};
use crate::event::{AckSet, AckToken, LabelSet, LogBatch, LogEntry};
use crate::formats::StreamKind;
use crate::sources::lines::LineSplitter;
use crate::sources::positions::Checkpoints;
use crate::sources::stdin::{MAX_BATCH_BYTES, MAX_BATCH_LINES, MAX_LINE};
use bytes::{BufMut, Bytes, BytesMut};
use parking_lot::Mutex;
use prometheus_client::metrics::counter::Counter;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

/// How often an idle file is read again when no event woke its reader.
const POLL: Duration = Duration::from_secs(1);
/// How long a rotated file must be quiet before its end is taken as final.
pub const ROTATION_GRACE: Duration = Duration::from_millis(200);
/// The first read of a file, and after each time its end was reached.
const MIN_CHUNK: usize = 16 * 1024;
/// The largest read, while a backlog is read. Lines are slices of the read buffer, so a line in
/// flight keeps its whole chunk alive; 256 KiB reads measured no better than 64 KiB ones.
const MAX_CHUNK: usize = 64 * 1024;
/// Readers of one source filling a batch at once.
pub const READ_SLOTS: usize = 4;

/// The label sets of a file's entries (by stream), and its metadata.
#[derive(Debug, Clone)]
pub struct FileLabels {
    pub plain: LabelSet,
    pub stdout: LabelSet,
    pub stderr: LabelSet,
    pub metadata: Vec<(Arc<str>, Bytes)>,
}

/// One generation being read, shared by its reader, its path's task and the ack callbacks.
pub struct Tailed {
    pub id: FileId,
    pub compressed: bool,
    pub path: PathBuf,
    /// Of the content's first [`FINGERPRINT_BYTES`] (fewer while the file is shorter).
    pub fingerprint: Mutex<Fingerprint>,
    pub checkpoints: Mutex<Checkpoints<u64>>,
    /// The content offset up to which the sinks settled every entry.
    pub committed: AtomicU64,
    /// Read to its end; nothing more will be sent.
    pub done: AtomicBool,
}

impl Tailed {
    pub fn new(id: FileId, compressed: bool, path: PathBuf, fingerprint: Fingerprint, start: u64) -> Arc<Tailed> {
        Arc::new(Tailed {
            id,
            compressed,
            path,
            fingerprint: Mutex::new(fingerprint),
            checkpoints: Mutex::new(Checkpoints::default()),
            committed: AtomicU64::new(start),
            done: AtomicBool::new(false),
        })
    }
}

/// What the readers of a source share.
pub struct TailContext {
    pub batches: mpsc::Sender<LogBatch>,
    /// [`READ_SLOTS`] permits: a reader holds one while it fills a batch.
    pub read_slots: tokio::sync::Semaphore,
    pub cancel: CancellationToken,
    pub malformed: Counter,
    pub truncations: Counter,
    pub source: String,
}

/// How a read ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TailEnd {
    /// The path now names another file or nothing: the old one was read to its end.
    Moved,
    /// A rotated generation was read to its end.
    Drained,
    /// The file was gone (or the path named another one) when it was opened: nothing was read.
    Vanished,
    Cancelled,
    Failed,
}

/// Whether the reader follows the file a path names or reads a rotated generation once.
pub enum Mode<'a> {
    /// `wake` is notified on change events for the path.
    Follow {
        wake: &'a Notify,
    },
    Drain,
}

/// Reads `t` from content offset `start`; returns how it ended and the offset reached.
pub async fn read(
    t: Arc<Tailed>,
    ctx: &TailContext,
    labels: &FileLabels,
    format: super::config::FileFormat,
    start: u64,
    mode: Mode<'_>,
) -> (TailEnd, u64) {
    let mut input = match Input::open(&t, start).await {
        Ok(input) => input,
        Err(e) => {
            tracing::debug!(source = %ctx.source, path = %t.path.display(), error = %e, "cannot open file");
            t.done.store(true, Ordering::Release);
            return (TailEnd::Vanished, start);
        }
    };
    let mut reader = Reader {
        t,
        ctx,
        labels,
        decoder: Decoder::new(format, MAX_LINE),
        offset: start,
        complete: start,
        splitter: LineSplitter::with_chunk(MAX_LINE, MIN_CHUNK),
        chunk: MIN_CHUNK,
        slot: None,
        pending: Vec::new(),
        pending_bytes: 0,
        last_batch_lines: 0,
    };
    if let Input::File(file) = &input {
        // A file resumed at an offset is known by its first bytes from the start, so that its
        // position keeps them even if nothing more is read before the next save.
        reader.refresh_fingerprint(file);
    }
    let end = match mode {
        Mode::Follow { wake } => reader.follow(&mut input, wake).await,
        Mode::Drain => reader.drain(&mut input).await,
    };
    if matches!(end, TailEnd::Moved | TailEnd::Drained) {
        reader.t.done.store(true, Ordering::Release);
    }
    (end, reader.offset)
}

/// Where a generation's bytes come from.
enum Input {
    File(std::fs::File),
    /// A gzipped generation, decompressed in chunks on the blocking pool; `carry` is the part
    /// of a chunk not read yet.
    Gzip {
        chunks: mpsc::Receiver<std::io::Result<Bytes>>,
        carry: Option<Bytes>,
    },
}

impl Input {
    async fn open(t: &Tailed, start: u64) -> std::io::Result<Input> {
        let mut file = std::fs::File::open(&t.path)?;
        if FileId::of(&file.metadata()?) != t.id {
            // Rotated between discovery and opening: the path's task finds both files.
            return Err(std::io::Error::new(std::io::ErrorKind::NotFound, "the path names another file now"));
        }
        if !t.compressed {
            if start > 0 {
                file.seek(SeekFrom::Start(start))?;
            }
            return Ok(Input::File(file));
        }
        let mut chunks = gunzip(file);
        let mut skipped = 0u64;
        while skipped < start {
            match chunks.recv().await {
                Some(Ok(chunk)) if skipped + chunk.len() as u64 > start => {
                    // The rest of a chunk that goes past `start` is the first thing read.
                    let rest = chunk.slice((start - skipped) as usize..);
                    return Ok(Input::Gzip { chunks, carry: Some(rest) });
                }
                Some(Ok(chunk)) => skipped += chunk.len() as u64,
                Some(Err(e)) => return Err(e),
                None => break,
            }
        }
        Ok(Input::Gzip { chunks, carry: None })
    }

    /// Reads up to `want` bytes (a file) or the next decompressed chunk (gzip) into `buf`.
    async fn read_into(&mut self, buf: &mut BytesMut, want: usize) -> std::io::Result<usize> {
        match self {
            Input::File(file) => {
                // Into the buffer's spare room as it is: zeroing it first cost 2% of a line.
                buf.reserve(want);
                let len = buf.len();
                let spare = &mut buf.spare_capacity_mut()[..want];
                let (read, _) = rustix::io::read(&*file, spare)?;
                let n = read.len();
                // SAFETY: `read` initialised the first `n` bytes of the spare room.
                unsafe { buf.set_len(len + n) };
                Ok(n)
            }
            Input::Gzip { chunks, carry } => {
                let next = match carry.take() {
                    Some(rest) => Some(Ok(rest)),
                    None => chunks.recv().await,
                };
                match next {
                    Some(Ok(chunk)) => {
                        buf.put_slice(&chunk);
                        Ok(chunk.len())
                    }
                    Some(Err(e)) => Err(e),
                    None => Ok(0),
                }
            }
        }
    }
}

/// Decompresses a gzipped file on the blocking pool, a chunk at a time (memory stays bounded
/// whatever the file's size).
fn gunzip(file: std::fs::File) -> mpsc::Receiver<std::io::Result<Bytes>> {
    let (tx, rx) = mpsc::channel(2);
    tokio::task::spawn_blocking(move || {
        let mut decoder = flate2::read::MultiGzDecoder::new(std::io::BufReader::new(file));
        loop {
            let mut chunk = vec![0u8; MIN_CHUNK];
            match decoder.read(&mut chunk) {
                Ok(0) => return,
                Ok(n) => {
                    chunk.truncate(n);
                    if tx.blocking_send(Ok(Bytes::from(chunk))).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            }
        }
    });
    rx
}

struct Reader<'a> {
    t: Arc<Tailed>,
    ctx: &'a TailContext,
    labels: &'a FileLabels,
    decoder: Decoder,
    /// Content offset of the next byte to read.
    offset: u64,
    /// Content offset after the last complete entry.
    complete: u64,
    splitter: LineSplitter,
    /// The size of the next read: doubles while reads come back full.
    chunk: usize,
    /// Held from the first read of a batch until it is sent, or the file's end.
    slot: Option<tokio::sync::SemaphorePermit<'a>>,
    pending: Vec<LogEntry>,
    pending_bytes: usize,
    /// Lines in the last batch sent: the room a new batch starts with, taken at its first line
    /// (a file that goes quiet holds no empty batch).
    last_batch_lines: usize,
}

impl Reader<'_> {
    /// Reads what is there; `Ok(true)` when something was.
    async fn read_some(&mut self, input: &mut Input) -> Result<bool, TailEnd> {
        if self.ctx.cancel.is_cancelled() {
            return Err(TailEnd::Cancelled);
        }
        if self.slot.is_none() {
            let slots = &self.ctx.read_slots;
            self.slot = tokio::select! {
                slot = slots.acquire() => Some(slot.map_err(|_| TailEnd::Cancelled)?),
                _ = self.ctx.cancel.cancelled() => return Err(TailEnd::Cancelled),
            };
        }
        let buf = self.splitter.reserve();
        let want = self.chunk.min(buf.capacity() - buf.len()).max(1);
        let n = input.read_into(buf, want).await.map_err(|e| {
            tracing::warn!(source = %self.ctx.source, path = %self.t.path.display(), error = %e, "read failed; the file is left");
            TailEnd::Failed
        })?;
        if n == 0 {
            self.chunk = MIN_CHUNK;
            // What was read goes out before the slot is given back: a reader without a slot
            // holds no batch (1,000 files reaching their ends at once each held one, 460 MiB).
            self.send().await?;
            self.slot = None;
            self.decoder.idle();
            return Ok(false);
        }
        if n == want && self.chunk < MAX_CHUNK {
            self.chunk = (self.chunk * 2).min(MAX_CHUNK);
            self.splitter.set_chunk(self.chunk);
        }
        self.offset += n as u64;
        self.take_lines();
        if let Input::File(file) = input {
            self.refresh_fingerprint(file);
        }
        if self.pending.len() >= MAX_BATCH_LINES || self.pending_bytes >= MAX_BATCH_BYTES {
            self.send().await?;
        }
        Ok(true)
    }

    async fn drain(&mut self, input: &mut Input) -> TailEnd {
        loop {
            match self.read_some(input).await {
                Err(end) => return end,
                Ok(true) => continue,
                Ok(false) => {}
            }
            // A plain file renamed a moment ago may still get its writer's last lines.
            if let Input::File(file) = input {
                let quiet = file.metadata().ok().and_then(|m| m.modified().ok()).and_then(|m| m.elapsed().ok());
                if quiet.is_some_and(|q| q < ROTATION_GRACE) {
                    tokio::time::sleep(ROTATION_GRACE / 4).await;
                    continue;
                }
            }
            return self.finish(TailEnd::Drained).await;
        }
    }

    async fn follow(&mut self, input: &mut Input, wake: &Notify) -> TailEnd {
        let Input::File(_) = input else { return TailEnd::Failed };
        let mut moved_at: Option<tokio::time::Instant> = None;
        loop {
            match self.read_some(input).await {
                Err(end) => return end,
                Ok(true) => continue,
                Ok(false) => {}
            }
            // At the end of what is written (and sent).
            self.splitter.shrink();
            self.splitter.set_chunk(MIN_CHUNK);
            let Input::File(file) = input else { return TailEnd::Failed };
            let size = file.metadata().map(|m| m.len()).unwrap_or(self.offset);
            if size < self.offset {
                self.ctx.truncations.inc();
                tracing::info!(source = %self.ctx.source, path = %self.t.path.display(), "file truncated; reading it from the start");
                if file.seek(SeekFrom::Start(0)).is_err() {
                    return TailEnd::Failed;
                }
                self.restart_at_zero();
                continue;
            }
            let same = std::fs::metadata(&self.t.path).map(|m| FileId::of(&m) == self.t.id).unwrap_or(false);
            if !same {
                // Rotated or deleted: the old file gets a grace period for its last writes.
                match moved_at {
                    None => moved_at = Some(tokio::time::Instant::now()),
                    Some(at) if at.elapsed() >= ROTATION_GRACE => return self.finish(TailEnd::Moved).await,
                    Some(_) => {}
                }
                tokio::time::sleep(ROTATION_GRACE / 4).await;
                continue;
            }
            tokio::select! {
                _ = self.ctx.cancel.cancelled() => return TailEnd::Cancelled,
                _ = wake.notified() => {}
                _ = tokio::time::sleep(POLL) => {}
            }
        }
    }

    /// At the end of a generation: what is held goes out as it is.
    async fn finish(&mut self, end: TailEnd) -> TailEnd {
        if let Some(rest) = self.splitter.take_rest()
            && let Some(decoded) = self.decoder.decode(rest)
        {
            self.push(decoded);
        }
        if let Some(decoded) = self.decoder.flush() {
            self.push(decoded);
        }
        self.complete = self.offset;
        match self.send().await {
            Ok(()) => end,
            Err(end) => end,
        }
    }

    fn restart_at_zero(&mut self) {
        self.offset = 0;
        self.complete = 0;
        self.splitter = LineSplitter::with_chunk(MAX_LINE, MIN_CHUNK);
        self.chunk = MIN_CHUNK;
        self.decoder = Decoder::new(self.decoder.format(), MAX_LINE);
        *self.t.fingerprint.lock() = Fingerprint::of(b"");
    }

    /// Keeps the fingerprint growing until it covers [`FINGERPRINT_BYTES`].
    fn refresh_fingerprint(&mut self, file: &std::fs::File) {
        let known = self.t.fingerprint.lock().len as u64;
        if known as usize >= FINGERPRINT_BYTES || self.offset <= known {
            return;
        }
        let mut buf = [0u8; FINGERPRINT_BYTES];
        if let Ok(n) = file.read_at(&mut buf, 0) {
            *self.t.fingerprint.lock() = Fingerprint::of(&buf[..n]);
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
        self.pending_bytes += entry.line.len();
        if self.pending.capacity() == 0 {
            self.pending.reserve_exact(self.last_batch_lines);
        }
        self.pending.push(entry);
    }

    /// Sends what is pending with a token that commits the checkpoint once settled.
    async fn send(&mut self) -> Result<(), TailEnd> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let entries = std::mem::take(&mut self.pending);
        self.pending_bytes = 0;
        self.last_batch_lines = entries.len();
        let seq = self.t.checkpoints.lock().push(self.complete);
        let tailed = Arc::clone(&self.t);
        let token = AckToken::new(move |status| {
            if let Some(offset) = tailed.checkpoints.lock().ack(seq, status) {
                tailed.committed.store(offset, Ordering::Release);
            }
        });
        let sent = self.ctx.batches.send(LogBatch::new(entries, AckSet::one(token))).await;
        // The batch is the pipelines' now: another reader may fill one.
        self.slot = None;
        self.splitter.compact();
        sent.map_err(|_| TailEnd::Cancelled)
    }
}
