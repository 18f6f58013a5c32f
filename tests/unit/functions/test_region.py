"""The region stage: who an event reaches, who joins late, who is released, when DR is suspended,
when the region falls into Grid-Follow for want of fresh weather."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from functions.device import COOLING_CLASSES, Deregistration, RegistryUpdate
from functions.region import (
    EventForRegion,
    RegionEvent,
    RosterEntry,
    RosterLeave,
    WeatherInput,
    activations,
    joins,
    on_weather,
    on_weather_timer,
    releases,
    roster_changes,
    weather_timers,
)
from functions.wetbulb import RegionWeather, WetBulbPolicy
from schemas.models import (
    ID_CHARS,
    Action,
    Alert,
    AlertKind,
    Cause,
    DeviceClass,
    PriorityLevel,
    Severity,
)
from state.device import DeviceInfo
from tests.vocabulary import MINUTE_MS, examples

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
    obs = weather(T0, 29.0)
    released = [r.device_id for r in releases(roster, obs.correlation_id, obs.cause, T0)]
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
        ts = T0 + minute * MINUTE_MS
        result = on_weather(state, weather(ts, value), ts, WBGT)
        assert [a.kind for a in result.alerts] == expected, minute
        assert result.suspended_now == (expected == [AlertKind.WET_BULB_SUSPEND])
        assert all(a.region_id == REGION and a.device_id is None for a in result.alerts)
        state = result.weather


@settings(max_examples=examples(150))
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
        result = on_weather(state, weather(ts, value), ts, WBGT)
        was = state is not None and state.suspended
        flipped = result.weather.suspended != was
        assert len(result.alerts) == int(flipped)
        assert result.suspended_now == (flipped and result.weather.suspended)
        kinds += [a.kind for a in result.alerts]
        state = result.weather
    expected = [AlertKind.WET_BULB_SUSPEND, AlertKind.WET_BULB_RESUME] * len(kinds)
    assert kinds == expected[: len(kinds)]


# Grid-Follow when the weather ages out ----------------------------------------------------------

MAX_AGE = 30 * MINUTE_MS  # the default max age
GRID = (AlertKind.GRID_FOLLOW, AlertKind.GRID_FOLLOW_CLEARED)


def fresh(ts: int) -> RegionWeather:
    """The weather memory after one ordinary observation at `ts`."""
    return on_weather(None, weather(ts, 20.0), ts, WBGT).weather


def test_weather_ages_out_one_millisecond_after_its_max_age() -> None:
    """The timer wanted is the first instant the weather is older than its max age."""
    assert weather_timers(fresh(T0), WBGT) == {T0 + MAX_AGE + 1}
    assert weather_timers(None, WBGT) == frozenset()


def test_the_age_out_timer_raises_one_grid_follow_for_the_region() -> None:
    """At the deadline: one CRITICAL GRID_FOLLOW naming the region; not before, not again."""
    state = fresh(T0)
    assert on_weather_timer(state, REGION, T0 + MAX_AGE, WBGT).alerts == ()
    step = on_weather_timer(state, REGION, T0 + MAX_AGE + 1, WBGT)
    (alert,) = step.alerts
    assert (alert.kind, alert.severity) == (AlertKind.GRID_FOLLOW, Severity.CRITICAL)
    assert (alert.region_id, alert.device_id, alert.raised_ts_ms) == (
        REGION,
        None,
        T0 + MAX_AGE + 1,
    )
    assert step.weather.aged_out
    assert weather_timers(step.weather, WBGT) == frozenset()
    assert on_weather_timer(step.weather, REGION, T0 + 5 * MAX_AGE, WBGT).alerts == ()


def test_a_timer_firing_after_newer_weather_raises_nothing() -> None:
    """Newer weather moved the deadline: the old timer (or any other) finds nothing due."""
    state = on_weather(fresh(T0), weather(T0 + MINUTE_MS, 20.0), T0 + MINUTE_MS, WBGT).weather
    step = on_weather_timer(state, REGION, T0 + MAX_AGE + 1, WBGT)
    assert step.alerts == ()
    assert step.weather == state
    assert weather_timers(state, WBGT) == {T0 + MINUTE_MS + MAX_AGE + 1}


def test_newer_weather_after_an_age_out_clears_grid_follow_and_rearms() -> None:
    """The first newer observation raises GRID_FOLLOW_CLEARED (then any wet-bulb alert)."""
    aged = on_weather_timer(fresh(T0), REGION, T0 + MAX_AGE + 1, WBGT).weather
    back = T0 + 2 * MAX_AGE
    step = on_weather(aged, weather(back, 29.0), back, WBGT)
    assert [a.kind for a in step.alerts] == [
        AlertKind.GRID_FOLLOW_CLEARED,
        AlertKind.WET_BULB_SUSPEND,
    ]
    assert step.alerts[0].correlation_id == f"w{back}"
    assert step.suspended_now
    assert not step.weather.aged_out
    assert weather_timers(step.weather, WBGT) == {back + MAX_AGE + 1}


def test_an_older_observation_leaves_an_age_out_in_place() -> None:
    """Weather older than the newest one neither clears Grid-Follow nor alerts."""
    aged = on_weather_timer(fresh(T0), REGION, T0 + MAX_AGE + 1, WBGT).weather
    step = on_weather(aged, weather(T0 - MINUTE_MS, 20.0), T0 + 2 * MAX_AGE, WBGT)
    assert step.alerts == ()
    assert step.weather == aged


def test_weather_already_too_old_at_now_raises_grid_follow_at_once() -> None:
    """A first observation older than the max age at `now` raises GRID_FOLLOW, wants no timer."""
    now = T0 + MAX_AGE + 1
    step = on_weather(None, weather(T0, 20.0), now, WBGT)
    assert [(a.kind, a.raised_ts_ms) for a in step.alerts] == [(AlertKind.GRID_FOLLOW, now)]
    assert weather_timers(step.weather, WBGT) == frozenset()


SHORT = WetBulbPolicy(max_age_ms=10 * MINUTE_MS, use_wbgt=True)
ops = st.one_of(
    st.tuples(st.just("observe"), st.integers(0, 20 * MINUTE_MS)),  # at the watermark or ahead
    st.tuples(st.just("advance"), st.integers(0, 25).map(lambda m: m * MINUTE_MS)),
    st.tuples(st.just("advance"), st.integers(1, 25 * MINUTE_MS)),
    st.tuples(st.just("to_deadline"), st.sampled_from([-1, 0, 1])),  # the boundary, exactly
    st.tuples(st.just("dr_end"), st.integers(0, 40 * MINUTE_MS)),  # another timer of the key
)


class _Region:
    """The pure functions driven as RegionStage drives them, with a fake event-time timer set;
    `others` are the key's DR-end timers, which run the weather check too when they fire."""

    def __init__(self) -> None:
        self.state: RegionWeather | None = None
        self.timers: set[int] = set()
        self.others: set[int] = set()
        self.watermark = T0

    def _move(self, new: RegionWeather) -> None:
        self.timers -= weather_timers(self.state, SHORT)
        self.timers |= weather_timers(new, SHORT)
        self.state = new

    def observe(self, ts: int) -> list[Alert]:
        step = on_weather(self.state, weather(ts, 20.0), ts, SHORT)
        self._move(step.weather)
        return list(step.alerts)

    def advance(self, to: int) -> list[Alert]:
        self.watermark = max(self.watermark, to)
        out: list[Alert] = []
        while due := sorted(t for t in self.timers | self.others if t <= self.watermark):
            self.timers.discard(due[0])
            self.others.discard(due[0])
            if self.state is None:
                continue
            step = on_weather_timer(self.state, REGION, due[0], SHORT)
            self.state = step.weather
            self.timers |= weather_timers(step.weather, SHORT)
            out += step.alerts
        return out


@settings(max_examples=examples(300))
@given(st.lists(ops, max_size=40))
def test_one_grid_follow_per_age_out_episode_and_none_while_fresh(
    script: list[tuple[str, int]],
) -> None:
    """Property: over observations (never late) and watermark advances, GRID_FOLLOW is raised
    exactly when the newest weather goes from fresh to older than its max age, and
    GRID_FOLLOW_CLEARED exactly when newer weather ends that; one timer at most, never stray."""
    region = _Region()
    newest: int | None = None
    aged = False
    episodes = 0
    for op, arg in script:
        if op == "observe":
            ts = region.watermark + arg
            alerts = region.observe(ts)
            newest = ts if newest is None else max(newest, ts)
        elif op == "dr_end":
            region.others.add(region.watermark + arg)
            alerts = []
        elif op == "advance":
            alerts = region.advance(region.watermark + arg)
        else:
            alerts = [] if newest is None else region.advance(newest + SHORT.max_age_ms + arg)
        now_aged = newest is not None and region.watermark - newest > SHORT.max_age_ms
        kinds = [a.kind for a in alerts if a.kind in GRID]
        expected = (
            [AlertKind.GRID_FOLLOW]
            if now_aged and not aged
            else [AlertKind.GRID_FOLLOW_CLEARED]
            if aged and not now_aged
            else []
        )
        assert kinds == expected
        for alert in alerts:
            if alert.kind is AlertKind.GRID_FOLLOW:
                assert newest is not None
                assert alert.raised_ts_ms - newest > SHORT.max_age_ms  # stale when raised
                assert alert.raised_ts_ms <= region.watermark
        episodes += kinds.count(AlertKind.GRID_FOLLOW)
        aged = now_aged
        wanted = set() if newest is None or aged else {newest + SHORT.max_age_ms + 1}
        assert region.timers == wanted
    assert region.state is None or region.state.aged_out == aged
    final = region.advance(max(newest or T0, region.watermark) + SHORT.max_age_ms + 1)
    episodes += [a.kind for a in final].count(AlertKind.GRID_FOLLOW)
    assert region.timers == set()
    assert (region.state is not None) == (episodes >= 1)


# The roster keeper ------------------------------------------------------------------------------

registry_records = st.lists(
    st.tuples(
        st.sampled_from(["dev-1", "dev-2", "dev-3"]),
        st.one_of(st.none(), st.sampled_from(["north", "south", "east"])),  # None: a tombstone
    ),
    max_size=40,
)


def _record(device_id: str, region_id: str | None, ts: int) -> RegistryUpdate | Deregistration:
    if region_id is None:
        return Deregistration(device_id, f"del-{ts}", CAUSE, ts)
    info = DeviceInfo(DeviceClass.THERMOSTAT, PriorityLevel.STANDARD, region_id, ("p1",), 4.5)
    return RegistryUpdate(device_id, info, f"reg-{ts}", CAUSE, ts)


@settings(max_examples=examples(200), deadline=None)
@given(registry_records)
def test_each_device_is_on_exactly_the_roster_of_its_current_region(
    script: list[tuple[str, str | None]],
) -> None:
    """Property: under any run of registrations, moves and deletions (each device's records in
    order, as Kafka's key partitioning keeps them), the rosters built from `roster_changes`
    name every registered device in its current region only, and no deleted one; the keeper
    holds a region for registered devices only."""
    kept: dict[str, str] = {}
    rosters: dict[str, set[str]] = {}
    current: dict[str, str] = {}
    for n, (device_id, region_id) in enumerate(script):
        now_in, changes = roster_changes(kept.get(device_id), _record(device_id, region_id, n))
        if now_in is None:
            kept.pop(device_id, None)
        else:
            kept[device_id] = now_in
        for change in changes:
            if isinstance(change, RosterLeave):
                rosters[change.region_id].remove(change.device_id)  # it was there
            else:
                rosters.setdefault(change.info.region_id, set()).add(change.device_id)
        if region_id is None:
            current.pop(device_id, None)
        else:
            current[device_id] = region_id
    named = {(d, r) for r, devices in rosters.items() for d in devices}
    assert named == set(current.items())
    assert kept == current


def test_the_age_out_timer_of_a_region_with_the_longest_id_raises_its_grid_follow() -> None:
    """A region id of the models' full length (128 characters) still gets its GRID_FOLLOW: the
    ids the timer derives from it stay valid ids (they once failed the stage, every restart)."""
    region = "r" * ID_CHARS
    (alert,) = on_weather_timer(fresh(T0), region, T0 + MAX_AGE + 1, WBGT).alerts
    assert (alert.kind, alert.region_id) == (AlertKind.GRID_FOLLOW, region)
    assert len(alert.correlation_id) <= ID_CHARS
