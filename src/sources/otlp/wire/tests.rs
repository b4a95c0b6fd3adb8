use super::*;
use crate::event::{AckSet, SpanBatch};
use crate::sources::otlp::config::{ActionKind, AttributeAction, AttributeValue};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, ArrayValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use prost::Message;

pub(crate) fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(any_value::Value::StringValue(value.into())) }),
        key_strindex: 0,
    }
}

pub(crate) fn span(n: u8, name: &str, kind: i32, status: i32, nanos: u64) -> Span {
    Span {
        trace_id: vec![n; 16],
        span_id: vec![n + 1; 8],
        parent_span_id: if n.is_multiple_of(2) { vec![n + 2; 8] } else { vec![] },
        name: name.into(),
        kind,
        start_time_unix_nano: 1_700_000_000_000_000_000,
        end_time_unix_nano: 1_700_000_000_000_000_000 + nanos,
        attributes: vec![
            kv("http.method", "GET"),
            kv("secret", "s3cr3t"),
            KeyValue {
                key: "list".into(),
                value: Some(AnyValue {
                    value: Some(any_value::Value::ArrayValue(ArrayValue {
                        values: vec![AnyValue { value: Some(any_value::Value::IntValue(-5)) }],
                    })),
                }),
                key_strindex: 0,
            },
        ],
        events: vec![Event {
            time_unix_nano: 5,
            name: "retry".into(),
            attributes: vec![kv("n", "1")],
            dropped_attributes_count: 0,
        }],
        links: vec![Link { trace_id: vec![9; 16], span_id: vec![8; 8], flags: 1, ..Default::default() }],
        status: Some(Status { message: if status == 2 { "boom".into() } else { String::new() }, code: status }),
        flags: 0x101,
        ..Default::default()
    }
}

pub(crate) fn request() -> ExportTraceServiceRequest {
    let resource = |service: &str| Resource {
        attributes: vec![kv("service.name", service), kv("host.name", "h")],
        ..Default::default()
    };
    ExportTraceServiceRequest {
        resource_spans: vec![
            ResourceSpans {
                resource: Some(resource("gateway")),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "http".into(),
                        version: "1".into(),
                        ..Default::default()
                    }),
                    spans: vec![span(1, "GET /a", 2, 0, 1_000_000), span(2, "GET /b", 2, 2, 30_000_000)],
                    schema_url: "https://opentelemetry.io/schemas/1.21.0".into(),
                }],
                schema_url: "https://opentelemetry.io/schemas/1.21.0".into(),
            },
            ResourceSpans {
                resource: None,
                scope_spans: vec![ScopeSpans {
                    scope: None,
                    spans: vec![span(3, "work", 1, 1, 7)],
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            },
        ],
    }
}

fn options() -> ScanOptions {
    ScanOptions { observe: true, ..Default::default() }
}

fn round_trip(body: &Bytes, options: &ScanOptions) -> (Scanned, ExportTraceServiceRequest) {
    let scanned = scan_request(body, options).unwrap();
    let batch = SpanBatch::new(scanned.groups.clone(), AckSet::new());
    let decoded = ExportTraceServiceRequest::decode(batch.encode_to_vec().as_slice()).unwrap();
    (scanned, decoded)
}

#[test]
fn spans_pass_unchanged_and_without_copies() {
    let request = request();
    let body = Bytes::from(request.encode_to_vec());
    let (scanned, decoded) = round_trip(&body, &options());
    assert_eq!(decoded, request);
    assert_eq!(scanned.spans, 3);
    assert_eq!(scanned.rejected, 0);
    let range = body.as_ptr() as usize..body.as_ptr() as usize + body.len();
    for span in scanned.groups.iter().flat_map(|g| &g.scopes).flat_map(|s| &s.spans) {
        assert!(range.contains(&(span.as_ptr() as usize)), "a span that needs no change is a slice of the body");
    }
    let records: usize = scanned
        .groups
        .iter()
        .map(|g| g.resource.len() + g.schema_url.len() + g.scopes.iter().map(|s| s.message_len()).sum::<usize>())
        .sum();
    assert_eq!(scanned.bytes, records);
}

#[test]
fn reads_what_span_metrics_need() {
    let body = Bytes::from(request().encode_to_vec());
    let scanned = scan_request(&body, &options()).unwrap();
    assert_eq!(scanned.services, ["gateway", UNKNOWN_SERVICE]);
    let got: Vec<(u32, &str, i32, i32, u64)> = scanned
        .observations
        .iter()
        .map(|o| {
            let name = std::str::from_utf8(&body[o.name.start as usize..o.name.end as usize]).unwrap();
            (o.service, name, o.kind, o.status_code, o.duration_nanos)
        })
        .collect();
    assert_eq!(got, [(0, "GET /a", 2, 0, 1_000_000), (0, "GET /b", 2, 2, 30_000_000), (1, "work", 1, 1, 7)]);
    let quiet = scan_request(&body, &ScanOptions::default()).unwrap();
    assert!(quiet.observations.is_empty());
}

#[test]
fn a_span_without_a_name_is_observed_with_an_empty_name() {
    let mut request = request();
    request.resource_spans[1].scope_spans[0].spans[0].name.clear();
    let body = Bytes::from(request.encode_to_vec());
    let (scanned, decoded) = round_trip(&body, &options());
    assert_eq!(decoded, request);
    let last = scanned.observations.last().unwrap();
    assert_eq!((last.service, last.name.clone(), last.duration_nanos), (1, 0..0, 7));
}

#[test]
fn attribute_actions_change_only_what_they_name() {
    let request = request();
    let body = Bytes::from(request.encode_to_vec());
    let string = |v: &str| Some(AttributeValue::String(v.into()));
    let options = ScanOptions {
        resource_actions: AttrActions::new(&[
            AttributeAction { key: "deployment.environment".into(), action: ActionKind::Upsert, value: string("prod") },
            AttributeAction { key: "service.name".into(), action: ActionKind::Insert, value: string("fallback") },
        ]),
        span_actions: AttrActions::new(&[AttributeAction {
            key: "secret".into(),
            action: ActionKind::Delete,
            value: None,
        }]),
        observe: true,
    };
    let (scanned, decoded) = round_trip(&body, &options);
    assert_eq!(scanned.services, ["gateway", "fallback"], "metrics use the service name after the actions");
    let first = decoded.resource_spans[0].resource.clone().unwrap();
    // Attributes an action names move after the others.
    assert_eq!(
        first.attributes,
        vec![kv("host.name", "h"), kv("service.name", "gateway"), kv("deployment.environment", "prod")]
    );
    let second = decoded.resource_spans[1].resource.clone().unwrap();
    assert_eq!(second.attributes, vec![kv("deployment.environment", "prod"), kv("service.name", "fallback")]);
    for (rs, original) in decoded.resource_spans.iter().zip(&request.resource_spans) {
        for (got, want) in rs.scope_spans[0].spans.iter().zip(&original.scope_spans[0].spans) {
            let mut want = want.clone();
            want.attributes.retain(|a| a.key != "secret");
            assert_eq!(got, &want);
        }
    }
}

#[test]
fn spans_with_bad_ids_are_left_out_and_counted() {
    let mut request = request();
    request.resource_spans[0].scope_spans[0].spans[0].trace_id = vec![1; 15];
    request.resource_spans[1].scope_spans[0].spans[0].links[0].span_id = vec![];
    let body = Bytes::from(request.encode_to_vec());
    let (scanned, decoded) = round_trip(&body, &options());
    assert_eq!((scanned.spans, scanned.rejected), (1, 2));
    assert_eq!(scanned.rejection.as_deref(), Some("span \"GET /a\" left out: trace_id is not 16 bytes"));
    assert_eq!(decoded.resource_spans.len(), 1, "a resource left without spans is left out");
    assert_eq!(decoded.resource_spans[0].scope_spans[0].spans[0].name, "GET /b");
    assert_eq!(scanned.observations.len(), 1, "rejected spans are not in span metrics");
}

#[test]
fn malformed_bodies_are_refused_with_the_reason() {
    let good = request().encode_to_vec();
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (good[..good.len() - 3].to_vec(), "malformed OTLP protobuf: a field runs past the end of its message in"),
        (
            vec![0x0a, 0x05, 0x01, 0x02],
            "malformed OTLP protobuf: a field runs past the end of its message in ExportTraceServiceRequest",
        ),
        (
            vec![0x08, 0x01],
            "malformed OTLP protobuf: wire type 0 for field 1, which takes wire type 2 in ExportTraceServiceRequest",
        ),
        (vec![0xff; 12], "malformed OTLP protobuf: a varint longer than 10 bytes or over 64 bits in"),
        (
            // An unknown varint field of ten bytes whose last one carries bits past the 64th.
            [&[0x10][..], &[0xff; 9], &[0x02]].concat(),
            "malformed OTLP protobuf: a varint longer than 10 bytes or over 64 bits in ExportTraceServiceRequest",
        ),
        (
            // Field 1 << 29 is past the 32-bit key prost and Go accept.
            vec![0x82, 0x80, 0x80, 0x80, 0x10],
            "malformed OTLP protobuf: field key 4294967298 over 32 bits in ExportTraceServiceRequest",
        ),
        (vec![0x00], "malformed OTLP protobuf: field number 0 in ExportTraceServiceRequest"),
        (
            vec![0x0b],
            "malformed OTLP protobuf: wire type 3 for field 1, which takes wire type 2 in ExportTraceServiceRequest",
        ),
        (vec![0x13], "malformed OTLP protobuf: unsupported wire type 3 in ExportTraceServiceRequest"),
        (b"{\"resourceSpans\": []}".to_vec(), "malformed OTLP protobuf"),
    ];
    for (body, want) in cases {
        let err = scan_request(&Bytes::from(body.clone()), &options()).unwrap_err().to_string();
        assert!(err.starts_with(want), "{body:?}: {err}");
    }
    let mut bad_name = request();
    bad_name.resource_spans[0].scope_spans[0].spans[0].name = "\u{e9}t\u{e9}".into();
    let mut bytes = bad_name.encode_to_vec();
    let at = bytes.windows(2).position(|w| w == [0xc3, 0xa9]).unwrap();
    bytes[at] = 0xff;
    let err = scan_request(&Bytes::from(bytes), &options()).unwrap_err();
    assert_eq!(err, WireError { message: "Span", problem: Problem::Utf8(5) });
}

#[test]
fn deep_values_are_refused_not_overflowing_the_stack() {
    let mut value = AnyValue { value: Some(any_value::Value::IntValue(1)) };
    for _ in 0..200 {
        value = AnyValue { value: Some(any_value::Value::ArrayValue(ArrayValue { values: vec![value] })) };
    }
    let mut request = request();
    request.resource_spans[0].scope_spans[0].spans[0].attributes.push(KeyValue {
        key: "deep".into(),
        value: Some(value),
        key_strindex: 0,
    });
    let err = scan_request(&Bytes::from(request.encode_to_vec()), &options()).unwrap_err();
    assert_eq!(err.problem, Problem::TooDeep);
}

#[test]
fn an_empty_request_is_valid() {
    let scanned = scan_request(&Bytes::new(), &options()).unwrap();
    assert_eq!((scanned.spans, scanned.groups.len()), (0, 0));
}

proptest::proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
        let _ = scan_request(&Bytes::from(body), &options());
    }

    #[test]
    fn corrupted_requests_never_panic(at in 0usize..4096, byte in proptest::prelude::any::<u8>()) {
        let mut body = request().encode_to_vec();
        let at = at % body.len();
        body[at] = byte;
        if let Ok(scanned) = scan_request(&Bytes::from(body), &options()) {
            // Whatever passes the scan is a valid request for a strict decoder.
            let batch = SpanBatch::new(scanned.groups, AckSet::new());
            proptest::prop_assert!(ExportTraceServiceRequest::decode(batch.encode_to_vec().as_slice()).is_ok());
        }
    }
}
