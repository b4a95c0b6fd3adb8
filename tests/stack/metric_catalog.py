"""The metric catalog of the shared contract (docs/METRICS.md documents it): the
names the platform's services, the exporters and sluice expose. Alert rules and
dashboards may only use these."""

# Platform services (every series carries `service`).
PLATFORM_COUNTERS_GAUGES = {
    "http_requests_total",
    "inference_requests_total",
    "inference_tokens_total",
    "mcp_tool_calls_total",
    "memory_operations_total",
    "budget_spend_dollars",
    "budget_limit_dollars",
    "model_drift_score",
    "gpu_utilization_ratio",
    "gpu_memory_used_bytes",
    "gpu_memory_total_bytes",
    "gpu_temperature_celsius",
    "router_decisions_total",
    "request_queue_depth",
    "cache_hits_total",
    "cache_misses_total",
}
PLATFORM_HISTOGRAMS = {
    "http_request_duration_seconds",
    "inference_request_duration_seconds",
    "inference_time_to_first_token_seconds",
    "mcp_tool_call_duration_seconds",
    "memory_operation_duration_seconds",
}

# Exporters, with their real metric names.
NVIDIA_GPU_EXPORTER = {
    "nvidia_smi_utilization_gpu_ratio",
    "nvidia_smi_memory_used_bytes",
    "nvidia_smi_memory_total_bytes",
    "nvidia_smi_temperature_gpu",
    "nvidia_smi_gpu_info",
}
REDIS_EXPORTER = {"redis_memory_used_bytes", "redis_memory_max_bytes"}
POSTGRES_EXPORTER = {"pg_stat_activity_count", "pg_settings_max_connections"}
PROMETHEUS_BUILTIN = {"up"}

# Span metrics that sluice derives from the traces it forwards.
SPAN_METRICS = {"traces_span_metrics_calls_total"}
SPAN_HISTOGRAMS = {"traces_span_metrics_duration_seconds"}

# sluice's self-metrics (HTTP port 9080, /metrics).
SLUICE = {
    "sluice_sink_dropped_total",
    "sluice_source_dropped_total",
    "sluice_sink_requests_total",
    "sluice_sink_queue_bytes",
    "sluice_sink_queue_capacity_bytes",
    "sluice_source_lines_total",
    "sluice_sink_lines_sent_total",
    "sluice_config_last_reload_successful",
    "sluice_config_reload_failures_total",
    "sluice_pipeline_errors_total",
}

HISTOGRAMS = PLATFORM_HISTOGRAMS | SPAN_HISTOGRAMS


def series_names() -> set[str]:
    """Every series name that can be queried: histograms as _bucket, _sum, _count."""
    names = PLATFORM_COUNTERS_GAUGES | NVIDIA_GPU_EXPORTER | REDIS_EXPORTER | POSTGRES_EXPORTER
    names |= PROMETHEUS_BUILTIN | SPAN_METRICS | SLUICE
    for h in HISTOGRAMS:
        names |= {f"{h}_bucket", f"{h}_sum", f"{h}_count"}
    return names


def documented_names() -> set[str]:
    """The names as docs/METRICS.md lists them (histograms by their base name)."""
    return (
        PLATFORM_COUNTERS_GAUGES
        | PLATFORM_HISTOGRAMS
        | NVIDIA_GPU_EXPORTER
        | REDIS_EXPORTER
        | POSTGRES_EXPORTER
        | PROMETHEUS_BUILTIN
        | SPAN_METRICS
        | SPAN_HISTOGRAMS
        | SLUICE
    )
