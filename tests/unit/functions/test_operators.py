"""The TelemetryWatch adapter driven through the harness: state, timers and rows, no JVM."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyflink import java_gateway

from functions import telemetry_watch as watch
from functions.operators import TelemetryWatch
from jobs.io import json_rows
from state import telemetry_watch as codec
from tests.harness import Harness
from tests.vocabulary import DEVICE, HOUR_MS, MINUTE_MS, input_row

pytestmark = pytest.mark.unit

SILENCE = 15 * MINUTE_MS
RETENTION = HOUR_MS
STATE = "telemetry-watch"
TIMER = "timer"


def _harness() -> Harness:
    return Harness(TelemetryWatch(SILENCE, RETENTION)).open()


@pytest.fixture
def harness() -> Harness:
    return _harness()


def _send(h: Harness, ts_ms: int, device: str = DEVICE, **row: Any) -> list[dict[str, Any]]:
    return json_rows(h.process(device, input_row(device, ts_ms, **row), ts_ms))


def _advance(h: Harness, ts_ms: int) -> list[dict[str, Any]]:
    return json_rows(h.advance_watermark(ts_ms))


def _alerts(rows: list[dict[str, Any]]) -> list[str]:
    return [r["alert"] for r in rows if r["topic"] == watch.ALERT_TOPIC]


def _state(h: Harness, device: str = DEVICE) -> codec.WatchState | None:
    raw = h.state_bytes(device, STATE)
    return None if raw is None else codec.decode(raw)


def _assert_forgotten_after_retention(h: Harness) -> None:
    """Past every deadline plus retention nothing is kept: no state, no timer."""
    _advance(h, max(h.watermark, 0) + 100 * HOUR_MS)
    assert h.state_entries() == 0
    assert h.pending_timers() == []


def test_silent_device_raises_exactly_one_loss_alert(harness: Harness) -> None:
    """One reading, then silence: one TELEMETRY_LOSS at the deadline and none after."""
    _send(harness, 0)

    assert _alerts(_advance(harness, SILENCE - 1)) == []
    [loss] = [r for r in _advance(harness, SILENCE) if r["topic"] == watch.ALERT_TOPIC]
    assert loss == {
        "topic": watch.ALERT_TOPIC,
        "alert": "TELEMETRY_LOSS",
        "device_id": DEVICE,
        "ts_ms": SILENCE,
        "correlation_id": f"{DEVICE}-silent-0",
    }
    assert _alerts(_advance(harness, SILENCE + RETENTION - 1)) == []
    assert _alerts(_advance(harness, SILENCE + RETENTION)) == []
    assert harness.state_entries() == 0
    assert harness.pending_timers() == []


def test_device_reporting_within_the_silence_raises_no_alert(harness: Harness) -> None:
    """Readings closer together than the silence period never alert."""
    for minute in range(0, 180, 10):
        _send(harness, minute * MINUTE_MS)
        assert _alerts(_advance(harness, minute * MINUTE_MS)) == []

    assert _alerts(_advance(harness, 170 * MINUTE_MS + SILENCE - 1)) == []
    _assert_forgotten_after_retention(harness)


def test_lost_device_that_reports_again_raises_one_restored_alert(harness: Harness) -> None:
    """A lost device's next reading restores it with one alert; later silence alerts again."""
    _send(harness, 0)
    assert _alerts(_advance(harness, SILENCE)) == ["TELEMETRY_LOSS"]
    back = SILENCE + 5 * MINUTE_MS

    rows = _send(harness, back, correlation_id="back-again")

    assert _alerts(rows) == ["TELEMETRY_RESTORED"]
    assert [r["correlation_id"] for r in rows] == ["back-again", "back-again"]
    assert harness.pending_timers(DEVICE) == [back + SILENCE]
    assert _alerts(_advance(harness, back + SILENCE)) == ["TELEMETRY_LOSS"]
    _assert_forgotten_after_retention(harness)


def test_replayed_reading_after_a_loss_raises_no_second_loss(harness: Harness) -> None:
    """A duplicate of the last reading, arriving after the loss, neither restores nor re-alerts."""
    _send(harness, 0, offset=1)
    assert _alerts(_advance(harness, SILENCE)) == ["TELEMETRY_LOSS"]

    replay = _send(harness, 0, offset=1)
    again = _advance(harness, SILENCE + MINUTE_MS)

    assert _alerts(replay) + _alerts(again) == []
    _assert_forgotten_after_retention(harness)


def test_readings_move_the_timer_instead_of_adding_one(harness: Harness) -> None:
    """Each newer reading moves the key's one timer to the new deadline."""
    for minute in (0, 3, 7, 12):
        _send(harness, minute * MINUTE_MS)
        assert harness.pending_timers(DEVICE) == [minute * MINUTE_MS + SILENCE]
        assert harness.state_value(DEVICE, TIMER) == minute * MINUTE_MS + SILENCE

    _assert_forgotten_after_retention(harness)


def test_out_of_order_reading_leaves_the_timer_at_the_newest_deadline(harness: Harness) -> None:
    """An older reading is counted but the timer stays where the newest reading put it."""
    _send(harness, 10 * MINUTE_MS)
    rows = _send(harness, 2 * MINUTE_MS)

    assert [r["seq"] for r in rows] == [2]
    assert harness.pending_timers(DEVICE) == [10 * MINUTE_MS + SILENCE]
    assert _state(harness) == codec.WatchState(count=2, last_seen_ms=10 * MINUTE_MS, lost=False)
    _assert_forgotten_after_retention(harness)


def test_device_is_forgotten_after_the_retention_period(harness: Harness) -> None:
    """Retention after the loss, the device's state and timer are gone; it restarts at seq 1."""
    _send(harness, 0)
    _send(harness, MINUTE_MS)
    _advance(harness, MINUTE_MS + SILENCE + RETENTION - 1)
    assert harness.state_entries() == 2  # watch state and held timer

    _advance(harness, MINUTE_MS + SILENCE + RETENTION)

    assert harness.state_entries() == 0
    assert harness.pending_timers() == []
    later = MINUTE_MS + SILENCE + RETENTION + HOUR_MS
    assert [r["seq"] for r in _send(harness, later)] == [1]
    _assert_forgotten_after_retention(harness)


def test_devices_are_watched_independently(harness: Harness) -> None:
    """One device's silence alerts for that device only."""
    _send(harness, 0, device="quiet")
    _send(harness, 0, device="chatty")
    _send(harness, 10 * MINUTE_MS, device="chatty")

    rows = _advance(harness, SILENCE)

    assert [(r["alert"], r["device_id"]) for r in rows] == [("TELEMETRY_LOSS", "quiet")]
    assert harness.pending_timers("chatty") == [10 * MINUTE_MS + SILENCE]
    assert harness.pending_timers("quiet") == [SILENCE + RETENTION]
    _assert_forgotten_after_retention(harness)


def test_state_is_stored_as_small_versioned_codec_bytes(harness: Harness) -> None:
    """The keyed state holds the suite's codec bytes, version first, well under 256 bytes."""
    _send(harness, 42)

    raw = harness.state_bytes(DEVICE, STATE)

    assert raw is not None
    assert raw[0] == codec.VERSION
    assert len(raw) <= 256
    assert codec.decode(raw) == codec.WatchState(count=1, last_seen_ms=42, lost=False)
    _assert_forgotten_after_retention(harness)


def test_output_rows_carry_topic_device_key_json_value_and_correlation_id(
    harness: Harness,
) -> None:
    """Each output row is (topic, key bytes, compact JSON bytes, correlation id)."""
    [row] = harness.process(DEVICE, input_row(DEVICE, 7, offset=3, partition=1), 7)

    assert row[0] == watch.AUDIT_TOPIC
    assert row[1] == DEVICE.encode()
    assert json.loads(row[2]) == {
        "correlation_id": "scada.telemetry-1-3",
        "device_id": DEVICE,
        "seq": 1,
        "source": "scada.telemetry",
        "ts_ms": 7,
    }
    assert row[3] == "scada.telemetry-1-3"
    _assert_forgotten_after_retention(harness)


def test_adapter_runs_without_starting_a_jvm(harness: Harness) -> None:
    """Building, opening and driving the adapter never launches the Py4J gateway."""
    _send(harness, 0)
    _advance(harness, SILENCE)

    assert java_gateway._gateway is None
    _assert_forgotten_after_retention(harness)


# Property: random readings (in and out of order, duplicated timestamps, late) and watermarks.

_DEVICES = ("a", "b")
_ops = st.lists(
    st.one_of(
        st.tuples(st.just("read"), st.sampled_from(_DEVICES), st.integers(-40, 20)),
        st.tuples(st.just("again"), st.sampled_from(_DEVICES), st.integers(-10, 0)),
        st.tuples(st.just("watermark"), st.just(""), st.integers(0, 40)),
    ),
    max_size=40,
)


class _Episodes:
    """What the alerts must respect, per device, since its state was (re)created."""

    def __init__(self) -> None:
        self.newest: dict[str, int] = {}  # newest reading time seen
        self.lost_at: dict[str, set[int]] = {}  # newest-reading times already alerted
        self.last_alert: dict[str, str] = {}

    def forget(self, device: str) -> None:
        self.newest.pop(device, None)
        self.lost_at.pop(device, None)

    def read(self, device: str, ts_ms: int) -> None:
        self.newest[device] = max(ts_ms, self.newest.get(device, ts_ms))

    def check(self, alert: dict[str, Any], watermark: int) -> None:
        device, kind = alert["device_id"], alert["alert"]
        if kind == "TELEMETRY_RESTORED":
            assert self.last_alert.get(device) == "TELEMETRY_LOSS", "RESTORED without a LOSS"
        else:
            newest = self.newest[device]
            assert alert["ts_ms"] - newest >= SILENCE, "LOSS while readings kept arriving"
            assert alert["ts_ms"] <= watermark, "LOSS before the watermark reached it"
            assert newest not in self.lost_at.setdefault(device, set()), "second LOSS, same silence"
            self.lost_at[device].add(newest)
        self.last_alert[device] = kind


def _check_timers(h: Harness, episodes: _Episodes, fired: bool) -> None:
    """Living state holds exactly its one recorded timer (none due once fired); else none."""
    for device in _DEVICES:
        held = h.state_value(device, TIMER)
        if _state(h, device) is None:
            assert held is None
            assert h.pending_timers(device) == []
            episodes.forget(device)
        else:
            assert held is not None
            assert not fired or held > h.watermark
            assert h.pending_timers(device) == [held]


@settings(deadline=None, max_examples=300)
@given(ops=_ops)
def test_alerts_respect_silence_episodes_and_the_held_timer_is_the_steps(
    ops: list[tuple[str, str, int]],
) -> None:
    """Any readings and watermarks: one LOSS per silence, RESTORED after LOSS, the step's timer."""
    h, episodes, watermark = _harness(), _Episodes(), 0
    h.advance_watermark(watermark)
    for kind, device, minutes in ops:
        if kind != "watermark":
            # "read" is relative to the watermark, "again" repeats or precedes the newest reading.
            anchor = episodes.newest.get(device, watermark) if kind == "again" else watermark
            ts = max(0, anchor + minutes * MINUTE_MS)
            before = _state(h, device)
            expected = watch.on_reading(before, watch.Reading(device, ts, "", ""), SILENCE)
            episodes.read(device, ts)
            rows = _send(h, ts, device)
            assert _state(h, device) == expected.state
            assert h.pending_timers(device) == [expected.timer_ms]
            assert h.state_value(device, TIMER) == expected.timer_ms
        else:
            watermark += minutes * MINUTE_MS
            rows = _advance(h, watermark)
        for row in rows:
            if row["topic"] == watch.ALERT_TOPIC:
                episodes.check(row, watermark)
        _check_timers(h, episodes, fired=kind == "watermark")

    for row in _advance(h, watermark + 100 * HOUR_MS):
        episodes.check(row, watermark + 100 * HOUR_MS)
    assert h.state_entries() == 0
    assert h.pending_timers() == []
