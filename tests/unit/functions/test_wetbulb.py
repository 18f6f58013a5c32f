"""The wet-bulb interlock: Stull's formula, suspension, hysteresis, hold time, fail-open."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from functions.wetbulb import (
    RegionMode,
    RegionWeather,
    WetBulbPolicy,
    heat_index_c,
    mode,
    observe,
    stale_from_ms,
    stull_wet_bulb_c,
)
from tests.vocabulary import MINUTE_MS

pytestmark = pytest.mark.unit

POLICY = WetBulbPolicy()
T0 = 1_790_000_000_000


def test_stull_matches_the_papers_worked_example() -> None:
    """20 °C at 50 % RH is 13.7 °C wet-bulb (Stull 2011)."""
    assert stull_wet_bulb_c(20.0, 50.0) == pytest.approx(13.7, abs=0.05)


@given(st.floats(10, 50), st.floats(5, 99))
def test_wet_bulb_never_exceeds_dry_bulb_by_more_than_the_fit_error(t: float, rh: float) -> None:
    """In warm air (where the interlock matters) wet-bulb stays at or below dry-bulb (±1 °C)."""
    assert stull_wet_bulb_c(t, rh) <= t + 1.0


def test_wbgt_is_used_only_where_configured() -> None:
    """A reported WBGT replaces Stull only when the policy says so."""
    assert heat_index_c(35, 60, 31.0, WetBulbPolicy(use_wbgt=True)) == 31.0
    assert heat_index_c(35, 60, 31.0, POLICY) == stull_wet_bulb_c(35, 60)
    assert heat_index_c(35, 60, None, WetBulbPolicy(use_wbgt=True)) == stull_wet_bulb_c(35, 60)


def test_reaching_the_threshold_suspends_and_only_a_held_drop_resumes() -> None:
    """Suspend at 28 °C; resume after 30 min below 27 °C, not sooner."""
    state = observe(None, T0, 28.0, POLICY)
    assert mode(state, T0, POLICY) is RegionMode.SUSPENDED
    state = observe(state, T0 + 1 * MINUTE_MS, 26.0, POLICY)
    state = observe(state, T0 + 30 * MINUTE_MS, 26.5, POLICY)
    assert mode(state, T0 + 30 * MINUTE_MS, POLICY) is RegionMode.SUSPENDED
    state = observe(state, T0 + 31 * MINUTE_MS, 26.0, POLICY)
    assert mode(state, T0 + 31 * MINUTE_MS, POLICY) is RegionMode.NORMAL


def test_a_value_in_the_hysteresis_band_restarts_the_hold() -> None:
    """27.5 °C is below the threshold but not below threshold - hysteresis: the clock restarts."""
    state = observe(None, T0, 29.0, POLICY)
    state = observe(state, T0 + 1 * MINUTE_MS, 26.0, POLICY)
    state = observe(state, T0 + 20 * MINUTE_MS, 27.5, POLICY)
    state = observe(state, T0 + 40 * MINUTE_MS, 26.0, POLICY)
    assert mode(state, T0 + 40 * MINUTE_MS, POLICY) is RegionMode.SUSPENDED


def test_missing_or_old_weather_is_grid_follow() -> None:
    """No observation, or one older than the max age, fails open to Grid-Follow."""
    assert mode(None, T0, POLICY) is RegionMode.GRID_FOLLOW
    state = observe(None, T0, 20.0, POLICY)
    assert mode(state, T0 + 30 * MINUTE_MS, POLICY) is RegionMode.NORMAL
    assert mode(state, T0 + 30 * MINUTE_MS + 1, POLICY) is RegionMode.GRID_FOLLOW


def test_an_older_observation_changes_nothing() -> None:
    """Out-of-order weather cannot lift a suspension."""
    state = observe(None, T0, 30.0, POLICY)
    assert observe(state, T0 - MINUTE_MS, 10.0, POLICY) == state


observations = st.lists(
    st.tuples(st.integers(-5 * MINUTE_MS, 20 * MINUTE_MS), st.floats(15.0, 32.0)),
    max_size=60,
)


@given(observations)
def test_dr_never_resumes_before_a_full_hold_below_the_band(steps: list[tuple[int, float]]) -> None:
    """Property: a value at the threshold always suspends, and a suspension lifts only when every
    accepted observation of the last hold window was below threshold - hysteresis."""
    state: RegionWeather | None = None
    accepted: list[tuple[int, float]] = []
    ts = T0
    for dt, value in steps:
        ts += dt
        before = state
        state = observe(before, ts, value, POLICY)
        if state is before:  # older than the newest observation: ignored
            continue
        accepted.append((ts, value))
        if value >= POLICY.threshold_c:
            assert state.suspended
        if before is not None and before.suspended and not state.suspended:
            window = [v for t, v in accepted if t >= ts - POLICY.hold_ms]
            assert all(v < POLICY.threshold_c - POLICY.hysteresis_c for v in window)
            assert accepted[0][0] <= ts - POLICY.hold_ms


@given(st.integers(T0 - 10**9, T0 + 10**9), st.integers(0, 10**8))
def test_grid_follow_starts_exactly_at_stale_from(ts: int, max_age_ms: int) -> None:
    """Property: `mode` turns Grid-Follow at `stale_from_ms` (older than max age), not before."""
    policy = WetBulbPolicy(max_age_ms=max_age_ms)
    state = RegionWeather(False, ts, 20.0)
    at = stale_from_ms(state, policy)
    assert at - ts > max_age_ms
    assert mode(state, at - 1, policy) is RegionMode.NORMAL
    assert mode(state, at, policy) is RegionMode.GRID_FOLLOW
