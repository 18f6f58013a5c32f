"""The schema tree: one file per record version, documented, named by units, one loader."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gridstream import topics
from schemas import catalog

pytestmark = pytest.mark.unit

CATALOG = catalog.default()
SCHEMAS = [
    pytest.param(v, id=f"{v.record}-v{v.version}")
    for c in CATALOG.chains.values()
    for v in c.versions
]


def named_parts(schema: Any) -> Iterator[dict[str, Any]]:
    """Every record and field definition inside a schema, depth first."""
    if isinstance(schema, list):
        for item in schema:
            yield from named_parts(item)
    elif isinstance(schema, dict):
        if "name" in schema:
            yield schema
        for key in ("fields", "type", "items", "values"):
            if key in schema:
                yield from named_parts(schema[key])


def test_every_topic_has_a_schema_chain() -> None:
    """Each topic of DESIGN.md, inputs and outputs, has its record directory."""
    assert set(CATALOG.chains) == set(topics.INPUTS) | set(topics.OUTPUTS)


def test_subjects_follow_the_topic_name_strategy() -> None:
    """A topic's value subject is `<topic>-value`."""
    assert CATALOG.chain(topics.IOT_TELEMETRY).subject == "iot.telemetry-value"
    assert {c.subject for c in CATALOG.chains.values()} == {f"{t}-value" for t in CATALOG.chains}


def test_iot_telemetry_ships_a_real_evolution() -> None:
    """IoT telemetry v2 adds fields to v1, each with a default, and drops none."""
    v1, v2 = (CATALOG.chain(topics.IOT_TELEMETRY).versions[i].schema for i in (0, 1))
    v1_names = [f["name"] for f in v1["fields"]]
    added = [f for f in v2["fields"] if f["name"] not in v1_names]

    assert [f["name"] for f in v2["fields"]][: len(v1_names)] == v1_names
    assert added
    assert all("default" in f for f in added)


@pytest.mark.parametrize("version", SCHEMAS)
def test_every_record_and_field_is_documented(version: catalog.SchemaVersion) -> None:
    """Records and fields all carry a non-empty `doc`."""
    undocumented = [p["name"] for p in named_parts(version.schema) if not p.get("doc")]

    assert undocumented == []


@pytest.mark.parametrize("version", SCHEMAS)
def test_every_record_lives_in_the_gridstream_namespace(version: catalog.SchemaVersion) -> None:
    """The top-level record is `io.gridstream.<Name>`; nested records inherit it."""
    assert version.schema["namespace"] == "io.gridstream"
    assert all("namespace" not in p for p in named_parts(version.schema["fields"]))


@pytest.mark.parametrize("version", SCHEMAS)
def test_timestamps_are_epoch_millis_named_ts_ms(version: catalog.SchemaVersion) -> None:
    """A field is a timestamp-millis long exactly when its name ends in `ts_ms`."""
    for part in named_parts(version.schema["fields"]):
        branches = part["type"] if isinstance(part["type"], list) else [part["type"]]
        millis = {"type": "long", "logicalType": "timestamp-millis"} in branches
        assert millis == part["name"].endswith("ts_ms"), part["name"]


def test_a_gap_in_the_version_numbers_is_refused(schema_tree: Path) -> None:
    """v1 and v3 without v2 is a broken chain, named in the error."""
    (schema_tree / "iot_telemetry" / "v2.avsc").rename(schema_tree / "iot_telemetry" / "v3.avsc")

    with pytest.raises(catalog.CatalogError, match=r"iot_telemetry.*\[1, 3\]"):
        catalog.load(schema_tree)


def test_a_directory_without_a_topic_is_refused(schema_tree: Path) -> None:
    """A record directory missing from TOPIC_RECORDS is named with the fix."""
    (schema_tree / "orphan").mkdir()
    (schema_tree / "iot_telemetry" / "v1.avsc").rename(schema_tree / "orphan" / "v1.avsc")

    with pytest.raises(catalog.CatalogError, match=r"\['orphan'\].*TOPIC_RECORDS"):
        catalog.load(schema_tree)


def test_a_misnamed_schema_file_is_refused(schema_tree: Path) -> None:
    """Schema files are `v<N>.avsc`; anything else is named."""
    (schema_tree / "alert" / "v1.avsc").rename(schema_tree / "alert" / "alert-1.avsc")

    with pytest.raises(catalog.CatalogError, match=r"alert-1\.avsc"):
        catalog.load(schema_tree)
