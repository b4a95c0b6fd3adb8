"""Service-side helpers for the sluice stack.

- :mod:`sluice_clients.structured_logger`: JSON log lines that sluice's default pipeline parses.
- :mod:`sluice_clients.metrics_exporter`: the platform metric catalog on prometheus_client.
"""

from .metrics_exporter import MetricsExporter, get_metrics_exporter
from .structured_logger import (
    get_structured_logger,
    log_budget,
    log_drift,
    log_inference,
    log_memory_op,
    log_request,
    log_tool_call,
    setup_structured_logging,
)

__all__ = [
    "MetricsExporter",
    "get_metrics_exporter",
    "get_structured_logger",
    "log_budget",
    "log_drift",
    "log_inference",
    "log_memory_op",
    "log_request",
    "log_tool_call",
    "setup_structured_logging",
]

__version__ = "0.1.0"
