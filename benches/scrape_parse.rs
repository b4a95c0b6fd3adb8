//! The metrics hot paths, per sample (Throughput::Elements):
//! - `parse`: the text-format parser over a 5,000-series exposition shaped like the NVIDIA GPU
//!   exporter's (HELP and TYPE per family, a `uuid` and an `index` label per series, values as
//!   exporters write them: integers, decimals, exponents);
//! - `scrape_append`: parse + series cache lookup + the samples of a batch, what a scrape costs
//!   once its series are known;
//! - `remote_write_encode` and `remote_write_encode_snappy`: a Remote Write request of those
//!   5,000 samples with two external labels, by hand, and `prost_encode_snappy` for comparison.
//!
//! `cargo bench --bench scrape_parse` (or `--profile profiling` to build faster).

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use prost::Message;
use sluice::event::samples::Sample;
use sluice::proto::remote_write as pb;
use sluice::relabel::Relabeler;
use sluice::sinks::remote_write::encode::WriteEncoder;
use sluice::sources::prometheus_scrape::parse::{Format, Limits, ParseState, Parser};
use sluice::sources::prometheus_scrape::series::{Lookup, SeriesCache};
use std::hint::black_box;
use std::sync::Arc;

const FAMILIES: usize = 125;
const GPUS: usize = 40;
const SERIES: usize = FAMILIES * GPUS;

/// A 5,000-series exposition: 125 families of 40 GPUs.
fn exposition() -> String {
    let kinds = [
        "clocks_current_graphics_clock_hz",
        "memory_used_bytes",
        "temperature_gpu",
        "utilization_gpu_ratio",
        "power_draw_watts",
    ];
    let mut out = String::new();
    for f in 0..FAMILIES {
        let name = format!("nvidia_smi_{}_{f}", kinds[f % kinds.len()]);
        out.push_str(&format!("# HELP {name} {} [unit]\n# TYPE {name} gauge\n", name.replace('_', ".")));
        for g in 0..GPUS {
            // As Go's exporters print them: shortest decimals, exponents past 1e21 or for the
            // clock and memory gauges (`1.98e+09`, `2.0780679168e+10`).
            let value = match f % 5 {
                0 => format!("1.{:02}e+09", 98 - g),
                1 => format!("2.07806{:02}168e+10", g),
                2 => format!("{}", 30 + g),
                3 => format!("0.{:02}", g * 2 + 1),
                _ => format!("{}.{:02}", 600 + g, g + 1),
            };
            out.push_str(&format!(
                "{name}{{index=\"{g}\",uuid=\"GPU-{g:08x}-4f5e-9a1b-2c3d-000000000{g:03}\"}} {value}\n"
            ));
        }
    }
    out
}

fn target_labels() -> Vec<(String, String)> {
    vec![("instance".into(), "gpu-node-1:9835".into()), ("job".into(), "nvidia-gpu-exporter".into())]
}

fn scraped_samples(body: &str) -> Vec<Sample> {
    let mut cache = SeriesCache::new(target_labels(), false, Arc::new(Relabeler::default()));
    let mut state = ParseState::default();
    let mut out = Vec::new();
    scrape(&mut cache, &mut state, body, &mut out);
    out
}

fn scrape(cache: &mut SeriesCache, state: &mut ParseState, body: &str, out: &mut Vec<Sample>) {
    cache.begin();
    let Ok(mut parser) = Parser::new(body.as_bytes(), Format::Text, Limits::default(), state) else { return };
    while let Ok(Some(s)) = parser.next_sample() {
        if let Ok(Lookup::Send(series)) = cache.lookup(&s) {
            out.push(Sample { series, timestamp_ms: 1_764_000_000_000, value: s.value });
        }
    }
    cache.end_success(1_764_000_000_000, out);
}

fn bench(c: &mut Criterion) {
    let body = exposition();
    let mut group = c.benchmark_group("scrape");
    group.throughput(Throughput::Elements(SERIES as u64));
    group.bench_function("parse", |b| {
        let mut state = ParseState::default();
        b.iter(|| {
            let mut parser =
                Parser::new(black_box(body.as_bytes()), Format::Text, Limits::default(), &mut state).unwrap();
            let mut n = 0usize;
            let mut sum = 0.0;
            while let Some(s) = parser.next_sample().unwrap() {
                n += s.series.len();
                sum += s.value;
            }
            assert!(n > 0);
            black_box((n, sum))
        })
    });
    group.bench_function("scrape_append", |b| {
        let mut cache = SeriesCache::new(target_labels(), false, Arc::new(Relabeler::default()));
        let mut state = ParseState::default();
        let mut out = Vec::with_capacity(SERIES);
        b.iter(|| {
            out.clear();
            scrape(&mut cache, &mut state, black_box(&body), &mut out);
            assert_eq!(out.len(), SERIES);
        })
    });
    group.finish();

    let samples = scraped_samples(&body);
    assert_eq!(samples.len(), SERIES);
    let external = || [("cluster".to_string(), "prod".to_string()), ("node".to_string(), "gpu-node-1".to_string())];
    let mut group = c.benchmark_group("remote_write");
    group.throughput(Throughput::Elements(SERIES as u64));
    group.bench_function("encode", |b| {
        let mut enc = WriteEncoder::new(external());
        b.iter(|| black_box(enc.encode_raw(black_box(&samples)).len()))
    });
    group.bench_function("encode_snappy", |b| {
        let mut enc = WriteEncoder::new(external());
        b.iter(|| black_box(enc.encode(black_box(&samples)).len()))
    });
    group.bench_function("prost_encode_snappy", |b| {
        let mut compressed = Vec::new();
        let mut snappy = snap::raw::Encoder::new();
        b.iter(|| {
            let request = pb::WriteRequest {
                timeseries: samples
                    .iter()
                    .map(|s| {
                        let mut labels: Vec<pb::Label> = s
                            .series
                            .labels()
                            .map(|(n, v)| pb::Label { name: n.to_string(), value: v.to_string() })
                            .collect();
                        for (name, value) in external() {
                            labels.push(pb::Label { name, value });
                        }
                        labels.sort_by(|a, b| a.name.cmp(&b.name));
                        pb::TimeSeries {
                            labels,
                            samples: vec![pb::Sample { value: s.value, timestamp: s.timestamp_ms }],
                        }
                    })
                    .collect(),
            };
            let raw = request.encode_to_vec();
            compressed.resize(snap::raw::max_compress_len(raw.len()), 0);
            black_box(snappy.compress(&raw, &mut compressed).unwrap())
        })
    });
    group.finish();
}

/// This thread's CPU time (`/proc/thread-self/schedstat`, nanoseconds), when the kernel tells.
fn thread_cpu_ns() -> Option<u64> {
    std::fs::read_to_string("/proc/thread-self/schedstat").ok()?.split_whitespace().next()?.parse().ok()
}

/// Samples per CPU-second of `work` (which handles `SERIES` samples), measured on this thread's
/// CPU time rather than the wall clock, so that other processes on the machine do not count.
fn per_cpu_second(name: &str, mut work: impl FnMut()) {
    for _ in 0..20 {
        work();
    }
    let Some(start) = thread_cpu_ns() else { return };
    let mut rounds = 0u64;
    while thread_cpu_ns().unwrap_or(u64::MAX) - start < 3_000_000_000 {
        for _ in 0..20 {
            work();
        }
        rounds += 20;
    }
    let cpu = (thread_cpu_ns().unwrap_or(start) - start) as f64 / 1e9;
    let rate = (rounds as f64 * SERIES as f64) / cpu;
    println!("{name}: {:.1} million samples per CPU-second ({rounds} rounds in {cpu:.2} CPU-s)", rate / 1e6);
}

/// Criterion measures wall time; this prints the figures per CPU-second the target is set in.
fn cpu_figures(_: &mut Criterion) {
    let body = exposition();
    let mut state = ParseState::default();
    per_cpu_second("scrape/parse", || {
        let Ok(mut parser) = Parser::new(body.as_bytes(), Format::Text, Limits::default(), &mut state) else { return };
        let mut sum = 0.0;
        while let Ok(Some(s)) = parser.next_sample() {
            sum += s.value;
        }
        black_box(sum);
    });
    let mut cache = SeriesCache::new(target_labels(), false, Arc::new(Relabeler::default()));
    let mut out = Vec::with_capacity(SERIES);
    per_cpu_second("scrape/scrape_append", || {
        out.clear();
        scrape(&mut cache, &mut state, &body, &mut out);
    });
    let samples = scraped_samples(&body);
    let mut enc = WriteEncoder::new([
        ("cluster".to_string(), "prod".to_string()),
        ("node".to_string(), "gpu-node-1".to_string()),
    ]);
    per_cpu_second("remote_write/encode_snappy", || {
        black_box(enc.encode(&samples).len());
    });
}

criterion_group!(benches, bench, cpu_figures);
criterion_main!(benches);
