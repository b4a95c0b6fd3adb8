//! The sink against an in-process receiver that decodes and checks requests like Prometheus'
//! remote write handler: batching by count and time, shards keeping each series in order,
//! retries of 429/5xx with Retry-After, counted drops of other 4xx, acknowledgements.

use super::*;
use crate::config::common::WhenFull;
use crate::config::parse_yaml_expanded;
use crate::event::samples::Series;
use crate::event::{AckStatus, AckToken};
use crate::proto::remote_write as pb;
use crate::telemetry::metrics::SinkMetrics;
use crate::topology::queue::SinkQueue;
use http_body_util::BodyExt;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use prometheus_client::metrics::gauge::Gauge;
use prost::Message;
use std::path::Path;

#[derive(Default)]
struct ReceiverState {
    /// Status (and Retry-After) for the next requests; then 204.
    script: VecDeque<(u16, Option<u64>)>,
    /// Accepted requests, decoded.
    accepted: Vec<pb::WriteRequest>,
    answered: Vec<u16>,
    bad_headers: Vec<String>,
    answer_times: Vec<Instant>,
}

struct Receiver {
    url: String,
    state: Arc<Mutex<ReceiverState>>,
}

impl Receiver {
    async fn start() -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(ReceiverState::default()));
        let shared = Arc::clone(&state);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let state = Arc::clone(&shared);
                tokio::spawn(async move {
                    let service = service_fn(move |request: http::Request<hyper::body::Incoming>| {
                        let state = Arc::clone(&state);
                        async move {
                            let header = |n: &str| {
                                request.headers().get(n).and_then(|v| v.to_str().ok()).unwrap_or("").to_string()
                            };
                            let mut bad = Vec::new();
                            for (name, want) in [
                                ("content-encoding", "snappy"),
                                ("content-type", "application/x-protobuf"),
                                ("x-prometheus-remote-write-version", "0.1.0"),
                            ] {
                                if header(name) != want {
                                    bad.push(format!("{name}: {:?}", header(name)));
                                }
                            }
                            if !header("user-agent").starts_with("sluice/") {
                                bad.push("user-agent".into());
                            }
                            let body = request.into_body().collect().await.unwrap().to_bytes();
                            let decoded = snap::raw::Decoder::new()
                                .decompress_vec(&body)
                                .ok()
                                .and_then(|raw| pb::WriteRequest::decode(&raw[..]).ok());
                            let mut s = state.lock();
                            s.bad_headers.extend(bad);
                            s.answer_times.push(Instant::now());
                            let (status, retry_after) = s.script.pop_front().unwrap_or((204, None));
                            s.answered.push(status);
                            if status == 204 {
                                match decoded {
                                    Some(d) => s.accepted.push(d),
                                    None => s.bad_headers.push("undecodable body".into()),
                                }
                            }
                            let mut response = http::Response::builder().status(status);
                            if let Some(secs) = retry_after {
                                response = response.header("retry-after", secs.to_string());
                            }
                            Ok::<_, std::convert::Infallible>(
                                response.body(Full::new(Bytes::from_static(b"out of order sample"))).unwrap(),
                            )
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Receiver { url: format!("http://{addr}/api/v1/write"), state }
    }

    /// Every accepted sample: (labels as text, timestamp, value).
    fn samples(&self) -> Vec<(String, i64, f64)> {
        let state = self.state.lock();
        let mut out = Vec::new();
        for request in &state.accepted {
            for ts in &request.timeseries {
                let labels: Vec<String> = ts.labels.iter().map(|l| format!("{}={}", l.name, l.value)).collect();
                for s in &ts.samples {
                    out.push((labels.join(","), s.timestamp, s.value));
                }
            }
        }
        out
    }

    async fn wait_for(&self, n: usize) -> Vec<(String, i64, f64)> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let samples = self.samples();
            if samples.len() >= n || Instant::now() > deadline {
                return samples;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

struct Harness {
    queue: SinkQueue<SampleBatch>,
    metrics: SinkMetrics,
    queue_bytes: Gauge,
    task: tokio::task::JoinHandle<()>,
}

fn start(url: &str, extra: &str) -> Harness {
    let config: RemoteWriteConfig = parse_yaml_expanded(
        Path::new("rw.yaml"),
        &if extra.contains("backoff") {
            format!("url: {url}\n{extra}")
        } else {
            format!("url: {url}\nbackoff: {{min_period: 10ms, max_period: 50ms}}\n{extra}")
        },
    )
    .unwrap();
    assert!(config.validate().is_empty(), "{:?}", config.validate());
    let metrics = SinkMetrics::default();
    let handles = SinkHandles::new(&metrics, "rw");
    let sink = RemoteWriteSink::build(&config, handles.clone()).unwrap();
    let queue_bytes = handles.queue_bytes.clone();
    let (queue, rx) =
        SinkQueue::new("rw", 1 << 20, WhenFull::Block, queue_bytes.clone(), Gauge::default(), Counter::default());
    let task = tokio::spawn(sink.run(rx));
    Harness { queue, metrics, queue_bytes, task }
}

fn series(name: &str, i: usize) -> Arc<Series> {
    Arc::new(Series::new([("__name__", name), ("job", "gpu"), ("gpu", &i.to_string())]).unwrap())
}

fn batch(series: &[Arc<Series>], ts: i64, value: f64) -> SampleBatch {
    SampleBatch::new(series.iter().map(|s| Sample { series: Arc::clone(s), timestamp_ms: ts, value }).collect())
}

fn get(
    family: &prometheus_client::metrics::family::Family<crate::telemetry::metrics::SinkResult, Counter>,
    result: &str,
) -> u64 {
    family.get_or_create(&crate::telemetry::metrics::SinkResult { sink: "rw".into(), result: result.into() }).get()
}

fn dropped(m: &SinkMetrics, reason: &str) -> u64 {
    m.dropped.get_or_create(&crate::telemetry::metrics::SinkReason { sink: "rw".into(), reason: reason.into() }).get()
}

fn label(sink: &str) -> crate::telemetry::metrics::SinkLabel {
    crate::telemetry::metrics::SinkLabel { sink: sink.into() }
}

#[tokio::test]
async fn delivers_every_sample_in_order_per_series_with_external_labels() {
    let receiver = Receiver::start().await;
    let h = start(
        &receiver.url,
        "shards: 3\nmax_samples_per_send: 7\nbatch_send_deadline: 50ms\nexternal_labels: {cluster: prod, node: gpu-1}\n",
    );
    let all: Vec<Arc<Series>> = (0..10).map(|i| series("nvidia_smi_temperature_gpu", i)).collect();
    for round in 0..20 {
        h.queue.send(batch(&all, 1_000 + round, round as f64)).await.unwrap();
    }
    let got = receiver.wait_for(200).await;
    assert_eq!(got.len(), 200);
    let mut per_series: HashMap<String, Vec<i64>> = HashMap::new();
    for (labels, ts, value) in &got {
        assert_eq!(*value, (*ts - 1_000) as f64);
        per_series.entry(labels.clone()).or_default().push(*ts);
    }
    assert_eq!(per_series.len(), 10);
    for (labels, times) in &per_series {
        assert_eq!(*times, (1_000..1_020).collect::<Vec<_>>(), "{labels} in order, each once");
        assert!(labels.starts_with("__name__=nvidia_smi_temperature_gpu,cluster=prod,gpu="), "{labels}");
        assert!(labels.ends_with(",job=gpu,node=gpu-1"), "{labels}");
    }
    {
        let state = receiver.state.lock();
        assert!(state.bad_headers.is_empty(), "{:?}", state.bad_headers);
        assert!(state.accepted.iter().all(|r| r.timeseries.len() <= 7), "max_samples_per_send");
    }
    assert_eq!(h.metrics.lines_sent.get_or_create(&label("rw")).get(), 200);
    let pending = |h: &Harness| h.metrics.active_streams.get_or_create(&label("rw")).get();
    let deadline = Instant::now() + Duration::from_secs(5);
    while (h.queue_bytes.get() != 0 || pending(&h) != 0) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(h.queue_bytes.get(), 0, "every permit released after delivery");
    assert_eq!(pending(&h), 0, "nothing pending");
    drop(h.queue);
    tokio::time::timeout(Duration::from_secs(5), h.task).await.unwrap().unwrap();
}

#[tokio::test]
async fn a_partial_batch_leaves_after_the_deadline() {
    let receiver = Receiver::start().await;
    let h = start(&receiver.url, "shards: 1\nmax_samples_per_send: 1000\nbatch_send_deadline: 200ms\n");
    let sent = Instant::now();
    h.queue.send(batch(&[series("up", 0)], 5, 1.0)).await.unwrap();
    assert_eq!(receiver.wait_for(1).await.len(), 1);
    let waited = receiver.state.lock().answer_times[0] - sent;
    assert!(waited >= Duration::from_millis(190) && waited < Duration::from_secs(2), "{waited:?}");
}

#[tokio::test]
async fn retries_429_and_5xx_honouring_retry_after_and_drops_other_4xx() {
    let receiver = Receiver::start().await;
    receiver.state.lock().script = VecDeque::from([(429, Some(1)), (500, None), (503, None)]);
    let h = start(
        &receiver.url,
        "shards: 1\nmax_samples_per_send: 4\nbatch_send_deadline: 20ms\nbackoff: {min_period: 10ms, max_period: 2s}\n",
    );
    let (token, status) = {
        let (tx, rx) = std::sync::mpsc::channel();
        (AckToken::new(move |s| tx.send(s).unwrap()), rx)
    };
    let mut first = batch(&[series("a", 0), series("a", 1)], 10, 1.0);
    first.acks = AckSet::one(token);
    let started = Instant::now();
    h.queue.send(first).await.unwrap();
    assert_eq!(receiver.wait_for(2).await.len(), 2);
    assert!(started.elapsed() >= Duration::from_millis(950), "Retry-After: 1 was honoured");
    assert_eq!(status.recv_timeout(Duration::from_secs(5)).unwrap(), AckStatus::Settled);
    assert_eq!(get(&h.metrics.requests, "retry"), 3);
    assert_eq!(h.metrics.retries.get_or_create(&label("rw")).get(), 3);
    // A 400 (Prometheus: out of order, duplicate) is dropped, counted, and never retried.
    receiver.state.lock().script = VecDeque::from([(400, None)]);
    h.queue.send(batch(&[series("b", 0), series("b", 1), series("b", 2)], 20, 1.0)).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while dropped(&h.metrics, "rejected_400") == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(dropped(&h.metrics, "rejected_400"), 3);
    h.queue.send(batch(&[series("c", 0)], 30, 1.0)).await.unwrap();
    let got = receiver.wait_for(3).await;
    assert_eq!(got.len(), 3);
    assert_eq!(receiver.state.lock().answered, [429, 500, 503, 204, 400, 204]);
    assert_eq!(get(&h.metrics.requests, "rejected"), 1);
    assert_eq!(get(&h.metrics.requests, "success"), 2);
}

#[tokio::test]
async fn max_retries_drops_counted() {
    let receiver = Receiver::start().await;
    receiver.state.lock().script = VecDeque::from([(500, None), (500, None), (500, None)]);
    let h = start(
        &receiver.url,
        "shards: 1\nbatch_send_deadline: 10ms\nbackoff: {min_period: 5ms, max_period: 10ms, max_retries: 2}\n",
    );
    h.queue.send(batch(&[series("a", 0)], 1, 1.0)).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while dropped(&h.metrics, "max_retries") == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(dropped(&h.metrics, "max_retries"), 1);
    assert_eq!(receiver.state.lock().answered, [500, 500, 500]);
}

#[tokio::test]
async fn closing_the_queue_flushes_what_is_held() {
    let receiver = Receiver::start().await;
    let h = start(&receiver.url, "shards: 2\nmax_samples_per_send: 1000\nbatch_send_deadline: 1h\n");
    let all: Vec<Arc<Series>> = (0..5).map(|i| series("m", i)).collect();
    h.queue.send(batch(&all, 7, 2.0)).await.unwrap();
    drop(h.queue);
    tokio::time::timeout(Duration::from_secs(5), h.task).await.unwrap().unwrap();
    assert_eq!(receiver.samples().len(), 5, "delivered at shutdown, not after the deadline");
}
