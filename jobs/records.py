"""The edges of a job: Kafka bytes to the stages' events (or dead letters), models to Avro bytes.

`Decode` turns each `INPUT_RECORD` into the pure events of `functions/`, or into a dead
letter on a side output: bad input never stalls a partition (DESIGN.md rule 9). `Encode`
writes every output model in the Confluent wire format with the id the registry gives its
newest schema. Both build their serdes once, in `open`.
"""

from __future__ import annotations

import dataclasses
import os
import random
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from pyflink.common import Row, Types
from pyflink.datastream import (
    MapFunction,
    OutputTag,
    ProcessFunction,
    RuntimeContext,
)

from functions import device, pipeline, region
from functions.operators import PICKLED
from gridstream import topics
from schemas import catalog, dead_letter, models, serde, telemetry
from schemas.registry import USER_INFO_ENV, Registry, RegistryConfig
from state.device import DeviceInfo

DEAD_LETTERS = OutputTag("dead-letters", PICKLED)
TIMED = Types.TUPLE([PICKLED, Types.LONG()])  # (event, its time)
KEYED = Types.ROW([Types.STRING(), PICKLED])  # (key, event): keyed in Java on field 0
TIMED_KEYED = Types.TUPLE([KEYED, Types.LONG()])
CONTROL = OutputTag("control", TIMED)
HEARTBEAT_MS = 1_000
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
    catalog's own numbering (collection-source tests, which encode with the same numbering)."""

    registry_url: str | None = None

    def source(self) -> serde.SchemaSource:
        """The schema source, built on the worker."""
        if self.registry_url is None:
            return serde.StaticSchemas.from_catalog(catalog.default())
        user_info = os.environ.get(USER_INFO_ENV) or None
        return Registry(RegistryConfig(self.registry_url, user_info)).schemas()


def _telemetry(record: models.ScadaTelemetry | models.IotTelemetry, cause: models.Cause) -> Any:
    return _reading(record.model_dump(), cause)


def _reading(record: Mapping[str, Any], cause: models.Cause) -> device.Telemetry:
    """The stage's reading from a telemetry record as a dict (decoded Avro or a model's dump)."""
    quality = record.get("quality")
    if quality is not None:  # SCADA
        good = not (
            quality["invalid"]
            or quality["not_topical"]
            or quality["substituted"]
            or quality["blocked"]
            or quality["overflow"]
        )
        closed = record["switch_closed"]
        is_on = closed if closed is not None else record["power_kw"] > 0
        override = False
    else:
        good, is_on, override = True, record["is_on"], record["customer_override"]
    return device.Telemetry(
        record["device_id"], record["ts_ms"], record["power_kw"], is_on, good, override,
        record["correlation_id"], cause,
    )  # fmt: skip


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
CONTROL_INPUTS = REGION_INPUTS + REGISTRY_RECORDS  # with the heartbeats, the control stream


def is_region_input(event: Any) -> bool:
    """Weather and DR events go straight to the region stage."""
    return isinstance(event, REGION_INPUTS)


def is_registry_record(event: Any) -> bool:
    """Registry records and their deletions go to the roster keeper (and the device stage)."""
    return isinstance(event, REGISTRY_RECORDS)


def is_device_input(event: Any) -> bool:
    """Telemetry, registry records (and their deletions) and approvals go to the device stage."""
    return isinstance(
        event,
        device.Telemetry | device.RegistryUpdate | device.Deregistration | device.Approval,
    )


def is_heartbeat(event: Any) -> bool:
    """A decoder's heartbeat, for the pipeline watch."""
    return isinstance(event, pipeline.Heartbeat)


def region_of(event: Any) -> str:
    """The region-stage key of a region input, a registry record or a roster leave."""
    return str(
        event.info.region_id if isinstance(event, device.RegistryUpdate) else event.region_id
    )


def keyed(event: Any) -> Row:
    """A device event as the device stage's input: `(device id, event)`, a `KEYED` row."""
    return Row(event.device_id, event)


class Decode(ProcessFunction):  # type: ignore[misc]
    """Input rows to `(value, event time)` pairs for the stages, in one pass per record.

    A tombstone on the compacted registry (null value) is the deletion of the device's
    record. Device inputs leave on the main output as `keyed` rows; region inputs, registry
    records and deletions (for the roster keeper too) and the watchdog's heartbeats (at most
    one a second per subtask, while telemetry flows) on `CONTROL`; what cannot be decoded or
    validated on `DEAD_LETTERS`. Routing here, with side outputs, keeps each record on one
    path: a filter per branch would make every branch's Python operator see every record.
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

    def open(self, runtime_context: RuntimeContext) -> None:
        source = self.schemas.source()
        self.deserializers = {
            topic: serde.deserializer(models.MODELS[topic], source) for topic in topics.INPUTS
        }
        # Thread mode's runtime context has no subtask index; any id unique per instance will do.
        self.subtask = random.getrandbits(31)
        self.newest = 0
        self.beat_ms = 0

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
        return _reading(record, cause) if telemetry.passes(model, record, now_ms) else None

    def process_element(self, value: Row, ctx: ProcessFunction.Context) -> Iterator[Any]:
        topic, partition, offset, ts_ms, key, raw, correlation_id = value
        now_ms = int(time.time() * 1000)
        cause = models.Cause(source_topic=topic, source_partition=partition, source_offset=offset)
        events: Iterable[Any]
        reading = self._fast_reading(topic, raw, cause, now_ms)
        deleted = reading is None and topic == topics.DEVICE_REGISTRY and raw is None and bool(key)
        if reading is not None:
            events = (reading,)
        elif deleted:  # a deleted CIS record
            device_id = bytes(key).decode("utf-8", "replace")
            events = (device.Deregistration(device_id, correlation_id, cause, ts_ms),)
        else:
            source = _source(value)
            decoder = self.deserializers.get(topic)
            if decoder is None:
                error = serde.DecodeError(f"topic {topic!r} is not an input of this job")
                yield DEAD_LETTERS, dead_letter.build(source, error, self.job, now_ms)
                return
            record = dead_letter.decode_or_dead_letter(decoder, source, self.job, now_ms)
            if isinstance(record, models.DeadLetter):
                yield DEAD_LETTERS, record
                return
            events = tuple(events_of(record, cause))
        if not deleted:  # a tombstone's time is Kafka's, not the sender's
            ahead = max((event.ts_ms for event in events), default=now_ms) - now_ms
            if ahead > self.max_clock_skew_ms:
                error = ClockSkewError(
                    f"{topic}: event time is {ahead} ms ahead of the job's clock (max clock skew"
                    f" {self.max_clock_skew_ms} ms): fix the sender's clock"
                )
                yield DEAD_LETTERS, dead_letter.build(_source(value), error, self.job, now_ms)
                return
        for event in events:
            # Event time for the watermark never runs ahead of the job's clock: a record
            # within the skew keeps its own time but cannot move anyone else's.
            stamp = min(event.ts_ms, now_ms)
            if is_device_input(event):
                yield keyed(event), stamp
            if isinstance(event, CONTROL_INPUTS):
                yield CONTROL, (event, stamp)
            if isinstance(event, device.Telemetry):
                yield from self._heartbeat(stamp, now_ms)

    def _heartbeat(self, event_ms: int, now_ms: int) -> Iterator[Any]:
        self.newest = max(self.newest, event_ms)
        if now_ms - self.beat_ms >= HEARTBEAT_MS:
            self.beat_ms = now_ms
            yield CONTROL, (pipeline.Heartbeat(self.subtask, now_ms, self.newest), self.newest)


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

    def map(self, value: models.TopicRecord) -> Row:
        value_bytes = self.serializers[type(value)].encode(value)
        return Row(value.TOPIC, output_key(value), value_bytes, value.correlation_id)  # type: ignore[attr-defined]
