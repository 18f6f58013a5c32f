"""The local stack really starts, answers, is idempotent, and stops what it started."""

from __future__ import annotations

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource

from gridstream import topics
from gridstream.stack import LocalStack

pytestmark = pytest.mark.stack


def test_every_component_answers_after_up(local_stack: LocalStack) -> None:
    """Kafka, Redis, the registry and Flink all answer once `up` returns."""
    assert {s.name: s.answers for s in local_stack.status()} == {
        "kafka": True,
        "redis": True,
        "registry": True,
        "flink": True,
        "supervisor": True,
    }


def test_up_twice_starts_nothing_new(local_stack: LocalStack) -> None:
    """A second `up` finds everything running and creates no topic."""
    said: list[str] = []
    LocalStack(local_stack.settings, say=said.append).up()
    assert all("already up" in line for line in said[:5])
    assert "0 created" in said[5]


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
