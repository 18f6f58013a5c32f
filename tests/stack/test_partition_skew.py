"""A backlog read one Kafka partition ahead of another raises no TELEMETRY_LOSS for a SCADA
breaker whose readings never stopped.

While the job is stopped (a savepoint, `OUTAGE_S`, a start from it) one breaker on each
partition of `scada.telemetry` keeps reporting, and so do `FILLER` unregistered points on the
first partition only: that partition's backlog is far larger, so the restored job reads one
partition well ahead of the other. A watermark made per subtask (3e042bb and before) then passes
a breaker's deadline on the other partition's readings before its own were read: a false
TELEMETRY_LOSS (and TELEMETRY_RESTORED). A third breaker falls silent for the outage, so the test
would see a loss if one were raised.
"""

from __future__ import annotations

import time

import pytest

from gridstream import topics
from gridstream.config import Settings
from gridstream.deploy import start_job, stop_job
from gridstream.scenario import Scenario, dump, play
from gridstream.stack import LocalStack
from tests.stack.adversarial_support import FEEDER, SECOND_MS, mirrored, reporting
from tests.stack.faults_support import committed, running_job
from tests.stack.scenarios_support import keyed_onto, now_ms, of, quiet, unique, until

pytestmark = pytest.mark.stack

OUTAGE_S = 40.0  # plus the savepoint and the submission: well over 15 s timeout + 5 s bound
FILLER = 400  # points reporting every second, all on the first partition


def test_a_backlog_read_one_partition_ahead_raises_no_loss_for_breakers_that_kept_reporting(
    settings: Settings, local_stack: LocalStack
) -> None:
    """After an outage whose backlog is mostly one partition's, the breakers that reported
    throughout (one per partition) have no TELEMETRY_LOSS; the one silent meanwhile has one."""
    partitions = settings.stack.partitions
    steady = [keyed_onto(unique("breaker"), p, partitions) for p in range(partitions)]
    silent = unique("silent-breaker")
    region = unique("region")
    registry = Scenario()
    for breaker in (*steady, silent):
        registry = registry.registry(
            device_id=breaker, device_class="FEEDER_BREAKER", region_id=region
        )
    play(settings, registry, quiet)
    points = (keyed_onto(unique("filler-point"), 0, partitions) for _ in range(FILLER))
    filler = dict.fromkeys(points, FEEDER)
    stack, flink = LocalStack(settings, say=quiet), local_stack.flink

    with reporting(settings, {**dict.fromkeys(steady, FEEDER), **filler}, every_ms=SECOND_MS):
        with reporting(settings, {silent: FEEDER}, every_ms=SECOND_MS):
            mirrored(settings, dict.fromkeys((*steady, silent), region))
        stopped = time.monotonic()
        savepoint = stop_job(stack)
        time.sleep(OUTAGE_S)
        start_job(stack, savepoint)
        restarted_ms, outage_s = now_ms(), time.monotonic() - stopped
        committed(settings, flink, running_job(flink), steady, restarted_ms)
        caught_up_s = time.monotonic() - stopped - outage_s
        found = until(
            settings,
            [*steady, silent],
            lambda f: any(a["kind"] == "TELEMETRY_LOSS" for a in of(f, topics.ALERTS, silent)),
            f"TELEMETRY_LOSS of {silent}, silent through the outage",
        )
    print(f"job down {outage_s:.1f}s; its backlog read and committed {caught_up_s:.1f}s later")

    landed = {
        r["device_id"]: r["_kafka"]["partition"] for r in dump(settings, topics.SCADA_TELEMETRY)
    }
    placed = [landed[b] for b in steady], {landed[p] for p in filler}
    assert placed == (list(range(partitions)), {0}), (
        f"not the partitions `keyed_onto` meant: {placed}"
    )
    alerts = [(a["kind"], a["device_id"], a["message"]) for a in found[topics.ALERTS]]
    lost = {device for kind, device, _ in alerts if kind == "TELEMETRY_LOSS"}
    assert silent in lost, alerts
    assert not lost & set(steady), f"breakers that never stopped reporting lost: {alerts}"
