"""Shared test vocabulary: time constants, record builders and encoded input rows."""

from __future__ import annotations

import functools
import itertools
import os
from typing import TYPE_CHECKING, Any

from schemas import catalog, models, serde
from schemas.examples import example_data

if TYPE_CHECKING:
    from pyflink.common import Row

SECOND_MS = 1_000
MINUTE_MS = 60 * SECOND_MS
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS

# `make hunt` runs every Hypothesis property with this many times its examples (1 in `make test`).
HUNT = int(os.environ.get("GRIDSTREAM_HUNT", "1"))


def examples(n: int) -> int:
    """A property's `max_examples`: `n`, times $GRIDSTREAM_HUNT for a deeper hunt."""
    return n * HUNT


_offsets = itertools.count()


@functools.cache
def catalog_schemas() -> serde.StaticSchemas:
    """The catalog's own schema numbering, as the jobs use it without a registry."""
    return serde.StaticSchemas.from_catalog(catalog.default())


def record(model: type[models.M], now_ms: int, **fields: Any) -> models.M:
    """A validated record: the schema example with `fields` over it."""
    return models.validate(model, example_data(model, **fields), now_ms)


def encoded(rec: models.TopicRecord) -> bytes:
    """`rec` in the Confluent wire format under the catalog numbering."""
    return serde.serializer(type(rec), catalog_schemas()).encode(rec)


def input_row(rec: models.TopicRecord, key: str, *, partition: int = 0) -> Row:
    """An `INPUT_RECORD` carrying `rec` encoded, with a fresh offset, stamped (its Kafka
    timestamp) with its event time where its topic has one, as `gridstream scenario` sends it."""
    from gridstream.scenario import EVENT_TIME_FIELDS
    from jobs.io import input_row as row  # pure tests need not load pyflink

    value = encoded(rec)
    corr = str(rec.correlation_id)
    field = EVENT_TIME_FIELDS.get(rec.TOPIC)
    ts = int(getattr(rec, field)) if field else 0
    return row(rec.TOPIC, partition, next(_offsets), ts, key.encode(), value, corr)
