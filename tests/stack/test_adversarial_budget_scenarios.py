"""Adversarial rate-limit scenario (DESIGN.md rule 8), with a job of its own whose region budget
is 5 load-reducing commands a window: priority must hold before the budget is spent, not only
among the commands left waiting.

Budget windows run on event time; a ticker device reports every second, so event time (and
the watermark that opens each window) keeps up with the wall clock.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import pytest

from gridstream import config, topics
from gridstream.config import Settings
from gridstream.scenario import Scenario, play
from gridstream.stack import LocalStack
from tests.stack.adversarial_support import (
    HOUR_MS,
    IOT,
    LOAD_REDUCING,
    SECOND_MS,
    mirrored,
    reporting,
    supported,
)
from tests.stack.scenarios_support import (
    SETTLE_MS,
    Records,
    add_device,
    add_event,
    add_weather,
    job_running,
    now_ms,
    quiet,
    unique,
    until,
)

pytestmark = pytest.mark.stack

BUDGET = 5
WINDOW_MS = config.JobSettings().budget_window_ms
DEVICES_PER_EVENT = 10


@pytest.fixture(scope="module")
def settings(local_stack: LocalStack) -> Iterator[Settings]:
    """The stack's settings with the job running with a budget of 5 commands a window."""
    job = supported(max_clock_skew_ms=5_000)
    with job_running(local_stack, commands_per_window=BUDGET, **job) as running:
        yield running


def reducing(found: Records, devices: list[str]) -> dict[str, int]:
    """Each of `devices` that got a load-reducing command: its issue time."""
    return {
        c["device_id"]: c["issued_ts_ms"]
        for c in found[topics.COMMANDS]
        if c["device_id"] in devices and c["action"] in LOAD_REDUCING
    }


def test_priority_one_commands_take_the_budget_before_any_priority_five_one(
    settings: Settings,
) -> None:
    """Rule 8, priority before the budget is spent: 10 devices of a priority-1 event and 10 of
    a priority-5 event, both starting at one instant in one region, budget 5 a window: every
    priority-1 command goes out in a window no later than any priority-5 one, and the first
    window's commands are all priority 1."""
    region, program_1, program_5 = unique("region"), unique("program-p1"), unique("program-p5")
    high = [unique(f"thermostat-p1-{i}") for i in range(DEVICES_PER_EVENT)]
    low = [unique(f"thermostat-p5-{i}") for i in range(DEVICES_PER_EVENT)]
    devices = [*high, *low]
    setup = add_weather(Scenario(), region)
    for device in high:
        setup = add_device(setup, device, region, program_1)
    for device in low:
        setup = add_device(setup, device, region, program_5)
    play(settings, setup.sleep(SETTLE_MS), quiet)
    mirrored(settings, dict.fromkeys(devices, region), again=dict.fromkeys(devices, IOT))

    with reporting(settings, {unique("ticker"): IOT}, every_ms=SECOND_MS):
        start = now_ms() + 10 * SECOND_MS  # both events reach the job before they start
        times = {"start_ts_ms": start, "end_ts_ms": start + HOUR_MS, "curtailment_pct": 20.0}
        # The priority-5 event first: the order the job hears of them must not matter.
        events = add_event(Scenario(), region, program_5, "CURTAIL", priority=5, **times)
        events = add_event(events, region, program_1, "CURTAIL", priority=1, **times)
        play(settings, events, quiet)
        until(
            settings,
            devices,
            lambda f: set(high) <= set(reducing(f, devices)),
            "the CURTAIL of every priority-1 device",
        )
        found = until(
            settings,
            devices,
            lambda f: bool(set(low) & set(reducing(f, devices))),
            "a CURTAIL of a priority-5 device",
        )

    issued = reducing(found, devices)
    window = {device: ts // WINDOW_MS for device, ts in issued.items()}
    per_window = Counter(window.values())
    assert max(per_window.values()) <= BUDGET, f"over the budget: {sorted(per_window.items())}"
    first = min(window.values())
    first_devices = [d for d, w in window.items() if w == first]
    priority = {**dict.fromkeys(high, 1), **dict.fromkeys(low, 5)}
    assert all(priority[d] == 1 for d in first_devices), (
        f"the first window went to priority {sorted(priority[d] for d in first_devices)} while "
        "priority-1 commands waited"
    )
    last_high = max(window[d] for d in high)
    first_low = min(window[d] for d in low if d in window)
    assert last_high <= first_low, (
        f"a priority-5 command went out in window {first_low}, before the last priority-1 "
        f"one (window {last_high})"
    )
