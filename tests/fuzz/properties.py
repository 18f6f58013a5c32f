"""What the job's edge must do with any Kafka record: events of a valid record, or a dead letter.

`check(topic, data)` plays one fuzzer input (`record_of` frames it as a key, a correlation
header and a value) through the decoders the job runs for `topic` (`jobs.records`) and raises
`PropertyViolation` when the outcome is neither events of a record the topic's model accepts
nor a well-formed dead letter that names its error and carries the record's bytes. A device's
events are then stepped by the device stage's logic (`functions.device.step`) from an empty
state, and every timer that leaves is fired: an event the edge lets through must not fail the
stage later. Any exception escaping is a finding too: the job would fail on that record, and
on its restart again.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

from pyflink.common import Row

from functions import device
from functions.wetbulb import RegionMode
from gridstream import topics
from jobs.io import input_row
from jobs.records import MAX_CLOCK_SKEW_MS, Decoder, DeviceRows, SchemaAccess
from schemas import models, serde
from schemas.dead_letter import JobInfo
from schemas.examples import EXAMPLE_NOW_MS
from schemas.models import MAX_KEY_BYTES, MAX_PAYLOAD_BYTES, DeadLetter
from tests.fuzz import records

NOW_MS = EXAMPLE_NOW_MS  # the job's clock for every input: a finding replays the same way
PARTITION, OFFSET = 3, 1_234_567
JOB = JobInfo("fuzz", "0")
NO_VALUE, NO_KEY, WITH_CORRELATION, BUILT = 1, 2, 4, 8  # bits of the input's first byte


class PropertyViolation(AssertionError):
    """The decoders' answer to one record breaks the edge's contract (DESIGN.md rule 9)."""


@dataclasses.dataclass(frozen=True)
class KafkaRecord:
    """One consumed record as the job's SQL source hands it over."""

    key: bytes | None
    value: bytes | None
    correlation_id: str | None


def record_of(topic: str, data: bytes) -> KafkaRecord:
    """The record a fuzzer input stands for: a flags byte, the key's and the correlation id's
    lengths (a byte each), the key, the correlation id, then the value to the end. With the
    `BUILT` flag the value is instead a record built from those bytes (`tests.fuzz.records`),
    keyed by its own key field when the key is empty."""
    flags, key_len, corr_len = data[:3].ljust(3, b"\0")
    key = data[3 : 3 + key_len]
    corr = data[3 + key_len : 3 + key_len + corr_len]
    value = data[3 + key_len + corr_len :]
    if flags & BUILT:
        value, fields = records.value_of(topic, value)
        own_key = str(fields.get(records.KEY_FIELDS[topic], ""))
        key = key or own_key.encode("utf-8", "surrogatepass")
    return KafkaRecord(
        None if flags & NO_KEY else key,
        None if flags & NO_VALUE else value,
        corr.decode("utf-8", "replace") if flags & WITH_CORRELATION else None,
    )


def frame(
    key: bytes | None, value: bytes | None, correlation_id: bytes | None = None, built: bool = False
) -> bytes:
    """The fuzzer input `record_of` reads as this record (seeds and regression tests); with
    `built`, `value` is the bytes a record is built from."""
    flags = (value is None) * NO_VALUE | (key is None) * NO_KEY | built * BUILT
    flags |= (correlation_id is not None) * WITH_CORRELATION
    key, corr = key or b"", correlation_id or b""
    return bytes([flags, len(key), len(corr)]) + key + corr + (value or b"")


@dataclasses.dataclass(frozen=True)
class Edge:
    """The job's decoders (the device stage's and the control one) and plain serdes."""

    device_rows: DeviceRows
    control: Decoder
    readers: dict[str, serde.Deserializer[Any]]
    dlq_writer: serde.Serializer[DeadLetter]
    dlq_reader: serde.Deserializer[DeadLetter]


@functools.cache
def edge() -> Edge:
    """The edge under the catalog's schema numbering, opened once a process."""
    device_rows, control = DeviceRows(SchemaAccess(), JOB), Decoder(SchemaAccess(), JOB)
    device_rows.open()
    control.open()
    source = SchemaAccess().source()
    readers = {t: serde.deserializer(models.MODELS[t], source) for t in topics.INPUTS}
    return Edge(
        device_rows,
        control,
        readers,
        serde.serializer(DeadLetter, source),
        serde.deserializer(DeadLetter, source),
    )


def _require(holds: bool, what: str, record: KafkaRecord) -> None:
    if not holds:
        raise PropertyViolation(f"{what}: {record}")


def _check_letter(topic: str, letter: DeadLetter, record: KafkaRecord) -> None:
    """The letter names its error and source and keeps the bytes; it survives the DLQ's wire."""
    value = record.value or b""
    _require(letter.error_class != "" and letter.error_message != "", "letter lacks a why", record)
    _require(letter.payload == value[:MAX_PAYLOAD_BYTES], "letter lost the value", record)
    _require(letter.payload_length == len(value), "letter misstates the value's length", record)
    key = None if record.key is None else record.key[:MAX_KEY_BYTES]
    _require(letter.key == key, "letter lost the key", record)
    where = (letter.source_topic, letter.source_partition, letter.source_offset)
    _require(where == (topic, PARTITION, OFFSET), f"letter misplaces its source {where}", record)
    back = edge().dlq_reader.decode(edge().dlq_writer.encode(letter), NOW_MS)
    _require(back == letter, "letter does not survive the DLQ's Avro", record)


def _check_events(topic: str, events: tuple[Any, ...], record: KafkaRecord, keyed: bool) -> None:
    """Events only of a record the model accepts (or a registry tombstone), within the skew."""
    _require(bool(events), "no events and no dead letter", record)
    if record.value is None:  # only a registry tombstone with a key is a record without a value
        _require(topic == topics.DEVICE_REGISTRY and bool(record.key), "null value", record)
    else:
        _, data = edge().readers[topic].read(record.value)
        try:
            models.validate(models.MODELS[topic], data, NOW_MS)
        except ValueError as err:  # pydantic's ValidationError is one
            message = f"events of a record the model refuses ({err}): {record}"
            raise PropertyViolation(message) from err
    for event in events:
        ahead = event.ts_ms - NOW_MS
        _require(ahead <= MAX_CLOCK_SKEW_MS, "an event from beyond the clock skew", record)
        if keyed:
            named = (record.key or b"").decode("utf-8", "replace")
            _require(event.device_id == named, "an event of another key's device", record)


def _step_device(event: Any) -> None:
    """The device stage's step over `event` from an empty state, then each timer it leaves."""
    policy = device.DevicePolicy()
    result = device.step(None, event, device.Context(NOW_MS, RegionMode.NORMAL, policy=policy))
    for ts_ms in sorted(device.timers_for(result.state, policy)):
        timer = device.Timer(event.device_id, ts_ms)
        device.step(result.state, timer, device.Context(ts_ms, RegionMode.NORMAL, policy=policy))


def check(topic: str, data: bytes) -> None:
    """Play one fuzzer input on `topic` through each decoder the job runs for it.

    Raises:
        PropertyViolation: the outcome breaks the contract (the message names how).
    """
    record = record_of(topic, data)
    row: Row = input_row(
        topic, PARTITION, OFFSET, NOW_MS, record.key, record.value, record.correlation_id
    )
    outcomes = []
    if topic in topics.DEVICE_KEYED_INPUTS:
        outcomes.append((edge().device_rows.events(row, NOW_MS), True))
    if topic in topics.CONTROL_INPUTS:
        outcomes.append((edge().control.decode(row, NOW_MS), False))
    for outcome, keyed in outcomes:
        if isinstance(outcome, DeadLetter):
            _check_letter(topic, outcome, record)
        else:
            _check_events(topic, outcome, record, keyed)
            for event in outcome if keyed else ():  # the device stage's own events
                _step_device(event)
