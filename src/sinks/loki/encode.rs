//! Loki push requests, encoded by hand: protobuf (`logproto.PushRequest`) then snappy block
//! compression.
//!
//! An entry is encoded when it joins a batch ([`put_entry`], into its stream's buffer), while its
//! line is still in the cache from the pipeline, and the entry is let go there and then; a push
//! then only frames each stream's buffer with its labels ([`PushEncoder`], into buffers reused
//! from one request to the next). Writing the protobuf directly avoids building prost messages,
//! which would copy every line into a `String`; the result is checked against the prost
//! definitions in `proto::logproto` by the tests below.

use crate::event::LogEntry;
use crate::proto::wire::{delimited_len, put_bytes, put_varint, read_varint, varint_len};

fn timestamp_len(seconds: i64, nanos: i32) -> usize {
    let mut n = 0;
    if seconds != 0 {
        n += 1 + varint_len(seconds as u64);
    }
    if nanos != 0 {
        n += 1 + varint_len(nanos as i64 as u64);
    }
    n
}

fn split_timestamp(ts: i64) -> (i64, i32) {
    (ts.div_euclid(1_000_000_000), ts.rem_euclid(1_000_000_000) as i32)
}

fn entry_len(e: &LogEntry, metadata: bool) -> usize {
    let (s, n) = split_timestamp(e.timestamp);
    let mut len = delimited_len(timestamp_len(s, n)) + delimited_len(e.line.len());
    if metadata {
        for (name, value) in e.metadata.iter() {
            len += delimited_len(
                delimited_len(name.len()) + if value.is_empty() { 0 } else { delimited_len(value.len()) },
            );
        }
    }
    len
}

/// Appends one entry as the protobuf field `StreamAdapter.entries` (tag, length, `EntryAdapter`).
/// A stream's entries appended one after the other are the body of [`StreamRef::entries`].
pub fn put_entry(out: &mut Vec<u8>, e: &LogEntry, metadata: bool) {
    let len = entry_len(e, metadata);
    out.reserve(delimited_len(len));
    out.push(0x12);
    put_varint(out, len as u64);
    let (s, n) = split_timestamp(e.timestamp);
    // The timestamp comes first, always (even when zero): `encoded_entries` relies on it.
    out.push(0x0a);
    put_varint(out, timestamp_len(s, n) as u64);
    if s != 0 {
        out.push(0x08);
        put_varint(out, s as u64);
    }
    if n != 0 {
        out.push(0x10);
        put_varint(out, n as i64 as u64);
    }
    put_bytes(out, 0x12, &e.line);
    if metadata {
        for (name, value) in e.metadata.iter() {
            out.push(0x1a);
            let pair = delimited_len(name.len()) + if value.is_empty() { 0 } else { delimited_len(value.len()) };
            put_varint(out, pair as u64);
            put_bytes(out, 0x0a, name.as_bytes());
            if !value.is_empty() {
                put_bytes(out, 0x12, value);
            }
        }
    }
}

/// An entry written by [`put_entry`]: its timestamp and where its field lies in the buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedEntry {
    pub timestamp: i64,
    pub range: std::ops::Range<usize>,
}

/// Reads back the entries [`put_entry`] wrote, in order. `None` if `buf` holds anything else
/// (it never does: only `put_entry` writes these buffers).
pub fn encoded_entries(buf: &[u8]) -> Option<Vec<EncodedEntry>> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < buf.len() {
        let start = at;
        if buf[at] != 0x12 {
            return None;
        }
        at += 1;
        let len = usize::try_from(get_varint(buf, &mut at)?).ok()?;
        let end = at.checked_add(len).filter(|&end| end <= buf.len())?;
        // The timestamp field, first in every entry.
        if buf.get(at) != Some(&0x0a) {
            return None;
        }
        at += 1;
        let ts_end = usize::try_from(get_varint(buf, &mut at)?).ok()?.checked_add(at)?;
        let (mut seconds, mut nanos) = (0i64, 0i64);
        while at < ts_end {
            let tag = buf[at];
            at += 1;
            let value = get_varint(buf, &mut at)?;
            match tag {
                0x08 => seconds = value as i64,
                0x10 => nanos = value as i64,
                _ => return None,
            }
        }
        let timestamp = i64::try_from(i128::from(seconds) * 1_000_000_000 + i128::from(nanos)).ok()?;
        out.push(EncodedEntry { timestamp, range: start..end });
        at = end;
    }
    Some(out)
}

/// The varint at `*at`, moving `*at` past it.
fn get_varint(buf: &[u8], at: &mut usize) -> Option<u64> {
    let (value, len) = read_varint(buf.get(*at..)?)?;
    *at += len;
    Some(value)
}

/// One stream of a push: its label string and its entries as [`put_entry`] wrote them.
pub struct StreamRef<'a> {
    pub labels: &'a str,
    pub entries: &'a [u8],
}

/// Encodes and compresses push requests, reusing its buffers.
///
/// The protobuf of a push is never laid out whole: each stream's header (its field tag and
/// length, and its labels) and then its entries are compressed in turn, from where they lie,
/// into one snappy block. The format allows it: a block is its uncompressed length followed by
/// elements (literals and back-references), and the encoder refers to nothing before the start
/// of its input, so the elements of consecutive calls, each call's own length header removed,
/// are the block of the concatenation. This saves copying every batch into one buffer first
/// (a cold 1 MiB read and write per push).
pub struct PushEncoder {
    /// The headers of the push's streams, one after the other, and where each ends.
    headers: Vec<u8>,
    header_ends: Vec<usize>,
    compressed: Vec<u8>,
    snappy: snap::raw::Encoder,
}

impl Default for PushEncoder {
    fn default() -> Self {
        PushEncoder {
            headers: Vec::new(),
            header_ends: Vec::new(),
            compressed: Vec::new(),
            snappy: snap::raw::Encoder::new(),
        }
    }
}

impl PushEncoder {
    /// The snappy-compressed protobuf of a push (block format, as Loki expects).
    pub fn encode(&mut self, streams: &[StreamRef<'_>]) -> &[u8] {
        self.headers.clear();
        self.header_ends.clear();
        for stream in streams {
            self.headers.push(0x0a);
            put_varint(&mut self.headers, (delimited_len(stream.labels.len()) + stream.entries.len()) as u64);
            put_bytes(&mut self.headers, 0x0a, stream.labels.as_bytes());
            self.header_ends.push(self.headers.len());
        }
        let pieces = || {
            let starts = std::iter::once(0).chain(self.header_ends.iter().copied());
            starts
                .zip(&self.header_ends)
                .zip(streams)
                .flat_map(|((start, &end), s)| [&self.headers[start..end], s.entries])
        };
        let total: usize = pieces().map(<[u8]>::len).sum();
        let room = varint_len(total as u64) + pieces().map(|p| snap::raw::max_compress_len(p.len())).sum::<usize>();
        if self.compressed.len() < room {
            self.compressed.resize(room, 0);
        }
        let mut at = varint_len(total as u64);
        put_varint(&mut &mut self.compressed[..at], total as u64);
        for piece in pieces() {
            match compress_after(&mut self.snappy, piece, &mut self.compressed, at) {
                Some(end) => at = end,
                // Only possible for inputs over snappy's 4 GiB limit, far above any batch size.
                None => return &[],
            }
        }
        &self.compressed[..at]
    }
}

/// Compresses `piece` as a continuation of the snappy block whose elements end at `out[at]`,
/// returning where its own elements end. The encoder writes the piece's length header first;
/// it lands on the last bytes already written, which are put back after.
fn compress_after(snappy: &mut snap::raw::Encoder, piece: &[u8], out: &mut [u8], at: usize) -> Option<usize> {
    if piece.is_empty() {
        return Some(at);
    }
    // The block's own header is at least as long as any piece's (a piece is part of the
    // block), so `at` leaves room for it.
    let start = at.checked_sub(varint_len(piece.len() as u64))?;
    let mut saved = [0u8; 10];
    let saved = &mut saved[..at - start];
    saved.copy_from_slice(&out[start..at]);
    let written = snappy.compress(piece, out.get_mut(start..)?).ok()?;
    out[start..at].copy_from_slice(saved);
    Some(start + written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::LabelSet;
    use crate::proto::logproto;
    use bytes::Bytes;
    use proptest::prelude::*;
    use prost::Message;
    use std::sync::Arc;

    fn entry(ts: i64, line: &[u8], meta: &[(&str, &str)]) -> LogEntry {
        let mut e = LogEntry::new(ts, Bytes::copy_from_slice(line), LabelSet::empty());
        for (n, v) in meta {
            e.metadata.set(Arc::from(*n), Bytes::copy_from_slice(v.as_bytes()));
        }
        e
    }

    /// A stream's entries as the batch holds them.
    fn encoded(entries: &[LogEntry], metadata: bool) -> Vec<u8> {
        let mut out = Vec::new();
        for e in entries {
            put_entry(&mut out, e, metadata);
        }
        out
    }

    fn decode(body: &[u8]) -> logproto::PushRequest {
        let raw = snap::raw::Decoder::new().decompress_vec(body).unwrap();
        logproto::PushRequest::decode(&raw[..]).unwrap()
    }

    #[test]
    fn prost_reads_what_the_encoder_writes() {
        let a = [
            entry(1_714_979_289_123_456_789, b"first", &[("trace_id", "abc"), ("empty", "")]),
            entry(1_714_979_290_000_000_000, b"", &[]),
        ];
        let b = [entry(-1, "ünïcode \u{0} line".as_bytes(), &[])];
        let (a_meta, b_meta) = (encoded(&a, true), encoded(&b, true));
        let streams = [
            StreamRef { labels: r#"{job="a"}"#, entries: &a_meta },
            StreamRef { labels: r#"{job="b"}"#, entries: &b_meta },
        ];
        let mut enc = PushEncoder::default();
        let push = decode(enc.encode(&streams));
        assert_eq!(push.streams.len(), 2);
        assert_eq!(push.streams[0].labels, r#"{job="a"}"#);
        let e0 = &push.streams[0].entries[0];
        assert_eq!(e0.timestamp, Some(logproto::Timestamp { seconds: 1_714_979_289, nanos: 123_456_789 }));
        assert_eq!(e0.line, b"first");
        assert_eq!(e0.structured_metadata.len(), 2);
        assert_eq!(
            (e0.structured_metadata[0].name.as_str(), &e0.structured_metadata[0].value[..]),
            ("trace_id", &b"abc"[..])
        );
        assert_eq!(e0.structured_metadata[1].value, b"");
        assert_eq!(
            push.streams[0].entries[1].timestamp,
            Some(logproto::Timestamp { seconds: 1_714_979_290, nanos: 0 })
        );
        assert_eq!(push.streams[1].entries[0].timestamp, Some(logproto::Timestamp { seconds: -1, nanos: 999_999_999 }));
        // Without metadata (Loki 2.x), none is sent.
        let a_plain = encoded(&a, false);
        let push = decode(enc.encode(&[StreamRef { labels: r#"{job="a"}"#, entries: &a_plain }]));
        assert!(push.streams[0].entries[0].structured_metadata.is_empty());
    }

    #[test]
    fn matches_prost_byte_for_byte() {
        let a = [entry(5_000_000_007, b"x", &[("k", "v")])];
        let mut enc = PushEncoder::default();
        let body = enc.encode(&[StreamRef { labels: "{a=\"1\"}", entries: &encoded(&a, true) }]).to_vec();
        let ours = snap::raw::Decoder::new().decompress_vec(&body).unwrap();
        let theirs = logproto::PushRequest {
            streams: vec![logproto::StreamAdapter {
                labels: "{a=\"1\"}".into(),
                entries: vec![logproto::EntryAdapter {
                    timestamp: Some(logproto::Timestamp { seconds: 5, nanos: 7 }),
                    line: b"x".to_vec(),
                    structured_metadata: vec![logproto::LabelPairAdapter { name: "k".into(), value: b"v".to_vec() }],
                    parsed: vec![],
                }],
                hash: 0,
            }],
        }
        .encode_to_vec();
        assert_eq!(ours, theirs);
    }

    /// Streams compressed piece by piece make the snappy block of the whole protobuf: streams
    /// small and large (past snappy's 64 KiB blocks, and a body whose length takes three varint
    /// bytes), compressible and not, read back as prost writes the same push.
    #[test]
    fn pieces_make_one_snappy_block() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut noise = |n: usize| -> Vec<u8> {
            (0..n)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    b'a' + (seed % 26) as u8
                })
                .collect()
        };
        let shapes: [(usize, usize, bool); 5] =
            [(1, 0, true), (700, 100, true), (90, 1_000, false), (3, 40_000, true), (5, 9, false)];
        let mut streams = Vec::new();
        for (k, &(count, len, repetitive)) in shapes.iter().enumerate() {
            let labels = format!("{{job=\"{}\"}}", "j".repeat(k * 40));
            let entries: Vec<LogEntry> = (0..count)
                .map(|i| {
                    let line = if repetitive {
                        format!("{i} {}", "level=info msg=ok ".repeat(len / 18)).into_bytes()
                    } else {
                        noise(len)
                    };
                    entry(1_700_000_000_000_000_000 + i as i64, &line, &[])
                })
                .collect();
            streams.push((labels, entries));
        }
        let bodies: Vec<Vec<u8>> = streams.iter().map(|(_, e)| encoded(e, false)).collect();
        let refs: Vec<StreamRef<'_>> =
            streams.iter().zip(&bodies).map(|((l, _), b)| StreamRef { labels: l, entries: b }).collect();
        let theirs = logproto::PushRequest {
            streams: streams
                .iter()
                .map(|(labels, entries)| logproto::StreamAdapter {
                    labels: labels.clone(),
                    entries: entries
                        .iter()
                        .map(|e| logproto::EntryAdapter {
                            timestamp: Some(logproto::Timestamp {
                                seconds: e.timestamp / 1_000_000_000,
                                nanos: (e.timestamp % 1_000_000_000) as i32,
                            }),
                            line: e.line.to_vec(),
                            structured_metadata: vec![],
                            parsed: vec![],
                        })
                        .collect(),
                    hash: 0,
                })
                .collect(),
        }
        .encode_to_vec();
        assert!(theirs.len() > 1 << 17, "the push spans several snappy blocks");
        let mut enc = PushEncoder::default();
        for _ in 0..2 {
            let body = enc.encode(&refs).to_vec();
            assert!(body.len() < theirs.len() / 2, "compressed: {} of {}", body.len(), theirs.len());
            assert_eq!(snap::raw::Decoder::new().decompress_vec(&body).unwrap(), theirs);
        }
        assert_eq!(snap::raw::Decoder::new().decompress_vec(enc.encode(&[])).unwrap(), b"");
    }

    proptest! {
        #[test]
        fn round_trips(lines in proptest::collection::vec((any::<i64>(), proptest::collection::vec(any::<u8>(), 0..300)), 1..20)) {
            let entries: Vec<_> = lines.iter().map(|(ts, l)| entry(*ts, l, &[("m", "x")])).collect();
            let mut enc = PushEncoder::default();
            let body = encoded(&entries, true);
            let push = decode(enc.encode(&[StreamRef { labels: "{a=\"b\"}", entries: &body }]));
            prop_assert_eq!(push.streams[0].entries.len(), entries.len());
            for (got, want) in push.streams[0].entries.iter().zip(&entries) {
                let ts = got.timestamp.unwrap();
                prop_assert_eq!(ts.seconds as i128 * 1_000_000_000 + ts.nanos as i128, want.timestamp as i128);
                prop_assert_eq!(&got.line[..], &want.line[..]);
            }
            // And the entries read back where they lie, with their timestamps.
            let read: Vec<i64> = encoded_entries(&body).expect("readable").iter().map(|e| e.timestamp).collect();
            let want: Vec<i64> = entries.iter().map(|e| e.timestamp).collect();
            prop_assert_eq!(read, want);
        }
    }
}
