//! `timestamp`: the entry's time from an extracted value.
//!
//! Formats: `RFC3339` and `RFC3339Nano` (a fast parser), `Unix` (seconds, with a fraction),
//! `UnixMs`, `UnixUs`, `UnixNs`, Go's named layouts (`RFC1123`, `Stamp`, ...) and any Go
//! reference layout. `fallback_formats` are tried in order; `location` applies to values that
//! carry no offset. On failure the entry keeps its time (`action_on_failure: skip`) or takes the
//! last good time of its stream plus one nanosecond (`fudge`, the default, as in Promtail).

use super::go_time::{GoLayout, Parsed, named_layout};
use super::work::Work;
use super::{Flow, StageInfo};
use crate::formats::time::{days_from_civil, parse_rfc3339_nanos};

#[derive(Debug, Clone)]
pub(crate) enum TimeFormat {
    Rfc3339,
    Unix,
    UnixMs,
    UnixUs,
    UnixNs,
    Layout(GoLayout),
}

impl TimeFormat {
    pub fn compile(format: &str) -> Result<TimeFormat, String> {
        Ok(match format {
            "RFC3339" | "RFC3339Nano" => TimeFormat::Rfc3339,
            "Unix" => TimeFormat::Unix,
            "UnixMs" => TimeFormat::UnixMs,
            "UnixUs" => TimeFormat::UnixUs,
            "UnixNs" => TimeFormat::UnixNs,
            other => TimeFormat::Layout(GoLayout::compile(named_layout(other).unwrap_or(other))?),
        })
    }
}

pub(crate) struct TimestampStage {
    pub source: String,
    pub formats: Vec<TimeFormat>,
    pub location: Option<jiff::tz::TimeZone>,
    pub fudge: bool,
}

fn parse_integer(text: &str) -> Option<i64> {
    let t = text.trim();
    if t.is_empty() || !t.trim_start_matches('-').bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    t.parse().ok()
}

/// Seconds with an optional fraction, kept exact to the nanosecond.
fn parse_unix_seconds(text: &str) -> Option<i64> {
    let t = text.trim();
    let (int, frac) = t.split_once('.').unwrap_or((t, ""));
    let negative = int.starts_with('-');
    let seconds = parse_integer(int)?;
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut nanos = 0i64;
    for (i, b) in frac.bytes().enumerate().take(9) {
        nanos += i64::from(b - b'0') * 10i64.pow(8 - i as u32);
    }
    let nanos = if negative { -nanos } else { nanos };
    seconds.checked_mul(1_000_000_000)?.checked_add(nanos)
}

fn current_year() -> i64 {
    i64::from(jiff::Zoned::now().year())
}

impl TimestampStage {
    fn to_nanos(&self, p: Parsed) -> Option<i64> {
        let year = p.year.unwrap_or_else(current_year);
        match (p.offset, &self.location) {
            (None, Some(tz)) => {
                let dt = jiff::civil::DateTime::new(
                    i16::try_from(year).ok()?,
                    p.month as i8,
                    p.day as i8,
                    p.hour as i8,
                    p.minute as i8,
                    p.second.min(59) as i8,
                    p.nanos as i32,
                )
                .ok()?;
                let ts = dt.to_zoned(tz.clone()).ok()?.timestamp();
                i64::try_from(ts.as_nanosecond()).ok()
            }
            (offset, _) => {
                let days = days_from_civil(year, p.month, p.day);
                let secs = days * 86400 + p.hour * 3600 + p.minute * 60 + p.second - offset.unwrap_or(0);
                secs.checked_mul(1_000_000_000)?.checked_add(p.nanos)
            }
        }
    }

    fn parse(&self, text: &str) -> Option<i64> {
        self.formats.iter().find_map(|f| match f {
            TimeFormat::Rfc3339 => parse_rfc3339_nanos(text.as_bytes()),
            TimeFormat::Unix => parse_unix_seconds(text),
            TimeFormat::UnixMs => parse_integer(text)?.checked_mul(1_000_000),
            TimeFormat::UnixUs => parse_integer(text)?.checked_mul(1_000),
            TimeFormat::UnixNs => parse_integer(text),
            TimeFormat::Layout(layout) => self.to_nanos(layout.parse(text)?),
        })
    }

    pub fn apply(&self, w: &mut Work, info: &StageInfo) -> Flow {
        let key = (self as *const Self as usize, w.entry.labels.hash_value());
        let Some(value) = w.extracted(&self.source) else {
            // As in Promtail, a missing source is a failure too (not an error: nothing to parse).
            self.on_failure(w, key);
            return Flow::Continue;
        };
        let parsed = std::str::from_utf8(value).ok().and_then(|t| self.parse(t));
        match parsed {
            Some(ts) => {
                w.entry.timestamp = ts;
                if self.fudge {
                    if w.fudge.len() > 10_000 {
                        w.fudge.clear();
                    }
                    w.fudge.insert(key, ts);
                }
            }
            None => {
                info.error(|| format!("timestamp `{}` matches no format", String::from_utf8_lossy(value)));
                self.on_failure(w, key);
            }
        }
        Flow::Continue
    }

    /// `fudge`: the last good time of the stream plus one nanosecond, if there is one.
    fn on_failure(&self, w: &mut Work, key: (usize, u64)) {
        if self.fudge
            && let Some(last) = w.fudge.get_mut(&key)
        {
            *last += 1;
            w.entry.timestamp = *last;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stage(formats: &[&str], location: Option<&str>) -> TimestampStage {
        TimestampStage {
            source: "ts".into(),
            formats: formats.iter().map(|f| TimeFormat::compile(f).unwrap()).collect(),
            location: location.map(|l| jiff::tz::TimeZone::get(l).unwrap()),
            fudge: true,
        }
    }

    #[test]
    fn formats() {
        let s = stage(&["RFC3339Nano"], None);
        assert_eq!(s.parse("2024-05-06T07:08:09.123456789Z"), Some(1_714_979_289_123_456_789));
        let s = stage(&["Unix"], None);
        assert_eq!(s.parse("1714979289.5"), Some(1_714_979_289_500_000_000));
        assert_eq!(s.parse("1714979289"), Some(1_714_979_289_000_000_000));
        assert_eq!(stage(&["UnixMs"], None).parse("1714979289123"), Some(1_714_979_289_123_000_000));
        assert_eq!(stage(&["UnixUs"], None).parse("1714979289123456"), Some(1_714_979_289_123_456_000));
        assert_eq!(stage(&["UnixNs"], None).parse("1714979289123456789"), Some(1_714_979_289_123_456_789));
        let s = stage(&["2006-01-02 15:04:05"], Some("America/New_York"));
        assert_eq!(s.parse("2024-05-06 03:08:09"), Some(1_714_979_289_000_000_000), "EDT is UTC-4");
        let s = stage(&["RFC3339", "02/Jan/2006:15:04:05 -0700"], None);
        assert_eq!(s.parse("06/May/2024:09:08:09 +0200"), Some(1_714_979_289_000_000_000), "fallback format");
        assert_eq!(s.parse("yesterday"), None);
    }
}
