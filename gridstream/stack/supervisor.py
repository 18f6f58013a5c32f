"""The stack's TaskManager supervisor: `python -m gridstream.stack.supervisor`, started by
`gridstream stack up` and stopped by `down`.

A standalone Flink session cluster does not replace a TaskManager that dies: the JobManager
waits for slots that never come, and a running job stays down until someone starts a
TaskManager by hand. This process looks at the TaskManager's pid (from the cluster's pid files)
every second and, when it is gone while the JobManager runs, starts a new one with the
distribution's `taskmanager.sh`; the job then restarts from its last checkpoint by its own
restart strategy. Each restart is a line of `.stack/logs/supervisor.log`. A TaskManager that
keeps dying soon after its start is restarted with a growing pause (`restart_delay_s`), so a
broken configuration does not spin. The settings come from the environment (`GRIDSTREAM_*`,
which `up` sets to its own).
"""

from __future__ import annotations

import dataclasses
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from types import FrameType

from gridstream import config
from gridstream.stack.components import Flink, Supervisor
from gridstream.stack.daemons import JOBMANAGER, TASKMANAGER, newest_log
from gridstream.stack.process import ComponentError

CHECK_EVERY_S = 1.0


@dataclasses.dataclass(frozen=True)
class Backoff:
    """How soon a TaskManager that died is started again."""

    base_s: float = 2.0  # the pause before a second restart in a row
    max_s: float = 60.0
    stable_s: float = 60.0  # a TaskManager that ran this long is restarted at once


def restart_delay_s(restarts: Sequence[float], now: float, backoff: Backoff = Backoff()) -> float:
    """Seconds to wait before the next restart, given when the earlier ones were (oldest first).

    The first restart, and any after a TaskManager ran `stable_s`, is immediate; each restart
    in a streak closer together than that doubles the pause, from `base_s` up to `max_s`.
    """
    streak, later = 0, now
    for at in reversed(restarts):
        if later - at >= backoff.stable_s:
            break
        streak, later = streak + 1, at
    if streak == 0:
        return 0.0
    pause = min(backoff.base_s * 2 ** (streak - 1), backoff.max_s)
    # Clamped again: `restarts[-1] + pause - now` can round a hair past `pause`.
    return min(max(0.0, restarts[-1] + pause - now), pause)


def _log(line: str) -> None:
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}", flush=True)


def supervise(
    flink: Flink,
    beat: Callable[[], None],
    stopping: threading.Event,
    say: Callable[[str], None] = _log,
    backoff: Backoff = Backoff(),
    every_s: float = CHECK_EVERY_S,
) -> None:
    """Keep a TaskManager running beside `flink`'s JobManager until `stopping` is set."""
    restarts: list[float] = []
    waiting_for: str | None = None  # what the last idle round said, so it is said once

    def idle(reason: str | None) -> None:
        nonlocal waiting_for
        if reason is not None and reason != waiting_for:
            say(reason)
        waiting_for = reason

    say(f"watching the TaskManager of the Flink cluster in {flink.home}")
    while not stopping.wait(every_s):
        if not flink.home.exists():  # the stack's folder was removed under it
            say(f"{flink.home} is gone: stopping")
            break
        beat()
        tm_pids = flink.daemons(TASKMANAGER).live()
        if tm_pids:
            idle(None)
            continue
        if not flink.daemons(JOBMANAGER).live():
            idle("no JobManager runs: not starting a TaskManager without one")
            continue
        delay = restart_delay_s(restarts, time.monotonic(), backoff)
        if delay > 0:
            idle(f"the TaskManager is down again soon after a restart: next try in {delay:.0f}s")
            continue
        idle(None)
        say("the TaskManager is gone: starting a new one")
        try:
            pid = flink.revive_taskmanager()
        except ComponentError as err:
            restarts.append(time.monotonic())
            say(f"starting a TaskManager failed: {err}")
            continue
        if pid is None:  # another command started one, or the JobManager went, meanwhile
            continue
        restarts.append(time.monotonic())
        log = newest_log(flink.home / "log", TASKMANAGER)
        say(f"TaskManager restarted (restart {len(restarts)}): pid {pid}, log {log}")
    say("stopped")


def main() -> int:
    """Run until SIGTERM or SIGINT."""
    settings = config.load()
    stopping = threading.Event()

    def stop(signum: int, frame: FrameType | None) -> None:
        del signum, frame
        stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    heartbeat = Supervisor(settings).heartbeat
    heartbeat.parent.mkdir(parents=True, exist_ok=True)
    heartbeat.touch()
    supervise(Flink(settings), heartbeat.touch, stopping)
    return 0


if __name__ == "__main__":
    sys.exit(main())
