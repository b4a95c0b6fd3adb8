//! The CRI log line (containerd, CRI-O): `<RFC3339Nano> <stdout|stderr> <tags> <content>`.
//! The first tag is `P` (a partial line: the runtime split a long line, the rest follows) or
//! `F` (full, or the last part); further tags are separated by `:`.

use super::StreamKind;
use super::time::parse_rfc3339_nanos;

/// The fields of one CRI line, borrowed from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CriLine<'a> {
    pub time: i64,
    pub stream: StreamKind,
    pub partial: bool,
    pub content: &'a [u8],
}

/// Why a line is not a CRI line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CriError {
    #[error("missing field")]
    MissingField,
    #[error("invalid timestamp")]
    BadTime,
    #[error("invalid stream")]
    BadStream,
    #[error("invalid tag (expected P or F)")]
    BadTag,
}

/// Parses one CRI line (without its trailing newline).
pub fn parse_cri(line: &[u8]) -> Result<CriLine<'_>, CriError> {
    let mut fields = line.splitn(4, |&b| b == b' ');
    let time = fields.next().ok_or(CriError::MissingField)?;
    let stream = fields.next().ok_or(CriError::MissingField)?;
    let tags = fields.next().ok_or(CriError::MissingField)?;
    let content = fields.next().unwrap_or(b"");
    let time = parse_rfc3339_nanos(time).ok_or(CriError::BadTime)?;
    let stream = StreamKind::parse(stream).ok_or(CriError::BadStream)?;
    let partial = match tags.split(|&b| b == b':').next() {
        Some(b"P") => true,
        Some(b"F") => false,
        _ => return Err(CriError::BadTag),
    };
    Ok(CriLine { time, stream, partial, content })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_full_and_partial_lines() {
        let l = parse_cri(b"2024-05-06T07:08:09.123456789Z stdout F hello world").unwrap();
        assert_eq!(
            (l.time, l.stream, l.partial, l.content),
            (1_714_979_289_123_456_789, StreamKind::Stdout, false, &b"hello world"[..])
        );
        let l = parse_cri(b"2024-05-06T07:08:09Z stderr P:x part").unwrap();
        assert!(l.partial);
        assert_eq!(l.content, b"part");
        assert_eq!(parse_cri(b"2024-05-06T07:08:09Z stdout F").unwrap().content, b"");
        assert_eq!(parse_cri(b"2024-05-06T07:08:09Z stdout F ").unwrap().content, b"");
    }

    #[test]
    fn rejects_other_lines() {
        assert_eq!(parse_cri(b"hello"), Err(CriError::MissingField));
        assert_eq!(parse_cri(b"yesterday stdout F x"), Err(CriError::BadTime));
        assert_eq!(parse_cri(b"2024-05-06T07:08:09Z stdin F x"), Err(CriError::BadStream));
        assert_eq!(parse_cri(b"2024-05-06T07:08:09Z stdout X x"), Err(CriError::BadTag));
    }

    proptest! {
        #[test]
        fn never_panics(line in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = parse_cri(&line);
        }
    }
}
