"""The local stack really starts, answers, is idempotent, and stops what it started."""

from __future__ import annotations

import json
import os
import signal

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient

from gridstream import topics
from gridstream.stack import LocalStack
from gridstream.stack.process import wait_until
from schemas import models, serde
from schemas.examples import EXAMPLE_NOW_MS, example
from schemas.registry import Registry, RegistryConfig

pytestmark = pytest.mark.stack


def test_every_component_answers_after_up(local_stack: LocalStack) -> None:
    """Kafka, Redis, the registry, ZooKeeper (Flink's HA, on by default), Flink and its
    supervisor all answer once `up` returns."""
    assert {s.name: s.answers for s in local_stack.status()} == {
        "kafka": True,
        "redis": True,
        "registry": True,
        "zookeeper": True,
        "flink": True,
        "supervisor": True,
    }


def test_up_twice_starts_nothing_new(local_stack: LocalStack) -> None:
    """A second `up` finds everything running and creates no topic."""
    said: list[str] = []
    LocalStack(local_stack.settings, say=said.append).up()
    components = len(local_stack.components)
    assert all("already up" in line for line in said[:components])
    assert "0 created" in said[components]


def test_design_topics_exist_and_registry_topic_is_compacted(local_stack: LocalStack) -> None:
    """Every DESIGN.md topic exists; `device.registry` is compacted."""
    admin = AdminClient({"bootstrap.servers": local_stack.settings.stack.bootstrap_servers})
    existing = admin.list_topics(timeout=10).topics
    assert set(topics.INPUTS + topics.OUTPUTS) <= set(existing)
    assert len(existing[topics.IOT_TELEMETRY].partitions) == local_stack.settings.stack.partitions
    resource = ConfigResource(ConfigResource.Type.TOPIC, topics.DEVICE_REGISTRY)
    configs = admin.describe_configs([resource])[resource].result()
    assert configs["cleanup.policy"].value == "compact"


def test_down_leaves_foreign_servers_alone(local_stack: LocalStack) -> None:
    """A stack object that started nothing stops nothing, even with everything running."""
    other_home = local_stack.settings.stack.home.parent / "not-mine"
    foreign = LocalStack(
        type(local_stack.settings)(
            stack=type(local_stack.settings.stack)(
                **{**local_stack.settings.stack.__dict__, "home": other_home}
            ),
            job=local_stack.settings.job,
        ),
        say=lambda line: None,
    )
    foreign.down()
    assert all(s.answers for s in local_stack.status())


def _ids(url: str) -> dict[tuple[str, int], int]:
    """Every (subject, version) the registry at `url` holds, and its schema id."""
    client = SchemaRegistryClient({"url": url})
    return {
        (subject, version): client.get_version(subject, version).schema_id or 0
        for subject in client.get_subjects()
        for version in client.get_versions(subject)
    }


def test_a_killed_registry_comes_back_from_up_with_every_schema_id(local_stack: LocalStack) -> None:
    """`up` restarts a registry killed with SIGKILL (memory storage, no snapshot at stop) from
    the snapshot the previous `up` wrote: every version keeps its id, the one registered by
    hand too, so a record written before the kill still decodes."""
    url = local_stack.registry.address
    probe = {"type": "record", "name": "Probe", "namespace": "gs.test", "fields": []}
    probe_id = SchemaRegistryClient({"url": url}).register_schema(
        "restart-probe-value", Schema(json.dumps(probe), "AVRO")
    )
    LocalStack(local_stack.settings, say=lambda line: None).up()  # snapshots the probe too
    before = _ids(url)
    written = serde.serializer(models.IotTelemetry, Registry(RegistryConfig(url)).schemas())
    payload = written.encode(example(models.IotTelemetry))

    pid = local_stack.registry.process.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    assert wait_until(lambda: not local_stack.registry.answers(), 10)
    LocalStack(local_stack.settings, say=lambda line: None).up()

    assert _ids(url) == before
    assert before[("restart-probe-value", 1)] == probe_id
    reader = serde.deserializer(models.IotTelemetry, Registry(RegistryConfig(url)).schemas())
    assert reader.decode(payload, EXAMPLE_NOW_MS) == example(models.IotTelemetry)
