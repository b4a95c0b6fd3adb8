"""Fixtures for the sluice_clients tests.

The tests that run sluice need the built binary: the project's test command exports
SLUICE_BIN (absolute path). Those tests fail -- they do not skip -- when it is unset or missing.
"""

from __future__ import annotations

import io
import logging
import os
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # sluice_promql / sluice_testlib, whatever pytest's import mode
    sys.path.insert(0, str(HERE))

from sluice_testlib import PIPELINE, SERVICE, LogCapture  # noqa: E402


@pytest.fixture(scope="session")
def sluice_bin() -> str:
    path = os.environ.get("SLUICE_BIN")
    if not path:
        pytest.fail(
            "SLUICE_BIN is not set: these tests run the real `sluice test`; run them through "
            "scripts/test.sh (which builds sluice and exports SLUICE_BIN) or export SLUICE_BIN=<path to sluice>",
            pytrace=False,
        )
    if not os.path.isfile(path) or not os.access(path, os.X_OK):
        pytest.fail(f"SLUICE_BIN={path!r} is not an executable file", pytrace=False)
    return path


@pytest.fixture(scope="session")
def default_pipeline() -> Path:
    if not PIPELINE.is_file():
        pytest.fail(f"the default pipeline {PIPELINE} does not exist", pytrace=False)
    return PIPELINE


@pytest.fixture
def log_capture():
    from sluice_clients.structured_logger import setup_structured_logging

    root = logging.getLogger()
    old_level = root.level
    buffer = io.StringIO()
    handler = setup_structured_logging(SERVICE, "DEBUG", stream=buffer, capture_uncaught=False)
    try:
        yield LogCapture(buffer)
    finally:
        root.removeHandler(handler)
        handler.close()
        root.setLevel(old_level)
        logging.captureWarnings(False)


@pytest.fixture
def tracer():
    """A tracer from a real OpenTelemetry SDK TracerProvider (not installed globally)."""
    from opentelemetry.sdk.trace import TracerProvider

    provider = TracerProvider()
    try:
        yield provider.get_tracer("sluice-clients-tests")
    finally:
        provider.shutdown()


