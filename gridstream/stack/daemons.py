"""The Flink cluster's daemons as the stack tracks them: pid files that name only live processes.

`flink-daemon.sh start` appends each JVM's pid to `<pid dir>/flink-<user>-<daemon>.pid`, even
when that JVM dies a second later (a second JobManager on a taken port), and `stop` kills only
the last pid listed. A dead line at the end therefore hid the live process from `stack down`,
and a killed TaskManager's line stayed for ever. The stack reads these files through
`DaemonPids`, which keeps a pid only while it is alive and is this cluster's daemon (its command
line names the daemon's class and this cluster's conf dir), and stops the daemons itself.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import itertools
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from gridstream.stack.process import pid_alive

JOBMANAGER = "standalonesession"
TASKMANAGER = "taskexecutor"
MAIN_CLASSES = {
    JOBMANAGER: "org.apache.flink.runtime.entrypoint.StandaloneSessionClusterEntrypoint",
    TASKMANAGER: "org.apache.flink.runtime.taskexecutor.TaskManagerRunner",
}


def parse_pids(text: str) -> list[int]:
    """The pids of a pid file's text, one a line, in order; other lines are skipped."""
    return [int(line) for line in (raw.strip() for raw in text.splitlines()) if line.isdigit()]


def is_daemon(argv: Sequence[str], daemon: str, conf_dir: Path) -> bool:
    """Whether a command line is `daemon` of the cluster configured in `conf_dir`."""
    args = list(argv)
    if MAIN_CLASSES[daemon] not in args:
        return False
    return any(
        flag == "--configDir" and value == str(conf_dir) for flag, value in itertools.pairwise(args)
    )


def command_line(pid: int) -> list[str]:
    """The arguments of a running process; empty when it is gone or unreadable."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode("utf-8", "replace") for part in raw.split(b"\0") if part]


@contextlib.contextmanager
def exclusive(lock_file: Path) -> Iterator[None]:
    """Hold an exclusive lock on `lock_file` (created if missing) for the block.

    The stack's commands and its supervisor take it around "look at the TaskManager, then start
    or stop one", so neither starts a TaskManager the other has just started or stopped.
    """
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with lock_file.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@dataclasses.dataclass(frozen=True)
class DaemonPids:
    """One daemon kind's pid files in a cluster's pid dir (the scripts name them by user)."""

    pid_dir: Path
    daemon: str
    conf_dir: Path
    argv_of: Callable[[int], Sequence[str]] = command_line

    @property
    def files(self) -> list[Path]:
        return sorted(self.pid_dir.glob(f"flink-*-{self.daemon}.pid"))

    def listed(self) -> list[int]:
        """Every pid the files list, dead or alive."""
        return [pid for path in self.files for pid in parse_pids(path.read_text())]

    def owns(self, pid: int) -> bool:
        """Whether `pid` is alive and is this cluster's `daemon`."""
        return pid_alive(pid) and is_daemon(self.argv_of(pid), self.daemon, self.conf_dir)

    def live(self) -> list[int]:
        """The listed pids that are alive and are this cluster's `daemon`."""
        return [pid for pid in self.listed() if self.owns(pid)]

    def prune(self) -> list[int]:
        """Rewrite the files with only the live pids (removing a file left empty); those pids."""
        kept: list[int] = []
        for path in self.files:
            mine = [pid for pid in parse_pids(path.read_text()) if self.owns(pid)]
            if mine:
                path.write_text("".join(f"{pid}\n" for pid in mine))
            else:
                path.unlink(missing_ok=True)
            kept.extend(mine)
        return kept

    def forget(self) -> None:
        """Remove the pid files."""
        for path in self.files:
            path.unlink(missing_ok=True)


def newest_log(log_dir: Path, daemon: str) -> Path | None:
    """The daemon's most recently written log file, if any."""
    logs = sorted(log_dir.glob(f"flink-*-{daemon}-*.log"), key=lambda p: p.stat().st_mtime)
    return logs[-1] if logs else None
