//! Configuration of the OTLP receiver.

use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtlpSourceConfig {
    /// OTLP/gRPC (`TraceService/Export`).
    #[serde(default)]
    pub grpc_listen_address: Option<String>,
    /// OTLP/HTTP (`POST /v1/traces`).
    #[serde(default)]
    pub http_listen_address: Option<String>,
}
