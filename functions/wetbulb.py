"""Wet-bulb temperature and the per-region wet-bulb interlock (DESIGN.md safety rule 2).

Pure: a region's state and an observation in, the new state and any mode change out.
"""

from __future__ import annotations

import dataclasses
import math
from enum import StrEnum


def stull_wet_bulb_c(dry_bulb_c: float, relative_humidity_pct: float) -> float:
    """Wet-bulb temperature (°C) from dry-bulb and RH by Stull (2011), at sea-level pressure.

    Stull's fit is within ±1 °C for RH 5-99 % and -20-50 °C; outside that it extrapolates, so
    the interlock's hysteresis should exceed that error where such air is expected.
    """
    t, rh = dry_bulb_c, relative_humidity_pct
    return float(
        t * math.atan(0.151977 * math.sqrt(rh + 8.313659))
        + math.atan(t + rh)
        - math.atan(rh - 1.676331)
        + 0.00391838 * rh**1.5 * math.atan(0.023101 * rh)
        - 4.686035
    )


@dataclasses.dataclass(frozen=True)
class WetBulbPolicy:
    """A region's thresholds; the defaults are DESIGN.md's."""

    threshold_c: float = 28.0
    hysteresis_c: float = 1.0
    hold_ms: int = 30 * 60_000
    max_age_ms: int = 30 * 60_000
    use_wbgt: bool = False


class RegionMode(StrEnum):
    """What a region allows: NORMAL, or DR suspended by heat, or Grid-Follow for lack of weather."""

    NORMAL = "NORMAL"
    SUSPENDED = "SUSPENDED"
    GRID_FOLLOW = "GRID_FOLLOW"


@dataclasses.dataclass(frozen=True)
class RegionWeather:
    """The interlock's memory of one region.

    `below_since_ms` is when the value last went under threshold - hysteresis while suspended
    (None while it is not under); `observed_ts_ms` is the newest observation's event time;
    `aged_out` is set once that observation has aged out and `GRID_FOLLOW` was raised for it.
    """

    suspended: bool
    observed_ts_ms: int
    wet_bulb_c: float
    below_since_ms: int | None = None
    aged_out: bool = False


def heat_index_c(
    dry_bulb_c: float, relative_humidity_pct: float, wbgt_c: float | None, policy: WetBulbPolicy
) -> float:
    """The value compared with the threshold: WBGT where configured and reported, else Stull."""
    if policy.use_wbgt and wbgt_c is not None:
        return wbgt_c
    return stull_wet_bulb_c(dry_bulb_c, relative_humidity_pct)


def observe(
    state: RegionWeather | None, ts_ms: int, value_c: float, policy: WetBulbPolicy
) -> RegionWeather:
    """Fold one observation in; an observation older than the newest one changes nothing."""
    if state is not None and ts_ms <= state.observed_ts_ms:
        return state
    if value_c >= policy.threshold_c:
        return RegionWeather(True, ts_ms, value_c)
    if state is None or not state.suspended:
        return RegionWeather(False, ts_ms, value_c)
    if value_c >= policy.threshold_c - policy.hysteresis_c:
        return RegionWeather(True, ts_ms, value_c)  # in the hysteresis band: the hold restarts
    below_since = state.below_since_ms if state.below_since_ms is not None else ts_ms
    resumed = ts_ms - below_since >= policy.hold_ms
    return RegionWeather(not resumed, ts_ms, value_c, None if resumed else below_since)


def stale_from_ms(state: RegionWeather, policy: WetBulbPolicy) -> int:
    """The first instant at which the newest observation is older than the max age."""
    return state.observed_ts_ms + policy.max_age_ms + 1


def mode(state: RegionWeather | None, now_ms: int, policy: WetBulbPolicy) -> RegionMode:
    """The region's mode at `now_ms`: missing or stale weather is Grid-Follow (fail-open)."""
    if state is None or now_ms >= stale_from_ms(state, policy):
        return RegionMode.GRID_FOLLOW
    return RegionMode.SUSPENDED if state.suspended else RegionMode.NORMAL
