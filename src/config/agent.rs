//! The agent file: HTTP server, directories, label limits, sources and sinks.

use super::common::{QueueConfig, WhenFull};
use super::duration::{ByteSize, HumanDuration};
use super::{ConfigError, ConfigErrors, Located, Position};
use crate::event::labels::is_valid_name;
use crate::sinks::console::ConsoleConfig;
use crate::sinks::loki::config::LokiConfig;
use crate::sinks::otlp::config::OtlpSinkConfig;
use crate::sinks::remote_write::config::RemoteWriteConfig;
use crate::sources::docker::config::DockerConfig;
use crate::sources::file::FileConfig;
use crate::sources::files::config::FilesConfig;
use crate::sources::otlp::config::OtlpSourceConfig;
use crate::sources::prometheus_scrape::config::ScrapeConfig;
use crate::sources::stdin::StdinConfig;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    #[serde(default)]
    pub server: ServerConfig,
    /// Where positions are kept. Relative paths are relative to the agent file.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// The directory of pipeline files (`*.yaml`, `*.yml`). Relative to the agent file.
    #[serde(default)]
    pub pipelines_dir: Option<PathBuf>,
    #[serde(default)]
    pub limits: LimitsConfig,
    #[serde(default)]
    pub sources: BTreeMap<String, Located<SourceConfig>>,
    #[serde(default)]
    pub sinks: BTreeMap<String, Located<SinkConfig>>,
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("data")
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    #[serde(default = "default_http_listen_address")]
    pub http_listen_address: Located<String>,
    /// How long SIGTERM waits for the sinks to deliver what is pending.
    #[serde(default = "default_shutdown_timeout")]
    pub shutdown_timeout: HumanDuration,
}

fn default_http_listen_address() -> Located<String> {
    Located::new("127.0.0.1:9080".into(), Position::START)
}

fn default_shutdown_timeout() -> HumanDuration {
    HumanDuration::from_secs(10)
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            http_listen_address: default_http_listen_address(),
            shutdown_timeout: default_shutdown_timeout(),
        }
    }
}

/// Label safety limits (see `event::interner`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    #[serde(default = "default_max_label_values")]
    pub max_label_values: usize,
    #[serde(default = "default_max_label_names")]
    pub max_label_names: usize,
    #[serde(default = "default_max_label_value_length")]
    pub max_label_value_length: usize,
}

fn default_max_label_values() -> usize {
    1000
}
fn default_max_label_names() -> usize {
    15
}
fn default_max_label_value_length() -> usize {
    2048
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_label_values: default_max_label_values(),
            max_label_names: default_max_label_names(),
            max_label_value_length: default_max_label_value_length(),
        }
    }
}

/// A source, selected by its `type`.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceConfig {
    Stdin(StdinConfig),
    File(FileConfig),
    Files(Box<FilesConfig>),
    Docker(Box<DockerConfig>),
    Otlp(Box<OtlpSourceConfig>),
    PrometheusScrape(Box<ScrapeConfig>),
}

crate::type_tagged!(SourceConfig, "source", {
    "stdin" => Stdin(StdinConfig),
    "file" => File(FileConfig),
    "files" => Files(Box<FilesConfig>),
    "docker" => Docker(Box<DockerConfig>),
    "otlp" => Otlp(Box<OtlpSourceConfig>),
    "prometheus_scrape" => PrometheusScrape(Box<ScrapeConfig>),
});

/// The three kinds of records, each with its own routes from sources to sinks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Signal {
    Logs,
    Traces,
    Metrics,
}

impl Signal {
    pub fn as_str(self) -> &'static str {
        match self {
            Signal::Logs => "logs",
            Signal::Traces => "traces",
            Signal::Metrics => "metrics",
        }
    }
}

static NO_LABELS: BTreeMap<String, String> = BTreeMap::new();

impl SourceConfig {
    /// Static labels a log source puts on every entry.
    pub fn labels(&self) -> &BTreeMap<String, String> {
        match self {
            SourceConfig::Stdin(c) => &c.labels,
            SourceConfig::File(c) => &c.labels,
            SourceConfig::Files(c) => &c.labels,
            SourceConfig::Docker(c) => &c.labels,
            SourceConfig::Otlp(_) | SourceConfig::PrometheusScrape(_) => &NO_LABELS,
        }
    }

    /// What the source produces.
    pub fn signal(&self) -> Signal {
        match self {
            SourceConfig::Stdin(_) | SourceConfig::File(_) | SourceConfig::Files(_) | SourceConfig::Docker(_) => {
                Signal::Logs
            }
            SourceConfig::Otlp(_) => Signal::Traces,
            SourceConfig::PrometheusScrape(_) => Signal::Metrics,
        }
    }
}

/// A sink, selected by its `type`.
#[derive(Debug, Clone, PartialEq)]
pub enum SinkConfig {
    Loki(Box<LokiConfig>),
    Console(ConsoleConfig),
    Otlp(Box<OtlpSinkConfig>),
    PrometheusRemoteWrite(Box<RemoteWriteConfig>),
}

crate::type_tagged!(SinkConfig, "sink", {
    "loki" => Loki(Box<LokiConfig>),
    "console" => Console(ConsoleConfig),
    "otlp" => Otlp(Box<OtlpSinkConfig>),
    "prometheus_remote_write" => PrometheusRemoteWrite(Box<RemoteWriteConfig>),
});

impl SinkConfig {
    /// The sources this sink takes records from (empty: every source of its signal).
    pub fn sources(&self) -> &[String] {
        match self {
            SinkConfig::Loki(c) => &c.sources,
            SinkConfig::Console(c) => &c.sources,
            SinkConfig::Otlp(c) => &c.sources,
            SinkConfig::PrometheusRemoteWrite(c) => &c.sources,
        }
    }

    /// What the sink takes.
    pub fn signal(&self) -> Signal {
        match self {
            SinkConfig::Loki(_) | SinkConfig::Console(_) => Signal::Logs,
            SinkConfig::Otlp(_) => Signal::Traces,
            SinkConfig::PrometheusRemoteWrite(_) => Signal::Metrics,
        }
    }

    /// The queue in front of the sink: its size in bytes and what a full one does.
    pub fn queue(&self) -> (ByteSize, WhenFull) {
        let default = QueueConfig::default();
        let (queue, default_bytes) = match self {
            SinkConfig::Loki(c) => (&c.queue, LokiConfig::DEFAULT_QUEUE_BYTES),
            SinkConfig::Console(_) => (&default, QueueConfig::DEFAULT_BYTES),
            SinkConfig::Otlp(c) => (&c.queue, QueueConfig::DEFAULT_BYTES),
            SinkConfig::PrometheusRemoteWrite(c) => (&c.queue, QueueConfig::DEFAULT_BYTES),
        };
        (queue.max_bytes_or(default_bytes), queue.when_full)
    }
}

impl AgentConfig {
    /// Checks what serde cannot: names, references between components, addresses.
    pub fn validate(&self, file: &Path) -> Result<(), ConfigErrors> {
        let mut errors = ConfigErrors::default();
        let mut error = |position: Position, message: String| errors.push(ConfigError::new(file, position, message));
        let address = &self.server.http_listen_address;
        if address.value.parse::<SocketAddr>().is_err() {
            error(
                address.position,
                format!("server.http_listen_address `{}` is not an address such as 127.0.0.1:9080", address.value),
            );
        }
        if self.sources.is_empty() {
            error(Position::START, "no sources configured: add at least one under `sources:`".into());
        }
        for (name, source) in &self.sources {
            if name.is_empty() {
                error(source.position, "a source needs a non-empty name".into());
            }
            let problems = match &source.value {
                SourceConfig::Docker(c) => c.validate(),
                SourceConfig::Files(c) => c.validate(),
                SourceConfig::Otlp(c) => c.validate(),
                SourceConfig::PrometheusScrape(c) => c.validate(),
                _ => Vec::new(),
            };
            for (position, message) in problems {
                let position = if position == Position::START { source.position } else { position };
                error(position, format!("source `{name}`: {message}"));
            }
            for label in source.value.labels().keys() {
                if !is_valid_name(label) || label.starts_with("__") {
                    error(
                        source.position,
                        format!(
                            "source `{name}`: `{label}` is not a valid label name ([a-zA-Z_][a-zA-Z0-9_]*, not starting with __)"
                        ),
                    );
                }
            }
        }
        for (name, sink) in &self.sinks {
            for source in sink.value.sources() {
                match self.sources.get(source) {
                    None => error(
                        sink.position,
                        format!("sink `{name}` reads from source `{source}`, which is not configured"),
                    ),
                    Some(s) if s.value.signal() != sink.value.signal() => error(
                        sink.position,
                        format!(
                            "sink `{name}` takes {} but source `{source}` produces {}: it would get nothing from it",
                            sink.value.signal().as_str(),
                            s.value.signal().as_str()
                        ),
                    ),
                    Some(_) => {}
                }
            }
            if let SinkConfig::Loki(loki) = &sink.value {
                for message in loki.validate() {
                    error(sink.position, format!("sink `{name}`: {message}"));
                }
            }
            if let SinkConfig::PrometheusRemoteWrite(remote_write) = &sink.value {
                for message in remote_write.validate() {
                    error(sink.position, format!("sink `{name}`: {message}"));
                }
            }
            if let SinkConfig::Otlp(otlp) = &sink.value {
                for (position, message) in otlp.validate() {
                    let position = if position == Position::START { sink.position } else { position };
                    error(position, format!("sink `{name}`: {message}"));
                }
            }
        }
        errors.into_result(())
    }

    /// The address of the HTTP server (valid after [`AgentConfig::validate`]).
    pub fn http_listen_address(&self) -> Option<SocketAddr> {
        self.server.http_listen_address.value.parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_yaml_expanded;

    fn parse(text: &str) -> Result<AgentConfig, ConfigError> {
        parse_yaml_expanded(Path::new("a.yaml"), text)
    }

    #[test]
    fn reads_a_small_agent_file() {
        let config = parse(
            "server:\n  http_listen_address: 0.0.0.0:9080\nsources:\n  in:\n    type: stdin\n    labels: {job: app}\nsinks:\n  out:\n    type: console\n",
        )
        .unwrap();
        assert_eq!(config.sources["in"].value.type_name(), "stdin");
        assert_eq!(config.sinks["out"].value.type_name(), "console");
        config.validate(Path::new("a.yaml")).unwrap();
    }

    #[test]
    fn places_errors_inside_components() {
        let err = parse("sources:\n  in:\n    type: stdin\n    lables: {}\n").unwrap_err();
        assert_eq!((err.position.line, err.position.column), (4, 5));
        let err = parse("sources:\n  in:\n    labels: {}\n    type: stdin\n").unwrap_err();
        assert!(err.message.contains("starts with its `type`"), "{}", err.message);
        let err = parse("sources:\n  in:\n    type: kafka\n").unwrap_err();
        assert!(err.message.contains("unknown variant `kafka`"), "{}", err.message);
    }

    #[test]
    fn validation_collects_every_error() {
        let config = parse(
            "server: {http_listen_address: nowhere}\nsources:\n  in: {type: stdin, labels: {bad-name: x}}\nsinks:\n  out: {type: console, sources: [missing]}\n",
        )
        .unwrap();
        let errors = config.validate(Path::new("a.yaml")).unwrap_err();
        let text = errors.to_string();
        assert_eq!(errors.0.len(), 3, "{text}");
        assert!(text.contains("a.yaml:1:31: server.http_listen_address `nowhere`"), "{text}");
        assert!(text.contains("`bad-name` is not a valid label name"), "{text}");
        assert!(text.contains("a.yaml:5:8: sink `out` reads from source `missing`"), "{text}");
    }

    #[test]
    fn a_sink_reading_a_source_of_another_signal_is_an_error() {
        let config = parse(
            "sources:\n  logs: {type: stdin}\n  spans: {type: otlp}\nsinks:\n  out: {type: console, sources: [logs, spans]}\n",
        )
        .unwrap();
        let errors = config.validate(Path::new("a.yaml")).unwrap_err();
        assert_eq!(
            errors.to_string().trim(),
            "a.yaml:5:8: sink `out` takes logs but source `spans` produces traces: it would get nothing from it"
        );
    }
}
