"""The benchmark's peers of the device-control job, each run in a process of its own.

- `quix`: Quix Streams (exactly-once, its RocksDB state) keyed by device over the registry and
  telemetry topics, calling the job's own pure functions: the project's decoder,
  `jobs.records.events_of`, `functions.device.step` over the `state.device` codec, the project's
  encoder; outputs to one Kafka topic. It runs the device stage only: no region stage (the
  region is taken as NORMAL), no budget stage, no timers.
- `ceiling`: confluent-kafka consume -> decode (the project's decoder, validation included) ->
  encode -> produce, no state: what Python I/O alone allows.
- `floor`: `step` and the state codec in a plain loop over readings decoded beforehand.

Each prints one `RESULT {json}` line: records and readings (telemetry records) taken, the
seconds and CPU seconds (the whole process, librdkafka's threads included) from the first
record to the last one done.

    .venv/bin/python benchmarks/peers.py quix --bootstrap HOST:PORT --registry URL
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import uuid
from collections.abc import Iterator
from typing import Any

from confluent_kafka import Consumer, Producer

from functions import device
from functions.wetbulb import RegionMode
from gridstream import topics
from gridstream.scenario import produce, watermarks
from jobs.records import events_of
from schemas import models, serde
from schemas.registry import Registry, RegistryConfig
from state import device as codec

INPUTS = (topics.DEVICE_REGISTRY, topics.SCADA_TELEMETRY, topics.IOT_TELEMETRY)
READINGS = frozenset({topics.SCADA_TELEMETRY, topics.IOT_TELEMETRY})
OUTPUT = {"quix": "bench.quix.out", "ceiling": "bench.ceiling.out"}
RESULT = "RESULT "
STATE_KEY = b"device"  # bytes: Quix serializes other keys with `dumps`, here `bytes`


def now_ms() -> int:
    """The wall clock in epoch milliseconds."""
    return int(time.time() * 1000)


class Logic:
    """The job's per-record work outside Flink: decode, step over the state bytes, encode."""

    def __init__(self, schemas: serde.SchemaSource) -> None:
        self.decoders = {t: serde.deserializer(models.MODELS[t], schemas) for t in INPUTS}
        self.encoders = {m: serde.serializer(m, schemas) for m in models.MODELS.values()}
        self.policy = device.DevicePolicy()

    def decode(self, topic: str, raw: bytes) -> models.TopicRecord | None:
        """The validated record, or None for bytes the job would dead-letter."""
        try:
            return self.decoders[topic].decode(raw, now_ms())
        except serde.DecodeError:
            return None

    def events(self, topic: str, raw: bytes, partition: int, offset: int) -> list[Any]:
        """The device-stage events a record stands for (none when it cannot be decoded)."""
        record = self.decode(topic, raw)
        if record is None:
            return []
        cause = models.Cause(source_topic=topic, source_partition=partition, source_offset=offset)
        return list(events_of(record, cause))

    def step(self, raw: bytes | None, event: Any) -> tuple[bytes | None, tuple[Any, ...]]:
        """`functions.device.step` over the encoded state, decided as of the event's time (never
        before the device's newest reading), its region taken as NORMAL."""
        old = None if raw is None else codec.decode(raw)
        newest = old.last_seen_ms if old is not None and old.last_seen_ms else event.ts_ms
        ctx = device.Context(max(event.ts_ms, newest), RegionMode.NORMAL, policy=self.policy)
        result = device.step(old, event, ctx)
        return (None if result.state is None else codec.encode(result.state)), result.outputs

    def encode(self, outputs: tuple[Any, ...]) -> list[bytes]:
        """The outputs that are topic records, encoded (requests would go to a budget stage)."""
        return [self.encoders[type(o)].encode(o) for o in outputs if type(o) in self.encoders]


class Clock:
    """Counts records and takes the time and CPU at the first and the last."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.records = self.readings = 0
        self.start = self.cpu = 0.0

    def tick(self, topic: str) -> bool:
        """Count one record; True when it is the last one expected."""
        if not self.records:
            self.start, self.cpu = time.monotonic(), time.process_time()
        self.records += 1
        self.readings += topic in READINGS
        return self.records >= self.expected

    def result(self) -> dict[str, float]:
        """The figures up to now."""
        return {
            "records": self.records,
            "readings": self.readings,
            "seconds": time.monotonic() - self.start,
            "cpu_s": time.process_time() - self.cpu,
        }


def expected_records(servers: str) -> int:
    """How many records the input topics hold now."""
    consumer = Consumer({"bootstrap.servers": servers, "group.id": "bench-watermarks"})
    try:
        return sum(high - low for t in INPUTS for low, high in watermarks(consumer, t).values())
    finally:
        consumer.close()


def quix(servers: str, logic: Logic) -> dict[str, float]:
    """Quix Streams over the inputs until every record present at its start is done."""
    from quixstreams import Application, message_context
    from quixstreams.state.rocksdb import RocksDBOptions

    clock = Clock(expected_records(servers))
    with tempfile.TemporaryDirectory() as state_dir:
        app = Application(
            broker_address=servers, consumer_group=f"bench-quix-{uuid.uuid4().hex[:8]}",
            auto_offset_reset="earliest", processing_guarantee="exactly-once",
            state_dir=state_dir, loglevel="WARNING",
            rocksdb_options=RocksDBOptions(dumps=bytes, loads=bytes),  # the codec's own bytes
        )  # fmt: skip
        frames = [
            app.dataframe(app.topic(t, key_deserializer="bytes", value_deserializer="bytes"))
            for t in INPUTS
        ]
        out = app.topic(OUTPUT["quix"], key_serializer="bytes", value_serializer="bytes")

        def process(
            value: bytes, key: Any, timestamp: int, headers: Any, state: Any
        ) -> list[bytes]:
            context = message_context()
            if clock.tick(context.topic):
                app.stop()
            raw, outputs = state.get(STATE_KEY), []
            for event in logic.events(context.topic, value, context.partition, context.offset):
                raw, emitted = logic.step(raw, event)
                outputs += logic.encode(emitted)
            if raw is None:
                state.delete(STATE_KEY)
            else:
                state.set(STATE_KEY, raw)
            return outputs

        frame = frames[0].concat(frames[1]).concat(frames[2])
        frame.apply(process, stateful=True, metadata=True, expand=True).to_topic(out)
        app.run()
    return clock.result()


def _messages(consumer: Consumer, clock: Clock) -> Iterator[Any]:
    """Every record until `clock` has counted the expected number."""
    done = False
    while not done:
        for message in consumer.consume(1_000, timeout=1.0):
            if message.error():
                continue
            done = clock.tick(message.topic())
            yield message
            if done:
                return


def _consumer(servers: str) -> Consumer:
    consumer = Consumer(
        {"bootstrap.servers": servers, "group.id": f"bench-{uuid.uuid4().hex[:8]}",
         "auto.offset.reset": "earliest", "enable.auto.commit": False}
    )  # fmt: skip
    consumer.subscribe(list(INPUTS))
    return consumer


def ceiling(servers: str, logic: Logic) -> dict[str, float]:
    """Consume, decode, encode, produce: no state, no logic."""
    clock = Clock(expected_records(servers))
    consumer = _consumer(servers)
    producer = Producer({"bootstrap.servers": servers, "linger.ms": 20})
    for message in _messages(consumer, clock):
        record = logic.decode(message.topic(), message.value())
        if record is not None:
            value = logic.encoders[type(record)].encode(record)
            produce(producer, OUTPUT["ceiling"], key=message.key(), value=value)
    producer.flush(60)
    consumer.close()
    return clock.result()


def floor(servers: str, logic: Logic) -> dict[str, float]:
    """`step` and the state codec alone, over every record decoded beforehand."""
    loading = Clock(expected_records(servers))
    consumer = _consumer(servers)
    events = [
        (m.topic(), event)
        for m in _messages(consumer, loading)
        for event in logic.events(m.topic(), m.value(), m.partition(), m.offset())
    ]
    consumer.close()
    states: dict[str, bytes | None] = {}
    clock = Clock(len(events))
    for topic, event in events:
        clock.tick(topic)
        states[event.device_id], _ = logic.step(states.get(event.device_id), event)
    return clock.result()


PEERS = {"quix": quix, "ceiling": ceiling, "floor": floor}


def main() -> None:
    """Run one peer and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("peer", choices=sorted(PEERS))
    parser.add_argument("--bootstrap", required=True, help="Kafka bootstrap servers")
    parser.add_argument("--registry", required=True, help="schema registry URL")
    args = parser.parse_args()
    logic = Logic(Registry(RegistryConfig(args.registry)).schemas())
    print(RESULT + json.dumps(PEERS[args.peer](args.bootstrap, logic)), flush=True)


if __name__ == "__main__":
    main()
