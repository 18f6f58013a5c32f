"""The pure modules never import pyflink, checked in a fresh interpreter per module."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

PURE_PACKAGES = ("functions", "state", "schemas")
ADAPTERS = {"functions.operators"}  # the one place the Flink API is allowed
PROJECT_ROOT = Path(__file__).resolve().parents[2]


def _pure_modules() -> list[str]:
    names = []
    for package in PURE_PACKAGES:
        names.append(package)
        path = importlib.import_module(package).__path__
        names += [m.name for m in pkgutil.walk_packages(path, f"{package}.")]
    return sorted(set(names) - ADAPTERS)


def test_pure_modules_are_discovered() -> None:
    """Discovery finds the known pure modules, so an empty parametrization cannot pass silently."""
    assert {"functions.device", "functions.region", "state.device", "state.mirror"} <= set(
        _pure_modules()
    )


@pytest.mark.parametrize("module", _pure_modules())
def test_pure_module_never_imports_pyflink(module: str) -> None:
    """Importing the module alone loads no `pyflink` module."""
    check = (
        f"import sys, {module}; "
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] == 'pyflink'); "
        "assert not loaded, loaded"
    )

    result = subprocess.run(
        [sys.executable, "-c", check], capture_output=True, text=True, check=False, cwd=PROJECT_ROOT
    )

    assert result.returncode == 0, f"{module} pulls in pyflink:\n{result.stderr}"
