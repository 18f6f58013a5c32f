"""The device step's shortcuts change no decision: each is checked against the full path it
skips, over random states and inputs (Hypothesis)."""

from __future__ import annotations

import dataclasses
import inspect
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from functions import device
from functions.device import (
    Activation,
    Context,
    DevicePolicy,
    Event,
    RegistryUpdate,
    Telemetry,
    Timer,
    step,
)
from functions.interlocks import PipelineFacts
from functions.wetbulb import RegionMode
from schemas.models import Action, Cause, DeviceClass, PriorityLevel
from state.device import (
    DeviceInfo,
    DeviceState,
    Ended,
    LastGood,
    Participation,
    PendingRecommendation,
    PowerStats,
)
from tests.vocabulary import MINUTE_MS, examples

pytestmark = pytest.mark.unit

DEV = "dev-1"
T0 = 1_790_000_000_000
CAUSE = Cause(source_topic="test", source_partition=0, source_offset=0)
POLICY = DevicePolicy(scada_silence_ms=15_000, recommendation_ttl_ms=10 * MINUTE_MS)

times = st.integers(T0 - 30 * MINUTE_MS, T0 + 30 * MINUTE_MS)
maybe_time = st.none() | times
infos = st.builds(
    DeviceInfo,
    st.sampled_from(list(DeviceClass)),
    st.sampled_from(list(PriorityLevel)),
    st.sampled_from(["north", "south"]),
    st.just(("p1",)),
    st.just(5.0),
)


@st.composite
def participations(draw: st.DrawFn, event_id: str | None = None) -> Participation:
    start = draw(times)
    return Participation(
        event_id or draw(st.sampled_from(["ev-a", "ev-b", "ev-c", "ev-d"])),
        draw(st.sampled_from([Action.CURTAIL, Action.SHED, Action.SWITCH_OPEN])),
        start,
        start + draw(st.integers(1, 40 * MINUTE_MS)),
        draw(st.integers(1, 5)),
        curtailed=draw(st.booleans()),
        opted_out=draw(st.booleans()),
        attempted=draw(st.booleans()),
        issued_ts_ms=start - draw(st.integers(0, 20 * MINUTE_MS)),
        rounds=draw(st.integers(0, 3)),
        opt_out_ts_ms=draw(maybe_time),
    )


@st.composite
def states(draw: st.DrawFn) -> DeviceState:
    """Any device state, mostly with no DR event (the common case the shortcuts take)."""
    seen = draw(maybe_time)
    good = draw(st.none() | st.builds(LastGood, times, st.floats(0, 10), st.booleans()))
    in_event = draw(st.integers(0, 3)) == 0
    queued = draw(st.lists(participations(), max_size=3)) if in_event else []
    return DeviceState(
        info=draw(st.none() | infos),
        info_ts_ms=draw(maybe_time),
        last_seen_ms=seen,
        last_good=good,
        stale=draw(st.booleans()),
        overrides=tuple(sorted(draw(st.sets(times, max_size=3)))),
        participation=draw(st.none() | participations("ev-z")) if in_event else None,
        queued=tuple(queued),
        pending=draw(
            st.none()
            | st.builds(PendingRecommendation, st.just("rec-1"), st.just(Action.SWITCH_OPEN), times)
        ),
        stats=draw(st.sampled_from([PowerStats(), PowerStats(3, 2.0, 0.5)])),
        watch_ms=draw(maybe_time),
        ended=tuple(
            draw(
                st.lists(st.builds(Ended, st.just("ev-a"), times, times, st.booleans()), max_size=1)
            )
        ),
    )


def _activation(p: Participation, cancelled: bool, ts: int) -> Activation:
    return Activation(
        DEV, "north", p.event_id, p.action, p.start_ts_ms, p.end_ts_ms, p.priority,
        cancelled, "a", CAUSE, ts, issued_ts_ms=p.issued_ts_ms,
    )  # fmt: skip


readings = st.builds(
    Telemetry,
    st.just(DEV),
    times,
    st.floats(0, 10),
    st.booleans(),
    st.booleans(),
    st.booleans(),
    st.just("t"),
    st.just(CAUSE),
)
events: st.SearchStrategy[Event] = (
    readings
    | readings
    | st.builds(Timer, st.just(DEV), times)
    | st.builds(RegistryUpdate, st.just(DEV), infos, st.just("r"), st.just(CAUSE), times)
    | st.builds(_activation, participations(), st.booleans(), times)
)


def _settle_in_full(out: device._Out, corr: str, cause: Cause) -> None:
    """`_settle` as it was: every step, whatever the state."""
    device._forget_ended(out)
    device._act_on_opt_outs(out, corr, cause)
    device._release_if_unsafe(out, corr, cause)
    device._finish_if_over(out, corr, cause)
    device._resolve_queue(out, corr, cause)
    device._start_if_due(out, corr, cause)


def _heard_by_replace(state: DeviceState, event: Telemetry) -> DeviceState:
    """`_heard` as it was: a chain of `dataclasses.replace`."""
    state = dataclasses.replace(state, last_seen_ms=event.ts_ms)
    return dataclasses.replace(
        state,
        last_good=LastGood(event.ts_ms, event.power_kw, event.is_on),
        stale=False,
        stats=state.stats.add(event.power_kw),
    )


@settings(max_examples=examples(1500), deadline=None)
@given(
    st.none() | states(),
    events,
    st.sampled_from(list(RegionMode)),
    st.booleans(),
    st.integers(0, 10 * MINUTE_MS),
    st.integers(0, 10_000),
)
def test_the_lean_step_decides_exactly_as_the_full_one(
    state: DeviceState | None,
    event: Event,
    region: RegionMode,
    frozen: bool,
    ahead_ms: int,
    lag_ms: int,
) -> None:
    """Property: skipping `_settle` without a participation, building the heard-from state in
    one go and the cheaper emptiness check give the same state and outputs as the full path,
    for any state and any input (readings most of all) at any decision time."""
    now = event.ts_ms + ahead_ms
    ctx = Context(now, region, PipelineFacts(frozen=frozen), POLICY, now - lag_ms)
    lean = step(state, event, ctx)
    with (
        mock.patch.object(device, "_settle", _settle_in_full),
        mock.patch.object(device, "_heard", _heard_by_replace),
        mock.patch.object(
            device,
            "_knows_nothing",
            lambda s: dataclasses.replace(s, watch_ms=None) == DeviceState(),
        ),
    ):
        full = step(state, event, ctx)
    assert lean == full


def test_the_heard_from_state_keeps_every_field_of_the_state() -> None:
    """`_heard` names every field of `DeviceState`: a field added later must be added there
    too, or the common reading would reset it."""
    source = inspect.getsource(device._heard)
    assert [f.name for f in dataclasses.fields(DeviceState) if f"{f.name}=" not in source] == []


def test_the_stage_writes_no_state_and_moves_no_timer_for_a_reading_that_changes_neither() -> None:
    """A duplicate reading leaves the stored bytes as they were (not even rewritten), and a
    common reading rewrites the state but calls the timer service for nothing."""
    from functions.operators import DeviceStage
    from functions.wetbulb import WetBulbPolicy
    from tests.harness import DecodedInputs, Harness

    h = Harness(DeviceStage(DecodedInputs(), POLICY, WetBulbPolicy())).open()
    h.process(DEV, Telemetry(DEV, T0, 2.0, True, True, False, "t0", CAUSE))
    h.process(DEV, Telemetry(DEV, T0 + MINUTE_MS, 2.0, True, True, False, "t1", CAUSE))
    stored, timers = h.state_bytes(DEV, "device"), dict(h.timers)
    calls: list[str] = []
    with (
        mock.patch("tests.harness.FakeTimerService.register_event_time_timer", calls.append),
        mock.patch("tests.harness.FakeTimerService.delete_event_time_timer", calls.append),
    ):
        h.process(DEV, Telemetry(DEV, T0 + MINUTE_MS, 2.0, True, True, False, "dup", CAUSE))
        assert h.state_bytes(DEV, "device") is stored
        h.process(DEV, Telemetry(DEV, T0 + 2 * MINUTE_MS, 2.0, True, True, False, "t2", CAUSE))
    assert calls == []
    assert h.timers == timers
    assert h.state_bytes(DEV, "device") != stored
