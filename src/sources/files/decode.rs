//! Lines of container log files into entries: CRI (`P` parts joined until `F`), Docker
//! json-file (parts without a final `\n` joined until the one with it), or raw.
//!
//! `auto` decides per file from its first line and keeps that decision. A line that does not
//! parse in the file's format passes through as it is (timestamped when read) and is counted.

use super::config::FileFormat;
use crate::formats::StreamKind;
use crate::formats::cri::parse_cri;
use crate::formats::docker_json::parse_envelope_into;
use bytes::{Bytes, BytesMut};

/// The sizes of the chunks that json-file lines are unescaped into: a file read line by line
/// gets small ones (each line in flight pins its chunk), a busy file doubles up to the largest.
const SCRATCH_CHUNK_MIN: usize = 1024;
const SCRATCH_CHUNK_MAX: usize = 4 * 1024;

/// One entry's worth of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    /// The runtime's timestamp (none for raw lines).
    pub time: Option<i64>,
    pub stream: Option<StreamKind>,
    pub content: Bytes,
    /// The line did not parse in the file's format and is passed through as it is.
    pub malformed: bool,
}

struct Partial {
    time: i64,
    stream: StreamKind,
    joined: BytesMut,
}

/// Decodes the lines of one file, in order.
pub struct Decoder {
    format: FileFormat,
    partial: Option<Partial>,
    max_line: usize,
    scratch: BytesMut,
    /// The size of the next chunk of `scratch`.
    scratch_chunk: usize,
}

fn detect(line: &[u8]) -> FileFormat {
    if line.first() == Some(&b'{') && parse_envelope_into(line, &mut Vec::new()).is_ok() {
        FileFormat::Docker
    } else if parse_cri(line).is_ok() {
        FileFormat::Cri
    } else {
        FileFormat::Raw
    }
}

impl Decoder {
    pub fn new(format: FileFormat, max_line: usize) -> Decoder {
        Decoder { format, partial: None, max_line, scratch: BytesMut::new(), scratch_chunk: SCRATCH_CHUNK_MIN }
    }

    /// The format in use (`Auto` until the first line).
    pub fn format(&self) -> FileFormat {
        self.format
    }

    /// Whether part of a line is held, waiting for the rest.
    pub fn holds_partial(&self) -> bool {
        self.partial.is_some()
    }

    /// Decodes one line of the file; `None` while a split line is being joined.
    pub fn decode(&mut self, line: Bytes) -> Option<Decoded> {
        if self.format == FileFormat::Auto {
            self.format = detect(&line);
        }
        match self.format {
            FileFormat::Cri => self.cri(line),
            FileFormat::Docker => self.docker(line),
            FileFormat::Raw | FileFormat::Auto => {
                Some(Decoded { time: None, stream: None, content: line, malformed: false })
            }
        }
    }

    /// What is held, as an entry (the file ended or was rotated).
    pub fn flush(&mut self) -> Option<Decoded> {
        self.partial.take().map(|p| Decoded {
            time: Some(p.time),
            stream: Some(p.stream),
            content: p.joined.freeze(),
            malformed: false,
        })
    }

    fn join(&mut self, time: i64, stream: StreamKind, content: &[u8], complete: bool) -> Option<Decoded> {
        match self.partial.as_mut() {
            None if complete => Some(Decoded {
                time: Some(time),
                stream: Some(stream),
                content: Bytes::copy_from_slice(content),
                malformed: false,
            }),
            None => {
                self.partial = Some(Partial { time, stream, joined: BytesMut::from(content) });
                None
            }
            Some(p) => {
                p.joined.extend_from_slice(content);
                if !complete && p.joined.len() < self.max_line {
                    return None;
                }
                self.flush()
            }
        }
    }

    fn cri(&mut self, line: Bytes) -> Option<Decoded> {
        let Ok(cri) = parse_cri(&line) else {
            return Some(Decoded { time: None, stream: None, content: line, malformed: true });
        };
        if cri.partial || self.partial.is_some() {
            return self.join(cri.time, cri.stream, cri.content, !cri.partial);
        }
        Some(Decoded {
            time: Some(cri.time),
            stream: Some(cri.stream),
            content: line.slice_ref(cri.content),
            malformed: false,
        })
    }

    /// The file has nothing more for now: the unused room of the current chunk is let go (an
    /// idle file holds none) and the next chunk starts small.
    pub fn idle(&mut self) {
        self.scratch = BytesMut::new();
        self.scratch_chunk = SCRATCH_CHUNK_MIN;
    }

    fn docker(&mut self, line: Bytes) -> Option<Decoded> {
        // Room for the unescaped content (never longer than the line) and the unescaper's
        // block of slack, in a chunk that many lines share: one allocation per chunk, not one
        // per line (an empty `scratch` after a split would allocate for every line).
        let room = line.len() + 64;
        if self.scratch.capacity() - self.scratch.len() < room {
            self.scratch.reserve(room.max(self.scratch_chunk));
            self.scratch_chunk = (self.scratch_chunk * 2).min(SCRATCH_CHUNK_MAX);
        }
        let start = self.scratch.len();
        let env = match parse_envelope_into(&line, &mut self.scratch) {
            Ok(env) => env,
            Err(_) => {
                self.scratch.truncate(start);
                return Some(Decoded { time: None, stream: None, content: line, malformed: true });
            }
        };
        let content = self.scratch.split().freeze();
        if !env.complete || self.partial.is_some() {
            return self.join(env.time, env.stream, &content, env.complete);
        }
        Some(Decoded { time: Some(env.time), stream: Some(env.stream), content, malformed: false })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(format: FileFormat, lines: &[&str]) -> (Vec<Decoded>, FileFormat) {
        let mut d = Decoder::new(format, 1 << 20);
        let out = lines.iter().filter_map(|l| d.decode(Bytes::copy_from_slice(l.as_bytes()))).collect();
        (out, d.format())
    }

    #[test]
    fn cri_partial_lines_join_until_full() {
        let (out, format) = decode_all(
            FileFormat::Auto,
            &[
                "2024-05-06T07:08:09.000000001Z stdout P part one ",
                "2024-05-06T07:08:09.000000002Z stdout F and two",
                "2024-05-06T07:08:10Z stderr F alone",
            ],
        );
        assert_eq!(format, FileFormat::Cri);
        assert_eq!(out.len(), 2);
        assert_eq!((&out[0].content[..], out[0].time.unwrap() % 10), (&b"part one and two"[..], 1));
        assert_eq!((out[1].stream, &out[1].content[..]), (Some(StreamKind::Stderr), &b"alone"[..]));
    }

    #[test]
    fn docker_split_lines_join() {
        let (out, format) = decode_all(
            FileFormat::Auto,
            &[
                r#"{"log":"first half ","stream":"stdout","time":"2024-05-06T07:08:09.000000001Z"}"#,
                r#"{"log":"second half\n","stream":"stdout","time":"2024-05-06T07:08:09.000000002Z"}"#,
                r#"{"log":"whole \"quoted\"\n","stream":"stderr","time":"2024-05-06T07:08:10Z"}"#,
            ],
        );
        assert_eq!(format, FileFormat::Docker);
        assert_eq!(&out[0].content[..], b"first half second half");
        assert_eq!(&out[1].content[..], br#"whole "quoted""#);
    }

    #[test]
    fn docker_lines_share_a_chunk_until_the_file_goes_idle() {
        let mut d = Decoder::new(FileFormat::Docker, 1 << 20);
        let line = |text: &str| {
            Bytes::from(format!(r#"{{"log":"{text}\n","stream":"stdout","time":"2024-05-06T07:08:09Z"}}"#))
        };
        let first = d.decode(line(r#"{\"a\":1}"#)).unwrap().content;
        let second = d.decode(line("plain")).unwrap().content;
        assert_eq!((&first[..], &second[..]), (&br#"{"a":1}"#[..], &b"plain"[..]));
        // One allocation for both: the second line starts where the first ends.
        assert_eq!(second.as_ptr(), first.as_ptr().wrapping_add(first.len()));
        d.idle();
        assert_eq!(d.scratch.capacity(), 0, "an idle file holds no room");
        assert_eq!(&d.decode(line("after")).unwrap().content[..], b"after");
    }

    #[test]
    fn malformed_lines_pass_through() {
        let (out, _) = decode_all(FileFormat::Cri, &["not a cri line", "2024-05-06T07:08:09Z stdout F ok"]);
        assert!(out[0].malformed && out[0].time.is_none());
        assert_eq!(&out[0].content[..], b"not a cri line");
        assert!(!out[1].malformed);
        let (out, format) = decode_all(FileFormat::Auto, &["plain text", "2024-05-06T07:08:09Z stdout F x"]);
        assert_eq!(format, FileFormat::Raw);
        assert_eq!(out.len(), 2);
    }

    #[test]
    fn joining_stops_at_the_limit_and_flushes() {
        let mut d = Decoder::new(FileFormat::Cri, 8);
        assert!(d.decode(Bytes::from_static(b"2024-05-06T07:08:09Z stdout P 12345")).is_none());
        assert_eq!(
            &d.decode(Bytes::from_static(b"2024-05-06T07:08:09Z stdout P 6789")).unwrap().content[..],
            b"123456789"
        );
        assert!(d.decode(Bytes::from_static(b"2024-05-06T07:08:09Z stdout P x")).is_none());
        assert!(d.holds_partial());
        assert_eq!(&d.flush().unwrap().content[..], b"x");
    }
}
