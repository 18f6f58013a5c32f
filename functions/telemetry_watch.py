"""Per-device telemetry watch: count readings, alert once when a device goes silent.

Pure: `(state, event, now) -> Step`; the Flink adapter in `functions.operators` only moves
state and timers. This is the foundation's keyed stage; the device-control logic grows from it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from state.telemetry_watch import WatchState

ALERT_TOPIC = "grid.alerts"
AUDIT_TOPIC = "grid.audit"


@dataclasses.dataclass(frozen=True)
class Emit:
    """One output record: where it goes, its key, its JSON-able payload, its cause."""

    topic: str
    key: str
    payload: dict[str, Any]
    correlation_id: str


@dataclasses.dataclass(frozen=True)
class Step:
    """A transition's result: new state (None = clear), outputs, the event-time timer to hold."""

    state: WatchState | None
    emits: tuple[Emit, ...] = ()
    timer_ms: int | None = None


@dataclasses.dataclass(frozen=True)
class Reading:
    """A telemetry record as the watch sees it."""

    device_id: str
    ts_ms: int
    source: str
    correlation_id: str


def on_reading(state: WatchState | None, reading: Reading, silence_ms: int) -> Step:
    """Count the reading, restore a lost device, and hold a timer for the next silence.

    Only a reading newer than the last one seen ends a loss episode: a late or replayed reading
    from before the silence proves nothing about the device now.
    """
    previous = state or WatchState(count=0, last_seen_ms=reading.ts_ms, lost=False)
    last_seen = max(previous.last_seen_ms, reading.ts_ms)
    still_lost = previous.lost and reading.ts_ms <= previous.last_seen_ms
    new = WatchState(count=previous.count + 1, last_seen_ms=last_seen, lost=still_lost)
    emits = [
        Emit(
            AUDIT_TOPIC,
            reading.device_id,
            {
                "device_id": reading.device_id,
                "seq": new.count,
                "ts_ms": reading.ts_ms,
                "source": reading.source,
                "correlation_id": reading.correlation_id,
            },
            reading.correlation_id,
        )
    ]
    if previous.lost and not still_lost:
        emits.append(
            _alert("TELEMETRY_RESTORED", reading.device_id, reading.ts_ms, reading.correlation_id)
        )
    return Step(new, tuple(emits), last_seen + silence_ms)


def on_timer(
    state: WatchState | None, device_id: str, timer_ms: int, silence_ms: int, retention_ms: int
) -> Step:
    """Alert once at the silence deadline; forget the device after `retention_ms` more silence."""
    if state is None:
        return Step(None)
    deadline = state.last_seen_ms + silence_ms
    if timer_ms < deadline:
        return Step(state, timer_ms=deadline)
    if state.lost:
        return (
            Step(None)
            if timer_ms >= deadline + retention_ms
            else Step(state, timer_ms=deadline + retention_ms)
        )
    lost = dataclasses.replace(state, lost=True)
    alert = _alert(
        "TELEMETRY_LOSS", device_id, timer_ms, f"{device_id}-silent-{state.last_seen_ms}"
    )
    return Step(lost, (alert,), deadline + retention_ms)


def _alert(kind: str, device_id: str, ts_ms: int, correlation_id: str) -> Emit:
    return Emit(
        ALERT_TOPIC,
        device_id,
        {"alert": kind, "device_id": device_id, "ts_ms": ts_ms, "correlation_id": correlation_id},
        correlation_id,
    )
