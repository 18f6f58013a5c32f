"""The device stage's decisions, attacked with random interleavings (DESIGN.md safety rules)."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from functions.device import (
    Activation,
    Approval,
    CommandRequest,
    Context,
    Deregistration,
    DevicePolicy,
    Event,
    RegistryUpdate,
    Release,
    Step,
    Telemetry,
    Timer,
    Withdrawal,
    step,
    timers_for,
)
from functions.interlocks import SCADA_CLASSES, PipelineFacts
from functions.wetbulb import RegionMode
from schemas.models import (
    ID_CHARS,
    LOAD_REDUCING_ACTIONS,
    Action,
    AlertKind,
    ApprovalDecision,
    AuditDecision,
    AuditOutcome,
    Cause,
    DeviceClass,
    PriorityLevel,
    ReasonCode,
    Recommendation,
)
from state.device import DeviceInfo, DeviceState
from tests.vocabulary import MINUTE_MS, SECOND_MS, examples

pytestmark = pytest.mark.unit

DEVICE = "dev-1"
T0 = 1_790_000_000_000
POLICY = DevicePolicy()
CAUSE = Cause(source_topic="test", source_partition=0, source_offset=0)


def telemetry(ts: int, override: bool = False, good: bool = True) -> Telemetry:
    return Telemetry(DEVICE, ts, 2.0, True, good, override, f"t{ts}", CAUSE)


def registry(priority: PriorityLevel, cls: DeviceClass = DeviceClass.THERMOSTAT) -> RegistryUpdate:
    return RegistryUpdate(DEVICE, DeviceInfo(cls, priority, "north", ("p1",), 5.0), "r", CAUSE, T0)


def activation(
    start: int, end: int, action: Action = Action.CURTAIL, cancelled: bool = False
) -> Activation:
    return Activation(DEVICE, "north", "ev-1", action, start, end, 1, cancelled, "a", CAUSE, T0)


@dataclasses.dataclass
class Driver:
    """Feeds events like the Flink adapter: fires due timers as the watermark passes them."""

    region: RegionMode = RegionMode.NORMAL
    pipeline: PipelineFacts = dataclasses.field(default_factory=PipelineFacts)
    state: DeviceState | None = None
    watermark: int = T0
    log: list[tuple[Context, Step]] = dataclasses.field(default_factory=list)

    def ctx(self, now: int) -> Context:
        return Context(now, self.region, self.pipeline, POLICY)

    def send(self, event: Event, now: int | None = None) -> Step:
        ctx = self.ctx(self.watermark if now is None else now)
        result = step(self.state, event, ctx)
        self.state = result.state
        self.log.append((ctx, result))
        return result

    def advance(self, to: int) -> list[Step]:
        fired = []
        while True:
            due = sorted(t for t in timers_for(self.state, POLICY) if t <= to)
            if not due or self.state is None:
                break
            self.watermark = max(self.watermark, due[0])
            fired.append(self.send(Timer(DEVICE, due[0])))
            # Flink fires a timer in the past again at every watermark: one that decides
            # nothing must not be asked for again.
            assert due[0] not in timers_for(self.state, POLICY), f"timer {due[0]} kept"
        self.watermark = max(self.watermark, to)
        return fired

    def outputs(self, kind: type) -> list:
        return [o for _, s in self.log for o in s.outputs if isinstance(o, kind)]


def test_hospital_circuit_never_receives_a_curtail() -> None:
    """A LIFE_SAFETY device in a DR event is blocked with LIFE_SAFETY_EXCLUSION."""
    d = Driver()
    d.send(registry(PriorityLevel.LIFE_SAFETY))
    d.send(telemetry(T0))
    d.send(activation(T0 + MINUTE_MS, T0 + 60 * MINUTE_MS))
    d.advance(T0 + MINUTE_MS)
    assert d.outputs(CommandRequest) == []
    blocked = d.outputs(AuditDecision)
    assert any("LIFE_SAFETY_EXCLUSION" in a.reason_codes for a in blocked)


def test_unknown_device_is_protected_until_its_record_arrives() -> None:
    """No registry record: the DR start is blocked as UNKNOWN_DEVICE."""
    d = Driver()
    d.send(telemetry(T0))
    d.send(activation(T0, T0 + 60 * MINUTE_MS))
    assert d.outputs(CommandRequest) == []
    assert {"UNKNOWN_DEVICE", "LIFE_SAFETY_EXCLUSION"} <= set(
        d.outputs(AuditDecision)[0].reason_codes
    )


def test_enrolled_device_is_curtailed_at_start_and_restored_at_end() -> None:
    """An event announced ahead acts at its start time (timer), and restores at its end."""
    d = Driver()
    d.send(registry(PriorityLevel.STANDARD))
    d.send(telemetry(T0))
    d.send(activation(T0 + 5 * MINUTE_MS, T0 + 10 * MINUTE_MS))
    assert d.outputs(CommandRequest) == []
    d.send(telemetry(T0 + 4 * MINUTE_MS))
    d.advance(T0 + 5 * MINUTE_MS)
    d.send(telemetry(T0 + 9 * MINUTE_MS))
    d.advance(T0 + 10 * MINUTE_MS)
    assert [c.action for c in d.outputs(CommandRequest)] == [Action.CURTAIL, Action.RESTORE]
    assert d.state is not None
    assert d.state.participation is None


def test_the_events_setpoint_offset_travels_with_its_command_and_not_with_the_restore() -> None:
    """A SETPOINT_OFFSET event's offset is in the command request; RESTORE carries none."""
    d = Driver()
    d.send(registry(PriorityLevel.STANDARD))
    d.send(telemetry(T0))
    event = activation(T0, T0 + 5 * MINUTE_MS, Action.SETPOINT_OFFSET)
    d.send(dataclasses.replace(event, setpoint_offset_c=2.5))
    d.send(telemetry(T0 + 4 * MINUTE_MS))
    d.advance(T0 + 5 * MINUTE_MS)
    sizes = [(c.action, c.setpoint_offset_c) for c in d.outputs(CommandRequest)]
    assert sizes == [(Action.SETPOINT_OFFSET, 2.5), (Action.RESTORE, None)]


def test_silent_device_is_stale_gets_one_loss_alert_and_no_command() -> None:
    """Silence past the timeout: one TELEMETRY_LOSS, and the DR start is TELEMETRY_STALE."""
    d = Driver()
    d.send(registry(PriorityLevel.STANDARD))
    d.send(telemetry(T0))
    d.send(activation(T0 + 20 * MINUTE_MS, T0 + 60 * MINUTE_MS))
    d.advance(T0 + 30 * MINUTE_MS)
    losses = [a for a in d.outputs(object) if getattr(a, "kind", None) is AlertKind.TELEMETRY_LOSS]
    assert len(losses) == 1
    assert d.outputs(CommandRequest) == []
    d.send(telemetry(T0 + 31 * MINUTE_MS), now=T0 + 31 * MINUTE_MS)
    assert [c.action for c in d.outputs(CommandRequest)] == [Action.CURTAIL]


def test_readings_leave_the_armed_watch_timer_in_place_and_the_loss_comes_at_its_deadline() -> None:
    """Readings do not move the device's one watch timer; when it fires early it re-arms at the
    new deadline, and TELEMETRY_LOSS is raised exactly at last reading + timeout."""
    d = Driver()
    d.send(registry(PriorityLevel.STANDARD))
    d.send(telemetry(T0))
    armed = timers_for(d.state, POLICY)
    assert armed == {T0 + POLICY.iot_silence_ms}
    last = T0 + 10 * MINUTE_MS
    for minute in range(1, 11):
        d.send(telemetry(T0 + minute * MINUTE_MS), now=T0 + minute * MINUTE_MS)
        assert timers_for(d.state, POLICY) == armed
    assert d.advance(T0 + POLICY.iot_silence_ms)[0].outputs == ()  # early: nothing is due
    assert timers_for(d.state, POLICY) == {last + POLICY.iot_silence_ms}
    (fired,) = d.advance(last + POLICY.iot_silence_ms)
    (loss,) = fired.outputs
    assert (loss.kind, loss.raised_ts_ms) == (
        AlertKind.TELEMETRY_LOSS,
        last + POLICY.iot_silence_ms,
    )
    assert timers_for(d.state, POLICY) == {last + POLICY.retention_ms}


def test_a_device_silent_past_its_timeout_is_stale_before_its_loss_timer_fires() -> None:
    """An activation decided after the timeout, before the watermark fired the loss timer, is
    still BLOCKED as TELEMETRY_STALE."""
    d = Driver()
    d.send(registry(PriorityLevel.STANDARD))
    d.send(telemetry(T0))
    late = T0 + POLICY.iot_silence_ms
    d.send(activation(late, late + 30 * MINUTE_MS), now=late)
    assert d.outputs(CommandRequest) == []
    (blocked,) = d.outputs(AuditDecision)
    assert "TELEMETRY_STALE" in blocked.reason_codes


def test_a_registered_device_that_never_reports_is_forgotten_after_the_retention_time() -> None:
    """A registry record alone arms the watch at retention; then no state and no timer remain."""
    d = Driver()
    d.send(registry(PriorityLevel.STANDARD))
    assert timers_for(d.state, POLICY) == {T0 + POLICY.retention_ms}
    d.advance(T0 + POLICY.retention_ms)
    assert d.state is None


def test_a_deleted_registry_record_restores_a_curtailed_device_and_protects_it_again() -> None:
    """A tombstone mid-event: RESTORE goes out, and the next event's start is blocked as an
    unknown device."""
    d = Driver()
    d.send(registry(PriorityLevel.STANDARD))
    d.send(telemetry(T0))
    d.send(activation(T0, T0 + 2 * MINUTE_MS))
    d.send(Deregistration(DEVICE, "gone", CAUSE, T0 + MINUTE_MS), now=T0 + MINUTE_MS)
    assert [c.action for c in d.outputs(CommandRequest)] == [Action.CURTAIL, Action.RESTORE]
    assert d.state is not None
    assert d.state.info is None
    later = T0 + 3 * MINUTE_MS
    d.advance(later)
    next_event = Activation(
        DEVICE, "north", "ev-2", Action.CURTAIL, later, later + MINUTE_MS, 1, False, "a2", CAUSE,
        later,
    )  # fmt: skip
    d.send(next_event, now=later)
    assert len(d.outputs(CommandRequest)) == 2
    assert "UNKNOWN_DEVICE" in d.outputs(AuditDecision)[-1].reason_codes


def test_a_curtailed_device_withdraws_its_request_when_it_goes_silent_or_turns_life_safety() -> (
    None
):
    """A load-reducing request may still wait for budget: silence withdraws it
    (TELEMETRY_STALE); a LIFE_SAFETY record withdraws it before the RESTORE goes out."""
    silent = Driver()
    silent.send(registry(PriorityLevel.STANDARD))
    silent.send(telemetry(T0))
    silent.send(activation(T0, T0 + 60 * MINUTE_MS))
    silent.advance(T0 + POLICY.iot_silence_ms)
    (withdrawal,) = silent.outputs(Withdrawal)
    assert withdrawal.reasons == (ReasonCode.TELEMETRY_STALE,)

    hospital = Driver()
    hospital.send(registry(PriorityLevel.STANDARD))
    hospital.send(telemetry(T0))
    hospital.send(activation(T0, T0 + 60 * MINUTE_MS))
    result = hospital.send(registry(PriorityLevel.LIFE_SAFETY))
    kinds = [type(o).__name__ for o in result.outputs]
    assert kinds == ["Withdrawal", "CommandRequest"]
    assert ReasonCode.LIFE_SAFETY_EXCLUSION in result.outputs[0].reasons
    assert result.outputs[1].action is Action.RESTORE


def test_a_start_blocked_by_a_freeze_is_taken_at_the_first_reading_after_it_lifts() -> None:
    """Blocked SAFETY_FREEZE once; readings while still frozen add nothing; the first reading
    after the freeze lifts requests the CURTAIL."""
    d = Driver()
    d.send(registry(PriorityLevel.STANDARD))
    d.send(telemetry(T0))
    d.pipeline = PipelineFacts(frozen=True)
    d.send(activation(T0, T0 + 60 * MINUTE_MS))
    (blocked,) = d.outputs(AuditDecision)
    assert blocked.reason_codes == ("SAFETY_FREEZE",)
    assert d.send(telemetry(T0 + MINUTE_MS), now=T0 + MINUTE_MS).outputs == ()
    d.pipeline = PipelineFacts()
    resumed = d.send(telemetry(T0 + 2 * MINUTE_MS), now=T0 + 2 * MINUTE_MS)
    assert [(type(o), o.action) for o in resumed.outputs] == [(CommandRequest, Action.CURTAIL)]
    assert d.send(telemetry(T0 + 3 * MINUTE_MS), now=T0 + 3 * MINUTE_MS).outputs == ()


def test_a_rejected_switch_is_not_recommended_again_at_the_next_reading() -> None:
    """An operator's REJECT stands: later readings of the breaker raise no new recommendation."""
    d = Driver()
    d.send(registry(PriorityLevel.STANDARD, DeviceClass.FEEDER_BREAKER))
    d.send(telemetry(T0))
    d.send(activation(T0, T0 + 60 * MINUTE_MS, Action.SWITCH_OPEN))
    (rec,) = d.outputs(Recommendation)
    d.send(Approval(DEVICE, rec.recommendation_id, ApprovalDecision.REJECT, "op", "x", CAUSE, T0))
    for minute in range(1, 4):
        d.send(telemetry(T0 + minute * MINUTE_MS), now=T0 + minute * MINUTE_MS)
    assert len(d.outputs(Recommendation)) == 1
    assert d.outputs(CommandRequest) == []


def test_duplicate_reading_changes_nothing() -> None:
    """The same msg_id twice: DUPLICATE audited, state unchanged."""
    d = Driver()
    d.send(telemetry(T0))
    before = d.state
    result = d.send(telemetry(T0))
    assert result.state == before
    assert [a.outcome for a in result.outputs] == [AuditOutcome.DUPLICATE]


def test_scada_switch_waits_for_approval_and_rechecks_interlocks() -> None:
    """SWITCH_OPEN on a breaker becomes a recommendation; APPROVE after a suspension is BLOCKED."""
    d = Driver()
    d.send(registry(PriorityLevel.STANDARD, DeviceClass.FEEDER_BREAKER))
    d.send(telemetry(T0))
    d.send(activation(T0, T0 + 60 * MINUTE_MS, Action.SWITCH_OPEN))
    (rec,) = d.outputs(Recommendation)
    assert d.outputs(CommandRequest) == []
    d.region = RegionMode.SUSPENDED
    d.send(Approval(DEVICE, rec.recommendation_id, ApprovalDecision.APPROVE, "op", "x", CAUSE, T0))
    assert d.outputs(CommandRequest) == []
    assert d.outputs(AuditDecision)[-1].outcome is AuditOutcome.BLOCKED


def test_approval_in_time_with_interlocks_clear_emits_the_switch() -> None:
    """APPROVE before expiry, everything clear: the command follows."""
    d = Driver()
    d.send(registry(PriorityLevel.STANDARD, DeviceClass.FEEDER_BREAKER))
    d.send(telemetry(T0))
    d.send(activation(T0, T0 + 60 * MINUTE_MS, Action.SWITCH_OPEN))
    (rec,) = d.outputs(Recommendation)
    d.send(telemetry(T0 + 5 * SECOND_MS), now=T0 + 5 * SECOND_MS)
    d.send(Approval(DEVICE, rec.recommendation_id, ApprovalDecision.APPROVE, "op", "x", CAUSE, T0))
    assert [c.action for c in d.outputs(CommandRequest)] == [Action.SWITCH_OPEN]


# The property: random interleavings never break a safety rule --------------------------------

events = st.one_of(
    st.tuples(st.just("telemetry"), st.integers(-2 * MINUTE_MS, 20 * MINUTE_MS), st.booleans()),
    st.tuples(st.just("registry"), st.sampled_from(PriorityLevel), st.sampled_from(DeviceClass)),
    st.tuples(
        st.just("activation"),
        st.integers(0, 60 * MINUTE_MS),
        st.sampled_from([Action.CURTAIL, Action.SHED, Action.SWITCH_OPEN]),
        st.booleans(),
    ),
    st.tuples(st.just("release")),
    st.tuples(st.just("deregister")),
    st.tuples(st.just("approve"), st.sampled_from(ApprovalDecision)),
    st.tuples(st.just("advance"), st.integers(0, 30 * MINUTE_MS)),
    st.tuples(st.just("region"), st.sampled_from(RegionMode)),
    st.tuples(st.just("freeze"), st.booleans()),
)


@settings(max_examples=examples(300), deadline=None)
@given(st.lists(events, max_size=40))
def test_no_interleaving_emits_an_unsafe_command(script: list[tuple]) -> None:
    """Property: every load-reducing command request is for a registered, non-LIFE_SAFETY,
    fresh, not opted-out device in a NORMAL region without a freeze; SCADA switching only
    follows an operator's approval; no command id is requested twice."""
    d = Driver()
    clock = T0
    for op, *args in script:
        if op == "telemetry":
            d.send(telemetry(max(T0, d.watermark + args[0]), override=args[1]))
        elif op == "registry":
            d.send(registry(args[0], args[1]))
        elif op == "activation":
            start = d.watermark + args[0]
            d.send(activation(start, start + 30 * MINUTE_MS, args[1], cancelled=args[2]))
        elif op == "release":
            d.send(Release(DEVICE, "rel", CAUSE, T0))
        elif op == "deregister":
            d.send(Deregistration(DEVICE, "gone", CAUSE, T0))
        elif op == "approve":
            pending = d.state.pending if d.state else None
            rec_id = pending.recommendation_id if pending else "nothing-pending"
            d.send(Approval(DEVICE, rec_id, args[0], "op", "x", CAUSE, T0))
        elif op == "advance":
            clock = d.watermark + args[0]
            d.advance(clock)
        elif op == "region":
            d.region = args[0]
        elif op == "freeze":
            d.pipeline = PipelineFacts(frozen=args[0])

    seen_ids: set[str] = set()
    for ctx, result in d.log:
        for out in result.outputs:
            if not isinstance(out, CommandRequest):
                continue
            assert out.command_id not in seen_ids
            seen_ids.add(out.command_id)
            if out.action not in LOAD_REDUCING_ACTIONS:
                continue
            info = result.state.info if result.state else None
            assert info is not None
            assert info.priority is not PriorityLevel.LIFE_SAFETY
            assert ctx.region is RegionMode.NORMAL
            assert not ctx.pipeline.frozen
            assert result.state is not None
            assert not result.state.stale
            seen = result.state.last_seen_ms
            assert seen is None or ctx.now_ms < seen + POLICY.silence_ms(info)
            part = result.state.participation
            assert part is None or not part.opted_out or out.action is Action.SWITCH_OPEN
            if out.action is Action.SWITCH_OPEN and info.device_class in SCADA_CLASSES:
                assert any(
                    isinstance(o, AuditDecision) and o.outcome is AuditOutcome.APPROVED
                    for o in result.outputs
                )


def test_a_device_with_the_longest_id_raises_its_telemetry_loss() -> None:
    """A device id of the models' full length (128 characters): its loss timer raises the
    TELEMETRY_LOSS alert; the ids derived from the id stay valid ids (a 142-character cause id
    once failed the device stage at the timer, and again after every restart)."""
    device_id = "f" * ID_CHARS
    reading = dataclasses.replace(telemetry(T0), device_id=device_id)
    ctx = Context(reading.ts_ms, RegionMode.NORMAL)
    state = step(None, reading, ctx).state
    (deadline,) = timers_for(state, ctx.policy)

    result = step(state, Timer(device_id, deadline), Context(deadline, RegionMode.NORMAL))

    (alert,) = result.outputs
    assert (alert.kind, alert.device_id) == (AlertKind.TELEMETRY_LOSS, device_id)
