"""The TaskManager supervisor's decisions: when to restart, and what it does each round."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gridstream.stack.daemons import JOBMANAGER, TASKMANAGER
from gridstream.stack.supervisor import Backoff, restart_delay_s, supervise

pytestmark = pytest.mark.unit

POLICY = Backoff(base_s=2.0, max_s=60.0, stable_s=60.0)


def test_the_first_restart_is_immediate() -> None:
    """A TaskManager that dies for the first time is started again at once."""
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


class FakeFlink:
    """A cluster whose TaskManager dies `deaths` times; `revive_taskmanager` starts a new one,
    and the supervisor is told to stop once it has seen enough rounds."""

    def __init__(self, home: Path, jobmanager: bool, stopping: threading.Event) -> None:
        self.home = home
        self.pids = {
            JOBMANAGER: FakeDaemons([1] if jobmanager else []),
            TASKMANAGER: FakeDaemons([]),
        }
        self.revived: list[int] = []
        self.rounds = 0
        self.stopping = stopping

    def daemons(self, daemon: str) -> FakeDaemons:
        if daemon == TASKMANAGER:
            self.rounds += 1
            if self.rounds >= 5:
                self.stopping.set()
        return self.pids[daemon]

    def revive_taskmanager(self) -> int:
        pid = 100 + len(self.revived)
        self.revived.append(pid)
        self.pids[TASKMANAGER].pids = [pid]
        return pid


def test_a_dead_taskmanager_is_started_once_and_the_restart_is_logged(tmp_path: Path) -> None:
    """With the JobManager up, a missing TaskManager is revived once, and the log says so."""
    stopping, said, beats = threading.Event(), [], []
    flink = FakeFlink(tmp_path, jobmanager=True, stopping=stopping)

    supervise(flink, lambda: beats.append(1), stopping, said.append, POLICY, every_s=0.001)

    assert flink.revived == [100]
    assert any("TaskManager restarted (restart 1): pid 100" in line for line in said)
    assert len(beats) >= 4
    assert said[-1] == "stopped"


def test_no_taskmanager_is_started_without_a_jobmanager(tmp_path: Path) -> None:
    """A cluster whose JobManager is gone gets no TaskManager, and the log says why, once."""
    stopping, said = threading.Event(), []
    flink = FakeFlink(tmp_path, jobmanager=False, stopping=stopping)

    supervise(flink, lambda: None, stopping, said.append, POLICY, every_s=0.001)

    assert flink.revived == []
    assert [line for line in said if "no JobManager" in line] == [
        "no JobManager runs: not starting a TaskManager without one"
    ]


def test_the_supervisor_stops_when_the_stack_folder_is_gone(tmp_path: Path) -> None:
    """A stack folder removed without `down` does not leave the supervisor running for ever."""
    stopping, said = threading.Event(), []
    flink = FakeFlink(tmp_path / "removed", jobmanager=True, stopping=threading.Event())

    supervise(flink, lambda: None, stopping, said.append, POLICY, every_s=0.001)

    assert flink.revived == []
    assert said[-1] == "stopped"
