"""metrics_exporter: the contract's catalog in the exporter's own registry, recording, serving."""

from __future__ import annotations

import asyncio
import gzip
import urllib.request

import prometheus_client
import pytest
from prometheus_client.parser import text_string_to_metric_families

from sluice_clients.metrics_exporter import CATALOG, MetricsExporter, get_metrics_exporter
from sluice_testlib import CONTRACT_CATALOG, exercise, series_index

SVC = "checkout-api"


@pytest.fixture
def exporter():
    exp = MetricsExporter(SVC)
    exercise(exp)
    return exp


def value(exporter, name, **labels):
    v = exporter.registry.get_sample_value(name, {"service": SVC, **labels})
    assert v is not None, f"no sample {name}{labels}"
    return v


def test_catalog_in_registry_matches_the_contract(exporter):
    index = series_index(exporter.registry)
    families = {fam.name: fam.type for fam in exporter.registry.collect()}
    for name, (kind, labels) in CONTRACT_CATALOG.items():
        if kind == "counter":
            assert name.endswith("_total")
            assert families.get(name[: -len("_total")]) == "counter", name
            assert index[name][:2] == ("counter", labels), name
        elif kind == "gauge":
            assert families.get(name) == "gauge", name
            assert index[name][:2] == ("gauge", labels), name
        else:
            assert families.get(name) == "histogram", name
            assert index[name + "_bucket"][:2] == ("histogram", labels | {"le"}), name
            assert index[name + "_sum"][:2] == ("histogram", labels), name
            assert index[name + "_count"][:2] == ("histogram", labels), name
    # and nothing besides the catalog (plus the standard process/platform/gc collectors)
    ours = {f for f in families if not f.startswith(("process_", "python_"))}
    expected = {n[: -len("_total")] if k == "counter" else n for n, (k, _) in CONTRACT_CATALOG.items()}
    assert ours == expected
    assert {s.name: (s.type, frozenset(s.labels)) for s in CATALOG} == CONTRACT_CATALOG


def test_every_histogram_has_the_contract_buckets(exporter):
    index = series_index(exporter.registry)
    for spec in CATALOG:
        if spec.type != "histogram":
            continue
        les = {
            float(s.labels["le"])
            for fam in exporter.registry.collect()
            for s in fam.samples
            if s.name == spec.name + "_bucket"
        }
        assert {0.5, 1.0, 2.0, 2.5, 5.0, 10.0} <= les, spec.name
        assert float("inf") in les
        assert spec.name + "_bucket" in index


def test_recorded_values_and_labels(exporter):
    assert value(exporter, "http_requests_total", method="GET", route="/v1/chat/{id}", status="200") == 1
    assert value(exporter, "http_requests_total", method="POST", route="/v1/chat", status="503") == 1
    assert value(exporter, "http_request_duration_seconds_count", method="POST", route="/v1/chat") == 1
    assert value(exporter, "http_request_duration_seconds_sum", method="POST", route="/v1/chat") == pytest.approx(2.7)
    assert value(exporter, "http_request_duration_seconds_bucket", method="POST", route="/v1/chat", le="2.5") == 0
    assert value(exporter, "http_request_duration_seconds_bucket", method="POST", route="/v1/chat", le="5.0") == 1
    assert value(exporter, "inference_requests_total", model="llama-3-8b", status="success") == 1
    assert value(exporter, "inference_requests_total", model="llama-3-8b", status="error") == 1
    assert value(exporter, "inference_request_duration_seconds_count", model="llama-3-8b") == 2
    assert value(exporter, "inference_tokens_total", model="llama-3-8b", direction="input") == 512
    assert value(exporter, "inference_tokens_total", model="llama-3-8b", direction="output") == 128
    assert value(exporter, "inference_time_to_first_token_seconds_count", model="llama-3-8b") == 1
    assert value(exporter, "inference_time_to_first_token_seconds_sum", model="llama-3-8b") == pytest.approx(0.21)
    assert value(exporter, "mcp_tool_calls_total", tool="web_search", status="success") == 1
    assert value(exporter, "mcp_tool_calls_total", tool="web_search", status="error") == 1
    assert value(exporter, "mcp_tool_call_duration_seconds_count", tool="web_search") == 2
    assert value(exporter, "memory_operations_total", operation="recall", status="success") == 1
    assert value(exporter, "memory_operations_total", operation="store", status="error") == 1
    assert value(exporter, "memory_operation_duration_seconds_count", operation="recall") == 1
    assert value(exporter, "budget_spend_dollars", budget="team-search") == 42.5
    assert value(exporter, "budget_limit_dollars", budget="team-search") == 100.0
    assert value(exporter, "model_drift_score", model="llama-3-8b", feature="prompt_length") == 0.12
    assert value(exporter, "gpu_utilization_ratio", gpu="0") == 0.75
    assert value(exporter, "gpu_memory_used_bytes", gpu="0") == 20e9
    assert value(exporter, "gpu_memory_total_bytes", gpu="0") == 80e9
    assert value(exporter, "gpu_temperature_celsius", gpu="0") == 61
    assert value(exporter, "router_decisions_total", model="llama-3-8b", reason="cheapest") == 1
    assert value(exporter, "request_queue_depth", queue="inference") == 3
    assert value(exporter, "cache_hits_total", cache="embeddings") == 1
    assert value(exporter, "cache_misses_total", cache="embeddings") == 1


def test_track_context_managers_record_errors():
    exp = MetricsExporter("ctx", process_metrics=False)
    with exp.track_tool_call("calc"):
        pass
    with pytest.raises(RuntimeError):
        with exp.track_tool_call("calc"):
            raise RuntimeError("boom")
    with pytest.raises(KeyError):
        with exp.track_memory_op("recall"):
            raise KeyError("k")
    with exp.track_inference("m") as call:
        call.first_token()
        call.first_token()
        call.tokens_in, call.tokens_out = 10, 3
    with pytest.raises(TimeoutError):
        with exp.track_inference("m"):
            raise TimeoutError()
    get = lambda n, **l: exp.registry.get_sample_value(n, {"service": "ctx", **l})  # noqa: E731
    assert get("mcp_tool_calls_total", tool="calc", status="success") == 1
    assert get("mcp_tool_calls_total", tool="calc", status="error") == 1
    assert get("memory_operations_total", operation="recall", status="error") == 1
    assert get("inference_requests_total", model="m", status="success") == 1
    assert get("inference_requests_total", model="m", status="error") == 1
    assert get("inference_tokens_total", model="m", direction="input") == 10
    assert get("inference_tokens_total", model="m", direction="output") == 3
    assert get("inference_time_to_first_token_seconds_count", model="m") == 1


def test_invalid_values_are_rejected():
    exp = MetricsExporter("strict", process_metrics=False)
    with pytest.raises(ValueError):
        exp.observe_tool_call("t", 1.0, status="ok")
    with pytest.raises(ValueError):
        exp.observe_inference("m", 1.0, status="failed")
    with pytest.raises(ValueError):
        exp.observe_memory_op("op", -1.0)
    with pytest.raises(ValueError):
        exp.set_gpu("0", utilization_ratio=75)  # percent, not a ratio
    with pytest.raises(ValueError):
        exp.add_tokens("m", tokens_in=-1)
    with pytest.raises(ValueError):
        MetricsExporter("")
    assert exp.registry.get_sample_value("mcp_tool_calls_total", {"service": "strict", "tool": "t", "status": "ok"}) is None


def test_own_registry_and_get_returns_one_per_service():
    a = get_metrics_exporter("svc-one")
    assert get_metrics_exporter("svc-one") is a
    b = get_metrics_exporter("svc-two")
    assert b is not a and b.registry is not a.registry
    assert a.registry is not prometheus_client.REGISTRY
    a.observe_http_request("GET", "/", 200, 0.1)
    assert prometheus_client.REGISTRY.get_sample_value(
        "http_requests_total", {"service": "svc-one", "method": "GET", "route": "/", "status": "200"}
    ) is None
    assert b.registry.get_sample_value(
        "http_requests_total", {"service": "svc-one", "method": "GET", "route": "/", "status": "200"}
    ) is None
    # two independent instances for the same service do not clash
    MetricsExporter("svc-one")
    MetricsExporter("svc-one")


def test_text_exposition_parses(exporter):
    text = prometheus_client.generate_latest(exporter.registry).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families["http_requests"].type == "counter"
    assert families["http_request_duration_seconds"].type == "histogram"
    assert families["budget_spend_dollars"].type == "gauge"
    assert 'http_requests_total{method="GET",route="/v1/chat/{id}",service="checkout-api",status="200"} 1.0' in text


def test_start_http_server_serves_metrics(exporter):
    server, thread = exporter.start_http_server(0, addr="127.0.0.1")
    try:
        port = server.server_port
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
            assert resp.status == 200
            body = resp.read().decode()
        assert 'inference_tokens_total{direction="input",model="llama-3-8b",service="checkout-api"} 512.0' in body
        assert "process_cpu_seconds_total" in body or "python_info" in body
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
    assert not thread.is_alive()


def _asgi_call(app, scope_extra: dict) -> tuple[int, dict, bytes]:
    scope = {"type": "http", "method": "GET", "path": "/metrics", "query_string": b"", "headers": [], "root_path": ""}
    scope.update(scope_extra)
    sent: list[dict] = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    headers = {k.decode().lower(): v.decode() for k, v in start["headers"]}
    return start["status"], headers, body


def test_asgi_app(exporter):
    app = exporter.asgi_app()
    status, headers, body = _asgi_call(app, {})
    assert status == 200
    assert headers["content-type"].startswith("text/plain")
    assert b'cache_hits_total{cache="embeddings",service="checkout-api"} 1.0' in body
    status, _, body = _asgi_call(app, {"path": "/metrics/"})
    assert status == 200
    status, _, _ = _asgi_call(app, {"path": "/other"})
    assert status == 404
    status, headers, _ = _asgi_call(app, {"method": "POST"})
    assert status == 405 and headers["allow"] == "GET, HEAD"
    status, _, body = _asgi_call(app, {"method": "HEAD"})
    assert status == 200 and body == b""
    status, headers, body = _asgi_call(app, {"headers": [(b"accept-encoding", b"gzip")]})
    assert status == 200 and headers.get("content-encoding") == "gzip"
    assert b"cache_misses_total" in gzip.decompress(body)
    # mounted: any path routed to it
    status, _, body = _asgi_call(exporter.asgi_app(path=None), {"path": "/anything"})
    assert status == 200 and b"http_requests_total" in body


def test_asgi_lifespan(exporter):
    app = exporter.asgi_app()
    incoming = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[dict] = []

    async def receive():
        return incoming.pop(0)

    async def send(message):
        sent.append(message)

    asyncio.run(app({"type": "lifespan"}, receive, send))
    assert sent == [{"type": "lifespan.startup.complete"}, {"type": "lifespan.shutdown.complete"}]


def test_wsgi_app(exporter):
    app = exporter.wsgi_app()
    captured = {}

    def start_response(status, headers):
        captured["status"] = status

    body = b"".join(app({"REQUEST_METHOD": "GET", "PATH_INFO": "/metrics", "QUERY_STRING": ""}, start_response))
    assert captured["status"].startswith("200")
    assert b"router_decisions_total" in body


def test_catalog_names_follow_prometheus_conventions():
    import re

    for spec in CATALOG:
        assert re.fullmatch(r"[a-z_][a-z0-9_]*", spec.name), spec.name
        assert spec.labels[0] == "service"
        if spec.type == "counter":
            assert spec.name.endswith("_total")
        else:
            assert not spec.name.endswith("_total")
        if spec.type == "histogram":
            assert spec.name.endswith("_seconds")


def test_metric_accessor(exporter):
    assert isinstance(exporter.metric("http_requests_total"), prometheus_client.Counter)
    with pytest.raises(KeyError):
        exporter.metric("nope")

