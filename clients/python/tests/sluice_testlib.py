"""Helpers shared by the sluice_clients tests (a uniquely named module: `import conftest`
would be ambiguous next to other test directories' conftest.py files)."""

from __future__ import annotations

import calendar
import io
import json
import re
import subprocess
from pathlib import Path

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
