//! Configuration of the Loki sink. Names follow Promtail's `clients` where they exist.

use crate::config::Located;
use crate::config::common::{BackoffConfig, BasicAuth, QueueConfig, TlsConfig};
use crate::config::duration::{ByteSize, HumanDuration};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LokiConfig {
    /// The push endpoint, e.g. `http://loki:3100/loki/api/v1/push`.
    pub url: Located<String>,
    /// The log sources this sink takes entries from (empty: all).
    #[serde(default)]
    pub sources: Vec<String>,
    /// Static tenant (`X-Scope-OrgID`).
    #[serde(default)]
    pub tenant_id: Option<String>,
    /// Label whose value is the tenant of an entry (entries without it use `tenant_id`).
    #[serde(default)]
    pub tenant_label: Option<String>,
    #[serde(default = "default_batch_size")]
    pub batch_size: ByteSize,
    #[serde(default = "default_batch_wait")]
    pub batch_wait: HumanDuration,
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
    #[serde(default)]
    pub backoff: BackoffConfig,
    /// Send structured metadata (Loki 3). Set to false for Loki 2.x, which refuses it.
    #[serde(default = "default_true")]
    pub structured_metadata: bool,
    /// Labels added to every stream (`cluster`, `node`).
    #[serde(default)]
    pub external_labels: BTreeMap<String, String>,
    #[serde(default)]
    pub basic_auth: Option<BasicAuth>,
    #[serde(default)]
    pub bearer_token: Option<String>,
    #[serde(default)]
    pub bearer_token_file: Option<PathBuf>,
    #[serde(default)]
    pub tls: TlsConfig,
    /// Extra HTTP headers on every push.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Lines longer than this are truncated (or dropped, see `max_line_size_truncate`);
    /// 0 disables the check. Loki 3's default limit is 256 KiB.
    #[serde(default = "default_max_line_size")]
    pub max_line_size: ByteSize,
    #[serde(default = "default_true")]
    pub max_line_size_truncate: bool,
    #[serde(default)]
    pub queue: QueueConfig,
}

fn default_batch_size() -> ByteSize {
    ByteSize::mib(1)
}
fn default_batch_wait() -> HumanDuration {
    HumanDuration::from_secs(1)
}
fn default_timeout() -> HumanDuration {
    HumanDuration::from_secs(10)
}
fn default_max_line_size() -> ByteSize {
    ByteSize::kib(256)
}
fn default_true() -> bool {
    true
}

impl LokiConfig {
    /// The queue's default size: the sources of logs (files, Docker) keep what waits on disk,
    /// so four batches in memory are enough to keep pushes flowing (and keep RSS low).
    pub const DEFAULT_QUEUE_BYTES: ByteSize = ByteSize::mib(4);

    /// Checks beyond types; each message is about this sink.
    pub fn validate(&self) -> Vec<String> {
        let mut errors = Vec::new();
        match self.url.value.parse::<http::Uri>() {
            Ok(uri) if matches!(uri.scheme_str(), Some("http" | "https")) && uri.host().is_some() => {}
            _ => errors.push(format!("url `{}` is not an http:// or https:// URL", self.url.value)),
        }
        if self.bearer_token.is_some() && self.bearer_token_file.is_some() {
            errors.push("set `bearer_token` or `bearer_token_file`, not both".into());
        }
        if self.basic_auth.is_some() && (self.bearer_token.is_some() || self.bearer_token_file.is_some()) {
            errors.push("set `basic_auth` or a bearer token, not both".into());
        }
        if let Some(auth) = &self.basic_auth
            && auth.password.is_some()
            && auth.password_file.is_some()
        {
            errors.push("basic_auth: set `password` or `password_file`, not both".into());
        }
        if self.batch_size.0 == 0 {
            errors.push("batch_size must be above 0".into());
        }
        if self.backoff.min_period > self.backoff.max_period {
            errors.push("backoff.min_period is above backoff.max_period".into());
        }
        for name in self.headers.keys() {
            if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                errors.push(format!("headers: `{name}` is not a valid header name"));
            }
        }
        errors
    }
}
