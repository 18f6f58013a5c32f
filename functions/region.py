"""The region stage: wet-bulb mode, the roster of registered devices, DR events per device.

Keyed by region id. PyFlink cannot reach every device's state from one element, so a DR event
is expanded here into one `Activation` per enrolled device of the region's roster (DESIGN.md
"Topology hints"); the device stage's timers then act at the event's start and end. It also
raises one `GRID_FOLLOW` when a region's newest weather ages out (an event-time timer at its
deadline) and `GRID_FOLLOW_CLEARED` when newer weather returns. Pure: the adapter holds the
roster, the events and the weather in state and passes them in with the time.

A registry record names only the device's current region, and a tombstone names none, so the
roster keeper ahead of the region stage (keyed by device) remembers each device's region and
tells the old region when its device moved or was deleted (`roster_changes`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator

from functions.device import COOLING_CLASSES, Activation, Deregistration, RegistryUpdate, Release
from functions.wetbulb import RegionWeather, WetBulbPolicy, heat_index_c, observe, stale_from_ms
from schemas.ids import derived_id
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
    issued_ts_ms: int = 0

    def supersedes(self, kept: RegionEvent | None) -> bool:
        """Whether this record of the event changes what the region keeps of it: an end
        (cancelled or completed) always does and is final; otherwise the newest issue wins,
        and an older record re-sent changes nothing."""
        if kept is None:
            return True
        if kept.cancelled:
            return False
        return self.cancelled or (self.issued_ts_ms >= kept.issued_ts_ms and self != kept)


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
class RosterLeave:
    """A device left a region's roster: its record moved it to another region or was deleted."""

    device_id: str
    region_id: str


@dataclasses.dataclass(frozen=True)
class WeatherStep:
    """The region's new weather memory, the alerts, and the releases a suspension causes."""

    weather: RegionWeather
    alerts: tuple[Alert, ...] = ()
    suspended_now: bool = False


def on_weather(
    weather: RegionWeather | None, obs: WeatherInput, now_ms: int, policy: WetBulbPolicy
) -> WeatherStep:
    """Fold an observation in at `now_ms`; alert on a suspension, a resumption, and on newer
    weather ending a Grid-Follow episode (or starting one, if it is already too old)."""
    if weather is not None and obs.ts_ms <= weather.observed_ts_ms:
        return WeatherStep(weather)  # not newer: changes nothing, raises nothing
    value = heat_index_c(obs.dry_bulb_c, obs.relative_humidity_pct, obs.wbgt_c, policy)
    new = observe(weather, obs.ts_ms, value, policy)
    aged = now_ms >= stale_from_ms(new, policy)
    new = dataclasses.replace(new, aged_out=aged)
    alerts: list[Alert] = []
    if aged != (weather is not None and weather.aged_out):
        kind = AlertKind.GRID_FOLLOW if aged else AlertKind.GRID_FOLLOW_CLEARED
        alerts.append(
            _age_alert(obs.region_id, kind, new, now_ms, policy, obs.correlation_id, obs.cause)
        )
    was = weather is not None and weather.suspended
    if new.suspended != was:
        kind, severity, text = (
            (AlertKind.WET_BULB_SUSPEND, Severity.CRITICAL, "DR suspended: wet-bulb")
            if new.suspended
            else (AlertKind.WET_BULB_RESUME, Severity.INFO, "DR resumes: wet-bulb")
        )
        alerts.append(
            region_alert(
                obs.region_id, kind, severity,
                f"{text} {value:.1f} °C (threshold {policy.threshold_c} °C)",
                obs.ts_ms, obs.correlation_id, obs.cause,
            )
        )  # fmt: skip
    return WeatherStep(new, tuple(alerts), suspended_now=new.suspended and not was)


def on_weather_timer(
    weather: RegionWeather, region_id: str, now_ms: int, policy: WetBulbPolicy
) -> WeatherStep:
    """A region timer at `now_ms`: raise `GRID_FOLLOW` once if the newest weather has aged out."""
    if weather.aged_out or now_ms < stale_from_ms(weather, policy):
        return WeatherStep(weather)  # already raised, or newer weather moved the deadline
    aged = dataclasses.replace(weather, aged_out=True)
    corr = derived_id(f"{region_id}-weather-timer-{now_ms}")
    cause = Cause(source_topic="timer", event_id=derived_id(f"{region_id}@{now_ms}"))
    alert = _age_alert(region_id, AlertKind.GRID_FOLLOW, aged, now_ms, policy, corr, cause)
    return WeatherStep(aged, (alert,))


def weather_timers(weather: RegionWeather | None, policy: WetBulbPolicy) -> frozenset[int]:
    """The event-time timer the weather wants: its age-out deadline, until it has aged out."""
    if weather is None or weather.aged_out:
        return frozenset()
    return frozenset({stale_from_ms(weather, policy)})


def _age_alert(
    region_id: str,
    kind: AlertKind,
    weather: RegionWeather,
    now_ms: int,
    policy: WetBulbPolicy,
    correlation_id: str,
    cause: Cause,
) -> Alert:
    age_s = (now_ms - weather.observed_ts_ms) // 1000
    max_age_s = policy.max_age_ms // 1000
    if kind is AlertKind.GRID_FOLLOW:
        severity = Severity.CRITICAL
        text = f"Grid-Follow: weather {age_s} s old (max age {max_age_s} s), DR blocked"
    else:
        severity = Severity.INFO
        text = f"Grid-Follow cleared: weather {age_s} s old (max age {max_age_s} s)"
    return region_alert(region_id, kind, severity, text, now_ms, correlation_id, cause)


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


def releases(
    roster: Iterable[tuple[str, RosterEntry]], correlation_id: str, cause: Cause, now_ms: int
) -> Iterator[Release]:
    """A wet-bulb suspension releases every cooling load of the region (the device decides);
    a cooling load registered into a suspended region is released too (`roster` of one)."""
    for device_id, entry in roster:
        if entry.device_class in COOLING_CLASSES:
            yield Release(device_id, correlation_id, cause, now_ms)


def activation(device_id: str, region_id: str, event: RegionEvent, ts_ms: int) -> Activation:
    """The event as it concerns one device, decided at `ts_ms`."""
    return Activation(
        device_id, region_id, event.event_id, event.action, event.start_ts_ms, event.end_ts_ms,
        event.priority, event.cancelled, event.correlation_id, event.cause, ts_ms,
        event.setpoint_offset_c, event.curtailment_pct, event.issued_ts_ms,
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


def roster_changes(
    old_region: str | None, record: RegistryUpdate | Deregistration
) -> tuple[str | None, tuple[RegistryUpdate | RosterLeave, ...]]:
    """The device's region after a registry record, and what the record changes in the
    rosters: a leave of the region the device was in, if it moved or was deleted, then the
    record itself for the roster of its region."""
    new_region = record.info.region_id if isinstance(record, RegistryUpdate) else None
    changes: list[RegistryUpdate | RosterLeave] = []
    if old_region is not None and old_region != new_region:
        changes.append(RosterLeave(record.device_id, old_region))
    if isinstance(record, RegistryUpdate):
        changes.append(record)
    return new_region, tuple(changes)
