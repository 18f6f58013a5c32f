"""Dead letters: whatever arrives ends as a valid record or a dead letter that itself encodes."""

from __future__ import annotations

from typing import Any

import confluent_kafka
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gridstream import topics
from schemas import catalog, dead_letter, models, serde
from schemas.dead_letter import JobInfo, SourceRecord
from schemas.examples import EXAMPLE_NOW_MS, encode_unvalidated, example, example_data
from schemas.models import MAX_PAYLOAD_BYTES, MODELS, DeadLetter, DeviceClass, IotTelemetry
from schemas.serde import StaticSchemas
from tests.vocabulary import examples

pytestmark = pytest.mark.unit

TABLE = StaticSchemas.from_catalog(catalog.default())
IOT = catalog.default().chain(topics.IOT_TELEMETRY)
READER = serde.deserializer(IotTelemetry, TABLE)
DLQ_WRITER = serde.serializer(DeadLetter, TABLE)
DLQ_READER = serde.deserializer(DeadLetter, TABLE)
JOB = JobInfo("device_control", "0.1.0")


class Unprintable(Exception):
    """An error whose message cannot even be turned into text."""

    def __str__(self) -> str:
        raise RuntimeError("no message for you")


def source(value: bytes | None, **parts: Any) -> SourceRecord:
    """An IoT record as consumed at partition 1, offset 7, with `parts` replaced."""
    fields: dict[str, Any] = {
        "topic": topics.IOT_TELEMETRY,
        "partition": 1,
        "offset": 7,
        "timestamp_ms": EXAMPLE_NOW_MS,
        "key": b"thermostat-0001",
        "value": value,
        "headers": [("correlation_id", b"corr-0001")],
    }
    return SourceRecord(**{**fields, **parts})


def assert_is_a_sound_dead_letter(letter: DeadLetter, value: bytes | None) -> None:
    """The dead letter keeps the bytes it may keep and survives its own wire format."""
    original = value or b""
    assert letter.payload == original[:MAX_PAYLOAD_BYTES]
    assert letter.payload_length == len(original)
    assert DLQ_READER.decode(DLQ_WRITER.encode(letter), EXAMPLE_NOW_MS) == letter


broken_text = st.one_of(
    st.text(max_size=300),
    st.text(st.characters(categories=["Cs"]), min_size=1, max_size=5),
    st.text(st.characters(categories=["Zs", "Cc"]), max_size=5),
)
raw = st.one_of(st.none(), st.binary(max_size=2000), broken_text)
huge = st.tuples(st.binary(min_size=1, max_size=64), st.integers(200, 2000)).map(
    lambda chunk_times: chunk_times[0] * chunk_times[1] + b"!" * MAX_PAYLOAD_BYTES
)
values = st.one_of(st.none(), st.binary(max_size=300), huge)
errors = st.one_of(
    st.builds(
        lambda kind, message, schema_id: kind(message, schema_id),
        st.sampled_from(
            [
                serde.BadMagic,
                serde.Truncated,
                serde.UnknownSchemaId,
                serde.ResolutionFailure,
                serde.CorruptPayload,
                serde.ValidationFailure,
            ]
        ),
        broken_text,
        st.one_of(st.none(), st.integers()),
    ),
    st.builds(ValueError, broken_text),
    st.just(Unprintable()),
    st.just(type("", (Exception,), {})()),
)
sources = st.builds(
    SourceRecord,
    topic=broken_text,
    partition=st.one_of(st.none(), st.integers()),
    offset=st.one_of(st.none(), st.integers()),
    timestamp_ms=st.one_of(st.none(), st.integers()),
    key=raw,
    value=values,
    headers=st.one_of(
        st.none(),
        st.lists(st.tuples(st.one_of(broken_text, st.binary(max_size=50)), raw), max_size=40),
    ),
)


def frame(schema_id: int, body: bytes) -> bytes:
    """Wire-format bytes with any header id and any body."""
    return serde.wire_header(schema_id) + body


known_ids = st.sampled_from(
    [
        TABLE.schema_id(c.subject, v.text)
        for c in catalog.default().chains.values()
        for v in c.versions
    ]
)
iot_overrides = st.fixed_dictionaries(
    {},
    optional={
        "device_id": st.text(max_size=200),
        "device_class": st.one_of(st.sampled_from(list(DeviceClass)), st.text(max_size=20)),
        "ts_ms": st.integers(-(2**63), 2**63 - 1),
        "power_kw": st.floats(),
        "setpoint_c": st.one_of(st.none(), st.floats()),
        "firmware_version": st.text(max_size=100),
        "ev_soc_pct": st.one_of(st.none(), st.floats()),
    },
)


def iot_bytes(version: int, overrides: dict[str, Any]) -> bytes:
    """An IoT record written by a `version` producer that did not validate."""
    schema = IOT.versions[version - 1]
    data = example_data(IotTelemetry, **overrides)
    return encode_unvalidated(schema, TABLE.schema_id(IOT.subject, schema.text), data)


wire_inputs = st.one_of(
    values,
    st.builds(frame, st.integers(-(2**31), 2**31 - 1), st.binary(max_size=120)),
    st.builds(frame, known_ids, st.binary(max_size=120)),
    st.builds(iot_bytes, st.sampled_from([1, 2]), iot_overrides),
    st.sampled_from([serde.serializer(m, TABLE).encode(example(m)) for m in MODELS.values()]),
)


@settings(max_examples=examples(300), deadline=None)
@given(
    record=sources,
    error=errors,
    failed_ts_ms=st.integers(),
    job=st.builds(JobInfo, broken_text, broken_text),
)
def test_building_a_dead_letter_never_raises_and_its_result_encodes(
    record: SourceRecord, error: BaseException, failed_ts_ms: int, job: JobInfo
) -> None:
    """Any source, error, clock and job name give a dead letter that round-trips its schema."""
    letter = dead_letter.build(record, error, job, failed_ts_ms)

    assert_is_a_sound_dead_letter(letter, record.value)


@settings(max_examples=examples(500), deadline=None)
@given(value=wire_inputs, key=raw, headers=st.lists(st.tuples(broken_text, raw), max_size=5))
def test_every_input_ends_as_a_valid_record_or_a_dead_letter(
    value: bytes | None, key: Any, headers: list[tuple[str, Any]]
) -> None:
    """Any bytes, huge payloads, wrong ids, other records, out-of-range values: nothing escapes."""
    result = dead_letter.decode_or_dead_letter(
        READER, source(value, key=key, headers=headers), JOB, EXAMPLE_NOW_MS
    )

    if isinstance(result, DeadLetter):
        assert_is_a_sound_dead_letter(result, value)
    else:
        assert isinstance(result, IotTelemetry)


def test_a_valid_record_is_decoded_not_dead_lettered() -> None:
    """The happy path returns the model."""
    payload = serde.serializer(IotTelemetry, TABLE).encode(example(IotTelemetry))

    result = dead_letter.decode_or_dead_letter(READER, source(payload), JOB, EXAMPLE_NOW_MS)

    assert result == example(IotTelemetry)


def test_an_out_of_range_record_is_dead_lettered_with_field_position_and_schema_id() -> None:
    """The dead letter names the error, field, schema id, source position, job and clock."""
    payload = iot_bytes(2, {"power_kw": 80.0})

    letter = dead_letter.decode_or_dead_letter(READER, source(payload), JOB, EXAMPLE_NOW_MS)

    assert isinstance(letter, DeadLetter)
    assert (letter.error_class, letter.schema_id) == (
        "ValidationFailure",
        int.from_bytes(payload[1:5]),
    )
    assert "power_kw=80.0" in letter.error_message
    assert (letter.source_topic, letter.source_partition, letter.source_offset) == (
        topics.IOT_TELEMETRY, 1, 7
    )  # fmt: skip
    assert (letter.correlation_id, letter.key, letter.failed_ts_ms) == (
        "corr-0001", b"thermostat-0001", EXAMPLE_NOW_MS
    )  # fmt: skip
    assert (letter.job_name, letter.job_version) == ("device_control", "0.1.0")


def test_a_huge_payload_is_truncated_to_10_kib_keeping_its_length() -> None:
    """A 1 MiB value keeps its first 10 KiB and its original length."""
    value = b"\x00" + b"x" * (1024 * 1024 - 1)

    letter = dead_letter.decode_or_dead_letter(READER, source(value), JOB, EXAMPLE_NOW_MS)

    assert isinstance(letter, DeadLetter)
    assert (len(letter.payload), letter.payload_length) == (10 * 1024, 1024 * 1024)


def test_without_a_correlation_header_the_id_is_minted_from_position_and_bytes() -> None:
    """No header: a deterministic id, the same for the same record, another for another."""
    first = dead_letter.build(
        source(b"\x01", headers=None), serde.BadMagic("x"), JOB, EXAMPLE_NOW_MS
    )
    again = dead_letter.build(source(b"\x01", headers=[]), serde.BadMagic("y"), JOB, 0)
    other = dead_letter.build(source(b"\x01", headers=[], offset=8), serde.BadMagic("x"), JOB, 0)

    assert first.correlation_id == again.correlation_id != other.correlation_id


def test_an_error_that_cannot_print_still_becomes_a_dead_letter() -> None:
    """A broken __str__ costs the message, not the record."""
    letter = dead_letter.build(source(b"\x00"), Unprintable(), JOB, EXAMPLE_NOW_MS)

    assert letter.error_class == "Unprintable"
    assert "unprintable" in letter.error_message


def test_the_dead_letter_example_is_a_valid_dlq_record() -> None:
    """The documented example passes validation and the DLQ schema."""
    assert_is_a_sound_dead_letter(example(models.DeadLetter), b'{"device_id": "thermostat-0002"}')


def test_a_consumed_confluent_message_becomes_a_source_record() -> None:
    """Topic, position, timestamp, key, value and headers are taken from the message."""
    message = confluent_kafka.Message(
        topic=topics.IOT_TELEMETRY,
        partition=1,
        offset=7,
        key=b"thermostat-0001",
        value=b"\x00",
        headers=[("correlation_id", b"corr-0001")],
        timestamp=(confluent_kafka.TIMESTAMP_CREATE_TIME, EXAMPLE_NOW_MS),
    )

    assert SourceRecord.from_message(message) == source(b"\x00")


def test_a_message_without_a_timestamp_has_none() -> None:
    """Kafka's 'not available' timestamp is None, not -1."""
    message = confluent_kafka.Message(
        topic="t", timestamp=(confluent_kafka.TIMESTAMP_NOT_AVAILABLE, -1)
    )

    assert SourceRecord.from_message(message).timestamp_ms is None
