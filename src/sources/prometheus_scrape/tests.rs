//! The scrape loop against a small in-process exporter: negotiation, labels, report series,
//! failures by reason, stale markers.

use super::scrape::{ACCEPT_OPENMETRICS, ACCEPT_TEXT, TargetLoop};
use super::*;
use crate::config::common::WhenFull;
use crate::config::parse_yaml_expanded;
use crate::event::samples::{Sample, is_stale_nan};
use crate::event::{LabelInterner, LabelLimits};
use crate::pipeline::PipelineSet;
use crate::telemetry::Telemetry;
use crate::topology::queue::{QueueReceiver, SinkQueue};
use crate::topology::{Routes, Shared};
use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use std::path::Path;

#[derive(Clone)]
struct Answer {
    status: u16,
    content_type: &'static str,
    body: String,
    delay: Duration,
}

#[derive(Default)]
struct ServerState {
    answer: Option<Answer>,
    accepts: Vec<String>,
    timeouts: Vec<String>,
}

/// A one-route HTTP server answering whatever `state.answer` says.
struct Exporter {
    addr: std::net::SocketAddr,
    state: Arc<Mutex<ServerState>>,
}

impl Exporter {
    async fn start(answer: Answer) -> Exporter {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(ServerState { answer: Some(answer), ..Default::default() }));
        let shared = Arc::clone(&state);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let state = Arc::clone(&shared);
                tokio::spawn(async move {
                    let service = service_fn(move |request: http::Request<hyper::body::Incoming>| {
                        let state = Arc::clone(&state);
                        async move {
                            let answer = {
                                let mut s = state.lock();
                                let header = |name: &str| {
                                    request.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_string()
                                };
                                s.accepts.push(header("accept"));
                                s.timeouts.push(header("x-prometheus-scrape-timeout-seconds"));
                                s.answer.clone()
                            };
                            let Some(answer) = answer else {
                                return Ok::<_, std::convert::Infallible>(
                                    http::Response::builder().status(404).body(Full::new(Bytes::new())).unwrap(),
                                );
                            };
                            tokio::time::sleep(answer.delay).await;
                            Ok(http::Response::builder()
                                .status(answer.status)
                                .header("content-type", answer.content_type)
                                .body(Full::new(Bytes::from(answer.body)))
                                .unwrap())
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Exporter { addr, state }
    }

    fn set(&self, answer: Answer) {
        self.state.lock().answer = Some(answer);
    }
}

const TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

fn ok(content_type: &'static str, body: &str) -> Answer {
    Answer { status: 200, content_type, body: body.to_string(), delay: Duration::ZERO }
}

fn emitter() -> (Arc<SignalEmitter<SampleBatch>>, QueueReceiver<SampleBatch>, Arc<Telemetry>) {
    let telemetry = Arc::new(Telemetry::new());
    let (queue, rx) =
        SinkQueue::new("rw", 1 << 24, WhenFull::Block, Default::default(), Default::default(), Default::default());
    let mut routes = Routes::default();
    routes.samples.insert("scrape".into(), vec![queue]);
    let limits = LabelLimits { max_values_per_label: 1000, max_names: 15, max_value_length: 2048 };
    let shared = Arc::new(Shared {
        interner: LabelInterner::new(limits, &telemetry.metrics.labels),
        telemetry: Arc::clone(&telemetry),
        pipelines: ArcSwap::from_pointee(PipelineSet::empty()),
        routes: ArcSwap::from_pointee(routes),
        data_dir: Path::new(".").to_path_buf(),
    });
    (Arc::new(SignalEmitter::new("scrape", shared)), rx, telemetry)
}

fn job_config(yaml: &str) -> JobConfig {
    parse_yaml_expanded(Path::new("job.yaml"), yaml).unwrap()
}

fn target_loop(exporter: &Exporter, extra: &str) -> (TargetLoop, QueueReceiver<SampleBatch>, Arc<Telemetry>) {
    let (emitter, rx, telemetry) = emitter();
    let config = job_config(&format!(
        "job_name: gpu\nscrape_interval: 200ms\nstatic_configs:\n  - targets: ['{}']\n    labels: {{node: n1}}\n{extra}",
        exporter.addr
    ));
    let job = Arc::new(Job::build(config, &emitter).unwrap());
    let targets = job.targets(&job.static_targets());
    assert_eq!(targets.len(), 1);
    let target_loop = TargetLoop::new(job, targets[0].clone(), emitter).unwrap();
    (target_loop, rx, telemetry)
}

/// (series, value) of every sample, stale markers as "stale".
fn rows(samples: &[Sample]) -> Vec<(String, String)> {
    samples
        .iter()
        .map(|s| {
            let v = if is_stale_nan(s.value) { "stale".to_string() } else { s.value.to_string() };
            (format!("{:?}", s.series), v)
        })
        .collect()
}

fn report_names(samples: &[Sample]) -> Vec<(&str, f64)> {
    samples.iter().rev().take(5).rev().map(|s| (s.series.name(), s.value)).collect()
}

fn metric(telemetry: &Telemetry, line_start: &str) -> f64 {
    let text = telemetry.render();
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit_once(' '))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0.0)
}

const GPU_TEXT: &str = "# HELP nvidia_smi_temperature_gpu temperature.gpu\n# TYPE nvidia_smi_temperature_gpu gauge\n\
    nvidia_smi_temperature_gpu{uuid=\"GPU-0\"} 59\nnvidia_smi_temperature_gpu{uuid=\"GPU-1\"} 61\n";

#[tokio::test]
async fn a_scrape_carries_target_labels_and_report_series() {
    let exporter = Exporter::start(ok(TEXT, GPU_TEXT)).await;
    let (mut target_loop, _rx, telemetry) = target_loop(&exporter, "");
    let batch = target_loop.scrape().await;
    let instance = exporter.addr.to_string();
    let ts = batch.samples[0].timestamp_ms;
    assert!(batch.samples.iter().all(|s| s.timestamp_ms == ts), "one timestamp per scrape");
    assert_eq!(
        rows(&batch.samples[..2]),
        [
            (
                format!(
                    r#"{{__name__="nvidia_smi_temperature_gpu", instance="{instance}", job="gpu", node="n1", uuid="GPU-0"}}"#
                ),
                "59".into()
            ),
            (
                format!(
                    r#"{{__name__="nvidia_smi_temperature_gpu", instance="{instance}", job="gpu", node="n1", uuid="GPU-1"}}"#
                ),
                "61".into()
            ),
        ]
    );
    let report = report_names(&batch.samples);
    assert_eq!(report[0], ("up", 1.0));
    assert_eq!(report[1].0, "scrape_duration_seconds");
    assert!(report[1].1 > 0.0 && report[1].1 < 5.0);
    assert_eq!(
        &report[2..],
        [("scrape_samples_scraped", 2.0), ("scrape_samples_post_metric_relabeling", 2.0), ("scrape_series_added", 2.0)]
    );
    assert_eq!(
        format!("{:?}", batch.samples[2].series),
        format!(r#"{{__name__="up", instance="{instance}", job="gpu", node="n1"}}"#)
    );
    assert_eq!(batch.samples.len(), 7);
    {
        let state = exporter.state.lock();
        assert_eq!(state.accepts, [ACCEPT_OPENMETRICS]);
        assert_eq!(state.timeouts, ["0.2"]);
    }
    let second = target_loop.scrape().await;
    assert_eq!(report_names(&second.samples)[4], ("scrape_series_added", 0.0));
    assert_eq!(metric(&telemetry, "sluice_scrape_samples_total{source=\"scrape\",scrape_job=\"gpu\"}"), 4.0);
}

#[tokio::test]
async fn openmetrics_is_parsed_as_openmetrics_and_text_only_jobs_ask_for_text() {
    let body = "# TYPE gpu_errors counter\ngpu_errors_total{uuid=\"GPU-0\"} 3 1700000000.5\n# EOF\n";
    let exporter = Exporter::start(ok(OPENMETRICS, body)).await;
    let (mut om_loop, _rx, _) = target_loop(&exporter, "");
    let batch = om_loop.scrape().await;
    assert_eq!(batch.samples[0].timestamp_ms, 1_700_000_000_500, "OpenMetrics timestamps are seconds");
    assert_eq!(batch.samples[0].series.name(), "gpu_errors_total");
    let (mut text_only, _rx, _) = target_loop(&exporter, "openmetrics: false\nhonor_timestamps: false\n");
    let batch = text_only.scrape().await;
    assert_eq!(report_names(&batch.samples)[0], ("up", 1.0));
    assert_ne!(batch.samples[0].timestamp_ms, 1_700_000_000_500, "honor_timestamps: false stamps the scrape time");
    assert_eq!(exporter.state.lock().accepts[1], ACCEPT_TEXT);
}

#[tokio::test]
async fn failures_set_up_to_zero_mark_series_stale_and_are_counted_by_reason() {
    let exporter = Exporter::start(ok(TEXT, GPU_TEXT)).await;
    let (mut target_loop, _rx, telemetry) =
        target_loop(&exporter, "scrape_timeout: 150ms\nbody_size_limit: 1KiB\nmax_line_size: 100B\nsample_limit: 3\n");
    assert_eq!(target_loop.scrape().await.samples.len(), 7);
    let cases: Vec<(Answer, &str)> = vec![
        (Answer { status: 503, ..ok(TEXT, "down") }, "http_status"),
        (Answer { delay: Duration::from_millis(400), ..ok(TEXT, GPU_TEXT) }, "timeout"),
        (ok(TEXT, &format!("big {}\n", "1".repeat(2000))), "body_too_large"),
        (ok(TEXT, "m{a=\"\\x\"} 1\n"), "parse"),
        (ok(TEXT, &format!("m{{a=\"{}\"}} 1\n", "x".repeat(200))), "parse"),
        (ok(TEXT, "a 1\nb 1\nc 1\nd 1\n"), "sample_limit"),
        (ok(TEXT, "m{a=\"1\",a=\"2\"} 1\n"), "invalid_series"),
    ];
    for (i, (answer, reason)) in cases.into_iter().enumerate() {
        exporter.set(ok(TEXT, GPU_TEXT));
        target_loop.scrape().await;
        exporter.set(answer);
        let batch = target_loop.scrape().await;
        let rows = rows(&batch.samples);
        assert_eq!(rows.len(), 7, "case {reason}: {rows:?}");
        assert_eq!((rows[0].1.as_str(), rows[1].1.as_str()), ("stale", "stale"), "case {reason}");
        assert_eq!(report_names(&batch.samples)[0], ("up", 0.0), "case {reason}");
        assert_eq!(report_names(&batch.samples)[2], ("scrape_samples_scraped", 0.0), "case {reason}");
        let counted = metric(
            &telemetry,
            &format!("sluice_scrape_failures_total{{source=\"scrape\",scrape_job=\"gpu\",reason=\"{reason}\"}}"),
        );
        let want = if reason == "parse" && i == 4 { 2.0 } else { 1.0 };
        assert_eq!(counted, want, "case {reason}");
    }
    // The connection refused: the exporter is gone.
    drop(exporter);
}

#[tokio::test]
async fn connection_refused_is_a_connection_failure() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let exporter = Exporter { addr, state: Arc::default() };
    let (mut target_loop, _rx, telemetry) = target_loop(&exporter, "");
    let batch = target_loop.scrape().await;
    assert_eq!(batch.samples.len(), 5);
    assert_eq!(report_names(&batch.samples)[0], ("up", 0.0));
    assert_eq!(
        metric(&telemetry, "sluice_scrape_failures_total{source=\"scrape\",scrape_job=\"gpu\",reason=\"connection\"}"),
        1.0
    );
}

#[tokio::test]
async fn a_removed_target_marks_everything_stale() {
    let exporter = Exporter::start(ok(TEXT, GPU_TEXT)).await;
    let (target_loop, mut rx, telemetry) = target_loop(&exporter, "");
    let cancel = CancellationToken::new();
    let removed = CancellationToken::new();
    let task = tokio::spawn(target_loop.run(cancel.clone(), removed.clone()));
    let first = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.unwrap().unwrap();
    assert_eq!(first.batch.samples.len(), 7);
    let first_rows = rows(&first.batch.samples);
    removed.cancel();
    let mut last = None;
    while let Ok(Some(queued)) = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await {
        if queued.batch.samples.iter().all(|s| is_stale_nan(s.value)) {
            last = Some(queued.batch);
            break;
        }
    }
    let last = last.expect("a batch of stale markers");
    let stale: Vec<String> = rows(&last.samples).into_iter().map(|(s, _)| s).collect();
    let all: Vec<String> = first_rows.into_iter().map(|(s, _)| s).collect();
    assert_eq!(stale, all, "every series of the target, report series included");
    tokio::time::timeout(Duration::from_secs(5), task).await.unwrap().unwrap();
    assert!(metric(&telemetry, "sluice_scrapes_total{source=\"scrape\",scrape_job=\"gpu\"}") >= 1.0);
}

#[tokio::test]
async fn the_source_runs_jobs_until_cancelled() {
    let exporter = Exporter::start(ok(TEXT, GPU_TEXT)).await;
    let (emitter, mut rx, telemetry) = emitter();
    let emitter = Arc::try_unwrap(emitter).ok().unwrap();
    let config: ScrapeConfig = parse_yaml_expanded(
        Path::new("s.yaml"),
        &format!(
            "jobs:\n  - job_name: gpu\n    scrape_interval: 100ms\n    static_configs: [{{targets: ['{}']}}]\n",
            exporter.addr
        ),
    )
    .unwrap();
    let cancel = CancellationToken::new();
    let task = tokio::spawn(run(config, emitter, cancel.clone()));
    for _ in 0..3 {
        let queued = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.unwrap().unwrap();
        assert_eq!(queued.batch.samples.len(), 7);
    }
    assert_eq!(metric(&telemetry, "sluice_scrape_targets{source=\"scrape\",scrape_job=\"gpu\"}"), 1.0);
    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(5), task).await.unwrap().unwrap().unwrap();
    assert_eq!(metric(&telemetry, "sluice_scrape_targets{source=\"scrape\",scrape_job=\"gpu\"}"), 0.0);
}
