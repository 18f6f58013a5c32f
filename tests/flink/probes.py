"""Functions the `flink` tests run on the MiniCluster.

They live outside the test modules so the workers can unpickle them by an importable name
(`tests.flink.probes`; pytest imports test modules under their bare file names).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from pyflink.datastream import KeyedProcessFunction, ProcessFunction

from functions.device import Telemetry
from schemas.models import Cause

T0 = 1_790_000_000_000
CAUSE = Cause(source_topic="test", source_partition=0, source_offset=0)


class Slowly(ProcessFunction):  # type: ignore[misc]
    """`(reading, time)` pairs, as the decoder emits them, from (device, time) pairs, letting
    wall-clock time pass between them so periodic watermarks are emitted."""

    def process_element(self, value: Any, ctx: Any) -> Iterator[Any]:
        time.sleep(0.001)
        device_id, ts_ms = value
        reading = Telemetry(device_id, ts_ms, 1.0, True, True, False, f"{device_id}@{ts_ms}", CAUSE)
        yield reading, ts_ms


class Probe(KeyedProcessFunction):  # type: ignore[misc]
    """Each event's element timestamp and the watermark it was seen under."""

    def process_element(self, value: Any, ctx: Any) -> Iterator[Any]:
        yield value.ts_ms, ctx.timestamp(), ctx.timer_service().current_watermark()
