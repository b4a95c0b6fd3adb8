"""Shared helpers for the observability-stack tests (tests/stack). Not named
conftest.py: clients/python/tests has one too, and both would import as `conftest`.

Everything here runs on 127.0.0.1 with ports the kernel hands out and temporary
directories; every process a fixture starts is stopped by that fixture, also when
the test fails. The tools (promtool, amtool, prometheus, prometheus-alertmanager,
docker-compose) come from tests/stack/apt-packages.txt; a missing tool is a test
failure, not a skip, so that a machine without them cannot pass silently.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
STACK_TESTS = Path(__file__).resolve().parent
FIXTURES = STACK_TESTS / "fixtures"

PROMETHEUS_DIR = REPO / "configs" / "prometheus"
ALERTS_FILE = PROMETHEUS_DIR / "rules" / "alerts.yml"
ALERTS_TEST_FILE = PROMETHEUS_DIR / "rules" / "alerts_test.yml"
ALERTMANAGER_DIR = REPO / "configs" / "alertmanager"
ALERTMANAGER_FILE = ALERTMANAGER_DIR / "alertmanager.yml"


def tool(name: str) -> str:
    """Absolute path of a required program, or a failure that names its package."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} not found on PATH: install the packages in tests/stack/apt-packages.txt")
    return path


def run(cmd: list[str], cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def load_yaml(path: Path):
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


def alert_rules() -> list[dict]:
    """Every alerting rule of configs/prometheus/rules/alerts.yml."""
    doc = load_yaml(ALERTS_FILE)
    return [r for g in doc["groups"] for r in g["rules"] if "alert" in r]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate: Callable[[], object], timeout: float, interval: float = 0.25, what: str = "condition"):
    """Poll predicate until it returns something truthy; fail after timeout seconds."""
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 - polled again until the deadline
            last_exc = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}" + (f" (last error: {last_exc!r})" if last_exc else ""))


# Talks to 127.0.0.1 only: never through a proxy from the environment.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_get(url: str, timeout: float = 5) -> tuple[int, bytes]:
    try:
        with _OPENER.open(url, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def http_get_json(url: str, timeout: float = 5):
    status, body = http_get(url, timeout)
    assert status == 200, f"GET {url} answered {status}: {body[:500]!r}"
    return json.loads(body)


class ManagedProcess:
    """A child process with its output in a file, stopped by stop() (idempotent)."""

    def __init__(self, name: str, cmd: list[str], log_dir: Path):
        self.name = name
        self.cmd = cmd
        self.log_path = log_dir / f"{name}.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            cmd, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True, env=environment_without_proxies()
        )

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log_path.read_bytes()[-n:].decode("utf-8", "replace")
        except OSError:
            return ""

    def assert_running(self):
        code = self.proc.poll()
        assert code is None, f"{self.name} exited with {code}:\n{self.log_tail()}"

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if not self._log.closed:
            self._log.close()


class _Server:
    """A ThreadingHTTPServer on 127.0.0.1 in a daemon thread."""

    def __init__(self, handler_cls):
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler_cls)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, name=handler_cls.__name__, daemon=True)
        self.thread.start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=10)


class SlackReceiver(_Server):
    """A Slack-compatible incoming-webhook endpoint that records every POSTed JSON body."""

    def __init__(self):
        self.posts: list[dict] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server API
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                try:
                    payload = json.loads(body)
                except ValueError:
                    payload = {"_unparsable": body.decode("utf-8", "replace")}
                with receiver.lock:
                    receiver.posts.append({"path": self.path, "body": payload})
                # Slack answers 200 "ok" to an accepted message.
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        super().__init__(Handler)

    def snapshot(self) -> list[dict]:
        with self.lock:
            return list(self.posts)


class MetricsExporter(_Server):
    """Serves a fixed text exposition at /metrics, like an exporter would."""

    def __init__(self, exposition: str):
        self.exposition = exposition.encode("utf-8")
        self.scrapes = 0
        exporter = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server API
                if self.path.split("?")[0] != "/metrics":
                    self.send_error(404)
                    return
                exporter.scrapes += 1
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(exporter.exposition)))
                self.end_headers()
                self.wfile.write(exporter.exposition)

            def log_message(self, *args):
                pass

        super().__init__(Handler)


def write_yaml(path: Path, data) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path


def environment_without_proxies() -> dict[str, str]:
    env = dict(os.environ)
    for key in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        env.pop(key, None)
    return env
