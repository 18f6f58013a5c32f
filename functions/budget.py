"""The region budget stage: commands released per region under a budget (DESIGN.md rule 8).

Keyed by region, after the device stage. Each event-time window releases at most
`commands_per_window` load-reducing commands, higher DR priority (lower number) first; the
rest wait (`DEFERRED`, not dropped) for the next window. So that requests competing for one
window are ordered by priority before the budget is spent, none is released on arrival: each
waits until the stage's watermark reaches its time (every request of that instant has then
arrived, within the out-of-orderness bound), and all that are due are released together in
priority order. A waiting command is re-checked against the region's interlocks when it is
released: a region in suspension, Grid-Follow or a freeze defers it once (this stage's copy of
the context may only be behind the device stage's) and blocks it if it still forbids it a
window later. A device that stopped wanting its load reduced sends a `Withdrawal` (ahead of
its RESTORE) for the load-reducing requests of it still waiting when the withdrawal arrives
(a device's requests and withdrawals reach this stage in the order it made them):
- for a safety fact (`IMMEDIATE`: LIFE_SAFETY, unknown, wet-bulb suspension) they are
  blocked on arrival, whatever their times: a command goes out now, judged on what is known
  now, so a waiting CURTAIL never reaches a device already known to be a hospital;
- for the rest (its event over or cancelled, its telemetry lost, an opt-out: instants of event
  time) the withdrawal waits for the watermark and applies at its own instant, so a request
  due before it is released first, on a backlog or in a replay as live.
A RESTORE (anything not load-reducing) uses no budget and goes out on arrival, unless a
load-reducing request of its device, made no later, still waits: then it waits too, and goes
at its instant after that request is released or withdrawn. So a RESTORE never overtakes the
command it undoes. What the watermark keeps waiting more than `hold_ms` of processing time (a
quiet feed) is released then (`flush_time`). Pure: the adapter keeps the waiting requests and
withdrawals in map state and passes them in.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator

from functions.device import CommandRequest, Withdrawal
from functions.interlocks import PipelineFacts, region_reasons
from functions.wetbulb import RegionMode
from schemas.models import (
    LOAD_REDUCING_ACTIONS,
    AuditDecision,
    AuditOutcome,
    DeviceCommand,
    ReasonCode,
)

IMMEDIATE = frozenset(
    {ReasonCode.LIFE_SAFETY_EXCLUSION, ReasonCode.UNKNOWN_DEVICE, ReasonCode.WET_BULB_SUSPEND}
)  # the withdrawals that block on arrival


@dataclasses.dataclass(frozen=True)
class BudgetPolicy:
    """How many load-reducing commands a region may receive per window."""

    commands_per_window: int = 200
    window_ms: int = 10_000
    hold_ms: int = 1_000  # processing time a request waits for the watermark at most


@dataclasses.dataclass(frozen=True)
class Window:
    """The current window's start and how many commands it has released."""

    start_ms: int
    used: int = 0


@dataclasses.dataclass(frozen=True)
class Waiting:
    """A load-reducing request waiting for budget; `deferred` once audited DEFERRED."""

    request: CommandRequest
    deferred: bool = False


@dataclasses.dataclass(frozen=True)
class Held:
    """A withdrawal waiting for its instant, with the command ids it withdraws: its device's
    load-reducing requests that were waiting when it arrived."""

    withdrawal: Withdrawal
    victims: tuple[str, ...]


Output = DeviceCommand | AuditDecision


@dataclasses.dataclass(frozen=True)
class BudgetStep:
    """The window after the step, what to emit, the waiting entries to keep (new or changed),
    the requests that left the queue, when to call `on_release` next (if at all), and the
    withdrawals to keep (`held`) and to forget (`applied`)."""

    window: Window
    outputs: tuple[Output, ...] = ()
    queued: tuple[Waiting, ...] = ()
    dequeued: tuple[CommandRequest, ...] = ()
    wake_ms: int | None = None
    held: tuple[Held, ...] = ()
    applied: tuple[Held, ...] = ()


def current(window: Window | None, now_ms: int, policy: BudgetPolicy) -> Window:
    """The window holding `now_ms` (a new one, unused, once the old one is over)."""
    if window is not None and now_ms < window.start_ms + policy.window_ms:
        return window
    return Window(now_ms - now_ms % policy.window_ms)


def _kept(window: Window | None, now_ms: int, policy: BudgetPolicy) -> Window:
    """The window an input that spends nothing leaves in place (only a release moves it on:
    an input stamped later must not make a release at an earlier instant look late)."""
    return window if window is not None else current(None, now_ms, policy)


def next_window_ms(window: Window, policy: BudgetPolicy) -> int:
    """When the next window opens."""
    return window.start_ms + policy.window_ms


def _audit(
    req: CommandRequest,
    now_ms: int,
    outcome: AuditOutcome,
    reasons: tuple[ReasonCode, ...] = (),
    command_id: str | None = None,
) -> AuditDecision:
    return AuditDecision(
        device_id=req.device_id,
        correlation_id=req.correlation_id,
        decided_ts_ms=now_ms,
        action=req.action,
        outcome=outcome,
        reason_codes=reasons,
        region_id=req.region_id,
        command_id=command_id,
        cause=req.cause,
    )


def _emit(req: CommandRequest, now_ms: int) -> tuple[Output, ...]:
    command = DeviceCommand(
        command_id=req.command_id,
        device_id=req.device_id,
        correlation_id=req.correlation_id,
        action=req.action,
        setpoint_offset_c=req.setpoint_offset_c,
        curtailment_pct=req.curtailment_pct,
        issued_ts_ms=now_ms,
        cause=req.cause,
    )
    reasons = (ReasonCode.DR_EVENT,) if req.action in LOAD_REDUCING_ACTIONS else ()
    return command, _audit(req, now_ms, AuditOutcome.EMITTED, reasons, req.command_id)


def reducing(req: CommandRequest) -> bool:
    """Whether a request reduces load (and so needs budget)."""
    return req.action in LOAD_REDUCING_ACTIONS


def on_request(
    window: Window | None,
    req: CommandRequest,
    now_ms: int,
    policy: BudgetPolicy,
    mine: Iterable[Waiting] = (),
) -> BudgetStep:
    """A load-reducing request waits until the watermark reaches `now_ms`, when it competes
    with every other request due by then; a RESTORE goes out now unless a load-reducing
    request of its device (`mine`: the device's waiting entries) made no later waits."""
    win = _kept(window, now_ms, policy)
    if not reducing(req) and not _behind(req, mine):
        return BudgetStep(win, _emit(req, now_ms))
    return BudgetStep(win, queued=(Waiting(req),), wake_ms=now_ms)


def _behind(restore: CommandRequest, waiting: Iterable[Waiting]) -> bool:
    """Whether a load-reducing request of the RESTORE's device, made no later, still waits."""
    return any(
        reducing(w.request)
        and w.request.device_id == restore.device_id
        and w.request.requested_ts_ms <= restore.requested_ts_ms
        for w in waiting
    )


def release_order(waiting: Iterable[Waiting]) -> list[Waiting]:
    """Higher DR priority (lower number) first, then the oldest, then by id (deterministic)."""
    return sorted(
        waiting,
        key=lambda w: (w.request.priority, w.request.requested_ts_ms, w.request.command_id),
    )


def on_release(
    window: Window | None,
    waiting: Iterable[Waiting],
    held: Iterable[Held],
    now_ms: int,
    region: RegionMode,
    pipeline: PipelineFacts,
    policy: BudgetPolicy,
) -> BudgetStep:
    """At `now_ms`: the withdrawals due block what they withdraw still waiting; the
    load-reducing requests due go out in priority order within the window's budget,
    re-checking the region's interlocks (the rest are deferred, audited once, to the next
    window, and one the region still forbids a window later is blocked); then the RESTOREs due
    that nothing of their device waits in front of."""
    win = current(window, now_ms, policy)
    # A quiet feed's hold may have released at a later instant, opening a later window than
    # `now_ms` falls in: what goes out now is spent from that window, so it is stamped there.
    spent_ms = max(now_ms, win.start_ms)
    outputs: list[Output] = []
    changed: list[Waiting] = []
    dequeued: list[CommandRequest] = []
    applied = sorted((h for h in held if h.withdrawal.ts_ms <= now_ms), key=_held_order)
    left = {w.request.command_id: w for w in waiting}
    for h in applied:
        for command_id in h.victims:
            if (entry := left.pop(command_id, None)) is not None:
                why = h.withdrawal.reasons
                outputs.append(_audit(entry.request, h.withdrawal.ts_ms, AuditOutcome.BLOCKED, why))
                dequeued.append(entry.request)
    due = [w for w in left.values() if w.request.requested_ts_ms <= now_ms]
    wanting = 0
    for entry in release_order(w for w in due if reducing(w.request)):
        req = entry.request
        reasons = region_reasons(req.action, region, pipeline)
        if reasons and entry.deferred:
            outputs.append(_audit(req, now_ms, AuditOutcome.BLOCKED, reasons))
        elif not reasons and win.used < policy.commands_per_window:
            outputs += _emit(req, spent_ms)
            win = dataclasses.replace(win, used=win.used + 1)
        else:
            if not entry.deferred:
                why = reasons or (ReasonCode.RATE_LIMITED,)
                outputs.append(_audit(req, now_ms, AuditOutcome.DEFERRED, why))
                changed.append(dataclasses.replace(entry, deferred=True))
            wanting += 1
            continue
        del left[req.command_id]
        dequeued.append(req)
    restores = sorted(
        (w.request for w in due if not reducing(w.request)),
        key=lambda r: (r.requested_ts_ms, r.command_id),
    )
    for req in restores:
        if not _behind(req, left.values()):
            outputs += _emit(req, now_ms)
            del left[req.command_id]
            dequeued.append(req)
    return BudgetStep(
        win,
        tuple(outputs),
        queued=tuple(changed),
        dequeued=tuple(dequeued),
        wake_ms=next_window_ms(win, policy) if wanting else None,
        applied=tuple(applied),
    )


def _held_order(h: Held) -> tuple[int, str]:
    return h.withdrawal.ts_ms, h.withdrawal.device_id


def flush_time(
    window: Window | None,
    waiting: Iterable[Waiting],
    held: Iterable[Held],
    watermark_ms: int | None,
    policy: BudgetPolicy,
) -> list[int]:
    """When the watermark keeps requests or withdrawals waiting longer than `hold_ms` (no input
    moves it: a quiet feed), the instants to release them at, in order: each of their times
    up to the newest (or the watermark, if later), and the next window's start if a deferred
    request waits for it by then. All that compete with them have arrived by then in practice,
    and a command must not wait for traffic that may not come. Empty when nothing new waits.
    `released` goes on from there as the watermark reaching the last instant would."""
    waiting = list(waiting)
    times = {w.request.requested_ts_ms for w in waiting if not w.deferred}
    times |= {h.withdrawal.ts_ms for h in held}
    if not times:
        return []
    last = max(*times, watermark_ms if watermark_ms is not None else max(times))
    if window is not None and any(w.deferred for w in waiting):
        times.add(min(next_window_ms(window, policy), last))
    return sorted(times | {last})


def released(instants: list[int], release: Callable[[int], BudgetStep]) -> Iterator[BudgetStep]:
    """`release` at each of `instants` in order, and at each later wake a step asks for up to
    the last of them: what event time does when the watermark passes them all at once (a
    window deferred into must open before a request due after its start competes for it).
    Apply each step before asking for the next."""
    pending = sorted(set(instants))
    last = pending[-1] if pending else None
    while pending:
        step = release(pending.pop(0))
        yield step
        if step.wake_ms is not None and last is not None and step.wake_ms <= last:
            pending = sorted({*pending, step.wake_ms})


def on_withdrawal(
    window: Window | None,
    mine: Iterable[Waiting],
    withdrawal: Withdrawal,
    now_ms: int,
    policy: BudgetPolicy,
) -> BudgetStep:
    """The device's load-reducing requests still waiting (`mine`: its entries) are blocked now
    for a safety fact, or held for the withdrawal's instant otherwise; nothing when none
    waits."""
    win = _kept(window, now_ms, policy)
    victims = [w.request for w in mine if reducing(w.request)]
    if not victims:
        return BudgetStep(win)
    if IMMEDIATE.intersection(withdrawal.reasons):
        why = withdrawal.reasons
        blocked = tuple(_audit(r, now_ms, AuditOutcome.BLOCKED, why) for r in victims)
        return BudgetStep(win, blocked, dequeued=tuple(victims))
    held = Held(withdrawal, tuple(r.command_id for r in victims))
    return BudgetStep(win, held=(held,), wake_ms=withdrawal.ts_ms)
