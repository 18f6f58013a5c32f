"""The device stage's decisions: one pure transition per input, keyed by device id.

`step(state, event, ctx) -> Step`; the Flink adapter reads state, calls it, writes or clears
state, reconciles timers (`timers_for`), and emits. Time is `ctx.now_ms` (event time).
Command requests go on to the region budget stage, which emits or defers them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from functions.interlocks import (
    SCADA_CLASSES,
    DeviceFacts,
    PipelineFacts,
    blocking_reasons,
    needs_operator,
)
from functions.wetbulb import RegionMode
from schemas import ids
from schemas.models import (
    Action,
    Alert,
    AlertKind,
    ApprovalDecision,
    AuditDecision,
    AuditOutcome,
    Cause,
    DeviceClass,
    ReasonCode,
    Recommendation,
    Severity,
)
from state.device import (
    DEDUPE_WINDOW,
    DeviceInfo,
    DeviceState,
    LastGood,
    Participation,
    PendingRecommendation,
)

COOLING_CLASSES = frozenset({DeviceClass.THERMOSTAT})
UNREGISTERED_REGION = "unregistered"  # the budget key of a device without a registry record


@dataclasses.dataclass(frozen=True)
class DevicePolicy:
    """Timeouts and lifetimes; the defaults are DESIGN.md's."""

    scada_silence_ms: int = 15_000
    iot_silence_ms: int = 15 * 60_000
    recommendation_ttl_ms: int = 10 * 60_000
    retention_ms: int = 7 * 24 * 3_600_000

    def silence_ms(self, info: DeviceInfo | None) -> int:
        """The device's telemetry timeout; an unregistered device gets the IoT one."""
        scada = info is not None and info.device_class in SCADA_CLASSES
        return self.scada_silence_ms if scada else self.iot_silence_ms


@dataclasses.dataclass(frozen=True)
class Context:
    """What the adapter knows besides the device's own state, at decision time."""

    now_ms: int
    region: RegionMode
    pipeline: PipelineFacts = dataclasses.field(default_factory=PipelineFacts)
    policy: DevicePolicy = dataclasses.field(default_factory=DevicePolicy)


# Inputs ---------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Telemetry:
    """A decoded SCADA or IoT reading; `good` is False when a quality flag is raised."""

    device_id: str
    ts_ms: int
    power_kw: float
    is_on: bool
    good: bool
    customer_override: bool
    correlation_id: str
    cause: Cause


@dataclasses.dataclass(frozen=True)
class RegistryUpdate:
    """The device's CIS record."""

    device_id: str
    info: DeviceInfo
    correlation_id: str
    cause: Cause
    ts_ms: int


@dataclasses.dataclass(frozen=True)
class Deregistration:
    """The CIS deleted the device's record (a tombstone on the compacted registry topic)."""

    device_id: str
    correlation_id: str
    cause: Cause
    ts_ms: int


@dataclasses.dataclass(frozen=True)
class Activation:
    """A DR event as it concerns this enrolled device (expanded upstream by region)."""

    device_id: str
    region_id: str
    event_id: str
    action: Action
    start_ts_ms: int
    end_ts_ms: int
    priority: int
    cancelled: bool
    correlation_id: str
    cause: Cause
    ts_ms: int
    setpoint_offset_c: float | None = None
    curtailment_pct: float | None = None


@dataclasses.dataclass(frozen=True)
class Release:
    """The region went into wet-bulb suspension: cooling curtailments are to be released."""

    device_id: str
    correlation_id: str
    cause: Cause
    ts_ms: int


@dataclasses.dataclass(frozen=True)
class Approval:
    """An operator's answer to one of this device's recommendations."""

    device_id: str
    recommendation_id: str
    decision: ApprovalDecision
    operator_id: str
    correlation_id: str
    cause: Cause
    ts_ms: int


@dataclasses.dataclass(frozen=True)
class Timer:
    """An event-time timer of this device fired."""

    device_id: str
    ts_ms: int


Event = Telemetry | RegistryUpdate | Deregistration | Activation | Release | Approval | Timer


# Outputs --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class CommandRequest:
    """A command that passed every interlock, for the region budget stage to release."""

    command_id: str
    device_id: str
    region_id: str
    action: Action
    priority: int
    requested_ts_ms: int
    correlation_id: str
    cause: Cause
    setpoint_offset_c: float | None = None
    curtailment_pct: float | None = None


@dataclasses.dataclass(frozen=True)
class Withdrawal:
    """The device no longer wants load reduced: a request of it still waiting for budget must
    not go out (the budget stage blocks it with `reasons`)."""

    device_id: str
    region_id: str
    reasons: tuple[ReasonCode, ...]
    correlation_id: str
    cause: Cause
    ts_ms: int


Output = CommandRequest | Withdrawal | Recommendation | AuditDecision | Alert


@dataclasses.dataclass(frozen=True)
class Step:
    """A transition's result: the new state (None = clear) and what to emit."""

    state: DeviceState | None
    outputs: tuple[Output, ...] = ()


# Timers ---------------------------------------------------------------------------------------


def timers_for(state: DeviceState | None, policy: DevicePolicy) -> frozenset[int]:
    """The event-time timers a device in `state` must hold; the adapter keeps exactly these."""
    del policy  # every timer of the state is in the state (the watch is armed by `step`)
    if state is None:
        return frozenset()
    wanted: set[int] = set()
    if state.watch_ms is not None:
        wanted.add(state.watch_ms)
    part = state.participation
    if part is not None:
        if not part.attempted and not part.opted_out:
            wanted.add(part.start_ts_ms)
        wanted.add(part.end_ts_ms)
    if state.pending is not None:
        wanted.add(state.pending.expires_ts_ms)
    return frozenset(wanted)


def _deadline(state: DeviceState, policy: DevicePolicy) -> int | None:
    """When the device next goes silent, or (already silent) is forgotten."""
    seen = state.last_seen_ms
    if seen is None:
        return None
    return seen + (policy.retention_ms if state.stale else policy.silence_ms(state.info))


def _armed(state: DeviceState, ctx: Context) -> DeviceState:
    """`state` with its watch timer armed no later than its next deadline.

    A reading pushes the deadline back but leaves the armed timer where it is: moving it would
    cost a timer deletion and registration per reading. When the early timer fires, `on_timer`
    finds nothing due and the watch is armed again at the new deadline, so a silence is still
    noticed exactly at its deadline. A device never seen is forgotten after the retention time.
    """
    due = _deadline(state, ctx.policy)
    if due is None:
        due = ctx.now_ms + ctx.policy.retention_ms if state.watch_ms is None else state.watch_ms
    if state.watch_ms is None or state.watch_ms > due:
        return dataclasses.replace(state, watch_ms=due)
    return state


# Transitions ----------------------------------------------------------------------------------


class _Out:
    """Collects outputs while a transition runs."""

    def __init__(self, device_id: str, state: DeviceState, ctx: Context) -> None:
        self.device_id = device_id
        self.ctx = ctx
        self.state = state
        self.items: list[Output] = []

    @property
    def region_id(self) -> str | None:
        return self.state.info.region_id if self.state.info else None

    def audit(
        self,
        outcome: AuditOutcome,
        action: Action | None,
        reasons: Iterable[ReasonCode],
        correlation_id: str,
        cause: Cause,
        **ids_: str,
    ) -> None:
        self.items.append(
            AuditDecision(
                device_id=self.device_id,
                correlation_id=correlation_id,
                decided_ts_ms=self.ctx.now_ms,
                action=action,
                outcome=outcome,
                reason_codes=tuple(reasons),
                region_id=self.region_id,
                cause=cause,
                **ids_,
            )
        )

    def withdraw(self, reasons: tuple[ReasonCode, ...], corr: str, cause: Cause) -> None:
        """Tell the budget stage to drop this device's waiting load-reducing request, if any."""
        region = self.region_id or UNREGISTERED_REGION
        self.items.append(Withdrawal(self.device_id, region, reasons, corr, cause, self.ctx.now_ms))

    def alert(
        self, kind: AlertKind, severity: Severity, message: str, corr: str, cause: Cause
    ) -> None:
        self.items.append(
            Alert(
                kind=kind,
                severity=severity,
                device_id=self.device_id,
                region_id=self.region_id,
                correlation_id=corr,
                raised_ts_ms=self.ctx.now_ms,
                message=message,
                cause=cause,
            )
        )

    def step(self) -> Step:
        return Step(self.state, tuple(self.items))


def _facts(state: DeviceState, ctx: Context) -> DeviceFacts:
    """The interlocks' view of the device at `ctx.now_ms`: silent past its timeout is stale,
    whether or not its loss timer has fired yet."""
    info = state.info
    part = state.participation
    seen = state.last_seen_ms
    return DeviceFacts(
        priority=info.priority if info else None,
        device_class=info.device_class if info else None,
        stale=state.stale
        or (seen is not None and ctx.now_ms >= seen + ctx.policy.silence_ms(info)),
        opted_out=part is not None and part.opted_out,
    )


def _attempt(out: _Out, action: Action, priority: int, corr: str, cause: Cause) -> bool:
    """Try one command through the interlocks; True when it was requested (not blocked)."""
    state, ctx = out.state, out.ctx
    reasons = blocking_reasons(action, _facts(state, ctx), ctx.region, ctx.pipeline)
    if reasons:
        out.audit(AuditOutcome.BLOCKED, action, reasons, corr, cause)
        return False
    info = state.info
    if needs_operator(action, info.device_class if info else None):
        if state.pending is None:
            rec_id = ids.recommendation_id(out.device_id, action, cause)
            expires = ctx.now_ms + ctx.policy.recommendation_ttl_ms
            out.items.append(
                Recommendation(
                    recommendation_id=rec_id,
                    device_id=out.device_id,
                    correlation_id=corr,
                    action=action,
                    created_ts_ms=ctx.now_ms,
                    expires_ts_ms=expires,
                    reason_codes=(ReasonCode.HITL_REQUIRED, ReasonCode.DR_EVENT),
                    rationale=f"{action} on SCADA device {out.device_id} needs operator sign-off",
                    cause=cause,
                )
            )
            out.state = dataclasses.replace(
                state, pending=PendingRecommendation(rec_id, action, expires)
            )
            out.audit(
                AuditOutcome.RECOMMENDED, action, (ReasonCode.HITL_REQUIRED,), corr, cause,
                recommendation_id=rec_id,
            )  # fmt: skip
        return False
    _request(out, action, priority, corr, cause)
    return True


def _request(out: _Out, action: Action, priority: int, corr: str, cause: Cause) -> None:
    region = out.region_id or UNREGISTERED_REGION
    part = out.state.participation
    amounts = part if part is not None and part.action is action else None  # the event's sizes
    out.items.append(
        CommandRequest(
            command_id=ids.command_id(out.device_id, action, cause),
            device_id=out.device_id,
            region_id=region,
            action=action,
            priority=priority,
            requested_ts_ms=out.ctx.now_ms,
            correlation_id=corr,
            cause=cause,
            setpoint_offset_c=amounts.setpoint_offset_c if amounts else None,
            curtailment_pct=amounts.curtailment_pct if amounts else None,
        )
    )


def _restore(out: _Out, corr: str, cause: Cause, why: tuple[ReasonCode, ...]) -> None:
    """Give a curtailed device its load back (blocked only while its telemetry is stale); its
    load-reducing request, if still waiting for budget, is withdrawn first (`why`)."""
    part = out.state.participation
    if part is None or not part.curtailed:
        return
    out.withdraw(why, corr, cause)
    if _attempt(out, Action.RESTORE, part.priority, corr, cause):
        out.state = dataclasses.replace(
            out.state, participation=dataclasses.replace(part, curtailed=False)
        )


def _start_if_due(out: _Out, corr: str, cause: Cause, retry: bool = False) -> None:
    """Start the device's part in its event if the event is on (once, unless `retry`)."""
    part = out.state.participation
    now = out.ctx.now_ms
    if (
        part is None
        or part.curtailed
        or part.opted_out
        or (part.attempted and not retry)
        or not part.start_ts_ms <= now < part.end_ts_ms
    ):
        return
    started = dataclasses.replace(part, attempted=True)
    out.state = dataclasses.replace(out.state, participation=started)
    if _attempt(out, part.action, part.priority, corr, cause):
        out.state = dataclasses.replace(
            out.state, participation=dataclasses.replace(started, curtailed=True)
        )


def _finish_if_over(out: _Out, corr: str, cause: Cause) -> None:
    part = out.state.participation
    if part is None or out.ctx.now_ms < part.end_ts_ms:
        return
    _restore(out, corr, cause, (ReasonCode.DR_EVENT,))
    if out.state.participation is not None and not out.state.participation.curtailed:
        out.state = dataclasses.replace(out.state, participation=None)


def on_telemetry(state: DeviceState, event: Telemetry, ctx: Context) -> Step:
    """Dedupe, track freshness and last-known-good, opt-outs, and act on a return from silence."""
    out = _Out(event.device_id, state, ctx)
    if event.ts_ms in state.recent_ts_ms:
        out.audit(AuditOutcome.DUPLICATE, None, (), event.correlation_id, event.cause)
        return out.step()
    newest = state.last_seen_ms is None or event.ts_ms > state.last_seen_ms
    recent = tuple(sorted((*state.recent_ts_ms, event.ts_ms))[-DEDUPE_WINDOW:])
    last_seen = event.ts_ms if newest else state.last_seen_ms
    good = state.last_good
    if event.good and (good is None or event.ts_ms > good.ts_ms):
        good = LastGood(event.ts_ms, event.power_kw, event.is_on)
    out.state = dataclasses.replace(
        state,
        last_seen_ms=last_seen,
        recent_ts_ms=recent,
        last_good=good,
        stale=state.stale and not newest,
        stats=state.stats.add(event.power_kw) if event.good else state.stats,
    )
    if state.stale and newest:
        out.alert(
            AlertKind.TELEMETRY_RESTORED, Severity.INFO, "telemetry restored",
            event.correlation_id, event.cause,
        )  # fmt: skip
    part = out.state.participation
    if event.customer_override and part is not None and not part.opted_out:
        out.state = dataclasses.replace(
            out.state, participation=dataclasses.replace(part, opted_out=True)
        )
        out.audit(
            AuditOutcome.BLOCKED, part.action, (ReasonCode.OPT_OUT,), event.correlation_id,
            event.cause,
        )  # fmt: skip
        if part.curtailed:
            out.withdraw((ReasonCode.OPT_OUT,), event.correlation_id, event.cause)
    if state.stale and newest:  # back from silence: do what was held back
        _finish_if_over(out, event.correlation_id, event.cause)
        _start_if_due(out, event.correlation_id, event.cause, retry=True)
    elif newest and _clear_to_resume(out):
        _start_if_due(out, event.correlation_id, event.cause, retry=True)
    return out.step()


def _clear_to_resume(out: _Out) -> bool:
    """Whether a start that an interlock blocked may be taken now: the event is on and nothing
    blocks it any more (a freeze lifted, weather came back, a suspension ended). Checked at the
    device's readings, and silently: a start still blocked is not audited again each reading.
    Operator actions are not resumed: a rejected or expired recommendation stays answered."""
    part, ctx = out.state.participation, out.ctx
    info = out.state.info
    return (
        part is not None
        and part.attempted
        and not part.curtailed
        and not part.opted_out
        and part.start_ts_ms <= ctx.now_ms < part.end_ts_ms
        and not needs_operator(part.action, info.device_class if info else None)
        and not blocking_reasons(part.action, _facts(out.state, ctx), ctx.region, ctx.pipeline)
    )


def on_registry(state: DeviceState, event: RegistryUpdate | Deregistration, ctx: Context) -> Step:
    """Adopt the CIS record, or forget it (unknown again: protected); a device that became
    LIFE_SAFETY or unknown mid-event is released."""
    info = event.info if isinstance(event, RegistryUpdate) else None
    out = _Out(event.device_id, dataclasses.replace(state, info=info), ctx)
    if out.state.participation is not None and out.state.participation.curtailed:
        facts = _facts(out.state, ctx)
        reasons = blocking_reasons(out.state.participation.action, facts, ctx.region, ctx.pipeline)
        if ReasonCode.LIFE_SAFETY_EXCLUSION in reasons:
            _restore(out, event.correlation_id, event.cause, reasons)
    return out.step()


def on_activation(state: DeviceState, event: Activation, ctx: Context) -> Step:
    """Join, update or leave a DR event; act now if it has already started or ended."""
    out = _Out(event.device_id, state, ctx)
    part = state.participation
    if state.info is not None and state.info.region_id != event.region_id and not event.cancelled:
        return out.step()  # the device moved: its old region's roster still named it
    if event.cancelled:
        if part is not None and part.event_id == event.event_id:
            _restore(out, event.correlation_id, event.cause, (ReasonCode.DR_EVENT,))
            if out.state.participation is not None and not out.state.participation.curtailed:
                out.state = dataclasses.replace(out.state, participation=None)
        return out.step()
    if part is not None and part.event_id != event.event_id and part.curtailed:
        # One event at a time: the current one keeps the device until it ends.
        out.audit(
            AuditOutcome.DEFERRED, event.action, (ReasonCode.DR_EVENT,), event.correlation_id,
            event.cause,
        )  # fmt: skip
        return out.step()
    joined = Participation(
        event.event_id, event.action, event.start_ts_ms, event.end_ts_ms, event.priority,
        curtailed=part.curtailed if part and part.event_id == event.event_id else False,
        opted_out=part.opted_out if part and part.event_id == event.event_id else False,
        attempted=part.attempted if part and part.event_id == event.event_id else False,
        setpoint_offset_c=event.setpoint_offset_c, curtailment_pct=event.curtailment_pct,
    )  # fmt: skip
    out.state = dataclasses.replace(state, participation=joined)
    _start_if_due(out, event.correlation_id, event.cause)
    _finish_if_over(out, event.correlation_id, event.cause)
    return out.step()


def on_release(state: DeviceState, event: Release, ctx: Context) -> Step:
    """Wet-bulb suspension: a curtailed cooling load gets RESTORE."""
    out = _Out(event.device_id, state, ctx)
    if state.info is not None and state.info.device_class in COOLING_CLASSES:
        _restore(out, event.correlation_id, event.cause, (ReasonCode.WET_BULB_SUSPEND,))
    return out.step()


def on_approval(state: DeviceState, event: Approval, ctx: Context) -> Step:
    """Operator sign-off: a command only on APPROVE, in time, with every interlock passing."""
    out = _Out(event.device_id, state, ctx)
    pending = state.pending
    if pending is None or pending.recommendation_id != event.recommendation_id:
        out.audit(
            AuditOutcome.EXPIRED, None, (ReasonCode.HITL_REQUIRED,), event.correlation_id,
            event.cause, recommendation_id=event.recommendation_id,
        )  # fmt: skip
        return out.step()
    out.state = dataclasses.replace(state, pending=None)
    rec = {"recommendation_id": pending.recommendation_id}
    if ctx.now_ms > pending.expires_ts_ms:
        out.audit(
            AuditOutcome.EXPIRED, pending.action, (), event.correlation_id, event.cause, **rec
        )
    elif event.decision is ApprovalDecision.REJECT:
        out.audit(
            AuditOutcome.REJECTED, pending.action, (), event.correlation_id, event.cause, **rec
        )
    else:
        reasons = blocking_reasons(pending.action, _facts(out.state, ctx), ctx.region, ctx.pipeline)
        if reasons:
            out.audit(
                AuditOutcome.BLOCKED,
                pending.action,
                reasons,
                event.correlation_id,
                event.cause,
                **rec,
            )
        else:
            out.audit(
                AuditOutcome.APPROVED, pending.action, (), event.correlation_id, event.cause, **rec
            )
            part = out.state.participation
            _request(
                out, pending.action, part.priority if part else 0, event.correlation_id, event.cause
            )
            if part is not None and part.action is pending.action:
                out.state = dataclasses.replace(
                    out.state, participation=dataclasses.replace(part, curtailed=True)
                )
    return out.step()


def on_timer(state: DeviceState, event: Timer, ctx: Context) -> Step:
    """Whatever is due at `event.ts_ms`: silence, a DR start or end, an expiry, forgetting."""
    watched = state.watch_ms is not None and event.ts_ms >= state.watch_ms
    if watched:  # the watch fired: `step` arms it again at the next deadline
        state = dataclasses.replace(state, watch_ms=None)
    out = _Out(event.device_id, state, ctx)
    cause = Cause(source_topic="timer", event_id=f"{event.device_id}@{event.ts_ms}")
    corr = f"{event.device_id}-timer-{event.ts_ms}"
    seen = state.last_seen_ms
    if (seen is None and watched) or (
        seen is not None and event.ts_ms >= seen + ctx.policy.retention_ms
    ):
        return Step(None)
    silence = ctx.policy.silence_ms(state.info)
    if seen is not None and not state.stale and event.ts_ms >= seen + silence:
        out.state = dataclasses.replace(state, stale=True)
        if state.participation is not None and state.participation.curtailed:
            out.withdraw((ReasonCode.TELEMETRY_STALE,), corr, cause)
        out.alert(
            AlertKind.TELEMETRY_LOSS, Severity.WARNING,
            f"no telemetry for {(event.ts_ms - seen) // 1000} s", corr, cause,
        )  # fmt: skip
    pending = out.state.pending
    if pending is not None and event.ts_ms >= pending.expires_ts_ms:
        out.state = dataclasses.replace(out.state, pending=None)
        out.audit(
            AuditOutcome.EXPIRED, pending.action, (ReasonCode.HITL_REQUIRED,), corr, cause,
            recommendation_id=pending.recommendation_id,
        )  # fmt: skip
    _start_if_due(out, corr, cause)
    _finish_if_over(out, corr, cause)
    return out.step()


def step(state: DeviceState | None, event: Event, ctx: Context) -> Step:
    """Dispatch one input to its transition; a device starts from an empty state.

    A state that knows nothing (e.g. after a Release for a device its retention forgot) is
    cleared: kept, it would hold an entry with no timer ever to clear it.
    """
    result = _dispatch(state, event, ctx)
    if result.state is None or dataclasses.replace(result.state, watch_ms=None) == DeviceState():
        return Step(None, result.outputs)
    return Step(_armed(result.state, ctx), result.outputs)


def _dispatch(state: DeviceState | None, event: Event, ctx: Context) -> Step:
    current = state or DeviceState()
    if isinstance(event, Telemetry):
        return on_telemetry(current, event, ctx)
    if isinstance(event, RegistryUpdate | Deregistration):
        return on_registry(current, event, ctx)
    if isinstance(event, Activation):
        return on_activation(current, event, ctx)
    if isinstance(event, Release):
        return on_release(current, event, ctx)
    if isinstance(event, Approval):
        return on_approval(current, event, ctx)
    if state is None:
        return Step(None)
    return on_timer(current, event, ctx)
