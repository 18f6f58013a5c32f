"""A TaskManager killed with SIGKILL comes back by itself, and the job's committed outputs are
the same as without the kill: nothing lost, nothing twice, nothing different.

`test_a_killed_taskmanager_is_replaced_and_the_running_job_recovers` kills the TaskManager
under a running job and waits, touching nothing, for the stack's supervisor to start a new one
and the job to run again from its last checkpoint.

`test_a_taskmanager_killed_mid_dr_start_changes_no_committed_output` plays one fixed scenario
twice on a clean slate (fresh topics, consumer group, Redis and job; the same ids both times):
thermostats and a feeder breaker of one region, a CURTAIL and a SWITCH_OPEN event, customer
overrides, and a steady stream of readings. The second run SIGKILLs the TaskManager right after
the events and the first overrides went in, before a checkpoint took them (the kill is timed
just after a checkpoint completes, checkpoints being 5 s apart), so the job restarts from a
checkpoint taken before them and reads them again, with the readings that arrived meanwhile,
in whatever interleaving the restarted source gives. The committed (read_committed) outputs
about the scenario's devices and region are then compared per topic as multisets of their
normalized records, without the fields that depend on the wall clock (timestamps, correlation
ids, Kafka coordinates). Both runs raise the lag freeze and the silent-source watchdog out of
reach, being processing-time rules: a long restart would otherwise freeze the second run,
rightly, and that is not what this test compares. `GRIDSTREAM_LONG_FAULT_TESTS=1` plays 60
devices and a minute of readings instead of 30 devices and 20 s.

The clean slate empties the session stack's topics and Redis (the other modules use fresh ids,
so they need nothing of what was there), and no job is left running after this module.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping
from typing import Any

import pytest
import redis
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from gridstream import topics
from gridstream.config import Settings
from gridstream.deploy import ensure_job
from gridstream.scenario import Scenario, dump, play
from gridstream.stack import LocalStack
from gridstream.stack.components import TERMINAL_STATES, Flink
from gridstream.stack.daemons import JOBMANAGER, TASKMANAGER
from jobs.device_control import JOB_NAME
from state import mirror
from tests.stack.scenarios_support import (
    job_running,
    mine,
    now_ms,
    quiet,
    unique,
)

pytestmark = pytest.mark.stack

LONG = os.environ.get("GRIDSTREAM_LONG_FAULT_TESTS") == "1"
RECOVERY_TIMEOUT_S = 180.0
SETTLE_TIMEOUT_S = 180.0

# The scenario's ids: fixed, so that both runs speak of the same devices and events.
REGION = "tmkill-region"
PROGRAM, SCADA_PROGRAM = "tmkill-summer", "tmkill-feeders"
CURTAIL_EVENT, SWITCH_EVENT = "tmkill-dr-curtail", "tmkill-dr-switch"
THERMOSTATS = tuple(f"tmkill-thermostat-{i:02d}" for i in range(60 if LONG else 30))
BREAKER = "tmkill-feeder-breaker"
EARLY_OPT_OUTS = THERMOSTATS[:4]  # override right after the events: in flight at the kill
LATE_OPT_OUTS = THERMOSTATS[4:7]  # override mid-stream, while the job is down or catching up
ROUNDS = 60 if LONG else 20  # one reading of every device a second, after the events
WARM_UP = "tmkill-warm-up"
SCENARIO_IDS = {REGION, BREAKER, *THERMOSTATS}
# Processing-time rules out of reach (see the module docstring); the same in both runs.
JOB_SETTINGS = {"freeze_lag_ms": 600_000, "source_silence_ms": 600_000}


@pytest.fixture(autouse=True, scope="module")
def no_job_left(local_stack: LocalStack) -> Iterator[None]:
    """Cancel any device-control job a failed test left running."""
    yield
    for job in local_stack.flink.jobs():
        if job["name"] == JOB_NAME and job["state"] not in TERMINAL_STATES:
            local_stack.flink.cancel(str(job["jid"]))


# --- the Flink cluster, through its REST API -----------------------------------------------------


def rest(flink: Flink, path: str) -> Any:
    """GET one path of the cluster's REST API, decoded."""
    with urllib.request.urlopen(f"{flink.address}{path}", timeout=5) as response:
        return json.load(response)


def running_job(flink: Flink) -> str:
    """The id of the one device-control job that is not finished."""
    (job_id,) = [
        str(j["jid"])
        for j in flink.jobs()
        if j["name"] == JOB_NAME and j["state"] not in TERMINAL_STATES
    ]
    return job_id


def all_tasks_running(flink: Flink, job_id: str) -> bool:
    """The job is RUNNING and so is every one of its vertices."""
    try:
        job = rest(flink, f"/jobs/{job_id}")
    except OSError:
        return False
    return job["state"] == "RUNNING" and all(v["status"] == "RUNNING" for v in job["vertices"])


def checkpoints(flink: Flink, job_id: str) -> dict[str, Any]:
    """The job's checkpoint statistics (`latest.completed`, `latest.restored`, ...)."""
    found: dict[str, Any] = rest(flink, f"/jobs/{job_id}/checkpoints")
    return found


def restored_checkpoint(flink: Flink, job_id: str) -> tuple[int, int] | None:
    """(id, restore time in epoch ms) of the checkpoint the job last restarted from."""
    restored = (checkpoints(flink, job_id).get("latest") or {}).get("restored")
    return (int(restored["id"]), int(restored["restore_timestamp"])) if restored else None


def wait_for(probe: Callable[[], bool], timeout_s: float, what: str, every_s: float = 0.25) -> None:
    """Poll `probe` until it holds; fail naming `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not probe():
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout_s:.0f}s")
        time.sleep(every_s)


def checkpoint_dirs(flink: Flink, job_id: str) -> dict[int, bool]:
    """The job's checkpoint folders on disk: id -> completed (its `_metadata` written).

    The JobManager creates `chk-<id>` when it triggers the checkpoint and writes `_metadata`
    in it when the checkpoint completes; the REST API shows both only after its cache expires
    (up to 3 s later), too late to time the kill by.
    """
    found = {}
    for folder in (flink.home / "checkpoints" / job_id).glob("chk-*"):
        found[int(folder.name.removeprefix("chk-"))] = (folder / "_metadata").exists()
    return found


def checkpoint_from_now(flink: Flink, job_id: str, timeout_s: float = 60.0) -> int:
    """Wait for a checkpoint triggered from now on to complete (polled every 20 ms); its id.
    Whatever was processed before the call is in it."""
    earlier = set(checkpoint_dirs(flink, job_id))
    found: list[int] = []

    def done() -> bool:
        found.extend(
            n for n, ok in checkpoint_dirs(flink, job_id).items() if ok and n not in earlier
        )
        return bool(found)

    wait_for(done, timeout_s, f"a checkpoint of job {job_id} triggered from now on", 0.02)
    return min(found)


def kill_taskmanager(flink: Flink) -> int:
    """SIGKILL the cluster's TaskManager; its pid."""
    (pid,) = flink.daemons(TASKMANAGER).live()
    os.kill(pid, signal.SIGKILL)
    return pid


@dataclasses.dataclass
class Recovery:
    """How long after the kill the job ran again, and its first new output appeared."""

    killed_at: float  # time.monotonic()
    running_s: float | None = None
    output_s: float | None = None
    restored: tuple[int, int] | None = None

    def line(self) -> str:
        """What the test prints."""
        parts = [
            "recovery after the TaskManager kill: job RUNNING again (restored from checkpoint "
            f"{self.restored[0] if self.restored else '?'}) in {_seconds(self.running_s)}"
        ]
        if self.output_s is not None or self.running_s is None:
            parts.append(f"first new committed output in {_seconds(self.output_s)}")
        return ", ".join(parts)


def _seconds(value: float | None) -> str:
    return "never" if value is None else f"{value:.1f}s"


def watch_recovery(
    flink: Flink,
    job_id: str,
    recovery: Recovery,
    new_output: Callable[[], bool] | None,
    stop: threading.Event,
) -> None:
    """Fill in `recovery` until the job runs again from a checkpoint restored after the kill
    and (if `new_output` is given) it holds; runs beside the scenario, in a thread."""
    killed_ms = now_ms() - int((time.monotonic() - recovery.killed_at) * 1000)
    while not stop.is_set() and time.monotonic() - recovery.killed_at < RECOVERY_TIMEOUT_S:
        try:
            if recovery.running_s is None and all_tasks_running(flink, job_id):
                restored = restored_checkpoint(flink, job_id)
                if restored is not None and restored[1] >= killed_ms:
                    recovery.running_s = time.monotonic() - recovery.killed_at
                    recovery.restored = restored
            if recovery.output_s is None and new_output is not None and new_output():
                recovery.output_s = time.monotonic() - recovery.killed_at
        except OSError:
            pass  # the REST API busy during the failover: ask again
        if recovery.running_s is not None and (new_output is None or recovery.output_s):
            return
        time.sleep(0.25)


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

        killed = kill_taskmanager(flink)
        recovery = Recovery(time.monotonic())
        said: list[str] = []
        LocalStack(settings, say=said.append).up()  # what a person would type now
        watch_recovery(flink, job_id, recovery, None, threading.Event())
        print(recovery.line())
        assert recovery.running_s is not None, f"job {job_id} did not run again: {recovery}"

        device = unique("thermostat-after-kill")
        play(settings, Scenario().telemetry_iot(device_id=device), quiet)
        wait_for(
            lambda: mirror.read(settings.stack.redis_url, device) is not None,
            60,
            "a reading played after the recovery processed",
        )
        since_kill = _seconds(time.monotonic() - recovery.killed_at)
        print(f"a reading played after the recovery was processed {since_kill} after the kill")
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


def reading(scenario: Scenario, device_id: str, override: bool = False) -> Scenario:
    """A reading of one of the scenario's devices, now."""
    if device_id == BREAKER:
        return scenario.telemetry_scada(device_id=BREAKER, device_class="FEEDER_BREAKER")
    return scenario.telemetry_iot(device_id=device_id, customer_override=override)


def round_of_readings(scenario: Scenario, overrides: Iterable[str] = ()) -> Scenario:
    """One reading of every device; those in `overrides` report a customer override."""
    opted = set(overrides)
    for device_id in (*THERMOSTATS, BREAKER):
        scenario = reading(scenario, device_id, override=device_id in opted)
    return scenario


def setup_steps() -> Scenario:
    """The region's weather, every device's registry record, and a first reading of each."""
    scenario = Scenario().weather(region_id=REGION)
    scenario = scenario.registry(
        device_id=BREAKER, device_class="FEEDER_BREAKER", region_id=REGION,
        programs=[SCADA_PROGRAM], rated_power_kw=8_000.0,
    )  # fmt: skip
    for device_id in THERMOSTATS:
        scenario = scenario.registry(device_id=device_id, region_id=REGION, programs=[PROGRAM])
    return round_of_readings(scenario)


def event_steps() -> Scenario:
    """A round of readings, both DR events (already started when issued, so each acts as its
    activation arrives), a round a second later, and a second after that the early customer
    overrides. (Rounds are a second apart: two readings of a device in the same millisecond
    are one reading played twice, a DUPLICATE, or not, by the clock's chance.)"""
    scenario = round_of_readings(Scenario())
    for event_id, program, action, sizes in (
        (CURTAIL_EVENT, PROGRAM, "CURTAIL", {"curtailment_pct": 20.0}),
        (SWITCH_EVENT, SCADA_PROGRAM, "SWITCH_OPEN", {}),
    ):
        scenario = scenario.dr_event(
            event_id=event_id, program_id=program, target_region_ids=[REGION], action=action,
            start_ts_ms="now-10s", end_ts_ms="now+1h", issued_ts_ms="now", status="ACTIVE",
            **sizes,
        )  # fmt: skip
    scenario = round_of_readings(scenario.sleep(1_000)).sleep(1_000)
    return round_of_readings(scenario, overrides=EARLY_OPT_OUTS)


def stream_steps() -> Scenario:
    """A reading of every device a second for `ROUNDS` s; the late overrides halfway."""
    scenario = Scenario()
    for i in range(ROUNDS):
        scenario = round_of_readings(
            scenario.sleep(1_000), LATE_OPT_OUTS if i == ROUNDS // 2 else ()
        )
    return scenario


def reset(stack: LocalStack) -> None:
    """A clean slate with the same ids: no job, every topic deleted and created again (so no
    record and no committed offset of a run before), the job's consumer group gone, Redis
    empty."""
    flink = stack.flink
    for job in flink.jobs():
        if job["state"] not in TERMINAL_STATES:
            flink.cancel(str(job["jid"]))
    admin = AdminClient({"bootstrap.servers": stack.settings.stack.bootstrap_servers})
    names = list(topics.INPUTS + topics.OUTPUTS)
    for future in admin.delete_topics(names, operation_timeout=30).values():
        try:
            future.result()
        except KafkaException as err:  # a topic already gone is what we want
            if "UNKNOWN_TOPIC" not in str(err):
                raise
    wait_for(
        lambda: not set(names) & set(admin.list_topics(timeout=10).topics),
        60,
        "the topics deleted",
        every_s=0.5,
    )
    for future in admin.delete_consumer_groups([JOB_NAME]).values():
        try:
            future.result()
        except KafkaException as err:  # no such group is fine
            if "GROUP_ID_NOT_FOUND" not in str(err):
                raise

    def created() -> bool:
        stack.create_topics()
        found = admin.list_topics(timeout=10).topics
        return all(n in found and found[n].partitions for n in names)

    wait_for(created, 60, "the topics created again", every_s=1.0)
    redis.Redis.from_url(stack.settings.stack.redis_url).flushdb()


def processed(settings: Settings, since_ms: int) -> bool:
    """Every device's newest reading at or after `since_ms` has reached the Redis mirror."""
    url = settings.stack.redis_url
    return all(
        (good := mirror.read(url, device_id)) is not None and good.ts_ms >= since_ms
        for device_id in (*THERMOSTATS, BREAKER)
    )


def committed(settings: Settings, flink: Flink, job_id: str, since_ms: int) -> None:
    """Wait until every reading played from `since_ms` on is processed and its outputs are
    committed: two checkpoints triggered after that completed (the sink commits a checkpoint's
    transaction before it takes part in the next one)."""
    wait_for(lambda: processed(settings, since_ms), SETTLE_TIMEOUT_S, "every reading processed")
    checkpoint_from_now(flink, job_id)
    checkpoint_from_now(flink, job_id)


def scenario_outputs(settings: Settings) -> dict[str, list[dict[str, Any]]]:
    """The committed outputs about the scenario's devices and region, by topic."""
    return {
        topic: [r for r in dump(settings, topic) if mine(r, SCENARIO_IDS)]
        for topic in (topics.COMMANDS, topics.RECOMMENDATIONS, topics.AUDIT, topics.ALERTS)
    }


@dataclasses.dataclass(frozen=True)
class Run:
    """One run's outputs, and how it recovered if the TaskManager was killed."""

    outputs: dict[str, list[dict[str, Any]]]
    recovery: Recovery | None
    events_checkpoint: int  # the last checkpoint completed before the events went in


def play_run(stack: LocalStack, kill: bool) -> Run:
    """Reset, start a fresh job, play the scenario (killing the TaskManager after the events
    if `kill`), and collect the committed outputs once everything is processed."""
    reset(stack)
    settings = dataclasses.replace(
        stack.settings, job=dataclasses.replace(stack.settings.job, **JOB_SETTINGS)
    )
    flink = stack.flink
    job_id = ensure_job(LocalStack(settings, say=quiet))
    play(settings, Scenario().telemetry_iot(device_id=WARM_UP), quiet)
    wait_for(
        lambda: mirror.read(settings.stack.redis_url, WARM_UP) is not None,
        120,
        f"job {job_id} processing a first reading",
    )
    started = now_ms()
    play(settings, setup_steps(), quiet)
    wait_for(lambda: processed(settings, started), 60, "the setup processed", every_s=0.1)
    # The setup in a checkpoint (not replayed after the kill), and the events right after it
    # completed, so the next one (5 s after its trigger) comes after the kill: the events and
    # the early overrides are in flight then. Soon after the setup too: the breaker's first
    # reading must not go 15 s (its SCADA timeout) without a successor.
    events_checkpoint = checkpoint_from_now(flink, job_id)
    play(settings, event_steps(), quiet)
    recovery, stop, watcher = None, threading.Event(), None
    if kill:
        baseline = sum(map(len, scenario_outputs(settings).values()))
        kill_taskmanager(flink)
        recovery = Recovery(time.monotonic())
        watcher = threading.Thread(
            target=watch_recovery,
            args=(
                flink,
                job_id,
                recovery,
                lambda: sum(map(len, scenario_outputs(settings).values())) > baseline,
                stop,
            ),
            daemon=True,
        )
        watcher.start()
    play(settings, stream_steps(), quiet)
    last_round = now_ms()
    play(settings, round_of_readings(Scenario().sleep(1_000)), quiet)
    try:
        committed(settings, flink, job_id, last_round)
    finally:
        stop.set()
        if watcher is not None:
            watcher.join(10)
    outputs = scenario_outputs(settings)
    flink.cancel(job_id)
    return Run(outputs, recovery, events_checkpoint)


def normalized(topic: str, record: Mapping[str, Any]) -> tuple[Hashable, Hashable]:
    """(what identifies the output, its normalized content): no wall-clock fields."""
    if topic == topics.COMMANDS:
        key = (record["device_id"], record["action"])
        return key, (record["command_id"], *key)
    if topic == topics.RECOMMENDATIONS:
        key = (record["device_id"], record["action"])
        return key, (record["recommendation_id"], *key)
    if topic == topics.AUDIT:
        key = (record["device_id"], record["action"], record["outcome"])
        return key, (*key, tuple(sorted(record["reason_codes"])), record["command_id"])
    key = (record["kind"], record.get("device_id"), record.get("region_id"))
    return key, key


@dataclasses.dataclass(frozen=True)
class Difference:
    """How one topic's outputs of the second run differ from the first's."""

    topic: str
    clean: int
    killed: int
    lost: Counter[Hashable]  # in the clean run, missing after the kill
    duplicated: Counter[Hashable]  # after the kill, more often than in the clean run
    differing: list[tuple[Hashable, list[Hashable], list[Hashable]]]  # same output, other content

    def counts(self) -> str:
        return (
            f"{self.topic:<22} clean {self.clean:>4}  killed {self.killed:>4}  "
            f"lost {sum(self.lost.values())}  duplicated {sum(self.duplicated.values())}  "
            f"differing {len(self.differing)}"
        )


def compare(topic: str, clean: list[dict[str, Any]], killed: list[dict[str, Any]]) -> Difference:
    """Compare two runs' records of a topic as multisets of normalized records."""

    def by_key(records: list[dict[str, Any]]) -> dict[Hashable, Counter[Hashable]]:
        grouped: dict[Hashable, Counter[Hashable]] = {}
        for record in records:
            key, content = normalized(topic, record)
            grouped.setdefault(key, Counter())[content] += 1
        return grouped

    first, second = by_key(clean), by_key(killed)
    lost: Counter[Hashable] = Counter()
    duplicated: Counter[Hashable] = Counter()
    differing = []
    for key in first.keys() | second.keys():
        a, b = first.get(key, Counter()), second.get(key, Counter())
        n_a, n_b = sum(a.values()), sum(b.values())
        if n_a > n_b:
            lost[key] = n_a - n_b
        elif n_b > n_a:
            duplicated[key] = n_b - n_a
        same = sum((a & b).values())
        if same < min(n_a, n_b):
            differing.append((key, sorted(a.elements(), key=str), sorted(b.elements(), key=str)))
    return Difference(topic, len(clean), len(killed), lost, duplicated, differing)


def test_a_taskmanager_killed_mid_dr_start_changes_no_committed_output(
    local_stack: LocalStack,
) -> None:
    """The scenario's committed outputs are the same, as multisets, with and without a SIGKILL
    of the TaskManager while the DR start and the opt-outs are in flight: 0 lost, 0 duplicated,
    0 differing, on every output topic."""
    clean = play_run(local_stack, kill=False)
    killed = play_run(local_stack, kill=True)

    assert killed.recovery is not None
    print(killed.recovery.line())
    in_flight = killed.recovery.restored is not None and (
        killed.recovery.restored[0] == killed.events_checkpoint
    )
    print(f"restored from the last checkpoint before the events: {in_flight}")
    differences = [
        compare(topic, clean.outputs[topic], killed.outputs[topic]) for topic in clean.outputs
    ]
    for difference in differences:
        print(difference.counts())
    # The scenario did what it is for: the clean run curtailed, opted out and recommended.
    commands = Counter(c["action"] for c in clean.outputs[topics.COMMANDS])
    assert commands["CURTAIL"] >= len(THERMOSTATS) - len(EARLY_OPT_OUTS), commands
    opted = {
        a["device_id"]
        for a in clean.outputs[topics.AUDIT]
        if a["outcome"] == "BLOCKED" and "OPT_OUT" in a["reason_codes"]
    }
    assert opted == {*EARLY_OPT_OUTS, *LATE_OPT_OUTS}
    assert [r["device_id"] for r in clean.outputs[topics.RECOMMENDATIONS]] == [BREAKER]
    assert killed.recovery.running_s is not None, "the job did not run again after the kill"
    problems = [d for d in differences if d.lost or d.duplicated or d.differing]
    assert not problems, "\n".join(
        f"{d.counts()}\n  lost: {dict(d.lost)}\n  duplicated: {dict(d.duplicated)}\n"
        + "".join(f"  differing {k}:\n    clean  {a}\n    killed {b}\n" for k, a, b in d.differing)
        for d in problems
    )
