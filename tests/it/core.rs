//! The core log path, end to end: stdin → pipelines → Loki sink → a strict test Loki; the CLI;
//! the HTTP endpoints; retries, refusals, backpressure and shutdown.

use crate::support::agent::{Agent, AgentSetup, BINARY, free_port, run_cli};
use crate::support::lines::{LEVELS, SERVICES, nanos_ago, seq_of, structured};
use crate::support::loki::{Answer, Limits, TestLoki};
use std::collections::BTreeMap;
use std::time::Duration;

const DEFAULT_PIPELINE: &str = include_str!("../../pipelines/structured-json.yaml");

fn loki_sink(name: &str, url: &str, extra: &str) -> String {
    let wait = if extra.contains("batch_wait") { "" } else { "    batch_wait: 100ms\n" };
    format!(
        "  {name}:\n    type: loki\n    url: {url}\n{wait}    backoff: {{min_period: 50ms, max_period: 500ms}}\n{extra}"
    )
}

fn stdin_config(sinks: &str) -> String {
    format!("sources:\n  app:\n    type: stdin\n    labels: {{job: e2e}}\nsinks:\n{sinks}")
}

async fn start(loki_url: &str, extra: &str) -> Agent {
    let body = stdin_config(&loki_sink("loki", loki_url, extra));
    Agent::start(AgentSetup { body: &body, pipelines: &[("structured-json.yaml", DEFAULT_PIPELINE)] }).await
}

/// Every sequence number in `0..n` exactly once, and nothing sent twice.
fn assert_exactly_once(loki: &TestLoki, n: usize) {
    assert_eq!(loki.duplicates(), 0, "entries sent twice");
    let mut seen = vec![0u32; n];
    for e in loki.stored() {
        let seq = seq_of(&e.line).unwrap_or_else(|| panic!("line without seq: {}", e.line));
        seen[seq] += 1;
    }
    let missing: Vec<usize> = seen.iter().enumerate().filter(|(_, c)| **c == 0).map(|(i, _)| i).take(10).collect();
    let twice: Vec<usize> = seen.iter().enumerate().filter(|(_, c)| **c > 1).map(|(i, _)| i).take(10).collect();
    assert!(missing.is_empty() && twice.is_empty(), "missing {missing:?}, duplicated {twice:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdin_to_loki_every_line_exactly_once_with_labels_metadata_and_time() {
    const N: usize = 100_000;
    let loki = TestLoki::start().await;
    let mut agent = start(&loki.url(), "").await;
    let base = nanos_ago(3600);
    agent.write_lines((0..N).map(|i| structured(i, base))).await;
    agent.close_stdin();
    loki.wait_for(N, Duration::from_secs(120)).await;
    let stored = loki.stored();
    assert_eq!(stored.len(), N, "no line twice: {:?}", loki.rejections());
    assert_exactly_once(&loki, N);
    let mut last_per_stream: BTreeMap<String, i64> = BTreeMap::new();
    for e in &stored {
        let seq = seq_of(&e.line).unwrap();
        let want: BTreeMap<String, String> = [
            ("job", "e2e".to_string()),
            ("service", SERVICES[seq % SERVICES.len()].to_string()),
            ("level", LEVELS[seq % LEVELS.len()].to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        assert_eq!(e.labels, want, "labels of line {seq}");
        assert_eq!(e.timestamp, base + seq as i64 * 1000, "timestamp of line {seq} comes from its `timestamp` field");
        assert_eq!(
            e.metadata.get("trace_id").map(String::as_str),
            Some(format!("{:032x}", seq as u128 * 7919 + 1).as_str())
        );
        assert_eq!(
            e.metadata.get("span_id").map(String::as_str),
            Some(format!("{:016x}", seq as u64 * 104729 + 1).as_str())
        );
        assert_eq!(e.metadata.get("user_id").map(String::as_str), Some(format!("u-{}", seq % 100).as_str()));
        assert_eq!(e.line, structured(seq, base), "the line is unchanged");
        let key = format!("{:?}", e.labels);
        let last = last_per_stream.entry(key).or_insert(i64::MIN);
        assert!(e.timestamp > *last, "each stream arrives in order");
        *last = e.timestamp;
    }
    assert_eq!(last_per_stream.len(), 12, "4 services x 3 levels");
    let metrics = agent.metrics().await;
    assert_eq!(metrics.sum("sluice_source_lines_total", &[("source", "app")]), N as f64);
    assert_eq!(metrics.sum("sluice_sink_lines_sent_total", &[("sink", "loki")]), N as f64);
    assert_eq!(metrics.sum("sluice_sink_dropped_total", &[]), 0.0);
    assert_eq!(metrics.sum("sluice_pipeline_errors_total", &[]), 0.0);
    let (code, _) = agent.stop().await;
    assert_eq!(code, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_after_429_and_5xx_lose_nothing() {
    const N: usize = 5_000;
    let loki = TestLoki::start().await;
    loki.script([
        Answer::Status(429, Some(1)),
        Answer::Status(500, None),
        Answer::Status(503, None),
        Answer::Status(502, None),
    ]);
    let mut agent = start(&loki.url(), "").await;
    let base = nanos_ago(60);
    agent.write_lines((0..N).map(|i| structured(i, base))).await;
    loki.wait_for(N, Duration::from_secs(60)).await;
    assert_exactly_once(&loki, N);
    assert_eq!(loki.stored_count(), N);
    let metrics = agent.metrics().await;
    assert_eq!(metrics.sum("sluice_sink_requests_total", &[("sink", "loki"), ("result", "retry")]), 4.0);
    assert_eq!(metrics.sum("sluice_sink_retries_total", &[("sink", "loki")]), 4.0);
    assert_eq!(metrics.sum("sluice_sink_dropped_total", &[]), 0.0);
    assert_eq!(agent.stop().await.0, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_400_drops_only_its_batch_counted_and_never_retried() {
    const N: usize = 5_000;
    let loki = TestLoki::start().await;
    loki.script([Answer::Accept, Answer::Status(400, None)]);
    let mut agent = start(&loki.url(), "    batch_size: 20KiB\n").await;
    let base = nanos_ago(60);
    agent.write_lines((0..N).map(|i| structured(i, base))).await;
    agent.close_stdin();
    agent.wait_metric("sluice_sink_lines_sent_total", &[], 1.0, Duration::from_secs(30)).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let dropped = loop {
        let m = agent.metrics().await;
        let dropped = m.sum("sluice_sink_dropped_total", &[("sink", "loki"), ("reason", "rejected_400")]);
        let sent = m.sum("sluice_sink_lines_sent_total", &[("sink", "loki")]);
        if dropped + sent >= N as f64 {
            break dropped as usize;
        }
        assert!(tokio::time::Instant::now() < deadline, "sent {sent} + dropped {dropped} < {N}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(dropped > 0 && dropped < N / 5, "one batch of a few dozen lines was refused: {dropped}");
    let stored = loki.stored();
    assert_eq!(stored.len(), N - dropped);
    let mut seqs: Vec<usize> = stored.iter().map(|e| seq_of(&e.line).unwrap()).collect();
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs.len(), N - dropped, "no line twice");
    let metrics = agent.metrics().await;
    assert_eq!(metrics.sum("sluice_sink_requests_total", &[("result", "rejected")]), 1.0);
    assert_eq!(metrics.sum("sluice_sink_requests_total", &[("result", "retry")]), 0.0, "a 400 is never retried");
    assert_eq!(loki.pushes() as f64, metrics.sum("sluice_sink_requests_total", &[]));
    let (code, stderr) = agent.stop().await;
    assert_eq!(code, Some(0));
    assert_eq!(stderr.matches("Loki refused a batch").count(), 1, "logged once per reason:\n{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loki_down_at_start_then_up_loses_nothing() {
    const N: usize = 3_000;
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/loki/api/v1/push");
    let mut agent = start(&url, "").await;
    let base = nanos_ago(60);
    agent.write_lines((0..N).map(|i| structured(i, base))).await;
    agent.wait_metric("sluice_sink_retries_total", &[("sink", "loki")], 3.0, Duration::from_secs(20)).await;
    let loki = TestLoki::start_on(port).await;
    loki.wait_for(N, Duration::from_secs(30)).await;
    assert_exactly_once(&loki, N);
    assert_eq!(agent.stop().await.0, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_delivers_what_is_pending_and_exits_zero() {
    let loki = TestLoki::start().await;
    let mut agent = start(&loki.url(), "    batch_wait: 1h\n").await;
    let base = nanos_ago(60);
    agent.write_lines((0..10).map(|i| structured(i, base))).await;
    agent.wait_metric("sluice_source_lines_total", &[], 10.0, Duration::from_secs(10)).await;
    assert_eq!(loki.stored_count(), 0, "the batch waits for batch_wait");
    let (code, stderr) = agent.stop().await;
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(loki.stored_count(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_lines_are_truncated_and_counted() {
    let loki = TestLoki::start_with(Limits { max_line_size: 1024, ..Limits::default() }).await;
    let mut agent = start(&loki.url(), "    max_line_size: 1KiB\n").await;
    let long = format!("{}é{}", "x".repeat(1023), "y".repeat(4000));
    agent.write_lines([long.clone(), "short".to_string()]).await;
    loki.wait_for(2, Duration::from_secs(10)).await;
    let stored = loki.stored();
    assert_eq!(stored[0].line, "x".repeat(1023), "cut at a character boundary, under the limit");
    assert_eq!(stored[1].line, "short");
    let m = agent.metrics().await;
    assert_eq!(m.sum("sluice_sink_lines_truncated_total", &[("sink", "loki")]), 1.0);
    assert_eq!(agent.stop().await.0, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_loki_fills_the_bounded_queue_and_stdin_waits() {
    const N: usize = 40_000;
    let loki = TestLoki::start().await;
    loki.set_default(Some(Answer::Hang));
    let extra = "    timeout: 1s\n    queue: {max_bytes: 1MiB}\n";
    let mut agent = start(&loki.url(), extra).await;
    let base = nanos_ago(60);
    let lines: Vec<String> = (0..N).map(|i| structured(i, base)).collect();
    let total_bytes: usize = lines.iter().map(|l| l.len() + 1).sum();
    let mut stdin = agent.stdin.take().unwrap();
    let writer = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        for chunk in lines.chunks(1000) {
            let mut buf = chunk.join("\n");
            buf.push('\n');
            stdin.write_all(buf.as_bytes()).await.unwrap();
        }
        drop(stdin);
    });
    tokio::time::sleep(Duration::from_secs(3)).await;
    let m = agent.metrics().await;
    let read = m.sum("sluice_source_bytes_total", &[]);
    let queued = m.sum("sluice_sink_queue_bytes", &[("sink", "loki")]);
    let capacity = m.sum("sluice_sink_queue_capacity_bytes", &[("sink", "loki")]);
    assert_eq!(capacity, 1048576.0);
    assert!(queued <= capacity, "queue bytes {queued} within its bound");
    assert!(read < (total_bytes / 2) as f64, "the source stopped reading: {read} of {total_bytes} bytes");
    assert!(!writer.is_finished(), "the writer is blocked by backpressure");
    loki.set_default(None);
    writer.await.unwrap();
    loki.wait_for(N, Duration::from_secs(60)).await;
    assert_exactly_once(&loki, N);
    assert_eq!(agent.stop().await.0, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_sink_does_not_stall_the_other() {
    const N: usize = 5_000;
    let good = TestLoki::start().await;
    let bad = TestLoki::start().await;
    bad.set_default(Some(Answer::Status(503, None)));
    let sinks = format!(
        "{}{}",
        loki_sink("good", &good.url(), ""),
        loki_sink("bad", &bad.url(), "    queue: {max_bytes: 256KiB, when_full: drop_newest}\n")
    );
    let body = stdin_config(&sinks);
    let mut agent = Agent::start(AgentSetup { body: &body, pipelines: &[] }).await;
    let base = nanos_ago(60);
    agent.write_lines((0..N).map(|i| structured(i, base))).await;
    good.wait_for(N, Duration::from_secs(30)).await;
    assert_exactly_once(&good, N);
    let m = agent.metrics().await;
    assert!(m.sum("sluice_sink_dropped_total", &[("sink", "bad"), ("reason", "queue_full")]) > 0.0);
    assert_eq!(m.sum("sluice_sink_dropped_total", &[("sink", "good")]), 0.0);
    assert_eq!(bad.stored_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_endpoints() {
    let loki = TestLoki::start().await;
    let agent = start(&loki.url(), "").await;
    assert_eq!(agent.get("/health").await.unwrap().0, 200);
    assert_eq!(agent.get("/-/healthy").await.unwrap().0, 200);
    assert_eq!(agent.get("/ready").await.unwrap(), (200, "Ready\n".to_string()));
    assert_eq!(agent.get("/nope").await.unwrap().0, 404);
    assert_eq!(agent.get("/-/reload").await.unwrap().0, 405);
    let m = agent.metrics().await;
    assert_eq!(m.sum("sluice_build_info", &[("version", env!("CARGO_PKG_VERSION"))]), 1.0);
    assert_eq!(m.sum("sluice_config_last_reload_successful", &[]), 1.0);
    for family in [
        "sluice_source_lines_total",
        "sluice_sink_queue_capacity_bytes",
        "sluice_sink_requests_total",
        "sluice_sink_request_duration_seconds_bucket",
    ] {
        assert!(m.0.contains(family), "{family} missing from /metrics");
    }
    assert_eq!(agent.stop().await.0, Some(0));
}

#[test]
fn check_reports_every_error_with_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("pipelines")).unwrap();
    std::fs::write(
        dir.path().join("pipelines/bad.yaml"),
        "stages:\n  - regex:\n      expression: '(unclosed'\n  - match:\n      selector: '{app=~\"x\"'\n      stages: [{output: {source: m}}]\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("sluice.yaml"),
        "pipelines_dir: pipelines\nsources:\n  in: {type: stdin}\nsinks:\n  out: {type: console, sources: [missing]}\n",
    )
    .unwrap();
    let (code, stdout, stderr) = run_cli(&["check", "--config", "sluice.yaml"], dir.path());
    assert_eq!(code, 1, "{stdout}{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 3, "{stderr}");
    assert!(lines[0].starts_with("pipelines/bad.yaml:3:19: invalid regex `(unclosed`"), "{stderr}");
    assert!(lines[1].starts_with("pipelines/bad.yaml:5:17: match: invalid selector"), "{stderr}");
    assert!(lines[2].starts_with("sluice.yaml:5:8: sink `out` reads from source `missing`"), "{stderr}");
    std::fs::write(dir.path().join("sluice.yaml"), "sources:\n  in:\n    type: stdin\n    batch: 5\n").unwrap();
    let (code, _, stderr) = run_cli(&["check", "--config", "sluice.yaml"], dir.path());
    assert_eq!(code, 1);
    assert_eq!(stderr.trim(), "sluice.yaml:4:5: unknown field `batch`, expected one of labels");
    std::fs::write(
        dir.path().join("sluice.yaml"),
        "sources:\n  in: {type: stdin}\nsinks:\n  l:\n    type: loki\n    url: http://x\n    batch_wait: 5 minutes\n",
    )
    .unwrap();
    let (code, _, stderr) = run_cli(&["check", "--config", "sluice.yaml"], dir.path());
    assert_eq!(code, 1);
    assert!(stderr.starts_with("sluice.yaml:7:17: invalid duration `5 minutes`"), "{stderr}");
    std::fs::write(dir.path().join("sluice.yaml"), "sources:\n  in: {type: stdin}\nsinks:\n  l: {type: loki, url: \"${LOKI_URL:-http://loki:3100/loki/api/v1/push}\"}\n").unwrap();
    let (code, stdout, stderr) = run_cli(&["check", "--config", "sluice.yaml"], dir.path());
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("OK (1 sources, 1 sinks"), "{stdout}");
}

/// Every agent file shipped in configs/agent passes `sluice check` with the environment its
/// deployment gives it (the pipelines of the repository in place of the mounted ones).
#[test]
fn check_passes_on_every_shipped_agent_config() {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let pipelines = repo.join("pipelines");
    let dir = tempfile::tempdir().unwrap();
    let mut checked = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(repo.join("configs/agent")).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    for file in files {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        // Mounted at /etc/sluice/pipelines in a container; relative to the file in the repository.
        let text = std::fs::read_to_string(&file)
            .unwrap()
            .replace("/etc/sluice/pipelines", &pipelines.display().to_string())
            .replace("../../pipelines", &pipelines.display().to_string());
        std::fs::write(dir.path().join(&name), text).unwrap();
        let out = std::process::Command::new(BINARY)
            .args(["check", "--config", &name])
            .current_dir(dir.path())
            .env("NODE_NAME", "node-1")
            .env("JAEGER_OTLP_ENDPOINT", "http://jaeger:4317")
            .env("SLUICE_PIPELINES_DIR", &pipelines)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{name}: {stdout}{}", String::from_utf8_lossy(&out.stderr));
        assert!(stdout.contains(": OK ("), "{name}: {stdout}");
        checked.push(name);
    }
    assert_eq!(checked, ["compose.yaml", "kubernetes.yaml", "quickstart.yaml", "sluice.yaml"]);
}
