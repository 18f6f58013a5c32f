"""The region stage: wet-bulb mode, the roster of registered devices, DR events per device.

Keyed by region id. PyFlink cannot reach every device's state from one element, so a DR event
is expanded here into one `Activation` per enrolled device of the region's roster (DESIGN.md
"Topology hints"); the device stage's timers then act at the event's start and end. Pure:
the adapter holds the roster and the events in map state and passes them in.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator

from functions.device import COOLING_CLASSES, Activation, Release
from functions.wetbulb import RegionWeather, WetBulbPolicy, heat_index_c, observe
from schemas.models import Action, Alert, AlertKind, Cause, DeviceClass, Severity


@dataclasses.dataclass(frozen=True)
class RosterEntry:
    """What the region knows of one registered device: enough to pick DR participants."""

    device_class: DeviceClass
    programs: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class RegionEvent:
    """A DR event as one target region keeps it until its end."""

    event_id: str
    program_id: str
    action: Action
    start_ts_ms: int
    end_ts_ms: int
    priority: int
    cancelled: bool
    correlation_id: str
    cause: Cause
    setpoint_offset_c: float | None = None
    curtailment_pct: float | None = None


@dataclasses.dataclass(frozen=True)
class WeatherInput:
    """A weather observation for one region."""

    region_id: str
    ts_ms: int
    dry_bulb_c: float
    relative_humidity_pct: float
    wbgt_c: float | None
    correlation_id: str
    cause: Cause


@dataclasses.dataclass(frozen=True)
class EventForRegion:
    """A DR event as it reaches one of its target regions (fanned out at ingest)."""

    region_id: str
    ts_ms: int
    event: RegionEvent


@dataclasses.dataclass(frozen=True)
class WeatherStep:
    """The region's new weather memory, the alerts, and the releases a suspension causes."""

    weather: RegionWeather
    alerts: tuple[Alert, ...] = ()
    suspended_now: bool = False


def on_weather(
    weather: RegionWeather | None, obs: WeatherInput, policy: WetBulbPolicy
) -> WeatherStep:
    """Fold an observation in; alert when DR is suspended or resumes in the region."""
    value = heat_index_c(obs.dry_bulb_c, obs.relative_humidity_pct, obs.wbgt_c, policy)
    new = observe(weather, obs.ts_ms, value, policy)
    was = weather is not None and weather.suspended
    if new.suspended == was:
        return WeatherStep(new)
    kind, severity, text = (
        (AlertKind.WET_BULB_SUSPEND, Severity.CRITICAL, "DR suspended: wet-bulb")
        if new.suspended
        else (AlertKind.WET_BULB_RESUME, Severity.INFO, "DR resumes: wet-bulb")
    )
    alert = region_alert(
        obs.region_id, kind, severity,
        f"{text} {value:.1f} °C (threshold {policy.threshold_c} °C)",
        obs.ts_ms, obs.correlation_id, obs.cause,
    )  # fmt: skip
    return WeatherStep(new, (alert,), suspended_now=new.suspended)


def region_alert(
    region_id: str,
    kind: AlertKind,
    severity: Severity,
    message: str,
    ts_ms: int,
    correlation_id: str,
    cause: Cause,
) -> Alert:
    """An alert about a whole region."""
    return Alert(
        kind=kind,
        severity=severity,
        region_id=region_id,
        correlation_id=correlation_id,
        raised_ts_ms=ts_ms,
        message=message,
        cause=cause,
    )


def releases(roster: Iterable[tuple[str, RosterEntry]], obs: WeatherInput) -> Iterator[Release]:
    """A wet-bulb suspension releases every cooling load of the region (the device decides)."""
    for device_id, entry in roster:
        if entry.device_class in COOLING_CLASSES:
            yield Release(device_id, obs.correlation_id, obs.cause, obs.ts_ms)


def activation(device_id: str, region_id: str, event: RegionEvent, ts_ms: int) -> Activation:
    """The event as it concerns one device, decided at `ts_ms`."""
    return Activation(
        device_id, region_id, event.event_id, event.action, event.start_ts_ms, event.end_ts_ms,
        event.priority, event.cancelled, event.correlation_id, event.cause, ts_ms,
        event.setpoint_offset_c, event.curtailment_pct,
    )  # fmt: skip


def activations(
    arrival: EventForRegion, roster: Iterable[tuple[str, RosterEntry]]
) -> Iterator[Activation]:
    """One activation per device of the roster enrolled in the event's program."""
    event = arrival.event
    for device_id, entry in roster:
        if event.program_id in entry.programs:
            yield activation(device_id, arrival.region_id, event, arrival.ts_ms)


def joins(
    device_id: str, region_id: str, entry: RosterEntry, events: Iterable[RegionEvent], now_ms: int
) -> Iterator[Activation]:
    """A device registered (or re-enrolled) while events are on joins those not yet over."""
    for event in events:
        if event.program_id in entry.programs and not event.cancelled and now_ms < event.end_ts_ms:
            yield activation(device_id, region_id, event, now_ms)
