//! Running the built `sluice` binary as the user does: a config in a temporary directory, a free
//! HTTP port, standard input to write to, and helpers to read `/metrics` and to stop it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStdin, Command};

pub const BINARY: &str = env!("CARGO_BIN_EXE_sluice");

/// A free TCP port on 127.0.0.1 (bound and released: good enough for tests).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

pub struct Agent {
    child: Child,
    pub http: String,
    pub dir: tempfile::TempDir,
    pub stdin: Option<ChildStdin>,
}

/// What goes into the agent file besides `server` and the directories (YAML, indented by 0).
pub struct AgentSetup<'a> {
    pub body: &'a str,
    pub pipelines: &'a [(&'a str, &'a str)],
}

impl Agent {
    /// Writes the config and starts `sluice run`; waits until `/ready` answers 200.
    pub async fn start(setup: AgentSetup<'_>) -> Agent {
        let dir = tempfile::tempdir().expect("tempdir");
        Self::start_in(dir, setup).await
    }

    pub async fn start_in(dir: tempfile::TempDir, setup: AgentSetup<'_>) -> Agent {
        let mut agent = Self::spawn(dir, setup);
        agent.wait_ready(Duration::from_secs(20)).await;
        agent
    }

    /// Starts the agent and waits only until its HTTP server answers (it may not be ready).
    pub async fn start_unready(setup: AgentSetup<'_>) -> Agent {
        let mut agent = Self::spawn(tempfile::tempdir().expect("tempdir"), setup);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while agent.get("/health").await.is_none() {
            agent.assert_running().await;
            assert!(tokio::time::Instant::now() < deadline, "sluice's HTTP server did not come up");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        agent
    }

    fn spawn(dir: tempfile::TempDir, setup: AgentSetup<'_>) -> Agent {
        let port = free_port();
        let pipelines = dir.path().join("pipelines");
        std::fs::create_dir_all(&pipelines).expect("pipelines dir");
        for (name, text) in setup.pipelines {
            std::fs::write(pipelines.join(name), text).expect("write pipeline");
        }
        let config = format!(
            "server:\n  http_listen_address: 127.0.0.1:{port}\n  shutdown_timeout: 5s\ndata_dir: data\npipelines_dir: pipelines\n{}",
            setup.body
        );
        std::fs::write(dir.path().join("sluice.yaml"), config).expect("write config");
        let mut child = Command::new(BINARY)
            .args(["run", "--config"])
            .arg(dir.path().join("sluice.yaml"))
            .args(["--log.level", "info"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start sluice");
        let stdin = child.stdin.take();
        Agent { child, http: format!("127.0.0.1:{port}"), dir, stdin }
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("sluice.yaml")
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// `GET path` on the agent's HTTP server: (status, body).
    pub async fn get(&self, path: &str) -> Option<(u16, String)> {
        http_request(&self.http, "GET", path).await
    }

    pub async fn post(&self, path: &str) -> Option<(u16, String)> {
        http_request(&self.http, "POST", path).await
    }

    /// Waits until `/ready` answers 200.
    pub async fn wait_ready(&mut self, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some((200, _)) = self.get("/ready").await {
                return;
            }
            self.assert_running().await;
            assert!(tokio::time::Instant::now() < deadline, "sluice not ready after {timeout:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            let err = self.stderr().await;
            panic!("sluice exited with {status}:\n{err}");
        }
    }

    /// Writes lines to the agent's standard input.
    pub async fn write_lines(&mut self, lines: impl IntoIterator<Item = String>) {
        let stdin = self.stdin.as_mut().expect("stdin still open");
        let mut buf = Vec::with_capacity(1 << 20);
        for line in lines {
            buf.extend_from_slice(line.as_bytes());
            buf.push(b'\n');
            if buf.len() >= 1 << 20 {
                stdin.write_all(&buf).await.expect("write to sluice");
                buf.clear();
            }
        }
        stdin.write_all(&buf).await.expect("write to sluice");
        stdin.flush().await.expect("flush");
    }

    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    pub async fn metrics(&self) -> Metrics {
        let (status, body) = self.get("/metrics").await.expect("metrics answer");
        assert_eq!(status, 200);
        Metrics(body)
    }

    /// Waits until `metric` (summed over matching series) reaches `want`.
    pub async fn wait_metric(&self, name: &str, labels: &[(&str, &str)], want: f64, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let got = self.metrics().await.sum(name, labels);
            if got >= want {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "{name}{labels:?} is {got}, waited for {want}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }

    /// The agent's resident memory now, in KiB (0 once it is gone).
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    /// CPU time the agent used so far (user + system), in seconds (0 once it is gone).
    pub fn cpu_seconds(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap_or_default();
        // The fields after the command name (which is in parentheses); utime and stime are the
        // 14th and 15th of the line, in clock ticks of 1/100 s on Linux.
        let fields: Vec<&str> =
            stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
        let ticks: u64 = fields.iter().skip(11).take(2).filter_map(|f| f.parse::<u64>().ok()).sum();
        ticks as f64 / 100.0
    }

    pub fn signal(&self, signal: &str) {
        let status = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &self.pid().to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{signal} failed");
    }

    /// Sends SIGTERM and waits for the exit; returns (exit code, stderr).
    pub async fn stop(mut self) -> (Option<i32>, String) {
        self.stdin = None;
        self.signal("TERM");
        self.wait_exit(Duration::from_secs(20)).await
    }

    /// Waits for the exit; past `timeout`, kills sluice and panics with its metrics and log.
    pub async fn wait_exit(&mut self, timeout: Duration) -> (Option<i32>, String) {
        let Ok(status) = tokio::time::timeout(timeout, self.child.wait()).await else {
            let metrics = self.get("/metrics").await.map(|(_, body)| body).unwrap_or_default();
            let _ = self.child.start_kill();
            let _ = self.child.wait().await;
            let err = self.stderr().await;
            panic!("sluice did not exit within {timeout:?}\n--- metrics\n{metrics}\n--- log\n{err}");
        };
        let status = status.expect("wait");
        (status.code(), self.stderr().await)
    }

    /// Stops the agent with SIGTERM (asserting exit 0) and gives back its directory.
    pub async fn dir_after_stop(mut self) -> tempfile::TempDir {
        self.stdin = None;
        self.signal("TERM");
        let (code, stderr) = self.wait_exit(Duration::from_secs(20)).await;
        assert_eq!(code, Some(0), "{stderr}");
        self.dir
    }

    /// Kills the agent with SIGKILL and gives back its directory (positions survive).
    pub async fn kill(mut self) -> tempfile::TempDir {
        self.signal("KILL");
        let _ = self.child.wait().await;
        self.dir
    }

    /// The agent's log: its standard error, read to the end (call once it has exited).
    async fn stderr(&mut self) -> String {
        let mut err = String::new();
        if let Some(e) = self.child.stderr.as_mut() {
            let _ = e.read_to_string(&mut err).await;
        }
        err
    }

    pub async fn stdout(&mut self) -> String {
        let mut out = String::new();
        if let Some(o) = self.child.stdout.as_mut() {
            let _ = o.read_to_string(&mut out).await;
        }
        out
    }
}

/// A minimal HTTP/1.0 client for the agent's endpoints.
pub async fn http_request(addr: &str, method: &str, path: &str) -> Option<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let request = format!("{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Length: 0\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut response)).await.ok()?.ok()?;
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Some((status, body))
}

/// A `/metrics` page.
pub struct Metrics(pub String);

impl Metrics {
    /// Sum of the samples of `name` whose labels include `labels`.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples(name)
            .filter(|(l, _)| labels.iter().all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v)))
            .map(|(_, v)| v)
            .sum()
    }

    pub fn samples<'a>(&'a self, name: &'a str) -> impl Iterator<Item = (BTreeMap<String, String>, f64)> + 'a {
        self.0.lines().filter(|l| !l.starts_with('#')).filter_map(move |line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, labels) = match series.split_once('{') {
                Some((m, rest)) => (m, rest.strip_suffix('}')?),
                None => (series, ""),
            };
            if metric != name {
                return None;
            }
            let labels = super::loki::parse_labels(&format!("{{{labels}}}")).ok()?;
            Some((labels, value.parse().ok()?))
        })
    }
}

/// Runs `sluice` with arguments to completion: (exit code, stdout, stderr).
pub fn run_cli(args: &[&str], cwd: &Path) -> (i32, String, String) {
    let out = std::process::Command::new(BINARY).args(args).current_dir(cwd).output().expect("run sluice");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
