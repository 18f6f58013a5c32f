"""The Flink supervisor's decisions: when to restart, and what it does each round."""

from __future__ import annotations

import dataclasses
import itertools
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gridstream import config
from gridstream.stack.daemons import JOBMANAGER, TASKMANAGER
from gridstream.stack.process import ComponentError
from gridstream.stack.supervisor import Backoff, restart_delay_s, supervise

pytestmark = pytest.mark.unit

POLICY = Backoff(base_s=2.0, max_s=60.0, stable_s=60.0)


def test_the_first_restart_is_immediate() -> None:
    """A daemon that dies for the first time is started again at once."""
    assert restart_delay_s([], now=1_000.0, backoff=POLICY) == 0.0


def test_a_taskmanager_that_ran_long_enough_is_restarted_at_once() -> None:
    """A restart longer than `stable_s` ago does not count against the next one."""
    assert restart_delay_s([100.0, 110.0], now=175.0, backoff=POLICY) == 0.0


def test_restarts_in_quick_succession_wait_longer_each_time() -> None:
    """Dying again soon after a restart waits base_s, then twice that, and so on."""
    assert restart_delay_s([100.0], now=101.0, backoff=POLICY) == pytest.approx(1.0)
    assert restart_delay_s([100.0, 103.0], now=104.0, backoff=POLICY) == pytest.approx(3.0)
    assert restart_delay_s([100.0, 103.0, 108.0], now=108.0, backoff=POLICY) == pytest.approx(8.0)


@given(
    gaps=st.lists(st.floats(min_value=0.0, max_value=120.0), max_size=12),
    since=st.floats(min_value=0.0, max_value=120.0),
)
def test_the_pause_never_exceeds_the_maximum(gaps: list[float], since: float) -> None:
    """Whatever the history, the supervisor waits at most `max_s` before trying again."""
    restarts, at = [], 0.0
    for gap in gaps:
        at += gap
        restarts.append(at)
    delay = restart_delay_s(restarts, now=at + since, backoff=POLICY)
    assert 0.0 <= delay <= POLICY.max_s


class FakeDaemons:
    """One kind of daemon's live pids."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids

    def live(self) -> list[int]:
        return list(self.pids)


def stop_after_rounds(stopping: threading.Event, rounds: int = 5) -> Callable[[], None]:
    """A heartbeat for `supervise` (called once a round) that stops it after `rounds`."""
    beats = itertools.count(1)

    def beat() -> None:
        if next(beats) >= rounds:
            stopping.set()

    return beat


class FakeFlink:
    """A cluster whose daemons are gone unless said; `revive` starts a new one (or fails for
    a JobManager, when `jobmanager_fails`)."""

    def __init__(
        self,
        home: Path,
        jobmanager: bool = True,
        jobmanager_fails: bool = False,
        high_availability: bool = True,
    ) -> None:
        self.home = home
        self.settings = config.Settings(
            stack=dataclasses.replace(config.StackSettings(), flink_ha=high_availability)
        )
        self.pids = {
            JOBMANAGER: FakeDaemons([1] if jobmanager else []),
            TASKMANAGER: FakeDaemons([]),
        }
        self.jobmanager_fails = jobmanager_fails
        self.revived: list[tuple[str, int]] = []

    def daemons(self, daemon: str) -> FakeDaemons:
        return self.pids[daemon]

    def revive(self, daemon: str) -> int:
        if daemon == JOBMANAGER and self.jobmanager_fails:
            raise ComponentError("flink jobmanager.sh start: no process stayed up")
        pid = 100 + len(self.revived)
        self.revived.append((daemon, pid))
        self.pids[daemon].pids = [pid]
        return pid


def test_a_dead_taskmanager_is_started_once_and_the_restart_is_logged(tmp_path: Path) -> None:
    """With the JobManager up, a missing TaskManager is revived once, and the log says so."""
    stopping, said = threading.Event(), []
    flink = FakeFlink(tmp_path)

    supervise(flink, stop_after_rounds(stopping), stopping, said.append, POLICY, every_s=0.001)

    assert flink.revived == [(TASKMANAGER, 100)]
    assert any("TaskManager restarted (restart 1): pid 100" in line for line in said)
    assert said[-1] == "stopped"


@pytest.mark.parametrize(
    ("high_availability", "outcome"),
    [(True, "resumes the jobs from their latest checkpoints"), (False, "its jobs are gone")],
)
def test_a_dead_jobmanager_is_started_first_then_the_taskmanager(
    tmp_path: Path, high_availability: bool, outcome: str
) -> None:
    """With both daemons gone, the JobManager is revived before the TaskManager, in the same
    round, and its log line says what becomes of the jobs (resumed only with HA)."""
    stopping, said = threading.Event(), []
    flink = FakeFlink(tmp_path, jobmanager=False, high_availability=high_availability)

    supervise(flink, stop_after_rounds(stopping), stopping, said.append, POLICY, every_s=0.001)

    assert flink.revived == [(JOBMANAGER, 100), (TASKMANAGER, 101)]
    (restart,) = [line for line in said if "JobManager restarted (restart 1): pid 100" in line]
    assert outcome in restart
    assert not any("no JobManager" in line for line in said)


def test_no_taskmanager_is_started_without_a_jobmanager(tmp_path: Path) -> None:
    """A JobManager that cannot be started gets no TaskManager beside it, the log says why,
    once, and the JobManager is tried again only after the back-off pause."""
    stopping, said = threading.Event(), []
    flink = FakeFlink(tmp_path, jobmanager=False, jobmanager_fails=True)

    supervise(flink, stop_after_rounds(stopping), stopping, said.append, POLICY, every_s=0.001)

    assert flink.revived == []
    assert [line for line in said if "no JobManager" in line] == [
        "no JobManager runs: not starting a TaskManager without one"
    ]
    assert len([line for line in said if line.startswith("starting a JobManager failed")]) == 1


def test_the_supervisor_stops_when_the_stack_folder_is_gone(tmp_path: Path) -> None:
    """A stack folder removed without `down` does not leave the supervisor running for ever."""
    stopping, said = threading.Event(), []
    flink = FakeFlink(tmp_path / "removed")

    supervise(flink, lambda: None, stopping, said.append, POLICY, every_s=0.001)

    assert flink.revived == []
    assert said[-1] == "stopped"
