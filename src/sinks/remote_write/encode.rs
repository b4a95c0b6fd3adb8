//! Remote Write requests, encoded by hand: protobuf (`prometheus.WriteRequest`) then snappy
//! block compression, both into buffers reused from one request to the next.
//!
//! One `TimeSeries` per sample, as Prometheus' own sender does; its labels are the series'
//! labels merged with the external labels in name order (a series' own label wins over an
//! external one of the same name), so the request's labels are sorted and unique as the
//! protocol requires. Writing straight from the shared series avoids building prost messages,
//! which would copy every label into a `String` per sample; the result is checked against the
//! prost definitions in `proto::remote_write` by the tests below.

use crate::event::samples::Sample;
use crate::proto::wire::{delimited_len, put_bytes, put_varint, varint_len};

/// A `Label` message's body length.
fn label_len(name: &str, value: &str) -> usize {
    delimited_len(name.len()) + delimited_len(value.len())
}

/// A `Sample` message's body length. Proto3 leaves out zero values (`-0.0` included, as prost
/// and Prometheus' Go encoder do).
fn sample_len(s: &Sample) -> usize {
    let mut n = 0;
    if s.value != 0.0 {
        n += 9;
    }
    if s.timestamp_ms != 0 {
        n += 1 + varint_len(s.timestamp_ms as u64);
    }
    n
}

/// Walks a series' sorted labels and the sorted external labels in name order.
fn merged<'a>(
    series: impl Iterator<Item = (&'a str, &'a str)>,
    external: &'a [(String, String)],
) -> impl Iterator<Item = (&'a str, &'a str)> {
    let mut series = series.peekable();
    let mut external = external.iter().map(|(n, v)| (n.as_str(), v.as_str())).peekable();
    std::iter::from_fn(move || match (series.peek(), external.peek()) {
        (Some(s), Some(e)) => match s.0.cmp(e.0) {
            std::cmp::Ordering::Less => series.next(),
            std::cmp::Ordering::Greater => external.next(),
            std::cmp::Ordering::Equal => {
                external.next();
                series.next()
            }
        },
        (Some(_), None) => series.next(),
        (None, Some(_)) => external.next(),
        (None, None) => None,
    })
}

/// Encodes and compresses write requests, reusing its buffers.
pub struct WriteEncoder {
    /// Sorted by name, unique.
    external: Vec<(String, String)>,
    raw: Vec<u8>,
    compressed: Vec<u8>,
    snappy: snap::raw::Encoder,
}

impl WriteEncoder {
    pub fn new(external_labels: impl IntoIterator<Item = (String, String)>) -> WriteEncoder {
        let mut external: Vec<(String, String)> = external_labels.into_iter().collect();
        external.sort();
        external.dedup_by(|a, b| a.0 == b.0);
        WriteEncoder { external, raw: Vec::new(), compressed: Vec::new(), snappy: snap::raw::Encoder::new() }
    }

    /// The uncompressed protobuf of a request (kept until the next call).
    pub fn encode_raw(&mut self, samples: &[Sample]) -> &[u8] {
        self.raw.clear();
        let external = &self.external;
        for s in samples {
            let labels = merged(s.series.labels(), external);
            let labels_len: usize = labels.map(|(n, v)| delimited_len(label_len(n, v))).sum();
            let sample = sample_len(s);
            let body = labels_len + delimited_len(sample);
            let out = &mut self.raw;
            out.push(0x0a);
            put_varint(out, body as u64);
            for (n, v) in merged(s.series.labels(), external) {
                out.push(0x0a);
                put_varint(out, label_len(n, v) as u64);
                put_bytes(out, 0x0a, n.as_bytes());
                put_bytes(out, 0x12, v.as_bytes());
            }
            out.push(0x12);
            put_varint(out, sample as u64);
            if s.value != 0.0 {
                out.push(0x09);
                out.extend_from_slice(&s.value.to_le_bytes());
            }
            if s.timestamp_ms != 0 {
                out.push(0x10);
                put_varint(out, s.timestamp_ms as u64);
            }
        }
        &self.raw
    }

    /// The snappy-compressed protobuf of a request (block format, as Remote Write requires).
    pub fn encode(&mut self, samples: &[Sample]) -> &[u8] {
        self.encode_raw(samples);
        let max = snap::raw::max_compress_len(self.raw.len());
        if self.compressed.len() < max {
            self.compressed.resize(max, 0);
        }
        match self.snappy.compress(&self.raw, &mut self.compressed) {
            Ok(n) => &self.compressed[..n],
            // Only possible for inputs over snappy's 4 GiB limit, far above any request.
            Err(_) => &[],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::samples::{Series, stale_nan};
    use crate::proto::remote_write as pb;
    use proptest::prelude::*;
    use prost::Message;
    use std::sync::Arc;

    fn sample(pairs: &[(&str, &str)], ts: i64, value: f64) -> Sample {
        Sample { series: Arc::new(Series::new(pairs.iter().copied()).unwrap()), timestamp_ms: ts, value }
    }

    fn prost_request(samples: &[Sample], external: &[(&str, &str)]) -> pb::WriteRequest {
        pb::WriteRequest {
            timeseries: samples
                .iter()
                .map(|s| {
                    let mut labels: Vec<(String, String)> =
                        s.series.labels().map(|(n, v)| (n.to_string(), v.to_string())).collect();
                    for (n, v) in external {
                        if !labels.iter().any(|(existing, _)| existing == n) {
                            labels.push((n.to_string(), v.to_string()));
                        }
                    }
                    labels.sort();
                    pb::TimeSeries {
                        labels: labels.into_iter().map(|(name, value)| pb::Label { name, value }).collect(),
                        samples: vec![pb::Sample { value: s.value, timestamp: s.timestamp_ms }],
                    }
                })
                .collect(),
        }
    }

    #[test]
    fn matches_prost_byte_for_byte_with_external_labels_merged() {
        let samples = [
            sample(
                &[("__name__", "nvidia_smi_temperature_gpu"), ("uuid", "GPU-0"), ("job", "gpu")],
                1_700_000_000_123,
                59.0,
            ),
            sample(&[("__name__", "up"), ("cluster", "own"), ("job", "gpu")], 1_700_000_000_123, 0.0),
            sample(&[("__name__", "x"), ("zzz", "last")], 0, -1.5),
            sample(&[("__name__", "gone")], 5, stale_nan()),
        ];
        let external = [("cluster", "prod"), ("node", "gpu-node-1"), ("a", "first")];
        let mut enc = WriteEncoder::new(external.iter().map(|(n, v)| (n.to_string(), v.to_string())));
        let ours = enc.encode_raw(&samples).to_vec();
        assert_eq!(ours, prost_request(&samples, &external).encode_to_vec());
        let decoded = pb::WriteRequest::decode(&ours[..]).unwrap();
        let names: Vec<&str> = decoded.timeseries[1].labels.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["__name__", "a", "cluster", "job", "node"]);
        assert_eq!(decoded.timeseries[1].labels[2].value, "own", "a series' own label wins");
        assert_eq!(
            decoded.timeseries[3].samples[0].value.to_bits(),
            0x7ff0_0000_0000_0002,
            "stale markers keep their bits"
        );
        let compressed = enc.encode(&samples).to_vec();
        assert_eq!(snap::raw::Decoder::new().decompress_vec(&compressed).unwrap(), ours);
    }

    proptest! {
        #[test]
        fn round_trips(rows in proptest::collection::vec(
            (proptest::collection::btree_map("[a-z][a-z_]{0,7}", "[ -~é]{1,12}", 0..6), any::<i64>(), any::<f64>()), 0..30)
        ) {
            let samples: Vec<Sample> = rows.iter().map(|(labels, ts, v)| {
                let pairs: Vec<(&str, &str)> = std::iter::once(("__name__", "m")).chain(labels.iter().map(|(n, v)| (n.as_str(), v.as_str()))).collect();
                sample(&pairs, *ts, *v)
            }).collect();
            let mut enc = WriteEncoder::new([("cluster".to_string(), "c".to_string())]);
            let raw = snap::raw::Decoder::new().decompress_vec(enc.encode(&samples)).unwrap();
            prop_assert_eq!(&raw, &prost_request(&samples, &[("cluster", "c")]).encode_to_vec());
        }
    }
}
