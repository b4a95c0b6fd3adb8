//! Metrics end to end, against the real Prometheus (Debian's 2.42): a test GPU exporter →
//! sluice's `prometheus_scrape` source → `prometheus_remote_write` sink → Prometheus, checked
//! through Prometheus' query API. Every process a test starts (sluice, Prometheus, the
//! exporter, containers) is stopped by the test, and killed by its handle if the test fails.

use crate::support::agent::{Agent, AgentSetup};
use crate::support::exporter::{Exporter, Gpu, gpu_exposition, gpus};
use crate::support::lines::now_secs;
use crate::support::prometheus::{Prometheus, Series};
use std::collections::BTreeMap;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

fn agent_config(targets: &str, write_url: &str, extra_job: &str) -> String {
    format!(
        "sources:
  gpu:
    type: prometheus_scrape
    jobs:
      - job_name: nvidia-gpu-exporter
        scrape_interval: 1s
        static_configs:
          - targets: [{targets}]
{extra_job}sinks:
  prometheus:
    type: prometheus_remote_write
    url: {write_url}
    batch_send_deadline: 200ms
    backoff: {{min_period: 100ms, max_period: 1s}}
    external_labels: {{cluster: test, node: gpu-node-1}}
"
    )
}

async fn start_agent(exporter: &Exporter, prometheus: &Prometheus, extra_job: &str) -> Agent {
    let body = agent_config(&format!("'{}'", exporter.target()), &prometheus.write_url(), extra_job);
    Agent::start(AgentSetup { body: &body, pipelines: &[] }).await
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn by_uuid(result: &[Series]) -> BTreeMap<String, Series> {
    result.iter().map(|s| (s.labels["uuid"].clone(), s.clone())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gpu_exporter_to_prometheus_values_labels_and_stale_markers() {
    let prometheus = Prometheus::start().await;
    let all = gpus();
    let mut exporter = Exporter::start(gpu_exposition(&all)).await;
    let agent = start_agent(&exporter, &prometheus, "").await;
    let instance = exporter.target();
    let up = format!("up{{job=\"nvidia-gpu-exporter\",instance=\"{instance}\"}}");
    let series = prometheus.wait_value(&up, "1", WAIT).await;
    assert_eq!(
        series.labels,
        labels(&[
            ("__name__", "up"),
            ("cluster", "test"),
            ("instance", &instance),
            ("job", "nvidia-gpu-exporter"),
            ("node", "gpu-node-1")
        ])
    );
    // Values and labels, per GPU, exactly as exported.
    let temperatures = by_uuid(&prometheus.query("nvidia_smi_temperature_gpu").await);
    assert_eq!(temperatures.len(), 4);
    for gpu in &all {
        let t = &temperatures[&gpu.uuid];
        assert_eq!(t.number(), gpu.temperature, "{}", gpu.uuid);
        assert_eq!(
            t.labels,
            labels(&[
                ("__name__", "nvidia_smi_temperature_gpu"),
                ("cluster", "test"),
                ("instance", &instance),
                ("job", "nvidia-gpu-exporter"),
                ("node", "gpu-node-1"),
                ("uuid", &gpu.uuid)
            ])
        );
    }
    let used = by_uuid(&prometheus.query("nvidia_smi_memory_used_bytes").await);
    let total = by_uuid(&prometheus.query("nvidia_smi_memory_total_bytes").await);
    let utilization = by_uuid(&prometheus.query("nvidia_smi_utilization_gpu_ratio").await);
    let power = by_uuid(&prometheus.query("nvidia_smi_power_draw_watts").await);
    for gpu in &all {
        assert_eq!(used[&gpu.uuid].number(), gpu.memory_used);
        assert_eq!(total[&gpu.uuid].number(), gpu.memory_total);
        assert_eq!(utilization[&gpu.uuid].number(), gpu.utilization);
        assert_eq!(power[&gpu.uuid].value, gpu.power_draw);
    }
    // Escaped label values arrive unescaped.
    let info = by_uuid(&prometheus.query("nvidia_smi_gpu_info").await);
    assert_eq!(info[&all[2].uuid].labels["name"], "NVIDIA \"H100\" 80GB\\HBM3");
    assert_eq!(info[&all[0].uuid].labels["driver_model_current"], "[N/A]");
    let apps = prometheus.query(&format!("nvidia_smi_compute_app_info{{uuid=\"{}\"}}", all[2].uuid)).await;
    let mut names: Vec<&str> = apps.iter().map(|s| s.labels["process_name"].as_str()).collect();
    names.sort();
    assert_eq!(names, ["./gpu_burn\nsecond line", "C:\\tools\\mem\"hog\".exe"]);
    // The stack's GPU alert expressions work on what sluice wrote: the join on (job, instance,
    // uuid) with nvidia_smi_gpu_info finds every GPU.
    let memory = prometheus
        .query(
            "(nvidia_smi_memory_used_bytes / nvidia_smi_memory_total_bytes) * on (job, instance, uuid) group_left (name, index) nvidia_smi_gpu_info > 0.9",
        )
        .await;
    assert_eq!(memory.len(), 1, "{memory:?}");
    assert_eq!((memory[0].labels["index"].as_str(), memory[0].labels["uuid"].as_str()), ("1", all[1].uuid.as_str()));
    let hot = prometheus
        .query(
            "nvidia_smi_temperature_gpu * on (job, instance, uuid) group_left (name, index) nvidia_smi_gpu_info > 85",
        )
        .await;
    assert_eq!(hot.iter().map(|s| s.labels["index"].as_str()).collect::<Vec<_>>(), ["1"]);
    // The report series.
    let scraped = prometheus.query(&format!("scrape_samples_scraped{{instance=\"{instance}\"}}")).await;
    let samples = gpu_exposition(&all).lines().filter(|l| !l.starts_with('#')).count();
    assert_eq!(samples, 39);
    assert_eq!(scraped[0].number(), samples as f64, "{scraped:?}");
    assert_eq!(prometheus.query(&format!("scrape_duration_seconds{{instance=\"{instance}\"}}")).await.len(), 1);

    // GPU 3 vanishes from the exposition: its series are marked stale at the next scrape, long
    // before Prometheus' 5-minute lookback would hide them.
    let three: Vec<Gpu> = all[..3].to_vec();
    exporter.set_body(gpu_exposition(&three));
    let gone = format!("nvidia_smi_temperature_gpu{{uuid=\"{}\"}}", all[3].uuid);
    prometheus.wait_empty(&gone, Duration::from_secs(10)).await;
    assert_eq!(prometheus.query("nvidia_smi_temperature_gpu").await.len(), 3, "the other GPUs stay");
    // The sample before the stale marker is still there in a range query.
    assert!(!prometheus.query(&format!("last_over_time({gone}[1m])")).await.is_empty());

    // The exporter goes away: up is 0 and every series of the target is stale.
    exporter.stop().await;
    prometheus.wait_value(&up, "0", WAIT).await;
    prometheus.wait_empty("nvidia_smi_temperature_gpu", Duration::from_secs(10)).await;
    prometheus.wait_empty("nvidia_smi_gpu_info", Duration::from_secs(10)).await;
    let metrics = agent.metrics().await;
    assert!(
        metrics.sum("sluice_scrape_failures_total", &[("scrape_job", "nvidia-gpu-exporter"), ("reason", "connection")])
            >= 1.0
    );
    // It comes back.
    exporter.restart().await;
    prometheus.wait_value(&up, "1", WAIT).await;
    prometheus.wait_for("nvidia_smi_temperature_gpu", WAIT, "three GPUs", |r| r.len() == 3).await;
    assert!(exporter.requests().iter().all(|r| r.contains("accept=application/openmetrics-text;version=1.0.0")));
    let metrics = agent.metrics().await;
    assert_eq!(metrics.sum("sluice_sink_dropped_total", &[]), 0.0);
    assert_eq!(metrics.sum("sluice_scrape_targets", &[("scrape_job", "nvidia-gpu-exporter")]), 1.0);
    let (code, stderr) = agent.stop().await;
    assert_eq!(code, Some(0), "{stderr}");
}

/// Polls sluice's `/metrics` until a scrape completes and returns the number of scrapes.
async fn scrapes_after_next(agent: &Agent) -> f64 {
    let scrapes =
        |m: &crate::support::agent::Metrics| m.sum("sluice_scrapes_total", &[("scrape_job", "nvidia-gpu-exporter")]);
    let before = scrapes(&agent.metrics().await);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let now = scrapes(&agent.metrics().await);
        if now > before {
            return now;
        }
        assert!(tokio::time::Instant::now() < deadline, "no scrape in 10s");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn samples_scraped_while_prometheus_is_down_are_delivered_when_it_returns() {
    let mut prometheus = Prometheus::start().await;
    let exporter = Exporter::start(gpu_exposition(&gpus())).await;
    let agent = start_agent(&exporter, &prometheus, "").await;
    let instance = exporter.target();
    let up = format!("up{{job=\"nvidia-gpu-exporter\",instance=\"{instance}\"}}");
    prometheus.wait_value(&up, "1", WAIT).await;

    prometheus.stop().await;
    let stopped = now_secs();
    // While it is down, requests fail and are retried; samples wait in the sink's queue.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let m = agent.metrics().await;
        if m.sum("sluice_sink_retries_total", &[("sink", "prometheus")]) > 0.0
            && m.sum("sluice_sink_active_streams", &[("sink", "prometheus")]) > 0.0
        {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no retry while Prometheus is down");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The outage lasts 30 seconds.
    let outage = Duration::from_secs(30).saturating_sub(Duration::from_secs_f64(now_secs() - stopped));
    tokio::time::sleep(outage).await;
    let restarted = now_secs();
    prometheus.restart().await;

    // Everything queued arrives: nothing is pending, nothing dropped.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let m = agent.metrics().await;
        if m.sum("sluice_sink_active_streams", &[("sink", "prometheus")]) == 0.0
            && m.sum("sluice_sink_queue_bytes", &[("sink", "prometheus")]) == 0.0
        {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the queue did not drain");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Stop sluice right after a scrape (the next one is a second away): every scrape it made
    // is one `up` sample in Prometheus, outage included.
    let scrapes = scrapes_after_next(&agent).await;
    let (code, stderr) = agent.stop().await;
    assert_eq!(code, Some(0), "{stderr}");
    let count = |promql: String| {
        let prometheus = &prometheus;
        async move { prometheus.query(&promql).await.first().map(Series::number).unwrap_or(0.0) }
    };
    assert_eq!(count(format!("count_over_time({up}[1h])")).await, scrapes, "every scrape, exactly once");
    let gpu0 = format!("nvidia_smi_temperature_gpu{{uuid=\"{}\"}}", gpus()[0].uuid);
    assert_eq!(count(format!("count_over_time({gpu0}[1h])")).await, scrapes, "every sample of a series");
    // The outage itself is covered: about one sample per second between the stop and the restart.
    let during = prometheus
        .query_at(&format!("count_over_time({up}[{}s])", (restarted - stopped).floor() as u64), Some(restarted))
        .await;
    let n = during.first().map(Series::number).unwrap_or(0.0);
    assert!((28.0..=31.0).contains(&n), "{n} samples during the 30s outage");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_expositions_fail_their_scrape_and_the_agent_keeps_going() {
    let prometheus = Prometheus::start().await;
    let all = gpus();
    let good = gpu_exposition(&all);
    let exporter = Exporter::start(good.clone()).await;
    let agent = start_agent(&exporter, &prometheus, "").await;
    let instance = exporter.target();
    let up = format!("up{{job=\"nvidia-gpu-exporter\",instance=\"{instance}\"}}");
    prometheus.wait_value(&up, "1", WAIT).await;

    let bad_escape = good.replacen("driver_model_current=\"[N/A]\"", "driver_model_current=\"\\q\"", 1);
    let line_of = |body: &str, needle: &str| body.lines().position(|l| l.contains(needle)).unwrap() + 1;
    let bad_escape_line = line_of(&bad_escape, "\\q");
    let duplicate_help =
        format!("{good}# HELP nvidia_smi_temperature_gpu temperature.gpu, again\nnvidia_smi_fan_speed_ratio 0.3\n");
    let huge_value = "x".repeat(100 * 1024);
    let huge =
        format!("{good}nvidia_smi_clocks_event_reasons_active{{uuid=\"{}\",note=\"{huge_value}\"}} 0\n", all[0].uuid);
    let huge_len = huge.lines().last().unwrap().len();
    let cases = [
        (bad_escape, format!("line {bad_escape_line}: invalid escape sequence `\\q` in a label value")),
        (duplicate_help, "second HELP line for metric `nvidia_smi_temperature_gpu`".to_string()),
        (huge, format!("the line is {huge_len} bytes long, above the limit of 65536")),
    ];
    for (i, (body, _)) in cases.iter().enumerate() {
        exporter.set_body(body.clone());
        prometheus.wait_value(&up, "0", WAIT).await;
        prometheus.wait_empty("nvidia_smi_temperature_gpu", Duration::from_secs(10)).await;
        let failures = agent
            .metrics()
            .await
            .sum("sluice_scrape_failures_total", &[("scrape_job", "nvidia-gpu-exporter"), ("reason", "parse")]);
        assert!(failures >= (i + 1) as f64, "case {i}: {failures} parse failures");
        // A NaN is a value like any other: the next exposition has one and scrapes fine.
        let mut with_nan = all.clone();
        with_nan[1].power_draw = "NaN".into();
        exporter.set_body(gpu_exposition(&with_nan));
        prometheus.wait_value(&up, "1", WAIT).await;
        let power = prometheus.wait_for("nvidia_smi_power_draw_watts", WAIT, "four GPUs", |r| r.len() == 4).await;
        assert_eq!(by_uuid(&power)[&all[1].uuid].value, "NaN", "case {i}");
        assert_eq!(by_uuid(&power)[&all[0].uuid].value, "631.95", "case {i}");
    }
    let metrics = agent.metrics().await;
    assert_eq!(metrics.sum("sluice_sink_dropped_total", &[]), 0.0);
    let (code, stderr) = agent.stop().await;
    assert_eq!(code, Some(0), "{stderr}");
    // The log (JSON lines) says why each scrape failed.
    let errors: Vec<String> = stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["message"].as_str().is_some_and(|m| m.starts_with("scrape failed")))
        .filter_map(|v| v["error"].as_str().map(String::from))
        .collect();
    for (_, reason) in &cases {
        assert!(errors.iter().any(|e| e.contains(reason.as_str())), "the log names the reason `{reason}`: {errors:#?}");
    }
}
