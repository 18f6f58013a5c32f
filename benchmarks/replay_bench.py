"""Replay throughput: `gridstream replay` (Flink) against a plain Python loop, in one run.

Starts a private Kafka and registry in a temporary folder, loads `make bench`'s fleet workload
(`fleet.py`: registry, SCADA and IoT readings, re-sent readings, junk, weather, a DR event), then
writes the same Parquet dataset twice: with the replay job on a local MiniCluster, and with a
plain loop (confluent-kafka consumer over the same offset ranges, the same `jobs.dataset`
decoding (fastavro, the models' validation) and pyarrow writer). The job is also run over an
empty range, to tell its fixed cost per run (MiniCluster, Python workers; the JVM is started
before, by a first empty run) from its rate.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import fleet  # this script's folder: the benchmark's own modules
from bench import cpu_seconds, private_settings, say
from confluent_kafka import Consumer, TopicPartition

from gridstream import config, replay
from gridstream.stack import LocalStack
from jobs import dataset
from jobs.records import SchemaAccess
from jobs.replay import CHUNK_OFFSETS
from schemas import catalog
from schemas.registry import Registry, RegistryConfig

ROOT = Path(__file__).resolve().parents[1]


def start(settings: config.Settings) -> LocalStack:
    """Kafka and the registry only (the replay runs on a MiniCluster here), topics, schemas."""
    stack = LocalStack(settings, say=lambda line: None)
    stack.kafka.start()
    stack.registry.start()
    stack.create_topics()
    Registry(RegistryConfig.from_settings(settings)).register(catalog.default())
    return stack


def plain(settings: config.Settings, ranges: replay.Ranges, out: Path) -> int:
    """The dataset written by one Python process: consume each partition's range, place each
    record, write the chunks; the records read."""
    consumer = Consumer(
        {"bootstrap.servers": settings.stack.bootstrap_servers, "group.id": "replay-bench",
         "isolation.level": "read_committed", "enable.auto.commit": False}
    )  # fmt: skip
    wanted = {tp: end for tp, (begin, end) in ranges.items() if end > begin}
    consumer.assign([TopicPartition(t, p, ranges[(t, p)][0]) for t, p in wanted])
    flattener = dataset.Flattener(SchemaAccess(settings.stack.registry_url).source())
    writer = dataset.ChunkWriter(out, CHUNK_OFFSETS, dataset.schemas())
    read = 0
    try:
        while wanted:
            for message in consumer.consume(10_000, timeout=1.0):
                topic, partition, offset = message.topic(), message.partition(), message.offset()
                end = wanted.get((topic, partition))
                if end is None or offset >= end:
                    continue
                record = dataset.KafkaRecord(
                    topic, partition, offset, message.timestamp()[1], message.key(),
                    message.value(),
                )  # fmt: skip
                writer.add(flattener.place(record, int(time.time() * 1000)))
                read += 1
                if offset + 1 >= end:
                    del wanted[(topic, partition)]
        writer.finish()
    finally:
        consumer.close()
    return read


def timed(run: Any) -> tuple[Any, float, float]:
    """`run()`'s result, its wall seconds and the CPU seconds of this process tree meanwhile."""
    cpu, wall = cpu_seconds(os.getpid()), time.monotonic()
    result = run()
    return result, time.monotonic() - wall, cpu_seconds(os.getpid()) - cpu


def main() -> None:
    """Load the workload, time both ways, print and write the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=100_000)
    parser.add_argument("--span", type=int, default=60, help="seconds of readings")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gridstream-replay-bench-") as home:
        settings = private_settings(Path(home))
        say(f"starting Kafka and the registry in {home}")
        stack = start(settings)
        try:
            encode = fleet.Encoder(Registry(RegistryConfig.from_settings(settings)).schemas())
            workload = fleet.generate(fleet.Shape(args.devices, args.span), encode, say)
            took = fleet.load(settings.stack.bootstrap_servers, workload.records, say)
            say(f"loaded {len(workload.records):,} records in {took:.1f} s")
            first = min(r.ts_ms for r in workload.records)
            last = max(r.ts_ms for r in workload.records)
            request = replay.Request(first, last + 1)
            ranges = replay.offset_ranges(settings.stack, request)
            quiet = {"say": lambda line: None}
            empty = replay.Request(last + 10_000, last + 20_000)
            say("replay job over an empty range, twice: the JVM's start, then the job's own")
            replay.run(settings, empty, Path(home) / "warm-up", **quiet)
            _, empty_s, empty_cpu = timed(
                lambda: replay.run(settings, empty, Path(home) / "empty", **quiet)
            )
            say("replay job over the workload")
            manifest, job_s, job_cpu = timed(
                lambda: replay.run(settings, request, Path(home) / "job", **quiet)
            )
            say("plain Python over the same offsets")
            read, plain_s, plain_cpu = timed(lambda: plain(settings, ranges, Path(home) / "plain"))
        finally:
            stack.registry.stop()
            stack.kafka.stop()
    records = manifest["records_read"]
    assert read == records, f"plain read {read:,}, the job {records:,}"
    figures = {
        "records": records,
        "rows": manifest["rows"],
        "rejects": manifest["rejects"],
        "job_s": round(job_s, 2),
        "job_cpu_s": round(job_cpu, 2),
        "job_empty_s": round(empty_s, 2),
        "job_empty_cpu_s": round(empty_cpu, 2),
        "job_records_per_s": round(records / job_s),
        "job_marginal_records_per_s": round(records / max(job_s - empty_s, 1e-9)),
        "plain_s": round(plain_s, 2),
        "plain_cpu_s": round(plain_cpu, 2),
        "plain_records_per_s": round(records / plain_s),
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
        "cpus": os.cpu_count(),
        "devices": args.devices,
        "span_s": args.span,
    }
    ratio = figures["job_records_per_s"] / figures["plain_records_per_s"]
    marginal = figures["job_marginal_records_per_s"] / figures["plain_records_per_s"]
    lines = [
        "| way | records | seconds | records/s | CPU-s | vs plain |",
        "|---|---|---|---|---|---|",
        f"| replay job (MiniCluster, its start-up included) | {records:,} | {job_s:.1f} | "
        f"{figures['job_records_per_s']:,} | {job_cpu:.1f} | {ratio:.2f}x |",
        f"| replay job, start-up subtracted ({empty_s:.1f} s empty run) | {records:,} | "
        f"{job_s - empty_s:.1f} | {figures['job_marginal_records_per_s']:,} | "
        f"{job_cpu - empty_cpu:.1f} | {marginal:.2f}x |",
        f"| plain Python (confluent-kafka, same decoding, pyarrow) | {records:,} | "
        f"{plain_s:.1f} | {figures['plain_records_per_s']:,} | {plain_cpu:.1f} | 1.00x |",
    ]
    print("\n".join(lines))
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"replay-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps({**figures, "table": lines}, indent=2) + "\n")
    say(f"written to {path}")


if __name__ == "__main__":
    main()
