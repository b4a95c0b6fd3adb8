"""End to end: a GPU exporter breaches HighGPUTemperature, the real Prometheus
evaluates the project's alerts.yml, the real Alertmanager routes the alert with
the project's alertmanager.yml, and a Slack-compatible webhook receiver gets the
message in #ai-platform-gpu with the alert's name and value.

Prometheus (Debian's `prometheus`) and Alertmanager (`prometheus-alertmanager`)
run on 127.0.0.1 with free ports and temporary data directories; a session-scoped
fixture starts them and stops them, also when a test fails.

What is changed for the test, and only in temporary copies (the shipped files
are read, never edited):
  * alertmanager.yml: slack_api_url_file points to a file holding the local
    receiver's URL (the shipped file points to the secret the entrypoint
    writes), the templates glob is made absolute, and every route's group_wait
    and group_interval are shortened to 1s so the first notification leaves at
    once instead of after 10-30 s. Receivers, channels, matchers, continue
    flags and inhibition rules are the shipped ones.
  * alerts.yml: the `for:` of HighGPUTemperature (5m) and HighGPUUtilization
    (30m) is shortened to 3s. Waiting the real 5 minutes would make this test
    dominate the suite (and 30 minutes is out of the question); the expression,
    threshold, labels and annotations are the shipped ones, and the real `for`
    durations are covered by promtool's unit tests (alerts_test.yml).
  * prometheus.yml: a test config (scrape and evaluation every 1s) with one
    scrape job named like the shipped one, `nvidia-gpu-exporter`, pointing at
    the test exporter.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest

from stack_helpers import (
    ALERTMANAGER_DIR,
    ALERTMANAGER_FILE,
    ALERTS_FILE,
    FIXTURES,
    ManagedProcess,
    MetricsExporter,
    SlackReceiver,
    alert_rules,
    free_port,
    http_get,
    http_get_json,
    load_yaml,
    tool,
    wait_until,
    write_yaml,
)

GPU_CHANNEL = "#ai-platform-gpu"
CRITICAL_CHANNEL = "#ai-platform-critical"
HOT_GPU_UUID = "GPU-5b2f7c1e-9a0d-4e61-8c3b-2d7e9f104a11"
SHORT_FOR = "3s"
SHORTENED_ALERTS = ("HighGPUTemperature", "HighGPUUtilization")

STARTUP_TIMEOUT = 60
# From start: ~2 scrapes + 3s `for` + 1s group_wait; generous for a loaded 2-core CI machine.
NOTIFY_TIMEOUT = 120


def render_rules(dst: Path) -> dict:
    rules = load_yaml(ALERTS_FILE)
    shortened = set()
    for group in rules["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") in SHORTENED_ALERTS:
                rule["for"] = SHORT_FOR
                shortened.add(rule["alert"])
    assert shortened == set(SHORTENED_ALERTS), f"alerts.yml lacks {set(SHORTENED_ALERTS) - shortened}"
    write_yaml(dst, rules)
    return rules


def _shorten_route(route: dict):
    route["group_wait"] = "1s"
    route["group_interval"] = "1s"
    for child in route.get("routes", []):
        _shorten_route(child)


def render_alertmanager(dst: Path, url_file: Path) -> dict:
    shipped = load_yaml(ALERTMANAGER_FILE)
    cfg = copy.deepcopy(shipped)
    cfg["global"]["slack_api_url_file"] = str(url_file)
    cfg["templates"] = [str(ALERTMANAGER_DIR / t) for t in shipped["templates"]]
    _shorten_route(cfg["route"])
    # Only those keys differ from the shipped file.
    assert cfg["receivers"] == shipped["receivers"]
    assert cfg["inhibit_rules"] == shipped["inhibit_rules"]
    write_yaml(dst, cfg)
    return cfg


class Stack:
    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.procs: list[ManagedProcess] = []
        self.servers = []

    def stop(self):
        for p in reversed(self.procs):
            p.stop()
        for s in reversed(self.servers):
            s.stop()


@pytest.fixture(scope="session")
def alerting_stack(tmp_path_factory):
    prometheus_bin = tool("prometheus")
    alertmanager_bin = tool("prometheus-alertmanager")
    tmp = tmp_path_factory.mktemp("alerting")
    stack = Stack(tmp)
    try:
        stack.slack = SlackReceiver()
        stack.servers.append(stack.slack)
        stack.exporter = MetricsExporter((FIXTURES / "nvidia_gpu_exporter_hot.metrics").read_text())
        stack.servers.append(stack.exporter)

        url_file = tmp / "slack_webhook_url"
        stack.webhook_path = "/services/T000TEST/B000TEST/e2e"
        url_file.write_text(f"http://127.0.0.1:{stack.slack.port}{stack.webhook_path}")
        am_cfg = render_alertmanager(tmp / "alertmanager.yml", url_file)
        stack.am_cfg = am_cfg
        render_rules(tmp / "alerts.yml")

        am_port = free_port()
        stack.am_url = f"http://127.0.0.1:{am_port}"
        (tmp / "am-data").mkdir()
        stack.procs.append(
            ManagedProcess(
                "alertmanager",
                [
                    alertmanager_bin,
                    f"--config.file={tmp / 'alertmanager.yml'}",
                    f"--storage.path={tmp / 'am-data'}",
                    f"--web.listen-address=127.0.0.1:{am_port}",
                    "--cluster.listen-address=",  # no gossip port: a single test instance
                    "--log.level=debug",
                ],
                tmp,
            )
        )

        prom_cfg = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "1s"},
            "rule_files": [str(tmp / "alerts.yml")],
            "alerting": {"alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{am_port}"]}]}]},
            "scrape_configs": [
                {
                    "job_name": "nvidia-gpu-exporter",
                    "static_configs": [{"targets": [f"127.0.0.1:{stack.exporter.port}"]}],
                }
            ],
        }
        write_yaml(tmp / "prometheus.yml", prom_cfg)
        prom_port = free_port()
        stack.prom_url = f"http://127.0.0.1:{prom_port}"
        (tmp / "prom-data").mkdir()
        stack.procs.append(
            ManagedProcess(
                "prometheus",
                [
                    prometheus_bin,
                    f"--config.file={tmp / 'prometheus.yml'}",
                    f"--storage.tsdb.path={tmp / 'prom-data'}",
                    f"--web.listen-address=127.0.0.1:{prom_port}",
                    "--log.level=debug",
                ],
                tmp,
            )
        )

        for proc, url in ((stack.procs[0], stack.am_url), (stack.procs[1], stack.prom_url)):

            def ready(proc=proc, url=url):
                proc.assert_running()
                return http_get(f"{url}/-/ready", timeout=2)[0] == 200

            wait_until(ready, STARTUP_TIMEOUT, what=f"{proc.name} to be ready")
        yield stack
    finally:
        stack.stop()


def _gpu_posts(stack) -> list[dict]:
    return [p for p in stack.slack.snapshot() if p["body"].get("channel") == GPU_CHANNEL]


def _attachment_text(post: dict) -> str:
    return "\n".join(f"{a.get('title', '')}\n{a.get('text', '')}" for a in post["body"].get("attachments", []))


def test_prometheus_loaded_the_shipped_rules(alerting_stack):
    groups = http_get_json(f"{alerting_stack.prom_url}/api/v1/rules")["data"]["groups"]
    loaded = {r["name"]: r for g in groups for r in g["rules"] if r["type"] == "alerting"}
    shipped = {r["alert"]: r for r in alert_rules()}
    assert set(loaded) == set(shipped)
    for name, rule in shipped.items():
        assert loaded[name]["labels"] == rule["labels"], name
        assert loaded[name]["annotations"] == rule["annotations"], name
    assert "> 85" in loaded["HighGPUTemperature"]["query"]
    assert loaded["HighGPUTemperature"]["duration"] == 3  # the test copy's shortened `for`
    assert loaded["ServiceDown"]["duration"] == 120  # every other `for` is the shipped one


def test_gpu_temperature_alert_reaches_the_gpu_channel(alerting_stack):
    stack = alerting_stack

    def temperature_post():
        for proc in stack.procs:
            proc.assert_running()
        for post in _gpu_posts(stack):
            if "HighGPUTemperature" in _attachment_text(post):
                return post
        return None

    try:
        post = wait_until(temperature_post, NOTIFY_TIMEOUT, interval=0.5, what="a Slack post for HighGPUTemperature")
    except AssertionError:
        alerts = http_get(f"{stack.prom_url}/api/v1/alerts")[1][:2000]
        raise AssertionError(
            f"no HighGPUTemperature post in {GPU_CHANNEL}.\nposts: {stack.slack.snapshot()}\n"
            f"prometheus alerts: {alerts!r}\nalertmanager log:\n{stack.procs[0].log_tail()}"
        ) from None

    assert post["path"] == stack.webhook_path  # the URL came from slack_api_url_file
    body = post["body"]
    assert body["channel"] == GPU_CHANNEL
    assert body["username"] == "alertmanager"
    (attachment,) = body["attachments"]
    assert attachment["title"].startswith("[FIRING:1] HighGPUTemperature")
    assert attachment["color"] == "danger"
    text = attachment["text"]
    # The alert name, its severity and category, and the value from the exporter (93 °C).
    assert "*HighGPUTemperature* · critical · gpu" in text
    assert "GPU 0 (NVIDIA H100 80GB HBM3) on 127.0.0.1:" in text
    assert re.search(r"is at 93°C\n", text), text
    assert "has been above 85°C for 5 minutes (now 93°C)" in text
    assert f"uuid={HOT_GPU_UUID}" in text
    assert "Runbook: docs/OPERATIONS.md#gpu-alerts" in text
    # Only the hot GPU: the idle L40S at 34 °C must not appear.
    assert "L40S" not in text


def test_critical_gpu_alert_also_pages_the_critical_channel(alerting_stack):
    stack = alerting_stack

    def critical_post():
        for post in stack.slack.snapshot():
            if post["body"].get("channel") == CRITICAL_CHANNEL and "HighGPUTemperature" in _attachment_text(post):
                return post
        return None

    post = wait_until(critical_post, NOTIFY_TIMEOUT, interval=0.5, what=f"HighGPUTemperature in {CRITICAL_CHANNEL}")
    assert "(now 93°C)" in _attachment_text(post)


def test_critical_temperature_inhibits_the_utilization_warning(alerting_stack):
    """HighGPUUtilization (warning, 98%) fires for the same GPU as HighGPUTemperature
    (critical): Alertmanager must mark it suppressed and never post it."""
    stack = alerting_stack

    def utilization_suppressed():
        for alert in http_get_json(f"{stack.am_url}/api/v2/alerts?inhibited=true"):
            if alert["labels"].get("alertname") == "HighGPUUtilization":
                status = alert["status"]
                if status["state"] == "suppressed" and status["inhibitedBy"]:
                    return alert
        return None

    alert = wait_until(utilization_suppressed, NOTIFY_TIMEOUT, interval=0.5, what="HighGPUUtilization to be inhibited")
    assert alert["labels"]["uuid"] == HOT_GPU_UUID
    assert alert["labels"]["severity"] == "warning"
    # The temperature alert went out; the inhibited utilization alert did not.
    wait_until(lambda: any("HighGPUTemperature" in _attachment_text(p) for p in _gpu_posts(stack)), NOTIFY_TIMEOUT)
    assert not any("HighGPUUtilization" in _attachment_text(p) for p in stack.slack.snapshot())


def _post_alerts(am_url: str, alerts: list[dict]):
    import json
    import urllib.request

    req = urllib.request.Request(
        f"{am_url}/api/v2/alerts", data=json.dumps(alerts).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(req, timeout=5) as resp:
        assert resp.status == 200


def test_inhibition_rules_in_the_real_alertmanager(alerting_stack):
    """Alerts posted straight to Alertmanager's API, with the labels alerts.yml
    gives them: ServiceDown silences its job's other alerts, a critical alert
    silences the warning about the same thing, and nothing else is silenced."""
    rules = {r["alert"]: r["labels"] for r in alert_rules()}

    def alert(name: str, **labels: str) -> dict:
        return {"labels": {"alertname": name, **rules[name], **labels}, "annotations": {"summary": f"e2e {name}"}}

    drift = {"job": "e2e-drift-monitor", "instance": "dm:8004", "service": "drift-monitor", "model": "m1"}
    budget = {"job": "e2e-api-server", "instance": "api:8000", "service": "api-server"}
    posted = [
        alert("ServiceDown", job="e2e-gateway", instance="gateway:9002"),
        alert("HighGatewayLatency", job="e2e-gateway"),
        alert("HighErrorRate", job="e2e-other"),
        alert("HighDriftScore", feature="topic", **drift),
        alert("DriftDetected", feature="topic", **drift),
        alert("DriftDetected", feature="length", **drift),
        alert("BudgetExceeded", budget="monthly", **budget),
        alert("BudgetWarning", budget="monthly", **budget),
        alert("BudgetWarning", budget="research", **budget),
    ]
    _post_alerts(alerting_stack.am_url, posted)

    expected = {
        ("ServiceDown", None): "active",
        ("HighGatewayLatency", None): "suppressed",  # its job is down
        ("HighErrorRate", None): "active",  # another job
        ("HighDriftScore", "topic"): "active",
        ("DriftDetected", "topic"): "suppressed",  # HighDriftScore on the same model and feature
        ("DriftDetected", "length"): "active",
        ("BudgetExceeded", "monthly"): "active",
        ("BudgetWarning", "monthly"): "suppressed",  # BudgetExceeded on the same budget
        ("BudgetWarning", "research"): "active",
    }

    def current() -> dict:
        got = {}
        for a in http_get_json(f"{alerting_stack.am_url}/api/v2/alerts?inhibited=true&active=true"):
            labels = a["labels"]
            if labels.get("job", "").startswith("e2e-"):
                got[(labels["alertname"], labels.get("feature") or labels.get("budget"))] = a["status"]["state"]
        return got

    try:
        wait_until(lambda: current() == expected, 30, interval=0.5, what="the inhibition states")
    except AssertionError:
        raise AssertionError(f"expected {expected}\ngot {current()}") from None
