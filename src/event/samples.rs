//! Sample batches: scraped samples on their way to Remote Write.

use super::AckSet;
use std::sync::Arc;

/// One sample of one series. `labels` are sorted by name, unique, and include `__name__`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub labels: Arc<[(Arc<str>, Arc<str>)]>,
    /// Milliseconds since the epoch.
    pub timestamp_ms: i64,
    pub value: f64,
}

#[derive(Debug, Clone, Default)]
pub struct SampleBatch {
    pub samples: Vec<Sample>,
    pub acks: AckSet,
}

impl SampleBatch {
    /// Approximate memory held, for queue accounting.
    pub fn byte_size(&self) -> usize {
        self.samples.iter().map(|s| 32 + s.labels.iter().map(|(n, v)| n.len() + v.len()).sum::<usize>()).sum()
    }
}
