//! JSON string scanning, unescaping and escaping: the pieces the envelope parsers and the JSON
//! writers share. Works on bytes; invalid input gives `None`, never a panic.

#[cfg(target_arch = "x86_64")]
mod avx512;

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// Bit 7 of each byte of the result is set where `v` has a zero byte (exact for the lowest
/// one, which is all callers use).
#[inline]
fn zero_bytes(v: u64) -> u64 {
    v.wrapping_sub(ONES) & !v & HIGHS
}

/// The offset of the first `"` or `\` in `s`. Sixteen bytes at a time through SSE2 masks on
/// x86_64, then eight at a time (SWAR): in JSON-in-JSON log lines specials are a few bytes
/// apart, where this beats a general search's per-call cost (memchr's setup).
#[inline]
pub fn find_quote_or_backslash(s: &[u8]) -> Option<usize> {
    let mut i = 0;
    #[cfg(target_arch = "x86_64")]
    while let Some(block) = s.get(i..).and_then(<[u8]>::first_chunk::<BLOCK>) {
        let (backslashes, quotes) = special_masks(block);
        if backslashes | quotes != 0 {
            return Some(i + (backslashes | quotes).trailing_zeros() as usize);
        }
        i += BLOCK;
    }
    while let Some(chunk) = s.get(i..).and_then(<[u8]>::first_chunk::<8>) {
        let v = u64::from_le_bytes(*chunk);
        let hits = zero_bytes(v ^ (ONES * u64::from(b'"'))) | zero_bytes(v ^ (ONES * u64::from(b'\\')));
        if hits != 0 {
            return Some(i + (hits.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    s[i..].iter().position(|&b| b == b'"' || b == b'\\').map(|p| i + p)
}

/// Finds the end of the JSON string whose content starts at `start` (just after the opening
/// quote). Returns the index of the closing quote and whether the content holds escapes.
pub fn scan_string(input: &[u8], start: usize) -> Option<(usize, bool)> {
    let mut i = start;
    let mut escapes = false;
    loop {
        i += find_quote_or_backslash(input.get(i..)?)?;
        if input[i] == b'"' {
            return Some((i, escapes));
        }
        escapes = true;
        i += 2;
    }
}

/// A growable byte buffer that unescaping writes to (`Vec<u8>` or `BytesMut`).
pub trait ByteSink: std::ops::DerefMut<Target = [u8]> {
    /// Grows or shrinks to `len` bytes, new bytes zeroed.
    fn resize_zeroed(&mut self, len: usize);
    fn truncate(&mut self, len: usize);
}

impl ByteSink for Vec<u8> {
    fn resize_zeroed(&mut self, len: usize) {
        self.resize(len, 0)
    }
    fn truncate(&mut self, len: usize) {
        Vec::truncate(self, len)
    }
}

impl ByteSink for bytes::BytesMut {
    fn resize_zeroed(&mut self, len: usize) {
        self.resize(len, 0)
    }
    fn truncate(&mut self, len: usize) {
        bytes::BytesMut::truncate(self, len)
    }
}

/// How a string that [`unescape_string`] read ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unescaped {
    /// Index of the closing quote.
    pub end: usize,
    /// The content ended with an escaped newline (`\\n`), which was not written.
    pub trailing_newline: bool,
}

/// Unescapes the JSON string whose content starts at `start` into `out`, in one pass, up to its
/// closing quote. A final `\\n` is reported rather than written (Docker's line terminator). On
/// `None` (invalid escape, no closing quote) `out` is left as it was.
///
/// `out` first grows by the content's largest possible size (unescaping never lengthens: an
/// escape of 2, 6 or 12 bytes writes 1 to 4) plus [`PADDING`], and shrinks to what was written
/// at the end. In between, writes go to an offset that never passes the read offset, so every
/// store is in bounds.
///
/// JSON inside JSON has a `\\"` every few bytes, so the cost is per escape, not per byte: the
/// content is read in blocks of [`BLOCK`] bytes, each turned once into bit masks of its
/// backslashes and quotes; the escapes of a block are then taken from the masks, and the run
/// before each is copied with one constant-size load and store (the bytes it writes past the
/// run are overwritten next). Near the end of the input the blocks give way to a byte loop.
/// On CPUs with AVX-512 VBMI2 the loop of [`avx512`] runs instead: same results, 64 bytes a step.
pub fn unescape_string<B: ByteSink>(input: &[u8], start: usize, out: &mut B) -> Option<Unescaped> {
    let base = out.len();
    let content = input.get(start..)?;
    out.resize_zeroed(base + content.len() + PADDING);
    #[cfg(target_arch = "x86_64")]
    let result = if avx512::available() {
        // SAFETY: the CPU has the features, and the buffer is `PADDING` longer than `content`.
        unsafe { avx512::unescape_content(content, &mut out[base..]) }
    } else {
        unescape_content(content, &mut out[base..])
    };
    #[cfg(not(target_arch = "x86_64"))]
    let result = unescape_content(content, &mut out[base..]);
    let (written, done) = match result {
        Some((written, end, trailing_newline)) => (written, Some(Unescaped { end: start + end, trailing_newline })),
        None => (0, None),
    };
    out.truncate(base + written);
    done
}

/// The block size of [`unescape_string`]'s portable loop.
const BLOCK: usize = 16;

/// How much longer than the content [`unescape_string`]'s buffer is: room for a whole block
/// written at the last offset (64 bytes: the AVX-512 loop's block).
const PADDING: usize = 64;

/// Bit `k % 64` of `words[k / 64]` is set where `text[k]` is a quote or a backslash: the map a
/// scanner of a whole text builds once, so that finding the end of each string is a bit search.
/// Words past the text's last (`text.len().div_ceil(64)` words) are left as they are; a text
/// longer than `words` holds is mapped as far as they go.
pub fn map_quotes_and_backslashes(text: &[u8], words: &mut [u64]) {
    #[cfg(target_arch = "x86_64")]
    if avx512::available() {
        // SAFETY: the CPU has the features.
        unsafe { avx512::map_quotes_and_backslashes(text, words) };
        return;
    }
    map_portably(text, words);
}

/// [`map_quotes_and_backslashes`] on any CPU.
fn map_portably(text: &[u8], words: &mut [u64]) {
    for (word, chunk) in words.iter_mut().zip(text.chunks(64)) {
        *word = match chunk.try_into() {
            Ok(whole) => quote_or_backslash_mask(whole),
            Err(_) => {
                let mut padded = [0u8; 64];
                padded[..chunk.len()].copy_from_slice(chunk);
                quote_or_backslash_mask(&padded)
            }
        };
    }
}

/// [`map_quotes_and_backslashes`] of one 64-byte word, 16 bytes at a time.
#[inline]
fn quote_or_backslash_mask(chunk: &[u8; 64]) -> u64 {
    let mut mask = 0;
    for (k, block) in chunk.chunks_exact(BLOCK).enumerate() {
        let (backslashes, quotes) = special_masks(block.try_into().expect("chunks_exact gives BLOCK bytes"));
        mask |= u64::from(backslashes | quotes) << (k * BLOCK);
    }
    mask
}

/// Bit `k` of the first mask is set where `block[k]` is a backslash, of the second where it is
/// a quote.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn special_masks(block: &[u8; BLOCK]) -> (u32, u32) {
    use std::arch::x86_64::{__m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_set1_epi8};
    // SAFETY: SSE2 is part of every x86_64 target; the load reads 16 bytes, unaligned, from a
    // 16-byte array.
    let (backslashes, quotes) = unsafe {
        let v = _mm_loadu_si128(block.as_ptr().cast::<__m128i>());
        (
            _mm_movemask_epi8(_mm_cmpeq_epi8(v, _mm_set1_epi8(b'\\' as i8))),
            _mm_movemask_epi8(_mm_cmpeq_epi8(v, _mm_set1_epi8(b'"' as i8))),
        )
    };
    (backslashes as u32, quotes as u32)
}

/// Bit `k` of the first mask is set where `block[k]` is a backslash, of the second where it is
/// a quote.
#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
fn special_masks(block: &[u8; BLOCK]) -> (u32, u32) {
    let (mut backslashes, mut quotes) = (0u32, 0u32);
    for (k, &b) in block.iter().enumerate() {
        backslashes |= u32::from(b == b'\\') << k;
        quotes |= u32::from(b == b'"') << k;
    }
    (backslashes, quotes)
}

/// [`unescape_string`]'s portable loop over the content, into `buf` (at least
/// `content.len() + BLOCK` bytes): (bytes written, index of the closing quote, trailing `\\n`).
#[inline(always)]
fn unescape_content(content: &[u8], buf: &mut [u8]) -> Option<(usize, usize, bool)> {
    let mut i = 0;
    let mut o = 0;
    // Blocks while a whole one is left to read.
    'blocks: while let Some(block) = content.get(i..).and_then(<[u8]>::first_chunk::<BLOCK>) {
        let block_start = i;
        let (backslashes, quotes) = special_masks(block);
        let mut specials = backslashes | quotes;
        loop {
            // The run from `i` to the next special byte (or the block's end).
            let next =
                if specials == 0 { block_start + BLOCK } else { block_start + specials.trailing_zeros() as usize };
            let run = content.get(i..).and_then(<[u8]>::first_chunk::<BLOCK>);
            match run {
                Some(run) => buf.get_mut(o..o + BLOCK)?.copy_from_slice(run),
                None => buf.get_mut(o..o + next - i)?.copy_from_slice(&content[i..next]),
            }
            o += next - i;
            i = next;
            if specials == 0 {
                continue 'blocks;
            }
            match special_at(content, i, buf, o)? {
                Special::End { end, trailing_newline } => return Some((o, end, trailing_newline)),
                Special::Escape { next, written } => {
                    i = next;
                    o += written;
                }
            }
            // Forget the specials the escape covered; past the block, read the next one.
            let consumed = i - block_start;
            if consumed >= BLOCK {
                continue 'blocks;
            }
            specials &= u32::MAX << consumed;
        }
    }
    // The last bytes, one at a time.
    loop {
        let c = *content.get(i)?;
        if c != b'"' && c != b'\\' {
            *buf.get_mut(o)? = c;
            o += 1;
            i += 1;
            continue;
        }
        match special_at(content, i, buf, o)? {
            Special::End { end, trailing_newline } => return Some((o, end, trailing_newline)),
            Special::Escape { next, written } => {
                i = next;
                o += written;
            }
        }
    }
}

/// What the quote or backslash at a read offset of [`unescape_content`] does.
enum Special {
    /// The string ends with the quote at `end`; its content ended with `\\n`, not written, if
    /// `trailing_newline`.
    End { end: usize, trailing_newline: bool },
    /// An escape, decoded into `written` bytes; reading goes on at `next`.
    Escape { next: usize, written: usize },
}

/// Handles the quote or backslash at `content[i]`, writing an escape's bytes at `buf[o..]`.
#[inline(always)]
fn special_at(content: &[u8], i: usize, buf: &mut [u8], o: usize) -> Option<Special> {
    if content[i] == b'"' {
        return Some(Special::End { end: i, trailing_newline: false });
    }
    match content.get(i + 1) {
        Some(&c @ (b'"' | b'\\')) => {
            *buf.get_mut(o)? = c;
            Some(Special::Escape { next: i + 2, written: 1 })
        }
        Some(b'n') if content.get(i + 2) == Some(&b'"') => Some(Special::End { end: i + 2, trailing_newline: true }),
        _ => {
            let (ch, next) = decode_escape(content, i, LoneSurrogate::Replace)?;
            Some(Special::Escape { next, written: ch.encode_utf8(buf.get_mut(o..o + 4)?).len() })
        }
    }
}

/// What [`decode_escape`] makes of a `\u` surrogate that is not half of a pair.
#[derive(Clone, Copy, PartialEq, Eq)]
enum LoneSurrogate {
    /// U+FFFD, as Go's decoder does (the unescapers).
    Replace,
    /// An invalid escape, as simd-json has it (the validator standing for it).
    Refuse,
}

/// Decodes the escape sequence at `i` (a backslash): the character and the index after it.
fn decode_escape(raw: &[u8], i: usize, lone: LoneSurrogate) -> Option<(char, usize)> {
    let c = *raw.get(i + 1)?;
    let mut next = i + 2;
    let ch = match c {
        b'"' => '"',
        b'\\' => '\\',
        b'/' => '/',
        b'b' => '\u{8}',
        b'f' => '\u{c}',
        b'n' => '\n',
        b'r' => '\r',
        b't' => '\t',
        b'u' => {
            let mut code = hex4(raw.get(next..)?)?;
            next += 4;
            if (0xD800..0xDC00).contains(&code) {
                let low = (raw.get(next..next + 2) == Some(b"\\u")).then(|| hex4(raw.get(next + 2..)?)).flatten();
                match low {
                    Some(low) if (0xDC00..0xE000).contains(&low) => {
                        code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00);
                        next += 6;
                    }
                    _ if lone == LoneSurrogate::Refuse => return None,
                    _ => code = 0xFFFD,
                }
            } else if (0xDC00..0xE000).contains(&code) {
                if lone == LoneSurrogate::Refuse {
                    return None;
                }
                code = 0xFFFD;
            }
            char::from_u32(code).unwrap_or('\u{FFFD}')
        }
        _ => return None,
    };
    Some((ch, next))
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
        let (ch, next) = decode_escape(raw, i + rel, LoneSurrogate::Replace)?;
        out.put_slice(ch.encode_utf8(&mut [0; 4]).as_bytes());
        i = next;
    }
    Some(())
}

/// Whether every escape in raw JSON string content is one simd-json accepts: `\"`, `\\`, `\/`,
/// `\b`, `\f`, `\n`, `\r`, `\t`, or `\uXXXX` where a high surrogate is followed by a `\u` low
/// surrogate and no low surrogate stands alone. (The unescapers here are kinder to lone
/// surrogates, as Go's decoder is; a validator must refuse what the parser it stands for refuses.)
pub fn escapes_valid(raw: &[u8]) -> bool {
    let mut i = 0;
    while let Some(rel) = memchr::memchr(b'\\', &raw[i..]) {
        match decode_escape(raw, i + rel, LoneSurrogate::Refuse) {
            Some((_, next)) => i = next,
            None => return false,
        }
    }
    true
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

    /// [`unescape_string`] through the portable loop and, where the CPU has it, the AVX-512
    /// one, which must agree byte for byte (written bytes, end, trailing newline, failure).
    fn unescape_both(input: &[u8], start: usize) -> Option<(Vec<u8>, Unescaped)> {
        type Loop<'a> = &'a dyn Fn(&[u8], &mut [u8]) -> Option<(usize, usize, bool)>;
        let run = |unescape: Loop<'_>| {
            let content = input.get(start..)?;
            let mut buf = vec![0; content.len() + PADDING];
            let (written, end, trailing_newline) = unescape(content, &mut buf)?;
            buf.truncate(written);
            Some((buf, Unescaped { end: start + end, trailing_newline }))
        };
        let portable = run(&|c, b| unescape_content(c, b));
        #[cfg(target_arch = "x86_64")]
        if avx512::available() {
            // SAFETY: the CPU has the features; `run` pads the buffer by `PADDING`.
            let wide = run(&|c, b| unsafe { avx512::unescape_content(c, b) });
            assert_eq!(wide, portable, "AVX-512 and portable loops differ on {:?}", String::from_utf8_lossy(input));
        }
        let mut through_dispatch = Vec::new();
        let done = unescape_string(input, start, &mut through_dispatch);
        assert_eq!(done.map(|d| (through_dispatch, d)), portable);
        portable
    }

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
    fn unescapes_in_one_pass_up_to_the_quote() {
        let mut out = Vec::new();
        let input = br#""a\"b\\c\n","x""#;
        let done = unescape_string(input, 1, &mut out).unwrap();
        assert_eq!((done.end, done.trailing_newline), (10, true));
        assert_eq!(out, b"a\"b\\c");
        out.clear();
        let done = unescape_string(br#""\n x","#, 1, &mut out).unwrap();
        assert_eq!((done.end, done.trailing_newline, &out[..]), (5, false, &b"\n x"[..]));
        assert_eq!(unescape_string(br#""abc"#, 1, &mut Vec::new()), None);
        assert_eq!(unescape_string(br#""\q""#, 1, &mut Vec::new()), None);
    }

    #[test]
    fn finds_specials_at_every_offset() {
        for len in 0..40 {
            for at in 0..len {
                for special in [b'"', b'\\'] {
                    let mut s = vec![b'a'; len];
                    s[at] = special;
                    if at + 1 < len {
                        s[at + 1] = b'"';
                    }
                    assert_eq!(find_quote_or_backslash(&s), Some(at), "len {len} at {at}");
                }
            }
            assert_eq!(find_quote_or_backslash(&vec![0xffu8; len]), None);
        }
    }

    #[test]
    fn unescapes_escapes_at_every_offset_around_the_blocks() {
        for escape in [r#"\""#, r"\\", r"\n", r"\u00e9", r"\ud83d\ude00", r"\t"] {
            for len in 0..2 * PADDING + 3 {
                for at in 0..=len {
                    let mut raw = "a".repeat(len);
                    raw.insert_str(at, escape);
                    let input = format!(r#""{raw}","time":"x"}}"#);
                    let expected: String = serde_json::from_str(&input[..raw.len() + 2]).unwrap();
                    let (out, done) = unescape_both(input.as_bytes(), 1).unwrap();
                    let trailing = if done.trailing_newline { "\n" } else { "" };
                    assert_eq!(format!("{}{trailing}", String::from_utf8(out).unwrap()), expected, "{input}");
                    assert_eq!(done.end, raw.len() + 1, "{input}");
                }
            }
        }
    }

    #[test]
    fn scans_to_the_closing_quote() {
        assert_eq!(scan_string(br#""abc","#, 1), Some((4, false)));
        assert_eq!(scan_string(br#""a\"c","#, 1), Some((5, true)));
        assert_eq!(scan_string(br#""a\\"#, 1), None);
        assert_eq!(scan_string(br#""abc"#, 1), None);
    }

    proptest! {
        /// Both ways of mapping a text's quotes and backslashes give the map a byte loop gives.
        #[test]
        fn maps_of_quotes_and_backslashes_agree(text in proptest::collection::vec(proptest::sample::select(&b"ab\"\\\x00\xff"[..]), 0..300)) {
            let mut want = [0u64; 6];
            for (k, &b) in text.iter().enumerate() {
                want[k / 64] |= u64::from(b == b'"' || b == b'\\') << (k % 64);
            }
            let mut portable = [0u64; 6];
            map_portably(&text, &mut portable);
            prop_assert_eq!(portable, want);
            let mut dispatched = [0u64; 6];
            map_quotes_and_backslashes(&text, &mut dispatched);
            prop_assert_eq!(dispatched, want);
        }

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
        /// Valid or not, text made of escapes' pieces, in runs that cross the 16- and 64-byte
        /// blocks, unescapes the same through both loops.
        fn both_loops_agree_on_escape_heavy_text(
            pieces in proptest::collection::vec(proptest::sample::select(&[
                "a", "bcdefgh", "\\", "\"", "\\\"", "\\\\", "\\n", "\\t", "\\/", "\\u00e9", "\\ud83d",
                "\\ude00", "\\u12", "\\x", "n", "/", "é", "😀",
            ][..]), 0..120),
            start in 0..3usize,
        ) {
            let text = pieces.concat();
            unescape_both(text.as_bytes(), start.min(text.len()));
        }

        #[test]
        fn unescape_string_agrees_with_serde_json(s in ".*", prefix in proptest::collection::vec(any::<u8>(), 0..20)) {
            let mut escaped = Vec::new();
            escape_into(s.as_bytes(), &mut escaped);
            escaped.extend_from_slice(b",\"rest\"");
            // Written after what the buffer held; an unrelated prefix stays as it was.
            let mut out = prefix.clone();
            let done = unescape_string(&escaped, 1, &mut out).unwrap();
            prop_assert_eq!(&out[..prefix.len()], &prefix[..]);
            prop_assert_eq!(unescape_both(&escaped, 1), Some((out[prefix.len()..].to_vec(), done)));
            let mut expected = s.as_bytes().to_vec();
            if done.trailing_newline {
                prop_assert_eq!(expected.pop(), Some(b'\n'));
            }
            prop_assert_eq!(&out[prefix.len()..], &expected[..]);
            prop_assert_eq!(escaped[done.end], b'"');
            prop_assert_eq!(&escaped[done.end + 1..], b",\"rest\"");
        }

        #[test]
        fn find_quote_or_backslash_finds_the_first(
            s in proptest::collection::vec(prop::sample::select(b"ab\"\\\xff".to_vec()), 0..80),
        ) {
            prop_assert_eq!(find_quote_or_backslash(&s), s.iter().position(|&b| b == b'"' || b == b'\\'));
        }

        #[test]
        fn escapes_valid_agrees_with_simd_json(
            parts in proptest::collection::vec(
                prop::sample::select(vec!["a", "\\n", "\\/", "\\x", "\\", "\\u00e9", "\\u12", "\\uD83D", "\\udE00", "\\u0041", "\\ud800\\u0041", "é"]),
                0..8,
            ),
        ) {
            let content = parts.concat();
            let mut json = format!("\"{content}\"").into_bytes();
            let closed = scan_string(&json, 1).is_some_and(|(end, _)| end == json.len() - 1);
            prop_assume!(closed);
            prop_assert_eq!(escapes_valid(content.as_bytes()), simd_json::to_tape(&mut json).is_ok(), "{}", content);
        }

        #[test]
        fn never_panics(raw in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut out = Vec::new();
            let _ = unescape_into(&raw, &mut out);
            let _ = scan_string(&raw, 0);
            let mut out = b"kept".to_vec();
            if unescape_string(&raw, 0, &mut out).is_none() {
                prop_assert_eq!(&out[..], b"kept");
            }
        }
    }
}
