"""The telemetry watch's per-device state and its versioned byte codec."""

from __future__ import annotations

import dataclasses
import struct

_V1 = struct.Struct("<BIq?")
VERSION = 1


class StateCodecError(ValueError):
    """Stored state bytes this version cannot read."""


@dataclasses.dataclass(frozen=True)
class WatchState:
    """Readings counted, newest event time seen, whether a loss alert is out."""

    count: int
    last_seen_ms: int
    lost: bool


def encode(state: WatchState) -> bytes:
    """Version byte, then the fields little-endian (14 bytes)."""
    return _V1.pack(VERSION, min(state.count, 0xFFFFFFFF), state.last_seen_ms, state.lost)


def decode(data: bytes) -> WatchState:
    """Read bytes written by `encode` of this or an earlier version."""
    if not data or data[0] != VERSION:
        raise StateCodecError(f"telemetry watch state: unknown version byte {data[:1]!r}")
    if len(data) != _V1.size:
        raise StateCodecError(f"telemetry watch state v1: {len(data)} bytes, expected {_V1.size}")
    _, count, last_seen_ms, lost = _V1.unpack(data)
    return WatchState(count, last_seen_ms, lost)
