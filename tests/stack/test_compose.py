"""docker-compose.yaml: validated by the compose tool of the machine (Debian's
docker-compose 1.29, or the `docker compose` plugin where it exists), and its
services, volumes, profiles and health checks as the stack needs them."""

from __future__ import annotations

import shutil

import pytest

from stack_helpers import REPO, load_yaml, run

COMPOSE_FILE = REPO / "docker-compose.yaml"

SERVICES = {
    "sluice", "loki", "grafana", "prometheus", "alertmanager", "jaeger", "jaeger-init",
    "redis-exporter", "postgres-exporter", "nvidia-gpu-exporter",
}
VOLUMES = {"loki-data", "alertmanager-data", "prometheus-data", "grafana-data", "jaeger-data", "sluice-data"}
# One-shot or not a server: no health check.
NO_HEALTHCHECK = {"jaeger-init"}


def compose_commands() -> list[list[str]]:
    cmds = []
    if shutil.which("docker-compose"):
        cmds.append(["docker-compose"])
    if shutil.which("docker") and run(["docker", "compose", "version"]).returncode == 0:
        cmds.append(["docker", "compose"])
    if not cmds:
        pytest.fail("neither docker-compose nor `docker compose` found: install tests/stack/apt-packages.txt")
    return cmds


@pytest.fixture(scope="module")
def compose() -> dict:
    return load_yaml(COMPOSE_FILE)


def test_compose_config_is_valid(tmp_path):
    for cmd in compose_commands():
        # without a .env (SLACK_WEBHOOK_URL unset must not break the file)
        result = run([*cmd, "-f", str(COMPOSE_FILE), "--project-directory", str(REPO), "config", "-q"])
        assert result.returncode == 0, f"{' '.join(cmd)}: {result.stderr}"
        # with the example environment, and with the gpu profile
        result = run(
            [*cmd, "-f", str(COMPOSE_FILE), "--project-directory", str(REPO), "--env-file", str(REPO / ".env.example"),
             "--profile", "gpu", "config", "--services"]
        )
        assert result.returncode == 0, f"{' '.join(cmd)}: {result.stderr}"
        assert set(result.stdout.split()) == SERVICES


def test_compose_config_rejects_a_broken_file(tmp_path):
    broken = tmp_path / "docker-compose.yaml"
    broken.write_text(COMPOSE_FILE.read_text().replace("    ports:\n", "    portz:\n", 1))
    for cmd in compose_commands():
        result = run([*cmd, "-f", str(broken), "--project-directory", str(REPO), "config", "-q"])
        assert result.returncode != 0


def test_services_and_volumes(compose):
    assert set(compose["services"]) == SERVICES
    assert set(compose["volumes"]) == VOLUMES
    assert compose["networks"]["default"]["name"] == "ai-platform"


def test_sluice_service(compose):
    sluice = compose["services"]["sluice"]
    assert sluice["build"] == "."
    assert set(sluice["ports"]) == {"4317:4317", "4318:4318", "9080:9080"}
    vols = sluice["volumes"]
    assert "/var/run/docker.sock:/var/run/docker.sock:ro" in vols
    assert "sluice-data:/var/lib/sluice" in vols
    assert "./configs/agent/compose.yaml:/etc/sluice/sluice.yaml:ro" in vols
    assert "./pipelines:/etc/sluice/pipelines:ro" in vols
    assert sluice["command"] == ["run", "--config", "/etc/sluice/sluice.yaml"]


def test_gpu_exporter_only_with_the_gpu_profile(compose):
    gpu = compose["services"]["nvidia-gpu-exporter"]
    assert gpu["profiles"] == ["gpu"]
    (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia"
    assert "gpu" in device["capabilities"]
    assert gpu["ports"] == ["9835:9835"]


def test_the_compose_agent_ships_logs_to_loki_and_traces_to_jaeger(compose):
    agent = load_yaml(REPO / "configs" / "agent" / "compose.yaml")
    assert {n: s["type"] for n, s in agent["sources"].items()} == {"docker": "docker", "otlp": "otlp"}
    assert agent["sinks"]["loki"]["sources"] == ["docker"]
    assert agent["sinks"]["jaeger"] == {
        "type": "otlp",
        "sources": ["otlp"],
        "endpoint": "${JAEGER_OTLP_ENDPOINT:-http://jaeger:4317}",
    }
    for name, svc in compose["services"].items():
        if name != "nvidia-gpu-exporter":
            assert "profiles" not in svc, f"{name} would not start by default"


def test_health_checks(compose):
    for name, svc in compose["services"].items():
        if name in NO_HEALTHCHECK:
            continue
        hc = svc.get("healthcheck")
        assert hc and hc["test"], f"{name} has no health check"


def test_persistent_data_on_named_volumes(compose):
    s = compose["services"]
    assert "loki-data:/loki" in s["loki"]["volumes"]
    assert "prometheus-data:/prometheus" in s["prometheus"]["volumes"]
    assert "alertmanager-data:/alertmanager" in s["alertmanager"]["volumes"]
    assert "grafana-data:/var/lib/grafana" in s["grafana"]["volumes"]
    assert "jaeger-data:/badger" in s["jaeger"]["volumes"]
    env = s["jaeger"]["environment"]
    assert env["SPAN_STORAGE_TYPE"] == "badger"
    assert env["BADGER_EPHEMERAL"] == "false"
    assert env["COLLECTOR_OTLP_ENABLED"] == "true"
    assert "--storage.tsdb.retention.time=90d" in s["prometheus"]["command"]


def test_stack_ports(compose):
    s = compose["services"]
    assert s["prometheus"]["ports"] == ["9090:9090"]
    assert s["grafana"]["ports"] == ["3000:3000"]
    assert s["loki"]["ports"] == ["3100:3100"]
    assert s["alertmanager"]["ports"] == ["9093:9093"]
    assert s["jaeger"]["ports"] == ["16686:16686"]


def test_alertmanager_gets_the_webhook_from_the_environment(compose):
    am = compose["services"]["alertmanager"]
    assert am["environment"]["SLACK_WEBHOOK_URL"] == "${SLACK_WEBHOOK_URL:-}"
    assert am["entrypoint"] == ["/bin/sh", "/etc/alertmanager/config/entrypoint.sh"]
    assert "--config.file=/etc/alertmanager/config/alertmanager.yml" in am["command"]
    assert "./configs/alertmanager:/etc/alertmanager/config:ro" in am["volumes"]


def test_env_example_lists_the_variables_the_file_uses():
    import re

    used = set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)", COMPOSE_FILE.read_text()))
    example = {
        line.split("=", 1)[0]
        for line in (REPO / ".env.example").read_text().splitlines()
        if line and not line.startswith("#") and "=" in line
    }
    assert "SLACK_WEBHOOK_URL" in example
    assert used <= example, used - example
