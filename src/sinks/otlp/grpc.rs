//! The OTLP/gRPC exporter: a tonic channel over a rustls connector (the agent's TLS settings).
//! A batch's spans are written straight into tonic's send buffer (one copy of each span's
//! bytes per attempt; encoding to a buffer of our own first cost another, 8% of the CPU).

use super::config::{Compression, OtlpSinkConfig};
use super::{OtlpSinkError, Outcome, grpc_reason, grpc_retryable};
use crate::event::spans::{SpanBatch, rpc};
use crate::sinks::http_client::tls_config;
use bytes::Buf;
use hyper_util::client::legacy::connect::HttpConnector;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message;
use rustls::pki_types::ServerName;
use std::sync::Arc;
use std::time::Duration;
use tonic::Status;
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::metadata::{AsciiMetadataKey, AsciiMetadataValue};
use tonic::transport::{Channel, Endpoint};

const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// Requests from a batch's spans as received, responses decoded by prost.
#[derive(Debug, Clone, Copy, Default)]
pub struct RawResponseCodec;
pub struct BatchEncoder;
pub struct ResponseDecoder;

impl Codec for RawResponseCodec {
    type Encode = Arc<SpanBatch>;
    type Decode = ExportTraceServiceResponse;
    type Encoder = BatchEncoder;
    type Decoder = ResponseDecoder;
    fn encoder(&mut self) -> BatchEncoder {
        BatchEncoder
    }
    fn decoder(&mut self) -> ResponseDecoder {
        ResponseDecoder
    }
}

impl Encoder for BatchEncoder {
    type Item = Arc<SpanBatch>;
    type Error = Status;
    fn encode(&mut self, item: Arc<SpanBatch>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.reserve(item.bytes);
        item.encode(dst);
        Ok(())
    }
}

impl Decoder for ResponseDecoder {
    type Item = ExportTraceServiceResponse;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<ExportTraceServiceResponse>, Status> {
        let len = src.remaining();
        ExportTraceServiceResponse::decode(src.copy_to_bytes(len))
            .map(Some)
            .map_err(|e| Status::internal(format!("cannot decode the export response: {e}")))
    }
}

pub struct GrpcExporter {
    client: tonic::client::Grpc<Channel>,
    metadata: Vec<(AsciiMetadataKey, AsciiMetadataValue)>,
    timeout: Duration,
}

impl GrpcExporter {
    pub fn build(config: &OtlpSinkConfig) -> Result<GrpcExporter, OtlpSinkError> {
        let endpoint_text = config.endpoint.value.clone();
        let error = |message: String| OtlpSinkError::Endpoint { endpoint: endpoint_text.clone(), message };
        let endpoint = Endpoint::from_shared(endpoint_text.clone())
            .map_err(|e| error(e.to_string()))?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_while_idle(true);
        // `enable_http2` below sets ALPN to h2.
        let tls = tls_config(&config.tls)?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(Duration::from_secs(5)));
        let builder = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls).https_or_http();
        let builder = match &config.tls.server_name {
            Some(name) => builder.with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(
                ServerName::try_from(name.clone()).map_err(|_| error(format!("invalid tls.server_name `{name}`")))?,
            )),
            None => builder,
        };
        let connector = builder.enable_http2().wrap_connector(http);
        let channel = endpoint.connect_with_connector_lazy(connector);
        let mut client = tonic::client::Grpc::new(channel).max_decoding_message_size(4 << 20);
        if config.compression == Compression::Gzip {
            client = client.send_compressed(CompressionEncoding::Gzip);
        }
        client = client.accept_compressed(CompressionEncoding::Gzip);
        let mut metadata = Vec::new();
        for (name, value) in &config.headers {
            let key = AsciiMetadataKey::from_bytes(name.to_ascii_lowercase().as_bytes())
                .map_err(|e| OtlpSinkError::Header { name: name.clone(), message: e.to_string() })?;
            let value = AsciiMetadataValue::try_from(value.as_str())
                .map_err(|e| OtlpSinkError::Header { name: name.clone(), message: e.to_string() })?;
            metadata.push((key, value));
        }
        Ok(GrpcExporter { client, metadata, timeout: config.timeout.0 })
    }

    pub async fn export(&self, batch: &Arc<SpanBatch>) -> Outcome {
        let mut client = self.client.clone();
        let mut request = tonic::Request::new(Arc::clone(batch));
        request.set_timeout(self.timeout);
        for (key, value) in &self.metadata {
            request.metadata_mut().insert(key.clone(), value.clone());
        }
        let call = async {
            client.ready().await.map_err(|e| Status::unavailable(format!("not connected: {e}")))?;
            client.unary(request, http::uri::PathAndQuery::from_static(EXPORT_PATH), RawResponseCodec).await
        };
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(response)) => {
                let partial = response.into_inner().partial_success.unwrap_or_default();
                Outcome::Delivered { rejected: partial.rejected_spans, message: partial.error_message }
            }
            Ok(Err(status)) => classify(&status),
            Err(_) => Outcome::Retry { reason: format!("no answer within {:?}", self.timeout), retry_after: None },
        }
    }
}

/// What a gRPC error means for the batch.
pub fn classify(status: &Status) -> Outcome {
    let retry_after = rpc::retry_delay(status.details());
    let code = status.code();
    if grpc_retryable(code, retry_after.is_some()) {
        Outcome::Retry { reason: format!("{code:?}: {}", status.message()), retry_after }
    } else {
        let detail = status.message().chars().take(512).collect();
        Outcome::Drop { reason: grpc_reason(code), detail }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use tonic::Code;

    #[test]
    fn retryable_codes_follow_the_otlp_spec() {
        let retry = |code: Code| matches!(classify(&Status::new(code, "x")), Outcome::Retry { .. });
        for code in [
            Code::Cancelled,
            Code::DeadlineExceeded,
            Code::Aborted,
            Code::OutOfRange,
            Code::Unavailable,
            Code::DataLoss,
        ] {
            assert!(retry(code), "{code:?}");
        }
        for code in [
            Code::InvalidArgument,
            Code::NotFound,
            Code::PermissionDenied,
            Code::Unauthenticated,
            Code::Unimplemented,
            Code::Internal,
            Code::ResourceExhausted,
            Code::FailedPrecondition,
            Code::AlreadyExists,
            Code::Unknown,
        ] {
            assert!(!retry(code), "{code:?}");
        }
        let details = rpc::status_with_retry_info(8, "slow down", Duration::from_secs(3));
        let exhausted = Status::with_details(Code::ResourceExhausted, "slow down", Bytes::from(details));
        assert_eq!(
            classify(&exhausted),
            Outcome::Retry { reason: "ResourceExhausted: slow down".into(), retry_after: Some(Duration::from_secs(3)) }
        );
        assert_eq!(
            classify(&Status::invalid_argument("bad span")),
            Outcome::Drop { reason: "rejected_invalid_argument".into(), detail: "bad span".into() }
        );
    }
}
