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
window later; a device that stopped wanting it (LIFE_SAFETY or unknown now, stale, opted out,
its event over) sends a `Withdrawal` that blocks, on arrival, every request of that device
still waiting, whatever their times: a command goes out now, and the device has said it no
longer wants it (its RESTORE follows the withdrawal and is never held). A device's requests
and withdrawals reach this stage in the order it made them, so all that wait were made
before the withdrawal. A request the watermark keeps waiting more than `hold_ms` of
processing time (a quiet feed) is released then (`flush_time`). Pure: the adapter keeps the
waiting requests in map state and passes them in.
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


Output = DeviceCommand | AuditDecision


@dataclasses.dataclass(frozen=True)
class BudgetStep:
    """The window after the step, what to emit, the waiting entries to keep (new or changed),
    the requests that left the queue, and when to call `on_release` next (if at all)."""

    window: Window
    outputs: tuple[Output, ...] = ()
    queued: tuple[Waiting, ...] = ()
    dequeued: tuple[CommandRequest, ...] = ()
    wake_ms: int | None = None


def current(window: Window | None, now_ms: int, policy: BudgetPolicy) -> Window:
    """The window holding `now_ms` (a new one, unused, once the old one is over)."""
    if window is not None and now_ms < window.start_ms + policy.window_ms:
        return window
    return Window(now_ms - now_ms % policy.window_ms)


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


def on_request(
    window: Window | None, req: CommandRequest, now_ms: int, policy: BudgetPolicy
) -> BudgetStep:
    """RESTORE (anything not load-reducing) goes out now; a load-reducing request waits until
    the watermark reaches `now_ms`, when it competes with every other request due by then."""
    win = current(window, now_ms, policy)
    if req.action not in LOAD_REDUCING_ACTIONS:
        return BudgetStep(win, _emit(req, now_ms))
    return BudgetStep(win, queued=(Waiting(req),), wake_ms=now_ms)


def release_order(waiting: Iterable[Waiting]) -> list[Waiting]:
    """Higher DR priority (lower number) first, then the oldest, then by id (deterministic)."""
    return sorted(
        waiting,
        key=lambda w: (w.request.priority, w.request.requested_ts_ms, w.request.command_id),
    )


def on_release(
    window: Window | None,
    waiting: Iterable[Waiting],
    now_ms: int,
    region: RegionMode,
    pipeline: PipelineFacts,
    policy: BudgetPolicy,
) -> BudgetStep:
    """At `now_ms` the requests due go out in priority order within the window's budget,
    re-checking the region's interlocks; the rest are deferred (audited once) to the next
    window, and a request the region still forbids after a window is blocked."""
    win = current(window, now_ms, policy)
    outputs: list[Output] = []
    changed: list[Waiting] = []
    dequeued: list[CommandRequest] = []
    due = [w for w in waiting if w.request.requested_ts_ms <= now_ms]
    settled = 0
    for entry in release_order(due):
        req = entry.request
        reasons = region_reasons(req.action, region, pipeline)
        if reasons and entry.deferred:
            outputs.append(_audit(req, now_ms, AuditOutcome.BLOCKED, reasons))
        elif not reasons and win.used < policy.commands_per_window:
            outputs += _emit(req, now_ms)
            win = dataclasses.replace(win, used=win.used + 1)
        else:
            if not entry.deferred:
                why = reasons or (ReasonCode.RATE_LIMITED,)
                outputs.append(_audit(req, now_ms, AuditOutcome.DEFERRED, why))
                changed.append(dataclasses.replace(entry, deferred=True))
            continue
        dequeued.append(req)
        settled += 1
    return BudgetStep(
        win,
        tuple(outputs),
        queued=tuple(changed),
        dequeued=tuple(dequeued),
        wake_ms=next_window_ms(win, policy) if len(due) > settled else None,
    )


def flush_time(waiting: Iterable[Waiting], watermark_ms: int | None) -> int | None:
    """When the watermark keeps a request waiting longer than `hold_ms` (no input moves it: a
    quiet feed), the requests are released as of the newest of their times (or the watermark,
    if later): all that compete with them have arrived by then in practice, and a command
    must not wait for traffic that may not come. None when nothing new waits."""
    times = [w.request.requested_ts_ms for w in waiting if not w.deferred]
    if not times:
        return None
    return max(*times, watermark_ms if watermark_ms is not None else max(times))


def on_withdrawal(
    window: Window | None,
    mine: Iterable[Waiting],
    withdrawal: Withdrawal,
    now_ms: int,
    policy: BudgetPolicy,
) -> BudgetStep:
    """Block every request of the withdrawing device still waiting (`mine`), with the
    withdrawal's reasons, now."""
    blocked = [w.request for w in mine if w.request.device_id == withdrawal.device_id]
    return BudgetStep(
        current(window, now_ms, policy),
        tuple(_audit(r, now_ms, AuditOutcome.BLOCKED, withdrawal.reasons) for r in blocked),
        dequeued=tuple(blocked),
    )
