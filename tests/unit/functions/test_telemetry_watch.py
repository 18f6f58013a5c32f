"""The pure telemetry watch: readings, silence deadlines, loss and restore, forgetting."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from functions.telemetry_watch import (
    ALERT_TOPIC,
    AUDIT_TOPIC,
    Step,
    on_reading,
    on_timer,
)
from state.telemetry_watch import WatchState
from tests.vocabulary import DEVICE, HOUR_MS, MINUTE_MS, reading

pytestmark = pytest.mark.unit

SILENCE = 15 * MINUTE_MS
RETENTION = 24 * HOUR_MS


def _alerts(step: Step) -> list[str]:
    return [e.payload["alert"] for e in step.emits if e.topic == ALERT_TOPIC]


def _silent(state: WatchState | None, at_ms: int) -> Step:
    return on_timer(state, DEVICE, at_ms, SILENCE, RETENTION)


def test_first_reading_counts_audits_and_holds_the_silence_deadline() -> None:
    """A new device is counted, audited, and gets a timer at its silence deadline."""
    step = on_reading(None, reading(ts_ms=1_000, correlation_id="c-1"), SILENCE)

    assert step.state == WatchState(count=1, last_seen_ms=1_000, lost=False)
    assert step.timer_ms == 1_000 + SILENCE
    [audit] = step.emits
    assert audit.topic == AUDIT_TOPIC
    assert audit.key == DEVICE
    assert audit.correlation_id == "c-1"
    assert audit.payload == {
        "device_id": DEVICE,
        "seq": 1,
        "ts_ms": 1_000,
        "source": "scada.telemetry",
        "correlation_id": "c-1",
    }


def test_newer_reading_pushes_the_deadline_out() -> None:
    """A reading newer than the last one moves the deadline to its own time plus the silence."""
    state = WatchState(count=3, last_seen_ms=0, lost=False)

    step = on_reading(state, reading(ts_ms=5 * MINUTE_MS), SILENCE)

    assert step.state == WatchState(count=4, last_seen_ms=5 * MINUTE_MS, lost=False)
    assert step.timer_ms == 5 * MINUTE_MS + SILENCE
    assert _alerts(step) == []


def test_out_of_order_reading_is_counted_but_does_not_pull_the_deadline_back() -> None:
    """A late reading counts, yet the deadline stays at the newest reading's."""
    state = WatchState(count=1, last_seen_ms=10 * MINUTE_MS, lost=False)

    step = on_reading(state, reading(ts_ms=2 * MINUTE_MS), SILENCE)

    assert step.state == WatchState(count=2, last_seen_ms=10 * MINUTE_MS, lost=False)
    assert step.timer_ms == 10 * MINUTE_MS + SILENCE


def test_timer_before_the_deadline_moves_to_the_deadline_without_alert() -> None:
    """A timer that fires early only re-arms at the real deadline."""
    state = WatchState(count=1, last_seen_ms=0, lost=False)

    step = _silent(state, SILENCE - 1)

    assert step == Step(state, (), SILENCE)


def test_silent_device_raises_exactly_one_loss_alert() -> None:
    """At the deadline the device is marked lost with one alert; later timers add none."""
    state = WatchState(count=1, last_seen_ms=0, lost=False)

    lost = _silent(state, SILENCE)
    again = _silent(lost.state, SILENCE + HOUR_MS)

    assert lost.state == WatchState(count=1, last_seen_ms=0, lost=True)
    [alert] = lost.emits
    assert alert.topic == ALERT_TOPIC
    assert alert.payload == {
        "alert": "TELEMETRY_LOSS",
        "device_id": DEVICE,
        "ts_ms": SILENCE,
        "correlation_id": f"{DEVICE}-silent-0",
    }
    assert lost.timer_ms == SILENCE + RETENTION
    assert again == Step(lost.state, (), SILENCE + RETENTION)


def test_lost_device_that_reports_again_raises_one_restored_alert() -> None:
    """A new reading from a lost device restores it, alerts once, and re-arms the watch."""
    state = WatchState(count=1, last_seen_ms=0, lost=True)
    later = SILENCE + 5 * MINUTE_MS

    step = on_reading(state, reading(ts_ms=later, correlation_id="c-back"), SILENCE)

    assert step.state == WatchState(count=2, last_seen_ms=later, lost=False)
    assert step.timer_ms == later + SILENCE
    assert _alerts(step) == ["TELEMETRY_RESTORED"]
    [restored] = [e for e in step.emits if e.topic == ALERT_TOPIC]
    assert restored.correlation_id == "c-back"


def test_stale_reading_does_not_restore_a_lost_device() -> None:
    """A reading no newer than the last one seen (a replay) is no sign of life after a loss."""
    lost = WatchState(count=1, last_seen_ms=0, lost=True)

    step = on_reading(lost, reading(ts_ms=0), SILENCE)

    assert _alerts(step) == []
    assert step.state is not None
    assert step.state.lost


def test_device_is_forgotten_after_the_retention_period() -> None:
    """A lost device's state is cleared, with no timer, once retention has passed."""
    lost = WatchState(count=1, last_seen_ms=0, lost=True)

    assert _silent(lost, SILENCE + RETENTION - 1) == Step(lost, (), SILENCE + RETENTION)
    assert _silent(lost, SILENCE + RETENTION) == Step(None)


def test_timer_for_a_forgotten_device_does_nothing() -> None:
    """A timer with no state left keeps nothing and emits nothing."""
    assert _silent(None, SILENCE) == Step(None)


_states = st.builds(
    WatchState,
    count=st.integers(0, 10_000),
    last_seen_ms=st.integers(0, 1_000 * HOUR_MS),
    lost=st.booleans(),
)
_times = st.integers(0, 1_100 * HOUR_MS)


@given(state=st.none() | _states, ts=_times)
def test_a_reading_keeps_the_device_watched(state: WatchState | None, ts: int) -> None:
    """Any reading is counted and keeps a timer; a sign of life re-arms the silence deadline."""
    step = on_reading(state, reading(ts_ms=ts), SILENCE)

    assert step.state is not None
    assert step.timer_ms is not None
    assert step.state.count == (state.count if state else 0) + 1
    assert step.state.last_seen_ms == max(ts, state.last_seen_ms if state else ts)
    if state is None or not state.lost or ts > state.last_seen_ms:
        assert not step.state.lost
        assert step.timer_ms == step.state.last_seen_ms + SILENCE


@given(state=st.none() | _states, fired=_times)
def test_kept_state_always_holds_a_timer_and_cleared_state_none(
    state: WatchState | None, fired: int
) -> None:
    """A timer step never leaks: kept state holds a timer, cleared state holds none."""
    step = _silent(state, fired)

    if step.state is None:
        assert step.timer_ms is None
        assert step.emits == ()
    else:
        assert step.timer_ms is not None
    assert len(_alerts(step)) <= 1
    assert "TELEMETRY_RESTORED" not in _alerts(step)
