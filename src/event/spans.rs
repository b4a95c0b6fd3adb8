//! Span batches: OTLP `ResourceSpans` as the receivers decoded them. A span is decoded once at
//! the receiver and encoded once by each exporter.

use super::AckSet;
use opentelemetry_proto::tonic::trace::v1::ResourceSpans;

#[derive(Debug, Clone, Default)]
pub struct SpanBatch {
    pub resource_spans: Vec<ResourceSpans>,
    /// Spans in the batch.
    pub spans: usize,
    /// Encoded size, for queue accounting.
    pub bytes: usize,
    pub acks: AckSet,
}
