"""The region stage: who an event reaches, who joins late, who is released, when DR is suspended."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from functions.device import COOLING_CLASSES
from functions.region import (
    EventForRegion,
    RegionEvent,
    RosterEntry,
    WeatherInput,
    activations,
    joins,
    on_weather,
    releases,
)
from functions.wetbulb import RegionWeather, WetBulbPolicy
from schemas.models import Action, AlertKind, Cause, DeviceClass
from tests.vocabulary import MINUTE_MS

pytestmark = pytest.mark.unit

T0 = 1_790_000_000_000
REGION = "north"
CAUSE = Cause(source_topic="test", event_id="e")
PROGRAMS = ("p1", "p2", "p3")
WBGT = WetBulbPolicy(use_wbgt=True)  # the observed value is the compared value: exact thresholds


def event(
    program: str = "p1", start: int = T0, end: int = T0 + 60 * MINUTE_MS, cancelled: bool = False
) -> RegionEvent:
    return RegionEvent(
        f"ev-{program}-{start}-{end}", program, Action.CURTAIL, start, end, 1, cancelled, "c", CAUSE
    )


def weather(ts: int, value_c: float) -> WeatherInput:
    return WeatherInput(REGION, ts, 30.0, 50.0, value_c, f"w{ts}", CAUSE)


rosters = st.dictionaries(
    st.from_regex(r"dev-[0-9]{1,3}", fullmatch=True),
    st.builds(
        RosterEntry,
        device_class=st.sampled_from(DeviceClass),
        programs=st.lists(st.sampled_from(PROGRAMS), unique=True, max_size=3).map(tuple),
    ),
    max_size=12,
).map(lambda d: sorted(d.items()))


@given(rosters, st.sampled_from(PROGRAMS), st.booleans())
def test_an_event_reaches_exactly_the_roster_devices_enrolled_in_its_program(
    roster: list[tuple[str, RosterEntry]], program: str, cancelled: bool
) -> None:
    """Property: one activation per enrolled device, none for the others, carrying the event."""
    ev = event(program, cancelled=cancelled)
    acts = list(activations(EventForRegion(REGION, T0 - MINUTE_MS, ev), roster))
    assert [a.device_id for a in acts] == [d for d, e in roster if program in e.programs]
    for a in acts:
        assert (a.region_id, a.event_id, a.action) == (REGION, ev.event_id, ev.action)
        assert (a.start_ts_ms, a.end_ts_ms, a.cancelled) == (
            ev.start_ts_ms,
            ev.end_ts_ms,
            cancelled,
        )
        assert a.ts_ms == T0 - MINUTE_MS


def test_a_cancelled_event_sends_a_cancellation_to_every_enrolled_device() -> None:
    """Cancelling reaches the same devices as the event did, each marked cancelled."""
    roster = [
        ("a", RosterEntry(DeviceClass.THERMOSTAT, ("p1",))),
        ("b", RosterEntry(DeviceClass.EV_CHARGER, ("p2",))),
        ("c", RosterEntry(DeviceClass.POOL_PUMP, ("p1", "p2"))),
    ]
    acts = list(activations(EventForRegion(REGION, T0, event("p1", cancelled=True)), roster))
    assert [(a.device_id, a.cancelled) for a in acts] == [("a", True), ("c", True)]


events = st.builds(
    event,
    program=st.sampled_from(PROGRAMS),
    start=st.integers(T0 - 120 * MINUTE_MS, T0 + 60 * MINUTE_MS),
    end=st.integers(T0 - 60 * MINUTE_MS, T0 + 120 * MINUTE_MS),
    cancelled=st.booleans(),
)


@given(
    st.lists(st.sampled_from(PROGRAMS), unique=True, max_size=3).map(tuple),
    st.lists(events, max_size=8),
)
def test_a_late_device_joins_only_live_events_of_its_programs(
    programs: tuple[str, ...], evs: list[RegionEvent]
) -> None:
    """Property: a device registering at T0 joins exactly the uncancelled, not-over events."""
    entry = RosterEntry(DeviceClass.THERMOSTAT, programs)
    joined = list(joins("late", REGION, entry, evs, T0))
    expected = [
        e.event_id for e in evs if e.program_id in programs and not e.cancelled and e.end_ts_ms > T0
    ]
    assert [a.event_id for a in joined] == expected
    assert all(a.device_id == "late" and a.ts_ms == T0 and not a.cancelled for a in joined)


def test_an_event_ending_now_is_over_for_a_late_device() -> None:
    """An event whose end is the registration time is not joined."""
    entry = RosterEntry(DeviceClass.THERMOSTAT, ("p1",))
    assert list(joins("late", REGION, entry, [event(end=T0)], T0)) == []
    assert len(list(joins("late", REGION, entry, [event(end=T0 + 1)], T0))) == 1


@given(rosters)
def test_a_suspension_releases_cooling_loads_only(roster: list[tuple[str, RosterEntry]]) -> None:
    """Property: every cooling device of the roster is released, no other device is."""
    released = [r.device_id for r in releases(roster, weather(T0, 29.0))]
    assert released == [d for d, e in roster if e.device_class in COOLING_CLASSES]


def test_suspend_and_resume_alert_once_each() -> None:
    """One WET_BULB_SUSPEND at the threshold, one WET_BULB_RESUME after the hold, none between."""
    state: RegionWeather | None = None
    script = [
        (0, 20.0, []),
        (1, 28.0, [AlertKind.WET_BULB_SUSPEND]),
        (2, 30.0, []),
        (3, 26.0, []),  # below the band: the hold starts
        (20, 27.5, []),  # in the band: the hold restarts
        (21, 26.0, []),
        (50, 26.5, []),  # 29 min below: not yet
        (51, 26.0, [AlertKind.WET_BULB_RESUME]),
        (52, 25.0, []),
    ]
    for minute, value, expected in script:
        result = on_weather(state, weather(T0 + minute * MINUTE_MS, value), WBGT)
        assert [a.kind for a in result.alerts] == expected, minute
        assert result.suspended_now == (expected == [AlertKind.WET_BULB_SUSPEND])
        assert all(a.region_id == REGION and a.device_id is None for a in result.alerts)
        state = result.weather


@settings(max_examples=150)
@given(st.lists(st.tuples(st.integers(-5, 20), st.floats(20.0, 31.0)), max_size=40))
def test_weather_alerts_only_on_a_change_of_mode_and_alternate(
    script: list[tuple[int, float]],
) -> None:
    """Property: an alert exactly when suspension flips; kinds alternate, starting with SUSPEND."""
    state: RegionWeather | None = None
    kinds: list[AlertKind] = []
    ts = T0
    for minutes, value in script:
        ts += minutes * MINUTE_MS
        result = on_weather(state, weather(ts, value), WBGT)
        was = state is not None and state.suspended
        flipped = result.weather.suspended != was
        assert len(result.alerts) == int(flipped)
        assert result.suspended_now == (flipped and result.weather.suspended)
        kinds += [a.kind for a in result.alerts]
        state = result.weather
    expected = [AlertKind.WET_BULB_SUSPEND, AlertKind.WET_BULB_RESUME] * len(kinds)
    assert kinds == expected[: len(kinds)]
