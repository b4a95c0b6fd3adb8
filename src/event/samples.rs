//! Sample batches: scraped samples on their way to Remote Write.
//!
//! A [`Series`] is built once per distinct label set (by the scrape source's series cache) and
//! shared by every sample of that series through an `Arc`: a sample costs one reference count,
//! not a copy of its labels. A series' labels are sorted by name, unique, never empty-valued,
//! and include `__name__`, as Remote Write requires; its [`Series::hash`] is computed once and
//! is what a sink shards by, so that every sample of a series goes through the same shard, in
//! order.

use super::AckSet;
use std::fmt;
use std::sync::Arc;

/// The bit pattern Prometheus uses to mark a series stale (a NaN that no exporter produces).
pub const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

/// The value of a stale marker.
pub fn stale_nan() -> f64 {
    f64::from_bits(STALE_NAN_BITS)
}

/// Whether `value` is a stale marker (not just any NaN).
pub fn is_stale_nan(value: f64) -> bool {
    value.to_bits() == STALE_NAN_BITS
}

/// A series: sorted, unique label pairs (with `__name__`) in one buffer, and their hash.
#[derive(Clone, PartialEq, Eq)]
pub struct Series {
    hash: u64,
    /// Names and values, back to back.
    text: Box<str>,
    /// For each pair, the end of its name and the end of its value in `text`.
    ends: Box<[(u32, u32)]>,
}

/// Why a label set cannot be a series.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SeriesError {
    #[error("the series has no metric name (`__name__`)")]
    NoName,
    #[error("label `{0}` appears twice")]
    DuplicateName(String),
    #[error("the series' labels exceed 4 GiB")]
    TooLarge,
}

impl Series {
    /// A series from pairs in any order. Pairs with an empty value are left out (an empty label
    /// is an absent label); the same name twice is an error, and so is a missing `__name__`.
    pub fn new<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<Series, SeriesError> {
        let mut pairs: Vec<(&str, &str)> = pairs.into_iter().filter(|(_, v)| !v.is_empty()).collect();
        pairs.sort_unstable_by(|a, b| a.0.cmp(b.0));
        if let Some(w) = pairs.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(SeriesError::DuplicateName(w[0].0.to_string()));
        }
        if !pairs.iter().any(|(n, _)| *n == "__name__") {
            return Err(SeriesError::NoName);
        }
        let len: usize = pairs.iter().map(|(n, v)| n.len() + v.len()).sum();
        if u32::try_from(len).is_err() {
            return Err(SeriesError::TooLarge);
        }
        let mut text = String::with_capacity(len);
        let mut ends = Vec::with_capacity(pairs.len());
        for (n, v) in &pairs {
            text.push_str(n);
            let name_end = text.len() as u32;
            text.push_str(v);
            ends.push((name_end, text.len() as u32));
        }
        let hash = crate::event::labels::hash_pairs(pairs.iter().copied());
        Ok(Series { hash, text: text.into_boxed_str(), ends: ends.into_boxed_slice() })
    }

    /// The pairs, sorted by name.
    pub fn labels(&self) -> impl ExactSizeIterator<Item = (&str, &str)> + '_ {
        let mut start = 0usize;
        self.ends.iter().map(move |&(name_end, value_end)| {
            let (n, v) = (name_end as usize, value_end as usize);
            // The offsets were taken from `text` at character boundaries when it was built.
            let pair = (self.text.get(start..n).unwrap_or(""), self.text.get(n..v).unwrap_or(""));
            start = v;
            pair
        })
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.labels().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    /// The metric name.
    pub fn name(&self) -> &str {
        self.get("__name__").unwrap_or("")
    }

    /// Computed once from the pairs; equal series have equal hashes.
    pub fn hash(&self) -> u64 {
        self.hash
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Bytes of names and values.
    pub fn byte_len(&self) -> usize {
        self.text.len()
    }
}

impl fmt::Debug for Series {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (i, (n, v)) in self.labels().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{n}={v:?}")?;
        }
        f.write_str("}")
    }
}

/// One sample of one series.
#[derive(Debug, Clone)]
pub struct Sample {
    pub series: Arc<Series>,
    /// Milliseconds since the epoch.
    pub timestamp_ms: i64,
    pub value: f64,
}

impl PartialEq for Sample {
    /// Values compare by bits, so that a stale marker equals a stale marker.
    fn eq(&self, other: &Self) -> bool {
        self.series == other.series
            && self.timestamp_ms == other.timestamp_ms
            && self.value.to_bits() == other.value.to_bits()
    }
}

#[derive(Debug, Clone, Default)]
pub struct SampleBatch {
    pub samples: Vec<Sample>,
    pub acks: AckSet,
}

/// Memory a queued sample holds besides its series, which the scrape cache shares.
const SAMPLE_BYTES: usize = std::mem::size_of::<Sample>() + 8;

impl SampleBatch {
    pub fn new(samples: Vec<Sample>) -> Self {
        SampleBatch { samples, acks: AckSet::new() }
    }

    /// Approximate memory held, for queue accounting: a sample's own bytes. Series are shared
    /// with the scrape source's cache and with every other sample of the series, so they are
    /// not counted per sample.
    pub fn byte_size(&self) -> usize {
        self.samples.len() * SAMPLE_BYTES
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_sorts_drops_empty_values_and_rejects_duplicates() {
        let s = Series::new([("job", "gpu"), ("__name__", "up"), ("empty", ""), ("instance", "a:1")]).unwrap();
        assert_eq!(s.labels().collect::<Vec<_>>(), [("__name__", "up"), ("instance", "a:1"), ("job", "gpu")]);
        assert_eq!(s.name(), "up");
        assert_eq!(s.get("job"), Some("gpu"));
        assert_eq!(s.get("empty"), None);
        assert_eq!(format!("{s:?}"), r#"{__name__="up", instance="a:1", job="gpu"}"#);
        let same = Series::new([("instance", "a:1"), ("job", "gpu"), ("__name__", "up")]).unwrap();
        assert_eq!((s.hash(), &s), (same.hash(), &same));
        assert_eq!(
            Series::new([("__name__", "x"), ("a", "1"), ("a", "2")]),
            Err(SeriesError::DuplicateName("a".into()))
        );
        assert_eq!(Series::new([("a", "1")]), Err(SeriesError::NoName));
    }

    #[test]
    fn stale_markers_are_one_particular_nan() {
        assert!(is_stale_nan(stale_nan()));
        assert!(!is_stale_nan(f64::NAN));
        assert_eq!(stale_nan().to_bits(), 0x7ff0_0000_0000_0002);
    }
}
