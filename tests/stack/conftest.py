"""A whole local stack on free loopback ports in a temporary folder, shared by the stack tests."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest

from gridstream import config
from gridstream.stack import LocalStack
from gridstream.stack.components import Registry
from gridstream.stack.process import free_ports
from tests.stack.scenarios_support import job_running
from tests.stack.settings_support import private_settings


@pytest.fixture(scope="session")
def stack_settings(tmp_path_factory: pytest.TempPathFactory) -> config.Settings:
    """Settings for a private stack: its own folder and ports."""
    return private_settings(tmp_path_factory.mktemp("stack"))


@pytest.fixture(scope="session")
def local_stack(stack_settings: config.Settings) -> Iterator[LocalStack]:
    """The stack, started once for the session and always stopped."""
    stack = LocalStack(stack_settings, say=lambda line: None)
    try:
        stack.up()
        yield stack
    finally:
        stack.down()


@pytest.fixture(scope="module")
def settings(local_stack: LocalStack) -> Iterator[config.Settings]:
    """The stack's settings once the device-control job runs with the default job settings;
    cancelled at the end of the module. A module needing other job settings defines its own."""
    with job_running(local_stack) as running:
        yield running


@pytest.fixture
def registry_settings(tmp_path: Path) -> config.Settings:
    """Settings for a registry of the test's own: a folder and a free loopback port."""
    (port,) = free_ports(1)
    base = config.load(env={})
    stack = dataclasses.replace(base.stack, home=tmp_path / "stack", registry_port=port)
    return dataclasses.replace(base, stack=stack)


@pytest.fixture
def registry_server(registry_settings: config.Settings) -> Iterator[Registry]:
    """The stack's registry (AxonOps, in-memory, BACKWARD_TRANSITIVE) started empty for one
    test on a free loopback port, and stopped after it."""
    server = Registry(registry_settings)
    server.start()
    try:
        yield server
    finally:
        server.stop()
