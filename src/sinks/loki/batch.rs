//! A tenant's batch being filled: entries grouped into streams by interned label set, and encoded
//! for the push as they join (see [`super::encode`]).
//!
//! Streams are found by the label set's precomputed hash (and pointer equality in the common
//! case), never by formatting label strings. A batch also carries the acknowledgement tokens
//! and queue permits of every queued batch whose entries it holds; a queued batch split over two
//! pushes is carried by both.

use super::encode::{encoded_entries, put_entry};
use crate::event::{AckSet, LabelSet, LogEntry};
use crate::topology::queue::QueuePermit;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

pub struct StreamBuf {
    pub labels: LabelSet,
    /// The stream's entries as `encode::put_entry` writes them.
    pub entries: Vec<u8>,
    newest: i64,
    sorted: bool,
}

/// A batch of one tenant.
pub struct PendingBatch {
    streams: Vec<StreamBuf>,
    index: HashMap<u64, Vec<usize>, foldhash::fast::FixedState>,
    /// Whether entries carry their structured metadata (Loki 3) or not (Loki 2).
    metadata: bool,
    /// The encoded size of each stream in the previous batch, by label set hash: a stream
    /// starts with that much room, so that a steady stream's buffer is not copied as it grows.
    sizes: HashMap<u64, usize, foldhash::fast::FixedState>,
    pub bytes: usize,
    pub lines: usize,
    pub created: Instant,
    pub acks: AckSet,
    pub permits: Vec<Arc<QueuePermit>>,
}

impl PendingBatch {
    pub fn new(metadata: bool) -> Self {
        PendingBatch {
            streams: Vec::new(),
            index: HashMap::default(),
            metadata,
            sizes: HashMap::default(),
            bytes: 0,
            lines: 0,
            created: Instant::now(),
            acks: AckSet::new(),
            permits: Vec::new(),
        }
    }

    /// This batch, leaving an empty one with the same settings in its place.
    pub fn take(&mut self) -> PendingBatch {
        let mut next = PendingBatch::new(self.metadata);
        next.sizes = std::mem::take(&mut self.sizes);
        next.sizes.clear();
        next.sizes.extend(self.streams.iter().map(|s| (s.labels.hash_value(), s.entries.len())));
        std::mem::replace(self, next)
    }

    pub fn is_empty(&self) -> bool {
        self.lines == 0
    }

    /// The size Loki's batch limit counts for an entry: its line and its metadata.
    pub fn entry_size(e: &LogEntry) -> usize {
        e.line.len() + e.metadata.byte_len()
    }

    /// Encodes the entry into its stream; the entry itself is dropped here.
    pub fn add(&mut self, entry: LogEntry) {
        self.bytes += Self::entry_size(&entry);
        self.lines += 1;
        let hash = entry.labels.hash_value();
        let slots = self.index.entry(hash).or_default();
        let found = slots.iter().copied().find(|&i| self.streams[i].labels == entry.labels);
        let i = match found {
            Some(i) => i,
            None => {
                let room = self.sizes.get(&hash).copied().unwrap_or(0);
                self.streams.push(StreamBuf {
                    labels: entry.labels.clone(),
                    entries: Vec::with_capacity(room),
                    newest: i64::MIN,
                    sorted: true,
                });
                slots.push(self.streams.len() - 1);
                self.streams.len() - 1
            }
        };
        let stream = &mut self.streams[i];
        if entry.timestamp < stream.newest {
            stream.sorted = false;
        }
        stream.newest = stream.newest.max(entry.timestamp);
        put_entry(&mut stream.entries, &entry, self.metadata);
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
        for s in streams.iter_mut().filter(|s| !s.sorted) {
            sort_entries(&mut s.entries);
        }
        (streams, self.acks, self.permits)
    }
}

/// Puts encoded entries in timestamp order, equal timestamps in the order they came. Loki takes
/// unordered entries too (its default since 2.4), so a buffer that cannot be read back, which
/// `put_entry` never writes, is left as it is.
fn sort_entries(buf: &mut Vec<u8>) {
    let Some(mut entries) = encoded_entries(buf) else { return };
    entries.sort_by_key(|e| e.timestamp);
    let mut sorted = Vec::with_capacity(buf.len());
    for e in &entries {
        sorted.extend_from_slice(&buf[e.range.clone()]);
    }
    *buf = sorted;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::logproto;
    use crate::sinks::loki::encode::{PushEncoder, StreamRef};
    use bytes::Bytes;
    use proptest::prelude::*;
    use prost::Message;

    /// A stream as Loki reads it: its labels and its (timestamp, line) entries.
    type Pushed = (String, Vec<(i64, Vec<u8>)>);

    fn pushed(batch: PendingBatch) -> Vec<Pushed> {
        let (streams, ..) = batch.into_streams();
        let refs: Vec<StreamRef<'_>> =
            streams.iter().map(|s| StreamRef { labels: s.labels.rendered(), entries: &s.entries }).collect();
        let body = snap::raw::Decoder::new().decompress_vec(PushEncoder::default().encode(&refs)).expect("snappy");
        let push = logproto::PushRequest::decode(&body[..]).expect("protobuf");
        push.streams
            .into_iter()
            .map(|s| {
                let entries = s
                    .entries
                    .into_iter()
                    .map(|e| {
                        let ts = e.timestamp.expect("timestamp");
                        (ts.seconds * 1_000_000_000 + i64::from(ts.nanos), e.line)
                    })
                    .collect();
                (s.labels, entries)
            })
            .collect()
    }

    #[test]
    fn groups_by_label_set_and_sorts_each_stream() {
        let a = LabelSet::from_pairs([("job", "a")]);
        let b = LabelSet::from_pairs([("job", "b")]);
        let mut batch = PendingBatch::new(true);
        for (ts, line, labels) in [(3, "a3", &a), (1, "b1", &b), (1, "a1", &a), (2, "a2", &a), (1, "a1'", &a)] {
            batch.add(LogEntry::new(ts, Bytes::from_static(line.as_bytes()), labels.clone()));
        }
        assert_eq!((batch.lines, batch.bytes, batch.stream_count()), (5, 11, 2));
        let line = |ts: i64, l: &str| (ts, l.as_bytes().to_vec());
        assert_eq!(
            pushed(batch),
            [
                (r#"{job="a"}"#.to_string(), vec![line(1, "a1"), line(1, "a1'"), line(2, "a2"), line(3, "a3")]),
                (r#"{job="b"}"#.to_string(), vec![line(1, "b1")]),
            ]
        );
    }

    proptest! {
        /// Whatever the order entries come in, each stream holds all of its own, in timestamp
        /// order, equal timestamps in the order they came (a stable sort of what was added).
        #[test]
        fn streams_hold_their_entries_in_stable_timestamp_order(
            added in proptest::collection::vec((0..3usize, -3_000_000_000i64..3_000_000_000, 0..4u8), 0..60),
        ) {
            let sets: Vec<LabelSet> = (0..3).map(|i| LabelSet::from_pairs([("s", i.to_string())])).collect();
            let mut batch = PendingBatch::new(false);
            let mut want: Vec<Pushed> = Vec::new();
            for (n, &(set, ts, len)) in added.iter().enumerate() {
                let line = format!("{n}{}", "x".repeat(usize::from(len))).into_bytes();
                batch.add(LogEntry::new(ts, Bytes::from(line.clone()), sets[set].clone()));
                let labels = sets[set].rendered().to_string();
                match want.iter_mut().find(|(l, _)| *l == labels) {
                    Some((_, entries)) => entries.push((ts, line)),
                    None => want.push((labels, vec![(ts, line)])),
                }
            }
            for (_, entries) in &mut want {
                entries.sort_by_key(|e| e.0);
            }
            prop_assert_eq!(pushed(batch), want);
        }
    }
}
