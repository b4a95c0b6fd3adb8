//! Splitting a byte stream into lines without copying them: bytes are read into a large buffer
//! and each line is handed out as a [`Bytes`] slice of it.
//!
//! A line longer than `max_line` is cut there and handed out in parts (each counted by the
//! caller), so that a stream without newlines cannot make the buffer grow without bound.

use bytes::{Bytes, BytesMut};

const READ_CHUNK: usize = 64 * 1024;

pub struct LineSplitter {
    buf: BytesMut,
    /// Bytes of `buf` already searched for a newline.
    scanned: usize,
    max_line: usize,
    chunk: usize,
}

/// One line from the splitter.
#[derive(Debug, PartialEq, Eq)]
pub struct Line {
    pub bytes: Bytes,
    /// The line was cut at `max_line`; its rest follows as the next line.
    pub cut: bool,
    /// Bytes of input this line used, terminator included (for byte offsets).
    pub consumed: usize,
}

impl LineSplitter {
    pub fn new(max_line: usize) -> Self {
        Self::with_chunk(max_line, READ_CHUNK)
    }

    /// A splitter that reads `chunk` bytes at a time (smaller for many idle files).
    pub fn with_chunk(max_line: usize, chunk: usize) -> Self {
        LineSplitter { buf: BytesMut::new(), scanned: 0, max_line: max_line.max(1), chunk: chunk.max(64) }
    }

    /// Changes how much [`Self::reserve`] makes room for.
    pub fn set_chunk(&mut self, chunk: usize) {
        self.chunk = chunk.max(64);
    }

    /// Room to read into (at least a quarter of a chunk).
    pub fn reserve(&mut self) -> &mut BytesMut {
        if self.buf.capacity() - self.buf.len() < self.chunk / 4 {
            self.buf.reserve(self.chunk);
        }
        &mut self.buf
    }

    /// Moves what is buffered (part of a line) into a buffer of its own size, so that a reader
    /// that waits keeps little memory. (The rest of a read buffer shares the allocation of the
    /// lines split from it: held, it would keep the whole chunk alive after they are gone.)
    pub fn compact(&mut self) {
        self.buf = if self.buf.is_empty() { BytesMut::new() } else { BytesMut::from(&self.buf[..]) };
    }

    /// Gives back the buffer's memory when nothing is buffered (an idle file keeps none).
    pub fn shrink(&mut self) {
        if self.buf.is_empty() && self.buf.capacity() > 0 {
            self.buf = BytesMut::new();
        }
    }

    /// The next complete line (without `\n` or `\r\n`), if one is buffered.
    pub fn next_line(&mut self) -> Option<Line> {
        if let Some(pos) = memchr::memchr(b'\n', &self.buf[self.scanned..]) {
            let end = self.scanned + pos;
            if end <= self.max_line {
                let mut line = self.buf.split_to(end + 1);
                line.truncate(end);
                if line.last() == Some(&b'\r') {
                    line.truncate(end - 1);
                }
                self.scanned = 0;
                return Some(Line { bytes: line.freeze(), cut: false, consumed: end + 1 });
            }
        }
        self.scanned = self.buf.len();
        if self.buf.len() >= self.max_line {
            self.scanned = 0;
            return Some(Line { bytes: self.buf.split_to(self.max_line).freeze(), cut: true, consumed: self.max_line });
        }
        None
    }

    /// The bytes left after the last newline (at end of input).
    pub fn take_rest(&mut self) -> Option<Bytes> {
        self.scanned = 0;
        (!self.buf.is_empty()).then(|| self.buf.split().freeze())
    }

    /// Bytes buffered and not yet handed out.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BufMut;

    fn feed(s: &mut LineSplitter, data: &[u8]) {
        s.reserve().put_slice(data);
    }

    fn lines(s: &mut LineSplitter) -> Vec<String> {
        std::iter::from_fn(|| s.next_line()).map(|l| String::from_utf8(l.bytes.to_vec()).unwrap()).collect()
    }

    #[test]
    fn splits_across_reads() {
        let mut s = LineSplitter::new(1024);
        feed(&mut s, b"one\ntw");
        assert_eq!(lines(&mut s), ["one"]);
        feed(&mut s, b"o\r\n\nthree");
        assert_eq!(lines(&mut s), ["two", ""]);
        assert_eq!(s.take_rest().unwrap(), "three");
        assert!(s.take_rest().is_none());
    }

    #[test]
    fn cuts_endless_lines() {
        let mut s = LineSplitter::new(4);
        feed(&mut s, b"abcdefghij\nk\n");
        let got: Vec<_> = std::iter::from_fn(|| s.next_line()).collect();
        assert_eq!(
            got.iter().map(|l| (&l.bytes[..], l.cut)).collect::<Vec<_>>(),
            [(&b"abcd"[..], true), (b"efgh", true), (b"ij", false), (b"k", false)]
        );
    }
}
