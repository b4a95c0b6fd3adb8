//! Protobuf wire-format primitives shared by the hand-written encoders (Loki push, Remote Write,
//! OTLP spans) and the few places that read back what they or a client wrote: varints and
//! length-delimited fields whose tag is one byte (field numbers up to 15).

use bytes::BufMut;

/// Bytes a varint takes.
pub fn varint_len(value: u64) -> usize {
    // One byte per 7 bits, at least one.
    (64 - (value | 1).leading_zeros() as usize).div_ceil(7)
}

/// Writes a varint.
pub fn put_varint(out: &mut impl BufMut, mut value: u64) {
    while value >= 0x80 {
        out.put_u8((value as u8) | 0x80);
        value >>= 7;
    }
    out.put_u8(value as u8);
}

/// Reads a varint at the start of `buf`: its value and the bytes it took. `None` when `buf` ends
/// inside it or it runs past ten bytes.
pub fn read_varint(buf: &[u8]) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for (i, b) in buf.iter().take(10).enumerate() {
        value |= u64::from(b & 0x7f) << (7 * i);
        if *b < 0x80 {
            return Some((value, i + 1));
        }
    }
    None
}

/// A length-delimited field with a one-byte tag: tag, length, body length included.
pub fn delimited_len(len: usize) -> usize {
    1 + varint_len(len as u64) + len
}

/// Writes a length-delimited field with a one-byte tag.
pub fn put_bytes(out: &mut impl BufMut, tag: u8, bytes: &[u8]) {
    out.put_u8(tag);
    put_varint(out, bytes.len() as u64);
    out.put_slice(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_are_as_long_as_they_say_and_read_back() {
        for (value, len) in [(0u64, 1), (127, 1), (128, 2), (16_383, 2), (16_384, 3), (u64::MAX, 10)] {
            assert_eq!(varint_len(value), len, "{value}");
            let mut out = Vec::new();
            put_varint(&mut out, value);
            assert_eq!(out.len(), len, "{value}");
            assert_eq!(read_varint(&out), Some((value, len)), "{value}");
            assert_eq!(read_varint(&out[..len - 1]), None, "{value} cut short");
        }
        assert_eq!(read_varint(&[0x80; 11]), None);
    }

    #[test]
    fn delimited_fields_are_as_long_as_they_say() {
        for len in [0, 1, 127, 128, 300] {
            let mut out = Vec::new();
            put_bytes(&mut out, 0x12, &vec![7; len]);
            assert_eq!(out.len(), delimited_len(len));
            assert_eq!(out[0], 0x12);
            assert_eq!(read_varint(&out[1..]), Some((len as u64, varint_len(len as u64))));
        }
    }
}
