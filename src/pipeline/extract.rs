//! Stages that extract values from a line (or an extracted value): `json`, `logfmt`, `regex`.
//!
//! `json` is on the hot path of every structured log line. When every expression names a
//! top-level key (the common case, and the default pipeline's), the line is walked in place by
//! [`json_object::members`], which validates the whole text as simd-json would and slices out
//! only the wanted values: no copy of the line, no tape, no unescaping of values nobody reads.
//! Otherwise, or when a wanted value is an object or an array, simd-json parses the text into
//! its tape (reused buffers) and the expressions are looked up there. Both paths give the same
//! values for the same line (property-tested below). String values are recorded with their
//! offset in the line, so that metadata taken from them shares the line's buffer.

use super::config_str::ConfigStr;
use super::work::{ExtractSink, Name, Work};
use super::{Dropped, Flow, StageInfo};
use crate::formats::json_object::{self, RawValue};
use crate::formats::json_string::unescape_into;
use prometheus_client::metrics::counter::Counter;
use regex::bytes::Regex;
use simd_json::{Node, StaticNode};
use smallvec::SmallVec;
use std::io::Write as _;

/// One step of a JSON expression.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Segment {
    Key(String),
    Index(i64),
}

/// Parses the JMESPath subset Promtail configs use: `a.b`, `a[0]`, `a[-1]`, `"dotted.key"`,
/// `a."b-c"[2].d`.
pub(crate) fn parse_json_path(expr: &str) -> Result<Vec<Segment>, String> {
    let mut segments = Vec::new();
    let b = expr.as_bytes();
    let mut i = 0;
    let mut expect_key = true;
    while i < b.len() {
        match b[i] {
            b'.' if !expect_key => {
                i += 1;
                expect_key = true;
            }
            b'[' => {
                let end = expr[i..].find(']').ok_or_else(|| format!("`{expr}`: missing `]`"))? + i;
                let index = expr[i + 1..end].trim();
                let n: i64 = index.parse().map_err(|_| {
                    format!("`{expr}`: `[{index}]` is not an array index (only dotted paths, [n] and \"quoted\" keys are supported)")
                })?;
                segments.push(Segment::Index(n));
                i = end + 1;
                expect_key = false;
            }
            b'"' if expect_key => {
                let mut key = String::new();
                let mut j = i + 1;
                loop {
                    match b.get(j) {
                        None => return Err(format!("`{expr}`: unterminated quoted key")),
                        Some(b'"') => break,
                        Some(b'\\') if matches!(b.get(j + 1), Some(b'"' | b'\\')) => {
                            key.push(b[j + 1] as char);
                            j += 2;
                        }
                        Some(_) => {
                            let ch = expr[j..].chars().next().unwrap_or('\u{FFFD}');
                            key.push(ch);
                            j += ch.len_utf8();
                        }
                    }
                }
                segments.push(Segment::Key(key));
                i = j + 1;
                expect_key = false;
            }
            c if expect_key && (c == b'_' || c.is_ascii_alphabetic()) => {
                let len = b[i..].iter().take_while(|c| **c == b'_' || c.is_ascii_alphanumeric()).count();
                segments.push(Segment::Key(expr[i..i + len].to_string()));
                i += len;
                expect_key = false;
            }
            _ => {
                return Err(format!(
                    "`{expr}` is not supported: json expressions are dotted paths, [n] indexes and \"quoted\" keys (at `{}`)",
                    &expr[i..]
                ));
            }
        }
    }
    if segments.is_empty() || expect_key {
        return Err(format!("`{expr}` is not a complete json expression"));
    }
    Ok(segments)
}

pub(crate) struct JsonExpr {
    pub name: ConfigStr,
    pub path: Vec<Segment>,
}

pub(crate) struct JsonStage {
    pub source: Option<String>,
    /// Empty: extract every top-level field.
    exprs: Vec<JsonExpr>,
    /// The expressions by the top-level key they start with, so that one pass over the object's
    /// keys serves them all.
    by_first_key: Vec<(String, Vec<usize>)>,
    /// Every expression is one top-level key (or there are none): lines can take the fast path.
    top_level_only: bool,
    pub drop_malformed: Option<(Dropped, Counter)>,
}

/// The index after the value at `i` (a value spans `count + 1` nodes when nested).
fn skip(tape: &[Node<'_>], i: usize) -> usize {
    match tape[i] {
        Node::Object { count, .. } | Node::Array { count, .. } => i + count + 1,
        _ => i + 1,
    }
}

fn lookup<'t, 'i>(tape: &'t [Node<'i>], mut i: usize, path: &[Segment]) -> Option<usize> {
    for seg in path {
        match (seg, tape.get(i)?) {
            (Segment::Key(key), Node::Object { len, .. }) => {
                let mut j = i + 1;
                let mut found = None;
                for _ in 0..*len {
                    let Node::String(k) = tape.get(j)? else {
                        return None;
                    };
                    if *k == key.as_str() {
                        found = Some(j + 1);
                        break;
                    }
                    j = skip(tape, j + 1);
                }
                i = found?;
            }
            (Segment::Index(n), Node::Array { len, .. }) => {
                let idx = if *n < 0 { (*len as i64) + n } else { *n };
                if idx < 0 || idx as usize >= *len {
                    return None;
                }
                let mut j = i + 1;
                for _ in 0..idx {
                    j = skip(tape, j);
                }
                i = j;
            }
            _ => return None,
        }
    }
    Some(i)
}

/// Writes the value at `i` as JSON text (for nested objects and arrays).
fn write_json(tape: &[Node<'_>], i: usize, out: &mut Vec<u8>) -> usize {
    match tape[i] {
        Node::String(s) => {
            crate::formats::json_string::escape_into(s.as_bytes(), out);
            i + 1
        }
        Node::Static(s) => {
            write_static(s, out);
            i + 1
        }
        Node::Object { len, .. } => {
            out.push(b'{');
            let mut j = i + 1;
            for n in 0..len {
                if n > 0 {
                    out.push(b',');
                }
                j = write_json(tape, j, out);
                out.push(b':');
                j = write_json(tape, j, out);
            }
            out.push(b'}');
            j
        }
        Node::Array { len, .. } => {
            out.push(b'[');
            let mut j = i + 1;
            for n in 0..len {
                if n > 0 {
                    out.push(b',');
                }
                j = write_json(tape, j, out);
            }
            out.push(b']');
            j
        }
    }
}

fn write_static(s: StaticNode, out: &mut Vec<u8>) {
    let _ = match s {
        StaticNode::I64(v) => write!(out, "{v}"),
        StaticNode::U64(v) => write!(out, "{v}"),
        StaticNode::F64(v) => write!(out, "{v}"),
        StaticNode::Bool(v) => write!(out, "{v}"),
        StaticNode::Null => write!(out, "null"),
        #[allow(unreachable_patterns)]
        _ => write!(out, "null"),
    };
}

/// Records the value at `i` under `key`. Nulls are not extracted (as in Promtail).
fn record(tape: &[Node<'_>], i: usize, key: Name, sink: &mut ExtractSink<'_>, input_ptr: usize, line: Option<&[u8]>) {
    match tape[i] {
        Node::String(s) => {
            let origin = line.and_then(|line| {
                let off = (s.as_ptr() as usize).checked_sub(input_ptr)?;
                (line.get(off..off + s.len()) == Some(s.as_bytes())).then_some(off as u32)
            });
            sink.value_with(key, origin, |buf| buf.extend_from_slice(s.as_bytes()));
        }
        Node::Static(StaticNode::Null) => {}
        Node::Static(st) => sink.value_with(key, None, |buf| write_static(st, buf)),
        Node::Object { .. } | Node::Array { .. } => sink.value_with(key, None, |buf| {
            write_json(tape, i, buf);
        }),
    }
}

impl JsonStage {
    pub fn new(source: Option<String>, exprs: Vec<JsonExpr>, drop_malformed: Option<(Dropped, Counter)>) -> Self {
        let mut by_first_key: Vec<(String, Vec<usize>)> = Vec::new();
        for (i, expr) in exprs.iter().enumerate() {
            // A path starting with an index can never match: the line must be an object.
            let Some(Segment::Key(first)) = expr.path.first() else { continue };
            match by_first_key.iter_mut().find(|(k, _)| k == first) {
                Some((_, indexes)) => indexes.push(i),
                None => by_first_key.push((first.clone(), vec![i])),
            }
        }
        let top_level_only = exprs.iter().all(|e| e.path.len() == 1);
        JsonStage { source, exprs, by_first_key, top_level_only, drop_malformed }
    }

    /// The expressions whose path starts with `key`. Most keys of a line are wanted by none: their
    /// length, first or last byte tells, without a call to compare them whole.
    #[inline]
    fn wanted(&self, key: &[u8]) -> Option<&[usize]> {
        let found = self.by_first_key.iter().find(|(k, _)| {
            let k = k.as_bytes();
            k.len() == key.len() && k.first() == key.first() && k.last() == key.last() && k == key
        });
        found.map(|(_, indexes)| indexes.as_slice())
    }

    pub fn apply(&self, w: &mut Work, info: &StageInfo) -> Flow {
        let parsed = match self.walk_line(w) {
            Some(parsed) => parsed,
            None => match self.parse_with_tape(w) {
                Some(parsed) => parsed,
                None => return Flow::Continue,
            },
        };
        if parsed {
            return Flow::Continue;
        }
        match &self.drop_malformed {
            Some((dropped, counter)) => {
                counter.inc();
                Flow::Drop(dropped.clone())
            }
            None => {
                info.error(|| "not a JSON object".into());
                Flow::Continue
            }
        }
    }

    /// The fast path: the line's top-level members walked in place ([`json_object::members`],
    /// which accepts what simd-json accepts) and the wanted values sliced out, with no tape.
    /// Whether the line was a JSON object, or `None` when the tape must decide: a `source`
    /// (its value lives in the buffer that values are written to), a path below the top level,
    /// a wanted value that is an object or an array, an escaped key, or an integer too long to
    /// print as written.
    fn walk_line(&self, w: &mut Work) -> Option<bool> {
        if self.source.is_some() || !self.top_level_only {
            return None;
        }
        let (_, mut sink, line) = w.json_parts();
        let mut found: SmallVec<[(Target<'_>, Found<'_>); 16]> = SmallVec::new();
        let mut needs_tape = false;
        let object = json_object::members(line, |key, value| {
            if key.escaped || needs_tape {
                needs_tape = true;
                return;
            }
            if self.exprs.is_empty() {
                match Found::from_raw(value) {
                    Some(value) => found.push((Target::Key(key.content), value)),
                    None => needs_tape = true,
                }
            } else if let Some(indexes) = self.wanted(key.content) {
                match Found::from_raw(value) {
                    Some(value) => found.extend(indexes.iter().map(|&e| (Target::Expr(self.exprs[e].name), value))),
                    None => needs_tape = true,
                }
            }
        });
        if !object {
            return Some(false);
        }
        if needs_tape {
            return None;
        }
        for (target, value) in found {
            let name = match target {
                Target::Key(key) => sink.name(key),
                Target::Expr(name) => Name::Static(name),
            };
            match value {
                Found::Verbatim { content, at } => {
                    sink.value_with(name, Some(at as u32), |buf| buf.extend_from_slice(content))
                }
                Found::Escaped(content) => sink.value_with(name, None, |buf| {
                    // The walk checked every escape: this cannot fail.
                    let _ = unescape_into(content, buf);
                }),
                Found::Text(text) => sink.value_with(name, None, |buf| buf.extend_from_slice(text)),
                Found::Float(v) => sink.value_with(name, None, |buf| {
                    let _ = write!(buf, "{v}");
                }),
                Found::Null => {}
            }
        }
        Some(true)
    }

    /// The general path: simd-json's tape of the whole value. Whether it was a JSON object, or
    /// `None` when the `source` key was never extracted.
    fn parse_with_tape(&self, w: &mut Work) -> Option<bool> {
        let len = w.load_json_input(self.source.as_deref())?;
        let from_line = self.source.is_none();
        let (json, mut sink, line) = w.json_parts();
        let input_ptr = json.input.as_ptr() as usize;
        let mut tape = json.tape.take().unwrap_or_else(|| simd_json::Tape::null().reset());
        let parsed = simd_json::fill_tape_padded(&mut json.input, len, &mut json.buffers, &mut tape);
        let ok = parsed.is_ok() && matches!(tape.0.first(), Some(Node::Object { .. }));
        if ok {
            let nodes = &tape.0;
            let line = from_line.then_some(&line[..]);
            if self.exprs.is_empty() {
                let Some(Node::Object { len: keys, .. }) = nodes.first() else { unreachable!("checked above") };
                let mut j = 1;
                for _ in 0..*keys {
                    let Node::String(k) = nodes[j] else { break };
                    let key = sink.name(k.as_bytes());
                    record(nodes, j + 1, key, &mut sink, input_ptr, line);
                    j = skip(nodes, j + 1);
                }
            } else if let Some(Node::Object { len: keys, .. }) = nodes.first() {
                let mut j = 1;
                for _ in 0..*keys {
                    let Node::String(key) = nodes[j] else { break };
                    let value = j + 1;
                    if let Some(indexes) = self.wanted(key.as_bytes()) {
                        for &e in indexes {
                            let expr = &self.exprs[e];
                            if let Some(i) = lookup(nodes, value, &expr.path[1..]) {
                                record(nodes, i, Name::Static(expr.name), &mut sink, input_ptr, line);
                            }
                        }
                    }
                    j = skip(nodes, value);
                }
            }
        }
        json.tape = Some(tape.reset());
        Some(ok)
    }
}

/// Where the fast path files a value: under the member's own key, or an expression's name.
enum Target<'a> {
    Key(&'a [u8]),
    Expr(ConfigStr),
}

/// A wanted value as the fast path records it: what the tape path would record for it.
#[derive(Clone, Copy)]
enum Found<'a> {
    /// String content without escapes, at this offset in the line.
    Verbatim { content: &'a [u8], at: usize },
    /// String content with (checked) escapes.
    Escaped(&'a [u8]),
    /// Text recorded as it is: an integer as written (`-0` as `0`), `true`, `false`.
    Text(&'a [u8]),
    /// A number with a fraction or an exponent: printed from its `f64`, as simd-json's is.
    Float(f64),
    /// `null`: not recorded (as in Promtail).
    Null,
}

impl<'a> Found<'a> {
    /// `None` when only the tape can say: an object or an array, or an integer too long to be
    /// sure of without parsing it as simd-json does.
    fn from_raw(value: RawValue<'a>) -> Option<Self> {
        Some(match value {
            RawValue::String { content, at, escaped: false } => Found::Verbatim { content, at },
            RawValue::String { content, escaped: true, .. } => Found::Escaped(content),
            RawValue::Number(text) if text.iter().any(|b| matches!(b, b'.' | b'e' | b'E')) => {
                Found::Float(std::str::from_utf8(text).ok()?.parse().ok()?)
            }
            RawValue::Number(b"-0") => Found::Text(b"0"),
            RawValue::Number(text) if text.len() <= 18 => Found::Text(text),
            RawValue::Bool(true) => Found::Text(b"true"),
            RawValue::Bool(false) => Found::Text(b"false"),
            RawValue::Null => Found::Null,
            RawValue::Number(_) | RawValue::Nested => return None,
        })
    }
}

/// `logfmt`: `key=value key2="quoted value"` pairs.
pub(crate) struct LogfmtStage {
    pub source: Option<String>,
    /// (extracted name, logfmt key); empty: every key under its own name.
    pub mapping: Vec<(ConfigStr, String)>,
}

/// Splits logfmt text into (key, value, value offset, value was quoted with escapes).
fn logfmt_pairs(text: &[u8], mut f: impl FnMut(&[u8], &[u8], usize, bool)) -> bool {
    let mut i = 0;
    let mut any = false;
    let mut unquoted = Vec::new();
    while i < text.len() {
        while i < text.len() && text[i].is_ascii_whitespace() {
            i += 1;
        }
        let key_start = i;
        while i < text.len() && !text[i].is_ascii_whitespace() && text[i] != b'=' {
            i += 1;
        }
        let key = &text[key_start..i];
        if key.is_empty() {
            if i < text.len() {
                return false;
            }
            break;
        }
        if text.get(i) != Some(&b'=') {
            f(key, b"", i, false);
            any = true;
            continue;
        }
        i += 1;
        if text.get(i) == Some(&b'"') {
            let start = i + 1;
            let Some((end, escaped)) = crate::formats::json_string::scan_string(text, start) else {
                return false;
            };
            if escaped {
                unquoted.clear();
                if crate::formats::json_string::unescape_into(&text[start..end], &mut unquoted).is_none() {
                    return false;
                }
                f(key, &unquoted, start, true);
            } else {
                f(key, &text[start..end], start, false);
            }
            i = end + 1;
        } else {
            let start = i;
            while i < text.len() && !text[i].is_ascii_whitespace() {
                i += 1;
            }
            f(key, &text[start..i], start, false);
        }
        any = true;
    }
    any
}

impl LogfmtStage {
    pub fn apply(&self, w: &mut Work, info: &StageInfo) -> Flow {
        let Some(text) = w.source_value(self.source.as_deref()) else {
            return Flow::Continue;
        };
        let text = text.to_vec();
        let from_line = self.source.is_none();
        let mut sink = w.sink();
        let ok = logfmt_pairs(&text, |key, value, at, escaped| {
            let origin = (from_line && !escaped).then_some(at as u32);
            if self.mapping.is_empty() {
                let name = sink.name(key);
                sink.value_with(name, origin, |buf| buf.extend_from_slice(value));
            } else {
                for (name, wanted) in &self.mapping {
                    if wanted.as_bytes() == key {
                        sink.value_with(Name::Static(*name), origin, |buf| buf.extend_from_slice(value));
                    }
                }
            }
        });
        if !ok {
            info.error(|| "not logfmt".into());
        }
        Flow::Continue
    }
}

/// `regex`: named capture groups become extracted values.
pub(crate) struct RegexStage {
    pub source: Option<String>,
    pub regex: Regex,
    pub names: Vec<(usize, ConfigStr)>,
}

impl RegexStage {
    pub fn apply(&self, w: &mut Work, info: &StageInfo) -> Flow {
        let Some(text) = w.source_value(self.source.as_deref()) else {
            return Flow::Continue;
        };
        let text = bytes::Bytes::copy_from_slice(text);
        let Some(caps) = self.regex.captures(&text) else {
            info.error(|| "regex did not match".into());
            return Flow::Continue;
        };
        let from_line = self.source.is_none();
        let mut sink = w.sink();
        for (index, name) in &self.names {
            if let Some(m) = caps.get(*index) {
                let origin = from_line.then_some(m.start() as u32);
                sink.value_with(Name::Static(*name), origin, |buf| buf.extend_from_slice(m.as_bytes()));
            }
        }
        Flow::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::super::work::test_work;
    use super::*;

    #[test]
    fn json_paths() {
        use Segment::*;
        assert_eq!(parse_json_path("a.b").unwrap(), [Key("a".into()), Key("b".into())]);
        assert_eq!(
            parse_json_path(r#"items[0]."a.b"[-1]"#).unwrap(),
            [Key("items".into()), Index(0), Key("a.b".into()), Index(-1)]
        );
        for bad in ["", "a.", "a[x]", "a[?b==1]", "length(a)", "a || b", "a.*"] {
            assert!(parse_json_path(bad).is_err(), "{bad}");
        }
    }

    fn stage(exprs: &[&str]) -> JsonStage {
        let exprs =
            exprs.iter().map(|e| JsonExpr { name: ConfigStr::new(e), path: parse_json_path(e).unwrap() }).collect();
        JsonStage::new(None, exprs, None)
    }

    /// What the fast path and the tape make of `line`: (was an object, extracted list), or
    /// `None` for the fast path when it hands the line to the tape.
    type Outcome = (bool, Vec<(Vec<u8>, Vec<u8>, Option<u32>)>);

    fn both_paths(stage: &JsonStage, line: &str) -> (Option<Outcome>, Outcome) {
        let mut fast = test_work(line);
        let walked = stage.walk_line(&mut fast).map(|ok| (ok, fast.extracted_list()));
        let mut tape = test_work(line);
        let parsed = stage.parse_with_tape(&mut tape).unwrap();
        (walked, (parsed, tape.extracted_list()))
    }

    #[test]
    fn the_fast_path_extracts_what_the_tape_does() {
        let wanted = stage(&["a", "n", "b", "z", "missing"]);
        let every = stage(&[]);
        for line in [
            r#"{"a":"x\"y","n":-0,"b":true,"z":null,"other":{"a":1}}"#,
            r#"{"n":12.50,"a":"\u00e9\ud83d\ude00","b":false}"#,
            r#"{"n":1e2,"a":"plain"}"#,
            r#"{"n":-0.0}"#,
            r#"{"n":123456789012345678,"a":"dup","a":"second"}"#,
            r#"  {"a" : "spaced" , "n" : 5 }  "#,
            r#"{"a":"x"} trailing"#,
            r#"[1,2]"#,
        ] {
            let (walked, taped) = both_paths(&wanted, line);
            assert_eq!(walked, Some(taped), "{line}");
            // Every key wanted: a nested value is the tape's to print.
            let (walked, taped) = both_paths(&every, line);
            if line.contains(r#"{"a":1}"#) {
                assert_eq!(walked, None);
            } else {
                assert_eq!(walked, Some(taped), "{line}");
            }
        }
        // Lines the fast path leaves to the tape.
        for (stage, line) in [
            (&wanted, r#"{"a":{"b":1}}"#),
            (&wanted, r#"{"n":1234567890123456789}"#),
            (&wanted, r#"{"\u0061":"escaped key"}"#),
            (&every, r#"{"o":[1]}"#),
        ] {
            assert_eq!(both_paths(stage, line).0, None, "{line}");
        }
        let nested = stage(&["a.b"]);
        assert_eq!(both_paths(&nested, r#"{"a":{"b":"deep"}}"#).0, None);
    }

    proptest::proptest! {
        #[test]
        fn fast_and_tape_paths_agree(
            members in proptest::collection::vec(
                (
                    proptest::sample::select(vec!["a", "n", "b", "z", "x\\\"y", "\\u0061"]),
                    proptest::sample::select(vec![
                        "\"v\"", "\"\\\"q\\\"\"", "\"\\u00e9\"", "0", "-0", "17", "-3.25", "1e-3", "2.5E+3", "-0.0",
                        "18446744073709551615", "9223372036854775808", "1e400", "true", "false", "null", "[]", "{\"a\":[1]}",
                        "\"\\ud800\"", "01",
                    ]),
                ),
                0..6,
            ),
            exprs in proptest::sample::subsequence(vec!["a", "n", "b", "z"], 0..4),
        ) {
            let line = format!("{{{}}}", members.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect::<Vec<_>>().join(","));
            let stage = stage(&exprs);
            let (walked, taped) = both_paths(&stage, &line);
            if let Some(walked) = walked {
                proptest::prop_assert_eq!(walked, taped, "{}", line);
            }
        }
    }

    #[test]
    fn logfmt_splitting() {
        let mut got = Vec::new();
        assert!(logfmt_pairs(br#"level=info msg="hello \"world\"" flag dur=1.5s"#, |k, v, at, esc| {
            got.push((String::from_utf8_lossy(k).into_owned(), String::from_utf8_lossy(v).into_owned(), at, esc));
        }));
        assert_eq!(got[0], ("level".into(), "info".into(), 6, false));
        assert_eq!(got[1].1, "hello \"world\"");
        assert!(got[1].3);
        assert_eq!(got[2], ("flag".into(), "".into(), 37, false));
        assert_eq!(got[3].1, "1.5s");
        assert!(!logfmt_pairs(b"=x", |_, _, _, _| {}));
    }
}
