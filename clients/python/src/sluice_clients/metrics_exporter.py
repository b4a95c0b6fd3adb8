"""Prometheus metrics for the platform's Python services, on the official ``prometheus_client``.

The names, types and labels are the platform metric catalog that the stack's alert rules
(``configs/prometheus/rules/alerts.yml``) and ``docs/METRICS.md`` use. Every metric carries the
label ``service`` (the name given to :func:`get_metrics_exporter`); Prometheus adds job/instance.

=========================================  =========  ===================================
metric                                     type       labels
=========================================  =========  ===================================
http_requests_total                        counter    service, method, route, status
http_request_duration_seconds              histogram  service, method, route
inference_requests_total                   counter    service, model, status
inference_request_duration_seconds         histogram  service, model
inference_tokens_total                     counter    service, model, direction
inference_time_to_first_token_seconds      histogram  service, model
mcp_tool_calls_total                       counter    service, tool, status
mcp_tool_call_duration_seconds             histogram  service, tool
memory_operations_total                    counter    service, operation, status
memory_operation_duration_seconds          histogram  service, operation
budget_spend_dollars                       gauge      service, budget
budget_limit_dollars                       gauge      service, budget
model_drift_score                          gauge      service, model, feature
gpu_utilization_ratio                      gauge      service, gpu
gpu_memory_used_bytes                      gauge      service, gpu
gpu_memory_total_bytes                     gauge      service, gpu
gpu_temperature_celsius                    gauge      service, gpu
router_decisions_total                     counter    service, model, reason
request_queue_depth                        gauge      service, queue
cache_hits_total                           counter    service, cache
cache_misses_total                         counter    service, cache
=========================================  =========  ===================================

``status`` of inference, MCP tool and memory metrics is ``"success"`` or ``"error"``;
``direction`` of tokens is ``"input"`` or ``"output"``; the HTTP ``status`` is the numeric code
("200", "503"). Each exporter has its own :class:`~prometheus_client.CollectorRegistry`
(``exporter.registry``): nothing is registered in prometheus_client's global REGISTRY.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    make_asgi_app,
    make_wsgi_app,
)
from prometheus_client import start_http_server as _start_http_server

__all__ = [
    "CATALOG",
    "DIRECTIONS",
    "MetricSpec",
    "MetricsExporter",
    "OUTCOMES",
    "get_metrics_exporter",
]

OUTCOMES = ("success", "error")
DIRECTIONS = ("input", "output")

# Bucket boundaries (seconds). All include 0.5, 1, 2, 2.5, 5 and 10 so alert thresholds at those
# values fall on a bucket boundary.
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 2.5, 5.0, 10.0, 30.0, 60.0)
INFERENCE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 2.5, 5.0, 10.0, 30.0)
TOOL_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 2.5, 5.0, 10.0, 30.0, 60.0)
MEMORY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 2.5, 5.0, 10.0)


@dataclass(frozen=True)
class MetricSpec:
    """One catalog entry: the exposed name (with _total for counters), the type and the labels."""

    name: str
    type: str  # "counter" | "gauge" | "histogram"
    labels: tuple[str, ...]
    help: str
    buckets: tuple[float, ...] | None = None
    # Allowed values per label, for labels with a closed set of values.
    values: tuple[tuple[str, tuple[str, ...]], ...] = ()


def _spec(name: str, type_: str, labels: tuple[str, ...], help_: str, buckets=None, values=()) -> MetricSpec:
    return MetricSpec(name, type_, ("service", *labels), help_, buckets, tuple(values))


CATALOG: tuple[MetricSpec, ...] = (
    _spec("http_requests_total", "counter", ("method", "route", "status"), "HTTP requests handled, by method, route template and status code."),
    _spec("http_request_duration_seconds", "histogram", ("method", "route"), "HTTP request duration in seconds.", HTTP_BUCKETS),
    _spec("inference_requests_total", "counter", ("model", "status"), "Model inference requests, by model and outcome.", values=(("status", OUTCOMES),)),
    _spec("inference_request_duration_seconds", "histogram", ("model",), "Model inference request duration in seconds.", INFERENCE_BUCKETS),
    _spec("inference_tokens_total", "counter", ("model", "direction"), "Tokens processed, by model and direction (input/output).", values=(("direction", DIRECTIONS),)),
    _spec("inference_time_to_first_token_seconds", "histogram", ("model",), "Time to the first streamed token in seconds.", TTFT_BUCKETS),
    _spec("mcp_tool_calls_total", "counter", ("tool", "status"), "MCP tool calls, by tool and outcome.", values=(("status", OUTCOMES),)),
    _spec("mcp_tool_call_duration_seconds", "histogram", ("tool",), "MCP tool call duration in seconds.", TOOL_BUCKETS),
    _spec("memory_operations_total", "counter", ("operation", "status"), "Memory engine operations, by operation and outcome.", values=(("status", OUTCOMES),)),
    _spec("memory_operation_duration_seconds", "histogram", ("operation",), "Memory engine operation duration in seconds.", MEMORY_BUCKETS),
    _spec("budget_spend_dollars", "gauge", ("budget",), "Money spent so far in the budget period, in dollars."),
    _spec("budget_limit_dollars", "gauge", ("budget",), "Budget limit for the period, in dollars."),
    _spec("model_drift_score", "gauge", ("model", "feature"), "Latest drift score of a model feature."),
    _spec("gpu_utilization_ratio", "gauge", ("gpu",), "GPU utilization as a ratio (0..1)."),
    _spec("gpu_memory_used_bytes", "gauge", ("gpu",), "GPU memory in use, in bytes."),
    _spec("gpu_memory_total_bytes", "gauge", ("gpu",), "GPU memory in total, in bytes."),
    _spec("gpu_temperature_celsius", "gauge", ("gpu",), "GPU temperature in degrees Celsius."),
    _spec("router_decisions_total", "counter", ("model", "reason"), "Model router decisions, by chosen model and reason."),
    _spec("request_queue_depth", "gauge", ("queue",), "Requests waiting in a queue."),
    _spec("cache_hits_total", "counter", ("cache",), "Cache hits."),
    _spec("cache_misses_total", "counter", ("cache",), "Cache misses."),
)


def _outcome(status: str | bool) -> str:
    if status is True:
        return "success"
    if status is False:
        return "error"
    if status not in OUTCOMES:
        raise ValueError(f"status must be one of {OUTCOMES}, got {status!r}")
    return status


def _non_negative(value: float, what: str) -> float:
    value = float(value)
    if not value >= 0:  # also rejects NaN
        raise ValueError(f"{what} must be >= 0, got {value!r}")
    return value


class _InferenceHandle:
    """Yielded by :meth:`MetricsExporter.track_inference`: fill in tokens / first token."""

    def __init__(self, started: float) -> None:
        self._started = started
        self.tokens_in = 0
        self.tokens_out = 0
        self.time_to_first_token_seconds: float | None = None
        self.status: str | None = None

    def first_token(self) -> None:
        """Call when the first token arrives (once; later calls are ignored)."""
        if self.time_to_first_token_seconds is None:
            self.time_to_first_token_seconds = time.perf_counter() - self._started


class MetricsExporter:
    """Records the platform metric catalog for one service in its own registry."""

    def __init__(
        self,
        service_name: str,
        *,
        registry: CollectorRegistry | None = None,
        process_metrics: bool = True,
    ) -> None:
        if not isinstance(service_name, str) or not service_name:
            raise ValueError("service_name must be a non-empty string")
        self.service_name = service_name
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self._metrics: dict[str, Any] = {}
        for spec in CATALOG:
            kwargs: dict[str, Any] = {"labelnames": spec.labels, "registry": self.registry}
            if spec.type == "counter":
                metric = Counter(spec.name, spec.help, **kwargs)
            elif spec.type == "gauge":
                metric = Gauge(spec.name, spec.help, **kwargs)
            else:
                metric = Histogram(spec.name, spec.help, buckets=spec.buckets, **kwargs)
            self._metrics[spec.name] = metric
        if process_metrics:
            ProcessCollector(registry=self.registry)
            PlatformCollector(registry=self.registry)
            GCCollector(registry=self.registry)

    # -- raw access
    def metric(self, name: str) -> Any:
        """The prometheus_client metric object for a catalog name (e.g. "http_requests_total")."""
        return self._metrics[name]

    def _m(self, name: str, **labels: str) -> Any:
        return self._metrics[name].labels(service=self.service_name, **labels)

    # -- HTTP
    def observe_http_request(self, method: str, route: str, status: int | str, duration_seconds: float) -> None:
        """One handled HTTP request. `route` is the route template ("/v1/chat/{id}"), not the raw
        path, to keep cardinality bounded; `status` the numeric status code."""
        method = method.upper()
        self._m("http_requests_total", method=method, route=route, status=str(int(status))).inc()
        self._m("http_request_duration_seconds", method=method, route=route).observe(
            _non_negative(duration_seconds, "duration_seconds")
        )

    # -- inference
    def observe_inference(
        self,
        model: str,
        duration_seconds: float,
        *,
        status: str | bool = "success",
        tokens_in: int = 0,
        tokens_out: int = 0,
        time_to_first_token_seconds: float | None = None,
    ) -> None:
        """One model inference request: counts it, its duration, tokens and time to first token."""
        outcome = _outcome(status)
        self._m("inference_requests_total", model=model, status=outcome).inc()
        self._m("inference_request_duration_seconds", model=model).observe(
            _non_negative(duration_seconds, "duration_seconds")
        )
        self.add_tokens(model, tokens_in=tokens_in, tokens_out=tokens_out)
        if time_to_first_token_seconds is not None:
            self._m("inference_time_to_first_token_seconds", model=model).observe(
                _non_negative(time_to_first_token_seconds, "time_to_first_token_seconds")
            )

    def add_tokens(self, model: str, *, tokens_in: int = 0, tokens_out: int = 0) -> None:
        """Adds to inference_tokens_total{direction="input"|"output"} (both series are created)."""
        self._m("inference_tokens_total", model=model, direction="input").inc(_non_negative(tokens_in, "tokens_in"))
        self._m("inference_tokens_total", model=model, direction="output").inc(_non_negative(tokens_out, "tokens_out"))

    @contextmanager
    def track_inference(self, model: str) -> Iterator[_InferenceHandle]:
        """Times an inference; status is "error" if the block raises (unless handle.status is set)::

            with exporter.track_inference("llama-3-8b") as call:
                for i, tok in enumerate(stream()):
                    if i == 0:
                        call.first_token()
                call.tokens_in, call.tokens_out = usage.prompt, usage.completion
        """
        handle = _InferenceHandle(time.perf_counter())
        failed = False
        try:
            yield handle
        except BaseException:
            failed = True
            raise
        finally:
            self.observe_inference(
                model,
                time.perf_counter() - handle._started,
                status=handle.status or ("error" if failed else "success"),
                tokens_in=handle.tokens_in,
                tokens_out=handle.tokens_out,
                time_to_first_token_seconds=handle.time_to_first_token_seconds,
            )

    # -- MCP tools
    def observe_tool_call(self, tool: str, duration_seconds: float, *, status: str | bool = "success") -> None:
        self._m("mcp_tool_calls_total", tool=tool, status=_outcome(status)).inc()
        self._m("mcp_tool_call_duration_seconds", tool=tool).observe(_non_negative(duration_seconds, "duration_seconds"))

    @contextmanager
    def track_tool_call(self, tool: str) -> Iterator[None]:
        """Times an MCP tool call; status "error" if the block raises."""
        yield from self._track(lambda d, s: self.observe_tool_call(tool, d, status=s))

    # -- memory engine
    def observe_memory_op(self, operation: str, duration_seconds: float, *, status: str | bool = "success") -> None:
        self._m("memory_operations_total", operation=operation, status=_outcome(status)).inc()
        self._m("memory_operation_duration_seconds", operation=operation).observe(
            _non_negative(duration_seconds, "duration_seconds")
        )

    @contextmanager
    def track_memory_op(self, operation: str) -> Iterator[None]:
        """Times a memory-engine operation; status "error" if the block raises."""
        yield from self._track(lambda d, s: self.observe_memory_op(operation, d, status=s))

    @staticmethod
    def _track(record: Callable[[float, str], None]) -> Iterator[None]:
        started = time.perf_counter()
        status = "success"
        try:
            yield
        except BaseException:
            status = "error"
            raise
        finally:
            record(time.perf_counter() - started, status)

    # -- budgets, drift
    def set_budget(self, budget: str, *, spend_dollars: float | None = None, limit_dollars: float | None = None) -> None:
        if spend_dollars is not None:
            self._m("budget_spend_dollars", budget=budget).set(float(spend_dollars))
        if limit_dollars is not None:
            self._m("budget_limit_dollars", budget=budget).set(float(limit_dollars))

    def add_budget_spend(self, budget: str, dollars: float) -> None:
        self._m("budget_spend_dollars", budget=budget).inc(float(dollars))

    def set_drift_score(self, model: str, feature: str, score: float) -> None:
        self._m("model_drift_score", model=model, feature=feature).set(float(score))

    # -- GPU (for services that read their own GPU)
    def set_gpu(
        self,
        gpu: str,
        *,
        utilization_ratio: float | None = None,
        memory_used_bytes: float | None = None,
        memory_total_bytes: float | None = None,
        temperature_celsius: float | None = None,
    ) -> None:
        """`utilization_ratio` is 0..1 (not percent); `gpu` identifies the device (index or uuid)."""
        gpu = str(gpu)
        if utilization_ratio is not None:
            ratio = float(utilization_ratio)
            if not 0.0 <= ratio <= 1.0:
                raise ValueError(f"utilization_ratio must be within 0..1, got {ratio!r}")
            self._m("gpu_utilization_ratio", gpu=gpu).set(ratio)
        if memory_used_bytes is not None:
            self._m("gpu_memory_used_bytes", gpu=gpu).set(_non_negative(memory_used_bytes, "memory_used_bytes"))
        if memory_total_bytes is not None:
            self._m("gpu_memory_total_bytes", gpu=gpu).set(_non_negative(memory_total_bytes, "memory_total_bytes"))
        if temperature_celsius is not None:
            self._m("gpu_temperature_celsius", gpu=gpu).set(float(temperature_celsius))

    # -- router, queues, caches
    def record_router_decision(self, model: str, reason: str) -> None:
        self._m("router_decisions_total", model=model, reason=reason).inc()

    def set_queue_depth(self, queue: str, depth: float) -> None:
        self._m("request_queue_depth", queue=queue).set(_non_negative(depth, "depth"))

    def cache_hit(self, cache: str, count: int = 1) -> None:
        self._m("cache_hits_total", cache=cache).inc(_non_negative(count, "count"))

    def cache_miss(self, cache: str, count: int = 1) -> None:
        self._m("cache_misses_total", cache=cache).inc(_non_negative(count, "count"))

    # -- serving
    def start_http_server(self, port: int, addr: str = "0.0.0.0") -> tuple[Any, threading.Thread]:
        """Serves this registry on http://addr:port/metrics in a daemon thread (port 0 picks a free
        port: ``server.server_port``). Returns (server, thread); ``server.shutdown()`` stops it."""
        return _start_http_server(port, addr=addr, registry=self.registry)

    def wsgi_app(self) -> Callable:
        return make_wsgi_app(registry=self.registry)

    def asgi_app(self, path: str | None = "/metrics") -> Callable:
        """An ASGI app serving this registry.

        Standalone (``uvicorn module:app``) it answers GET/HEAD on `path` (404 elsewhere, 405 for
        other methods) and completes the lifespan protocol. Mounted under a framework
        (``app.mount("/metrics", exporter.asgi_app(path=None))``) pass ``path=None`` to answer on
        whatever path routes to it.
        """
        inner = make_asgi_app(registry=self.registry)
        want = None if path is None else (path.rstrip("/") or "/")

        async def app(scope: dict, receive: Callable, send: Callable) -> None:
            kind = scope.get("type")
            if kind == "lifespan":
                while True:
                    message = await receive()
                    if message["type"] == "lifespan.startup":
                        await send({"type": "lifespan.startup.complete"})
                    elif message["type"] == "lifespan.shutdown":
                        await send({"type": "lifespan.shutdown.complete"})
                        return
            if kind != "http":
                return
            req_path = scope.get("path", "/").rstrip("/") or "/"
            if want is not None and req_path != want:
                await _plain(send, 404, b"not found\n")
                return
            if scope.get("method", "GET") not in ("GET", "HEAD"):
                await _plain(send, 405, b"method not allowed\n", [(b"allow", b"GET, HEAD")])
                return
            if scope.get("method") == "HEAD":
                await inner(scope, receive, _drop_body(send))
                return
            await inner(scope, receive, send)

        return app


async def _plain(send: Callable, status: int, body: bytes, headers: list | None = None) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"text/plain; charset=utf-8"), *(headers or [])],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _drop_body(send: Callable) -> Callable:
    async def wrapped(message: dict) -> None:
        if message.get("type") == "http.response.body":
            message = {**message, "body": b""}
        await send(message)

    return wrapped


_exporters: dict[str, MetricsExporter] = {}
_exporters_lock = threading.Lock()


def get_metrics_exporter(service_name: str) -> MetricsExporter:
    """The exporter for `service_name`, created on first use (one per service name, each with its
    own registry). Use :class:`MetricsExporter` directly for an independent instance."""
    with _exporters_lock:
        exporter = _exporters.get(service_name)
        if exporter is None:
            exporter = MetricsExporter(service_name)
            _exporters[service_name] = exporter
        return exporter
