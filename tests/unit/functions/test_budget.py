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
    Held,
    Waiting,
    Window,
    flush_time,
    on_release,
    on_request,
    on_withdrawal,
    released,
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
from tests.vocabulary import examples

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
    """Drives the budget like its adapter: waiting requests in a map, the timers it asks for,
    and a watermark; an input's "now" is its time or the watermark, whichever is later, a
    timer's is its own instant."""

    policy: BudgetPolicy = POLICY
    window: Window | None = None
    waiting: dict[str, Waiting] = dataclasses.field(default_factory=dict)
    held: list[Held] = dataclasses.field(default_factory=list)
    timers: set[int] = dataclasses.field(default_factory=set)
    watermark: int = T0 - 1
    # (what ran, at what time, its step, the requests still waiting after it)
    steps: list[tuple[str, int, BudgetStep, tuple[Waiting, ...]]] = dataclasses.field(
        default_factory=list
    )

    def _apply(self, kind: str, now: int, step: BudgetStep) -> BudgetStep:
        self.window = step.window
        self.waiting.update({w.request.command_id: w for w in step.queued})
        for req in step.dequeued:
            del self.waiting[req.command_id]
        self.held = [h for h in self.held if h not in step.applied] + list(step.held)
        if step.wake_ms is not None:
            self.timers.add(step.wake_ms)
        self.steps.append((kind, now, step, tuple(self.waiting.values())))
        return step

    def _mine(self, device_id: str) -> list[Waiting]:
        return [e for e in self.waiting.values() if e.request.device_id == device_id]

    def request(self, req: CommandRequest) -> BudgetStep:
        now = max(req.requested_ts_ms, self.watermark)
        step = on_request(self.window, req, now, self.policy, self._mine(req.device_id))
        return self._apply("request", now, step)

    def advance(
        self, to: int, region: RegionMode = RegionMode.NORMAL, pipeline: PipelineFacts = CLEAR
    ) -> list[BudgetStep]:
        self.watermark = max(self.watermark, to)
        fired = []
        while due := [t for t in self.timers if t <= self.watermark]:
            now = min(due)  # a timer decides at its own instant
            self.timers.discard(now)
            if not self.waiting and not self.held:
                continue
            step = on_release(
                self.window, self.waiting.values(), self.held, now, region, pipeline, self.policy
            )
            fired.append(self._apply("release", now, step))
        return fired

    def flush_instants(self) -> list[int]:
        known = None if self.watermark < T0 else self.watermark
        return flush_time(self.window, self.waiting.values(), self.held, known, self.policy)

    def flush(self) -> list[BudgetStep]:
        """The adapter's processing-time hold ran out on a quiet feed: release at each instant
        `flush_time` gives, ahead of the watermark, and those `released` adds."""

        def release(now: int) -> BudgetStep:
            step = on_release(
                self.window, self.waiting.values(), self.held, now, RegionMode.NORMAL, CLEAR,
                self.policy,
            )  # fmt: skip
            return self._apply("release", now, step)

        return list(released(self.flush_instants(), release))

    def drain(self, start: int) -> None:
        """Advance window by window from `start` until nothing waits (each window releases its
        budget once the watermark reaches it)."""
        for k in range(len(self.waiting) + 2):
            self.advance(start + k * self.policy.window_ms)

    def withdraw(self, device_id: str, ts: int, reasons: tuple[ReasonCode, ...]) -> BudgetStep:
        w = Withdrawal(device_id, "north", reasons, "w", CAUSE, ts)
        now = max(ts, self.watermark)
        step = on_withdrawal(self.window, self._mine(device_id), w, now, self.policy)
        return self._apply("withdrawal", now, step)

    def outputs(self) -> list[object]:
        return [o for _, _, s, _ in self.steps for o in s.outputs]


def test_requests_wait_for_their_time_then_over_budget_ones_wait_a_window() -> None:
    """Nothing goes on arrival; at the watermark three go, the other two are DEFERRED with
    RATE_LIMITED and go at the next window."""
    d = Driver()
    for n in range(5):
        assert d.request(request(n, T0 + n)).outputs == ()
    d.advance(T0 + 4)
    assert [c.command_id for c in commands(d.outputs())] == ["cmd-0", "cmd-1", "cmd-2"]
    deferred = [
        o for o in d.outputs() if isinstance(o, AuditDecision) and o.outcome.name == "DEFERRED"
    ]
    assert [(a.command_id, a.reason_codes) for a in deferred] == [
        (None, (ReasonCode.RATE_LIMITED,)),
        (None, (ReasonCode.RATE_LIMITED,)),
    ]
    assert sorted(d.waiting) == ["cmd-3", "cmd-4"]
    assert T0 + POLICY.window_ms in d.timers
    d.advance(T0 + POLICY.window_ms - 1)
    assert len(commands(d.outputs())) == 3
    (released,) = d.advance(T0 + POLICY.window_ms)
    assert [c.command_id for c in commands(released.outputs)] == ["cmd-3", "cmd-4"]
    assert d.waiting == {}


def test_a_withdrawn_waiting_request_is_blocked_with_its_reasons_and_never_released() -> None:
    """A device that became LIFE_SAFETY while its CURTAIL waited: BLOCKED, not released later."""
    d = Driver()
    for n in range(5):
        d.request(request(n, T0 + n))
    d.withdraw("dev-4", T0 + 4, (ReasonCode.LIFE_SAFETY_EXCLUSION,))
    (blocked,) = [o for o in d.outputs() if getattr(o, "device_id", None) == "dev-4"]
    assert isinstance(blocked, AuditDecision)
    assert (blocked.device_id, blocked.outcome) == ("dev-4", AuditOutcome.BLOCKED)
    assert blocked.reason_codes == (ReasonCode.LIFE_SAFETY_EXCLUSION,)
    d.drain(T0 + 4)
    assert [c.device_id for c in commands(d.outputs())] == ["dev-0", "dev-1", "dev-2", "dev-3"]
    assert d.waiting == {}


def test_a_withdrawal_of_a_command_already_sent_changes_nothing() -> None:
    """Nothing of the device waits: no output, the window and the queue as they were."""
    d = Driver()
    d.request(request(0, T0))
    d.advance(T0)
    before = d.window
    step = d.withdraw("dev-0", T0 + 1, (ReasonCode.TELEMETRY_STALE,))
    assert (step.outputs, step.dequeued) == ((), ())
    assert (d.window, d.waiting) == (before, {})


def test_a_safety_withdrawal_blocks_a_waiting_request_on_arrival_whatever_the_times() -> None:
    """LIFE_SAFETY stamped after the window that would release the request opens (in event
    time), or before the request's own time: still blocked on arrival, never released; the
    RESTORE that follows goes out at once."""
    for withdrawn_at in (T0 + 5 * 60_000, T0 - 1_000):
        d = Driver()
        d.request(request(0, T0))
        step = d.withdraw("dev-0", withdrawn_at, (ReasonCode.LIFE_SAFETY_EXCLUSION,))
        assert [r.command_id for r in step.dequeued] == ["cmd-0"]
        restore = dataclasses.replace(
            request(0, withdrawn_at, action=Action.RESTORE), command_id="r"
        )
        assert [c.command_id for c in commands(d.request(restore).outputs)] == ["r"]
        d.advance(T0 + 10 * 60_000)
        assert [c.action for c in commands(d.outputs())] == [Action.RESTORE]
        assert (d.waiting, d.held) == ({}, [])


def test_an_event_end_after_a_request_acts_after_its_release_even_if_both_are_overdue() -> None:
    """The watermark jumps past a request and its event's end at once (a backlog, a replay):
    the CURTAIL goes at its own time, as live, and the RESTORE, which arrived first, waits
    behind it and goes after it."""
    d = Driver()
    d.request(request(0, T0))
    end = T0 + 5 * 60_000
    assert d.withdraw("dev-0", end, (ReasonCode.DR_EVENT,)).outputs == ()
    restore = dataclasses.replace(request(0, end, action=Action.RESTORE), command_id="r")
    assert d.request(restore).outputs == ()  # behind the CURTAIL it undoes
    d.advance(T0 + 10 * 60_000)
    assert [c.command_id for c in commands(d.outputs())] == ["cmd-0", "r"]
    assert (d.waiting, d.held) == ({}, [])


def test_an_event_end_withdraws_a_request_the_budget_deferred_past_it() -> None:
    """Budget 3, four requests: the fourth waits for the next window, which opens after its
    event has ended; the end blocks it at its instant and the RESTORE follows, alone."""
    d = Driver()
    for n in range(4):
        d.request(request(n, T0))
    d.advance(T0)
    end = T0 + 5_000
    d.withdraw("dev-3", end, (ReasonCode.DR_EVENT,))
    d.request(dataclasses.replace(request(3, end, action=Action.RESTORE), command_id="r"))
    d.advance(T0 + POLICY.window_ms)
    sent = [(c.device_id, c.action) for c in commands(d.outputs()) if c.device_id == "dev-3"]
    assert sent == [("dev-3", Action.RESTORE)]
    assert audits(d.outputs(), AuditOutcome.BLOCKED) == [None]
    assert (d.waiting, d.held) == ({}, [])


def test_requests_of_one_instant_go_in_priority_order_whatever_their_arrival() -> None:
    """A priority-5 event's requests arrive first, a priority-1 event's at the same instant
    after them: the window is spent on priority 1 first (DESIGN.md rule 8)."""
    d = Driver()
    for n in range(4):
        d.request(request(n, T0, priority=5))
    for n in range(4, 8):
        d.request(request(n, T0, priority=1))
    (first,) = d.advance(T0)
    assert [c.command_id for c in commands(first.outputs)] == ["cmd-4", "cmd-5", "cmd-6"]
    (second,) = d.advance(T0 + POLICY.window_ms)
    assert [c.command_id for c in commands(second.outputs)] == ["cmd-7", "cmd-0", "cmd-1"]


def test_waiting_requests_leave_in_priority_order() -> None:
    """Lower priority number first, then the oldest; the rest wait for the window after."""
    d = Driver()
    for n in range(3):
        d.request(request(n, T0))  # fills the window
    d.advance(T0)
    for n, prio in [(3, 5), (4, 2), (5, 9), (6, 2), (7, 1)]:
        d.request(request(n, T0 + n, priority=prio))
    d.advance(T0 + 7)
    (first,) = d.advance(T0 + POLICY.window_ms)
    assert [c.command_id for c in commands(first.outputs)] == ["cmd-7", "cmd-4", "cmd-6"]
    (second,) = d.advance(T0 + 2 * POLICY.window_ms)
    assert [c.command_id for c in commands(second.outputs)] == ["cmd-3", "cmd-5"]


def test_restore_is_never_deferred() -> None:
    """A full window and a queue do not hold RESTORE back, and it uses no budget."""
    d = Driver()
    for n in range(5):
        d.request(request(n, T0))
    d.advance(T0)
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
def test_a_deferred_request_is_blocked_if_the_region_turned_unsafe(
    region: RegionMode, pipeline: PipelineFacts, reason: ReasonCode
) -> None:
    """Suspension, Grid-Follow, a freeze or a silent source at release time: BLOCKED, not sent."""
    d = Driver()
    for n in range(4):
        d.request(request(n, T0))
    d.advance(T0)
    (step,) = d.advance(T0 + POLICY.window_ms, region, pipeline)
    assert commands(step.outputs) == []
    (blocked,) = step.outputs
    assert isinstance(blocked, AuditDecision)
    assert blocked.outcome is AuditOutcome.BLOCKED
    assert reason in blocked.reason_codes
    assert d.waiting == {}


@UNSAFE
@pytest.mark.parametrize("caught_up", [True, False])
def test_a_request_this_stage_sees_as_unsafe_waits_a_window_then_is_checked_again(
    region: RegionMode, pipeline: PipelineFacts, reason: ReasonCode, caught_up: bool
) -> None:
    """The device stage decided on its copy of the context, which may be newer than this
    stage's: the request is DEFERRED with the reasons, not dropped; at the next window it goes
    out if the region is safe by then and is BLOCKED if it is still unsafe."""
    d = Driver()
    d.request(request(0, T0))
    (first,) = d.advance(T0, region, pipeline)
    (deferred,) = first.outputs
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
    """No window ever released more load-reducing commands than the budget: neither as the
    stage counted them nor by the windows their issue times fall in (what a grid operator
    sees on `grid.commands`)."""
    counted: collections.Counter[int] = collections.Counter()
    stamped: collections.Counter[int] = collections.Counter()
    for _, _, step, _ in d.steps:
        reducing = [c for c in commands(step.outputs) if c.action in LOAD_REDUCING_ACTIONS]
        counted[step.window.start_ms] += len(reducing)
        for c in reducing:
            stamped[c.issued_ts_ms - c.issued_ts_ms % d.policy.window_ms] += 1
    assert all(n <= d.policy.commands_per_window for n in counted.values())
    assert all(n <= d.policy.commands_per_window for n in stamped.values())


@settings(max_examples=examples(150), deadline=None)
@given(
    st.lists(requests, max_size=60),
    st.lists(st.integers(0, 25_000), max_size=10),
    st.integers(1, 4),
)
def test_in_a_normal_region_every_request_is_emitted_exactly_once(
    script: list[tuple], gaps: list[int], budget: int
) -> None:
    """Property: under any request stream and window timing, each request ends EMITTED or
    BLOCKED exactly once (deferred ones later, none dropped); one waiting when a safety
    withdrawal of its device arrived is never emitted, one waiting when another withdrawal
    arrived only before that withdrawal's instant; each window within budget, in priority
    order."""
    d = Driver(policy=BudgetPolicy(commands_per_window=budget, window_ms=10_000))
    clock = T0
    sent: list[CommandRequest] = []
    immediate: set[str] = set()  # the command ids waiting when a safety withdrawal came
    held: list[tuple[int, set[str]]] = []  # a withdrawal's instant, the ids waiting then
    gap_iter = iter(gaps)
    for n, (_, dt, priority, action) in enumerate(script):
        clock += dt
        if n % 5 == 4:  # now and then the watermark catches up with the requests
            d.advance(clock - next(gap_iter, 0))
        if n % 11 == 10:  # now and then the feed goes quiet and the hold runs out
            d.flush()
        if n % 7 == 6 and sent:  # now and then an earlier device withdraws
            victim = sent[(n * 3) % len(sent)]
            mine = {c for c, w in d.waiting.items() if w.request.device_id == victim.device_id}
            safety = n % 2 == 0
            why = ReasonCode.LIFE_SAFETY_EXCLUSION if safety else ReasonCode.TELEMETRY_STALE
            if safety:
                immediate |= mine
            else:
                held.append((clock, mine))
            d.withdraw(victim.device_id, clock, (why,))
        req = request(n, clock, priority, action)
        sent.append(req)
        d.request(req)
    d.drain(clock)

    assert d.waiting == {}
    issued = {c.command_id: c.issued_ts_ms for c in commands(d.outputs())}
    assert len(issued) == len(commands(d.outputs()))
    assert sorted(audits(d.outputs(), AuditOutcome.EMITTED)) == sorted(issued)
    blocked = [
        o.device_id
        for o in d.outputs()
        if isinstance(o, AuditDecision) and o.outcome is AuditOutcome.BLOCKED
    ]
    assert sorted([*issued, *(f"cmd-{b[4:]}" for b in blocked)]) == sorted(
        r.command_id for r in sent
    )
    assert not immediate & set(issued)  # a safety withdrawal's victims never go out
    for at, victims in held:  # the others only if released before the withdrawal's instant
        assert all(issued[v] < at for v in victims & set(issued))
    deferred = [o for o in d.outputs() if getattr(o, "outcome", None) is AuditOutcome.DEFERRED]
    assert all(o.action in LOAD_REDUCING_ACTIONS for o in deferred)
    _check_windows(d)
    for kind, now, step, left in d.steps:
        if kind == "release":
            keys = [_key(sent, c.command_id) for c in commands(step.outputs)]
            assert keys == sorted(keys)
            due = [w.request for w in left if w.request.requested_ts_ms <= now]
            assert all(_key(sent, r.command_id) > k for r in due for k in keys)


@settings(max_examples=examples(150), deadline=None)
@given(st.lists(st.one_of(viewed_requests, advances), max_size=60))
def test_no_load_reducing_command_goes_out_while_an_interlock_holds(
    script: list[tuple],
) -> None:
    """Property: no load-reducing command goes out on arrival nor while region_reasons(...) of
    this stage's view is non-empty; every request still ends EMITTED or BLOCKED exactly once,
    none waits forever."""
    d = Driver()
    clock = T0
    sent: list[CommandRequest] = []
    for n, (op, dt, *args) in enumerate(script):
        clock += dt
        if op == "request":
            priority, action, *_ = args
            req = request(n, clock, priority, action)
            sent.append(req)
            arrival = d.request(req)
            assert all(c.action not in LOAD_REDUCING_ACTIONS for c in commands(arrival.outputs))
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
    d.drain(clock)

    assert d.waiting == {}
    finished = [
        o.device_id
        for o in d.outputs()
        if isinstance(o, AuditDecision)
        and o.outcome in {AuditOutcome.EMITTED, AuditOutcome.BLOCKED}
    ]
    assert sorted(finished) == sorted(r.device_id for r in sent)
    _check_windows(d)


one_device_ops = st.lists(
    st.tuples(
        st.sampled_from(["curtail", "end", "life-safety", "advance"]),
        st.integers(0, 12_000),  # ms since the previous op
    ),
    max_size=40,
)


@settings(max_examples=examples(200), deadline=None)
@given(one_device_ops, st.integers(1, 3))
def test_a_restore_never_overtakes_the_load_reducing_command_it_undoes(
    script: list[tuple[str, int]], budget: int
) -> None:
    """Property: one device's CURTAILs, each undone by a withdrawal (an event's end, held for
    its instant, or LIFE_SAFETY, at once) and a RESTORE, in any timing: every CURTAIL made
    before a RESTORE is resolved (sent or blocked) before that RESTORE goes out, so the last
    command the device gets is never a CURTAIL that was undone."""
    d = Driver(policy=BudgetPolicy(commands_per_window=budget, window_ms=10_000))
    clock, made = T0, []
    for n, (op, dt) in enumerate(script):
        clock += dt
        if op == "advance":
            d.advance(clock)
            continue
        if op == "curtail":
            made.append(
                dataclasses.replace(request(0, clock), command_id=f"c-{n}", correlation_id=f"c{n}")
            )
            d.request(made[-1])
            continue
        why = ReasonCode.DR_EVENT if op == "end" else ReasonCode.LIFE_SAFETY_EXCLUSION
        d.withdraw("dev-0", clock, (why,))
        restore = CommandRequest(
            f"r-{n}", "dev-0", "north", Action.RESTORE, 1, clock, f"c{n}", CAUSE
        )
        made.append(restore)
        d.request(restore)
    d.drain(clock)

    ends = (AuditOutcome.EMITTED, AuditOutcome.BLOCKED)
    resolved = [  # the correlation ids of the requests, in the order they were resolved
        o.correlation_id for o in d.outputs() if isinstance(o, AuditDecision) and o.outcome in ends
    ]
    assert sorted(resolved) == sorted(r.correlation_id for r in made)
    for k, restore in enumerate(made):
        if restore.action is Action.RESTORE:
            at = resolved.index(restore.correlation_id)
            undone = [r for r in made[:k] if r.action is Action.CURTAIL]
            assert all(resolved.index(r.correlation_id) < at for r in undone)


@settings(max_examples=examples(200), deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 6_000), st.integers(0, 3), st.booleans()), max_size=40),
    st.integers(1, 3),
)
def test_a_quiet_feeds_flush_releases_what_the_watermark_reaching_its_last_instant_would(
    script: list[tuple[int, int, bool]], budget: int
) -> None:
    """Property: the hold's flush is only an early watermark. Two stages get the same
    requests; where one flushes, the other's watermark jumps to the flush's last instant: both
    emit the same commands at the same times, audits included (a deferred request's window
    opens before a request due after its start competes for it)."""
    policy = BudgetPolicy(commands_per_window=budget, window_ms=10_000)
    flushed, advanced = Driver(policy=policy), Driver(policy=policy)
    clock = T0
    for n, (dt, priority, quiet) in enumerate(script):
        clock += dt
        req = request(n, clock, priority)
        flushed.request(req)
        advanced.request(req)
        if quiet and (instants := flushed.flush_instants()):
            flushed.flush()
            advanced.advance(instants[-1])
    flushed.drain(clock)
    advanced.drain(clock)
    assert flushed.outputs() == advanced.outputs()
