"""Thin Flink adapters: read state, call the pure step, write state, move timers, yield rows."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from pyflink.common import Row, Types
from pyflink.datastream import KeyedProcessFunction, RuntimeContext
from pyflink.datastream.state import ValueStateDescriptor

from functions import telemetry_watch as watch
from state import telemetry_watch as codec


def _output(emit: watch.Emit) -> Row:
    value = json.dumps(emit.payload, separators=(",", ":"), sort_keys=True).encode()
    return Row(emit.topic, emit.key.encode(), value, emit.correlation_id)


class TelemetryWatch(KeyedProcessFunction):  # type: ignore[misc]
    """Keyed by device id: `functions.telemetry_watch` over ValueState and one event-time timer."""

    def __init__(self, silence_ms: int, retention_ms: int) -> None:
        self.silence_ms = silence_ms
        self.retention_ms = retention_ms

    def open(self, runtime_context: RuntimeContext) -> None:
        # The bytes are the suite's own versioned codec. PICKLED_BYTE_ARRAY only wraps that `bytes`
        # object: thread mode converts PRIMITIVE_ARRAY(BYTE) state byte by byte and fails on None.
        self.state = runtime_context.get_state(
            ValueStateDescriptor("telemetry-watch", Types.PICKLED_BYTE_ARRAY())
        )
        # The one event-time timer this key holds, so a step can move it.
        self.timer = runtime_context.get_state(ValueStateDescriptor("timer", Types.LONG()))

    def _load(self) -> codec.WatchState | None:
        raw = self.state.value()
        return None if raw is None else codec.decode(raw)

    def _apply(self, step: watch.Step, ctx: Any) -> Iterator[Row]:
        if step.state is None:
            self.state.clear()
        else:
            self.state.update(codec.encode(step.state))
        held = self.timer.value()
        if held != step.timer_ms:
            if held is not None:
                ctx.timer_service().delete_event_time_timer(held)
            if step.timer_ms is None:
                self.timer.clear()
            else:
                ctx.timer_service().register_event_time_timer(step.timer_ms)
                self.timer.update(step.timer_ms)
        for emit in step.emits:
            yield _output(emit)

    def process_element(self, value: Row, ctx: KeyedProcessFunction.Context) -> Iterator[Row]:
        reading = watch.Reading(ctx.get_current_key(), value[3], value[0], value[6])
        yield from self._apply(watch.on_reading(self._load(), reading, self.silence_ms), ctx)

    def on_timer(self, timestamp: int, ctx: KeyedProcessFunction.OnTimerContext) -> Iterator[Row]:
        key = ctx.get_current_key()
        self.timer.clear()  # it has just fired
        step = watch.on_timer(self._load(), key, timestamp, self.silence_ms, self.retention_ms)
        yield from self._apply(step, ctx)
