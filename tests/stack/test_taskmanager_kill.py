"""A TaskManager killed with SIGKILL comes back by itself: touching nothing, the stack's
supervisor starts a new one and the job runs again from its last checkpoint. That the committed
outputs through such a kill equal a clean run's is `test_faults.py`'s (the oracle, under load).
No job is left running after this module.
"""

from __future__ import annotations

import re
import time

import pytest

from gridstream.stack import LocalStack
from gridstream.stack.daemons import JOBMANAGER, TASKMANAGER
from tests.stack.faults_support import (
    JOB_SETTINGS,
    RECOVERY_TIMEOUT_S,
    checkpoint_from_now,
    kill_taskmanager,
    no_job_left,  # noqa: F401 (an autouse fixture)
    reading_processed_after,
    restored_since,
    running_job,
    wait_for,
)
from tests.stack.scenarios_support import job_running, now_ms

pytestmark = pytest.mark.stack


def supervisor_log(stack: LocalStack) -> str:
    """What the stack's supervisor has logged so far."""
    log = stack.supervisor.process.log_file
    return log.read_text() if log.exists() else ""


# --- part 1: the supervisor ----------------------------------------------------------------------


def test_a_killed_taskmanager_is_replaced_and_the_running_job_recovers(
    local_stack: LocalStack,
) -> None:
    """After a SIGKILL of the TaskManager, with nothing called by hand: a new TaskManager
    registers, the job runs again from a checkpoint and processes a new reading, the pid files
    name exactly the live JobManager and the new TaskManager, and `up` starts nothing."""
    flink = local_stack.flink
    with job_running(local_stack, **JOB_SETTINGS) as settings:
        job_id = running_job(flink)
        (jobmanager,) = flink.daemons(JOBMANAGER).live()
        before = flink.taskmanager_ids()
        logged = len(supervisor_log(local_stack))
        checkpoint_from_now(flink, job_id)  # something to restart from

        killed_ms = now_ms()
        killed = kill_taskmanager(flink)
        killed_at = time.monotonic()
        said: list[str] = []
        LocalStack(settings, say=said.append).up()  # what a person would type now
        wait_for(
            lambda: restored_since(flink, job_id, killed_ms),
            RECOVERY_TIMEOUT_S,
            f"job {job_id} running again from a checkpoint",
        )
        print(
            "recovery after the TaskManager kill: job RUNNING again in "
            f"{time.monotonic() - killed_at:.1f}s"
        )

        reading_processed_after(settings, killed_at)
        assert flink.taskmanager_ids().isdisjoint(before)
        assert flink.daemons(JOBMANAGER).listed() == [jobmanager], said
        (fresh,) = flink.daemons(TASKMANAGER).listed()
        assert fresh != killed
        restarts = re.findall(
            r"TaskManager restarted \(restart \d+\): pid (\d+),",
            supervisor_log(local_stack)[logged:],
        )
        assert restarts == [str(fresh)]
