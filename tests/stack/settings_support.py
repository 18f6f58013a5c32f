"""Settings for a stack of a test's own."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from gridstream import config
from gridstream.stack.process import on_free_ports


def private_settings(home: Path, **stack: Any) -> config.Settings:
    """The default settings with the stack in `home` on free loopback ports; `stack` overrides."""
    base = config.load(env={})
    ports = dataclasses.replace(on_free_ports(base.stack, home), **stack)
    return dataclasses.replace(base, stack=ports)
