//! A tenant's batch being filled: entries grouped into streams by interned label set.
//!
//! Streams are found by the label set's precomputed hash (and pointer equality in the common
//! case), never by formatting label strings. A batch also carries the acknowledgement tokens
//! and queue permits of every queued batch whose entries it holds; a queued batch split over two
//! pushes is carried by both.

use crate::event::{AckSet, LabelSet, LogEntry};
use crate::topology::queue::QueuePermit;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

pub struct StreamBuf {
    pub labels: LabelSet,
    pub entries: Vec<LogEntry>,
    sorted: bool,
}

/// A batch of one tenant.
pub struct PendingBatch {
    streams: Vec<StreamBuf>,
    index: HashMap<u64, Vec<usize>, foldhash::fast::FixedState>,
    pub bytes: usize,
    pub lines: usize,
    pub created: Instant,
    pub acks: AckSet,
    pub permits: Vec<Arc<QueuePermit>>,
}

impl Default for PendingBatch {
    fn default() -> Self {
        Self::new()
    }
}

impl PendingBatch {
    pub fn new() -> Self {
        PendingBatch {
            streams: Vec::new(),
            index: HashMap::default(),
            bytes: 0,
            lines: 0,
            created: Instant::now(),
            acks: AckSet::new(),
            permits: Vec::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.lines == 0
    }

    /// The size Loki's batch limit counts for an entry: its line and its metadata.
    pub fn entry_size(e: &LogEntry) -> usize {
        e.line.len() + e.metadata.byte_len()
    }

    pub fn add(&mut self, entry: LogEntry) {
        self.bytes += Self::entry_size(&entry);
        self.lines += 1;
        let hash = entry.labels.hash_value();
        let slots = self.index.entry(hash).or_default();
        let found = slots.iter().copied().find(|&i| self.streams[i].labels == entry.labels);
        let i = match found {
            Some(i) => i,
            None => {
                self.streams.push(StreamBuf { labels: entry.labels.clone(), entries: Vec::new(), sorted: true });
                slots.push(self.streams.len() - 1);
                self.streams.len() - 1
            }
        };
        let stream = &mut self.streams[i];
        if stream.entries.last().is_some_and(|last| last.timestamp > entry.timestamp) {
            stream.sorted = false;
        }
        stream.entries.push(entry);
    }

    /// Carries the tokens and the permit of a queued batch. A queued batch's entries are added
    /// together, so its permit, if already carried, is the last one.
    pub fn carry(&mut self, acks: &AckSet, permit: &Arc<QueuePermit>) {
        self.acks.extend_cloned(acks);
        if !self.permits.last().is_some_and(|p| Arc::ptr_eq(p, permit)) {
            self.permits.push(Arc::clone(permit));
        }
    }

    pub fn stream_count(&self) -> usize {
        self.streams.len()
    }

    /// The streams, each in timestamp order (stable: equal timestamps keep their order).
    pub fn into_streams(self) -> (Vec<StreamBuf>, AckSet, Vec<Arc<QueuePermit>>) {
        let mut streams = self.streams;
        for s in &mut streams {
            if !s.sorted {
                s.entries.sort_by_key(|e| e.timestamp);
            }
        }
        (streams, self.acks, self.permits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn groups_by_label_set_and_sorts_each_stream() {
        let a = LabelSet::from_pairs([("job", "a")]);
        let b = LabelSet::from_pairs([("job", "b")]);
        let mut batch = PendingBatch::new();
        for (ts, labels) in [(3, &a), (1, &b), (1, &a), (2, &a)] {
            batch.add(LogEntry::new(ts, Bytes::from_static(b"xy"), labels.clone()));
        }
        assert_eq!((batch.lines, batch.bytes, batch.stream_count()), (4, 8, 2));
        let (streams, ..) = batch.into_streams();
        let a_times: Vec<i64> = streams[0].entries.iter().map(|e| e.timestamp).collect();
        assert_eq!(a_times, [1, 2, 3]);
        assert_eq!(streams[1].labels, b);
    }
}
