//! Promtail's config → sluice's agent file and pipeline files.
//!
//! What maps to what (everything else is reported as an [`Issue`], never dropped silently):
//!
//! | Promtail | sluice |
//! |---|---|
//! | `server.http_listen_address` + `http_listen_port` | `server.http_listen_address` (`0.0.0.0:9080` when unset, as Promtail) |
//! | `server.graceful_shutdown_timeout` | `server.shutdown_timeout` |
//! | `clients[]` | one `loki` sink each (`url`, `tenant_id`, `batchwait`, `batchsize`, `timeout`, `backoff_config`, `external_labels`, `headers`, `basic_auth`, `bearer_token(_file)`, `authorization` of type Bearer, `tls_config`) |
//! | `positions.filename` | `data_dir` (its directory; positions themselves are not migrated) |
//! | `positions.sync_period` | `sync_period` of every docker and files source |
//! | `target_config.sync_period` | `scan_interval` of every files source |
//! | `limits_config.max_line_size(_truncate)` | `max_line_size(_truncate)` of every loki sink |
//! | job with `docker_sd_configs` | a `docker` source per entry: `host`, `refresh_interval`, `filters` (`label`; `name` as a regex), the job's `relabel_configs` as they are |
//! | job with `static_configs` | a `files` source per entry: `include`/`exclude` from `__path__`/`__path_exclude__` (`{a,b}` expanded), the other labels, the job's `relabel_configs` applied now (the labels are static) |
//! | job with `kubernetes_sd_configs` (role `pod`) | a `files` source on `/var/log/pods/*/*/*.log` with `kubernetes: {node}`; relabel rules on `__meta_kubernetes_pod_label_*` carried over (`api: true`); namespace, pod, container and node come from the path |
//! | `pipeline_stages` | `pipelines/<job>.yaml` with `match: {sources: [...]}` and the stages as they are; a leading `docker`/`cri` stage becomes the files source's `format` (or is left out for a docker source, whose lines arrive unwrapped); metrics keep Promtail's `promtail_custom_` prefix |

use super::yaml::{Entry, Node, Value};
use super::{Draft, Issue, PipelineDraft};
use crate::config::Position;
use crate::event::labels::is_valid_name;
use crate::relabel::{RelabelConfig, Rule};
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The stages sluice has (see `config::pipeline::StageConfig`).
pub const SLUICE_STAGES: &[&str] = &[
    "docker",
    "cri",
    "json",
    "logfmt",
    "regex",
    "labels",
    "static_labels",
    "labeldrop",
    "labelallow",
    "structured_metadata",
    "timestamp",
    "output",
    "drop",
    "match",
    "replace",
    "limit",
    "multiline",
    "template",
    "metrics",
];

/// Where sluice's files source finds Kubernetes pod logs.
pub const POD_LOGS: &str = "/var/log/pods/*/*/*.log";

/// Converts a parsed Promtail config into a draft of the output and the issues found on the way.
pub fn convert(input: &Path, root: &Node) -> (Draft, Vec<Issue>) {
    let mut c = Converter {
        input,
        issues: Vec::new(),
        server: None,
        data_dir: None,
        sources: Vec::new(),
        sinks: Vec::new(),
        pipelines: Vec::new(),
        sync_period: None,
        scan_interval: None,
        max_line_size: None,
        max_line_size_truncate: None,
    };
    c.root(root);
    let draft = c.finish();
    (draft, c.issues)
}

struct Converter<'a> {
    input: &'a Path,
    issues: Vec<Issue>,
    server: Option<Node>,
    data_dir: Option<Node>,
    sources: Vec<(String, Node)>,
    sinks: Vec<(String, Node)>,
    pipelines: Vec<PipelineDraft>,
    /// `positions.sync_period`.
    sync_period: Option<Node>,
    /// `target_config.sync_period`.
    scan_interval: Option<Node>,
    /// `limits_config.max_line_size` and `max_line_size_truncate`.
    max_line_size: Option<Node>,
    max_line_size_truncate: Option<Node>,
}

fn text(node: &Node) -> Option<&str> {
    node.as_text()
}

fn is_true(node: &Node) -> bool {
    text(node).is_some_and(|t| matches!(t.to_ascii_lowercase().as_str(), "true" | "yes" | "on" | "y"))
}

fn is_false_or_null(node: &Node) -> bool {
    node.is_null()
        || text(node).is_some_and(|t| matches!(t.to_ascii_lowercase().as_str(), "false" | "no" | "off" | "n"))
}

/// A scalar for the output at `position`.
fn scalar(text: impl Into<String>, position: Position) -> Node {
    Node::str(text, position)
}

/// The strings of a sequence (or of a single scalar).
fn strings(node: &Node) -> Vec<(String, Position)> {
    match &node.value {
        Value::Seq(items) => items.iter().filter_map(|i| text(i).map(|t| (t.to_string(), i.position))).collect(),
        Value::Str(s) | Value::Plain(s) => vec![(s.clone(), node.position)],
        _ => Vec::new(),
    }
}

/// A job name as a source name and file name: letters, digits, `_`, `-` and `.`.
pub fn sanitize(name: &str) -> String {
    let cleaned: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.') { c } else { '_' }).collect();
    let cleaned = cleaned.trim_start_matches('.').to_string();
    if cleaned.is_empty() { "job".to_string() } else { cleaned }
}

impl Converter<'_> {
    fn issue(&mut self, position: Position, what: impl Into<String>, why: impl Into<String>) {
        self.issues.push(Issue { file: self.input.to_path_buf(), position, what: what.into(), why: why.into() });
    }

    fn root(&mut self, root: &Node) {
        if root.is_null() {
            self.issue(Position::START, "the file", "it is empty");
            return;
        }
        if !matches!(root.value, Value::Map(_)) {
            self.issue(root.position, "the file", "a Promtail config is a mapping of sections");
            return;
        }
        // Settings that apply to every source or sink are read first.
        for entry in root.entries() {
            match entry.key.as_str() {
                "positions" => self.positions(entry),
                "target_config" => self.target_config(entry),
                "limits_config" => self.limits_config(entry),
                _ => {}
            }
        }
        let mut jobs = None;
        for entry in root.entries() {
            match entry.key.as_str() {
                "positions" | "target_config" | "limits_config" => {}
                "server" => self.server(Some(entry)),
                "clients" => {
                    let clients = entry.value.items();
                    for (i, client) in clients.iter().enumerate() {
                        let name = if clients.len() == 1 { "loki".to_string() } else { format!("loki_{}", i + 1) };
                        self.client(client, &format!("clients[{i}]"), name);
                    }
                }
                // Promtail's older single-client form.
                "client" => self.client(&entry.value, "client", "loki".to_string()),
                "scrape_configs" => jobs = Some(entry),
                "options" => {
                    for e in entry.value.entries() {
                        self.issue(e.key_position, format!("options.{}", e.key), "sluice has no such setting");
                    }
                }
                "tracing" => {
                    if let Some(e) = entry.value.get("enabled").filter(|e| is_true(&e.value)) {
                        self.issue(e.key_position, "tracing.enabled", "sluice does not trace itself");
                    }
                }
                "global" => {
                    for e in entry.value.entries() {
                        self.issue(
                            e.key_position,
                            format!("global.{}", e.key),
                            "sluice follows files with inotify and rescans them every `scan_interval`",
                        );
                    }
                }
                other => self.issue(entry.key_position, format!("`{other}`"), "not a Promtail section sluice knows"),
            }
        }
        if self.server.is_none() {
            self.server(None);
        }
        if root.get("clients").or_else(|| root.get("client")).is_none_or(|e| e.value.is_empty()) {
            self.issue(Position::START, "clients", "there is none: sluice would read logs and send them nowhere");
        }
        match jobs {
            Some(jobs) if !jobs.value.items().is_empty() => {
                for (i, job) in jobs.value.items().iter().enumerate() {
                    self.job(i, job);
                }
            }
            Some(jobs) => self.issue(jobs.key_position, "scrape_configs", "there is no job: sluice needs a source"),
            None => self.issue(Position::START, "scrape_configs", "there is none: sluice needs a source"),
        }
    }

    fn finish(&mut self) -> Draft {
        let mut agent = Node::map(Position::START);
        if let Some(server) = self.server.take() {
            agent.push("server", server);
        }
        if let Some(data_dir) = self.data_dir.take() {
            agent.push("data_dir", data_dir);
        }
        if !self.pipelines.is_empty() {
            agent.push("pipelines_dir", scalar(super::PIPELINES_DIR, Position::START));
        }
        let mut sources = Node::map(Position::START);
        for (name, source) in self.sources.drain(..) {
            sources.push(name, source);
        }
        agent.push("sources", sources);
        let mut sinks = Node::map(Position::START);
        for (name, mut sink) in self.sinks.drain(..) {
            if let Some(size) = &self.max_line_size {
                sink.push("max_line_size", size.clone());
                // Promtail drops longer lines unless told to truncate them.
                let truncate = self
                    .max_line_size_truncate
                    .clone()
                    .unwrap_or_else(|| Node::new(Value::Plain("false".into()), size.position));
                sink.push("max_line_size_truncate", truncate);
            }
            sinks.push(name, sink);
        }
        agent.push("sinks", sinks);
        Draft { agent, pipelines: std::mem::take(&mut self.pipelines) }
    }

    // ----- server, positions, limits ---------------------------------------------------------

    fn server(&mut self, entry: Option<&Entry>) {
        let at = entry.map_or(Position::START, |e| e.key_position);
        let mut out = Node::map(at).with_what("server");
        let mut address = None;
        let mut port = None;
        let mut notes = Vec::new();
        let mut shutdown = None;
        for e in entry.map(|e| e.value.entries()).unwrap_or_default() {
            let key = e.key.as_str();
            match key {
                "http_listen_address" => address = Some(e),
                "http_listen_port" => port = Some(e),
                "grpc_listen_address"
                | "grpc_listen_port"
                | "grpc_server_max_recv_msg_size"
                | "grpc_server_max_send_msg_size"
                | "grpc_server_max_concurrent_streams" => {
                    let note = "Promtail's gRPC settings are left out: sluice serves no gRPC.";
                    if !notes.contains(&note) {
                        notes.push(note);
                    }
                }
                "graceful_shutdown_timeout" => shutdown = Some(e),
                "enable_runtime_reload" => {
                    notes.push("sluice always reloads: on changes of its files, on SIGHUP and on POST /-/reload.")
                }
                "register_instrumentation" | "disable" | "profiling_enabled"
                    if (key == "register_instrumentation" && is_true(&e.value))
                        || (key != "register_instrumentation" && is_false_or_null(&e.value)) => {}
                // Promtail's default and sluice's.
                "log_level" if text(&e.value) == Some("info") => {}
                "log_level" => self.issue(e.key_position, "server.log_level", "set it with sluice's --log.level flag"),
                "log_format" => {
                    self.issue(e.key_position, "server.log_format", "set it with sluice's --log.format flag")
                }
                other => {
                    self.issue(e.key_position, format!("server.{other}"), "sluice's HTTP server has no such setting")
                }
            }
        }
        let host = address.and_then(|a| text(&a.value)).unwrap_or("").trim().to_string();
        let host = if host.is_empty() { "0.0.0.0".to_string() } else { host };
        let host = if host.contains(':') && !host.starts_with('[') { format!("[{host}]") } else { host };
        let port_text = port.and_then(|p| text(&p.value)).unwrap_or("9080").to_string();
        let position = port.or(address).map_or(at, |e| e.value.position);
        let mut listen = scalar(format!("{host}:{port_text}"), position);
        if address.is_none() {
            listen = listen.with_comment("Promtail listened on every interface when no address was set.");
        }
        out.push_at("http_listen_address", position, listen);
        if let Some(e) = shutdown {
            out.push_at("shutdown_timeout", e.key_position, e.value.clone());
        }
        if !notes.is_empty() {
            out.comment = Some(notes.join("\n"));
        }
        self.server = Some(out);
    }

    fn positions(&mut self, entry: &Entry) {
        for e in entry.value.entries() {
            match e.key.as_str() {
                "filename" => {
                    let Some(file) = text(&e.value) else { continue };
                    let dir = Path::new(file).parent().map(|p| p.display().to_string()).unwrap_or_default();
                    let dir = if dir.is_empty() { ".".to_string() } else { dir };
                    let comment = format!(
                        "Promtail kept its positions in {file}.\n\
                         They are not migrated: sluice keeps its own here, so on its first start it reads\n\
                         files and containers from their beginning (set `start_at: end` on a source to\n\
                         skip what Promtail already sent)."
                    );
                    self.data_dir =
                        Some(scalar(dir, e.value.position).with_comment(comment).with_what("positions.filename"));
                }
                "sync_period" => self.sync_period = Some(e.value.clone()),
                // sluice's positions are its own files: there is no Promtail file to be lenient with.
                "ignore_invalid_yaml" => {}
                other => self.issue(e.key_position, format!("positions.{other}"), "sluice has no such setting"),
            }
        }
    }

    fn target_config(&mut self, entry: &Entry) {
        for e in entry.value.entries() {
            match e.key.as_str() {
                "sync_period" => self.scan_interval = Some(e.value.clone()),
                other => self.issue(e.key_position, format!("target_config.{other}"), "sluice has no such setting"),
            }
        }
    }

    fn limits_config(&mut self, entry: &Entry) {
        let rate_enabled = entry.value.get("readline_rate_enabled").is_some_and(|e| is_true(&e.value));
        for e in entry.value.entries() {
            match e.key.as_str() {
                "max_line_size" => self.max_line_size = Some(e.value.clone()),
                "max_line_size_truncate" => self.max_line_size_truncate = Some(e.value.clone()),
                "readline_rate_enabled" | "readline_rate" | "readline_burst" | "readline_rate_drop" => {
                    if rate_enabled {
                        self.issue(
                            e.key_position,
                            format!("limits_config.{}", e.key),
                            "sluice has no agent-wide rate limit; a `limit` stage limits a pipeline",
                        );
                    }
                }
                "max_streams" if text(&e.value) == Some("0") => {}
                other => self.issue(e.key_position, format!("limits_config.{other}"), "sluice has no such setting"),
            }
        }
    }

    // ----- clients -----------------------------------------------------------------------------

    fn client(&mut self, client: &Node, what: &str, name: String) {
        let Some(url) = client.get("url") else {
            self.issue(client.position, what, "a client needs a `url`");
            return;
        };
        let mut sink = Node::map(client.position).with_what(what);
        sink.push_at("type", url.key_position, scalar("loki", url.key_position));
        let mut max_retries_set = false;
        for e in client.entries() {
            let field = format!("{what}.{}", e.key);
            match e.key.as_str() {
                "url" | "tenant_id" | "timeout" | "external_labels" | "headers" | "bearer_token"
                | "bearer_token_file" => sink.push_at(e.key.clone(), e.key_position, e.value.clone()),
                "batchwait" => sink.push_at("batch_wait", e.key_position, e.value.clone()),
                "batchsize" => sink.push_at("batch_size", e.key_position, e.value.clone()),
                "backoff_config" => {
                    let mut backoff = Node::map(e.value.position);
                    for b in e.value.entries() {
                        // Promtail 1.x spelled them minbackoff, maxbackoff and maxretries.
                        match b.key.as_str() {
                            "min_period" | "minbackoff" => {
                                backoff.push_at("min_period", b.key_position, b.value.clone())
                            }
                            "max_period" | "maxbackoff" => {
                                backoff.push_at("max_period", b.key_position, b.value.clone())
                            }
                            "max_retries" | "maxretries" => {
                                max_retries_set = true;
                                if text(&b.value) == Some("0") {
                                    // Promtail's 0 retries for ever, as sluice does without a limit.
                                    continue;
                                }
                                backoff.push_at("max_retries", b.key_position, b.value.clone());
                            }
                            other => {
                                self.issue(b.key_position, format!("{field}.{other}"), "sluice has no such setting")
                            }
                        }
                    }
                    if !backoff.is_empty() {
                        sink.push_at("backoff", e.key_position, backoff);
                    }
                }
                "basic_auth" => {
                    if e.value.get("username").is_none() {
                        self.issue(e.key_position, field, "sluice's basic_auth needs a `username`");
                        continue;
                    }
                    let mut auth = Node::map(e.value.position);
                    for b in e.value.entries() {
                        match b.key.as_str() {
                            "username" | "password" | "password_file" => {
                                auth.push_at(b.key.clone(), b.key_position, b.value.clone())
                            }
                            other => {
                                self.issue(b.key_position, format!("{field}.{other}"), "sluice has no such setting")
                            }
                        }
                    }
                    sink.push_at("basic_auth", e.key_position, auth);
                }
                "authorization" => {
                    let kind = e.value.get("type").and_then(|t| text(&t.value)).unwrap_or("Bearer");
                    if !kind.eq_ignore_ascii_case("bearer") {
                        self.issue(
                            e.key_position,
                            field,
                            format!("sluice sends bearer tokens and basic auth only, not `{kind}`"),
                        );
                        continue;
                    }
                    for b in e.value.entries() {
                        match b.key.as_str() {
                            "type" => {}
                            "credentials" => sink.push_at("bearer_token", b.key_position, b.value.clone()),
                            "credentials_file" => sink.push_at("bearer_token_file", b.key_position, b.value.clone()),
                            other => {
                                self.issue(b.key_position, format!("{field}.{other}"), "sluice has no such setting")
                            }
                        }
                    }
                }
                "tls_config" => {
                    let mut tls = Node::map(e.value.position);
                    for t in e.value.entries() {
                        match t.key.as_str() {
                            "ca_file" | "cert_file" | "key_file" | "server_name" | "insecure_skip_verify" => {
                                tls.push_at(t.key.clone(), t.key_position, t.value.clone())
                            }
                            "ca" | "cert" | "key" => self.issue(
                                t.key_position,
                                format!("{field}.{}", t.key),
                                format!(
                                    "sluice reads certificates from files: write it to a file and set `{}_file`",
                                    t.key
                                ),
                            ),
                            other => {
                                self.issue(t.key_position, format!("{field}.{other}"), "sluice has no such TLS setting")
                            }
                        }
                    }
                    if !tls.is_empty() {
                        sink.push_at("tls", e.key_position, tls);
                    }
                }
                "drop_rate_limited_batches" if is_false_or_null(&e.value) => {}
                "drop_rate_limited_batches" => self.issue(
                    e.key_position,
                    field,
                    "sluice retries batches Loki answers 429 to, with backoff, until they are delivered",
                ),
                _ => self.issue(e.key_position, field, "sluice's loki sink has no such setting"),
            }
        }
        if !max_retries_set {
            sink.comment = Some(
                "Promtail gave up on a batch after 10 retries by default; sluice retries until it is\n\
                 delivered unless backoff.max_retries is set."
                    .into(),
            );
        }
        self.sinks.push((name, sink));
    }

    // ----- scrape_configs ----------------------------------------------------------------------

    fn unique_name(&self, base: &str) -> String {
        let taken = |n: &str| self.sources.iter().any(|(s, _)| s == n);
        if !taken(base) {
            return base.to_string();
        }
        (2..).map(|i| format!("{base}_{i}")).find(|n| !taken(n)).unwrap_or_else(|| base.to_string())
    }

    fn job(&mut self, index: usize, job: &Node) {
        let Some(name) = job.get("job_name").and_then(|e| text(&e.value)).map(str::to_string) else {
            self.issue(job.position, format!("scrape_configs[{index}]"), "a job needs a `job_name`");
            return;
        };
        let label = format!("job `{name}`");
        let base = sanitize(&name);
        let stages = job.get("pipeline_stages").map(|e| e.value.items()).unwrap_or_default();
        let relabel = job.get("relabel_configs").map(|e| e.value.items()).unwrap_or_default();
        // A leading `docker` or `cri` stage unwraps what the files source can unwrap itself.
        let lead =
            stages.first().and_then(|s| s.entries().first()).filter(|e| matches!(e.key.as_str(), "docker" | "cri"));
        let format = lead.map_or("raw", |e| e.key.as_str());
        let mut job_sources = Vec::new();
        let mut files_sources = false;
        let mut docker_sources = false;
        for e in job.entries() {
            let key = e.key.as_str();
            match key {
                "job_name" | "pipeline_stages" | "relabel_configs" => {}
                "docker_sd_configs" => {
                    let rules = self.docker_rules(&label, relabel);
                    for sd in e.value.items() {
                        let source_name = self.unique_name(&base);
                        if let Some(source) = self.docker_source(&label, sd, &rules) {
                            self.sources.push((source_name.clone(), source));
                            job_sources.push(source_name);
                            docker_sources = true;
                        }
                    }
                }
                "static_configs" => {
                    let rules = self.compile_rules(&label, relabel);
                    for sc in e.value.items() {
                        if let Some(source) = self.static_source(&label, sc, &rules, format) {
                            let source_name = self.unique_name(&base);
                            self.sources.push((source_name.clone(), source));
                            job_sources.push(source_name);
                            files_sources = true;
                        }
                    }
                }
                "kubernetes_sd_configs" => {
                    let pods =
                        e.value.items().iter().any(|sd| sd.get("role").and_then(|r| text(&r.value)) == Some("pod"));
                    let rules = if pods {
                        self.kubernetes_rules(&label, job.position, relabel)
                    } else {
                        KubernetesRules::default()
                    };
                    for sd in e.value.items() {
                        if let Some(source) = self.kubernetes_source(&label, sd, &rules, format) {
                            let source_name = self.unique_name(&base);
                            self.sources.push((source_name.clone(), source));
                            job_sources.push(source_name);
                            files_sources = true;
                        }
                    }
                }
                "decompression" if e.value.get("enabled").is_none_or(|v| is_false_or_null(&v.value)) => {}
                "decompression" => {
                    self.issue(e.key_position, format!("{label}: decompression"), "sluice reads no compressed files")
                }
                "encoding" => self.issue(e.key_position, format!("{label}: encoding"), "sluice reads files as UTF-8"),
                "journal" => self.issue(e.key_position, label.clone(), "sluice has no journal source"),
                "syslog" => self.issue(e.key_position, label.clone(), "sluice has no syslog source"),
                "loki_push_api" => self.issue(e.key_position, label.clone(), "sluice has no Loki push API source"),
                "windows_events" => self.issue(e.key_position, label.clone(), "sluice has no Windows event log source"),
                "gcplog" | "azure_event_hub" | "kafka" | "gelf" | "cloudflare" | "heroku_drain" => {
                    self.issue(e.key_position, label.clone(), format!("sluice has no {key} source"))
                }
                "file_sd_configs" => self.issue(
                    e.key_position,
                    format!("{label}: file_sd_configs"),
                    "sluice reads no target files: list the paths in a files source's `include`",
                ),
                "consul_sd_configs" | "consulagent_sd_configs" => {
                    self.issue(e.key_position, format!("{label}: {key}"), "sluice has no Consul discovery")
                }
                other => self.issue(
                    e.key_position,
                    format!("{label}: `{other}`"),
                    "not a scrape_config setting sluice knows",
                ),
            }
        }
        if job_sources.is_empty() {
            return;
        }
        // The leading unwrap stage is done by the source: files read with `format`, Docker lines
        // arriving unwrapped from the engine.
        let consumed = match lead.map(|e| e.key.as_str()) {
            Some("docker") => files_sources || docker_sources,
            Some("cri") => files_sources,
            _ => false,
        };
        if let Some(lead) = lead.filter(|_| consumed) {
            for e in lead.value.entries() {
                self.issue(
                    e.key_position,
                    format!("{label}: `{}` of stage `{}`", e.key, lead.key),
                    "the files source joins partial CRI lines itself",
                );
            }
        }
        let kept = if consumed { &stages[1..] } else { stages };
        let kept = self.stages(&label, kept);
        if kept.is_empty() {
            return;
        }
        let stages_at = job.get("pipeline_stages").map_or(job.position, |e| e.key_position);
        let mut root = Node::map(job.position);
        let mut selection = Node::map(job.position);
        selection.push(
            "sources",
            Node::seq(job_sources.iter().map(|s| scalar(s.clone(), job.position)).collect(), job.position),
        );
        root.push("match", selection);
        let mut stages_node = Node::seq(kept, stages_at);
        if consumed {
            stages_node.comment = Some(match lead.map(|e| e.key.as_str()) {
                Some("docker") if !files_sources => {
                    "Promtail's leading `docker` stage is left out: the docker source reads lines unwrapped."
                        .to_string()
                }
                Some(stage) => format!("Promtail's leading `{stage}` stage is done by the source (`format: {stage}`)."),
                None => String::new(),
            });
        }
        root.push_at("stages", stages_at, stages_node);
        let file_name = format!("{}.yaml", job_sources[0]);
        self.pipelines.push(PipelineDraft {
            file_name,
            origin: format!("Pipeline of Promtail {label} ({}:{})", self.input.display(), job.position.line),
            root,
        });
    }

    /// Applies the settings that every source of its kind takes.
    fn common(&self, source: &mut Node, files: bool) {
        if files && let Some(s) = &self.scan_interval {
            source.push("scan_interval", s.clone());
        }
        if let Some(s) = &self.sync_period {
            source.push("sync_period", s.clone());
        }
    }

    // ----- docker -----------------------------------------------------------------------------

    /// The job's relabel rules that a docker source can apply: those reading only the metadata
    /// sluice exposes.
    fn docker_rules(&mut self, label: &str, rules: &[Node]) -> Vec<Node> {
        let mut kept = Vec::new();
        for rule in rules {
            let mut names: Vec<String> = rule
                .get("source_labels")
                .map(|e| strings(&e.value).into_iter().map(|(s, _)| s).collect())
                .unwrap_or_default();
            if let Some(regex) = rule.get("regex").and_then(|e| text(&e.value)) {
                names.push(regex.to_string());
            }
            let missing = names.iter().find_map(|n| {
                if n.contains("__meta_docker_container_log_stream") {
                    Some("sluice adds the `stream` label after relabeling: select on it in a pipeline's `match`")
                } else if n.contains("__meta_docker_network_") || n.contains("__meta_docker_port_") {
                    Some("the docker source exposes no __meta_docker_network_* or __meta_docker_port_* labels")
                } else {
                    None
                }
            });
            match missing {
                Some(why) => self.issue(rule.position, format!("{label}: relabel rule{}", rule_target(rule)), why),
                None => kept.push(rule.clone().with_what(format!("{label}: relabel rule{}", rule_target(rule)))),
            }
        }
        kept
    }

    fn docker_source(&mut self, label: &str, sd: &Node, rules: &[Node]) -> Option<Node> {
        let mut source = Node::map(sd.position).with_what(format!("{label}: docker_sd_configs entry"));
        source.push("type", scalar("docker", sd.position));
        for e in sd.entries() {
            let key = e.key.as_str();
            match key {
                "host" | "refresh_interval" => source.push_at(key, e.key_position, e.value.clone()),
                "filters" => {
                    if let Some(filters) = self.docker_filters(label, &e.value) {
                        source.push_at("filters", e.key_position, filters);
                    }
                }
                // Ports and networks address metrics targets; they mean nothing to logs.
                "port" | "host_networking_host" | "match_first_network" => {}
                other => self.issue(
                    e.key_position,
                    format!("{label}: docker_sd_configs `{other}`"),
                    "the docker source reaches the engine through a local socket or plain TCP only",
                ),
            }
        }
        if !rules.is_empty() {
            let at = rules[0].position;
            source.push_at("relabel_configs", at, Node::seq(rules.to_vec(), at));
        }
        self.common(&mut source, false);
        source.comment = Some(
            "sluice also labels a container's entries with container_name, compose_project,\n\
             compose_service, image and job (the source's name) unless relabel_configs set them."
                .into(),
        );
        Some(source)
    }

    fn docker_filters(&mut self, label: &str, filters: &Node) -> Option<Node> {
        let mut labels = Vec::new();
        let mut names = Vec::new();
        let mut first = None;
        for f in filters.items() {
            let Some(name) = f.get("name").and_then(|e| text(&e.value)) else {
                self.issue(f.position, format!("{label}: docker filter"), "a filter needs a `name`");
                continue;
            };
            let values = f.get("values").map(|e| strings(&e.value)).unwrap_or_default();
            first.get_or_insert(f.position);
            match name {
                "label" => labels.extend(values.into_iter().map(|(v, p)| scalar(v, p))),
                "name" => {
                    for (v, p) in values {
                        if v.contains(['^', '$', '/']) {
                            self.issue(
                                p,
                                format!("{label}: docker filter name `{v}`"),
                                "Docker matches it against `/name` without anchors; write the source's `filters.name` regex by hand",
                            );
                        } else {
                            names.push(v);
                        }
                    }
                }
                other => self.issue(
                    f.position,
                    format!("{label}: docker filter `{other}`"),
                    "the docker source filters containers by label and by name only",
                ),
            }
        }
        let at = first?;
        let mut out = Node::map(at);
        if !labels.is_empty() {
            out.push("labels", Node::seq(labels, at));
        }
        if !names.is_empty() {
            // Docker's name filter matches anywhere in the name; sluice's regex is anchored.
            out.push("name", scalar(format!(".*(?:{}).*", names.join("|")), at));
        }
        (!out.is_empty()).then_some(out)
    }

    // ----- static files -----------------------------------------------------------------------

    /// Compiles the job's relabel rules, to apply them to static labels now.
    fn compile_rules(&mut self, label: &str, rules: &[Node]) -> Vec<Rule> {
        let mut compiled = Vec::new();
        for rule in rules {
            let what = format!("{label}: relabel rule{}", rule_target(rule));
            if rule.mentions_env() {
                self.issue(
                    rule.position,
                    what,
                    "it reads the environment, and a files source's labels are worked out from static labels now",
                );
                continue;
            }
            match typed::<RelabelConfig>(rule).and_then(|c| Rule::compile(&c)) {
                Ok(r) => compiled.push(r),
                Err(e) => self.issue(rule.position, what, format!("sluice refuses it: {e}")),
            }
        }
        compiled
    }

    fn static_source(&mut self, label: &str, sc: &Node, rules: &[Rule], format: &str) -> Option<Node> {
        let mut labels: Vec<(String, String)> = Vec::new();
        let mut places: BTreeMap<String, Position> = BTreeMap::new();
        let target = sc.get("targets").and_then(|e| strings(&e.value).into_iter().next()).map(|(t, _)| t);
        labels.push(("__address__".into(), target.unwrap_or_else(|| "localhost".into())));
        for e in sc.get("labels").map(|e| e.value.entries()).unwrap_or_default() {
            if let Some(value) = text(&e.value) {
                labels.retain(|(n, _)| *n != e.key);
                labels.push((e.key.clone(), value.to_string()));
                places.insert(e.key.clone(), e.value.position);
            }
        }
        for e in sc.entries() {
            if !matches!(e.key.as_str(), "targets" | "labels") {
                self.issue(
                    e.key_position,
                    format!("{label}: static_configs `{}`", e.key),
                    "not a static_config setting",
                );
            }
        }
        let mut relabeled = labels;
        for rule in rules {
            if !rule.apply(&mut relabeled) {
                // Promtail dropped this target: it read nothing for it.
                return None;
            }
        }
        let get = |name: &str| relabeled.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
        let place = |name: &str| places.get(name).copied().unwrap_or(sc.position);
        let Some(path) = get("__path__") else {
            self.issue(
                sc.position,
                format!("{label}: static_configs entry"),
                "it has no `__path__`: Promtail read no file for it",
            );
            return None;
        };
        let mut source = Node::map(sc.position).with_what(format!("{label}: static_configs entry"));
        source.push("type", scalar("files", sc.position));
        let include = self.globs(label, &path, place("__path__"))?;
        source.push_at("include", place("__path__"), include);
        if let Some(exclude) = get("__path_exclude__")
            && let Some(exclude) = self.globs(label, &exclude, place("__path_exclude__"))
        {
            source.push_at("exclude", place("__path_exclude__"), exclude);
        }
        source.push("format", scalar(format, sc.position));
        let mut out_labels = Node::map(sc.position);
        for (name, value) in relabeled.iter().filter(|(n, _)| !n.starts_with("__")) {
            if is_valid_name(name) {
                out_labels.push_at(name.clone(), place(name), scalar(value.clone(), place(name)));
            } else {
                self.issue(place(name), format!("{label}: label `{name}`"), "not a valid label name");
            }
        }
        if !out_labels.is_empty() {
            source.push("labels", out_labels);
        }
        self.common(&mut source, true);
        Some(source)
    }

    /// A `__path__` glob as sluice globs: Promtail's `{a,b}` alternatives are expanded.
    fn globs(&mut self, label: &str, glob: &str, at: Position) -> Option<Node> {
        match expand_braces(glob) {
            Ok(globs) => Some(Node::seq(globs.into_iter().map(|g| scalar(g, at)).collect(), at)),
            Err(why) => {
                self.issue(at, format!("{label}: path `{glob}`"), why);
                None
            }
        }
    }

    // ----- kubernetes ------------------------------------------------------------------------

    /// The job's relabel rules sorted for a files source on Kubernetes: those on pod labels are
    /// kept; those giving namespace, pod, container and node are covered by the path and
    /// `kubernetes.node`; the `__path__` rule is the source's include; the rest is reported.
    fn kubernetes_rules(&mut self, label: &str, job_at: Position, rules: &[Node]) -> KubernetesRules {
        let mut out = KubernetesRules::default();
        // Labels set by rules that were not carried over: rules reading them cannot be either.
        let mut unavailable: BTreeSet<String> = BTreeSet::new();
        for rule in rules {
            let what = format!("{label}: relabel rule{}", rule_target(rule));
            match classify(rule, &unavailable) {
                KubernetesRule::Carry { pod_labels } => {
                    out.api |= pod_labels;
                    out.carried.push(rule.clone().with_what(what));
                }
                KubernetesRule::Path(replacement) => {
                    out.path = true;
                    if !replacement.contains("/var/log/pods/") {
                        self.issue(
                            rule.position,
                            what,
                            format!("sluice reads pod logs from {POD_LOGS}, not `{replacement}`"),
                        );
                    }
                }
                KubernetesRule::Covered(target) => {
                    unavailable.insert(target);
                }
                KubernetesRule::Unsupported(why) => {
                    if let Some(t) = rule.get("target_label").and_then(|e| text(&e.value)) {
                        unavailable.insert(t.to_string());
                    }
                    self.issue(rule.position, what, why);
                }
            }
        }
        if !out.path {
            self.issue(
                job_at,
                label.to_string(),
                "no relabel rule sets `__path__`, so Promtail read no file for these pods",
            );
        }
        out
    }

    fn kubernetes_source(&mut self, label: &str, sd: &Node, rules: &KubernetesRules, format: &str) -> Option<Node> {
        let role = sd.get("role").and_then(|e| text(&e.value)).unwrap_or("");
        if role != "pod" {
            self.issue(
                sd.position,
                format!("{label}: kubernetes_sd_configs role `{role}`"),
                "sluice reads the logs of pods (role `pod`) from their files",
            );
            return None;
        }
        if !rules.path {
            return None;
        }
        let mut node = None;
        let mut include = Vec::new();
        for e in sd.entries() {
            let key = e.key.as_str();
            match key {
                "role" => {}
                "namespaces" => {
                    for n in e.value.entries() {
                        match n.key.as_str() {
                            "names" => {
                                for (ns, at) in strings(&n.value) {
                                    include.push(scalar(format!("/var/log/pods/{ns}_*/*/*.log"), at));
                                }
                            }
                            "own_namespace" if is_false_or_null(&n.value) => {}
                            other => self.issue(
                                n.key_position,
                                format!("{label}: namespaces.{other}"),
                                "list the namespaces under `names`",
                            ),
                        }
                    }
                }
                "selectors" => {
                    for s in e.value.items() {
                        for f in s.entries() {
                            match f.key.as_str() {
                                "role" => {}
                                "field" => match text(&f.value).and_then(|t| t.strip_prefix("spec.nodeName=")) {
                                    Some(name) if !name.contains(',') => node = Some(scalar(name, f.value.position)),
                                    _ => self.issue(
                                        f.key_position,
                                        format!("{label}: field selector `{}`", text(&f.value).unwrap_or("")),
                                        "sluice follows the pods of its own node only, all of them",
                                    ),
                                },
                                _ => self.issue(
                                    f.key_position,
                                    format!("{label}: {} selector `{}`", f.key, text(&f.value).unwrap_or("")),
                                    "sluice follows every pod of its node; keep or drop pods with relabel rules on pod labels",
                                ),
                            }
                        }
                    }
                }
                other => self.issue(
                    e.key_position,
                    format!("{label}: kubernetes_sd_configs `{other}`"),
                    "the files source reads pod metadata from the file path (and pod labels with its in-cluster credentials)",
                ),
            }
        }
        if include.is_empty() {
            include.push(scalar(POD_LOGS, sd.position));
        }
        let mut source = Node::map(sd.position).with_what(format!("{label}: kubernetes_sd_configs entry"));
        source.push("type", scalar("files", sd.position));
        source.push("include", Node::seq(include, sd.position));
        source.push("format", scalar(format, sd.position));
        let mut kubernetes = Node::map(sd.position);
        let node = node.unwrap_or_else(|| scalar("${NODE_NAME}", sd.position));
        kubernetes.push("node", node);
        if rules.api {
            kubernetes.push("api", Node::new(Value::Plain("true".into()), sd.position));
        }
        if !rules.carried.is_empty() {
            let at = rules.carried[0].position;
            kubernetes.push_at("relabel_configs", at, Node::seq(rules.carried.clone(), at));
        }
        source.push("kubernetes", kubernetes);
        self.common(&mut source, true);
        source.comment = Some(
            "namespace, pod and container come from each file's path, node from kubernetes.node;\n\
             job is the source's name unless labels set it."
                .into(),
        );
        Some(source)
    }

    // ----- pipeline stages --------------------------------------------------------------------

    /// The stages sluice has, as they are; the others are reported.
    fn stages(&mut self, label: &str, stages: &[Node]) -> Vec<Node> {
        let mut out = Vec::new();
        for stage in stages {
            let [entry] = stage.entries() else {
                self.issue(
                    stage.position,
                    format!("{label}: stage"),
                    "a stage is a mapping with one key, such as `- json: {...}`",
                );
                continue;
            };
            let name = entry.key.as_str();
            let what = format!("{label}: stage `{name}`");
            if !SLUICE_STAGES.contains(&name) {
                let why = match name {
                    "tenant" => "sluice has no `tenant` stage: the loki sink's `tenant_label` sends each entry to the tenant a label names".to_string(),
                    _ => format!("sluice has no `{name}` stage"),
                };
                self.issue(entry.key_position, what, why);
                continue;
            }
            let mut stage = stage.clone().with_what(what);
            if let Some(body) = stage.at_mut(&[super::yaml::Step::Key(name.to_string())]) {
                match name {
                    "match" => {
                        let nested = body.get("stages").map(|e| e.value.items().to_vec()).unwrap_or_default();
                        if body.get("stages").is_some() {
                            let kept = self.stages(label, &nested);
                            if let Some(s) = body.at_mut(&[super::yaml::Step::Key("stages".into())]) {
                                s.value = Value::Seq(kept);
                            }
                        }
                    }
                    "metrics" => keep_metric_names(body),
                    _ => {}
                }
            }
            out.push(stage);
        }
        out
    }
}

/// Gives each metric Promtail's default prefix, so that dashboards and alerts keep working.
fn keep_metric_names(metrics: &mut Node) {
    let mut added = false;
    if let Value::Map(entries) = &mut metrics.value {
        for e in entries {
            if matches!(e.value.value, Value::Map(_)) && e.value.get("prefix").is_none() {
                let at = e.value.position;
                e.value.push("prefix", scalar("promtail_custom_", at));
                added = true;
            }
        }
    }
    if added {
        metrics.comment =
            Some("prefix: promtail_custom_ keeps Promtail's metric names (sluice's default is sluice_custom_).".into());
    }
}

/// ` (target `x`)` or ` (action `keep`)`, to name a relabel rule in an issue.
fn rule_target(rule: &Node) -> String {
    let action = rule.get("action").and_then(|e| text(&e.value)).unwrap_or("replace");
    match rule.get("target_label").and_then(|e| text(&e.value)) {
        Some(t) if matches!(action, "replace" | "lowercase" | "uppercase" | "hashmod") => format!(" setting `{t}`"),
        _ => format!(" (action `{action}`)"),
    }
}

#[derive(Debug, Default)]
struct KubernetesRules {
    carried: Vec<Node>,
    /// Carried rules read pod labels: the source must read them from the API.
    api: bool,
    /// A rule sets `__path__`.
    path: bool,
}

#[derive(Debug, PartialEq)]
enum KubernetesRule {
    Carry { pod_labels: bool },
    Path(String),
    Covered(String),
    Unsupported(String),
}

const POD_LABEL: &str = "__meta_kubernetes_pod_label_";

fn classify(rule: &Node, unavailable: &BTreeSet<String>) -> KubernetesRule {
    let get = |k: &str| rule.get(k).and_then(|e| text(&e.value));
    let action = get("action").unwrap_or("replace").to_ascii_lowercase();
    let sources: Vec<String> =
        rule.get("source_labels").map(|e| strings(&e.value).into_iter().map(|(s, _)| s).collect()).unwrap_or_default();
    let target = get("target_label");
    let regex = get("regex");
    if target == Some("__path__") && action == "replace" {
        return KubernetesRule::Path(get("replacement").unwrap_or("$1").to_string());
    }
    match action.as_str() {
        "labelmap" => {
            return match regex {
                Some(r) if r.starts_with(POD_LABEL) => KubernetesRule::Carry { pod_labels: true },
                _ => KubernetesRule::Unsupported(format!(
                    "sluice's files source offers only {POD_LABEL}* to relabeling, not what `{}` maps",
                    regex.unwrap_or("(.*)")
                )),
            };
        }
        "labeldrop" => return KubernetesRule::Carry { pod_labels: false },
        "labelkeep" => {
            return KubernetesRule::Unsupported(
                "sluice adds namespace, pod, container and node after relabeling; a labelkeep rule would keep other labels than in Promtail".into(),
            );
        }
        _ => {}
    }
    if let Some(s) = sources.iter().find(|s| unavailable.contains(*s)) {
        return KubernetesRule::Unsupported(format!(
            "it reads `{s}`, which sluice sets from the file path or which a rule left out set"
        ));
    }
    let meta: Vec<&String> = sources.iter().filter(|s| s.starts_with("__meta_")).collect();
    if meta.iter().all(|s| s.starts_with(POD_LABEL)) {
        return KubernetesRule::Carry { pod_labels: !meta.is_empty() };
    }
    let default_regex = regex.is_none_or(|r| r == "(.*)");
    let default_replacement = get("replacement").is_none_or(|r| r == "$1" || r == "${1}");
    if action == "replace" && sources.len() == 1 && default_regex && default_replacement {
        let covered = matches!(
            (sources[0].as_str(), target.unwrap_or("")),
            ("__meta_kubernetes_namespace", "namespace")
                | ("__meta_kubernetes_pod_name", "pod")
                | ("__meta_kubernetes_pod_container_name", "container")
                | ("__meta_kubernetes_pod_node_name", "node" | "__host__")
        );
        if covered {
            return KubernetesRule::Covered(target.unwrap_or("").to_string());
        }
    }
    let first = meta.iter().find(|s| !s.starts_with(POD_LABEL)).map_or("", |s| s.as_str());
    let why = match first {
        "__meta_kubernetes_namespace" | "__meta_kubernetes_pod_name" | "__meta_kubernetes_pod_container_name" => {
            format!(
                "sluice sets namespace, pod and container from the file path, under these names only; `{first}` is not offered to relabeling"
            )
        }
        "__meta_kubernetes_pod_node_name" => "sluice labels the node `node`, from kubernetes.node".to_string(),
        _ => format!("sluice's files source offers only {POD_LABEL}* to relabeling, not `{first}`"),
    };
    KubernetesRule::Unsupported(why)
}

/// Deserializes a node into a sluice config type, through its YAML text.
fn typed<T: for<'de> Deserialize<'de>>(node: &Node) -> Result<T, String> {
    #[derive(Deserialize)]
    struct Wrap<T> {
        v: T,
    }
    let mut root = Node::map(Position::START);
    root.push("v", node.clone());
    let text = super::yaml::emit(&root, &[]).text;
    let expanded = crate::config::env::expand(&text, |_| Some("x".into())).map_err(|e| e.message)?;
    crate::config::parse_yaml_expanded::<Wrap<T>>(Path::new("rule"), &expanded).map(|w| w.v).map_err(|e| e.message)
}

/// Expands Promtail's (doublestar's) `{a,b}` alternatives, nested or not, into plain globs.
pub fn expand_braces(glob: &str) -> Result<Vec<String>, String> {
    const MAX: usize = 256;
    let bytes = glob.as_bytes();
    let mut open = None;
    let mut depth = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 1,
            // `${VAR}` is an environment reference, not alternatives.
            b'$' if depth == 0 && bytes.get(i + 1) == Some(&b'{') => {
                i = glob[i..].find('}').map_or(bytes.len(), |end| i + end);
            }
            b'{' => {
                if depth == 0 {
                    open = Some(i);
                }
                depth += 1;
            }
            b'}' if depth > 0 => {
                depth -= 1;
                if depth == 0 {
                    let start = open.unwrap_or(0);
                    let (prefix, inner, suffix) = (&glob[..start], &glob[start + 1..i], &glob[i + 1..]);
                    let mut out = Vec::new();
                    for alternative in split_top_level(inner) {
                        for rest in expand_braces(&format!("{alternative}{suffix}"))? {
                            out.push(format!("{prefix}{rest}"));
                            if out.len() > MAX {
                                return Err(format!("its `{{...}}` alternatives give more than {MAX} globs"));
                            }
                        }
                    }
                    return Ok(out);
                }
            }
            _ => {}
        }
        i += 1;
    }
    if depth > 0 {
        return Err("a `{` has no closing `}`".into());
    }
    Ok(vec![glob.to_string()])
}

fn split_top_level(inner: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    let bytes = inner.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 1,
            b'{' => depth += 1,
            b'}' => depth = depth.saturating_sub(1),
            b',' if depth == 0 => {
                parts.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    parts.push(&inner[start.min(inner.len())..]);
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn braces_expand_in_order() {
        assert_eq!(expand_braces("/var/log/*.log").unwrap(), ["/var/log/*.log"]);
        assert_eq!(
            expand_braces("/var/log/{nginx,apache2}/{access,error}.log").unwrap(),
            [
                "/var/log/nginx/access.log",
                "/var/log/nginx/error.log",
                "/var/log/apache2/access.log",
                "/var/log/apache2/error.log"
            ]
        );
        assert_eq!(
            expand_braces("/a/{b,c{d,e}}/**/*.log").unwrap(),
            ["/a/b/**/*.log", "/a/cd/**/*.log", "/a/ce/**/*.log"]
        );
        assert_eq!(expand_braces(r"/a/\{b,c\}").unwrap(), [r"/a/\{b,c\}"]);
        assert!(expand_braces("/a/{b,c").is_err());
        assert_eq!(
            expand_braces("${LOGS:-/var/log}/{a,b}.log").unwrap(),
            ["${LOGS:-/var/log}/a.log", "${LOGS:-/var/log}/b.log"]
        );
    }

    #[test]
    fn job_names_become_file_names() {
        assert_eq!(sanitize("kubernetes-pods"), "kubernetes-pods");
        assert_eq!(sanitize("system/var logs"), "system_var_logs");
        assert_eq!(sanitize("../x"), "_x");
        assert_eq!(sanitize(""), "job");
    }
}
