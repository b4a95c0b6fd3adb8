//! Docker's container log stream (`GET /containers/{id}/logs?timestamps=1`), read from bytes as
//! they arrive: multiplexed frames for containers without a TTY, a raw stream for TTY ones.
//!
//! - Multiplexed: each frame is an 8-byte header `[type, 0, 0, 0, size (u32, big-endian)]` and
//!   `size` bytes; type 1 is stdout, 2 stderr, 0 stdin (written to stdout), 3 the daemon's own
//!   error (never container output).
//! - Raw (TTY): no headers; messages are separated by `\n`, a `\r` before it is removed.
//! - Every message starts with its timestamp (`2006-01-02T15:04:05.000000000Z07:00`) and a space.
//!   A message without a trailing `\n` is a part of a line longer than Docker's 16 KiB buffer;
//!   joining parts is [`LineJoiner`]'s job. A frame holding several `\n`-separated messages is
//!   split, each part taking its own timestamp prefix or, lacking one, the previous part's.
//!
//! The type of stream is decided by the caller from the container's inspect data (`Config.Tty`),
//! never guessed from the first byte.

use crate::formats::time::parse_rfc3339_nanos;
use bytes::{Buf, Bytes, BytesMut};

/// Where a message came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Origin {
    Stdout,
    Stderr,
    /// The daemon's own error (frame type 3), for example "Error grabbing logs".
    Daemon,
}

/// One log message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub origin: Origin,
    /// Docker's timestamp, nanoseconds since the epoch.
    pub time: i64,
    /// The content, without its timestamp prefix and without its `\n`.
    pub content: Bytes,
    /// The message ended with `\n` (a whole line, or the last part of a split one).
    pub complete: bool,
    /// The message carried its own timestamp (a line without one takes the previous one's).
    pub stamped: bool,
}

/// Why the stream cannot be read further.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("invalid frame header (stream type {0})")]
    BadHeader(u8),
}

/// Splits the bytes of a log stream into messages.
pub struct FrameReader {
    buf: BytesMut,
    tty: bool,
    /// Messages already cut out of the buffer, in order.
    ready: std::collections::VecDeque<Message>,
    last_time: i64,
}

/// Reads `"<timestamp> "` at the start of `content`: (time, bytes taken).
fn timestamp_prefix(content: &[u8]) -> Option<(i64, usize)> {
    let space = memchr::memchr(b' ', &content[..content.len().min(40)])?;
    parse_rfc3339_nanos(&content[..space]).map(|t| (t, space + 1))
}

impl FrameReader {
    pub fn new(tty: bool) -> FrameReader {
        FrameReader { buf: BytesMut::new(), tty, ready: Default::default(), last_time: 0 }
    }

    /// Adds bytes read from the stream.
    pub fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// Bytes held that do not make a whole frame yet.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Gives back the memory of an empty buffer (an idle container keeps none). A busy stream
    /// loses little: its buffer is mostly still shared with the messages cut out of it (on their
    /// way to the sinks), so its next bytes would go to a new one anyway.
    pub fn shrink(&mut self) {
        if self.buf.is_empty() && self.buf.capacity() > 0 {
            self.buf = BytesMut::new();
        }
    }

    /// The next message, if a whole one is buffered.
    pub fn next_message(&mut self) -> Option<Result<Message, FrameError>> {
        loop {
            if let Some(m) = self.ready.pop_front() {
                return Some(Ok(m));
            }
            let payload = if self.tty { self.next_raw()? } else { self.next_frame()? };
            match payload {
                Ok((origin, bytes, complete)) => self.split(origin, bytes, complete),
                Err(e) => return Some(Err(e)),
            }
        }
    }

    fn next_frame(&mut self) -> Option<Result<(Origin, Bytes, bool), FrameError>> {
        let header = self.buf.first_chunk::<8>()?;
        let origin = match header[0] {
            0 | 1 => Origin::Stdout,
            2 => Origin::Stderr,
            3 => Origin::Daemon,
            other => return Some(Err(FrameError::BadHeader(other))),
        };
        let size = u32::from_be_bytes([header[4], header[5], header[6], header[7]]) as usize;
        if self.buf.len() < 8 + size {
            self.buf.reserve(8 + size - self.buf.len());
            return None;
        }
        self.buf.advance(8);
        let mut payload = self.buf.split_to(size).freeze();
        let complete = payload.last() == Some(&b'\n');
        if complete {
            payload.truncate(payload.len() - 1);
        }
        Some(Ok((origin, payload, complete)))
    }

    fn next_raw(&mut self) -> Option<Result<(Origin, Bytes, bool), FrameError>> {
        let newline = memchr::memchr(b'\n', &self.buf)?;
        let mut line = self.buf.split_to(newline + 1).freeze();
        line.truncate(newline);
        if line.last() == Some(&b'\r') {
            line.truncate(line.len() - 1);
        }
        Some(Ok((Origin::Stdout, line, true)))
    }

    /// Cuts a payload into messages at inner newlines.
    fn split(&mut self, origin: Origin, mut payload: Bytes, complete: bool) {
        loop {
            let stamp = timestamp_prefix(&payload);
            let stamped = stamp.is_some();
            let (time, taken) = stamp.unwrap_or((self.last_time, 0));
            self.last_time = time;
            payload.advance(taken);
            match memchr::memchr(b'\n', &payload) {
                Some(i) => {
                    let mut content = payload.split_to(i + 1);
                    content.truncate(i);
                    self.ready.push_back(Message { origin, time, content, complete: true, stamped });
                }
                None => {
                    self.ready.push_back(Message { origin, time, content: payload, complete, stamped });
                    return;
                }
            }
        }
    }
}

/// A line put together from one or more messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub origin: Origin,
    /// The first part's timestamp.
    pub time: i64,
    pub content: Bytes,
}

/// Joins the parts of split lines, separately for stdout and stderr. A line is never held
/// beyond `max_line` bytes: past it, what was joined goes out as it is.
pub struct LineJoiner {
    partial: [Option<(i64, BytesMut)>; 2],
    max_line: usize,
}

impl LineJoiner {
    pub fn new(max_line: usize) -> LineJoiner {
        LineJoiner { partial: [None, None], max_line }
    }

    /// Adds a message; returns the line it completes, if any.
    pub fn push(&mut self, m: Message) -> Option<Line> {
        let slot = match m.origin {
            Origin::Stdout => &mut self.partial[0],
            Origin::Stderr => &mut self.partial[1],
            Origin::Daemon => return Some(Line { origin: m.origin, time: m.time, content: m.content }),
        };
        match slot.take() {
            None if m.complete => Some(Line { origin: m.origin, time: m.time, content: m.content }),
            None => {
                *slot = Some((m.time, BytesMut::from(&m.content[..])));
                None
            }
            Some((time, mut joined)) => {
                joined.extend_from_slice(&m.content);
                if m.complete || joined.len() >= self.max_line {
                    Some(Line { origin: m.origin, time, content: joined.freeze() })
                } else {
                    *slot = Some((time, joined));
                    None
                }
            }
        }
    }

    /// Whether a part is waiting for the rest of its line.
    pub fn holds_partial(&self) -> bool {
        self.partial.iter().any(Option::is_some)
    }

    /// What is held, as lines (at the end of a stream).
    pub fn flush(&mut self) -> Vec<Line> {
        let origins = [Origin::Stdout, Origin::Stderr];
        self.partial
            .iter_mut()
            .zip(origins)
            .filter_map(|(slot, origin)| {
                slot.take().map(|(time, joined)| Line { origin, time, content: joined.freeze() })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const T1: &str = "2024-05-06T07:08:09.000000001Z";
    const T2: &str = "2024-05-06T07:08:09.000000002Z";

    fn frame(kind: u8, payload: &str) -> Vec<u8> {
        let mut f = vec![kind, 0, 0, 0];
        f.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        f.extend_from_slice(payload.as_bytes());
        f
    }

    fn drain(r: &mut FrameReader) -> Vec<Message> {
        std::iter::from_fn(|| r.next_message()).map(Result::unwrap).collect()
    }

    #[test]
    fn demultiplexes_stdout_stderr_and_daemon_errors() {
        let mut r = FrameReader::new(false);
        let mut bytes = frame(1, &format!("{T1} out\n"));
        bytes.extend(frame(2, &format!("{T2} err\n")));
        bytes.extend(frame(3, &format!("{T2} Error grabbing logs: x\n")));
        // Frames arrive cut anywhere.
        for chunk in bytes.chunks(5) {
            r.push(chunk);
        }
        let got = drain(&mut r);
        assert_eq!(got.len(), 3);
        assert_eq!(
            (got[0].origin, &got[0].content[..], got[0].time),
            (Origin::Stdout, &b"out"[..], 1_714_979_289_000_000_001)
        );
        assert_eq!((got[1].origin, &got[1].content[..]), (Origin::Stderr, &b"err"[..]));
        assert_eq!(got[2].origin, Origin::Daemon);
        assert_eq!(r.buffered(), 0);
    }

    #[test]
    fn a_frame_of_several_lines_is_split() {
        let mut r = FrameReader::new(false);
        r.push(&frame(1, &format!("{T1} a\n{T2} b\nc\n")));
        let got = drain(&mut r);
        let lines: Vec<(&[u8], i64, bool)> = got.iter().map(|m| (&m.content[..], m.time % 10, m.stamped)).collect();
        assert_eq!(lines, [(&b"a"[..], 1, true), (&b"b"[..], 2, true), (&b"c"[..], 2, false)]);
    }

    #[test]
    fn tty_streams_are_raw() {
        let mut r = FrameReader::new(true);
        r.push(format!("{T1} first\r\n{T2} sec").as_bytes());
        assert_eq!(drain(&mut r).iter().map(|m| m.content.clone()).collect::<Vec<_>>(), [Bytes::from_static(b"first")]);
        r.push(b"ond\r\n");
        let m = drain(&mut r);
        assert_eq!((&m[0].content[..], m[0].time % 10), (&b"second"[..], 2));
    }

    #[test]
    fn the_first_byte_is_never_used_to_guess_tty() {
        // A daemon error frame first: type 3 is a valid header, not raw text.
        let mut r = FrameReader::new(false);
        r.push(&frame(3, &format!("{T1} boom\n")));
        assert_eq!(drain(&mut r)[0].origin, Origin::Daemon);
        let mut r = FrameReader::new(false);
        r.push(b"\x07\x00\x00\x00\x00\x00\x00\x01x");
        assert_eq!(r.next_message(), Some(Err(FrameError::BadHeader(7))));
    }

    #[test]
    fn parts_join_with_the_first_timestamp() {
        let mut r = FrameReader::new(false);
        r.push(&frame(1, &format!("{T1} {}", "a".repeat(16384))));
        r.push(&frame(2, &format!("{T1} other stream\n")));
        r.push(&frame(1, &format!("{T2} {}\n", "b".repeat(100))));
        let mut j = LineJoiner::new(1 << 20);
        let lines: Vec<Line> = drain(&mut r).into_iter().filter_map(|m| j.push(m)).collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(&lines[0].content[..], b"other stream");
        assert_eq!(lines[1].content.len(), 16484);
        assert_eq!(lines[1].time % 10, 1, "the first part's time");
        assert!(!j.holds_partial());
    }

    #[test]
    fn joining_stops_at_the_limit() {
        let mut j = LineJoiner::new(10);
        let part = |c: &str| Message {
            origin: Origin::Stdout,
            time: 1,
            content: Bytes::copy_from_slice(c.as_bytes()),
            complete: false,
            stamped: true,
        };
        assert!(j.push(part("123456")).is_none());
        assert_eq!(j.push(part("7890ab")).unwrap().content, "1234567890ab");
        assert!(j.push(part("x")).is_none());
        assert_eq!(j.flush().len(), 1);
    }

    proptest! {
        #[test]
        fn any_chunking_gives_the_same_messages(lines in proptest::collection::vec("[a-z ]{0,40}", 1..20), cut in 1usize..50) {
            let mut bytes = Vec::new();
            for (i, l) in lines.iter().enumerate() {
                bytes.extend(frame(1 + (i % 2) as u8, &format!("{T1} {l}\n")));
            }
            let mut whole = FrameReader::new(false);
            whole.push(&bytes);
            let expected = drain(&mut whole);
            let mut r = FrameReader::new(false);
            let mut got = Vec::new();
            for chunk in bytes.chunks(cut) {
                r.push(chunk);
                got.extend(drain(&mut r));
            }
            prop_assert_eq!(got.len(), lines.len());
            prop_assert_eq!(got, expected);
        }

        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200), tty in any::<bool>()) {
            let mut r = FrameReader::new(tty);
            r.push(&bytes);
            while let Some(Ok(_)) = r.next_message() {}
        }
    }
}
