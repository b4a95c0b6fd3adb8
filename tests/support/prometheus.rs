//! A real Prometheus (Debian's `prometheus` package, 2.42) for the tests: started on
//! 127.0.0.1 with a temporary TSDB directory and `--web.enable-remote-write-receiver`, queried
//! through its HTTP API, stoppable and restartable on the same port and data. The process is
//! killed when the handle drops, also when a test fails.

use super::agent::{free_port, http_request};
use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::process::{Child, Command};

pub const BINARY: &str = "/usr/bin/prometheus";

pub struct Prometheus {
    child: Option<Child>,
    pub port: u16,
    pub dir: tempfile::TempDir,
}

/// One series of a query result.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub labels: BTreeMap<String, String>,
    /// As Prometheus renders it (`"59"`, `"NaN"`).
    pub value: String,
}

impl Series {
    pub fn number(&self) -> f64 {
        self.value.parse().unwrap_or(f64::NAN)
    }
}

/// `%`-encodes a query string value.
pub fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

impl Prometheus {
    /// Starts Prometheus and waits until it is ready.
    pub async fn start() -> Prometheus {
        assert!(std::path::Path::new(BINARY).exists(), "{BINARY} is missing: install Debian's `prometheus` package");
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("prometheus.yml"), "global:\n  scrape_interval: 1h\n").expect("config");
        let mut p = Prometheus { child: None, port: free_port(), dir };
        p.spawn().await;
        p
    }

    async fn spawn(&mut self) {
        let child = Command::new(BINARY)
            .arg(format!("--config.file={}", self.dir.path().join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", self.dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{}", self.port))
            .arg("--web.enable-remote-write-receiver")
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start prometheus");
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Some((200, _)) = http_request(&self.address(), "GET", "/-/ready").await {
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                let mut err = String::new();
                if let Some(e) = self.child.as_mut().and_then(|c| c.stderr.as_mut()) {
                    let _ = e.read_to_string(&mut err).await;
                }
                panic!("prometheus exited with {status}:\n{err}");
            }
            assert!(tokio::time::Instant::now() < deadline, "prometheus not ready after 60s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn write_url(&self) -> String {
        format!("http://{}/api/v1/write", self.address())
    }

    /// Stops Prometheus with SIGTERM (it flushes its head) and waits for the exit.
    pub async fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        if let Some(pid) = child.id() {
            let _ = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status();
        }
        match tokio::time::timeout(Duration::from_secs(30), child.wait()).await {
            Ok(status) => {
                status.expect("wait for prometheus");
            }
            Err(_) => {
                let _ = child.kill().await;
                panic!("prometheus did not stop within 30s of SIGTERM");
            }
        }
    }

    /// Starts it again on the same port, with the same data.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.spawn().await;
    }

    /// An instant query, evaluated at `time` (Unix seconds) or now.
    pub async fn query_at(&self, promql: &str, time: Option<f64>) -> Vec<Series> {
        let mut path = format!("/api/v1/query?query={}", urlencode(promql));
        if let Some(t) = time {
            path.push_str(&format!("&time={t:.3}"));
        }
        let (status, body) = http_request(&self.address(), "GET", &path).await.expect("prometheus answers");
        assert_eq!(status, 200, "query `{promql}`: {body}");
        let json: serde_json::Value = serde_json::from_str(&body).expect("query answer is JSON");
        let result = json["data"]["result"].as_array().cloned().unwrap_or_default();
        result
            .iter()
            .map(|r| Series {
                labels: r["metric"]
                    .as_object()
                    .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string())).collect())
                    .unwrap_or_default(),
                value: r["value"][1].as_str().unwrap_or("").to_string(),
            })
            .collect()
    }

    pub async fn query(&self, promql: &str) -> Vec<Series> {
        self.query_at(promql, None).await
    }

    /// Polls `promql` until `done` holds for its result; returns that result.
    pub async fn wait_for(
        &self,
        promql: &str,
        timeout: Duration,
        what: &str,
        done: impl Fn(&[Series]) -> bool,
    ) -> Vec<Series> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let result = self.query(promql).await;
            if done(&result) {
                return result;
            }
            assert!(tokio::time::Instant::now() < deadline, "waited {timeout:?} for {what}: `{promql}` is {result:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until `promql` has exactly one series, whose value is `value`.
    pub async fn wait_value(&self, promql: &str, value: &str, timeout: Duration) -> Series {
        let result = self
            .wait_for(promql, timeout, &format!("the value {value}"), |r| r.len() == 1 && r[0].value == value)
            .await;
        result[0].clone()
    }

    /// Waits until `promql` has no series (absent, or marked stale).
    pub async fn wait_empty(&self, promql: &str, timeout: Duration) {
        self.wait_for(promql, timeout, "no series", |r| r.is_empty()).await;
    }
}
