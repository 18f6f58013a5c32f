"""The anomaly features, the fences that score them, and the faulty-rollout tracker."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from functions import anomaly
from functions.anomaly import Fence, Norms, RolloutPolicy, features, track_rollout
from functions.device import Telemetry
from schemas.models import Cause, DeviceClass, PriorityLevel
from state.device import DeviceInfo, DeviceState, LastGood, PowerStats
from state.rollout import RolloutState
from tests.vocabulary import MINUTE_MS, SECOND_MS, examples

pytestmark = pytest.mark.unit

T0 = 1_790_000_000_000
CAUSE = Cause(source_topic="test", source_partition=0, source_offset=0)
NORMS = Norms(median_kw=2.5, region_median_kw={"north": 3.0}, interval_ms=60_000.0)
INFO = DeviceInfo(DeviceClass.THERMOSTAT, PriorityLevel.STANDARD, "north", ("p1",), 4.0)


def reading(ts_ms: int, kw: float, *, good: bool = True, override: bool = False) -> Telemetry:
    return Telemetry("dev-1", ts_ms, kw, kw > 0, good, override, "c-1", CAUSE)


def warm_state() -> DeviceState:
    """Two good readings, 2 kW then 4 kW (mean 3, sample stddev sqrt 2), the last at T0."""
    return DeviceState(
        info=INFO,
        info_ts_ms=T0 - MINUTE_MS,
        last_seen_ms=T0,
        last_good=LastGood(T0, 4.0, True),
        stats=PowerStats().add(2.0).add(4.0),
    )


def named(x: anomaly.Features | None) -> dict[str, float]:
    assert x is not None
    return dict(zip(anomaly.FEATURE_NAMES, x, strict=True))


def test_features_of_a_warm_device_are_the_hand_computed_ones() -> None:
    """5 kW 30 s after a good 4 kW reading, on a device whose mean is 3 kW and stddev sqrt 2."""
    got = named(features(warm_state(), reading(T0 + 30 * SECOND_MS, 5.0), NORMS))

    assert got == pytest.approx(
        {
            "power_z": 2.0 / math.sqrt(2.0),
            "ramp_kw_per_s": 1.0 / 30.0,
            "loading_pu": 5.0 / 4.0,
            "median_dev_kw": 5.0 - 3.0,  # the class's median in the device's region
            "interval_log2": -1.0,  # twice as often as the nominal minute
            "stuck": 0.0,
            "quality_bad": 0.0,
            "override": 0.0,
        }
    )


def test_first_reading_has_only_the_median_and_flags() -> None:
    """A device never seen: no spread, ramp or interval yet; the class median (no region)."""
    got = named(features(None, reading(T0, 3.5, good=False, override=True), NORMS))

    assert got == {
        "power_z": 0.0,
        "ramp_kw_per_s": 0.0,
        "loading_pu": 0.0,
        "median_dev_kw": 1.0,
        "interval_log2": 0.0,
        "stuck": 0.0,
        "quality_bad": 1.0,
        "override": 1.0,
    }


def test_the_same_non_zero_power_again_is_stuck_and_zero_again_is_not() -> None:
    """A frozen value repeats the last good reading to the bit; an idle device reads 0 often."""
    stuck = named(features(warm_state(), reading(T0 + MINUTE_MS, 4.0), NORMS))
    idle = DeviceState(last_seen_ms=T0, last_good=LastGood(T0, 0.0, False))
    off = named(features(idle, reading(T0 + MINUTE_MS, 0.0), NORMS))

    assert (stuck["stuck"], off["stuck"]) == (1.0, 0.0)


def test_a_reading_not_newer_than_the_newest_seen_has_no_features() -> None:
    """The stage ignores such a reading (a duplicate); so does scoring."""
    assert features(warm_state(), reading(T0, 9.0), NORMS) is None
    assert features(warm_state(), reading(T0 - 1, 9.0), NORMS) is None


def test_a_flat_device_that_moves_gets_a_large_but_finite_z() -> None:
    """A device that always read 2 kW has no spread: its first step is clipped, not infinite."""
    flat = DeviceState(
        last_seen_ms=T0, last_good=LastGood(T0, 2.0, True), stats=PowerStats(50, 2.0, 0.0)
    )

    got = named(features(flat, reading(T0 + MINUTE_MS, 3.0), NORMS))

    assert got["power_z"] == anomaly.Z_LIMIT


powers = st.floats(-30_000.0, 30_000.0, allow_nan=False)


@settings(max_examples=examples(300), deadline=None)
@given(
    samples=st.lists(powers, max_size=20),
    last=st.none() | st.tuples(st.integers(1, 10 * MINUTE_MS), powers),
    gap_ms=st.integers(1, 60 * MINUTE_MS),
    kw=powers,
    rated=st.floats(0.01, 100_000.0),
    good=st.booleans(),
)
def test_features_are_always_finite(
    samples: list[float],
    last: tuple[int, float] | None,
    gap_ms: int,
    kw: float,
    rated: float,
    good: bool,
) -> None:
    """Whatever the device's history (none included), every feature is a finite number."""
    stats = PowerStats()
    for sample in samples:
        stats = stats.add(sample)
    good_reading = None if last is None else LastGood(T0 - last[0], last[1], True)
    info = DeviceInfo(DeviceClass.FEEDER_BREAKER, PriorityLevel.CRITICAL, "south", (), rated)
    state = DeviceState(info=info, last_seen_ms=None if last is None else T0 - last[0],
                        last_good=good_reading, stats=stats)  # fmt: skip

    x = features(state if samples or last else None, reading(T0 + gap_ms, kw, good=good), NORMS)

    assert x is not None
    assert all(math.isfinite(v) for v in x)


def test_fence_scores_the_furthest_feature_in_band_widths() -> None:
    """Inside every band scores 0; outside, the worst feature's distance over its band width."""
    n = len(anomaly.FEATURE_NAMES)
    fence = Fence(
        low=(0.0,) * n, high=(1.0,) * n, width=(1.0, 2.0) + (1.0,) * (n - 2), threshold=1.0
    )
    inside = (0.5,) * n
    outside = (0.5, -5.0, 2.5) + (0.5,) * (n - 3)

    assert fence.score(inside) == 0.0
    assert fence.score(outside) == 2.5  # ramp: 5 below over a width of 2 beats loading's 1.5
    assert fence.furthest(outside) == "ramp_kw_per_s"


def test_judge_flags_a_reading_beyond_the_threshold() -> None:
    """A verdict is anomalous only when the score passes the class's threshold."""
    n = len(anomaly.FEATURE_NAMES)
    ramp = anomaly.FEATURE_NAMES.index("ramp_kw_per_s")
    low = tuple(-0.1 if i == ramp else -1e9 for i in range(n))
    fence = Fence(low, tuple(-v for v in low), width=(1.0,) * n, threshold=1.0)
    model = anomaly.ClassModel(NORMS, fence)

    calm = anomaly.judge(warm_state(), reading(T0 + MINUTE_MS, 4.5), model)
    jump = anomaly.judge(warm_state(), reading(T0 + SECOND_MS, 20.0), model)

    assert calm is not None
    assert not calm.anomalous
    assert jump is not None
    assert jump.anomalous
    assert jump.furthest == "ramp_kw_per_s"
    assert jump.score == pytest.approx(16.0 - 0.1)  # 16 kW/s over a band up to 0.1


POLICY = RolloutPolicy(bucket_ms=MINUTE_MS, buckets=5, alert_rate=0.1, min_readings=20)


def run(readings: list[tuple[int, bool]]) -> tuple[RolloutState | None, list[int]]:
    """Track `(ts_ms, anomalous)` readings; the times that raised the alert."""
    state, alerts = None, []
    for ts, bad in readings:
        result = track_rollout(state, bad, ts, POLICY)
        state = result.state
        if result.alert:
            alerts.append(ts)
    return state, alerts


def test_a_rollout_alert_needs_enough_readings() -> None:
    """Every reading anomalous, but fewer than `min_readings` of them: no alert yet."""
    _, alerts = run([(T0 + i * SECOND_MS, True) for i in range(19)])

    assert alerts == []


def test_a_rising_anomaly_rate_alerts_once_then_rearms_when_it_falls() -> None:
    """Healthy, then one in five anomalous: one alert; the window moves on and clears it."""
    healthy = [(T0 + i * SECOND_MS, False) for i in range(60)]
    faulty = [(T0 + (60 + i) * SECOND_MS, i % 5 == 0) for i in range(60)]
    quiet = [(T0 + 10 * MINUTE_MS + i * SECOND_MS, False) for i in range(10)]

    state, alerts = run(healthy + faulty + quiet)

    assert len(alerts) == 1
    assert T0 + 60 * SECOND_MS <= alerts[0] < T0 + 120 * SECOND_MS
    assert state is not None
    assert not state.alerting
    assert state.rate == 0.0


@settings(max_examples=examples(200), deadline=None)
@given(st.lists(st.tuples(st.integers(0, 20 * MINUTE_MS), st.booleans()), min_size=1, max_size=80))
def test_the_window_counts_exactly_the_readings_of_its_buckets(
    steps: list[tuple[int, bool]],
) -> None:
    """In time order, the window holds the readings of the newest `buckets` buckets, no other."""
    steps.sort()
    state, _ = run([(T0 + t, bad) for t, bad in steps])

    assert state is not None
    newest = (T0 + steps[-1][0]) // MINUTE_MS
    kept = [bad for t, bad in steps if newest - (T0 + t) // MINUTE_MS < POLICY.buckets]
    assert (sum(state.scored), sum(state.anomalous)) == (len(kept), sum(kept))


@settings(max_examples=examples(200), deadline=None)
@given(st.lists(st.tuples(st.integers(0, 20 * MINUTE_MS), st.booleans()), min_size=1, max_size=60))
def test_a_tally_counts_as_its_readings_one_by_one(steps: list[tuple[int, bool]]) -> None:
    """Readings told in tallies (the device stage's batches, each at its last reading's time)
    leave the window as they do told one at a time, when each tally's readings share a bucket."""
    steps.sort()
    one_by_one, _ = run([(T0 + t, bad) for t, bad in steps])
    state = None
    for _, group in itertools.groupby(steps, key=lambda step: (T0 + step[0]) // MINUTE_MS):
        batch = list(group)
        ts = T0 + batch[-1][0]
        state = track_rollout(state, sum(b for _, b in batch), ts, POLICY, len(batch)).state

    assert state is not None
    assert one_by_one is not None
    assert (state.scored, state.anomalous) == (one_by_one.scored, one_by_one.anomalous)


def test_a_rollout_alert_names_a_firmware_label_with_spaces() -> None:
    """A firmware label may hold spaces (the models allow them): the alert's ids, made from
    it, are still valid ids (they once failed the rollout stage, every restart)."""
    faulty = [(T0 + i * SECOND_MS, True) for i in range(20)]
    state, _ = run(faulty)
    assert state is not None
    tally = anomaly.FirmwareTally("4.2.1 beta", T0 + 20 * SECOND_MS, 20, 20)

    alert = anomaly.rollout_alert(tally, state, POLICY)

    assert " " not in alert.correlation_id
    assert "4.2.1 beta" in alert.message
