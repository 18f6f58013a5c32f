"""Thin Flink adapters: read state, call the pure step, write state, move timers, yield outputs.

Every state value is `bytes` in the suite's own versioned codecs (`state/`). The state is
declared `PICKLED_BYTE_ARRAY`, which only wraps that `bytes` object: thread mode converts
`PRIMITIVE_ARRAY(BYTE)` state byte by byte and fails on None (see jobs/DISCUSSION.md).
Records travel between stages as pickled Python objects; only the sinks see Avro.
"""

from __future__ import annotations

import functools
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from pyflink.common import Types
from pyflink.datastream import (
    KeyedBroadcastProcessFunction,
    KeyedProcessFunction,
    RuntimeContext,
    TimeDomain,
)
from pyflink.datastream.state import MapStateDescriptor, ValueStateDescriptor

from functions import anomaly, budget, device, metrics, pipeline, region
from functions.interlocks import PipelineFacts
from functions.wetbulb import RegionMode, RegionWeather, WetBulbPolicy, mode
from schemas.models import Alert, AlertKind, DeadLetter, TopicRecord
from schemas.serde import Waited
from state import device as device_codec
from state import region as codec
from state import rollout as rollout_codec
from state.mirror import LastGood, MirrorEvent, RedisMirror

PICKLED = Types.PICKLED_BYTE_ARRAY()
CONTEXT = MapStateDescriptor("context", Types.STRING(), PICKLED)
PIPELINE_KEY = "pipeline"
DEVICE_CACHE_ENTRIES = 50_000  # ~1.1 kB each, decoded: see `_StateCache`
TALLY_READINGS = 100  # scored readings of one firmware a device-stage task counts per tally
METRICS_FLUSH_MS = 1_000  # how often the device stage hands its latency histogram to Flink

# The stages emit everything on their main output and the job splits it by type (the `is_*`
# predicates): in thread mode a side output yielded from a timer of a two-input keyed
# operator reaches the main output as a bare tuple.


def is_output(value: Any) -> bool:
    """A record for the sinks (a model of `schemas.models`)."""
    return isinstance(value, TopicRecord)


def is_context(value: Any) -> bool:
    """A `(key, bytes)` entry for the broadcast context."""
    return isinstance(value, tuple)


def is_device_event(value: Any) -> bool:
    """An event for the device stage made by the region stage."""
    return isinstance(value, device.Activation | device.Release)


def is_tally(value: Any) -> bool:
    """A firmware version's scored readings, for the rollout stage."""
    return isinstance(value, anomaly.FirmwareTally)


def is_request(value: Any) -> bool:
    """A command request or a withdrawal, for the budget stage."""
    return isinstance(value, device.CommandRequest | device.Withdrawal)


def region_key(region_id: str) -> str:
    """The broadcast-state key of a region's weather."""
    return f"region:{region_id}"


class Meters:
    """One task's suite metrics, in its Flink metric group `gridstream` (`functions.metrics`).

    Counters are made on first use, one per label set. A gauge is a Java value set from here
    (PyFlink's `distribution`, which keeps the last value): a Python gauge would be called from
    the reporter's thread into the interpreter the task thread runs.
    """

    def __init__(self, runtime_context: RuntimeContext) -> None:
        self.group = runtime_context.get_metrics_group().add_group("gridstream")
        self.counters: dict[metrics.Tally, Any] = {}
        self.gauges: dict[str, Any] = {}

    def count(self, tally: metrics.Tally, n: int = 1) -> None:
        """Move one counter by `n`."""
        counter = self.counters.get(tally)
        if counter is None:
            group = self.group
            for key, value in tally.labels:
                group = group.add_group(key, value)
            counter = self.counters[tally] = group.counter(tally.metric)
        counter.inc(n)

    def waited(self, waited: Waited) -> None:
        """Count a decoder's wait for a new schema id (`schemas.serde.Deserializer`)."""
        self.count(metrics.wait_tally(waited))

    def set(self, name: str, value: int) -> None:
        """Set a gauge."""
        gauge = self.gauges.get(name)
        if gauge is None:
            gauge = self.gauges[name] = self.group.distribution(name)
        gauge.update(value)

    def histogram(self, name: str, histogram: metrics.Histogram) -> None:
        """Add what `histogram` saw since its last drain to the `name` bucket counters (`le`
        labels, cumulative, as Prometheus histograms have them), `name_sum` and `name_count`."""
        buckets, total, count = histogram.drain()
        labels = [str(bound) for bound in histogram.bounds] + ["+Inf"]
        for le, n in zip(labels, buckets, strict=True):
            self.count(metrics.Tally(f"{name}_bucket", (("le", le),)), n)
        self.count(metrics.Tally(f"{name}_sum", ()), total)
        self.count(metrics.Tally(f"{name}_count", ()), count)


def _bytes_state(rc: RuntimeContext, name: str) -> Any:
    return rc.get_state(ValueStateDescriptor(name, PICKLED))


END_OF_INPUT = 2**63 - 1  # the watermark that ends a bounded input: not a time of day


def watermark(ctx: Any) -> int:
    """The stage's current event time (its watermark)."""
    return int(ctx.timer_service().current_watermark())


def decision_time(ts_ms: int, watermark_ms: int) -> int:
    """A stage's "now" for an input stamped `ts_ms`: that time, or the stage's current event
    time (its watermark) when that is later, so a late input is judged as of now, not as of its
    own past. The watermark that ends a bounded input says everything has arrived, not what
    time it is."""
    return ts_ms if watermark_ms == END_OF_INPUT else max(ts_ms, watermark_ms)


def _reconcile(held: frozenset[int], wanted: frozenset[int], ctx: Any) -> None:
    """Move a key's event-time timers from those its old state held to those its new one wants."""
    service = ctx.timer_service()
    for ts in held - wanted:
        service.delete_event_time_timer(ts)
    for ts in wanted - held:
        service.register_event_time_timer(ts)


class _Context:
    """What the keyed stages read from the broadcast context: region weather, pipeline facts.

    Each instance keeps its own decoded copy of the broadcast state: every instance receives
    every broadcast element (`store`), so the copy stays exact, and a decision reads a dict
    instead of crossing into Java's broadcast state twice per record. The copy is loaded on
    the first read after `open`, which after a restore holds the checkpointed entries.
    """

    def __init__(self, wetbulb: WetBulbPolicy) -> None:
        self.wetbulb = wetbulb
        self._entries: dict[str, Any] | None = None

    def _get(self, ctx: Any, key: str) -> Any:
        if self._entries is None:
            stored = ctx.get_broadcast_state(CONTEXT).items()
            self._entries = {k: _decode_entry(k, raw) for k, raw in stored}
        return self._entries.get(key)

    def store(self, value: tuple[str, bytes], ctx: Any) -> None:
        """Keep one broadcast context entry (a region's weather or the pipeline's facts)."""
        key, raw = value
        ctx.get_broadcast_state(CONTEXT).put(key, raw)
        if self._entries is not None:
            self._entries[key] = _decode_entry(key, raw)

    def region_mode(self, ctx: Any, region_id: str | None, now_ms: int) -> RegionMode:
        if region_id is None:
            return RegionMode.GRID_FOLLOW
        return mode(self._get(ctx, region_key(region_id)), now_ms, self.wetbulb)

    def pipeline(self, ctx: Any) -> PipelineFacts:
        state = self._get(ctx, PIPELINE_KEY)
        return PipelineFacts() if state is None else state.facts


def _decode_entry(key: str, raw: bytes) -> Any:
    return codec.decode_pipeline(raw) if key == PIPELINE_KEY else codec.decode_weather(raw)


class RosterKeeper(KeyedProcessFunction):  # type: ignore[misc]
    """Keyed by device: the region each registered device is in, so the region stage hears of
    a move or a deletion (`functions.region.roster_changes`); cleared with the record. A record
    older than the newest one seen (a re-sent CIS export) is dropped here, as the device stage
    drops it, so it cannot put the device back on an old roster."""

    def open(self, runtime_context: RuntimeContext) -> None:
        self.region = runtime_context.get_state(ValueStateDescriptor("region", Types.STRING()))
        self.newest = runtime_context.get_state(ValueStateDescriptor("updated", Types.LONG()))

    def process_element(self, value: Any, ctx: KeyedProcessFunction.Context) -> Iterator[Any]:
        newest = self.newest.value()
        if newest is not None and value.ts_ms < newest:
            return
        self.newest.update(value.ts_ms)  # cleared below with a deletion
        now_in, changes = region.roster_changes(self.region.value(), value)
        if now_in is None:  # deleted: forgotten, so no key outlives its device
            self.region.clear()
            self.newest.clear()
        else:
            self.region.update(now_in)
        yield from changes


class RegionStage(KeyedProcessFunction):  # type: ignore[misc]
    """Keyed by region: `functions.region` over weather, roster and DR-event state."""

    def __init__(self, wetbulb: WetBulbPolicy) -> None:
        self.wetbulb = wetbulb

    def open(self, runtime_context: RuntimeContext) -> None:
        self.weather = _bytes_state(runtime_context, "weather")
        self.roster = runtime_context.get_map_state(
            MapStateDescriptor("roster", Types.STRING(), PICKLED)
        )
        self.events = runtime_context.get_map_state(
            MapStateDescriptor("dr-events", Types.STRING(), PICKLED)
        )
        self.meters = Meters(runtime_context)
        self.suspended = metrics.Members()
        self.grid_follow = metrics.Members()

    def _gauge(self, region_id: str, weather: RegionWeather) -> None:
        """Count the region in the suspended and Grid-Follow (aged-out weather) gauges. A
        restored task counts each region again at its next weather record or timer."""
        if self.suspended.update(region_id, weather.suspended and not weather.aged_out):
            self.meters.set("suspended_regions", len(self.suspended))
        if self.grid_follow.update(region_id, weather.aged_out):
            self.meters.set("grid_follow_regions", len(self.grid_follow))

    def _roster(self) -> Iterator[tuple[str, region.RosterEntry]]:
        for device_id, raw in self.roster.items():
            yield device_id, codec.decode_roster_entry(raw)

    def process_element(self, value: Any, ctx: KeyedProcessFunction.Context) -> Iterator[Any]:
        region_id = ctx.get_current_key()
        if isinstance(value, region.WeatherInput):
            now = decision_time(value.ts_ms, watermark(ctx))
            raw = self.weather.value()
            old = None if raw is None else codec.decode_weather(raw)
            step = region.on_weather(old, value, now, self.wetbulb)
            encoded = codec.encode_weather(step.weather)
            self.weather.update(encoded)
            self._gauge(region_id, step.weather)
            self._move_weather_timer(
                region.weather_timers(old, self.wetbulb),
                region.weather_timers(step.weather, self.wetbulb),
                ctx,
            )
            yield region_key(region_id), encoded
            yield from step.alerts
            if step.suspended_now:
                yield from region.releases(self._roster(), value.correlation_id, value.cause, now)
        elif isinstance(value, region.RosterLeave):
            self.roster.remove(value.device_id)
        elif isinstance(value, device.RegistryUpdate):
            yield from self._register(value, region_id, decision_time(value.ts_ms, watermark(ctx)))
        elif isinstance(value, region.EventForRegion):
            event = value.event
            raw = self.events.get(event.event_id)
            if not event.supersedes(None if raw is None else codec.decode_event(raw)):
                return  # an older record re-sent, or the event already ended
            self.events.put(event.event_id, codec.encode_event(event))
            ctx.timer_service().register_event_time_timer(event.end_ts_ms)
            yield from region.activations(value, self._roster())

    def _register(
        self, value: device.RegistryUpdate, region_id: str, now: int
    ) -> Iterator[device.Activation | device.Release]:
        """Put the device on the roster; it joins the events still on, and a cooling load is
        released if the region is under suspension (whichever reached the stage first)."""
        entry = region.RosterEntry(value.info.device_class, value.info.programs)
        self.roster.put(value.device_id, codec.encode_roster_entry(entry))
        events = [codec.decode_event(raw) for raw in self.events.values()]
        yield from region.joins(value.device_id, region_id, entry, events, now)
        raw = self.weather.value()
        if raw is not None and codec.decode_weather(raw).suspended:
            one = ((value.device_id, entry),)
            yield from region.releases(one, value.correlation_id, value.cause, now)

    def _move_weather_timer(self, held: frozenset[int], wanted: frozenset[int], ctx: Any) -> None:
        """Move the age-out timer, keeping a timestamp that a kept DR event's end also uses."""
        if held != wanted:
            ends = {codec.decode_event(raw).end_ts_ms for raw in self.events.values()}
            _reconcile(held - ends, wanted, ctx)

    def on_timer(self, timestamp: int, ctx: KeyedProcessFunction.OnTimerContext) -> Iterator[Any]:
        """Forget the DR events that are over; raise GRID_FOLLOW if the weather has aged out."""
        for event_id, raw in list(self.events.items()):
            if codec.decode_event(raw).end_ts_ms <= timestamp:
                self.events.remove(event_id)
        raw = self.weather.value()
        if raw is None:
            return
        weather = codec.decode_weather(raw)
        region_id = ctx.get_current_key()
        step = region.on_weather_timer(weather, region_id, timestamp, self.wetbulb)
        if step.weather != weather:
            self.weather.update(codec.encode_weather(step.weather))
        self._gauge(region_id, step.weather)
        for at in region.weather_timers(step.weather, self.wetbulb):
            # A no-op when armed; re-arms a deadline that a changed max age moved.
            ctx.timer_service().register_event_time_timer(at)
        yield from step.alerts


class PipelineWatch(KeyedProcessFunction):  # type: ignore[misc]
    """One key: heartbeats in, the freeze and silent-source facts out, on processing time."""

    def __init__(self, policy: pipeline.PipelinePolicy) -> None:
        self.policy = policy

    def open(self, runtime_context: RuntimeContext) -> None:
        self.state = _bytes_state(runtime_context, "pipeline")
        self.tick = runtime_context.get_state(ValueStateDescriptor("tick", Types.LONG()))
        self.meters = Meters(runtime_context)
        self.awake_ms: int | None = None  # this instance's first processing time

    def _awake(self, ctx: Any) -> int:
        if self.awake_ms is None:
            self.awake_ms = int(ctx.timer_service().current_processing_time())
        return self.awake_ms

    def _apply(self, step: pipeline.PipelineStep, now_ms: int, ctx: Any) -> Iterator[Any]:
        encoded = codec.encode_pipeline(step.state)
        self.state.update(encoded)
        facts = step.state.facts
        self.meters.set("freeze", int(facts.frozen))
        self.meters.set("source_silent", int(facts.source_silent))
        self.meters.set("processing_lag_ms", pipeline.lag_ms(step.state, now_ms, self.policy))
        self.meters.set("python_blocks", sys.getallocatedblocks())  # the process's interpreter
        if step.changed:
            yield PIPELINE_KEY, encoded
            yield from step.alerts
        # Ticks stop once the source is silent (the next heartbeat restarts them), so a bounded
        # job can end instead of ticking forever.
        if self.tick.value() is None and not step.state.facts.source_silent:
            at = ctx.timer_service().current_processing_time() + self.policy.tick_ms
            ctx.timer_service().register_processing_time_timer(at)
            self.tick.update(at)

    def _load(self) -> pipeline.PipelineState | None:
        raw = self.state.value()
        return None if raw is None else codec.decode_pipeline(raw)

    def process_element(self, value: Any, ctx: KeyedProcessFunction.Context) -> Iterator[Any]:
        now = ctx.timer_service().current_processing_time()
        self._awake(ctx)
        step = pipeline.on_heartbeat(self._load(), value, now, self.policy)
        yield from self._apply(step, now, ctx)

    def on_timer(self, timestamp: int, ctx: KeyedProcessFunction.OnTimerContext) -> Iterator[Any]:
        self.tick.clear()
        state = self._load() or pipeline.PipelineState()
        step = pipeline.evaluate(state, timestamp, self.policy, self._awake(ctx))
        yield from self._apply(step, timestamp, ctx)


class RolloutStage(KeyedProcessFunction):  # type: ignore[misc]
    """Keyed by firmware version: `functions.anomaly.track_rollout` over the device stage's
    tallies; a rising anomaly rate raises the faulty-firmware-rollout alert (once, re-armed when
    the rate falls under half the threshold)."""

    def __init__(self, policy: anomaly.RolloutPolicy) -> None:
        self.policy = policy

    def open(self, runtime_context: RuntimeContext) -> None:
        self.state = _bytes_state(runtime_context, "rollout")

    def process_element(self, value: Any, ctx: KeyedProcessFunction.Context) -> Iterator[Any]:
        raw = self.state.value()
        old = None if raw is None else rollout_codec.decode(raw)
        step = anomaly.track_rollout(
            old, value.anomalous, value.ts_ms, self.policy, scored=value.scored
        )
        self.state.update(rollout_codec.encode(step.state))
        # A version no device reports any more is forgotten once its window has passed.
        ctx.timer_service().register_event_time_timer(self._window_end(step.state))
        if step.alert:
            yield anomaly.rollout_alert(value, step.state, self.policy)

    def _window_end(self, state: rollout_codec.RolloutState) -> int:
        return state.bucket_start_ms + self.policy.bucket_ms * self.policy.buckets

    def on_timer(self, timestamp: int, ctx: KeyedProcessFunction.OnTimerContext) -> None:
        raw = self.state.value()
        if raw is not None and self._window_end(rollout_codec.decode(raw)) <= timestamp:
            self.state.clear()


class _MirrorWriter:
    """The device stage's Redis last-good writes (`state.mirror`), alerting when Redis is away.

    A processing-time timer (on whichever device key is current) flushes a quiet buffer.
    """

    def __init__(self, redis_url: str, password_file: str, flush_ms: int) -> None:
        self.mirror = RedisMirror(
            redis_url, password_file=password_file, max_delay_s=flush_ms / 1000
        )
        self.flush_ms = flush_ms
        self.poll_at: int | None = None

    def _alerts(self, events: list[MirrorEvent], now_ms: int) -> Iterator[Alert]:
        for event in events:
            kind = AlertKind(event.kind.replace("REDIS", "MIRROR"))
            yield pipeline.pipeline_alert(kind, event.message, now_ms)

    def _schedule(self, now_ms: int, ctx: Any) -> None:
        if self.poll_at is None and self.mirror.pending:
            self.poll_at = now_ms + self.flush_ms
            ctx.timer_service().register_processing_time_timer(self.poll_at)

    def offer(self, good: LastGood, ctx: Any) -> Iterator[Alert]:
        now = ctx.timer_service().current_processing_time()
        yield from self._alerts(self.mirror.offer(good), now)
        self._schedule(now, ctx)

    def due(self, timestamp: int) -> bool:
        """Whether the flush timer this writer set is the one firing at `timestamp`."""
        return self.poll_at is not None and timestamp >= self.poll_at

    def poll(self, timestamp: int, ctx: Any) -> Iterator[Alert]:
        self.poll_at = None
        yield from self._alerts(self.mirror.poll(), timestamp)
        self._schedule(timestamp, ctx)


def _timed(state: device_codec.DeviceState | None) -> tuple[Any, ...]:
    """What `device.timers_for` reads of a state: equal parts, equal timers (so a reading
    that changes neither moves no timer and costs no timer set)."""
    if state is None:
        return ()
    return (state.watch_ms, state.participation, state.queued, state.pending, state.ended)


_Cached = tuple[bytes | None, device_codec.DeviceState | None]


class _StateCache:
    """A write-through cache of decoded device states in front of the stage's ValueState.

    Every write still goes to Flink's state, so checkpoints hold it; a read of a cached device
    skips the state backend and the codec. Only this stage writes that state, and a restore or
    a rescale opens a new instance with an empty cache, so the two never disagree. When full,
    the newest entry makes room: devices report once per interval (a cyclic scan), under which
    this keeps a fixed set cached, `capacity / fleet` of the reads hitting, where evicting the
    least recently used would hit none.
    """

    def __init__(self, state: Any, capacity: int) -> None:
        self.state = state
        self.capacity = capacity
        self.entries: dict[str, _Cached] = {}

    def get(self, device_id: str) -> _Cached:
        """The device's state bytes and decoded state (None, None for no state)."""
        entry = self.entries.get(device_id)
        if entry is None:
            raw = self.state.value()
            entry = (raw, None if raw is None else device_codec.decode(raw))
            self._keep(device_id, entry)
        return entry

    def put(self, device_id: str, new: device_codec.DeviceState, old: _Cached) -> None:
        """Write `new` through, its bytes reusing `old`'s where they can."""
        raw_old, state_old = old
        like = None if raw_old is None or state_old is None else (state_old, raw_old)
        raw = device_codec.encode(new, like)
        self.state.update(raw)
        self._keep(device_id, (raw, new))

    def clear(self, device_id: str) -> None:
        """Clear the device's state."""
        self.state.clear()
        self._keep(device_id, (None, None))

    def _keep(self, device_id: str, entry: _Cached) -> None:
        if device_id not in self.entries:
            if self.capacity <= 0:
                return
            if len(self.entries) >= self.capacity:
                self.entries.popitem()
        self.entries[device_id] = entry


class ModelSource(Protocol):
    """Where the device stage's anomaly model comes from: `load` runs on the worker and returns
    the model of a device class (None for a class it was not trained on), or raises."""

    def load(self) -> Callable[[str], anomaly.ClassModel | None]: ...


class RowReader(Protocol):
    """Turns the device stage's input rows into device events (or a dead letter)."""

    def open(self, on_waited: Callable[[Waited], None] | None = None) -> None: ...

    def events(self, value: Any, now_ms: int) -> tuple[Any, ...] | DeadLetter: ...


class DeviceStage(KeyedBroadcastProcessFunction):  # type: ignore[misc]
    """Keyed by device id: `functions.device.step` over the device state and its timers.

    Its input is raw: the Kafka records keyed by their key in Java and decoded here by
    `reader`, so a reading crosses into Python once (DR activations and approvals come in
    the same rows). With a `redis_url`, each device's new last good reading also goes to the
    Redis mirror (its password read at `open`, from `redis_password_file` or the environment),
    here rather than in an operator of its own: that one would see every reading again. Up to
    `cache_entries` decoded states are kept in front of the state (`_StateCache`).
    With a `model`, each reading of a registered device is scored before the step and an
    anomalous one raises an `ANOMALY` alert; a model that does not load leaves the rules alone
    with one `MODEL_DEGRADED` alert, and no model ever changes a decision.
    """

    def __init__(
        self,
        reader: RowReader,
        policy: device.DevicePolicy,
        wetbulb: WetBulbPolicy,
        redis_url: str | None = None,
        flush_ms: int = 1_000,
        cache_entries: int = DEVICE_CACHE_ENTRIES,
        model: ModelSource | None = None,
        redis_password_file: str = "",
    ) -> None:
        self.reader = reader
        self.policy = policy
        self.context = _Context(wetbulb)
        self.redis_url = redis_url
        self.redis_password_file = redis_password_file
        self.flush_ms = flush_ms
        self.cache_entries = cache_entries
        self.model = model

    def open(self, runtime_context: RuntimeContext) -> None:
        self.meters = Meters(runtime_context)
        self.reader.open(self.meters.waited)
        self.classify: Callable[[str], anomaly.ClassModel | None] | None = None
        self.notices: list[Alert] = []  # emitted with the next input
        self.tallies: dict[str, tuple[int, int]] = {}  # firmware: scored, anomalous (untold)
        if self.model is not None:
            try:
                self.classify = self.model.load()
            except Exception as err:  # noqa: BLE001 (whatever the file holds, the job runs on rules)
                message = f"anomaly model not used, rules only: {err}"
                now_ms = int(time.time() * 1000)
                self.notices.append(
                    pipeline.pipeline_alert(AlertKind.MODEL_DEGRADED, message, now_ms)
                )
        self.states = _StateCache(_bytes_state(runtime_context, "device"), self.cache_entries)
        self.mirror = (
            None
            if self.redis_url is None
            else _MirrorWriter(self.redis_url, self.redis_password_file, self.flush_ms)
        )
        self.stale = metrics.Members()  # counted by this task since it started (see DISCUSSION)
        self.held = metrics.Held()  # its device keys and event-time timers, net since it started
        self.latency = metrics.Histogram()
        self.flush_at: int | None = None  # the processing time the histogram goes to Flink

    def close(self) -> None:
        if self.mirror is not None:
            self.mirror.mirror.close()

    def _run(self, event: device.Event, ctx: Any) -> Iterator[Any]:
        cached = self.states.get(event.device_id)
        old = cached[1]
        info = event.info if isinstance(event, device.RegistryUpdate) else old and old.info
        settled = watermark(ctx)
        # A timer decides at its own instant (it fires as the watermark passes it); an input at
        # the later of its own time and the watermark. Not at the device's newest reading: its
        # readings and its DR events reach the stage on different channels, so how far the one
        # ran ahead of the other is an accident of arrival (a restore replays them in a new
        # interleaving), and a decision must not depend on it.
        is_timer = isinstance(event, device.Timer)
        now_ms = event.ts_ms if is_timer else decision_time(event.ts_ms, settled)
        region_id = info.region_id if info else None
        decision = device.Context(
            now_ms,
            self.context.region_mode(ctx, region_id, now_ms),
            self.context.pipeline(ctx),
            self.policy,
            settled,
            functools.partial(self.context.region_mode, ctx, region_id),
        )
        if self.classify is not None and isinstance(event, device.Telemetry):
            yield from self._score(old, event, now_ms)
        result = device.step(old, event, decision)
        new = result.state
        if new is None:
            if old is not None:
                self.states.clear(event.device_id)
            self._move_timers(old, None, ctx)
        elif new is not old:  # the step hands back the very state when nothing changed
            self.states.put(event.device_id, new, cached)
            if _timed(old) != _timed(new):
                self._move_timers(old, new, ctx)
        if self.held.update(old is not None, new is not None):
            self.meters.set("device_keys", self.held.keys)
        stale = new is not None and new.stale
        if stale != (old is not None and old.stale) and self.stale.update(event.device_id, stale):
            self.meters.set("stale_devices", len(self.stale))
        yield from result.outputs
        good = new.last_good if new is not None else None
        if self.mirror is not None and good is not None and (old is None or old.last_good != good):
            region_id = new.info.region_id if new is not None and new.info else None
            reading = LastGood(event.device_id, good.ts_ms, good.power_kw, good.is_on, region_id)
            yield from self.mirror.offer(reading, ctx)

    def _move_timers(
        self, old: device_codec.DeviceState | None, new: device_codec.DeviceState | None, ctx: Any
    ) -> None:
        held, wanted = device.timers_for(old, self.policy), device.timers_for(new, self.policy)
        _reconcile(held, wanted, ctx)
        if self.held.move_timers(len(wanted) - len(held)):
            self.meters.set("device_timers", self.held.timers)

    def _score(
        self, old: device_codec.DeviceState | None, reading: device.Telemetry, now_ms: int
    ) -> Iterator[Alert | anomaly.FirmwareTally]:
        info = old.info if old is not None else None
        model = None if info is None or self.classify is None else self.classify(info.device_class)
        verdict = None if model is None else anomaly.judge(old, reading, model)
        if verdict is None:
            return
        if verdict.anomalous:
            yield anomaly.alert(verdict, reading, info.region_id if info else None, now_ms)
        firmware = reading.firmware_version
        if firmware is not None:  # counted per task; sent on an anomaly or every TALLY_READINGS
            scored, anomalous = self.tallies.get(firmware, (0, 0))
            scored, anomalous = scored + 1, anomalous + int(verdict.anomalous)
            if verdict.anomalous or scored >= TALLY_READINGS:
                self.tallies.pop(firmware, None)
                yield anomaly.FirmwareTally(firmware, now_ms, scored, anomalous)
            else:
                self.tallies[firmware] = (scored, anomalous)

    def process_element(self, value: Any, ctx: Any) -> Iterator[Any]:
        if self.notices:
            yield from self.notices
            self.notices = []
        # Each event carries its own event time: thread mode can lose element timestamps
        # through union and key_by, and the decision must not depend on that.
        wall_ms = int(time.time() * 1000)
        decoded = self.reader.events(value, wall_ms)
        if isinstance(decoded, DeadLetter):
            yield decoded
            return
        for event in decoded:
            if isinstance(event, device.Telemetry):
                self._observe(wall_ms - event.ts_ms, ctx)
            yield from self._run(event, ctx)

    def _observe(self, latency_ms: int, ctx: Any) -> None:
        """Count a reading's ingestion latency; Flink gets the counts at the next flush."""
        self.latency.observe(latency_ms)
        if self.flush_at is None:
            service = ctx.timer_service()
            self.flush_at = service.current_processing_time() + METRICS_FLUSH_MS
            service.register_processing_time_timer(self.flush_at)

    def process_broadcast_element(self, value: Any, ctx: Any) -> None:
        self.context.store(value, ctx)

    def on_timer(self, timestamp: int, ctx: Any) -> Iterator[Any]:
        if ctx.time_domain() is TimeDomain.PROCESSING_TIME:  # the flushes of metrics and mirror
            if self.flush_at is not None and timestamp >= self.flush_at:
                self.flush_at = None
                self.meters.histogram("ingestion_latency_ms", self.latency)
            if self.mirror is not None and self.mirror.due(timestamp):
                yield from self.mirror.poll(timestamp, ctx)
            return
        yield from self._run(device.Timer(ctx.get_current_key(), timestamp), ctx)


class BudgetStage(KeyedBroadcastProcessFunction):  # type: ignore[misc]
    """Keyed by region: `functions.budget` over the window, the waiting requests and the
    withdrawals waiting for their instant.

    `waiting` holds the requests by command id; `by-device` the waiting command ids of each
    device, so a withdrawal or a RESTORE finds its device's requests without scanning the
    queue (a suspension withdraws a whole region's cooling loads at once); `withdrawn` the
    held withdrawals. Its event-time timers are the instants `functions.budget` asks to be
    woken at (one per instant).
    """

    def __init__(self, policy: budget.BudgetPolicy, wetbulb: WetBulbPolicy) -> None:
        self.policy = policy
        self.context = _Context(wetbulb)

    def open(self, runtime_context: RuntimeContext) -> None:
        self.window = _bytes_state(runtime_context, "window")
        self.waiting = runtime_context.get_map_state(
            MapStateDescriptor("waiting", Types.STRING(), PICKLED)
        )
        self.by_device = runtime_context.get_map_state(
            MapStateDescriptor("by-device", Types.STRING(), Types.STRING())
        )
        self.withdrawn = runtime_context.get_map_state(
            MapStateDescriptor("withdrawn", Types.STRING(), PICKLED)
        )

    def _window(self) -> budget.Window | None:
        raw = self.window.value()
        return None if raw is None else codec.decode_window(raw)

    def _waiting_ids(self, device_id: str) -> set[str]:
        ids = self.by_device.get(device_id)
        return set(ids.split(",")) if ids else set()

    def _mine(self, device_id: str) -> list[budget.Waiting]:
        ids = sorted(self._waiting_ids(device_id))
        return [codec.decode_waiting(self.waiting.get(i)) for i in ids]

    def _index(self, device_id: str, command_ids: set[str]) -> None:
        if command_ids:
            self.by_device.put(device_id, ",".join(sorted(command_ids)))
        else:
            self.by_device.remove(device_id)

    def _apply(self, step: budget.BudgetStep, ctx: Any) -> Iterator[Any]:
        self.window.update(codec.encode_window(step.window))
        for entry in step.queued:
            req = entry.request
            self.waiting.put(req.command_id, codec.encode_waiting(entry))
            self._index(req.device_id, {*self._waiting_ids(req.device_id), req.command_id})
        for req in step.dequeued:
            self.waiting.remove(req.command_id)
            self._index(req.device_id, self._waiting_ids(req.device_id) - {req.command_id})
        for held in step.held:
            self.withdrawn.put(_held_key(held), codec.encode_held(held))
        for held in step.applied:
            self.withdrawn.remove(_held_key(held))
        if step.wake_ms is not None:
            ctx.timer_service().register_event_time_timer(step.wake_ms)
        yield from step.outputs

    def process_element(self, value: Any, ctx: Any) -> Iterator[Any]:
        mine = self._mine(value.device_id)
        if isinstance(value, device.Withdrawal):
            now = decision_time(value.ts_ms, watermark(ctx))
            step = budget.on_withdrawal(self._window(), mine, value, now, self.policy)
        else:
            now = decision_time(value.requested_ts_ms, watermark(ctx))
            step = budget.on_request(self._window(), value, now, self.policy, mine)
        if step.wake_ms is not None:  # it waits for the watermark, or the hold at most
            service = ctx.timer_service()
            service.register_processing_time_timer(
                service.current_processing_time() + self.policy.hold_ms
            )
        yield from self._apply(step, ctx)

    def process_broadcast_element(self, value: Any, ctx: Any) -> None:
        self.context.store(value, ctx)

    def on_timer(self, timestamp: int, ctx: Any) -> Iterator[Any]:
        if self.waiting.is_empty() and self.withdrawn.is_empty():
            return
        instants = [timestamp]  # a timer decides at its own instant, live and in replay
        if ctx.time_domain() is TimeDomain.PROCESSING_TIME:  # the hold is over
            settled = watermark(ctx)
            known = None if settled == END_OF_INPUT else settled
            instants = budget.flush_time(
                self._window(), self._queue(), self._held(), known, self.policy
            )

        def release(now: int) -> budget.BudgetStep:
            return budget.on_release(
                self._window(),
                self._queue(),
                self._held(),
                now,
                self.context.region_mode(ctx, ctx.get_current_key(), now),
                self.context.pipeline(ctx),
                self.policy,
            )

        for step in budget.released(instants, release):
            yield from self._apply(step, ctx)

    def _queue(self) -> list[budget.Waiting]:
        return [codec.decode_waiting(raw) for raw in self.waiting.values()]

    def _held(self) -> list[budget.Held]:
        return [codec.decode_held(raw) for raw in self.withdrawn.values()]


def _held_key(held: budget.Held) -> str:
    w = held.withdrawal
    return f"{w.device_id}@{w.ts_ms}@{','.join(r.value for r in w.reasons)}"
