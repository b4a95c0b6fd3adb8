"""configs/alertmanager: amtool's check, the channel of every alert (amtool
config routes test), the inhibition rules, the Slack URL kept out of the file,
and the entrypoint that writes it from SLACK_WEBHOOK_URL."""

from __future__ import annotations

import os
import stat
import subprocess

import pytest

from stack_helpers import ALERTMANAGER_DIR, ALERTMANAGER_FILE, alert_rules, load_yaml, run, tool

CHANNELS = {
    "slack-alerts": "#ai-platform-alerts",
    "slack-critical": "#ai-platform-critical",
    "slack-gpu": "#ai-platform-gpu",
    "slack-drift": "#ai-platform-drift",
    "slack-budget": "#ai-platform-budget",
    "slack-infra": "#ai-platform-infra",
}

# Every alert's channels, in the order Alertmanager notifies them. Critical
# alerts page #ai-platform-critical and then also reach their category's channel.
EXPECTED_CHANNELS = {
    "HighGatewayLatency": ["#ai-platform-alerts"],
    "HighMCPJungleLatency": ["#ai-platform-alerts"],
    "HighMaxServeLatency": ["#ai-platform-alerts"],
    "HighMemoryEngineLatency": ["#ai-platform-alerts"],
    "HighErrorRate": ["#ai-platform-critical"],
    "HighMaxServeErrorRate": ["#ai-platform-critical"],
    "HighMCPErrorRate": ["#ai-platform-alerts"],
    "HighTraceErrorRate": ["#ai-platform-alerts"],
    "HighGPUUtilization": ["#ai-platform-gpu"],
    "HighGPUMemory": ["#ai-platform-gpu"],
    "HighGPUTemperature": ["#ai-platform-critical", "#ai-platform-gpu"],
    "DriftDetected": ["#ai-platform-drift"],
    "HighDriftScore": ["#ai-platform-critical", "#ai-platform-drift"],
    "BudgetWarning": ["#ai-platform-budget"],
    "BudgetExceeded": ["#ai-platform-critical", "#ai-platform-budget"],
    "ServiceDown": ["#ai-platform-critical", "#ai-platform-infra"],
    "HighRequestQueueDepth": ["#ai-platform-alerts"],
    "PostgreSQLPoolExhausted": ["#ai-platform-critical", "#ai-platform-infra"],
    "RedisMemoryHigh": ["#ai-platform-infra"],
    "SluiceSinkDroppingLines": ["#ai-platform-infra"],
    "SluiceSourceDroppingLines": ["#ai-platform-infra"],
    "SluiceSinkPushFailing": ["#ai-platform-infra"],
    "SluiceSinkQueueFull": ["#ai-platform-infra"],
    "SluiceConfigReloadFailed": ["#ai-platform-infra"],
}


def receivers_by_name() -> dict[str, dict]:
    return {r["name"]: r for r in load_yaml(ALERTMANAGER_FILE)["receivers"]}


def test_amtool_check_config():
    result = run([tool("amtool"), "check-config", str(ALERTMANAGER_FILE)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
    assert " - 6 receivers" in result.stdout
    assert " - 2 inhibit rules" in result.stdout
    assert " - 1 templates" in result.stdout


def test_each_receiver_posts_to_its_channel():
    receivers = receivers_by_name()
    assert set(receivers) == set(CHANNELS)
    for name, channel in CHANNELS.items():
        (slack,) = receivers[name]["slack_configs"]
        assert slack["channel"] == channel
        assert slack["send_resolved"] is True
        assert "api_url" not in slack  # all use the global slack_api_url_file
        assert '{{ template "sluice.slack.text" . }}' == slack["text"]


def test_webhook_url_is_read_from_a_file_never_written():
    cfg = load_yaml(ALERTMANAGER_FILE)
    assert cfg["global"]["slack_api_url_file"] == "/etc/alertmanager/secrets/slack_webhook_url"
    assert "slack_api_url" not in cfg["global"]
    for path in ALERTMANAGER_DIR.rglob("*"):
        if path.is_file():
            assert "hooks.slack.com" not in path.read_text(), path


def test_every_alert_has_an_expected_channel():
    assert set(EXPECTED_CHANNELS) == {r["alert"] for r in alert_rules()}


@pytest.mark.parametrize("rule", alert_rules(), ids=[r["alert"] for r in alert_rules()])
def test_amtool_routes_each_alert_to_its_channel(rule):
    """`amtool config routes test` with the alert's real labels (from alerts.yml)."""
    name = rule["alert"]
    wanted_receivers = [r for ch in EXPECTED_CHANNELS[name] for r, c in CHANNELS.items() if c == ch]
    labels = [f"alertname={name}"] + [f"{k}={v}" for k, v in sorted(rule["labels"].items())] + ["job=test-job"]
    result = run(
        [
            tool("amtool"),
            "config",
            "routes",
            "test",
            f"--config.file={ALERTMANAGER_FILE}",
            f"--verify.receivers={','.join(wanted_receivers)}",
            *labels,
        ]
    )
    assert result.returncode == 0, f"{name}: {result.stdout} {result.stderr}"
    assert result.stdout.strip() == ",".join(wanted_receivers)


def test_amtool_route_test_can_fail():
    result = run(
        [
            tool("amtool"),
            "config",
            "routes",
            "test",
            f"--config.file={ALERTMANAGER_FILE}",
            "--verify.receivers=slack-alerts",
            "alertname=HighGPUTemperature",
            "severity=critical",
            "category=gpu",
        ]
    )
    assert result.returncode != 0
    assert result.stdout.strip().startswith("slack-critical,slack-gpu")


def test_inhibition_rules():
    rules = load_yaml(ALERTMANAGER_FILE)["inhibit_rules"]
    critical_over_warning, service_down = rules
    assert critical_over_warning["source_matchers"] == ['severity="critical"']
    assert critical_over_warning["target_matchers"] == ['severity="warning"']
    # Same category and same object: the drift, budget and GPU pairs match on these.
    assert {"category", "job", "instance", "model", "feature", "budget", "uuid"} <= set(critical_over_warning["equal"])
    assert service_down["source_matchers"] == ['alertname="ServiceDown"']
    assert service_down["target_matchers"] == ['alertname!="ServiceDown"']
    assert service_down["equal"] == ["job"]


def test_grouping_and_repeat_intervals():
    route = load_yaml(ALERTMANAGER_FILE)["route"]
    assert route["receiver"] == "slack-alerts"
    assert route["group_by"] == ["alertname", "job", "category"]
    assert route["repeat_interval"] == "4h"
    by_receiver = {r["receiver"]: r for r in route["routes"]}
    assert by_receiver["slack-critical"]["repeat_interval"] == "1h"
    assert by_receiver["slack-critical"]["continue"] is True
    assert by_receiver["slack-drift"]["repeat_interval"] == "12h"
    assert by_receiver["slack-budget"]["repeat_interval"] == "12h"


def _stub(tmp_path):
    stub = tmp_path / "alertmanager-stub"
    stub.write_text('#!/bin/sh\necho "args: $*"\n')
    stub.chmod(0o755)
    return stub


def test_entrypoint_writes_the_url_file_and_execs_alertmanager(tmp_path):
    url_file = tmp_path / "secrets" / "slack_webhook_url"
    env = {
        "PATH": os.environ["PATH"],
        "SLACK_WEBHOOK_URL": "https://example.invalid/services/T1/B2/secret",
        "SLACK_API_URL_FILE": str(url_file),
        "ALERTMANAGER_BIN": str(_stub(tmp_path)),
    }
    result = subprocess.run(
        ["sh", str(ALERTMANAGER_DIR / "entrypoint.sh"), "--config.file=/x.yml", "--storage.path=/data"],
        env=env, capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "args: --config.file=/x.yml --storage.path=/data\n"
    assert url_file.read_text() == "https://example.invalid/services/T1/B2/secret"
    assert stat.S_IMODE(url_file.stat().st_mode) == 0o600


def test_entrypoint_keeps_a_mounted_file_and_warns_without_any(tmp_path):
    url_file = tmp_path / "slack_webhook_url"
    env = {"PATH": os.environ["PATH"], "SLACK_API_URL_FILE": str(url_file), "ALERTMANAGER_BIN": str(_stub(tmp_path))}
    entry = ["sh", str(ALERTMANAGER_DIR / "entrypoint.sh"), "--x"]

    result = subprocess.run(entry, env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0
    assert "SLACK_WEBHOOK_URL is not set" in result.stderr
    assert not url_file.exists()

    url_file.write_text("https://example.invalid/mounted")
    result = subprocess.run(entry, env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0
    assert result.stderr == ""
    assert url_file.read_text() == "https://example.invalid/mounted"
