"""The stack's Flink supervisor: `python -m gridstream.stack.supervisor`, started by
`gridstream stack up` and stopped by `down`.

A standalone Flink session cluster does not replace a daemon that dies. This process looks at
the JobManager's and the TaskManager's pids (from the cluster's pid files) every second and
starts a new one of whichever is gone, with the distribution's `jobmanager.sh` or
`taskmanager.sh`. After a TaskManager, a running job restarts from its last checkpoint by its
own restart strategy; after a JobManager, with high availability (`stack.flink_ha`), the new
one takes the lead once ZooKeeper ends the dead one's session and resumes each job from its
latest checkpoint (without it, the jobs are gone). A TaskManager is started only beside a
running JobManager. Each restart is a line of `.stack/logs/supervisor.log`. A daemon that keeps
dying soon after its start is restarted with a growing pause (`restart_delay_s`), so a broken
configuration does not spin. The settings come from the environment (`GRIDSTREAM_*`, which
`up` sets to its own).
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
    """How soon a daemon that died is started again."""

    base_s: float = 2.0  # the pause before a second restart in a row
    max_s: float = 60.0
    stable_s: float = 60.0  # a daemon that ran this long is restarted at once


def restart_delay_s(restarts: Sequence[float], now: float, backoff: Backoff = Backoff()) -> float:
    """Seconds to wait before the next restart, given when the earlier ones were (oldest first).

    The first restart, and any after the daemon ran `stable_s`, is immediate; each restart
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


NAMES = {JOBMANAGER: "JobManager", TASKMANAGER: "TaskManager"}


@dataclasses.dataclass
class Watch:
    """What the supervisor keeps of one daemon: when it restarted it, and what it last said
    while waiting (said once, not every round)."""

    daemon: str
    restarts: list[float] = dataclasses.field(default_factory=list)
    waiting_for: str | None = None


def after_restart(daemon: str, high_availability: bool) -> str:
    """What a restart of `daemon` means for the cluster's jobs."""
    if daemon == TASKMANAGER:
        return "running jobs restart from their last checkpoint"
    if high_availability:
        return "it resumes the jobs from their latest checkpoints once it leads"
    return "without high availability its jobs are gone: start them again (`gridstream job start`)"


def tend(flink: Flink, watch: Watch, say: Callable[[str], None], backoff: Backoff) -> None:
    """One round for one daemon: start a new one if it is gone (and may be started now)."""
    name = NAMES[watch.daemon]

    def idle(reason: str | None) -> None:
        if reason is not None and reason != watch.waiting_for:
            say(reason)
        watch.waiting_for = reason

    if flink.daemons(watch.daemon).live():
        idle(None)
        return
    if watch.daemon == TASKMANAGER and not flink.daemons(JOBMANAGER).live():
        idle("no JobManager runs: not starting a TaskManager without one")
        return
    delay = restart_delay_s(watch.restarts, time.monotonic(), backoff)
    if delay > 0:
        idle(f"the {name} is down again soon after a restart: next try in {delay:.0f}s")
        return
    idle(None)
    say(f"the {name} is gone: starting a new one")
    try:
        pid = flink.revive(watch.daemon)
    except ComponentError as err:
        watch.restarts.append(time.monotonic())
        say(f"starting a {name} failed: {err}")
        return
    if pid is None:  # another command started one, or the JobManager went, meanwhile
        return
    watch.restarts.append(time.monotonic())
    log = newest_log(flink.home / "log", watch.daemon)
    after = after_restart(watch.daemon, flink.settings.stack.flink_ha)
    say(f"{name} restarted (restart {len(watch.restarts)}): pid {pid}, log {log}; {after}")


def supervise(
    flink: Flink,
    beat: Callable[[], None],
    stopping: threading.Event,
    say: Callable[[str], None] = _log,
    backoff: Backoff = Backoff(),
    every_s: float = CHECK_EVERY_S,
) -> None:
    """Keep a JobManager and a TaskManager of `flink` running until `stopping` is set."""
    watches = [Watch(JOBMANAGER), Watch(TASKMANAGER)]  # in this order: the TaskManager needs it
    say(f"watching the JobManager and the TaskManager of the Flink cluster in {flink.home}")
    while not stopping.wait(every_s):
        if not flink.home.exists():  # the stack's folder was removed under it
            say(f"{flink.home} is gone: stopping")
            break
        beat()
        for watch in watches:
            tend(flink, watch, say, backoff)
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
