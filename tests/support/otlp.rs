//! A test OTLP receiver standing in for Jaeger: OTLP/gRPC and OTLP/HTTP (protobuf, gzip) on two
//! ports; stores every span it accepts (decoded with the `opentelemetry-proto` types), and can
//! be told to refuse with `UNAVAILABLE` / 503 for a while or to report some spans as rejected
//! (`partial_success`).

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::Span;
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tonic::codegen::Service;

/// A span as it arrived, with its resource's attributes.
#[derive(Debug, Clone)]
pub struct Received {
    pub resource: BTreeMap<String, String>,
    pub scope: String,
    pub span: Span,
    /// `grpc` or `http`: how it arrived.
    pub transport: &'static str,
}

impl Received {
    pub fn trace_id(&self) -> String {
        hex(&self.span.trace_id)
    }
    pub fn span_id(&self) -> String {
        hex(&self.span.span_id)
    }
    pub fn parent_span_id(&self) -> String {
        hex(&self.span.parent_span_id)
    }
    pub fn attributes(&self) -> BTreeMap<String, String> {
        attributes(&self.span.attributes)
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Attribute values as text: strings as they are, other values as JSON would write them.
pub fn attributes(kvs: &[KeyValue]) -> BTreeMap<String, String> {
    kvs.iter().map(|kv| (kv.key.clone(), value_text(kv.value.as_ref()))).collect()
}

fn value_text(value: Option<&AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => format!("{d:?}"),
        Some(any_value::Value::ArrayValue(a)) => {
            format!("[{}]", a.values.iter().map(|v| value_text(Some(v))).collect::<Vec<_>>().join(","))
        }
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

#[derive(Default)]
struct State {
    spans: Vec<Received>,
    requests: usize,
    refused: usize,
    unavailable_until: Option<Instant>,
    unavailable: bool,
    reject_per_request: i64,
    metadata: Vec<(String, String)>,
}

#[derive(Clone, Default)]
struct Service_(Arc<Mutex<State>>);

impl Service_ {
    /// Takes a request the way both transports share; `Err(())` when refusing.
    fn take(
        &self,
        request: ExportTraceServiceRequest,
        transport: &'static str,
    ) -> Result<ExportTraceServiceResponse, ()> {
        let mut state = self.0.lock();
        state.requests += 1;
        let down = state.unavailable || state.unavailable_until.is_some_and(|t| Instant::now() < t);
        if down {
            state.refused += 1;
            return Err(());
        }
        for rs in request.resource_spans {
            let resource = attributes(&rs.resource.map(|r| r.attributes).unwrap_or_default());
            for ss in rs.scope_spans {
                let scope = ss.scope.map(|s| s.name).unwrap_or_default();
                for span in ss.spans {
                    state.spans.push(Received { resource: resource.clone(), scope: scope.clone(), span, transport });
                }
            }
        }
        let rejected = state.reject_per_request;
        let partial_success = (rejected > 0).then(|| ExportTracePartialSuccess {
            rejected_spans: rejected,
            error_message: "test receiver: rejected".into(),
        });
        Ok(ExportTraceServiceResponse { partial_success })
    }
}

#[tonic::async_trait]
impl TraceService for Service_ {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let metadata: Vec<(String, String)> = request
            .metadata()
            .iter()
            .filter_map(|kv| match kv {
                tonic::metadata::KeyAndValueRef::Ascii(k, v) => Some((k.to_string(), v.to_str().ok()?.to_string())),
                _ => None,
            })
            .collect();
        self.0.lock().metadata.extend(metadata);
        match self.take(request.into_inner(), "grpc") {
            Ok(response) => Ok(tonic::Response::new(response)),
            Err(()) => Err(tonic::Status::unavailable("test receiver: unavailable")),
        }
    }
}

/// OTLP/HTTP: `POST /v1/traces`, protobuf, gzip or not.
async fn http_export(
    service: Service_,
    request: http::Request<hyper::body::Incoming>,
) -> Result<http::Response<http_body_util::Full<bytes::Bytes>>, std::convert::Infallible> {
    use http_body_util::BodyExt;
    use prost::Message;
    let answer = |status: u16, body: Vec<u8>| {
        let mut response = http::Response::new(http_body_util::Full::new(bytes::Bytes::from(body)));
        *response.status_mut() = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
        response.headers_mut().insert("content-type", http::HeaderValue::from_static("application/x-protobuf"));
        response
    };
    let gzip = request.headers().get("content-encoding").is_some_and(|v| v == "gzip");
    let path_ok = request.uri().path() == "/v1/traces";
    let body = request.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let body = if gzip {
        let mut out = Vec::new();
        if std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&body[..]), &mut out).is_err() {
            return Ok(answer(400, b"bad gzip".to_vec()));
        }
        bytes::Bytes::from(out)
    } else {
        body
    };
    if !path_ok {
        return Ok(answer(404, Vec::new()));
    }
    let Ok(request) = ExportTraceServiceRequest::decode(body) else {
        return Ok(answer(400, b"not OTLP".to_vec()));
    };
    Ok(match service.take(request, "http") {
        Ok(response) => answer(200, response.encode_to_vec()),
        Err(()) => answer(503, Vec::new()),
    })
}

/// The receiver, serving until dropped.
pub struct TestOtlp {
    state: Arc<Mutex<State>>,
    pub address: std::net::SocketAddr,
    pub http_address: std::net::SocketAddr,
    task: tokio::task::JoinHandle<()>,
    http_task: tokio::task::JoinHandle<()>,
}

impl Drop for TestOtlp {
    fn drop(&mut self) {
        self.task.abort();
        self.http_task.abort();
    }
}

impl TestOtlp {
    pub async fn start() -> TestOtlp {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the test OTLP receiver");
        let address = listener.local_addr().expect("address");
        let service = Service_::default();
        let state = Arc::clone(&service.0);
        let http_listener =
            tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the test OTLP/HTTP receiver");
        let http_address = http_listener.local_addr().expect("address");
        let http_service = service.clone();
        let http_task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = http_listener.accept().await else { continue };
                let service = http_service.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |request| http_export(service.clone(), request));
                    let _ =
                        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
                });
            }
        });
        let server = TraceServiceServer::new(service.clone())
            .max_decoding_message_size(16 << 20)
            .accept_compressed(tonic::codec::CompressionEncoding::Gzip);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let server = server.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |request: http::Request<hyper::body::Incoming>| {
                        let mut server = server.clone();
                        async move { server.call(request).await }
                    });
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        TestOtlp { state, address, http_address, task, http_task }
    }

    /// `http://127.0.0.1:PORT`, for the sink's `endpoint`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.address)
    }

    /// `http://127.0.0.1:PORT/v1/traces`, for an HTTP sink.
    pub fn http_endpoint(&self) -> String {
        format!("http://{}/v1/traces", self.http_address)
    }

    /// Refuse every export with `UNAVAILABLE` while `down` is set.
    pub fn set_unavailable(&self, down: bool) {
        self.state.lock().unavailable = down;
    }

    /// Refuse every export with `UNAVAILABLE` for `period` from now.
    pub fn unavailable_for(&self, period: Duration) {
        self.state.lock().unavailable_until = Some(Instant::now() + period);
    }

    /// Answer every accepted export with `partial_success.rejected_spans = n`.
    pub fn reject_per_request(&self, n: i64) {
        self.state.lock().reject_per_request = n;
    }

    pub fn spans(&self) -> Vec<Received> {
        self.state.lock().spans.clone()
    }

    pub fn span_count(&self) -> usize {
        self.state.lock().spans.len()
    }

    /// (requests, requests refused).
    pub fn requests(&self) -> (usize, usize) {
        let s = self.state.lock();
        (s.requests, s.refused)
    }

    pub fn metadata(&self) -> Vec<(String, String)> {
        self.state.lock().metadata.clone()
    }

    /// Waits until at least `n` spans arrived.
    pub async fn wait_for(&self, n: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.span_count();
            if got >= n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the test OTLP receiver has {got} spans, waited for {n} ({:?})",
                self.requests()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
