//! `prometheus_remote_write` sink: Remote Write 1.0 to Prometheus.

pub mod config;

use crate::event::SampleBatch;
use crate::telemetry::metrics::SinkHandles;
use crate::topology::queue::QueueReceiver;
use config::RemoteWriteConfig;

#[derive(Debug, thiserror::Error)]
pub enum RemoteWriteError {
    #[error("not implemented yet")]
    NotImplemented,
}

pub struct RemoteWriteSink;

impl RemoteWriteSink {
    pub fn build(_config: &RemoteWriteConfig, _handles: SinkHandles) -> Result<RemoteWriteSink, RemoteWriteError> {
        Err(RemoteWriteError::NotImplemented)
    }

    pub async fn run(self, _rx: QueueReceiver<SampleBatch>) {}
}
