"""The Confluent wire format: magic byte 0, a 4-byte big-endian schema id, the Avro binary body.

A `Serializer` encodes validated models with the id the registry gave the topic's newest schema.
A `Deserializer` decodes any historic writer schema into the newest reader schema and validates
the result. Writer schemas are fetched and parsed once per id, and their resolution against the
reader is decided once per id: per record there is no registry call and no schema parsing.

The serde reads and writes the underlying Avro types: logical-type annotations
(`timestamp-millis`) document the schemas for other consumers, while records here keep epoch
milliseconds as `int` (`ts_ms`) instead of paying for `datetime` objects on every record.
"""

from __future__ import annotations

import io
import json
import struct
import time
from collections.abc import Callable, Mapping
from typing import Any, Generic, Protocol, cast

import fastavro
from avro.errors import AvroException
from fastavro.read import SchemaResolutionError
from pydantic import ValidationError

from schemas import catalog as catalog_module
from schemas import gate, models
from schemas.catalog import Catalog, subject_for
from schemas.models import M

MAGIC = 0
UNKNOWN_ID_RETRY_S = 30.0  # an unknown id is asked again after this long: registry replicas lag
_MAX_UNKNOWN_IDS = 4096  # remembered unknown ids; forgotten when full, so garbage cannot grow it
_HEADER = struct.Struct(">bi")


class DecodeError(Exception):
    """A record that cannot become a model; it belongs in the dead-letter queue.

    Attributes:
        schema_id: The writer schema id from the header, when it could be read.
    """

    def __init__(self, message: str, schema_id: int | None = None) -> None:
        super().__init__(message)
        self.schema_id = schema_id


class BadMagic(DecodeError):
    """The first byte is not the wire-format magic byte 0: not Confluent-framed Avro."""


class Truncated(DecodeError):
    """The bytes end before the header or the Avro body does."""


class UnknownSchemaId(DecodeError):
    """The registry has no schema with the header's id (written against another registry?)."""


class ResolutionFailure(DecodeError):
    """The writer schema cannot be read as the topic's reader schema (wrong topic or record)."""


class CorruptPayload(DecodeError):
    """The Avro body does not parse with its writer schema (bad UTF-8, union index, trailing)."""


class ValidationFailure(DecodeError):
    """The record decoded but breaks its model: a range, a required id, a cross-field rule."""


class RegistryUnavailable(Exception):
    """The schema registry did not answer; not the record's fault, so never dead-lettered."""


class SchemaSource(Protocol):
    """Where schemas and their ids come from: the registry, or a fixed table."""

    def writer_schema(self, schema_id: int) -> str:
        """The schema text registered under `schema_id`.

        Raises:
            UnknownSchemaId: no such id.
            RegistryUnavailable: the source cannot be asked right now.
        """
        ...

    def schema_id(self, subject: str, schema_text: str) -> int:
        """The id under which `subject` holds `schema_text`."""
        ...


class StaticSchemas:
    """A fixed id -> schema table: offline decoding, unit tests and benchmarks."""

    def __init__(self, schemas: Mapping[int, tuple[str, str]]) -> None:
        """Hold a fixed table.

        Args:
            schemas: id -> (subject, schema text).
        """
        self._schemas = dict(schemas)

    @classmethod
    def from_catalog(cls, catalog: Catalog) -> StaticSchemas:
        """Ids 1, 2, ... for every version of every chain, in catalog order."""
        versions = [(c.subject, v.text) for c in catalog.chains.values() for v in c.versions]
        return cls(dict(enumerate(versions, start=1)))

    def writer_schema(self, schema_id: int) -> str:
        """The schema text of `schema_id`."""
        try:
            return self._schemas[schema_id][1]
        except KeyError:
            raise UnknownSchemaId(f"no schema with id {schema_id}", schema_id) from None

    def schema_id(self, subject: str, schema_text: str) -> int:
        """The id of `schema_text` under `subject`; `LookupError` when not in the table."""
        for schema_id, held in self._schemas.items():
            if held == (subject, schema_text):
                return schema_id
        raise LookupError(f"{subject} holds no such schema")


def _without_logical_types(schema: Any) -> Any:
    if isinstance(schema, dict):
        return {k: _without_logical_types(v) for k, v in schema.items() if k != "logicalType"}
    if isinstance(schema, list):
        return [_without_logical_types(item) for item in schema]
    return schema


def parse(schema: Mapping[str, Any]) -> Any:
    """The fastavro-parsed form of a schema, logical types dropped (see the module doc)."""
    return fastavro.parse_schema(_without_logical_types(schema))


def wire_header(schema_id: int) -> bytes:
    """The 5-byte header that precedes the Avro body of a record written with `schema_id`."""
    return _HEADER.pack(MAGIC, schema_id)


def _header(data: bytes) -> int:
    """The schema id of a wire-format record."""
    if data[:1] not in (b"", b"\x00"):
        raise BadMagic(f"first byte is {data[0]:#04x}, not the wire-format magic byte 0x00")
    if len(data) < _HEADER.size:
        raise Truncated(f"{len(data)} bytes cannot hold the 5-byte wire-format header")
    return int(_HEADER.unpack_from(data)[1])


class Serializer(Generic[M]):
    """Encodes validated `M` records for one topic with the id of its newest schema."""

    def __init__(self, model: type[M], schema_id: int, schema: Mapping[str, Any]) -> None:
        """Parse the schema once.

        Args:
            model: The record type.
            schema_id: The id the registry gave `schema` under the topic's subject.
            schema: The topic's newest schema, as JSON.
        """
        self.model = model
        self.schema_id = schema_id
        self._header = wire_header(schema_id)
        self._parsed = parse(schema)

    def encode(self, record: M) -> bytes:
        """The wire-format bytes of `record`.

        Only an instance of the model is accepted, which Pydantic validated when it was built
        (`model_construct` skips validation and is not to be used for records).
        """
        if type(record) is not self.model:
            raise TypeError(f"expected a validated {self.model.__name__}, got {type(record)!r}")
        out = io.BytesIO(self._header)
        out.seek(_HEADER.size)
        fastavro.schemaless_writer(out, self._parsed, record.model_dump())
        return out.getvalue()

    def encode_data(self, data: Mapping[str, Any], now_ms: int) -> bytes:
        """Validate plain data as the model (raising `pydantic.ValidationError`), then encode."""
        return self.encode(models.validate(self.model, data, now_ms))


class _Plan:
    """How to read one writer id: its parsed schema and the reader (None when identical)."""

    __slots__ = ("reader", "writer")

    def __init__(self, writer: Any, reader: Any) -> None:
        self.writer = writer
        self.reader = reader


class Deserializer(Generic[M]):
    """Decodes any historic writer schema of one topic into validated `M` records."""

    def __init__(
        self,
        model: type[M],
        source: SchemaSource,
        reader_schema: Mapping[str, Any],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Parse the reader schema once; writer schemas are fetched on first sight of their id.

        Args:
            model: The record type.
            source: Writer schemas by id (the registry).
            reader_schema: The topic's newest schema, as JSON.
            clock: Seconds, for retrying unknown ids after `UNKNOWN_ID_RETRY_S`.
        """
        self.model = model
        self._source = source
        self._clock = clock
        self._reader_json = reader_schema
        self._reader = parse(reader_schema)
        self._plans: dict[int, _Plan] = {}
        self._unresolvable: dict[int, str] = {}  # an id's schema never changes: kept for good
        self._unknown: dict[int, tuple[float, str]] = {}  # id -> (ask again after, message)

    def _plan(self, schema_id: int) -> _Plan:
        """The plan for a writer id not seen yet, or the failure already known for it."""
        if schema_id in self._unresolvable:
            raise ResolutionFailure(self._unresolvable[schema_id], schema_id)
        retry_at, message = self._unknown.get(schema_id, (0.0, ""))
        if self._clock() < retry_at:
            raise UnknownSchemaId(message, schema_id)
        try:
            plan = self._resolve(schema_id)
        except UnknownSchemaId as err:
            if len(self._unknown) >= _MAX_UNKNOWN_IDS:
                self._unknown.clear()
            self._unknown[schema_id] = (self._clock() + UNKNOWN_ID_RETRY_S, str(err))
            raise
        except ResolutionFailure as err:
            self._unresolvable[schema_id] = str(err)
            raise
        self._unknown.pop(schema_id, None)
        self._plans[schema_id] = plan
        return plan

    def _resolve(self, schema_id: int) -> _Plan:
        """Fetch and parse the writer schema; decide once whether the reader can read it."""
        if schema_id <= 0:
            raise UnknownSchemaId(f"schema id {schema_id} is not a registry id", schema_id)
        text = self._source.writer_schema(schema_id)
        try:
            writer = json.loads(text)
            if writer == self._reader_json:
                return _Plan(self._reader, None)
            why = gate.incompatibility(self._reader_json, writer)
            if why is None:
                return _Plan(parse(writer), self._reader)
        except (ValueError, AvroException, fastavro.schema.SchemaParseException) as err:
            raise ResolutionFailure(
                f"writer schema {schema_id} is not an Avro schema: {err}", schema_id
            ) from None
        fields, reasons = why
        raise ResolutionFailure(
            f"writer schema {schema_id} cannot be read as {self.model.__name__}: "
            f"field {', '.join(fields) or '(the record itself)'}: {'; '.join(reasons)}",
            schema_id,
        )

    def read(self, data: bytes) -> tuple[int, dict[str, Any]]:
        """The schema id and the Avro record resolved to the reader schema, not validated.

        Raises:
            DecodeError: BadMagic, Truncated, UnknownSchemaId, ResolutionFailure, CorruptPayload.
            RegistryUnavailable: a new schema id could not be fetched.
        """
        schema_id = _header(data)
        plan = self._plans.get(schema_id) or self._plan(schema_id)
        body = io.BytesIO(data)
        body.seek(_HEADER.size)
        try:
            record = cast(
                dict[str, Any], fastavro.schemaless_reader(body, plan.writer, plan.reader)
            )
        except EOFError:
            raise Truncated(
                f"Avro body ended early ({len(data)} bytes in all) for schema {schema_id}",
                schema_id,
            ) from None
        except SchemaResolutionError as err:
            raise ResolutionFailure(str(err), schema_id) from None
        except (ValueError, IndexError, OverflowError) as err:
            raise CorruptPayload(f"{type(err).__name__}: {err}", schema_id) from None
        if body.tell() != len(data):
            raise CorruptPayload(
                f"{len(data) - body.tell()} bytes left over after the record", schema_id
            )
        return schema_id, record

    def decode(self, data: bytes, now_ms: int) -> M:
        """A validated record from wire-format bytes, event times checked against `now_ms`.

        Raises:
            DecodeError: any of `read`'s, or ValidationFailure naming each field and value.
            RegistryUnavailable: a new schema id could not be fetched.
        """
        schema_id, record = self.read(data)
        try:
            return models.validate(self.model, record, now_ms)
        except ValidationError as err:
            raise ValidationFailure(_describe(err), schema_id) from None


def _describe(err: ValidationError) -> str:
    """`field: message (value)` for each error, on one line."""
    return "; ".join(
        f"{'.'.join(map(str, e['loc'])) or '(record)'}: {e['msg']} ({e.get('input')!r:.80})"
        for e in err.errors(include_url=False)
    )


def serializer(
    model: type[M], source: SchemaSource, catalog: Catalog | None = None
) -> Serializer[M]:
    """A serializer for `model`'s topic, with the id `source` gives its newest schema."""
    newest = (catalog or catalog_module.default()).chain(model.TOPIC).newest
    return Serializer(model, source.schema_id(subject_for(model.TOPIC), newest.text), newest.schema)


def deserializer(
    model: type[M], source: SchemaSource, catalog: Catalog | None = None
) -> Deserializer[M]:
    """A deserializer for `model`'s topic reading into its newest schema."""
    newest = (catalog or catalog_module.default()).chain(model.TOPIC).newest
    return Deserializer(model, source, newest.schema)
