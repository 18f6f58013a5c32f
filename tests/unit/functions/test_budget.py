"""The region budget: a cap per window, deferral without loss, priority, interlocks at release."""

from __future__ import annotations

import collections
import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from functions.budget import (
    BudgetPolicy,
    BudgetStep,
    Window,
    next_window_ms,
    on_request,
    on_window,
    on_withdrawal,
)
from functions.device import CommandRequest, Withdrawal
from functions.interlocks import PipelineFacts, region_reasons
from functions.wetbulb import RegionMode
from schemas.models import (
    LOAD_REDUCING_ACTIONS,
    Action,
    AuditDecision,
    AuditOutcome,
    Cause,
    DeviceCommand,
    ReasonCode,
)

pytestmark = pytest.mark.unit

T0 = 1_790_000_000_000  # a window boundary
POLICY = BudgetPolicy(commands_per_window=3, window_ms=10_000)
CAUSE = Cause(source_topic="test", event_id="e")
CLEAR = PipelineFacts()


def request(n: int, ts: int, priority: int = 1, action: Action = Action.CURTAIL) -> CommandRequest:
    return CommandRequest(f"cmd-{n}", f"dev-{n}", "north", action, priority, ts, f"c{n}", CAUSE)


def commands(outputs: tuple[object, ...] | list[object]) -> list[DeviceCommand]:
    return [o for o in outputs if isinstance(o, DeviceCommand)]


def audits(outputs: tuple[object, ...] | list[object], outcome: AuditOutcome) -> list[str | None]:
    return [o.command_id for o in outputs if isinstance(o, AuditDecision) and o.outcome is outcome]


@dataclasses.dataclass
class Driver:
    """Drives the budget like its adapter: waiting requests in a map, one timer at a time."""

    policy: BudgetPolicy = POLICY
    window: Window | None = None
    waiting: dict[str, CommandRequest] = dataclasses.field(default_factory=dict)
    timer: int | None = None
    # (what ran, its step, the requests still waiting after it)
    steps: list[tuple[str, BudgetStep, tuple[CommandRequest, ...]]] = dataclasses.field(
        default_factory=list
    )

    def _apply(self, kind: str, step: BudgetStep) -> BudgetStep:
        self.window = step.window
        self.waiting.update({r.command_id: r for r in step.queued})
        for command_id in step.dequeued:
            del self.waiting[command_id]
        if self.waiting and self.timer is None:
            self.timer = next_window_ms(step.window, self.policy)
        self.steps.append((kind, step, tuple(self.waiting.values())))
        return step

    def request(
        self,
        req: CommandRequest,
        region: RegionMode = RegionMode.NORMAL,
        pipeline: PipelineFacts = CLEAR,
    ) -> BudgetStep:
        step = on_request(
            self.window, len(self.waiting), req, req.requested_ts_ms, region, pipeline,
            self.policy,
        )  # fmt: skip
        return self._apply("request", step)

    def advance(
        self, to: int, region: RegionMode = RegionMode.NORMAL, pipeline: PipelineFacts = CLEAR
    ) -> list[BudgetStep]:
        fired = []
        while self.timer is not None and self.timer <= to:
            at, self.timer = self.timer, None
            step = on_window(self.window, self.waiting.values(), at, region, pipeline, self.policy)
            fired.append(self._apply("window", step))
        return fired

    def withdraw(self, device_id: str, ts: int, reasons: tuple[ReasonCode, ...]) -> BudgetStep:
        w = Withdrawal(device_id, "north", reasons, "w", CAUSE, ts)
        mine = [r for r in self.waiting.values() if r.device_id == device_id]
        return self._apply("withdrawal", on_withdrawal(self.window, mine, w, self.policy))

    def outputs(self) -> list[object]:
        return [o for _, s, _ in self.steps for o in s.outputs]


def test_over_budget_requests_are_deferred_then_released_at_the_next_window() -> None:
    """Three go now, the other two are DEFERRED with RATE_LIMITED and go at the next window."""
    d = Driver()
    for n in range(5):
        d.request(request(n, T0 + n))
    assert [c.command_id for c in commands(d.outputs())] == ["cmd-0", "cmd-1", "cmd-2"]
    deferred = [
        o for o in d.outputs() if isinstance(o, AuditDecision) and o.outcome.name == "DEFERRED"
    ]
    assert [(a.command_id, a.reason_codes) for a in deferred] == [
        (None, (ReasonCode.RATE_LIMITED,)),
        (None, (ReasonCode.RATE_LIMITED,)),
    ]
    assert sorted(d.waiting) == ["cmd-3", "cmd-4"]
    assert d.timer == T0 + POLICY.window_ms
    d.advance(T0 + POLICY.window_ms - 1)
    assert len(commands(d.outputs())) == 3
    (released,) = d.advance(T0 + POLICY.window_ms)
    assert [c.command_id for c in commands(released.outputs)] == ["cmd-3", "cmd-4"]
    assert d.waiting == {}
    assert d.timer is None


def test_a_withdrawn_waiting_request_is_blocked_with_its_reasons_and_never_released() -> None:
    """A device that became LIFE_SAFETY while its CURTAIL waited: BLOCKED, not released later."""
    d = Driver()
    for n in range(5):
        d.request(request(n, T0 + n))
    step = d.withdraw("dev-4", T0 + 10, (ReasonCode.LIFE_SAFETY_EXCLUSION,))
    (blocked,) = step.outputs
    assert isinstance(blocked, AuditDecision)
    assert (blocked.device_id, blocked.outcome) == ("dev-4", AuditOutcome.BLOCKED)
    assert blocked.reason_codes == (ReasonCode.LIFE_SAFETY_EXCLUSION,)
    d.advance(T0 + 3 * POLICY.window_ms)
    assert [c.device_id for c in commands(d.outputs())] == ["dev-0", "dev-1", "dev-2", "dev-3"]
    assert d.waiting == {}


def test_a_withdrawal_of_a_command_already_sent_changes_nothing() -> None:
    """Nothing of the device waits: no output, the window and the queue as they were."""
    d = Driver()
    d.request(request(0, T0))
    before = d.window
    step = d.withdraw("dev-0", T0 + 1, (ReasonCode.TELEMETRY_STALE,))
    assert step.outputs == ()
    assert (d.window, d.waiting) == (before, {})


def test_a_request_waits_behind_earlier_deferred_ones_even_with_room() -> None:
    """Once something waits, a new request queues too, so priority decides at the release."""
    d = Driver()
    for n in range(4):
        d.request(request(n, T0))
    late = d.request(request(9, T0 + POLICY.window_ms + 1, priority=0))
    assert commands(late.outputs) == []
    assert sorted(d.waiting) == ["cmd-3", "cmd-9"]


def test_waiting_requests_leave_in_priority_order() -> None:
    """Lower priority number first, then the oldest; the rest wait for the window after."""
    d = Driver()
    for n in range(3):
        d.request(request(n, T0))  # fills the window
    for n, prio in [(3, 5), (4, 2), (5, 9), (6, 2), (7, 1)]:
        d.request(request(n, T0 + n, priority=prio))
    (first,) = d.advance(T0 + POLICY.window_ms)
    assert [c.command_id for c in commands(first.outputs)] == ["cmd-7", "cmd-4", "cmd-6"]
    (second,) = d.advance(T0 + 2 * POLICY.window_ms)
    assert [c.command_id for c in commands(second.outputs)] == ["cmd-3", "cmd-5"]


def test_restore_is_never_deferred() -> None:
    """A full window and a queue do not hold RESTORE back, and it uses no budget."""
    d = Driver()
    for n in range(5):
        d.request(request(n, T0))
    restore = d.request(request(8, T0 + 1, action=Action.RESTORE))
    assert [c.action for c in commands(restore.outputs)] == [Action.RESTORE]
    assert audits(restore.outputs, AuditOutcome.EMITTED) == ["cmd-8"]
    assert restore.queued == ()
    assert d.window is not None
    assert d.window.used == POLICY.commands_per_window


UNSAFE = pytest.mark.parametrize(
    ("region", "pipeline", "reason"),
    [
        (RegionMode.SUSPENDED, CLEAR, ReasonCode.WET_BULB_SUSPEND),
        (RegionMode.GRID_FOLLOW, CLEAR, ReasonCode.WEATHER_UNKNOWN),
        (RegionMode.NORMAL, PipelineFacts(frozen=True), ReasonCode.SAFETY_FREEZE),
        (RegionMode.NORMAL, PipelineFacts(source_silent=True), ReasonCode.GRID_FOLLOW),
    ],
)


@UNSAFE
def test_a_waiting_request_is_blocked_if_the_region_turned_unsafe(
    region: RegionMode, pipeline: PipelineFacts, reason: ReasonCode
) -> None:
    """Suspension, Grid-Follow, a freeze or a silent source at release time: BLOCKED, not sent."""
    d = Driver()
    for n in range(4):
        d.request(request(n, T0))
    (step,) = d.advance(T0 + POLICY.window_ms, region, pipeline)
    assert commands(step.outputs) == []
    (blocked,) = step.outputs
    assert isinstance(blocked, AuditDecision)
    assert blocked.outcome is AuditOutcome.BLOCKED
    assert reason in blocked.reason_codes
    assert d.waiting == {}
    assert d.timer is None


@UNSAFE
@pytest.mark.parametrize("caught_up", [True, False])
def test_a_request_this_stage_sees_as_unsafe_waits_a_window_then_is_checked_again(
    region: RegionMode, pipeline: PipelineFacts, reason: ReasonCode, caught_up: bool
) -> None:
    """The device stage decided on its copy of the context, which may be newer than this
    stage's: the request is DEFERRED with the reasons, not dropped; at the next window it goes
    out if the region is safe by then and is BLOCKED if it is still unsafe."""
    d = Driver()
    arrival = d.request(request(0, T0), region, pipeline)
    (deferred,) = arrival.outputs
    assert isinstance(deferred, AuditDecision)
    assert (deferred.outcome, deferred.reason_codes) == (AuditOutcome.DEFERRED, (reason,))
    later = (RegionMode.NORMAL, CLEAR) if caught_up else (region, pipeline)
    (step,) = d.advance(T0 + POLICY.window_ms, *later)
    assert [c.command_id for c in commands(step.outputs)] == (["cmd-0"] if caught_up else [])
    blocked = [o for o in step.outputs if getattr(o, "outcome", None) is AuditOutcome.BLOCKED]
    assert [o.device_id for o in blocked] == ([] if caught_up else ["dev-0"])
    assert d.waiting == {}


# Properties -----------------------------------------------------------------------------------

requests = st.tuples(
    st.just("request"),
    st.integers(0, 4_000),  # ms since the previous op
    st.integers(0, 3),  # priority
    st.sampled_from([Action.CURTAIL, Action.SHED, Action.SETPOINT_OFFSET, Action.RESTORE]),
)
views = (
    st.sampled_from(RegionMode),
    st.builds(PipelineFacts, frozen=st.booleans(), source_silent=st.booleans()),
)
advances = st.tuples(st.just("advance"), st.integers(0, 25_000), *views)
viewed_requests = st.tuples(*requests.wrapped_strategy.element_strategies, *views)


def _key(sent: list[CommandRequest], command_id: str) -> tuple[int, int, str]:
    req = next(r for r in sent if r.command_id == command_id)
    return req.priority, req.requested_ts_ms, req.command_id


def _check_windows(d: Driver) -> None:
    """No window ever released more load-reducing commands than the budget."""
    per_window: collections.Counter[int] = collections.Counter()
    for _, step, _ in d.steps:
        reducing = [c for c in commands(step.outputs) if c.action in LOAD_REDUCING_ACTIONS]
        per_window[step.window.start_ms] += len(reducing)
    assert all(n <= d.policy.commands_per_window for n in per_window.values())


@settings(max_examples=150, deadline=None)
@given(
    st.lists(requests, max_size=60),
    st.lists(st.integers(0, 25_000), max_size=10),
    st.integers(1, 4),
)
def test_in_a_normal_region_every_request_is_emitted_exactly_once(
    script: list[tuple], gaps: list[int], budget: int
) -> None:
    """Property: under any request stream and window timing, each request ends EMITTED exactly
    once (deferred ones later, none dropped) unless its device withdrew it while it waited
    (then BLOCKED, never emitted); each window within budget, in priority order."""
    d = Driver(policy=BudgetPolicy(commands_per_window=budget, window_ms=10_000))
    clock = T0
    sent: list[CommandRequest] = []
    withdrawn: set[str] = set()
    gap_iter = iter(gaps)
    for n, (_, dt, priority, action) in enumerate(script):
        clock += dt
        if n % 5 == 4:  # now and then the watermark catches up with the requests
            d.advance(clock - next(gap_iter, 0))
        if n % 7 == 6 and sent:  # now and then an earlier device withdraws
            victim = sent[(n * 3) % len(sent)]
            withdrawn |= {victim.command_id} & set(d.waiting)
            d.withdraw(victim.device_id, clock, (ReasonCode.TELEMETRY_STALE,))
        req = request(n, clock, priority, action)
        sent.append(req)
        d.request(req)
    d.advance(clock + (len(script) + 1) * d.policy.window_ms)  # drain

    assert d.waiting == {}
    assert d.timer is None
    ids = [c.command_id for c in commands(d.outputs())]
    assert sorted(ids) == sorted(r.command_id for r in sent if r.command_id not in withdrawn)
    assert sorted(audits(d.outputs(), AuditOutcome.EMITTED)) == sorted(ids)
    blocked = [
        o.device_id
        for o in d.outputs()
        if isinstance(o, AuditDecision) and o.outcome is AuditOutcome.BLOCKED
    ]
    assert sorted(blocked) == sorted(r.device_id for r in sent if r.command_id in withdrawn)
    deferred = [o for o in d.outputs() if getattr(o, "outcome", None) is AuditOutcome.DEFERRED]
    assert all(o.action in LOAD_REDUCING_ACTIONS for o in deferred)
    _check_windows(d)
    for kind, step, left in d.steps:
        if kind == "window":
            keys = [_key(sent, c.command_id) for c in commands(step.outputs)]
            assert keys == sorted(keys)
            assert all(_key(sent, r.command_id) > k for r in left for k in keys)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(viewed_requests, advances), max_size=60))
def test_no_load_reducing_command_goes_out_while_an_interlock_holds(
    script: list[tuple],
) -> None:
    """Property: neither a request nor a window emits a load-reducing command while
    region_reasons(...) of this stage's view is non-empty; every request still ends EMITTED or
    BLOCKED exactly once, none waits forever."""
    d = Driver()
    clock = T0
    sent: list[CommandRequest] = []
    for n, (op, dt, *args) in enumerate(script):
        clock += dt
        if op == "request":
            priority, action, region, pipeline = args
            req = request(n, clock, priority, action)
            sent.append(req)
            arrival = d.request(req, region, pipeline)
            for command in commands(arrival.outputs):
                assert not region_reasons(command.action, region, pipeline)
            continue
        region, pipeline = args
        for step in d.advance(clock, region, pipeline):
            for command in commands(step.outputs):
                assert not region_reasons(command.action, region, pipeline)
            for out in step.outputs:
                if isinstance(out, AuditDecision) and out.outcome is AuditOutcome.BLOCKED:
                    assert out.action is not None
                    assert set(out.reason_codes) == set(
                        region_reasons(out.action, region, pipeline)
                    )
    d.advance(clock + (len(script) + 1) * d.policy.window_ms)

    assert d.waiting == {}
    finished = [
        o.device_id
        for o in d.outputs()
        if isinstance(o, AuditDecision)
        and o.outcome in {AuditOutcome.EMITTED, AuditOutcome.BLOCKED}
    ]
    assert sorted(finished) == sorted(r.device_id for r in sent)
    _check_windows(d)
