//! Following one container's logs: open the stream from where the container is up to, turn
//! messages into entries, batch them, and reopen the stream when it breaks or stalls while the
//! container runs. Ends when the container stopped (its stream ended, it is not running, and
//! its log read once more without following found nothing new), when it is gone, or at
//! shutdown.
//!
//! Positions: `read` is the last message taken (where a reopened stream resumes in this process);
//! each batch carries a checkpoint, the position after its last *complete* line, which becomes
//! the container's committed position once every sink settled the batch. A line whose parts are
//! still being joined is never covered by a checkpoint, so a restart reads all of its parts again.

use super::Tracked;
use super::client::{ClientError, Endpoint, Fill, LogsQuery, READ_SIZE, open_logs};
use super::frames::{FrameReader, Line, LineJoiner, Message, Origin};
use crate::event::{AckSet, AckToken, LogBatch, LogEntry};
use crate::sources::stdin::{MAX_BATCH_BYTES, MAX_BATCH_LINES, MAX_LINE};
use prometheus_client::metrics::counter::Counter;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Where a container's stream is up to: the time of the last message taken and how many
/// messages with exactly that time were taken (Docker's `since` is inclusive: those are skipped).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    pub time: i64,
    pub ties: u32,
}

impl Position {
    fn after(previous: Option<Position>, time: i64) -> Position {
        match previous {
            Some(p) if p.time == time => Position { time, ties: p.ties + 1 },
            _ => Position { time, ties: 1 },
        }
    }
}

/// Where a follower starts when the container has no position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    At(Position),
    Beginning,
    Now,
}

/// Skips the messages at or before a position (a reopened stream starts at its time).
struct Skipper {
    until: Option<Position>,
    seen: u32,
}

impl Skipper {
    fn skip(&mut self, time: i64) -> bool {
        let Some(p) = self.until else { return false };
        if time < p.time {
            return true;
        }
        if time == p.time && self.seen < p.ties {
            self.seen += 1;
            return true;
        }
        self.until = None;
        false
    }
}

/// What every follower of a source shares.
pub struct FollowContext {
    pub endpoint: Endpoint,
    pub api_version: String,
    pub docker: bollard::Docker,
    pub batches: mpsc::Sender<LogBatch>,
    pub cancel: CancellationToken,
    pub stall_interval: Duration,
    pub daemon_errors: Counter,
    pub stalls: Counter,
    pub reconnects: Counter,
    /// Lines the engine sent again (after rotation) and the follower skipped.
    pub replays: Counter,
    pub source: String,
}

/// How a follower ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FollowEnd {
    /// The container stopped and its log was read to the end.
    Stopped,
    /// The container does not exist any more.
    Gone,
    Cancelled,
}

enum StreamEnd {
    Eof,
    Broken(String),
    Stalled,
    Cancelled,
}

fn now_nanos() -> i64 {
    crate::event::now_nanos()
}

/// How often a stream that keeps sending is read (see the follower's loop). A round's lines make
/// one batch, and a batch of a few lines costs a channel send, a pipeline run, an
/// acknowledgement and a queue permit.
const READ_PERIOD: Duration = Duration::from_millis(5);
/// The engine's socket holds about 45 KiB of ~300-byte messages (its send buffer, 208 KiB by
/// default, counts each message's kernel overhead); once full, the engine waits. A round that
/// took a third of that is followed by a short one, so that one container's stream is not held
/// to the socket's size per period (24 k lines per second with 5 ms alone). Reading at once after
/// such a round instead, or when the stream's rate says 16 KiB have gathered, was measured too:
/// no faster for a flooding container, and as costly per line as a wake-up per message.
const BUSY_ROUND: usize = 16 * 1024;
const BUSY_READ_PERIOD: Duration = Duration::from_millis(1);
/// The most taken from the socket before the messages are cut out of it.
const FILL_LIMIT: usize = 4 * READ_SIZE;

/// Lines read and not sent yet.
struct Pending {
    entries: Vec<LogEntry>,
    bytes: usize,
}

impl Pending {
    fn is_full(&self) -> bool {
        self.entries.len() >= MAX_BATCH_LINES || self.bytes >= MAX_BATCH_BYTES
    }
}

pub async fn follow(t: Arc<Tracked>, ctx: Arc<FollowContext>, start: Start) -> FollowEnd {
    let mut read: Option<Position> = match start {
        Start::At(p) => Some(p),
        _ => *t.read.lock(),
    };
    let mut complete = read;
    let mut joiner = LineJoiner::new(MAX_LINE);
    let mut pending = Pending { entries: Vec::new(), bytes: 0 };
    let mut failures: u32 = 0;
    let first_since = match (read, start) {
        (Some(p), _) => Some(p.time),
        (None, Start::Now) => Some(now_nanos()),
        _ => None,
    };
    let mut since = first_since;
    let mut newest = [Newest::default(); 2];
    let mut last_data = tokio::time::Instant::now();
    // Once the container stopped, its log is read once more without following, from the
    // position: a follow stream can end before the engine has written the container's last
    // lines, and a stopped container is not read again.
    let mut follow = true;
    loop {
        let tty = t.info.lock().tty;
        let stream = open_logs(&ctx.endpoint, &ctx.api_version, &t.id, LogsQuery { since, follow, tail: None }).await;
        let mut stream = match stream {
            Ok(s) => s,
            Err(ClientError::NotFound) => return finish(&t, read, FollowEnd::Gone),
            Err(e) => {
                failures += 1;
                if failures == 1 {
                    tracing::warn!(source = %ctx.source, container = %t.name(), error = %e, "cannot open the container's log stream; retrying");
                }
                let delay = Duration::from_millis(200u64.saturating_mul(1 << failures.min(7)));
                tokio::select! {
                    _ = ctx.cancel.cancelled() => return finish(&t, read, FollowEnd::Cancelled),
                    _ = tokio::time::sleep(delay) => continue,
                }
            }
        };
        failures = 0;
        let mut skipper = Skipper { until: read, seen: 0 };
        let mut reader = FrameReader::new(tty);
        let end = loop {
            // A stream that goes quiet right after being busy is checked soon: that is when
            // json-file rotation stalls follow streams. Idle containers are checked rarely.
            let quiet_limit = if last_data.elapsed() < RECENTLY_ACTIVE {
                ctx.stall_interval.min(ACTIVE_STALL_CHECK)
            } else {
                ctx.stall_interval
            };
            tokio::select! {
                biased;
                _ = ctx.cancel.cancelled() => break StreamEnd::Cancelled,
                ready = stream.ready() => if let Err(e) = ready {
                    break StreamEnd::Broken(e.to_string());
                },
                _ = tokio::time::sleep(quiet_limit) => {
                    if is_stalled(&t, &ctx, read).await {
                        break StreamEnd::Stalled;
                    }
                    last_data = tokio::time::Instant::now() - RECENTLY_ACTIVE;
                    continue;
                }
            };
            // Read what the engine sent. A stream that keeps sending is then read on a timer,
            // every READ_PERIOD, with its socket off the runtime's poller: the engine writes
            // every message on its own, and a wake-up per message costs more than the message.
            // Each round's lines go out as one batch; a round that finds nothing hands the socket
            // back to the poller.
            let end = loop {
                let filled = stream.fill(FILL_LIMIT, |bytes| reader.push(bytes));
                while let Some(message) = reader.next_message() {
                    let message = match message {
                        Ok(m) => m,
                        Err(e) => return broken_stream(&t, &ctx, read, e.to_string()),
                    };
                    if skipper.skip(message.time) {
                        continue;
                    }
                    // The engine can send lines again after json-file rotation. Each stream's
                    // timestamps only grow (nanoseconds, taken as the daemon reads the
                    // container's output), so one not past the newest is a replay; except the
                    // parts of a line split at 16 KiB, which all carry the line's timestamp.
                    if let Some(newest) = newest_of(&mut newest, message.origin).filter(|_| message.stamped) {
                        if newest.replays(&message) {
                            ctx.replays.inc();
                            continue;
                        }
                        *newest = Newest { time: message.time, open: !message.complete };
                    }
                    read = Some(Position::after(read, message.time));
                    if let Some(line) = joiner.push(message) {
                        push_line(&t, &ctx, &mut pending, line);
                    }
                    if !joiner.holds_partial() {
                        complete = read;
                    }
                    if pending.is_full() && send(&t, &ctx, &mut pending, complete).await.is_err() {
                        return finish(&t, read, FollowEnd::Cancelled);
                    }
                }
                let taken = match filled {
                    Err(e) => break Some(StreamEnd::Broken(e.to_string())),
                    Ok(Fill::End) => break Some(StreamEnd::Eof),
                    Ok(Fill::Bytes(n)) => n,
                };
                if taken >= FILL_LIMIT {
                    // More is waiting.
                    continue;
                }
                if taken == 0 {
                    // Quiet: the socket goes back to the poller (nothing is pending: each round
                    // with lines sent them).
                    break None;
                }
                if send(&t, &ctx, &mut pending, complete).await.is_err() {
                    return finish(&t, read, FollowEnd::Cancelled);
                }
                reader.shrink();
                last_data = tokio::time::Instant::now();
                if let Err(e) = stream.unwatch() {
                    break Some(StreamEnd::Broken(e.to_string()));
                }
                tokio::select! {
                    biased;
                    _ = ctx.cancel.cancelled() => break Some(StreamEnd::Cancelled),
                    _ = tokio::time::sleep(if taken >= BUSY_ROUND { BUSY_READ_PERIOD } else { READ_PERIOD }) => {}
                }
            };
            if send(&t, &ctx, &mut pending, complete).await.is_err() {
                return finish(&t, read, FollowEnd::Cancelled);
            }
            reader.shrink();
            if let Some(end) = end {
                break end;
            }
        };
        match end {
            StreamEnd::Cancelled => return finish(&t, read, FollowEnd::Cancelled),
            StreamEnd::Stalled => {
                ctx.stalls.inc();
                ctx.reconnects.inc();
                tracing::warn!(source = %ctx.source, container = %t.name(), "the container's log stream stalled (lines are waiting in its log); reopening it from the position");
            }
            StreamEnd::Eof | StreamEnd::Broken(_) => {
                let running = ctx
                    .docker
                    .inspect_container(&t.id, None)
                    .await
                    .ok()
                    .map(|c| c.state.and_then(|s| s.running).unwrap_or(false));
                match running {
                    Some(true) => {
                        ctx.reconnects.inc();
                        if let StreamEnd::Broken(e) = &end {
                            tracing::warn!(source = %ctx.source, container = %t.name(), error = %e, "the container's log stream broke; reopening it from the position");
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Some(false) if follow => follow = false,
                    // Stopped and read to its end, or gone, or the engine is unreachable: read
                    // what is left, done.
                    other => {
                        for line in joiner.flush() {
                            push_line(&t, &ctx, &mut pending, line);
                        }
                        complete = read;
                        if send(&t, &ctx, &mut pending, complete).await.is_err() {
                            return finish(&t, read, FollowEnd::Cancelled);
                        }
                        let end = if other.is_none() { FollowEnd::Gone } else { FollowEnd::Stopped };
                        return finish(&t, read, end);
                    }
                }
            }
        }
        since = read.map(|p| p.time).or(first_since);
    }
}

/// How long a stream that delivered within [`RECENTLY_ACTIVE`] may stay quiet before it is
/// checked for a stall.
const ACTIVE_STALL_CHECK: Duration = Duration::from_secs(5);
const RECENTLY_ACTIVE: Duration = Duration::from_secs(60);

/// The newest message of a stream.
#[derive(Debug, Clone, Copy)]
struct Newest {
    time: i64,
    /// It was a part of a split line: the next parts carry the same timestamp.
    open: bool,
}

impl Default for Newest {
    fn default() -> Self {
        Newest { time: i64::MIN, open: false }
    }
}

impl Newest {
    fn replays(&self, message: &Message) -> bool {
        message.time < self.time || (message.time == self.time && !self.open)
    }
}

fn newest_of(newest: &mut [Newest; 2], origin: Origin) -> Option<&mut Newest> {
    match origin {
        Origin::Stdout => Some(&mut newest[0]),
        Origin::Stderr => Some(&mut newest[1]),
        Origin::Daemon => None,
    }
}

fn finish(t: &Tracked, read: Option<Position>, end: FollowEnd) -> FollowEnd {
    *t.read.lock() = read;
    end
}

fn broken_stream(t: &Tracked, ctx: &FollowContext, read: Option<Position>, error: String) -> FollowEnd {
    tracing::error!(source = %ctx.source, container = %t.name(), error, "unreadable log stream; the container is left until its next start");
    finish(t, read, FollowEnd::Stopped)
}

fn push_line(t: &Tracked, ctx: &FollowContext, pending: &mut Pending, line: Line) {
    let labels = t.labels.load();
    let set = match line.origin {
        Origin::Stdout => &labels.stdout,
        Origin::Stderr => &labels.stderr,
        Origin::Daemon => {
            ctx.daemon_errors.inc();
            tracing::warn!(source = %ctx.source, container = %t.name(), message = %String::from_utf8_lossy(&line.content), "the Docker engine reported an error in the log stream (not shipped as container output)");
            return;
        }
    };
    let mut entry = LogEntry::new(line.time, line.content, set.clone());
    entry.metadata.set(Arc::clone(&t.metadata_name), labels.container_id.clone());
    pending.bytes += entry.line.len();
    pending.entries.push(entry);
}

/// Sends what is pending with a token that commits `checkpoint` once the sinks settled it.
async fn send(
    t: &Arc<Tracked>,
    ctx: &FollowContext,
    pending: &mut Pending,
    checkpoint: Option<Position>,
) -> Result<(), ()> {
    if pending.entries.is_empty() {
        return Ok(());
    }
    let entries = std::mem::take(&mut pending.entries);
    pending.bytes = 0;
    let acks = match checkpoint {
        Some(position) => {
            let seq = t.checkpoints.lock().push(position);
            let tracked = Arc::clone(t);
            AckSet::one(AckToken::new(move |status| {
                let committed = tracked.checkpoints.lock().ack(seq, status);
                if let Some(p) = committed {
                    *tracked.committed.lock() = Some(p);
                }
            }))
        }
        None => AckSet::new(),
    };
    ctx.batches.send(LogBatch::new(entries, acks)).await.map_err(|_| ())
}

/// Whether a running container's stream holds back lines: asks for the last message since the
/// position; if there is one past it, the follow stream is stuck (moby issues 37646, 32038).
async fn is_stalled(t: &Tracked, ctx: &FollowContext, read: Option<Position>) -> bool {
    let running = ctx.docker.inspect_container(&t.id, None).await.ok().and_then(|c| c.state.and_then(|s| s.running));
    if running != Some(true) {
        return false;
    }
    let query = LogsQuery { since: read.map(|p| p.time), follow: false, tail: Some(1) };
    let Ok(stream) = open_logs(&ctx.endpoint, &ctx.api_version, &t.id, query).await else { return false };
    let Ok(Ok(bytes)) = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end()).await else { return false };
    let mut reader = FrameReader::new(t.info.lock().tty);
    reader.push(&bytes);
    let mut last = None;
    while let Some(Ok(m)) = reader.next_message() {
        last = Some(m.time);
    }
    match (last, read) {
        (Some(time), Some(p)) => time > p.time,
        (Some(_), None) => true,
        (None, _) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn parts_of_a_split_line_share_its_timestamp_and_are_not_replays() {
        let message =
            |time, complete| Message { origin: Origin::Stdout, time, content: Bytes::new(), complete, stamped: true };
        let mut newest = Newest::default();
        // Docker 20.10: a 100 KiB line is 7 parts with one timestamp, then the next line.
        for (time, complete) in [(10, false), (10, false), (10, true), (11, true)] {
            assert!(!newest.replays(&message(time, complete)), "{time} {complete}");
            newest = Newest { time, open: !complete };
        }
        assert!(newest.replays(&message(11, true)), "the same whole line again");
        assert!(newest.replays(&message(10, false)), "an older part");
    }

    #[test]
    fn positions_count_ties() {
        let p = Position::after(None, 5);
        assert_eq!(p, Position { time: 5, ties: 1 });
        let p = Position::after(Some(p), 5);
        assert_eq!(p, Position { time: 5, ties: 2 });
        assert_eq!(Position::after(Some(p), 6), Position { time: 6, ties: 1 });
    }

    #[test]
    fn skipping_resumes_after_the_position() {
        let mut s = Skipper { until: Some(Position { time: 10, ties: 2 }), seen: 0 };
        let kept: Vec<i64> = [9, 10, 10, 10, 11, 10].into_iter().filter(|t| !s.skip(*t)).collect();
        assert_eq!(kept, [10, 11, 10], "two messages at 10 were taken before; the third is new");
        let mut none = Skipper { until: None, seen: 0 };
        assert!(!none.skip(0));
    }
}
