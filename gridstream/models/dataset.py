"""The Parquet dataset `gridstream replay` writes, read back as the device stage's inputs.

The contract (`docs/dataset.md` says the same; `jobs/replay.py` writes it):

- `DIR/manifest.json`: the replay's time range, offsets, schema versions seen, row counts;
  optional here (its range and schema versions are copied into the model's metadata).
- `DIR/readings/date=YYYY-MM-DD/device_class=<CLASS>/*.parquet`, hive-partitioned by the UTC
  date of the reading's event time and the device class. Columns: topic (string), partition
  (int32), offset (int64), kafka_ts_ms (int64), schema_id (int32), device_id, device_class,
  ts_ms (int64), correlation_id, power_kw (float64), is_on (bool, null for SCADA), setpoint_c,
  customer_override (bool, null for SCADA), firmware_version (string, null for SCADA),
  measured_temp_c, ev_soc_pct, voltage_kv, switch_closed (bool), quality_invalid,
  quality_not_topical, quality_substituted, quality_blocked, quality_overflow (bool, null for
  IoT).
- `DIR/registry/date=YYYY-MM-DD/*.parquet`: topic, partition, offset, kafka_ts_ms, schema_id,
  device_id, device_class, priority_level, region_id, programs (list<string>), rated_power_kw,
  updated_ts_ms, deleted (bool: a tombstone).
- Other tables (weather, dr_events, approvals, decisions) are not read here.

Each device's rows come back in the order the device stage saw them (Kafka time, then
partition and offset; a registry record before a reading of the same millisecond).
"""

from __future__ import annotations

import dataclasses
import json
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.dataset as ds

from functions import device
from schemas import models
from state.device import DeviceInfo

READINGS = "readings"
REGISTRY = "registry"
MANIFEST = "manifest.json"
QUALITY_COLUMNS = (
    "quality_invalid",
    "quality_not_topical",
    "quality_substituted",
    "quality_blocked",
    "quality_overflow",
)
READING_COLUMNS = (
    "topic", "partition", "offset", "kafka_ts_ms", "schema_id", "device_id", "device_class",
    "ts_ms", "correlation_id", "power_kw", "is_on", "customer_override", "firmware_version",
    "switch_closed", *QUALITY_COLUMNS,
)  # fmt: skip
REGISTRY_COLUMNS = (
    "topic", "partition", "offset", "kafka_ts_ms", "device_id", "device_class", "priority_level",
    "region_id", "programs", "rated_power_kw", "updated_ts_ms", "deleted",
)  # fmt: skip
_CAUSE = models.Cause(source_topic="replay", event_id="replay")  # outputs of a replay are dropped


class DatasetError(ValueError):
    """A folder that is not a replay dataset, or one missing the columns the model reads."""


@dataclasses.dataclass(frozen=True)
class Row:
    """One input of a device, with what the model reads beside the stage's event."""

    arrival: tuple[int, int, int, int]  # Kafka time, 0 registry / 1 reading, partition, offset
    event: device.Telemetry | device.RegistryUpdate | device.Deregistration
    device_class: str
    firmware: str | None = None
    schema_id: int | None = None
    fault: str | None = None  # the fault an evaluation injected into this reading


def reading_event(row: dict[str, Any]) -> device.Telemetry:
    """The stage's reading from a readings row, made as the job makes it from the Avro record."""
    if row["is_on"] is None:  # SCADA: the flags as the record nests them
        quality = {c.removeprefix("quality_"): bool(row[c]) for c in QUALITY_COLUMNS}
        return device.telemetry_of({**row, "quality": quality}, _CAUSE)
    return device.telemetry_of(row, _CAUSE)


def _registry_event(record: dict[str, Any]) -> device.RegistryUpdate | device.Deregistration:
    if record["deleted"]:
        return device.Deregistration(record["device_id"], "replay", _CAUSE, record["kafka_ts_ms"])
    info = DeviceInfo(
        models.DeviceClass(record["device_class"]),
        models.PriorityLevel(record["priority_level"]),
        record["region_id"],
        tuple(record["programs"] or ()),
        record["rated_power_kw"],
    )
    return device.RegistryUpdate(
        record["device_id"], info, "replay", _CAUSE, record["updated_ts_ms"]
    )


def _records(table: Path, columns: tuple[str, ...]) -> Iterator[dict[str, Any]]:
    """The rows of one table as dicts (columns converted once, not row by row)."""
    if not table.is_dir():
        return
    data = ds.dataset(table, format="parquet", partitioning="hive").to_table()
    missing = set(columns) - set(data.column_names)
    if missing:
        raise DatasetError(f"{table} lacks columns {sorted(missing)}: is it a replay dataset?")
    values = [data.column(c).to_pylist() for c in columns]
    for row in zip(*values, strict=True):
        yield dict(zip(columns, row, strict=True))


def _arrival(record: dict[str, Any], kind: int) -> tuple[int, int, int, int]:
    return (record["kafka_ts_ms"], kind, record["partition"], record["offset"])


def read(data_dir: Path) -> dict[str, list[Row]]:
    """Every device's registry records and readings in `data_dir`, each device's in the order
    the device stage saw them."""
    if not (data_dir / READINGS).is_dir():
        raise DatasetError(
            f"{data_dir} has no {READINGS}/ folder: write one with `gridstream replay`"
        )
    rows: dict[str, list[Row]] = defaultdict(list)
    for r in _records(data_dir / REGISTRY, REGISTRY_COLUMNS):
        rows[r["device_id"]].append(Row(_arrival(r, 0), _registry_event(r), r["device_class"]))
    for r in _records(data_dir / READINGS, READING_COLUMNS):
        event = reading_event(r)
        rows[r["device_id"]].append(
            Row(_arrival(r, 1), event, r["device_class"], r["firmware_version"], r["schema_id"])
        )
    for device_rows in rows.values():
        device_rows.sort(key=lambda row: row.arrival)
    return dict(rows)


def manifest(data_dir: Path) -> dict[str, Any] | None:
    """The replay's manifest, when it wrote one."""
    path = data_dir / MANIFEST
    if not path.is_file():
        return None
    loaded: dict[str, Any] = json.loads(path.read_text())
    return loaded
