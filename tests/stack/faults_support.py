"""Faults with an oracle: one fixed workload played twice on a clean slate, clean and with a
fault striking after the DR events went in, and the committed outputs compared.

The pieces, for a fault test module:
- `Workload`: the scenario's ids and sizes, and its steps (set-up, events, a stream of readings
  with customer overrides and junk); both runs of a comparison play the same one.
- `Fault`: a name and a `strike` that makes it happen and returns its `Outage` once healed
  (`taskmanager_killed`, `broker_stopped`, `stopped_for`).
- `play_run(stack, workload, fault=None, junk=())`: reset the stack's topics and Redis, start
  a fresh job, play the workload (the fault striking if given), wait until everything is
  processed and committed; its `Run`: the outputs about the workload's ids, the pipeline-wide
  alerts, the inputs the rules need, and the `Recovery` (printed as one line by `line()`).
- `differences(clean, faulty)`: per output topic, the `Difference` of the two runs as
  multisets of normalized records (no wall-clock fields); `problems(...)` says what is wrong.
- `scenario_problems(workload, run)`: what the workload is for did happen, the junk was
  dead-lettered exactly once, and every DESIGN.md rule `tests.output_rules` checks holds.

Both runs raise the lag freeze and the silent-source watchdog out of reach (`JOB_SETTINGS`):
they are processing-time rules, and a long outage would rightly freeze the faulty run, which is
not what the comparison is about. A telemetry partition idles only after `IDLENESS_MS`: a
broker outage longer than a partition's idleness lets the partition read first afterwards lead
the device stage's clock (jobs/DISCUSSION.md), and a broker killed for 20 s is away 25-75 s
with its restart; a fault that outlasts it fails as such (`assert_within_idleness`).
The clean slate empties the session stack's topics and Redis; the other modules use fresh ids,
so they need nothing of what was there.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import pytest
import redis
from confluent_kafka import Consumer, KafkaError, KafkaException
from confluent_kafka.admin import AdminClient

from gridstream import roundtrip, topics
from gridstream.config import Settings, StackSettings, kafka_client_config
from gridstream.deploy import ensure_job
from gridstream.scenario import (
    GROUP_COORDINATOR_NOT_READY,
    Player,
    Scenario,
    dump,
    end_offsets,
    play,
)
from gridstream.stack import LocalStack
from gridstream.stack.components import TERMINAL_STATES, Flink
from gridstream.stack.daemons import JOBMANAGER, TASKMANAGER
from gridstream.stack.process import pid_alive, wait_until
from jobs.device_control import JOB_NAME
from schemas import examples, models, serde
from schemas.registry import Registry, RegistryConfig
from state import mirror
from tests import output_rules
from tests.stack.scenarios_support import PIPELINE, keyed_onto, mine, now_ms, quiet, unique

LONG = os.environ.get("GRIDSTREAM_LONG_FAULT_TESTS") == "1"
RECOVERY_TIMEOUT_S = 180.0
SETTLE_TIMEOUT_S = 180.0
# The player keeps a record this long while the broker is away (librdkafka retries it).
PLAYER_MESSAGE_TIMEOUT_MS = 180_000
# Processing-time rules out of reach (see the module docstring); the same in both runs.
IDLENESS_MS = 150_000
JOB_SETTINGS = {"freeze_lag_ms": 600_000, "source_silence_ms": 600_000, "idleness_ms": IDLENESS_MS}
COMPARED = (topics.COMMANDS, topics.RECOMMENDATIONS, topics.AUDIT, topics.ALERTS, topics.DLQ)
EVIDENCE_RECORDS = 12  # whole records a difference shows
RULE_INPUTS = (
    topics.DEVICE_REGISTRY,
    topics.DR_EVENTS,
    topics.IOT_TELEMETRY,
    topics.OPERATOR_APPROVALS,
)

Records = dict[str, list[dict[str, Any]]]


@pytest.fixture(autouse=True, scope="module")
def no_job_left(local_stack: LocalStack) -> Iterator[None]:
    """Cancel any device-control job a failed test left running (import it into a module)."""
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


def restored_checkpoint(flink: Flink, job_id: str) -> tuple[int, int] | None:
    """(id, restore time in epoch ms) of the checkpoint the job last restarted from."""
    found = rest(flink, f"/jobs/{job_id}/checkpoints")
    restored = (found.get("latest") or {}).get("restored")
    return (int(restored["id"]), int(restored["restore_timestamp"])) if restored else None


def restarts(flink: Flink, job_id: str) -> int:
    """How often the job has restarted (its `numRestarts` metric); 0 while the REST API's
    metric store has not fetched it yet (a job just submitted: it answers an empty list)."""
    found = rest(flink, f"/jobs/{job_id}/metrics?get=numRestarts")
    return int(found[0]["value"]) if found else 0


def restored_since(flink: Flink, job_id: str, since_ms: int) -> bool:
    """The job runs every task again, restored from a checkpoint at or after `since_ms`."""
    try:
        restored = restored_checkpoint(flink, job_id)
    except OSError:  # the REST API busy during the failover
        return False
    return restored is not None and restored[1] >= since_ms and all_tasks_running(flink, job_id)


def wait_for(probe: Callable[[], bool], timeout_s: float, what: str, every_s: float = 0.25) -> None:
    """Poll `probe` until it holds; fail naming `what` after `timeout_s`."""
    if not wait_until(probe, timeout_s, every_s):
        pytest.fail(f"{what}: not within {timeout_s:.0f}s")


def reading_processed_after(settings: Settings, fault_at: float) -> None:
    """Play a reading of a new device and wait until the job has processed it (the Redis
    mirror shows it); print how long after `fault_at` (time.monotonic()) that was."""
    device = unique("thermostat-after-the-fault")
    play(settings, Scenario().telemetry_iot(device_id=device), quiet)
    wait_for(
        lambda: mirror.read(settings.stack.redis_url, device) is not None,
        60,
        "a reading played after the recovery processed",
    )
    since = time.monotonic() - fault_at
    print(f"a reading played after the recovery was processed {since:.1f}s after the fault")


def checkpoint_dirs(flink: Flink, job_id: str) -> dict[int, bool]:
    """The job's checkpoint folders on disk: id -> completed (its `_metadata` written).

    The JobManager creates `chk-<id>` when it triggers the checkpoint and writes `_metadata`
    in it when the checkpoint completes; the REST API shows both only after its cache expires
    (up to 3 s later), too late to time a fault by.
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


# --- the workload --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Workload:
    """A fixed scenario: `regions` regions of `devices_per_region` consumer devices and one
    feeder breaker each, a CURTAIL event over the devices' program and a SWITCH_OPEN event
    over the breakers', customer overrides just after the events (early) and halfway through
    the stream (late), and a reading of every device a second for `rounds` s.

    With `ev_chargers` every other device is an EV charger; with `life_safety` the first
    device is a LIFE_SAFETY one (registered medical equipment), enrolled like the others. The
    breakers are keyed onto the `partitions` of `scada.telemetry` in turn: a partition with no
    reading would hold the device stage's clock back until it idles (`job.idleness_ms`).
    """

    prefix: str
    regions: int = 1
    devices_per_region: int = 30
    rounds: int = 20
    ev_chargers: bool = False
    life_safety: bool = False
    early_per_region: int = 4
    late_per_region: int = 3
    partitions: int = StackSettings.partitions

    @property
    def region_ids(self) -> tuple[str, ...]:
        return tuple(f"{self.prefix}-region-{r}" for r in range(self.regions))

    @property
    def program(self) -> str:
        return f"{self.prefix}-summer"

    @property
    def scada_program(self) -> str:
        return f"{self.prefix}-feeders"

    @property
    def curtail_event(self) -> str:
        return f"{self.prefix}-dr-curtail"

    @property
    def switch_event(self) -> str:
        return f"{self.prefix}-dr-switch"

    def devices_of(self, region: int) -> tuple[str, ...]:
        """The consumer devices of one region."""
        return tuple(
            f"{self.prefix}-{self.device_class(i).lower().replace('_', '-')}-{region}-{i:03d}"
            for i in range(self.devices_per_region)
        )

    def device_class(self, index: int) -> str:
        return "EV_CHARGER" if self.ev_chargers and index % 2 else "THERMOSTAT"

    @property
    def devices(self) -> tuple[str, ...]:
        return tuple(d for r in range(self.regions) for d in self.devices_of(r))

    @property
    def breakers(self) -> tuple[str, ...]:
        return tuple(
            keyed_onto(f"{self.prefix}-feeder-breaker-{r}", r % self.partitions, self.partitions)
            for r in range(self.regions)
        )

    @property
    def life_safety_device(self) -> str | None:
        return self.devices[0] if self.life_safety else None

    def _opt_outs(self, first: int, count: int) -> tuple[str, ...]:
        skip = 1 if self.life_safety else 0  # the life-safety device never takes part
        return tuple(
            d
            for r in range(self.regions)
            for d in self.devices_of(r)[skip + first : skip + first + count]
        )

    @property
    def early_opt_outs(self) -> tuple[str, ...]:
        """Override right after the events: in flight when the fault strikes."""
        return self._opt_outs(0, self.early_per_region)

    @property
    def late_opt_outs(self) -> tuple[str, ...]:
        """Override halfway through the stream: during the fault or the catching up."""
        return self._opt_outs(self.early_per_region, self.late_per_region)

    @property
    def warm_up(self) -> str:
        return f"{self.prefix}-warm-up"

    def junk_ids(self, junk: Sequence[roundtrip.Junk]) -> tuple[str, ...]:
        """The key (and correlation id) each junk record is played with."""
        return tuple(f"{self.prefix}-junk-{i}" for i in range(len(junk)))

    def ids(self, junk: Sequence[roundtrip.Junk] = ()) -> set[str]:
        """Everything the workload's outputs can be about."""
        return {*self.region_ids, *self.devices, *self.breakers, *self.junk_ids(junk)}

    def reading(self, scenario: Scenario, device_id: str, override: bool = False) -> Scenario:
        """A reading of one of the workload's devices, now."""
        if device_id in self.breakers:
            return scenario.telemetry_scada(device_id=device_id, device_class="FEEDER_BREAKER")
        if "-ev-charger-" in device_id:
            return scenario.telemetry_iot(
                device_id=device_id, device_class="EV_CHARGER", power_kw=7.2, setpoint_c=None,
                measured_temp_c=None, ev_soc_pct=55.0, customer_override=override,
            )  # fmt: skip
        return scenario.telemetry_iot(device_id=device_id, customer_override=override)

    def round_of_readings(
        self,
        scenario: Scenario,
        overrides: Iterable[str] = (),
        only: Sequence[str] | None = None,
    ) -> Scenario:
        """One reading of every device (or of those in `only`); those in `overrides` report a
        customer override."""
        opted = set(overrides)
        for device_id in (*self.devices, *self.breakers) if only is None else only:
            scenario = self.reading(scenario, device_id, override=device_id in opted)
        return scenario

    def setup_steps(self) -> Scenario:
        """Each region's weather, every device's registry record, and a first reading of each."""
        scenario = Scenario()
        for r, region_id in enumerate(self.region_ids):
            scenario = scenario.weather(region_id=region_id).registry(
                device_id=self.breakers[r], device_class="FEEDER_BREAKER", region_id=region_id,
                programs=[self.scada_program], rated_power_kw=8_000.0,
            )  # fmt: skip
            for i, device_id in enumerate(self.devices_of(r)):
                level = "LIFE_SAFETY" if device_id == self.life_safety_device else "STANDARD"
                ev = self.device_class(i) == "EV_CHARGER"
                scenario = scenario.registry(
                    device_id=device_id, region_id=region_id, programs=[self.program],
                    device_class=self.device_class(i), priority_level=level,
                    rated_power_kw=11.0 if ev else 5.0,
                )  # fmt: skip
        return self.round_of_readings(scenario)

    def event_steps(self) -> Scenario:
        """A round of readings, both DR events (already started when issued, so each acts as
        its activation arrives), a round a second later, and a second after that the early
        customer overrides. (Rounds are a second apart: two readings of a device in the same
        millisecond are one reading played twice, a DUPLICATE, or not, by the clock's chance.)"""
        scenario = self.round_of_readings(Scenario())
        for event_id, program, action, sizes in (
            (self.curtail_event, self.program, "CURTAIL", {"curtailment_pct": 20.0}),
            (self.switch_event, self.scada_program, "SWITCH_OPEN", {}),
        ):
            scenario = scenario.dr_event(
                event_id=event_id, program_id=program, target_region_ids=list(self.region_ids),
                action=action, start_ts_ms="now-10s", end_ts_ms="now+1h", issued_ts_ms="now",
                status="ACTIVE", **sizes,
            )  # fmt: skip
        scenario = self.round_of_readings(scenario.sleep(1_000)).sleep(1_000)
        return self.round_of_readings(scenario, overrides=self.early_opt_outs)

    def stream_rounds(self, junk: Sequence[roundtrip.Junk] = ()) -> Iterator[Scenario]:
        """A reading of every device a second for `rounds` s, the late overrides halfway, and
        the junk spread over the stream (one record after its round): one scenario a round, so
        that each is validated just before it plays (validating the whole stream first would
        leave every device silent for as long as that takes, long on a busy machine)."""
        at_round: dict[int, list[tuple[str, roundtrip.Junk]]] = {}
        for n, (key, pill) in enumerate(zip(self.junk_ids(junk), junk, strict=True)):
            at_round.setdefault(1 + n * (self.rounds - 2) // max(len(junk), 1), []).append(
                (key, pill)
            )
        for i in range(self.rounds):
            overrides = self.late_opt_outs if i == self.rounds // 2 else ()
            scenario = self.round_of_readings(Scenario().sleep(1_000), overrides)
            for key, pill in at_round.get(i, []):
                scenario = scenario.raw(topics.IOT_TELEMETRY, pill.value or b"", key, key)
            yield scenario


JUNK_KINDS = (
    "bad magic byte",
    "truncated Avro",
    "valid Avro, invalid record",
    "out-of-range power",
)


def make_junk(
    settings: Settings, kinds: Sequence[str] = JUNK_KINDS, each: int = 2
) -> tuple[roundtrip.Junk, ...]:
    """`each` junk records of every kind (`roundtrip.JUNK_KINDS`), made from one reading with
    a fixed time, so that every run plays the very same bytes (the registry must answer)."""
    source = Registry(RegistryConfig.from_settings(settings)).schemas()
    encoder = serde.serializer(models.IotTelemetry, source)
    reading = examples.example(models.IotTelemetry, device_id="junk-source")
    return tuple(roundtrip.junk(kind, reading, encoder) for _ in range(each) for kind in kinds)


# --- faults ---------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Outage:
    """When a fault began and when it had healed (time.monotonic()); for a stopped server, how
    long stopping it and starting it again took (both within the outage)."""

    began: float
    ended: float
    stopping_s: float | None = None
    starting_s: float | None = None

    def span(self) -> str:
        """The outage's length, and its stop and start when known."""
        length = f"{self.ended - self.began:.1f}s"
        if self.stopping_s is None or self.starting_s is None:
            return length
        return f"{length} (stopping {self.stopping_s:.1f}s, starting {self.starting_s:.1f}s)"


@dataclasses.dataclass(frozen=True)
class Fault:
    """Something that goes wrong while the workload plays: `strike(stack, settings)` is called
    (in a thread) right after the DR events went in and returns once the fault has healed;
    one that heals by itself (a killed TaskManager) returns at once."""

    name: str
    strike: Callable[[LocalStack, Settings], Outage]


def kill_taskmanager(flink: Flink) -> int:
    """SIGKILL the cluster's TaskManager; its pid."""
    (pid,) = flink.daemons(TASKMANAGER).live()
    os.kill(pid, signal.SIGKILL)
    return pid


def _taskmanager_killed(stack: LocalStack, settings: Settings) -> Outage:
    del settings
    kill_taskmanager(stack.flink)
    killed = time.monotonic()
    return Outage(killed, killed)


TASKMANAGER_KILLED = Fault("taskmanager SIGKILL", _taskmanager_killed)


def kill_jobmanager(flink: Flink) -> int:
    """SIGKILL the cluster's JobManager; its pid."""
    (pid,) = flink.daemons(JOBMANAGER).live()
    os.kill(pid, signal.SIGKILL)
    return pid


def _jobmanager_killed(stack: LocalStack, settings: Settings) -> Outage:
    """The JobManager SIGKILLed: with HA (`stack.flink_ha`) the supervisor starts a new one,
    which resumes the job from ZooKeeper and its latest checkpoint."""
    assert settings.stack.flink_ha, "a JobManager kill needs stack.flink_ha on"
    kill_jobmanager(stack.flink)
    killed = time.monotonic()
    return Outage(killed, killed)


JOBMANAGER_KILLED = Fault("jobmanager SIGKILL", _jobmanager_killed)


def stopped_for(
    name: str,
    component: Callable[[LocalStack], Any],
    seconds: float,
    kill: bool = False,
    when_ready: Callable[[Settings], None] | None = None,
    meanwhile: Callable[[LocalStack], Any] | None = None,
) -> Fault:
    """A stack component (Kafka, Redis, the registry) stopped for `seconds`, then started again
    on the same port and data folder. SIGTERM and waiting for the exit (the component's own
    `stop`), or with `kill` a SIGKILL of its process group. `when_ready` waits before the
    strike for what the fault needs to have happened first; `meanwhile` strikes a second fault
    once the component is down."""

    def strike(stack: LocalStack, settings: Settings) -> Outage:
        server = component(stack)
        if when_ready is not None:
            when_ready(settings)
        began = time.monotonic()
        if kill:
            pid = server.process.pid
            assert pid is not None, f"the stack's {server.name} was not started by this session"
            os.killpg(pid, signal.SIGKILL)
            assert wait_until(lambda: not pid_alive(pid), 30), f"{server.name} survived SIGKILL"
        else:
            assert server.stop(), f"the stack's {server.name} was not started by this session"
        stopped = time.monotonic()
        if meanwhile is not None:
            meanwhile(stack)
        time.sleep(max(0.0, seconds - (stopped - began)))
        starting = time.monotonic()
        server.start()
        ended = time.monotonic()
        return Outage(began, ended, stopped - began, ended - starting)

    return Fault(name, strike)


def commands_committed(settings: Settings) -> None:
    """Wait until the job has decided on the DR events (its first commands committed)."""
    wait_for(lambda: bool(dump(settings, topics.COMMANDS)), 120, "the first commands committed", 1)


# --- the recovery ---------------------------------------------------------------------------------


@dataclasses.dataclass
class Recovery:
    """How the job came through a fault: its restarts, when it ran again and its first new
    committed output appeared (seconds after the fault's end)."""

    fault: str
    outage: Outage | None = None
    restarts: int | None = None
    running_s: float | None = None  # all tasks RUNNING again, after the last failover seen
    output_s: float | None = None
    restored: tuple[int, int] | None = None

    def line(self) -> str:
        """One line for the reliability report (`pytest -s` prints it)."""
        outage = "?" if self.outage is None else self.outage.span()
        if self.restarts == 0:
            running = "job not restarted (RUNNING throughout)"
        else:
            checkpoint = self.restored[0] if self.restored else "?"
            running = (
                f"job restarted {self.restarts}x, RUNNING again (from checkpoint {checkpoint}) "
                f"{_seconds(self.running_s)} after"
            )
        return (
            f"RECOVERY {self.fault}: down {outage}; {running}; first new committed output "
            f"{_seconds(self.output_s)} after the fault's end"
        )


def _seconds(value: float | None) -> str:
    return "never" if value is None else f"{value:.1f}s"


class _NewOutput:
    """A read_committed consumer at the output topics' end offsets: has anything come since?"""

    def __init__(self, settings: Settings) -> None:
        self.consumer = Consumer(
            {
                **kafka_client_config(settings.stack),
                "group.id": f"gridstream-faults-{now_ms()}",
                "isolation.level": "read_committed",
                "enable.auto.commit": False,
            }
        )
        try:
            ends = [tp for topic in topics.OUTPUTS for tp in end_offsets(self.consumer, topic)]
            self.consumer.assign(ends)
        except BaseException:
            self.consumer.close()
            raise

    def arrived(self) -> bool:
        message = self.consumer.poll(0.2)
        return message is not None and message.error() is None

    def close(self) -> None:
        self.consumer.close()


class Watch:
    """Watches the job through a fault, in a thread: each failover's end, and once the fault
    has healed (`healed`), the first output committed after that."""

    def __init__(self, fault: str, settings: Settings, flink: Flink, job_id: str) -> None:
        self.recovery = Recovery(fault)
        self.settings, self.flink, self.job_id = settings, flink, job_id
        self.restarts_before = restarts(flink, job_id)
        self.started_ms = now_ms()
        self._stop = threading.Event()
        self._back_at: float | None = None
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def healed(self, outage: Outage) -> None:
        """The fault is over: look for the first new output from now on."""
        self.recovery.outage = outage

    def _watch(self) -> None:
        new_output: _NewOutput | None = None
        running = True
        try:
            while not self._stop.is_set():
                up = all_tasks_running(self.flink, self.job_id)
                if up and not running:
                    self._back_at = time.monotonic()
                running = up
                outage = self.recovery.outage
                if outage is not None and self.recovery.output_s is None:
                    if new_output is None:
                        new_output = _connect_when_up(self.settings)
                    elif new_output.arrived():
                        self.recovery.output_s = time.monotonic() - outage.ended
                        continue
                time.sleep(0.25)
        finally:
            if new_output is not None:
                new_output.close()

    def finish(self) -> Recovery:
        """Stop watching; the recovery as seen."""
        self._stop.set()
        self._thread.join(30)
        recovery, outage = self.recovery, self.recovery.outage
        restored = restored_checkpoint(self.flink, self.job_id)
        # The metric can lag (the REST API's metric store): a restore since the watch began
        # counts as a restart too.
        since = restored is not None and restored[1] >= self.started_ms
        recovery.restarts = max(
            restarts(self.flink, self.job_id) - self.restarts_before, int(since)
        )
        if recovery.restarts and outage is not None:
            recovery.restored = restored
            if self._back_at is not None:
                recovery.running_s = max(0.0, self._back_at - outage.ended)
        return recovery


def _connect_when_up(settings: Settings) -> _NewOutput | None:
    """A `_NewOutput`, or None while the broker does not answer yet (asked again later)."""
    try:
        return _NewOutput(settings)
    except Exception:  # noqa: BLE001 (the broker still starting: any failure means "not yet")
        return None


# --- a run ----------------------------------------------------------------------------------------


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

    def group_gone() -> bool:
        for future in admin.delete_consumer_groups([JOB_NAME]).values():
            try:
                future.result()
            except KafkaException as err:  # no such group is fine
                code = err.args[0].code()
                if code == KafkaError.GROUP_ID_NOT_FOUND:
                    return True
                if code in GROUP_COORDINATOR_NOT_READY:  # a fresh broker, or a busy one
                    return False
                raise
        return True

    wait_for(group_gone, 60, "the job's consumer group deleted", every_s=1.0)

    def created() -> bool:
        stack.create_topics()
        found = admin.list_topics(timeout=10).topics
        return all(n in found and found[n].partitions for n in names)

    wait_for(created, 60, "the topics created again", every_s=1.0)
    redis.Redis.from_url(stack.settings.stack.redis_url).flushdb()


def processed(settings: Settings, device_ids: Iterable[str], since_ms: int) -> bool:
    """Every device's newest reading at or after `since_ms` has reached the Redis mirror."""
    url = settings.stack.redis_url
    return all(
        (good := mirror.read(url, device_id)) is not None and good.ts_ms >= since_ms
        for device_id in device_ids
    )


def committed(
    settings: Settings, flink: Flink, job_id: str, device_ids: Sequence[str], since_ms: int
) -> None:
    """Wait until every reading played from `since_ms` on is processed and its outputs are
    committed: two checkpoints triggered after that completed (the sink commits a checkpoint's
    transaction before it takes part in the next one)."""
    wait_for(
        lambda: processed(settings, device_ids, since_ms),
        SETTLE_TIMEOUT_S,
        "every reading processed",
    )
    checkpoint_from_now(flink, job_id)
    checkpoint_from_now(flink, job_id)


def records_about(settings: Settings, wanted: Iterable[str], ids: set[str]) -> Records:
    """The committed records of the `wanted` topics about `ids`, by topic."""
    return {topic: [r for r in dump(settings, topic) if mine(r, ids)] for topic in wanted}


@dataclasses.dataclass(frozen=True)
class Run:
    """One run's outputs about the workload, the pipeline-wide alerts, the inputs the rules
    need, and how it recovered if a fault struck."""

    outputs: Records
    pipeline_alerts: list[dict[str, Any]]
    inputs: Records
    recovery: Recovery | None
    events_checkpoint: int  # the last checkpoint completed before the events went in
    mirror_caught_up: bool  # every device's newest reading in Redis at the end


class _Striker(threading.Thread):
    """Runs a fault's strike beside the player; `join` re-raises what it raised."""

    def __init__(self, fault: Fault, stack: LocalStack, settings: Settings, watch: Watch) -> None:
        super().__init__(daemon=True)
        self.fault, self.stack, self.settings, self.watch = fault, stack, settings, watch
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.watch.healed(self.fault.strike(self.stack, self.settings))
        except BaseException as err:  # noqa: BLE001 (handed to the test's thread by `join`)
            self.error = err

    def healed(self) -> None:
        """Wait for the fault to heal; raise what the strike raised."""
        self.join(RECOVERY_TIMEOUT_S)
        if self.is_alive():
            pytest.fail(f"{self.fault.name}: the fault did not heal within {RECOVERY_TIMEOUT_S}s")
        if self.error is not None:
            raise self.error


@contextlib.contextmanager
def reporting(player: Player, workload: Workload) -> Iterator[None]:
    """The breakers keep reporting every second while the harness waits (for the set-up to be
    processed and checkpointed, for a fault to heal), so that no breaker goes silent for its
    SCADA timeout (15 s) in event time: a real silence is not what the runs compare, and
    whether the job notices one depends on the order its reader catches up in (the breaker's
    next reading, or readings that move the watermark past its deadline, first)."""
    stop = threading.Event()

    def report() -> None:
        while not stop.wait(1.0):
            player.play(workload.round_of_readings(Scenario(), only=workload.breakers), quiet)

    thread = threading.Thread(target=report, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(PLAYER_MESSAGE_TIMEOUT_MS / 1000)


def play_run(
    stack: LocalStack,
    workload: Workload,
    fault: Fault | None = None,
    junk: Sequence[roundtrip.Junk] = (),
) -> Run:
    """Reset, start a fresh job, play the workload (the fault striking right after the events
    if given) and collect the committed outputs once everything is processed."""
    reset(stack)
    settings = dataclasses.replace(
        stack.settings, job=dataclasses.replace(stack.settings.job, **JOB_SETTINGS)
    )
    flink = stack.flink
    job_id = ensure_job(LocalStack(settings, say=quiet))
    player = Player(settings, PLAYER_MESSAGE_TIMEOUT_MS, wait_for_delivery=False)
    player.play(Scenario().telemetry_iot(device_id=workload.warm_up), quiet)
    wait_for(
        lambda: mirror.read(settings.stack.redis_url, workload.warm_up) is not None,
        120,
        f"job {job_id} processing a first reading",
    )
    readers = (*workload.devices, *workload.breakers)
    started = now_ms()
    player.play(workload.setup_steps(), quiet)
    with reporting(player, workload):
        wait_for(lambda: processed(settings, readers, started), 120, "the setup processed", 0.1)
        # The setup in a checkpoint (not replayed after a failover), and the events right after
        # it completed, so the next one (5 s after its trigger) comes after a fault striking at
        # once: the events and the early overrides are in flight then.
        events_checkpoint = checkpoint_from_now(flink, job_id)
    player.play(workload.event_steps(), quiet)
    watch = striker = None
    if fault is not None:
        watch = Watch(fault.name, settings, flink, job_id)
        striker = _Striker(fault, stack, settings, watch)
        striker.start()
    try:
        for scenario in workload.stream_rounds(junk):
            player.play(scenario, quiet)
        if striker is not None:
            with reporting(player, workload):
                striker.healed()
        last_round = now_ms()
        player.play(workload.round_of_readings(Scenario().sleep(1_000)), quiet)
        player.flush()
        committed(settings, flink, job_id, readers, last_round)
    finally:
        recovery = watch.finish() if watch is not None else None
    caught_up = processed(settings, readers, last_round)
    ids = workload.ids(junk)
    outputs = records_about(settings, COMPARED, ids)
    pipeline = [a for a in dump(settings, topics.ALERTS) if a.get("region_id") == PIPELINE]
    inputs = records_about(settings, RULE_INPUTS, ids)
    flink.cancel(job_id)
    return Run(outputs, pipeline, inputs, recovery, events_checkpoint, caught_up)


# --- the oracle -----------------------------------------------------------------------------------


def normalized(topic: str, record: Mapping[str, Any]) -> tuple[Hashable, Hashable]:
    """(what identifies the output, its normalized content): no wall-clock fields, no Kafka
    coordinates (a dead letter's source offset differs between runs)."""
    if topic == topics.COMMANDS:
        key = (record["device_id"], record["action"])
        return key, (record["command_id"], *key)
    if topic == topics.RECOMMENDATIONS:
        key = (record["device_id"], record["action"])
        return key, (record["recommendation_id"], *key)
    if topic == topics.AUDIT:
        key = (record["device_id"], record["action"], record["outcome"])
        return key, (*key, tuple(sorted(record["reason_codes"])), record["command_id"])
    if topic == topics.DLQ:
        key = (record["source_topic"], record["key"], record["error_class"])
        content = ("error_message", "schema_id", "payload", "payload_length", "correlation_id")
        return key, (*key, *(record[name] for name in content))
    key = (record["kind"], record.get("device_id"), record.get("region_id"))
    return key, key


@dataclasses.dataclass(frozen=True)
class Difference:
    """How one topic's outputs of a faulty run differ from the clean run's."""

    topic: str
    clean: int
    faulty: int
    lost: Counter[Hashable]  # in the clean run, missing after the fault
    duplicated: Counter[Hashable]  # after the fault, more often than in the clean run
    differing: list[tuple[Hashable, list[Hashable], list[Hashable]]]  # same output, other content
    evidence: list[dict[str, Any]]  # a few whole records of the keys above, for the report

    def counts(self) -> str:
        return (
            f"{self.topic:<22} clean {self.clean:>5}  faulty {self.faulty:>5}  "
            f"lost {sum(self.lost.values())}  duplicated {sum(self.duplicated.values())}  "
            f"differing {len(self.differing)}"
        )

    def __bool__(self) -> bool:
        return bool(self.lost or self.duplicated or self.differing)


def compare(topic: str, clean: list[dict[str, Any]], faulty: list[dict[str, Any]]) -> Difference:
    """Compare two runs' records of a topic as multisets of normalized records."""

    def by_key(records: list[dict[str, Any]]) -> dict[Hashable, Counter[Hashable]]:
        grouped: dict[Hashable, Counter[Hashable]] = {}
        for record in records:
            key, content = normalized(topic, record)
            grouped.setdefault(key, Counter())[content] += 1
        return grouped

    first, second = by_key(clean), by_key(faulty)
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
    odd = lost.keys() | duplicated.keys() | {key for key, _, _ in differing}
    evidence = [
        {"run": run, **record}
        for run, records in (("clean", clean), ("faulty", faulty))
        for record in records
        if normalized(topic, record)[0] in odd
    ][:EVIDENCE_RECORDS]
    return Difference(topic, len(clean), len(faulty), lost, duplicated, differing, evidence)


def differences(clean: Run, faulty: Run, label: str) -> list[Difference]:
    """Each compared topic's difference, its counts printed one line each, `label` first."""
    found = [compare(t, clean.outputs[t], faulty.outputs[t]) for t in COMPARED]
    for difference in found:
        print(f"COUNTS {label}: {difference.counts()}")
    return found


def assert_within_idleness(outage: Outage) -> None:
    """The comparison's premise: the outage ended before a quiet partition went idle."""
    length_s = outage.ended - outage.began
    assert length_s < IDLENESS_MS / 1000, (
        f"the outage lasted {length_s:.1f}s, longer than the job's idleness_ms "
        f"({IDLENESS_MS} ms): event time may then run ahead of unread readings by design"
    )


def assert_same(found: list[Difference]) -> None:
    """Fail on any difference between the runs, with what differed."""
    assert not problems(found), problems(found)


def problems(found: Iterable[Difference]) -> str:
    """What differs, for an assertion message ('' when nothing does)."""
    return "\n".join(
        f"{d.counts()}\n  lost: {dict(d.lost)}\n  duplicated: {dict(d.duplicated)}\n"
        + "".join(f"  differing {k}:\n    clean  {a}\n    faulty {b}\n" for k, a, b in d.differing)
        + "".join(f"  record {json.dumps(r, sort_keys=True)}\n" for r in d.evidence)
        for d in found
        if d
    )


def scenario_problems(
    workload: Workload, run: Run, junk: Sequence[roundtrip.Junk] = ()
) -> list[str]:
    """What the workload is for did not happen in `run`, or a DESIGN.md rule broke: devices
    curtailed (all but the opted-out and the life-safety one), exactly the overriding devices
    opted out, the life-safety device blocked, the breakers recommended (never switched), each
    junk record dead-lettered exactly once and nothing else, every rule of `output_rules`."""
    out = run.outputs
    found = []
    curtailed = {c["device_id"] for c in out[topics.COMMANDS] if c["action"] == "CURTAIL"}
    protected = {workload.life_safety_device} - {None}
    expected = set(workload.devices) - set(workload.early_opt_outs) - protected
    if not expected <= curtailed:
        found.append(f"not curtailed: {sorted(expected - curtailed)}")
    opted = {
        a["device_id"]
        for a in out[topics.AUDIT]
        if a["outcome"] == "BLOCKED" and "OPT_OUT" in a["reason_codes"]
    }
    if opted != {*workload.early_opt_outs, *workload.late_opt_outs}:
        found.append(f"opted out: {sorted(opted)}")
    blocked = {
        a["device_id"]
        for a in out[topics.AUDIT]
        if a["outcome"] == "BLOCKED" and "LIFE_SAFETY_EXCLUSION" in a["reason_codes"]
    }
    if not protected <= blocked:
        found.append(f"life-safety device not blocked: {sorted(protected - blocked)}")
    recommended = sorted(r["device_id"] for r in out[topics.RECOMMENDATIONS])
    if recommended != sorted(workload.breakers):
        found.append(f"recommendations for {recommended}, not the breakers")
    letters = Counter(d["correlation_id"] for d in out[topics.DLQ])
    if letters != Counter(workload.junk_ids(junk)):
        found.append(f"dead letters by correlation id: {dict(letters)}")
    return found + output_rules.violations(run.inputs, out)
