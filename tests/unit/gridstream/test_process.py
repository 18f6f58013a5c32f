"""ManagedProcess: a real short-lived child with a pid file and a log file."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from gridstream.stack.process import ComponentError, ManagedProcess, pid_alive, wait_until

pytestmark = pytest.mark.unit


@pytest.fixture
def sleeper(tmp_path: Path) -> Iterator[ManagedProcess]:
    """A ManagedProcess in `tmp_path`, stopped after the test whatever happened."""
    proc = ManagedProcess("sleeper", tmp_path)
    yield proc
    proc.stop(timeout_s=5)


def test_start_writes_the_pid_file_and_the_process_runs(sleeper: ManagedProcess) -> None:
    """The pid file names the live child."""
    pid = sleeper.start(["sleep", "30"])

    assert sleeper.pid_file.read_text() == str(pid)
    assert sleeper.pid == pid
    assert pid_alive(pid)


def test_stop_kills_the_process_and_removes_the_pid_file(sleeper: ManagedProcess) -> None:
    """Stopping ends the child and forgets its pid."""
    pid = sleeper.start(["sleep", "30"])

    assert sleeper.stop(timeout_s=5) is True

    assert not pid_alive(pid)
    assert not sleeper.pid_file.exists()
    assert sleeper.pid is None


def test_stop_when_not_running_returns_false(sleeper: ManagedProcess) -> None:
    """Stopping what never started reports that nothing ran."""
    assert sleeper.stop() is False


def test_output_goes_to_the_log_file(sleeper: ManagedProcess) -> None:
    """The child's stdout and stderr are appended to its log file."""
    sleeper.start(["sh", "-c", "echo out; echo err >&2"])

    assert wait_until(lambda: sleeper.pid is None, timeout_s=5, interval_s=0.05)
    assert sleeper.log_file.read_text().split() == ["out", "err"]


def test_wait_ready_raises_naming_the_log_when_the_process_exits(
    sleeper: ManagedProcess,
) -> None:
    """A child that dies during start-up fails fast, pointing at its log."""
    sleeper.start(["sh", "-c", "echo broken config; exit 3"])

    with pytest.raises(
        ComponentError, match=re.escape(f"exited during start-up: see {sleeper.log_file}")
    ):
        sleeper.wait_ready(lambda: False, timeout_s=10)


def test_wait_ready_raises_naming_the_log_when_time_runs_out(sleeper: ManagedProcess) -> None:
    """A live child that never becomes ready fails after the timeout, pointing at its log."""
    sleeper.start(["sleep", "30"])

    with pytest.raises(
        ComponentError, match=rf"did not become ready.*{re.escape(str(sleeper.log_file))}"
    ):
        sleeper.wait_ready(lambda: False, timeout_s=0.5)
    assert sleeper.pid is not None


def test_wait_ready_returns_once_the_probe_passes(sleeper: ManagedProcess) -> None:
    """A ready child returns at once."""
    sleeper.start(["sleep", "30"])

    sleeper.wait_ready(lambda: True, timeout_s=5)
