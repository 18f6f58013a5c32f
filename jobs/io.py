"""Where the jobs read and write: Kafka through the SQL connector, or collections in tests.

Every job sees its input as one stream of `INPUT_RECORD` rows (the raw bytes plus the Kafka
coordinates the dead-letter queue needs) and writes one stream of `OUTPUT_RECORD` rows whose
`topic` field routes each record. Reading through the Kafka *table* connector is what gives
PyFlink the record's key, headers, topic, partition and offset: the DataStream `KafkaSource`
offers only the value in Python.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from pyflink.common import Row, Types
from pyflink.datastream import DataStream, StreamExecutionEnvironment
from pyflink.table import StreamTableEnvironment

BYTES = Types.PRIMITIVE_ARRAY(Types.BYTE())

INPUT_FIELDS = ("topic", "partition", "offset", "ts_ms", "key", "value", "correlation_id")
INPUT_RECORD = Types.ROW_NAMED(
    list(INPUT_FIELDS),
    [Types.STRING(), Types.INT(), Types.LONG(), Types.LONG(), BYTES, BYTES, Types.STRING()],
)
OUTPUT_FIELDS = ("topic", "key", "value", "correlation_id")
OUTPUT_RECORD = Types.ROW_NAMED(list(OUTPUT_FIELDS), [Types.STRING(), BYTES, BYTES, Types.STRING()])
CORRELATION_HEADER = "correlation_id"


class Sources(Protocol):
    """Gives a job its input records."""

    def records(self, env: StreamExecutionEnvironment) -> DataStream: ...


class Sinks(Protocol):
    """Takes a job's output records."""

    def write(self, env: StreamExecutionEnvironment, records: DataStream) -> None: ...


def input_row(
    topic: str,
    partition: int,
    offset: int,
    ts_ms: int,
    key: bytes | None,
    value: bytes | None,
    correlation_id: str | None,
) -> Row:
    """An `INPUT_RECORD`; a missing correlation id is derived from the record's coordinates."""
    return Row(
        topic, partition, offset, ts_ms, key, value,
        correlation_id or f"{topic}-{partition}-{offset}",
    )  # fmt: skip


@dataclasses.dataclass(frozen=True)
class KafkaConnection:
    """What the Kafka tables need: brokers, consumer group, sink guarantee."""

    bootstrap_servers: str
    group_id: str
    delivery_guarantee: str = "exactly-once"
    transactional_id_prefix: str = "gridstream"
    transaction_timeout_ms: int = 600_000
    startup_mode: str = "group-offsets"


def _with(options: dict[str, str]) -> str:
    return ", ".join(f"'{k}' = '{v}'" for k, v in options.items())


@dataclasses.dataclass(frozen=True)
class KafkaSources:
    """All input topics, read as raw bytes with key, headers and coordinates (`read_committed`)."""

    connection: KafkaConnection
    topics: Sequence[str]
    table: str = "gridstream_inputs"

    def records(self, env: StreamExecutionEnvironment) -> DataStream:
        t_env = StreamTableEnvironment.create(env)
        c = self.connection
        options = {
            "connector": "kafka",
            "topic": ";".join(self.topics),
            "properties.bootstrap.servers": c.bootstrap_servers,
            "properties.group.id": c.group_id,
            "properties.isolation.level": "read_committed",
            "properties.auto.offset.reset": "earliest",
            "scan.startup.mode": c.startup_mode,
            "key.format": "raw",
            "key.fields": "key",
            "value.format": "raw",
            "value.fields-include": "EXCEPT_KEY",
        }
        t_env.execute_sql(
            f"CREATE TEMPORARY TABLE {self.table} ("
            "`key` BYTES, `value` BYTES, "
            "`topic` STRING METADATA VIRTUAL, `partition` INT METADATA VIRTUAL, "
            "`offset` BIGINT METADATA VIRTUAL, "
            "`ts` TIMESTAMP_LTZ(3) METADATA FROM 'timestamp' VIRTUAL, "
            "`headers` MAP<STRING, BYTES> METADATA VIRTUAL"
            f") WITH ({_with(options)})"
        )
        # Everything an INPUT_RECORD holds is computed here, in Java: a Python map over every
        # record costs a crossing into Python. Epoch millis in SQL (thread mode hands Python a
        # raw java.time.Instant otherwise); the correlation header decoded as UTF-8 (invalid
        # bytes replaced), or derived from the record's coordinates when absent, as `input_row`.
        columns = (
            "`topic`, `partition`, `offset`, "
            "EXTRACT(EPOCH FROM `ts`) * 1000 + EXTRACT(MILLISECOND FROM `ts`) AS ts_ms, "
            "`key`, `value`, "
            f"COALESCE(CAST(`headers`['{CORRELATION_HEADER}'] AS STRING), "
            "`topic` || '-' || CAST(`partition` AS STRING) || '-' || CAST(`offset` AS STRING))"
            " AS correlation_id"
        )
        table = t_env.sql_query(f"SELECT {columns} FROM {self.table}")  # noqa: S608 (own names)
        return t_env.to_data_stream(table)


@dataclasses.dataclass(frozen=True)
class KafkaSinks:
    """Each output row to the topic it names, key and `correlation_id` header kept."""

    connection: KafkaConnection
    topics: Sequence[str]
    table: str = "gridstream_outputs"

    def write(self, env: StreamExecutionEnvironment, records: DataStream) -> None:
        t_env = StreamTableEnvironment.create(env)
        c = self.connection
        options = {
            "connector": "kafka",
            "topic": ";".join(self.topics),
            "properties.bootstrap.servers": c.bootstrap_servers,
            "key.format": "raw",
            "key.fields": "key",
            "value.format": "raw",
            "value.fields-include": "EXCEPT_KEY",
            "sink.delivery-guarantee": c.delivery_guarantee,
            "properties.transaction.timeout.ms": str(c.transaction_timeout_ms),
        }
        if c.delivery_guarantee == "exactly-once":
            options["sink.transactional-id-prefix"] = c.transactional_id_prefix
        t_env.execute_sql(
            f"CREATE TEMPORARY TABLE {self.table} ("
            "`key` BYTES, `value` BYTES, `topic` STRING METADATA, "
            "`headers` MAP<STRING, BYTES> METADATA"
            f") WITH ({_with(options)})"
        )
        # The header map is built in SQL, in Java: a Python map would see every output again.
        t_env.create_temporary_view(f"{self.table}_rows", t_env.from_data_stream(records))
        statements = t_env.create_statement_set()
        statements.add_insert_sql(
            f"INSERT INTO {self.table} SELECT `key`, `value`, `topic`, "  # noqa: S608 (own names)
            f"MAP['{CORRELATION_HEADER}', CAST(`correlation_id` AS BYTES)] FROM {self.table}_rows"
        )
        statements.attach_as_datastream()


@dataclasses.dataclass(frozen=True)
class CollectionSources:
    """Input rows from memory, for tests and the one-message path without Kafka."""

    rows: Sequence[Row]

    def records(self, env: StreamExecutionEnvironment) -> DataStream:
        return env.from_collection(list(self.rows), type_info=INPUT_RECORD)


class CollectingSinks:
    """Keeps the output stream so a test can `execute_and_collect` it."""

    def __init__(self) -> None:
        self.stream: DataStream | None = None

    def write(self, env: StreamExecutionEnvironment, records: DataStream) -> None:
        self.stream = records

    def collect(self) -> list[Row]:
        """Run the job to the end of its (bounded) sources and return every output row."""
        if self.stream is None:
            raise RuntimeError("build() has not written to this sink")
        with self.stream.execute_and_collect() as results:
            return list(results)


def json_bytes(value: Any) -> bytes:
    """Compact JSON, the interim output encoding until the Avro contracts land."""
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode()


def json_rows(rows: Iterable[Row]) -> list[dict[str, Any]]:
    """Decode output rows' JSON values, with the topic added, for assertions and reports."""
    return [{"topic": r[0], **json.loads(bytes(r[2]))} for r in rows]
