"""The device-control job's graph as it is submitted: what a savepoint needs of it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gridstream import config, topics
from jobs import device_control, environment
from jobs.io import KafkaConnection, KafkaSinks, KafkaSources

pytestmark = pytest.mark.flink

ROOT = Path(__file__).resolve().parents[2]
GRAPH = "tests.flink.test_job_graph"
STAGES = {"device stage", "region stage", "region budget", "pipeline watch", "roster keeper"}
STATE_FACTORIES = {"SourceOperatorFactory", "SinkWriterOperatorFactory", "CommitterOperatorFactory"}


def _stream_nodes() -> list[Any]:
    """The stream graph's nodes of the Kafka job, after PyFlink's own rewriting (chaining)."""
    env = environment.create(config.load(env={}))
    kafka = KafkaConnection(bootstrap_servers="127.0.0.1:9", group_id="graph-only")
    device_control.build(env, KafkaSources(kafka), KafkaSinks(kafka, topics.OUTPUTS))
    graph = env._generate_stream_graph(job_name="graph-only")  # what `execute` submits
    nodes = graph.getStreamNodes().iterator()
    return [nodes.next() for _ in range(graph.getStreamNodes().size())]


def _keeps_state(node: Any) -> bool:
    """Keyed operators, sources, and sink writers and committers are the ones with state."""
    factory = node.getOperatorFactory()
    return node.getStateKeySerializer() is not None or (
        factory is not None and factory.getClass().getSimpleName() in STATE_FACTORIES
    )


def stateful_uids() -> dict[str, str | None]:
    """The uid of each operator of the job that keeps state, by name."""
    return {
        node.getOperatorName(): node.getTransformationUID()
        for node in _stream_nodes()
        if _keeps_state(node)
    }


def test_every_operator_that_keeps_state_has_a_fixed_uid() -> None:
    """A savepoint maps state to operators by uid. One without a uid gets an id hashed from the
    graph's shape, so any later change to the graph would orphan its state: the Kafka source's
    offsets, the sink's transactions, a stage's devices (0.5's Kafka source and sink had none).

    The planner numbers its nodes across the process, so the graph is built in a process of its
    own, as `gridstream job start` submits it."""
    built = subprocess.run(
        [sys.executable, "-c", f"import json, {GRAPH} as g; print(json.dumps(g.stateful_uids()))"],
        capture_output=True, text=True, check=True, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    stateful = json.loads(built.stdout.strip().splitlines()[-1])
    assert {name: uid for name, uid in stateful.items() if uid is None} == {}
    names = set(stateful)
    assert names >= STAGES
    # The uids savepoints hold the offsets and transactions under (a table environment's name
    # and the planner's node id): a change to jobs/io.py must keep them. The control source
    # and the sink have had theirs since 0.8; telemetry and the registry since their split.
    assert {uid for name, uid in stateful.items() if name.startswith("Source: ")} == {
        "telemetry-1_source",
        "control-10_source",
        "registry_source",
    }
    assert {uid for name, uid in stateful.items() if name.endswith(": Writer")} == {
        "outputs-15_sink"
    }
    assert {uid for name, uid in stateful.items() if name.endswith(": Committer")} == {
        "Sink Committer: outputs-15_sink"
    }


def test_a_jobs_own_environment_starts_no_metric_reporter() -> None:
    """Reporters are the cluster's: a local MiniCluster (replay, tests) opens no endpoint."""
    env = environment.create(config.load(env={}))
    keys = dict(env._j_stream_execution_environment.getConfiguration().toMap())
    assert [k for k in keys if k.startswith("metrics.reporter.")] == []
    assert keys["state.backend.type"] == "rocksdb"  # the project file's keys are there
