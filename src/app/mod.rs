//! The application: load and validate config, build the topology, serve HTTP, and handle
//! signals and reloads until told to stop.
//!
//! Reloads come from the file watch ([`watch`]), SIGHUP and `POST /-/reload`. A reload loads and
//! validates every file first; if any is invalid nothing changes, the errors are logged as
//! `FILE:LINE:COL: message`, `sluice_config_last_reload_successful` is 0 and
//! `sluice_config_reload_failures_total` counts it. Otherwise the topology applies the
//! difference (see `Topology::reload`).

pub mod watch;

use crate::config::{self, AgentConfig, ConfigError, ConfigErrors, Position};
use crate::pipeline::{BuildContext, LoadedPipeline, PipelineSet, build_set};
use crate::telemetry::Telemetry;
use crate::telemetry::server::{ReloadRequest, ServerState, serve};
use crate::topology::Topology;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Everything read from disk for one load: the agent file and the pipeline files.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadedConfig {
    pub path: PathBuf,
    pub agent: AgentConfig,
    /// `data_dir`, resolved against the agent file's directory.
    pub data_dir: PathBuf,
    /// `pipelines_dir`, resolved likewise.
    pub pipelines_dir: Option<PathBuf>,
    pub pipelines: Vec<LoadedPipeline>,
}

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{0}")]
    Config(ConfigErrors),
    #[error("cannot listen on {address}: {source}")]
    Listen { address: String, source: std::io::Error },
    #[error("cannot create the data directory {path}: {source}")]
    DataDir { path: PathBuf, source: std::io::Error },
    #[error("{0}")]
    Build(#[from] crate::topology::BuildError),
}

fn resolve(base: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() { path.to_path_buf() } else { base.join(path) }
}

/// The pipeline files of a directory: `*.yaml` and `*.yml`, by name, hidden files left out (so
/// that editors' temporary files and a ConfigMap's `..data` entries are never read).
pub fn pipeline_files(dir: &Path) -> Result<Vec<PathBuf>, ConfigError> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| ConfigError::new(dir, Position::START, format!("cannot read the pipelines directory: {e}")))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            !name.starts_with('.') && (name.ends_with(".yaml") || name.ends_with(".yml")) && p.is_file()
        })
        .collect();
    files.sort();
    Ok(files)
}

/// Reads and parses one pipeline file.
pub fn load_pipeline(path: &Path) -> Result<LoadedPipeline, ConfigError> {
    let text = config::read_file(path)?;
    if text.trim().is_empty() {
        // Often a file caught half-written; it will load when complete.
        return Err(ConfigError::new(path, Position::START, "the pipeline file is empty"));
    }
    let file = config::parse_yaml(path, &text)?;
    Ok(LoadedPipeline { path: path.to_path_buf(), file })
}

/// Reads, parses and validates the agent file and every pipeline file, and builds the pipelines
/// (compiling every regex, selector and template), reporting every error it finds: a problem in
/// the agent file does not hide those of the pipeline files.
pub fn load_and_build(
    path: &Path,
    telemetry: &Telemetry,
    previous: Option<&PipelineSet>,
) -> Result<(LoadedConfig, PipelineSet), ConfigErrors> {
    let text = config::read_file(path)?;
    let agent: AgentConfig = config::parse_yaml(path, &text)?;
    let mut errors = ConfigErrors::default();
    if let Err(e) = agent.validate(path) {
        errors.extend(e);
    }
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let pipelines_dir = agent.pipelines_dir.as_ref().map(|d| resolve(&base, d));
    let mut pipelines = Vec::new();
    if let Some(dir) = &pipelines_dir {
        match pipeline_files(dir) {
            Ok(files) => {
                for file in files {
                    match load_pipeline(&file) {
                        Ok(p) => pipelines.push(p),
                        Err(e) => errors.push(e),
                    }
                }
            }
            Err(e) => errors.push(e),
        }
    }
    let set = match build_set(&pipelines, &BuildContext { metrics: &telemetry.metrics.pipeline, previous }) {
        Ok(set) => Some(set),
        Err(e) => {
            errors.extend(e);
            None
        }
    };
    let data_dir = resolve(&base, &agent.data_dir);
    let loaded = LoadedConfig { path: path.to_path_buf(), agent, data_dir, pipelines_dir, pipelines };
    errors.into_result(())?;
    Ok((loaded, set.unwrap_or_else(PipelineSet::empty)))
}

/// `sluice check`: everything `run` would refuse, without starting anything.
pub fn check(path: &Path) -> Result<LoadedConfig, ConfigErrors> {
    let telemetry = Telemetry::new();
    let (loaded, _) = load_and_build(path, &telemetry, None)?;
    Ok(loaded)
}

fn unix_now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// `sluice run`: runs until SIGTERM or SIGINT.
pub async fn run(path: &Path) -> Result<(), AppError> {
    let telemetry = Arc::new(Telemetry::new());
    let (loaded, pipelines) = load_and_build(path, &telemetry, None).map_err(AppError::Config)?;
    telemetry.metrics.config.last_reload_successful.set(1);
    telemetry.metrics.config.last_reload_success_timestamp_seconds.set(unix_now());
    std::fs::create_dir_all(&loaded.data_dir)
        .map_err(|source| AppError::DataDir { path: loaded.data_dir.clone(), source })?;
    let address = loaded.agent.server.http_listen_address.value.clone();
    let listener = tokio::net::TcpListener::bind(&address)
        .await
        .map_err(|source| AppError::Listen { address: address.clone(), source })?;
    // The address bound (the configured port may be 0: any free one).
    let bound = listener.local_addr().map(|a| a.to_string()).unwrap_or_else(|_| address.clone());
    let shutdown_timeout = loaded.agent.server.shutdown_timeout.0;
    let topology = Topology::start(&loaded.agent, loaded.data_dir.clone(), pipelines, Arc::clone(&telemetry)).await?;
    let (reload_tx, mut reload_rx) = mpsc::channel::<ReloadRequest>(4);
    let server_cancel = CancellationToken::new();
    let server = tokio::spawn(serve(
        listener,
        Arc::new(ServerState { telemetry: Arc::clone(&telemetry), reload: reload_tx }),
        server_cancel.clone(),
    ));
    tracing::info!(
        config = %path.display(),
        http = %bound,
        sources = loaded.agent.sources.len(),
        sinks = loaded.agent.sinks.len(),
        pipelines = loaded.pipelines.len(),
        "sluice started"
    );
    let (changes_tx, mut changes) = mpsc::channel::<()>(1);
    let watcher = tokio::spawn(watch::watch(
        watch::Watched { agent_file: path.to_path_buf(), pipelines_dir: loaded.pipelines_dir.clone() },
        changes_tx,
    ));
    let mut topology = topology;
    let mut reloader = Reloader { path: path.to_path_buf(), telemetry: Arc::clone(&telemetry), current: loaded };
    let mut sigterm = signal(tokio::signal::unix::SignalKind::terminate());
    let mut sighup = signal(tokio::signal::unix::SignalKind::hangup());
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = sigterm.recv() => break,
            _ = sighup.recv() => {
                tracing::info!(trigger = "SIGHUP", "reloading the config");
                let _ = reloader.reload(&mut topology).await;
            }
            Some(()) = changes.recv() => {
                tracing::info!(trigger = "file change", "reloading the config");
                let _ = reloader.reload(&mut topology).await;
            }
            Some(request) = reload_rx.recv() => {
                tracing::info!(trigger = "/-/reload", "reloading the config");
                let result = reloader.reload(&mut topology).await;
                let _ = request.send(result.map_err(|e| e.to_string()));
            }
        }
    }
    watcher.abort();
    tracing::info!(deadline_ms = shutdown_timeout.as_millis() as u64, "shutting down: delivering what is pending");
    topology.shutdown(shutdown_timeout).await;
    server_cancel.cancel();
    let _ = server.await;
    tracing::info!("sluice stopped");
    Ok(())
}

fn signal(kind: tokio::signal::unix::SignalKind) -> tokio::signal::unix::Signal {
    match tokio::signal::unix::signal(kind) {
        Ok(s) => s,
        // Only fails when the runtime has no signal driver, which `main` always enables.
        Err(e) => panic!("cannot install a signal handler: {e}"),
    }
}

/// Applies config changes to the running topology.
struct Reloader {
    path: PathBuf,
    telemetry: Arc<Telemetry>,
    current: LoadedConfig,
}

impl Reloader {
    async fn reload(&mut self, topology: &mut Topology) -> Result<(), ConfigErrors> {
        let metrics = &self.telemetry.metrics.config;
        metrics.reloads.inc();
        let previous = topology.shared().pipelines.load_full();
        let result = load_and_build(&self.path, &self.telemetry, Some(&previous));
        drop(previous);
        let refuse = |errors: ConfigErrors| {
            metrics.reload_failures.inc();
            metrics.last_reload_successful.set(0);
            for e in &errors.0 {
                tracing::error!(error = %e, "reload refused: the running config stays in force");
            }
            Err(errors)
        };
        let (loaded, set) = match result {
            Ok(ok) => ok,
            Err(errors) => return refuse(errors),
        };
        for (what, changed) in [
            ("server", loaded.agent.server != self.current.agent.server),
            ("data_dir", loaded.data_dir != self.current.data_dir),
            ("limits", loaded.agent.limits != self.current.agent.limits),
        ] {
            if changed {
                tracing::warn!(setting = what, "this setting changed but takes effect only after a restart");
            }
        }
        let summary = match topology.reload(&loaded.agent, set).await {
            Ok(summary) => summary,
            Err(e) => {
                let error = ConfigError::new(&self.path, Position::START, e.to_string());
                return refuse(error.into());
            }
        };
        self.current = loaded;
        metrics.last_reload_successful.set(1);
        metrics.last_reload_success_timestamp_seconds.set(unix_now());
        tracing::info!(
            pipelines = self.current.pipelines.len(),
            sources_started = ?summary.sources_started,
            sources_stopped = ?summary.sources_stopped,
            sinks_started = ?summary.sinks_started,
            sinks_stopped = ?summary.sinks_stopped,
            "config reloaded"
        );
        Ok(())
    }
}
