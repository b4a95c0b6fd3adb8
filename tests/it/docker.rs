//! The Docker source against the real Docker Engine: containers built from the test image write
//! known lines; the test Loki checks each arrives exactly once, with its labels, in order.

use crate::support::agent::{Agent, AgentSetup};
use crate::support::docker::{Container, RunOptions, image};
use crate::support::loki::{Answer, Stored, TestLoki};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

/// A Docker source that follows only the containers of this test (by a label), to a test Loki.
fn config(loki: &TestLoki, test: &str, extra_source: &str, extra_sink: &str) -> String {
    format!(
        "sources:\n  docker:\n    type: docker\n    sync_period: 500ms\n    filters:\n      labels: [\"sluice-test-case={test}\"]\n{extra_source}sinks:\n  loki:\n    type: loki\n    url: {}\n    batch_wait: 100ms\n    backoff: {{min_period: 50ms, max_period: 1s}}\n{extra_sink}",
        loki.url()
    )
}

async fn agent(loki: &TestLoki, test: &str, extra_source: &str, extra_sink: &str) -> Agent {
    let body = config(loki, test, extra_source, extra_sink);
    Agent::start(AgentSetup { body: &body, pipelines: &[] }).await
}

fn labelled<'a>(test: &'a str, more: &'a [(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut labels = vec![("sluice-test-case", test)];
    labels.extend_from_slice(more);
    labels
}

/// `seq` values of a container's lines, per (run, stream), in arrival order.
fn sequences(stored: &[Stored], container: &str) -> BTreeMap<(String, String), Vec<u64>> {
    let mut out: BTreeMap<(String, String), Vec<u64>> = BTreeMap::new();
    for e in stored.iter().filter(|e| e.labels.get("container_name").map(String::as_str) == Some(container)) {
        let v: serde_json::Value =
            serde_json::from_str(&e.line).unwrap_or_else(|_| panic!("not a loggen line: {:.200}", e.line));
        let run = v["run"].to_string();
        out.entry((run, e.labels["stream"].clone())).or_default().push(v["seq"].as_u64().unwrap());
    }
    out
}

/// Every seq of `0..n` once, in order (stdout and stderr together).
fn assert_all_in_order(seqs: &BTreeMap<(String, String), Vec<u64>>, run: Option<&str>, n: u64) {
    let mut all: Vec<u64> = Vec::new();
    for ((r, _stream), s) in seqs {
        if run.is_some_and(|want| want != r) {
            continue;
        }
        assert!(s.windows(2).all(|w| w[0] < w[1]), "each stream in order");
        all.extend(s);
    }
    all.sort_unstable();
    assert_eq!(all, (0..n).collect::<Vec<_>>(), "every line exactly once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdout_and_stderr_are_separated_and_labelled() {
    image();
    let loki = TestLoki::start().await;
    let test = "streams";
    let agent = agent(&loki, test, "", "").await;
    let labels = labelled(test, &[("com.docker.compose.project", "shop"), ("com.docker.compose.service", "api")]);
    let c = Container::run(
        "sluice-it-streams",
        &["/loggen", "--lines", "300", "--stderr-every", "3", "--then-sleep", "60"],
        RunOptions { labels: &labels, ..Default::default() },
    );
    loki.wait_for(300, Duration::from_secs(30)).await;
    let stored = loki.stored();
    assert_eq!(stored.len(), 300);
    assert_eq!(loki.duplicates(), 0);
    let by_stream: HashMap<&str, usize> = stored.iter().fold(HashMap::new(), |mut m, e| {
        *m.entry(e.labels["stream"].as_str()).or_default() += 1;
        m
    });
    assert_eq!(by_stream, HashMap::from([("stdout", 200), ("stderr", 100)]));
    for e in &stored {
        let seq: u64 = serde_json::from_str::<serde_json::Value>(&e.line).unwrap()["seq"].as_u64().unwrap();
        assert_eq!(e.labels["stream"], if seq % 3 == 2 { "stderr" } else { "stdout" });
        let want: BTreeMap<String, String> = [
            ("job", "docker"),
            ("container_name", "sluice-it-streams"),
            ("compose_project", "shop"),
            ("compose_service", "api"),
            ("image", image()),
            ("stream", e.labels["stream"].as_str()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(e.labels, want);
        assert_eq!(e.metadata.get("container_id"), Some(&c.id), "the id is metadata, not a label");
    }
    assert_all_in_order(&sequences(&stored, "sluice-it-streams"), None, 300);
    assert_eq!(agent.stop().await.0, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tty_containers_and_long_lines() {
    image();
    let loki = TestLoki::start().await;
    let test = "tty";
    let agent = agent(&loki, test, "", "").await;
    let labels = labelled(test, &[]);
    let _tty = Container::run(
        "sluice-it-tty",
        &["/loggen", "--lines", "50", "--then-sleep", "60"],
        RunOptions { tty: true, labels: &labels, ..Default::default() },
    );
    let _long = Container::run(
        "sluice-it-long",
        &["/loggen", "--long", "102400", "--lines", "2", "--then-sleep", "60"],
        RunOptions { labels: &labels, ..Default::default() },
    );
    loki.wait_for(53, Duration::from_secs(30)).await;
    let stored = loki.stored();
    let tty: Vec<&Stored> = stored.iter().filter(|e| e.labels["container_name"] == "sluice-it-tty").collect();
    assert_eq!(tty.len(), 50);
    assert!(
        tty.iter().all(|e| !e.line.ends_with('\r') && e.line.starts_with("{\"run\"")),
        "raw stream split on \\n, \\r removed"
    );
    let long: Vec<&Stored> = stored.iter().filter(|e| e.labels["container_name"] == "sluice-it-long").collect();
    assert_eq!(long.len(), 3, "the 100 KiB line arrives whole, as one entry, with the two short ones");
    let big = long.iter().find(|e| e.line.len() > 100_000).expect("the long line");
    let v: serde_json::Value = serde_json::from_str(&big.line).expect("the joined line is intact JSON");
    assert_eq!(v["msg"].as_str().unwrap().len(), 102_400);
    assert_eq!(agent.stop().await.0, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_containers_two_hundred_thousand_lines_each_exactly_once_in_order() {
    image();
    let loki = TestLoki::start().await;
    let test = "twenty";
    let agent = agent(&loki, test, "", "").await;
    let labels = labelled(test, &[]);
    let containers: Vec<Container> = (0..20)
        .map(|i| {
            Container::run(
                &format!("sluice-it-twenty-{i}"),
                &["/loggen", "--lines", "10000", "--stderr-every", "10", "--then-sleep", "120"],
                RunOptions { labels: &labels, ..Default::default() },
            )
        })
        .collect();
    loki.wait_for(200_000, Duration::from_secs(120)).await;
    let stored = loki.stored();
    assert_eq!(stored.len(), 200_000);
    assert_eq!(loki.duplicates(), 0);
    for c in &containers {
        assert_all_in_order(&sequences(&stored, &c.name), None, 10_000);
    }
    let m = agent.metrics().await;
    assert_eq!(m.sum("sluice_source_lines_total", &[("source", "docker")]), 200_000.0);
    assert_eq!(m.sum("sluice_source_streams", &[("source", "docker")]), 20.0);
    assert_eq!(agent.stop().await.0, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_started_later_restarted_and_removed() {
    image();
    let loki = TestLoki::start().await;
    let test = "lifecycle";
    let agent = agent(&loki, test, "", "").await;
    let labels = labelled(test, &[]);
    // Started after sluice, short-lived: the events stream sees it.
    let quick = Container::run(
        "sluice-it-quick",
        &["/loggen", "--lines", "100"],
        RunOptions { labels: &labels, ..Default::default() },
    );
    quick.wait_exit(Duration::from_secs(10)).await;
    // Restarted: both runs' lines, each once.
    let restarted = Container::run(
        "sluice-it-restart",
        &["/loggen", "--lines", "500"],
        RunOptions { labels: &labels, ..Default::default() },
    );
    restarted.wait_exit(Duration::from_secs(10)).await;
    loki.wait_for(600, Duration::from_secs(20)).await;
    restarted.start();
    restarted.wait_exit(Duration::from_secs(10)).await;
    loki.wait_for(1100, Duration::from_secs(20)).await;
    // Removed while writing: no crash, nothing twice.
    let removed = Container::run(
        "sluice-it-removed",
        &["/loggen", "--forever", "--rate", "2000"],
        RunOptions { labels: &labels, ..Default::default() },
    );
    agent.wait_metric("sluice_source_lines_total", &[], 1600.0, Duration::from_secs(20)).await;
    removed.remove();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let stored = loki.stored();
    assert_eq!(loki.duplicates(), 0);
    assert_all_in_order(&sequences(&stored, "sluice-it-quick"), None, 100);
    let runs = sequences(&stored, "sluice-it-restart");
    let run_ids: std::collections::BTreeSet<&String> = runs.keys().map(|(r, _)| r).collect();
    assert_eq!(run_ids.len(), 2, "two runs of the restarted container");
    for run in run_ids {
        assert_all_in_order(&runs, Some(run), 500);
    }
    let removed_seqs: Vec<u64> = sequences(&stored, "sluice-it-removed").into_values().flatten().collect();
    let max = *removed_seqs.iter().max().expect("lines of the removed container");
    assert_eq!(removed_seqs.len() as u64, max + 1, "a prefix of its lines, none twice");
    assert_eq!(agent.get("/ready").await.unwrap().0, 200, "still running");
    assert_eq!(agent.stop().await.0, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_and_restart_deliver_every_line_exactly_once() {
    image();
    let loki = TestLoki::start().await;
    let test = "sigkill";
    let body = config(&loki, test, "", "");
    let agent = Agent::start(AgentSetup { body: &body, pipelines: &[] }).await;
    let labels = labelled(test, &[]);
    let c = Container::run(
        "sluice-it-sigkill",
        &["/loggen", "--lines", "60000", "--rate", "15000", "--then-sleep", "120"],
        RunOptions { labels: &labels, ..Default::default() },
    );
    loki.wait_for(20_000, Duration::from_secs(30)).await;
    let dir = agent.kill().await;
    let before = loki.stored_count();
    assert!(before < 60_000, "killed mid-stream");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let agent = Agent::start_in(dir, AgentSetup { body: &body, pipelines: &[] }).await;
    loki.wait_for(60_000, Duration::from_secs(60)).await;
    let stored = loki.stored();
    assert_eq!(stored.len(), 60_000, "every line exactly once at the receiver");
    assert_all_in_order(&sequences(&stored, &c.name), None, 60_000);
    // What the first run sent after its last saved position was sent again with the same
    // Docker timestamps; Loki (and the test Loki) drop such exact duplicates.
    let replayed = loki.duplicates();
    assert!(replayed < 20_000, "only what followed the last saved position was replayed: {replayed}");
    assert_eq!(agent.stop().await.0, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loki_refusing_for_30s_loses_nothing_and_memory_stays_bounded() {
    image();
    let loki = TestLoki::start().await;
    loki.set_default(Some(Answer::Status(503, None)));
    let test = "refusing";
    let agent = agent(&loki, test, "", "    queue: {max_bytes: 4MiB}\n").await;
    let labels = labelled(test, &[]);
    let containers: Vec<Container> = (0..4)
        .map(|i| {
            Container::run(
                &format!("sluice-it-refusing-{i}"),
                &["/loggen", "--lines", "50000", "--size", "200", "--rate", "5000", "--then-sleep", "120"],
                RunOptions { labels: &labels, ..Default::default() },
            )
        })
        .collect();
    let mut peak_rss = 0u64;
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        peak_rss = peak_rss.max(agent.rss_kib());
        let m = agent.metrics().await;
        assert!(m.sum("sluice_sink_queue_bytes", &[("sink", "loki")]) <= 4.0 * 1024.0 * 1024.0);
    }
    assert_eq!(loki.stored_count(), 0);
    assert!(peak_rss < 96 * 1024, "RSS {peak_rss} KiB while Loki refused: the container logs are the buffer");
    loki.set_default(None);
    loki.wait_for(200_000, Duration::from_secs(90)).await;
    assert_eq!(loki.duplicates(), 0, "{:?}", loki.duplicate_samples());
    let stored = loki.stored();
    for c in &containers {
        assert_all_in_order(&sequences(&stored, &c.name), None, 50_000);
    }
    let m = agent.metrics().await;
    assert_eq!(m.sum("sluice_sink_dropped_total", &[]), 0.0);
    assert!(m.sum("sluice_sink_retries_total", &[]) > 10.0);
    assert_eq!(agent.stop().await.0, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_docker_socket_is_not_ready_then_connects() {
    image();
    let loki = TestLoki::start().await;
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("docker.sock");
    let extra = format!("    host: unix://{}\n", socket.display());
    let body = config(&loki, "nosocket", &extra, "");
    let mut agent = Agent::start_unready(AgentSetup { body: &body, pipelines: &[] }).await;
    let (status, text) = agent.get("/ready").await.unwrap();
    assert_eq!((status, text.as_str()), (503, "Not ready: source/docker\n"));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(agent.get("/health").await.unwrap().0, 200, "alive, retrying");
    std::os::unix::fs::symlink("/var/run/docker.sock", &socket).unwrap();
    agent.wait_ready(Duration::from_secs(40)).await;
    let labels = labelled("nosocket", &[]);
    let _c = Container::run(
        "sluice-it-nosocket",
        &["/loggen", "--lines", "10", "--then-sleep", "60"],
        RunOptions { labels: &labels, ..Default::default() },
    );
    loki.wait_for(10, Duration::from_secs(20)).await;
    let (code, stderr) = agent.stop().await;
    assert_eq!(code, Some(0));
    assert_eq!(
        stderr.matches("cannot reach the Docker engine").count(),
        1,
        "one clear line, not one per retry:\n{stderr}"
    );
    assert_eq!(stderr.matches("connected to the Docker engine").count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_container_keeps_its_position_and_is_not_read_again() {
    image();
    let loki = TestLoki::start().await;
    let test = "stopped";
    let body = config(&loki, test, "", "");
    let agent = Agent::start(AgentSetup { body: &body, pipelines: &[] }).await;
    let labels = labelled(test, &[]);
    let c = Container::run(
        "sluice-it-stopped",
        &["/loggen", "--lines", "1000"],
        RunOptions { labels: &labels, ..Default::default() },
    );
    c.wait_exit(Duration::from_secs(10)).await;
    loki.wait_for(1000, Duration::from_secs(20)).await;
    let dir = agent.dir_after_stop().await;
    let positions = std::fs::read_to_string(dir.path().join("data/positions-docker.json")).unwrap();
    assert!(positions.contains(&c.id), "{positions}");
    let agent = Agent::start_in(dir, AgentSetup { body: &body, pipelines: &[] }).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(loki.stored_count(), 1000);
    assert_eq!(loki.duplicates(), 0, "the stopped container was not read again");
    assert_eq!(agent.stop().await.0, Some(0));
}
