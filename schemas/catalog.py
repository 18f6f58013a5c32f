"""The one loader of the Avro schema files: `schemas/avro/<record>/v<N>.avsc`.

Every record keeps every version it ever had. A record directory belongs to exactly one topic
(`TOPIC_RECORDS`) and its subject follows TopicNameStrategy: `<topic>-value`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gridstream import topics

AVRO_ROOT = Path(__file__).resolve().parent / "avro"

TOPIC_RECORDS: Mapping[str, str] = {
    topics.SCADA_TELEMETRY: "scada_telemetry",
    topics.IOT_TELEMETRY: "iot_telemetry",
    topics.DEVICE_REGISTRY: "device_registry",
    topics.WEATHER: "weather_observation",
    topics.DR_EVENTS: "dr_event",
    topics.OPERATOR_APPROVALS: "operator_approval",
    topics.COMMANDS: "device_command",
    topics.RECOMMENDATIONS: "recommendation",
    topics.AUDIT: "audit_decision",
    topics.ALERTS: "alert",
    topics.DLQ: "dead_letter",
}

_VERSION_FILE = re.compile(r"v([1-9][0-9]*)\.avsc")


class CatalogError(ValueError):
    """The schema tree is malformed; the message names the file or directory to fix."""


def subject_for(topic: str) -> str:
    """The registry subject of a topic's values (TopicNameStrategy)."""
    return f"{topic}-value"


@dataclasses.dataclass(frozen=True)
class SchemaVersion:
    """One `.avsc` file: the record it belongs to, its version number and its JSON."""

    record: str
    version: int
    path: Path
    schema: Mapping[str, Any]

    @functools.cached_property
    def text(self) -> str:
        """The schema as compact JSON: what is registered and looked up in the registry."""
        return json.dumps(self.schema, separators=(",", ":"), ensure_ascii=False)


@dataclasses.dataclass(frozen=True)
class SchemaChain:
    """Every version of one record, oldest first, and the topic it is written to."""

    record: str
    topic: str
    versions: tuple[SchemaVersion, ...]

    @property
    def subject(self) -> str:
        """The registry subject (`<topic>-value`)."""
        return subject_for(self.topic)

    @property
    def newest(self) -> SchemaVersion:
        """The current version: what producers write and consumers read into."""
        return self.versions[-1]


@dataclasses.dataclass(frozen=True)
class Catalog:
    """All schema chains found under one root directory, by topic."""

    root: Path
    chains: Mapping[str, SchemaChain]

    def chain(self, topic: str) -> SchemaChain:
        """The chain of `topic`; `CatalogError` when the tree has none."""
        try:
            return self.chains[topic]
        except KeyError:
            raise CatalogError(f"no schemas for topic {topic!r} under {self.root}") from None


def _read_version(record: str, path: Path) -> SchemaVersion:
    match = _VERSION_FILE.fullmatch(path.name)
    if match is None:
        raise CatalogError(f"{path}: schema files are named v<N>.avsc (v1.avsc, v2.avsc, ...)")
    try:
        schema = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise CatalogError(f"{path}: cannot read the schema: {err}") from err
    if not isinstance(schema, dict) or schema.get("type") != "record":
        raise CatalogError(f"{path}: a schema file holds one Avro record")
    return SchemaVersion(record, int(match.group(1)), path, schema)


def _read_chain(topic: str, directory: Path) -> SchemaChain:
    files = sorted(directory.glob("*.avsc"))
    versions = sorted((_read_version(directory.name, p) for p in files), key=lambda v: v.version)
    numbers = [v.version for v in versions]
    if numbers != list(range(1, len(numbers) + 1)):
        raise CatalogError(f"{directory}: versions must run v1, v2, ... without gaps: {numbers}")
    names = {(v.schema.get("namespace"), v.schema.get("name")) for v in versions}
    if len(names) != 1:
        raise CatalogError(f"{directory}: every version must keep the record's full name: {names}")
    return SchemaChain(directory.name, topic, tuple(versions))


def load(root: Path = AVRO_ROOT) -> Catalog:
    """Read every record directory under `root`.

    Raises:
        CatalogError: a directory not mapped to a topic, a topic without a directory, a file
            that is not `v<N>.avsc` JSON, a gap in the version numbers, or a renamed record.
    """
    found = {p.name for p in root.iterdir() if p.is_dir() and any(p.glob("*.avsc"))}
    unmapped = found - set(TOPIC_RECORDS.values())
    if unmapped:
        raise CatalogError(
            f"{root}: directories {sorted(unmapped)} belong to no topic: "
            "add them to schemas.catalog.TOPIC_RECORDS"
        )
    missing = set(TOPIC_RECORDS.values()) - found
    if missing:
        raise CatalogError(f"{root}: no schema files for records {sorted(missing)}")
    return Catalog(
        root, {topic: _read_chain(topic, root / record) for topic, record in TOPIC_RECORDS.items()}
    )


@functools.cache
def default() -> Catalog:
    """The catalog of this package's own `schemas/avro/`, read once per process."""
    return load(AVRO_ROOT)
