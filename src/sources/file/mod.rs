//! `file`: one append-only file, read from its start or its end and followed as it grows.
//! A file that shrinks (truncated in place) is read again from its start. Rotation, globs and
//! positions are the `files` source's job.

use super::lines::LineSplitter;
use super::stdin::{MAX_BATCH_BYTES, MAX_BATCH_LINES, MAX_LINE};
use crate::event::{AckSet, LabelSet, LogBatch, LogEntry, now_nanos};
use crate::topology::Emitter;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::io::SeekFrom;
use std::path::PathBuf;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_util::sync::CancellationToken;

/// Where a file source starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StartAt {
    #[default]
    Beginning,
    End,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub path: PathBuf,
    #[serde(default)]
    pub start_at: StartAt,
    /// Labels put on every entry (default: `job: <source name>`); `filename` is always added.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("the pipelines and sinks are gone")]
    Closed,
}

const POLL: Duration = Duration::from_millis(250);

pub async fn run(config: FileConfig, mut emitter: Emitter, cancel: CancellationToken) -> Result<(), FileError> {
    let io = |source| FileError::Io { path: config.path.clone(), source };
    let filename = config.path.to_string_lossy().into_owned();
    let mut pairs: Vec<(String, String)> =
        emitter.base_labels().pairs().iter().map(|(n, v)| (n.to_string(), v.to_string())).collect();
    pairs.push(("filename".into(), filename));
    let labels = LabelSet::from_pairs(pairs);
    let cut = emitter.handles().dropped("line_split");
    let mut file = loop {
        match tokio::fs::File::open(&config.path).await {
            Ok(f) => break f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                tokio::select! {
                    _ = cancel.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(POLL) => continue,
                }
            }
            Err(e) => return Err(io(e)),
        }
    };
    let mut offset = match config.start_at {
        StartAt::Beginning => 0,
        StartAt::End => file.seek(SeekFrom::End(0)).await.map_err(io)?,
    };
    let mut splitter = LineSplitter::new(MAX_LINE);
    let mut batch = Vec::with_capacity(MAX_BATCH_LINES);
    let mut batch_bytes = 0usize;
    while !cancel.is_cancelled() {
        let n = file.read_buf(splitter.reserve()).await.map_err(io)?;
        offset += n as u64;
        let now = now_nanos();
        while let Some(line) = splitter.next_line() {
            if line.cut {
                cut.inc();
            }
            batch_bytes += line.bytes.len();
            batch.push(LogEntry::new(now, line.bytes, labels.clone()));
            if batch.len() >= MAX_BATCH_LINES || batch_bytes >= MAX_BATCH_BYTES {
                batch_bytes = 0;
                let entries = std::mem::replace(&mut batch, Vec::with_capacity(MAX_BATCH_LINES));
                emitter.send(LogBatch::new(entries, AckSet::new())).await.map_err(|_| FileError::Closed)?;
            }
        }
        if n > 0 {
            continue;
        }
        // At the end: send what is there, then wait for the file to grow.
        if !batch.is_empty() {
            batch_bytes = 0;
            let entries = std::mem::replace(&mut batch, Vec::with_capacity(MAX_BATCH_LINES));
            emitter.send(LogBatch::new(entries, AckSet::new())).await.map_err(|_| FileError::Closed)?;
        }
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tokio::time::sleep(POLL) => {}
        }
        let len = tokio::fs::metadata(&config.path).await.map(|m| m.len()).unwrap_or(offset);
        if len < offset {
            tracing::info!(source = emitter.source(), path = %config.path.display(), "file was truncated; reading it from the start");
            file.seek(SeekFrom::Start(0)).await.map_err(io)?;
            offset = 0;
            splitter = LineSplitter::new(MAX_LINE);
        }
    }
    Ok(())
}
