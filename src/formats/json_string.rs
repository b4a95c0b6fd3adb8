//! JSON string scanning, unescaping and escaping: the pieces the envelope parsers and the JSON
//! writers share. Works on bytes; invalid input gives `None`, never a panic.

/// Finds the end of the JSON string whose content starts at `start` (just after the opening
/// quote). Returns the index of the closing quote and whether the content holds escapes.
pub fn scan_string(input: &[u8], start: usize) -> Option<(usize, bool)> {
    let mut i = start;
    let mut escapes = false;
    loop {
        let rel = memchr::memchr2(b'"', b'\\', input.get(i..)?)?;
        i += rel;
        if input[i] == b'"' {
            return Some((i, escapes));
        }
        escapes = true;
        i += 2;
    }
}

fn hex4(b: &[u8]) -> Option<u32> {
    let mut v = 0u32;
    for &c in b.get(..4)? {
        v = v * 16 + (c as char).to_digit(16)?;
    }
    Some(v)
}

/// Appends the unescaped form of raw JSON string content (between the quotes) to `out`.
/// Invalid escapes give `None` (what was appended so far stays). A lone surrogate becomes U+FFFD,
/// as Go's decoder does.
pub fn unescape_into<B: bytes::BufMut>(raw: &[u8], out: &mut B) -> Option<()> {
    let mut i = 0;
    while i < raw.len() {
        let Some(rel) = memchr::memchr(b'\\', &raw[i..]) else {
            out.put_slice(&raw[i..]);
            return Some(());
        };
        out.put_slice(&raw[i..i + rel]);
        i += rel + 1;
        let c = *raw.get(i)?;
        i += 1;
        match c {
            b'"' => out.put_u8(b'"'),
            b'\\' => out.put_u8(b'\\'),
            b'/' => out.put_u8(b'/'),
            b'b' => out.put_u8(8),
            b'f' => out.put_u8(12),
            b'n' => out.put_u8(b'\n'),
            b'r' => out.put_u8(b'\r'),
            b't' => out.put_u8(b'\t'),
            b'u' => {
                let mut code = hex4(raw.get(i..)?)?;
                i += 4;
                if (0xD800..0xDC00).contains(&code) {
                    let low = (raw.get(i..i + 2) == Some(b"\\u")).then(|| hex4(raw.get(i + 2..)?)).flatten();
                    match low {
                        Some(low) if (0xDC00..0xE000).contains(&low) => {
                            code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00);
                            i += 6;
                        }
                        _ => code = 0xFFFD,
                    }
                } else if (0xDC00..0xE000).contains(&code) {
                    code = 0xFFFD;
                }
                let ch = char::from_u32(code).unwrap_or('\u{FFFD}');
                let mut buf = [0u8; 4];
                out.put_slice(ch.encode_utf8(&mut buf).as_bytes());
            }
            _ => return None,
        }
    }
    Some(())
}

/// Appends `s` as a JSON string (with quotes) to `out`. Invalid UTF-8 becomes U+FFFD.
pub fn escape_into(s: &[u8], out: &mut Vec<u8>) {
    out.push(b'"');
    for chunk in s.utf8_chunks() {
        let valid = chunk.valid().as_bytes();
        let mut start = 0;
        for (i, &b) in valid.iter().enumerate() {
            let esc: &[u8] = match b {
                b'"' => b"\\\"",
                b'\\' => b"\\\\",
                b'\n' => b"\\n",
                b'\r' => b"\\r",
                b'\t' => b"\\t",
                0..=0x1f => b"",
                _ => continue,
            };
            out.extend_from_slice(&valid[start..i]);
            if esc.is_empty() {
                out.extend_from_slice(format!("\\u{b:04x}").as_bytes());
            } else {
                out.extend_from_slice(esc);
            }
            start = i + 1;
        }
        out.extend_from_slice(&valid[start..]);
        if !chunk.invalid().is_empty() {
            out.extend_from_slice("\u{FFFD}".as_bytes());
        }
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn unescape(raw: &str) -> Option<String> {
        let mut out = Vec::new();
        unescape_into(raw.as_bytes(), &mut out)?;
        Some(String::from_utf8(out).unwrap())
    }

    #[test]
    fn unescapes_every_form() {
        assert_eq!(unescape(r#"a\"b\\c\/d\n\t\r"#).unwrap(), "a\"b\\c/d\n\t\r");
        assert_eq!(unescape(r"\u003cdiv\u003e \u00e9 \ud83d\ude00").unwrap(), "<div> é 😀");
        assert_eq!(unescape(r"\ud83d x").unwrap(), "\u{FFFD} x");
        assert_eq!(unescape(r"\x"), None);
        assert_eq!(unescape(r"\u12"), None);
        assert_eq!(unescape("\\"), None);
    }

    #[test]
    fn scans_to_the_closing_quote() {
        assert_eq!(scan_string(br#""abc","#, 1), Some((4, false)));
        assert_eq!(scan_string(br#""a\"c","#, 1), Some((5, true)));
        assert_eq!(scan_string(br#""a\\"#, 1), None);
        assert_eq!(scan_string(br#""abc"#, 1), None);
    }

    proptest! {
        #[test]
        fn escape_then_unescape_round_trips(s in ".*") {
            let mut escaped = Vec::new();
            escape_into(s.as_bytes(), &mut escaped);
            let parsed: String = serde_json::from_slice(&escaped).unwrap();
            prop_assert_eq!(&parsed, &s);
            let mut out = Vec::new();
            unescape_into(&escaped[1..escaped.len() - 1], &mut out).unwrap();
            prop_assert_eq!(out, s.as_bytes());
        }

        #[test]
        fn never_panics(raw in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut out = Vec::new();
            let _ = unescape_into(&raw, &mut out);
            let _ = scan_string(&raw, 0);
        }
    }
}
