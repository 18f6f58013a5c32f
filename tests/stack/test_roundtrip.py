"""Kafka → PyFlink on the session cluster → Kafka, exactly once."""

from __future__ import annotations

import pytest

from gridstream import roundtrip
from gridstream.deploy import ensure_job
from gridstream.stack import LocalStack

pytestmark = pytest.mark.stack


def test_every_record_arrives_exactly_once_through_the_session_cluster(
    local_stack: LocalStack,
) -> None:
    """Records produced to Kafka come back from the submitted job once each, read_committed."""
    job_id = ensure_job(local_stack)
    try:
        report = roundtrip.run(local_stack.settings, events=3000, progress=lambda line: None)
    finally:
        local_stack.flink.cancel(job_id)
    assert (report.missing, report.duplicates) == (0, 0)
    assert report.received == 3000


def test_a_job_submitted_after_another_was_cancelled_runs_on_the_same_cluster(
    local_stack: LocalStack,
) -> None:
    """Cancel, resubmit: the new job's embedded Python starts (libpython loaded once per JVM)."""
    local_stack.flink.cancel(ensure_job(local_stack))
    job_id = ensure_job(local_stack)
    try:
        report = roundtrip.run(local_stack.settings, events=200, progress=lambda line: None)
    finally:
        local_stack.flink.cancel(job_id)
    assert (report.received, report.missing, report.duplicates) == (200, 0, 0)
