//! The trace hot path without the network: a typical 10-span `ExportTraceServiceRequest` (an
//! HTTP server span and its client and internal children, ~10 attributes each, a Kubernetes
//! resource) → the receiver (memory check, validating scan, span metrics) → the batch processor
//! (merge per resource, close at 8192 spans) → the exporter's encoding of each batch.
//!
//! For comparison, `prost_decode_encode` is what a receiver that decodes requests into structs
//! (and an exporter that encodes them again) pays for the same request: the measurement behind
//! keeping spans in their wire form.
//!
//! `cargo bench --bench otlp_batch` (or `--profile profiling` to build faster); figures are per
//! span (Throughput::Elements).

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use prometheus_client::metrics::counter::Counter;
use prost::Message;
use sluice::sources::otlp::config::OtlpSourceConfig;
use sluice::sources::otlp::span_metrics::{SpanMetrics, SpanMetricsHandles};
use sluice::sources::otlp::wire::{ScanOptions, scan_request};
use sluice::sources::otlp::{Batcher, BatcherSettings, Memory, Receiver, Transport};
use sluice::telemetry::metrics::OtlpMetrics;
use std::hint::black_box;
use std::sync::Arc;
use tokio::sync::mpsc;

const SPANS: usize = 10;

fn string(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(any_value::Value::StringValue(value.into())) }),
        key_strindex: 0,
    }
}

fn int(key: &str, value: i64) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(any_value::Value::IntValue(value)) }),
        key_strindex: 0,
    }
}

/// Request `n` of a stream of typical requests (distinct ids).
fn request(n: u64) -> ExportTraceServiceRequest {
    let trace_id: Vec<u8> = (n as u128 * 0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835).to_be_bytes().to_vec();
    let spans = (0..SPANS as u64)
        .map(|i| {
            let kind = if i == 0 {
                2
            } else if i % 3 == 0 {
                1
            } else {
                3
            };
            let start = 1_764_000_000_000_000_000 + n * 1_000_000 + i * 1000;
            Span {
                trace_id: trace_id.clone(),
                span_id: (n * 16 + i + 1).to_be_bytes().to_vec(),
                parent_span_id: if i == 0 { vec![] } else { (n * 16 + 1).to_be_bytes().to_vec() },
                name: ["POST /v1/chat/completions", "GET qdrant", "SELECT memories", "render"][i as usize % 4].into(),
                kind,
                start_time_unix_nano: start,
                end_time_unix_nano: start + 1_000_000 + i * 250_000,
                attributes: vec![
                    string("http.request.method", "POST"),
                    string("url.path", "/v1/chat/completions"),
                    int("http.response.status_code", 200),
                    string("server.address", "gateway.platform.svc.cluster.local"),
                    int("server.port", 8080),
                    string("network.protocol.version", "1.1"),
                    string("user_agent.original", "python-requests/2.32.3"),
                    string("model", "llama-3.1-8b-instruct"),
                    int("tokens.input", 512 + i as i64),
                    string("user_id", "u-42"),
                ],
                status: Some(Status { message: String::new(), code: if i == 7 { 2 } else { 0 } }),
                flags: 0x100,
                ..Default::default()
            }
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    string("service.name", "gateway"),
                    string("service.version", "2.4.1"),
                    string("service.instance.id", "gateway-7d9f8c6b5-x2k4p"),
                    string("telemetry.sdk.language", "python"),
                    string("telemetry.sdk.name", "opentelemetry"),
                    string("telemetry.sdk.version", "1.38.0"),
                    string("k8s.namespace.name", "platform"),
                    string("k8s.pod.name", "gateway-7d9f8c6b5-x2k4p"),
                    string("host.name", "node-3"),
                ],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "opentelemetry.instrumentation.fastapi".into(),
                    version: "0.59b0".into(),
                    ..Default::default()
                }),
                spans,
                schema_url: "https://opentelemetry.io/schemas/1.11.0".into(),
            }],
            schema_url: String::new(),
        }],
    }
}

fn bodies() -> Vec<Bytes> {
    (0..256).map(|n| Bytes::from(request(n).encode_to_vec())).collect()
}

fn bench(c: &mut Criterion) {
    let bodies = bodies();
    let mut group = c.benchmark_group("otlp_batch");
    group.throughput(Throughput::Elements(SPANS as u64));
    eprintln!("a typical 10-span request is {} bytes", bodies[0].len());

    // The whole path: receiver → batcher → encoded export request.
    let config: OtlpSourceConfig = serde_saphyr::from_str("{memory_limit: 1GiB}").expect("config");
    let metrics = OtlpMetrics::default();
    let memory = Memory::new(1 << 40, Default::default());
    let span_metrics = Arc::new(SpanMetrics::new(SpanMetricsHandles::default()));
    let (tx, mut rx) = mpsc::unbounded_channel();
    let receiver =
        Receiver::new(&config, "bench", &metrics, Some(span_metrics), Arc::clone(&memory), Counter::default(), tx);
    let mut batcher = Batcher::new(BatcherSettings::from(&config.batch), Arc::clone(&memory), &metrics, "bench");
    let mut n = 0;
    let mut out = Vec::with_capacity(4 << 20);
    group.bench_function("receive_batch_encode", |b| {
        b.iter(|| {
            n = (n + 1) % bodies.len();
            let answer = receiver.export(bodies[n].clone(), Transport::Grpc);
            debug_assert!(answer.is_ok());
            while let Ok(accepted) = rx.try_recv() {
                batcher.add(accepted);
            }
            for closed in batcher.take_closed() {
                let batch = batcher.seal(closed);
                out.clear();
                batch.encode(&mut out);
                black_box(&out);
            }
        })
    });

    let options = ScanOptions::default();
    group.bench_function("scan_only", |b| {
        b.iter(|| {
            n = (n + 1) % bodies.len();
            black_box(scan_request(&bodies[n], &options).map(|s| s.spans).unwrap_or(0))
        })
    });

    group.bench_function("prost_decode_encode", |b| {
        b.iter(|| {
            n = (n + 1) % bodies.len();
            let decoded = ExportTraceServiceRequest::decode(bodies[n].clone()).unwrap_or_default();
            out.clear();
            let _ = decoded.encode(&mut out);
            black_box(&out);
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
