//! `console`: prints entries (timestamp, labels, metadata, line) as text or JSON lines, so that
//! a newcomer sees sluice work before any Loki exists.

use crate::event::LogEntry;
use crate::formats::json_string::escape_into;
use crate::formats::time::format_rfc3339_nanos;
use crate::telemetry::metrics::SinkHandles;
use crate::topology::queue::QueueReceiver;
use serde::Deserialize;
use tokio::io::AsyncWriteExt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsoleFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleConfig {
    #[serde(default)]
    pub sources: Vec<String>,
    #[serde(default)]
    pub format: ConsoleFormat,
}

/// Appends one entry as a JSON object:
/// `{"timestamp":"…","labels":{…},"structured_metadata":{…},"line":"…"}`.
pub fn write_json(entry: &LogEntry, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"timestamp\":\"");
    out.extend_from_slice(format_rfc3339_nanos(entry.timestamp).as_bytes());
    out.extend_from_slice(b"\",\"labels\":{");
    for (i, (n, v)) in entry.labels.pairs().iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        escape_into(n.as_bytes(), out);
        out.push(b':');
        escape_into(v.as_bytes(), out);
    }
    out.extend_from_slice(b"},\"structured_metadata\":{");
    for (i, (n, v)) in entry.metadata.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        escape_into(n.as_bytes(), out);
        out.push(b':');
        escape_into(v, out);
    }
    out.extend_from_slice(b"},\"line\":");
    escape_into(&entry.line, out);
    out.push(b'}');
}

/// Appends one entry as text: `<time> <labels> [<metadata>] <line>`.
pub fn write_text(entry: &LogEntry, out: &mut Vec<u8>) {
    out.extend_from_slice(format_rfc3339_nanos(entry.timestamp).as_bytes());
    out.push(b' ');
    out.extend_from_slice(entry.labels.rendered().as_bytes());
    if !entry.metadata.is_empty() {
        out.extend_from_slice(b" [");
        for (i, (n, v)) in entry.metadata.iter().enumerate() {
            if i > 0 {
                out.push(b' ');
            }
            out.extend_from_slice(n.as_bytes());
            out.push(b'=');
            out.extend_from_slice(v);
        }
        out.push(b']');
    }
    out.push(b' ');
    out.extend_from_slice(&entry.line);
}

/// Prints every batch of the queue until it closes.
pub async fn run(config: ConsoleConfig, mut rx: QueueReceiver, handles: SinkHandles) {
    let mut stdout = tokio::io::stdout();
    let mut buf = Vec::new();
    while let Some(queued) = rx.recv().await {
        buf.clear();
        for entry in &queued.batch.entries {
            match config.format {
                ConsoleFormat::Text => write_text(entry, &mut buf),
                ConsoleFormat::Json => write_json(entry, &mut buf),
            }
            buf.push(b'\n');
        }
        if let Err(e) = stdout.write_all(&buf).await.and(stdout.flush().await) {
            tracing::error!(sink = %handles.name, error = %e, "cannot write to stdout; entries are abandoned");
            return;
        }
        handles.lines_sent.inc_by(queued.batch.entries.len() as u64);
        handles.bytes_sent.inc_by(queued.batch.entries.iter().map(|e| e.line.len() as u64).sum());
        queued.batch.acks.settle();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::LabelSet;
    use bytes::Bytes;
    use std::sync::Arc;

    #[test]
    fn renders_text_and_json() {
        let mut e = LogEntry::new(
            1_714_979_289_000_000_001,
            Bytes::from_static(b"hello \"x\""),
            LabelSet::from_pairs([("job", "a")]),
        );
        e.metadata.set(Arc::from("trace_id"), Bytes::from_static(b"abc"));
        let mut text = Vec::new();
        write_text(&e, &mut text);
        assert_eq!(
            String::from_utf8(text).unwrap(),
            r#"2024-05-06T07:08:09.000000001Z {job="a"} [trace_id=abc] hello "x""#
        );
        let mut json = Vec::new();
        write_json(&e, &mut json);
        let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(v["labels"]["job"], "a");
        assert_eq!(v["structured_metadata"]["trace_id"], "abc");
        assert_eq!(v["line"], "hello \"x\"");
        assert_eq!(v["timestamp"], "2024-05-06T07:08:09.000000001Z");
    }
}
