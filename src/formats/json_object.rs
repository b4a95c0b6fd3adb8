//! A validating walk over the top-level members of a JSON object that decodes nothing it is
//! not asked for: the `json` stage's fast path.
//!
//! Contract: [`members`] accepts exactly the texts that simd-json parses into an object (same
//! grammar, same UTF-8 check, same escape rules, same depth limit; checked against simd-json by
//! the property tests below), and reports each top-level member in document order. Values are
//! returned raw (string content between the quotes, number text as written); nested objects and
//! arrays are validated and skipped. `f` may have been called for some members before a later
//! error is found: a caller that gets `false` must discard what it collected.
//!
//! Why it exists: a pipeline usually wants a handful of top-level fields of a ~300-byte line.
//! simd-json builds a tape of every value and unescapes every string first; walking the text
//! once and slicing out the wanted values took 12–20% off the criterion `end_to_end` pipeline
//! (`docker` + `json` + `labels`).

use super::json_string::{escapes_valid, map_quotes_and_backslashes, scan_string};

/// simd-json's default limit on nested objects and arrays (the top-level object included).
const MAX_DEPTH: usize = 1024;

/// A top-level member's value, undecoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RawValue<'a> {
    /// The content between the quotes, its offset in the text, and whether it holds escapes
    /// (valid ones: checked).
    String {
        content: &'a [u8],
        at: usize,
        escaped: bool,
    },
    /// A number as written (valid JSON number syntax).
    Number(&'a [u8]),
    Bool(bool),
    Null,
    /// An object or an array.
    Nested,
}

/// A member's key: its content between the quotes, and whether it holds escapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawKey<'a> {
    pub content: &'a [u8],
    pub escaped: bool,
}

/// Calls `f` for each top-level member of `text`, in order, and returns whether the whole of
/// `text` is a valid JSON object (surrounding whitespace allowed). See the module's contract.
pub fn members<'a>(text: &'a [u8], mut f: impl FnMut(RawKey<'a>, RawValue<'a>)) -> bool {
    if simdutf8::basic::from_utf8(text).is_err() {
        return false;
    }
    let mut specials = [0u64; SPECIALS_WORDS];
    let mapped = text.len() <= SPECIALS_WORDS * 64;
    if mapped {
        map_quotes_and_backslashes(text, &mut specials);
    }
    walk(&mut Cursor { text, i: 0, specials: mapped.then_some(&specials) }, &mut f).is_some()
}

/// Texts up to this many 64-byte words long get a map of their quotes and backslashes (on the
/// stack); longer ones, rare, are scanned string by string.
const SPECIALS_WORDS: usize = 32;

fn walk<'a>(c: &mut Cursor<'a, '_>, f: &mut impl FnMut(RawKey<'a>, RawValue<'a>)) -> Option<()> {
    c.ws();
    c.expect(b'{')?;
    c.ws();
    if c.peek()? == b'}' {
        c.i += 1;
    } else {
        loop {
            let key = c.key()?;
            let value = c.value()?;
            f(key, value);
            c.ws();
            match c.next()? {
                b',' => c.ws(),
                b'}' => break,
                _ => return None,
            }
        }
    }
    c.ws();
    (c.i == c.text.len()).then_some(())
}

struct Cursor<'a, 'm> {
    text: &'a [u8],
    i: usize,
    /// The map of quotes and backslashes ([`map_quotes_and_backslashes`]), when the text is short enough.
    specials: Option<&'m [u64; SPECIALS_WORDS]>,
}

impl<'a> Cursor<'a, '_> {
    #[inline(always)]
    fn peek(&self) -> Option<u8> {
        self.text.get(self.i).copied()
    }

    #[inline(always)]
    fn next(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.i += 1;
        Some(b)
    }

    #[inline(always)]
    fn expect(&mut self, b: u8) -> Option<()> {
        (self.next()? == b).then_some(())
    }

    #[inline(always)]
    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.i += 1;
        }
    }

    /// A string at `i` (its opening quote): content, offset of the content, escaped.
    #[inline(always)]
    fn string(&mut self) -> Option<(&'a [u8], usize, bool)> {
        self.expect(b'"')?;
        let start = self.i;
        let (end, escaped) = match self.specials {
            Some(specials) => string_end(self.text, specials, start)?,
            None => scan_string(self.text, start)?,
        };
        let content = &self.text[start..end];
        if escaped && !escapes_valid(content) {
            return None;
        }
        self.i = end + 1;
        Some((content, start, escaped))
    }

    /// `"key"` then `:`, leaving `i` at the value.
    #[inline(always)]
    fn key(&mut self) -> Option<RawKey<'a>> {
        let (content, _, escaped) = self.string()?;
        self.ws();
        self.expect(b':')?;
        self.ws();
        Some(RawKey { content, escaped })
    }

    #[inline(always)]
    fn value(&mut self) -> Option<RawValue<'a>> {
        Some(match self.peek()? {
            b'"' => {
                let (content, at, escaped) = self.string()?;
                RawValue::String { content, at, escaped }
            }
            b'{' | b'[' => {
                self.nested()?;
                RawValue::Nested
            }
            _ => self.scalar()?,
        })
    }

    /// A number or a literal.
    #[inline(always)]
    fn scalar(&mut self) -> Option<RawValue<'a>> {
        let start = self.i;
        let value = match self.peek()? {
            b't' => self.literal(b"true", RawValue::Bool(true))?,
            b'f' => self.literal(b"false", RawValue::Bool(false))?,
            b'n' => self.literal(b"null", RawValue::Null)?,
            _ => {
                self.number()?;
                RawValue::Number(&self.text[start..self.i])
            }
        };
        Some(value)
    }

    #[inline(always)]
    fn literal(&mut self, word: &[u8], value: RawValue<'a>) -> Option<RawValue<'a>> {
        let end = self.i + word.len();
        (self.text.get(self.i..end)? == word).then(|| {
            self.i = end;
            value
        })
    }

    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`, in simd-json's range: an integer must
    /// fit an `i64` (negative) or a `u64`, a float must not overflow to infinity.
    #[inline(always)]
    fn number(&mut self) -> Option<()> {
        let start = self.i;
        let negative = self.peek() == Some(b'-');
        if negative {
            self.i += 1;
        }
        match self.next()? {
            b'0' => {}
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        let mut float = false;
        if self.peek() == Some(b'.') {
            self.i += 1;
            self.some_digits()?;
            float = true;
        }
        let mut exponent = false;
        if let Some(b'e' | b'E') = self.peek() {
            self.i += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.i += 1;
            }
            self.some_digits()?;
            exponent = true;
        }
        let text = &self.text[start..self.i];
        // Short texts without an exponent are in range whatever their digits: no parse on the
        // common path.
        let short = match (exponent, float) {
            (true, _) => false,
            (false, true) => text.len() <= 300,
            (false, false) => text.len() - usize::from(negative) <= 18,
        };
        if short {
            return Some(());
        }
        long_number_in_range(text, negative, float || exponent).then_some(())
    }

    #[inline(always)]
    fn digits(&mut self) {
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.i += 1;
        }
    }

    #[inline(always)]
    fn some_digits(&mut self) -> Option<()> {
        let start = self.i;
        self.digits();
        (self.i > start).then_some(())
    }

    /// The object or array at `i`, checked to its end without recursion (the top-level object
    /// counts towards [`MAX_DEPTH`]).
    #[inline(never)]
    fn nested(&mut self) -> Option<()> {
        // The closing byte of each open container, innermost last.
        let mut open: smallvec::SmallVec<[u8; 16]> = smallvec::SmallVec::new();
        'value: loop {
            match self.peek()? {
                b @ (b'{' | b'[') => {
                    if open.len() + 1 >= MAX_DEPTH {
                        return None;
                    }
                    self.i += 1;
                    self.ws();
                    let close = if b == b'{' { b'}' } else { b']' };
                    if self.peek()? == close {
                        self.i += 1;
                    } else {
                        open.push(close);
                        if close == b'}' {
                            self.key()?;
                        }
                        continue 'value;
                    }
                }
                b'"' => {
                    self.string()?;
                }
                _ => {
                    self.scalar()?;
                }
            }
            // After a value: close what ends here, or go on after a comma.
            loop {
                let Some(&close) = open.last() else { return Some(()) };
                self.ws();
                match self.next()? {
                    b',' => {
                        self.ws();
                        if close == b'}' {
                            self.key()?;
                        }
                        continue 'value;
                    }
                    b if b == close => {
                        open.pop();
                    }
                    _ => return None,
                }
            }
        }
    }
}

/// [`scan_string`] through the map of quotes and backslashes: the index of the closing quote of
/// the string whose content starts at `start`, and whether the content holds escapes.
#[inline(always)]
fn string_end(text: &[u8], specials: &[u64; SPECIALS_WORDS], start: usize) -> Option<(usize, bool)> {
    let mut i = start;
    let mut escaped = false;
    while i < text.len() {
        let word = specials[i / 64] >> (i % 64);
        if word == 0 {
            i = (i / 64 + 1) * 64;
            continue;
        }
        let at = i + word.trailing_zeros() as usize;
        // Bytes past the text's end are zero in the map: `at` is inside the text.
        if text[at] == b'"' {
            return Some((at, escaped));
        }
        escaped = true;
        i = at + 2;
    }
    None
}

/// Whether a long number (the rare case) is in simd-json's range; see [`Cursor::number`].
#[cold]
fn long_number_in_range(text: &[u8], negative: bool, float: bool) -> bool {
    let Ok(text) = std::str::from_utf8(text) else { return false };
    match (float, negative) {
        (true, _) => text.parse::<f64>().is_ok_and(f64::is_finite),
        (false, true) => text.parse::<i64>().is_ok(),
        (false, false) => text.parse::<u64>().is_ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn collect(text: &str) -> Option<Vec<(String, RawValue<'_>)>> {
        let mut got = Vec::new();
        members(text.as_bytes(), |k, v| got.push((String::from_utf8_lossy(k.content).into_owned(), v))).then_some(got)
    }

    /// What simd-json says: is `text` a JSON object?
    fn simd_json_object(text: &[u8]) -> bool {
        let mut input = text.to_vec();
        matches!(simd_json::to_tape(&mut input), Ok(tape) if matches!(tape.0.first(), Some(simd_json::Node::Object { .. })))
    }

    #[test]
    fn members_in_order_with_raw_values() {
        let got = collect(
            r#" {"a":"x","b\"":"y\nz\u00e9","n":-1.5e3,"t":true,"f":false,"z":null,"o":{"k":[1,{"q":[]}]},"e":[]} "#,
        )
        .unwrap();
        let keys: Vec<&str> = got.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["a", "b\\\"", "n", "t", "f", "z", "o", "e"]);
        assert_eq!(got[0].1, RawValue::String { content: b"x", at: 7, escaped: false });
        assert_eq!(got[1].1, RawValue::String { content: br"y\nz\u00e9", at: 17, escaped: true });
        assert_eq!(got[2].1, RawValue::Number(b"-1.5e3"));
        assert_eq!(got[3].1, RawValue::Bool(true));
        assert_eq!(got[4].1, RawValue::Bool(false));
        assert_eq!(got[5].1, RawValue::Null);
        assert_eq!(got[6].1, RawValue::Nested);
        assert_eq!(got[7].1, RawValue::Nested);
        assert_eq!(collect("{}").unwrap(), []);
        assert_eq!(collect(" {\n}\t").unwrap(), []);
    }

    #[test]
    fn invalid_texts_are_refused_like_simd_json() {
        for bad in [
            "",
            "[]",
            "\"a\"",
            "1",
            "{",
            "{\"a\"}",
            "{\"a\":}",
            "{\"a\":1,}",
            "{,}",
            "{\"a\":1 \"b\":2}",
            "{\"a\":01}",
            "{\"a\":1.}",
            "{\"a\":.5}",
            "{\"a\":1e}",
            "{\"a\":-}",
            "{\"a\":tru}",
            "{\"a\":nul}",
            "{\"a\":\"\\x\"}",
            "{\"a\":\"\\u12\"}",
            "{\"a\":\"\\ud800\"}",
            "{\"a\":\"\\udc00\"}",
            "{\"a\":\"\\ud800\\u0041\"}",
            "{\"a\":[1,]}",
            "{\"a\":[1 2]}",
            "{\"a\":{\"b\":1,}}",
            "{\"a\":{1:2}}",
            "{\"a\":[}",
            "{\"a\":{]}",
            "{\"a\":1}x",
            "{\"a\":1}{}",
            "{\"a\":\"unterminated}",
        ] {
            assert!(collect(bad).is_none(), "{bad:?}");
            assert!(!simd_json_object(bad.as_bytes()), "simd-json accepts {bad:?}");
        }
        assert!(!members(b"{\"a\":\"\xff\"}", |_, _| {}));
    }

    #[test]
    fn the_depth_limit_is_simd_json_s() {
        for depth in [1023, 1024, 1025] {
            // `depth` containers in all, the top-level object included.
            let text = format!("{{\"a\":{}1{}}}", "[".repeat(depth - 1), "]".repeat(depth - 1));
            assert_eq!(collect(&text).is_some(), simd_json_object(text.as_bytes()), "depth {depth}");
        }
        assert!(collect(&format!("{{\"a\":{}1{}}}", "[".repeat(1023), "]".repeat(1023))).is_some());
    }

    /// Numbers at the edges of simd-json's range, on both sides.
    const RANGE_EDGES: [&str; 5] =
        ["18446744073709551615", "18446744073709551616", "-9223372036854775809", "2e308", "1e-400"];

    /// JSON-ish text: fragments that are valid and invalid in every position.
    fn jsonish() -> impl Strategy<Value = String> {
        let fragment = prop::sample::select(
            vec![
                "{",
                "}",
                "[",
                "]",
                ",",
                ":",
                "\"",
                "\"k\"",
                "\"v\"",
                "\"a\\\"b\"",
                "\"\\u00e9\"",
                "\"\\ud83d\\ude00\"",
                "\"\\ud800\"",
                "\"\\q\"",
                "\\",
                "1",
                "-0",
                "01",
                "1.5",
                "1e9",
                "-",
                ".",
                "e",
                "true",
                "false",
                "null",
                "tru",
                " ",
                "\n",
                "\t",
                "é",
                "\u{1}",
                "x",
                "-9223372036854775808",
                "1e308",
            ]
            .into_iter()
            .chain(RANGE_EDGES)
            .collect::<Vec<_>>(),
        );
        prop::collection::vec(fragment, 0..24).prop_map(|parts| parts.concat())
    }

    /// Objects that are valid more often than chance would make them.
    fn object_like() -> impl Strategy<Value = String> {
        let value = prop::sample::select(
            vec![
                "\"v\"",
                "1",
                "-2.5e-3",
                "true",
                "null",
                "[]",
                "{}",
                "[1,\"a\",{\"b\":[null]}]",
                "{\"x\":{\"y\":[]}}",
                "\"a\\\\\\\"b\"",
                "\"\\u0041\"",
                "01",
                "[1,]",
                "\"\\ud800\"",
                "-0",
            ]
            .into_iter()
            .chain(RANGE_EDGES)
            .collect::<Vec<_>>(),
        );
        prop::collection::vec(("[a-z\"\\\\]{0,3}", value, prop::sample::select(vec![",", " , ", ",\n", " "])), 0..6)
            .prop_map(|members| {
                let body: Vec<String> = members.iter().map(|(k, v, _)| format!("\"{k}\":{v}")).collect();
                let sep = members.first().map_or(",", |m| m.2);
                format!("{{{}}}", body.join(sep))
            })
    }

    proptest! {
        #[test]
        fn accepts_what_simd_json_accepts(text in prop_oneof![jsonish(), object_like()]) {
            prop_assert_eq!(members(text.as_bytes(), |_, _| {}), simd_json_object(text.as_bytes()), "{:?}", text);
        }

        /// Strings found through the map (at every offset around its 64-byte words) and, past
        /// its size, string by string, give back what was escaped.
        #[test]
        fn strings_come_back_whole(
            values in prop::collection::vec("[a-z\"\\\\\n\u{e9}]{0,70}", 1..6),
            indent in prop_oneof![0usize..130, 2000usize..2100],
        ) {
            let mut text = " ".repeat(indent).into_bytes();
            text.push(b'{');
            for (k, v) in values.iter().enumerate() {
                if k > 0 {
                    text.push(b',');
                }
                text.extend_from_slice(format!("\"k{k}\":").as_bytes());
                crate::formats::json_string::escape_into(v.as_bytes(), &mut text);
            }
            text.push(b'}');
            let mut got = Vec::new();
            let object = members(&text, |key, value| {
                let RawValue::String { content, .. } = value else { panic!("{value:?}") };
                let mut out = Vec::new();
                crate::formats::json_string::unescape_into(content, &mut out).unwrap();
                got.push((String::from_utf8(key.content.to_vec()).unwrap(), String::from_utf8(out).unwrap()));
            });
            prop_assert!(object);
            let expected: Vec<(String, String)> = values.iter().enumerate().map(|(k, v)| (format!("k{k}"), v.clone())).collect();
            prop_assert_eq!(got, expected);
        }

        #[test]
        fn never_panics_on_bytes(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            members(&bytes, |_, _| {});
        }
    }
}
