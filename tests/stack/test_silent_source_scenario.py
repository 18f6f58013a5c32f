"""Rule 3's processing-time watchdog end to end, with a job whose source silence is 10 s:
no telemetry at all for that long puts automation into Grid-Follow until data returns.

The watch ticks every 5 s, so the silence is noticed between 10 and 15 s after the last
reading. The module's job is cancelled at the end, so its short silence outlives it nowhere.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from gridstream import topics
from gridstream.config import Settings
from gridstream.scenario import Scenario, play
from gridstream.stack import LocalStack
from tests.stack.scenarios_support import (
    PIPELINE,
    SETTLE_MS,
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

SILENCE_MS = 10_000


@pytest.fixture(scope="module")
def settings(local_stack: LocalStack) -> Iterator[Settings]:
    """The stack's settings with the device-control job running with a 10 s source silence."""
    with job_running(local_stack, source_silence_ms=SILENCE_MS) as running:
        yield running


def test_a_silent_source_raises_grid_follow_blocks_curtail_and_clears_when_telemetry_returns(
    settings: Settings,
) -> None:
    """Rule 3 watchdog: after 10 s without telemetry a GRID_FOLLOW alert is raised and a
    CURTAIL start is BLOCKED GRID_FOLLOW; a reading clears it and the next event is emitted."""
    # A reading first, so that a silence noticed before this test is over before it begins.
    play(settings, Scenario().telemetry_iot(device_id=unique("thermostat-wake")), quiet)
    since = now_ms() + SETTLE_MS
    region, program, device = unique("region"), unique("program"), unique("thermostat")
    registered = (
        Scenario().sleep(SETTLE_MS).registry(device_id=device, region_id=region, programs=[program])
    )
    play(settings, add_weather(registered, region), quiet)  # no telemetry from here on
    found = until(
        settings,
        [PIPELINE],
        lambda f: bool(pipeline_alerts(f, "GRID_FOLLOW", since)),
        "GRID_FOLLOW alert",
    )
    (alert,) = pipeline_alerts(found, "GRID_FOLLOW", since)
    assert alert["severity"] == "CRITICAL"

    play(settings, add_event(Scenario(), region, program, "CURTAIL", curtailment_pct=20.0), quiet)
    found = until(
        settings, [device], lambda f: bool(of(f, topics.AUDIT, device)), "audit of the device"
    )
    (blocked,) = of(found, topics.AUDIT, device)
    assert (blocked["outcome"], blocked["action"]) == ("BLOCKED", "CURTAIL")
    # It has never reported either: unknown is unsafe, so it is stale too.
    assert blocked["reason_codes"] == ["TELEMETRY_STALE", "GRID_FOLLOW"]
    assert of(found, topics.COMMANDS, device) == []

    returned = Scenario().telemetry_iot(device_id=device).sleep(SETTLE_MS)
    play(settings, add_event(returned, region, program, "CURTAIL", curtailment_pct=20.0), quiet)
    found = until(
        settings,
        [device, PIPELINE],
        lambda f: bool(
            pipeline_alerts(f, "GRID_FOLLOW_CLEARED", alert["raised_ts_ms"])
            and commanded(f, device)
        ),
        "GRID_FOLLOW_CLEARED alert and the next event's CURTAIL",
    )

    (command,) = of(found, topics.COMMANDS, device)
    assert command["action"] == "CURTAIL"
    # The second event waits behind the first (DEFERRED), which the device holds until it
    # ends; the first's blocked start is taken once nothing blocks it (the reading).
    found = until(  # the DEFERRED audit may be committed after the command
        settings,
        [device, PIPELINE],
        lambda f: bool(audits(f, device, "DEFERRED")),
        "the DEFERRED audit",
    )
    outcomes = sorted(a["outcome"] for a in of(found, topics.AUDIT, device))
    assert outcomes == ["BLOCKED", "DEFERRED", "EMITTED"]
    # One alert for the silence (the source, silent again after its last reading, may be
    # noticed again while the outputs commit; that is a new silence).
    (cleared,) = pipeline_alerts(found, "GRID_FOLLOW_CLEARED", alert["raised_ts_ms"])
    raised = pipeline_alerts(found, "GRID_FOLLOW", since)
    assert [a for a in raised if a["raised_ts_ms"] < cleared["raised_ts_ms"]] == [alert]
