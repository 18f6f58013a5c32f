"""Shared test vocabulary: time constants and event builders."""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING

from functions.telemetry_watch import Reading
from gridstream import topics

if TYPE_CHECKING:
    from pyflink.common import Row

SECOND_MS = 1_000
MINUTE_MS = 60 * SECOND_MS
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS

DEVICE = "feeder-7/meter-42"

_offsets = itertools.count()


def reading(
    device_id: str = DEVICE,
    ts_ms: int = 0,
    source: str = topics.SCADA_TELEMETRY,
    correlation_id: str | None = None,
) -> Reading:
    """A telemetry reading; the correlation id defaults to one naming the device and time."""
    return Reading(device_id, ts_ms, source, correlation_id or f"{device_id}@{ts_ms}")


def input_row(
    device_id: str = DEVICE,
    ts_ms: int = 0,
    *,
    value: bytes = b"{}",
    topic: str = topics.SCADA_TELEMETRY,
    partition: int = 0,
    offset: int | None = None,
    correlation_id: str | None = None,
) -> Row:
    """An `INPUT_RECORD` keyed by `device_id`; offsets count up unless given."""
    from jobs.io import input_row as row  # pure tests need not load pyflink

    offset = next(_offsets) if offset is None else offset
    return row(topic, partition, offset, ts_ms, device_id.encode(), value, correlation_id)
