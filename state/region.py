"""State of the region, budget and pipeline stages, and its versioned codec.

These stages see few records (weather, registry changes, DR events, command requests), so the
codec is a version byte plus compact JSON: readable in a savepoint dump, and a new field is a
new version with a default. The per-device state, which is hot and numerous, has the compact
binary codec of `state.device`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

from functions.budget import Window
from functions.device import CommandRequest
from functions.interlocks import PipelineFacts
from functions.pipeline import Heartbeat, PipelineState
from functions.region import RegionEvent, RosterEntry
from functions.wetbulb import RegionWeather
from schemas.models import Action, Cause, DeviceClass

VERSION = 1
T = TypeVar("T")


class RegionStateError(ValueError):
    """State bytes this version cannot read."""


def _pack(fields: list[Any]) -> bytes:
    return bytes([VERSION]) + json.dumps(fields, separators=(",", ":")).encode()


def _unpack(data: bytes, build: Callable[[list[Any]], T]) -> T:
    if not data or data[0] != VERSION:
        raise RegionStateError(f"region state: unknown version byte {data[:1]!r}")
    try:
        return build(json.loads(data[1:]))
    except (ValueError, TypeError, KeyError, IndexError) as err:
        raise RegionStateError(f"region state v{VERSION} is corrupt: {err}") from err


def _cause(c: Cause) -> list[Any]:
    return [c.source_topic, c.source_partition, c.source_offset, c.event_id]


def _read_cause(f: list[Any]) -> Cause:
    return Cause(source_topic=f[0], source_partition=f[1], source_offset=f[2], event_id=f[3])


def encode_weather(w: RegionWeather) -> bytes:
    """A region's wet-bulb memory as bytes."""
    return _pack([w.suspended, w.observed_ts_ms, w.wet_bulb_c, w.below_since_ms])


def decode_weather(data: bytes) -> RegionWeather:
    """Read `encode_weather`'s bytes."""
    return _unpack(data, lambda f: RegionWeather(bool(f[0]), int(f[1]), float(f[2]), f[3]))


def encode_roster_entry(e: RosterEntry) -> bytes:
    """One registered device of the roster as bytes."""
    return _pack([e.device_class.value, list(e.programs)])


def decode_roster_entry(data: bytes) -> RosterEntry:
    """Read `encode_roster_entry`'s bytes."""
    return _unpack(data, lambda f: RosterEntry(DeviceClass(f[0]), tuple(f[1])))


def encode_event(e: RegionEvent) -> bytes:
    """A DR event kept by a region as bytes."""
    return _pack(
        [
            e.event_id, e.program_id, e.action.value, e.start_ts_ms, e.end_ts_ms, e.priority,
            e.cancelled, e.correlation_id, _cause(e.cause), e.setpoint_offset_c, e.curtailment_pct,
        ]
    )  # fmt: skip


def decode_event(data: bytes) -> RegionEvent:
    """Read `encode_event`'s bytes."""
    return _unpack(
        data,
        lambda f: RegionEvent(
            f[0],
            f[1],
            Action(f[2]),
            f[3],
            f[4],
            f[5],
            bool(f[6]),
            f[7],
            _read_cause(f[8]),
            f[9],
            f[10],
        ),
    )


def encode_request(r: CommandRequest) -> bytes:
    """A command request waiting for budget as bytes."""
    return _pack(
        [
            r.command_id, r.device_id, r.region_id, r.action.value, r.priority, r.requested_ts_ms,
            r.correlation_id, _cause(r.cause), r.setpoint_offset_c, r.curtailment_pct,
        ]
    )  # fmt: skip


def decode_request(data: bytes) -> CommandRequest:
    """Read `encode_request`'s bytes."""
    return _unpack(
        data,
        lambda f: CommandRequest(
            f[0], f[1], f[2], Action(f[3]), f[4], f[5], f[6], _read_cause(f[7]), f[8], f[9]
        ),
    )


def encode_window(w: Window) -> bytes:
    """A region's budget window as bytes."""
    return _pack([w.start_ms, w.used])


def decode_window(data: bytes) -> Window:
    """Read `encode_window`'s bytes."""
    return _unpack(data, lambda f: Window(int(f[0]), int(f[1])))


def encode_pipeline(p: PipelineState) -> bytes:
    """The pipeline watch's state as bytes."""
    beats = [[b.subtask, b.proc_ms, b.newest_event_ms] for b in p.beats]
    return _pack([p.facts.frozen, p.facts.source_silent, beats])


def decode_pipeline(data: bytes) -> PipelineState:
    """Read `encode_pipeline`'s bytes."""
    return _unpack(
        data,
        lambda f: PipelineState(
            PipelineFacts(bool(f[0]), bool(f[1])), tuple(Heartbeat(*b) for b in f[2])
        ),
    )
