"""Rule 4 end to end: the safety freeze on processing lag, with a job whose freeze lag is short.

Lag is measured per decode subtask as processing time minus the newest telemetry event time it
has seen (functions/pipeline.py): a reading whose event time is behind the newest seen one
reports the time since that newest one. So the pipeline "lags" once more than the freeze lag of
wall-clock time passed since the newest reading and an old reading (a backlog) arrives; a
current reading brings the lag back under the clear threshold (half the freeze lag).
The module's job is cancelled at the end, so no freeze outlives it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from gridstream import topics
from gridstream.config import Settings
from gridstream.scenario import Scenario, play
from gridstream.stack import LocalStack
from tests.stack.scenarios_support import (
    PIPELINE,
    SETTLE_MS,
    add_device,
    add_event,
    add_weather,
    audits,
    commanded,
    job_running,
    now_ms,
    of,
    pipeline_alerts,
    quiet,
    unique,
    until,
)

pytestmark = pytest.mark.stack

FREEZE_LAG_MS = 15_000  # clears below half of it (jobs/device_control.py policies_from)


@pytest.fixture(scope="module")
def settings(local_stack: LocalStack) -> Iterator[Settings]:
    """The stack's settings with the device-control job running with a 15 s freeze lag."""
    with job_running(local_stack, freeze_lag_ms=FREEZE_LAG_MS) as running:
        yield running


def test_lag_freeze_blocks_a_new_curtail_lets_restore_through_and_lifts_when_lag_recovers(
    settings: Settings,
) -> None:
    """Rule 4: while lagging, a CURTAIL start is BLOCKED SAFETY_FREEZE (one SAFETY_FREEZE
    alert) and a cancelled event's RESTORE is emitted; a current reading clears the freeze
    and the held CURTAIL goes out at the device's next reading."""
    since = now_ms()
    region, before, during = unique("region"), unique("program"), unique("program")
    curtailed, frozen_out = unique("thermostat-curtailed"), unique("thermostat-frozen-out")

    # Before any lag: `curtailed` gets its CURTAIL.
    first = unique("dr")
    setup = add_device(add_weather(Scenario(), region), curtailed, region, before)
    setup = setup.sleep(SETTLE_MS)
    play(settings, add_event(setup, region, before, "CURTAIL", event_id=first), quiet)
    newest_reading_s = time.time() - SETTLE_MS / 1000
    until(settings, [curtailed], lambda f: bool(of(f, topics.COMMANDS, curtailed)), "CURTAIL")

    # The lag: once the freeze lag has passed since the newest reading, a reading 10 min old.
    time.sleep(max(0.0, newest_reading_s + FREEZE_LAG_MS / 1000 + 3 - time.time()))
    backlog = Scenario().registry(device_id=frozen_out, region_id=region, programs=[during])
    play(settings, backlog.telemetry_iot(device_id=frozen_out, ts_ms="now-10m"), quiet)
    until(
        settings,
        [PIPELINE],
        lambda f: bool(pipeline_alerts(f, "SAFETY_FREEZE", since)),
        "SAFETY_FREEZE alert",
    )

    # While frozen: the first event is cancelled (RESTORE) and a second one starts (CURTAIL).
    cancel = add_event(Scenario(), region, before, "CURTAIL", event_id=first, status="CANCELLED")
    play(settings, add_event(cancel, region, during, "CURTAIL", curtailment_pct=20.0), quiet)
    found = until(
        settings,
        [curtailed, frozen_out, PIPELINE],
        lambda f: bool(
            len(of(f, topics.COMMANDS, curtailed)) >= 2
            and len(audits(f, curtailed, "EMITTED")) >= 2
            and of(f, topics.AUDIT, frozen_out)
        ),
        "RESTORE of the curtailed device and an audit of the frozen-out one",
    )

    assert [c["action"] for c in of(found, topics.COMMANDS, curtailed)] == ["CURTAIL", "RESTORE"]
    assert [a["outcome"] for a in of(found, topics.AUDIT, curtailed)] == ["EMITTED", "EMITTED"]
    (blocked,) = of(found, topics.AUDIT, frozen_out)
    assert (blocked["outcome"], blocked["action"]) == ("BLOCKED", "CURTAIL")
    assert blocked["reason_codes"] == ["SAFETY_FREEZE"]
    assert of(found, topics.COMMANDS, frozen_out) == []
    (alert,) = pipeline_alerts(found, "SAFETY_FREEZE", since)
    assert alert["severity"] == "CRITICAL"
    assert pipeline_alerts(found, "SAFETY_FREEZE_CLEARED", alert["raised_ts_ms"]) == []

    # Recovery: a current reading brings the lag under the clear threshold; at the device's
    # next reading its held start is taken (the event is still on, nothing blocks it now).
    cleared_since = now_ms()
    play(settings, Scenario().telemetry_iot(device_id=frozen_out), quiet)
    until(
        settings,
        [PIPELINE],
        lambda f: bool(pipeline_alerts(f, "SAFETY_FREEZE_CLEARED", cleared_since)),
        "SAFETY_FREEZE_CLEARED alert",
    )
    play(settings, Scenario().telemetry_iot(device_id=frozen_out), quiet)
    found = until(
        settings,
        [frozen_out],
        lambda f: commanded(f, frozen_out),
        "CURTAIL of the frozen-out device and its audit after the freeze cleared",
    )

    (command,) = of(found, topics.COMMANDS, frozen_out)
    assert (command["action"], command["curtailment_pct"]) == ("CURTAIL", 20.0)
    assert [a["outcome"] for a in of(found, topics.AUDIT, frozen_out)] == ["BLOCKED", "EMITTED"]
