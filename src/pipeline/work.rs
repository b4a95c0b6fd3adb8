//! The per-entry working state of a pipeline run: the entry, the values stages extracted, and the
//! label changes not yet interned.
//!
//! One [`Work`] is reused for every entry a worker processes, so after warm-up a run allocates
//! nothing here: extracted values and computed strings live in `buf`, addressed by [`Span`]s.
//! Label changes are recorded as [`LabelOp`]s over the entry's interned set and resolved once, at
//! the end of all pipelines (see `PipelineSet::finish`).

use super::config_str::ConfigStr;
use crate::event::{LabelCache, LabelSet, LogEntry, Metadata};
use bytes::{Bytes, BytesMut};
use smallvec::SmallVec;
use std::sync::Arc;

/// A byte range of [`Work::buf`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub start: u32,
    pub end: u32,
}

/// A name: from config (shared) or computed for this entry (in `buf`).
#[derive(Debug, Clone)]
pub enum Name {
    Static(ConfigStr),
    Buf(Span),
}

/// A label value: from config or in `buf`.
#[derive(Debug, Clone)]
pub enum Value {
    Static(ConfigStr),
    Buf(Span),
}

#[derive(Debug, Clone)]
pub(crate) struct Extracted {
    key: Name,
    value: Span,
    /// Where the same bytes sit in the entry's line, if they were taken from it verbatim.
    origin: Option<u32>,
}

/// A change to the entry's labels, applied in order over its interned set.
#[derive(Debug, Clone)]
pub enum LabelOp {
    Set(Name, Value),
    Remove(ConfigStr),
    KeepOnly(Arc<[Arc<str>]>),
}

/// Reused buffers of the `json` stage (simd-json parses in place and wants padding).
pub(crate) struct JsonScratch {
    pub input: Vec<u8>,
    pub buffers: simd_json::Buffers,
    pub tape: Option<simd_json::Tape<'static>>,
}

impl Default for JsonScratch {
    fn default() -> Self {
        JsonScratch {
            input: Vec::new(),
            buffers: simd_json::Buffers::new(512),
            tape: Some(simd_json::Tape::null().reset()),
        }
    }
}

impl std::fmt::Debug for JsonScratch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JsonScratch")
    }
}

/// Where extraction writes: the value buffer and the extracted list, borrowed apart from the
/// rest of [`Work`] so that a parser can read its own scratch buffers meanwhile.
pub(crate) struct ExtractSink<'a> {
    buf: &'a mut Vec<u8>,
    extracted: &'a mut Vec<Extracted>,
}

impl ExtractSink<'_> {
    pub fn name(&mut self, key: &[u8]) -> Name {
        let start = self.buf.len() as u32;
        self.buf.extend_from_slice(key);
        Name::Buf(Span { start, end: self.buf.len() as u32 })
    }

    /// Records `key` with a value written by `write`.
    pub fn value_with(&mut self, key: Name, origin: Option<u32>, write: impl FnOnce(&mut Vec<u8>)) {
        let start = self.buf.len() as u32;
        write(self.buf);
        self.extracted.push(Extracted { key, value: Span { start, end: self.buf.len() as u32 }, origin });
    }
}

/// The working state of one entry.
#[derive(Debug)]
pub struct Work {
    pub entry: LogEntry,
    /// The source the entry came from.
    pub source: Arc<str>,
    buf: Vec<u8>,
    extracted: Vec<Extracted>,
    label_ops: Vec<LabelOp>,
    /// New lines are written here and split off, so that building a line costs no allocation.
    arena: BytesMut,
    pub(crate) json: JsonScratch,
    /// Last good timestamp per (timestamp stage, stream), for `action_on_failure: fudge`.
    pub(crate) fudge: std::collections::HashMap<(usize, u64), i64>,
}

const ARENA_CHUNK: usize = 64 * 1024;

impl Work {
    pub fn new(entry: LogEntry, source: Arc<str>) -> Self {
        Work {
            entry,
            source,
            buf: Vec::new(),
            extracted: Vec::new(),
            label_ops: Vec::new(),
            arena: BytesMut::new(),
            json: JsonScratch::default(),
            fudge: Default::default(),
        }
    }

    /// Builds a new line with `write` in the arena and returns it.
    pub fn new_line(&mut self, write: impl FnOnce(&mut BytesMut)) -> Bytes {
        if self.arena.capacity() - self.arena.len() < 1024 {
            self.arena.reserve(ARENA_CHUNK);
        }
        write(&mut self.arena);
        self.arena.split().freeze()
    }

    /// The JSON scratch, the extraction sink, the line and the bytes of `source` (the line when
    /// `None`), borrowed apart. `None` when the source key was never extracted.
    pub(crate) fn load_json_input(&mut self, source: Option<&str>) -> Option<usize> {
        let Work { entry, buf, extracted, json, .. } = self;
        let src: &[u8] = match source {
            None => &entry.line,
            Some(key) => {
                let e = extracted.iter().rev().find(|e| name_bytes(buf, &e.key) == key.as_bytes())?;
                &buf[e.value.start as usize..e.value.end as usize]
            }
        };
        json.input.clear();
        json.input.extend_from_slice(src);
        let len = src.len();
        json.input.resize(len + simd_json::INPUT_PADDING, 0);
        Some(len)
    }

    pub(crate) fn json_parts(&mut self) -> (&mut JsonScratch, ExtractSink<'_>, &Bytes) {
        let Work { entry, buf, extracted, json, .. } = self;
        (json, ExtractSink { buf, extracted }, &entry.line)
    }

    /// The extraction sink alone.
    pub(crate) fn sink(&mut self) -> ExtractSink<'_> {
        ExtractSink { buf: &mut self.buf, extracted: &mut self.extracted }
    }

    /// Starts on a new entry, keeping the buffers (and the source's handle when it is the same
    /// source: no reference count to touch per line).
    pub fn reset(&mut self, entry: LogEntry, source: &Arc<str>) {
        self.entry = entry;
        if !Arc::ptr_eq(&self.source, source) {
            self.source = Arc::clone(source);
        }
        self.buf.clear();
        self.extracted.clear();
        self.label_ops.clear();
    }

    /// Forgets extracted values (between pipelines: each pipeline starts with an empty map, as
    /// each Promtail scrape config does). Label changes stay.
    pub fn clear_extracted(&mut self) {
        self.extracted.clear();
    }

    // ---- the value buffer -------------------------------------------------------------------

    /// Appends bytes to the value buffer and returns their span.
    pub fn push_bytes(&mut self, bytes: &[u8]) -> Span {
        let start = self.buf.len() as u32;
        self.buf.extend_from_slice(bytes);
        Span { start, end: self.buf.len() as u32 }
    }

    /// Runs `write` on the value buffer and returns the span of what it appended.
    pub fn push_with(&mut self, write: impl FnOnce(&mut Vec<u8>)) -> Span {
        let start = self.buf.len() as u32;
        write(&mut self.buf);
        Span { start, end: self.buf.len() as u32 }
    }

    pub fn bytes(&self, span: Span) -> &[u8] {
        &self.buf[span.start as usize..span.end as usize]
    }

    /// Every extracted (key, value, offset in the line), oldest first.
    #[cfg(test)]
    pub(crate) fn extracted_list(&self) -> Vec<(Vec<u8>, Vec<u8>, Option<u32>)> {
        self.extracted
            .iter()
            .map(|e| (self.name_str(&e.key).to_vec(), self.bytes(e.value).to_vec(), e.origin))
            .collect()
    }

    fn name_str<'a>(&'a self, name: &'a Name) -> &'a [u8] {
        name_bytes(&self.buf, name)
    }

    // ---- extracted values -------------------------------------------------------------------

    /// Records an extracted value. `origin` is the offset of the same bytes in the entry's line,
    /// when they were taken from it verbatim (lets metadata and `output` share the line's buffer).
    pub fn extract(&mut self, key: Name, value: Span, origin: Option<u32>) {
        self.extracted.push(Extracted { key, value, origin });
    }

    /// Records an extracted value from bytes.
    pub fn extract_bytes(&mut self, key: Name, value: &[u8]) {
        let span = self.push_bytes(value);
        self.extract(key, span, None);
    }

    fn find(&self, key: &[u8]) -> Option<&Extracted> {
        self.extracted.iter().rev().find(|e| self.name_str(&e.key) == key)
    }

    /// The newest value extracted under `key`. As in Promtail, the entry's labels are part of
    /// the extracted map: a key nothing extracted reads the label of that name.
    pub fn extracted(&self, key: &str) -> Option<&[u8]> {
        match self.find(key.as_bytes()) {
            Some(e) => Some(self.bytes(e.value)),
            None => self.label(key).map(str::as_bytes),
        }
    }

    /// The span of the newest value under `key` (a label's value is copied into the buffer).
    pub fn extracted_span(&mut self, key: &str) -> Option<Span> {
        if let Some(e) = self.find(key.as_bytes()) {
            return Some(e.value);
        }
        let value = self.label(key)?.to_string();
        Some(self.push_bytes(value.as_bytes()))
    }

    /// The newest value under `key` as [`Bytes`]: a slice of the line when the value was taken
    /// from it verbatim, a copy otherwise.
    pub fn extracted_bytes(&self, key: &str) -> Option<Bytes> {
        let Some(e) = self.find(key.as_bytes()) else {
            return self.label(key).map(|v| Bytes::copy_from_slice(v.as_bytes()));
        };
        let len = (e.value.end - e.value.start) as usize;
        Some(match e.origin {
            Some(at) if (at as usize) + len <= self.entry.line.len() => {
                self.entry.line.slice(at as usize..at as usize + len)
            }
            _ => Bytes::copy_from_slice(self.bytes(e.value)),
        })
    }

    /// The value a stage reads: the extracted `source`, or the line when no source is set.
    pub fn source_value(&self, source: Option<&str>) -> Option<&[u8]> {
        match source {
            Some(key) => self.extracted(key),
            None => Some(&self.entry.line),
        }
    }

    // ---- labels -----------------------------------------------------------------------------

    pub fn push_label_op(&mut self, op: LabelOp) {
        self.label_ops.push(op);
    }

    /// The labels as they stand now (the interned set with the pending changes applied), as
    /// (name, value) pairs; pairs whose value is not UTF-8 are left out.
    pub fn current_labels(&self) -> SmallVec<[(&str, &str); 16]> {
        let mut pairs: SmallVec<[(&str, &str); 16]> =
            self.entry.labels.pairs().iter().map(|(n, v)| (&**n, &**v)).collect();
        for op in &self.label_ops {
            match op {
                LabelOp::Set(name, value) => {
                    let Ok(name) = std::str::from_utf8(self.name_str(name)) else {
                        continue;
                    };
                    let value = match value {
                        Value::Static(s) => s.as_str(),
                        Value::Buf(span) => match std::str::from_utf8(self.bytes(*span)) {
                            Ok(v) => v,
                            Err(_) => continue,
                        },
                    };
                    match pairs.iter_mut().find(|(n, _)| *n == name) {
                        Some(slot) => slot.1 = value,
                        None => pairs.push((name, value)),
                    }
                }
                LabelOp::Remove(name) => pairs.retain(|(n, _)| *n != &**name),
                LabelOp::KeepOnly(names) => pairs.retain(|(n, _)| names.iter().any(|k| &**k == *n)),
            }
        }
        pairs
    }

    /// The current value of one label.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.current_labels().iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
    }

    pub fn has_label_ops(&self) -> bool {
        !self.label_ops.is_empty()
    }

    /// Interns the current labels into the entry; pairs that label limits refuse become
    /// structured metadata. Afterwards there are no pending changes.
    pub fn commit_labels(&mut self, cache: &mut LabelCache) {
        if self.label_ops.is_empty() {
            return;
        }
        let resolved =
            cache.resolve_changes(&self.entry.labels, |key| self.write_changes_key(key), || self.current_labels());
        self.entry.labels = resolved.set;
        for (name, value) in resolved.moved {
            self.entry.metadata.set(name, Bytes::copy_from_slice(value.as_bytes()));
        }
        self.label_ops.clear();
    }

    /// The pending label changes as bytes that identify them exactly: per change a tag, then
    /// each string as its length and bytes.
    fn write_changes_key(&self, key: &mut Vec<u8>) {
        fn put(key: &mut Vec<u8>, bytes: &[u8]) {
            key.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
            key.extend_from_slice(bytes);
        }
        for op in &self.label_ops {
            match op {
                LabelOp::Set(name, value) => {
                    key.push(0);
                    put(key, self.name_str(name));
                    put(
                        key,
                        match value {
                            Value::Static(s) => s.as_bytes(),
                            Value::Buf(span) => self.bytes(*span),
                        },
                    );
                }
                LabelOp::Remove(name) => {
                    key.push(1);
                    put(key, name.as_bytes());
                }
                LabelOp::KeepOnly(names) => {
                    key.push(2);
                    key.extend_from_slice(&(names.len() as u32).to_le_bytes());
                    for name in names.iter() {
                        put(key, name.as_bytes());
                    }
                }
            }
        }
    }

    /// Takes the entry out, leaving an empty one behind.
    pub fn take_entry(&mut self) -> LogEntry {
        let empty =
            LogEntry { timestamp: 0, line: Bytes::new(), labels: self.entry.labels.clone(), metadata: Metadata::new() };
        std::mem::replace(&mut self.entry, empty)
    }
}

fn name_bytes<'a>(buf: &'a [u8], name: &'a Name) -> &'a [u8] {
    match name {
        Name::Static(s) => s.as_bytes(),
        Name::Buf(span) => &buf[span.start as usize..span.end as usize],
    }
}

/// The labels of a test or a source as a set (not interned).
pub fn labels_of(pairs: &[(String, String)]) -> LabelSet {
    LabelSet::from_pairs(pairs.iter().map(|(n, v)| (n.as_str(), v.as_str())))
}

/// A working entry for `line`, labelled {job="app", stream="stdout"}, from source `src`.
#[cfg(test)]
pub(crate) fn test_work(line: &str) -> Work {
    let labels = LabelSet::from_pairs([("job", "app"), ("stream", "stdout")]);
    Work::new(LogEntry::new(1, Bytes::copy_from_slice(line.as_bytes()), labels), Arc::from("src"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{LabelInterner, LabelLimits};
    use crate::telemetry::metrics::LabelMetrics;

    #[test]
    fn extracted_values_newest_wins_and_share_the_line() {
        let mut w = test_work("level=info msg=hi");
        let v = w.push_bytes(b"info");
        w.extract(Name::Static(ConfigStr::new("level")), v, Some(6));
        assert_eq!(w.extracted("level"), Some(&b"info"[..]));
        let bytes = w.extracted_bytes("level").unwrap();
        assert_eq!(bytes, "info");
        assert_eq!(bytes.as_ptr(), w.entry.line[6..].as_ptr(), "a slice of the line, not a copy");
        w.extract_bytes(Name::Static(ConfigStr::new("level")), b"warn");
        assert_eq!(w.extracted("level"), Some(&b"warn"[..]));
        assert_eq!(w.extracted("job"), Some(&b"app"[..]), "labels read as extracted values");
        assert_eq!(w.extracted("nope"), None);
        assert_eq!(w.source_value(None), Some(&b"level=info msg=hi"[..]));
    }

    #[test]
    fn label_ops_apply_in_order() {
        let mut w = test_work("x");
        let v = w.push_bytes(b"gateway");
        w.push_label_op(LabelOp::Set(Name::Static(ConfigStr::new("service")), Value::Buf(v)));
        w.push_label_op(LabelOp::Remove(ConfigStr::new("stream")));
        assert_eq!(w.label("service"), Some("gateway"));
        assert_eq!(w.label("stream"), None);
        w.push_label_op(LabelOp::KeepOnly(Arc::from(vec![Arc::from("service")])));
        assert_eq!(w.current_labels().as_slice(), [("service", "gateway")]);
        let metrics = LabelMetrics::default();
        let mut cache = LabelCache::new(LabelInterner::new(LabelLimits::default(), &metrics));
        w.commit_labels(&mut cache);
        assert_eq!(w.entry.labels.rendered(), r#"{service="gateway"}"#);
        assert!(!w.has_label_ops());
    }
}
