//! The per-line hot path of a Docker host, stage by stage and whole: a ~250-byte structured JSON
//! payload in Docker's json-file envelope → envelope parse → payload parse (simd-json) → labels
//! (interned) → stream lookup and append to a Loki batch → protobuf encoding → snappy.
//!
//! `cargo bench --bench end_to_end`; figures are per line (Throughput::Elements).

use bytes::Bytes;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use sluice::config::parse_yaml_expanded;
use sluice::event::{AckSet, LabelCache, LabelInterner, LabelLimits, LabelSet, LogBatch, LogEntry};
use sluice::formats::docker_json::parse_envelope_into;
use sluice::pipeline::{BuildContext, LoadedPipeline, PipelineSet, Runner, build_set};
use sluice::sinks::loki::batch::PendingBatch;
use sluice::sinks::loki::encode::{PushEncoder, StreamRef};
use sluice::telemetry::metrics::{LabelMetrics, PipelineMetrics};
use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;

const LINES: usize = 10_000;
const SERVICES: [&str; 8] = ["gateway", "auth", "billing", "search", "chat", "inventory", "notifier", "profile"];
const LEVELS: [&str; 4] = ["DEBUG", "INFO", "WARN", "ERROR"];
const PATHS: [&str; 4] = ["/api/v1/chat", "/api/v1/users/me", "/api/v2/orders", "/healthz"];

/// A small deterministic generator (xorshift), so that runs compare.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Docker json-file lines with structured payloads like the platform's services write.
fn docker_lines() -> Vec<Bytes> {
    let mut rng = Rng(0x5eed);
    let base = 1_764_000_000u64;
    (0..LINES)
        .map(|i| {
            let service = SERVICES[(rng.next() % 8) as usize];
            let level = LEVELS[(rng.next() % 4) as usize];
            let secs = base + i as u64 / 1000;
            let nanos = (i as u64 % 1000) * 1_000_000 + rng.next() % 1_000_000;
            let time = sluice::formats::time::format_rfc3339_nanos((secs * 1_000_000_000 + nanos) as i64);
            let payload = format!(
                r#"{{"timestamp":"{}","level":"{level}","service":"{service}","logger":"app.http","message":"request completed","trace_id":"{:016x}{:016x}","span_id":"{:016x}","method":"GET","path":"{}","status":200,"duration_ms":{}.{:03},"user_id":"u-{}"}}"#,
                &time[..23],
                rng.next(),
                rng.next(),
                rng.next(),
                PATHS[(rng.next() % 4) as usize],
                rng.next() % 200,
                rng.next() % 1000,
                rng.next() % 100_000
            );
            let stream = if level == "ERROR" || level == "WARN" { "stderr" } else { "stdout" };
            let line = serde_json::json!({"log": format!("{payload}\n"), "stream": stream, "time": time}).to_string();
            Bytes::from(line)
        })
        .collect()
}

const PIPELINE: &str = r#"
stages:
  - docker: {}
  - json:
      expressions: {level: level, service: service}
  - labels: {level: , service: }
"#;

fn pipelines(metrics: &PipelineMetrics) -> PipelineSet {
    let file = parse_yaml_expanded(Path::new("bench.yaml"), PIPELINE).expect("pipeline");
    build_set(&[LoadedPipeline { path: "bench.yaml".into(), file }], &BuildContext { metrics, previous: None })
        .expect("build")
}

fn runner() -> Runner {
    let metrics = LabelMetrics::default();
    Runner::new(LabelCache::new(LabelInterner::new(LabelLimits::default(), &metrics)))
}

/// Source labels: 4 containers × the stream and the payload's service and level → 32+ streams.
fn entries(lines: &[Bytes]) -> Vec<LogEntry> {
    let containers: Vec<LabelSet> = (0..4)
        .map(|c| LabelSet::from_pairs([("job", "docker".to_string()), ("container", format!("app-{c}"))]))
        .collect();
    lines.iter().enumerate().map(|(i, l)| LogEntry::new(0, l.clone(), containers[i % 4].clone())).collect()
}

fn bench(c: &mut Criterion) {
    let lines = docker_lines();
    let bytes: usize = lines.iter().map(Bytes::len).sum();
    println!("{} lines, {:.0} bytes per line on average", lines.len(), bytes as f64 / lines.len() as f64);
    let mut group = c.benchmark_group("log_path");
    group.throughput(Throughput::Elements(LINES as u64));

    group.bench_function("envelope", |b| {
        let mut out = Vec::with_capacity(1024);
        b.iter(|| {
            for line in &lines {
                out.clear();
                black_box(parse_envelope_into(line, &mut out).expect("envelope"));
            }
        })
    });

    let metrics = PipelineMetrics::default();
    let set = pipelines(&metrics);
    let source: Arc<str> = Arc::from("docker");
    group.bench_function("pipeline", |b| {
        let mut runner = runner();
        b.iter_batched(
            || LogBatch::new(entries(&lines), AckSet::new()),
            |mut batch| black_box(runner.run_batch(&set, &source, &mut batch, false).entries.len()),
            BatchSize::LargeInput,
        )
    });

    let processed =
        runner().run_batch(&set, &source, &mut LogBatch::new(entries(&lines), AckSet::new()), false).entries;
    group.bench_function("batch_encode_snappy", |b| {
        let mut encoder = PushEncoder::default();
        b.iter_batched(|| processed.clone(), |entries| black_box(encode(entries, &mut encoder)), BatchSize::LargeInput)
    });

    group.bench_function("full", |b| {
        let mut runner = runner();
        let mut encoder = PushEncoder::default();
        b.iter_batched(
            || LogBatch::new(entries(&lines), AckSet::new()),
            |mut batch| {
                let out = runner.run_batch(&set, &source, &mut batch, false).entries;
                black_box(encode(out, &mut encoder))
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

/// Appends to 1 MiB batches and encodes each: what the Loki sink does per batch.
fn encode(entries: Vec<LogEntry>, encoder: &mut PushEncoder) -> usize {
    let mut total = 0;
    let mut batch = PendingBatch::new(true);
    let flush = |batch: PendingBatch, encoder: &mut PushEncoder| {
        let (streams, ..) = batch.into_streams();
        let labels: Vec<&str> = streams.iter().map(|s| s.labels.rendered()).collect();
        let refs: Vec<StreamRef<'_>> =
            streams.iter().zip(&labels).map(|(s, l)| StreamRef { labels: l, entries: &s.entries }).collect();
        encoder.encode(&refs).len()
    };
    for e in entries {
        batch.add(e);
        if batch.bytes >= 1 << 20 {
            total += flush(batch.take(), encoder);
        }
    }
    total + flush(batch, encoder)
}

criterion_group!(benches, bench);
criterion_main!(benches);
