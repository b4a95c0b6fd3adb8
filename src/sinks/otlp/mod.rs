//! `otlp` sink: exports spans over OTLP (to Jaeger).

pub mod config;

use crate::event::SpanBatch;
use crate::telemetry::metrics::SinkHandles;
use crate::topology::queue::QueueReceiver;
use config::OtlpSinkConfig;

#[derive(Debug, thiserror::Error)]
pub enum OtlpSinkError {
    #[error("not implemented yet")]
    NotImplemented,
}

pub struct OtlpSink;

impl OtlpSink {
    pub fn build(_config: &OtlpSinkConfig, _handles: SinkHandles) -> Result<OtlpSink, OtlpSinkError> {
        Err(OtlpSinkError::NotImplemented)
    }

    pub async fn run(self, _rx: QueueReceiver<SpanBatch>) {}
}
