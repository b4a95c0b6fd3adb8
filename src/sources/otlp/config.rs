//! Configuration of the OTLP receiver.
//!
//! ```yaml
//! otlp:
//!   type: otlp
//!   grpc_listen_address: 0.0.0.0:4317     # null turns the gRPC receiver off
//!   http_listen_address: 0.0.0.0:4318     # null turns the HTTP receiver off
//!   max_recv_message_size: 4MiB           # gRPC message / HTTP body, after decompression
//!   memory_limit: 64MiB                   # spans accepted and not yet exported
//!   retry_after: 1s                       # what refusals above the limit tell clients
//!   batch: {send_batch_size: 8192, timeout: 200ms, send_batch_max_size: 16384, max_bytes: 3MiB}
//!   resource_attributes:
//!     - {key: deployment.environment, value: production, action: upsert}
//!   span_attributes:
//!     - {key: http.request.header.authorization, action: delete}
//!   span_metrics: {enabled: true, max_series: 10000, expiration: 5m}
//! ```

use crate::config::duration::{ByteSize, HumanDuration};
use crate::config::{Located, Position};
use serde::Deserialize;
use std::net::SocketAddr;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtlpSourceConfig {
    /// OTLP/gRPC (`TraceService/Export`); `null` turns it off.
    #[serde(default = "default_grpc")]
    pub grpc_listen_address: Option<Located<String>>,
    /// OTLP/HTTP (`POST /v1/traces`); `null` turns it off.
    #[serde(default = "default_http")]
    pub http_listen_address: Option<Located<String>>,
    /// Largest gRPC message and HTTP body accepted, after decompression.
    #[serde(default = "default_max_recv_message_size")]
    pub max_recv_message_size: ByteSize,
    /// Bytes of spans accepted and not yet exported by every sink; above it, requests are
    /// refused with `UNAVAILABLE` / 503 so that clients retry later.
    #[serde(default = "default_memory_limit")]
    pub memory_limit: ByteSize,
    /// The delay a refusal asks clients to wait (RetryInfo, `Retry-After`).
    #[serde(default = "default_retry_after")]
    pub retry_after: HumanDuration,
    #[serde(default)]
    pub batch: BatchConfig,
    /// Actions on resource attributes (the collector's `resource` processor).
    #[serde(default)]
    pub resource_attributes: Vec<AttributeAction>,
    /// Actions on span attributes (the collector's `attributes` processor).
    #[serde(default)]
    pub span_attributes: Vec<AttributeAction>,
    #[serde(default)]
    pub span_metrics: SpanMetricsConfig,
}

fn default_grpc() -> Option<Located<String>> {
    Some(Located::new("0.0.0.0:4317".into(), Position::START))
}
fn default_http() -> Option<Located<String>> {
    Some(Located::new("0.0.0.0:4318".into(), Position::START))
}
fn default_max_recv_message_size() -> ByteSize {
    ByteSize::mib(4)
}
fn default_memory_limit() -> ByteSize {
    ByteSize::mib(64)
}
fn default_retry_after() -> HumanDuration {
    HumanDuration::from_secs(1)
}

/// The batch processor: a batch leaves at `send_batch_size` spans or `timeout` after its first
/// span, and never holds more than `send_batch_max_size` spans or `max_bytes`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchConfig {
    #[serde(default = "default_send_batch_size")]
    pub send_batch_size: usize,
    #[serde(default = "default_batch_timeout")]
    pub timeout: HumanDuration,
    #[serde(default = "default_send_batch_max_size")]
    pub send_batch_max_size: usize,
    /// Below the usual 4 MiB limit of gRPC receivers (Jaeger, the collector).
    #[serde(default = "default_batch_max_bytes")]
    pub max_bytes: ByteSize,
}

fn default_send_batch_size() -> usize {
    8192
}
fn default_batch_timeout() -> HumanDuration {
    HumanDuration::from_millis(200)
}
fn default_send_batch_max_size() -> usize {
    16384
}
fn default_batch_max_bytes() -> ByteSize {
    ByteSize::mib(3)
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            send_batch_size: default_send_batch_size(),
            timeout: default_batch_timeout(),
            send_batch_max_size: default_send_batch_max_size(),
            max_bytes: default_batch_max_bytes(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionKind {
    /// Add the attribute when it is absent.
    Insert,
    /// Change the attribute when it is present.
    Update,
    /// Add or change.
    Upsert,
    /// Remove.
    Delete,
}

/// A value set by an action: a string, a boolean, an integer or a float.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum AttributeValue {
    Bool(bool),
    Int(i64),
    Double(f64),
    String(String),
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttributeAction {
    pub key: String,
    pub action: ActionKind,
    #[serde(default)]
    pub value: Option<AttributeValue>,
}

/// Request, error and duration metrics from spans (`traces_span_metrics_*`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpanMetricsConfig {
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Distinct series (label sets) at most; spans of further label sets are counted in an
    /// overflow series of their service, kind and status (`span_name="__overflow__"`).
    #[serde(default = "default_max_series")]
    pub max_series: usize,
    /// A series not updated for this long is removed.
    #[serde(default = "default_expiration")]
    pub expiration: HumanDuration,
}

fn default_true() -> bool {
    true
}
fn default_max_series() -> usize {
    10_000
}
fn default_expiration() -> HumanDuration {
    HumanDuration::from_secs(300)
}

impl Default for SpanMetricsConfig {
    fn default() -> Self {
        SpanMetricsConfig { enabled: true, max_series: default_max_series(), expiration: default_expiration() }
    }
}

impl OtlpSourceConfig {
    /// Checks beyond types: addresses, limits, actions. `Position::START` means "the source's
    /// own position".
    pub fn validate(&self) -> Vec<(Position, String)> {
        let mut errors = Vec::new();
        for (name, address) in
            [("grpc_listen_address", &self.grpc_listen_address), ("http_listen_address", &self.http_listen_address)]
        {
            if let Some(address) = address
                && address.value.parse::<SocketAddr>().is_err()
            {
                errors.push((
                    address.position,
                    format!("{name} `{}` is not an address such as 0.0.0.0:4317", address.value),
                ));
            }
        }
        if let (Some(g), Some(h)) = (&self.grpc_listen_address, &self.http_listen_address)
            && g.value == h.value
        {
            errors.push((h.position, format!("grpc_listen_address and http_listen_address are both `{}`", h.value)));
        }
        if self.grpc_listen_address.is_none() && self.http_listen_address.is_none() {
            errors.push((Position::START, "grpc_listen_address and http_listen_address are both off".into()));
        }
        if self.max_recv_message_size.0 == 0 {
            errors.push((Position::START, "max_recv_message_size must be above 0".into()));
        }
        if self.memory_limit.0 < self.max_recv_message_size.0 {
            errors.push((Position::START, "memory_limit must be at least max_recv_message_size".into()));
        }
        let batch = &self.batch;
        if batch.send_batch_size == 0 {
            errors.push((Position::START, "batch.send_batch_size must be above 0".into()));
        }
        if batch.send_batch_max_size != 0 && batch.send_batch_max_size < batch.send_batch_size {
            errors.push((Position::START, "batch.send_batch_max_size must be 0 or at least send_batch_size".into()));
        }
        if batch.timeout.0.is_zero() {
            errors.push((Position::START, "batch.timeout must be above 0".into()));
        }
        if batch.max_bytes.0 < 1024 {
            errors.push((Position::START, "batch.max_bytes must be at least 1KiB".into()));
        }
        for (list, actions) in
            [("resource_attributes", &self.resource_attributes), ("span_attributes", &self.span_attributes)]
        {
            for (i, a) in actions.iter().enumerate() {
                if a.key.is_empty() {
                    errors.push((Position::START, format!("{list}[{i}]: key must not be empty")));
                }
                match (a.action, &a.value) {
                    (ActionKind::Delete, Some(_)) => {
                        errors.push((Position::START, format!("{list}[{i}] ({}): delete takes no value", a.key)))
                    }
                    (ActionKind::Insert | ActionKind::Update | ActionKind::Upsert, None) => {
                        errors.push((Position::START, format!("{list}[{i}] ({}): this action needs a value", a.key)))
                    }
                    _ => {}
                }
            }
        }
        if self.span_metrics.enabled && self.span_metrics.max_series == 0 {
            errors.push((Position::START, "span_metrics.max_series must be above 0".into()));
        }
        errors
    }

    pub fn grpc_address(&self) -> Option<SocketAddr> {
        self.grpc_listen_address.as_ref().and_then(|a| a.value.parse().ok())
    }

    pub fn http_address(&self) -> Option<SocketAddr> {
        self.http_listen_address.as_ref().and_then(|a| a.value.parse().ok())
    }
}
