//! Configuration of Remote Write. Names follow Prometheus' `remote_write` and `queue_config`
//! where they exist.

use crate::config::Located;
use crate::config::common::{BackoffConfig, BasicAuth, QueueConfig, TlsConfig};
use crate::config::duration::HumanDuration;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteWriteConfig {
    /// e.g. `http://prometheus:9090/api/v1/write`.
    pub url: Located<String>,
    /// The metrics sources this sink takes samples from (empty: all).
    #[serde(default)]
    pub sources: Vec<String>,
    /// Samples are sent over this many connections, each series always through the same one
    /// (so its samples stay in order).
    #[serde(default = "default_shards")]
    pub shards: usize,
    /// A shard sends when it holds this many samples...
    #[serde(default = "default_max_samples")]
    pub max_samples_per_send: usize,
    /// ... or when its oldest sample waited this long.
    #[serde(default = "default_deadline")]
    pub batch_send_deadline: HumanDuration,
    /// How long a request may take.
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
    /// Retries of 5xx, 429 and transport errors (unlimited by default).
    #[serde(default = "default_backoff")]
    pub backoff: BackoffConfig,
    /// Labels added to every series that does not have them (`cluster`, `node`).
    #[serde(default)]
    pub external_labels: BTreeMap<String, String>,
    #[serde(default)]
    pub basic_auth: Option<BasicAuth>,
    #[serde(default)]
    pub bearer_token: Option<String>,
    /// Read again for every request, so a rotated token is picked up.
    #[serde(default)]
    pub bearer_token_file: Option<PathBuf>,
    #[serde(default)]
    pub tls: TlsConfig,
    /// Extra HTTP headers on every request.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The bounded queue in front of the sink: it holds samples until they are delivered, so
    /// it is what covers an outage of the receiver; when it is full, scrapes wait.
    #[serde(default)]
    pub queue: QueueConfig,
}

fn default_shards() -> usize {
    2
}
fn default_max_samples() -> usize {
    2000
}
fn default_deadline() -> HumanDuration {
    HumanDuration::from_secs(5)
}
fn default_timeout() -> HumanDuration {
    HumanDuration::from_secs(30)
}
fn default_backoff() -> BackoffConfig {
    BackoffConfig {
        min_period: HumanDuration::from_millis(100),
        max_period: HumanDuration::from_secs(5),
        max_retries: None,
    }
}

impl RemoteWriteConfig {
    /// Checks beyond types; each message is about this sink.
    pub fn validate(&self) -> Vec<String> {
        let mut errors = Vec::new();
        match self.url.value.parse::<http::Uri>() {
            Ok(uri) if matches!(uri.scheme_str(), Some("http" | "https")) && uri.host().is_some() => {}
            _ => errors.push(format!("url `{}` is not an http:// or https:// URL", self.url.value)),
        }
        if self.shards == 0 || self.shards > 64 {
            errors.push("shards must be between 1 and 64".into());
        }
        if self.max_samples_per_send == 0 {
            errors.push("max_samples_per_send must be above 0".into());
        }
        if self.batch_send_deadline.0.is_zero() {
            errors.push("batch_send_deadline must be above 0".into());
        }
        if self.backoff.min_period > self.backoff.max_period {
            errors.push("backoff.min_period is above backoff.max_period".into());
        }
        let auths = usize::from(self.basic_auth.is_some())
            + usize::from(self.bearer_token.is_some())
            + usize::from(self.bearer_token_file.is_some());
        if auths > 1 {
            errors.push("set one of `basic_auth`, `bearer_token` and `bearer_token_file`".into());
        }
        if let Some(auth) = &self.basic_auth
            && auth.password.is_some()
            && auth.password_file.is_some()
        {
            errors.push("basic_auth: set `password` or `password_file`, not both".into());
        }
        for (name, value) in &self.external_labels {
            if !crate::event::labels::is_valid_name(name) || name.starts_with("__") {
                errors.push(format!("external_labels: `{name}` is not a valid label name"));
            }
            if value.is_empty() {
                errors.push(format!("external_labels: `{name}` has an empty value"));
            }
        }
        for name in self.headers.keys() {
            if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                errors.push(format!("headers: `{name}` is not a valid header name"));
            }
        }
        errors
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_yaml_expanded;
    use std::path::Path;

    #[test]
    fn defaults_and_validation() {
        let c: RemoteWriteConfig =
            parse_yaml_expanded(Path::new("s"), "url: http://prometheus:9090/api/v1/write\n").unwrap();
        assert_eq!((c.shards, c.max_samples_per_send, c.batch_send_deadline.0.as_secs()), (2, 2000, 5));
        assert_eq!(c.backoff.max_period.0.as_secs(), 5);
        assert!(c.validate().is_empty());
        let c: RemoteWriteConfig = parse_yaml_expanded(
            Path::new("s"),
            "url: prometheus:9090\nshards: 0\nmax_samples_per_send: 0\nexternal_labels: {bad-name: x, node: ''}\nbearer_token: a\nbearer_token_file: /b\n",
        )
        .unwrap();
        assert_eq!(
            c.validate(),
            [
                "url `prometheus:9090` is not an http:// or https:// URL",
                "shards must be between 1 and 64",
                "max_samples_per_send must be above 0",
                "set one of `basic_auth`, `bearer_token` and `bearer_token_file`",
                "external_labels: `bad-name` is not a valid label name",
                "external_labels: `node` has an empty value",
            ]
        );
    }
}
