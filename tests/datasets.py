"""Replay datasets for tests and benchmarks, written with pyarrow to the contract of
`gridstream.models.dataset` (the one `jobs/replay.py` writes): a small fleet reporting at its
nominal intervals, with on/off cycles, meter noise, rare overrides and rare SCADA quality flags.

`reading(...)` and `registration(...)` build single rows; `fleet(...)` a whole synthetic fleet;
`write(dir, readings, registry)` lays them out in hive partitions.
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
import random
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from tests.vocabulary import HOUR_MS, MINUTE_MS, SECOND_MS

T0_MS = 1_780_000_000_000  # 2026-05-28 20:26:40 UTC
FIRMWARE = ("1.4.2", "1.5.0")
REGIONS = ("north", "south", "east")
QUALITY = ("invalid", "not_topical", "substituted", "blocked", "overflow")

READING_SCHEMA = pa.schema(
    [
        ("topic", pa.string()), ("partition", pa.int32()), ("offset", pa.int64()),
        ("kafka_ts_ms", pa.int64()), ("schema_id", pa.int32()), ("device_id", pa.string()),
        ("device_class", pa.string()), ("ts_ms", pa.int64()), ("correlation_id", pa.string()),
        ("power_kw", pa.float64()), ("is_on", pa.bool_()), ("setpoint_c", pa.float64()),
        ("customer_override", pa.bool_()), ("firmware_version", pa.string()),
        ("measured_temp_c", pa.float64()), ("ev_soc_pct", pa.float64()),
        ("voltage_kv", pa.float64()), ("switch_closed", pa.bool_()),
        *((f"quality_{q}", pa.bool_()) for q in QUALITY),
    ]
)  # fmt: skip
REGISTRY_SCHEMA = pa.schema(
    [
        ("topic", pa.string()), ("partition", pa.int32()), ("offset", pa.int64()),
        ("kafka_ts_ms", pa.int64()), ("schema_id", pa.int32()), ("device_id", pa.string()),
        ("device_class", pa.string()), ("priority_level", pa.string()), ("region_id", pa.string()),
        ("programs", pa.list_(pa.string())), ("rated_power_kw", pa.float64()),
        ("updated_ts_ms", pa.int64()), ("deleted", pa.bool_()),
    ]
)  # fmt: skip

# class: (nameplate kW, chance a reading switches on/off, reporting interval); SCADA: a feeder.
IOT = {
    "THERMOSTAT": (3.5, 0.08, MINUTE_MS),
    "EV_CHARGER": (7.2, 0.03, MINUTE_MS),
    "POOL_PUMP": (1.5, 0.01, MINUTE_MS),
    "WATER_HEATER": (4.5, 0.1, MINUTE_MS),
}
SCADA_INTERVAL_MS = 10 * SECOND_MS
FEEDER_RATED_KW = 12_000.0
_offsets = itertools.count()


def reading(
    device_id: str, device_class: str, ts_ms: int, power_kw: float, **fields: Any
) -> dict[str, Any]:
    """One readings row: an IoT reading unless `device_class` is FEEDER_BREAKER (then SCADA)."""
    scada = device_class == "FEEDER_BREAKER"
    row: dict[str, Any] = {
        **dict.fromkeys(READING_SCHEMA.names),
        "topic": "scada.telemetry" if scada else "iot.telemetry",
        "partition": 0,
        "offset": next(_offsets),
        "kafka_ts_ms": ts_ms + 50,
        "schema_id": 1 if scada else 2,
        "device_id": device_id,
        "device_class": device_class,
        "ts_ms": ts_ms,
        "correlation_id": f"c-{device_id}-{ts_ms}",
        "power_kw": power_kw,
        "is_on": None if scada else power_kw > 0,
        "customer_override": None if scada else False,
        "firmware_version": None if scada else FIRMWARE[0],
        **{f"quality_{q}": False if scada else None for q in QUALITY},
    }
    row.update(fields)
    return row


def registration(
    device_id: str,
    device_class: str,
    region_id: str,
    ts_ms: int,
    rated_kw: float = 3.5,
    **fields: Any,
) -> dict[str, Any]:
    """One registry row: the device's CIS record, sent at `ts_ms`."""
    row: dict[str, Any] = {
        "topic": "device.registry",
        "partition": 0,
        "offset": next(_offsets),
        "kafka_ts_ms": ts_ms,
        "schema_id": 3,
        "device_id": device_id,
        "device_class": device_class,
        "priority_level": "STANDARD",
        "region_id": region_id,
        "programs": ["summer-dr"],
        "rated_power_kw": rated_kw,
        "updated_ts_ms": ts_ms,
        "deleted": False,
    }
    row.update(fields)
    return row


def tombstone(device_id: str, ts_ms: int) -> dict[str, Any]:
    """One registry row for a deleted CIS record: the key and its Kafka time, the rest null."""
    row = dict.fromkeys(REGISTRY_SCHEMA.names)
    row.update(topic="device.registry", partition=0, offset=next(_offsets), kafka_ts_ms=ts_ms,
               device_id=device_id, deleted=True)  # fmt: skip
    return row


def _date(ts_ms: int) -> str:
    return dt.datetime.fromtimestamp(ts_ms / 1000, dt.UTC).date().isoformat()


def _write_partitions(
    root: Path, rows: Iterable[Mapping[str, Any]], schema: pa.Schema, keys: tuple[str, ...]
) -> None:
    groups: dict[tuple[str, ...], list[Mapping[str, Any]]] = {}
    for row in rows:
        when = _date(row["ts_ms"] if "ts_ms" in row else row["kafka_ts_ms"])
        groups.setdefault((when, *(row[k] for k in keys)), []).append(row)
    for (when, *values), group in groups.items():
        folder = root / f"date={when}"
        for key, value in zip(keys, values, strict=True):
            folder /= f"{key}={value}"
        folder.mkdir(parents=True, exist_ok=True)
        # the partition keys are in the folder names only, as the replay writes them
        kept = pa.schema([f for f in schema if f.name not in keys])
        columns = {f.name: [r.get(f.name) for r in group] for f in kept}
        pq.write_table(pa.table(columns, schema=kept), folder / "part-0.parquet")


def write(
    data_dir: Path, readings: Iterable[Mapping[str, Any]], registry: Iterable[Mapping[str, Any]]
) -> Path:
    """Lay `readings` and `registry` rows out under `data_dir` as the replay does."""
    _write_partitions(data_dir / "readings", readings, READING_SCHEMA, ("device_class",))
    _write_partitions(data_dir / "registry", registry, REGISTRY_SCHEMA, ())
    return data_dir


def _iot_device(
    rng: random.Random, device_id: str, cls: str, rated_kw: float, start: int, end: int
) -> list[dict[str, Any]]:
    _, switch, interval = IOT[cls]
    draw = rated_kw * rng.uniform(0.7, 0.95)
    firmware = rng.choice(FIRMWARE)
    on = rng.random() < 0.5
    rows = []
    ts = start + rng.randrange(interval)
    while ts < end:
        if rng.random() < switch:
            on = not on
        kw = round(draw * (1 + rng.gauss(0, 0.03)), 4) if on else 0.0
        override = rng.random() < 0.002
        rows.append(reading(device_id, cls, ts, max(kw, 0.0), is_on=on,
                            customer_override=override, firmware_version=firmware,
                            kafka_ts_ms=ts + rng.randrange(20, 800)))  # fmt: skip
        ts += interval + rng.randrange(-3 * SECOND_MS, 3 * SECOND_MS)
        if rng.random() < 0.01:  # a lost report
            ts += interval
    return rows


def _feeder(rng: random.Random, device_id: str, start: int, end: int) -> list[dict[str, Any]]:
    base = rng.uniform(3_000, 8_000)
    rows = []
    for ts in range(start + rng.randrange(SCADA_INTERVAL_MS), end, SCADA_INTERVAL_MS):
        kw = base * (1 + 0.3 * math.sin(2 * math.pi * ts / (24 * HOUR_MS))) + rng.gauss(0, 40)
        flagged = rng.random() < 0.0005
        delay = rng.randrange(5, 200)
        row = reading(device_id, "FEEDER_BREAKER", ts, round(kw, 2), quality_invalid=flagged)
        rows.append({**row, "kafka_ts_ms": ts + delay})
    return rows


def fleet(
    devices: int = 40, hours: float = 6.0, feeders: int = 2, seed: int = 1, start_ms: int = T0_MS
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Readings and registry rows of `devices` IoT devices and `feeders` SCADA feeders over
    `hours`, each registered an hour before its first reading."""
    rng = random.Random(seed)
    end = start_ms + int(hours * HOUR_MS)
    readings: list[dict[str, Any]] = []
    registry: list[dict[str, Any]] = []
    classes = list(IOT)
    for i in range(devices + feeders):
        cls = classes[i % len(classes)] if i < devices else "FEEDER_BREAKER"
        device_id = f"{cls.lower()}-{i:04d}"
        rated = FEEDER_RATED_KW if cls == "FEEDER_BREAKER" else IOT[cls][0] * rng.uniform(0.9, 1.3)
        region = REGIONS[i % len(REGIONS)]
        registry.append(registration(device_id, cls, region, start_ms - HOUR_MS, round(rated, 1)))
        if cls == "FEEDER_BREAKER":
            readings += _feeder(rng, device_id, start_ms, end)
        else:
            readings += _iot_device(rng, device_id, cls, rated, start_ms, end)
    return readings, registry
