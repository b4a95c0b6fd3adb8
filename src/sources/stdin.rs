//! `stdin`: one entry per line of standard input, timestamped when read. The source ends at the
//! end of input (the agent keeps running until it is told to stop).

use super::lines::LineSplitter;
use crate::event::{AckSet, LogBatch, LogEntry, now_nanos};
use crate::topology::Emitter;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StdinConfig {
    /// Labels put on every entry (default: `job: <source name>`).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// Largest batch a source sends, in entries and in bytes (DESIGN.md).
pub const MAX_BATCH_LINES: usize = 1000;
pub const MAX_BATCH_BYTES: usize = 1 << 20;
/// Lines longer than this are cut into parts.
pub const MAX_LINE: usize = 4 << 20;

#[derive(Debug, thiserror::Error)]
pub enum StdinError {
    #[error("reading stdin: {0}")]
    Read(#[from] std::io::Error),
    #[error("the pipelines and sinks are gone")]
    Closed,
}

pub async fn run(_config: StdinConfig, mut emitter: Emitter, cancel: CancellationToken) -> Result<(), StdinError> {
    let mut stdin = tokio::io::stdin();
    let mut splitter = LineSplitter::new(MAX_LINE);
    let labels = emitter.base_labels().clone();
    let cut = emitter.handles().dropped("line_split");
    let mut batch: Vec<LogEntry> = Vec::with_capacity(MAX_BATCH_LINES);
    let mut batch_bytes = 0usize;
    let mut eof = false;
    while !eof {
        let read = tokio::select! {
            _ = cancel.cancelled() => break,
            read = stdin.read_buf(splitter.reserve()) => read?,
            // Input is slow: send what is there.
            _ = tokio::time::sleep(Duration::from_millis(100)), if !batch.is_empty() => usize::MAX,
        };
        if read == 0 {
            eof = true;
        }
        let now = now_nanos();
        while let Some(line) = splitter.next_line() {
            if line.cut {
                cut.inc();
            }
            batch_bytes += line.bytes.len();
            batch.push(LogEntry::new(now, line.bytes, labels.clone()));
            if batch.len() >= MAX_BATCH_LINES || batch_bytes >= MAX_BATCH_BYTES {
                send(&mut emitter, &mut batch, &mut batch_bytes).await?;
            }
        }
        if eof && let Some(rest) = splitter.take_rest() {
            batch.push(LogEntry::new(now, rest, labels.clone()));
        }
        if read == usize::MAX || eof {
            send(&mut emitter, &mut batch, &mut batch_bytes).await?;
        }
    }
    send(&mut emitter, &mut batch, &mut batch_bytes).await?;
    tracing::info!(source = emitter.source(), "end of standard input");
    Ok(())
}

async fn send(emitter: &mut Emitter, batch: &mut Vec<LogEntry>, bytes: &mut usize) -> Result<(), StdinError> {
    if batch.is_empty() {
        return Ok(());
    }
    *bytes = 0;
    let entries = std::mem::replace(batch, Vec::with_capacity(MAX_BATCH_LINES));
    emitter.send(LogBatch::new(entries, AckSet::new())).await.map_err(|_| StdinError::Closed)
}
