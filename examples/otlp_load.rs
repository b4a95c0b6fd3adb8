//! Load generator for sluice's OTLP/gRPC receiver: many concurrent gRPC clients send typical
//! 10-span requests (pre-encoded, distinct ids) for a while; sluice exports them to a null OTLP
//! receiver that this program also runs. Prints spans/s accepted and exported, and sluice's CPU
//! seconds (user + system, from /proc/<pid>/stat) per million spans.
//!
//! ```text
//! cargo build --release --bin sluice --example otlp_load
//! target/release/examples/otlp_load --clients 64 --seconds 20
//! ```
//! Without `--pid`, it starts `sluice` (the binary next to this example's folder, or `--sluice
//! PATH`) with a config of its own: an `otlp` source on `--target`, an `otlp` sink to the null
//! receiver. With `--pid` it measures a sluice already running (whose sink is then yours).

use bytes::{Buf, BufMut, Bytes};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use prost::Message;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

const EXPORT: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

struct Args {
    target: String,
    clients: usize,
    seconds: u64,
    pid: Option<u32>,
    sluice: Option<String>,
    sink_port: u16,
    /// Spans per request: 10 is the issue's typical request; SDK batch processors send up to 512.
    spans: u64,
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        target: "127.0.0.1:14317".into(),
        clients: 64,
        seconds: 20,
        pid: None,
        sluice: None,
        sink_port: 14319,
        spans: 10,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--target" => a.target = value()?,
            "--clients" => a.clients = value()?.parse().map_err(|e| format!("--clients: {e}"))?,
            "--seconds" => a.seconds = value()?.parse().map_err(|e| format!("--seconds: {e}"))?,
            "--pid" => a.pid = Some(value()?.parse().map_err(|e| format!("--pid: {e}"))?),
            "--sluice" => a.sluice = Some(value()?),
            "--sink-port" => a.sink_port = value()?.parse().map_err(|e| format!("--sink-port: {e}"))?,
            "--spans" => a.spans = value()?.parse().map_err(|e| format!("--spans: {e}"))?,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(a)
}

// ---- raw codecs: requests and answers as bytes -------------------------------------------------

#[derive(Clone, Copy, Default)]
struct RawCodec;
struct RawEncoder;
struct RawDecoder;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

impl Encoder for RawEncoder {
    type Item = Bytes;
    type Error = tonic::Status;
    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawDecoder {
    type Item = Bytes;
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, tonic::Status> {
        let len = src.remaining();
        Ok(Some(src.copy_to_bytes(len)))
    }
}

// ---- requests ----------------------------------------------------------------------------------

fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue { key: key.into(), value: Some(AnyValue { value: Some(value) }), key_strindex: 0 }
}

fn s(v: &str) -> any_value::Value {
    any_value::Value::StringValue(v.into())
}

/// A typical request of `spans` spans: server spans with client and internal children.
fn request(n: u64, spans: u64) -> Bytes {
    let trace_id = (u128::from(n) * 0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835 + 1).to_be_bytes().to_vec();
    let spans = (0..spans)
        .map(|i| {
            let start = 1_764_000_000_000_000_000 + n * 1_000_000 + i * 1000;
            Span {
                trace_id: trace_id.clone(),
                span_id: (n * 1024 + i + 1).to_be_bytes().to_vec(),
                parent_span_id: if i % 10 == 0 { vec![] } else { (n * 1024 + i / 10 * 10 + 1).to_be_bytes().to_vec() },
                name: ["POST /v1/chat/completions", "GET qdrant", "SELECT memories", "render"][i as usize % 4].into(),
                kind: if i % 10 == 0 { 2 } else { 3 },
                start_time_unix_nano: start,
                end_time_unix_nano: start + 1_000_000 + i * 250_000,
                attributes: vec![
                    kv("http.request.method", s("POST")),
                    kv("url.path", s("/v1/chat/completions")),
                    kv("http.response.status_code", any_value::Value::IntValue(200)),
                    kv("server.address", s("gateway.platform.svc.cluster.local")),
                    kv("server.port", any_value::Value::IntValue(8080)),
                    kv("network.protocol.version", s("1.1")),
                    kv("user_agent.original", s("python-requests/2.32.3")),
                    kv("model", s("llama-3.1-8b-instruct")),
                    kv("tokens.input", any_value::Value::IntValue(512 + i as i64)),
                    kv("user_id", s("u-42")),
                ],
                status: Some(Status { message: String::new(), code: if i == 7 { 2 } else { 0 } }),
                ..Default::default()
            }
        })
        .collect();
    let service = ["gateway", "router", "model-server", "tool-server", "memory-engine"][n as usize % 5];
    let request = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    kv("service.name", s(service)),
                    kv("service.version", s("2.4.1")),
                    kv("telemetry.sdk.language", s("python")),
                    kv("telemetry.sdk.name", s("opentelemetry")),
                    kv("k8s.namespace.name", s("platform")),
                    kv("host.name", s("node-3")),
                ],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "opentelemetry.instrumentation.fastapi".into(),
                    ..Default::default()
                }),
                spans,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    };
    Bytes::from(request.encode_to_vec())
}

// ---- the null receiver -------------------------------------------------------------------------

/// Spans in an encoded request, counted by walking its fields (no decoding).
fn count_spans(body: &[u8]) -> u64 {
    fn each(buf: &[u8], field: u64, mut f: impl FnMut(&[u8])) {
        let mut pos = 0;
        let varint = |pos: &mut usize| -> Option<u64> {
            let mut v = 0u64;
            for i in 0..10 {
                let b = *buf.get(*pos)?;
                *pos += 1;
                v |= u64::from(b & 0x7f) << (7 * i);
                if b < 0x80 {
                    return Some(v);
                }
            }
            None
        };
        while pos < buf.len() {
            let Some(key) = varint(&mut pos) else { return };
            match key & 7 {
                0 => {
                    if varint(&mut pos).is_none() {
                        return;
                    }
                }
                1 => pos += 8,
                5 => pos += 4,
                2 => {
                    let Some(len) = varint(&mut pos) else { return };
                    let end = pos + len as usize;
                    let Some(payload) = buf.get(pos..end) else { return };
                    if key >> 3 == field {
                        f(payload);
                    }
                    pos = end;
                }
                _ => return,
            }
        }
    }
    let mut n = 0;
    each(body, 1, |rs| each(rs, 2, |ss| each(ss, 2, |_| n += 1)));
    n
}

struct NullExport(Arc<AtomicU64>);

impl tonic::server::UnaryService<Bytes> for NullExport {
    type Response = Bytes;
    type Future = Pin<Box<dyn Future<Output = Result<tonic::Response<Bytes>, tonic::Status>> + Send>>;
    fn call(&mut self, request: tonic::Request<Bytes>) -> Self::Future {
        self.0.fetch_add(count_spans(request.get_ref()), Ordering::Relaxed);
        let answer = Bytes::from(ExportTraceServiceResponse::default().encode_to_vec());
        Box::pin(async move { Ok(tonic::Response::new(answer)) })
    }
}

async fn null_receiver(listener: tokio::net::TcpListener, exported: Arc<AtomicU64>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let exported = Arc::clone(&exported);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request: http::Request<hyper::body::Incoming>| {
                let exported = Arc::clone(&exported);
                async move {
                    let mut grpc = tonic::server::Grpc::new(RawCodec).max_decoding_message_size(64 << 20);
                    Ok::<_, std::convert::Infallible>(grpc.unary(NullExport(exported), request).await)
                }
            });
            let _ = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
    }
}

// ---- measuring -----------------------------------------------------------------------------------

/// User + system CPU seconds of a process.
fn cpu_seconds(pid: u32) -> Result<f64, String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).map_err(|e| format!("/proc/{pid}/stat: {e}"))?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).ok_or("unexpected /proc stat format")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).ok_or("unexpected /proc stat format");
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the name.
    let hz = 100.0; // USER_HZ on Linux
    Ok((ticks(11)? + ticks(12)?) / hz)
}

fn sluice_binary(explicit: Option<String>) -> Result<String, String> {
    if let Some(path) = explicit {
        return Ok(path);
    }
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let dir = exe.parent().and_then(|d| d.parent()).ok_or("cannot find the target folder")?;
    Ok(dir.join("sluice").display().to_string())
}

#[tokio::main]
async fn main() -> Result<(), String> {
    let args = args()?;
    let exported = Arc::new(AtomicU64::new(0));
    let mut child = None;
    let pid = match args.pid {
        Some(pid) => pid,
        None => {
            let listener =
                tokio::net::TcpListener::bind(("127.0.0.1", args.sink_port)).await.map_err(|e| e.to_string())?;
            tokio::spawn(null_receiver(listener, Arc::clone(&exported)));
            let dir = std::env::temp_dir().join(format!("otlp_load_{}", std::process::id()));
            std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
            let config = format!(
                "server:\n  http_listen_address: 127.0.0.1:0\ndata_dir: data\nsources:\n  otlp:\n    type: otlp\n    grpc_listen_address: {}\n    http_listen_address: null\nsinks:\n  jaeger:\n    type: otlp\n    endpoint: http://127.0.0.1:{}\n",
                args.target, args.sink_port
            );
            std::fs::write(dir.join("sluice.yaml"), config).map_err(|e| e.to_string())?;
            let binary = sluice_binary(args.sluice.clone())?;
            let c = tokio::process::Command::new(&binary)
                .args(["run", "--config"])
                .arg(dir.join("sluice.yaml"))
                .args(["--log.level", "warn"])
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| format!("cannot start {binary}: {e}"))?;
            let pid = c.id().ok_or("sluice exited at once")?;
            child = Some(c);
            pid
        }
    };
    // Wait for the receiver.
    let endpoint =
        tonic::transport::Endpoint::from_shared(format!("http://{}", args.target)).map_err(|e| e.to_string())?;
    let started = Instant::now();
    let channel = loop {
        match endpoint.connect().await {
            Ok(c) => break c,
            Err(e) if started.elapsed() > Duration::from_secs(20) => {
                return Err(format!("cannot reach {}: {e}", args.target));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    let per_request = args.spans;
    let bodies: Arc<Vec<Bytes>> = Arc::new((0..256).map(|n| request(n, per_request)).collect());
    println!(
        "{} clients, {}-span requests of {} bytes, {} s",
        args.clients,
        per_request,
        bodies[0].len(),
        args.seconds
    );

    let accepted = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    // Warm-up, then measure.
    let mut tasks = Vec::new();
    for c in 0..args.clients {
        // A few connections shared by the clients, as services behind a node agent would use.
        let channel =
            if c % 8 == 0 { endpoint.connect().await.unwrap_or_else(|_| channel.clone()) } else { channel.clone() };
        let (bodies, accepted, refused, stop) =
            (Arc::clone(&bodies), Arc::clone(&accepted), Arc::clone(&refused), Arc::clone(&stop));
        tasks.push(tokio::spawn(async move {
            let mut client = tonic::client::Grpc::new(channel);
            let path = http::uri::PathAndQuery::from_static(EXPORT);
            let mut n = c;
            while !stop.load(Ordering::Relaxed) {
                n = (n + 7) % bodies.len();
                if client.ready().await.is_err() {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
                match client.unary(tonic::Request::new(bodies[n].clone()), path.clone(), RawCodec).await {
                    Ok(_) => accepted.fetch_add(per_request, Ordering::Relaxed),
                    Err(_) => refused.fetch_add(per_request, Ordering::Relaxed),
                };
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (a0, e0, cpu0, t0) =
        (accepted.load(Ordering::Relaxed), exported.load(Ordering::Relaxed), cpu_seconds(pid)?, Instant::now());
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    let (a1, e1, cpu1, elapsed) = (
        accepted.load(Ordering::Relaxed),
        exported.load(Ordering::Relaxed),
        cpu_seconds(pid)?,
        t0.elapsed().as_secs_f64(),
    );
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let spans = (a1 - a0) as f64;
    let cpu = cpu1 - cpu0;
    println!("accepted: {:.0} spans/s", spans / elapsed);
    if args.pid.is_none() {
        println!("exported: {:.0} spans/s", (e1 - e0) as f64 / elapsed);
    }
    println!("refused:  {} spans (retryable answers)", refused.load(Ordering::Relaxed));
    println!("sluice CPU: {cpu:.2} s over {elapsed:.1} s = {:.2} cores", cpu / elapsed);
    println!(
        "sluice CPU per million spans: {:.3} s ({:.2} M spans per CPU-second)",
        cpu / spans * 1e6,
        spans / cpu / 1e6
    );
    if let Some(mut c) = child {
        let _ = c.kill().await;
    }
    Ok(())
}
