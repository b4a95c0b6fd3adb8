//! Human durations (`500ms`, `1s`, `5m`, `1h30m`, `1.5s`) and byte sizes (`1MiB`, `256KiB`, `1MB`).
//!
//! Durations use the Go / Prometheus syntax that Promtail users write: one or more
//! `<number><unit>` parts, units `ns`, `us`/`µs`, `ms`, `s`, `m`, `h`, `d`, `w`. A bare `0` is
//! zero. Byte sizes accept an integer with an optional unit: `B`, `KB`/`MB`/`GB` (powers of 1000)
//! and `KiB`/`MiB`/`GiB` (powers of 1024); a bare number is bytes.

use serde::{Deserialize, Deserializer, de};
use std::fmt;
use std::time::Duration;

/// A duration read from config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    pub const fn from_millis(ms: u64) -> Self {
        Self(Duration::from_millis(ms))
    }
    pub const fn from_secs(s: u64) -> Self {
        Self(Duration::from_secs(s))
    }
}

impl From<HumanDuration> for Duration {
    fn from(d: HumanDuration) -> Duration {
        d.0
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// Parses a Go-style duration.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err("empty duration".into());
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        if num_len == 0 {
            return Err(format!("invalid duration `{text}`: expected a number at `{rest}`"));
        }
        let number: f64 = rest[..num_len]
            .parse()
            .map_err(|_| format!("invalid duration `{text}`: bad number `{}`", &rest[..num_len]))?;
        rest = &rest[num_len..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let seconds_per_unit = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "d" => 86400.0,
            "w" => 604800.0,
            "" => {
                return Err(format!("invalid duration `{text}`: missing unit (use ms, s, m, h, d)"));
            }
            unit => {
                return Err(format!(
                    "invalid duration `{text}`: unknown unit `{unit}` (use ns, us, ms, s, m, h, d, w)"
                ));
            }
        };
        total += number * seconds_per_unit;
        rest = &rest[unit_len..];
    }
    if !total.is_finite() || total > 1e12 {
        return Err(format!("invalid duration `{text}`: too large"));
    }
    Ok(Duration::from_secs_f64(total))
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        parse_duration(&text).map(HumanDuration).map_err(de::Error::custom)
    }
}

/// A byte size read from config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub const fn kib(n: u64) -> Self {
        Self(n * 1024)
    }
    pub const fn mib(n: u64) -> Self {
        Self(n * 1024 * 1024)
    }
    pub fn as_usize(self) -> usize {
        usize::try_from(self.0).unwrap_or(usize::MAX)
    }
}

/// Parses a byte size such as `1MiB`.
pub fn parse_byte_size(text: &str) -> Result<u64, String> {
    let s = text.trim();
    let num_len = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    if num_len == 0 {
        return Err(format!("invalid size `{text}`: expected a number"));
    }
    let number: u64 = s[..num_len].parse().map_err(|_| format!("invalid size `{text}`"))?;
    // Units are read without regard to case, as Promtail's `flagext.ByteSize` does (`8kb`).
    let multiplier: u64 = match s[num_len..].trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" | "k" => 1000,
        "mb" | "m" => 1000 * 1000,
        "gb" | "g" => 1000 * 1000 * 1000,
        "kib" | "ki" => 1024,
        "mib" | "mi" => 1024 * 1024,
        "gib" | "gi" => 1024 * 1024 * 1024,
        unit => {
            return Err(format!("invalid size `{text}`: unknown unit `{unit}` (use B, KB, MB, GB, KiB, MiB, GiB)"));
        }
    };
    number.checked_mul(multiplier).ok_or_else(|| format!("invalid size `{text}`: too large"))
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size such as 1MiB, 256KiB or 1000000")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v).map(ByteSize).map_err(|_| E::custom("a size cannot be negative"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
                parse_byte_size(v).map(ByteSize).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("1s").unwrap(), Duration::from_secs(1));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert_eq!(parse_duration("2d").unwrap(), Duration::from_secs(172800));
        for bad in ["", "5", "5x", "ms", "1s5", "-1s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_byte_size("1MiB").unwrap(), 1 << 20);
        assert_eq!(parse_byte_size("256KiB").unwrap(), 256 << 10);
        assert_eq!(parse_byte_size("1MB").unwrap(), 1_000_000);
        assert_eq!(parse_byte_size("42").unwrap(), 42);
        assert_eq!(parse_byte_size("8kb").unwrap(), 8000);
        for bad in ["", "MiB", "1XB", "-1"] {
            assert!(parse_byte_size(bad).is_err(), "{bad}");
        }
    }
}
