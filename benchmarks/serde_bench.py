"""Decode + validate cost per record, for SCADA and IoT telemetry (a micro-benchmark, not a test).

Prints microseconds per record for the serde alone (wire header, cached writer schema, fastavro
resolution into the newest reader), Pydantic alone (`model_validate` of the decoded dict) and
both together (`Deserializer.decode`), plus encoding a validated model. Schemas come from a static
id table, so no registry or network is measured. Target: <= 20 us/record together.

Run: `.venv/bin/python benchmarks/serde_bench.py [--records N]`
"""

from __future__ import annotations

import argparse
import functools
import sys
import timeit
from collections.abc import Callable
from typing import Any

from gridstream import topics
from schemas import catalog, models, serde
from schemas.examples import EXAMPLE_NOW_MS, encode_unvalidated, example, example_data
from schemas.models import TopicRecord

TARGET_US = 20.0


def per_record_us(call: Callable[[], Any], records: int) -> float:
    """Best of five runs of `records` calls, in microseconds per call."""
    return min(timeit.repeat(call, number=records, repeat=5)) / records * 1e6


def cases(table: serde.StaticSchemas) -> list[tuple[str, type[TopicRecord], bytes]]:
    """(label, model, wire bytes): SCADA, IoT as written today, IoT as a v1 producer wrote it."""
    iot = catalog.default().chain(topics.IOT_TELEMETRY)
    v1 = iot.versions[0]
    v1_data = example_data(models.IotTelemetry)
    return [
        (
            "SCADA v1",
            models.ScadaTelemetry,
            serde.serializer(models.ScadaTelemetry, table).encode(example(models.ScadaTelemetry)),
        ),
        (
            "IoT v2",
            models.IotTelemetry,
            serde.serializer(models.IotTelemetry, table).encode(example(models.IotTelemetry)),
        ),
        (
            "IoT v1->v2",
            models.IotTelemetry,
            encode_unvalidated(v1, table.schema_id(iot.subject, v1.text), v1_data),
        ),
    ]


def measure(
    model: type[TopicRecord], payload: bytes, table: serde.StaticSchemas, records: int
) -> tuple[float, float, float, float]:
    """(serde, pydantic, together, encode) in us/record for one case."""
    reader = serde.deserializer(model, table)
    writer = serde.serializer(model, table)
    _, decoded = reader.read(payload)
    record = reader.decode(payload, EXAMPLE_NOW_MS)
    return (
        per_record_us(functools.partial(reader.read, payload), records),
        per_record_us(functools.partial(models.validate, model, decoded, EXAMPLE_NOW_MS), records),
        per_record_us(functools.partial(reader.decode, payload, EXAMPLE_NOW_MS), records),
        per_record_us(functools.partial(writer.encode, record), records),
    )


def main(argv: list[str] | None = None) -> int:
    """Print the table; exit 1 when a case misses the target."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20_000, help="records per timed run")
    records = parser.parse_args(argv).records
    table = serde.StaticSchemas.from_catalog(catalog.default())
    print(f"us/record, best of 5 x {records} records, Python {sys.version.split()[0]}")
    print(f"{'record':<12}{'serde':>8}{'pydantic':>10}{'together':>10}{'encode':>8}")
    missed = 0
    for label, model, payload in cases(table):
        serde_us, pydantic_us, together_us, encode_us = measure(model, payload, table, records)
        missed += together_us > TARGET_US
        print(
            f"{label:<12}{serde_us:>8.2f}{pydantic_us:>10.2f}{together_us:>10.2f}{encode_us:>8.2f}"
        )
    print(f"target: together <= {TARGET_US:.0f} us/record: {'missed' if missed else 'met'}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
