//! A test exporter: serves an exposition on `GET /metrics` over HTTP, changeable while it
//! runs, stoppable (connections refused) and restartable on the same port. [`gpu_exposition`]
//! writes what the NVIDIA GPU exporter (nvidia_gpu_exporter, port 9835) serves: `nvidia_smi_*`
//! metrics per GPU `uuid` with HELP and TYPE lines, the `nvidia_smi_gpu_info` identity metric,
//! per-process metrics whose labels need escaping, and the exporter's own counters.

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::task::{JoinHandle, JoinSet};

pub const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// One GPU of the exposition.
#[derive(Debug, Clone, PartialEq)]
pub struct Gpu {
    pub uuid: String,
    pub index: u32,
    pub name: String,
    pub utilization: f64,
    pub memory_used: f64,
    pub memory_total: f64,
    pub temperature: f64,
    /// Rendered as written (`631.95`, `NaN`).
    pub power_draw: String,
    /// Processes on the GPU: (pid, process name, used memory in bytes).
    pub processes: Vec<(u32, String, f64)>,
}

/// Four H100s with different loads; GPU 2 has a name and process names that need escaping.
pub fn gpus() -> Vec<Gpu> {
    (0..4)
        .map(|i| Gpu {
            uuid: format!("GPU-{i}a1b2c3d-0000-4000-8000-00000000000{i}"),
            index: i,
            name: if i == 2 { "NVIDIA \"H100\" 80GB\\HBM3".into() } else { "NVIDIA H100 80GB HBM3".into() },
            utilization: [1.0, 0.93, 0.11, 0.0][i as usize],
            memory_used: [2.0780679168e10, 7.9e10, 1.2e9, 0.0][i as usize],
            memory_total: 8.5520809984e10,
            temperature: [59.0, 87.0, 41.0, 33.0][i as usize],
            power_draw: ["631.95", "690.5", "120.25", "69.1"][i as usize].into(),
            processes: if i == 2 {
                vec![
                    (11327, "C:\\tools\\mem\"hog\".exe".into(), 2.690646016e9),
                    (11345, "./gpu_burn\nsecond line".into(), 1.645215744e10),
                ]
            } else {
                vec![(20000 + i, "/usr/bin/python3".into(), 1.0e9)]
            },
        })
        .collect()
}

/// Escapes a label value as exporters do (`\\`, `\"`, `\n`).
pub fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// The text-format exposition of `gpus`, as nvidia_gpu_exporter writes it.
pub fn gpu_exposition(gpus: &[Gpu]) -> String {
    let mut out = String::new();
    let mut family = |name: &str, help: &str, typ: &str, rows: Vec<(String, String)>| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {typ}");
        for (labels, value) in rows {
            if labels.is_empty() {
                let _ = writeln!(out, "{name} {value}");
            } else {
                let _ = writeln!(out, "{name}{{{labels}}} {value}");
            }
        }
    };
    let per_gpu = |f: &dyn Fn(&Gpu) -> String| -> Vec<(String, String)> {
        gpus.iter().map(|g| (format!("uuid=\"{}\"", g.uuid), f(g))).collect()
    };
    family(
        "nvidia_smi_gpu_info",
        "A metric with a constant '1' value labeled by gpu uuid, name, driver_model_current, driver_model_pending, vbios_version, driver_version, pci_bus_id, serial, compute_cap, index, cuda_version.",
        "gauge",
        gpus.iter()
            .map(|g| {
                (
                    format!(
                        "compute_cap=\"9.0\",cuda_version=\"13.1\",driver_model_current=\"[N/A]\",driver_version=\"590.48.01\",index=\"{}\",name=\"{}\",pci_bus_id=\"00000000:00:0{}.0\",uuid=\"{}\",vbios_version=\"96.00.A5.00.01\"",
                        g.index,
                        escape(&g.name),
                        g.index + 7,
                        g.uuid
                    ),
                    "1".to_string(),
                )
            })
            .collect(),
    );
    family(
        "nvidia_smi_compute_app_info",
        "A metric with a constant '1' value labeled by the identity of a process with a compute context on a GPU.",
        "gauge",
        gpus.iter()
            .flat_map(|g| {
                g.processes.iter().map(|(pid, name, _)| {
                    (format!("pid=\"{pid}\",process_name=\"{}\",uuid=\"{}\"", escape(name), g.uuid), "1".to_string())
                })
            })
            .collect(),
    );
    family(
        "nvidia_smi_compute_app_used_memory_bytes",
        "GPU memory used by the process. Absent when the driver cannot report it (e.g. Windows WDDM).",
        "gauge",
        gpus.iter()
            .flat_map(|g| {
                g.processes.iter().map(|(pid, name, used)| {
                    (
                        format!("pid=\"{pid}\",process_name=\"{}\",uuid=\"{}\"", escape(name), g.uuid),
                        format!("{used:e}"),
                    )
                })
            })
            .collect(),
    );
    family(
        "nvidia_smi_failed_scrapes_total",
        "Number of failed collections",
        "counter",
        vec![(String::new(), "0".into())],
    );
    family(
        "nvidia_smi_memory_free_bytes",
        "memory.free [MiB]",
        "gauge",
        per_gpu(&|g| format!("{:e}", g.memory_total - g.memory_used)),
    );
    family(
        "nvidia_smi_memory_total_bytes",
        "memory.total [MiB]",
        "gauge",
        per_gpu(&|g| format!("{:e}", g.memory_total)),
    );
    family("nvidia_smi_memory_used_bytes", "memory.used [MiB]", "gauge", per_gpu(&|g| format!("{:e}", g.memory_used)));
    family("nvidia_smi_power_draw_watts", "power.draw [W]", "gauge", per_gpu(&|g| g.power_draw.clone()));
    family("nvidia_smi_temperature_gpu", "temperature.gpu", "gauge", per_gpu(&|g| g.temperature.to_string()));
    family("nvidia_smi_utilization_gpu_ratio", "utilization.gpu [%]", "gauge", per_gpu(&|g| g.utilization.to_string()));
    out
}

#[derive(Debug, Clone)]
struct Answer {
    content_type: String,
    body: String,
}

/// A running (or stopped) exporter.
pub struct Exporter {
    pub addr: SocketAddr,
    answer: Arc<Mutex<Answer>>,
    requests: Arc<Mutex<Vec<String>>>,
    server: Option<JoinHandle<()>>,
}

impl Exporter {
    /// Serves `body` (text format) on a free port of 127.0.0.1.
    pub async fn start(body: String) -> Exporter {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind exporter");
        let addr = listener.local_addr().expect("address");
        let mut exporter = Exporter {
            addr,
            answer: Arc::new(Mutex::new(Answer { content_type: TEXT_FORMAT.into(), body })),
            requests: Arc::default(),
            server: None,
        };
        exporter.serve(listener);
        exporter
    }

    fn serve(&mut self, listener: tokio::net::TcpListener) {
        let answer = Arc::clone(&self.answer);
        let requests = Arc::clone(&self.requests);
        self.server = Some(tokio::spawn(async move {
            // Aborting this task drops the set, which aborts every connection: the exporter is gone.
            let mut connections = JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                let answer = Arc::clone(&answer);
                let requests = Arc::clone(&requests);
                connections.spawn(async move {
                    let service = service_fn(move |request: http::Request<hyper::body::Incoming>| {
                        let answer = answer.lock().clone();
                        let accept = request.headers().get("accept").and_then(|v| v.to_str().ok()).unwrap_or("");
                        requests.lock().push(format!("{} {} accept={accept}", request.method(), request.uri()));
                        async move {
                            let response = if request.uri().path() == "/metrics" {
                                http::Response::builder()
                                    .header("content-type", answer.content_type)
                                    .body(Full::new(Bytes::from(answer.body)))
                            } else {
                                http::Response::builder().status(404).body(Full::new(Bytes::new()))
                            };
                            Ok::<_, std::convert::Infallible>(response.expect("response"))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
                while connections.try_join_next().is_some() {}
            }
        }));
    }

    /// The target address (`127.0.0.1:port`).
    pub fn target(&self) -> String {
        self.addr.to_string()
    }

    pub fn set_body(&self, body: String) {
        self.answer.lock().body = body;
    }

    /// Requests served so far: `GET /metrics accept=...`.
    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().clone()
    }

    /// Stops listening and closes every connection: scrapes are refused.
    pub async fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
            let _ = server.await;
        }
    }

    /// Listens again on the same port.
    pub async fn restart(&mut self) {
        self.stop().await;
        let listener = tokio::net::TcpListener::bind(self.addr).await.expect("bind the exporter's port again");
        self.serve(listener);
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}
