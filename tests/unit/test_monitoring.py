"""The Prometheus alert rules and the Grafana dashboard name only metrics the suite exports,
and every alert says how severe it is and where its runbook is."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from functions.metrics import COUNTERS, GAUGES, PROMETHEUS_SCOPE, prometheus_name

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "monitoring" / "alerts.yml"
DASHBOARD = ROOT / "monitoring" / "grafana-dashboard.json"
OPERATIONS = ROOT / "docs" / "operations.md"
SUITE_METRIC = re.compile(re.escape(PROMETHEUS_SCOPE) + r"\w+")


def _rules() -> list[dict[str, Any]]:
    return [
        rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]
    ]


def _dashboard_exprs() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [target["expr"] for panel in panels for target in panel["targets"]]


def _anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, spaces to hyphens, punctuation dropped."""
    headings = re.findall(r"^#+ (.+)$", markdown, flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h).strip().lower().replace(" ", "-") for h in headings}


def unknown_metrics(texts: list[str]) -> set[str]:
    """Suite metric names in `texts` that the suite does not export."""
    exported = {prometheus_name(m) for m in (*COUNTERS, *GAUGES)}
    return {name for text in texts for name in SUITE_METRIC.findall(text)} - exported


def test_alerts_and_dashboard_name_only_exported_metrics() -> None:
    """Every `..._gridstream_*` name in the rules and the panels is one `Meters` makes."""
    texts = [rule["expr"] for rule in _rules()] + _dashboard_exprs()
    assert unknown_metrics(texts) == set()
    assert SUITE_METRIC.search(" ".join(texts))  # they do name some


def test_a_misspelled_metric_is_caught() -> None:
    """The check above fails on a name one letter off."""
    wrong = prometheus_name("stale_devices").replace("stale", "stal")
    assert unknown_metrics([f"sum({wrong}) > 0"]) == {wrong}


def test_every_alert_has_a_severity_a_summary_and_a_runbook_that_exists() -> None:
    """Severity warning or critical; the runbook is a heading of docs/operations.md."""
    anchors = _anchors(OPERATIONS.read_text())
    rules = _rules()
    assert rules
    for rule in rules:
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        page, _, anchor = rule["annotations"]["runbook"].partition("#")
        assert (page, anchor in anchors) == ("docs/operations.md", True), rule["alert"]
    assert len({rule["alert"] for rule in rules}) == len(rules)
