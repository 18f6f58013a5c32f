"""The pipeline watch: the lag freeze with hysteresis, the silent-source watchdog, forgetting."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from functions.pipeline import (
    FORGET_AFTER,
    PIPELINE_SCOPE,
    Heartbeat,
    PipelinePolicy,
    PipelineState,
    PipelineStep,
    evaluate,
    on_heartbeat,
)
from schemas.models import AlertKind
from tests.vocabulary import SECOND_MS, examples

pytestmark = pytest.mark.unit

T0 = 1_790_000_000_000
POLICY = PipelinePolicy()  # freeze above 60 s of lag, clear below 30 s, silent after 60 s


def beat(now: int, lag_ms: int, subtask: int = 0) -> Heartbeat:
    return Heartbeat(subtask, now, now - lag_ms)


def kinds(result: PipelineStep) -> list[AlertKind]:
    return [a.kind for a in result.alerts]


def test_lag_above_the_threshold_freezes_with_one_alert() -> None:
    """61 s of lag freezes and alerts SAFETY_FREEZE once; more lag alerts nothing."""
    first = on_heartbeat(None, beat(T0, 60 * SECOND_MS), T0, POLICY)
    assert not first.state.facts.frozen  # at the threshold, not above it
    assert kinds(first) == []
    frozen = on_heartbeat(first.state, beat(T0 + 1, 61 * SECOND_MS), T0 + 1, POLICY)
    assert frozen.state.facts.frozen
    assert kinds(frozen) == [AlertKind.SAFETY_FREEZE]
    assert frozen.alerts[0].region_id == PIPELINE_SCOPE
    again = on_heartbeat(frozen.state, beat(T0 + 2, 90 * SECOND_MS), T0 + 2, POLICY)
    assert again.state.facts.frozen
    assert kinds(again) == []


def test_a_freeze_holds_until_lag_drops_below_the_clear_threshold() -> None:
    """Hysteresis: 45 s and exactly 30 s keep the freeze; 29.999 s clears it, with one alert."""
    state = on_heartbeat(None, beat(T0, 70 * SECOND_MS), T0, POLICY).state
    for i, lag in enumerate([45 * SECOND_MS, 30 * SECOND_MS], start=1):
        result = on_heartbeat(state, beat(T0 + i, lag), T0 + i, POLICY)
        assert result.state.facts.frozen
        assert kinds(result) == []
        state = result.state
    cleared = on_heartbeat(state, beat(T0 + 9, 30 * SECOND_MS - 1), T0 + 9, POLICY)
    assert not cleared.state.facts.frozen
    assert kinds(cleared) == [AlertKind.SAFETY_FREEZE_CLEARED]


def test_replay_never_freezes() -> None:
    """With `freeze_enabled=False` any lag leaves the pipeline unfrozen and silent on alerts."""
    replay = PipelinePolicy(freeze_enabled=False)
    state: PipelineState | None = None
    for i, lag in enumerate([10**9, 61 * SECOND_MS, 10**12]):
        result = on_heartbeat(state, beat(T0 + i, lag), T0 + i, replay)
        assert not result.state.facts.frozen
        assert kinds(result) == []
        state = result.state


def test_no_heartbeat_for_longer_than_silence_is_grid_follow_until_the_next_one() -> None:
    """A tick past `silence_ms` alerts GRID_FOLLOW once; the next heartbeat clears it."""
    state = on_heartbeat(None, beat(T0, 0), T0, POLICY).state
    quiet = evaluate(state, T0 + POLICY.silence_ms, POLICY)
    assert not quiet.state.facts.source_silent
    assert kinds(quiet) == []
    silent = evaluate(quiet.state, T0 + POLICY.silence_ms + 1, POLICY)
    assert silent.state.facts.source_silent
    assert kinds(silent) == [AlertKind.GRID_FOLLOW]
    still = evaluate(silent.state, T0 + 10 * POLICY.silence_ms, POLICY)
    assert kinds(still) == []
    later = T0 + 11 * POLICY.silence_ms
    back = on_heartbeat(still.state, beat(later, 0), later, POLICY)
    assert not back.state.facts.source_silent
    assert kinds(back) == [AlertKind.GRID_FOLLOW_CLEARED]


def test_a_restore_counts_silence_from_its_start_but_never_clears_grid_follow() -> None:
    """Restored (`awake_ms`) long after the last heartbeat: a watch that was reporting is not
    silent until a silence period after the restore; one already silent stays silent."""
    state = on_heartbeat(None, beat(T0, 0), T0, POLICY).state
    restored = T0 + 10 * POLICY.silence_ms
    fresh = evaluate(state, restored + POLICY.silence_ms, POLICY, awake_ms=restored)
    assert (fresh.state.facts.source_silent, kinds(fresh)) == (False, [])
    late = evaluate(fresh.state, restored + POLICY.silence_ms + 1, POLICY, awake_ms=restored)
    assert kinds(late) == [AlertKind.GRID_FOLLOW]

    silent = evaluate(state, T0 + POLICY.silence_ms + 1, POLICY).state
    kept = evaluate(silent, restored, POLICY, awake_ms=restored)
    assert (kept.state.facts.source_silent, kinds(kept)) == (True, [])


def test_a_subtask_gone_for_long_is_forgotten() -> None:
    """A subtask silent for more than FORGET_AFTER silence periods drops out of the beats."""
    horizon = FORGET_AFTER * POLICY.silence_ms
    state = on_heartbeat(None, beat(T0, 0, subtask=0), T0, POLICY).state
    kept = on_heartbeat(state, beat(T0 + horizon, 0, subtask=1), T0 + horizon, POLICY).state
    assert sorted(b.subtask for b in kept.beats) == [0, 1]
    gone = on_heartbeat(state, beat(T0 + horizon + 1, 0, subtask=1), T0 + horizon + 1, POLICY)
    assert [b.subtask for b in gone.state.beats] == [1]


def test_a_subtask_keeps_only_its_newest_heartbeat() -> None:
    """Each subtask has one entry; an idle subtask's old lag no longer counts."""
    state = on_heartbeat(None, beat(T0, 70 * SECOND_MS, subtask=0), T0, POLICY).state
    state = on_heartbeat(state, beat(T0 + 1, 0, subtask=1), T0 + 1, POLICY).state
    state = on_heartbeat(state, beat(T0 + 2, 0, subtask=0), T0 + 2, POLICY).state
    assert sorted(b.subtask for b in state.beats) == [0, 1]
    assert not evaluate(state, T0 + 3, POLICY).state.facts.frozen


ops = st.lists(
    st.one_of(
        st.tuples(
            st.just("beat"),
            st.integers(0, 3),
            st.integers(0, 90 * SECOND_MS),  # time since the previous op
            st.integers(0, 120 * SECOND_MS),  # lag
        ),
        st.tuples(st.just("tick"), st.integers(0, 3), st.integers(0, 90 * SECOND_MS)),
    ),
    max_size=40,
)


@settings(max_examples=examples(200))
@given(ops, st.booleans())
def test_alerts_alternate_and_agree_with_the_facts(script: list[tuple], enabled: bool) -> None:
    """Property: per fact, alerts alternate raised/cleared (never the same kind twice in a row),
    start with the raise, and each alert's step leaves the facts it names."""
    policy = PipelinePolicy(freeze_enabled=enabled)
    state: PipelineState | None = None
    now = T0
    seen: dict[str, list[AlertKind]] = {"freeze": [], "silent": []}
    for op, subtask, dt, *rest in script:
        now += dt
        if op == "beat":
            result = on_heartbeat(state, beat(now, rest[0], subtask), now, policy)
        else:
            result = evaluate(state or PipelineState(), now, policy)
        facts = result.state.facts
        for alert in result.alerts:
            if alert.kind in {AlertKind.SAFETY_FREEZE, AlertKind.SAFETY_FREEZE_CLEARED}:
                seen["freeze"].append(alert.kind)
                assert facts.frozen == (alert.kind is AlertKind.SAFETY_FREEZE)
            else:
                seen["silent"].append(alert.kind)
                assert facts.source_silent == (alert.kind is AlertKind.GRID_FOLLOW)
        assert enabled or not facts.frozen
        state = result.state
    for fact, (raised, cleared) in {
        "freeze": (AlertKind.SAFETY_FREEZE, AlertKind.SAFETY_FREEZE_CLEARED),
        "silent": (AlertKind.GRID_FOLLOW, AlertKind.GRID_FOLLOW_CLEARED),
    }.items():
        assert seen[fact] == [raised, cleared] * (len(seen[fact]) // 2) + (
            [raised] if len(seen[fact]) % 2 else []
        )
