"""Where the jobs read and write: Kafka through the SQL connector, or collections in tests.

A job sees its input as `INPUT_RECORD` rows (the raw bytes plus the Kafka coordinates the
dead-letter queue needs), split in SQL, in Java, into `Inputs`: the device-keyed topics as
`DEVICE_ROW`s with event time and watermarks, the control topics as plain rows, and a
heartbeat a second of the device rows. It writes one stream of `OUTPUT_RECORD` rows whose
`topic` field routes each record. Reading through the Kafka *table* connector is what gives
PyFlink the record's key, headers, topic, partition and offset: the DataStream `KafkaSource`
offers only the value in Python.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from pyflink.common import Duration, Row, Types, WatermarkStrategy
from pyflink.datastream import DataStream, StreamExecutionEnvironment
from pyflink.table import Schema, StreamTableEnvironment

from gridstream import topics

BYTES = Types.PRIMITIVE_ARRAY(Types.BYTE())

INPUT_FIELDS = ("topic", "partition", "offset", "ts_ms", "key", "value", "correlation_id")
INPUT_RECORD = Types.ROW_NAMED(
    list(INPUT_FIELDS),
    [Types.STRING(), Types.INT(), Types.LONG(), Types.LONG(), BYTES, BYTES, Types.STRING()],
)
# (device id, INPUT_RECORD, event time): the device stage's input, keyed in Java on field 0 (the
# Kafka key); the stage is handed field 1. The event time (null for rows the job makes) is there
# so the table conversion stamps each record with it.
DEVICE_ROW = Types.ROW_NAMED(
    ["device_key", "record", "rowtime"], [Types.STRING(), INPUT_RECORD, Types.INSTANT()]
)
OUTPUT_FIELDS = ("topic", "key", "value", "correlation_id")
OUTPUT_RECORD = Types.ROW_NAMED(list(OUTPUT_FIELDS), [Types.STRING(), BYTES, BYTES, Types.STRING()])
CORRELATION_HEADER = "correlation_id"


@dataclasses.dataclass(frozen=True)
class EventTime:
    """How a stream's watermark follows its records' times."""

    out_of_orderness_ms: int = 5_000
    idleness_ms: int = 5_000
    # A registry partition gets a record now and then: this soon after one it stops holding
    # the device stage's clock back (telemetry partitions: `idleness_ms`).
    registry_idleness_ms: int = 1_000

    def strategy(self) -> WatermarkStrategy:
        """Bounded out-of-orderness with idleness, per subtask (the records' timestamps unless
        an assigner is added)."""
        return WatermarkStrategy.for_bounded_out_of_orderness(
            Duration.of_millis(self.out_of_orderness_ms)
        ).with_idleness(Duration.of_millis(self.idleness_ms))


@dataclasses.dataclass(frozen=True)
class Inputs:
    """A job's input: `devices`, `DEVICE_ROW`s of the device-keyed topics with event time (the
    Kafka timestamp, never later than the job's clock); `control`, `INPUT_RECORD`s of the
    other topics (and the registry again); `heartbeats`, `(newest ms,)` rows of the telemetry
    among the device rows, one a second while it flows (from the same reading as `devices`, so
    a backlog there shows here)."""

    devices: DataStream
    control: DataStream
    heartbeats: DataStream


class Sources(Protocol):
    """Gives a job its inputs."""

    def inputs(self, env: StreamExecutionEnvironment, timing: EventTime) -> Inputs: ...


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
    # Kafka client settings for every table (TLS, SASL: `config.kafka_client_properties`).
    client_properties: tuple[tuple[str, str], ...] = ()


def _client(properties: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Kafka client settings as the Kafka tables' `properties.*` options."""
    return {f"properties.{key}": value for key, value in properties}


def _with(options: dict[str, str]) -> str:
    """A WITH clause; a quote in a value (a SASL JAAS line may hold one) is doubled."""
    quoted = {k: v.replace("'", "''") for k, v in options.items()}
    return ", ".join(f"'{k}' = '{v}'" for k, v in quoted.items())


def _rowtime(ts: str) -> str:
    """Event time from a Kafka timestamp `ts`: a clock ahead of the job's moves no watermark."""
    return f"LEAST({ts}, CURRENT_TIMESTAMP)"


HEARTBEAT_S = 1
CONTROL_GROUP = ".control"  # the control source's consumer group: the job's, and this


def consumer_groups(group: str) -> dict[str, tuple[str, ...]]:
    """The consumer groups `KafkaSources` commits under, with the topics each reads."""
    return {group: topics.DEVICE_KEYED_INPUTS, f"{group}{CONTROL_GROUP}": topics.CONTROL_INPUTS}


def _interval(ms: int) -> str:
    return f"INTERVAL '{ms / 1000:.3f}' SECOND"


def _table_env(env: StreamExecutionEnvironment, name: str, uids: str = "") -> Any:
    """A table environment whose sources get uids of their own (`name-1_source`, ...), or
    `uids` (`table.exec.uid.format`)."""
    t_env = StreamTableEnvironment.create(env)
    t_env.get_config().set("table.exec.uid.format", uids or f"{name}-<id>_<transformation>")
    return t_env


def _in(topic_names: Sequence[str]) -> str:
    return ", ".join(f"'{t}'" for t in topic_names)


def _keyed_rows(t_env: Any, table: str, topic_names: Sequence[str]) -> DataStream:
    """The records of `topic_names` in `table` (the columns of `INPUT_RECORD`, and a `rowtime`
    with its watermark) as `DEVICE_ROW`s, in Java: a reading first meets Python in the device
    stage."""
    record = "ROW(`topic`, `partition`, `offset`, ts_ms, `key`, `value`, correlation_id)"
    device_key = "COALESCE(CAST(`key` AS STRING), '')"
    wanted = f"`topic` IN ({_in(topic_names)})"
    query = f"SELECT {device_key}, {record}, `rowtime` FROM {table} WHERE {wanted}"  # noqa: S608
    rows = t_env.to_data_stream(t_env.sql_query(query))
    # The table runtime's own row type; PyFlink's keyed Python operators need a RowTypeInfo
    # (with the other, the job hangs): the rows are the same Java objects either way.
    rows._j_data_stream.getTransformation().setOutputType(DEVICE_ROW.get_java_type_info())
    return rows


def _heartbeats(t_env: Any, devices: DataStream) -> DataStream:
    """`(newest ms,)` of the telemetry among `devices`, one row a second of processing time."""
    seen = t_env.from_data_stream(
        devices, Schema.new_builder().column_by_expression("pt", "PROCTIME()").build()
    )
    # Telemetry only: a registry record's Kafka time is when the CIS sent it, not a reading's.
    telemetry = f"record.`topic` IN ({_in(topics.TELEMETRY)})"
    heartbeats = t_env.sql_query(
        "SELECT MAX(record.ts_ms) AS newest FROM TABLE(TUMBLE("  # noqa: S608
        f"TABLE {seen}, DESCRIPTOR(pt), INTERVAL '{HEARTBEAT_S}' SECOND))"
        f" WHERE {telemetry} GROUP BY window_start, window_end"
    )
    return t_env.to_data_stream(heartbeats)


def _control_rows(
    t_env: Any, table: str, topic_names: Sequence[str] = topics.CONTROL_INPUTS
) -> DataStream:
    """The records of `topic_names` (the control topics) in `table` as `INPUT_RECORD`s."""
    columns = ", ".join(f"`{name}`" for name in INPUT_FIELDS)
    return t_env.to_data_stream(
        t_env.sql_query(
            f"SELECT {columns} FROM {table}"  # noqa: S608 (own names)
            f" WHERE `topic` IN ({_in(topic_names)})"
        )
    )


# The Kafka table's columns: `INPUT_FIELDS` from the record and its metadata. Epoch millis in
# SQL (thread mode hands Python a raw java.time.Instant otherwise); the correlation header
# decoded as UTF-8 (invalid bytes replaced), or derived from the record's coordinates when
# absent, as `input_row`.
_INPUT_COLUMNS = (
    "`key` BYTES, `value` BYTES, "
    "`topic` STRING METADATA VIRTUAL, `partition` INT METADATA VIRTUAL, "
    "`offset` BIGINT METADATA VIRTUAL, "
    "`ts` TIMESTAMP_LTZ(3) METADATA FROM 'timestamp' VIRTUAL, "
    "`headers` MAP<STRING, BYTES> METADATA VIRTUAL, "
    "ts_ms AS EXTRACT(EPOCH FROM `ts`) * 1000 + EXTRACT(MILLISECOND FROM `ts`), "
    f"correlation_id AS COALESCE(CAST(`headers`['{CORRELATION_HEADER}'] AS STRING), "
    "`topic` || '-' || CAST(`partition` AS STRING) || '-' || CAST(`offset` AS STRING))"
)
_RAW_BYTES = {
    "key.format": "raw",
    "key.fields": "key",
    "value.format": "raw",
    "value.fields-include": "EXCEPT_KEY",
}


def _bounded(from_ms: int, to_ms: int) -> dict[str, str]:
    """Kafka table options reading each partition from its first record stamped at or after
    `from_ms` to its first stamped at or after `to_ms` (excluded), that end fixed at the start."""
    return {
        "scan.startup.mode": "timestamp",
        "scan.startup.timestamp-millis": str(from_ms),
        "scan.bounded.mode": "timestamp",
        "scan.bounded.timestamp-millis": str(to_ms),
    }


@dataclasses.dataclass(frozen=True)
class KafkaRange:
    """The records of `topic_names` whose Kafka timestamps fall in `[from_ms, to_ms)` as
    `INPUT_RECORD`s, a bounded scan (`read_committed`, no consumer group, no offsets committed).

    Both ends are offsets found by the broker's time index when the job starts (Flink's
    `KafkaOffsetsInitializer.timestamp`): each partition from its first record stamped at or
    after `from_ms` to, not including, its first stamped at or after `to_ms`, or its end. Records
    appended after the job started are not read, whatever their timestamps.
    """

    bootstrap_servers: str
    topic_names: Sequence[str]
    from_ms: int
    to_ms: int
    client_properties: tuple[tuple[str, str], ...] = ()

    def records(self, env: StreamExecutionEnvironment) -> DataStream:
        """The range's records, each partition's in offset order."""
        t_env = _table_env(env, "replay")
        options = {
            "connector": "kafka",
            "topic": ";".join(self.topic_names),
            **_client(self.client_properties),
            "properties.bootstrap.servers": self.bootstrap_servers,
            "properties.isolation.level": "read_committed",
            **_bounded(self.from_ms, self.to_ms),
            **_RAW_BYTES,
        }
        t_env.execute_sql(
            f"CREATE TEMPORARY TABLE replay_inputs ({_INPUT_COLUMNS}) WITH ({_with(options)})"
        )
        return _control_rows(t_env, "replay_inputs", self.topic_names)


@dataclasses.dataclass(frozen=True)
class KafkaSources:
    """The input topics, read as raw bytes with key, headers and coordinates (`read_committed`)
    by three sources: telemetry (uid `telemetry-1_source`) and the registry (`registry_source`)
    under the consumer group `<group>`, the control topics (`control-10_source`) under
    `<group>.control`; the registry is read by both groups. The telemetry source's uid is new:
    under the old one (`devices-1_source`) a savepoint holds registry partitions too, which a
    restored Kafka source goes on reading whatever its topics, and whose watermarks would hold
    the clock back (`gridstream job start` says what to do with such a savepoint).

    The device rows' watermark is made per Kafka partition in the sources and is the least of
    them: a partition read ahead of another on a backlog does not move the device stage's clock
    past the other's readings. A telemetry partition with no record for `idleness_ms` stops
    holding it back, a registry partition after `registry_idleness_ms` (one record now and
    then: it would hold the clock for the timeout after each)."""

    connection: KafkaConnection
    range_ms: tuple[int, int] | None = None  # a replay's [from, to), as `KafkaRange` reads it

    def _table(
        self, t_env: Any, name: str, topic_names: Sequence[str], group: str, timing: EventTime,
        idleness_ms: int,
    ) -> None:  # fmt: skip
        options = {
            "connector": "kafka",
            "topic": ";".join(topic_names),
            **_client(self.connection.client_properties),
            "properties.bootstrap.servers": self.connection.bootstrap_servers,
            "properties.group.id": group,
            "properties.isolation.level": "read_committed",
            "properties.auto.offset.reset": "earliest",
            "scan.startup.mode": self.connection.startup_mode,
            "scan.watermark.idle-timeout": f"{idleness_ms} ms",
            **_RAW_BYTES,
        }
        if self.range_ms is not None:
            options.update(_bounded(*self.range_ms))
        t_env.execute_sql(
            f"CREATE TEMPORARY TABLE {name} ({_INPUT_COLUMNS}, "
            f"`rowtime` AS {_rowtime('`ts`')}, "
            f"WATERMARK FOR `rowtime` AS `rowtime` - {_interval(timing.out_of_orderness_ms)}"
            f") WITH ({_with(options)})"
        )

    def inputs(self, env: StreamExecutionEnvironment, timing: EventTime) -> Inputs:
        group = self.connection.group_id
        t_env = _table_env(env, "telemetry")
        self._table(t_env, "device_inputs", topics.TELEMETRY, group, timing, timing.idleness_ms)
        telemetry = _keyed_rows(t_env, "device_inputs", topics.TELEMETRY)
        heartbeats = _heartbeats(t_env, telemetry)
        t_env = _table_env(env, "control")
        control_group = f"{group}{CONTROL_GROUP}"
        self._table(
            t_env, "control_inputs", topics.CONTROL_INPUTS, control_group, timing,
            timing.idleness_ms,
        )  # fmt: skip
        control = _control_rows(t_env, "control_inputs")
        # Read last, its uids without the planner's node ids (they number nodes across the
        # process): the sources before keep the uids earlier savepoints hold their offsets under.
        t_env = _table_env(env, "registry", "registry_<transformation>")
        registry_topic = (topics.DEVICE_REGISTRY,)
        self._table(
            t_env, "registry_inputs", registry_topic, group, timing, timing.registry_idleness_ms
        )
        registry = _keyed_rows(t_env, "registry_inputs", registry_topic)
        return Inputs(telemetry.union(registry), control, heartbeats)


@dataclasses.dataclass(frozen=True)
class KafkaSinks:
    """Each output row to the topic it names, key and `correlation_id` header kept."""

    connection: KafkaConnection
    topics: Sequence[str]
    table: str = "gridstream_outputs"

    def write(self, env: StreamExecutionEnvironment, records: DataStream) -> None:
        # The node id the sink had before the registry got a source of its own (`KafkaSources`),
        # fixed: earlier savepoints hold its transactions under it.
        t_env = _table_env(env, "outputs", "outputs-15_<transformation>")
        c = self.connection
        options = {
            "connector": "kafka",
            "topic": ";".join(self.topics),
            **_client(c.client_properties),
            "properties.bootstrap.servers": c.bootstrap_servers,
            **_RAW_BYTES,
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

    def inputs(self, env: StreamExecutionEnvironment, timing: EventTime) -> Inputs:
        t_env = _table_env(env, "collection")
        rows = env.from_collection(list(self.rows), type_info=INPUT_RECORD)
        schema = (
            Schema.new_builder()
            .column_by_expression("rowtime", _rowtime("TO_TIMESTAMP_LTZ(ts_ms, 3)"))
            .watermark("rowtime", f"`rowtime` - {_interval(timing.out_of_orderness_ms)}")
            .build()
        )
        t_env.create_temporary_view("collected_inputs", t_env.from_data_stream(rows, schema))
        devices = _keyed_rows(t_env, "collected_inputs", topics.DEVICE_KEYED_INPUTS)
        heartbeats = _heartbeats(t_env, devices)
        return Inputs(devices, _control_rows(t_env, "collected_inputs"), heartbeats)


@dataclasses.dataclass(frozen=True)
class CollectionRecords:
    """`INPUT_RECORD`s from memory for the replay, in the order given (one source subtask)."""

    rows: Sequence[Row]

    def records(self, env: StreamExecutionEnvironment) -> DataStream:
        """The rows as a bounded stream."""
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
