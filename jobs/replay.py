"""The replay job: a time range of the input topics to a Parquet dataset for training.

    Kafka [from, to) (SQL, bounded) ── write dataset (Python: decode, buffer, write Parquet)

A bounded job in Flink's BATCH runtime mode. Records come from the Kafka *table* connector with
`scan.startup.mode`/`scan.bounded.mode` = `timestamp` (`jobs.io.KafkaRange`): the same
`KafkaOffsetsInitializer.timestamp` start and stop the DataStream `KafkaSource` would use, but
the table connector also hands Python each record's topic, partition, offset, timestamp and key,
which the dataset's provenance columns and exactly-once files need; PyFlink 2.2's
`KafkaSourceBuilder` offers only `set_value_only_deserializer` (no record deserializer), so its
DataStream `KafkaSource` gives Python the value alone. The writer is chained to the source, so each
partition's records reach it in offset order. Exactly once without checkpoints: BATCH mode
restarts a failed run from the range's start, and the files are a function of the offsets read
(`jobs.dataset`), so a rerun rewrites the same files. The trade-offs are in jobs/DISCUSSION.md.
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import pyarrow.parquet as pq
from pyflink.common import Row
from pyflink.datastream import (
    DataStream,
    ProcessFunction,
    RuntimeContext,
    StreamExecutionEnvironment,
)

from gridstream import config, topics
from jobs import dataset, environment
from jobs.io import KafkaRange
from jobs.records import SchemaAccess
from schemas import models, serde

JOB_NAME = "gridstream-replay"
JOB_VERSION = "0.1.0"
CHUNK_OFFSETS = 50_000  # offsets of one topic-partition per file: bounds the writer's memory
PROGRESS_METRIC = "replayRecords"
# `--with-decisions` runs device-control itself (STREAMING: it has processing-time parts) with
# checkpoints off, for the same reason: a failure restarts it from the range's start.
DECISIONS_WITHOUT = ("execution.checkpointing.interval",)
# BATCH: no checkpoints; a failure restarts the run from its start (see the module docstring).
# A few restarts, not the live job's unending ones: a replay that keeps failing (a registry
# down, a topic gone) ends with its error instead of hanging.
RESTARTS = {
    "restart-strategy.type": "fixed-delay",
    "restart-strategy.fixed-delay.attempts": "2",
    "restart-strategy.fixed-delay.delay": "2 s",
}
FLINK_OVERLAY = {"execution.runtime-mode": "BATCH", **RESTARTS}


class ReplaySources(Protocol):
    """Gives the replay its input records (`jobs.io.INPUT_RECORD`s)."""

    def records(self, env: StreamExecutionEnvironment) -> DataStream: ...


class WriteDataset(ProcessFunction):  # type: ignore[misc]
    """Input rows into the dataset's Parquet files (`jobs.dataset.ChunkWriter`); emits nothing.

    The last chunks are written in `close`, which Flink calls at the end of the input.
    """

    def __init__(self, root: str, schemas: SchemaAccess, chunk_offsets: int) -> None:
        self.root = root
        self.schemas = schemas
        self.chunk_offsets = chunk_offsets

    def open(self, runtime_context: RuntimeContext) -> None:
        self.flattener = dataset.Flattener(self.schemas.source())
        self.writer = dataset.ChunkWriter(Path(self.root), self.chunk_offsets, dataset.schemas())
        self.read = runtime_context.get_metrics_group().counter(PROGRESS_METRIC)

    def process_element(self, value: Row, ctx: ProcessFunction.Context) -> Any:
        record = dataset.KafkaRecord(*value[:6])
        self.writer.add(self.flattener.place(record, int(time.time() * 1000)))
        self.read.inc()
        return iter(())

    def close(self) -> None:
        self.writer.finish()


class DatasetSink:
    """The dataset's folder, written by `WriteDataset` chained to the source."""

    def __init__(self, root: Path, chunk_offsets: int = CHUNK_OFFSETS) -> None:
        self.root = root
        self.chunk_offsets = chunk_offsets

    def write(
        self, env: StreamExecutionEnvironment, records: DataStream, schemas: SchemaAccess
    ) -> None:
        """Attach the writer to `records`."""
        records.process(WriteDataset(str(self.root), schemas, self.chunk_offsets)).name(
            "write dataset"
        ).uid("write-dataset")


class WriteDecisions(ProcessFunction):  # type: ignore[misc]
    """The audit records among device-control's output rows into `decisions/`, written at the
    end of the input, sorted, one file per date folder and subtask: the same inputs give the
    same files, so a rerun replaces them (the run has no checkpoint to resume from)."""

    def __init__(self, root: str, schemas: SchemaAccess) -> None:
        self.root = root
        self.schemas = schemas

    def open(self, runtime_context: RuntimeContext) -> None:
        self.table = dataset.decisions_table()
        self.values = dataset.getter(self.table, topics.AUDIT)
        model = models.MODELS[topics.AUDIT]
        self.deserializer = serde.deserializer(model, self.schemas.source())
        # PyFlink 2.2's get_index_of_this_subtask calls a Java method Flink 2 removed (it is on
        # TaskInfo now): thread mode raises AttributeError, so ask TaskInfo directly.
        java = runtime_context._runtime_context
        self.part = int(java.getTaskInfo().getIndexOfThisSubtask())
        self.rows: dict[str, list[tuple[Any, ...]]] = {}

    def process_element(self, value: Row, ctx: ProcessFunction.Context) -> Any:
        if value[0] == topics.AUDIT:
            _, fields = self.deserializer.read(bytes(value[2]))
            folder = f"date={dataset.date_of(fields['decided_ts_ms'])}"
            self.rows.setdefault(folder, []).append(tuple(self.values(fields)))
        return iter(())

    def close(self) -> None:
        schema = self.table.schema
        for folder, rows in self.rows.items():
            data = dataset.columns_of(schema, sorted(rows, key=repr))  # repr: None and lists too
            path = Path(self.root) / self.table.name / folder / f"part-{self.part:05d}.parquet"
            dataset.write_atomically(path, functools.partial(pq.write_table, data))


class DecisionsSink:
    """Takes device-control's output rows (`jobs.io.Sinks`): its decisions into the dataset."""

    def __init__(self, root: Path, schemas: SchemaAccess) -> None:
        self.root = root
        self.schemas = schemas

    def write(self, env: StreamExecutionEnvironment, records: DataStream) -> None:
        """Attach the decisions writer to the output rows."""
        records.process(WriteDecisions(str(self.root), self.schemas)).name("write decisions").uid(
            "write-decisions"
        )


def build(
    env: StreamExecutionEnvironment,
    sources: ReplaySources,
    sinks: DatasetSink,
    schemas: SchemaAccess | None = None,
) -> None:
    """Wire the source's records into the dataset writer (catalog numbering without `schemas`)."""
    sinks.write(env, sources.records(env), schemas or SchemaAccess())


def main(argv: Sequence[str] | None = None) -> None:
    """Replay `--from`/`--to` (epoch ms) of `--topics` into `--out`, with the settings' Kafka
    and registry; waits for the end (`gridstream replay` adds the manifest and progress)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--from", dest="from_ms", type=int, required=True)
    parser.add_argument("--to", dest="to_ms", type=int, required=True)
    parser.add_argument("--topics", nargs="+", default=list(topics.INPUTS))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--chunk-offsets", type=int, default=CHUNK_OFFSETS)
    args = parser.parse_args(argv)
    settings = config.load()
    env = environment.create(settings, FLINK_OVERLAY)
    source = KafkaRange(
        settings.stack.bootstrap_servers,
        args.topics,
        args.from_ms,
        args.to_ms,
        tuple(config.kafka_client_properties(settings.job).items()),
    )
    build(
        env,
        source,
        DatasetSink(args.out.resolve(), args.chunk_offsets),
        SchemaAccess(settings.stack.registry_url),
    )
    env.execute(JOB_NAME)


if __name__ == "__main__":
    main(sys.argv[1:])
