"""configs/grafana/provisioning: data sources with their fixed uids and links,
the dashboards provider, and dashboards whose every PromQL query parses
(promtool) and uses only catalog metrics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stack_helpers import REPO, load_yaml, run, tool, write_yaml
from metric_catalog import SLUICE, series_names
from promql_names import metric_names, substitute_grafana_variables

PROVISIONING = REPO / "configs" / "grafana" / "provisioning"
DASHBOARD_DIR = PROVISIONING / "dashboards"
DASHBOARDS = sorted(DASHBOARD_DIR.glob("*.json"))


def datasources() -> dict[str, dict]:
    doc = load_yaml(PROVISIONING / "datasources" / "datasources.yaml")
    assert doc["apiVersion"] == 1
    return {d["uid"]: d for d in doc["datasources"]}


def load_dashboard(path: Path) -> dict:
    return json.loads(path.read_text())


def panels(dashboard: dict):
    for p in dashboard["panels"]:
        yield p
        yield from p.get("panels", [])


def prom_queries(dashboard: dict) -> list[tuple[str, str]]:
    out = []
    for p in panels(dashboard):
        for t in p.get("targets", []):
            ds = t.get("datasource") or p.get("datasource") or {}
            if ds.get("uid") == "prometheus" and t.get("expr"):
                out.append((p["title"], t["expr"]))
    for var in dashboard.get("templating", {}).get("list", []):
        if var.get("type") == "query" and var.get("datasource", {}).get("uid") == "prometheus":
            q = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            # label_values(<series selector>, label): check the selector's metric
            inner = q[len("label_values("):].rsplit(",", 1)[0] if q.startswith("label_values(") else q
            out.append((f"variable {var['name']}", inner))
    return out


def test_datasources_and_uids():
    ds = datasources()
    assert set(ds) == {"prometheus", "loki", "jaeger"}
    assert (ds["prometheus"]["type"], ds["prometheus"]["url"]) == ("prometheus", "http://prometheus:9090")
    assert ds["prometheus"]["isDefault"] is True
    assert (ds["loki"]["type"], ds["loki"]["url"]) == ("loki", "http://loki:3100")
    assert (ds["jaeger"]["type"], ds["jaeger"]["url"]) == ("jaeger", "http://jaeger:16686")


def test_loki_trace_id_links_to_jaeger():
    (field,) = datasources()["loki"]["jsonData"]["derivedFields"]
    assert field["datasourceUid"] == "jaeger"
    assert field["matcherType"] == "label"  # trace_id is structured metadata
    assert field["matcherRegex"] == "trace_id"
    # `$$` in the file is a literal `$` once Grafana expands environment variables
    assert field["url"] == "$${__value.raw}"


def test_jaeger_traces_link_to_loki_logs():
    t2l = datasources()["jaeger"]["jsonData"]["tracesToLogsV2"]
    assert t2l["datasourceUid"] == "loki"
    assert t2l["filterByTraceID"] is True
    assert {"key": "service.name", "value": "service"} in t2l["tags"]
    assert t2l["query"] == '{$${__tags}} | trace_id="$${__trace.traceId}"'


def test_dashboard_provider_points_at_the_json():
    doc = load_yaml(DASHBOARD_DIR / "dashboards.yaml")
    (provider,) = doc["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == "/etc/grafana/provisioning/dashboards"
    compose = load_yaml(REPO / "docker-compose.yaml")
    assert "./configs/grafana/provisioning:/etc/grafana/provisioning:ro" in compose["services"]["grafana"]["volumes"]


def test_dashboards_have_the_expected_uids():
    uids = {load_dashboard(p)["uid"]: p.name for p in DASHBOARDS}
    assert uids == {"sluice-health": "sluice-health.json", "platform-overview": "platform-overview.json"}


@pytest.mark.parametrize("path", DASHBOARDS, ids=[p.name for p in DASHBOARDS])
def test_dashboard_structure(path):
    d = load_dashboard(path)
    ids = [p["id"] for p in panels(d)]
    assert len(ids) == len(set(ids)), "duplicate panel ids"
    known = set(datasources())
    for p in panels(d):
        if p["type"] == "row":
            continue
        assert p["datasource"]["uid"] in known, p["title"]
        assert p["targets"], p["title"]
        for t in p["targets"]:
            assert t["datasource"]["uid"] in known
        pos = p["gridPos"]
        assert 0 <= pos["x"] and pos["x"] + pos["w"] <= 24, p["title"]


@pytest.mark.parametrize("path", DASHBOARDS, ids=[p.name for p in DASHBOARDS])
def test_dashboard_queries_use_catalog_metrics(path):
    queries = prom_queries(load_dashboard(path))
    assert queries
    allowed = series_names()
    for title, expr in queries:
        used = metric_names(expr)
        assert used, f"{title}: no metric found in {expr!r}"
        assert used <= allowed, f"{title}: {used - allowed} not in the catalog"


@pytest.mark.parametrize("path", DASHBOARDS, ids=[p.name for p in DASHBOARDS])
def test_dashboard_queries_parse(path, tmp_path):
    """Every PromQL query, with Grafana's variables filled in, is valid for promtool."""
    queries = prom_queries(load_dashboard(path))
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query_{i}", "expr": substitute_grafana_variables(expr)} for i, (_, expr) in enumerate(queries)
    ]}]}
    rules_file = write_yaml(tmp_path / "dashboard-rules.yml", rules)
    result = run([tool("promtool"), "check", "rules", str(rules_file)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(queries)} rules found" in result.stdout


def test_query_parse_check_can_fail(tmp_path):
    rules = {"groups": [{"name": "x", "rules": [{"record": "x:y", "expr": "sum(rate(up[5m])"}]}]}
    result = run([tool("promtool"), "check", "rules", str(write_yaml(tmp_path / "r.yml", rules))])
    assert result.returncode != 0


def test_sluice_dashboard_covers_its_health():
    queries = " ".join(expr for _, expr in prom_queries(load_dashboard(DASHBOARD_DIR / "sluice-health.json")))
    used = metric_names(queries)
    # lines/s, drops, retries, queue, reloads
    assert SLUICE - used == set(), f"sluice metrics without a panel: {SLUICE - used}"
    assert 'result!="success"' in queries


def test_platform_dashboard_covers_the_alert_areas():
    d = load_dashboard(DASHBOARD_DIR / "platform-overview.json")
    used = set()
    for _, expr in prom_queries(d):
        used |= metric_names(expr)
    for metric in (
        "http_request_duration_seconds_bucket", "http_requests_total", "inference_requests_total",
        "nvidia_smi_utilization_gpu_ratio", "nvidia_smi_memory_used_bytes", "nvidia_smi_temperature_gpu",
        "model_drift_score", "budget_spend_dollars", "budget_limit_dollars",
    ):
        assert metric in used, metric
    loki = [t["expr"] for p in panels(d) for t in p.get("targets", []) if t["datasource"]["uid"] == "loki"]
    assert loki and all("level=" in e for e in loki)
