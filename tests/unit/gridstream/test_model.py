"""Training, saving, loading and evaluating the anomaly model, and its CLI, on small datasets
written to the replay contract (`tests.datasets`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import skops.io as sio

from functions import anomaly, device
from gridstream.cli import main
from gridstream.models import dataset, evaluate, files, train
from schemas.models import Cause, DeviceClass
from state import device as device_state
from tests import datasets
from tests.vocabulary import HOUR_MS, MINUTE_MS, SECOND_MS

pytestmark = pytest.mark.unit

T0 = datasets.T0_MS


@pytest.fixture(scope="module")
def fleet_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Half a day of a small synthetic fleet: 40 IoT devices and 2 feeders."""
    readings, registry = datasets.fleet(devices=40, hours=12)
    return datasets.write(tmp_path_factory.mktemp("fleet") / "data", readings, registry)


@pytest.fixture(scope="module")
def model_dir(fleet_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The model trained on the first 80 % of `fleet_data`."""
    out = tmp_path_factory.mktemp("model")
    train.train(fleet_data, out)
    return out


def _live_record(row: dict[str, Any]) -> dict[str, Any]:
    """A readings row back in the shape the Avro reader schema decodes (what the job sees)."""
    keep = ("device_id", "device_class", "ts_ms", "correlation_id", "power_kw")
    record = {k: row[k] for k in keep}
    if row["device_class"] == "FEEDER_BREAKER":
        quality = {q: row[f"quality_{q}"] for q in datasets.QUALITY}
        scada = {k: row[k] for k in ("voltage_kv", "switch_closed")}
        return {**record, **scada, "quality": quality}
    fields = ("is_on", "customer_override", "firmware_version")
    return {**record, **{k: row[k] for k in fields}, "setpoint_c": None}


def _history() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Two devices' readings with the awkward cases: a duplicate, a late reading, a SCADA
    reading with a quality flag, an override, a registry move between regions, deletions."""
    t = T0
    iot = [datasets.reading("th-1", "THERMOSTAT", t + i * MINUTE_MS, kw)
           for i, kw in enumerate([0.0, 3.1, 3.3, 3.3, 0.0, 3.2])]  # fmt: skip
    iot.append(datasets.reading("th-1", "THERMOSTAT", t + 2 * MINUTE_MS, 3.3))  # a duplicate
    iot.append(
        datasets.reading("th-1", "THERMOSTAT", t + 7 * MINUTE_MS, 2.9, customer_override=True)
    )
    late = datasets.reading("th-1", "THERMOSTAT", t + 6 * MINUTE_MS + 30 * SECOND_MS, 9.0)
    iot.append({**late, "kafka_ts_ms": t + 8 * MINUTE_MS})  # arrives after the 7th minute's
    scada = [datasets.reading("fb-1", "FEEDER_BREAKER", t + i * 10 * SECOND_MS, 5_000.0 + 10 * i,
                              quality_invalid=i == 3) for i in range(8)]  # fmt: skip
    registry = [
        datasets.registration("th-1", "THERMOSTAT", "north", t - HOUR_MS, 4.0),
        datasets.registration("fb-1", "FEEDER_BREAKER", "south", t - HOUR_MS, 12_000.0),
        datasets.registration("th-1", "THERMOSTAT", "east", t + 4 * MINUTE_MS + 1, 4.0),
        datasets.tombstone("fb-1", t + 55 * SECOND_MS),  # its last two readings: unregistered
        datasets.tombstone("gone-1", t),  # a device with no reading at all
    ]
    return iot + scada, registry


def test_training_and_live_compute_the_same_features(tmp_path: Path) -> None:
    """Replaying the dataset gives each reading the features the live stage gives it: the
    record as the job decodes it (`jobs.records` calls `telemetry_of`), `device.step`, and the
    state through its codec between inputs."""
    readings, registry = _history()
    data = datasets.write(tmp_path / "data", readings, registry)
    norms = {
        "THERMOSTAT": anomaly.Norms(2.0, {"north": 3.0}, 60_000.0),
        "FEEDER_BREAKER": anomaly.Norms(4_000.0, {}, 10_000.0),
    }
    trained = [(s.device_id, s.ts_ms, s.features) for s in train.replay(dataset.read(data), norms)]

    cause = Cause(source_topic="test", source_partition=0, source_offset=0)
    arrivals = sorted(
        [(r["kafka_ts_ms"], 0, r["offset"], r) for r in registry]
        + [(r["kafka_ts_ms"], 1, r["offset"], r) for r in readings],
        key=lambda a: a[:3],
    )
    saved: dict[str, bytes] = {}
    live = []
    for _, kind, _, row in arrivals:
        raw = saved.get(row["device_id"])
        state = None if raw is None else device_state.decode(raw)
        if kind == 0:
            event: Any = dataset._registry_event(row)
        else:
            event = device.telemetry_of(_live_record(row), cause)
            info = None if state is None else state.info
            x = None if info is None else anomaly.features(state, event, norms[info.device_class])
            if x is not None:
                live.append((row["device_id"], row["ts_ms"], x))
        ctx = device.Context(now_ms=row["kafka_ts_ms"], region=device.RegionMode.NORMAL)
        new = device.step(state, event, ctx).state
        saved[row["device_id"]] = device_state.encode(new) if new else b""

    assert sorted(trained) == sorted(live)
    assert len(live) == len(readings) - 4  # not the duplicate, the late one, nor unregistered


def test_a_dataset_row_becomes_the_reading_the_job_decodes() -> None:
    """IoT and SCADA rows (quality flag raised or not) give the job's own stage event."""
    rows = [
        datasets.reading("th-1", "THERMOSTAT", T0, 3.1, customer_override=True),
        datasets.reading("fb-1", "FEEDER_BREAKER", T0, 5_000.0, quality_blocked=True),
        datasets.reading("fb-1", "FEEDER_BREAKER", T0, -20.0, switch_closed=True),
    ]

    for row in rows:
        live = device.telemetry_of(_live_record(row), dataset._CAUSE)
        assert dataset.reading_event(row) == live


def test_a_trained_model_loads_with_the_fences_it_learned(
    fleet_data: Path, model_dir: Path
) -> None:
    """Save then load: each class's fence is the one fitted on the training window's features."""
    meta = json.loads((model_dir / files.METADATA_FILE).read_text())
    loaded = train.load(model_dir)
    start, split = meta["training_range_ms"]
    norms = {cls: m.norms for cls, m in loaded.classes.items()}
    features = [s for s in train.replay(dataset.read(fleet_data), norms) if s.ts_ms < split]

    thermostats = [s.features for s in features if s.device_class == "THERMOSTAT"]

    assert loaded.for_class("THERMOSTAT") is not None
    assert loaded.classes["THERMOSTAT"].scorer == train.Fences().fit(thermostats).fence()
    assert set(loaded.classes) == {"THERMOSTAT", "EV_CHARGER", "POOL_PUMP", "WATER_HEATER",
                                   "FEEDER_BREAKER"}  # fmt: skip
    assert meta["features"] == {
        "names": list(anomaly.FEATURE_NAMES),
        "version": anomaly.FEATURES_VERSION,
    }
    assert meta["rows"]["THERMOSTAT"] == len(thermostats)
    assert set(meta["libraries"]) == {"scikit-learn", "skops", "numpy", "pyarrow"}
    assert meta["schema_ids_seen"] == [1, 2]
    assert start < split < meta["data_range_ms"][1]
    assert loaded.for_class(DeviceClass.LINE_SWITCH.value) is None


def test_the_live_job_reads_the_same_model_from_its_bands_as_from_the_skops_file(
    model_dir: Path, tmp_path: Path
) -> None:
    """`load_fences` (what the device stage reads, no scikit-learn) gives every class the
    scorer and norms `load` gives from the skops file; bands of another width are refused."""
    live, full = files.load_fences(model_dir), train.load(model_dir)

    assert live.classes == full.classes

    other = tmp_path / "other"
    other.mkdir()
    (other / files.METADATA_FILE).write_bytes((model_dir / files.METADATA_FILE).read_bytes())
    (other / files.FENCES_FILE).write_text('{"THERMOSTAT": {"low": [0], "high": [1], '
                                           '"width": [1], "threshold": 1}}')  # fmt: skip
    with pytest.raises(files.ModelUnreadableError, match="features"):
        files.load_fences(other)


def test_the_replay_manifest_range_and_schema_versions_go_into_the_metadata(tmp_path: Path) -> None:
    """What the replay says of its range and schemas is kept beside the model."""
    data = datasets.write(tmp_path / "data", *datasets.fleet(devices=4, hours=1))
    schemas = {"iot.telemetry": [{"schema_id": 2, "subject": "iot.telemetry-value", "version": 2}]}
    manifest = {"from_ms": T0, "to_ms": T0 + HOUR_MS, "schemas": schemas, "partitions": []}
    (data / dataset.MANIFEST).write_text(json.dumps(manifest))

    meta = train.train(data, tmp_path / "model")

    assert meta["manifest"] == {"from_ms": T0, "to_ms": T0 + HOUR_MS, "schemas": schemas}


def _copy(model_dir: Path, to: Path) -> Path:
    to.mkdir()
    for name in (files.MODEL_FILE, files.METADATA_FILE):
        (to / name).write_bytes((model_dir / name).read_bytes())
    return to


class Untrusted:
    """A type no allow-list names."""


def test_a_model_file_with_an_untrusted_type_is_refused(model_dir: Path, tmp_path: Path) -> None:
    """A file holding a type outside the allow-list is not loaded, and the error names it."""
    bad = _copy(model_dir, tmp_path / "bad")
    sio.dump({"THERMOSTAT": Untrusted()}, bad / files.MODEL_FILE)

    with pytest.raises(files.UntrustedModelError, match=r"test_model\.Untrusted"):
        train.load(bad)


@pytest.mark.parametrize(
    "features",
    [
        {"names": list(anomaly.FEATURE_NAMES), "version": anomaly.FEATURES_VERSION + 1},
        {"names": list(anomaly.FEATURE_NAMES[:-1]), "version": anomaly.FEATURES_VERSION},
    ],
)
def test_a_model_trained_on_other_features_is_refused(
    model_dir: Path, tmp_path: Path, features: dict[str, Any]
) -> None:
    """Another feature version or list: the model's bands mean something else."""
    other = _copy(model_dir, tmp_path / "other")
    meta = json.loads((other / files.METADATA_FILE).read_text())
    (other / files.METADATA_FILE).write_text(json.dumps({**meta, "features": features}))

    with pytest.raises(files.FeatureMismatchError, match="retrain"):
        train.load(other)


def test_a_missing_or_corrupt_model_is_unreadable(model_dir: Path, tmp_path: Path) -> None:
    """No folder, or a model file that is not skops: a typed error the job can fall back on."""
    corrupt = _copy(model_dir, tmp_path / "corrupt")
    (corrupt / files.MODEL_FILE).write_bytes(b"not a zip")

    with pytest.raises(files.ModelUnreadableError, match="gridstream train"):
        train.load(tmp_path / "nowhere")
    with pytest.raises(files.ModelUnreadableError):
        train.load(corrupt)


def test_evaluation_finds_the_injected_faulty_firmware(fleet_data: Path, model_dir: Path) -> None:
    """On the held-out window, the faults are found (recall >= 0.9) and few healthy readings
    are flagged (precision >= 0.7; the misses are mostly a spike's next reading ramping back)."""
    result = evaluate.evaluate(fleet_data, model_dir)

    assert result.recall >= 0.9
    assert result.precision >= 0.7
    assert set(result.recall_by_kind) == set(evaluate.FAULT_KINDS)
    healthy_flags = result.false_positives - result.false_positives_on_faulty
    assert healthy_flags <= 0.001 * result.readings
    assert set(result.rollout_alerts) == {evaluate.FAULTY_FIRMWARE}  # the healthy ones stay quiet


def test_cli_trains_and_evaluates_a_dataset(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`gridstream train` then `gridstream evaluate --plot` on a tiny dataset."""
    data = datasets.write(tmp_path / "data", *datasets.fleet(devices=12, hours=3, seed=2))
    model, plot = tmp_path / "model", tmp_path / "scores.png"

    assert main(["train", "--data", str(data), "--out", str(model)]) == 0
    assert main(["evaluate", "--data", str(data), "--model", str(model), "--plot", str(plot)]) == 0

    out = capsys.readouterr()
    assert "precision" in out.out
    assert "features:" in out.err  # progress
    assert plot.read_bytes().startswith(b"\x89PNG")


def test_cli_says_what_to_do_with_a_folder_that_is_no_dataset(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Exit 2 and a message naming the command that writes a dataset."""
    assert main(["train", "--data", str(tmp_path), "--out", str(tmp_path / "m")]) == 2
    assert "gridstream replay" in capsys.readouterr().err
