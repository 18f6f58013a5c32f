"""The local stack: Kafka, Redis, a schema registry (AxonOps), ZooKeeper and a Flink session
cluster."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

from confluent_kafka.admin import AdminClient, NewTopic

from gridstream import topics
from gridstream.config import Settings
from gridstream.stack.components import (
    Component,
    Flink,
    Kafka,
    Redis,
    Registry,
    Supervisor,
    ZooKeeper,
)
from gridstream.stack.process import ComponentError
from gridstream.stack.security import BrokerSecurity
from schemas import catalog
from schemas.registry import Registry as SchemaRegistry
from schemas.registry import RegistryConfig

__all__ = ["ComponentError", "ComponentStatus", "LocalStack"]


@dataclasses.dataclass(frozen=True)
class ComponentStatus:
    """One line of `gridstream stack status`."""

    name: str
    address: str
    answers: bool


class LocalStack:
    """Starts, checks and stops the stack's components, in dependency order."""

    def __init__(
        self,
        settings: Settings,
        say: Callable[[str], None] = print,
        security: BrokerSecurity | None = None,
    ) -> None:
        self.settings = settings
        self.say = say
        self.kafka = Kafka(settings, security)
        self.redis = Redis(settings)
        self.registry = Registry(settings)
        self.zookeeper = ZooKeeper(settings)
        self.flink = Flink(settings)
        self.supervisor = Supervisor(settings)
        self.components: tuple[Component, ...] = (
            self.kafka,
            self.redis,
            self.registry,
            *((self.zookeeper,) if settings.stack.flink_ha else ()),  # Flink's HA: before it
            self.flink,
            self.supervisor,  # after Flink: it restarts Flink's daemons, so stops first
        )

    def up(self) -> None:
        """Start whatever does not answer yet, then make sure the topics exist (idempotent)."""
        self.settings.stack.home.mkdir(parents=True, exist_ok=True)
        for component in self.components:
            if component.answers():
                self.say(f"{component.name:<10} already up at {component.address}")
                continue
            started = time.monotonic()
            self.say(f"{component.name:<10} starting ...")
            component.start()
            took = time.monotonic() - started
            self.say(f"{component.name:<10} up at {component.address} ({took:.1f}s)")
        created = self.create_topics()
        self.say(f"topics     {len(created)} created, {len(topics.INPUTS + topics.OUTPUTS)} in all")
        registered = SchemaRegistry(RegistryConfig.from_settings(self.settings)).register(
            catalog.default()
        )
        self.registry.snapshot()  # the new ids survive even a registry that is killed
        self.say(f"schemas    {len(registered)} versions registered at {self.registry.address}")

    def down(self) -> None:
        """Stop, in reverse order, only the components this stack started."""
        for component in reversed(self.components):
            stopped = component.stop()
            self.say(f"{component.name:<10} {'stopped' if stopped else 'was not started here'}")

    def status(self) -> list[ComponentStatus]:
        """Each component, its address and whether it answers."""
        return [ComponentStatus(c.name, c.address, c.answers()) for c in self.components]

    def create_topics(self) -> list[str]:
        """Create the DESIGN.md topics that are missing; return the names created."""
        admin = AdminClient(self.kafka.admin_config())
        existing = set(admin.list_topics(timeout=10).topics)
        wanted = [
            NewTopic(
                name,
                num_partitions=self.settings.stack.partitions,
                replication_factor=1,
                config=dict(topics.TOPIC_CONFIGS.get(name, {})),
            )
            for name in topics.INPUTS + topics.OUTPUTS
            if name not in existing
        ]
        if not wanted:
            return []
        for name, future in admin.create_topics(wanted, operation_timeout=30).items():
            try:
                future.result()
            except Exception as err:
                if "TOPIC_ALREADY_EXISTS" not in str(err):
                    raise ComponentError(f"kafka: creating topic {name} failed: {err}") from err
        return [t.topic for t in wanted]
