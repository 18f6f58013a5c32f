"""`gridstream replay` against real Kafka and the registry: a time range of history into
Parquet, every schema version read with the newest, rejects kept, each record exactly once
even when the replay is killed mid-way and run again."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pyarrow.dataset as ds
import pytest
from confluent_kafka import Producer

from gridstream import config, replay, topics
from gridstream.stack import LocalStack
from jobs import dataset
from schemas import catalog, models
from schemas.examples import encode_unvalidated, example_data
from schemas.registry import Registry, RegistryConfig
from tests.vocabulary import DAY_MS, MINUTE_MS

pytestmark = pytest.mark.stack

IOT = catalog.default().chain(topics.IOT_TELEMETRY)
MIDNIGHT = (int(time.time() * 1000) // DAY_MS - 2) * DAY_MS  # two days ago, 00:00 UTC


@dataclasses.dataclass
class History:
    """What the fixture produced: the Kafka time range and the correlation ids in and out."""

    t1: int
    t2: int = 0
    readings: set[str] = dataclasses.field(default_factory=set)
    outside: set[str] = dataclasses.field(default_factory=set)


class Sender:
    """Produces records with chosen Kafka timestamps, encoded as a producer of a given schema
    version would (the registry's ids)."""

    def __init__(self, settings: config.Settings) -> None:
        self.source = Registry(RegistryConfig(settings.stack.registry_url)).schemas()
        self.producer = Producer({"bootstrap.servers": settings.stack.bootstrap_servers})

    def send(self, topic: str, key: str, value: bytes | None, ts_ms: int) -> None:
        self.producer.produce(topic, value, key=key.encode(), timestamp=ts_ms)

    def record(self, model: type[models.TopicRecord], key: str, at_ms: int, **fields: Any) -> None:
        """A record of `model` written with its topic's newest schema, stamped `at_ms`."""
        chain = catalog.default().chain(model.TOPIC)
        self.send(model.TOPIC, key, self.encode(chain.versions[-1], model, **fields), at_ms)

    def encode(
        self, version: catalog.SchemaVersion, model: type[models.TopicRecord], **fields: Any
    ) -> bytes:
        chain = catalog.default().chain(model.TOPIC)
        schema_id = self.source.schema_id(chain.subject, version.text)
        return encode_unvalidated(version, schema_id, example_data(model, **fields))

    def flush(self) -> None:
        assert self.producer.flush(30) == 0


def _reading(sender: Sender, version: int, device: str, ts: int, at_ms: int, corr: str) -> None:
    """An IoT reading at event time `ts` by a v`version` producer, stamped `at_ms` in Kafka."""
    value = sender.encode(
        IOT.versions[version - 1], models.IotTelemetry, device_id=device, ts_ms=ts,
        correlation_id=corr, device_class="THERMOSTAT" if version == 1 else "EV_CHARGER",
        ev_soc_pct=None if version == 1 else 55.0,
    )  # fmt: skip
    sender.send(topics.IOT_TELEMETRY, device, value, at_ms)


@pytest.fixture(scope="module")
def history(local_stack: LocalStack) -> History:
    """Readings by v1 and v2 producers of twenty minutes around a midnight two days ago, SCADA,
    the registry (a record and a tombstone), weather, a DR event, an approval and junk, all
    stamped in Kafka one millisecond apart from now on (Kafka finds a time range by its time
    index, which expects later offsets to carry later times); and a reading stamped just
    before the range and one exactly at its end."""
    sender = Sender(local_stack.settings)
    found = History(t1=int(time.time() * 1000))
    clock = iter(range(found.t1, found.t1 + 1000))
    _reading(sender, 2, "ev-early", MIDNIGHT, found.t1 - 1, "early")
    found.outside.add("early")
    for minute in range(-10, 10):
        ts = MIDNIGHT + minute * MINUTE_MS
        for version in (1, 2):
            corr = f"v{version}-{minute}"
            _reading(sender, version, f"dev-v{version}", ts, next(clock), corr)
            found.readings.add(corr)
        sender.record(
            models.ScadaTelemetry, "feeder-1", next(clock), ts_ms=ts, correlation_id=f"s-{minute}"
        )
        found.readings.add(f"s-{minute}")
    sender.record(models.DeviceRecord, "dev-v1", next(clock), device_id="dev-v1", updated_ts_ms=ts)
    sender.send(topics.DEVICE_REGISTRY, "dev-gone", None, next(clock))
    sender.record(models.WeatherObservation, "north", next(clock), ts_ms=ts)
    sender.record(models.DrEvent, "dr-1", next(clock), issued_ts_ms=ts)
    sender.record(models.OperatorApproval, "feeder-1", next(clock), ts_ms=ts)
    found.t2 = next(clock) + 1
    sender.send(topics.IOT_TELEMETRY, "junk", b"\x07not-avro", found.t2 - 1)  # the last inside
    _reading(sender, 2, "ev-late", ts, found.t2, "late")  # exactly at the end: excluded
    found.outside.add("late")
    sender.flush()
    return found


@pytest.fixture(scope="module")
def replayed(
    local_stack: LocalStack, history: History, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict[str, Any]]:
    """The range replayed once: the dataset's folder and its manifest."""
    out = tmp_path_factory.mktemp("replay") / "dataset"
    request = replay.Request(history.t1, history.t2)
    return out, replay.run(local_stack.settings, request, out, say=lambda _: None)


def _table(root: Path, name: str) -> list[dict[str, Any]]:
    files = ds.dataset(root / name, format="parquet", partitioning="hive")
    return files.to_table().to_pylist()


def test_every_record_in_range_is_a_row_and_the_boundaries_are_closed_open(
    history: History, replayed: tuple[Path, dict[str, Any]]
) -> None:
    """Readings stamped at T1 up to T2 - 1 are rows, once each; those before T1 or at T2 not."""
    rows = _table(replayed[0], "readings")
    ids = [r["correlation_id"] for r in rows]

    assert sorted(ids) == sorted(history.readings)
    assert "v1--10" in ids  # stamped exactly T1
    assert not history.outside & set(ids)


def test_v1_and_v2_readings_are_read_with_the_newest_schema_into_date_and_class_folders(
    replayed: tuple[Path, dict[str, Any]],
) -> None:
    """v1 rows have null v2 fields and v1's schema id; folders split at midnight and by class."""
    root, manifest = replayed
    rows = {r["correlation_id"]: r for r in _table(root, "readings")}
    versions = {e["version"]: e["schema_id"] for e in manifest["schemas"][topics.IOT_TELEMETRY]}

    assert set(versions) == {1, 2}
    assert rows["v1-3"]["schema_id"] == versions[1]
    assert rows["v1-3"]["ev_soc_pct"] is None
    assert rows["v2-3"]["schema_id"] == versions[2]
    assert rows["v2-3"]["ev_soc_pct"] == 55.0
    assert rows["s-3"]["quality_invalid"] is False
    assert rows["s-3"]["is_on"] is None
    assert {r["device_class"] for r in rows.values()} == {
        "THERMOSTAT",
        "EV_CHARGER",
        "FEEDER_BREAKER",
    }
    folders = {
        p.parent.relative_to(root).as_posix() for p in (root / "readings").rglob("*.parquet")
    }
    days = {dataset.date_of(MIDNIGHT - 1), dataset.date_of(MIDNIGHT)}
    assert folders == {
        f"readings/date={d}/device_class={c}"
        for d in days
        for c in ("THERMOSTAT", "EV_CHARGER", "FEEDER_BREAKER")
    }


def test_the_other_topics_tombstones_and_junk_have_their_tables(
    replayed: tuple[Path, dict[str, Any]],
) -> None:
    """Registry (a tombstone as `deleted`), weather, DR events, approvals; junk in rejects."""
    root, manifest = replayed
    registry = {r["device_id"]: r["deleted"] for r in _table(root, "registry")}
    rejects = _table(root, "rejects")

    assert registry == {"dev-v1": False, "dev-gone": True}
    assert manifest["rows"] == {
        "readings": 60, "registry": 2, "weather": 1, "dr_events": 1, "approvals": 1,
    }  # fmt: skip
    assert [(r["raw"], r["error_class"]) for r in rejects] == [(b"\x07not-avro", "BadMagic")]
    assert manifest["rejects"] == 1


def test_the_manifest_names_the_range_the_offsets_and_the_records_read(
    history: History, replayed: tuple[Path, dict[str, Any]]
) -> None:
    """Per partition: the start and end offsets, and as many records read as lie between."""
    root, manifest = replayed

    assert json.loads((root / replay.MANIFEST_FILE).read_text()) == manifest
    assert (manifest["from_ms"], manifest["to_ms"]) == (history.t1, history.t2)
    for part in manifest["partitions"]:
        assert part["records_read"] == part["end_offset"] - part["start_offset"], part
    assert manifest["records_read"] == 60 + 2 + 1 + 1 + 1 + 1


KILL_RECORDS = 40_000


def _replay_process(
    settings: config.Settings, request: replay.Request, out: Path
) -> subprocess.Popen[str]:
    """`gridstream replay` in a process group of its own (its JVM included)."""
    argv: Sequence[str] = [
        sys.executable, "-m", "gridstream.cli", "replay", "--from", str(request.from_ms),
        "--to", str(request.to_ms), "--out", str(out),
        "--chunk-offsets", str(request.chunk_offsets),
    ]  # fmt: skip
    env = {**os.environ, **config.as_env(settings), "PYTHONPATH": str(config.PROJECT_ROOT)}
    return subprocess.Popen(
        argv, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip


def _files(out: Path) -> Iterator[Path]:
    return (p for p in out.rglob("*.parquet") if not p.name.startswith("."))


def test_a_replay_killed_mid_way_and_run_again_has_each_record_once(
    local_stack: LocalStack, tmp_path: Path
) -> None:
    """SIGKILL the replay (CLI and JVM) once it has written some chunks, run it again: every
    offset of the range is one row, none twice, and the manifest counts them all."""
    sender = Sender(local_stack.settings)
    start = int(time.time() * 1000)
    for i in range(KILL_RECORDS):
        at_ms = start + i // 10  # four seconds of Kafka time
        _reading(sender, 2, f"ev-{i % 97}", at_ms, at_ms, f"k-{i}")
        if i % 10_000 == 0:
            sender.flush()
    sender.flush()
    request = replay.Request(start, start + KILL_RECORDS // 10, chunk_offsets=500)
    out = tmp_path / "dataset"
    first = _replay_process(local_stack.settings, request, out)
    try:
        deadline = time.monotonic() + 180
        while not any(_files(out)) and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert first.poll() is None, "the replay ended before it wrote a file"
        os.killpg(first.pid, signal.SIGKILL)
    finally:
        first.wait(30)
    assert not (out / replay.MANIFEST_FILE).exists()
    written_before = len(list(_files(out)))

    manifest = replay.run(local_stack.settings, request, out, say=lambda _: None)

    rows = ds.dataset(out / "readings", format="parquet").to_table(
        columns=["partition", "offset", "correlation_id"]
    )
    positions = list(zip(rows["partition"].to_pylist(), rows["offset"].to_pylist(), strict=True))
    assert 0 < written_before < len(list(_files(out)))
    assert len(positions) == len(set(positions)) == KILL_RECORDS
    assert set(rows["correlation_id"].to_pylist()) == {f"k-{i}" for i in range(KILL_RECORDS)}
    assert manifest["records_read"] == KILL_RECORDS
    assert not [p for p in out.rglob(".*") if p.is_file()]
