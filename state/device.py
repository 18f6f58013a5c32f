"""Per-device state of the device-control stage, and its versioned compact codec.

Layout v5 (little-endian): a version byte, a flags byte, fixed numeric fields, the customer
override times, the DR participations (the current one first, then those queued behind it),
the DR events ended here by a cancellation, then length-prefixed UTF-8 strings. A typical
enrolled IoT device is well under the 256-byte budget (see
`tests/unit/state/test_device_codec.py`). v4 (the later builds of job 0.9) kept no ended
events. v3 (job 0.7-0.9) kept only the newest override: it becomes the only one. v1 (job 0.4)
and v2 (0.5-0.6) are read too: their window of recent reading times is dropped (a reading not
newer than the newest is now a duplicate whatever its time), and their participation gets its
start as announcement time.
"""

from __future__ import annotations

import dataclasses
import math
import struct
from collections.abc import Sequence
from typing import Any

from schemas.models import Action, DeviceClass, PriorityLevel

VERSION = 5
MAX_QUEUED = 3  # DR events a device keeps waiting behind its current one
MAX_ENDED = 4  # cancelled DR events a device keeps until their end (`functions.device`)
MAX_OVERRIDES = 8  # customer override times a device keeps (`functions.device.kept_overrides`)

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
    """The newest reading with good quality: the last time the device was heard from."""

    ts_ms: int
    power_kw: float
    is_on: bool


@dataclasses.dataclass(frozen=True)
class Participation:
    """The device's part in one DR event.

    `attempted` once the start was decided (emitted, blocked or recommended): a blocked start
    is taken later only once nothing blocks it. `curtailed` once its load-reducing command
    went out. `opt_out_ts_ms` is the earliest customer override within the event (it counts
    from that instant on, whenever it arrived); `opted_out` once that opt-out was acted on
    (audited, a waiting request withdrawn). `rounds` counts the commands and recommendations
    asked for in this part, so each gets an id of its own that does not depend on which input
    triggered it.
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
    issued_ts_ms: int = 0
    rounds: int = 0
    opt_out_ts_ms: int | None = None

    @property
    def order(self) -> tuple[int, int, str]:
        """Which of two waiting events a device takes first: the earlier beginning, then the
        higher DR priority (lower number), then the event id. (By start, an event announced
        after another had begun, but starting before it, displaced it if the other's start was
        still its timer's, and not if it had been decided: the order of arrival decided.)"""
        return (self.begins_ms, self.priority, self.event_id)

    @property
    def begins_ms(self) -> int:
        """The first instant the part is decided at: the event's start, or its announcement if
        that came later (nothing is decided about an event before it is known)."""
        return max(self.start_ts_ms, self.issued_ts_ms)

    def decided_at(self, now_ms: int) -> int:
        """The instant its start is decided at when taken up at `now_ms`: not before it begins.
        At or past its end, the part can no longer start."""
        return max(now_ms, self.begins_ms)

    def covers(self, ts_ms: int) -> bool:
        """Whether `ts_ms` falls between the event's announcement and its end."""
        return min(self.issued_ts_ms, self.start_ts_ms) <= ts_ms < self.end_ts_ms

    def opted_out_at(self, now_ms: int) -> bool:
        """Whether a customer override had opted the device out of the event by `now_ms`."""
        return self.opt_out_ts_ms is not None and self.opt_out_ts_ms <= now_ms


@dataclasses.dataclass(frozen=True)
class Ended:
    """A DR event its cancellation (or completion) ended at `at_ms`: final for its id. A
    record of it read later (a copy re-sent, or the original read after its cancellation)
    runs no further than `at_ms`, and, once the device `known` the event, joins nothing when
    the device has let the event go. Kept until the watermark passes `end_ts_ms`, the end the
    event had."""

    event_id: str
    at_ms: int
    end_ts_ms: int
    known: bool


@dataclasses.dataclass(frozen=True)
class PendingRecommendation:
    """A high-impact action waiting for an operator until `expires_ts_ms` (exclusive)."""

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
    """Everything the device stage keeps for one device.

    `info_ts_ms` is the `updated_ts_ms` of the registry record in force (or the time of its
    deletion), so an older record arriving later changes nothing; `last_seen_ms` the newest
    reading of any quality (a reading not newer is a duplicate); `last_good` the newest good
    one (the device was heard from then); `overrides` the times of readings that carried a
    customer override, ascending (those a DR event read later may still begin before);
    `ended` the events cancelled here that are not over yet.
    """

    info: DeviceInfo | None = None
    info_ts_ms: int | None = None
    last_seen_ms: int | None = None
    last_good: LastGood | None = None
    stale: bool = False
    overrides: tuple[int, ...] = ()
    participation: Participation | None = None
    queued: tuple[Participation, ...] = ()
    pending: PendingRecommendation | None = None
    stats: PowerStats = PowerStats()
    watch_ms: int | None = None  # the armed silence-or-retention timer (`functions.device`)
    ended: tuple[Ended, ...] = ()


_FIXED = struct.Struct("<7BdqqqdqIddq")  # the 7th byte: participations | overrides << 4
_ENDED = struct.Struct("<qqB")
_FIXED_V3 = struct.Struct("<7BdqqqdqqIddq")  # v3: one override time, after the good reading
_PART = struct.Struct("<qqqqiHBBff")  # ff: the event's sizes, NaN for none
_FIXED_V1 = struct.Struct("<BBBBdqqdqqqIIddff")
_FIXED_V2 = struct.Struct(_FIXED_V1.format + "q")  # v2: + the armed watch timer
_INFO, _INFO_TS, _SEEN, _GOOD, _STALE, _PENDING, _WATCH, _OVERRIDE_V3 = (1 << i for i in range(8))
_CURTAILED, _OPTED_OUT, _ATTEMPTED, _OPT_OUT_TS = 1, 2, 4, 8
_GOOD_ON = 1  # then the ended events' count (bits 1-3) and 0x80: a current participation
_OLD_CURTAILED, _OLD_OPTED_OUT, _OLD_GOOD_ON, _OLD_ATTEMPTED = 1, 2, 4, 8


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


def _flag(present: object, bit: int) -> int:
    return bit if present is not None and present is not False else 0


def _encode_part(p: Participation) -> bytes:
    bits = (
        (_CURTAILED if p.curtailed else 0)
        | (_OPTED_OUT if p.opted_out else 0)
        | (_ATTEMPTED if p.attempted else 0)
        | (_OPT_OUT_TS if p.opt_out_ts_ms is not None else 0)
    )
    return _PART.pack(
        p.start_ts_ms, p.end_ts_ms, p.issued_ts_ms, p.opt_out_ts_ms or 0, p.priority,
        min(p.rounds, 0xFFFF),
        _ACTIONS.index(p.action), bits, _size(p.setpoint_offset_c), _size(p.curtailment_pct),
    )  # fmt: skip


def encode(state: DeviceState, previous: tuple[DeviceState, bytes] | None = None) -> bytes:
    """The state as version-5 bytes.

    With `previous` (a state and its bytes, from this version), the variable part is copied
    from those bytes when it comes from the very same objects: the hot path of a reading,
    which changes only the fixed fields.
    """
    info, good, pending = state.info, state.last_good, state.pending
    parts = (state.participation, *state.queued) if state.participation else state.queued
    flags = (
        _flag(info, _INFO)
        | _flag(state.info_ts_ms, _INFO_TS)
        | _flag(state.last_seen_ms, _SEEN)
        | _flag(good, _GOOD)
        | _flag(state.stale, _STALE)
        | _flag(pending, _PENDING)
        | _flag(state.watch_ms, _WATCH)
    )
    fixed = _FIXED.pack(
        VERSION,
        flags,
        (_GOOD_ON if good and good.is_on else 0)
        | len(state.ended) << 1
        | (0x80 if state.participation else 0),
        _CLASSES.index(info.device_class) if info else _NONE,
        _PRIORITIES.index(info.priority) if info else _NONE,
        _ACTIONS.index(pending.action) if pending else _NONE,
        len(parts) | len(state.overrides) << 4,
        info.rated_power_kw if info else 0.0,
        state.info_ts_ms or 0,
        state.last_seen_ms or 0,
        good.ts_ms if good else 0,
        good.power_kw if good else 0.0,
        pending.expires_ts_ms if pending else 0,
        state.stats.count,
        state.stats.mean,
        state.stats.m2,
        state.watch_ms or 0,
    )
    if previous is not None and _same_tail(previous[0], state) and previous[1][0] == VERSION:
        return fixed + previous[1][_FIXED.size :]
    texts = _strings(
        [
            info.region_id if info else "",
            pending.recommendation_id if pending else "",
            *(p.event_id for p in parts),
            *(e.event_id for e in state.ended),
        ]
    ) + _strings(info.programs if info else ())
    overrides = struct.pack(f"<{len(state.overrides)}q", *state.overrides)
    ended = b"".join(_ENDED.pack(e.at_ms, e.end_ts_ms, e.known) for e in state.ended)
    return fixed + overrides + b"".join(_encode_part(p) for p in parts) + ended + texts


def _same_tail(old: DeviceState, new: DeviceState) -> bool:
    """Whether the variable part (overrides, participations, ended events, region,
    recommendation id, programs) of the two states' bytes is the same: it is when it comes
    from the same objects."""
    return (
        old.overrides is new.overrides
        and old.ended is new.ended
        and old.info is new.info
        and old.pending is new.pending
        and old.participation is new.participation
        and old.queued is new.queued
    )


def decode(data: bytes) -> DeviceState:
    """Read bytes written by `encode` (this version or an earlier one)."""
    version = data[0] if data else None
    try:
        if version in (3, 4, VERSION):
            return _decode(memoryview(data), version)
        if version in (1, 2):
            return _decode_old(memoryview(data), _FIXED_V1 if version == 1 else _FIXED_V2)
    except (struct.error, IndexError, UnicodeDecodeError, ValueError) as err:
        raise DeviceStateError(f"device state v{version} is corrupt: {err}") from err
    raise DeviceStateError(f"device state: unknown version byte {data[:1]!r}")


def _participation(event_id: str, raw: tuple[Any, ...]) -> Participation:
    start, end, issued, opt_out, priority, rounds, action, bits, offset_c, pct = raw
    return Participation(
        event_id, _ACTIONS[action], start, end, priority, bool(bits & _CURTAILED),
        bool(bits & _OPTED_OUT), bool(bits & _ATTEMPTED), _unsize(offset_c), _unsize(pct),
        issued, rounds, opt_out if bits & _OPT_OUT_TS else None,
    )  # fmt: skip


def _decode(data: memoryview, version: int) -> DeviceState:
    if version in (4, VERSION):  # v4: the same fixed fields, no ended events
        (
            _, flags, bits, cls, prio, pending_action, counts, rated, info_ts, seen, good_ts,
            good_kw, expires, count, mean, m2, watch,
        ) = _FIXED.unpack_from(data)  # fmt: skip
        n_parts, n_overrides = counts & 0x0F, counts >> 4
        overrides = struct.unpack_from(f"<{n_overrides}q", data, _FIXED.size)
        at = _FIXED.size + 8 * n_overrides
    else:
        (
            _, flags, bits, cls, prio, pending_action, n_parts, rated, info_ts, seen, good_ts,
            good_kw, override_ts, expires, count, mean, m2, watch,
        ) = _FIXED_V3.unpack_from(data)  # fmt: skip
        overrides = (override_ts,) if flags & _OVERRIDE_V3 else ()
        at = _FIXED_V3.size
    n_ended = bits >> 1 & 0x07
    raw_parts = []
    for _ in range(n_parts):
        raw_parts.append(_PART.unpack_from(data, at))
        at += _PART.size
    raw_ended = []
    for _ in range(n_ended):
        raw_ended.append(_ENDED.unpack_from(data, at))
        at += _ENDED.size
    (region, rec_id, *event_ids), at = _read_strings(data, at)
    programs, at = _read_strings(data, at)
    if at != len(data) or len(event_ids) != n_parts + n_ended:
        raise ValueError(f"{len(data) - at} trailing bytes or a missing event id")
    parts = tuple(
        _participation(e, raw) for e, raw in zip(event_ids[:n_parts], raw_parts, strict=True)
    )
    ended = tuple(
        Ended(e, cut_at, end, bool(known))
        for e, (cut_at, end, known) in zip(event_ids[n_parts:], raw_ended, strict=True)
    )
    current = parts[0] if bits & 0x80 else None
    return DeviceState(
        info=DeviceInfo(_CLASSES[cls], _PRIORITIES[prio], region, programs, rated)
        if flags & _INFO
        else None,
        info_ts_ms=info_ts if flags & _INFO_TS else None,
        last_seen_ms=seen if flags & _SEEN else None,
        last_good=LastGood(good_ts, good_kw, bool(bits & _GOOD_ON)) if flags & _GOOD else None,
        stale=bool(flags & _STALE),
        overrides=overrides,
        participation=current,
        queued=parts[1:] if current else parts,
        pending=PendingRecommendation(rec_id, _ACTIONS[pending_action], expires)
        if flags & _PENDING
        else None,
        stats=PowerStats(count, mean, m2),
        watch_ms=watch if flags & _WATCH else None,
        ended=ended,
    )


def _decode_old(data: memoryview, fixed: struct.Struct) -> DeviceState:
    """A v1 or v2 state (one participation, a window of recent reading times)."""
    (
        _, flags, cls, prio, rated, seen, good_ts, good_kw, start, end, expires, dr_prio,
        count, mean, m2, offset_c, curtail_pct, *watch,
    ) = fixed.unpack_from(data)  # fmt: skip
    at = fixed.size
    part_action, pending_action, bits = data[at], data[at + 1], data[at + 2]
    at += 4 + 4 * data[at + 3]  # the recent reading times are not kept any more
    (region, event_id, rec_id), at = _read_strings(data, at)
    programs, at = _read_strings(data, at)
    if at != len(data):
        raise ValueError(f"{len(data) - at} trailing bytes")
    attempted = bool(bits & _OLD_ATTEMPTED)
    part = Participation(
        event_id, _ACTIONS[part_action], start, end, dr_prio, bool(bits & _OLD_CURTAILED),
        bool(bits & _OLD_OPTED_OUT), attempted, _unsize(offset_c), _unsize(curtail_pct),
        start, int(attempted), start if bits & _OLD_OPTED_OUT else None,
    )  # fmt: skip
    return DeviceState(
        info=DeviceInfo(_CLASSES[cls], _PRIORITIES[prio], region, programs, rated)
        if flags & 1
        else None,
        last_seen_ms=seen if flags & 2 else None,
        last_good=LastGood(good_ts, good_kw, bool(bits & _OLD_GOOD_ON)) if flags & 4 else None,
        stale=bool(flags & 8),
        participation=part if flags & 16 else None,
        pending=PendingRecommendation(rec_id, _ACTIONS[pending_action], expires)
        if flags & 32
        else None,
        stats=PowerStats(count, mean, m2),
        watch_ms=watch[0] if watch and flags & 64 else None,
    )
