"""Play telemetry into Kafka and read the job's audit trail back: the foundation's round trip.

Used by `make run` (the demo) and by the `stack` test that proves exactly-once delivery. With
`junk`, a share of the records are poison pills (`JUNK_KINDS`) whose dead letters are read back
too and matched to them by position (`tests/stack/test_poison_pill.py`,
`benchmarks/poison_bench.py`).
"""

from __future__ import annotations

import dataclasses
import statistics
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from confluent_kafka import Consumer, Message, Producer

from gridstream import topics
from gridstream.config import Settings, kafka_client_config
from gridstream.scenario import end_offsets, produce
from schemas import catalog, models, serde
from schemas.dead_letter import CORRELATION_HEADER
from schemas.examples import encode_unvalidated
from schemas.registry import Registry, RegistryConfig

Position = tuple[int, int]  # (partition, offset) of a record in iot.telemetry
UNKNOWN_SCHEMA_ID = 2**31 - 1  # no registry hands out the last id of the range
# What each kind of poison pill is, and the error its dead letter must name.
JUNK_KINDS: Mapping[str, str] = {
    "bad magic byte": "BadMagic",
    "unknown schema id": "UnknownSchemaId",
    "truncated Avro": "Truncated",
    "valid Avro, invalid record": "ValidationFailure",
    "out-of-range power": "ValidationFailure",
    "empty value": "Truncated",
    "null value": "Truncated",
}


@dataclasses.dataclass(frozen=True)
class Junk:
    """A poison pill: a record of `iot.telemetry` that no decoder can use."""

    kind: str
    value: bytes | None

    @property
    def error_class(self) -> str:
        """The error its dead letter names."""
        return JUNK_KINDS[self.kind]


def junk(kind: str, reading: models.IotTelemetry, encoder: serde.Serializer[Any]) -> Junk:
    """A poison pill of `kind` made from a good reading."""
    good = encoder.encode(reading)
    newest = catalog.default().chain(topics.IOT_TELEMETRY).newest

    def unvalidated(**fields: Any) -> bytes:
        data = {**reading.model_dump(mode="json"), **fields}
        return encode_unvalidated(newest, encoder.schema_id, data)

    values: Mapping[str, Callable[[], bytes | None]] = {
        "bad magic byte": lambda: b"\x01" + good[1:],
        "unknown schema id": lambda: serde.wire_header(UNKNOWN_SCHEMA_ID) + good[5:],
        "truncated Avro": lambda: good[:8],  # the device id's length, then 3 of its bytes
        "valid Avro, invalid record": lambda: unvalidated(device_class="TOASTER"),
        "out-of-range power": lambda: unvalidated(power_kw=999.0),
        "empty value": lambda: b"",
        "null value": lambda: None,
    }
    return Junk(kind, values[kind]())


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (nearest rank) of `values`; NaN when there are none."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


@dataclasses.dataclass(frozen=True)
class RoundTripReport:
    """What came back for one run's records."""

    sent: int
    received: int
    duplicates: int
    missing: int
    seconds: float
    latencies_ms: tuple[float, ...]
    junk: Mapping[Position, Junk] = dataclasses.field(default_factory=dict)
    letters: Mapping[Position, tuple[models.DeadLetter, ...]] = dataclasses.field(
        default_factory=dict
    )  # the dead letters of this run's records, by the position of the record

    @property
    def events_per_s(self) -> float:
        return self.sent / self.seconds if self.seconds else 0.0

    @property
    def records_per_s(self) -> float:
        """Every record of the run (each reading twice, and the junk) a second."""
        return (2 * self.sent + len(self.junk)) / self.seconds if self.seconds else 0.0

    @property
    def junk_unlettered(self) -> list[Position]:
        """Poison pills without a dead letter."""
        return [at for at in self.junk if not self.letters.get(at)]

    @property
    def good_lettered(self) -> list[Position]:
        """Records dead-lettered that were not junk."""
        return [at for at in self.letters if at not in self.junk]

    def percentile(self, q: float) -> float:
        """The q-th percentile of produce → committed-output latency."""
        return percentile(self.latencies_ms, q)

    def lines(self) -> list[str]:
        """The report as a person reads it."""
        lines = [
            f"records sent          {self.sent}",
            f"DUPLICATE audits back {self.received} (read_committed; each reading sent twice)",
            f"duplicates / missing  {self.duplicates} / {self.missing}",
            f"throughput            {self.events_per_s:,.0f} readings/s end to end",
            f"latency p50 / p99     {self.percentile(50):,.0f} / {self.percentile(99):,.0f} ms "
            "(exactly-once: output is visible when a checkpoint completes)",
            f"mean latency          {statistics.fmean(self.latencies_ms or (0.0,)):,.0f} ms",
        ]
        if self.junk:
            lines.append(
                f"junk records          {len(self.junk)}, {len(self.junk_unlettered)} without a"
                f" dead letter; good records dead-lettered: {len(self.good_lettered)}"
            )
        return lines


def _reading(run_id: str, i: int, devices: int, ts_ms: int) -> models.IotTelemetry:
    """A validated thermostat reading: producers validate before the network."""
    data = {
        "device_id": f"rt-{run_id}-{i % devices}",
        "device_class": models.DeviceClass.THERMOSTAT,
        "ts_ms": ts_ms,
        "correlation_id": f"{run_id}-{i}",
        "power_kw": 2.0 + (i % 7) * 0.25,
        "is_on": True,
        "setpoint_c": 24.0,
        "customer_override": False,
        "firmware_version": "4.2.1",
    }
    return models.validate(models.IotTelemetry, data, ts_ms)


def _correlation_id(message: Message) -> str:
    for key, value in message.headers() or ():
        if key == CORRELATION_HEADER and value is not None:
            return bytes(value).decode("utf-8", "replace")
    return ""


def run(
    settings: Settings,
    events: int,
    devices: int = 100,
    timeout_s: float = 180.0,
    progress: Callable[[str], None] = print,
    rate: float | None = None,
    junk_share: float = 0.0,
    partition: int | None = None,
) -> RoundTripReport:
    """Send `events` Avro IoT readings twice each; wait for one DUPLICATE audit per reading.

    The second copy of a reading has the same `msg_id` (device + time), so the job answers it
    with exactly one `DUPLICATE` audit record: every reading must come back once, no more.
    With `rate` (readings a second) the readings are paced, for latency below capacity;
    without, they go as fast as the producer can, for throughput. With `junk_share`, that share
    of all the records sent are poison pills of every kind in turn, spread among the readings,
    and the run also waits for their dead letters (read_committed, matched by position). With
    `partition`, every record goes to that partition of `iot.telemetry`.
    """
    run_id = uuid.uuid4().hex[:8]
    client = kafka_client_config(settings.stack)
    consumer = Consumer(
        {
            **client,
            "group.id": f"gridstream-roundtrip-{run_id}",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
        }
    )
    consumer.assign(end_offsets(consumer, topics.AUDIT) + end_offsets(consumer, topics.DLQ))
    producer = Producer({**client, "linger.ms": 5, "enable.idempotence": True})
    registry = Registry(RegistryConfig.from_settings(settings))
    encoder = serde.serializer(models.IotTelemetry, registry.schemas())
    letter_reader = serde.deserializer(models.DeadLetter, registry.schemas())
    placed: dict[str, Position] = {}  # correlation id -> where the record landed (last copy)
    ours: set[Position] = set()
    letters: dict[Position, list[models.DeadLetter]] = {}
    sent_at: dict[str, float] = {}
    seen: Counter[str] = Counter()
    latencies: list[float] = []
    started = time.time()
    last = started

    def delivered(correlation_id: str) -> Callable[[Any, Message], None]:
        """Where the record went (a delivery report carries no headers to tell it by)."""

        def placed_at(err: Any, message: Message) -> None:
            if err is None:
                at = placed[correlation_id] = (message.partition(), message.offset())
                ours.add(at)

        return placed_at

    def receive(timeout_s: float) -> None:
        """Take one output record, if one comes within `timeout_s`: an audit's latency, once;
        a dead letter of an `iot.telemetry` record, by that record's position."""
        nonlocal last
        message = consumer.poll(timeout_s)
        if message is None or message.error():
            return
        if message.topic() == topics.DLQ:
            letter = letter_reader.decode(message.value(), int(time.time() * 1000))
            if letter.source_topic == topics.IOT_TELEMETRY and letter.source_offset is not None:
                at = (letter.source_partition or 0, letter.source_offset)
                letters.setdefault(at, []).append(letter)
                last = time.time()
            return
        correlation_id = _correlation_id(message)
        if correlation_id in sent_at:
            if not seen[correlation_id]:
                last = time.time()
                latencies.append((last - sent_at[correlation_id]) * 1000)
            seen[correlation_id] += 1

    def send(key: str, value: bytes | None, timestamp: int, correlation_id: str) -> None:
        where = {} if partition is None else {"partition": partition}
        produce(
            producer, topics.IOT_TELEMETRY, key=key, value=value, timestamp=timestamp,
            headers={CORRELATION_HEADER: correlation_id}, on_delivery=delivered(correlation_id),
            **where,
        )  # fmt: skip

    junk_sent: dict[str, Junk] = {}  # by correlation id
    junk_total = round(2 * events * junk_share / (1 - junk_share)) if junk_share else 0
    kinds = list(JUNK_KINDS)
    newest: dict[int, int] = {}  # each device's newest reading time
    for i in range(events):
        # Paced: receive while waiting for the reading's turn, so latency is not measured
        # from a backlog of unread answers.
        while rate is not None and (ahead := started + i / rate - time.time()) > 0:
            receive(ahead)
        # Distinct msg_ids, near the wall clock: a millisecond apart per device, not per
        # reading, which would run ahead of the clock beyond the job's skew (dead letters).
        device = i % devices
        ts_ms = newest[device] = max(newest.get(device, 0) + 1, int(time.time() * 1000))
        reading = _reading(run_id, i, devices, ts_ms)
        value = encoder.encode(reading)
        for _copy in range(2):
            send(reading.device_id, value, reading.ts_ms, reading.correlation_id)
        sent_at[reading.correlation_id] = time.time()
        while len(junk_sent) < (i + 1) * junk_total // events:
            pill = junk(kinds[len(junk_sent) % len(kinds)], reading, encoder)
            correlation_id = f"{run_id}-junk-{len(junk_sent)}"
            send(reading.device_id, pill.value, reading.ts_ms, correlation_id)
            junk_sent[correlation_id] = pill
        producer.poll(0)
    producer.flush(30)
    progress(
        f"sent {events} readings twice and {len(junk_sent)} junk records in "
        f"{time.time() - started:.1f}s; waiting for the audit trail and the dead letters"
    )
    junk_at = {placed[c]: pill for c, pill in junk_sent.items() if c in placed}

    deadline = time.monotonic() + timeout_s
    while (
        len(seen) < events or any(at not in letters for at in junk_at)
    ) and time.monotonic() < deadline:
        receive(1.0)
    # Linger briefly: a duplicate would arrive with a later transaction.
    linger_until = time.monotonic() + 3
    while time.monotonic() < linger_until:
        receive(0.5)
    consumer.close()
    return RoundTripReport(
        sent=events,
        received=sum(seen.values()),
        duplicates=sum(n - 1 for n in seen.values() if n > 1),
        missing=events - len(seen),
        seconds=last - started,
        latencies_ms=tuple(latencies),
        junk=junk_at,
        letters={at: tuple(found) for at, found in letters.items() if at in ours},
    )
