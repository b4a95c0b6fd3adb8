"""The logger's lines parse with sluice's default pipeline, checked with the real binary:
`$SLUICE_BIN test pipelines/structured-json.yaml --input - --format json`.

Output contract (one JSON object per input line):
  {"timestamp": "<RFC3339Nano UTC>", "labels": {...}, "structured_metadata": {...},
   "line": "...", "dropped": null | {"stage": ..., "reason": ...}}
Default pipeline: labels service, level; structured metadata trace_id, span_id, user_id.
These tests fail (never skip) when SLUICE_BIN is unset or not executable.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from sluice_clients.structured_logger import get_structured_logger
from sluice_testlib import HELPER_CASES, REPO_ROOT, SERVICE, rfc3339_to_ns, sluice_test, span_ids

ALLOWED_METADATA = {"trace_id", "span_id", "user_id"}


def check_entry(entry: dict, source: dict, *, level: str, ids: tuple[str, str] | None) -> None:
    """One `sluice test` output object against the JSON line it was made from."""
    assert set(entry) >= {"timestamp", "labels", "structured_metadata", "line", "dropped"}, entry
    assert entry["dropped"] is None, f"dropped by the default pipeline: {entry['dropped']}"
    assert entry["labels"] == {"service": SERVICE, "level": level}
    sm = entry["structured_metadata"]
    assert set(sm) <= ALLOWED_METADATA, sm
    if ids is None:
        assert not sm.get("trace_id") and not sm.get("span_id"), sm
    else:
        assert (sm.get("trace_id"), sm.get("span_id")) == ids
    if "user_id" in source:
        assert sm.get("user_id") == source["user_id"]
    else:
        assert not sm.get("user_id")
    # the entry's time is the record's timestamp field (compared as nanoseconds: the output
    # may be RFC3339Nano with trailing zeros trimmed)
    assert rfc3339_to_ns(entry["timestamp"]) == rfc3339_to_ns(source["timestamp"])


@pytest.mark.parametrize(
    "call,level", [(c[1], c[2]) for c in HELPER_CASES], ids=[c[0] for c in HELPER_CASES]
)
def test_helper_lines_parse_inside_a_span(sluice_bin, default_pipeline, log_capture, tracer, call, level):
    with tracer.start_as_current_span("request") as span:
        call()
    text = log_capture.take()
    [source] = [json.loads(line) for line in text.splitlines()]
    [entry] = sluice_test(sluice_bin, default_pipeline, text.encode("utf-8"))
    check_entry(entry, source, level=level, ids=span_ids(span))


@pytest.mark.parametrize("level", ["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"])
def test_every_level_and_no_span(sluice_bin, default_pipeline, log_capture, level):
    get_structured_logger("levels").log(getattr(__import__("logging"), level), "lvl", user_id="u-7")
    text = log_capture.take()
    source = json.loads(text)
    [entry] = sluice_test(sluice_bin, default_pipeline, text.encode("utf-8"))
    check_entry(entry, source, level=level, ids=None)
    assert entry["structured_metadata"]["user_id"] == "u-7"


def test_exception_record_parses(sluice_bin, default_pipeline, log_capture, tracer):
    with tracer.start_as_current_span("failing") as span:
        try:
            raise RuntimeError("db\nunreachable")
        except RuntimeError:
            get_structured_logger("db").exception("query failed", user_id="u-9")
    text = log_capture.take()
    assert text.count("\n") == 1
    source = json.loads(text)
    [entry] = sluice_test(sluice_bin, default_pipeline, text.encode("utf-8"))
    check_entry(entry, source, level="ERROR", ids=span_ids(span))


def test_many_records_one_entry_each_in_order(sluice_bin, default_pipeline, log_capture, tracer):
    expected = []
    for i in range(20):
        with tracer.start_as_current_span(f"req-{i}") as span:
            get_structured_logger("batch").info("item %d", i, user_id=f"u-{i}")
        expected.append(span_ids(span))
    text = log_capture.take()
    sources = [json.loads(line) for line in text.splitlines()]
    entries = sluice_test(sluice_bin, default_pipeline, text.encode("utf-8"))
    assert len(entries) == len(sources) == 20
    for entry, source, ids in zip(entries, sources, expected):
        check_entry(entry, source, level="INFO", ids=ids)


BAD_INPUTS = {
    "newline": lambda log: log.info("first line\nsecond line\r\n\u2028third", note="x\ny"),
    "non-utf8 bytes": lambda log: log.info("bytes", payload=b"\xff\xfe\x80 raw", user_id=b"u-\xff"),
    "surrogate-escaped str": lambda log: log.info(os.fsdecode(b"file-\xff\xfe.txt"), path=os.fsdecode(b"/t/\x80")),
    "huge field": lambda log: log.info("huge", blob="z" * (4 * 1024 * 1024)),
    "many huge fields": lambda log: log.info("many", **{f"f{i}": "q" * 20_000 for i in range(40)}),
    "non-serializable extra": lambda log: log.info("objects", obj=object(), s={1, 2}, f=float("nan"), big=10**30),
}


@pytest.mark.parametrize("make", list(BAD_INPUTS.values()), ids=list(BAD_INPUTS))
def test_bad_input_is_one_line_sluice_parses(sluice_bin, default_pipeline, log_capture, tracer, make):
    with tracer.start_as_current_span("bad") as span:
        make(get_structured_logger("bad"))
    text = log_capture.take()
    assert text.endswith("\n") and text.count("\n") == 1
    data = text.encode("utf-8")  # strict
    source = json.loads(text)
    [entry] = sluice_test(sluice_bin, default_pipeline, data)
    check_entry(entry, source, level="INFO", ids=span_ids(span))


def test_real_stdout_piped_into_sluice(sluice_bin, default_pipeline):
    """A service process writing to its real stdout, piped straight into `sluice test`."""
    script = r"""
import json, sys
from opentelemetry.sdk.trace import TracerProvider
from sluice_clients.structured_logger import (setup_structured_logging, log_request, log_inference,
    log_tool_call, log_memory_op, log_budget, log_drift)
setup_structured_logging("piped-svc")
tracer = TracerProvider().get_tracer("piped")
with tracer.start_as_current_span("handler") as span:
    ctx = span.get_span_context()
    log_request("GET", "/v1/chat", 200, 12.5, user_id="u-1")
    log_inference("llama-3-8b", 10, 20, 800.0)
    log_tool_call("search", "error", 40.0)
    log_memory_op("recall", "success", 2.0)
    log_budget("team", 50, 100)
    log_drift("llama-3-8b", "len", 0.5, threshold=0.3)
print(json.dumps([format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")]), file=sys.stderr)
"""
    service = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO_ROOT
    )
    try:
        agent = subprocess.run(
            [sluice_bin, "test", str(default_pipeline), "--input", "-", "--format", "json"],
            stdin=service.stdout,
            capture_output=True,
            timeout=120,
            cwd=REPO_ROOT,
        )
    finally:
        service.stdout.close()
        service_err = service.stderr.read()
        service.stderr.close()
        service.wait(timeout=60)
    assert service.returncode == 0, service_err.decode()
    assert agent.returncode == 0, agent.stderr.decode("utf-8", "replace")
    ids = tuple(json.loads(service_err.decode().strip().splitlines()[-1]))
    entries = [json.loads(line) for line in agent.stdout.splitlines() if line.strip()]
    assert [e["labels"]["level"] for e in entries] == ["INFO", "INFO", "ERROR", "INFO", "INFO", "WARNING"]
    for entry in entries:
        assert entry["dropped"] is None
        assert entry["labels"] == {"service": "piped-svc", "level": entry["labels"]["level"]}
        sm = entry["structured_metadata"]
        assert (sm.get("trace_id"), sm.get("span_id")) == ids
    assert entries[0]["structured_metadata"].get("user_id") == "u-1"
