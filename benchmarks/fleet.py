"""A realistic fleet for `make bench`: registry records, then readings, weather and one DR event.

Each device reports once per reporting interval (IoT every minute, SCADA every 10 s) at its own
phase, so many devices share each second; the readings cover `span_s` of event time that ends
before the workload is built, so no record is ahead of the job's clock when it reads it. On top:
a burst (a third of the IoT fleet reporting again within one second), re-sent readings (exact
duplicates), junk bytes, weather per region every five minutes (one region hot enough for the
wet-bulb suspension) and one DR event on half the regions, running from mid-span to two hours
later. Records are encoded with the project's serializers and the registry's schema ids.
"""

from __future__ import annotations

import dataclasses
import itertools
import random
import time
from collections.abc import Callable, Iterator
from typing import Any

from confluent_kafka import Producer

from gridstream import topics
from gridstream.scenario import produce
from schemas import models, serde
from schemas.dead_letter import CORRELATION_HEADER
from schemas.examples import example_data
from schemas.models import DeviceClass

REGIONS = tuple(f"region-{n:02d}" for n in range(20))
DR_REGIONS = REGIONS[:10]
HOT_REGION = REGIONS[-1]  # its wet-bulb temperature suspends DR there
PROGRAM = "summer-peak"
IOT_CLASSES = (
    DeviceClass.THERMOSTAT, DeviceClass.EV_CHARGER, DeviceClass.POOL_PUMP,
    DeviceClass.WATER_HEATER,
)  # fmt: skip
SCADA_CLASSES = (DeviceClass.FEEDER_BREAKER, DeviceClass.LINE_SWITCH, DeviceClass.INDUSTRIAL_LOAD)
PRIORITIES = ("STANDARD",) * 74 + ("DISCRETIONARY",) * 20 + ("CRITICAL",) * 5 + ("LIFE_SAFETY",)
WEATHER_EVERY_MS = 5 * 60_000
SECOND_MS = 1_000


@dataclasses.dataclass(frozen=True)
class Shape:
    """How big the fleet is and what its readings look like."""

    devices: int = 100_000
    span_s: int = 60
    iot_interval_s: int = 60
    scada_interval_s: int = 10
    duplicate_pct: float = 2.0
    junk_pct: float = 1.0
    burst_pct: float = 33.0
    latency_devices: int = 0  # per job run: registered, enrolled, never reporting in the backlog
    dr_runs_on_ms: int = 7_200_000  # how long the DR event goes on after the last reading
    job_runs: int = 0
    seed: int = 7


@dataclasses.dataclass(frozen=True)
class Record:
    """One Kafka record, encoded."""

    topic: str
    key: bytes
    value: bytes
    ts_ms: int
    correlation_id: str


@dataclasses.dataclass(frozen=True)
class Workload:
    """The records in producing order, what they hold, and the devices kept for latency runs."""

    records: list[Record]
    devices: int  # registered: the fleet and the latency pools
    readings: int
    latency_pools: list[list[str]]

    def counts(self) -> dict[str, int]:
        """Records per topic."""
        found: dict[str, int] = {}
        for record in self.records:
            found[record.topic] = found.get(record.topic, 0) + 1
        return found


def device_ids(shape: Shape) -> list[str]:
    """Every tenth device is a SCADA point, the rest consumer IoT."""
    return [f"scada-{i:06d}" if i % 10 == 0 else f"iot-{i:06d}" for i in range(shape.devices)]


def is_scada(device_id: str) -> bool:
    """Whether a fleet device id names a SCADA point."""
    return device_id.startswith("scada-")


def region_of(device_id: str) -> str:
    """A device's region, from its number: latency devices are all in the DR regions."""
    n = int(device_id.rsplit("-", 1)[1])
    return (
        DR_REGIONS[n % len(DR_REGIONS)]
        if device_id.startswith("lat-")
        else REGIONS[n % len(REGIONS)]
    )


class Encoder:
    """Validates and encodes records with the registry's schema ids."""

    def __init__(self, schemas: serde.SchemaSource) -> None:
        self.serializers = {
            topic: serde.serializer(models.MODELS[topic], schemas) for topic in topics.INPUTS
        }

    def __call__(self, topic: str, key: str, now_ms: int, **fields: Any) -> Record:
        model = models.MODELS[topic]
        record = models.validate(model, example_data(model, **fields), now_ms)
        value = self.serializers[topic].encode(record)
        return Record(topic, key.encode(), value, now_ms, record.correlation_id)


def registration(encode: Encoder, device_id: str, at_ms: int, rng: random.Random) -> Record:
    """The device's CIS record (latency devices: standard thermostats in the DR program)."""
    latency = device_id.startswith("lat-")
    cls = SCADA_CLASSES if is_scada(device_id) else IOT_CLASSES
    return encode(
        topics.DEVICE_REGISTRY, device_id, at_ms, device_id=device_id,
        correlation_id=f"cis-{device_id}", region_id=region_of(device_id),
        device_class=DeviceClass.THERMOSTAT if latency else rng.choice(cls),
        priority_level="STANDARD" if latency else rng.choice(PRIORITIES),
        programs=[PROGRAM] if latency or rng.random() < 0.6 else [],
        rated_power_kw=500.0 if is_scada(device_id) else 5.0, updated_ts_ms=at_ms,
    )  # fmt: skip


def reading(
    encode: Encoder, device_id: str, ts_ms: int, tag: str, rng: random.Random,
    overriding: bool = False,
) -> Record:  # fmt: skip
    """One reading of the device stamped `ts_ms` (validated as of that instant); a consumer
    device's carries a customer override one time in 500, or always when `overriding`."""
    corr = f"{device_id}@{ts_ms}{tag}"
    if is_scada(device_id):
        return encode(
            topics.SCADA_TELEMETRY, device_id, ts_ms, device_id=device_id, ts_ms=ts_ms,
            correlation_id=corr, device_class=DeviceClass.FEEDER_BREAKER,
            power_kw=round(rng.uniform(1_000, 6_000), 1), voltage_kv=24.9,
        )  # fmt: skip
    return encode(
        topics.IOT_TELEMETRY, device_id, ts_ms, device_id=device_id, ts_ms=ts_ms,
        correlation_id=corr, power_kw=round(rng.uniform(0.1, 7.0), 2),
        customer_override=rng.random() < 0.002 or overriding,
    )  # fmt: skip


def weather(encode: Encoder, region: str, ts_ms: int) -> Record:
    """A region's observation: mild everywhere but in `HOT_REGION`."""
    hot = region == HOT_REGION
    return encode(
        topics.WEATHER, region, ts_ms, region_id=region, ts_ms=ts_ms,
        correlation_id=f"wx-{region}-{ts_ms}", dry_bulb_temp_c=38.0 if hot else 29.0,
        relative_humidity_pct=75.0 if hot else 35.0, wbgt_temp_c=None,
    )  # fmt: skip


def dr_event(
    encode: Encoder, issued_ms: int, start_ms: int, end_ms: int,
    event_id: str = "dr-bench", regions: tuple[str, ...] = DR_REGIONS,
) -> Record:  # fmt: skip
    """A DR event: a 30 % curtailment on `regions` (the bench's one: on `DR_REGIONS`)."""
    return encode(
        topics.DR_EVENTS, event_id, issued_ms, event_id=event_id, correlation_id=event_id,
        program_id=PROGRAM, target_region_ids=list(regions), start_ts_ms=start_ms,
        end_ts_ms=end_ms, action="CURTAIL", setpoint_offset_c=None, curtailment_pct=30.0,
        priority=1, status="SCHEDULED", issued_ts_ms=issued_ms,
    )  # fmt: skip


def _times(shape: Shape, device_id: str, t0: int, end: int, rng: random.Random) -> Iterator[int]:
    interval = (shape.scada_interval_s if is_scada(device_id) else shape.iot_interval_s) * 1000
    return iter(range(t0 + rng.randrange(interval), end + 1, interval))


def generate(shape: Shape, encode: Encoder, progress: Callable[[str], None] = print) -> Workload:
    """The workload, its event time ending a second before now."""
    rng = random.Random(shape.seed)
    end = int(time.time() * 1000) - SECOND_MS
    t0 = end - shape.span_s * SECOND_MS
    fleet = device_ids(shape)
    pools = [
        [f"lat-{run}-{n:05d}" for n in range(shape.latency_devices)]
        for run in range(shape.job_runs)
    ]
    registered = t0 - 3_600_000
    records = [registration(encode, d, registered, rng) for d in itertools.chain(fleet, *pools)]
    progress(f"  {len(records):,} registry records encoded")
    timed = [  # (when it is sent, in event time; the record)
        (ts, reading(encode, device, ts, "", rng))
        for device in fleet
        for ts in _times(shape, device, t0, end, rng)
    ]
    burst = t0 + shape.span_s * SECOND_MS // 3
    for device in fleet:
        if not is_scada(device) and rng.random() * 100 < shape.burst_pct:
            ts = burst + rng.randrange(SECOND_MS)
            timed.append((ts, reading(encode, device, ts, "+burst", rng)))
    count = len(timed)
    for _ in range(int(count * shape.duplicate_pct / 100)):  # re-sent a little later
        ts, record = timed[rng.randrange(count)]
        timed.append((ts + rng.randrange(1, 500), record))
    for n in range(int(count * shape.junk_pct / 100)):
        ts, record = timed[rng.randrange(count)]
        noise = rng.randbytes(rng.randrange(1, 64))
        timed.append((ts, dataclasses.replace(record, value=noise, correlation_id=f"junk-{n}")))
    readings = len(timed)
    for ts in range(t0, end, WEATHER_EVERY_MS):
        timed += [(ts, weather(encode, region, ts)) for region in REGIONS]
    issued, start = t0 + (end - t0) // 4, t0 + (end - t0) // 2
    timed.append((issued, dr_event(encode, issued, start, end + shape.dr_runs_on_ms)))
    timed.sort(key=lambda pair: pair[0])
    progress(f"  {readings:,} readings encoded ({shape.span_s} s of event time)")
    return Workload(records + [record for _, record in timed], len(records), readings, pools)


def load(servers: str, records: list[Record], progress: Callable[[str], None] = print) -> float:
    """Produce `records` in order and wait for every delivery; the seconds it took."""
    producer = Producer(
        {"bootstrap.servers": servers, "linger.ms": 20, "enable.idempotence": True,
         "batch.size": 1_000_000, "compression.type": "lz4"}
    )  # fmt: skip
    started = time.monotonic()
    for n, record in enumerate(records, 1):
        produce(
            producer, record.topic, key=record.key, value=record.value, timestamp=record.ts_ms,
            headers={CORRELATION_HEADER: record.correlation_id},
        )  # fmt: skip
        if n % 100_000 == 0:
            progress(f"  {n:,} / {len(records):,} records produced")
        producer.poll(0)
    if producer.flush(120):
        raise RuntimeError("kafka did not take every record of the workload within 120 s")
    return time.monotonic() - started
