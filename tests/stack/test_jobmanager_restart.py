"""A JobManager killed with SIGKILL comes back by itself and resumes the running job.

The stack's Flink cluster is highly available (`stack.flink_ha`, on by default): ZooKeeper
elects the leading JobManager and keeps pointers to each job's graph and latest completed
checkpoints, whose data lie in the cluster's `ha/` and `checkpoints/` folders. After the kill
the supervisor starts a new JobManager; it leads once ZooKeeper has ended the dead one's session
and resumes the job under the same id from its latest checkpoint, while the TaskManager lives on
and offers its slots to the new leader. That the committed outputs through such a kill equal a
clean run's is `test_faults.py`'s (the oracle, under load).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import pytest

from gridstream.stack import LocalStack
from gridstream.stack.components import TERMINAL_STATES, Flink
from gridstream.stack.daemons import JOBMANAGER, TASKMANAGER
from jobs.device_control import JOB_NAME
from tests.stack.faults_support import (
    JOB_SETTINGS,
    RECOVERY_TIMEOUT_S,
    checkpoint_dirs,
    checkpoint_from_now,
    kill_jobmanager,
    reading_processed_after,
    rest,
    restored_checkpoint,
    restored_since,
    running_job,
    wait_for,
)
from tests.stack.scenarios_support import job_running, now_ms
from tests.stack.test_taskmanager_kill import supervisor_log

pytestmark = pytest.mark.stack


@pytest.fixture(autouse=True, scope="module")
def no_job_left(local_stack: LocalStack) -> Iterator[None]:
    """Highly available, and no device-control job left running after the module."""
    assert local_stack.settings.stack.flink_ha, "this module needs stack.flink_ha on"
    yield
    for job in local_stack.flink.jobs():
        if job["name"] == JOB_NAME and job["state"] not in TERMINAL_STATES:
            local_stack.flink.cancel(str(job["jid"]))


def in_store(flink: Flink, job_id: str, checkpoint: int) -> bool:
    """The JobManager reports `checkpoint` (or a later one) completed: it reports a checkpoint
    after adding it to the completed-checkpoint store (ZooKeeper), where a successor finds it."""
    try:
        latest = (rest(flink, f"/jobs/{job_id}/checkpoints").get("latest") or {}).get("completed")
    except OSError:
        return False
    return latest is not None and int(latest["id"]) >= checkpoint


def test_a_killed_jobmanager_is_replaced_and_resumes_the_running_job(
    local_stack: LocalStack,
) -> None:
    """After a SIGKILL of the JobManager, with nothing typed: the supervisor starts one new
    JobManager, which resumes the same job (same id) from a checkpoint completed before the
    kill, the TaskManager is the same process, and a reading played afterwards is processed."""
    flink = local_stack.flink
    with job_running(local_stack, **JOB_SETTINGS) as settings:
        job_id = running_job(flink)
        (taskmanager,) = flink.daemons(TASKMANAGER).live()
        logged = len(supervisor_log(local_stack))
        checkpoint = checkpoint_from_now(flink, job_id)
        wait_for(lambda: in_store(flink, job_id, checkpoint), 30, "the checkpoint stored")
        completed_before_kill = max(n for n, ok in checkpoint_dirs(flink, job_id).items() if ok)

        killed_ms = now_ms()
        killed = kill_jobmanager(flink)
        killed_at = time.monotonic()
        wait_for(
            lambda: restored_since(flink, job_id, killed_ms),
            RECOVERY_TIMEOUT_S,
            f"job {job_id} running again from a checkpoint",
        )
        print(
            "recovery after the JobManager kill: job RUNNING again in "
            f"{time.monotonic() - killed_at:.1f}s"
        )
        restored = restored_checkpoint(flink, job_id)
        assert restored is not None
        assert checkpoint <= restored[0] <= completed_before_kill

        reading_processed_after(settings, killed_at)
        assert running_job(flink) == job_id
        (fresh,) = flink.daemons(JOBMANAGER).listed()
        assert fresh != killed
        assert flink.daemons(TASKMANAGER).listed() == [taskmanager]
        restarts = re.findall(
            r"JobManager restarted \(restart \d+\): pid (\d+),",
            supervisor_log(local_stack)[logged:],
        )
        assert restarts == [str(fresh)]
