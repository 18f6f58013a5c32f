"""The device state's versioned codec: lossless, compact, and loud about bad bytes."""

from __future__ import annotations

import contextlib
import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.models import Action, DeviceClass, PriorityLevel
from state.device import (
    MAX_ENDED,
    MAX_OVERRIDES,
    MAX_QUEUED,
    VERSION,
    DeviceInfo,
    DeviceState,
    DeviceStateError,
    Ended,
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
    attempted=st.booleans(),
    issued_ts_ms=times,
    rounds=st.integers(0, 0xFFFF),
)


@st.composite
def states(draw: st.DrawFn) -> DeviceState:
    """Any reachable state."""
    return DeviceState(
        info=draw(st.none() | infos),
        info_ts_ms=draw(st.none() | times),
        last_seen_ms=draw(st.none() | times),
        last_good=draw(st.none() | st.builds(LastGood, times, finite, st.booleans())),
        stale=draw(st.booleans()),
        overrides=tuple(sorted(draw(st.sets(times, max_size=MAX_OVERRIDES)))),
        participation=draw(st.none() | participations),
        queued=tuple(draw(st.lists(participations, max_size=MAX_QUEUED))),
        pending=draw(
            st.none() | st.builds(PendingRecommendation, ids, st.sampled_from(Action), times)
        ),
        stats=draw(st.builds(PowerStats, st.integers(0, 2**32 - 1), finite, finite)),
        watch_ms=draw(st.none() | times),
        ended=tuple(
            draw(st.lists(st.builds(Ended, ids, times, times, st.booleans()), max_size=MAX_ENDED))
        ),
    )


@given(states())
def test_every_state_survives_the_round_trip(state: DeviceState) -> None:
    """decode(encode(s)) == s for any state."""
    assert decode(encode(state)) == state


@given(states(), states(), st.data())
def test_bytes_written_from_the_previous_bytes_equal_a_full_encode(
    old: DeviceState, other: DeviceState, data: st.DataObject
) -> None:
    """A state that shares some of its parts with the previous one (the same objects, as a step
    hands them on) encodes to the same bytes with or without the previous bytes."""
    shared = {
        name: getattr(old if data.draw(st.booleans(), label=name) else other, name)
        for name in ("info", "pending", "participation", "queued", "ended")
    }
    new = dataclasses.replace(other, **shared)
    assert encode(new, (old, encode(old))) == encode(new)


def test_a_typical_enrolled_iot_device_fits_in_256_bytes() -> None:
    """A thermostat in one program, mid-event with another queued, stays under budget."""
    event = Participation("dr-2026-07-14-pm", Action.CURTAIL, T0, T0 + 3_600_000, 1)
    state = DeviceState(
        info=DeviceInfo(
            DeviceClass.THERMOSTAT, PriorityLevel.STANDARD, "region-north", ("summer-saver",), 4.5
        ),
        info_ts_ms=T0,
        last_seen_ms=T0,
        last_good=LastGood(T0, 3.2, True),
        overrides=(T0,),
        participation=event,
        queued=(dataclasses.replace(event, event_id="dr-2026-07-14-eve"),),
        stats=PowerStats(1000, 3.1, 42.0),
        watch_ms=T0 + 900_000,
    )
    assert len(encode(state)) <= 256


# A curtailed thermostat as job 0.4 (state v1, no watch timer) wrote it into its savepoints.
V1_THERMOSTAT = bytes.fromhex(
    "011703020000000000001240006c50c4a0010000006c50c4a001000000000000"
    "00000a40006c50c4a0010000805a87c4a0010000000000000000000002000000"
    "030000000000000000000840000000000000e03f0000c07f0000a04101ff0d02"
    "60ea0000000000000305006e6f727468040064722d31000001060073756d6d65"
    "72"
)


# The same thermostat as job 0.5-0.6 (state v2, with its watch timer) wrote it.
V2_THERMOSTAT = bytes.fromhex(
    "025703020000000000001240006c50c4a0010000006c50c4a00100000000000000000a40006c50c4a00100"
    "00805a87c4a0010000000000000000000002000000030000000000000000000840000000000000e03f0000"
    "c07f0000a041a0275ec4a001000001ff0d0260ea0000000000000305006e6f727468040064722d31000001"
    "060073756d6d6572"
)
OLD_THERMOSTAT = DeviceState(
    info=DeviceInfo(DeviceClass.THERMOSTAT, PriorityLevel.STANDARD, "north", ("summer",), 4.5),
    last_seen_ms=T0,
    last_good=LastGood(T0, 3.25, True),
    participation=Participation(
        "dr-1",
        Action.CURTAIL,
        T0,
        T0 + 3_600_000,
        2,
        curtailed=True,
        attempted=True,
        curtailment_pct=20.0,
        issued_ts_ms=T0,  # not kept before v3: its start stands in
        rounds=1,
    ),
    stats=PowerStats(3, 3.0, 0.5),
)


# The same thermostat as job 0.7-0.9 (state v3: the registry record's time, the event's
# announcement, its newest override) wrote it.
V3_THERMOSTAT = bytes.fromhex(
    "03cf810302ff010000000000001240807d19c4a0010000006c50c4a0010000006c50c4a001000000000000"
    "00000a40605651c4a00100000000000000000000030000000000000000000840000000000000e03fa0275e"
    "c4a0010000006c50c4a0010000805a87c4a0010000006c50c4a00100000000000000000000020000000100"
    "01050000c07f0000a0410305006e6f7274680000040064722d3101060073756d6d6572"
)
V3_FIELDS = {"watch_ms": T0 + 900_000, "info_ts_ms": T0 - 3_600_000, "overrides": (T0 + 60_000,)}

# The same thermostat as the later builds of job 0.9 (state v4: several override times, no
# cancelled events) wrote it.
V4_THERMOSTAT = bytes.fromhex(
    "044f810302ff110000000000001240807d19c4a0010000006c50c4a0010000006c50c4a00100000000000000"
    "000a400000000000000000030000000000000000000840000000000000e03fa0275ec4a0010000605651c4a0"
    "010000006c50c4a0010000805a87c4a0010000006c50c4a0010000000000000000000002000000010001050000"
    "c07f0000a0410305006e6f7274680000040064722d3101060073756d6d6572"
)


@pytest.mark.parametrize(
    ("raw", "fields"),
    [
        (V1_THERMOSTAT, {}),
        (V2_THERMOSTAT, {"watch_ms": T0 + 900_000}),
        (V3_THERMOSTAT, V3_FIELDS),
        (V4_THERMOSTAT, V3_FIELDS),
    ],
    ids=["v1", "v2", "v3", "v4"],
)
def test_an_old_state_from_a_savepoint_is_read_and_written_back_as_v5(
    raw: bytes, fields: dict[str, object]
) -> None:
    """Upgrade path: v1 to v4 bytes decode field for field (the window of recent reading times
    dropped; v1 without a watch timer; v3's one override the only one; no cancelled events
    before v5) and re-encode as v5."""
    state = decode(raw)
    assert state == dataclasses.replace(OLD_THERMOSTAT, **fields)  # type: ignore[arg-type]
    upgraded = encode(state)
    assert upgraded[0] == VERSION == 5
    assert decode(upgraded) == state


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
