"""A firmware version's rollout tracker state (`functions.anomaly.track_rollout`) and its
versioned codec: the readings scored and found anomalous per time bucket."""

from __future__ import annotations

import dataclasses
import struct

VERSION = 1
_HEAD = struct.Struct("<BqBB")  # version, newest bucket's start, alerting, buckets


class RolloutStateError(ValueError):
    """Bytes that are not a rollout state this code can read."""


@dataclasses.dataclass(frozen=True)
class RolloutState:
    """One firmware version's recent readings and anomalies, per bucket (newest last)."""

    bucket_start_ms: int
    scored: tuple[int, ...]
    anomalous: tuple[int, ...]
    alerting: bool = False

    @property
    def rate(self) -> float:
        """The anomaly rate over the window."""
        total = sum(self.scored)
        return sum(self.anomalous) / total if total else 0.0


def encode(state: RolloutState) -> bytes:
    """The state as version-1 bytes."""
    n = len(state.scored)
    head = _HEAD.pack(VERSION, state.bucket_start_ms, int(state.alerting), n)
    return head + struct.pack(f"<{2 * n}I", *state.scored, *state.anomalous)


def decode(data: bytes) -> RolloutState:
    """Read bytes written by `encode`."""
    try:
        version, start, alerting, n = _HEAD.unpack_from(data)
        if version != VERSION:
            raise RolloutStateError(f"rollout state: unknown version {version}")
        counts = struct.unpack_from(f"<{2 * n}I", data, _HEAD.size)
        if len(data) != _HEAD.size + 8 * n:
            raise RolloutStateError(f"rollout state: {len(data)} bytes for {n} buckets")
    except struct.error as err:
        raise RolloutStateError(f"rollout state is corrupt: {err}") from err
    return RolloutState(start, counts[:n], counts[n:], bool(alerting))
