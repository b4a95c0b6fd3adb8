//! Traces end to end: the real OpenTelemetry SDK for Python → sluice's OTLP receivers → the
//! OTLP exporter → a test OTLP receiver standing in for Jaeger; refusals, retries, malformed
//! requests, span metrics and the stack's HighTraceErrorRate alert (evaluated by promtool).
//!
//! The SDK runs with `$SLUICE_TEST_PYTHON` (the test venv of scripts/test.sh); without it these
//! tests fail rather than skip.

use crate::support::agent::{Agent, AgentSetup, free_port};
use crate::support::loki::TestLoki;
use crate::support::otlp::{Received, TestOtlp, hex};
use bytes::{Buf, BufMut, Bytes};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/traces/send_traces.py");
const DEFAULT_PIPELINE: &str = include_str!("../../pipelines/structured-json.yaml");

struct Ports {
    grpc: u16,
    http: u16,
}

impl Ports {
    fn new() -> Ports {
        Ports { grpc: free_port(), http: free_port() }
    }
    fn grpc(&self) -> String {
        format!("127.0.0.1:{}", self.grpc)
    }
    fn http_url(&self) -> String {
        format!("http://127.0.0.1:{}/v1/traces", self.http)
    }
}

fn config(ports: &Ports, receiver: &TestOtlp, source_extra: &str, sink_extra: &str) -> String {
    format!(
        "sources:\n  otlp:\n    type: otlp\n    grpc_listen_address: 127.0.0.1:{}\n    http_listen_address: 127.0.0.1:{}\n{source_extra}sinks:\n  jaeger:\n    type: otlp\n    endpoint: {}\n    backoff: {{min_period: 50ms, max_period: 500ms}}\n{sink_extra}",
        ports.grpc,
        ports.http,
        receiver.endpoint()
    )
}

async fn start(body: &str) -> Agent {
    Agent::start(AgentSetup { body, pipelines: &[] }).await
}

/// Runs the SDK script; returns its JSON output.
async fn python(args: &[&str], timeout: Duration) -> Value {
    let interpreter = std::env::var("SLUICE_TEST_PYTHON").expect(
        "SLUICE_TEST_PYTHON must name the python of the test venv with the OpenTelemetry SDK (scripts/test.sh sets it)",
    );
    let child = tokio::process::Command::new(&interpreter)
        .arg(SCRIPT)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {interpreter}: {e}"));
    let out = tokio::time::timeout(timeout, child.wait_with_output())
        .await
        .expect("the SDK script finishes in time")
        .expect("the SDK script runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "send_traces.py {args:?} failed: {stderr}");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("bad output ({e}): {stderr}"))
}

/// Waits until the test receiver holds `n` spans; on timeout, fails with the agent's log.
async fn wait_spans(receiver: &TestOtlp, agent: Agent, n: usize, timeout: Duration) -> Agent {
    let deadline = tokio::time::Instant::now() + timeout;
    while receiver.span_count() < n {
        if tokio::time::Instant::now() > deadline {
            let metrics = agent.metrics().await.0;
            let (_, log) = agent.stop().await;
            panic!(
                "{} of {n} spans arrived ({:?} requests, refused)\n{metrics}\n{log}",
                receiver.span_count(),
                receiver.requests()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    agent
}

fn exports(out: &Value) -> Vec<String> {
    out["exports"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect()
}

fn kind_number(kind: &str) -> i32 {
    ["SPAN_KIND_UNSPECIFIED", "SPAN_KIND_INTERNAL", "SPAN_KIND_SERVER", "SPAN_KIND_CLIENT"]
        .iter()
        .position(|k| *k == kind)
        .unwrap_or(99) as i32
}

fn by_span_id(spans: &[Received]) -> BTreeMap<String, Received> {
    spans.iter().map(|s| (s.span_id(), s.clone())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_traces_over_grpc_and_http_arrive_intact_and_share_ids_with_logs() {
    let receiver = TestOtlp::start().await;
    let loki = TestLoki::start().await;
    let ports = Ports::new();
    let body = format!(
        "{}    headers: {{x-scope: sluice-test}}\n  loki:\n    type: loki\n    url: {}\n    batch_wait: 100ms\n",
        config(&ports, &receiver, "", ""),
        loki.url()
    )
    .replace("sources:\n", "sources:\n  app:\n    type: stdin\n    labels: {job: app}\n");
    let agent =
        Agent::start(AgentSetup { body: &body, pipelines: &[("structured-json.yaml", DEFAULT_PIPELINE)] }).await;

    let out = python(&["nested", "--grpc", &ports.grpc(), "--http", &ports.http_url()], Duration::from_secs(60)).await;
    assert_eq!(exports(&out), ["SUCCESS", "SUCCESS"]);
    let sent = out["spans"].as_array().unwrap();
    assert_eq!(sent.len(), 8);
    let mut agent = wait_spans(&receiver, agent, 8, Duration::from_secs(20)).await;
    let got = by_span_id(&receiver.spans());
    assert_eq!(got.len(), 8, "every span once");
    for want in sent {
        let id = want["span_id"].as_str().unwrap();
        let span = got.get(id).unwrap_or_else(|| panic!("span {id} did not arrive"));
        assert_eq!(span.trace_id(), want["trace_id"].as_str().unwrap());
        assert_eq!(span.parent_span_id(), want["parent_span_id"].as_str().unwrap());
        assert_eq!(span.span.name, want["name"].as_str().unwrap());
        assert_eq!(span.span.kind, kind_number(want["kind"].as_str().unwrap()));
        let status = span.span.status.clone().unwrap_or_default();
        assert_eq!(status.code as i64, want["status_code"].as_i64().unwrap());
        assert_eq!(status.message, want["status_message"].as_str().unwrap());
        assert_eq!(span.span.start_time_unix_nano, want["start"].as_u64().unwrap());
        assert_eq!(span.span.end_time_unix_nano, want["end"].as_u64().unwrap());
        let attributes: BTreeMap<String, String> = want["attributes"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
            .collect();
        assert_eq!(span.attributes(), attributes, "attributes of {}", span.span.name);
        assert_eq!(span.resource.get("service.name").map(String::as_str), want["service"].as_str());
        assert_eq!(span.resource.get("service.version").map(String::as_str), Some("1.2.3"));
    }
    // The five nested spans: one trace, each the parent of the next, the root without parent.
    let grpc: Vec<&Value> = sent.iter().filter(|s| s["transport"] == "grpc").collect();
    assert_eq!(grpc.len(), 5);
    let trace: BTreeSet<&str> = grpc.iter().map(|s| s["trace_id"].as_str().unwrap()).collect();
    assert_eq!(trace.len(), 1);
    let mut chain = vec![grpc.iter().find(|s| s["parent_span_id"] == "").expect("a root")];
    while let Some(child) = grpc.iter().find(|s| s["parent_span_id"] == chain[chain.len() - 1]["span_id"]) {
        chain.push(child);
    }
    assert_eq!(chain.len(), 5, "five levels");
    let deepest = got.get(chain[4]["span_id"].as_str().unwrap()).unwrap();
    assert_eq!(deepest.span.events.len(), 1);
    assert_eq!(deepest.span.events[0].name, "timeout");
    assert!(
        receiver.metadata().contains(&("x-scope".to_string(), "sluice-test".to_string())),
        "configured headers are sent"
    );

    // Logs ↔ traces: a log line of the same trace, through the shipped pipeline, carries the
    // same text as the exported span's id.
    let trace_id = chain[0]["trace_id"].as_str().unwrap();
    let span_id = chain[0]["span_id"].as_str().unwrap();
    let exported = hex(&got[span_id].span.trace_id);
    assert_eq!(exported.len(), 32);
    assert!(exported.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f')), "{exported}");
    let line = format!(
        r#"{{"timestamp":"{}","level":"INFO","service":"gateway","message":"request completed","trace_id":"{trace_id}","span_id":"{span_id}"}}"#,
        crate::support::lines::rfc3339(crate::support::lines::nanos_ago(5))
    );
    agent.write_lines([line]).await;
    loki.wait_for(1, Duration::from_secs(20)).await;
    let entry = &loki.stored()[0];
    assert_eq!(entry.metadata.get("trace_id"), Some(&exported), "Loki's trace_id and Jaeger's are the same text");
    assert_eq!(entry.metadata.get("span_id"), Some(&hex(&got[span_id].span.span_id)));

    let metrics = agent.metrics().await;
    assert_eq!(metrics.sum("sluice_otlp_received_spans_total", &[("transport", "grpc")]), 5.0);
    assert_eq!(metrics.sum("sluice_otlp_received_spans_total", &[("transport", "http")]), 3.0);
    assert_eq!(metrics.sum("sluice_source_lines_total", &[("source", "otlp")]), 8.0);
    assert_eq!(metrics.sum("sluice_sink_lines_sent_total", &[("sink", "jaeger")]), 8.0);
    assert_eq!(metrics.sum("sluice_sink_dropped_total", &[]), 0.0);
    assert_eq!(metrics.sum("sluice_source_dropped_total", &[]), 0.0);
    assert_eq!(agent.stop().await.0, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exporter_target_unavailable_for_20s_then_every_span_arrives() {
    let receiver = TestOtlp::start().await;
    receiver.unavailable_for(Duration::from_secs(20));
    let ports = Ports::new();
    let agent = start(&config(&ports, &receiver, "", "")).await;
    let started = tokio::time::Instant::now();
    let args = ["load", "--grpc", &ports.grpc(), "--http", &ports.http_url(), "--exports", "6", "--spans", "50"];
    let out = python(&args, Duration::from_secs(60)).await;
    assert_eq!(exports(&out), vec!["SUCCESS"; 6], "sluice accepts while its exporter retries");
    let agent = wait_spans(&receiver, agent, 300, Duration::from_secs(60)).await;
    assert!(started.elapsed() >= Duration::from_secs(19), "nothing was delivered while the target refused");
    let spans = receiver.spans();
    assert_eq!(spans.len(), 300);
    assert_eq!(by_span_id(&spans).len(), 300, "no span twice");
    let (_, refused) = receiver.requests();
    assert!(refused >= 2, "the target refused {refused} requests");
    let metrics = agent.metrics().await;
    assert!(metrics.sum("sluice_sink_retries_total", &[("sink", "jaeger")]) >= refused as f64);
    assert_eq!(metrics.sum("sluice_sink_lines_sent_total", &[("sink", "jaeger")]), 300.0);
    assert_eq!(metrics.sum("sluice_sink_dropped_total", &[]), 0.0);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while agent.metrics().await.sum("sluice_otlp_memory_bytes", &[]) != 0.0 {
        assert!(tokio::time::Instant::now() < deadline, "every batch's memory is given back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(agent.stop().await.0, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_queue_answers_retryable_refusals_and_the_sdk_retry_delivers() {
    let receiver = TestOtlp::start().await;
    receiver.set_unavailable(true);
    let ports = Ports::new();
    let body = config(
        &ports,
        &receiver,
        "    memory_limit: 24KiB\n    max_recv_message_size: 16KiB\n    retry_after: 1s\n",
        "    queue: {max_bytes: 8KiB}\n    backoff: {min_period: 50ms, max_period: 200ms}\n",
    )
    .replace("    backoff: {min_period: 50ms, max_period: 500ms}\n", "");
    let agent = start(&body).await;
    // One SDK process per transport, each exporting 8 times 20 spans.
    let (grpc, http) = (ports.grpc(), ports.http_url());
    let grpc_sdk = tokio::spawn(async move {
        python(&["load", "--grpc", &grpc, "--exports", "8", "--spans", "20"], Duration::from_secs(120)).await
    });
    let http_sdk = tokio::spawn(async move {
        python(&["load", "--http", &http, "--exports", "8", "--spans", "20"], Duration::from_secs(120)).await
    });
    // Wait until both receivers refused a request, then let the exporter's target recover.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let m = agent.metrics().await;
        let refused =
            |t: &str| m.sum("sluice_otlp_refused_spans_total", &[("transport", t), ("reason", "memory_limit")]);
        if refused("grpc") > 0.0 && refused("http") > 0.0 {
            assert!(m.sum("sluice_otlp_memory_bytes", &[]) > 0.0);
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no refusal on both transports: {}", m.0);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    receiver.set_unavailable(false);
    for sdk in [grpc_sdk, http_sdk] {
        assert_eq!(exports(&sdk.await.unwrap()), vec!["SUCCESS"; 8], "the SDK's retries delivered every export");
    }
    let agent = wait_spans(&receiver, agent, 320, Duration::from_secs(30)).await;
    let spans = receiver.spans();
    assert_eq!(by_span_id(&spans).len(), 320);
    assert_eq!(spans.len(), 320, "no span twice: a refused request was not kept");
    let metrics = agent.metrics().await;
    assert_eq!(metrics.sum("sluice_otlp_received_spans_total", &[]), 320.0);
    assert_eq!(metrics.sum("sluice_sink_dropped_total", &[]), 0.0);
    assert_eq!(metrics.sum("sluice_source_dropped_total", &[]), 0.0);
    assert_eq!(agent.stop().await.0, Some(0));
}

/// `POST path` with a body on the OTLP HTTP port: (status, headers, body).
async fn post(port: u16, path: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, String, Vec<u8>) {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
    let mut request =
        format!("POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response))
        .await
        .expect("an answer in time")
        .expect("the answer is read, not reset");
    let split = response.windows(4).position(|w| w == b"\r\n\r\n").expect("a complete answer");
    let head = String::from_utf8_lossy(&response[..split]).into_owned();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, head, response[split + 4..].to_vec())
}

/// Requests as bytes, answers as bytes: lets a test send anything over gRPC.
#[derive(Clone, Copy, Default)]
struct RawCodec;
struct RawEncoder;
struct RawDecoder;

impl tonic::codec::Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

impl tonic::codec::Encoder for RawEncoder {
    type Item = Bytes;
    type Error = tonic::Status;
    fn encode(&mut self, item: Bytes, dst: &mut tonic::codec::EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawDecoder {
    type Item = Bytes;
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut tonic::codec::DecodeBuf<'_>) -> Result<Option<Bytes>, tonic::Status> {
        let len = src.remaining();
        Ok(Some(src.copy_to_bytes(len)))
    }
}

async fn grpc_export(port: u16, body: Vec<u8>) -> Result<Bytes, tonic::Status> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect()
        .await
        .expect("connect over gRPC");
    let mut client = tonic::client::Grpc::new(channel);
    client.ready().await.unwrap();
    let path = http::uri::PathAndQuery::from_static("/opentelemetry.proto.collector.trace.v1.TraceService/Export");
    client.unary(tonic::Request::new(Bytes::from(body)), path, RawCodec).await.map(|r| r.into_inner())
}

/// A valid request of one span with these ids.
fn one_span(trace: u8, span: u8) -> ExportTraceServiceRequest {
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: vec![Span {
                    trace_id: vec![trace; 16],
                    span_id: vec![span; 8],
                    name: "one".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_their_errors_and_the_agent_keeps_serving() {
    let receiver = TestOtlp::start().await;
    let ports = Ports::new();
    let agent = start(&config(&ports, &receiver, "    max_recv_message_size: 64KiB\n", "")).await;
    let pb = [("Content-Type", "application/x-protobuf")];
    let json = [("Content-Type", "application/json")];
    let status_of = |body: &[u8]| sluice::event::spans::rpc::Status::decode(body).expect("a google.rpc.Status");

    // HTTP: malformed protobuf, JSON that is not OTLP, too large, wrong content type, bad gzip.
    let (code, _, body) = post(ports.http, "/v1/traces", &pb, b"\x0a\x09garbage").await;
    assert_eq!(code, 400);
    let status = status_of(&body);
    assert_eq!(status.code, 3);
    assert_eq!(
        status.message,
        "malformed OTLP protobuf: a field runs past the end of its message in ExportTraceServiceRequest"
    );
    let (code, head, body) = post(ports.http, "/v1/traces", &json, br#"{"hello":"world"}"#).await;
    assert_eq!(code, 400);
    assert!(head.to_ascii_lowercase().contains("content-type: application/json"), "{head}");
    let answer: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(answer["code"], 3);
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .starts_with("not an OTLP/JSON ExportTraceServiceRequest: unknown field `hello`"),
        "{answer}"
    );
    let (code, _, _) = post(ports.http, "/v1/traces", &json, b"[1, 2, 3]").await;
    assert_eq!(code, 400);
    let (code, _, _) = post(ports.http, "/v1/traces", &pb, &vec![0u8; 100 * 1024]).await;
    assert_eq!(code, 413);
    let (code, _, body) = post(ports.http, "/v1/traces", &[("Content-Type", "text/plain")], b"hello").await;
    assert_eq!(code, 415);
    assert!(String::from_utf8_lossy(&body).contains("unsupported content type `text/plain`"));
    let gzip_header = [("Content-Type", "application/x-protobuf"), ("Content-Encoding", "gzip")];
    let (code, _, _) = post(ports.http, "/v1/traces", &gzip_header, b"not gzip").await;
    assert_eq!(code, 400);
    // A gzip bomb: small on the wire, over the limit once decompressed.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&vec![0u8; 1 << 20]).unwrap();
    let (code, _, _) = post(ports.http, "/v1/traces", &gzip_header, &gz.finish().unwrap()).await;
    assert_eq!(code, 413);
    let (code, _, _) = post(ports.http, "/v2/traces", &pb, b"").await;
    assert_eq!(code, 404);

    // gRPC: malformed protobuf and an oversized message.
    let err = grpc_export(ports.grpc, b"\x0a\x09garbage".to_vec()).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().starts_with("malformed OTLP protobuf"), "{}", err.message());
    let err = grpc_export(ports.grpc, vec![0u8; 100 * 1024]).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");

    // Still serving: valid requests in protobuf, gzip and OTLP/JSON (hex ids) all arrive.
    let answer = grpc_export(ports.grpc, one_span(1, 1).encode_to_vec()).await.unwrap();
    assert!(answer.is_empty(), "a full success has no partial_success");
    let (code, _, _) = post(ports.http, "/v1/traces", &pb, &one_span(2, 2).encode_to_vec()).await;
    assert_eq!(code, 200);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&one_span(3, 3).encode_to_vec()).unwrap();
    let (code, _, _) = post(ports.http, "/v1/traces", &gzip_header, &gz.finish().unwrap()).await;
    assert_eq!(code, 200);
    let otlp_json = r#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"json-client"}}]},"scopeSpans":[{"spans":[{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","name":"from json","kind":2,"startTimeUnixNano":"1544712660000000000","endTimeUnixNano":1544712661000000000,"status":{"code":2}}]}]}]}"#;
    let (code, _, body) = post(ports.http, "/v1/traces", &json, otlp_json.as_bytes()).await;
    assert_eq!((code, String::from_utf8_lossy(&body).into_owned()), (200, "{}".to_string()));
    // Partial success: one span with a short id is left out, the other goes on.
    let mut partial = one_span(4, 4);
    let mut bad = partial.resource_spans[0].scope_spans[0].spans[0].clone();
    bad.span_id = vec![4; 3];
    partial.resource_spans[0].scope_spans[0].spans.push(bad);
    let (code, _, body) = post(ports.http, "/v1/traces", &pb, &partial.encode_to_vec()).await;
    assert_eq!(code, 200);
    let response =
        opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse::decode(body.as_slice()).unwrap();
    assert_eq!(response.partial_success.map(|p| p.rejected_spans), Some(1));

    let agent = wait_spans(&receiver, agent, 5, Duration::from_secs(20)).await;
    let got = by_span_id(&receiver.spans());
    let json_span = &got["eee19b7ec3c1b174"];
    assert_eq!(json_span.trace_id(), "5b8efff798038103d269b633813fc60c");
    assert_eq!(json_span.resource["service.name"], "json-client");
    assert_eq!(
        (json_span.span.start_time_unix_nano, json_span.span.end_time_unix_nano),
        (1544712660000000000, 1544712661000000000)
    );
    assert_eq!(got.len(), 5);

    let metrics = agent.metrics().await;
    let rejected = |transport: &str, reason: &str| {
        metrics.sum("sluice_otlp_rejected_requests_total", &[("transport", transport), ("reason", reason)])
    };
    assert_eq!(rejected("http", "malformed"), 4.0, "garbage protobuf, two JSON bodies, bad gzip");
    assert_eq!(rejected("http", "too_large"), 2.0);
    assert_eq!(rejected("http", "unsupported_media_type"), 1.0);
    assert_eq!(rejected("http", "not_found"), 1.0);
    assert_eq!(rejected("grpc", "malformed"), 1.0);
    assert_eq!(rejected("grpc", "too_large"), 1.0);
    assert_eq!(metrics.sum("sluice_source_dropped_total", &[("source", "otlp"), ("reason", "invalid_span")]), 1.0);
    assert_eq!(metrics.sum("sluice_otlp_received_spans_total", &[]), 5.0);
    assert_eq!(agent.stop().await.0, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn span_metrics_of_known_spans_and_the_high_trace_error_rate_alert() {
    let receiver = TestOtlp::start().await;
    let ports = Ports::new();
    let agent = start(&config(&ports, &receiver, "", "")).await;
    let out = python(&["known", "--grpc", &ports.grpc()], Duration::from_secs(60)).await;
    assert_eq!(exports(&out), ["SUCCESS", "SUCCESS"]);
    let agent = wait_spans(&receiver, agent, 75, Duration::from_secs(20)).await;
    let metrics = agent.metrics().await;
    let series = |service: &str, name: &str, kind: &str, status: &str| {
        [("service_name", service), ("span_name", name), ("span_kind", kind), ("status_code", status)]
            .map(|(k, v)| (k.to_string(), v.to_string()))
    };
    let value = |metric: &str, labels: &[(String, String)], extra: &[(&str, &str)]| {
        let mut all: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        all.extend_from_slice(extra);
        metrics.sum(metric, &all)
    };
    let chat_ok = series("gateway", "POST /v1/chat/completions", "SPAN_KIND_SERVER", "STATUS_CODE_UNSET");
    let chat_err = series("gateway", "POST /v1/chat/completions", "SPAN_KIND_SERVER", "STATUS_CODE_ERROR");
    let qdrant = series("gateway", "GET qdrant", "SPAN_KIND_CLIENT", "STATUS_CODE_ERROR");
    let models_ok = series("api-server", "GET /v1/models", "SPAN_KIND_SERVER", "STATUS_CODE_UNSET");
    let models_err = series("api-server", "GET /v1/models", "SPAN_KIND_SERVER", "STATUS_CODE_ERROR");
    let calls = "traces_span_metrics_calls_total";
    for (labels, want) in [(&chat_ok, 18.0), (&chat_err, 2.0), (&qdrant, 5.0), (&models_ok, 49.0), (&models_err, 1.0)] {
        assert_eq!(value(calls, labels, &[]), want, "{labels:?}");
        assert_eq!(value("traces_span_metrics_duration_seconds_count", labels, &[]), want, "{labels:?}");
    }
    assert_eq!(metrics.samples(calls).count(), 5, "five series");
    // The cumulative bucket of `series` at bound `le` (exactly one sample).
    let bucket = |series: &[(String, String)], le: f64| {
        let found: Vec<f64> = metrics
            .samples("traces_span_metrics_duration_seconds_bucket")
            .filter(|(labels, _)| series.iter().all(|(k, v)| labels.get(k) == Some(v)))
            .filter(|(labels, _)| labels.get("le").and_then(|b| b.parse::<f64>().ok()) == Some(le))
            .map(|(_, v)| v)
            .collect();
        assert_eq!(found.len(), 1, "one bucket {le} of {series:?}:\n{}", metrics.0);
        found[0]
    };
    // 3 ms: above the 2 ms bound, within 4 ms.
    assert_eq!((bucket(&chat_ok, 0.002), bucket(&chat_ok, 0.004)), (0.0, 18.0));
    assert!((value("traces_span_metrics_duration_seconds_sum", &chat_ok, &[]) - 0.054).abs() < 1e-9);
    // 1.5 s: within 2 s, not 1.4 s.
    assert_eq!((bucket(&chat_err, 1.4), bucket(&chat_err, 2.0), bucket(&chat_err, f64::INFINITY)), (0.0, 2.0, 2.0));
    assert!((value("traces_span_metrics_duration_seconds_sum", &chat_err, &[]) - 3.0).abs() < 1e-9);
    assert_eq!((bucket(&qdrant, 0.006), bucket(&qdrant, 0.008)), (0.0, 5.0));
    assert_eq!((bucket(&models_ok, 0.01), bucket(&models_ok, 0.05), bucket(&models_err, 0.05)), (0.0, 49.0, 1.0));

    // The stack's alert on these series, with promtool: the counters grow by what sluice
    // exposes every minute; gateway's server spans fail 10% of the time (fires), api-server's
    // 2% (quiet); gateway's failing client spans do not count.
    let mut input = String::new();
    for (labels, value) in metrics.samples(calls) {
        let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
        input.push_str(&format!(
            "      - series: '{calls}{{job=\"sluice\",instance=\"sluice:9080\",{}}}'\n        values: '0+{value}x30'\n",
            labels.join(",")
        ));
    }
    let rules = concat!(env!("CARGO_MANIFEST_DIR"), "/configs/prometheus/rules/alerts.yml");
    let test = format!(
        "rule_files:\n  - {rules}\nevaluation_interval: 1m\ntests:\n  - interval: 1m\n    input_series:\n{input}    alert_rule_test:\n      - eval_time: 8m\n        alertname: HighTraceErrorRate\n        exp_alerts: []\n      - eval_time: 20m\n        alertname: HighTraceErrorRate\n        exp_alerts:\n          - exp_labels: {{severity: warning, category: errors, service_name: gateway}}\n            exp_annotations:\n              summary: \"gateway: 10% of server spans end in error\"\n              description: \"10% of the server spans of gateway had status ERROR over the last 5 minutes, above 5% for 10 minutes (span metrics from sluice).\"\n              runbook: \"docs/OPERATIONS.md#error-rate-alerts\"\n"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("span_metrics_test.yml");
    std::fs::write(&path, &test).unwrap();
    let promtool = std::process::Command::new("promtool")
        .args(["test", "rules"])
        .arg(&path)
        .output()
        .expect("promtool (Debian's prometheus package, installed by scripts/test.sh) evaluates the alert");
    assert!(
        promtool.status.success(),
        "promtool:\n{}{}\ntest file:\n{test}",
        String::from_utf8_lossy(&promtool.stdout),
        String::from_utf8_lossy(&promtool.stderr)
    );
    assert_eq!(agent.stop().await.0, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_out_to_grpc_and_http_exporters_with_attribute_actions_and_partial_success_counted() {
    let jaeger = TestOtlp::start().await;
    let second = TestOtlp::start().await;
    second.reject_per_request(1);
    let ports = Ports::new();
    let source = "    resource_attributes:\n      - {key: deployment.environment, value: production, action: upsert}\n      - {key: host.name, value: node-7, action: upsert}\n    span_attributes:\n      - {key: tags, action: delete}\n";
    let body = format!(
        "{}  archive:\n    type: otlp\n    protocol: http\n    endpoint: {}\n    compression: gzip\n    backoff: {{min_period: 50ms, max_period: 500ms}}\n",
        config(&ports, &jaeger, source, "    compression: gzip\n"),
        second.http_endpoint()
    );
    let agent = start(&body).await;
    let out = python(&["nested", "--grpc", &ports.grpc(), "--http", &ports.http_url()], Duration::from_secs(60)).await;
    assert_eq!(exports(&out), ["SUCCESS", "SUCCESS"]);
    let agent = wait_spans(&jaeger, agent, 8, Duration::from_secs(20)).await;
    let agent = wait_spans(&second, agent, 8, Duration::from_secs(20)).await;
    for receiver in [&jaeger, &second] {
        let spans = by_span_id(&receiver.spans());
        assert_eq!(spans.len(), 8);
        for span in spans.values() {
            assert_eq!(span.resource.get("deployment.environment").map(String::as_str), Some("production"));
            assert_eq!(span.resource.get("host.name").map(String::as_str), Some("node-7"));
            assert!(span.resource.contains_key("service.name"));
            assert!(!span.attributes().contains_key("tags"), "the dropped attribute is gone");
        }
    }
    assert!(jaeger.spans().iter().all(|s| s.transport == "grpc"));
    assert!(second.spans().iter().all(|s| s.transport == "http"));
    let (requests, _) = second.requests();
    // Each accepted request reported one span rejected: counted as dropped, not retried.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let m = agent.metrics().await;
        let partial = m.sum("sluice_sink_dropped_total", &[("sink", "archive"), ("reason", "partial_success")]);
        // The receivers have the spans; the sinks count them once they read the answers.
        let jaeger_sent = m.sum("sluice_sink_lines_sent_total", &[("sink", "jaeger")]);
        if partial == requests as f64 && jaeger_sent == 8.0 {
            assert_eq!(m.sum("sluice_sink_lines_sent_total", &[("sink", "archive")]), 8.0 - requests as f64);
            assert_eq!(m.sum("sluice_sink_dropped_total", &[("sink", "jaeger")]), 0.0);
            assert_eq!(m.sum("sluice_sink_retries_total", &[]), 0.0, "a partial success is not retried");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "partial_success drops: {partial}, requests {requests}; spans sent to jaeger: {jaeger_sent}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(second.requests().0, requests, "no request was sent again");
    assert_eq!(agent.stop().await.0, Some(0));
}
