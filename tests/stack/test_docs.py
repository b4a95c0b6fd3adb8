"""docs/: the metric catalog and the alert reference stay in step with the
rules, and every runbook link of an alert lands on a heading."""

from __future__ import annotations

import re

import pytest

from stack_helpers import REPO, alert_rules
from metric_catalog import documented_names
from test_alertmanager import CHANNELS, EXPECTED_CHANNELS

DOCS = REPO / "docs"


def slug(heading: str) -> str:
    s = heading.strip().lower()
    s = re.sub(r"[^\w\- ]", "", s)
    return s.replace(" ", "-")


def anchors(path) -> set[str]:
    return {slug(m.group(1)) for m in re.finditer(r"^#+\s+(.+)$", path.read_text(), re.M)}


def test_metrics_doc_lists_the_catalog_and_the_alerts():
    text = (DOCS / "METRICS.md").read_text()
    missing = {name for name in documented_names() if f"`{name}`" not in text}
    assert not missing, f"not in docs/METRICS.md: {missing}"
    for rule in alert_rules():
        assert rule["alert"] in text, rule["alert"]


def test_operations_doc_covers_every_alert_with_its_channels():
    text = (DOCS / "OPERATIONS.md").read_text()
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 5 and cells[0] in EXPECTED_CHANNELS:
            rows[cells[0]] = cells
    assert set(rows) == {r["alert"] for r in alert_rules()}
    for rule in alert_rules():
        name, _, for_, severity, channels = rows[rule["alert"]]
        assert for_ == rule["for"], name
        assert severity == rule["labels"]["severity"], name
        assert [c.strip() for c in channels.split(",")] == EXPECTED_CHANNELS[name], name


@pytest.mark.parametrize("rule", alert_rules(), ids=[r["alert"] for r in alert_rules()])
def test_runbook_links_resolve(rule):
    path, _, anchor = rule["annotations"]["runbook"].partition("#")
    assert anchor in anchors(REPO / path), f"{rule['alert']}: no heading for #{anchor} in {path}"


def test_operations_doc_sections():
    text = (DOCS / "OPERATIONS.md").read_text()
    for heading in ("## Components", "## Alert reference", "## Routing, Slack channels and the webhook", "## Ports",
                    "## Environment variables", "## Data retention and backups",
                    "## Migrating from Promtail and the OpenTelemetry Collector"):
        assert heading in text
    for channel in CHANNELS.values():
        assert f"`{channel}`" in text


def test_quickstart_sections():
    text = (DOCS / "QUICKSTART.md").read_text()
    for heading in ("## 1. Set up", "## 2. Check that each part works", "## 3. Common queries", "### LogQL", "### PromQL",
                    "## 4. Troubleshooting"):
        assert heading in text
