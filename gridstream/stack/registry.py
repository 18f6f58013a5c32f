"""A development stand-in for Confluent Schema Registry (AVRO only), kept on local disk.

This is NOT a production schema registry. It exists so that the local stack and the tests can
run the real `confluent_kafka.schema_registry.SchemaRegistryClient` (and the Avro serializers
built on it) without a JVM registry. Production points the very same client, unchanged, at a
Confluent-compatible registry by URL (`{"url": "https://..."}`); nothing in the jobs depends on
this module.

What it speaks is the subset of the Confluent REST API that the client uses for AVRO:

* ``POST /subjects/{subject}/versions`` register, ``POST /subjects/{subject}`` look up,
  ``GET /subjects``, ``GET /subjects/{subject}/versions[/{version|latest}[/schema]]``,
  ``DELETE /subjects/{subject}[/versions/{version}]`` (soft, then ``?permanent=true``);
* ``GET /schemas/ids/{id}`` (and ``/schema``, ``/subjects``, ``/versions``), ``GET /schemas/types``;
* ``GET|PUT|DELETE /config[/{subject}]`` (compatibility level only; ``?defaultToGlobal=true``);
* ``POST /compatibility/subjects/{subject}/versions[/{version|latest}]`` (``?verbose=true``);
* ``GET /mode[/{subject}]`` (always ``READWRITE``).

Semantics follow Confluent where it matters to a client: schema ids are global and shared by
every subject holding the same schema text; re-registering a schema a subject already holds
returns its id; a new version must pass the subject's compatibility level (default
``BACKWARD_TRANSITIVE``) or is refused with HTTP 409; errors are
``{"error_code": ..., "message": ...}`` with Confluent's codes. Compatibility is decided by
Apache Avro's ``ReaderWriterCompatibilityChecker``. Not supported: schema references, JSON Schema
and Protobuf, metadata and rule sets (ignored), contexts, modes other than READWRITE,
authentication. Unlike Java Avro, a union field's default must match the union's *first*
branch (the Avro spec, and what the Python Avro readers rely on).

State (schemas, ids, subjects, versions, config) lives in ``<data-dir>/registry.json``, rewritten
atomically on every change and reloaded at start, so ids survive a restart.

Run it with ``python -m gridstream.stack.registry --host 127.0.0.1 --port 8081 --data-dir DIR``,
or in-process with `DevSchemaRegistry`.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import logging
import os
import signal
import sys
import tempfile
import threading
import types
import urllib.parse
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self

import avro.errors
import avro.schema
from avro.compatibility import (
    ReaderWriterCompatibilityChecker,
    SchemaCompatibilityType,
    SchemaIncompatibilityType,
)

__all__ = [
    "COMPATIBILITY_LEVELS",
    "CONTENT_TYPE",
    "DEFAULT_COMPATIBILITY",
    "DevSchemaRegistry",
    "main",
]

log = logging.getLogger("gridstream.stack.registry")

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"
COMPATIBILITY_LEVELS = (
    "NONE",
    "BACKWARD",
    "BACKWARD_TRANSITIVE",
    "FORWARD",
    "FORWARD_TRANSITIVE",
    "FULL",
    "FULL_TRANSITIVE",
)
DEFAULT_COMPATIBILITY = "BACKWARD_TRANSITIVE"
STATE_FILE = "registry.json"
_STATE_FORMAT = "gridstream-dev-schema-registry/1"
_MAX_VERSION = 2**31 - 1

_DESCRIPTIONS = {
    SchemaIncompatibilityType.reader_field_missing_default_value: (
        "The field '{info}' at path '{loc}' in the {reader} schema has no default value "
        "and is missing in the {writer} schema"
    ),
    SchemaIncompatibilityType.type_mismatch: (
        "The type (path '{loc}') of a field in the {reader} schema does not match with "
        "the {writer} schema ({info})"
    ),
    SchemaIncompatibilityType.name_mismatch: (
        "The name of the schema has changed (path '{loc}'): {reader} schema {info}"
    ),
    SchemaIncompatibilityType.missing_enum_symbols: (
        "The {reader} schema is missing enum symbols {info} at path '{loc}' in the {writer} schema"
    ),
    SchemaIncompatibilityType.missing_union_branch: (
        "The {reader} schema is missing a type inside a union field at path '{loc}' "
        "in the {writer} schema ({info})"
    ),
    SchemaIncompatibilityType.fixed_size_mismatch: (
        "The size of FIXED type field at path '{loc}' in the {reader} schema does not match "
        "with the {writer} schema ({info})"
    ),
}


class RegistryError(Exception):
    """An error answered to the client as ``{"error_code": ..., "message": ...}``.

    Args:
        status: HTTP status code.
        error_code: Confluent error code (e.g. 40401, 409, 42201).
        message: Human-readable message.
    """

    def __init__(self, status: int, error_code: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_code = error_code
        self.message = message


def _subject_not_found(subject: str) -> RegistryError:
    return RegistryError(404, 40401, f"Subject '{subject}' not found.")


def _version_not_found(subject: str, version: int | str) -> RegistryError:
    return RegistryError(404, 40402, f"Version {version} not found for subject '{subject}'.")


def _schema_not_found(what: str = "Schema") -> RegistryError:
    return RegistryError(404, 40403, f"{what} not found.")


def _invalid_level(level: object) -> RegistryError:
    allowed = ", ".join(level.lower() for level in COMPATIBILITY_LEVELS)
    return RegistryError(
        422, 42203, f"Invalid compatibility level {level!r}. Valid values are {allowed}."
    )


def _check_level(level: object) -> str:
    if not isinstance(level, str) or level.upper() not in COMPATIBILITY_LEVELS:
        raise _invalid_level(level)
    return level.upper()


@dataclasses.dataclass
class _Version:
    """One version of a subject: its number, its global schema id, soft-deleted or not."""

    version: int
    schema_id: int
    deleted: bool = False


@dataclasses.dataclass
class _Candidate:
    """A schema sent by a client: its stored text, its comparison key and its parsed form."""

    text: str
    key: str
    parsed: avro.schema.Schema
    normalize: bool


def _compact(text: str) -> str:
    """The stored form of a schema: its JSON with insignificant whitespace removed."""
    return json.dumps(json.loads(text), separators=(",", ":"), ensure_ascii=False)


def _normalized(parsed: avro.schema.Schema) -> str:
    """Avro's own re-serialisation of a parsed schema, used when ``normalize=true``."""
    return json.dumps(parsed.to_json(), separators=(",", ":"), ensure_ascii=False)


def _default_matches(schema: avro.schema.Schema, value: Any) -> bool:
    """Whether a JSON default value is valid for `schema` (Avro spec: union -> first branch)."""
    kind = schema.type
    if isinstance(schema, avro.schema.UnionSchema):
        return bool(schema.schemas) and _default_matches(schema.schemas[0], value)
    if kind == "null":
        return value is None
    if kind == "boolean":
        return isinstance(value, bool)
    if kind in ("int", "long"):
        bound = 2**31 if kind == "int" else 2**63
        return isinstance(value, int) and not isinstance(value, bool) and -bound <= value < bound
    if kind in ("float", "double"):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind in ("string", "bytes"):
        return isinstance(value, str)
    if isinstance(schema, avro.schema.FixedSchema):
        return isinstance(value, str) and len(value) == schema.size
    if isinstance(schema, avro.schema.EnumSchema):
        return isinstance(value, str) and value in schema.symbols
    if isinstance(schema, avro.schema.ArraySchema):
        return isinstance(value, list) and all(_default_matches(schema.items, v) for v in value)
    if isinstance(schema, avro.schema.MapSchema):
        return isinstance(value, dict) and all(
            _default_matches(schema.values, v) for v in value.values()
        )
    if isinstance(schema, avro.schema.RecordSchema):
        if not isinstance(value, dict):
            return False
        return all(
            _default_matches(f.type, value[f.name]) if f.name in value else f.has_default
            for f in schema.fields
        )
    return True


def _check_defaults(schema: avro.schema.Schema, seen: set[int] | None = None) -> None:
    """Raise `avro.errors.SchemaParseException` for a field whose default does not fit its type."""
    seen = set() if seen is None else seen
    if id(schema) in seen:
        return
    seen.add(id(schema))
    if isinstance(schema, avro.schema.RecordSchema):
        for field in schema.fields:
            if field.has_default and not _default_matches(field.type, field.default):
                expected = f"a {field.type.type}"
                if isinstance(field.type, avro.schema.UnionSchema) and field.type.schemas:
                    expected = f"a {field.type.schemas[0].type} (a union's first branch)"
                raise avro.errors.SchemaParseException(
                    f"Invalid default for field '{field.name}' of {schema.fullname}: "
                    f"{json.dumps(field.default)} is not {expected}"
                )
            _check_defaults(field.type, seen)
    elif isinstance(schema, avro.schema.UnionSchema):
        for branch in schema.schemas:
            _check_defaults(branch, seen)
    elif isinstance(schema, avro.schema.ArraySchema):
        _check_defaults(schema.items, seen)
    elif isinstance(schema, avro.schema.MapSchema):
        _check_defaults(schema.values, seen)


def _incompatibilities(
    reader: avro.schema.Schema, writer: avro.schema.Schema, reader_is: str, writer_is: str
) -> list[str]:
    """Why `reader` cannot read what `writer` wrote, one Confluent-style message each (or [])."""
    result = ReaderWriterCompatibilityChecker().get_compatibility(  # type: ignore[no-untyped-call]
        reader, writer
    )
    if result.compatibility is not SchemaCompatibilityType.incompatible:
        return []
    kinds = list(dict.fromkeys(result.incompatibilities))
    locations, infos = sorted(result.locations), sorted(result.messages)
    if len(kinds) == 1 and len(locations) == 1 and len(infos) == 1:
        description = _DESCRIPTIONS[kinds[0]].format(
            info=infos[0], loc=locations[0], reader=reader_is, writer=writer_is
        )
        return [
            (
                f"{{errorType:'{kinds[0].name.upper()}', description:'{description}', "
                f"additionalInfo:'{infos[0]}'}}"
            )
        ]
    names = "|".join(kind.name.upper() for kind in kinds)
    return [
        (
            f"{{errorType:'{names}', description:'The {reader_is} schema cannot read data "
            f"written with the {writer_is} schema at paths {locations}', "
            f"additionalInfo:'{'; '.join(infos)}'}}"
        )
    ]


class _Store:
    """The registry's state, its rules and its file; every method is thread-safe."""

    def __init__(self, data_dir: Path, default_compatibility: str) -> None:
        self.data_dir = data_dir
        self.path = data_dir / STATE_FILE
        self.default_compatibility = default_compatibility
        self.lock = threading.RLock()
        self.schemas: dict[int, str] = {}
        self.subjects: dict[str, list[_Version]] = {}
        self.global_compatibility: str | None = None
        self.subject_compatibility: dict[str, str] = {}
        self._parsed: dict[int, avro.schema.Schema] = {}
        self._normal: dict[int, str] = {}
        self._load()

    # -- persistence -------------------------------------------------------------------------

    def _load(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if not self.path.exists():
            return
        try:
            state = json.loads(self.path.read_text(encoding="utf-8"))
            if state.get("format") != _STATE_FORMAT:
                raise ValueError(f"unknown format {state.get('format')!r}")
            self.schemas = {int(s["id"]): str(s["schema"]) for s in state["schemas"]}
            self.subjects = {
                subject: [_Version(int(v["version"]), int(v["id"]), bool(v["deleted"])) for v in vs]
                for subject, vs in state["subjects"].items()
            }
            glob = state.get("global_compatibility")
            self.global_compatibility = None if glob is None else _check_level(glob)
            self.subject_compatibility = {
                s: _check_level(level) for s, level in state["subject_compatibility"].items()
            }
        except (OSError, ValueError, KeyError, TypeError, RegistryError) as err:
            raise RuntimeError(f"cannot load registry state {self.path}: {err}") from err

    def _dump(self) -> dict[str, Any]:
        return {
            "format": _STATE_FORMAT,
            "schemas": [
                {"id": i, "schemaType": "AVRO", "schema": s}
                for i, s in sorted(self.schemas.items())
            ],
            "subjects": {
                subject: [
                    {"version": v.version, "id": v.schema_id, "deleted": v.deleted}
                    for v in versions
                ]
                for subject, versions in sorted(self.subjects.items())
            },
            "global_compatibility": self.global_compatibility,
            "subject_compatibility": dict(sorted(self.subject_compatibility.items())),
        }

    def _save(self) -> None:
        """Write the state to a temp file in the data dir, fsync it, then `os.replace` it."""
        payload = json.dumps(self._dump(), indent=2, ensure_ascii=False) + "\n"
        fd, tmp = tempfile.mkstemp(prefix=".registry.", suffix=".tmp", dir=self.data_dir)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(payload)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        try:
            dir_fd = os.open(self.data_dir, os.O_RDONLY)
        except OSError:
            return
        try:
            os.fsync(dir_fd)
        except OSError:
            pass
        finally:
            os.close(dir_fd)

    def _mutate(self, change: Callable[[], Any]) -> Any:
        """Apply `change`, persist, and roll the in-memory state back if persisting fails."""
        before = (
            dict(self.schemas),
            copy.deepcopy(self.subjects),
            self.global_compatibility,
            dict(self.subject_compatibility),
        )
        result = change()
        try:
            self._save()
        except OSError as err:
            (self.schemas, self.subjects, self.global_compatibility, self.subject_compatibility) = (
                before
            )
            self._parsed = {i: p for i, p in self._parsed.items() if i in self.schemas}
            self._normal = {i: n for i, n in self._normal.items() if i in self.schemas}
            raise RegistryError(
                500, 50001, f"Error while storing the registry state: {err}"
            ) from err
        return result

    # -- helpers -----------------------------------------------------------------------------

    def parsed(self, schema_id: int) -> avro.schema.Schema:
        if schema_id not in self._parsed:
            self._parsed[schema_id] = avro.schema.parse(self.schemas[schema_id])
        return self._parsed[schema_id]

    def key(self, schema_id: int, normalize: bool) -> str:
        """What a stored schema is compared by: its stored text, or its normalized form."""
        if not normalize:
            return self.schemas[schema_id]
        if schema_id not in self._normal:
            self._normal[schema_id] = _normalized(self.parsed(schema_id))
        return self._normal[schema_id]

    @staticmethod
    def candidate(body: Any, normalize: bool) -> _Candidate:
        """Validate a request body ``{"schema": ..., "schemaType": ...}`` and parse the schema."""
        if not isinstance(body, dict) or not isinstance(body.get("schema"), str):
            raise RegistryError(422, 42201, "Invalid schema: the body needs a 'schema' string")
        schema_type = body.get("schemaType") or "AVRO"
        if schema_type != "AVRO":
            raise RegistryError(
                422, 42201, f"Invalid schema: the dev registry only speaks AVRO, not {schema_type}"
            )
        if body.get("references"):
            raise RegistryError(
                422, 42201, "Invalid schema: the dev registry does not support schema references"
            )
        try:
            parsed = avro.schema.parse(body["schema"])
            _check_defaults(parsed)
        except (avro.errors.AvroException, ValueError, TypeError, KeyError) as err:
            raise RegistryError(422, 42201, f"Invalid schema {body['schema']}: {err}") from err
        if normalize:
            text = _normalized(parsed)
            return _Candidate(text, text, parsed, True)
        text = _compact(body["schema"])
        return _Candidate(text, text, parsed, False)

    def versions(self, subject: str, deleted: bool = False) -> list[_Version]:
        """The subject's versions, soft-deleted ones only when `deleted`; 40401 when none."""
        found = [v for v in self.subjects.get(subject, []) if deleted or not v.deleted]
        if not found:
            raise _subject_not_found(subject)
        return found

    def version(self, subject: str, version: str, deleted: bool = False) -> _Version:
        """One version by number, ``latest`` or ``-1``; 40401, 40402 or 42202 otherwise."""
        number = _parse_version(version)
        found = self.versions(subject, deleted)
        if number == -1:
            return found[-1]
        for v in found:
            if v.version == number:
                return v
        raise _version_not_found(subject, number)

    def compatibility(self, subject: str | None = None) -> str:
        """The effective compatibility level of `subject` (or the global one)."""
        if subject is not None and subject in self.subject_compatibility:
            return self.subject_compatibility[subject]
        return self.global_compatibility or self.default_compatibility

    def problems(
        self, candidate: avro.schema.Schema, level: str, against: Sequence[_Version]
    ) -> list[str]:
        """Every way `candidate` breaks `level` against the given versions, newest first."""
        if level == "NONE":
            return []
        messages: list[str] = []
        for old in reversed(against):
            found: list[str] = []
            if level.startswith(("BACKWARD", "FULL")):
                found += _incompatibilities(candidate, self.parsed(old.schema_id), "new", "old")
            if level.startswith(("FORWARD", "FULL")):
                found += _incompatibilities(self.parsed(old.schema_id), candidate, "old", "new")
            if found:
                messages += found
                messages.append(f"{{oldSchemaVersion: {old.version}}}")
                messages.append(f"{{compatibility: '{level}'}}")
        return messages

    def schema_id(self, schema_id: str) -> int:
        try:
            number = int(schema_id)
        except ValueError:
            raise _schema_not_found() from None
        if number not in self.schemas:
            raise _schema_not_found()
        return number

    # -- operations --------------------------------------------------------------------------

    def register(self, subject: str, body: Any, normalize: bool) -> dict[str, Any]:
        with self.lock:
            cand = self.candidate(body, normalize)
            live = [v for v in self.subjects.get(subject, []) if not v.deleted]
            for v in live:
                if self.key(v.schema_id, normalize) == cand.key:
                    return {"id": v.schema_id}
            level = self.compatibility(subject)
            transitive = level.endswith("_TRANSITIVE")
            problems = self.problems(cand.parsed, level, live if transitive else live[-1:])
            if problems:
                raise RegistryError(
                    409,
                    409,
                    "Schema being registered is incompatible with an earlier schema for subject "
                    f'"{subject}", details: [{", ".join(problems)}]',
                )

            def change() -> int:
                schema_id = next(
                    (i for i in sorted(self.schemas) if self.key(i, normalize) == cand.key), None
                )
                if schema_id is None:
                    schema_id = max(self.schemas, default=0) + 1
                    self.schemas[schema_id] = cand.text
                    self._parsed[schema_id] = cand.parsed
                versions = self.subjects.setdefault(subject, [])
                number = max((v.version for v in versions), default=0) + 1
                versions.append(_Version(number, schema_id))
                log.info("registered %s version %d as schema id %d", subject, number, schema_id)
                return schema_id

            return {"id": self._mutate(change)}

    def lookup(self, subject: str, body: Any, normalize: bool, deleted: bool) -> dict[str, Any]:
        with self.lock:
            cand = self.candidate(body, normalize)
            for v in reversed(self.versions(subject, deleted)):
                if self.key(v.schema_id, normalize) == cand.key:
                    return self.describe(subject, v)
            raise _schema_not_found()

    def describe(self, subject: str, v: _Version) -> dict[str, Any]:
        return {
            "subject": subject,
            "version": v.version,
            "id": v.schema_id,
            "schema": self.schemas[v.schema_id],
        }

    def delete_subject(self, subject: str, permanent: bool) -> list[int]:
        with self.lock:
            versions = self.subjects.get(subject, [])
            if not versions:
                raise _subject_not_found(subject)
            live = [v for v in versions if not v.deleted]
            if permanent:
                if live:
                    raise RegistryError(
                        404,
                        40405,
                        f"Subject '{subject}' was not deleted first before being permanently "
                        "deleted",
                    )

                def forget() -> list[int]:
                    del self.subjects[subject]
                    self.subject_compatibility.pop(subject, None)
                    return [v.version for v in versions]

                return list(self._mutate(forget))
            if not live:
                raise RegistryError(
                    404,
                    40404,
                    f"Subject '{subject}' was soft deleted. "
                    "Set permanent=true to delete permanently",
                )

            def soft() -> list[int]:
                for v in live:
                    v.deleted = True
                self.subject_compatibility.pop(subject, None)
                return [v.version for v in live]

            return list(self._mutate(soft))

    def delete_version(self, subject: str, version: str, permanent: bool) -> int:
        with self.lock:
            target = self.version(subject, version, deleted=permanent)
            if permanent:
                if not target.deleted:
                    raise RegistryError(
                        404,
                        40407,
                        f"Subject '{subject}' Version {target.version} was not deleted first "
                        "before being permanently deleted",
                    )

                def forget() -> int:
                    self.subjects[subject].remove(target)
                    if not self.subjects[subject]:
                        del self.subjects[subject]
                    return target.version

                return int(self._mutate(forget))

            def soft() -> int:
                target.deleted = True
                return target.version

            return int(self._mutate(soft))

    def set_compatibility(self, subject: str | None, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise _invalid_level(body)
        level = _check_level(body.get("compatibility", body.get("compatibilityLevel")))
        with self.lock:

            def change() -> None:
                if subject is None:
                    self.global_compatibility = level
                else:
                    self.subject_compatibility[subject] = level

            self._mutate(change)
            return {"compatibility": level}

    def get_compatibility(self, subject: str | None, default_to_global: bool) -> dict[str, Any]:
        with self.lock:
            if subject is None or subject in self.subject_compatibility or default_to_global:
                return {"compatibilityLevel": self.compatibility(subject)}
            raise RegistryError(
                404,
                40408,
                f"Subject '{subject}' does not have subject-level compatibility configured",
            )

    def delete_compatibility(self, subject: str | None) -> dict[str, Any]:
        with self.lock:
            old = self.get_compatibility(subject, default_to_global=False)

            def change() -> None:
                if subject is None:
                    self.global_compatibility = None
                else:
                    del self.subject_compatibility[subject]

            self._mutate(change)
            return old

    def test_compatibility(
        self, subject: str, version: str | None, body: Any, normalize: bool, verbose: bool
    ) -> dict[str, Any]:
        with self.lock:
            cand = self.candidate(body, normalize)
            level = self.compatibility(subject)
            if version is None:
                live = [v for v in self.subjects.get(subject, []) if not v.deleted]
                against = live if level.endswith("_TRANSITIVE") else live[-1:]
            elif _parse_version(version) == -1 and not any(
                not v.deleted for v in self.subjects.get(subject, [])
            ):
                against = []
            else:
                against = [self.version(subject, version)]
            messages = self.problems(cand.parsed, level, against)
            answer: dict[str, Any] = {"is_compatible": not messages}
            if verbose:
                answer["messages"] = messages
            return answer


def _parse_version(version: str) -> int:
    """``latest`` and ``-1`` become -1; 1..2^31-1 stay; anything else is a 42202."""
    if version == "latest":
        return -1
    try:
        number = int(version)
    except ValueError:
        number = 0
    if number == -1 or 1 <= number <= _MAX_VERSION:
        return number
    raise RegistryError(
        422,
        42202,
        f"The specified version '{version}' is not a valid version id. Allowed values are "
        'between [1, 2^31-1] and the string "latest"',
    )


def _page(items: list[Any], query: dict[str, str]) -> list[Any]:
    """Apply Confluent's ``offset`` / ``limit`` (negative limit: no limit) query parameters."""
    try:
        offset = max(int(query.get("offset", "0")), 0)
        limit = int(query.get("limit", "-1"))
    except ValueError:
        return items
    return items[offset:] if limit < 0 else items[offset : offset + limit]


def _flag(query: dict[str, str], name: str) -> bool:
    return query.get(name, "false").strip().lower() == "true"


_Route = Callable[["_Handler", dict[str, str], dict[str, str], Any], Any]


class _Handler(BaseHTTPRequestHandler):
    """Routes one HTTP request to the store; answers JSON with Confluent's content type."""

    server: _Server
    protocol_version = "HTTP/1.0"
    server_version = "GridStreamDevSchemaRegistry/1"
    timeout = 30

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s - %s", self.address_string(), format % args)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        split = urllib.parse.urlsplit(self.path)
        segments = [urllib.parse.unquote(s) for s in split.path.strip("/").split("/") if s]
        query = {k: v[-1] for k, v in urllib.parse.parse_qs(split.query).items()}
        try:
            body = self._body()
            route, params = _match(method, segments)
            self._answer(200, route(self, params, query, body))
        except RegistryError as err:
            self._answer(err.status, {"error_code": err.error_code, "message": err.message})
        except Exception as err:  # a dev server answers 500, serves on
            log.exception("%s %s failed", method, self.path)
            self._answer(500, {"error_code": 50001, "message": f"Internal error: {err}"})

    def _body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        if length <= 0:
            return None
        raw = self.rfile.read(length)
        try:
            return json.loads(raw)
        except ValueError as err:
            raise RegistryError(400, 400, f"Malformed JSON body: {err}") from err

    def _answer(self, status: int, payload: Any) -> None:
        data = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", CONTENT_TYPE)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    @property
    def store(self) -> _Store:
        return self.server.store

    # -- endpoints: each takes (path params, query, body) and returns the JSON answer ---------

    def root(self, p: dict[str, str], q: dict[str, str], body: Any) -> Any:
        return {}

    def schema_types(self, p: dict[str, str], q: dict[str, str], body: Any) -> Any:
        return ["AVRO"]

    def get_schema(self, p: dict[str, str], q: dict[str, str], body: Any) -> Any:
        with self.store.lock:
            return {"schema": self.store.schemas[self.store.schema_id(p["id"])]}

    def get_schema_text(self, p: dict[str, str], q: dict[str, str], body: Any) -> Any:
        with self.store.lock:
            return json.loads(self.store.schemas[self.store.schema_id(p["id"])])

    def _usages(self, p: dict[str, str], q: dict[str, str]) -> list[tuple[str, int]]:
        with self.store.lock:
            schema_id = self.store.schema_id(p["id"])
            return [
                (subject, v.version)
                for subject, versions in sorted(self.store.subjects.items())
                if q.get("subject") in (None, subject)
                for v in versions
                if v.schema_id == schema_id and (_flag(q, "deleted") or not v.deleted)
            ]

    def schema_subjects(self, p: dict[str, str], q: dict[str, str], body: Any) -> Any:
        return _page(list(dict.fromkeys(s for s, _ in self._usages(p, q))), q)

    def schema_versions(self, p: dict[str, str], q: dict[str, str], body: Any) -> Any:
        return _page([{"subject": s, "version": v} for s, v in self._usages(p, q)], q)

    def list_subjects(self, p: dict[str, str], q: dict[str, str], body: Any) -> Any:
        prefix = q.get("subjectPrefix", "")
        prefix = "" if prefix == ":*:" else prefix
        with self.store.lock:
            names = []
            for subject, versions in sorted(self.store.subjects.items()):
                live = any(not v.deleted for v in versions)
                if not subject.startswith(prefix):
                    continue
                if _flag(q, "deleted_only"):
                    if not live:
                        names.append(subject)
                elif live or _flag(q, "deleted"):
                    names.append(subject)
        return _page(names, q)

    def lookup(self, p: dict[str, str], q: dict[str, str], body: Any) -> Any:
        return self.store.lookup(p["subject"], body, _flag(q, "normalize"), _flag(q, "deleted"))

    def delete_subject(self, p: dict[str, str], q: dict[str, str], body: Any) -> Any:
        return self.store.delete_subject(p["subject"], _flag(q, "permanent"))

    def list_versions(self, p: dict[str, str], q: dict[str, str], body: Any) -> Any:
        with self.store.lock:
            if _flag(q, "deleted_only"):
                all_versions = self.store.versions(p["subject"], deleted=True)
                found = [v for v in all_versions if v.deleted]
            else:
                found = self.store.versions(p["subject"], _flag(q, "deleted"))
            return _page([v.version for v in found], q)

    def register(self, p: dict[str, str], q: dict[str, str], body: Any) -> Any:
        return self.store.register(p["subject"], body, _flag(q, "normalize"))

    def get_version(self, p: dict[str, str], q: dict[str, str], body: Any) -> Any:
        with self.store.lock:
            v = self.store.version(p["subject"], p["version"], _flag(q, "deleted"))
            return self.store.describe(p["subject"], v)

    def get_version_schema(self, p: dict[str, str], q: dict[str, str], body: Any) -> Any:
        with self.store.lock:
            v = self.store.version(p["subject"], p["version"], _flag(q, "deleted"))
            return json.loads(self.store.schemas[v.schema_id])

    def referenced_by(self, p: dict[str, str], q: dict[str, str], body: Any) -> Any:
        with self.store.lock:
            self.store.version(p["subject"], p["version"])
            return []

    def delete_version(self, p: dict[str, str], q: dict[str, str], body: Any) -> Any:
        return self.store.delete_version(p["subject"], p["version"], _flag(q, "permanent"))

    def get_config(self, p: dict[str, str], q: dict[str, str], body: Any) -> Any:
        return self.store.get_compatibility(p.get("subject"), _flag(q, "defaultToGlobal"))

    def put_config(self, p: dict[str, str], q: dict[str, str], body: Any) -> Any:
        return self.store.set_compatibility(p.get("subject"), body)

    def delete_config(self, p: dict[str, str], q: dict[str, str], body: Any) -> Any:
        return self.store.delete_compatibility(p.get("subject"))

    def test_compatibility(self, p: dict[str, str], q: dict[str, str], body: Any) -> Any:
        return self.store.test_compatibility(
            p["subject"], p.get("version"), body, _flag(q, "normalize"), _flag(q, "verbose")
        )

    def mode(self, p: dict[str, str], q: dict[str, str], body: Any) -> Any:
        return {"mode": "READWRITE"}


_ROUTES: list[tuple[str, tuple[str, ...], _Route]] = [
    ("GET", (), _Handler.root),
    ("GET", ("schemas", "types"), _Handler.schema_types),
    ("GET", ("schemas", "ids", "{id}"), _Handler.get_schema),
    ("GET", ("schemas", "ids", "{id}", "schema"), _Handler.get_schema_text),
    ("GET", ("schemas", "ids", "{id}", "subjects"), _Handler.schema_subjects),
    ("GET", ("schemas", "ids", "{id}", "versions"), _Handler.schema_versions),
    ("GET", ("subjects",), _Handler.list_subjects),
    ("POST", ("subjects", "{subject}"), _Handler.lookup),
    ("DELETE", ("subjects", "{subject}"), _Handler.delete_subject),
    ("GET", ("subjects", "{subject}", "versions"), _Handler.list_versions),
    ("POST", ("subjects", "{subject}", "versions"), _Handler.register),
    ("GET", ("subjects", "{subject}", "versions", "{version}"), _Handler.get_version),
    ("DELETE", ("subjects", "{subject}", "versions", "{version}"), _Handler.delete_version),
    ("GET", ("subjects", "{subject}", "versions", "{version}", "schema"),
     _Handler.get_version_schema),
    ("GET", ("subjects", "{subject}", "versions", "{version}", "referencedby"),
     _Handler.referenced_by),
    ("GET", ("config",), _Handler.get_config),
    ("PUT", ("config",), _Handler.put_config),
    ("DELETE", ("config",), _Handler.delete_config),
    ("GET", ("config", "{subject}"), _Handler.get_config),
    ("PUT", ("config", "{subject}"), _Handler.put_config),
    ("DELETE", ("config", "{subject}"), _Handler.delete_config),
    ("POST", ("compatibility", "subjects", "{subject}", "versions"), _Handler.test_compatibility),
    ("POST", ("compatibility", "subjects", "{subject}", "versions", "{version}"),
     _Handler.test_compatibility),
    ("GET", ("mode",), _Handler.mode),
    ("GET", ("mode", "{subject}"), _Handler.mode),
]  # fmt: skip


def _match(method: str, segments: list[str]) -> tuple[_Route, dict[str, str]]:
    """The endpoint for `method` and path `segments` with its path parameters; 404 / 405."""
    path_known = False
    for route_method, pattern, route in _ROUTES:
        if len(pattern) != len(segments):
            continue
        params: dict[str, str] = {}
        for expected, actual in zip(pattern, segments, strict=True):
            if expected.startswith("{"):
                params[expected[1:-1]] = actual
            elif expected != actual:
                break
        else:
            if route_method == method:
                return route, params
            path_known = True
    if path_known:
        raise RegistryError(405, 405, "HTTP 405 Method Not Allowed")
    raise RegistryError(404, 404, "HTTP 404 Not Found")


class _Server(ThreadingHTTPServer):
    """A threading HTTP server that carries the registry's store for its handlers."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], store: _Store) -> None:
        self.store = store
        super().__init__(address, _Handler)


class DevSchemaRegistry:
    """The development schema registry, served from a background thread.

    Args:
        host: Interface to listen on, normally loopback (``127.0.0.1``).
        port: TCP port; 0 picks a free one (read it back from `url` or `port` after `start`).
        data_dir: Directory holding ``registry.json``; created if missing, reloaded if present.
        compatibility: Global compatibility level used until a client sets one with
            ``PUT /config`` (a level set that way is persisted and wins over this argument).

    Raises:
        ValueError: If `compatibility` is not a Confluent compatibility level.
        RuntimeError: If the state file exists but cannot be read.
    """

    def __init__(
        self,
        host: str,
        port: int,
        data_dir: str | os.PathLike[str],
        compatibility: str = DEFAULT_COMPATIBILITY,
    ) -> None:
        if compatibility.upper() not in COMPATIBILITY_LEVELS:
            raise ValueError(
                f"unknown compatibility level {compatibility!r}; "
                f"expected one of {', '.join(COMPATIBILITY_LEVELS)}"
            )
        self.host = host
        self.requested_port = port
        self.data_dir = Path(data_dir)
        self.store = _Store(self.data_dir, compatibility.upper())
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The port actually listened on (after `start`)."""
        if self._server is None:
            raise RuntimeError("the registry is not started")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """The base URL to give `SchemaRegistryClient({"url": ...})` (after `start`)."""
        host = self.host if ":" not in self.host else f"[{self.host}]"
        return f"http://{host}:{self.port}"

    def start(self) -> Self:
        """Bind the port and serve in a daemon thread; returns self.

        Raises:
            OSError: If the address cannot be bound.
        """
        if self._server is not None:
            return self
        self._server = _Server((self.host, self.requested_port), self.store)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.2},
            name=f"dev-schema-registry-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and release the port (idempotent). State is already on disk."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: types.TracebackType | None,
    ) -> None:
        self.stop()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m gridstream.stack.registry",
        description="Development stand-in for Confluent Schema Registry (AVRO, JSON on disk).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8081, help="port, 0 = any (default: 8081)")
    parser.add_argument("--data-dir", required=True, type=Path, help="where registry.json lives")
    parser.add_argument(
        "--compatibility",
        default=DEFAULT_COMPATIBILITY,
        type=str.upper,
        choices=COMPATIBILITY_LEVELS,
        help="global compatibility level until PUT /config sets one (default: %(default)s)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until SIGTERM or SIGINT, then stop cleanly.

    Args:
        argv: Command-line arguments (default: ``sys.argv[1:]``).

    Returns:
        0 after a signal-initiated shutdown, 1 if the registry could not start.
    """
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    stopping = threading.Event()

    def on_signal(signum: int, frame: types.FrameType | None) -> None:
        log.info("received %s, stopping", signal.Signals(signum).name)
        stopping.set()

    try:
        registry = DevSchemaRegistry(args.host, args.port, args.data_dir, args.compatibility)
        registry.start()
    except (OSError, RuntimeError) as err:
        log.error("cannot start the dev schema registry on %s:%s: %s", args.host, args.port, err)
        return 1
    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        log.info(
            "dev schema registry ready at %s (state %s: %d schemas, %d subjects; global %s)",
            registry.url,
            registry.store.path,
            len(registry.store.schemas),
            len(registry.store.subjects),
            registry.store.compatibility(),
        )
        while not stopping.wait(0.5):
            pass
    finally:
        registry.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    log.info("dev schema registry stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
