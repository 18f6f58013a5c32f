"""Rules 2 (fail-open) and 8 end to end, with a job whose region budget is 2 commands a 10 s
window, so a handful of devices is enough to make commands wait.

Budget windows run on event time: waiting commands are released when the watermark passes the
next window's start, which a reading of an unregistered "ticker" device from the near future
brings about (event time then runs ahead of the wall clock only inside this module's job,
which is cancelled at the end).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator

import pytest

from gridstream import topics
from gridstream.config import Settings
from gridstream.scenario import Scenario, play
from gridstream.stack import LocalStack
from tests.stack.scenarios_support import (
    SETTLE_MS,
    add_device,
    add_event,
    add_weather,
    audits,
    commanded,
    job_running,
    now_ms,
    of,
    outputs,
    quiet,
    unique,
    until,
)

pytestmark = pytest.mark.stack

BUDGET = 2
WINDOW_MS = 10_000


@pytest.fixture(scope="module")
def settings(local_stack: LocalStack) -> Iterator[Settings]:
    """The stack's settings with the device-control job running with a budget of 2 a window."""
    with job_running(
        local_stack, commands_per_window=BUDGET, budget_window_ms=WINDOW_MS
    ) as running:
        yield running


def test_a_region_without_weather_is_grid_follow_and_curtail_is_blocked_weather_unknown(
    settings: Settings,
) -> None:
    """Rule 2 fail-open: with no weather ever observed in the region, the CURTAIL start is
    BLOCKED WEATHER_UNKNOWN and no command goes out."""
    region, program, device = unique("region"), unique("program"), unique("thermostat")
    setup = add_device(Scenario(), device, region, program).sleep(SETTLE_MS)
    play(settings, add_event(setup, region, program, "CURTAIL", curtailment_pct=20.0), quiet)

    found = until(
        settings, [device], lambda f: bool(of(f, topics.AUDIT, device)), "audit of the device"
    )

    (blocked,) = of(found, topics.AUDIT, device)
    assert (blocked["outcome"], blocked["action"]) == ("BLOCKED", "CURTAIL")
    assert blocked["reason_codes"] == ["WEATHER_UNKNOWN"]
    assert of(found, topics.COMMANDS, device) == []


def test_weather_older_than_its_max_age_blocks_curtail_until_a_current_observation_arrives(
    settings: Settings,
) -> None:
    """Rule 2 fail-open: weather observed 40 min ago (max age 30 min) blocks the CURTAIL start
    WEATHER_UNKNOWN; after a current observation the next event's CURTAIL is emitted."""
    region, program, device = unique("region"), unique("program"), unique("thermostat")
    setup = add_weather(Scenario(), region, ts_ms="now-40m")
    setup = add_device(setup, device, region, program).sleep(SETTLE_MS)
    play(settings, add_event(setup, region, program, "CURTAIL", curtailment_pct=20.0), quiet)
    found = until(
        settings, [device], lambda f: bool(of(f, topics.AUDIT, device)), "audit of the device"
    )
    (blocked,) = of(found, topics.AUDIT, device)
    assert (blocked["outcome"], blocked["reason_codes"]) == ("BLOCKED", ["WEATHER_UNKNOWN"])
    assert of(found, topics.COMMANDS, device) == []

    current = add_weather(Scenario(), region).telemetry_iot(device_id=device).sleep(SETTLE_MS)
    play(settings, add_event(current, region, program, "CURTAIL", curtailment_pct=20.0), quiet)
    found = until(
        settings,
        [device],
        lambda f: commanded(f, device),
        "CURTAIL and its audit once the weather is current",
    )

    (command,) = of(found, topics.COMMANDS, device)
    assert command["action"] == "CURTAIL"
    # The second event waits behind the first (DEFERRED); the first's blocked start is taken
    # once the current weather lets it.
    found = until(  # the DEFERRED audit may be committed after the command
        settings, [device], lambda f: bool(audits(f, device, "DEFERRED")), "the DEFERRED audit"
    )
    outcomes = sorted(a["outcome"] for a in of(found, topics.AUDIT, device))
    assert outcomes == ["BLOCKED", "DEFERRED", "EMITTED"]


def test_a_deferred_curtail_is_withdrawn_when_its_device_turns_life_safety_while_waiting(
    settings: Settings,
) -> None:
    """Rules 1 and 8: 3 devices, budget 2: the one whose CURTAIL waits is re-registered as
    LIFE_SAFETY; its waiting CURTAIL is BLOCKED (LIFE_SAFETY_EXCLUSION) and never sent, even
    once the next window opens; it gets only the harmless RESTORE."""
    region, program = unique("region"), unique("program")
    devices = [unique(f"thermostat-{i}") for i in range(3)]
    setup = add_weather(Scenario(), region)
    for device in devices:
        setup = add_device(setup, device, region, program)
    play(settings, add_event(setup.sleep(SETTLE_MS), region, program, "CURTAIL"), quiet)
    found = until(
        settings,
        devices,
        lambda f: any(audits(f, d, "DEFERRED") for d in devices),
        "a DEFERRED audit",
    )
    (waiting,) = [d for d in devices if audits(found, d, "DEFERRED")]

    hospital = Scenario().registry(
        device_id=waiting, region_id=region, programs=[program], priority_level="LIFE_SAFETY"
    )
    play(settings, hospital.sleep(SETTLE_MS), quiet)
    found = until(
        settings,
        [waiting],
        lambda f: bool(of(f, topics.COMMANDS, waiting)),
        "the RESTORE of the re-registered device",
    )
    ticker, ticks = unique("ticker"), Scenario()  # real-time readings: the next windows open
    for _ in range(5):
        ticks = ticks.sleep(WINDOW_MS // 2).telemetry_iot(device_id=ticker)
    play(settings, ticks, quiet)
    found = outputs(settings, {waiting})
    assert [c["action"] for c in of(found, topics.COMMANDS, waiting)] == ["RESTORE"]
    (blocked,) = audits(found, waiting, "BLOCKED")
    assert (blocked["action"], blocked["reason_codes"]) == ("CURTAIL", ["LIFE_SAFETY_EXCLUSION"])


def test_commands_over_the_region_budget_are_deferred_then_released_higher_priority_first(
    settings: Settings,
) -> None:
    """Rule 8: 4 devices of a priority-5 event and then 2 of a priority-1 event in one region,
    budget 2 a window: 2 go out at once and the other 2 are DEFERRED (RATE_LIMITED); the
    priority-1 pair, announced within the same window, goes out before the waiting priority-5
    pair; none is dropped, no window exceeds the budget.

    The events carry absolute times, announced early in one window (an event that started
    before it was announced begins at its announcement): which window a request falls in is
    decided by event time, not by how long the first event took to come through."""
    region, low_program, high_program = unique("region"), unique("program"), unique("program")
    low = [unique(f"thermostat-low{i}") for i in range(4)]
    high = [unique(f"thermostat-high{i}") for i in range(2)]
    setup = add_weather(Scenario(), region)
    for device in low:
        setup = add_device(setup, device, region, low_program)
    for device in high:
        setup = add_device(setup, device, region, high_program)
    play(settings, setup.sleep(SETTLE_MS), quiet)
    while not 500 <= now_ms() % WINDOW_MS < 1_500:  # early in a window
        time.sleep(0.1)
    announced = now_ms()

    def at(program: str, priority: int, issued: int) -> Scenario:
        times = {"issued_ts_ms": issued, "start_ts_ms": issued - 10_000}
        return add_event(Scenario(), region, program, "CURTAIL", priority=priority, **times)

    # The low-priority event first, alone: DR events are keyed by event id, so two played
    # together may be read from two partitions in either order.
    play(settings, at(low_program, 5, announced), quiet)
    until(
        settings,
        low,
        lambda f: (
            len(f[topics.COMMANDS]) >= BUDGET
            and sum(len(audits(f, d, "DEFERRED")) for d in low) >= len(low) - BUDGET
        ),
        f"{BUDGET} commands and {len(low) - BUDGET} DEFERRED audits of the low-priority event",
    )
    play(settings, at(high_program, 1, announced + 2_000), quiet)
    devices = [*low, *high]
    # Readings of another device, in real time, carry the watermark past the next windows.
    ticker, ticks = unique("ticker"), Scenario()
    for _ in range(4):
        ticks = ticks.sleep(WINDOW_MS // 2).telemetry_iot(device_id=ticker)
    play(settings, ticks, quiet)
    found = until(
        settings,
        devices,
        lambda f: (
            len(f[topics.COMMANDS]) >= len(devices)
            and sum(len(audits(f, d, "EMITTED")) for d in devices) >= len(devices)
        ),
        f"{len(devices)} commands and EMITTED audits",
    )

    issued = {c["device_id"]: c["issued_ts_ms"] for c in found[topics.COMMANDS]}
    assert sorted(issued) == sorted(devices)
    first = set(sorted(low, key=issued.__getitem__)[:BUDGET])
    waited_low = set(low) - first
    for device in devices:
        outcomes = [a["outcome"] for a in of(found, topics.AUDIT, device)]
        if device in first:
            assert outcomes == ["EMITTED"]
        elif device in waited_low:
            assert outcomes == ["DEFERRED", "EMITTED"]
        else:  # the pair of priority 1 waits only if its window was already spent
            assert outcomes in (["EMITTED"], ["DEFERRED", "EMITTED"])
    for device in set(devices) - first:
        for deferred in audits(found, device, "DEFERRED"):
            assert (deferred["action"], deferred["reason_codes"]) == ("CURTAIL", ["RATE_LIMITED"])
    per_window = Counter(ts // WINDOW_MS for ts in issued.values())
    assert max(per_window.values()) <= BUDGET
    assert max(issued[d] for d in high) <= min(issued[d] for d in waited_low)
    assert max(issued[d] for d in first) <= min(issued[d] for d in high)
