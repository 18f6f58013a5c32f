"""A TaskManager killed with SIGKILL comes back by itself, and the job's committed outputs are
the same as without the kill: nothing lost, nothing twice, nothing different.

`test_a_killed_taskmanager_is_replaced_and_the_running_job_recovers` kills the TaskManager
under a running job and waits, touching nothing, for the stack's supervisor to start a new one
and the job to run again from its last checkpoint.

`test_a_taskmanager_killed_mid_dr_start_changes_no_committed_output` plays one fixed scenario
twice on a clean slate (fresh topics, consumer group, Redis and job; the same ids both times;
the harness is `tests/stack/faults_support.py`, which `test_faults.py` also uses with a bigger
workload and other faults): thermostats and a feeder breaker of one region, a CURTAIL and a
SWITCH_OPEN event, customer overrides, and a steady stream of readings. The second run SIGKILLs
the TaskManager right after the events and the first overrides went in, before a checkpoint took
them (the kill is timed just after a checkpoint completes, checkpoints being 5 s apart), so the
job restarts from a checkpoint taken before them and reads them again, with the readings that
arrived meanwhile, in whatever interleaving the restarted source gives. The committed
(read_committed) outputs about the scenario's devices and region are then compared per topic as
multisets of their normalized records, without the fields that depend on the wall clock
(timestamps, correlation ids, Kafka coordinates). Both runs raise the lag freeze and the
silent-source watchdog out of reach (`faults_support.JOB_SETTINGS`).
`GRIDSTREAM_LONG_FAULT_TESTS=1` plays 60 devices and a minute of readings instead of 30 devices
and 20 s. No job is left running after this module.
"""

from __future__ import annotations

import re
import time

import pytest

from gridstream.scenario import Scenario, play
from gridstream.stack import LocalStack
from gridstream.stack.daemons import JOBMANAGER, TASKMANAGER
from state import mirror
from tests.stack.faults_support import (
    JOB_SETTINGS,
    LONG,
    RECOVERY_TIMEOUT_S,
    TASKMANAGER_KILLED,
    Workload,
    checkpoint_from_now,
    differences,
    kill_taskmanager,
    no_job_left,  # noqa: F401 (an autouse fixture)
    play_run,
    problems,
    restored_since,
    running_job,
    scenario_problems,
    wait_for,
)
from tests.stack.scenarios_support import job_running, now_ms, quiet, unique

pytestmark = pytest.mark.stack

WORKLOAD = Workload("tmkill", devices_per_region=60 if LONG else 30, rounds=60 if LONG else 20)


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

        device = unique("thermostat-after-kill")
        play(settings, Scenario().telemetry_iot(device_id=device), quiet)
        wait_for(
            lambda: mirror.read(settings.stack.redis_url, device) is not None,
            60,
            "a reading played after the recovery processed",
        )
        since_kill = time.monotonic() - killed_at
        print(f"a reading played after the recovery was processed {since_kill:.1f}s after the kill")
        assert flink.taskmanager_ids().isdisjoint(before)
        assert flink.daemons(JOBMANAGER).listed() == [jobmanager], said
        (fresh,) = flink.daemons(TASKMANAGER).listed()
        assert fresh != killed
        restarts = re.findall(
            r"TaskManager restarted \(restart \d+\): pid (\d+),",
            supervisor_log(local_stack)[logged:],
        )
        assert restarts == [str(fresh)]


# --- part 2: exactly-once through the kill ------------------------------------------------------


def test_a_taskmanager_killed_mid_dr_start_changes_no_committed_output(
    local_stack: LocalStack,
) -> None:
    """The scenario's committed outputs are the same, as multisets, with and without a SIGKILL
    of the TaskManager while the DR start and the opt-outs are in flight: 0 lost, 0 duplicated,
    0 differing, on every output topic."""
    clean = play_run(local_stack, WORKLOAD)
    killed = play_run(local_stack, WORKLOAD, TASKMANAGER_KILLED)

    recovery = killed.recovery
    assert recovery is not None
    print(recovery.line())
    in_flight = recovery.restored is not None and recovery.restored[0] == killed.events_checkpoint
    print(f"restored from the last checkpoint before the events: {in_flight}")
    found = differences(clean, killed, TASKMANAGER_KILLED.name)
    # The scenario did what it is for: the clean run curtailed, opted out and recommended.
    assert scenario_problems(WORKLOAD, clean) == []
    assert recovery.restarts, "the job did not restart after the kill"
    assert recovery.running_s is not None, "the job did not run again after the kill"
    assert not problems(found), problems(found)
