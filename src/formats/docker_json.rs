//! Docker's `json-file` log line: `{"log":"<line>\n","stream":"stdout","time":"<RFC3339Nano>"}`
//! (optionally with an `attrs` object), as dockerd writes it and Promtail's `docker` stage reads it.
//!
//! This is the hottest parse of the agent (every line of every container on a Docker host
//! read from disk), so it is a dedicated scanner rather than a general JSON parser: one pass
//! with `memchr`, no allocation; the caller unescapes the `log` content into its own buffer.
//! The scanner still checks the object's syntax (keys, colons, commas, closing brace): a line
//! that is not such an object is an error, never a misread.

use super::StreamKind;
use super::json_string::{scan_string, unescape_string};
use super::time::parse_rfc3339_nanos;

/// The fields of one json-file line; the `log` content went to the caller's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Envelope {
    pub stream: StreamKind,
    /// Nanoseconds since the Unix epoch.
    pub time: i64,
    /// The line ended with `\n`. Docker splits lines longer than 16 KiB: every part but the
    /// last lacks it.
    pub complete: bool,
}

/// Why a line is not a json-file envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    #[error("not a JSON object")]
    NotAnObject,
    #[error("malformed JSON in the envelope")]
    Malformed,
    #[error("missing `log` field")]
    MissingLog,
    #[error("missing or invalid `stream` field")]
    BadStream,
    #[error("missing or invalid `time` field")]
    BadTime,
}

fn skip_ws(s: &[u8], mut i: usize) -> usize {
    while i < s.len() && matches!(s[i], b' ' | b'\t' | b'\r' | b'\n') {
        i += 1;
    }
    i
}

/// Skips one JSON value starting at `i` (objects and arrays by balancing, strings by scanning),
/// returning the index after it.
fn skip_value(s: &[u8], i: usize) -> Option<usize> {
    match *s.get(i)? {
        b'"' => scan_string(s, i + 1).map(|(end, _)| end + 1),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut j = i;
            while j < s.len() {
                match s[j] {
                    b'"' => j = scan_string(s, j + 1)?.0,
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(j + 1);
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
            None
        }
        _ => {
            let end = s[i..].iter().position(|&b| matches!(b, b',' | b'}' | b']' | b' ' | b'\t' | b'\r' | b'\n'))?;
            (end > 0).then_some(i + end)
        }
    }
}

/// Parses one json-file line (without its trailing newline), appending the unescaped `log`
/// content, without its final `\n`, to `out` in the same pass that finds its end.
///
/// On error, `out` may hold part of the content: the caller truncates it to its length before
/// the call.
pub fn parse_envelope_into<B: super::json_string::ByteSink>(
    line: &[u8],
    out: &mut B,
) -> Result<Envelope, EnvelopeError> {
    let mut i = skip_ws(line, 0);
    if line.get(i) != Some(&b'{') {
        return Err(EnvelopeError::NotAnObject);
    }
    i += 1;
    let mut complete = None;
    let mut stream = None;
    let mut time = None;
    loop {
        i = skip_ws(line, i);
        if line.get(i) != Some(&b'"') {
            return Err(EnvelopeError::Malformed);
        }
        let (key_end, _) = scan_string(line, i + 1).ok_or(EnvelopeError::Malformed)?;
        let key = &line[i + 1..key_end];
        i = skip_ws(line, key_end + 1);
        if line.get(i) != Some(&b':') {
            return Err(EnvelopeError::Malformed);
        }
        i = skip_ws(line, i + 1);
        let is_string = line.get(i) == Some(&b'"');
        let value_end = match key {
            b"log" if is_string && complete.is_none() => {
                let done = unescape_string(line, i + 1, out).ok_or(EnvelopeError::Malformed)?;
                complete = Some(done.trailing_newline);
                done.end + 1
            }
            _ => skip_value(line, i).ok_or(EnvelopeError::Malformed)?,
        };
        if is_string {
            let content = &line[i + 1..value_end - 1];
            match key {
                b"stream" => stream = Some(StreamKind::parse(content).ok_or(EnvelopeError::BadStream)?),
                b"time" => time = Some(parse_rfc3339_nanos(content).ok_or(EnvelopeError::BadTime)?),
                _ => {}
            }
        } else if matches!(key, b"log" | b"stream" | b"time") {
            return Err(EnvelopeError::Malformed);
        }
        i = skip_ws(line, value_end);
        match line.get(i) {
            Some(b',') => i += 1,
            Some(b'}') => break,
            _ => return Err(EnvelopeError::Malformed),
        }
    }
    if skip_ws(line, i + 1) != line.len() {
        return Err(EnvelopeError::Malformed);
    }
    Ok(Envelope {
        complete: complete.ok_or(EnvelopeError::MissingLog)?,
        stream: stream.ok_or(EnvelopeError::BadStream)?,
        time: time.ok_or(EnvelopeError::BadTime)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const LINE: &[u8] = br#"{"log":"{\"level\":\"INFO\",\"msg\":\"a \\\"b\\\"\"}\n","stream":"stderr","time":"2024-05-06T07:08:09.123456789Z"}"#;

    fn parse(line: &[u8]) -> Result<(Envelope, Vec<u8>), EnvelopeError> {
        let mut out = Vec::new();
        parse_envelope_into(line, &mut out).map(|e| (e, out))
    }

    #[test]
    fn parses_the_docker_layout() {
        let (env, log) = parse(LINE).unwrap();
        assert_eq!(env.stream, StreamKind::Stderr);
        assert_eq!(env.time, 1_714_979_289_123_456_789);
        assert!(env.complete);
        assert_eq!(log, br#"{"level":"INFO","msg":"a \"b\""}"#);
    }

    #[test]
    fn partial_lines_keep_their_content() {
        let (env, log) = parse(br#"{"log":"part one","stream":"stdout","time":"2024-05-06T07:08:09Z"}"#).unwrap();
        assert!(!env.complete);
        assert_eq!(log, b"part one");
        let (env, log) = parse(br#"{"log":"a\\n","stream":"stdout","time":"2024-05-06T07:08:09Z"}"#).unwrap();
        assert!(!env.complete, "an escaped backslash then n is not a newline");
        assert_eq!(log, br"a\n");
    }

    #[test]
    fn accepts_other_key_orders_and_attrs() {
        let line = br#"{ "time":"2024-05-06T07:08:09Z", "attrs":{"tag":"x","n":[1,{"a":"}"}]}, "stream":"stdout", "log":"hi\n" }"#;
        let (env, log) = parse(line).unwrap();
        assert_eq!((log.as_slice(), env.complete), (&b"hi"[..], true));
    }

    #[test]
    fn rejects_what_is_not_an_envelope() {
        let cases: [(&[u8], EnvelopeError); 8] = [
            (b"plain text", EnvelopeError::NotAnObject),
            (br#"{"log":"x","stream":"stdout"}"#, EnvelopeError::BadTime),
            (br#"{"stream":"stdout","time":"2024-05-06T07:08:09Z"}"#, EnvelopeError::MissingLog),
            (br#"{"log":"x","stream":"stdin","time":"2024-05-06T07:08:09Z"}"#, EnvelopeError::BadStream),
            (br#"{"log":"x","stream":"stdout","time":"yesterday"}"#, EnvelopeError::BadTime),
            (br#"{"log":"x" "stream":"stdout"}"#, EnvelopeError::Malformed),
            (br#"{"log":"x","stream":"stdout","time":"2024-05-06T07:08:09Z"} trailing"#, EnvelopeError::Malformed),
            (br#"{"log":1,"stream":"stdout","time":"2024-05-06T07:08:09Z"}"#, EnvelopeError::Malformed),
        ];
        for (line, want) in cases {
            assert_eq!(parse(line).map(|(e, _)| e), Err(want), "{}", String::from_utf8_lossy(line));
        }
    }

    proptest! {
        #[test]
        fn reads_back_what_serde_json_writes(log in ".*", newline in any::<bool>(), stderr in any::<bool>(), nanos in 0i64..4_000_000_000_000_000_000) {
            let stream = if stderr { "stderr" } else { "stdout" };
            let content = if newline { format!("{log}\n") } else { log.clone() };
            let line = serde_json::json!({"log": content, "stream": stream, "time": crate::formats::time::format_rfc3339_nanos(nanos)}).to_string();
            let (env, out) = parse(line.as_bytes()).unwrap();
            prop_assert_eq!(env.time, nanos);
            prop_assert_eq!(env.stream.as_str(), stream);
            prop_assert_eq!(env.complete, newline);
            prop_assert_eq!(out, log.as_bytes());
        }

        #[test]
        fn never_panics(line in proptest::collection::vec(any::<u8>(), 0..128)) {
            let _ = parse(&line);
        }
    }
}
