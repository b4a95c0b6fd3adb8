//! The `sluice` command line: `run`, `check`, `test`, `convert`.

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use sluice::app;
use sluice::config::ConfigErrors;
use sluice::event::LabelSet;
use sluice::pipeline::dry_run::{self, DryRun, entry_json};
use sluice::pipeline::{BuildContext, build_set};
use sluice::sinks::console::write_text;
use sluice::telemetry::Telemetry;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "sluice",
    version,
    about = "One agent for logs, traces and node metrics: container logs to Loki, OTLP traces to Jaeger, scrapes to Prometheus",
    long_about = None,
    propagate_version = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log level of the agent's own logs: error, warn, info, debug, trace.
    #[arg(long = "log.level", global = true, default_value = "info", env = "SLUICE_LOG_LEVEL")]
    log_level: String,
    /// Format of the agent's own logs (on stderr).
    #[arg(long = "log.format", global = true, value_enum, default_value_t = LogFormat::Json, env = "SLUICE_LOG_FORMAT")]
    log_format: LogFormat,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Json,
    Text,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum OutputFormat {
    Text,
    Json,
}

/// The agents whose config `sluice convert` reads.
#[derive(Clone, Copy, ValueEnum)]
enum ConvertFrom {
    Promtail,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent until SIGTERM or SIGINT (SIGHUP or POST /-/reload reloads the config).
    Run {
        /// The agent config file.
        #[arg(short, long, value_name = "FILE", env = "SLUICE_CONFIG")]
        config: PathBuf,
    },
    /// Validate the agent file and every pipeline file (and run the pipelines' test cases).
    /// Prints each problem as FILE:LINE:COL: message and exits 1 if there is any.
    Check {
        #[arg(short, long, value_name = "FILE", env = "SLUICE_CONFIG")]
        config: PathBuf,
    },
    /// Probe a running agent's /ready endpoint: exit 0 when ready, 1 otherwise (for container
    /// health checks in images without a shell or curl).
    Healthcheck {
        /// The agent's HTTP address.
        #[arg(long, default_value = "127.0.0.1:9080")]
        address: String,
        /// The path to probe.
        #[arg(long, default_value = "/ready")]
        path: String,
    },
    /// Run lines through a pipeline file and print what comes out, or run its test cases.
    Test {
        /// The pipeline file.
        pipeline: PathBuf,
        /// Lines to run, one per line (`-` for stdin). Without it, the file's own test cases run.
        #[arg(short, long, value_name = "FILE")]
        input: Option<PathBuf>,
        /// How to print results.
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        format: OutputFormat,
        /// A label the source would have set (repeatable): --label container=api
        #[arg(short, long = "label", value_name = "NAME=VALUE")]
        labels: Vec<String>,
        /// The source the lines come from (for pipelines that select by source).
        #[arg(long, default_value = "test")]
        source: String,
    },
    /// Write a sluice agent file (DIR/sluice.yaml) and pipeline files (DIR/pipelines/) from
    /// another agent's config. Prints each part that could not be converted as
    /// FILE:LINE:COL: not converted: WHAT (WHY) and then exits 2; the files are written all the
    /// same.
    Convert {
        /// The agent whose config FILE is.
        #[arg(long, value_enum)]
        from: ConvertFrom,
        /// The config to convert.
        file: PathBuf,
        /// Where to write (created if needed; must not already hold a sluice config).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
}

fn init_logging(level: &str, format: LogFormat) {
    let filter =
        tracing_subscriber::EnvFilter::try_new(level).unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).init(),
        LogFormat::Text => builder.init(),
    }
}

fn print_errors(errors: &ConfigErrors) {
    let mut stderr = std::io::stderr().lock();
    for e in &errors.0 {
        let _ = writeln!(stderr, "{e}");
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.log_level, cli.log_format);
    match cli.command {
        Command::Run { config } => run(&config),
        Command::Check { config } => check(&config),
        Command::Healthcheck { address, path } => healthcheck(&address, &path),
        Command::Test { pipeline, input, format, labels, source } => {
            match test(&pipeline, input.as_deref(), format, &labels, &source) {
                Ok(code) => code,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Convert { from, file, out } => convert(from, &file, &out),
    }
}

/// `sluice convert`: exit 0 when everything was converted, 2 when something was left out, 1
/// when nothing could be written.
fn convert(from: ConvertFrom, file: &Path, out: &Path) -> ExitCode {
    let text = match std::fs::read_to_string(file) {
        Ok(text) => text,
        Err(e) => {
            eprintln!("error: cannot read {}: {e}", file.display());
            return ExitCode::FAILURE;
        }
    };
    let date = sluice::convert::today();
    let result = match from {
        ConvertFrom::Promtail => sluice::convert::convert_promtail(file, &text, &date),
    };
    let conversion = match result {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let written = match sluice::convert::write(&conversion, out) {
        Ok(w) => w,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut stderr = std::io::stderr().lock();
    for issue in &conversion.issues {
        let _ = writeln!(stderr, "{issue}");
    }
    let files: Vec<String> = written.iter().map(|p| p.display().to_string()).collect();
    println!("wrote {}", files.join(", "));
    if conversion.issues.is_empty() {
        println!(
            "everything was converted: review the files, then run `sluice check --config {}`",
            out.join(sluice::convert::AGENT_FILE).display()
        );
        ExitCode::SUCCESS
    } else {
        println!(
            "{} part(s) not converted (listed on stderr): review the files, then run `sluice check --config {}`",
            conversion.issues.len(),
            out.join(sluice::convert::AGENT_FILE).display()
        );
        ExitCode::from(2)
    }
}

fn run(config: &Path) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().thread_name("sluice").build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(app::run(config));
    // Everything that matters (deliveries, positions) finished inside `run`; a blocking task
    // still busy (a file read) must not hold the exit, as dropping the runtime would.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(app::AppError::Config(errors)) => {
            print_errors(&errors);
            ExitCode::FAILURE
        }
        Err(e) => {
            tracing::error!(error = %e, "sluice cannot start");
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn healthcheck(address: &str, path: &str) -> ExitCode {
    use std::io::Read;
    use std::time::Duration;
    let probe = || -> std::io::Result<String> {
        let addr = std::net::ToSocketAddrs::to_socket_addrs(address)?
            .next()
            .ok_or_else(|| std::io::Error::other("no address"))?;
        let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
        write!(stream, "GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n")?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        Ok(response)
    };
    match probe() {
        Ok(response) if response.split_whitespace().nth(1) == Some("200") => ExitCode::SUCCESS,
        Ok(response) => {
            eprintln!("{}", response.split("\r\n\r\n").nth(1).unwrap_or(&response).trim());
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("cannot reach {address}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn check(config: &Path) -> ExitCode {
    let loaded = match app::check(config) {
        Ok(loaded) => loaded,
        Err(errors) => {
            print_errors(&errors);
            return ExitCode::FAILURE;
        }
    };
    let telemetry = Telemetry::new();
    let mut failed = false;
    for pipeline in &loaded.pipelines {
        let build = || {
            build_set(
                std::slice::from_ref(pipeline),
                &BuildContext { metrics: &telemetry.metrics.pipeline, previous: None },
            )
            .unwrap_or_else(|_| sluice::pipeline::PipelineSet::empty())
        };
        for report in dry_run::run_cases(pipeline, build) {
            for d in &report.differences {
                failed = true;
                eprintln!(
                    "{}:{}:{}: test `{}`: {d}",
                    pipeline.path.display(),
                    report.position.line,
                    report.position.column,
                    report.name
                );
            }
        }
    }
    if failed {
        return ExitCode::FAILURE;
    }
    let cases: usize = loaded.pipelines.iter().map(|p| p.file.tests.len()).sum();
    println!(
        "{}: OK ({} sources, {} sinks, {} pipelines, {cases} pipeline test cases passed)",
        config.display(),
        loaded.agent.sources.len(),
        loaded.agent.sinks.len(),
        loaded.pipelines.len()
    );
    ExitCode::SUCCESS
}

fn test(
    path: &Path,
    input: Option<&Path>,
    format: OutputFormat,
    labels: &[String],
    source: &str,
) -> anyhow::Result<ExitCode> {
    let pipeline = match app::load_pipeline(path) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let telemetry = Telemetry::new();
    let build = || {
        build_set(
            std::slice::from_ref(&pipeline),
            &BuildContext { metrics: &telemetry.metrics.pipeline, previous: None },
        )
    };
    let set = match build() {
        Ok(set) => set,
        Err(errors) => {
            print_errors(&errors);
            return Ok(ExitCode::FAILURE);
        }
    };
    let Some(input) = input else {
        let reports =
            dry_run::run_cases(&pipeline, || build().unwrap_or_else(|_| sluice::pipeline::PipelineSet::empty()));
        let mut failed = 0;
        for r in &reports {
            if r.differences.is_empty() {
                println!("ok    {}", r.name);
            } else {
                failed += 1;
                println!("FAIL  {} ({}:{}:{})", r.name, path.display(), r.position.line, r.position.column);
                for d in &r.differences {
                    println!("        {d}");
                }
            }
        }
        println!("{} test cases, {} passed, {failed} failed", reports.len(), reports.len() - failed);
        return Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE });
    };
    let mut pairs = Vec::new();
    for l in labels {
        let (n, v) = l.split_once('=').with_context(|| format!("--label {l}: expected NAME=VALUE"))?;
        pairs.push((n.to_string(), v.to_string()));
    }
    let labels = LabelSet::from_pairs(pairs);
    let reader: Box<dyn BufRead> = if input == Path::new("-") {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(std::io::BufReader::new(
            std::fs::File::open(input).with_context(|| format!("cannot open {}", input.display()))?,
        ))
    };
    let mut dry = DryRun::new(set);
    let mut out = std::io::stdout().lock();
    let print = |out: &mut std::io::StdoutLock<'_>,
                 entry: &sluice::event::LogEntry,
                 dropped: Option<&sluice::pipeline::DropRecord>|
     -> std::io::Result<()> {
        match format {
            OutputFormat::Json => writeln!(out, "{}", entry_json(entry, dropped)),
            OutputFormat::Text => {
                let mut text = Vec::new();
                write_text(entry, &mut text);
                match dropped {
                    Some(d) => {
                        writeln!(out, "DROPPED by {} ({}): {}", d.stage, d.reason, String::from_utf8_lossy(&text))
                    }
                    None => writeln!(out, "{}", String::from_utf8_lossy(&text)),
                }
            }
        }
    };
    for line in reader.split(b'\n') {
        let mut line = line.context("reading input")?;
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        let now = sluice::event::now_nanos();
        let result = dry.run_line(source, &labels, now, &line);
        if let Some(d) = &result.dropped {
            let original = sluice::event::LogEntry::new(now, bytes::Bytes::from(line), labels.clone());
            print(&mut out, &original, Some(d))?;
        }
        for entry in &result.entries {
            print(&mut out, entry, None)?;
        }
    }
    for entry in dry.finish() {
        print(&mut out, &entry, None)?;
    }
    Ok(ExitCode::SUCCESS)
}
