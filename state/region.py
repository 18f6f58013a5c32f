"""State of the region, budget and pipeline stages, and its versioned codec.

These stages see few records (weather, registry changes, DR events, command requests), so the
codec is a version byte plus compact JSON: readable in a savepoint dump, and a new field is a
new version with a default. The per-device state, which is hot and numerous, has the compact
binary codec of `state.device`.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from functions.budget import Held, Waiting, Window
from functions.device import CommandRequest, Withdrawal
from functions.interlocks import PipelineFacts
from functions.pipeline import Heartbeat, PipelineState
from functions.region import RegionEvent, RosterEntry
from functions.wetbulb import RegionWeather
from schemas.models import Action, Cause, DeviceClass, ReasonCode

VERSION = 1  # every record here but the weather and the DR event
WEATHER_VERSION = 2  # v2 added `aged_out`; v1 (without it) still reads, as not aged out
EVENT_VERSION = 2  # v2 added `issued_ts_ms`; v1 still reads, as issued at its start
WAITING_VERSION = 2  # v2 added `deferred`
T = TypeVar("T")
E = TypeVar("E", bound=enum.Enum)

_FIX = "drop the key's state or restore a savepoint this version wrote"


class RegionStateError(ValueError):
    """State bytes this version cannot read."""


class RegionStateFieldError(RegionStateError):
    """A state field holding a value of the wrong type or out of its enumeration."""

    def __init__(self, record: str, field: str, value: Any, expected: str) -> None:
        super().__init__(
            f"region state {record}: field {field!r} holds {value!r:.80}, expected {expected}"
            f" ({_FIX})"
        )
        self.record = record
        self.field = field
        self.value = value


class _Fields:
    """One record's JSON field list, read by name with its type checked (JSON has no schema)."""

    def __init__(self, record: str, raw: Any, names: Sequence[str]) -> None:
        if not isinstance(raw, list) or len(raw) != len(names):
            raise RegionStateError(
                f"region state {record}: expected a list of {len(names)} fields"
                f" ({', '.join(names)}), got {raw!r:.80} ({_FIX})"
            )
        self.record = record
        self.values = dict(zip(names, raw, strict=True))

    def _bad(self, name: str, expected: str) -> RegionStateFieldError:
        return RegionStateFieldError(self.record, name, self.values[name], expected)

    def integer(self, name: str) -> int:
        value = self.values[name]
        if type(value) is not int:  # bool is an int subclass: refused too
            raise self._bad(name, "an integer")
        return value

    def integer_or_none(self, name: str) -> int | None:
        return None if self.values[name] is None else self.integer(name)

    def number(self, name: str) -> float:
        value = self.values[name]
        if type(value) not in (int, float):
            raise self._bad(name, "a number")
        return float(value)

    def number_or_none(self, name: str) -> float | None:
        return None if self.values[name] is None else self.number(name)

    def flag(self, name: str) -> bool:
        value = self.values[name]
        if type(value) is not bool:
            raise self._bad(name, "true or false")
        return value

    def text(self, name: str) -> str:
        value = self.values[name]
        if not isinstance(value, str):
            raise self._bad(name, "a string")
        return value

    def text_or_none(self, name: str) -> str | None:
        return None if self.values[name] is None else self.text(name)

    def texts(self, name: str) -> tuple[str, ...]:
        value = self.values[name]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self._bad(name, "a list of strings")
        return tuple(value)

    def choice(self, name: str, kind: type[E]) -> E:
        try:
            return kind(self.text(name))
        except ValueError:
            raise self._bad(name, f"one of {', '.join(str(m.value) for m in kind)}") from None

    def choices(self, name: str, kind: type[E]) -> tuple[E, ...]:
        try:
            return tuple(kind(v) for v in self.texts(name))
        except ValueError:
            raise self._bad(name, f"a list of {kind.__name__}") from None

    def nested(self, name: str, names: Sequence[str]) -> _Fields:
        return _Fields(f"{self.record}.{name}", self.values[name], names)


def _pack(fields: list[Any], version: int = VERSION) -> bytes:
    return bytes([version]) + json.dumps(fields, separators=(",", ":")).encode()


def _unpack(
    data: bytes, record: str, build: Callable[[int, Any], T], versions: Sequence[int] = (VERSION,)
) -> T:
    if not data or data[0] not in versions:
        raise RegionStateError(
            f"region state {record}: unknown version byte {data[:1]!r} (reads {list(versions)})"
        )
    try:
        raw = json.loads(data[1:])
    except ValueError as err:  # JSON and UTF-8 errors
        raise RegionStateError(f"region state {record} v{data[0]} is corrupt: {err}") from err
    try:
        return build(data[0], raw)
    except RegionStateError:
        raise
    except (ValueError, TypeError) as err:  # e.g. a Cause that fails its own validation
        raise RegionStateError(f"region state {record} v{data[0]} is corrupt: {err}") from err


_CAUSE = ("source_topic", "source_partition", "source_offset", "event_id")


def _cause(c: Cause) -> list[Any]:
    return [c.source_topic, c.source_partition, c.source_offset, c.event_id]


def _read_cause(f: _Fields) -> Cause:
    return Cause(
        source_topic=f.text("source_topic"),
        source_partition=f.integer_or_none("source_partition"),
        source_offset=f.integer_or_none("source_offset"),
        event_id=f.text_or_none("event_id"),
    )


_WEATHER_V1 = ("suspended", "observed_ts_ms", "wet_bulb_c", "below_since_ms")
_WEATHER = (*_WEATHER_V1, "aged_out")


def encode_weather(w: RegionWeather) -> bytes:
    """A region's wet-bulb memory as bytes."""
    fields = [w.suspended, w.observed_ts_ms, w.wet_bulb_c, w.below_since_ms, w.aged_out]
    return _pack(fields, WEATHER_VERSION)


def decode_weather(data: bytes) -> RegionWeather:
    """Read `encode_weather`'s bytes, of this version or v1."""

    def build(version: int, raw: Any) -> RegionWeather:
        f = _Fields("weather", raw, _WEATHER if version == WEATHER_VERSION else _WEATHER_V1)
        return RegionWeather(
            f.flag("suspended"),
            f.integer("observed_ts_ms"),
            f.number("wet_bulb_c"),
            f.integer_or_none("below_since_ms"),
            version == WEATHER_VERSION and f.flag("aged_out"),
        )

    return _unpack(data, "weather", build, (1, WEATHER_VERSION))


def encode_roster_entry(e: RosterEntry) -> bytes:
    """One registered device of the roster as bytes."""
    return _pack([e.device_class.value, list(e.programs)])


def decode_roster_entry(data: bytes) -> RosterEntry:
    """Read `encode_roster_entry`'s bytes."""

    def build(_: int, raw: Any) -> RosterEntry:
        f = _Fields("roster_entry", raw, ("device_class", "programs"))
        return RosterEntry(f.choice("device_class", DeviceClass), f.texts("programs"))

    return _unpack(data, "roster_entry", build)


def encode_event(e: RegionEvent) -> bytes:
    """A DR event kept by a region as bytes."""
    return _pack(
        [
            e.event_id, e.program_id, e.action.value, e.start_ts_ms, e.end_ts_ms, e.priority,
            e.cancelled, e.correlation_id, _cause(e.cause), e.setpoint_offset_c, e.curtailment_pct,
            e.issued_ts_ms,
        ],
        EVENT_VERSION,
    )  # fmt: skip


_EVENT_V1 = (
    "event_id", "program_id", "action", "start_ts_ms", "end_ts_ms", "priority", "cancelled",
    "correlation_id", "cause", "setpoint_offset_c", "curtailment_pct",
)  # fmt: skip
_EVENT = (*_EVENT_V1, "issued_ts_ms")


def decode_event(data: bytes) -> RegionEvent:
    """Read `encode_event`'s bytes, of this version or v1."""

    def build(version: int, raw: Any) -> RegionEvent:
        f = _Fields("event", raw, _EVENT if version == EVENT_VERSION else _EVENT_V1)
        return RegionEvent(
            f.text("event_id"),
            f.text("program_id"),
            f.choice("action", Action),
            f.integer("start_ts_ms"),
            f.integer("end_ts_ms"),
            f.integer("priority"),
            f.flag("cancelled"),
            f.text("correlation_id"),
            _read_cause(f.nested("cause", _CAUSE)),
            f.number_or_none("setpoint_offset_c"),
            f.number_or_none("curtailment_pct"),
            f.integer("issued_ts_ms" if version == EVENT_VERSION else "start_ts_ms"),
        )

    return _unpack(data, "event", build, (VERSION, EVENT_VERSION))


def encode_waiting(w: Waiting) -> bytes:
    """A command request waiting for budget as bytes."""
    r = w.request
    return _pack(
        [
            r.command_id, r.device_id, r.region_id, r.action.value, r.priority, r.requested_ts_ms,
            r.correlation_id, _cause(r.cause), r.setpoint_offset_c, r.curtailment_pct, w.deferred,
        ],
        WAITING_VERSION,
    )  # fmt: skip


_REQUEST = (
    "command_id", "device_id", "region_id", "action", "priority", "requested_ts_ms",
    "correlation_id", "cause", "setpoint_offset_c", "curtailment_pct",
)  # fmt: skip


def decode_waiting(data: bytes) -> Waiting:
    """Read `encode_waiting`'s bytes, of this version or v1 (whose entries had all been
    audited DEFERRED already)."""

    def build(version: int, raw: Any) -> Waiting:
        names = (*_REQUEST, "deferred") if version == WAITING_VERSION else _REQUEST
        f = _Fields("request", raw, names)
        request = CommandRequest(
            f.text("command_id"),
            f.text("device_id"),
            f.text("region_id"),
            f.choice("action", Action),
            f.integer("priority"),
            f.integer("requested_ts_ms"),
            f.text("correlation_id"),
            _read_cause(f.nested("cause", _CAUSE)),
            f.number_or_none("setpoint_offset_c"),
            f.number_or_none("curtailment_pct"),
        )
        return Waiting(request, version != WAITING_VERSION or f.flag("deferred"))

    return _unpack(data, "request", build, (VERSION, WAITING_VERSION))


def encode_held(h: Held) -> bytes:
    """A withdrawal waiting for its instant, with the command ids it withdraws, as bytes."""
    w = h.withdrawal
    reasons = [r.value for r in w.reasons]
    return _pack(
        [w.device_id, w.region_id, reasons, w.correlation_id, _cause(w.cause), w.ts_ms, h.victims]
    )


def decode_held(data: bytes) -> Held:
    """Read `encode_held`'s bytes."""

    def build(_: int, raw: Any) -> Held:
        names = ("device_id", "region_id", "reasons", "correlation_id", "cause", "ts_ms", "victims")
        f = _Fields("withdrawal", raw, names)
        withdrawal = Withdrawal(
            f.text("device_id"),
            f.text("region_id"),
            f.choices("reasons", ReasonCode),
            f.text("correlation_id"),
            _read_cause(f.nested("cause", _CAUSE)),
            f.integer("ts_ms"),
        )
        return Held(withdrawal, f.texts("victims"))

    return _unpack(data, "withdrawal", build)


def encode_window(w: Window) -> bytes:
    """A region's budget window as bytes."""
    return _pack([w.start_ms, w.used])


def decode_window(data: bytes) -> Window:
    """Read `encode_window`'s bytes."""

    def build(_: int, raw: Any) -> Window:
        f = _Fields("window", raw, ("start_ms", "used"))
        return Window(f.integer("start_ms"), f.integer("used"))

    return _unpack(data, "window", build)


_BEAT = ("subtask", "proc_ms", "newest_event_ms")


def encode_pipeline(p: PipelineState) -> bytes:
    """The pipeline watch's state as bytes."""
    beats = [[b.subtask, b.proc_ms, b.newest_event_ms] for b in p.beats]
    return _pack([p.facts.frozen, p.facts.source_silent, beats])


def decode_pipeline(data: bytes) -> PipelineState:
    """Read `encode_pipeline`'s bytes."""

    def build(_: int, raw: Any) -> PipelineState:
        f = _Fields("pipeline", raw, ("frozen", "source_silent", "beats"))
        beats = f.values["beats"]
        if not isinstance(beats, list):
            raise RegionStateFieldError("pipeline", "beats", beats, "a list of heartbeats")
        read = [_Fields(f"pipeline.beats[{i}]", b, _BEAT) for i, b in enumerate(beats)]
        return PipelineState(
            PipelineFacts(f.flag("frozen"), f.flag("source_silent")),
            tuple(
                Heartbeat(b.integer("subtask"), b.integer("proc_ms"), b.integer("newest_event_ms"))
                for b in read
            ),
        )

    return _unpack(data, "pipeline", build)
