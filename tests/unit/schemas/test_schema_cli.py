"""The `schemas` command line and the registry settings it builds (no server needed)."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient

from gridstream.config import PROJECT_ROOT, Settings
from schemas import cli
from schemas.registry import USER_INFO_ENV, RegistryConfig

pytestmark = pytest.mark.unit


def test_add_commands_mounts_check_and_register_under_schemas() -> None:
    """A parent CLI gets `schemas check|register`, each with a `run(args, settings)`."""
    top = argparse.ArgumentParser(prog="gridstream")
    cli.add_commands(top.add_subparsers(dest="command", required=True))

    check = top.parse_args(["schemas", "check"])
    register = top.parse_args(["schemas", "register", "--registry", "http://sr:8081"])

    assert check.run(check, Settings()) == 0
    assert (register.registry, callable(register.run)) == ("http://sr:8081", True)


def test_python_dash_m_schemas_cli_check_passes_on_the_real_schemas() -> None:
    """`python -m schemas.cli check`, as `make test` runs it, exits 0."""
    done = subprocess.run(
        [sys.executable, "-m", "schemas.cli", "check"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )

    assert done.returncode == 0, done.stderr
    assert "ok   iot_telemetry: v1..v2 BACKWARD_TRANSITIVE" in done.stdout


def test_the_registry_defaults_to_the_local_stack_and_takes_basic_auth_from_the_env() -> None:
    """No URL means the stack's registry; the user info comes from the env, never printed."""
    config = RegistryConfig.from_settings(Settings(), env={USER_INFO_ENV: "svc:s3cret"})

    assert config.url == Settings().stack.registry_url
    assert config.client_conf()["basic.auth.user.info"] == "svc:s3cret"
    assert "s3cret" not in repr(config)
    SchemaRegistryClient(config.client_conf())  # the client accepts every key


def test_an_explicit_url_wins_and_no_auth_is_sent_without_user_info() -> None:
    """--registry URL overrides the stack; an empty env means no basic auth keys."""
    config = RegistryConfig.from_settings(Settings(), "https://sr.example:8081", env={})

    assert config.client_conf() == {
        "url": "https://sr.example:8081",
        "timeout": 10.0,
        "max.retries": 3,
    }
