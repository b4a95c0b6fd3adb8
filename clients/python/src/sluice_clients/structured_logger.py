"""JSON structured logging for the platform's Python services.

Every record becomes exactly one JSON object on one line of stdout, in the shape
sluice's default pipeline (``pipelines/structured-json.yaml``) parses::

    {"timestamp":"2026-11-24T22:28:35.123456789Z","level":"INFO","service":"chat-api",
     "logger":"sluice_clients.http","message":"GET /v1/chat 200","trace_id":"<32 hex>",
     "span_id":"<16 hex>","method":"GET","path":"/v1/chat","status":200,"duration_ms":12.5}

* ``timestamp``: RFC 3339, UTC, always 9 fractional digits, ``Z``.
* ``level``: the Python level name (DEBUG, INFO, WARNING, ERROR, CRITICAL).
* ``trace_id`` / ``span_id``: lowercase hex (32 / 16 digits) of the current
  OpenTelemetry span, present only when ``opentelemetry-api`` is installed and a
  valid span is current (the dependency is optional: ``pip install sluice-clients[otel]``).
* exceptions: ``exc_type``, ``exc_message`` and ``stacktrace`` (one string).
* any extra fields (``logger.info("...", extra={...})``, keyword fields of the
  :class:`StructuredLogger` methods and the ``log_*`` helpers).

One record is always one line: newlines are escaped by JSON, U+2028/U+2029/U+0085
are escaped too, bytes and surrogate-escaped text are made valid UTF-8 (undecodable
bytes appear as ``\\xNN`` text), values that JSON cannot represent are written as
their ``repr``, every string value is capped at ``max_field_chars`` characters
(default 16384) and a whole line at ``max_line_bytes`` bytes (default 65536): past
that, extra fields are dropped first (and listed in ``truncated_fields``), then the
message and stack trace are shortened. The formatter never raises.
"""

from __future__ import annotations

import datetime as _dt
import decimal
import enum
import json
import logging
import math
import re
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Mapping
from typing import Any, TextIO

try:  # optional dependency
    from opentelemetry import trace as _otel_trace
except Exception:  # pragma: no cover - exercised only without opentelemetry-api
    _otel_trace = None

__all__ = [
    "DEFAULT_MAX_FIELD_CHARS",
    "DEFAULT_MAX_LINE_BYTES",
    "JsonFormatter",
    "StructuredLogger",
    "get_structured_logger",
    "log_budget",
    "log_drift",
    "log_inference",
    "log_memory_op",
    "log_request",
    "log_tool_call",
    "setup_structured_logging",
]

DEFAULT_MAX_FIELD_CHARS = 16384
DEFAULT_MAX_LINE_BYTES = 65536
_MAX_DEPTH = 8
_MAX_ITEMS = 1000
_TRUNCATION_MARK = "...[truncated {n} chars]"

# Keys the formatter itself writes; extra fields with these names are renamed "extra_<name>".
CORE_FIELDS = (
    "timestamp",
    "level",
    "service",
    "logger",
    "message",
    "trace_id",
    "span_id",
    "exc_type",
    "exc_message",
    "stacktrace",
    "stack_info",
    "truncated_fields",
)

# Attribute names every LogRecord has; anything else in record.__dict__ is an extra field.
_RECORD_ATTRS = frozenset(
    logging.LogRecord("x", logging.INFO, __file__, 0, "", (), None).__dict__
) | {"message", "asctime", "created_ns", "taskName"}

_FIELDS_ATTR = "sluice_fields"  # where StructuredLogger / helpers put keyword fields

_TRACE_ID_RE = re.compile(r"^[0-9a-f]{32}$")
_SPAN_ID_RE = re.compile(r"^[0-9a-f]{16}$")

# Characters that some line splitters treat as line breaks but json.dumps(ensure_ascii=False) leaves raw.
_RAW_LINE_BREAKS = {"\u0085": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"}
_RAW_LINE_BREAKS_RE = re.compile("[\u0085\u2028\u2029]")


# --------------------------------------------------------------------------- helpers


def _format_timestamp(ns: int) -> str:
    secs, frac = divmod(ns, 1_000_000_000)
    base = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs))
    return f"{base}.{frac:09d}Z"


def _record_ns(record: logging.LogRecord) -> int:
    ns = getattr(record, "created_ns", None)
    if isinstance(ns, int):
        return ns
    # Records made by a foreign record factory: microsecond precision from record.created.
    return int(round(record.created * 1_000_000)) * 1000


def _clean_str(s: str, cap: int) -> str:
    """Valid UTF-8 text (lone surrogates -> \\xNN text), capped at `cap` characters."""
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        try:
            raw = s.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            raw = s.encode("utf-8", "surrogatepass")
        s = raw.decode("utf-8", "backslashreplace")
    if len(s) > cap:
        s = s[:cap] + _TRUNCATION_MARK.format(n=len(s) - cap)
    return s


def _safe_repr(value: Any) -> str:
    try:
        return repr(value)
    except Exception as exc:  # a broken __repr__ must not break logging
        return f"<unrepresentable {type(value).__qualname__}: {type(exc).__name__}>"


def _sanitize(value: Any, cap: int, depth: int = 0, seen: set[int] | None = None) -> Any:
    """Turn any value into plain JSON data (str/int/float/bool/None/list/dict) that json.dumps
    cannot fail on and that stays inside the caps."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return _clean_str(value, cap)
    if isinstance(value, int):
        value = int(value)  # IntEnum & co.
        # Integers beyond 64 bits break many JSON parsers: keep their digits as a string.
        return value if -(2**63) <= value < 2**64 else str(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)  # "nan", "inf"
    if isinstance(value, (bytes, bytearray, memoryview)):
        return _clean_str(bytes(value).decode("utf-8", "backslashreplace"), cap)
    if isinstance(value, enum.Enum):
        return _sanitize(value.value, cap, depth, seen)
    if isinstance(value, _dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(_dt.timezone.utc)
            return value.replace(tzinfo=None).isoformat() + "Z"
        return value.isoformat()
    if isinstance(value, (_dt.date, _dt.time)):
        return value.isoformat()
    if isinstance(value, _dt.timedelta):
        return value.total_seconds()
    if isinstance(value, (decimal.Decimal, uuid.UUID)):
        return _clean_str(str(value), cap)
    if isinstance(value, (Mapping, list, tuple, set, frozenset)):
        if depth >= _MAX_DEPTH:
            return _clean_str(_safe_repr(value), cap)
        seen = set() if seen is None else seen
        if id(value) in seen:
            return "<circular reference>"
        seen.add(id(value))
        try:
            if isinstance(value, Mapping):
                out: dict[str, Any] = {}
                for i, (k, v) in enumerate(value.items()):
                    if i >= _MAX_ITEMS:
                        out["..."] = f"{len(value) - _MAX_ITEMS} more items"
                        break
                    if isinstance(k, str):
                        key = k
                    elif k is None or isinstance(k, (int, float, bool)):
                        key = str(k)
                    else:
                        key = _safe_repr(k)
                    out[_clean_str(key, cap)] = _sanitize(v, cap, depth + 1, seen)
                return out
            items = list(value)
            if isinstance(value, (set, frozenset)):
                try:
                    items = sorted(items)
                except TypeError:
                    pass
            result = [_sanitize(v, cap, depth + 1, seen) for v in items[:_MAX_ITEMS]]
            if len(items) > _MAX_ITEMS:
                result.append(f"... {len(items) - _MAX_ITEMS} more items")
            return result
        finally:
            seen.discard(id(value))
    return _clean_str(_safe_repr(value), cap)


def _dumps(obj: dict[str, Any]) -> str:
    line = json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return _RAW_LINE_BREAKS_RE.sub(lambda m: _RAW_LINE_BREAKS[m.group(0)], line)


def _current_span_ids() -> tuple[str, str] | None:
    if _otel_trace is None:
        return None
    try:
        ctx = _otel_trace.get_current_span().get_span_context()
        if not ctx.is_valid:
            return None
        return format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")
    except Exception:
        return None


def _normalize_id(value: Any, width: int, pattern: re.Pattern[str]) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value < 16**width:
        return format(value, f"0{width}x")
    if isinstance(value, str):
        v = value.strip().lower()
        if pattern.match(v) and v.strip("0"):
            return v
    return None


def _exc_type_name(exc_type: type) -> str:
    module = getattr(exc_type, "__module__", None)
    name = getattr(exc_type, "__qualname__", None) or getattr(exc_type, "__name__", "Exception")
    if module in (None, "builtins", "__main__"):
        return name
    return f"{module}.{name}"


# --------------------------------------------------------------------------- formatter


class JsonFormatter(logging.Formatter):
    """Formats a LogRecord as one line of JSON (no trailing newline). Never raises."""

    def __init__(
        self,
        service_name: str,
        *,
        max_field_chars: int = DEFAULT_MAX_FIELD_CHARS,
        max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    ) -> None:
        super().__init__()
        if max_field_chars < 64:
            raise ValueError("max_field_chars must be at least 64")
        if max_line_bytes < 1024:
            raise ValueError("max_line_bytes must be at least 1024")
        self.service_name = service_name
        self.max_field_chars = max_field_chars
        self.max_line_bytes = max_line_bytes

    # -- pieces
    def _message(self, record: logging.LogRecord) -> str:
        try:
            if isinstance(record.msg, (bytes, bytearray)) and not record.args:
                return bytes(record.msg).decode("utf-8", "backslashreplace")
            return record.getMessage()
        except Exception as exc:  # bad %-args: keep the template and say why
            return f"{_safe_repr(record.msg)} (message formatting failed: {type(exc).__name__}: {_safe_repr(record.args)})"

    def _extras(self, record: logging.LogRecord) -> dict[str, Any]:
        extras: dict[str, Any] = {}
        for key, value in record.__dict__.items():
            if key in _RECORD_ATTRS or key == _FIELDS_ATTR or key.startswith("_"):
                continue
            extras[key] = value
        fields = record.__dict__.get(_FIELDS_ATTR)
        if isinstance(fields, Mapping):
            for key, value in fields.items():
                extras[str(key)] = value
        return extras

    def format(self, record: logging.LogRecord) -> str:  # noqa: A003 - logging API
        try:
            return self._format(record)
        except Exception as exc:  # last resort: still one valid JSON line
            fallback = {
                "timestamp": _format_timestamp(time.time_ns()),
                "level": str(getattr(record, "levelname", "ERROR")),
                "service": self.service_name,
                "logger": str(getattr(record, "name", "")),
                "message": _clean_str(_safe_repr(getattr(record, "msg", "")), self.max_field_chars),
                "format_error": f"{type(exc).__name__}: {_clean_str(_safe_repr(exc), 1024)}",
            }
            return _dumps(_sanitize(fallback, self.max_field_chars))

    def _format(self, record: logging.LogRecord) -> str:
        cap = self.max_field_chars
        head: dict[str, Any] = {
            "timestamp": _format_timestamp(_record_ns(record)),
            "level": record.levelname,
            "service": self.service_name,
            "logger": record.name,
            "message": self._message(record),
        }
        extras = self._extras(record)

        ids = _current_span_ids()
        if ids is None:
            # No current span: accept explicitly passed ids (e.g. propagated through a queue) if well-formed.
            tid = _normalize_id(extras.get("trace_id"), 32, _TRACE_ID_RE)
            sid = _normalize_id(extras.get("span_id"), 16, _SPAN_ID_RE)
            if tid is not None:
                ids = (tid, sid) if sid is not None else (tid, "")
                extras.pop("trace_id")
                if sid is not None:
                    extras.pop("span_id")
        if ids is not None:
            head["trace_id"] = ids[0]
            if ids[1]:
                head["span_id"] = ids[1]

        tail: dict[str, Any] = {}
        if record.exc_info and record.exc_info[0] is not None:
            etype, evalue, etb = record.exc_info
            tail["exc_type"] = _exc_type_name(etype)
            tail["exc_message"] = str(evalue) if evalue is not None else ""
            tail["stacktrace"] = "".join(traceback.format_exception(etype, evalue, etb)).rstrip("\n")
        elif record.exc_text:
            tail["stacktrace"] = record.exc_text
        if record.stack_info:
            tail["stack_info"] = record.stack_info

        body: dict[str, Any] = {}
        for key, value in extras.items():
            name = key if key not in CORE_FIELDS else f"extra_{key}"
            body[name] = value

        head = _sanitize(head, cap)
        tail = _sanitize(tail, cap)
        body = _sanitize(body, cap)
        line = _dumps({**head, **body, **tail})
        if len(line.encode("utf-8")) <= self.max_line_bytes:
            return line
        return self._shrink(head, body, tail)

    def _shrink(self, head: dict[str, Any], body: dict[str, Any], tail: dict[str, Any]) -> str:
        """The line is over max_line_bytes: drop extra fields (largest first), then shorten text."""
        limit = self.max_line_bytes

        def size(obj: dict[str, Any]) -> int:
            return len(_dumps(obj).encode("utf-8"))

        dropped: list[str] = []
        body = dict(body)
        for key in sorted(body, key=lambda k: len(_dumps({k: body[k]})), reverse=True):
            if size({**head, **body, **tail, "truncated_fields": dropped}) <= limit:
                break
            del body[key]
            dropped.append(key)
        out = {**head, **body, **tail, "truncated_fields": sorted(dropped)}
        # Still too long: shorten message / stacktrace / exc_message / stack_info (bytes, not chars).
        for key in ("stacktrace", "stack_info", "message", "exc_message"):
            over = size(out) - limit
            if over <= 0:
                break
            value = out.get(key)
            if not isinstance(value, str):
                continue
            if key not in out["truncated_fields"]:
                out["truncated_fields"].append(key)
            # the longest prefix (in characters) that makes the line fit, by bisection
            lo, hi = 0, len(value)
            while lo < hi:
                mid = (lo + hi + 1) // 2
                out[key] = value[:mid] + _TRUNCATION_MARK.format(n=len(value) - mid)
                if size(out) <= limit:
                    lo = mid
                else:
                    hi = mid - 1
            out[key] = value[:lo] + _TRUNCATION_MARK.format(n=len(value) - lo)
        return _dumps(out)


# --------------------------------------------------------------------------- handler & setup


class _StdoutJsonHandler(logging.Handler):
    """Writes one formatted record + "\\n" per write() call to `stream` (default: the current
    sys.stdout, looked up at each record so redirections apply) and flushes."""

    def __init__(self, stream: TextIO | None = None) -> None:
        super().__init__()
        self._stream = stream

    @property
    def stream(self) -> TextIO:
        return self._stream if self._stream is not None else sys.stdout

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
            stream = self.stream
            try:
                stream.write(line + "\n")
            except UnicodeEncodeError:
                # The stream's encoding is not UTF-8: the same JSON, all non-ASCII escaped.
                stream.write(json.dumps(json.loads(line), ensure_ascii=True, separators=(",", ":")) + "\n")
            stream.flush()
        except RecursionError:  # pragma: no cover - as logging.StreamHandler
            raise
        except Exception:
            self.handleError(record)


_setup_lock = threading.Lock()
_factory_installed = False


def _install_ns_record_factory() -> None:
    """Stamp every LogRecord with created_ns (time.time_ns()) so timestamps carry real
    nanoseconds; wraps (does not replace) whatever factory is installed. Idempotent."""
    global _factory_installed
    if _factory_installed:
        return
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        ns = time.time_ns()
        record = previous(*args, **kwargs)
        record.created_ns = ns
        record.created = ns / 1e9
        record.msecs = (ns % 1_000_000_000) // 1_000_000
        return record

    factory._sluice_ns_factory = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)
    _factory_installed = True


_UNCAUGHT_LOGGER = "sluice_clients.uncaught"
_hooks_installed = False


def _install_excepthooks() -> None:
    """Uncaught exceptions (main thread and other threads) become one CRITICAL JSON record
    instead of a multi-line traceback on stderr. KeyboardInterrupt keeps the default hook."""
    global _hooks_installed
    if _hooks_installed:
        return
    previous_sys_hook = sys.excepthook

    def sys_hook(exc_type, exc_value, exc_tb):  # type: ignore[no-untyped-def]
        if issubclass(exc_type, KeyboardInterrupt):
            previous_sys_hook(exc_type, exc_value, exc_tb)
            return
        logging.getLogger(_UNCAUGHT_LOGGER).critical(
            "uncaught exception", exc_info=(exc_type, exc_value, exc_tb)
        )

    def thread_hook(args: threading.ExceptHookArgs) -> None:
        if args.exc_type is SystemExit:
            return
        name = args.thread.name if args.thread is not None else "unknown"
        logging.getLogger(_UNCAUGHT_LOGGER).critical(
            "uncaught exception in thread %s",
            name,
            exc_info=(args.exc_type, args.exc_value, args.exc_traceback),
            extra={"thread_name": name},
        )

    sys.excepthook = sys_hook
    threading.excepthook = thread_hook
    _hooks_installed = True


def setup_structured_logging(
    service_name: str,
    level: int | str = logging.INFO,
    *,
    stream: TextIO | None = None,
    max_field_chars: int = DEFAULT_MAX_FIELD_CHARS,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    capture_warnings: bool = True,
    capture_uncaught: bool = True,
) -> logging.Handler:
    """Make the root logger write JSON lines to stdout (or `stream`) for `service_name`.

    Replaces the handlers a previous call installed (calling it again is safe) and leaves
    other handlers alone; sets the root level to `level` (an int or a level name such as
    "INFO"). With `capture_warnings`, `warnings.warn` goes through logging (logger
    "py.warnings"); with `capture_uncaught`, uncaught exceptions in any thread are logged as one
    CRITICAL record (logger "sluice_clients.uncaught") instead of a traceback on stderr.
    Returns the installed handler.
    """
    if not isinstance(service_name, str) or not service_name:
        raise ValueError("service_name must be a non-empty string")
    if isinstance(level, str):
        resolved = logging.getLevelName(level.upper())
        if not isinstance(resolved, int):
            raise ValueError(f"unknown log level {level!r}")
        level = resolved
    handler = _StdoutJsonHandler(stream)
    handler.setFormatter(
        JsonFormatter(service_name, max_field_chars=max_field_chars, max_line_bytes=max_line_bytes)
    )
    handler._sluice_handler = True  # type: ignore[attr-defined]
    with _setup_lock:
        _install_ns_record_factory()
        root = logging.getLogger()
        for old in list(root.handlers):
            if getattr(old, "_sluice_handler", False):
                root.removeHandler(old)
                old.close()
        root.addHandler(handler)
        root.setLevel(level)
        if capture_warnings:
            logging.captureWarnings(True)
        if capture_uncaught:
            _install_excepthooks()
    return handler


# --------------------------------------------------------------------------- logger adapter


class StructuredLogger(logging.LoggerAdapter):
    """A logger whose methods take extra fields as keyword arguments::

        log = get_structured_logger(__name__)
        log.info("cache warmed", entries=123, user_id="u-1")

    `exc_info`, `stack_info`, `stacklevel` and `extra` keep their logging meaning.
    """

    _PASSTHROUGH = frozenset({"exc_info", "stack_info", "stacklevel", "extra"})

    def __init__(self, logger: logging.Logger, fields: Mapping[str, Any] | None = None) -> None:
        super().__init__(logger, dict(fields or {}))

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        fields = dict(self.extra or {})
        passthrough = {}
        for key, value in kwargs.items():
            if key in self._PASSTHROUGH:
                passthrough[key] = value
            else:
                fields[key] = value
        extra = dict(passthrough.get("extra") or {})
        if fields:
            merged = dict(extra.get(_FIELDS_ATTR) or {})
            merged.update(fields)
            extra[_FIELDS_ATTR] = merged
        passthrough["extra"] = extra
        return msg, passthrough

    # Positional-only level/msg so that fields may be called "level", "msg" or "message".
    # `stacklevel` counts from the caller of these methods, as for logging.Logger.
    def _emit(self, level: int, msg: Any, args: tuple, kwargs: dict[str, Any]) -> None:
        if self.isEnabledFor(level):
            msg, kwargs = self.process(msg, kwargs)
            # skip this frame and the public method that called it
            kwargs["stacklevel"] = int(kwargs.get("stacklevel", 1)) + 2
            self.logger.log(level, msg, *args, **kwargs)

    def log(self, level: int, msg: Any, /, *args: Any, **kwargs: Any) -> None:
        self._emit(level, msg, args, kwargs)

    def debug(self, msg: Any, /, *args: Any, **kwargs: Any) -> None:
        self._emit(logging.DEBUG, msg, args, kwargs)

    def info(self, msg: Any, /, *args: Any, **kwargs: Any) -> None:
        self._emit(logging.INFO, msg, args, kwargs)

    def warning(self, msg: Any, /, *args: Any, **kwargs: Any) -> None:
        self._emit(logging.WARNING, msg, args, kwargs)

    def error(self, msg: Any, /, *args: Any, **kwargs: Any) -> None:
        self._emit(logging.ERROR, msg, args, kwargs)

    def exception(self, msg: Any, /, *args: Any, exc_info: Any = True, **kwargs: Any) -> None:
        self._emit(logging.ERROR, msg, args, {**kwargs, "exc_info": exc_info})

    def critical(self, msg: Any, /, *args: Any, **kwargs: Any) -> None:
        self._emit(logging.CRITICAL, msg, args, kwargs)

    fatal = critical

    def bind(self, **fields: Any) -> "StructuredLogger":
        """A logger that adds `fields` to every record."""
        return StructuredLogger(self.logger, {**(self.extra or {}), **fields})


def get_structured_logger(name: str | None = None, **fields: Any) -> StructuredLogger:
    """The named logger, wrapped so keyword arguments become JSON fields."""
    return StructuredLogger(logging.getLogger(name), fields)


LoggerLike = StructuredLogger | logging.Logger | logging.LoggerAdapter | str | None


def _resolve(logger: LoggerLike, default_name: str) -> StructuredLogger:
    if isinstance(logger, StructuredLogger):
        return logger
    if isinstance(logger, logging.LoggerAdapter):
        return StructuredLogger(logger.logger, dict(logger.extra or {}))
    if isinstance(logger, logging.Logger):
        return StructuredLogger(logger)
    return get_structured_logger(logger or default_name)


def _level(level: int | str | None, default: int) -> int:
    if level is None:
        return default
    if isinstance(level, str):
        resolved = logging.getLevelName(level.upper())
        if isinstance(resolved, int):
            return resolved
        raise ValueError(f"unknown log level {level!r}")
    return level


def _ms(value: float) -> float:
    return round(float(value), 3)


# --------------------------------------------------------------------------- domain helpers
# Each helper writes one record with the contract's field names and picks a level from the
# outcome unless `level` is given. `logger` may be a StructuredLogger, a logging.Logger, a
# LoggerAdapter or a logger name; the default is "sluice_clients.<area>". Extra keyword
# arguments become fields (e.g. user_id="u-1", route="/v1/chat/{id}").


def log_request(
    method: str,
    path: str,
    status: int,
    duration_ms: float,
    *,
    message: str | None = None,
    level: int | str | None = None,
    logger: LoggerLike = None,
    **fields: Any,
) -> None:
    """An HTTP request: fields method, path, status, duration_ms. ERROR for 5xx, WARNING for 4xx."""
    status = int(status)
    default = logging.ERROR if status >= 500 else logging.WARNING if status >= 400 else logging.INFO
    _resolve(logger, "sluice_clients.http").log(
        _level(level, default),
        message if message is not None else f"{method} {path} {status}",
        stacklevel=2,
        method=method,
        path=path,
        status=status,
        duration_ms=_ms(duration_ms),
        **fields,
    )


def log_inference(
    model: str,
    tokens_in: int,
    tokens_out: int,
    duration_ms: float,
    *,
    status: str = "success",
    time_to_first_token_ms: float | None = None,
    message: str | None = None,
    level: int | str | None = None,
    logger: LoggerLike = None,
    **fields: Any,
) -> None:
    """A model call: fields model, tokens_in, tokens_out, duration_ms, status ("success"/"error"),
    time_to_first_token_ms when given. ERROR when status is "error"."""
    extra: dict[str, Any] = {}
    if time_to_first_token_ms is not None:
        extra["time_to_first_token_ms"] = _ms(time_to_first_token_ms)
    _resolve(logger, "sluice_clients.inference").log(
        _level(level, logging.ERROR if status == "error" else logging.INFO),
        message if message is not None else f"inference {model} {status}",
        stacklevel=2,
        model=model,
        tokens_in=int(tokens_in),
        tokens_out=int(tokens_out),
        duration_ms=_ms(duration_ms),
        status=status,
        **extra,
        **fields,
    )


def log_tool_call(
    tool: str,
    status: str,
    duration_ms: float,
    *,
    message: str | None = None,
    level: int | str | None = None,
    logger: LoggerLike = None,
    **fields: Any,
) -> None:
    """An MCP tool call: fields tool, status ("success"/"error"), duration_ms."""
    _resolve(logger, "sluice_clients.mcp").log(
        _level(level, logging.ERROR if status == "error" else logging.INFO),
        message if message is not None else f"tool {tool} {status}",
        stacklevel=2,
        tool=tool,
        status=status,
        duration_ms=_ms(duration_ms),
        **fields,
    )


def log_memory_op(
    operation: str,
    status: str,
    duration_ms: float,
    *,
    message: str | None = None,
    level: int | str | None = None,
    logger: LoggerLike = None,
    **fields: Any,
) -> None:
    """A memory-engine operation: fields operation, status ("success"/"error"), duration_ms."""
    _resolve(logger, "sluice_clients.memory").log(
        _level(level, logging.ERROR if status == "error" else logging.INFO),
        message if message is not None else f"memory {operation} {status}",
        stacklevel=2,
        operation=operation,
        status=status,
        duration_ms=_ms(duration_ms),
        **fields,
    )


def log_budget(
    budget: str,
    spend_dollars: float,
    limit_dollars: float,
    *,
    warn_ratio: float = 0.9,
    message: str | None = None,
    level: int | str | None = None,
    logger: LoggerLike = None,
    **fields: Any,
) -> None:
    """Budget state: fields budget, spend_dollars, limit_dollars, budget_ratio (spend/limit, when
    limit > 0). WARNING once spend reaches warn_ratio of the limit, ERROR past the limit."""
    spend, limit = float(spend_dollars), float(limit_dollars)
    ratio = spend / limit if limit > 0 else None
    default = logging.INFO
    if ratio is not None and ratio > 1.0:
        default = logging.ERROR
    elif ratio is not None and ratio >= warn_ratio:
        default = logging.WARNING
    extra: dict[str, Any] = {} if ratio is None else {"budget_ratio": round(ratio, 6)}
    _resolve(logger, "sluice_clients.budget").log(
        _level(level, default),
        message if message is not None else f"budget {budget} ${spend:.2f} of ${limit:.2f}",
        stacklevel=2,
        budget=budget,
        spend_dollars=spend,
        limit_dollars=limit,
        **extra,
        **fields,
    )


def log_drift(
    model: str,
    feature: str,
    score: float,
    *,
    threshold: float | None = None,
    message: str | None = None,
    level: int | str | None = None,
    logger: LoggerLike = None,
    **fields: Any,
) -> None:
    """A drift measurement: fields model, feature, drift_score, drift_threshold (when given).
    WARNING when score >= threshold."""
    score = float(score)
    extra: dict[str, Any] = {} if threshold is None else {"drift_threshold": float(threshold)}
    drifting = threshold is not None and score >= threshold
    _resolve(logger, "sluice_clients.drift").log(
        _level(level, logging.WARNING if drifting else logging.INFO),
        message if message is not None else f"drift {model}/{feature} score {score:g}",
        stacklevel=2,
        model=model,
        feature=feature,
        drift_score=score,
        **extra,
        **fields,
    )
