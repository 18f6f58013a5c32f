"""The replay job on a local MiniCluster, rows from memory: the dataset it writes."""

from __future__ import annotations

from pathlib import Path

import pyarrow.dataset as ds
import pytest

from gridstream import config, topics
from jobs import environment, replay
from jobs.io import CollectionRecords, input_row
from schemas import models
from tests.vocabulary import MINUTE_MS, record
from tests.vocabulary import input_row as encoded_row

pytestmark = pytest.mark.flink

T0 = 1_796_428_800_000 - 5 * MINUTE_MS  # five minutes before a midnight (2026-12-05)


def _rows() -> list[object]:
    """Readings of two classes either side of midnight, a registry record, its tombstone, junk."""
    rows = []
    for minute in range(10):
        ts = T0 + minute * MINUTE_MS
        iot = record(models.IotTelemetry, ts, ts_ms=ts, correlation_id=f"i-{minute}")
        scada = record(models.ScadaTelemetry, ts, ts_ms=ts, correlation_id=f"s-{minute}")
        rows += [encoded_row(iot, iot.device_id), encoded_row(scada, scada.device_id)]
    rows.append(encoded_row(record(models.DeviceRecord, T0, updated_ts_ms=T0), "thermostat-0001"))
    rows.append(input_row(topics.DEVICE_REGISTRY, 0, 10**6, T0, b"thermostat-0001", None, "del"))
    rows.append(input_row(topics.IOT_TELEMETRY, 0, 10**6 + 1, T0, b"x", b"\x07junk", "junk"))
    return rows


def test_the_job_writes_every_row_once_into_date_and_class_folders(tmp_path: Path) -> None:
    """Twenty readings across midnight in four folders, the registry with its deletion, the
    junk in rejects; small chunks, so chunks are written while the input still flows."""
    env = environment.create(config.load(env={}), replay.FLINK_OVERLAY)
    replay.build(env, CollectionRecords(_rows()), replay.DatasetSink(tmp_path, chunk_offsets=3))
    env.execute("replay-minicluster")

    def table(name: str) -> list[dict[str, object]]:
        found = ds.dataset(tmp_path / name, format="parquet", partitioning="hive")
        return found.to_table().to_pylist()

    readings = table("readings")
    assert sorted(r["correlation_id"] for r in readings) == sorted(
        f"{kind}-{minute}" for kind in "is" for minute in range(10)
    )
    folders = {p.parent.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.parquet")}
    assert {f for f in folders if f.startswith("readings/")} == {
        f"readings/date={day}/device_class={kind}"
        for day in ("2026-12-04", "2026-12-05")
        for kind in ("THERMOSTAT", "FEEDER_BREAKER")
    }
    assert sorted(r["deleted"] for r in table("registry")) == [False, True]
    assert [r["raw"] for r in table("rejects")] == [b"\x07junk"]
