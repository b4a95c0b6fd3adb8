//! Reloading: pipeline files rewritten under a running agent (editor saves, ConfigMap symlink
//! swaps, partial writes, deletions), SIGHUP and `POST /-/reload`, agent file changes, and
//! `sluice test`.

use crate::support::agent::{Agent, AgentSetup, run_cli};
use crate::support::lines::{nanos_ago, now_secs, seq_of, structured};
use crate::support::loki::TestLoki;
use std::path::Path;
use std::time::{Duration, Instant};

fn body(loki: &TestLoki, extra_sinks: &str) -> String {
    format!(
        "sources:\n  app:\n    type: stdin\n    labels: {{job: reload}}\nsinks:\n  loki:\n    type: loki\n    url: {}\n    batch_wait: 50ms\n{extra_sinks}",
        loki.url()
    )
}

fn version_pipeline(version: u32) -> String {
    format!("stages:\n  - static_labels:\n      version: \"{version}\"\n")
}

/// Writes a file the way editors do: a temporary file, then a rename over the old one.
fn save_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("yaml.swp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// The version label of every stored line, by sequence number.
fn versions(loki: &TestLoki) -> Vec<(usize, Option<u32>)> {
    let mut v: Vec<(usize, Option<u32>)> = loki
        .stored()
        .iter()
        .map(|e| (seq_of(&e.line).unwrap(), e.labels.get("version").map(|v| v.parse().unwrap())))
        .collect();
    v.sort_unstable();
    v
}

/// Waits until a reload succeeded after `saved` (Unix seconds) and none followed for a second:
/// the file saved then is the one in force (a reload that read the file before the save and
/// ended after it is followed by the one the save's own event triggers).
async fn await_reloads_after(agent: &Agent, saved: f64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = (0.0, Instant::now());
    loop {
        let done = agent.metrics().await.sum("sluice_config_last_reload_success_timestamp_seconds", &[]);
        if done != last.0 {
            last = (done, Instant::now());
        } else if done >= saved && last.1.elapsed() >= Duration::from_secs(1) {
            return;
        }
        assert!(Instant::now() < deadline, "no reload after the last save: last success at {done}, saved at {saved}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_thousand_lines_through_a_hundred_rewrites_each_processed_once() {
    const N: usize = 200_000;
    let loki = TestLoki::start().await;
    let body = body(&loki, "");
    let v0 = version_pipeline(0);
    let mut agent = Agent::start(AgentSetup { body: &body, pipelines: &[("v.yaml", &v0)] }).await;
    let file = agent.path("pipelines/v.yaml");
    let base = nanos_ago(3600);
    let lines: Vec<String> = (0..N).map(|i| structured(i, base)).collect();
    let mut stdin = agent.stdin.take().unwrap();
    // The last chunk waits until the last version is in force, so that it is the one applied
    // however the writer's and the rewriter's timings fall.
    let (last_version_live, mut last_chunk_may_go) = tokio::sync::oneshot::channel::<()>();
    let writer = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        for (k, chunk) in lines.chunks(1000).enumerate() {
            if k + 1 == N / 1000 {
                (&mut last_chunk_may_go).await.unwrap();
            }
            let mut buf = chunk.join("\n");
            buf.push('\n');
            stdin.write_all(buf.as_bytes()).await.unwrap();
            tokio::time::sleep(Duration::from_millis(60)).await;
        }
        stdin
    });
    let invalid = [
        "stages:\n  - regex:\n      expression: '(unclosed'\n",
        "stages: [ {static_labels: {version: ",
        "stages:\n  - jsn: {}\n",
    ];
    let mut valid_versions = vec![0u32];
    let mut saved_last = 0.0;
    for i in 1..=100u32 {
        if i % 2 == 0 {
            save_atomically(&file, &version_pipeline(i));
            saved_last = now_secs();
            valid_versions.push(i);
        } else {
            std::fs::write(&file, invalid[(i as usize / 2) % invalid.len()]).unwrap();
        }
        tokio::time::sleep(Duration::from_millis(120)).await;
    }
    await_reloads_after(&agent, saved_last).await;
    last_version_live.send(()).unwrap();
    let stdin = writer.await.unwrap();
    drop(stdin);
    loki.wait_for(N, Duration::from_secs(120)).await;
    assert_eq!(loki.stored_count(), N);
    assert_eq!(loki.duplicates(), 0, "no line processed twice");
    let seen = versions(&loki);
    assert_eq!(seen.iter().map(|(s, _)| *s).collect::<Vec<_>>(), (0..N).collect::<Vec<_>>(), "every line exactly once");
    let mut last = 0;
    for (seq, version) in &seen {
        let v = version.unwrap_or_else(|| panic!("line {seq} has no version label: processed by no valid pipeline"));
        assert!(valid_versions.contains(&v), "line {seq} has version {v}, which was never a valid file");
        assert!(v >= last, "line {seq}: version {v} after {last}: each line sees the version in force");
        last = v;
    }
    let distinct: std::collections::BTreeSet<u32> = seen.iter().filter_map(|(_, v)| *v).collect();
    assert!(distinct.len() >= 10, "the versions in force changed while lines streamed: {distinct:?}");
    assert_eq!(*distinct.iter().last().unwrap(), 100, "the last valid version applies");
    let m = agent.metrics().await;
    assert!(m.sum("sluice_config_reload_failures_total", &[]) >= 1.0);
    assert_eq!(m.sum("sluice_config_last_reload_successful", &[]), 1.0);
    assert_eq!(agent.get("/ready").await.unwrap().0, 200, "the agent never stopped");
    assert_eq!(agent.stop().await.0, Some(0));
}

/// Streams lines until one carries `version`; returns how long after `since` that took.
async fn applied_within(
    agent: &mut Agent,
    loki: &TestLoki,
    version: u32,
    next: &mut usize,
    base: i64,
    since: Instant,
) -> Duration {
    let deadline = since + Duration::from_secs(10);
    loop {
        agent.write_lines((*next..*next + 10).map(|i| structured(i, base))).await;
        *next += 10;
        tokio::time::sleep(Duration::from_millis(25)).await;
        if let Some(at) = loki
            .stored()
            .iter()
            .find(|e| e.labels.get("version").map(String::as_str) == Some(&version.to_string()))
            .map(|_| since.elapsed())
        {
            return at;
        }
        assert!(Instant::now() < deadline, "version {version} never applied");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn editor_saves_symlink_swaps_partial_writes_and_re_created_files_all_reload() {
    let loki = TestLoki::start().await;
    let body = body(&loki, "");
    let dir = tempfile::tempdir().unwrap();
    // A ConfigMap-style directory: pipelines/v.yaml -> ..data/v.yaml, ..data -> ..2024_01.
    let pipelines = dir.path().join("pipelines");
    std::fs::create_dir_all(pipelines.join("..2024_01")).unwrap();
    std::fs::write(pipelines.join("..2024_01/v.yaml"), version_pipeline(1)).unwrap();
    std::os::unix::fs::symlink("..2024_01", pipelines.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/v.yaml", pipelines.join("v.yaml")).unwrap();
    let mut agent = Agent::start_in(dir, AgentSetup { body: &body, pipelines: &[] }).await;
    let base = nanos_ago(600);
    let mut next = 0;
    let mut latencies = Vec::new();
    latencies.push(applied_within(&mut agent, &loki, 1, &mut next, base, Instant::now()).await);

    // The kubelet's swap: a new timestamped directory, then `..data` renamed over atomically.
    let pipelines = agent.path("pipelines");
    std::fs::create_dir_all(pipelines.join("..2024_02")).unwrap();
    std::fs::write(pipelines.join("..2024_02/v.yaml"), version_pipeline(2)).unwrap();
    std::os::unix::fs::symlink("..2024_02", pipelines.join("..data_tmp")).unwrap();
    let swapped = Instant::now();
    std::fs::rename(pipelines.join("..data_tmp"), pipelines.join("..data")).unwrap();
    latencies.push(applied_within(&mut agent, &loki, 2, &mut next, base, swapped).await);

    // An editor's save: a temporary file renamed over the pipeline.
    std::fs::remove_file(pipelines.join("v.yaml")).unwrap();
    std::fs::write(pipelines.join("v.yaml"), version_pipeline(2)).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let saved = Instant::now();
    save_atomically(&pipelines.join("v.yaml"), &version_pipeline(3));
    latencies.push(applied_within(&mut agent, &loki, 3, &mut next, base, saved).await);

    // A half-written file (refused), then the rest.
    let text = version_pipeline(4);
    let (head, tail) = text.split_at(text.len() / 2);
    std::fs::write(pipelines.join("v.yaml"), head).unwrap();
    agent.wait_metric("sluice_config_reload_failures_total", &[], 1.0, Duration::from_secs(10)).await;
    let completed = Instant::now();
    std::fs::write(pipelines.join("v.yaml"), format!("{head}{tail}")).unwrap();
    latencies.push(applied_within(&mut agent, &loki, 4, &mut next, base, completed).await);

    // Deleted (the label goes), then re-created.
    std::fs::remove_file(pipelines.join("v.yaml")).unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let recreated = Instant::now();
    std::fs::write(pipelines.join("v.yaml"), version_pipeline(5)).unwrap();
    latencies.push(applied_within(&mut agent, &loki, 5, &mut next, base, recreated).await);

    assert_eq!(loki.duplicates(), 0);
    let m = agent.metrics().await;
    assert_eq!(m.sum("sluice_config_last_reload_successful", &[]), 1.0);
    println!("save-to-applied latencies (including the first lines' round trip): {latencies:?}");
    assert_eq!(agent.stop().await.0, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_endpoint_and_sighup_answer_with_errors_and_metrics() {
    let loki = TestLoki::start().await;
    let body = body(&loki, "");
    let v1 = version_pipeline(1);
    let agent = Agent::start(AgentSetup { body: &body, pipelines: &[("v.yaml", &v1)] }).await;
    let file = agent.path("pipelines/v.yaml");
    // Written in place with the watch racing us: the endpoint answers for the state it loads.
    std::fs::write(&file, "stages:\n  - regex:\n      expression: '(unclosed'\n").unwrap();
    let (status, text) = agent.post("/-/reload").await.unwrap();
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("pipelines/v.yaml:3:19: invalid regex `(unclosed`"), "{text}");
    let m = agent.metrics().await;
    assert_eq!(m.sum("sluice_config_last_reload_successful", &[]), 0.0);
    let failures = m.sum("sluice_config_reload_failures_total", &[]);
    assert!(failures >= 1.0);
    save_atomically(&file, &version_pipeline(2));
    assert_eq!(agent.post("/-/reload").await.unwrap(), (200, "OK\n".to_string()));
    assert_eq!(agent.metrics().await.sum("sluice_config_last_reload_successful", &[]), 1.0);
    std::fs::write(&file, "stages:\n  - nope: {}\n").unwrap();
    let reloads = agent.metrics().await.sum("sluice_config_reloads_total", &[]);
    agent.signal("HUP");
    agent.wait_metric("sluice_config_reloads_total", &[], reloads + 1.0, Duration::from_secs(10)).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while agent.metrics().await.sum("sluice_config_last_reload_successful", &[]) != 0.0 {
        assert!(Instant::now() < deadline, "SIGHUP reload of an invalid file is refused");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (code, stderr) = agent.stop().await;
    assert_eq!(code, Some(0));
    assert!(
        stderr.contains("pipelines/v.yaml:2:5: unknown variant `nope`"),
        "the error is logged with its place:\n{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_file_changes_rebuild_only_what_changed() {
    let loki = TestLoki::start().await;
    let second = TestLoki::start().await;
    let body1 = body(&loki, "");
    let mut agent = Agent::start(AgentSetup { body: &body1, pipelines: &[] }).await;
    let base = nanos_ago(60);
    agent.write_lines((0..100).map(|i| structured(i, base))).await;
    loki.wait_for(100, Duration::from_secs(10)).await;
    let extra = format!("  second:\n    type: loki\n    url: {}\n    batch_wait: 50ms\n", second.url());
    std::fs::write(
        agent.config_path(),
        format!(
            "server:\n  http_listen_address: {}\n  shutdown_timeout: 5s\ndata_dir: data\npipelines_dir: pipelines\n{}",
            agent.http,
            body(&loki, &extra)
        ),
    )
    .unwrap();
    agent.wait_metric("sluice_config_reloads_total", &[], 1.0, Duration::from_secs(10)).await;
    agent.write_lines((100..200).map(|i| structured(i, base))).await;
    loki.wait_for(200, Duration::from_secs(10)).await;
    second.wait_for(100, Duration::from_secs(10)).await;
    assert_eq!(
        second.stored().iter().map(|e| seq_of(&e.line).unwrap()).min(),
        Some(100),
        "the new sink takes the lines after the reload"
    );
    assert_eq!(loki.duplicates(), 0);
    let (code, stderr) = agent.stop().await;
    assert_eq!(code, Some(0));
    let summary = stderr.lines().find(|l| l.contains("config reloaded")).expect("the reload is logged");
    assert!(
        summary.contains(r#"sinks_started":"[\"second\"]"#) || summary.contains(r#"sinks_started=["second"]"#),
        "{summary}"
    );
    assert!(
        summary.contains(r#"sinks_stopped":"[]"#) || summary.contains("sinks_stopped=[]"),
        "the unchanged sink keeps running: {summary}"
    );
    assert!(
        summary.contains(r#"sources_stopped":"[]"#) || summary.contains("sources_stopped=[]"),
        "the unchanged source keeps running: {summary}"
    );
}

#[test]
fn sluice_test_runs_the_shipped_cases_and_shows_a_failing_diff() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let (code, stdout, stderr) = run_cli(&["test", "pipelines/structured-json.yaml"], repo);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("3 test cases, 3 passed, 0 failed"), "{stdout}");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("p.yaml"),
        "stages:\n  - json: {expressions: {level: level}}\n  - labels: {level: }\ntests:\n  - name: wrong level\n    input: '{\"level\":\"warn\"}'\n    expect:\n      labels: {level: error}\n",
    )
    .unwrap();
    let (code, stdout, _) = run_cli(&["test", "p.yaml"], dir.path());
    assert_eq!(code, 1);
    assert!(stdout.contains("FAIL  wrong level (p.yaml:5:5)"), "{stdout}");
    assert!(stdout.contains(r#"labels: level: expected "error", got "warn""#), "{stdout}");
    let (code, _, stderr) = run_cli(&["check", "--config", "x.yaml"], dir.path());
    assert_eq!(code, 1);
    assert!(stderr.starts_with("x.yaml:1:1: cannot read file"), "{stderr}");
}
