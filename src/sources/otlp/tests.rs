use super::*;
use crate::sources::otlp::config::OtlpSourceConfig;
use crate::sources::otlp::span_metrics::SpanMetricsHandles;
use prost::Message;

fn config(yaml: &str) -> OtlpSourceConfig {
    serde_saphyr::from_str(yaml).unwrap()
}

struct Setup {
    receiver: Receiver,
    rx: mpsc::UnboundedReceiver<Accepted>,
    memory: Arc<Memory>,
    metrics: OtlpMetrics,
    invalid: Counter,
    span_metrics: Arc<SpanMetrics>,
}

fn setup(config: &OtlpSourceConfig) -> Setup {
    let metrics = OtlpMetrics::default();
    let memory = Memory::new(config.memory_limit.as_usize(), Gauge::default());
    let (tx, rx) = mpsc::unbounded_channel();
    let invalid = Counter::default();
    let span_metrics = Arc::new(SpanMetrics::new(SpanMetricsHandles::default()));
    let receiver = Receiver::new(
        config,
        "otlp",
        &metrics,
        Some(Arc::clone(&span_metrics)),
        Arc::clone(&memory),
        invalid.clone(),
        tx,
    );
    Setup { receiver, rx, memory, metrics, invalid, span_metrics }
}

fn body() -> Bytes {
    Bytes::from(super::wire::tests::request().encode_to_vec())
}

fn counter(family: &prometheus_client::metrics::family::Family<SourceTransportReason, Counter>, reason: &str) -> u64 {
    family
        .get_or_create(&SourceTransportReason {
            source: "otlp".into(),
            transport: "grpc".into(),
            reason: reason.into(),
        })
        .get()
}

#[test]
fn accepts_counts_and_records_span_metrics() {
    let mut s = setup(&config("{}"));
    let accept = s.receiver.export(body(), Transport::Grpc).unwrap();
    assert_eq!(accept, Accept::default());
    let accepted = s.rx.try_recv().unwrap();
    assert_eq!(accepted.spans, 3);
    assert_eq!(s.memory.used(), accepted.bytes);
    let received =
        s.metrics.received_spans.get_or_create(&SourceTransport { source: "otlp".into(), transport: "grpc".into() });
    assert_eq!(received.get(), 3);
    assert_eq!(s.span_metrics.get("gateway", "GET /b", "SPAN_KIND_SERVER", "STATUS_CODE_ERROR").map(|m| m.0), Some(1));
    assert_eq!(
        s.span_metrics.get("unknown_service", "work", "SPAN_KIND_INTERNAL", "STATUS_CODE_OK").map(|m| m.0),
        Some(1)
    );
}

#[test]
fn refuses_above_the_memory_limit_and_accepts_again_once_released() {
    let one = body().len();
    let mut s = setup(&config(&format!("{{memory_limit: {}, max_recv_message_size: {one}}}", one * 2)));
    s.receiver.export(body(), Transport::Grpc).unwrap();
    let first = s.rx.try_recv().unwrap();
    s.receiver.export(body(), Transport::Grpc).unwrap();
    let refused = s.receiver.export(body(), Transport::Grpc).unwrap_err();
    assert!(matches!(refused, Refusal::Busy { limit, .. } if limit == one * 2), "{refused:?}");
    assert_eq!(counter(&s.metrics.refused_spans, "memory_limit"), 3, "the refused spans are counted");
    assert_eq!(
        s.span_metrics.get("gateway", "GET /a", "SPAN_KIND_SERVER", "STATUS_CODE_UNSET").map(|m| m.0),
        Some(2),
        "refused spans are not in span metrics: the client sends them again"
    );
    s.memory.release(first.bytes);
    s.receiver.export(body(), Transport::Grpc).unwrap();
}

#[test]
fn malformed_bodies_and_partial_success() {
    let s = setup(&config("{}"));
    let err = s.receiver.export(Bytes::from_static(b"\x0a\x09garbage"), Transport::Grpc).unwrap_err();
    assert_eq!(
        err,
        Refusal::Malformed(
            "malformed OTLP protobuf: a field runs past the end of its message in ExportTraceServiceRequest".into()
        )
    );
    assert_eq!(counter(&s.metrics.rejected_requests, "malformed"), 1);
    let mut request = super::wire::tests::request();
    request.resource_spans[0].scope_spans[0].spans[1].span_id = vec![1, 2, 3];
    let accept = s.receiver.export(Bytes::from(request.encode_to_vec()), Transport::Grpc).unwrap();
    assert_eq!(
        accept,
        Accept { rejected_spans: 1, error_message: "span \"GET /b\" left out: span_id is not 8 bytes".into() }
    );
    assert_eq!(s.invalid.get(), 1);
    assert!(s.memory.used() > 0);
}

#[test]
fn counts_spans_without_validating() {
    assert_eq!(count_spans(&body()), 3);
    assert_eq!(count_spans(b"\xff\xff"), 0);
    assert_eq!(count_spans(&[]), 0);
}

#[test]
fn refuses_while_shutting_down() {
    let Setup { receiver, rx, memory, metrics, .. } = setup(&config("{}"));
    drop(rx);
    assert_eq!(receiver.export(body(), Transport::Http).unwrap_err(), Refusal::ShuttingDown);
    assert_eq!(memory.used(), 0);
    let refused = metrics.refused_spans.get_or_create(&SourceTransportReason {
        source: "otlp".into(),
        transport: "http".into(),
        reason: "shutting_down".into(),
    });
    assert_eq!(refused.get(), 3);
}

#[test]
fn config_defaults_and_validation() {
    let c = config("{}");
    assert_eq!(c.grpc_address(), Some("0.0.0.0:4317".parse().unwrap()));
    assert_eq!(c.http_address(), Some("0.0.0.0:4318".parse().unwrap()));
    assert_eq!((c.batch.send_batch_size, c.batch.timeout.0), (8192, Duration::from_millis(200)));
    assert!(c.validate().is_empty());
    let off = config("{grpc_listen_address: null, http_listen_address: 127.0.0.1:4318}");
    assert_eq!(off.grpc_address(), None);
    let bad = config(
        "{grpc_listen_address: nowhere, batch: {send_batch_size: 10, send_batch_max_size: 5}, resource_attributes: [{key: a, action: upsert}, {key: b, action: delete, value: 1}]}",
    );
    let messages: Vec<String> = bad.validate().into_iter().map(|(_, m)| m).collect();
    assert_eq!(
        messages,
        [
            "grpc_listen_address `nowhere` is not an address such as 0.0.0.0:4317",
            "batch.send_batch_max_size must be 0 or at least send_batch_size",
            "resource_attributes[0] (a): this action needs a value",
            "resource_attributes[1] (b): delete takes no value",
        ]
    );
    let typed =
        config("{span_attributes: [{key: n, action: insert, value: 3}, {key: f, action: insert, value: true}]}");
    assert_eq!(typed.span_attributes[0].value, Some(config::AttributeValue::Int(3)));
    assert_eq!(typed.span_attributes[1].value, Some(config::AttributeValue::Bool(true)));
}
