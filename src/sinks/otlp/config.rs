//! Configuration of the OTLP exporter.
//!
//! ```yaml
//! jaeger:
//!   type: otlp
//!   endpoint: http://jaeger:4317       # grpc: scheme, host, port; http: base URL or full URL
//!   protocol: grpc                     # or http (OTLP/HTTP protobuf, POST <endpoint>/v1/traces)
//!   compression: gzip                  # or none
//!   headers: {x-tenant: platform}
//!   tls: {ca_file: /etc/ssl/ca.pem}    # for https:// endpoints
//!   timeout: 10s
//!   concurrency: 4                     # export requests in flight
//!   backoff: {min_period: 500ms, max_period: 30s}
//!   queue: {max_bytes: 16MiB}
//! ```

use crate::config::common::{BackoffConfig, QueueConfig, TlsConfig};
use crate::config::duration::HumanDuration;
use crate::config::{Located, Position};
use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// OTLP/gRPC (`TraceService/Export`).
    #[default]
    Grpc,
    /// OTLP/HTTP with protobuf bodies.
    Http,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    #[default]
    None,
    Gzip,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtlpSinkConfig {
    /// `http://jaeger:4317` (gRPC) or `http://collector:4318` (HTTP; `/v1/traces` is added
    /// when the URL has no path).
    pub endpoint: Located<String>,
    #[serde(default)]
    pub protocol: Protocol,
    /// The trace sources this sink takes spans from (empty: all).
    #[serde(default)]
    pub sources: Vec<String>,
    #[serde(default)]
    pub compression: Compression,
    /// Extra headers (gRPC metadata) on every export.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub tls: TlsConfig,
    /// How long one export may take before it is retried.
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
    /// Export requests in flight at once.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    #[serde(default)]
    pub backoff: BackoffConfig,
    #[serde(default)]
    pub queue: QueueConfig,
}

fn default_timeout() -> HumanDuration {
    HumanDuration::from_secs(10)
}
fn default_concurrency() -> usize {
    4
}

impl OtlpSinkConfig {
    /// Checks beyond types; `Position::START` means the sink's own position.
    pub fn validate(&self) -> Vec<(Position, String)> {
        let mut errors = Vec::new();
        match self.endpoint.value.parse::<http::Uri>() {
            Ok(uri) if matches!(uri.scheme_str(), Some("http" | "https")) && uri.host().is_some() => {
                if self.protocol == Protocol::Grpc && !matches!(uri.path(), "" | "/") {
                    errors.push((
                        self.endpoint.position,
                        format!("endpoint `{}`: a gRPC endpoint has no path", self.endpoint.value),
                    ));
                }
            }
            _ => errors.push((
                self.endpoint.position,
                format!(
                    "endpoint `{}` is not an http:// or https:// URL such as http://jaeger:4317",
                    self.endpoint.value
                ),
            )),
        }
        if self.concurrency == 0 {
            errors.push((Position::START, "concurrency must be above 0".into()));
        }
        if self.timeout.0.is_zero() {
            errors.push((Position::START, "timeout must be above 0".into()));
        }
        if self.backoff.min_period > self.backoff.max_period {
            errors.push((Position::START, "backoff.min_period is above backoff.max_period".into()));
        }
        for (name, value) in &self.headers {
            if http::HeaderName::from_bytes(name.as_bytes()).is_err() || name.ends_with("-bin") {
                errors.push((Position::START, format!("headers: `{name}` is not a valid header name")));
            }
            if http::HeaderValue::from_str(value).is_err() {
                errors.push((Position::START, format!("headers: the value of `{name}` cannot be sent as a header")));
            }
        }
        errors
    }

    /// The URL an HTTP exporter posts to.
    pub fn http_url(&self) -> String {
        let endpoint = self.endpoint.value.trim_end_matches('/');
        match endpoint.parse::<http::Uri>() {
            Ok(uri) if matches!(uri.path(), "" | "/") => format!("{endpoint}/v1/traces"),
            _ => endpoint.to_string(),
        }
    }
}
