"""The BACKWARD_TRANSITIVE gate: passes on schemas/, fails on each breaking change, by name."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from schemas import catalog, cli, gate

pytestmark = pytest.mark.unit

Change = Callable[[dict[str, Any]], None]
NewVersion = Callable[[str, Change], Path]  # the `new_version` fixture


def field(schema: dict[str, Any], name: str) -> dict[str, Any]:
    """The field called `name` of a record schema."""
    return next(f for f in schema["fields"] if f["name"] == name)


def add_required_field(schema: dict[str, Any]) -> None:
    """A new field without a default: old data has no value for it."""
    schema["fields"].append({"name": "signal_dbm", "type": "int", "doc": "Wi-Fi signal, dBm."})


def narrow_power_kw(schema: dict[str, Any]) -> None:
    """double narrowed to float: old doubles do not fit."""
    field(schema, "power_kw")["type"] = "float"


def narrow_ts_ms(schema: dict[str, Any]) -> None:
    """long narrowed to int."""
    field(schema, "ts_ms")["type"] = "int"


def drop_measured_temp_default(schema: dict[str, Any]) -> None:
    """The default removed from a field v2 added: v2 data still has it, v1 data does not."""
    del field(schema, "measured_temp_c")["default"]


def narrow_measured_temp_union(schema: dict[str, Any]) -> None:
    """The double branch dropped from a union: v2 data holding a double does not fit."""
    field(schema, "measured_temp_c")["type"] = ["null"]


def remove_firmware_version(schema: dict[str, Any]) -> None:
    """A field removed: a reader ignores what the writer wrote for it."""
    schema["fields"].remove(field(schema, "firmware_version"))


def add_optional_field(schema: dict[str, Any]) -> None:
    """A new field with a default."""
    schema["fields"].append(
        {"name": "signal_dbm", "type": ["null", "int"], "default": None, "doc": "dBm."}
    )


def test_the_gate_passes_on_the_real_schemas(capsys: pytest.CaptureFixture[str]) -> None:
    """Every chain in schemas/avro is BACKWARD_TRANSITIVE and `schemas check` exits 0."""
    assert gate.check(catalog.default()) == []
    assert cli.main(["check"]) == 0
    assert "ok   iot_telemetry: v1..v2 BACKWARD_TRANSITIVE" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("change", "broken_field", "pairs"),
    [
        (add_required_field, "signal_dbm", [(3, 1), (3, 2)]),
        (narrow_power_kw, "power_kw", [(3, 1), (3, 2)]),
        (narrow_ts_ms, "ts_ms", [(3, 1), (3, 2)]),
        (drop_measured_temp_default, "measured_temp_c", [(3, 1)]),
        (narrow_measured_temp_union, "measured_temp_c", [(3, 2)]),
    ],
)
def test_a_breaking_change_fails_the_gate_naming_field_and_versions(
    new_version: NewVersion,
    schema_tree: Path,
    capsys: pytest.CaptureFixture[str],
    change: Change,
    broken_field: str,
    pairs: list[tuple[int, int]],
) -> None:
    """v3 that cannot read some earlier version fails, with the field and both versions named."""
    new_version("iot_telemetry", change)

    findings = gate.check(catalog.load(schema_tree))
    code = cli.main(["check", "--dir", str(schema_tree)])

    assert [
        (f.record, f.reader_version, f.writer_version, f.fields)
        for f in findings
        if isinstance(f, gate.Incompatibility)
    ] == [("iot_telemetry", reader, writer, (broken_field,)) for reader, writer in pairs]
    assert len(findings) == len(pairs)
    assert code == 1
    out = capsys.readouterr().out
    reader, writer = pairs[0]
    assert (
        f"FAIL iot_telemetry: v{reader} cannot read data written with v{writer}: "
        f"field {broken_field}"
    ) in out


def test_only_the_transitive_check_catches_a_default_dropped_one_version_later(
    new_version: NewVersion, schema_tree: Path
) -> None:
    """v3 reads v2 (which has the field) but not v1: a plain BACKWARD check would pass it."""
    new_version("iot_telemetry", drop_measured_temp_default)
    chain = catalog.load(schema_tree).chain("iot.telemetry")

    assert gate.incompatibility(chain.versions[2].schema, chain.versions[1].schema) is None
    assert gate.incompatibility(chain.versions[2].schema, chain.versions[0].schema) is not None


@pytest.mark.parametrize("change", [remove_firmware_version, add_optional_field])
def test_compatible_changes_pass_the_gate(
    new_version: NewVersion, schema_tree: Path, change: Change
) -> None:
    """Removing a field or adding one with a default keeps old data readable."""
    new_version("iot_telemetry", change)

    assert gate.check(catalog.load(schema_tree)) == []
    assert cli.main(["check", "--dir", str(schema_tree)]) == 0


def test_a_nested_breaking_change_names_the_nested_field(
    new_version: NewVersion, schema_tree: Path
) -> None:
    """A narrowed field inside a nested record is named by its dotted path."""
    new_version(
        "scada_telemetry", lambda s: field(s, "quality")["type"]["fields"][0].update(type="int")
    )

    [finding] = gate.check(catalog.load(schema_tree))

    assert isinstance(finding, gate.Incompatibility)
    assert finding.fields == ("quality.invalid",)


def test_a_union_default_that_misses_the_first_branch_is_an_invalid_schema(
    new_version: NewVersion, schema_tree: Path
) -> None:
    """["null", "double"] with default 0.0 is refused by the registry, so by the gate first."""
    new_version("iot_telemetry", lambda s: field(s, "ev_soc_pct").update(default=0.0))

    [finding] = gate.check(catalog.load(schema_tree))

    assert isinstance(finding, gate.InvalidSchema)
    assert (finding.record, finding.version) == ("iot_telemetry", 3)


def test_a_malformed_tree_fails_the_check_with_the_fix(
    schema_tree: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A gap in the versions is reported, exit code 1."""
    (schema_tree / "alert" / "v1.avsc").rename(schema_tree / "alert" / "v2.avsc")

    assert cli.main(["check", "--dir", str(schema_tree)]) == 1
    assert "without gaps" in capsys.readouterr().err
