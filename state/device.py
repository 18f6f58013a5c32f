"""Per-device state of the device-control stage, and its versioned compact codec.

Layout v2 (little-endian): a version byte, a flags byte, fixed numeric fields, then
length-prefixed UTF-8 strings for the variable parts. A typical enrolled IoT device is well
under the 256-byte budget (see `tests/unit/state/test_device_codec.py`). v1 (a savepoint of
job 0.4) is read too: it lacks the armed watch timer, which the next transition arms.
"""

from __future__ import annotations

import dataclasses
import math
import struct
from collections.abc import Sequence

from schemas.models import Action, DeviceClass, PriorityLevel

VERSION = 2
DEDUPE_WINDOW = 8  # recent reading times kept to spot duplicates (msg_id = device + time)

_CLASSES = tuple(DeviceClass)
_PRIORITIES = tuple(PriorityLevel)
_ACTIONS = tuple(Action)
_NONE = 255


class DeviceStateError(ValueError):
    """State bytes this version cannot read."""


@dataclasses.dataclass(frozen=True)
class DeviceInfo:
    """The registry (CIS) facts the decisions need."""

    device_class: DeviceClass
    priority: PriorityLevel
    region_id: str
    programs: tuple[str, ...]
    rated_power_kw: float


@dataclasses.dataclass(frozen=True)
class LastGood:
    """The newest reading with good quality."""

    ts_ms: int
    power_kw: float
    is_on: bool


@dataclasses.dataclass(frozen=True)
class Participation:
    """The device's part in one DR event.

    `attempted` once the start was decided (emitted, blocked or recommended): a blocked start
    is not retried on every timer, only when the device returns from silence.
    `curtailed` once its load-reducing command went out.
    """

    event_id: str
    action: Action
    start_ts_ms: int
    end_ts_ms: int
    priority: int
    curtailed: bool = False
    opted_out: bool = False
    attempted: bool = False
    setpoint_offset_c: float | None = None
    curtailment_pct: float | None = None


@dataclasses.dataclass(frozen=True)
class PendingRecommendation:
    """A high-impact action waiting for an operator until `expires_ts_ms`."""

    recommendation_id: str
    action: Action
    expires_ts_ms: int


@dataclasses.dataclass(frozen=True)
class PowerStats:
    """Welford's running mean and variance of power, for the anomaly model."""

    count: int = 0
    mean: float = 0.0
    m2: float = 0.0

    def add(self, x: float) -> PowerStats:
        """The statistics with one more sample."""
        count = self.count + 1
        delta = x - self.mean
        mean = self.mean + delta / count
        return PowerStats(count, mean, self.m2 + delta * (x - mean))

    @property
    def stddev(self) -> float:
        return math.sqrt(self.m2 / (self.count - 1)) if self.count > 1 else 0.0


@dataclasses.dataclass(frozen=True)
class DeviceState:
    """Everything the device stage keeps for one device."""

    info: DeviceInfo | None = None
    last_seen_ms: int | None = None
    last_good: LastGood | None = None
    stale: bool = False
    recent_ts_ms: tuple[int, ...] = ()
    participation: Participation | None = None
    pending: PendingRecommendation | None = None
    stats: PowerStats = PowerStats()
    watch_ms: int | None = None  # the armed silence-or-retention timer (`functions.device`)


_FIXED_V1 = struct.Struct("<BBBBdqqdqqqIIddff")  # ff: the event's sizes, NaN for none
_FIXED = struct.Struct(_FIXED_V1.format + "q")  # v2: + the armed watch timer
_FLAG_INFO, _FLAG_SEEN, _FLAG_GOOD, _FLAG_STALE, _FLAG_PART, _FLAG_PENDING, _FLAG_WATCH = (
    1 << i for i in range(7)
)
_PART_CURTAILED, _PART_OPTED_OUT, _GOOD_ON, _PART_ATTEMPTED = 1, 2, 4, 8


def _size(value: float | None) -> float:
    return math.nan if value is None else value


def _unsize(value: float) -> float | None:
    # float32 keeps sizes like 2.5 °C or 30 % exactly enough; rounded to tame its noise
    return None if math.isnan(value) else round(value, 3)


def _strings(values: Sequence[str]) -> bytes:
    out = bytearray([len(values)])
    for value in values:
        raw = value.encode()
        out += struct.pack("<H", len(raw)) + raw
    return bytes(out)


def _read_strings(data: memoryview, at: int) -> tuple[tuple[str, ...], int]:
    count, at = data[at], at + 1
    values = []
    for _ in range(count):
        (length,) = struct.unpack_from("<H", data, at)
        values.append(bytes(data[at + 2 : at + 2 + length]).decode())
        at += 2 + length
    return tuple(values), at


def encode(state: DeviceState) -> bytes:
    """The state as version-2 bytes."""
    info, good, part, pending = state.info, state.last_good, state.participation, state.pending
    flags = (
        (_FLAG_INFO if info else 0)
        | (_FLAG_SEEN if state.last_seen_ms is not None else 0)
        | (_FLAG_GOOD if good else 0)
        | (_FLAG_STALE if state.stale else 0)
        | (_FLAG_PART if part else 0)
        | (_FLAG_PENDING if pending else 0)
        | (_FLAG_WATCH if state.watch_ms is not None else 0)
    )
    bits = (
        (_PART_CURTAILED if part and part.curtailed else 0)
        | (_PART_OPTED_OUT if part and part.opted_out else 0)
        | (_GOOD_ON if good and good.is_on else 0)
        | (_PART_ATTEMPTED if part and part.attempted else 0)
    )
    fixed = _FIXED.pack(
        VERSION,
        flags,
        _CLASSES.index(info.device_class) if info else _NONE,
        _PRIORITIES.index(info.priority) if info else _NONE,
        info.rated_power_kw if info else 0.0,
        state.last_seen_ms or 0,
        good.ts_ms if good else 0,
        good.power_kw if good else 0.0,
        part.start_ts_ms if part else 0,
        part.end_ts_ms if part else 0,
        pending.expires_ts_ms if pending else 0,
        part.priority if part else 0,
        state.stats.count,
        state.stats.mean,
        state.stats.m2,
        _size(part.setpoint_offset_c if part else None),
        _size(part.curtailment_pct if part else None),
        state.watch_ms or 0,
    )
    actions = bytes(
        [
            _ACTIONS.index(part.action) if part else _NONE,
            _ACTIONS.index(pending.action) if pending else _NONE,
            bits,
        ]
    )
    # Recent reading times as u32 offsets back from last_seen (the newest), to halve their size.
    newest = state.last_seen_ms or 0
    back = [min(newest - ts, 0xFFFFFFFF) for ts in state.recent_ts_ms]
    recent = struct.pack(f"<B{len(back)}I", len(back), *back)
    texts = _strings(
        [
            info.region_id if info else "",
            part.event_id if part else "",
            pending.recommendation_id if pending else "",
        ]
    ) + _strings(info.programs if info else ())
    return fixed + actions + recent + texts


def decode(data: bytes) -> DeviceState:
    """Read bytes written by `encode` (this version or an earlier one)."""
    fixed = {1: _FIXED_V1, VERSION: _FIXED}.get(data[0]) if data else None
    if fixed is None:
        raise DeviceStateError(f"device state: unknown version byte {data[:1]!r}")
    try:
        return _decode(memoryview(data), fixed)
    except (struct.error, IndexError, UnicodeDecodeError, ValueError) as err:
        raise DeviceStateError(f"device state v{data[0]} is corrupt: {err}") from err


def _decode(data: memoryview, fixed: struct.Struct) -> DeviceState:
    (
        _, flags, cls, prio, rated, seen, good_ts, good_kw, start, end, expires, dr_prio,
        count, mean, m2, offset_c, curtail_pct, *watch,
    ) = fixed.unpack_from(data)  # fmt: skip
    at = fixed.size
    part_action, pending_action, bits = data[at], data[at + 1], data[at + 2]
    at += 3
    n_recent = data[at]
    recent = tuple(seen - back for back in struct.unpack_from(f"<{n_recent}I", data, at + 1))
    at += 1 + 4 * n_recent
    (region, event_id, rec_id), at = _read_strings(data, at)
    programs, at = _read_strings(data, at)
    if at != len(data):
        raise ValueError(f"{len(data) - at} trailing bytes")
    info = (
        DeviceInfo(_CLASSES[cls], _PRIORITIES[prio], region, programs, rated)
        if flags & _FLAG_INFO
        else None
    )
    part = (
        Participation(
            event_id,
            _ACTIONS[part_action],
            start,
            end,
            dr_prio,
            bool(bits & _PART_CURTAILED),
            bool(bits & _PART_OPTED_OUT),
            bool(bits & _PART_ATTEMPTED),
            _unsize(offset_c),
            _unsize(curtail_pct),
        )
        if flags & _FLAG_PART
        else None
    )
    return DeviceState(
        info=info,
        last_seen_ms=seen if flags & _FLAG_SEEN else None,
        last_good=LastGood(good_ts, good_kw, bool(bits & _GOOD_ON)) if flags & _FLAG_GOOD else None,
        stale=bool(flags & _FLAG_STALE),
        recent_ts_ms=recent,
        participation=part,
        pending=PendingRecommendation(rec_id, _ACTIONS[pending_action], expires)
        if flags & _FLAG_PENDING
        else None,
        stats=PowerStats(count, mean, m2),
        watch_ms=watch[0] if flags & _FLAG_WATCH else None,
    )
