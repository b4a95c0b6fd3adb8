//! Span batches: OTLP spans kept in their wire form.
//!
//! The receiver validates each request once (structure, UTF-8, id lengths) and keeps every span
//! as a slice of the request body (`Bytes`, no copy) unless a configured attribute action has to
//! change it. Batches group spans by resource and instrumentation scope (merged across requests
//! when those are byte-for-byte equal), and an exporter writes an `ExportTraceServiceRequest` by
//! concatenating the slices: protobuf's repeated fields concatenate, so a span is decoded and
//! encoded by nobody on its way through.
//!
//! Contract: every `Bytes` held here is a complete, valid protobuf *field record* (tag, length
//! and payload) of the message named in its doc; empty means the field is absent.

use super::AckSet;
use crate::proto::wire::{put_varint, varint_len};
use bytes::{BufMut, Bytes};

/// Field numbers of `ExportTraceServiceRequest.resource_spans` and `ResourceSpans.scope_spans`.
const REQUEST_RESOURCE_SPANS: u32 = 1;
const RESOURCE_SPANS_SCOPE_SPANS: u32 = 2;

/// The spans of one instrumentation scope of one resource.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScopeGroup {
    /// `ScopeSpans.scope` record (field 1), or empty.
    pub scope: Bytes,
    /// `ScopeSpans.schema_url` record (field 3), or empty.
    pub schema_url: Bytes,
    /// `ScopeSpans.spans` records (field 2), one per span.
    pub spans: Vec<Bytes>,
}

impl ScopeGroup {
    /// Length of the `ScopeSpans` message (without its own tag and length).
    pub fn message_len(&self) -> usize {
        self.scope.len() + self.schema_url.len() + self.spans.iter().map(Bytes::len).sum::<usize>()
    }
}

/// The spans of one resource.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResourceGroup {
    /// `ResourceSpans.resource` record (field 1), or empty.
    pub resource: Bytes,
    /// `ResourceSpans.schema_url` record (field 3), or empty.
    pub schema_url: Bytes,
    pub scopes: Vec<ScopeGroup>,
}

impl ResourceGroup {
    /// Length of the `ResourceSpans` message (without its own tag and length).
    pub fn message_len(&self) -> usize {
        self.resource.len()
            + self.schema_url.len()
            + self.scopes.iter().map(|s| record_len(RESOURCE_SPANS_SCOPE_SPANS, s.message_len())).sum::<usize>()
    }

    pub fn span_count(&self) -> usize {
        self.scopes.iter().map(|s| s.spans.len()).sum()
    }
}

/// Spans on their way from a receiver to the trace sinks.
#[derive(Debug, Clone, Default)]
pub struct SpanBatch {
    pub resources: Vec<ResourceGroup>,
    /// Spans in the batch.
    pub spans: usize,
    /// Encoded size of the export request, for queue accounting.
    pub bytes: usize,
    pub acks: AckSet,
}

impl SpanBatch {
    /// A batch of `resources`, its counts computed.
    pub fn new(resources: Vec<ResourceGroup>, acks: AckSet) -> SpanBatch {
        let spans = resources.iter().map(ResourceGroup::span_count).sum();
        let mut batch = SpanBatch { resources, spans, bytes: 0, acks };
        batch.bytes = batch.encoded_len();
        batch
    }

    /// Length of the encoded `ExportTraceServiceRequest`.
    pub fn encoded_len(&self) -> usize {
        self.resources.iter().map(|r| record_len(REQUEST_RESOURCE_SPANS, r.message_len())).sum()
    }

    /// Appends the encoded `ExportTraceServiceRequest` to `out`.
    pub fn encode(&self, out: &mut impl BufMut) {
        for resource in &self.resources {
            put_key_len(out, REQUEST_RESOURCE_SPANS, resource.message_len());
            out.put_slice(&resource.resource);
            for scope in &resource.scopes {
                put_key_len(out, RESOURCE_SPANS_SCOPE_SPANS, scope.message_len());
                out.put_slice(&scope.scope);
                for span in &scope.spans {
                    out.put_slice(span);
                }
                out.put_slice(&scope.schema_url);
            }
            out.put_slice(&resource.schema_url);
        }
    }

    /// The encoded `ExportTraceServiceRequest`.
    pub fn encode_to_vec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.encode(&mut out);
        out
    }
}

/// Length of a length-delimited field record whose payload is `len` bytes.
pub fn record_len(field: u32, len: usize) -> usize {
    varint_len(u64::from(field) << 3 | 2) + varint_len(len as u64) + len
}

/// Writes the key and length of a length-delimited field.
pub fn put_key_len(out: &mut impl BufMut, field: u32, len: usize) {
    put_varint(out, u64::from(field) << 3 | 2);
    put_varint(out, len as u64);
}

/// A length-delimited field record: key, length, `payload`.
pub fn record(field: u32, payload: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(record_len(field, payload.len()));
    put_key_len(&mut out, field, payload.len());
    out.extend_from_slice(payload);
    Bytes::from(out)
}

/// `google.rpc.Status` and `RetryInfo`: how a gRPC server tells a client when to retry (OTLP
/// receivers send it with `UNAVAILABLE`, exporters read it). Shared by both ends of the trace
/// signal.
pub mod rpc {
    use prost::Message;

    pub const RETRY_INFO_TYPE_URL: &str = "type.googleapis.com/google.rpc.RetryInfo";
    /// The trailer in which the OpenTelemetry Python exporter looks for a bare `RetryInfo`.
    pub const RETRY_INFO_TRAILER: &str = "google.rpc.retryinfo-bin";

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Status {
        #[prost(int32, tag = "1")]
        pub code: i32,
        #[prost(string, tag = "2")]
        pub message: String,
        #[prost(message, repeated, tag = "3")]
        pub details: Vec<Any>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Any {
        #[prost(string, tag = "1")]
        pub type_url: String,
        #[prost(bytes = "vec", tag = "2")]
        pub value: Vec<u8>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct RetryInfo {
        #[prost(message, optional, tag = "1")]
        pub retry_delay: Option<Duration>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Duration {
        #[prost(int64, tag = "1")]
        pub seconds: i64,
        #[prost(int32, tag = "2")]
        pub nanos: i32,
    }

    /// An encoded `RetryInfo` asking for `delay`.
    pub fn retry_info(delay: std::time::Duration) -> Vec<u8> {
        let seconds = i64::try_from(delay.as_secs()).unwrap_or(i64::MAX);
        RetryInfo { retry_delay: Some(Duration { seconds, nanos: delay.subsec_nanos() as i32 }) }.encode_to_vec()
    }

    /// An encoded `google.rpc.Status` carrying a `RetryInfo`.
    pub fn status_with_retry_info(code: i32, message: &str, delay: std::time::Duration) -> Vec<u8> {
        Status {
            code,
            message: message.to_string(),
            details: vec![Any { type_url: RETRY_INFO_TYPE_URL.into(), value: retry_info(delay) }],
        }
        .encode_to_vec()
    }

    /// The retry delay of an encoded `google.rpc.Status`, if it carries a `RetryInfo`.
    pub fn retry_delay(status_details: &[u8]) -> Option<std::time::Duration> {
        let status = Status::decode(status_details).ok()?;
        let info = status.details.iter().find(|d| d.type_url == RETRY_INFO_TYPE_URL)?;
        let delay = RetryInfo::decode(info.value.as_slice()).ok()?.retry_delay?;
        let seconds = u64::try_from(delay.seconds).ok()?;
        let nanos = u32::try_from(delay.nanos).ok().filter(|n| *n < 1_000_000_000)?;
        Some(std::time::Duration::new(seconds, nanos))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
    use prost::Message;

    #[test]
    fn retry_info_round_trip() {
        let delay = std::time::Duration::from_millis(1500);
        assert_eq!(rpc::retry_delay(&rpc::status_with_retry_info(14, "busy", delay)), Some(delay));
        assert_eq!(rpc::retry_delay(&rpc::Status { code: 14, ..Default::default() }.encode_to_vec()), None);
        assert_eq!(rpc::retry_delay(b"\xff\xff"), None);
    }

    #[test]
    fn encodes_what_prost_decodes() {
        let span =
            |n: u8| Span { trace_id: vec![n; 16], span_id: vec![n; 8], name: format!("s{n}"), ..Default::default() };
        let resource = Resource { attributes: vec![], dropped_attributes_count: 3, entity_refs: vec![] };
        let scope = InstrumentationScope { name: "lib".into(), ..Default::default() };
        let group = ResourceGroup {
            resource: record(1, &resource.encode_to_vec()),
            schema_url: record(3, b"https://schema"),
            scopes: vec![
                ScopeGroup {
                    scope: record(1, &scope.encode_to_vec()),
                    schema_url: Bytes::new(),
                    spans: (0..200).map(|n| record(2, &span(n).encode_to_vec())).collect(),
                },
                ScopeGroup {
                    scope: Bytes::new(),
                    schema_url: record(3, b"x"),
                    spans: vec![record(2, &span(7).encode_to_vec())],
                },
            ],
        };
        let batch = SpanBatch::new(vec![group.clone(), group], AckSet::new());
        assert_eq!(batch.spans, 402);
        let encoded = batch.encode_to_vec();
        assert_eq!(encoded.len(), batch.bytes);
        let decoded = ExportTraceServiceRequest::decode(encoded.as_slice()).unwrap();
        let want = ResourceSpans {
            resource: Some(resource),
            schema_url: "https://schema".into(),
            scope_spans: vec![
                ScopeSpans { scope: Some(scope), spans: (0..200).map(span).collect(), schema_url: String::new() },
                ScopeSpans { scope: None, spans: vec![span(7)], schema_url: "x".into() },
            ],
        };
        assert_eq!(decoded.resource_spans, vec![want.clone(), want]);
    }
}
