"""The region, budget and pipeline state codec: lossless, versioned, loud about bad bytes."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from functions.budget import Held, Waiting, Window
from functions.device import CommandRequest, Withdrawal
from functions.interlocks import PipelineFacts
from functions.pipeline import Heartbeat, PipelineState
from functions.region import RegionEvent, RosterEntry
from functions.wetbulb import RegionWeather
from schemas.models import Action, Cause, DeviceClass, ReasonCode
from state import region as codec
from state.region import RegionStateError, RegionStateFieldError
from tests.vocabulary import examples

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
    aged_out=st.booleans(),
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
    issued_ts_ms=times,
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
waitings = st.builds(Waiting, requests, st.booleans())
helds = st.builds(
    Held,
    st.builds(
        Withdrawal,
        device_id=texts,
        region_id=texts,
        reasons=st.lists(st.sampled_from(ReasonCode), max_size=4).map(tuple),
        correlation_id=texts,
        cause=causes,
        ts_ms=times,
    ),
    st.lists(texts, max_size=3).map(tuple),
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
    "request": (waitings, (codec.encode_waiting, codec.decode_waiting)),
    "window": (windows, (codec.encode_window, codec.decode_window)),
    "withdrawal": (helds, (codec.encode_held, codec.decode_held)),
    "pipeline": (pipelines, (codec.encode_pipeline, codec.decode_pipeline)),
}
DECODERS = [decode for _, (_, decode) in CODECS.values()]
READS = {  # the version bytes a decoder accepts (the current one and those it upgrades)
    "weather": (1, codec.WEATHER_VERSION),
    "event": (1, codec.EVENT_VERSION),
    "request": (1, codec.WAITING_VERSION),
}  # the version bytes a decoder accepts


@pytest.mark.parametrize("name", sorted(CODECS))
def test_every_value_survives_the_round_trip(name: str) -> None:
    """decode(encode(v)) == v for every codec and any value."""
    values, (encode, decode) = CODECS[name]

    @settings(max_examples=examples(60))
    @given(values)
    def round_trip(value: Any) -> None:
        assert decode(encode(value)) == value

    round_trip()


@pytest.mark.parametrize("name", sorted(CODECS))
def test_another_version_byte_is_refused(name: str) -> None:
    """Bytes written by another codec version raise RegionStateError naming the version."""
    values, (encode, decode) = CODECS[name]
    reads = READS.get(name, (codec.VERSION,))

    @settings(max_examples=examples(20))
    @given(values, st.integers(0, 255).filter(lambda v: v not in reads))
    def refused(value: Any, version: int) -> None:
        raw = encode(value)
        with pytest.raises(RegionStateError, match="version"):
            decode(bytes([version]) + raw[1:])

    refused()


@pytest.mark.parametrize("name", sorted(CODECS))
def test_truncated_state_is_refused(name: str) -> None:
    """Any strict prefix of valid bytes (empty included) raises RegionStateError."""
    values, (encode, decode) = CODECS[name]

    @settings(max_examples=examples(30))
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

    @settings(max_examples=examples(60))
    @given(st.binary(max_size=200) | st.binary(max_size=200).map(lambda b: b"\x01" + b))
    def tolerated(data: bytes) -> None:
        with contextlib.suppress(RegionStateError):
            decode(data)

    tolerated()


@settings(max_examples=examples(60))
@given(weathers)
def test_v1_weather_without_the_aged_out_flag_still_decodes(w: RegionWeather) -> None:
    """Property: a v1 weather (four fields, from before the flag) reads as not aged out."""
    fields = [w.suspended, w.observed_ts_ms, w.wet_bulb_c, w.below_since_ms]
    v1 = bytes([1]) + json.dumps(fields).encode()
    assert codec.decode_weather(v1) == RegionWeather(*fields)


def test_v2_weather_fields_under_the_v1_byte_are_refused() -> None:
    """Five fields under version byte 1 do not pass for v1 weather."""
    raw = codec.encode_weather(RegionWeather(False, T0, 20.0, None, True))
    with pytest.raises(RegionStateError, match="4 fields"):
        codec.decode_weather(bytes([1]) + raw[1:])


def test_a_string_where_a_timestamp_belongs_is_refused_by_name() -> None:
    """A quoted number in weather's observed_ts_ms raises RegionStateFieldError naming both."""
    raw = bytes([codec.WEATHER_VERSION]) + b'[false,"1790000000000",20.0,null,false]'
    with pytest.raises(RegionStateFieldError, match="observed_ts_ms") as caught:
        codec.decode_weather(raw)
    assert (caught.value.field, caught.value.value) == ("observed_ts_ms", "1790000000000")


def test_the_string_false_is_not_read_as_a_true_freeze() -> None:
    """Regression: bool("false") is True; a string in the pipeline's frozen flag is refused."""
    with pytest.raises(RegionStateFieldError, match="frozen"):
        codec.decode_pipeline(bytes([codec.VERSION]) + b'["false",false,[]]')


# The JSON type each field must hold, in order, and values of every other JSON type.
_ints = st.integers(-(2**63), 2**63)
_floats = st.floats(allow_nan=False, allow_infinity=False)
_lists = st.lists(st.integers(), max_size=3)
WRONG: dict[str, st.SearchStrategy[Any]] = {
    "int": st.one_of(texts, _floats, st.booleans(), st.none(), _lists),
    "int?": st.one_of(texts, _floats, st.booleans(), _lists),
    "number": st.one_of(texts, st.booleans(), st.none(), _lists),
    "number?": st.one_of(texts, st.booleans(), _lists),
    "bool": st.one_of(texts, _ints, _floats, st.none(), _lists),
    "str": st.one_of(_ints, _floats, st.booleans(), st.none(), _lists),
    "str?": st.one_of(_ints, _floats, st.booleans(), _lists),
    "strs": st.one_of(texts, _ints, st.booleans(), st.lists(_ints, min_size=1, max_size=3)),
    "enum": st.one_of(_ints, st.booleans(), st.none(), st.just("NOT_A_MEMBER")),
    "list": st.one_of(texts, _ints, st.booleans(), st.none()),
}
CAUSE_FIELDS = [
    ("source_topic", "str"),
    ("source_partition", "int?"),
    ("source_offset", "int?"),
    ("event_id", "str?"),
]
FIELDS: dict[str, list[tuple[str, str]]] = {
    "weather": [
        ("suspended", "bool"),
        ("observed_ts_ms", "int"),
        ("wet_bulb_c", "number"),
        ("below_since_ms", "int?"),
        ("aged_out", "bool"),
    ],
    "roster_entry": [("device_class", "enum"), ("programs", "strs")],
    "event": [
        ("event_id", "str"),
        ("program_id", "str"),
        ("action", "enum"),
        ("start_ts_ms", "int"),
        ("end_ts_ms", "int"),
        ("priority", "int"),
        ("cancelled", "bool"),
        ("correlation_id", "str"),
        ("cause", "cause"),
        ("setpoint_offset_c", "number?"),
        ("curtailment_pct", "number?"),
        ("issued_ts_ms", "int"),
    ],
    "request": [
        ("command_id", "str"),
        ("device_id", "str"),
        ("region_id", "str"),
        ("action", "enum"),
        ("priority", "int"),
        ("requested_ts_ms", "int"),
        ("correlation_id", "str"),
        ("cause", "cause"),
        ("setpoint_offset_c", "number?"),
        ("curtailment_pct", "number?"),
        ("deferred", "bool"),
    ],
    "window": [("start_ms", "int"), ("used", "int")],
    "withdrawal": [
        ("device_id", "str"),
        ("region_id", "str"),
        ("reasons", "strs"),
        ("correlation_id", "str"),
        ("cause", "cause"),
        ("ts_ms", "int"),
        ("victims", "strs"),
    ],
    "pipeline": [("frozen", "bool"), ("source_silent", "bool"), ("beats", "list")],
}


@pytest.mark.parametrize("name", sorted(CODECS))
def test_a_wrong_typed_field_is_refused_naming_the_field_and_value(name: str) -> None:
    """Property: any field (a cause's included) holding another JSON type, or an enum field
    holding a non-member, raises RegionStateFieldError with that field's name and value."""
    values, (encode, decode) = CODECS[name]

    @settings(max_examples=examples(80))
    @given(values, st.data())
    def refused(value: Any, data: st.DataObject) -> None:
        raw = encode(value)
        fields = json.loads(raw[1:])
        i = data.draw(st.integers(0, len(FIELDS[name]) - 1))
        field, kind = FIELDS[name][i]
        target = fields
        if kind == "cause":  # a field inside the nested cause
            target = fields[i]
            i = data.draw(st.integers(0, len(CAUSE_FIELDS) - 1))
            field, kind = CAUSE_FIELDS[i]
        bad = data.draw(WRONG[kind])
        target[i] = bad
        with pytest.raises(RegionStateFieldError) as caught:
            decode(raw[:1] + json.dumps(fields).encode())
        assert (caught.value.field, caught.value.value) == (field, bad)
        assert field in str(caught.value)

    refused()


@pytest.mark.parametrize("name", sorted(CODECS))
def test_a_field_list_of_the_wrong_length_is_refused(name: str) -> None:
    """Property: a field missing or one too many raises RegionStateError."""
    values, (encode, decode) = CODECS[name]

    @settings(max_examples=examples(30))
    @given(values, st.booleans())
    def refused(value: Any, longer: bool) -> None:
        raw = encode(value)
        fields = json.loads(raw[1:])
        fields = [*fields, 0] if longer else fields[:-1]
        with pytest.raises(RegionStateError, match="fields"):
            decode(raw[:1] + json.dumps(fields).encode())

    refused()


def test_a_v1_event_and_request_from_an_old_savepoint_are_read() -> None:
    """Upgrade path: a v1 DR event has no issue time (its start stands in); a v1 waiting
    request had been audited DEFERRED when it was queued."""
    event = codec.decode_event(
        b'\x01["ev-1","p1","CURTAIL",10,20,1,false,"c",["test",null,null,"e"],null,null]'
    )
    assert (event.event_id, event.start_ts_ms, event.issued_ts_ms) == ("ev-1", 10, 10)
    waiting = codec.decode_waiting(
        b'\x01["cmd-1","dev-1","north","CURTAIL",1,10,"c",["test",null,null,"e"],null,null]'
    )
    assert (waiting.request.command_id, waiting.deferred) == ("cmd-1", True)
