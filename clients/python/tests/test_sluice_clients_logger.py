"""structured_logger: the JSON shape, trace ids, helpers, and one valid line for bad input."""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import os
import re
import subprocess
import sys
import time

import pytest

from sluice_clients import structured_logger as sl
from sluice_clients.structured_logger import (
    DEFAULT_MAX_FIELD_CHARS,
    DEFAULT_MAX_LINE_BYTES,
    get_structured_logger,
    log_budget,
    log_memory_op,
    log_request,
    log_tool_call,
    setup_structured_logging,
)
from sluice_testlib import HELPER_CASES, SERVICE, rfc3339_to_ns, span_ids

TS_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z$")
HEX32 = re.compile(r"^[0-9a-f]{32}$")
HEX16 = re.compile(r"^[0-9a-f]{16}$")


def one_record(capture) -> dict:
    """Asserts the capture holds exactly one line of valid, strictly UTF-8 JSON; returns it."""
    text = capture.take()
    assert text.endswith("\n") and text.count("\n") == 1, f"not exactly one line: {text[:500]!r}"
    line = text[:-1]
    # no character any common splitter treats as a line break
    assert len(line.splitlines()) == 1, repr(line[:500])
    line.encode("utf-8")  # strict: no lone surrogates in the output
    record = json.loads(line)
    assert isinstance(record, dict)
    # strict for parsers that reject lone surrogate escapes (\udcff) too
    json.dumps(record, ensure_ascii=False).encode("utf-8")
    return record


# --------------------------------------------------------------------------- shape


def test_core_fields_order_and_values(log_capture):
    before = time.time_ns()
    logging.getLogger("orders.service").info("order %s placed", 42)
    after = time.time_ns()
    record = one_record(log_capture)
    assert list(record) == ["timestamp", "level", "service", "logger", "message"]
    assert TS_RE.match(record["timestamp"]), record["timestamp"]
    assert before <= rfc3339_to_ns(record["timestamp"]) <= after
    assert record["level"] == "INFO"
    assert record["service"] == SERVICE
    assert record["logger"] == "orders.service"
    assert record["message"] == "order 42 placed"


@pytest.mark.parametrize(
    "level,name",
    [(logging.DEBUG, "DEBUG"), (logging.INFO, "INFO"), (logging.WARNING, "WARNING"),
     (logging.ERROR, "ERROR"), (logging.CRITICAL, "CRITICAL")],
)
def test_level_names_are_python_names(log_capture, level, name):
    logging.getLogger("x").log(level, "m")
    assert one_record(log_capture)["level"] == name


def test_timestamp_has_real_nanoseconds(log_capture):
    """Timestamps come from time.time_ns(), not from a float: over many records the last
    three digits are not all zero."""
    for _ in range(50):
        logging.getLogger("x").info("tick")
    stamps = [r["timestamp"] for r in log_capture.records()]
    assert len(stamps) == 50 and all(TS_RE.match(s) for s in stamps)
    assert any(not s.endswith("000Z") for s in stamps)
    ns = [rfc3339_to_ns(s) for s in stamps]
    assert ns == sorted(ns)


def test_format_timestamp_exact():
    assert sl._format_timestamp(1_795_991_315_123_456_789) == "2026-11-29T22:28:35.123456789Z"
    assert sl._format_timestamp(5) == "1970-01-01T00:00:00.000000005Z"


def test_records_from_a_foreign_record_factory_still_get_9_digits():
    formatter = sl.JsonFormatter("svc")
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "m", (), None)
    record.__dict__.pop("created_ns", None)
    record.created = 1_795_991_315.25
    out = json.loads(formatter.format(record))
    assert out["timestamp"] == "2026-11-29T22:28:35.250000000Z"


def test_level_by_name_and_setup_idempotent():
    root = logging.getLogger()
    old_level = root.level
    buf1, buf2 = io.StringIO(), io.StringIO()
    h1 = setup_structured_logging("svc-a", "warning", stream=buf1, capture_uncaught=False)
    h2 = setup_structured_logging("svc-b", level="INFO", stream=buf2, capture_uncaught=False)
    try:
        ours = [h for h in root.handlers if getattr(h, "_sluice_handler", False)]
        assert ours == [h2]
        assert root.level == logging.INFO
        logging.getLogger("y").info("hello")
        assert buf1.getvalue() == ""
        assert json.loads(buf2.getvalue())["service"] == "svc-b"
        with pytest.raises(ValueError):
            setup_structured_logging("svc", "LOUD", stream=buf1)
        with pytest.raises(ValueError):
            setup_structured_logging("", stream=buf1)
    finally:
        for h in (h1, h2):
            root.removeHandler(h)
        root.setLevel(old_level)
        logging.captureWarnings(False)


def test_default_stream_is_current_stdout(capsys):
    root = logging.getLogger()
    old_level = root.level
    handler = setup_structured_logging("stdout-svc", capture_uncaught=False)
    try:
        logging.getLogger("z").warning("to stdout")
        out = capsys.readouterr().out
        assert out.count("\n") == 1
        record = json.loads(out)
        assert (record["service"], record["level"], record["message"]) == ("stdout-svc", "WARNING", "to stdout")
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
        logging.captureWarnings(False)


# --------------------------------------------------------------------------- trace context


def test_trace_and_span_id_from_current_sdk_span(log_capture, tracer):
    log = get_structured_logger("traced")
    with tracer.start_as_current_span("outer") as outer:
        log.info("in outer")
        with tracer.start_as_current_span("inner") as inner:
            log.info("in inner")
        log.info("back in outer")
    log.info("no span")
    recs = log_capture.records()
    assert len(recs) == 4
    otid, osid = span_ids(outer)
    itid, isid = span_ids(inner)
    assert otid == itid and osid != isid
    assert HEX32.match(otid) and HEX16.match(osid)
    assert (recs[0]["trace_id"], recs[0]["span_id"]) == (otid, osid)
    assert (recs[1]["trace_id"], recs[1]["span_id"]) == (itid, isid)
    assert (recs[2]["trace_id"], recs[2]["span_id"]) == (otid, osid)
    assert "trace_id" not in recs[3] and "span_id" not in recs[3]
    assert list(recs[0])[:7] == ["timestamp", "level", "service", "logger", "message", "trace_id", "span_id"]


def test_non_recording_invalid_span_gives_no_ids(log_capture):
    from opentelemetry import trace

    with trace.use_span(trace.INVALID_SPAN):
        logging.getLogger("x").info("m")
    record = one_record(log_capture)
    assert "trace_id" not in record and "span_id" not in record


def test_explicit_ids_used_only_without_a_current_span(log_capture, tracer):
    log = get_structured_logger("queue")
    log.info("from message", trace_id="0AF7651916CD43DD8448EB211C80319C", span_id="b7ad6b7169203331")
    r = one_record(log_capture)
    assert (r["trace_id"], r["span_id"]) == ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331")
    log.info("bad ids", trace_id="xyz", span_id=123)
    r = one_record(log_capture)
    assert "trace_id" not in r and r["extra_trace_id"] == "xyz" and r["extra_span_id"] == 123
    with tracer.start_as_current_span("s") as span:
        log.info("span wins", trace_id="0af7651916cd43dd8448eb211c80319c")
    r = one_record(log_capture)
    assert (r["trace_id"], r["span_id"]) == span_ids(span)
    assert r["extra_trace_id"] == "0af7651916cd43dd8448eb211c80319c"


def test_works_without_opentelemetry_installed():
    """opentelemetry-api is optional: with it unimportable the logger still works (no ids)."""
    code = (
        "import sys; sys.modules['opentelemetry'] = None\n"
        "from sluice_clients.structured_logger import setup_structured_logging, log_request, _otel_trace\n"
        "assert _otel_trace is None\n"
        "setup_structured_logging('no-otel')\n"
        "log_request('GET', '/health', 200, 1.0)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout.count(b"\n") == 1
    record = json.loads(proc.stdout)
    assert record["service"] == "no-otel" and record["status"] == 200
    assert "trace_id" not in record and "span_id" not in record


def test_module_without_otel_gives_no_ids(log_capture, tracer, monkeypatch):
    monkeypatch.setattr(sl, "_otel_trace", None)
    with tracer.start_as_current_span("s"):
        logging.getLogger("x").info("m")
    assert "trace_id" not in one_record(log_capture)


# --------------------------------------------------------------------------- exceptions & extras


def test_exception_fields(log_capture):
    log = get_structured_logger("payments")
    try:
        raise KeyError("card\nnumber")
    except KeyError:
        log.exception("charge failed", order_id=7)
    r = one_record(log_capture)
    assert r["level"] == "ERROR"
    assert r["message"] == "charge failed"
    assert r["order_id"] == 7
    assert r["exc_type"] == "KeyError"
    assert r["exc_message"] == "'card\\nnumber'"
    assert r["stacktrace"].startswith("Traceback (most recent call last):\n")
    assert 'raise KeyError("card\\nnumber")' in r["stacktrace"]
    assert r["stacktrace"].endswith("KeyError: 'card\\nnumber'")
    assert list(r)[-3:] == ["exc_type", "exc_message", "stacktrace"]


def test_exception_type_is_qualified_outside_builtins(log_capture):
    try:
        json.loads("{")
    except ValueError:
        logging.getLogger("x").error("bad json", exc_info=True)
    r = one_record(log_capture)
    assert r["exc_type"] == "json.decoder.JSONDecodeError"
    assert r["exc_message"].startswith("Expecting property name")


def test_stack_info_is_one_field(log_capture):
    logging.getLogger("x").info("where", stack_info=True)
    r = one_record(log_capture)
    assert r["stack_info"].startswith("Stack (most recent call last):\n")


def test_extra_fields_from_extra_and_kwargs(log_capture):
    logging.getLogger("std").info("std extra", extra={"user_id": "u-1", "attempt": 2})
    r = one_record(log_capture)
    assert (r["user_id"], r["attempt"]) == ("u-1", 2)

    log = get_structured_logger("kw", tenant="acme").bind(region="eu")
    log.warning("kw extra", user_id="u-2", tags=("a", "b"), ratio=0.5, ok=True, none=None)
    r = one_record(log_capture)
    assert r["level"] == "WARNING"
    assert r["logger"] == "kw"
    assert {k: r[k] for k in ("tenant", "region", "user_id", "tags", "ratio", "ok", "none")} == {
        "tenant": "acme", "region": "eu", "user_id": "u-2", "tags": ["a", "b"], "ratio": 0.5, "ok": True, "none": None,
    }


def test_extra_fields_cannot_overwrite_core_fields(log_capture):
    get_structured_logger("x").info(
        "real", message="fake", level="fake", service="fake", timestamp="fake", logger="fake", name="n", args="a"
    )
    r = one_record(log_capture)
    assert (r["message"], r["level"], r["service"], r["logger"]) == ("real", "INFO", SERVICE, "x")
    assert TS_RE.match(r["timestamp"])
    for key in ("message", "level", "service", "timestamp", "logger"):
        assert r[f"extra_{key}"] == "fake"
    assert (r["name"], r["args"]) == ("n", "a")


# --------------------------------------------------------------------------- helpers

@pytest.mark.parametrize("call,level,logger,fields", [c[1:] for c in HELPER_CASES], ids=[c[0] for c in HELPER_CASES])
def test_helpers(log_capture, tracer, call, level, logger, fields):
    with tracer.start_as_current_span("handler") as span:
        call()
    r = one_record(log_capture)
    assert r["level"] == level
    assert r["logger"] == logger
    assert r["service"] == SERVICE
    assert (r["trace_id"], r["span_id"]) == span_ids(span)
    for key, value in fields.items():
        assert r[key] == value, key


def test_helpers_accept_logger_and_level(log_capture):
    log_request("GET", "/", 200, 1, logger="custom.http", level="DEBUG")
    r = one_record(log_capture)
    assert (r["logger"], r["level"]) == ("custom.http", "DEBUG")
    log_tool_call("t", "success", 1, logger=get_structured_logger("svc.tools", tenant="a"))
    r = one_record(log_capture)
    assert (r["logger"], r["tenant"]) == ("svc.tools", "a")
    log_memory_op("store", "success", 1, logger=logging.getLogger("plain"))
    assert one_record(log_capture)["logger"] == "plain"


# --------------------------------------------------------------------------- bad input: one valid line each


class Unserializable:
    def __repr__(self) -> str:
        return "<Unserializable\nmulti-line repr>"


class BrokenRepr:
    def __repr__(self) -> str:
        raise RuntimeError("no repr for you")


def test_newline_in_message_and_fields(log_capture):
    get_structured_logger("x").info("line one\nline two\r\nthree\u2028four\u2029five\x85six", note="a\nb", ctl="\x00\x1b")
    r = one_record(log_capture)
    assert r["message"] == "line one\nline two\r\nthree\u2028four\u2029five\x85six"
    assert (r["note"], r["ctl"]) == ("a\nb", "\x00\x1b")


def test_non_utf8_bytes_and_surrogate_escaped_text(log_capture):
    raw = b"caf\xc3\xa9 \xff\xfe end"
    get_structured_logger("x").info(os.fsdecode(b"file-\xff.txt"), payload=raw, name_b=bytearray(b"\x80"),
                                    path=os.fsdecode(b"/tmp/\xfe\xff"), lone="x\ud800y")
    r = one_record(log_capture)
    assert r["message"] == "file-\\xff.txt"
    assert r["payload"] == "caf\u00e9 \\xff\\xfe end"
    assert r["name_b"] == "\\x80"
    assert r["path"] == "/tmp/\\xfe\\xff"
    assert r["lone"] == "x\\xed\\xa0\\x80y"


def test_bytes_message(log_capture):
    logging.getLogger("x").info(b"raw \xff bytes\n")
    assert one_record(log_capture)["message"] == "raw \\xff bytes\n"


def test_huge_field_is_capped(log_capture):
    huge = "x" * (1024 * 1024)
    get_structured_logger("x").info("big " + "m" * 100_000, blob=huge)
    text = log_capture.text
    r = one_record(log_capture)
    cap = DEFAULT_MAX_FIELD_CHARS
    assert r["blob"] == "x" * cap + f"...[truncated {len(huge) - cap} chars]"
    assert r["message"] == ("big " + "m" * 100_000)[:cap] + f"...[truncated {100_004 - cap} chars]"
    assert len(text.encode("utf-8")) <= DEFAULT_MAX_LINE_BYTES + 1
    assert "truncated_fields" not in r


def test_huge_line_drops_extra_fields_first(log_capture):
    fields = {f"f{i:02d}": "y" * 10_000 for i in range(20)}
    get_structured_logger("x").info("many", small="kept", **fields)
    text = log_capture.text
    r = one_record(log_capture)
    assert len(text.encode("utf-8")) <= DEFAULT_MAX_LINE_BYTES + 1
    assert r["message"] == "many" and r["small"] == "kept"
    dropped = r["truncated_fields"]
    assert dropped and set(dropped) <= set(fields)
    assert set(fields) - set(dropped) == {k for k in fields if k in r}


def test_huge_stacktrace_and_multibyte_fit_the_line(log_capture):
    handler_fmt = sl.JsonFormatter("svc", max_field_chars=50_000, max_line_bytes=4096)
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "é" * 30_000, (), None)
    line = handler_fmt.format(record)
    assert len(line.encode("utf-8")) <= 4096
    r = json.loads(line)
    assert r["message"].startswith("é" * 100) and "truncated" in r["message"]
    assert r["truncated_fields"] == ["message"]


def test_non_serializable_extras(log_capture):
    circular: dict = {"name": "loop"}
    circular["self"] = circular
    get_structured_logger("x").info(
        "weird values",
        obj=Unserializable(),
        broken=BrokenRepr(),
        circular=circular,
        a_set={3, 1, 2},
        when=dt.datetime(2026, 11, 24, 22, 28, 35, 123456, tzinfo=dt.timezone.utc),
        nan=float("nan"),
        inf=float("-inf"),
        big=10**40,
        keys={1: "one", None: "none", (1, 2): "tuple"},
        exc=ValueError("v"),
        func=len,
    )
    r = one_record(log_capture)
    assert r["obj"] == "<Unserializable\nmulti-line repr>"
    assert r["broken"] == "<unrepresentable BrokenRepr: RuntimeError>"
    assert r["circular"] == {"name": "loop", "self": "<circular reference>"}
    assert r["a_set"] == [1, 2, 3]
    assert r["when"] == "2026-11-24T22:28:35.123456Z"
    assert (r["nan"], r["inf"]) == ("nan", "-inf")
    assert r["big"] == str(10**40)
    assert r["keys"] == {"1": "one", "None": "none", "(1, 2)": "tuple"}
    assert r["exc"] == "ValueError('v')"
    assert r["func"] == "<built-in function len>"


def test_message_format_error_is_still_one_line(log_capture):
    # (not through logging.getLogger: pytest's own capture handler fails the test on bad %-args)
    handler = next(h for h in logging.getLogger().handlers if getattr(h, "_sluice_handler", False))
    record = logging.LogRecord("x", logging.WARNING, __file__, 1, "needs %s and %s", ("one",), None)
    handler.handle(record)
    r = one_record(log_capture)
    assert r["level"] == "WARNING"
    assert r["message"] == "'needs %s and %s' (message formatting failed: TypeError: ('one',))"


def test_formatter_never_raises():
    formatter = sl.JsonFormatter("svc")
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "m\nm", (), None)
    record.exc_info = "garbage"  # type: ignore[assignment]  # breaks the normal path
    line = formatter.format(record)
    r = json.loads(line)
    assert "\n" not in line
    assert (r["service"], r["level"], r["logger"], r["message"]) == ("svc", "INFO", "x", "'m\\nm'")
    assert r["format_error"].startswith("ValueError")


def test_ascii_only_stream_gets_escaped_json():
    root = logging.getLogger()
    old_level = root.level
    raw = io.BytesIO()
    stream = io.TextIOWrapper(raw, encoding="ascii", write_through=True)
    handler = setup_structured_logging("ascii-svc", stream=stream, capture_uncaught=False)
    try:
        get_structured_logger("x").info("café ☕", who="zoë")
        data = raw.getvalue()
        assert data.count(b"\n") == 1
        data.decode("ascii")
        r = json.loads(data)
        assert (r["message"], r["who"]) == ("café ☕", "zoë")
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
        logging.captureWarnings(False)


def test_caller_location_is_the_callers(log_capture):
    """Other handlers (e.g. a developer's console format with %(funcName)s) see the caller."""
    seen: list[tuple[str, str]] = []

    class Spy(logging.Handler):
        def emit(self, record):
            seen.append((os.path.basename(record.pathname), record.funcName))

    spy = Spy()
    root = logging.getLogger()
    root.addHandler(spy)
    try:
        log = get_structured_logger("loc")
        log.info("a")
        log.log(logging.INFO, "b")
        log.exception("c", exc_info=False)
        log_request("GET", "/", 200, 1)
        log_budget("b", 1, 2)
    finally:
        root.removeHandler(spy)
    assert seen == [("test_sluice_clients_logger.py", "test_caller_location_is_the_callers")] * 5
    assert len(log_capture.records()) == 5


@pytest.mark.parametrize("where", ["main", "thread"])
def test_uncaught_exception_is_one_critical_record(where):
    body = "raise ValueError('boom\\nsecond line')"
    if where == "thread":
        body = (
            "import threading\n"
            "def run():\n    " + body + "\n"
            "t = threading.Thread(target=run, name='worker-1'); t.start(); t.join()\n"
        )
    code = "from sluice_clients.structured_logger import setup_structured_logging\nsetup_structured_logging('crashy')\n" + body
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert proc.returncode == (1 if where == "main" else 0)
    assert proc.stderr == b""
    assert proc.stdout.count(b"\n") == 1
    r = json.loads(proc.stdout)
    assert (r["service"], r["level"], r["logger"]) == ("crashy", "CRITICAL", "sluice_clients.uncaught")
    assert (r["exc_type"], r["exc_message"]) == ("ValueError", "boom\nsecond line")
    assert r["stacktrace"].endswith("ValueError: boom\nsecond line")
    if where == "thread":
        assert r["message"] == "uncaught exception in thread worker-1" and r["thread_name"] == "worker-1"
    else:
        assert r["message"] == "uncaught exception"


def test_warnings_are_captured(log_capture):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("old api\nuse the new one", DeprecationWarning)
    r = one_record(log_capture)
    assert (r["logger"], r["level"]) == ("py.warnings", "WARNING")
    assert "DeprecationWarning: old api\nuse the new one" in r["message"]
