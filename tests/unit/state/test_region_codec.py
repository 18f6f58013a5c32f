"""The region, budget and pipeline state codec: lossless, versioned, loud about bad bytes."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from functions.budget import Window
from functions.device import CommandRequest
from functions.interlocks import PipelineFacts
from functions.pipeline import Heartbeat, PipelineState
from functions.region import RegionEvent, RosterEntry
from functions.wetbulb import RegionWeather
from schemas.models import Action, Cause, DeviceClass
from state import region as codec
from state.region import RegionStateError

pytestmark = pytest.mark.unit

T0 = 1_790_000_000_000
times = st.integers(T0 - 10**9, T0 + 10**9)
texts = st.text(max_size=30)
id_texts = st.from_regex(r"[A-Za-z0-9._:-]{1,40}", fullmatch=True)
causes = st.one_of(
    st.builds(
        Cause,
        source_topic=id_texts,
        source_partition=st.integers(0, 2**31 - 1),
        source_offset=st.integers(0, 2**63 - 1),
        event_id=st.none() | id_texts,
    ),
    st.builds(Cause, source_topic=id_texts, event_id=id_texts),
)

weathers = st.builds(
    RegionWeather,
    suspended=st.booleans(),
    observed_ts_ms=times,
    wet_bulb_c=st.floats(-90.0, 100.0, allow_nan=False),
    below_since_ms=st.none() | times,
)
roster_entries = st.builds(
    RosterEntry,
    device_class=st.sampled_from(DeviceClass),
    programs=st.lists(texts, max_size=4).map(tuple),
)
events = st.builds(
    RegionEvent,
    event_id=texts,
    program_id=texts,
    action=st.sampled_from(Action),
    start_ts_ms=times,
    end_ts_ms=times,
    priority=st.integers(0, 2**31 - 1),
    cancelled=st.booleans(),
    correlation_id=texts,
    cause=causes,
)
requests = st.builds(
    CommandRequest,
    command_id=texts,
    device_id=texts,
    region_id=texts,
    action=st.sampled_from(Action),
    priority=st.integers(0, 2**31 - 1),
    requested_ts_ms=times,
    correlation_id=texts,
    cause=causes,
)
windows = st.builds(Window, start_ms=times, used=st.integers(0, 10**6))
pipelines = st.builds(
    PipelineState,
    facts=st.builds(PipelineFacts, frozen=st.booleans(), source_silent=st.booleans()),
    beats=st.lists(st.builds(Heartbeat, st.integers(0, 1024), times, times), max_size=8).map(tuple),
)

Codec = tuple[Callable[[Any], bytes], Callable[[bytes], Any]]
CODECS: dict[str, tuple[st.SearchStrategy[Any], Codec]] = {
    "weather": (weathers, (codec.encode_weather, codec.decode_weather)),
    "roster_entry": (roster_entries, (codec.encode_roster_entry, codec.decode_roster_entry)),
    "event": (events, (codec.encode_event, codec.decode_event)),
    "request": (requests, (codec.encode_request, codec.decode_request)),
    "window": (windows, (codec.encode_window, codec.decode_window)),
    "pipeline": (pipelines, (codec.encode_pipeline, codec.decode_pipeline)),
}
DECODERS = [decode for _, (_, decode) in CODECS.values()]


@pytest.mark.parametrize("name", sorted(CODECS))
def test_every_value_survives_the_round_trip(name: str) -> None:
    """decode(encode(v)) == v for every codec and any value."""
    values, (encode, decode) = CODECS[name]

    @settings(max_examples=60)
    @given(values)
    def round_trip(value: Any) -> None:
        assert decode(encode(value)) == value

    round_trip()


@pytest.mark.parametrize("name", sorted(CODECS))
def test_another_version_byte_is_refused(name: str) -> None:
    """Bytes written by another codec version raise RegionStateError naming the version."""
    values, (encode, decode) = CODECS[name]

    @settings(max_examples=20)
    @given(values, st.integers(0, 255).filter(lambda v: v != codec.VERSION))
    def refused(value: Any, version: int) -> None:
        raw = encode(value)
        with pytest.raises(RegionStateError, match="version"):
            decode(bytes([version]) + raw[1:])

    refused()


@pytest.mark.parametrize("name", sorted(CODECS))
def test_truncated_state_is_refused(name: str) -> None:
    """Any strict prefix of valid bytes (empty included) raises RegionStateError."""
    values, (encode, decode) = CODECS[name]

    @settings(max_examples=30)
    @given(values, st.data())
    def refused(value: Any, data: st.DataObject) -> None:
        raw = encode(value)
        cut = data.draw(st.integers(0, len(raw) - 1))
        with pytest.raises(RegionStateError):
            decode(raw[:cut])

    refused()


@pytest.mark.parametrize("decode", DECODERS)
@pytest.mark.parametrize(
    "garbage",
    [b"", b"\x01", b"\x01not json", b"\x01{}", b"\x01[]", b"\x01null", b"\x01\xff\xfe", b"\x01[1"],
)
def test_garbage_after_the_version_byte_is_refused(
    decode: Callable[[bytes], Any], garbage: bytes
) -> None:
    """Bytes that are not this version's JSON fields raise RegionStateError."""
    with pytest.raises(RegionStateError):
        decode(garbage)


@pytest.mark.parametrize("decode", DECODERS)
def test_arbitrary_bytes_decode_or_raise_region_state_error(
    decode: Callable[[bytes], Any],
) -> None:
    """Corrupt state is reported as RegionStateError, never as a stray exception."""

    @settings(max_examples=60)
    @given(st.binary(max_size=200) | st.binary(max_size=200).map(lambda b: b"\x01" + b))
    def tolerated(data: bytes) -> None:
        with contextlib.suppress(RegionStateError):
            decode(data)

    tolerated()
