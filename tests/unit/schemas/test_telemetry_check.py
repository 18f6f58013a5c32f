"""The compiled telemetry check agrees with the Pydantic models on a corpus, and the decoder's
fast path dead-letters exactly what the full path does, with the same reason."""

from __future__ import annotations

import math
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from jobs.io import input_row
from jobs.records import Decoder, SchemaAccess
from schemas import catalog, dead_letter, models, serde, telemetry
from schemas.examples import encode_unvalidated, example_data
from schemas.models import POWER_LIMITS_KW, IotTelemetry, ScadaTelemetry
from tests.vocabulary import examples

pytestmark = pytest.mark.unit

NOW = 1_750_000_000_000
JOB = dead_letter.JobInfo("test", "0")
SPACES = "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u200a\u2028\u2029\u202f\u205f\u3000"
NOT_SPACES = "\x1c\x1f_-."  # Python's \s takes U+001C-U+001F; the models' pattern does not


def floats_near(*edges: float) -> st.SearchStrategy[float]:
    """Any float, mostly at, just inside or just outside `edges`, NaN and infinities too."""
    near = [x for e in edges for x in (e, math.nextafter(e, -9e99), math.nextafter(e, 9e99))]
    return st.sampled_from([*near, math.nan, math.inf, -math.inf]) | st.floats()


ids = st.sampled_from(["", "x" * 128, "x" * 129, "dev-1"]) | st.text(
    alphabet=st.sampled_from(f"ab{SPACES}{NOT_SPACES}"), max_size=6
)
labels = st.sampled_from(["", "x" * 64, "x" * 65, "4.2.1", " "])
times = st.sampled_from(
    [
        models.MIN_TS_MS - 1,
        models.MIN_TS_MS,
        NOW,
        NOW + models.MAX_FUTURE_SKEW_MS,
        NOW + models.MAX_FUTURE_SKEW_MS + 1,
        models.MAX_TS_MS,
        models.MAX_TS_MS + 1,
    ]
) | st.integers(-(2**63), 2**63 - 1)
limits = [x for pair in POWER_LIMITS_KW.values() for x in pair]
wrong = st.sampled_from([None, "1", 1, True, b"x", [], {}])  # types Avro would never give


COMMON: dict[str, st.SearchStrategy[Any]] = {
    "device_id": ids,
    "device_class": st.sampled_from([*POWER_LIMITS_KW.keys(), "SPACESHIP"]),
    "ts_ms": times,
    "correlation_id": ids,
    "power_kw": floats_near(*limits),
}


def optional(*edges: float) -> st.SearchStrategy[Any]:
    return st.none() | floats_near(*edges)


def maybe_wrong(values: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return values | values | values | wrong


@st.composite
def iot_records(draw: st.DrawFn, typed: bool = True) -> dict[str, Any]:
    """IoT telemetry as the Avro reader decodes it (`typed`), or with any type in any field."""
    f = (lambda s: s) if typed else maybe_wrong
    base = example_data(IotTelemetry)
    valid = draw(st.booleans())  # half of them valid but for the odd field
    fields: dict[str, Any] = {
        **COMMON,
        "is_on": st.booleans(),
        "setpoint_c": optional(*models.SETPOINT_C_RANGE),
        "customer_override": st.booleans(),
        "firmware_version": labels,
        "measured_temp_c": optional(*models.TEMP_C_RANGE),
        "ev_soc_pct": optional(*models.PERCENT_RANGE),
    }
    record = dict(base)
    for name, values in fields.items():
        if not valid or draw(st.integers(0, 9)) == 0:
            record[name] = draw(f(values))
    return record


@st.composite
def scada_records(draw: st.DrawFn, typed: bool = True) -> dict[str, Any]:
    """SCADA telemetry as the Avro reader decodes it (`typed`), or with any type in any field."""
    f = (lambda s: s) if typed else maybe_wrong
    record = dict(example_data(ScadaTelemetry))
    record["quality"] = dict(record["quality"])
    valid = draw(st.booleans())
    fields: dict[str, Any] = {
        **COMMON,
        "voltage_kv": optional(*models.VOLTAGE_KV_RANGE),
        "switch_closed": st.none() | st.booleans(),
    }
    for name, values in fields.items():
        if not valid or draw(st.integers(0, 9)) == 0:
            record[name] = draw(f(values))
    for bit in record["quality"]:
        record["quality"][bit] = draw(f(st.booleans()))
    return record


def accepted(model: type[models.TopicRecord], record: dict[str, Any], now: int) -> bool:
    try:
        models.validate(model, record, now)
    except ValidationError:
        return False
    return True


@settings(max_examples=examples(3000), deadline=None)
@given(st.sampled_from([IotTelemetry, ScadaTelemetry]), st.data())
def test_the_compiled_check_accepts_exactly_what_the_models_accept(
    model: type[models.TopicRecord], data: st.DataObject
) -> None:
    """On records typed as the Avro schema types them (ranges at and beyond each limit, NaN,
    infinities, empty, long and spaced ids, events from the future), the check and Pydantic
    give the same answer."""
    record = data.draw(iot_records() if model is IotTelemetry else scada_records())
    assert telemetry.passes(model, record, NOW) == accepted(model, record, NOW), record


@settings(max_examples=examples(1500), deadline=None)
@given(st.sampled_from([IotTelemetry, ScadaTelemetry]), st.data())
def test_the_compiled_check_never_passes_what_the_models_refuse_whatever_the_types(
    model: type[models.TopicRecord], data: st.DataObject
) -> None:
    """With any type in any field (what Avro never gives), a record the check passes is one
    Pydantic accepts; the others go the full way, which decides."""
    record = data.draw(iot_records(False) if model is IotTelemetry else scada_records(False))
    if telemetry.passes(model, record, NOW):
        assert accepted(model, record, NOW), record


def full_path(model: type[models.TopicRecord], row: Any, now: int) -> Any:
    """What the decoder did before the fast path: Pydantic, or the dead letter it describes."""
    deserializer = serde.deserializer(model, serde.StaticSchemas.from_catalog(catalog.default()))
    topic, partition, offset, ts_ms, key, raw, corr = row
    source = dead_letter.SourceRecord(
        topic, partition, offset, ts_ms, key, raw, [(dead_letter.CORRELATION_HEADER, corr)]
    )
    return dead_letter.decode_or_dead_letter(deserializer, source, JOB, now)


@settings(max_examples=examples(400), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from([IotTelemetry, ScadaTelemetry]), st.data())
def test_the_decoder_dead_letters_what_the_full_path_does_with_the_same_reason(
    model: type[models.TopicRecord], data: st.DataObject
) -> None:
    """Encoded readings through `Decode`: a dead letter exactly where validation refuses, with
    Pydantic's reason; otherwise the same reading as the model would give."""
    now = int(time.time() * 1000)
    record = data.draw(iot_records() if model is IotTelemetry else scada_records())
    for name in ("ts_ms",):  # times relative to the decoder's clock, which is the wall clock
        record[name] = now + (record[name] - NOW) if abs(record[name] - NOW) < 10**9 else now
    chain = catalog.default().chain(model.TOPIC)
    table = serde.StaticSchemas.from_catalog(catalog.default())
    schema_id = table.schema_id(chain.subject, chain.newest.text)
    raw = encode_unvalidated(chain.newest, schema_id, record)
    row = input_row(model.TOPIC, 0, 5, now, b"k", raw, "corr-1")
    decoder = Decoder(SchemaAccess(), JOB, max_clock_skew_ms=10 * models.MAX_FUTURE_SKEW_MS)
    decoder.open()
    decoded = decoder.decode(row, now)
    expected = full_path(model, row, now)
    if isinstance(expected, models.DeadLetter):
        assert isinstance(decoded, models.DeadLetter)
        assert (decoded.error_class, decoded.error_message) == (
            expected.error_class,
            expected.error_message,
        )
    else:
        assert not isinstance(decoded, models.DeadLetter)
        (reading,) = decoded
        assert (reading.device_id, reading.ts_ms, reading.power_kw, reading.correlation_id) == (
            expected.device_id,
            expected.ts_ms,
            expected.power_kw,
            expected.correlation_id,
        )
