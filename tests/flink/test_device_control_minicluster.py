"""The device-control topology on a local MiniCluster, collection in, collection out."""

from __future__ import annotations

from collections import Counter

import pytest

from gridstream import config, topics
from jobs import device_control, environment
from jobs.io import CollectingSinks, CollectionSources, input_row, json_rows

pytestmark = pytest.mark.flink

DEVICES = 7
READINGS = 60
T0 = 1_790_000_000_000


def _rows() -> list:
    return [
        input_row(
            topics.IOT_TELEMETRY, 0, i, T0 + i * 1000, f"dev-{i % DEVICES}".encode(), b"{}", f"c{i}"
        )
        for i in range(READINGS)
    ]


@pytest.mark.parametrize("parallelism", [1, 2])
def test_each_reading_is_audited_once_and_each_silent_device_alerted_once(
    parallelism: int,
) -> None:
    """One audit record per reading; at end of input every device is silent: one loss alert each."""
    env = environment.create(config.load(env={}), {"parallelism.default": str(parallelism)})
    sinks = CollectingSinks()
    device_control.build(env, CollectionSources(_rows()), sinks)
    outputs = json_rows(sinks.collect())

    audits = [o for o in outputs if o["topic"] == topics.AUDIT]
    assert sorted(o["correlation_id"] for o in audits) == sorted(f"c{i}" for i in range(READINGS))
    per_device = Counter(o["device_id"] for o in audits)
    assert per_device == {f"dev-{d}": len(range(d, READINGS, DEVICES)) for d in range(DEVICES)}
    alerts = Counter((o["device_id"], o["alert"]) for o in outputs if o["topic"] == topics.ALERTS)
    assert alerts == {(f"dev-{d}", "TELEMETRY_LOSS"): 1 for d in range(DEVICES)}
