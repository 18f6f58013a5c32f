"""The device state's versioned codec: lossless, compact, and loud about bad bytes."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.models import Action, DeviceClass, PriorityLevel
from state.device import (
    DEDUPE_WINDOW,
    DeviceInfo,
    DeviceState,
    DeviceStateError,
    LastGood,
    Participation,
    PendingRecommendation,
    PowerStats,
    decode,
    encode,
)

pytestmark = pytest.mark.unit

T0 = 1_790_000_000_000
times = st.integers(T0 - 10**9, T0 + 10**9)
finite = st.floats(-1e6, 1e6, allow_nan=False)
ids = st.text(min_size=1, max_size=40)

infos = st.builds(
    DeviceInfo,
    device_class=st.sampled_from(DeviceClass),
    priority=st.sampled_from(PriorityLevel),
    region_id=ids,
    programs=st.lists(ids, max_size=4).map(tuple),
    rated_power_kw=finite,
)
participations = st.builds(
    Participation,
    event_id=ids,
    action=st.sampled_from(Action),
    start_ts_ms=times,
    end_ts_ms=times,
    priority=st.integers(0, 2**31 - 1),
    curtailed=st.booleans(),
    opted_out=st.booleans(),
)


@st.composite
def states(draw: st.DrawFn) -> DeviceState:
    """Any reachable state: recent reading times never exceed the last one seen."""
    last_seen = draw(st.none() | times)
    recent = (
        ()
        if last_seen is None
        else tuple(
            draw(st.lists(st.integers(last_seen - 10**8, last_seen), max_size=DEDUPE_WINDOW))
        )
    )
    return DeviceState(
        info=draw(st.none() | infos),
        last_seen_ms=last_seen,
        last_good=draw(st.none() | st.builds(LastGood, times, finite, st.booleans())),
        stale=draw(st.booleans()),
        recent_ts_ms=recent,
        participation=draw(st.none() | participations),
        pending=draw(
            st.none() | st.builds(PendingRecommendation, ids, st.sampled_from(Action), times)
        ),
        stats=draw(st.builds(PowerStats, st.integers(0, 2**32 - 1), finite, finite)),
    )


@given(states())
def test_every_state_survives_the_round_trip(state: DeviceState) -> None:
    """decode(encode(s)) == s for any state."""
    assert decode(encode(state)) == state


def test_a_typical_enrolled_iot_device_fits_in_256_bytes() -> None:
    """A thermostat in one program, mid-event, with a full dedupe window, stays under budget."""
    state = DeviceState(
        info=DeviceInfo(
            DeviceClass.THERMOSTAT, PriorityLevel.STANDARD, "region-north", ("summer-saver",), 4.5
        ),
        last_seen_ms=T0,
        last_good=LastGood(T0, 3.2, True),
        recent_ts_ms=tuple(T0 - i * 60_000 for i in range(DEDUPE_WINDOW)),
        participation=Participation("dr-2026-07-14-pm", Action.CURTAIL, T0, T0 + 3_600_000, 1),
        stats=PowerStats(1000, 3.1, 42.0),
    )
    assert len(encode(state)) <= 256


@given(st.binary(max_size=300))
def test_arbitrary_bytes_decode_or_raise_device_state_error(data: bytes) -> None:
    """Corrupt state is reported as DeviceStateError, never as a stray exception."""
    with contextlib.suppress(DeviceStateError):
        decode(data)


@given(states(), st.data())
def test_truncated_state_is_refused(state: DeviceState, data: st.DataObject) -> None:
    """Any strict prefix of valid bytes raises DeviceStateError."""
    raw = encode(state)
    cut = data.draw(st.integers(0, len(raw) - 1))
    with pytest.raises(DeviceStateError):
        decode(raw[:cut])


def test_welford_matches_the_textbook_variance() -> None:
    """The running statistics agree with a two-pass computation."""
    samples = [2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]
    stats = PowerStats()
    for x in samples:
        stats = stats.add(x)
    assert stats.mean == pytest.approx(5.0)
    assert stats.stddev == pytest.approx(2.138089935299395)
