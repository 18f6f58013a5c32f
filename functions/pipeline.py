"""The pipeline's view of itself: the lag freeze and the silent-source watchdog (rules 3 and 4).

A `Heartbeat` comes once a second while device records flow (a SQL window over them, in the
job); the watch stage folds them in and ticks on processing time. Lag is processing time minus
the newest event time seen. Pure: the clock arrives as an argument.
"""

from __future__ import annotations

import dataclasses

from functions.interlocks import PipelineFacts
from schemas.models import Alert, AlertKind, Cause, Severity

PIPELINE_SCOPE = "*"  # the region_id of alerts about the whole pipeline
FORGET_AFTER = 10  # silence periods after which a subtask's last heartbeat is dropped


@dataclasses.dataclass(frozen=True)
class PipelinePolicy:
    """Thresholds; `freeze_enabled` is off in replay, where decisions are as of event time."""

    freeze_lag_ms: int = 60_000
    clear_lag_ms: int = 30_000
    silence_ms: int = 60_000
    tick_ms: int = 5_000
    freeze_enabled: bool = True


@dataclasses.dataclass(frozen=True)
class Heartbeat:
    """One source's progress (`subtask` tells sources apart): when it last saw device records
    and the newest event time."""

    subtask: int
    proc_ms: int
    newest_event_ms: int


@dataclasses.dataclass(frozen=True)
class PipelineState:
    """The facts in force and each subtask's newest heartbeat."""

    facts: PipelineFacts = dataclasses.field(default_factory=PipelineFacts)
    beats: tuple[Heartbeat, ...] = ()


@dataclasses.dataclass(frozen=True)
class PipelineStep:
    """The new state, and the alerts of any change (the adapter broadcasts `state.facts`)."""

    state: PipelineState
    alerts: tuple[Alert, ...] = ()

    @property
    def changed(self) -> bool:
        return bool(self.alerts)


def lag_ms(state: PipelineState, now_ms: int, policy: PipelinePolicy) -> int:
    """The worst lag among subtasks that reported recently (an idle one has no lag)."""
    recent = [b for b in state.beats if now_ms - b.proc_ms <= policy.silence_ms]
    return max((b.proc_ms - b.newest_event_ms for b in recent), default=0)


def evaluate(
    state: PipelineState, now_ms: int, policy: PipelinePolicy, awake_ms: int | None = None
) -> PipelineStep:
    """Re-derive freeze (with hysteresis) and silence at `now_ms`; alert on each change.

    `awake_ms` is when this watch started: silence is counted from no earlier, so a watch
    restored after the job was down (an upgrade, a failover) does not call the sources silent
    for the time the job was not reading them. A watch that was already silent stays so until
    a heartbeat: a restore alone never clears Grid-Follow.
    """
    was = state.facts
    lag = lag_ms(state, now_ms, policy)
    frozen = policy.freeze_enabled and (
        lag > policy.freeze_lag_ms or (was.frozen and lag >= policy.clear_lag_ms)
    )
    newest = max((b.proc_ms for b in state.beats), default=None)
    since = newest
    if newest is not None and awake_ms is not None and not was.source_silent:
        since = max(newest, awake_ms)
    silent = since is not None and now_ms - since > policy.silence_ms
    alerts = []
    if frozen != was.frozen:
        kind = AlertKind.SAFETY_FREEZE if frozen else AlertKind.SAFETY_FREEZE_CLEARED
        alerts.append(pipeline_alert(kind, f"processing lag {lag / 1000:.1f} s", now_ms))
    if silent != was.source_silent:
        kind = AlertKind.GRID_FOLLOW if silent else AlertKind.GRID_FOLLOW_CLEARED
        quiet = now_ms - (newest or now_ms)
        alerts.append(pipeline_alert(kind, f"no telemetry for {quiet / 1000:.0f} s", now_ms))
    return PipelineStep(PipelineState(PipelineFacts(frozen, silent), state.beats), tuple(alerts))


def on_heartbeat(
    state: PipelineState | None, beat: Heartbeat, now_ms: int, policy: PipelinePolicy
) -> PipelineStep:
    """Keep the subtask's newest heartbeat, then re-evaluate."""
    current = state or PipelineState()
    kept = (
        b
        for b in current.beats
        if b.subtask != beat.subtask and now_ms - b.proc_ms <= FORGET_AFTER * policy.silence_ms
    )  # a subtask gone for long (rescaled, restarted) is forgotten
    beats = (*kept, beat)
    return evaluate(dataclasses.replace(current, beats=beats), now_ms, policy)


def pipeline_alert(kind: AlertKind, message: str, now_ms: int) -> Alert:
    """An alert about the whole pipeline (`PIPELINE_SCOPE`)."""
    severity = (
        Severity.CRITICAL
        if kind in {AlertKind.SAFETY_FREEZE, AlertKind.GRID_FOLLOW, AlertKind.MIRROR_DOWN}
        else Severity.INFO
    )
    return Alert(
        kind=kind,
        severity=severity,
        region_id=PIPELINE_SCOPE,
        correlation_id=f"pipeline-{kind.value.lower()}-{now_ms}",
        raised_ts_ms=now_ms,
        message=message,
        cause=Cause(source_topic="pipeline", event_id=f"{kind.value}@{now_ms}"),
    )
