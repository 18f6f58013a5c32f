"""The Flink pid files as the stack reads them: only this cluster's live daemons count."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from gridstream.stack.daemons import (
    JOBMANAGER,
    MAIN_CLASSES,
    TASKMANAGER,
    DaemonPids,
    exclusive,
    is_daemon,
    parse_pids,
)

pytestmark = pytest.mark.unit

CONF = Path("/stack/flink/conf")


def argv(daemon: str, conf: Path = CONF) -> list[str]:
    """A daemon's command line as `flink-daemon.sh` builds it."""
    return ["java", "-Xmx1g", f"-Dlog.file={conf.parent}/log/x.log", "-classpath", "lib/*",
            MAIN_CLASSES[daemon], "--configDir", str(conf), "-D", "x=y"]  # fmt: skip


def a_dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    gone = subprocess.Popen(["true"])
    gone.wait()
    return gone.pid


def test_parse_pids_reads_one_pid_a_line_and_skips_the_rest() -> None:
    """Blank or garbled lines (a half-written file) are not pids."""
    assert parse_pids("12\n\n 34 \nabc\n-5\n56") == [12, 34, 56]


def test_a_daemon_is_its_class_with_this_clusters_conf_dir() -> None:
    """The class and `--configDir` both have to match."""
    assert is_daemon(argv(TASKMANAGER), TASKMANAGER, CONF)
    assert not is_daemon(argv(TASKMANAGER), JOBMANAGER, CONF)
    assert not is_daemon(argv(TASKMANAGER, Path("/other/conf")), TASKMANAGER, CONF)
    assert not is_daemon(["sleep", "30"], TASKMANAGER, CONF)
    assert not is_daemon([*argv(TASKMANAGER)[:-4]], TASKMANAGER, CONF)  # no --configDir


def pids_of(tmp_path: Path, lines: str, argvs: dict[int, Sequence[str]]) -> DaemonPids:
    """A TaskManager pid file holding `lines`; `argvs` plays /proc's command lines."""
    (tmp_path / f"flink-user-{TASKMANAGER}.pid").write_text(lines)
    return DaemonPids(tmp_path, TASKMANAGER, CONF, argv_of=lambda pid: argvs.get(pid, []))


def test_live_skips_dead_pids_and_processes_that_are_not_the_daemon(tmp_path: Path) -> None:
    """A dead pid, or a live pid that is now some other program, is not the TaskManager."""
    me, dead = os.getpid(), a_dead_pid()
    pids = pids_of(tmp_path, f"{dead}\n{me}\n", {me: argv(TASKMANAGER), dead: argv(TASKMANAGER)})
    assert pids.live() == [me]
    other = pids_of(tmp_path, f"{me}\n", {me: ["python", "-m", "pytest"]})
    assert other.live() == []


def test_prune_keeps_only_live_daemons_and_removes_an_empty_file(tmp_path: Path) -> None:
    """The stale line the scripts leave after a crash (here last, where `stop` would look) goes;
    a file with nothing live left is removed."""
    me, dead = os.getpid(), a_dead_pid()
    pids = pids_of(tmp_path, f"{me}\n{dead}\n", {me: argv(TASKMANAGER)})

    assert pids.prune() == [me]
    assert pids.files[0].read_text() == f"{me}\n"

    gone = pids_of(tmp_path, f"{dead}\n", {})
    assert gone.prune() == []
    assert gone.files == []


def test_pid_files_of_every_user_name_are_read(tmp_path: Path) -> None:
    """The scripts name the file by `$USER` (empty in some shells): every variant counts."""
    me = os.getpid()
    (tmp_path / f"flink--{TASKMANAGER}.pid").write_text(f"{me}\n")
    (tmp_path / f"flink-root-{JOBMANAGER}.pid").write_text(f"{me}\n")
    pids = DaemonPids(tmp_path, TASKMANAGER, CONF, argv_of=lambda pid: argv(TASKMANAGER))
    assert pids.listed() == [me]


def test_exclusive_lets_one_holder_in_at_a_time(tmp_path: Path) -> None:
    """A second holder waits until the first leaves (flock, across threads and processes)."""
    lock, order = tmp_path / "daemons.lock", []

    def second() -> None:
        with exclusive(lock):
            order.append("second")

    with exclusive(lock):
        waiter = threading.Thread(target=second)
        waiter.start()
        time.sleep(0.2)
        order.append("first done")
    waiter.join(5)
    assert order == ["first done", "second"]
