"""Live scoring in the device-control job on a MiniCluster: a model trained by `gridstream
train` is loaded on the worker (skops, allow-list) and flags a strange reading; a model that
does not load leaves the job on its rules, with an alert."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from functions.pipeline import PipelinePolicy
from gridstream import config, topics
from gridstream.models.files import FENCES_FILE, METADATA_FILE
from gridstream.models.train import train
from jobs import device_control, environment
from jobs.io import CollectingSinks, CollectionSources
from schemas import models, serde
from tests import datasets
from tests.vocabulary import MINUTE_MS, catalog_schemas, input_row, record

pytestmark = pytest.mark.flink

NOW = int(time.time() * 1000)
T0 = NOW - 30 * MINUTE_MS
DEVICE = "thermostat-7"


def _inputs() -> list[Any]:
    registry = record(
        models.DeviceRecord, NOW, device_id=DEVICE, region_id="north", priority_level="STANDARD",
        device_class="THERMOSTAT", rated_power_kw=3.5, updated_ts_ms=T0, correlation_id="reg",
    )  # fmt: skip
    rows = [input_row(registry, DEVICE)]
    for minute in range(20):
        kw = 24.0 if minute == 15 else 2.0 + (minute % 3) * 0.1  # a spike of 7 times rated
        reading = record(
            models.IotTelemetry, NOW, device_id=DEVICE, ts_ms=T0 + minute * MINUTE_MS,
            power_kw=kw, correlation_id=f"r{minute}",
        )  # fmt: skip
        rows.append(input_row(reading, DEVICE))
    return rows


def _alerts(model_dir: Path) -> list[dict[str, Any]]:
    """The alerts of the job run over `_inputs()` with the model in `model_dir`."""
    env = environment.create(config.load(env={}), {"restart-strategy.type": "none"})
    sinks = CollectingSinks()
    watchdog = PipelinePolicy(freeze_enabled=False, silence_ms=1_000, tick_ms=500)
    policies = device_control.Policies(pipeline=watchdog, model_dir=str(model_dir))
    device_control.build(env, CollectionSources(_inputs()), sinks, policies=policies)
    alerts = serde.deserializer(models.Alert, catalog_schemas())
    return [
        alerts.read(bytes(b & 0xFF for b in value))[1]
        for topic, _key, value, _corr in sinks.collect()
        if topic == topics.ALERTS
    ]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model trained on a small synthetic fleet's history."""
    root = tmp_path_factory.mktemp("model")
    readings, registry = datasets.fleet(devices=24, hours=3.0)
    datasets.write(root / "data", readings, registry)
    train(root / "data", root / "model")
    return root / "model"


def test_the_job_flags_a_spike_with_a_trained_model(model_dir: Path) -> None:
    """The spike raises an ANOMALY alert for its reading, and the ordinary readings before it
    none (the drop back after it is a ramp of its own, which the model may flag too)."""
    anomalies = [a for a in _alerts(model_dir) if a["kind"] == "ANOMALY"]

    flagged = [a["correlation_id"] for a in anomalies]
    assert flagged[0] == "r15"
    assert set(flagged) <= {"r15", "r16"}
    assert {a["device_id"] for a in anomalies} == {DEVICE}


def test_a_corrupt_model_leaves_the_job_on_its_rules_with_an_alert(
    model_dir: Path, tmp_path: Path
) -> None:
    """Bands that are not a model's: MODEL_DEGRADED (saying why), no ANOMALY, the job runs."""
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / METADATA_FILE).write_bytes((model_dir / METADATA_FILE).read_bytes())
    (broken / FENCES_FILE).write_text('{"THERMOSTAT": {"low": [0.0]}}')

    kinds = [a["kind"] for a in _alerts(broken)]

    assert "MODEL_DEGRADED" in kinds
    assert "ANOMALY" not in kinds
