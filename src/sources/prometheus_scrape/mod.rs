//! `prometheus_scrape`: scrapes Prometheus and OpenMetrics targets.

pub mod config;

use crate::event::SampleBatch;
use crate::topology::SignalEmitter;
use config::ScrapeConfig;
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum ScrapeError {
    #[error("not implemented yet")]
    NotImplemented,
}

pub async fn run(
    _config: ScrapeConfig,
    _emitter: SignalEmitter<SampleBatch>,
    _cancel: CancellationToken,
) -> Result<(), ScrapeError> {
    Err(ScrapeError::NotImplemented)
}
