"""The suite's metric tallies: what each output counts, gauge membership, latency buckets."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from functions.metrics import (
    LATENCY_BOUNDS_MS,
    Histogram,
    Members,
    Tally,
    output_tallies,
    prometheus_name,
    wait_tally,
)
from schemas.examples import example
from schemas.models import (
    Alert,
    AlertKind,
    AuditDecision,
    AuditOutcome,
    DeadLetter,
    DeviceCommand,
    ReasonCode,
)
from schemas.serde import WAIT_FOUND, WAIT_UNAVAILABLE, WAIT_UNKNOWN, Waited

pytestmark = pytest.mark.unit


def audit(outcome: AuditOutcome, *reasons: ReasonCode) -> AuditDecision:
    return example(AuditDecision, outcome=outcome.value, reason_codes=[r.value for r in reasons])


def test_a_blocked_decision_counts_once_per_reason_and_an_emitted_one_not_at_all() -> None:
    """BLOCKED for two reasons moves both reasons' counters; EMITTED moves none."""
    blocked = audit(AuditOutcome.BLOCKED, ReasonCode.LIFE_SAFETY_EXCLUSION, ReasonCode.OPT_OUT)
    assert output_tallies(blocked) == (
        Tally("blocked_decisions", (("reason", "LIFE_SAFETY_EXCLUSION"),)),
        Tally("blocked_decisions", (("reason", "OPT_OUT"),)),
    )
    assert output_tallies(audit(AuditOutcome.EMITTED)) == ()


def test_commands_alerts_and_dead_letters_count_by_their_label() -> None:
    """A command by action, an alert by kind, a dead letter by error class and source topic."""
    command = example(DeviceCommand)
    assert output_tallies(command) == (Tally("commands", (("action", command.action.value),)),)
    alert = example(Alert, kind=AlertKind.TELEMETRY_LOSS.value)
    assert output_tallies(alert) == (Tally("alerts", (("kind", "TELEMETRY_LOSS"),)),)
    dead = example(DeadLetter)
    labels = (("reason", dead.error_class), ("topic", dead.source_topic))
    assert output_tallies(dead) == (Tally("dead_letters", labels),)


@pytest.mark.parametrize("outcome", [WAIT_FOUND, WAIT_UNKNOWN, WAIT_UNAVAILABLE])
def test_a_wait_for_a_schema_id_counts_by_how_it_ended(outcome: str) -> None:
    """One `schema_waits` count per wait, labelled found, unknown or unavailable."""
    waited = Waited(12, outcome, 3.5, 4)
    assert wait_tally(waited) == Tally("schema_waits", (("outcome", outcome),))
    assert prometheus_name("schema_waits").endswith("_gridstream_outcome_schema_waits")


def test_members_report_a_change_only_when_the_count_moves() -> None:
    """In twice is one change; out of a set it never joined is none."""
    members = Members()
    assert members.update("a", True)
    assert not members.update("a", True)
    assert not members.update("b", False)
    assert len(members) == 1
    assert members.update("a", False)
    assert len(members) == 0


@given(st.lists(st.integers(0, 100_000), max_size=50), st.lists(st.integers(0, 100_000)))
def test_histogram_drains_cumulative_buckets_and_starts_over(
    first: list[int], second: list[int]
) -> None:
    """Each drain has, per bound, the observations at or under it (the last: all), their sum
    and count, for the observations since the previous drain only."""
    histogram = Histogram()
    for values in (first, second):
        for value in values:
            histogram.observe(value)
        buckets, total, count = histogram.drain()
        bounds = [*LATENCY_BOUNDS_MS, None]
        assert buckets == [sum(v <= b for v in values) if b else len(values) for b in bounds]
        assert (total, count) == (sum(values), len(values))
    assert histogram.drain() == ([0] * (len(LATENCY_BOUNDS_MS) + 1), 0, 0)  # started over


def test_prometheus_names_carry_the_label_keys_before_the_metric() -> None:
    """Flink puts each key-value group's key in the scope: dead letters' two, gauges' none."""
    scope = "flink_taskmanager_job_task_operator_gridstream_"
    assert prometheus_name("dead_letters") == f"{scope}reason_topic_dead_letters"
    assert prometheus_name("freeze") == f"{scope}freeze"
