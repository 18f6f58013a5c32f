"""Play telemetry into Kafka and read the job's audit trail back: the foundation's round trip.

Used by `make run` (the demo) and by the `stack` test that proves exactly-once delivery.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence

from confluent_kafka import Consumer, Message, Producer

from gridstream import topics
from gridstream.config import Settings, kafka_client_config
from gridstream.scenario import end_offsets, produce
from schemas import models, serde
from schemas.dead_letter import CORRELATION_HEADER
from schemas.registry import Registry, RegistryConfig


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

    @property
    def events_per_s(self) -> float:
        return self.sent / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float:
        """The q-th percentile of produce → committed-output latency."""
        return percentile(self.latencies_ms, q)

    def lines(self) -> list[str]:
        """The report as a person reads it."""
        return [
            f"records sent          {self.sent}",
            f"DUPLICATE audits back {self.received} (read_committed; each reading sent twice)",
            f"duplicates / missing  {self.duplicates} / {self.missing}",
            f"throughput            {self.events_per_s:,.0f} readings/s end to end",
            f"latency p50 / p99     {self.percentile(50):,.0f} / {self.percentile(99):,.0f} ms "
            "(exactly-once: output is visible when a checkpoint completes)",
            f"mean latency          {statistics.fmean(self.latencies_ms or (0.0,)):,.0f} ms",
        ]


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
) -> RoundTripReport:
    """Send `events` Avro IoT readings twice each; wait for one DUPLICATE audit per reading.

    The second copy of a reading has the same `msg_id` (device + time), so the job answers it
    with exactly one `DUPLICATE` audit record: every reading must come back once, no more.
    With `rate` (readings a second) the readings are paced, for latency below capacity;
    without, they go as fast as the producer can, for throughput.
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
    consumer.assign(end_offsets(consumer, topics.AUDIT))
    producer = Producer({**client, "linger.ms": 5, "enable.idempotence": True})
    registry = Registry(RegistryConfig.from_settings(settings))
    encoder = serde.serializer(models.IotTelemetry, registry.schemas())
    sent_at: dict[str, float] = {}
    seen: Counter[str] = Counter()
    latencies: list[float] = []
    started = time.time()
    last = started

    def receive(timeout_s: float) -> None:
        """Take one audit record, if one comes within `timeout_s`: its latency, once."""
        nonlocal last
        message = consumer.poll(timeout_s)
        if message is None or message.error():
            return
        correlation_id = _correlation_id(message)
        if correlation_id in sent_at:
            if not seen[correlation_id]:
                last = time.time()
                latencies.append((last - sent_at[correlation_id]) * 1000)
            seen[correlation_id] += 1

    ts_ms = int(started * 1000)
    for i in range(events):
        # Paced: receive while waiting for the reading's turn, so latency is not measured
        # from a backlog of unread answers.
        while rate is not None and (ahead := started + i / rate - time.time()) > 0:
            receive(ahead)
        ts_ms = max(ts_ms + 1, int(time.time() * 1000))  # distinct msg_ids, near the wall clock
        reading = _reading(run_id, i, devices, ts_ms)
        value = encoder.encode(reading)
        for _copy in range(2):
            produce(
                producer,
                topics.IOT_TELEMETRY,
                key=reading.device_id,
                value=value,
                timestamp=reading.ts_ms,
                headers={CORRELATION_HEADER: reading.correlation_id},
            )
        sent_at[reading.correlation_id] = time.time()
        producer.poll(0)
    producer.flush(30)
    progress(f"sent {events} records in {time.time() - started:.1f}s; waiting for the audit trail")

    deadline = time.monotonic() + timeout_s
    while len(seen) < events and time.monotonic() < deadline:
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
    )
