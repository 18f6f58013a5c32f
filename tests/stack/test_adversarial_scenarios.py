"""Adversarial scenarios: inputs in the orders and at the instants an attacker (or a bad day)
would pick, each played through the device-control job on the stack, each asserting a rule of
DESIGN.md ("Safety semantics", "Order and time").

Each test owns its ids (fresh region, program, devices), plays into Kafka and polls the
committed outputs. Where a step needs the job to have seen the previous ones, it waits for a
sign of it: the Redis mirror naming a device's region (the device stage has its registry record
and a reading), an output, or the DUPLICATE audit of a re-sent reading (a fence: everything the
job did with the device's earlier inputs is committed by then); where a record must be late for
the job, the device stage's watermark (Flink's REST API) past its time. Region weather reaches the
device stage by broadcast and leaves no sign, so the set-up sleeps `SETTLE_MS` after it, as the
other scenario modules do. Expectations hold whatever the order of records of different keys.

The job runs with `recommendation_ttl_ms` 20 s and `max_clock_skew_ms` 5 s where this code's
settings have them (`supported`). The last two tests play records stamped in the future: a job
that takes them moves its event time ahead of the wall clock, so they come last.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import pytest

from gridstream import topics
from gridstream.config import Settings
from gridstream.scenario import Scenario, play
from gridstream.stack import LocalStack
from schemas import models
from state import mirror
from tests.stack.adversarial_support import (
    FEEDER,
    HOUR_MS,
    IOT,
    LOAD_REDUCING,
    MINUTE_MS,
    OPEN_FEEDER,
    SECOND_MS,
    Reading,
    actions,
    audit_trail,
    corr_of,
    device_clock_past,
    fence,
    future_raw,
    in_order,
    mirrored,
    recommended,
    reporting,
    sleep_until,
    supported,
    until_suspended,
)
from tests.stack.faults_support import processed, wait_for
from tests.stack.scenarios_support import (
    SETTLE_MS,
    TIMEOUT_S,
    Records,
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

TTL_MS = 20_000  # the recommendation TTL this module's job runs with (the default is 10 min)
MAX_SKEW_MS = 5_000
HOT = {"dry_bulb_temp_c": 35.0, "relative_humidity_pct": 90.0}  # Stull wet-bulb ~33.7 °C
MILD = {"dry_bulb_temp_c": 25.0, "relative_humidity_pct": 40.0}  # ~16.6 °C
LINE_SWITCH = Reading(scada=True, fields={"device_class": "LINE_SWITCH"})
DECIDED = ("EMITTED", "BLOCKED")


@pytest.fixture(scope="module")
def settings(local_stack: LocalStack) -> Iterator[Settings]:
    """The stack's settings with the job running with a 20 s recommendation TTL and a 5 s
    future-skew bound (where this code has those settings)."""
    job = supported(recommendation_ttl_ms=TTL_MS, max_clock_skew_ms=MAX_SKEW_MS)
    with job_running(local_stack, **job) as running:
        yield running


def enroll(
    settings: Settings,
    region: str,
    program: str,
    devices: Sequence[str],
    weather: Mapping[str, Any] | None = None,
) -> None:
    """The region's weather (observed now), then each thermostat's registry record and a
    reading; returns once the device stage has every record and reading."""
    setup = add_weather(Scenario(), region, **(weather or {}))
    for device in devices:
        setup = add_device(setup, device, region, program)
    play(settings, setup.sleep(SETTLE_MS), quiet)
    mirrored(settings, dict.fromkeys(devices, region), again=dict.fromkeys(devices, IOT))


def scada_registry(
    scenario: Scenario, device: str, region: str, program: str, device_class: str
) -> Scenario:
    """A SCADA point's registry record, enrolled in `program`."""
    return scenario.registry(
        device_id=device,
        device_class=device_class,
        region_id=region,
        programs=[program],
        rated_power_kw=8_000.0,
    )


def decided(found: Records, device: str, action: str, outcomes: Sequence[str] = DECIDED) -> bool:
    """The device has an audit of `action` with one of `outcomes`."""
    return any(
        a["action"] == action and a["outcome"] in outcomes for a in of(found, topics.AUDIT, device)
    )


def reasons_of(found: Records, device: str, outcome: str) -> list[list[str]]:
    """The reason codes of each of the device's audits with one outcome."""
    return [list(a["reason_codes"]) for a in audits(found, device, outcome)]


# Order-robust state ---------------------------------------------------------------------------


def test_an_older_registry_record_resent_after_a_life_safety_upgrade_brings_back_no_curtail(
    settings: Settings,
) -> None:
    """The newest registry record wins: a curtailed thermostat upgraded to LIFE_SAFETY gets
    RESTORE, and its STANDARD record 48 h older, re-sent afterwards, brings back no
    load-reducing command, even after more readings."""
    region, program, device = unique("region"), unique("program"), unique("thermostat")
    enroll(settings, region, program, [device])
    play(settings, add_event(Scenario(), region, program, "CURTAIL", curtailment_pct=20.0), quiet)
    until(settings, [device], lambda f: commanded(f, device), "the CURTAIL")

    upgrade = Scenario().registry(
        device_id=device, region_id=region, programs=[program], priority_level="LIFE_SAFETY"
    )
    play(settings, upgrade, quiet)
    until(settings, [device], lambda f: "RESTORE" in actions(f, device), "RESTORE at the upgrade")

    resent = Scenario().registry(
        device_id=device,
        region_id=region,
        programs=[program],
        priority_level="STANDARD",
        updated_ts_ms="now-48h",
    )
    play(settings, resent.sleep(SETTLE_MS), quiet)
    ts = now_ms()
    later = {"ts_ms": ts, "correlation_id": unique("later")}
    readings = Scenario().telemetry_iot(device_id=device, ts_ms=ts - SECOND_MS)
    play(settings, readings.telemetry_iot(device_id=device, **later), quiet)
    found = fence(settings, device, later)

    sent = actions(found, device)
    assert sent[:2] == ["CURTAIL", "RESTORE"], audit_trail(found, device)
    after = [a for a in sent[2:] if a in LOAD_REDUCING]
    assert after == [], (
        f"the STANDARD record 48 h older than the LIFE_SAFETY one won: {after} after the "
        f"RESTORE (commands {sent}, audits {audit_trail(found, device)})"
    )


def test_an_override_read_before_its_event_or_after_it_gives_the_same_commands(
    settings: Settings,
) -> None:
    """An opt-out applies whichever came first, and the order changes nothing: override
    readings stamped inside an event's span, read before the event's record (a backlog
    replayed after a restore delivers them so) or after it, give their devices the same
    commands: CURTAIL as of the event's announcement or the device stage's clock, then the
    opt-out at the override's instant (BLOCKED OPT_OUT). A device without an override is only
    curtailed. (Judged at each device's newest reading, the devices whose overrides came first
    got no CURTAIL: a TaskManager killed under load lost those commands in the replay.)"""
    region, program = unique("region"), unique("program")
    first = [unique(f"thermostat-override-first{i}") for i in range(2)]
    after = [unique(f"thermostat-override-after{i}") for i in range(2)]
    plain = unique("thermostat-plain")
    devices = [*first, *after, plain]
    setup = add_weather(Scenario(), region)
    for device in devices:
        setup = add_device(setup, device, region, program)
    play(settings, setup.sleep(SETTLE_MS), quiet)
    mirrored(settings, dict.fromkeys(devices, region), again=dict.fromkeys(devices, IOT))

    ts = now_ms()

    def overrides(of: list[str]) -> Scenario:
        scenario = Scenario()
        for device, at in ((d, t) for d in of for t in (ts - SECOND_MS, ts)):
            scenario = scenario.telemetry_iot(device_id=device, ts_ms=at, customer_override=True)
        return scenario

    play(settings, overrides(first), quiet)
    wait_for(lambda: processed(settings, first, ts), TIMEOUT_S, "the overrides in the mirror")
    start = ts - MINUTE_MS
    # Late for the job once the device stage's clock has passed its start: decided as of that
    # clock (at most `ts` less the out-of-orderness bound: before the overrides' instants).
    device_clock_past(settings, start)
    event = add_event(
        Scenario(),
        region,
        program,
        "CURTAIL",
        curtailment_pct=20.0,
        start_ts_ms=start,
        issued_ts_ms=ts - 30 * SECOND_MS,
    )
    play(settings, event, quiet)
    play(settings, overrides(after), quiet)
    # Each opt-out is decided at its override's instant, once the device stage's clock has
    # passed it: a reading stamped 10 s after them (twice the out-of-orderness bound) moves it.
    sleep_until(ts + 10 * SECOND_MS)
    play(settings, Scenario().telemetry_iot(device_id=plain), quiet)
    overriding = [*first, *after]
    found = until(
        settings,
        devices,
        lambda f: (
            all(commanded(f, d) for d in devices)
            and all(any("OPT_OUT" in r for r in reasons_of(f, d, "BLOCKED")) for d in overriding)
        ),
        "a CURTAIL for every device of the event and an OPT_OUT for each that overrode",
    )

    for device in overriding:
        assert actions(found, device) == ["CURTAIL"], audit_trail(found, device)
        assert sorted(audit_trail(found, device)) == sorted(audit_trail(found, first[0])), (
            f"{device}'s audits differ from {first[0]}'s, whose overrides were read first"
        )
    assert actions(found, plain) == ["CURTAIL"], audit_trail(found, plain)
    assert not any("OPT_OUT" in r for r in reasons_of(found, plain, "BLOCKED"))


# One decision clock ---------------------------------------------------------------------------


def test_a_late_event_is_judged_on_the_weather_as_it_is_now_not_as_it_was_at_its_issue(
    settings: Settings,
) -> None:
    """One decision clock: with the region's weather observed 35 min ago (max age 30 min) and
    readings at now, an event issued and started 20 min ago but delivered now commands nothing
    in the region (every enrolled device BLOCKED WEATHER_UNKNOWN), and no load-reducing command
    is stamped at or after a GRID_FOLLOW alert of the region."""
    region, program = unique("region"), unique("program")
    devices = [unique(f"thermostat-{i}") for i in range(3)]
    enroll(settings, region, program, devices, weather={"ts_ms": "now-35m"})
    start = now_ms() - 20 * MINUTE_MS
    device_clock_past(settings, start)  # late for the job: no start timer decides it
    late = add_event(
        Scenario(),
        region,
        program,
        "CURTAIL",
        curtailment_pct=20.0,
        start_ts_ms=start,
        issued_ts_ms=start,
    )
    play(settings, late, quiet)
    found = until(
        settings,
        [region, *devices],
        lambda f: all(decided(f, d, "CURTAIL") for d in devices),
        "a decision on the late CURTAIL for every device",
    )

    sent = [c for d in devices for c in of(found, topics.COMMANDS, d)]
    reducing = [c for c in sent if c["action"] in LOAD_REDUCING]
    grid_follow = [
        a["raised_ts_ms"]
        for a in found[topics.ALERTS]
        if a.get("region_id") == region and a["kind"] == "GRID_FOLLOW"
    ]
    if grid_follow:
        assert all(c["issued_ts_ms"] < min(grid_follow) for c in reducing), (
            f"load-reducing commands stamped after the region went Grid-Follow at "
            f"{min(grid_follow)}: {reducing}"
        )
    assert reducing == [], (
        "load-reducing commands in a region whose weather is 35 min old when they go out "
        f"(the event's issue time was taken as the decision time): {reducing}"
    )
    for device in devices:
        assert any("WEATHER_UNKNOWN" in r for r in reasons_of(found, device, "BLOCKED")), (
            f"{device}: {audit_trail(found, device)}"
        )


# Idempotency ----------------------------------------------------------------------------------


def test_a_resent_burst_is_all_duplicates_and_an_older_reading_changes_nothing(
    settings: Settings,
) -> None:
    """Idempotency beyond any window: 12 readings re-sent with their times are 12 DUPLICATE
    audits, a distinct reading older than the newest one is audited DUPLICATE too, nothing is
    commanded, and the mirror keeps the newest original."""
    device = unique("thermostat")
    base = now_ms() - 12 * SECOND_MS
    originals = [
        {
            "ts_ms": base + i * SECOND_MS,
            "power_kw": 1.0 + 0.25 * i,
            "correlation_id": unique(f"r{i}"),
        }
        for i in range(12)
    ]
    older = {"ts_ms": base + 5_500, "power_kw": 9.75, "correlation_id": unique("older")}
    burst = Scenario()
    for fields in [*originals, *originals, older]:
        burst = burst.telemetry_iot(device_id=device, **fields)
    play(settings, burst, quiet)
    newest = originals[-1]
    found = fence(settings, device, newest)

    by_corr = {o["correlation_id"] for o in originals}
    resent = [a for a in of(found, topics.AUDIT, device) if a["correlation_id"] in by_corr]
    outcomes = [a["outcome"] for a in resent]
    assert outcomes == ["DUPLICATE"] * len(originals), (
        f"{outcomes.count('DUPLICATE')} DUPLICATE audits for {len(originals)} re-sent readings "
        f"(audits of them: {outcomes})"
    )
    older_audits = [a["outcome"] for a in corr_of(found, topics.AUDIT, older["correlation_id"])]
    assert older_audits == ["DUPLICATE"], (
        f"a reading older than the newest seen was audited {older_audits}, not DUPLICATE"
    )
    assert of(found, topics.COMMANDS, device) == []

    url = settings.stack.redis_url
    good = mirror.read(url, device)
    for _ in range(10):
        if good is not None and good.ts_ms >= newest["ts_ms"]:
            break
        sleep_until(now_ms() + SECOND_MS)
        good = mirror.read(url, device)
    assert good is not None
    assert (good.ts_ms, good.power_kw) == (newest["ts_ms"], newest["power_kw"])


# Wet-bulb interlock ---------------------------------------------------------------------------


def test_a_curtailed_thermostat_moved_into_a_suspended_region_is_restored(
    settings: Settings,
) -> None:
    """Wet-bulb interlock: a curtailed thermostat re-registered (a newer record) into another
    region under wet-bulb suspension (35 °C at 90 % RH) gets RESTORE and its EMITTED audit."""
    home, hot, program = unique("region"), unique("region-hot"), unique("program")
    device = unique("thermostat")
    play(settings, add_weather(Scenario(), hot, **HOT), quiet)
    enroll(settings, home, program, [device])
    until_suspended(settings, hot, "the WET_BULB_SUSPEND alert of the hot region")
    play(settings, add_event(Scenario(), home, program, "CURTAIL", curtailment_pct=20.0), quiet)
    until(settings, [device], lambda f: commanded(f, device), "the CURTAIL")

    moved = Scenario().registry(device_id=device, region_id=hot, programs=[program])
    play(settings, moved.sleep(SETTLE_MS).telemetry_iot(device_id=device), quiet)
    found = until(
        settings,
        [device],
        lambda f: (
            "RESTORE" in actions(f, device)
            and any(a["action"] == "RESTORE" for a in audits(f, device, "EMITTED"))
        ),
        "RESTORE and its EMITTED audit once the device is in the suspended region",
    )
    assert actions(found, device) == ["CURTAIL", "RESTORE"]


# No event replaces another silently -----------------------------------------------------------


def test_an_event_announced_while_another_holds_the_devices_follows_it_when_it_ends(
    settings: Settings,
) -> None:
    """No event replaces another silently: devices curtailed by event A when event B (same
    program, starting during A, ending later) is announced get RESTORE at A's end and then B's
    SETPOINT_OFFSET (or its BLOCKED audit); every DEFERRED DR_EVENT audit is resolved."""
    region, program = unique("region"), unique("program")
    devices = [unique(f"thermostat-{i}") for i in range(2)]
    enroll(settings, region, program, devices)
    with reporting(settings, dict.fromkeys(devices, IOT)):
        t0 = now_ms()
        a_end = t0 + 30 * SECOND_MS
        event_a = add_event(
            Scenario(), region, program, "CURTAIL", curtailment_pct=20.0,
            start_ts_ms=t0 - 10 * SECOND_MS, end_ts_ms=a_end, issued_ts_ms=t0,
        )  # fmt: skip
        play(settings, event_a, quiet)
        until(
            settings,
            devices,
            lambda f: all(commanded(f, d) for d in devices),
            "the CURTAIL of event A for every device",
        )
        event_b = add_event(
            Scenario(), region, program, "SETPOINT_OFFSET", setpoint_offset_c=2.0,
            start_ts_ms=a_end - 10 * SECOND_MS, end_ts_ms=t0 + HOUR_MS,
        )  # fmt: skip
        play(settings, event_b, quiet)
        if now_ms() >= a_end - 5 * SECOND_MS:
            pytest.fail("event A's CURTAIL came too late to announce event B while A holds")
        found = until(
            settings,
            devices,
            lambda f: all(
                "RESTORE" in actions(f, d) and decided(f, d, "SETPOINT_OFFSET") for d in devices
            ),
            "RESTORE at A's end, then a decision on B's SETPOINT_OFFSET, for every device",
        )

    for device in devices:
        sent = actions(found, device)
        trail = audit_trail(found, device)
        assert sent[:2] == ["CURTAIL", "RESTORE"], (sent, trail)
        blocked = ("BLOCKED", "SETPOINT_OFFSET") in trail
        assert sent[2:] == ([] if blocked else ["SETPOINT_OFFSET"]), (sent, trail)
        ordered = in_order(of(found, topics.AUDIT, device))
        for i, audit in enumerate(ordered):
            if audit["outcome"] == "DEFERRED" and "DR_EVENT" in audit["reason_codes"]:
                assert any(
                    later["action"] == audit["action"] and later["outcome"] in DECIDED
                    for later in ordered[i + 1 :]
                ), f"{device}: DEFERRED {audit['action']} never resolved: {trail}"


def test_two_events_announced_ahead_for_the_same_devices_each_end_in_an_audit(
    settings: Settings,
) -> None:
    """No event disappears silently: event C (CURTAIL, starting in 30 s), then event D
    (SETPOINT_OFFSET, starting in 20 s), both announced ahead for the same devices, each end in
    an EMITTED, BLOCKED or DEFERRED audit for every device."""
    region, program = unique("region"), unique("program")
    devices = [unique(f"thermostat-{i}") for i in range(2)]
    enroll(settings, region, program, devices)
    with reporting(settings, dict.fromkeys(devices, IOT)):
        event_c = add_event(
            Scenario(), region, program, "CURTAIL", curtailment_pct=20.0,
            start_ts_ms="now+30s", end_ts_ms="now+1h",
        )  # fmt: skip
        both = add_event(
            event_c, region, program, "SETPOINT_OFFSET", setpoint_offset_c=2.0,
            start_ts_ms="now+20s", end_ts_ms="now+1h",
        )  # fmt: skip
        play(settings, both, quiet)
        outcomes = (*DECIDED, "DEFERRED")
        found = until(
            settings,
            devices,
            lambda f: all(
                decided(f, d, action, outcomes)
                for d in devices
                for action in ("CURTAIL", "SETPOINT_OFFSET")
            ),
            "EMITTED, BLOCKED or DEFERRED audit of each event (C's CURTAIL, D's SETPOINT_OFFSET) "
            "for every device",
        )
    del found  # the rule is what `until` waited for: each event was decided for each device


def curtailed_then_ended(
    settings: Settings, region: str, program: str, devices: Sequence[str], status: str
) -> tuple[dict[str, Any], Records]:
    """A CURTAIL event that started 10 s ago for `devices`, then its record re-sent with
    `status` (CANCELLED or COMPLETED) once each is curtailed: the event's fields and the
    outputs once each device has its RESTORE."""
    t0 = now_ms()
    event: dict[str, Any] = {
        "event_id": unique("dr"),
        "curtailment_pct": 20.0,
        "start_ts_ms": t0 - 10 * SECOND_MS,
        "end_ts_ms": t0 + HOUR_MS,
        "issued_ts_ms": t0,
    }
    play(settings, add_event(Scenario(), region, program, "CURTAIL", **event), quiet)
    until(
        settings,
        devices,
        lambda f: all(commanded(f, d) for d in devices),
        "CURTAIL for every device",
    )
    ended = {**event, "status": status, "issued_ts_ms": "now"}
    play(settings, add_event(Scenario(), region, program, "CURTAIL", **ended), quiet)
    found = until(
        settings,
        devices,
        lambda f: all("RESTORE" in actions(f, d) for d in devices),
        f"RESTORE for every device once the event is {status}",
    )
    return event, found


def test_a_completed_status_for_an_event_in_progress_ends_it_with_restore(
    settings: Settings,
) -> None:
    """An event's record re-sent with status COMPLETED while it is on ends it: every device it
    curtailed gets RESTORE."""
    region, program = unique("region"), unique("program")
    devices = [unique(f"thermostat-{i}") for i in range(2)]
    enroll(settings, region, program, devices)
    _, found = curtailed_then_ended(settings, region, program, devices, "COMPLETED")
    for device in devices:
        assert actions(found, device) == ["CURTAIL", "RESTORE"]


def test_a_cancelled_event_stays_cancelled_whatever_record_of_it_comes_after(
    settings: Settings,
) -> None:
    """A cancellation is final for its event id. Event X curtails the devices and is
    cancelled (RESTORE); its original record re-sent after that curtails no one again. Event
    Y's cancellation is played before its original record, both ahead of Y's start: no one is
    curtailed when the device stage's clock passes the start. Each device's commands are X's
    CURTAIL and RESTORE, nothing more."""
    region, program = unique("region"), unique("program")
    devices = [unique(f"thermostat-{i}") for i in range(2)]
    enroll(settings, region, program, devices)
    with reporting(settings, dict.fromkeys(devices, IOT)) as newest:
        x, _ = curtailed_then_ended(settings, region, program, devices, "CANCELLED")
        y_start = now_ms() + 15 * SECOND_MS
        y: dict[str, Any] = {
            "event_id": unique("dr-y"),
            "curtailment_pct": 20.0,
            "start_ts_ms": y_start,
            "end_ts_ms": y_start + HOUR_MS,
            "issued_ts_ms": y_start - 20 * SECOND_MS,
        }
        late = add_event(Scenario(), region, program, "CURTAIL", **x)  # X's original, re-sent
        late = add_event(late, region, program, "CURTAIL", **{**y, "status": "CANCELLED"})
        late = add_event(late, region, program, "CURTAIL", **y)  # Y's original, read after
        play(settings, late, quiet)
        device_clock_past(settings, y_start + 5 * SECOND_MS)  # Y's start timer would have fired
        found = {d: fence(settings, d, newest[d]) for d in devices}
    for device in devices:
        assert actions(found[device], device) == ["CURTAIL", "RESTORE"], audit_trail(
            found[device], device
        )


# Unknown is unsafe ----------------------------------------------------------------------------


def test_a_registered_thermostat_that_never_reported_is_stale_and_gets_no_command(
    settings: Settings,
) -> None:
    """A registered device that has never reported is stale: in a CURTAIL event it is BLOCKED
    TELEMETRY_STALE and gets no command, while its reporting neighbour is curtailed."""
    region, program = unique("region"), unique("program")
    silent, neighbour = unique("thermostat-silent"), unique("thermostat")
    registered = Scenario().registry(device_id=silent, region_id=region, programs=[program])
    play(settings, registered, quiet)
    enroll(settings, region, program, [neighbour])
    play(settings, add_event(Scenario(), region, program, "CURTAIL", curtailment_pct=20.0), quiet)
    found = until(
        settings,
        [silent, neighbour],
        lambda f: commanded(f, neighbour) and decided(f, silent, "CURTAIL"),
        "the neighbour's CURTAIL and a decision about the silent device",
    )

    assert actions(found, silent) == [], (
        f"a command for a device never heard from: {audit_trail(found, silent)}"
    )
    assert any("TELEMETRY_STALE" in r for r in reasons_of(found, silent, "BLOCKED")), audit_trail(
        found, silent
    )


def test_a_scada_point_heard_only_through_invalid_readings_gets_no_recommendation(
    settings: Settings,
) -> None:
    """A SCADA reading flagged invalid does not count as hearing from the device: a line switch
    whose readings (every 2 s) are all invalid is BLOCKED TELEMETRY_STALE in a SWITCH_OPEN
    event, with no recommendation, while a feeder reporting good readings gets one."""
    region, program = unique("region"), unique("program")
    flagged, good = unique("line-switch-invalid"), unique("feeder")
    setup = add_weather(Scenario(), region)
    setup = scada_registry(setup, flagged, region, program, "LINE_SWITCH")
    setup = scada_registry(setup, good, region, program, "FEEDER_BREAKER")
    play(settings, setup.sleep(SETTLE_MS), quiet)
    invalid = Reading(
        scada=True, fields={"device_class": "LINE_SWITCH", "quality": {"invalid": True}}
    )
    with reporting(settings, {flagged: invalid, good: FEEDER}):
        mirrored(settings, {good: region})
        play(settings, add_event(Scenario(), region, program, "SWITCH_OPEN"), quiet)
        found = until(
            settings,
            [flagged, good],
            lambda f: bool(of(f, topics.RECOMMENDATIONS, good) and of(f, topics.AUDIT, flagged)),
            "the good feeder's recommendation and a decision about the invalid line switch",
        )

    assert of(found, topics.RECOMMENDATIONS, flagged) == [], audit_trail(found, flagged)
    assert actions(found, flagged) == []
    assert any("TELEMETRY_STALE" in r for r in reasons_of(found, flagged, "BLOCKED")), audit_trail(
        found, flagged
    )


# Human in the loop ----------------------------------------------------------------------------


def test_an_approval_stamped_at_the_expiry_instant_is_void(settings: Settings) -> None:
    """Boundaries are closed on the safe side: an APPROVE stamped exactly at the
    recommendation's expires_ts_ms (played once the wall clock has reached it) opens nothing:
    an EXPIRED audit, no APPROVED audit, no SWITCH_OPEN."""
    region, program, feeder = unique("region"), unique("program"), unique("feeder")
    setup = add_weather(Scenario(), region)
    setup = scada_registry(setup, feeder, region, program, "FEEDER_BREAKER")
    play(settings, setup.sleep(SETTLE_MS), quiet)
    with reporting(settings, {feeder: FEEDER}):
        mirrored(settings, {feeder: region})
        play(settings, add_event(Scenario(), region, program, "SWITCH_OPEN"), quiet)
        recommendation = recommended(settings, feeder)
        expires = recommendation["expires_ts_ms"]
        ttl_ms = expires - recommendation["created_ts_ms"]
        known = "has" if supported(recommendation_ttl_ms=TTL_MS) else "lacks"
        assert ttl_ms <= TTL_MS, (
            f"the recommendation expires {ttl_ms // 1000} s after it was made: the job did not "
            f"take recommendation_ttl_ms={TTL_MS} (config.JobSettings {known} it), so this "
            "test cannot reach the expiry instant"
        )
        sleep_until(expires)
        corr = unique("approval-at-expiry")
        approval = Scenario().approval(
            recommendation_id=recommendation["recommendation_id"],
            device_id=feeder,
            correlation_id=corr,
            decision="APPROVE",
            ts_ms=expires,
        )
        play(settings, approval, quiet)
        found = until(
            settings,
            [feeder],
            lambda f: bool(corr_of(f, topics.AUDIT, corr)),
            "the decision on the APPROVE stamped at the expiry instant",
        )

    trail = audit_trail(found, feeder)
    assert actions(found, feeder) == [], f"an approval at expires_ts_ms switched: {trail}"
    assert audits(found, feeder, "APPROVED") == [], trail
    assert audits(found, feeder, "EXPIRED"), trail


def test_a_breaker_opened_under_approval_is_not_reclosed_automatically_when_its_event_ends(
    settings: Settings,
) -> None:
    """Re-closing a SCADA switch at an event's end needs an operator: a feeder breaker opened
    under a timely APPROVE gets no RESTORE or SWITCH_CLOSE command at the end, but a
    recommendation to SWITCH_CLOSE."""
    region, program, feeder = unique("region"), unique("program"), unique("feeder")
    setup = add_weather(Scenario(), region)
    setup = scada_registry(setup, feeder, region, program, "FEEDER_BREAKER")
    play(settings, setup.sleep(SETTLE_MS), quiet)
    reports = {feeder: FEEDER}
    with reporting(settings, reports):
        mirrored(settings, {feeder: region})
        t0 = now_ms()
        event = add_event(
            Scenario(), region, program, "SWITCH_OPEN",
            start_ts_ms=t0 - 10 * SECOND_MS, end_ts_ms=t0 + 35 * SECOND_MS, issued_ts_ms=t0,
        )  # fmt: skip
        play(settings, event, quiet)
        recommendation = recommended(settings, feeder)
        approval = Scenario().approval(
            recommendation_id=recommendation["recommendation_id"],
            device_id=feeder,
            correlation_id=unique("approval"),
            decision="APPROVE",
        )
        play(settings, approval, quiet)
        found = until(
            settings,
            [feeder],
            lambda f: bool(actions(f, feeder) or audits(f, feeder, "BLOCKED")),
            "the SWITCH_OPEN command after the approval",
        )
        assert actions(found, feeder) == ["SWITCH_OPEN"], audit_trail(found, feeder)
        reports[feeder] = OPEN_FEEDER  # the breaker now reports itself open, carrying nothing

        found = until(
            settings,
            [feeder],
            lambda f: (
                len(actions(f, feeder)) > 1
                or any(r["action"] != "SWITCH_OPEN" for r in of(f, topics.RECOMMENDATIONS, feeder))
            ),
            "a command or a recommendation at the event's end",
        )

    assert actions(found, feeder) == ["SWITCH_OPEN"], (
        f"the opened breaker was switched back without an operator: {actions(found, feeder)}"
    )
    closes = [r for r in of(found, topics.RECOMMENDATIONS, feeder) if r["action"] == "SWITCH_CLOSE"]
    assert closes, of(found, topics.RECOMMENDATIONS, feeder)


# Bounded clock skew (last: a job that takes these records moves its clock ahead) --------------


def test_weather_stamped_in_the_future_is_dead_lettered_and_masks_no_later_observation(
    settings: Settings,
) -> None:
    """Bounded clock skew: weather stamped 30 s and 10 min ahead goes to gridstream.dlq, and a
    real hot observation read after them still suspends DR (WET_BULB_SUSPEND alert, the CURTAIL
    start BLOCKED WET_BULB_SUSPEND)."""
    region, program, device = unique("region"), unique("program"), unique("thermostat")
    enroll(settings, region, program, [device], weather=MILD)
    near, far = unique("weather-30s"), unique("weather-10m")
    raw = future_raw(
        settings, models.WeatherObservation, region_id=region, correlation_id=far,
        ts_ms=now_ms() + 10 * MINUTE_MS, wbgt_temp_c=None, **MILD,
    )  # fmt: skip
    # One key, one partition: the 30 s one is read before the 10 min one.
    ahead = Scenario().weather(region_id=region, ts_ms="now+30s", correlation_id=near, **MILD)
    play(settings, ahead.raw(topics.WEATHER, raw, key=region, correlation_id=far), quiet)
    found = until(
        settings,
        [region],
        lambda f: bool(corr_of(f, topics.DLQ, far)),
        "the dead letter of the weather stamped 10 min ahead",
    )
    assert corr_of(found, topics.DLQ, near), "weather stamped 30 s ahead was not dead-lettered"

    play(settings, add_weather(Scenario(), region, **HOT), quiet)
    until_suspended(
        settings,
        region,
        "WET_BULB_SUSPEND from the hot observation read after the future-stamped ones",
    )
    play(settings, add_event(Scenario(), region, program, "CURTAIL", curtailment_pct=20.0), quiet)
    found = until(
        settings,
        [device],
        lambda f: decided(f, device, "CURTAIL"),
        "a decision on the CURTAIL in the suspended region",
    )
    assert actions(found, device) == []
    assert any("WET_BULB_SUSPEND" in r for r in reasons_of(found, device, "BLOCKED"))


def test_readings_stamped_in_the_future_are_dead_lettered_and_stall_no_scada_point(
    settings: Settings,
) -> None:
    """Bounded clock skew: IoT readings stamped 10 min and 30 s ahead go to gridstream.dlq and
    move no other device's clock: SCADA points reporting every 2 s raise no TELEMETRY_LOSS."""
    region, program = unique("region"), unique("program")
    points = {unique("feeder"): FEEDER, unique("line-switch"): LINE_SWITCH}
    setup = Scenario()
    for point, reading in points.items():
        device_class = reading.fields.get("device_class", "FEEDER_BREAKER")
        setup = scada_registry(setup, point, region, program, device_class)
    play(settings, setup.sleep(SETTLE_MS), quiet)
    far, near = unique("thermostat-10m"), unique("thermostat-30s")
    ids = [*points, far, near]
    with reporting(settings, points) as last:
        mirrored(settings, dict.fromkeys(points, region))
        raw = future_raw(
            settings, models.IotTelemetry, device_id=far, correlation_id=far,
            ts_ms=now_ms() + 10 * MINUTE_MS,
        )  # fmt: skip
        ahead = Scenario().raw(topics.IOT_TELEMETRY, raw, key=far, correlation_id=far)
        ahead = ahead.telemetry_iot(device_id=near, ts_ms="now+30s", correlation_id=near)
        play(settings, ahead, quiet)
        until(
            settings,
            ids,
            lambda f: bool(
                (corr_of(f, topics.DLQ, far) and corr_of(f, topics.DLQ, near))
                or any(a["kind"] == "TELEMETRY_LOSS" for a in f[topics.ALERTS])
            ),
            "dead letters of both future-stamped readings (or a TELEMETRY_LOSS of a point)",
        )
        point, reading = next(iter(points.items()))
        fence(settings, point, dict(last[point]), reading)
    found = outputs(settings, set(ids))

    assert corr_of(found, topics.DLQ, far), "a reading stamped 10 min ahead was not dead-lettered"
    losses = [
        a
        for a in found[topics.ALERTS]
        if a["kind"] == "TELEMETRY_LOSS" and a.get("device_id") in points
    ]
    assert losses == [], (
        f"points reporting every 2 s were declared silent after future-stamped readings: {losses}"
    )
    assert corr_of(found, topics.DLQ, near), "a reading stamped 30 s ahead was not dead-lettered"
