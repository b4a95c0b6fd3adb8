"""Metric names used by a PromQL expression, without a full parser.

Strings, label matchers, ranges and grouping clauses are removed first; what is
left that looks like an identifier, is not a keyword, and is not called like a
function, is a metric name. `promtool check rules` validates the syntax of the
same expressions separately (tests/stack/test_grafana.py), so this only has to
be right on valid PromQL."""

from __future__ import annotations

import re

KEYWORDS = {
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
    "bool", "offset", "inf", "nan", "atan2",
}
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_GRAFANA_VAR = re.compile(r"\$\{[^}]*\}|\$\w+")
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENT = re.compile(r"(?<![\w.:])([a-zA-Z_:][a-zA-Z0-9_:]*)(?![\w:])")


def metric_names(expr: str) -> set[str]:
    s = _STRING.sub('""', expr)
    s = _GRAFANA_VAR.sub("1", s)
    s = _MATCHERS.sub(" ", s)
    s = _RANGE.sub(" ", s)
    s = _GROUPING.sub(" ", s)
    names = set()
    for m in _IDENT.finditer(s):
        word = m.group(1)
        if word.lower() in KEYWORDS:
            continue
        rest = s[m.end():].lstrip()
        if rest.startswith("("):
            continue  # a function or an aggregation
        names.add(word)
    return names


def substitute_grafana_variables(expr: str) -> str:
    """Make a dashboard query valid PromQL for promtool: Grafana's variables
    become plain values."""
    s = expr.replace("$__rate_interval", "5m").replace("$__interval", "1m").replace("$__range", "1h")
    s = re.sub(r"\$\{?(\w+)\}?", ".*", s)  # template variables, used in =~ matchers
    return s
