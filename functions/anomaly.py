"""Anomaly features of a reading, the fences that score them, and the faulty-rollout tracker.

`features(state, reading, norms)` is the one feature function: training calls it while it
replays the dataset through the device stage's own transition (`functions.device.step`), live
scoring calls it in the device stage with the state it holds before the reading. Both see the
same state for the same readings, so the features cannot drift (a unit test holds them equal).
Each feature is something a grid engineer reads off a trend chart:

- `power_z`: how many standard deviations the power is from the device's own running mean
  (`DeviceState.stats`, Welford), 0 until two good readings are kept;
- `ramp_kw_per_s`: the rate of change since the last good reading;
- `loading_pu`: the power over the device's rated power (per unit; 0 for a device the
  registry has not described);
- `median_dev_kw`: the power less the median of the device's class in its region (the
  class's median where the region is unknown), medians learned at training time;
- `interval_log2`: log2 of the interval since the last reading over the class's nominal
  reporting interval (0 on time, -1 twice as often, +1 half as often);
- `stuck`: the same non-zero power as the last good reading, to the last bit (a frozen value);
- `quality_bad`: an IEC quality flag was raised (SCADA);
- `override`: the reading carries a customer override.

A `Fence` scores a feature vector in a few microseconds of plain Python: how far the furthest
feature lies outside the band the class kept in training, in widths of that band.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Protocol

from functions.device import Telemetry
from schemas.ids import derived_id
from schemas.models import Alert, AlertKind, Cause, Severity
from state.device import DeviceState
from state.rollout import RolloutState

FEATURES_VERSION = 1
FEATURE_NAMES = (
    "power_z",
    "ramp_kw_per_s",
    "loading_pu",
    "median_dev_kw",
    "interval_log2",
    "stuck",
    "quality_bad",
    "override",
)
# The narrowest band a fence keeps around each feature: a feature constant in training (a
# flag never raised, a device that never varies) is still scored in sensible units.
MIN_WIDTHS = (1.0, 0.01, 0.05, 0.01, 0.25, 0.5, 0.5, 0.5)
STDDEV_FLOOR_KW = 0.001  # a meter's resolution: below it a flat device has no spread to speak of
Z_LIMIT = 1_000.0  # |power_z| is clipped here, so a flat device's first step stays finite

Features = tuple[float, ...]
FLEET_SCOPE = "fleet"  # the region_id of an alert about the whole fleet on one firmware


@dataclasses.dataclass(frozen=True)
class Norms:
    """What training learned of one device class that the features need live."""

    median_kw: float
    region_median_kw: Mapping[str, float]
    interval_ms: float

    def median_for(self, region_id: str | None) -> float:
        """The median power of the class in `region_id`, else of the class."""
        if region_id is None:
            return self.median_kw
        return self.region_median_kw.get(region_id, self.median_kw)


def features(state: DeviceState | None, reading: Telemetry, norms: Norms) -> Features | None:
    """The reading's features given the device's state before it; None for a duplicate (a
    reading not newer than the newest seen, which the stage ignores too)."""
    seen = None if state is None else state.last_seen_ms
    if seen is not None and reading.ts_ms <= seen:
        return None
    kw = reading.power_kw
    z = ramp = 0.0
    stuck = False
    if state is not None:
        stats, good = state.stats, state.last_good
        if stats.count > 1:
            z = (kw - stats.mean) / max(stats.stddev, STDDEV_FLOOR_KW)
            z = max(-Z_LIMIT, min(Z_LIMIT, z))
        if good is not None:
            ramp = (kw - good.power_kw) * 1_000.0 / (reading.ts_ms - good.ts_ms)
            stuck = kw == good.power_kw and kw != 0.0
    info = None if state is None else state.info
    region = None if info is None else info.region_id
    loading = 0.0 if info is None else kw / info.rated_power_kw
    interval = 0.0 if seen is None else math.log2((reading.ts_ms - seen) / norms.interval_ms)
    return (
        z,
        ramp,
        loading,
        kw - norms.median_for(region),
        interval,
        1.0 if stuck else 0.0,
        0.0 if reading.good else 1.0,
        1.0 if reading.customer_override else 0.0,
    )


class Scorer(Protocol):
    """Scores one feature vector: 0 inside what training saw, growing with the distance out."""

    @property
    def threshold(self) -> float:
        """The score above which a reading is anomalous."""
        ...

    def score(self, x: Sequence[float]) -> float:
        """The anomaly score of `x` (higher is stranger)."""
        ...

    def furthest(self, x: Sequence[float]) -> str:
        """The name of the feature that makes `x` strangest."""
        ...


@dataclasses.dataclass(frozen=True)
class Fence:
    """Per-feature bands `[low, high]` of one class and their widths; a reading is anomalous
    when a feature lies more than `threshold` widths outside its band."""

    low: tuple[float, ...]
    high: tuple[float, ...]
    width: tuple[float, ...]
    threshold: float

    def score(self, x: Sequence[float]) -> float:
        """How many band widths the furthest feature of `x` lies outside its band."""
        worst = 0.0
        for value, low, high, width in zip(x, self.low, self.high, self.width, strict=True):
            if value > high:
                worst = max(worst, (value - high) / width)
            elif value < low:
                worst = max(worst, (low - value) / width)
        return worst

    def furthest(self, x: Sequence[float]) -> str:
        """The name of the feature furthest outside its band (for the alert's text)."""
        outside = [
            max(value - high, low - value, 0.0) / width
            for value, low, high, width in zip(x, self.low, self.high, self.width, strict=True)
        ]
        return FEATURE_NAMES[outside.index(max(outside))]


@dataclasses.dataclass(frozen=True)
class ClassModel:
    """Everything live scoring needs for one device class."""

    norms: Norms
    scorer: Scorer


@dataclasses.dataclass(frozen=True)
class Verdict:
    """A scored reading: its score, whether it is anomalous (then the feature furthest out,
    for the alert's text), and its features."""

    score: float
    anomalous: bool
    features: Features
    furthest: str | None = None


def judge(state: DeviceState | None, reading: Telemetry, model: ClassModel) -> Verdict | None:
    """Score `reading` of a device in `state` (as the stage holds it before the reading);
    None for a duplicate."""
    x = features(state, reading, model.norms)
    if x is None:
        return None
    score = model.scorer.score(x)
    if score > model.scorer.threshold:
        return Verdict(score, True, x, model.scorer.furthest(x))
    return Verdict(score, False, x)


def alert(verdict: Verdict, reading: Telemetry, region_id: str | None, now_ms: int) -> Alert:
    """The `ANOMALY` alert of an anomalous reading: it informs an operator and changes no
    decision (a model only ever adds caution)."""
    return Alert(
        kind=AlertKind.ANOMALY,
        severity=Severity.WARNING,
        device_id=reading.device_id,
        region_id=region_id,
        correlation_id=reading.correlation_id,
        raised_ts_ms=now_ms,
        message=(
            f"anomalous reading of {reading.power_kw} kW: {verdict.furthest} is"
            f" {verdict.score:.1f} band widths outside what training saw"
        ),
        cause=reading.cause,
    )


# Faulty firmware rollouts ------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RolloutPolicy:
    """When a firmware version's anomaly rate makes a rollout look faulty.

    The rate is taken over the last `buckets` buckets of `bucket_ms` each; it alerts once it
    reaches `alert_rate` over at least `min_readings`, and re-arms when it falls under half that.
    """

    bucket_ms: int = 5 * 60_000
    buckets: int = 12
    alert_rate: float = 0.05
    min_readings: int = 200


@dataclasses.dataclass(frozen=True)
class RolloutStep:
    """The tracker's new state, and whether this reading raised the faulty-rollout alert."""

    state: RolloutState
    alert: bool


def _shifted(state: RolloutState, ts_ms: int, policy: RolloutPolicy) -> RolloutState:
    """`state` with its window moved on so the bucket of `ts_ms` is the newest."""
    start = ts_ms - ts_ms % policy.bucket_ms
    if start <= state.bucket_start_ms:
        return state
    gap = min((start - state.bucket_start_ms) // policy.bucket_ms, policy.buckets)
    zeros = (0,) * gap
    keep = policy.buckets - gap
    return dataclasses.replace(
        state,
        bucket_start_ms=start,
        scored=state.scored[len(state.scored) - keep :] + zeros if keep else zeros,
        anomalous=state.anomalous[len(state.anomalous) - keep :] + zeros if keep else zeros,
    )


def track_rollout(
    state: RolloutState | None,
    anomalous: int,
    ts_ms: int,
    policy: RolloutPolicy,
    scored: int = 1,
) -> RolloutStep:
    """Count `scored` readings of a firmware version at `ts_ms`, `anomalous` of them anomalous
    (keyed by version upstream); readings older than the window's newest bucket count in the
    newest bucket."""
    if state is None:
        empty = (0,) * policy.buckets
        state = RolloutState(ts_ms - ts_ms % policy.bucket_ms, empty, empty)
    state = _shifted(state, ts_ms, policy)
    state = dataclasses.replace(
        state,
        scored=(*state.scored[:-1], state.scored[-1] + scored),
        anomalous=(*state.anomalous[:-1], state.anomalous[-1] + int(anomalous)),
    )
    enough = sum(state.scored) >= policy.min_readings
    if not state.alerting and enough and state.rate >= policy.alert_rate:
        return RolloutStep(dataclasses.replace(state, alerting=True), True)
    if state.alerting and state.rate < policy.alert_rate / 2:
        state = dataclasses.replace(state, alerting=False)
    return RolloutStep(state, False)


@dataclasses.dataclass(frozen=True)
class FirmwareTally:
    """Readings of one firmware version a device-stage task scored since its last tally."""

    firmware_version: str
    ts_ms: int
    scored: int
    anomalous: int


def rollout_alert(tally: FirmwareTally, state: RolloutState, policy: RolloutPolicy) -> Alert:
    """The faulty-firmware-rollout alert: an `ANOMALY` about the whole fleet on that version."""
    minutes = policy.bucket_ms * policy.buckets // 60_000
    return Alert(
        kind=AlertKind.ANOMALY,
        severity=Severity.CRITICAL,
        region_id=FLEET_SCOPE,
        correlation_id=derived_id(f"rollout-{tally.firmware_version}-{tally.ts_ms}"),
        raised_ts_ms=tally.ts_ms,
        message=(
            f"faulty firmware rollout? {state.rate:.1%} of {sum(state.scored)} readings of"
            f" firmware {tally.firmware_version} anomalous over {minutes} min"
        ),
        cause=Cause(
            source_topic="anomaly", event_id=derived_id(f"rollout:{tally.firmware_version}")
        ),
    )
