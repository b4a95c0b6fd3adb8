"""Every platform metric and label that configs/prometheus/rules/alerts.yml uses exists in the
exporter's registry with the right type and labels, so a renamed metric or label fails the build.

Names from the exporters, sluice and Prometheus itself are not the services' and are left out:
nvidia_smi_*, redis_*, pg_*, traces_span_metrics_*, sluice_*, up (and Prometheus' own synthetic
series scrape_*, ALERTS, ALERTS_FOR_STATE).
"""

from __future__ import annotations

import re

import pytest
import yaml

from sluice_clients.metrics_exporter import CATALOG, MetricsExporter
from sluice_promql import PromQLError, analyze, template_labels
from sluice_testlib import ALERT_RULES, exercise, series_index

IGNORED_PREFIXES = ("nvidia_smi_", "redis_", "pg_", "traces_span_metrics_", "sluice_", "scrape_")
IGNORED_NAMES = {"up", "ALERTS", "ALERTS_FOR_STATE"}
TARGET_LABELS = {"job", "instance"}  # added by Prometheus to every scraped series

# closed label value sets, from the catalog (status of HTTP is a numeric code)
ENUMERATED = {
    (spec.name, label): set(values) for spec in CATALOG for label, values in spec.values
}
HTTP_CODES = {str(c) for c in range(100, 600)}


def is_ignored(name: str) -> bool:
    return name in IGNORED_NAMES or name.startswith(IGNORED_PREFIXES)


@pytest.fixture(scope="module")
def index():
    exporter = MetricsExporter("rules-check")
    exercise(exporter)
    return series_index(exporter.registry)


@pytest.fixture(scope="module")
def rules():
    if not ALERT_RULES.is_file():
        pytest.fail(f"{ALERT_RULES} does not exist", pytrace=False)
    doc = yaml.safe_load(ALERT_RULES.read_text())
    assert isinstance(doc, dict) and isinstance(doc.get("groups"), list), f"{ALERT_RULES}: no groups"
    out = []
    for group in doc["groups"]:
        for rule in group.get("rules") or []:
            name = rule.get("alert") or rule.get("record")
            assert name and "expr" in rule, f"{ALERT_RULES}: rule without alert/record name or expr: {rule}"
            out.append((group.get("name"), rule))
    assert out, f"{ALERT_RULES} has no rules"
    return out


def _base_of(name: str) -> str:
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def check_rules(rules, index) -> tuple[list[str], set[str]]:
    """Checks every rule; returns (problems, platform metric names used)."""
    problems: list[str] = []
    used: set[str] = set()
    recorded: dict[str, frozenset[str] | None] = {}

    def lookup(name: str):
        if name in recorded:
            return recorded[name]
        if is_ignored(name):
            return None
        used.add(name)
        if name not in index:
            base = _base_of(name)
            hint = ""
            if base in {s.name for s in CATALOG}:
                hint = f" ({base} is a {next(s.type for s in CATALOG if s.name == base)})"
            problems.append(f"{where}: metric {name} is not exported by sluice_clients{hint}")
            return None
        return index[name][1] | TARGET_LABELS

    for group, rule in rules:
        name = rule.get("alert") or rule.get("record")
        where = f"{group}/{name}"
        expr = str(rule["expr"])
        try:
            analysis = analyze(expr, lookup)
        except PromQLError as exc:
            problems.append(f"{where}: cannot parse expr: {exc}")
            continue
        problems.extend(f"{where}: {p}" for p in analysis.problems)

        # types: rate() & co. want counters (or histogram buckets/sums/counts), deriv() & co. gauges,
        # histogram_quantile() classic histogram buckets
        for func, sel in analysis.counter_uses:
            if sel.name in index and index[sel.name][0] not in ("counter", "histogram"):
                problems.append(f"{where}: {func}() over {sel.name}, a {index[sel.name][0]}")
        for func, sel in analysis.gauge_uses:
            if sel.name in index and index[sel.name][0] != "gauge":
                problems.append(f"{where}: {func}() over {sel.name}, a {index[sel.name][0]}")
        for sel in analysis.bucket_uses:
            if sel.name in index and not (index[sel.name][0] == "histogram" and sel.name.endswith("_bucket")):
                problems.append(f"{where}: histogram_quantile() over {sel.name}, not a histogram _bucket series")

        # label values: closed sets must be matchable
        for sel in analysis.selectors:
            if sel.name is None or sel.name not in index:
                continue
            family = index[sel.name][2]
            for m in sel.matchers:
                allowed = ENUMERATED.get((family + "_total", m.label)) or ENUMERATED.get((family, m.label))
                if allowed is None and family == "http_requests" and m.label == "status":
                    allowed = HTTP_CODES
                if allowed is None:
                    continue
                if m.op in ("=", "!="):
                    ok = m.value in allowed
                else:
                    ok = any(re.fullmatch(m.value, v) for v in allowed)
                if not ok:
                    problems.append(
                        f"{where}: {sel.name}{{{m.label}{m.op}{m.value!r}}} matches none of the values "
                        f"the exporter writes ({', '.join(sorted(allowed)) if len(allowed) < 10 else 'HTTP status codes'})"
                    )

        # $labels.X in labels/annotations must be on the alert's series
        if analysis.labels is not None:
            for kind in ("labels", "annotations"):
                for key, text in (rule.get(kind) or {}).items():
                    missing = template_labels(str(text)) - analysis.labels
                    if missing:
                        problems.append(
                            f"{where}: {kind}.{key} reads $labels.{', $labels.'.join(sorted(missing))}, "
                            f"not on the alert's series {{{', '.join(sorted(analysis.labels))}}}"
                        )
        if "record" in rule:
            recorded[rule["record"]] = analysis.labels
    return problems, used


def test_alert_rules_use_exported_metrics_and_labels(rules, index):
    problems, used = check_rules(rules, index)
    assert not problems, "alerts.yml disagrees with the exporter:\n  " + "\n  ".join(problems)
    # the rules do read the services' metrics (the check above is not vacuous)
    assert used, "alerts.yml uses no platform metric at all"
    assert used <= set(index)


def test_checker_catches_a_renamed_metric_and_label(index):
    """The same check on doctored rules must fail, so the test above can fail."""
    doctored = [
        ("g", {"alert": "A", "expr": 'sum by (job) (rate(http_requests_total{status_code=~"5.."}[5m])) > 0'}),
        ("g", {"alert": "B", "expr": "histogram_quantile(0.95, sum by (le) (rate(http_request_latency_seconds_bucket[5m]))) > 2"}),
        ("g", {"alert": "C", "expr": 'rate(budget_spend_dollars[5m]) > 0'}),
        ("g", {"alert": "D", "expr": 'inference_requests_total{status="failed"} > 0'}),
        ("g", {"alert": "E", "expr": "sum by (job) (model_drift_score) > 0.2",
               "annotations": {"summary": "{{ $labels.model }} drifts"}}),
        ("g", {"alert": "F", "expr": "inference_tokens > 0"}),
        ("g", {"record": "job:cache_hits:rate5m", "expr": "sum by (job) (rate(cache_hits_total[5m]))"}),
        ("g", {"alert": "G", "expr": "sum by (cache) (job:cache_hits:rate5m) > 0"}),
        ("g", {"alert": "H", "expr": "nvidia_smi_temperature_gpu{whatever=\"x\"} > 85 or up == 0"}),
    ]
    problems, used = check_rules(doctored, index)
    text = "\n".join(problems)
    assert "A: selector http_requests_total" in text and "{status_code}" in text
    assert "B: metric http_request_latency_seconds_bucket is not exported" in text
    assert "C: rate() over budget_spend_dollars, a gauge" in text
    assert "D: inference_requests_total{status='failed'} matches none" in text
    assert "E: annotations.summary reads $labels.model" in text
    assert "F: metric inference_tokens is not exported" in text
    assert "G: sum by (cache)" in text and "{cache}" in text
    assert not any(p.startswith("g/H") for p in problems)
    assert len(problems) == 7, text
    assert "nvidia_smi_temperature_gpu" not in used and "up" not in used
