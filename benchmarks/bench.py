"""`make bench`: device-control side by side with its peers, on one broker, one workload, one run.

Starts a private local stack (Kafka, registry, Redis, Flink session cluster) on free loopback
ports in a temporary folder, loads a generated fleet (`benchmarks/fleet.py`) into Kafka before
any timing, then measures in turn, on the same data and cores:

- device-control (the real job, submitted to the session cluster by `gridstream.deploy`) for
  each parallelism and sink mode, from an empty state and the topics' beginning (its consumer
  group is deleted before each run): throughput, CPU, checkpoints and state under the backlog,
  then event -> command latency in a paced run at half the throughput it measured;
- Quix Streams, the Python I/O ceiling and the pure-logic floor (`benchmarks/peers.py`).

Writes `results/bench-<time>.md`, `.json` and `.png` (under `--out`) and prints the table. The
figures are defined in README.md ("Performance").

    .venv/bin/python benchmarks/bench.py                      # 100k devices, p1 and p2, both modes
    .venv/bin/python benchmarks/bench.py --devices 20000 --parallelism 1 --modes exactly-once
    .venv/bin/python benchmarks/bench.py --smoke              # ~1.5 min: the stack test's size
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import device_stage_bench  # this script's folder: the benchmark's own modules
import fleet
import peers
import report
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from functions.device import DevicePolicy
from gridstream import config, topics
from gridstream.deploy import start_job
from gridstream.roundtrip import percentile
from gridstream.scenario import committed_offsets, end_offsets, produce, watermarks
from gridstream.stack import LocalStack
from gridstream.stack.components import TERMINAL_STATES
from gridstream.stack.daemons import TASKMANAGER
from gridstream.stack.process import on_free_ports
from jobs.device_control import JOB_NAME
from jobs.io import consumer_groups
from schemas import models, serde
from schemas.dead_letter import CORRELATION_HEADER
from schemas.registry import Registry, RegistryConfig

MODES = ("at-least-once", "exactly-once")  # at-least-once first: see `run_job`
LOSS_MEASURABLE_S = 20.0  # the shortest latency run that also times telemetry-loss alerts
ROOT = Path(__file__).resolve().parents[1]
Say = Callable[[str], None]


def say(line: str) -> None:
    """Progress, with the time of day."""
    print(f"[{time.strftime('%H:%M:%S')}] {line}", flush=True)


def private_settings(home: Path) -> config.Settings:
    """The settings of a stack of its own: `home` and free loopback ports."""
    base = config.load(env={})
    stack = on_free_ports(base.stack, home)
    # The region budget wide open: latency measures the pipeline, not the rate limit.
    return config.Settings(stack, dataclasses.replace(base.job, commands_per_window=10**9))


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and of every live process below it."""
    tick = os.sysconf("SC_CLK_TCK")
    stats: dict[int, tuple[int, float]] = {}  # pid: (parent, cpu)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            stats[int(entry.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / tick)
    tree, total = {pid}, 0.0
    for child in sorted(stats):  # a child's pid is usually above its parent's: loop to closure
        if stats[child][0] in tree:
            tree.add(child)
    for member in tree:
        total += stats.get(member, (0, 0.0))[1]
    return total


def taskmanager_cpu(stack: LocalStack) -> float:
    """CPU seconds of the TaskManager JVM and its children (thread mode: Python runs inside).

    Read-only (`live`, not `prune`): rewriting the pid files races the supervisor, which then
    takes the TaskManager for dead and starts a second one.
    """
    return sum(cpu_seconds(pid) for pid in stack.flink.daemons(TASKMANAGER).live())


def rest(stack: LocalStack, path: str) -> Any:
    """One Flink REST GET, as JSON."""
    with urllib.request.urlopen(f"{stack.flink.address}{path}", timeout=10) as response:
        return json.load(response)


def cancel_jobs(stack: LocalStack) -> None:
    """Cancel every device-control job still running."""
    for job in stack.flink.jobs():
        if job["name"] == JOB_NAME and job["state"] not in TERMINAL_STATES:
            stack.flink.cancel(str(job["jid"]))


def input_ends(servers: str) -> dict[tuple[str, int], int]:
    """The end offset of every input partition."""
    consumer = Consumer({"bootstrap.servers": servers, "group.id": "bench-ends"})
    try:
        return {
            (topic, p): high
            for topic in topics.INPUTS
            for p, (_, high) in watermarks(consumer, topic).items()
        }
    finally:
        consumer.close()


def committed(servers: str, partitions: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
    """The offsets the job's consumer groups have committed (0 where none; a topic both read,
    the registry, counts where the slower one is)."""
    offsets: dict[tuple[str, int], int] = {}
    for group, names in consumer_groups(JOB_NAME).items():
        consumer = Consumer({"bootstrap.servers": servers, "group.id": group})
        try:
            wanted = [TopicPartition(t, p) for t, p in partitions if t in names]
            for tp in committed_offsets(consumer, wanted):
                key, done = (tp.topic, tp.partition), max(tp.offset, 0)
                offsets[key] = min(offsets.get(key, done), done)
        finally:
            consumer.close()
    return offsets


@dataclasses.dataclass
class Sample:
    """Committed input records and readings, with the wall time and TaskManager CPU."""

    at: float
    cpu: float
    records: int
    readings: int


def sample(stack: LocalStack, ends: dict[tuple[str, int], int]) -> Sample:
    """Where the job's committed offsets are now."""
    offsets = committed(stack.settings.stack.bootstrap_servers, list(ends))
    readings = sum(o for (t, _), o in offsets.items() if t in peers.READINGS)
    return Sample(time.monotonic(), taskmanager_cpu(stack), sum(offsets.values()), readings)


def throughput(
    stack: LocalStack, ends: dict[tuple[str, int], int], timeout_s: float, say: Say
) -> dict[str, float]:
    """Wait until the job has committed every input offset in `ends`; its rates.

    The window runs from the first checkpoint that committed progress to the one that
    committed the last offset (offsets are committed, and exactly-once output made visible,
    when a checkpoint completes), so start-up is left out. When the first commit already
    holds half the readings or more (a small workload), it runs from the submission instead.
    """
    started = sample(stack, ends)
    first: Sample | None = None
    total = sum(ends.values())
    readings = sum(o for (t, _), o in ends.items() if t in peers.READINGS)
    deadline = time.monotonic() + timeout_s
    last_say = 0.0
    while True:
        now = sample(stack, ends)
        if first is None and now.records:
            # By the readings: telemetry and the registry are read by two sources, and a
            # first commit may hold every reading before the registry's last record.
            first = now if now.readings < readings / 2 else started
        if now.records >= total:
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"the job committed {now.records:,} of {total:,} in {timeout_s}s")
        if time.monotonic() - last_say > 15:
            last_say = time.monotonic()
            say(f"    {now.records:,} / {total:,} records committed")
        time.sleep(0.5)
    assert first is not None
    seconds, records = now.at - first.at, now.records - first.records
    return {
        "records_per_s": records / seconds,
        "readings_per_s": (now.readings - first.readings) / seconds,
        "cpu_s_per_1k": (now.cpu - first.cpu) / records * 1000,
        "window_s": seconds,
    }


def checkpoints(stack: LocalStack, job_id: str, devices: int) -> dict[str, float]:
    """Checkpoint duration (median and max end to end) and the last one's state per device."""
    stats = rest(stack, f"/jobs/{job_id}/checkpoints")
    duration = stats["summary"]["end_to_end_duration"]
    latest = stats["latest"]["completed"] or {}
    return {
        "checkpoint_p50_ms": float(duration["p50"]),
        "checkpoint_max_ms": float(duration["max"]),
        "state_bytes_per_device": float(latest.get("state_size", 0)) / devices,
        "checkpoints": float(stats["counts"]["completed"]),
    }


class Arrivals:
    """The job's commands and telemetry-loss alerts as they arrive (`read_committed` for
    exactly-once output), each at its first arrival's wall-clock time."""

    def __init__(self, settings: config.Settings, schemas: Any) -> None:
        exactly_once = settings.job.delivery_guarantee == "exactly-once"
        self.consumer = Consumer(
            {
                "bootstrap.servers": settings.stack.bootstrap_servers,
                "group.id": "bench-latency",
                "isolation.level": "read_committed" if exactly_once else "read_uncommitted",
            }
        )
        ends = [*end_offsets(self.consumer, topics.COMMANDS)]
        self.consumer.assign(ends + end_offsets(self.consumer, topics.ALERTS))
        self.alerts = serde.deserializer(models.Alert, schemas)
        self.commands: dict[str, float] = {}  # correlation id: arrival
        self.losses: dict[str, float] = {}  # device id: arrival of its TELEMETRY_LOSS

    def receive(self, wait_s: float) -> None:
        """Take what arrives within `wait_s`."""
        message = self.consumer.poll(wait_s)
        if message is None or message.error():
            return
        if message.topic() == topics.COMMANDS:
            corr = dict(message.headers() or ()).get(CORRELATION_HEADER) or ""
            text = corr.decode() if isinstance(corr, bytes) else corr
            self.commands.setdefault(text, time.time())
            return
        alert = self.alerts.read(message.value() or b"")[1]
        if alert["kind"] == "TELEMETRY_LOSS" and alert["device_id"]:
            self.losses.setdefault(alert["device_id"], time.time())

    def close(self) -> None:
        self.consumer.close()


def latency(
    settings: config.Settings, pool: list[str], rate: float, seconds: float, say: Say
) -> dict[str, float]:
    """Event -> command latency at `rate` readings a second, and telemetry-loss alert delay.

    The pool's devices are registered and enrolled in the running DR event but have never
    reported, so the first reading of each makes the job request its curtailment: a command
    carrying the reading's correlation id. Weather is renewed and five seconds of readings
    from the fleet bring the job's event time to now first. Latency runs from the produce
    call to the command's arrival at a consumer (`read_committed` for exactly-once output).
    In runs of `LOSS_MEASURABLE_S` or more, fleet SCADA points report once first and then
    fall silent while the fleet reports on past their deadlines: the delay of each one's
    TELEMETRY_LOSS alert is counted from its silence deadline (the reading's time plus the
    SCADA timeout). Event time must pass the deadline first, so the delay includes the
    watermark's out-of-orderness bound.
    """
    servers = settings.stack.bootstrap_servers
    schemas = Registry(RegistryConfig.from_settings(settings)).schemas()
    encode = fleet.Encoder(schemas)
    arrivals = Arrivals(settings, schemas)
    producer = Producer({"bootstrap.servers": servers, "linger.ms": 0})
    rng = random.Random(1)

    def send(record: fleet.Record) -> None:
        produce(
            producer, record.topic, key=record.key, value=record.value, timestamp=record.ts_ms,
            headers={CORRELATION_HEADER: record.correlation_id},
        )  # fmt: skip
        producer.poll(0)

    for region in fleet.REGIONS:
        send(fleet.weather(encode, region, peers.now_ms()))
    warm = [d for d in fleet.device_ids(fleet.Shape(devices=1_000)) if not fleet.is_scada(d)]
    scada = [d for d in fleet.device_ids(fleet.Shape(devices=2_000)) if fleet.is_scada(d)]
    silent = scada[: int(rate)] if seconds >= LOSS_MEASURABLE_S else []  # every fleet has them
    paced = [(device_id, "silent") for device_id in silent]
    paced += [(warm[n % len(warm)], "") for n in range(int(rate * 5) - len(paced))]
    paced += [(device_id, "timed") for device_id in pool[: max(1, int(rate * seconds))]]
    if silent:  # the fleet reports on until event time passes every silent deadline
        bound_s = settings.job.out_of_orderness_ms / 1000
        wanted = int((DevicePolicy().scada_silence_ms / 1000 + bound_s + 3) * rate)
        paced += [(warm[n % len(warm)], "") for n in range(wanted - len(paced))]
    sent: dict[str, float] = {}
    deadlines: dict[str, float] = {}  # silent device: its silence deadline, wall-clock s
    silence_s = DevicePolicy().scada_silence_ms / 1000

    start = time.monotonic()
    for n, (device_id, role) in enumerate(paced):
        while (ahead := start + n / rate - time.monotonic()) > 0:
            arrivals.receive(ahead)
        record = fleet.reading(encode, device_id, peers.now_ms(), "+paced", rng)
        send(record)
        if role == "timed":
            sent[record.correlation_id] = time.time()
        elif role == "silent":
            deadlines[device_id] = record.ts_ms / 1000 + silence_s
    producer.flush(30)
    say(f"    {len(sent):,} paced readings sent at {rate:,.0f}/s; waiting for their commands")
    deadline = time.monotonic() + 60  # or 10 s without a new command

    def waiting() -> bool:
        last = max(arrivals.commands.values(), default=time.time())
        commands = sum(c in arrivals.commands for c in sent) < len(sent)
        losses = len(arrivals.losses.keys() & deadlines.keys()) < len(deadlines)
        pending = (commands and time.time() < last + 10) or losses
        return pending and time.monotonic() < deadline

    while waiting():
        arrivals.receive(0.5)
    arrivals.close()
    waits = [(arrivals.commands[c] - sent[c]) * 1000 for c in sent if c in arrivals.commands]
    late = [
        (arrivals.losses[d] - due) * 1000 for d, due in deadlines.items() if d in arrivals.losses
    ]
    figures = {
        "latency_rate": rate,
        "latency_p50_ms": percentile(waits, 50),
        "latency_p99_ms": percentile(waits, 99),
        "commands_back": len(waits) / len(sent),
    }
    if late:  # JSON has no NaN: a figure not measured is left out
        figures["loss_alert_p50_ms"] = percentile(late, 50)
        figures["loss_alert_p99_ms"] = percentile(late, 99)
    if deadlines:
        figures["loss_alerts_back"] = len(late) / len(deadlines)
    return figures


def initializing_s(stack: LocalStack, job_id: str, timeout_s: float = 600.0) -> float:
    """Once every task of the job runs: the longest any spent initializing (where a task
    restores its state and opens its functions), in seconds."""
    deadline = time.monotonic() + timeout_s
    while True:
        vertices = rest(stack, f"/jobs/{job_id}")["vertices"]
        if all(v["status"] == "RUNNING" for v in vertices):
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"job {job_id} did not run within {timeout_s} s")
        time.sleep(0.2)
    spans = [
        (task["timestamps"]["RUNNING"] - task["timestamps"]["INITIALIZING"]) / 1000
        for v in vertices
        for task in rest(stack, f"/jobs/{job_id}/vertices/{v['id']}/subtasktimes")["subtasks"]
    ]
    return max(spans)


def restore(stack: LocalStack, job_id: str, fresh_s: float, devices: int) -> dict[str, float]:
    """Stop the job with a savepoint of its whole fleet's state and start it again from it.

    The restore time runs from submission until every task runs. Its part that grows with the
    state is how much longer the tasks initialized than they did starting empty (`fresh_s`);
    the 1M-device figure scales that part alone.
    """
    savepoint = stack.flink.stop_with_savepoint(job_id)
    folder = Path(urllib.parse.urlparse(savepoint).path)  # a file: URI
    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    started = time.monotonic()
    restored = start_job(stack, savepoint)
    initializing = initializing_s(stack, restored)
    seconds = time.monotonic() - started
    per_device = max(0.0, initializing - fresh_s) / devices
    say(
        f"    restored {devices:,} devices' state ({size / 1e6:,.1f} MB) in {seconds:.1f} s; "
        f"tasks initialized in {initializing:.1f} s ({fresh_s:.1f} s when empty)"
    )
    return {
        "savepoint_mb": size / 1e6,
        "restore_s": seconds,
        "restore_initializing_s": initializing,
        "fresh_initializing_s": fresh_s,
        "restore_s_per_1m_devices": seconds + per_device * (1_000_000 - devices),
    }


def minicluster(n: int, say: Say) -> dict[str, float]:
    """The job's marginal cost per reading on a local MiniCluster, no Kafka and no sinks
    (`device_stage_bench.py`: `n` and `4n` readings of 1,000 thermostats, start-up cancelled)."""
    small, large = device_stage_bench.in_tree(ROOT, 1_000, [1_000, n, 4 * n])[1:]
    wall, cpu = ((large[k] - small[k]) / (3 * n) for k in ("wall", "cpu"))
    say(f"    {wall * 1e6:.0f} us a reading ({cpu * 1e6:.0f} CPU us)")
    return {
        "readings_per_s": 1 / wall,
        "records_per_s": 1 / wall,
        "cpu_s_per_1k": cpu * 1000,
        "window_s": large["wall"],
    }


def forget_offsets(servers: str, attempts: int = 30) -> None:
    """Delete the job's consumer groups, so the next job reads every topic from its beginning."""
    admin = AdminClient({"bootstrap.servers": servers})
    for group in consumer_groups(JOB_NAME):
        for _ in range(attempts):
            try:
                admin.delete_consumer_groups([group])[group].result()
                break
            except Exception as err:  # typed only by its message in confluent-kafka
                if "GROUP_ID_NOT_FOUND" in str(err):
                    break
                if "COORDINATOR" not in str(err):  # not (yet) the coordinator: ask again
                    raise
            time.sleep(1.0)
        else:
            raise RuntimeError(f"could not delete consumer group {group}: the broker refuses")


def run_job(
    stack: LocalStack,
    workload: fleet.Workload,
    pool: list[str],
    args: argparse.Namespace,
    restores: bool,
) -> dict[str, Any]:
    """One device-control run: throughput, CPU, checkpoints and state, then latency, then
    (if `restores`) a savepoint of the fleet's state and a restore from it.

    Each run starts empty from the topics' beginning. An exactly-once run leaves its last
    transaction open when cancelled (the next exactly-once job aborts it), which would hold
    `read_committed` readers of the outputs back; at-least-once runs go first and read
    their commands `read_uncommitted` (they write no transactions).
    """
    settings = stack.settings
    servers = settings.stack.bootstrap_servers
    cancel_jobs(stack)
    forget_offsets(servers)
    ends = input_ends(servers)
    job_id = start_job(stack)
    fresh_s = initializing_s(stack, job_id)
    say(f"    job {job_id} running; processing {sum(ends.values()):,} records")
    figures = throughput(stack, ends, args.timeout, say)
    figures |= checkpoints(stack, job_id, workload.devices)
    rate = figures["readings_per_s"] * args.latency_load
    figures |= latency(settings, pool, rate, args.latency_seconds, say)
    if restores:
        figures |= restore(stack, job_id, fresh_s, workload.devices)
    cancel_jobs(stack)
    return figures


def run_peer(name: str, settings: config.Settings) -> dict[str, Any]:
    """A peer in its own process (`benchmarks/peers.py`); its figures."""
    command = [
        sys.executable, str(ROOT / "benchmarks" / "peers.py"), name,
        "--bootstrap", settings.stack.bootstrap_servers, "--registry", settings.stack.registry_url,
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith(peers.RESULT)]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"peer {name} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(lines[-1][len(peers.RESULT) :])
    seconds, records = result["seconds"], result["records"]
    return {
        "records_per_s": records / seconds,
        "readings_per_s": result["readings"] / seconds,
        "cpu_s_per_1k": result["cpu_s"] / records * 1000,
        "window_s": seconds,
    }


def create_peer_topics(settings: config.Settings) -> None:
    """The peers' output topics, as many partitions as the inputs."""
    admin = AdminClient({"bootstrap.servers": settings.stack.bootstrap_servers})
    new = [NewTopic(t, settings.stack.partitions, 1) for t in peers.OUTPUT.values()]
    for future in admin.create_topics(new).values():
        future.result()


def rows(
    args: argparse.Namespace, stack: LocalStack, workload: fleet.Workload
) -> Iterator[dict[str, Any]]:
    """Each measured system's row, in the table's order."""
    runs = [(p, mode) for p in args.parallelism for mode in args.modes]
    for n, (parallelism, mode) in enumerate(runs):
        say(f"device-control {mode}, parallelism {parallelism} ({n + 1}/{len(runs)})")
        job = dataclasses.replace(
            stack.settings.job, delivery_guarantee=mode, parallelism=parallelism
        )
        run_stack = LocalStack(config.Settings(stack.settings.stack, job), say=say)
        # The last run restores: its empty start is the warm one to compare the restore with.
        last = n == len(runs) - 1
        figures = run_job(run_stack, workload, workload.latency_pools[n], args, last)
        say(f"    {json.dumps(figures)}")
        yield {"system": "device-control", "mode": mode, "parallelism": parallelism, **figures}
    say("device-control on a MiniCluster (no I/O)")
    yield {
        "system": "device-control",
        "mode": report.MINICLUSTER,
        "parallelism": 1,
        # The smoke too: its marginal cost is the difference of two runs, and at 2,000 and 8,000
        # readings the start-up's spread on a busy machine outweighed it (a negative rate).
        **minicluster(10_000, say),
    }
    for name, label, mode in (
        ("quix", "Quix Streams", "exactly-once"),
        ("ceiling", "Python I/O ceiling", "-"),
        ("floor", "pure-logic floor", "-"),
    ):
        say(label)
        figures = run_peer(name, stack.settings)
        say(f"    {json.dumps(figures)}")
        yield {"system": label, "mode": mode, "parallelism": 1, **figures}


def main() -> None:
    """Start the stack, load the fleet, measure everything, write and print the report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=100_000)
    parser.add_argument("--span", type=int, default=60, help="seconds of readings")
    parser.add_argument("--parallelism", type=int, nargs="+", default=[1, 2], choices=[1, 2])
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--latency-seconds", type=float, default=20.0)
    parser.add_argument("--latency-load", type=float, default=0.5, help="of the measured max")
    parser.add_argument("--timeout", type=float, default=3_600.0, help="per job run, seconds")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--smoke", action="store_true", help="2,000 devices, p1, one mode")
    args = parser.parse_args()
    if args.smoke:
        args.devices, args.span, args.parallelism = 2_000, 20, [1]
        args.modes, args.latency_seconds = args.modes[:1], 3.0
    args.modes = [m for m in MODES if m in args.modes]
    runs = len(args.parallelism) * len(args.modes)
    pool = 500 if args.smoke else 10_000
    shape = fleet.Shape(args.devices, args.span, job_runs=runs, latency_devices=pool)
    with tempfile.TemporaryDirectory(prefix="gridstream-bench-") as home:
        settings = private_settings(Path(home))
        stack = LocalStack(settings, say=lambda line: say(f"  {line}"))
        say(f"starting a private stack in {home}")
        try:
            stack.up()
            create_peer_topics(settings)
            say(f"generating {args.devices:,} devices, {args.span} s of readings")
            encode = fleet.Encoder(Registry(RegistryConfig.from_settings(settings)).schemas())
            workload = fleet.generate(shape, encode, lambda line: say(line))
            took = fleet.load(settings.stack.bootstrap_servers, workload.records, say)
            say(f"loaded {len(workload.records):,} records in {took:.1f} s: {workload.counts()}")
            results = list(rows(args, stack, workload))
        finally:
            say("stopping the stack")
            if stack.flink.answers():
                cancel_jobs(stack)
            stack.down()
    meta = {
        "devices": args.devices,
        "registered": workload.devices,
        "readings": workload.readings,
        "records": len(workload.records),
        "span_s": args.span,
        "cpus": os.cpu_count(),
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
        "command": " ".join(sys.argv[1:]),
    }
    paths = report.write(results, meta, args.out)
    print(paths["md"].read_text())
    say(f"written: {', '.join(str(p) for p in paths.values())}")


if __name__ == "__main__":
    main()
