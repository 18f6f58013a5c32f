"""Settings for a stack of a test's own."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from gridstream import config
from gridstream.stack.process import free_port_pair, free_ports


def private_settings(home: Path, **stack: Any) -> config.Settings:
    """The default settings with the stack in `home` on free loopback ports; `stack` overrides."""
    kafka, controller, registry, redis, rest, rpc = free_ports(6)
    ports = dataclasses.replace(
        config.load(env={}).stack,
        home=home,
        kafka_port=kafka,
        kafka_controller_port=controller,
        registry_port=registry,
        redis_port=redis,
        flink_rest_port=rest,
        flink_rpc_port=rpc,
        metrics_port=free_port_pair(),
        **stack,
    )
    return dataclasses.replace(config.load(env={}), stack=ports)
