//! OTLP/HTTP: `POST /v1/traces` with `application/x-protobuf` or `application/json`, optionally
//! `Content-Encoding: gzip`, on its own HTTP/1.1 listener.
//!
//! Answers use the request's content type: an `ExportTraceServiceResponse` on success, a
//! `google.rpc.Status` on errors (400 malformed, 413 too large, 503 busy with `Retry-After`);
//! 404 for another path, 405 for another method, 415 for another content type or encoding.
//! The size limit applies to the body as received and again after decompression.

use super::{Receiver, Refusal, Transport};
use crate::event::spans::rpc;
use bytes::Bytes;
use http::{HeaderValue, Method, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::trace::v1::ResourceSpans;
use prost::Message;
use serde::Deserialize;
use std::convert::Infallible;
use std::io::Read;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub const TRACES_PATH: &str = "/v1/traces";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Protobuf,
    Json,
}

impl Format {
    fn content_type(self) -> &'static str {
        match self {
            Format::Protobuf => "application/x-protobuf",
            Format::Json => "application/json",
        }
    }
}

/// The OTLP/JSON request: the top level must be an `ExportTraceServiceRequest` (unknown
/// top-level fields are refused, so that JSON meant for something else is not taken for an
/// empty request).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonRequest {
    #[serde(default, rename = "resourceSpans", alias = "resource_spans")]
    resource_spans: Vec<ResourceSpans>,
}

fn plain(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(format!("{message}\n"))));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

/// An error answer with a `google.rpc.Status` body in `format`.
fn status(status: StatusCode, format: Format, code: tonic::Code, message: &str) -> Response<Full<Bytes>> {
    let body = match format {
        Format::Protobuf => {
            rpc::Status { code: code as i32, message: message.to_string(), details: vec![] }.encode_to_vec()
        }
        Format::Json => serde_json::json!({"code": code as i32, "message": message}).to_string().into_bytes(),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(format.content_type()));
    response
}

fn success(format: Format, rejected_spans: i64, error_message: &str) -> Response<Full<Bytes>> {
    let body = match format {
        Format::Protobuf => super::grpc::response(rejected_spans, error_message.to_string()).encode_to_vec(),
        Format::Json if rejected_spans > 0 => serde_json::json!({
            "partialSuccess": {"rejectedSpans": rejected_spans.to_string(), "errorMessage": error_message}
        })
        .to_string()
        .into_bytes(),
        Format::Json => b"{}".to_vec(),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(format.content_type()));
    response
}

enum BodyError {
    TooLarge,
    Read(hyper::Error),
}

/// Past the limit, this much more of a body is read and thrown away before answering 413, so
/// that the client reads the answer instead of a connection reset (a "lingering close").
const DRAIN: usize = 8 << 20;

/// Reads a body of at most `max` bytes.
async fn read_body(mut body: Incoming, max: usize) -> Result<Bytes, BodyError> {
    let mut buf = bytes::BytesMut::new();
    let mut over = 0usize;
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map_err(BodyError::Read)?.into_data() else {
            continue;
        };
        if over > 0 || buf.len() + data.len() > max {
            over += data.len();
            buf = bytes::BytesMut::new();
            if over > DRAIN {
                break;
            }
            continue;
        }
        buf.extend_from_slice(&data);
    }
    if over > 0 { Err(BodyError::TooLarge) } else { Ok(buf.freeze()) }
}

fn header_str(request: &http::Request<Incoming>, name: header::HeaderName) -> &str {
    request.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

async fn handle(
    receiver: Arc<Receiver>,
    request: http::Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if request.uri().path() != TRACES_PATH {
        receiver.reject(Transport::Http, "not_found");
        return Ok(plain(StatusCode::NOT_FOUND, "not found: OTLP/HTTP traces go to POST /v1/traces"));
    }
    if request.method() != Method::POST {
        receiver.reject(Transport::Http, "method");
        let mut response = plain(StatusCode::METHOD_NOT_ALLOWED, "use POST");
        response.headers_mut().insert(header::ALLOW, HeaderValue::from_static("POST"));
        return Ok(response);
    }
    let content_type = header_str(&request, header::CONTENT_TYPE);
    let media = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    let format = match media.as_str() {
        "application/x-protobuf" | "application/protobuf" => Format::Protobuf,
        "application/json" => Format::Json,
        _ => {
            receiver.reject(Transport::Http, "unsupported_media_type");
            return Ok(plain(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                &format!("unsupported content type `{content_type}`: use application/x-protobuf or application/json"),
            ));
        }
    };
    let encoding = header_str(&request, header::CONTENT_ENCODING).trim().to_ascii_lowercase();
    let gzip = match encoding.as_str() {
        "" | "identity" => false,
        "gzip" => true,
        other => {
            receiver.reject(Transport::Http, "unsupported_encoding");
            return Ok(plain(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                &format!("unsupported content encoding `{other}`: use gzip or none"),
            ));
        }
    };
    let max = receiver.max_message_size();
    let too_large = |receiver: &Receiver| {
        receiver.reject(Transport::Http, "too_large");
        status(
            StatusCode::PAYLOAD_TOO_LARGE,
            format,
            tonic::Code::ResourceExhausted,
            &format!("the request is larger than the limit of {max} bytes"),
        )
    };
    let body = match read_body(request.into_body(), max).await {
        Ok(body) => body,
        Err(BodyError::TooLarge) => return Ok(too_large(&receiver)),
        Err(BodyError::Read(e)) => {
            receiver.reject(Transport::Http, "read_error");
            let message = format!("cannot read the body: {e}");
            return Ok(status(StatusCode::BAD_REQUEST, format, tonic::Code::InvalidArgument, &message));
        }
    };
    let body = if gzip {
        let mut out = Vec::with_capacity(body.len().saturating_mul(4).min(max));
        match flate2::read::GzDecoder::new(&body[..]).take(max as u64 + 1).read_to_end(&mut out) {
            Ok(_) if out.len() > max => return Ok(too_large(&receiver)),
            Ok(_) => Bytes::from(out),
            Err(e) => {
                receiver.reject(Transport::Http, "malformed");
                return Ok(status(
                    StatusCode::BAD_REQUEST,
                    format,
                    tonic::Code::InvalidArgument,
                    &format!("invalid gzip body: {e}"),
                ));
            }
        }
    } else {
        body
    };
    let body = match format {
        Format::Protobuf => body,
        Format::Json => match serde_json::from_slice::<JsonRequest>(&body) {
            Ok(request) => {
                let request = opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest {
                    resource_spans: request.resource_spans,
                };
                Bytes::from(request.encode_to_vec())
            }
            Err(e) => {
                receiver.reject(Transport::Http, "malformed");
                let message = format!("not an OTLP/JSON ExportTraceServiceRequest: {e}");
                return Ok(status(StatusCode::BAD_REQUEST, format, tonic::Code::InvalidArgument, &message));
            }
        },
    };
    Ok(match receiver.export(body, Transport::Http) {
        Ok(accept) => success(format, accept.rejected_spans, &accept.error_message),
        Err(Refusal::Malformed(message)) => {
            status(StatusCode::BAD_REQUEST, format, tonic::Code::InvalidArgument, &message)
        }
        Err(busy) => {
            let mut response =
                status(StatusCode::SERVICE_UNAVAILABLE, format, tonic::Code::Unavailable, &busy.to_string());
            let seconds = receiver.retry_after().as_secs_f64().ceil().max(1.0) as u64;
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
            response
        }
    })
}

/// Serves OTLP/HTTP on `listener` until `cancel`, then lets open requests finish.
pub async fn serve(listener: TcpListener, receiver: Arc<Receiver>, cancel: CancellationToken) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let stream = tokio::select! {
            _ = cancel.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "otlp http: accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let receiver = Arc::clone(&receiver);
        let cancel = cancel.clone();
        connections.spawn(async move {
            let service = service_fn(move |request| handle(Arc::clone(&receiver), request));
            let connection = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                _ = cancel.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), connection).await;
                }
            }
        });
        while connections.try_join_next().is_some() {}
    }
    while connections.join_next().await.is_some() {}
}
