"""The safety interlocks every command passes through (DESIGN.md "Safety semantics").

Pure: what is known of a device, its region and the pipeline at `now_ms` in, the reasons that
block an action out (none: it may go ahead). Every failing interlock is named, not just the
first, so the audit trail says everything that stood in the way.
"""

from __future__ import annotations

import dataclasses

from functions.wetbulb import RegionMode
from schemas.models import LOAD_REDUCING_ACTIONS, Action, DeviceClass, PriorityLevel, ReasonCode

SCADA_CLASSES = frozenset(
    {DeviceClass.FEEDER_BREAKER, DeviceClass.LINE_SWITCH, DeviceClass.INDUSTRIAL_LOAD}
)
SWITCHING_ACTIONS = frozenset({Action.SWITCH_OPEN, Action.SWITCH_CLOSE})


@dataclasses.dataclass(frozen=True)
class DeviceFacts:
    """What the device stage knows of one device when it decides.

    `priority` and `device_class` are None until the device's registry record arrives.
    """

    priority: PriorityLevel | None
    device_class: DeviceClass | None
    stale: bool
    opted_out: bool


@dataclasses.dataclass(frozen=True)
class PipelineFacts:
    """What the pipeline knows of itself: a lag freeze, a silent source (both fail-safe)."""

    frozen: bool = False
    source_silent: bool = False


def needs_operator(action: Action, device_class: DeviceClass | None) -> bool:
    """High-impact SCADA switching waits for an operator; consumer IoT is automated."""
    return action in SWITCHING_ACTIONS and (device_class is None or device_class in SCADA_CLASSES)


def blocking_reasons(
    action: Action, device: DeviceFacts, region: RegionMode, pipeline: PipelineFacts
) -> tuple[ReasonCode, ...]:
    """Every interlock that forbids `action` now; empty when it may be emitted.

    A stale device gets no automated command at all (DESIGN.md rule 3), RESTORE included: it is
    re-evaluated when the device reports again. The other interlocks guard load-reducing actions
    only, so RESTORE gives load back through a freeze or a suspension. An unknown device (no
    registry record yet) is protected as LIFE_SAFETY.
    """
    reasons: list[ReasonCode] = []
    if device.stale:
        reasons.append(ReasonCode.TELEMETRY_STALE)
    if action not in LOAD_REDUCING_ACTIONS:
        return tuple(reasons)
    if device.priority is None:
        reasons += [ReasonCode.UNKNOWN_DEVICE, ReasonCode.LIFE_SAFETY_EXCLUSION]
    elif device.priority is PriorityLevel.LIFE_SAFETY:
        reasons.append(ReasonCode.LIFE_SAFETY_EXCLUSION)
    reasons += region_reasons(action, region, pipeline)
    if device.opted_out:
        reasons.append(ReasonCode.OPT_OUT)
    return tuple(reasons)


def region_reasons(
    action: Action, region: RegionMode, pipeline: PipelineFacts
) -> tuple[ReasonCode, ...]:
    """The interlocks of the region and the pipeline alone (what the budget stage re-checks)."""
    if action not in LOAD_REDUCING_ACTIONS:
        return ()
    reasons: list[ReasonCode] = []
    if region is RegionMode.SUSPENDED:
        reasons.append(ReasonCode.WET_BULB_SUSPEND)
    elif region is RegionMode.GRID_FOLLOW:
        reasons.append(ReasonCode.WEATHER_UNKNOWN)
    if pipeline.frozen:
        reasons.append(ReasonCode.SAFETY_FREEZE)
    if pipeline.source_silent:
        reasons.append(ReasonCode.GRID_FOLLOW)
    return tuple(reasons)
