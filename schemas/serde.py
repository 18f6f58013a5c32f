"""The Confluent wire format: magic byte 0, a 4-byte big-endian schema id, the Avro binary body.

A `Serializer` encodes validated models with the id the registry gave the topic's newest schema.
A `Deserializer` decodes any historic writer schema into the newest reader schema and validates
the result. Writer schemas are fetched and parsed once per id, and their resolution against the
reader is decided once per id: per record there is no registry call and no schema parsing.
An id the registry does not have yet (a replica behind, the registry down) is asked again with
backoff for the `IdWait` window before its record fails (`Deserializer`).

The serde reads and writes the underlying Avro types: logical-type annotations
(`timestamp-millis`) document the schemas for other consumers, while records here keep epoch
milliseconds as `int` (`ts_ms`) instead of paying for `datetime` objects on every record.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
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
UNKNOWN_ID_RETRY_S = 30.0  # an id given up on is asked again (once) after this long
_MAX_UNKNOWN_IDS = 4096  # remembered unknown ids; forgotten when full, so garbage cannot grow it
_HEADER = struct.Struct(">bi")
_LOG = logging.getLogger(__name__)


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


@dataclasses.dataclass(frozen=True)
class IdWait:
    """How long a schema id the source lacks (or cannot be asked for) is asked again.

    The asks run from the first one for `window_s`, `first_pause_s` apart and doubling up to
    `max_pause_s`; the last pause is cut so that one ask falls on the window's end exactly.

    Attributes:
        window_s: 0 gives up after the first ask.
        first_pause_s: The pause after the first ask.
        max_pause_s: The longest pause.
    """

    window_s: float = 0.0
    first_pause_s: float = 0.25
    max_pause_s: float = 5.0

    def pause(self, asks: int, waited_s: float) -> float | None:
        """The pause before the next ask after `asks` failed ones, `waited_s` after the first;
        None once an ask at or past the window's end has failed: give up."""
        if waited_s >= self.window_s:
            return None
        doubled = self.first_pause_s * 2.0 ** min(asks - 1, 32)
        return min(doubled, self.max_pause_s, self.window_s - waited_s)


WAIT_FOUND = "found"  # the id came within the window: its records decode
WAIT_UNKNOWN = "unknown"  # the source still says no such id: its record is dead-lettered
WAIT_UNAVAILABLE = "unavailable"  # the source never answered: RegistryUnavailable


@dataclasses.dataclass(frozen=True)
class Waited:
    """The end of a wait for one schema id: how it ended (`WAIT_*`), after how long."""

    schema_id: int
    outcome: str
    waited_s: float
    asks: int


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
    """Decodes any historic writer schema of one topic into validated `M` records.

    A new id the source lacks or cannot be asked for is asked again as `wait` says, blocking the
    caller (records behind it wait: their order is kept). Past the window, a lacking id fails
    its record with `UnknownSchemaId` and is not waited for again: it fails at once for
    `UNKNOWN_ID_RETRY_S`, then is asked once per record until found; a source that never
    answered raises `RegistryUnavailable`. Each wait is logged when it starts and when it ends,
    and handed to `on_waited` at its end.
    """

    def __init__(
        self,
        model: type[M],
        source: SchemaSource,
        reader_schema: Mapping[str, Any],
        clock: Callable[[], float] = time.monotonic,
        wait: IdWait = IdWait(),
        sleep: Callable[[float], None] = time.sleep,
        on_waited: Callable[[Waited], None] | None = None,
    ) -> None:
        """Parse the reader schema once; writer schemas are fetched on first sight of their id.

        Args:
            model: The record type.
            source: Writer schemas by id (the registry).
            reader_schema: The topic's newest schema, as JSON.
            clock: Seconds, for the wait and for `UNKNOWN_ID_RETRY_S`.
            wait: How long a new id is asked again; the default gives up after one ask.
            sleep: Pauses the caller between asks.
            on_waited: Told how each wait ended.
        """
        self.model = model
        self._source = source
        self._clock = clock
        self._wait = wait
        self._sleep = sleep
        self._on_waited = on_waited
        self._reader_json = reader_schema
        self._reader = parse(reader_schema)
        self._plans: dict[int, _Plan] = {}
        self._unresolvable: dict[int, str] = {}  # an id's schema never changes: kept for good
        self._unknown: dict[int, tuple[float, str]] = {}  # id -> (ask again after, message)

    def _plan(self, schema_id: int) -> _Plan:
        """The plan for a writer id not seen yet, or the failure already known for it."""
        if schema_id <= 0:
            raise UnknownSchemaId(f"schema id {schema_id} is not a registry id", schema_id)
        if schema_id in self._unresolvable:
            raise ResolutionFailure(self._unresolvable[schema_id], schema_id)
        given_up = self._unknown.get(schema_id)
        if given_up is not None and self._clock() < given_up[0]:
            raise UnknownSchemaId(given_up[1], schema_id)
        try:
            wait = IdWait() if given_up else self._wait
            plan = self._resolve(schema_id, self._fetched(schema_id, wait))
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

    def _fetched(self, schema_id: int, wait: IdWait) -> str:
        """The writer schema's text, asked again as `wait` allows while the source lacks the
        id or does not answer."""
        started, asks = self._clock(), 0
        while True:
            try:
                text = self._source.writer_schema(schema_id)
            except (UnknownSchemaId, RegistryUnavailable) as err:
                asks += 1
                pause = wait.pause(asks, self._clock() - started)
                if pause is None:
                    if asks > 1:
                        lacked = isinstance(err, UnknownSchemaId)
                        outcome = WAIT_UNKNOWN if lacked else WAIT_UNAVAILABLE
                        self._waited(Waited(schema_id, outcome, self._clock() - started, asks), err)
                    raise
                if asks == 1:
                    _LOG.warning(
                        "%s: schema id %d not fetched (%s): asking again for up to %.0f s; "
                        "the records behind it wait",
                        self.model.__name__, schema_id, err, wait.window_s,
                    )  # fmt: skip
                self._sleep(pause)
                continue
            if asks:
                self._waited(Waited(schema_id, WAIT_FOUND, self._clock() - started, asks + 1))
            return text

    def _waited(self, waited: Waited, err: Exception | None = None) -> None:
        """Log the end of a wait and tell `on_waited`."""
        _LOG.warning(
            "%s: schema id %d %s after %.1f s and %d asks%s",
            self.model.__name__, waited.schema_id, waited.outcome, waited.waited_s, waited.asks,
            f": {err}" if err else "",
        )  # fmt: skip
        if self._on_waited is not None:
            self._on_waited(waited)

    def _resolve(self, schema_id: int, text: str) -> _Plan:
        """Parse the writer schema; decide once whether the reader can read it."""
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
    model: type[M],
    source: SchemaSource,
    catalog: Catalog | None = None,
    wait: IdWait = IdWait(),
    on_waited: Callable[[Waited], None] | None = None,
) -> Deserializer[M]:
    """A deserializer for `model`'s topic reading into its newest schema, waiting for new ids
    as `wait` says."""
    newest = (catalog or catalog_module.default()).chain(model.TOPIC).newest
    return Deserializer(model, source, newest.schema, wait=wait, on_waited=on_waited)
