"""The Confluent wire-format serde: ids, old writers, typed failures, one fetch per id."""

from __future__ import annotations

import pytest

from gridstream import topics
from schemas import catalog, models, serde
from schemas.examples import EXAMPLE_NOW_MS, encode_unvalidated, example, example_data
from schemas.models import MODELS, TopicRecord
from schemas.serde import StaticSchemas

pytestmark = pytest.mark.unit

IOT = catalog.default().chain(topics.IOT_TELEMETRY)


class CountingSchemas:
    """A schema source that records every writer-schema fetch it answers."""

    def __init__(self, inner: StaticSchemas) -> None:
        self.inner = inner
        self.fetches: list[int] = []

    def writer_schema(self, schema_id: int) -> str:
        """Record the fetch, then answer it."""
        self.fetches.append(schema_id)
        return self.inner.writer_schema(schema_id)

    def schema_id(self, subject: str, schema_text: str) -> int:
        """Answer without recording."""
        return self.inner.schema_id(subject, schema_text)


def iot_v1_bytes(table: StaticSchemas, **overrides: object) -> bytes:
    """An IoT record as a v1 producer wrote it."""
    v1 = IOT.versions[0]
    data = example_data(models.IotTelemetry, **overrides)
    return encode_unvalidated(v1, table.schema_id(IOT.subject, v1.text), data)


def test_encoded_bytes_carry_the_magic_byte_and_the_newest_schemas_id(
    schema_table: StaticSchemas,
) -> None:
    """Byte 0 is 0, bytes 1-4 the big-endian id of the topic's newest schema."""
    writer = serde.serializer(models.IotTelemetry, schema_table)

    payload = writer.encode(example(models.IotTelemetry))

    assert writer.schema_id == schema_table.schema_id(IOT.subject, IOT.newest.text)
    assert payload[:5] == b"\x00" + writer.schema_id.to_bytes(4, "big")


@pytest.mark.parametrize("model", [pytest.param(m, id=t) for t, m in MODELS.items()])
def test_every_record_round_trips_through_the_wire_format(
    schema_table: StaticSchemas, model: type[TopicRecord]
) -> None:
    """encode then decode gives the same validated record, for every topic."""
    record = example(model)
    payload = serde.serializer(model, schema_table).encode(record)

    assert serde.deserializer(model, schema_table).decode(payload, EXAMPLE_NOW_MS) == record


def test_old_v1_iot_bytes_decode_into_the_v2_model_with_defaults(
    schema_table: StaticSchemas,
) -> None:
    """A v1 writer's record reads as v2, the fields v1 lacked taking their defaults."""
    reader = serde.deserializer(models.IotTelemetry, schema_table)

    record = reader.decode(iot_v1_bytes(schema_table), EXAMPLE_NOW_MS)

    assert record == example(models.IotTelemetry, measured_temp_c=None, ev_soc_pct=None)


def test_writer_schemas_are_fetched_and_resolved_once_per_id(schema_table: StaticSchemas) -> None:
    """A thousand records of two writer ids cost two fetches; a bad id costs one."""
    table = CountingSchemas(schema_table)
    reader = serde.deserializer(models.IotTelemetry, table)
    v2 = serde.serializer(models.IotTelemetry, table).encode(example(models.IotTelemetry))
    v1 = iot_v1_bytes(schema_table)
    unknown = serde.wire_header(999) + v2[5:]

    for _ in range(500):
        reader.decode(v1, EXAMPLE_NOW_MS)
        reader.decode(v2, EXAMPLE_NOW_MS)
        with pytest.raises(serde.UnknownSchemaId):
            reader.decode(unknown, EXAMPLE_NOW_MS)

    assert sorted(table.fetches) == sorted(int.from_bytes(p[1:5]) for p in (v1, v2, unknown))


def frames(table: StaticSchemas) -> dict[str, bytes]:
    """Bad inputs of every kind, by name."""
    good = serde.serializer(models.IotTelemetry, table).encode(example(models.IotTelemetry))
    scada = serde.serializer(models.ScadaTelemetry, table)
    return {
        "empty": b"",
        "json": b'{"device_id": "x"}',
        "short header": b"\x00\x00\x01",
        "unknown id": serde.wire_header(10_000) + good[5:],
        "negative id": serde.wire_header(-2) + good[5:],
        "another record": scada.encode(example(models.ScadaTelemetry)),
        "cut body": good[:-4],
        "trailing bytes": good + b"\x00",
        "bad utf-8": good[:5] + b"\x1e\xff\xfe" + good[8:],
        "out of range": iot_v1_bytes(table, power_kw=250.0),
    }


@pytest.mark.parametrize(
    ("frame", "error", "has_id"),
    [
        ("empty", serde.Truncated, False),
        ("json", serde.BadMagic, False),
        ("short header", serde.Truncated, False),
        ("unknown id", serde.UnknownSchemaId, True),
        ("negative id", serde.UnknownSchemaId, True),
        ("another record", serde.ResolutionFailure, True),
        ("cut body", serde.Truncated, True),
        ("trailing bytes", serde.CorruptPayload, True),
        ("bad utf-8", serde.CorruptPayload, True),
        ("out of range", serde.ValidationFailure, True),
    ],
)
def test_each_bad_input_raises_its_typed_error_with_the_schema_id_when_known(
    schema_table: StaticSchemas, frame: str, error: type[serde.DecodeError], has_id: bool
) -> None:
    """Every failure is a DecodeError subclass saying what broke, with the header's id if read."""
    reader = serde.deserializer(models.IotTelemetry, schema_table)

    with pytest.raises(error) as caught:
        reader.decode(frames(schema_table)[frame], EXAMPLE_NOW_MS)

    assert (caught.value.schema_id is not None) == has_id


def test_a_validation_failure_names_the_field_and_its_value(schema_table: StaticSchemas) -> None:
    """The message says which field broke which rule, with the value."""
    reader = serde.deserializer(models.IotTelemetry, schema_table)
    payload = iot_v1_bytes(schema_table, device_class="POOL_PUMP", power_kw=9.5)

    with pytest.raises(serde.ValidationFailure, match=r"power_kw=9\.5 .*POOL_PUMP"):
        reader.decode(payload, EXAMPLE_NOW_MS)


def test_a_record_from_the_future_fails_against_the_given_clock(
    schema_table: StaticSchemas,
) -> None:
    """The same bytes are valid now and refused when the reader's clock is an hour earlier."""
    reader = serde.deserializer(models.IotTelemetry, schema_table)
    payload = iot_v1_bytes(schema_table)

    reader.decode(payload, EXAMPLE_NOW_MS)
    with pytest.raises(serde.ValidationFailure, match=r"ts_ms.*in the future"):
        reader.decode(payload, EXAMPLE_NOW_MS - 3_600_000)


@pytest.mark.parametrize(
    "record",
    [
        pytest.param(example_data(models.IotTelemetry), id="plain dict"),
        pytest.param(example(models.ScadaTelemetry), id="another model"),
    ],
)
def test_the_serializer_accepts_only_its_validated_model(
    schema_table: StaticSchemas, record: object
) -> None:
    """Dicts and other models are refused before any byte is written."""
    writer = serde.serializer(models.IotTelemetry, schema_table)

    with pytest.raises(TypeError, match="IotTelemetry"):
        writer.encode(record)  # type: ignore[arg-type]


def test_encode_data_validates_before_encoding(schema_table: StaticSchemas) -> None:
    """Plain data is validated first: out-of-range data never becomes bytes."""
    writer = serde.serializer(models.IotTelemetry, schema_table)
    good = example_data(models.IotTelemetry)

    assert writer.encode_data(good, EXAMPLE_NOW_MS) == writer.encode(example(models.IotTelemetry))
    with pytest.raises(ValueError, match="power_kw"):
        writer.encode_data({**good, "power_kw": 1e6}, EXAMPLE_NOW_MS)


def test_a_schema_the_source_lacks_cannot_make_a_serializer() -> None:
    """Without the newest schema registered there is no id to encode with."""
    with pytest.raises(LookupError, match=r"iot\.telemetry-value"):
        serde.serializer(models.IotTelemetry, StaticSchemas({}))


def test_an_unknown_id_is_asked_again_only_after_the_retry_interval(
    schema_table: StaticSchemas,
) -> None:
    """Unknown ids are remembered for UNKNOWN_ID_RETRY_S (replicas lag), then asked again."""
    table = CountingSchemas(schema_table)
    now = [0.0]
    newest = catalog.default().chain(topics.IOT_TELEMETRY).newest.schema
    reader = serde.Deserializer(models.IotTelemetry, table, newest, clock=lambda: now[0])
    payload = serde.wire_header(777) + b"\x00"

    for seconds in (0.0, serde.UNKNOWN_ID_RETRY_S - 1, serde.UNKNOWN_ID_RETRY_S + 1):
        now[0] = seconds
        with pytest.raises(serde.UnknownSchemaId):
            reader.decode(payload, EXAMPLE_NOW_MS)

    assert table.fetches == [777, 777]


@pytest.mark.parametrize(
    "writer_text", ['"string"', "syntax = 'proto3';", '{"type": "record", "name": "R"}']
)
def test_a_writer_schema_that_is_not_a_readable_avro_record_is_a_resolution_failure(
    writer_text: str,
) -> None:
    """A primitive, non-Avro or broken writer schema under an id dead-letters its records."""
    table = StaticSchemas({5: ("iot.telemetry-value", writer_text)})
    reader = serde.deserializer(models.IotTelemetry, table)

    with pytest.raises(serde.ResolutionFailure) as caught:
        reader.decode(serde.wire_header(5) + b"\x02a", EXAMPLE_NOW_MS)

    assert caught.value.schema_id == 5
