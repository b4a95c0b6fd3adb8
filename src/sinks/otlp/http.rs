//! The OTLP/HTTP exporter: `POST <endpoint>/v1/traces` with a protobuf body, gzip optional,
//! over the agent's pooled HTTP client.

use super::config::{Compression, OtlpSinkConfig};
use super::{OtlpSinkError, Outcome};
use crate::event::spans::SpanBatch;
use crate::sinks::http_client::{HttpClient, build_client};
use crate::sinks::retry::parse_retry_after;
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message;
use std::io::Write;
use std::time::Duration;

pub struct HttpExporter {
    client: HttpClient,
    url: Uri,
    headers: Vec<(HeaderName, HeaderValue)>,
    gzip: bool,
    timeout: Duration,
}

impl HttpExporter {
    pub fn build(config: &OtlpSinkConfig) -> Result<HttpExporter, OtlpSinkError> {
        let url_text = config.http_url();
        let url = url_text
            .parse::<Uri>()
            .map_err(|e| OtlpSinkError::Endpoint { endpoint: url_text.clone(), message: e.to_string() })?;
        let mut headers = Vec::new();
        for (name, value) in &config.headers {
            let header = |message: String| OtlpSinkError::Header { name: name.clone(), message };
            headers.push((
                HeaderName::from_bytes(name.as_bytes()).map_err(|e| header(e.to_string()))?,
                HeaderValue::from_str(value).map_err(|e| header(e.to_string()))?,
            ));
        }
        Ok(HttpExporter {
            client: build_client(&config.tls)?,
            url,
            headers,
            gzip: config.compression == Compression::Gzip,
            timeout: config.timeout.0,
        })
    }

    pub async fn export(&self, batch: &SpanBatch) -> Outcome {
        let body = batch.encode_to_vec();
        let body = if self.gzip {
            let mut encoder =
                flate2::write::GzEncoder::new(Vec::with_capacity(body.len() / 4), flate2::Compression::fast());
            match encoder.write_all(&body).and_then(|_| encoder.finish()) {
                Ok(compressed) => Bytes::from(compressed),
                Err(e) => return Outcome::Drop { reason: "encode_error".into(), detail: e.to_string() },
            }
        } else {
            Bytes::from(body)
        };
        let mut request = Request::post(self.url.clone())
            .header(header::CONTENT_TYPE, "application/x-protobuf")
            .header(header::USER_AGENT, concat!("sluice/", env!("CARGO_PKG_VERSION")));
        if self.gzip {
            request = request.header(header::CONTENT_ENCODING, "gzip");
        }
        for (name, value) in &self.headers {
            request = request.header(name, value);
        }
        let request = match request.body(Full::new(body)) {
            Ok(r) => r,
            Err(e) => return Outcome::Drop { reason: "invalid_request".into(), detail: e.to_string() },
        };
        let answer = tokio::time::timeout(self.timeout, async {
            let response = self.client.request(request).await.map_err(|e| format!("{e:?}"))?;
            let status = response.status();
            let retry_after = parse_retry_after(response.headers().get(header::RETRY_AFTER));
            let body = response.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            Ok::<_, String>((status, retry_after, body))
        })
        .await;
        match answer {
            Ok(Ok((status, retry_after, body))) => classify(status, retry_after, &body),
            Ok(Err(e)) => Outcome::Retry { reason: format!("transport error: {e}"), retry_after: None },
            Err(_) => Outcome::Retry { reason: format!("no answer within {:?}", self.timeout), retry_after: None },
        }
    }
}

/// What an HTTP answer means for the batch.
pub fn classify(status: StatusCode, retry_after: Option<Duration>, body: &[u8]) -> Outcome {
    match status.as_u16() {
        200..=299 => {
            let partial =
                ExportTraceServiceResponse::decode(body).ok().and_then(|r| r.partial_success).unwrap_or_default();
            Outcome::Delivered { rejected: partial.rejected_spans, message: partial.error_message }
        }
        429 | 502 | 503 | 504 => Outcome::Retry { reason: format!("http {}", status.as_u16()), retry_after },
        code => {
            let detail = crate::event::spans::rpc::Status::decode(body)
                .map(|s| s.message)
                .ok()
                .filter(|m| !m.is_empty())
                .unwrap_or_else(|| String::from_utf8_lossy(body).chars().take(512).collect());
            Outcome::Drop { reason: format!("rejected_{code}"), detail }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTracePartialSuccess;

    #[test]
    fn answers_are_classified_as_the_otlp_spec_says() {
        let s = |c: u16| StatusCode::from_u16(c).unwrap();
        assert_eq!(classify(s(200), None, b""), Outcome::Delivered { rejected: 0, message: String::new() });
        let partial = ExportTraceServiceResponse {
            partial_success: Some(ExportTracePartialSuccess { rejected_spans: 3, error_message: "bad ids".into() }),
        };
        assert_eq!(
            classify(s(200), None, &partial.encode_to_vec()),
            Outcome::Delivered { rejected: 3, message: "bad ids".into() }
        );
        for code in [429, 502, 503, 504] {
            assert_eq!(
                classify(s(code), Some(Duration::from_secs(2)), b""),
                Outcome::Retry { reason: format!("http {code}"), retry_after: Some(Duration::from_secs(2)) }
            );
        }
        for code in [400, 401, 403, 404, 413, 415, 500, 501] {
            assert!(
                matches!(classify(s(code), None, b"no"), Outcome::Drop { reason, .. } if reason == format!("rejected_{code}")),
                "{code}"
            );
        }
    }
}
