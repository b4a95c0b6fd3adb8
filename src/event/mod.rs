//! The records that flow from sources through pipelines to sinks.
//!
//! A [`LogEntry`] is cheap to move and to clone: its line is a [`Bytes`] slice of the buffer the
//! source read (no copy until a stage changes it), its labels an interned [`LabelSet`], its
//! structured metadata a short inline list. Sources send [`LogBatch`]es, never single entries.
//! Traces travel as [`SpanBatch`]es and scraped metrics as [`SampleBatch`]es, through their own
//! routes but with the same queues and acknowledgements.

pub mod ack;
pub mod interner;
pub mod labels;
pub mod samples;
pub mod spans;

use bytes::Bytes;
use smallvec::SmallVec;
use std::sync::Arc;

pub use ack::{AckSet, AckStatus, AckToken};
pub use interner::{LabelCache, LabelInterner, LabelLimits, Resolved};
pub use labels::{LabelPair, LabelSet};
pub use samples::{Sample, SampleBatch};
pub use spans::SpanBatch;

/// Structured metadata of an entry: name → value, names unique, in the order they were set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Metadata(SmallVec<[(Arc<str>, Bytes); 2]>);

impl Metadata {
    pub fn new() -> Self {
        Metadata(SmallVec::new())
    }

    /// Sets `name` to `value`, replacing an earlier value of the same name.
    pub fn set(&mut self, name: Arc<str>, value: Bytes) {
        if let Some(slot) = self.0.iter_mut().find(|(n, _)| *n == name) {
            slot.1 = value;
        } else {
            self.0.push((name, value));
        }
    }

    pub fn get(&self, name: &str) -> Option<&Bytes> {
        self.0.iter().find(|(n, _)| &**n == name).map(|(_, v)| v)
    }

    pub fn remove(&mut self, name: &str) {
        self.0.retain(|(n, _)| &**n != name);
    }

    pub fn iter(&self) -> impl Iterator<Item = &(Arc<str>, Bytes)> {
        self.0.iter()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Bytes this metadata adds to an entry (names and values).
    pub fn byte_len(&self) -> usize {
        self.0.iter().map(|(n, v)| n.len() + v.len()).sum()
    }
}

/// One log line on its way to the sinks.
#[derive(Debug, Clone)]
pub struct LogEntry {
    /// Nanoseconds since the Unix epoch.
    pub timestamp: i64,
    pub line: Bytes,
    pub labels: LabelSet,
    pub metadata: Metadata,
}

impl LogEntry {
    pub fn new(timestamp: i64, line: Bytes, labels: LabelSet) -> Self {
        LogEntry { timestamp, line, labels, metadata: Metadata::new() }
    }

    /// Approximate memory this entry holds, for queue accounting.
    pub fn byte_size(&self) -> usize {
        self.line.len() + self.metadata.byte_len() + std::mem::size_of::<LogEntry>()
    }
}

/// Entries sent together, with the acknowledgement tokens of the batches they came from.
#[derive(Debug, Default)]
pub struct LogBatch {
    pub entries: Vec<LogEntry>,
    pub acks: AckSet,
}

impl LogBatch {
    pub fn new(entries: Vec<LogEntry>, acks: AckSet) -> Self {
        LogBatch { entries, acks }
    }

    pub fn byte_size(&self) -> usize {
        self.entries.iter().map(LogEntry::byte_size).sum()
    }
}

/// The current time in nanoseconds since the Unix epoch.
pub fn now_nanos() -> i64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    i64::try_from(now.as_nanos()).unwrap_or(i64::MAX)
}
