"""The device-control job's graph as it is submitted: what a savepoint needs of it."""

from __future__ import annotations

from typing import Any

import pytest

from gridstream import config, topics
from jobs import device_control, environment
from jobs.io import KafkaConnection, KafkaSinks, KafkaSources

pytestmark = pytest.mark.flink

STAGES = {"device stage", "region stage", "region budget", "pipeline watch", "roster keeper"}
STATE_FACTORIES = {"SourceOperatorFactory", "SinkWriterOperatorFactory", "CommitterOperatorFactory"}


def _stream_nodes() -> list[Any]:
    """The stream graph's nodes of the Kafka job, after PyFlink's own rewriting (chaining)."""
    env = environment.create(config.load(env={}))
    kafka = KafkaConnection(bootstrap_servers="127.0.0.1:9", group_id="graph-only")
    device_control.build(env, KafkaSources(kafka, topics.INPUTS), KafkaSinks(kafka, topics.OUTPUTS))
    graph = env._generate_stream_graph(job_name="graph-only")  # what `execute` submits
    nodes = graph.getStreamNodes().iterator()
    return [nodes.next() for _ in range(graph.getStreamNodes().size())]


def _keeps_state(node: Any) -> bool:
    """Keyed operators, sources, and sink writers and committers are the ones with state."""
    factory = node.getOperatorFactory()
    return node.getStateKeySerializer() is not None or (
        factory is not None and factory.getClass().getSimpleName() in STATE_FACTORIES
    )


def test_every_operator_that_keeps_state_has_a_fixed_uid() -> None:
    """A savepoint maps state to operators by uid. One without a uid gets an id hashed from the
    graph's shape, so any later change to the graph would orphan its state: the Kafka source's
    offsets, the sink's transactions, a stage's devices (0.5's Kafka source and sink had none)."""
    stateful = {
        node.getOperatorName(): node.getTransformationUID()
        for node in _stream_nodes()
        if _keeps_state(node)
    }
    assert {name: uid for name, uid in stateful.items() if uid is None} == {}
    names = set(stateful)
    assert names >= STAGES
    # The planner's node ids that 0.6 and later savepoints hold the offsets and transactions
    # under: a change to the SQL of jobs/io.py must keep them.
    assert {uid for name, uid in stateful.items() if name.startswith("Source: ")} == {"1_source"}
    assert {uid for name, uid in stateful.items() if name.endswith(": Writer")} == {"6_sink"}
    assert {uid for name, uid in stateful.items() if name.endswith(": Committer")} == {
        "Sink Committer: 6_sink"
    }
