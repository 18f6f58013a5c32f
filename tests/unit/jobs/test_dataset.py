"""The replay dataset's rows and files: every writer schema read as the newest, rejects kept,
chunks written once under names that depend only on the offsets read."""

from __future__ import annotations

from pathlib import Path

import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from gridstream import topics
from jobs import dataset
from schemas import catalog, models
from schemas.examples import EXAMPLE_NOW_MS, encode_unvalidated, example_data
from tests.vocabulary import catalog_schemas, encoded, record

pytestmark = pytest.mark.unit

NOW = EXAMPLE_NOW_MS
IOT = catalog.default().chain(topics.IOT_TELEMETRY)


def _v1_reading(**fields: object) -> bytes:
    """An IoT reading as a v1 producer wrote it."""
    v1 = IOT.versions[0]
    schema_id = catalog_schemas().schema_id(IOT.subject, v1.text)
    return encode_unvalidated(v1, schema_id, example_data(models.IotTelemetry, **fields))


def _place(topic: str, offset: int, key: bytes | None, value: bytes | None) -> dataset.Placed:
    record = dataset.KafkaRecord(topic, 1, offset, NOW, key, value)
    return dataset.Flattener(catalog_schemas()).place(record, NOW)


def _column(placed: dataset.Placed, name: str) -> object:
    schema = dataset.schemas()[placed.table]
    return placed.row[schema.names.index(name)]


def test_a_v1_reading_is_read_with_the_newest_schema_and_keeps_its_writer_id() -> None:
    """A v1 IoT record lands in `readings` with v2's columns (null where v1 had none) and
    the id of the schema it was written with."""
    placed = _place(topics.IOT_TELEMETRY, 7, b"thermostat-0001", _v1_reading())

    assert placed.table == "readings"
    assert placed.folder == "date=2025-06-15/device_class=THERMOSTAT"
    assert _column(placed, "schema_id") == catalog_schemas().schema_id(
        IOT.subject, IOT.versions[0].text
    )
    assert _column(placed, "measured_temp_c") is None
    assert _column(placed, "firmware_version") == "4.2.1"
    assert _column(placed, "offset") == 7


def test_a_scada_reading_has_its_quality_flags_as_columns_and_no_iot_fields() -> None:
    """SCADA quality bits become `quality_*` columns; IoT-only columns are null."""
    reading = record(models.ScadaTelemetry, NOW, quality={"invalid": True})
    placed = _place(topics.SCADA_TELEMETRY, 0, b"feeder-0001", encoded(reading))

    assert _column(placed, "quality_invalid") is True
    assert _column(placed, "quality_overflow") is False
    assert _column(placed, "is_on") is None
    assert placed.folder.endswith("device_class=FEEDER_BREAKER")


def test_undecodable_and_invalid_records_are_rejected_with_their_bytes_and_reason() -> None:
    """Junk bytes and a reading out of its physical range go to `rejects`, never dropped."""
    junk = _place(topics.IOT_TELEMETRY, 3, b"k", b"\x07junk")
    too_hot = _place(topics.IOT_TELEMETRY, 4, b"k", _v1_reading(power_kw=999.0))

    assert (junk.table, _column(junk, "error_class")) == ("rejects", "BadMagic")
    assert _column(junk, "raw") == b"\x07junk"
    assert (too_hot.table, _column(too_hot, "error_class")) == ("rejects", "ValidationFailure")
    assert "power_kw" in str(_column(too_hot, "error"))
    assert _column(too_hot, "schema_id") is not None


def test_a_registry_tombstone_is_a_deleted_row_dated_by_its_kafka_time() -> None:
    """A null value on the compacted registry is the device's deletion, not a reject."""
    placed = _place(topics.DEVICE_REGISTRY, 5, b"thermostat-0009", None)

    assert placed.table == "registry"
    assert _column(placed, "device_id") == "thermostat-0009"
    assert _column(placed, "deleted") is True
    assert placed.folder == "date=2025-06-15"


def _writer(root: Path) -> dataset.ChunkWriter:
    return dataset.ChunkWriter(root, 10, dataset.schemas())


def _write(root: Path, offsets: range, finish: bool = True) -> None:
    writer = _writer(root)
    for offset in offsets:
        value = encoded(record(models.IotTelemetry, NOW, correlation_id=f"c-{offset}"))
        writer.add(_place(topics.IOT_TELEMETRY, offset, b"k", value))
    if finish:
        writer.finish()


def _offsets(root: Path) -> list[int]:
    table = ds.dataset(root / "readings", format="parquet", ignore_prefixes=[".", "_"])
    return sorted(table.to_table(columns=["offset"])["offset"].to_pylist())


def test_a_chunk_is_written_when_its_partition_moves_past_it(tmp_path: Path) -> None:
    """Offsets 0-9 are one file once offset 10 arrives; 10-14 wait for the end."""
    _write(tmp_path, range(15), finish=False)

    files = sorted(p.name for p in tmp_path.rglob("*.parquet"))
    assert files == [dataset.chunk_file(topics.IOT_TELEMETRY, 1, 0)]
    assert pq.read_table(next(tmp_path.rglob("*.parquet"))).num_rows == 10


def test_a_run_interrupted_and_run_again_leaves_every_record_once(tmp_path: Path) -> None:
    """A run stopped mid-way (its buffered chunk lost) and a full rerun: each offset once,
    same file names, no temporary file left."""
    _write(tmp_path, range(25), finish=False)
    _write(tmp_path, range(25))

    assert _offsets(tmp_path) == list(range(25))
    assert not list(tmp_path.rglob(".*"))
    assert len(list(tmp_path.rglob("*.parquet"))) == 3


def test_records_of_a_partition_out_of_offset_order_are_refused(tmp_path: Path) -> None:
    """Going back to an earlier chunk would rewrite it with fewer rows: it raises instead."""
    writer = _writer(tmp_path)
    value = encoded(record(models.IotTelemetry, NOW))
    writer.add(_place(topics.IOT_TELEMETRY, 12, b"k", value))

    with pytest.raises(dataset.OutOfOrderError):
        writer.add(_place(topics.IOT_TELEMETRY, 3, b"k", value))


READINGS_CONTRACT = [
    "topic", "partition", "offset", "kafka_ts_ms", "schema_id", "device_id", "ts_ms",
    "correlation_id", "power_kw", "is_on", "setpoint_c", "customer_override", "firmware_version",
    "measured_temp_c", "ev_soc_pct", "voltage_kv", "switch_closed", "quality_invalid",
    "quality_not_topical", "quality_substituted", "quality_blocked", "quality_overflow",
]  # fmt: skip


def test_the_readings_files_hold_the_contract_columns_with_device_class_in_the_folder() -> None:
    """docs/dataset.md's readings columns, in order; `device_class` is the hive folder's."""
    assert dataset.schemas()["readings"].names == READINGS_CONTRACT
