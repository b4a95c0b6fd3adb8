//! `otlp`: receives OpenTelemetry spans over gRPC and HTTP.

pub mod config;

use crate::event::SpanBatch;
use crate::topology::SignalEmitter;
use config::OtlpSourceConfig;
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum OtlpSourceError {
    #[error("not implemented yet")]
    NotImplemented,
}

pub async fn run(
    _config: OtlpSourceConfig,
    _emitter: SignalEmitter<SpanBatch>,
    _cancel: CancellationToken,
) -> Result<(), OtlpSourceError> {
    Err(OtlpSourceError::NotImplemented)
}
