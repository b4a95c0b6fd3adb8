//! Go reference-time layouts (`2006-01-02 15:04:05.000 MST`), parsed the way Go's `time.Parse`
//! reads them, for the `timestamp` stage. A layout is compiled once into [`GoLayout`]; parsing
//! allocates nothing.
//!
//! As in Go: a fraction of a second may follow the seconds even when the layout has none; a zone
//! abbreviation (`MST`) is read and taken as UTC unless the stage has a `location`; a layout
//! without a year gets the current year (Promtail does the same).

#[derive(Debug, Clone, PartialEq, Eq)]
enum Chunk {
    Lit(String),
    LongMonth,
    Month,
    NumMonth,
    ZeroMonth,
    LongWeekDay,
    WeekDay,
    Day,
    UnderDay,
    ZeroDay,
    YearDay,
    Hour,
    Hour12,
    ZeroHour12,
    Minute,
    ZeroMinute,
    Second,
    ZeroSecond,
    LongYear,
    Year,
    Pm {
        upper: bool,
    },
    ZoneAbbrev,
    /// Offsets: with `z` set, `Z` also means UTC. `colon` and `seconds` follow the layout.
    Offset {
        z: bool,
        colon: bool,
        minutes: bool,
        seconds: bool,
    },
    /// `.000` (fixed digits) or `.999` (optional digits); the separator is `.` or `,`.
    Fraction {
        digits: usize,
        optional: bool,
    },
}

/// A compiled Go layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoLayout {
    chunks: Vec<Chunk>,
    pub has_year: bool,
    pub has_zone: bool,
}

/// The fields read from a timestamp, before a time zone is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parsed {
    pub year: Option<i64>,
    pub month: i64,
    pub day: i64,
    pub hour: i64,
    pub minute: i64,
    pub second: i64,
    pub nanos: i64,
    /// Seconds east of UTC, when the input gave a numeric offset or `Z`.
    pub offset: Option<i64>,
}

static CHUNKS: &[(&str, Chunk)] = &[
    ("January", Chunk::LongMonth),
    ("Jan", Chunk::Month),
    ("Monday", Chunk::LongWeekDay),
    ("Mon", Chunk::WeekDay),
    ("MST", Chunk::ZoneAbbrev),
    ("2006", Chunk::LongYear),
    ("-07:00:00", Chunk::Offset { z: false, colon: true, minutes: true, seconds: true }),
    ("-070000", Chunk::Offset { z: false, colon: false, minutes: true, seconds: true }),
    ("-07:00", Chunk::Offset { z: false, colon: true, minutes: true, seconds: false }),
    ("-0700", Chunk::Offset { z: false, colon: false, minutes: true, seconds: false }),
    ("-07", Chunk::Offset { z: false, colon: false, minutes: false, seconds: false }),
    ("Z07:00:00", Chunk::Offset { z: true, colon: true, minutes: true, seconds: true }),
    ("Z070000", Chunk::Offset { z: true, colon: false, minutes: true, seconds: true }),
    ("Z07:00", Chunk::Offset { z: true, colon: true, minutes: true, seconds: false }),
    ("Z0700", Chunk::Offset { z: true, colon: false, minutes: true, seconds: false }),
    ("Z07", Chunk::Offset { z: true, colon: false, minutes: false, seconds: false }),
    ("002", Chunk::YearDay),
    ("01", Chunk::ZeroMonth),
    ("02", Chunk::ZeroDay),
    ("03", Chunk::ZeroHour12),
    ("04", Chunk::ZeroMinute),
    ("05", Chunk::ZeroSecond),
    ("06", Chunk::Year),
    ("15", Chunk::Hour),
    ("_2", Chunk::UnderDay),
    ("PM", Chunk::Pm { upper: true }),
    ("pm", Chunk::Pm { upper: false }),
    ("1", Chunk::NumMonth),
    ("2", Chunk::Day),
    ("3", Chunk::Hour12),
    ("4", Chunk::Minute),
    ("5", Chunk::Second),
];

/// Go's named layouts, by the constant names Promtail users write.
pub fn named_layout(name: &str) -> Option<&'static str> {
    Some(match name {
        "ANSIC" => "Mon Jan _2 15:04:05 2006",
        "UnixDate" => "Mon Jan _2 15:04:05 MST 2006",
        "RubyDate" => "Mon Jan 02 15:04:05 -0700 2006",
        "RFC822" => "02 Jan 06 15:04 MST",
        "RFC822Z" => "02 Jan 06 15:04 -0700",
        "RFC850" => "Monday, 02-Jan-06 15:04:05 MST",
        "RFC1123" => "Mon, 02 Jan 2006 15:04:05 MST",
        "RFC1123Z" => "Mon, 02 Jan 2006 15:04:05 -0700",
        "Kitchen" => "3:04PM",
        "Stamp" => "Jan _2 15:04:05",
        "StampMilli" => "Jan _2 15:04:05.000",
        "StampMicro" => "Jan _2 15:04:05.000000",
        "StampNano" => "Jan _2 15:04:05.000000000",
        "DateTime" => "2006-01-02 15:04:05",
        "DateOnly" => "2006-01-02",
        "TimeOnly" => "15:04:05",
        _ => return None,
    })
}

impl GoLayout {
    /// Compiles a layout. Fails when it names no date or time element at all.
    pub fn compile(layout: &str) -> Result<GoLayout, String> {
        let mut chunks: Vec<Chunk> = Vec::new();
        let mut lit = String::new();
        let mut rest = layout;
        'outer: while !rest.is_empty() {
            // Fractions: `.000`, `,999` right after a digit chunk.
            for sep in ['.', ','] {
                if let Some(after) = rest.strip_prefix(sep) {
                    let zeros = after.bytes().take_while(|&b| b == b'0').count();
                    let nines = after.bytes().take_while(|&b| b == b'9').count();
                    let (digits, optional) = if zeros > 0 { (zeros, false) } else { (nines, true) };
                    let follows_seconds =
                        matches!(chunks.last(), Some(Chunk::Second | Chunk::ZeroSecond)) && lit.is_empty();
                    if digits > 0 && follows_seconds && !after[digits..].starts_with(|c: char| c.is_ascii_digit()) {
                        chunks.push(Chunk::Fraction { digits, optional });
                        rest = &after[digits..];
                        continue 'outer;
                    }
                }
            }
            for (token, chunk) in CHUNKS {
                if rest.starts_with(token) {
                    // As in Go, `Jan` and `Mon` followed by a lowercase letter are plain text ("Monthly").
                    if matches!(*token, "Jan" | "Mon")
                        && rest[token.len()..].starts_with(|c: char| c.is_ascii_lowercase())
                    {
                        continue;
                    }
                    if !lit.is_empty() {
                        chunks.push(Chunk::Lit(std::mem::take(&mut lit)));
                    }
                    chunks.push(chunk.clone());
                    rest = &rest[token.len()..];
                    continue 'outer;
                }
            }
            let c = rest.chars().next().unwrap_or(' ');
            lit.push(c);
            rest = &rest[c.len_utf8()..];
        }
        if !lit.is_empty() {
            chunks.push(Chunk::Lit(lit));
        }
        if chunks.iter().all(|c| matches!(c, Chunk::Lit(_))) {
            return Err(format!(
                "`{layout}` is not a Go time layout (write the reference time, e.g. `2006-01-02T15:04:05Z07:00`, or a name such as RFC3339)"
            ));
        }
        let has_year = chunks.iter().any(|c| matches!(c, Chunk::LongYear | Chunk::Year));
        let has_zone = chunks.iter().any(|c| matches!(c, Chunk::Offset { .. }));
        Ok(GoLayout { chunks, has_year, has_zone })
    }

    /// Reads `input` against the layout.
    pub fn parse(&self, input: &str) -> Option<Parsed> {
        let s = input.as_bytes();
        let mut i = 0usize;
        let mut p = Parsed { year: None, month: 1, day: 1, hour: 0, minute: 0, second: 0, nanos: 0, offset: None };
        let mut pm: Option<bool> = None;
        let mut year_day: Option<i64> = None;
        for (ci, chunk) in self.chunks.iter().enumerate() {
            match chunk {
                Chunk::Lit(l) => {
                    if !input[i..].starts_with(l.as_str()) {
                        return None;
                    }
                    i += l.len();
                }
                Chunk::LongMonth | Chunk::Month => {
                    let (m, len) = month_name(&s[i..], matches!(chunk, Chunk::LongMonth))?;
                    p.month = m;
                    i += len;
                }
                Chunk::LongWeekDay | Chunk::WeekDay => i += weekday_name(&s[i..], matches!(chunk, Chunk::LongWeekDay))?,
                Chunk::NumMonth => p.month = num(s, &mut i, 1, 2)?,
                Chunk::ZeroMonth => p.month = num(s, &mut i, 2, 2)?,
                Chunk::Day => p.day = num(s, &mut i, 1, 2)?,
                Chunk::UnderDay => {
                    if s.get(i) == Some(&b' ') {
                        i += 1;
                    }
                    p.day = num(s, &mut i, 1, 2)?;
                }
                Chunk::ZeroDay => p.day = num(s, &mut i, 2, 2)?,
                Chunk::YearDay => year_day = Some(num(s, &mut i, 3, 3)?),
                Chunk::Hour => p.hour = num(s, &mut i, 1, 2)?,
                Chunk::Hour12 => p.hour = num(s, &mut i, 1, 2)?,
                Chunk::ZeroHour12 => p.hour = num(s, &mut i, 2, 2)?,
                Chunk::Minute => p.minute = num(s, &mut i, 1, 2)?,
                Chunk::ZeroMinute => p.minute = num(s, &mut i, 2, 2)?,
                Chunk::Second | Chunk::ZeroSecond => {
                    let (min, max) = if matches!(chunk, Chunk::Second) { (1, 2) } else { (2, 2) };
                    p.second = num(s, &mut i, min, max)?;
                    // Go accepts a fraction here even when the layout has none.
                    let next_is_fraction = matches!(self.chunks.get(ci + 1), Some(Chunk::Fraction { .. }));
                    if !next_is_fraction
                        && matches!(s.get(i), Some(b'.' | b','))
                        && s.get(i + 1).is_some_and(u8::is_ascii_digit)
                    {
                        i += 1;
                        p.nanos = fraction(s, &mut i)?;
                    }
                }
                Chunk::Fraction { digits, optional } => {
                    if matches!(s.get(i), Some(b'.' | b',')) && s.get(i + 1).is_some_and(u8::is_ascii_digit) {
                        i += 1;
                        let start = i;
                        p.nanos = fraction(s, &mut i)?;
                        if !optional && i - start != *digits {
                            return None;
                        }
                    } else if !optional {
                        return None;
                    }
                }
                Chunk::LongYear => p.year = Some(num(s, &mut i, 4, 4)?),
                Chunk::Year => {
                    let yy = num(s, &mut i, 2, 2)?;
                    p.year = Some(if yy >= 69 { 1900 + yy } else { 2000 + yy });
                }
                Chunk::Pm { upper } => {
                    let text = s.get(i..i + 2)?;
                    let text = if *upper { text.to_ascii_uppercase() } else { text.to_ascii_lowercase() };
                    pm = Some(match &text[..] {
                        b"PM" | b"pm" => true,
                        b"AM" | b"am" => false,
                        _ => return None,
                    });
                    i += 2;
                }
                Chunk::ZoneAbbrev => {
                    let len = s[i..].iter().take_while(|b| b.is_ascii_uppercase()).count();
                    if len < 3 {
                        return None;
                    }
                    i += len;
                    // "GMT+1" style suffixes.
                    if matches!(s.get(i), Some(b'+' | b'-')) {
                        let sign = if s[i] == b'-' { -1 } else { 1 };
                        i += 1;
                        let h = num(s, &mut i, 1, 2)?;
                        p.offset = Some(sign * h * 3600);
                    }
                }
                Chunk::Offset { z, colon, minutes, seconds } => {
                    if *z && s.get(i) == Some(&b'Z') {
                        i += 1;
                        p.offset = Some(0);
                        continue;
                    }
                    let sign = match s.get(i)? {
                        b'+' => 1,
                        b'-' => -1,
                        _ => return None,
                    };
                    i += 1;
                    let h = num(s, &mut i, 2, 2)?;
                    let mut off = h * 3600;
                    for (present, unit) in [(*minutes, 60), (*seconds, 1)] {
                        if !present {
                            continue;
                        }
                        if *colon {
                            if s.get(i) != Some(&b':') {
                                return None;
                            }
                            i += 1;
                        }
                        off += num(s, &mut i, 2, 2)? * unit;
                    }
                    p.offset = Some(sign * off);
                }
            }
        }
        if i != s.len() {
            return None;
        }
        if let Some(is_pm) = pm {
            if !(1..=12).contains(&p.hour) {
                return None;
            }
            p.hour = p.hour % 12 + if is_pm { 12 } else { 0 };
        }
        if let Some(yd) = year_day {
            let year = p.year.unwrap_or(1970);
            let start = crate::formats::time::days_from_civil(year, 1, 1);
            let date =
                jiff::civil::Date::new(1970, 1, 1).ok()?.checked_add(jiff::Span::new().days(start + yd - 1)).ok()?;
            p.month = i64::from(date.month());
            p.day = i64::from(date.day());
        }
        let valid =
            (1..=12).contains(&p.month) && (1..=31).contains(&p.day) && p.hour < 24 && p.minute < 60 && p.second < 61;
        valid.then_some(p)
    }
}

fn num(s: &[u8], i: &mut usize, min: usize, max: usize) -> Option<i64> {
    let digits = s.get(*i..)?.iter().take(max).take_while(|b| b.is_ascii_digit()).count();
    if digits < min {
        return None;
    }
    let mut v = 0i64;
    for &b in &s[*i..*i + digits] {
        v = v * 10 + i64::from(b - b'0');
    }
    *i += digits;
    Some(v)
}

fn fraction(s: &[u8], i: &mut usize) -> Option<i64> {
    let start = *i;
    let mut nanos = 0i64;
    while *i < s.len() && s[*i].is_ascii_digit() {
        if *i - start < 9 {
            nanos = nanos * 10 + i64::from(s[*i] - b'0');
        }
        *i += 1;
    }
    let n = *i - start;
    if n == 0 {
        return None;
    }
    for _ in n..9 {
        nanos *= 10;
    }
    Some(nanos)
}

const MONTHS: [&str; 12] = [
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
];
const DAYS: [&str; 7] = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"];

fn name_prefix(s: &[u8], names: &[&str], long: bool) -> Option<(usize, usize)> {
    names.iter().enumerate().find_map(|(idx, name)| {
        let want = if long { name.len() } else { 3 };
        let got = s.get(..want)?;
        got.eq_ignore_ascii_case(&name.as_bytes()[..want]).then_some((idx, want))
    })
}

fn month_name(s: &[u8], long: bool) -> Option<(i64, usize)> {
    name_prefix(s, &MONTHS, long).map(|(i, len)| (i as i64 + 1, len))
}

fn weekday_name(s: &[u8], long: bool) -> Option<usize> {
    name_prefix(s, &DAYS, long).map(|(_, len)| len)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(layout: &str, input: &str) -> Option<Parsed> {
        GoLayout::compile(named_layout(layout).unwrap_or(layout)).unwrap().parse(input)
    }

    #[test]
    fn common_layouts() {
        let p = parse("2006-01-02 15:04:05.000", "2024-05-06 07:08:09.123").unwrap();
        assert_eq!(
            (p.year, p.month, p.day, p.hour, p.minute, p.second, p.nanos),
            (Some(2024), 5, 6, 7, 8, 9, 123_000_000)
        );
        let p = parse("2006-01-02 15:04:05", "2024-05-06 07:08:09.5").unwrap();
        assert_eq!(p.nanos, 500_000_000, "Go reads a fraction the layout does not name");
        let p = parse("02/Jan/2006:15:04:05 -0700", "06/May/2024:07:08:09 +0200").unwrap();
        assert_eq!(p.offset, Some(7200));
        let p = parse("RFC1123", "Mon, 06 May 2024 07:08:09 GMT").unwrap();
        assert_eq!((p.day, p.offset), (6, None));
        let p = parse("Stamp", "May  6 07:08:09").unwrap();
        assert_eq!((p.year, p.month, p.day), (None, 5, 6));
        let p = parse("Kitchen", "3:04PM").unwrap();
        assert_eq!((p.hour, p.minute), (15, 4));
        let p = parse("2006-01-02T15:04:05Z07:00", "2024-05-06T07:08:09Z").unwrap();
        assert_eq!(p.offset, Some(0));
        let p = parse("2006-01-02T15:04:05.999999999Z07:00", "2024-05-06T07:08:09-05:30").unwrap();
        assert_eq!(p.offset, Some(-19800));
        let p = parse("January 2, 2006 3:04:05 pm", "March 9, 2024 12:01:02 am").unwrap();
        assert_eq!((p.month, p.hour), (3, 0));
        let p = parse("2006.002", "2024.060").unwrap();
        assert_eq!((p.month, p.day), (2, 29));
    }

    #[test]
    fn mismatches() {
        assert!(parse("2006-01-02", "2024-5-06").is_none());
        assert!(parse("2006-01-02", "2024-05-06 extra").is_none());
        assert!(parse("2006-01-02 15:04:05.000", "2024-05-06 07:08:09.12").is_none());
        assert!(parse("2006-01-02", "2024-13-06").is_none());
        assert!(GoLayout::compile("hello").is_err());
    }
}
