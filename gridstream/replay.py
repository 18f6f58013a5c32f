"""`gridstream replay`: run the replay job over a time range and write the dataset's manifest.

The job (`jobs/replay.py`) runs here, on a local MiniCluster in this process's JVM, reading the
settings' Kafka and registry and writing the dataset to a local folder. Before it starts, the
broker's time index gives each partition's offset range (what the job will read), which the
progress line counts against; after it ends, the manifest is written from the files themselves.
A dataset is complete when `manifest.json` exists (`docs/dataset.md`).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
import pyarrow.dataset as ds
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.schema_registry.error import SchemaRegistryError
from py4j.protocol import Py4JJavaError

from gridstream import config, topics
from gridstream.stack.process import free_ports
from jobs import dataset, device_control, environment, replay
from jobs.io import KafkaConnection, KafkaRange, KafkaSources
from jobs.records import SchemaAccess
from schemas.catalog import subject_for
from schemas.registry import Registry, RegistryConfig

REQUEST_FILE = "_replay.json"  # the range a folder is being filled with; `_` hides it from readers
MANIFEST_FILE = "manifest.json"
PROGRESS_EVERY_S = 1.0


class ReplayError(ValueError):
    """A replay that cannot run as asked; the message says what to change."""


def parse_time(text: str) -> int:
    """Epoch milliseconds from `text`: digits (epoch ms) or an ISO 8601 time (UTC if it names
    no offset)."""
    if text.isdigit():
        return int(text)
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise ReplayError(
            f"{text!r} is neither epoch milliseconds nor an ISO time (2026-12-01T00:00:00Z)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return int(moment.timestamp() * 1000)


def iso(ms: int) -> str:
    """An epoch-millisecond time as ISO 8601 UTC."""
    return datetime.datetime.fromtimestamp(ms / 1000, datetime.UTC).isoformat(
        timespec="milliseconds"
    )


@dataclasses.dataclass(frozen=True)
class Request:
    """What to replay: `[from_ms, to_ms)` of `topic_names`, in chunks of `chunk_offsets`."""

    from_ms: int
    to_ms: int
    topic_names: tuple[str, ...] = topics.INPUTS
    chunk_offsets: int = replay.CHUNK_OFFSETS
    with_decisions: bool = False

    def __post_init__(self) -> None:
        if self.to_ms <= self.from_ms:
            raise ReplayError(f"--to {iso(self.to_ms)} is not after --from {iso(self.from_ms)}")
        unknown = set(self.topic_names) - set(topics.INPUTS)
        if unknown:
            raise ReplayError(
                f"not input topics: {', '.join(sorted(unknown))}; choose from {topics.INPUTS}"
            )

    def as_json(self) -> dict[str, Any]:
        """The request as the folder records it."""
        return {**dataclasses.asdict(self), "topic_names": list(self.topic_names)}


def claim(out: Path, request: Request) -> None:
    """Make `out` this request's folder: new, empty, or holding a replay of the same request
    (an interrupted run, which this one completes: its files are rewritten the same)."""
    out.mkdir(parents=True, exist_ok=True)
    marker = out / REQUEST_FILE
    if marker.exists():
        held = json.loads(marker.read_text())
        if held != request.as_json():
            raise ReplayError(
                f"{out} holds a replay of another request ({held}): choose an empty --out"
            )
    elif any(out.iterdir()):
        raise ReplayError(f"{out} is not empty and holds no replay: choose an empty --out")
    else:
        marker.write_text(json.dumps(request.as_json(), indent=2) + "\n")


Ranges = dict[tuple[str, int], tuple[int, int]]


def offset_ranges(stack: config.StackSettings, request: Request) -> Ranges:
    """Each partition's `[start, end)` offsets for the range, from the broker's time index (as
    Flink's timestamp offsets initializer finds them)."""
    bootstrap_servers = stack.bootstrap_servers
    # The group is named, never joined: offsets are listed by time, nothing is committed.
    consumer = Consumer(
        {**config.kafka_client_config(stack), "group.id": f"{replay.JOB_NAME}-offsets"}
    )
    try:
        metadata = consumer.list_topics(timeout=10)
        missing = [t for t in request.topic_names if t not in metadata.topics]
        if missing:
            raise ReplayError(
                f"{bootstrap_servers} has no topic {', '.join(missing)}: check the settings' "
                "Kafka (stack.kafka_port) or leave the topic out with --topics"
            )
        partitions = [
            (topic, p)
            for topic in request.topic_names
            for p in sorted(metadata.topics[topic].partitions)
        ]
        _, highs = zip(
            *(
                consumer.get_watermark_offsets(TopicPartition(t, p), timeout=10)
                for t, p in partitions
            ),
            strict=True,
        )

        def at(ms: int) -> list[int]:
            found = consumer.offsets_for_times(
                [TopicPartition(t, p, ms) for t, p in partitions], timeout=10
            )
            return [
                high if tp.offset < 0 else tp.offset for tp, high in zip(found, highs, strict=True)
            ]

        ranges: Ranges = dict(
            zip(partitions, zip(at(request.from_ms), at(request.to_ms), strict=True), strict=True)
        )
        return ranges
    finally:
        consumer.close()


def _metric_total(rest_url: str, job_id: str) -> int | None:
    """The job's `replayRecords` counter summed over subtasks, or None before it exists."""

    def get(path: str) -> Any:
        with urllib.request.urlopen(f"{rest_url}{path}", timeout=2) as response:
            return json.load(response)

    total, found = 0, False
    for vertex in get(f"/jobs/{job_id}")["vertices"]:
        base = f"/jobs/{job_id}/vertices/{vertex['id']}/subtasks/metrics"
        names = [m["id"] for m in get(base) if m["id"].endswith(replay.PROGRESS_METRIC)]
        if names:
            found = True
            for metric in get(f"{base}?get={','.join(names)}&agg=sum"):
                total += int(float(metric["sum"]))
    return total if found else None


def _finish(result: Any, out: Path) -> None:
    """Wait for a job's end; a failed job as a `ReplayError`."""
    try:
        result.result()
    except Py4JJavaError as err:
        raise ReplayError(
            f"the replay job failed: {_root_cause(err)}; what it wrote stays in {out}: run the"
            " same command again to complete it"
        ) from None


def _decisions(settings: config.Settings, request: Request, out: Path) -> None:
    """Run device-control over the range, freeze disabled, its audit records into
    `out/decisions` (checkpoints off: a failure restarts it from the range's start)."""
    env = environment.create(settings, replay.RESTARTS, without=replay.DECISIONS_WITHOUT)
    connection = KafkaConnection(
        settings.stack.bootstrap_servers,
        f"{replay.JOB_NAME}-decisions",
        client_properties=tuple(config.kafka_client_properties(settings.job).items()),
    )
    job = dataclasses.replace(settings.job, freeze_enabled=False)
    schemas = SchemaAccess(settings.stack.registry_url)
    device_control.build(
        env,
        KafkaSources(connection, (request.from_ms, request.to_ms)),
        replay.DecisionsSink(out, schemas),
        schemas,
        device_control.policies_from(job),
    )
    _finish(env.execute_async(f"{replay.JOB_NAME}-decisions").get_job_execution_result(), out)


def _root_cause(err: Py4JJavaError) -> str:
    """The innermost Java exception's message (a Python error raised in the job is in it)."""
    cause = err.java_exception
    while cause.getCause() is not None:
        cause = cause.getCause()
    return str(cause.getMessage()).strip().splitlines()[-1]


def _progress(say: Callable[[str], None], done: int, expected: int, started: float) -> None:
    rate = done / max(time.monotonic() - started, 1e-9)
    share = f" ({100 * done / expected:.1f}%)" if expected else ""
    say(f"replay: {done:,} / {expected:,} records{share}, {rate:,.0f}/s")


def run(
    settings: config.Settings,
    request: Request,
    out: Path,
    say: Callable[[str], None] = print,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Replay `request` into `out` on a local MiniCluster; the manifest written at the end.
    Lines go to `say`, the progress line (records read / expected, each second) to `progress`."""
    progress = progress or say
    out = out.resolve()
    claim(out, request)
    ranges = offset_ranges(settings.stack, request)
    expected = sum(end - start for start, end in ranges.values())
    say(f"replay: {len(ranges)} partitions, up to {expected:,} records, into {out}")
    (port,) = free_ports(1)
    overlay = {**replay.FLINK_OVERLAY, "rest.bind-port": str(port), "rest.port": str(port)}
    env = environment.create(settings, overlay)
    source = KafkaRange(
        settings.stack.bootstrap_servers,
        request.topic_names,
        request.from_ms,
        request.to_ms,
        tuple(config.kafka_client_properties(settings.job).items()),
    )
    replay.build(
        env,
        source,
        replay.DatasetSink(out, request.chunk_offsets),
        SchemaAccess(settings.stack.registry_url),
    )
    started = time.monotonic()
    client = env.execute_async(replay.JOB_NAME)
    job_id = str(client.get_job_id())
    result = client.get_job_execution_result()
    while not result.done():
        time.sleep(PROGRESS_EVERY_S)
        try:
            done = _metric_total(f"http://127.0.0.1:{port}", job_id)
        except OSError:
            done = None  # the job is starting or ending: no line this time
        if done is not None:
            _progress(progress, done, expected, started)
    _finish(result, out)
    took = time.monotonic() - started
    if request.with_decisions:
        say("replay: the device-control logic over the range (freeze off) ...")
        _decisions(settings, request, out)
    for leftover in out.rglob(".*.tmp"):  # a killed run's half-written files
        leftover.unlink()
    manifest = build_manifest(out, request, ranges, settings.stack.registry_url, took)
    text = json.dumps(manifest, indent=2) + "\n"
    dataset.write_atomically(out / MANIFEST_FILE, lambda to: to.write_text(text))
    say(
        f"replay: {manifest['records_read']:,} records in {took:.1f}s "
        f"({manifest['records_read'] / max(took, 1e-9):,.0f}/s), "
        f"{manifest['rejects']:,} rejected; manifest {out / MANIFEST_FILE}"
    )
    return manifest


def _files(root: Path) -> Iterator[tuple[str, ds.Dataset]]:
    """Each table folder of the dataset that has files, as a pyarrow dataset."""
    for name in dataset.schemas():
        folder = root / name
        if folder.is_dir():
            yield name, ds.dataset(folder, format="parquet", ignore_prefixes=[".", "_"])


def _versions(registry_url: str, ids: Mapping[str, set[int]]) -> dict[str, list[dict[str, Any]]]:
    """Each topic's schema ids with the registry's subject and version for each, where it
    tells (an id it does not answer for is listed alone)."""
    client = Registry(
        RegistryConfig(registry_url, os.environ.get("GRIDSTREAM_REGISTRY_USER_INFO"))
    ).client
    found: dict[str, list[dict[str, Any]]] = {}
    for topic, topic_ids in sorted(ids.items()):
        found[topic] = []
        for schema_id in sorted(topic_ids):
            entry: dict[str, Any] = {"schema_id": schema_id}
            try:
                registered = client.lookup_schema(subject_for(topic), client.get_schema(schema_id))
                entry.update(subject=registered.subject, version=registered.version)
            except SchemaRegistryError:
                entry["registry"] = "does not tell this id's subject and version"
            found[topic].append(entry)
    return found


def build_manifest(
    root: Path, request: Request, ranges: Ranges, registry_url: str, took_s: float
) -> dict[str, Any]:
    """The manifest (`docs/dataset.md`), counted from the dataset's files."""
    rows: dict[str, int] = dict.fromkeys(dataset.schemas(), 0)
    read: dict[tuple[str, int], list[int]] = {}  # (count, first, last)
    ids: dict[str, set[int]] = {}
    for name, files in _files(root):
        table = files.to_table(columns=["topic", "partition", "offset", "schema_id"])
        rows[name] = table.num_rows
        for group in (
            table.group_by(["topic", "partition"])
            .aggregate([("offset", "count"), ("offset", "min"), ("offset", "max")])
            .to_pylist()
        ):
            key = (group["topic"], group["partition"])
            held = read.setdefault(key, [0, group["offset_min"], group["offset_max"]])
            held[0] += group["offset_count"]
            held[1] = min(held[1], group["offset_min"])
            held[2] = max(held[2], group["offset_max"])
        for topic in pc.unique(table["topic"]).to_pylist():
            chosen = table.filter(pc.equal(table["topic"], topic))["schema_id"]
            ids.setdefault(topic, set()).update(
                i for i in pc.unique(chosen).to_pylist() if i is not None
            )
    partitions = []
    for (topic, partition), (start, end) in sorted(ranges.items()):
        count, first, last = read.get((topic, partition), [0, None, None])
        partitions.append(
            {
                "topic": topic, "partition": partition, "start_offset": start, "end_offset": end,
                "records_read": count, "first_offset_read": first, "last_offset_read": last,
            }
        )  # fmt: skip
    decisions = root / dataset.decisions_table().name
    if request.with_decisions:
        rows["decisions"] = (
            ds.dataset(decisions, format="parquet").count_rows() if decisions.is_dir() else 0
        )
    return {
        "from_ms": request.from_ms,
        "to_ms": request.to_ms,
        "from": iso(request.from_ms),
        "to": iso(request.to_ms),
        "topics": list(request.topic_names),
        "partitions": partitions,
        "schemas": _versions(registry_url, ids),
        "rows": {name: n for name, n in rows.items() if name != dataset.REJECTS_TABLE},
        "rejects": rows.get(dataset.REJECTS_TABLE, 0),
        "records_read": sum(rows.get(name, 0) for name in dataset.schemas()),
        "chunk_offsets": request.chunk_offsets,
        "job": {"name": replay.JOB_NAME, "version": replay.JOB_VERSION},
        "created": iso(int(time.time() * 1000)),
        "seconds": round(took_s, 3),
    }


def add_commands(sub: Any) -> None:
    """Add `replay` to the CLI's sub-commands."""
    command = sub.add_parser(
        "replay",
        help="replay [--from, --to) of the input topics into a Parquet dataset, on a local "
        "MiniCluster in this process (the settings' Kafka and registry)",
    )
    command.add_argument("--from", dest="from_", required=True, help="ISO time or epoch ms")
    command.add_argument("--to", required=True, help="ISO time or epoch ms (exclusive)")
    command.add_argument("--topics", nargs="+", default=list(topics.INPUTS), metavar="TOPIC")
    command.add_argument("--out", type=Path, required=True, help="the dataset's folder")
    command.add_argument(
        "--chunk-offsets", type=int, default=replay.CHUNK_OFFSETS,
        help="offsets of one partition per file (the writer's memory bound)",
    )  # fmt: skip
    command.add_argument(
        "--with-decisions", action="store_true",
        help="also run the device-control logic over the range in event time (safety freeze "
        "off) and write its audit records to DIR/decisions",
    )  # fmt: skip
    command.set_defaults(run=_replay)


def _replay(args: Any, settings: config.Settings) -> int:
    request = Request(
        parse_time(args.from_), parse_time(args.to), tuple(args.topics), args.chunk_offsets,
        args.with_decisions,
    )  # fmt: skip
    if sys.stdout.isatty():  # one line, rewritten in place
        run(settings, request, args.out, lambda line: print(f"\r\033[K{line}", flush=True),
            lambda line: print(f"\r\033[K{line}", end="", flush=True))  # fmt: skip
    else:
        run(settings, request, args.out, lambda line: print(line, flush=True))
    return 0
