"""The compatibility gate: every record's version chain must be BACKWARD_TRANSITIVE.

Each version, as reader, must read data written with every earlier version (Apache Avro's
`ReaderWriterCompatibilityChecker`), because `replay` decodes all of history with the newest
schema. Every file must also parse with both Avro libraries, with union defaults that fit the
union's first branch (what the Avro spec and the registry require).
"""

from __future__ import annotations

import copy
import dataclasses
import json
from typing import Any

import avro.errors
import avro.schema
import fastavro
from avro.compatibility import ReaderWriterCompatibilityChecker, SchemaCompatibilityType

from schemas.catalog import Catalog, SchemaChain, SchemaVersion


@dataclasses.dataclass(frozen=True)
class Incompatibility:
    """Version `reader_version` of `record` cannot read data written with `writer_version`."""

    record: str
    reader_version: int
    writer_version: int
    fields: tuple[str, ...]
    reasons: tuple[str, ...]

    def __str__(self) -> str:
        return (
            f"{self.record}: v{self.reader_version} cannot read data written with "
            f"v{self.writer_version}: field {', '.join(self.fields) or '(the record itself)'}: "
            f"{'; '.join(self.reasons)}"
        )


@dataclasses.dataclass(frozen=True)
class InvalidSchema:
    """A schema file that one of the Avro libraries refuses."""

    record: str
    version: int
    reason: str

    def __str__(self) -> str:
        return f"{self.record}: v{self.version} is not a valid schema: {self.reason}"


Finding = Incompatibility | InvalidSchema


def _field_path(schema: Any, location: str) -> str:
    """The dotted field names along a checker location such as `/fields/3/type/fields/1`."""
    names: list[str] = []
    node = schema
    steps = iter(location.strip("/").split("/"))
    for step in steps:
        if step == "fields" and isinstance(node, dict):
            node = node["fields"][int(next(steps))]
            names.append(node["name"])
        elif step in ("type", "items", "values") and isinstance(node, dict):
            node = node[step]
        elif step.isdigit() and isinstance(node, list) and int(step) < len(node):
            node = node[int(step)]  # a union branch: the writer's index may be past the reader's
        else:
            break
    return ".".join(names)


def incompatibility(reader: Any, writer: Any) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
    """Why `reader` cannot read what `writer` wrote, as (field paths, reasons); None if it can.

    Args:
        reader: A schema as JSON (a record's dict, or any Avro schema JSON).
        writer: Another.

    Raises:
        avro.errors.SchemaParseException: either is not a valid Avro schema.
    """
    result = ReaderWriterCompatibilityChecker().get_compatibility(  # type: ignore[no-untyped-call]
        avro.schema.parse(json.dumps(reader)), avro.schema.parse(json.dumps(writer))
    )
    if result.compatibility is not SchemaCompatibilityType.incompatible:
        return None
    fields = tuple(sorted({_field_path(reader, loc) for loc in result.locations} - {""}))
    kinds = ", ".join(dict.fromkeys(kind.name.upper() for kind in result.incompatibilities))
    return fields, (kinds, *sorted(result.messages))


def _first_branches(schema: Any) -> Any:
    """A copy where each union field with a default is narrowed to the union's first branch."""
    if isinstance(schema, dict):
        narrowed = {key: _first_branches(value) for key, value in schema.items()}
        if "default" in schema and isinstance(schema.get("type"), list) and schema["type"]:
            narrowed["type"] = _first_branches(schema["type"][0])
        return narrowed
    if isinstance(schema, list):
        return [_first_branches(item) for item in schema]
    return schema


def _invalid(version: SchemaVersion) -> InvalidSchema | None:
    try:
        avro.schema.parse(version.text)
        fastavro.parse_schema(copy.deepcopy(dict(version.schema)))
        fastavro.parse_schema(_first_branches(version.schema))
    except (avro.errors.AvroException, fastavro.schema.SchemaParseException) as err:
        return InvalidSchema(version.record, version.version, str(err))
    return None


def check_chain(chain: SchemaChain) -> list[Finding]:
    """Every problem in one record's chain: invalid files first, then incompatible pairs."""
    invalid = [found for v in chain.versions if (found := _invalid(v)) is not None]
    if invalid:
        return list(invalid)
    findings: list[Finding] = []
    for i, reader in enumerate(chain.versions):
        for writer in chain.versions[:i]:
            why = incompatibility(reader.schema, writer.schema)
            if why is not None:
                findings.append(Incompatibility(chain.record, reader.version, writer.version, *why))
    return findings


def check(catalog: Catalog) -> list[Finding]:
    """Every problem in every chain of the catalog; empty when the gate passes."""
    return [finding for chain in catalog.chains.values() for finding in check_chain(chain)]
