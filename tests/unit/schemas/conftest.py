"""Fixtures of the schema tests: the catalog's schema table and a writable copy of the tree."""

from __future__ import annotations

import copy
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from schemas import catalog
from schemas.serde import StaticSchemas


@pytest.fixture
def schema_table() -> StaticSchemas:
    """Ids 1, 2, ... for every schema version in `schemas/avro`, as a registry would hold them."""
    return StaticSchemas.from_catalog(catalog.default())


@pytest.fixture
def schema_tree(tmp_path: Path) -> Path:
    """A writable copy of `schemas/avro`."""
    return Path(shutil.copytree(catalog.AVRO_ROOT, tmp_path / "avro"))


@pytest.fixture
def new_version(schema_tree: Path) -> Callable[[str, Callable[[dict[str, Any]], None]], Path]:
    """Write the next version of a record in `schema_tree`: its newest, changed by a function."""

    def write(record: str, change: Callable[[dict[str, Any]], None]) -> Path:
        chain = catalog.load(schema_tree).chains
        newest = next(c for c in chain.values() if c.record == record).newest
        schema = copy.deepcopy(dict(newest.schema))
        change(schema)
        path = schema_tree / record / f"v{newest.version + 1}.avsc"
        path.write_text(json.dumps(schema, indent=2), encoding="utf-8")
        return path

    return write
