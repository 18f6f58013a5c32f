"""The KeyedProcessFunction harness itself: keyed state, timer order, watermarks."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from pyflink.common import Types
from pyflink.datastream import KeyedProcessFunction, TimeDomain
from pyflink.datastream.state import (
    ListStateDescriptor,
    MapStateDescriptor,
    ValueStateDescriptor,
)

from tests.harness import Harness

pytestmark = pytest.mark.unit


class _Recorder(KeyedProcessFunction):  # type: ignore[misc]
    """Keeps a value, a list and a map per key; a value `("timer", t)` sets a timer at t."""

    def open(self, runtime_context: Any) -> None:
        self.last = runtime_context.get_state(ValueStateDescriptor("last", Types.STRING()))
        self.seen = runtime_context.get_list_state(ListStateDescriptor("seen", Types.STRING()))
        self.tally = runtime_context.get_map_state(
            MapStateDescriptor("tally", Types.STRING(), Types.INT())
        )

    def process_element(self, value: Any, ctx: Any) -> Iterator[Any]:
        if isinstance(value, tuple):
            kind, ts = value
            if kind == "timer":
                ctx.timer_service().register_event_time_timer(ts)
            elif kind == "delete":
                ctx.timer_service().delete_event_time_timer(ts)
            else:
                ctx.timer_service().register_processing_time_timer(ts)
            return
        self.last.update(value)
        self.seen.add(value)
        self.tally.put(value, (self.tally.get(value) or 0) + 1)
        yield (ctx.get_current_key(), value)

    def on_timer(self, timestamp: int, ctx: Any) -> Iterator[Any]:
        if ctx.time_domain() == TimeDomain.EVENT_TIME and timestamp % 10 == 5:
            ctx.timer_service().register_event_time_timer(timestamp + 1)  # due in this advance
        if timestamp == 99:
            self.last.clear()
            self.seen.clear()
            self.tally.clear()
        yield (ctx.get_current_key(), timestamp, ctx.timer_service().current_watermark())


@pytest.fixture
def harness() -> Harness:
    return Harness(_Recorder()).open()


def test_state_is_scoped_to_the_current_key(harness: Harness) -> None:
    """Each key sees only its own value, list and map."""
    assert harness.process("k1", "x") == [("k1", "x")]
    harness.process("k1", "x")
    harness.process("k2", "y")

    assert harness.state_value("k1", "last") == "x"
    assert harness.state_value("k1", "seen") == ["x", "x"]
    assert harness.state_value("k1", "tally") == {"x": 2}
    assert harness.state_value("k2", "tally") == {"y": 1}
    assert harness.state_entries() == 6


def test_event_timers_fire_in_timestamp_order_across_keys(harness: Harness) -> None:
    """Due timers fire oldest first, each with its own key; later ones wait."""
    harness.process("b", ("timer", 20))
    harness.process("a", ("timer", 30))
    harness.process("c", ("timer", 10))

    assert harness.advance_watermark(25) == [("c", 10, 25), ("b", 20, 25)]
    assert harness.pending_timers() == [30]
    assert harness.pending_timers("a") == [30]
    assert harness.advance_watermark(30) == [("a", 30, 30)]
    assert harness.pending_timers() == []


def test_a_key_holds_one_timer_per_timestamp_and_deleted_timers_never_fire(
    harness: Harness,
) -> None:
    """Registering twice keeps one timer; deleting removes it."""
    harness.process("a", ("timer", 10))
    harness.process("a", ("timer", 10))
    harness.process("a", ("timer", 20))
    assert harness.pending_timers("a") == [10, 20]

    harness.process("a", ("delete", 10))

    assert harness.advance_watermark(100) == [("a", 20, 100)]
    assert harness.pending_timers() == []


def test_timer_registered_while_firing_fires_in_the_same_advance_when_due(
    harness: Harness,
) -> None:
    """As in Flink, a timer set from `on_timer` at or below the watermark fires right away."""
    harness.process("a", ("timer", 15))

    assert harness.advance_watermark(20) == [("a", 15, 20), ("a", 16, 20)]
    assert harness.pending_timers() == []


def test_watermark_never_moves_back(harness: Harness) -> None:
    """Advancing to an earlier watermark is a test bug and says so."""
    harness.advance_watermark(10)

    with pytest.raises(ValueError, match="behind"):
        harness.advance_watermark(9)


def test_processing_time_timers_fire_on_processing_time_only(harness: Harness) -> None:
    """Processing-time timers ignore the watermark and fire when processing time reaches them."""
    harness.process("a", ("processing", 50))

    assert harness.advance_watermark(1_000) == []
    assert harness.pending_timers(processing=True) == [50]
    assert len(harness.advance_processing_time(50)) == 1
    assert harness.pending_timers(processing=True) == []


def test_cleared_and_emptied_state_is_no_state(harness: Harness) -> None:
    """Clearing every kind of state leaves no entries behind."""
    harness.process("a", "x")
    harness.process("a", ("timer", 99))

    harness.advance_watermark(99)

    assert harness.state_entries() == 0
    assert harness.pending_timers() == []
