"""A pure-Python test harness for KeyedProcessFunctions (PyFlink ships none).

Fake keyed state (value, list, map) and a fake timer service, both scoped to the current key,
and a watermark you advance. A KeyedBroadcastProcessFunction also gets a broadcast state shared
by every key (`process_broadcast` feeds its broadcast side). Semantics follow Flink's heap
backend: a key holds at most one timer per timestamp, event-time timers fire once the watermark
reaches them (timers registered while firing fire in the same advance if due), and empty state
is no state.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from typing import Any

from pyflink.datastream import TimeDomain

LONG_MIN = -(2**63)

_StateKey = tuple[str, Any]  # (descriptor name, key)


class _Keyed:
    """Base of the fake states: storage shared with the harness, scoped to its current key."""

    def __init__(self, harness: Harness, name: str) -> None:
        self._harness = harness
        self._name = name

    @property
    def _slot(self) -> _StateKey:
        return (self._name, self._harness.current_key)

    def _get(self) -> Any:
        return self._harness.store.get(self._slot)

    def _set(self, value: Any) -> None:
        if value is None or (isinstance(value, list | dict) and not value):
            self._harness.store.pop(self._slot, None)
        else:
            self._harness.store[self._slot] = value

    def clear(self) -> None:
        self._set(None)


class FakeValueState(_Keyed):
    """`ValueState`: `value()`, `update(v)` (None clears), `clear()`."""

    def value(self) -> Any:
        return self._get()

    def update(self, value: Any) -> None:
        self._set(value)


class FakeListState(_Keyed):
    """`ListState`: `get()`, `add`, `add_all`, `update`, `clear`, iteration."""

    def get(self) -> list[Any]:
        return list(self._get() or [])

    def add(self, value: Any) -> None:
        self._set([*self.get(), value])

    def add_all(self, values: Iterable[Any]) -> None:
        self._set([*self.get(), *values])

    def update(self, values: Iterable[Any]) -> None:
        self._set(list(values))

    def __iter__(self) -> Iterator[Any]:
        return iter(self.get())


class FakeMapState(_Keyed):
    """`MapState`: get/put/put_all/remove/contains/items/keys/values/is_empty/clear, dict-like."""

    def _map(self) -> dict[Any, Any]:
        return dict(self._get() or {})

    def get(self, key: Any) -> Any:
        return self._map().get(key)

    def put(self, key: Any, value: Any) -> None:
        self._set({**self._map(), key: value})

    def put_all(self, values: dict[Any, Any]) -> None:
        self._set({**self._map(), **values})

    def remove(self, key: Any) -> None:
        self._set({k: v for k, v in self._map().items() if k != key})

    def contains(self, key: Any) -> bool:
        return key in self._map()

    def items(self) -> list[tuple[Any, Any]]:
        return list(self._map().items())

    def keys(self) -> list[Any]:
        return list(self._map())

    def values(self) -> list[Any]:
        return list(self._map().values())

    def is_empty(self) -> bool:
        return not self._map()

    __getitem__ = get
    __setitem__ = put
    __delitem__ = remove
    __contains__ = contains

    def __iter__(self) -> Iterator[Any]:
        return iter(self.keys())


class FakeBroadcastState:
    """`BroadcastState` of one descriptor: a map shared by every key, never cleared by keys."""

    def __init__(self, harness: Harness, name: str) -> None:
        self._map = harness.broadcast.setdefault(name, {})

    def get(self, key: Any) -> Any:
        return self._map.get(key)

    def put(self, key: Any, value: Any) -> None:
        self._map[key] = value

    def put_all(self, values: dict[Any, Any]) -> None:
        self._map.update(values)

    def remove(self, key: Any) -> None:
        self._map.pop(key, None)

    def contains(self, key: Any) -> bool:
        return key in self._map

    def items(self) -> list[tuple[Any, Any]]:
        return list(self._map.items())

    def keys(self) -> list[Any]:
        return list(self._map)

    def values(self) -> list[Any]:
        return list(self._map.values())

    def is_empty(self) -> bool:
        return not self._map

    def clear(self) -> None:
        self._map.clear()


class FakeMetric:
    """A counter (`inc`) or a settable gauge (`update`), its value kept in the harness."""

    def __init__(self, harness: Harness, name: tuple[str, ...]) -> None:
        self._harness = harness
        self._name = name

    def inc(self, n: int = 1) -> None:
        self._harness.metrics[self._name] = self._harness.metrics.get(self._name, 0) + n

    def update(self, value: int) -> None:
        self._harness.metrics[self._name] = value


class FakeMetricGroup:
    """A metric group: key-value subgroups name their metrics `group/key=value/name`."""

    def __init__(self, harness: Harness, path: tuple[str, ...] = ()) -> None:
        self._harness = harness
        self._path = path

    def add_group(self, name: str, extra: str | None = None) -> FakeMetricGroup:
        return FakeMetricGroup(
            self._harness, (*self._path, name if extra is None else f"{name}={extra}")
        )

    def counter(self, name: str) -> FakeMetric:
        return FakeMetric(self._harness, (*self._path, name))

    def distribution(self, name: str) -> FakeMetric:
        return FakeMetric(self._harness, (*self._path, name))


class FakeRuntimeContext:
    """What `open()` receives: state handles bound to the harness's current key, and a metric
    group whose values the harness keeps (`Harness.metrics`)."""

    def __init__(self, harness: Harness) -> None:
        self._harness = harness

    def get_metrics_group(self) -> FakeMetricGroup:
        return FakeMetricGroup(self._harness)

    def get_state(self, descriptor: Any) -> FakeValueState:
        return FakeValueState(self._harness, descriptor.name)

    def get_list_state(self, descriptor: Any) -> FakeListState:
        return FakeListState(self._harness, descriptor.name)

    def get_map_state(self, descriptor: Any) -> FakeMapState:
        return FakeMapState(self._harness, descriptor.name)


class FakeTimerService:
    """Timers of the harness's current key; times read from the harness."""

    def __init__(self, harness: Harness) -> None:
        self._harness = harness

    def current_watermark(self) -> int:
        return self._harness.watermark

    def current_processing_time(self) -> int:
        return self._harness.processing_time

    def register_event_time_timer(self, timestamp: int) -> None:
        self._harness.add_timer(TimeDomain.EVENT_TIME, timestamp)

    def delete_event_time_timer(self, timestamp: int) -> None:
        self._harness.timers.pop(
            (TimeDomain.EVENT_TIME, self._harness.current_key, timestamp), None
        )

    def register_processing_time_timer(self, timestamp: int) -> None:
        self._harness.add_timer(TimeDomain.PROCESSING_TIME, timestamp)

    def delete_processing_time_timer(self, timestamp: int) -> None:
        slot = (TimeDomain.PROCESSING_TIME, self._harness.current_key, timestamp)
        self._harness.timers.pop(slot, None)


class FakeContext:
    """`KeyedProcessFunction.Context` and `OnTimerContext` in one."""

    def __init__(
        self, harness: Harness, timestamp: int | None, domain: TimeDomain | None = None
    ) -> None:
        self._harness = harness
        self._timestamp = timestamp
        self._domain = domain

    def get_current_key(self) -> Any:
        return self._harness.current_key

    def timer_service(self) -> FakeTimerService:
        return FakeTimerService(self._harness)

    def timestamp(self) -> int | None:
        return self._timestamp

    def get_broadcast_state(self, descriptor: Any) -> FakeBroadcastState:
        """Read-only in Flink's keyed contexts; the harness does not enforce that."""
        return FakeBroadcastState(self._harness, descriptor.name)

    def time_domain(self) -> TimeDomain | None:
        return self._domain


class FakeBroadcastContext:
    """`KeyedBroadcastProcessFunction.Context`: the broadcast state, times, no current key."""

    def __init__(self, harness: Harness, timestamp: int | None) -> None:
        self._harness = harness
        self._timestamp = timestamp

    def get_broadcast_state(self, descriptor: Any) -> FakeBroadcastState:
        return FakeBroadcastState(self._harness, descriptor.name)

    def timestamp(self) -> int | None:
        return self._timestamp

    def current_watermark(self) -> int:
        return self._harness.watermark

    def current_processing_time(self) -> int:
        return self._harness.processing_time


class Harness:
    """Drives one KeyedProcessFunction or KeyedBroadcastProcessFunction: `open()`, then
    `process`, `process_broadcast`, `advance_watermark`, asserts."""

    def __init__(self, fn: Any) -> None:
        self.fn = fn
        self.store: dict[_StateKey, Any] = {}
        self.broadcast: dict[str, dict[Any, Any]] = {}  # descriptor name -> broadcast map
        # (domain, key, timestamp) -> registration order, which breaks timestamp ties.
        self.timers: dict[tuple[TimeDomain, Any, int], int] = {}
        self.current_key: Any = None
        self.watermark = LONG_MIN
        self.processing_time = 0
        self._order = itertools.count()
        self.metrics: dict[tuple[str, ...], int] = {}  # (group, ..., name) -> value

    def open(self) -> Harness:
        """Call the function's `open` with the fake runtime context."""
        self.fn.open(FakeRuntimeContext(self))
        return self

    def close(self) -> None:
        self.fn.close()

    def add_timer(self, domain: TimeDomain, timestamp: int) -> None:
        self.timers.setdefault((domain, self.current_key, timestamp), next(self._order))

    def process(self, key: Any, value: Any, timestamp: int | None = None) -> list[Any]:
        """One element for `key`; returns what the function yields."""
        self.current_key = key
        return list(self.fn.process_element(value, FakeContext(self, timestamp)) or ())

    def process_broadcast(self, value: Any, timestamp: int | None = None) -> list[Any]:
        """One element of the broadcast side; returns what the function yields."""
        ctx = FakeBroadcastContext(self, timestamp)
        return list(self.fn.process_broadcast_element(value, ctx) or ())

    def advance_watermark(self, timestamp: int) -> list[Any]:
        """Move the watermark (never back) and fire due event-time timers in timestamp order."""
        if timestamp < self.watermark:
            raise ValueError(f"watermark {timestamp} is behind the current {self.watermark}")
        self.watermark = timestamp
        return self._fire(TimeDomain.EVENT_TIME, timestamp)

    def advance_processing_time(self, timestamp: int) -> list[Any]:
        """Move processing time and fire due processing-time timers in timestamp order."""
        self.processing_time = max(self.processing_time, timestamp)
        return self._fire(TimeDomain.PROCESSING_TIME, self.processing_time)

    def _fire(self, domain: TimeDomain, until: int) -> list[Any]:
        out: list[Any] = []
        while due := [
            (ts, order, key)
            for (d, key, ts), order in self.timers.items()
            if d == domain and ts <= until
        ]:
            ts, _, key = min(due, key=lambda t: (t[0], t[1]))
            del self.timers[(domain, key, ts)]
            self.current_key = key
            out.extend(self.fn.on_timer(ts, FakeContext(self, ts, domain)) or ())
        return out

    def pending_timers(self, key: Any = None, *, processing: bool = False) -> list[int]:
        """Sorted timestamps of the pending event-time (or processing-time) timers."""
        domain = TimeDomain.PROCESSING_TIME if processing else TimeDomain.EVENT_TIME
        return sorted(ts for d, k, ts in self.timers if d == domain and (key is None or k == key))

    def state_entries(self) -> int:
        """Non-empty keyed state entries, across all keys and descriptors (broadcast excluded)."""
        return len(self.store)

    def state_value(self, key: Any, name: str) -> Any:
        """What descriptor `name` holds for `key` (None when empty)."""
        return self.store.get((name, key))

    def broadcast_value(self, name: str, key: Any) -> Any:
        """What broadcast descriptor `name` holds under `key` (None when absent)."""
        return self.broadcast.get(name, {}).get(key)

    def state_bytes(self, key: Any, name: str) -> bytes | None:
        """The bytes descriptor `name` holds for `key` (None when empty)."""
        value = self.state_value(key, name)
        if value is not None and not isinstance(value, bytes):
            raise TypeError(f"state {name!r} of key {key!r} holds {type(value).__name__}")
        return value


class DecodedInputs:
    """A `functions.operators.RowReader` for harness tests: the input is already the device
    event (the job's own reader, `jobs.records.DeviceRows`, decodes Kafka rows)."""

    def open(self, on_waited: Any = None) -> None:
        """Nothing to build, no schema to wait for."""

    def events(self, value: Any, now_ms: int) -> tuple[Any, ...]:
        """The event itself."""
        return (value,)
