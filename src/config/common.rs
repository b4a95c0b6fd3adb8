//! Config blocks shared by several components: authentication, TLS, retries, queues.

use super::duration::{ByteSize, HumanDuration};
use serde::Deserialize;
use std::path::PathBuf;

/// HTTP basic authentication; the password inline or read from a file at build time.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuth {
    pub username: String,
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
}

/// Client TLS settings (rustls). Without `ca_file`, the bundled Mozilla roots are trusted.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    #[serde(default)]
    pub server_name: Option<String>,
    #[serde(default)]
    pub insecure_skip_verify: bool,
}

/// Exponential backoff with jitter between retries.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackoffConfig {
    #[serde(default = "default_min_period")]
    pub min_period: HumanDuration,
    #[serde(default = "default_max_period")]
    pub max_period: HumanDuration,
    /// Retries before a batch is dropped (counted); unlimited when absent, so that nothing is
    /// lost while the process lives.
    #[serde(default)]
    pub max_retries: Option<u32>,
}

fn default_min_period() -> HumanDuration {
    HumanDuration::from_millis(500)
}

fn default_max_period() -> HumanDuration {
    HumanDuration::from_secs(300)
}

impl Default for BackoffConfig {
    fn default() -> Self {
        BackoffConfig { min_period: default_min_period(), max_period: default_max_period(), max_retries: None }
    }
}

/// What a full queue does to the sources that feed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    /// Sources wait (backpressure): nothing is lost; for Docker and files the log on disk is the buffer.
    #[default]
    Block,
    /// New entries for this sink are dropped and counted; other sinks fed by the same sources go on.
    DropNewest,
}

/// The bounded queue in front of a sink.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    /// Unset: the sink's default ([`QueueConfig::DEFAULT_BYTES`] unless the sink says otherwise).
    #[serde(default)]
    pub max_bytes: Option<ByteSize>,
    #[serde(default)]
    pub when_full: WhenFull,
}

impl QueueConfig {
    pub const DEFAULT_BYTES: ByteSize = ByteSize::mib(16);

    pub fn max_bytes_or(&self, default: ByteSize) -> ByteSize {
        self.max_bytes.unwrap_or(default)
    }
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig { max_bytes: None, when_full: WhenFull::Block }
    }
}
