//! Stages that hold entries back: `multiline` (a group of lines becomes one entry) and `cri`
//! (partial lines are joined until the full one arrives).
//!
//! Held entries are kept per stream (source and interned labels) with clones of the
//! acknowledgement tokens of the batches they came from: the source's position cannot pass a
//! line that is still held. Groups are released when the next group starts, when they reach
//! their size limit, when they waited too long (`take_expired`, driven by the topology's
//! timer), or all at once when the pipelines shut down or are replaced.

use super::work::Work;
use super::{StageCtx, StageInfo};
use crate::event::{AckSet, LogEntry};
use bytes::Bytes;
use parking_lot::Mutex;
use regex::bytes::Regex;
use smallvec::SmallVec;
use std::collections::HashMap;
use std::sync::Arc;

/// An entry a holding stage lets go, with the tokens of the batches it was made from.
pub(crate) struct Released {
    pub entry: LogEntry,
    pub acks: AckSet,
}

pub(crate) enum Offer {
    /// The stage did not keep the entry: go on with the next stage.
    Continue,
    /// The stage kept the entry; these earlier entries go on instead.
    Held(SmallVec<[Released; 1]>),
}

pub(crate) trait Holding {
    fn offer(&self, w: &mut Work, ctx: &mut StageCtx<'_>, info: &StageInfo) -> Offer;
    /// Entries held longer than the stage's wait (all of them with `force`), with their source.
    fn take_expired(&self, now: i64, force: bool) -> Vec<(Arc<str>, Released)>;
}

/// The key of a held stream.
pub(crate) type StreamKey = (Arc<str>, u64);

/// Lines being joined into one entry.
pub(crate) struct Group {
    pub first: LogEntry,
    pub text: Vec<u8>,
    pub lines: usize,
    pub last_append: i64,
    pub acks: AckSet,
}

impl Group {
    pub fn start(first: LogEntry, now: i64, acks: &AckSet) -> Group {
        let text = first.line.to_vec();
        let mut group = Group { first, text, lines: 1, last_append: now, acks: AckSet::new() };
        group.acks.extend_cloned(acks);
        group
    }

    pub fn append(&mut self, separator: &[u8], line: &[u8], now: i64, acks: &AckSet) {
        self.text.extend_from_slice(separator);
        self.text.extend_from_slice(line);
        self.lines += 1;
        self.last_append = now;
        self.acks.extend_cloned(acks);
    }

    pub fn release(self) -> Released {
        let mut entry = self.first;
        entry.line = Bytes::from(self.text);
        Released { entry, acks: self.acks }
    }
}

/// Held groups by stream, shared by every worker (a stream belongs to one source, so its lines
/// arrive in order).
#[derive(Default)]
pub(crate) struct Groups(Mutex<HashMap<StreamKey, Group>>);

impl Groups {
    pub fn take_expired(&self, now: i64, max_wait_nanos: i64, force: bool) -> Vec<(Arc<str>, Released)> {
        let mut groups = self.0.lock();
        let expired: Vec<StreamKey> = groups
            .iter()
            .filter(|(_, g)| force || now.saturating_sub(g.last_append) >= max_wait_nanos)
            .map(|(k, _)| k.clone())
            .collect();
        expired.into_iter().filter_map(|k| groups.remove(&k).map(|g| (k.0, g.release()))).collect()
    }

    pub fn lock(&self) -> parking_lot::MutexGuard<'_, HashMap<StreamKey, Group>> {
        self.0.lock()
    }
}

/// `multiline`: lines that do not match `firstline` are appended (with `\n`) to the entry that
/// started with the last matching line.
pub(crate) struct MultilineStage {
    pub firstline: Regex,
    pub max_wait_nanos: i64,
    pub max_lines: usize,
    pub groups: Arc<Groups>,
}

impl Holding for MultilineStage {
    fn offer(&self, w: &mut Work, ctx: &mut StageCtx<'_>, _info: &StageInfo) -> Offer {
        w.commit_labels(ctx.cache);
        let key = (Arc::clone(&w.source), w.entry.labels.hash_value());
        let starts_group = self.firstline.is_match(&w.entry.line);
        let mut released = SmallVec::new();
        let mut groups = self.groups.lock();
        match groups.get_mut(&key) {
            Some(group) if !starts_group => {
                group.append(b"\n", &w.entry.line, ctx.now, ctx.acks);
                if group.lines >= self.max_lines
                    && let Some(group) = groups.remove(&key)
                {
                    released.push(group.release());
                }
            }
            _ => {
                let entry = w.take_entry();
                if let Some(previous) = groups.insert(key, Group::start(entry, ctx.now, ctx.acks)) {
                    released.push(previous.release());
                }
            }
        }
        Offer::Held(released)
    }

    fn take_expired(&self, now: i64, force: bool) -> Vec<(Arc<str>, Released)> {
        self.groups.take_expired(now, self.max_wait_nanos, force)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{AckStatus, AckToken, LabelCache, LabelInterner, LabelLimits, LabelSet};
    use crate::telemetry::metrics::LabelMetrics;
    use std::time::Duration;

    fn stage(max_lines: usize) -> MultilineStage {
        MultilineStage {
            firstline: Regex::new(r"^\d{4}-").unwrap(),
            max_wait_nanos: 3_000_000_000,
            max_lines,
            groups: Arc::default(),
        }
    }

    fn offer(s: &MultilineStage, line: &str, now: i64, acks: &AckSet) -> Vec<String> {
        let metrics = LabelMetrics::default();
        let mut cache = LabelCache::new(LabelInterner::new(LabelLimits::default(), &metrics));
        let entry = LogEntry::new(now, Bytes::copy_from_slice(line.as_bytes()), LabelSet::from_pairs([("job", "x")]));
        let mut w = Work::new(entry, Arc::from("src"));
        let mut ctx = StageCtx { now, cache: &mut cache, throttle: Duration::ZERO, acks, extra_acks: AckSet::new() };
        let info = StageInfo { id: Arc::from("multiline"), errors: Default::default() };
        match s.offer(&mut w, &mut ctx, &info) {
            Offer::Held(released) => {
                released.into_iter().map(|r| String::from_utf8(r.entry.line.to_vec()).unwrap()).collect()
            }
            Offer::Continue => panic!("multiline always holds"),
        }
    }

    #[test]
    fn joins_until_the_next_first_line() {
        let s = stage(128);
        let none = AckSet::new();
        assert!(offer(&s, "2024-01-01 error", 1, &none).is_empty());
        assert!(offer(&s, "  at a()", 2, &none).is_empty());
        assert!(offer(&s, "  at b()", 3, &none).is_empty());
        assert_eq!(offer(&s, "2024-01-01 next", 4, &none), ["2024-01-01 error\n  at a()\n  at b()"]);
        let expired = s.take_expired(4 + 3_000_000_000, false);
        assert_eq!(expired.len(), 1);
        assert_eq!(expired[0].1.entry.line, "2024-01-01 next");
        assert_eq!(expired[0].1.entry.timestamp, 4);
    }

    #[test]
    fn max_lines_and_force_release() {
        let s = stage(2);
        let none = AckSet::new();
        offer(&s, "2024 a", 1, &none);
        assert_eq!(offer(&s, "b", 2, &none), ["2024 a\nb"]);
        offer(&s, "c", 3, &none);
        assert!(s.take_expired(4, false).is_empty());
        assert_eq!(s.take_expired(4, true).len(), 1);
    }

    #[test]
    fn held_lines_keep_their_batch_unacknowledged() {
        let s = stage(128);
        let (tx, rx) = std::sync::mpsc::channel();
        let batch = AckSet::one(AckToken::new(move |st| tx.send(st).unwrap()));
        offer(&s, "2024 a", 1, &batch);
        batch.settle();
        assert!(rx.try_recv().is_err(), "the held line keeps the batch open");
        let mut released = s.take_expired(0, true);
        released.pop().unwrap().1.acks.settle();
        assert_eq!(rx.try_recv().unwrap(), AckStatus::Settled);
    }
}
