//! `docker` and `cri`: unwrap container runtime log formats, as Promtail's stages of the same
//! names do: the line becomes the container's output, the timestamp the runtime's, and the
//! `stream` label is set.
//!
//! `docker` does not join the parts of lines that Docker split at 16 KiB (sources reading
//! json-file logs from disk do that); `cri` joins partial (`P`) lines until the full (`F`) one.

use super::config_str::ConfigStr;
use super::hold::{Group, Groups, Holding, Offer, Released};
use super::work::{LabelOp, Name, Value, Work};
use super::{Flow, StageCtx, StageInfo};
use crate::formats::StreamKind;
use crate::formats::cri::parse_cri;
use crate::formats::docker_json::parse_envelope_into;
use bytes::BufMut;
use smallvec::SmallVec;
use std::sync::Arc;

/// The `stream` label name and its two values, shared.
pub(crate) struct StreamLabel {
    name: ConfigStr,
    stdout: ConfigStr,
    stderr: ConfigStr,
}

impl Default for StreamLabel {
    fn default() -> Self {
        StreamLabel {
            name: ConfigStr::new("stream"),
            stdout: ConfigStr::new("stdout"),
            stderr: ConfigStr::new("stderr"),
        }
    }
}

impl StreamLabel {
    fn set(&self, w: &mut Work, stream: StreamKind) {
        let value = match stream {
            StreamKind::Stdout => &self.stdout,
            StreamKind::Stderr => &self.stderr,
        };
        w.push_label_op(LabelOp::Set(Name::Static(self.name), Value::Static(*value)));
    }
}

#[derive(Default)]
pub(crate) struct DockerStage {
    stream: StreamLabel,
}

impl DockerStage {
    pub fn apply(&self, w: &mut Work, info: &StageInfo) -> Flow {
        let line = w.entry.line.clone();
        let mut parsed = Ok(None);
        let new_line = w.new_line(|out| {
            let start = out.len();
            parsed = parse_envelope_into(&line, out).map(Some);
            if parsed.is_err() {
                out.truncate(start);
            }
        });
        let env = match parsed {
            Ok(Some(env)) => env,
            Ok(None) => return Flow::Continue,
            Err(e) => {
                info.error(|| e.to_string());
                return Flow::Continue;
            }
        };
        w.entry.line = new_line;
        w.entry.timestamp = env.time;
        self.stream.set(w, env.stream);
        Flow::Continue
    }
}

/// `cri`: `<time> <stream> <P|F> <content>`; partial lines are held and joined.
pub(crate) struct CriStage {
    pub max_partial_lines: usize,
    /// Partial lines older than this are released as they are.
    pub max_wait_nanos: i64,
    pub groups: Arc<Groups>,
    stream: StreamLabel,
}

impl CriStage {
    pub fn new(max_partial_lines: usize, groups: Arc<Groups>) -> Self {
        CriStage { max_partial_lines, max_wait_nanos: 5_000_000_000, groups, stream: StreamLabel::default() }
    }
}

impl Holding for CriStage {
    fn offer(&self, w: &mut Work, ctx: &mut StageCtx<'_>, info: &StageInfo) -> Offer {
        let line = w.entry.line.clone();
        let cri = match parse_cri(&line) {
            Ok(cri) => cri,
            Err(e) => {
                info.error(|| e.to_string());
                return Offer::Continue;
            }
        };
        let key = (Arc::clone(&w.source), w.entry.labels.hash_value() ^ (cri.stream as u64 + 1));
        let mut groups = self.groups.lock();
        if let Some(group) = groups.get_mut(&key) {
            group.append(b"", cri.content, ctx.now, ctx.acks);
            if cri.partial && group.lines < self.max_partial_lines {
                return Offer::Held(SmallVec::new());
            }
            let Some(group) = groups.remove(&key) else {
                return Offer::Continue;
            };
            drop(groups);
            // The joined line continues in place of this one, with the first part's time.
            let Released { entry, acks } = group.release();
            w.entry.timestamp = entry.timestamp;
            w.entry.line = w.new_line(|out| out.put_slice(&entry.line));
            self.stream.set(w, cri.stream);
            // The parts' tokens travel with the joined line.
            ctx.extra_acks.append(&mut { acks });
            return Offer::Continue;
        }
        w.entry.timestamp = cri.time;
        w.entry.line = line.slice_ref(cri.content);
        self.stream.set(w, cri.stream);
        if cri.partial && self.max_partial_lines > 1 {
            w.commit_labels(ctx.cache);
            let entry = w.take_entry();
            groups.insert(key, Group::start(entry, ctx.now, ctx.acks));
            return Offer::Held(SmallVec::new());
        }
        Offer::Continue
    }

    fn take_expired(&self, now: i64, force: bool) -> Vec<(Arc<str>, Released)> {
        self.groups.take_expired(now, self.max_wait_nanos, force)
    }
}
