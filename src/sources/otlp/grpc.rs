//! OTLP/gRPC: `opentelemetry.proto.collector.trace.v1.TraceService/Export` on an HTTP/2
//! listener (hyper), framed by tonic's server codec with a codec that hands the request's
//! protobuf to the [`Receiver`] as bytes (the receiver's scan replaces a decode).
//!
//! gzip-compressed messages are accepted. Above `max_recv_message_size` tonic answers
//! `OUT_OF_RANGE`, which OTLP clients retry: it is rewritten to `RESOURCE_EXHAUSTED` without
//! RetryInfo (final), as grpc-go answers. `UNAVAILABLE` carries RetryInfo, both in
//! `grpc-status-details-bin` and in the trailer the Python exporter reads.

use super::{Receiver, Refusal, Transport};
use crate::event::spans::rpc;
use bytes::{Buf, Bytes};
use http::HeaderValue;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTracePartialSuccess, ExportTraceServiceResponse};
use prost::Message;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::{Code, Status};

pub const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// Requests as bytes, responses as prost messages.
#[derive(Debug, Clone, Copy, Default)]
pub struct RawRequestCodec;

pub struct RawDecoder;
pub struct ResponseEncoder;

impl Codec for RawRequestCodec {
    type Encode = ExportTraceServiceResponse;
    type Decode = Bytes;
    type Encoder = ResponseEncoder;
    type Decoder = RawDecoder;
    fn encoder(&mut self) -> ResponseEncoder {
        ResponseEncoder
    }
    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

impl Decoder for RawDecoder {
    type Item = Bytes;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        let len = src.remaining();
        Ok(Some(src.copy_to_bytes(len)))
    }
}

impl Encoder for ResponseEncoder {
    type Item = ExportTraceServiceResponse;
    type Error = Status;
    fn encode(&mut self, item: ExportTraceServiceResponse, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(dst).map_err(|e| Status::internal(format!("cannot encode the response: {e}")))
    }
}

/// The unary handler.
struct Export(Arc<Receiver>);

impl tonic::server::UnaryService<Bytes> for Export {
    type Response = ExportTraceServiceResponse;
    type Future = Pin<Box<dyn Future<Output = Result<tonic::Response<Self::Response>, Status>> + Send>>;

    fn call(&mut self, request: tonic::Request<Bytes>) -> Self::Future {
        let receiver = Arc::clone(&self.0);
        Box::pin(async move {
            let answer = receiver.export(request.into_inner(), Transport::Grpc);
            answer.map(|accept| tonic::Response::new(response(accept.rejected_spans, accept.error_message))).map_err(
                |refusal| match refusal {
                    Refusal::Malformed(message) => Status::invalid_argument(message),
                    busy @ (Refusal::Busy { .. } | Refusal::ShuttingDown) => {
                        unavailable(&busy.to_string(), receiver.retry_after())
                    }
                },
            )
        })
    }
}

/// An `ExportTraceServiceResponse`, with `partial_success` only when spans were rejected.
pub fn response(rejected_spans: i64, error_message: String) -> ExportTraceServiceResponse {
    let partial_success = (rejected_spans > 0).then_some(ExportTracePartialSuccess { rejected_spans, error_message });
    ExportTraceServiceResponse { partial_success }
}

/// `UNAVAILABLE` with a RetryInfo of `delay`.
fn unavailable(message: &str, delay: std::time::Duration) -> Status {
    let details = rpc::status_with_retry_info(Code::Unavailable as i32, message, delay);
    let mut status = Status::with_details(Code::Unavailable, message, Bytes::from(details));
    let value = tonic::metadata::BinaryMetadataValue::from_bytes(&rpc::retry_info(delay));
    status.metadata_mut().insert_bin(rpc::RETRY_INFO_TRAILER, value);
    status
}

/// Serves gRPC on `listener` until `cancel`, then lets open requests finish.
pub async fn serve(listener: TcpListener, receiver: Arc<Receiver>, cancel: CancellationToken) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let stream = tokio::select! {
            _ = cancel.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "otlp grpc: accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let receiver = Arc::clone(&receiver);
        let cancel = cancel.clone();
        connections.spawn(async move {
            let service = service_fn(move |request| handle(Arc::clone(&receiver), request));
            let connection = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .max_frame_size(1 << 20)
                .serve_connection(TokioIo::new(stream), service);
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

async fn handle(
    receiver: Arc<Receiver>,
    request: http::Request<Incoming>,
) -> Result<http::Response<tonic::body::Body>, Infallible> {
    if request.uri().path() != EXPORT_PATH {
        receiver.reject(Transport::Grpc, "unimplemented");
        return Ok(Status::unimplemented(format!("sluice serves {EXPORT_PATH} only")).into_http());
    }
    let mut grpc = tonic::server::Grpc::new(RawRequestCodec)
        .accept_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(receiver.max_message_size());
    let mut response = grpc.unary(Export(Arc::clone(&receiver)), request).await;
    // Errors tonic answered itself (before the handler ran): count them; make the size limit final.
    let code = response.headers().get("grpc-status").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<i32>().ok());
    match code.map(Code::from_i32) {
        Some(Code::OutOfRange | Code::ResourceExhausted) => {
            receiver.reject(Transport::Grpc, "too_large");
            response.headers_mut().insert("grpc-status", HeaderValue::from(Code::ResourceExhausted as i32));
        }
        Some(Code::Ok | Code::InvalidArgument | Code::Unavailable) | None => {}
        Some(_) => receiver.reject(Transport::Grpc, "malformed"),
    }
    Ok(response)
}
