"""The region budget stage: commands released per region under a budget (DESIGN.md rule 8).

Keyed by region, after the device stage. Each event-time window releases at most
`commands_per_window` load-reducing commands; the rest wait (`DEFERRED`, not dropped) and go
out at the next window, higher DR priority (lower number) first. A waiting command is
re-checked against the region's interlocks when it is released: a region that went into
suspension, Grid-Follow or a freeze meanwhile blocks it; and a device that stopped wanting it
(LIFE_SAFETY or unknown now, stale, opted out, its event over) sends a `Withdrawal` that
blocks it. A request arriving while this stage's copy of the region's context forbids it
waits too, so a copy that is only behind the device stage's costs a window, not the command.
RESTORE gives load back and is never held. Pure: the adapter keeps the waiting
requests in map state and passes them in.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

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


@dataclasses.dataclass(frozen=True)
class BudgetPolicy:
    """How many load-reducing commands a region may receive per window."""

    commands_per_window: int = 200
    window_ms: int = 10_000


@dataclasses.dataclass(frozen=True)
class Window:
    """The current window's start and how many commands it has released."""

    start_ms: int
    used: int = 0


Output = DeviceCommand | AuditDecision


@dataclasses.dataclass(frozen=True)
class BudgetStep:
    """The window after the step, what to emit, and which waiting requests left the queue."""

    window: Window
    outputs: tuple[Output, ...] = ()
    queued: tuple[CommandRequest, ...] = ()
    dequeued: tuple[str, ...] = ()


def current(window: Window | None, now_ms: int, policy: BudgetPolicy) -> Window:
    """The window holding `now_ms` (a new one, unused, once the old one is over)."""
    if window is not None and now_ms < window.start_ms + policy.window_ms:
        return window
    return Window(now_ms - now_ms % policy.window_ms)


def next_window_ms(window: Window, policy: BudgetPolicy) -> int:
    """When the next window opens (the adapter's timer while requests wait)."""
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


def on_request(
    window: Window | None,
    waiting: int,
    req: CommandRequest,
    now_ms: int,
    region: RegionMode,
    pipeline: PipelineFacts,
    policy: BudgetPolicy,
) -> BudgetStep:
    """Release the request now if the window has room, nothing waits and the region allows it;
    else defer it to the next window.

    The region's interlocks are checked again here, on this stage's own copy of the context:
    the device stage decided on its copy, and the two may see a change at different moments.
    A request this copy forbids waits (DEFERRED with the reasons) rather than being blocked at
    once: the device has taken it as sent and will not ask again, so if this copy was only
    behind, the release goes out a window later; if the region is really unsafe, the release
    blocks it.
    """
    win = current(window, now_ms, policy)
    if req.action not in LOAD_REDUCING_ACTIONS:
        return BudgetStep(win, _emit(req, now_ms))
    reasons = region_reasons(req.action, region, pipeline)
    if not reasons and waiting == 0 and win.used < policy.commands_per_window:
        return BudgetStep(dataclasses.replace(win, used=win.used + 1), _emit(req, now_ms))
    deferred = _audit(req, now_ms, AuditOutcome.DEFERRED, reasons or (ReasonCode.RATE_LIMITED,))
    return BudgetStep(win, (deferred,), queued=(req,))


def release_order(requests: Iterable[CommandRequest]) -> list[CommandRequest]:
    """Higher DR priority (lower number) first, then the oldest, then by id (deterministic)."""
    return sorted(requests, key=lambda r: (r.priority, r.requested_ts_ms, r.command_id))


def on_window(
    window: Window | None,
    waiting: Iterable[CommandRequest],
    now_ms: int,
    region: RegionMode,
    pipeline: PipelineFacts,
    policy: BudgetPolicy,
) -> BudgetStep:
    """A new window: release what waits, in priority order, re-checking the region's interlocks."""
    win = current(window, now_ms, policy)
    outputs: list[Output] = []
    dequeued: list[str] = []
    for req in release_order(waiting):
        reasons = region_reasons(req.action, region, pipeline)
        if reasons:
            outputs.append(_audit(req, now_ms, AuditOutcome.BLOCKED, reasons))
        elif win.used < policy.commands_per_window:
            outputs += _emit(req, now_ms)
            win = dataclasses.replace(win, used=win.used + 1)
        else:
            break
        dequeued.append(req.command_id)
    return BudgetStep(win, tuple(outputs), dequeued=tuple(dequeued))


def on_withdrawal(
    window: Window | None,
    waiting: Iterable[CommandRequest],
    withdrawal: Withdrawal,
    policy: BudgetPolicy,
) -> BudgetStep:
    """Block the device's requests that still wait (`waiting`: the device's own), with the
    withdrawal's reasons."""
    now = withdrawal.ts_ms
    mine = [r for r in waiting if r.device_id == withdrawal.device_id]
    return BudgetStep(
        current(window, now, policy),
        tuple(_audit(r, now, AuditOutcome.BLOCKED, withdrawal.reasons) for r in mine),
        dequeued=tuple(r.command_id for r in mine),
    )
