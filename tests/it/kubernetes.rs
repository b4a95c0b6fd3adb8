//! The files source with pod metadata from the Kubernetes API: kubelet log files written while a
//! fake kube-apiserver (`tests/support/kube_api.rs`) serves this node's pods, or refuses, or is
//! down, and the exact label sets that reach the test Loki.

use crate::support::agent::{Agent, AgentSetup, BINARY};
use crate::support::kube_api::{FakeKubeApi, Mode, PodSpec};
use crate::support::lines::nanos_ago;
use crate::support::logfiles::{Format, LogWriter};
use crate::support::loki::{Stored, TestLoki};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

const NODE: &str = "node-1";
const TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.sluice-test-token";

/// Pod labels `app.kubernetes.io/*` as labels of their own name, `team`, the workload from the
/// controlling ReplicaSet's name, and files of pods annotated `sluice.io/logs: "off"` left out.
const RULES: &str = r#"      relabel_configs:
        - action: labelmap
          regex: __meta_kubernetes_pod_label_app_kubernetes_io_(.+)
        - source_labels: [__meta_kubernetes_pod_label_team]
          target_label: team
        - source_labels: [__meta_kubernetes_pod_controller_kind, __meta_kubernetes_pod_controller_name]
          regex: 'ReplicaSet;(.+)-[a-z0-9]+'
          target_label: workload
        - source_labels: [__meta_kubernetes_pod_annotation_sluice_io_logs]
          regex: 'off'
          action: drop
"#;

fn config(loki: &TestLoki, root: &Path, kubeconfig: &Path, wait_for_pod: &str) -> String {
    format!(
        "sources:\n  pods:\n    type: files\n    include: [\"{}/pods/*/*/*.log\"]\n    sync_period: 200ms\n    scan_interval: 1s\n    kubernetes:\n      node: {NODE}\n      api: true\n      kubeconfig: {}\n      wait_for_pod: {wait_for_pod}\n{RULES}sinks:\n  loki:\n    type: loki\n    url: {}\n    batch_wait: 100ms\n    backoff: {{min_period: 50ms, max_period: 1s}}\n",
        root.display(),
        kubeconfig.display(),
        loki.url()
    )
}

fn pod_log(root: &Path, ns: &str, pod: &str, uid: &str, container: &str) -> PathBuf {
    root.join(format!("pods/{ns}_{pod}_{uid}/{container}/0.log"))
}

fn write_lines(path: &Path, tag: &str, n: usize) {
    let mut w = LogWriter::create(path, Format::Cri);
    let base = nanos_ago(30);
    for i in 0..n {
        w.line(base + i as i64, if i % 2 == 0 { "stdout" } else { "stderr" }, &format!("{tag} line {i}"));
    }
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect()
}

/// The distinct label sets (with the `stream` label left out) of the stored lines starting with `tag`.
fn label_sets(stored: &[Stored], tag: &str) -> Vec<BTreeMap<String, String>> {
    let mut sets: Vec<BTreeMap<String, String>> = stored
        .iter()
        .filter(|e| e.line.starts_with(&format!("{tag} line ")))
        .map(|e| {
            let mut l = e.labels.clone();
            assert!(matches!(l.remove("stream").as_deref(), Some("stdout" | "stderr")), "{l:?}");
            l
        })
        .collect();
    sets.sort();
    sets.dedup();
    sets
}

fn count(stored: &[Stored], tag: &str) -> usize {
    stored.iter().filter(|e| e.line.starts_with(&format!("{tag} line "))).count()
}

fn api_pod<'a>(labels: &'a [(&'a str, &'a str)]) -> PodSpec<'a> {
    PodSpec {
        namespace: "shop",
        name: "api-7d4b9c-xk2lp",
        uid: "uid-api",
        node: NODE,
        labels,
        annotations: &[("prometheus.io/scrape", "true")],
        owner: Some(("ReplicaSet", "api-7d4b9c")),
    }
}

const API_LABELS: &[(&str, &str)] = &[
    ("app.kubernetes.io/name", "api"),
    ("app.kubernetes.io/version", "1.4.2"),
    ("team", "core"),
    ("pod-template-hash", "7d4b9c"),
];

/// What an `api` pod's file of container `c` ships with, given the `team` of its pod.
fn api_labels(container: &str, team: &str) -> BTreeMap<String, String> {
    labels(&[
        ("container", container),
        ("job", "pods"),
        ("name", "api"),
        ("namespace", "shop"),
        ("node", NODE),
        ("pod", "api-7d4b9c-xk2lp"),
        ("team", team),
        ("version", "1.4.2"),
        ("workload", "api"),
    ])
}

/// What a file ships with when its pod's metadata is missing: its path's labels.
fn path_labels(pod: &str, container: &str) -> BTreeMap<String, String> {
    labels(&[("container", container), ("job", "pods"), ("namespace", "shop"), ("node", NODE), ("pod", pod)])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_labels_reach_loki_through_the_relabel_rules() {
    let api = FakeKubeApi::start(NODE, TOKEN).await;
    api.add_pod(&api_pod(API_LABELS));
    api.add_pod(&PodSpec {
        namespace: "shop",
        name: "report-28911",
        uid: "uid-quiet",
        node: NODE,
        labels: &[("app.kubernetes.io/name", "report")],
        annotations: &[("sluice.io/logs", "off")],
        owner: Some(("Job", "report-28911")),
    });
    api.add_pod(&PodSpec {
        namespace: "shop",
        name: "web-0",
        uid: "uid-web",
        node: "node-2",
        labels: &[("app.kubernetes.io/name", "web")],
        annotations: &[],
        owner: None,
    });
    let loki = TestLoki::start().await;
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("pods")).unwrap();
    let body = config(&loki, root.path(), &api.kubeconfig(root.path()), "5s");
    let agent = Agent::start(AgentSetup { body: &body, pipelines: &[] }).await;
    let source = [("source", "pods")];
    agent.wait_metric("sluice_files_kubernetes_pods", &source, 2.0, Duration::from_secs(10)).await;

    write_lines(&pod_log(root.path(), "shop", "api-7d4b9c-xk2lp", "uid-api", "api"), "api", 100);
    write_lines(&pod_log(root.path(), "shop", "report-28911", "uid-quiet", "report"), "quiet", 50);
    loki.wait_for(100, Duration::from_secs(20)).await;
    agent.wait_metric("sluice_files_dropped_by_relabel_total", &source, 1.0, Duration::from_secs(10)).await;
    let stored = loki.stored();
    assert_eq!(count(&stored, "api"), 100);
    assert_eq!(label_sets(&stored, "api"), [api_labels("api", "core")]);
    assert!(
        stored.iter().all(|e| e.metadata == labels(&[("pod_uid", "uid-api")])),
        "the pod uid is structured metadata, never a label"
    );
    assert_eq!(stored.iter().filter(|e| e.labels["stream"] == "stderr").count(), 50);

    // A label changed later applies to files started later (a new container), not to the
    // running one. The pod added after the change shows the change was applied (in order).
    let changed = [("app.kubernetes.io/name", "api"), ("app.kubernetes.io/version", "1.4.2"), ("team", "platform")];
    api.set_labels("uid-api", &changed);
    api.bookmark();
    api.add_pod(&PodSpec {
        namespace: "shop",
        name: "sentinel",
        uid: "uid-sentinel",
        node: NODE,
        labels: &[],
        annotations: &[],
        owner: None,
    });
    agent.wait_metric("sluice_files_kubernetes_pods", &source, 3.0, Duration::from_secs(10)).await;
    // The history is compacted: the watch is told 410 and lists again.
    api.compact();
    let lists = || api.requests().iter().filter(|r| !r.watch && r.status == 200).count();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while lists() < 2 || api.open_watches() == 0 {
        assert!(tokio::time::Instant::now() < deadline, "no list after the 410: {:?}", api.requests());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    write_lines(&pod_log(root.path(), "shop", "api-7d4b9c-xk2lp", "uid-api", "sidecar"), "sidecar", 10);
    let mut more = LogWriter::create(&pod_log(root.path(), "shop", "api-7d4b9c-xk2lp", "uid-api", "api"), Format::Cri);
    more.line(nanos_ago(1), "stdout", "api line 100");
    loki.wait_for(111, Duration::from_secs(20)).await;
    let stored = loki.stored();
    assert_eq!(label_sets(&stored, "sidecar"), [api_labels("sidecar", "platform")]);
    assert_eq!(label_sets(&stored, "api"), [api_labels("api", "core")], "fixed when the file's task started");
    assert_eq!(count(&stored, "quiet"), 0, "the dropped pod's file is not shipped");

    let m = agent.metrics().await;
    assert_eq!(m.sum("sluice_files_kubernetes_pods", &source), 3.0, "node-2's pod is not watched");
    assert_eq!(m.sum("sluice_files_dropped_by_relabel_total", &source), 1.0);
    assert_eq!(m.sum("sluice_files_pod_metadata_missing_total", &source), 0.0);
    assert_eq!(m.sum("sluice_files_kubernetes_api_errors_total", &source), 0.0, "a 410 is not an error");
    assert_eq!(loki.duplicates(), 0);
    assert_eq!(agent.stop().await.0, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_whose_pod_is_not_seen_yet_waits_for_it_a_bounded_time() {
    let api = FakeKubeApi::start(NODE, TOKEN).await;
    let loki = TestLoki::start().await;
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("pods")).unwrap();
    let body = config(&loki, root.path(), &api.kubeconfig(root.path()), "3s");
    let agent = Agent::start(AgentSetup { body: &body, pipelines: &[] }).await;
    let source = [("source", "pods")];
    // A watch is opened once the list is complete: the cache has synced.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while api.open_watches() == 0 {
        assert!(tokio::time::Instant::now() < deadline, "no watch: {:?}", api.requests());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The kubelet wrote the file before the watch delivered the pod.
    write_lines(&pod_log(root.path(), "shop", "api-7d4b9c-xk2lp", "uid-api", "api"), "api", 20);
    agent.wait_metric("sluice_source_streams", &source, 1.0, Duration::from_secs(10)).await;
    assert_eq!(loki.stored_count(), 0, "the file's task waits for its pod");
    api.add_pod(&api_pod(API_LABELS));
    loki.wait_for(20, Duration::from_secs(10)).await;
    assert_eq!(label_sets(&loki.stored(), "api"), [api_labels("api", "core")]);

    // A pod that never shows up: the wait is bounded, then the path's labels are used.
    let started = tokio::time::Instant::now();
    write_lines(&pod_log(root.path(), "shop", "ghost-0", "uid-ghost", "app"), "ghost", 10);
    loki.wait_for(30, Duration::from_secs(20)).await;
    assert!(started.elapsed() >= Duration::from_secs(3), "waited wait_for_pod first: {:?}", started.elapsed());
    assert_eq!(label_sets(&loki.stored(), "ghost"), [path_labels("ghost-0", "app")]);
    let m = agent.metrics().await;
    assert_eq!(m.sum("sluice_files_pod_metadata_missing_total", &source), 1.0);
    assert_eq!(m.sum("sluice_files_kubernetes_api_errors_total", &source), 0.0);
    assert_eq!(agent.stop().await.0, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_api_access_files_ship_with_their_path_labels_and_nothing_waits() {
    let api = FakeKubeApi::start(NODE, TOKEN).await;
    api.add_pod(&api_pod(API_LABELS));
    api.set_mode(Mode::Forbidden).await;
    let loki = TestLoki::start().await;
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("pods")).unwrap();
    // A wait would take a minute: the lines arriving well before says nothing waited.
    let body = config(&loki, root.path(), &api.kubeconfig(root.path()), "60s");
    let agent = Agent::start(AgentSetup { body: &body, pipelines: &[] }).await;
    let source = [("source", "pods")];
    agent
        .wait_metric(
            "sluice_files_kubernetes_api_errors_total",
            &[("source", "pods"), ("reason", "forbidden")],
            1.0,
            Duration::from_secs(10),
        )
        .await;
    write_lines(&pod_log(root.path(), "shop", "api-7d4b9c-xk2lp", "uid-api", "api"), "api", 20);
    loki.wait_for(20, Duration::from_secs(20)).await;
    assert_eq!(label_sets(&loki.stored(), "api"), [path_labels("api-7d4b9c-xk2lp", "api")]);
    assert_eq!(agent.metrics().await.sum("sluice_files_pod_metadata_missing_total", &source), 1.0);
    assert_eq!(agent.get("/ready").await.map(|r| r.0), Some(200), "the agent stays ready");

    // The role is fixed: the next attempt syncs, and files started then get the pod's labels.
    api.set_mode(Mode::Serve).await;
    agent.wait_metric("sluice_files_kubernetes_pods", &source, 1.0, Duration::from_secs(40)).await;
    write_lines(&pod_log(root.path(), "shop", "api-7d4b9c-xk2lp", "uid-api", "sidecar"), "sidecar", 10);
    loki.wait_for(30, Duration::from_secs(20)).await;
    assert_eq!(label_sets(&loki.stored(), "sidecar"), [api_labels("sidecar", "core")]);

    // The API goes down: counted, the agent stays ready and the files flow on.
    api.set_mode(Mode::Down).await;
    agent
        .wait_metric(
            "sluice_files_kubernetes_api_errors_total",
            &[("source", "pods"), ("reason", "unreachable")],
            1.0,
            Duration::from_secs(20),
        )
        .await;
    let mut more = LogWriter::create(&pod_log(root.path(), "shop", "api-7d4b9c-xk2lp", "uid-api", "api"), Format::Cri);
    more.line(nanos_ago(1), "stdout", "api line 20");
    loki.wait_for(31, Duration::from_secs(20)).await;
    assert_eq!(agent.get("/ready").await.map(|r| r.0), Some(200));
    let m = agent.metrics().await;
    assert_eq!(m.sum("sluice_files_pod_metadata_missing_total", &source), 1.0);
    assert_eq!(loki.duplicates(), 0);
    let (code, stderr) = agent.stop().await;
    assert_eq!(code, Some(0), "{stderr}");
    // One clear line when a series of failures starts (forbidden, then down), then one line per
    // further attempt, spaced by the backoff.
    let first =
        stderr.lines().filter(|l| l.contains("kubernetes api: cannot list or watch the pods of this node")).count();
    assert_eq!(first, 2, "{stderr}");
    assert!(stderr.contains("deploy/kubernetes/rbac.yaml"), "the 403 says what to fix: {stderr}");
    let attempts = m.sum("sluice_files_kubernetes_api_errors_total", &source) as usize;
    let again = stderr.lines().filter(|l| l.contains("kubernetes api: still failing")).count();
    assert!(first + again >= attempts && again < attempts, "{first} + {again} lines for {attempts} failed attempts");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_token_is_counted_and_the_files_flow() {
    let api = FakeKubeApi::start(NODE, TOKEN).await;
    api.add_pod(&api_pod(API_LABELS));
    let loki = TestLoki::start().await;
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("pods")).unwrap();
    let body = config(&loki, root.path(), &api.kubeconfig_with(root.path(), "not-the-token"), "60s");
    let agent = Agent::start(AgentSetup { body: &body, pipelines: &[] }).await;
    agent
        .wait_metric(
            "sluice_files_kubernetes_api_errors_total",
            &[("source", "pods"), ("reason", "unauthorized")],
            1.0,
            Duration::from_secs(10),
        )
        .await;
    write_lines(&pod_log(root.path(), "shop", "api-7d4b9c-xk2lp", "uid-api", "api"), "api", 10);
    loki.wait_for(10, Duration::from_secs(20)).await;
    assert_eq!(label_sets(&loki.stored(), "api"), [path_labels("api-7d4b9c-xk2lp", "api")]);
    assert!(api.requests().iter().all(|r| r.status == 401));
    assert_eq!(agent.stop().await.0, Some(0));
}

/// `GET` with an optional bearer token: (status, body).
async fn get(addr: std::net::SocketAddr, path: &str, token: Option<&str>) -> (u16, serde_json::Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or_default();
    (status, serde_json::from_str(body.trim()).unwrap_or(serde_json::Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_lists_and_watches_this_nodes_pods_only() {
    let api = FakeKubeApi::start(NODE, TOKEN).await;
    api.add_pod(&api_pod(API_LABELS));
    // The fake refuses what would list the whole cluster, as a Status; and a missing token.
    let (code, status) = get(api.addr, "/api/v1/pods?limit=500", Some(TOKEN)).await;
    assert_eq!(
        (code, status["kind"].as_str(), status["reason"].as_str(), status["code"].as_u64()),
        (400, Some("Status"), Some("BadRequest"), Some(400))
    );
    let (code, status) = get(api.addr, "/api/v1/pods?fieldSelector=spec.nodeName%3Dnode-1", None).await;
    assert_eq!((code, status["reason"].as_str()), (401, Some("Unauthorized")));
    let (code, list) = get(api.addr, "/api/v1/pods?fieldSelector=spec.nodeName%3Dnode-1&limit=500", Some(TOKEN)).await;
    assert_eq!((code, list["kind"].as_str(), list["items"].as_array().map(Vec::len)), (200, Some("PodList"), Some(1)));
    let before = api.requests().len();

    let loki = TestLoki::start().await;
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("pods")).unwrap();
    let body = config(&loki, root.path(), &api.kubeconfig(root.path()), "5s");
    let agent = Agent::start(AgentSetup { body: &body, pipelines: &[] }).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while api.open_watches() == 0 {
        assert!(tokio::time::Instant::now() < deadline, "no watch: {:?}", api.requests());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let rv = api.add_pod(&PodSpec { name: "api-7d4b9c-zz9qm", uid: "uid-api-2", ..api_pod(API_LABELS) });
    api.wait_delivered(rv, Duration::from_secs(10)).await;
    let requests: Vec<_> = api.requests().into_iter().skip(before).collect();
    let (lists, watches): (Vec<_>, Vec<_>) = requests.iter().partition(|r| !r.watch);
    assert_eq!(lists.len(), 1, "{requests:?}");
    assert!(!watches.is_empty(), "{requests:?}");
    for r in &requests {
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.path, "/api/v1/pods");
        assert_eq!(r.query.get("fieldSelector").map(String::as_str), Some("spec.nodeName=node-1"), "{r:?}");
    }
    // The list is served from the API server's cache; the watch goes on from the list.
    assert_eq!(lists[0].query.get("resourceVersion").map(String::as_str), Some("0"), "{:?}", lists[0]);
    assert_eq!(watches[0].query.get("allowWatchBookmarks").map(String::as_str), Some("true"));
    assert!(watches[0].query.get("resourceVersion").is_some_and(|v| v != "0"), "{:?}", watches[0]);
    agent.wait_metric("sluice_files_kubernetes_pods", &[("source", "pods")], 2.0, Duration::from_secs(10)).await;
    assert_eq!(agent.stop().await.0, Some(0));
}

#[test]
fn check_passes_on_the_kubernetes_agent_config_with_node_name_set() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(repo.join("configs/agent/kubernetes.yaml")).unwrap();
    assert!(text.contains("api: true"), "the shipped config enables the API");
    // The pipelines are mounted at /etc/sluice/pipelines in the pod; here they are the repo's.
    let text = text.replace(
        "pipelines_dir: /etc/sluice/pipelines",
        &format!("pipelines_dir: {}", repo.join("pipelines").display()),
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("sluice.yaml"), &text).unwrap();
    let check = |node: Option<&str>| {
        let mut cmd = std::process::Command::new(BINARY);
        cmd.args(["check", "--config", "sluice.yaml"]).current_dir(dir.path()).env_remove("NODE_NAME");
        if let Some(node) = node {
            cmd.env("NODE_NAME", node);
        }
        let out = cmd.output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, stdout, stderr) = check(Some("node-1"));
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("OK"), "{stdout}");
    // Without the node, `api: true` cannot watch this node's pods only: refused, with its place.
    let (code, _, stderr) = check(None);
    assert_eq!(code, Some(1), "{stderr}");
    let line = text.lines().position(|l| l.trim_start().starts_with("kubernetes:")).unwrap() + 2;
    assert!(
        stderr.trim().starts_with(&format!("sluice.yaml:{line}:"))
            && stderr.contains("source `pods`: kubernetes.api needs kubernetes.node"),
        "{stderr}"
    );
}
