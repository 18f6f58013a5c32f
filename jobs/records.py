"""The edges of a job: Kafka bytes to the stages' events (or dead letters), models to Avro bytes.

`Decode` turns each `INPUT_RECORD` into the pure events of `functions/`, or into a dead
letter on a side output: bad input never stalls a partition (DESIGN.md rule 9). `Encode`
writes every output model in the Confluent wire format with the id the registry gives its
newest schema. Both build their serdes once, in `open`.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from pydantic import TypeAdapter
from pyflink.common import Row, Types
from pyflink.datastream import (
    MapFunction,
    OutputTag,
    ProcessFunction,
    RuntimeContext,
)

from functions import device, metrics, pipeline, region
from functions.operators import PICKLED, Meters
from gridstream import topics
from schemas import catalog, dead_letter, models, serde, telemetry
from schemas.registry import USER_INFO_ENV, Registry, RegistryConfig
from state.device import DeviceInfo

DEAD_LETTERS = OutputTag("dead-letters", PICKLED)
TIMED = Types.TUPLE([PICKLED, Types.LONG()])  # (event, its time)
# The events other stages make for a device (DR activations, approvals) join the device
# stage's Kafka rows (`jobs.io.DEVICE_ROW`) pickled under this topic.
INTERNAL_TOPIC = "gridstream.internal"
MAX_CLOCK_SKEW_MS = 5_000  # see `ClockSkewError`


class ClockSkewError(ValueError):
    """A record stamped further ahead of the job's clock than the configured skew.

    It is dead-lettered rather than used: its time would move the watermark, and with it every
    other device's and region's clock (SCADA points declared silent, real weather masked). The
    default of 5 s is a third of the SCADA telemetry timeout (15 s), the most a record within
    the bound can hide its own device's silence by; NTP keeps a device within milliseconds,
    so a clock seconds ahead is a fault to fix at the device, not data to act on.
    """


@dataclasses.dataclass(frozen=True)
class SchemaAccess:
    """Where the job's serdes find schema ids: the registry at `registry_url`, or (None) the
    catalog's own numbering (collection-source tests, which encode with the same numbering).
    A schema id the registry lacks or cannot give is asked again for `id_wait_ms` before its
    record is dead-lettered or the job fails (`serde.Deserializer`); a fixed table never
    learns a new id, so it is never waited for."""

    registry_url: str | None = None
    id_wait_ms: int = 0

    @property
    def wait(self) -> serde.IdWait:
        """How long a decoder waits for a new schema id."""
        if self.registry_url is None:
            return serde.IdWait()
        return serde.IdWait(window_s=self.id_wait_ms / 1000)

    def source(self) -> serde.SchemaSource:
        """The schema source, built on the worker."""
        if self.registry_url is None:
            return serde.StaticSchemas.from_catalog(catalog.default())
        user_info = os.environ.get(USER_INFO_ENV) or None
        return Registry(RegistryConfig(self.registry_url, user_info)).schemas()


def _telemetry(record: models.ScadaTelemetry | models.IotTelemetry, cause: models.Cause) -> Any:
    return device.telemetry_of(record.model_dump(), cause)


TELEMETRY_MODELS: Mapping[str, type[models.TopicRecord]] = {
    topics.SCADA_TELEMETRY: models.ScadaTelemetry,
    topics.IOT_TELEMETRY: models.IotTelemetry,
}


ENDED = frozenset({models.EventStatus.CANCELLED, models.EventStatus.COMPLETED})  # let go now


def events_of(record: models.TopicRecord, cause: models.Cause) -> Iterator[Any]:
    """The stage events one decoded input record stands for (a DR event: one per region)."""
    if isinstance(record, models.ScadaTelemetry | models.IotTelemetry):
        yield _telemetry(record, cause)
    elif isinstance(record, models.DeviceRecord):
        info = DeviceInfo(
            record.device_class, record.priority_level, record.region_id, record.programs,
            record.rated_power_kw,
        )  # fmt: skip
        yield device.RegistryUpdate(
            record.device_id, info, record.correlation_id, cause, record.updated_ts_ms
        )
    elif isinstance(record, models.WeatherObservation):
        yield region.WeatherInput(
            record.region_id, record.ts_ms, record.dry_bulb_temp_c, record.relative_humidity_pct,
            record.wbgt_temp_c, record.correlation_id, cause,
        )  # fmt: skip
    elif isinstance(record, models.DrEvent):
        event = region.RegionEvent(
            record.event_id, record.program_id, record.action, record.start_ts_ms,
            record.end_ts_ms, record.priority, record.status in ENDED, record.correlation_id,
            cause, record.setpoint_offset_c, record.curtailment_pct, record.issued_ts_ms,
        )  # fmt: skip
        for region_id in record.target_region_ids:
            yield region.EventForRegion(region_id, record.issued_ts_ms, event)
    elif isinstance(record, models.OperatorApproval):
        yield device.Approval(
            record.device_id, record.recommendation_id, record.decision, record.operator_id,
            record.correlation_id, cause, record.ts_ms,
        )  # fmt: skip


REGION_INPUTS = (region.WeatherInput, region.EventForRegion)
REGISTRY_RECORDS = (device.RegistryUpdate, device.Deregistration)


def is_region_input(event: Any) -> bool:
    """Weather and DR events go straight to the region stage."""
    return isinstance(event, REGION_INPUTS)


def is_registry_record(event: Any) -> bool:
    """Registry records and their deletions go to the roster keeper (the device stage reads
    them from Kafka itself)."""
    return isinstance(event, REGISTRY_RECORDS)


def is_heartbeat(event: Any) -> bool:
    """A heartbeat of the device inputs, for the pipeline watch."""
    return isinstance(event, pipeline.Heartbeat)


def is_approval(event: Any) -> bool:
    """An operator's answer, for the device stage."""
    return isinstance(event, device.Approval)


def region_of(event: Any) -> str:
    """The region-stage key of a region input, a registry record or a roster leave."""
    return str(
        event.info.region_id if isinstance(event, device.RegistryUpdate) else event.region_id
    )


def heartbeat(beat: Row) -> tuple[pipeline.Heartbeat, int]:
    """A second's `(newest ms,)` of the telemetry rows as the pipeline watch's heartbeat,
    stamped with that newest time (never later than the job's clock)."""
    now_ms = int(time.time() * 1000)
    newest = min(int(beat[0]), now_ms)
    return pipeline.Heartbeat(0, now_ms, newest), newest


class KeyMismatchError(ValueError):
    """A device record whose Kafka key is not its `device_id`: keyed by the key, it would reach
    another device's state. The producer must key each record by its device (DESIGN.md)."""


class TombstoneKeyError(ValueError):
    """A tombstone (null value) on the registry whose key is no device id (UTF-8, 1 to 128
    characters, no whitespace): it deletes no device, and a state kept under that key would
    fail the device stage when its timer fires."""


_DEVICE_ID: TypeAdapter[str] = TypeAdapter(models.Id)


class Decoder:
    """One input row to the stage events it stands for, or a dead letter; never raises.

    A tombstone on the compacted registry (null value) is the deletion of the device's
    record, when its key is a device id (else `TombstoneKeyError`). Telemetry takes a fast
    path (`schemas.telemetry`) and falls back to the models' validation for anything it is
    not sure of. A record stamped beyond `max_clock_skew_ms`
    ahead of the job's clock is dead-lettered (`ClockSkewError`). Built once per task:
    `open` makes the serdes on the worker.
    """

    def __init__(
        self,
        schemas: SchemaAccess,
        job: dead_letter.JobInfo,
        max_clock_skew_ms: int = MAX_CLOCK_SKEW_MS,
    ) -> None:
        self.schemas = schemas
        self.job = job
        self.max_clock_skew_ms = max_clock_skew_ms

    def open(self, on_waited: Callable[[serde.Waited], None] | None = None) -> None:
        """Build the deserializers (on the worker: the registry is reached from there);
        `on_waited` hears how each wait for a new schema id ended."""
        source = self.schemas.source()
        self.deserializers = {
            topic: serde.deserializer(
                models.MODELS[topic], source, wait=self.schemas.wait, on_waited=on_waited
            )
            for topic in topics.INPUTS
        }

    def _fast_reading(
        self, topic: str, raw: bytes | None, cause: models.Cause, now_ms: int
    ) -> device.Telemetry | None:
        """A reading decoded and range-checked without a model (`schemas.telemetry`), or None:
        not telemetry, or not surely valid, for the full path to validate or dead-letter."""
        model = TELEMETRY_MODELS.get(topic)
        if model is None or raw is None:
            return None
        try:
            _, record = self.deserializers[topic].read(raw)
        except serde.DecodeError:
            return None  # the full path dead-letters it, with the same error
        return (
            device.telemetry_of(record, cause) if telemetry.passes(model, record, now_ms) else None
        )

    def decode(
        self, value: Row, now_ms: int, keyed: bool = False
    ) -> tuple[Any, ...] | models.DeadLetter:
        """The events of one `INPUT_RECORD` row, or its dead letter. With `keyed`, the row was
        keyed by its Kafka key: an event of another device is refused (`KeyMismatchError`)."""
        topic, partition, offset, ts_ms, key, raw, correlation_id = value
        cause = models.Cause(source_topic=topic, source_partition=partition, source_offset=offset)
        events: tuple[Any, ...]
        reading = self._fast_reading(topic, raw, cause, now_ms)
        deleted = reading is None and topic == topics.DEVICE_REGISTRY and raw is None and bool(key)
        if reading is not None:
            events = (reading,)
        elif deleted:  # a deleted CIS record
            try:
                device_id = _DEVICE_ID.validate_python(bytes(key).decode("utf-8"))
            except ValueError as err:  # not UTF-8, or not an id (pydantic's error is one)
                error = TombstoneKeyError(
                    f"{topic}: a tombstone keyed {bytes(key)[:80]!r}, not a device id"
                    f" ({type(err).__name__}): key each deletion by its device_id"
                )
                return dead_letter.build(_source(value), error, self.job, now_ms)
            events = (device.Deregistration(device_id, correlation_id, cause, ts_ms),)
        else:
            decoder = self.deserializers.get(topic)
            if decoder is None:
                error = serde.DecodeError(f"topic {topic!r} is not an input of this job")
                return dead_letter.build(_source(value), error, self.job, now_ms)
            record = dead_letter.decode_or_dead_letter(decoder, _source(value), self.job, now_ms)
            if isinstance(record, models.DeadLetter):
                return record
            events = tuple(events_of(record, cause))
        if not deleted:  # a tombstone's time is Kafka's, not the sender's
            ahead = max((event.ts_ms for event in events), default=now_ms) - now_ms
            if ahead > self.max_clock_skew_ms:
                error: Exception = ClockSkewError(
                    f"{topic}: event time is {ahead} ms ahead of the job's clock (max clock skew"
                    f" {self.max_clock_skew_ms} ms): fix the sender's clock"
                )
                return dead_letter.build(_source(value), error, self.job, now_ms)
        if keyed:
            named = bytes(key or b"").decode("utf-8", "replace")
            strays = [e.device_id for e in events if e.device_id != named]
            if strays:
                error = KeyMismatchError(
                    f"{topic}: a record of device {strays[0]!r} keyed {named!r}: key each record"
                    " by its device_id"
                )
                return dead_letter.build(_source(value), error, self.job, now_ms)
        return events


class Decode(ProcessFunction):  # type: ignore[misc]
    """Input rows (the control topics: weather, DR events, the registry, approvals) to
    `(event, event time)` pairs for the control stages, dead letters on `DEAD_LETTERS`; a
    registry record that does not decode is left to the device stage, which reads it too and
    dead-letters it (once).

    An event's time for the watermark never runs ahead of the job's clock: a record within the
    skew keeps its own time but cannot move anyone else's.
    """

    def __init__(self, decoder: Decoder) -> None:
        self.decoder = decoder

    def open(self, runtime_context: RuntimeContext) -> None:
        self.meters = Meters(runtime_context)
        self.decoder.open(self.meters.waited)

    def process_element(self, value: Row, ctx: ProcessFunction.Context) -> Iterator[Any]:
        now_ms = int(time.time() * 1000)
        decoded = self.decoder.decode(value, now_ms)
        if isinstance(decoded, models.DeadLetter):
            if value[0] not in topics.DEVICE_KEYED_INPUTS:  # the device stage letters those
                yield DEAD_LETTERS, decoded
            return
        for event in decoded:
            yield event, min(event.ts_ms, now_ms)


def event_row(event: Any) -> Row:
    """An event another stage made for a device (a DR activation, an approval) as a
    `DEVICE_ROW`, so it joins the device stage's one keyed input."""
    data = pickle.dumps(event, protocol=pickle.HIGHEST_PROTOCOL)
    key = event.device_id
    record = Row(INTERNAL_TOPIC, 0, 0, event.ts_ms, key.encode(), data, event.correlation_id)
    return Row(key, record, None)  # its event time travels with the control stream's


class DeviceRows(Decoder):
    """The device stage's input rows to its events: Kafka records decoded (and checked against
    their key), the events other stages made unpickled (they never left the job)."""

    def events(self, value: Row, now_ms: int) -> tuple[Any, ...] | models.DeadLetter:
        """The events of one `DEVICE_ROW`'s record, or its dead letter."""
        if value[0] == INTERNAL_TOPIC:
            return (pickle.loads(value[5]),)  # noqa: S301 (made by this job, never from Kafka)
        return self.decode(value, now_ms, keyed=True)


def _source(value: Row) -> dead_letter.SourceRecord:
    """An input row as the dead-letter builder reads it."""
    topic, partition, offset, ts_ms, key, raw, correlation_id = value
    return dead_letter.SourceRecord(
        topic, partition, offset, ts_ms, key, raw,
        [(dead_letter.CORRELATION_HEADER, correlation_id)],
    )  # fmt: skip


def output_key(record: models.TopicRecord) -> bytes | None:
    """The Kafka key of an output record (DESIGN.md "Topics")."""
    if isinstance(record, models.DeadLetter):
        return record.key
    if isinstance(record, models.Alert):
        return (record.device_id or record.region_id or "").encode()
    return str(record.device_id).encode()


class Encode(MapFunction):  # type: ignore[misc]
    """Output models to `OUTPUT_RECORD` rows: topic, key, Avro value, correlation id."""

    def __init__(self, schemas: SchemaAccess) -> None:
        self.schemas = schemas

    def open(self, runtime_context: RuntimeContext) -> None:
        source = self.schemas.source()
        self.serializers = {
            models.MODELS[topic]: serde.serializer(models.MODELS[topic], source)
            for topic in topics.OUTPUTS
        }
        self.meters = Meters(runtime_context)

    def map(self, value: models.TopicRecord) -> Row:
        for tally in metrics.output_tallies(value):
            self.meters.count(tally)
        value_bytes = self.serializers[type(value)].encode(value)
        return Row(value.TOPIC, output_key(value), value_bytes, value.correlation_id)  # type: ignore[attr-defined]
