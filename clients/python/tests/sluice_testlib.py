"""Helpers shared by the sluice_clients tests (a uniquely named module: `import conftest`
would be ambiguous next to other test directories' conftest.py files)."""

from __future__ import annotations

import calendar
import io
import json
import re
import subprocess
from pathlib import Path

from sluice_clients.structured_logger import (
    log_budget,
    log_drift,
    log_inference,
    log_memory_op,
    log_request,
    log_tool_call,
)

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[2]
PIPELINE = REPO_ROOT / "pipelines" / "structured-json.yaml"
ALERT_RULES = REPO_ROOT / "configs" / "prometheus" / "rules" / "alerts.yml"
SERVICE = "checkout-api"

def sluice_test(sluice_bin: str, pipeline: Path, data: bytes, *extra_args: str) -> list[dict]:
    """Runs `sluice test PIPELINE --input - --format json` on `data`; returns the JSON objects
    it printed, one per non-empty stdout line (the contract: one per input line)."""
    proc = subprocess.run(
        [sluice_bin, "test", str(pipeline), "--input", "-", "--format", "json", *extra_args],
        input=data,
        capture_output=True,
        timeout=120,
        cwd=REPO_ROOT,
    )
    assert proc.returncode == 0, (
        f"sluice test exited {proc.returncode}\nstderr:\n{proc.stderr.decode('utf-8', 'replace')}\n"
        f"stdout:\n{proc.stdout.decode('utf-8', 'replace')[:4000]}"
    )
    out = []
    for raw in proc.stdout.split(b"\n"):
        if raw.strip():
            out.append(json.loads(raw))
    return out


class LogCapture:
    """The JSON lines that setup_structured_logging wrote to an in-memory stream."""

    def __init__(self, buffer: io.StringIO) -> None:
        self.buffer = buffer

    @property
    def text(self) -> str:
        return self.buffer.getvalue()

    def lines(self) -> list[str]:
        text = self.text
        assert text == "" or text.endswith("\n"), "output does not end with a newline"
        return text.split("\n")[:-1] if text else []

    def records(self) -> list[dict]:
        return [json.loads(line) for line in self.lines()]

    def take(self) -> str:
        text = self.text
        self.buffer.seek(0)
        self.buffer.truncate()
        return text


def span_ids(span) -> tuple[str, str]:
    ctx = span.get_span_context()
    return format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")


def rfc3339_to_ns(value: str) -> int:
    """Nanoseconds since the epoch of an RFC 3339 UTC timestamp with 0-9 fractional digits."""
    m = re.fullmatch(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?(Z|[+-]00:00)", value)
    assert m, f"not an RFC 3339 UTC timestamp: {value!r}"
    secs = calendar.timegm(tuple(int(m.group(i)) for i in range(1, 7)) + (0, 0, 0))
    frac = (m.group(7) or "").ljust(9, "0")
    return secs * 1_000_000_000 + int(frac)


# --------------------------------------------------------------------------- metrics

# The platform metric catalog as /work/notes/contract.md states it (name -> type, labels).
CONTRACT_CATALOG: dict[str, tuple[str, frozenset[str]]] = {
    name: (kind, frozenset(labels.split()))
    for name, kind, labels in [
        ("http_requests_total", "counter", "service method route status"),
        ("http_request_duration_seconds", "histogram", "service method route"),
        ("inference_requests_total", "counter", "service model status"),
        ("inference_request_duration_seconds", "histogram", "service model"),
        ("inference_tokens_total", "counter", "service model direction"),
        ("inference_time_to_first_token_seconds", "histogram", "service model"),
        ("mcp_tool_calls_total", "counter", "service tool status"),
        ("mcp_tool_call_duration_seconds", "histogram", "service tool"),
        ("memory_operations_total", "counter", "service operation status"),
        ("memory_operation_duration_seconds", "histogram", "service operation"),
        ("budget_spend_dollars", "gauge", "service budget"),
        ("budget_limit_dollars", "gauge", "service budget"),
        ("model_drift_score", "gauge", "service model feature"),
        ("gpu_utilization_ratio", "gauge", "service gpu"),
        ("gpu_memory_used_bytes", "gauge", "service gpu"),
        ("gpu_memory_total_bytes", "gauge", "service gpu"),
        ("gpu_temperature_celsius", "gauge", "service gpu"),
        ("router_decisions_total", "counter", "service model reason"),
        ("request_queue_depth", "gauge", "service queue"),
        ("cache_hits_total", "counter", "service cache"),
        ("cache_misses_total", "counter", "service cache"),
    ]
}


def exercise(exporter) -> None:
    """Records one value through every public recording method, so that every catalog metric
    has series (prometheus_client only exposes labelled metrics once a child exists)."""
    exporter.observe_http_request("GET", "/v1/chat/{id}", 200, 0.12)
    exporter.observe_http_request("post", "/v1/chat", 503, 2.7)
    exporter.observe_inference("llama-3-8b", 1.8, tokens_in=512, tokens_out=128, time_to_first_token_seconds=0.21)
    exporter.observe_inference("llama-3-8b", 30.0, status="error")
    exporter.observe_tool_call("web_search", 0.09)
    exporter.observe_tool_call("web_search", 5.0, status="error")
    exporter.observe_memory_op("recall", 0.004)
    exporter.observe_memory_op("store", 0.02, status="error")
    exporter.set_budget("team-search", spend_dollars=42.5, limit_dollars=100.0)
    exporter.set_drift_score("llama-3-8b", "prompt_length", 0.12)
    exporter.set_gpu("0", utilization_ratio=0.75, memory_used_bytes=20e9, memory_total_bytes=80e9, temperature_celsius=61)
    exporter.record_router_decision("llama-3-8b", "cheapest")
    exporter.set_queue_depth("inference", 3)
    exporter.cache_hit("embeddings")
    exporter.cache_miss("embeddings")


def series_index(registry) -> dict[str, tuple[str, frozenset[str], str]]:
    """sample name -> (family type, label names, family name) for every sample in `registry`,
    e.g. "http_request_duration_seconds_bucket" -> ("histogram", {service, method, route, le}, ...)."""
    index: dict[str, tuple[str, frozenset[str], str]] = {}
    for family in registry.collect():
        for sample in family.samples:
            labels = frozenset(sample.labels)
            prev = index.get(sample.name)
            assert prev is None or prev[1] == labels, f"{sample.name} has samples with different label sets"
            index[sample.name] = (family.type, labels, family.name)
    return index


# --------------------------------------------------------------------------- logger helper cases
# (id, call, expected level, expected logger name, expected fields)
HELPER_CASES = [
    (
        "log_request ok",
        lambda: log_request("GET", "/v1/orders/7", 200, 12.34567, user_id="u-42", route="/v1/orders/{id}"),
        "INFO", "sluice_clients.http",
        {"message": "GET /v1/orders/7 200", "method": "GET", "path": "/v1/orders/7", "status": 200,
         "duration_ms": 12.346, "user_id": "u-42", "route": "/v1/orders/{id}"},
    ),
    (
        "log_request 404",
        lambda: log_request("POST", "/v1/x", 404, 3),
        "WARNING", "sluice_clients.http", {"status": 404, "duration_ms": 3.0},
    ),
    (
        "log_request 503",
        lambda: log_request("POST", "/v1/x", 503, 3000.5, message="upstream down"),
        "ERROR", "sluice_clients.http", {"status": 503, "message": "upstream down", "duration_ms": 3000.5},
    ),
    (
        "log_inference",
        lambda: log_inference("llama-3-8b", 512, 128, 1834.2, time_to_first_token_ms=210.7, user_id="u-42"),
        "INFO", "sluice_clients.inference",
        {"model": "llama-3-8b", "tokens_in": 512, "tokens_out": 128, "duration_ms": 1834.2, "status": "success",
         "time_to_first_token_ms": 210.7, "user_id": "u-42", "message": "inference llama-3-8b success"},
    ),
    (
        "log_inference error",
        lambda: log_inference("llama-3-8b", 512, 0, 30000, status="error", error="timeout"),
        "ERROR", "sluice_clients.inference", {"status": "error", "tokens_out": 0, "error": "timeout"},
    ),
    (
        "log_tool_call",
        lambda: log_tool_call("web_search", "success", 87.5, server="mcp-search"),
        "INFO", "sluice_clients.mcp",
        {"tool": "web_search", "status": "success", "duration_ms": 87.5, "server": "mcp-search"},
    ),
    (
        "log_tool_call error",
        lambda: log_tool_call("web_search", "error", 5),
        "ERROR", "sluice_clients.mcp", {"status": "error"},
    ),
    (
        "log_memory_op",
        lambda: log_memory_op("recall", "success", 4.25, namespace="sessions"),
        "INFO", "sluice_clients.memory",
        {"operation": "recall", "status": "success", "duration_ms": 4.25, "namespace": "sessions"},
    ),
    (
        "log_budget ok",
        lambda: log_budget("team-search", 12.5, 100),
        "INFO", "sluice_clients.budget",
        {"budget": "team-search", "spend_dollars": 12.5, "limit_dollars": 100.0, "budget_ratio": 0.125,
         "message": "budget team-search $12.50 of $100.00"},
    ),
    (
        "log_budget near",
        lambda: log_budget("team-search", 95, 100),
        "WARNING", "sluice_clients.budget", {"budget_ratio": 0.95},
    ),
    (
        "log_budget over",
        lambda: log_budget("team-search", 120, 100),
        "ERROR", "sluice_clients.budget", {"budget_ratio": 1.2},
    ),
    (
        "log_drift",
        lambda: log_drift("llama-3-8b", "prompt_length", 0.12, threshold=0.3),
        "INFO", "sluice_clients.drift",
        {"model": "llama-3-8b", "feature": "prompt_length", "drift_score": 0.12, "drift_threshold": 0.3},
    ),
    (
        "log_drift over",
        lambda: log_drift("llama-3-8b", "prompt_length", 0.45, threshold=0.3),
        "WARNING", "sluice_clients.drift", {"drift_score": 0.45},
    ),
]
