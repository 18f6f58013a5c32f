"""The replay dataset: decoded input records as Parquet tables, written exactly once.

Each input record becomes one row of one table (`TABLES`, columns derived from the topic's
newest Avro schema, nested records flattened as `<field>_<name>`, after five provenance
columns), or one row of `rejects` with the reason it could not be read. Rows are buffered per
Kafka topic-partition in *chunks* of `chunk_offsets` offsets (`[k*n, (k+1)*n)`) and a chunk is
written when the partition's first record past it arrives, or at the end of the input: one
file per table and hive partition, named by topic, partition and the chunk's first offset,
written under a dot-name and renamed. A chunk's content and name depend only on the offsets
read, so a replay killed anywhere and run again over the same range rewrites the same files
with the same rows: no duplicate, no partial file (`docs/dataset.md`). No `pyflink` here.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import ValidationError

from gridstream import topics
from schemas import catalog as catalog_module
from schemas import models, serde, telemetry

DAY_MS = 86_400_000
PROVENANCE = pa.schema(
    [
        ("topic", pa.string()),
        ("partition", pa.int32()),
        ("offset", pa.int64()),
        ("kafka_ts_ms", pa.int64()),
        ("schema_id", pa.int32()),
    ]
)
REJECTS = pa.schema(
    [
        *PROVENANCE,
        ("error_class", pa.string()),
        ("error", pa.string()),
        ("key", pa.binary()),
        ("raw", pa.binary()),
    ]
)
_PRIMITIVES = {
    "string": pa.string(),
    "long": pa.int64(),
    "int": pa.int32(),
    "double": pa.float64(),
    "float": pa.float32(),
    "boolean": pa.bool_(),
    "bytes": pa.binary(),
}

Path_ = tuple[str, ...]  # a field's path in a decoded Avro record: ("quality", "invalid")


def _arrow_type(avro: Any) -> pa.DataType:
    """The Arrow type of a (non-record) Avro type; a nullable union is its non-null branch."""
    if isinstance(avro, list):
        (branch,) = [t for t in avro if t != "null"]
        return _arrow_type(branch)
    if isinstance(avro, dict):
        if avro["type"] == "array":
            return pa.list_(_arrow_type(avro["items"]))
        return _arrow_type(avro["type"])
    return _PRIMITIVES[avro]


def avro_columns(schema: Mapping[str, Any], prefix: Path_ = ()) -> list[tuple[Path_, pa.DataType]]:
    """Each leaf field of an Avro record schema with its Arrow type, nested records flattened."""
    columns: list[tuple[Path_, pa.DataType]] = []
    for field in schema["fields"]:
        kind = field["type"]
        if isinstance(kind, dict) and kind.get("type") == "record":
            columns += avro_columns(kind, (*prefix, field["name"]))
        else:
            columns.append(((*prefix, field["name"]), _arrow_type(kind)))
    return columns


@dataclasses.dataclass(frozen=True)
class Table:
    """One table of the dataset: the topics it holds, its columns and how it is partitioned.

    Attributes:
        name: The folder under the dataset's root.
        topics: The input topics whose records are its rows.
        time_field: The event-time field whose UTC date partitions it (`date=YYYY-MM-DD`).
        by_class: Partitioned by `device_class` too (a hive column then, not a file column).
        fields: The record's columns as paths into the decoded record, with their types.
        extra: Columns that are not record fields (`deleted` of the registry).
    """

    name: str
    topics: tuple[str, ...]
    time_field: str
    by_class: bool
    fields: tuple[tuple[Path_, pa.DataType], ...]
    extra: tuple[tuple[str, pa.DataType], ...] = ()
    provenance: bool = True

    @property
    def schema(self) -> pa.Schema:
        """The Arrow schema of its files: provenance, the record's fields, the extras."""
        named = [("_".join(path), kind) for path, kind in self.fields]
        return pa.schema([*(PROVENANCE if self.provenance else ()), *named, *self.extra])


def _table(
    name: str,
    topic_names: Sequence[str],
    time_field: str,
    by_class: bool = False,
    extra: tuple[tuple[str, pa.DataType], ...] = (),
    provenance: bool = True,
) -> Table:
    """A table whose columns are the union of its topics' newest schemas, in topic order."""
    fields: dict[Path_, pa.DataType] = {}
    for topic in topic_names:
        for path, kind in avro_columns(catalog_module.default().chain(topic).newest.schema):
            fields.setdefault(path, kind)
    if by_class:  # the folder name holds it: a column too would clash with it in readers
        del fields[("device_class",)]
    return Table(
        name, tuple(topic_names), time_field, by_class, tuple(fields.items()), extra, provenance
    )


def tables() -> dict[str, Table]:
    """The dataset's tables by name (`docs/dataset.md`)."""
    return {
        t.name: t
        for t in (
            _table("readings", (topics.IOT_TELEMETRY, topics.SCADA_TELEMETRY), "ts_ms", True),
            _table(
                "registry",
                (topics.DEVICE_REGISTRY,),
                "updated_ts_ms",
                extra=(("deleted", pa.bool_()),),
            ),
            _table("weather", (topics.WEATHER,), "ts_ms"),
            _table("dr_events", (topics.DR_EVENTS,), "issued_ts_ms"),
            _table("approvals", (topics.OPERATOR_APPROVALS,), "ts_ms"),
        )
    }


REJECTS_TABLE = "rejects"


def decisions_table() -> Table:
    """The device-control job's audit records over a replayed range (`--with-decisions`):
    the audit schema's fields, `cause` flattened; no provenance (they were never in Kafka)."""
    return _table("decisions", (topics.AUDIT,), "decided_ts_ms", provenance=False)


def date_of(ts_ms: int) -> str:
    """The UTC date of an epoch-millisecond time, `YYYY-MM-DD`."""
    return datetime.datetime.fromtimestamp(ts_ms // 1000, datetime.UTC).strftime("%Y-%m-%d")


class KafkaRecord(NamedTuple):
    """One consumed record: its position, Kafka timestamp, key and value bytes."""

    topic: str
    partition: int
    offset: int
    kafka_ts_ms: int
    key: bytes | None
    value: bytes | None


@dataclasses.dataclass(frozen=True)
class Placed:
    """A row and where it goes: its table and hive folder (`date=.../device_class=...`)."""

    table: str
    folder: str
    row: tuple[Any, ...]


def getter(table: Table, topic: str) -> Callable[[Mapping[str, Any]], list[Any]]:
    """The record-field values of `table`'s columns for a record of `topic` (None where the
    topic's schema has no such field)."""
    own = {path for path, _ in avro_columns(catalog_module.default().chain(topic).newest.schema)}
    paths = [path if path in own else None for path, _ in table.fields]

    def values(record: Mapping[str, Any]) -> list[Any]:
        out: list[Any] = []
        for path in paths:
            if path is None:
                out.append(None)
            elif len(path) == 1:
                out.append(record[path[0]])
            else:
                value: Any = record
                for name in path:
                    value = value[name]
                out.append(value)
        return out

    return values


class Flattener:
    """Input records to `Placed` rows: decoded with the newest reader schema whatever the
    writer schema, validated as the live job validates, or placed in `rejects`."""

    def __init__(self, source: serde.SchemaSource) -> None:
        self.tables = tables()
        self._of_topic = {topic: t for t in self.tables.values() for topic in t.topics}
        self._deserializers = {
            topic: serde.deserializer(models.MODELS[topic], source) for topic in self._of_topic
        }
        self._getters = {topic: getter(t, topic) for topic, t in self._of_topic.items()}
        self._dates: dict[int, str] = {}

    def _date(self, ts_ms: int) -> str:
        day = ts_ms // DAY_MS
        found = self._dates.get(day)
        if found is None:
            found = self._dates[day] = date_of(ts_ms)
        return found

    def place(self, record: KafkaRecord, now_ms: int) -> Placed:
        """The row of one input record, in its table or in `rejects`."""
        table = self._of_topic.get(record.topic)
        schema_id: int | None = None
        try:
            if table is None:
                raise serde.DecodeError(f"topic {record.topic!r} is not an input topic")
            if record.value is None:
                if record.topic != topics.DEVICE_REGISTRY or not record.key:
                    raise serde.DecodeError("no value (a tombstone) on a topic that has none")
                return self._tombstone(table, record, record.key)
            deserializer = self._deserializers[record.topic]
            schema_id, fields = deserializer.read(record.value)
            if not telemetry.passes(deserializer.model, fields, now_ms):  # as the live decoder
                models.validate(deserializer.model, fields, now_ms)
        except serde.DecodeError as err:
            return self._reject(record, err)
        except ValidationError as err:
            return self._reject(
                record, serde.ValidationFailure(str(err).replace("\n", "; "), schema_id)
            )
        row = (*record[:4], schema_id, *self._getters[record.topic](fields))
        if table.extra:
            row = (*row, False)
        folder = f"date={self._date(fields[table.time_field])}"
        if table.by_class:
            folder += f"/device_class={fields['device_class']}"
        return Placed(table.name, folder, row)

    def _tombstone(self, table: Table, record: KafkaRecord, key: bytes) -> Placed:
        """A deleted CIS record: its device id (the key) and `deleted`, the rest null; dated
        by its Kafka time, as it carries no time of its own."""
        fields: list[Any] = [None] * len(table.fields)
        device_id = [path for path, _ in table.fields].index(("device_id",))
        fields[device_id] = key.decode("utf-8", "replace")
        row = (*record[:4], None, *fields, True)
        return Placed(table.name, f"date={self._date(record.kafka_ts_ms)}", row)

    def _reject(self, record: KafkaRecord, err: serde.DecodeError) -> Placed:
        row = (*record[:4], err.schema_id, type(err).__name__, str(err), record.key, record.value)
        return Placed(REJECTS_TABLE, f"date={self._date(record.kafka_ts_ms)}", row)


class OutOfOrderError(RuntimeError):
    """A partition's records arrived out of offset order: chunks would be written twice with
    different rows. The replay job reads each partition in one subtask, in order; this means
    its graph was changed (a shuffle before the writer): keep the writer chained to the source."""


def chunk_file(topic: str, partition: int, first_offset: int) -> str:
    """The file name of one chunk of one topic-partition (in every table folder it reaches)."""
    return f"{topic}-{partition}-{first_offset:020d}.parquet"


def write_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """`write` a dot-named file next to `path`, then rename it to `path`: a reader (and a
    restarted replay) sees the whole file or none (readers skip dot-files)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    write(temporary)
    os.replace(temporary, path)


class ChunkWriter:
    """Buffers `Placed` rows per topic-partition chunk; writes each chunk once it is complete.

    Attributes:
        written: Rows written so far, by table.
    """

    def __init__(self, root: Path, chunk_offsets: int, schemas: Mapping[str, pa.Schema]) -> None:
        self.root = root
        self.chunk_offsets = chunk_offsets
        self.schemas = schemas
        self.written: dict[str, int] = {}
        # (topic, partition) -> (chunk number, {(table, folder): rows})
        self._open: dict[tuple[str, int], tuple[int, dict[tuple[str, str], list[Any]]]] = {}

    def add(self, placed: Placed) -> None:
        """Buffer one record's row; write the partition's previous chunk if this one is past it."""
        topic, partition, offset = placed.row[:3]
        chunk = offset // self.chunk_offsets
        held = self._open.get((topic, partition))
        if held is None or held[0] != chunk:
            if held is not None:
                if chunk < held[0]:
                    raise OutOfOrderError(
                        f"{topic}-{partition}: offset {offset} after chunk {held[0]} was begun"
                    )
                self._write(topic, partition, *held)
            held = (chunk, {})
            self._open[(topic, partition)] = held
        held[1].setdefault((placed.table, placed.folder), []).append(placed.row)

    def finish(self) -> None:
        """Write every chunk still buffered (the end of the input)."""
        for (topic, partition), held in sorted(self._open.items()):
            self._write(topic, partition, *held)
        self._open.clear()

    def _write(
        self, topic: str, partition: int, chunk: int, groups: Mapping[tuple[str, str], list[Any]]
    ) -> None:
        name = chunk_file(topic, partition, chunk * self.chunk_offsets)
        for (table, folder), rows in groups.items():
            data = columns_of(self.schemas[table], rows)
            path = self.root / table / folder / name
            write_atomically(path, functools.partial(pq.write_table, data))
            self.written[table] = self.written.get(table, 0) + len(rows)


def columns_of(schema: pa.Schema, rows: Iterable[Sequence[Any]]) -> pa.Table:
    """Row tuples in `schema`'s column order as an Arrow table."""
    columns = list(zip(*rows, strict=True)) or [()] * len(schema)
    return pa.Table.from_arrays(
        [
            pa.array(list(values), type=field.type)
            for values, field in zip(columns, schema, strict=True)
        ],
        schema=schema,
    )


def schemas() -> dict[str, pa.Schema]:
    """The Arrow schema of every table, rejects included."""
    return {**{name: t.schema for name, t in tables().items()}, REJECTS_TABLE: REJECTS}
