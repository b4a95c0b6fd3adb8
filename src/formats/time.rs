//! Timestamps: a fast RFC 3339 parser for the formats every container runtime writes, and
//! RFC 3339 formatting. Other layouts go through `pipeline::timestamp` (jiff).
//!
//! All values are nanoseconds since the Unix epoch, as `i64` (years 1678 to 2262).

/// Parses `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)` (also with a space or lowercase `t` as the
/// separator, and `z`). Up to 9 fraction digits are kept; more are accepted and ignored.
pub fn parse_rfc3339_nanos(s: &[u8]) -> Option<i64> {
    if s.len() < 20 {
        return None;
    }
    let digits = |range: std::ops::Range<usize>| -> Option<i64> {
        let mut v = 0i64;
        for &b in s.get(range)? {
            if !b.is_ascii_digit() {
                return None;
            }
            v = v * 10 + i64::from(b - b'0');
        }
        Some(v)
    };
    if s[4] != b'-' || s[7] != b'-' || !matches!(s[10], b'T' | b't' | b' ') || s[13] != b':' || s[16] != b':' {
        return None;
    }
    let (year, month, day) = (digits(0..4)?, digits(5..7)?, digits(8..10)?);
    let (hour, minute, second) = (digits(11..13)?, digits(14..16)?, digits(17..19)?);
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut i = 19;
    let mut nanos = 0i64;
    if s[i] == b'.' || s[i] == b',' {
        i += 1;
        let start = i;
        while i < s.len() && s[i].is_ascii_digit() {
            if i - start < 9 {
                nanos = nanos * 10 + i64::from(s[i] - b'0');
            }
            i += 1;
        }
        let n = i - start;
        if n == 0 {
            return None;
        }
        for _ in n..9 {
            nanos *= 10;
        }
    }
    let offset_seconds = match s.get(i)? {
        b'Z' | b'z' => {
            i += 1;
            0
        }
        sign @ (b'+' | b'-') => {
            if s.get(i + 3) != Some(&b':') {
                return None;
            }
            let (oh, om) = (digits(i + 1..i + 3)?, digits(i + 4..i + 6)?);
            if oh > 23 || om > 59 {
                return None;
            }
            i += 6;
            let off = oh * 3600 + om * 60;
            if *sign == b'-' { -off } else { off }
        }
        _ => return None,
    };
    if i != s.len() {
        return None;
    }
    let days = days_from_civil(year, month, day);
    let seconds = days * 86400 + hour * 3600 + minute * 60 + second - offset_seconds;
    seconds.checked_mul(1_000_000_000)?.checked_add(nanos)
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
pub fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Formats as RFC 3339 in UTC with exactly nine fraction digits, the layout Docker uses
/// (`2006-01-02T15:04:05.000000000Z`).
pub fn format_rfc3339_nanos(nanos: i64) -> String {
    let seconds = nanos.div_euclid(1_000_000_000);
    let frac = nanos.rem_euclid(1_000_000_000);
    let (year, month, day) = civil_from_days(seconds.div_euclid(86400));
    let sod = seconds.rem_euclid(86400);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{frac:09}Z", sod / 3600, sod % 3600 / 60, sod % 60)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_docker_and_cri_timestamps() {
        assert_eq!(parse_rfc3339_nanos(b"1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339_nanos(b"2024-05-06T07:08:09.123456789Z"), Some(1_714_979_289_123_456_789));
        assert_eq!(parse_rfc3339_nanos(b"2024-05-06T09:08:09.5+02:00"), Some(1_714_979_289_500_000_000));
        assert_eq!(parse_rfc3339_nanos(b"2024-05-06T07:08:09.1234567891Z"), Some(1_714_979_289_123_456_789));
        assert_eq!(parse_rfc3339_nanos(b"1969-12-31T23:59:59Z"), Some(-1_000_000_000));
        for bad in [
            &b"2024-05-06T07:08:09"[..],
            b"2024-13-06T07:08:09Z",
            b"2024-02-30T07:08:09Z",
            b"2024-05-06T07:08:09.Z",
            b"2024-05-06T07:08:09Zx",
            b"2024-05-06T07:08:09+0200",
            b"x024-05-06T07:08:09Z",
        ] {
            assert_eq!(parse_rfc3339_nanos(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn formats_like_docker() {
        assert_eq!(format_rfc3339_nanos(1_714_979_289_000_000_001), "2024-05-06T07:08:09.000000001Z");
        assert_eq!(format_rfc3339_nanos(-1), "1969-12-31T23:59:59.999999999Z");
    }

    proptest! {
        #[test]
        fn format_then_parse_round_trips(n in -5_000_000_000_000_000_000i64..5_000_000_000_000_000_000i64) {
            prop_assert_eq!(parse_rfc3339_nanos(format_rfc3339_nanos(n).as_bytes()), Some(n));
        }

        #[test]
        fn never_panics(s in proptest::collection::vec(any::<u8>(), 0..40)) {
            let _ = parse_rfc3339_nanos(&s);
        }
    }
}
