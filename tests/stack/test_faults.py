"""Faults under load with an oracle: the committed outputs of a run through a fault equal those
of a clean run of the same workload (0 lost, 0 duplicated, 0 differing; the job runs exactly
once, its default), and every DESIGN.md rule `tests.output_rules` checks holds in both runs.

The workload (`tests/stack/faults_support.py`): 200 consumer devices, thermostats and EV
chargers, in two regions, one of them registered LIFE_SAFETY, and a feeder breaker per
region; a CURTAIL and a SWITCH_OPEN event over both regions; early and late customer
overrides; a reading of every device a second for 45 s (120 s with
`GRIDSTREAM_LONG_FAULT_TESTS=1`); eight junk records of four kinds that must be dead-lettered
exactly once each, the same in every run. The clean run is played once for the module; each
fault strikes right after the events went in, and each test prints one `RECOVERY` line (the
time from the fault's end to the job running again and to its first new committed output) and
one `COUNTS` line per output topic.

The faults: the TaskManager SIGKILLed; the JobManager SIGKILLed (the stack is highly
available: the supervisor starts a new one, which resumes the job from ZooKeeper); the Kafka
broker stopped (SIGTERM) or killed (SIGKILL) for 20 s and started again on the same port and
data folder, while the player's producer keeps its records; Redis stopped for 30 s (the mirror
alerts are not part of the comparison: they are checked to be raised once each); the schema
registry stopped for 30 s once the job has decoded a record of every topic played meanwhile
(cached schemas keep decoding, nothing good is dead-lettered). Every component is running
again when a test ends.
"""

from __future__ import annotations

import pytest

from gridstream import roundtrip
from gridstream.stack import LocalStack
from tests.stack.faults_support import (
    JOBMANAGER_KILLED,
    LONG,
    TASKMANAGER_KILLED,
    Fault,
    Run,
    Workload,
    assert_same,
    assert_within_idleness,
    commands_committed,
    differences,
    kill_taskmanager,
    make_junk,
    no_job_left,  # noqa: F401 (an autouse fixture)
    play_run,
    scenario_problems,
    stopped_for,
)

pytestmark = pytest.mark.stack

WORKLOAD = Workload(
    "faults",
    regions=2,
    devices_per_region=100,
    rounds=120 if LONG else 45,
    ev_chargers=True,
    life_safety=True,
)
BROKER_DOWN_S = 20.0
REDIS_DOWN_S = REGISTRY_DOWN_S = 30.0

BROKER_STOPPED = stopped_for("kafka SIGTERM 20s", lambda s: s.kafka, BROKER_DOWN_S)
BROKER_KILLED = stopped_for("kafka SIGKILL 20s", lambda s: s.kafka, BROKER_DOWN_S, kill=True)
REDIS_STOPPED = stopped_for("redis down 30s", lambda s: s.redis, REDIS_DOWN_S)
REGISTRY_STOPPED = stopped_for(
    "registry down 30s", lambda s: s.registry, REGISTRY_DOWN_S, when_ready=commands_committed
)
# The restarted job's Python has fetched no schema yet: it waits for the registry
# (`schema_id_wait_ms`, 30 s), fails and retries from its checkpoint until the registry is back.
REGISTRY_DOWN_TASKMANAGER_KILLED = stopped_for(
    "taskmanager SIGKILL in registry down 60s", lambda s: s.registry, 2 * REGISTRY_DOWN_S,
    when_ready=commands_committed, meanwhile=lambda s: kill_taskmanager(s.flink),
)  # fmt: skip
RESTARTING = (TASKMANAGER_KILLED, JOBMANAGER_KILLED, REGISTRY_DOWN_TASKMANAGER_KILLED)


@pytest.fixture(scope="module")
def junk(local_stack: LocalStack) -> tuple[roundtrip.Junk, ...]:
    """The workload's junk records, the same bytes in every run."""
    return make_junk(local_stack.settings)


@pytest.fixture(scope="module")
def clean(local_stack: LocalStack, junk: tuple[roundtrip.Junk, ...]) -> Run:
    """The workload played once without a fault; it did what it is for and broke no rule."""
    assert local_stack.settings.job.delivery_guarantee == "exactly-once"  # what 0 duplicated needs
    run = play_run(local_stack, WORKLOAD, junk=junk)
    assert scenario_problems(WORKLOAD, run, junk) == []
    return run


def faulty_run(
    stack: LocalStack, clean: Run, junk: tuple[roundtrip.Junk, ...], fault: Fault
) -> Run:
    """The workload through `fault`: its recovery and counts printed, every rule kept, its
    outputs equal to the clean run's (`assert_same`)."""
    run = play_run(stack, WORKLOAD, fault, junk)
    assert run.recovery is not None
    print(run.recovery.line())
    if run.recovery.outage is not None:
        assert_within_idleness(run.recovery.outage)
    if fault in RESTARTING:
        assert run.recovery.restarts, f"the job did not restart after the {fault.name}"
    found = differences(clean, run, fault.name)
    assert scenario_problems(WORKLOAD, run, junk) == []
    assert_same(found)
    return run


@pytest.mark.parametrize(
    "fault",
    [
        TASKMANAGER_KILLED,
        JOBMANAGER_KILLED,
        BROKER_STOPPED,
        BROKER_KILLED,
        REGISTRY_STOPPED,
        REGISTRY_DOWN_TASKMANAGER_KILLED,
    ],
    ids=lambda fault: fault.name.replace(" ", "-"),
)
def test_a_fault_under_load_changes_no_committed_output(
    local_stack: LocalStack, clean: Run, junk: tuple[roundtrip.Junk, ...], fault: Fault
) -> None:
    """Through the fault the job recovers by itself, and its committed outputs equal the clean
    run's: 0 lost, 0 duplicated, 0 differing on every output topic, the dead letters included."""
    faulty_run(local_stack, clean, junk, fault)


def test_redis_down_under_load_raises_mirror_alerts_once_and_changes_no_other_output(
    local_stack: LocalStack, clean: Run, junk: tuple[roundtrip.Junk, ...]
) -> None:
    """With Redis down 30 s, every other output equals the clean run's; MIRROR_DOWN and
    MIRROR_RESTORED are each raised once, and the mirror holds every device's newest reading."""
    run = faulty_run(local_stack, clean, junk, REDIS_STOPPED)
    kinds = sorted(a["kind"] for a in run.pipeline_alerts if a["kind"].startswith("MIRROR_"))
    assert kinds == ["MIRROR_DOWN", "MIRROR_RESTORED"]
    assert not [a for a in clean.pipeline_alerts if a["kind"].startswith("MIRROR_")]
    assert run.mirror_caught_up
