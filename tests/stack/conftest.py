"""A whole local stack on free loopback ports in a temporary folder, shared by the stack tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from gridstream import config
from gridstream.stack import LocalStack
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
