//! [`super::unescape_string`]'s loop on CPUs with AVX-512 VBMI2 (Intel Ice Lake and later, AMD
//! Zen 4 and later): 64 bytes at a time, the backslashes that start escapes removed from the
//! block with one `vpcompressb`. Also the map of a text's quotes and backslashes, 64 bytes per
//! step.
//!
//! A json-file line written by a service that logs JSON has an escaped quote every few bytes
//! (`{\"level\":\"INFO\",...`), so the portable loop pays per escape; here an escape of `\"`,
//! `\\` or `\/` costs nothing more than the block it sits in. Blocks holding any other escape
//! (`\n`, `\t`, `\u00e9`, ...) hand that escape to the shared decoder and go on after it.
//!
//! Contract: gives exactly what the portable loop gives, for every input (the property test in
//! `super::tests` runs both). Invariants: a block always starts at a byte that is not escaped
//! (a block whose last byte starts an escape stops before it), and every store of 64 bytes lands
//! in `buf`, because the write offset never passes the read offset and `buf` is
//! [`super::PADDING`] bytes longer than the content.

use super::{LoneSurrogate, decode_escape};
use std::arch::x86_64::{
    __m512i, _mm512_mask_cmpeq_epi8_mask, _mm512_maskz_compress_epi8, _mm512_maskz_loadu_epi8, _mm512_set1_epi8,
    _mm512_storeu_si512,
};

/// [`super::map_quotes_and_backslashes`] for AVX-512: a whole 64-byte word from one load and
/// two comparisons.
///
/// # Safety
/// The CPU must have AVX-512 BW ([`available`]).
#[target_feature(enable = "avx512f,avx512bw")]
pub(super) unsafe fn map_quotes_and_backslashes(text: &[u8], words: &mut [u64]) {
    let (quote, backslash) = (_mm512_set1_epi8(b'"' as i8), _mm512_set1_epi8(b'\\' as i8));
    for (word, chunk) in words.iter_mut().zip(text.chunks(64)) {
        let in_chunk = low_bits(chunk.len());
        // SAFETY: the load reads only the bytes in `in_chunk`, all within `chunk`.
        let v = unsafe { _mm512_maskz_loadu_epi8(in_chunk, chunk.as_ptr().cast()) };
        *word = _mm512_mask_cmpeq_epi8_mask(in_chunk, v, quote) | _mm512_mask_cmpeq_epi8_mask(in_chunk, v, backslash);
    }
}

/// A mask of the lowest `n` bits (`n` up to 64).
#[inline(always)]
fn low_bits(n: usize) -> u64 {
    if n >= 64 { u64::MAX } else { (1u64 << n) - 1 }
}

/// Whether this CPU runs this module's functions (detected once, then a load and a test).
#[inline]
pub(super) fn available() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512bw")
        && std::arch::is_x86_feature_detected!("avx512vbmi2")
        && std::arch::is_x86_feature_detected!("popcnt")
        && std::arch::is_x86_feature_detected!("bmi1")
}

/// Bits at even positions.
const EVEN: u64 = 0x5555_5555_5555_5555;

/// The positions of a block that a backslash escapes, from the block's backslashes, given that
/// its first byte is not escaped. In a run of backslashes the first escapes the second, the third
/// the fourth, and so on; a run of odd length escapes the byte after it. A byte after a
/// backslash is escaped when its distance from the start of its run is odd: for a run that
/// starts at an even position, that is an odd position. Adding the first bit of every run that
/// starts at an odd position to the mask carries through that run and clears it, which flips
/// the parity test for the bytes that follow its backslashes (the technique of simdjson's string
/// scanner).
#[inline(always)]
fn escaped_positions(backslashes: u64) -> u64 {
    let follows_backslash = backslashes << 1;
    let odd_run_starts = backslashes & !EVEN & !follows_backslash;
    let runs_from_even = odd_run_starts.wrapping_add(backslashes);
    (EVEN ^ (runs_from_even << 1)) & follows_backslash
}

/// [`super::unescape_content`] for AVX-512 VBMI2: (bytes written, index of the closing quote,
/// trailing `\\n`), or `None` for an invalid escape or a missing closing quote.
///
/// # Safety
/// The CPU must have AVX-512 BW and VBMI2 ([`available`]), and `buf` must be at least
/// `content.len()` + [`super::PADDING`] bytes long.
#[target_feature(enable = "avx512f,avx512bw,avx512vbmi2,popcnt,bmi1")]
pub(super) unsafe fn unescape_content(content: &[u8], buf: &mut [u8]) -> Option<(usize, usize, bool)> {
    debug_assert!(buf.len() >= content.len() + super::PADDING);
    let (quote, backslash, slash) =
        (_mm512_set1_epi8(b'"' as i8), _mm512_set1_epi8(b'\\' as i8), _mm512_set1_epi8(b'/' as i8));
    let mut i = 0;
    let mut o = 0;
    while i < content.len() {
        let left = content.len() - i;
        let len = left.min(64);
        let in_block = low_bits(len);
        // SAFETY: the load reads only the bytes in `in_block`, all within `content` (masked-off
        // bytes are not accessed).
        let v = unsafe { _mm512_maskz_loadu_epi8(in_block, content.as_ptr().add(i).cast()) };
        let backslashes = _mm512_mask_cmpeq_epi8_mask(in_block, v, backslash);
        let quotes = _mm512_mask_cmpeq_epi8_mask(in_block, v, quote);
        let escaped = escaped_positions(backslashes);
        let starts = backslashes & !escaped;
        let closing = quotes & !escaped;
        // How much of the block this round takes: up to the closing quote; else all of it, but
        // for a last byte that starts an escape (its escaped byte is in the next block).
        let take = if closing != 0 {
            closing.trailing_zeros() as usize
        } else if (starts >> (len - 1)) & 1 == 1 {
            if left <= 64 {
                return None;
            }
            len - 1
        } else {
            len
        };
        let taken = low_bits(take);
        let simple = quotes | backslashes | _mm512_mask_cmpeq_epi8_mask(in_block, v, slash);
        let other = escaped & taken & !simple;
        // Up to the first escape the compress cannot take (`other`'s escaped byte is never the
        // block's first: that one is not escaped), or the whole take.
        let copy = if other != 0 { low_bits(other.trailing_zeros() as usize - 1) } else { taken };
        let keep = copy & !starts;
        // SAFETY: the store writes 64 bytes at `o`, and `o <= i < content.len()`, so it ends
        // within `buf` (see the module's invariants).
        unsafe { _mm512_storeu_si512(buf.as_mut_ptr().add(o).cast::<__m512i>(), _mm512_maskz_compress_epi8(keep, v)) };
        o += keep.count_ones() as usize;
        if other != 0 {
            let at = i + other.trailing_zeros() as usize - 1;
            if content.get(at + 1..at + 3) == Some(b"n\"") {
                return Some((o, at + 2, true));
            }
            let (ch, next) = decode_escape(content, at, LoneSurrogate::Replace)?;
            o += ch.encode_utf8(buf.get_mut(o..o + 4)?).len();
            i = next;
            continue;
        }
        if closing != 0 {
            return Some((o, i + take, false));
        }
        if left <= 64 {
            return None;
        }
        i += take;
    }
    None
}
