"""The device stage's decisions: one pure transition per input, keyed by device id.

`step(state, event, ctx) -> Step`; the Flink adapter reads state, calls it, writes or clears
state, reconciles timers (`timers_for`), and emits. `ctx.now_ms` is the decision clock: the
input's own time, or the stage's watermark when that is later (a late input is judged as of
now, never as of its own past). Command requests go on to the region budget stage, which emits
or defers them.

Every input merges into the state the same way whatever order the inputs arrive in (DESIGN.md
"Order and time"): the registry record with the newest `updated_ts_ms` wins; a reading not
newer than the newest seen changes nothing (`DUPLICATE`); a customer override is kept with its
time and opts the device out of every DR event it overlaps, whichever came first; an event
that finds the device held by another waits in a queue and is resolved, with an audit. After
each input, `_settle` re-derives what is due from the state: release what has become unsafe,
finish what is over, take the next queued event, start what is due.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from typing import Any

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
    PriorityLevel,
    ReasonCode,
    Recommendation,
    Severity,
)
from state.device import (
    MAX_ENDED,
    MAX_OVERRIDES,
    MAX_QUEUED,
    DeviceInfo,
    DeviceState,
    Ended,
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
    watermark_ms: int | None = None  # every input stamped up to here has arrived (None: now)
    region_at: Callable[[int], RegionMode] | None = None  # the mode at another instant

    @property
    def settled_ms(self) -> int:
        """Up to when the stage has heard everything (within the out-of-orderness bound)."""
        return self.now_ms if self.watermark_ms is None else self.watermark_ms

    def as_of(self, at_ms: int) -> Context:
        """This context with `at_ms` as the decision instant, the region's mode as of it."""
        if at_ms == self.now_ms:
            return self
        region = self.region if self.region_at is None else self.region_at(at_ms)
        return dataclasses.replace(self, now_ms=at_ms, region=region)


# Inputs ---------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Telemetry:
    """A decoded SCADA or IoT reading; `good` is False when a quality flag is raised; an IoT
    reading names its firmware (for the faulty-rollout tracker)."""

    device_id: str
    ts_ms: int
    power_kw: float
    is_on: bool
    good: bool
    customer_override: bool
    correlation_id: str
    cause: Cause
    firmware_version: str | None = None


def telemetry_of(record: Mapping[str, Any], cause: Cause) -> Telemetry:
    """The stage's reading from a telemetry record as a dict (decoded Avro, a model's dump, or
    a replay dataset's row with its quality flags regrouped): a SCADA reading is good when no
    IEC quality flag is raised, and on when its switch is closed (else when it draws power)."""
    quality = record.get("quality")
    if quality is not None:  # SCADA
        good = not (
            quality["invalid"]
            or quality["not_topical"]
            or quality["substituted"]
            or quality["blocked"]
            or quality["overflow"]
        )
        closed = record["switch_closed"]
        is_on = closed if closed is not None else record["power_kw"] > 0
        override = False
    else:
        good, is_on, override = True, record["is_on"], record["customer_override"]
    return Telemetry(
        record["device_id"], record["ts_ms"], record["power_kw"], is_on, good, override,
        record["correlation_id"], cause, record.get("firmware_version"),
    )  # fmt: skip


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
    issued_ts_ms: int = 0  # when the event was announced (an override since then opts out)


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
        if not (part.attempted or part.opted_out or part.opted_out_at(part.begins_ms)):
            wanted.add(part.start_ts_ms)
        wanted.add(part.end_ts_ms)
        if part.opt_out_ts_ms is not None and not part.opted_out:
            wanted.add(part.opt_out_ts_ms)  # an opt-out stamped ahead takes effect then
    wanted.update(p.end_ts_ms for p in state.queued)  # resolved at their end if still waiting
    wanted.update(e.end_ts_ms for e in state.ended)  # forgotten at their end
    if state.pending is not None:
        wanted.add(state.pending.expires_ts_ms)
    return frozenset(wanted)


def _heard_ms(state: DeviceState) -> int | None:
    """When the device was last heard from: its newest reading of good quality."""
    return state.last_good.ts_ms if state.last_good is not None else None


def _deadline(state: DeviceState, policy: DevicePolicy) -> int | None:
    """When the device next goes silent, or (silent, or never heard) is forgotten."""
    heard, seen = _heard_ms(state), state.last_seen_ms
    if heard is not None and not state.stale:
        return heard + policy.silence_ms(state.info)
    return None if seen is None else seen + policy.retention_ms


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

_PROTECTION = {
    PriorityLevel.DISCRETIONARY: 0,
    PriorityLevel.STANDARD: 1,
    PriorityLevel.CRITICAL: 2,
    PriorityLevel.LIFE_SAFETY: 3,
}


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

    def set_part(self, part: Participation | None) -> None:
        self.state = dataclasses.replace(self.state, participation=part)

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
    """The interlocks' view of the device at `ctx.now_ms`: never heard from, or silent past its
    timeout, is stale, whether or not its loss timer has fired yet."""
    info = state.info
    part = state.participation
    heard = _heard_ms(state)
    return DeviceFacts(
        priority=info.priority if info else None,
        device_class=info.device_class if info else None,
        stale=state.stale or heard is None or ctx.now_ms >= heard + ctx.policy.silence_ms(info),
        opted_out=part is not None and part.opted_out_at(ctx.now_ms),
    )


def _blocking(out: _Out, action: Action) -> tuple[ReasonCode, ...]:
    ctx = out.ctx
    return blocking_reasons(action, _facts(out.state, ctx), ctx.region, ctx.pipeline)


def _restore_action(part: Participation) -> Action:
    """What gives the load back: re-closing an opened switch is switching, like opening it."""
    return Action.SWITCH_CLOSE if part.action is Action.SWITCH_OPEN else Action.RESTORE


def _attempt(out: _Out, action: Action, corr: str, cause: Cause) -> bool:
    """Try one command of the current participation through the interlocks; True when it was
    requested (neither blocked nor waiting for an operator)."""
    state = out.state
    part = state.participation
    assert part is not None  # every command belongs to a participation
    reasons = _blocking(out, action)
    if reasons:
        out.audit(AuditOutcome.BLOCKED, action, reasons, corr, cause)
        return False
    info = state.info
    if needs_operator(action, info.device_class if info else None) and state.pending is not None:
        # One question to an operator at a time; it is answered (or expires) before another.
        out.audit(AuditOutcome.BLOCKED, action, (ReasonCode.HITL_REQUIRED,), corr, cause)
        return False
    part = dataclasses.replace(part, rounds=part.rounds + 1)
    out.set_part(part)
    about = f"{part.event_id}#{part.rounds}"
    if needs_operator(action, info.device_class if info else None):
        rec_id = ids.recommendation_id(out.device_id, action, about)
        expires = out.ctx.now_ms + out.ctx.policy.recommendation_ttl_ms
        out.items.append(
            Recommendation(
                recommendation_id=rec_id,
                device_id=out.device_id,
                correlation_id=corr,
                action=action,
                created_ts_ms=out.ctx.now_ms,
                expires_ts_ms=expires,
                reason_codes=(ReasonCode.HITL_REQUIRED, ReasonCode.DR_EVENT),
                rationale=f"{action} on SCADA device {out.device_id} needs operator sign-off",
                cause=cause,
            )
        )
        out.state = dataclasses.replace(
            out.state, pending=PendingRecommendation(rec_id, action, expires)
        )
        out.audit(
            AuditOutcome.RECOMMENDED, action, (ReasonCode.HITL_REQUIRED,), corr, cause,
            recommendation_id=rec_id,
        )  # fmt: skip
        return False
    _request(out, action, part.priority, about, corr, cause)
    return True


def _request(out: _Out, action: Action, priority: int, about: str, corr: str, cause: Cause) -> None:
    region = out.region_id or UNREGISTERED_REGION
    part = out.state.participation
    amounts = part if part is not None and part.action is action else None  # the event's sizes
    out.items.append(
        CommandRequest(
            command_id=ids.command_id(out.device_id, action, about),
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
    """Give a curtailed device its load back (blocked only while its telemetry is stale; a
    SCADA switch is re-closed only by an operator); its load-reducing request, if still
    waiting for budget, is withdrawn first (`why`)."""
    part = out.state.participation
    if part is None or not part.curtailed:
        return
    action = _restore_action(part)
    pending = out.state.pending
    if pending is not None and pending.action is action:
        return  # an operator is already asked to give it back
    out.withdraw(why, corr, cause)
    if _attempt(out, action, corr, cause):
        current = out.state.participation
        assert current is not None
        out.set_part(dataclasses.replace(current, curtailed=False))


def _void_pending_start(out: _Out, corr: str, cause: Cause) -> None:
    """An operator's question about starting an event that is over or gone is withdrawn: an
    answer arriving later finds nothing to approve."""
    part, pending = out.state.participation, out.state.pending
    if part is not None and pending is not None and pending.action is part.action:
        out.state = dataclasses.replace(out.state, pending=None)
        out.audit(
            AuditOutcome.EXPIRED, pending.action, (ReasonCode.DR_EVENT,), corr, cause,
            recommendation_id=pending.recommendation_id,
        )  # fmt: skip


def _drop_if_done(out: _Out) -> None:
    part = out.state.participation
    if part is not None and not part.curtailed:
        out.set_part(None)


def _release_if_unsafe(out: _Out, corr: str, cause: Cause) -> None:
    """A curtailed device that has become LIFE_SAFETY or unknown, or a cooling load whose region
    is under wet-bulb suspension, gets its load back, whatever told us so first."""
    part = out.state.participation
    if part is None or not part.curtailed:
        return
    unsafe: list[ReasonCode] = [
        r
        for r in _blocking(out, part.action)
        if r in (ReasonCode.LIFE_SAFETY_EXCLUSION, ReasonCode.UNKNOWN_DEVICE)
    ]
    info = out.state.info
    cooling = info is not None and info.device_class in COOLING_CLASSES
    if cooling and out.ctx.region is RegionMode.SUSPENDED:
        unsafe.append(ReasonCode.WET_BULB_SUSPEND)
    if unsafe:
        _restore(out, corr, cause, tuple(unsafe))


def _over(out: _Out, part: Participation) -> bool:
    """Whether the event is over as the stage has settled it: the watermark has passed its
    end, so its start was decided first whatever the order the inputs came in."""
    return part.end_ts_ms <= min(out.ctx.now_ms, out.ctx.settled_ms)


def _finish_if_over(out: _Out, corr: str, cause: Cause) -> None:
    part = out.state.participation
    if part is None or not _over(out, part):
        return
    _void_pending_start(out, corr, cause)
    _restore(out, corr, cause, (ReasonCode.DR_EVENT,))
    _drop_if_done(out)


def _why_missed(part: Participation) -> ReasonCode:
    """Why an event that waited never got the device: the customer opted out, or another
    event held it all through."""
    return ReasonCode.OPT_OUT if part.opt_out_ts_ms is not None else ReasonCode.DR_EVENT


def _resolve_queue(out: _Out, corr: str, cause: Cause) -> None:
    """Events that ended while they waited are resolved (BLOCKED: another event held the device
    all through them, or the customer opted out); with no current event, the first one still
    on becomes current."""
    waiting = []
    for part in sorted(out.state.queued, key=lambda p: p.order):
        if not _over(out, part):
            waiting.append(part)
        else:
            out.audit(AuditOutcome.BLOCKED, part.action, (_why_missed(part),), corr, cause)
    current = out.state.participation
    if current is None and waiting:
        current, waiting = waiting[0], waiting[1:]
        if not current.attempted and current.start_ts_ms < out.ctx.now_ms:
            # Its turn comes now: its start is decided as of now, not at an instant the event
            # before it still held the device (its start's timer may not have fired yet).
            current = dataclasses.replace(current, start_ts_ms=out.ctx.now_ms)
    if current is not out.state.participation or tuple(waiting) != out.state.queued:
        out.state = dataclasses.replace(out.state, participation=current, queued=tuple(waiting))


def _start_if_due(out: _Out, corr: str, cause: Cause) -> None:
    """Start the device's part in its event if the event is on: once the stage has heard
    everything up to the start (the watermark passed it, so an override or a record stamped
    before the start has arrived), or again, silently while still blocked, after an interlock
    blocked it and no longer does. It is decided as of the part's beginning at the earliest (an
    event announced after its start, as of its announcement), so an override stamped before
    that keeps the device out and one stamped after opts it out from its own instant, however
    far the watermark lagged. Operator actions are not retried: a rejected or expired
    recommendation stays answered."""
    part = out.state.participation
    now = out.ctx.now_ms
    if part is None:
        return
    at = part.decided_at(now)
    if part.opted_out or part.opted_out_at(at) or part.curtailed:
        return  # an opt-out acted on ends the part, even for a timer firing at an earlier instant
    if not part.start_ts_ms <= now or at >= part.end_ts_ms:
        return  # not started yet, or over by the instant it would be decided at
    if not part.attempted and part.start_ts_ms > out.ctx.settled_ms:
        return  # its timer takes it when the watermark passes the start
    if part.attempted:
        info = out.state.info
        if needs_operator(part.action, info.device_class if info else None) or _blocking(
            out, part.action
        ):
            return
    out.set_part(dataclasses.replace(part, attempted=True))
    # Decided as of `at`, whether the start's timer or the event itself (the watermark already
    # past the start) got here first.
    now_ctx, out.ctx = out.ctx, out.ctx.as_of(at)
    requested = _attempt(out, part.action, corr, cause)
    out.ctx = now_ctx
    if requested:
        current = out.state.participation
        assert current is not None
        out.set_part(dataclasses.replace(current, curtailed=True))


def _settle(out: _Out, corr: str, cause: Cause) -> None:
    """Re-derive what is due from the state at `now`, whichever input came last.

    Every step below acts on a participation, current or queued: without one nothing can be
    due, so the common reading of a device in no DR event skips them all.
    """
    if out.state.ended:
        _forget_ended(out)
    if out.state.participation is None and not out.state.queued:
        return
    _act_on_opt_outs(out, corr, cause)
    _release_if_unsafe(out, corr, cause)
    _finish_if_over(out, corr, cause)
    _resolve_queue(out, corr, cause)
    _start_if_due(out, corr, cause)


def _forget_ended(out: _Out) -> None:
    """Cancelled events over as the stage has settled them are forgotten: a record of one read
    from now on is over on arrival."""
    kept = tuple(e for e in out.state.ended if e.end_ts_ms > out.ctx.settled_ms)
    if kept != out.state.ended:
        out.state = dataclasses.replace(out.state, ended=kept)


def _opt_out(out: _Out, ts_ms: int, corr: str, cause: Cause) -> None:
    """A customer override at `ts_ms` opts the device out, from that instant, of every event
    it overlaps; kept with its time for an event that arrives later."""
    state = out.state
    kept = kept_overrides(state.overrides, ts_ms, out.ctx.settled_ms)
    if kept != state.overrides:  # an unchanged state keeps its objects (its bytes are reused)
        out.state = state = dataclasses.replace(state, overrides=kept)

    def opted(part: Participation) -> Participation:
        if not part.covers(ts_ms) or part.opted_out_at(ts_ms):
            return part
        return dataclasses.replace(part, opt_out_ts_ms=ts_ms)

    current = state.participation
    out.state = dataclasses.replace(
        state,
        participation=None if current is None else opted(current),
        queued=tuple(opted(p) for p in state.queued),
    )
    _act_on_opt_outs(out, corr, cause)


def kept_overrides(overrides: tuple[int, ...], ts_ms: int, settled_ms: int) -> tuple[int, ...]:
    """The override times to keep once one at `ts_ms` is seen, the watermark at `settled_ms`:
    every one at or after the watermark, and the newest before it, the earliest
    `MAX_OVERRIDES` of them. An event read later opts out from the earliest override within
    it; one that can still arrive in time is announced at or after the watermark, so any
    override before that is before its beginning and one stands for them all (and for an event
    late for the watermark, judged as of now, too)."""
    times = sorted({*overrides, ts_ms})
    passed = [t for t in times if t < settled_ms]
    return tuple((passed[-1:] + [t for t in times if t >= settled_ms])[:MAX_OVERRIDES])


def _act_on_opt_outs(out: _Out, corr: str, cause: Cause) -> None:
    """Audit each opt-out once it is in force, and withdraw a request still waiting.

    An opt-out stamped after its part begins waits while the part's start is still its timer's
    (the watermark short of it, or of the end of the event holding the device): the start is
    decided first, as of its beginning, and the opt-out at its own instant (its timer) after
    it, whichever of the event and the override was read first."""
    now = out.ctx.now_ms
    holder = out.state.participation

    def act(part: Participation) -> Participation:
        if part.opted_out or not part.opted_out_at(now) or _starts_first(part, holder, out.ctx):
            return part
        out.audit(AuditOutcome.BLOCKED, part.action, (ReasonCode.OPT_OUT,), corr, cause)
        if part.curtailed:
            out.withdraw((ReasonCode.OPT_OUT,), corr, cause)
        return dataclasses.replace(part, opted_out=True)

    current = out.state.participation
    acted = None if current is None else act(current)
    queued = tuple(act(p) for p in out.state.queued)
    if acted is not current or queued != out.state.queued:
        out.state = dataclasses.replace(out.state, participation=acted, queued=queued)


def _starts_first(part: Participation, holder: Participation | None, ctx: Context) -> bool:
    """Whether the part's start, left to its timer (or, waiting, to the end of the event
    holding the device), comes before its opt-out."""
    due_ms = part.start_ts_ms if holder is None or holder is part else holder.end_ts_ms
    return (
        not part.attempted
        and max(part.start_ts_ms, due_ms) > ctx.settled_ms
        and not part.opted_out_at(part.begins_ms)
    )


def on_telemetry(state: DeviceState, event: Telemetry, ctx: Context) -> Step:
    """Dedupe, track when the device was heard from and its last good reading, opt-outs, and
    act on what is due (a return from silence included).

    A reading not newer than the newest seen is a duplicate (or too late to matter): audited,
    and it changes nothing but the override it may carry, which counts whenever it arrives.
    A reading of bad quality (SCADA flags) is seen but not heard from: it keeps no one fresh.
    """
    out = _Out(event.device_id, state, ctx)
    corr, cause = event.correlation_id, event.cause
    if state.last_seen_ms is not None and event.ts_ms <= state.last_seen_ms:
        out.audit(AuditOutcome.DUPLICATE, None, (), corr, cause)
        if event.customer_override:
            _opt_out(out, event.ts_ms, corr, cause)
        return out.step()
    if event.good:
        out.state = _heard(state, event)
        if state.stale:
            out.alert(
                AlertKind.TELEMETRY_RESTORED, Severity.INFO, "telemetry restored", corr, cause
            )
    else:
        out.state = dataclasses.replace(state, last_seen_ms=event.ts_ms)
    if event.customer_override:
        _opt_out(out, event.ts_ms, corr, cause)
    _settle(out, corr, cause)
    return out.step()


def _heard(state: DeviceState, event: Telemetry) -> DeviceState:
    """`state` after a new reading of good quality: seen, heard from, fresh, one more sample.

    Built field by field in one go: the hot path of every reading (`dataclasses.replace`
    costs several times more).
    """
    return DeviceState(
        info=state.info,
        info_ts_ms=state.info_ts_ms,
        last_seen_ms=event.ts_ms,
        last_good=LastGood(event.ts_ms, event.power_kw, event.is_on),
        stale=False,
        overrides=state.overrides,
        participation=state.participation,
        queued=state.queued,
        pending=state.pending,
        stats=state.stats.add(event.power_kw),
        watch_ms=state.watch_ms,
        ended=state.ended,
    )


def _record_rank(info: DeviceInfo | None, ts_ms: int) -> tuple[object, ...]:
    """Which of two registry records wins: the newer one, and at the same time the more
    protective one (a deletion, unknown, most of all), then any fixed order."""
    if info is None:
        return (ts_ms, len(_PROTECTION))
    return (
        ts_ms, _PROTECTION[info.priority], info.region_id, info.device_class.value,
        info.programs, info.rated_power_kw,
    )  # fmt: skip


def on_registry(state: DeviceState, event: RegistryUpdate | Deregistration, ctx: Context) -> Step:
    """Adopt the CIS record, or forget it (unknown again: protected), unless the state already
    holds a newer one; a curtailed device that became LIFE_SAFETY or unknown, or a cooling load
    moved into a suspended region, is released."""
    info = event.info if isinstance(event, RegistryUpdate) else None
    if state.info_ts_ms is not None and _record_rank(info, event.ts_ms) <= _record_rank(
        state.info, state.info_ts_ms
    ):
        return Step(state)  # an older (or the same) record re-sent: the newer one stands
    out = _Out(event.device_id, dataclasses.replace(state, info=info, info_ts_ms=event.ts_ms), ctx)
    _settle(out, event.correlation_id, event.cause)
    return out.step()


def _ended(state: DeviceState, event_id: str) -> Ended | None:
    return next((e for e in state.ended if e.event_id == event_id), None)


def _joined(state: DeviceState, event: Activation) -> Participation:
    """The event as a participation of this device, keeping what it already knew of it: its
    flags, its start once its turn moved it later (a copy of the record re-sent after that
    would otherwise move it back, so the start would depend on which came first), and the
    end its cancellation gave it."""
    known = {p.event_id: p for p in (state.participation, *state.queued) if p is not None}
    ended = _ended(state, event.event_id)
    end = event.end_ts_ms if ended is None else min(event.end_ts_ms, ended.at_ms)
    part = Participation(
        event.event_id, event.action, event.start_ts_ms, end, event.priority,
        setpoint_offset_c=event.setpoint_offset_c, curtailment_pct=event.curtailment_pct,
        issued_ts_ms=event.issued_ts_ms,
    )  # fmt: skip
    old = known.get(event.event_id)
    if old is None:
        earliest = next((t for t in state.overrides if part.covers(t)), None)
        return dataclasses.replace(part, opt_out_ts_ms=earliest)
    return dataclasses.replace(
        part,
        start_ts_ms=max(part.start_ts_ms, old.start_ts_ms),
        curtailed=old.curtailed,
        opted_out=old.opted_out,
        attempted=old.attempted,
        rounds=old.rounds,
        opt_out_ts_ms=old.opt_out_ts_ms,
    )


def _end_event(out: _Out, event: Activation) -> None:
    """A cancellation (or completion) stamped `t` ends its event at `t`, whatever the order the
    stage hears of it: a started event lets its device go now; one not started here yet (the
    current one before the watermark passed its start, or one waiting) keeps its window up to
    `t`, or leaves with BLOCKED if it would start no earlier. An event waiting behind a
    cancelled one and over by `t` never gets its turn. One over by `t` ends at its end, by its
    timer, as if the cancellation had not come (read before the watermark passed the end, it
    let the device go at `t` instead)."""
    corr, cause, t = event.correlation_id, event.cause, event.ts_ms
    _remember_ended(out, event)
    part = out.state.participation
    released = False
    if part is not None and part.event_id == event.event_id and t < part.end_ts_ms:
        if not part.attempted and part.start_ts_ms < t:
            out.set_part(_cut(part, t))
        else:
            released = True
            if not part.attempted and not part.opted_out:  # it would start no earlier
                out.audit(AuditOutcome.BLOCKED, part.action, (ReasonCode.DR_EVENT,), corr, cause)
            _void_pending_start(out, corr, cause)
            _restore(out, corr, cause, (ReasonCode.DR_EVENT,))
            _drop_if_done(out)
    rest = []
    for queued in out.state.queued:
        if queued.event_id == event.event_id and queued.start_ts_ms < t:
            rest.append(_cut(queued, t))
        elif queued.event_id == event.event_id:
            out.audit(AuditOutcome.BLOCKED, queued.action, (ReasonCode.DR_EVENT,), corr, cause)
        elif released and queued.end_ts_ms <= t:
            out.audit(AuditOutcome.BLOCKED, queued.action, (_why_missed(queued),), corr, cause)
        else:
            rest.append(queued)
    out.state = dataclasses.replace(out.state, queued=tuple(rest))


def _remember_ended(out: _Out, event: Activation) -> None:
    """Keep the cancellation of an event not over by it, final for its id (`Ended`), with
    whether the device knew the event; at most `MAX_ENDED`, those ending last."""
    state, t = out.state, event.ts_ms
    if t >= event.end_ts_ms:
        return  # the end's timer ends it
    old = _ended(state, event.event_id)
    parts = (state.participation, *state.queued)
    entry = Ended(
        event.event_id,
        t if old is None else min(t, old.at_ms),
        event.end_ts_ms if old is None else max(event.end_ts_ms, old.end_ts_ms),
        any(p is not None and p.event_id == event.event_id for p in parts)
        or (old is not None and old.known),
    )
    others = [e for e in state.ended if e.event_id != event.event_id]
    kept = sorted([*others, entry], key=lambda e: (e.end_ts_ms, e.event_id))[-MAX_ENDED:]
    out.state = dataclasses.replace(state, ended=tuple(kept))


def _cut(part: Participation, end_ms: int) -> Participation:
    return dataclasses.replace(part, end_ts_ms=min(part.end_ts_ms, end_ms))


def on_activation(state: DeviceState, event: Activation, ctx: Context) -> Step:
    """Join, update or leave a DR event; one event holds the device at a time, the others wait
    in order (earlier start, then higher priority) and none is replaced silently."""
    out = _Out(event.device_id, state, ctx)
    corr, cause = event.correlation_id, event.cause
    if state.info is not None and state.info.region_id != event.region_id and not event.cancelled:
        return out.step()  # the device moved: its old region's roster still named it
    if event.cancelled:
        _end_event(out, event)
        _settle(out, corr, cause)
        return out.step()
    part = _joined(state, event)
    current = state.participation
    queued = [p for p in state.queued if p.event_id != event.event_id]
    is_new = all(p.event_id != event.event_id for p in (current, *state.queued) if p is not None)
    ended = _ended(state, event.event_id)
    if is_new and (part.decided_at(ctx.now_ms) >= part.end_ts_ms or (ended and ended.known)):
        # Over by the first instant it could be decided at: announced at or after its end (or
        # its cancellation), or a re-send of one that ended here. Or cancelled, and let go
        # here. Nothing to decide, and it must not displace or queue behind the device's other
        # events (it would leave unresolved, and move their start to whenever the copy came).
        _settle(out, corr, cause)
        return out.step()
    if ended is not None and not ended.known:  # read after its cancellation: it runs up to it
        known = dataclasses.replace(ended, known=True)
        out.state = dataclasses.replace(
            out.state, ended=tuple(known if e is ended else e for e in state.ended)
        )
    if current is None or current.event_id == event.event_id:
        current = part
    elif not current.attempted and part.order < current.order:
        queued.append(current)  # the earlier event goes first; the other waits, audited
        out.audit(AuditOutcome.DEFERRED, current.action, (ReasonCode.DR_EVENT,), corr, cause)
        current = part
    else:
        queued.append(part)
        if is_new:
            out.audit(AuditOutcome.DEFERRED, part.action, (ReasonCode.DR_EVENT,), corr, cause)
    queued.sort(key=lambda p: p.order)
    for dropped in queued[MAX_QUEUED:]:
        out.audit(AuditOutcome.BLOCKED, dropped.action, (ReasonCode.DR_EVENT,), corr, cause)
    out.state = dataclasses.replace(
        out.state, participation=current, queued=tuple(queued[:MAX_QUEUED])
    )
    _settle(out, corr, cause)
    return out.step()


def on_release(state: DeviceState, event: Release, ctx: Context) -> Step:
    """Wet-bulb suspension: a curtailed cooling load gets RESTORE."""
    out = _Out(event.device_id, state, ctx)
    if state.info is not None and state.info.device_class in COOLING_CLASSES:
        _restore(out, event.correlation_id, event.cause, (ReasonCode.WET_BULB_SUSPEND,))
        _drop_if_over(out)
    return out.step()


def _drop_if_over(out: _Out) -> None:
    part = out.state.participation
    if part is not None and _over(out, part):
        _drop_if_done(out)


def on_approval(state: DeviceState, event: Approval, ctx: Context) -> Step:
    """Operator sign-off: a command only on APPROVE strictly before the expiry, for a purpose
    still in force (its event on, or its switch still to re-close), with every interlock
    passing at approval time."""
    out = _Out(event.device_id, state, ctx)
    corr, cause = event.correlation_id, event.cause
    pending = state.pending
    if pending is None or pending.recommendation_id != event.recommendation_id:
        out.audit(
            AuditOutcome.EXPIRED, None, (ReasonCode.HITL_REQUIRED,), corr, cause,
            recommendation_id=event.recommendation_id,
        )  # fmt: skip
        return out.step()
    out.state = dataclasses.replace(state, pending=None)
    rec = {"recommendation_id": pending.recommendation_id}
    part = state.participation
    closing = part is not None and part.curtailed and pending.action is _restore_action(part)
    if ctx.now_ms >= pending.expires_ts_ms:
        out.audit(AuditOutcome.EXPIRED, pending.action, (), corr, cause, **rec)
    elif event.decision is ApprovalDecision.REJECT:
        out.audit(AuditOutcome.REJECTED, pending.action, (), corr, cause, **rec)
        if closing:
            out.set_part(None)  # the operator keeps the switch as it is
    else:
        reasons = _blocking(out, pending.action)
        opening = (
            part is not None
            and not part.curtailed
            and part.action is pending.action
            and part.start_ts_ms <= ctx.now_ms < part.end_ts_ms
        )
        if not (opening or closing):
            reasons = (*reasons, ReasonCode.DR_EVENT)
        if reasons:
            out.audit(AuditOutcome.BLOCKED, pending.action, reasons, corr, cause, **rec)
        else:
            assert part is not None
            out.audit(AuditOutcome.APPROVED, pending.action, (), corr, cause, **rec)
            _request(out, pending.action, part.priority, pending.recommendation_id, corr, cause)
            out.set_part(None if closing else dataclasses.replace(part, curtailed=True))
    _settle(out, corr, cause)
    return out.step()


def on_timer(state: DeviceState, event: Timer, ctx: Context) -> Step:
    """Whatever is due: silence and forgetting at the timer's own time (so a watermark that
    jumps past both still raises the loss first), the rest (a DR start or end, an expiry) at
    `ctx.now_ms`."""
    watched = state.watch_ms is not None and event.ts_ms >= state.watch_ms
    if watched:  # the watch fired: `step` arms it again at the next deadline
        state = dataclasses.replace(state, watch_ms=None)
    out = _Out(event.device_id, state, ctx)
    now = ctx.now_ms
    cause = Cause(source_topic="timer", event_id=ids.derived_id(f"{event.device_id}@{event.ts_ms}"))
    corr = ids.derived_id(f"{event.device_id}-timer-{event.ts_ms}")
    seen, heard = state.last_seen_ms, _heard_ms(state)
    due = event.ts_ms
    if (seen is None and watched) or (seen is not None and due >= seen + ctx.policy.retention_ms):
        return Step(None)
    if heard is not None and not state.stale and due >= heard + ctx.policy.silence_ms(state.info):
        out.state = dataclasses.replace(state, stale=True)
        if state.participation is not None and state.participation.curtailed:
            out.withdraw((ReasonCode.TELEMETRY_STALE,), corr, cause)
        out.alert(
            AlertKind.TELEMETRY_LOSS, Severity.WARNING,
            f"no telemetry for {(due - heard) // 1000} s", corr, cause,
        )  # fmt: skip
    pending = out.state.pending
    if pending is not None and now >= pending.expires_ts_ms:
        out.state = dataclasses.replace(out.state, pending=None)
        out.audit(
            AuditOutcome.EXPIRED, pending.action, (ReasonCode.HITL_REQUIRED,), corr, cause,
            recommendation_id=pending.recommendation_id,
        )  # fmt: skip
    _settle(out, corr, cause)
    return out.step()


def step(state: DeviceState | None, event: Event, ctx: Context) -> Step:
    """Dispatch one input to its transition; a device starts from an empty state.

    A state that knows nothing (e.g. after a Release for a device its retention forgot) is
    cleared: kept, it would hold an entry with no timer ever to clear it.
    """
    result = _dispatch(state, event, ctx)
    if result.state is None or _knows_nothing(result.state):
        return Step(None, result.outputs)
    armed = _armed(result.state, ctx)
    return result if armed is result.state else Step(armed, result.outputs)


_EMPTY = DeviceState()


def _knows_nothing(state: DeviceState) -> bool:
    """Whether `state` equals an empty state, its watch timer aside."""
    return (
        state.last_seen_ms is None
        and state.info is None
        and state.info_ts_ms is None
        and state.last_good is None
        and state.participation is None
        and state.pending is None
        and not state.overrides
        and not state.queued
        and not state.ended
        and not state.stale
        and state.stats == _EMPTY.stats
    )


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
