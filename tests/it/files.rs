//! The files source: real files written as the kubelet and dockerd write them, rotated by
//! rename (older files gzipped) and by copy-truncate, while sluice follows them.

use crate::support::agent::{Agent, AgentSetup};
use crate::support::lines::nanos_ago;
use crate::support::logfiles::{Format, LogWriter, Rotation};
use crate::support::loki::{Answer, Limits, Stored, TestLoki};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

fn config(loki: &TestLoki, root: &Path, extra: &str) -> String {
    format!(
        "sources:\n  pods:\n    type: files\n    include: [\"{}/pods/*/*/*.log\"]\n    sync_period: 200ms\n    scan_interval: 1s\n    kubernetes: {{node: node-1}}\n{extra}sinks:\n  loki:\n    type: loki\n    url: {}\n    batch_wait: 100ms\n    backoff: {{min_period: 50ms, max_period: 1s}}\n",
        root.display(),
        loki.url()
    )
}

fn pod_log(root: &Path, ns: &str, pod: &str, container: &str) -> std::path::PathBuf {
    root.join(format!("pods/{ns}_{pod}_uid-{pod}/{container}/0.log"))
}

/// The `seq` of every stored line written by [`numbered`], by file and stream, in stored order.
fn numbered_lines(stored: &[Stored]) -> BTreeMap<String, BTreeMap<String, Vec<u64>>> {
    let mut out: BTreeMap<String, BTreeMap<String, Vec<u64>>> = BTreeMap::new();
    for e in stored {
        let v: serde_json::Value =
            serde_json::from_str(&e.line).unwrap_or_else(|_| panic!("unexpected line {:.100}", e.line));
        let stream = e.labels.get("stream").cloned().unwrap_or_default();
        out.entry(v["file"].as_str().unwrap().to_string())
            .or_default()
            .entry(stream)
            .or_default()
            .push(v["seq"].as_u64().unwrap());
    }
    out
}

fn numbered(file: &str, seq: u64) -> String {
    format!(r#"{{"file":"{file}","seq":{seq},"msg":"request completed"}}"#)
}

/// Every line of every file once; in order within each stream (Loki orders entries per stream,
/// not across them).
fn assert_complete_in_order(by_file: &BTreeMap<String, BTreeMap<String, Vec<u64>>>, files: usize, per_file: u64) {
    assert_eq!(by_file.len(), files);
    for (file, streams) in by_file {
        for (stream, seqs) in streams {
            let disorder = seqs.windows(2).position(|w| w[0] >= w[1]);
            assert!(
                disorder.is_none(),
                "{file} {stream}: out of order at {:?}",
                disorder.map(|i| &seqs[i.saturating_sub(3)..(i + 4).min(seqs.len())])
            );
        }
        let mut all: Vec<u64> = streams.values().flatten().copied().collect();
        all.sort_unstable();
        assert_eq!(all.len() as u64, per_file, "{file}: every line once");
        assert!(all.iter().copied().eq(0..per_file), "{file}: every line once");
    }
}

/// The `seq` ranges of `api-0` … `api-{files-1}` that Loki has not stored, for failure messages.
fn missing_ranges(by_file: &BTreeMap<String, BTreeMap<String, Vec<u64>>>, files: usize, per_file: u64) -> String {
    let mut out = Vec::new();
    for i in 0..files {
        let file = format!("api-{i}");
        let mut seen = vec![false; per_file as usize];
        for seq in by_file.get(&file).into_iter().flat_map(|s| s.values().flatten()) {
            seen[*seq as usize] = true;
        }
        let mut seq = 0;
        while seq < seen.len() {
            let end = seen[seq..].iter().position(|s| *s).map_or(seen.len(), |n| seq + n);
            if end > seq {
                out.push(format!("{file}[{seq}..{end})"));
            }
            seq = end + 1;
        }
    }
    out.join(" ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_thousand_lines_over_fifty_rotating_files() {
    const FILES: usize = 50;
    const PER_FILE: u64 = 10_000;
    let loki = TestLoki::start().await;
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("pods")).unwrap();
    let body = config(&loki, root.path(), "");
    let agent = Agent::start(AgentSetup { body: &body, pipelines: &[] }).await;
    let base = nanos_ago(600);
    let root_path = root.path().to_path_buf();
    let writer = tokio::task::spawn_blocking(move || {
        let mut writers: Vec<LogWriter> = (0..FILES)
            .map(|i| LogWriter::create(&pod_log(&root_path, "shop", &format!("api-{i}"), "app"), Format::Cri))
            .collect();
        for round in 0..(PER_FILE / 100) {
            for (i, w) in writers.iter_mut().enumerate() {
                for k in 0..100 {
                    let seq = round * 100 + k;
                    w.line(
                        base + seq as i64 * 1000 + i as i64,
                        if seq % 4 == 3 { "stderr" } else { "stdout" },
                        &numbered(&format!("api-{i}"), seq),
                    );
                    if seq % 2000 == 1999 {
                        w.rotate(Rotation::Rename);
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    writer.await.unwrap();
    if !loki.reached(FILES * PER_FILE as usize, Duration::from_secs(180)).await {
        let missing = missing_ranges(&numbered_lines(&loki.stored()), FILES, PER_FILE);
        let metrics = agent.metrics().await.0;
        let metrics: Vec<&str> = metrics.lines().filter(|l| l.starts_with("sluice_")).collect();
        let (_, log) = agent.stop().await;
        panic!(
            "{} lines stored; missing: {missing}\n--- metrics\n{}\n--- log\n{log}",
            loki.stored_count(),
            metrics.join("\n")
        );
    }
    assert_eq!(loki.duplicates(), 0);
    let stored = loki.stored();
    assert_complete_in_order(&numbered_lines(&stored), FILES, PER_FILE);
    let e = &stored[0];
    assert_eq!(e.labels.get("namespace").map(String::as_str), Some("shop"));
    assert_eq!(e.labels.get("container").map(String::as_str), Some("app"));
    assert_eq!(e.labels.get("node").map(String::as_str), Some("node-1"));
    assert!(e.labels.get("pod").is_some_and(|p| p.starts_with("api-")));
    assert!(e.metadata.get("pod_uid").is_some_and(|u| u.starts_with("uid-api-")), "the pod uid is metadata");
    assert_eq!(stored.iter().filter(|e| e.labels["stream"] == "stderr").count(), FILES * PER_FILE as usize / 4);
    assert_eq!(agent.stop().await.0, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_agent_uses_almost_no_cpu_and_still_sees_new_lines() {
    let loki = TestLoki::start().await;
    let root = tempfile::tempdir().unwrap();
    let mut w = LogWriter::create(&pod_log(root.path(), "ns", "idle", "c"), Format::Cri);
    let base = nanos_ago(600);
    w.line(base, "stdout", &numbered("idle", 0));
    let body = config(&loki, root.path(), "");
    let agent = Agent::start(AgentSetup { body: &body, pipelines: &[] }).await;
    loki.wait_for(1, Duration::from_secs(10)).await;
    // Its own opens and reads of the watched files and directories must not wake it: that loop
    // once kept a core busy (5 CPU-seconds in these 5 seconds).
    let before = agent.cpu_seconds();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let used = agent.cpu_seconds() - before;
    assert!(used < 0.5, "an idle agent used {used} CPU-seconds in 5 s");
    w.line(base + 1, "stdout", &numbered("idle", 1));
    loki.wait_for(2, Duration::from_secs(10)).await;
    assert_complete_in_order(&numbered_lines(&loki.stored()), 1, 2);
    assert_eq!(agent.stop().await.0, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_and_restart_resume_from_acknowledged_offsets() {
    let loki = TestLoki::start().await;
    let root = tempfile::tempdir().unwrap();
    let path = pod_log(root.path(), "ns", "p", "c");
    let mut w = LogWriter::create(&path, Format::Cri);
    let base = nanos_ago(600);
    for seq in 0..20_000u64 {
        w.line(base + seq as i64, "stdout", &numbered("p", seq));
    }
    let body = config(&loki, root.path(), "");
    let agent = Agent::start(AgentSetup { body: &body, pipelines: &[] }).await;
    loki.wait_for(5_000, Duration::from_secs(30)).await;
    let dir = agent.kill().await;
    let before = loki.stored_count();
    for seq in 20_000..30_000u64 {
        w.line(base + seq as i64, "stdout", &numbered("p", seq));
    }
    let agent = Agent::start_in(dir, AgentSetup { body: &body, pipelines: &[] }).await;
    loki.wait_for(30_000, Duration::from_secs(60)).await;
    assert_complete_in_order(&numbered_lines(&loki.stored()), 1, 30_000);
    // Lines delivered after the last saved position were read again; with the runtime's
    // timestamps unchanged, Loki (like the test Loki) drops those exact duplicates.
    assert!(loki.duplicates() <= before, "replayed {} of {before}", loki.duplicates());
    assert_eq!(agent.stop().await.0, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_behind_a_refusing_loki_then_restart_delivers_every_line_exactly_once() {
    const FILES: usize = 20;
    const PER_FILE: u64 = 2_000;
    let loki = TestLoki::start().await;
    // Three batches get through, then Loki refuses: most lines are read but not acknowledged
    // when SIGTERM comes, and the shutdown deadline passes with them still pending.
    loki.script([Answer::Accept, Answer::Accept, Answer::Accept]);
    loki.set_default(Some(Answer::Status(503, None)));
    let root = tempfile::tempdir().unwrap();
    let base = nanos_ago(600);
    for i in 0..FILES {
        let name = format!("api-{i}");
        let mut w = LogWriter::create(&pod_log(root.path(), "ns", &name, "c"), Format::Cri);
        for seq in 0..PER_FILE {
            w.line(base + seq as i64, "stdout", &numbered(&name, seq));
        }
    }
    let body = format!("{}    batch_size: 256KiB\n", config(&loki, root.path(), ""));
    let agent = Agent::start(AgentSetup { body: &body, pipelines: &[] }).await;
    agent.wait_metric("sluice_sink_retries_total", &[], 5.0, Duration::from_secs(30)).await;
    let delivered = loki.stored_count();
    assert!(delivered > 0 && delivered < FILES * PER_FILE as usize / 2, "{delivered} lines delivered before the stop");
    let dir = agent.dir_after_stop().await;
    assert_eq!(loki.stored_count(), delivered, "nothing more was accepted");
    loki.set_default(None);
    let agent = Agent::start_in(dir, AgentSetup { body: &body, pipelines: &[] }).await;
    loki.wait_for(FILES * PER_FILE as usize, Duration::from_secs(60)).await;
    assert_complete_in_order(&numbered_lines(&loki.stored()), FILES, PER_FILE);
    // Positions move by whole read batches (up to 1,000 lines); the sink puts each in one push,
    // so the acknowledged ones are exactly the ones delivered and nothing is read twice.
    assert_eq!(loki.duplicates(), 0, "replayed: {:?}", loki.duplicate_samples());
    assert_eq!(agent.stop().await.0, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotations_while_stopped_are_read_from_the_saved_position_in_order() {
    let loki = TestLoki::start().await;
    let root = tempfile::tempdir().unwrap();
    let path = pod_log(root.path(), "ns", "down", "c");
    let mut w = LogWriter::create(&path, Format::Cri);
    let base = nanos_ago(600);
    let mut seq = 0u64;
    let mut write = |w: &mut LogWriter, n: u64| {
        for _ in 0..n {
            w.line(base + seq as i64, "stdout", &numbered("down", seq));
            seq += 1;
        }
    };
    write(&mut w, 1_000);
    let body = config(&loki, root.path(), "");
    let agent = Agent::start(AgentSetup { body: &body, pipelines: &[] }).await;
    loki.wait_for(1_000, Duration::from_secs(20)).await;
    let dir = agent.dir_after_stop().await;
    // A run that reads nothing new keeps the position's fingerprint (it finds the file later).
    let dir = Agent::start_in(dir, AgentSetup { body: &body, pipelines: &[] }).await.dir_after_stop().await;
    // While sluice is down: the file gets more lines, is rotated, gzipped, rotated again.
    write(&mut w, 500);
    w.rotate(Rotation::Rename);
    write(&mut w, 500);
    w.rotate(Rotation::Rename);
    write(&mut w, 300);
    assert!(path.with_file_name("0.log.1.gz").exists() && path.with_file_name("0.log.2").exists());
    let agent = Agent::start_in(dir, AgentSetup { body: &body, pipelines: &[] }).await;
    loki.wait_for(2_300, Duration::from_secs(30)).await;
    assert_complete_in_order(&numbered_lines(&loki.stored()), 1, 2_300);
    assert_eq!(loki.duplicates(), 0, "resumed at the saved offset inside the gzipped file");
    assert_eq!(agent.stop().await.0, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_lines_long_lines_and_malformed_lines() {
    let loki = TestLoki::start_with(Limits { max_line_size: 256 * 1024, ..Limits::default() }).await;
    let root = tempfile::tempdir().unwrap();
    let body = config(&loki, root.path(), "");
    let agent = Agent::start(AgentSetup { body: &body, pipelines: &[] }).await;
    let mut w = LogWriter::create(&pod_log(root.path(), "ns", "p", "c"), Format::Cri);
    let base = nanos_ago(60);
    let joined = "abcdefghij".repeat(5_000);
    w.cri_parts(base, "stdout", &joined, 16 * 1024);
    let huge = "x".repeat(1 << 20);
    w.cri_parts(base + 100, "stdout", &huge, 16 * 1024);
    w.raw(b"this line is not CRI\n");
    w.line(base + 200, "stderr", "after");
    loki.wait_for(4, Duration::from_secs(20)).await;
    let stored = loki.stored();
    assert_eq!(stored.len(), 4);
    assert_eq!(stored[0].line, joined, "P parts joined until F");
    assert_eq!(stored[0].timestamp, base, "with the first part's time");
    assert_eq!(stored[1].line.len(), 256 * 1024, "a 1 MiB line is cut to the sink's limit");
    assert_eq!(stored[2].line, "this line is not CRI", "passed through as it is");
    assert_eq!(stored[3].line, "after");
    let m = agent.metrics().await;
    assert_eq!(m.sum("sluice_sink_lines_truncated_total", &[]), 1.0);
    assert_eq!(m.sum("sluice_files_malformed_lines_total", &[("source", "pods")]), 1.0);
    assert_eq!(agent.stop().await.0, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_come_and_go_and_a_replaced_file_is_read_from_its_start() {
    let loki = TestLoki::start().await;
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("pods")).unwrap();
    let body = config(&loki, root.path(), "");
    let agent = Agent::start(AgentSetup { body: &body, pipelines: &[] }).await;
    let base = nanos_ago(60);
    let first = pod_log(root.path(), "ns", "early", "c");
    let mut w = LogWriter::create(&first, Format::Docker);
    for seq in 0..100 {
        w.line(base + seq, "stdout", &numbered("early", seq as u64));
    }
    loki.wait_for(100, Duration::from_secs(10)).await;
    // The pod goes away.
    std::fs::remove_dir_all(first.parent().unwrap().parent().unwrap()).unwrap();
    // A new pod appears.
    let mut late = LogWriter::create(&pod_log(root.path(), "ns", "late", "c"), Format::Docker);
    for seq in 0..100 {
        late.line(base + 1000 + seq, "stdout", &numbered("late", seq as u64));
    }
    loki.wait_for(200, Duration::from_secs(10)).await;
    // The file is replaced by a different one under the same name.
    let path = pod_log(root.path(), "ns", "late", "c");
    std::fs::remove_file(&path).unwrap();
    let mut replaced = LogWriter::create(&path, Format::Docker);
    for seq in 0..50 {
        replaced.line(base + 5000 + seq, "stdout", &numbered("replaced", seq as u64));
    }
    loki.wait_for(250, Duration::from_secs(10)).await;
    let by_file = numbered_lines(&loki.stored());
    assert_eq!(by_file["early"]["stdout"], (0..100).collect::<Vec<_>>());
    assert_eq!(by_file["late"]["stdout"], (0..100).collect::<Vec<_>>());
    assert_eq!(by_file["replaced"]["stdout"], (0..50).collect::<Vec<_>>());
    assert_eq!(loki.duplicates(), 0);
    assert_eq!(agent.stop().await.0, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_truncate_starts_again_at_zero() {
    let loki = TestLoki::start().await;
    let root = tempfile::tempdir().unwrap();
    let body = config(&loki, root.path(), "");
    let agent = Agent::start(AgentSetup { body: &body, pipelines: &[] }).await;
    let path = pod_log(root.path(), "ns", "ct", "c");
    let mut w = LogWriter::create(&path, Format::Cri);
    let base = nanos_ago(60);
    for seq in 0..500u64 {
        w.line(base + seq as i64, "stdout", &numbered("ct", seq));
    }
    loki.wait_for(500, Duration::from_secs(10)).await;
    w.rotate(Rotation::CopyTruncate);
    for seq in 500..800u64 {
        w.line(base + seq as i64, "stdout", &numbered("ct", seq));
    }
    loki.wait_for(800, Duration::from_secs(10)).await;
    assert_complete_in_order(&numbered_lines(&loki.stored()), 1, 800);
    assert_eq!(agent.metrics().await.sum("sluice_files_truncations_total", &[]), 1.0);
    assert_eq!(agent.stop().await.0, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusing_loki_stops_the_reading_and_memory_stays_flat() {
    let loki = TestLoki::start().await;
    loki.set_default(Some(Answer::Status(503, None)));
    let root = tempfile::tempdir().unwrap();
    let path = pod_log(root.path(), "ns", "big", "c");
    let mut w = LogWriter::create(&path, Format::Cri);
    let base = nanos_ago(600);
    let padding = "p".repeat(400);
    for seq in 0..200_000u64 {
        w.line(base + seq as i64, "stdout", &format!(r#"{{"file":"big","seq":{seq},"msg":"{padding}"}}"#));
    }
    let body = format!("{}    queue: {{max_bytes: 4MiB}}\n", config(&loki, root.path(), ""));
    let agent = Agent::start(AgentSetup { body: &body, pipelines: &[] }).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let m = agent.metrics().await;
    let read = m.sum("sluice_source_bytes_total", &[]);
    assert!(read < 20.0 * 1024.0 * 1024.0, "reading stopped at the bound: {read} bytes read of ~90 MB");
    let rss_kib = agent.rss_kib();
    assert!(rss_kib < 96 * 1024, "RSS {rss_kib} KiB");
    loki.set_default(None);
    loki.wait_for(200_000, Duration::from_secs(120)).await;
    assert_eq!(loki.duplicates(), 0);
    assert_eq!(agent.stop().await.0, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_files_behind_a_refusing_loki_hold_only_a_few_batches() {
    const FILES: usize = 300;
    const PER_FILE: u64 = 600;
    let loki = TestLoki::start().await;
    loki.set_default(Some(Answer::Status(503, None)));
    let root = tempfile::tempdir().unwrap();
    let base = nanos_ago(600);
    let padding = "p".repeat(400);
    // Each file is less than a batch: its reader reaches the end with a batch not yet sent.
    for i in 0..FILES {
        let name = format!("f{i}");
        let mut w = LogWriter::create(&pod_log(root.path(), "ns", &name, "c"), Format::Cri);
        for seq in 0..PER_FILE {
            w.line(base + seq as i64, "stdout", &format!(r#"{{"file":"{name}","seq":{seq},"msg":"{padding}"}}"#));
        }
    }
    let body = format!("{}    queue: {{max_bytes: 4MiB}}\n", config(&loki, root.path(), ""));
    let agent = Agent::start(AgentSetup { body: &body, pipelines: &[] }).await;
    // Until every reader has had its turn at a read slot (the files hold ~80 MB).
    agent.wait_metric("sluice_sink_retries_total", &[], 20.0, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss_kib = agent.rss_kib();
    assert!(rss_kib < 96 * 1024, "RSS {rss_kib} KiB: readers waiting for the pipelines hold their batches");
    loki.set_default(None);
    loki.wait_for(FILES * PER_FILE as usize, Duration::from_secs(120)).await;
    assert_complete_in_order(&numbered_lines(&loki.stored()), FILES, PER_FILE);
    assert_eq!(loki.duplicates(), 0);
    assert_eq!(agent.stop().await.0, Some(0));
}
