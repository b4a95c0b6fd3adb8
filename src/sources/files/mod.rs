//! `files`: container log files of a Kubernetes node (CRI) or a Docker host (json-file), and any
//! other log files, found by glob, followed through rotation, with acknowledged positions.

pub mod config;

use crate::topology::Emitter;
use config::FilesConfig;
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    #[error("not implemented yet")]
    NotImplemented,
}

pub async fn run(_config: FilesConfig, _emitter: Emitter, _cancel: CancellationToken) -> Result<(), FilesError> {
    Err(FilesError::NotImplemented)
}
