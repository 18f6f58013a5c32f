"""The Flink adapters on the harness: state written and cleared, timers set and gone."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from functions import anomaly, metrics
from functions.budget import BudgetPolicy
from functions.device import (
    Activation,
    CommandRequest,
    Deregistration,
    DevicePolicy,
    RegistryUpdate,
    Release,
    Telemetry,
    Withdrawal,
    timers_for,
)
from functions.operators import (
    CONTEXT,
    PIPELINE_KEY,
    TALLY_READINGS,
    BudgetStage,
    DeviceStage,
    PipelineWatch,
    RegionStage,
    RolloutStage,
    RosterKeeper,
    region_key,
)
from functions.pipeline import Heartbeat, PipelinePolicy, PipelineState
from functions.region import EventForRegion, RegionEvent, WeatherInput
from functions.wetbulb import RegionWeather, WetBulbPolicy
from schemas.models import (
    Action,
    Alert,
    AlertKind,
    AuditDecision,
    AuditOutcome,
    Cause,
    DeviceClass,
    DeviceCommand,
    PriorityLevel,
    ReasonCode,
)
from state import device as device_codec
from state import region as codec
from state.device import DeviceInfo
from tests.harness import DecodedInputs, Harness
from tests.vocabulary import DAY_MS, HOUR_MS, MINUTE_MS, SECOND_MS, examples

pytestmark = pytest.mark.unit

T0 = 1_790_000_000_000  # a budget-window boundary
REGION = "north"
DEV = "dev-1"
CAUSE = Cause(source_topic="test", event_id="e")
WETBULB = WetBulbPolicy()


def info(cls: DeviceClass = DeviceClass.THERMOSTAT, programs: tuple[str, ...] = ("p1",)) -> Any:
    return DeviceInfo(cls, PriorityLevel.STANDARD, REGION, programs, 4.5)


def registry(device_id: str, ts: int = T0, **kw: Any) -> RegistryUpdate:
    return RegistryUpdate(device_id, info(**kw), f"r-{device_id}", CAUSE, ts)


def weather_entry(ts: int = T0, wet_bulb_c: float = 20.0, suspended: bool = False) -> Any:
    """A broadcast context entry: the region's weather as the region stage publishes it."""
    return region_key(REGION), codec.encode_weather(RegionWeather(suspended, ts, wet_bulb_c))


def of(kind: type, outputs: list[Any]) -> list[Any]:
    return [o for o in outputs if isinstance(o, kind)]


# DeviceStage ----------------------------------------------------------------------------------


def test_device_stage_curtails_at_the_start_restores_at_the_end_and_forgets_the_device() -> None:
    """A registered thermostat with fresh weather gets CURTAIL when the watermark passes the
    start, RESTORE at the end; after retention no state entry and no timer is left."""
    policy = DevicePolicy(retention_ms=DAY_MS)
    h = Harness(DeviceStage(DecodedInputs(), policy, WETBULB)).open()
    h.process_broadcast(weather_entry())
    h.process_broadcast((PIPELINE_KEY, codec.encode_pipeline(PipelineState())))
    start, end = T0 + 5 * MINUTE_MS, T0 + 10 * MINUTE_MS

    ahead = h.process(DEV, registry(DEV))
    ahead += h.process(DEV, Telemetry(DEV, T0, 2.0, True, True, False, "t0", CAUSE))
    ahead += h.process(
        DEV, Activation(DEV, REGION, "ev-1", Action.CURTAIL, start, end, 1, False, "a", CAUSE, T0)
    )
    assert of(CommandRequest, ahead) == []
    silence = T0 + policy.iot_silence_ms
    # One watch timer per device: at the silence deadline now, at the retention one once silent.
    assert h.pending_timers(DEV) == [start, end, silence]

    assert of(CommandRequest, h.advance_watermark(start - 1)) == []
    (curtail,) = of(CommandRequest, h.advance_watermark(start))
    assert (curtail.device_id, curtail.region_id, curtail.action) == (DEV, REGION, Action.CURTAIL)
    (restore,) = of(CommandRequest, h.advance_watermark(end))
    assert restore.action is Action.RESTORE

    later = h.advance_watermark(T0 + policy.retention_ms)
    assert [a.kind for a in of(Alert, later)] == [AlertKind.TELEMETRY_LOSS]
    assert h.state_entries() == 0
    assert h.pending_timers() == []


DEVICES = ("dev-1", "dev-2", "dev-3")
device_inputs = st.one_of(
    st.tuples(st.just("registry"), st.sampled_from(DEVICES), st.integers(0, 20)),
    st.tuples(st.just("reading"), st.sampled_from(DEVICES), st.integers(0, 20)),
    st.tuples(st.just("activation"), st.sampled_from(DEVICES), st.integers(0, 20)),
    st.tuples(st.just("watermark"), st.just(""), st.integers(0, 40)),
)


def _device_input(kind: str, device_id: str, minute: int) -> Any:
    at = T0 + minute * MINUTE_MS
    if kind == "registry":
        return registry(device_id, at)
    if kind == "reading":
        return Telemetry(device_id, at, 2.0 + minute, True, True, minute == 7, f"t{minute}", CAUSE)
    start, end = at + 2 * MINUTE_MS, at + 12 * MINUTE_MS
    return Activation(
        device_id, REGION, f"ev-{minute}", Action.CURTAIL, start, end, 1, False, "a", CAUSE, at
    )


def _play(stage_for: Any, inputs: list[tuple[str, str, int]], checkpoint: int, fail: int) -> Any:
    """Run `inputs` through a device stage that fails after `fail` of them and restarts, as
    Flink does, from the state, timers and outputs of its checkpoint after `checkpoint` of
    them (the source rewinds there); what it emitted, and the state and timers it left."""
    h = Harness(stage_for()).open()
    h.process_broadcast(weather_entry())
    h.process_broadcast((PIPELINE_KEY, codec.encode_pipeline(PipelineState())))
    out: list[Any] = []
    n, saved = 0, None
    while n < len(inputs):
        if n == checkpoint and saved is None:
            saved = (dict(h.store), dict(h.timers), h.watermark, len(out))
        if n == fail and saved is not None:
            h.store, h.timers, h.watermark, emitted = saved[0].copy(), saved[1].copy(), *saved[2:]
            del out[emitted:]
            h.fn, n, fail = stage_for(), checkpoint, -1
            h.open()
        kind, device_id, minute = inputs[n]
        if kind == "watermark":
            out += h.advance_watermark(max(h.watermark, T0 + minute * MINUTE_MS))
        else:
            out += h.process(device_id, _device_input(kind, device_id, minute))
        n += 1
    out += h.advance_watermark(T0 + DAY_MS * 30)
    return out, h.store, h.pending_timers()


@settings(max_examples=examples(80), deadline=None)
@given(
    st.lists(device_inputs, max_size=30), st.integers(0, 30), st.integers(0, 30), st.integers(1, 3)
)
def test_the_device_state_cache_changes_no_decision_state_or_timer(
    inputs: list[tuple[str, str, int]], checkpoint: int, fail: int, capacity: int
) -> None:
    """Whatever its size (smaller than the fleet included), and across a failover that rolls
    the state back to a checkpoint, the stage's write-through cache leaves outputs, stored
    state and timers as they are without it."""
    policy = DevicePolicy(retention_ms=DAY_MS)

    def stage(entries: int) -> Any:
        return lambda: DeviceStage(DecodedInputs(), policy, WETBULB, cache_entries=entries)

    cached = _play(stage(capacity), inputs, checkpoint, max(checkpoint, fail))
    assert cached == _play(stage(0), inputs, len(inputs), len(inputs))


class _Model:
    """A `ModelSource`: fences that flag every thermostat reading above `max_kw`, or a load
    that fails."""

    def __init__(self, max_kw: float | None = 2.5, fails: bool = False) -> None:
        self.max_kw, self.fails = max_kw, fails

    def load(self) -> Any:
        if self.fails:
            raise ValueError("model.skops is corrupt")
        n = len(anomaly.FEATURE_NAMES)
        high = tuple(
            (self.max_kw if name == "median_dev_kw" else 1e12) for name in anomaly.FEATURE_NAMES
        )
        fence = anomaly.Fence((-1e12,) * n, high, (1.0,) * n, 0.0)
        norms = anomaly.Norms(0.0, {}, 60_000.0)
        model = anomaly.ClassModel(norms, fence)
        return lambda cls: model if cls == DeviceClass.THERMOSTAT else None


def _scored(model: Any) -> Harness:
    stage = DeviceStage(DecodedInputs(), DevicePolicy(), WETBULB, model=model)
    h = Harness(stage).open()
    h.process_broadcast(weather_entry())
    h.process_broadcast((PIPELINE_KEY, codec.encode_pipeline(PipelineState())))
    return h


def test_device_stage_raises_an_anomaly_alert_for_a_reading_its_model_flags() -> None:
    """A registered thermostat's reading outside the model's band raises ANOMALY (naming the
    feature); one inside raises nothing; an unregistered device is not scored."""
    h = _scored(_Model(max_kw=2.5))
    h.process(DEV, registry(DEV))
    calm = h.process(DEV, Telemetry(DEV, T0, 2.0, True, True, False, "t0", CAUSE))
    odd = h.process(DEV, Telemetry(DEV, T0 + MINUTE_MS, 9.0, True, True, False, "t1", CAUSE))
    stranger = h.process("dev-9", Telemetry("dev-9", T0, 9.0, True, True, False, "t9", CAUSE))

    assert of(Alert, calm) == []
    assert of(Alert, stranger) == []
    (alert,) = of(Alert, odd)
    assert (alert.kind, alert.device_id, alert.correlation_id) == (AlertKind.ANOMALY, DEV, "t1")
    assert "median_dev_kw" in alert.message


def test_device_stage_tallies_scored_readings_per_firmware_at_each_anomaly() -> None:
    """Scored readings are counted per firmware version and told to the rollout stage with
    each anomaly (and every TALLY_READINGS readings), counts reset after each tally."""
    h = _scored(_Model(max_kw=2.5))
    h.process(DEV, registry(DEV))

    def reading(minute: int, kw: float) -> Telemetry:
        at = T0 + minute * MINUTE_MS
        return Telemetry(DEV, at, kw, True, True, False, f"t{minute}", CAUSE, "1.5.0")

    out = [o for m in range(4) for o in h.process(DEV, reading(m, 9.0 if m == 2 else 2.0))]
    out += [o for m in range(4, 4 + TALLY_READINGS) for o in h.process(DEV, reading(m, 2.0))]

    tallies = of(anomaly.FirmwareTally, out)
    assert [(t.firmware_version, t.scored, t.anomalous) for t in tallies] == [
        ("1.5.0", 3, 1),
        ("1.5.0", TALLY_READINGS, 0),
    ]


def test_rollout_stage_alerts_once_on_a_faulty_version_and_forgets_a_silent_one() -> None:
    """Tallies of a version with a rising anomaly rate raise one fleet-wide ANOMALY alert
    naming it; once no tally comes for a whole window, its state is gone and no timer left."""
    policy = anomaly.RolloutPolicy(bucket_ms=MINUTE_MS, buckets=5, alert_rate=0.1, min_readings=20)
    h = Harness(RolloutStage(policy)).open()
    out = []
    for n in range(6):
        tally = anomaly.FirmwareTally("9.9.9", T0 + n * 10 * SECOND_MS, 10, 3 if n >= 2 else 0)
        out += h.process("9.9.9", tally)
        h.advance_watermark(tally.ts_ms)

    (alert,) = of(Alert, out)
    assert alert.kind is AlertKind.ANOMALY
    assert alert.region_id == anomaly.FLEET_SCOPE
    assert "9.9.9" in alert.message
    h.advance_watermark(T0 + HOUR_MS)
    assert h.state_entries() == 0
    assert h.pending_timers() == []


def test_device_stage_runs_on_rules_with_one_alert_when_its_model_does_not_load() -> None:
    """A model that fails to load raises MODEL_DEGRADED once, with the reason, and the stage
    goes on deciding."""
    h = _scored(_Model(fails=True))
    first = h.process(DEV, registry(DEV))
    later = h.process(DEV, Telemetry(DEV, T0, 9.0, True, True, False, "t0", CAUSE))

    (alert,) = of(Alert, first)
    assert alert.kind is AlertKind.MODEL_DEGRADED
    assert "corrupt" in alert.message
    assert of(Alert, later) == []


@settings(max_examples=examples(60), deadline=None)
@given(st.lists(device_inputs, max_size=30))
def test_a_model_never_changes_a_decision(inputs: list[tuple[str, str, int]]) -> None:
    """With a model that flags every reading, the stage emits its ANOMALY alerts and otherwise
    exactly what it emits without a model: the same commands, audits, state and timers."""
    policy = DevicePolicy(retention_ms=DAY_MS)

    def stage(model: Any) -> Any:
        return lambda: DeviceStage(DecodedInputs(), policy, WETBULB, model=model)

    everything = _Model(max_kw=-1e9)
    flagged, state, timers = _play(stage(everything), inputs, len(inputs), len(inputs))
    kept = [
        o for o in flagged
        if not (isinstance(o, Alert) and o.kind is AlertKind.ANOMALY)
        and not isinstance(o, anomaly.FirmwareTally)
    ]  # fmt: skip
    assert (kept, state, timers) == _play(stage(None), inputs, len(inputs), len(inputs))


def test_device_stage_without_weather_blocks_the_start_as_weather_unknown() -> None:
    """No weather in the broadcast context is Grid-Follow: the DR start is BLOCKED."""
    h = Harness(DeviceStage(DecodedInputs(), DevicePolicy(), WETBULB)).open()
    h.process(DEV, registry(DEV))
    h.process(DEV, Telemetry(DEV, T0, 2.0, True, True, False, "t0", CAUSE))
    act = Activation(
        DEV, REGION, "ev-1", Action.CURTAIL, T0, T0 + MINUTE_MS, 1, False, "a", CAUSE, T0
    )
    out = h.process(DEV, act) + h.advance_watermark(T0)
    assert of(CommandRequest, out) == []
    (blocked,) = of(AuditDecision, out)
    assert blocked.outcome is AuditOutcome.BLOCKED
    assert ReasonCode.WEATHER_UNKNOWN in blocked.reason_codes


def test_device_stage_judges_a_late_dr_event_against_the_weather_as_of_now() -> None:
    """A DR event delivered 20 min late, after the weather aged out: judged as of the stage's
    watermark (weather 40 min old, Grid-Follow), not as of its own announcement (when the
    weather was 20 min old and fresh)."""
    h = Harness(DeviceStage(DecodedInputs(), DevicePolicy(), WETBULB)).open()
    h.process_broadcast(weather_entry(T0))
    h.process(DEV, registry(DEV))
    late = T0 + 20 * MINUTE_MS
    h.advance_watermark(T0 + 40 * MINUTE_MS)
    h.process(DEV, Telemetry(DEV, T0 + 40 * MINUTE_MS, 2.0, True, True, False, "t", CAUSE))
    act = Activation(
        DEV, REGION, "ev-1", Action.CURTAIL, late, late + HOUR_MS, 1, False, "a", CAUSE, late
    )
    out = h.process(DEV, act)
    assert of(CommandRequest, out) == []
    (blocked,) = of(AuditDecision, out)
    assert blocked.decided_ts_ms == T0 + 40 * MINUTE_MS
    assert ReasonCode.WEATHER_UNKNOWN in blocked.reason_codes


def test_device_stage_keeps_no_state_for_a_forgotten_device_that_a_region_still_names() -> None:
    """After retention, a Release or an event from the region's roster leaves no state entry
    (regression: an empty device state with no timer used to stay forever)."""
    policy = DevicePolicy(retention_ms=DAY_MS)
    h = Harness(DeviceStage(DecodedInputs(), policy, WETBULB)).open()
    h.process(DEV, registry(DEV))
    h.process(DEV, Telemetry(DEV, T0, 2.0, True, True, False, "t0", CAUSE))
    h.advance_watermark(T0 + DAY_MS)
    assert h.state_entries() == 0

    later = T0 + DAY_MS + MINUTE_MS
    assert h.process(DEV, Release(DEV, "rel", CAUSE, later)) == []
    assert h.state_entries() == 0
    act = Activation(
        DEV, REGION, "ev-2", Action.CURTAIL, later, later + MINUTE_MS, 1, False, "a", CAUSE, later
    )
    h.process(DEV, act)
    (blocked,) = h.advance_watermark(later)  # unknown again: protected
    assert ReasonCode.UNKNOWN_DEVICE in blocked.reason_codes
    h.advance_watermark(later + MINUTE_MS)
    assert h.state_entries() == 0
    assert h.pending_timers() == []


# RegionStage ----------------------------------------------------------------------------------


def test_region_stage_keeps_the_roster_expands_events_and_forgets_them_at_their_end() -> None:
    """Registrations fill the roster; an event reaches enrolled devices, a late one joins, a
    suspension releases the cooling loads; at the event's end its state and timer are gone."""
    h = Harness(RegionStage(WETBULB)).open()
    assert h.process(REGION, registry("a")) == []
    assert h.process(REGION, registry("b", cls=DeviceClass.EV_CHARGER, programs=("p2",))) == []
    assert sorted(h.state_value(REGION, "roster")) == ["a", "b"]

    start, end = T0 + 5 * MINUTE_MS, T0 + 65 * MINUTE_MS
    event = RegionEvent("ev-1", "p1", Action.CURTAIL, start, end, 1, False, "c", CAUSE)
    acts = h.process(REGION, EventForRegion(REGION, T0, event))
    assert [(a.device_id, a.event_id) for a in acts] == [("a", "ev-1")]
    assert h.pending_timers(REGION) == [end]

    (late,) = h.process(REGION, registry("c", ts=T0 + 10 * MINUTE_MS))
    assert isinstance(late, Activation)
    assert (late.device_id, late.event_id, late.ts_ms) == ("c", "ev-1", T0 + 10 * MINUTE_MS)

    hot = WeatherInput(REGION, T0 + 20 * MINUTE_MS, 35.0, 90.0, None, "w", CAUSE)
    out = h.process(REGION, hot)
    ((key, raw),) = [o for o in out if isinstance(o, tuple)]
    assert key == region_key(REGION)
    assert codec.decode_weather(raw).suspended
    assert [a.kind for a in of(Alert, out)] == [AlertKind.WET_BULB_SUSPEND]
    assert sorted(r.device_id for r in of(Release, out)) == ["a", "c"]

    # The weather of minute 20 aged out at minute 50, before the event's end at minute 65.
    assert [a.kind for a in of(Alert, h.advance_watermark(end))] == [AlertKind.GRID_FOLLOW]
    assert h.state_value(REGION, "dr-events") is None
    assert h.pending_timers() == []
    assert sorted(h.state_value(REGION, "roster")) == ["a", "b", "c"]
    assert h.state_entries() == 2  # the roster and the weather, which live as long as the region


def test_region_stage_sends_a_cancellation_and_keeps_the_event_ended_until_its_end() -> None:
    """A cancelled event reaches enrolled devices as a cancellation; the same event re-sent
    (an older record, or the original again) does not bring it back; at its end it is gone."""
    h = Harness(RegionStage(WETBULB)).open()
    h.process(REGION, registry("a"))
    end = T0 + MINUTE_MS
    event = RegionEvent("ev-1", "p1", Action.CURTAIL, T0, end, 1, False, "c", CAUSE, None, None, T0)
    h.process(REGION, EventForRegion(REGION, T0, event))
    cancel = dataclasses.replace(event, cancelled=True, correlation_id="x", issued_ts_ms=T0 + 1)
    (act,) = h.process(REGION, EventForRegion(REGION, T0 + 1, cancel))
    assert act.cancelled
    assert h.process(REGION, EventForRegion(REGION, T0 + 2, event)) == []
    newer = dataclasses.replace(event, issued_ts_ms=T0 + 5)
    assert h.process(REGION, EventForRegion(REGION, T0 + 5, newer)) == []
    assert h.advance_watermark(end) == []
    assert h.state_value(REGION, "dr-events") is None
    assert h.pending_timers() == []


def test_region_stage_ignores_an_older_record_of_an_event_and_updates_on_a_newer_one() -> None:
    """The newest issue of an event wins: an older record re-sent expands to nothing."""
    h = Harness(RegionStage(WETBULB)).open()
    h.process(REGION, registry("a"))
    end = T0 + MINUTE_MS
    event = RegionEvent("ev-1", "p1", Action.CURTAIL, T0, end, 1, False, "c", CAUSE, None, None, T0)
    longer = dataclasses.replace(event, end_ts_ms=end + MINUTE_MS, issued_ts_ms=T0 + 10)
    (first,) = h.process(REGION, EventForRegion(REGION, T0 + 10, longer))
    assert first.end_ts_ms == end + MINUTE_MS
    assert h.process(REGION, EventForRegion(REGION, T0, event)) == []


def test_region_stage_releases_a_cooling_load_registered_into_a_suspended_region() -> None:
    """A thermostat whose record arrives after the suspension is released too (the suspension's
    own releases named only the devices already on the roster)."""
    h = Harness(RegionStage(WETBULB)).open()
    h.process(REGION, WeatherInput(REGION, T0, 35.0, 90.0, None, "w", CAUSE))
    (release,) = h.process(REGION, registry("a", ts=T0 + 1))
    assert isinstance(release, Release)
    assert release.device_id == "a"
    assert h.process(REGION, registry("b", ts=T0 + 2, cls=DeviceClass.EV_CHARGER)) == []


def test_roster_keeper_takes_a_moved_or_deleted_device_off_its_old_region_roster() -> None:
    """A device registered in the north, moved south, then deleted: each region's roster names
    it only while it is there, and the keeper forgets it with its record."""
    keeper = Harness(RosterKeeper()).open()
    regions = Harness(RegionStage(WETBULB)).open()

    def record(value: Any) -> None:
        for change in keeper.process(value.device_id, value):
            key = change.info.region_id if isinstance(change, RegistryUpdate) else change.region_id
            assert regions.process(key, change) == []

    def rosters() -> dict[str, list[str]]:
        return {r: sorted(regions.state_value(r, "roster") or {}) for r in ("north", "south")}

    record(registry("a"))
    record(registry("b"))
    assert rosters() == {"north": ["a", "b"], "south": []}
    moved = DeviceInfo(DeviceClass.THERMOSTAT, PriorityLevel.STANDARD, "south", ("p1",), 4.5)
    record(RegistryUpdate("a", moved, "r-a2", CAUSE, T0 + 1))
    assert rosters() == {"north": ["b"], "south": ["a"]}
    record(Deregistration("a", "del-a", CAUSE, T0 + 2))
    record(Deregistration("nobody", "del-x", CAUSE, T0 + 3))  # never registered: nothing
    assert rosters() == {"north": ["b"], "south": []}
    record(RegistryUpdate("b", moved, "r-b-old", CAUSE, T0 - 1))  # an older record re-sent
    assert rosters() == {"north": ["b"], "south": []}
    assert keeper.state_value("a", "region") is None
    assert keeper.state_value("b", "region") == "north"
    assert keeper.state_entries() == 2  # b's region and the time of its record


# BudgetStage ----------------------------------------------------------------------------------


def budget_request(n: int, ts: int = T0, priority: int = 1) -> CommandRequest:
    return CommandRequest(f"cmd-{n}", f"dev-{n}", REGION, Action.CURTAIL, priority, ts, "c", CAUSE)


def test_budget_stage_blocks_a_withdrawn_request_on_arrival_even_before_its_next_window() -> None:
    """Budget 2: dev-2's CURTAIL is DEFERRED to the next window; its device turns LIFE_SAFETY
    and withdraws, stamped after that window opens, while the watermark is still short of it.
    The request is BLOCKED on the withdrawal's arrival (the RESTORE that follows it must be the
    last word) and never released when the window opens; no entry or index is left."""
    h = Harness(BudgetStage(BudgetPolicy(commands_per_window=2, window_ms=10_000), WETBULB)).open()
    h.process_broadcast(weather_entry())
    for n in range(3):
        assert h.process(REGION, budget_request(n, T0 + 5)) == []  # each waits for its time
    out = h.advance_watermark(T0 + 5)
    assert [c.command_id for c in of(DeviceCommand, out)] == ["cmd-0", "cmd-1"]
    assert sorted(h.state_value(REGION, "by-device")) == ["dev-2"]
    why = (ReasonCode.LIFE_SAFETY_EXCLUSION,)
    arrival = h.process(REGION, Withdrawal("dev-2", REGION, why, "w", CAUSE, T0 + 15_000))
    (blocked,) = of(AuditDecision, arrival)
    assert (blocked.device_id, blocked.outcome, blocked.reason_codes) == (
        "dev-2", AuditOutcome.BLOCKED, why,
    )  # fmt: skip
    assert of(DeviceCommand, h.advance_watermark(T0 + 30_000)) == []
    assert h.state_value(REGION, "waiting") is None
    assert h.state_value(REGION, "by-device") is None


def test_budget_stage_defers_over_budget_and_releases_at_the_next_window() -> None:
    """Two per window: requests wait for the watermark to reach their time, the third is
    DEFERRED and goes out at the next window's timer; then nothing waits and no timer is left."""
    h = Harness(BudgetStage(BudgetPolicy(commands_per_window=2, window_ms=10_000), WETBULB)).open()
    h.process_broadcast(weather_entry())
    out = [o for n in range(3) for o in h.process(REGION, budget_request(n, T0 + n))]
    assert out == []
    out = h.advance_watermark(T0 + 2)
    assert [c.command_id for c in of(DeviceCommand, out)] == ["cmd-0", "cmd-1"]
    assert [a.outcome for a in of(AuditDecision, out)][-1] is AuditOutcome.DEFERRED
    assert sorted(h.state_value(REGION, "waiting")) == ["cmd-2"]
    assert h.pending_timers(REGION) == [T0 + 10_000]

    assert h.advance_watermark(T0 + 9_999) == []
    released = h.advance_watermark(T0 + 10_000)
    assert [c.command_id for c in of(DeviceCommand, released)] == ["cmd-2"]
    assert h.state_value(REGION, "waiting") is None
    assert h.pending_timers() == []


def test_budget_stage_releases_on_a_quiet_feed_after_the_hold() -> None:
    """No input moves the watermark after the requests: after `hold_ms` of processing time
    they go out anyway, in priority order, as of the newest requested time."""
    policy = BudgetPolicy(commands_per_window=1, window_ms=10_000, hold_ms=1_000)
    h = Harness(BudgetStage(policy, WETBULB)).open()
    h.process_broadcast(weather_entry())
    h.processing_time = 5_000
    h.process(REGION, budget_request(0, T0, priority=5))
    h.process(REGION, budget_request(1, T0, priority=1))
    assert h.advance_processing_time(5_999) == []
    out = h.advance_processing_time(6_000)
    assert [c.command_id for c in of(DeviceCommand, out)] == ["cmd-1"]
    assert [a.outcome for a in of(AuditDecision, out)] == [
        AuditOutcome.EMITTED,
        AuditOutcome.DEFERRED,
    ]
    assert h.pending_timers(REGION) == [T0, T0 + 10_000]


def test_budget_stage_on_a_quiet_feed_sends_a_curtail_before_the_restore_that_undoes_it() -> None:
    """A CURTAIL, then its event's end (a withdrawal and a RESTORE, minutes later in event
    time) arrive before the watermark moves: after the hold they go out instant by instant,
    the CURTAIL at its time and the RESTORE after it; the withdrawal, held in state, is gone."""
    policy = BudgetPolicy(commands_per_window=2, window_ms=10_000, hold_ms=1_000)
    h = Harness(BudgetStage(policy, WETBULB)).open()
    h.process_broadcast(weather_entry())
    h.processing_time = 5_000
    end = T0 + 5 * 60_000
    assert h.process(REGION, budget_request(0, T0)) == []
    assert (
        h.process(REGION, Withdrawal("dev-0", REGION, (ReasonCode.DR_EVENT,), "w", CAUSE, end))
        == []
    )
    assert h.state_value(REGION, "withdrawn") is not None
    restore = CommandRequest("r-0", "dev-0", REGION, Action.RESTORE, 1, end, "c", CAUSE)
    assert h.process(REGION, restore) == []  # behind the CURTAIL it undoes
    out = h.advance_processing_time(6_000)
    assert [(c.command_id, c.issued_ts_ms) for c in of(DeviceCommand, out)] == [
        ("cmd-0", T0), ("r-0", end),
    ]  # fmt: skip
    assert [h.state_value(REGION, n) for n in ("waiting", "by-device", "withdrawn")] == [None] * 3


def test_budget_stage_spends_a_window_on_the_higher_priority_whatever_came_first() -> None:
    """Requests of one instant compete by DR priority before the budget is spent: the
    priority-1 ones arrive last and still go out first; the others wait a window."""
    h = Harness(BudgetStage(BudgetPolicy(commands_per_window=2, window_ms=10_000), WETBULB)).open()
    h.process_broadcast(weather_entry())
    for n, priority in enumerate([5, 5, 1, 1]):
        h.process(REGION, budget_request(n, T0, priority=priority))
    first = h.advance_watermark(T0)
    assert [c.command_id for c in of(DeviceCommand, first)] == ["cmd-2", "cmd-3"]
    deferred = [a for a in of(AuditDecision, first) if a.outcome is AuditOutcome.DEFERRED]
    assert [a.reason_codes for a in deferred] == [(ReasonCode.RATE_LIMITED,)] * 2
    later = h.advance_watermark(T0 + 10_000)
    assert [c.command_id for c in of(DeviceCommand, later)] == ["cmd-0", "cmd-1"]


def test_budget_stage_blocks_a_waiting_request_when_the_region_is_suspended_at_release() -> None:
    """The broadcast weather turns to suspension while a request waits: it is BLOCKED."""
    h = Harness(BudgetStage(BudgetPolicy(commands_per_window=1, window_ms=10_000), WETBULB)).open()
    h.process_broadcast(weather_entry())
    h.process(REGION, budget_request(0))
    h.process(REGION, budget_request(1))
    assert len(of(DeviceCommand, h.advance_watermark(T0))) == 1
    h.process_broadcast(weather_entry(T0 + 5_000, 29.0, suspended=True))
    released = h.advance_watermark(T0 + 10_000)
    assert of(DeviceCommand, released) == []
    (blocked,) = of(AuditDecision, released)
    assert blocked.outcome is AuditOutcome.BLOCKED
    assert blocked.reason_codes == (ReasonCode.WET_BULB_SUSPEND,)
    assert h.state_value(REGION, "waiting") is None
    assert h.pending_timers() == []
    assert h.broadcast_value(CONTEXT.name, region_key(REGION)) is not None


budget_script = st.lists(
    st.one_of(
        st.tuples(st.just("request"), st.integers(-3_000, 6_000), st.integers(0, 3)),
        st.tuples(st.just("advance"), st.integers(0, 15_000)),
        st.tuples(st.just("weather"), st.booleans()),
    ),
    max_size=30,
)


@settings(max_examples=examples(60), deadline=None)
@given(budget_script)
def test_budget_stage_never_sends_into_a_suspended_region_and_ends_clean(
    script: list[tuple],
) -> None:
    """Property: with requests (some late), watermarks and weather in any order, no load-reducing
    command leaves while the broadcast weather suspends the region, every request ends EMITTED
    or BLOCKED once, and at the end nothing waits and no timer is left."""
    h = Harness(BudgetStage(BudgetPolicy(commands_per_window=2, window_ms=10_000), WETBULB)).open()
    clock = T0
    h.process_broadcast(weather_entry(clock))
    suspended = False
    sent: list[str] = []
    out: list[Any] = []

    def advance(to: int) -> None:
        if to > h.watermark:
            for o in h.advance_watermark(to):
                assert not (isinstance(o, DeviceCommand) and suspended)
                out.append(o)

    for n, (op, *args) in enumerate(script):
        if op == "request":
            req = budget_request(n, max(T0, clock + args[0]), priority=args[1])
            sent.append(req.device_id)
            out += h.process(REGION, req)
        elif op == "advance":
            clock += args[0]
            advance(clock)
        else:
            suspended = args[0]
            h.process_broadcast(weather_entry(max(T0, h.watermark), 29.0, suspended=suspended))
    h.process_broadcast(weather_entry(clock + DAY_MS))  # fresh and cool: let everything drain
    suspended = False
    for k in range(len(script) + 1):  # window by window, each releases its budget
        advance(clock + DAY_MS + k * 10_000)

    finished = [
        o.device_id
        for o in of(AuditDecision, out)
        if o.outcome in {AuditOutcome.EMITTED, AuditOutcome.BLOCKED}
    ]
    assert sorted(finished) == sorted(sent)
    assert h.state_value(REGION, "waiting") is None
    assert h.pending_timers() == []


# PipelineWatch --------------------------------------------------------------------------------


def test_pipeline_watch_publishes_a_freeze_and_stops_ticking_once_the_source_is_silent() -> None:
    """A laggy heartbeat publishes frozen facts; silence publishes Grid-Follow, then no ticks."""
    policy = PipelinePolicy()
    h = Harness(PipelineWatch(policy)).open()
    h.processing_time = T0
    out = h.process("*", Heartbeat(0, T0, T0 - 61 * SECOND_MS))
    ((key, raw),) = [o for o in out if isinstance(o, tuple)]
    assert key == PIPELINE_KEY
    assert codec.decode_pipeline(raw).facts.frozen
    assert [a.kind for a in of(Alert, out)] == [AlertKind.SAFETY_FREEZE]
    assert h.pending_timers(processing=True) == [T0 + policy.tick_ms]

    fired: list[Any] = []
    for t in range(T0, T0 + 2 * policy.silence_ms, policy.tick_ms):
        fired += h.advance_processing_time(t)
    kinds = [a.kind for a in of(Alert, fired)]
    assert kinds == [AlertKind.SAFETY_FREEZE_CLEARED, AlertKind.GRID_FOLLOW]
    assert h.pending_timers(processing=True) == []
    assert h.state_value("*", "tick") is None


def test_a_restored_pipeline_watch_counts_no_silence_for_the_time_the_job_was_down() -> None:
    """Restored ten minutes after its last heartbeat (an upgrade), the watch's overdue tick
    raises no GRID_FOLLOW; a source still silent a silence period after the restore does."""
    policy = PipelinePolicy()
    before = Harness(PipelineWatch(policy)).open()
    before.processing_time = T0
    before.process("*", Heartbeat(0, T0, T0 - SECOND_MS))

    after = Harness(PipelineWatch(policy))  # a new instance on the checkpointed state
    after.store, after.timers = dict(before.store), dict(before.timers)
    after.open()
    restored = T0 + 10 * MINUTE_MS
    after.processing_time = restored
    quiet: list[Any] = []
    for t in range(restored, restored + policy.silence_ms + 1, policy.tick_ms):
        quiet += after.advance_processing_time(t)
    assert of(Alert, quiet) == []
    later = after.advance_processing_time(restored + policy.silence_ms + policy.tick_ms)
    assert [a.kind for a in of(Alert, later)] == [AlertKind.GRID_FOLLOW]


# RegionStage: Grid-Follow when the weather ages out ------------------------------------------

AGE_OUT = WETBULB.max_age_ms + 1  # from an observation to the instant it is too old


def observation(ts: int) -> WeatherInput:
    return WeatherInput(REGION, ts, 25.0, 40.0, None, f"w{ts}", CAUSE)


def stored_weather(h: Harness) -> RegionWeather:
    raw = h.state_bytes(REGION, "weather")
    assert raw is not None
    return codec.decode_weather(raw)


def test_region_stage_raises_grid_follow_once_when_weather_ages_out_and_clears_on_return() -> None:
    """One timer at the newest weather's deadline, moved by newer weather; it raises one
    GRID_FOLLOW, newer weather raises GRID_FOLLOW_CLEARED; only the weather state remains."""
    h = Harness(RegionStage(WETBULB)).open()
    h.process(REGION, observation(T0))
    assert h.pending_timers(REGION) == [T0 + AGE_OUT]
    h.process(REGION, observation(T0 + 10 * MINUTE_MS))
    assert h.pending_timers(REGION) == [T0 + 10 * MINUTE_MS + AGE_OUT]  # moved, none stray

    assert h.advance_watermark(T0 + 10 * MINUTE_MS + AGE_OUT - 1) == []
    fired = h.advance_watermark(T0 + 10 * MINUTE_MS + AGE_OUT)
    (alert,) = of(Alert, fired)
    assert (alert.kind, alert.region_id) == (AlertKind.GRID_FOLLOW, REGION)
    assert stored_weather(h).aged_out
    assert h.pending_timers() == []
    assert h.advance_watermark(T0 + DAY_MS) == []  # once per episode

    back = T0 + DAY_MS + 1
    out = h.process(REGION, observation(back))
    assert [a.kind for a in of(Alert, out)] == [AlertKind.GRID_FOLLOW_CLEARED]
    ((key, raw),) = [o for o in out if isinstance(o, tuple)]
    assert key == region_key(REGION)
    assert not codec.decode_weather(raw).aged_out
    assert h.pending_timers(REGION) == [back + AGE_OUT]

    kinds = [a.kind for a in of(Alert, h.advance_watermark(back + AGE_OUT))]
    assert kinds == [AlertKind.GRID_FOLLOW]
    assert h.pending_timers() == []
    assert h.state_entries() == 1  # the weather, which lives as long as the region


def test_region_stage_keeps_a_dr_end_timer_that_shares_the_weather_deadline() -> None:
    """Moving the weather's timer leaves a DR event's end timer at the same instant in place;
    that timer forgets the event and, the weather being fresh, raises nothing."""
    h = Harness(RegionStage(WETBULB)).open()
    h.process(REGION, observation(T0))
    deadline = T0 + AGE_OUT
    event = RegionEvent("ev-1", "p1", Action.CURTAIL, T0, deadline, 1, False, "c", CAUSE)
    h.process(REGION, EventForRegion(REGION, T0, event))
    assert h.pending_timers(REGION) == [deadline]

    h.process(REGION, observation(T0 + 5 * MINUTE_MS))
    assert h.pending_timers(REGION) == [deadline, deadline + 5 * MINUTE_MS]
    assert h.advance_watermark(deadline) == []
    assert h.state_value(REGION, "dr-events") is None
    assert h.pending_timers(REGION) == [deadline + 5 * MINUTE_MS]

    (alert,) = of(Alert, h.advance_watermark(deadline + 5 * MINUTE_MS))
    assert alert.kind is AlertKind.GRID_FOLLOW
    assert h.pending_timers() == []
    assert h.state_entries() == 1


def test_region_stage_late_weather_already_too_old_does_not_clear_grid_follow() -> None:
    """Weather arriving after its own deadline is judged as of now, not as of its own time: it
    is already too old, so Grid-Follow stays, with no CLEARED and no second GRID_FOLLOW."""
    h = Harness(RegionStage(WETBULB)).open()
    h.process(REGION, observation(T0))
    h.advance_watermark(T0 + 2 * AGE_OUT)
    late = T0 + AGE_OUT // 2  # newer than T0, already too old at the watermark
    out = h.process(REGION, observation(late))
    assert of(Alert, out) == []
    assert stored_weather(h).aged_out
    assert stored_weather(h).observed_ts_ms == late
    assert of(Alert, h.advance_watermark(T0 + 3 * AGE_OUT)) == []
    assert h.pending_timers() == []
    assert h.state_entries() == 1


# Metrics ----------------------------------------------------------------------------------------


def gauge(h: Harness, name: str) -> int | None:
    """A gauge's (or an unlabelled counter's) value; checks every metric so far is declared."""
    assert {key[-1] for key in h.metrics} <= {*metrics.COUNTERS, *metrics.GAUGES}
    return h.metrics.get(("gridstream", name))


def test_device_stage_counts_readings_latency_at_the_flush_and_stale_devices_while_stale() -> None:
    """Readings reach the latency histogram at the next flush timer, not before; a device is
    counted stale from its TELEMETRY_LOSS to its next reading."""
    h = Harness(DeviceStage(DecodedInputs(), DevicePolicy(), WETBULB)).open()
    h.process(DEV, registry(DEV))
    for minute in (0, 1):
        h.process(DEV, Telemetry(DEV, T0 + minute * MINUTE_MS, 2.0, True, True, False, "t", CAUSE))
    assert gauge(h, "ingestion_latency_ms_count") is None
    (flush,) = h.pending_timers(processing=True)
    h.advance_processing_time(flush)
    # The readings were stamped long before this test's wall clock: both over the last bound.
    assert gauge(h, "ingestion_latency_ms_count") == 2
    assert h.metrics[("gridstream", "le=+Inf", "ingestion_latency_ms_bucket")] == 2
    assert h.metrics[("gridstream", "le=60000", "ingestion_latency_ms_bucket")] == 0
    assert h.pending_timers(processing=True) == []

    lost = h.advance_watermark(T0 + MINUTE_MS + DevicePolicy().iot_silence_ms)
    assert [a.kind for a in of(Alert, lost)] == [AlertKind.TELEMETRY_LOSS]
    assert gauge(h, "stale_devices") == 1
    h.process(DEV, Telemetry(DEV, T0 + DAY_MS, 2.0, True, True, False, "back", CAUSE))
    assert gauge(h, "stale_devices") == 0


@settings(max_examples=examples(60), deadline=None)
@given(st.lists(device_inputs, max_size=30))
def test_device_stage_gauges_its_keys_and_timers_exactly(
    inputs: list[tuple[str, str, int]],
) -> None:
    """Whatever the inputs, the device_keys gauge equals the keys with state and device_timers
    the timer instants their states ask for (`timers_for`), of which every pending timer is
    one; after retention both are back to zero with no state and no timer left."""
    policy = DevicePolicy(retention_ms=DAY_MS)
    h = Harness(DeviceStage(DecodedInputs(), policy, WETBULB)).open()
    h.process_broadcast(weather_entry())

    def wanted(key: str) -> frozenset[int]:
        return timers_for(device_codec.decode(h.state_bytes(key, "device") or b""), policy)

    for kind, device_id, minute in inputs:
        if kind == "watermark":
            h.advance_watermark(max(h.watermark, T0 + minute * MINUTE_MS))
        else:
            h.process(device_id, _device_input(kind, device_id, minute))
        keys = {key for _, key in h.store}
        assert (gauge(h, "device_keys") or 0) == len(keys)
        assert (gauge(h, "device_timers") or 0) == sum(len(wanted(k)) for k in keys)
        assert all(set(h.pending_timers(k)) <= wanted(k) for k in keys)
    h.advance_watermark(T0 + DAY_MS * 30)
    assert (gauge(h, "device_keys") or 0, gauge(h, "device_timers") or 0) == (0, 0)
    assert (h.state_entries(), h.pending_timers()) == (0, [])


def test_region_stage_gauges_follow_suspension_and_aged_out_weather() -> None:
    """A dangerous wet-bulb counts the region suspended, safe weather held long enough
    uncounts it, weather that ages out counts it Grid-Follow (and no longer suspended)."""
    h = Harness(RegionStage(WETBULB)).open()
    h.process(REGION, WeatherInput(REGION, T0, 35.0, 90.0, None, "hot", CAUSE))
    assert (gauge(h, "suspended_regions"), gauge(h, "grid_follow_regions")) == (1, None)
    h.process(REGION, observation(T0 + MINUTE_MS))
    assert gauge(h, "suspended_regions") == 1  # held until safe for `hold_ms`
    safe = T0 + MINUTE_MS + WETBULB.hold_ms
    h.process(REGION, observation(safe))
    assert gauge(h, "suspended_regions") == 0
    h.process(REGION, WeatherInput(REGION, safe + 1, 35.0, 90.0, None, "hot", CAUSE))
    assert gauge(h, "suspended_regions") == 1
    h.advance_watermark(safe + 1 + AGE_OUT)
    assert (gauge(h, "suspended_regions"), gauge(h, "grid_follow_regions")) == (0, 1)


def test_pipeline_watch_gauges_the_freeze_the_silent_source_and_the_lag() -> None:
    """A 61 s lag sets freeze and the lag gauge; silence sets source_silent."""
    policy = PipelinePolicy()
    h = Harness(PipelineWatch(policy)).open()
    h.processing_time = T0
    h.process("*", Heartbeat(0, T0, T0 - 61 * SECOND_MS))
    assert (gauge(h, "freeze"), gauge(h, "processing_lag_ms")) == (1, 61 * SECOND_MS)
    assert gauge(h, "source_silent") == 0
    for t in range(T0, T0 + 2 * policy.silence_ms, policy.tick_ms):
        h.advance_processing_time(t)
    assert (gauge(h, "freeze"), gauge(h, "source_silent")) == (0, 1)
    assert gauge(h, "processing_lag_ms") == 0  # no source reported lately
