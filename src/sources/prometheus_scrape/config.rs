//! Configuration of scraping: jobs as in Prometheus' `scrape_configs`, with the names Prometheus
//! users know (`job_name`, `scrape_interval`, `metrics_path`, `static_configs`, `honor_labels`,
//! `relabel_configs`, `metric_relabel_configs`, `basic_auth`, `bearer_token_file`,
//! `tls_config`), plus `docker_discovery` (containers labelled `prometheus.io/scrape=true`).

use crate::config::common::{BasicAuth, TlsConfig};
use crate::config::{ByteSize, HumanDuration, Located, Position};
use crate::relabel::{RelabelConfig, Relabeler};
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScrapeConfig {
    /// The jobs of this source; each target of a job is scraped on its own schedule.
    #[serde(default)]
    pub jobs: Vec<Located<JobConfig>>,
}

/// `http` or `https`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    #[default]
    Http,
    Https,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobConfig {
    /// The `job` label of every series of the job.
    pub job_name: String,
    #[serde(default = "default_interval")]
    pub scrape_interval: HumanDuration,
    /// Default: 10s, or the interval when it is shorter.
    #[serde(default)]
    pub scrape_timeout: Option<HumanDuration>,
    #[serde(default)]
    pub scheme: Scheme,
    #[serde(default = "default_path")]
    pub metrics_path: String,
    /// On a clash between a scraped label and a target label (`job`, `instance`, static ones),
    /// keep the scraped one (true) or the target's, renaming the scraped one `exported_<name>`.
    #[serde(default)]
    pub honor_labels: bool,
    /// Keep the timestamps the exposition gives (true) or stamp every sample with the scrape time.
    #[serde(default = "default_true")]
    pub honor_timestamps: bool,
    /// Ask for OpenMetrics first (true) or only for the text format.
    #[serde(default = "default_true")]
    pub openmetrics: bool,
    #[serde(default)]
    pub static_configs: Vec<StaticConfig>,
    #[serde(default)]
    pub docker_discovery: Option<DockerDiscovery>,
    /// Relabeling of each target's labels before scraping (`__address__`, `__scheme__`,
    /// `__metrics_path__`, `job`, static labels, `__meta_docker_*`).
    #[serde(default)]
    pub relabel_configs: Vec<Located<RelabelConfig>>,
    /// Relabeling of each scraped series (keep, drop, replace, labeldrop, labelkeep, ...).
    #[serde(default)]
    pub metric_relabel_configs: Vec<Located<RelabelConfig>>,
    #[serde(default)]
    pub basic_auth: Option<BasicAuth>,
    #[serde(default)]
    pub bearer_token: Option<String>,
    /// Read again for every scrape, so a rotated token is picked up.
    #[serde(default)]
    pub bearer_token_file: Option<PathBuf>,
    #[serde(default, alias = "tls")]
    pub tls_config: TlsConfig,
    /// A scrape with more samples than this fails (0: no limit).
    #[serde(default)]
    pub sample_limit: usize,
    /// A body larger than this fails the scrape.
    #[serde(default = "default_body_limit")]
    pub body_size_limit: ByteSize,
    /// A line longer than this fails the scrape (0: no limit).
    #[serde(default = "default_line_limit")]
    pub max_line_size: ByteSize,
}

/// Targets written in the config.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticConfig {
    /// `host:port` addresses.
    pub targets: Vec<String>,
    /// Labels put on every series of these targets.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// Targets found among the running containers of a Docker engine: those labelled
/// `prometheus.io/scrape=true`, at their address on their network and the port of
/// `prometheus.io/port` (or their only exposed port), with the path of `prometheus.io/path` and
/// the scheme of `prometheus.io/scheme` when set.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DockerDiscovery {
    /// `unix:///var/run/docker.sock` or `tcp://host:2375`; default: `DOCKER_HOST`, then the
    /// local socket.
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default = "default_refresh")]
    pub refresh_interval: HumanDuration,
    /// The network whose address is used (default: the first network with an address, by name).
    #[serde(default)]
    pub network: Option<String>,
    /// The address of containers on the host's network.
    #[serde(default = "default_host_address")]
    pub host_network_address: String,
}

fn default_interval() -> HumanDuration {
    HumanDuration::from_secs(15)
}
fn default_path() -> String {
    "/metrics".into()
}
fn default_true() -> bool {
    true
}
fn default_body_limit() -> ByteSize {
    ByteSize::mib(32)
}
fn default_line_limit() -> ByteSize {
    ByteSize::kib(64)
}
fn default_refresh() -> HumanDuration {
    HumanDuration::from_secs(15)
}
fn default_host_address() -> String {
    "127.0.0.1".into()
}

impl JobConfig {
    /// The scrape timeout in force.
    pub fn timeout(&self) -> Duration {
        self.scrape_timeout.map_or(Duration::from_secs(10).min(self.scrape_interval.0), |t| t.0)
    }
}

impl ScrapeConfig {
    /// Checks beyond types; each error carries the place of the job it concerns.
    pub fn validate(&self) -> Vec<(Position, String)> {
        let mut errors = Vec::new();
        if self.jobs.is_empty() {
            errors.push((Position::START, "no jobs: add at least one under `jobs:`".to_string()));
        }
        let mut names = BTreeSet::new();
        for job in &self.jobs {
            let at = job.position;
            let j = &job.value;
            let mut error = |m: String| errors.push((at, format!("job `{}`: {m}", j.job_name)));
            if j.job_name.is_empty() {
                error("`job_name` is empty".into());
            } else if !names.insert(j.job_name.as_str()) {
                error("a second job with this name".into());
            }
            if j.scrape_interval.0.is_zero() {
                error("scrape_interval must be above 0".into());
            }
            let timeout = j.timeout();
            if timeout.is_zero() || timeout > j.scrape_interval.0 {
                error(format!(
                    "scrape_timeout ({:?}) must be above 0 and at most scrape_interval ({:?})",
                    timeout, j.scrape_interval.0
                ));
            }
            if !j.metrics_path.starts_with('/') {
                error(format!("metrics_path `{}` must start with /", j.metrics_path));
            }
            if j.static_configs.is_empty() && j.docker_discovery.is_none() {
                error("no targets: add `static_configs` or `docker_discovery`".into());
            }
            for s in &j.static_configs {
                for target in &s.targets {
                    if let Err(e) = check_address(target) {
                        error(e);
                    }
                }
                for name in s.labels.keys() {
                    if !super::parse::is_label_name(name) || name.starts_with("__") {
                        error(format!(
                            "`{name}` is not a valid label name ([a-zA-Z_][a-zA-Z0-9_]*, not starting with __)"
                        ));
                    }
                }
            }
            if let Some(d) = &j.docker_discovery {
                if let Some(host) = &d.host
                    && let Err(e) = crate::sources::docker::client::Endpoint::parse(host)
                {
                    error(format!("docker_discovery: {e}"));
                }
                if d.refresh_interval.0.is_zero() {
                    error("docker_discovery.refresh_interval must be above 0".into());
                }
            }
            let auths = usize::from(j.basic_auth.is_some())
                + usize::from(j.bearer_token.is_some())
                + usize::from(j.bearer_token_file.is_some());
            if auths > 1 {
                error("set one of `basic_auth`, `bearer_token` and `bearer_token_file`".into());
            }
            if let Some(auth) = &j.basic_auth
                && auth.password.is_some()
                && auth.password_file.is_some()
            {
                error("basic_auth: set `password` or `password_file`, not both".into());
            }
            if j.body_size_limit.0 == 0 {
                error("body_size_limit must be above 0".into());
            }
            for (what, rules) in
                [("relabel_configs", &j.relabel_configs), ("metric_relabel_configs", &j.metric_relabel_configs)]
            {
                if let Err(e) = Relabeler::compile(rules) {
                    let name = &j.job_name;
                    errors.extend(e.into_iter().map(|(p, m)| (p, format!("job `{name}`: {what}: {m}"))));
                }
            }
        }
        errors
    }
}

/// A target address is `host:port`, without scheme or path.
pub fn check_address(target: &str) -> Result<(), String> {
    let bad = || format!("target `{target}` is not a host:port address (no scheme, no path)");
    if target.contains("://") || target.contains('/') {
        return Err(bad());
    }
    let authority: http::uri::Authority = target.parse().map_err(|_| bad())?;
    if authority.port_u16().is_none() || authority.host().is_empty() {
        return Err(bad());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_yaml_expanded;
    use std::path::Path;

    fn parse(text: &str) -> ScrapeConfig {
        parse_yaml_expanded(Path::new("s.yaml"), text).unwrap()
    }

    #[test]
    fn defaults_follow_prometheus() {
        let c = parse("jobs:\n  - job_name: gpu\n    static_configs:\n      - targets: ['localhost:9835']\n");
        let j = &c.jobs[0].value;
        assert_eq!(j.scrape_interval.0, Duration::from_secs(15));
        assert_eq!(j.timeout(), Duration::from_secs(10));
        assert_eq!(
            (j.scheme, j.metrics_path.as_str(), j.honor_labels, j.honor_timestamps),
            (Scheme::Http, "/metrics", false, true)
        );
        assert!(c.validate().is_empty(), "{:?}", c.validate());
        let c = parse("jobs:\n  - job_name: fast\n    scrape_interval: 2s\n    static_configs: [{targets: ['a:1']}]\n");
        assert_eq!(c.jobs[0].value.timeout(), Duration::from_secs(2), "the timeout never exceeds the interval");
    }

    #[test]
    fn validation_finds_every_mistake_with_its_place() {
        let c = parse(
            "jobs:
  - job_name: a
    scrape_interval: 5s
    scrape_timeout: 10s
    metrics_path: metrics
    static_configs:
      - targets: ['http://x:1/metrics', 'nohost', 'ok:9100']
        labels: {bad-name: x}
    bearer_token: t
    bearer_token_file: /t
    metric_relabel_configs:
      - action: keep
  - job_name: a
",
        );
        let errors = c.validate();
        let text: Vec<String> = errors.iter().map(|(p, m)| format!("{}:{}: {m}", p.line, p.column)).collect();
        assert_eq!(
            text,
            [
                "2:5: job `a`: scrape_timeout (10s) must be above 0 and at most scrape_interval (5s)",
                "2:5: job `a`: metrics_path `metrics` must start with /",
                "2:5: job `a`: target `http://x:1/metrics` is not a host:port address (no scheme, no path)",
                "2:5: job `a`: target `nohost` is not a host:port address (no scheme, no path)",
                "2:5: job `a`: `bad-name` is not a valid label name ([a-zA-Z_][a-zA-Z0-9_]*, not starting with __)",
                "2:5: job `a`: set one of `basic_auth`, `bearer_token` and `bearer_token_file`",
                "12:9: job `a`: metric_relabel_configs: action `keep` needs `source_labels`",
                "13:5: job `a`: a second job with this name",
                "13:5: job `a`: no targets: add `static_configs` or `docker_discovery`",
            ]
        );
    }
}
