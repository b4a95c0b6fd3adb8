"""configs/prometheus: promtool's checks and unit tests, and the rules' policy
(labels, annotations, metric names, a firing and a quiet unit test per alert)."""

from __future__ import annotations

import re

import pytest

from stack_helpers import (
    ALERTS_FILE,
    ALERTS_TEST_FILE,
    PROMETHEUS_DIR,
    REPO,
    alert_rules,
    load_yaml,
    run,
    tool,
)
from metric_catalog import series_names
from promql_names import metric_names

# Service -> (job name, target) as the issue lists the platform's ports.
EXPECTED_TARGETS = {
    "gateway": "gateway:9002",
    "mcpjungle": "mcpjungle:9100",
    "api-server": "api-server:8000",
    "max-serve-llama": "max-serve-llama:8080",
    "max-serve-qwen": "max-serve-qwen:8081",
    "max-serve-deepseek": "max-serve-deepseek:8082",
    "memory-service": "memory-service:8001",
    "data-collection": "data-collection:8002",
    "learning-engine": "learning-engine:8003",
    "drift-monitor": "drift-monitor:8004",
    "maml-service": "maml-service:8005",
    "qdrant": "qdrant:6333",
    "redis-exporter": "redis-exporter:9121",
    "postgres-exporter": "postgres-exporter:9187",
    "nvidia-gpu-exporter": "nvidia-gpu-exporter:9835",
    "loki": "loki:3100",
    "sluice": "sluice:9080",
}

SEVERITIES = {"critical", "warning"}
CATEGORIES = {"latency", "errors", "gpu", "drift", "budget", "capacity", "infra", "telemetry"}
# Alerts on a state rather than a measured value: no $value in their text.
STATE_ALERTS = {"ServiceDown", "SluiceConfigReloadFailed"}


def _duration_seconds(text: str) -> int:
    total = 0
    for number, unit in re.findall(r"(\d+)([smhd])", text):
        total += int(number) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[unit]
    return total


def test_promtool_check_config():
    # rule_files in prometheus.yml are relative to the file's directory, so the
    # shipped file is checked in place, with its rules.
    result = run([tool("promtool"), "check", "config", str(PROMETHEUS_DIR / "prometheus.yml")])
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout + result.stderr
    assert "SUCCESS: 1 rule files found" in out
    assert f"SUCCESS: {len(alert_rules())} rules found" in out


def test_promtool_check_rules():
    result = run([tool("promtool"), "check", "rules", str(ALERTS_FILE)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in result.stdout


def test_promtool_unit_tests_pass():
    result = run([tool("promtool"), "test", "rules", ALERTS_TEST_FILE.name], cwd=ALERTS_TEST_FILE.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_unit_tests_can_fail(tmp_path):
    """The unit tests catch a changed threshold: a copy of alerts.yml with
    HighGPUTemperature at 95 °C must fail them."""
    text = ALERTS_FILE.read_text()
    mutated = text.replace(") > 85\n", ") > 95\n")
    assert mutated != text
    (tmp_path / "alerts.yml").write_text(mutated)
    (tmp_path / "alerts_test.yml").write_text(ALERTS_TEST_FILE.read_text())
    result = run([tool("promtool"), "test", "rules", "alerts_test.yml"], cwd=tmp_path)
    assert result.returncode != 0
    assert "HighGPUTemperature" in result.stdout + result.stderr


def test_prometheus_config_shape():
    cfg = load_yaml(PROMETHEUS_DIR / "prometheus.yml")
    assert cfg["global"]["scrape_interval"] == "15s"
    assert cfg["global"]["evaluation_interval"] == "15s"
    assert cfg["rule_files"] == ["rules/alerts.yml"]
    ams = cfg["alerting"]["alertmanagers"]
    assert [t for am in ams for sc in am["static_configs"] for t in sc["targets"]] == ["alertmanager:9093"]
    jobs = {}
    for job in cfg["scrape_configs"]:
        targets = [t for sc in job["static_configs"] for t in sc["targets"]]
        jobs[job["job_name"]] = targets
    for job, target in EXPECTED_TARGETS.items():
        assert jobs.get(job) == [target], f"job {job}: {jobs.get(job)}"
    # the collector's 8888 and Promtail's 9080 targets are gone: sluice replaces both
    all_targets = [t for ts in jobs.values() for t in ts]
    assert not [t for t in all_targets if t.endswith(":8888")]
    assert [t for t in all_targets if t.endswith(":9080")] == ["sluice:9080"]


ALERT_NAMES = [r["alert"] for r in alert_rules()]

REQUIRED_ALERTS = {
    "HighGatewayLatency", "HighMCPJungleLatency", "HighMaxServeLatency", "HighMemoryEngineLatency",
    "HighErrorRate", "HighMaxServeErrorRate", "HighMCPErrorRate",
    "HighGPUUtilization", "HighGPUMemory", "HighGPUTemperature",
    "DriftDetected", "HighDriftScore", "BudgetExceeded", "BudgetWarning",
    "ServiceDown", "HighRequestQueueDepth", "PostgreSQLPoolExhausted", "RedisMemoryHigh",
    "HighTraceErrorRate",
    "SluiceSinkDroppingLines", "SluiceSourceDroppingLines", "SluiceSinkPushFailing", "SluiceConfigReloadFailed",
}


def test_required_alerts_exist_once():
    assert len(ALERT_NAMES) == len(set(ALERT_NAMES)), "duplicate alert names"
    assert REQUIRED_ALERTS <= set(ALERT_NAMES), REQUIRED_ALERTS - set(ALERT_NAMES)


@pytest.mark.parametrize("rule", alert_rules(), ids=ALERT_NAMES)
def test_alert_policy(rule):
    name = rule["alert"]
    assert rule["labels"]["severity"] in SEVERITIES
    assert rule["labels"]["category"] in CATEGORIES
    assert set(rule["annotations"]) == {"summary", "description", "runbook"}
    assert 60 <= _duration_seconds(rule["for"]) <= 30 * 60, f"{name}: for {rule['for']}"
    text = rule["annotations"]["summary"] + rule["annotations"]["description"]
    if name not in STATE_ALERTS:
        assert "$value" in rule["annotations"]["summary"], f"{name}: summary without the value"
        assert "$value" in rule["annotations"]["description"], f"{name}: description without the value"
    assert "$labels" in text, f"{name}: no label in the text"
    runbook = rule["annotations"]["runbook"]
    assert runbook.startswith("docs/OPERATIONS.md#")


@pytest.mark.parametrize("rule", alert_rules(), ids=ALERT_NAMES)
def test_alert_uses_catalog_metrics(rule):
    used = metric_names(rule["expr"])
    assert used, rule["expr"]
    unknown = used - series_names()
    assert not unknown, f"{rule['alert']} uses metrics outside the catalog: {unknown}"


def _unit_cases():
    doc = load_yaml(ALERTS_TEST_FILE)
    assert doc["rule_files"] == ["alerts.yml"]
    cases: dict[str, list[tuple[int, list]]] = {}
    for test in doc["tests"]:
        for case in test.get("alert_rule_test", []):
            cases.setdefault(case["alertname"], []).append((_duration_seconds(case["eval_time"]), case["exp_alerts"]))
    return cases


@pytest.mark.parametrize("rule", alert_rules(), ids=ALERT_NAMES)
def test_every_alert_has_a_firing_and_a_quiet_unit_test(rule):
    cases = _unit_cases().get(rule["alert"], [])
    firing = [alerts for _, alerts in cases if alerts]
    assert firing, f"{rule['alert']}: no unit test where it fires"
    for alerts in firing:
        for alert in alerts:
            # labels and every annotation are checked, not just the name
            assert alert["exp_labels"]["severity"] == rule["labels"]["severity"]
            assert alert["exp_labels"]["category"] == rule["labels"]["category"]
            assert set(alert["exp_annotations"]) == set(rule["annotations"])
    # quiet after the `for` has long passed: a threshold test, not a "not yet" test
    for_s = _duration_seconds(rule["for"])
    quiet = [t for t, alerts in cases if not alerts and t > for_s]
    assert quiet, f"{rule['alert']}: no unit test where it stays quiet past its `for`"


def test_shipped_rule_files_are_the_ones_in_the_repo():
    # docker-compose.yaml mounts configs/prometheus at /etc/prometheus
    compose = load_yaml(REPO / "docker-compose.yaml")
    assert "./configs/prometheus:/etc/prometheus:ro" in compose["services"]["prometheus"]["volumes"]
